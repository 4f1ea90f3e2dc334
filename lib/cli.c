#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

long long cli_int(const char *opt, const char *arg, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi)
        rl_usage_error("%s: '%s' is not an integer in [%lld, %lld]", opt, arg, lo, hi);
    return v;
}

double cli_double(const char *opt, const char *arg, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= lo && v <= hi))
        rl_usage_error("%s: '%s' is not a number in [%g, %g]", opt, arg, lo, hi);
    return v;
}

size_t cli_size(const char *opt, const char *arg)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10, end++;
    else if (*end == 'M' || *end == 'm') shift = 20, end++;
    else if (*end == 'G' || *end == 'g') shift = 30, end++;
    if (errno || end == arg || *end || arg[0] == '-' || v == 0 || v > (SIZE_MAX >> shift))
        rl_usage_error("%s: '%s' is not a size (bytes, with an optional K, M or G)", opt, arg);
    return (size_t)v << shift;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_init(struct progress *p, bool quiet, uint64_t total)
{
    *p = (struct progress){.on = !quiet && isatty(STDERR_FILENO), .total = total, .unit = "records"};
    p->t0 = p->last = cli_now();
}

static void progress_print(struct progress *p, double now, const char *end)
{
    double dt = now - p->t0 > 1e-9 ? now - p->t0 : 1e-9;
    fprintf(stderr, "\r%s: %llu %s (%.1f/s", rl_prog, (unsigned long long)p->records, p->unit,
            p->records / dt);
    if (p->tokens)
        fprintf(stderr, ", %.0f tokens/s", p->tokens / dt);
    if (p->total && p->records && p->records <= p->total)
        fprintf(stderr, ", ETA %.0fs", (p->total - p->records) * dt / p->records);
    fprintf(stderr, ")\033[K%s", end);
}

void progress_add(struct progress *p, uint64_t records, uint64_t tokens)
{
    p->records += records;
    p->tokens += tokens;
    if (!p->on)
        return;
    double now = cli_now();
    if (now - p->last >= 0.25) {
        p->last = now;
        progress_print(p, now, "");
    }
}

void progress_done(struct progress *p)
{
    if (p->on)
        progress_print(p, cli_now(), "\n");
}
