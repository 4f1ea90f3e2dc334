#!/bin/bash
# Live parity: rerun the PyTorch reference (tests/ref/llama_ref.py) on every
# golden case and check the C model against its fresh outputs; the committed
# outputs are checked without torch by unit/test_model_parity.
. "$(dirname "$0")/lib.sh"
root=${RL_ROOT:-$PWD}
t=${RL_BUILD:-$root/build/opt}/t/test_model_parity
py=${PYTHON:-/usr/bin/python3}
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
    skip "live parity with PyTorch" "torch is not installed for $py"
    finish
fi
if [ ! -x "$t" ]; then
    fail "live parity with PyTorch" "$t is not built"
    finish
fi
for dir in "$root"/tests/data/golden/*/; do
    [ -f "$dir/inputs.json" ] && [ -f "$dir/ref.safetensors" ] || continue    # not a model case
    c=$(basename "$dir")
    check "reference runs: $c" "$py" "$root/tests/ref/llama_ref.py" run "$dir" "$TMP/$c.safetensors"
done
# the test program speaks the same protocol: pass its lines through, prefixed
"$t" "$TMP" | sed 's/^\(not \)\{0,1\}ok /&live: /'
[ "${PIPESTATUS[0]}" = 0 ] || _failed=1

# models made by rl-init (bf16 Qwen2 with biases; a score head): the reference
# reads what rlflow writes, and the C model matches it there too
if command -v rl-init >/dev/null; then
    mkdir -p "$TMP/ref_init"
    dirs=()
    for c in qwen2_bias score_head; do
        d=$TMP/init_$c
        dt=f32; [ $c = qwen2_bias ] && dt=bf16
        if rl-init -q -c "$root/tests/data/golden/$c/config.json" -o "$d" --seed 3 --std 0.2 --dtype $dt \
                2>"$TMP/init.err"; then
            cp "$root/tests/data/golden/$c/inputs.json" "$d/"
            check "reference runs on an rl-init model: $c ($dt)" \
                "$py" "$root/tests/ref/llama_ref.py" run "$d" "$TMP/ref_init/init_$c.safetensors"
            dirs+=("$d")
        else
            fail "rl-init makes $c" "$(head -c 300 "$TMP/init.err")"
        fi
    done
    if [ ${#dirs[@]} -gt 0 ]; then
        "$t" "$TMP/ref_init" "${dirs[@]}" | sed 's/^\(not \)\{0,1\}ok /&rl-init: /'
        [ "${PIPESTATUS[0]}" = 0 ] || _failed=1
    fi
else
    skip "rl-init models" "rl-init is not built"
fi
finish
