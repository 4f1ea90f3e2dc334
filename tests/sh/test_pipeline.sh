#!/bin/bash
# The online loop end to end, shrunken to seconds: pipelines/online-dpo.mk
# on the demo's task with a tiny model; the structure of every intermediate;
# make's resume; and sharding with GNU parallel equal to no sharding.
. "$(dirname "$0")/lib.sh"
cd "$TMP"
D=$RL_ROOT/pipelines/demo-data
rl-init --config "$D/config.json" -o base --tokenizer "$D" --seed 1 2>/dev/null
rl-cat -n 64 "$D/sft.jsonl" | rl-sft -q -m base -o sft --lr 3e-3 --batch 16 --micro-batch 16 --epochs 1 > /dev/null
rl-cat -n 64 "$D/prompts-rm.jsonl" | rl-gen -q -m sft -n 2 --max-new-tokens 8 --max-prompt-tokens 48 \
    | rl-lexicon -l "$D/gold-lexicon.tsv" | rl-pair -q --annotate 1 \
    | rl-rm -q -m sft -o rm --lr 3e-3 --batch 16 --micro-batch 16 > /dev/null
check "SFT policy and reward model are ready" test -f sft/config.json -a -f rm/config.json
run() {
    make -s -f "$RL_ROOT/pipelines/online-dpo.mk" SFT=sft RM=rm PROMPTS="$D/prompts-online.jsonl" OUT=run ITERS=2 \
        PER_ITER=8 N=3 MAX_NEW=6 MAX_PROMPT=48 BETA=0.1 LR=1e-3 BATCH=4 MICRO=4 EPOCHS=1 "$@"
}
check "two iterations run through make" run
for i in 1 2; do
    check "iter$i: prompts are the iteration's slice, tagged" \
        test "$(rl-cat run/iter$i/prompts.msgpack.zst | jq -s -c "[length, (map(.iter == $i) | all), .[0].id]")" = "[8,true,\"online-$(( (i - 1) * 8 ))\"]"
    check "iter$i: samples have n responses with ids, finish, logps, tok" \
        bash -c "rl-cat run/iter$i/samples.msgpack.zst | jq -se 'length == 8 and (map((.responses | length) == 3 and (.response_ids | length) == 3 and (.logps | length) == 3 and has(\"tok\")) | all)'"
    check "iter$i: scored samples carry one reward per response" \
        bash -c "rl-cat run/iter$i/scored.msgpack.zst | jq -se 'map((.rewards | length) == 3) | all'"
    check "iter$i: pairs have chosen/rejected with ids, rewards and margin > 0" \
        bash -c "rl-cat run/iter$i/pairs.msgpack.zst | jq -se 'length > 0 and (map(has(\"chosen_ids\") and has(\"rejected_ids\") and .margin > 0) | all)'"
    check "iter$i: pairs carry reference log-probs" \
        bash -c "rl-cat run/iter$i/pairs.ref.msgpack.zst | jq -se 'map(has(\"ref_chosen_logp\") and has(\"ref_rejected_logp\")) | all'"
    check "iter$i: a trained policy and its metrics" test -f run/iter$i/policy.done -a -f run/iter$i/policy/model.safetensors -a -s run/iter$i/metrics.msgpack.zst
done
check "iteration 2 samples from iteration 1's policy (different from SFT's samples)" \
    bash -c "! cmp -s <(rl-cat -f response_ids run/iter2/samples.msgpack.zst) <(rl-cat run/iter2/prompts.msgpack.zst | rl-gen -q -m sft -n 3 --max-new-tokens 6 --max-prompt-tokens 48 --seed 1002 | rl-cat -f response_ids)"
mk() { make -f "$RL_ROOT/pipelines/online-dpo.mk" SFT=sft RM=rm PROMPTS="$D/prompts-online.jsonl" OUT=run ITERS=2 PER_ITER=8 "$@"; }
check "make is the resume: a finished run is up to date" mk -q
rm run/iter2/pairs.msgpack.zst run/iter2/pairs.ref.msgpack.zst run/iter2/policy.done
mk -n > plan 2>&1
check "a lost intermediate is redone with what depends on it, nothing before it" \
    bash -c "grep -q rl-pair plan && grep -q rl-logp plan && grep -q rl-dpo plan && ! grep -q 'rl-gen\|rl-score' plan"
check "a failed stage leaves no finished-looking file" bash -c \
    "! make -s -f '$RL_ROOT/pipelines/online-dpo.mk' SFT=sft RM=nope PROMPTS='$D/prompts-online.jsonl' OUT=bad ITERS=1 PER_ITER=4 2>/dev/null; test ! -e bad/iter1/scored.msgpack.zst"

# sharding over 2 workers equals no sharding, record for record
rl-cat -n 10 "$D/prompts-heldout.jsonl" > p10.jsonl
rl-gen -q -m sft -n 3 --max-new-tokens 6 --max-prompt-tokens 48 --seed 5 p10.jsonl | rl-cat > whole
if command -v parallel > /dev/null; then
    "$RL_ROOT/pipelines/shard" -j 2 -N 3 -- rl-gen -q -m sft -n 3 --max-new-tokens 6 --max-prompt-tokens 48 --seed 5 < p10.jsonl | rl-cat > sharded
    check "rl-gen sharded over 2 workers equals the unsharded output" cmp whole sharded
    check "a sharded pipeline run equals the unsharded one" bash -c \
        "make -s -f '$RL_ROOT/pipelines/online-dpo.mk' SFT=sft RM=rm PROMPTS='$D/prompts-online.jsonl' OUT=sh ITERS=1 PER_ITER=8 N=3 MAX_NEW=6 MAX_PROMPT=48 BATCH=4 MICRO=4 LR=1e-3 SHARDS=2 && \
         cmp <(rl-cat run/iter1/pairs.ref.msgpack.zst) <(rl-cat sh/iter1/pairs.ref.msgpack.zst)"
    check_fails "a failing block fails the shard run" 1 '' bash -c "echo '{\"id\":\"x\"}' | '$RL_ROOT/pipelines/shard' -j 2 -- rl-gen -q -m sft --max-new-tokens 2 --max-prompt-tokens 8 > /dev/null"
else
    skip "sharding with GNU parallel" "parallel not installed (scripts/deps)"
fi
finish
