/* GGUF reader and ggml dequantization (see gguf.h and docs/gguf.md).
 * The file is parsed once with a bounds-checked cursor; nothing after open
 * trusts a length or offset that was not checked against the mapping. */
#include "gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fsutil.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files with memcpy: port it for big-endian hosts"
#endif

#define NAME_MAX_LEN 4096         /* keys and tensor names: ggml's are < 64 */

struct gguf {
    char *what;
    const uint8_t *base;
    size_t size;
    void *map;                    /* non-NULL when we mmap'd */
    uint32_t version;
    size_t alignment;
    size_t n_kv, n_tensors;
    struct gguf_kv *kv;
    struct gguf_tensor *t;
    size_t *kv_sorted, *t_sorted; /* indices sorted by key / name, for lookup */
};

/* ---- type tables (facts of the ggml format) ---- */

struct type_info {
    const char *name;
    uint32_t block, bytes;
};

static const struct type_info *type_info(uint32_t type)
{
    static const struct type_info tab[] = {
        [GGML_F32] = {"F32", 1, 4},        [GGML_F16] = {"F16", 1, 2},
        [GGML_Q4_0] = {"Q4_0", 32, 18},    [GGML_Q4_1] = {"Q4_1", 32, 20},
        [GGML_Q5_0] = {"Q5_0", 32, 22},    [GGML_Q5_1] = {"Q5_1", 32, 24},
        [GGML_Q8_0] = {"Q8_0", 32, 34},    [GGML_Q8_1] = {"Q8_1", 32, 40},
        [GGML_Q2_K] = {"Q2_K", 256, 84},   [GGML_Q3_K] = {"Q3_K", 256, 110},
        [GGML_Q4_K] = {"Q4_K", 256, 144},  [GGML_Q5_K] = {"Q5_K", 256, 176},
        [GGML_Q6_K] = {"Q6_K", 256, 210},  [GGML_Q8_K] = {"Q8_K", 256, 292},
        [GGML_IQ4_NL] = {"IQ4_NL", 32, 18}, [GGML_IQ4_XS] = {"IQ4_XS", 256, 136},
        [GGML_I8] = {"I8", 1, 1},          [GGML_I16] = {"I16", 1, 2},
        [GGML_I32] = {"I32", 1, 4},        [GGML_I64] = {"I64", 1, 8},
        [GGML_F64] = {"F64", 1, 8},        [GGML_BF16] = {"BF16", 1, 2},
    };
    if (type >= sizeof tab / sizeof *tab || !tab[type].name)
        return NULL;
    return &tab[type];
}

const char *ggml_type_name(uint32_t type)
{
    /* Types ggml has that this reader cannot size: named for the message. */
    static const char *other[] = {
        [4] = "Q4_2 (removed)", [5] = "Q4_3 (removed)", [16] = "IQ2_XXS", [17] = "IQ2_XS",
        [18] = "IQ3_XXS", [19] = "IQ1_S", [21] = "IQ3_S", [22] = "IQ2_S", [29] = "IQ1_M",
        [31] = "Q4_0_4_4 (removed)", [32] = "Q4_0_4_8 (removed)", [33] = "Q4_0_8_8 (removed)",
        [34] = "TQ1_0", [35] = "TQ2_0", [39] = "MXFP4",
    };
    static __thread char buf[32];
    const struct type_info *ti = type_info(type);
    if (ti)
        return ti->name;
    if (type < sizeof other / sizeof *other && other[type])
        return other[type];
    snprintf(buf, sizeof buf, "unknown type %" PRIu32, type);
    return buf;
}

int ggml_type_block(uint32_t type, size_t *block_elems, size_t *block_bytes)
{
    const struct type_info *ti = type_info(type);
    *block_elems = ti ? ti->block : 0;
    *block_bytes = ti ? ti->bytes : 0;
    return ti ? 0 : -1;
}

bool ggml_type_supported(uint32_t type)
{
    switch (type) {
    case GGML_F32: case GGML_F16: case GGML_BF16: case GGML_Q8_0: case GGML_Q4_0:
    case GGML_Q4_1: case GGML_Q5_0: case GGML_Q5_1: case GGML_Q2_K: case GGML_Q3_K:
    case GGML_Q4_K: case GGML_Q5_K: case GGML_Q6_K: case GGML_IQ4_NL: case GGML_IQ4_XS:
        return true;
    default:
        return false;
    }
}

const char *gguf_vtype_name(uint32_t t)
{
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof *names ? names[t] : "unknown";
}

static size_t vtype_size(uint32_t t)   /* fixed-size scalars; 0 for string/array/unknown */
{
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz / sizeof *sz ? sz[t] : 0;
}

/* ---- the bounds-checked cursor ---- */

struct cur {
    const uint8_t *p, *base, *end;
    const char *what;
};

static size_t cur_off(const struct cur *c) { return (size_t)(c->p - c->base); }
static uint64_t cur_left(const struct cur *c) { return (uint64_t)(c->end - c->p); }

static int need(struct cur *c, uint64_t n, const char *ctx, const char *name)
{
    if (cur_left(c) < n)
        return rl_err("%s: truncated: %s%s%s needs %" PRIu64 " bytes at offset %zu, %" PRIu64 " left",
                      c->what, ctx, name ? " " : "", name ? name : "", n, cur_off(c), cur_left(c));
    return 0;
}

static int rd(struct cur *c, void *out, size_t n, const char *ctx, const char *name)
{
    if (need(c, n, ctx, name))
        return -1;
    memcpy(out, c->p, n);
    c->p += n;
    return 0;
}

static int rd_u32(struct cur *c, uint32_t *v, const char *ctx, const char *name) { return rd(c, v, 4, ctx, name); }
static int rd_u64(struct cur *c, uint64_t *v, const char *ctx, const char *name) { return rd(c, v, 8, ctx, name); }

static int rd_str(struct cur *c, struct gguf_str *s, const char *ctx, const char *name)
{
    if (rd_u64(c, &s->n, ctx, name) || need(c, s->n, ctx, name))
        return -1;
    s->p = (const char *)c->p;
    c->p += s->n;
    return 0;
}

/* A key or tensor name: bounded, no NUL inside, copied with a terminator. */
static char *rd_name(struct cur *c, const char *ctx, size_t idx)
{
    char label[64];
    snprintf(label, sizeof label, "#%zu", idx);
    struct gguf_str s;
    if (rd_str(c, &s, ctx, label))
        return NULL;
    if (s.n > NAME_MAX_LEN) {
        rl_err("%s: %s %s: length %" PRIu64 " is absurd (at most %d)", c->what, ctx, label, s.n, NAME_MAX_LEN);
        return NULL;
    }
    if (memchr(s.p, 0, s.n)) {
        rl_err("%s: %s %s contains a NUL byte", c->what, ctx, label);
        return NULL;
    }
    char *r = rl_malloc(s.n + 1);
    memcpy(r, s.p, s.n);
    r[s.n] = 0;
    return r;
}

/* ---- metadata ---- */

static int read_value(struct cur *c, struct gguf_kv *kv)
{
    uint32_t t;
    if (rd_u32(c, &t, "value type of key", kv->key))
        return -1;
    if (t > GGUF_F64)
        return rl_err("%s: key '%s': unknown value type %" PRIu32, c->what, kv->key, t);
    kv->type = t;
    kv->n = 1;
    uint32_t et = t;
    if (t == GGUF_ARRAY) {
        if (rd_u32(c, &et, "array type of key", kv->key) || rd_u64(c, &kv->n, "array length of key", kv->key))
            return -1;
        if (et > GGUF_F64)
            return rl_err("%s: key '%s': array of unknown type %" PRIu32, c->what, kv->key, et);
        if (et == GGUF_ARRAY)
            return rl_err("%s: key '%s': nested arrays are not supported", c->what, kv->key);
        kv->arr_type = et;
    }
    kv->data = c->p;
    if (et != GGUF_STRING) {
        size_t sz = vtype_size(et);
        if (kv->n > cur_left(c) / sz)
            return rl_err("%s: key '%s': array of %" PRIu64 " %s does not fit in the %" PRIu64
                          " bytes left at offset %zu", c->what, kv->key, kv->n, gguf_vtype_name(et),
                          cur_left(c), cur_off(c));
        c->p += kv->n * sz;
        return 0;
    }
    /* strings: each needs at least its 8-byte length */
    if (kv->n > cur_left(c) / 8)
        return rl_err("%s: key '%s': %" PRIu64 " strings cannot fit in the %" PRIu64 " bytes left",
                      c->what, kv->key, kv->n, cur_left(c));
    kv->strs = rl_malloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->strs);
    for (uint64_t i = 0; i < kv->n; i++) {
        if (rd_str(c, &kv->strs[i], "string value of key", kv->key))
            return rl_err_prefix("element %" PRIu64, i);
    }
    return 0;
}

/* qsort has no context argument: the gguf being sorted, per thread */
static __thread const struct gguf *sort_g;

static int cmp_kv_idx(const void *a, const void *b)
{
    return strcmp(sort_g->kv[*(const size_t *)a].key, sort_g->kv[*(const size_t *)b].key);
}
static int cmp_t_idx(const void *a, const void *b)
{
    return strcmp(sort_g->t[*(const size_t *)a].name, sort_g->t[*(const size_t *)b].name);
}

static size_t *sorted_index(const struct gguf *g, size_t n, int (*cmp)(const void *, const void *))
{
    size_t *idx = rl_malloc((n ? n : 1) * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    sort_g = g;
    qsort(idx, n, sizeof *idx, cmp);
    return idx;
}

static int read_kvs(struct gguf *g, struct cur *c)
{
    g->kv = rl_calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    for (size_t i = 0; i < g->n_kv; i++) {
        struct gguf_kv *kv = &g->kv[i];
        if (!(kv->key = rd_name(c, "key", i)) || read_value(c, kv))
            return -1;
    }
    g->kv_sorted = sorted_index(g, g->n_kv, cmp_kv_idx);
    for (size_t i = 1; i < g->n_kv; i++)
        if (!strcmp(g->kv[g->kv_sorted[i]].key, g->kv[g->kv_sorted[i - 1]].key))
            return rl_err("%s: key '%s' appears twice", g->what, g->kv[g->kv_sorted[i]].key);
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct gguf_kv *al = gguf_find_kv(g, "general.alignment");
    if (al) {
        uint32_t a;
        if (al->type != GGUF_U32)
            return rl_err("%s: general.alignment: must be u32, not %s", g->what, gguf_vtype_name(al->type));
        memcpy(&a, al->data, 4);
        if (a == 0 || (a & (a - 1)) || a > (1u << 20))
            return rl_err("%s: general.alignment: %" PRIu32 " is not a power of two <= 2^20", g->what, a);
        g->alignment = a;
    }
    return 0;
}

/* ---- tensor infos ---- */

static int read_tensor_info(struct gguf *g, struct cur *c, size_t i)
{
    struct gguf_tensor *t = &g->t[i];
    if (!(t->name = rd_name(c, "tensor name", i)))
        return -1;
    uint32_t nd;
    if (rd_u32(c, &nd, "n_dims of tensor", t->name))
        return -1;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return rl_err("%s: tensor '%s': %" PRIu32 " dimensions (1 to %d allowed)", g->what, t->name, nd, GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    t->numel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t ne;
        if (rd_u64(c, &ne, "dims of tensor", t->name))
            return -1;
        if (ne > (uint64_t)INT64_MAX || (ne && (uint64_t)t->numel > (uint64_t)INT64_MAX / 2 / ne))
            return rl_err("%s: tensor '%s': dimension %d = %" PRIu64 " is absurd", g->what, t->name, d, ne);
        t->ne[d] = (int64_t)ne;
        t->numel *= (int64_t)ne;
    }
    if (rd_u32(c, &t->type, "type of tensor", t->name) || rd_u64(c, &t->offset, "offset of tensor", t->name))
        return -1;
    size_t be, bb;
    if (ggml_type_block(t->type, &be, &bb))
        return rl_err("%s: tensor '%s': ggml type %s is not supported", g->what, t->name, ggml_type_name(t->type));
    if (t->ne[0] % (int64_t)be)
        return rl_err("%s: tensor '%s': first dimension %" PRId64 " is not a multiple of %s's block size %zu",
                      g->what, t->name, t->ne[0], ggml_type_name(t->type), be);
    /* numel < 2^62, so numel / be * bb cannot overflow for bb <= 292 after the division */
    uint64_t nblocks = (uint64_t)t->numel / be;
    if (nblocks > UINT64_MAX / 512)
        return rl_err("%s: tensor '%s': too large", g->what, t->name);
    t->nbytes = (size_t)(nblocks * bb);
    if (t->offset % g->alignment)
        return rl_err("%s: tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %zu",
                      g->what, t->name, t->offset, g->alignment);
    return 0;
}

static int cmp_off(const void *a, const void *b)
{
    const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a, *y = *(const struct gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Place every tensor in the data section: inside the file, no two overlapping. */
static int place_tensors(struct gguf *g, size_t data_start)
{
    if (g->n_tensors && data_start > g->size)
        return rl_err("%s: truncated: the data section would start at offset %zu, past the end (%zu bytes)",
                      g->what, data_start, g->size);
    uint64_t data_size = g->size > data_start ? g->size - data_start : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->t[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return rl_err("%s: tensor '%s': data [%" PRIu64 ", +%zu) lies outside the file's data section "
                          "(%" PRIu64 " bytes from offset %zu)", g->what, t->name, t->offset, t->nbytes,
                          data_size, data_start);
        t->data = g->base + data_start + t->offset;
    }
    const struct gguf_tensor **by = rl_malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *by);
    for (size_t i = 0; i < g->n_tensors; i++)
        by[i] = &g->t[i];
    qsort(by, g->n_tensors, sizeof *by, cmp_off);
    int rc = 0;
    for (size_t i = 1; i < g->n_tensors && !rc; i++)
        if (by[i - 1]->offset + by[i - 1]->nbytes > by[i]->offset)
            rc = rl_err("%s: tensors '%s' and '%s' overlap in the data section", g->what, by[i - 1]->name, by[i]->name);
    free(by);
    return rc;
}

static int read_tensors(struct gguf *g, struct cur *c)
{
    g->t = rl_calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->t);
    for (size_t i = 0; i < g->n_tensors; i++)
        if (read_tensor_info(g, c, i))
            return -1;
    g->t_sorted = sorted_index(g, g->n_tensors, cmp_t_idx);
    for (size_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->t[g->t_sorted[i]].name, g->t[g->t_sorted[i - 1]].name))
            return rl_err("%s: tensor '%s' appears twice", g->what, g->t[g->t_sorted[i]].name);
    size_t end = cur_off(c);
    size_t data_start = (end + g->alignment - 1) / g->alignment * g->alignment;
    return place_tensors(g, data_start);
}

/* ---- open ---- */

static int parse(struct gguf *g)
{
    struct cur c = {g->base, g->base, g->base + g->size, g->what};
    char magic[4];
    if (g->size < 4)
        return rl_err("%s: not a GGUF file: %zu bytes, too short for the magic", g->what, g->size);
    memcpy(magic, g->base, 4);
    if (memcmp(magic, "GGUF", 4))
        return rl_err("%s: not a GGUF file: magic %02x %02x %02x %02x, expected \"GGUF\"", g->what,
                      (unsigned char)magic[0], (unsigned char)magic[1], (unsigned char)magic[2],
                      (unsigned char)magic[3]);
    c.p += 4;
    uint64_t nt, nkv;
    if (rd_u32(&c, &g->version, "header", "version"))
        return -1;
    if (g->version != 2 && g->version != 3) {
        uint32_t v = g->version, sw = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
        if (sw == 2 || sw == 3)
            return rl_err("%s: big-endian GGUF (version %" PRIu32 ") is not supported", g->what, sw);
        return rl_err("%s: GGUF version %" PRIu32 " is not supported (2 and 3 are)", g->what, v);
    }
    if (rd_u64(&c, &nt, "header", "tensor count") || rd_u64(&c, &nkv, "header", "metadata count"))
        return -1;
    /* smallest metadata entry: 8 (key length) + 4 (type) + 1; smallest tensor info: 8 + 4 + 8 + 4 + 8 */
    if (nkv > cur_left(&c) / 13)
        return rl_err("%s: metadata count %" PRIu64 " is absurd for a %zu-byte file", g->what, nkv, g->size);
    if (nt > cur_left(&c) / 32)
        return rl_err("%s: tensor count %" PRIu64 " is absurd for a %zu-byte file", g->what, nt, g->size);
    g->n_kv = (size_t)nkv;
    g->n_tensors = (size_t)nt;
    return read_kvs(g, &c) || read_tensors(g, &c) ? -1 : 0;
}

struct gguf *gguf_open_mem(const void *p, size_t n, const char *what)
{
    struct gguf *g = rl_calloc(1, sizeof *g);
    g->what = rl_strdup(what ? what : "gguf");
    g->base = p;
    g->size = n;
    if (parse(g)) {
        gguf_close(g);
        return NULL;
    }
    return g;
}

struct gguf *gguf_open(const char *path)
{
    void *map;
    size_t size;
    if (fs_map_file(path, &map, &size))
        return NULL;
    struct gguf *g = gguf_open_mem(map ? map : "", size, path);
    if (!g) {
        if (map)
            munmap(map, size);
        return NULL;
    }
    g->map = map;
    return g;
}

void gguf_close(struct gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].strs);
    }
    for (size_t i = 0; g->t && i < g->n_tensors; i++)
        free(g->t[i].name);
    free(g->kv);
    free(g->t);
    free(g->kv_sorted);
    free(g->t_sorted);
    if (g->map)
        munmap(g->map, g->size);
    free(g->what);
    free(g);
}

/* ---- access ---- */

uint32_t gguf_version(const struct gguf *g) { return g->version; }
const char *gguf_name(const struct gguf *g) { return g->what; }
size_t gguf_alignment(const struct gguf *g) { return g->alignment; }
size_t gguf_n_kv(const struct gguf *g) { return g->n_kv; }
const struct gguf_kv *gguf_kv_at(const struct gguf *g, size_t i) { return i < g->n_kv ? &g->kv[i] : NULL; }
size_t gguf_n_tensors(const struct gguf *g) { return g->n_tensors; }
const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, size_t i) { return i < g->n_tensors ? &g->t[i] : NULL; }

const struct gguf_kv *gguf_find_kv(const struct gguf *g, const char *key)
{
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(g->kv[g->kv_sorted[mid]].key, key);
        if (!c)
            return &g->kv[g->kv_sorted[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name)
{
    size_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(g->t[g->t_sorted[mid]].name, name);
        if (!c)
            return &g->t[g->t_sorted[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static bool is_int_type(uint32_t t)
{
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 ||
           t == GGUF_I32 || t == GGUF_U64 || t == GGUF_I64 || t == GGUF_BOOL;
}

/* Scalar integer at p of type t; *ok false when a u64 exceeds int64. */
static int64_t load_int(uint32_t t, const uint8_t *p, bool *ok)
{
    *ok = true;
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: return p[0];
    case GGUF_I8: return (int8_t)p[0];
    case GGUF_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case GGUF_U64: { uint64_t v; memcpy(&v, p, 8); *ok = v <= (uint64_t)INT64_MAX; return (int64_t)v; }
    default: *ok = false; return 0;
    }
}

int64_t gguf_arr_int(const struct gguf_kv *kv, uint64_t i)
{
    bool ok;
    int64_t v = load_int(kv->arr_type, kv->data + i * vtype_size(kv->arr_type), &ok);
    return ok ? v : INT64_MAX;
}

static int wrong_type(const struct gguf *g, const struct gguf_kv *kv, const char *want)
{
    if (kv->type == GGUF_ARRAY)
        return rl_err("%s: key '%s': expected %s, found an array of %s", g->what, kv->key, want,
                      gguf_vtype_name(kv->arr_type));
    return rl_err("%s: key '%s': expected %s, found %s", g->what, kv->key, want, gguf_vtype_name(kv->type));
}

int gguf_get_int(const struct gguf *g, const char *key, int64_t *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return 1;
    bool ok;
    if (!is_int_type(kv->type))
        return wrong_type(g, kv, "an integer");
    int64_t v = load_int(kv->type, kv->data, &ok);
    if (!ok)
        return rl_err("%s: key '%s': value out of range", g->what, key);
    *out = v;
    return 0;
}

int gguf_get_float(const struct gguf *g, const char *key, double *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return 1;
    if (kv->type == GGUF_F32) {
        float f;
        memcpy(&f, kv->data, 4);
        *out = f;
    } else if (kv->type == GGUF_F64) {
        memcpy(out, kv->data, 8);
    } else if (is_int_type(kv->type) && kv->type != GGUF_BOOL) {
        bool ok;
        *out = (double)load_int(kv->type, kv->data, &ok);
    } else {
        return wrong_type(g, kv, "a number");
    }
    return 0;
}

int gguf_get_bool(const struct gguf *g, const char *key, bool *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_BOOL)
        return wrong_type(g, kv, "a bool");
    *out = kv->data[0] != 0;
    return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_STRING)
        return wrong_type(g, kv, "a string");
    *out = kv->strs[0];
    return 0;
}

const struct gguf_kv *gguf_get_arr(const struct gguf *g, const char *key, enum gguf_vtype elem)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv) {
        rl_err("%s: key '%s' is missing", g->what, key);
        return NULL;
    }
    bool ok = kv->type == GGUF_ARRAY &&
              (elem == GGUF_I64 ? is_int_type(kv->arr_type) && kv->arr_type != GGUF_BOOL : kv->arr_type == elem);
    if (!ok) {
        char want[48];
        snprintf(want, sizeof want, "an array of %s", elem == GGUF_I64 ? "integers" : gguf_vtype_name(elem));
        wrong_type(g, kv, want);
        return NULL;
    }
    return kv;
}

/* ---- dequantization ----
 * Block layouts (ggml): d and m are fp16 scales; quants are packed low nibble
 * first. Q4_0/Q4_1/Q5_x/Q8_0 blocks hold 32 values; the first 16 come from the
 * low nibbles, the last 16 from the high nibbles. K-quants hold 256 values in
 * sub-blocks with 6-bit (Q4_K, Q5_K) or 8-bit (Q6_K) sub-block scales. */

float ggml_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {                           /* zero or subnormal: man * 2^-24 */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (man << 13);
    else
        bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float ggml_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float f16_at(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return ggml_f16_to_f32(h);
}

static void deq_q4_0(const uint8_t *b, float *y)
{
    float d = f16_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0xf) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(const uint8_t *b, float *y)
{
    float d = f16_at(b), m = f16_at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0xf) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

/* Q5: the fifth bit of value j comes from bit j of the 32-bit qh. */
static void deq_q5(const uint8_t *qh4, const uint8_t *qs, float d, float m, int offset, float *y)
{
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0xf) | (int)(((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = (float)(lo - offset) * d + m;
        y[j + 16] = (float)(hi - offset) * d + m;
    }
}
static void deq_q5_0(const uint8_t *b, float *y) { deq_q5(b + 2, b + 6, f16_at(b), 0, 16, y); }
static void deq_q5_1(const uint8_t *b, float *y) { deq_q5(b + 4, b + 8, f16_at(b), f16_at(b + 2), 0, y); }

static void deq_q8_0(const uint8_t *b, float *y)
{
    float d = f16_at(b);
    for (int j = 0; j < 32; j++)
        y[j] = (float)(int8_t)b[2 + j] * d;
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min
 * packed into 12 bytes: sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales)
 * and 4-7 (mins); sub-blocks 4-7 take their low 4 bits from bytes 8-11 and
 * their top 2 bits from the spare top bits of bytes 0-3 / 4-7. */
static void k_scale_min(const uint8_t *s, int j, float *sc, float *mn)
{
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *mn = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
        *mn = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

static void deq_q4_k(const uint8_t *b, float *y)
{
    float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0; j < 8; j += 2, q += 32, y += 64) {   /* 32 bytes = two sub-blocks */
        float s0, m0, s1, m1;
        k_scale_min(scales, j, &s0, &m0);
        k_scale_min(scales, j + 1, &s1, &m1);
        for (int l = 0; l < 32; l++) {
            y[l] = d * s0 * (float)(q[l] & 0xf) - dmin * m0;
            y[l + 32] = d * s1 * (float)(q[l] >> 4) - dmin * m1;
        }
    }
}

static void deq_q5_k(const uint8_t *b, float *y)
{
    float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *q = b + 48;
    for (int j = 0; j < 8; j += 2, q += 32, y += 64) {
        float s0, m0, s1, m1;
        k_scale_min(scales, j, &s0, &m0);
        k_scale_min(scales, j + 1, &s1, &m1);
        for (int l = 0; l < 32; l++) {          /* sub-block j's fifth bit is bit j of qh[l] */
            int lo = (q[l] & 0xf) | (((qh[l] >> j) & 1) << 4);
            int hi = (q[l] >> 4) | (((qh[l] >> (j + 1)) & 1) << 4);
            y[l] = d * s0 * (float)lo - dmin * m0;
            y[l + 32] = d * s1 * (float)hi - dmin * m1;
        }
    }
}

/* Q6_K: two halves of 128; in each, value l + 32k (k = 0..3) takes 4 low bits
 * from ql (bytes l or l+32, low or high nibble) and 2 high bits from qh[l]
 * (bits 2k..2k+1); 16 signed 8-bit scales, one per 16 values. */
static void deq_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

/* Q2_K: 16 sub-blocks of 16, each with a 4-bit scale (low nibble) and 4-bit
 * min (high nibble); 2-bit quants, four per byte: in each half of 128, byte l
 * of the 32 holds values l, l+32, l+64, l+96 (shifts 0, 2, 4, 6). */
static void deq_q2_k(const uint8_t *b, float *y)
{
    const uint8_t *sc = b, *q = b + 16;
    float d = f16_at(b + 80), dmin = f16_at(b + 82);
    for (int half = 0; half < 2; half++, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int k = 0; k < 2; k++, sc++, y += 16)     /* bytes 0-15, then 16-31 */
                for (int l = 0; l < 16; l++)
                    y[l] = d * (float)(*sc & 0xf) * (float)((q[16 * k + l] >> shift) & 3) - dmin * (float)(*sc >> 4);
}

/* Q3_K: 2-bit quants laid out as Q2_K, a third bit from hmask (bit m of
 * hmask[l] for the m-th group of 32; a clear bit subtracts 4), and 16 6-bit
 * scales (offset 32) packed in 12 bytes: low 4 bits in bytes 0-7 (low then
 * high nibbles), high 2 bits in bytes 8-11. */
static void deq_q3_k(const uint8_t *b, float *y)
{
    const uint8_t *hm = b, *q = b + 32, *ps = b + 96;
    float d = f16_at(b + 108);
    int sc[16];
    for (int i = 0; i < 16; i++) {
        int low = i < 8 ? ps[i] & 0xf : ps[i - 8] >> 4;
        int high = (ps[8 + i % 4] >> (2 * (i / 4))) & 3;
        sc[i] = (low | high << 4) - 32;
    }
    int is = 0, bit = 0;
    for (int half = 0; half < 2; half++, q += 32)
        for (int shift = 0; shift < 8; shift += 2, bit++)
            for (int k = 0; k < 2; k++, is++, y += 16)
                for (int l = 0; l < 16; l++) {
                    int v = (q[16 * k + l] >> shift) & 3;
                    if (!(hm[16 * k + l] >> bit & 1))
                        v -= 4;
                    y[l] = d * (float)sc[is] * (float)v;
                }
}

/* IQ4_NL / IQ4_XS: 4-bit indices into a fixed non-linear table. */
static const int8_t iq4_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void deq_iq4_32(const uint8_t *qs, float d, float *y)
{
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)iq4_values[qs[j] & 0xf];
        y[j + 16] = d * (float)iq4_values[qs[j] >> 4];
    }
}

static void deq_iq4_nl(const uint8_t *b, float *y) { deq_iq4_32(b + 2, f16_at(b), y); }

/* IQ4_XS: 8 sub-blocks of 32 with 6-bit scales (offset 32): low 4 bits in
 * scales_l (4 bytes, two per byte), high 2 bits in the u16 scales_h. */
static void deq_iq4_xs(const uint8_t *b, float *y)
{
    float d = f16_at(b);
    unsigned sh = (unsigned)b[2] | (unsigned)b[3] << 8;
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int ib = 0; ib < 8; ib++, qs += 16, y += 32) {
        int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xf) | (int)((sh >> (2 * ib)) & 3) << 4;
        deq_iq4_32(qs, d * (float)(ls - 32), y);
    }
}

int ggml_dequantize(uint32_t type, const void *src, float *dst, int64_t n)
{
    const uint8_t *s = src;
    void (*block)(const uint8_t *, float *) = NULL;
    switch (type) {
    case GGML_F32:
        memcpy(dst, s, (size_t)n * 4);
        return 0;
    case GGML_F16:
    case GGML_BF16:
#pragma omp parallel for schedule(static) if (n > (1 << 16))
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = type == GGML_F16 ? ggml_f16_to_f32(h) : ggml_bf16_to_f32(h);
        }
        return 0;
    case GGML_Q4_0: block = deq_q4_0; break;
    case GGML_Q4_1: block = deq_q4_1; break;
    case GGML_Q5_0: block = deq_q5_0; break;
    case GGML_Q5_1: block = deq_q5_1; break;
    case GGML_Q8_0: block = deq_q8_0; break;
    case GGML_Q4_K: block = deq_q4_k; break;
    case GGML_Q5_K: block = deq_q5_k; break;
    case GGML_Q6_K: block = deq_q6_k; break;
    case GGML_Q2_K: block = deq_q2_k; break;
    case GGML_Q3_K: block = deq_q3_k; break;
    case GGML_IQ4_NL: block = deq_iq4_nl; break;
    case GGML_IQ4_XS: block = deq_iq4_xs; break;
    default:
        return rl_err("dequantizing %s is not supported (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 "
                      "Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS)", ggml_type_name(type));
    }
    const struct type_info *ti = type_info(type);
    int64_t nb = n / ti->block;
#pragma omp parallel for schedule(static) if (nb > 4096)
    for (int64_t i = 0; i < nb; i++)
        block(s + (size_t)i * ti->bytes, dst + i * ti->block);
    return 0;
}

int gguf_tensor_to_f32(const struct gguf_tensor *t, float *dst)
{
    if (ggml_dequantize(t->type, t->data, dst, t->numel))
        return rl_err_prefix("tensor '%s'", t->name);
    return 0;
}
