/* The CUDA backend's GEMMs: cuBLAS (with bf16 copies of the operands in
 * bf16 mode), and matmul_rows, the batch-invariant kernel of decode steps. */
#include "cuda_common.cuh"
#include "cuda_mma.cuh"

cublasHandle_t blas;
cublasComputeType_t gemm_compute;
bool gemm_exact, gemm_bf16;
int sm_count = 1;
unsigned long op_epoch;

/* $RL_CUDA_ROWS: the products of batch-invariant decoding (matmul_rows) on
 * the tensor cores where they apply (tc), the same through
 * k_matmul_rows_stream, written for the weights' bandwidth (stream, below),
 * or in fp32 (fp32). auto, the default, was tc from an H100's figures
 * (eighth session; TinyLlama's shape, 128 cached tokens: 5804 tokens/s at
 * batch 64 against the fp32 kernel's 3730, 177 against 213 at batch 1), and
 * is stream since an H200 timed both (nineteenth session): a decode step
 * 451 tokens/s against tc's 244 at batch 1 and 11415 against 6790 at batch
 * 64; rl-gen end to end 451 against 249 and 7580 against 4756. The choice
 * cannot follow the batch: a row's bits must not depend on it. */
enum { ROWS_TC = 1, ROWS_FP32, ROWS_STREAM };
#define AUTO_ROWS ROWS_STREAM
static bool rows_tc, rows_stream;
int cuda_rows_mode(const char *name)
{
    static const char *const modes[] = {"auto", "tc", "fp32", "stream"};
    int i = mode_index(name, modes), route = i == 0 ? AUTO_ROWS : i;
    rows_tc = route == ROWS_TC || route == ROWS_STREAM;
    rows_stream = route == ROWS_STREAM;
    return i < 0 ? -1 : 0;
}
bool cuda_rows_tc(void) { return rows_tc && gemm_bf16; }
bool cuda_rows_stream(void) { return rows_stream && cuda_rows_tc(); }

/* *p grown to at least `bytes` (never shrunk; what it held goes when it
 * grows): whether it grew */
static bool grow(void **p, size_t *cap, size_t bytes, const char *what)
{
    if (bytes <= *cap)
        return false;
    capture_pause();
    if (*p)
        CU(cudaFree(*p));
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        char msg[160];
        snprintf(msg, sizeof msg, "no GPU memory for %.0f MB of %s (%s)", bytes / 1e6, what, cudaGetErrorString(e));
        fatal("workspace", msg);
    }
    *cap = bytes;
    return true;
}

/* The workspaces of cuda_common.cuh: grown on demand, never shrunk. */
void *workspace(int which, size_t bytes)
{
    static void *ws[WS_COUNT];
    static size_t cap[WS_COUNT];
    grow(&ws[which], &cap[which], bytes, "workspace");
    return ws[which];
}

unsigned *zeroed_counters(int which, size_t n)
{
    static void *p[CNT_COUNT];
    static size_t cap[CNT_COUNT];
    if (grow(&p[which], &cap[which], n * sizeof(unsigned), "the tiles' counters"))
        CU(cudaMemset(p[which], 0, n * sizeof(unsigned)));
    return (unsigned *)p[which];
}

/* k_pack (cuda_common.cuh) to bf16 for an operand already contiguous (ld = cols, items back to
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
        pack(p, x, rows, rows, cols, ld, stride, (int)items, "bf16 copy of a GEMM operand");
    *packed_stride = stride ? (long long)rows * cols : 0;
    return p;
}

/* The last A operand the matmul op rounded to bf16 (in WS_GEMM_A), or that
 * a producer op wrote beside its output (a_copy_for): reused by the next
 * matmuls whose A is that matrix or a block of its rows (a batch-invariant
 * model's per-sequence products), while op_epoch has not moved and no
 * product has written over it (cuda_common.cuh, STAMPED).
 * Only the op's own products take part: inside another op (attention),
 * kernels rewrite buffers between products without moving the epoch, and
 * the stamps around that op retire any copy made before it (its products
 * reuse WS_GEMM_A). */
static bool in_matmul_op;
static struct {
    const float *src;
    int rows, cols, ld;
    unsigned long epoch;
    const void *copy;
} last_a;
static const void *packed_a(const float *x, int rows, int cols, int ld)
{
    if (last_a.copy && last_a.epoch == op_epoch && last_a.cols == cols && last_a.ld == ld && x >= last_a.src) {
        size_t off = (size_t)(x - last_a.src), r0 = off / ld;
        if (off % ld == 0 && r0 + rows <= (size_t)last_a.rows)
            return (const unsigned short *)last_a.copy + r0 * cols;
    }
    long long unused;
    const void *p = packed_bf16(WS_GEMM_A, x, rows, cols, ld, 0, 1, &unused);
    last_a = {x, rows, cols, ld, op_epoch, p};
    return p;
}
/* Products of fewer rows than this take no copy of a producer's output:
 * m n / (m + n) < 512 is thin (gemm_ex) for any n, and thin products of an
 * unmarked weight copy nothing. */
#define A_COPY_MIN_ROWS 512
unsigned short *a_copy_for(const float *y, int rows, int cols)
{
    if (!gemm_bf16 || gemm_exact || rows <= 0 || cols <= 0 || is_act(y))   /* bf16 already */
        return NULL;
    size_t n = (size_t)rows * cols;
    /* a marked range (a model's saved activations): its own copy, made
     * fresh first, written at any row count, so that it stays fresh for the
     * backward's products */
    if (unsigned short *kept = (unsigned short *)param_bf16(y, n))
        return kept;
    params_written(y, n * sizeof *y);   /* partly marked: those copies go stale */
    if (rows < A_COPY_MIN_ROWS)
        return NULL;
    unsigned short *p = (unsigned short *)workspace(WS_GEMM_A, n * sizeof *p);
    last_a = {y, rows, cols, cols, op_epoch + 1, p};   /* + 1: the STAMPED op's bump on its return */
    return p;
}

/* A product writes c (rows x cols, row pitch ld, in elements of the
 * activations' 2 bytes when c is one): forget the A copy of what it
 * overwrites, and mark the copies of marked ranges it touches stale. */
static void wrote(const float *c, int rows, int cols, int ld)
{
    size_t bytes = ((size_t)(rows - 1) * ld + cols) * (is_act(c) ? 2 : sizeof *c);
    const char *lo = (const char *)c, *a_lo = (const char *)last_a.src;
    if (last_a.copy && lo < a_lo + (size_t)last_a.rows * last_a.ld * sizeof *c && a_lo < lo + bytes)
        last_a.copy = NULL;
    params_written(c, bytes);
}

/* The bf16 copy of an operand (rows x cols, row pitch ld) that lies in a
 * marked range of parameters, else the operand as it is. */
static operand param_operand(operand x, int rows, int cols, int ld)
{
    const unsigned short *p = x.bf16 ? NULL : param_bf16((const float *)x.p, (size_t)(rows - 1) * ld + cols);
    return p ? operand{p, true} : x;
}

/* `batch` row-major products c = alpha op(a) op(b) + beta c at once, the
 * i-th on a + i*sa, b + i*sb and c + i*sc (a stride may be 0: every product
 * shares that operand). Row-major C = op(A) op(B) is column-major C^T =
 * op(B)^T op(A)^T: cuBLAS gets B first, and a row-major matrix read
 * column-major is its transpose. In bf16 mode fp32 operands are rounded to
 * bf16 by k_pack first: cuBLAS's own fp32-in path (FAST_16BF) ran at
 * half the rate of a bf16-in GEMM on an H100, and the copies cost less,
 * except where the product is thin: the copies move 6 (m + n) k bytes for
 * 2 m n k FLOPs, and at m n / (m + n) under 512 (a decode step's 64 rows, a
 * prompt's few hundred) they cost more than FAST_16BF loses; such single
 * products keep the fp32 operands (on an H100 a decode step of 64 sequences
 * ran 1.2x slower with the copies). Batched products (attention) always
 * take the copies: that is the path measured on the GPU. An operand that
 * lies in marked parameters comes from their bf16 copy instead (rounded
 * the same way); then even a thin product takes the bf16 path, where the
 * copy halves the bytes of the weights it reads. With $RL_CUDA_GEMM=lt or
 * pinned, single products go to cuBLASLt (cuda_gemm_lt.cu); pinned takes
 * the copies whatever the shape, so that no row's route follows the row
 * count. */
void gemm_ex(bool ta, bool tb, int m, int n, int k, float alpha, operand a, int lda, long long sa, operand b,
                    int ldb, long long sb, float beta, float *c, int ldc, long long sc, int batch, bool c_bf16)
{
    if (m <= 0 || n <= 0 || batch <= 0)
        return;
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    if ((a.bf16 || b.bf16 || c_bf16) && !gemm_bf16)
        fatal("matmul", "a bf16 operand outside bf16 mode");
    bool lt = batch == 1 && k > 0 && gemm_route != GEMM_EX;   /* cuda_gemm_lt.cu */
    if (gemm_exact) {
        if (lt)
            lt_gemm(ta, tb, m, n, k, alpha, a.p, lda, b.p, ldb, beta, c, ldc, CUDA_R_32F, CUDA_R_32F,
                    CUBLAS_COMPUTE_32F);
        else
            BLAS(cublasSgemmStridedBatched(blas, opb, opa, n, m, k, &alpha, (const float *)b.p, ldb, sb,
                                           (const float *)a.p, lda, sa, &beta, c, ldc, sc, batch));
        return;
    }
    cudaDataType type = CUDA_R_32F;
    cublasComputeType_t compute = gemm_compute;
    if (gemm_bf16 && batch == 1 && k > 0) {   /* parameters: their bf16 copies (cuda_params.cu) */
        a = param_operand(a, ta ? k : m, ta ? m : k, lda);
        b = param_operand(b, tb ? n : k, tb ? k : n, ldb);
    }
    /* pinned: every product the same kind, whatever its rows */
    bool thin = batch == 1 && gemm_route != GEMM_PINNED && (double)m * n / (m + n) < 512;
    if (gemm_bf16 && (a.bf16 || b.bf16 || c_bf16 || !thin)) {
        if (!a.bf16 && k > 0) {
            int rows = ta ? k : m, cols = ta ? m : k;
            if (in_matmul_op)            /* a single product, sa = 0 */
                a.p = packed_a((const float *)a.p, rows, cols, lda);
            else                         /* inside another op, whose epoch stamps retire last_a */
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
    cudaDataType ctype = c_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    if (lt)
        lt_gemm(ta, tb, m, n, k, alpha, a.p, lda, b.p, ldb, beta, c, ldc, type, ctype, compute);
    else if (batch == 1)
        BLAS(cublasGemmEx(blas, opb, opa, n, m, k, &alpha, b.p, type, ldb, a.p, type, lda, &beta, c, ctype, ldc,
                          compute, CUBLAS_GEMM_DEFAULT));
    else
        BLAS(cublasGemmStridedBatchedEx(blas, opb, opa, n, m, k, &alpha, b.p, type, ldb, sb, a.p, type, lda, sa,
                                        &beta, c, ctype, ldc, sc, batch, compute, CUBLAS_GEMM_DEFAULT));
}

static void cu_matmul(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m > 0 && n > 0)
        wrote(c, m, n, ldc);             /* before the product: a copy is of what it reads */
    ktimes_op_begin();
    in_matmul_op = true;
    /* bf16 activations (cuda_acts.cu) go in and come out as they are */
    gemm_ex(ta, tb, m, n, k, alpha, operand{a, is_act(a)}, lda, 0, operand{b, is_act(b)}, ldb, 0, beta, c, ldc, 0, 1,
            is_act(c));
    in_matmul_op = false;
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

/* (a row of bf16 activations: four elements in one 8-byte load) */
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
__device__ static void load4(float *v, const unsigned short *row, int kb, int k, bool vec)
{
    if (vec && kb + 3 < k) {
        uint2 t = *(const uint2 *)(row + kb);
        v[0] = __uint_as_float(t.x << 16), v[1] = __uint_as_float(t.x & 0xffff0000u);
        v[2] = __uint_as_float(t.y << 16), v[3] = __uint_as_float(t.y & 0xffff0000u);
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++)
            v[e] = kb + e < k ? get(row, kb + e) : 0.0f;
    }
}

/* TA, TC: how a and c are stored (float, or unsigned short for bf16
 * activations); b is fp32 */
template <int COLS, class TA, class TC>
__global__ static void k_matmul_rows(TC *c, const TA *a, const float *b, int m, int n, int k, bool vec)
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
                    put(c, (size_t)(r0 + r) * n + j0 + q, sum);
            }
}
/* matmul_rows on the tensor cores, in bf16 mode where b is a marked
 * parameter (its bf16 copy, cuda_params.cu), k a multiple of 16 and n of 8:
 * a block of MRT_SPLIT warps takes 16 columns (two 8-column tiles) and up
 * to 64 rows (four 16-row tiles); warp w sums the w-th quarter of the
 * 16-wide steps of k, in order, with mma.sync, and the block adds the
 * quarters in order. Each element's arithmetic is fixed by k alone (the
 * tensor cores compute an element from its own row and column): a row's
 * bits do not depend on m or on the other rows. The rows of a are first
 * rounded to bf16 (zero rows up to a whole tile), as bf16 mode rounds every
 * product's operands. The shape (16 columns, four quarters of k) is a first
 * choice, not yet tuned on a GPU: each block reads all of a from L2, so
 * wider blocks would read less of it but give fewer warps to keep the
 * weights' bytes in flight. */
#define MRT_SPLIT 4
#define MRT_ROWS 64
template <class TA> __global__ static void k_rows_bf16(unsigned short *dst, const TA *src, size_t valid, size_t n)
{
    GRID_STRIDE(i, n) dst[i] = i < valid ? bf16_rne(get(src, i)) : 0;
}
template <class TC>
__global__ static void __launch_bounds__(32 * MRT_SPLIT)
    k_matmul_rows_tc(TC *c, const unsigned short *a16, const unsigned short *b16, int m, int n, int k)
{
    __shared__ float part[MRT_SPLIT][MRT_ROWS][16];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int r0 = blockIdx.y * MRT_ROWS, j0 = blockIdx.x * 16, mp = (m + 15) / 16 * 16;
    int tiles = (mp - r0) / 16 < 4 ? (mp - r0) / 16 : 4, cols = n - j0 < 16 ? (n - j0) / 8 : 2;
    int steps = k / 16, s0 = w * steps / MRT_SPLIT, s1 = (w + 1) * steps / MRT_SPLIT;
    float acc[4][2][4] = {};
#pragma unroll 2
    for (int s = s0; s < s1; s++) {   /* unrolled: more loads of b in flight */
        unsigned b[2][2];
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
            if (nt < cols)
                load_bt(b[nt], b16 + (size_t)(j0 + 8 * nt) * k + 16 * s, k, lane);
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
            if (mt < tiles) {
                unsigned a[4];
                load_a(a, a16 + (size_t)(r0 + 16 * mt) * k + 16 * s, k, lane);
#pragma unroll
                for (int nt = 0; nt < 2; nt++)
                    if (nt < cols)
                        mma_bf16(acc[mt][nt], a, b[nt]);
            }
    }
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                part[w][16 * mt + g + 8 * (i >> 1)][8 * nt + 2 * t + (i & 1)] = acc[mt][nt][i];
    __syncthreads();
    for (int e = threadIdx.x; e < MRT_ROWS * 16; e += blockDim.x) {
        int r = e / 16, j = e % 16;
        float v = part[0][r][j];
        for (int q = 1; q < MRT_SPLIT; q++)
            v += part[q][r][j];
        if (r0 + r < m && j0 + j < n)
            put(c, (size_t)(r0 + r) * n + j0 + j, v);
    }
}
/* matmul_rows on the tensor cores with the weights streamed
 * (RL_CUDA_ROWS=stream): a decode step reads every weight once, so the
 * kernel is there to keep the memory busy. k_matmul_rows_tc above has few
 * warps (n/16 blocks of 4: 160 blocks for a 2560-column product on 132 SMs)
 * and each loads 8 bytes a lane at a time, about a third of the card's
 * bandwidth at batch 1 (177 tokens/s against a floor of 712 on the H100).
 *   - A lane loads 16 bytes of a row of b at once: 8 consecutive k, for
 *     two products. The products take them in another order of k than
 *     load_bt would give them (a fixed permutation within each 32 k); a
 *     takes the same one, so each product pairs a's k with b's.
 *   - k is cut into `segs` segments, each a block's (segs from n and k
 *     alone: about MRS_BLOCKS blocks), and a segment into MRS_WK parts,
 *     one a warp, which loads MRS_UNROLL parts of 32 k of b before using
 *     them. The warps of a block add their sums in order; the segments'
 *     sums go to a workspace, and the tile's last block to finish (a
 *     counter per tile) adds them in order: no second launch, which is
 *     what a decode step at batch 1 mostly pays for.
 *   - Each element's arithmetic is thus fixed by n and k: a row's bits
 *     do not depend on m (as in k_matmul_rows_tc, provided the tensor cores
 *     compute an element from its own row and column only).
 *   - What m changes is only who computes what: MT row tiles a warp (rows
 *     past m load no a: zeros), and WC warps' groups of 16 columns a block,
 *     which share each part of a through the L1 (a's bytes beside b's are
 *     m/16 to 1 per group).
 *   - a's rows are read as they are (bf16 activations) or rounded to bf16
 *     as they are loaded (fp32), the rounding of k_rows_bf16: no copy of
 *     them and no launch for it.
 * Needs k a multiple of 32, n of 8, and b's bf16 copy 16-byte aligned; a
 * not 16-byte aligned is read from k_rows_bf16's copy, so that neither the
 * kernel nor the bits depend on where a lies. */
#define MRS_WK 4
#define MRS_UNROLL 4
#ifdef RL_CUDA_EMU                   /* the op test's products: several segments, and warps of 5 or 6 parts */
#define MRS_BLOCKS 40
#else
#define MRS_BLOCKS 512
#endif
/* $RL_CUDA_ROWS_BLOCKS: the blocks' target instead of MRS_BLOCKS, for
 * tests/gpu/run to try others without a build (a process keeps one, so its
 * rows stay batch-invariant; another target sums k in other segments) */
static int rows_blocks = MRS_BLOCKS;
int cuda_rows_blocks(const char *value)
{
    if (!value || !*value)
        return 0;
    char *end;
    long v = strtol(value, &end, 10);
    if (*end || v < 1 || v > 65535)
        return -1;
    rows_blocks = (int)v;
    return 0;
}
struct rows_split {
    int segs, per;                       /* segments, and 32-k parts in each (the last may have fewer) */
};
static rows_split rows_stream_split(int n, int k)
{
    int parts = k / 32, col_blocks = (n + 15) / 16;
    int segs = (rows_blocks + col_blocks - 1) / col_blocks, most = parts / MRS_WK > 0 ? parts / MRS_WK : 1;
    if (segs > most)
        segs = most;
    int per = (parts + segs - 1) / segs;
    return {(parts + per - 1) / per, per};   /* no empty segment */
}
__device__ static inline uint4 ld16(const unsigned short *p) { return *(const uint4 *)p; }
/* 8 consecutive elements of a row of a as bf16 pairs: bf16 activations as
 * they are, fp32 rounded here (the rounding of k_rows_bf16) */
__device__ static inline uint4 ld8_bf16(const unsigned short *p) { return ld16(p); }
__device__ static inline uint4 ld8_bf16(const float *p)
{
    float4 x = *(const float4 *)p, y = *(const float4 *)(p + 4);
    return {pack_bf16(x.x, x.y), pack_bf16(x.z, x.w), pack_bf16(y.x, y.y), pack_bf16(y.z, y.w)};
}

/* The end of a block of k_matmul_rows_stream with several segments, whose
 * sums it has written to part ([segs][m][n]): the last block of the tile
 * (rows r0.., columns j0..) to get here adds the segments' sums in order
 * into c. */
template <class TC>
__device__ static void rows_stream_last(TC *c, const float *part, unsigned *count, int m, int n, int r0, int rows,
                                        int j0, int cols)
{
    if (!last_block(count, gridDim.y))
        return;
    for (int e = threadIdx.x; e < rows * cols; e += blockDim.x) {
        int r = r0 + e / cols, j = j0 + e % cols;
        if (r >= m || j >= n)
            continue;
        float v = __ldcg(part + (size_t)r * n + j);
        for (unsigned s = 1; s < gridDim.y; s++)
            v += __ldcg(part + ((size_t)s * m + r) * n + j);
        put(c, (size_t)r * n + j, v);
    }
}
/* With SWIGLU (matmul_rows_swiglu), c is swiglu of the product instead:
 * h [m, n/2] from its gate and up columns j and n/2 + j, each rounded to
 * c's kind first as the product's output would be (and h's bf16 copy c16
 * where a_copy_for wants one): the bits of matmul_rows then swiglu. A
 * block's two column groups are then 16 gate columns and the same 16 up
 * columns, which it pairs in shared memory, or its tile's last block in
 * part. Which block sums which element changes; how it sums does not. */
__device__ static inline float rounded_as(const float *, float v) { return v; }
__device__ static inline float rounded_as(const unsigned short *, float v)
{
    return __uint_as_float((unsigned)bf16_rne(v) << 16);
}
template <class TC> __device__ static inline void put_swiglu(TC *h, unsigned short *h16, size_t i, float g, float u)
{
    float v = swiglu1(rounded_as(h, g), rounded_as(h, u));
    put(h, i, v);
    if (h16)
        h16[i] = bf16_rne(v);
}
/* rows_stream_last for SWIGLU: the gate and up columns j0.. j0 + 16 of the
 * tile's rows into h */
template <class TC>
__device__ static void rows_swiglu_last(TC *h, unsigned short *h16, const float *part, unsigned *count, int m, int n,
                                        int r0, int rows, int j0)
{
    if (!last_block(count, gridDim.y))
        return;
    int f = n / 2;
    for (int e = threadIdx.x; e < rows * 16; e += blockDim.x) {
        int r = r0 + e / 16, j = j0 + e % 16;
        if (r >= m)
            continue;
        float g = __ldcg(part + (size_t)r * n + j), u = __ldcg(part + (size_t)r * n + f + j);
        for (unsigned s = 1; s < gridDim.y; s++) {   /* in rows_stream_last's order */
            g += __ldcg(part + ((size_t)s * m + r) * n + j);
            u += __ldcg(part + ((size_t)s * m + r) * n + f + j);
        }
        put_swiglu(h, h16, (size_t)r * f + j, g, u);
    }
}
/* c, or with several segments part ([segs][m][n]) and then c, for rows r0..
 * of a; count: a zeroed counter per tile of the grid (x, z) */
template <int MT, int WC, bool SWIGLU, class TA, class TC>
__global__ static void __launch_bounds__(32 * MRS_WK * WC)
    k_matmul_rows_stream(TC *c, unsigned short *c16, float *part, unsigned *count, const TA *a,
                         const unsigned short *__restrict__ b16, int m, int n, int k, int per)
{
    __shared__ float red[WC][MRS_WK - 1][16 * MT][17];    /* 17: the stores spread over the banks */
    __shared__ float gu[SWIGLU ? 2 : 1][SWIGLU ? 16 * MT : 1][17];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, kw = w % MRS_WK, wc = w / MRS_WK, g = lane >> 2, t = lane & 3;
    int j0 = SWIGLU ? wc * (n / 2) + blockIdx.x * 16 : (blockIdx.x * WC + wc) * 16, r0 = blockIdx.z * 16 * MT;
    int cols = n - j0 >= 16 ? 2 : n - j0 > 0 ? (n - j0) / 8 : 0;
    int parts = k / 32, s0 = blockIdx.y * per, s1 = s0 + per < parts ? s0 + per : parts;
    int p0 = s0 + kw * (s1 - s0) / MRS_WK, p1 = s0 + (kw + 1) * (s1 - s0) / MRS_WK;
    const unsigned short *bp[2];
    const TA *ap[MT][2];
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
        bp[nt] = b16 + (size_t)(j0 + 8 * nt + g) * k + 8 * t;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {    /* rows g and g + 8 of the tile; none past m */
            int r = r0 + 16 * mt + g + 8 * h;
            ap[mt][h] = r < m ? a + (size_t)r * k + 8 * t : NULL;
        }
    float acc[MT][2][4] = {};
    for (int q0 = p0; q0 < p1; q0 += MRS_UNROLL) {
        uint4 bw[MRS_UNROLL][2];
#pragma unroll
        for (int u = 0; u < MRS_UNROLL; u++)     /* all of them in flight before the products */
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
                if (q0 + u < p1 && nt < cols)
                    bw[u][nt] = ld16(bp[nt] + (size_t)(q0 + u) * 32);
#pragma unroll
        for (int u = 0; u < MRS_UNROLL; u++) {
            if (q0 + u >= p1)
                break;
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                uint4 lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
                if (ap[mt][0])
                    lo = ld8_bf16(ap[mt][0] + (size_t)(q0 + u) * 32);
                if (ap[mt][1])
                    hi = ld8_bf16(ap[mt][1] + (size_t)(q0 + u) * 32);
                unsigned a1[4] = {lo.x, hi.x, lo.y, hi.y}, a2[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
                for (int nt = 0; nt < 2; nt++)
                    if (nt < cols) {
                        unsigned b1[2] = {bw[u][nt].x, bw[u][nt].y}, b2[2] = {bw[u][nt].z, bw[u][nt].w};
                        mma_bf16(acc[mt][nt], a1, b1);
                        mma_bf16(acc[mt][nt], a2, b2);
                    }
            }
        }
    }
    if (kw > 0)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    red[wc][kw - 1][16 * mt + g + 8 * (i >> 1)][8 * nt + 2 * t + (i & 1)] = acc[mt][nt][i];
    __syncthreads();
    int segs = gridDim.y;
    if (kw == 0)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int rr = 16 * mt + g + 8 * (i >> 1), jj = 8 * nt + 2 * t + (i & 1), r = r0 + rr, j = j0 + jj;
                    float v = acc[mt][nt][i];
#pragma unroll
                    for (int q = 0; q < MRS_WK - 1; q++)
                        v += red[wc][q][rr][jj];
                    if (r < m && nt < cols) {
                        if (segs > 1)
                            part[((size_t)blockIdx.y * m + r) * n + j] = v;
                        else if (SWIGLU)
                            gu[wc][rr][jj] = v;
                        else
                            put(c, (size_t)r * n + j, v);
                    }
                }
    if (SWIGLU && segs == 1) {
        __syncthreads();
        for (int e = threadIdx.x; e < 16 * MT * 16; e += blockDim.x) {
            int rr = e / 16, jj = e % 16;
            if (r0 + rr < m)
                put_swiglu(c, c16, (size_t)(r0 + rr) * (n / 2) + blockIdx.x * 16 + jj, gu[0][rr][jj], gu[1][rr][jj]);
        }
    } else if (SWIGLU)
        rows_swiglu_last(c, c16, part, count + blockIdx.z * gridDim.x + blockIdx.x, m, n, r0, 16 * MT,
                         blockIdx.x * 16);
    else if (segs > 1)
        rows_stream_last(c, part, count + blockIdx.z * gridDim.x + blockIdx.x, m, n, r0, 16 * MT,
                         blockIdx.x * WC * 16, WC * 16);
}
/* c16: SWIGLU's h16 */
template <int MT, int WC, bool SWIGLU, class TA, class TC>
static void rows_stream_launch(TC *c, unsigned short *c16, float *part, const TA *a, const unsigned short *b16, int m,
                               int n, int k, rows_split sp)
{
    int col_blocks = SWIGLU ? n / 32 : (n + 16 * WC - 1) / (16 * WC);   /* SWIGLU: 16 gate and 16 up columns a block */
    dim3 grid(col_blocks, sp.segs, (m + 16 * MT - 1) / (16 * MT));
    unsigned *count = sp.segs > 1 ? zeroed_counters(CNT_ROWS, (size_t)grid.x * grid.z) : NULL;
    LAUNCH((k_matmul_rows_stream<MT, WC, SWIGLU, TA, TC>), grid, 32 * MRS_WK * WC)(c, c16, part, count, a, b16, m, n,
                                                                                 k, sp.per);
    LAUNCHED(SWIGLU ? "matmul_rows + swiglu (tensor cores, streamed)" : "matmul_rows (tensor cores, streamed)");
}
/* a: fp32, or bf16 activations; 16-byte aligned. SWIGLU: c is h [m, n/2]
 * (n a multiple of 32), two column groups a block at every m */
template <bool SWIGLU = false, class TA, class TC>
static void matmul_rows_stream(TC *c, const TA *a, const unsigned short *b16, int m, int n, int k,
                               unsigned short *c16 = NULL)
{
    rows_split sp = rows_stream_split(n, k);
    float *part = sp.segs > 1 ? (float *)workspace(WS_ROWS, (size_t)sp.segs * m * n * sizeof(float)) : NULL;
    if (m <= 16)
        rows_stream_launch<1, SWIGLU ? 2 : 1, SWIGLU>(c, c16, part, a, b16, m, n, k, sp);
    else if (m <= 32)
        rows_stream_launch<2, 2, SWIGLU>(c, c16, part, a, b16, m, n, k, sp);
    else
        rows_stream_launch<4, 2, SWIGLU>(c, c16, part, a, b16, m, n, k, sp);
}
/* Whether a product with b's bf16 copy b16 and this k streams (with a
 * 16-byte aligned a): matmul_rows_tc's choice, which matmul_rows_swiglu
 * must make alike to give its bits */
static bool rows_streamed(const unsigned short *b16, int k)
{
    return cuda_rows_stream() && k >= 32 && k % 32 == 0 && (size_t)b16 % 16 == 0;
}
/* The tensor-core route when it applies (see above; and $RL_CUDA_ROWS
 * allows it); false to take the fp32 kernel. Which route a call takes
 * depends on the modes, b, n and k, never on m. */
template <class TA, class TC> static bool matmul_rows_tc(TC *c, const TA *a, const float *b, int m, int n, int k)
{
    if (!cuda_rows_tc() || k % 16 || n % 8)
        return false;
    const unsigned short *b16 = param_bf16(b, (size_t)n * k);
    if (!b16 || (size_t)b16 % 4)
        return false;
    bool stream = rows_streamed(b16, k);
    if (stream && (size_t)a % 16 == 0) {
        matmul_rows_stream(c, a, b16, m, n, k);   /* rounds a's rows itself: no copy, no launch */
        return true;
    }
    size_t na = (size_t)(m + 15) / 16 * 16 * k;
    unsigned short *a16 = (unsigned short *)workspace(WS_GEMM_A, na * sizeof *a16);
    LAUNCH_OVER(na, k_rows_bf16<TA>, "matmul_rows (bf16 rows)", a16, a, (size_t)m * k, na);
    if (stream) {                        /* a unaligned: the same kernel from the copy, so the same bits */
        matmul_rows_stream(c, (const unsigned short *)a16, b16, m, n, k);
        return true;
    }
    LAUNCH(k_matmul_rows_tc<TC>, dim3((n + 15) / 16, (m + MRT_ROWS - 1) / MRT_ROWS), 32 * MRT_SPLIT)(c, a16, b16, m, n,
                                                                                                   k);
    LAUNCHED("matmul_rows (tensor cores)");
    return true;
}

template <class TA, class TC> static void matmul_rows_as(TC *c, const TA *a, const float *b, int m, int n, int k)
{
    if (matmul_rows_tc(c, a, b, m, n, k))
        return;
    bool vec = rows_by4(a, k) && rows_by4(b, k);
    unsigned row_blocks = (m + MR_ROWS - 1) / MR_ROWS, warps = THREADS / 32;
    /* four columns per warp reuse each row of a four times; one column per
     * warp makes four times the blocks, for the GPU to have enough of them */
    unsigned blocks4 = row_blocks * ((n + 4 * warps - 1) / (4 * warps));
    if (blocks4 >= 2u * sm_count && m > MR_ROWS)
        LAUNCH((k_matmul_rows<4, TA, TC>), dim3(row_blocks, (n + 4 * warps - 1) / (4 * warps)), THREADS)(c, a, b, m, n,
                                                                                                       k, vec);
    else
        LAUNCH((k_matmul_rows<1, TA, TC>), dim3(row_blocks, (n + warps - 1) / warps), THREADS)(c, a, b, m, n, k, vec);
    LAUNCHED("matmul_rows");
}

static void cu_matmul_rows(float *c, const float *a, const float *b, int m, int n, int k)
{
    if (m <= 0 || n <= 0)
        return;
    wrote(c, m, n, n);
    as_stored(a, [&](auto *ta) {
        using TA = stored_t<decltype(ta)>;
        as_stored(c, [&](auto *tc) {
            using TC = stored_t<decltype(tc)>;
            matmul_rows_as((TC *)c, (const TA *)a, b, m, n, k);
        });
    });
}

/* matmul_rows then swiglu: one launch where the streamed kernel takes the
 * product (its epilogue pairs the gate and up columns), else the two ops.
 * Either way the bits of the two ops. gu is left unwritten by the first. */
static void cu_matmul_rows_swiglu(float *h, float *gu, const float *a, const float *b, int m, int f, int k)
{
    same_kind("matmul_rows_swiglu", h, gu);
    if (m <= 0 || f <= 0)
        return;
    const unsigned short *b16 = cuda_rows_stream() && f % 16 == 0 && (size_t)a % 16 == 0
                                    ? param_bf16(b, (size_t)2 * f * k) : NULL;
    if (!b16 || !rows_streamed(b16, k)) {
        cu_matmul_rows(gu, a, b, m, 2 * f, k);
        cu_swiglu(h, gu, m, f);
        return;
    }
    unsigned short *h16 = a_copy_for(h, m, f);   /* as swiglu writes it */
    as_stored(a, [&](auto *ta) {
        using TA = stored_t<decltype(ta)>;
        as_stored(h, [&](auto *th) {
            using TH = stored_t<decltype(th)>;
            matmul_rows_stream<true>((TH *)h, (const TA *)a, b16, m, 2 * f, k, h16);
        });
    });
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
        cudaEventRecord(e0, cu_stream);
        /* row-major a[m,k] b[n,k]^T, as cu_matmul maps it; status checked here */
        cublasStatus_t st;
        if (bf16_io)
            st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_16BF, k, a, CUDA_R_16BF, k,
                              &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        else {                       /* exits on a cuBLAS error */
            op_epoch++;              /* each rep copies its operands, as a forward's product does */
            cu_matmul(false, true, m, n, k, alpha, (const float *)a, k, (const float *)b, k, beta, (float *)c, n);
            st = CUBLAS_STATUS_SUCCESS;
        }
        cudaEventRecord(e1, cu_stream);
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

void cuda_gemm_ops(struct backend *b)
{
    b->matmul = cu_matmul;
    b->matmul_rows = STAMPED(cu_matmul_rows);
    b->matmul_rows_swiglu = STAMPED(cu_matmul_rows_swiglu);
}
