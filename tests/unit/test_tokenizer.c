/* Tokenizer: exactness on the golden fixtures (ids from HF tokenizers for
 * gpt2, llama3, qwen3), round trips, added-token rules, streaming decode,
 * invalid input. Fixtures via $RL_FIXTURES; skipped (saying so) when absent. */
#include <jansson.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "../harness.h"
#include "tokenizer.h"

static char fixtures[4096];

static const char *fixture(const char *rel, char *buf, size_t n)
{
    snprintf(buf, n, "%s/tokenizers/%s", fixtures, rel);
    return buf;
}

static struct tokenizer *load(const char *rel)
{
    char p[4200];
    struct tokenizer *t = tok_load(fixture(rel, p, sizeof p));
    CHECKF(rel, t != NULL, "load %s: %s", p, rl_errmsg());
    return t;
}

static bool ids_eq(const struct tok_ids *a, json_t *want)
{
    if (a->n != json_array_size(want)) return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i] != json_integer_value(json_array_get(want, i))) return false;
    return true;
}

static void show_ids(char *buf, size_t n, const int32_t *v, size_t k)
{
    size_t o = 0;
    buf[0] = 0;
    for (size_t i = 0; i < k && o + 16 < n; i++) o += (size_t)snprintf(buf + o, n - o, "%d ", v[i]);
}

static char *nfc(const char *s)
{
    return (char *)utf8proc_NFC((const utf8proc_uint8_t *)s);
}

static void golden(struct tokenizer *t, json_t *cases, const char *name, bool use_nfc)
{
    size_t i;
    json_t *c;
    int bad_enc = 0, bad_dec = 0;
    char first[600] = "";
    json_array_foreach(cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        struct tok_ids ids = {0};
        int rc = tok_encode(t, text, len, TOK_SPECIAL, &ids);
        if (rc || !ids_eq(&ids, json_object_get(c, "ids"))) {
            if (!bad_enc++) {
                char got[400];
                show_ids(got, sizeof got, ids.v, ids.n);
                snprintf(first, sizeof first, "case %zu \"%.60s\": got %s", i, text, got);
            }
        }
        struct rl_buf dec = {0};
        tok_decode(t, ids.v, ids.n, 0, &dec);
        rl_buf_putc(&dec, 0);
        char *want = use_nfc ? nfc(text) : strdup(text);
        if (strcmp(dec.data, want)) bad_dec++;
        free(want);
        rl_buf_free(&dec);
        free(ids.v);
    }
    char n1[64], n2[64];
    snprintf(n1, sizeof n1, "golden_encode_%s", name);
    snprintf(n2, sizeof n2, "golden_roundtrip_%s", name);
    CHECKF(n1, bad_enc == 0, "%d of %zu cases differ; first: %s", bad_enc, json_array_size(cases), first);
    CHECKF(n2, bad_dec == 0, "%d of %zu cases do not decode back", bad_dec, json_array_size(cases));
}

static int enc(struct tokenizer *t, const char *s, unsigned flags, struct tok_ids *ids)
{
    ids->n = 0;
    return tok_encode(t, s, strlen(s), flags, ids);
}

static void test_specials(struct tokenizer *q)
{
    struct tok_ids a = {0};
    int32_t im_end = tok_id(q, "<|im_end|>", 10);
    CHECK("qwen_im_end_id", im_end == 151645);
    enc(q, "a<|im_end|>b", TOK_SPECIAL, &a);
    bool has = false;
    for (size_t i = 0; i < a.n; i++) has |= a.v[i] == im_end;
    CHECK("specials_on_parse", has && a.n == 3);
    enc(q, "a<|im_end|>b", 0, &a);
    has = false;
    for (size_t i = 0; i < a.n; i++) has |= a.v[i] == im_end;
    CHECKF("specials_off_plain_text", !has && a.n > 3, "n=%zu", a.n);
    struct rl_buf d = {0};
    tok_decode(q, a.v, a.n, 0, &d);
    CHECK("specials_off_roundtrip", d.len == 12 && !memcmp(d.data, "a<|im_end|>b", 12));
    rl_buf_free(&d);
    /* <think> is a non-special added token: HF matches it even with specials off */
    enc(q, "x<think>y", 0, &a);
    has = false;
    for (size_t i = 0; i < a.n; i++) has |= a.v[i] == tok_id(q, "<think>", 7);
    CHECK("nonspecial_added_always_matched", has);
    CHECK("is_special", tok_is_special(q, im_end) && !tok_is_special(q, tok_id(q, "<think>", 7)) &&
                            !tok_is_special(q, 100));
    /* decode skipping specials */
    enc(q, "<|im_start|>hi<|im_end|>", TOK_SPECIAL, &a);
    tok_decode(q, a.v, a.n, TOK_SKIP_SPECIAL, &d);
    CHECK("decode_skip_special", d.len == 2 && !memcmp(d.data, "hi", 2));
    rl_buf_free(&d);
    free(a.v);
}

/* Oniguruma's \s is Unicode White_Space; PCRE2's also takes U+180E (ids from HF tokenizers) */
static void test_whitespace_class(struct tokenizer *llama)
{
    static const struct { const char *text; int32_t ids[8]; size_t n; } cases[] = {
        {"x\xE1\xA0\x8E y", {87, 157, 254, 236, 379}, 5},
        {"  \xE1\xA0\x8E\nz", {220, 87189, 254, 236, 198, 89}, 6},
        {"a\xE2\x80\xA8\xE2\x80\xA8 b\xC2\x85" "c", {64, 378, 101, 378, 101, 293, 116360, 66}, 8},
    };
    int bad = 0;
    for (size_t i = 0; i < 3; i++) {
        struct tok_ids ids = {0};
        tok_encode(llama, cases[i].text, strlen(cases[i].text), 0, &ids);
        bad += ids.n != cases[i].n || memcmp(ids.v, cases[i].ids, ids.n * sizeof *ids.v);
        free(ids.v);
    }
    CHECKF("whitespace_class_like_hf", bad == 0, "%d of 3 differ", bad);
}

static void test_invalid(struct tokenizer *t)
{
    struct tok_ids a = {0};
    const char bad[] = "ok\xC3(more";
    int rc = tok_encode(t, bad, sizeof bad - 1, TOK_SPECIAL, &a);
    CHECKF("invalid_utf8_error", rc == -1 && strstr(rl_errmsg(), "byte 2") && a.n == 0, "rc=%d msg=%s", rc,
           rl_errmsg());
    const char *cases[] = {"\xED\xA0\x80", "\xC0\x80", "\xF4\x90\x80\x80", "\x80", "abc\xE2\x82"};
    int ok = 0;
    for (int i = 0; i < 5; i++) ok += tok_encode(t, cases[i], strlen(cases[i]), 0, &a) == -1;
    CHECK("invalid_utf8_kinds", ok == 5);
    CHECK("utf8_valid_nul", tok_encode(t, "a\0b", 3, 0, &a) == 0 && a.n >= 2);
    struct rl_buf d = {0};
    int32_t big = 1 << 30;
    CHECKF("decode_bad_id", tok_decode(t, &big, 1, 0, &d) == -1 && strstr(rl_errmsg(), "token 0"), "%s",
           rl_errmsg());
    rl_buf_free(&d);
    free(a.v);
}

static void test_stream(struct tokenizer *t)
{
    const char *text = "emoji 😀👍🏽 and CJK 日本語 done";
    struct tok_ids a = {0};
    enc(t, text, 0, &a);
    struct tok_stream s;
    tok_stream_init(&s, t, 0);
    struct rl_buf out = {0};
    bool always_valid = true;
    for (size_t i = 0; i < a.n; i++) {
        tok_stream_push(&s, a.v[i], &out);
        always_valid &= tok_utf8_valid(out.data ? out.data : "", out.len) == out.len;
    }
    tok_stream_finish(&s, &out);
    CHECK("stream_valid_prefixes", always_valid);
    CHECK("stream_equals_text", out.len == strlen(text) && !memcmp(out.data, text, out.len));
    /* a cut-off character: held back, then flushed as U+FFFD */
    int32_t b1 = tok_id(t, "\xE6", 1), b2 = tok_id(t, "\x97", 1), b3 = tok_id(t, "\xA5", 1);
    out.len = 0;
    tok_stream_init(&s, t, 0);
    tok_stream_push(&s, b1, &out);
    tok_stream_push(&s, b2, &out);
    CHECK("stream_holds_incomplete", out.len == 0);
    tok_stream_push(&s, b3, &out);
    CHECK("stream_completes_char", out.len == 3 && !memcmp(out.data, "\xE6\x97\xA5", 3));
    tok_stream_push(&s, b1, &out);
    tok_stream_finish(&s, &out);
    CHECK("stream_finish_replacement", out.len == 6 && !memcmp(out.data + 3, "\xEF\xBF\xBD", 3));
    out.len = 0;
    tok_stream_push(&s, b2, &out);   /* a stray continuation byte */
    CHECK("stream_invalid_replacement", out.len == 3 && !memcmp(out.data, "\xEF\xBF\xBD", 3));
    rl_buf_free(&out);
    free(a.v);
}

/* The tokenizer is shared between threads (the cache is the only mutable part). */
static void test_threads(struct tokenizer *t, json_t *cases)
{
    size_t n = json_array_size(cases);
    struct tok_ids *want = calloc(n, sizeof *want);
    for (size_t i = 0; i < n; i++) {
        json_t *txt = json_object_get(json_array_get(cases, i), "text");
        tok_encode(t, json_string_value(txt), json_string_length(txt), TOK_SPECIAL, &want[i]);
    }
    int bad = 0;
#pragma omp parallel for num_threads(4) reduction(+ : bad) schedule(dynamic)
    for (int r = 0; r < 400; r++) {
        size_t i = (size_t)r % n;
        json_t *txt = json_object_get(json_array_get(cases, i), "text");
        struct tok_ids got = {0};
        tok_encode(t, json_string_value(txt), json_string_length(txt), TOK_SPECIAL, &got);
        bad += got.n != want[i].n || (got.n && memcmp(got.v, want[i].v, got.n * sizeof *got.v));
        free(got.v);
    }
    CHECKF("threads_same_ids", bad == 0, "%d encodes differ", bad);
    for (size_t i = 0; i < n; i++) free(want[i].v);
    free(want);
}

int main(void)
{
    const char *f = getenv("RL_FIXTURES");
    snprintf(fixtures, sizeof fixtures, "%s", f ? f : "../shared/fixtures");
    char p[4200];
    struct stat st;
    if (stat(fixture("golden.json", p, sizeof p), &st) != 0) {
        harness_skip("tokenizer_golden", "fixtures absent (set RL_FIXTURES)");
        return harness_exit();
    }
    json_error_t je;
    json_t *g = json_load_file(p, 0, &je);
    CHECKF("golden_json", g != NULL, "%s", je.text);
    if (!g) return harness_exit();
    struct tokenizer *gpt2 = load("gpt2"), *llama = load("llama3/tokenizer.json"), *qwen = load("qwen3");
    if (gpt2) golden(gpt2, json_object_get(g, "gpt2"), "gpt2", false);
    if (llama) golden(llama, json_object_get(g, "llama3"), "llama3", false);
    if (qwen) golden(qwen, json_object_get(g, "qwen3"), "qwen3", true);
    if (qwen) test_specials(qwen);
    if (llama) test_invalid(llama);
    if (llama) test_whitespace_class(llama);
    if (llama) test_stream(llama);
    if (qwen) test_threads(qwen, json_object_get(g, "qwen3"));
    tok_free(gpt2);
    tok_free(llama);
    tok_free(qwen);
    json_decref(g);
    return harness_exit();
}
