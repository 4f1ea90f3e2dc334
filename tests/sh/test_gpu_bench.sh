#!/bin/bash
# bench/gpu_bench and bench/gen_bench, the GPU report's benchmarks, run on
# devsim (the CPU behind device pointers) at a tiny size: each figure
# tests/gpu/run reads comes out, as a positive number. A GPU session's few
# minutes should not be where a benchmark is found broken (the sixth
# session's top-p rows decoded past the KV cache they had sized, which only
# a run shows).
. "$(dirname "$0")/lib.sh"
B=${RL_BUILD:-$RL_ROOT/build/opt}/benchbin/gpu_bench
G=${RL_BUILD:-$RL_ROOT/build/opt}/benchbin/gen_bench
if [ ! -x "$B" ] || [ ! -x "$G" ]; then
    skip "gpu_bench and gen_bench on devsim" "not built"
    finish
fi
cfg=$RL_ROOT/tests/data/configs/smollm2-135m.json
# has KEY: the line "KEY <positive number>" is in the output
has() { awk -v k="$1" '$1 == k && $2 + 0 > 0 { found = 1 } END { exit !found }' "$TMP/out"; }

"$B" -D devsim -g -p 70 -d 4 -L 2 -c "$cfg" > "$TMP/out" 2> "$TMP/err"
check "gpu_bench -g on devsim exits 0" test $? = 0 -a ! -s "$TMP/err"
for b in 1 64; do
    for k in rows_tokens_per_s rows_floor_tokens_per_s rows_of_floor rows_draw_tokens_per_s \
             rows_hostdraw_tokens_per_s rows_topp_draw_tokens_per_s rows_topp_hostdraw_tokens_per_s \
             cublas_tokens_per_s cublas_of_floor; do
        check "gpu_bench decode: decode_b${b}_$k" has "decode_b${b}_$k"
    done
done

"$B" -D devsim -t -b 2 -s 24 -L 1 -c "$cfg" > "$TMP/out" 2> "$TMP/err"
check "gpu_bench -t on devsim exits 0" test $? = 0 -a ! -s "$TMP/err"
for k in train_step_s train_tokens_per_s; do
    check "gpu_bench training step: $k" has $k
done
# -a: micro-batches a step (gradient accumulation), as tests/gpu/run's accum4 row
"$B" -D devsim -t -a 2 -b 2 -s 24 -L 1 -c "$cfg" > "$TMP/out" 2> "$TMP/err"
check "gpu_bench -t -a 2 on devsim exits 0" test $? = 0 -a ! -s "$TMP/err"
check "gpu_bench -a 2: the step has 2 micro-batches" grep -qx "train_micro_batches 2" "$TMP/out"
for k in train_step_s train_tokens_per_s; do
    check "gpu_bench training step of 2 micro-batches: $k" has $k
done
"$B" -D devsim -t -a 0 -L 1 -c "$cfg" > "$TMP/out" 2> "$TMP/err"
check "gpu_bench -a 0 is refused" test $? != 0 -a -s "$TMP/err"

# On the CPU emulation of the kernels (built by make), where the launches
# are counted: a decode layer with streamed rows is 8 launches at batch 1
# (two norms, four products, the gate|up one ending in SwiGLU, RoPE with
# kv_append, the split attention), so a third layer adds 8 to a step.
E=${RL_BUILD:-$RL_ROOT/build/opt}/emu/rlflow-cuda-emu.so
if [ -f "$E" ]; then
    tiny=$RL_ROOT/tests/data/configs/tiny-llama.json
    for L in 2 3; do
        env RL_CUDA_LIB="$E" RL_CUDA_MATH=bf16 RL_CUDA_ROWS=stream \
            "$B" -D cuda -C 64 -g -p 8 -d 3 -L $L -c "$tiny" > "$TMP/emu$L" 2> "$TMP/err"
        check "gpu_bench -g on the emulation, $L layers, exits 0" test $? = 0
    done
    cp "$TMP/emu2" "$TMP/out"
    for k in launch_us decode_b1_rows_launches_per_step decode_b1_rows_launch_floor_tokens_per_s \
             decode_b64_rows_launches_per_step; do
        check "gpu_bench on the emulation: $k" has $k
    done
    per_layer=$(awk '$1 == "decode_b1_rows_launches_per_step" { n[FILENAME] = $2 } END { print n[ARGV[2]] - n[ARGV[1]] }' \
        "$TMP/emu2" "$TMP/emu3")
    check "a decode layer with streamed rows is 8 launches at batch 1 (got $per_layer)" test "$per_layer" = 8
    # decode steps as CUDA graphs (tests/gpu/run's graphs part): the same
    # launches, recorded; the timed step updates the warm-up's graph
    env RL_CUDA_LIB="$E" RL_CUDA_MATH=bf16 RL_CUDA_ROWS=stream RL_CUDA_GRAPHS=on \
        "$B" -D cuda -C 64 -g -p 8 -d 3 -L 2 -c "$tiny" > "$TMP/out" 2> "$TMP/err"
    check "gpu_bench -g on the emulation with CUDA graphs exits 0" test $? = 0
    check "gpu_bench: the device line says decode steps run as CUDA graphs" grep -q "^device .*, decode steps as CUDA graphs" "$TMP/out"
    check "CUDA graphs: a step's launches are counted as without them" test \
        "$(grep "^decode_b1_rows_launches_per_step " "$TMP/out")" = "$(grep "^decode_b1_rows_launches_per_step " "$TMP/emu2")"
    for b in 1 64; do
        check "CUDA graphs: the timed batch-$b step is a graph updated in place" \
            grep -qx "decode_b${b}_rows_graphs 1 launched, 1 updated, 0 instantiated, 0 paused" "$TMP/out"
    done
    env RL_CUDA_LIB="$E" RL_CUDA_GRAPHS=frob "$B" -D cuda -C 64 -g -L 1 -c "$tiny" > "$TMP/out" 2> "$TMP/err"
    check "RL_CUDA_GRAPHS=frob is refused, naming what it takes" \
        grep -qF 'RL_CUDA_GRAPHS="frob": expected auto, on or off' "$TMP/out" "$TMP/err"
    # the trainers' shape with cuBLASLt pinned (tests/gpu/run's trainer part):
    # a batch-invariant step (-I) runs, on the route the device line names
    env RL_CUDA_LIB="$E" RL_CUDA_MATH=bf16 RL_CUDA_GEMM=pinned \
        "$B" -D cuda -C 64 -t -b 2 -s 24 -L 1 -I -c "$tiny" > "$TMP/out" 2> "$TMP/err"
    check "gpu_bench -t -I on the emulation, cuBLASLt pinned, exits 0" test $? = 0
    check "gpu_bench: the device line names cuBLASLt pinned" grep -q "^device .*bf16 GEMMs (cuBLASLt, pinned)" "$TMP/out"
    check "gpu_bench, cuBLASLt pinned: train_step_s" has train_step_s
    env RL_CUDA_LIB="$E" RL_CUDA_GEMM=frob "$B" -D cuda -C 64 -t -L 1 -c "$tiny" > "$TMP/out" 2> "$TMP/err"
    check "RL_CUDA_GEMM=frob is refused, naming what it takes" \
        grep -qF 'RL_CUDA_GEMM="frob": expected auto, ex, lt or pinned' "$TMP/out" "$TMP/err"
else
    skip "gpu_bench on the emulation" "not built"
fi

"$G" -D devsim -c "$cfg" -L 2 -p 4 -l 16 -n 3 -g 8 -s 32 -b 64 -P 0.9 > "$TMP/out" 2> "$TMP/err"
check "gen_bench on devsim exits 0" test $? = 0
for k in gen_b64_tokens_per_s gen_b64_steps gen_b64_slots_busy gen_b1_tokens_per_s; do
    check "gen_bench: $k" has $k
done
finish
