/* GGUF (llama architecture) -> Hugging Face model directory (docs/gguf.md).
 *
 *   config.json            from the llama.* metadata
 *   model.safetensors      every tensor dequantized, renamed to HF names,
 *                          q/k rows permuted back to HF's rotate-half layout
 *   tokenizer.json         from tokenizer.ggml.* (byte-level BPE, model "gpt2")
 *   tokenizer_config.json  bos/eos/pad/unk strings and the chat template
 *
 * Every function returns -1 with rl_err set (naming the key or tensor). */
#ifndef RLFLOW_GGUF_IMPORT_H
#define RLFLOW_GGUF_IMPORT_H
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "gguf.h"
#include "safetensors.h"
#include "weights_layout.h"

struct gguf_import_opts {
    enum st_dtype dtype;                 /* dtype of model.safetensors */
    /* called before each tensor is converted (may be NULL) */
    void (*progress)(void *ctx, int done, int total, const char *name);
    void *progress_ctx;
};

/* config.json fields from the metadata and the tensor list. */
int gguf_import_config(const struct gguf *g, struct model_config *c);
/* The GGUF name of the tensor HF calls t (buffer of HF_NAME_MAX); -1 if none. */
int gguf_name_for(const struct hf_tensor *t, char *out, size_t n);
/* Dequantize all weights into HF layout (one allocation, tensors in
 * hf_tensor order; caller frees). */
float *gguf_import_weights(const struct gguf *g, const struct model_config *c,
                           const struct gguf_import_opts *o);
/* tokenizer.json and tokenizer_config.json into dir. */
int gguf_import_tokenizer(const struct gguf *g, const struct model_config *c, const char *dir);
/* Everything, into an existing (temporary) directory. */
int gguf_import(const struct gguf *g, const char *dir, const struct gguf_import_opts *o);

/* Undo llama.cpp's q/k row permutation in place. The converter reorders the
 * rows of each head (head_dim rows) from HF's [first halves; second halves]
 * to interleaved pairs: GGUF row 2i + j holds HF row j * head_dim/2 + i.
 * w has n_head * head_dim rows of `cols` floats (cols = 1 for a bias). */
void gguf_unpermute_rows(float *w, int n_head, int64_t rows, int64_t cols);
#endif
