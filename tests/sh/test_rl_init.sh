#!/bin/bash
# rl-init: options, the model directory it writes, atomic replacement, tokenizer copying.
. "$(dirname "$0")/lib.sh"
CFG=$RL_ROOT/tests/data/configs
# dump PATH: one line per tensor, "name dtype [shape] values..."
dump() { "$RL_BUILD/t/test_safetensors" dump "$@"; }
cd "$TMP"

check "help exits 0" rl-init --help
rl-init --help | grep -q -- "--tokenizer" && ok "help lists options" || fail "help lists options"
check_fails "no args is a usage error" 2 "config" rl-init
check_fails "missing -o" 2 "-o DIR" rl-init --config "$CFG/tiny-llama.json"
check_fails "bad dtype" 2 "dtype" rl-init -c "$CFG/tiny-llama.json" -o x --dtype f64
check_fails "bad seed" 2 "seed" rl-init -c "$CFG/tiny-llama.json" -o x --seed 12abc
check_fails "negative seed" 2 "seed" rl-init -c "$CFG/tiny-llama.json" -o x --seed -3
check_fails "bad std" 2 "std" rl-init -c "$CFG/tiny-llama.json" -o x --std abc
check_fails "unknown option" 2 "try --help" rl-init -c "$CFG/tiny-llama.json" -o x --bogus
check_fails "extra argument" 2 "unexpected" rl-init -c "$CFG/tiny-llama.json" -o x stray

check "init tiny llama" rl-init -c "$CFG/tiny-llama.json" -o m1 --seed 1
[ -f m1/config.json ] && [ -f m1/model.safetensors ] && ok "files written" || fail "files written"
[ "$(jq -r '.architectures[0] + " " + .torch_dtype + " " + (.num_key_value_heads|tostring)' m1/config.json)" = \
  "LlamaForCausalLM float32 2" ] && ok "config normalized" || fail "config normalized" "$(cat m1/config.json)"
ls -d m1.tmp-* >/dev/null 2>&1 && fail "no temporary left" "$(ls)" || ok "no temporary left"
n=$(dump m1 | wc -l)
[ "$n" = 21 ] && ok "tensor count" || fail "tensor count" "$n"
dump m1 | grep -q '^lm_head.weight F32 \[256,64\]' && ok "untied lm_head" || fail "untied lm_head"
dump m1 | awk '$1 ~ /norm/ { for (i = 4; i <= NF; i++) if ($i != 1) exit 1 }' && ok "norms are ones" || fail "norms are ones"
# Sample standard deviation of the embedding: 16384 draws of N(0, 0.02^2)
sd=$(dump m1 | awk '$1 == "model.embed_tokens.weight" { for (i = 4; i <= NF; i++) { s += $i; q += $i * $i; n++ }
      printf "%.5f", sqrt(q / n - (s / n) ^ 2) }')
awk -v s="$sd" 'BEGIN { exit !(s > 0.0195 && s < 0.0205) }' && ok "std 0.02" || fail "std 0.02" "$sd"

check "same seed again" rl-init -c "$CFG/tiny-llama.json" -o m2 --seed 1
cmp -s m1/model.safetensors m2/model.safetensors && ok "same seed, same bytes" || fail "same seed, same bytes"
OMP_NUM_THREADS=1 rl-init -c "$CFG/tiny-llama.json" -o m1t --seed 1 &&
  cmp -s m1/model.safetensors m1t/model.safetensors && ok "thread count does not matter" || fail "thread count does not matter"
check "other seed" rl-init -c "$CFG/tiny-llama.json" -o m3 --seed 2
cmp -s m1/model.safetensors m3/model.safetensors && fail "other seed, other bytes" || ok "other seed, other bytes"
# Portable: the bytes are pinned (an independent Python implementation of the RNG
# reproduces them too, see tests/py/test_safetensors_interop.py).
sum=$(sha256sum m1/model.safetensors | cut -c1-16)
[ "$sum" = 8fc03a2fdfc21f9f ] && ok "golden checksum" || fail "golden checksum" "$sum"

before=$(sha256sum m1/model.safetensors)
check_fails "existing dir refused" 1 "already exists.*--force" rl-init -c "$CFG/tiny-llama.json" -o m1 --seed 5
[ "$(sha256sum m1/model.safetensors)" = "$before" ] && ok "refused dir untouched" || fail "refused dir untouched"
touch m1/stale-file
check "force replaces" rl-init -c "$CFG/tiny-llama.json" -o m1 --seed 2 --force
cmp -s m1/model.safetensors m3/model.safetensors && [ ! -e m1/stale-file ] && ok "force replaced contents" ||
  fail "force replaced contents"
ls -d m1.tmp-* >/dev/null 2>&1 && fail "no temporary left after force" "$(ls)" || ok "no temporary left after force"
check "force on a new dir" rl-init -c "$CFG/tiny-llama.json" -o m4 --force -q
touch afile
check_fails "output is a file" 1 "not a directory" rl-init -c "$CFG/tiny-llama.json" -o afile --force
check_fails "missing parent" 1 "nope/m" rl-init -c "$CFG/tiny-llama.json" -o nope/m

check "bf16" rl-init -c "$CFG/tiny-llama.json" -o mb --dtype bf16
dump mb | grep -q '^model.embed_tokens.weight BF16' && [ "$(jq -r .torch_dtype mb/config.json)" = bfloat16 ] &&
  ok "bf16 weights and torch_dtype" || fail "bf16 weights and torch_dtype"
check "dtype from config" rl-init -c "$CFG/tiny-llama3-tied.json" -o mt
dump mt | grep -q '^model.norm.weight BF16' && ok "config torch_dtype used" || fail "config torch_dtype used"
dump mt | grep -q '^lm_head' && fail "tied: no lm_head" || ok "tied: no lm_head"
[ "$(jq -c .rope_scaling.rope_type mt/config.json)" = '"llama3"' ] && ok "rope_scaling kept" || fail "rope_scaling kept"
check "f16" rl-init -c "$CFG/tiny-llama.json" -o mh --dtype f16
dump mh | grep -q '^model.norm.weight F16' && ok "f16 weights" || fail "f16 weights"

check "qwen2" rl-init -c "$CFG/tiny-qwen2.json" -o mq
dump mq | awk '$1 ~ /_proj\.bias$/ { n++; for (i = 4; i <= NF; i++) if ($i != 0) exit 1 } END { exit n != 6 }' &&
  ok "qwen2 q/k/v biases are zeros" || fail "qwen2 q/k/v biases are zeros"
check "reward model" rl-init -c "$CFG/tiny-llama-rm.json" -o mr
dump mr | grep -q '^score.weight F32 \[1,64\]' && ! dump mr | grep -q '^lm_head' &&
  ok "score head, no lm_head" || fail "score head, no lm_head"
[ "$(jq -c .id2label mr/config.json)" = '{"0":"LABEL_0"}' ] && ok "rm id2label" || fail "rm id2label"
check "std option" rl-init -c "$CFG/tiny-llama.json" -o ms --std 0
dump ms | awk '$1 ~ /proj/ { for (i = 4; i <= NF; i++) if ($i != 0) exit 1 }' && ok "std 0 gives zeros" ||
  fail "std 0 gives zeros"

# Tokenizer files: from a directory, or a tokenizer.json path (companions beside it come along)
mkdir tok
echo '{"version":"1.0","model":{"type":"BPE"}}' >tok/tokenizer.json
echo '{"bos_token":"<s>"}' >tok/tokenizer_config.json
check "tokenizer dir" rl-init -c "$CFG/tiny-llama.json" -o mk1 --tokenizer tok
cmp -s tok/tokenizer.json mk1/tokenizer.json && cmp -s tok/tokenizer_config.json mk1/tokenizer_config.json &&
  ok "tokenizer files copied" || fail "tokenizer files copied"
check "tokenizer file" rl-init -c "$CFG/tiny-llama.json" -o mk2 --tokenizer tok/tokenizer.json
cmp -s tok/tokenizer.json mk2/tokenizer.json && cmp -s tok/tokenizer_config.json mk2/tokenizer_config.json &&
  ok "tokenizer file and companion copied" || fail "tokenizer file and companion copied"
cp tok/tokenizer.json lone.json
check "tokenizer file alone" rl-init -c "$CFG/tiny-llama.json" -o mk3 --tokenizer lone.json
[ -f mk3/tokenizer.json ] && [ ! -e mk3/tokenizer_config.json ] && ok "lone tokenizer" || fail "lone tokenizer"
check_fails "tokenizer missing" 1 "nowhere" rl-init -c "$CFG/tiny-llama.json" -o mk4 --tokenizer nowhere
[ ! -e mk4 ] && ! ls -d mk4.tmp-* >/dev/null 2>&1 && ok "failed run leaves nothing" || fail "failed run leaves nothing" "$(ls)"
mkdir emptytok
check_fails "tokenizer dir without tokenizer.json" 1 "no tokenizer.json" rl-init -c "$CFG/tiny-llama.json" -o mk5 --tokenizer emptytok
echo '{"broken' >bad.json
check_fails "tokenizer not json" 1 "bad.json.*not valid JSON" rl-init -c "$CFG/tiny-llama.json" -o mk6 --tokenizer bad.json

echo '{"architectures":["GPT2LMHeadModel"]}' >gpt2.json
check_fails "unknown architecture" 1 "gpt2.json: architectures" rl-init -c gpt2.json -o mx
sed 's/"rope_type": "llama3"/"rope_type": "yarn"/' "$CFG/tiny-llama3-tied.json" >yarn.json
check_fails "unsupported rope" 1 "rope_scaling.rope_type.*yarn" rl-init -c yarn.json -o mx
check_fails "missing config" 1 "none.json" rl-init -c none.json -o mx
[ ! -e mx ] && ok "no output on config error" || fail "no output on config error"

# Every option is in the man page (roff writes "-" as "\-").
missing=
for opt in --config --output --seed --tokenizer --dtype --std --force --quiet --help; do
    grep -qF -- "$(printf '%s' "$opt" | sed 's/-/\\-/g')" "$RL_ROOT/man/rl-init.1" 2>/dev/null || missing="$missing $opt"
done
[ -z "$missing" ] && ok "man page documents every option" || fail "man page documents every option" "missing:$missing"
finish
