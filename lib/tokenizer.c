/* Encoding and decoding with a loaded tokenizer (tok_load.c reads the files).
 *
 * encode(text) = post_pre ++ for each piece of text between added tokens:
 *                  normalize -> pre-tokenize (steps from the file) -> BPE per word
 *                ++ post_post
 * exactly in the order Hugging Face `tokenizers` applies them: added tokens
 * are cut out of the raw text first (the non-normalized ones) and out of the
 * normalized text second, so the regexes never see them. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_impl.h"

void tok_ids_push(struct tok_ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 64;
        ids->v = rl_realloc(ids->v, ids->cap * sizeof *ids->v);
    }
    ids->v[ids->n++] = id;
}

/* ---- UTF-8 ---- */

/* Length of the valid sequence at s[0..n): > 0 valid, 0 a valid but
 * incomplete prefix (more bytes needed), -1 invalid (overlong, surrogate,
 * beyond U+10FFFF, stray continuation byte). */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;    /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (s[i] < lo_i || s[i] > hi_i) return -1;
    }
    return len;
}

size_t tok_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        int k = utf8_seq(u + i, n - i);
        if (k <= 0) return i;
        i += (size_t)k;
    }
    return n;
}

static uint32_t utf8_decode(const unsigned char *s, int *len)
{
    unsigned c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu); }
    if (c < 0xF0) { *len = 3; return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu); }
    *len = 4;
    return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
}

/* Rust's char::is_whitespace (Unicode White_Space) */
static bool is_ws(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static bool is_numeric(uint32_t c)   /* Rust's char::is_numeric: Nd, Nl, No */
{
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static bool is_punct(uint32_t c)   /* Rust's is_ascii_punctuation, or Unicode P* */
{
    if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

static bool is_word_char(uint32_t c)  /* alphanumeric or '_' */
{
    if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || c == '_';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || is_numeric(c);
}

/* the code point ending just before s[i] */
static uint32_t cp_before(const char *s, size_t i, size_t *start)
{
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
    int len;
    *start = j;
    return utf8_decode((const unsigned char *)s + j, &len);
}

/* ---- the encoder's scratch space (one per call: the tokenizer stays read-only) ---- */

struct seg { uint32_t s, e; bool m; };
struct sym { int32_t id, prev, next; };

struct work {
    const struct tokenizer *t;
    unsigned flags;
    struct tok_ids *out;
    pcre2_match_data *md;
    struct seg *seg[TOK_MAX_STEPS];
    size_t segcap[TOK_MAX_STEPS];
    struct sym *sym;
    uint64_t *heap;
    size_t symcap;
    int pcre_err;            /* a match that failed other than "no match" (limits) */
};

static void work_free(struct work *w)
{
    for (int i = 0; i < TOK_MAX_STEPS; i++) free(w->seg[i]);
    free(w->sym);
    free(w->heap);
    if (w->md) pcre2_match_data_free(w->md);
}

/* ---- BPE ---- */

static void heap_push(uint64_t *h, size_t *n, uint64_t k)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= k) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = k;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], k = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (k <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = k;
    return top;
}

/* Candidate merge of symbol i with its right neighbour, keyed (rank, position):
 * the lowest rank merges first, ties go to the leftmost, as in HF's word.rs. */
static void push_pair(const struct tokenizer *t, struct work *w, size_t *nh, int32_t i)
{
    int32_t j = w->sym[i].next;
    if (j < 0) return;
    const struct tok_merge *m = tok_merge_get(t, w->sym[i].id, w->sym[j].id);
    if (m) heap_push(w->heap, nh, ((uint64_t)(uint32_t)m->rank << 32) | (uint32_t)i);
}

static bool cache_get(const struct tokenizer *t, const char *s, size_t n, struct tok_ids *out)
{
    struct tok_cache *c = t->cache;
    if (pthread_mutex_trylock(&c->lock)) return false;   /* busy: compute instead of waiting */
    bool found = false;
    for (size_t i = tok_hash(s, n) & c->mask;; i = (i + 1) & c->mask) {
        const struct tok_cache_ent *e = &c->ent[i];
        if (e->key_len == UINT32_MAX) break;
        if (e->key_len == n && !memcmp(c->pool.data + e->key_off, s, n)) {
            for (uint32_t k = 0; k < e->n_ids; k++) {
                int32_t id;
                memcpy(&id, c->pool.data + e->ids_off + 4 * k, 4);
                tok_ids_push(out, id);
            }
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

static void cache_put(const struct tokenizer *t, const char *s, size_t n, const int32_t *ids, size_t nids)
{
    struct tok_cache *c = t->cache;
    if (pthread_mutex_trylock(&c->lock)) return;
    if (c->count >= TOK_CACHE_MAX_ENTRIES) goto done;   /* full: like HF, stop adding */
    if (2 * (c->count + 1) > c->mask + 1) {   /* grow: rehash into twice the slots */
        size_t nm = 2 * (c->mask + 1) - 1;
        struct tok_cache_ent *ne = rl_malloc((nm + 1) * sizeof *ne);
        for (size_t i = 0; i <= nm; i++) ne[i].key_len = UINT32_MAX;
        for (size_t i = 0; i <= c->mask; i++) {
            struct tok_cache_ent *e = &c->ent[i];
            if (e->key_len == UINT32_MAX) continue;
            size_t j = tok_hash(c->pool.data + e->key_off, e->key_len) & nm;
            while (ne[j].key_len != UINT32_MAX) j = (j + 1) & nm;
            ne[j] = *e;
        }
        free(c->ent);
        c->ent = ne;
        c->mask = nm;
    }
    size_t i = tok_hash(s, n) & c->mask;
    for (;; i = (i + 1) & c->mask) {
        struct tok_cache_ent *e = &c->ent[i];
        if (e->key_len == UINT32_MAX) break;
        if (e->key_len == n && !memcmp(c->pool.data + e->key_off, s, n)) goto done;   /* raced: present */
    }
    struct tok_cache_ent *e = &c->ent[i];
    while (c->pool.len % 4) rl_buf_putc(&c->pool, 0);
    e->ids_off = (uint32_t)c->pool.len;
    e->n_ids = (uint32_t)nids;
    rl_buf_put(&c->pool, ids, 4 * nids);
    e->key_off = (uint32_t)c->pool.len;
    rl_buf_put(&c->pool, s, n);
    e->key_len = (uint32_t)n;
    c->count++;
done:
    pthread_mutex_unlock(&c->lock);
}

/* One pre-token (raw bytes) -> ids. */
static void bpe_word(struct work *w, const char *s, size_t n)
{
    const struct tokenizer *t = w->t;
    struct tok_ids *out = w->out;
    if (n == 1 && t->byte_id[(unsigned char)s[0]] >= 0) {
        tok_ids_push(out, t->byte_id[(unsigned char)s[0]]);
        return;
    }
    if (t->ignore_merges) {   /* a word that is itself a token is not merged at all */
        int32_t id = tok_strmap_get(t, &t->vocab_map, s, n);
        if (id >= 0) { tok_ids_push(out, id); return; }
    }
    bool cacheable = n <= TOK_CACHE_MAX_WORD;
    if (cacheable && cache_get(t, s, n, out)) return;
    if (n > w->symcap) {
        w->symcap = n * 2;
        w->sym = rl_realloc(w->sym, w->symcap * sizeof *w->sym);
        /* each merge pushes at most two new candidates: 3n bounds the heap */
        w->heap = rl_realloc(w->heap, 3 * w->symcap * sizeof *w->heap);
    }
    /* symbols: one per byte (bytes with no token are dropped, as HF does without unk) */
    int32_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[(unsigned char)s[i]];
        if (id < 0) continue;
        w->sym[ns] = (struct sym){id, ns - 1, -1};
        if (ns) w->sym[ns - 1].next = ns;
        ns++;
    }
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++) push_pair(t, w, &nh, i);
    while (nh) {
        uint64_t k = heap_pop(w->heap, &nh);
        int32_t i = (int32_t)(uint32_t)k, rank = (int32_t)(k >> 32);
        struct sym *a = &w->sym[i];
        if (a->id < 0 || a->next < 0) continue;      /* stale: merged away */
        struct sym *b = &w->sym[a->next];
        const struct tok_merge *m = tok_merge_get(t, a->id, b->id);
        if (!m || m->rank != rank) continue;          /* stale: a neighbour changed */
        a->id = m->id;
        b->id = -1;
        a->next = b->next;
        if (b->next >= 0) w->sym[b->next].prev = i;
        if (a->prev >= 0) push_pair(t, w, &nh, a->prev);
        push_pair(t, w, &nh, i);
    }
    size_t first = out->n;
    for (int32_t i = ns ? 0 : -1; i >= 0; i = w->sym[i].next) tok_ids_push(out, w->sym[i].id);
    if (cacheable) cache_put(t, s, n, out->v + first, out->n - first);
}

/* ---- pre-tokenization ---- */

static void pretok_run(struct work *w, int step, const char *s, size_t n);

static void seg_push(struct work *w, int step, size_t *ns, uint32_t s, uint32_t e, bool m)
{
    if (s == e) return;
    if (*ns == w->segcap[step]) {
        w->segcap[step] = w->segcap[step] ? 2 * w->segcap[step] : 32;
        w->seg[step] = rl_realloc(w->seg[step], w->segcap[step] * sizeof(struct seg));
    }
    w->seg[step][(*ns)++] = (struct seg){s, e, m};
}

/* Matches of the step's pattern as (range, is_match) covering s[0..n). */
static size_t find_segments(struct work *w, int step, const struct tok_pretok *p, const char *s, size_t n)
{
    size_t ns = 0, prev = 0;
    if (p->kind == PT_DIGITS || p->kind == PT_PUNCT || p->kind == PT_WSPLIT) {   /* one match per character */
        for (size_t i = 0; i < n;) {
            int len;
            uint32_t c = utf8_decode((const unsigned char *)s + i, &len);
            bool m = p->kind == PT_DIGITS ? is_numeric(c) : p->kind == PT_PUNCT ? is_punct(c) : is_ws(c);
            if (m) {
                seg_push(w, step, &ns, (uint32_t)prev, (uint32_t)i, false);
                seg_push(w, step, &ns, (uint32_t)i, (uint32_t)(i + (size_t)len), true);
                prev = i + (size_t)len;
            }
            i += (size_t)len;
        }
    } else {
        size_t off = 0;
        while (off < n) {
            int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, w->md, NULL);
            if (rc < 0) {
                if (rc != PCRE2_ERROR_NOMATCH) w->pcre_err = rc;   /* never split silently wrong */
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) {      /* empty match: splits there (HF), then step one character */
                seg_push(w, step, &ns, (uint32_t)prev, (uint32_t)ms, false);
                prev = ms;
                if (ms >= n) break;
                int len;
                utf8_decode((const unsigned char *)s + ms, &len);
                off = ms + (size_t)len;
                continue;
            }
            seg_push(w, step, &ns, (uint32_t)prev, (uint32_t)ms, false);
            seg_push(w, step, &ns, (uint32_t)ms, (uint32_t)me, true);
            prev = off = me;
        }
    }
    seg_push(w, step, &ns, (uint32_t)prev, (uint32_t)n, false);
    return ns;
}

/* Apply the split behavior in place (HF normalizer.rs split semantics). */
static size_t apply_behavior(struct seg *g, size_t ns, enum tok_split b, bool invert)
{
    if (invert)
        for (size_t i = 0; i < ns; i++) g[i].m = !g[i].m;
    size_t o = 0;
    bool prev_m = false;
    switch (b) {
    case SPLIT_ISOLATED:
        return ns;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < ns; i++) if (!g[i].m) g[o++] = g[i];
        return o;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < ns; i++) {
            if (o && g[i].m == prev_m) g[o - 1].e = g[i].e;
            else g[o++] = g[i];
            prev_m = g[i].m;
        }
        return o;
    case SPLIT_MERGED_PREV:
        for (size_t i = 0; i < ns; i++) {
            if (o && g[i].m && !prev_m) g[o - 1].e = g[i].e;
            else g[o++] = g[i];
            prev_m = g[i].m;
        }
        return o;
    case SPLIT_MERGED_NEXT: {   /* the mirror image: walk from the right */
        size_t top = ns;        /* output grows downward from the end */
        for (size_t i = ns; i-- > 0;) {
            if (top < ns && g[i].m && !prev_m) g[top].s = g[i].s;
            else g[--top] = g[i];
            prev_m = g[i].m;
        }
        memmove(g, g + top, (ns - top) * sizeof *g);
        return ns - top;
    }
    }
    return ns;
}

static void pretok_run(struct work *w, int step, const char *s, size_t n)
{
    const struct tokenizer *t = w->t;
    if (n == 0) return;
    if (step == t->n_pt) { bpe_word(w, s, n); return; }
    const struct tok_pretok *p = &t->pt[step];
    if (p->kind == PT_BYTELEVEL) {
        char *b = NULL;
        if (p->add_prefix_space && s[0] != ' ') {
            b = rl_malloc(n + 1);
            b[0] = ' ';
            memcpy(b + 1, s, n);
            s = b;
            n++;
        }
        if (!p->re) pretok_run(w, step + 1, s, n);
        else {
            size_t ns = find_segments(w, step, p, s, n);
            for (size_t i = 0; i < ns; i++)
                pretok_run(w, step + 1, s + w->seg[step][i].s, w->seg[step][i].e - w->seg[step][i].s);
        }
        free(b);
        return;
    }
    size_t ns = find_segments(w, step, p, s, n);
    ns = apply_behavior(w->seg[step], ns, p->behavior, p->kind == PT_SPLIT && p->invert);
    for (size_t i = 0; i < ns; i++)
        pretok_run(w, step + 1, s + w->seg[step][i].s, w->seg[step][i].e - w->seg[step][i].s);
}

/* ---- normalization ---- */

static bool all_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) if ((unsigned char)s[i] >= 0x80) return false;
    return true;
}

/* Returns a malloc'd normalized copy (or NULL when s is unchanged). */
char *tok_normalize(const struct tokenizer *t, const char *s, size_t n, size_t *out_n)
{
    char *cur = NULL;
    for (int k = 0; k < t->n_norm; k++) {
        const char *in = cur ? cur : s;
        size_t in_n = cur ? *out_n : n;
        char *next = NULL;
        if (t->norm[k] == NORM_LOWERCASE) {
            next = rl_malloc(in_n * 2 + 4);   /* lowercase of a code point is at most 2x in UTF-8 here */
            size_t o = 0;
            for (size_t i = 0; i < in_n;) {
                int len;
                uint32_t c = utf8_decode((const unsigned char *)in + i, &len);
                o += (size_t)utf8proc_encode_char(utf8proc_tolower((utf8proc_int32_t)c), (utf8proc_uint8_t *)next + o);
                i += (size_t)len;
            }
            *out_n = o;
        } else {
            if (all_ascii(in, in_n)) continue;   /* ASCII is invariant under NFC/NFD/NFKC/NFKD */
            int opt = UTF8PROC_STABLE;
            switch (t->norm[k]) {
            case NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
            case NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
            case NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
            default: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
            }
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)in_n, &dst,
                                              (utf8proc_option_t)opt);
            if (r < 0) { free(dst); continue; }   /* cannot happen on validated UTF-8; keep the text */
            next = (char *)dst;
            *out_n = (size_t)r;
        }
        free(cur);
        cur = next;
    }
    return cur;
}

/* ---- added tokens ---- */

/* The longest added token of this phase starting at s[i], or -1. */
static int added_at(const struct tokenizer *t, const char *s, size_t n, size_t i, bool normalized_phase)
{
    for (int k = 0; k < t->n_added; k++) {
        const struct tok_added *a = &t->added[k];
        if (a->normalized != normalized_phase || a->match_len > n - i) continue;
        if (a->match[0] == s[i] && !memcmp(a->match, s + i, a->match_len)) return k;
    }
    return -1;
}

static void encode_text(struct work *w, const char *s, size_t n);

/* Cut added tokens out of s, leftmost-longest and non-overlapping (HF
 * AddedVocabulary); the text between them goes on to encode_text (raw phase)
 * or to the pre-tokenizer (normalized phase). */
static void split_added(struct work *w, const char *s, size_t n, bool normalized_phase)
{
    const struct tokenizer *t = w->t;
    size_t start = 0, i = 0;
    while (i < n) {
        if (!t->added_first[(unsigned char)s[i]]) { i++; continue; }
        int k = added_at(t, s, n, i, normalized_phase);
        if (k < 0) { i++; continue; }
        const struct tok_added *a = &t->added[k];
        size_t ms = i, me = i + a->match_len;
        i = me;   /* a skipped match still consumes its text, as in HF */
        if (a->special && !(w->flags & TOK_SPECIAL)) continue;
        if (a->single_word) {
            size_t j;
            int len;
            bool left_ok = ms == 0 || !is_word_char(cp_before(s, ms, &j));
            bool right_ok = me == n || !is_word_char(utf8_decode((const unsigned char *)s + me, &len));
            if (!left_ok || !right_ok) continue;
        }
        if (a->lstrip)
            for (size_t j; ms > start && is_ws(cp_before(s, ms, &j));) ms = j;
        if (a->rstrip)
            for (int len; me < n && is_ws(utf8_decode((const unsigned char *)s + me, &len));) me += (size_t)len;
        if (normalized_phase) pretok_run(w, 0, s + start, ms - start);
        else encode_text(w, s + start, ms - start);
        tok_ids_push(w->out, a->id);
        start = i = me;
    }
    if (normalized_phase) pretok_run(w, 0, s + start, n - start);
    else encode_text(w, s + start, n - start);
}

static void encode_text(struct work *w, const char *s, size_t n)
{
    if (n == 0) return;
    size_t nn = n;
    char *norm = tok_normalize(w->t, s, n, &nn);
    const char *p = norm ? norm : s;
    if (w->t->any_normalized_added) split_added(w, p, nn, true);
    else pretok_run(w, 0, p, nn);
    free(norm);
}

int tok_encode(const struct tokenizer *t, const char *text, size_t len, unsigned flags, struct tok_ids *out)
{
    size_t bad = tok_utf8_valid(text, len);
    if (bad != len) return rl_err("invalid UTF-8 at byte %zu", bad);
    struct work w = {.t = t, .flags = flags, .out = out};
    size_t first = out->n;
    w.md = pcre2_match_data_create(1, NULL);
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_post_pre; i++) tok_ids_push(out, t->post_pre[i]);
    split_added(&w, text, len, false);
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_post_post; i++) tok_ids_push(out, t->post_post[i]);
    work_free(&w);
    if (w.pcre_err) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(w.pcre_err, msg, sizeof msg);
        out->n = first;
        return rl_err("pre-tokenizer regex failed: %s", (char *)msg);
    }
    return 0;
}

/* ---- lookup and decode ---- */

int32_t tok_added_id(const struct tokenizer *t, const char *s, size_t n)
{
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].len == n && !memcmp(t->added[k].content, s, n)) return t->added[k].id;
    return -1;
}

int32_t tok_id(const struct tokenizer *t, const char *s, size_t n)
{
    int32_t id = tok_added_id(t, s, n);
    return id >= 0 ? id : tok_strmap_get(t, &t->vocab_map, s, n);
}

const char *tok_bytes(const struct tokenizer *t, int32_t id, size_t *n)
{
    if (id < 0 || id >= t->n_ids) return NULL;
    int32_t a = t->added_of[id];
    if (a >= 0) { *n = t->added[a].len; return t->added[a].content; }
    if (t->vocab[id].len == UINT32_MAX) return NULL;
    *n = t->vocab[id].len;
    return t->pool + t->vocab[id].off;
}

bool tok_is_special(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && t->added_of[id] >= 0 && t->added[t->added_of[id]].special;
}

void tok_strip_flags(const struct tokenizer *t, int32_t id, bool *lstrip, bool *rstrip)
{
    *lstrip = *rstrip = false;
    if (id < 0 || id >= t->n_ids || t->added_of[id] < 0) return;
    *lstrip = t->added[t->added_of[id]].lstrip;
    *rstrip = t->added[t->added_of[id]].rstrip;
}

/* The bytes decode writes for a token (tok_bytes, but an added token as the
 * ByteLevel decoder turns it out). */
static const char *dec_bytes(const struct tokenizer *t, int32_t id, size_t *n)
{
    if (id >= 0 && id < t->n_ids && t->added_of[id] >= 0) {
        const struct tok_added *a = &t->added[t->added_of[id]];
        *n = a->dec_len;
        return a->dec;
    }
    return tok_bytes(t, id, n);
}

int tok_decode(const struct tokenizer *t, const int32_t *ids, size_t n, unsigned flags, struct rl_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *b = dec_bytes(t, ids[i], &len);
        if (!b) return rl_err("token %zu: id %d is not in the vocabulary (0..%d)", i, ids[i], t->n_ids - 1);
        if ((flags & TOK_SKIP_SPECIAL) && tok_is_special(t, ids[i])) continue;
        rl_buf_put(out, b, len);
    }
    return 0;
}

/* ---- streaming decode ---- */

void tok_stream_init(struct tok_stream *s, const struct tokenizer *t, unsigned flags)
{
    *s = (struct tok_stream){.t = t, .flags = flags};
}

static const char REPLACEMENT[] = "\xEF\xBF\xBD";

/* Emit complete sequences of p[0..n), hold back a valid incomplete tail. */
static void stream_emit(struct tok_stream *s, const unsigned char *p, size_t n, struct rl_buf *out)
{
    size_t i = 0;
    while (i < n) {
        int k = utf8_seq(p + i, n - i);
        if (k > 0) { rl_buf_put(out, p + i, (size_t)k); i += (size_t)k; }
        else if (k < 0) { rl_buf_put(out, REPLACEMENT, 3); i++; }
        else break;   /* incomplete: wait for the next token */
    }
    s->npend = (int)(n - i);
    memcpy(s->pend, p + i, n - i);
}

int tok_stream_push(struct tok_stream *s, int32_t id, struct rl_buf *out)
{
    size_t len;
    const char *b = dec_bytes(s->t, id, &len);
    if (!b) return rl_err("id %d is not in the vocabulary (0..%d)", id, s->t->n_ids - 1);
    if ((s->flags & TOK_SKIP_SPECIAL) && tok_is_special(s->t, id)) return 0;
    if (s->npend == 0) {   /* common case: no copy */
        stream_emit(s, (const unsigned char *)b, len, out);
        return 0;
    }
    unsigned char small[64];
    unsigned char *tmp = len + 8 <= sizeof small ? small : rl_malloc(len + 8);
    memcpy(tmp, s->pend, (size_t)s->npend);
    memcpy(tmp + s->npend, b, len);
    stream_emit(s, tmp, (size_t)s->npend + len, out);
    if (tmp != small) free(tmp);
    return 0;
}

void tok_stream_finish(struct tok_stream *s, struct rl_buf *out)
{
    if (s->npend) rl_buf_put(out, REPLACEMENT, 3);   /* one U+FFFD for the cut-off sequence */
    s->npend = 0;
}
