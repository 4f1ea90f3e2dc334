#!/bin/bash
# rl-dpo end to end on a tiny random model: it learns a handful of pairs,
# resumes bit for bit, survives a kill while saving, and rejects bad input.
. "$(dirname "$0")/lib.sh"
cd "$TMP"
rl-init --config "$RL_ROOT/tests/data/configs/tiny-llama.json" -o pol --seed 3 2>/dev/null
"$PYTHON" - > pairs.jsonl <<'PY'
import json, random
r = random.Random(0)
for i in range(12):
    p = [r.randrange(3, 256) for _ in range(r.randint(2, 6))]
    c = [r.randrange(3, 256) for _ in range(r.randint(1, 5))]
    j = [r.randrange(3, 256) for _ in range(r.randint(1, 5))]
    print(json.dumps({"id": "p%d" % i, "prompt_ids": p, "chosen_ids": c, "rejected_ids": j}))
PY
rl-logp -q -m pol pairs.jsonl > pairs.ref.zst 2>/dev/null
check "rl-logp adds reference log-probs to the pairs" test "$(rl-cat pairs.ref.zst | jq -s 'map(has("ref_chosen_logp")) | all')" = true

common="--lr 2e-3 --batch 4 --micro-batch 3 --epochs 6 --beta 0.5 -q"
rl-dpo -m pol -o out $common pairs.ref.zst > metrics.zst
check "training writes a model directory" test -f out/model.safetensors -a -f out/config.json
check "the final model has no trainer state unless asked" test ! -e out/trainer_state
check "one metrics record per optimizer step" test "$(rl-cat -c metrics.zst)" = 18
rl-cat metrics.zst | jq -s '.[0], .[-1]' -c > m.json
check "metrics fields" jq -se '.[0] | has("loss") and has("rewards_chosen") and has("rewards_rejected") and has("reward_accuracy")
    and has("reward_margin") and has("logp_chosen") and has("logp_rejected") and has("grad_norm") and has("lr") and has("tokens") and has("tok_per_s")' m.json
check "first step: policy = reference, loss log 2" jq -se '.[0].loss - 0.6931471805599453 | fabs < 1e-5' m.json
check "overfitting a handful of pairs: accuracy 1, margin up, loss down" \
    jq -se '.[1].reward_accuracy == 1 and .[1].reward_margin > .[0].reward_margin + 0.5 and .[1].loss < 0.3' m.json

# --ref computes the same reference log-probs as rl-logp
rl-dpo -m pol -o out2 $common --ref pol pairs.jsonl > metrics2.zst
check "--ref gives the same training as precomputed rl-logp values" \
    bash -c "rl-cat metrics.zst | jq -c '[.loss, .grad_norm]' > a; rl-cat metrics2.zst | jq -c '[.loss, .grad_norm]' > b; cmp a b"

# --batch-gemm: one product per layer for a micro-batch (policy and --ref)
rl-dpo -m pol -o out3 $common --batch-gemm --ref pol pairs.jsonl > metrics3.zst
check "--batch-gemm: the same losses to 1e-4, first step log 2" \
    bash -c "paste <(rl-cat metrics.zst | jq .loss) <(rl-cat metrics3.zst | jq .loss) |
        awk 'NR == 1 && (\$2 - 0.6931471805599453 > 1e-5 || \$2 - 0.6931471805599453 < -1e-5) { exit 1 }
             { d = \$1 - \$2; if (d < 0) d = -d; if (d > 1e-4 * \$1 + 1e-7) exit 1 }'"

# resume: 5 steps, stop, resume the rest == one straight run, bit for bit
rl-dpo -m pol -o half $common --max-steps 5 pairs.ref.zst > h1.zst
check "--max-steps leaves a resumable checkpoint" test -f half/trainer_state/state.json -a "$(rl-cat -c h1.zst)" = 5
rl-dpo -m pol -o half $common --resume pairs.ref.zst > h2.zst
check "resumed run equals the straight run, bitwise" cmp out/model.safetensors half/model.safetensors
check "resumed metrics continue the straight run's" bash -c "rl-cat h1.zst h2.zst | cmp - <(rl-cat metrics.zst) || \
    diff <(rl-cat h1.zst h2.zst | jq -c 'del(.tok_per_s)') <(rl-cat metrics.zst | jq -c 'del(.tok_per_s)')"
rl-dpo -m pol -o half3 $common --max-steps 2 pairs.ref.zst > /dev/null
check_fails "resume with other data is refused" 1 "training data differ" rl-dpo -m pol -o half3 $common --resume \
    <(rl-cat pairs.ref.zst | head -n 11)
check_fails "resume with another batch size is refused" 1 "must be those of the run being resumed" \
    rl-dpo -m pol -o half3 --lr 2e-3 --batch 3 --epochs 6 -q --resume pairs.ref.zst
check_fails "a finished model is not resumed" 1 "finished model" rl-dpo -m pol -o out $common --resume pairs.ref.zst

# kill at random moments while checkpointing every step: the output is always a loadable model
bad=0
for delay in 0.3 0.5 0.7 0.9 1.1; do
    rm -rf k; rl-dpo -m pol -o k $common --save-every 1 pairs.ref.zst > /dev/null 2>&1 &
    pid=$!; sleep $delay; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    if [ -e k ] && ! rl-logp -q -m k pairs.jsonl > /dev/null 2>&1; then bad=$((bad + 1)); fi
    ls -d k.tmp-* >/dev/null 2>&1 && rm -rf k.tmp-*
done
check "a run killed while saving leaves a loadable checkpoint (5 kills)" test $bad = 0

# bad input
check_fails "OUT_DIR exists" 1 "exists: use --resume" rl-dpo -m pol -o out $common pairs.ref.zst
check_fails "pairs without reference log-probs" 1 'record 1 \(line 1\): no "ref_chosen_logp"' rl-dpo -m pol -o x $common pairs.jsonl
printf '{"id":"a","prompt_ids":[1],"chosen_ids":[999],"rejected_ids":[2],"ref_chosen_logp":-1,"ref_rejected_logp":-1}\n' > oov.jsonl
check_fails "ids outside the vocabulary" 1 'field "chosen_ids"\[0\] = 999 is outside the model.s vocabulary \(256\)' rl-dpo -m pol -o x $common oov.jsonl
printf '{"id":"a","tok":"0123456789abcdef","prompt_ids":[1],"chosen_ids":[5],"rejected_ids":[2],"ref_chosen_logp":-1,"ref_rejected_logp":-1}\n' > tok.jsonl
check "ids from an unknown tokenizer are used when the model has none to compare" rl-dpo -m pol -o y $common tok.jsonl
check_fails "missing -o" 2 "both -m MODEL_DIR and -o OUT_DIR" rl-dpo -m pol
check_fails "bad loss" 2 "unknown loss" rl-dpo -m pol -o x --loss kto
for loss in ipo hinge; do
    rl-dpo -m pol -o "l-$loss" $common --loss $loss pairs.ref.zst > "ml-$loss.zst"
    check "--loss $loss trains (accuracy 1 at the end)" test "$(rl-cat "ml-$loss.zst" | jq -s '.[-1].reward_accuracy')" = 1
done
rl-dpo -m pol -o l-rpo $common --nll-coef 1 pairs.ref.zst > ml-rpo.zst
check "--nll-coef raises the chosen log-prob more than plain DPO" \
    awk -v a="$(rl-cat ml-rpo.zst | jq -s '.[-1].logp_chosen')" -v b="$(rl-cat metrics.zst | jq -s '.[-1].logp_chosen')" 'BEGIN { exit !(a > b) }'
finish
