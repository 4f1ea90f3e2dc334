/* DESIGN.md's rule for token ids in records: ids travel with the text and
 * with `tok`, the fingerprint of the tokenizer that made them. A tool uses a
 * record's ids as they are when the record has no `tok` or the same `tok` as
 * its model's tokenizer; otherwise it re-tokenizes from the text, and fails
 * clearly when the text is missing. Never are two tokenizers' ids mixed. */
#ifndef RLFLOW_TOKRULE_H
#define RLFLOW_TOKRULE_H
#include <stdbool.h>

#include "chat.h"
#include "config.h"
#include "rec.h"
#include "tokenizer.h"

struct tok_ctx {
    struct tokenizer *tok;        /* NULL when the model directory has none */
    struct chat_template *chat;   /* NULL until a record with messages needs it */
    const char *dir, *template_name;
    int32_t eos;                  /* appended to re-tokenized responses; -1: none */
    int vocab;                    /* ids must be below this */
};

/* Load the tokenizer of a model directory when it has one. */
int tok_ctx_open(struct tok_ctx *c, const char *model_dir, const struct model_config *cfg,
                 const char *template_name);
void tok_ctx_close(struct tok_ctx *c);

/* Does the record's `tok` allow its ids as they are? -1 on a bad `tok`. */
int tok_ctx_ids_usable(struct tok_ctx *c, const struct rec *r);

/* The prompt's ids: `prompt_ids` when usable, else `messages` through the chat
 * template (with the generation prompt), else `prompt` text (with the
 * post-processor's tokens). Appends to out; -1 with an error naming the record. */
int tok_ctx_prompt(struct tok_ctx *c, const struct rec *r, struct tok_ids *out);
/* A response's ids: ids_field when usable, else text_field encoded as plain
 * text (specials off) followed by the end-of-sequence id. */
int tok_ctx_response(struct tok_ctx *c, const struct rec *r, const char *ids_field, const char *text_field,
                     struct tok_ids *out);
/* The same for element j of array fields (response_ids[j], responses[j]). */
int tok_ctx_response_at(struct tok_ctx *c, const struct rec *r, const char *ids_field, const char *text_field,
                        size_t j, struct tok_ids *out);
#endif
