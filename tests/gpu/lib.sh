# Shared by the GPU tool tests (tests/gpu/test_*.sh), on top of tests/sh/lib.sh.
. "$(dirname "${BASH_SOURCE[0]}")/../sh/lib.sh"
: "${PYTHON:=python3}"

# skip_unless_runs NAME DEVICE MODEL: ends the test, NAME skipped with the
# reason, when MODEL does not run on DEVICE (no GPU, no CUDA backend)
skip_unless_runs() {
    local err
    if ! err=$(rl-logp --device "$2" -m "$3" </dev/null 2>&1 >/dev/null); then
        skip "$1" "${err#*: }"
        finish
    fi
}

# random_prompts N SEED MIN MAX: N JSON Lines prompts q0.. of random token
# ids in [3, 256), MIN to MAX of them each
random_prompts() {
    "$PYTHON" - "$@" <<'PY'
import json, random, sys
n, seed, lo, hi = map(int, sys.argv[1:])
r = random.Random(seed)
for i in range(n):
    print(json.dumps({"id": "q%d" % i, "prompt_ids": [r.randrange(3, 256) for _ in range(r.randint(lo, hi))]}))
PY
}
