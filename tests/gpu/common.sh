# Shared by tests/gpu/pack and tests/gpu/run (sourced from the repository root).
# What the GPU check runs, beside the tools:
gpu_progs="t/test_cuda_ops t/test_cuda_model t/test_model_parity t/test_train_parity benchbin/gpu_bench benchbin/gen_bench"
gpu_targets=$(for f in $gpu_progs; do printf 'build/opt/%s ' "$f"; done)
# A fingerprint of the sources the binaries are built from.
src_hash() {
    find lib kernels tools tests/unit tests/emu bench -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) |
        LC_ALL=C sort | xargs cat | md5sum | cut -c1-12
}
