/* The CUDA backend's split decode attention (RL_CUDA_DECODE=split): decode
 * steps (at most DEC_MAX_N queries per sequence) attended in the manner of
 * flash-decoding.
 *
 * The per-query kernel (cuda_attn_kernels.cu) gives each (query, head) one
 * block whose 4 warps walk the whole context: at batch 1 a layer is only
 * n_heads blocks, each a long chain of dependent reads, and the query heads
 * of a group read the same K and V rows once each (through L2, 8 times for
 * TinyLlama's groups). Here a block takes one query row, one kv head and
 * one split of the keys: the group's query heads (up to DEC_MAX_GROUP) share
 * every K and V row read, and a long context is spread over up to
 * DEC_MAX_SPLITS blocks. Each warp runs an online softmax over its keys
 * (lanes over head_dim, as the per-query kernel), the block merges its warps,
 * and a second kernel merges the splits, all in a fixed order.
 *
 * The split depends on the sequence's context length alone (dec_splits), so
 * a row's result does not depend on the batch: decoding stays
 * batch-invariant. No n x ctx scratch is used. */
#include "cuda_attention.cuh"

#define DEC_T (DEC_MAX_HD / 32)    /* head_dim elements per lane */

/* Where the split's partial result for one (row, head) starts: the
 * running max m, the sum l of exp(s - m), and o = sum of exp(s - m) v,
 * unnormalised (hd + 2 floats). */
__device__ static inline size_t dec_part(size_t block, int g, int n_kv, int group, int hh, int hd)
{
    return (((size_t)block * n_kv + g) * group + hh) * (size_t)(hd + 2);
}

/* A block per (query row i of a sequence, split c; kv head blockIdx.y).
 * KV: how the keys and values are stored, TQ the queries (float, or
 * unsigned short for bf16: a bf16 cache, bf16 activations) */
template <class KV, class TQ>
__global__ static void k_decode_split(float *part, const TQ *q, int q_stride, attn_args A, int n_kv, int group,
                                      int hd, float scale)
{
    __shared__ float qs[DEC_MAX_GROUP][DEC_MAX_HD];
    __shared__ float wm[DEC_WARPS][DEC_MAX_GROUP], wl[DEC_WARPS][DEC_MAX_GROUP];
    __shared__ float wo[DEC_WARPS][DEC_MAX_GROUP][DEC_MAX_HD];
    int si = find_seq(A, blockIdx.x), g = blockIdx.y;
    const bk_attn_seq &S = A.s[si];
    int ctx = S.pos + S.n, splits = dec_splits(ctx), per = (ctx + splits - 1) / splits;
    int local = blockIdx.x - A.first[si], i = local / splits, c = local % splits;
    int len = S.pos + i + 1, k0 = c * per, k1 = k0 + per < len ? k0 + per : len;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int x = threadIdx.x; x < group * hd; x += blockDim.x)
        qs[x / hd][x % hd] = get(q, (size_t)(S.row + i) * q_stride + (size_t)(g * group + x / hd) * hd + x % hd);
    __syncthreads();
    const KV *kg = (const KV *)S.k + (size_t)g * hd, *vg = (const KV *)S.v + (size_t)g * hd;
    float m[DEC_MAX_GROUP], l[DEC_MAX_GROUP], o[DEC_MAX_GROUP][DEC_T];
#pragma unroll
    for (int h = 0; h < DEC_MAX_GROUP; h++) {
        m[h] = -INFINITY, l[h] = 0;
#pragma unroll
        for (int t = 0; t < DEC_T; t++)
            o[h][t] = 0;
    }
    for (int j = k0 + w; j < k1; j += DEC_WARPS) {
        float kj[DEC_T], vj[DEC_T];
#pragma unroll
        for (int t = 0; t < DEC_T; t++) {
            int d = lane + 32 * t;
            kj[t] = d < hd ? get(kg + (size_t)j * S.kv_stride, d) : 0.0f;
            vj[t] = d < hd ? get(vg + (size_t)j * S.kv_stride, d) : 0.0f;
        }
#pragma unroll
        for (int h = 0; h < DEC_MAX_GROUP; h++) {
            if (h >= group)
                break;
            float dot = 0;
#pragma unroll
            for (int t = 0; t < DEC_T; t++)
                if (lane + 32 * t < hd)
                    dot = fmaf(qs[h][lane + 32 * t], kj[t], dot);
            float s = scale * warp_sum_f(dot), mn = fmaxf(m[h], s);
            float corr = expf(m[h] - mn), p = expf(s - mn);
            m[h] = mn;
            l[h] = l[h] * corr + p;
#pragma unroll
            for (int t = 0; t < DEC_T; t++)
                o[h][t] = fmaf(p, vj[t], o[h][t] * corr);
        }
    }
    /* the warps' results merged in warp order */
#pragma unroll
    for (int h = 0; h < DEC_MAX_GROUP; h++) {
        if (h >= group)
            break;
        if (lane == 0)
            wm[w][h] = m[h], wl[w][h] = l[h];
#pragma unroll
        for (int t = 0; t < DEC_T; t++)
            if (lane + 32 * t < hd)
                wo[w][h][lane + 32 * t] = o[h][t];
    }
    __syncthreads();
    for (int x = threadIdx.x; x < group * hd; x += blockDim.x) {
        int h = x / hd, d = x % hd;
        float M = -INFINITY, L = 0, O = 0;
        for (int ww = 0; ww < DEC_WARPS; ww++)
            M = fmaxf(M, wm[ww][h]);
        for (int ww = 0; ww < DEC_WARPS && M > -INFINITY; ww++) {
            float e = expf(wm[ww][h] - M);
            L = fmaf(wl[ww][h], e, L);
            O = fmaf(wo[ww][h][d], e, O);
        }
        float *pt = part + dec_part(blockIdx.x, g, n_kv, group, h, hd);
        if (d == 0)
            pt[0] = M, pt[1] = L;
        pt[2 + d] = O;
    }
}

/* A block per (query row, head): the splits merged in order; out and lse
 * written as the per-query kernel writes them. */
template <class TO>
__global__ static void k_decode_merge(TO *out, int out_stride, const float *part, attn_args A, int n_kv, int group,
                                      int hd)
{
    int b = blockIdx.x / (n_kv * group), h = blockIdx.x % (n_kv * group), si = find_seq(A, b);
    const bk_attn_seq &S = A.s[si];
    int i = b - A.first[si], splits = dec_splits(S.pos + S.n);
    size_t first = 0;                 /* the sequence's first split block (k_decode_split's grid) */
    for (int s = 0; s < si; s++)
        first += (size_t)A.s[s].n * dec_splits(A.s[s].pos + A.s[s].n);
    size_t blk = first + (size_t)i * splits;
    int g = h / group, hh = h % group;
    const float *p0 = part + dec_part(blk, g, n_kv, group, hh, hd);
    size_t step = (size_t)n_kv * group * (hd + 2);      /* from one split's block to the next */
    float M = -INFINITY, L = 0;
    for (int c = 0; c < splits; c++)
        M = fmaxf(M, p0[c * step]);
    for (int c = 0; c < splits; c++)
        L = fmaf(p0[c * step + 1], expf(p0[c * step] - M), L);
    TO *oi = out + (size_t)(S.row + i) * out_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float O = 0;
        for (int c = 0; c < splits; c++)
            O = fmaf(p0[c * step + 2 + d], expf(p0[c * step] - M), O);
        put(oi, d, O / L);
    }
    if (S.lse && threadIdx.x == 0)
        S.lse[(size_t)h * S.n + i] = M + logf(L);
}

bool attn_decode_applies(int n, int hd, int group) { return n <= DEC_MAX_N && hd <= DEC_MAX_HD && group <= DEC_MAX_GROUP; }

/* q and out as stored: T (float, or unsigned short for bf16 activations) */
template <class T>
static void decode_as(T *out, int out_stride, const T *q, int q_stride, const struct bk_attn_seq *s, int n_seq,
                      int n_heads, int n_kv, int hd, float scale)
{
    int group = n_heads / n_kv;
    for (int s0 = 0; s0 < n_seq; s0 += ATTN_SEQS) {
        attn_args A = {};
        int blocks = attn_describe(&A, s, n_seq, s0, PER_QUERY_SPLIT);
        if (!blocks)
            continue;
        float *part = (float *)workspace(WS_DECODE, (size_t)blocks * n_heads * (hd + 2) * sizeof(float));
        if (s[s0].kv_bf16)
            LAUNCH((k_decode_split<unsigned short, T>), dim3(blocks, n_kv), 32 * DEC_WARPS)(part, q, q_stride, A, n_kv,
                                                                                          group, hd, scale);
        else
            LAUNCH((k_decode_split<float, T>), dim3(blocks, n_kv), 32 * DEC_WARPS)(part, q, q_stride, A, n_kv, group,
                                                                                 hd, scale);
        LAUNCHED("attention (split decode)");
        int rows = attn_describe(&A, s, n_seq, s0, PER_QUERY);
        LAUNCH(k_decode_merge<T>, rows * n_heads, 32)(out, out_stride, part, A, n_kv, group, hd);
        LAUNCHED("attention (split decode, merge)");
    }
}

/* The sequences of s, all with kv_bf16 equal, each one attn_decode_applies to. */
void attn_decode(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s, int n_seq,
                 int n_heads, int n_kv, int hd, float scale)
{
    same_kind("attention", q, out);
    as_stored(q, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        decode_as((T *)out, out_stride, (const T *)q, q_stride, s, n_seq, n_heads, n_kv, hd, scale);
    });
}
