/* config.json parsing (fixtures under tests/data/configs and inline strings),
 * saving, and the Hugging Face tensor layout (lib/weights_layout.h). */
#include <stdint.h>
#include <unistd.h>

#include "../harness.h"
#include "config.h"
#include "err.h"
#include "fsutil.h"
#include "weights_layout.h"

static char fixdir[1024];

static int load(const char *name, struct model_config *c)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", fixdir, name);
    int rc = config_load(p, c);
    if (rc < 0)
        printf("# %s\n", rl_errmsg());
    return rc;
}

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void test_fixtures(void)
{
    struct model_config c;
    CHECK("smollm2 loads", load("smollm2-135m.json", &c) == 0);
    CHECK("smollm2 arch", c.arch == ARCH_LLAMA && c.head == HEAD_LM && !strcmp(c.architecture, "LlamaForCausalLM"));
    CHECK("smollm2 sizes", c.hidden_size == 576 && c.intermediate_size == 1536 && c.num_hidden_layers == 30 &&
                               c.num_attention_heads == 9 && c.num_key_value_heads == 3 && c.vocab_size == 49152);
    CHECK("smollm2 head_dim default", c.head_dim == 64);
    CHECK("smollm2 misc", c.tie_word_embeddings && c.rope_theta == 100000 && c.rms_norm_eps == 1e-5f &&
                              c.max_position_embeddings == 8192 && c.rope_type == ROPE_DEFAULT);
    CHECK("smollm2 no biases", !c.attention_bias && !c.o_bias && !c.mlp_bias);
    CHECK("smollm2 ids", c.bos_token_id == 0 && c.n_eos == 1 && c.eos_token_ids[0] == 0 && c.pad_token_id == -1);
    CHECK("smollm2 dtype", !strcmp(c.torch_dtype, "bfloat16"));
    CHECK("smollm2 initializer_range", fabsf(c.initializer_range - 0.0416666667f) < 1e-7f);
    CHECK("smollm2 tensor count", hf_tensor_count(&c) == 1 + 30 * 9 + 1);
    CHECKF("smollm2 param count", hf_param_count(&c) == 134515008, "%lld", (long long)hf_param_count(&c));

    CHECK("llama3.2 loads", load("llama-3.2-1b.json", &c) == 0);
    CHECK("llama3.2 rope", c.rope_type == ROPE_LLAMA3 && c.rope_factor == 32 && c.rope_low_freq_factor == 1 &&
                               c.rope_high_freq_factor == 4 && c.rope_original_max_position == 8192 &&
                               c.rope_theta == 500000);
    CHECK("llama3.2 eos list", c.n_eos == 3 && c.eos_token_ids[0] == 128001 && c.eos_token_ids[2] == 128009);
    CHECK("llama3.2 gqa", c.num_key_value_heads == 8 && c.head_dim == 64);
    CHECKF("llama3.2 params", hf_param_count(&c) == 1235814400, "%lld", (long long)hf_param_count(&c));

    CHECK("qwen2 loads", load("qwen2-0.5b.json", &c) == 0);
    CHECK("qwen2 arch", c.arch == ARCH_QWEN2 && !strcmp(c.model_type, "qwen2"));
    CHECK("qwen2 biases", c.attention_bias && !c.o_bias && !c.mlp_bias);
    CHECK("qwen2 no window", c.sliding_window == 0);
    CHECK("qwen2 eps", c.rms_norm_eps == 1e-6f && c.rope_theta == 1e6);
    CHECKF("qwen2 params", hf_param_count(&c) == 494032768, "%lld", (long long)hf_param_count(&c));

    CHECK("mistral loads", load("mistral-7b.json", &c) == 0);
    CHECK("mistral fields", c.arch == ARCH_MISTRAL && c.sliding_window == 4096 && !c.tie_word_embeddings &&
                                !c.attention_bias && c.head_dim == 128);
    CHECKF("mistral params", hf_param_count(&c) == 7241732096, "%lld", (long long)hf_param_count(&c));

    CHECK("rm loads", load("tiny-llama-rm.json", &c) == 0);
    CHECK("rm head", c.head == HEAD_SCORE && c.num_labels == 1 && c.pad_token_id == 0);
    CHECK("tiny configs load", load("tiny-llama.json", &c) == 0 && load("tiny-qwen2.json", &c) == 0 &&
                                   load("tiny-llama3-tied.json", &c) == 0);
}

/* A base config with one field replaced: "%s" in the template takes `extra`. */
static const char *base_fmt =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100%s}";

static int parse_with(const char *extra, struct model_config *c)
{
    char buf[2048];
    snprintf(buf, sizeof buf, base_fmt, extra);
    rl_err("(no error)");
    return config_parse(buf, "cfg.json", c);
}

static void test_defaults(void)
{
    struct model_config c;
    CHECKF("minimal parses", parse_with("", &c) == 0, "%s", rl_errmsg());
    CHECK("gqa default is mha", c.num_key_value_heads == 4);
    CHECK("head_dim default", c.head_dim == 16);
    CHECK("llama defaults", c.rms_norm_eps == 1e-6f && c.rope_theta == 10000 && !c.tie_word_embeddings &&
                                c.max_position_embeddings == 2048 && c.bos_token_id == -1 && c.n_eos == 0 &&
                                !strcmp(c.torch_dtype, "float32") && !strcmp(c.model_type, "llama"));
    CHECK("explicit head_dim", parse_with(",\"head_dim\":32", &c) == 0 && c.head_dim == 32);
    CHECK("null head_dim", parse_with(",\"head_dim\":null", &c) == 0 && c.head_dim == 16);
    CHECK("eos int", parse_with(",\"eos_token_id\":7", &c) == 0 && c.n_eos == 1 && c.eos_token_ids[0] == 7);
    CHECK("eos list", parse_with(",\"eos_token_id\":[7,8]", &c) == 0 && c.n_eos == 2 && c.eos_token_ids[1] == 8);
    CHECK("pad -1 means none", parse_with(",\"pad_token_id\":-1", &c) == 0 && c.pad_token_id == -1);
    CHECK("dtype key (new transformers)", parse_with(",\"dtype\":\"bfloat16\"", &c) == 0 &&
                                              !strcmp(c.torch_dtype, "bfloat16"));
    CHECK("rope default type", parse_with(",\"rope_scaling\":{\"rope_type\":\"default\"}", &c) == 0 &&
                                   c.rope_type == ROPE_DEFAULT);
    CHECK("rope llama3 via type key", parse_with(",\"rope_scaling\":{\"type\":\"llama3\",\"factor\":8,"
                                                 "\"low_freq_factor\":1,\"high_freq_factor\":4,"
                                                 "\"original_max_position_embeddings\":8192}", &c) == 0 &&
                                          c.rope_type == ROPE_LLAMA3 && c.rope_factor == 8);
    CHECK("llama attention_bias", parse_with(",\"attention_bias\":true,\"mlp_bias\":true", &c) == 0 &&
                                      c.attention_bias && c.o_bias && c.mlp_bias);
    CHECK("float integer accepted", parse_with(",\"max_position_embeddings\":4096.0", &c) == 0 &&
                                        c.max_position_embeddings == 4096);
    CHECK("model_type only", config_parse("{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":8,"
                                          "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"vocab_size\":9}",
                                          "x", &c) == 0 && c.arch == ARCH_QWEN2 && c.head == HEAD_LM &&
                                 c.attention_bias && c.max_position_embeddings == 32768);
    CHECK("seqcls default 2 labels", config_parse("{\"architectures\":[\"Qwen2ForSequenceClassification\"],"
                                                  "\"hidden_size\":64,\"intermediate_size\":8,\"num_hidden_layers\":1,"
                                                  "\"num_attention_heads\":2,\"vocab_size\":9}", "x", &c) == 0 &&
                                         c.head == HEAD_SCORE && c.num_labels == 2);
    CHECK("qwen2 sliding window used", config_parse("{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,"
                                                    "\"intermediate_size\":8,\"num_hidden_layers\":1,"
                                                    "\"num_attention_heads\":2,\"vocab_size\":9,"
                                                    "\"use_sliding_window\":true,\"sliding_window\":256}", "x", &c) == 0 &&
                                           c.sliding_window == 256);
    const char *mistral = "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
                          "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"vocab_size\":9%s}";
    char buf[512];
    snprintf(buf, sizeof buf, mistral, "");
    CHECK("mistral window default 4096", config_parse(buf, "x", &c) == 0 && c.sliding_window == 4096);
    snprintf(buf, sizeof buf, mistral, ",\"sliding_window\":null");
    CHECK("mistral window null", config_parse(buf, "x", &c) == 0 && c.sliding_window == 0);
}

static void test_errors(void)
{
    struct model_config c;
    struct { const char *name, *extra, *want1, *want2; } cases[] = {
        {"err rope yarn", ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}", "rope_scaling.rope_type", "yarn"},
        {"err rope linear (type key)", ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":4}", "rope_scaling.type", "linear"},
        {"err rope no type", ",\"rope_scaling\":{\"factor\":4}", "rope_scaling.rope_type", "missing"},
        {"err rope not object", ",\"rope_scaling\":3", "rope_scaling", "not an object"},
        {"err llama3 missing factor", ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"low_freq_factor\":1,"
            "\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}", "rope_scaling.factor", "missing"},
        {"err llama3 bad freq factors", ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,"
            "\"high_freq_factor\":1,\"original_max_position_embeddings\":8192}", "low_freq_factor", ""},
        {"err kv heads not dividing", ",\"num_key_value_heads\":3", "num_key_value_heads", "divide"},
        {"err kv heads zero", ",\"num_key_value_heads\":0", "num_key_value_heads", ""},
        {"err kv heads > heads", ",\"num_key_value_heads\":8", "num_key_value_heads", "range"},
        {"err odd head_dim", ",\"head_dim\":15", "head_dim", "odd"},
        {"err head_dim zero", ",\"head_dim\":0", "head_dim", ""},
        {"err hidden_act", ",\"hidden_act\":\"gelu\"", "hidden_act", "gelu"},
        {"err torch_dtype", ",\"torch_dtype\":\"int8\"", "torch_dtype", "int8"},
        {"err eos beyond vocab", ",\"eos_token_id\":100", "eos_token_id", "vocab_size"},
        {"err bos beyond vocab", ",\"bos_token_id\":1000", "bos_token_id", "vocab_size"},
        {"err eos list too long", ",\"eos_token_id\":[1,2,3,4,5,6,7,8,9]", "eos_token_id", "more than"},
        {"err eos list of strings", ",\"eos_token_id\":[\"a\"]", "eos_token_id[0]", ""},
        {"err eos string", ",\"eos_token_id\":\"2\"", "eos_token_id", ""},
        {"err tie not bool", ",\"tie_word_embeddings\":1", "tie_word_embeddings", ""},
        {"err eps zero", ",\"rms_norm_eps\":0", "rms_norm_eps", ""},
        {"err theta string", ",\"rope_theta\":\"big\"", "rope_theta", "not a number"},
        {"err hidden string", ",\"hidden_size\":\"64\"", "", ""},     /* duplicate key: invalid JSON */
        {"err model_type mismatch", ",\"model_type\":\"qwen2\"", "model_type", "LlamaForCausalLM"},
        {"err quantized", ",\"quantization_config\":{\"bits\":4}", "quantization_config", ""},
        {"err huge int", ",\"max_position_embeddings\":99999999999", "max_position_embeddings", "range"},
        {"err fractional int", ",\"max_position_embeddings\":10.5", "max_position_embeddings", "integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = parse_with(cases[i].extra, &c);
        const char *m = rl_errmsg();
        CHECKF(cases[i].name, rc < 0 && has(m, "cfg.json") && has(m, cases[i].want1) && has(m, cases[i].want2),
               "rc %d: %s", rc, m);
    }
    struct { const char *name, *json, *want; } whole[] = {
        {"err unknown architecture", "{\"architectures\":[\"GPT2LMHeadModel\"],\"hidden_size\":1}", "architectures"},
        {"err architectures not list", "{\"architectures\":\"LlamaForCausalLM\"}", "architectures"},
        {"err no architecture", "{\"hidden_size\":64}", "architectures"},
        {"err unknown model_type", "{\"model_type\":\"gemma\"}", "model_type"},
        {"err missing hidden_size", "{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":128,"
                                    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}", "hidden_size"},
        {"err hidden not divisible", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":66,\"intermediate_size\":8,"
                                     "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}", "hidden_size"},
        {"err negative layers", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
                                "\"num_hidden_layers\":-2,\"num_attention_heads\":4,\"vocab_size\":100}", "num_hidden_layers"},
        {"err bad json", "{\"architectures\":", "not valid JSON"},
        {"err not object", "[1,2]", "not a JSON object"},
        {"err empty", "", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof whole / sizeof *whole; i++) {
        rl_err("(no error)");
        int rc = config_parse(whole[i].json, "cfg.json", &c);
        const char *m = rl_errmsg();
        CHECKF(whole[i].name, rc < 0 && has(m, "cfg.json") && has(m, whole[i].want), "rc %d: %s", rc, m);
    }
    CHECK("err missing file", config_load("/nonexistent/config.json", &c) < 0 &&
                                  has(rl_errmsg(), "/nonexistent/config.json"));
}

static void test_save(void)
{
    const char *names[] = {"smollm2-135m.json", "llama-3.2-1b.json", "qwen2-0.5b.json", "mistral-7b.json",
                           "tiny-llama-rm.json", "tiny-llama3-tied.json"};
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s/rlflow-cfg-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) {
        CHECK("mkdtemp", 0);
        return;
    }
    char out[400];
    snprintf(out, sizeof out, "%s/config.json", tmp);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        struct model_config a, b;
        char name[128];
        snprintf(name, sizeof name, "save round trip %s", names[i]);
        int ok = load(names[i], &a) == 0 && config_save(out, &a) == 0 && config_load(out, &b) == 0;
        CHECKF(name, ok && memcmp(&a, &b, sizeof a) == 0, "%s", ok ? "fields differ" : rl_errmsg());
    }
    struct model_config c;
    load("llama-3.2-1b.json", &c);
    config_save(out, &c);
    char *text = fs_read_file(out, NULL);
    CHECKF("saved eps is short", text && has(text, "\"rms_norm_eps\": 1e-5,"), "%s", text);
    CHECK("saved rope_scaling", text && has(text, "\"rope_type\": \"llama3\"") && has(text, "\"factor\": 32.0"));
    CHECK("saved eos list", text && has(text, "128008"));
    free(text);
    load("tiny-llama-rm.json", &c);
    config_save(out, &c);
    text = fs_read_file(out, NULL);
    CHECK("saved labels", text && has(text, "\"LABEL_0\": 0") && has(text, "LlamaForSequenceClassification"));
    free(text);
    CHECK("save to missing dir fails", config_save("/nonexistent/dir/config.json", &c) < 0);
    fs_rm_rf(tmp);
}

static void test_layout(void)
{
    struct model_config c;
    struct hf_tensor t;
    char name[HF_NAME_MAX];
    int nd;
    int64_t sh[2];

    load("qwen2-0.5b.json", &c);
    int n = hf_tensor_count(&c);
    CHECK("qwen2 count", n == 1 + 24 * 12 + 1);
    hf_tensor_info(&c, 0, &t);
    CHECK("embed first", !strcmp(t.name, "model.embed_tokens.weight") && t.shape[0] == 151936 &&
                             t.shape[1] == 896 && t.init == HF_INIT_NORMAL && t.layer == -1);
    int qb = hf_tensor_find(&c, "model.layers.3.self_attn.q_proj.bias"),
        kb = hf_tensor_find(&c, "model.layers.3.self_attn.k_proj.bias"),
        kw = hf_tensor_find(&c, "model.layers.23.self_attn.k_proj.weight");
    CHECK("qwen2 q/k/v bias present", qb > 0 && kb > 0 && hf_tensor_find(&c, "model.layers.0.self_attn.v_proj.bias") > 0);
    CHECK("qwen2 no o bias", hf_tensor_find(&c, "model.layers.0.self_attn.o_proj.bias") == -1);
    hf_tensor_info(&c, kb, &t);
    CHECK("k bias shape", t.ndim == 1 && t.shape[0] == 128 && t.init == HF_INIT_ZEROS && t.role == HF_K_BIAS &&
                              t.layer == 3);
    hf_tensor_spec(&c, kw, name, &nd, sh);
    CHECK("k weight spec", !strcmp(name, "model.layers.23.self_attn.k_proj.weight") && nd == 2 && sh[0] == 128 &&
                               sh[1] == 896);
    CHECK("tied: no lm_head", hf_tensor_find(&c, "lm_head.weight") == -1);
    hf_tensor_info(&c, n - 1, &t);
    CHECK("final norm last", !strcmp(t.name, "model.norm.weight") && t.init == HF_INIT_ONES);

    /* Every index finds itself; names are unique. */
    const char *fx[] = {"tiny-llama.json", "tiny-llama-rm.json", "tiny-llama3-tied.json", "tiny-qwen2.json",
                        "smollm2-135m.json"};
    for (size_t k = 0; k < sizeof fx / sizeof *fx; k++) {
        load(fx[k], &c);
        n = hf_tensor_count(&c);
        int ok = 1;
        for (int i = 0; i < n; i++) {
            hf_tensor_info(&c, i, &t);
            if (hf_tensor_find(&c, t.name) != i)
                ok = 0, printf("# %s: %s not found at %d\n", fx[k], t.name, i);
        }
        char cn[128];
        snprintf(cn, sizeof cn, "find inverts info %s", fx[k]);
        CHECK(cn, ok);
    }
    CHECK("find bogus", hf_tensor_find(&c, "model.layers.99.mlp.up_proj.weight") == -1 &&
                            hf_tensor_find(&c, "model.layers.0.mlp.nope") == -1 &&
                            hf_tensor_find(&c, "lm_head.bias") == -1 && hf_tensor_find(&c, "") == -1);

    load("tiny-llama.json", &c);
    n = hf_tensor_count(&c);
    hf_tensor_info(&c, n - 1, &t);
    CHECK("untied lm_head", !strcmp(t.name, "lm_head.weight") && t.shape[0] == 256 && t.shape[1] == 64 &&
                                t.role == HF_LM_HEAD);
    int i = hf_tensor_find(&c, "model.layers.1.mlp.down_proj.weight");
    hf_tensor_info(&c, i, &t);
    CHECK("down_proj [hidden, inter]", t.shape[0] == 64 && t.shape[1] == 128 && t.layer == 1);
    i = hf_tensor_find(&c, "model.layers.1.self_attn.o_proj.weight");
    hf_tensor_info(&c, i, &t);
    CHECK("o_proj [hidden, heads*hd]", t.shape[0] == 64 && t.shape[1] == 64);
    CHECK("llama no biases", hf_tensor_find(&c, "model.layers.0.self_attn.q_proj.bias") == -1 &&
                                 hf_layer_tensor_count(&c) == 9);
    c.attention_bias = c.o_bias = c.mlp_bias = true;
    CHECK("llama all biases", hf_layer_tensor_count(&c) == 16 &&
                                  hf_tensor_find(&c, "model.layers.1.self_attn.o_proj.bias") > 0 &&
                                  hf_tensor_find(&c, "model.layers.1.mlp.up_proj.bias") > 0);
    i = hf_tensor_find(&c, "model.layers.1.mlp.up_proj.bias");
    hf_tensor_info(&c, i, &t);
    CHECK("up bias shape", t.ndim == 1 && t.shape[0] == 128);

    load("tiny-llama-rm.json", &c);
    n = hf_tensor_count(&c);
    hf_tensor_info(&c, n - 1, &t);
    CHECK("score head", !strcmp(t.name, "score.weight") && t.shape[0] == 1 && t.shape[1] == 64 &&
                            t.init == HF_INIT_NORMAL);
    CHECK("rm has no lm_head", hf_tensor_find(&c, "lm_head.weight") == -1);

    load("tiny-llama3-tied.json", &c);
    i = hf_tensor_find(&c, "model.layers.0.self_attn.q_proj.weight");
    hf_tensor_info(&c, i, &t);
    CHECK("head_dim x heads != hidden ok", t.shape[0] == 48 && t.shape[1] == 48);

    config_defaults(&c, ARCH_MISTRAL, HEAD_SCORE);
    c.hidden_size = 32, c.intermediate_size = 64, c.num_hidden_layers = 1, c.num_attention_heads = 4,
    c.vocab_size = 50;
    CHECK("defaults + check", config_check(&c, "code") == 0 && c.head_dim == 8 && c.num_key_value_heads == 4 &&
                                  !strcmp(c.architecture, "MistralForSequenceClassification") &&
                                  hf_tensor_count(&c) == 1 + 9 + 1 + 1);
}

int main(void)
{
    const char *root = getenv("RL_ROOT");
    snprintf(fixdir, sizeof fixdir, "%s/tests/data/configs", root ? root : ".");
    test_fixtures();
    test_defaults();
    test_errors();
    test_save();
    test_layout();
    return harness_exit();
}
