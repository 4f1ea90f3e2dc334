/* config.json for the Llama family (Hugging Face layout).
 * Defaults are those of transformers' LlamaConfig / MistralConfig / Qwen2Config,
 * so a config that omits a field means what it means to transformers. */
#include "config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsutil.h"

static const struct {
    const char *name;
    enum cfg_arch arch;
    enum cfg_head head;
} archs[] = {
    {"LlamaForCausalLM", ARCH_LLAMA, HEAD_LM},
    {"MistralForCausalLM", ARCH_MISTRAL, HEAD_LM},
    {"Qwen2ForCausalLM", ARCH_QWEN2, HEAD_LM},
    {"LlamaForSequenceClassification", ARCH_LLAMA, HEAD_SCORE},
    {"MistralForSequenceClassification", ARCH_MISTRAL, HEAD_SCORE},
    {"Qwen2ForSequenceClassification", ARCH_QWEN2, HEAD_SCORE},
};
#define N_ARCHS (sizeof archs / sizeof *archs)

static const char *model_types[] = {[ARCH_LLAMA] = "llama", [ARCH_MISTRAL] = "mistral",
                                    [ARCH_QWEN2] = "qwen2"};

/* transformers' max_position_embeddings defaults per architecture */
static const int default_max_pos[] = {[ARCH_LLAMA] = 2048, [ARCH_MISTRAL] = 4096 * 32,
                                      [ARCH_QWEN2] = 32768};

void config_defaults(struct model_config *c, enum cfg_arch a, enum cfg_head h)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_ARCHS; i++)
        if (archs[i].arch == a && archs[i].head == h)
            snprintf(c->architecture, sizeof c->architecture, "%s", archs[i].name);
    snprintf(c->model_type, sizeof c->model_type, "%s", model_types[a]);
    c->arch = a;
    c->head = h;
    c->num_labels = h == HEAD_SCORE ? 1 : 0;
    c->max_position_embeddings = default_max_pos[a];
    c->rms_norm_eps = 1e-6f;
    c->rope_theta = 10000.0;
    c->rope_type = ROPE_DEFAULT;
    c->attention_bias = a == ARCH_QWEN2;     /* Qwen2: q/k/v biases always, o never */
    c->bos_token_id = c->pad_token_id = -1;
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
    c->initializer_range = 0.02f;
}

/* ---- checking ---- */

static int range(const char *what, const char *field, long long v, long long lo, long long hi)
{
    if (v < lo || v > hi)
        return rl_err("%s: %s: %lld out of range [%lld, %lld]", what, field, v, lo, hi);
    return 0;
}

int config_check(struct model_config *c, const char *what)
{
    if (range(what, "hidden_size", c->hidden_size, 1, 1 << 16) ||
        range(what, "intermediate_size", c->intermediate_size, 1, 1 << 20) ||
        range(what, "num_hidden_layers", c->num_hidden_layers, 1, 1024) ||
        range(what, "num_attention_heads", c->num_attention_heads, 1, 1024) ||
        range(what, "vocab_size", c->vocab_size, 1, 1 << 24) ||
        range(what, "max_position_embeddings", c->max_position_embeddings, 1, 1 << 24))
        return -1;
    if (c->num_key_value_heads == 0)
        c->num_key_value_heads = c->num_attention_heads;
    if (range(what, "num_key_value_heads", c->num_key_value_heads, 1, c->num_attention_heads))
        return -1;
    if (c->num_attention_heads % c->num_key_value_heads)
        return rl_err("%s: num_key_value_heads: %d does not divide num_attention_heads %d", what,
                      c->num_key_value_heads, c->num_attention_heads);
    if (c->head_dim == 0) {
        if (c->hidden_size % c->num_attention_heads)
            return rl_err("%s: hidden_size: %d is not a multiple of num_attention_heads %d "
                          "(and head_dim is not given)", what, c->hidden_size, c->num_attention_heads);
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    if (range(what, "head_dim", c->head_dim, 2, 1024))
        return -1;
    if (c->head_dim % 2)
        return rl_err("%s: head_dim: %d is odd (rotary embeddings pair i with i + d/2)", what,
                      c->head_dim);
    if (!(c->rms_norm_eps > 0 && c->rms_norm_eps < 1))
        return rl_err("%s: rms_norm_eps: %g must be in (0, 1)", what, c->rms_norm_eps);
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return rl_err("%s: rope_theta: %g must be positive", what, c->rope_theta);
    if (c->rope_type == ROPE_LLAMA3) {
        if (!(c->rope_factor >= 1 && isfinite(c->rope_factor)))
            return rl_err("%s: rope_scaling.factor: %g must be >= 1", what, c->rope_factor);
        if (!(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
              isfinite(c->rope_high_freq_factor)))
            return rl_err("%s: rope_scaling: need 0 < low_freq_factor (%g) < high_freq_factor (%g)",
                          what, c->rope_low_freq_factor, c->rope_high_freq_factor);
        if (range(what, "rope_scaling.original_max_position_embeddings",
                  c->rope_original_max_position, 1, 1 << 24))
            return -1;
    }
    if (c->head == HEAD_SCORE && range(what, "num_labels", c->num_labels, 1, 1 << 16))
        return -1;
    if (!(c->initializer_range >= 0 && c->initializer_range < 10))
        return rl_err("%s: initializer_range: %g out of range", what, c->initializer_range);
    if (range(what, "sliding_window", c->sliding_window, 0, 1 << 24))
        return -1;
    if (c->bos_token_id >= c->vocab_size)
        return rl_err("%s: bos_token_id: %d is not below vocab_size %d", what, c->bos_token_id, c->vocab_size);
    if (c->pad_token_id >= c->vocab_size)
        return rl_err("%s: pad_token_id: %d is not below vocab_size %d", what, c->pad_token_id, c->vocab_size);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] < 0 || c->eos_token_ids[i] >= c->vocab_size)
            return rl_err("%s: eos_token_id: %d is not in [0, vocab_size %d)", what,
                          c->eos_token_ids[i], c->vocab_size);
    return 0;
}

/* ---- parsing ---- */

struct src {
    const char *what;
    json_t *j;
};

/* Integer field: absent or null -> def (or an error when required). */
static int get_int(struct src *s, const char *key, bool required, int def, int *out)
{
    json_t *v = json_object_get(s->j, key);
    if (!v || json_is_null(v)) {
        if (required)
            return rl_err("%s: %s: missing", s->what, key);
        *out = def;
        return 0;
    }
    double d = json_is_real(v) ? json_real_value(v) : 0;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < -(1LL << 31) || x > (1LL << 31) - 1)
            return rl_err("%s: %s: %lld out of range", s->what, key, (long long)x);
        *out = (int)x;
        return 0;
    }
    if (json_is_real(v) && d == floor(d) && fabs(d) < 2147483647.0) {   /* 8192.0 */
        *out = (int)d;
        return 0;
    }
    return rl_err("%s: %s: not an integer", s->what, key);
}

static int get_num(struct src *s, json_t *obj, const char *key, const char *field, bool required,
                   double def, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return rl_err("%s: %s: missing", s->what, field);
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return rl_err("%s: %s: not a number", s->what, field);
    *out = json_number_value(v);
    return 0;
}

static int get_bool(struct src *s, const char *key, bool def, bool *out)
{
    json_t *v = json_object_get(s->j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return rl_err("%s: %s: not true or false", s->what, key);
    *out = json_is_true(v);
    return 0;
}

/* A token id field: absent, null, an int, or a list of ints (eos in Llama 3).
 * Negative ids mean "none" (old configs write -1). */
static int get_ids(struct src *s, const char *key, int *ids, int max, int *n)
{
    json_t *v = json_object_get(s->j, key);
    *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x > (1LL << 31) - 1)
            return rl_err("%s: %s: %lld out of range", s->what, key, (long long)x);
        if (x >= 0)
            ids[(*n)++] = (int)x;
        return 0;
    }
    if (!json_is_array(v))
        return rl_err("%s: %s: not an integer or a list of integers", s->what, key);
    if ((int)json_array_size(v) > max)
        return rl_err("%s: %s: more than %d ids", s->what, key, max);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > (1LL << 31) - 1)
            return rl_err("%s: %s[%zu]: not a token id", s->what, key, i);
        ids[(*n)++] = (int)json_integer_value(e);
    }
    return 0;
}

static int get_one_id(struct src *s, const char *key, int *out)
{
    int ids[CFG_MAX_IDS], n;
    if (get_ids(s, key, ids, CFG_MAX_IDS, &n) < 0)
        return -1;
    *out = n ? ids[0] : -1;
    return 0;
}

static int parse_arch(struct src *s, struct model_config *c)
{
    json_t *a = json_object_get(s->j, "architectures"), *mt = json_object_get(s->j, "model_type");
    const char *name = NULL;
    if (a && !json_is_null(a)) {
        if (!json_is_array(a) || json_array_size(a) == 0 || !json_is_string(json_array_get(a, 0)))
            return rl_err("%s: architectures: not a non-empty list of names", s->what);
        name = json_string_value(json_array_get(a, 0));
    }
    if (mt && !json_is_string(mt))
        return rl_err("%s: model_type: not a string", s->what);
    const char *type = mt ? json_string_value(mt) : NULL;
    size_t i = 0;
    if (name) {
        while (i < N_ARCHS && strcmp(archs[i].name, name) != 0)
            i++;
        if (i == N_ARCHS)
            return rl_err("%s: architectures: '%.64s' not supported (rlflow runs Llama, Mistral and "
                          "Qwen2 ForCausalLM / ForSequenceClassification)", s->what, name);
    } else {                                  /* no architectures: a causal LM of model_type */
        if (!type)
            return rl_err("%s: architectures: missing (and no model_type)", s->what);
        while (i < N_ARCHS && !(archs[i].head == HEAD_LM && strcmp(model_types[archs[i].arch], type) == 0))
            i++;
        if (i == N_ARCHS)
            return rl_err("%s: model_type: '%.32s' not supported (llama, mistral, qwen2)", s->what, type);
    }
    config_defaults(c, archs[i].arch, archs[i].head);
    if (type && strcmp(type, model_types[c->arch]) != 0)
        return rl_err("%s: model_type: '%.32s' does not match architectures '%s'", s->what, type,
                      archs[i].name);
    return 0;
}

static int parse_rope(struct src *s, struct model_config *c)
{
    json_t *r = json_object_get(s->j, "rope_scaling");
    c->rope_type = ROPE_DEFAULT;
    if (!r || json_is_null(r))
        return 0;
    if (!json_is_object(r))
        return rl_err("%s: rope_scaling: not an object or null", s->what);
    /* transformers reads "rope_type", and "type" in older files */
    const char *key = json_object_get(r, "rope_type") ? "rope_type" : "type";
    json_t *t = json_object_get(r, key);
    if (!json_is_string(t))
        return rl_err("%s: rope_scaling.rope_type: missing or not a string", s->what);
    const char *type = json_string_value(t);
    if (strcmp(type, "default") == 0)
        return 0;
    if (strcmp(type, "llama3") != 0)
        return rl_err("%s: rope_scaling.%s: '%.32s' not supported (rlflow supports llama3)", s->what,
                      key, type);
    c->rope_type = ROPE_LLAMA3;
    double omp;
    if (get_num(s, r, "factor", "rope_scaling.factor", true, 0, &c->rope_factor) ||
        get_num(s, r, "low_freq_factor", "rope_scaling.low_freq_factor", true, 0, &c->rope_low_freq_factor) ||
        get_num(s, r, "high_freq_factor", "rope_scaling.high_freq_factor", true, 0, &c->rope_high_freq_factor) ||
        get_num(s, r, "original_max_position_embeddings", "rope_scaling.original_max_position_embeddings",
                true, 0, &omp))
        return -1;
    if (omp != floor(omp) || omp < 1 || omp > (1 << 24))
        return rl_err("%s: rope_scaling.original_max_position_embeddings: %g is not a positive integer",
                      s->what, omp);
    c->rope_original_max_position = (int)omp;
    return 0;
}

static int parse_labels(struct src *s, struct model_config *c)
{
    if (c->head != HEAD_SCORE)
        return 0;
    /* transformers saves id2label, not num_labels; its default is 2 labels */
    json_t *id2label = json_object_get(s->j, "id2label");
    int def = 2;
    if (id2label && !json_is_null(id2label)) {
        if (!json_is_object(id2label))
            return rl_err("%s: id2label: not an object", s->what);
        def = (int)json_object_size(id2label);
    }
    return get_int(s, "num_labels", false, def, &c->num_labels);
}

static int parse_dtype(struct src *s, struct model_config *c)
{
    /* transformers >= 4.56 writes "dtype"; older versions "torch_dtype" */
    const char *key = json_object_get(s->j, "torch_dtype") ? "torch_dtype" : "dtype";
    json_t *v = json_object_get(s->j, key);
    if (!v || json_is_null(v))
        return 0;                                   /* float32 from config_defaults */
    const char *d = json_is_string(v) ? json_string_value(v) : "";
    if (strcmp(d, "float32") && strcmp(d, "bfloat16") && strcmp(d, "float16"))
        return rl_err("%s: %s: '%.32s' not supported (float32, bfloat16, float16)", s->what, key, d);
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", d);
    return 0;
}

static int parse_windows(struct src *s, struct model_config *c)
{
    bool use = c->arch == ARCH_MISTRAL;
    if (c->arch == ARCH_QWEN2 && get_bool(s, "use_sliding_window", false, &use) < 0)
        return -1;
    if (!use || c->arch == ARCH_LLAMA)
        return 0;
    /* absent means transformers' default 4096; null means no window */
    json_t *v = json_object_get(s->j, "sliding_window");
    if (v && json_is_null(v))
        return 0;
    return get_int(s, "sliding_window", false, 4096, &c->sliding_window);
}

static int parse_obj(struct src *s, struct model_config *c)
{
    if (!json_is_object(s->j))
        return rl_err("%s: not a JSON object", s->what);
    if (parse_arch(s, c) < 0)
        return -1;
    json_t *act = json_object_get(s->j, "hidden_act");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0))
        return rl_err("%s: hidden_act: '%.32s' not supported (silu)",
                      s->what, json_is_string(act) ? json_string_value(act) : "?");
    if (json_object_get(s->j, "quantization_config"))
        return rl_err("%s: quantization_config: quantized checkpoints are not supported", s->what);
    double eps, init;
    if (get_int(s, "hidden_size", true, 0, &c->hidden_size) ||
        get_int(s, "intermediate_size", true, 0, &c->intermediate_size) ||
        get_int(s, "num_hidden_layers", true, 0, &c->num_hidden_layers) ||
        get_int(s, "num_attention_heads", true, 0, &c->num_attention_heads) ||
        get_int(s, "num_key_value_heads", false, 0, &c->num_key_value_heads) ||
        get_int(s, "head_dim", false, 0, &c->head_dim) ||
        get_int(s, "vocab_size", true, 0, &c->vocab_size) ||
        get_int(s, "max_position_embeddings", false, c->max_position_embeddings,
                &c->max_position_embeddings) ||
        get_num(s, s->j, "rms_norm_eps", "rms_norm_eps", false, 1e-6, &eps) ||
        get_num(s, s->j, "rope_theta", "rope_theta", false, 10000.0, &c->rope_theta) ||
        get_num(s, s->j, "initializer_range", "initializer_range", false, 0.02, &init) ||
        get_bool(s, "tie_word_embeddings", false, &c->tie_word_embeddings) ||
        parse_rope(s, c) || parse_labels(s, c) || parse_dtype(s, c) || parse_windows(s, c) ||
        get_one_id(s, "bos_token_id", &c->bos_token_id) ||
        get_one_id(s, "pad_token_id", &c->pad_token_id) ||
        get_ids(s, "eos_token_id", c->eos_token_ids, CFG_MAX_IDS, &c->n_eos))
        return -1;
    if (c->num_key_value_heads == 0 && json_object_get(s->j, "num_key_value_heads") &&
        !json_is_null(json_object_get(s->j, "num_key_value_heads")))
        return rl_err("%s: num_key_value_heads: must be positive", s->what);
    if (c->head_dim == 0 && json_is_integer(json_object_get(s->j, "head_dim")))
        return rl_err("%s: head_dim: must be positive", s->what);
    c->rms_norm_eps = (float)eps;
    c->initializer_range = (float)init;
    if (c->arch == ARCH_LLAMA) {
        /* LlamaConfig: attention_bias puts biases on q, k, v and o; mlp_bias on all three MLP linears */
        if (get_bool(s, "attention_bias", false, &c->attention_bias) ||
            get_bool(s, "mlp_bias", false, &c->mlp_bias))
            return -1;
        c->o_bias = c->attention_bias;
    }
    return config_check(c, s->what);
}

int config_parse(const char *json, const char *what, struct model_config *c)
{
    json_error_t je;
    json_t *j = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return rl_err("%s: not valid JSON: %s (line %d column %d)", what, je.text, je.line, je.column);
    struct src s = {what, j};
    int rc = parse_obj(&s, c);
    json_decref(j);
    return rc;
}

int config_load(const char *path, struct model_config *c)
{
    char *text = fs_read_file(path, NULL);
    if (!text)
        return -1;
    int rc = config_parse(text, path, c);
    free(text);
    return rc;
}

/* ---- writing ---- */

/* The shortest decimal that reads back as the same float, so 1e-5f is written
 * as 1e-05 rather than 9.9999997473787516e-06. */
static json_t *float_json(float f)
{
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f)
            break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *id_json(int id) { return id >= 0 ? json_integer(id) : json_null(); }

int config_save(const char *path, const struct model_config *c)
{
    json_t *j = json_object();
#define SET(k, v) json_object_set_new(j, k, v)
    SET("architectures", json_pack("[s]", c->architecture));
    SET("model_type", json_string(c->model_type));
    if (c->arch == ARCH_LLAMA) {
        SET("attention_bias", json_boolean(c->attention_bias));
        SET("mlp_bias", json_boolean(c->mlp_bias));
    }
    SET("bos_token_id", id_json(c->bos_token_id));
    if (c->n_eos == 1) {
        SET("eos_token_id", json_integer(c->eos_token_ids[0]));
    } else if (c->n_eos > 1) {
        json_t *a = json_array();
        for (int i = 0; i < c->n_eos; i++)
            json_array_append_new(a, json_integer(c->eos_token_ids[i]));
        SET("eos_token_id", a);
    } else {
        SET("eos_token_id", json_null());
    }
    if (c->pad_token_id >= 0)
        SET("pad_token_id", json_integer(c->pad_token_id));
    SET("head_dim", json_integer(c->head_dim));
    SET("hidden_act", json_string("silu"));
    SET("hidden_size", json_integer(c->hidden_size));
    SET("initializer_range", float_json(c->initializer_range));
    SET("intermediate_size", json_integer(c->intermediate_size));
    SET("max_position_embeddings", json_integer(c->max_position_embeddings));
    SET("num_attention_heads", json_integer(c->num_attention_heads));
    SET("num_hidden_layers", json_integer(c->num_hidden_layers));
    SET("num_key_value_heads", json_integer(c->num_key_value_heads));
    SET("rms_norm_eps", float_json(c->rms_norm_eps));
    if (c->rope_type == ROPE_LLAMA3)
        SET("rope_scaling", json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", c->rope_factor,
                                      "low_freq_factor", c->rope_low_freq_factor, "high_freq_factor",
                                      c->rope_high_freq_factor, "original_max_position_embeddings",
                                      c->rope_original_max_position, "rope_type", "llama3"));
    else
        SET("rope_scaling", json_null());
    SET("rope_theta", json_real(c->rope_theta));
    if (c->arch == ARCH_MISTRAL)
        SET("sliding_window", c->sliding_window ? json_integer(c->sliding_window) : json_null());
    if (c->arch == ARCH_QWEN2) {
        SET("use_sliding_window", json_boolean(c->sliding_window > 0));
        SET("sliding_window", c->sliding_window ? json_integer(c->sliding_window) : json_null());
        SET("max_window_layers", json_integer(c->num_hidden_layers));
    }
    SET("tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    SET("torch_dtype", json_string(c->torch_dtype));
    SET("use_cache", json_true());
    SET("vocab_size", json_integer(c->vocab_size));
    if (c->head == HEAD_SCORE) {
        json_t *id2label = json_object(), *label2id = json_object();
        for (int i = 0; i < c->num_labels; i++) {
            char k[32], l[40];
            snprintf(k, sizeof k, "%d", i);
            snprintf(l, sizeof l, "LABEL_%d", i);
            json_object_set_new(id2label, k, json_string(l));
            json_object_set_new(label2id, l, json_integer(i));
        }
        SET("id2label", id2label);
        SET("label2id", label2id);
        SET("num_labels", json_integer(c->num_labels));
    }
#undef SET
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(j);
    if (!s)
        return rl_err("%s: cannot encode config", path);
    size_t n = strlen(s);
    s = rl_realloc(s, n + 2);
    s[n++] = '\n';
    s[n] = 0;
    int rc = fs_write_file_atomic(path, s, n);
    free(s);
    return rc;
}
