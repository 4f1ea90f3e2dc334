/* The tensors of a model as Hugging Face names and shapes them, for a config:
 * the one list that rl-init, the model loader and checkpoint saving share.
 *
 *   model.embed_tokens.weight                      [vocab, hidden]
 *   per layer i (model.layers.{i}.):
 *     input_layernorm.weight                       [hidden]              ones
 *     self_attn.q_proj.weight                      [heads*head_dim, hidden]
 *     self_attn.q_proj.bias    (attention_bias)    [heads*head_dim]      zeros
 *     self_attn.k_proj.weight                      [kv_heads*head_dim, hidden]
 *     self_attn.k_proj.bias    (attention_bias)    [kv_heads*head_dim]
 *     self_attn.v_proj.weight                      [kv_heads*head_dim, hidden]
 *     self_attn.v_proj.bias    (attention_bias)    [kv_heads*head_dim]
 *     self_attn.o_proj.weight                      [hidden, heads*head_dim]
 *     self_attn.o_proj.bias    (o_bias)            [hidden]
 *     post_attention_layernorm.weight              [hidden]              ones
 *     mlp.gate_proj.weight                         [intermediate, hidden]
 *     mlp.up_proj.weight                           [intermediate, hidden]
 *     mlp.down_proj.weight                         [hidden, intermediate]
 *     mlp.{gate,up,down}_proj.bias  (mlp_bias)     [out]
 *   model.norm.weight                              [hidden]              ones
 *   lm_head.weight   (causal LM, untied)           [vocab, hidden]
 *   score.weight     (sequence classification)     [num_labels, hidden]
 *
 * Linear weights are [out, in] (y = x W^T), as torch.nn.Linear stores them.
 * Qwen2 has q/k/v biases and no o bias (config.c sets attention_bias, o_bias).
 * Tied embeddings: no lm_head.weight; the LM head is embed_tokens.
 * Order: embed, layers 0..L-1 (in the order above), final norm, head.
 * Weights are drawn from normal(0, initializer_range) by rl-init; norms are
 * ones and biases zeros (field `init`). */
#ifndef RLFLOW_WEIGHTS_LAYOUT_H
#define RLFLOW_WEIGHTS_LAYOUT_H
#include <stdint.h>

#include "config.h"

#define HF_NAME_MAX 96

enum hf_role {
    HF_EMBED,
    HF_ATTN_NORM, HF_Q, HF_Q_BIAS, HF_K, HF_K_BIAS, HF_V, HF_V_BIAS, HF_O, HF_O_BIAS,
    HF_MLP_NORM, HF_GATE, HF_GATE_BIAS, HF_UP, HF_UP_BIAS, HF_DOWN, HF_DOWN_BIAS,
    HF_FINAL_NORM, HF_LM_HEAD, HF_SCORE,
};
enum hf_init { HF_INIT_NORMAL, HF_INIT_ONES, HF_INIT_ZEROS };

struct hf_tensor {
    char name[HF_NAME_MAX];
    enum hf_role role;
    int layer;               /* 0..L-1 for per-layer tensors, -1 otherwise */
    int ndim;                /* 1 or 2 */
    int64_t shape[2];
    int64_t numel;
    enum hf_init init;
};

/* Number of tensors in the checkpoint for config c. */
int hf_tensor_count(const struct model_config *c);
/* Tensor i (0 <= i < hf_tensor_count) in full. */
void hf_tensor_info(const struct model_config *c, int i, struct hf_tensor *t);
/* Name and shape only. */
void hf_tensor_spec(const struct model_config *c, int i, char name[HF_NAME_MAX], int *ndim, int64_t shape[2]);
/* Index of the tensor called `name`, or -1 when the config has no such tensor. */
int hf_tensor_find(const struct model_config *c, const char *name);
/* Number of tensors per layer, and the total parameter count (all tensors). */
int hf_layer_tensor_count(const struct model_config *c);
int64_t hf_param_count(const struct model_config *c);
#endif
