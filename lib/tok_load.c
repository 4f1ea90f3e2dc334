/* Loading a tokenizer: Hugging Face tokenizer.json (model BPE, byte-level) or
 * the older GPT-2 pair (vocab.json + merges.txt, alias encoder.json + vocab.bpe).
 *
 * Everything that decides how text splits comes from the file: regexes are
 * compiled with PCRE2 (UTF + UCP, JIT), the normalizer and post-processor are
 * read step by step, and anything not understood is an error naming the field,
 * never a silent approximation. The byte-level alphabet is undone once here,
 * so the encoder works on raw bytes. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsutil.h"
#include "tok_impl.h"

/* GPT-2's regex, which ByteLevel(use_regex=true) applies: a known constant of
 * the format, not a per-model choice. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

uint64_t tok_hash(const void *p, size_t n)
{
    /* FNV-1a: short keys (pre-tokens), simple, good enough spread for open addressing */
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---- byte-level alphabet: the 256 bytes as printable code points ---- */

/* Byte b is written as code point byte_cp(b): printable Latin-1 stays, the
 * rest is shifted to 256.. in byte order (the GPT-2 convention). */
static void byte_level_tables(uint32_t b2cp[256], int16_t cp2b[512])
{
    int extra = 0;
    for (int i = 0; i < 512; i++) cp2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        b2cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
        cp2b[b2cp[b]] = (int16_t)b;
    }
}

static int16_t bl_cp2b[512];
static void bl_init(void)
{
    uint32_t b2cp[256];
    byte_level_tables(b2cp, bl_cp2b);
}

/* Map a byte-level string back to bytes (the output is never longer).
 * Returns the length, or -1 when a character is outside the alphabet. */
static long byte_level_decode(const char *s, size_t n, char *out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, bl_init);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        int k;
        if (c < 0x80) { cp = c; k = 1; }
        else if ((c & 0xE0) == 0xC0 && i + 1 < n) { cp = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3F); k = 2; }
        else return -1;
        if (cp >= 512 || bl_cp2b[cp] < 0) return -1;
        out[o++] = (char)bl_cp2b[cp];
        i += k;
    }
    return (long)o;
}

/* ---- hash tables ---- */

int32_t tok_strmap_get(const struct tokenizer *t, const struct tok_strmap *m, const void *s, size_t n)
{
    if (!m->slot) return -1;
    for (size_t i = tok_hash(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        const struct tok_str *v = &t->vocab[id];
        if (v->len == n && memcmp(t->pool + v->off, s, n) == 0) return id;
    }
}

static void strmap_put(struct tokenizer *t, struct tok_strmap *m, int32_t id)
{
    const struct tok_str *v = &t->vocab[id];
    for (size_t i = tok_hash(t->pool + v->off, v->len) & m->mask;; i = (i + 1) & m->mask) {
        int32_t o = m->slot[i];
        if (o < 0) { m->slot[i] = id; return; }
        const struct tok_str *w = &t->vocab[o];
        if (w->len == v->len && memcmp(t->pool + w->off, t->pool + v->off, v->len) == 0) return;
    }
}

static inline uint64_t merge_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

const struct tok_merge *tok_merge_get(const struct tokenizer *t, int32_t a, int32_t b)
{
    uint64_t k = merge_key(a, b);
    uint64_t h = k * 0x9E3779B97F4A7C15ull;
    for (size_t i = (h >> 20) & t->merges_mask;; i = (i + 1) & t->merges_mask) {
        const struct tok_merge *m = &t->merges[i];
        if (m->key == k) return m;
        if (m->key == UINT64_MAX) return NULL;
    }
}

/* ---- building ---- */

struct vocab_builder {
    struct rl_buf pool;
    struct tok_str *ent;   /* by id */
    bool *raw;             /* by id: not in the byte-level alphabet (kept as UTF-8) */
    int32_t cap;           /* entries allocated */
};

static int vb_set(struct vocab_builder *vb, int32_t id, const char *s, size_t n, const char *what)
{
    if (id < 0 || id >= TOK_MAX_IDS)
        return rl_err("%s: token id %d out of range (0..%d)", what, id, TOK_MAX_IDS - 1);
    if (id >= vb->cap) {
        int32_t nc = vb->cap ? vb->cap : 1024;
        while (nc <= id) nc *= 2;
        vb->ent = rl_realloc(vb->ent, (size_t)nc * sizeof *vb->ent);
        vb->raw = rl_realloc(vb->raw, (size_t)nc * sizeof *vb->raw);
        for (int32_t i = vb->cap; i < nc; i++) vb->ent[i].len = UINT32_MAX, vb->raw[i] = false;
        vb->cap = nc;
    }
    if (vb->ent[id].len != UINT32_MAX)
        return rl_err("%s: token id %d appears twice", what, id);
    char *tmp = rl_malloc(n + 1);
    long m = byte_level_decode(s, n, tmp);
    if (m < 0) {   /* not in the byte-level alphabet: keep its UTF-8 as is (never reached by merges) */
        memcpy(tmp, s, n);
        m = (long)n;
        vb->raw[id] = true;
    }
    if (vb->pool.len + (size_t)m > UINT32_MAX / 2) {
        free(tmp);
        return rl_err("%s: vocabulary strings over 2 GiB", what);
    }
    vb->ent[id].off = (uint32_t)vb->pool.len;
    vb->ent[id].len = (uint32_t)m;
    rl_buf_put(&vb->pool, tmp, (size_t)m);
    free(tmp);
    return 0;
}

static int set_vocab(struct tokenizer *t, struct vocab_builder *vb, int32_t max_id)
{
    t->n_ids = max_id + 1;
    if (vb->cap < t->n_ids) {
        vb->ent = rl_realloc(vb->ent, (size_t)t->n_ids * sizeof *vb->ent);
        vb->raw = rl_realloc(vb->raw, (size_t)t->n_ids * sizeof *vb->raw);
        for (int32_t i = vb->cap; i < t->n_ids; i++) vb->ent[i].len = UINT32_MAX, vb->raw[i] = false;
        vb->cap = t->n_ids;
    }
    t->vocab = vb->ent;
    t->pool = vb->pool.data ? vb->pool.data : rl_malloc(1);
    t->pool_len = vb->pool.len;
    size_t n = 0;
    for (int32_t i = 0; i < t->n_ids; i++) n += t->vocab[i].len != UINT32_MAX;
    t->vocab_map.mask = pow2_at_least(n * 2) - 1;
    t->vocab_map.slot = rl_malloc((t->vocab_map.mask + 1) * sizeof(int32_t));
    memset(t->vocab_map.slot, 0xff, (t->vocab_map.mask + 1) * sizeof(int32_t));
    for (int32_t i = 0; i < t->n_ids; i++)
        /* an entry outside the byte-level alphabet is decodable but never the result of
         * BPE (HF works on byte-level strings): it must not shadow the entry with the same bytes */
        if (t->vocab[i].len != UINT32_MAX && !vb->raw[i]) strmap_put(t, &t->vocab_map, i);
    free(vb->raw);
    vb->raw = NULL;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = tok_strmap_get(t, &t->vocab_map, &c, 1);
    }
    return 0;
}

/* Add merge number `rank` of byte-level strings a and b (as written in the file). */
static int add_merge(struct tokenizer *t, size_t rank, const char *a, size_t na, const char *b, size_t nb,
                     const char *what)
{
    char *buf = rl_malloc(na + nb + 1);
    long la = byte_level_decode(a, na, buf);
    long lb = la < 0 ? -1 : byte_level_decode(b, nb, buf + la);
    int32_t ia = -1, ib = -1, im = -1;
    if (la < 0 || lb < 0) {   /* outside the byte-level alphabet: BPE can never meet this pair */
        free(buf);
        return 0;
    }
    ia = tok_strmap_get(t, &t->vocab_map, buf, (size_t)la);
    ib = tok_strmap_get(t, &t->vocab_map, buf + la, (size_t)lb);
    im = tok_strmap_get(t, &t->vocab_map, buf, (size_t)(la + lb));
    free(buf);
    if (ia < 0 || ib < 0 || im < 0)
        return rl_err("%s: merge %zu (\"%.*s\" \"%.*s\"): %s not in the vocabulary", what, rank,
                      (int)na, a, (int)nb, b, ia < 0 || ib < 0 ? "a part is" : "the merged token is");
    uint64_t k = merge_key(ia, ib);
    uint64_t h = k * 0x9E3779B97F4A7C15ull;
    for (size_t i = (h >> 20) & t->merges_mask;; i = (i + 1) & t->merges_mask) {
        struct tok_merge *m = &t->merges[i];
        if (m->key == k) return 0;            /* repeated merge: the first (lowest rank) wins */
        if (m->key == UINT64_MAX) {
            m->key = k;
            m->rank = (int32_t)rank;
            m->id = im;
            return 0;
        }
    }
}

static void alloc_merges(struct tokenizer *t, size_t n)
{
    t->merges_mask = pow2_at_least(n * 2) - 1;
    t->merges = rl_malloc((t->merges_mask + 1) * sizeof *t->merges);
    for (size_t i = 0; i <= t->merges_mask; i++) t->merges[i].key = UINT64_MAX;
}

/* HF runs the patterns with Oniguruma, whose \s is exactly Unicode White_Space;
 * PCRE2's UCP \s also takes U+180E. Rewriting \s and \S to the property
 * (inside classes too, not inside \Q...\E) makes the two agree on every code
 * point; \p{L} and \p{N} already do (checked over all of Unicode). */
static char *oniguruma_classes(const char *pat, size_t n, size_t *out_n)
{
    struct rl_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (pat[i] != '\\' || i + 1 >= n) { rl_buf_putc(&b, pat[i]); continue; }
        char c = pat[++i];
        if (c == 's') rl_buf_put(&b, "\\p{White_Space}", 15);
        else if (c == 'S') rl_buf_put(&b, "\\P{White_Space}", 15);
        else if (c == 'Q') {   /* literal up to \E: copy as is */
            const char *e = memmem(pat + i, n - i, "\\E", 2);
            size_t end = e ? (size_t)(e - pat) + 2 : n;
            rl_buf_put(&b, pat + i - 1, end - (i - 1));
            i = end - 1;
        } else {
            rl_buf_putc(&b, '\\');
            rl_buf_putc(&b, c);
        }
    }
    rl_buf_putc(&b, 0);
    *out_n = b.len - 1;
    return b.data;
}

static int compile_regex(pcre2_code **out, const char *pat0, size_t n0, const char *what)
{
    int ec;
    PCRE2_SIZE eo;
    size_t n;
    char *pat = oniguruma_classes(pat0, n0, &n);
    *out = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    free(pat);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return rl_err("%s: regex does not compile at offset %zu: %s", what, (size_t)eo, (char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);   /* without JIT (unsupported CPU) it still works */
    return 0;
}

static int add_pretok(struct tokenizer *t, const struct tok_pretok *p, const char *what)
{
    if (t->n_pt >= TOK_MAX_STEPS) return rl_err("%s: more than %d pre-tokenizer steps", what, TOK_MAX_STEPS);
    t->pt[t->n_pt++] = *p;
    return 0;
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jbool(json_t *o, const char *k, bool def)
{
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int parse_normalizer(struct tokenizer *t, json_t *n, const char *what)
{
    if (!n || json_is_null(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return rl_err("%s: normalizer without a \"type\"", what);
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(n, "normalizers");
        if (!json_is_array(a)) return rl_err("%s: normalizer Sequence without \"normalizers\" array", what);
        size_t i;
        json_t *e;
        json_array_foreach(a, i, e) if (parse_normalizer(t, e, what)) return -1;
        return 0;
    }
    static const struct { const char *name; enum tok_norm k; } known[] = {
        {"NFC", NORM_NFC}, {"NFD", NORM_NFD}, {"NFKC", NORM_NFKC}, {"NFKD", NORM_NFKD},
        {"Lowercase", NORM_LOWERCASE},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(type, known[i].name)) {
            if (t->n_norm >= TOK_MAX_STEPS) return rl_err("%s: too many normalizer steps", what);
            t->norm[t->n_norm++] = known[i].k;
            return 0;
        }
    return rl_err("%s: normalizer type \"%s\" is not supported (NFC, NFD, NFKC, NFKD, Lowercase, Sequence)",
                  what, type);
}

/* "behavior": HF's SplitDelimiterBehavior (optional where HF has a default) */
static int parse_behavior(json_t *p, struct tok_pretok *s, bool optional, const char *what)
{
    const char *b = jstr(p, "behavior");
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    if (!b && optional) { s->behavior = SPLIT_ISOLATED; return 0; }
    for (int i = 0; b && i < 5; i++)
        if (!strcmp(b, names[i])) { s->behavior = (enum tok_split)i; return 0; }
    return rl_err("%s: pre_tokenizer behavior \"%s\" is not known", what, b ? b : "(missing)");
}

static int parse_pretok(struct tokenizer *t, json_t *p, bool *byte_level, const char *what)
{
    if (!p || json_is_null(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return rl_err("%s: pre_tokenizer without a \"type\"", what);
    struct tok_pretok s = {0};
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(p, "pretokenizers");
        if (!json_is_array(a)) return rl_err("%s: pre_tokenizer Sequence without \"pretokenizers\" array", what);
        size_t i;
        json_t *e;
        json_array_foreach(a, i, e) if (parse_pretok(t, e, byte_level, what)) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        *byte_level = true;
        s.kind = PT_BYTELEVEL;
        s.add_prefix_space = jbool(p, "add_prefix_space", true);
        if (jbool(p, "use_regex", true) && compile_regex(&s.re, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, what))
            return -1;
        if (!s.add_prefix_space && !s.re) return 0;   /* only the byte mapping: implicit */
        return add_pretok(t, &s, what);
    }
    if (!strcmp(type, "Split")) {
        s.kind = PT_SPLIT;
        json_t *pat = json_object_get(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        if (re) {
            if (compile_regex(&s.re, re, strlen(re), what)) return -1;
        } else if (lit) {   /* a literal string: quote it for PCRE2 */
            struct rl_buf q = {0};
            rl_buf_put(&q, "\\Q", 2);
            for (const char *c = lit; *c; c++) {
                if (c[0] == '\\' && c[1] == 'E') rl_buf_put(&q, "\\E\\\\E\\Q", 7), c++;
                else rl_buf_putc(&q, *c);
            }
            rl_buf_put(&q, "\\E", 2);
            int rc = compile_regex(&s.re, q.data, q.len, what);
            rl_buf_free(&q);
            if (rc) return -1;
        } else {
            return rl_err("%s: Split pre_tokenizer without a \"pattern\" {\"Regex\"|\"String\"}", what);
        }
        if (parse_behavior(p, &s, false, what)) { pcre2_code_free(s.re); return -1; }
        s.invert = jbool(p, "invert", false);
        if (add_pretok(t, &s, what)) { pcre2_code_free(s.re); return -1; }
        return 0;
    }
    /* per-character splits, as HF writes them: Digits isolates (individual) or
     * groups numeric characters, Punctuation splits on punctuation with a
     * behavior, WhitespaceSplit removes whitespace */
    if (!strcmp(type, "Digits")) {
        s.kind = PT_DIGITS;
        s.individual_digits = jbool(p, "individual_digits", false);
        s.behavior = s.individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
        return add_pretok(t, &s, what);
    }
    if (!strcmp(type, "Punctuation")) {
        s.kind = PT_PUNCT;
        if (parse_behavior(p, &s, true, what)) return -1;
        return add_pretok(t, &s, what);
    }
    if (!strcmp(type, "WhitespaceSplit")) {
        s.kind = PT_WSPLIT;
        s.behavior = SPLIT_REMOVED;
        return add_pretok(t, &s, what);
    }
    return rl_err("%s: pre_tokenizer type \"%s\" is not supported (ByteLevel, Split, Digits, Punctuation, "
                  "WhitespaceSplit, Sequence)", what, type);
}

static int post_add(int32_t **v, int *n, int32_t id)
{
    *v = rl_realloc(*v, (size_t)(*n + 1) * sizeof **v);
    (*v)[(*n)++] = id;
    return 0;
}

static int post_token(struct tokenizer *t, json_t *pair, int32_t **v, int *n, const char *what)
{
    /* Roberta/Bert: ["<s>", 0] */
    json_t *id = json_array_get(pair, 1);
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= t->n_ids)
        return rl_err("%s: post_processor token id is missing or out of range", what);
    return post_add(v, n, (int32_t)json_integer_value(id));
}

static int parse_post(struct tokenizer *t, json_t *p, const char *what)
{
    if (!p || json_is_null(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return rl_err("%s: post_processor without a \"type\"", what);
    if (!strcmp(type, "ByteLevel")) return 0;   /* offsets only */
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(p, "processors");
        size_t i;
        json_t *e;
        if (!json_is_array(a)) return rl_err("%s: post_processor Sequence without \"processors\"", what);
        json_array_foreach(a, i, e) if (parse_post(t, e, what)) return -1;
        return 0;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        if (post_token(t, json_object_get(p, "cls"), &t->post_pre, &t->n_post_pre, what)) return -1;
        return post_token(t, json_object_get(p, "sep"), &t->post_post, &t->n_post_post, what);
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(p, "single"), *sp = json_object_get(p, "special_tokens");
        if (!json_is_array(single)) return rl_err("%s: TemplateProcessing without \"single\"", what);
        bool after = false;
        size_t i;
        json_t *e;
        json_array_foreach(single, i, e) {
            json_t *st = json_object_get(e, "SpecialToken");
            if (json_object_get(e, "Sequence")) { after = true; continue; }
            const char *name = jstr(st, "id");
            json_t *ids = json_object_get(json_object_get(sp, name ? name : ""), "ids");
            if (!name || !json_is_array(ids))
                return rl_err("%s: TemplateProcessing item %zu: special token not in \"special_tokens\"", what, i);
            size_t j;
            json_t *x;
            json_array_foreach(ids, j, x) {
                if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= t->n_ids)
                    return rl_err("%s: TemplateProcessing token \"%s\": bad id", what, name);
                if (after) post_add(&t->post_post, &t->n_post_post, (int32_t)json_integer_value(x));
                else post_add(&t->post_pre, &t->n_post_pre, (int32_t)json_integer_value(x));
            }
        }
        return 0;
    }
    return rl_err("%s: post_processor type \"%s\" is not supported", what, type);
}

/* After the normalizer is known: what each added token looks like in the
 * text it is matched against (HF normalizes the content of `normalized`
 * tokens), longest first, and what decode writes for it. */
static void finish_added(struct tokenizer *t)
{
    t->added_of = rl_malloc((size_t)t->n_ids * sizeof(int32_t));
    for (int32_t i = 0; i < t->n_ids; i++) t->added_of[i] = -1;
    memset(t->added_first, 0, sizeof t->added_first);
    for (int i = 0; i < t->n_added; i++) {
        struct tok_added *a = &t->added[i];
        size_t mn = a->len;
        char *m = a->normalized ? tok_normalize(t, a->content, a->len, &mn) : NULL;
        if (m && mn == 0) { free(m); m = NULL; mn = a->len; }   /* normalized away: keep the content */
        a->match = m ? m : rl_strdup(a->content);
        a->match_len = m ? mn : a->len;
        /* HF decodes an added token through the ByteLevel decoder too: a content
         * made only of byte-level characters ("Ġx") becomes those bytes, any
         * other content stays as written. */
        a->dec = rl_malloc(a->len + 1);
        long k = byte_level_decode(a->content, a->len, a->dec);
        if (k < 0) memcpy(a->dec, a->content, a->len);
        a->dec_len = k < 0 ? a->len : (size_t)k;
    }
    /* longest first, so the first candidate that matches at a position is the longest (HF: leftmost-longest) */
    for (int i = 1; i < t->n_added; i++)
        for (int j = i; j > 0 && t->added[j].match_len > t->added[j - 1].match_len; j--) {
            struct tok_added x = t->added[j];
            t->added[j] = t->added[j - 1];
            t->added[j - 1] = x;
        }
    for (int i = 0; i < t->n_added; i++) {
        t->added_of[t->added[i].id] = i;
        t->added_first[(unsigned char)t->added[i].match[0]] = 1;
        if (t->added[i].normalized) t->any_normalized_added = true;
    }
}

static int add_added(struct tokenizer *t, int32_t id, const char *s, size_t n, bool special, bool lstrip,
                     bool rstrip, bool single_word, bool normalized, const char *what)
{
    if (n == 0) return rl_err("%s: added token %d has empty content", what, id);
    if (tok_utf8_valid(s, n) != n) return rl_err("%s: added token %d is not valid UTF-8", what, id);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id == id) return 0;   /* listed twice: keep the first */
    t->added = rl_realloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
    struct tok_added *a = &t->added[t->n_added++];
    *a = (struct tok_added){.id = id, .content = rl_malloc(n + 1), .len = n, .special = special, .lstrip = lstrip,
                            .rstrip = rstrip, .single_word = single_word, .normalized = normalized};
    memcpy(a->content, s, n);
    a->content[n] = 0;
    return 0;
}

static char *fingerprint_of(const char *a, size_t na, const char *b, size_t nb, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < na; i++) h = (h ^ (unsigned char)a[i]) * 0x100000001b3ull;
    if (b) {
        h = (h ^ 0) * 0x100000001b3ull;
        for (size_t i = 0; i < nb; i++) h = (h ^ (unsigned char)b[i]) * 0x100000001b3ull;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return out;
}

static struct tokenizer *tok_new(const char *source)
{
    struct tokenizer *t = rl_calloc(1, sizeof *t);
    t->source = rl_strdup(source);
    t->cache = rl_calloc(1, sizeof *t->cache);
    pthread_mutex_init(&t->cache->lock, NULL);
    t->cache->mask = 4095;
    t->cache->ent = rl_malloc((t->cache->mask + 1) * sizeof *t->cache->ent);
    for (size_t i = 0; i <= t->cache->mask; i++) t->cache->ent[i].key_len = UINT32_MAX;
    return t;
}

/* ---- tokenizer.json ---- */

static int load_hf_model(struct tokenizer *t, json_t *model, const char *what)
{
    const char *type = jstr(model, "type");
    if (!json_is_object(model)) return rl_err("%s: no \"model\" object", what);
    if (type && strcmp(type, "BPE"))
        return rl_err("%s: model type \"%s\" is not supported (only byte-level BPE)", what, type);
    if (jbool(model, "byte_fallback", false))
        return rl_err("%s: BPE with byte_fallback (SentencePiece style) is not supported", what);
    const char *csp = jstr(model, "continuing_subword_prefix"), *ews = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (ews && *ews))
        return rl_err("%s: continuing_subword_prefix / end_of_word_suffix are not supported", what);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab)) return rl_err("%s: model.vocab is missing or not an object", what);
    if (!json_is_array(merges)) return rl_err("%s: model.merges is missing or not an array", what);
    return 0;
}

static int load_vocab_obj(struct vocab_builder *vb, json_t *vocab, int32_t *max_id,
                          const char *what)
{
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v)) return rl_err("%s: vocab entry \"%s\" is not an integer id", what, k);
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= TOK_MAX_IDS) return rl_err("%s: vocab entry \"%s\": id %lld out of range", what, k,
                                                       (long long)id);
        if (vb_set(vb, (int32_t)id, k, strlen(k), what)) return -1;
        if (id > *max_id) *max_id = (int32_t)id;
    }
    return 0;
}

static int load_merges_arr(struct tokenizer *t, json_t *merges, const char *what)
{
    alloc_merges(t, json_array_size(merges));
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            if (!sp) return rl_err("%s: merge %zu \"%s\" is not two tokens separated by a space", what, i, s);
            if (add_merge(t, i, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), what)) return -1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            if (add_merge(t, i, json_string_value(a), json_string_length(a), json_string_value(b),
                          json_string_length(b), what))
                return -1;
        } else {
            return rl_err("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", what, i);
        }
    }
    return 0;
}

static struct tokenizer *load_hf_json(const char *path)
{
    size_t len;
    char *text = fs_read_file(path, &len);
    if (!text) return NULL;
    struct tokenizer *t = tok_load_json(text, len, path);
    free(text);
    return t;
}

struct tokenizer *tok_load_json(const char *text, size_t len, const char *path)
{
    struct tokenizer *t = tok_new(path);
    fingerprint_of(text, len, NULL, 0, t->fingerprint);
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    struct vocab_builder vb = {0};
    bool byte_level = false;
    if (!root) {
        rl_err("%s: line %d column %d: %s", path, je.line, je.column, je.text);
        goto fail;
    }
    if (!json_is_object(root)) { rl_err("%s: not a JSON object", path); goto fail; }
    json_t *model = json_object_get(root, "model");
    if (load_hf_model(t, model, path)) goto fail;
    int32_t max_id = -1;
    if (load_vocab_obj(&vb, json_object_get(model, "vocab"), &max_id, path)) goto fail;
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        rl_err("%s: added_tokens is not an array", path);
        goto fail;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_t *id = json_object_get(a, "id"), *c = json_object_get(a, "content");
        if (!json_is_integer(id) || !json_is_string(c) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_IDS) {
            rl_err("%s: added_tokens[%zu]: needs an integer \"id\" in range and a string \"content\"", path, i);
            goto fail;
        }
        if (json_integer_value(id) > max_id) max_id = (int32_t)json_integer_value(id);
    }
    if (max_id < 0) { rl_err("%s: empty vocabulary", path); goto fail; }
    if (set_vocab(t, &vb, max_id)) goto fail;
    vb = (struct vocab_builder){0};
    json_array_foreach(added, i, a) {
        json_t *c = json_object_get(a, "content");
        if (add_added(t, (int32_t)json_integer_value(json_object_get(a, "id")), json_string_value(c),
                      json_string_length(c), jbool(a, "special", false), jbool(a, "lstrip", false),
                      jbool(a, "rstrip", false), jbool(a, "single_word", false), jbool(a, "normalized", true),
                      path))
            goto fail;
    }
    if (load_merges_arr(t, json_object_get(model, "merges"), path)) goto fail;
    if (parse_normalizer(t, json_object_get(root, "normalizer"), path)) goto fail;
    finish_added(t);
    if (parse_pretok(t, json_object_get(root, "pre_tokenizer"), &byte_level, path)) goto fail;
    if (!byte_level) {
        rl_err("%s: pre_tokenizer has no ByteLevel step: only byte-level BPE is supported", path);
        goto fail;
    }
    json_t *dec = json_object_get(root, "decoder");
    const char *dtype = jstr(dec, "type");
    if (dec && !json_is_null(dec) && (!dtype || strcmp(dtype, "ByteLevel"))) {
        rl_err("%s: decoder type \"%s\" is not supported (ByteLevel)", path, dtype ? dtype : "?");
        goto fail;
    }
    if (parse_post(t, json_object_get(root, "post_processor"), path)) goto fail;
    json_decref(root);
    return t;
fail:
    free(vb.ent);
    free(vb.raw);
    rl_buf_free(&vb.pool);
    json_decref(root);
    tok_free(t);
    return NULL;
}

/* ---- GPT-2 pair ---- */

static struct tokenizer *load_gpt2(const char *vocab_path, const char *merges_path)
{
    size_t nv, nm;
    char *vtext = fs_read_file(vocab_path, &nv);
    if (!vtext) return NULL;
    char *mtext = fs_read_file(merges_path, &nm);
    if (!mtext) { free(vtext); return NULL; }
    char src[2 * FS_PATH_MAX + 4];
    snprintf(src, sizeof src, "%s + %s", vocab_path, merges_path);
    struct tokenizer *t = tok_new(src);
    fingerprint_of(vtext, nv, mtext, nm, t->fingerprint);
    struct vocab_builder vb = {0};
    json_error_t je;
    json_t *vocab = json_loadb(vtext, nv, 0, &je);
    free(vtext);
    int32_t max_id = -1;
    if (!vocab) { rl_err("%s: line %d column %d: %s", vocab_path, je.line, je.column, je.text); goto fail; }
    if (!json_is_object(vocab)) { rl_err("%s: not a JSON object of token -> id", vocab_path); goto fail; }
    if (load_vocab_obj(&vb, vocab, &max_id, vocab_path)) goto fail;
    if (max_id < 0) { rl_err("%s: empty vocabulary", vocab_path); goto fail; }
    if (set_vocab(t, &vb, max_id)) goto fail;
    vb = (struct vocab_builder){0};
    /* Hugging Face's GPT2Tokenizer registers <|endoftext|> as bos/eos/unk: a special token */
    json_t *eot = json_object_get(vocab, "<|endoftext|>");
    if (json_is_integer(eot) &&
        add_added(t, (int32_t)json_integer_value(eot), "<|endoftext|>", 13, true, false, false, false, false,
                  vocab_path))
        goto fail;
    finish_added(t);
    /* merges: "#version" header, then "a b" per line */
    size_t lines = 1;
    for (size_t i = 0; i < nm; i++) lines += mtext[i] == '\n';
    alloc_merges(t, lines);
    size_t rank = 0, lineno = 0;
    for (char *p = mtext, *end = mtext + nm; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        lineno++;
        size_t n = (size_t)(e - p);
        if (n && p[n - 1] == '\r') n--;
        if (n && !(lineno == 1 && n >= 8 && !memcmp(p, "#version", 8))) {
            char *sp = memchr(p, ' ', n);
            if (!sp) { rl_err("%s: line %zu: not two tokens separated by a space", merges_path, lineno); goto fail; }
            char what[FS_PATH_MAX + 32];
            snprintf(what, sizeof what, "%s: line %zu", merges_path, lineno);
            if (add_merge(t, rank++, p, (size_t)(sp - p), sp + 1, n - (size_t)(sp - p) - 1, what)) goto fail;
        }
        p = e + 1;
    }
    struct tok_pretok bl = {.kind = PT_BYTELEVEL};
    if (compile_regex(&bl.re, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, vocab_path)) goto fail;
    t->pt[t->n_pt++] = bl;
    json_decref(vocab);
    free(mtext);
    return t;
fail:
    free(vb.ent);
    free(vb.raw);
    rl_buf_free(&vb.pool);
    json_decref(vocab);
    free(mtext);
    tok_free(t);
    return NULL;
}

static bool is_file(const char *dir, const char *name, char *out, size_t outsz)
{
    struct stat st;
    snprintf(out, outsz, "%s/%s", dir, name);
    return stat(out, &st) == 0 && S_ISREG(st.st_mode);
}

struct tokenizer *tok_load(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) { rl_errno("%s", path); return NULL; }
    if (!S_ISDIR(st.st_mode)) return load_hf_json(path);
    char a[FS_PATH_MAX + 32], b[FS_PATH_MAX + 32];
    if (is_file(path, "tokenizer.json", a, sizeof a)) return load_hf_json(a);
    if (is_file(path, "vocab.json", a, sizeof a) && is_file(path, "merges.txt", b, sizeof b)) return load_gpt2(a, b);
    if (is_file(path, "encoder.json", a, sizeof a) && is_file(path, "vocab.bpe", b, sizeof b)) return load_gpt2(a, b);
    rl_err("%s: no tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe in this directory", path);
    return NULL;
}

void tok_free(struct tokenizer *t)
{
    if (!t) return;
    free(t->source);
    free(t->vocab);
    free(t->pool);
    free(t->vocab_map.slot);
    free(t->merges);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].dec);
        free(t->added[i].match);
    }
    free(t->added);
    free(t->added_of);
    for (int i = 0; i < t->n_pt; i++) pcre2_code_free(t->pt[i].re);
    free(t->post_pre);
    free(t->post_post);
    if (t->cache) {
        pthread_mutex_destroy(&t->cache->lock);
        free(t->cache->ent);
        rl_buf_free(&t->cache->pool);
        free(t->cache);
    }
    free(t);
}

const char *tok_fingerprint(const struct tokenizer *t) { return t->fingerprint; }
const char *tok_source(const struct tokenizer *t) { return t->source; }
int32_t tok_n_ids(const struct tokenizer *t) { return t->n_ids; }
