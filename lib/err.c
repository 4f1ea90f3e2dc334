#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *rl_prog = "rlflow";
static _Thread_local char errbuf[1024];

/* Append to errbuf, truncating: long messages lose their tail, never memory. */
static void err_append(const char *a, const char *b)
{
    size_t n = strlen(errbuf);
    for (const char *s = a; *s && n + 1 < sizeof errbuf; s++) errbuf[n++] = *s;
    for (const char *s = b; *s && n + 1 < sizeof errbuf; s++) errbuf[n++] = *s;
    errbuf[n] = 0;
}

void rl_set_prog(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');
    rl_prog = slash ? slash + 1 : argv0;
}

int rl_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return -1;
}

int rl_errno(const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    err_append(": ", strerror(e));
    return -1;
}

int rl_err_prefix(const char *fmt, ...)
{
    char old[sizeof errbuf];
    memcpy(old, errbuf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    err_append(": ", old);
    return -1;
}

const char *rl_errmsg(void) { return errbuf[0] ? errbuf : "unknown error"; }

static void vmsg(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", rl_prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void rl_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
}

void rl_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    exit(1);
}

void rl_die_err(void) { rl_die("%s", rl_errmsg()); }

void rl_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help' for more information.\n", rl_prog);
    exit(2);
}

static void *check_alloc(void *p, size_t n)
{
    if (!p && n)
        rl_die("out of memory (allocating %zu bytes)", n);
    return p;
}

void *rl_malloc(size_t n) { return check_alloc(malloc(n ? n : 1), n); }
void *rl_calloc(size_t n, size_t size) { return check_alloc(calloc(n ? n : 1, size ? size : 1), n * size); }
void *rl_realloc(void *p, size_t n) { return check_alloc(realloc(p, n ? n : 1), n); }
char *rl_strdup(const char *s) { return check_alloc(strdup(s), strlen(s) + 1); }

void rl_buf_reserve(struct rl_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    b->data = rl_realloc(b->data, cap);
    b->cap = cap;
}

void rl_buf_put(struct rl_buf *b, const void *p, size_t n)
{
    rl_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void rl_buf_putc(struct rl_buf *b, char c)
{
    rl_buf_reserve(b, 1);
    b->data[b->len++] = c;
}

void rl_buf_printf(struct rl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    rl_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void rl_buf_free(struct rl_buf *b)
{
    free(b->data);
    *b = (struct rl_buf){0};
}

int rl_write_all(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return rl_errno("%s: write failed", what);
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int rl_refuse_tty(int fd, int force)
{
    if (!force && isatty(fd))
        return rl_err("refusing to write a binary stream to a terminal "
                      "(pipe it, redirect it, or use --force)");
    return 0;
}
