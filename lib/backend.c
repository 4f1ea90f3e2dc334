/* Choosing a backend by name: "cpu", "cuda", "devsim", or "auto" (the
 * default of every tool): $RL_DEVICE when set, else CUDA when an NVIDIA
 * driver is there, the backend loads and a GPU answers, else the CPU.
 *
 * The CUDA backend is a shared object, rlflow-cuda.so, opened on first use:
 * $RL_CUDA_LIB when set, else the file beside the running program. Linking
 * cuBLAS into every tool would cost each start 0.1 s and a dependency on the
 * CUDA libraries even where there is no GPU; this way rl-cat never loads it
 * and a CPU-only machine runs the same binaries. */
#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "backend_prof.h"
#include "err.h"

static int cuda_lib_path(char *out, size_t n)
{
    const char *env = getenv("RL_CUDA_LIB");
    if (env && *env)
        return snprintf(out, n, "%s", env) < (int)n ? 0 : -1;
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        return -1;
    exe[k] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0;
    return snprintf(out, n, "%s/rlflow-cuda.so", exe) < (int)n ? 0 : -1;
}

static void *cuda_so;

const struct backend *backend_cuda_get(void)
{
    static const struct backend *bk;
    static char why[PATH_MAX + 300];
    static int tried;
    if (!tried) {
        tried = 1;
        char path[PATH_MAX];
        void *h = NULL;
        if (cuda_lib_path(path, sizeof path) < 0)
            snprintf(why, sizeof why, "cannot locate rlflow-cuda.so (set RL_CUDA_LIB)");
        else if (access(path, F_OK) != 0)
            snprintf(why, sizeof why, "this build has no CUDA backend (%s: not found; built without nvcc?)", path);
        else if (!(h = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
            snprintf(why, sizeof why, "cannot load the CUDA backend: %s", dlerror());
        if (h) {
            const struct backend *(*entry)(const char **, size_t) =
                (const struct backend *(*)(const char **, size_t))dlsym(h, RL_STR(RL_CUDA_ENTRY));
            const char *reason = "rlflow-cuda.so was built from another version of rlflow (no entry point "
                                 RL_STR(RL_CUDA_ENTRY) "): rebuild it";
            bk = entry ? entry(&reason, sizeof(struct backend)) : NULL;
            if (!bk)
                snprintf(why, sizeof why, "%s", reason);
            cuda_so = h;
        }
    }
    if (!bk)
        rl_err("device \"cuda\": %s", why);
    return bk;
}

/* One of rlflow-cuda.so's benchmark entry points, or NULL without it */
static void *cuda_symbol(const char *name)
{
    return backend_cuda_get() ? dlsym(cuda_so, name) : NULL;
}

double backend_cuda_gemm_tflops(int m, int n, int k, bool bf16_io)
{
    double (*f)(int, int, int, int, int) = (double (*)(int, int, int, int, int))cuda_symbol("rlflow_cuda_gemm_tflops");
    return f ? f(m, n, k, bf16_io, 10) : -1;
}

long long backend_cuda_launches(void)
{
    unsigned long long (*f)(void) = (unsigned long long (*)(void))cuda_symbol("rlflow_cuda_launches");
    return f ? (long long)f() : -1;
}

double backend_cuda_launch_us(int n)
{
    double (*f)(int) = (double (*)(int))cuda_symbol("rlflow_cuda_launch_us");
    return f ? f(n) : -1;
}

bool backend_cuda_graph_stats(struct cuda_graph_stats *s)
{
    void (*f)(unsigned long long[4]) = (void (*)(unsigned long long[4]))cuda_symbol("rlflow_cuda_graph_stats");
    unsigned long long v[4] = {0};
    if (f)
        f(v);
    *s = (struct cuda_graph_stats){(long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3]};
    return f != NULL;
}

/* Say once, on a terminal, that "auto" fell back to the CPU although the
 * CUDA backend is there: a user who expected the GPU learns why; pipelines
 * and logs stay quiet. */
static void note_cpu_fallback(void)
{
    static int said;
    if (!said && isatty(2) && !strstr(rl_errmsg(), "no CUDA backend")) {
        fprintf(stderr, "rlflow: %s; running on the CPU\n", rl_errmsg());
        said = 1;
    }
}

/* Loading the CUDA backend maps cuBLAS (0.1 s); "auto" first asks whether
 * an NVIDIA driver is there at all. */
static bool nvidia_driver_present(void)
{
    return access("/dev/nvidiactl", F_OK) == 0 || access("/proc/driver/nvidia/version", F_OK) == 0;
}

static const struct backend *lookup(const char *name)
{
    if (!name || !strcmp(name, "auto")) {
        const char *env = getenv("RL_DEVICE");
        if (env && *env && strcmp(env, "auto"))
            return lookup(env);
        if (!nvidia_driver_present())
            return &backend_cpu;
        const struct backend *bk = backend_cuda_get();
        if (bk)
            return bk;
        note_cpu_fallback();
        return &backend_cpu;
    }
    if (!strcmp(name, "cpu"))
        return &backend_cpu;
    if (!strcmp(name, "cuda"))
        return backend_cuda_get();
    if (!strcmp(name, "devsim"))
        return &backend_devsim;
    return rl_err("unknown device \"%s\" (expected auto, cpu or cuda)", name), NULL;
}

const struct backend *backend_get(const char *name)
{
    const struct backend *bk = lookup(name);
    return bk && backend_prof_wanted() ? backend_profiled(bk) : bk;
}
