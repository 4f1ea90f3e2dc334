#!/bin/bash
# rl-cat: exact round trips, options, errors with exit status 1, refusing ttys.
. "$(dirname "$0")/lib.sh"
D=$RL_ROOT/tests/data

# JSONL -> stream -> JSONL is exact on the tricky corpus, at several levels
for level in 0 1 3 19; do
    rl-cat -p -L $level "$D/tricky.jsonl" > "$TMP/t.$level" && rl-cat "$TMP/t.$level" > "$TMP/t.$level.jsonl"
    check "round trip JSONL -> stream (level $level) -> JSONL is exact" cmp "$D/tricky.jsonl" "$TMP/t.$level.jsonl"
done
check "level 0 writes raw msgpack (no zstd magic)" test "$(head -c1 "$TMP/t.0" | xxd -p)" = "82"
check "zstd output is a zstd frame" zstd -t -q "$TMP/t.3"
check "zstd -d output reads the same" bash -c "zstd -dc '$TMP/t.3' | rl-cat | cmp - '$D/tricky.jsonl'"
check "a .jsonl.zst file (zstd of JSON Lines) is read" bash -c "zstd -qc '$D/tricky.jsonl' | rl-cat | cmp - '$D/tricky.jsonl'"
check "stream -> stream (-p on a stream) keeps records byte for byte" bash -c "rl-cat -p -L 0 '$TMP/t.0' | cmp - '$TMP/t.0'"

# options
check "--count" test "$(rl-cat --count "$D/tricky.jsonl")" = 12
check "-c on two inputs (one from stdin)" test "$(rl-cat -c "$TMP/t.3" - < "$TMP/t.0")" = 24
check "-n 2" test "$(rl-cat -n 2 "$TMP/t.3" | wc -l)" = 2
check "-n 0" test "$(rl-cat -n 0 "$TMP/t.3" | wc -c)" = 0
check "-n across inputs" test "$(rl-cat -n 14 "$TMP/t.3" "$TMP/t.3" | wc -l)" = 14
check "-f keeps only listed fields, in record order" test "$(rl-cat -f t,id -n 7 "$TMP/t.3" | tail -1)" = '{"id":"bool-null","t":true}'
check "-f with -p" test "$(rl-cat -p -f id "$TMP/t.3" | rl-cat -n 1)" = '{"id":"plain"}'
check "--skip and -n take a slice" test "$(rl-cat --skip 2 -n 2 -f id "$TMP/t.3" | tr -d '\n')" = '{"id":"escapes"}{"id":"ints"}'
check "--set adds and replaces fields (JSON or string)" test "$(rl-cat -n 1 --set iter=2 --set id=x --set stage=sft "$TMP/t.3")" = '{"prompt":"Hello, world.","iter":2,"id":"x","stage":"sft"}'
check "--set on a packed stream" test "$(rl-cat -p -n 1 --set 'tags=["a",1]' "$TMP/t.3" | rl-cat -f id,tags)" = '{"id":"plain","tags":["a",1]}'
check_fails "--set without =" 2 "is not KEY=VALUE" rl-cat --set iter
check "inputs are concatenated in order" bash -c "rl-cat '$TMP/t.3' '$TMP/t.0' | cmp - <(cat '$D/tricky.jsonl' '$D/tricky.jsonl')"
check "--help exits 0 and documents options" bash -c "rl-cat --help | grep -q -- --fields"
check_fails "unknown option is a usage error" 2 "Try 'rl-cat --help'" rl-cat --bogus
check_fails "bad -n is a usage error" 2 "head" rl-cat -n x
check_fails "--count with --pack" 2 "do not go together" rl-cat -c -p
check_fails "missing file" 1 "^rl-cat: nope.zst: cannot open: No such file" rl-cat nope.zst

# errors: exit 1, message with line/record, and the good records before it are written
printf '{"id":"a"}\n{"id":"b"}\n{"id": c}\n{"id":"d"}\n' > "$TMP/bad.jsonl"
check_fails "invalid JSON names the line" 1 'record 3 \(line 3\): invalid JSON: column 8' rl-cat -p "$TMP/bad.jsonl"
rl-cat -p "$TMP/bad.jsonl" 2>/dev/null > "$TMP/partial.zst"
check "records before the bad line were written and the frame is complete" test "$(rl-cat -c "$TMP/partial.zst")" = 2
printf '{"id":"a"}\n{"id":"\xff"}\n' > "$TMP/badutf.jsonl"
check_fails "invalid UTF-8 names the line" 1 'line 2.*invalid UTF-8' rl-cat "$TMP/badutf.jsonl"
head -c 100 "$TMP/t.3" > "$TMP/trunc.zst"
check_fails "truncated zstd frame" 1 'truncated zstd frame' rl-cat "$TMP/trunc.zst"
head -c 60 "$TMP/t.0" > "$TMP/trunc.mp"
check_fails "truncated raw record names record and byte" 1 'record 2 \(byte 31\): truncated record: the stream ends after 29 of its bytes' rl-cat "$TMP/trunc.mp"
printf '\x92\x01\x02' > "$TMP/arr.mp"
check_fails "top-level array is not a record" 1 'record 1 \(byte 0\): a record must be a map, found an array' rl-cat "$TMP/arr.mp"
printf '\x81\xa1s\xa2\xc3\x28' > "$TMP/badstr.mp"
check_fails "msgpack string with invalid UTF-8 cannot be shown as JSON" 1 'field "s": string is not valid UTF-8' rl-cat "$TMP/badstr.mp"
check_fails "record over --max-record" 1 'exceeds the record size limit|larger than the limit' rl-cat --max-record 100 "$TMP/t.0"

# truncation at every byte of a small stream: exit 0 or 1 with a message, never a crash
bad=0
n=$(stat -c %s "$TMP/t.3")
for ((i = 0; i < n; i++)); do
    head -c $i "$TMP/t.3" > "$TMP/cut"
    rl-cat "$TMP/cut" > /dev/null 2> "$TMP/cut.err"; rc=$?
    if [ $i -gt 0 ] && { [ $rc != 1 ] || ! grep -q '^rl-cat: ' "$TMP/cut.err"; }; then bad=$((bad + 1)); fi
done
check "every truncation of a $n-byte stream exits 1 with a message" test $bad = 0

# refuse to write a binary stream to a terminal
if command -v script > /dev/null; then
    script -qec "rl-cat -p $D/tricky.jsonl" /dev/null > "$TMP/tty.out" 2>&1
    check "refuses a binary stream to a terminal" grep -q 'refusing to write a binary stream to a terminal' "$TMP/tty.out"
    script -qec "rl-cat -p --force -n 1 $D/tricky.jsonl" /dev/null > "$TMP/tty2.out" 2>&1
    check "--force writes it anyway" bash -c "! grep -q refusing '$TMP/tty2.out'"
else
    skip "refuses a binary stream to a terminal" "script(1) not installed"
fi

# a pipe: records reach downstream while upstream is still running
( printf '{"id":"first"}\n'; sleep 3; printf '{"id":"second"}\n' ) | rl-cat -p | rl-cat > "$TMP/live" &
sleep 1.5
check "a downstream reader sees records while upstream still runs" grep -q first "$TMP/live"
wait
finish
