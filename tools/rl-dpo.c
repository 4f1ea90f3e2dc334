/* rl-dpo: train a policy with DPO (or IPO, hinge, RPO) on preference pairs
 * that carry precomputed reference log-probs. See man/rl-dpo.1. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "dpo.h"
#include "err.h"
#include "rec.h"
#include "train.h"
#include "train_cli.h"

static const char usage_head[] =
    "Usage: rl-dpo -m POLICY_DIR -o OUT_DIR [OPTION]... [FILE]...\n"
    "Train POLICY_DIR with direct preference optimization on pair records (prompt_ids,\n"
    "chosen_ids, rejected_ids, ref_chosen_logp, ref_rejected_logp) and write OUT_DIR.\n"
    "One metrics record per optimizer step goes to stdout. Defaults: --lr 5e-7, --batch 128.\n"
    "\n"
    "      --ref DIR              compute missing reference log-probs with this model\n"
    "      --loss L               sigmoid (DPO, default), ipo, hinge\n"
    "      --beta B               default 0.1\n"
    "      --label-smoothing E    conservative DPO (sigmoid loss), default 0\n"
    "      --nll-coef A           add A * NLL of the chosen response (RPO), default 0\n";

struct dpo_opts {
    struct train_cli cli;
    struct dpo_params dpo;
    const char *ref_dir;
};

static struct dpo_opts parse_args(int argc, char **argv)
{
    enum { O_REF = TRAIN_CLI_TOOL_CODES, O_LOSS, O_BETA, O_LS, O_NLL };
    static const struct option mine[] = {
        {"ref", required_argument, 0, O_REF}, {"loss", required_argument, 0, O_LOSS},
        {"beta", required_argument, 0, O_BETA}, {"label-smoothing", required_argument, 0, O_LS},
        {"nll-coef", required_argument, 0, O_NLL}, {0, 0, 0, 0},
    };
    struct dpo_opts o = {.dpo = {.loss = DPO_SIGMOID, .beta = 0.1}};
    train_cli_defaults(&o.cli, 5e-7, 128);
    const struct option *longopts = train_cli_options(mine);
    int c;
    while ((c = getopt_long(argc, argv, TRAIN_CLI_SHORTOPTS, longopts, NULL)) != -1) {
        if (train_cli_handle(&o.cli, c, optarg))
            continue;
        switch (c) {
        case O_REF: o.ref_dir = optarg; break;
        case O_LOSS: if (dpo_loss_parse(optarg, &o.dpo.loss)) rl_usage_error("--loss: %s", rl_errmsg()); break;
        case O_BETA: o.dpo.beta = cli_double("--beta", optarg, 1e-9, 1e9); break;
        case O_LS: o.dpo.label_smoothing = cli_double("--label-smoothing", optarg, 0, 0.5); break;
        case O_NLL: o.dpo.nll_coef = cli_double("--nll-coef", optarg, 0, 1e9); break;
        case 'h': fputs(usage_head, stdout); fputs(train_cli_usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    train_cli_check(&o.cli);
    return o;
}

/* One pair record into the data set. */
struct sink { const struct dpo_opts *o; struct dpo_data *d; };

static int add_pair(void *ctx, struct train_input *in, const struct rec *r)
{
    static const char *const fields[] = {"chosen_ids", "chosen", "rejected_ids", "rejected"};
    const struct dpo_opts *o = ((struct sink *)ctx)->o;
    struct dpo_data *d = ((struct sink *)ctx)->d;
    if (train_input_tokenize(in, r, 2, fields))
        return -1;
    double rc, rr;
    int a = rec_get_f64(r, "ref_chosen_logp", &rc), b = rec_get_f64(r, "ref_rejected_logp", &rr);
    if (a < 0 || b < 0)
        return -1;
    if ((!a || !b) && !o->ref_dir)
        return rec_err(r, "no \"ref_chosen_logp\"/\"ref_rejected_logp\": run rl-logp -m REF_DIR on the pairs "
                       "first, or give --ref REF_DIR");
    if (!a || !b)
        rc = rr = NAN;                       /* computed by fill_refs() */
    const struct tok_ids *ids = in->ids;
    dpo_data_add(d, ids[0].v, (int)ids[0].n, ids[1].v, (int)ids[1].n, ids[2].v, (int)ids[2].n, rc, rr,
                 o->cli.max_length, o->cli.max_prompt_length);
    return 0;
}

/* --ref: the reference log-probs a pair lacks, on the same (possibly
 * shortened) sequences that training will see. */
static int fill_refs(struct dpo_data *d, const struct dpo_opts *o)
{
    size_t missing = 0;
    for (size_t i = 0; i < d->n; i++)
        missing += isnan(d->pair[i].ref_chosen);
    if (!missing)
        return 0;
    struct model *ref = model_open(o->ref_dir, o->cli.train.device);
    if (!ref)
        return rl_err_prefix("--ref");
    ref->batch_invariant = !o->cli.train.batch_gemm;
    enum { CHUNK = 8 };
    const int *prompt[2 * CHUNK], *resp[2 * CHUNK];
    int plen[2 * CHUNK], rlen[2 * CHUNK];
    double out[2 * CHUNK];
    int rc = 0;
    for (size_t i = 0; i < d->n && !rc;) {
        int n = 0;
        size_t at[CHUNK];
        for (; i < d->n && n < CHUNK; i++) {
            struct dpo_pair *p = &d->pair[i];
            if (!isnan(p->ref_chosen))
                continue;
            at[n] = i;
            prompt[2 * n] = prompt[2 * n + 1] = d->ids + p->prompt;
            plen[2 * n] = plen[2 * n + 1] = p->plen;
            resp[2 * n] = d->ids + p->chosen;
            rlen[2 * n] = p->clen;
            resp[2 * n + 1] = d->ids + p->rejected;
            rlen[2 * n + 1] = p->rlen;
            n++;
        }
        if (n && (rc = model_response_logps(ref, 2 * n, prompt, plen, resp, rlen, out)) == 0)
            for (int k = 0; k < n; k++) {
                d->pair[at[k]].ref_chosen = out[2 * k];
                d->pair[at[k]].ref_rejected = out[2 * k + 1];
            }
    }
    model_close(ref);
    return rc ? rl_err_prefix("--ref") : 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct dpo_opts o = parse_args(argc, argv);
    train_cli_stdout_check();
    struct dpo_data data = {0};
    struct train_input in;
    struct sink sink = {&o, &data};
    if (train_input_open(&in, &o.cli) || train_input_read(&in, argc - optind, argv + optind, add_pair, &sink))
        rl_die_err();
    train_input_close(&in);
    if (o.ref_dir && fill_refs(&data, &o))
        rl_die_err();
    if (data.truncated)
        rl_warn("%zu of %zu pairs were shortened to --max-length %d / --max-prompt-length %d; their reference "
                "log-probs must come from rl-logp with the same limits", data.truncated, data.n, o.cli.max_length,
                o.cli.max_prompt_length);
    struct dpo_task task;
    dpo_task_init(&task, &data, &o.dpo);
    int rc = train_cli_run(&o.cli, &task.task);
    dpo_task_free(&task);
    dpo_data_free(&data);
    if (rc)
        rl_die_err();
    return 0;
}
