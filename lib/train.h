/* One training loop for rl-dpo, rl-sft and rl-rm: they differ only in their
 * loss, which plugs in as a `train_task`. The loop owns the data order
 * (a seeded permutation per epoch), micro-batching and gradient accumulation,
 * clipping, the AdamW step and LR schedule, one metrics record per optimizer
 * step, atomic checkpoints, and exact resume. docs/training.md has the details. */
#ifndef RLFLOW_TRAIN_H
#define RLFLOW_TRAIN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "optim.h"
#include "rec.h"

struct train_cfg {
    const char *model_dir, *out_dir, *device;
    double lr, weight_decay, max_grad_norm, warmup_ratio;
    enum lr_kind schedule;
    int batch;                   /* examples per optimizer step */
    int micro_batch;             /* examples per forward/backward */
    int epochs;
    long save_every;             /* steps between checkpoints (0: only at the end) */
    long max_steps;              /* stop this run after so many steps, saving (0: no limit) */
    bool resume, keep_state, force, quiet;
    bool batch_gemm;             /* one product per layer for a micro-batch (model.h batch_invariant off) */
    uint64_t seed;
};

/* Named sums that a task adds per example and the loop averages per step. */
#define TRAIN_MAX_METRICS 12
struct train_metrics {
    int n;
    const char *name[TRAIN_MAX_METRICS];
    double sum[TRAIN_MAX_METRICS];
    uint64_t tokens;             /* tokens processed (forward) */
};
void train_metric_add(struct train_metrics *m, const char *name, double v);

struct train_task {
    const char *name;            /* "dpo", "sft", "rm" */
    size_t n_examples;
    uint64_t data_hash;          /* fingerprint of the examples: resume refuses other data */
    /* Forward, loss and backward for examples idx[0..n): gradients accumulate
     * into m->g; `scale` is 1 / (examples in this optimizer step), so that the
     * step's gradient is that of the mean loss. Adds each example's loss
     * (name "loss") and other metrics to acc. -1 with rl_err on failure. */
    int (*micro)(struct train_task *t, struct model *m, const size_t *idx, int n, double scale,
                 struct train_metrics *acc);
    /* An example's weight in the step's mean (NULL: 1 each). SFT weighs by
     * response tokens, so its loss is the mean over the step's tokens. The
     * step's `scale` is 1 / the sum of weights, and metrics are reported
     * divided by it. */
    double (*weight)(struct train_task *t, size_t idx);
    /* Micro-batches by tokens instead of examples (NULL: --micro-batch
     * examples each): the number of tokens example idx puts in a forward. */
    size_t (*tokens)(struct train_task *t, size_t idx);
    size_t micro_tokens;         /* with tokens(): the budget of one micro-batch */
    /* Open the starting model of a fresh run (NULL: model_open). The reward
     * model task turns a causal LM into a sequence classifier here. */
    struct model *(*open)(struct train_task *t, const char *dir, const char *device);
    /* Held-out evaluation (NULL: none), run before the first step of a fresh
     * run and after the last one; it writes its own record to `w`. */
    int (*evaluate)(struct train_task *t, struct model *m, long step, struct rec_writer *w);
    void *ctx;
};

/* Train and write cfg->out_dir; metrics records go to `metrics` (may be NULL).
 * 0, or -1 with rl_err (the last good checkpoint stays in place). */
int train_run(const struct train_cfg *cfg, struct train_task *task, struct rec_writer *metrics);

/* Fit prompt + response(s) into max_len tokens as TRL does: when too long,
 * the prompt keeps its last max_prompt tokens (*skip = tokens dropped from its
 * start), then each response keeps its start. rlen[0..n). True if shortened. */
bool train_fit(int *plen, int *skip, int *rlen, int n, int max_len, int max_prompt);

/* The trainers' AdamW step over a model's parameters: weight decay on
 * matrices only (the Hugging Face Trainer's groups: biases and norm weights
 * are exempt) and the gradient times grad_scale (clip_coef, or 1). Tensors
 * adjacent in memory and in the same group share one update, so that a
 * GPU runs a few long launches, not one per tensor. */
void train_adamw_step(struct adamw *o, struct model *m, float lr, float weight_decay, float grad_scale);

/* A task's micro-batch buffers (host memory), grown as needed: the packed
 * tokens and targets, d loss / d logp per token, and the sequence lengths. */
struct train_batch {
    int *tokens, *targets, *len;
    float *dlogp;
    size_t cap_tok, cap_seq;
};
void train_batch_reserve(struct train_batch *b, size_t ntok, size_t nseq);
void train_batch_free(struct train_batch *b);

/* Training data keep their token ids in one growing arena: append n ids to
 * (*ids, *len, *cap) and return the offset they start at. */
size_t train_ids_append(int32_t **ids, size_t *len, size_t *cap, const int32_t *v, int n);

/* FNV-1a over n bytes, continuing from h (TRAIN_HASH_INIT to start): the
 * fingerprint of a run's data, which --resume checks. */
#define TRAIN_HASH_INIT 0xcbf29ce484222325ull
uint64_t train_hash(uint64_t h, const void *p, size_t n);

/* Copy the tokenizer and generation files of src_dir that exist into dst_dir. */
int train_copy_tokenizer(const char *src_dir, const char *dst_dir);

/* The permutation of n examples used in `epoch` (Fisher-Yates on an RNG
 * seeded by hash(seed, "epoch", epoch)). */
void train_permutation(uint64_t seed, long epoch, size_t n, size_t *perm);
#endif
