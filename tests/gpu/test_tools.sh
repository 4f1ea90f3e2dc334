#!/bin/bash
# The tools on the GPU (--device cuda) against the same tools on the CPU, on
# tiny random models: rl-gen's batch invariance holds on the GPU too, and
# rl-logp, rl-dpo, rl-sft, rl-rm and rl-score agree with the CPU within the bound of
# the GEMM mode (tests/gpu/run runs this with RL_CUDA_MATH=fp32). Skips
# without a GPU. Needs only the tools and python3 (no jq on GPU machines).
. "$(dirname "$0")/../sh/lib.sh"
cd "$TMP"
# RL_GPU_DEVICE=devsim runs it all on the CPU behind device pointers: the
# CPU suite (tests/run) does so, proving every tool device-clean.
DEV=${RL_GPU_DEVICE:-cuda}
: "${PYTHON:=python3}"
# RL_GPU_TEST_QUICK=1: a third of the work (the CPU emulation of the kernels
# in make check is slow); B is the training batch, so both runs take NP/B steps
NP=24 NEW=24 B=8
[ "${RL_GPU_TEST_QUICK:-0}" = 1 ] && NP=8 NEW=12 B=4
export NP B
cfg=$RL_ROOT/tests/data/configs
rl-init --config "$cfg/tiny-llama.json" -o pol --seed 3 --std 0.1 2>/dev/null
if ! err=$(rl-logp --device $DEV -m pol </dev/null 2>&1 >/dev/null); then
    skip "the tools on the GPU" "${err#*: }"
    finish
fi
"$PYTHON" - > prompts.jsonl <<'PY'
import json, random
r = random.Random(1)
import os
for i in range(int(os.environ["NP"])):
    print(json.dumps({"id": "q%d" % i, "prompt_ids": [r.randrange(3, 256) for _ in range(r.randint(2, 40))]}))
PY

gen() { rl-gen -q -m pol -n 4 --max-new-tokens $NEW --max-prompt-tokens 64 --seed 5 "$@" prompts.jsonl | rl-cat; }
gen --device $DEV -b 1 > g1
gen --device $DEV -b 64 > g64
check "rl-gen on the GPU: identical samples for --batch 1 and --batch 64" cmp g1 g64
gen --device cpu -b 16 > gc
# sampled tokens may part ways after a near-tie: compare the log-probs of
# the GPU's own samples scored on both devices instead
rl-logp -q -m pol --device $DEV < g1 | rl-cat > lg
rl-logp -q -m pol --device cpu < g1 | rl-cat > lc
check "rl-logp: GPU and CPU sequence log-probs agree (1e-3 relative)" "$PYTHON" - lg lc <<'PY'
import json, os, sys
a = [json.loads(l)["ref_logps"] for l in open(sys.argv[1])]
b = [json.loads(l)["ref_logps"] for l in open(sys.argv[2])]
worst = max(abs(x - y) / max(1, abs(y)) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
print("worst", worst)
sys.exit(0 if len(a) == len(b) == int(os.environ["NP"]) and worst < 1e-3 else 1)
PY
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
check "rl-dpo: GPU and CPU losses and grad norms agree step by step (1e-3)" "$PYTHON" - m-$DEV m-cpu <<'PY'
import json, os, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x[k] - y[k]) / max(1e-3, abs(y[k])) for x, y in zip(a, b) for k in ("loss", "grad_norm"))
print("steps", len(a), "worst", worst)
sys.exit(0 if len(a) == len(b) == int(os.environ["NP"]) // int(os.environ["B"]) and worst < 1e-3 else 1)
PY
rl-logp -q -m dpo-$DEV --device cpu < g1 | rl-cat > after-gpu
rl-logp -q -m dpo-cpu --device cpu < g1 | rl-cat > after-cpu
check "rl-dpo: the models trained on GPU and CPU give the same log-probs (1e-3)" "$PYTHON" - after-gpu after-cpu <<'PY'
import json, os, sys
a = [json.loads(l)["ref_logps"] for l in open(sys.argv[1])]
b = [json.loads(l)["ref_logps"] for l in open(sys.argv[2])]
worst = max(abs(x - y) / max(1, abs(y)) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
print("worst", worst)
sys.exit(0 if worst < 1e-3 else 1)
PY

# SFT on the chosen responses, on each device
"$PYTHON" -c 'import json
for l in open("pairs.jsonl"):
    r = json.loads(l); print(json.dumps({"prompt_ids": r["prompt_ids"], "response_ids": r["chosen_ids"]}))' > sft.jsonl
for d in cpu $DEV; do
    rl-sft -q -m pol -o sft-$d --device $d --lr 1e-3 --batch $B sft.jsonl | rl-cat > s-$d
done
check "rl-sft: GPU and CPU losses agree step by step (1e-3)" "$PYTHON" - s-$DEV s-cpu <<'PY'
import json, os, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x["loss"] - y["loss"]) / max(1e-3, abs(y["loss"])) for x, y in zip(a, b))
print("steps", len(a), "worst", worst)
sys.exit(0 if len(a) == len(b) == int(os.environ["NP"]) // int(os.environ["B"]) and worst < 1e-3 else 1)
PY

# reward model: train briefly on the GPU, score on both devices
rl-init --config "$cfg/tiny-llama-rm.json" -o rm0 --seed 4 --std 0.1 2>/dev/null
rl-rm -q -m rm0 -o rm --device $DEV --lr 1e-3 --batch $B pairs.jsonl > /dev/null
check "rl-rm trains on the GPU" test -f rm/model.safetensors
rl-score -q -m rm --device $DEV < g1 | rl-cat > sg
rl-score -q -m rm --device cpu < g1 | rl-cat > sc
check "rl-score: GPU and CPU rewards agree (1e-3)" "$PYTHON" - sg sc <<'PY'
import json, os, sys
a = [json.loads(l)["rewards"] for l in open(sys.argv[1])]
b = [json.loads(l)["rewards"] for l in open(sys.argv[2])]
worst = max(abs(x - y) / max(1, abs(y)) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
print("worst", worst)
sys.exit(0 if len(a) == int(os.environ["NP"]) and worst < 1e-3 else 1)
PY
finish
