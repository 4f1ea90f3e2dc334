/* Encode throughput on a generated mixed corpus (English prose, code, CJK),
 * single thread, in documents of a few KB.
 *   tok_bench [-t TOKENIZER] [-m MB] [--dump FILE]
 * Default tokenizer: $RL_FIXTURES/tokenizers/llama3. --dump writes the corpus
 * (documents separated by the byte 0x1E) so bench/run-tok can time Hugging
 * Face tokenizers on exactly the same text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

static const char *const words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
    "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
    "who", "so", "no", "model", "reward", "policy", "learning", "preference", "human", "feedback", "sampling",
    "gradient", "optimization", "language", "token", "sequence", "training", "evaluation", "distribution",
    "probability", "however", "therefore", "important", "different", "between", "through", "because",
    "government", "information", "development", "understanding", "particularly", "approximately",
    "it's", "don't", "we've", "they'll", "I'm", "Washington", "London", "Tuesday", "September", "OpenBLAS",
};
static const char *const idents[] = {"x", "i", "n", "buf", "len", "count", "result", "self", "data", "tmp",
                                     "node", "value", "key", "index", "items", "config", "tensor", "grad"};

static void put(struct rl_buf *b, const char *s) { rl_buf_put(b, s, strlen(s)); }

static void english(struct rl_buf *b)
{
    int sentences = 3 + (int)rnd(6);
    for (int s = 0; s < sentences; s++) {
        int n = 6 + (int)rnd(18);
        for (int i = 0; i < n; i++) {
            const char *w = words[rnd(sizeof words / sizeof *words)];
            if (i == 0) {
                rl_buf_putc(b, (char)(w[0] >= 'a' && w[0] <= 'z' ? w[0] - 32 : w[0]));
                put(b, w + 1);
            } else {
                put(b, w);
            }
            if (rnd(12) == 0) rl_buf_printf(b, " %u", rnd(100000));
            if (i + 1 < n) put(b, rnd(10) == 0 ? ", " : " ");
        }
        put(b, rnd(8) == 0 ? "? " : ". ");
    }
    put(b, "\n\n");
}

static void code(struct rl_buf *b)
{
    int lines = 4 + (int)rnd(12), depth = 1;
    rl_buf_printf(b, "def %s_%u(%s, %s):\n", idents[rnd(18)], rnd(100), idents[rnd(18)], idents[rnd(18)]);
    for (int l = 0; l < lines; l++) {
        for (int d = 0; d < depth; d++) put(b, "    ");
        switch (rnd(5)) {
        case 0: rl_buf_printf(b, "%s = %s[%u] + %u.%u\n", idents[rnd(18)], idents[rnd(18)], rnd(64), rnd(10), rnd(1000)); break;
        case 1: rl_buf_printf(b, "for %s in range(%u):\n", idents[rnd(18)], rnd(4096)); if (depth < 4) depth++; break;
        case 2: rl_buf_printf(b, "if %s >= %s and not %s:  # check %s\n", idents[rnd(18)], idents[rnd(18)], idents[rnd(18)], words[rnd(40)]); if (depth < 4) depth++; break;
        case 3: rl_buf_printf(b, "%s.append((%s, \"%s\"))\n", idents[rnd(18)], idents[rnd(18)], words[rnd(60)]); break;
        default: rl_buf_printf(b, "return {'%s': %s, '%s': %u}\n", idents[rnd(18)], idents[rnd(18)], idents[rnd(18)], rnd(1 << 20)); if (depth > 1) depth--; break;
        }
    }
    put(b, "\n");
}

static void cjk(struct rl_buf *b)
{
    int n = 40 + (int)rnd(200);
    for (int i = 0; i < n; i++) {
        uint32_t c = rnd(9) == 0 ? (rnd(2) ? 0xFF0C : 0x3002) : rnd(4) == 0 ? 0x3041 + rnd(0x50) : 0x4E00 + rnd(0x1400);
        char u[3] = {(char)(0xE0 | (c >> 12)), (char)(0x80 | ((c >> 6) & 0x3F)), (char)(0x80 | (c & 0x3F))};
        rl_buf_put(b, u, 3);
    }
    put(b, "\n\n");
}

int main(int argc, char **argv)
{
    const char *tpath = NULL, *dump = NULL;
    double mb = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) tpath = argv[++i];
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else { fprintf(stderr, "usage: tok_bench [-t TOKENIZER] [-m MB] [--dump FILE]\n"); return 2; }
    }
    char def[4200];
    if (!tpath) {
        const char *f = getenv("RL_FIXTURES");
        snprintf(def, sizeof def, "%s/tokenizers/llama3", f ? f : "../shared/fixtures");
        tpath = def;
    }
    double t0 = cli_now();
    struct tokenizer *t = tok_load(tpath);
    if (!t) { fprintf(stderr, "tok_bench: %s\n", rl_errmsg()); return 1; }
    double load_s = cli_now() - t0;
    /* documents of ~4 KB, 60% English, 25% code, 15% CJK by count */
    struct rl_buf corpus = {0};
    size_t *starts = NULL, ndocs = 0;
    while (corpus.len < (size_t)(mb * 1e6)) {
        starts = rl_realloc(starts, (ndocs + 2) * sizeof *starts);
        starts[ndocs++] = corpus.len;
        size_t doc0 = corpus.len;
        while (corpus.len - doc0 < 4000) {
            uint32_t k = rnd(100);
            if (k < 60) english(&corpus);
            else if (k < 85) code(&corpus);
            else cjk(&corpus);
        }
    }
    starts[ndocs] = corpus.len;
    if (dump) {
        FILE *f = fopen(dump, "wb");
        if (!f) { perror(dump); return 1; }
        for (size_t d = 0; d < ndocs; d++) {
            fwrite(corpus.data + starts[d], 1, starts[d + 1] - starts[d], f);
            fputc(0x1E, f);
        }
        fclose(f);
    }
    struct tok_ids ids = {0};
    size_t tokens = 0;
    double best = 0;
    for (int pass = 0; pass < 2; pass++) {   /* pass 0: cold pre-token cache; pass 1: warm */
        double s0 = cli_now();
        tokens = 0;
        for (size_t d = 0; d < ndocs; d++) {
            ids.n = 0;
            if (tok_encode(t, corpus.data + starts[d], starts[d + 1] - starts[d], TOK_SPECIAL, &ids)) {
                fprintf(stderr, "tok_bench: %s\n", rl_errmsg());
                return 1;
            }
            tokens += ids.n;
        }
        double s = cli_now() - s0, rate = (double)corpus.len / 1e6 / s;
        printf("rlflow  %-5s %.2f MB, %zu docs, %zu tokens: %.3f s, %.1f MB/s, %.2f M tokens/s\n",
               pass ? "warm" : "cold", (double)corpus.len / 1e6, ndocs, tokens, s, rate, (double)tokens / 1e6 / s);
        if (pass == 0) best = rate;
    }
    printf("rlflow  load %s: %.3f s\n", tpath, load_s);
    printf("RESULT rlflow_mb_s=%.2f tokens=%zu\n", best, tokens);
    free(ids.v);
    free(starts);
    rl_buf_free(&corpus);
    tok_free(t);
    return 0;
}
