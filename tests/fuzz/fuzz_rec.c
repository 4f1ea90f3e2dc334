/* fuzz-lib: lib/err.c lib/mpv.c lib/json.c lib/rec.c */
/* The record reader on arbitrary bytes: every record it accepts must be a
 * fully walkable map that converts to JSON or fails cleanly. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "json.h"
#include "rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    lseek(fd, 0, SEEK_SET);
    struct rec_reader *r = rec_reader_fdopen(fd, "fuzz");
    rec_reader_set_max_record(r, 1 << 20);
    struct rec rec;
    struct rl_buf out = {0};
    while (rec_next(r, &rec) == 1) {
        if (rec.map.type != MPV_MAP || rec.map.size != rec.size)
            abort();
        out.len = 0;
        (void)mpv_to_json(&rec.map, &out);
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        (void)rec_get_i32s(&rec, "ids", &ids, &n, &cap);
        free(ids);
    }
    rl_buf_free(&out);
    rec_reader_close(r);
    close(fd);
    return 0;
}
