#include "train_cli.h"

#include <stdint.h>
#include <string.h>

#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "err.h"
#include "fsutil.h"

enum {
    O_LR = 256, O_SCHED, O_WARM, O_WD, O_CLIP, O_BATCH, O_MICRO, O_EPOCHS, O_MAXLEN, O_MAXPROMPT, O_SAVE,
    O_MAXSTEPS, O_RESUME, O_KEEP, O_FORCE, O_SEED, O_DEVICE, O_TEMPLATE, O_BATCHGEMM,
};

static const struct option shared[] = {
    {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
    {"lr", required_argument, 0, O_LR}, {"schedule", required_argument, 0, O_SCHED},
    {"warmup-ratio", required_argument, 0, O_WARM}, {"weight-decay", required_argument, 0, O_WD},
    {"max-grad-norm", required_argument, 0, O_CLIP}, {"batch", required_argument, 0, O_BATCH},
    {"micro-batch", required_argument, 0, O_MICRO}, {"epochs", required_argument, 0, O_EPOCHS},
    {"max-length", required_argument, 0, O_MAXLEN}, {"max-prompt-length", required_argument, 0, O_MAXPROMPT},
    {"save-every", required_argument, 0, O_SAVE}, {"max-steps", required_argument, 0, O_MAXSTEPS},
    {"resume", no_argument, 0, O_RESUME}, {"keep-state", no_argument, 0, O_KEEP},
    {"force", no_argument, 0, O_FORCE}, {"seed", required_argument, 0, O_SEED},
    {"device", required_argument, 0, O_DEVICE}, {"template", required_argument, 0, O_TEMPLATE},
    {"batch-gemm", no_argument, 0, O_BATCHGEMM},
    {"level", required_argument, 0, 'L'}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
};

const char train_cli_usage[] =
    "  -m, --model DIR            the model to train (Hugging Face layout)\n"
    "  -o, --output DIR           where the trained model goes (atomically)\n"
    "      --lr LR                peak learning rate\n"
    "      --schedule S           constant, linear or cosine (default)\n"
    "      --warmup-ratio R       fraction of steps with linear warmup, default 0.03\n"
    "      --weight-decay W       AdamW decoupled weight decay on matrices, default 0\n"
    "      --max-grad-norm N      clip the global gradient norm (0: off), default 1.0\n"
    "      --batch N              examples per optimizer step\n"
    "      --micro-batch N        examples per forward/backward (accumulation), default 4\n"
    "      --epochs N             default 1\n"
    "      --max-length N         tokens of prompt + response, default 2048\n"
    "      --max-prompt-length N  the prompt keeps its end, default 1024\n"
    "      --save-every N         checkpoint every N steps (0: at the end only)\n"
    "      --max-steps N          stop after N steps of this run, with a checkpoint\n"
    "      --resume               continue the run checkpointed in OUT_DIR\n"
    "      --keep-state           keep the trainer state in the final OUT_DIR\n"
    "      --force                replace an existing OUT_DIR\n"
    "      --seed S               data order, default 0\n"
    "      --device D             auto (default: $RL_DEVICE, else cuda on a GPU, else cpu), cpu, cuda\n"
    "      --batch-gemm           one product per layer for a whole micro-batch, not one per\n"
    "                             sequence: faster on a GPU; results then depend on the\n"
    "                             micro-batch in the last bits\n"
    "      --template NAME        chat template for records with messages\n"
    "  -L, --level N              zstd level of the metrics stream (0: raw msgpack)\n"
    "  -q, --quiet                no progress on stderr\n"
    "  -h, --help                 show this help\n";

void train_cli_defaults(struct train_cli *c, double lr, int batch)
{
    *c = (struct train_cli){
        .train = {.lr = lr, .schedule = LR_COSINE, .warmup_ratio = 0.03, .max_grad_norm = 1.0, .batch = batch,
                  .micro_batch = 4, .epochs = 1, .device = "auto"},
        .max_length = 2048, .max_prompt_length = 1024, .level = 3,
    };
}

const struct option *train_cli_options(const struct option *tool)
{
    static struct option all[64];
    size_t n = sizeof shared / sizeof *shared, k = 0;
    memcpy(all, shared, sizeof shared);
    while (tool && tool[k].name && n + k < 63) {
        all[n + k] = tool[k];
        k++;
    }
    all[n + k] = (struct option){0, 0, 0, 0};
    return all;
}

bool train_cli_handle(struct train_cli *c, int opt, const char *arg)
{
    struct train_cfg *t = &c->train;
    switch (opt) {
    case 'm': t->model_dir = arg; break;
    case 'o': t->out_dir = arg; break;
    case O_LR: t->lr = cli_double("--lr", arg, 0, 10); break;
    case O_SCHED:
        if (lr_kind_parse(arg, &t->schedule))
            rl_usage_error("--schedule: %s", rl_errmsg());
        break;
    case O_WARM: t->warmup_ratio = cli_double("--warmup-ratio", arg, 0, 1); break;
    case O_WD: t->weight_decay = cli_double("--weight-decay", arg, 0, 10); break;
    case O_CLIP: t->max_grad_norm = cli_double("--max-grad-norm", arg, 0, 1e9); break;
    case O_BATCH: t->batch = (int)cli_int("--batch", arg, 1, 1 << 20); break;
    case O_MICRO: t->micro_batch = (int)cli_int("--micro-batch", arg, 1, 1 << 20); break;
    case O_EPOCHS: t->epochs = (int)cli_int("--epochs", arg, 1, 1 << 20); break;
    case O_MAXLEN: c->max_length = (int)cli_int("--max-length", arg, 2, 1 << 24); break;
    case O_MAXPROMPT: c->max_prompt_length = (int)cli_int("--max-prompt-length", arg, 1, 1 << 24); break;
    case O_SAVE: t->save_every = cli_int("--save-every", arg, 0, INT64_MAX); break;
    case O_MAXSTEPS: t->max_steps = cli_int("--max-steps", arg, 1, INT64_MAX); break;
    case O_RESUME: t->resume = true; break;
    case O_KEEP: t->keep_state = true; break;
    case O_FORCE: t->force = true; break;
    case O_SEED: t->seed = (uint64_t)cli_int("--seed", arg, 0, INT64_MAX); break;
    case O_DEVICE: t->device = arg; break;
    case O_BATCHGEMM: t->batch_gemm = true; break;
    case O_TEMPLATE: c->template_name = arg; break;
    case 'L': c->level = (int)cli_int("--level", arg, -7, 19); break;
    case 'q': t->quiet = true; break;
    default: return false;
    }
    return true;
}

void train_cli_check(const struct train_cli *c)
{
    if (!c->train.model_dir || !c->train.out_dir)
        rl_usage_error("both -m MODEL_DIR and -o OUT_DIR are required");
    if (c->max_prompt_length >= c->max_length)
        rl_usage_error("--max-prompt-length (%d) must be below --max-length (%d)", c->max_prompt_length,
                       c->max_length);
}

int train_input_open(struct train_input *in, const struct train_cli *c)
{
    *in = (struct train_input){0};
    struct model_config cfg;
    char path[FS_PATH_MAX];
    if (fs_join(path, sizeof path, c->train.model_dir, "config.json") || config_load(path, &cfg))
        return -1;
    return tok_ctx_open(&in->tc, c->train.model_dir, &cfg, c->template_name);
}

void train_input_close(struct train_input *in)
{
    for (int i = 0; i < 3; i++)
        free(in->ids[i].v);
    tok_ctx_close(&in->tc);
}

struct input_call {
    struct train_input *in;
    int (*add)(void *ctx, struct train_input *in, const struct rec *r);
    void *ctx;
};

static int input_call(void *ctx, const struct rec *r)
{
    struct input_call *c = ctx;
    return c->add(c->ctx, c->in, r);
}

int train_input_read(struct train_input *in, int n, char **paths,
                     int (*add)(void *ctx, struct train_input *in, const struct rec *r), void *ctx)
{
    struct input_call c = {in, add, ctx};
    return rec_each(n, paths, NULL, input_call, &c);
}

int train_input_tokenize(struct train_input *in, const struct rec *r, int n_resp, const char *const *fields)
{
    for (int i = 0; i <= n_resp; i++)
        in->ids[i].n = 0;
    if (tok_ctx_prompt(&in->tc, r, &in->ids[0]))
        return -1;
    if (!in->ids[0].n)
        return rec_err(r, "the prompt is empty: a response needs at least one token before it");
    for (int i = 0; i < n_resp; i++) {
        if (tok_ctx_response(&in->tc, r, fields[2 * i], fields[2 * i + 1], &in->ids[i + 1]))
            return -1;
        if (!in->ids[i + 1].n)
            return rec_err(r, "\"%s\" is empty: no tokens to learn from", fields[2 * i + 1]);
    }
    return 0;
}

void train_cli_stdout_check(void)
{
    if (rl_refuse_tty(STDOUT_FILENO, false))
        rl_die("refusing to write the metrics stream to a terminal (pipe it, e.g. | rl-cat)");
}

int train_cli_run(const struct train_cli *c, struct train_task *task)
{
    struct rec_writer *w = rec_writer_open(STDOUT_FILENO, c->level, "stdout");
    return rec_writer_finish(w, train_run(&c->train, task, w));
}
