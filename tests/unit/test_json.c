/* JSON <-> msgpack: exact round trips, shortest floats, clear errors. */
#include <math.h>
#include <string.h>

#include "../harness.h"
#include "json.h"

/* JSON text -> msgpack -> JSON text */
static int rt(const char *in, struct rl_buf *out)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    out->len = 0;
    int rc = json_to_msgpack(in, strlen(in), &pk);
    if (!rc) {
        struct mpv v;
        size_t size;
        struct mpv_limits lim = {1 << 20, 64};
        if (mpv_scan((const uint8_t *)sb.data, sb.size, &lim, &size) != MPV_OK || size != sb.size)
            rc = -1;
        else {
            mpv_decode((const uint8_t *)sb.data, &v);
            rc = mpv_to_json(&v, out);
        }
    }
    rl_buf_putc(out, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void exact(const char *in)
{
    struct rl_buf b = {0};
    int rc = rt(in, &b);
    char name[200];
    snprintf(name, sizeof name, "round trip %.150s", in);
    CHECKF(name, rc == 0 && strcmp(b.data, in) == 0, "got '%s' (%s)", b.data ? b.data : "", rc ? rl_errmsg() : "");
    rl_buf_free(&b);
}

static void maps_to(const char *in, const char *want)
{
    struct rl_buf b = {0};
    int rc = rt(in, &b);
    char name[200];
    snprintf(name, sizeof name, "%.80s reads as %.80s", in, want);
    CHECKF(name, rc == 0 && strcmp(b.data, want) == 0, "got '%s'", b.data ? b.data : "");
    rl_buf_free(&b);
}

static void fails(const char *in, const char *msg)
{
    struct rl_buf b = {0};
    int rc = rt(in, &b);
    char name[200];
    snprintf(name, sizeof name, "rejects %.60s", in);
    CHECKF(name, rc == -1 && strstr(rl_errmsg(), msg), "rc %d, message '%s'", rc, rl_errmsg());
    rl_buf_free(&b);
}

static void test_roundtrips(void)
{
    exact("{\"s\":\"plain\",\"u\":\"h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80\"}");
    exact("{\"esc\":\"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f nul\\u0000 c\\u001f /\"}");
    exact("{\"i\":[0,1,-1,127,128,-32,-33,255,256,65535,65536,4294967295,4294967296,9223372036854775807,"
          "-9223372036854775808,18446744073709551615]}");
    exact("{\"f\":[0.1,1.0,-2.5,100.0,0.0001,1e-05,1234567890123456.0,1e+16,1e+300,5e-324,1.7976931348623157e+308,0.30000000000000004,-0.0,123456789.0]}");
    exact("{\"n\":null,\"t\":true,\"f\":false,\"e\":[],\"m\":{},\"nested\":[[{\"a\":[{}]}]]}");
    exact("{\"b\":{\"$base64\":\"\"},\"b1\":{\"$base64\":\"AA==\"},\"b2\":{\"$base64\":\"AAE=\"},\"b3\":{\"$base64\":\"/+7d\"}}");
    exact("{\"x\":{\"$float\":\"nan\"},\"y\":{\"$float\":\"inf\"},\"z\":{\"$float\":\"-inf\"}}");
    exact("{\"e\":{\"$ext\":[5,\"AQID\"]},\"e2\":{\"$ext\":[-1,\"\"]}}");
    exact("{\"\":\"empty key\",\"dup\":1,\"dup\":2}");
    maps_to("  { \"a\" : [ 1 , 2 ] }\r", "{\"a\":[1,2]}");
    maps_to("{\"u\":\"\\u00e9\\ud83d\\ude00\"}", "{\"u\":\"\xc3\xa9\xf0\x9f\x98\x80\"}");
    maps_to("{\"big\":18446744073709551616}", "{\"big\":1.8446744073709552e+19}");
    maps_to("{\"e\":1E2,\"f\":-0}", "{\"e\":100.0,\"f\":0}");
    maps_to("{\"d\":\"\\u007f\\/\"}", "{\"d\":\"\x7f/\"}");
}

static void test_float_format(void)
{
    char buf[32];
    json_fmt_float(0.1f, buf);
    CHECKF("float32 0.1 prints as 0.1", !strcmp(buf, "0.1"), "%s", buf);
    json_fmt_float(16777216.0f, buf);
    CHECKF("float32 2^24 prints as a float", !strcmp(buf, "16777216.0"), "%s", buf);
    json_fmt_float(3.4028235e38f, buf);
    CHECKF("float32 max", strtof(buf, NULL) == 3.4028235e38f, "%s", buf);
    json_fmt_double(0.1 + 0.2, buf);
    CHECKF("double 0.1+0.2", !strcmp(buf, "0.30000000000000004"), "%s", buf);
    /* every float32 bit pattern from a sweep reads back exactly */
    int bad = 0;
    for (uint32_t bits = 0; bits < 0x7f800000u; bits += 0x10001u) {
        float f;
        memcpy(&f, &bits, 4);
        json_fmt_float(f, buf);
        if (strtof(buf, NULL) != f || strlen(buf) > 24) bad++;
    }
    CHECKF("float32 sweep round-trips", bad == 0, "%d failures", bad);
    bad = 0;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        double d;
        memcpy(&d, &x, 8);
        if (!isfinite(d)) continue;
        json_fmt_double(d, buf);
        if (strtod(buf, NULL) != d) bad++;
    }
    CHECKF("random doubles round-trip", bad == 0, "%d failures", bad);
}

static void test_errors(void)
{
    fails("{\"a\":1", "column 7");
    fails("{\"a\" 1}", "expected ':'");
    fails("{\"a\":1,}", "expected a string key");
    fails("{\"a\":[1 2]}", "expected ',' or ']'");
    fails("{\"a\":01}", "column 7");
    fails("{\"a\":1.}", "invalid number");
    fails("{\"a\":\"\\x\"}", "invalid escape");
    fails("{\"a\":\"\\ud800\"}", "high surrogate");
    fails("{\"a\":\"\\udc00\"}", "lone low surrogate");
    fails("{\"a\":\"tab\there\"}", "control character");
    fails("{\"a\":\"\xc0\xaf\"}", "invalid UTF-8");
    fails("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8");
    fails("{\"a\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8");
    fails("{\"a\":1} x", "unexpected text after");
    fails("{\"a\":{\"$base64\":\"A\"}}", "not valid base64");
    fails("{\"a\":{\"$float\":\"NaN!\"}}", "\"$float\" must be");
    fails("{\"a\":truth}", "invalid literal");
    char deep[300] = "{\"a\":";
    for (int i = 0; i < 70; i++) strcat(deep, "[");
    fails(deep, "nesting deeper than 64");
}

static void test_invalid_utf8_out(void)
{
    const uint8_t bad[] = {0x81, 0xa1, 'a', 0xa2, 0xc3, 0x28};
    struct mpv v;
    mpv_decode(bad, &v);
    struct rl_buf b = {0};
    CHECK("invalid UTF-8 in a msgpack string cannot become JSON", mpv_to_json(&v, &b) == -1 && strstr(rl_errmsg(), "not valid UTF-8"));
    rl_buf_free(&b);
    CHECK("utf8_check finds the offset", utf8_check("ab\xff", 3) == 2 && utf8_check("\xe2\x82\xac", 3) == 3);
}

int main(void)
{
    test_roundtrips();
    test_float_format();
    test_errors();
    test_invalid_utf8_out();
    return harness_exit();
}
