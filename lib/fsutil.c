#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

static atomic_uint temp_counter;

int fs_map_file(const char *path, void **p, size_t *len)
{
    *p = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rl_errno("%s", path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rl_errno("%s", path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return rl_err("%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    if (n > 0) {
        void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rl_errno("%s: mmap", path);
            close(fd);
            return -1;
        }
        *p = m;
    }
    close(fd);
    *len = n;
    return 0;
}

char *fs_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rl_errno("%s", path);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rl_errno("%s", path);
        close(fd);
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        rl_err("%s: is a directory", path);
        close(fd);
        return NULL;
    }
    /* Size from fstat is a hint only (pipes, /proc): read until EOF. */
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, n = 0;
    char *buf = rl_malloc(cap);
    for (;;) {
        if (n + 1 >= cap)
            buf = rl_realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rl_errno("%s: read", path);
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

int fs_join(char *dst, size_t dstsz, const char *dir, const char *name)
{
    int n = snprintf(dst, dstsz, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= dstsz)
        return rl_err("%s/%s: path too long", dir, name);
    return 0;
}

/* "PATH.tmp-PID-N": unique within the process by the counter, across
 * processes by the pid; O_EXCL / mkdir catch anything left over from a crash. */
static int temp_name(char *tmp, size_t tmpsz, const char *path)
{
    unsigned k = atomic_fetch_add(&temp_counter, 1);
    int n = snprintf(tmp, tmpsz, "%s.tmp-%ld-%u", path, (long)getpid(), k);
    if (n < 0 || (size_t)n >= tmpsz)
        return rl_err("%s: path too long", path);
    return 0;
}

int fs_temp_open(const char *path, char *tmp, size_t tmpsz)
{
    for (int tries = 0; tries < 1000; tries++) {
        if (temp_name(tmp, tmpsz, path) < 0)
            return -1;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            return rl_errno("%s", tmp);
    }
    return rl_err("%s: cannot find a free temporary name", path);
}

void fs_temp_abort(int fd, const char *tmp)
{
    if (fd >= 0)
        close(fd);
    unlink(tmp);
}

int fs_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rl_errno("%s", path);
    int r = fsync(fd);
    /* Some file systems refuse fsync on directories (EINVAL); nothing to do then. */
    if (r < 0 && errno != EINVAL && errno != EROFS) {
        rl_errno("fsync %s", path);
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int fs_fsync_parent(const char *path)
{
    char buf[FS_PATH_MAX];
    if (strlen(path) >= sizeof buf)
        return rl_err("%s: path too long", path);
    strcpy(buf, path);
    return fs_fsync_path(dirname(buf));
}

int fs_temp_commit(int fd, const char *tmp, const char *path)
{
    if (fsync(fd) < 0) {
        rl_errno("fsync %s", tmp);
        fs_temp_abort(fd, tmp);
        return -1;
    }
    if (close(fd) < 0) {
        rl_errno("close %s", tmp);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) < 0) {
        rl_errno("rename %s to %s", tmp, path);
        unlink(tmp);
        return -1;
    }
    return fs_fsync_parent(path);
}

int fs_write_file_atomic(const char *path, const void *data, size_t n)
{
    char tmp[FS_PATH_MAX];
    int fd = fs_temp_open(path, tmp, sizeof tmp);
    if (fd < 0)
        return -1;
    if (rl_write_all(fd, data, n, tmp) < 0) {
        fs_temp_abort(fd, tmp);
        return -1;
    }
    return fs_temp_commit(fd, tmp, path);
}

int fs_copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return rl_errno("%s", src);
    char tmp[FS_PATH_MAX];
    int out = fs_temp_open(dst, tmp, sizeof tmp);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rl_errno("%s: read", src);
            goto fail;
        }
        if (r == 0)
            break;
        if (rl_write_all(out, buf, (size_t)r, tmp) < 0)
            goto fail;
    }
    close(in);
    return fs_temp_commit(out, tmp, dst);
fail:
    close(in);
    fs_temp_abort(out, tmp);
    return -1;
}

bool fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool fs_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    if (remove(p) < 0 && errno != ENOENT)
        return rl_errno("remove %s", p);
    return 0;
}

int fs_rm_rf(const char *path)
{
    if (!fs_exists(path))
        return 0;
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

int fs_dir_begin(const char *dir, char *tmp, size_t tmpsz, bool force)
{
    struct stat st;
    if (lstat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return rl_err("%s: exists and is not a directory", dir);
        if (!force)
            return rl_err("%s: already exists (use --force to replace it)", dir);
    }
    for (int tries = 0; tries < 1000; tries++) {
        if (temp_name(tmp, tmpsz, dir) < 0)
            return -1;
        if (mkdir(tmp, 0777) == 0)
            return 0;
        if (errno != EEXIST)
            return rl_errno("mkdir %s", tmp);
    }
    return rl_err("%s: cannot find a free temporary name", dir);
}

int fs_dir_commit(const char *tmp, const char *dir, bool force)
{
    if (fs_fsync_path(tmp) < 0)
        return -1;
    if (fs_is_dir(dir)) {
        if (!force)
            return rl_err("%s: already exists (use --force to replace it)", dir);
        /* Swap in one step so dir always names a complete model; the old one
         * ends up under the temporary name and is removed. */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
            if (fs_fsync_parent(dir) < 0)
                return -1;
            return fs_rm_rf(tmp);
        }
        if (errno != EINVAL && errno != ENOSYS)
            return rl_errno("rename %s to %s", tmp, dir);
        /* No RENAME_EXCHANGE here: move the old one aside first. */
        char old[FS_PATH_MAX];
        if (temp_name(old, sizeof old, dir) < 0)
            return -1;
        if (rename(dir, old) < 0)
            return rl_errno("rename %s to %s", dir, old);
        if (rename(tmp, dir) < 0) {
            rl_errno("rename %s to %s", tmp, dir);
            rename(old, dir);
            return -1;
        }
        if (fs_fsync_parent(dir) < 0)
            return -1;
        return fs_rm_rf(old);
    }
    /* RENAME_NOREPLACE: plain rename would silently replace an empty
     * directory created meanwhile. */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST)
            return rl_err("%s: already exists (use --force to replace it)", dir);
        if ((errno != EINVAL && errno != ENOSYS) || rename(tmp, dir) < 0)
            return rl_errno("rename %s to %s", tmp, dir);
    }
    return fs_fsync_parent(dir);
}
