/* rl-cat: record streams <-> JSON Lines, for inspection with jq and for
 * writing records by hand. See man/rl-cat.1. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "json.h"
#include "rec.h"

static const char usage[] =
    "Usage: rl-cat [OPTION]... [FILE]...\n"
    "Print record streams (zstd msgpack, raw msgpack or JSON Lines) as JSON Lines,\n"
    "or, with -p, write them as a record stream. With no FILE, or FILE -, read stdin.\n"
    "\n"
    "  -p, --pack           write a record stream (zstd-compressed msgpack) instead of JSON\n"
    "  -L, --level N        zstd level for -p (1..19, negative = faster; 0 = raw msgpack; default 3)\n"
    "  -n, --head N         stop after N records (over all inputs)\n"
    "      --skip N         leave out the first N records (over all inputs)\n"
    "  -s, --set KEY=VALUE  add or replace a field; VALUE is JSON, or else a string\n"
    "  -c, --count          print only the number of records\n"
    "  -f, --fields LIST    keep only these fields (comma-separated), in record order\n"
    "      --max-record SZ  largest record accepted (default 64M; K, M, G suffixes)\n"
    "      --force          write a binary stream even to a terminal\n"
    "  -h, --help           show this help\n"
    "\n"
    "Exit status: 0 on success, 1 on bad input or I/O error, 2 on a usage error.\n";

struct cat_opts {
    bool pack, count, force;
    int level;
    long long head;              /* -1: all */
    long long skip;
    char **set_keys;             /* --set: keys and their packed values */
    msgpack_sbuffer *set_vals;
    size_t nset;
    char **fields;
    size_t nfields;
    size_t max_record;
};

struct cat_state {
    const struct cat_opts *o;
    struct rec_writer *w;        /* --pack */
    struct rl_buf out;           /* JSON output not yet written */
    long long records, seen;
};

static void split_fields(struct cat_opts *o, const char *list)
{
    char *copy = rl_strdup(list), *save = NULL;
    for (char *f = strtok_r(copy, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
        o->fields = rl_realloc(o->fields, (o->nfields + 1) * sizeof *o->fields);
        o->fields[o->nfields++] = rl_strdup(f);
    }
    free(copy);
    if (!o->nfields)
        rl_usage_error("--fields: empty field list");
}

/* --set KEY=VALUE: VALUE as JSON when it parses, else as a string. */
static void add_set(struct cat_opts *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        rl_usage_error("--set: '%s' is not KEY=VALUE", arg);
    o->set_keys = rl_realloc(o->set_keys, (o->nset + 1) * sizeof *o->set_keys);
    o->set_vals = rl_realloc(o->set_vals, (o->nset + 1) * sizeof *o->set_vals);
    o->set_keys[o->nset] = strndup(arg, (size_t)(eq - arg));
    msgpack_sbuffer *sb = &o->set_vals[o->nset++];
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (json_to_msgpack(eq + 1, strlen(eq + 1), &pk)) {
        sb->size = 0;
        msgpack_pack_str(&pk, strlen(eq + 1));
        msgpack_pack_str_body(&pk, eq + 1, strlen(eq + 1));
    }
}

static struct cat_opts parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"pack", no_argument, 0, 'p'},       {"level", required_argument, 0, 'L'},
        {"head", required_argument, 0, 'n'}, {"count", no_argument, 0, 'c'},
        {"fields", required_argument, 0, 'f'}, {"max-record", required_argument, 0, 'M'},
        {"force", no_argument, 0, 'F'},      {"help", no_argument, 0, 'h'},
        {"skip", required_argument, 0, 'K'}, {"set", required_argument, 0, 's'},
        {0, 0, 0, 0},
    };
    struct cat_opts o = {.level = 3, .head = -1, .max_record = REC_DEFAULT_MAX_RECORD};
    int c;
    while ((c = getopt_long(argc, argv, "pL:n:cf:s:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': o.pack = true; break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case 'n': o.head = cli_int("--head", optarg, 0, INT64_MAX); break;
        case 'c': o.count = true; break;
        case 'f': split_fields(&o, optarg); break;
        case 'M': o.max_record = cli_size("--max-record", optarg); break;
        case 'F': o.force = true; break;
        case 'K': o.skip = cli_int("--skip", optarg, 0, INT64_MAX); break;
        case 's': add_set(&o, optarg); break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    if (o.count && o.pack)
        rl_usage_error("--count and --pack do not go together");
    return o;
}

static bool field_wanted(const struct cat_opts *o, const struct mpv *key)
{
    if (!o->nfields)
        return true;
    for (size_t i = 0; i < o->nfields; i++)
        if (mpv_str_eq(key, o->fields[i]))
            return true;
    return false;
}

static void flush_json(void *ctx)
{
    struct cat_state *s = ctx;
    if (s->out.len && rl_write_all(STDOUT_FILENO, s->out.data, s->out.len, "stdout"))
        rl_die_err();
    s->out.len = 0;
}

static void flush_output(void *ctx)
{
    struct cat_state *s = ctx;
    if (s->w && rec_flush(s->w))
        rl_die_err();
    flush_json(s);
}

static bool is_set_key(const struct cat_opts *o, const struct mpv *k)
{
    for (size_t i = 0; i < o->nset; i++)
        if (mpv_str_eq(k, o->set_keys[i]))
            return true;
    return false;
}

static int emit_json(struct cat_state *s, const struct rec *r)
{
    struct mpv_iter it = mpv_iter_map(&r->map);
    struct mpv k, v;
    bool first = true;
    size_t mark = s->out.len;
    rl_buf_putc(&s->out, '{');
    while (mpv_next_pair(&it, &k, &v)) {
        if (!field_wanted(s->o, &k) || is_set_key(s->o, &k))
            continue;
        if (!first)
            rl_buf_putc(&s->out, ',');
        first = false;
        struct mpv whole = r->map;   /* key and value printed as a one-pair map */
        if (mpv_to_json(&k, &s->out) || (rl_buf_putc(&s->out, ':'), mpv_to_json(&v, &s->out))) {
            s->out.len = mark;
            (void)whole;
            return rec_err(r, "field \"%.*s\": %s", k.type == MPV_STR ? (int)k.v.str.n : 0,
                           k.type == MPV_STR ? k.v.str.s : "", rl_errmsg());
        }
    }
    for (size_t i = 0; i < s->o->nset; i++) {       /* --set fields come last */
        struct mpv key = {.type = MPV_STR, .v.str = {s->o->set_keys[i], (uint32_t)strlen(s->o->set_keys[i]), 0}}, val;
        mpv_decode((const uint8_t *)s->o->set_vals[i].data, &val);
        if (!first)
            rl_buf_putc(&s->out, ',');
        first = false;
        mpv_to_json(&key, &s->out);
        rl_buf_putc(&s->out, ':');
        mpv_to_json(&val, &s->out);
    }
    rl_buf_put(&s->out, "}\n", 2);
    if (s->out.len >= (1u << 20))
        flush_json(s);
    return 0;
}

static void put_sets(struct cat_state *s)
{
    for (size_t i = 0; i < s->o->nset; i++) {
        struct mpv val;
        mpv_decode((const uint8_t *)s->o->set_vals[i].data, &val);
        rec_put_raw(s->w, s->o->set_keys[i], &val);
    }
}

static int emit_packed(struct cat_state *s, const struct rec *r)
{
    if (!s->o->nfields && !s->o->nset)
        return rec_write_raw(s->w, r->raw, r->size);
    if (!s->o->nfields) {
        rec_begin(s->w, r);                         /* pass-through, --set fields replaced */
        put_sets(s);
        return rec_end(s->w);
    }
    struct mpv_iter it = mpv_iter_map(&r->map);
    struct mpv k, v;
    rec_begin(s->w, NULL);
    while (mpv_next_pair(&it, &k, &v))
        if (field_wanted(s->o, &k) && k.type == MPV_STR && !is_set_key(s->o, &k)) {
            char key[1024];
            snprintf(key, sizeof key, "%.*s", (int)k.v.str.n, k.v.str.s);
            rec_put_raw(s->w, key, &v);
        }
    put_sets(s);
    return rec_end(s->w);
}

/* 1: go on, 0: --head reached, -1: error (already in rl_errmsg). */
static int cat_one(struct cat_state *s, const char *path)
{
    struct rec_reader *r = rec_reader_open(path);
    if (!r)
        return -1;
    rec_reader_set_max_record(r, s->o->max_record);
    rec_reader_on_wait(r, flush_output, s);
    struct rec rec;
    int k = 1;
    while (k == 1 && (s->o->head < 0 || s->records < s->o->head)) {
        k = rec_next(r, &rec);
        if (k != 1)
            break;
        if (s->seen++ < s->o->skip)
            continue;
        s->records++;
        if (s->o->count)
            continue;
        if ((s->o->pack ? emit_packed(s, &rec) : emit_json(s, &rec)))
            k = -1;
    }
    rec_reader_close(r);
    if (k < 0)
        return -1;
    return s->o->head < 0 || s->records < s->o->head;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct cat_opts o = parse_args(argc, argv);
    struct cat_state s = {.o = &o};
    if (o.pack) {
        if (rl_refuse_tty(STDOUT_FILENO, o.force))
            rl_die_err();
        s.w = rec_writer_open(STDOUT_FILENO, o.level, "stdout");
    }
    char *stdin_only[] = {"-"};
    char **inputs = optind < argc ? argv + optind : stdin_only;
    int ninputs = optind < argc ? argc - optind : 1;
    int rc = 0;
    for (int i = 0; i < ninputs; i++) {
        int k = cat_one(&s, inputs[i]);
        if (k < 0) {
            rc = 1;
            break;
        }
        if (k == 0)
            break;
    }
    const char *err = rc ? rl_strdup(rl_errmsg()) : NULL;
    if (o.count)
        rl_buf_printf(&s.out, "%lld\n", s.records);
    flush_json(&s);
    if (s.w && rec_writer_close(s.w))
        rl_die_err();
    if (err)
        rl_die("%s", err);
    rl_buf_free(&s.out);
    for (size_t i = 0; i < o.nfields; i++)
        free(o.fields[i]);
    free(o.fields);
    for (size_t i = 0; i < o.nset; i++) {
        free(o.set_keys[i]);
        msgpack_sbuffer_destroy(&o.set_vals[i]);
    }
    free(o.set_keys);
    free(o.set_vals);
    return 0;
}
