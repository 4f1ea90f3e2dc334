#include "tokrule.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsutil.h"

int tok_ctx_open(struct tok_ctx *c, const char *dir, const struct model_config *cfg, const char *template_name)
{
    *c = (struct tok_ctx){.dir = dir, .template_name = template_name, .vocab = cfg->vocab_size,
                          .eos = cfg->n_eos ? cfg->eos_token_ids[0] : -1};
    char path[FS_PATH_MAX];
    if (fs_join(path, sizeof path, dir, "tokenizer.json"))
        return rl_err("%s: path too long", dir);
    if (!fs_exists(path))
        return 0;
    c->tok = tok_load(dir);
    return c->tok ? 0 : -1;
}

void tok_ctx_close(struct tok_ctx *c)
{
    chat_free(c->chat);
    tok_free(c->tok);
    *c = (struct tok_ctx){0};
}

int tok_ctx_ids_usable(struct tok_ctx *c, const struct rec *r)
{
    struct rec_str tok;
    int k = rec_get_str(r, "tok", &tok);
    if (k <= 0)
        return k < 0 ? -1 : 1;                   /* no tok: ids as they are */
    if (!c->tok)
        return 1;                                /* nothing to compare with (documented) */
    const char *fp = tok_fingerprint(c->tok);
    return tok.n == strlen(fp) && !memcmp(tok.s, fp, tok.n);
}

static int check_range(struct tok_ctx *c, const struct rec *r, const char *field, const struct tok_ids *ids,
                       size_t from)
{
    for (size_t i = from; i < ids->n; i++)
        if (ids->v[i] < 0 || ids->v[i] >= c->vocab)
            return rec_err(r, "field \"%s\"[%zu] = %d is outside the model's vocabulary (%d)", field, i - from,
                           ids->v[i], c->vocab);
    return 0;
}

static int ids_field(struct tok_ctx *c, const struct rec *r, const char *field, struct tok_ids *out, int *found)
{
    int32_t *v = NULL;
    size_t n = 0, cap = 0;
    *found = rec_get_i32s(r, field, &v, &n, &cap);
    if (*found < 0)
        return free(v), -1;
    size_t from = out->n;
    for (size_t i = 0; i < n; i++)
        tok_ids_push(out, v[i]);
    free(v);
    return *found ? check_range(c, r, field, out, from) : 0;
}

static int need_tokenizer(struct tok_ctx *c, const struct rec *r, const char *field)
{
    if (c->tok)
        return 0;
    return rec_err(r, "no usable \"%s\" and %s has no tokenizer.json to tokenize the text", field, c->dir);
}

static int messages_ids(struct tok_ctx *c, const struct rec *r, const struct mpv *msgs, struct tok_ids *out)
{
    if (!c->chat && !(c->chat = chat_open(c->tok, c->dir, c->template_name)))
        return rec_err(r, "messages need a chat template: %s", rl_errmsg());
    size_t n = msgs->v.c.count;
    struct chat_msg *m = rl_calloc(n, sizeof *m);
    struct mpv_iter it = mpv_iter_array(msgs);
    struct mpv e, role, content;
    int rc = 0;
    for (size_t i = 0; mpv_next(&it, &e) && !rc; i++) {
        if (e.type != MPV_MAP || !mpv_map_get(&e, "role", &role) || !mpv_map_get(&e, "content", &content) ||
            role.type != MPV_STR || content.type != MPV_STR)
            rc = rec_err(r, "field \"messages\"[%zu] must be a map with string \"role\" and \"content\"", i);
        else
            m[i] = (struct chat_msg){role.v.str.s, content.v.str.s, role.v.str.n, content.v.str.n};
    }
    if (!rc && chat_encode(c->chat, m, n, true, out))
        rc = rec_err(r, "field \"messages\": %s", rl_errmsg());
    free(m);
    return rc;
}

int tok_ctx_prompt(struct tok_ctx *c, const struct rec *r, struct tok_ids *out)
{
    int usable = tok_ctx_ids_usable(c, r), found = 0;
    if (usable < 0)
        return -1;
    if (usable && ids_field(c, r, "prompt_ids", out, &found))
        return -1;
    if (found)
        return 0;
    struct mpv msgs;
    struct rec_str text;
    int k = rec_get_array(r, "messages", &msgs);
    if (k < 0)
        return -1;
    if (k == 1)
        return need_tokenizer(c, r, "prompt_ids") ? -1 : messages_ids(c, r, &msgs, out);
    if ((k = rec_get_str(r, "prompt", &text)) <= 0)
        return k < 0 ? -1 : rec_err(r, "no usable \"prompt_ids\", and no \"messages\" or \"prompt\" to tokenize");
    if (need_tokenizer(c, r, "prompt_ids"))
        return -1;
    if (tok_encode(c->tok, text.s, text.n, TOK_SPECIAL | TOK_ADD_SPECIAL, out))
        return rec_err(r, "field \"prompt\": %s", rl_errmsg());
    return 0;
}

int tok_ctx_response(struct tok_ctx *c, const struct rec *r, const char *ids, const char *text_field,
                     struct tok_ids *out)
{
    int usable = tok_ctx_ids_usable(c, r), found = 0;
    if (usable < 0)
        return -1;
    if (usable && ids_field(c, r, ids, out, &found))
        return -1;
    if (found)
        return 0;
    struct rec_str text;
    int k = rec_get_str(r, text_field, &text);
    if (k <= 0)
        return k < 0 ? -1 : rec_err(r, "no usable \"%s\" and no \"%s\" text to tokenize", ids, text_field);
    if (need_tokenizer(c, r, ids))
        return -1;
    if (tok_encode(c->tok, text.s, text.n, 0, out))
        return rec_err(r, "field \"%s\": %s", text_field, rl_errmsg());
    if (c->eos >= 0)
        tok_ids_push(out, c->eos);
    return 0;
}

static bool array_elem(const struct rec *r, const char *field, size_t j, struct mpv *out, int *err)
{
    struct mpv a;
    *err = 0;
    int k = rec_get_array(r, field, &a);
    if (k <= 0) {
        *err = k;
        return false;
    }
    struct mpv_iter it = mpv_iter_array(&a);
    for (size_t i = 0; mpv_next(&it, out); i++)
        if (i == j)
            return true;
    return false;
}

int tok_ctx_response_at(struct tok_ctx *c, const struct rec *r, const char *ids, const char *text_field, size_t j,
                        struct tok_ids *out)
{
    int usable = tok_ctx_ids_usable(c, r), err;
    if (usable < 0)
        return -1;
    struct mpv v;
    char what[128];
    if (usable && array_elem(r, ids, j, &v, &err)) {
        snprintf(what, sizeof what, "%s[%zu]", ids, j);
        int32_t *p = NULL;
        size_t n = 0, cap = 0;
        if (rec_as_i32s(r, what, &v, &p, &n, &cap) < 0)
            return free(p), -1;
        size_t from = out->n;
        for (size_t i = 0; i < n; i++)
            tok_ids_push(out, p[i]);
        free(p);
        return check_range(c, r, what, out, from);
    }
    if (usable && err < 0)
        return -1;
    if (!array_elem(r, text_field, j, &v, &err))
        return err < 0 ? -1 : rec_err(r, "no usable \"%s\"[%zu] and no \"%s\"[%zu] text to tokenize", ids, j, text_field, j);
    snprintf(what, sizeof what, "%s[%zu]", text_field, j);
    struct rec_str text;
    if (rec_as_str(r, what, &v, &text) < 0 || need_tokenizer(c, r, ids))
        return -1;
    if (tok_encode(c->tok, text.s, text.n, 0, out))
        return rec_err(r, "field \"%s\": %s", what, rl_errmsg());
    if (c->eos >= 0)
        tok_ids_push(out, c->eos);
    return 0;
}
