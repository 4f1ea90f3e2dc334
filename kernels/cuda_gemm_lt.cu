/* Single products through cuBLASLt ($RL_CUDA_GEMM=lt or pinned; gemm_ex
 * calls lt_gemm in place of cublasGemmEx).
 *
 * lt: cuBLASLt's heuristic picks an algorithm for each shape, as
 * cublasGemmEx does inside.
 *
 * pinned: one algorithm for every row count. A product's algorithm is
 * the heuristic's first for the same product at PIN_ROWS rows that keeps
 * k whole (no split, nothing to reduce) and runs at one row too, so a row
 * of c is computed by the same kernel and in the same order whatever the
 * number of rows: a row's bits do not depend on the rows beside it, and a
 * batch-invariant model may issue one product for a micro-batch of
 * sequences instead of one per sequence (the backend's matmul_invariant).
 * Products of a transposed a (weight gradients) take the heuristic's
 * algorithm: their rows are columns of a, whose pitch is the row count.
 * cublasGemmEx, like any heuristic, picks by the row count (and may split
 * k, reduced in any order), so with it a batch-invariant model runs a
 * product per sequence. This rests on
 * cuBLAS's reproducibility across runs of one algorithm on one
 * architecture; tests/gpu checks it on the card (test_cuda_model's batch
 * invariance with RL_CUDA_GEMM=pinned).
 *
 * A plan (the descriptors of one product and its algorithm) is built once
 * per shape and kept in a small table, and a pinned algorithm once per
 * shape without the row count, in another; the heuristic is
 * deterministic, so an entry dropped from either is built again the same. */
#include "cuda_common.cuh"

#define PIN_ROWS 4096                   /* a trainer's micro-batch of 16 x 256 tokens */
#define LT_WORKSPACE ((size_t)32 << 20) /* the size NVIDIA recommends for Hopper */
#define LT_PLANS 128
#define LT_PINS 64
#define LT_RESULTS 32

/* A product as gemm_ex is given it (row-major c[m, n] = op(a) op(b)). */
struct lt_shape {
    bool ta, tb, accumulate;            /* accumulate: beta != 0 */
    int m, n, k, lda, ldb, ldc, align;  /* align: bytes every pointer and row pitch is a multiple of */
    cudaDataType ab, c;
    cublasComputeType_t compute;
};
/* Its descriptors: cuBLAS's A (our b), B (our a), C = D */
struct lt_desc {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
};
struct lt_plan {
    lt_shape shape;
    bool built;
    lt_desc d;
    cublasLtMatmulAlgo_t algo;
};
struct lt_pin {                         /* a pinned algorithm; shape.m is 0 */
    lt_shape shape;
    bool set;
    cublasLtMatmulAlgo_t algo;
};

static cublasLtHandle_t lt;
static lt_plan plans[LT_PLANS];
static lt_pin pins[LT_PINS];
static unsigned next_plan, next_pin;

static const char *const gemm_modes[] = {"auto", "ex", "lt", "pinned"};
/* auto: pinned, since an H200 timed it (nineteenth session) and passed its
 * batch-invariance tests: the trainers' batch-invariant step of 16 x 256
 * tokens, one product for the batch instead of one a sequence, took
 * 0.0585 s against cublasGemmEx's 0.0697 (as fast as --batch-gemm's
 * 0.0580); TinyLlama's 4 x 1024 step 0.0654 s against 0.0640, within two
 * timings' spread */
#define AUTO_GEMM GEMM_PINNED
int gemm_route = AUTO_GEMM;

int cuda_gemm_mode(const char *name)
{
    int i = mode_index(name, gemm_modes);
    if (i < 0)
        return -1;
    gemm_route = i == 0 ? AUTO_GEMM : i;
    return 0;
}
const char *cuda_gemm_desc(void)
{
    return gemm_route == GEMM_PINNED ? "cuBLASLt, pinned" : gemm_route == GEMM_LT ? "cuBLASLt" : "cublasGemmEx";
}

static bool same_shape(const lt_shape *x, const lt_shape *y)
{
    return x->ta == y->ta && x->tb == y->tb && x->accumulate == y->accumulate && x->m == y->m && x->n == y->n &&
           x->k == y->k && x->lda == y->lda && x->ldb == y->ldb && x->ldc == y->ldc && x->align == y->align &&
           x->ab == y->ab && x->c == y->c && x->compute == y->compute;
}

static void lt_check(cublasStatus_t s, const char *what, const lt_shape *x)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return;
    char msg[224];
    snprintf(msg, sizeof msg, "%s for a %d x %d x %d product (%s): %s", what, x->m, x->n, x->k,
             gemm_route == GEMM_PINNED ? "RL_CUDA_GEMM=pinned" : "RL_CUDA_GEMM=lt", cublasGetStatusString(s));
    fatal("cuBLASLt", msg);
}

/* x's descriptors. cuBLAS is column-major, so row-major C = op(A) op(B)
 * is C^T = op(B)^T op(A)^T, B first (as gemm_ex gives cublasGemmEx). */
static void describe(lt_desc *d, const lt_shape *x)
{
    cublasOperation_t opa = x->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = x->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    lt_check(cublasLtMatmulDescCreate(&d->op, x->compute, CUDA_R_32F), "a product's description", x);
    cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
    cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
    lt_check(cublasLtMatrixLayoutCreate(&d->la, x->ab, x->tb ? x->k : x->n, x->tb ? x->n : x->k, x->ldb),
             "b's layout", x);
    lt_check(cublasLtMatrixLayoutCreate(&d->lb, x->ab, x->ta ? x->m : x->k, x->ta ? x->k : x->m, x->lda),
             "a's layout", x);
    lt_check(cublasLtMatrixLayoutCreate(&d->lc, x->c, x->n, x->m, x->ldc), "c's layout", x);
}
static void undescribe(lt_desc *d)
{
    cublasLtMatrixLayoutDestroy(d->la), cublasLtMatrixLayoutDestroy(d->lb), cublasLtMatrixLayoutDestroy(d->lc);
    cublasLtMatmulDescDestroy(d->op);
}

/* The heuristic's offers for x (at most LT_RESULTS, best first): their count */
static int offers(const lt_desc *d, const lt_shape *x, cublasLtMatmulHeuristicResult_t *r)
{
    cublasLtMatmulPreference_t pref;
    lt_check(cublasLtMatmulPreferenceCreate(&pref), "a preference", x);
    size_t ws = LT_WORKSPACE;
    uint32_t align = (uint32_t)x->align;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (auto a : aligns)
        cublasLtMatmulPreferenceSetAttribute(pref, a, &align, sizeof align);
    int n = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(lt, d->op, d->la, d->lb, d->lc, d->lc, pref, LT_RESULTS, r, &n);
    cublasLtMatmulPreferenceDestroy(pref);
    lt_check(s, "the heuristic", x);
    return n;
}

/* Whether algorithm a runs the product d describes, in our workspace */
static bool runs(const lt_desc *d, const cublasLtMatmulAlgo_t *a)
{
    cublasLtMatmulHeuristicResult_t r;
    return cublasLtMatmulAlgoCheck(lt, d->op, d->la, d->lb, d->lc, d->lc, a, &r) == CUBLAS_STATUS_SUCCESS &&
           r.workspaceSize <= LT_WORKSPACE;
}

/* A setting of algorithm a, of its own type T (the header's: 4 bytes,
 * but 2 for the inner and cluster shapes); ~0 where it cannot be read */
template <class T> static unsigned algo_config(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoConfigAttributes_t what)
{
    T v = 0;
    size_t got = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(a, what, &v, sizeof v, &got) != CUBLAS_STATUS_SUCCESS)
        return ~0u;
    return (unsigned)v;
}
static bool keeps_k_whole(const cublasLtMatmulAlgo_t *a)
{
    return algo_config<int32_t>(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) == 1 &&
           algo_config<uint32_t>(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) == CUBLASLT_REDUCTION_SCHEME_NONE;
}

/* The pinned algorithm of x's shape: the heuristic's first at PIN_ROWS
 * rows that keeps k whole and runs at one row, PIN_ROWS and 16 times as
 * many; failing that, the first whose split can be set to none and that
 * still runs at all three. */
static cublasLtMatmulAlgo_t choose_pin(const lt_shape *x)
{
    lt_shape big = *x, one = *x, huge = *x;
    big.m = PIN_ROWS, one.m = 1, huge.m = 16 * PIN_ROWS;
    lt_desc db, d1, dh;
    describe(&db, &big), describe(&d1, &one), describe(&dh, &huge);
    static cublasLtMatmulHeuristicResult_t r[LT_RESULTS];
    int n = offers(&db, &big, r), found = -1;
    for (int pass = 0; pass < 2 && found < 0; pass++)
        for (int i = 0; i < n && found < 0; i++) {
            if (r[i].state != CUBLAS_STATUS_SUCCESS || (pass == 0 && !keeps_k_whole(&r[i].algo)))
                continue;
            if (pass == 1) {
                int32_t one_split = 1;
                uint32_t none = CUBLASLT_REDUCTION_SCHEME_NONE;
                cublasLtMatmulAlgoConfigSetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one_split,
                                                     sizeof one_split);
                cublasLtMatmulAlgoConfigSetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &none,
                                                     sizeof none);
            }
            if (keeps_k_whole(&r[i].algo) && runs(&db, &r[i].algo) && runs(&d1, &r[i].algo) &&
                runs(&dh, &r[i].algo))
                found = i;
        }
    undescribe(&db), undescribe(&d1), undescribe(&dh);
    if (found < 0)
        lt_check(CUBLAS_STATUS_NOT_SUPPORTED, "no algorithm that keeps k whole at every row count", x);
    if (getenv("RL_CUDA_LT_LOG"))    /* what a GPU's invariance check ran on (tests/gpu/run) */
        fprintf(stderr, "cuBLASLt pinned: %d x k %d%s%s: offer %d of %d, algo %u tile %u stages %u inner %u cluster %u\n",
                x->n, x->k, x->ta ? " ta" : "", x->tb ? " tb" : "", found + 1, n,
                algo_config<int32_t>(&r[found].algo, CUBLASLT_ALGO_CONFIG_ID),
                algo_config<uint32_t>(&r[found].algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                algo_config<uint32_t>(&r[found].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                algo_config<uint16_t>(&r[found].algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID),
                algo_config<uint16_t>(&r[found].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
    return r[found].algo;
}
static cublasLtMatmulAlgo_t pinned_algo(const lt_shape *x)
{
    lt_shape key = *x;
    key.m = 0;
    for (const lt_pin &p : pins)
        if (p.set && same_shape(&p.shape, &key))
            return p.algo;
    lt_pin *p = &pins[next_pin++ % LT_PINS];
    *p = {key, true, choose_pin(x)};
    return p->algo;
}

/* The heuristic's first algorithm that runs x */
static cublasLtMatmulAlgo_t heuristic_algo(const lt_desc *d, const lt_shape *x)
{
    static cublasLtMatmulHeuristicResult_t r[LT_RESULTS];
    int n = offers(d, x, r);
    for (int i = 0; i < n; i++)
        if (r[i].state == CUBLAS_STATUS_SUCCESS && r[i].workspaceSize <= LT_WORKSPACE)
            return r[i].algo;
    lt_check(CUBLAS_STATUS_NOT_SUPPORTED, "no algorithm", x);
    return r[0].algo;
}

/* The table's plan for x, built when the table has none */
static lt_plan *plan_for(const lt_shape *x, bool pin)
{
    for (lt_plan &p : plans)
        if (p.built && same_shape(&p.shape, x))
            return &p;
    lt_plan *p = &plans[next_plan++ % LT_PLANS];
    if (p->built)
        undescribe(&p->d);
    p->built = false;
    cublasLtMatmulAlgo_t a = pin ? pinned_algo(x) : cublasLtMatmulAlgo_t{};
    describe(&p->d, x);
    p->shape = *x;
    p->built = true;
    if (!pin)
        a = heuristic_algo(&p->d, x);
    else if (!runs(&p->d, &a))
        lt_check(CUBLAS_STATUS_NOT_SUPPORTED, "the pinned algorithm at this row count", x);
    p->algo = a;
    return p;
}

/* The largest power of two up to 16 that divides n. */
static int pow2_of(size_t n)
{
    int a = 16;
    while (a > 1 && n % a)
        a /= 2;
    return a;
}

void lt_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const void *a, int lda, const void *b, int ldb,
             float beta, void *c, int ldc, cudaDataType ab, cudaDataType ctype, cublasComputeType_t compute)
{
    size_t es = ab == CUDA_R_16BF ? 2 : 4, cs = ctype == CUDA_R_16BF ? 2 : 4;
    int align = pow2_of((size_t)a | (size_t)b | (size_t)c | lda * es | ldb * es | ldc * cs);
    lt_shape x = {ta, tb, beta != 0, m, n, k, lda, ldb, ldc, align, ab, ctype, compute};
    if (!lt) {
        capture_pause();             /* a handle's start may allocate */
        lt_check(cublasLtCreate(&lt), "start", &x);
    }
    lt_plan *p = plan_for(&x, gemm_route == GEMM_PINNED && !ta);
    BLAS(cublasLtMatmul(lt, p->d.op, &alpha, b, p->d.la, a, p->d.lb, &beta, c, p->d.lc, c, p->d.lc, &p->algo,
                        workspace(WS_LT, LT_WORKSPACE), LT_WORKSPACE, cu_stream));
}
