/* The command-line options that every trainer (rl-dpo, rl-sft, rl-rm) shares,
 * so their spelling, defaults and checks cannot drift apart. A tool appends
 * its own options to train_cli_options() and passes unknown codes here. */
#ifndef RLFLOW_TRAIN_CLI_H
#define RLFLOW_TRAIN_CLI_H
#include <getopt.h>
#include <stdbool.h>

#include "rec.h"
#include "tokrule.h"
#include "train.h"

struct train_cli {
    struct train_cfg train;
    int max_length, max_prompt_length, level;
    const char *template_name;
};

/* Codes below TRAIN_CLI_TOOL_CODES are the shared options'. */
#define TRAIN_CLI_TOOL_CODES 400

/* Defaults: lr, schedule, warmup... as given; the rest as in the man pages. */
void train_cli_defaults(struct train_cli *c, double lr, int batch);
/* The shared options followed by `tool` (terminated by a zero entry); static storage. */
const struct option *train_cli_options(const struct option *tool);
/* Short options the shared set uses. */
#define TRAIN_CLI_SHORTOPTS "m:o:L:qh"
/* Handle a shared option; false if c is not one. */
bool train_cli_handle(struct train_cli *c, int opt, const char *arg);
/* After parsing: required options and consistency (usage errors exit 2). */
void train_cli_check(const struct train_cli *c);
/* The usage lines of the shared options. */
extern const char train_cli_usage[];

/* The records a trainer learns from, tokenized under the tok rule with the
 * model's own tokenizer (opened once, for every input file). */
struct train_input {
    struct tok_ctx tc;
    struct tok_ids ids[3];       /* the last record's prompt and up to two responses */
};
int train_input_open(struct train_input *in, const struct train_cli *c);
void train_input_close(struct train_input *in);
/* Call add(ctx, in, rec) for every record of the files (stdin when n is 0);
 * -1 at the first bad record or input. */
int train_input_read(struct train_input *in, int n, char **paths,
                     int (*add)(void *ctx, struct train_input *in, const struct rec *r), void *ctx);
/* The record's prompt into ids[0] and its n_resp responses into ids[1..]:
 * fields[2i] names the ids field, fields[2i+1] the text field of response i.
 * An empty prompt or response is an error naming the record. */
int train_input_tokenize(struct train_input *in, const struct rec *r, int n_resp, const char *const *fields);

/* Refuse a terminal for the metrics stream (usage error). */
void train_cli_stdout_check(void);
/* Train, one metrics record per step on stdout. 0, or -1 with rl_err set
 * (the stream is closed either way). */
int train_cli_run(const struct train_cli *c, struct train_task *task);
#endif
