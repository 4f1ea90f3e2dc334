/* The command-line options that every trainer (rl-dpo, rl-sft, rl-rm) shares,
 * so their spelling, defaults and checks cannot drift apart. A tool appends
 * its own options to train_cli_options() and passes unknown codes here. */
#ifndef RLFLOW_TRAIN_CLI_H
#define RLFLOW_TRAIN_CLI_H
#include <getopt.h>
#include <stdbool.h>

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
#endif
