#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- UTF-8 ---------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid:
 * no overlongs, no surrogates, nothing past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    return len;
}

size_t utf8_check(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        size_t k = utf8_seq(u + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

/* ---------- base64 (RFC 4648, with padding) ---------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(const unsigned char *p, size_t n, struct rl_buf *out)
{
    rl_buf_reserve(out, (n + 2) / 3 * 4);
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = b64chars[v >> 18]; *o++ = b64chars[v >> 12 & 63];
        *o++ = b64chars[v >> 6 & 63]; *o++ = b64chars[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = b64chars[v >> 18]; *o++ = b64chars[v >> 12 & 63];
        *o++ = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
}

static int b64_val(char c)
{
    const char *p = c ? strchr(b64chars, c) : NULL;
    return p ? (int)(p - b64chars) : -1;
}

/* Decode into out; -1 if s is not canonical padded base64. */
static int b64_decode(const char *s, size_t n, struct rl_buf *out)
{
    if (n % 4)
        return -1;
    rl_buf_reserve(out, n / 4 * 3);
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2 && (k == 3 || s[i + 3] == '=')) { v[k] = 0; pad++; continue; }
            if ((v[k] = b64_val(s[i + k])) < 0)
                return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        unsigned char b[3] = {w >> 16, w >> 8 & 255, w & 255};
        rl_buf_put(out, b, 3 - (size_t)pad);
    }
    return 0;
}

/* ---------- JSON -> tape -> msgpack ---------- */

enum jt { JT_NULL, JT_TRUE, JT_FALSE, JT_UINT, JT_INT, JT_DOUBLE, JT_STR, JT_ARR, JT_OBJ };

/* Parsing produces a flat tape first because msgpack needs each container's
 * element count before its elements. */
struct jtok {
    enum jt type;
    uint32_t count;                    /* JT_ARR elements, JT_OBJ pairs */
    union { uint64_t u; int64_t i; double d; struct { size_t off, len; } s; } v;
};

struct jparser {
    const unsigned char *s;
    size_t n, pos;
    struct jtok *tape;
    size_t ntape, cap;
    struct rl_buf str;                 /* decoded string bytes */
};

static int jerr(struct jparser *p, const char *msg)
{
    if (p->pos < p->n && p->s[p->pos] >= 0x80 && !utf8_seq(p->s + p->pos, p->n - p->pos))
        return rl_err("column %zu: invalid UTF-8", p->pos + 1);
    if (p->pos >= p->n)
        return rl_err("column %zu: %s (line ends early)", p->pos + 1, msg);
    return rl_err("column %zu: %s", p->pos + 1, msg);
}

static size_t tape_push(struct jparser *p, enum jt type)
{
    if (p->ntape == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->tape = rl_realloc(p->tape, p->cap * sizeof *p->tape);
    }
    p->tape[p->ntape] = (struct jtok){.type = type};
    return p->ntape++;
}

static void skip_ws(struct jparser *p)
{
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                             p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int hex4(const unsigned char *s, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        *v = *v << 4 | (unsigned)d;
    }
    return 0;
}

static void put_utf8(struct rl_buf *b, unsigned cp)
{
    char u[4];
    size_t k;
    if (cp < 0x80) { u[0] = (char)cp; k = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xc0 | cp >> 6); u[1] = (char)(0x80 | (cp & 63)); k = 2; }
    else if (cp < 0x10000) { u[0] = (char)(0xe0 | cp >> 12); u[1] = (char)(0x80 | (cp >> 6 & 63)); u[2] = (char)(0x80 | (cp & 63)); k = 3; }
    else { u[0] = (char)(0xf0 | cp >> 18); u[1] = (char)(0x80 | (cp >> 12 & 63)); u[2] = (char)(0x80 | (cp >> 6 & 63)); u[3] = (char)(0x80 | (cp & 63)); k = 4; }
    rl_buf_put(b, u, k);
}

static int parse_escape(struct jparser *p)
{
    const unsigned char *s = p->s;
    unsigned char c = p->pos + 1 < p->n ? s[p->pos + 1] : 0;
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *e = c ? strchr(from, c) : NULL;
    if (e) {
        rl_buf_putc(&p->str, to[e - from]);
        p->pos += 2;
        return 0;
    }
    if (c != 'u')
        return p->pos++, jerr(p, "invalid escape in string");
    unsigned cp, lo;
    if (p->pos + 6 > p->n || hex4(s + p->pos + 2, &cp))
        return jerr(p, "invalid \\u escape");
    p->pos += 6;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return p->pos -= 6, jerr(p, "\\u escape is a lone low surrogate");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (p->pos + 6 > p->n || s[p->pos] != '\\' || s[p->pos + 1] != 'u' ||
            hex4(s + p->pos + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
            return p->pos -= 6, jerr(p, "\\u escape is a high surrogate without its low half");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p->pos += 6;
    }
    put_utf8(&p->str, cp);
    return 0;
}

static int parse_string(struct jparser *p)
{
    size_t t = tape_push(p, JT_STR);
    size_t off = p->str.len;
    p->pos++;                                   /* opening quote */
    for (;;) {
        size_t run = p->pos;
        while (run < p->n && p->s[run] >= 0x20 && p->s[run] < 0x80 && p->s[run] != '"' && p->s[run] != '\\')
            run++;
        rl_buf_put(&p->str, p->s + p->pos, run - p->pos);
        p->pos = run;
        if (p->pos >= p->n)
            return jerr(p, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c == '\\') {
            if (parse_escape(p))
                return -1;
        } else if (c < 0x20) {
            return jerr(p, "control character in string (must be escaped)");
        } else {
            size_t k = utf8_seq(p->s + p->pos, p->n - p->pos);
            if (!k)
                return jerr(p, "invalid UTF-8");
            rl_buf_put(&p->str, p->s + p->pos, k);
            p->pos += k;
        }
    }
    p->tape[t].v.s.off = off;
    p->tape[t].v.s.len = p->str.len - off;
    return 0;
}

static int parse_number(struct jparser *p)
{
    const unsigned char *s = p->s;
    size_t i = p->pos, start = i;
    bool neg = false, frac = false;
    if (s[i] == '-') { neg = true; i++; }
    if (i < p->n && s[i] == '0') i++;
    else if (i < p->n && s[i] >= '1' && s[i] <= '9') while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    else return p->pos = i, jerr(p, "invalid number");
    if (i < p->n && s[i] == '.') {
        frac = true;
        if (++i >= p->n || s[i] < '0' || s[i] > '9') return p->pos = i, jerr(p, "invalid number");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        frac = true;
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->n || s[i] < '0' || s[i] > '9') return p->pos = i, jerr(p, "invalid number");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    char num[400];
    size_t len = i - start;
    char *buf = len < sizeof num ? num : rl_malloc(len + 1);
    memcpy(buf, s + start, len);
    buf[len] = 0;
    size_t t = tape_push(p, JT_DOUBLE);
    struct jtok *tok = &p->tape[t];
    errno = 0;
    if (!frac && neg) {
        long long v = strtoll(buf, NULL, 10);
        if (!errno) { tok->type = JT_INT; tok->v.i = v; }
    } else if (!frac) {
        unsigned long long v = strtoull(buf, NULL, 10);
        if (!errno) { tok->type = JT_UINT; tok->v.u = v; }
    }
    if (tok->type == JT_DOUBLE)                 /* also integers beyond 64 bits */
        tok->v.d = strtod(buf, NULL);
    if (buf != num)
        free(buf);
    p->pos = i;
    return 0;
}

static int parse_value(struct jparser *p, int depth);

static int parse_container(struct jparser *p, int depth, bool object)
{
    if (depth >= JSON_MAX_DEPTH)
        return jerr(p, "nesting deeper than 64 levels");
    size_t t = tape_push(p, object ? JT_OBJ : JT_ARR);
    char close = object ? '}' : ']';
    uint32_t count = 0;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (object) {
            if (p->pos >= p->n || p->s[p->pos] != '"')
                return jerr(p, "expected a string key");
            if (parse_string(p))
                return -1;
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':')
                return jerr(p, "expected ':'");
            p->pos++;
        }
        if (parse_value(p, depth + 1))
            return -1;
        count++;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; break; }
        return jerr(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->tape[t].count = count;
    return 0;
}

static int parse_literal(struct jparser *p, const char *word, enum jt type)
{
    size_t k = strlen(word);
    if (p->pos + k > p->n || memcmp(p->s + p->pos, word, k))
        return jerr(p, "invalid literal");
    tape_push(p, type);
    p->pos += k;
    return 0;
}

static int parse_value(struct jparser *p, int depth)
{
    skip_ws(p);
    if (p->pos >= p->n)
        return jerr(p, "expected a value");
    switch (p->s[p->pos]) {
    case '{': return parse_container(p, depth, true);
    case '[': return parse_container(p, depth, false);
    case '"': return parse_string(p);
    case 't': return parse_literal(p, "true", JT_TRUE);
    case 'f': return parse_literal(p, "false", JT_FALSE);
    case 'n': return parse_literal(p, "null", JT_NULL);
    default:
        if (p->s[p->pos] == '-' || (p->s[p->pos] >= '0' && p->s[p->pos] <= '9'))
            return parse_number(p);
        return jerr(p, "unexpected character");
    }
}

static bool tok_str_is(const struct jparser *p, const struct jtok *t, const char *s)
{
    size_t n = strlen(s);
    return t->type == JT_STR && t->v.s.len == n && memcmp(p->str.data + t->v.s.off, s, n) == 0;
}

/* {"$base64": s}, {"$float": s}, {"$ext": [int, s]}: 1 if handled at tape[i]. */
static int emit_special(struct jparser *p, size_t i, msgpack_packer *pk, size_t *next)
{
    struct jtok *t = p->tape + i;
    if (t->type != JT_OBJ || t->count != 1 || i + 2 >= p->ntape || p->tape[i + 1].type != JT_STR)
        return 0;
    struct jtok *k = t + 1, *v = t + 2;
    struct rl_buf bin = {0};
    int done = 0;
    if (tok_str_is(p, k, "$base64") && v->type == JT_STR) {
        if (b64_decode(p->str.data + v->v.s.off, v->v.s.len, &bin))
            return rl_buf_free(&bin), rl_err("\"$base64\" value is not valid base64");
        msgpack_pack_bin(pk, bin.len);
        msgpack_pack_bin_body(pk, bin.data, bin.len);
        *next = i + 3;
        done = 1;
    } else if (tok_str_is(p, k, "$float") && v->type == JT_STR) {
        double d = tok_str_is(p, v, "nan") ? NAN : tok_str_is(p, v, "inf") ? INFINITY
                 : tok_str_is(p, v, "-inf") ? -INFINITY : 0;
        if (d == 0)
            return rl_err("\"$float\" must be \"nan\", \"inf\" or \"-inf\"");
        msgpack_pack_double(pk, d);
        *next = i + 3;
        done = 1;
    } else if (tok_str_is(p, k, "$ext") && v->type == JT_ARR && v->count == 2 && i + 4 < p->ntape &&
               (v[1].type == JT_UINT || v[1].type == JT_INT) && v[2].type == JT_STR) {
        int64_t type = v[1].type == JT_UINT ? (int64_t)v[1].v.u : v[1].v.i;
        if (type < -128 || type > 127 || b64_decode(p->str.data + v[2].v.s.off, v[2].v.s.len, &bin))
            return rl_buf_free(&bin), rl_err("\"$ext\" must be [type -128..127, \"base64\"]");
        msgpack_pack_ext(pk, bin.len, (int8_t)type);
        msgpack_pack_ext_body(pk, bin.data, bin.len);
        *next = i + 5;
        done = 1;
    }
    rl_buf_free(&bin);
    return done;
}

static int emit(struct jparser *p, size_t i, msgpack_packer *pk, size_t *next)
{
    struct jtok *t = p->tape + i;
    int k = emit_special(p, i, pk, next);
    if (k)
        return k < 0 ? -1 : 0;
    switch (t->type) {
    case JT_NULL: msgpack_pack_nil(pk); break;
    case JT_TRUE: msgpack_pack_true(pk); break;
    case JT_FALSE: msgpack_pack_false(pk); break;
    case JT_UINT: msgpack_pack_uint64(pk, t->v.u); break;
    case JT_INT: msgpack_pack_int64(pk, t->v.i); break;
    case JT_DOUBLE: msgpack_pack_double(pk, t->v.d); break;
    case JT_STR:
        msgpack_pack_str(pk, t->v.s.len);
        msgpack_pack_str_body(pk, p->str.data + t->v.s.off, t->v.s.len);
        break;
    case JT_ARR: case JT_OBJ: {
        if (t->type == JT_ARR) msgpack_pack_array(pk, t->count);
        else msgpack_pack_map(pk, t->count);
        size_t j = i + 1, items = t->type == JT_OBJ ? 2 * (size_t)t->count : t->count;
        for (size_t e = 0; e < items; e++)
            if (emit(p, j, pk, &j))
                return -1;
        *next = j;
        return 0;
    }
    }
    *next = i + 1;
    return 0;
}

int json_to_msgpack(const char *s, size_t n, msgpack_packer *pk)
{
    static _Thread_local struct jparser p;     /* reused: no allocation per line */
    p.s = (const unsigned char *)s;
    p.n = n;
    p.pos = 0;
    p.ntape = 0;
    p.str.len = 0;
    if (parse_value(&p, 0))
        return -1;
    skip_ws(&p);
    if (p.pos != n)
        return jerr(&p, "unexpected text after the value");
    size_t next;
    return emit(&p, 0, pk, &next);
}

/* ---------- msgpack -> JSON ---------- */

static bool round_trips_d(const char *s, double d) { return strtod(s, NULL) == d; }
static bool round_trips_f(const char *s, float f) { return strtof(s, NULL) == f; }

static int ensure_float_syntax(char *buf, int n)
{
    if (!strpbrk(buf, ".eE")) {
        buf[n++] = '.';
        buf[n++] = '0';
        buf[n] = 0;
    }
    return n;
}

/* Like Python's repr: positional notation for exponents in [-4, 16), built
 * from the shortest digits (padding with zeros, never adding digits). */
static int positional(char *buf, int n, int digits, double x)
{
    char sci[40], d[24];
    snprintf(sci, sizeof sci, "%.*e", digits - 1, x);
    char *e = strchr(sci, 'e');
    int exp10 = atoi(e + 1), nd = 0;
    if (exp10 < -4 || exp10 >= 16)
        return n;
    for (char *c = sci; c < e; c++)
        if (*c >= '0' && *c <= '9')
            d[nd++] = *c;
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    char *o = buf;
    if (x < 0 || (x == 0 && signbit(x)))
        *o++ = '-';
    if (exp10 < 0) {
        o += sprintf(o, "0.");
        for (int i = 0; i < -exp10 - 1; i++) *o++ = '0';
        memcpy(o, d, (size_t)nd);
        o += nd;
    } else {
        for (int i = 0; i <= exp10; i++) *o++ = i < nd ? d[i] : '0';
        *o++ = '.';
        if (nd > exp10 + 1) {
            memcpy(o, d + exp10 + 1, (size_t)(nd - exp10 - 1));
            o += nd - exp10 - 1;
        } else {
            *o++ = '0';
        }
    }
    *o = 0;
    return (int)(o - buf);
}

/* Binary search for the fewest significant digits that read back exactly;
 * the digit count that round-trips is monotone in practice, and the final
 * choice is always verified (falling back to the maximum). */
#define SHORTEST(NAME, T, MAXP, RT)                                           \
    int NAME(T x, char buf[32])                                              \
    {                                                                        \
        int lo = 1, hi = MAXP;                                               \
        while (lo < hi) {                                                    \
            int mid = (lo + hi) / 2;                                         \
            snprintf(buf, 32, "%.*g", mid, (double)x);                       \
            if (RT(buf, x)) hi = mid; else lo = mid + 1;                     \
        }                                                                    \
        int n = snprintf(buf, 32, "%.*g", lo, (double)x);                    \
        if (!RT(buf, x)) n = snprintf(buf, 32, "%.*g", lo = MAXP, (double)x);\
        n = positional(buf, n, lo, (double)x);                               \
        return ensure_float_syntax(buf, n);                                  \
    }
SHORTEST(json_fmt_double, double, 17, round_trips_d)
SHORTEST(json_fmt_float, float, 9, round_trips_f)

static int put_json_string(const char *s, size_t n, struct rl_buf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    rl_buf_reserve(out, n + 2);
    rl_buf_putc(out, '"');
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\')
            run++;
        rl_buf_put(out, s + i, run - i);
        i = run;
        if (i >= n)
            break;
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t k = utf8_seq(u + i, n - i);
            if (!k)
                return rl_err("string is not valid UTF-8 (at byte %zu of the string)", i);
            rl_buf_put(out, s + i, k);
            i += k;
            continue;
        }
        static const char esc[] = "\b\f\n\r\t\"\\", escl[] = "bfnrt\"\\";
        const char *e = c ? memchr(esc, c, sizeof esc - 1) : NULL;
        if (e) {
            char two[2] = {'\\', escl[e - esc]};
            rl_buf_put(out, two, 2);
        } else {
            rl_buf_printf(out, "\\u%04x", c);
        }
        i++;
    }
    rl_buf_putc(out, '"');
    return 0;
}

static void put_special(struct rl_buf *out, const char *key, const char *val)
{
    rl_buf_printf(out, "{\"%s\":\"%s\"}", key, val);
}

static void put_double(double d, struct rl_buf *out)
{
    if (isnan(d)) { put_special(out, "$float", "nan"); return; }
    if (isinf(d)) { put_special(out, "$float", d > 0 ? "inf" : "-inf"); return; }
    char buf[32];
    rl_buf_put(out, buf, (size_t)json_fmt_double(d, buf));
}

static int put_map_key(const struct mpv *k, struct rl_buf *out)
{
    if (k->type == MPV_STR)
        return put_json_string(k->v.str.s, k->v.str.n, out);
    /* A scalar key becomes its JSON text as a string. Containers are refused:
     * quoting nested JSON inside keys doubles its size at every level. */
    if (k->type == MPV_ARRAY || k->type == MPV_MAP || k->type == MPV_BIN || k->type == MPV_EXT)
        return rl_err("a map key is %s; only strings and scalars can be JSON keys", mpv_type_name(k->type));
    struct rl_buf tmp = {0};
    int rc = mpv_to_json(k, &tmp);
    if (!rc)
        rc = put_json_string(tmp.data, tmp.len, out);
    rl_buf_free(&tmp);
    return rc;
}

/* Integers are most of a token-id stream: format them without printf. */
static void put_u64(struct rl_buf *out, uint64_t u, bool neg)
{
    char tmp[24], *e = tmp + sizeof tmp, *p = e;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg)
        *--p = '-';
    rl_buf_put(out, p, (size_t)(e - p));
}

int mpv_to_json(const struct mpv *v, struct rl_buf *out)
{
    char buf[32];
    switch (v->type) {
    case MPV_NIL: rl_buf_put(out, "null", 4); return 0;
    case MPV_BOOL: v->v.b ? rl_buf_put(out, "true", 4) : rl_buf_put(out, "false", 5); return 0;
    case MPV_UINT: put_u64(out, v->v.u, false); return 0;
    case MPV_INT: put_u64(out, v->v.i < 0 ? -(uint64_t)v->v.i : (uint64_t)v->v.i, v->v.i < 0); return 0;
    case MPV_F64: put_double(v->v.f64, out); return 0;
    case MPV_F32:
        if (isnan(v->v.f32) || isinf(v->v.f32))
            put_double(v->v.f32, out);
        else
            rl_buf_put(out, buf, (size_t)json_fmt_float(v->v.f32, buf));
        return 0;
    case MPV_STR: return put_json_string(v->v.str.s, v->v.str.n, out);
    case MPV_BIN:
        rl_buf_put(out, "{\"$base64\":\"", 12);
        b64_encode((const unsigned char *)v->v.str.s, v->v.str.n, out);
        rl_buf_put(out, "\"}", 2);
        return 0;
    case MPV_EXT:
        rl_buf_printf(out, "{\"$ext\":[%d,\"", v->v.str.ext_type);
        b64_encode((const unsigned char *)v->v.str.s, v->v.str.n, out);
        rl_buf_put(out, "\"]}", 3);
        return 0;
    case MPV_ARRAY: {
        struct mpv_iter it = mpv_iter_array(v);
        struct mpv e;
        rl_buf_putc(out, '[');
        for (bool first = true; mpv_next(&it, &e); first = false) {
            if (!first) rl_buf_putc(out, ',');
            if (mpv_to_json(&e, out)) return -1;
        }
        rl_buf_putc(out, ']');
        return 0;
    }
    case MPV_MAP: {
        struct mpv_iter it = mpv_iter_map(v);
        struct mpv k, e;
        rl_buf_putc(out, '{');
        for (bool first = true; mpv_next_pair(&it, &k, &e); first = false) {
            if (!first) rl_buf_putc(out, ',');
            if (put_map_key(&k, out)) return -1;
            rl_buf_putc(out, ':');
            if (mpv_to_json(&e, out)) return rl_err_prefix("field %.*s", k.type == MPV_STR ? (int)k.v.str.n : 1, k.type == MPV_STR ? k.v.str.s : "?");
        }
        rl_buf_putc(out, '}');
        return 0;
    }
    }
    return 0;
}
