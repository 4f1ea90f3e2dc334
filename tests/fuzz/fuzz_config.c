/* fuzz-lib: lib/config.c lib/err.c lib/fsutil.c lib/weights_layout.c */
/* libFuzzer target: config.json parsing and the tensor layout derived from it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "weights_layout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    struct model_config c;
    if (config_parse(s, "fuzz", &c) == 0) {
        int n = hf_tensor_count(&c);
        for (int i = 0; i < n; i++) {
            struct hf_tensor t;
            hf_tensor_info(&c, i, &t);
            if (t.numel <= 0 || hf_tensor_find(&c, t.name) != i)
                abort();
        }
    }
    free(s);
    return 0;
}
