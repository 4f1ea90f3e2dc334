/* The CUDA backend's row and elementwise kernels: RMSNorm (alone or after
 * the residual add) and its backward (column sums in two fixed-order
 * passes), RoPE, SwiGLU, gathers and scatters, the embedding, the
 * vocabulary's log-softmax, and the optimizer's norm and AdamW. */
#include "cuda_common.cuh"

double *red_buf;

/* ---------------- RMSNorm ---------------- */

/* Kernels over activations take T, how they are stored: float, or
 * unsigned short for bf16 activations (cuda_acts.cu); get and put convert.
 * V4: the row's elements go four at a time (get4, put4: 16 bytes of fp32
 * or 8 of bf16 a load, where single bf16 elements load 2 bytes), when d is
 * a multiple of four and every row, w and the bf16 copy are aligned to it
 * (norm_by4). The sums' order then differs from the elementwise form, so
 * the choice depends only on d and the buffers, never on a row's batch.
 * y16: the bf16 copy of y for the next product (a_copy_for), or NULL */
template <bool V4, class T> __device__ static inline float4 load_e(const T *p, size_t i)
{
    if constexpr (V4)
        return get4(p, i);
    else
        return float4{get(p, i), 0, 0, 0};
}
template <bool V4, class T> __device__ static inline void store_e(T *p, size_t i, float4 v)
{
    if constexpr (V4)
        put4(p, i, v);
    else
        put(p, i, v.x);
}
template <bool V4> __device__ static inline void store_bf16_e(unsigned short *p, size_t i, float4 v)
{
    if constexpr (V4)
        put_bf16_4(p + i, v);
    else
        p[i] = bf16_rne(v.x);
}
__device__ static inline float4 add4(float4 a, float4 b) { return float4{a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w}; }
__device__ static inline float4 mul4(float4 a, float4 b) { return float4{a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w}; }
/* sum += a * b (* c), element by element in order: one rounding each, as
 * the elementwise form has (nvcc fuses each into one fma; a sum of the
 * four products first would round twice where only .x is used) */
template <bool V4> __device__ static inline void dot_acc(double &sum, float4 a, float4 b)
{
    sum += (double)a.x * b.x;
    if constexpr (V4) {
        sum += (double)a.y * b.y;
        sum += (double)a.z * b.z;
        sum += (double)a.w * b.w;
    }
}
template <bool V4> __device__ static inline void dot_acc(double &sum, float4 a, float4 b, float4 c)
{
    sum += (double)a.x * b.x * c.x;
    if constexpr (V4) {
        sum += (double)a.y * b.y * c.y;
        sum += (double)a.z * b.z * c.z;
        sum += (double)a.w * b.w * c.w;
    }
}
/* Four elements of the residual at p + i, whose rows need not be aligned
 * as x's are (r4: they are) */
template <bool V4, class T> __device__ static inline float4 load_res(const T *p, size_t i, bool r4)
{
    if (!V4 || r4)
        return load_e<V4>(p, i);
    return float4{get(p, i), get(p, i + 1), get(p, i + 2), get(p, i + 3)};
}

/* res: add_rmsnorm's residual, added into x first: the sum as stored
 * (rounded where bf16) is the norm's input. The residual's alignment does
 * not choose V4 (r4 says how to read it), so that add_rmsnorm sums in the
 * order rmsnorm would after add. */
template <class T, bool V4>
__global__ static void k_rmsnorm(T *y, unsigned short *y16, float *rstd, T *x, const T *res, bool r4, const float *w,
                                 int d, float eps)
{
    constexpr int E = V4 ? 4 : 1;
    size_t o = (size_t)blockIdx.x * d;
    double ss = 0;
    for (int j = E * threadIdx.x; j < d; j += E * blockDim.x) {
        if (res)
            store_e<V4>(x, o + j, add4(load_e<V4>(x, o + j), load_res<V4>(res, o + j, r4)));
        float4 v = load_e<V4>(x, o + j);
        dot_acc<V4>(ss, v, v);
    }
    ss = block_sum_d(ss);
    float r = (float)(1.0 / sqrt(ss / d + eps));
    if (threadIdx.x == 0)
        rstd[blockIdx.x] = r;
    float4 rr = {r, r, r, r};
    for (int j = E * threadIdx.x; j < d; j += E * blockDim.x) {
        float4 v = mul4(load_e<V4>(w, j), mul4(load_e<V4>(x, o + j), rr));
        store_e<V4>(y, o + j, v);
        if (y16)
            store_bf16_e<V4>(y16, o + j, v);
    }
}
/* Whether a norm's rows go four elements at a time */
template <class T> static bool norm_by4(int d, const void *a, const void *b, const void *c, const float *w,
                                        const unsigned short *copy)
{
    return rows_by4((const T *)a, d) && (!b || rows_by4((const T *)b, d)) && (!c || rows_by4((const T *)c, d)) &&
           rows_by4(w, 0) && (!copy || rows_by4(copy, d));
}
template <class T>
static void launch_rmsnorm(const char *name, float *y, float *rstd, float *x, const float *r, const float *w, int n,
                           int d, float eps)
{
    unsigned short *y16 = a_copy_for(y, n, d);
    bool r4 = r && rows_by4((const T *)r, d);
    if (norm_by4<T>(d, x, y, nullptr, w, y16))
        LAUNCH((k_rmsnorm<T, true>), n, THREADS)((T *)y, y16, rstd, (T *)x, (const T *)r, r4, w, d, eps);
    else
        LAUNCH((k_rmsnorm<T, false>), n, THREADS)((T *)y, y16, rstd, (T *)x, (const T *)r, r4, w, d, eps);
    LAUNCHED(name);
}
static void cu_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps)
{
    if (n <= 0)
        return;
    same_kind("rmsnorm", y, x);
    as_stored(x, [&](auto *t) {
        launch_rmsnorm<stored_t<decltype(t)>>("rmsnorm", y, rstd, (float *)x, nullptr, w, n, d, eps);
    });
}
static void cu_add_rmsnorm(float *y, float *rstd, float *x, const float *r, const float *w, int n, int d, float eps)
{
    if (n <= 0)
        return;
    same_kind("add_rmsnorm", y, x);
    same_kind("add_rmsnorm", r, x);
    as_stored(x, [&](auto *t) { launch_rmsnorm<stored_t<decltype(t)>>("add_rmsnorm", y, rstd, x, r, w, n, d, eps); });
}

/* dx += r w dy - x r^3/d sum(w dy x), per row */
template <class T, bool V4>
__global__ static void k_rmsnorm_bwd_rows(T *dx, unsigned short *dx16, const T *dy, const T *x, const float *w,
                                          const float *rstd, int d)
{
    constexpr int E = V4 ? 4 : 1;
    size_t o = (size_t)blockIdx.x * d;
    double dot = 0;
    for (int j = E * threadIdx.x; j < d; j += E * blockDim.x)
        dot_acc<V4>(dot, load_e<V4>(w, j), load_e<V4>(dy, o + j), load_e<V4>(x, o + j));
    dot = block_sum_d(dot);
    float r = rstd[blockIdx.x];
    float c = (float)(dot * r * r * r / d);
    for (int j = E * threadIdx.x; j < d; j += E * blockDim.x) {
        float4 g = load_e<V4>(dx, o + j), ww = load_e<V4>(w, j), dyv = load_e<V4>(dy, o + j), xv = load_e<V4>(x, o + j);
        float4 v = {g.x + (r * ww.x * dyv.x - xv.x * c), g.y + (r * ww.y * dyv.y - xv.y * c),
                    g.z + (r * ww.z * dyv.z - xv.z * c), g.w + (r * ww.w * dyv.w - xv.w * c)};
        store_e<V4>(dx, o + j, v);
        if (dx16)
            store_bf16_e<V4>(dx16, o + j, v);
    }
}

/* out[j] += sum over rows i of a[i, j] (* b[i, j]) (* s[i]), in double, in
 * two passes with an order fixed by n and d: a block takes 32 columns of one
 * chunk of COLSUM_ROWS rows (8 row lanes, each summing every 8th row in
 * order, then the lanes in order) into part[chunk][j]; then the chunks are
 * summed in order. Chunks keep the GPU busy: one block per 32 columns left
 * 64 blocks for d = 2048. */
#define COLSUM_ROWS 128
template <class T>
__global__ static void k_colsum_part(double *part, const T *a, const T *b, const float *s, int n, int d)
{
    __shared__ double lanes[8][33];
    int j = blockIdx.x * 32 + threadIdx.x, ty = threadIdx.y;
    int i0 = blockIdx.y * COLSUM_ROWS, i1 = i0 + COLSUM_ROWS < n ? i0 + COLSUM_ROWS : n;
    double acc = 0;
    if (j < d)
        for (int i = i0 + ty; i < i1; i += 8) {
            double v = get(a, (size_t)i * d + j);
            if (b)
                v *= get(b, (size_t)i * d + j);
            if (s)
                v *= s[i];
            acc += v;
        }
    lanes[ty][threadIdx.x] = acc;
    __syncthreads();
    if (ty == 0 && j < d) {
        double t = 0;
        for (int r = 0; r < 8; r++)
            t += lanes[r][threadIdx.x];
        part[(size_t)blockIdx.y * d + j] = t;
    }
}
__global__ static void k_colsum_total(float *out, const double *part, int chunks, int d)
{
    GRID_STRIDE(j, (size_t)d) {
        double t = 0;
        for (int c = 0; c < chunks; c++)
            t += part[(size_t)c * d + j];
        out[j] += (float)t;
    }
}
static void colsum(float *out, const float *a, const float *b, const float *s, int n, int d)
{
    if (n <= 0 || d <= 0)
        return;
    int chunks = (n + COLSUM_ROWS - 1) / COLSUM_ROWS;
    double *part = (double *)workspace(WS_COLSUM, (size_t)chunks * d * sizeof(double));
    same_kind("column sum", a, b);
    as_stored(a, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        LAUNCH(k_colsum_part<T>, dim3((d + 31) / 32, chunks), dim3(32, 8))(part, (const T *)a, (const T *)b, s, n, d);
        LAUNCHED("column sum");
    });
    LAUNCH_OVER(d, k_colsum_total, "column sum (total)", out, part, chunks, d);
}

static void cu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w,
                           const float *rstd, int n, int d)
{
    if (n <= 0)
        return;
    same_kind("rmsnorm_bwd", dx, dy);
    same_kind("rmsnorm_bwd", dx, x);
    as_stored(dx, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        unsigned short *dx16 = a_copy_for(dx, n, d);
        if (norm_by4<T>(d, dx, dy, x, w, dx16))
            LAUNCH((k_rmsnorm_bwd_rows<T, true>), n, THREADS)((T *)dx, dx16, (const T *)dy, (const T *)x, w, rstd, d);
        else
            LAUNCH((k_rmsnorm_bwd_rows<T, false>), n, THREADS)((T *)dx, dx16, (const T *)dy, (const T *)x, w, rstd, d);
        LAUNCHED("rmsnorm_bwd");
    });
    colsum(dw, dy, x, rstd, n, d);
}

/* ---------------- RoPE ---------------- */

/* A block per row: its position and table row are read once, and the
 * (head, pair) index of a thread needs 32-bit arithmetic only (the
 * grid-stride form divided a 64-bit index three times per pair). */
template <class T>
__global__ static void k_rope(T *x, int stride, const int *pos, int nh, int hd, const float *cs, const float *sn,
                              float sgn)
{
    int half = hd / 2, i = blockIdx.x;
    rope_row(x + (size_t)i * stride, nh, hd, cs + (size_t)pos[i] * half, sn + (size_t)pos[i] * half, sgn);
}
static void cu_rope(float *x, int stride, const int *pos, int n, int nh, int hd, const float *cs,
                    const float *sn, bool inverse)
{
    if (n <= 0 || nh <= 0 || hd < 2)
        return;
    as_stored(x, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        LAUNCH(k_rope<T>, n, THREADS)((T *)x, stride, pos, nh, hd, cs, sn, inverse ? -1.0f : 1.0f);
        LAUNCHED("rope");
    });
}

/* ---------------- elementwise ---------------- */

/* SwiGLU's backward (d gate, d up) for dh; swiglu1 is in cuda_common.cuh */
__device__ static inline void swiglu1_bwd(float *dg, float *du, float d, float g, float u)
{
    float sg = 1.0f / (1.0f + expf(-g));
    *du = d * g * sg;
    *dg = d * u * sg * (1.0f + g * (1.0f - sg));
}
/* A block per (row, 4 * THREADS columns), four columns a thread (one
 * float4, or 8 bytes of bf16) where f % 4 == 0 and the rows are aligned to
 * that: no index division per element (the grid-stride form divided a
 * 64-bit index by f for each). */
/* (h16, dgu16: the outputs' bf16 copies for the next product, or NULL) */
template <class T> __global__ static void k_swiglu4(T *h, unsigned short *h16, const T *gu, int f)
{
    int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (4 * j >= f)
        return;
    size_t i = blockIdx.x;
    float4 g = get4(gu, i * 2 * f + 4 * j), u = get4(gu, i * 2 * f + f + 4 * j);
    float4 v = float4{swiglu1(g.x, u.x), swiglu1(g.y, u.y), swiglu1(g.z, u.z), swiglu1(g.w, u.w)};
    put4(h, i * f + 4 * j, v);
    if (h16)
        put_bf16_4(h16 + i * f + 4 * j, v);
}
template <class T> __global__ static void k_swiglu(T *h, unsigned short *h16, const T *gu, int n, int f)
{
    GRID_STRIDE(t, (size_t)n * f) {
        size_t i = t / f, j = t % f;
        float v = swiglu1(get(gu, i * 2 * f + j), get(gu, i * 2 * f + f + j));
        put(h, t, v);
        if (h16)
            h16[t] = bf16_rne(v);
    }
}
template <class T> static bool by4(int n, int f, const void *a, const void *b, const void *c)
{
    return n > 0 && rows_by4((const T *)a, f) && rows_by4((const T *)b, f) && rows_by4((const T *)c, f) &&
           (f / 4 + THREADS - 1) / THREADS < 65536;
}
void cu_swiglu(float *h, const float *gu, int n, int f)
{
    same_kind("swiglu", h, gu);
    as_stored(h, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        if (by4<T>(n, f, h, gu, gu)) {
            LAUNCH(k_swiglu4<T>, dim3(n, (f / 4 + THREADS - 1) / THREADS), THREADS)((T *)h, a_copy_for(h, n, f),
                                                                                (const T *)gu, f);
            LAUNCHED("swiglu");
        } else
            LAUNCH_OVER((size_t)n * f, k_swiglu<T>, "swiglu", (T *)h, a_copy_for(h, n, f), (const T *)gu, n, f);
    });
}

template <class T>
__global__ static void k_swiglu_bwd4(T *dgu, unsigned short *dgu16, const T *dh, const T *gu, int f)
{
    int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (4 * j >= f)
        return;
    size_t i = blockIdx.x;
    float4 g = get4(gu, i * 2 * f + 4 * j), u = get4(gu, i * 2 * f + f + 4 * j);
    float4 d = get4(dh, i * f + 4 * j), dg, du;
    swiglu1_bwd(&dg.x, &du.x, d.x, g.x, u.x);
    swiglu1_bwd(&dg.y, &du.y, d.y, g.y, u.y);
    swiglu1_bwd(&dg.z, &du.z, d.z, g.z, u.z);
    swiglu1_bwd(&dg.w, &du.w, d.w, g.w, u.w);
    put4(dgu, i * 2 * f + 4 * j, dg);
    put4(dgu, i * 2 * f + f + 4 * j, du);
    if (dgu16) {
        put_bf16_4(dgu16 + i * 2 * f + 4 * j, dg);
        put_bf16_4(dgu16 + i * 2 * f + f + 4 * j, du);
    }
}
template <class T>
__global__ static void k_swiglu_bwd(T *dgu, unsigned short *dgu16, const T *dh, const T *gu, int n, int f)
{
    GRID_STRIDE(t, (size_t)n * f) {
        size_t i = t / f, j = t % f, o = i * 2 * f + j;
        float dg, du;
        swiglu1_bwd(&dg, &du, get(dh, t), get(gu, o), get(gu, o + f));
        put(dgu, o, dg);
        put(dgu, o + f, du);
        if (dgu16)
            dgu16[o] = bf16_rne(dg), dgu16[o + f] = bf16_rne(du);
    }
}
static void cu_swiglu_bwd(float *dgu, const float *dh, const float *gu, int n, int f)
{
    same_kind("swiglu_bwd", dgu, dh);
    same_kind("swiglu_bwd", dgu, gu);
    as_stored(dgu, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        if (by4<T>(n, f, dgu, dh, gu)) {
            LAUNCH(k_swiglu_bwd4<T>, dim3(n, (f / 4 + THREADS - 1) / THREADS), THREADS)(
                (T *)dgu, a_copy_for(dgu, n, 2 * f), (const T *)dh, (const T *)gu, f);
            LAUNCHED("swiglu_bwd");
        } else
            LAUNCH_OVER((size_t)n * f, k_swiglu_bwd<T>, "swiglu_bwd", (T *)dgu, a_copy_for(dgu, n, 2 * f),
                        (const T *)dh, (const T *)gu, n, f);
    });
}

/* Ops of two buffers that may differ in kind (an embedding's fp32 table
 * into bf16 activations; log-probs into log-probs): an instance per pair */
template <class F> static void as_stored2(const void *d, const void *s, F f)
{
    as_stored(d, [&](auto *td) { as_stored(s, [&](auto *ts) { f(td, ts); }); });
}

template <class TD, class TS>
__global__ static void k_gather_rows(TD *dst, const TS *src, const int *idx, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) put(dst, t, get(src, (size_t)idx[t / d] * d + t % d));
}
static void cu_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    as_stored2(dst, src, [&](auto *td, auto *ts) {
        using TD = stored_t<decltype(td)>;
        using TS = stored_t<decltype(ts)>;
        LAUNCH_OVER((size_t)n * d, (k_gather_rows<TD, TS>), "gather_rows", (TD *)dst, (const TS *)src, idx, n, d);
    });
}

template <class TD, class TS>
__global__ static void k_scatter_add_rows(TD *dst, const TS *src, const int *idx, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) {
        size_t o = (size_t)idx[t / d] * d + t % d;
        put(dst, o, get(dst, o) + get(src, t));
    }
}
static void cu_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    as_stored2(dst, src, [&](auto *td, auto *ts) {
        using TD = stored_t<decltype(td)>;
        using TS = stored_t<decltype(ts)>;
        LAUNCH_OVER((size_t)n * d, (k_scatter_add_rows<TD, TS>), "scatter_add_rows", (TD *)dst, (const TS *)src, idx,
                    n, d);
    });
}

template <class TY, class TX> __global__ static void k_add(TY *y, const TX *x, size_t n)
{
    GRID_STRIDE(i, n) put(y, i, get(y, i) + get(x, i));
}
template <class T> __global__ static void k_add4(T *y, const T *x, size_t n4)
{
    GRID_STRIDE(i, n4) {
        float4 a = get4(y, 4 * i), b = get4(x, 4 * i);
        put4(y, 4 * i, float4{a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w});
    }
}
static void cu_add(float *y, const float *x, size_t n)
{
    as_stored2(y, x, [&](auto *ty, auto *tx) {
        using TY = stored_t<decltype(ty)>;
        using TX = stored_t<decltype(tx)>;
        if (std::is_same<TY, TX>::value && rows_by4((const TY *)y, n) && rows_by4((const TX *)x, n))
            LAUNCH_OVER(n / 4, k_add4<TY>, "add", (TY *)y, (const TY *)x, n / 4);
        else
            LAUNCH_OVER(n, (k_add<TY, TX>), "add", (TY *)y, (const TX *)x, n);
    });
}

template <class T> __global__ static void k_add_bias(T *y, const float *b, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) put(y, t, get(y, t) + b[t % d]);
}
static void cu_add_bias(float *y, const float *b, int n, int d)
{
    as_stored(y, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        LAUNCH_OVER((size_t)n * d, k_add_bias<T>, "add_bias", (T *)y, b, n, d);
    });
}

static void cu_bias_bwd(float *db, const float *dy, int n, int d) { colsum(db, dy, NULL, NULL, n, d); }

/* the embedding is a gather of the table's rows */
static void cu_embed(float *x, const float *table, const int *ids, int n, int d) { cu_gather_rows(x, table, ids, n, d); }

/* A token may repeat: each table row takes its rows of dx in order, as the
 * CPU adds them (no atomics, the CPU's bits every run). First each row of
 * the batch finds the next row with the same token (next[i], -1 at the
 * last) and marks it as not a first; then a thread per (first row, column)
 * walks its token's chain. One thread per column over all rows, the
 * simple way to keep the order, had only d threads: 1.8 ms of an H100
 * training step for d = 2048. */
__global__ static void k_embed_next(int *next, int *later, const int *ids, int n)
{
    GRID_STRIDE(i, (size_t)n) {
        int id = ids[i], j = (int)i + 1;
        while (j < n && ids[j] != id)
            j++;
        next[i] = j < n ? j : -1;
        later[i] = 0;
    }
}
__global__ static void k_embed_mark(int *later, const int *next, int n)
{
    GRID_STRIDE(i, (size_t)n) if (next[i] >= 0) later[next[i]] = 1;   /* each row is someone's next at most once */
}
template <class T>
__global__ static void k_embed_bwd(float *dtable, const T *dx, const int *ids, const int *next, const int *later,
                                   int d)
{
    int i = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= d || later[i])
        return;
    float *t = dtable + (size_t)ids[i] * d + j;
    float acc = *t;
    for (int r = i; r >= 0; r = next[r])
        acc += get(dx, (size_t)r * d + j);
    *t = acc;
}
static void cu_embed_bwd(float *dtable, const float *dx, const int *ids, int n, int d)
{
    if (n <= 0 || d <= 0)
        return;
    int *next = (int *)workspace(WS_EMBED, 2 * (size_t)n * sizeof *next), *later = next + n;
    LAUNCH_OVER(n, k_embed_next, "embed_bwd (next rows)", next, later, ids, n);
    LAUNCH_OVER(n, k_embed_mark, "embed_bwd (first rows)", later, next, n);
    as_stored(dx, [&](auto *t) {
        using T = stored_t<decltype(t)>;
        LAUNCH(k_embed_bwd<T>, dim3(n, (d + THREADS - 1) / THREADS), THREADS)(dtable, (const T *)dx, ids, next, later,
                                                                            d);
        LAUNCHED("embed_bwd");
    });
}

/* ---------------- vocabulary ---------------- */

/* The row's max and sum of exp(x - max) (double), one block per row. */
__device__ static float row_lse(const float *x, int v)
{
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x)
        mx = fmaxf(mx, x[j]);
    mx = block_max(mx);
    double s = 0;
    for (int j = threadIdx.x; j < v; j += blockDim.x)
        s += expf(x[j] - mx);
    s = block_sum_d(s);
    return mx + (float)log(s);
}

__global__ static void k_logsoftmax(float *lse, float *logp, const float *logits, const int *targets, int v)
{
    const float *x = logits + (size_t)blockIdx.x * v;
    float l = row_lse(x, v);
    if (threadIdx.x == 0) {
        lse[blockIdx.x] = l;
        if (logp) {
            int t = targets ? targets[blockIdx.x] : -1;
            logp[blockIdx.x] = t >= 0 ? x[t] - l : 0.0f;
        }
    }
}
static void cu_logsoftmax(float *lse, float *logp, const float *logits, const int *targets, int n, int v)
{
    if (n <= 0)
        return;
    LAUNCH(k_logsoftmax, n, THREADS)(lse, logp, logits, targets, v);
    LAUNCHED("logsoftmax");
}

/* (x16: the result's bf16 copy for the LM head's two products, or NULL) */
__global__ static void k_logsoftmax_bwd(float *logits, unsigned short *x16, const float *lse, const int *targets,
                                        const float *g, int v)
{
    float *x = logits + (size_t)blockIdx.x * v;
    unsigned short *c = x16 ? x16 + (size_t)blockIdx.x * v : NULL;
    int t = targets[blockIdx.x];
    float gi = g[blockIdx.x], l = lse[blockIdx.x];
    if (t < 0 || gi == 0) {
        for (int j = threadIdx.x; j < v; j += blockDim.x) {
            x[j] = 0;
            if (c)
                c[j] = 0;
        }
        return;
    }
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        float d = -gi * expf(x[j] - l);
        x[j] = d;
        if (c)
            c[j] = bf16_rne(d);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        x[t] += gi;
        if (c)
            c[t] = bf16_rne(x[t]);
    }
}
static void cu_logsoftmax_bwd(float *logits, const float *lse, const int *targets, const float *g, int n, int v)
{
    if (n <= 0)
        return;
    LAUNCH(k_logsoftmax_bwd, n, THREADS)(logits, a_copy_for(logits, n, v), lse, targets, g, v);
    LAUNCHED("logsoftmax_bwd");
}

/* ---------------- optimizer ---------------- */

__global__ static void k_sumsq_part(double *part, const float *x, size_t n)
{
    double s = 0;
    GRID_STRIDE(i, n) s += (double)x[i] * x[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0)
        part[blockIdx.x] = s;
}
__global__ static void k_sum_parts(double *out, const double *part, int n)
{
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s += part[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0)
        *out = s;
}
static double cu_sumsq(const float *x, size_t n)
{
    if (!n)
        return 0;
    ktimes_op_begin();               /* not STAMPED: its own op start */
    unsigned b = blocks_for(n);
    b = b > RED_BLOCKS ? RED_BLOCKS : b;
    LAUNCH(k_sumsq_part, b, THREADS)(red_buf, x, n);
    LAUNCHED("sumsq");
    LAUNCH(k_sum_parts, 1, THREADS)(red_buf + RED_BLOCKS, red_buf, (int)b);
    LAUNCHED("sumsq (total)");
    double s;
    capture_pause();
    CU(cudaMemcpy(&s, red_buf + RED_BLOCKS, sizeof s, cudaMemcpyDeviceToHost));
    return s;
}

__global__ static void k_scale(float *x, float a, size_t n) { GRID_STRIDE(i, n) x[i] *= a; }
static void cu_scale(float *x, float a, size_t n)
{
    params_written(x, n * sizeof *x);
    LAUNCH_OVER(n, k_scale, "scale", x, a, n);
}

/* w16: the weights' bf16 copy (cuda_params.cu), written beside them; may be NULL */
__global__ static void k_adamw(float *w, unsigned short *w16, const float *g, float gscale, float *m, float *v,
                               size_t n, float decay, float step, float beta1, float beta2, float omb1, float omb2,
                               float eps, float bc2s)
{
    GRID_STRIDE(i, n) {
        float wi = w[i] * decay, gi = g[i] * gscale;
        float mi = m[i] * beta1 + gi * omb1;
        float vi = v[i] * beta2 + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2s + eps;
        float wn = wi - step * (mi / denom);
        w[i] = wn;
        if (w16)
            w16[i] = bf16_rne(wn);
    }
}
static void cu_adamw(float *w, const float *g, float gscale, float *m, float *v, size_t n, float lr, float beta1,
                     float beta2, float eps, float wd, double bc1, double bc2_sqrt)
{
    /* the scalars exactly as the CPU forms them (torch's Python floats) */
    float decay = (float)(1.0 - (double)lr * wd), step = (float)(lr / bc1), bc2s = (float)bc2_sqrt;
    float omb1 = (float)(1.0 - (double)beta1), omb2 = (float)(1.0 - (double)beta2);
    unsigned short *w16 = param_bf16_update(w, n);
    LAUNCH_OVER(n, k_adamw, "adamw", w, w16, g, gscale, m, v, n, decay, step, beta1, beta2, omb1, omb2, eps, bc2s);
}

void cuda_elementwise_ops(struct backend *b)
{
    b->rmsnorm = STAMPED(cu_rmsnorm);
    b->rmsnorm_bwd = STAMPED(cu_rmsnorm_bwd);
    b->add_rmsnorm = STAMPED(cu_add_rmsnorm);
    b->rope = STAMPED(cu_rope);
    b->swiglu = STAMPED(cu_swiglu);
    b->swiglu_bwd = STAMPED(cu_swiglu_bwd);
    b->gather_rows = STAMPED(cu_gather_rows);
    b->scatter_add_rows = STAMPED(cu_scatter_add_rows);
    b->add = STAMPED(cu_add);
    b->add_bias = STAMPED(cu_add_bias);
    b->bias_bwd = STAMPED(cu_bias_bwd);
    b->embed = STAMPED(cu_embed);
    b->embed_bwd = STAMPED(cu_embed_bwd);
    b->logsoftmax = STAMPED(cu_logsoftmax);
    b->logsoftmax_bwd = STAMPED(cu_logsoftmax_bwd);
    b->sumsq = cu_sumsq;   /* writes nothing of the caller's: not STAMPED */
    b->scale = STAMPED(cu_scale);
    b->adamw = STAMPED(cu_adamw);
}
