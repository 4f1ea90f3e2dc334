/* RL_CUDA_KERNEL_TIMES=1: where an op's time goes inside the backend, kernel
 * by kernel. RL_PROFILE times the backend's ops; an op such as the
 * attention's backward is several kernels (copies, the queries' and keys'
 * kernels, sums), and tuning one needs each one's share. With this switch
 * every launch waits for the device, and the wall time since the previous
 * launch's end (or cuBLAS call's) is charged to it, so the host's own time
 * between two launches lands on the second: read the table of a long run
 * for the kernels that weigh, not for the microseconds. At exit one line a
 * kernel goes to stderr: calls, milliseconds, microseconds a call, share. */
#include <time.h>

#include "cuda_common.cuh"

#define KT_MAX 128
struct ktime {
    const char *name;                 /* the launch's literal: compared by address first */
    long calls;
    double seconds;
};
bool ktimes_on;
static struct ktime kt[KT_MAX];
static int kt_n;
static double kt_last;

static double kt_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int kt_by_time(const void *a, const void *b)
{
    double x = ((const struct ktime *)a)->seconds, y = ((const struct ktime *)b)->seconds;
    return (x < y) - (x > y);
}

static void kt_report(void)
{
    double total = 0;
    for (int i = 0; i < kt_n; i++)
        total += kt[i].seconds;
    qsort(kt, kt_n, sizeof kt[0], kt_by_time);
    fprintf(stderr, "kernel times (RL_CUDA_KERNEL_TIMES): %.4f s\n%-48s %8s %10s %10s %6s\n", total, "kernel",
            "calls", "ms", "us/call", "share");
    for (int i = 0; i < kt_n; i++)
        fprintf(stderr, "%-48s %8ld %10.3f %10.1f %5.1f%%\n", kt[i].name, kt[i].calls, kt[i].seconds * 1e3,
                kt[i].seconds * 1e6 / kt[i].calls, total > 0 ? 100 * kt[i].seconds / total : 0.0);
}

void ktimes_start(void)
{
    const char *e = getenv("RL_CUDA_KERNEL_TIMES");
    ktimes_on = e && *e && strcmp(e, "0");
    if (ktimes_on) {
        kt_last = kt_now();
        atexit(kt_report);
    }
}

void ktimes_mark(const char *name)
{
#ifndef RL_CUDA_EMU
    CU(cudaDeviceSynchronize());
#endif
    double t = kt_now();
    int i = 0;
    while (i < kt_n && kt[i].name != name && strcmp(kt[i].name, name))
        i++;
    if (i == kt_n) {
        if (kt_n == KT_MAX)
            i = KT_MAX - 1;           /* full: the last line collects the rest */
        else
            kt[kt_n++] = (struct ktime){name, 0, 0};
    }
    kt[i].calls++;
    kt[i].seconds += t - kt_last;
    kt_last = t;
}
