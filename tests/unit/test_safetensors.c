/* safetensors reader/writer: conversions, round trips, shards, and every kind
 * of malformed file (each must fail cleanly with a message naming the file and
 * the tensor).
 *
 * Helper modes for tests/py/test_safetensors_interop.py:
 *   test_safetensors dump PATH     print "name dtype [shape] v0 v1 ..." per tensor (%.9g)
 *   test_safetensors write PATH    write the interop tensor set (see interop_set)
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../harness.h"
#include "err.h"
#include "fsutil.h"
#include "safetensors.h"

static char tmpdir[256];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* ---- conversions ---- */


static void test_conversions(void)
{
    /* Every non-NaN 16-bit pattern survives 16 -> 32 -> 16 exactly. */
    int bad_bf = 0, bad_h = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float b = st_bf16_to_f32((uint16_t)h), f = st_f16_to_f32((uint16_t)h);
        if (b == b && st_f32_to_bf16(b) != h) bad_bf++;
        if (f == f && st_f32_to_f16(f) != h) bad_h++;
    }
    CHECKF("bf16 round trip all patterns", bad_bf == 0, "%d patterns changed", bad_bf);
    CHECKF("f16 round trip all patterns", bad_h == 0, "%d patterns changed", bad_h);

    CHECK("bf16 1.0", st_f32_to_bf16(1.0f) == 0x3f80);
    CHECK("bf16 tie to even down", st_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);
    CHECK("bf16 tie to even up", st_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82);
    CHECK("bf16 above tie rounds up", st_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);
    CHECK("bf16 inf", st_f32_to_bf16(INFINITY) == 0x7f80 && st_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK("bf16 nan stays nan", isnan(st_bf16_to_f32(st_f32_to_bf16(NAN))));
    CHECK("bf16 max finite rounds to inf", st_f32_to_bf16(3.4028235e38f) == 0x7f80);
    CHECK("bf16 -0", st_f32_to_bf16(-0.0f) == 0x8000);

    CHECK("f16 1.0", st_f32_to_f16(1.0f) == 0x3c00);
    CHECK("f16 -2.0", st_f32_to_f16(-2.0f) == 0xc000);
    CHECK("f16 1/3", st_f32_to_f16(1.0f / 3) == 0x3555);
    CHECK("f16 max", st_f32_to_f16(65504.0f) == 0x7bff);
    CHECK("f16 65519 rounds to max", st_f32_to_f16(65519.0f) == 0x7bff);
    CHECK("f16 65520 rounds to inf", st_f32_to_f16(65520.0f) == 0x7c00);
    CHECK("f16 huge", st_f32_to_f16(1e10f) == 0x7c00 && st_f32_to_f16(-1e10f) == 0xfc00);
    CHECK("f16 smallest subnormal", st_f32_to_f16(0x1p-24f) == 0x0001);
    CHECK("f16 half smallest ties to zero", st_f32_to_f16(0x1p-25f) == 0x0000);
    CHECK("f16 above half smallest", st_f32_to_f16(0x1.8p-25f) == 0x0001);
    CHECK("f16 1.5 * smallest ties to even", st_f32_to_f16(0x1.8p-24f) == 0x0002);
    CHECK("f16 subnormal rounds up to normal", st_f32_to_f16(0x1.ffcp-15f) == 0x0400);
    CHECK("f16 smallest normal", st_f32_to_f16(0x1p-14f) == 0x0400);
    CHECK("f16 tie to even", st_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 &&
                             st_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);
    CHECK("f16 nan", isnan(st_f16_to_f32(st_f32_to_f16(NAN))));
    CHECK("f16 subnormal decode", st_f16_to_f32(0x0001) == 0x1p-24f && st_f16_to_f32(0x8200) == -0x1p-15f);
    CHECK("f16 inf decode", isinf(st_f16_to_f32(0x7c00)) && st_f16_to_f32(0xfc00) < 0);

    enum st_dtype t;
    CHECK("dtype parse aliases", st_dtype_parse("bf16", &t) == 0 && t == ST_BF16 &&
                                     st_dtype_parse("float16", &t) == 0 && t == ST_F16 &&
                                     st_dtype_parse("F32", &t) == 0 && t == ST_F32);
    CHECK("dtype parse unknown", st_dtype_parse("I64", &t) < 0);
}

/* ---- round trip ---- */

static float val(int i) { return (float)((i * 37) % 101 - 50) / 7.0f; }

static void test_roundtrip(void)
{
    float a[24], s = 3.25f;
    for (int i = 0; i < 24; i++)
        a[i] = val(i);
    struct st_out_tensor out[] = {
        {"zeta.f32", ST_F32, 3, {2, 3, 4}, a},
        {"alpha.bf16", ST_BF16, 2, {4, 6}, a},
        {"mid.f16", ST_F16, 1, {24}, a},
        {"scalar", ST_F32, 0, {0}, &s},
        {"empty", ST_BF16, 2, {0, 5}, NULL},
    };
    char path[512];
    path_in(path, sizeof path, "rt.safetensors");
    CHECKF("write", st_write(path, out, 5) == 0, "%s", rl_errmsg());

    /* Header: length a multiple of 8, __metadata__ first with format pt. */
    size_t len;
    char *raw = fs_read_file(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | (unsigned char)raw[i];
    CHECKF("header padded to 8", hlen % 8 == 0 && hlen + 8 <= len, "hlen %llu", (unsigned long long)hlen);
    CHECK("header pads with spaces", raw[8 + hlen - 1] == '}' || raw[8 + hlen - 1] == ' ');
    CHECK("metadata first", strncmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"}", 31) == 0);
    CHECK("wide dtypes first, then name order", strstr(raw + 8, "\"scalar\"") < strstr(raw + 8, "\"zeta.f32\"") &&
                                                    strstr(raw + 8, "\"zeta.f32\"") < strstr(raw + 8, "\"alpha.bf16\"") &&
                                                    strstr(raw + 8, "\"alpha.bf16\"") < strstr(raw + 8, "\"empty\"") &&
                                                    strstr(raw + 8, "\"empty\"") < strstr(raw + 8, "\"mid.f16\""));
    CHECKF("file size", len == 8 + hlen + 24 * 4 + 24 * 2 + 24 * 2 + 4, "len %zu", len);
    free(raw);

    struct st_file *f = st_open(path);
    CHECKF("open", f != NULL, "%s", rl_errmsg());
    if (!f)
        return;
    CHECK("count", st_count(f) == 5);
    CHECK("path", strcmp(st_path(f), path) == 0);
    CHECK("sorted", strcmp(st_at(f, 0)->name, "alpha.bf16") == 0 && strcmp(st_at(f, 4)->name, "zeta.f32") == 0);
    CHECK("st_at out of range", st_at(f, 5) == NULL);
    const struct st_tensor *z = st_find(f, "zeta.f32"), *b = st_find(f, "alpha.bf16"),
                           *h = st_find(f, "mid.f16"), *sc = st_find(f, "scalar"), *e = st_find(f, "empty");
    CHECK("find all", z && b && h && sc && e && !st_find(f, "nope"));
    if (!(z && b && h && sc && e))
        return;
    CHECK("shape f32", z->ndim == 3 && z->shape[0] == 2 && z->shape[2] == 4 && z->numel == 24 && z->dtype == ST_F32);
    CHECK("scalar numel 1", sc->ndim == 0 && sc->numel == 1 && sc->nbytes == 4);
    CHECK("empty numel 0", e->numel == 0 && e->nbytes == 0 && e->ndim == 2);
    float got[24];
    int64_t sh3[] = {2, 3, 4}, sh2[] = {4, 6}, sh1[] = {24};
    CHECK("f32 exact", st_read_f32(f, "zeta.f32", got, 3, sh3) == 0 && memcmp(got, a, sizeof a) == 0);
    int ok = st_read_f32(f, "alpha.bf16", got, 2, sh2) == 0;
    for (int i = 0; ok && i < 24; i++)
        ok = got[i] == st_bf16_to_f32(st_f32_to_bf16(a[i]));
    CHECK("bf16 values", ok);
    ok = st_read_f32(f, "mid.f16", got, 1, sh1) == 0;
    for (int i = 0; ok && i < 24; i++)
        ok = got[i] == st_f16_to_f32(st_f32_to_f16(a[i])) && fabsf(got[i] - a[i]) < 4e-3f;
    CHECK("f16 values", ok);
    CHECK("scalar value", st_read_f32(f, "scalar", got, 0, NULL) == 0 && got[0] == 3.25f);

    int64_t wrong[] = {3, 8};
    CHECK("shape mismatch fails", st_read_f32(f, "alpha.bf16", got, 2, wrong) < 0);
    CHECKF("shape mismatch message", has(rl_errmsg(), path) && has(rl_errmsg(), "alpha.bf16") && has(rl_errmsg(), "[4, 6]") &&
                                         has(rl_errmsg(), "[3, 8]"), "%s", rl_errmsg());
    CHECK("missing tensor fails", st_read_f32(f, "model.norm.weight", got, 1, sh1) < 0 &&
                                      has(rl_errmsg(), "model.norm.weight"));
    st_close(f);

    /* No temporary left behind. */
    char tmpname[600];
    snprintf(tmpname, sizeof tmpname, "%s.tmp-%ld-0", path, (long)getpid());
    CHECK("no temp file left", !fs_exists(tmpname));

    struct st_out_tensor dup[] = {{"x", ST_F32, 1, {1}, a}, {"x", ST_F16, 1, {1}, a}};
    CHECK("duplicate names refused", st_write(path, dup, 2) < 0 && has(rl_errmsg(), "'x'"));
    struct st_out_tensor meta[] = {{"__metadata__", ST_F32, 1, {1}, a}};
    CHECK("reserved name refused", st_write(path, meta, 1) < 0);
    struct st_out_tensor neg[] = {{"n", ST_F32, 1, {-1}, a}};
    CHECK("negative dim refused", st_write(path, neg, 1) < 0 && has(rl_errmsg(), "'n'"));
    CHECK("unwritable dir fails cleanly", st_write("/nonexistent-dir/x.safetensors", out, 1) < 0 &&
                                              has(rl_errmsg(), "nonexistent-dir"));
    CHECK("zero tensors ok", st_write(path, NULL, 0) == 0 && (f = st_open(path)) && st_count(f) == 0);
    st_close(f);
}

/* ---- malformed files ---- */

/* Write 8-byte length (hlen, or strlen(header) when hlen == UINT64_MAX), header, ndata zero bytes. */
static void make_file(const char *path, uint64_t hlen, const char *header, size_t ndata)
{
    size_t hl = strlen(header);
    if (hlen == UINT64_MAX)
        hlen = hl;
    FILE *fp = fopen(path, "wb");
    for (int i = 0; i < 8; i++)
        fputc((int)((hlen >> (8 * i)) & 0xff), fp);
    fwrite(header, 1, hl, fp);
    for (size_t i = 0; i < ndata; i++)
        fputc(0, fp);
    fclose(fp);
}

struct bad {
    const char *name, *header;
    size_t ndata;
    uint64_t hlen;          /* 0: use the header's length */
    const char *want1, *want2;
};

static void test_malformed(void)
{
    const struct bad cases[] = {
        {"bad unknown dtype", "{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, 0, "'w'", "I64"},
        {"bad dtype F64", "{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, 0, "'w'", "F64"},
        {"bad size mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20, 0, "'w'", "size mismatch"},
        {"bad out of file", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0, "'w'", "outside"},
        {"bad overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, "'b'", "overlap"},
        {"bad gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, 0, "'b'", "contiguous"},
        {"bad not from zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0, "'a'", "contiguous"},
        {"bad trailing bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, 0, "'a'", "after the last"},
        {"bad reversed offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, 0, "'a'", "end before"},
        {"bad negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0, "'a'", "shape[0]"},
        {"bad float dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, 0, "'a'", "shape[0]"},
        {"bad too many dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0, "'a'", "dimensions"},
        {"bad shape overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4, 0, "'a'", "size mismatch"},
        {"bad offsets huge", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,0]}}", 4, 0, "", ""},
        {"bad missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "'a'", "dtype"},
        {"bad missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0, "'a'", "data_offsets"},
        {"bad three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, 0, "'a'", "data_offsets"},
        {"bad entry not object", "{\"a\":[1,2]}", 0, 0, "'a'", "not an object"},
        {"bad metadata", "{\"__metadata__\":[1]}", 0, 0, "__metadata__", ""},
        {"bad json", "{\"a\":{\"dtype\":\"F32\",", 0, 0, "not valid JSON", ""},
        {"bad json not object", "[1, 2, 3]", 0, 0, "not a JSON object", ""},
        {"bad duplicate key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "not valid JSON", "duplicate"},
        {"bad empty name", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "empty name", ""},
        {"bad header length past end", "{}", 0, 4096, "exceeds the file size", ""},
        {"bad huge header length", "{}", 0, UINT64_C(1) << 62, "exceeds", "limit"},
        {"bad max header length", "{}", 0, UINT64_MAX - 1, "exceeds", ""},
        {"bad nul in header", "{\"a\":\0}", 0, 6, "", ""},
    };
    char path[512];
    path_in(path, sizeof path, "bad.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const struct bad *c = &cases[i];
        make_file(path, c->hlen ? c->hlen : UINT64_MAX, c->header, c->ndata);
        rl_err("(no error)");
        struct st_file *f = st_open(path);
        const char *m = rl_errmsg();
        CHECKF(c->name, !f && has(m, path) && has(m, c->want1) && has(m, c->want2),
               "%s -> %s", f ? "opened" : "failed", m);
        st_close(f);
    }

    /* Truncation at every byte of a valid file fails cleanly. */
    float a[6] = {1, 2, 3, 4, 5, 6};
    struct st_out_tensor out[] = {{"w", ST_F32, 2, {2, 3}, a}, {"v", ST_BF16, 1, {2}, a}};
    char good[512];
    path_in(good, sizeof good, "good.safetensors");
    st_write(good, out, 2);
    size_t len;
    char *raw = fs_read_file(good, &len);
    int all = 1;
    for (size_t n = 0; n < len; n++) {
        FILE *fp = fopen(path, "wb");
        fwrite(raw, 1, n, fp);
        fclose(fp);
        struct st_file *f = st_open(path);
        if (f || !has(rl_errmsg(), path)) {
            all = 0;
            printf("# truncated at %zu: %s\n", n, f ? "opened" : rl_errmsg());
        }
        st_close(f);
    }
    CHECK("bad truncated at every length", all);
    /* Truncated inside the data: the message names the tensor that no longer fits
     * (v, the bf16 one, is stored after the f32 w). */
    FILE *fp = fopen(path, "wb");
    fwrite(raw, 1, len - 2, fp);
    fclose(fp);
    struct st_file *f = st_open(path);
    CHECKF("bad truncated data names tensor", !f && has(rl_errmsg(), "'v'") && has(rl_errmsg(), "truncated"),
           "%s", rl_errmsg());
    free(raw);
    make_file(path, 0, "", 0);
    f = st_open(path);
    CHECKF("bad zero header", !f && has(rl_errmsg(), "not a JSON object"), "%s", rl_errmsg());
    fp = fopen(path, "wb");
    fclose(fp);
    CHECKF("bad empty file", !(f = st_open(path)) && has(rl_errmsg(), "truncated"), "%s", rl_errmsg());
    CHECKF("bad missing file", !(f = st_open("/nonexistent/x.safetensors")) && has(rl_errmsg(), "/nonexistent/x"),
           "%s", rl_errmsg());
    CHECKF("bad directory as file", !(f = st_open(tmpdir)) && has(rl_errmsg(), "not a regular file"), "%s",
           rl_errmsg());
    /* A valid minimal file: metadata only, no tensors. */
    make_file(path, UINT64_MAX, "{\"__metadata__\":{\"format\":\"pt\"}}  ", 0);
    f = st_open(path);
    CHECKF("metadata only ok", f && st_count(f) == 0, "%s", rl_errmsg());
    st_close(f);
    make_file(path, UINT64_MAX, "{\"b\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[0,0]},"
                                "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    f = st_open(path);
    CHECKF("zero-size tensor sharing an offset ok", f && st_count(f) == 2, "%s", rl_errmsg());
    st_close(f);
}

/* ---- shards ---- */

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
}

static void test_shards(void)
{
    char dir[400], p[600];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    mkdir(dir, 0777);
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    struct st_out_tensor s1[] = {{"model.a", ST_F32, 1, {4}, a}};
    struct st_out_tensor s2[] = {{"model.b", ST_BF16, 1, {2}, b}, {"model.c", ST_F16, 1, {2}, b}};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    st_write(p, s1, 1);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    st_write(p, s2, 2);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
                  "\"model.a\":\"model-00001-of-00002.safetensors\","
                  "\"model.c\":\"model-00002-of-00002.safetensors\","
                  "\"model.b\":\"model-00002-of-00002.safetensors\"}}");
    struct st_file *f = st_open_dir(dir);
    CHECKF("shards open", f && st_count(f) == 3, "%s", rl_errmsg());
    float got[4];
    int64_t s4[] = {4}, s2s[] = {2};
    CHECK("shard values", f && st_read_f32(f, "model.a", got, 1, s4) == 0 && got[3] == 4 &&
                              st_read_f32(f, "model.b", got, 1, s2s) == 0 && got[1] == 6);
    st_close(f);

    struct { const char *name, *index, *want; } bad[] = {
        {"shard index missing tensor", "{\"weight_map\":{\"model.a\":\"model-00001-of-00002.safetensors\","
            "\"model.b\":\"model-00002-of-00002.safetensors\",\"model.x\":\"model-00002-of-00002.safetensors\"}}", "'model.x'"},
        {"shard index wrong shard", "{\"weight_map\":{\"model.a\":\"model-00002-of-00002.safetensors\","
            "\"model.b\":\"model-00002-of-00002.safetensors\",\"model.c\":\"model-00002-of-00002.safetensors\"}}", "'model.a'"},
        {"shard tensor not listed", "{\"weight_map\":{\"model.a\":\"model-00001-of-00002.safetensors\","
            "\"model.b\":\"model-00002-of-00002.safetensors\"}}", "'model.c'"},
        {"shard path escapes", "{\"weight_map\":{\"model.a\":\"../x.safetensors\"}}", "'model.a'"},
        {"shard file missing", "{\"weight_map\":{\"model.a\":\"nope.safetensors\"}}", "nope.safetensors"},
        {"shard no weight_map", "{\"metadata\":{}}", "weight_map"},
        {"shard bad json", "{\"weight_map\":", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_text(p, bad[i].index);
        f = st_open_dir(dir);
        CHECKF(bad[i].name, !f && has(rl_errmsg(), bad[i].want) && has(rl_errmsg(), "sharded"), "%s",
               rl_errmsg());
        st_close(f);
    }
    /* The same tensor in two shards. */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    struct st_out_tensor s2dup[] = {{"model.a", ST_F32, 1, {4}, a}};
    st_write(p, s2dup, 1);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"weight_map\":{\"model.a\":\"model-00001-of-00002.safetensors\","
                  "\"model.b\":\"model-00002-of-00002.safetensors\"}}");
    f = st_open_dir(dir);
    CHECKF("shard duplicate tensor", !f && has(rl_errmsg(), "'model.a'") && has(rl_errmsg(), "both"), "%s",
           rl_errmsg());
    st_close(f);

    /* A plain model directory, and one with no weights. */
    char plain[400];
    snprintf(plain, sizeof plain, "%s/plain", tmpdir);
    mkdir(plain, 0777);
    f = st_open_dir(plain);
    CHECKF("dir without weights", !f && has(rl_errmsg(), "no model.safetensors"), "%s", rl_errmsg());
    snprintf(p, sizeof p, "%s/model.safetensors", plain);
    st_write(p, s1, 1);
    f = st_open_dir(plain);
    CHECK("dir with model.safetensors", f && st_find(f, "model.a"));
    st_close(f);
    f = st_open_dir(p);
    CHECK("st_open_dir on a file", f && st_count(f) == 1);
    st_close(f);
}

/* ---- helper modes for the Python interop test ---- */

static int dump(const char *path)
{
    struct st_file *f = st_open_dir(path);
    if (!f) {
        fprintf(stderr, "test_safetensors: %s\n", rl_errmsg());
        return 1;
    }
    for (size_t i = 0; i < st_count(f); i++) {
        const struct st_tensor *t = st_at(f, i);
        printf("%s %s [", t->name, st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
        printf("]");
        float *v = malloc((size_t)(t->numel ? t->numel : 1) * 4);
        st_tensor_to_f32(t, v);
        for (int64_t k = 0; k < t->numel; k++)
            printf(" %.9g", v[k]);
        printf("\n");
        free(v);
    }
    st_close(f);
    return 0;
}

/* 40 values: k/7 for k in -50..50 (not representable in 16 bits: rounding is
 * exercised), then specials. Python builds the same list with numpy float32. */
static int interop_write(const char *path)
{
    float v[40];
    for (int i = 0; i < 32; i++)
        v[i] = val(i);
    const float special[8] = {INFINITY, -INFINITY, -0.0f, 65520.0f, 1e-8f, 3e38f, 1e-40f, 0.1f};
    memcpy(v + 32, special, sizeof special);
    struct st_out_tensor out[] = {
        {"t.f32", ST_F32, 2, {5, 8}, v},
        {"t.bf16", ST_BF16, 2, {5, 8}, v},
        {"t.f16", ST_F16, 3, {2, 4, 5}, v},
        {"t.scalar", ST_F32, 0, {0}, v},
        {"t.empty", ST_F16, 2, {3, 0}, v},
    };
    if (st_write(path, out, 5) < 0) {
        fprintf(stderr, "test_safetensors: %s\n", rl_errmsg());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "dump") == 0)
        return dump(argv[2]);
    if (argc == 3 && strcmp(argv[1], "write") == 0)
        return interop_write(argv[2]);
    snprintf(tmpdir, sizeof tmpdir, "%s/rlflow-st-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_conversions();
    test_roundtrip();
    test_malformed();
    test_shards();
    fs_rm_rf(tmpdir);
    return harness_exit();
}
