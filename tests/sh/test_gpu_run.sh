#!/bin/bash
# tests/gpu/run itself, on stand-ins for the GPU programs (a pack of shell
# scripts that print what the real ones print, with figures that say which
# switches they ran under): what a GPU session's few minutes should not be
# spent finding out. The check and --tune modes run their own parts under
# the right switches and fill the table; the budget holds, cutting a part
# that would pass it and naming those it could not start; a failed test
# fails the run; a machine without a GPU skips the rest; bad options are
# refused.
. "$(dirname "$0")/lib.sh"
run=$RL_ROOT/tests/gpu/run
pack=$TMP/pack
mkdir -p "$pack/bin" "$pack/t" "$pack/benchbin" "$TMP/path"
: >"$pack/bin/rlflow-cuda.so"

# the test programs: one ok line each, or a failure where FAKE_FAIL names the
# program; a SKIP where FAKE_NO_GPU is set (as test_cuda_ops without a GPU)
cat >"$pack/t/test_cuda_ops" <<'EOF'
#!/bin/bash
p=$(basename "$0")
[ -n "${FAKE_NO_GPU:-}" ] && { echo "ok 1 $p # SKIP no CUDA device (stand-in)"; exit 0; }
echo "ok 1 $p ${RL_CUDA_MATH:-} ${RL_CUDA_ATTN:-}"
[ "$p" = test_cuda_model ] && echo "worst gradient: per_sequence 0.0${RL_TEST_LAYERS:-3}" >&2
[ "$p" = test_cuda_ops ] && [ "${RL_CUDA_GEMM:-}" = lt ] && echo "invariance: unpinned cuBLASLt, stand-in: 3 of 10" >&2
[ "${FAKE_FAIL:-}" = "$p-${RL_CUDA_GEMM:-}" ] && { echo "not ok 2 $p planted"; exit 1; }
[ "${FAKE_FAIL:-}" = "$p-graphs" ] && [ "${RL_CUDA_GRAPHS:-}" = on ] && { echo "not ok 2 $p planted"; exit 1; }
[ "${FAKE_FAIL:-}" = "$p" ] && { echo "not ok 2 $p planted"; exit 1; }
exit 0
EOF
for p in test_cuda_model test_model_parity test_train_parity; do cp "$pack/t/test_cuda_ops" "$pack/t/$p"; done
printf '#!/bin/sh\nexit 0\n' >"$pack/bin/rl-gen"

# gpu_bench: a training step's figures that encode its switches (MFU 0.3
# with auto's pinned cuBLASLt, 0.1 more with tc-wide attention, 0.01 times
# the micro-batches, 0.2 less with fp32 activations, 0.35 with cuBLASLt's
# heuristic, 0.26 with cublasGemmEx; batch-invariant (-I) 0.29, but 0.2 with
# cublasGemmEx, a product per sequence; the step's seconds 0.0124 over the
# MFU); decode figures that encode the rows kernel (auto's streamed one
# slower than tc) and the streamed kernel's block target, 20 tok/s more as
# CUDA graphs. FAKE_SLEEP: seconds before the output.
cat >"$pack/benchbin/gpu_bench" <<'EOF'
#!/bin/bash
echo "$*" >>"$FAKE_LOG"
sleep "${FAKE_SLEEP:-0}" >/dev/null 2>&1   # not holding a pipe open once cut
t=1 g=1 a=1 inv=
while getopts "c:b:s:a:L:d:p:D:tgI" o; do
    case $o in t) g= ;; g) t= ;; a) a=$OPTARG ;; I) inv=1 ;; *) ;; esac
done
echo "device stand-in (bf16 GEMMs)"
echo "gemm_bf16_tflops 880.0"
echo "copy_gbps 3000"
echo "launch_us 2.50"
if [ -n "$t" ]; then
    mfu=0.3
    [ "${RL_CUDA_ATTN:-auto}" = tc-wide ] && mfu=0.4
    [ "${RL_CUDA_ACT:-}" = fp32 ] && mfu=0.1
    [ "${RL_CUDA_GEMM:-}" = lt ] && mfu=0.35
    [ "${RL_CUDA_GEMM:-}" = ex ] && mfu=0.26
    [ -n "$inv" ] && mfu=0.29 && [ "${RL_CUDA_GEMM:-}" = ex ] && mfu=0.2
    mfu=$(awk -v m=$mfu -v a="$a" 'BEGIN { printf "%.3f", m + 0.01 * a }')
    echo "model_params 1.100B"
    echo "train_shape 4x1024"
    awk -v m="$mfu" 'BEGIN { printf "train_step_s %.4f\n", 0.0124 / m }'   # 0.04 s at 0.31
    echo "train_tokens_per_s 4${a}000"
    echo "train_mfu $mfu"
fi
if [ -n "$g" ]; then
    r=${RL_CUDA_ROWS:-stream}${RL_CUDA_ROWS_BLOCKS:-}
    for b in 1 64; do
        n=$((b * 100 + 10 - ${#r}))
        [ "${RL_CUDA_GRAPHS:-}" = on ] && n=$((n + 20))
        for k in rows_tokens_per_s rows_floor_tokens_per_s rows_draw_tokens_per_s cublas_tokens_per_s; do
            echo "decode_b${b}_$k $n"
        done
        echo "decode_b${b}_rows_of_floor 0.$n"
        echo "decode_b${b}_rows_launches_per_step ${#r}"            # tc: 2, stream: 6 launches
        echo "decode_b${b}_rows_launch_floor_tokens_per_s $((n * 12 / ${#r}))"
    done
fi
EOF
cat >"$pack/benchbin/gen_bench" <<'EOF'
#!/bin/bash
echo "gen $*" >>"$FAKE_LOG"
g=; [ "${RL_CUDA_GRAPHS:-}" = on ] && g=1
echo "gen_b64_tokens_per_s ${g:+5}45${#RL_CUDA_ROWS}"
echo "gen_b64_steps 201"
echo "gen_b64_slots_busy 0.59"
echo "gen_b1_tokens_per_s ${g:+3}24${#RL_CUDA_ROWS}"
EOF
# PyTorch's benchmark; any other Python program is the real one's
cat >"$TMP/python" <<'EOF'
#!/bin/bash
if [ "${1:-}" = bench/gpu_torch.py ]; then
    printf 'torch_matmul_bf16_tflops 787.0\ntorch_train_tokens_per_s 37887\ntorch_train_mfu 0.312\n'
    printf 'torch_train_accum4_step_s 0.3900\ntorch_train_accum4_mfu 0.330\n'
    exit 0
fi
exec python3 "$@"
EOF
printf '#!/bin/sh\necho "Stand-in H200, 580.00, 143771 MiB"\n' >"$TMP/path/nvidia-smi"
chmod +x "$pack"/t/* "$pack"/benchbin/* "$pack/bin/rl-gen" "$TMP/python" "$TMP/path/nvidia-smi"

# gpu_run NAME ARGS...: the script on the stand-ins, its output in $TMP/NAME.out,
# its report in $TMP/NAME.report, its seconds in $TMP/NAME.s; returns its status
gpu_run() {
    local name=$1 t0=$SECONDS rc; shift
    : >"$TMP/calls"
    rm -rf "$TMP/OUT"
    env RL_GPU_PACK="$pack" RL_GPU_OUT="$TMP/gpu-out" OUT="$TMP/OUT" PYTHON="$TMP/python" \
        FAKE_LOG="$TMP/calls" PATH="$TMP/path:$PATH" bash "$run" "$@" >"$TMP/$name.out" 2>&1
    rc=$?
    echo $((SECONDS - t0)) >"$TMP/$name.s"
    cp "$TMP/gpu-out/gpu-report.txt" "$TMP/$name.report" 2>/dev/null
    return $rc
}
has() { grep -qF -- "$2" "$TMP/$1.report"; }
# cell NAME ROW: the rlflow cell of the report's table row that begins ROW
cell() { grep -F "| $2" "$TMP/$1.report" | head -1 | awk -F'|' '{gsub(/^ +| +$/, "", $3); print $3}'; }

gpu_run check
check "check: exits 0" test $? = 0
check "check: the card is named" has check "GPU check (check): Stand-in H200"
check "check: the whole suite ran" grep -qE "^GPU suite: 2[0-9] passed, 0 failed" "$TMP/check.report"
check "check: the 22-layer gradient errors are reported" has check "22 layers 0.022"
check "check: the headline MFU, ours and PyTorch's" test "$(grep -F 'MFU vs bf16' "$TMP/check.report" | tr -d ' ')" = "|MFUvsbf16GEMMrate(target0.45)|0.310|0.312|"
check "check: 4 micro-batches ran with -a 4" test "$(cell check '  4 micro-batches')" = "0.0365 / 0.340"
check "check: tc-wide's route ran under RL_CUDA_ATTN=tc-wide" test "$(cell check '  train step, attention tc-wide')" = "0.0302 / 0.410"
check "check: fp32 activations ran under RL_CUDA_ACT=fp32" test "$(cell check '  fp32 activations')" = "0.1127 / 0.110"
check "check: the unstreamed decode ran under RL_CUDA_ROWS=tc" test "$(cell check '  the same, unstreamed')" = 108
check "check: rl-gen end to end, unstreamed" test "$(cell check 'rl-gen b64 / b1, top-p 1, unstreamed')" = "452 / 242"
check "check: the decode step as CUDA graphs ran under RL_CUDA_GRAPHS=on" test "$(cell check '  the same, as CUDA graphs')" = 124
check "check: rl-gen end to end as CUDA graphs" test "$(cell check 'rl-gen b64 / b1, top-p 1, CUDA graphs')" = "5450 / 3240"
check "check: graphs' faster decode chooses them, their tests passed" grep -qx "  decode batch 1, CUDA graphs against op by op (auto's): gains 19.2% -> AUTO_GRAPHS true (kernels/cuda_graph.cu), if no line loses" "$TMP/check.report"
check "check: graphs' gain under 3% keeps the default" grep -qx "  decode batch 64, CUDA graphs against op by op (auto's): gains 0.3% -> keep the default" "$TMP/check.report"
check "check: cuBLASLt's heuristic ran under RL_CUDA_GEMM=lt" test "$(cell check "  cuBLASLt's heuristic")" = "0.0344 / 0.360"
check "check: cublasGemmEx ran under RL_CUDA_GEMM=ex" test "$(cell check '  cublasGemmEx')" = "0.0459 / 0.270"
check "check: the trainers' shape pinned (-I), a product a sequence (-I with RL_CUDA_GEMM=ex) and --batch-gemm" \
    test "$(cell check '16 x 256 tokens')" = "0.0413 / 0.0590 / 0.0400"
check "check: cuBLASLt's faster step proposes it, the trainers' line to agree" grep -qx "  training step, cuBLASLt's heuristic against auto's pinned cuBLASLt: gains 16.3% -> AUTO_GEMM GEMM_LT (kernels/cuda_gemm_lt.cu), if the trainers' line agrees" "$TMP/check.report"
check "check: cublasGemmEx's slower step keeps pinned" grep -qx "  training step, cublasGemmEx against auto's pinned cuBLASLt: loses 12.9% -> keep the default" "$TMP/check.report"
check "check: the trainers' slower product a sequence keeps pinned" grep -qx "  trainers' 16 x 256 step, one product a sequence against auto's pinned one for the batch: loses 30.0% -> keep the default" "$TMP/check.report"
check "check: pinned's model test passed, so no line against it" test -z "$(grep "model-bf16 (its batch invariance" "$TMP/check.report")"
check "check: the unpinned route's rows alone, on the card" grep -q "^rows alone against the whole product: unpinned cuBLASLt, stand-in: 3 of 10" "$TMP/check.report"
check "check: no tuning rows" test -z "$(cell check '  streamed, 256')$(cell check '  train step, attention cublas')"
check "check: tc-wide's faster step chooses it" grep -qx "  training step, tc-wide attention against auto's: gains 32.5% -> AUTO_TC_KIND TC_WIDE (kernels/cuda_attention.cu)" "$TMP/check.report"
check "check: fp32 activations' slower step keeps bf16" grep -qx "  training step, fp32 activations against auto's bf16: loses 64.5% -> keep the default" "$TMP/check.report"
check "check: unstreamed rows past 3% at batch 1 choose them" grep -qx "  decode batch 1, unstreamed rows against auto's streamed: gains 3.8% -> AUTO_ROWS ROWS_TC (kernels/cuda_gemm.cu)" "$TMP/check.report"
check "check: under 3% keeps the default" grep -qx "  rl-gen batch 1 end to end, unstreamed rows against auto's streamed: gains 0.8% -> keep the default" "$TMP/check.report"
check "check: the launches a step, auto's and unstreamed" test "$(cell check '  launches a step')" = "6 / 2"
check "check: the launches' share of a step, under a quarter" grep -q "decode batch 1, unstreamed rows: its launches alone are 17% of a step -> the launches are not what bounds it" "$TMP/check.report"
check "check: the launches' share of a step, over a quarter" grep -q "decode batch 1: its launches alone are 50% of a step -> CUDA graphs should pay" "$TMP/check.report"
check "check: the time of each part" grep -qE "^time by part: ops-fp32 [0-9]+ s, .*gpu_bench [0-9]+ s, gpu_torch [0-9]+ s" "$TMP/check.report"
check "check: the report and the logs in \$OUT" test -s "$TMP/OUT/gpu-report.txt" -a -s "$TMP/OUT/gpu-logs.txt"

gpu_run tune --tune
check "tune: exits 0" test $? = 0
check "tune: one op suite, no other" grep -q "^GPU suite: 1 passed, 0 failed" "$TMP/tune.report"
check "tune: the streamed blocks' sweep under RL_CUDA_ROWS_BLOCKS" test "$(grep -F '  streamed, 256' "$TMP/tune.report" | head -1 | awk -F'|' '{print $3}' | tr -d ' ')" = 101/101/100/100
check "tune: the fastest blocks' target" grep -q "decode batch 64, streamed rows, blocks' target 256 / 512 / 1024 / 2048: 6401 / 6401 / 6400 / 6400 tok/s -> keep 512" "$TMP/tune.report"
check "tune: the cublas route ran" test "$(cell tune '  train step, attention cublas')" = "0.0400 / 0.310"
check "tune: the trainers' routes" test "$(cell tune '16 x 256 tokens')" = "0.0413 / 0.0590 / 0.0400"
check "tune: head_dim 128 on Mistral-7B's shape, 4 layers" grep -q -- "-t -L 4 -c tests/data/configs/mistral-7b.json" "$TMP/calls"
check "tune: not the check's PyTorch run" test ! -e "$TMP/gpu-out/torch.txt"

# the budget: each gpu_bench takes 3 s; a 20 s budget runs the suite (a
# few seconds, its share 10) and some benchmarks, names the rest, and ends
# in time
FAKE_SLEEP=3 gpu_run budget --budget 20
check "budget: exits 0" test $? = 0
check "budget: ended within its 20 s" test "$(cat "$TMP/budget.s")" -le 20
check "budget: the first benchmark ran" test "$(cell budget '  MFU vs bf16')" = 0.310
check "budget: the parts not run are named" grep -q "^not run: .*gen_bench tc_p1" "$TMP/budget.report"
# a part that would pass the budget is cut at its end
FAKE_SLEEP=60 gpu_run cut --budget 20
check "cut: ended within its 20 s" test "$(cat "$TMP/cut.s")" -le 20
check "cut: the part is named as cut" grep -qE "gpu_bench [0-9]+ s \(cut\)" "$TMP/cut.report"

# the model test on auto's route (pinned cuBLASLt) failed: back to cublasGemmEx
FAKE_FAIL=test_cuda_model- gpu_run pinfail
check "auto's model test failed: the run fails" test $? = 1
check "auto's model test failed: cublasGemmEx until it passes" grep -qx "  auto's pinned cuBLASLt: model-bf16 (its batch invariance among others) failed: AUTO_GEMM GEMM_EX (kernels/cuda_gemm_lt.cu) until it passes" "$TMP/pinfail.report"

# a graphs test failed: no choice of them
FAKE_FAIL=test_cuda_model-graphs gpu_run graphfail
check "graphs' test failed: the run fails" test $? = 1
check "graphs' test failed: keep the default" grep -q "CUDA graphs: their tests did not pass (or run): keep the default" "$TMP/graphfail.report"
check "graphs' test failed: no choice of them" test -z "$(grep "AUTO_GRAPHS" "$TMP/graphfail.report")"

FAKE_FAIL=test_cuda_model gpu_run fail --no-bench
check "a failed test: exit status 1" test $? = 1
check "a failed test: counted in the report" grep -qE "^GPU suite: [0-9]+ passed, [1-9][0-9]* failed" "$TMP/fail.report"
check "a failed test: its line is shown" grep -q "not ok 2 test_cuda_model planted" "$TMP/fail.out"
check "--no-bench: no benchmark ran" test ! -s "$TMP/calls"

FAKE_NO_GPU=1 gpu_run nogpu
check "no GPU: exits 0" test $? = 0
check "no GPU: says why it skipped" grep -q "^GPU check skipped: no CUDA device (stand-in)" "$TMP/nogpu.report"
check "no GPU: no benchmark ran" test ! -s "$TMP/calls"

check_fails "--budget must be whole seconds" 2 "takes whole seconds" bash "$run" --budget 5m
check_fails "an unknown option is refused" 2 "unknown option '--frob'" bash "$run" --frob
finish
