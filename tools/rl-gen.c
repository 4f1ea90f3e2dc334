/* rl-gen: best-of-n sampling from a policy, the first stage of every online
 * iteration. See man/rl-gen.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "gen.h"
#include "rec.h"
#include "tokrule.h"

static const char usage[] =
    "Usage: rl-gen -m MODEL_DIR [OPTION]... [FILE]...\n"
    "Sample n responses for every prompt record (prompt_ids, messages or prompt) and add\n"
    "prompt_ids, responses, response_ids, finish, logps, seed and tok.\n"
    "\n"
    "  -m, --model DIR             the policy (Hugging Face layout)\n"
    "  -n, --samples N             responses per prompt (default 8)\n"
    "  -t, --temperature T         0 is greedy (default 1.0)\n"
    "      --top-p P               nucleus sampling (default 1.0: off)\n"
    "      --top-k K               keep the K most likely tokens (default 0: off)\n"
    "      --min-p P               drop tokens below P x the top probability (default 0)\n"
    "      --max-new-tokens M      tokens per response (default 2048)\n"
    "      --max-prompt-tokens L   longer prompts keep their last L tokens (default 1024)\n"
    "      --strict                a prompt over --max-prompt-tokens is an error instead\n"
    "      --stop-id ID            another token that ends a response (repeatable)\n"
    "      --stop STR              a string that ends a response, cut from it (repeatable)\n"
    "      --seed S                sample j of record id uses hash(S, id, j) (default 0)\n"
    "  -b, --batch B               samples decoded together (KV-cache slots, default 16)\n"
    "      --unordered             write records as they complete, not in input order\n"
    "      --template NAME         chat template for messages (default: detected)\n"
    "      --device D              auto (default: $RL_DEVICE, else cuda on a GPU, else cpu), cpu, cuda\n"
    "  -L, --level N               zstd level of the output (0: raw msgpack; default 3)\n"
    "      --force                 write the stream even to a terminal\n"
    "  -q, --quiet                 no progress or summary on stderr\n"
    "  -v, --verbose               the summary even when stderr is not a terminal\n"
    "  -h, --help                  show this help\n";

struct gen_tool_opts {
    struct gen_opts gen;
    const char *model_dir, *template_name, *device;
    int level;
    bool force, verbose;
    int32_t *stop_ids;
    char **stop_strs;
};

static struct gen_tool_opts parse_args(int argc, char **argv)
{
    enum { O_TOPP = 256, O_TOPK, O_MINP, O_MAXNEW, O_MAXPROMPT, O_STRICT, O_STOPID, O_STOP, O_SEED, O_UNORDERED,
           O_TEMPLATE, O_DEVICE, O_FORCE };
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'}, {"samples", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, 't'}, {"top-p", required_argument, 0, O_TOPP},
        {"top-k", required_argument, 0, O_TOPK}, {"min-p", required_argument, 0, O_MINP},
        {"max-new-tokens", required_argument, 0, O_MAXNEW}, {"max-prompt-tokens", required_argument, 0, O_MAXPROMPT},
        {"strict", no_argument, 0, O_STRICT}, {"stop-id", required_argument, 0, O_STOPID},
        {"stop", required_argument, 0, O_STOP}, {"seed", required_argument, 0, O_SEED},
        {"batch", required_argument, 0, 'b'}, {"unordered", no_argument, 0, O_UNORDERED},
        {"template", required_argument, 0, O_TEMPLATE}, {"device", required_argument, 0, O_DEVICE},
        {"level", required_argument, 0, 'L'}, {"force", no_argument, 0, O_FORCE},
        {"quiet", no_argument, 0, 'q'}, {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    struct gen_tool_opts o = {
        .gen = {.n = 8, .sampler = {.temperature = 1, .top_p = 1}, .max_new = 2048, .max_prompt = 1024, .batch = 16},
        .device = "auto", .level = 3,
    };
    int c;
    while ((c = getopt_long(argc, argv, "m:n:t:b:L:qvh", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model_dir = optarg; break;
        case 'n': o.gen.n = (int)cli_int("--samples", optarg, 1, 1 << 16); break;
        case 't': o.gen.sampler.temperature = (float)cli_double("--temperature", optarg, 0, 1e6); break;
        case O_TOPP: o.gen.sampler.top_p = (float)cli_double("--top-p", optarg, 1e-9, 1); break;
        case O_TOPK: o.gen.sampler.top_k = (int)cli_int("--top-k", optarg, 0, 1 << 30); break;
        case O_MINP: o.gen.sampler.min_p = (float)cli_double("--min-p", optarg, 0, 1); break;
        case O_MAXNEW: o.gen.max_new = (int)cli_int("--max-new-tokens", optarg, 1, 1 << 24); break;
        case O_MAXPROMPT: o.gen.max_prompt = (int)cli_int("--max-prompt-tokens", optarg, 1, 1 << 24); break;
        case O_STRICT: o.gen.strict = true; break;
        case O_STOPID:
            o.stop_ids = rl_realloc(o.stop_ids, (size_t)(o.gen.n_stop_ids + 1) * sizeof *o.stop_ids);
            o.stop_ids[o.gen.n_stop_ids++] = (int32_t)cli_int("--stop-id", optarg, 0, INT32_MAX);
            break;
        case O_STOP:
            if (!*optarg)
                rl_usage_error("--stop: an empty string would stop at once");
            o.stop_strs = rl_realloc(o.stop_strs, (size_t)(o.gen.n_stop_strs + 1) * sizeof *o.stop_strs);
            o.stop_strs[o.gen.n_stop_strs++] = optarg;
            break;
        case O_SEED: o.gen.seed = (uint64_t)cli_int("--seed", optarg, 0, INT64_MAX); break;
        case 'b': o.gen.batch = (int)cli_int("--batch", optarg, 1, 1 << 16); break;
        case O_UNORDERED: o.gen.unordered = true; break;
        case O_TEMPLATE: o.template_name = optarg; break;
        case O_DEVICE: o.device = optarg; break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case O_FORCE: o.force = true; break;
        case 'q': o.gen.quiet = true; break;
        case 'v': o.verbose = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    if (!o.model_dir)
        rl_usage_error("-m MODEL_DIR is required");
    return o;
}

static void add_stats(struct gen_stats *t, const struct gen_stats *s)
{
    t->records += s->records, t->samples += s->samples, t->tokens += s->tokens;
    t->prompt_tokens += s->prompt_tokens, t->truncated_prompts += s->truncated_prompts;
    t->prefills += s->prefills, t->steps += s->steps, t->rows += s->rows, t->seconds += s->seconds;
    t->kv_bytes = s->kv_bytes, t->kv_bf16 = s->kv_bf16;          /* each input's cache is the same */
}

/* How the run went; "slots busy" is the share of the batch that decode
 * steps kept at work (the batch's tail and short inputs lower it); the KV
 * cache's size is what --batch and the token limits cost in memory. */
static void print_summary(const struct gen_stats *t, int batch)
{
    double kib = t->kv_bytes / 1024.0;
    int unit = kib >= 1048576 ? 2 : kib >= 1024 ? 1 : 0;
    fprintf(stderr, "%s: %llu prompts, %llu tokens in %.1f s (%.1f tokens/s); %llu prefills, %llu decode steps, "
            "slots %.0f%% busy; KV cache %.1f %s (%s)\n", rl_prog, (unsigned long long)t->records,
            (unsigned long long)t->tokens, t->seconds, t->seconds > 0 ? t->tokens / t->seconds : 0,
            (unsigned long long)t->prefills, (unsigned long long)t->steps,
            t->steps ? 100.0 * t->rows / ((double)t->steps * batch) : 0, kib / (unit == 2 ? 1048576 : unit ? 1024 : 1),
            unit == 2 ? "GiB" : unit ? "MiB" : "KiB", t->kv_bf16 ? "bf16" : "fp32");
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct gen_tool_opts o = parse_args(argc, argv);
    if (rl_refuse_tty(STDOUT_FILENO, o.force))
        rl_die_err();
    struct model *m = model_open(o.model_dir, o.device);
    if (!m)
        rl_die_err();
    if (m->cfg.head != HEAD_LM)
        rl_die("%s is a reward model (%s): rl-gen needs a causal LM", o.model_dir, m->cfg.architecture);
    int ctx = m->cfg.max_position_embeddings, window = m->cfg.sliding_window;
    if (ctx > 0 && o.gen.max_prompt + o.gen.max_new > ctx)
        rl_usage_error("--max-prompt-tokens %d + --max-new-tokens %d exceed the model's context (%d tokens, "
                       "max_position_embeddings)", o.gen.max_prompt, o.gen.max_new, ctx);
    if (window > 0 && o.gen.max_prompt + o.gen.max_new > window)
        rl_usage_error("--max-prompt-tokens %d + --max-new-tokens %d exceed the model's sliding_window (%d "
                       "tokens), which rlflow does not implement: lower them", o.gen.max_prompt, o.gen.max_new,
                       window);
    struct tok_ctx tc;
    if (tok_ctx_open(&tc, o.model_dir, &m->cfg, o.template_name) ||
        gen_model_stop_ids(o.model_dir, &m->cfg, &o.stop_ids, &o.gen.n_stop_ids))
        rl_die_err();
    for (int i = 0; i < o.gen.n_stop_ids; i++)
        if (o.stop_ids[i] < 0 || o.stop_ids[i] >= m->V)
            rl_usage_error("--stop-id %d is outside the vocabulary (%d)", o.stop_ids[i], m->V);
    if (!tc.tok && o.gen.n_stop_strs)
        rl_usage_error("--stop needs a tokenizer: %s has no tokenizer.json", o.model_dir);
    o.gen.stop_ids = o.stop_ids;
    o.gen.stop_strs = o.stop_strs;
    struct rec_writer *w = rec_writer_open(STDOUT_FILENO, o.level, "stdout");
    char *stdin_only[] = {"-"};
    char **inputs = optind < argc ? argv + optind : stdin_only;
    int n = optind < argc ? argc - optind : 1, rc = 0;
    struct gen_stats st = {0}, total = {0};
    for (int i = 0; i < n && !rc; i++) {
        struct rec_reader *r = rec_reader_open(inputs[i]);
        if (!r) {
            rc = -1;
            break;
        }
        rec_flush_on_wait(r, w);
        rc = gen_run(m, &tc, &o.gen, r, w, &st);
        rec_reader_close(r);
        add_stats(&total, &st);
    }
    rc = rec_writer_finish(w, rc);
    if (o.verbose || (!o.gen.quiet && isatty(STDERR_FILENO)))
        print_summary(&total, o.gen.batch);
    if (!o.gen.quiet && total.truncated_prompts)
        rl_warn("%llu prompts were longer than --max-prompt-tokens %d and kept their end",
                (unsigned long long)total.truncated_prompts, o.gen.max_prompt);
    if (rc)
        rl_die_err();
    tok_ctx_close(&tc);
    model_close(m);
    free(o.stop_ids);
    free(o.stop_strs);
    return 0;
}
