/* Record streams: msgpack view, reader (zstd / raw / JSON Lines), writer and
 * pass-through, typed access and its messages, limits, and corruption. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zstd.h>

#include "../harness.h"
#include "err.h"
#include "rec.h"

/* A reader over bytes in memory (through a memfd, as if from a pipe or file). */
static struct rec_reader *mem_reader(const void *p, size_t n)
{
    int fd = memfd_create("stream", 0);
    if (write(fd, p, n) != (ssize_t)n) abort();
    lseek(fd, 0, SEEK_SET);
    struct rec_reader *r = rec_reader_fdopen(fd, "mem");
    return r;
}

/* Read every record; returns the count, or -(count+1) on error (message in rl_errmsg). */
static long count_records(const void *p, size_t n)
{
    struct rec_reader *r = mem_reader(p, n);
    struct rec rec;
    long c = 0;
    int k;
    while ((k = rec_next(r, &rec)) == 1) c++;
    rec_reader_close(r);
    return k < 0 ? -(c + 1) : c;
}

/* Build a stream of `nrec` small records with the writer, into a memfd. */
static size_t make_stream(int level, int nrec, uint8_t **out)
{
    int fd = memfd_create("w", 0);
    struct rec_writer *w = rec_writer_open(fd, level, "mem");
    for (int i = 0; i < nrec; i++) {
        char id[32];
        snprintf(id, sizeof id, "r%d", i);
        rec_begin(w, NULL);
        rec_put_cstr(w, "id", id);
        int32_t ids[5] = {i, i + 1, -i, 70000, 5};
        rec_put_i32s(w, "prompt_ids", ids, 5);
        rec_put_f64(w, "reward", i * 0.25);
        rec_end(w);
        if (i % 3 == 2) rec_flush(w);
    }
    rec_writer_close(w);
    size_t n = (size_t)lseek(fd, 0, SEEK_END);
    *out = malloc(n);
    if (pread(fd, *out, n, 0) != (ssize_t)n) abort();
    close(fd);
    return n;
}

static void test_roundtrip_levels(void)
{
    for (int level = 0; level <= 19; level += 19) {
        uint8_t *s;
        size_t n = make_stream(level, 10, &s);
        char name[64];
        snprintf(name, sizeof name, "writer/reader round trip at level %d", level);
        CHECKF(name, count_records(s, n) == 10, "got %ld records (%s)", count_records(s, n), rl_errmsg());
        if (level) {
            CHECK("zstd magic written", n >= 4 && s[0] == 0x28 && s[1] == 0xb5 && s[2] == 0x2f && s[3] == 0xfd);
            /* every flush ends a block but not the frame: several flushes, one frame */
            CHECK("one zstd frame", ZSTD_findFrameCompressedSize(s, n) == n);
        }
        free(s);
    }
}

static void test_multiframe(void)
{
    uint8_t *a, *b;
    size_t na = make_stream(3, 4, &a), nb = make_stream(3, 5, &b);
    uint8_t *ab = malloc(na + nb);
    memcpy(ab, a, na);
    memcpy(ab + na, b, nb);
    CHECK("two zstd frames in a row read as one stream", count_records(ab, na + nb) == 9);
    free(a); free(b); free(ab);
}

static void test_typed_access(void)
{
    const char *jl = "{\"id\":\"x\",\"rewards\":\"oops\",\"ids\":[1,2,3],\"big\":[1,5000000000],"
                     "\"f\":[1,2.5,-3],\"s\":[\"a\",\"b\"],\"b\":true,\"i\":-7,\"m\":{\"k\":1}}\n";
    struct rec_reader *r = mem_reader(jl, strlen(jl));
    struct rec rec;
    CHECK("JSON Lines record read", rec_next(r, &rec) == 1);
    struct rec_str s;
    CHECK("string field", rec_get_str(&rec, "id", &s) == 1 && s.n == 1 && s.s[0] == 'x');
    CHECK("absent field is 0", rec_get_str(&rec, "nope", &s) == 0);
    double *f = NULL; size_t nf = 0, capf = 0;
    CHECK("wrong type is -1", rec_get_f64s(&rec, "rewards", &f, &nf, &capf) == -1);
    CHECKF("wrong type message names record, line, field and types",
           strcmp(rl_errmsg(), "mem: record 1 (line 1): field \"rewards\" is a string, expected an array of numbers") == 0,
           "got '%s'", rl_errmsg());
    CHECK("numbers array mixes ints and floats", rec_get_f64s(&rec, "f", &f, &nf, &capf) == 1 && nf == 3 && f[1] == 2.5 && f[2] == -3);
    int32_t *ids = NULL; size_t ni = 0, capi = 0;
    CHECK("int32 array", rec_get_i32s(&rec, "ids", &ids, &ni, &capi) == 1 && ni == 3 && ids[2] == 3);
    CHECK("int32 overflow rejected", rec_get_i32s(&rec, "big", &ids, &ni, &capi) == -1 && strstr(rl_errmsg(), "\"big\"[1] is out of range"));
    struct rec_str *ss = NULL; size_t ns = 0, caps = 0;
    CHECK("string array", rec_get_strs(&rec, "s", &ss, &ns, &caps) == 1 && ns == 2 && ss[1].s[0] == 'b');
    bool b; int64_t i; struct mpv m, v;
    CHECK("bool", rec_get_bool(&rec, "b", &b) == 1 && b);
    CHECK("negative int", rec_get_i64(&rec, "i", &i) == 1 && i == -7);
    CHECK("nested map", rec_get_map(&rec, "m", &m) == 1 && mpv_map_get(&m, "k", &v) && v.type == MPV_UINT && v.v.u == 1);
    CHECK("map expected but array", rec_get_map(&rec, "ids", &m) == -1 && strstr(rl_errmsg(), "is an array, expected a map"));
    free(f); free(ids); free(ss);
    rec_reader_close(r);
}

/* Pass-through keeps other fields byte for byte, even non-canonical encodings. */
static void test_passthrough(void)
{
    /* {"a": uint32 5 (non-canonical), "b": "x", "c": 1} */
    const uint8_t in[] = {0x83, 0xa1, 'a', 0xce, 0, 0, 0, 5, 0xa1, 'b', 0xa1, 'x', 0xa1, 'c', 0x01};
    struct rec_reader *r = mem_reader(in, sizeof in);
    struct rec rec;
    CHECK("raw msgpack record read", rec_next(r, &rec) == 1);
    int fd = memfd_create("o", 0);
    struct rec_writer *w = rec_writer_open(fd, 0, "mem");
    rec_begin(w, &rec);
    rec_put_i64(w, "c", 2);          /* replace */
    rec_put_bool(w, "d", true);      /* add */
    rec_drop(w, "b");                /* drop */
    rec_end(w);
    rec_writer_close(w);
    uint8_t out[64];
    ssize_t n = pread(fd, out, sizeof out, 0);
    const uint8_t want[] = {0x83, 0xa1, 'a', 0xce, 0, 0, 0, 5, 0xa1, 'c', 0x02, 0xa1, 'd', 0xc3};
    CHECKF("pass-through is byte for byte; replaced and new fields follow", n == sizeof want && !memcmp(out, want, sizeof want),
           "got %zd bytes", n);
    close(fd);
    rec_reader_close(r);
}

static void test_not_a_map(void)
{
    const uint8_t in[] = {0x81, 0xa1, 'a', 0x01, 0x92, 0x01, 0x02};
    CHECK("second value not a map: one good record then error", count_records(in, sizeof in) == -2);
    CHECKF("not-a-map message has record and byte", strstr(rl_errmsg(), "record 2 (byte 4): a record must be a map, found an array") != NULL,
           "got '%s'", rl_errmsg());
    const char *jl = "{\"a\":1}\n\n[1]\n";
    CHECK("JSON line that is not an object", count_records(jl, strlen(jl)) == -2 && strstr(rl_errmsg(), "(line 3)"));
    const char *bad = "{\"a\":1}\n{\"a\":tru}\n";
    CHECKF("invalid JSON names line and column", count_records(bad, strlen(bad)) == -2 &&
           strstr(rl_errmsg(), "record 2 (line 2): invalid JSON: column 6"), "got '%s'", rl_errmsg());
    const char *badutf = "{\"a\":\"\xc3\x28\"}\n";
    CHECKF("invalid UTF-8 in JSON", count_records(badutf, strlen(badutf)) == -1 && strstr(rl_errmsg(), "invalid UTF-8"), "got '%s'", rl_errmsg());
    CHECK("empty input is zero records", count_records("", 0) == 0);
    CHECK("blank JSON input is zero records", count_records("\n \n", 3) == 0);
}

static void test_limits(void)
{
    /* nesting: {"a": [[[...]]]} at depth 64 is fine, 65 is not */
    for (int depth = 63; depth <= 64; depth++) {
        uint8_t buf[256];
        size_t n = 0;
        buf[n++] = 0x81; buf[n++] = 0xa1; buf[n++] = 'a';
        for (int i = 0; i < depth; i++) buf[n++] = 0x91;
        buf[n++] = 0x01;
        long c = count_records(buf, n);
        if (depth == 63)
            CHECKF("nesting of 64 levels accepted", c == 1, "%s", rl_errmsg());
        else
            CHECKF("nesting of 65 levels rejected", c == -1 && strstr(rl_errmsg(), "nesting deeper than 64"), "%s", rl_errmsg());
    }
    /* a string that declares 4 GiB but has 3 bytes */
    const uint8_t huge[] = {0x81, 0xa1, 'a', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x', 'y', 'z'};
    CHECKF("absurd declared length is an error, not a wait", count_records(huge, sizeof huge) == -1 &&
           strstr(rl_errmsg(), "exceeds the record size limit") && strstr(rl_errmsg(), "(at byte 3)"), "%s", rl_errmsg());
    const uint8_t bigarr[] = {0x81, 0xa1, 'a', 0xdd, 0x7f, 0xff, 0xff, 0xff, 1};
    CHECK("absurd array count rejected", count_records(bigarr, sizeof bigarr) == -1);
    /* settable record limit */
    uint8_t *s;
    size_t n = make_stream(0, 3, &s);
    struct rec_reader *r = mem_reader(s, n);
    rec_reader_set_max_record(r, 16);
    struct rec rec;
    CHECK("record over a small limit rejected", rec_next(r, &rec) == -1 && strstr(rl_errmsg(), "limit"));
    rec_reader_close(r);
    free(s);
    const uint8_t c1[] = {0x81, 0xa1, 'a', 0xc1};
    CHECK("reserved type byte 0xc1 rejected", count_records(c1, sizeof c1) == -1 && strstr(rl_errmsg(), "0xc1"));
}

/* Truncating a stream anywhere gives the records before the cut and a clean
 * error (or a clean end exactly at a record boundary); never a crash. */
static void test_truncation(void)
{
    for (int level = 0; level <= 3; level += 3) {
        uint8_t *s;
        size_t n = make_stream(level, 6, &s);
        int bad = 0;
        for (size_t cut = 0; cut < n; cut++) {
            long c = count_records(s, cut);
            if (level == 0) {
                /* raw: ends on a record boundary are clean; elsewhere an error */
                if (c < 0 && !strstr(rl_errmsg(), "truncated")) bad++;
            } else if (cut > 0 && c >= 0) {
                bad++;          /* a cut zstd frame is always an error */
            }
        }
        char name[80];
        snprintf(name, sizeof name, "truncation at every byte (level %d, %zu bytes)", level, n);
        CHECKF(name, bad == 0, "%d cuts misreported (%s)", bad, rl_errmsg());
        free(s);
    }
}

static void test_corruption(void)
{
    uint8_t *s;
    size_t n = make_stream(3, 20, &s);
    unsigned seed = 12345;
    int errors = 0, ok = 0;
    for (int t = 0; t < 2000; t++) {
        uint8_t *c = malloc(n);
        memcpy(c, s, n);
        for (int f = 0; f < 1 + t % 3; f++) {
            seed = seed * 1103515245 + 12345;
            c[(seed >> 8) % n] ^= (uint8_t)(1 + (seed >> 20) % 255);
        }
        long k = count_records(c, n);
        if (k < 0) errors++; else ok++;
        free(c);
    }
    CHECKF("2000 byte-flipped streams never crash; most are errors", errors > 1000, "%d errors, %d read", errors, ok);
    free(s);
}

static void test_zstd_corrupt_message(void)
{
    uint8_t junk[] = {0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECKF("bad zstd frame header is an error", count_records(junk, sizeof junk) == -1 && strstr(rl_errmsg(), "zstd"), "%s", rl_errmsg());
    uint8_t *s;
    size_t n = make_stream(3, 50, &s);
    memset(s + 8, 0xee, n - 16);         /* garble the blocks, keep header and tail */
    CHECKF("garbled zstd blocks: corrupt zstd data", count_records(s, n) < 0 && strstr(rl_errmsg(), "corrupt zstd data"), "%s", rl_errmsg());
    free(s);
}

int main(void)
{
    test_roundtrip_levels();
    test_multiframe();
    test_typed_access();
    test_passthrough();
    test_not_a_map();
    test_limits();
    test_truncation();
    test_corruption();
    test_zstd_corrupt_message();
    return harness_exit();
}
