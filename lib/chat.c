/* Chat template renderers (see chat.h). Each renderer writes the conversation
 * as a sequence of template tokens (mark) and text (put); a sink either spells
 * it out (chat_render: what HF's Jinja produces) or turns it into ids
 * (chat_encode: text between template tokens encoded with specials off). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat.h"
#include "fsutil.h"

static const char *const kind_names[CHAT_N_KINDS] = {
    "llama3", "llama3.1", "chatml", "qwen3", "mistral", "llama2", "gemma", "plain",
};

struct chat_template {
    const struct tokenizer *t;
    int kind;
    char *bos, *eos;             /* from tokenizer_config.json; NULL if none */
    char *default_system;        /* ChatML templates that insert one when none is given */
    char *date_string;           /* Llama 3.1: "Today Date: " */
};

int chat_kind_by_name(const char *name)
{
    for (int i = 0; i < CHAT_N_KINDS; i++)
        if (!strcmp(name, kind_names[i])) return i;
    if (!strcmp(name, "qwen") || !strcmp(name, "smollm")) return CHAT_CHATML;
    return -1;
}

const char *chat_kind_name(int kind) { return kind >= 0 && kind < CHAT_N_KINDS ? kind_names[kind] : "?"; }
int chat_kind(const struct chat_template *c) { return c->kind; }

int chat_detect(const char *j)
{
    if (strstr(j, "<|start_header_id|>"))
        return strstr(j, "Cutting Knowledge Date") ? CHAT_LLAMA31 : CHAT_LLAMA3;
    if (strstr(j, "<|im_start|>"))
        return strstr(j, "<think>") || strstr(j, "reasoning_content") ? CHAT_QWEN3 : CHAT_CHATML;
    if (strstr(j, "<start_of_turn>")) return CHAT_GEMMA;
    if (strstr(j, "[INST]")) return strstr(j, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    return -1;
}

/* A ChatML template that writes a fixed system turn when none is given has it
 * as a literal: '<|im_start|>system\n<TEXT><|im_end|>' with no expression in
 * TEXT. The newline is the escape \n inside the Jinja string (Qwen2.5) or a
 * raw newline (SmolLM2). (Qwen3 concatenates messages[0].content there
 * instead: no default.) */
static char *find_default_system(const char *j)
{
    static const char head[] = "<|im_start|>system";
    for (const char *p = strstr(j, head); p; p = strstr(p + 1, head)) {
        const char *s = p + sizeof head - 1;
        if (s[0] == '\\' && s[1] == 'n') s += 2;
        else if (s[0] == '\n') s += 1;
        else continue;
        const char *e = strstr(s, "<|im_end|>");
        if (!e || e == s || strcspn(s, "'\"{}+") < (size_t)(e - s)) continue;
        char *out = rl_malloc((size_t)(e - s) + 1);
        size_t o = 0;
        for (const char *q = s; q < e; q++) {   /* undo the Jinja string escapes */
            if (q[0] == '\\' && q + 1 < e) {
                q++;
                out[o++] = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
            } else {
                out[o++] = *q;
            }
        }
        out[o] = 0;
        return out;
    }
    return NULL;
}

static char *token_field(json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? rl_strdup(json_string_value(v)) : NULL;
}

/* The template text: a string, or a list of {name, template} (take "default"). */
static const char *template_text(json_t *cfg)
{
    json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) return json_string_value(ct);
    size_t i;
    json_t *e;
    if (json_is_array(ct))
        json_array_foreach(ct, i, e) {
            const char *n = json_string_value(json_object_get(e, "name"));
            if (n && !strcmp(n, "default")) return json_string_value(json_object_get(e, "template"));
        }
    return NULL;
}

static int config_path(const char *path, char *out, size_t n)
{
    struct stat st;
    if (stat(path, &st) != 0) return rl_errno("%s", path);
    if (S_ISDIR(st.st_mode)) {
        snprintf(out, n, "%s/tokenizer_config.json", path);
        return 0;
    }
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    if (!strcmp(base, "tokenizer_config.json")) {
        snprintf(out, n, "%s", path);
        return 0;
    }
    snprintf(out, n, "%.*stokenizer_config.json", (int)(base - path), path);   /* beside tokenizer.json */
    return 0;
}

static bool is_added(const struct tokenizer *t, const char *s)
{
    return s && tok_added_id(t, s, strlen(s)) >= 0;
}

/* Template tokens a family cannot do without. */
static int check_tokens(const struct chat_template *c)
{
    static const char *const need[CHAT_N_KINDS][4] = {
        [CHAT_LLAMA3] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
        [CHAT_LLAMA31] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
        [CHAT_CHATML] = {"<|im_start|>", "<|im_end|>"},
        [CHAT_QWEN3] = {"<|im_start|>", "<|im_end|>"},
        [CHAT_GEMMA] = {"<start_of_turn>", "<end_of_turn>"},
    };
    for (int i = 0; i < 4 && need[c->kind][i]; i++)
        if (!is_added(c->t, need[c->kind][i]))
            return rl_err("template %s needs the token %s, which this tokenizer does not have", kind_names[c->kind],
                          need[c->kind][i]);
    bool need_bos = c->kind == CHAT_LLAMA3 || c->kind == CHAT_LLAMA31 || c->kind == CHAT_MISTRAL ||
                    c->kind == CHAT_LLAMA2 || c->kind == CHAT_GEMMA;
    if (need_bos && !is_added(c->t, c->bos))
        return rl_err("template %s needs a BOS token: bos_token %s%s%s", kind_names[c->kind],
                      c->bos ? "\"" : "is missing in tokenizer_config.json", c->bos ? c->bos : "",
                      c->bos ? "\" is not a token of this tokenizer" : "");
    if ((c->kind == CHAT_MISTRAL || c->kind == CHAT_LLAMA2) && !is_added(c->t, c->eos))
        return rl_err("template %s needs an EOS token: eos_token is missing or not a token", kind_names[c->kind]);
    return 0;
}

struct chat_template *chat_open(const struct tokenizer *t, const char *path, const char *name)
{
    char cfgp[4200];
    if (config_path(path, cfgp, sizeof cfgp)) return NULL;
    struct chat_template *c = rl_calloc(1, sizeof *c);
    c->t = t;
    c->kind = name ? chat_kind_by_name(name) : -1;
    if (name && c->kind < 0) {
        rl_err("unknown template \"%s\" (known: llama3 llama3.1 chatml qwen3 mistral llama2 gemma plain)", name);
        goto fail;
    }
    json_error_t je;
    struct stat st;
    json_t *cfg = stat(cfgp, &st) == 0 ? json_load_file(cfgp, JSON_DECODE_INT_AS_REAL, &je) : NULL;
    if (!cfg && stat(cfgp, &st) == 0) {
        rl_err("%s: line %d: %s", cfgp, je.line, je.text);
        goto fail;
    }
    if (cfg) {
        c->bos = token_field(cfg, "bos_token");
        c->eos = token_field(cfg, "eos_token");
    }
    const char *jinja = cfg ? template_text(cfg) : NULL;
    char *jinja_file = NULL;
    if (!jinja) {   /* newer checkpoints keep it in chat_template.jinja beside the config */
        char jp[4300];
        const char *slash = strrchr(cfgp, '/');
        snprintf(jp, sizeof jp, "%.*schat_template.jinja", slash ? (int)(slash - cfgp + 1) : 0, cfgp);
        size_t n;
        if (stat(jp, &st) == 0) jinja = jinja_file = fs_read_file(jp, &n);
    }
    if (c->kind < 0) {
        if (!jinja) {
            rl_err("%s: no chat_template%s; choose one with --template NAME (llama3 llama3.1 chatml qwen3 "
                   "mistral llama2 gemma plain)", cfgp, cfg ? "" : " (file missing)");
            json_decref(cfg);
            goto fail;
        }
        c->kind = chat_detect(jinja);
        if (c->kind < 0) {
            rl_err("%s: chat_template not recognized (\"%.50s...\"); choose one with --template NAME (llama3 "
                   "llama3.1 chatml qwen3 mistral llama2 gemma plain)", cfgp, jinja);
            json_decref(cfg);
            free(jinja_file);
            goto fail;
        }
    }
    if (jinja && c->kind == CHAT_CHATML) c->default_system = find_default_system(jinja);
    c->date_string = rl_strdup("26 Jul 2024");   /* the Llama 3.1 template's default */
    json_decref(cfg);
    free(jinja_file);
    if (t && check_tokens(c)) goto fail;
    return c;
fail:
    chat_free(c);
    return NULL;
}

void chat_free(struct chat_template *c)
{
    if (!c) return;
    free(c->bos);
    free(c->eos);
    free(c->default_system);
    free(c->date_string);
    free(c);
}

void chat_set_tokens(struct chat_template *c, const char *bos, const char *eos)
{
    free(c->bos);
    free(c->eos);
    c->bos = bos ? rl_strdup(bos) : NULL;
    c->eos = eos ? rl_strdup(eos) : NULL;
}

void chat_set_system(struct chat_template *c, const char *s)
{
    free(c->default_system);
    c->default_system = s ? rl_strdup(s) : NULL;
}

/* ---- the sink ---- */

struct sink {
    const struct chat_template *c;
    struct rl_buf *text;         /* chat_render */
    struct tok_ids *ids;         /* chat_encode */
    struct rl_buf pend;          /* text since the last template token */
    bool strip_next;             /* the last template token swallows whitespace after it (rstrip) */
    int err;
};

/* Python's str.isspace, which Jinja's trim and str.strip use */
static bool py_space(uint32_t c)
{
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s + i;
    unsigned c = u[0];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i + k > n) k = 1;
    *len = k;
    if (k == 1) return c;
    uint32_t v = c & (0x7Fu >> k);
    for (size_t j = 1; j < k; j++) v = (v << 6) | (u[j] & 0x3Fu);
    return v;
}

static size_t lstrip_len(const char *s, size_t n)   /* bytes of leading whitespace */
{
    size_t i = 0, k;
    while (i < n && py_space(cp_at(s, n, i, &k))) i += k;
    return i;
}

static size_t rstrip_len(const char *s, size_t n)   /* length without trailing whitespace */
{
    size_t end = n;
    while (end > 0) {
        size_t j = end - 1, k;
        while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
        if (!py_space(cp_at(s, n, j, &k))) break;
        end = j;
    }
    return end;
}

static void put(struct sink *s, const char *p, size_t n)
{
    if (s->text) { rl_buf_put(s->text, p, n); return; }
    if (s->strip_next && s->pend.len == 0) {
        size_t k = lstrip_len(p, n);
        p += k;
        n -= k;
        if (!n) return;
    }
    s->strip_next = false;
    rl_buf_put(&s->pend, p, n);
}

static void puts_(struct sink *s, const char *p) { put(s, p, strlen(p)); }

/* Jinja's trim / str.strip() */
static void put_trim(struct sink *s, const char *p, size_t n)
{
    size_t a = lstrip_len(p, n);
    put(s, p + a, rstrip_len(p + a, n - a));
}

static void flush(struct sink *s)
{
    if (s->text || s->err) return;
    if (s->pend.len && tok_encode(s->c->t, s->pend.data, s->pend.len, 0, s->ids)) s->err = -1;
    s->pend.len = 0;
}

/* A template token: its id when the tokenizer has it as an added token (as
 * HF would find it in the rendered text), else plain text. */
static void mark(struct sink *s, const char *tok)
{
    if (s->text) { puts_(s, tok); return; }
    int32_t id = tok ? tok_added_id(s->c->t, tok, strlen(tok)) : -1;
    if (id < 0) { puts_(s, tok ? tok : ""); return; }
    bool l, r;
    tok_strip_flags(s->c->t, id, &l, &r);
    if (l) s->pend.len = rstrip_len(s->pend.data, s->pend.len);
    flush(s);
    tok_ids_push(s->ids, id);
    s->strip_next = r;
}

static bool role_is(const struct chat_msg *m, const char *r) { return m->role_n == strlen(r) && !memcmp(m->role, r, m->role_n); }

static int bad_role(const struct chat_template *c, size_t i, const struct chat_msg *m)
{
    return rl_err("messages[%zu]: role \"%.*s\" is not supported by the %s template", i, (int)m->role_n, m->role,
                  kind_names[c->kind]);
}

/* ---- renderers ---- */

static int r_llama3(struct sink *s, const struct chat_msg *m, size_t n, bool gen)
{
    const struct chat_template *c = s->c;
    size_t first = 0;
    if (c->kind == CHAT_LLAMA31) {
        mark(s, c->bos);
        mark(s, "<|start_header_id|>");
        puts_(s, "system");
        mark(s, "<|end_header_id|>");
        puts_(s, "\n\nCutting Knowledge Date: December 2023\nToday Date: ");
        puts_(s, c->date_string);
        puts_(s, "\n\n");
        if (n && role_is(&m[0], "system")) {
            put_trim(s, m[0].content, m[0].content_n);
            first = 1;
        }
        mark(s, "<|eot_id|>");
    }
    for (size_t i = first; i < n; i++) {
        if (i == 0 && c->kind == CHAT_LLAMA3) mark(s, c->bos);
        mark(s, "<|start_header_id|>");
        put(s, m[i].role, m[i].role_n);
        mark(s, "<|end_header_id|>");
        puts_(s, "\n\n");
        put_trim(s, m[i].content, m[i].content_n);
        mark(s, "<|eot_id|>");
    }
    if (gen) {
        mark(s, "<|start_header_id|>");
        puts_(s, "assistant");
        mark(s, "<|end_header_id|>");
        puts_(s, "\n\n");
    }
    return 0;
}

static void chatml_turn(struct sink *s, const char *role, size_t rn, const char *content, size_t cn)
{
    mark(s, "<|im_start|>");
    put(s, role, rn);
    puts_(s, "\n");
    put(s, content, cn);
    mark(s, "<|im_end|>");
    puts_(s, "\n");
}

static int r_chatml(struct sink *s, const struct chat_msg *m, size_t n, bool gen)
{
    const char *sys = s->c->default_system;
    if (sys && !(n && role_is(&m[0], "system"))) chatml_turn(s, "system", 6, sys, strlen(sys));
    for (size_t i = 0; i < n; i++) chatml_turn(s, m[i].role, m[i].role_n, m[i].content, m[i].content_n);
    if (gen) {
        mark(s, "<|im_start|>");
        puts_(s, "assistant\n");
    }
    return 0;
}

static const char *memmem_last(const char *h, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (!memcmp(h + i, needle, k)) return h + i;
    return NULL;
}

static bool starts_ends(const struct chat_msg *m, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    return m->content_n >= na && m->content_n >= nb && !memcmp(m->content, a, na) &&
           !memcmp(m->content + m->content_n - nb, b, nb);
}

/* Qwen3: history assistant turns lose their <think> part; turns after the
 * last user query keep it (written as <think>\n...\n</think>\n\n); tool
 * results are grouped into one user turn. Strings as in the Jinja. */
static int r_qwen3(struct sink *s, const struct chat_msg *m, size_t n, bool gen)
{
    if (n && role_is(&m[0], "system")) chatml_turn(s, "system", 6, m[0].content, m[0].content_n);
    size_t last_query = n ? n - 1 : 0;
    for (size_t i = n; i-- > 0;)
        if (role_is(&m[i], "user") && !starts_ends(&m[i], "<tool_response>", "</tool_response>")) {
            last_query = i;
            break;
        }
    for (size_t i = 0; i < n; i++) {
        const struct chat_msg *x = &m[i];
        if (role_is(x, "user") || (role_is(x, "system") && i > 0)) {
            chatml_turn(s, x->role, x->role_n, x->content, x->content_n);
        } else if (role_is(x, "assistant")) {
            const char *content = x->content, *reason = "";
            size_t cn = x->content_n, rn = 0;
            const char *end_think = memmem(x->content, x->content_n, "</think>", 8);
            if (end_think) {
                const char *last = memmem_last(x->content, x->content_n, "</think>");
                content = last + 8;
                cn = (size_t)(x->content + x->content_n - content);
                while (cn && *content == '\n') content++, cn--;
                rn = (size_t)(end_think - x->content);
                while (rn && x->content[rn - 1] == '\n') rn--;
                const char *open = memmem_last(x->content, rn, "<think>");
                reason = open ? open + 7 : x->content;
                rn -= (size_t)(reason - x->content);
                while (rn && *reason == '\n') reason++, rn--;
            }
            mark(s, "<|im_start|>");
            puts_(s, "assistant\n");
            if (i > last_query && (i == n - 1 || rn)) {
                while (rn && reason[rn - 1] == '\n') rn--;   /* .strip('\n') */
                puts_(s, "<think>\n");
                put(s, reason, rn);
                puts_(s, "\n</think>\n\n");
                while (cn && *content == '\n') content++, cn--;
            }
            put(s, content, cn);
            mark(s, "<|im_end|>");
            puts_(s, "\n");
        } else if (role_is(x, "tool")) {
            if (i == 0 || !role_is(&m[i - 1], "tool")) {
                mark(s, "<|im_start|>");
                puts_(s, "user");
            }
            puts_(s, "\n<tool_response>\n");
            put(s, x->content, x->content_n);
            puts_(s, "\n</tool_response>");
            if (i == n - 1 || !role_is(&m[i + 1], "tool")) {
                mark(s, "<|im_end|>");
                puts_(s, "\n");
            }
        } else if (!role_is(x, "system")) {
            return bad_role(s->c, i, x);
        }
    }
    if (gen) {
        mark(s, "<|im_start|>");
        puts_(s, "assistant\n");
    }
    return 0;
}

/* Mistral / Llama 2: a system message goes into the first user turn. */
static int r_inst(struct sink *s, const struct chat_msg *m, size_t n, bool gen)
{
    const struct chat_template *c = s->c;
    bool llama2 = c->kind == CHAT_LLAMA2;
    const struct chat_msg *sys = n && role_is(&m[0], "system") ? &m[0] : NULL;
    bool first_user = true;
    if (!llama2) mark(s, c->bos);
    for (size_t i = sys ? 1 : 0; i < n; i++) {
        const struct chat_msg *x = &m[i];
        if (role_is(x, "user")) {
            struct rl_buf u = {0};
            if (sys && first_user && llama2) {
                rl_buf_put(&u, "<<SYS>>\n", 8);
                rl_buf_put(&u, sys->content, sys->content_n);
                rl_buf_put(&u, "\n<</SYS>>\n\n", 11);
            } else if (sys && first_user) {
                rl_buf_put(&u, sys->content, sys->content_n);
                rl_buf_put(&u, "\n\n", 2);
            }
            rl_buf_put(&u, x->content, x->content_n);
            if (llama2) mark(s, c->bos);
            mark(s, "[INST]");
            puts_(s, " ");
            if (llama2) put_trim(s, u.data, u.len);
            else put(s, u.data, u.len);
            puts_(s, " ");
            mark(s, "[/INST]");
            rl_buf_free(&u);
            first_user = false;
        } else if (role_is(x, "assistant")) {
            if (llama2) {
                puts_(s, " ");
                put_trim(s, x->content, x->content_n);
                puts_(s, " ");
            } else {
                put(s, x->content, x->content_n);
            }
            mark(s, c->eos);
        } else {
            return bad_role(c, i, x);
        }
    }
    (void)gen;   /* the assistant answer follows [/INST] directly: nothing to add */
    return 0;
}

static int r_gemma(struct sink *s, const struct chat_msg *m, size_t n, bool gen)
{
    const struct chat_template *c = s->c;
    const struct chat_msg *sys = n && role_is(&m[0], "system") ? &m[0] : NULL;
    mark(s, c->bos);
    for (size_t i = sys ? 1 : 0; i < n; i++) {
        const struct chat_msg *x = &m[i];
        if (!role_is(x, "user") && !role_is(x, "assistant") && !role_is(x, "model")) return bad_role(c, i, x);
        mark(s, "<start_of_turn>");
        if (role_is(x, "user")) puts_(s, "user\n");
        else puts_(s, "model\n");
        if (sys && i == 1) {
            put(s, sys->content, sys->content_n);
            puts_(s, "\n\n");
        }
        put_trim(s, x->content, x->content_n);
        mark(s, "<end_of_turn>");
        puts_(s, "\n");
    }
    if (gen) {
        mark(s, "<start_of_turn>");
        puts_(s, "model\n");
    }
    return 0;
}

static int r_plain(struct sink *s, const struct chat_msg *m, size_t n, bool gen)
{
    /* a base model's prompt: what encoding the text with the post-processor gives */
    struct tok_ids pre = {0};
    if (s->c->t) tok_encode(s->c->t, "", 0, TOK_ADD_SPECIAL, &pre);
    for (size_t i = 0; i < pre.n; i++) {
        size_t k;
        const char *b = tok_bytes(s->c->t, pre.v[i], &k);
        if (s->text) put(s, b, k);
        else {
            flush(s);
            tok_ids_push(s->ids, pre.v[i]);
        }
    }
    free(pre.v);
    for (size_t i = 0; i < n; i++) {
        if (i) puts_(s, "\n\n");
        put(s, m[i].content, m[i].content_n);
    }
    (void)gen;
    return 0;
}

static int run(const struct chat_template *c, const struct chat_msg *m, size_t n, bool gen, struct sink *s)
{
    for (size_t i = 0; i < n; i++) {
        size_t bad = tok_utf8_valid(m[i].content, m[i].content_n);
        if (bad != m[i].content_n) return rl_err("messages[%zu].content: invalid UTF-8 at byte %zu", i, bad);
        if (tok_utf8_valid(m[i].role, m[i].role_n) != m[i].role_n)
            return rl_err("messages[%zu].role: invalid UTF-8", i);
    }
    int rc;
    switch (c->kind) {
    case CHAT_LLAMA3: case CHAT_LLAMA31: rc = r_llama3(s, m, n, gen); break;
    case CHAT_CHATML: rc = r_chatml(s, m, n, gen); break;
    case CHAT_QWEN3: rc = r_qwen3(s, m, n, gen); break;
    case CHAT_MISTRAL: case CHAT_LLAMA2: rc = r_inst(s, m, n, gen); break;
    case CHAT_GEMMA: rc = r_gemma(s, m, n, gen); break;
    default: rc = r_plain(s, m, n, gen); break;
    }
    flush(s);
    rl_buf_free(&s->pend);
    return rc ? rc : s->err;
}

int chat_encode(const struct chat_template *c, const struct chat_msg *m, size_t n, bool gen_prompt,
                struct tok_ids *out)
{
    if (!c->t) return rl_err("chat template opened without a tokenizer: it can only render text");
    struct sink s = {.c = c, .ids = out};
    return run(c, m, n, gen_prompt, &s);
}

int chat_render(const struct chat_template *c, const struct chat_msg *m, size_t n, bool gen_prompt,
                struct rl_buf *out)
{
    struct sink s = {.c = c, .text = out};
    return run(c, m, n, gen_prompt, &s);
}
