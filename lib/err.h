/* Errors and the tool-side conventions of DESIGN.md.
 * Library functions report failure by returning -1 (or NULL) after setting a
 * message with rl_err(); tools print it as "rl-xxx: message" and exit 1.
 * Usage errors exit 2. */
#ifndef RLFLOW_ERR_H
#define RLFLOW_ERR_H
#include <stddef.h>

extern const char *rl_prog;        /* program name for diagnostics, e.g. "rl-cat" */

void rl_set_prog(const char *argv0);

/* Set the thread's current error message; returns -1 for `return rl_err(...)`. */
int rl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, with ": strerror(errno)" appended. */
int rl_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefix the current message with more context: "ctx: old message". */
int rl_err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *rl_errmsg(void);

void rl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void rl_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void rl_die_err(void);   /* prints rl_errmsg() and exits 1 */
_Noreturn void rl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that cannot fail: out of memory is fatal (exit 1 with a message). */
void *rl_malloc(size_t n);
void *rl_calloc(size_t n, size_t size);
void *rl_realloc(void *p, size_t n);
char *rl_strdup(const char *s);

/* Growable byte buffer, used for staging output and building strings. */
struct rl_buf {
    char *data;
    size_t len, cap;
};
void rl_buf_reserve(struct rl_buf *b, size_t extra);
void rl_buf_put(struct rl_buf *b, const void *p, size_t n);
void rl_buf_putc(struct rl_buf *b, char c);
void rl_buf_printf(struct rl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rl_buf_free(struct rl_buf *b);

/* Write all of p to fd, retrying on EINTR and short writes; -1 with rl_err set. */
int rl_write_all(int fd, const void *p, size_t n, const char *what);

/* DESIGN.md: never write a binary stream to a terminal unless forced. */
int rl_refuse_tty(int fd, int force);
#endif
