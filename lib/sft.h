/* Supervised fine-tuning: the NLL of response tokens given the prompt, as the
 * mean over the step's response tokens (prompt tokens masked). */
#ifndef RLFLOW_SFT_H
#define RLFLOW_SFT_H
#include <stddef.h>
#include <stdint.h>

#include "train.h"

struct sft_example { size_t prompt, response; int plen, rlen; };

struct sft_data {
    struct sft_example *ex;
    size_t n, cap;
    int32_t *ids;
    size_t n_ids, cap_ids;
    size_t truncated;
};
/* Add an example, shortened to max_len as train_fit() says. */
void sft_data_add(struct sft_data *d, const int32_t *prompt, int plen, const int32_t *resp, int rlen,
                  int max_len, int max_prompt);
void sft_data_free(struct sft_data *d);

struct sft_task {
    struct train_task task;
    const struct sft_data *data;
    struct train_batch buf;    /* a micro-batch's buffers */
};
/* pack_tokens > 0: micro-batches hold as many examples as fit in so many
 * tokens (packing; each example keeps its own causal mask and positions). */
void sft_task_init(struct sft_task *t, const struct sft_data *data, size_t pack_tokens);
void sft_task_free(struct sft_task *t);
#endif
