/* rl-init: a new model directory with seeded random weights.
 *
 *   rl-init --config CONFIG.json -o DIR [--seed N] [--tokenizer PATH] [--dtype f32|bf16|f16]
 *
 * Writes DIR/config.json (normalized), DIR/model.safetensors and, with
 * --tokenizer, the tokenizer files. DIR is built under a temporary name and
 * renamed into place. Each tensor draws from its own RNG stream seeded by
 * rng_hash(seed, tensor name), so a tensor's values depend only on the seed,
 * its name and its shape (see docs/checkpoints.md). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "fsutil.h"
#include "rng.h"
#include "safetensors.h"
#include "weights_layout.h"

static const char usage[] =
    "usage: rl-init --config CONFIG.json -o DIR [options]\n"
    "Write a model directory (config.json, model.safetensors, tokenizer files)\n"
    "with seeded random weights: normal(0, std) for matrices, ones for norms,\n"
    "zeros for biases.\n"
    "\n"
    "  -c, --config FILE     model config.json (Llama, Mistral, Qwen2; causal LM or\n"
    "                        sequence classification)\n"
    "  -o, --output DIR      directory to create (must not exist unless --force)\n"
    "  -s, --seed N          random seed (default 0)\n"
    "  -t, --tokenizer PATH  copy tokenizer.json (and tokenizer_config.json,\n"
    "                        special_tokens_map.json beside it) from a file or directory\n"
    "  -d, --dtype TYPE      f32, bf16 or f16 (default: the config's torch_dtype)\n"
    "      --std X           standard deviation of the weights (default: the\n"
    "                        config's initializer_range, else 0.02)\n"
    "  -f, --force           replace DIR if it exists\n"
    "  -q, --quiet           no summary on stderr\n"
    "  -h, --help            show this help\n";

struct init_opts {
    const char *config, *out, *tokenizer, *dtype;
    uint64_t seed;
    double std;               /* < 0: from the config */
    bool force, quiet;
};

static struct init_opts parse_opts(int argc, char **argv)
{
    struct init_opts o = {.std = -1};
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'}, {"output", required_argument, 0, 'o'},
        {"seed", required_argument, 0, 's'},   {"tokenizer", required_argument, 0, 't'},
        {"dtype", required_argument, 0, 'd'},  {"std", required_argument, 0, 'S'},
        {"force", no_argument, 0, 'f'},        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "c:o:s:t:d:fqh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o.config = optarg; break;
        case 'o': o.out = optarg; break;
        case 't': o.tokenizer = optarg; break;
        case 'd': o.dtype = optarg; break;
        case 'f': o.force = true; break;
        case 'q': o.quiet = true; break;
        case 's':
            errno = 0;
            o.seed = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end || optarg[0] == '-')
                rl_usage_error("--seed: '%s' is not a non-negative integer", optarg);
            break;
        case 'S':
            o.std = strtod(optarg, &end);
            if (end == optarg || *end || !(o.std >= 0 && o.std < 10))
                rl_usage_error("--std: '%s' is not a number in [0, 10)", optarg);
            break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("try --help");
        }
    }
    if (optind < argc)
        rl_usage_error("unexpected argument '%s'", argv[optind]);
    if (!o.config)
        rl_usage_error("--config is required");
    if (!o.out)
        rl_usage_error("-o DIR is required");
    return o;
}

/* The weights: every tensor of the layout, in one allocation. */
struct weights {
    int n;
    struct hf_tensor *t;
    float *data;              /* all tensors back to back */
    int64_t total;
};

static void weights_init(struct weights *w, const struct model_config *c, uint64_t seed, float std)
{
    w->n = hf_tensor_count(c);
    w->t = rl_calloc((size_t)w->n, sizeof *w->t);
    int64_t *off = rl_calloc((size_t)w->n, sizeof *off);
    w->total = 0;
    for (int i = 0; i < w->n; i++) {
        hf_tensor_info(c, i, &w->t[i]);
        off[i] = w->total;
        w->total += w->t[i].numel;
    }
    w->data = rl_malloc((size_t)(w->total ? w->total : 1) * sizeof(float));
    /* One RNG stream per tensor: values do not depend on thread count or order. */
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < w->n; i++) {
        const struct hf_tensor *t = &w->t[i];
        float *p = w->data + off[i];
        struct rng r;
        rng_seed(&r, rng_hash(seed, t->name, strlen(t->name), 0));
        for (int64_t k = 0; k < t->numel; k++)
            p[k] = t->init == HF_INIT_ONES ? 1.0f : t->init == HF_INIT_ZEROS ? 0.0f : std * rng_normal(&r);
    }
    free(off);
}

static int weights_save(const struct weights *w, const char *path, enum st_dtype dtype)
{
    struct st_out_tensor *out = rl_calloc((size_t)w->n, sizeof *out);
    const float *p = w->data;
    for (int i = 0; i < w->n; i++) {
        out[i] = (struct st_out_tensor){.name = w->t[i].name, .dtype = dtype, .ndim = w->t[i].ndim, .data = p};
        out[i].shape[0] = w->t[i].shape[0];
        out[i].shape[1] = w->t[i].shape[1];
        p += w->t[i].numel;
    }
    int rc = st_write(path, out, (size_t)w->n);
    free(out);
    return rc;
}

/* Copy `name` from srcdir into dir; -1 on error, 0 if copied, 1 if absent and optional. */
static int copy_from(const char *srcdir, const char *name, const char *dir, bool required)
{
    char src[FS_PATH_MAX], dst[FS_PATH_MAX];
    if (fs_join(src, sizeof src, srcdir, name) < 0 || fs_join(dst, sizeof dst, dir, name) < 0)
        return -1;
    if (!fs_exists(src))
        return required ? rl_err("%s: no %s there", srcdir, name) : 1;
    return fs_copy_file(src, dst);
}

/* Check a tokenizer.json is at least a JSON object before copying it. */
static int check_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        return rl_err("%s: not valid JSON: %s (line %d)", path, je.text, je.line);
    bool obj = json_is_object(j);
    json_decref(j);
    return obj ? 0 : rl_err("%s: not a JSON object", path);
}

/* PATH is a directory holding tokenizer.json, or the tokenizer.json file itself
 * (its directory then supplies the optional companions). */
static int copy_tokenizer(const char *path, const char *dir)
{
    static const char *extra[] = {"tokenizer_config.json", "special_tokens_map.json"};
    char srcdir[FS_PATH_MAX], tj[FS_PATH_MAX], dst[FS_PATH_MAX];
    if (fs_is_dir(path)) {
        snprintf(srcdir, sizeof srcdir, "%s", path);
        if (fs_join(tj, sizeof tj, path, "tokenizer.json") < 0)
            return -1;
        if (!fs_exists(tj))
            return rl_err("--tokenizer %s: no tokenizer.json in this directory", path);
    } else {
        if (!fs_exists(path))
            return rl_err("--tokenizer %s: no such file or directory", path);
        snprintf(tj, sizeof tj, "%s", path);
        char copy[FS_PATH_MAX];
        snprintf(copy, sizeof copy, "%s", path);
        snprintf(srcdir, sizeof srcdir, "%s", dirname(copy));
    }
    if (check_json(tj) < 0 || fs_join(dst, sizeof dst, dir, "tokenizer.json") < 0 || fs_copy_file(tj, dst) < 0)
        return -1;
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
        if (copy_from(srcdir, extra[i], dir, false) < 0)
            return -1;
    return 0;
}

static const char *dtype_config_name(enum st_dtype t)
{
    return t == ST_BF16 ? "bfloat16" : t == ST_F16 ? "float16" : "float32";
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct init_opts o = parse_opts(argc, argv);
    enum st_dtype dtype;
    if (o.dtype && st_dtype_parse(o.dtype, &dtype) < 0)
        rl_usage_error("--dtype: '%s' is not f32, bf16 or f16", o.dtype);

    struct model_config c;
    if (config_load(o.config, &c) < 0)
        rl_die_err();
    if (!o.dtype)
        st_dtype_parse(c.torch_dtype, &dtype);        /* always one of the three */
    snprintf(c.torch_dtype, sizeof c.torch_dtype, "%s", dtype_config_name(dtype));
    float std = o.std >= 0 ? (float)o.std : c.initializer_range;
    c.initializer_range = std;

    char tmp[FS_PATH_MAX], path[FS_PATH_MAX];
    if (fs_dir_begin(o.out, tmp, sizeof tmp, o.force) < 0)
        rl_die_err();
    struct weights w;
    weights_init(&w, &c, o.seed, std);
    int rc = fs_join(path, sizeof path, tmp, "config.json");
    if (rc == 0)
        rc = config_save(path, &c);
    if (rc == 0 && (rc = fs_join(path, sizeof path, tmp, "model.safetensors")) == 0)
        rc = weights_save(&w, path, dtype);
    if (rc == 0 && o.tokenizer)
        rc = copy_tokenizer(o.tokenizer, tmp);
    if (rc == 0)
        rc = fs_dir_commit(tmp, o.out, o.force);
    free(w.data);
    free(w.t);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rl_errmsg());
        fs_rm_rf(tmp);
        rl_die("%s", msg);
    }
    if (!o.quiet && isatty(STDERR_FILENO))
        fprintf(stderr, "rl-init: wrote %s: %s, %d tensors, %" PRId64 " parameters, %s, seed %" PRIu64 "\n",
                o.out, c.architecture, w.n, w.total, st_dtype_name(dtype), o.seed);
    return 0;
}
