# Shared by tests/gpu/pack and tests/gpu/run (sourced from the repository root).
# What the GPU check runs, beside the tools:
gpu_targets="build/opt/t/test_cuda_ops build/opt/t/test_cuda_model build/opt/t/test_model_parity
build/opt/t/test_train_parity build/opt/benchbin/gpu_bench"
# A fingerprint of the sources the binaries are built from.
src_hash() {
    find lib kernels tools tests/unit tests/emu bench -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) |
        LC_ALL=C sort | xargs cat | md5sum | cut -c1-12
}
