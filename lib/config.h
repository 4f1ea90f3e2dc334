/* A model's config.json (Hugging Face layout) for the Llama family:
 * LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v biases) and
 * LlamaForSequenceClassification (and Qwen2/Mistral sequence-classification
 * variants): the scalar-head reward model. Anything unsupported is an error
 * naming the field. */
#ifndef RLFLOW_CONFIG_H
#define RLFLOW_CONFIG_H
#include <stdbool.h>
#include <stdint.h>

#define CFG_MAX_IDS 8

enum cfg_arch { ARCH_LLAMA, ARCH_MISTRAL, ARCH_QWEN2 };
enum cfg_head { HEAD_LM, HEAD_SCORE };     /* causal LM or scalar score head */
enum cfg_rope { ROPE_DEFAULT, ROPE_LLAMA3 };

struct model_config {
    char architecture[64];        /* as written, e.g. "LlamaForCausalLM" */
    char model_type[32];          /* "llama", "mistral", "qwen2" */
    enum cfg_arch arch;
    enum cfg_head head;
    int num_labels;               /* score head rows (1 for a reward model) */
    int hidden_size, intermediate_size, num_hidden_layers;
    int num_attention_heads, num_key_value_heads, head_dim;
    int vocab_size, max_position_embeddings;
    float rms_norm_eps;
    double rope_theta;
    enum cfg_rope rope_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position;
    bool tie_word_embeddings;
    bool attention_bias;          /* q/k/v (and o when mlp/attention_bias says so) biases */
    bool o_bias;
    bool mlp_bias;
    int bos_token_id, pad_token_id;           /* -1 when absent */
    int eos_token_ids[CFG_MAX_IDS], n_eos;    /* int or list in the file */
    char torch_dtype[16];         /* "bfloat16", "float16", "float32" (default float32) */
    /* Added with the parser (not in the first draft of this header): */
    int sliding_window;           /* attention window, 0 = none (Mistral's sliding_window;
                                     Qwen2's only when use_sliding_window is true) */
    float initializer_range;      /* std of random init (default 0.02) */
};

/* Defaults for architecture `a`, then explicit sizes: a starting point for
 * building a config in code (tests, benchmarks). Strings and ids are set; the
 * caller fills the sizes and calls config_check(). */
void config_defaults(struct model_config *c, enum cfg_arch a, enum cfg_head h);
/* Complete and validate: head_dim 0 becomes hidden/heads, num_key_value_heads 0
 * becomes heads; sizes, divisibility and ids < vocab are checked. -1 with an
 * error naming `what` and the field. config_parse calls it. */
int config_check(struct model_config *c, const char *what);

/* Parse `path` (a config.json). -1 with an error naming the file and field. */
int config_load(const char *path, struct model_config *c);
/* Parse from a JSON string; `what` names it in errors. */
int config_parse(const char *json, const char *what, struct model_config *c);
/* Write a config.json that transformers loads (atomically). */
int config_save(const char *path, const struct model_config *c);
#endif
