/* The CUDA backend's attention on tensor cores (bf16 mode, head_dim 64 or
 * 128): FlashAttention-2's scheme with mma.sync (m16n8k16: bf16 products,
 * fp32 accumulation). Unlike WMMA's, this instruction's fragment layout is
 * specified by PTX (cuda_mma.cuh), so scores, probabilities and outputs stay
 * in registers: a score tile's accumulators are, lane for lane, the A
 * operand of the next product once rounded to bf16, and the online softmax
 * works on them where they are (the four lanes of a group share a row).
 *
 * A block of 4 warps takes TC_BR = 64 rows (queries, or in the dk/dv kernel
 * keys) of one head, warp w the rows 16w..16w+15, whose fragments it keeps
 * in registers. The other side comes in tiles of BK rows (64 at head_dim
 * 64, 32 at 128, for registers and shared memory) through shared memory,
 * two buffers deep: cp.async brings the next tile while the warps work on
 * this one. Tiles are stored as they are; ldmatrix loads the fragments,
 * transposing them for the products that contract over a tile's rows
 * (P V, dS K, P^T dO, dS^T Q). Q, K, V (and dO) are first
 * copied once as bf16, head-major and zero-padded to whole blocks (k_pack),
 * so tiles load without bounds checks. Nothing n x ctx is stored. Inputs
 * are rounded to bf16, as the GEMMs of bf16 mode round theirs. */
#include "cuda_attention.cuh"
#include "cuda_mma.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

#define TC_PAD TC_BR_WIDE             /* rows of the head-major copies are padded to this: the widest block's */
struct tc_bf16 {                      /* per sequence of the call: the copies, [head][pad][hd] bf16 bits */
    const unsigned short *q[ATTN_SEQS], *dout[ATTN_SEQS], *k[ATTN_SEQS], *v[ATTN_SEQS];
};
__host__ __device__ static int padded(int rows) { return (rows + TC_PAD - 1) / TC_PAD * TC_PAD; }

/* A shared tile: R rows of C bf16, pitched C + 8 so that the 8 rows x 4
 * lanes of a fragment load fall in 32 distinct banks. */
template <int R, int C> struct tile {
    unsigned short at[R][C + 8];
};

/* The A operand for columns 16kk..16kk+15 of a warp's 16-row fp32 tile
 * held as accumulators x[][4] (the register reuse of FlashAttention-2). */
__device__ static inline void tile_as_a(unsigned a[4], const float (*x)[4], int kk)
{
    a[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
    a[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
    a[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}
/* ---- shared tiles: R rows of a head-major copy (pitch C) at src, through
 * the registers (tc) ---- */
__device__ static inline void copy16(unsigned short *dst, const unsigned short *src)
{
#ifdef RL_CUDA_EMU
    /* g++ -O2 may reorder a uint4 copy of ushort data (strict aliasing);
     * memcpy is safe, and the alignment a GPU's 16-byte access needs is
     * checked by hand */
    if (((uintptr_t)dst | (uintptr_t)src) & 15) {
        fprintf(stderr, "copy16: a 16-byte copy between %p and %p, misaligned on a GPU\n", (void *)dst, (const void *)src);
        abort();
    }
    memcpy(dst, src, 16);
#else
    *(uint4 *)dst = *(const uint4 *)src;
#endif
}
/* as they are: s[r][c] = src[r][c] */
template <int R, int C> __device__ static void stage_rows(tile<R, C> &s, const unsigned short *src)
{
    for (int i = threadIdx.x; i < R * C / 8; i += blockDim.x) {
        int r = i / (C / 8), c = 8 * (i % (C / 8));
        copy16(&s.at[r][c], src + (size_t)r * C + c);
    }
}
/* transposed: s[c][r] = src[r][c] (consecutive threads take consecutive
 * rows, so that their 2-byte stores fall in distinct banks) */
template <int R, int C> __device__ static void stage_cols(tile<C, R> &s, const unsigned short *src)
{
    for (int i = threadIdx.x; i < R * C / 8; i += blockDim.x) {
        int r = i % R, c = 8 * (i / R);
        __align__(16) unsigned short v[8];
        copy16(v, src + (size_t)r * C + c);
#pragma unroll
        for (int e = 0; e < 8; e++)
            s.at[c + e][r] = v[e];
    }
}

/* as they are, by cp.async (tc-pipe): the caller commits the group and
 * waits for it */
template <int R, int C> __device__ static void stage_async(tile<R, C> &s, const unsigned short *src)
{
    for (int i = threadIdx.x; i < R * C / 8; i += blockDim.x) {
        int r = i / (C / 8), c = 8 * (i % (C / 8));
        cp_async16(&s.at[r][c], src + (size_t)r * C + c);
    }
}

/* One operand's BK-row tiles in shared memory (K, V, Q or dO), read as
 * USE says: SCORED (the B operand of scores, a product over HD) and/or
 * SUMMED (of accumulate, a product over the tile's rows). PIPE
 * (RL_CUDA_ATTN=tc-pipe): two buffers, cp.async filling one a tile ahead
 * while the warps read the other, fragments by ldmatrix (transposed when
 * summed). Else (tc): one buffer filled through the registers, as it is
 * when scored and transposed when summed, fragments by 4-byte loads. */
enum { SCORED = 1, SUMMED = 2 };
template <int HD, int BK, bool PIPE, int USE> struct tiles {
    tile<BK, HD> rows[2];
};
template <int HD, int BK> struct tiles<HD, BK, false, SCORED> {
    tile<BK, HD> rows[1];
};
template <int HD, int BK> struct tiles<HD, BK, false, SUMMED> {
    tile<HD, BK> cols;
};
template <int HD, int BK> struct tiles<HD, BK, false, SCORED | SUMMED> {
    tile<BK, HD> rows[1];
    tile<HD, BK> cols;
};
/* buffer b gets the tile at src: in the background with PIPE */
template <int HD, int BK, bool PIPE, int USE>
__device__ static inline void fill(tiles<HD, BK, PIPE, USE> &s, int b, const unsigned short *src)
{
    if constexpr (PIPE)
        stage_async(s.rows[b], src);
    else {
        if constexpr (USE & SCORED)
            stage_rows(s.rows[0], src);
        if constexpr (USE & SUMMED)
            stage_cols<BK, HD>(s.cols, src);
    }
}

/* x[M][NT][4] = the warp's M blocks of 16 rows (fragments a, over HD) times
 * the rows n0..n0 + 8 NT of buffer b transposed: M tiles of 16 x 8 NT
 * scores. Each B fragment loaded serves the M blocks. */
template <int M, int NT, int KH, int HD, int BK, bool PIPE, int USE>
__device__ static inline void scores(float (&x)[M][NT][4], const unsigned (&a)[M][KH][4],
                                     const tiles<HD, BK, PIPE, USE> &s, int b, int n0, int lane)
{
    static_assert(USE & SCORED, "a scored operand");
    static_assert(KH * 16 == HD && NT % 2 == 0 && 8 * NT <= BK, "fragments of the tile");
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            x[m][nt][0] = x[m][nt][1] = x[m][nt][2] = x[m][nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KH; kk++)
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {
            unsigned f[4];
            if constexpr (PIPE)
                load_bt2(f, &s.rows[b].at[n0 + 8 * nt][16 * kk], HD + 8, lane);
            else {
                load_bt(f, &s.rows[0].at[n0 + 8 * nt][16 * kk], HD + 8, lane);
                load_bt(f + 2, &s.rows[0].at[n0 + 8 * nt + 8][16 * kk], HD + 8, lane);
            }
#pragma unroll
            for (int m = 0; m < M; m++) {
                mma_bf16(x[m][nt], a[m][kk], f);
                mma_bf16(x[m][nt + 1], a[m][kk], f + 2);
            }
        }
}
/* acc[M][DT][4] (M x 16 rows of HD) += x (M x 16 x 8 NT, accumulators,
 * rounded to bf16) times the rows n0..n0 + 8 NT of buffer b (HD wide).
 * Over the tile's rows in order, so that a tile taken in parts sums as it
 * would whole. */
template <int M, int NT, int DT, int HD, int BK, bool PIPE, int USE>
__device__ static inline void accumulate(float (&acc)[M][DT][4], const float (&x)[M][NT][4],
                                         const tiles<HD, BK, PIPE, USE> &s, int b, int n0, int lane)
{
    static_assert(USE & SUMMED, "a summed operand");
    static_assert(DT * 8 == HD && NT % 2 == 0 && 8 * NT <= BK, "fragments of the tile");
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        unsigned a[M][4];
#pragma unroll
        for (int m = 0; m < M; m++)
            tile_as_a(a[m], x[m], kk);
#pragma unroll
        for (int dt = 0; dt < DT; dt += 2) {
            unsigned f[4];
            if constexpr (PIPE)
                load_b2(f, &s.rows[b].at[n0 + 16 * kk][8 * dt], HD + 8, lane);
            else {
                load_bt(f, &s.cols.at[8 * dt][n0 + 16 * kk], BK + 8, lane);
                load_bt(f + 2, &s.cols.at[8 * dt + 8][n0 + 16 * kk], BK + 8, lane);
            }
#pragma unroll
            for (int m = 0; m < M; m++) {
                mma_bf16(acc[m][dt], a[m], f);
                mma_bf16(acc[m][dt + 1], a[m], f + 2);
            }
        }
    }
}
/* A kernel's loop over tiles at positions first, first + BK, .. < end,
 * fill(pos, b) putting the tiles from pos into buffer b. With PIPE the
 * first ones go on their way before the loop (tiles_begin), and each step
 * sends the next ones into the other buffer while the warps work on its
 * own; without, each step fills buffer 0 itself. tile_step, at the top of
 * the step at pos (every thread): its tiles ready for all warps in buffer
 * b. */
template <bool PIPE, int BK, class Fill> __device__ static inline void tiles_begin(Fill fill, int first, int end)
{
    if constexpr (PIPE) {
        if (first < end)
            fill(first, 0);
        cp_async_commit();
    }
}
template <bool PIPE, int BK, class Fill> __device__ static inline void tile_step(Fill fill, int pos, int end, int b)
{
    __syncthreads();                     /* the previous tiles are read: their buffers refill */
    if constexpr (PIPE) {
        if (pos + BK < end)
            fill(pos + BK, b ^ 1);
        cp_async_commit();
        cp_async_wait<1>();              /* this thread's copies of this step's tiles have landed */
    } else
        fill(pos, 0);
    __syncthreads();                     /* and every thread's */
}

/* A warp's 16 rows of a head-major copy as A fragments over HD */
template <int HD> __device__ static inline void rows_as_a(unsigned (*a)[4], const unsigned short *rows, int lane)
{
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
        load_a(a[kk], rows + 16 * kk, HD, lane);
}
/* the max and the sum over the four lanes of a group (the lanes of one row) */
__device__ static inline float group_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ static inline float group_sum(float v)
{
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
/* The warp's 16 x HD accumulators (rows row0, row0 + 8) times `mul` into
 * rows of dst (pitch ld elements, from column col0), rows below `rows`
 * only; T: fp32, or unsigned short for bf16 activations (cuda_acts.cu) */
template <int HD, class T>
__device__ static inline void store_rows(T *dst, size_t ld, size_t col0, const float (*acc)[4], int row0, int rows,
                                         float mul0, float mul1, int lane)
{
    int t = lane & 3;
    /* a lane's two columns 2t, 2t + 1 as one store where every row's pair is aligned */
    bool pairs = (((uintptr_t)(dst + col0) | (ld * sizeof(T))) & (2 * sizeof(T) - 1)) == 0;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = row0 + 8 * r;
        if (row >= rows)
            continue;
        T *d = dst + (size_t)row * ld + col0;
        float mul = r ? mul1 : mul0;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) {
            float a = acc[dt][2 * r] * mul, b = acc[dt][2 * r + 1] * mul;
            if (pairs)
                put2(d, 8 * dt + 2 * t, a, b);
            else {
                put(d, 8 * dt + 2 * t, a);
                put(d, 8 * dt + 2 * t + 1, b);
            }
        }
    }
}

/* The forward for TC_BR M queries of head h: per key tile, S = Q K^T
 * (scaled to base 2), the online softmax on the accumulators, O += P V.
 * Warp w takes the rows 16 M w .. 16 M (w + 1) - 1, in M blocks of 16 whose
 * products share each fragment of the tile (M = 2, RL_CUDA_ATTN=tc-wide:
 * half the shared-memory reads per product). A lane's rows are row0 + 16 m
 * and row0 + 16 m + 8 (r = 0, 1); its score x[m][nt][i] is at row r = i /
 * 2, key k0 + 8 nt + 2t + i % 2. The tile of key 0 comes first, and every
 * row (the padding's included) sees key 0, so a row's max is finite from
 * then on: no exp of inf - inf. */
template <int HD, int BK, bool PIPE, int M, class TO>
__global__ static void __launch_bounds__(128) k_flash_fwd_tc(TO *out, int out_stride, attn_args A, tc_bf16 B, int group,
                                                             float scale)
{
    constexpr int BR = TC_BR * M, NT = BK / 8;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED> ks;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SUMMED> vs;
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, kvh = h / group;
    const bk_attn_seq &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * BR, lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = lane & 3;
    int npad = padded(S.n), cpad = padded(S.pos + S.n), wrow = q0 + 16 * M * w, row0 = wrow + (lane >> 2);
    const unsigned short *kb = B.k[si] + (size_t)kvh * cpad * HD, *vb = B.v[si] + (size_t)kvh * cpad * HD;
    unsigned qa[M][HD / 16][4];
#pragma unroll
    for (int m = 0; m < M; m++)
        rows_as_a<HD>(qa[m], B.q[si] + ((size_t)h * npad + wrow + 16 * m) * HD, lane);
    float o[M][HD / 8][4] = {}, mrow[M][2], l[M][2] = {}, sl2 = scale * LOG2E;
#pragma unroll
    for (int m = 0; m < M; m++)
        mrow[m][0] = mrow[m][1] = -INFINITY;
    int last = S.pos + (q0 + BR < S.n ? q0 + BR : S.n) - 1;   /* the block's last key */
    int wfirst = S.pos + wrow, wlast = wfirst + 16 * M - 1;      /* its warp's first and last row's */
    auto kv = [&](int k, int b) { fill(ks, b, kb + (size_t)k * HD), fill(vs, b, vb + (size_t)k * HD); };
    tiles_begin<PIPE, BK>(kv, 0, last + 1);
    for (int k0 = 0, b = 0; k0 <= last; k0 += BK, b ^= PIPE) {
        tile_step<PIPE, BK>(kv, k0, last + 1, b);
        if (k0 > wlast || wrow >= S.n)
            continue;                    /* the warp's rows see none of these keys, or are all padding */
        float x[M][NT][4], mx[M][2], sum[M][2] = {};
        scores(x, qa, ks, b, 0, lane);
        bool diag = k0 + BK - 1 > wfirst;   /* some key after some row: mask */
#pragma unroll
        for (int m = 0; m < M; m++) {
            mx[m][0] = mrow[m][0], mx[m][1] = mrow[m][1];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int key = k0 + 8 * nt + 2 * t + (i & 1), r = i >> 1;
                    x[m][nt][i] = diag && key > S.pos + row0 + 16 * m + 8 * r ? -INFINITY : x[m][nt][i] * sl2;
                    mx[m][r] = fmaxf(mx[m][r], x[m][nt][i]);
                }
        }
#pragma unroll
        for (int m = 0; m < M; m++) {
            float alpha[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[m][r] = group_max(mx[m][r]);
                alpha[r] = exp2f(mrow[m][r] - mx[m][r]);   /* 0 on the first tile (m = -inf) */
                mrow[m][r] = mx[m][r];
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    x[m][nt][i] = exp2f(x[m][nt][i] - mrow[m][i >> 1]);
                    sum[m][i >> 1] += x[m][nt][i];
                }
#pragma unroll
            for (int dt = 0; dt < HD / 8; dt++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    o[m][dt][i] *= alpha[i >> 1];
            l[m][0] = l[m][0] * alpha[0] + sum[m][0];  /* this lane's part of the row sum */
            l[m][1] = l[m][1] * alpha[1] + sum[m][1];
        }
        accumulate(o, x, vs, b, 0, lane);   /* O += P V */
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        float l0 = group_sum(l[m][0]), l1 = group_sum(l[m][1]);
        int rm = row0 + 16 * m;
        store_rows<HD>(out + (size_t)S.row * out_stride, out_stride, (size_t)h * HD, o[m], rm, S.n, 1.0f / l0,
                       1.0f / l1, lane);
        if (S.lse && t == 0)
            for (int r = 0; r < 2; r++)
                if (rm + 8 * r < S.n)
                    S.lse[(size_t)h * S.n + rm + 8 * r] = (mrow[m][r] + log2f(r ? l1 : l0)) * LN2;
    }
}

/* The backward on tensor cores, in two kernels like the tiled one (no block
 * shares an output: no atomics), from the same bf16 copies. Both take
 * P = exp(scale q.k - lse) from the forward's log-sum-exp and
 * D = rowsum(dO * O) from k_attn_delta. */
/* D[head][row] (laid out like lse, at nh * s->row) = dO . O per query row:
 * a warp per (row, head), DELTA_HEADS heads a block (a block per pair made
 * 131072 blocks of one warp for 4 x 1024 rows of 32 heads). */
#define DELTA_HEADS 8
template <class T>
__global__ static void k_attn_delta(float *D, const T *dout, int dout_stride, const T *out, int out_stride,
                                    attn_args A, int nh, int hd)
{
    int si = find_seq(A, blockIdx.x), h = blockIdx.y * DELTA_HEADS + threadIdx.y;
    if (h >= nh)
        return;
    const bk_attn_seq &S = A.s[si];
    int i = blockIdx.x - A.first[si];
    size_t r = S.row + i;
    float acc = 0;
    for (int d = threadIdx.x; d < hd; d += 32)
        acc = fmaf(get(dout, r * dout_stride + (size_t)h * hd + d), get(out, r * out_stride + (size_t)h * hd + d), acc);
    acc = warp_sum_f(acc);
    if (threadIdx.x == 0)
        D[(size_t)nh * S.row + (size_t)h * S.n + i] = acc;
}

/* dq for TC_BR M queries of head h (warp w: M blocks of 16 rows, as in the
 * forward), over the key tiles they see, each tile in P parts of BK / P
 * keys (fewer registers for the scores; P = 1 or 2): S = Q K^T, P =
 * exp2(S scale log2e - lse log2e), dP = dO V^T, dS = P (dP - D), dq =
 * scale dS K. A part's products sum in the order of the whole tile's. */
template <int HD, int BK, bool PIPE, int M, int P, class TO>
__global__ static void __launch_bounds__(128) k_flash_bwd_dq_tc(TO *dq, int q_stride, const float *D, attn_args A,
                                                                tc_bf16 B, int group, float scale)
{
    constexpr int BR = TC_BR * M, N = BK / P, NT = N / 8;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED | SUMMED> ks;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED> vs;
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, kvh = h / group, nh = gridDim.y;
    const bk_attn_seq &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * BR, lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = lane & 3;
    int npad = padded(S.n), cpad = padded(S.pos + S.n), wrow = q0 + 16 * M * w, row0 = wrow + (lane >> 2);
    const unsigned short *kb = B.k[si] + (size_t)kvh * cpad * HD, *vb = B.v[si] + (size_t)kvh * cpad * HD;
    unsigned qa[M][HD / 16][4], da[M][HD / 16][4];
    float lse[M][2], dd[M][2], acc[M][HD / 8][4] = {}, sl2 = scale * LOG2E;
#pragma unroll
    for (int m = 0; m < M; m++) {
        rows_as_a<HD>(qa[m], B.q[si] + ((size_t)h * npad + wrow + 16 * m) * HD, lane);
        rows_as_a<HD>(da[m], B.dout[si] + ((size_t)h * npad + wrow + 16 * m) * HD, lane);
        for (int r = 0; r < 2; r++) {
            int row = row0 + 16 * m + 8 * r;
            lse[m][r] = row < S.n ? S.lse[(size_t)h * S.n + row] * LOG2E : 0.0f;
            dd[m][r] = row < S.n ? D[(size_t)nh * S.row + (size_t)h * S.n + row] : 0.0f;
        }
    }
    int last = S.pos + (q0 + BR < S.n ? q0 + BR : S.n) - 1;
    int wfirst = S.pos + wrow, wlast = wfirst + 16 * M - 1;
    auto kv = [&](int k, int b) { fill(ks, b, kb + (size_t)k * HD), fill(vs, b, vb + (size_t)k * HD); };
    tiles_begin<PIPE, BK>(kv, 0, last + 1);
    for (int k0 = 0, b = 0; k0 <= last; k0 += BK, b ^= PIPE) {
        tile_step<PIPE, BK>(kv, k0, last + 1, b);
        if (k0 > wlast || (M > 1 && wrow >= S.n))
            continue;                    /* (a whole warp of padding: tc-wide's last blocks; at M = 1 the test
                                            cost dq its registers) */
#pragma unroll
        for (int part = 0; part < P; part++) {
            int n0 = part * N;
            if (k0 + n0 > wlast)
                break;                   /* these keys come after all the warp's rows: dS = 0 */
            float x[M][NT][4], dp[M][NT][4];
            scores(x, qa, ks, b, n0, lane);     /* S = Q K^T */
            scores(dp, da, vs, b, n0, lane);    /* dP = dO V^T */
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        int key = k0 + n0 + 8 * nt + 2 * t + (i & 1), r = i >> 1, row = row0 + 16 * m + 8 * r;
                        float p = row < S.n && key <= S.pos + row ? exp2f(x[m][nt][i] * sl2 - lse[m][r]) : 0.0f;
                        x[m][nt][i] = p * (dp[m][nt][i] - dd[m][r]);   /* dS / scale */
                    }
            accumulate(acc, x, ks, b, n0, lane);   /* dq += dS K */
        }
    }
#pragma unroll
    for (int m = 0; m < M; m++)
        store_rows<HD>(dq + (size_t)S.row * q_stride, q_stride, (size_t)h * HD, acc[m], row0 + 16 * m, S.n, scale,
                       scale, lane);
}

/* One query head's share of dk and dv for 64 keys (warp w: keys 16w..16w+15,
 * a lane's keys key0 and key0 + 8), over the query tiles that see them,
 * each in P parts of BK / P queries (as dq's): S^T = K Q^T, P^T, dP^T =
 * V dO^T, dS^T = P^T (dP^T - D), dv_h = P^T dO, dk_h = scale dS^T Q,
 * written to the sequence's partials (S.p: [2][head][ctx][HD]); k_dkv_sum
 * adds a kv head's shares in order. A block per query head rather than per
 * kv head: group times the blocks (eight for TinyLlama), each a group-th
 * of the work. */
template <int HD, int BK, bool PIPE, int P>
__global__ static void __launch_bounds__(128) k_flash_bwd_dkv_tc(const float *D, attn_args A, tc_bf16 B, int group,
                                                                 float scale)
{
    constexpr int N = BK / P, NT = N / 8;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED | SUMMED> qs, dos;
    __shared__ float lse_s[PIPE ? 2 : 1][BK], d_s[PIPE ? 2 : 1][BK];
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, kvh = h / group, nh = gridDim.y;
    const bk_attn_seq &S = A.s[si];
    int k0 = (blockIdx.x - A.first[si]) * TC_BR, ctx = S.pos + S.n;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = lane & 3, key0 = k0 + 16 * w + (lane >> 2);
    int npad = padded(S.n), cpad = padded(ctx);
    const unsigned short *qb = B.q[si] + (size_t)h * npad * HD, *ob = B.dout[si] + (size_t)h * npad * HD;
    unsigned ka[1][HD / 16][4], va[1][HD / 16][4];
    rows_as_a<HD>(ka[0], B.k[si] + ((size_t)kvh * cpad + k0 + 16 * w) * HD, lane);
    rows_as_a<HD>(va[0], B.v[si] + ((size_t)kvh * cpad + k0 + 16 * w) * HD, lane);
    float dk[1][HD / 8][4] = {}, dv[1][HD / 8][4] = {}, sl2 = scale * LOG2E;
    const float *lse = S.lse + (size_t)h * S.n, *dd = D + (size_t)nh * S.row + (size_t)h * S.n;
    int first = k0 - S.pos > 0 ? (k0 - S.pos) / BK * BK : 0;   /* the first query tile that sees key k0 */
    auto stage = [&](int i0, int b) {   /* the query tile from i0 into buffers b */
        fill(qs, b, qb + (size_t)i0 * HD);
        fill(dos, b, ob + (size_t)i0 * HD);
        for (int j = threadIdx.x; j < BK; j += blockDim.x) {
            bool in = i0 + j < S.n;
            lse_s[b][j] = in ? lse[i0 + j] * LOG2E : 0.0f;
            d_s[b][j] = in ? dd[i0 + j] : 0.0f;
        }
    };
    tiles_begin<PIPE, BK>(stage, first, S.n);
    for (int i0 = first, b = 0; i0 < S.n; i0 += BK, b ^= PIPE) {
        tile_step<PIPE, BK>(stage, i0, S.n, b);
#pragma unroll
        for (int part = 0; part < P; part++) {
            int n0 = part * N;
            if (S.pos + i0 + n0 + N - 1 < k0 + 16 * w)
                continue;                /* every query of the part comes before the warp's keys */
            float x[1][NT][4], dp[1][NT][4];
            scores(x, ka, qs, b, n0, lane);     /* S^T = K Q^T */
            scores(dp, va, dos, b, n0, lane);   /* dP^T = V dO^T */
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int j = n0 + 8 * nt + 2 * t + (i & 1), key = key0 + 8 * (i >> 1);
                    bool valid = i0 + j < S.n && key <= S.pos + i0 + j;
                    x[0][nt][i] = valid ? exp2f(x[0][nt][i] * sl2 - lse_s[b][j]) : 0.0f;   /* P^T */
                    dp[0][nt][i] = x[0][nt][i] * (dp[0][nt][i] - d_s[b][j]);             /* dS^T / scale */
                }
            accumulate(dv, x, dos, b, n0, lane);   /* dv += P^T dO */
            accumulate(dk, dp, qs, b, n0, lane);   /* dk += dS^T Q */
        }
    }
    size_t pitch = (size_t)ctx * HD;
    float *pk = S.p + (size_t)h * pitch, *pv = S.p + ((size_t)nh + h) * pitch;
    store_rows<HD>(pk, HD, 0, dk[0], key0, ctx, scale, scale, lane);
    store_rows<HD>(pv, HD, 0, dv[0], key0, ctx, 1.0f, 1.0f, lane);
}

/* dk, dv += the group's shares, heads in order; a block (hd threads) per
 * (key, kv head); T: how dk and dv are stored */
template <class T> __global__ static void k_dkv_sum(attn_args A, int group, int nh)
{
    int si = find_seq(A, blockIdx.x), c = blockIdx.y, key = blockIdx.x - A.first[si], d = threadIdx.x;
    int hd = blockDim.x;
    const bk_attn_seq &S = A.s[si];
    size_t ctx = S.pos + S.n;
    float k = 0.0f, v = 0.0f;
    for (int h = c * group; h < (c + 1) * group; h++) {
        k += S.p[((size_t)h * ctx + key) * hd + d];
        v += S.p[(((size_t)nh + h) * ctx + key) * hd + d];
    }
    T *dk = (T *)S.dk, *dv = (T *)S.dv;
    size_t o = (size_t)key * S.kv_stride + (size_t)c * hd + d;
    put(dk, o, get(dk, o) + k);
    put(dv, o, get(dv, o) + v);
}

/* The head-major bf16 copies of one operand (Q, K, V or dO) for the
 * sequences of a call, in one launch: job s's row r < rows (heads x hd
 * floats at src + r ld) goes to dst[head][r][0..hd), its rows up to pad
 * are zeros. blockDim.y padded rows a block, 8 elements a thread (a
 * 16-byte store; hd is 64 or 128). Before, a launch per sequence and
 * operand with a block per (row, head) of hd threads, one element each: 28
 * launches of up to 32768 small blocks per layer of TinyLlama's step. */
struct pack_jobs {
    const void *src[ATTN_SEQS];
    bool bf16[ATTN_SEQS];              /* src holds bf16 (activations, a bf16 KV cache): copied as it is */
    unsigned short *dst[ATTN_SEQS];
    int rows[ATTN_SEQS], pad[ATTN_SEQS], ld[ATTN_SEQS];
    int first[ATTN_SEQS + 1];          /* prefix sums of pad: a sequence's first block */
};
__global__ static void k_pack_heads(pack_jobs J, int n_seq, int width, int hd)
{
    int row = blockIdx.x * blockDim.y + threadIdx.y, s = 0;
    if (row >= J.first[n_seq])
        return;
    while (row >= J.first[s + 1])
        s++;
    int r = row - J.first[s];
    bool b16 = J.bf16[s];
    const float *src = (const float *)J.src[s] + (size_t)r * J.ld[s];
    const unsigned short *src16 = (const unsigned short *)J.src[s] + (size_t)r * J.ld[s];
    for (int e = 8 * threadIdx.x; e < width; e += 8 * blockDim.x) {
        int h = e / hd, c = e % hd;
        __align__(16) unsigned short v[8];
#pragma unroll
        for (int k = 0; k < 8; k++)
            v[k] = r >= J.rows[s] ? 0 : b16 ? src16[e + k] : bf16_rne(src[e + k]);
        copy16(J.dst[s] + ((size_t)h * J.pad[s] + r) * hd + c, v);
    }
}

/* The bf16 head-major copies of Q (and dO when given), K and V for the
 * sequences t[s0 .. s0 + ATTN_SEQS) (nt in all), in the WS_TCB workspace:
 * a sequence's copies back to back, Q, K, V, dO. */
static void tc_copies(tc_bf16 *B, const struct bk_attn_seq *t, int nt, int s0, const float *q, int q_stride,
                      const float *dout, int dout_stride, int n_heads, int n_kv, int hd)
{
    int end = nt < s0 + ATTN_SEQS ? nt : s0 + ATTN_SEQS, ops = dout ? 4 : 3;
    size_t total = 0;
    for (int i = s0; i < end; i++)
        total += (size_t)((dout ? 2 : 1) * n_heads * padded(t[i].n) + 2 * n_kv * padded(t[i].pos + t[i].n)) * hd;
    unsigned short *cp = (unsigned short *)workspace(WS_TCB, total * sizeof(unsigned short));
    pack_jobs J[4];
    for (int j = 0; j < ops; j++)
        J[j].first[0] = 0;
    for (int i = s0; i < end; i++) {
        const struct bk_attn_seq *x = &t[i];
        int ctx = x->pos + x->n, np = padded(x->n), cpd = padded(ctx), k = i - s0;
        /* queries and dO: activations (bf16, or fp32); keys and values:
         * activations, a bf16 KV cache, or fp32 */
        bool a16 = is_act(q), kv16 = x->kv_bf16 || is_act(x->k);
        size_t qo = (size_t)x->row * q_stride * (a16 ? 2 : 4), dout_o = (size_t)x->row * dout_stride * (a16 ? 2 : 4);
        struct { const void *src; bool bf16; int ld, rows, pad, heads; const unsigned short **dst; } c[4] = {
            {(const char *)q + qo, a16, q_stride, x->n, np, n_heads, &B->q[k]},
            {x->k, kv16, x->kv_stride, ctx, cpd, n_kv, &B->k[k]},
            {x->v, kv16, x->kv_stride, ctx, cpd, n_kv, &B->v[k]},
            {dout ? (const char *)dout + dout_o : NULL, a16, dout_stride, x->n, np, n_heads, &B->dout[k]}};
        for (int j = 0; j < ops; j++) {
            J[j].src[k] = c[j].src, J[j].bf16[k] = c[j].bf16, J[j].dst[k] = cp, J[j].rows[k] = c[j].rows;
            J[j].pad[k] = c[j].pad, J[j].ld[k] = c[j].ld;
            J[j].first[k + 1] = J[j].first[k] + c[j].pad;
            *c[j].dst = cp;
            cp += (size_t)c[j].heads * c[j].pad * hd;
        }
    }
    for (int j = 0; j < ops; j++) {
        int width = (j == 1 || j == 2 ? n_kv : n_heads) * hd, rows = J[j].first[end - s0];
        int tx = width / 8 < THREADS ? (width / 8 + 31) / 32 * 32 : THREADS, ty = THREADS / tx;
        LAUNCH(k_pack_heads, (rows + ty - 1) / ty, dim3(tx, ty))(J[j], end - s0, width, hd);
        LAUNCHED("attention (bf16 copies)");
    }
}

/* The kernels' shapes per head_dim and variant (RL_CUDA_ATTN: tc, tc-pipe,
 * tc-wide). BK, the other side's tile, halves at head_dim 128 so that
 * registers (two tiles of scores beside two of accumulators) and static
 * shared memory (48 KB) hold. tc-wide is tc-pipe with M = 2 blocks of 16
 * query rows a warp in the forward and dq (128 queries a block, each
 * fragment of a tile serving both) and the scores of dq and dk/dv taken in
 * halves of a tile (fewer registers); its results are tc-pipe's, bit for
 * bit. ptxas (sm_90) gives its forward 242 registers (2 blocks an SM
 * against tc-pipe's 3, each warp twice the products per fragment load),
 * dq 255 (2, against 2), dk/dv 166 (3, against tc-pipe's 234: 2). At head_dim
 * 128 two blocks of rows spill (255 registers) and halves save none
 * (dk/dv's 254): there tc-wide is tc-pipe. */
template <int HD, int KIND> struct tc_shape {
    static constexpr bool pipe = KIND != TC_PLAIN;
    static constexpr int bk = HD == 64 ? 64 : 32;
    static constexpr bool wide = KIND == TC_WIDE && HD == 64;
    static constexpr int m = wide ? 2 : 1;       /* 16-row blocks a warp, forward and dq */
    static constexpr int parts = wide ? 2 : 1;   /* of a tile's scores, dq and dk/dv */
};
static int per_query_tc(int m) { return m == 2 ? PER_QUERY_TC_WIDE : PER_QUERY_TC; }
/* the launches' names by variant (the kernel times and the launch trace) */
static const char *const tc_fwd_name[] = {"attention (tensor cores)", "attention (tensor cores, cp.async)",
                                          "attention (tensor cores, wide)"};
static const char *const tc_dq_name[] = {"attention_bwd (queries, tensor cores)",
                                         "attention_bwd (queries, tensor cores, cp.async)",
                                         "attention_bwd (queries, tensor cores, wide)"};
static const char *const tc_dkv_name[] = {"attention_bwd (keys, tensor cores)",
                                          "attention_bwd (keys, tensor cores, cp.async)",
                                          "attention_bwd (keys, tensor cores, wide)"};

template <int HD, int KIND, class TO>
static void tc_fwd(TO *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *t, int nt,
                   int n_heads, int n_kv, float scale)
{
    using K = tc_shape<HD, KIND>;
    for (int s0 = 0; s0 < nt; s0 += ATTN_SEQS) {
        tc_bf16 B = {};
        tc_copies(&B, t, nt, s0, q, q_stride, NULL, 0, n_heads, n_kv, HD);
        attn_args A = {};
        int tiles = attn_describe(&A, t, nt, s0, per_query_tc(K::m));
        LAUNCH((k_flash_fwd_tc<HD, K::bk, K::pipe, K::m, TO>), dim3(tiles, n_heads), 128)(out, out_stride, A, B,
                                                                                          n_heads / n_kv, scale);
        LAUNCHED(tc_fwd_name[KIND]);
    }
}

/* The tensor-core backward of the sequences t (their copies: t[i].p is set
 * to each one's dk, dv partials). */
template <int HD, int KIND, class TO>
static void tc_bwd(TO *dq, int q_stride, const float *dout, int dout_stride, const float *q, const float *out,
                   int out_stride, struct bk_attn_seq *t, int nt, int n_heads, int n_kv, float scale)
{
    using K = tc_shape<HD, KIND>;
    int rows = 0;                          /* D is laid out like lse: nh floats per row of the batch */
    size_t part = 0;                       /* dk, dv partials [2][head][ctx][hd] */
    for (int i = 0; i < nt; i++) {
        rows = t[i].row + t[i].n > rows ? t[i].row + t[i].n : rows;
        part += (size_t)2 * n_heads * (t[i].pos + t[i].n) * HD;
    }
    float *D = (float *)workspace(WS_DELTA, (size_t)n_heads * rows * sizeof(float));
    float *parts = (float *)workspace(WS_DKV, part * sizeof(float));
    for (int i = 0; i < nt; i++) {
        t[i].p = parts;                    /* the scratch field, unused on this route */
        parts += (size_t)2 * n_heads * (t[i].pos + t[i].n) * HD;
    }
    for (int s0 = 0; s0 < nt; s0 += ATTN_SEQS) {
        tc_bf16 B = {};
        tc_copies(&B, t, nt, s0, q, q_stride, dout, dout_stride, n_heads, n_kv, HD);
        attn_args A = {};
        int nq = attn_describe(&A, t, nt, s0, PER_QUERY);
        LAUNCH(k_attn_delta<TO>, dim3(nq, (n_heads + DELTA_HEADS - 1) / DELTA_HEADS), dim3(32, DELTA_HEADS))(
            D, (const TO *)dout, dout_stride, (const TO *)out, out_stride, A, n_heads, HD);
        LAUNCHED("attention_bwd (D, tensor cores)");
        int tiles = attn_describe(&A, t, nt, s0, per_query_tc(K::m));
        LAUNCH((k_flash_bwd_dq_tc<HD, K::bk, K::pipe, K::m, K::parts, TO>), dim3(tiles, n_heads), 128)(
            dq, q_stride, D, A, B, n_heads / n_kv, scale);
        LAUNCHED(tc_dq_name[KIND]);
        int ktiles = attn_describe(&A, t, nt, s0, PER_KEY_TC);
        LAUNCH((k_flash_bwd_dkv_tc<HD, K::bk, K::pipe, K::parts>), dim3(ktiles, n_heads), 128)(D, A, B, n_heads / n_kv,
                                                                                               scale);
        LAUNCHED(tc_dkv_name[KIND]);
        int keys = attn_describe(&A, t, nt, s0, PER_KEY);
        LAUNCH(k_dkv_sum<TO>, dim3(keys, n_kv), HD)(A, n_heads / n_kv, n_heads);
        LAUNCHED("attention_bwd (dk, dv sums)");
    }
}

bool attn_tc_applies(int hd) { return hd == 64 || hd == 128; }

/* Activations (q, out, dO, dq, and training's k, v, dk, dv) are read and
 * written in their own type: bf16 where cuda_acts.cu says so, else fp32.
 * The variant and head_dim pick the instance. */
template <class TO>
static void tc_fwd_as(TO *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *t, int nt,
                      int n_heads, int n_kv, int hd, float scale)
{
    static void (*const fwd[2][3])(TO *, int, const float *, int, const struct bk_attn_seq *, int, int, int, float) = {
        {tc_fwd<64, TC_PLAIN, TO>, tc_fwd<64, TC_PIPE, TO>, tc_fwd<64, TC_WIDE, TO>},
        {tc_fwd<128, TC_PLAIN, TO>, tc_fwd<128, TC_PIPE, TO>, tc_fwd<128, TC_WIDE, TO>}};
    fwd[hd == 128][attn_tc_kind()](out, out_stride, q, q_stride, t, nt, n_heads, n_kv, scale);
}
void attn_tc_fwd(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *t, int nt,
                 int n_heads, int n_kv, int hd, float scale)
{
    if (!nt)
        return;
    same_kind("attention", q, out);
    as_stored(out, [&](auto *to) {
        using TO = stored_t<decltype(to)>;
        tc_fwd_as((TO *)out, out_stride, q, q_stride, t, nt, n_heads, n_kv, hd, scale);
    });
}

template <class TO>
static void tc_bwd_as(TO *dq, int q_stride, const float *dout, int dout_stride, const float *q, const float *out,
                      int out_stride, struct bk_attn_seq *t, int nt, int n_heads, int n_kv, int hd, float scale)
{
    static void (*const bwd[2][3])(TO *, int, const float *, int, const float *, const float *, int,
                                   struct bk_attn_seq *, int, int, int, float) = {
        {tc_bwd<64, TC_PLAIN, TO>, tc_bwd<64, TC_PIPE, TO>, tc_bwd<64, TC_WIDE, TO>},
        {tc_bwd<128, TC_PLAIN, TO>, tc_bwd<128, TC_PIPE, TO>, tc_bwd<128, TC_WIDE, TO>}};
    bwd[hd == 128][attn_tc_kind()](dq, q_stride, dout, dout_stride, q, out, out_stride, t, nt, n_heads, n_kv, scale);
}
void attn_tc_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q, const float *out,
                 int out_stride, struct bk_attn_seq *t, int nt, int n_heads, int n_kv, int hd, float scale)
{
    if (!nt)
        return;
    same_kind("attention_bwd", dq, dout);
    for (int i = 0; i < nt; i++) {
        same_kind("attention_bwd", dq, t[i].dk);
        same_kind("attention_bwd", t[i].dk, t[i].dv);
    }
    as_stored(dq, [&](auto *to) {
        using TO = stored_t<decltype(to)>;
        tc_bwd_as((TO *)dq, q_stride, dout, dout_stride, q, out, out_stride, t, nt, n_heads, n_kv, hd, scale);
    });
}
