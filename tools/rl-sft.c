/* rl-sft: supervised fine-tuning on prompt/response records, the stage
 * before RLHF. See man/rl-sft.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "rec.h"
#include "sft.h"
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

struct sink { const struct sft_opts *o; struct sft_data *d; };

static int add_example(void *ctx, struct train_input *in, const struct rec *r)
{
    static const char *const fields[] = {"response_ids", "response"};
    const struct sft_opts *o = ((struct sink *)ctx)->o;
    if (train_input_tokenize(in, r, 1, fields))
        return -1;
    sft_data_add(((struct sink *)ctx)->d, in->ids[0].v, (int)in->ids[0].n, in->ids[1].v, (int)in->ids[1].n,
                 o->cli.max_length, o->cli.max_prompt_length);
    return 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct sft_opts o = parse_args(argc, argv);
    train_cli_stdout_check();
    struct sft_data data = {0};
    struct train_input in;
    struct sink sink = {&o, &data};
    if (train_input_open(&in, &o.cli) || train_input_read(&in, argc - optind, argv + optind, add_example, &sink))
        rl_die_err();
    train_input_close(&in);
    if (data.truncated)
        rl_warn("%zu of %zu examples were shortened to --max-length %d / --max-prompt-length %d", data.truncated,
                data.n, o.cli.max_length, o.cli.max_prompt_length);
    struct sft_task task;
    sft_task_init(&task, &data, o.pack ? (size_t)o.cli.max_length : 0);
    int rc = train_cli_run(&o.cli, &task.task);
    sft_task_free(&task);
    sft_data_free(&data);
    if (rc)
        rl_die_err();
    return 0;
}
