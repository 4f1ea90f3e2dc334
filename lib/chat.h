/* Chat templates without Jinja: built-in renderers for the families that
 * matter, chosen from tokenizer_config.json's chat_template by its markers
 * (docs/tokenizer.md lists the markers and the exact strings produced).
 *
 *   struct chat_template *c = chat_open(tok, "model/", NULL);   // detect
 *   chat_encode(c, msgs, n, true, &ids);                        // ids, gen prompt
 *
 * Ids are produced directly: the template's own tokens are specials, and the
 * text in between (roles, message content) is encoded with specials OFF, so a
 * message that contains "<|im_end|>" cannot end its turn. */
#ifndef RLFLOW_CHAT_H
#define RLFLOW_CHAT_H
#include <stdbool.h>
#include <stddef.h>

#include "tokenizer.h"

enum chat_kind {
    CHAT_LLAMA3,      /* <|start_header_id|>role<|end_header_id|>\n\n content|trim <|eot_id|> */
    CHAT_LLAMA31,     /* Llama 3.1+: the same, with the "Cutting Knowledge Date" system block */
    CHAT_CHATML,      /* <|im_start|>role\n content <|im_end|>\n (Qwen2.5, SmolLM; default system if the template has one) */
    CHAT_QWEN3,       /* ChatML with Qwen3's <think> handling of assistant turns and tool turns */
    CHAT_MISTRAL,     /* <s>[INST] user [/INST]assistant</s> */
    CHAT_LLAMA2,      /* <s>[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] assistant </s> */
    CHAT_GEMMA,       /* <bos><start_of_turn>user\n...<end_of_turn>\n, assistant is "model" */
    CHAT_PLAIN,       /* contents joined by blank lines; the post-processor's tokens (BOS) first */
    CHAT_N_KINDS
};

struct chat_msg {
    const char *role, *content;
    size_t role_n, content_n;
};

struct chat_template;

/* Names: llama3 llama3.1 chatml qwen3 mistral llama2 gemma plain. -1 if unknown. */
int chat_kind_by_name(const char *name);
const char *chat_kind_name(int kind);
/* Detect from the Jinja text; -1 if no known marker. */
int chat_detect(const char *jinja);

/* PATH: the model directory or tokenizer.json path given to tok_load (its
 * directory's tokenizer_config.json is read), or a tokenizer_config.json.
 * name: a template name to force, or NULL to detect. NULL + rl_err on failure:
 * no config, no chat_template, an unknown template (the message suggests
 * --template NAME), or a template token the tokenizer lacks.
 * t may be NULL: the template can then only render text (chat_render). */
struct chat_template *chat_open(const struct tokenizer *t, const char *path, const char *name);
void chat_free(struct chat_template *c);
int chat_kind(const struct chat_template *c);
/* For tests: override the defaults read from tokenizer_config.json */
void chat_set_tokens(struct chat_template *c, const char *bos, const char *eos);
void chat_set_system(struct chat_template *c, const char *default_system);   /* NULL: none */

/* Append the ids of the conversation (and the assistant header when
 * gen_prompt). -1 with rl_err on bad input (invalid UTF-8, unknown role). */
int chat_encode(const struct chat_template *c, const struct chat_msg *m, size_t n, bool gen_prompt,
                struct tok_ids *out);
/* The text HF's Jinja renders for the same conversation (specials spelled out). */
int chat_render(const struct chat_template *c, const struct chat_msg *m, size_t n, bool gen_prompt,
                struct rl_buf *out);
#endif
