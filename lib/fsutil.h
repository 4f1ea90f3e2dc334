/* File-system helpers for crash-safe output (DESIGN.md "Checkpoints and
 * faults"): a file or a whole directory is built under a temporary name beside
 * its destination, fsync'd, and renamed into place, so a crash never leaves a
 * half-written file where a complete one is expected.
 *
 *   Atomic file:       fd = fs_temp_open(path, tmp, sizeof tmp);
 *                      ...write fd...; fs_temp_commit(fd, tmp, path)   (or fs_temp_abort)
 *   Atomic directory:  fs_dir_begin(dir, tmp, sizeof tmp, force);
 *                      ...write files into tmp...; fs_dir_commit(tmp, dir, force)
 *                      (or fs_rm_rf(tmp) on failure)
 * All functions return -1 (NULL) with rl_err set on failure. */
#ifndef RLFLOW_FSUTIL_H
#define RLFLOW_FSUTIL_H
#include <stdbool.h>
#include <stddef.h>

#define FS_PATH_MAX 4096

/* Read a whole file; the result is NUL-terminated (the NUL is not counted in *len).
 * Caller frees. */
char *fs_read_file(const char *path, size_t *len);

/* Map a regular file read-only: *p its bytes (NULL when it is empty), *len
 * its size; munmap(*p, *len) when done. -1 with rl_err naming the file. */
int fs_map_file(const char *path, void **p, size_t *len);

/* Create "PATH.tmp-PID-N" exclusively (mode 0666 less umask); writes its name to tmp. */
int fs_temp_open(const char *path, char *tmp, size_t tmpsz);
/* fsync + close fd, rename tmp over path, fsync path's directory. Removes tmp on failure. */
int fs_temp_commit(int fd, const char *tmp, const char *path);
/* Close fd (when >= 0) and unlink tmp, keeping the current error message. */
void fs_temp_abort(int fd, const char *tmp);

/* Write n bytes to path atomically. */
int fs_write_file_atomic(const char *path, const void *data, size_t n);
/* Copy src to dst atomically (dst's temp + fsync + rename). */
int fs_copy_file(const char *src, const char *dst);

/* Start building directory `dir`: creates "DIR.tmp-PID-N" (mode 0777 less umask)
 * and writes its name to tmp. Fails when dir exists, unless force (then the
 * existing directory is replaced at commit time; a non-directory is refused). */
int fs_dir_begin(const char *dir, char *tmp, size_t tmpsz, bool force);
/* fsync tmp, then move it to dir (atomically exchanging it with an existing dir
 * when force), fsync the parent, and remove the replaced directory. */
int fs_dir_commit(const char *tmp, const char *dir, bool force);

int fs_fsync_path(const char *path);       /* fsync a file or directory by name */
int fs_fsync_parent(const char *path);     /* fsync the directory holding path */
int fs_rm_rf(const char *path);            /* remove a file or a directory tree */
bool fs_is_dir(const char *path);
bool fs_exists(const char *path);
/* dst = dir + "/" + name; -1 if it does not fit. */
int fs_join(char *dst, size_t dstsz, const char *dir, const char *name);
#endif
