#include "weights_layout.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Per-layer tensors in order, with the suffix after "model.layers.{i}." */
static const struct { enum hf_role role; const char *suffix; } layer_tensors[] = {
    {HF_ATTN_NORM, "input_layernorm.weight"},
    {HF_Q, "self_attn.q_proj.weight"},       {HF_Q_BIAS, "self_attn.q_proj.bias"},
    {HF_K, "self_attn.k_proj.weight"},       {HF_K_BIAS, "self_attn.k_proj.bias"},
    {HF_V, "self_attn.v_proj.weight"},       {HF_V_BIAS, "self_attn.v_proj.bias"},
    {HF_O, "self_attn.o_proj.weight"},       {HF_O_BIAS, "self_attn.o_proj.bias"},
    {HF_MLP_NORM, "post_attention_layernorm.weight"},
    {HF_GATE, "mlp.gate_proj.weight"},       {HF_GATE_BIAS, "mlp.gate_proj.bias"},
    {HF_UP, "mlp.up_proj.weight"},           {HF_UP_BIAS, "mlp.up_proj.bias"},
    {HF_DOWN, "mlp.down_proj.weight"},       {HF_DOWN_BIAS, "mlp.down_proj.bias"},
};
#define N_LAYER_ROLES (int)(sizeof layer_tensors / sizeof *layer_tensors)

static bool has_role(const struct model_config *c, enum hf_role r)
{
    switch (r) {
    case HF_Q_BIAS: case HF_K_BIAS: case HF_V_BIAS: return c->attention_bias;
    case HF_O_BIAS: return c->o_bias;
    case HF_GATE_BIAS: case HF_UP_BIAS: case HF_DOWN_BIAS: return c->mlp_bias;
    case HF_LM_HEAD: return c->head == HEAD_LM && !c->tie_word_embeddings;
    case HF_SCORE: return c->head == HEAD_SCORE;
    default: return true;
    }
}

int hf_layer_tensor_count(const struct model_config *c)
{
    int n = 0;
    for (int k = 0; k < N_LAYER_ROLES; k++)
        n += has_role(c, layer_tensors[k].role);
    return n;
}

int hf_tensor_count(const struct model_config *c)
{
    return 1 + c->num_hidden_layers * hf_layer_tensor_count(c) + 1 + has_role(c, HF_LM_HEAD) +
           has_role(c, HF_SCORE);
}

static void set_shape(const struct model_config *c, struct hf_tensor *t)
{
    int64_t h = c->hidden_size, q = (int64_t)c->num_attention_heads * c->head_dim,
            kv = (int64_t)c->num_key_value_heads * c->head_dim, f = c->intermediate_size,
            v = c->vocab_size;
    int64_t s[2] = {0, 0};
    int nd = 2;
    switch (t->role) {
    case HF_EMBED: case HF_LM_HEAD: s[0] = v, s[1] = h; break;
    case HF_SCORE: s[0] = c->num_labels, s[1] = h; break;
    case HF_ATTN_NORM: case HF_MLP_NORM: case HF_FINAL_NORM: case HF_O_BIAS: case HF_DOWN_BIAS:
        nd = 1, s[0] = h; break;
    case HF_Q: s[0] = q, s[1] = h; break;
    case HF_Q_BIAS: nd = 1, s[0] = q; break;
    case HF_K: case HF_V: s[0] = kv, s[1] = h; break;
    case HF_K_BIAS: case HF_V_BIAS: nd = 1, s[0] = kv; break;
    case HF_O: s[0] = h, s[1] = q; break;
    case HF_GATE: case HF_UP: s[0] = f, s[1] = h; break;
    case HF_GATE_BIAS: case HF_UP_BIAS: nd = 1, s[0] = f; break;
    case HF_DOWN: s[0] = h, s[1] = f; break;
    }
    t->ndim = nd;
    t->shape[0] = s[0];
    t->shape[1] = nd == 2 ? s[1] : 0;
    t->numel = nd == 2 ? s[0] * s[1] : s[0];
    if (t->role == HF_ATTN_NORM || t->role == HF_MLP_NORM || t->role == HF_FINAL_NORM)
        t->init = HF_INIT_ONES;
    else
        t->init = nd == 1 ? HF_INIT_ZEROS : HF_INIT_NORMAL;
}

void hf_tensor_info(const struct model_config *c, int i, struct hf_tensor *t)
{
    memset(t, 0, sizeof *t);
    t->layer = -1;
    int per = hf_layer_tensor_count(c), nl = c->num_hidden_layers;
    if (i == 0) {
        t->role = HF_EMBED;
        snprintf(t->name, sizeof t->name, "model.embed_tokens.weight");
    } else if (i <= nl * per) {
        int l = (i - 1) / per, k = (i - 1) % per, r = 0;
        for (;; r++)                       /* the k-th role this config has */
            if (has_role(c, layer_tensors[r].role) && k-- == 0)
                break;
        t->role = layer_tensors[r].role;
        t->layer = l;
        snprintf(t->name, sizeof t->name, "model.layers.%d.%s", l, layer_tensors[r].suffix);
    } else if (i == nl * per + 1) {
        t->role = HF_FINAL_NORM;
        snprintf(t->name, sizeof t->name, "model.norm.weight");
    } else {
        t->role = has_role(c, HF_LM_HEAD) ? HF_LM_HEAD : HF_SCORE;
        snprintf(t->name, sizeof t->name, t->role == HF_LM_HEAD ? "lm_head.weight" : "score.weight");
    }
    set_shape(c, t);
}

void hf_tensor_spec(const struct model_config *c, int i, char name[HF_NAME_MAX], int *ndim, int64_t shape[2])
{
    struct hf_tensor t;
    hf_tensor_info(c, i, &t);
    memcpy(name, t.name, HF_NAME_MAX);
    *ndim = t.ndim;
    shape[0] = t.shape[0];
    shape[1] = t.shape[1];
}

int hf_tensor_find(const struct model_config *c, const char *name)
{
    int n = hf_tensor_count(c), per = hf_layer_tensor_count(c), l, off = 0;
    /* Jump straight to the layer's block rather than formatting every name. */
    if (sscanf(name, "model.layers.%d.%n", &l, &off) == 1 && off > 0) {
        if (l < 0 || l >= c->num_hidden_layers)
            return -1;
        for (int k = 0; k < per; k++) {
            struct hf_tensor t;
            hf_tensor_info(c, 1 + l * per + k, &t);
            if (strcmp(t.name, name) == 0)
                return 1 + l * per + k;
        }
        return -1;
    }
    int rest[] = {0, n - 1, n - 2};
    for (int k = 0; k < 3; k++) {
        struct hf_tensor t;
        hf_tensor_info(c, rest[k], &t);
        if (rest[k] >= 0 && strcmp(t.name, name) == 0)
            return rest[k];
    }
    return -1;
}

int64_t hf_param_count(const struct model_config *c)
{
    int64_t total = 0;
    int n = hf_tensor_count(c);
    for (int i = 0; i < n; i++) {
        struct hf_tensor t;
        hf_tensor_info(c, i, &t);
        total += t.numel;
    }
    return total;
}
