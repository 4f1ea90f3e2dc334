/* Build small byte-level tokenizer.json texts for tests and the fuzz target:
 * ids 0..255 are the bytes, then one token per merge in merge order.
 * Merges are "a b" with ASCII tokens (no spaces inside tokens); the other
 * arguments are JSON fragments pasted in as they are ("null" for none). */
#ifndef RLFLOW_TEST_TOKENIZER_MK_H
#define RLFLOW_TEST_TOKENIZER_MK_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static unsigned mk_byte_cp(unsigned b)
{
    unsigned extra = 0;
    for (unsigned x = 0; x < 256; x++) {
        int printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
        if (x == b) return printable ? x : 256 + extra;
        if (!printable) extra++;
    }
    return 0;
}

static void mk_bl_string(struct rl_buf *b, const char *s, size_t n)   /* bytes -> JSON string of byte-level chars */
{
    rl_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) rl_buf_printf(b, "\\u%04x", mk_byte_cp((unsigned char)s[i]));
    rl_buf_putc(b, '"');
}

/* merges: NULL-terminated array of "a b" strings */
static char *mk_tokenizer_json(const char *const *merges, const char *added, const char *normalizer,
                               const char *pretok, const char *post, const char *model_extra)
{
    struct rl_buf b = {0};
    rl_buf_printf(&b, "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":%s,\"pre_tokenizer\":%s,"
                      "\"post_processor\":%s,\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",%s"
                      "\"vocab\":{",
                  added ? added : "[]", normalizer ? normalizer : "null",
                  pretok ? pretok : "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
                  post ? post : "null", model_extra ? model_extra : "");
    for (int i = 0; i < 256; i++) {
        char c = (char)i;
        if (i) rl_buf_putc(&b, ',');
        mk_bl_string(&b, &c, 1);
        rl_buf_printf(&b, ":%d", i);
    }
    int id = 256;
    for (const char *const *m = merges; m && *m; m++) {
        const char *sp = strchr(*m, ' ');
        char tok[256];
        snprintf(tok, sizeof tok, "%.*s%s", (int)(sp - *m), *m, sp + 1);
        rl_buf_putc(&b, ',');
        mk_bl_string(&b, tok, strlen(tok));
        rl_buf_printf(&b, ":%d", id++);
    }
    rl_buf_put(&b, "},\"merges\":[", 12);
    for (const char *const *m = merges; m && *m; m++) {
        const char *sp = strchr(*m, ' ');
        if (m != merges) rl_buf_putc(&b, ',');
        rl_buf_putc(&b, '[');
        mk_bl_string(&b, *m, (size_t)(sp - *m));
        rl_buf_putc(&b, ',');
        mk_bl_string(&b, sp + 1, strlen(sp + 1));
        rl_buf_putc(&b, ']');
    }
    rl_buf_put(&b, "]}}", 4);   /* with the NUL */
    return b.data;
}
#endif
