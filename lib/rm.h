/* Bradley-Terry reward models: a Llama-family backbone with a scalar head on
 * the last token (LlamaForSequenceClassification, score.weight [1, hidden]),
 * trained on pairs with loss -log sigmoid(r_chosen - r_rejected - margin). */
#ifndef RLFLOW_RM_H
#define RLFLOW_RM_H
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "train.h"

/* A causal LM directory becomes a reward model (its weights, minus the LM
 * head, plus score.weight ~ N(0, initializer_range) from `seed`); an RM
 * directory opens as it is. NULL with rl_err. */
struct model *rm_open(const char *dir, const char *device, uint64_t seed);
/* The reward model check every scorer needs: a score head with one label. */
int rm_check(const struct model *m, const char *dir);

/* Pairs for training: the two whole sequences (prompt + response, already
 * left-truncated) and a margin. */
struct rm_pair { size_t chosen, rejected; int clen, rlen; double margin; };
struct rm_data {
    struct rm_pair *pair;
    size_t n, cap;
    int32_t *ids;
    size_t n_ids, cap_ids;
    size_t truncated;
};
/* Sequences longer than max_len lose tokens from the left (the response end
 * is what the score reads): the prompt shrinks first. */
void rm_data_add(struct rm_data *d, const int32_t *prompt, int plen, const int32_t *chosen, int clen,
                 const int32_t *rejected, int rlen, double margin, int max_len);
void rm_data_free(struct rm_data *d);

struct rm_task {
    struct train_task task;
    const struct rm_data *data;
    const struct rm_data *eval;   /* held-out pairs, or NULL */
    uint64_t seed;
    int *tokens, *len;
    float *dscore;
    size_t cap_tok, cap_seq;
};
void rm_task_init(struct rm_task *t, const struct rm_data *data, const struct rm_data *eval, uint64_t seed);

/* Scores of n whole sequences (token ids packed back to back), in batches. */
int rm_score(struct model *m, int n, const int *len, const int *tokens, double *out);
void rm_task_free(struct rm_task *t);

/* Left-truncation for scoring one prompt + response: how many prompt tokens
 * (and then response tokens) to skip so that the total fits max_len. */
void rm_fit_left(int plen, int rlen, int max_len, int *skip_prompt, int *skip_resp);
#endif
