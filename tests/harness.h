/* A minimal test harness: each CHECK is a case, reported as a TAP-like line
 * ("ok NAME" / "not ok NAME: why") that tests/run counts.
 * A test program includes this header once, defines test functions and calls
 * them from main(), and returns harness_exit(). */
#ifndef RLFLOW_TEST_HARNESS_H
#define RLFLOW_TEST_HARNESS_H
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_failed __attribute__((unused));

__attribute__((unused)) static void harness_report(int ok, const char *name, const char *fmt, ...)
{
    printf("%s %s", ok ? "ok" : "not ok", name);
    if (!ok && fmt) {
        va_list ap;
        va_start(ap, fmt);
        printf(": ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("\n");
    fflush(stdout);
    if (!ok)
        harness_failed++;
}

__attribute__((unused)) static void harness_skip(const char *name, const char *why)
{
    printf("ok %s # SKIP %s\n", name, why);
    fflush(stdout);
}

__attribute__((unused)) static int harness_exit(void) { return harness_failed ? 1 : 0; }

/* A case name with numbers in it (one buffer: use it before the next call). */
__attribute__((unused, format(printf, 1, 2))) static const char *harness_name(const char *fmt, ...)
{
    static char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

#define CHECK(name, cond) harness_report(!!(cond), (name), "%s (%s:%d)", #cond, __FILE__, __LINE__)
#define CHECKF(name, cond, ...) harness_report(!!(cond), (name), __VA_ARGS__)

/* max |a-b| / max(1, max|b|): a normalized error for comparing tensors */
/* Whether error e replaces the worst so far: NaN is the worst of all and
 * stays (`!(e <= worst)` let the next finite error replace a NaN). */
static inline int harness_worse(double e, double worst) { return worst == worst && (e != e || e > worst); }
/* The larger of the two as an error: fmax would drop a NaN */
static inline double harness_max(double worst, double e) { return harness_worse(e, worst) ? e : worst; }

static inline double harness_max_rel_err(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > diff || d != d) diff = d;
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
    }
    return diff / scale;
}
#endif
