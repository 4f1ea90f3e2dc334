#!/bin/bash
# rl-lexicon: weights, word splitting, length penalty, VADER's format, errors.
. "$(dirname "$0")/lib.sh"
cd "$TMP"
printf '# test\ngood\t1\nbad\t-2\nisn'"'"'t\t-0.5\ngood\t1.5\n' > lex.tsv
printf '{"id":"a","responses":["Good, GOOD good.","bad-isn'"'"'t x y z",""]}\n' > r.jsonl
check "sum of weights, case-insensitive, later lines replace earlier" \
    test "$(rl-lexicon -l lex.tsv r.jsonl | rl-cat | jq -c .rewards)" = '[4.5,-2.5,0]'
check "--length-penalty beyond --target-words" \
    test "$(rl-lexicon -l lex.tsv --length-penalty 1 --target-words 3 r.jsonl | rl-cat | jq -c .rewards)" = '[4.5,-4.5,0]'
check "--mean and --field" test "$(rl-lexicon -l lex.tsv --mean -f gold r.jsonl | rl-cat | jq -c .gold)" = '[1.5,-0.5,0]'
vader="$RL_FIXTURES/lexicons/vader_lexicon.txt"
if [ -f "$vader" ]; then
    printf '{"id":"v","responses":["what a wonderful, happy day","this is terrible and sad"]}\n' > v.jsonl
    check "VADER's lexicon loads as it is and scores sentiment" bash -c "rl-lexicon -l '$vader' v.jsonl | rl-cat | jq -e '.rewards[0] > 2 and .rewards[1] < -2'"
else
    skip "VADER's lexicon loads as it is and scores sentiment" "no fixtures"
fi
printf 'good 1\n' > bad.tsv
check_fails "a line without a tab names file and line" 1 'bad.tsv:1: expected "word<TAB>weight"' rl-lexicon -l bad.tsv r.jsonl
printf 'good\tx\n' > bad2.tsv
check_fails "a weight that is not a number" 1 'bad2.tsv:1: the weight of "good" is not a number' rl-lexicon -l bad2.tsv r.jsonl
printf '{"id":"n"}\n' > n.jsonl
check_fails "a record without responses" 1 'record 1 \(line 1\): no "responses"' rl-lexicon -l lex.tsv n.jsonl
check_fails "no lexicon" 2 'LEXICON.tsv is required' rl-lexicon
finish
