#!/bin/bash
# rl-rm and rl-score end to end: a learnable preference rule is learned to
# >= 95% held-out accuracy; scoring is consistent, batch-independent and
# antisymmetric under swapping; bad records fail clearly.
. "$(dirname "$0")/lib.sh"
cd "$TMP"
rl-init --config "$RL_ROOT/tests/data/configs/tiny-llama.json" -o lm --seed 4 2>/dev/null
"$PYTHON" - <<'PY'
import json, random
r = random.Random(2)
def pairs(n, path):
    with open(path, "w") as f:
        for i in range(n):
            # the rule: a response that contains token 7 is preferred
            p = [r.randrange(10, 256) for _ in range(r.randint(1, 5))]
            a = [r.randrange(10, 256) for _ in range(r.randint(2, 6))]
            b = [r.randrange(10, 256) for _ in range(r.randint(2, 6))]
            a.insert(r.randrange(len(a)), 7)
            f.write(json.dumps({"id": "r%d" % i, "prompt_ids": p, "chosen_ids": a, "rejected_ids": b}) + "\n")
pairs(400, "train.jsonl")
pairs(100, "heldout.jsonl")
PY
rl-rm -q -m lm -o rm --lr 3e-3 --batch 16 --micro-batch 8 --epochs 3 --eval heldout.jsonl train.jsonl > m.zst
check "the output is a sequence classifier" jq -e '.architectures == ["LlamaForSequenceClassification"] and .num_labels == 1' rm/config.json
rl-cat m.zst | jq -c 'select(.eval)' > eval.json
check "evaluation before and after training" test "$(wc -l < eval.json)" = 2
check "held-out accuracy starts near chance" jq -se '.[0].eval_accuracy < 0.75' eval.json
check "held-out accuracy >= 95% after training ($(jq -s '.[1].eval_accuracy' eval.json))" jq -se '.[1].eval_accuracy >= 0.95' eval.json
check "metrics have the BT fields" bash -c "rl-cat -n 2 m.zst | tail -1 | jq -e 'has(\"loss\") and has(\"accuracy\") and has(\"margin\") and has(\"reward_chosen\")'"

rl-score -q -m rm heldout.jsonl > scored.zst
check "rl-score adds chosen_reward and rejected_reward to pairs" test "$(rl-cat scored.zst | jq -s 'map(has("chosen_reward") and has("rejected_reward")) | all')" = true
check "rl-eval reads the RM's accuracy from scored pairs" bash -c "rl-eval -f json scored.zst | jq -e '.pair_accuracy == $(jq -s '.[1].eval_accuracy' eval.json)'"
jq -c '{id, prompt_ids, chosen_ids: .rejected_ids, rejected_ids: .chosen_ids}' heldout.jsonl > swapped.jsonl
rl-score -q -m rm -b 5 swapped.jsonl > swapped.zst
check "swapping chosen and rejected flips the sign of every margin (exactly)" bash -c \
    "paste <(rl-cat scored.zst | jq '.chosen_reward - .rejected_reward') <(rl-cat swapped.zst | jq '.rejected_reward - .chosen_reward') | awk '\$1 != \$2 { exit 1 }'"
rl-score -q -m rm -b 1 heldout.jsonl | rl-cat > b1
rl-score -q -m rm -b 64 heldout.jsonl | rl-cat > b64
check "rewards do not depend on the batch size" cmp b1 b64
printf '{"id":"g","prompt_ids":[12,13],"response_ids":[[7,30],[40,41],[50]]}\n' > gen.jsonl
check "generation records get one reward per response" test "$(rl-score -q -m rm gen.jsonl | rl-cat | jq '.rewards | length')" = 3
check "a response with the rule scores above those without" bash -c "rl-score -q -m rm gen.jsonl | rl-cat | jq -e '.rewards[0] > .rewards[1] and .rewards[0] > .rewards[2]'"
printf '%s\n' '{"id":"ok","prompt_ids":[12],"response_ids":[[5]]}' '{"id":"e","prompt_ids":[12],"responses":[]}' > empty.jsonl
check_fails "an empty responses list" 1 'record 2 \(line 2\): field "responses" is empty' rl-score -m rm empty.jsonl
check "the good record before the bad one is written" test "$(rl-score -m rm empty.jsonl 2>/dev/null | rl-cat -c)" = 1
printf '{"id":"w","prompt_ids":[12],"responses":"text"}\n' > wrong.jsonl
check_fails "responses of the wrong type" 1 'field "responses" is a string, expected an array of strings' rl-score -m rm wrong.jsonl
printf '{"id":"n","prompt_ids":[12]}\n' > neither.jsonl
check_fails "neither responses nor a pair" 1 'neither "responses"' rl-score -m rm neither.jsonl
check_fails "a causal LM is not a reward model" 1 'not a sequence classifier' rl-score -m lm gen.jsonl
check_fails "missing -m" 2 'RM_DIR is required' rl-score
printf '{"id":"l","prompt_ids":[12,13,14,15,16,17],"response_ids":[[7,30,31]]}\n' > long.jsonl
check "sequences over --max-length are cut on the left, with a count" bash -c \
    "rl-score -m rm --max-length 4 long.jsonl 2>&1 >/dev/null | grep -q '1 of 1 sequences were longer than 4 tokens'"
check "left truncation keeps the response end: same reward as the last 4 tokens alone" bash -c \
    "a=\$(rl-score -q -m rm --max-length 4 long.jsonl | rl-cat | jq '.rewards[0]'); \
     b=\$(printf '{\"prompt_ids\":[17],\"response_ids\":[[7,30,31]]}\n' | rl-score -q -m rm | rl-cat | jq '.rewards[0]'); test \"\$a\" = \"\$b\""
finish
