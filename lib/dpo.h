/* Direct preference optimization losses and the DPO training task.
 *
 * For a pair with policy log-probs pc, pr and reference log-probs rc, rr
 * (sums over response tokens, prompt masked):
 *   delta = (pc - pr) - (rc - rr),  z = beta * delta
 *   sigmoid  L = -(1-eps) log sigmoid(z) - eps log sigmoid(-z)     (DPO; eps: label smoothing, cDPO)
 *   hinge    L = max(0, 1 - z)                                        (SLiC)
 *   ipo      L = (delta_avg - 1/(2 beta))^2, with delta_avg built from log-probs
 *            averaged over each response's tokens, as TRL's DPO trainer does for IPO
 *   nll_coef adds nll_coef * (-pc / |chosen|): the chosen response's mean token NLL (RPO).
 * The batch loss is the mean over pairs. */
#ifndef RLFLOW_DPO_H
#define RLFLOW_DPO_H
#include <stddef.h>
#include <stdint.h>

#include "train.h"

enum dpo_loss { DPO_SIGMOID, DPO_HINGE, DPO_IPO };

struct dpo_params {
    enum dpo_loss loss;
    double beta, label_smoothing, nll_coef;
};

/* One pair's loss and its derivatives by the summed policy log-probs. */
struct dpo_terms {
    double loss, dpc, dpr;
    double reward_chosen, reward_rejected;   /* beta * (p - ref), sums */
};
void dpo_pair_loss(const struct dpo_params *p, double pc, double pr, double rc, double rr,
                   int len_c, int len_r, struct dpo_terms *out);
int dpo_loss_parse(const char *s, enum dpo_loss *out);

/* Pairs in one arena of token ids. */
struct dpo_pair {
    size_t prompt, chosen, rejected;        /* offsets into ids */
    int plen, clen, rlen;
    double ref_chosen, ref_rejected;
};
struct dpo_data {
    struct dpo_pair *pair;
    size_t n, cap;
    int32_t *ids;
    size_t n_ids, cap_ids;
    size_t truncated;                        /* pairs shortened to fit max_length */
};
/* Add a pair; the prompt keeps its end to fit max_prompt, then responses keep
 * their start to fit max_len (the rule of TRL's DPO trainer). */
void dpo_data_add(struct dpo_data *d, const int32_t *prompt, int plen, const int32_t *chosen, int clen,
                  const int32_t *rejected, int rlen, double ref_c, double ref_r, int max_len, int max_prompt);
void dpo_data_free(struct dpo_data *d);
uint64_t dpo_data_hash(const struct dpo_data *d);

/* The train_task for rl-dpo over `data` (both must outlive the task). */
struct dpo_task {
    struct train_task task;
    struct dpo_params params;
    const struct dpo_data *data;
    struct train_batch buf;    /* a micro-batch's buffers */
};
void dpo_task_init(struct dpo_task *t, const struct dpo_data *data, const struct dpo_params *p);
void dpo_task_free(struct dpo_task *t);
#endif
