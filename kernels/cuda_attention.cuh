/* What the CUDA backend's attention files share: the launch description of
 * an attention call (up to ATTN_SEQS sequences travel as a kernel
 * parameter), and the routes' entry points. cuda_attention.cu picks a route
 * per sequence: the tensor cores (cuda_attn_tc.cu), cuBLAS
 * (cuda_attn_cublas.cu), or the fp32 kernels (cuda_attn_kernels.cu). */
#ifndef RLFLOW_CUDA_ATTENTION_CUH
#define RLFLOW_CUDA_ATTENTION_CUH
#include "cuda_common.cuh"

#define MAX_HD 256            /* head_dim limit of the attention kernels */
#define ATTN_WARPS 4
#define ATTN_SEQS 32          /* sequences per attention launch (kernel parameter space) */
#define FA_ROWS 8             /* tiled attention: query rows per warp, */
#define FA_BR (FA_ROWS * ATTN_WARPS)   /* per block, */
#define FA_HD 128             /* and the largest head_dim it takes (else the per-query one) */
#define FB_BC 16              /* tiled backward: keys per block (4 per warp) */

#define TC_BR 64                      /* the tensor-core kernels: rows per block (queries; keys in dk/dv) */
#define TC_BR_WIDE 128                /* queries per block of tc-wide's forward and dq */

/* the split decode kernel (cuda_attn_decode.cu): sequences of up to
 * DEC_MAX_N queries, head_dim up to DEC_MAX_HD, up to DEC_MAX_GROUP query
 * heads per kv head; a context of ctx keys is cut into dec_splits(ctx)
 * splits of at least DEC_MIN_KEYS keys (but at most DEC_MAX_SPLITS), a
 * function of ctx alone (batch invariance) */
#define DEC_MAX_N 4
#define DEC_MAX_HD 128
#define DEC_MAX_GROUP 8
#define DEC_WARPS 4
#define DEC_MIN_KEYS 64
#define DEC_MAX_SPLITS 16
__host__ __device__ static inline int dec_splits(int ctx)
{
    int s = (ctx + DEC_MIN_KEYS - 1) / DEC_MIN_KEYS;
    return s < 1 ? 1 : s > DEC_MAX_SPLITS ? DEC_MAX_SPLITS : s;
}

struct attn_args {
    int n_seq;
    int first[ATTN_SEQS + 1];       /* prefix sums of the block rows per sequence */
    struct bk_attn_seq s[ATTN_SEQS];  /* the call's descriptions, copied to the kernel's parameters */
};

__device__ static inline int find_seq(const attn_args &A, int b)
{
    int s = 0;
    while (s + 1 < A.n_seq && A.first[s + 1] <= b)
        s++;
    return s;
}

/* Fill the launch description for the (at most ATTN_SEQS) sequences from s0
 * on; `per` says what a block takes of a sequence (a query, a key, a tile
 * of either). Returns the number of blocks. */
enum { PER_QUERY, PER_KEY, PER_QUERY_TILE, PER_KEY_TILE, PER_QUERY_TC, PER_QUERY_TC_WIDE, PER_KEY_TC, PER_QUERY_SPLIT };
static inline int attn_describe(attn_args *A, const struct bk_attn_seq *s, int n_seq, int s0, int per)
{
    int cnt = n_seq - s0 < ATTN_SEQS ? n_seq - s0 : ATTN_SEQS;
    A->n_seq = cnt;
    A->first[0] = 0;
    for (int i = 0; i < cnt; i++) {
        const struct bk_attn_seq *x = &s[s0 + i];
        A->s[i] = *x;
        int blocks = per == PER_KEY ? x->pos + x->n
                   : per == PER_QUERY ? x->n
                   : per == PER_QUERY_TILE ? (x->n + FA_BR - 1) / FA_BR
                   : per == PER_KEY_TILE ? (x->pos + x->n + FB_BC - 1) / FB_BC
                   : per == PER_QUERY_TC ? (x->n + TC_BR - 1) / TC_BR
                   : per == PER_QUERY_TC_WIDE ? (x->n + TC_BR_WIDE - 1) / TC_BR_WIDE
                   : per == PER_QUERY_SPLIT ? x->n * dec_splits(x->pos + x->n)
                                         : (x->pos + x->n + TC_BR - 1) / TC_BR;
        A->first[i + 1] = A->first[i] + blocks;
    }
    return A->first[cnt];
}

/* the fp32 kernels: the tiled ones for n > 4 queries (and every backward)
 * unless RL_CUDA_ATTN=simple, else the per-query ones with the scratch */
bool attn_use_tiled(int n, int hd, bool backward);
void attn_kernels(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s, int n_seq,
                  int n_heads, int n_kv, int hd, float scale);
void attn_bwd_kernels(float *dq, int q_stride, const float *dout, int dout_stride, const float *q, const float *out,
                      int out_stride, const struct bk_attn_seq *s, int n_seq, int n_heads, int n_kv, int hd,
                      float scale);
void attn_kv_append(const struct bk_attn_seq *s, int n_seq, const float *k_src, const float *v_src, int src_stride,
                    int kv_dim);
void attn_rope_kv_append(float *qkv, int stride, const int *pos, int nh, int nkv, int hd, const float *cs,
                         const float *sn, const struct bk_attn_seq *s, int n_seq);
/* the split decode kernel, for the sequences it applies to (all with one kv_bf16) */
bool attn_decode_applies(int n, int hd, int group);
void attn_decode(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s, int n_seq,
                 int n_heads, int n_kv, int hd, float scale);
/* cuBLAS, one sequence (its scratch given) */
void attn_gemm_fwd(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *x, int nh,
                   int nkv, int hd, float scale);
void attn_gemm_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                   const struct bk_attn_seq *x, int nh, int nkv, int hd, float scale);
/* the tensor cores, where attn_tc_applies(head_dim) (the backward points t[i].p at scratch of its own) */
bool attn_tc_applies(int hd);
/* which tensor-core kernels: tc's (tiles through the registers), tc-pipe's
 * (cp.async; auto's, AUTO_TC_KIND) or tc-wide's (tc-pipe's with 128-query
 * blocks and halved score tiles) */
enum tc_kind { TC_PLAIN, TC_PIPE, TC_WIDE };
int attn_tc_kind(void);
void attn_tc_fwd(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *t, int nt,
                 int n_heads, int n_kv, int hd, float scale);
void attn_tc_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q, const float *out,
                 int out_stride, struct bk_attn_seq *t, int nt, int n_heads, int n_kv, int hd, float scale);
#endif
