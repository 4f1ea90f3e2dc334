/* A rule-based reward: the sum of the weights of lexicon words in a text,
 * minus a penalty per word beyond a target length. Words are maximal runs of
 * ASCII letters, digits and apostrophes, matched case-insensitively; other
 * bytes separate words. The lexicon is a TSV file: word, weight, anything
 * else (VADER's format works as it is). */
#ifndef RLFLOW_LEXICON_H
#define RLFLOW_LEXICON_H
#include <stddef.h>

struct lexicon;
struct lexicon *lexicon_load(const char *path);   /* NULL with rl_err naming the line */
void lexicon_free(struct lexicon *l);
size_t lexicon_size(const struct lexicon *l);

struct lexicon_score { double sum; size_t words, matched; };
void lexicon_score(const struct lexicon *l, const char *text, size_t n, struct lexicon_score *out);
#endif
