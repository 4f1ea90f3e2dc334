/* rl-tok: text <-> token ids with a Hugging Face tokenizer, chat templates,
 * and a record filter that adds prompt_ids and tok. See man/rl-tok.1. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "cli.h"
#include "err.h"
#include "rec.h"
#include "tokenizer.h"

static const char usage[] =
    "Usage: rl-tok -t PATH [OPTION]... [FILE]...\n"
    "Encode UTF-8 text into token ids (one line of space-separated ids per input),\n"
    "decode ids into text, or add prompt_ids to a record stream.\n"
    "With no FILE, or FILE -, read stdin.\n"
    "\n"
    "  -t, --tokenizer PATH  tokenizer.json, a model directory holding one, or a GPT-2\n"
    "                        directory (vocab.json + merges.txt, or encoder.json + vocab.bpe)\n"
    "  -d, --decode          read ids (separated by spaces, commas or newlines), write the text\n"
    "  -S, --no-special      encode: special tokens written in the text are plain text;\n"
    "                        decode: leave special tokens out\n"
    "      --raw             add no post-processor tokens (such as a BOS the tokenizer adds)\n"
    "  -c, --count           print only the number of tokens\n"
    "      --chat            the input is a JSON conversation ([{\"role\",\"content\"}...] or\n"
    "                        {\"messages\": [...]}), encoded through the chat template\n"
    "      --render          with --chat: print the template's text instead of ids\n"
    "  -T, --template NAME   chat template: llama3 llama3.1 chatml qwen3 mistral llama2 gemma plain\n"
    "                        (default: detected from tokenizer_config.json)\n"
    "      --no-gen-prompt   do not end the conversation with the assistant header\n"
    "  -r, --records         filter record streams: encode \"messages\" (through the chat\n"
    "                        template) or \"prompt\" into \"prompt_ids\" and set \"tok\"\n"
    "  -L, --level N         zstd level of the --records output (1..19, negative faster; 0 raw; default 3)\n"
    "      --fingerprint     print the tokenizer's fingerprint (the \"tok\" field) and exit\n"
    "      --force           write a binary stream even to a terminal\n"
    "  -q, --quiet           no progress on stderr\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 on success, 1 on bad input or I/O error, 2 on a usage error.\n";

struct tok_opts {
    const char *path, *template_name;
    bool decode, no_special, raw, count, chat, render, no_gen, records, fingerprint, force, quiet;
    int level;
};

static struct tok_opts parse_args(int argc, char **argv)
{
    enum { O_RAW = 256, O_CHAT, O_RENDER, O_NOGEN, O_FP, O_FORCE };
    static const struct option longopts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"decode", no_argument, 0, 'd'},
        {"no-special", no_argument, 0, 'S'},      {"raw", no_argument, 0, O_RAW},
        {"count", no_argument, 0, 'c'},           {"chat", no_argument, 0, O_CHAT},
        {"render", no_argument, 0, O_RENDER},     {"template", required_argument, 0, 'T'},
        {"no-gen-prompt", no_argument, 0, O_NOGEN}, {"records", no_argument, 0, 'r'},
        {"level", required_argument, 0, 'L'},     {"fingerprint", no_argument, 0, O_FP},
        {"force", no_argument, 0, O_FORCE},       {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0},
    };
    struct tok_opts o = {.level = 3};
    int c;
    while ((c = getopt_long(argc, argv, "t:dScT:rL:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 't': o.path = optarg; break;
        case 'd': o.decode = true; break;
        case 'S': o.no_special = true; break;
        case O_RAW: o.raw = true; break;
        case 'c': o.count = true; break;
        case O_CHAT: o.chat = true; break;
        case O_RENDER: o.render = true; break;
        case 'T': o.template_name = optarg; break;
        case O_NOGEN: o.no_gen = true; break;
        case 'r': o.records = true; break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case O_FP: o.fingerprint = true; break;
        case O_FORCE: o.force = true; break;
        case 'q': o.quiet = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option (see --help)");
        }
    }
    if (!o.path) rl_usage_error("-t PATH is required (a tokenizer.json or a model directory)");
    if (o.template_name && chat_kind_by_name(o.template_name) < 0)
        rl_usage_error("--template: unknown template \"%s\" (llama3 llama3.1 chatml qwen3 mistral llama2 gemma plain)",
                       o.template_name);
    if (o.decode + o.chat + o.records > 1) rl_usage_error("--decode, --chat and --records exclude each other");
    if (o.render && !o.chat) rl_usage_error("--render goes with --chat");
    if (o.count && (o.records || o.render)) rl_usage_error("--count does not go with --records or --render");
    return o;
}

static char *read_all(const char *path, size_t *n)
{
    int fd = strcmp(path, "-") ? open(path, O_RDONLY) : STDIN_FILENO;
    if (fd < 0) rl_die("%s: %s", path, strerror(errno));
    struct rl_buf b = {0};
    for (;;) {
        rl_buf_reserve(&b, 1 << 16);
        ssize_t k = read(fd, b.data + b.len, b.cap - b.len);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) rl_die("%s: %s", path, strerror(errno));
        if (k == 0) break;
        b.len += (size_t)k;
    }
    if (fd != STDIN_FILENO) close(fd);
    rl_buf_putc(&b, 0);
    *n = b.len - 1;
    return b.data;
}

static const char *input_name(const char *path) { return strcmp(path, "-") ? path : "stdin"; }

static void print_ids(const struct tok_opts *o, const struct tok_ids *ids, struct rl_buf *out)
{
    if (o->count) {
        rl_buf_printf(out, "%zu\n", ids->n);
        return;
    }
    for (size_t i = 0; i < ids->n; i++) rl_buf_printf(out, i ? " %d" : "%d", ids->v[i]);
    rl_buf_putc(out, '\n');
}

static void parse_ids(const char *name, const char *s, size_t n, struct tok_ids *ids)
{
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']') { i++; continue; }
        size_t j = i;
        long long v = 0;
        while (j < n && s[j] >= '0' && s[j] <= '9' && v < (1LL << 40)) v = v * 10 + (s[j++] - '0');
        bool end_ok = j == n || strchr(" \t\n\r,[]", s[j]);
        if (j == i || !end_ok || v > INT32_MAX) {
            size_t word = strcspn(s + i, " \t\n\r,[]");
            rl_die("%s: byte %zu: \"%.*s\" is not a token id", name, i, (int)(word > 20 ? 20 : word), s + i);
        }
        tok_ids_push(ids, (int32_t)v);
        i = j;
    }
}

/* A JSON conversation -> messages (pointing into the JSON value). */
static size_t parse_chat(const char *name, json_t *root, struct chat_msg **out)
{
    json_t *arr = json_is_object(root) ? json_object_get(root, "messages") : root;
    if (!json_is_array(arr)) rl_die("%s: expected a JSON array of messages or {\"messages\": [...]}", name);
    size_t n = json_array_size(arr), i;
    json_t *m;
    *out = rl_calloc(n ? n : 1, sizeof **out);
    json_array_foreach(arr, i, m) {
        json_t *r = json_object_get(m, "role"), *c = json_object_get(m, "content");
        if (!json_is_string(r) || !json_is_string(c))
            rl_die("%s: messages[%zu]: needs string \"role\" and \"content\"", name, i);
        (*out)[i] = (struct chat_msg){json_string_value(r), json_string_value(c), json_string_length(r),
                                      json_string_length(c)};
    }
    return n;
}

static struct chat_template *open_template(const struct tok_opts *o, const struct tokenizer *t)
{
    struct chat_template *c = chat_open(t, o->path, o->template_name);
    if (!c) rl_die_err();
    return c;
}

static void text_mode(const struct tok_opts *o, const struct tokenizer *t, char **inputs, int n)
{
    struct chat_template *tpl = o->chat ? open_template(o, t) : NULL;
    struct rl_buf out = {0};
    struct tok_ids ids = {0};
    unsigned flags = (o->no_special ? 0 : TOK_SPECIAL) | (o->raw ? 0 : TOK_ADD_SPECIAL);
    for (int i = 0; i < n; i++) {
        size_t len;
        char *text = read_all(inputs[i], &len);
        const char *name = input_name(inputs[i]);
        ids.n = 0;
        if (o->decode) {
            parse_ids(name, text, len, &ids);
            if (o->count) print_ids(o, &ids, &out);
            else if (tok_decode(t, ids.v, ids.n, o->no_special ? TOK_SKIP_SPECIAL : 0, &out)) {
                rl_err_prefix("%s", name);
                rl_die_err();
            }
        } else if (o->chat) {
            json_error_t je;
            json_t *root = json_loadb(text, len, JSON_ALLOW_NUL, &je);
            if (!root) rl_die("%s: line %d column %d: %s", name, je.line, je.column, je.text);
            struct chat_msg *m;
            size_t nm = parse_chat(name, root, &m);
            int rc = o->render ? chat_render(tpl, m, nm, !o->no_gen, &out) : chat_encode(tpl, m, nm, !o->no_gen, &ids);
            if (rc) {
                rl_err_prefix("%s", name);
                rl_die_err();
            }
            if (!o->render) print_ids(o, &ids, &out);
            free(m);
            json_decref(root);
        } else {
            if (tok_encode(t, text, len, flags, &ids)) {
                rl_err_prefix("%s", name);
                rl_die_err();
            }
            print_ids(o, &ids, &out);
        }
        free(text);
        if (rl_write_all(STDOUT_FILENO, out.data, out.len, "stdout")) rl_die_err();
        out.len = 0;
    }
    free(ids.v);
    rl_buf_free(&out);
    chat_free(tpl);
}

/* ---- --records ---- */

struct rec_state {
    struct rec_writer *w;
};

static void flush_out(void *ctx)
{
    struct rec_state *s = ctx;
    if (rec_flush(s->w)) rl_die_err();
}

static int encode_record(const struct tok_opts *o, const struct tokenizer *t, struct chat_template **tpl,
                         const struct rec *r, struct tok_ids *ids)
{
    struct mpv msgs;
    ids->n = 0;
    int k = rec_get_array(r, "messages", &msgs);
    if (k < 0) return -1;
    if (k == 1) {
        if (!*tpl) *tpl = open_template(o, t);   /* only when a record needs it */
        struct chat_msg *m = rl_calloc(msgs.v.c.count ? msgs.v.c.count : 1, sizeof *m);
        struct mpv_iter it = mpv_iter_array(&msgs);
        struct mpv e, role, content;
        size_t n = 0;
        int rc = 0;
        while (rc == 0 && mpv_next(&it, &e)) {
            char what[64];
            struct rec_str rs, cs;
            if (e.type != MPV_MAP) {
                snprintf(what, sizeof what, "messages[%zu]", n);
                rc = rec_type_error(r, what, &e, "a map {role, content}");
                break;
            }
            if (!mpv_map_get(&e, "role", &role) || !mpv_map_get(&e, "content", &content)) {
                rc = rec_err(r, "messages[%zu]: needs \"role\" and \"content\"", n);
                break;
            }
            snprintf(what, sizeof what, "messages[%zu].role", n);
            if (rec_as_str(r, what, &role, &rs) < 0) { rc = -1; break; }
            snprintf(what, sizeof what, "messages[%zu].content", n);
            if (rec_as_str(r, what, &content, &cs) < 0) { rc = -1; break; }
            m[n++] = (struct chat_msg){rs.s, cs.s, rs.n, cs.n};
        }
        if (rc == 0 && chat_encode(*tpl, m, n, !o->no_gen, ids)) rc = rec_err(r, "%s", rl_errmsg());
        free(m);
        return rc;
    }
    struct rec_str p;
    k = rec_get_str(r, "prompt", &p);
    if (k < 0) return -1;
    if (k == 0) return rec_err(r, "neither \"messages\" nor \"prompt\" to tokenize");
    unsigned flags = (o->no_special ? 0 : TOK_SPECIAL) | (o->raw ? 0 : TOK_ADD_SPECIAL);
    if (tok_encode(t, p.s, p.n, flags, ids)) return rec_err(r, "field \"prompt\": %s", rl_errmsg());
    return 0;
}

static int records_mode(const struct tok_opts *o, const struct tokenizer *t, char **inputs, int n)
{
    if (rl_refuse_tty(STDOUT_FILENO, o->force)) rl_die_err();
    struct rec_state s = {rec_writer_open(STDOUT_FILENO, o->level, "stdout")};
    struct chat_template *tpl = NULL;
    struct tok_ids ids = {0};
    struct progress pr;
    progress_init(&pr, o->quiet, 0);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct rec_reader *r = rec_reader_open(inputs[i]);
        if (!r) { rc = 1; break; }
        rec_reader_on_wait(r, flush_out, &s);
        struct rec rec;
        int k;
        while ((k = rec_next(r, &rec)) == 1) {
            if (encode_record(o, t, &tpl, &rec, &ids)) { k = -1; break; }
            rec_begin(s.w, &rec);
            rec_put_i32s(s.w, "prompt_ids", ids.v, ids.n);
            rec_put_cstr(s.w, "tok", tok_fingerprint(t));
            if (rec_end(s.w)) { k = -1; break; }
            progress_add(&pr, 1, ids.n);
        }
        if (k < 0) {
            rl_warn("%s", rl_errmsg());
            rc = 1;
        }
        rec_reader_close(r);
    }
    progress_done(&pr);
    if (rec_writer_close(s.w) && rc == 0) {
        rl_warn("%s", rl_errmsg());
        rc = 1;
    }
    free(ids.v);
    chat_free(tpl);
    return rc;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct tok_opts o = parse_args(argc, argv);
    struct tokenizer *t = tok_load(o.path);
    if (!t) rl_die_err();
    if (o.fingerprint) {
        printf("%s\n", tok_fingerprint(t));
        tok_free(t);
        return 0;
    }
    char *stdin_only[] = {"-"};
    char **inputs = optind < argc ? argv + optind : stdin_only;
    int n = optind < argc ? argc - optind : 1;
    int rc = 0;
    if (o.records) rc = records_mode(&o, t, inputs, n);
    else text_mode(&o, t, inputs, n);
    tok_free(t);
    return rc;
}
