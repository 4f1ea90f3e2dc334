/* rl-rm: train a Bradley-Terry reward model on preference pairs. See man/rl-rm.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "rec.h"
#include "rm.h"
#include "rng.h"
#include "train.h"
#include "train_cli.h"

static const char usage_head[] =
    "Usage: rl-rm -m MODEL_DIR -o OUT_DIR [OPTION]... [FILE]...\n"
    "Train a Bradley-Terry reward model on pair records (prompt_ids, messages or prompt;\n"
    "chosen_ids or chosen; rejected_ids or rejected; optional margin). MODEL_DIR is a\n"
    "causal LM (a score head is added) or a reward model. One metrics record per step\n"
    "goes to stdout. Defaults: --lr 2e-6, --batch 128, --max-length 2048 (left truncation).\n"
    "\n"
    "      --eval FILE            held-out pairs: accuracy, margin, loss, reward mean/std\n"
    "      --eval-frac F          hold out this fraction of the input pairs instead\n";

struct rm_opts {
    struct train_cli cli;
    const char *eval_file;
    double eval_frac;
};

static struct rm_opts parse_args(int argc, char **argv)
{
    enum { O_EVAL = TRAIN_CLI_TOOL_CODES, O_FRAC };
    static const struct option mine[] = {
        {"eval", required_argument, 0, O_EVAL}, {"eval-frac", required_argument, 0, O_FRAC}, {0, 0, 0, 0},
    };
    struct rm_opts o = {0};
    train_cli_defaults(&o.cli, 2e-6, 128);
    const struct option *longopts = train_cli_options(mine);
    int c;
    while ((c = getopt_long(argc, argv, TRAIN_CLI_SHORTOPTS, longopts, NULL)) != -1) {
        if (train_cli_handle(&o.cli, c, optarg))
            continue;
        switch (c) {
        case O_EVAL: o.eval_file = optarg; break;
        case O_FRAC: o.eval_frac = cli_double("--eval-frac", optarg, 0, 0.99); break;
        case 'h': fputs(usage_head, stdout); fputs(train_cli_usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    train_cli_check(&o.cli);
    if (o.eval_file && o.eval_frac)
        rl_usage_error("--eval and --eval-frac do not go together");
    return o;
}

struct loader {
    const struct rm_opts *o;
    struct rm_data *train, *eval;   /* eval NULL: everything trains */
    uint64_t index;
};

static int add_pair(void *ctx, struct train_input *in, const struct rec *r)
{
    static const char *const fields[] = {"chosen_ids", "chosen", "rejected_ids", "rejected"};
    struct loader *l = ctx;
    if (train_input_tokenize(in, r, 2, fields))
        return -1;
    double margin = 0;
    if (rec_get_f64(r, "margin", &margin) < 0)
        return -1;
    /* --eval-frac: a pair's side depends on the seed and its position only */
    struct rm_data *d = l->train;
    if (l->eval && l->o->eval_frac > 0) {
        uint64_t h = rng_hash(l->o->cli.train.seed, "eval", 4, l->index);
        if ((double)(h >> 11) * 0x1.0p-53 < l->o->eval_frac)
            d = l->eval;
    } else if (l->eval) {
        d = l->eval;
    }
    l->index++;
    const struct tok_ids *ids = in->ids;
    rm_data_add(d, ids[0].v, (int)ids[0].n, ids[1].v, (int)ids[1].n, ids[2].v, (int)ids[2].n, margin,
                l->o->cli.max_length);
    return 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct rm_opts o = parse_args(argc, argv);
    train_cli_stdout_check();
    struct rm_data train = {0}, eval = {0};
    struct train_input in;
    struct loader l = {&o, &train, o.eval_frac > 0 ? &eval : NULL, 0};
    if (train_input_open(&in, &o.cli) || train_input_read(&in, argc - optind, argv + optind, add_pair, &l))
        rl_die_err();
    if (o.eval_file) {
        char *one[] = {(char *)o.eval_file};
        l.train = l.eval = &eval;
        if (train_input_read(&in, 1, one, add_pair, &l))
            rl_die_err();
    }
    train_input_close(&in);
    if (train.truncated + eval.truncated)
        rl_warn("%zu sequences were longer than --max-length %d and lost tokens on the left",
                train.truncated + eval.truncated, o.cli.max_length);
    struct rm_task task;
    rm_task_init(&task, &train, eval.n ? &eval : NULL, o.cli.train.seed);
    int rc = train_cli_run(&o.cli, &task.task);
    rm_task_free(&task);
    rm_data_free(&train);
    rm_data_free(&eval);
    if (rc)
        rl_die_err();
    return 0;
}
