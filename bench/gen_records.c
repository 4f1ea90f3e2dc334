/* Writes N generation-like records (the shape rl-gen emits: prompt text and
 * ids, n responses with their ids, finish reasons, log-probs, rewards) as a
 * record stream on stdout, for the rl-cat benchmark. Deterministic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "rec.h"

static uint64_t state = 0x9E3779B97F4A7C15ull;
static uint64_t next(void)
{
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return state;
}

static const char *words[] = {"the", "model", "reward", "policy", "sample", "token", "gradient", "of",
                              "preference", "a", "résumé", "naïve", "日本", "😀", "and", "is", "to", "\n"};

static void text(struct rl_buf *b, size_t len)
{
    b->len = 0;
    while (b->len < len) {
        const char *w = words[next() % (sizeof words / sizeof *words)];
        rl_buf_put(b, w, strlen(w));
        rl_buf_putc(b, ' ');
    }
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    long n = argc > 1 ? atol(argv[1]) : 1000;
    int level = argc > 2 ? atoi(argv[2]) : 3;
    struct rec_writer *w = rec_writer_open(STDOUT_FILENO, level, "stdout");
    struct rl_buf t = {0};
    int32_t ids[512];
    double f[8];
    for (long i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "prompt-%ld", i);
        rec_begin(w, NULL);
        rec_put_cstr(w, "id", id);
        text(&t, 400 + next() % 400);
        rec_put_str(w, "prompt", t.data, t.len);
        for (int k = 0; k < 150; k++) ids[k] = (int32_t)(next() % 128256);
        rec_put_i32s(w, "prompt_ids", ids, 150);
        msgpack_packer *pk = rec_put(w, "responses");
        msgpack_pack_array(pk, 8);
        for (int j = 0; j < 8; j++) {
            text(&t, 600 + next() % 800);
            msgpack_pack_str(pk, t.len);
            msgpack_pack_str_body(pk, t.data, t.len);
        }
        pk = rec_put(w, "response_ids");
        msgpack_pack_array(pk, 8);
        for (int j = 0; j < 8; j++) {
            int len = 100 + (int)(next() % 300);
            msgpack_pack_array(pk, (size_t)len);
            for (int k = 0; k < len; k++) msgpack_pack_int32(pk, (int32_t)(next() % 128256));
        }
        pk = rec_put(w, "finish");
        msgpack_pack_array(pk, 8);
        for (int j = 0; j < 8; j++) {
            const char *s = next() % 4 ? "stop" : "length";
            msgpack_pack_str(pk, strlen(s));
            msgpack_pack_str_body(pk, s, strlen(s));
        }
        for (int j = 0; j < 8; j++) f[j] = -(double)(next() % 100000) / 137.0;
        rec_put_f64s(w, "logps", f, 8);
        for (int j = 0; j < 8; j++) f[j] = (double)(next() % 100000) / 9973.0 - 5;
        rec_put_f64s(w, "rewards", f, 8);
        rec_put_i64(w, "seed", 1);
        if (rec_end(w)) rl_die_err();
    }
    if (rec_writer_close(w)) rl_die_err();
    rl_buf_free(&t);
    return 0;
}
