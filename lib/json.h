/* JSON text <-> msgpack values, exactly: the JSON Lines side of record streams
 * (rl-cat, and readers given JSON Lines).
 *
 * Why not jansson here: it cannot hold integers above INT64_MAX (uint64 is a
 * msgpack type), and its number output is not the shortest round-trip form
 * that float32 values need. jansson is still used for JSON files (config.json).
 *
 * Conventions that JSON cannot express natively (man/rl-records.5):
 *   msgpack bin          <-> {"$base64": "..."}
 *   NaN, +Inf, -Inf      <-> {"$float": "nan" | "inf" | "-inf"}
 *   ext type T, data D   <-> {"$ext": [T, "base64 of D"]}
 *   scalar map keys       -> their JSON text as a string (one way only);
 *                            array, map, bin and ext keys are an error
 * Floats are printed in the shortest form that reads back to the same value
 * (float32 values: the same float32), always with a '.' or exponent so that
 * they come back as floats, not integers. */
#ifndef RLFLOW_JSON_H
#define RLFLOW_JSON_H
#include <msgpack.h>
#include <stddef.h>

#include "err.h"
#include "mpv.h"

#define JSON_MAX_DEPTH 64

/* Parse one JSON value (surrounding whitespace allowed) and pack it.
 * -1 with rl_err "column C: ..." on invalid JSON or invalid UTF-8. */
int json_to_msgpack(const char *s, size_t n, msgpack_packer *pk);

/* Append the JSON form of a validated msgpack value. -1 with rl_err when a
 * string is not valid UTF-8 (JSON cannot carry it); `path` names the field. */
int mpv_to_json(const struct mpv *v, struct rl_buf *out);

/* Shortest round-trip decimal for a double / a float; returns the length. */
int json_fmt_double(double d, char buf[32]);
int json_fmt_float(float f, char buf[32]);

/* Offset of the first invalid UTF-8 byte in s[0..n), or n if valid. */
size_t utf8_check(const char *s, size_t n);
#endif
