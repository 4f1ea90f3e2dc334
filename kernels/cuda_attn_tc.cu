/* The CUDA backend's attention on tensor cores (bf16 mode, head_dim 64):
 * FlashAttention-2's scheme with WMMA bf16 products and fp32 accumulation:
 * a block of 4 warps takes TC_BR = 64 queries of one head, warp w the rows
 * 16w..16w+15; the keys they see come in tiles of TC_BC = 32 through shared
 * memory as bf16. Per tile a warp computes its 16 x 32 scores on the tensor
 * cores, updates the online softmax in shared memory (lane pair 2r, 2r+1
 * owns row r, sixteen columns each), and adds P V to its output rows, which
 * live in shared memory because the softmax rescales them by row. Nothing
 * n x ctx is stored. Q, K, V (and dO) are first copied once as bf16,
 * head-major and zero-padded to whole tiles (k_pack), so that every
 * fragment loads straight from global memory: the warps run without block
 * barriers. Inputs are rounded to bf16, as the GEMMs of bf16 mode round theirs. */
#include "cuda_attention.cuh"

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

/* The bf16 head-major copies of Q (and dO when given), K and V for the
 * sequences t[s0 .. s0 + ATTN_SEQS) (nt in all), in the WS_TCB workspace. */
static void tc_copies(tc_bf16 *B, const struct bk_attn_seq *t, int nt, int s0, const float *q, int q_stride,
                      const float *dout, int dout_stride, int n_heads, int n_kv)
{
    int end = nt < s0 + ATTN_SEQS ? nt : s0 + ATTN_SEQS;
    size_t total = 0;
    for (int i = s0; i < end; i++)
        total += (size_t)((dout ? 2 : 1) * n_heads * padded(t[i].n) + 2 * n_kv * padded(t[i].pos + t[i].n)) * TC_HD;
    unsigned short *cp = (unsigned short *)workspace(WS_TCB, total * sizeof(unsigned short));
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
            LAUNCH_OVER(n, k_pack<unsigned short>, "attention (bf16 copies)", cp, c[j].src, c[j].rows, c[j].pad,
                        TC_HD, c[j].stride, TC_HD, n);
            *c[j].dst = (const __nv_bfloat16 *)cp;     /* the same bits */
            cp += n;
        }
    }
}

void attn_tc_fwd(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *t,
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
void attn_tc_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q, const float *out,
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

