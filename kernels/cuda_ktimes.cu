/* RL_CUDA_KERNEL_TIMES=1: where an op's time goes inside the backend, kernel
 * by kernel. RL_PROFILE times the backend's ops; an op such as the
 * attention's backward is several kernels (copies, the queries' and keys'
 * kernels, sums), and tuning one needs each one's share. With this switch
 * every launch waits for the device, and the wall time since the previous
 * launch's end (or cuBLAS call's), or since its op began, is charged to it:
 * the host's time inside an op (its set-up) lands on the op's next kernel,
 * the caller's time between ops on none (before the ninth session it
 * landed on the next op's first kernel: a benchmark's set-up made the
 * embedding's gather look like 68 ms a call). At exit one line a kernel
 * goes to stderr: calls, milliseconds, microseconds a call, share. */
#include "cuda_common.cuh"
extern "C" {
#include "tally.h"
}

#define KT_MAX 128
bool ktimes_on;
unsigned long long launch_count;

/* For bench/gpu_bench, which sets a decode step's launches against their
 * floor: the launches so far (the backend's kernels and its cuBLAS calls),
 * and the microseconds from one launch to the next when n empty kernels
 * run back to back, issued by the host one by one as an op's are (best of
 * three runs; -1 on an error). */
extern "C" __attribute__((visibility("default"))) unsigned long long rlflow_cuda_launches(void)
{
    return launch_count;
}
__global__ static void k_empty(void) {}
extern "C" __attribute__((visibility("default"))) double rlflow_cuda_launch_us(int n)
{
    double best = -1;
    for (int r = 0; r < 3 && n > 0; r++) {
        if (cudaDeviceSynchronize() != cudaSuccess)
            return -1;
        double t0 = tally_now();
        for (int i = 0; i < n; i++)
            LAUNCH(k_empty, 1, 32)();
        if (cudaDeviceSynchronize() != cudaSuccess || cudaGetLastError() != cudaSuccess)
            return -1;
        double us = (tally_now() - t0) * 1e6 / n;
        if (best < 0 || us < best)
            best = us;
    }
    return best;
}
static struct tally_entry kt_entries[KT_MAX];
static struct tally kt = {kt_entries, 0, KT_MAX};
static double kt_last;

static void kt_report(void)
{
    double total = tally_sort(&kt);
    fprintf(stderr, "kernel times (RL_CUDA_KERNEL_TIMES): %.4f s\n%-48s %8s %10s %10s %6s\n", total, "kernel",
            "calls", "ms", "us/call", "share");
    for (int i = 0; i < kt.n; i++) {
        const struct tally_entry *e = &kt_entries[i];
        fprintf(stderr, "%-48s %8ld %10.3f %10.1f %5.1f%%\n", e->key, e->calls, e->seconds * 1e3,
                e->seconds * 1e6 / e->calls, total > 0 ? 100 * e->seconds / total : 0.0);
    }
}

void ktimes_start(void)
{
    const char *e = getenv("RL_CUDA_KERNEL_TIMES");
    ktimes_on = e && *e && strcmp(e, "0");
    if (ktimes_on) {
        kt_last = tally_now();
        atexit(kt_report);
    }
}

void ktimes_op_begin(void)
{
    if (!ktimes_on)
        return;
    CU(cudaDeviceSynchronize());
    kt_last = tally_now();
}

void ktimes_mark(const char *name)
{
    CU(cudaDeviceSynchronize());
    double t = tally_now();
    tally_add(&kt, name, t - kt_last, 0);
    kt_last = t;
}
