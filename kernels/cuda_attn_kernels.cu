/* The CUDA backend's fp32 attention kernels: per query (decode steps,
 * RL_CUDA_ATTN=simple) and tiled (FlashAttention's scheme on the SIMT
 * cores), each with its backward, and the KV-cache append. The per-query ones:
 * One block (ATTN_WARPS warps) per (query row, head) in the forward and the
 * first backward kernel, one per (key row, kv head) in the second. Warps take
 * keys (or queries) in turn; the lanes of a warp cover head_dim, so each row
 * of K, V, Q or dO is read coalesced. Scores and probabilities go through the
 * caller's scratch s->p / s->dp ([head][n][pos+n] per sequence), so the
 * context length has no limit but memory. */
#include "cuda_attention.cuh"

/* The dot of a row held in shared memory with a global row (fp32, or a
 * bf16 KV cache's), over one warp. */
template <class T> __device__ static float warp_dot(const float *sh, const T *g, int hd)
{
    float acc = 0;
    for (int d = threadIdx.x & 31; d < hd; d += 32)
        acc = fmaf(sh[d], get(g, d), acc);
    return warp_sum_f(acc);
}

/* out[hd] = sum_j c[j] rows[j*stride][d] over j in [j0, j1): warps take j in
 * turn, lanes take d; partial sums meet in shared memory in a fixed order. */
template <class T>
__device__ static void weighted_rows(float *out_sh, const float *c, const T *rows, int stride, int j0, int j1, int hd)
{
    __shared__ float part[ATTN_WARPS][MAX_HD];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    float acc[MAX_HD / 32];
#pragma unroll
    for (int t = 0; t < MAX_HD / 32; t++)
        acc[t] = 0;
    for (int j = j0 + w; j < j1; j += ATTN_WARPS) {
        float cj = c[j];
        const T *r = rows + (size_t)j * stride;
#pragma unroll
        for (int t = 0; t < MAX_HD / 32; t++)
            if (lane + 32 * t < hd)
                acc[t] = fmaf(cj, get(r, lane + 32 * t), acc[t]);
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

/* A block per (query row, head), the heads of a row next to each other in
 * the grid: the query heads of a group run side by side and read their
 * K and V rows through L2 once (a decode step of 64 sequences read them
 * from memory once per head, eight times for TinyLlama's groups). KV:
 * float, or unsigned short for a bf16 KV cache (decode steps read it as
 * it is: its bytes are most of what a long context's step reads). */
template <class KV>
__global__ static void k_attention(float *out, int out_stride, const float *q, int q_stride, attn_args A,
                                   int nh, int group, int hd, float scale)
{
    __shared__ float qs[MAX_HD], os[MAX_HD];
    int b = blockIdx.x / nh, h = blockIdx.x % nh, si = find_seq(A, b), g = h / group;
    const bk_attn_seq &S = A.s[si];
    int i = b - A.first[si], ctx = S.pos + S.n, len = S.pos + i + 1;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const float *qi = q + (size_t)(S.row + i) * q_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qs[d] = qi[d];
    __syncthreads();
    float *pr = S.p + ((size_t)h * S.n + i) * ctx;
    const KV *kg = (const KV *)S.k + (size_t)g * hd, *vg = (const KV *)S.v + (size_t)g * hd;
    float mx = -INFINITY;
    for (int j = w; j < len; j += ATTN_WARPS) {
        float s = scale * warp_dot(qs, kg + (size_t)j * S.kv_stride, hd);
        if (lane == 0)
            pr[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx);            /* its barriers also publish pr[] to the block */
    double sum = block_exp_sum(pr, len, mx);
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
    const bk_attn_seq &S = A.s[si];
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
    const bk_attn_seq &S = A.s[si];
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
    const bk_attn_seq &S = A.s[si];
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
            float mnew = fmaxf(m[r], warp_max(x));
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
    const bk_attn_seq &S = A.s[si];
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
    const bk_attn_seq &S = A.s[si];
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

void attn_kernels(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s,
                         int n_seq, int n_heads, int n_kv, int hd, float scale)
{
    for (int s0 = 0; s0 < n_seq; s0 += ATTN_SEQS) {
        attn_args A = {};
        int most = 0;
        for (int i = s0; i < n_seq && i < s0 + ATTN_SEQS; i++)
            most = s[i].n > most ? s[i].n : most;
        if (attn_use_tiled(most, hd, false)) {
            int tiles = attn_describe(&A, s, n_seq, s0, PER_QUERY_TILE);
            if (tiles)
                LAUNCH(k_flash_fwd, dim3(tiles, n_heads), 32 * ATTN_WARPS)(out, out_stride, q, q_stride, A,
                                                                       n_heads / n_kv, hd, scale);
            LAUNCHED("attention (tiled)");
            continue;
        }
        int rows = attn_describe(&A, s, n_seq, s0, PER_QUERY);
        if (rows && s[s0].kv_bf16)
            LAUNCH(k_attention<unsigned short>, rows * n_heads, 32 * ATTN_WARPS)(out, out_stride, q, q_stride, A,
                                                                             n_heads, n_heads / n_kv, hd, scale);
        else if (rows)
            LAUNCH(k_attention<float>, rows * n_heads, 32 * ATTN_WARPS)(out, out_stride, q, q_stride, A, n_heads,
                                                                    n_heads / n_kv, hd, scale);
        LAUNCHED("attention");
    }
}

/* One block per new row: copy its K and V rows into the sequence's cache
 * (T: float, or unsigned short for a bf16 cache; TS, the new rows': float,
 * or unsigned short for bf16 activations). */
template <class T, class TS>
__device__ static void append_row(T *k, T *v, const TS *ks, const TS *vs, int kv_dim)
{
    for (int d = threadIdx.x; d < kv_dim; d += blockDim.x) {
        put(k, d, get(ks, d));
        put(v, d, get(vs, d));
    }
}
/* Row i of sequence S, its k and v at ks and vs, into S's cache */
template <class TS>
__device__ static void append_to_cache(const bk_attn_seq &S, int i, const TS *ks, const TS *vs, int kv_dim)
{
    size_t dst = (size_t)(S.pos + i) * S.kv_stride;
    if (S.kv_bf16)
        append_row((unsigned short *)S.k + dst, (unsigned short *)S.v + dst, ks, vs, kv_dim);
    else
        append_row((float *)S.k + dst, (float *)S.v + dst, ks, vs, kv_dim);
}
template <class TS>
__global__ static void k_kv_append(attn_args A, const TS *k_src, const TS *v_src, int src_stride, int kv_dim)
{
    int si = find_seq(A, blockIdx.x);
    int i = blockIdx.x - A.first[si];
    size_t src = (size_t)(A.s[si].row + i) * src_stride;
    append_to_cache(A.s[si], i, k_src + src, v_src + src, kv_dim);
}
/* launch(A, rows) for each launch's worth of the sequences (ATTN_SEQS), a
 * block per new row: kv_append's and rope_kv_append's grids */
template <class F> static void per_row_launches(const char *name, const struct bk_attn_seq *s, int n_seq, F launch)
{
    for (int s0 = 0; s0 < n_seq; s0 += ATTN_SEQS) {
        attn_args A = {};
        int rows = attn_describe(&A, s, n_seq, s0, PER_QUERY);
        if (rows)
            launch(A, rows);
        LAUNCHED(name);
    }
}
void attn_kv_append(const struct bk_attn_seq *s, int n_seq, const float *k_src, const float *v_src,
                         int src_stride, int kv_dim)
{
    same_kind("kv_append", k_src, v_src);
    as_stored(k_src, [&](auto *t) {
        using TS = stored_t<decltype(t)>;
        per_row_launches("kv_append", s, n_seq, [&](const attn_args &A, int rows) {
            LAUNCH(k_kv_append<TS>, rows, 128)(A, (const TS *)k_src, (const TS *)v_src, src_stride, kv_dim);
        });
    });
}

/* rope then kv_append in one launch: a block per new row rotates the row's
 * q and k heads in place (rope_row, rope's own code), and once all its
 * threads have, copies the rotated k and v into the cache. */
template <class TS>
__global__ static void k_rope_kv_append(attn_args A, TS *x, int stride, const int *pos, int nh, int nkv, int hd,
                                        const float *cs, const float *sn)
{
    int si = find_seq(A, blockIdx.x);
    int i = blockIdx.x - A.first[si], r = A.s[si].row + i, half = hd / 2;
    TS *row = x + (size_t)r * stride;
    rope_row(row, nh + nkv, hd, cs + (size_t)pos[r] * half, sn + (size_t)pos[r] * half, 1.0f);
    __syncthreads();
    const TS *ks = row + (size_t)nh * hd;
    append_to_cache(A.s[si], i, ks, ks + (size_t)nkv * hd, nkv * hd);
}
void attn_rope_kv_append(float *qkv, int stride, const int *pos, int nh, int nkv, int hd, const float *cs,
                         const float *sn, const struct bk_attn_seq *s, int n_seq)
{
    as_stored(qkv, [&](auto *t) {
        using TS = stored_t<decltype(t)>;
        per_row_launches("rope_kv_append", s, n_seq, [&](const attn_args &A, int rows) {
            LAUNCH(k_rope_kv_append<TS>, rows, 128)(A, (TS *)qkv, stride, pos, nh, nkv, hd, cs, sn);
        });
    });
}

void attn_bwd_kernels(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                             const float *out, int out_stride, const struct bk_attn_seq *s, int n_seq, int n_heads,
                             int n_kv, int hd, float scale)
{
    for (int s0 = 0; s0 < n_seq; s0 += ATTN_SEQS) {
        attn_args A = {};
        if (attn_use_tiled(0, hd, true)) {
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

