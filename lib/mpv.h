/* A read-only, validated view of msgpack bytes.
 *
 * Why not msgpack-c's unpacker for reading: it cannot say where a value's
 * bytes are (pass-through must copy fields byte for byte, and errors must name
 * byte offsets), its nesting limit is fixed at 32 when the library is built,
 * and it allocates a 24-byte object per element, so a 64 MiB record of small
 * ints would cost 1.5 GiB. mpv_scan() validates one whole value once (lengths,
 * depth, size limits); after that, decoding needs no bounds checks.
 * Writing uses msgpack-c's packer. */
#ifndef RLFLOW_MPV_H
#define RLFLOW_MPV_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mpv_type {
    MPV_NIL, MPV_BOOL, MPV_UINT, MPV_INT, MPV_F32, MPV_F64,
    MPV_STR, MPV_BIN, MPV_EXT, MPV_ARRAY, MPV_MAP
};

struct mpv {
    enum mpv_type type;
    const uint8_t *p;        /* first byte of the encoding (its header) */
    size_t size;             /* bytes of the whole encoding, children included */
    union {
        bool b;
        uint64_t u;          /* MPV_UINT: non-negative integers */
        int64_t i;           /* MPV_INT: negative integers */
        float f32;
        double f64;
        struct { const char *s; uint32_t n; int8_t ext_type; } str;   /* str, bin, ext */
        struct { const uint8_t *first; uint32_t count; } c;   /* array elements / map pairs */
    } v;
};

struct mpv_limits {
    size_t max_size;         /* bytes of one top-level value */
    int max_depth;           /* nesting of arrays and maps */
};

enum { MPV_OK = 1, MPV_MORE = 0, MPV_BAD = -1 };

/* Validate the value starting at p[0] with n bytes available.
 * MPV_OK: *size = its encoded size. MPV_MORE: incomplete (need more bytes).
 * MPV_BAD: invalid or over a limit; *size = offset of the offending byte and
 * rl_err() holds a message (without location; the caller adds it). */
int mpv_scan(const uint8_t *p, size_t n, const struct mpv_limits *lim, size_t *size);

/* The type a value starting with byte b has (for messages on partial data). */
enum mpv_type mpv_type_of(uint8_t b);

/* Decode the header of a value already validated by mpv_scan. */
void mpv_decode(const uint8_t *p, struct mpv *out);

/* Iterate the elements of an array (one value each) or a map (key then value). */
struct mpv_iter { const uint8_t *p; uint32_t left; };
struct mpv_iter mpv_iter_array(const struct mpv *a);
bool mpv_next(struct mpv_iter *it, struct mpv *out);
/* For maps: next key/value pair. */
struct mpv_iter mpv_iter_map(const struct mpv *m);
bool mpv_next_pair(struct mpv_iter *it, struct mpv *key, struct mpv *val);

/* Map lookup by string key (linear); false if absent. */
bool mpv_map_get(const struct mpv *m, const char *key, struct mpv *val);
bool mpv_str_eq(const struct mpv *v, const char *s);

/* "a string", "an array", ... for error messages. */
const char *mpv_type_name(enum mpv_type t);
static inline bool mpv_is_number(const struct mpv *v)
{
    return v->type == MPV_UINT || v->type == MPV_INT || v->type == MPV_F32 || v->type == MPV_F64;
}
double mpv_as_double(const struct mpv *v);    /* any number */
#endif
