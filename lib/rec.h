/* Record streams (DESIGN.md, man/rl-records.5): msgpack maps back to back,
 * zstd-compressed (one or more frames) or raw; the reader also accepts JSON
 * Lines (first non-blank byte '{'), so hand-written records work anywhere.
 *
 * Reading:   r = rec_reader_open("-"); while ((k = rec_next(r, &rec)) > 0) {...}
 *            k < 0: error in rl_errmsg(), naming input, record number, byte offset.
 * Writing:   w = rec_writer_open(STDOUT_FILENO, level, "stdout");
 *            rec_begin(w, &rec);              // pass-through of every field of rec
 *            rec_put_f64(w, "reward", 1.5);   // adds, or replaces a field of rec
 *            rec_end(w);                      // record complete
 *            rec_flush(w);                    // at batch boundaries: downstream sees it now
 *            rec_writer_close(w);             // ends the zstd frame
 * A record (and everything from rec_get*) is valid until the next rec_next(). */
#ifndef RLFLOW_REC_H
#define RLFLOW_REC_H
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpv.h"

#define REC_DEFAULT_MAX_RECORD (64u << 20)
#define REC_MAX_DEPTH 64

struct rec {
    const uint8_t *raw;      /* the record's msgpack bytes (a map) */
    size_t size;
    struct mpv map;
    uint64_t index;          /* 1-based record number in its input */
    uint64_t offset;         /* byte offset of the record in the decompressed stream */
    uint64_t line;           /* JSON Lines input: 1-based line number, else 0 */
    const char *input;       /* input name for messages ("stdin", a path) */
};

/* ---- reading ---- */
struct rec_reader;
struct rec_reader *rec_reader_open(const char *path);     /* "-" = stdin */
struct rec_reader *rec_reader_fdopen(int fd, const char *name);
void rec_reader_set_max_record(struct rec_reader *r, size_t bytes);
/* Called just before the reader blocks on read(): a filter flushes its output
 * there, so a slow upstream never leaves finished records stuck in a buffer. */
void rec_reader_on_wait(struct rec_reader *r, void (*fn)(void *), void *ctx);
int rec_next(struct rec_reader *r, struct rec *rec);      /* 1 record, 0 end, -1 error */
void rec_reader_close(struct rec_reader *r);              /* closes the fd unless stdin */

/* Set rl_err to "INPUT: record N (byte B): <message>" (or "(line L)" for JSONL). */
int rec_err(const struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- typed access: 1 found, 0 absent, -1 wrong type (rl_err set, e.g.
 * 'stdin: record 17 (byte 40213): field "rewards" is a string, expected an
 * array of numbers'). Strings are not NUL-terminated. ---- */
struct rec_str { const char *s; size_t n; };
bool rec_has(const struct rec *r, const char *key);
int rec_get(const struct rec *r, const char *key, struct mpv *v);        /* any type */
int rec_get_str(const struct rec *r, const char *key, struct rec_str *s);
int rec_get_i64(const struct rec *r, const char *key, int64_t *v);
int rec_get_f64(const struct rec *r, const char *key, double *v);       /* any number */
int rec_get_bool(const struct rec *r, const char *key, bool *v);
int rec_get_array(const struct rec *r, const char *key, struct mpv *v);
int rec_get_map(const struct rec *r, const char *key, struct mpv *v);
/* Arrays into caller-owned growable storage (*out realloc'd, *n set). */
int rec_get_i32s(const struct rec *r, const char *key, int32_t **out, size_t *n, size_t *cap);
int rec_get_f64s(const struct rec *r, const char *key, double **out, size_t *n, size_t *cap);
int rec_get_strs(const struct rec *r, const char *key, struct rec_str **out, size_t *n, size_t *cap);
/* Nested values: same checks on a value found inside the record; `what`
 * names it in the message, e.g. "response_ids[3]" or "messages[2].content". */
int rec_as_str(const struct rec *r, const char *what, const struct mpv *v, struct rec_str *s);
int rec_as_i32s(const struct rec *r, const char *what, const struct mpv *v, int32_t **out, size_t *n, size_t *cap);
int rec_type_error(const struct rec *r, const char *what, const struct mpv *v, const char *expected);

/* ---- writing ---- */
struct rec_writer;
/* level: zstd level 1..19 (negative: fast levels), 0 = raw msgpack. */
struct rec_writer *rec_writer_open(int fd, int level, const char *name);
void rec_begin(struct rec_writer *w, const struct rec *src);   /* src may be NULL */
msgpack_packer *rec_put(struct rec_writer *w, const char *key); /* pack exactly one value next */
void rec_put_str(struct rec_writer *w, const char *key, const char *s, size_t n);
void rec_put_cstr(struct rec_writer *w, const char *key, const char *s);
void rec_put_i64(struct rec_writer *w, const char *key, int64_t v);
void rec_put_f64(struct rec_writer *w, const char *key, double v);
void rec_put_bool(struct rec_writer *w, const char *key, bool v);
void rec_put_nil(struct rec_writer *w, const char *key);
void rec_put_i32s(struct rec_writer *w, const char *key, const int32_t *v, size_t n);
void rec_put_f64s(struct rec_writer *w, const char *key, const double *v, size_t n);
void rec_put_raw(struct rec_writer *w, const char *key, const struct mpv *v);  /* copy a value as is */
void rec_drop(struct rec_writer *w, const char *key);          /* omit a field of src */
int rec_end(struct rec_writer *w);                             /* -1 on write error */
int rec_write_raw(struct rec_writer *w, const uint8_t *p, size_t n);  /* a whole record as is */
int rec_flush(struct rec_writer *w);
int rec_writer_close(struct rec_writer *w);                    /* flushes, ends frame, frees */
/* The usual filter wiring: flush w whenever r is about to wait for input, so
 * records reach downstream as soon as upstream pauses (a later rec_end or
 * rec_writer_close reports a failed write). */
void rec_flush_on_wait(struct rec_reader *r, struct rec_writer *w);

/* The record loop of every filter: fn(ctx, rec) for each record of the n
 * inputs in order (stdin when n is 0). With w, w is flushed whenever a reader
 * waits for input. 0, or -1 at the first bad input or failing fn (which sets
 * rl_err). */
int rec_each(int n, char **paths, struct rec_writer *w, int (*fn)(void *ctx, const struct rec *r), void *ctx);
/* Close w at the end of a run that returned rc: 0, or -1 keeping the run's
 * error message (or the close's, when only the close failed). */
int rec_writer_finish(struct rec_writer *w, int rc);
#endif
