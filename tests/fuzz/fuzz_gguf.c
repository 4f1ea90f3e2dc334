/* fuzz-lib: lib/err.c lib/fsutil.c lib/gguf.c */
/* libFuzzer target: the GGUF reader on arbitrary bytes. Whatever it accepts
 * must be safe to use in full: every tensor's data inside the buffer, every
 * key and tensor found by name, every string and integer array element
 * readable, and every supported tensor dequantizable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gguf *g = gguf_open_mem(data, size, "fuzz");
    if (!g)
        return 0;
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        if (gguf_find_kv(g, kv->key) != kv)
            abort();
        int64_t v;
        double f;
        bool b;
        struct gguf_str s;
        gguf_get_int(g, kv->key, &v);
        gguf_get_float(g, kv->key, &f);
        gguf_get_bool(g, kv->key, &b);
        if (gguf_get_str(g, kv->key, &s) == 0 && s.n)
            sink += (uint8_t)s.p[s.n - 1];
        if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING)
            for (uint64_t k = 0; k < kv->n; k++)
                if (kv->strs[k].n)
                    sink += (uint8_t)kv->strs[k].p[kv->strs[k].n - 1];
        if (gguf_get_arr(g, kv->key, GGUF_I64))
            for (uint64_t k = 0; k < kv->n; k++)
                sink += (uint64_t)gguf_arr_int(kv, k);
    }
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_find_tensor(g, t->name) != t)
            abort();
        if ((const uint8_t *)t->data < data || t->nbytes > size ||
            (const uint8_t *)t->data + t->nbytes > data + size)
            abort();
        if (!ggml_type_supported(t->type) || t->numel > (1 << 20))
            continue;
        float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
        if (gguf_tensor_to_f32(t, out) != 0)
            abort();
        free(out);
    }
    gguf_close(g);
    return 0;
}
