/* fuzz-lib: lib/err.c lib/mpv.c lib/json.c */
/* JSON -> msgpack -> JSON -> msgpack must reach a fixed point after one trip:
 * whatever the parser accepts, the printer writes back exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static int pack(const char *s, size_t n, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    return json_to_msgpack(s, n, &pk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_sbuffer a, b;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    struct rl_buf json = {0};
    if (pack((const char *)data, size, &a) == 0) {
        struct mpv_limits lim = {SIZE_MAX, 64};
        size_t used;
        if (mpv_scan((const uint8_t *)a.data, a.size, &lim, &used) != MPV_OK || used != a.size)
            abort();
        struct mpv v;
        mpv_decode((const uint8_t *)a.data, &v);
        if (mpv_to_json(&v, &json))
            abort();                  /* the parser only accepts valid UTF-8 */
        if (pack(json.data, json.len, &b) || b.size != a.size || memcmp(a.data, b.data, a.size))
            abort();                  /* printed JSON must read back to the same msgpack */
    }
    rl_buf_free(&json);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
    return 0;
}
