#!/bin/bash
# rl-eval surface: formats, grouping, plot, errors. (Numbers are checked
# against numpy/torch in tests/py/test_rl_eval.py.)
. "$(dirname "$0")/lib.sh"
cat > "$TMP/e.jsonl" <<'J'
{"id":"a","stage":"sft","responses":["xx","yy"],"rewards":[1,3]}
{"id":"b","stage":"sft","responses":["x","y"],"rewards":[0,2]}
{"id":"a","stage":"iter1","responses":["xx","y"],"rewards":[2,4]}
J
rl-eval "$TMP/e.jsonl" > "$TMP/t"
check "table: one column without --by" grep -qE '^reward_mean +2\.0000$' "$TMP/t"
check "table: absent statistics are not shown" bash -c "! grep -q '^kl' '$TMP/t'"
rl-eval -B stage "$TMP/e.jsonl" > "$TMP/t2"
check "table: a column per group in order of appearance" grep -qE '^stage +sft +iter1$' "$TMP/t2"
check "json: one object per group with the --by field" test "$(rl-eval -B stage -f json "$TMP/e.jsonl" | jq -c '[.stage, .best_of_n_mean, .kl]' | tr -d '\n')" = '["sft",2.5,null]["iter1",4,null]'
check "msgpack: a record stream" test "$(rl-eval -B stage -f msgpack "$TMP/e.jsonl" | rl-cat -f stage,records | tr -d '\n')" = '{"stage":"sft","records":2}{"stage":"iter1","records":1}'
check "--reward-field" test "$(sed 's/"rewards"/"gold"/' "$TMP/e.jsonl" | rl-eval -r gold -f json | jq .reward_mean)" = 2
if command -v gnuplot > /dev/null; then
    rl-eval -B stage -p "$TMP/r.png" "$TMP/e.jsonl" > /dev/null
    check "--plot writes a PNG" bash -c "head -c 8 '$TMP/r.png' | grep -q PNG"
else
    skip "--plot writes a PNG" "gnuplot not installed"
fi
printf '{"id":"a","rewards":[1,2],"response_ids":[[1]]}\n' > "$TMP/bad.jsonl"
check_fails "response_ids not aligned with rewards" 1 'record 1 \(line 1\): field "response_ids" has 1 lists for 2 rewards' rl-eval "$TMP/bad.jsonl"
printf '{"id":"a","rewards":[1]}\n{"id":"a","rewards":[2]}\n' > "$TMP/dup.jsonl"
check_fails "duplicate baseline ids" 1 'baseline: .*id "a" appears twice' rl-eval -b "$TMP/dup.jsonl" "$TMP/e.jsonl"
check_fails "bad format" 2 "not table, json or msgpack" rl-eval -f xml
printf '{"id":"z"}\n' > "$TMP/none.jsonl"
check_fails "records without rewards are counted in a warning" 0 '1 records had neither "rewards"' rl-eval "$TMP/none.jsonl"
finish
