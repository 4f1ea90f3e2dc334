#!/bin/bash
# rl-sft end to end: it learns, --pack equals unpacked training, resume is
# exact, text is tokenized with the model's tokenizer, bad input fails clearly.
. "$(dirname "$0")/lib.sh"
cd "$TMP"
rl-init --config "$RL_ROOT/tests/data/configs/tiny-llama.json" -o base --seed 5 2>/dev/null
"$PYTHON" - > sft.jsonl <<'PY'
import json, random
r = random.Random(1)
for i in range(10):
    print(json.dumps({"id": "s%d" % i, "prompt_ids": [r.randrange(3, 256) for _ in range(r.randint(1, 6))],
                      "response_ids": [r.randrange(3, 256) for _ in range(r.randint(1, 8))]}))
PY
common="--lr 3e-3 --batch 5 --epochs 30 -q"
rl-sft -m base -o a $common --micro-batch 2 sft.jsonl > ma.zst
check "30 epochs of 2 steps: 60 metrics records" test "$(rl-cat -c ma.zst)" = 60
check "the first loss is about ln(vocab) for a random model" bash -c "rl-cat -n 1 ma.zst | jq -e '.loss > 5 and .loss < 6.2'"
check "the loss falls below 1 when memorizing ten examples" bash -c "rl-cat ma.zst | jq -se '.[-1].loss < 1.2'"
rl-sft -m base -o b $common --pack sft.jsonl > mb.zst
check "--pack gives the same losses as unpacked training (to 1e-6)" bash -c \
    "paste <(rl-cat ma.zst | jq .loss) <(rl-cat mb.zst | jq .loss) | awk '{ d = \$1 - \$2; if (d < 0) d = -d; if (d > 1e-6 * (\$2 < 0 ? -\$2 : \$2) + 1e-9) exit 1 }'"
rl-sft -m base -o d $common --micro-batch 2 --batch-gemm sft.jsonl > md.zst
check "--batch-gemm gives the same losses as one product per sequence (to 1e-5)" bash -c \
    "paste <(rl-cat ma.zst | jq .loss) <(rl-cat md.zst | jq .loss) | awk '{ d = \$1 - \$2; if (d < 0) d = -d; if (d > 1e-5 * (\$2 < 0 ? -\$2 : \$2) + 1e-9) exit 1 }'"
check "--batch-gemm changes how the products run (the losses differ in the last bits)" \
    bash -c "! cmp -s <(rl-cat ma.zst | jq .loss) <(rl-cat md.zst | jq .loss)"
rl-sft -m base -o c $common --micro-batch 2 --max-steps 7 sft.jsonl > /dev/null
rl-sft -m base -o c $common --micro-batch 2 --resume sft.jsonl > /dev/null
check "resume after 7 steps is bitwise the straight run" cmp a/model.safetensors c/model.safetensors

# text through the model's tokenizer (fixtures)
tokdir="$RL_FIXTURES/tokenizers/qwen3"
if [ -f "$tokdir/tokenizer.json" ]; then
    cat > qcfg.json <<'J'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 16, "intermediate_size": 32,
 "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 151936,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "eos_token_id": 151645}
J
    rl-init --config qcfg.json -o q --tokenizer "$tokdir" 2>/dev/null
    printf '%s\n' '{"id":"t1","messages":[{"role":"user","content":"Hi"}],"response":"Hello!"}' \
        '{"id":"t2","prompt":"2+2=","response":"4"}' > text.jsonl
    rl-sft -m q -o qo --lr 1e-3 --batch 2 -q text.jsonl > mq.zst
    check "text records are tokenized with the model's tokenizer and chat template" \
        bash -c "rl-cat mq.zst | jq -e '.tokens > 10'"
    check "the tokenizer files are copied into the output" test -f qo/tokenizer.json -a -f qo/tokenizer_config.json
else
    skip "text records are tokenized with the model's tokenizer and chat template" "no fixtures at $RL_FIXTURES"
fi

printf '{"id":"x","prompt_ids":[5],"response":"hi"}\n' > notok.jsonl
check_fails "text without a tokenizer" 1 'record 1 \(line 1\): no usable "response_ids" and base has no tokenizer.json' \
    rl-sft -m base -o z $common notok.jsonl
printf '{"id":"x","prompt_ids":[5],"response_ids":[]}\n' > empty.jsonl
check_fails "an empty response" 1 '"response" is empty: no tokens to learn from' rl-sft -m base -o z $common empty.jsonl
printf '{"id":"x","prompt_ids":[5],"response_ids":"abc"}\n' > wrong.jsonl
check_fails "ids of the wrong type" 1 'field "response_ids" is a string, expected an array of integers' rl-sft -m base -o z $common wrong.jsonl
check_fails "a missing model" 1 'nope/config.json' rl-sft -m nope -o z $common sft.jsonl
finish
