/* rl-gen's plain sampling on the device (sample_rows): a block per row of
 * logits draws the token and its log-prob, so that a decode step sends the
 * host n ids and n doubles instead of n rows of logits (8 MB a step at batch
 * 64 over a 32k vocabulary), and the host no longer spends three passes of
 * exp over every row (a quarter of a millisecond per token on one core).
 *
 * The arithmetic is lib/sample.c's, element for element (double, the same
 * expressions); only the sums run in another, fixed, order: per thread over
 * a contiguous run of the row, then a scan across the block. So the token is
 * the CPU's unless u falls within rounding of a boundary between two, and a
 * row's result never depends on the other rows. */
#include "cuda_common.cuh"

#define SAMPLE_THREADS 1024

/* log sum_i exp(x_i * scale), as sample.c's logsumexp: the max first */
__device__ static double block_logsumexp(const float *x, int v, double scale)
{
    double mx = -INFINITY, s = 0;
    for (int i = threadIdx.x; i < v; i += blockDim.x)
        mx = fmax(mx, x[i] * scale);
    mx = block_max(mx);
    for (int i = threadIdx.x; i < v; i += blockDim.x)
        s += exp(x[i] * scale - mx);
    return mx + log(block_sum_d(s));
}

__device__ static inline double tempered(float x, double inv_t, double lse) { return exp(x * inv_t - lse); }

/* The first maximal logit: each thread's run in order, then the runs by
 * value, ties to the lower id. */
__device__ static int block_argmax(const float *x, int lo, int hi)
{
    __shared__ float best_x[SAMPLE_THREADS];
    __shared__ int best_i[SAMPLE_THREADS];
    int b = lo;
    for (int i = lo + 1; i < hi; i++)
        if (x[i] > x[b])
            b = i;
    best_x[threadIdx.x] = lo < hi ? x[b] : -INFINITY;
    best_i[threadIdx.x] = lo < hi ? b : 0x7fffffff;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) {
            float a = best_x[threadIdx.x], c = best_x[threadIdx.x + h];
            int ia = best_i[threadIdx.x], ic = best_i[threadIdx.x + h];
            if (c > a || (c == a && ic < ia)) {
                best_x[threadIdx.x] = c;
                best_i[threadIdx.x] = ic;
            }
        }
        __syncthreads();
    }
    return best_i[0] == 0x7fffffff ? 0 : best_i[0];
}

/* sample.c's draw over the tempered probabilities: each thread sums its
 * run, the block scans the sums (every thread's running total kept, so a
 * thread's start is exactly its neighbour's end), and the one thread whose
 * span holds u * total walks its run to the token. */
__device__ static int block_draw(const float *x, int lo, int hi, double inv_t, double lse, double u)
{
    __shared__ double incl[SAMPLE_THREADS];
    __shared__ int chosen;
    double part = 0;
    int last = -1;
    for (int i = lo; i < hi; i++) {
        double p = tempered(x[i], inv_t, lse);
        part += p;
        if (p > 0)
            last = i;
    }
    int t = threadIdx.x;
    incl[t] = part;
    if (t == 0)
        chosen = -1;
    __syncthreads();
    for (int h = 1; h < (int)blockDim.x; h <<= 1) {   /* Hillis-Steele: a fixed order */
        double add = t >= h ? incl[t - h] : 0;
        __syncthreads();
        incl[t] += add;
        __syncthreads();
    }
    double start = t > 0 ? incl[t - 1] : 0, target = u * incl[blockDim.x - 1];
    if (start <= target && target < incl[t]) {
        double acc = start;
        int tok = last;
        for (int i = lo; i < hi; i++) {
            double p = tempered(x[i], inv_t, lse);
            if (p <= 0)
                continue;
            acc += p;
            if (target < acc) {
                tok = i;
                break;
            }
        }
        chosen = tok;
    }
    __syncthreads();
    if (chosen >= 0)
        return chosen;
    /* u * total rounded up to the total: the last token with p > 0, as on the CPU */
    double l = block_max((double)last);
    return l >= 0 ? (int)l : 0;
}

/* 1024 threads, one block per SM at least: ptxas keeps within the 64
 * registers that leaves (61 on sm_90), where the bound alone made it aim at
 * two blocks, 32 registers and spills */
__global__ static void __launch_bounds__(SAMPLE_THREADS, 1)
    k_sample_rows(int *tok, double *logp1, const float *logits, const double *u, int v, float temperature)
{
    const float *x = logits + (size_t)blockIdx.x * v;
    int per = (v + blockDim.x - 1) / blockDim.x;
    int lo = (int)threadIdx.x * per < v ? (int)threadIdx.x * per : v, hi = lo + per < v ? lo + per : v;
    double lse1 = block_logsumexp(x, v, 1.0);
    int t;
    if (temperature <= 0) {
        t = block_argmax(x, lo, hi);
    } else {
        double inv_t = 1.0 / temperature;
        double lse = inv_t == 1.0 ? lse1 : block_logsumexp(x, v, inv_t);
        t = block_draw(x, lo, hi, inv_t, lse, u[blockIdx.x]);
    }
    if (threadIdx.x == 0) {
        tok[blockIdx.x] = t;
        logp1[blockIdx.x] = x[t] - lse1;
    }
}

static void cu_sample_rows(int *tok, double *logp1, const float *logits, const double *u, int n, int v,
                           float temperature)
{
    if (n <= 0 || v <= 0)
        return;
    LAUNCH(k_sample_rows, n, SAMPLE_THREADS)(tok, logp1, logits, u, v, temperature);
    LAUNCHED("sample_rows");
}

void cuda_sample_ops(struct backend *b) { b->sample_rows = STAMPED(cu_sample_rows); }
