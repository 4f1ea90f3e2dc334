/* fuzz-lib: lib/err.c lib/fsutil.c lib/tok_load.c lib/tokenizer.c */
/* Fuzz the tokenizer on arbitrary bytes. The first byte picks the target:
 *   even: the rest is a tokenizer.json (the loader must fail cleanly or load,
 *         and a loaded tokenizer must encode a sample text);
 *   odd:  the rest is text for a small built-in tokenizer with every pipeline
 *         step (NFC, Split, Digits, ByteLevel, added tokens with all flags,
 *         post-processor). Valid UTF-8 must encode, and with plain added
 *         tokens decode must give back NFC(text) exactly; invalid UTF-8 must
 *         be refused with an offset. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../unit/test_tokenizer_mk.h"
#include "tokenizer.h"

static struct tokenizer *plain, *flagged;

static struct tokenizer *build(const char *added)
{
    static const char *const merges[] = {"a b", "ab c", "1 2", "t h", "th e", "e r", "i n", "in g", NULL};
    const char *pt =
        "{\"type\":\"Sequence\",\"pretokenizers\":["
        "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
        "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
        "\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"Digits\",\"individual_digits\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}";
    const char *post = "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},"
                       "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":{\"ids\":[300]}}}";
    char *j = mk_tokenizer_json(merges, added, "{\"type\":\"NFC\"}", pt, post, NULL);
    struct tokenizer *t = tok_load_json(j, strlen(j), "builtin");
    free(j);
    if (!t) abort();
    return t;
}

static void init(void)
{
    plain = build("[{\"id\":300,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
                  "{\"id\":301,\"content\":\"<|end|>\",\"special\":true,\"normalized\":false},"
                  /* not only byte-level characters (the space): decode writes it as is */
                  "{\"id\":302,\"content\":\"é é\",\"special\":false,\"normalized\":true}]");
    flagged = build("[{\"id\":300,\"content\":\"<s>\",\"special\":true,\"lstrip\":true,\"rstrip\":true},"
                    "{\"id\":301,\"content\":\"ab\",\"special\":false,\"single_word\":true,\"normalized\":false},"
                    "{\"id\":302,\"content\":\" x\",\"special\":true,\"lstrip\":true,\"normalized\":true}]");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!plain) init();
    if (size == 0) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct tok_ids ids = {0};
    if (data[0] % 2 == 0) {
        struct tokenizer *t = tok_load_json(s, n, "fuzz.json");
        if (t) {
            tok_encode(t, "Hello 123 wörld <s>", 20, TOK_SPECIAL | TOK_ADD_SPECIAL, &ids);
            struct rl_buf b = {0};
            tok_decode(t, ids.v, ids.n, 0, &b);
            rl_buf_free(&b);
            tok_free(t);
        }
        free(ids.v);
        return 0;
    }
    bool valid = tok_utf8_valid(s, n) == n;
    int rc = tok_encode(plain, s, n, data[0] & 2 ? TOK_SPECIAL : 0, &ids);
    if ((rc == 0) != valid) abort();
    if (valid) {
        struct rl_buf b = {0};
        if (tok_decode(plain, ids.v, ids.n, 0, &b)) abort();
        utf8proc_uint8_t *want = NULL;
        utf8proc_ssize_t wn = n ? utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &want,
                                               UTF8PROC_STABLE | UTF8PROC_COMPOSE) : 0;
        /* NFC is applied to the text between added tokens, so compare only without specials matched */
        if (wn >= 0 && !(data[0] & 2) && ((size_t)wn != b.len || memcmp(want, b.data, b.len))) {
            abort();
        }
        free(want);
        /* streaming decode gives valid UTF-8 and, for valid input, the same bytes */
        struct tok_stream st;
        tok_stream_init(&st, plain, 0);
        struct rl_buf o = {0};
        for (size_t i = 0; i < ids.n; i++) tok_stream_push(&st, ids.v[i], &o);
        tok_stream_finish(&st, &o);
        if (o.len != b.len || (o.len && memcmp(o.data, b.data, o.len))) abort();
        rl_buf_free(&o);
        rl_buf_free(&b);
        ids.n = 0;
        tok_encode(flagged, s, n, TOK_SPECIAL | TOK_ADD_SPECIAL, &ids);
    }
    free(ids.v);
    return 0;
}
