#!/bin/bash
# The tools on the GPU (--device cuda) against the same tools on the CPU, on
# tiny random models: rl-gen's batch invariance holds on the GPU too, and
# rl-logp, rl-dpo, rl-sft, rl-rm and rl-score agree with the CPU within the bound of
# the GEMM mode (tests/gpu/run runs this with RL_CUDA_MATH=fp32). Skips
# without a GPU. Needs only the tools and python3 (no jq on GPU machines).
. "$(dirname "$0")/lib.sh"
cd "$TMP"
# RL_GPU_DEVICE=devsim runs it all on the CPU behind device pointers: the
# CPU suite (tests/run) does so, proving every tool device-clean.
DEV=${RL_GPU_DEVICE:-cuda}
# RL_GPU_TEST_QUICK=1: a third of the work (the CPU emulation of the kernels
# in make check is slow); B is the training batch, so both runs take NP/B steps
NP=24 NEW=24 B=8
[ "${RL_GPU_TEST_QUICK:-0}" = 1 ] && NP=8 NEW=12 B=4
export NP
cfg=$RL_ROOT/tests/data/configs
rl-init --config "$cfg/tiny-llama.json" -o pol --seed 3 --std 0.1 2>/dev/null
skip_unless_runs "the tools on the GPU" $DEV pol
random_prompts $NP 1 2 40 > prompts.jsonl

# agree FILE_A FILE_B N FIELD...: both JSON Lines files have N records and
# every number of the FIELDs (numbers or lists of numbers) agrees within 1e-3
# relative (to max(0.01, |b|), for values near zero)
agree() {
    "$PYTHON" - "$@" <<'PY'
import json, sys
fa, fb, n, fields = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
a = [json.loads(l) for l in open(fa)]
b = [json.loads(l) for l in open(fb)]
flat = lambda v: v if isinstance(v, list) else [v]
worst = max([abs(x - y) / max(1e-2, abs(y)) for ra, rb in zip(a, b) for f in fields
             for x, y in zip(flat(ra[f]), flat(rb[f]))] or [float("inf")])
print("records", len(a), len(b), "worst", worst)
sys.exit(0 if len(a) == len(b) == n and worst < 1e-3 else 1)
PY
}

gen() { rl-gen -q -m pol -n 4 --max-new-tokens $NEW --max-prompt-tokens 64 --seed 5 "$@" prompts.jsonl | rl-cat; }
gen --device $DEV -b 1 > g1
gen --device $DEV -b 64 > g64
check "rl-gen on the GPU: identical samples for --batch 1 and --batch 64" cmp g1 g64
warp="-t 0.9 --top-k 20 --top-p 0.8 --min-p 0.01"
gen --device $DEV -b 1 $warp > w1
gen --device $DEV -b 7 $warp > w7
check "rl-gen on the GPU with top-k, top-p and min-p (drawn there): identical samples for --batch 1 and --batch 7" cmp w1 w7
check "rl-gen on the GPU: the warpers change the samples" bash -c "! cmp -s g1 w1"
gen --device cpu -b 16 > gc
# sampled tokens may part ways after a near-tie: compare the log-probs of
# the GPU's own samples scored on both devices instead
rl-logp -q -m pol --device $DEV < g1 | rl-cat > lg
rl-logp -q -m pol --device cpu < g1 | rl-cat > lc
check "rl-logp: GPU and CPU sequence log-probs agree (1e-3 relative)" agree lg lc $NP ref_logps
check "rl-gen: GPU and CPU runs give as many records, with the same fields" \
    "$PYTHON" -c 'import json,os,sys; a=[json.loads(l) for l in open("g1")]; b=[json.loads(l) for l in open("gc")]; sys.exit(0 if len(a)==len(b)==int(os.environ["NP"]) and all(x.keys()==y.keys() for x,y in zip(a,b)) else 1)'

# DPO: pairs from the samples, 6 steps on each device from the same start
"$PYTHON" - g1 > pairs.jsonl <<'PY'
import json, os, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(json.dumps({"id": r["id"], "prompt_ids": r["prompt_ids"], "chosen_ids": r["response_ids"][0],
                      "rejected_ids": r["response_ids"][1]}))
PY
rl-logp -q -m pol --device cpu pairs.jsonl > pairs.ref.zst
for d in cpu $DEV; do
    rl-dpo -q -m pol -o dpo-$d --device $d --lr 1e-3 --batch $B --micro-batch 4 --beta 0.5 pairs.ref.zst | rl-cat > m-$d
done
check "rl-dpo: GPU and CPU losses and grad norms agree step by step (1e-3)" agree m-$DEV m-cpu $((NP / B)) loss grad_norm
rl-logp -q -m dpo-$DEV --device cpu < g1 | rl-cat > after-gpu
rl-logp -q -m dpo-cpu --device cpu < g1 | rl-cat > after-cpu
check "rl-dpo: the models trained on GPU and CPU give the same log-probs (1e-3)" agree after-gpu after-cpu $NP ref_logps

# SFT on the chosen responses, on each device
"$PYTHON" -c 'import json
for l in open("pairs.jsonl"):
    r = json.loads(l); print(json.dumps({"prompt_ids": r["prompt_ids"], "response_ids": r["chosen_ids"]}))' > sft.jsonl
for d in cpu $DEV; do
    rl-sft -q -m pol -o sft-$d --device $d --lr 1e-3 --batch $B sft.jsonl | rl-cat > s-$d
done
check "rl-sft: GPU and CPU losses agree step by step (1e-3)" agree s-$DEV s-cpu $((NP / B)) loss

# reward model: train briefly on the GPU, score on both devices
rl-init --config "$cfg/tiny-llama-rm.json" -o rm0 --seed 4 --std 0.1 2>/dev/null
rl-rm -q -m rm0 -o rm --device $DEV --lr 1e-3 --batch $B pairs.jsonl > /dev/null
check "rl-rm trains on the GPU" test -f rm/model.safetensors
rl-score -q -m rm --device $DEV < g1 | rl-cat > sg
rl-score -q -m rm --device cpu < g1 | rl-cat > sc
check "rl-score: GPU and CPU rewards agree (1e-3)" agree sg sc $NP rewards

# the CUDA backend's settings: a bad value is an error that names it
if [ "$DEV" = cuda ]; then
    check_fails "RL_CUDA_ROWS_BLOCKS=0 is an error naming it" 1 "RL_CUDA_ROWS_BLOCKS=\"0\": expected a count" \
        env RL_CUDA_ROWS_BLOCKS=0 rl-gen -q -m pol --device cuda prompts.jsonl
    check_fails "RL_CUDA_ROWS=fast is an error naming it" 1 "RL_CUDA_ROWS=\"fast\": expected auto, tc, stream" \
        env RL_CUDA_ROWS=fast rl-gen -q -m pol --device cuda prompts.jsonl
fi
finish
