/* fuzz-lib: lib/safetensors.c lib/err.c lib/fsutil.c */
/* libFuzzer target: the safetensors parser on arbitrary bytes. Every tensor it
 * accepts must be readable in full (the validation promises data inside the
 * buffer), and st_find must find every listed name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_file *f = st_open_mem(data, size, "fuzz");
    if (!f)
        return 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const struct st_tensor *t = st_at(f, i);
        if (st_find(f, t->name) != t)
            abort();
        if ((size_t)t->numel * st_dtype_size(t->dtype) != t->nbytes ||
            (const uint8_t *)t->data < data || (const uint8_t *)t->data + t->nbytes > data + size)
            abort();
        float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
        st_tensor_to_f32(t, out);
        if (st_read_f32(f, t->name, out, t->ndim, t->shape) != 0)
            abort();
        free(out);
    }
    st_close(f);
    return 0;
}
