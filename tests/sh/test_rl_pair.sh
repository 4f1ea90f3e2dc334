#!/bin/bash
# rl-pair: every mode on hand-made scored records, ties, n = 1, determinism,
# length penalty, margins, the summary, and bad records.
. "$(dirname "$0")/lib.sh"
cd "$TMP"

cat > "$TMP/s.jsonl" <<'J'
{"id":"a","prompt":"p","responses":["x","y","z","x"],"rewards":[1,3,-1,0.5],"response_ids":[[1],[2,3],[4],[1]],"tok":"t1","finish":["stop","stop","length","stop"],"logps":[-1,-2,-3,-4],"iter":2}
{"id":"tie","responses":["s","t"],"rewards":[1,1]}
{"id":"same","responses":["s","s"],"rewards":[2,1]}
{"id":"one","responses":["only"],"rewards":[1]}
{"id":"norew","responses":["u","v"]}
J
pairs() { rl-pair -q "$@" "$TMP/s.jsonl" | rl-cat -f id,chosen,rejected,margin | tr -d '\n'; }

check "max-min: best vs worst" test "$(pairs)" = '{"id":"a","chosen":"y","rejected":"z","margin":4.0}'
check "default mode is max-min" test "$(pairs -M max-min)" = "$(pairs)"
check "max-max: best vs second best" test "$(pairs -M max-max)" = '{"id":"a","chosen":"y","rejected":"x","margin":2.0}'
check "all: every ordered pair with a gap, no identical texts" test "$(rl-pair -q -M all "$TMP/s.jsonl" | rl-cat -c)" = 5
check "all: ids stay unique and keep their source" test "$(rl-pair -q -M all "$TMP/s.jsonl" | rl-cat -f id,source_id -n 1)" = '{"id":"a:0-2","source_id":"a"}'
check "all with --min-margin 2" test "$(rl-pair -q -M all --min-margin 2 "$TMP/s.jsonl" | rl-cat -c)" = 4
check "--min-margin: max-max takes the best response far enough below" test "$(pairs -M max-max --min-margin 2.5)" = '{"id":"a","chosen":"y","rejected":"x","margin":2.5}'
check "--min-margin above every gap: no pair" test "$(pairs --min-margin 5)" = ''
head -n 1 "$TMP/s.jsonl" > "$TMP/a.jsonl"
check "--len-penalty re-ranks by reward - L*tokens" test "$(rl-pair -q --len-penalty 3 "$TMP/a.jsonl" | rl-cat -f chosen,rejected,margin)" = '{"chosen":"x","rejected":"z","margin":2.0}'

# pair record fields: per-response arrays dropped, everything else passed through
rl-pair -q "$TMP/s.jsonl" | rl-cat -n 1 > "$TMP/pair.json"
check "pair fields" jq -e '.chosen_ids == [2,3] and .rejected_ids == [4] and .chosen_reward == 3 and .rejected_reward == -1
    and .chosen_index == 1 and .rejected_index == 2 and .tok == "t1" and .iter == 2 and .prompt == "p"' "$TMP/pair.json"
check "per-response arrays are dropped" jq -e 'has("responses") or has("rewards") or has("response_ids") or has("finish") or has("logps") | not' "$TMP/pair.json"

# summary
rl-pair "$TMP/s.jsonl" 2> "$TMP/sum" > /dev/null
check "summary counts records, pairs and each drop reason" grep -q '5 records read, 1 pairs written (max-min); dropped: 2 ties or identical responses, 1 with fewer than two responses, 1 without rewards' "$TMP/sum"

# random modes: deterministic per (seed, id), independent of what else is in the stream
for i in $(seq 1 200); do echo "{\"id\":\"r$i\",\"responses\":[\"a\",\"b\",\"c\",\"d\"],\"rewards\":[4,3,2,1]}"; done > "$TMP/many.jsonl"
rl-pair -q -M max-random --seed 7 "$TMP/many.jsonl" | rl-cat -f rejected > "$TMP/r1"
rl-pair -q -M max-random --seed 7 "$TMP/many.jsonl" | rl-cat -f rejected > "$TMP/r2"
check "max-random is deterministic for a seed" cmp "$TMP/r1" "$TMP/r2"
tail -n 50 "$TMP/many.jsonl" | rl-pair -q -M max-random --seed 7 | rl-cat -f rejected > "$TMP/r3"
check "a record's pair does not depend on the records before it" bash -c "tail -n 50 '$TMP/r1' | cmp - '$TMP/r3'"
rl-pair -q -M max-random --seed 8 "$TMP/many.jsonl" | rl-cat -f rejected > "$TMP/r4"
check "another seed gives other picks" bash -c "! cmp -s '$TMP/r1' '$TMP/r4'"
check "max-random: chosen is always the best" test "$(rl-pair -q -M max-random "$TMP/many.jsonl" | rl-cat -f chosen | sort -u)" = '{"chosen":"a"}'
counts=$(sort "$TMP/r1" | uniq -c | awk '{print $1}' | sort -n | tr '\n' ' ')
check "max-random: each of b, c, d is picked about a third of the time ($counts)" \
    awk -v c="$counts" 'BEGIN { n = split(c, a, " "); if (n != 3) exit 1; for (i = 1; i <= 3; i++) if (a[i] < 40 || a[i] > 95) exit 1 }'
rl-pair -q -M random --seed 3 "$TMP/many.jsonl" | rl-cat -f chosen,rejected > "$TMP/rand"
check "random: chosen always outranks rejected" bash -c "! grep -E '\"chosen\":\"(b\",\"rejected\":\"a|c\",\"rejected\":\"[ab]|d)' '$TMP/rand'"
check "random: several different pairs appear" test "$(sort -u "$TMP/rand" | wc -l)" -ge 5

# simulated annotators: P(a chosen) = sigmoid((r_a - r_b) / T)
for i in $(seq 1 2000); do echo "{\"id\":\"r$i\",\"responses\":[\"a\",\"b\"],\"rewards\":[1,0]}"; done > ann.jsonl
wins=$(rl-pair -q --annotate 1 ann.jsonl | rl-cat -f chosen | grep -c '"a"')
check "--annotate 1: the better response wins sigmoid(1) = 73% of 2000 labels ($wins; 5 sigma)" \
    awk -v w="$wins" 'BEGIN { e = 2000 / (1 + exp(-1)); exit !((w - e)^2 < 25 * 2000 * 0.731 * 0.269) }'
check "--annotate labels a pair even when rewards tie" test "$(printf '{"id":"t","responses":["a","b"],"rewards":[1,1]}\n' | rl-pair -q --annotate 1 | rl-cat -c)" = 1
check "--annotate never pairs identical texts" test "$(printf '{"id":"t","responses":["a","a"],"rewards":[2,1]}\n' | rl-pair -q --annotate 1 | rl-cat -c)" = 0

# bad records: exit 1, message names record and field, earlier pairs written
printf '%s\n' '{"id":"ok","responses":["a","b"],"rewards":[1,0]}' '{"id":"bad","responses":["a","b"],"rewards":[1]}' > "$TMP/bad.jsonl"
check_fails "rewards count mismatch" 1 'record 2 \(line 2\): field "rewards" has 1 values for 2 responses' rl-pair "$TMP/bad.jsonl"
check "the good pair before the bad record was written" test "$(rl-pair "$TMP/bad.jsonl" 2>/dev/null | rl-cat -c)" = 1
printf '%s\n' '{"id":"x","responses":["a","b"],"rewards":"high"}' > "$TMP/bad2.jsonl"
check_fails "rewards of the wrong type" 1 'field "rewards" is a string, expected an array of numbers' rl-pair "$TMP/bad2.jsonl"
printf '%s\n' '{"id":"x","responses":["a","b"],"rewards":[1,0]}' > "$TMP/noids.jsonl"
check_fails "--len-penalty without response_ids" 1 'needs "response_ids"' rl-pair --len-penalty 0.1 "$TMP/noids.jsonl"
check_fails "unknown mode is a usage error" 2 "unknown mode 'best'" rl-pair -M best
finish
