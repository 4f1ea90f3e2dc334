/* The compute backend: the small set of operations the model, the sampler and
 * the trainer are written in (DESIGN.md "Compute library"). The CPU backend
 * (backend_cpu.c) uses OpenBLAS sgemm for every matmul and OpenMP for the rest;
 * the CUDA backend (kernels/, rlflow-cuda.so) implements the same table with
 * device pointers.
 *
 * Conventions: fp32, row-major; a [n, d] matrix has rows of d floats (a row
 * stride is given where an op works on a column slice, e.g. one head of a
 * packed [tokens, heads*head_dim] matrix). Ops never allocate; "+=" in a
 * comment means the op accumulates into its output (gradients), otherwise it
 * overwrites. Every buffer an op reads or writes, the int arrays (ids,
 * targets, positions, row indices) included, comes from bk->alloc and may not
 * be touched by the host unless bk->host: data crosses with upload and
 * download. Only the bk_attn_seq array itself is host memory (a description
 * of the call, read by the backend's host code). */
#ifndef RLFLOW_BACKEND_H
#define RLFLOW_BACKEND_H
#include <stdbool.h>
#include <stddef.h>

struct sampler;                  /* lib/sample.h */

/* One sequence's slice of an attention call. Queries are rows [row, row+n)
 * of q/out; they sit at absolute positions pos..pos+n-1 and attend causally
 * to key rows 0..pos+i of k/v: n_kv*head_dim floats every kv_stride (the
 * packed batch activations in training, a KV-cache slot in generation).
 * kv_bf16: k and v point at bf16 values (the bits of 2-byte elements; the
 * stride counts elements), a KV cache of a backend whose kv_bf16 is set;
 * attention and kv_append only, never the backward. */
struct bk_attn_seq {
    int row, n, pos, kv_stride;
    bool kv_bf16;
    const float *k, *v;
    float *dk, *dv;       /* backward: += (rows every kv_stride, like k/v) */
    float *p;             /* scratch [n_heads][n][pos+n] for the probabilities */
    float *dp;            /* backward scratch laid out like p */
    float *lse;           /* [n_heads][n] log-sum-exp of each row of scores:
                             written by the forward; the backward recomputes
                             the probabilities from it (no n^2 per layer kept) */
};

struct backend {
    const char *name;
    bool host;                             /* buffers are host memory (the CPU) */
    const char *detail;                    /* e.g. the GPU and the GEMM mode; may be NULL */
    int head_chunk_mb;                     /* MB of LM-head logits the model computes at once */
    /* The model's KV caches hold bf16 (half the memory, and half the bytes
     * a decode step reads of them); the backend's attention and kv_append
     * then take bk_attn_seq.kv_bf16. The CUDA backend's bf16 mode. */
    bool kv_bf16;
    /* The model's activations (the residual stream, the norms', attention's
     * and the MLP's outputs, and their gradients) are stored as bf16: the
     * model allocates them in a range it gives mark_acts, with 2-byte
     * elements, and passes them to the ops as (float *) like every buffer;
     * the backend knows them by address and reads and writes them as bf16
     * (to nearest, ties to even), computing in fp32. Any other buffer of an
     * op (parameters, gradients of parameters, logits, log-probs, norms'
     * 1/rms, scratch) stays fp32. Where an op is given one of each (a
     * product of activations into a parameter's gradient, a copy), each is
     * read or written in its own type. The CUDA backend's bf16 mode. */
    bool act_bf16;
    void (*mark_acts)(const void *p, size_t bytes);   /* NULL unless act_bf16; forgotten when p is freed */
    /* matmul's rows are batch-invariant where a is not transposed (ta
     * false, as in every product of the forward): row i of c depends on
     * row i of a, on b and on the other sizes and pitches, never on m (one
     * algorithm for every m, k never split). A batch-invariant model then
     * issues one product for a run of sequences instead of one per
     * sequence. The CUDA backend's RL_CUDA_GEMM=pinned; sgemm's rows do
     * depend on m. */
    bool matmul_invariant;
    void *(*alloc)(size_t bytes);          /* zeroed; NULL on failure */
    void (*free)(void *p);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*zero)(float *x, size_t n);
    /* device to device, n elements; from or to activations (act_bf16) it
     * converts, else it copies the bits */
    void (*copy)(float *dst, const float *src, size_t n);
    /* Optional (NULL where a backend has no use for it): the n floats at w
     * are read by many matmuls and written only by upload, copy, zero,
     * scale, matmul, adamw, or as the output of rmsnorm or swiglu (after any
     * other write, call this again): parameters, and the saved activations
     * that a backward reads again. The CUDA backend keeps
     * a bf16 copy of them for the products of its bf16 mode, rounded once
     * per write instead of once per product: the products' values stay the
     * same. Forgotten when w is freed. */
    void (*mark_params)(const float *w, size_t n);

    /* c = alpha * op(a) @ op(b) + beta * c; op(a) is [m,k], op(b) is [k,n];
     * ta/tb: a/b are stored transposed. */
    void (*matmul)(bool ta, bool tb, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb,
                   float beta, float *c, int ldc);

    /* c[m, n] = a[m, k] @ b[n, k]^T for a few rows, each element one dot
     * product in a fixed order: a row's result never depends on m or on the
     * other rows (sgemm's does), so batched decoding stays batch-invariant.
     * In the CUDA backend's bf16 mode, with b marked as parameters, the
     * products are bf16 (tensor cores) like the mode's other products. */
    void (*matmul_rows)(float *c, const float *a, const float *b, int m, int n, int k);

    /* y = x * w / sqrt(mean(x^2) + eps) per row of d; rstd[n] saved */
    void (*rmsnorm)(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps);
    /* dx += d/dx, dw += d/dw, given dy, the input x and the saved rstd */
    void (*rmsnorm_bwd)(float *dx, float *dw, const float *dy, const float *x,
                        const float *w, const float *rstd, int n, int d);
    /* x += r, then rmsnorm(y, rstd, x, w): the residual add and the norm
     * that reads its sum in one pass (one launch instead of two in a decode
     * step), with the bits of add() followed by rmsnorm(). x is written like
     * add's output (never marked as parameters); y like rmsnorm's. */
    void (*add_rmsnorm)(float *y, float *rstd, float *x, const float *r, const float *w, int n, int d,
                        float eps);

    /* Rotate-half RoPE in place on n rows of n_heads heads (row stride
     * `stride`); row i is at position pos[i]; cos/sin tables [pos][head_dim/2].
     * inverse: rotate by -angle (the backward of the forward rotation). */
    void (*rope)(float *x, int stride, const int *pos, int n, int n_heads, int head_dim,
                 const float *cos, const float *sin, bool inverse);

    /* Causal grouped-query attention with softmax scale `scale`:
     * out[row+i, h] = softmax_j(q_i . k_j * scale) v_j; s->lse saved when set. */
    void (*attention)(float *out, int out_stride, const float *q, int q_stride,
                      const struct bk_attn_seq *s, int n_seq,
                      int n_heads, int n_kv, int head_dim, float scale);
    /* Generation: write each sequence's n new K and V rows (rows s->row..
     * of k_src / v_src, src_stride apart, kv_dim floats each) to positions
     * s->pos.. of its cache rows s->k / s->v (kv_stride apart) — the one op
     * that writes through s->k and s->v. One call per layer and step. With
     * s->kv_bf16 each value is rounded to bf16 (to nearest, ties to even). */
    void (*kv_append)(const struct bk_attn_seq *s, int n_seq, const float *k_src, const float *v_src,
                      int src_stride, int kv_dim);
    /* Generation's RoPE and kv_append in one pass: for each row r of the
     * sequences (rows s->row.. of each), rope() of its n_heads q heads and
     * n_kv k heads (adjacent at the row's start, q first; stride floats a
     * row; position pos[r]), then kv_append() of the rotated k and of v
     * (the n_kv heads after k) into the caches: the bits of those two ops. */
    void (*rope_kv_append)(float *qkv, int stride, const int *pos, int n_heads, int n_kv, int head_dim,
                           const float *cos, const float *sin, const struct bk_attn_seq *s, int n_seq);
    /* Whether attention (or, backward, attention_bwd) on a sequence of n
     * queries over ctx keys uses the s->p (and s->dp) scratch; the model
     * allocates it only for the sequences that do (it is n x ctx per head:
     * 8 GB per layer for one 8k-token sequence of 32 heads). A backend that
     * is given the scratch for a sequence may use it or not. */
    bool (*attn_scratch)(int n, int ctx, int n_heads, int head_dim, bool backward);
    /* dq = d/dq (overwritten; q's row stride), s->dk/dv +=; out is the
     * forward's output (out_stride as given to it; a tiled backward takes
     * rowsum(dout * out) from it instead of from the probabilities) */
    void (*attention_bwd)(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                          const float *out, int out_stride, const struct bk_attn_seq *s, int n_seq,
                          int n_heads, int n_kv, int head_dim, float scale);

    /* SwiGLU on n rows of gu = [gate (f) | up (f)]: h [n, f] = silu(gate) * up;
     * and its backward: dgu [n, 2f] = [d gate | d up] (overwritten) */
    void (*swiglu)(float *h, const float *gu, int n, int f);
    void (*swiglu_bwd)(float *dgu, const float *dh, const float *gu, int n, int f);
    /* matmul_rows(gu, a, b, m, 2f, k) then swiglu(h, gu, m, f): a decode
     * step's gate|up product and its SwiGLU, with the bits of the two ops.
     * gu is the product's scratch, of h's kind, and may be left unwritten
     * (the CUDA backend's streamed rows pair the gate and up columns in the
     * product's epilogue: one launch, and no gu written or read). */
    void (*matmul_rows_swiglu)(float *h, float *gu, const float *a, const float *b, int m, int f, int k);

    /* dst row k = src row idx[k]; and dst row idx[k] += src row k (the idx
     * of one call are distinct): the LM head's rows of the packed batch */
    void (*gather_rows)(float *dst, const float *src, const int *idx, int n, int d);
    void (*scatter_add_rows)(float *dst, const float *src, const int *idx, int n, int d);

    void (*add)(float *y, const float *x, size_t n);                    /* y += x */
    void (*add_bias)(float *y, const float *b, int n, int d);           /* each row += b */
    void (*bias_bwd)(float *db, const float *dy, int n, int d);         /* db += column sums */
    void (*embed)(float *x, const float *table, const int *ids, int n, int d);
    void (*embed_bwd)(float *dtable, const float *dx, const int *ids, int n, int d); /* += */

    /* Per row of n logits rows [n, v]: lse[r] = logsumexp, and for
     * targets[r] >= 0 logp[r] = logit[target] - lse (else 0). */
    void (*logsoftmax)(float *lse, float *logp, const float *logits, const int *targets, int n, int v);
    /* In place: logits row r -> g[r] * (onehot(target) - softmax) = d loss / d logits
     * for d loss / d logp[r] = g[r] (rows with target < 0 get zeros). */
    void (*logsoftmax_bwd)(float *logits, const float *lse, const int *targets, const float *g, int n, int v);
    /* Sampling (rl-gen): row r of logits [n, v] gives tok[r] =
     * sample_draw(c, row, v, u[r]) (lib/sample.h: greedy at temperature <= 0,
     * else temperature, top-k, top-p and min-p, then the first kept token
     * whose running sum of probabilities exceeds u[r] times their total) and
     * logp1[r], the token's temperature-1 log-softmax. Only n ids and n
     * log-probs cross to the host instead of n x v logits. c is host memory.
     * The CPU's is sample_draw itself; a device's sums run in another order,
     * so where u, or the top-p mass, falls within rounding of a boundary
     * between two tokens, the other one may be picked. */
    void (*sample_rows)(int *tok, double *logp1, const float *logits, const double *u, int n, int v,
                        const struct sampler *c);

    /* Optional (NULL where launches cost the host nothing worth saving):
     * the ops called from graph_begin to graph_end may be recorded and run
     * as one unit at graph_end (the CUDA backend's RL_CUDA_GRAPHS: a decode
     * step as one CUDA graph instead of a launch per kernel), with the
     * results they would have had one by one. Any op may come between the
     * two; one that must wait for the device (a download, an allocation)
     * first runs what was recorded, and the rest runs as it comes. */
    void (*graph_begin)(void);
    void (*graph_end)(void);

    double (*sumsq)(const float *x, size_t n);          /* sum of squares, in double */
    void (*scale)(float *x, float a, size_t n);
    /* One AdamW update of n parameters (torch.optim.AdamW semantics) with
     * the gradient g*gscale (gscale: the clipping coefficient, folded in so
     * that clipping costs no pass of its own; the product is rounded to fp32
     * first, as scale() then adamw() would round it):
     * w -= lr*wd*w; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
     * w -= (lr/bc1) * m / (sqrt(v)/bc2_sqrt + eps). */
    void (*adamw)(float *w, const float *g, float gscale, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float wd,
                  double bc1, double bc2_sqrt);
};

extern const struct backend backend_cpu;
/* The CPU backend behind pointers the host cannot dereference (test device
 * "devsim"): any host access to backend memory the model makes crashes, so the
 * CPU test suite proves the model moves data only through upload/download. */
extern const struct backend backend_devsim;

/* The backend named `name`: "cpu", "cuda" (built with nvcc and a GPU
 * present), "devsim", or "auto" / NULL: $RL_DEVICE when set, else cuda when
 * a GPU is usable, else cpu. NULL with rl_err set when unknown or unusable. */
const struct backend *backend_get(const char *name);

/* rlflow-cuda.so's entry point. Its name carries the table's version, one
 * more whenever an op is added, removed or changes its meaning (2: softmax
 * became sample_rows; 3: sample_rows takes the warpers; 4: bf16 KV caches;
 * 5: bf16 activations; 6: adamw takes a gradient scale; 7: add_rmsnorm
 * and rope_kv_append; 8: matmul_rows_swiglu; 9: matmul_invariant; 10:
 * graph_begin and graph_end): a
 * library built from another version has another name and is refused, where a check of the table's size alone would let
 * a same-sized table with other ops through. */
#define RL_CUDA_ENTRY rlflow_cuda_backend_v10
#define RL_STR_(x) #x
#define RL_STR(x) RL_STR_(x)

/* The CUDA backend, or NULL with rl_err saying why (not built, no device,
 * driver error). It lives in rlflow-cuda.so (kernels/, built when nvcc is
 * found), loaded on first use from $RL_CUDA_LIB or beside the program. */
const struct backend *backend_cuda_get(void);
/* The GPU benchmarks' ceiling: TFLOP/s of an m x n x k cuBLAS GEMM, bf16 in
 * and out (bf16_io) or fp32 in and out in the backend's GEMM mode. -1 when
 * there is no CUDA backend. */
double backend_cuda_gemm_tflops(int m, int n, int k, bool bf16_io);
/* The CUDA backend's launches so far (its kernels and its cuBLAS calls,
 * one each), and the microseconds a launch takes when n empty kernels run
 * back to back: a decode step's launch floor. -1 without a CUDA backend. */
long long backend_cuda_launches(void);
double backend_cuda_launch_us(int n);
/* The CUDA backend's graphs so far (RL_CUDA_GRAPHS): launched, of those
 * updated in place and instantiated, and captures ended early because an
 * op had to wait for the device. false without a CUDA backend. */
struct cuda_graph_stats { long long launched, updated, instantiated, paused; };
bool backend_cuda_graph_stats(struct cuda_graph_stats *s);
#endif
