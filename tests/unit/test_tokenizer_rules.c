/* Tokenizer rules on small hand-made tokenizer.json files (no fixtures
 * needed): merge order, split behaviors, Digits, normalizers, added-token
 * flags, post-processor, and load errors that name what is wrong. */
#include "../harness.h"
#include "test_tokenizer_mk.h"
#include "tokenizer.h"

#define BL_NOREGEX "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}"

static struct tokenizer *mk(const char *name, const char *const *merges, const char *added, const char *norm,
                            const char *pretok, const char *post)
{
    char *j = mk_tokenizer_json(merges, added, norm, pretok, post, NULL);
    struct tokenizer *t = tok_load_json(j, strlen(j), name);
    free(j);
    CHECKF(name, t != NULL, "load: %s", rl_errmsg());
    return t;
}

/* encode s and compare with the tokens named (as byte strings) in want, space separated */
static void expect(const char *name, struct tokenizer *t, const char *s, unsigned flags, const char *want)
{
    if (!t) return;
    struct tok_ids ids = {0};
    int rc = tok_encode(t, s, strlen(s), flags, &ids);
    struct rl_buf got = {0};
    for (size_t i = 0; i < ids.n; i++) {
        size_t n;
        const char *b = tok_bytes(t, ids.v[i], &n);
        if (i) rl_buf_putc(&got, '|');
        rl_buf_put(&got, b, n);
    }
    rl_buf_putc(&got, 0);
    CHECKF(name, rc == 0 && !strcmp(got.data ? got.data : "", want), "got [%s] want [%s]", got.data ? got.data : "",
           want);
    rl_buf_free(&got);
    free(ids.v);
}

static void test_merges(void)
{
    static const char *const m1[] = {"a b", "ab c", "b c", NULL};
    struct tokenizer *t = mk("merges", m1, NULL, NULL, BL_NOREGEX, NULL);
    expect("merge_chain", t, "abc", 0, "abc");
    expect("merge_repeat", t, "ababab", 0, "ab|ab|ab");
    tok_free(t);
    static const char *const m2[] = {"b c", "a b", NULL};   /* rank decides: bc first */
    t = mk("merges_rank", m2, NULL, NULL, BL_NOREGEX, NULL);
    expect("merge_rank_order", t, "abc", 0, "a|bc");
    tok_free(t);
    static const char *const m3[] = {"a a", NULL};           /* ties: leftmost first */
    t = mk("merges_tie", m3, NULL, NULL, BL_NOREGEX, NULL);
    expect("merge_tie_leftmost", t, "aaa", 0, "aa|a");
    tok_free(t);
    /* a long word: heap path, all pairs */
    static const char *const m4[] = {"x x", "xx xx", "xxxx xxxx", NULL};
    t = mk("merges_long", m4, NULL, NULL, BL_NOREGEX, NULL);
    char buf[4100];
    memset(buf, 'x', 4099);
    buf[4099] = 0;
    struct tok_ids ids = {0};
    tok_encode(t, buf, 4099, 0, &ids);
    CHECKF("merge_long_word", ids.n == 4099 / 8 + 2, "n=%zu", ids.n);   /* 512 x8, then xx, x */
    free(ids.v);
    tok_free(t);
}

static void test_splits(void)
{
    static const char *const m[] = {"a b", "a 1", "1 2", NULL};
    const char *pt_removed = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
                             "\"behavior\":\"Removed\",\"invert\":false}," BL_NOREGEX "]}";
    struct tokenizer *t = mk("split_removed", m, NULL, NULL, pt_removed, NULL);
    expect("split_removed", t, "ab-ab--a", 0, "ab|ab|a");
    tok_free(t);
    const char *pt_prev = "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"b\"},\"behavior\":\"MergedWithPrevious\"}";
    t = mk("split_prev", m, NULL, NULL, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                                        "\"pattern\":{\"Regex\":\"b\"},\"behavior\":\"MergedWithPrevious\"},"
                                        BL_NOREGEX "]}", NULL);
    (void)pt_prev;
    expect("split_merged_prev", t, "abab", 0, "ab|ab");
    tok_free(t);
    t = mk("split_next", m, NULL, NULL, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                                        "\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"MergedWithNext\"},"
                                        BL_NOREGEX "]}", NULL);
    expect("split_merged_next", t, "abab", 0, "ab|ab");
    tok_free(t);
    t = mk("split_invert", m, NULL, NULL, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                                          "\"pattern\":{\"Regex\":\"b+\"},\"behavior\":\"Removed\",\"invert\":true},"
                                          BL_NOREGEX "]}", NULL);
    expect("split_invert_removed", t, "abba", 0, "b|b");
    tok_free(t);
    t = mk("split_contig", m, NULL, NULL, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                                          "\"pattern\":{\"Regex\":\"[ab]\"},\"behavior\":\"Contiguous\"},"
                                          BL_NOREGEX "]}", NULL);
    expect("split_contiguous", t, "ab1ab", 0, "ab|1|ab");
    tok_free(t);
    /* empty matches split (HF: "x*" on "abxxc" gives a, b, xx, c) */
    t = mk("split_empty", m, NULL, NULL, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                                         "\"pattern\":{\"Regex\":\"x*\"},\"behavior\":\"Isolated\"},"
                                         BL_NOREGEX "]}", NULL);
    expect("split_empty_matches", t, "abxxab", 0, "a|b|x|x|a|b");
    tok_free(t);
    /* Digits: without it "a1" merges; with it the digit is its own piece */
    t = mk("no_digits", m, NULL, NULL, BL_NOREGEX, NULL);
    expect("digits_absent_merges", t, "a12", 0, "a1|2");
    tok_free(t);
    t = mk("digits", m, NULL, NULL, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
                                    "\"individual_digits\":false}," BL_NOREGEX "]}", NULL);
    expect("digits_contiguous", t, "a12", 0, "a|12");
    tok_free(t);
    t = mk("digits_ind", m, NULL, NULL, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
                                        "\"individual_digits\":true}," BL_NOREGEX "]}", NULL);
    expect("digits_individual", t, "a12", 0, "a|1|2");
    tok_free(t);
    /* ByteLevel with its own GPT-2 regex and add_prefix_space */
    t = mk("bl_prefix", m, NULL, NULL, "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}", NULL);
    expect("bytelevel_prefix_space", t, "ab", 0, " |ab");
    tok_free(t);
}

static void test_added_and_norm(void)
{
    static const char *const m[] = {"a b", "h i", NULL};
    const char *added =
        "[{\"id\":300,\"content\":\"<m>\",\"special\":true,\"lstrip\":true,\"rstrip\":true,\"single_word\":false,\"normalized\":false},"
        "{\"id\":301,\"content\":\"zz\",\"special\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":true,\"normalized\":false},"
        "{\"id\":302,\"content\":\"HI\",\"special\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":false,\"normalized\":true},"
        "{\"id\":303,\"content\":\"<m><m>\",\"special\":true,\"normalized\":false}]";
    const char *post = "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<m>\",\"type_id\":0}},"
                       "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<m>\":{\"id\":\"<m>\","
                       "\"ids\":[300],\"tokens\":[\"<m>\"]}}}";
    struct tokenizer *t = mk("added", m, added, "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Lowercase\"}]}",
                             BL_NOREGEX, post);
    if (!t) return;
    expect("lstrip_rstrip", t, "ab  <m>  ab", TOK_SPECIAL, "ab|<m>|ab");
    expect("specials_off_text", t, "ab <m>", 0, "ab| |<|m|>");
    expect("longest_match", t, "<m><m>", TOK_SPECIAL, "<m><m>");
    expect("single_word_alone", t, "a zz b", TOK_SPECIAL, "a| |zz| |b");
    expect("single_word_inside", t, "azzb", TOK_SPECIAL, "a|z|z|b");
    /* a normalized added token is matched by its normalized content (HF) */
    expect("normalized_added_lowercase", t, "HI AB", TOK_SPECIAL, "HI| |ab");
    expect("normalized_added_content_normalized", t, "hi", TOK_SPECIAL, "HI");
    expect("post_processor_bos", t, "ab", TOK_SPECIAL | TOK_ADD_SPECIAL, "<m>|ab");
    CHECK("n_ids_covers_added", tok_n_ids(t) == 304);
    tok_free(t);
    /* decode writes added tokens as HF's ByteLevel decoder does */
    t = mk("added_decode", m,
           "[{\"id\":300,\"content\":\"\\u0120x\",\"special\":true,\"normalized\":false},"
           "{\"id\":301,\"content\":\"\\u00e9 \\u00e9\",\"special\":false,\"normalized\":false}]",
           NULL, BL_NOREGEX, NULL);
    if (t) {
        int32_t ids[] = {300, 301};
        struct rl_buf d = {0};
        tok_decode(t, ids, 2, 0, &d);
        CHECKF("added_decode_bytelevel", d.len == 7 && !memcmp(d.data, " x\xC3\xA9 \xC3\xA9", 7), "len %zu", d.len);
        d.len = 0;
        tok_decode(t, ids, 2, TOK_SKIP_SPECIAL, &d);
        CHECK("added_decode_skip", d.len == 5);
        rl_buf_free(&d);
        struct tok_ids e = {0};
        tok_encode(t, "\xC4\xA0x", 3, TOK_SPECIAL, &e);   /* the text "Ġx" is the token */
        CHECK("added_match_content", e.n == 1 && e.v[0] == 300);
        free(e.v);
    }
    tok_free(t);
    t = mk("nfkc", m, NULL, "{\"type\":\"NFKC\"}", BL_NOREGEX, NULL);
    expect("nfkc_ligature", t, "\xEF\xAC\x81", 0, "f|i");   /* U+FB01 -> "fi" */
    tok_free(t);
}

static void load_fails(const char *name, const char *json, const char *pat)
{
    struct tokenizer *t = tok_load_json(json, strlen(json), "x.json");
    CHECKF(name, !t && strstr(rl_errmsg(), pat), "msg: %s", t ? "(loaded)" : rl_errmsg());
    tok_free(t);
}

static void test_errors(void)
{
    load_fails("err_json", "{\"model\": [", "x.json: line 1");
    load_fails("err_no_model", "{}", "model");
    load_fails("err_unigram", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "Unigram");
    load_fails("err_vocab_id", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "out of range");
    load_fails("err_merge_missing",
               "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}",
               "merge 0");
    load_fails("err_not_bytelevel", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", "ByteLevel");
    load_fails("err_regex",
               "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},"
               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "regex");
    load_fails("err_normalizer",
               "{\"normalizer\":{\"type\":\"Precompiled\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "Precompiled");
    load_fails("err_added", "{\"added_tokens\":[{\"id\":\"x\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "added_tokens[0]");
    struct tokenizer *t = tok_load("/nonexistent/tokenizer.json");
    CHECKF("err_missing_file", !t && strstr(rl_errmsg(), "/nonexistent"), "%s", rl_errmsg());
}

int main(void)
{
    test_merges();
    test_splits();
    test_added_and_norm();
    test_errors();
    return harness_exit();
}
