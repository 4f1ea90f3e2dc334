/* Shared pieces of every tool's command line: checked number parsing (a bad
 * value is a usage error, exit 2) and the progress line on stderr. */
#ifndef RLFLOW_CLI_H
#define RLFLOW_CLI_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

long long cli_int(const char *opt, const char *arg, long long lo, long long hi);
double cli_double(const char *opt, const char *arg, double lo, double hi);
/* A byte count with an optional K, M or G suffix (powers of 1024). */
size_t cli_size(const char *opt, const char *arg);

/* Progress on stderr, only when stderr is a terminal and not quieted:
 * records/s, tokens/s and, when the total is known, an ETA. */
struct progress {
    bool on;
    double t0, last;
    uint64_t records, tokens, total;
    const char *unit;            /* "records" unless set */
};
void progress_init(struct progress *p, bool quiet, uint64_t total);
void progress_add(struct progress *p, uint64_t records, uint64_t tokens);
void progress_done(struct progress *p);
double cli_now(void);            /* monotonic seconds */
#endif
