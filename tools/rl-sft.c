/* rl-sft: supervised fine-tuning on prompt/response records, the stage
 * before RLHF. See man/rl-sft.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "err.h"
#include "fsutil.h"
#include "rec.h"
#include "sft.h"
#include "tokrule.h"
#include "train.h"
#include "train_cli.h"

static const char usage_head[] =
    "Usage: rl-sft -m MODEL_DIR -o OUT_DIR [OPTION]... [FILE]...\n"
    "Fine-tune MODEL_DIR on records with a prompt (prompt_ids, messages or prompt) and a\n"
    "response (response_ids or response): the loss is the mean NLL of response tokens.\n"
    "One metrics record per optimizer step goes to stdout. Defaults: --lr 2e-5, --batch 32.\n"
    "\n"
    "      --pack                 fill each forward with examples up to --max-length tokens\n"
    "                             (no attention across examples; replaces --micro-batch)\n";

struct sft_opts {
    struct train_cli cli;
    bool pack;
};

static struct sft_opts parse_args(int argc, char **argv)
{
    enum { O_PACK = TRAIN_CLI_TOOL_CODES };
    static const struct option mine[] = {{"pack", no_argument, 0, O_PACK}, {0, 0, 0, 0}};
    struct sft_opts o = {0};
    train_cli_defaults(&o.cli, 2e-5, 32);
    const struct option *longopts = train_cli_options(mine);
    int c;
    while ((c = getopt_long(argc, argv, TRAIN_CLI_SHORTOPTS, longopts, NULL)) != -1) {
        if (train_cli_handle(&o.cli, c, optarg))
            continue;
        switch (c) {
        case O_PACK: o.pack = true; break;
        case 'h': fputs(usage_head, stdout); fputs(train_cli_usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    train_cli_check(&o.cli);
    return o;
}

static int add_example(struct sft_data *d, struct tok_ctx *tc, const struct rec *r, const struct sft_opts *o,
                       struct tok_ids ids[2])
{
    ids[0].n = ids[1].n = 0;
    if (tok_ctx_prompt(tc, r, &ids[0]) || tok_ctx_response(tc, r, "response_ids", "response", &ids[1]))
        return -1;
    if (!ids[0].n)
        return rec_err(r, "the prompt is empty: a response needs at least one token before it");
    if (!ids[1].n)
        return rec_err(r, "the response is empty");
    sft_data_add(d, ids[0].v, (int)ids[0].n, ids[1].v, (int)ids[1].n, o->cli.max_length, o->cli.max_prompt_length);
    return 0;
}

static int load_examples(struct sft_data *d, const struct sft_opts *o, int argc, char **argv)
{
    struct model_config cfg;
    char path[FS_PATH_MAX];
    if (fs_join(path, sizeof path, o->cli.train.model_dir, "config.json") || config_load(path, &cfg))
        return -1;
    struct tok_ctx tc;
    if (tok_ctx_open(&tc, o->cli.train.model_dir, &cfg, o->cli.template_name))
        return -1;
    struct tok_ids ids[2] = {{0}};
    char *stdin_only[] = {"-"};
    char **inputs = argc > 0 ? argv : stdin_only;
    int rc = 0;
    for (int i = 0; i < (argc > 0 ? argc : 1) && !rc; i++) {
        struct rec_reader *r = rec_reader_open(inputs[i]);
        if (!r) {
            rc = -1;
            break;
        }
        struct rec rec;
        int k;
        while ((k = rec_next(r, &rec)) == 1 && !(rc = add_example(d, &tc, &rec, o, ids)))
            ;
        if (k < 0)
            rc = -1;
        rec_reader_close(r);
    }
    free(ids[0].v);
    free(ids[1].v);
    tok_ctx_close(&tc);
    return rc;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct sft_opts o = parse_args(argc, argv);
    if (rl_refuse_tty(STDOUT_FILENO, false))
        rl_die("refusing to write the metrics stream to a terminal (pipe it, e.g. | rl-cat)");
    struct sft_data data = {0};
    if (load_examples(&data, &o, argc - optind, argv + optind))
        rl_die_err();
    if (data.truncated)
        rl_warn("%zu of %zu examples were shortened to --max-length %d / --max-prompt-length %d", data.truncated,
                data.n, o.cli.max_length, o.cli.max_prompt_length);
    struct sft_task task;
    sft_task_init(&task, &data, o.pack ? (size_t)o.cli.max_length : 0);
    struct rec_writer *w = rec_writer_open(STDOUT_FILENO, o.cli.level, "stdout");
    int rc = train_run(&o.cli.train, &task.task, w);
    char *err = rc ? rl_strdup(rl_errmsg()) : NULL;
    if (rec_writer_close(w) && !err)
        err = rl_strdup(rl_errmsg());
    sft_task_free(&task);
    sft_data_free(&data);
    if (err)
        rl_die("%s", err);
    return 0;
}
