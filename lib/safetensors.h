/* safetensors checkpoints: validated, mmap'd reading; atomic writing.
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype": "F32"|"F16"|"BF16", "shape": [...], "data_offsets": [b, e]},
 *  "__metadata__": {...}}, then the data section. Everything is validated at
 * open time; a malformed file is an error naming the file and the tensor. */
#ifndef RLFLOW_SAFETENSORS_H
#define RLFLOW_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F32, ST_F16, ST_BF16 };

#define ST_MAX_DIMS 8

struct st_tensor {
    char *name;
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data;        /* inside the mapping; valid while the file is open.
                                Aligned to its dtype only if the writer padded the
                                header (rlflow and HF do): read it with memcpy or
                                st_tensor_to_f32 rather than casting. */
    size_t nbytes;
};

/* One checkpoint: a single file or the shards of model.safetensors.index.json. */
struct st_file;

/* Open a single .safetensors file. NULL with rl_err set on any problem. */
struct st_file *st_open(const char *path);
/* Parse a safetensors image already in memory (not copied: it must outlive the
 * st_file); `what` names it in errors. Used by the fuzz target and tests. */
struct st_file *st_open_mem(const void *p, size_t n, const char *what);
/* Open a model directory's weights: model.safetensors, or the shards listed in
 * model.safetensors.index.json ("weight_map": every listed tensor must be in
 * its shard, every shard tensor listed, no name twice). `dir` may also name a
 * .safetensors file. */
struct st_file *st_open_dir(const char *dir);
void st_close(struct st_file *f);

/* Tensors are in name order (strcmp) across all shards. */
size_t st_count(const struct st_file *f);
/* The path given to st_open / st_open_dir (or st_open_mem's `what`). */
const char *st_path(const struct st_file *f);
const struct st_tensor *st_at(const struct st_file *f, size_t i);
const struct st_tensor *st_find(const struct st_file *f, const char *name);   /* NULL if absent */

/* Copy a tensor into fp32, checking its shape (ndim dims given); -1 with an
 * error naming the file, the tensor and both shapes on mismatch or absence. */
int st_read_f32(const struct st_file *f, const char *name, float *out, int ndim, const int64_t *shape);
/* Convert a tensor's data (any dtype, possibly unaligned) to fp32: t->numel floats. */
void st_tensor_to_f32(const struct st_tensor *t, float *out);

const char *st_dtype_name(enum st_dtype t);
size_t st_dtype_size(enum st_dtype t);

/* Writing: tensors are given as fp32 and stored in `dtype` (rounded to nearest
 * even for bf16/f16). Header and data are ordered by dtype width (widest
 * first), then name, so each tensor starts aligned to its dtype; with a single
 * dtype that is name order. The file is written to a temporary name beside
 * `path`, fsync'd and renamed into place. */
struct st_out_tensor {
    const char *name;
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
};
int st_write(const char *path, const struct st_out_tensor *t, size_t n);
/* Parse a dtype name as written in headers ("F32", "F16", "BF16") or in
 * config.json / options ("float32"/"f32", "float16"/"f16", "bfloat16"/"bf16"). -1 if unknown. */
int st_dtype_parse(const char *s, enum st_dtype *t);

/* fp16/bf16 conversions shared by readers, writers and the backends. */
float st_bf16_to_f32(uint16_t h);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);
uint16_t st_f32_to_f16(float f);
#endif
