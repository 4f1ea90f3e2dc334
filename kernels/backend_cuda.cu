/* The CUDA backend: the table of lib/backend.h on one GPU, built as
 * rlflow-cuda.so. This file starts it (the GEMM and attention modes, cuBLAS,
 * the device line), holds the memory ops and fills the table from the
 * other files: cuda_gemm.cu (cuBLAS, matmul_rows), cuda_elementwise.cu
 * (norms, RoPE, SwiGLU, the vocabulary, the optimizer) and cuda_attention.cu
 * (which routes to cuda_attn_tc.cu, cuda_attn_cublas.cu or
 * cuda_attn_kernels.cu), and cuda_graph.cu runs decode steps as CUDA
 * graphs. Buffers are device memory (cudaMalloc), the int arrays the ops
 * read included. Everything runs on one blocking stream (cu_stream), so
 * ops are ordered and a download (cudaMemcpy) waits for the work before
 * it.
 *
 * Numerics: fp32 parameters, gradients and optimizer moments; activations
 * in bf16 in bf16 mode (cuda_acts.cu), else fp32. Products run in the mode $RL_CUDA_MATH names:
 * "bf16" (the default: operands rounded to bf16, fp32 accumulation), "tf32",
 * or "fp32" (exact, for parity checks). Reductions that normalise (RMS,
 * softmax sums, norms) accumulate in double, as on the CPU; every reduction
 * has a fixed order, so results repeat bit for bit. matmul_rows is a kernel,
 * not cuBLAS: each element is one dot product in an order fixed by k alone,
 * so batched decoding is batch-invariant here too. docs/cuda.md has the
 * design and the measurements. */

#include "cuda_common.cuh"

/* Built into rlflow-cuda.so, which the library dlopens on demand (so a tool
 * on the CPU never loads cuBLAS): it depends on nothing of the program's and
 * reports failure in its own buffer. */
static char why[256];
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---------------- memory ---------------- */

static void *cu_alloc(size_t bytes)
{
    void *p = NULL;
    capture_pause();
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError();          /* out of memory is the caller's error to report */
        return NULL;
    }
    CU(cudaMemset(p, 0, bytes ? bytes : 256));
    return p;
}
/* The writing memory ops tell cuda_params.cu, whose bf16 copies of
 * parameters go stale when the parameters change. */
static void cu_free(void *p)
{
    if (p) {
        capture_pause();
        params_forget(p);
        acts_forget(p);
        CU(cudaFree(p));
    }
}
static void cu_upload(void *dst, const void *src, size_t n)
{
    params_written(dst, n);
    capture_pause();
    if (n) CU(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice));
}
static void cu_download(void *dst, const void *src, size_t n)
{
    capture_pause();
    if (n) CU(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost));
}

/* ---------------- the table ---------------- */

static struct backend make_table(void)
{
    struct backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.host = false;
    /* 256 MB of logits per LM-head chunk: the head's GEMMs ran at half
     * speed on the 524-row chunks of 64 MB (a 32k vocabulary) on an H100 */
    b.head_chunk_mb = 256;
    b.alloc = STAMPED(cu_alloc);
    b.free = STAMPED(cu_free);
    b.upload = STAMPED(cu_upload);
    b.download = cu_download;   /* writes nothing of the caller's: not STAMPED */
    b.zero = STAMPED(act_aware_zero);     /* cuda_acts.cu: an activation's elements are 2 bytes */
    b.copy = STAMPED(act_aware_copy);
    cuda_params_ops(&b);
    cuda_acts_ops(&b);
    cuda_gemm_ops(&b);
    cuda_elementwise_ops(&b);
    cuda_attention_ops(&b);
    cuda_sample_ops(&b);
    cuda_graph_ops(&b);
    return b;
}
static struct backend table;

/* $RL_CUDA_MATH: bf16 (default), tf32 or fp32. */
static int pick_math(void)
{
    const char *e = getenv("RL_CUDA_MATH");
    if (!e || !*e || !strcmp(e, "bf16")) {
        gemm_compute = CUBLAS_COMPUTE_32F_FAST_16BF;
        gemm_bf16 = true;
        return 0;
    }
    if (!strcmp(e, "tf32")) {
        gemm_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        return 0;
    }
    if (!strcmp(e, "fp32")) {
        gemm_exact = true;
        return 0;
    }
    return fail("RL_CUDA_MATH=\"%s\": expected bf16, tf32 or fp32", e);
}

/* $RL_CUDA_KV: the KV caches' values; auto (the default) is bf16 in bf16
 * mode, where the attention's products take bf16 K and V anyway, else fp32. */
static bool kv_bf16;
static int pick_kv(void)
{
    static const char *const modes[] = {"auto", "bf16", "fp32"};
    const char *e = getenv("RL_CUDA_KV");
    int i = mode_index(e, modes);
    if (i < 0)
        return fail("RL_CUDA_KV=\"%s\": expected auto, bf16 or fp32", e);
    kv_bf16 = i == 0 ? gemm_bf16 : i == 1;
    return 0;
}

static char detail[512];

static int cuda_init(void)
{
    int n = 0, dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
        return fail("no GPU found");
    if (e == cudaErrorInsufficientDriver)
        return fail("no usable GPU (no NVIDIA driver, or one older than CUDA runtime %d)", CUDART_VERSION);
    if (e != cudaSuccess)
        return fail("no usable GPU (%s)", cudaGetErrorString(e));
    if (pick_math() < 0 || pick_kv() < 0)
        return -1;
    const char *act = getenv("RL_CUDA_ACT");
    if (cuda_act_mode(act) < 0)
        return fail("RL_CUDA_ACT=\"%s\": expected auto, bf16 (in bf16 mode) or fp32", act);
    const char *attn = getenv("RL_CUDA_ATTN");
    if (cuda_attention_mode(attn) < 0)
        return fail("RL_CUDA_ATTN=\"%s\": expected auto, tc, tc-fwd, tc-pipe, tc-wide, cublas, tiled or simple", attn);
    const char *dec = getenv("RL_CUDA_DECODE");
    if (cuda_decode_mode(dec) < 0)
        return fail("RL_CUDA_DECODE=\"%s\": expected auto, split or query", dec);
    const char *rows = getenv("RL_CUDA_ROWS");
    if (cuda_rows_mode(rows) < 0)
        return fail("RL_CUDA_ROWS=\"%s\": expected auto, tc, stream or fp32", rows);
    const char *gemm = getenv("RL_CUDA_GEMM");
    if (cuda_gemm_mode(gemm) < 0)
        return fail("RL_CUDA_GEMM=\"%s\": expected auto, ex, lt or pinned", gemm);
    const char *rows_blocks = getenv("RL_CUDA_ROWS_BLOCKS");
    if (cuda_rows_blocks(rows_blocks) < 0)
        return fail("RL_CUDA_ROWS_BLOCKS=\"%s\": expected a count of blocks from 1 to 65535", rows_blocks);
    const char *graphs = getenv("RL_CUDA_GRAPHS");
    if (cuda_graphs_mode(graphs) < 0)
        return fail("RL_CUDA_GRAPHS=\"%s\": expected auto, on or off", graphs);
    cudaDeviceProp prop;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        return fail("cannot query the GPU (%s)", cudaGetErrorString(cudaGetLastError()));
    sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    cublasStatus_t s = cublasCreate(&blas);
    if (s != CUBLAS_STATUS_SUCCESS)
        return fail("cuBLAS did not start (%s)", cublasGetStatusString(s));
    if (const char *err = cuda_stream_start())
        return fail("%s (%s)", err, cudaGetErrorString(cudaGetLastError()));
    if (cudaMalloc(&red_buf, (RED_BLOCKS + 1) * sizeof(double)) != cudaSuccess)
        return fail("out of GPU memory at start");
    ktimes_start();
    const char *math = gemm_exact ? "fp32" : gemm_compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? "tf32" : "bf16";
    snprintf(detail, sizeof detail, "%s, sm_%d%d, %.0f GiB, %s GEMMs (%s), %s attention%s%s, %s KV cache, %s activations%s",
             prop.name, prop.major, prop.minor, prop.totalGlobalMem / 1073741824.0, math, cuda_gemm_desc(),
             cuda_attention_desc(),
             cuda_split_decode() ? ", split decode attention" : "",
             cuda_rows_stream() ? ", tensor-core decoding (streamed)" : cuda_rows_tc() ? ", tensor-core decoding" : "",
             kv_bf16 ? "bf16" : "fp32", acts_bf16 ? "bf16" : "fp32",
             cuda_graphs() ? (ktimes_on ? ", no CUDA graphs (kernel times)" : ", decode steps as CUDA graphs") : "");
    table = make_table();
    table.kv_bf16 = kv_bf16;
    table.matmul_invariant = gemm_route == GEMM_PINNED;
    table.detail = detail;
    return 0;
}

/* The entry point lib/backend.c looks up: the backend, or NULL with the
 * reason in *reason. Initialises once. table_size is the caller's
 * sizeof(struct backend): a library built from another version of
 * backend.h is refused rather than called through a shifted table. */
extern "C" __attribute__((visibility("default"))) const struct backend *RL_CUDA_ENTRY(const char **reason,
                                                                                     size_t table_size)
{
    static int state;                /* 0 untried, 1 ready, -1 failed */
    if (state == 0 && table_size != sizeof(struct backend))
        state = fail("rlflow-cuda.so was built from another version of rlflow (rebuild it)");
    if (state == 0)
        state = cuda_init() == 0 ? 1 : -1;
    *reason = why;
    return state > 0 ? &table : NULL;
}

