#!/bin/bash
# rl-gen and rl-logp in the GPU's default bf16 mode, on a tiny random model
# with head_dim 64, so that prompts take the tensor-core attention kernels and
# decode steps the tensor-core matmul_rows (RL_CUDA_ATTN=tc, RL_CUDA_ROWS=tc
# unless the caller names routes; tests/gpu/run runs auto too):
# samples are the same bits at --batch 1 and --batch 64, and the GPU's
# sequence log-probs agree with the CPU's within bf16 rounding (2e-2 of
# max(1, |log-prob|)). Skips without a GPU. RL_GPU_DEVICE=devsim runs it on
# the CPU behind device pointers (tests/run).
. "$(dirname "$0")/lib.sh"
cd "$TMP"
DEV=${RL_GPU_DEVICE:-cuda}
# RL_GPU_TEST_QUICK=1: less work (the CPU emulation of the kernels in make check is slow)
NP=12 NEW=16
[ "${RL_GPU_TEST_QUICK:-0}" = 1 ] && NP=4 NEW=6
export RL_CUDA_MATH=bf16 NP RL_CUDA_ATTN=${RL_CUDA_ATTN:-tc} RL_CUDA_ROWS=${RL_CUDA_ROWS:-tc}
"$PYTHON" - > cfg.json <<'PY'
import json
print(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
                  "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1,
                  "num_hidden_layers": 2, "vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                  "max_position_embeddings": 256, "tie_word_embeddings": False,
                  "bos_token_id": 1, "eos_token_id": 2}))
PY
rl-init --config cfg.json -o pol --seed 4 --std 0.1 2>/dev/null
skip_unless_runs "rl-gen in bf16 on the GPU" $DEV pol
random_prompts $NP 2 5 90 > prompts.jsonl
gen() { rl-gen -q -m pol -n 3 --max-new-tokens $NEW --max-prompt-tokens 128 --seed 7 --device $DEV "$@" prompts.jsonl | rl-cat; }
gen -b 1 > g1
gen -b 64 > g64
check "rl-gen in bf16 ($RL_CUDA_ATTN attention, $RL_CUDA_ROWS rows): identical samples for --batch 1 and --batch 64" cmp g1 g64
# decode steps as CUDA graphs: the samples of the steps op by op (a batch
# that shrinks as its slots finish changes the graphs' shapes)
if [ "${RL_CUDA_GRAPHS:-}" = on ]; then
    RL_CUDA_GRAPHS=off gen -b 64 > g64-ops
    check "rl-gen with decode steps as CUDA graphs: the samples of the ops one by one" cmp g64 g64-ops
fi
rl-logp -q -m pol --device $DEV < g1 | rl-cat > lg
rl-logp -q -m pol --device cpu < g1 | rl-cat > lc
close() {
    "$PYTHON" - "$@" <<'PY'
import json, os, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
flat = lambda v: v if isinstance(v, list) else [v]
worst = max([abs(x - y) / max(1.0, abs(y)) for ra, rb in zip(a, b)
             for x, y in zip(flat(ra["ref_logps"]), flat(rb["ref_logps"]))] or [1e9])
print("records", len(a), len(b), "worst", worst)
sys.exit(0 if len(a) == len(b) == int(os.environ["NP"]) and worst < 2e-2 else 1)
PY
}
check "rl-logp in bf16 on the GPU: sequence log-probs within 2e-2 of the CPU's" close lg lc
finish
