#include "rec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "err.h"
#include "json.h"

/* ================= reading ================= */

enum layer { L_UNKNOWN, L_RAW, L_ZSTD };
enum content { C_UNKNOWN, C_MSGPACK, C_JSONL };

struct rec_reader {
    int fd;
    bool own_fd, eof, frame_open, failed;
    char *name;
    enum layer layer;
    enum content content;
    ZSTD_DStream *zd;
    uint8_t *in;                 /* compressed bytes (zstd layer) */
    size_t in_pos, in_len, in_cap;
    uint8_t *buf;                /* decompressed bytes: [start, end) not yet consumed */
    size_t start, end, cap;
    uint64_t base;               /* stream offset of buf[0] */
    size_t max_record;
    uint64_t index, line;
    msgpack_sbuffer json_out;    /* a JSON line packed as msgpack */
    msgpack_packer json_pk;
    void (*on_wait)(void *);
    void *on_wait_ctx;
};

#define READ_CHUNK (1u << 17)

struct rec_reader *rec_reader_fdopen(int fd, const char *name)
{
    struct rec_reader *r = rl_calloc(1, sizeof *r);
    r->fd = fd;
    r->name = rl_strdup(name);
    r->max_record = REC_DEFAULT_MAX_RECORD;
    msgpack_sbuffer_init(&r->json_out);
    msgpack_packer_init(&r->json_pk, &r->json_out, msgpack_sbuffer_write);
    return r;
}

struct rec_reader *rec_reader_open(const char *path)
{
    if (!path || !strcmp(path, "-"))
        return rec_reader_fdopen(STDIN_FILENO, "stdin");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rl_errno("%s: cannot open", path), NULL;
    struct rec_reader *r = rec_reader_fdopen(fd, path);
    r->own_fd = true;
    return r;
}

void rec_reader_set_max_record(struct rec_reader *r, size_t bytes) { r->max_record = bytes; }

void rec_reader_on_wait(struct rec_reader *r, void (*fn)(void *), void *ctx)
{
    r->on_wait = fn;
    r->on_wait_ctx = ctx;
}

void rec_reader_close(struct rec_reader *r)
{
    if (!r)
        return;
    if (r->own_fd)
        close(r->fd);
    ZSTD_freeDStream(r->zd);
    msgpack_sbuffer_destroy(&r->json_out);
    free(r->in);
    free(r->buf);
    free(r->name);
    free(r);
}

/* Read from the fd into dst; 0 at end of input. */
static ssize_t read_some(struct rec_reader *r, void *dst, size_t n)
{
    if (r->on_wait)
        r->on_wait(r->on_wait_ctx);
    for (;;) {
        ssize_t k = read(r->fd, dst, n);
        if (k >= 0 || errno != EINTR)
            return k < 0 ? rl_errno("%s: read failed", r->name) : k;
    }
}

/* Make room for at least READ_CHUNK more bytes after `end`, keeping [start, end). */
static void make_room(struct rec_reader *r)
{
    if (r->start > 0 && (r->start == r->end || r->cap - r->end < READ_CHUNK)) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->base += r->start;
        r->end -= r->start;
        r->start = 0;
    }
    if (r->cap - r->end < READ_CHUNK) {
        r->cap = r->cap ? r->cap * 2 : 4 * READ_CHUNK;
        while (r->cap - r->end < READ_CHUNK)
            r->cap *= 2;
        r->buf = rl_realloc(r->buf, r->cap);
    }
}

static bool is_zstd_magic(const uint8_t *p)
{
    uint32_t m = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return m == 0xFD2FB528u || (m & 0xFFFFFFF0u) == 0x184D2A50u;   /* frame or skippable frame */
}

/* The first bytes decide whether the input is zstd; undecided until 4 bytes
 * or end of input. Bytes read so far stay in r->in. */
static int detect_layer(struct rec_reader *r)
{
    r->in_cap = READ_CHUNK;
    r->in = rl_malloc(r->in_cap);
    while (r->in_len < 4) {
        ssize_t k = read_some(r, r->in + r->in_len, r->in_cap - r->in_len);
        if (k < 0)
            return -1;
        if (k == 0) {
            r->eof = true;
            break;
        }
        r->in_len += (size_t)k;
    }
    r->layer = r->in_len >= 4 && is_zstd_magic(r->in) ? L_ZSTD : L_RAW;
    if (r->layer == L_ZSTD && !(r->zd = ZSTD_createDStream()))
        return rl_err("%s: out of memory for the zstd decoder", r->name);
    return 0;
}

/* Append more decoded bytes to buf. 1: got some, 0: end of input, -1: error. */
static int fill(struct rec_reader *r)
{
    if (r->layer == L_UNKNOWN && detect_layer(r))
        return -1;
    make_room(r);
    if (r->layer == L_RAW) {
        if (r->in_pos < r->in_len) {         /* bytes read while detecting */
            size_t k = r->in_len - r->in_pos;
            memcpy(r->buf + r->end, r->in + r->in_pos, k);
            r->end += k;
            r->in_pos = r->in_len;
            return 1;
        }
        if (r->eof)
            return 0;
        ssize_t k = read_some(r, r->buf + r->end, r->cap - r->end);
        if (k <= 0) {
            r->eof = k == 0;
            return k < 0 ? -1 : 0;
        }
        r->end += (size_t)k;
        return 1;
    }
    for (;;) {
        if (r->in_pos == r->in_len && !r->eof) {
            ssize_t k = read_some(r, r->in, r->in_cap);
            if (k < 0)
                return -1;
            r->eof = k == 0;
            r->in_pos = 0;
            r->in_len = (size_t)k;
        }
        if (r->in_pos == r->in_len && r->eof)
            return 0;
        ZSTD_outBuffer out = {r->buf + r->end, r->cap - r->end, 0};
        ZSTD_inBuffer in = {r->in, r->in_len, r->in_pos};
        size_t ret = ZSTD_decompressStream(r->zd, &out, &in);
        r->in_pos = in.pos;
        if (ZSTD_isError(ret))
            return rl_err("%s: corrupt zstd data (near compressed byte %llu): %s", r->name,
                          (unsigned long long)r->in_pos, ZSTD_getErrorName(ret));
        r->frame_open = ret != 0;
        r->end += out.pos;
        if (out.pos)
            return 1;
    }
}

/* Error located at a byte of the decoded stream, within record `index`. */
static int located_err(struct rec_reader *r, uint64_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int located_err(struct rec_reader *r, uint64_t at, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->failed = true;
    if (r->content == C_JSONL)
        return rl_err("%s: record %llu (line %llu): %s", r->name, (unsigned long long)r->index,
                      (unsigned long long)r->line, msg);
    return rl_err("%s: record %llu (byte %llu): %s", r->name, (unsigned long long)r->index,
                  (unsigned long long)at, msg);
}

static int end_of_input(struct rec_reader *r, uint64_t at)
{
    if (r->frame_open)
        return located_err(r, at, "truncated zstd frame: the compressed input ends inside a frame");
    if (r->start < r->end)
        return located_err(r, at, "truncated record: the stream ends after %zu of its bytes",
                           r->end - r->start);
    return 0;
}

static bool is_blank(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Skip blank bytes before the first record and decide msgpack vs JSON Lines. */
static int detect_content(struct rec_reader *r)
{
    int first = -1;                          /* first blank byte skipped, if any */
    for (;;) {
        while (r->start < r->end && is_blank(r->buf[r->start])) {
            if (first < 0)
                first = r->buf[r->start];
            if (r->buf[r->start] == '\n')
                r->line++;
            r->start++;
        }
        if (r->start < r->end)
            break;
        int k = fill(r);
        if (k <= 0)
            return k < 0 ? (r->failed = true, -1) : end_of_input(r, r->base + r->start);
    }
    r->content = r->buf[r->start] == '{' ? C_JSONL : C_MSGPACK;
    if (r->content == C_MSGPACK && first >= 0)   /* blank bytes are not msgpack maps */
        return located_err(r, 0, "a record must be a map, found %s (type byte 0x%02x)",
                           mpv_type_name(mpv_type_of((uint8_t)first)), first);
    return 1;
}

static int finish_record(struct rec_reader *r, struct rec *rec, const uint8_t *p, size_t n, uint64_t at)
{
    *rec = (struct rec){.raw = p, .size = n, .index = r->index, .offset = at,
                        .line = r->content == C_JSONL ? r->line : 0, .input = r->name};
    mpv_decode(p, &rec->map);
    return 1;
}

static int next_msgpack(struct rec_reader *r, struct rec *rec)
{
    struct mpv_limits lim = {r->max_record, REC_MAX_DEPTH};
    for (;;) {
        uint64_t at = r->base + r->start;
        if (r->start < r->end) {
            enum mpv_type t = mpv_type_of(r->buf[r->start]);
            if (t != MPV_MAP)
                return located_err(r, at, "a record must be a map, found %s (type byte 0x%02x)",
                                   mpv_type_name(t), r->buf[r->start]);
            size_t size;
            int k = mpv_scan(r->buf + r->start, r->end - r->start, &lim, &size);
            if (k == MPV_BAD)
                return located_err(r, at, "%s (at byte %llu)", rl_errmsg(), (unsigned long long)(at + size));
            if (k == MPV_OK) {
                r->start += size;
                return finish_record(r, rec, r->buf + r->start - size, size, at);
            }
        }
        int k = fill(r);
        if (k < 0)
            return r->failed = true, -1;
        if (k == 0)
            return end_of_input(r, at);
    }
}

static int next_jsonl(struct rec_reader *r, struct rec *rec)
{
    for (;;) {
        uint8_t *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
        if (!nl) {
            if (r->end - r->start > r->max_record)
                return r->line++, located_err(r, 0, "line longer than the record size limit (%zu bytes)", r->max_record);
            int k = fill(r);
            if (k < 0)
                return r->failed = true, -1;
            if (k > 0)
                continue;
            if (r->frame_open)
                return r->line++, end_of_input(r, 0);
            if (r->start == r->end)
                return 0;
            nl = r->buf + r->end;            /* last line without a newline */
        }
        size_t len = (size_t)(nl - (r->buf + r->start));
        const char *line = (const char *)r->buf + r->start;
        r->start += len + (nl < r->buf + r->end);
        r->line++;
        size_t i = 0;
        while (i < len && is_blank((uint8_t)line[i]))
            i++;
        if (i == len)
            continue;                        /* blank lines separate nothing */
        r->json_out.size = 0;
        if (json_to_msgpack(line, len, &r->json_pk))
            return located_err(r, 0, "invalid JSON: %s", rl_errmsg());
        const uint8_t *p = (const uint8_t *)r->json_out.data;
        if (mpv_type_of(p[0]) != MPV_MAP)
            return located_err(r, 0, "a record must be a JSON object, found %s", mpv_type_name(mpv_type_of(p[0])));
        if (r->json_out.size > r->max_record)
            return located_err(r, 0, "record larger than the limit of %zu bytes", r->max_record);
        return finish_record(r, rec, p, r->json_out.size, 0);
    }
}

int rec_next(struct rec_reader *r, struct rec *rec)
{
    if (r->failed)
        return -1;
    r->index++;
    if (r->content == C_UNKNOWN) {
        int k = detect_content(r);
        if (k <= 0)
            return k;
    }
    return r->content == C_JSONL ? next_jsonl(r, rec) : next_msgpack(r, rec);
}

/* ================= errors and typed access ================= */

int rec_err(const struct rec *r, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->line)
        return rl_err("%s: record %llu (line %llu): %s", r->input, (unsigned long long)r->index,
                      (unsigned long long)r->line, msg);
    return rl_err("%s: record %llu (byte %llu): %s", r->input, (unsigned long long)r->index,
                  (unsigned long long)r->offset, msg);
}

int rec_type_error(const struct rec *r, const char *what, const struct mpv *v, const char *expected)
{
    return rec_err(r, "field \"%s\" is %s, expected %s", what, mpv_type_name(v->type), expected);
}

bool rec_has(const struct rec *r, const char *key)
{
    struct mpv v;
    return mpv_map_get(&r->map, key, &v);
}

int rec_get(const struct rec *r, const char *key, struct mpv *v)
{
    return mpv_map_get(&r->map, key, v) ? 1 : 0;
}

static int get_typed(const struct rec *r, const char *key, struct mpv *v, enum mpv_type t, const char *expected)
{
    if (!mpv_map_get(&r->map, key, v))
        return 0;
    if (v->type != t)
        return rec_type_error(r, key, v, expected);
    return 1;
}

int rec_as_str(const struct rec *r, const char *what, const struct mpv *v, struct rec_str *s)
{
    if (v->type != MPV_STR)
        return rec_type_error(r, what, v, "a string");
    s->s = v->v.str.s;
    s->n = v->v.str.n;
    return 1;
}

int rec_get_str(const struct rec *r, const char *key, struct rec_str *s)
{
    struct mpv v;
    if (!mpv_map_get(&r->map, key, &v))
        return 0;
    return rec_as_str(r, key, &v, s);
}

int rec_get_i64(const struct rec *r, const char *key, int64_t *out)
{
    struct mpv v;
    if (!mpv_map_get(&r->map, key, &v))
        return 0;
    if (v.type == MPV_INT) *out = v.v.i;
    else if (v.type == MPV_UINT && v.v.u <= INT64_MAX) *out = (int64_t)v.v.u;
    else return rec_type_error(r, key, &v, "an integer (64-bit signed)");
    return 1;
}

int rec_get_f64(const struct rec *r, const char *key, double *out)
{
    struct mpv v;
    if (!mpv_map_get(&r->map, key, &v))
        return 0;
    if (!mpv_is_number(&v))
        return rec_type_error(r, key, &v, "a number");
    *out = mpv_as_double(&v);
    return 1;
}

int rec_get_bool(const struct rec *r, const char *key, bool *out)
{
    struct mpv v;
    int k = get_typed(r, key, &v, MPV_BOOL, "a boolean");
    if (k == 1)
        *out = v.v.b;
    return k;
}

int rec_get_array(const struct rec *r, const char *key, struct mpv *v)
{
    return get_typed(r, key, v, MPV_ARRAY, "an array");
}

int rec_get_map(const struct rec *r, const char *key, struct mpv *v)
{
    return get_typed(r, key, v, MPV_MAP, "a map");
}

static void grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    *p = rl_realloc(*p, c * elem);
    *cap = c;
}

int rec_as_i32s(const struct rec *r, const char *what, const struct mpv *v, int32_t **out, size_t *n, size_t *cap)
{
    if (v->type != MPV_ARRAY)
        return rec_type_error(r, what, v, "an array of integers");
    grow((void **)out, cap, v->v.c.count, sizeof **out);
    struct mpv_iter it = mpv_iter_array(v);
    struct mpv e;
    size_t i = 0;
    while (mpv_next(&it, &e)) {
        bool ok = (e.type == MPV_UINT && e.v.u <= INT32_MAX) ||
                  (e.type == MPV_INT && e.v.i >= INT32_MIN);
        if (!ok)
            return rec_err(r, "field \"%s\"[%zu] is %s, expected a 32-bit integer", what, i,
                           mpv_is_number(&e) ? "out of range" : mpv_type_name(e.type));
        (*out)[i++] = e.type == MPV_UINT ? (int32_t)e.v.u : (int32_t)e.v.i;
    }
    *n = i;
    return 1;
}

int rec_get_i32s(const struct rec *r, const char *key, int32_t **out, size_t *n, size_t *cap)
{
    struct mpv v;
    if (!mpv_map_get(&r->map, key, &v))
        return 0;
    return rec_as_i32s(r, key, &v, out, n, cap);
}

int rec_get_f64s(const struct rec *r, const char *key, double **out, size_t *n, size_t *cap)
{
    struct mpv v, e;
    if (!mpv_map_get(&r->map, key, &v))
        return 0;
    if (v.type != MPV_ARRAY)
        return rec_type_error(r, key, &v, "an array of numbers");
    grow((void **)out, cap, v.v.c.count, sizeof **out);
    struct mpv_iter it = mpv_iter_array(&v);
    size_t i = 0;
    while (mpv_next(&it, &e)) {
        if (!mpv_is_number(&e))
            return rec_err(r, "field \"%s\"[%zu] is %s, expected a number", key, i, mpv_type_name(e.type));
        (*out)[i++] = mpv_as_double(&e);
    }
    *n = i;
    return 1;
}

int rec_get_strs(const struct rec *r, const char *key, struct rec_str **out, size_t *n, size_t *cap)
{
    struct mpv v, e;
    if (!mpv_map_get(&r->map, key, &v))
        return 0;
    if (v.type != MPV_ARRAY)
        return rec_type_error(r, key, &v, "an array of strings");
    grow((void **)out, cap, v.v.c.count, sizeof **out);
    struct mpv_iter it = mpv_iter_array(&v);
    size_t i = 0;
    while (mpv_next(&it, &e)) {
        if (e.type != MPV_STR)
            return rec_err(r, "field \"%s\"[%zu] is %s, expected a string", key, i, mpv_type_name(e.type));
        (*out)[i++] = (struct rec_str){e.v.str.s, e.v.str.n};
    }
    *n = i;
    return 1;
}

/* ================= writing ================= */

#define STAGE_FLUSH (256u << 10)

struct rec_writer {
    int fd, level;
    bool failed;
    char *name;
    ZSTD_CStream *zc;
    msgpack_sbuffer stage;       /* whole records, not yet compressed */
    msgpack_packer stage_pk;
    const struct rec *src;       /* record being passed through, or NULL */
    msgpack_sbuffer fresh;       /* new fields of the record being built */
    msgpack_packer fresh_pk;
    struct rl_buf keys;          /* NUL-separated keys set or dropped */
    size_t nfresh;
    uint8_t *zbuf;
    size_t zcap;
};

struct rec_writer *rec_writer_open(int fd, int level, const char *name)
{
    struct rec_writer *w = rl_calloc(1, sizeof *w);
    w->fd = fd;
    w->level = level;
    w->name = rl_strdup(name);
    msgpack_sbuffer_init(&w->stage);
    msgpack_packer_init(&w->stage_pk, &w->stage, msgpack_sbuffer_write);
    msgpack_sbuffer_init(&w->fresh);
    msgpack_packer_init(&w->fresh_pk, &w->fresh, msgpack_sbuffer_write);
    if (level != 0) {
        w->zc = ZSTD_createCStream();
        if (!w->zc || ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, level)))
            rl_die("%s: cannot set up zstd compression at level %d", name, level);
        w->zcap = ZSTD_CStreamOutSize();
        w->zbuf = rl_malloc(w->zcap);
    }
    return w;
}

/* Compress (or copy) the staged records to the fd. */
static int drain(struct rec_writer *w, ZSTD_EndDirective mode)
{
    if (w->failed)
        return -1;
    if (!w->zc) {
        int rc = rl_write_all(w->fd, w->stage.data, w->stage.size, w->name);
        w->stage.size = 0;
        return rc ? (w->failed = true, -1) : 0;
    }
    ZSTD_inBuffer in = {w->stage.data, w->stage.size, 0};
    for (;;) {
        ZSTD_outBuffer out = {w->zbuf, w->zcap, 0};
        size_t left = ZSTD_compressStream2(w->zc, &out, &in, mode);
        if (ZSTD_isError(left))
            return w->failed = true, rl_err("%s: zstd compression failed: %s", w->name, ZSTD_getErrorName(left));
        if (rl_write_all(w->fd, w->zbuf, out.pos, w->name))
            return w->failed = true, -1;
        bool done = mode == ZSTD_e_continue ? in.pos == in.size : left == 0;
        if (done)
            break;
    }
    w->stage.size = 0;
    return 0;
}

void rec_begin(struct rec_writer *w, const struct rec *src)
{
    w->src = src;
    w->fresh.size = 0;
    w->keys.len = 0;
    w->nfresh = 0;
}

static bool key_listed(const struct rec_writer *w, const char *k, size_t n)
{
    for (size_t i = 0; i < w->keys.len;) {
        const char *key = w->keys.data + i + 1;       /* first byte: 1 set, 0 dropped */
        size_t len = strlen(key);
        if (len == n && memcmp(key, k, n) == 0)
            return true;
        i += len + 2;
    }
    return false;
}

static void list_key(struct rec_writer *w, const char *key, bool set)
{
    rl_buf_putc(&w->keys, set ? 1 : 0);
    rl_buf_put(&w->keys, key, strlen(key) + 1);
}

msgpack_packer *rec_put(struct rec_writer *w, const char *key)
{
    size_t n = strlen(key);
    list_key(w, key, true);
    msgpack_pack_str(&w->fresh_pk, n);
    msgpack_pack_str_body(&w->fresh_pk, key, n);
    w->nfresh++;
    return &w->fresh_pk;
}

void rec_drop(struct rec_writer *w, const char *key) { list_key(w, key, false); }

void rec_put_str(struct rec_writer *w, const char *key, const char *s, size_t n)
{
    msgpack_packer *pk = rec_put(w, key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void rec_put_cstr(struct rec_writer *w, const char *key, const char *s) { rec_put_str(w, key, s, strlen(s)); }
void rec_put_i64(struct rec_writer *w, const char *key, int64_t v) { msgpack_pack_int64(rec_put(w, key), v); }
void rec_put_f64(struct rec_writer *w, const char *key, double v) { msgpack_pack_double(rec_put(w, key), v); }
void rec_put_nil(struct rec_writer *w, const char *key) { msgpack_pack_nil(rec_put(w, key)); }

void rec_put_bool(struct rec_writer *w, const char *key, bool v)
{
    msgpack_packer *pk = rec_put(w, key);
    v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

void rec_put_i32s(struct rec_writer *w, const char *key, const int32_t *v, size_t n)
{
    msgpack_packer *pk = rec_put(w, key);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_int32(pk, v[i]);
}

void rec_put_f64s(struct rec_writer *w, const char *key, const double *v, size_t n)
{
    msgpack_packer *pk = rec_put(w, key);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_double(pk, v[i]);
}

void rec_put_raw(struct rec_writer *w, const char *key, const struct mpv *v)
{
    msgpack_sbuffer_write(rec_put(w, key)->data, (const char *)v->p, v->size);
}

int rec_end(struct rec_writer *w)
{
    size_t kept = 0;
    struct mpv k, v;
    struct mpv_iter it;
    if (w->src) {
        it = mpv_iter_map(&w->src->map);
        while (mpv_next_pair(&it, &k, &v))
            kept += !(k.type == MPV_STR && key_listed(w, k.v.str.s, k.v.str.n));
    }
    msgpack_pack_map(&w->stage_pk, kept + w->nfresh);
    if (w->src) {                            /* fields passed through byte for byte */
        it = mpv_iter_map(&w->src->map);
        while (mpv_next_pair(&it, &k, &v))
            if (!(k.type == MPV_STR && key_listed(w, k.v.str.s, k.v.str.n)))
                msgpack_sbuffer_write(&w->stage, (const char *)k.p, k.size + v.size);
    }
    msgpack_sbuffer_write(&w->stage, w->fresh.data, w->fresh.size);
    rec_begin(w, NULL);
    return w->stage.size >= STAGE_FLUSH ? drain(w, ZSTD_e_continue) : (w->failed ? -1 : 0);
}

int rec_write_raw(struct rec_writer *w, const uint8_t *p, size_t n)
{
    msgpack_sbuffer_write(&w->stage, (const char *)p, n);
    return w->stage.size >= STAGE_FLUSH ? drain(w, ZSTD_e_continue) : (w->failed ? -1 : 0);
}

int rec_flush(struct rec_writer *w) { return drain(w, ZSTD_e_flush); }

int rec_writer_close(struct rec_writer *w)
{
    if (!w)
        return 0;
    int rc = drain(w, ZSTD_e_end);
    ZSTD_freeCStream(w->zc);
    msgpack_sbuffer_destroy(&w->stage);
    msgpack_sbuffer_destroy(&w->fresh);
    rl_buf_free(&w->keys);
    free(w->zbuf);
    free(w->name);
    free(w);
    return rc;
}

static void flush_writer(void *w) { (void)rec_flush(w); }

void rec_flush_on_wait(struct rec_reader *r, struct rec_writer *w) { rec_reader_on_wait(r, flush_writer, w); }

int rec_each(int n, char **paths, struct rec_writer *w, int (*fn)(void *ctx, const struct rec *r), void *ctx)
{
    for (int i = 0; i < (n > 0 ? n : 1); i++) {
        struct rec_reader *r = rec_reader_open(n > 0 ? paths[i] : "-");
        if (!r)
            return -1;
        if (w)
            rec_flush_on_wait(r, w);
        struct rec rec;
        int k, rc = 0;
        while ((k = rec_next(r, &rec)) == 1 && !(rc = fn(ctx, &rec)))
            ;
        rec_reader_close(r);
        if (k < 0 || rc)
            return -1;
    }
    return 0;
}

int rec_writer_finish(struct rec_writer *w, int rc)
{
    if (!rc)
        return rec_writer_close(w);
    char *err = rl_strdup(rl_errmsg());
    rec_writer_close(w);
    rl_err("%s", err);
    free(err);
    return -1;
}
