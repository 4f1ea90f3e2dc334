/* Internals of the tokenizer, shared by tok_load.c (reading the files) and
 * tokenizer.c (encode/decode). Not for use outside these two. */
#ifndef RLFLOW_TOK_IMPL_H
#define RLFLOW_TOK_IMPL_H
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_MAX_IDS (1 << 24)       /* refuse absurd vocabularies (files may come from anywhere) */
#define TOK_MAX_STEPS 16            /* pre-tokenizer / normalizer steps */
#define TOK_CACHE_MAX_WORD 64       /* bytes: longer pre-tokens are not cached */
#define TOK_CACHE_MAX_ENTRIES (1 << 17)

/* A token's bytes in the string pool; len == UINT32_MAX: no such token. */
struct tok_str { uint32_t off, len; };

struct tok_added {
    int32_t id;
    char *content;
    size_t len;
    char *dec;                  /* what decode writes: content through the ByteLevel decoder */
    size_t dec_len;
    char *match;                /* what is looked for in text: content, normalized if `normalized` */
    size_t match_len;
    bool special, lstrip, rstrip, single_word, normalized;
};

enum tok_norm { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWERCASE };
enum tok_pt { PT_SPLIT, PT_BYTELEVEL, PT_DIGITS, PT_PUNCT, PT_WSPLIT };
enum tok_split { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };

struct tok_pretok {
    enum tok_pt kind;
    pcre2_code *re;             /* Split, or ByteLevel with use_regex */
    enum tok_split behavior;    /* Split, and the per-character kinds (Digits, Punctuation, WhitespaceSplit) */
    bool invert;
    bool add_prefix_space;      /* ByteLevel */
    bool individual_digits;     /* Digits */
};

/* Open-addressing tables. Byte strings -> id (slots hold id, -1 empty);
 * merges: (left id, right id) -> (rank, merged id). */
struct tok_strmap { int32_t *slot; size_t mask; };
struct tok_merge { uint64_t key; int32_t rank, id; };

/* Pre-token cache: word bytes -> ids, filled as encode meets words. */
struct tok_cache_ent { uint32_t key_off, key_len, ids_off, n_ids; };
struct tok_cache {
    pthread_mutex_t lock;
    struct tok_cache_ent *ent;  /* key_len == UINT32_MAX: empty */
    size_t mask, count;
    struct rl_buf pool;         /* keys and ids */
};

struct tokenizer {
    char fingerprint[17];
    char *source;
    int32_t n_ids;
    /* the BPE model's vocabulary: raw bytes (byte-level chars already mapped back) */
    struct tok_str *vocab;      /* [n_ids] */
    char *pool;
    size_t pool_len;
    struct tok_strmap vocab_map;
    int32_t byte_id[256];       /* single-byte token of each byte, -1 if none */
    struct tok_merge *merges;
    size_t merges_mask;
    bool ignore_merges;
    /* added tokens, and for each id whether/which one */
    struct tok_added *added;
    int n_added;
    int32_t *added_of;          /* [n_ids]: index into added, -1 */
    uint8_t added_first[256];   /* first bytes of added tokens (fast skip) */
    bool any_normalized_added;
    /* pipeline */
    enum tok_norm norm[TOK_MAX_STEPS];
    int n_norm;
    struct tok_pretok pt[TOK_MAX_STEPS];
    int n_pt;
    int32_t *post_pre, *post_post;  /* post-processor ids before / after the sequence */
    int n_post_pre, n_post_post;
    struct tok_cache *cache;
};

/* tokenizer.c: the normalizer on s (malloc'd result, or NULL when unchanged) */
char *tok_normalize(const struct tokenizer *t, const char *s, size_t n, size_t *out_n);

/* tok_load.c */
uint64_t tok_hash(const void *p, size_t n);
int32_t tok_strmap_get(const struct tokenizer *t, const struct tok_strmap *m, const void *s, size_t n);
const struct tok_merge *tok_merge_get(const struct tokenizer *t, int32_t a, int32_t b);
#endif
