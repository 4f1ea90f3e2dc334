#include "mpv.h"

#include <string.h>

#include "err.h"

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* The shape of one header: how many bytes it takes, how many payload bytes
 * follow, and how many child values (array elements, map keys + values). */
struct hdr {
    size_t hlen;       /* header bytes, type byte included */
    uint64_t payload;  /* raw payload bytes after the header */
    uint64_t children; /* nested values that follow */
};

/* Needs p[0..n); returns MPV_MORE if the header itself is incomplete. */
static int read_hdr(const uint8_t *p, size_t n, struct hdr *h)
{
    uint8_t t = p[0];
    *h = (struct hdr){1, 0, 0};
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
        return MPV_OK;
    if (t >= 0x80 && t <= 0x8f) { h->children = 2u * (t & 0x0f); return MPV_OK; }
    if (t >= 0x90 && t <= 0x9f) { h->children = t & 0x0f; return MPV_OK; }
    if (t >= 0xa0 && t <= 0xbf) { h->payload = t & 0x1f; return MPV_OK; }
    static const uint8_t fixed[0xdf - 0xc4 + 1] = {   /* payload sizes of c4..df; 0: length-prefixed */
        [0xcc - 0xc4] = 1, [0xcd - 0xc4] = 2, [0xce - 0xc4] = 4, [0xcf - 0xc4] = 8,
        [0xd0 - 0xc4] = 1, [0xd1 - 0xc4] = 2, [0xd2 - 0xc4] = 4, [0xd3 - 0xc4] = 8,
        [0xca - 0xc4] = 4, [0xcb - 0xc4] = 8,
        [0xd4 - 0xc4] = 2, [0xd5 - 0xc4] = 3, [0xd6 - 0xc4] = 5, [0xd7 - 0xc4] = 9, [0xd8 - 0xc4] = 17,
    };
    if (t == 0xc1)
        return rl_err("invalid msgpack type byte 0xc1");
    if (t >= 0xc4 && t <= 0xdf && fixed[t - 0xc4]) {
        h->payload = fixed[t - 0xc4];
        return MPV_OK;
    }
    /* length-prefixed: bin/str/ext 8/16/32, array/map 16/32 */
    size_t lb;
    switch (t) {
    case 0xc4: case 0xd9: case 0xc7: lb = 1; break;
    case 0xc5: case 0xda: case 0xc8: case 0xdc: case 0xde: lb = 2; break;
    default: lb = 4; break;   /* c6 db c9 dd df */
    }
    size_t ext = (t >= 0xc7 && t <= 0xc9);   /* ext: one type byte after the length */
    if (n < 1 + lb + ext)
        return MPV_MORE;
    uint64_t len = lb == 1 ? p[1] : lb == 2 ? be16(p + 1) : be32(p + 1);
    h->hlen = 1 + lb + ext;
    if (t == 0xdc || t == 0xdd)
        h->children = len;
    else if (t == 0xde || t == 0xdf)
        h->children = 2 * len;
    else
        h->payload = len;
    return MPV_OK;
}

/* Iterative walk with an explicit stack of "children left" counts, so deep
 * nesting costs no C stack and the depth limit is exact. */
int mpv_scan(const uint8_t *p, size_t n, const struct mpv_limits *lim, size_t *size)
{
    uint64_t stack[256];
    int depth = 0, max_depth = lim->max_depth < 256 ? lim->max_depth : 256;
    size_t off = 0, limit = lim->max_size;
    for (;;) {
        if (off >= n) {
            *size = off;
            return MPV_MORE;
        }
        struct hdr h;
        int k = read_hdr(p + off, n - off, &h);
        if (k != MPV_OK) {
            *size = off;
            return k;
        }
        /* Every child takes at least one byte: a declared count or length past
         * the size limit can never be satisfied, so it is bad now, not "more". */
        if (h.payload > limit || h.children > limit || off + h.hlen + h.payload + h.children > limit) {
            *size = off;
            rl_err("declared %s %llu exceeds the record size limit (%zu bytes)",
                   h.children ? "element count" : "length",
                   (unsigned long long)(h.children ? h.children : h.payload), limit);
            return MPV_BAD;
        }
        if (off + h.hlen + h.payload > n) {
            *size = off;
            return MPV_MORE;
        }
        off += h.hlen + h.payload;
        if (h.children) {
            if (depth >= max_depth) {
                *size = off - h.hlen;
                return rl_err("nesting deeper than %d levels", max_depth), MPV_BAD;
            }
            stack[depth++] = h.children;
            continue;
        }
        while (depth > 0 && --stack[depth - 1] == 0)
            depth--;
        if (depth == 0) {
            *size = off;
            return MPV_OK;
        }
    }
}

enum mpv_type mpv_type_of(uint8_t b)
{
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf)) return MPV_UINT;
    if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3)) return MPV_INT;
    if (b <= 0x8f || b == 0xde || b == 0xdf) return MPV_MAP;
    if (b <= 0x9f || b == 0xdc || b == 0xdd) return MPV_ARRAY;
    if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) return MPV_STR;
    if (b == 0xc0 || b == 0xc1) return MPV_NIL;
    if (b == 0xc2 || b == 0xc3) return MPV_BOOL;
    if (b == 0xca) return MPV_F32;
    if (b == 0xcb) return MPV_F64;
    if (b >= 0xc4 && b <= 0xc6) return MPV_BIN;
    return MPV_EXT;
}

/* Past one validated value: each header adds its children to the count of
 * values still to skip. */
static const uint8_t *mpv_skip(const uint8_t *p)
{
    uint64_t left = 1;
    while (left) {
        struct hdr h;
        read_hdr(p, SIZE_MAX, &h);
        p += h.hlen + h.payload;
        left += h.children - 1;
    }
    return p;
}

void mpv_decode(const uint8_t *p, struct mpv *v)
{
    struct hdr h;
    read_hdr(p, SIZE_MAX, &h);
    uint8_t t = p[0];
    const uint8_t *d = p + h.hlen;
    v->p = p;
    if (t <= 0x7f) { v->type = MPV_UINT; v->v.u = t; }
    else if (t >= 0xe0) { v->type = MPV_INT; v->v.i = (int8_t)t; }
    else if (t <= 0x8f) { v->type = MPV_MAP; v->v.c.count = t & 0x0f; v->v.c.first = d; }
    else if (t <= 0x9f) { v->type = MPV_ARRAY; v->v.c.count = t & 0x0f; v->v.c.first = d; }
    else if (t <= 0xbf) { v->type = MPV_STR; v->v.str.s = (const char *)d; v->v.str.n = t & 0x1f; }
    else switch (t) {
    case 0xc0: v->type = MPV_NIL; break;
    case 0xc2: case 0xc3: v->type = MPV_BOOL; v->v.b = t == 0xc3; break;
    case 0xcc: v->type = MPV_UINT; v->v.u = d[0]; break;
    case 0xcd: v->type = MPV_UINT; v->v.u = be16(d); break;
    case 0xce: v->type = MPV_UINT; v->v.u = be32(d); break;
    case 0xcf: v->type = MPV_UINT; v->v.u = be64(d); break;
    case 0xd0: v->type = MPV_INT; v->v.i = (int8_t)d[0]; break;
    case 0xd1: v->type = MPV_INT; v->v.i = (int16_t)be16(d); break;
    case 0xd2: v->type = MPV_INT; v->v.i = (int32_t)be32(d); break;
    case 0xd3: v->type = MPV_INT; v->v.i = (int64_t)be64(d); break;
    case 0xca: { uint32_t b = be32(d); v->type = MPV_F32; memcpy(&v->v.f32, &b, 4); break; }
    case 0xcb: { uint64_t b = be64(d); v->type = MPV_F64; memcpy(&v->v.f64, &b, 8); break; }
    case 0xc4: case 0xc5: case 0xc6:
        v->type = MPV_BIN; v->v.str.s = (const char *)d; v->v.str.n = (uint32_t)h.payload; break;
    case 0xd9: case 0xda: case 0xdb:
        v->type = MPV_STR; v->v.str.s = (const char *)d; v->v.str.n = (uint32_t)h.payload; break;
    case 0xdc: case 0xdd:
        v->type = MPV_ARRAY; v->v.c.count = (uint32_t)h.children; v->v.c.first = d; break;
    case 0xde: case 0xdf:
        v->type = MPV_MAP; v->v.c.count = (uint32_t)(h.children / 2); v->v.c.first = d; break;
    default: /* ext: fixext d4..d8 (type byte, data), ext 8/16/32 (len, type, data) */
        v->type = MPV_EXT;
        if (t >= 0xd4) {
            v->v.str.ext_type = (int8_t)d[0];
            v->v.str.s = (const char *)d + 1;
            v->v.str.n = (uint32_t)h.payload - 1;
        } else {
            v->v.str.ext_type = (int8_t)p[h.hlen - 1];
            v->v.str.s = (const char *)d;
            v->v.str.n = (uint32_t)h.payload;
        }
        break;
    }
    /* only containers need a walk to find their end */
    v->size = h.children ? (size_t)(mpv_skip(p) - p) : h.hlen + h.payload;
}

struct mpv_iter mpv_iter_array(const struct mpv *a)
{
    return (struct mpv_iter){a->v.c.first, a->type == MPV_ARRAY ? a->v.c.count : 0};
}

struct mpv_iter mpv_iter_map(const struct mpv *m)
{
    return (struct mpv_iter){m->v.c.first, m->type == MPV_MAP ? m->v.c.count : 0};
}

bool mpv_next(struct mpv_iter *it, struct mpv *out)
{
    if (!it->left)
        return false;
    mpv_decode(it->p, out);
    it->p += out->size;
    it->left--;
    return true;
}

bool mpv_next_pair(struct mpv_iter *it, struct mpv *key, struct mpv *val)
{
    if (!it->left)
        return false;
    mpv_decode(it->p, key);
    mpv_decode(it->p + key->size, val);
    it->p += key->size + val->size;
    it->left--;
    return true;
}

bool mpv_str_eq(const struct mpv *v, const char *s)
{
    size_t n = strlen(s);
    return v->type == MPV_STR && v->v.str.n == n && memcmp(v->v.str.s, s, n) == 0;
}

bool mpv_map_get(const struct mpv *m, const char *key, struct mpv *val)
{
    struct mpv_iter it = mpv_iter_map(m);
    struct mpv k;
    while (mpv_next_pair(&it, &k, val))
        if (mpv_str_eq(&k, key))
            return true;
    return false;
}

const char *mpv_type_name(enum mpv_type t)
{
    static const char *names[] = {
        [MPV_NIL] = "null", [MPV_BOOL] = "a boolean", [MPV_UINT] = "an integer",
        [MPV_INT] = "an integer", [MPV_F32] = "a float", [MPV_F64] = "a float",
        [MPV_STR] = "a string", [MPV_BIN] = "binary data", [MPV_EXT] = "an extension value",
        [MPV_ARRAY] = "an array", [MPV_MAP] = "a map",
    };
    return names[t];
}

double mpv_as_double(const struct mpv *v)
{
    switch (v->type) {
    case MPV_UINT: return (double)v->v.u;
    case MPV_INT: return (double)v->v.i;
    case MPV_F32: return v->v.f32;
    case MPV_F64: return v->v.f64;
    default: return 0;
    }
}
