/* rl-rm: train a Bradley-Terry reward model on preference pairs. See man/rl-rm.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "err.h"
#include "fsutil.h"
#include "rec.h"
#include "rm.h"
#include "rng.h"
#include "tokrule.h"
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
    struct tok_ctx tc;
    struct tok_ids ids[3];
    uint64_t index;
};

static int add_pair(struct loader *l, const struct rec *r, struct rm_data *train, struct rm_data *eval)
{
    for (int i = 0; i < 3; i++)
        l->ids[i].n = 0;
    if (tok_ctx_prompt(&l->tc, r, &l->ids[0]) || tok_ctx_response(&l->tc, r, "chosen_ids", "chosen", &l->ids[1]) ||
        tok_ctx_response(&l->tc, r, "rejected_ids", "rejected", &l->ids[2]))
        return -1;
    if (!l->ids[1].n || !l->ids[2].n)
        return rec_err(r, "an empty %s response cannot be scored", l->ids[1].n ? "rejected" : "chosen");
    double margin = 0;
    if (rec_get_f64(r, "margin", &margin) < 0)
        return -1;
    /* --eval-frac: a pair's side depends on the seed and its position only */
    struct rm_data *d = train;
    if (eval && l->o->eval_frac > 0) {
        uint64_t h = rng_hash(l->o->cli.train.seed, "eval", 4, l->index);
        if ((double)(h >> 11) * 0x1.0p-53 < l->o->eval_frac)
            d = eval;
    } else if (eval) {
        d = eval;
    }
    l->index++;
    rm_data_add(d, l->ids[0].v, (int)l->ids[0].n, l->ids[1].v, (int)l->ids[1].n, l->ids[2].v, (int)l->ids[2].n,
                margin, l->o->cli.max_length);
    return 0;
}

static int load(struct loader *l, int n, char **paths, struct rm_data *train, struct rm_data *eval)
{
    char *stdin_only[] = {"-"};
    for (int i = 0; i < (n > 0 ? n : 1); i++) {
        struct rec_reader *r = rec_reader_open(n > 0 ? paths[i] : stdin_only[0]);
        if (!r)
            return -1;
        struct rec rec;
        int k, rc = 0;
        while ((k = rec_next(r, &rec)) == 1 && !(rc = add_pair(l, &rec, train, eval)))
            ;
        rec_reader_close(r);
        if (k < 0 || rc)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct rm_opts o = parse_args(argc, argv);
    if (rl_refuse_tty(STDOUT_FILENO, false))
        rl_die("refusing to write the metrics stream to a terminal (pipe it, e.g. | rl-cat)");
    struct model_config cfg;
    char path[FS_PATH_MAX];
    struct loader l = {.o = &o};
    if (fs_join(path, sizeof path, o.cli.train.model_dir, "config.json") || config_load(path, &cfg) ||
        tok_ctx_open(&l.tc, o.cli.train.model_dir, &cfg, o.cli.template_name))
        rl_die_err();
    struct rm_data train = {0}, eval = {0};
    if (load(&l, argc - optind, argv + optind, &train, o.eval_frac > 0 ? &eval : NULL))
        rl_die_err();
    if (o.eval_file) {
        char *one[] = {(char *)o.eval_file};
        if (load(&l, 1, one, &eval, &eval))
            rl_die_err();
    }
    for (int i = 0; i < 3; i++)
        free(l.ids[i].v);
    tok_ctx_close(&l.tc);
    if (train.truncated + eval.truncated)
        rl_warn("%zu sequences were longer than --max-length %d and lost tokens on the left",
                train.truncated + eval.truncated, o.cli.max_length);
    struct rm_task task;
    rm_task_init(&task, &train, eval.n ? &eval : NULL, o.cli.train.seed);
    struct rec_writer *w = rec_writer_open(STDOUT_FILENO, o.cli.level, "stdout");
    int rc = train_run(&o.cli.train, &task.task, w);
    char *err = rc ? rl_strdup(rl_errmsg()) : NULL;
    if (rec_writer_close(w) && !err)
        err = rl_strdup(rl_errmsg());
    rm_task_free(&task);
    rm_data_free(&train);
    rm_data_free(&eval);
    if (err)
        rl_die("%s", err);
    return 0;
}
