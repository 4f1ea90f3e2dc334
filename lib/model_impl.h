/* Internals shared by model.c, model_fwd.c and model_bwd.c: the activation
 * buffers. Not part of the library's interface. */
#ifndef RLFLOW_MODEL_IMPL_H
#define RLFLOW_MODEL_IMPL_H
#include "model.h"

/* The activation buffers (struct layer_acts and the backward's d*) hold
 * bf16 where the backend stores activations so (bk->act_bf16: 2-byte
 * elements behind the float pointers), else fp32; act_at steps through them
 * in either. The statistics beside them (rstd, lse), the log-probs, the
 * logits and the attention scratch are fp32 always. */
static inline size_t act_size(const struct model *m) { return m->bk->act_bf16 ? 2 : sizeof(float); }
static inline float *act_at(const struct model *m, const float *p, size_t i)
{
    return (float *)((const char *)p + i * act_size(m));
}

/* What one layer's forward leaves behind for its backward (training), or the
 * single reused set (inference). Rows are tokens of the packed batch. */
struct layer_acts {
    float *x;           /* [T, H] residual stream entering the layer */
    float *xn1, *rstd1; /* [T, H], [T] input_layernorm output and 1/rms */
    float *qkv;         /* [T, qkv_dim]: q | k | v per row (q, k after RoPE) */
    float *lse;         /* [T * n_heads] log-sum-exp per query row and head ([seq][head][n]) */
    float *att;         /* [T, q_dim] attention output before o_proj */
    float *x2;          /* [T, H] residual after attention */
    float *xn2, *rstd2; /* post_attention_layernorm */
    float *gu;          /* [T, 2F]: gate | up per row */
    float *h;           /* [T, F] silu(gate) * up */
};

struct model_acts {
    /* capacities of the current allocation */
    int T_cap, seq_cap, layers_cap, Tc;
    size_t p_cap;
    bool train_cap, logits_cap;
    void *mem;                  /* one backend allocation for all float buffers */
    size_t saved_bytes;         /* the first of them: xn1, xn2 and h of every layer */
    size_t act_bytes;           /* the activations, from mem on (model.c layout_acts) */
    struct layer_acts *layer;   /* [layers_cap] */
    float *xf, *rstd_f, *hf;    /* [T, H] final residual, 1/rms, normed hidden */
    float *logp;                /* [T] log-prob per token (0 without target) */
    float *lse, *glogp;         /* [T] per LM-head row (rows[k]): logsumexp, log-prob */
    float *chunk, *hg, *dhg;    /* [Tc, V], [Tc, H] x2: the LM head works Tc rows at a time */
    float *logits;              /* [T, V] only with MODEL_LOGITS */
    float *scores;              /* [seq_cap, num_labels] */
    float *dscore;              /* [seq_cap, num_labels] d loss / d score, uploaded by the backward */
    float *p;                   /* attention probabilities of one layer (scratch): sum over
                                   sequences of heads * n * (pos + n) */
    /* backward scratch (train only) */
    float *dx, *dxn, *dhf, *dqkv, *datt, *dh, *dgu;
    float *dp;                  /* attention backward scratch, like p */
    float *stage;               /* [T, H] fp32: an upload on its way into activations */

    /* host-side integer bookkeeping (one allocation) */
    void *imem;
    int *tokens, *targets, *pos;          /* [T] */
    int *rows, *gtargets;                 /* [T] the LM head's rows and their targets */
    int *chunk_start, *chunk_len;         /* [T] the LM head's chunks of rows */
    int *seq_row, *seq_len, *seq_pos;     /* [seq_cap] */
    struct bk_attn_seq *seqs;             /* [seq_cap] */

    /* The int arrays the ops read, in backend memory: a copy of tokens,
     * pos, rows and gtargets uploaded after each plan (the host arrays
     * themselves when bk->host). */
    void *dimem;
    int *d_tokens, *d_pos, *d_rows, *d_gtargets;
    void *draw_mem;             /* model_step_draw's uniforms, log-probs and ids */
    int draw_cap;
    /* Host memory for results and the backward's inputs when the backend's
     * is not (else NULL and the backend buffers are used directly). */
    float *hmem;
    float *h_logp, *h_scores, *h_g;       /* [T], [seq_cap, num_labels], [T] */
    float *h_logits;                      /* [T, V] with logits_cap */

    /* the last forward */
    int T, n_seq, n_rows;       /* n_rows: rows with targets (the LM head's work) */
    int n_chunks;
    bool train, has_targets;
};

/* Make room for a forward of T tokens in n_seq sequences needing p floats of
 * attention probabilities (one layer's). 0 or -1 with rl_err. */
int model_acts_reserve(struct model *m, int T, int n_seq, size_t p, bool train, bool logits);
/* Floats of attention scratch (bk_attn_seq p, and dp) a sequence of n new
 * tokens after pos cached ones needs in the forward (backward: false) or the
 * backward: n_heads * n * (pos + n) where the backend uses it, else 0. */
size_t model_attn_scratch(const struct model *m, int n, int pos, bool backward);
/* Grow the RoPE tables to cover positions [0, n). */
int model_rope_reserve(struct model *m, int n);
void model_acts_free(struct model *m);
/* LM head rows a->rows[k0..k0+n): gather their hidden states into a->hg and
 * compute their logits into a->chunk [n, V]. */
void model_head_logits(struct model *m, int k0, int n);
/* Fill a->rows / gtargets / chunk_* for the LM head (all rows or targets
 * only), and their backend copies. */
void model_head_plan(struct model *m, bool all_rows);
/* Copy n ints to the backend copy dev of host array host (nothing on the CPU). */
void model_ints_upload(const struct model *m, int *dev, const int *host, int n);
#endif
