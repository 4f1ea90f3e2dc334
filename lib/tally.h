/* A table of named timings, slowest first when reported: RL_PROFILE's ops
 * (backend_prof.c) and RL_CUDA_KERNEL_TIMES's kernels (kernels/
 * cuda_ktimes.cu). Header-only, as the CUDA backend's library links none
 * of lib/. */
#ifndef RLFLOW_TALLY_H
#define RLFLOW_TALLY_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct tally_entry {
    char key[64];
    long calls;
    double seconds, flops;
};
struct tally {
    struct tally_entry *e;            /* max entries */
    int n, max;
};

static inline double tally_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One call of key, of these seconds and flops. A full table's last line
 * collects the keys that found no room. */
static inline void tally_add(struct tally *t, const char *key, double seconds, double flops)
{
    int i = 0;
    while (i < t->n && strcmp(t->e[i].key, key))
        i++;
    if (i == t->n) {
        if (t->n == t->max)
            i = t->max - 1;
        else {
            memset(&t->e[i], 0, sizeof t->e[i]);
            snprintf(t->e[t->n++].key, sizeof t->e[0].key, "%s", key);
        }
    }
    t->e[i].calls++;
    t->e[i].seconds += seconds;
    t->e[i].flops += flops;
}

static inline int tally_by_time(const void *a, const void *b)
{
    double x = ((const struct tally_entry *)a)->seconds, y = ((const struct tally_entry *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}
/* Sorts the entries slowest first; their total seconds. */
static inline double tally_sort(struct tally *t)
{
    qsort(t->e, t->n, sizeof t->e[0], tally_by_time);
    double total = 0;
    for (int i = 0; i < t->n; i++)
        total += t->e[i].seconds;
    return total;
}
#endif
