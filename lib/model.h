/* The Llama-family transformer (Llama, Mistral, Qwen2, SmolLM; GQA, tied or
 * untied embeddings, q/k/v biases, llama3 RoPE scaling) in fp32 on a backend:
 * loading and saving Hugging Face checkpoints, a batched forward giving
 * per-token log-probs (and, on request, logits or last hidden states), a
 * KV-cache forward for generation, and the backward to every parameter.
 * docs/model.md describes the memory layout and how the backward is built.
 *
 *   m = model_open(dir, "cpu");
 *   model_forward(m, &batch, MODEL_TRAIN);      // m->logp[t], m->scores[s]
 *   model_zero_grad(m); model_backward(m, dlogp, NULL, NULL);   // m->grad
 *   ... optimizer on m->w_mem / m->g_mem (optim.h) ...
 *   model_save(m, outdir); model_close(m); */
#ifndef RLFLOW_MODEL_H
#define RLFLOW_MODEL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "safetensors.h"

/* Pointers into one flat parameter array (weights, gradients) by HF name:
 * linear weights are [out, in] as Hugging Face stores them; absent biases are NULL. */
struct layer_tensors {
    float *ln1;                         /* input_layernorm [H] */
    float *wq, *bq, *wk, *bk, *wv, *bv; /* self_attn.{q,k,v}_proj [heads*hd, H] */
    float *wo, *bo;                     /* self_attn.o_proj [H, heads*hd] */
    float *ln2;                         /* post_attention_layernorm [H] */
    float *wg, *bg, *wu, *bu;           /* mlp.{gate,up}_proj [I, H] */
    float *wd, *bd;                     /* mlp.down_proj [H, I] */
};
struct model_tensors {
    float *embed;              /* model.embed_tokens [V, H] */
    float *norm;               /* model.norm [H] */
    float *lm_head;            /* lm_head [V, H]; == embed when tied; NULL for a score head */
    float *score;              /* score [num_labels, H]; NULL for a causal LM */
    struct layer_tensors *layer;
};

/* One named parameter tensor: where it sits in the flat arrays. */
struct model_param {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t offset, numel;      /* in floats */
    int init, role, layer;     /* weights_layout.h: hf_init, hf_role, layer or -1 */
};

/* A batch of sequences, packed back to back (no padding). targets[t] is the
 * token whose log-prob is wanted at position t (the next token, for a causal
 * LM), -1 for none; targets may be NULL (no log-probs). */
struct model_batch {
    int n_seq;
    const int *len;            /* [n_seq] */
    const int *tokens;         /* [sum len] */
    const int *targets;        /* [sum len] or NULL */
};

enum {
    MODEL_TRAIN = 1,           /* keep every layer's activations for model_backward */
    MODEL_LOGITS = 2,          /* fill m->logits [T, V] (small vocabularies / tests) */
};

struct model_acts;             /* model.c */

struct model {
    struct model_config cfg;
    const struct backend *bk;
    enum st_dtype save_dtype;  /* dtype model_save writes: the source's, unless changed */
    /* true (the default): each sequence's results are bit-identical whatever
     * else is in the batch, in model_forward and model_step alike (one sgemm
     * call per sequence; decode steps through the row-invariant matmul_rows).
     * false: one call for the whole batch, equal to ~1 ulp. */
    bool batch_invariant;
    /* LM-head chunk in rows (0: about 64 MB of logits; set small in tests) */
    int head_rows;
    int H, ffn, L, V, n_heads, n_kv, hd, q_dim, kv_dim, qkv_dim;   /* qkv_dim = q_dim + 2 kv_dim */

    struct model_param *params;
    int *by_offset;            /* params' indices in memory order (biases are laid out after the rest) */
    int n_params_tensors;
    size_t n_params;           /* floats in w_mem (and g_mem): weights, then biases */
    float *w_mem, *g_mem;      /* one allocation each */
    bool grad_unwritten;       /* model_zero_grad has left the layers' matrices to the next backward */
    struct model_tensors w, g;

    /* RoPE tables [rope_len][hd/2] */
    float *rope_cos, *rope_sin;
    int rope_len;

    struct model_acts *acts;

    /* results of the last forward (valid until the next one) */
    int n_tok, n_seq;
    float *logp;               /* [T] log-prob of targets[t] (0 where none); host memory */
    float *hidden;             /* [T, H] last hidden states (after the final norm); backend memory,
                                  bf16 where the backend stores activations so (bk->act_bf16) */
    float *logits;             /* [T, V] with MODEL_LOGITS, else NULL; host memory */
    float *scores;             /* [n_seq, num_labels] score head: at each sequence's last token; host */
};

/* Load config.json and the safetensors weights of a model directory (upcast
 * to fp32). device: a backend_get name ("auto" or NULL, "cpu", "cuda"). NULL with rl_err naming the file
 * and the field or tensor on failure. */
struct model *model_open(const char *dir, const char *device);
/* A model with the given config and zeroed weights (norm weights 1). */
struct model *model_new(const struct model_config *c, const char *device);
void model_close(struct model *m);

/* Write config.json and model.safetensors into dir (created if missing),
 * each file atomically, weights in m->save_dtype. */
int model_save(const struct model *m, const char *dir);

const struct model_param *model_find_param(const struct model *m, const char *name);

/* Forward over a batch; 0, or -1 with rl_err (bad token id, no LM head for
 * targets, out of memory). Each sequence's results depend on it alone. */
int model_forward(struct model *m, const struct model_batch *b, int flags);

/* Backward of the last MODEL_TRAIN forward, accumulating into m->g (the
 * three inputs are host memory):
 * dlogp [T] = d loss / d logp (may be NULL), dscore [n_seq, num_labels] =
 * d loss / d score (score head; may be NULL), dhidden [T, H] = d loss / d
 * last hidden states (may be NULL). */
int model_backward(struct model *m, const float *dlogp, const float *dscore, const float *dhidden);
/* Start a new gradient: the next model_backward's results are the
 * gradient, later ones add to it. The layers' matrices (most of the
 * parameters) are not cleared here: that backward's weight-gradient
 * products write them rather than add to zeros, which saves a pass over
 * them and each product's read of its output. So until a backward has run,
 * their part of g_mem is undefined. */
void model_zero_grad(struct model *m);

/* fn(ctx, off, n, group) for each run of parameter tensors adjacent in
 * w_mem / g_mem on which group() agrees, in memory order: a few long
 * calls (a GPU's launches) over the flat arrays instead of one a tensor. */
void model_param_runs(const struct model *m, int (*group)(const struct model_param *p),
                      void (*fn)(void *ctx, size_t off, size_t n, int group), void *ctx);

/* Sequence log-probs, batched: out[i] = sum over t of log p(resp[i][t] |
 * prompt[i], resp[i][<t]) (the prompt masked; 0 for an empty response).
 * -1 with rl_err naming the sequence (empty prompt, token out of range). */
int model_response_logps(struct model *m, int n, const int *const *prompt, const int *plen,
                         const int *const *resp, const int *rlen, double *out);

/* ---- KV cache for generation ----
 * n_slots independent sequences of up to max_len tokens each. In bf16 on a
 * backend that says kv_bf16 (a GPU in bf16 mode), else fp32. */
struct kv_cache {
    const struct backend *bk;
    int n_slots, max_len, n_layers, kv_dim;
    bool bf16;                 /* values held as bf16 (bk->kv_bf16), else fp32 */
    int *len;                  /* tokens cached per slot */
    void *k, *v;               /* [slot][layer][max_len][kv_dim] */
};
struct kv_cache *kv_cache_new(const struct model *m, int n_slots, int max_len);
void kv_cache_free(struct kv_cache *c);
size_t kv_cache_bytes(const struct kv_cache *c);          /* K and V together */
static inline size_t kv_value_bytes(const struct kv_cache *c) { return c->bf16 ? 2 : 4; }
void kv_cache_clear(struct kv_cache *c, int slot);
/* Fork: slot dst becomes the first len tokens of slot src (len <= its
 * length), e.g. one prompt's prefill shared by n samples; dst == src cuts
 * the slot back to len. */
void kv_cache_fork(struct kv_cache *c, int dst, int src, int len);

/* Feed ntok[i] new tokens (packed in tokens) to slot slots[i] for i < n
 * (distinct slots): prefill when ntok is the prompt length, a decode step
 * when 1. m->hidden holds the new tokens' last hidden states. Writes the
 * logits of each slot's last new token to logits [n, V] (may be NULL; for a
 * score head, the scores [n, num_labels]). -1 with rl_err when a slot would
 * overflow or a token is out of range. */
int model_step(struct model *m, struct kv_cache *c, int n, const int *slots, const int *ntok,
               const int *tokens, float *logits);
/* model_step, then a token drawn on the backend from each slot's last
 * logits, which never leave it (bk->sample_rows): tok[i] is
 * sample_draw(sampler, logits of slot i, u[i]) (lib/sample.h; greedy at
 * temperature <= 0, where u is unused) and logp1[i] its temperature-1
 * log-prob. On a GPU that spares the host n x V floats, their softmax and
 * the warpers' sort per step. LM heads only. */
int model_step_draw(struct model *m, struct kv_cache *c, int n, const int *slots, const int *ntok,
                    const int *tokens, const struct sampler *sampler, const double *u, int *tok, double *logp1);
#endif
