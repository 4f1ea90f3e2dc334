#include "lexicon.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <strings.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsutil.h"

struct lexicon {
    char **word;                 /* open addressing, lowercase keys */
    double *weight;
    size_t cap, count;
};

static uint64_t hash_word(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)tolower((unsigned char)s[i])) * 0x100000001b3ull;
    return h;
}

static size_t slot_of(const struct lexicon *l, const char *w, size_t n)
{
    size_t i = hash_word(w, n) & (l->cap - 1);
    while (l->word[i] && !(strlen(l->word[i]) == n && !strncasecmp(l->word[i], w, n)))
        i = (i + 1) & (l->cap - 1);
    return i;
}

static void grow(struct lexicon *l)
{
    struct lexicon old = *l;
    l->cap = old.cap ? 2 * old.cap : 1024;
    l->word = rl_calloc(l->cap, sizeof *l->word);
    l->weight = rl_calloc(l->cap, sizeof *l->weight);
    for (size_t i = 0; i < old.cap; i++)
        if (old.word[i]) {
            size_t s = slot_of(l, old.word[i], strlen(old.word[i]));
            l->word[s] = old.word[i];
            l->weight[s] = old.weight[i];
        }
    free(old.word);
    free(old.weight);
}

static bool word_byte(unsigned char c) { return isalnum(c) || c == '\''; }

/* One "word<TAB>weight..." line; blank lines and lines starting with # are skipped. */
static int add_line(struct lexicon *l, char *line, const char *path, int lineno)
{
    line[strcspn(line, "\r\n")] = 0;
    if (!*line || *line == '#')
        return 0;
    char *tab = strchr(line, '\t');
    if (!tab)
        return rl_err("%s:%d: expected \"word<TAB>weight\"", path, lineno);
    *tab = 0;
    char *end;
    errno = 0;
    double w = strtod(tab + 1, &end);
    if (errno || end == tab + 1 || (*end && *end != '\t'))
        return rl_err("%s:%d: the weight of \"%s\" is not a number", path, lineno, line);
    if (2 * (l->count + 1) > l->cap)
        grow(l);
    size_t s = slot_of(l, line, strlen(line));
    if (!l->word[s]) {
        l->word[s] = rl_strdup(line);
        l->count++;
    }
    l->weight[s] = w;
    return 0;
}

struct lexicon *lexicon_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return rl_errno("%s: cannot open", path), NULL;
    struct lexicon *l = rl_calloc(1, sizeof *l);
    grow(l);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (!rc && getline(&line, &cap, f) > 0)
        rc = add_line(l, line, path, ++lineno);
    free(line);
    fclose(f);
    if (rc)
        return lexicon_free(l), NULL;
    return l;
}

void lexicon_free(struct lexicon *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->cap; i++)
        free(l->word[i]);
    free(l->word);
    free(l->weight);
    free(l);
}

size_t lexicon_size(const struct lexicon *l) { return l->count; }

void lexicon_score(const struct lexicon *l, const char *text, size_t n, struct lexicon_score *out)
{
    *out = (struct lexicon_score){0};
    for (size_t i = 0; i < n;) {
        if (!word_byte((unsigned char)text[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && word_byte((unsigned char)text[j]))
            j++;
        size_t s = slot_of(l, text + i, j - i);
        if (l->word[s]) {
            out->sum += l->weight[s];
            out->matched++;
        }
        out->words++;
        i = j;
    }
}
