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
 * and the last block of a query row and kv head to finish merges the
 * splits (last_block: no second launch), all in a fixed order.
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

/* The splits of query row i (whose first split block is blk) merged in
 * order for the group of kv head g, by the last of its blocks to finish;
 * out and lse written as the per-query kernel writes them. */
template <class TQ>
__device__ static void decode_merge(TQ *out, int out_stride, const float *part, const bk_attn_seq &S, int i,
                                    size_t blk, int splits, int g, int n_kv, int group, int hd)
{
    size_t step = (size_t)n_kv * group * (hd + 2);      /* from one split's block to the next */
    for (int x = threadIdx.x; x < group * hd; x += blockDim.x) {
        int hh = x / hd, d = x % hd, h = g * group + hh;
        const float *p0 = part + dec_part(blk, g, n_kv, group, hh, hd);
        float M = -INFINITY, L = 0, O = 0;
        for (int c = 0; c < splits; c++)
            M = fmaxf(M, __ldcg(p0 + c * step));
        for (int c = 0; c < splits; c++) {
            float e = expf(__ldcg(p0 + c * step) - M);
            L = fmaf(__ldcg(p0 + c * step + 1), e, L);
            O = fmaf(__ldcg(p0 + c * step + 2 + d), e, O);
        }
        put(out + (size_t)(S.row + i) * out_stride + (size_t)h * hd, d, O / L);
        if (S.lse && d == 0)
            S.lse[(size_t)h * S.n + i] = M + logf(L);
    }
}

/* A block per (query row i of a sequence, split c; kv head blockIdx.y).
 * KV: how the keys and values are stored, TQ the queries and the output
 * (float, or unsigned short for bf16: a bf16 cache, bf16 activations).
 * count: a zeroed counter per (row of out, kv head). */
template <class KV, class TQ>
__global__ static void k_decode_split(TQ *out, int out_stride, float *part, unsigned *count, const TQ *q, int q_stride,
                                      attn_args A, int n_kv, int group, int hd, float scale)
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
    if (last_block(count + (size_t)(S.row + i) * n_kv + g, splits))
        decode_merge(out, out_stride, part, S, i, blockIdx.x - c, splits, g, n_kv, group, hd);
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
        size_t rows = 0;                 /* the rows of out this launch writes, for their counters */
        for (int i = 0; i < A.n_seq; i++)
            rows = (size_t)(A.s[i].row + A.s[i].n) > rows ? (size_t)(A.s[i].row + A.s[i].n) : rows;
        unsigned *count = zeroed_counters(CNT_DECODE, rows * n_kv);
        if (s[s0].kv_bf16)
            LAUNCH((k_decode_split<unsigned short, T>), dim3(blocks, n_kv), 32 * DEC_WARPS)(
                out, out_stride, part, count, q, q_stride, A, n_kv, group, hd, scale);
        else
            LAUNCH((k_decode_split<float, T>), dim3(blocks, n_kv), 32 * DEC_WARPS)(out, out_stride, part, count, q,
                                                                                 q_stride, A, n_kv, group, hd, scale);
        LAUNCHED("attention (split decode)");
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
