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
 * copied once as bf16, head-major and zero-padded to whole blocks
 * (k_pack_heads), so tiles load without bounds checks; tc-wide's kernels
 * read the operands that are bf16 already (activations, a bf16 KV cache)
 * where they are instead, checking the bounds. Nothing n x ctx is stored.
 * Inputs are rounded to bf16, as the GEMMs of bf16 mode round theirs. */
#include "cuda_attention.cuh"
#include "cuda_mma.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

#define TC_PAD TC_BR_WIDE             /* rows of the head-major copies are padded to this: the widest block's */
/* Per sequence of the call, Q, dO, K and V as bf16 bits: a head-major copy
 * ([head][padded rows][hd], k_pack_heads), or (tc-wide) the rows where
 * they are, when they are bf16 already (activations, a bf16 KV cache):
 * head h at column h hd, rows ld elements apart. Q and dO are one
 * activation buffer each for the whole call, so their pitch is the call's
 * (0: copies); K and V are each sequence's, so a bit says which are read
 * in place, at the sequence's kv_stride. (A pitch a sequence would take
 * the kernels' parameters past 4 KB.) */
struct tc_bf16 {
    const unsigned short *q[ATTN_SEQS], *dout[ATTN_SEQS], *k[ATTN_SEQS], *v[ATTN_SEQS];
    int q_ld, dout_ld;
    unsigned k_view, v_view;            /* bit s: sequence s's K (V) in place */
};
__host__ __device__ static inline int kv_ld(unsigned view, int s, const bk_attn_seq &S)
{
    return view >> s & 1 ? S.kv_stride : 0;
}
__host__ __device__ static int padded(int rows) { return (rows + TC_PAD - 1) / TC_PAD * TC_PAD; }
/* One head's rows of an operand: row r at p + r ld; rows from `rows` on
 * read as zeros (they are the padding of a block or tile). VIEW: the
 * operand may be read in place (tc-wide), so ld and the bound are checked;
 * else it is a head-major copy, its ld HD and its padding zeros already,
 * and the kernels (tc, tc-pipe) keep the registers the checks would take. */
template <int HD, bool VIEW> struct tc_rows {
    const unsigned short *p;
    int ld, rows;
    __device__ bool has(int r) const { return !VIEW || r < rows; }
    __device__ const unsigned short *at(int r, int c) const { return p + (size_t)r * (VIEW ? ld : HD) + c; }
};
template <int HD, bool VIEW>
__device__ static inline tc_rows<HD, VIEW> head_rows(const unsigned short *base, int ld, int head, int rows)
{
    if (VIEW && ld)
        return tc_rows<HD, VIEW>{base + (size_t)head * HD, ld, rows};
    return tc_rows<HD, VIEW>{base + (size_t)head * padded(rows) * HD, HD, rows};
}

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
__device__ static inline void zero16(unsigned short *dst)
{
#ifdef RL_CUDA_EMU
    if ((uintptr_t)dst & 15) {
        fprintf(stderr, "zero16: a 16-byte store at %p, misaligned on a GPU\n", (void *)dst);
        abort();
    }
    memset(dst, 0, 16);
#else
    *(uint4 *)dst = uint4{0u, 0u, 0u, 0u};
#endif
}
/* the 8 elements from column c of row r of src, or zeros past its rows */
template <int C, bool V>
__device__ static inline void row16(unsigned short *dst, const tc_rows<C, V> &src, int r, int c)
{
    if (src.has(r))
        copy16(dst, src.at(r, c));
    else
        zero16(dst);
}
/* as they are: s[r][c] = src[r0 + r][c] */
template <int R, int C, bool V> __device__ static void stage_rows(tile<R, C> &s, const tc_rows<C, V> &src, int r0)
{
    for (int i = threadIdx.x; i < R * C / 8; i += blockDim.x) {
        int r = i / (C / 8), c = 8 * (i % (C / 8));
        row16(&s.at[r][c], src, r0 + r, c);
    }
}
/* transposed: s[c][r] = src[r0 + r][c] (consecutive threads take
 * consecutive rows, so that their 2-byte stores fall in distinct banks) */
template <int R, int C, bool V> __device__ static void stage_cols(tile<C, R> &s, const tc_rows<C, V> &src, int r0)
{
    for (int i = threadIdx.x; i < R * C / 8; i += blockDim.x) {
        int r = i % R, c = 8 * (i / R);
        __align__(16) unsigned short v[8];
        row16(v, src, r0 + r, c);
#pragma unroll
        for (int e = 0; e < 8; e++)
            s.at[c + e][r] = v[e];
    }
}

/* as they are, by cp.async (tc-pipe): the caller commits the group and
 * waits for it; the zeros past the rows are plain stores, visible after
 * the same barrier */
template <int R, int C, bool V> __device__ static void stage_async(tile<R, C> &s, const tc_rows<C, V> &src, int r0)
{
    for (int i = threadIdx.x; i < R * C / 8; i += blockDim.x) {
        int r = i / (C / 8), c = 8 * (i % (C / 8));
        if (src.has(r0 + r))
            cp_async16(&s.at[r][c], src.at(r0 + r, c));
        else
            zero16(&s.at[r][c]);
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
/* buffer b gets the tile of rows r0.. of src: in the background with PIPE */
template <int HD, int BK, bool PIPE, int USE, bool V>
__device__ static inline void fill(tiles<HD, BK, PIPE, USE> &s, int b, const tc_rows<HD, V> &src, int r0)
{
    if constexpr (PIPE)
        stage_async(s.rows[b], src, r0);
    else {
        if constexpr (USE & SCORED)
            stage_rows(s.rows[0], src, r0);
        if constexpr (USE & SUMMED)
            stage_cols<BK, HD>(s.cols, src, r0);
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

/* A warp's 16 rows r0.. of src as A fragments over HD (load_a's layout:
 * a lane holds rows g and g + 8), zeros past src's rows */
template <int HD, bool V>
__device__ static inline void rows_as_a(unsigned (*a)[4], const tc_rows<HD, V> &src, int r0, int lane)
{
    int g = lane >> 2;
    bool in0 = src.has(r0 + g), in1 = src.has(r0 + g + 8);
    const unsigned short *p0 = src.at(r0 + g, 2 * (lane & 3)), *p1 = src.at(r0 + g + 8, 2 * (lane & 3));
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        a[kk][0] = in0 ? ld_pair(p0 + 16 * kk) : 0u;
        a[kk][1] = in1 ? ld_pair(p1 + 16 * kk) : 0u;
        a[kk][2] = in0 ? ld_pair(p0 + 16 * kk + 8) : 0u;
        a[kk][3] = in1 ? ld_pair(p1 + 16 * kk + 8) : 0u;
    }
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

/* The online softmax of the scores x of a part of a key tile, in place
 * (FlashAttention-2's): masked where diag says some key follows some row
 * (x[m][nt][i] is key key0 + 8 nt + 2t + i % 2 of row position qpos0 + 16 m
 * + 8 (i / 2)), in base 2, and exponentiated against the rows' new running
 * max mrow; O and the lane's row sums l rescaled to it. */
template <int M, int NT, int DT>
__device__ static inline void softmax_part(float (&x)[M][NT][4], float (&mrow)[M][2], float (&l)[M][2],
                                           float (&o)[M][DT][4], int key0, int qpos0, bool diag, float sl2, int t)
{
    float mx[M][2], sum[M][2] = {};
#pragma unroll
    for (int m = 0; m < M; m++) {
        mx[m][0] = mrow[m][0], mx[m][1] = mrow[m][1];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int key = key0 + 8 * nt + 2 * t + (i & 1), r = i >> 1;
                x[m][nt][i] = diag && key > qpos0 + 16 * m + 8 * r ? -INFINITY : x[m][nt][i] * sl2;
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
        for (int dt = 0; dt < DT; dt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                o[m][dt][i] *= alpha[i >> 1];
        l[m][0] = l[m][0] * alpha[0] + sum[m][0];   /* this lane's part of the row sum */
        l[m][1] = l[m][1] * alpha[1] + sum[m][1];
    }
}

/* The forward for TC_BR M queries of head h: per key tile, in P parts of
 * BK / P keys, S = Q K^T (scaled to base 2), the online softmax on the
 * accumulators, O += P V. Warp w takes the rows 16 M w .. 16 M (w + 1) - 1,
 * in M blocks of 16 whose products share each fragment of the tile (M = 2,
 * RL_CUDA_ATTN=tc-wide: half the shared-memory reads per product; its
 * parts, at head_dim 128, leave the registers for that). A lane's rows are
 * row0 + 16 m and row0 + 16 m + 8. The tile of key 0 comes first, and every
 * row (the padding's included) sees key 0, so a row's max is finite from
 * then on: no exp of inf - inf. */
template <int HD, int BK, bool PIPE, int M, int P, bool VIEW, class TO>
__global__ static void __launch_bounds__(128) k_flash_fwd_tc(TO *out, int out_stride, attn_args A, tc_bf16 B, int group,
                                                             float scale)
{
    constexpr int BR = TC_BR * M, N = BK / P, NT = N / 8;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED> ks;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SUMMED> vs;
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, kvh = h / group;
    const bk_attn_seq &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * BR, lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = lane & 3;
    int wrow = q0 + 16 * M * w, row0 = wrow + (lane >> 2), ctx = S.pos + S.n;
    auto qr = head_rows<HD, VIEW>(B.q[si], B.q_ld, h, S.n);
    auto kr = head_rows<HD, VIEW>(B.k[si], kv_ld(B.k_view, si, S), kvh, ctx), vr = head_rows<HD, VIEW>(B.v[si], kv_ld(B.v_view, si, S), kvh, ctx);
    unsigned qa[M][HD / 16][4];
#pragma unroll
    for (int m = 0; m < M; m++)
        rows_as_a(qa[m], qr, wrow + 16 * m, lane);
    float o[M][HD / 8][4] = {}, mrow[M][2], l[M][2] = {}, sl2 = scale * LOG2E;
#pragma unroll
    for (int m = 0; m < M; m++)
        mrow[m][0] = mrow[m][1] = -INFINITY;
    int last = S.pos + (q0 + BR < S.n ? q0 + BR : S.n) - 1;   /* the block's last key */
    int wfirst = S.pos + wrow, wlast = wfirst + 16 * M - 1;      /* its warp's first and last row's */
    auto kv = [&](int k, int b) { fill(ks, b, kr, k), fill(vs, b, vr, k); };
    tiles_begin<PIPE, BK>(kv, 0, last + 1);
    for (int k0 = 0, b = 0; k0 <= last; k0 += BK, b ^= PIPE) {
        tile_step<PIPE, BK>(kv, k0, last + 1, b);
        if (k0 > wlast || wrow >= S.n)
            continue;                    /* the warp's rows see none of these keys, or are all padding */
#pragma unroll
        for (int part = 0; part < P; part++) {
            int n0 = part * N;
            if (P > 1 && k0 + n0 > wlast)
                break;                   /* keys after all the warp's rows: nothing changes */
            float x[M][NT][4];
            scores(x, qa, ks, b, n0, lane);
            softmax_part(x, mrow, l, o, k0 + n0, S.pos + row0, k0 + n0 + N - 1 > wfirst, sl2, t);
            accumulate(o, x, vs, b, n0, lane);   /* O += P V */
        }
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

/* The same D with four elements a lane, one load of 16 bytes (fp32) or 8
 * (bf16) from each operand, HD / 4 lanes a head (a warp holds two heads at
 * 64), summed over the head's lanes by shuffles: a quarter of the scalar
 * kernel's loads and half its warps. For rows aligned to four elements
 * (rows_by4); the scalar kernel takes the rest. */
template <int HD> constexpr int delta_lanes = HD / 4 < 32 ? HD / 4 : 32; /* lanes a head */
template <int HD, class T>
__global__ static void __launch_bounds__(128) k_attn_delta4(float *D, const T *dout, int dout_stride, const T *out,
                                                            int out_stride, attn_args A, int nh)
{
    constexpr int L = delta_lanes<HD>, V = HD / 4 / L; /* loads a lane */
    static_assert(HD % 4 == 0 && (L & (L - 1)) == 0 && HD == 4 * L * V, "k_attn_delta4: head_dim");
    int si = find_seq(A, blockIdx.x), g = (blockIdx.y * blockDim.x + threadIdx.x) / L, j = threadIdx.x % L;
    int h = g < nh ? g : nh - 1; /* a whole head's lanes run the shuffles; only live heads write */
    const bk_attn_seq &S = A.s[si];
    int i = blockIdx.x - A.first[si];
    size_t r = S.row + i;
    float acc = 0;
    for (int v = 0; v < V; v++) {
        int d = 4 * (j + L * v);
        float4 a = get4(dout, r * dout_stride + (size_t)h * HD + d), b = get4(out, r * out_stride + (size_t)h * HD + d);
        acc = fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
    }
    for (int o = L / 2; o > 0; o >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (g < nh && j == 0)
        D[(size_t)nh * S.row + (size_t)h * S.n + i] = acc;
}

/* dq for TC_BR M queries of head h (warp w: M blocks of 16 rows, as in the
 * forward), over the key tiles they see, each tile in P parts of BK / P
 * keys (fewer registers for the scores; P = 1 or 2): S = Q K^T, P =
 * exp2(S scale log2e - lse log2e), dP = dO V^T, dS = P (dP - D), dq =
 * scale dS K. A part's products sum in the order of the whole tile's.
 * Two blocks an SM whatever the variant (their registers): said to ptxas,
 * which otherwise squeezed tc-pipe's into 168 registers and spilled. */
template <int HD, int BK, bool PIPE, int M, int P, bool VIEW, class TO>
__global__ static void __launch_bounds__(128, 2) k_flash_bwd_dq_tc(TO *dq, int q_stride, const float *D, attn_args A,
                                                                tc_bf16 B, int group, float scale)
{
    constexpr int BR = TC_BR * M, N = BK / P, NT = N / 8;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED | SUMMED> ks;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED> vs;
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, kvh = h / group, nh = gridDim.y;
    const bk_attn_seq &S = A.s[si];
    int q0 = (blockIdx.x - A.first[si]) * BR, lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = lane & 3;
    int wrow = q0 + 16 * M * w, row0 = wrow + (lane >> 2), ctx = S.pos + S.n;
    auto qr = head_rows<HD, VIEW>(B.q[si], B.q_ld, h, S.n);
    auto dr = head_rows<HD, VIEW>(B.dout[si], B.dout_ld, h, S.n);
    auto kr = head_rows<HD, VIEW>(B.k[si], kv_ld(B.k_view, si, S), kvh, ctx);
    auto vr = head_rows<HD, VIEW>(B.v[si], kv_ld(B.v_view, si, S), kvh, ctx);
    unsigned qa[M][HD / 16][4], da[M][HD / 16][4];
    float lse[M][2], dd[M][2], acc[M][HD / 8][4] = {}, sl2 = scale * LOG2E;
#pragma unroll
    for (int m = 0; m < M; m++) {
        rows_as_a(qa[m], qr, wrow + 16 * m, lane);
        rows_as_a(da[m], dr, wrow + 16 * m, lane);
        for (int r = 0; r < 2; r++) {
            int row = row0 + 16 * m + 8 * r;
            lse[m][r] = row < S.n ? S.lse[(size_t)h * S.n + row] * LOG2E : 0.0f;
            dd[m][r] = row < S.n ? D[(size_t)nh * S.row + (size_t)h * S.n + row] : 0.0f;
        }
    }
    int last = S.pos + (q0 + BR < S.n ? q0 + BR : S.n) - 1;
    int wfirst = S.pos + wrow, wlast = wfirst + 16 * M - 1;
    auto kv = [&](int k, int b) { fill(ks, b, kr, k), fill(vs, b, vr, k); };
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
 * of the work. Parts at head_dim 64 are tc-wide's, there to fit 3 blocks
 * an SM (168 registers), which ptxas is told. */
template <int HD, int BK, bool PIPE, int P, bool VIEW>
__global__ static void __launch_bounds__(128, HD == 64 && P > 1 ? 3 : 1)
    k_flash_bwd_dkv_tc(const float *D, attn_args A, tc_bf16 B, int group, float scale)
{
    constexpr int N = BK / P, NT = N / 8;
    __shared__ __align__(16) tiles<HD, BK, PIPE, SCORED | SUMMED> qs, dos;
    __shared__ float lse_s[PIPE ? 2 : 1][BK], d_s[PIPE ? 2 : 1][BK];
    int si = find_seq(A, blockIdx.x), h = blockIdx.y, kvh = h / group, nh = gridDim.y;
    const bk_attn_seq &S = A.s[si];
    int k0 = (blockIdx.x - A.first[si]) * TC_BR, ctx = S.pos + S.n;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = lane & 3, key0 = k0 + 16 * w + (lane >> 2);
    auto qr = head_rows<HD, VIEW>(B.q[si], B.q_ld, h, S.n);
    auto dr = head_rows<HD, VIEW>(B.dout[si], B.dout_ld, h, S.n);
    unsigned ka[1][HD / 16][4], va[1][HD / 16][4];
    rows_as_a(ka[0], head_rows<HD, VIEW>(B.k[si], kv_ld(B.k_view, si, S), kvh, ctx), k0 + 16 * w, lane);
    rows_as_a(va[0], head_rows<HD, VIEW>(B.v[si], kv_ld(B.v_view, si, S), kvh, ctx), k0 + 16 * w, lane);
    float dk[1][HD / 8][4] = {}, dv[1][HD / 8][4] = {}, sl2 = scale * LOG2E;
    const float *lse = S.lse + (size_t)h * S.n, *dd = D + (size_t)nh * S.row + (size_t)h * S.n;
    int first = k0 - S.pos > 0 ? (k0 - S.pos) / BK * BK : 0;   /* the first query tile that sees key k0 */
    auto stage = [&](int i0, int b) {   /* the query tile from i0 into buffers b */
        fill(qs, b, qr, i0);
        fill(dos, b, dr, i0);
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

/* The kernels' Q (and dO when given), K and V for the sequences t[s0 ..
 * s0 + ATTN_SEQS) (nt in all). With in_place (tc-wide) an operand that is
 * bf16 already (activations, a bf16 KV cache) and 16-byte aligned is read
 * where it is; the others get bf16 head-major copies in the WS_TCB
 * workspace, a launch of k_pack_heads per operand. */
struct tc_operand {                    /* one operand of one sequence */
    const void *src;                   /* NULL: read in place, nothing to copy */
    bool bf16;
    int ld, rows, heads;
    const unsigned short **dst;
};
/* whether rows ld elements apart from p can be read in place: bf16, every
 * row 16-byte aligned (the tiles' cp.async) */
static bool in_place_ok(const void *p, bool bf16, int ld)
{
    return bf16 && ((uintptr_t)p & 15) == 0 && ld % 8 == 0;
}
static void tc_copies(tc_bf16 *B, const struct bk_attn_seq *t, int nt, int s0, const float *q, int q_stride,
                      const float *dout, int dout_stride, int n_heads, int n_kv, int hd, bool in_place)
{
    int end = nt < s0 + ATTN_SEQS ? nt : s0 + ATTN_SEQS, ops = dout ? 4 : 3;
    /* queries and dO: activations (bf16, or fp32); keys and values:
     * activations, a bf16 KV cache, or fp32 */
    bool a16 = is_act(q);
    B->q_ld = in_place && in_place_ok(q, a16, q_stride) ? q_stride : 0;
    B->dout_ld = in_place && dout && in_place_ok(dout, a16, dout_stride) ? dout_stride : 0;
    B->k_view = B->v_view = 0;
    tc_operand c[ATTN_SEQS][4];
    size_t total = 0;
    for (int i = s0; i < end; i++) {
        const struct bk_attn_seq *x = &t[i];
        int ctx = x->pos + x->n, k = i - s0;
        bool kv16 = x->kv_bf16 || is_act(x->k);
        size_t qo = (size_t)x->row * q_stride * (a16 ? 2 : 4), dout_o = (size_t)x->row * dout_stride * (a16 ? 2 : 4);
        tc_operand ci[4] = {{(const char *)q + qo, a16, q_stride, x->n, n_heads, &B->q[k]},
                            {x->k, kv16, x->kv_stride, ctx, n_kv, &B->k[k]},
                            {x->v, kv16, x->kv_stride, ctx, n_kv, &B->v[k]},
                            {dout ? (const char *)dout + dout_o : NULL, a16, dout_stride, x->n, n_heads, &B->dout[k]}};
        bool view[4] = {B->q_ld != 0, in_place && in_place_ok(x->k, kv16, x->kv_stride),
                        in_place && in_place_ok(x->v, kv16, x->kv_stride), B->dout_ld != 0};
        B->k_view |= (unsigned)view[1] << k, B->v_view |= (unsigned)view[2] << k;
        for (int j = 0; j < ops; j++) {
            c[k][j] = ci[j];
            if (view[j]) {
                *ci[j].dst = (const unsigned short *)ci[j].src;
                c[k][j].src = NULL;
            } else
                total += (size_t)ci[j].heads * padded(ci[j].rows) * hd;
        }
    }
    if (!total)
        return;
    unsigned short *cp = (unsigned short *)workspace(WS_TCB, total * sizeof(unsigned short));
    for (int j = 0; j < ops; j++) {
        pack_jobs J;
        int jobs = 0;
        J.first[0] = 0;
        for (int k = 0; k < end - s0; k++) {
            const tc_operand &o = c[k][j];
            if (!o.src)
                continue;
            int pad = padded(o.rows);
            J.src[jobs] = o.src, J.bf16[jobs] = o.bf16, J.dst[jobs] = cp, J.rows[jobs] = o.rows;
            J.pad[jobs] = pad, J.ld[jobs] = o.ld;
            J.first[jobs + 1] = J.first[jobs] + pad;
            jobs++;
            *o.dst = cp;
            cp += (size_t)o.heads * pad * hd;
        }
        if (!jobs)
            continue;
        int width = (j == 1 || j == 2 ? n_kv : n_heads) * hd, rows = J.first[jobs];
        int tx = width / 8 < THREADS ? (width / 8 + 31) / 32 * 32 : THREADS, ty = THREADS / tx;
        LAUNCH(k_pack_heads, (rows + ty - 1) / ty, dim3(tx, ty))(J, jobs, width, hd);
        LAUNCHED("attention (bf16 copies)");
    }
}

/* The kernels' shapes per head_dim and variant (RL_CUDA_ATTN: tc, tc-pipe,
 * tc-wide). BK, the other side's tile, halves at head_dim 128 so that
 * registers (two tiles of scores beside two of accumulators) and static
 * shared memory (48 KB) hold. tc-wide is tc-pipe with M = 2 blocks of 16
 * query rows a warp in the forward and dq (128 queries a block, each
 * fragment of a tile serving both) and the scores of dq and dk/dv taken in
 * quarters of a tile (fewer registers), and bf16 operands read where they
 * are (in_place: no copies); at head_dim 64 its results are tc-pipe's, bit
 * for bit. ptxas 13.0 (sm_90) gives its forward 252 registers (2 blocks an
 * SM against tc-pipe's 3, each warp twice the products per fragment load),
 * dq 230 (2, as tc-pipe's 193), dk/dv 168 (3, against tc-pipe's 231: 2).
 * At head_dim 128 the forward takes two blocks of rows too, its tiles in
 * two parts (255 registers; the online softmax steps 16 keys at a time),
 * and dq and dk/dv are tc-pipe's (Q's and dO's fragments would not fit
 * twice; parts save dk/dv nothing). */
template <int HD, int KIND> struct tc_shape {
    static constexpr bool pipe = KIND != TC_PLAIN;
    static constexpr int bk = HD == 64 ? 64 : 32;
    static constexpr bool wide = KIND == TC_WIDE && HD == 64;
    static constexpr int fwd_m = KIND == TC_WIDE ? 2 : 1;   /* 16-row blocks a warp, forward */
    static constexpr int fwd_parts = KIND == TC_WIDE && HD == 128 ? 2 : 1;
    static constexpr int m = wide ? 2 : 1;       /* 16-row blocks a warp, dq */
    static constexpr int parts = wide ? 4 : 1;   /* of a tile's scores, dq */
    /* and dk/dv's: quarters for tc-wide (168 registers with its bounds
     * checks: 3 blocks an SM); halves for tc's at head_dim 128, which
     * spills 12 bytes whole (ptxas 13.0) */
    static constexpr int kv_parts = wide ? 4 : KIND == TC_PLAIN && HD == 128 ? 2 : 1;
    static constexpr bool in_place = KIND == TC_WIDE;   /* bf16 operands read where they are */
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
        tc_copies(&B, t, nt, s0, q, q_stride, NULL, 0, n_heads, n_kv, HD, K::in_place);
        attn_args A = {};
        int tiles = attn_describe(&A, t, nt, s0, per_query_tc(K::fwd_m));
        LAUNCH((k_flash_fwd_tc<HD, K::bk, K::pipe, K::fwd_m, K::fwd_parts, K::in_place, TO>), dim3(tiles, n_heads), 128)(
            out, out_stride, A, B, n_heads / n_kv, scale);
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
        tc_copies(&B, t, nt, s0, q, q_stride, dout, dout_stride, n_heads, n_kv, HD, K::in_place);
        attn_args A = {};
        int nq = attn_describe(&A, t, nt, s0, PER_QUERY);
        const TO *dO = (const TO *)dout, *O = (const TO *)out;
        if (rows_by4(dO, dout_stride) && rows_by4(O, out_stride))
            LAUNCH((k_attn_delta4<HD, TO>), dim3(nq, (n_heads * delta_lanes<HD> + 127) / 128), 128)(
                D, dO, dout_stride, O, out_stride, A, n_heads);
        else
            LAUNCH(k_attn_delta<TO>, dim3(nq, (n_heads + DELTA_HEADS - 1) / DELTA_HEADS), dim3(32, DELTA_HEADS))(
                D, dO, dout_stride, O, out_stride, A, n_heads, HD);
        LAUNCHED("attention_bwd (D, tensor cores)");
        int tiles = attn_describe(&A, t, nt, s0, per_query_tc(K::m));
        LAUNCH((k_flash_bwd_dq_tc<HD, K::bk, K::pipe, K::m, K::parts, K::in_place, TO>), dim3(tiles, n_heads), 128)(
            dq, q_stride, D, A, B, n_heads / n_kv, scale);
        LAUNCHED(tc_dq_name[KIND]);
        int ktiles = attn_describe(&A, t, nt, s0, PER_KEY_TC);
        LAUNCH((k_flash_bwd_dkv_tc<HD, K::bk, K::pipe, K::kv_parts, K::in_place>), dim3(ktiles, n_heads), 128)(
            D, A, B, n_heads / n_kv, scale);
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
