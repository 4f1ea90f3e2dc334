#!/bin/bash
# rl-gen: the determinism contract, stop ids and strings, lengths, text
# prompts through a real tokenizer, and clear errors.
. "$(dirname "$0")/lib.sh"
cd "$TMP"
rl-init --config "$RL_ROOT/tests/data/configs/tiny-llama.json" -o m --seed 2 --std 0.1 2>/dev/null
for i in $(seq 1 12); do printf '{"id":"q%d","prompt_ids":[%d,%d,%d]}\n' $i $((i + 3)) $((i * 7 % 250 + 3)) $((i * 13 % 250 + 3)); done > p.jsonl
gen() { rl-gen -q -m m -n 4 --max-new-tokens 16 --max-prompt-tokens 32 --seed 7 "$@"; }
gen -b 1 p.jsonl | rl-cat > b1
gen -b 64 p.jsonl | rl-cat > b64
check "identical output for --batch 1 and --batch 64" cmp b1 b64
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 gen -b 5 p.jsonl | rl-cat > t1
check "identical output for 1 and 2 threads" cmp b1 t1
{ head -n 5 p.jsonl | gen -b 3; tail -n 7 p.jsonl | gen -b 6; } | rl-cat > split
check "identical output when the input is split in two and concatenated" cmp b1 split
gen --unordered -b 7 p.jsonl | rl-cat | jq -c . | sort > un
sort b1 > b1s
check "--unordered writes the same records (in some order)" cmp b1s un
# decode steps draw on the backend (model_step_draw), warpers or not:
# devsim's memory is the host's out of reach, so the uniforms, ids and
# log-probs must cross only through upload and download, and give the CPU's
# bits
check "--device devsim gives the CPU's samples bit for bit (drawn by the backend)" \
    sh -c "rl-gen -q -m m -n 4 --max-new-tokens 16 --max-prompt-tokens 32 --seed 7 -b 5 --device devsim p.jsonl | rl-cat | cmp - b1"
gen -b 5 -t 0.8 --top-p 0.9 p.jsonl | rl-cat > tp
check "--device devsim gives the CPU's samples bit for bit (top-p: drawn by the backend)" \
    sh -c "rl-gen -q -m m -n 4 --max-new-tokens 16 --max-prompt-tokens 32 --seed 7 -b 5 -t 0.8 --top-p 0.9 --device devsim p.jsonl | rl-cat | cmp - tp"
OMP_NUM_THREADS=1 gen -b 5 -t 0.8 --top-p 0.9 p.jsonl | rl-cat > tp1
check "top-p samples drawn by 1 and 2 threads are identical" cmp tp tp1
# continuous batching: stop ids end responses at varied lengths, so slots
# free at different times and a record's samples start apart, the later
# ones in a copy of its prompt's cache (or in the slot where it still is)
stops="--stop-id 5 --stop-id 17 --stop-id 33 --stop-id 40 --stop-id 77 --stop-id 99 --stop-id 120 --stop-id 150 --stop-id 200"
gen -b 1 $stops p.jsonl | rl-cat > s1
check "stop ids give responses of varied lengths" jq -se '[.[].response_ids[] | length] | (min < 8 and max == 16)' s1
for b in 3 4 7 64; do
    gen -v -b $b $stops p.jsonl 2> sum$b | rl-cat > s$b
    check "samples that start apart (--batch $b) are those of --batch 1, bit for bit" cmp s1 s$b
    # greedy list scheduling: a slot never idles while a sample waits, so
    # the steps stay within Graham's bound, sum/B + the longest sample
    check "--batch $b: no slot idles while a sample waits (steps <= work / $b + longest)" \
        jq -se --argjson b $b --argjson steps "$(grep -o '[0-9]* decode steps' sum$b | cut -d' ' -f1)" \
        '[.[].response_ids[] | length - 1] | $steps <= (add / $b | floor) + max' s1
done
check "-v: the summary on stderr; one prefill a prompt" grep -q "12 prompts, .* 12 prefills" sum3
# its KV cache: K and V, for each of the 3 slots, (prompt + new + 1) positions
# of layers x kv_dim values, fp32 (4 bytes) on the CPU
kv=$(printf %.1f "$(jq '2 * 3 * (32 + 16 + 1) * .num_hidden_layers
    * (.hidden_size / .num_attention_heads * .num_key_value_heads) * 4 / 1024' "$RL_ROOT/tests/data/configs/tiny-llama.json")")
check "-v: the KV cache's size ($kv KiB, fp32)" grep -q "KV cache $kv KiB (fp32)" sum3
gen -v -b 1 p.jsonl 2> sum1 > /dev/null
check "--batch 1: one prefill a prompt, its samples in turn in the same slot" grep -q " 12 prefills" sum1
gen -v -b 3 --device devsim $stops p.jsonl 2> /dev/null | rl-cat > sdev
check "--device devsim: forked caches give the CPU's samples bit for bit" cmp s1 sdev
sed -n 3p p.jsonl | gen -b 2 | rl-cat > third
check "sample j of a record depends on (seed, id, j) only" bash -c "sed -n 3p b1 | cmp - third"
check "another seed gives other samples" bash -c "! rl-gen -q -m m -n 4 --max-new-tokens 16 --max-prompt-tokens 32 --seed 8 p.jsonl | rl-cat | cmp -s - b1"
check "fields: prompt_ids, response_ids, finish, logps, seed" jq -se 'map(has("prompt_ids") and (.response_ids | length) == 4 and (.finish | length) == 4
    and (.logps | length) == 4 and .seed == 7) | all' b1
check "--max-new-tokens ends responses with finish \"length\"" jq -se 'map(.response_ids[] | length <= 16) | all' b1
check "records keep input order" test "$(jq -r .id b1 | tr '\n' ' ')" = "q1 q2 q3 q4 q5 q6 q7 q8 q9 q10 q11 q12 "

# stop ids: greedy; the model's eos_token_id (2) stops some; --stop-id stops another at its 3rd token
rl-gen -q -m m -n 1 -t 0 --max-new-tokens 12 --max-prompt-tokens 32 p.jsonl | rl-cat > g
check "the model's eos_token_id ends a response (finish \"stop\", the id kept last)" \
    jq -se 'map(select(.finish[0] == "stop" and .response_ids[0][-1] == 2)) | length > 0' g
jq -c 'select((.response_ids[0] | length) >= 4)' g | head -n 1 > long1
if [ -s long1 ]; then
    third=$(jq '.response_ids[0][2]' long1)
    first3=$(jq -c --argjson t "$third" '.response_ids[0] as $r | $r[:($r | indices($t)[0]) + 1]' long1)   # up to its first occurrence
    id=$(jq -r .id long1)
    grep "\"$id\"" p.jsonl | rl-gen -q -m m -n 1 -t 0 --max-new-tokens 12 --max-prompt-tokens 32 --stop-id "$third" | rl-cat > gs
    check "--stop-id ends the response at that token, kept in response_ids" \
        test "$(jq -c '[.response_ids[0], .finish[0]]' gs)" = "[$first3,\"stop\"]"
else
    fail "--stop-id ends the response at that token, kept in response_ids" "no greedy response of 4 tokens"
fi
check "a response cut by --max-new-tokens has finish \"length\"" \
    jq -se 'map(select((.response_ids[0] | length) == 12) | .finish[0] == "length") | all' g

# prompts over the limit keep their end, or fail with --strict
printf '{"id":"long","prompt_ids":[1,2,3,4,5,6,7,8,9,10]}\n' > long.jsonl
check "a long prompt keeps its last --max-prompt-tokens tokens" bash -c \
    "rl-gen -q -m m -n 1 --max-new-tokens 2 --max-prompt-tokens 4 long.jsonl | rl-cat | jq -e '.prompt_ids == [7,8,9,10]'"
check_fails "--strict makes it an error naming the record" 1 'record 1 \(line 1\): the prompt has 10 tokens, over --max-prompt-tokens 4' \
    rl-gen -m m -n 1 --max-new-tokens 2 --max-prompt-tokens 4 --strict long.jsonl

# errors: earlier records are written first
printf '%s\n' '{"id":"ok","prompt_ids":[5]}' '{"prompt_ids":[6]}' > noid.jsonl
check_fails "a record without id" 1 'record 2 \(line 2\): no "id"' rl-gen -m m -n 2 --max-new-tokens 3 --max-prompt-tokens 8 noid.jsonl
check "the record before it was generated and written" test "$(rl-gen -m m -n 2 --max-new-tokens 3 --max-prompt-tokens 8 noid.jsonl 2>/dev/null | rl-cat -c)" = 1
printf '{"id":"e","prompt_ids":[]}\n' > empty.jsonl
check_fails "an empty prompt" 1 'the prompt is empty' rl-gen -m m --max-new-tokens 3 --max-prompt-tokens 8 empty.jsonl
printf '{"id":"x"}\n' > none.jsonl
check_fails "no prompt fields" 1 'no usable "prompt_ids", and no "messages" or "prompt"' rl-gen -m m --max-new-tokens 3 --max-prompt-tokens 8 none.jsonl
check_fails "text without a tokenizer" 1 'has no tokenizer.json' rl-gen -m m --max-new-tokens 3 --max-prompt-tokens 8 <(echo '{"id":"t","prompt":"hi"}')
check_fails "a model that does not exist" 1 'nope' rl-gen -m nope
check_fails "context overflow is a usage error" 2 "exceed the model's context" rl-gen -m m --max-new-tokens 600
check_fails "--stop without a tokenizer" 2 'needs a tokenizer' rl-gen -m m --stop x --max-new-tokens 3 --max-prompt-tokens 8
# every slot holds a whole prompt and response: a cache beyond any memory
# (petabytes, past the address space) is an error that says what to lower
jq '.hidden_size = 512 | .num_attention_heads = 8 | .num_key_value_heads = 8 | .max_position_embeddings = 16777216' \
    "$RL_ROOT/tests/data/configs/tiny-llama.json" > wide.json
rl-init --config wide.json -o wide --seed 1 2>/dev/null
# (ASan, under SANITIZE=1, would abort on the request instead of failing it)
check_fails "a KV cache beyond memory: an error naming its size and what to lower" 1 "GiB\): lower --batch \(65536\)" \
    env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1" \
    rl-gen -m wide -b 65536 --max-prompt-tokens 1024 --max-new-tokens 16000000 p.jsonl
# a Mistral with a 20-token sliding window: rlflow attends fully, which is
# the model's attention only within the window, so longer sequences are refused
jq '.architectures = ["MistralForCausalLM"] | .model_type = "mistral" | .sliding_window = 20' \
    "$RL_ROOT/tests/data/configs/tiny-llama.json" > mistral.json
rl-init --config mistral.json -o mis --seed 2 --std 0.1 2>/dev/null
check_fails "rl-gen: prompt + new tokens past the sliding window is a usage error" 2 "sliding_window \(20" \
    rl-gen -m mis --max-prompt-tokens 16 --max-new-tokens 8 p.jsonl
check "rl-gen within the sliding window runs" \
    sh -c "rl-gen -q -m mis -n 2 --max-prompt-tokens 12 --max-new-tokens 8 p.jsonl | rl-cat > mis.out"
echo '{"id":"long","prompt_ids":[5,6,7,8,9,10,11,12,13,14,15,16],"response_ids":[[3,4,5,6,7,8,9,10,11,12]]}' > long.jsonl
check_fails "rl-logp: a sequence past the sliding window is an error naming it" 1 "sliding_window \(20\)" \
    rl-logp -m mis long.jsonl

# a real tokenizer: messages through the chat template, text responses, stop strings
tokdir="$RL_FIXTURES/tokenizers/qwen3"
if [ -f "$tokdir/tokenizer.json" ]; then
    cat > qcfg.json <<'J'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 16, "intermediate_size": 32,
 "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 151936,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "eos_token_id": 151645}
J
    rl-init --config qcfg.json -o q --tokenizer "$tokdir" --std 0.5 2>/dev/null
    printf '%s\n' '{"id":"c","messages":[{"role":"user","content":"Say hi <|im_end|>"}]}' > chat.jsonl
    rl-gen -q -m q -n 1 -t 0 --max-new-tokens 20 --max-prompt-tokens 64 chat.jsonl | rl-cat > qg
    check "messages go through the chat template (ends with the assistant header)" \
        bash -c "jq -r '.prompt_ids | map(tostring) | join(\" \")' qg | rl-tok -t '$tokdir' --decode | grep -q '<|im_start|>assistant'"
    check "content cannot inject a special token (one <|im_end|>: the template's)" \
        bash -c "jq -e '.prompt_ids | map(select(. == 151645)) | length == 1' qg"
    check "responses hold the decoded text and tok the fingerprint" \
        bash -c "jq -e --arg fp \"\$(rl-tok -t '$tokdir' --fingerprint)\" '(.responses[0] | length) > 0 and .tok == \$fp' qg"
    full=$(jq -r '.responses[0]' qg)
    stop=${full:3:3}
    if [ ${#stop} = 3 ]; then
        rl-gen -q -m q -n 1 -t 0 --max-new-tokens 20 --max-prompt-tokens 64 --stop "$stop" chat.jsonl | rl-cat > qs
        cut=$(jq -r '.responses[0]' qs)
        check "a stop string ends the response and is cut from it" \
            test "$(jq -r '.finish[0]' qs)" = stop -a "${full#"$cut$stop"}" != "$full"
    else
        fail "a stop string ends the response and is cut from it" "the greedy response is too short to pick a stop string"
    fi
else
    skip "real tokenizer: chat template, text, stop strings" "no fixtures at $RL_FIXTURES"
fi
finish
