#!/bin/bash
# rl-logp against the PyTorch reference (live when torch is installed, else
# the committed expected values), batch invariance, pass-through, errors.
. "$(dirname "$0")/lib.sh"
root=${RL_ROOT:-$PWD}
g=$root/tests/data/golden
model=$g/gqa_tied
in=$g/rl_logp_input.jsonl
py=${PYTHON:-/usr/bin/python3}

expected=$g/rl_logp_expected.jsonl
if "$py" -c 'import torch, numpy' 2>/dev/null; then
    check "reference log-probs (live PyTorch)" sh -c "'$py' '$root/tests/ref/llama_ref.py' logp '$model' < '$in' > '$TMP/expected.jsonl'"
    expected=$TMP/expected.jsonl
else
    skip "reference log-probs (live PyTorch)" "torch is not installed for $py; using the committed values"
fi

check "runs with --batch 3" sh -c "rl-logp -q -m '$model' --batch 3 < '$in' > '$TMP/b3.zst'"
check "runs with --batch 1" sh -c "rl-logp -q -m '$model' -b 1 < '$in' > '$TMP/b1.zst'"
rl-cat "$TMP/b3.zst" > "$TMP/b3.jsonl" 2>/dev/null
rl-cat "$TMP/b1.zst" > "$TMP/b1.jsonl" 2>/dev/null
n=$(wc -l < "$TMP/b3.jsonl")
[ "$n" = 5 ] && ok "five records out" || fail "five records out" "got $n"
check "same values whatever the batch size (bit for bit)" cmp "$TMP/b1.jsonl" "$TMP/b3.jsonl"

# every added value within 1e-5 relative of the reference; every input field kept
cat > "$TMP/cmp.py" <<'PY'
import json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [json.loads(l) for l in open(sys.argv[2])]
inp = [json.loads(l) for l in open(sys.argv[3])]
assert len(got) == len(want) == len(inp), (len(got), len(want), len(inp))
worst = 0.0
for g, w, i in zip(got, want, inp):
    for k, v in i.items():
        assert g[k] == v, f"field {k} changed"
    for k, v in w.items():
        a = g[k] if isinstance(g[k], list) else [g[k]]
        b = v if isinstance(v, list) else [v]
        assert len(a) == len(b), k
        for x, y in zip(a, b):
            worst = max(worst, abs(x - y) / max(1.0, abs(y)))
assert worst <= 1e-5, f"worst relative error {worst:g}"
PY
check "log-probs equal the reference within 1e-5; fields passed through" "$py" "$TMP/cmp.py" "$TMP/b3.jsonl" "$expected" "$in"

# a record without ids: an error naming it, the records before it written
{ head -2 "$in"; echo '{"id": "bad", "prompt": "text only"}'; tail -1 "$in"; } > "$TMP/noids.jsonl"
check_fails "a record without ids is an error naming it" 1 'record 3.*token ids' \
    sh -c "rl-logp -q -m '$model' < '$TMP/noids.jsonl' > '$TMP/noids.zst'"
n=$(rl-cat "$TMP/noids.zst" 2>/dev/null | wc -l)
[ "$n" = 2 ] && ok "records before the bad one are written" || fail "records before the bad one are written" "got $n"
echo '{"prompt_ids": [1, 2], "chosen_ids": [3]}' > "$TMP/half.jsonl"
check_fails "a pair without rejected_ids" 1 'rejected_ids' sh -c "rl-logp -q -m '$model' < '$TMP/half.jsonl' > /dev/null"
echo '{"prompt_ids": [1, 2], "response_ids": [[3, 4000]]}' > "$TMP/oov.jsonl"
check_fails "an id outside the vocabulary names the field" 1 'response_ids\[0\]\[1\] = 4000' \
    sh -c "rl-logp -q -m '$model' < '$TMP/oov.jsonl' > /dev/null"
echo '{"prompt_ids": [], "response_ids": [[3]]}' > "$TMP/empty.jsonl"
check_fails "an empty prompt is an error" 1 'prompt_ids.*empty' sh -c "rl-logp -q -m '$model' < '$TMP/empty.jsonl' > /dev/null"
check_fails "a model directory that does not exist" 1 'nonexistent' sh -c "rl-logp -m /nonexistent < '$in' > /dev/null"
check_fails "a score-head model is refused" 1 'language-model head' sh -c "rl-logp -m '$g/score_head' < '$in' > /dev/null"
check_fails "-m is required" 2 '-m DIR' rl-logp
check "--help prints usage" sh -c "rl-logp --help | grep -q 'Usage: rl-logp'"

# devices: an unknown one is an error; "auto" and devsim (memory the host
# cannot touch) give the CPU's bits; cuda without a GPU says why
check_fails "an unknown --device is an error naming it" 1 'unknown device "tpu"' \
    sh -c "rl-logp -q -m '$model' --device tpu < '$in' > /dev/null"
rl-logp -q -m "$model" --device cpu < "$in" | rl-cat > "$TMP/dev-cpu"
check "--device auto (here RL_DEVICE=cpu, as in the suite) gives the CPU's output" \
    sh -c "rl-logp -q -m '$model' --device auto < '$in' | rl-cat | cmp - '$TMP/dev-cpu'"
check "--device devsim gives the CPU's output bit for bit" \
    sh -c "rl-logp -q -m '$model' --device devsim < '$in' | rl-cat | cmp - '$TMP/dev-cpu'"

# a CUDA backend built from another version of the backend table (here one
# with the old entry point's name) is refused with a reason, never called
if command -v cc > /dev/null; then
    printf 'const void *rlflow_cuda_backend(const char **r, unsigned long n) { (void)r; (void)n; return 0; }\n' \
        > "$TMP/old.c"
    cc -shared -fPIC "$TMP/old.c" -o "$TMP/old.so"
    check_fails "a CUDA backend of another version is refused: rebuild it" 1 'another version of rlflow.*rebuild' \
        sh -c "RL_CUDA_LIB='$TMP/old.so' rl-logp -q -m '$model' --device cuda < '$in' > /dev/null"
else
    skip "a CUDA backend of another version is refused" "no C compiler"
fi

# RL_PROFILE=1: the same output, and a table of backend ops on stderr
for dev in cpu devsim; do
    check "RL_PROFILE=1 on $dev: the same output" \
        sh -c "RL_PROFILE=1 rl-logp -q -m '$model' --device $dev < '$in' 2> '$TMP/prof-$dev' | rl-cat | cmp - '$TMP/dev-cpu'"
    check "RL_PROFILE=1 on $dev: a table of ops at exit, matmuls by shape with TFLOP/s" \
        sh -c "grep -q '^profile (whole run, device $dev)' '$TMP/prof-$dev' &&
               grep -Eq '^matmul (NN|NT|TN|TT) [0-9]+x[0-9]+x[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+% +[0-9.]+$' '$TMP/prof-$dev' &&
               grep -Eq '^logsoftmax +[0-9]+ ' '$TMP/prof-$dev'"
done
check "RL_PROFILE=0 prints no table" \
    sh -c "RL_PROFILE=0 rl-logp -q -m '$model' < '$in' 2>&1 >/dev/null | grep -c profile | grep -qx 0"
if [ ! -e /dev/nvidiactl ]; then
    check "without RL_DEVICE and without a GPU, auto runs on the CPU" \
        sh -c "env -u RL_DEVICE rl-logp -q -m '$model' < '$in' | rl-cat | cmp - '$TMP/dev-cpu'"
    check_fails "--device cuda without a GPU is an error saying why" 1 'device "cuda": ' \
        sh -c "rl-logp -q -m '$model' --device cuda < '$in' > /dev/null"
fi
finish
