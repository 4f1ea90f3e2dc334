/* The CUDA backend: the table of lib/backend.h on one GPU. Matmuls go to
 * cuBLAS; every other op is a kernel of this file. Buffers are device memory
 * (cudaMalloc); the int arrays the ops read are device memory too, and the
 * attention call's per-sequence description travels as a kernel parameter.
 * Everything runs on the legacy default stream, so ops are ordered and a
 * download (cudaMemcpy) waits for the work before it.
 *
 * Numerics: fp32 storage. The GEMMs run in the mode $RL_CUDA_MATH names:
 * "bf16" (the default: bf16 tensor-core products, fp32 accumulation, fp32 in
 * and out), "tf32", or "fp32" (exact fp32, for parity checks). Reductions
 * that normalise (RMS, softmax sums, norms) accumulate in double, as on the
 * CPU; every reduction has a fixed order, so results repeat bit for bit.
 * matmul_rows is a kernel, not cuBLAS: each element is one dot product in an
 * order fixed by k alone (32 lanes in k order, then a fixed shuffle tree), so
 * batched decoding is batch-invariant here too. */
#ifdef RL_CUDA_EMU
/* tests/emu: the same source on the CPU, kernels run by threads, cuBLAS by
 * OpenBLAS; a check of the kernels' logic on machines without a GPU */
#include "cuda_emu.h"
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define LAUNCH(kernel, grid, block) kernel<<<grid, block>>>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
}
using namespace nvcuda;

/* Built into rlflow-cuda.so, which the library dlopens on demand (so a tool
 * on the CPU never loads cuBLAS): it depends on nothing of the program's and
 * reports failure in its own buffer. */
static char why[256];
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return -1;
}

#define THREADS 256
#define MAX_HD 256            /* head_dim limit of the attention kernels */
#define ATTN_WARPS 4
#define ATTN_SEQS 32          /* sequences per attention launch (kernel parameter space) */
#define FA_ROWS 8             /* tiled attention: query rows per warp, */
#define FA_BR (FA_ROWS * ATTN_WARPS)   /* per block, */
#define FA_HD 128             /* and the largest head_dim it takes (else the per-query one) */
#define FB_BC 16              /* tiled backward: keys per block (4 per warp) */

static cublasHandle_t blas;
static cublasComputeType_t gemm_compute;   /* for cublasGemmEx; unused in fp32 mode */
static bool gemm_exact;                    /* RL_CUDA_MATH=fp32: cublasSgemm */
static bool gemm_bf16;                     /* RL_CUDA_MATH=bf16: bf16 copies of the operands */
static double *red_buf;                    /* sumsq partials [RED_BLOCKS + 1] */
#define RED_BLOCKS 1024

static void fatal(const char *what, const char *why)
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
        cudaError_t e_ = cudaGetLastError();                       \
        if (e_ != cudaSuccess) fatal(name, cudaGetErrorString(e_)); \
    } while (0)
#define BLAS(call)                                                          \
    do {                                                                    \
        cublasStatus_t s_ = (call);                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) fatal(#call, cublasGetStatusString(s_)); \
    } while (0)

/* Blocks for a grid-stride kernel over n elements. The emulation takes two:
 * any count is correct for these kernels, and few blocks both run faster
 * there and send every thread around the stride loop. */
static unsigned blocks_for(size_t n)
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

__device__ static double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ static float warp_sum_f(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ static float warp_max_f(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
__device__ static double block_sum_d(double v)
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
__device__ static float block_max_f(float v)
{
    __shared__ float part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max_f(v);
    __syncthreads();
    if (lane == 0)
        part[w] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : -INFINITY;
    return warp_max_f(v);
}

/* ---------------- memory ---------------- */

static void *cu_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError();          /* out of memory is the caller's error to report */
        return NULL;
    }
    CU(cudaMemset(p, 0, bytes ? bytes : 256));
    return p;
}
static void cu_free(void *p) { if (p) CU(cudaFree(p)); }
static void cu_upload(void *dst, const void *src, size_t n) { if (n) CU(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice)); }
static void cu_download(void *dst, const void *src, size_t n) { if (n) CU(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost)); }
static void cu_zero(float *x, size_t n) { if (n) CU(cudaMemsetAsync(x, 0, n * sizeof *x, 0)); }
static void cu_copy(float *dst, const float *src, size_t n)
{
    if (n) CU(cudaMemcpyAsync(dst, src, n * sizeof *dst, cudaMemcpyDeviceToDevice, 0));
}

/* ---------------- matmul ---------------- */

/* Buffers of the backend's own that grow on demand (bf16 copies of GEMM
 * operands, the attention's head-major copies, column-sum partials); like cuBLAS's workspace,
 * they are never the caller's. */
enum { WS_GEMM_A, WS_GEMM_B, WS_ATTN, WS_P16, WS_DS16, WS_COLSUM, WS_DELTA, WS_DKV, WS_TCB, WS_COUNT };
static void *workspace(int which, size_t bytes)
{
    static void *ws[WS_COUNT];
    static size_t cap[WS_COUNT];
    if (bytes > cap[which]) {
        if (ws[which])
            CU(cudaFree(ws[which]));
        ws[which] = NULL;
        if (cudaMalloc(&ws[which], bytes) != cudaSuccess) {
            char msg[96];
            snprintf(msg, sizeof msg, "out of GPU memory for a %.0f MB workspace", bytes / 1e6);
            fatal("workspace", msg);
        }
        cap[which] = bytes;
    }
    return ws[which];
}

/* fp32 -> bf16, rounding to nearest even (NaN stays NaN) */
__device__ static unsigned short bf16_rne(float x)
{
    unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
/* dst[i][r][c] = bf16(src[i * stride + r * ld + c]), packed */
__global__ static void k_pack_bf16(unsigned short *dst, const float *src, int rows, int cols, int ld,
                                   long long stride, size_t n)
{
    GRID_STRIDE(t, n) {
        size_t per = (size_t)rows * cols, i = t / per, r = t % per / cols, col = t % cols;
        dst[t] = bf16_rne(src[i * stride + r * ld + col]);
    }
}
/* The same for an operand already contiguous (ld = cols, items back to
 * back), four elements a thread: no index arithmetic per element. */
__global__ static void k_pack_bf16_flat(unsigned short *dst, const float *src, size_t n4)
{
    GRID_STRIDE(t, n4) {
        float4 v = ((const float4 *)src)[t];
        dst[4 * t] = bf16_rne(v.x), dst[4 * t + 1] = bf16_rne(v.y);
        dst[4 * t + 2] = bf16_rne(v.z), dst[4 * t + 3] = bf16_rne(v.w);
    }
}
/* A packed bf16 copy of `batch` (1 when stride is 0) rows x cols operands. */
static const void *packed_bf16(int which, const float *x, int rows, int cols, int ld, long long stride, int batch,
                               long long *packed_stride)
{
    size_t items = stride ? (size_t)batch : 1, n = items * rows * cols;
    unsigned short *p = (unsigned short *)workspace(which, n * sizeof *p);
    bool flat = ld == cols && (items == 1 || stride == (long long)rows * cols) && n % 4 == 0 && (size_t)x % 16 == 0;
    if (flat)
        LAUNCH_OVER(n / 4, k_pack_bf16_flat, "bf16 copy of a GEMM operand", p, x, n / 4);
    else
        LAUNCH_OVER(n, k_pack_bf16, "bf16 copy of a GEMM operand", p, x, rows, cols, ld, stride, n);
    *packed_stride = stride ? (long long)rows * cols : 0;
    return p;
}

/* An operand of gemm_ex: fp32, or already bf16 (only in bf16 mode). */
struct operand {
    const void *p;
    bool bf16;
};
static operand f32(const float *p) { return operand{p, false}; }

/* `batch` row-major products c = alpha op(a) op(b) + beta c at once, the
 * i-th on a + i*sa, b + i*sb and c + i*sc (a stride may be 0: every product
 * shares that operand). Row-major C = op(A) op(B) is column-major C^T =
 * op(B)^T op(A)^T: cuBLAS gets B first, and a row-major matrix read
 * column-major is its transpose. In bf16 mode fp32 operands are rounded to
 * bf16 by k_pack_bf16 first: cuBLAS's own fp32-in path (FAST_16BF) ran at
 * half the rate of a bf16-in GEMM on an H100, and the copies cost less,
 * except where the product is thin: the copies move 6 (m + n) k bytes for
 * 2 m n k FLOPs, and at m n / (m + n) under 512 (a decode step's 64 rows, a
 * prompt's few hundred) they cost more than FAST_16BF loses; such single
 * products keep the fp32 operands (on an H100 a decode step of 64 sequences
 * ran 1.2x slower with the copies). Batched products (attention) always
 * take the copies: that is the path measured on the GPU. */
static void gemm_ex(bool ta, bool tb, int m, int n, int k, float alpha, operand a, int lda, long long sa, operand b,
                    int ldb, long long sb, float beta, float *c, int ldc, long long sc, int batch)
{
    if (m <= 0 || n <= 0 || batch <= 0)
        return;
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    if ((a.bf16 || b.bf16) && !gemm_bf16)
        fatal("matmul", "a bf16 operand outside bf16 mode");
    if (gemm_exact) {
        BLAS(cublasSgemmStridedBatched(blas, opb, opa, n, m, k, &alpha, (const float *)b.p, ldb, sb,
                                       (const float *)a.p, lda, sa, &beta, c, ldc, sc, batch));
        return;
    }
    cudaDataType type = CUDA_R_32F;
    cublasComputeType_t compute = gemm_compute;
    bool thin = batch == 1 && (double)m * n / (m + n) < 512;
    if (gemm_bf16 && (a.bf16 || b.bf16 || !thin)) {
        if (!a.bf16 && k > 0) {
            int rows = ta ? k : m, cols = ta ? m : k;
            a.p = packed_bf16(WS_GEMM_A, (const float *)a.p, rows, cols, lda, sa, batch, &sa);
            lda = cols;
        }
        if (!b.bf16 && k > 0) {
            int rows = tb ? n : k, cols = tb ? k : n;
            b.p = packed_bf16(WS_GEMM_B, (const float *)b.p, rows, cols, ldb, sb, batch, &sb);
            ldb = cols;
        }
        type = CUDA_R_16BF;
        compute = CUBLAS_COMPUTE_32F;
    }
    if (batch == 1)
        BLAS(cublasGemmEx(blas, opb, opa, n, m, k, &alpha, b.p, type, ldb, a.p, type, lda, &beta, c, CUDA_R_32F, ldc,
                          compute, CUBLAS_GEMM_DEFAULT));
    else
        BLAS(cublasGemmStridedBatchedEx(blas, opb, opa, n, m, k, &alpha, b.p, type, ldb, sb, a.p, type, lda, sa,
                                        &beta, c, CUDA_R_32F, ldc, sc, batch, compute, CUBLAS_GEMM_DEFAULT));
}

static void cu_matmul(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc)
{
    gemm_ex(ta, tb, m, n, k, alpha, f32(a), lda, 0, f32(b), ldb, 0, beta, c, ldc, 0, 1);
}

/* c[m, n] = a[m, k] b[n, k]^T with one fixed order per element, whatever m
 * (batched decoding stays batch-invariant): lane l of a warp takes the k in
 * groups of four, k = 128 t + 4 l + e (e = 0..3), summing them in (t, e)
 * order with fmaf; then the lanes meet in the xor tree of warp_sum_f. A
 * block stages MR_ROWS rows of a in shared memory, MR_K columns at a time;
 * each warp takes COLS columns, read as float4 where aligned (the width of
 * a load never changes the arithmetic). Row blocks vary fastest in the
 * grid, so the blocks reading one set of b's rows run side by side and b
 * comes from memory about once. */
#define MR_ROWS 16
#define MR_STAGE 4                    /* 128-wide groups of k staged per pass */
#define MR_K (128 * MR_STAGE)

__device__ static void load4(float *v, const float *row, int kb, int k, bool vec)
{
    if (vec && kb + 3 < k) {
        float4 t = *(const float4 *)(row + kb);
        v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++)
            v[e] = kb + e < k ? row[kb + e] : 0.0f;   /* fmaf(0, 0, acc) leaves acc as it is */
    }
}

template <int COLS>
__global__ static void k_matmul_rows(float *c, const float *a, const float *b, int m, int n, int k, bool vec)
{
    __shared__ __align__(16) float as[MR_ROWS][MR_K];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, r0 = blockIdx.x * MR_ROWS;
    int j0 = (blockIdx.y * (blockDim.x >> 5) + w) * COLS;
    int nr = m - r0 < MR_ROWS ? m - r0 : MR_ROWS;
    float acc[MR_ROWS][COLS];
#pragma unroll
    for (int r = 0; r < MR_ROWS; r++)
#pragma unroll
        for (int q = 0; q < COLS; q++)
            acc[r][q] = 0.0f;
    const float *bj[COLS];
#pragma unroll
    for (int q = 0; q < COLS; q++)
        bj[q] = b + (size_t)(j0 + q < n ? j0 + q : n - 1) * k;   /* a clamped column is computed, not stored */
    for (int k0 = 0; k0 < k; k0 += MR_K) {
        __syncthreads();                 /* the previous stage is read */
        for (int t = threadIdx.x; t < nr * MR_K / 4; t += blockDim.x) {   /* four columns a thread */
            int r = t / (MR_K / 4), kk = 4 * (t % (MR_K / 4));
            load4(&as[r][kk], a + (size_t)(r0 + r) * k, k0 + kk, k, vec);
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < MR_STAGE; u++) {
            int kb = k0 + 128 * u + 4 * lane;
            if (kb >= k)
                break;                   /* depends on k alone: the order stays fixed */
            float bv[COLS][4];
#pragma unroll
            for (int q = 0; q < COLS; q++)
                load4(bv[q], bj[q], kb, k, vec);
#pragma unroll
            for (int r = 0; r < MR_ROWS; r++)
                if (r < nr) {
                    float4 av = *(const float4 *)&as[r][128 * u + 4 * lane];
#pragma unroll
                    for (int q = 0; q < COLS; q++) {
                        acc[r][q] = fmaf(av.x, bv[q][0], acc[r][q]);
                        acc[r][q] = fmaf(av.y, bv[q][1], acc[r][q]);
                        acc[r][q] = fmaf(av.z, bv[q][2], acc[r][q]);
                        acc[r][q] = fmaf(av.w, bv[q][3], acc[r][q]);
                    }
                }
        }
    }
#pragma unroll
    for (int r = 0; r < MR_ROWS; r++)
#pragma unroll
        for (int q = 0; q < COLS; q++)
            if (r < nr) {                /* nr is the same for every lane */
                float sum = warp_sum_f(acc[r][q]);
                if (lane == 0 && j0 + q < n)
                    c[(size_t)(r0 + r) * n + j0 + q] = sum;
            }
}
static int sm_count = 1;                 /* multiprocessors, for the launch shapes */
static void cu_matmul_rows(float *c, const float *a, const float *b, int m, int n, int k)
{
    if (m <= 0 || n <= 0)
        return;
    bool vec = k % 4 == 0 && (size_t)a % 16 == 0 && (size_t)b % 16 == 0;
    unsigned row_blocks = (m + MR_ROWS - 1) / MR_ROWS, warps = THREADS / 32;
    /* four columns per warp reuse each row of a four times; one column per
     * warp makes four times the blocks, for the GPU to have enough of them */
    unsigned blocks4 = row_blocks * ((n + 4 * warps - 1) / (4 * warps));
    if (blocks4 >= 2u * sm_count && m > MR_ROWS)
        LAUNCH(k_matmul_rows<4>, dim3(row_blocks, (n + 4 * warps - 1) / (4 * warps)), THREADS)(c, a, b, m, n, k, vec);
    else
        LAUNCH(k_matmul_rows<1>, dim3(row_blocks, (n + warps - 1) / warps), THREADS)(c, a, b, m, n, k, vec);
    LAUNCHED("matmul_rows");
}

/* ---------------- RMSNorm ---------------- */

__global__ static void k_rmsnorm(float *y, float *rstd, const float *x, const float *w, int d, float eps)
{
    const float *xi = x + (size_t)blockIdx.x * d;
    float *yi = y + (size_t)blockIdx.x * d;
    double ss = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        ss += (double)xi[j] * xi[j];
    ss = block_sum_d(ss);
    float r = (float)(1.0 / sqrt(ss / d + eps));
    if (threadIdx.x == 0)
        rstd[blockIdx.x] = r;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        yi[j] = w[j] * (xi[j] * r);
}
static void cu_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps)
{
    if (n <= 0)
        return;
    LAUNCH(k_rmsnorm, n, THREADS)(y, rstd, x, w, d, eps);
    LAUNCHED("rmsnorm");
}

/* dx += r w dy - x r^3/d sum(w dy x), per row */
__global__ static void k_rmsnorm_bwd_rows(float *dx, const float *dy, const float *x, const float *w,
                                         const float *rstd, int d)
{
    size_t o = (size_t)blockIdx.x * d;
    double dot = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dot += (double)w[j] * dy[o + j] * x[o + j];
    dot = block_sum_d(dot);
    float r = rstd[blockIdx.x];
    float c = (float)(dot * r * r * r / d);
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dx[o + j] += r * w[j] * dy[o + j] - x[o + j] * c;
}

/* out[j] += sum over rows i of a[i, j] (* b[i, j]) (* s[i]), in double, in
 * two passes with an order fixed by n and d: a block takes 32 columns of one
 * chunk of COLSUM_ROWS rows (8 row lanes, each summing every 8th row in
 * order, then the lanes in order) into part[chunk][j]; then the chunks are
 * summed in order. Chunks keep the GPU busy: one block per 32 columns left
 * 64 blocks for d = 2048. */
#define COLSUM_ROWS 128
__global__ static void k_colsum_part(double *part, const float *a, const float *b, const float *s, int n, int d)
{
    __shared__ double lanes[8][33];
    int j = blockIdx.x * 32 + threadIdx.x, ty = threadIdx.y;
    int i0 = blockIdx.y * COLSUM_ROWS, i1 = i0 + COLSUM_ROWS < n ? i0 + COLSUM_ROWS : n;
    double acc = 0;
    if (j < d)
        for (int i = i0 + ty; i < i1; i += 8) {
            double v = a[(size_t)i * d + j];
            if (b)
                v *= b[(size_t)i * d + j];
            if (s)
                v *= s[i];
            acc += v;
        }
    lanes[ty][threadIdx.x] = acc;
    __syncthreads();
    if (ty == 0 && j < d) {
        double t = 0;
        for (int r = 0; r < 8; r++)
            t += lanes[r][threadIdx.x];
        part[(size_t)blockIdx.y * d + j] = t;
    }
}
__global__ static void k_colsum_total(float *out, const double *part, int chunks, int d)
{
    GRID_STRIDE(j, (size_t)d) {
        double t = 0;
        for (int c = 0; c < chunks; c++)
            t += part[(size_t)c * d + j];
        out[j] += (float)t;
    }
}
static void colsum(float *out, const float *a, const float *b, const float *s, int n, int d)
{
    if (n <= 0 || d <= 0)
        return;
    int chunks = (n + COLSUM_ROWS - 1) / COLSUM_ROWS;
    double *part = (double *)workspace(WS_COLSUM, (size_t)chunks * d * sizeof(double));
    LAUNCH(k_colsum_part, dim3((d + 31) / 32, chunks), dim3(32, 8))(part, a, b, s, n, d);
    LAUNCHED("column sum");
    LAUNCH_OVER(d, k_colsum_total, "column sum (total)", out, part, chunks, d);
}

static void cu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w,
                           const float *rstd, int n, int d)
{
    if (n <= 0)
        return;
    LAUNCH(k_rmsnorm_bwd_rows, n, THREADS)(dx, dy, x, w, rstd, d);
    LAUNCHED("rmsnorm_bwd");
    colsum(dw, dy, x, rstd, n, d);
}

/* ---------------- RoPE ---------------- */

__global__ static void k_rope(float *x, int stride, const int *pos, int n, int nh, int hd, const float *cs,
                              const float *sn, float sgn)
{
    int half = hd / 2;
    size_t total = (size_t)n * nh * half;
    GRID_STRIDE(t, total) {
        int j = (int)(t % half);
        size_t ih = t / half;
        int h = (int)(ih % nh), i = (int)(ih / nh);
        float *v = x + (size_t)i * stride + (size_t)h * hd;
        size_t tab = (size_t)pos[i] * half + j;
        float c = cs[tab], s = sgn * sn[tab], a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
    }
}
static void cu_rope(float *x, int stride, const int *pos, int n, int nh, int hd, const float *cs,
                    const float *sn, bool inverse)
{
    LAUNCH_OVER((size_t)n * nh * (hd / 2), k_rope, "rope", x, stride, pos, n, nh, hd, cs, sn, inverse ? -1.0f : 1.0f);
}

/* ---------------- attention ----------------
 * One block (ATTN_WARPS warps) per (query row, head) in the forward and the
 * first backward kernel, one per (key row, kv head) in the second. Warps take
 * keys (or queries) in turn; the lanes of a warp cover head_dim, so each row
 * of K, V, Q or dO is read coalesced. Scores and probabilities go through the
 * caller's scratch s->p / s->dp ([head][n][pos+n] per sequence), so the
 * context length has no limit but memory. */
struct seq_desc {
    const float *k, *v;
    float *p, *lse, *dk, *dv, *dp;
    int row, n, pos, kv_stride;
};
struct attn_args {
    int n_seq;
    int first[ATTN_SEQS + 1];       /* prefix sums of the block rows per sequence */
    struct seq_desc s[ATTN_SEQS];
};

__device__ static int find_seq(const attn_args &A, int b)
{
    int s = 0;
    while (s + 1 < A.n_seq && A.first[s + 1] <= b)
        s++;
    return s;
}

/* The dot of a row held in shared memory with a global row, over one warp. */
__device__ static float warp_dot(const float *sh, const float *g, int hd)
{
    float acc = 0;
    for (int d = threadIdx.x & 31; d < hd; d += 32)
        acc = fmaf(sh[d], g[d], acc);
    return warp_sum_f(acc);
}

/* out[hd] = sum_j c[j] rows[j*stride][d] over j in [j0, j1): warps take j in
 * turn, lanes take d; partial sums meet in shared memory in a fixed order. */
__device__ static void weighted_rows(float *out_sh, const float *c, const float *rows, int stride, int j0,
                                     int j1, int hd)
{
    __shared__ float part[ATTN_WARPS][MAX_HD];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    float acc[MAX_HD / 32];
#pragma unroll
    for (int t = 0; t < MAX_HD / 32; t++)
        acc[t] = 0;
    for (int j = j0 + w; j < j1; j += ATTN_WARPS) {
        float cj = c[j];
        const float *r = rows + (size_t)j * stride;
#pragma unroll
        for (int t = 0; t < MAX_HD / 32; t++)
            if (lane + 32 * t < hd)
                acc[t] = fmaf(cj, r[lane + 32 * t], acc[t]);
    }
#pragma unroll
    for (int t = 0; t < MAX_HD / 32; t++)
        if (lane + 32 * t < hd)
            part[w][lane + 32 * t] = acc[t];
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float s = 0;
        for (int ww = 0; ww < ATTN_WARPS; ww++)
            s += part[ww][d];
        out_sh[d] = s;
    }
    __syncthreads();
}

__global__ static void k_attention(float *out, int out_stride, const float *q, int q_stride, attn_args A,
                                   int group, int hd, float scale)
{
    __shared__ float qs[MAX_HD], os[MAX_HD];
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, g = h / group;
    const seq_desc &S = A.s[si];
    int i = blockIdx.x - A.first[si], ctx = S.pos + S.n, len = S.pos + i + 1;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const float *qi = q + (size_t)(S.row + i) * q_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qs[d] = qi[d];
    __syncthreads();
    float *pr = S.p + ((size_t)h * S.n + i) * ctx;
    const float *kg = S.k + (size_t)g * hd, *vg = S.v + (size_t)g * hd;
    float mx = -INFINITY;
    for (int j = w; j < len; j += ATTN_WARPS) {
        float s = scale * warp_dot(qs, kg + (size_t)j * S.kv_stride, hd);
        if (lane == 0)
            pr[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max_f(mx);            /* its barriers also publish pr[] to the block */
    double sum = 0;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float e = expf(pr[j] - mx);
        pr[j] = e;
        sum += e;
    }
    sum = block_sum_d(sum);
    weighted_rows(os, pr, vg, S.kv_stride, 0, len, hd);
    float inv = (float)(1.0 / sum);
    float *oi = out + (size_t)(S.row + i) * out_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        oi[d] = os[d] * inv;
    if (S.lse && threadIdx.x == 0)
        S.lse[(size_t)h * S.n + i] = mx + (float)log(sum);
}

/* Backward, per (query row, head): P and dP again, dS = P (dP - rowsum(P dP))
 * scale into s->dp, dq = dS K (overwritten). P stays in s->p for the key pass. */
__global__ static void k_attention_bwd_q(float *dq, int q_stride, const float *dout, int dout_stride,
                                         const float *q, attn_args A, int group, int hd,
                                         float scale)
{
    __shared__ float qs[MAX_HD], dos[MAX_HD], os[MAX_HD];
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, g = h / group;
    const seq_desc &S = A.s[si];
    int i = blockIdx.x - A.first[si], ctx = S.pos + S.n, len = S.pos + i + 1;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const float *qi = q + (size_t)(S.row + i) * q_stride + (size_t)h * hd;
    const float *di = dout + (size_t)(S.row + i) * dout_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        qs[d] = qi[d];
        dos[d] = di[d];
    }
    __syncthreads();
    size_t r = ((size_t)h * S.n + i) * ctx;
    float *pr = S.p + r, *dpr = S.dp + r, lse = S.lse[(size_t)h * S.n + i];
    const float *kg = S.k + (size_t)g * hd, *vg = S.v + (size_t)g * hd;
    double rowdot = 0;
    for (int j = w; j < len; j += ATTN_WARPS) {
        float p = expf(scale * warp_dot(qs, kg + (size_t)j * S.kv_stride, hd) - lse);
        float dp = warp_dot(dos, vg + (size_t)j * S.kv_stride, hd);
        if (lane == 0) {
            pr[j] = p;
            dpr[j] = dp;
            rowdot += (double)p * dp;
        }
    }
    float D = (float)block_sum_d(rowdot);
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        dpr[j] = pr[j] * (dpr[j] - D) * scale;
    __syncthreads();
    weighted_rows(os, dpr, kg, S.kv_stride, 0, len, hd);
    float *dqi = dq + (size_t)(S.row + i) * q_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        dqi[d] = os[d];
}

/* Backward, per (key row j, kv head g): over the group's heads h and the
 * queries i that see j, dk_j += sum dS[h][i][j] q_i,h and dv_j += sum
 * P[h][i][j] dO_i,h. One block owns its dk/dv row: no atomics. */
__global__ static void k_attention_bwd_kv(const float *dout, int dout_stride, const float *q, int q_stride,
                                          attn_args A, int group, int hd)
{
    __shared__ float part_k[ATTN_WARPS][MAX_HD], part_v[ATTN_WARPS][MAX_HD];
    int si = find_seq(A, blockIdx.x), g = blockIdx.y;
    const seq_desc &S = A.s[si];
    int j = blockIdx.x - A.first[si], ctx = S.pos + S.n;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int i0 = j - S.pos > 0 ? j - S.pos : 0;         /* query i sees keys up to pos + i */
    int n_i = S.n - i0, work = group * n_i;
    float ak[MAX_HD / 32], av[MAX_HD / 32];
#pragma unroll
    for (int t = 0; t < MAX_HD / 32; t++)
        ak[t] = av[t] = 0;
    for (int u = w; u < work; u += ATTN_WARPS) {
        int h = g * group + u / n_i, i = i0 + u % n_i;
        size_t r = ((size_t)h * S.n + i) * ctx + j;
        float p = S.p[r], dsv = S.dp[r];
        const float *qi = q + (size_t)(S.row + i) * q_stride + (size_t)h * hd;
        const float *di = dout + (size_t)(S.row + i) * dout_stride + (size_t)h * hd;
#pragma unroll
        for (int t = 0; t < MAX_HD / 32; t++)
            if (lane + 32 * t < hd) {
                ak[t] = fmaf(dsv, qi[lane + 32 * t], ak[t]);
                av[t] = fmaf(p, di[lane + 32 * t], av[t]);
            }
    }
#pragma unroll
    for (int t = 0; t < MAX_HD / 32; t++)
        if (lane + 32 * t < hd) {
            part_k[w][lane + 32 * t] = ak[t];
            part_v[w][lane + 32 * t] = av[t];
        }
    __syncthreads();
    float *dk = S.dk + (size_t)j * S.kv_stride + (size_t)g * hd;
    float *dv = S.dv + (size_t)j * S.kv_stride + (size_t)g * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float sk = 0, sv = 0;
        for (int ww = 0; ww < ATTN_WARPS; ww++) {
            sk += part_k[ww][d];
            sv += part_v[ww][d];
        }
        dk[d] += sk;
        dv[d] += sv;
    }
}

/* ---- tiles in shared memory, shared by the tiled kernels ----
 * A tile holds rows of head_dim floats. One that lanes read down a column
 * (lane j reading row j) is stored skewed, element (r, d) at d + r mod hd
 * within its row, so that the 32 lanes hit 32 banks without padding. */
__device__ __forceinline__ static int skew(int r, int d, int hd) { return r * hd + (d + r) % hd; }

/* Rows r0 .. r0+rows-1 of src (row i at src + i * stride; zeros from row
 * `end` on) into a tile, skewed or row after row. */
__device__ __forceinline__ static void load_rows(float *tile, int rows, const float *src, int stride, int r0, int end,
                                                 int hd, bool skewed)
{
    for (int t = threadIdx.x; t < rows * hd; t += blockDim.x) {
        int i = t / hd, d = t % hd;
        tile[skewed ? skew(i, d, hd) : t] = r0 + i < end ? src[(size_t)(r0 + i) * stride + d] : 0.0f;
    }
}

/* dot[r] = row (8w + r) of `rows` (a row-after-row tile) . row `lane` of the
 * skewed tile: each element of the skewed tile is loaded once for the warp's
 * 8 rows, the other reads are broadcasts. */
__device__ __forceinline__ static void tile_dots(float dot[FA_ROWS], const float *rows, const float *tile, int hd)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++)
        dot[r] = 0;
    for (int d = 0; d < hd; d++) {
        float x = tile[skew(lane, d, hd)];
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++)
            dot[r] = fmaf(rows[(w * FA_ROWS + r) * hd + d], x, dot[r]);
    }
}

/* acc[r][t] += sum over j of c[r] of lane j * tile row j, dimension
 * lane + 32t: the warp's 8 rows of (coefficients x tile) */
__device__ __forceinline__ static void tile_fma(float acc[FA_ROWS][FA_HD / 32], const float c[FA_ROWS],
                                                const float *tile, int hd)
{
    int lane = threadIdx.x & 31;
    for (int j = 0; j < 32; j++) {
        float cj[FA_ROWS];
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++)
            cj[r] = __shfl_sync(0xffffffffu, c[r], j);
#pragma unroll
        for (int t = 0; t < FA_HD / 32; t++) {
            int d = lane + 32 * t;
            if (d < hd) {
                float x = tile[skew(j, d, hd)];
#pragma unroll
                for (int r = 0; r < FA_ROWS; r++)
                    acc[r][t] = fmaf(cj[r], x, acc[r][t]);
            }
        }
    }
}

/* The warp's rows 8w + r < n of acc to base + row * stride. */
__device__ __forceinline__ static void store_rows(float *base, int stride, int n, const float acc[FA_ROWS][FA_HD / 32],
                                                  int hd)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        int R = w * FA_ROWS + r;
        if (R >= n)
            continue;
#pragma unroll
        for (int t = 0; t < FA_HD / 32; t++)
            if (lane + 32 * t < hd)
                base[(size_t)R * stride + lane + 32 * t] = acc[r][t];
    }
}

/* The tiled forward (FlashAttention's scheme, fp32 on the SIMT cores): a
 * block takes FA_BR queries of one head and walks the keys they see in tiles
 * of 32, so each K/V row is read once per tile of queries rather than once
 * per query. Warp w owns query rows 8w..8w+7; for the scores lane j takes key
 * j of the tile, for the output lane l takes dimensions l, l+32, ....
 * Running max and sum per row (online softmax), so no score leaves the chip;
 * the log-sum-exp is written for the backward. K and V tiles share one
 * shared-memory buffer (V is loaded after the scores are done). */
__global__ static void k_flash_fwd(float *out, int out_stride, const float *q, int q_stride, attn_args A, int group,
                                   int hd, float scale)
{
    __shared__ float Qs[FA_BR * FA_HD], KV[32 * FA_HD];   /* Q row after row; K, then V, skewed */
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, g = h / group;
    const seq_desc &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * FA_BR, nq = S.n - q0 < FA_BR ? S.n - q0 : FA_BR;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    load_rows(Qs, FA_BR, q + (size_t)S.row * q_stride + (size_t)h * hd, q_stride, q0, S.n, hd, false);
    float m[FA_ROWS], l[FA_ROWS], o[FA_ROWS][FA_HD / 32], p[FA_ROWS];   /* per row of the warp */
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
#pragma unroll
        for (int t = 0; t < FA_HD / 32; t++)
            o[r][t] = 0;
    }
    const float *kg = S.k + (size_t)g * hd, *vg = S.v + (size_t)g * hd;
    int kend = S.pos + q0 + nq;                    /* keys the tile's last query sees */
    for (int k0 = 0; k0 < kend; k0 += 32) {
        __syncthreads();                           /* the previous V tile is used up */
        load_rows(KV, 32, kg, S.kv_stride, k0, kend, hd, true);
        __syncthreads();
        float sc[FA_ROWS];
        tile_dots(sc, Qs, KV, hd);
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++) {
            int R = w * FA_ROWS + r, key = k0 + lane;
            bool valid = R < nq && key <= S.pos + q0 + R;
            float x = valid ? scale * sc[r] : -INFINITY;
            float mnew = fmaxf(m[r], warp_max_f(x));
            /* a row with no valid key yet keeps m = -inf: no exp of inf - inf */
            float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - mnew);
            p[r] = valid ? expf(x - mnew) : 0.0f;
            l[r] = l[r] * alpha + warp_sum_f(p[r]);
            m[r] = mnew;
#pragma unroll
            for (int t = 0; t < FA_HD / 32; t++)
                o[r][t] *= alpha;
        }
        __syncthreads();                           /* the K tile is used up */
        load_rows(KV, 32, vg, S.kv_stride, k0, kend, hd, true);
        __syncthreads();
        tile_fma(o, p, KV, hd);                    /* o += P V */
    }
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        int R = w * FA_ROWS + r;
        float inv = R < nq ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int t = 0; t < FA_HD / 32; t++)
            o[r][t] *= inv;
        if (R < nq && S.lse && lane == 0)
            S.lse[(size_t)h * S.n + q0 + R] = m[r] + logf(l[r]);
    }
    store_rows(out + (size_t)(S.row + q0) * out_stride + (size_t)h * hd, out_stride, nq, o, hd);
}

/* ---- the tiled backward (FlashAttention-2's, in two kernels so that no
 * output is shared between blocks: no atomics, the same sums every run) ----
 * Both recompute P = exp(scale q.k - lse) from the forward's log-sum-exp and
 * take D = rowsum(dO * O) from the forward's output, so nothing of size
 * n x ctx is stored; their tiles fill the 48 KB a block may have. */

/* D for query row i of head h: dO_i . O_i over the warp's lanes */
__device__ static float row_delta(const float *dout_row, const float *out_row, int hd)
{
    float acc = 0;
    for (int d = threadIdx.x & 31; d < hd; d += 32)
        acc = fmaf(dout_row[d], out_row[d], acc);
    return warp_sum_f(acc);
}

/* dq for FA_BR queries of one head: walk the key tiles they see; per tile
 * S and P (K tile), dP = dO V^T (V tile), dS = P (dP - D) scale, dq += dS K
 * (K tile again). Warp w owns query rows 8w..8w+7; lane j takes key j for
 * S, P, dP, dS and dimensions j, j+32, ... for dq. */
__global__ static void k_flash_bwd_dq(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                                      const float *out, int out_stride, attn_args A, int group, int hd, float scale)
{
    __shared__ float Qs[FA_BR * FA_HD], dOs[FA_BR * FA_HD];   /* row after row */
    __shared__ float KV[32 * FA_HD];                          /* skewed: lane j reads row j */
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, g = h / group;
    const seq_desc &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * FA_BR, nq = S.n - q0 < FA_BR ? S.n - q0 : FA_BR;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    load_rows(Qs, FA_BR, q + (size_t)S.row * q_stride + (size_t)h * hd, q_stride, q0, S.n, hd, false);
    load_rows(dOs, FA_BR, dout + (size_t)S.row * dout_stride + (size_t)h * hd, dout_stride, q0, S.n, hd, false);
    float lse[FA_ROWS], D[FA_ROWS], acc[FA_ROWS][FA_HD / 32];
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        int R = w * FA_ROWS + r;
        size_t row = (size_t)(S.row + q0 + (R < nq ? R : 0));
        float dl = row_delta(dout + row * dout_stride + (size_t)h * hd, out + row * out_stride + (size_t)h * hd, hd);
        D[r] = R < nq ? dl : 0.0f;
        lse[r] = R < nq ? S.lse[(size_t)h * S.n + q0 + R] : 0.0f;
#pragma unroll
        for (int t = 0; t < FA_HD / 32; t++)
            acc[r][t] = 0;
    }
    const float *kg = S.k + (size_t)g * hd, *vg = S.v + (size_t)g * hd;
    int kend = S.pos + q0 + nq;
    for (int k0 = 0; k0 < kend; k0 += 32) {
        float p[FA_ROWS], ds[FA_ROWS], dot[FA_ROWS];
        __syncthreads();                           /* the last K tile is used up */
        load_rows(KV, 32, kg, S.kv_stride, k0, kend, hd, true);
        __syncthreads();
        tile_dots(dot, Qs, KV, hd);                /* P from q.k: lane j's key */
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++) {
            int R = w * FA_ROWS + r;
            bool valid = R < nq && k0 + lane <= S.pos + q0 + R;
            p[r] = valid ? expf(scale * dot[r] - lse[r]) : 0.0f;
        }
        __syncthreads();
        load_rows(KV, 32, vg, S.kv_stride, k0, kend, hd, true);
        __syncthreads();
        tile_dots(dot, dOs, KV, hd);               /* dP from dO.v */
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++)
            ds[r] = p[r] * (dot[r] - D[r]) * scale;
        __syncthreads();
        load_rows(KV, 32, kg, S.kv_stride, k0, kend, hd, true);
        __syncthreads();
        tile_fma(acc, ds, KV, hd);                 /* dq += dS K */
    }
    store_rows(dq + (size_t)(S.row + q0) * q_stride + (size_t)h * hd, q_stride, nq, acc, hd);
}

/* dk, dv for FB_BC keys of one kv head: over the group's heads and the query
 * tiles that see the keys, dv += P^T dO and dk += dS^T Q. Warp w owns keys
 * 4w..4w+3; lane i takes query i of the tile for P and dS, and dimensions
 * i, i+32, ... for the sums. */
__global__ static void k_flash_bwd_dkv(const float *dout, int dout_stride, const float *q, int q_stride,
                                       const float *out, int out_stride, attn_args A, int group, int hd, float scale)
{
    __shared__ float Ks[FB_BC * FA_HD], Vs[FB_BC * FA_HD];   /* row after row (broadcast reads) */
    __shared__ float Qs[32 * FA_HD], dOs[32 * FA_HD];      /* skewed: lane i reads row i */
    int si = find_seq(A, blockIdx.x), g = blockIdx.y;
    const seq_desc &S = A.s[si];
    int ctx = S.pos + S.n, k0 = (blockIdx.x - A.first[si]) * FB_BC, nk = ctx - k0 < FB_BC ? ctx - k0 : FB_BC;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const float *kg = S.k + (size_t)g * hd, *vg = S.v + (size_t)g * hd;
    load_rows(Ks, FB_BC, kg, S.kv_stride, k0, ctx, hd, false);
    load_rows(Vs, FB_BC, vg, S.kv_stride, k0, ctx, hd, false);
    float dk[FB_BC / ATTN_WARPS][FA_HD / 32], dv[FB_BC / ATTN_WARPS][FA_HD / 32];
#pragma unroll
    for (int jj = 0; jj < FB_BC / ATTN_WARPS; jj++)
#pragma unroll
        for (int t = 0; t < FA_HD / 32; t++)
            dk[jj][t] = dv[jj][t] = 0;
    int first = k0 - S.pos > 0 ? k0 - S.pos : 0;   /* the first query that sees key k0 */
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int i0 = first; i0 < S.n; i0 += 32) {
            int ni = S.n - i0 < 32 ? S.n - i0 : 32;
            __syncthreads();                       /* the last tile is used up */
            load_rows(Qs, 32, q + (size_t)S.row * q_stride + (size_t)h * hd, q_stride, i0, S.n, hd, true);
            load_rows(dOs, 32, dout + (size_t)S.row * dout_stride + (size_t)h * hd, dout_stride, i0, S.n, hd, true);
            __syncthreads();
            /* lane i's query: its log-sum-exp and D (a row per lane) */
            bool qin = lane < ni;
            float lse_i = qin ? S.lse[(size_t)h * S.n + i0 + lane] : 0.0f, D = 0;
            if (qin) {
                size_t row = (size_t)(S.row + i0 + lane);
                const float *dr = dout + row * dout_stride + (size_t)h * hd;
                const float *orow = out + row * out_stride + (size_t)h * hd;
                for (int d = 0; d < hd; d++)
                    D = fmaf(dr[d], orow[d], D);
            }
            float p[FB_BC / ATTN_WARPS], ds[FB_BC / ATTN_WARPS];
#pragma unroll
            for (int jj = 0; jj < FB_BC / ATTN_WARPS; jj++) {
                int j = w * (FB_BC / ATTN_WARPS) + jj;
                float sq = 0, sd = 0;
                for (int d = 0; d < hd; d++) {
                    int at = skew(lane, d, hd);
                    sq = fmaf(Qs[at], Ks[j * hd + d], sq);
                    sd = fmaf(dOs[at], Vs[j * hd + d], sd);
                }
                bool valid = qin && j < nk && k0 + j <= S.pos + i0 + lane;
                p[jj] = valid ? expf(scale * sq - lse_i) : 0.0f;
                ds[jj] = p[jj] * (sd - D) * scale;
            }
            for (int i = 0; i < 32; i++) {
                float pi[FB_BC / ATTN_WARPS], dsi[FB_BC / ATTN_WARPS];
#pragma unroll
                for (int jj = 0; jj < FB_BC / ATTN_WARPS; jj++) {
                    pi[jj] = __shfl_sync(0xffffffffu, p[jj], i);
                    dsi[jj] = __shfl_sync(0xffffffffu, ds[jj], i);
                }
#pragma unroll
                for (int t = 0; t < FA_HD / 32; t++) {
                    int d = lane + 32 * t;
                    if (d < hd) {
                        float o = dOs[skew(i, d, hd)], qv = Qs[skew(i, d, hd)];
#pragma unroll
                        for (int jj = 0; jj < FB_BC / ATTN_WARPS; jj++) {
                            dv[jj][t] = fmaf(pi[jj], o, dv[jj][t]);
                            dk[jj][t] = fmaf(dsi[jj], qv, dk[jj][t]);
                        }
                    }
                }
            }
        }
#pragma unroll
    for (int jj = 0; jj < FB_BC / ATTN_WARPS; jj++) {
        int j = w * (FB_BC / ATTN_WARPS) + jj;
        if (j >= nk)
            continue;
        float *dkr = S.dk + (size_t)(k0 + j) * S.kv_stride + (size_t)g * hd;
        float *dvr = S.dv + (size_t)(k0 + j) * S.kv_stride + (size_t)g * hd;
#pragma unroll
        for (int t = 0; t < FA_HD / 32; t++)
            if (lane + 32 * t < hd) {
                dkr[lane + 32 * t] += dk[jj][t];
                dvr[lane + 32 * t] += dv[jj][t];
            }
    }
}

/* ---- attention on tensor cores (bf16 mode, head_dim 64) ----
 * FlashAttention-2's scheme with WMMA bf16 products and fp32 accumulation:
 * a block of 4 warps takes TC_BR = 64 queries of one head, warp w the rows
 * 16w..16w+15; the keys they see come in tiles of TC_BC = 32 through shared
 * memory as bf16. Per tile a warp computes its 16 x 32 scores on the tensor
 * cores, updates the online softmax in shared memory (lane pair 2r, 2r+1
 * owns row r, sixteen columns each), and adds P V to its output rows, which
 * live in shared memory because the softmax rescales them by row. Nothing
 * n x ctx is stored. Q, K, V (and dO) are first copied once as bf16,
 * head-major and zero-padded to whole tiles (k_heads_bf16), so that every
 * fragment loads straight from global memory: the warps run without block
 * barriers. Inputs are rounded to bf16, as the GEMMs of bf16 mode round theirs. */
#define TC_HD 64
#define TC_BR 64
#define TC_BC 32
#define TC_BK 64                      /* backward: keys per block */
#define TC_LDS (TC_BC + 4)            /* fp32 pitch of a warp's score tile */
#define TC_LDP (TC_BC + 8)            /* bf16 pitch of a warp's P tile */
#define TC_LDO (TC_HD + 4)            /* fp32 pitch of a warp's output rows */
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> frag_b;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> frag_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

#define TC_PAD 64                     /* rows of the head-major copies are padded to this */
struct tc_bf16 {                      /* per sequence of the call: the copies, [head][pad][TC_HD] */
    const __nv_bfloat16 *q[ATTN_SEQS], *dout[ATTN_SEQS], *k[ATTN_SEQS], *v[ATTN_SEQS];
};
__host__ __device__ static int padded(int rows) { return (rows + TC_PAD - 1) / TC_PAD * TC_PAD; }

/* dst[h][i][d] = bf16(src[i * stride + h * TC_HD + d]) for i < rows, 0 up to pad */
__global__ static void k_heads_bf16(__nv_bfloat16 *dst, const float *src, int stride, int rows, int pad, int heads)
{
    GRID_STRIDE(t, (size_t)heads * pad * TC_HD) {
        size_t h = t / ((size_t)pad * TC_HD), i = t / TC_HD % pad, d = t % TC_HD;
        dst[t] = __float2bfloat16(i < (size_t)rows ? src[i * stride + h * TC_HD + d] : 0.0f);
    }
}

/* sb (16 x TC_BC fp32, pitch TC_LDS) = A B^T: A the warp's 16 rows as
 * fragments over head_dim, B the TC_BC rows at b (bf16, pitch TC_HD). */
__device__ static void scores_tile(float *sb, const frag_a *a, const __nv_bfloat16 *b)
{
#pragma unroll
    for (int nf = 0; nf < TC_BC / 16; nf++) {
        frag_c c;
        wmma::fill_fragment(c, 0.0f);
#pragma unroll
        for (int kk = 0; kk < TC_HD / 16; kk++) {
            frag_bt bt;
            wmma::load_matrix_sync(bt, b + (size_t)16 * nf * TC_HD + 16 * kk, TC_HD);
            wmma::mma_sync(c, a[kk], bt, c);
        }
        wmma::store_matrix_sync(sb + 16 * nf, c, TC_LDS, wmma::mem_row_major);
    }
}
/* acc (16 x 16, columns 16 nf..) += P B: P the warp's 16 x TC_BC tile
 * (bf16, pitch TC_LDP), B the TC_BC rows at b (bf16, pitch TC_HD). */
__device__ static void accumulate_cols(frag_c &acc, int nf, const __nv_bfloat16 *p, const __nv_bfloat16 *b)
{
#pragma unroll
    for (int kk = 0; kk < TC_BC / 16; kk++) {
        frag_a pa;
        frag_b br;
        wmma::load_matrix_sync(pa, p + 16 * kk, TC_LDP);
        wmma::load_matrix_sync(br, b + (size_t)16 * kk * TC_HD + 16 * nf, TC_HD);
        wmma::mma_sync(acc, pa, br, acc);
    }
}
/* the same for all head_dim columns */
__device__ static void accumulate_tile(frag_c *acc, const __nv_bfloat16 *p, const __nv_bfloat16 *b)
{
#pragma unroll
    for (int nf = 0; nf < TC_HD / 16; nf++)
        accumulate_cols(acc[nf], nf, p, b);
}
/* The warp's 16 x head_dim accumulators to shared memory (pitch TC_LDO),
 * where its lanes can read them by row. */
__device__ static void store_rows_tile(float *os, const frag_c *acc)
{
#pragma unroll
    for (int nf = 0; nf < TC_HD / 16; nf++)
        wmma::store_matrix_sync(os + 16 * nf, acc[nf], TC_LDO, wmma::mem_row_major);
}

__global__ static void k_flash_fwd_tc(float *out, int out_stride, attn_args A, tc_bf16 B, int group, float scale)
{
    __shared__ __align__(32) float ss[4][16 * TC_LDS];
    __shared__ __align__(32) __nv_bfloat16 ps[4][16 * TC_LDP];
    __shared__ __align__(32) float os_all[4][16 * TC_LDO];
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, g = h / group;
    const seq_desc &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * TC_BR, nq = S.n - q0 < TC_BR ? S.n - q0 : TC_BR;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, r = lane >> 1, c0 = (lane & 1) * (TC_BC / 2);
    int npad = padded(S.n), cpad = padded(S.pos + S.n);
    const __nv_bfloat16 *kb = B.k[si] + (size_t)g * cpad * TC_HD, *vb = B.v[si] + (size_t)g * cpad * TC_HD;
    frag_a qa[TC_HD / 16];
#pragma unroll
    for (int kk = 0; kk < TC_HD / 16; kk++)
        wmma::load_matrix_sync(qa[kk], B.q[si] + ((size_t)h * npad + q0 + 16 * w) * TC_HD + 16 * kk, TC_HD);
    float *os = os_all[w];
    for (int t = lane; t < 16 * TC_LDO; t += 32)
        os[t] = 0.0f;
    __syncwarp();
    float m = -INFINITY, l = 0.0f;                 /* row r's running max and sum (both lanes of the pair) */
    int row = q0 + 16 * w + r, qpos = S.pos + row;
    int kend = S.pos + q0 + (16 * w + 16 < nq ? 16 * w + 16 : nq);   /* keys the warp's last row sees */
    for (int k0 = 0; k0 < kend; k0 += TC_BC) {
        scores_tile(ss[w], qa, kb + (size_t)k0 * TC_HD);   /* S = Q K^T: 16 rows, 32 keys */
        __syncwarp();
        /* online softmax of row r over the tile, P as bf16, the output rows rescaled */
        float x[TC_BC / 2], mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < TC_BC / 2; c++) {
            int key = k0 + c0 + c;
            x[c] = key <= qpos && row < S.n ? scale * ss[w][r * TC_LDS + c0 + c] : -INFINITY;
            mx = fmaxf(mx, x[c]);
        }
        float mnew = fmaxf(m, fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1)));
        /* a row with no valid key yet (or past the end) keeps m = -inf: no exp of inf - inf */
        float alpha = mnew == -INFINITY ? 1.0f : m == -INFINITY ? 0.0f : expf(m - mnew), sum = 0.0f;
#pragma unroll
        for (int c = 0; c < TC_BC / 2; c++) {
            float p = x[c] == -INFINITY ? 0.0f : expf(x[c] - mnew);
            sum += p;
            ps[w][r * TC_LDP + c0 + c] = __float2bfloat16(p);
        }
        l = l * alpha + sum + __shfl_xor_sync(0xffffffffu, sum, 1);
        m = mnew;
        for (int d = (lane & 1) * (TC_HD / 2); d < (lane & 1 ? TC_HD : TC_HD / 2); d++)
            os[r * TC_LDO + d] *= alpha;
        __syncwarp();
#pragma unroll
        for (int nf = 0; nf < TC_HD / 16; nf++) {   /* O += P V, a column block at a time */
            frag_c oc;
            wmma::load_matrix_sync(oc, os + 16 * nf, TC_LDO, wmma::mem_row_major);
            accumulate_cols(oc, nf, ps[w], vb + (size_t)k0 * TC_HD);
            wmma::store_matrix_sync(os + 16 * nf, oc, TC_LDO, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (row < S.n) {
        float inv = 1.0f / l, *orow = out + (size_t)(S.row + row) * out_stride + (size_t)h * TC_HD;
        for (int d = (lane & 1) * (TC_HD / 2); d < (lane & 1 ? TC_HD : TC_HD / 2); d++)
            orow[d] = os[r * TC_LDO + d] * inv;
        if (S.lse && !(lane & 1))
            S.lse[(size_t)h * S.n + row] = m + logf(l);
    }
}

/* The backward on tensor cores, in two kernels like the tiled one (no block
 * shares an output: no atomics), from the same bf16 copies. Both take
 * P = exp(scale q.k - lse) from the forward's log-sum-exp and
 * D = rowsum(dO * O) from k_attn_delta. */
/* D[head][row] (laid out like lse, at nh * s->row) = dO . O per query row. */
__global__ static void k_attn_delta(float *D, const float *dout, int dout_stride, const float *out, int out_stride,
                                    attn_args A, int nh, int hd)
{
    int si = find_seq(A, blockIdx.x), h = blockIdx.y;
    const seq_desc &S = A.s[si];
    int i = blockIdx.x - A.first[si];
    size_t r = S.row + i;
    float acc = 0;
    for (int d = threadIdx.x; d < hd; d += 32)
        acc = fmaf(dout[r * dout_stride + (size_t)h * hd + d], out[r * out_stride + (size_t)h * hd + d], acc);
    acc = warp_sum_f(acc);
    if (threadIdx.x == 0)
        D[(size_t)nh * S.row + (size_t)h * S.n + i] = acc;
}

/* dq for TC_BR queries of one head (warp w: rows 16w..16w+15), over the key
 * tiles they see: S = Q K^T, P, dP = dO V^T, dS = P (dP - D) scale, dq += dS K. */
__global__ static void k_flash_bwd_dq_tc(float *dq, int q_stride, const float *D, attn_args A, tc_bf16 B, int group,
                                         float scale)
{
    __shared__ __align__(32) float sb[4][16 * TC_LDS];
    __shared__ __align__(32) __nv_bfloat16 ps[4][16 * TC_LDP];
    __shared__ __align__(32) float os_all[4][16 * TC_LDO];
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, g = h / group, nh = gridDim.y;
    const seq_desc &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * TC_BR, nq = S.n - q0 < TC_BR ? S.n - q0 : TC_BR;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, r = lane >> 1, c0 = (lane & 1) * (TC_BC / 2);
    int npad = padded(S.n), cpad = padded(S.pos + S.n);
    const __nv_bfloat16 *qb = B.q[si] + ((size_t)h * npad + q0 + 16 * w) * TC_HD;
    const __nv_bfloat16 *ob = B.dout[si] + ((size_t)h * npad + q0 + 16 * w) * TC_HD;
    const __nv_bfloat16 *kb = B.k[si] + (size_t)g * cpad * TC_HD, *vb = B.v[si] + (size_t)g * cpad * TC_HD;
    frag_a qa[TC_HD / 16], da[TC_HD / 16];
#pragma unroll
    for (int kk = 0; kk < TC_HD / 16; kk++) {
        wmma::load_matrix_sync(qa[kk], qb + 16 * kk, TC_HD);
        wmma::load_matrix_sync(da[kk], ob + 16 * kk, TC_HD);
    }
    frag_c dqc[TC_HD / 16];
#pragma unroll
    for (int nf = 0; nf < TC_HD / 16; nf++)
        wmma::fill_fragment(dqc[nf], 0.0f);
    int row = q0 + 16 * w + r, qpos = S.pos + row;
    float lse = row < S.n ? S.lse[(size_t)h * S.n + row] : 0.0f;
    float delta = row < S.n ? D[(size_t)nh * S.row + (size_t)h * S.n + row] : 0.0f;
    int kend = S.pos + q0 + (16 * w + 16 < nq ? 16 * w + 16 : nq);   /* keys the warp's last row sees */
    for (int k0 = 0; k0 < kend; k0 += TC_BC) {
        float p[TC_BC / 2];
        scores_tile(sb[w], qa, kb + (size_t)k0 * TC_HD);   /* S = Q K^T */
        __syncwarp();
#pragma unroll
        for (int c = 0; c < TC_BC / 2; c++) {
            int key = k0 + c0 + c;
            p[c] = row < S.n && key <= qpos ? expf(scale * sb[w][r * TC_LDS + c0 + c] - lse) : 0.0f;
        }
        __syncwarp();
        scores_tile(sb[w], da, vb + (size_t)k0 * TC_HD);   /* dP = dO V^T */
        __syncwarp();
#pragma unroll
        for (int c = 0; c < TC_BC / 2; c++)
            ps[w][r * TC_LDP + c0 + c] = __float2bfloat16(p[c] * (sb[w][r * TC_LDS + c0 + c] - delta) * scale);
        __syncwarp();
        accumulate_tile(dqc, ps[w], kb + (size_t)k0 * TC_HD);   /* dq += dS K */
    }
    float *os = os_all[w];
    store_rows_tile(os, dqc);
    __syncwarp();
    if (row < S.n) {
        float *drow = dq + (size_t)(S.row + row) * q_stride + (size_t)h * TC_HD;
        for (int d = (lane & 1) * (TC_HD / 2); d < (lane & 1 ? TC_HD : TC_HD / 2); d++)
            drow[d] = os[r * TC_LDO + d];
    }
}

/* One query head's share of dk and dv for TC_BK keys (warp w: keys
 * 16w..16w+15), over the query tiles (TC_BC rows) that see them:
 * S^T = K Q^T, P^T, dP^T = V dO^T, dS^T = P^T (dP^T - D) scale,
 * dv_h = P^T dO, dk_h = dS^T Q, written to the sequence's partials (S.p:
 * [2][head][ctx][TC_HD]); k_dkv_sum adds a kv head's shares in order. A
 * block per query head rather than per kv head: eight times the blocks
 * for TinyLlama's groups, each an eighth of the work. */
__global__ static void k_flash_bwd_dkv_tc(const float *D, attn_args A, tc_bf16 B, int group, float scale)
{
    __shared__ __align__(32) float sb[4][16 * TC_LDS];
    __shared__ __align__(32) __nv_bfloat16 ps[4][16 * TC_LDP], dss[4][16 * TC_LDP];
    __shared__ __align__(32) float os_all[4][16 * TC_LDO];
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, c = h / group, nh = gridDim.y;
    const seq_desc &S = A.s[si];
    int k0 = (blockIdx.x - A.first[si]) * TC_BK, ctx = S.pos + S.n;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, r = lane >> 1, c0 = (lane & 1) * (TC_BC / 2);
    int key = k0 + 16 * w + r, npad = padded(S.n), cpad = padded(ctx);
    const __nv_bfloat16 *qb = B.q[si] + (size_t)h * npad * TC_HD, *ob = B.dout[si] + (size_t)h * npad * TC_HD;
    frag_a ka[TC_HD / 16], va[TC_HD / 16];
#pragma unroll
    for (int kk = 0; kk < TC_HD / 16; kk++) {
        wmma::load_matrix_sync(ka[kk], B.k[si] + ((size_t)c * cpad + k0 + 16 * w) * TC_HD + 16 * kk, TC_HD);
        wmma::load_matrix_sync(va[kk], B.v[si] + ((size_t)c * cpad + k0 + 16 * w) * TC_HD + 16 * kk, TC_HD);
    }
    frag_c dkc[TC_HD / 16], dvc[TC_HD / 16];
#pragma unroll
    for (int nf = 0; nf < TC_HD / 16; nf++) {
        wmma::fill_fragment(dkc[nf], 0.0f);
        wmma::fill_fragment(dvc[nf], 0.0f);
    }
    const float *lse = S.lse + (size_t)h * S.n, *dd = D + (size_t)nh * S.row + (size_t)h * S.n;
    int first = k0 + 16 * w - S.pos;               /* the warp's first key is seen from query `first` on */
    first = first > 0 ? first / TC_BC * TC_BC : 0;
    for (int i0 = first; i0 < S.n; i0 += TC_BC) {
        float p[TC_BC / 2];
        scores_tile(sb[w], ka, qb + (size_t)i0 * TC_HD);   /* S^T = K Q^T */
        __syncwarp();
#pragma unroll
        for (int j = 0; j < TC_BC / 2; j++) {
            int i = i0 + c0 + j;
            bool valid = i < S.n && key <= S.pos + i && key < ctx;
            p[j] = valid ? expf(scale * sb[w][r * TC_LDS + c0 + j] - lse[i]) : 0.0f;
            ps[w][r * TC_LDP + c0 + j] = __float2bfloat16(p[j]);
        }
        __syncwarp();
        scores_tile(sb[w], va, ob + (size_t)i0 * TC_HD);   /* dP^T = V dO^T */
        __syncwarp();
#pragma unroll
        for (int j = 0; j < TC_BC / 2; j++) {
            int i = i0 + c0 + j;
            float dj = i < S.n ? dd[i] : 0.0f;
            dss[w][r * TC_LDP + c0 + j] = __float2bfloat16(p[j] * (sb[w][r * TC_LDS + c0 + j] - dj) * scale);
        }
        __syncwarp();
        accumulate_tile(dvc, ps[w], ob + (size_t)i0 * TC_HD);    /* dv += P^T dO */
        accumulate_tile(dkc, dss[w], qb + (size_t)i0 * TC_HD);   /* dk += dS^T Q */
    }
    float *os = os_all[w];
    for (int which = 0; which < 2; which++) {
        __syncwarp();
        store_rows_tile(os, which ? dvc : dkc);
        __syncwarp();
        if (key < ctx) {
            float *dst = S.p + (((size_t)which * nh + h) * ctx + key) * TC_HD;
            for (int d = (lane & 1) * (TC_HD / 2); d < (lane & 1 ? TC_HD : TC_HD / 2); d++)
                dst[d] = os[r * TC_LDO + d];
        }
    }
}

/* dk, dv += the group's shares, heads in order; a block per (key, kv head). */
__global__ static void k_dkv_sum(attn_args A, int group, int nh)
{
    int si = find_seq(A, blockIdx.x), c = blockIdx.y, key = blockIdx.x - A.first[si], d = threadIdx.x;
    const seq_desc &S = A.s[si];
    size_t ctx = S.pos + S.n;
    float k = 0.0f, v = 0.0f;
    for (int h = c * group; h < (c + 1) * group; h++) {
        k += S.p[((size_t)h * ctx + key) * TC_HD + d];
        v += S.p[(((size_t)nh + h) * ctx + key) * TC_HD + d];
    }
    S.dk[(size_t)key * S.kv_stride + (size_t)c * TC_HD + d] += k;
    S.dv[(size_t)key * S.kv_stride + (size_t)c * TC_HD + d] += v;
}

/* Fill the launch description for the (at most ATTN_SEQS) sequences from s0
 * on; `per` says what a block takes of a sequence (a query, a key, a tile
 * of either). Returns the number of blocks. */
enum { PER_QUERY, PER_KEY, PER_QUERY_TILE, PER_KEY_TILE, PER_QUERY_TC, PER_KEY_TC };
static int attn_describe(attn_args *A, const struct bk_attn_seq *s, int n_seq, int s0, int per)
{
    int cnt = n_seq - s0 < ATTN_SEQS ? n_seq - s0 : ATTN_SEQS;
    A->n_seq = cnt;
    A->first[0] = 0;
    for (int i = 0; i < cnt; i++) {
        const struct bk_attn_seq *x = &s[s0 + i];
        seq_desc *d = &A->s[i];
        d->k = x->k;
        d->v = x->v;
        d->p = x->p;
        d->lse = x->lse;
        d->dk = x->dk;
        d->dv = x->dv;
        d->dp = x->dp;
        d->row = x->row;
        d->n = x->n;
        d->pos = x->pos;
        d->kv_stride = x->kv_stride;
        int blocks = per == PER_KEY ? x->pos + x->n
                   : per == PER_QUERY ? x->n
                   : per == PER_QUERY_TILE ? (x->n + FA_BR - 1) / FA_BR
                   : per == PER_KEY_TILE ? (x->pos + x->n + FB_BC - 1) / FB_BC
                   : per == PER_QUERY_TC ? (x->n + TC_BR - 1) / TC_BR
                                         : (x->pos + x->n + TC_BK - 1) / TC_BK;
        A->first[i + 1] = A->first[i] + blocks;
    }
    return A->first[cnt];
}

static void check_hd(int hd)
{
    if (hd > MAX_HD || hd <= 0)
        fatal("attention", "head_dim must be 1 to 256 on this backend");
}

/* $RL_CUDA_ATTN: auto (the fastest measured: the tensor-core kernels where
 * they apply, bf16 mode and head_dim 64, in the directions AUTO_TC_FWD and
 * AUTO_TC_BWD say; else cuBLAS where the scores fit; else the tiled fp32
 * kernels), tc (the tensor-core kernels in both directions), tc-fwd (in the
 * forward only), cublas (none), tiled (no cuBLAS either), simple (the
 * per-query kernels). */
enum { ATTN_AUTO, ATTN_TC, ATTN_TC_FWD, ATTN_CUBLAS, ATTN_TILED, ATTN_SIMPLE };
static const char *const attn_modes[] = {"auto", "tc", "tc-fwd", "cublas", "tiled", "simple"};
static int attn_mode;
/* measured on an H100 (TinyLlama-1.1B's shape, 4 x 1024 tokens): a training
 * step took 0.153 s with the tensor-core backward, 0.145 s with cuBLAS's,
 * 0.149 s with cuBLAS in both directions */
#define AUTO_TC_FWD 1
#define AUTO_TC_BWD 0

/* Whether a call whose longest sequence has n queries takes the tiled
 * kernels: decode steps (a few queries per sequence) keep a block per query
 * in the forward; the backward is always tiled. */
static bool use_tiled(int n, int hd, bool backward)
{
    return attn_mode != ATTN_SIMPLE && hd <= FA_HD && (backward || n > 4);
}

/* How one sequence of n queries over ctx keys is attended: on the tensor
 * cores, through cuBLAS (when its scores, n x ctx per head in fp32, take at
 * most ATTN_GEMM_BYTES of scratch), or by the fp32 kernels. */
#define ATTN_GEMM_BYTES ((size_t)1 << 30)
enum attn_route_t { BY_TC, BY_GEMM, BY_KERNELS };
static attn_route_t attn_route(int n, int ctx, int n_heads, int hd, bool backward)
{
    bool tc = attn_mode == ATTN_TC || (attn_mode == ATTN_TC_FWD && !backward) ||
              (attn_mode == ATTN_AUTO && (backward ? AUTO_TC_BWD : AUTO_TC_FWD));
    if (n > 4 && tc && gemm_bf16 && hd == TC_HD)
        return BY_TC;
    if (n > 4 && attn_mode <= ATTN_CUBLAS && (size_t)n_heads * n * ctx * sizeof(float) <= ATTN_GEMM_BYTES)
        return BY_GEMM;
    return BY_KERNELS;
}
/* cuBLAS and the per-query kernels go through the scratch; the tiled and tensor-core kernels keep scores on chip. */
static bool cu_attn_scratch(int n, int ctx, int n_heads, int hd, bool backward)
{
    attn_route_t r = attn_route(n, ctx, n_heads, hd, backward);
    return r == BY_GEMM || (r == BY_KERNELS && !use_tiled(n, hd, backward));
}
/* The route a sequence of a call takes (cuBLAS only where the scratch was given). */
static attn_route_t seq_route(const struct bk_attn_seq *x, int n_heads, int hd, bool backward)
{
    attn_route_t r = attn_route(x->n, x->pos + x->n, n_heads, hd, backward);
    return r == BY_GEMM && !(x->p && (!backward || x->dp)) ? BY_KERNELS : r;
}

/* ---- attention through cuBLAS ----
 * The CPU backend's algorithm: per sequence, the scores S = scale q k^T of
 * every head in the scratch ([head][n][ctx]; the causal upper triangle is
 * computed and discarded: on tensor cores the square costs less than
 * skipping it), a masked softmax row by row, then out = P v. The query heads
 * of one kv head are one strided batch that shares the K (V) operand. In
 * bf16 mode the row kernels write P and dS as bf16 (what the next GEMM reads)
 * into workspaces; otherwise fp32 in place, over S and dP. */

__device__ static void put(float *p, size_t i, float v) { p[i] = v; }
__device__ static void put(unsigned short *p, size_t i, float v) { p[i] = bf16_rne(v); }

/* Per (row, head): P = the causal row's softmax of S, 0 above the diagonal
 * (p may be s itself); lse saved. exp is recomputed rather than stored, so
 * that S is read-only until the last pass. */
template <class T>
__global__ static void k_softmax_causal(const float *s, T *p, float *lse, int n, int ctx, int pos)
{
    int i = blockIdx.x, h = blockIdx.y, len = pos + i + 1;
    size_t o = ((size_t)h * n + i) * ctx;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        mx = fmaxf(mx, s[o + j]);
    mx = block_max_f(mx);
    double sum = 0;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        sum += expf(s[o + j] - mx);
    sum = block_sum_d(sum);
    float inv = (float)(1.0 / sum);
    for (int j = threadIdx.x; j < ctx; j += blockDim.x)
        put(p, o + j, j < len ? expf(s[o + j] - mx) * inv : 0.0f);
    if (lse && threadIdx.x == 0)
        lse[(size_t)h * n + i] = mx + (float)log(sum);
}

/* The backward's row work, per (row, head): P = exp(S - lse) again, then
 * dS = P (dP - rowsum(P dP)) scale; writes P and dS (0 above the diagonal;
 * p may be s and ds may be dp). */
template <class T>
__global__ static void k_attn_p_ds(const float *s, const float *dp, const float *lse, T *p, T *ds, int n, int ctx,
                                   int pos, float scale)
{
    int i = blockIdx.x, h = blockIdx.y, len = pos + i + 1;
    size_t o = ((size_t)h * n + i) * ctx;
    float l = lse[(size_t)h * n + i];
    double acc = 0;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        acc += (double)expf(s[o + j] - l) * dp[o + j];
    float rowdot = (float)block_sum_d(acc);
    for (int j = threadIdx.x; j < ctx; j += blockDim.x) {
        float pj = j < len ? expf(s[o + j] - l) : 0.0f, dsj = j < len ? pj * (dp[o + j] - rowdot) * scale : 0.0f;
        put(p, o + j, pj);
        put(ds, o + j, dsj);
    }
}

/* dst[h][i][d] = src[i * stride + h * hd + d]: heads as stacked matrices, so
 * that one product sums over the query heads of a kv head. */
template <class T>
__global__ static void k_heads_major(T *dst, const float *src, int stride, int n, int nh, int hd)
{
    GRID_STRIDE(t, (size_t)nh * n * hd) {
        size_t h = t / ((size_t)n * hd), r = t % ((size_t)n * hd);
        put(dst, t, src[(r / hd) * stride + h * hd + r % hd]);
    }
}

/* Where P (and dS) go: bf16 workspaces in bf16 mode, else over S (dP). */
static operand attn_rows(int which, float *fp32_place, size_t n)
{
    if (!gemm_bf16)
        return operand{fp32_place, false};
    return operand{workspace(which, n * sizeof(unsigned short)), true};
}
static void launch_softmax(const float *s, operand p, float *lse, int n, int nh, int ctx, int pos)
{
    if (p.bf16)
        LAUNCH(k_softmax_causal<unsigned short>, dim3(n, nh), THREADS)(s, (unsigned short *)p.p, lse, n, ctx, pos);
    else
        LAUNCH(k_softmax_causal<float>, dim3(n, nh), THREADS)(s, (float *)p.p, lse, n, ctx, pos);
    LAUNCHED("attention (softmax)");
}
static void launch_p_ds(const float *s, const float *dp, const float *lse, operand p, operand ds, int n, int nh,
                        int ctx, int pos, float scale)
{
    if (p.bf16)
        LAUNCH(k_attn_p_ds<unsigned short>, dim3(n, nh), THREADS)(s, dp, lse, (unsigned short *)p.p,
                                                                 (unsigned short *)ds.p, n, ctx, pos, scale);
    else
        LAUNCH(k_attn_p_ds<float>, dim3(n, nh), THREADS)(s, dp, lse, (float *)p.p, (float *)ds.p, n, ctx, pos,
                                                         scale);
    LAUNCHED("attention_bwd (P, dS)");
}
/* src's heads stacked ([head][n][hd]), bf16 in bf16 mode */
static operand heads_major(int half, const float *src, int stride, int n, int nh, int hd)
{
    size_t count = (size_t)nh * n * hd;
    char *ws = (char *)workspace(WS_ATTN, 2 * count * (gemm_bf16 ? 2 : 4));
    void *dst = ws + half * count * (gemm_bf16 ? 2 : 4);
    if (gemm_bf16)
        LAUNCH_OVER(count, k_heads_major<unsigned short>, "attention (head-major copy)", (unsigned short *)dst, src,
                    stride, n, nh, hd);
    else
        LAUNCH_OVER(count, k_heads_major<float>, "attention (head-major copy)", (float *)dst, src, stride, n, nh,
                    hd);
    return operand{dst, gemm_bf16};
}
/* element offset into an operand of either width */
static operand at(operand x, size_t off)
{
    return operand{(const char *)x.p + off * (x.bf16 ? 2 : 4), x.bf16};
}

/* out (or dP) rows of every head = scale A_h B_c^T, batched per kv head c,
 * A's head h at column h*hd of its rows (stride a_stride), B = K or V. */
static void attn_products_nt(float *c_out, const float *a, int a_stride, const float *b, const struct bk_attn_seq *x,
                             int nh, int nkv, int hd, float scale)
{
    int g = nh / nkv, n = x->n, ctx = x->pos + n;
    long long pn = (long long)n * ctx;
    for (int c = 0; c < nkv; c++)
        gemm_ex(false, true, n, ctx, hd, scale, f32(a + (size_t)c * g * hd), a_stride, hd, f32(b + (size_t)c * hd),
                x->kv_stride, 0, 0.0f, c_out + c * g * pn, ctx, pn, g);
}
/* c rows of every head (column h*hd, stride c_stride) = P_h B_c, batched per kv head */
static void attn_products_nn(float *c_out, int c_stride, operand p, const float *b, const struct bk_attn_seq *x,
                             int nh, int nkv, int hd)
{
    int g = nh / nkv, n = x->n, ctx = x->pos + n;
    long long pn = (long long)n * ctx;
    for (int c = 0; c < nkv; c++)
        gemm_ex(false, false, n, hd, ctx, 1.0f, at(p, c * g * pn), ctx, pn, f32(b + (size_t)c * hd), x->kv_stride, 0,
                0.0f, c_out + (size_t)c * g * hd, c_stride, hd, g);
}

static void attn_gemm_fwd(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *x,
                          int nh, int nkv, int hd, float scale)
{
    int n = x->n, ctx = x->pos + n;
    attn_products_nt(x->p, q + (size_t)x->row * q_stride, q_stride, x->k, x, nh, nkv, hd, scale);
    operand p = attn_rows(WS_P16, x->p, (size_t)nh * n * ctx);
    launch_softmax(x->p, p, x->lse, n, nh, ctx, x->pos);
    attn_products_nn(out + (size_t)x->row * out_stride, out_stride, p, x->v, x, nh, nkv, hd);
}

/* dP = dO v^T; P and dS = P (dP - rowsum(P dP)) scale; dv += P^T dO;
 * dq = dS k; dk += dS^T q. The sums over a kv head's query heads are one
 * product each, over the stacked rows of the head-major copies. */
static void attn_gemm_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                          const struct bk_attn_seq *x, int nh, int nkv, int hd, float scale)
{
    int g = nh / nkv, n = x->n, ctx = x->pos + n, kvs = x->kv_stride;
    long long pn = (long long)n * ctx, gn = (long long)g * n;
    const float *qr = q + (size_t)x->row * q_stride, *dor = dout + (size_t)x->row * dout_stride;
    attn_products_nt(x->p, qr, q_stride, x->k, x, nh, nkv, hd, scale);
    attn_products_nt(x->dp, dor, dout_stride, x->v, x, nh, nkv, hd, 1.0f);
    operand p = attn_rows(WS_P16, x->p, (size_t)nh * pn), ds = attn_rows(WS_DS16, x->dp, (size_t)nh * pn);
    launch_p_ds(x->p, x->dp, x->lse, p, ds, n, nh, ctx, x->pos, scale);
    operand qh = heads_major(0, qr, q_stride, n, nh, hd), doh = heads_major(1, dor, dout_stride, n, nh, hd);
    gemm_ex(true, false, ctx, hd, (int)gn, 1.0f, p, ctx, g * pn, doh, hd, gn * hd, 1.0f, x->dv, kvs, hd, nkv);
    attn_products_nn(dq + (size_t)x->row * q_stride, q_stride, ds, x->k, x, nh, nkv, hd);
    gemm_ex(true, false, ctx, hd, (int)gn, 1.0f, ds, ctx, g * pn, qh, hd, gn * hd, 1.0f, x->dk, kvs, hd, nkv);
}

/* The sequences of s that take route r (host memory, to free). */
static struct bk_attn_seq *seqs_by_route(const struct bk_attn_seq *s, int n_seq, int n_heads, int hd, bool backward,
                                         attn_route_t r, int *n_out)
{
    struct bk_attn_seq *out = (struct bk_attn_seq *)malloc((size_t)(n_seq ? n_seq : 1) * sizeof *out);
    if (!out)
        fatal("attention", "out of host memory");
    *n_out = 0;
    for (int i = 0; i < n_seq; i++)
        if (seq_route(&s[i], n_heads, hd, backward) == r)
            out[(*n_out)++] = s[i];
    return out;
}

static void attn_kernels(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s,
                         int n_seq, int n_heads, int n_kv, int hd, float scale)
{
    for (int s0 = 0; s0 < n_seq; s0 += ATTN_SEQS) {
        attn_args A = {};
        int most = 0;
        for (int i = s0; i < n_seq && i < s0 + ATTN_SEQS; i++)
            most = s[i].n > most ? s[i].n : most;
        if (use_tiled(most, hd, false)) {
            int tiles = attn_describe(&A, s, n_seq, s0, PER_QUERY_TILE);
            if (tiles)
                LAUNCH(k_flash_fwd, dim3(tiles, n_heads), 32 * ATTN_WARPS)(out, out_stride, q, q_stride, A,
                                                                       n_heads / n_kv, hd, scale);
            LAUNCHED("attention (tiled)");
            continue;
        }
        int rows = attn_describe(&A, s, n_seq, s0, PER_QUERY);
        if (rows)
            LAUNCH(k_attention, dim3(rows, n_heads), 32 * ATTN_WARPS)(out, out_stride, q, q_stride, A,
                                                                  n_heads / n_kv, hd, scale);
        LAUNCHED("attention");
    }
}

/* The bf16 head-major copies of Q (and dO when given), K and V for the
 * sequences t[s0 .. s0 + ATTN_SEQS) (nt in all), in the WS_TCB workspace. */
static void tc_copies(tc_bf16 *B, const struct bk_attn_seq *t, int nt, int s0, const float *q, int q_stride,
                      const float *dout, int dout_stride, int n_heads, int n_kv)
{
    int end = nt < s0 + ATTN_SEQS ? nt : s0 + ATTN_SEQS;
    size_t total = 0;
    for (int i = s0; i < end; i++)
        total += (size_t)((dout ? 2 : 1) * n_heads * padded(t[i].n) + 2 * n_kv * padded(t[i].pos + t[i].n)) * TC_HD;
    __nv_bfloat16 *cp = (__nv_bfloat16 *)workspace(WS_TCB, total * sizeof(__nv_bfloat16));
    for (int i = s0; i < end; i++) {
        const struct bk_attn_seq *x = &t[i];
        int ctx = x->pos + x->n, np = padded(x->n), cpd = padded(ctx);
        struct { const float *src; int stride, rows, pad, heads; const __nv_bfloat16 **dst; } c[4] = {
            {q + (size_t)x->row * q_stride, q_stride, x->n, np, n_heads, &B->q[i - s0]},
            {x->k, x->kv_stride, ctx, cpd, n_kv, &B->k[i - s0]},
            {x->v, x->kv_stride, ctx, cpd, n_kv, &B->v[i - s0]},
            {dout ? dout + (size_t)x->row * dout_stride : NULL, dout_stride, x->n, np, n_heads, &B->dout[i - s0]}};
        for (int j = 0; j < (dout ? 4 : 3); j++) {
            size_t n = (size_t)c[j].heads * c[j].pad * TC_HD;
            LAUNCH_OVER(n, k_heads_bf16, "attention (bf16 copies)", cp, c[j].src, c[j].stride, c[j].rows, c[j].pad,
                        c[j].heads);
            *c[j].dst = cp;
            cp += n;
        }
    }
}

static void attn_tc_fwd(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *t,
                        int nt, int n_heads, int n_kv, float scale)
{
    for (int s0 = 0; s0 < nt; s0 += ATTN_SEQS) {
        tc_bf16 B = {};
        tc_copies(&B, t, nt, s0, q, q_stride, NULL, 0, n_heads, n_kv);
        attn_args A = {};
        int tiles = attn_describe(&A, t, nt, s0, PER_QUERY_TC);
        LAUNCH(k_flash_fwd_tc, dim3(tiles, n_heads), 128)(out, out_stride, A, B, n_heads / n_kv, scale);
        LAUNCHED("attention (tensor cores)");
    }
}

/* The tensor-core backward of the sequences t (their copies: t[i].p is set
 * to each one's dk, dv partials). */
static void attn_tc_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q, const float *out,
                        int out_stride, struct bk_attn_seq *t, int nt, int n_heads, int n_kv, float scale)
{
    if (!nt)
        return;
    int rows = 0;                          /* D is laid out like lse: nh floats per row of the batch */
    size_t part = 0;                       /* dk, dv partials [2][head][ctx][hd] */
    for (int i = 0; i < nt; i++) {
        rows = t[i].row + t[i].n > rows ? t[i].row + t[i].n : rows;
        part += (size_t)2 * n_heads * (t[i].pos + t[i].n) * TC_HD;
    }
    float *D = (float *)workspace(WS_DELTA, (size_t)n_heads * rows * sizeof(float));
    float *parts = (float *)workspace(WS_DKV, part * sizeof(float));
    for (int i = 0; i < nt; i++) {
        t[i].p = parts;                    /* the scratch field, unused on this route */
        parts += (size_t)2 * n_heads * (t[i].pos + t[i].n) * TC_HD;
    }
    for (int s0 = 0; s0 < nt; s0 += ATTN_SEQS) {
        tc_bf16 B = {};
        tc_copies(&B, t, nt, s0, q, q_stride, dout, dout_stride, n_heads, n_kv);
        attn_args A = {};
        int nq = attn_describe(&A, t, nt, s0, PER_QUERY);
        LAUNCH(k_attn_delta, dim3(nq, n_heads), 32)(D, dout, dout_stride, out, out_stride, A, n_heads, TC_HD);
        LAUNCHED("attention_bwd (D, tensor cores)");
        int tiles = attn_describe(&A, t, nt, s0, PER_QUERY_TC);
        LAUNCH(k_flash_bwd_dq_tc, dim3(tiles, n_heads), 128)(dq, q_stride, D, A, B, n_heads / n_kv, scale);
        LAUNCHED("attention_bwd (queries, tensor cores)");
        int ktiles = attn_describe(&A, t, nt, s0, PER_KEY_TC);
        LAUNCH(k_flash_bwd_dkv_tc, dim3(ktiles, n_heads), 128)(D, A, B, n_heads / n_kv, scale);
        LAUNCHED("attention_bwd (keys, tensor cores)");
        int keys = attn_describe(&A, t, nt, s0, PER_KEY);
        LAUNCH(k_dkv_sum, dim3(keys, n_kv), TC_HD)(A, n_heads / n_kv, n_heads);
        LAUNCHED("attention_bwd (dk, dv sums)");
    }
}

static void cu_attention(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s,
                         int n_seq, int n_heads, int n_kv, int hd, float scale)
{
    check_hd(hd);
    for (int i = 0; i < n_seq; i++)
        if (seq_route(&s[i], n_heads, hd, false) == BY_GEMM)
            attn_gemm_fwd(out, out_stride, q, q_stride, &s[i], n_heads, n_kv, hd, scale);
    int nt, nk;
    struct bk_attn_seq *t = seqs_by_route(s, n_seq, n_heads, hd, false, BY_TC, &nt);
    attn_tc_fwd(out, out_stride, q, q_stride, t, nt, n_heads, n_kv, scale);
    free(t);
    struct bk_attn_seq *k = seqs_by_route(s, n_seq, n_heads, hd, false, BY_KERNELS, &nk);
    attn_kernels(out, out_stride, q, q_stride, k, nk, n_heads, n_kv, hd, scale);
    free(k);
}

/* One block per new row: copy its K and V rows into the sequence's cache. */
__global__ static void k_kv_append(attn_args A, const float *k_src, const float *v_src, int src_stride, int kv_dim)
{
    int si = find_seq(A, blockIdx.x);
    const seq_desc &S = A.s[si];
    int i = blockIdx.x - A.first[si];
    size_t src = (size_t)(S.row + i) * src_stride, dst = (size_t)(S.pos + i) * S.kv_stride;
    for (int d = threadIdx.x; d < kv_dim; d += blockDim.x) {
        ((float *)S.k)[dst + d] = k_src[src + d];
        ((float *)S.v)[dst + d] = v_src[src + d];
    }
}
static void cu_kv_append(const struct bk_attn_seq *s, int n_seq, const float *k_src, const float *v_src,
                         int src_stride, int kv_dim)
{
    for (int s0 = 0; s0 < n_seq; s0 += ATTN_SEQS) {
        attn_args A = {};
        int rows = attn_describe(&A, s, n_seq, s0, PER_QUERY);
        if (rows)
            LAUNCH(k_kv_append, rows, 128)(A, k_src, v_src, src_stride, kv_dim);
        LAUNCHED("kv_append");
    }
}

static void attn_bwd_kernels(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                             const float *out, int out_stride, const struct bk_attn_seq *s, int n_seq, int n_heads,
                             int n_kv, int hd, float scale)
{
    for (int s0 = 0; s0 < n_seq; s0 += ATTN_SEQS) {
        attn_args A = {};
        if (use_tiled(0, hd, true)) {
            int tiles = attn_describe(&A, s, n_seq, s0, PER_QUERY_TILE);
            if (tiles)
                LAUNCH(k_flash_bwd_dq, dim3(tiles, n_heads), 32 * ATTN_WARPS)(dq, q_stride, dout, dout_stride, q, out,
                                                                            out_stride, A, n_heads / n_kv, hd, scale);
            LAUNCHED("attention_bwd (tiled, queries)");
            int ktiles = attn_describe(&A, s, n_seq, s0, PER_KEY_TILE);
            if (ktiles)
                LAUNCH(k_flash_bwd_dkv, dim3(ktiles, n_kv), 32 * ATTN_WARPS)(dout, dout_stride, q, q_stride, out,
                                                                           out_stride, A, n_heads / n_kv, hd, scale);
            LAUNCHED("attention_bwd (tiled, keys)");
            continue;
        }
        int rows = attn_describe(&A, s, n_seq, s0, PER_QUERY);
        if (rows)
            LAUNCH(k_attention_bwd_q, dim3(rows, n_heads), 32 * ATTN_WARPS)(dq, q_stride, dout, dout_stride, q, A,
                                                                        n_heads / n_kv, hd, scale);
        LAUNCHED("attention_bwd (queries)");
        int keys = attn_describe(&A, s, n_seq, s0, PER_KEY);
        if (keys)
            LAUNCH(k_attention_bwd_kv, dim3(keys, n_kv), 32 * ATTN_WARPS)(dout, dout_stride, q, q_stride, A,
                                                                      n_heads / n_kv, hd);
        LAUNCHED("attention_bwd (keys)");
    }
}

static void cu_attention_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                             const float *out, int out_stride, const struct bk_attn_seq *s, int n_seq, int n_heads,
                             int n_kv, int hd, float scale)
{
    check_hd(hd);
    for (int i = 0; i < n_seq; i++)
        if (seq_route(&s[i], n_heads, hd, true) == BY_GEMM)
            attn_gemm_bwd(dq, q_stride, dout, dout_stride, q, &s[i], n_heads, n_kv, hd, scale);
    int nt, nk;
    struct bk_attn_seq *t = seqs_by_route(s, n_seq, n_heads, hd, true, BY_TC, &nt);
    attn_tc_bwd(dq, q_stride, dout, dout_stride, q, out, out_stride, t, nt, n_heads, n_kv, scale);
    free(t);
    struct bk_attn_seq *k = seqs_by_route(s, n_seq, n_heads, hd, true, BY_KERNELS, &nk);
    attn_bwd_kernels(dq, q_stride, dout, dout_stride, q, out, out_stride, k, nk, n_heads, n_kv, hd, scale);
    free(k);
}

/* ---------------- elementwise ---------------- */

__global__ static void k_swiglu(float *h, const float *gu, int n, int f)
{
    GRID_STRIDE(t, (size_t)n * f) {
        size_t i = t / f, j = t % f;
        float g = gu[i * 2 * f + j], u = gu[i * 2 * f + f + j];
        h[t] = g / (1.0f + expf(-g)) * u;
    }
}
static void cu_swiglu(float *h, const float *gu, int n, int f)
{
    LAUNCH_OVER((size_t)n * f, k_swiglu, "swiglu", h, gu, n, f);
}

__global__ static void k_swiglu_bwd(float *dgu, const float *dh, const float *gu, int n, int f)
{
    GRID_STRIDE(t, (size_t)n * f) {
        size_t i = t / f, j = t % f, o = i * 2 * f + j;
        float g = gu[o], u = gu[o + f], d = dh[t];
        float sg = 1.0f / (1.0f + expf(-g));
        dgu[o + f] = d * g * sg;
        dgu[o] = d * u * sg * (1.0f + g * (1.0f - sg));
    }
}
static void cu_swiglu_bwd(float *dgu, const float *dh, const float *gu, int n, int f)
{
    LAUNCH_OVER((size_t)n * f, k_swiglu_bwd, "swiglu_bwd", dgu, dh, gu, n, f);
}

__global__ static void k_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) dst[t] = src[(size_t)idx[t / d] * d + t % d];
}
static void cu_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    LAUNCH_OVER((size_t)n * d, k_gather_rows, "gather_rows", dst, src, idx, n, d);
}

__global__ static void k_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) dst[(size_t)idx[t / d] * d + t % d] += src[t];
}
static void cu_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    LAUNCH_OVER((size_t)n * d, k_scatter_add_rows, "scatter_add_rows", dst, src, idx, n, d);
}

__global__ static void k_add(float *y, const float *x, size_t n) { GRID_STRIDE(i, n) y[i] += x[i]; }
static void cu_add(float *y, const float *x, size_t n)
{
    LAUNCH_OVER(n, k_add, "add", y, x, n);
}

__global__ static void k_add_bias(float *y, const float *b, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) y[t] += b[t % d];
}
static void cu_add_bias(float *y, const float *b, int n, int d)
{
    LAUNCH_OVER((size_t)n * d, k_add_bias, "add_bias", y, b, n, d);
}

static void cu_bias_bwd(float *db, const float *dy, int n, int d) { colsum(db, dy, NULL, NULL, n, d); }

/* the embedding is a gather of the table's rows */
static void cu_embed(float *x, const float *table, const int *ids, int n, int d) { cu_gather_rows(x, table, ids, n, d); }

/* A token may repeat: one thread per column adds the rows in order, as the
 * CPU does (no atomics, the same sum every run). */
__global__ static void k_embed_bwd(float *dtable, const float *dx, const int *ids, int n, int d)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d)
        return;
    for (int i = 0; i < n; i++)
        dtable[(size_t)ids[i] * d + j] += dx[(size_t)i * d + j];
}
static void cu_embed_bwd(float *dtable, const float *dx, const int *ids, int n, int d)
{
    if (n <= 0 || d <= 0)
        return;
    LAUNCH(k_embed_bwd, (d + THREADS - 1) / THREADS, THREADS)(dtable, dx, ids, n, d);
    LAUNCHED("embed_bwd");
}

/* ---------------- vocabulary ---------------- */

/* The row's max and sum of exp(x - max) (double), one block per row. */
__device__ static float row_lse(const float *x, int v)
{
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x)
        mx = fmaxf(mx, x[j]);
    mx = block_max_f(mx);
    double s = 0;
    for (int j = threadIdx.x; j < v; j += blockDim.x)
        s += expf(x[j] - mx);
    s = block_sum_d(s);
    return mx + (float)log(s);
}

__global__ static void k_logsoftmax(float *lse, float *logp, const float *logits, const int *targets, int v)
{
    const float *x = logits + (size_t)blockIdx.x * v;
    float l = row_lse(x, v);
    if (threadIdx.x == 0) {
        lse[blockIdx.x] = l;
        if (logp) {
            int t = targets ? targets[blockIdx.x] : -1;
            logp[blockIdx.x] = t >= 0 ? x[t] - l : 0.0f;
        }
    }
}
static void cu_logsoftmax(float *lse, float *logp, const float *logits, const int *targets, int n, int v)
{
    if (n <= 0)
        return;
    LAUNCH(k_logsoftmax, n, THREADS)(lse, logp, logits, targets, v);
    LAUNCHED("logsoftmax");
}

__global__ static void k_logsoftmax_bwd(float *logits, const float *lse, const int *targets, const float *g, int v)
{
    float *x = logits + (size_t)blockIdx.x * v;
    int t = targets[blockIdx.x];
    float gi = g[blockIdx.x], l = lse[blockIdx.x];
    if (t < 0 || gi == 0) {
        for (int j = threadIdx.x; j < v; j += blockDim.x)
            x[j] = 0;
        return;
    }
    for (int j = threadIdx.x; j < v; j += blockDim.x)
        x[j] = -gi * expf(x[j] - l);
    __syncthreads();
    if (threadIdx.x == 0)
        x[t] += gi;
}
static void cu_logsoftmax_bwd(float *logits, const float *lse, const int *targets, const float *g, int n, int v)
{
    if (n <= 0)
        return;
    LAUNCH(k_logsoftmax_bwd, n, THREADS)(logits, lse, targets, g, v);
    LAUNCHED("logsoftmax_bwd");
}

__global__ static void k_softmax(float *x, int v)
{
    float *r = x + (size_t)blockIdx.x * v;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x)
        mx = fmaxf(mx, r[j]);
    mx = block_max_f(mx);
    double s = 0;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        float e = expf(r[j] - mx);
        r[j] = e;
        s += e;
    }
    s = block_sum_d(s);
    float inv = (float)(1.0 / s);
    for (int j = threadIdx.x; j < v; j += blockDim.x)
        r[j] *= inv;
}
static void cu_softmax(float *x, int n, int v)
{
    if (n <= 0)
        return;
    LAUNCH(k_softmax, n, THREADS)(x, v);
    LAUNCHED("softmax");
}

/* ---------------- optimizer ---------------- */

__global__ static void k_sumsq_part(double *part, const float *x, size_t n)
{
    double s = 0;
    GRID_STRIDE(i, n) s += (double)x[i] * x[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0)
        part[blockIdx.x] = s;
}
__global__ static void k_sum_parts(double *out, const double *part, int n)
{
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s += part[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0)
        *out = s;
}
static double cu_sumsq(const float *x, size_t n)
{
    if (!n)
        return 0;
    unsigned b = blocks_for(n);
    b = b > RED_BLOCKS ? RED_BLOCKS : b;
    LAUNCH(k_sumsq_part, b, THREADS)(red_buf, x, n);
    LAUNCHED("sumsq");
    LAUNCH(k_sum_parts, 1, THREADS)(red_buf + RED_BLOCKS, red_buf, (int)b);
    LAUNCHED("sumsq (total)");
    double s;
    CU(cudaMemcpy(&s, red_buf + RED_BLOCKS, sizeof s, cudaMemcpyDeviceToHost));
    return s;
}

__global__ static void k_scale(float *x, float a, size_t n) { GRID_STRIDE(i, n) x[i] *= a; }
static void cu_scale(float *x, float a, size_t n)
{
    LAUNCH_OVER(n, k_scale, "scale", x, a, n);
}

__global__ static void k_adamw(float *w, const float *g, float *m, float *v, size_t n, float decay, float step,
                               float beta1, float beta2, float omb1, float omb2, float eps, float bc2s)
{
    GRID_STRIDE(i, n) {
        float wi = w[i] * decay, gi = g[i];
        float mi = m[i] * beta1 + gi * omb1;
        float vi = v[i] * beta2 + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2s + eps;
        w[i] = wi - step * (mi / denom);
    }
}
static void cu_adamw(float *w, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                     float eps, float wd, double bc1, double bc2_sqrt)
{
    /* the scalars exactly as the CPU forms them (torch's Python floats) */
    float decay = (float)(1.0 - (double)lr * wd), step = (float)(lr / bc1), bc2s = (float)bc2_sqrt;
    float omb1 = (float)(1.0 - (double)beta1), omb2 = (float)(1.0 - (double)beta2);
    LAUNCH_OVER(n, k_adamw, "adamw", w, g, m, v, n, decay, step, beta1, beta2, omb1, omb2, eps, bc2s);
}

/* ---------------- the table ---------------- */

static struct backend make_table(void)
{
    struct backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.host = false;
    /* 256 MB of logits per LM-head chunk: the head's GEMMs ran at half
     * speed on the 524-row chunks of 64 MB (a 32k vocabulary) on an H100 */
    b.head_chunk_mb = 256;
    b.alloc = cu_alloc;
    b.free = cu_free;
    b.upload = cu_upload;
    b.download = cu_download;
    b.zero = cu_zero;
    b.copy = cu_copy;
    b.matmul = cu_matmul;
    b.matmul_rows = cu_matmul_rows;
    b.rmsnorm = cu_rmsnorm;
    b.rmsnorm_bwd = cu_rmsnorm_bwd;
    b.rope = cu_rope;
    b.attention = cu_attention;
    b.attention_bwd = cu_attention_bwd;
    b.kv_append = cu_kv_append;
    b.attn_scratch = cu_attn_scratch;
    b.swiglu = cu_swiglu;
    b.swiglu_bwd = cu_swiglu_bwd;
    b.gather_rows = cu_gather_rows;
    b.scatter_add_rows = cu_scatter_add_rows;
    b.add = cu_add;
    b.add_bias = cu_add_bias;
    b.bias_bwd = cu_bias_bwd;
    b.embed = cu_embed;
    b.embed_bwd = cu_embed_bwd;
    b.logsoftmax = cu_logsoftmax;
    b.logsoftmax_bwd = cu_logsoftmax_bwd;
    b.softmax = cu_softmax;
    b.sumsq = cu_sumsq;
    b.scale = cu_scale;
    b.adamw = cu_adamw;
    return b;
}
static struct backend table;

/* $RL_CUDA_MATH: bf16 (default), tf32 or fp32. */
static int pick_math(void)
{
    const char *e = getenv("RL_CUDA_MATH");
    if (!e || !*e || !strcmp(e, "bf16")) {
        gemm_compute = CUBLAS_COMPUTE_32F_FAST_16BF;
        gemm_bf16 = true;
        return 0;
    }
    if (!strcmp(e, "tf32")) {
        gemm_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        return 0;
    }
    if (!strcmp(e, "fp32")) {
        gemm_exact = true;
        return 0;
    }
    return fail("RL_CUDA_MATH=\"%s\": expected bf16, tf32 or fp32", e);
}

static char detail[256];

/* what the device line says of the attention (the GPU tests read it) */
static const char *attn_desc(void)
{
    if (gemm_bf16 && (attn_mode == ATTN_TC || attn_mode == ATTN_TC_FWD || (attn_mode == ATTN_AUTO && (AUTO_TC_FWD || AUTO_TC_BWD))))
        return "tensor-core+cuBLAS+tiled";
    return attn_mode <= ATTN_CUBLAS ? "cuBLAS+tiled" : attn_mode == ATTN_TILED ? "tiled" : "simple";
}

static int cuda_init(void)
{
    int n = 0, dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
        return fail("no GPU found");
    if (e == cudaErrorInsufficientDriver)
        return fail("no usable GPU (no NVIDIA driver, or one older than CUDA runtime %d)", CUDART_VERSION);
    if (e != cudaSuccess)
        return fail("no usable GPU (%s)", cudaGetErrorString(e));
    if (pick_math() < 0)
        return -1;
    const char *attn = getenv("RL_CUDA_ATTN");
    attn_mode = -1;
    for (int i = 0; i < (int)(sizeof attn_modes / sizeof *attn_modes); i++)
        if (!attn || !*attn ? i == 0 : !strcmp(attn, attn_modes[i]))
            attn_mode = i;
    if (attn_mode < 0)
        return fail("RL_CUDA_ATTN=\"%s\": expected auto, tc, tc-fwd, cublas, tiled or simple", attn);
    cudaDeviceProp prop;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        return fail("cannot query the GPU (%s)", cudaGetErrorString(cudaGetLastError()));
    sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    cublasStatus_t s = cublasCreate(&blas);
    if (s != CUBLAS_STATUS_SUCCESS)
        return fail("cuBLAS did not start (%s)", cublasGetStatusString(s));
    if (cudaMalloc(&red_buf, (RED_BLOCKS + 1) * sizeof(double)) != cudaSuccess)
        return fail("out of GPU memory at start");
    const char *math = gemm_exact ? "fp32" : gemm_compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? "tf32" : "bf16";
    snprintf(detail, sizeof detail, "%s, sm_%d%d, %.0f GiB, %s GEMMs, %s attention", prop.name, prop.major,
             prop.minor, prop.totalGlobalMem / 1073741824.0, math, attn_desc());
    table = make_table();
    table.detail = detail;
    return 0;
}

/* The ceiling the GPU benchmarks report against: TFLOP/s of an m x n x k
 * GEMM through cuBLAS, best of `reps` after a warm-up, timed with events.
 * bf16_io: bf16 inputs and output with fp32 accumulation (the card's bf16
 * rate); else fp32 inputs and output through this backend's matmul (what
 * the model's matmuls get, bf16 copies of the operands included). -1 on error. */
extern "C" __attribute__((visibility("default"))) double rlflow_cuda_gemm_tflops(int m, int n, int k, int bf16_io,
                                                                                 int reps)
{
    size_t es = bf16_io ? 2 : 4;
    void *a = NULL, *b = NULL, *c = NULL;
    size_t na = (size_t)m * k * es / 4, nb = (size_t)n * k * es / 4;
    float *h = (float *)malloc((na > nb ? na : nb) * 4);
    if (reps < 1 || !h || cudaMalloc(&a, (size_t)m * k * es) || cudaMalloc(&b, (size_t)n * k * es) ||
        cudaMalloc(&c, (size_t)m * n * 4)) {
        cudaFree(a), cudaFree(b), cudaFree(c);
        free(h);
        cudaGetLastError();
        return -1;
    }
    /* random-ish bits, not zeros: power draw and so clocks depend on the data */
    for (size_t i = 0; i < (na > nb ? na : nb); i++)
        h[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    if (bf16_io)                     /* reinterpret: two bf16 per float, all finite */
        for (size_t i = 0; i < (na > nb ? na : nb); i++)
            ((unsigned *)h)[i] = 0x3c003c00u ^ (unsigned)((i * 40503u) & 0x007f007fu);
    bool ok = cudaMemcpy(a, h, na * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemcpy(b, h, nb * 4, cudaMemcpyHostToDevice) == cudaSuccess;
    free(h);
    float alpha = 1, beta = 0;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = 1e30f;
    for (int r = -1; r < reps; r++) {
        cudaEventRecord(e0, 0);
        /* row-major a[m,k] b[n,k]^T, as cu_matmul maps it; status checked here */
        cublasStatus_t st;
        if (bf16_io)
            st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_16BF, k, a, CUDA_R_16BF, k,
                              &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        else {                       /* exits on a cuBLAS error */
            cu_matmul(false, true, m, n, k, alpha, (const float *)a, k, (const float *)b, k, beta, (float *)c, n);
            st = CUBLAS_STATUS_SUCCESS;
        }
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (st != CUBLAS_STATUS_SUCCESS || !ok)
            best = -1;
        else if (r >= 0 && ms < best && best > 0)
            best = ms;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b), cudaFree(c);
    cudaGetLastError();
    return best > 0 && best < 1e29f ? 2.0 * m * n * k / (best * 1e-3) / 1e12 : -1;
}

/* The entry point lib/backend.c looks up: the backend, or NULL with the
 * reason in *reason. Initialises once. table_size is the caller's
 * sizeof(struct backend): a library built from another version of
 * backend.h is refused rather than called through a shifted table. */
extern "C" __attribute__((visibility("default"))) const struct backend *rlflow_cuda_backend(const char **reason,
                                                                                           size_t table_size)
{
    static int state;                /* 0 untried, 1 ready, -1 failed */
    if (state == 0 && table_size != sizeof(struct backend))
        state = fail("rlflow-cuda.so was built from another version of rlflow (rebuild it)");
    if (state == 0)
        state = cuda_init() == 0 ? 1 : -1;
    *reason = why;
    return state > 0 ? &table : NULL;
}
