/* rl-gen's token draws on the device (sample_rows): a block per row of
 * logits draws the token and its log-prob, so that a decode step sends the
 * host n ids and n doubles instead of n rows of logits (8 MB a step at batch
 * 64 over a 32k vocabulary), and the host no longer spends passes of exp (and
 * with top-k or top-p a sort) over every row.
 *
 * The arithmetic is lib/sample.c's, element for element (double, the same
 * expressions); only the sums run in another, fixed, order: per thread over
 * a contiguous run of the row, then a scan across the block. So the token is
 * the CPU's unless u, or the top-p mass, falls within rounding of a boundary
 * between two, and a row's result never depends on the other rows.
 *
 * Top-k and top-p keep a prefix of the tokens sorted by probability
 * (descending, ties to the lower id), as sample.c's sort does; the prefix
 * ends at a "cut", its last token. Both look only at candidates, the tokens
 * above a threshold that holds the needed count and mass (as in sample.c,
 * 1e-3 of the top probability, lowered until it does). They are few unless
 * the distribution is flat: up to a block's worth, each thread ranks one
 * and one thread walks them in order, as sample.c does, the same sums in
 * the same order. More are not sorted: the cut is then found by searching
 * the probabilities' bits for the largest p that still leaves enough tokens
 * (top-k) or mass (top-p) at or above it, then counting the tokens of
 * exactly that p in id order. */
#include "cuda_common.cuh"

extern "C" {
#include "sample.h"
}

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

/* This thread's contiguous run [lo, hi) of n items. */
__device__ static inline void run_of(int n, int *lo, int *hi)
{
    int per = (n + blockDim.x - 1) / blockDim.x;
    *lo = (int)threadIdx.x * per < n ? (int)threadIdx.x * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}

/* The first maximal logit: each thread's run in order, then the runs by
 * value, ties to the lower id. */
__device__ static int block_argmax(const float *x, int v)
{
    __shared__ float best_x[SAMPLE_THREADS];
    __shared__ int best_i[SAMPLE_THREADS];
    int lo, hi;
    run_of(v, &lo, &hi);
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

/* Inclusive scan of one value a thread, in a fixed order (Hillis-Steele,
 * every running total kept, so a thread's start is exactly its neighbour's
 * end): *start = the sum over the threads before this one, *total = over
 * all; returns the sum up to this one. */
__device__ static double block_scan(double part, double *start, double *total)
{
    __shared__ double incl[SAMPLE_THREADS];
    int t = threadIdx.x;
    __syncthreads();                 /* a previous call may still read incl */
    incl[t] = part;
    __syncthreads();
    for (int h = 1; h < (int)blockDim.x; h <<= 1) {
        double add = t >= h ? incl[t - h] : 0;
        __syncthreads();
        incl[t] += add;
        __syncthreads();
    }
    *start = t > 0 ? incl[t - 1] : 0;
    *total = incl[blockDim.x - 1];
    return incl[t];
}

__device__ static inline int block_min_int(int v) { return -block_max(-v); }

/* The first item i < n with value(i) > 0 whose running sum in item order,
 * started at base, reaches the goal, goal_of_total * (the values' total) +
 * goal: goal < sum when strict (sample.c's draw), goal <= sum otherwise (its
 * top-p prefix, or a count). Where rounding leaves none, the last item with
 * value > 0; -1 when there is none. Each thread sums its run, the block
 * scans the sums, and the thread whose span holds the goal walks its run.
 * The scan's totals are tree sums, so a span of zeros can round to a sliver
 * that seems to hold the goal: only a run with an item may own it, and
 * were rounding to give two the goal, the lower item wins. */
template <class F>
__device__ static int block_first_reaching(F value, int n, double base, double goal_of_total, double goal,
                                           bool strict)
{
    int lo, hi, last = -1;
    run_of(n, &lo, &hi);
    double part = 0;
    for (int i = lo; i < hi; i++) {
        double p = value(i);
        part += p;
        if (p > 0)
            last = i;
    }
    double start, total, end = block_scan(part, &start, &total);
    goal += goal_of_total * total;
    auto reaches = [&](double sum) { return strict ? goal < sum : goal <= sum; };
    int mine = 0x7fffffff;
    if (last >= 0 && !reaches(base + start) && reaches(base + end)) {
        double acc = base + start;
        mine = last;
        for (int i = lo; i < hi; i++) {
            double p = value(i);
            if (p <= 0)
                continue;
            acc += p;
            if (reaches(acc)) {
                mine = i;
                break;
            }
        }
    }
    int first = block_min_int(mine);
    return first != 0x7fffffff ? first : block_max(last);
}

/* ---------------- top-k and top-p ---------------- */

/* The last kept token in the order by (p descending, id ascending); every
 * token at or before it is kept. key: p's bits, whose order as integers is
 * p's for p >= 0. key -1 keeps everything. */
struct cut {
    long long key;
    int id;
};
__device__ static inline long long key_of(double p) { return __double_as_longlong(p); }
__device__ static inline bool within(long long key, int id, cut c) { return key > c.key || (key == c.key && id <= c.id); }

/* Over the candidates (cp[j], ci[j]) that c keeps, with key >= k (above k
 * when strict): their count, or with weigh their probability mass. */
__device__ static double mass_from(const double *cp, const int *ci, int nc, cut c, long long k, bool strict,
                                   bool weigh)
{
    double s = 0;
    for (int j = threadIdx.x; j < nc; j += blockDim.x) {
        long long kj = key_of(cp[j]);
        if ((strict ? kj > k : kj >= k) && within(kj, ci[j], c))
            s += weigh ? cp[j] : 1.0;
    }
    return block_sum_d(s);
}

/* The last token of the shortest prefix, of those c keeps, whose count
 * (or mass) reaches goal: the largest key whose tokens at or above it
 * reach it, bit by bit, then the tokens of exactly that key in id order.
 * The caller makes sure that all of c reaches it. */
__device__ static cut shortest_prefix(const double *cp, const int *ci, int nc, cut c, double goal, bool weigh)
{
    long long k = 0;
    for (int b = 62; b >= 0; b--)
        if (mass_from(cp, ci, nc, c, k | (1LL << b), false, weigh) >= goal)
            k |= 1LL << b;
    double before = mass_from(cp, ci, nc, c, k, true, weigh);
    int j = block_first_reaching(
        [&](int j) {
            long long kj = key_of(cp[j]);
            return kj == k && within(kj, ci[j], c) ? (weigh ? cp[j] : 1.0) : 0.0;
        },
        nc, before, 0, goal, false);
    return cut{k, ci[j < 0 ? 0 : j]};
}

/* The candidates in id order: every token with p >= th (all when th < 0).
 * Returns their count. */
__device__ static int gather(const double *p, int v, double th, double *cp, int *ci)
{
    int lo, hi;
    run_of(v, &lo, &hi);
    double mine = 0, start, total;
    for (int i = lo; i < hi; i++)
        mine += p[i] >= th;
    block_scan(mine, &start, &total);
    for (int i = lo, o = (int)start; i < hi; i++)
        if (p[i] >= th) {
            cp[o] = p[i];
            ci[o++] = i;
        }
    __syncthreads();
    return (int)total;
}

/* sample.c's threshold: 1e-3 of the top probability, lowered 1e-3 at a time
 * until the tokens above it hold top-k's count and top-p's mass (with a
 * margin for the other order of the sum: more candidates change nothing). */
__device__ static double threshold(const double *p, int v, const sampler &c, double pmax)
{
    double need_mass = c.top_p < 1 ? c.top_p * (1 + 1e-9) : 0, need_k = c.top_k > 0 ? c.top_k : 0;
    for (double th = pmax * 1e-3;; th *= 1e-3) {
        double n = 0, mass = 0;
        for (int i = threadIdx.x; i < v; i += blockDim.x)
            if (p[i] >= th) {
                n += 1;
                mass += p[i];
            }
        n = block_sum_d(n);
        mass = block_sum_d(mass);
        if ((mass >= need_mass && n >= need_k) || n == v || !(th >= 1e-300))   /* NaN logits end it too */
            return th >= 1e-300 ? th : -1;
    }
}

/* sample.c's top-k and top-p over at most a block's worth of candidates
 * (in id order): each thread ranks one, and one thread walks them in
 * order. */
__device__ static cut sorted_cut(const double *cp, const int *ci, int nc, const sampler &c)
{
    __shared__ double sp[SAMPLE_THREADS];
    __shared__ int sid[SAMPLE_THREADS];
    __shared__ cut last;
    int t = threadIdx.x;
    if (t < nc) {
        double p = cp[t];
        int rank = 0;
        for (int j = 0; j < nc; j++)              /* ties: the lower id, which comes first */
            rank += cp[j] > p || (cp[j] == p && j < t);
        sp[rank] = p;
        sid[rank] = ci[t];
    }
    __syncthreads();
    if (t == 0) {
        int keep = c.top_k > 0 && c.top_k < nc ? c.top_k : nc;
        if (c.top_p < 1) {
            double total = c.top_k > 0 ? 0 : 1, mass = 0;
            for (int i = 0; c.top_k > 0 && i < keep; i++)
                total += sp[i];
            int k = 0;
            while (k < keep && mass < c.top_p * total)
                mass += sp[k++];
            keep = k > 0 ? k : 1;
        }
        last = cut{key_of(sp[keep - 1]), sid[keep - 1]};
    }
    __syncthreads();
    return last;
}

/* The cut that top-k, then top-p within what top-k keeps, leave. */
__device__ static cut warp_cut(const double *p, int v, const sampler &c, double pmax, double *cp, int *ci)
{
    int nc = gather(p, v, threshold(p, v, c, pmax), cp, ci);
    if (nc == 0)                     /* NaN logits: nothing to cut */
        return cut{-1, 0};
    if (nc <= (int)blockDim.x)
        return sorted_cut(cp, ci, nc, c);
    cut keep = {-1, 0};
    if (c.top_k > 0 && c.top_k < nc)
        keep = shortest_prefix(cp, ci, nc, keep, c.top_k, false);
    if (c.top_p < 1) {
        /* sample.c: the mass of top-k's tokens, else the vocabulary's, 1 */
        double kept = mass_from(cp, ci, nc, keep, 0, false, true);
        double target = c.top_p * (c.top_k > 0 ? kept : 1.0);
        if (kept >= target)
            keep = shortest_prefix(cp, ci, nc, keep, target, true);
    }
    return keep;
}

/* ---------------- the draws ---------------- */

/* Row blockIdx.x's token t (-1: none had p > 0, as with NaN logits; take 0)
 * and its temperature-1 log-prob. */
__device__ static void put_draw(int *tok, double *logp1, const float *x, int t, double lse1)
{
    t = t < 0 ? 0 : t;
    if (threadIdx.x == 0) {
        tok[blockIdx.x] = t;
        logp1[blockIdx.x] = x[t] - lse1;
    }
}

/* 1024 threads, one block per SM at least: ptxas keeps within the 64
 * registers that leaves (61 on sm_90), where the bound alone made it aim at
 * two blocks, 32 registers and spills */
__global__ static void __launch_bounds__(SAMPLE_THREADS, 1)
    k_sample_rows(int *tok, double *logp1, const float *logits, const double *u, int v, float temperature)
{
    const float *x = logits + (size_t)blockIdx.x * v;
    double lse1 = block_logsumexp(x, v, 1.0);
    int t;
    if (temperature <= 0) {
        t = block_argmax(x, v);
    } else {
        double inv_t = 1.0 / temperature;
        double lse = inv_t == 1.0 ? lse1 : block_logsumexp(x, v, inv_t);
        t = block_first_reaching([&](int i) { return tempered(x[i], inv_t, lse); }, v, 0, u[blockIdx.x], 0, true);
    }
    put_draw(tok, logp1, x, t, lse1);
}

/* A row's workspace: v probabilities, v candidates' and v candidate ids,
 * rounded up to 16 bytes so that every row's doubles are aligned (with an
 * odd v, 20 v bytes are not a multiple of 8: a GPU faults on a misaligned
 * double, which the emulation, on x86, would not show). */
static inline size_t sample_ws_row(int v) { return ((size_t)v * 20 + 15) & ~(size_t)15; }

/* With top-k, top-p or min-p (temperature > 0): sample.c's warp and draw. */
__global__ static void __launch_bounds__(SAMPLE_THREADS, 1)
    k_sample_warped(int *tok, double *logp1, const float *logits, const double *u, int v, sampler c, char *ws,
                    size_t ws_row)
{
    const float *x = logits + (size_t)blockIdx.x * v;
    double *p = (double *)(ws + blockIdx.x * ws_row), *cp = p + v;
    int *ci = (int *)(cp + v);
    double lse1 = block_logsumexp(x, v, 1.0), inv_t = 1.0 / c.temperature;
    double lse = inv_t == 1.0 ? lse1 : block_logsumexp(x, v, inv_t), pmax = 0;
    for (int i = threadIdx.x; i < v; i += blockDim.x) {
        p[i] = tempered(x[i], inv_t, lse);
        pmax = fmax(pmax, p[i]);
    }
    pmax = block_max(pmax);          /* a barrier: p is whole from here */
    cut keep = c.top_k > 0 || c.top_p < 1 ? warp_cut(p, v, c, pmax, cp, ci) : cut{-1, 0};
    double floor = c.min_p > 0 ? c.min_p * pmax : -1;   /* min-p: relative to the top token, always kept */
    int t = block_first_reaching(
        [&](int i) { return within(key_of(p[i]), i, keep) && !(p[i] < floor) ? p[i] : 0.0; }, v, 0,
        u[blockIdx.x], 0, true);
    put_draw(tok, logp1, x, t, lse1);
}

static void cu_sample_rows(int *tok, double *logp1, const float *logits, const double *u, int n, int v,
                           const sampler *c)
{
    if (n <= 0 || v <= 0)
        return;
    if (c->temperature <= 0 || sampler_plain(c)) {
        LAUNCH(k_sample_rows, n, SAMPLE_THREADS)(tok, logp1, logits, u, v, c->temperature);
        LAUNCHED("sample_rows");
        return;
    }
    char *ws = (char *)workspace(WS_SAMPLE, n * sample_ws_row(v));
    LAUNCH(k_sample_warped, n, SAMPLE_THREADS)(tok, logp1, logits, u, v, *c, ws, sample_ws_row(v));
    LAUNCHED("sample_warped");
}

void cuda_sample_ops(struct backend *b) { b->sample_rows = STAMPED(cu_sample_rows); }
