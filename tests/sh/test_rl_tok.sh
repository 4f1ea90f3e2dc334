# rl-tok: options, golden ids, decode, records filter, template selection, errors.
. "$(dirname "$0")/lib.sh"
F=${RL_FIXTURES:-$RL_ROOT/../shared/fixtures}/tokenizers
if [ ! -f "$F/golden.json" ]; then skip rl_tok "fixtures absent (set RL_FIXTURES)"; finish; fi
L=$F/llama3 Q=$F/qwen3 G=$F/gpt2

check help rl-tok --help
check_fails no_tokenizer 2 "-t PATH" rl-tok
check_fails bad_option 2 "unknown option" rl-tok -t "$L" --frobnicate
check_fails bad_template_name 2 "unknown template" rl-tok -t "$L" --template jinja
check_fails missing_tokenizer 1 "nope" rl-tok -t "$TMP/nope"

# golden ids, each tokenizer, a few texts (jq gives text and ids), one rl-tok run per tokenizer
for m in gpt2 llama3 qwen3; do
    : >"$TMP/want.txt"
    files=
    for i in 0 1 2 12 13; do
        jq -j ".${m}[$i].text" "$F/golden.json" >"$TMP/in$i.txt"
        jq -r ".${m}[$i].ids | map(tostring) | join(\" \")" "$F/golden.json" >>"$TMP/want.txt"
        files="$files $TMP/in$i.txt"
    done
    # shellcheck disable=SC2086
    rl-tok -t "$F/$m" --raw $files >"$TMP/got.txt" 2>&1
    cmp -s "$TMP/got.txt" "$TMP/want.txt" && ok "golden_$m" || fail "golden_$m" "$(diff "$TMP/got.txt" "$TMP/want.txt" | head -3 | tr '\n' ' ')"
done

printf 'Hello world' >"$TMP/hw.txt"
# GPT-2 pair under its Hugging Face names: same ids, same fingerprint
mkdir -p "$TMP/g2"
ln -s "$G/encoder.json" "$TMP/g2/vocab.json"
ln -s "$G/vocab.bpe" "$TMP/g2/merges.txt"
[ "$(rl-tok -t "$TMP/g2" "$TMP/hw.txt")" = "15496 995" ] && [ "$(rl-tok -t "$TMP/g2" --fingerprint)" = "$(rl-tok -t "$G" --fingerprint)" ] \
    && ok gpt2_hf_names || fail gpt2_hf_names
[ "$(rl-tok -t "$L" --fingerprint)" != "$(rl-tok -t "$Q" --fingerprint)" ] && ok fingerprints_differ || fail fingerprints_differ
[ "$(rl-tok -t "$L/tokenizer.json" "$TMP/hw.txt")" = "9906 1917" ] && ok tokenizer_json_path || fail tokenizer_json_path
[ "$(rl-tok -t "$G" -c "$TMP/hw.txt")" = "2" ] && ok count || fail count
[ "$(rl-tok -t "$G" "$TMP/hw.txt" "$TMP/hw.txt" | wc -l)" = 2 ] && ok one_line_per_file || fail one_line_per_file
[ "$(echo '15496, 995' | rl-tok -t "$G" -d)" = "Hello world" ] && ok decode || fail decode
[ "$(echo '[151644, 9707, 151645]' | rl-tok -t "$Q" -d -S)" = "Hello" ] && ok decode_skip_special || fail decode_skip_special

# specials: parsed by default, plain text with -S
[ "$(printf '<|im_end|>' | rl-tok -t "$Q")" = "151645" ] && ok special_parsed || fail special_parsed
[ "$(printf '<|im_end|>' | rl-tok -t "$Q" -S | wc -w)" -gt 1 ] && ok no_special || fail no_special
# round trip of a file with everything in it
printf 'caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac  tabs\t\tand\r\nnewlines <|endoftext|> 12345 \xf0\x9f\x98\x80' >"$TMP/mix.txt"
rl-tok -t "$G" "$TMP/mix.txt" | rl-tok -t "$G" -d >"$TMP/back.txt"
cmp -s "$TMP/mix.txt" "$TMP/back.txt" && ok roundtrip || fail roundtrip

printf 'ok\xc3(' >"$TMP/bad.txt"
check_fails invalid_utf8 1 "bad.txt: invalid UTF-8 at byte 2" rl-tok -t "$G" "$TMP/bad.txt"
check_fails bad_id_text 1 "byte 2: \"x1\" is not a token id" sh -c "echo '1 x1' | rl-tok -t '$G' -d"
check_fails bad_id_range 1 "not in the vocabulary" sh -c "echo '99999999' | rl-tok -t '$G' -d"

# chat: the template renders like the Jinja; ids with the generation prompt
echo '[{"role":"user","content":"Hi"}]' >"$TMP/chat.json"
want=$(printf '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n')
[ "$(rl-tok -t "$Q" --chat --render "$TMP/chat.json")" = "$want" ] && ok chat_render || fail chat_render
[ "$(rl-tok -t "$L" --chat "$TMP/chat.json")" = "128000 128006 882 128007 271 13347 128009 128006 78191 128007 271" ] \
    && ok chat_ids_llama3 || fail chat_ids_llama3
[ "$(rl-tok -t "$L" --chat --no-gen-prompt "$TMP/chat.json")" = "128000 128006 882 128007 271 13347 128009" ] \
    && ok chat_no_gen_prompt || fail chat_no_gen_prompt

# unknown template -> error suggesting --template; --template overrides
mkdir -p "$TMP/m"
ln -s "$Q/tokenizer.json" "$TMP/m/tokenizer.json"
echo '{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}' >"$TMP/m/tokenizer_config.json"
check_fails unknown_template 1 "--template NAME" rl-tok -t "$TMP/m" --chat "$TMP/chat.json"
[ "$(rl-tok -t "$TMP/m" --template chatml --chat --render "$TMP/chat.json")" = "$want" ] && ok template_override \
    || fail template_override
check_fails template_needs_tokens 1 "needs the token <start_of_turn>" rl-tok -t "$Q" --template gemma --chat "$TMP/chat.json"

# --records: prompt or messages -> prompt_ids, tok; other fields pass through
if command -v rl-cat >/dev/null; then
    fp=$(rl-tok -t "$Q" --fingerprint)
    printf '%s\n' '{"id":"a","prompt":"Hello world","x":[1,{"y":null}]}' \
        '{"id":"b","messages":[{"role":"user","content":"Hi <|im_end|>"}]}' >"$TMP/recs.jsonl"
    rl-tok -t "$Q" -r "$TMP/recs.jsonl" | rl-cat >"$TMP/out.jsonl"
    [ "$(jq -c .prompt_ids "$TMP/out.jsonl" | head -1)" = "[9707,1879]" ] && ok records_prompt || fail records_prompt "$(head -c 300 "$TMP/out.jsonl")"
    [ "$(jq -r .tok "$TMP/out.jsonl" | sort -u)" = "$fp" ] && ok records_tok || fail records_tok
    [ "$(jq -c .x "$TMP/out.jsonl" | head -1)" = '[1,{"y":null}]' ] && ok records_passthrough || fail records_passthrough
    # the content's <|im_end|> is text: exactly one 151645 (the template's)
    [ "$(jq -c '[.prompt_ids[] | select(. == 151645)] | length' "$TMP/out.jsonl" | tail -1)" = 1 ] \
        && ok records_no_injection || fail records_no_injection
    printf '%s\n' '{"id":"a","prompt":"x"}' '{"id":"b"}' >"$TMP/bad.jsonl"
    check_fails records_missing 1 "record 2 \(line 2\): neither" rl-tok -t "$Q" -r -L 0 "$TMP/bad.jsonl"
    # the record before the bad one has been written
    rl-tok -t "$Q" -r "$TMP/bad.jsonl" 2>/dev/null | rl-cat | jq -r .id >"$TMP/ids.txt"
    [ "$(cat "$TMP/ids.txt")" = a ] && ok records_before_error_written || fail records_before_error_written
    printf '%s\n' '{"id":"a","messages":[{"role":"user","content":3}]}' >"$TMP/bad2.jsonl"
    check_fails records_bad_type 1 'messages\[0\].content' sh -c "rl-tok -t '$Q' -r '$TMP/bad2.jsonl' > /dev/null"
else
    skip records "rl-cat not built"
fi
finish
