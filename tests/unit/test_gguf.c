/* GGUF reader, dequantization and import, on GGUF files built here:
 * every supported type against an element-by-element reference written from
 * the block layouts, every metadata value type, malformed files (each must be
 * an error naming the problem, never a crash), the q/k row permutation, and a
 * tiny llama model imported to a directory and read back. */
#include <inttypes.h>
#include <stdint.h>
#include <unistd.h>

#include "../harness.h"
#include "config.h"
#include "err.h"
#include "fsutil.h"
#include "gguf.h"
#include "gguf_import.h"
#include "safetensors.h"
#include "tokenizer.h"

/* ---- building GGUF images ---- */

static void put(struct rl_buf *b, const void *p, size_t n) { rl_buf_put(b, p, n); }
static void put_u32(struct rl_buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct rl_buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct rl_buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_u32(struct rl_buf *b, const char *k, uint32_t v)
{
    put_str(b, k);
    put_u32(b, GGUF_U32);
    put_u32(b, v);
}
static void kv_f32(struct rl_buf *b, const char *k, float v)
{
    put_str(b, k);
    put_u32(b, GGUF_F32);
    put(b, &v, 4);
}
static void kv_str(struct rl_buf *b, const char *k, const char *v)
{
    put_str(b, k);
    put_u32(b, GGUF_STRING);
    put_str(b, v);
}
static void kv_bool(struct rl_buf *b, const char *k, bool v)
{
    put_str(b, k);
    put_u32(b, GGUF_BOOL);
    uint8_t x = v;
    put(b, &x, 1);
}
static void kv_strs(struct rl_buf *b, const char *k, const char *const *v, size_t n)
{
    put_str(b, k);
    put_u32(b, GGUF_ARRAY);
    put_u32(b, GGUF_STRING);
    put_u64(b, n);
    for (size_t i = 0; i < n; i++)
        put_str(b, v[i]);
}
static void kv_i32s(struct rl_buf *b, const char *k, const int32_t *v, size_t n)
{
    put_str(b, k);
    put_u32(b, GGUF_ARRAY);
    put_u32(b, GGUF_I32);
    put_u64(b, n);
    put(b, v, n * 4);
}

struct tspec {
    const char *name;
    uint32_t type;
    int ndim;
    int64_t ne[4];
    const void *data;
    size_t nbytes;
};

/* header + kvs + tensor infos + padding + data, tensors packed at `align`. */
static void build(struct rl_buf *out, uint32_t version, const struct rl_buf *kvs, uint64_t nkv,
                  const struct tspec *t, size_t nt, size_t align)
{
    out->len = 0;
    put(out, "GGUF", 4);
    put_u32(out, version);
    put_u64(out, nt);
    put_u64(out, nkv);
    if (kvs->len)
        put(out, kvs->data, kvs->len);
    uint64_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        put_str(out, t[i].name);
        put_u32(out, (uint32_t)t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            put_u64(out, (uint64_t)t[i].ne[d]);
        put_u32(out, t[i].type);
        put_u64(out, off);
        off += (t[i].nbytes + align - 1) / align * align;
    }
    while (out->len % align)
        rl_buf_putc(out, 0);
    for (size_t i = 0; i < nt; i++) {
        put(out, t[i].data, t[i].nbytes);
        while (out->len % align)
            rl_buf_putc(out, 0);
    }
}

/* ---- random data with sane scales ---- */

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}

/* a half in +-[2^-6, 2): exponent 9..15 */
static uint16_t rnd_half(void)
{
    return (uint16_t)(((rnd() & 1) << 15) | ((9 + rnd() % 7) << 10) | (rnd() & 0x3ff));
}

static void set_half(uint8_t *p, uint16_t h) { memcpy(p, &h, 2); }

struct qtype {
    uint32_t type;
    size_t block, bytes;
    int half_at[2], n_half;   /* where the fp16 scales sit in a block */
};

static const struct qtype qtypes[] = {
    {GGML_F32, 1, 4, {0}, 0},         {GGML_F16, 1, 2, {0}, 1},       {GGML_BF16, 1, 2, {0}, 0},
    {GGML_Q4_0, 32, 18, {0}, 1},      {GGML_Q4_1, 32, 20, {0, 2}, 2}, {GGML_Q5_0, 32, 22, {0}, 1},
    {GGML_Q5_1, 32, 24, {0, 2}, 2},   {GGML_Q8_0, 32, 34, {0}, 1},    {GGML_Q4_K, 256, 144, {0, 2}, 2},
    {GGML_Q5_K, 256, 176, {0, 2}, 2}, {GGML_Q6_K, 256, 210, {208}, 1}, {GGML_Q2_K, 256, 84, {80, 82}, 2},
    {GGML_Q3_K, 256, 110, {108}, 1},  {GGML_IQ4_NL, 32, 18, {0}, 1},   {GGML_IQ4_XS, 256, 136, {0}, 1},
};

static uint8_t *rnd_blocks(const struct qtype *q, size_t nblocks)
{
    uint8_t *p = rl_malloc(nblocks * q->bytes);
    for (size_t i = 0; i < nblocks * q->bytes; i++)
        p[i] = (uint8_t)rnd();
    for (size_t b = 0; b < nblocks; b++) {
        uint8_t *blk = p + b * q->bytes;
        if (q->type == GGML_F32) {
            float f = ((float)(rnd() % 20001) - 10000) / 1000;
            memcpy(blk, &f, 4);
        } else if (q->type == GGML_BF16) {
            uint16_t h = (uint16_t)(((rnd() & 1) << 15) | ((120 + rnd() % 10) << 7) | (rnd() & 0x7f));
            memcpy(blk, &h, 2);
        }
        for (int k = 0; k < q->n_half; k++)
            set_half(blk + q->half_at[k], rnd_half());
    }
    return p;
}

/* ---- reference dequantization: one element at a time, from the layouts ---- */

static float ref_half(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (float)((h >> 15) ? -v : v);
}
static float hat(const uint8_t *p) { return ref_half((uint16_t)(p[0] | p[1] << 8)); }

/* 6-bit scale (which = 0) or min (which = 1) of K-quant sub-block s */
static int k6(const uint8_t *sc, int s, int which)
{
    if (s < 4)
        return sc[s + 4 * which] & 63;
    int low = which ? sc[s + 4] >> 4 : sc[s + 4] & 15;
    int high = sc[s - 4 + 4 * which] >> 6;
    return low | high << 4;
}

static float ref_elem(uint32_t type, const uint8_t *b, int e)
{
    int lo = e < 16, j = e % 16;
    switch (type) {
    case GGML_F32: { float f; memcpy(&f, b, 4); return f; }
    case GGML_F16: return hat(b);
    case GGML_BF16: { uint32_t u = (uint32_t)(b[0] | b[1] << 8) << 16; float f; memcpy(&f, &u, 4); return f; }
    case GGML_Q4_0: return hat(b) * (float)((lo ? b[2 + j] & 15 : b[2 + j] >> 4) - 8);
    case GGML_Q4_1: return hat(b) * (float)(lo ? b[4 + j] & 15 : b[4 + j] >> 4) + hat(b + 2);
    case GGML_Q5_0: case GGML_Q5_1: {
        bool one = type == GGML_Q5_1;
        const uint8_t *qh = b + (one ? 4 : 2), *qs = qh + 4;
        uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
        int q = (lo ? qs[j] & 15 : qs[j] >> 4) | (int)((h >> e) & 1) << 4;   /* element e: bit e */
        return one ? hat(b) * (float)q + hat(b + 2) : hat(b) * (float)(q - 16);
    }
    case GGML_Q8_0: return hat(b) * (float)(int8_t)b[2 + e];
    case GGML_Q4_K: case GGML_Q5_K: {
        bool five = type == GGML_Q5_K;
        int s = e / 32, l = e % 32;
        const uint8_t *qs = b + (five ? 48 : 16) + (e / 64) * 32;
        int q = s % 2 ? qs[l] >> 4 : qs[l] & 15;
        if (five)
            q |= ((b[16 + l] >> s) & 1) << 4;
        return hat(b) * (float)k6(b + 4, s, 0) * (float)q - hat(b + 2) * (float)k6(b + 4, s, 1);
    }
    case GGML_Q2_K: case GGML_Q3_K: {
        /* 2-bit quants: byte (half, 16k + l) holds the 4 values of its shifts */
        int half = e / 128, sh = (e % 128) / 32, w = e % 32, k = w / 16, l = w % 16, is = half * 8 + sh * 2 + k;
        int q = (b[(type == GGML_Q2_K ? 16 : 32) + half * 32 + 16 * k + l] >> (2 * sh)) & 3;
        if (type == GGML_Q2_K)
            return hat(b + 80) * (float)(b[is] & 15) * (float)q - hat(b + 82) * (float)(b[is] >> 4);
        const uint8_t *ps = b + 96;
        int sc = ((is < 8 ? ps[is] & 15 : ps[is - 8] >> 4) | ((ps[8 + is % 4] >> (2 * (is / 4))) & 3) << 4) - 32;
        if (!((b[w] >> (half * 4 + sh)) & 1))
            q -= 4;
        return hat(b + 108) * (float)sc * (float)q;
    }
    case GGML_IQ4_NL: case GGML_IQ4_XS: {
        static const int tab[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
        if (type == GGML_IQ4_NL)
            return hat(b) * (float)tab[lo ? b[2 + j] & 15 : b[2 + j] >> 4];
        int ib = e / 32, w = e % 32;
        int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 15) | (((b[2] | b[3] << 8) >> (2 * ib)) & 3) << 4;
        uint8_t qb = b[8 + ib * 16 + w % 16];
        return hat(b) * (float)(ls - 32) * (float)tab[w < 16 ? qb & 15 : qb >> 4];
    }
    case GGML_Q6_K: {
        int half = e / 128, r = e % 128, k = r / 32, l = r % 32;
        uint8_t lb = b[half * 64 + l + (k & 1) * 32];
        int q = (k >= 2 ? lb >> 4 : lb & 15) | ((b[128 + half * 32 + l] >> (2 * k)) & 3) << 4;
        return hat(b + 208) * (float)(int8_t)b[192 + half * 8 + l / 16 + 2 * k] * (float)(q - 32);
    }
    }
    return NAN;
}

static void test_half(void)
{
    int bad = -1;
    for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
        float a = ggml_f16_to_f32((uint16_t)h), b = ref_half((uint16_t)h);
        if (!(a == b || (a != a && b != b)) || signbit(a) != signbit(b))
            bad = (int)h;
    }
    CHECKF("f16_exhaustive", bad < 0, "half 0x%04x: %g vs %g", bad, ggml_f16_to_f32((uint16_t)bad),
           ref_half((uint16_t)bad));
}

/* Each type: 3 rows of 512 values in a GGUF tensor, read back and dequantized. */
static void test_dequant(void)
{
    for (size_t qi = 0; qi < sizeof qtypes / sizeof *qtypes; qi++) {
        const struct qtype *q = &qtypes[qi];
        int64_t ne0 = 512, ne1 = 3, n = ne0 * ne1;
        size_t nb = (size_t)n / q->block;
        uint8_t *data = rnd_blocks(q, nb);
        struct rl_buf kv = {0}, img = {0};
        struct tspec t = {"w", q->type, 2, {ne0, ne1}, data, nb * q->bytes};
        build(&img, 3, &kv, 0, &t, 1, 32);
        char name[64];
        snprintf(name, sizeof name, "dequant_%s", ggml_type_name(q->type));
        struct gguf *g = gguf_open_mem(img.data, img.len, "mem");
        const struct gguf_tensor *gt = g ? gguf_find_tensor(g, "w") : NULL;
        if (!gt) {
            CHECKF(name, 0, "%s", rl_errmsg());
        } else {
            float *got = rl_malloc((size_t)n * sizeof *got), *want = rl_malloc((size_t)n * sizeof *want);
            for (int64_t i = 0; i < n; i++)
                want[i] = ref_elem(q->type, data + (size_t)(i / (int64_t)q->block) * q->bytes, (int)(i % (int64_t)q->block));
            int rc = gguf_tensor_to_f32(gt, got);
            double err = harness_max_rel_err(got, want, (size_t)n);
            CHECKF(name, rc == 0 && gt->numel == n && gt->nbytes == nb * q->bytes && err < 1e-6,
                   "rc %d err %g (%s)", rc, err, rc ? rl_errmsg() : "");
            free(got);
            free(want);
        }
        gguf_close(g);
        free(data);
        rl_buf_free(&img);
    }
    /* unsupported type: parsed, but dequantizing names the tensor and the type */
    uint8_t blk[292] = {0};
    struct rl_buf kv = {0}, img = {0};
    struct tspec t = {"blk.0.ffn_up.weight", GGML_Q8_K, 1, {256}, blk, sizeof blk};
    build(&img, 3, &kv, 0, &t, 1, 32);
    struct gguf *g = gguf_open_mem(img.data, img.len, "mem");
    float out[256];
    int rc = g ? gguf_tensor_to_f32(gguf_tensor_at(g, 0), out) : 0;
    CHECKF("dequant_unsupported_named", g && rc < 0 && strstr(rl_errmsg(), "Q8_K") &&
           strstr(rl_errmsg(), "blk.0.ffn_up.weight"), "%s", rl_errmsg());
    gguf_close(g);
    rl_buf_free(&img);
}

/* ---- metadata ---- */

static void test_metadata(void)
{
    struct rl_buf kv = {0}, img = {0};
    uint64_t nkv = 0;
    uint8_t u8 = 200; int8_t i8 = -5; uint16_t u16 = 60000; int16_t i16 = -300;
    int32_t i32 = -70000; uint64_t u64 = 1ull << 40; int64_t i64 = -(1ll << 40); double f64 = 2.5;
    struct { const char *k; uint32_t t; const void *v; size_t n; } sc[] = {
        {"a.u8", GGUF_U8, &u8, 1},     {"a.i8", GGUF_I8, &i8, 1},    {"a.u16", GGUF_U16, &u16, 2},
        {"a.i16", GGUF_I16, &i16, 2},  {"a.i32", GGUF_I32, &i32, 4}, {"a.u64", GGUF_U64, &u64, 8},
        {"a.i64", GGUF_I64, &i64, 8},  {"a.f64", GGUF_F64, &f64, 8},
    };
    for (size_t i = 0; i < sizeof sc / sizeof *sc; i++, nkv++) {
        put_str(&kv, sc[i].k);
        put_u32(&kv, sc[i].t);
        put(&kv, sc[i].v, sc[i].n);
    }
    kv_u32(&kv, "a.u32", 4000000000u); nkv++;
    kv_f32(&kv, "a.f32", 0.25f); nkv++;
    kv_bool(&kv, "a.bool", true); nkv++;
    kv_str(&kv, "a.str", "héllo"); nkv++;
    const char *strs[] = {"x", "", "yz"};
    kv_strs(&kv, "a.strs", strs, 3); nkv++;
    int32_t ints[] = {3, -1, 7};
    kv_i32s(&kv, "a.ints", ints, 3); nkv++;
    build(&img, 3, &kv, nkv, NULL, 0, 32);
    struct gguf *g = gguf_open_mem(img.data, img.len, "mem");
    CHECKF("meta_open", g, "%s", rl_errmsg());
    if (!g)
        return;
    int64_t v = 0;
    double f = 0;
    bool b = false;
    struct gguf_str s = {0};
    CHECK("meta_u8", gguf_get_int(g, "a.u8", &v) == 0 && v == 200);
    CHECK("meta_i8", gguf_get_int(g, "a.i8", &v) == 0 && v == -5);
    CHECK("meta_u16", gguf_get_int(g, "a.u16", &v) == 0 && v == 60000);
    CHECK("meta_i16", gguf_get_int(g, "a.i16", &v) == 0 && v == -300);
    CHECK("meta_u32", gguf_get_int(g, "a.u32", &v) == 0 && v == 4000000000ll);
    CHECK("meta_i32", gguf_get_int(g, "a.i32", &v) == 0 && v == -70000);
    CHECK("meta_u64", gguf_get_int(g, "a.u64", &v) == 0 && v == 1ll << 40);
    CHECK("meta_i64", gguf_get_int(g, "a.i64", &v) == 0 && v == -(1ll << 40));
    CHECK("meta_f32", gguf_get_float(g, "a.f32", &f) == 0 && f == 0.25);
    CHECK("meta_f64", gguf_get_float(g, "a.f64", &f) == 0 && f == 2.5);
    CHECK("meta_int_as_float", gguf_get_float(g, "a.i32", &f) == 0 && f == -70000);
    CHECK("meta_bool", gguf_get_bool(g, "a.bool", &b) == 0 && b);
    CHECK("meta_str", gguf_get_str(g, "a.str", &s) == 0 && s.n == 6 && !memcmp(s.p, "héllo", 6));
    CHECK("meta_absent", gguf_get_int(g, "nope", &v) == 1);
    CHECKF("meta_wrong_type", gguf_get_int(g, "a.str", &v) < 0 && strstr(rl_errmsg(), "a.str"), "%s", rl_errmsg());
    const struct gguf_kv *a = gguf_get_arr(g, "a.strs", GGUF_STRING);
    CHECK("meta_str_array", a && a->n == 3 && a->strs[1].n == 0 && a->strs[2].n == 2 && !memcmp(a->strs[2].p, "yz", 2));
    a = gguf_get_arr(g, "a.ints", GGUF_I64);
    CHECK("meta_int_array", a && a->n == 3 && gguf_arr_int(a, 1) == -1 && gguf_arr_int(a, 2) == 7);
    CHECKF("meta_array_wrong_type", !gguf_get_arr(g, "a.ints", GGUF_STRING) && strstr(rl_errmsg(), "a.ints"), "%s",
           rl_errmsg());
    CHECK("meta_alignment_default", gguf_alignment(g) == 32 && gguf_version(g) == 3);
    gguf_close(g);
    /* the same through a file (mmap) */
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    bool wrote = fd >= 0 && write(fd, img.data, img.len) == (ssize_t)img.len;
    if (fd >= 0)
        close(fd);
    g = wrote ? gguf_open(path) : NULL;
    CHECKF("meta_file", g && gguf_n_kv(g) == nkv && gguf_get_int(g, "a.u8", &v) == 0 && v == 200, "%s", rl_errmsg());
    gguf_close(g);
    unlink(path);
    rl_buf_free(&kv);
    rl_buf_free(&img);
}

/* ---- malformed files ---- */

/* A small valid file with one key and two tensors, for mutation. */
static void valid_image(struct rl_buf *img, uint32_t version)
{
    static float w[64];
    static uint8_t q[2 * 18];
    struct rl_buf kv = {0};
    kv_str(&kv, "general.architecture", "llama");
    kv_u32(&kv, "general.alignment", 32);
    struct tspec t[2] = {{"a", GGML_F32, 2, {8, 8}, w, sizeof w}, {"b", GGML_Q4_0, 1, {64}, q, sizeof q}};
    build(img, version, &kv, 2, t, 2, 32);
    rl_buf_free(&kv);
}

static void expect_error(const char *name, const void *p, size_t n, const char *needle)
{
    struct gguf *g = gguf_open_mem(p, n, "bad.gguf");
    CHECKF(name, !g && strstr(rl_errmsg(), needle) && strstr(rl_errmsg(), "bad.gguf"), "%s",
           g ? "accepted" : rl_errmsg());
    gguf_close(g);
}

static void test_malformed(void)
{
    struct rl_buf img = {0}, m = {0};
    valid_image(&img, 3);
    struct gguf *g = gguf_open_mem(img.data, img.len, "ok");
    CHECKF("valid_image", g && gguf_n_tensors(g) == 2, "%s", rl_errmsg());
    gguf_close(g);
    valid_image(&m, 2);
    g = gguf_open_mem(m.data, m.len, "ok");
    CHECKF("version_2", g != NULL, "%s", rl_errmsg());
    gguf_close(g);

    /* every truncation before the end of the last tensor's data is an error;
     * the trailing padding after it is optional */
    size_t data_end = img.len - 64 + 36;
    int bad = -1;
    for (size_t n = 0; n < data_end && bad < 0; n++) {
        g = gguf_open_mem(img.data, n, "cut");
        if (g)
            bad = (int)n;
        gguf_close(g);
    }
    CHECKF("every_truncation_fails", bad < 0, "accepted %d of %zu bytes", bad, img.len);
    g = gguf_open_mem(img.data, data_end, "cut");
    CHECKF("trailing_padding_optional", g, "%s", rl_errmsg());
    gguf_close(g);
    expect_error("truncated_named", img.data, 150, "truncated");

#define MUT(name, off, type, val, needle)                               \
    do {                                                                \
        m.len = 0;                                                      \
        rl_buf_put(&m, img.data, img.len);                              \
        type v_ = (val);                                                \
        memcpy(m.data + (off), &v_, sizeof v_);                         \
        expect_error(name, m.data, m.len, needle);                      \
    } while (0)

    MUT("bad_magic", 0, uint32_t, 0x46554748, "magic");
    MUT("version_1", 4, uint32_t, 1, "version 1");
    MUT("version_4", 4, uint32_t, 4, "version 4");
    MUT("big_endian", 4, uint32_t, 0x03000000, "big-endian");
    MUT("absurd_tensor_count", 8, uint64_t, 1ull << 40, "tensor count");
    MUT("absurd_kv_count", 16, uint64_t, 1ull << 50, "metadata count");
    MUT("absurd_key_length", 24, uint64_t, 1ull << 62, "key #0");
    /* value of key 0: after 8 + 20 bytes of key, u32 type, then the string length */
    MUT("absurd_string_length", 24 + 28 + 4, uint64_t, 1ull << 60, "general.architecture");
    MUT("unknown_value_type", 24 + 28, uint32_t, 77, "unknown value type 77");
    size_t al = 24 + 28 + 4 + 8 + 5 + 8 + 17 + 4;   /* general.alignment's value */
    MUT("alignment_not_pow2", al, uint32_t, 48, "general.alignment");
    MUT("alignment_zero", al, uint32_t, 0, "general.alignment");
    /* tensor infos start after the header (24) and the two keys (45 + 33 bytes);
     * ta and tb point at each tensor's n_dims, after its 9-byte name */
    size_t ta = 24 + 45 + 33 + 9, tb = ta + 4 + 16 + 4 + 8 + 9;
    {
        MUT("n_dims_5", ta, uint32_t, 5, "'a': 5 dimensions");
        MUT("absurd_dim", ta + 4, uint64_t, 1ull << 62, "'a': dimension 0");
        MUT("unknown_tensor_type", ta + 4 + 16, uint32_t, 99, "unknown type 99");
        MUT("iq_type_named", ta + 4 + 16, uint32_t, 16, "IQ2_XXS");
        MUT("misaligned_offset", ta + 4 + 16 + 4, uint64_t, 4, "alignment");
        MUT("data_outside_file", tb + 4 + 8 + 4, uint64_t, 1ull << 20, "'b': data");
        MUT("offset_overflow", tb + 4 + 8 + 4, uint64_t, UINT64_MAX - 31, "'b': data");
        MUT("block_multiple", tb + 4, uint64_t, 48, "multiple of Q4_0's block size 32");
        MUT("overlap", tb + 4 + 8 + 4, uint64_t, 0, "overlap");
        MUT("duplicate_tensor", tb - 1, char, 'a', "'a' appears twice");
    }
    struct rl_buf kv = {0};
    kv_u32(&kv, "k", 1);
    kv_u32(&kv, "k", 2);
    build(&m, 3, &kv, 2, NULL, 0, 32);
    expect_error("duplicate_key_named", m.data, m.len, "'k' appears twice");
    kv.len = 0;
    put_str(&kv, "nest");
    put_u32(&kv, GGUF_ARRAY);
    put_u32(&kv, GGUF_ARRAY);
    put_u64(&kv, 1);
    build(&m, 3, &kv, 1, NULL, 0, 32);
    expect_error("nested_array", m.data, m.len, "nested");
    kv.len = 0;
    put_str(&kv, "big");
    put_u32(&kv, GGUF_ARRAY);
    put_u32(&kv, GGUF_U64);
    put_u64(&kv, 1ull << 61);
    build(&m, 3, &kv, 1, NULL, 0, 32);
    expect_error("absurd_array_length", m.data, m.len, "'big'");
    kv.len = 0;
    put_u64(&kv, 3);
    put(&kv, "a\0b", 3);
    put_u32(&kv, GGUF_U8);
    rl_buf_putc(&kv, 1);
    build(&m, 3, &kv, 1, NULL, 0, 32);
    expect_error("nul_in_key", m.data, m.len, "NUL");
    expect_error("empty_file", "", 0, "too short");
    rl_buf_free(&kv);
    rl_buf_free(&img);
    rl_buf_free(&m);
}

/* ---- the q/k permutation ---- */

static void test_permutation(void)
{
    /* HF rows r = h*D + j*D/2 + i go to GGUF row h*D + 2i + j (the converter's
     * reshape(n_head, 2, D/2, cols).swapaxes(1, 2)); undoing must restore HF. */
    int n_head = 3, D = 8, cols = 5, rows = n_head * D;
    float hf[24 * 5], gg[24 * 5];
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            hf[r * cols + c] = (float)(r * 100 + c);
    for (int h = 0; h < n_head; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < D / 2; i++)
                memcpy(&gg[(h * D + 2 * i + j) * cols], &hf[(h * D + j * D / 2 + i) * cols], cols * sizeof(float));
    CHECK("permutation_moves_rows", memcmp(gg, hf, sizeof hf) != 0);
    gguf_unpermute_rows(gg, n_head, rows, cols);
    CHECK("unpermute_restores_hf", memcmp(gg, hf, sizeof hf) == 0);
}

/* ---- a tiny llama imported to a directory ---- */

/* GPT-2's byte -> unicode map, as UTF-8 */
static void byte_token(int b, char out[4])
{
    int cp = b, n = 0;
    bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    if (!printable) {
        for (int x = 0; x < b; x++)
            if (!((x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 63));
        out[2] = 0;
    }
}

enum { H = 8, NH = 2, NKV = 1, HD = 4, FF = 16, V = 261 };

/* Variants of the tiny model, each with one defect (or none). */
enum tiny_flaw { OK, WITH_OUTPUT, NO_BLOCK_COUNT, SPLIT, EXPERTS, NO_FFN_UP, EXTRA_TENSOR, BAD_SHAPE, BAD_MERGE };

static void tiny_model(struct rl_buf *img, const char *arch, const char *pre, enum tiny_flaw flaw)
{
    bool with_output = flaw == WITH_OUTPUT;
    static char tokbuf[V][16];
    const char *toks[V];
    int32_t types[V];
    for (int i = 0; i < 256; i++) {
        byte_token(i, tokbuf[i]);
        toks[i] = tokbuf[i];
        types[i] = 1;
    }
    const char *extra[] = {"he", "ll", "hell", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 5; i++) {
        toks[256 + i] = extra[i];
        types[256 + i] = i >= 3 ? 3 : 1;
    }
    const char *merges[] = {"h e", flaw == BAD_MERGE ? "ll" : "l l", "he ll"};
    struct rl_buf kv = {0};
    uint64_t nkv = 0;
    kv_str(&kv, "general.architecture", arch), nkv++;
    kv_u32(&kv, "llama.context_length", 128), nkv++;
    kv_u32(&kv, "llama.embedding_length", H), nkv++;
    if (flaw != NO_BLOCK_COUNT)
        kv_u32(&kv, "llama.block_count", 1), nkv++;
    if (flaw == SPLIT)
        kv_u32(&kv, "split.count", 2), nkv++;
    if (flaw == EXPERTS)
        kv_u32(&kv, "llama.expert_count", 8), nkv++;
    kv_u32(&kv, "llama.feed_forward_length", FF), nkv++;
    kv_u32(&kv, "llama.attention.head_count", NH), nkv++;
    kv_u32(&kv, "llama.attention.head_count_kv", NKV), nkv++;
    kv_f32(&kv, "llama.attention.layer_norm_rms_epsilon", 1e-5f), nkv++;
    kv_f32(&kv, "llama.rope.freq_base", 50000), nkv++;
    kv_str(&kv, "tokenizer.ggml.model", "gpt2"), nkv++;
    kv_str(&kv, "tokenizer.ggml.pre", pre), nkv++;
    kv_strs(&kv, "tokenizer.ggml.tokens", toks, V), nkv++;
    kv_i32s(&kv, "tokenizer.ggml.token_type", types, V), nkv++;
    kv_strs(&kv, "tokenizer.ggml.merges", merges, 3), nkv++;
    kv_u32(&kv, "tokenizer.ggml.bos_token_id", 259), nkv++;
    kv_u32(&kv, "tokenizer.ggml.eos_token_id", 260), nkv++;
    kv_bool(&kv, "tokenizer.ggml.add_bos_token", false), nkv++;
    kv_str(&kv, "tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}"), nkv++;
    /* F32 tensors whose values encode (tensor, index) */
    static float data[16][V * H];
    struct { const char *name; int64_t ne0, ne1; } ts[] = {
        {"token_embd.weight", H, V},          {"blk.0.attn_norm.weight", H, 0},
        {"blk.0.attn_q.weight", H, NH * HD},  {"blk.0.attn_k.weight", H, NKV * HD},
        {"blk.0.attn_v.weight", H, NKV * HD}, {"blk.0.attn_output.weight", NH * HD, H},
        {"blk.0.ffn_norm.weight", H, 0},      {"blk.0.ffn_gate.weight", H, FF},
        {"blk.0.ffn_up.weight", H, FF},       {"blk.0.ffn_down.weight", FF, H},
        {"output_norm.weight", H, 0},         {"output.weight", H, V},
    };
    size_t nt = sizeof ts / sizeof *ts - (with_output ? 0 : 1);
    struct tspec t[13];
    for (size_t i = 0; i < nt; i++) {
        int64_t n = ts[i].ne0 * (ts[i].ne1 ? ts[i].ne1 : 1);
        for (int64_t k = 0; k < n; k++)
            data[i][k] = (float)i * 10000 + (float)k;
        t[i] = (struct tspec){ts[i].name, GGML_F32, ts[i].ne1 ? 2 : 1, {ts[i].ne0, ts[i].ne1}, data[i], (size_t)n * 4};
    }
    if (flaw == NO_FFN_UP)
        t[8] = t[--nt];
    if (flaw == EXTRA_TENSOR)
        t[nt++] = (struct tspec){"blk.0.attn_sinks", GGML_F32, 1, {H}, data[1], H * 4};
    if (flaw == BAD_SHAPE)
        t[9].ne[0] = FF / 2, t[9].ne[1] = H * 2;     /* ffn_down, same bytes, wrong shape */
    build(img, 3, &kv, nkv, t, nt, 32);
    rl_buf_free(&kv);
}

static void test_import(void)
{
    struct rl_buf img = {0};
    tiny_model(&img, "llama", "smollm", OK);
    struct gguf *g = gguf_open_mem(img.data, img.len, "tiny.gguf");
    CHECKF("tiny_open", g, "%s", rl_errmsg());
    if (!g)
        return;
    struct model_config c;
    int rc = gguf_import_config(g, &c);
    CHECKF("config_fields", rc == 0 && c.hidden_size == H && c.num_attention_heads == NH &&
           c.num_key_value_heads == NKV && c.head_dim == HD && c.intermediate_size == FF &&
           c.num_hidden_layers == 1 && c.vocab_size == V && c.max_position_embeddings == 128 &&
           c.rope_theta == 50000 && fabsf(c.rms_norm_eps - 1e-5f) < 1e-12f && c.tie_word_embeddings &&
           c.bos_token_id == 259 && c.n_eos == 1 && c.eos_token_ids[0] == 260,
           "rc %d %s", rc, rc ? rl_errmsg() : "");

    char dir[] = "/tmp/test_gguf_dir_XXXXXX";
    CHECK("mkdtemp", mkdtemp(dir) != NULL);
    struct gguf_import_opts o = {.dtype = ST_F32};
    rc = gguf_import(g, dir, &o);
    CHECKF("import_ok", rc == 0, "%s", rl_errmsg());
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct model_config c2;
    CHECKF("import_config_loads", config_load(path, &c2) == 0 && c2.hidden_size == H && c2.tie_word_embeddings,
           "%s", rl_errmsg());
    struct st_file *st = st_open_dir(dir);
    CHECKF("import_weights_open", st, "%s", rl_errmsg());
    if (st) {
        const struct st_tensor *q = st_find(st, "model.layers.0.self_attn.q_proj.weight");
        const struct st_tensor *k = st_find(st, "model.layers.0.self_attn.k_proj.weight");
        const struct st_tensor *d = st_find(st, "model.layers.0.mlp.down_proj.weight");
        CHECK("import_names", q && k && d && !st_find(st, "lm_head.weight") && st_count(st) == 11);
        if (q && k && d) {
            float qv[NH * HD * H], kvv[NKV * HD * H], dv[H * FF];
            st_tensor_to_f32(q, qv);
            st_tensor_to_f32(k, kvv);
            st_tensor_to_f32(d, dv);
            /* HF row (h, j, i) came from GGUF row h*HD + 2i + j; GGUF q is tensor 2 */
            bool ok = q->shape[0] == NH * HD && q->shape[1] == H;
            for (int h = 0; h < NH; h++)
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < HD / 2; i++)
                        for (int col = 0; col < H; col++)
                            ok = ok && qv[(h * HD + j * HD / 2 + i) * H + col] ==
                                           2 * 10000 + (float)((h * HD + 2 * i + j) * H + col);
            CHECK("import_q_unpermuted", ok);
            ok = kvv[(0 * HD + 1 * HD / 2 + 0) * H + 3] == 3 * 10000 + (float)((0 * HD + 2 * 0 + 1) * H + 3);
            CHECK("import_k_unpermuted", ok);
            CHECK("import_shape_reversed", d->shape[0] == H && d->shape[1] == FF && dv[1 * FF + 2] == 9 * 10000 + 1 * FF + 2);
        }
        st_close(st);
    }
    struct tokenizer *tok = tok_load(dir);
    CHECKF("import_tokenizer_loads", tok, "%s", rl_errmsg());
    if (tok) {
        struct tok_ids ids = {0};
        const char *text = "hello<|im_end|>";
        rc = tok_encode(tok, text, strlen(text), TOK_SPECIAL, &ids);
        CHECKF("import_tokenizer_encodes", rc == 0 && ids.n == 3 && ids.v[0] == 258 && ids.v[1] == 'o' && ids.v[2] == 260,
               "n %zu: %d %d %d", ids.n, ids.n > 0 ? ids.v[0] : -1, ids.n > 1 ? ids.v[1] : -1, ids.n > 2 ? ids.v[2] : -1);
        CHECK("import_special_token", tok_is_special(tok, 259) && tok_is_special(tok, 260) && !tok_is_special(tok, 258));
        free(ids.v);
        tok_free(tok);
    }
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    size_t len = 0;
    char *tc = fs_read_file(path, &len);
    CHECK("tokenizer_config", tc && strstr(tc, "\"chat_template\"") && strstr(tc, "\"eos_token\": \"<|im_end|>\"") &&
          strstr(tc, "\"bos_token\": \"<|im_start|>\""));
    free(tc);
    fs_rm_rf(dir);
    gguf_close(g);

    /* untied: output.weight becomes lm_head */
    tiny_model(&img, "llama", "llama-bpe", WITH_OUTPUT);
    g = gguf_open_mem(img.data, img.len, "tiny.gguf");
    CHECK("untied", g && gguf_import_config(g, &c) == 0 && !c.tie_word_embeddings);
    gguf_close(g);
    /* unsupported architecture and pre-tokenizer: errors by name */
    tiny_model(&img, "falcon", "smollm", OK);
    g = gguf_open_mem(img.data, img.len, "tiny.gguf");
    CHECKF("unsupported_arch", g && gguf_import_config(g, &c) < 0 && strstr(rl_errmsg(), "'falcon'"), "%s", rl_errmsg());
    gguf_close(g);
    tiny_model(&img, "llama", "jais", OK);
    g = gguf_open_mem(img.data, img.len, "tiny.gguf");
    char dir2[] = "/tmp/test_gguf_dir_XXXXXX";
    CHECK("mkdtemp2", mkdtemp(dir2) != NULL);
    CHECKF("unsupported_pre", g && gguf_import(g, dir2, &o) < 0 && strstr(rl_errmsg(), "'jais'"), "%s", rl_errmsg());
    fs_rm_rf(dir2);
    gguf_close(g);

    /* each defect is an error naming the key or tensor */
    struct { enum tiny_flaw flaw; const char *name, *needle; } bad[] = {
        {NO_BLOCK_COUNT, "missing_key_named", "'llama.block_count' is missing"},
        {SPLIT, "split_refused", "split.count"},
        {EXPERTS, "experts_refused", "llama.expert_count"},
        {NO_FFN_UP, "missing_tensor_named", "'blk.0.ffn_up.weight'"},
        {EXTRA_TENSOR, "extra_tensor_named", "'blk.0.attn_sinks'"},
        {BAD_SHAPE, "bad_shape_named", "'blk.0.ffn_down.weight'"},
        {BAD_MERGE, "bad_merge_named", "tokenizer.ggml.merges[1]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tiny_model(&img, "llama", "smollm", bad[i].flaw);
        g = gguf_open_mem(img.data, img.len, "tiny.gguf");
        char d3[] = "/tmp/test_gguf_dir_XXXXXX";
        bool made = mkdtemp(d3) != NULL;
        rc = g && made ? gguf_import(g, d3, &o) : 0;
        CHECKF(bad[i].name, rc < 0 && strstr(rl_errmsg(), bad[i].needle) && strstr(rl_errmsg(), "tiny.gguf"), "%s",
               rc < 0 ? rl_errmsg() : "accepted");
        if (made)
            fs_rm_rf(d3);
        gguf_close(g);
    }
    rl_buf_free(&img);
}

int main(void)
{
    test_half();
    test_dequant();
    test_metadata();
    test_malformed();
    test_permutation();
    test_import();
    return harness_exit();
}
