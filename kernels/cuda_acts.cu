/* The CUDA backend's bf16 activations (backend.h act_bf16, $RL_CUDA_ACT):
 * the ranges the model marks as its activations (mark_acts), by address,
 * so that every op reads and writes those buffers as bf16 and the rest as
 * fp32; and the conversions between the two that the memory ops, and the
 * ops without a bf16 kernel of their own (cuda_attention.cu's wrappers),
 * go through. Storage only: every kernel computes in fp32. */
#include "cuda_common.cuh"

/* $RL_CUDA_ACT: auto (the default) stores activations as bf16 in bf16 mode
 * and as fp32 in the others, where the products are fp32 or tf32 and a
 * bf16 store would round what they keep; bf16 asks for it (bf16 mode
 * only); fp32 keeps them fp32 with bf16 copies beside the products'
 * operands (the seventh session's path). */
bool acts_bf16;
int cuda_act_mode(const char *name)
{
    static const char *const modes[] = {"auto", "bf16", "fp32"};
    int i = mode_index(name, modes);
    if (i < 0 || (i == 1 && !gemm_bf16))
        return -1;
    acts_bf16 = i == 0 ? gemm_bf16 && !gemm_exact : i == 1;
    return 0;
}

/* One range per model_acts alive (the policy's, the reference's, the
 * reward model's, forks...), grown as needed: a fixed table made a
 * seventeenth model a fatal error. */
struct act_range {
    const char *p;
    size_t bytes;
};
static act_range *ranges;
static size_t n_ranges, cap_ranges;

bool is_act(const void *p)
{
    const char *a = (const char *)p;
    if (!acts_bf16 || !a)
        return false;
    for (size_t i = 0; i < n_ranges; i++)
        if (a >= ranges[i].p && a < ranges[i].p + ranges[i].bytes)
            return true;
    return false;
}

void acts_forget(const void *p)
{
    for (size_t i = 0; i < n_ranges; i++)
        if (ranges[i].p == p) {
            ranges[i] = ranges[--n_ranges];
            return;
        }
}

static void cu_mark_acts(const void *p, size_t bytes)
{
    acts_forget(p);
    if (n_ranges == cap_ranges) {
        size_t cap = cap_ranges ? 2 * cap_ranges : 16;
        act_range *r = (act_range *)realloc(ranges, cap * sizeof(act_range));
        if (!r)
            fatal("mark_acts", "out of host memory");
        ranges = r, cap_ranges = cap;
    }
    ranges[n_ranges++] = {(const char *)p, bytes};
}

/* dst[r][c] (+)= src[r][c] for r < rows, c < cols: a block per row, each
 * side in its own type and row pitch */
template <class TD, class TS>
__global__ static void k_convert(TD *dst, long long ldd, const TS *src, long long lds, int cols, bool add)
{
    TD *d = dst + blockIdx.x * ldd;
    const TS *s = src + blockIdx.x * lds;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        put(d, c, add ? get(d, c) + get(s, c) : get(s, c));
}
template <class TD, class TS>
static void convert(TD *dst, long long ldd, const TS *src, long long lds, size_t rows, int cols, bool add)
{
    int threads = cols < THREADS ? (cols + 31) / 32 * 32 : THREADS;
    for (size_t r0 = 0; r0 < rows; r0 += 65535) {   /* the grid's x limit, kept small for the emulation */
        unsigned n = (unsigned)(rows - r0 < 65535 ? rows - r0 : 65535);
        LAUNCH((k_convert<TD, TS>), n, threads)(dst + r0 * ldd, ldd, src + r0 * lds, lds, cols, add);
        LAUNCHED("bf16 activations (conversion)");
    }
}
void act_widen(float *dst, long long ldd, const void *src, long long lds, size_t rows, int cols)
{
    convert(dst, ldd, (const unsigned short *)src, lds, rows, cols, false);
}
void act_narrow(void *dst, long long ldd, const float *src, long long lds, size_t rows, int cols, bool add)
{
    convert((unsigned short *)dst, ldd, src, lds, rows, cols, add);
}

/* A flat run of n elements as rows of up to 4096: the grid stays small */
template <class TD, class TS> static void convert_flat(TD *dst, const TS *src, size_t n)
{
    const size_t w = 4096;
    if (n >= w)
        convert(dst, (long long)w, src, (long long)w, n / w, (int)w, false);
    if (n % w)
        convert(dst + n / w * w, 0, src + n / w * w, 0, 1, (int)(n % w), false);
}

/* The memory ops: an activation's n elements are 2 bytes each; a copy
 * between the two kinds converts. */
void act_aware_zero(float *x, size_t n)
{
    size_t bytes = n * (is_act(x) ? 2 : sizeof *x);
    params_written(x, bytes);
    if (n) CU(cudaMemsetAsync(x, 0, bytes, cu_stream));
}
void act_aware_copy(float *dst, const float *src, size_t n)
{
    bool d16 = is_act(dst), s16 = is_act(src);
    params_written(dst, n * (d16 ? 2 : sizeof *dst));
    if (!n)
        return;
    if (d16 == s16)
        CU(cudaMemcpyAsync(dst, src, n * (d16 ? 2 : sizeof *dst), cudaMemcpyDeviceToDevice, cu_stream));
    else if (d16)
        convert_flat((unsigned short *)dst, src, n);
    else
        convert_flat(dst, (const unsigned short *)src, n);
}

void cuda_acts_ops(struct backend *b)
{
    b->act_bf16 = acts_bf16;
    b->mark_acts = acts_bf16 ? STAMPED(cu_mark_acts) : NULL;
}
