/* Best-of-n sampling with a KV cache (rl-gen). Each prompt is prefilled once
 * and its cache copied to its n samples; decoding runs one batch across all
 * live samples of all prompts, and a finished sample's slot takes the next
 * waiting sample at once (continuous batching): a prompt's samples need not
 * start together, the later ones fork from a slot that holds its prompt.
 * Sample j of record `id` draws from an RNG seeded by hash(seed, id, j), and
 * the model computes every slot independently of the others, so the output
 * depends on neither the batch size, the thread count, nor how the input
 * was split. */
#ifndef RLFLOW_GEN_H
#define RLFLOW_GEN_H
#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "rec.h"
#include "sample.h"
#include "tokrule.h"

struct gen_opts {
    int n;                       /* samples per prompt */
    struct sampler sampler;
    int max_new;                 /* new tokens per sample */
    int max_prompt;              /* longer prompts keep their end (or fail with strict) */
    bool strict;
    const int32_t *stop_ids;     /* besides the model's EOS ids */
    int n_stop_ids;
    char *const *stop_strs;
    int n_stop_strs;
    uint64_t seed;
    int batch;                   /* KV-cache slots: samples decoded together */
    bool unordered;              /* write records as they complete */
    bool host_sampling;          /* draw on the host from downloaded logits (benchmarks) */
    bool quiet;
};

struct gen_stats {
    uint64_t records, samples, tokens, prompt_tokens, truncated_prompts;
    uint64_t prefills;           /* prompts run through the model */
    uint64_t steps, rows;        /* decode steps, and the samples they advanced */
    double seconds;
    size_t kv_bytes;             /* the KV cache's size */
    bool kv_bf16;                /* its values in bf16 (a GPU in bf16 mode), else fp32 */
};

/* Generate for every record of `in`, writing to `out`. 0, or -1 with rl_err;
 * on a bad record every earlier record is finished and written first. */
int gen_run(struct model *m, struct tok_ctx *tc, const struct gen_opts *o, struct rec_reader *in,
            struct rec_writer *out, struct gen_stats *stats);

/* The stop ids of a model directory: config.json's eos_token_id and
 * generation_config.json's, deduplicated, appended to *ids (n, cap). */
int gen_model_stop_ids(const char *dir, const struct model_config *cfg, int32_t **ids, int *n);
#endif
