/* safetensors: validated reading (mmap) and atomic writing.
 * The header is trusted for nothing: every length, offset and shape is checked
 * against the file before any tensor is handed out (see docs/checkpoints.md). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fsutil.h"

/* The reference implementation's limit; a larger header is a broken or hostile file. */
#define ST_MAX_HEADER (100u << 20)

struct st_entry {
    struct st_tensor t;
    int shard;               /* which mapping holds it */
};

struct st_map {
    void *base;
    size_t len;
    bool mapped;             /* munmap on close (false for st_open_mem) */
    char *name;              /* shard file name, for weight_map checks and errors */
};

struct st_file {
    struct st_entry *e;      /* sorted by name once complete */
    size_t n, cap;
    struct st_map *maps;
    size_t nmaps;
    char *path;              /* the file or directory opened, for errors */
};

/* ---- dtypes ---- */

static const struct { const char *name; enum st_dtype t; size_t size; } dtypes[] = {
    {"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2},
};

const char *st_dtype_name(enum st_dtype t)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (dtypes[i].t == t)
            return dtypes[i].name;
    return "?";
}

size_t st_dtype_size(enum st_dtype t)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (dtypes[i].t == t)
            return dtypes[i].size;
    return 0;
}

int st_dtype_parse(const char *s, enum st_dtype *t)
{
    static const struct { const char *name; enum st_dtype t; } alias[] = {
        {"F32", ST_F32}, {"f32", ST_F32}, {"float32", ST_F32}, {"fp32", ST_F32},
        {"F16", ST_F16}, {"f16", ST_F16}, {"float16", ST_F16}, {"fp16", ST_F16},
        {"BF16", ST_BF16}, {"bf16", ST_BF16}, {"bfloat16", ST_BF16},
    };
    for (size_t i = 0; i < sizeof alias / sizeof *alias; i++)
        if (strcmp(s, alias[i].name) == 0) {
            *t = alias[i].t;
            return 0;
        }
    return -1;
}

/* ---- fp16 / bf16 ---- */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float st_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t st_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffff) > 0x7f800000)                 /* NaN: keep it quiet and signed */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);                     /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {                                      /* zero or subnormal: m * 2^-24 */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)                                       /* inf / NaN */
        return u2f(sign | 0x7f800000 | (m << 13));
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t st_f32_to_f16(float f)
{
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;
    if (a > 0x7f800000)                                /* NaN */
        return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    if (a >= 0x477ff000)                               /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00);
    if (a < 0x38800000) {                              /* below 2^-14: subnormal result */
        if (a <= 0x33000000)                           /* <= 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;                      /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (a >> 13) - (112u << 10), rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++;                                           /* may carry into the exponent: correct */
    return (uint16_t)(sign | r);
}

void st_tensor_to_f32(const struct st_tensor *t, float *out)
{
    const unsigned char *p = t->data;
    int64_t n = t->numel;
    if (t->dtype == ST_F32) {
        if (n > 0)
            memcpy(out, p, (size_t)n * 4);
        return;
    }
    /* Separate loops so the bf16 one (a shift) vectorizes. */
    if (t->dtype == ST_BF16) {
#pragma omp parallel for schedule(static) if (n > (1 << 20))
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = st_bf16_to_f32(h);
        }
    } else {
#pragma omp parallel for schedule(static) if (n > (1 << 20))
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = st_f16_to_f32(h);
        }
    }
}

/* ---- reading ---- */

static void shape_str(char *buf, size_t sz, int ndim, const int64_t *shape)
{
    size_t k = 0;
    k += snprintf(buf + k, sz - k, "[");
    for (int i = 0; i < ndim && k < sz; i++)
        k += snprintf(buf + k, sz - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < sz)
        snprintf(buf + k, sz - k, "]");
}

static int get_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* One header entry -> st_tensor with data pointing into `data` (dlen bytes). */
static int parse_tensor(const char *what, const char *name, json_t *v, const unsigned char *data,
                        size_t dlen, struct st_tensor *t)
{
    if (!json_is_object(v))
        return rl_err("%s: tensor '%s': header entry is not an object", what, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return rl_err("%s: tensor '%s': missing or non-string dtype", what, name);
    size_t i;
    for (i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (strcmp(json_string_value(dt), dtypes[i].name) == 0)
            break;
    if (i == sizeof dtypes / sizeof *dtypes)
        return rl_err("%s: tensor '%s': dtype %.32s not supported (rlflow reads F32, F16, BF16)",
                      what, name, json_string_value(dt));
    t->dtype = dtypes[i].t;
    size_t esize = dtypes[i].size;

    if (!json_is_array(sh))
        return rl_err("%s: tensor '%s': missing or non-array shape", what, name);
    if (json_array_size(sh) > ST_MAX_DIMS)
        return rl_err("%s: tensor '%s': %zu dimensions (at most %d)", what, name,
                      json_array_size(sh), ST_MAX_DIMS);
    t->ndim = (int)json_array_size(sh);
    t->numel = 1;
    bool overflow = false;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t x;
        if (get_u64(json_array_get(sh, d), &x) < 0)
            return rl_err("%s: tensor '%s': shape[%d] is not a non-negative integer", what, name, d);
        t->shape[d] = (int64_t)x;
        /* Cap the running product: any tensor bigger than the file fails the size check anyway. */
        if (x != 0 && (uint64_t)t->numel > (UINT64_C(1) << 62) / x)
            overflow = true;
        else
            t->numel *= (int64_t)x;
    }
    char shs[160];
    shape_str(shs, sizeof shs, t->ndim, t->shape);

    uint64_t b, e;
    if (!json_is_array(off) || json_array_size(off) != 2 || get_u64(json_array_get(off, 0), &b) < 0 ||
        get_u64(json_array_get(off, 1), &e) < 0)
        return rl_err("%s: tensor '%s': data_offsets must be [begin, end] with non-negative integers",
                      what, name);
    if (e < b)
        return rl_err("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                      what, name, b, e);
    if (e > dlen)
        return rl_err("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] lie outside the file "
                      "(data section is %zu bytes; truncated?)", what, name, b, e, dlen);
    if (overflow || (uint64_t)t->numel * esize != e - b)
        return rl_err("%s: tensor '%s': size mismatch: shape %s of %s needs %s%" PRIu64
                      " bytes but data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64,
                      what, name, shs, dtypes[i].name, overflow ? "more than " : "",
                      overflow ? (uint64_t)1 << 62 : (uint64_t)t->numel * esize, b, e, e - b);
    t->data = data + b;
    t->nbytes = (size_t)(e - b);
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const struct st_tensor *x = *(struct st_tensor *const *)a, *y = *(struct st_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    if (px != py)
        return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Offsets must tile the data section exactly: sorted by begin, each tensor
 * starts where the previous ended and the last ends at the end of the file. */
static int check_layout(const char *what, struct st_entry *e, size_t n, const unsigned char *data,
                        size_t dlen)
{
    struct st_tensor **by = rl_malloc((n ? n : 1) * sizeof *by);
    for (size_t i = 0; i < n; i++)
        by[i] = &e[i].t;
    qsort(by, n, sizeof *by, cmp_offset);
    size_t expect = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t b = (size_t)((const unsigned char *)by[i]->data - data);
        if (b < expect)
            rc = rl_err("%s: tensors '%s' and '%s' overlap (bytes [%zu, %zu) and [%zu, %zu))", what,
                        by[i - 1]->name, by[i]->name, expect - by[i - 1]->nbytes, expect, b,
                        b + by[i]->nbytes);
        else if (b > expect)
            rc = rl_err("%s: tensor '%s': data_offsets not contiguous: %zu unused bytes before it",
                        what, by[i]->name, b - expect);
        else
            expect = b + by[i]->nbytes;
    }
    if (rc == 0 && expect != dlen)
        rc = rl_err("%s: %zu bytes after the last tensor%s%s%s (data section %zu bytes)", what,
                    dlen - expect, n ? " '" : "", n ? by[n - 1]->name : "", n ? "'" : "", dlen);
    free(by);
    return rc;
}

/* Parse one file image into f as shard `shard`; the image is f->maps[shard]. */
static int parse_image(struct st_file *f, int shard, const char *what)
{
    const unsigned char *base = f->maps[shard].base;
    size_t len = f->maps[shard].len;
    if (len < 8)
        return rl_err("%s: truncated: %zu bytes, less than the 8-byte header length", what, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | base[i];
    if (hlen > ST_MAX_HEADER)
        return rl_err("%s: header length %" PRIu64 " exceeds the %u-byte limit (corrupt file?)", what,
                      hlen, ST_MAX_HEADER);
    if (hlen > len - 8)
        return rl_err("%s: header length %" PRIu64 " exceeds the file size (%zu bytes; truncated?)",
                      what, hlen, len);
    if (hlen < 2 || base[8] != '{')
        return rl_err("%s: header is not a JSON object", what);
    json_error_t je;
    json_t *h = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!h)
        return rl_err("%s: header is not valid JSON: %s (at byte %d)", what, je.text, je.position);
    if (!json_is_object(h)) {
        json_decref(h);
        return rl_err("%s: header is not a JSON object", what);
    }
    const unsigned char *data = base + 8 + hlen;
    size_t dlen = len - 8 - (size_t)hlen;
    size_t first = f->n;
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(h, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                rc = rl_err("%s: __metadata__ is not an object", what);
                break;
            }
            continue;
        }
        if (!*key) {
            rc = rl_err("%s: a tensor has an empty name", what);
            break;
        }
        struct st_tensor t = {0};
        if ((rc = parse_tensor(what, key, v, data, dlen, &t)) < 0)
            break;
        t.name = rl_strdup(key);
        if (f->n == f->cap)
            f->e = rl_realloc(f->e, (f->cap = f->cap ? 2 * f->cap : 64) * sizeof *f->e);
        f->e[f->n++] = (struct st_entry){t, shard};
    }
    json_decref(h);
    if (rc == 0)
        rc = check_layout(what, f->e + first, f->n - first, data, dlen);
    return rc;
}

static int add_map(struct st_file *f, void *base, size_t len, bool mapped, const char *name)
{
    f->maps = rl_realloc(f->maps, (f->nmaps + 1) * sizeof *f->maps);
    f->maps[f->nmaps] = (struct st_map){base, len, mapped, rl_strdup(name)};
    return (int)f->nmaps++;
}

/* mmap path and parse it as shard `name` of f. */
static int load_file(struct st_file *f, const char *path, const char *name)
{
    void *base;
    size_t len;
    if (fs_map_file(path, &base, &len))
        return -1;
    int shard = add_map(f, base, len, len > 0, name);
    return parse_image(f, shard, path);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct st_entry *)a)->t.name, ((const struct st_entry *)b)->t.name);
}

/* Sort by name for st_find and reject a name seen twice (possible across shards). */
static int finish(struct st_file *f, const char *what)
{
    if (f->n)
        qsort(f->e, f->n, sizeof *f->e, cmp_name);
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->e[i].t.name, f->e[i - 1].t.name) == 0)
            return rl_err("%s: tensor '%s' appears in both %s and %s", what, f->e[i].t.name,
                          f->maps[f->e[i - 1].shard].name, f->maps[f->e[i].shard].name);
    return 0;
}

void st_close(struct st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        free(f->e[i].t.name);
    for (size_t i = 0; i < f->nmaps; i++) {
        if (f->maps[i].mapped)
            munmap(f->maps[i].base, f->maps[i].len);
        free(f->maps[i].name);
    }
    free(f->e);
    free(f->maps);
    free(f->path);
    free(f);
}

struct st_file *st_open(const char *path)
{
    struct st_file *f = rl_calloc(1, sizeof *f);
    f->path = rl_strdup(path);
    if (load_file(f, path, path) < 0 || finish(f, path) < 0) {
        st_close(f);
        return NULL;
    }
    return f;
}

struct st_file *st_open_mem(const void *p, size_t n, const char *what)
{
    struct st_file *f = rl_calloc(1, sizeof *f);
    f->path = rl_strdup(what);
    add_map(f, (void *)p, n, false, what);
    if (parse_image(f, 0, what) < 0 || finish(f, what) < 0) {
        st_close(f);
        return NULL;
    }
    return f;
}

/* A shard name from an index: a plain file name in the same directory. */
static bool shard_name_ok(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static struct st_file *open_index(const char *dir, const char *index)
{
    char *text = fs_read_file(index, NULL);
    if (!text)
        return NULL;
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!j) {
        rl_err("%s: not valid JSON: %s (line %d column %d)", index, je.text, je.line, je.column);
        return NULL;
    }
    struct st_file *f = rl_calloc(1, sizeof *f);
    f->path = rl_strdup(dir);
    json_t *wm = json_object_get(j, "weight_map"), *v;
    const char *key;
    char path[FS_PATH_MAX];
    if (!json_is_object(wm)) {
        rl_err("%s: weight_map: missing or not an object", index);
        goto fail;
    }
    /* Load each shard once, in order of first mention. */
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v) || !shard_name_ok(json_string_value(v))) {
            rl_err("%s: weight_map['%s']: not a file name in the same directory", index, key);
            goto fail;
        }
        const char *shard = json_string_value(v);
        bool seen = false;
        for (size_t i = 0; i < f->nmaps && !seen; i++)
            seen = strcmp(f->maps[i].name, shard) == 0;
        if (seen)
            continue;
        if (fs_join(path, sizeof path, dir, shard) < 0 || load_file(f, path, shard) < 0) {
            rl_err_prefix("%s: weight_map['%s']", index, key);
            goto fail;
        }
    }
    if (finish(f, dir) < 0)
        goto fail;
    /* The index and the shards must agree exactly. */
    json_object_foreach(wm, key, v) {
        const struct st_tensor *t = st_find(f, key);
        const char *want = json_string_value(v);
        if (!t) {
            rl_err("%s: tensor '%s' is listed in weight_map but missing from %s", index, key, want);
            goto fail;
        }
        int shard = ((const struct st_entry *)t)->shard;
        if (strcmp(f->maps[shard].name, want) != 0) {
            rl_err("%s: tensor '%s' is listed in %s but found in %s", index, key, want,
                   f->maps[shard].name);
            goto fail;
        }
    }
    if (json_object_size(wm) != f->n) {
        for (size_t i = 0; i < f->n; i++)
            if (!json_object_get(wm, f->e[i].t.name)) {
                rl_err("%s: tensor '%s' in %s is not listed in weight_map", index, f->e[i].t.name,
                       f->maps[f->e[i].shard].name);
                break;
            }
        goto fail;
    }
    json_decref(j);
    return f;
fail:
    json_decref(j);
    st_close(f);
    return NULL;
}

struct st_file *st_open_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) < 0) {
        rl_errno("%s", dir);
        return NULL;
    }
    if (!S_ISDIR(st.st_mode))
        return st_open(dir);
    char path[FS_PATH_MAX];
    if (fs_join(path, sizeof path, dir, "model.safetensors.index.json") < 0)
        return NULL;
    if (fs_exists(path))
        return open_index(dir, path);
    if (fs_join(path, sizeof path, dir, "model.safetensors") < 0)
        return NULL;
    if (!fs_exists(path)) {
        rl_err("%s: no model.safetensors or model.safetensors.index.json", dir);
        return NULL;
    }
    return st_open(path);
}

size_t st_count(const struct st_file *f) { return f->n; }

const char *st_path(const struct st_file *f) { return f->path; }

const struct st_tensor *st_at(const struct st_file *f, size_t i) { return i < f->n ? &f->e[i].t : NULL; }

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->e[mid].t.name);
        if (c == 0)
            return &f->e[mid].t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int st_read_f32(const struct st_file *f, const char *name, float *out, int ndim, const int64_t *shape)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t)
        return rl_err("%s: tensor '%s' not found", f->path, name);
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char a[160], b[160];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, shape);
        return rl_err("%s: tensor '%s' has shape %s, expected %s", f->path, name, a, b);
    }
    st_tensor_to_f32(t, out);
    return 0;
}

/* ---- writing ---- */

static int cmp_out_name(const void *a, const void *b)
{
    return strcmp((*(const struct st_out_tensor *const *)a)->name,
                  (*(const struct st_out_tensor *const *)b)->name);
}

/* Wider dtypes first, then by name (the reference implementation's order):
 * with the 8-aligned data section, every tensor starts aligned to its dtype. */
static int cmp_out(const void *a, const void *b)
{
    const struct st_out_tensor *x = *(const struct st_out_tensor *const *)a,
                               *y = *(const struct st_out_tensor *const *)b;
    size_t sx = st_dtype_size(x->dtype), sy = st_dtype_size(y->dtype);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int64_t out_numel(const struct st_out_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

static int check_out(const char *path, const struct st_out_tensor *t)
{
    if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0)
        return rl_err("%s: invalid tensor name '%s'", path, t->name ? t->name : "(null)");
    if (st_dtype_size(t->dtype) == 0)
        return rl_err("%s: tensor '%s': invalid dtype %d", path, t->name, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
        return rl_err("%s: tensor '%s': %d dimensions", path, t->name, t->ndim);
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || (t->shape[d] && n > (INT64_C(1) << 40) / t->shape[d]))
            return rl_err("%s: tensor '%s': bad shape", path, t->name);
        n *= t->shape[d];
    }
    if (n > 0 && !t->data)
        return rl_err("%s: tensor '%s': no data", path, t->name);
    return 0;
}

/* Header: {"__metadata__":{"format":"pt"}, tensors in cmp_out order with
 * offsets in that order}, padded with spaces so the data section starts 8-aligned. */
static char *build_header(const struct st_out_tensor *const *by, size_t n, size_t *hlen)
{
    json_t *h = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(h, "__metadata__", meta);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const struct st_out_tensor *t = by[i];
        json_t *e = json_object(), *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        uint64_t nb = (uint64_t)out_numel(t) * st_dtype_size(t->dtype);
        json_object_set_new(e, "dtype", json_string(st_dtype_name(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets",
                            json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb)));
        json_object_set_new(h, t->name, e);
        off += nb;
    }
    char *s = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(h);
    if (!s)
        return NULL;
    size_t len = strlen(s), padded = (len + 7) & ~(size_t)7;
    s = rl_realloc(s, padded + 1);
    memset(s + len, ' ', padded - len);
    s[padded] = 0;
    *hlen = padded;
    return s;
}

static int write_tensor(int fd, const char *tmp, const struct st_out_tensor *t, void *buf, size_t bufn)
{
    int64_t n = out_numel(t);
    if (t->dtype == ST_F32)
        return n ? rl_write_all(fd, t->data, (size_t)n * 4, tmp) : 0;
    uint16_t *h = buf;
    for (int64_t i = 0; i < n; i += (int64_t)bufn) {
        int64_t k = n - i < (int64_t)bufn ? n - i : (int64_t)bufn;
        for (int64_t j = 0; j < k; j++)
            h[j] = t->dtype == ST_BF16 ? st_f32_to_bf16(t->data[i + j]) : st_f32_to_f16(t->data[i + j]);
        if (rl_write_all(fd, h, (size_t)k * 2, tmp) < 0)
            return -1;
    }
    return 0;
}

int st_write(const char *path, const struct st_out_tensor *t, size_t n)
{
    const struct st_out_tensor **by = rl_malloc((n ? n : 1) * sizeof *by);
    for (size_t i = 0; i < n; i++) {
        if (check_out(path, &t[i]) < 0) {
            free(by);
            return -1;
        }
        by[i] = &t[i];
    }
    qsort(by, n, sizeof *by, cmp_out_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(by[i]->name, by[i - 1]->name) == 0) {
            rl_err("%s: tensor '%s' given twice", path, by[i]->name);
            free(by);
            return -1;
        }
    qsort(by, n, sizeof *by, cmp_out);
    size_t hlen = 0;
    char *header = build_header(by, n, &hlen);
    if (!header) {
        free(by);
        return rl_err("%s: cannot encode the header", path);
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));

    char tmp[FS_PATH_MAX];
    enum { CHUNK = 1 << 18 };
    void *buf = rl_malloc(CHUNK * 2);
    int fd = fs_temp_open(path, tmp, sizeof tmp), rc = -1;
    if (fd >= 0 && rl_write_all(fd, lenbuf, 8, tmp) == 0 && rl_write_all(fd, header, hlen, tmp) == 0) {
        size_t i = 0;
        while (i < n && write_tensor(fd, tmp, by[i], buf, CHUNK) == 0)
            i++;
        if (i == n)
            rc = fs_temp_commit(fd, tmp, path);
        else
            fs_temp_abort(fd, tmp);
    } else if (fd >= 0) {
        fs_temp_abort(fd, tmp);
    }
    free(buf);
    free(header);
    free(by);
    return rc;
}
