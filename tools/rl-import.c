/* rl-import: a GGUF file (llama architecture) -> a Hugging Face model directory.
 *
 *   rl-import FILE.gguf -o DIR [--dtype f32|bf16|f16] [--force] [-q]
 *
 * DIR gets config.json, model.safetensors, tokenizer.json and
 * tokenizer_config.json; it is built under a temporary name and renamed into
 * place (docs/gguf.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "fsutil.h"
#include "gguf.h"
#include "gguf_import.h"

static const char usage[] =
    "usage: rl-import FILE.gguf -o DIR [options]\n"
    "Convert a GGUF model (llama architecture, byte-level BPE tokenizer) into a\n"
    "Hugging Face model directory: config.json, model.safetensors (dequantized),\n"
    "tokenizer.json, tokenizer_config.json.\n"
    "\n"
    "  -o, --output DIR   directory to create (must not exist unless --force)\n"
    "  -d, --dtype TYPE   f32, bf16 or f16 for the weights (default f32: exact)\n"
    "  -f, --force        replace DIR if it exists\n"
    "  -q, --quiet        no progress or summary on stderr\n"
    "  -h, --help         show this help\n";

struct import_opts {
    const char *in, *out;
    enum st_dtype dtype;
    bool force, quiet;
};

static struct import_opts parse_opts(int argc, char **argv)
{
    struct import_opts o = {.dtype = ST_F32};
    static const struct option longopts[] = {
        {"output", required_argument, 0, 'o'}, {"dtype", required_argument, 0, 'd'},
        {"force", no_argument, 0, 'f'},        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "o:d:fqh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'o': o.out = optarg; break;
        case 'd':
            if (st_dtype_parse(optarg, &o.dtype) < 0)
                rl_usage_error("--dtype: '%s' is not f32, bf16 or f16", optarg);
            break;
        case 'f': o.force = true; break;
        case 'q': o.quiet = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("try --help");
        }
    }
    if (optind >= argc)
        rl_usage_error("a GGUF file is required");
    o.in = argv[optind++];
    if (optind < argc)
        rl_usage_error("unexpected argument '%s'", argv[optind]);
    if (!o.out)
        rl_usage_error("-o DIR is required");
    return o;
}

static void progress(void *ctx, int done, int total, const char *name)
{
    (void)ctx;
    fprintf(stderr, "\rrl-import: tensor %d/%d %-40.40s", done + 1, total, name);
    if (done + 1 == total)
        fputc('\n', stderr);
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct import_opts o = parse_opts(argc, argv);
    bool tty = !o.quiet && isatty(STDERR_FILENO);
    struct gguf *g = gguf_open(o.in);
    if (!g)
        rl_die_err();
    char tmp[FS_PATH_MAX];
    if (fs_dir_begin(o.out, tmp, sizeof tmp, o.force) < 0)
        rl_die_err();
    struct gguf_import_opts io = {.dtype = o.dtype, .progress = tty ? progress : NULL};
    int rc = gguf_import(g, tmp, &io);
    if (rc == 0)
        rc = fs_dir_commit(tmp, o.out, o.force);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rl_errmsg());
        fs_rm_rf(tmp);
        gguf_close(g);
        rl_die("%s", msg);
    }
    if (tty)
        fprintf(stderr, "rl-import: wrote %s (%zu tensors from GGUF v%u, %s)\n", o.out, gguf_n_tensors(g),
                (unsigned)gguf_version(g), st_dtype_name(o.dtype));
    gguf_close(g);
    return 0;
}
