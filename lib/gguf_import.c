/* GGUF -> Hugging Face model directory (see gguf_import.h, docs/gguf.md). */
#include "gguf_import.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsutil.h"

/* ---- config.json ---- */

/* An integer key under the architecture prefix: required, in [lo, hi]. */
static int meta_int(const struct gguf *g, const char *key, bool required, int64_t lo, int64_t hi, int *out)
{
    int64_t v;
    int rc = gguf_get_int(g, key, &v);
    if (rc < 0)
        return -1;
    if (rc > 0)
        return required ? rl_err("%s: key '%s' is missing", gguf_name(g), key) : 0;
    if (v < lo || v > hi)
        return rl_err("%s: key '%s': %" PRId64 " out of range [%" PRId64 ", %" PRId64 "]", gguf_name(g), key,
                      v, lo, hi);
    *out = (int)v;
    return 0;
}

static int meta_float(const struct gguf *g, const char *key, bool required, double *out)
{
    int rc = gguf_get_float(g, key, out);
    if (rc > 0 && required)
        return rl_err("%s: key '%s' is missing", gguf_name(g), key);
    return rc < 0 ? -1 : 0;
}

static bool str_is(struct gguf_str s, const char *lit)
{
    return s.n == strlen(lit) && !memcmp(s.p, lit, s.n);
}

/* Llama 3 rope scaling: llama.cpp's converter stores no rope_scaling metadata
 * but a tensor rope_freqs.weight of per-frequency divisors (1 for short
 * wavelengths, `factor` for long ones, a smooth blend between). Rebuild the HF
 * parameters by checking the tensor against the formula with the parameters
 * every Llama 3.1+ model uses (low 1, high 4, original context 8192). */
static int rope_from_freqs(const struct gguf *g, const struct gguf_tensor *t, struct model_config *c)
{
    int half = c->head_dim / 2;
    if (t->type != GGML_F32 || t->numel != half)
        return rl_err("%s: tensor 'rope_freqs.weight': expected %d F32 values, found %" PRId64 " %s",
                      gguf_name(g), half, t->numel, ggml_type_name(t->type));
    float *f = rl_malloc((size_t)half * sizeof *f);
    gguf_tensor_to_f32(t, f);
    double factor = 1, lo = 1, hi = 4, old = 8192;
    for (int i = 0; i < half; i++)
        factor = fmax(factor, f[i]);
    int bad = -1;
    for (int i = 0; i < half && bad < 0; i++) {
        double freq = 1.0 / pow(c->rope_theta, 2.0 * i / c->head_dim), wavelen = 2 * M_PI / freq, want;
        if (wavelen < old / hi)
            want = 1;
        else if (wavelen > old / lo)
            want = factor;
        else {
            double smooth = (old / wavelen - lo) / (hi - lo);
            want = 1 / ((1 - smooth) / factor + smooth);
        }
        if (fabs(f[i] - want) > 1e-4 * want)
            bad = i;
    }
    free(f);
    if (bad >= 0)
        return rl_err("%s: tensor 'rope_freqs.weight': value %d does not follow Llama 3 rope scaling "
                      "(factor %g, low_freq_factor 1, high_freq_factor 4, original context 8192); "
                      "other rope scalings are not supported", gguf_name(g), bad, factor);
    c->rope_type = ROPE_LLAMA3;
    c->rope_factor = factor;
    c->rope_low_freq_factor = lo;
    c->rope_high_freq_factor = hi;
    c->rope_original_max_position = (int)old;
    return 0;
}

int gguf_import_config(const struct gguf *g, struct model_config *c)
{
    const char *what = gguf_name(g);
    struct gguf_str arch;
    int rc = gguf_get_str(g, "general.architecture", &arch);
    if (rc)
        return rc < 0 ? -1 : rl_err("%s: key 'general.architecture' is missing", what);
    if (!str_is(arch, "llama"))
        return rl_err("%s: general.architecture '%.*s' is not supported (only 'llama')", what,
                      (int)(arch.n > 64 ? 64 : arch.n), arch.p);
    config_defaults(c, ARCH_LLAMA, HEAD_LM);
    int64_t splits = 1, experts = 0;
    if (gguf_get_int(g, "split.count", &splits) < 0)
        return -1;
    if (splits > 1)
        return rl_err("%s: split.count %" PRId64 ": a split GGUF is not supported; merge the parts first "
                      "(llama-gguf-split --merge)", what, splits);
    if (gguf_get_int(g, "llama.expert_count", &experts) < 0)
        return -1;
    if (experts > 0)
        return rl_err("%s: llama.expert_count %" PRId64 ": mixture-of-experts models are not supported", what, experts);
    int rope_dim = 0, key_len = 0, val_len = 0;
    double eps = 1e-5, theta = 10000;
    if (meta_int(g, "llama.context_length", true, 1, 1 << 24, &c->max_position_embeddings) ||
        meta_int(g, "llama.embedding_length", true, 1, 1 << 16, &c->hidden_size) ||
        meta_int(g, "llama.block_count", true, 1, 1024, &c->num_hidden_layers) ||
        meta_int(g, "llama.feed_forward_length", true, 1, 1 << 20, &c->intermediate_size) ||
        meta_int(g, "llama.attention.head_count", true, 1, 1024, &c->num_attention_heads) ||
        meta_int(g, "llama.attention.head_count_kv", false, 1, 1024, &c->num_key_value_heads) ||
        meta_int(g, "llama.attention.key_length", false, 2, 1024, &key_len) ||
        meta_int(g, "llama.attention.value_length", false, 2, 1024, &val_len) ||
        meta_int(g, "llama.rope.dimension_count", false, 2, 1024, &rope_dim) ||
        meta_float(g, "llama.attention.layer_norm_rms_epsilon", true, &eps) ||
        meta_float(g, "llama.rope.freq_base", false, &theta))
        return -1;
    if (val_len && key_len && val_len != key_len)
        return rl_err("%s: llama.attention.value_length %d differs from key_length %d: not supported", what,
                      val_len, key_len);
    c->head_dim = key_len;
    c->rms_norm_eps = (float)eps;
    c->rope_theta = theta;

    /* vocabulary: the metadata, else the token list, else the embedding's rows */
    const struct gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return rl_err("%s: tensor 'token_embd.weight' is missing", what);
    const struct gguf_kv *toks = gguf_find_kv(g, "tokenizer.ggml.tokens");
    c->vocab_size = (int)(emb->ndim == 2 && emb->ne[1] < (1 << 24) ? emb->ne[1] : 0);
    if (toks && toks->type == GGUF_ARRAY && toks->n < (1 << 24))
        c->vocab_size = (int)toks->n;
    if (meta_int(g, "llama.vocab_size", false, 1, 1 << 24, &c->vocab_size))
        return -1;

    c->tie_word_embeddings = !gguf_find_tensor(g, "output.weight");
    c->attention_bias = gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->o_bias = gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    c->mlp_bias = gguf_find_tensor(g, "blk.0.ffn_gate.bias") != NULL;

    int bos = -1, eos = -1, pad = -1;
    if (meta_int(g, "tokenizer.ggml.bos_token_id", false, 0, INT32_MAX, &bos) ||
        meta_int(g, "tokenizer.ggml.eos_token_id", false, 0, INT32_MAX, &eos) ||
        meta_int(g, "tokenizer.ggml.padding_token_id", false, 0, INT32_MAX, &pad))
        return -1;
    c->bos_token_id = bos;
    c->pad_token_id = pad;
    c->n_eos = 0;
    if (eos >= 0)
        c->eos_token_ids[c->n_eos++] = eos;

    struct gguf_str st;
    if ((rc = gguf_get_str(g, "llama.rope.scaling.type", &st)) < 0)
        return -1;
    if (rc == 0 && !str_is(st, "none"))
        return rl_err("%s: llama.rope.scaling.type '%.*s' is not supported (rlflow supports none, and Llama 3 "
                      "scaling given as rope_freqs.weight)", what, (int)(st.n > 32 ? 32 : st.n), st.p);
    if (config_check(c, what))
        return -1;
    if (rope_dim && rope_dim != c->head_dim)
        return rl_err("%s: llama.rope.dimension_count %d differs from head_dim %d: partial rotary embeddings "
                      "are not supported", what, rope_dim, c->head_dim);
    const struct gguf_tensor *rf = gguf_find_tensor(g, "rope_freqs.weight");
    return rf ? rope_from_freqs(g, rf, c) : 0;
}

/* ---- weights ---- */

int gguf_name_for(const struct hf_tensor *t, char *out, size_t n)
{
    static const char *blk[] = {
        [HF_ATTN_NORM] = "attn_norm.weight", [HF_Q] = "attn_q.weight", [HF_Q_BIAS] = "attn_q.bias",
        [HF_K] = "attn_k.weight", [HF_K_BIAS] = "attn_k.bias", [HF_V] = "attn_v.weight",
        [HF_V_BIAS] = "attn_v.bias", [HF_O] = "attn_output.weight", [HF_O_BIAS] = "attn_output.bias",
        [HF_MLP_NORM] = "ffn_norm.weight", [HF_GATE] = "ffn_gate.weight", [HF_GATE_BIAS] = "ffn_gate.bias",
        [HF_UP] = "ffn_up.weight", [HF_UP_BIAS] = "ffn_up.bias", [HF_DOWN] = "ffn_down.weight",
        [HF_DOWN_BIAS] = "ffn_down.bias",
    };
    switch (t->role) {
    case HF_EMBED: snprintf(out, n, "token_embd.weight"); return 0;
    case HF_FINAL_NORM: snprintf(out, n, "output_norm.weight"); return 0;
    case HF_LM_HEAD: snprintf(out, n, "output.weight"); return 0;
    case HF_SCORE: return -1;
    default:
        if ((size_t)t->role < sizeof blk / sizeof *blk && blk[t->role]) {
            snprintf(out, n, "blk.%d.%s", t->layer, blk[t->role]);
            return 0;
        }
        return -1;
    }
}

void gguf_unpermute_rows(float *w, int n_head, int64_t rows, int64_t cols)
{
    int64_t d = rows / n_head, half = d / 2;
    float *tmp = rl_malloc((size_t)(d * cols) * sizeof *tmp);
    for (int h = 0; h < n_head; h++) {
        float *head = w + h * d * cols;
        memcpy(tmp, head, (size_t)(d * cols) * sizeof *tmp);
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(head + (j * half + i) * cols, tmp + (2 * i + j) * cols, (size_t)cols * sizeof *tmp);
    }
    free(tmp);
}

/* GGUF dims are the PyTorch shape reversed. */
static int check_shape(const struct gguf *g, const struct gguf_tensor *gt, const struct hf_tensor *t)
{
    bool ok = gt->ndim == t->ndim;
    for (int d = 0; ok && d < t->ndim; d++)
        ok = gt->ne[d] == t->shape[t->ndim - 1 - d];
    if (ok)
        return 0;
    char have[96] = "", want[64] = "";
    for (int d = gt->ndim - 1; d >= 0; d--)
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%" PRId64, d == gt->ndim - 1 ? "" : ", ", gt->ne[d]);
    for (int d = 0; d < t->ndim; d++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, d ? ", " : "", t->shape[d]);
    return rl_err("%s: tensor '%s': shape [%s] (reversed GGUF dims), but the config needs [%s] for %s",
                  gguf_name(g), gt->name, have, want, t->name);
}

/* Every GGUF tensor must have a place (rope_freqs.weight went into the config). */
static int check_all_mapped(const struct gguf *g, const struct model_config *c)
{
    int n = hf_tensor_count(c);
    size_t expected = (size_t)n + (gguf_find_tensor(g, "rope_freqs.weight") ? 1 : 0);
    if (gguf_n_tensors(g) == expected)
        return 0;   /* and each HF tensor is looked up by name below: a bijection */
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const char *name = gguf_tensor_at(g, i)->name;
        bool found = !strcmp(name, "rope_freqs.weight");
        for (int k = 0; k < n && !found; k++) {
            struct hf_tensor t;
            char gname[HF_NAME_MAX];
            hf_tensor_info(c, k, &t);
            found = gguf_name_for(&t, gname, sizeof gname) == 0 && !strcmp(gname, name);
        }
        if (!found)
            return rl_err("%s: tensor '%s' has no place in a Hugging Face Llama model", gguf_name(g), name);
    }
    return 0;   /* counts differ only through missing tensors: reported by name below */
}

float *gguf_import_weights(const struct gguf *g, const struct model_config *c, const struct gguf_import_opts *o)
{
    if (check_all_mapped(g, c))
        return NULL;
    int n = hf_tensor_count(c);
    int64_t total = hf_param_count(c);
    float *w = rl_malloc((size_t)(total ? total : 1) * sizeof *w), *p = w;
    for (int i = 0; i < n; i++) {
        struct hf_tensor t;
        char gname[HF_NAME_MAX] = "";
        hf_tensor_info(c, i, &t);
        const struct gguf_tensor *gt = NULL;
        if (gguf_name_for(&t, gname, sizeof gname) == 0)
            gt = gguf_find_tensor(g, gname);
        if (!gt) {
            rl_err("%s: tensor '%s' (for %s) is missing", gguf_name(g), gname, t.name);
            goto fail;
        }
        if (o && o->progress)
            o->progress(o->progress_ctx, i, n, gname);
        if (check_shape(g, gt, &t) || gguf_tensor_to_f32(gt, p)) {
            if (!strstr(rl_errmsg(), gguf_name(g)))
                rl_err_prefix("%s", gguf_name(g));
            goto fail;
        }
        /* the converter permuted q with n_head and k with n_head_kv */
        if (t.role == HF_Q || t.role == HF_Q_BIAS)
            gguf_unpermute_rows(p, c->num_attention_heads, t.shape[0], t.ndim == 2 ? t.shape[1] : 1);
        if (t.role == HF_K || t.role == HF_K_BIAS)
            gguf_unpermute_rows(p, c->num_key_value_heads, t.shape[0], t.ndim == 2 ? t.shape[1] : 1);
        p += t.numel;
    }
    return w;
fail:
    free(w);
    return NULL;
}

static int save_weights(const struct gguf *g, const struct model_config *c, const char *dir,
                        const struct gguf_import_opts *o)
{
    float *w = gguf_import_weights(g, c, o);
    if (!w)
        return -1;
    int n = hf_tensor_count(c);
    struct st_out_tensor *out = rl_calloc((size_t)n, sizeof *out);
    struct hf_tensor *t = rl_calloc((size_t)n, sizeof *t);
    const float *p = w;
    for (int i = 0; i < n; i++) {
        hf_tensor_info(c, i, &t[i]);
        out[i] = (struct st_out_tensor){.name = t[i].name, .dtype = o ? o->dtype : ST_F32, .ndim = t[i].ndim, .data = p};
        out[i].shape[0] = t[i].shape[0];
        out[i].shape[1] = t[i].shape[1];
        p += t[i].numel;
    }
    char path[FS_PATH_MAX];
    int rc = fs_join(path, sizeof path, dir, "model.safetensors");
    if (rc == 0)
        rc = st_write(path, out, (size_t)n);
    free(out);
    free(t);
    free(w);
    return rc;
}

/* ---- tokenizer ---- */

/* GGUF token types (llama.cpp): */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* The split regexes of the pre-tokenizers (facts of each model's tokenizer.json). */
#define RE_LLAMA3                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static json_t *byte_level(bool use_regex, bool trim_offsets)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets",
                     trim_offsets, "use_regex", use_regex);
}

static json_t *split_regex(const char *re)
{
    return json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", re, "behavior", "Isolated",
                     "invert", 0);
}

/* pre_tokenizer and normalizer for tokenizer.ggml.pre; NULL if unknown. */
static json_t *pre_tokenizer(struct gguf_str pre, json_t **normalizer, bool *ignore_merges)
{
    *normalizer = json_null();
    *ignore_merges = false;
    if (str_is(pre, "gpt-2"))
        return byte_level(true, true);
    if (str_is(pre, "smollm"))   /* digits one by one, then GPT-2's split */
        return json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type", "Digits",
                         "individual_digits", 1, byte_level(true, true));
    if (str_is(pre, "llama-bpe")) {
        *ignore_merges = true;   /* Llama 3's tokenizer.json: whole-word vocab hits skip the merges */
        return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", split_regex(RE_LLAMA3),
                         byte_level(false, true));
    }
    if (str_is(pre, "qwen2")) {
        json_decref(*normalizer);
        *normalizer = json_pack("{s:s}", "type", "NFC");
        return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", split_regex(RE_QWEN2),
                         byte_level(false, false));
    }
    return NULL;
}

struct tok_meta {
    const struct gguf_kv *tokens, *types, *merges;
    int bos, eos, pad, unk;
    bool add_bos, add_eos, has_add_bos, has_add_eos;
};

static json_t *jstr(struct gguf_str s) { return json_stringn(s.p, s.n); }

static int read_tok_meta(const struct gguf *g, const struct model_config *c, struct tok_meta *m, struct gguf_str *pre)
{
    const char *what = gguf_name(g);
    struct gguf_str model;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc)
        return rc < 0 ? -1 : rl_err("%s: key 'tokenizer.ggml.model' is missing", what);
    if (!str_is(model, "gpt2"))
        return rl_err("%s: tokenizer.ggml.model '%.*s' is not supported (only 'gpt2', byte-level BPE)", what,
                      (int)(model.n > 32 ? 32 : model.n), model.p);
    if ((rc = gguf_get_str(g, "tokenizer.ggml.pre", pre)) < 0)
        return -1;
    if (rc > 0)
        *pre = (struct gguf_str){"gpt-2", 5};   /* old files: no pre key, GPT-2's split */
    if (!(m->tokens = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING)) ||
        !(m->merges = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_STRING)))
        return -1;
    m->types = gguf_find_kv(g, "tokenizer.ggml.token_type") ? gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_I64) : NULL;
    if (gguf_find_kv(g, "tokenizer.ggml.token_type") && !m->types)
        return -1;
    if (m->types && m->types->n != m->tokens->n)
        return rl_err("%s: tokenizer.ggml.token_type has %" PRIu64 " entries for %" PRIu64 " tokens", what,
                      m->types->n, m->tokens->n);
    if (m->tokens->n > (uint64_t)c->vocab_size)
        return rl_err("%s: tokenizer.ggml.tokens has %" PRIu64 " tokens, more than the vocabulary size %d", what,
                      m->tokens->n, c->vocab_size);
    m->bos = m->eos = m->pad = m->unk = -1;
    int64_t n = (int64_t)m->tokens->n - 1;
    if (meta_int(g, "tokenizer.ggml.bos_token_id", false, 0, n, &m->bos) ||
        meta_int(g, "tokenizer.ggml.eos_token_id", false, 0, n, &m->eos) ||
        meta_int(g, "tokenizer.ggml.padding_token_id", false, 0, n, &m->pad) ||
        meta_int(g, "tokenizer.ggml.unknown_token_id", false, 0, n, &m->unk))
        return -1;
    m->add_bos = str_is(*pre, "llama-bpe");   /* Llama 3 adds BOS; the others do not */
    if ((rc = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &m->add_bos)) < 0)
        return -1;
    m->has_add_bos = rc == 0;
    if ((rc = gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &m->add_eos)) < 0)
        return -1;
    m->has_add_eos = rc == 0;
    return 0;
}

static int token_type(const struct tok_meta *m, uint64_t i)
{
    return m->types ? (int)gguf_arr_int(m->types, i) : TT_NORMAL;
}

static void push_special(json_t *a, struct gguf_str tok, int type_id)
{
    json_array_append_new(a, json_pack("{s:{s:o, s:i}}", "SpecialToken", "id", jstr(tok), "type_id", type_id));
}

/* [BOS] $A [EOS] (and the same for $B in pairs), as HF's TemplateProcessing. */
static json_t *template_for(const struct tok_meta *m, int nseq)
{
    json_t *a = json_array();
    for (int s = 0; s < nseq; s++) {
        if (m->add_bos && m->bos >= 0)
            push_special(a, m->tokens->strs[m->bos], s);
        json_array_append_new(a, json_pack("{s:{s:s, s:i}}", "Sequence", "id", s ? "B" : "A", "type_id", s));
        if (m->add_eos && m->eos >= 0)
            push_special(a, m->tokens->strs[m->eos], s);
    }
    return a;
}

static json_t *post_processor(const struct tok_meta *m)
{
    if (!(m->add_bos && m->bos >= 0) && !(m->add_eos && m->eos >= 0))
        return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0,
                         "use_regex", 1);
    json_t *special = json_object();
    int ids[2] = {m->add_bos ? m->bos : -1, m->add_eos ? m->eos : -1};
    for (int k = 0; k < 2; k++) {
        if (ids[k] < 0)
            continue;
        json_t *name = jstr(m->tokens->strs[ids[k]]);
        json_object_set_new(special, json_string_value(name),
                            json_pack("{s:O, s:[i], s:[O]}", "id", name, "ids", ids[k], "tokens", name));
        json_decref(name);
    }
    return json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single", template_for(m, 1), "pair",
                     template_for(m, 2), "special_tokens", special);
}

static int write_json(json_t *j, const char *dir, const char *name)
{
    char path[FS_PATH_MAX];
    if (fs_join(path, sizeof path, dir, name) < 0)
        return -1;
    char *s = json_dumps(j, JSON_INDENT(2));
    if (!s)
        return rl_err("%s: cannot encode JSON", path);
    int rc = fs_write_file_atomic(path, s, strlen(s));
    free(s);
    return rc;
}

static json_t *build_tokenizer_json(const struct gguf *g, const struct tok_meta *m, struct gguf_str pre)
{
    const char *what = gguf_name(g);
    json_t *normalizer, *vocab = json_object(), *added = json_array(), *merges = json_array();
    bool ignore_merges;
    json_t *pt = pre_tokenizer(pre, &normalizer, &ignore_merges);
    if (!pt) {
        rl_err("%s: tokenizer.ggml.pre '%.*s' is not supported (gpt-2, smollm, llama-bpe, qwen2)", what,
               (int)(pre.n > 32 ? 32 : pre.n), pre.p);
        goto fail;
    }
    for (uint64_t i = 0; i < m->tokens->n; i++) {
        struct gguf_str s = m->tokens->strs[i];
        json_t *js = jstr(s);
        if (!js || memchr(s.p, 0, s.n)) {
            json_decref(js);
            rl_err("%s: tokenizer.ggml.tokens[%" PRIu64 "] is not valid UTF-8 text", what, i);
            goto fail;
        }
        const char *k = json_string_value(js);
        if (!json_object_get(vocab, k))   /* a repeated token keeps its first id */
            json_object_set_new(vocab, k, json_integer((json_int_t)i));
        int tt = token_type(m, i);
        if (tt == TT_CONTROL || tt == TT_USER_DEFINED || tt == TT_UNKNOWN) {
            bool special = tt != TT_USER_DEFINED;
            json_array_append_new(added, json_pack("{s:I, s:O, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i,
                                                   "content", js, "single_word", 0, "lstrip", 0, "rstrip", 0,
                                                   "normalized", !special, "special", special));
        }
        json_decref(js);
    }
    for (uint64_t i = 0; i < m->merges->n; i++) {
        struct gguf_str s = m->merges->strs[i];
        const char *sp = memchr(s.p, ' ', s.n);
        json_t *js = jstr(s);
        if (!js || !sp || sp == s.p || sp == s.p + s.n - 1 || memchr(sp + 1, ' ', s.n - (size_t)(sp + 1 - s.p))) {
            json_decref(js);
            rl_err("%s: tokenizer.ggml.merges[%" PRIu64 "] is not two tokens separated by one space", what, i);
            goto fail;
        }
        json_array_append_new(merges, js);
    }
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                              "byte_fallback", 0, "ignore_merges", ignore_merges, "vocab", vocab, "merges", merges);
    return json_pack("{s:s, s:n, s:n, s:o, s:o, s:o, s:o, s:o, s:o}", "version", "1.0", "truncation", "padding",
                     "added_tokens", added, "normalizer", normalizer, "pre_tokenizer", pt, "post_processor",
                     post_processor(m), "decoder", byte_level(true, true), "model", model);
fail:
    json_decref(vocab);
    json_decref(added);
    json_decref(merges);
    json_decref(pt);
    return NULL;
}

static json_t *build_tokenizer_config(const struct gguf *g, const struct model_config *c, const struct tok_meta *m)
{
    json_t *j = json_object(), *dec = json_object();
    if (m->has_add_bos)
        json_object_set_new(j, "add_bos_token", json_boolean(m->add_bos));
    if (m->has_add_eos)
        json_object_set_new(j, "add_eos_token", json_boolean(m->add_eos));
    for (uint64_t i = 0; i < m->tokens->n; i++) {
        int tt = token_type(m, i);
        if (tt != TT_CONTROL && tt != TT_USER_DEFINED && tt != TT_UNKNOWN)
            continue;
        char k[24];
        snprintf(k, sizeof k, "%" PRIu64, i);
        bool special = tt != TT_USER_DEFINED;
        json_object_set_new(dec, k, json_pack("{s:o, s:b, s:b, s:b, s:b, s:b}", "content", jstr(m->tokens->strs[i]),
                                              "lstrip", 0, "normalized", !special, "rstrip", 0, "single_word", 0,
                                              "special", special));
    }
    json_object_set_new(j, "added_tokens_decoder", dec);
    static const char *keys[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    int ids[] = {m->bos, m->eos, m->pad, m->unk};
    for (int k = 0; k < 4; k++)
        if (ids[k] >= 0)
            json_object_set_new(j, keys[k], jstr(m->tokens->strs[ids[k]]));
    struct gguf_str tmpl;
    int rc = gguf_get_str(g, "tokenizer.chat_template", &tmpl);
    if (rc < 0) {
        json_decref(j);
        return NULL;
    }
    if (rc == 0) {
        json_t *t = jstr(tmpl);
        if (!t) {
            json_decref(j);
            rl_err("%s: tokenizer.chat_template is not valid UTF-8", gguf_name(g));
            return NULL;
        }
        json_object_set_new(j, "chat_template", t);
    }
    json_object_set_new(j, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(j, "model_max_length", json_integer(c->max_position_embeddings));
    json_object_set_new(j, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    return j;
}

int gguf_import_tokenizer(const struct gguf *g, const struct model_config *c, const char *dir)
{
    struct tok_meta m = {0};
    struct gguf_str pre;
    if (read_tok_meta(g, c, &m, &pre))
        return -1;
    json_t *tj = build_tokenizer_json(g, &m, pre);
    if (!tj)
        return -1;
    int rc = write_json(tj, dir, "tokenizer.json");
    json_decref(tj);
    if (rc)
        return -1;
    json_t *cj = build_tokenizer_config(g, c, &m);
    if (!cj)
        return -1;
    rc = write_json(cj, dir, "tokenizer_config.json");
    json_decref(cj);
    return rc;
}

int gguf_import(const struct gguf *g, const char *dir, const struct gguf_import_opts *o)
{
    struct model_config c;
    char path[FS_PATH_MAX];
    if (gguf_import_config(g, &c))
        return -1;
    enum st_dtype dt = o ? o->dtype : ST_F32;
    snprintf(c.torch_dtype, sizeof c.torch_dtype, "%s",
             dt == ST_BF16 ? "bfloat16" : dt == ST_F16 ? "float16" : "float32");
    /* the tokenizer first: it is quick and fails on unsupported vocabularies */
    if (gguf_import_tokenizer(g, &c, dir))
        return -1;
    if (fs_join(path, sizeof path, dir, "config.json") < 0 || config_save(path, &c))
        return -1;
    return save_weights(g, &c, dir, o);
}
