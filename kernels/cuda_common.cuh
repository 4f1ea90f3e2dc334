/* What the CUDA backend's files (kernels/) share: the CUDA (or, with
 * RL_CUDA_EMU, the CPU emulation's) headers, the error and launch macros,
 * the fixed-order reductions, bf16 rounding, the backend's own workspaces,
 * the GEMM entry and the GEMM mode (set at start by backend_cuda.cu). Each
 * file fills its part of the backend table (cuda_gemm_ops and the like). */
#ifndef RLFLOW_CUDA_COMMON_CUH
#define RLFLOW_CUDA_COMMON_CUH
#ifdef RL_CUDA_EMU
/* tests/emu: the same source on the CPU, kernels run by threads, cuBLAS by
 * OpenBLAS; a check of the kernels' logic on machines without a GPU */
#include "cuda_emu.h"
#else
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define LAUNCH(kernel, grid, block) kernel<<<grid, block, 0, cu_stream>>>
#define NOTE_LAUNCH(name) ((void)0)
#endif
#ifdef RL_CUDA_EMU
#define NOTE_LAUNCH(name) emu::note_launch(name)
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

extern "C" {
#include "backend.h"
}

#define THREADS 256

extern cublasHandle_t blas;
/* The backend's one stream: every launch, cuBLAS call and async copy goes
 * to it, so ops run in order. It is a blocking stream: the legacy default
 * stream's copies (upload, download, cudaMemset) wait for it, and it for
 * them, as when everything ran on the legacy stream. It exists because a
 * capture (cuda_graph.cu) cannot record the legacy stream. */
extern cudaStream_t cu_stream;
/* Anything an op does that is not work on cu_stream (cudaMalloc, cudaFree,
 * a synchronous copy or memset, a read of device memory) must call this
 * first: inside a capture it runs what was recorded so far and leaves the
 * rest of the step to run as it comes (cuda_graph.cu). */
void capture_pause(void);
extern cublasComputeType_t gemm_compute;   /* for cublasGemmEx; unused in fp32 mode */
extern bool gemm_exact;                    /* RL_CUDA_MATH=fp32: cublasSgemm */
extern bool gemm_bf16;                     /* RL_CUDA_MATH=bf16: bf16 copies of the operands */
extern int sm_count;                       /* multiprocessors, for the launch shapes */
extern double *red_buf;                    /* sumsq partials [RED_BLOCKS + 1] */
#define RED_BLOCKS 1024
static inline void fatal(const char *what, const char *why)
{
    fprintf(stderr, "rlflow: CUDA %s: %s\n", what, why);
    exit(1);
}
#define CU(call)                                                   \
    do {                                                           \
        cudaError_t e_ = (call);                                   \
        if (e_ != cudaSuccess) fatal(#call, cudaGetErrorString(e_)); \
    } while (0)
/* A launch error names its kernel. An error inside a running kernel shows at
 * the next synchronising call; CUDA_LAUNCH_BLOCKING=1 pins it to its kernel. */
#define LAUNCHED(name)                                             \
    do {                                                           \
        NOTE_LAUNCH(name);                                         \
        cudaError_t e_ = cudaGetLastError();                       \
        if (e_ != cudaSuccess) fatal(name, cudaGetErrorString(e_)); \
        launch_count++;                                            \
        if (ktimes_on) ktimes_mark(name);                          \
    } while (0)
#define BLAS(call)                                                          \
    do {                                                                    \
        cublasStatus_t s_ = (call);                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) fatal(#call, cublasGetStatusString(s_)); \
        launch_count++;                                                     \
        if (ktimes_on) ktimes_mark("cuBLAS");                               \
    } while (0)
/* RL_CUDA_KERNEL_TIMES (cuda_ktimes.cu): each launch's time, by name; and
 * the launches so far, a cuBLAS call counted as one (rlflow_cuda_launches) */
extern bool ktimes_on;
extern unsigned long long launch_count;
void ktimes_start(void);
void ktimes_op_begin(void);          /* an op starts: the time before it is no kernel's (with ktimes_on) */
void ktimes_mark(const char *name);

/* Blocks for a grid-stride kernel over n elements. The emulation takes two:
 * any count is correct for these kernels, and few blocks both run faster
 * there and send every thread around the stride loop. */
static inline unsigned blocks_for(size_t n)
{
    size_t b = (n + THREADS - 1) / THREADS;
#ifdef RL_CUDA_EMU
    b = b > 2 ? 2 : b;
#endif
    return (unsigned)(b < 1 ? 1 : b > (1u << 20) ? (1u << 20) : b);
}
/* Launch a grid-stride kernel over n elements; nothing when n is 0. */
#define LAUNCH_OVER(n, kernel, name, ...)                              \
    do {                                                               \
        size_t n_ = (size_t)(n);                                       \
        if (n_) {                                                      \
            LAUNCH(kernel, blocks_for(n_), THREADS)(__VA_ARGS__);      \
            LAUNCHED(name);                                            \
        }                                                              \
    } while (0)
#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---------------- reductions (fixed order for a given block size) ---------------- */

__device__ static inline double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ static inline float warp_sum_f(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ static inline float max_of(float a, float b) { return fmaxf(a, b); }
__device__ static inline double max_of(double a, double b) { return fmax(a, b); }
__device__ static inline int max_of(int a, int b) { return a > b ? a : b; }
template <class T> __device__ static inline T lowest() { return (T)-INFINITY; }
template <> __device__ inline int lowest<int>() { return -0x7fffffff - 1; }
template <class T> __device__ static inline T warp_max(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = max_of(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
__device__ static inline double block_sum_d(double v)
{
    __shared__ double part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();                 /* part[] may still be read by a previous call */
    if (lane == 0)
        part[w] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0;
    return warp_sum_d(v);
}
/* Max over the block (float, double or int), to every thread. */
template <class T> __device__ static inline T block_max(T v)
{
    __shared__ T part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        part[w] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : lowest<T>();
    return warp_max(v);
}
/* In place: r[j] = exp(r[j] - mx) for j < len, each thread its own j; the
 * sum over the block, in double, to every thread. */
__device__ static inline double block_exp_sum(float *r, int len, float mx)
{
    double s = 0;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float e = expf(r[j] - mx);
        r[j] = e;
        s += e;
    }
    return block_sum_d(s);
}

/* fp32 -> bf16, rounding to nearest even (NaN stays NaN) */
__device__ static inline unsigned short bf16_rne(float x)
{
    unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* An element stored as fp32, or as bf16 (unsigned short) rounded by bf16_rne;
 * and read back as fp32 (a bf16 value is its float's upper half). */
__device__ static inline float get(const float *p, size_t i) { return p[i]; }
__device__ static inline float get(const unsigned short *p, size_t i) { return __uint_as_float((unsigned)p[i] << 16); }
__device__ static inline void put(float *p, size_t i, float v) { p[i] = v; }
__device__ static inline void put(unsigned short *p, size_t i, float v) { p[i] = bf16_rne(v); }

/* SwiGLU's element: silu(g) u (swiglu's, and the streamed products' that
 * end in it: the same bits) */
__device__ static inline float swiglu1(float g, float u) { return g / (1.0f + expf(-g)) * u; }
/* The swiglu op (cuda_elementwise.cu), for matmul_rows_swiglu where it
 * does not fuse them */
void cu_swiglu(float *h, const float *gu, int n, int f);

/* Rotate-half RoPE of one row's nh heads of hd, in place: ci and si are the
 * position's row of the tables, sgn -1 rotates back. The block's threads
 * take (head, pair) with 32-bit index arithmetic. rope and rope_kv_append
 * both run it, so their rows have the same bits. */
template <class T>
__device__ static inline void rope_row(T *row, int nh, int hd, const float *ci, const float *si, float sgn)
{
    int half = hd / 2;
    for (int t = threadIdx.x; t < nh * half; t += blockDim.x) {
        int h = t / half, j = t - h * half;
        T *v = row + (size_t)h * hd;
        float c = ci[j], s = sgn * si[j], a = get(v, j), b = get(v, j + half);
        put(v, j, a * c - b * s);
        put(v, j + half, b * c + a * s);
    }
}

/* dst[i][r][c] = src[i * stride + r * ld + c] for r < rows and 0 for rows <= r
 * < pad: a strided batch of matrices packed back to back (a GEMM's
 * operands, or a matrix's heads stacked head-major: stride = the head's
 * width), as fp32 or as bf16. A block per (row r, item i0 + y), threads
 * over the columns: no index division per element (the grid-stride form
 * divided a 64-bit index three times for each). */
template <class T>
__global__ static void k_pack(T *dst, const float *src, int rows, int cols, int ld, long long stride, int i0)
{
    int r = blockIdx.x;
    size_t i = (size_t)i0 + blockIdx.y;
    T *d = dst + (i * gridDim.x + r) * cols;
    const float *s = src + i * stride + (size_t)r * ld;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        put(d, c, r < rows ? s[c] : 0.0f);
}
template <class T>
static inline void pack(T *dst, const float *src, int rows, int pad, int cols, int ld, long long stride, int items,
                        const char *name)
{
    if (pad <= 0 || cols <= 0 || items <= 0)
        return;
    int threads = cols < THREADS ? (cols + 31) / 32 * 32 : THREADS;
    for (int i0 = 0; i0 < items; i0 += 65535) {   /* the grid's y limit */
        int n = items - i0 < 65535 ? items - i0 : 65535;
        LAUNCH(k_pack<T>, dim3(pad, n), threads)(dst, src, rows, cols, ld, stride, i0);
        LAUNCHED(name);
    }
}

/* Buffers of the backend's own that grow on demand (bf16 copies of GEMM
 * operands, the attention's head-major copies, column-sum partials); like cuBLAS's workspace,
 * they are never the caller's. */
enum { WS_GEMM_A, WS_GEMM_B, WS_ATTN, WS_P16, WS_DS16, WS_COLSUM, WS_DELTA, WS_DKV, WS_TCB, WS_EMBED, WS_SAMPLE,
       WS_KV32, WS_DECODE, WS_ACT32, WS_ROWS, WS_LT, WS_COUNT };
void *workspace(int which, size_t bytes);
/* Counters that start zeroed and that the kernels using them leave zeroed
 * (the last block of a tile resets its own), grown on demand like the
 * workspaces: the tiles' counters of last_block. */
enum { CNT_ROWS, CNT_DECODE, CNT_COUNT };
unsigned *zeroed_counters(int which, size_t n);

/* CUDA's threadfence reduction: whether this block is the last of the
 * `blocks` that share *count to get here. Each block's earlier writes are
 * fenced before it counts itself, so the last one sees them all; it should
 * read them with __ldcg (its L1 may hold older lines of them), and it
 * resets the counter for the next launch. Every thread of the block calls
 * it, after its writes. */
__device__ static inline bool last_block(unsigned *count, unsigned blocks)
{
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(count, 1u) == blocks - 1;
        if (last) {
            __threadfence();             /* the reading side's fence, for the PTX memory model */
            *count = 0;                  /* every other block has counted itself */
        }
    }
    __syncthreads();
    return last;
}

/* An operand of gemm_ex: fp32, or already bf16 (only in bf16 mode). */
struct operand {
    const void *p;
    bool bf16;
};
static inline operand f32(const float *p) { return operand{p, false}; }

/* c_bf16: c is bf16 (an activation), read for beta and written as such */
void gemm_ex(bool ta, bool tb, int m, int n, int k, float alpha, operand a, int lda, long long sa, operand b,
             int ldb, long long sb, float beta, float *c, int ldc, long long sc, int batch, bool c_bf16 = false);

/* A producer's bf16 copy of its output y (rows x cols, row pitch cols), to
 * be written by the kernel that writes y, beside it (put_bf16_4 or
 * bf16_rne): the A operand of the products that read y next (a norm's
 * output into a linear layer, swiglu's, the backward's dy), which then skip
 * their own copy of it, a read of 4 bytes an element. NULL where it would not
 * pay: outside bf16 mode, or for fewer rows than a product copies at all.
 * Call it inside a STAMPED op, after which the copy stands as long as an A
 * operand's copy does (cuda_gemm.cu). */
unsigned short *a_copy_for(const float *y, int rows, int cols);
__device__ static inline void put_bf16_4(unsigned short *p, float4 v)
{
    unsigned *q = (unsigned *)p;         /* 8-byte aligned: 4 elements in from a row start of 4 k */
    q[0] = bf16_rne(v.x) | (unsigned)bf16_rne(v.y) << 16;
    q[1] = bf16_rne(v.z) | (unsigned)bf16_rne(v.w) << 16;
}

/* Whether get4 and put4 may walk rows of p ld elements apart: p and every
 * row start aligned to four elements. */
template <class T> static inline bool rows_by4(const T *p, long long ld)
{
    return ld % 4 == 0 && (size_t)p % (4 * sizeof *p) == 0;
}
/* Four elements at p + i, 4 * sizeof *p bytes aligned, as fp32 */
__device__ static inline float4 get4(const float *p, size_t i) { return *(const float4 *)(p + i); }
__device__ static inline float4 get4(const unsigned short *p, size_t i)
{
    uint2 t = *(const uint2 *)(p + i);
    return float4{__uint_as_float(t.x << 16), __uint_as_float(t.x & 0xffff0000u), __uint_as_float(t.y << 16),
                  __uint_as_float(t.y & 0xffff0000u)};
}
/* Two elements at p + i, 2 * sizeof *p bytes aligned */
__device__ static inline void put2(float *p, size_t i, float a, float b) { *(float2 *)(p + i) = float2{a, b}; }
__device__ static inline void put2(unsigned short *p, size_t i, float a, float b)
{
    *(unsigned *)(p + i) = bf16_rne(a) | (unsigned)bf16_rne(b) << 16;
}
__device__ static inline void put4(float *p, size_t i, float4 v) { *(float4 *)(p + i) = v; }
__device__ static inline void put4(unsigned short *p, size_t i, float4 v) { put_bf16_4(p + i, v); }

/* cuda_params.cu: the bf16 copy of the parameters at p.. p + n when they lie
 * in a marked range (made fresh first), else NULL (bf16 mode only); the
 * part of it adamw writes beside w.. w + n when fresh (else NULL, and the
 * copy goes stale); and the hooks of the memory ops */
const unsigned short *param_bf16(const float *p, size_t n);
unsigned short *param_bf16_update(const float *w, size_t n);
void params_written(const void *p, size_t bytes);
void params_forget(const void *p);

/* cuda_acts.cu: activations stored as bf16 ($RL_CUDA_ACT, backend.h
 * act_bf16). is_act: p lies in a range the model marked as its activations
 * (false outside that mode); an op reads and writes such a buffer as
 * unsigned short (get, put) and every other as float. act_widen and
 * act_narrow convert rows x cols between the two (row pitches in elements;
 * narrow may add into the bf16 side); the memory ops convert too. */
extern bool acts_bf16;
bool is_act(const void *p);
void acts_forget(const void *p);
void act_widen(float *dst, long long ldd, const void *src, long long lds, size_t rows, int cols);
void act_narrow(void *dst, long long ldd, const float *src, long long lds, size_t rows, int cols, bool add);
void act_aware_zero(float *x, size_t n);
void act_aware_copy(float *dst, const float *src, size_t n);
int cuda_act_mode(const char *name);
/* Call f with a null pointer of the type p is stored in (unsigned short
 * for an activation, else float): `as_stored(p, [&](auto *t) { using T =
 * ...` picks a kernel's instance. Two buffers that an op requires to be
 * of one kind (a norm's input and output) are checked with same_kind. */
template <class F> static inline void as_stored(const void *p, F f)
{
    if (is_act(p))
        f((unsigned short *)nullptr);
    else
        f((float *)nullptr);
}
template <class T> using stored_t = typename std::remove_cv<typename std::remove_pointer<T>::type>::type;
static inline void same_kind(const char *op, const void *a, const void *b)
{
    if (a && b && is_act(a) != is_act(b))
        fatal(op, "given an activation (bf16) and an fp32 buffer where it takes two of one kind");
}

/* Every op that may write the caller's memory, matmul aside, bumps op_epoch
 * as it starts and as it ends (STAMPED around its entry in the table):
 * gemm_ex reuses its bf16 copy of an A operand only while the epoch stands
 * still, i.e. while only matmuls and reading ops (download, sumsq, the
 * profiler's waits) ran; a matmul that wrote over the operand forgets the
 * copy itself. The backward of a linear layer reads dy as the A of two
 * products in a row: dx = dy w, dw += dy^T x. */
extern unsigned long op_epoch;
template <class F> struct stamp_t;
template <class R, class... A> struct stamp_t<R (*)(A...)> {
    template <R (*F)(A...)> static R call(A... a)
    {
        struct after {
            ~after() { op_epoch++; }
        } at_return;
        op_epoch++;
        ktimes_op_begin();
        return F(a...);
    }
};
#define STAMPED(f) (&stamp_t<decltype(&f)>::template call<&f>)

/* each file's ops into the table */
void cuda_params_ops(struct backend *b);
void cuda_acts_ops(struct backend *b);
void cuda_gemm_ops(struct backend *b);
void cuda_elementwise_ops(struct backend *b);
void cuda_attention_ops(struct backend *b);
void cuda_sample_ops(struct backend *b);
void cuda_graph_ops(struct backend *b);
/* $RL_CUDA_GRAPHS (cuda_graph.cu): 0, or -1 when it names no mode; whether
 * decode steps run as CUDA graphs */
int cuda_graphs_mode(const char *name);
bool cuda_graphs(void);
const char *cuda_stream_start(void);  /* cu_stream, cuBLAS on it; NULL or what failed */
/* The index of name among modes (unset or empty: the first, "auto"), or -1:
 * how each $RL_CUDA_* switch is read. */
template <int N> static inline int mode_index(const char *name, const char *const (&modes)[N])
{
    for (int i = 0; i < N; i++)
        if (!name || !*name ? i == 0 : !strcmp(name, modes[i]))
            return i;
    return -1;
}
/* $RL_CUDA_ROWS (cuda_gemm.cu): 0, or -1 when it names no mode; and whether
 * matmul_rows may take the tensor cores */
int cuda_rows_mode(const char *name);
bool cuda_rows_tc(void);
int cuda_rows_blocks(const char *value);  /* $RL_CUDA_ROWS_BLOCKS; -1 when not a count in 1..65535 */
bool cuda_rows_stream(void);           /* the tensor-core kernel that streams the weights */
/* $RL_CUDA_DECODE (after $RL_CUDA_ATTN): 0, or -1 when it names no mode;
 * and whether decode steps take the split kernel */
int cuda_decode_mode(const char *name);
bool cuda_split_decode(void);
/* $RL_CUDA_GEMM (cuda_gemm_lt.cu): 0, or -1 when it names no mode; the
 * route of single products (gemm_ex): cublasGemmEx, or cuBLASLt with the
 * heuristic's algorithm for each shape, or with one for every row count
 * (pinned: a row's bits do not depend on the rows beside it) */
enum { GEMM_EX = 1, GEMM_LT, GEMM_PINNED };
extern int gemm_route;
int cuda_gemm_mode(const char *name);
const char *cuda_gemm_desc(void);
void lt_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const void *a, int lda, const void *b, int ldb,
             float beta, void *c, int ldc, cudaDataType ab, cudaDataType ctype, cublasComputeType_t compute);
/* $RL_CUDA_ATTN: 0, or -1 when it names no mode; and what the device line says of it */
int cuda_attention_mode(const char *name);
const char *cuda_attention_desc(void);
#endif
