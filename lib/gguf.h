/* GGUF files (llama.cpp / ggml's model format): a validating reader over mmap
 * and dequantization to fp32 (docs/gguf.md).
 *
 * Layout (little-endian, versions 2 and 3):
 *   "GGUF"  u32 version  u64 n_tensors  u64 n_kv
 *   n_kv x      { string key, u32 value_type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   padding to general.alignment (default 32), then the data section; each
 *   tensor's offset is relative to it and a multiple of the alignment.
 * A string is u64 length + bytes (no NUL). An array is u32 element type, u64
 * count, elements. ne[0] is the fastest-varying dimension: the PyTorch shape
 * is ne reversed.
 *
 * Everything is checked at open time (sizes, counts, string lengths, types,
 * alignment, every tensor inside the file); a problem is an error naming the
 * file and the key or tensor. Data and strings point into the mapping and
 * live as long as the gguf. */
#ifndef RLFLOW_GGUF_H
#define RLFLOW_GGUF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12,
};

/* ggml tensor types (the numbers are the file format's). */
enum ggml_type {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7,
    GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12,
    GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_Q8_K = 15, GGML_IQ4_NL = 20, GGML_IQ4_XS = 23,
    GGML_I8 = 24, GGML_I16 = 25, GGML_I32 = 26, GGML_I64 = 27, GGML_F64 = 28, GGML_BF16 = 30,
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

struct gguf_str {
    const char *p;            /* not NUL-terminated */
    uint64_t n;
};

struct gguf_kv {
    char *key;                /* NUL-terminated copy */
    enum gguf_vtype type;
    enum gguf_vtype arr_type; /* element type when type == GGUF_ARRAY */
    uint64_t n;               /* element count (1 for a scalar) */
    const uint8_t *data;      /* the value (arrays: the first element), in the mapping */
    struct gguf_str *strs;    /* strings of a GGUF_STRING scalar or array (n of them) */
};

struct gguf_tensor {
    char *name;
    uint32_t type;            /* enum ggml_type */
    int ndim;
    int64_t ne[GGUF_MAX_DIMS];/* ggml order: ne[0] varies fastest */
    int64_t numel;
    uint64_t offset;          /* from the start of the data section */
    const void *data;         /* in the mapping */
    size_t nbytes;
};

struct gguf;

/* Open and validate a file (mmap'd). NULL with rl_err set on any problem. */
struct gguf *gguf_open(const char *path);
/* Parse an image already in memory (not copied); `what` names it in errors. */
struct gguf *gguf_open_mem(const void *p, size_t n, const char *what);
void gguf_close(struct gguf *g);

uint32_t gguf_version(const struct gguf *g);
const char *gguf_name(const struct gguf *g);          /* the path or `what` */
size_t gguf_alignment(const struct gguf *g);

size_t gguf_n_kv(const struct gguf *g);
const struct gguf_kv *gguf_kv_at(const struct gguf *g, size_t i);
const struct gguf_kv *gguf_find_kv(const struct gguf *g, const char *key);   /* NULL if absent */

/* Typed getters: 0 found, 1 absent (*out untouched), -1 wrong type or out of
 * range (error names the key). Integers accept every integer type (and bool),
 * floats accept float and integer types. */
int gguf_get_int(const struct gguf *g, const char *key, int64_t *out);
int gguf_get_float(const struct gguf *g, const char *key, double *out);
int gguf_get_bool(const struct gguf *g, const char *key, bool *out);
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out);
/* An array of `elem` type (strings: GGUF_STRING; any integer type: pass
 * GGUF_I64); NULL with an error naming the key if absent or another type. */
const struct gguf_kv *gguf_get_arr(const struct gguf *g, const char *key, enum gguf_vtype elem);
/* Element i of an integer array as int64 (caller checks i < kv->n). */
int64_t gguf_arr_int(const struct gguf_kv *kv, uint64_t i);

size_t gguf_n_tensors(const struct gguf *g);
const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, size_t i);   /* file order */
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name);

/* Type names as ggml spells them ("Q4_1", "F32"; "unknown type 99"),
 * and the block geometry: elements per block and bytes per block (0 if unknown). */
const char *ggml_type_name(uint32_t type);
int ggml_type_block(uint32_t type, size_t *block_elems, size_t *block_bytes);
/* Can this type be dequantized? */
bool ggml_type_supported(uint32_t type);
const char *gguf_vtype_name(uint32_t t);

/* Dequantize n elements (a multiple of the block size) of `type` stored at src.
 * -1 with an error if the type is not supported. */
int ggml_dequantize(uint32_t type, const void *src, float *dst, int64_t n);
/* A whole tensor (numel floats); the error names the tensor and its type. */
int gguf_tensor_to_f32(const struct gguf_tensor *t, float *dst);

float ggml_f16_to_f32(uint16_t h);
float ggml_bf16_to_f32(uint16_t h);
#endif
