/* Byte-level BPE tokenizer, exact with Hugging Face `tokenizers` (docs/tokenizer.md).
 *
 *   struct tokenizer *t = tok_load("model/");          // tokenizer.json or GPT-2 pair
 *   struct tok_ids ids = {0};
 *   tok_encode(t, text, len, TOK_SPECIAL, &ids);       // appends ids
 *   tok_decode(t, ids.v, ids.n, 0, &buf);              // exact bytes back
 *   tok_fingerprint(t);                                // "tok" field: 16 hex chars
 *
 * The split regexes, normalizer, added tokens and post-processor all come from
 * the file. A tokenizer is read-only after loading and may be shared between
 * threads (the pre-token cache takes a lock, or is skipped when busy). */
#ifndef RLFLOW_TOKENIZER_H
#define RLFLOW_TOKENIZER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct tokenizer;

/* Ids grow by appending; the caller owns v (free(ids.v)). */
struct tok_ids {
    int32_t *v;
    size_t n, cap;
};
void tok_ids_push(struct tok_ids *ids, int32_t id);

/* PATH: a tokenizer.json file, a directory holding tokenizer.json, or a
 * GPT-2 directory with vocab.json + merges.txt (or encoder.json + vocab.bpe).
 * NULL with rl_err set (naming file and field) on failure. */
struct tokenizer *tok_load(const char *path);
/* The same from tokenizer.json text in memory; name is used in messages. */
struct tokenizer *tok_load_json(const char *text, size_t len, const char *name);
void tok_free(struct tokenizer *t);

/* FNV-1a 64 of the tokenizer file's bytes as 16 lowercase hex digits (for the
 * GPT-2 pair: of encoder/vocab file bytes, then a NUL, then the merges bytes). */
const char *tok_fingerprint(const struct tokenizer *t);
const char *tok_source(const struct tokenizer *t);   /* the file(s) it came from */
int32_t tok_n_ids(const struct tokenizer *t);        /* highest id + 1 */

enum {
    TOK_SPECIAL = 1,      /* special added tokens written in the text are specials
                             (HF encode); without it they are plain text.
                             Non-special added tokens are always matched, as in HF. */
    TOK_ADD_SPECIAL = 2,  /* apply the post-processor (e.g. a BOS from TemplateProcessing) */
    TOK_SKIP_SPECIAL = 4, /* decode: leave special tokens out */
};

/* Encode UTF-8 text, appending to *out. -1 on invalid UTF-8, with the byte
 * offset in the message (nothing is appended then). */
int tok_encode(const struct tokenizer *t, const char *text, size_t len, unsigned flags,
               struct tok_ids *out);

/* Decode ids to the exact bytes (appended to *out, not NUL-terminated: the
 * bytes may be partial UTF-8 when the ids split a character). -1 on an id out
 * of range, naming its index. */
int tok_decode(const struct tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
               struct rl_buf *out);

/* Token lookup. tok_id: exact token (added content, or a vocab entry's bytes),
 * -1 if none. tok_bytes: the token's bytes as matched in text (an added
 * token's content), NULL if id is not a token. (Decode writes an added token
 * the way HF's ByteLevel decoder does: content made only of byte-level
 * characters, such as "Ġx", becomes those bytes; any other content as is.) */
int32_t tok_id(const struct tokenizer *t, const char *s, size_t n);
int32_t tok_added_id(const struct tokenizer *t, const char *s, size_t n);   /* added tokens only */
const char *tok_bytes(const struct tokenizer *t, int32_t id, size_t *n);
bool tok_is_special(const struct tokenizer *t, int32_t id);
/* Added-token flags for chat rendering: whitespace next to this token that HF
 * would strip (lstrip: before it, rstrip: after it). */
void tok_strip_flags(const struct tokenizer *t, int32_t id, bool *lstrip, bool *rstrip);

/* Streaming decode for generation output: push ids one by one; complete UTF-8
 * is appended to *out at once, an incomplete trailing sequence is held back
 * until the next token completes it. Invalid bytes become U+FFFD, so *out is
 * always valid UTF-8. */
struct tok_stream {
    const struct tokenizer *t;
    unsigned flags;
    unsigned char pend[8];
    int npend;
};
void tok_stream_init(struct tok_stream *s, const struct tokenizer *t, unsigned flags);
int tok_stream_push(struct tok_stream *s, int32_t id, struct rl_buf *out);
void tok_stream_finish(struct tok_stream *s, struct rl_buf *out);   /* flush held bytes as U+FFFD */

/* UTF-8 validation: length of the longest valid prefix (== n when valid). */
size_t tok_utf8_valid(const char *s, size_t n);
#endif
