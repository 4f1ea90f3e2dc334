/* The CUDA backend's row and elementwise kernels: RMSNorm and its
 * backward (column sums in two fixed-order passes), RoPE, SwiGLU, gathers
 * and scatters, the embedding, the vocabulary's log-softmax, and the
 * optimizer's norm and AdamW. */
#include "cuda_common.cuh"

double *red_buf;

/* ---------------- RMSNorm ---------------- */

/* y16: the bf16 copy of y for the next product (a_copy_for), or NULL */
__global__ static void k_rmsnorm(float *y, unsigned short *y16, float *rstd, const float *x, const float *w, int d,
                                 float eps)
{
    const float *xi = x + (size_t)blockIdx.x * d;
    float *yi = y + (size_t)blockIdx.x * d;
    double ss = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        ss += (double)xi[j] * xi[j];
    ss = block_sum_d(ss);
    float r = (float)(1.0 / sqrt(ss / d + eps));
    if (threadIdx.x == 0)
        rstd[blockIdx.x] = r;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = w[j] * (xi[j] * r);
        yi[j] = v;
        if (y16)
            y16[(size_t)blockIdx.x * d + j] = bf16_rne(v);
    }
}
static void cu_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps)
{
    if (n <= 0)
        return;
    LAUNCH(k_rmsnorm, n, THREADS)(y, a_copy_for(y, n, d), rstd, x, w, d, eps);
    LAUNCHED("rmsnorm");
}

/* dx += r w dy - x r^3/d sum(w dy x), per row */
__global__ static void k_rmsnorm_bwd_rows(float *dx, unsigned short *dx16, const float *dy, const float *x,
                                         const float *w, const float *rstd, int d)
{
    size_t o = (size_t)blockIdx.x * d;
    double dot = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dot += (double)w[j] * dy[o + j] * x[o + j];
    dot = block_sum_d(dot);
    float r = rstd[blockIdx.x];
    float c = (float)(dot * r * r * r / d);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = dx[o + j] + (r * w[j] * dy[o + j] - x[o + j] * c);
        dx[o + j] = v;
        if (dx16)
            dx16[o + j] = bf16_rne(v);
    }
}

/* out[j] += sum over rows i of a[i, j] (* b[i, j]) (* s[i]), in double, in
 * two passes with an order fixed by n and d: a block takes 32 columns of one
 * chunk of COLSUM_ROWS rows (8 row lanes, each summing every 8th row in
 * order, then the lanes in order) into part[chunk][j]; then the chunks are
 * summed in order. Chunks keep the GPU busy: one block per 32 columns left
 * 64 blocks for d = 2048. */
#define COLSUM_ROWS 128
__global__ static void k_colsum_part(double *part, const float *a, const float *b, const float *s, int n, int d)
{
    __shared__ double lanes[8][33];
    int j = blockIdx.x * 32 + threadIdx.x, ty = threadIdx.y;
    int i0 = blockIdx.y * COLSUM_ROWS, i1 = i0 + COLSUM_ROWS < n ? i0 + COLSUM_ROWS : n;
    double acc = 0;
    if (j < d)
        for (int i = i0 + ty; i < i1; i += 8) {
            double v = a[(size_t)i * d + j];
            if (b)
                v *= b[(size_t)i * d + j];
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
    LAUNCH(k_colsum_part, dim3((d + 31) / 32, chunks), dim3(32, 8))(part, a, b, s, n, d);
    LAUNCHED("column sum");
    LAUNCH_OVER(d, k_colsum_total, "column sum (total)", out, part, chunks, d);
}

static void cu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w,
                           const float *rstd, int n, int d)
{
    if (n <= 0)
        return;
    LAUNCH(k_rmsnorm_bwd_rows, n, THREADS)(dx, a_copy_for(dx, n, d), dy, x, w, rstd, d);
    LAUNCHED("rmsnorm_bwd");
    colsum(dw, dy, x, rstd, n, d);
}

/* ---------------- RoPE ---------------- */

/* A block per row: its position and table row are read once, and the
 * (head, pair) index of a thread needs 32-bit arithmetic only (the
 * grid-stride form divided a 64-bit index three times per pair). */
__global__ static void k_rope(float *x, int stride, const int *pos, int nh, int hd, const float *cs,
                              const float *sn, float sgn)
{
    int half = hd / 2, i = blockIdx.x;
    const float *ci = cs + (size_t)pos[i] * half, *si = sn + (size_t)pos[i] * half;
    float *row = x + (size_t)i * stride;
    for (int t = threadIdx.x; t < nh * half; t += blockDim.x) {
        int h = t / half, j = t - h * half;
        float *v = row + (size_t)h * hd;
        float c = ci[j], s = sgn * si[j], a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
    }
}
static void cu_rope(float *x, int stride, const int *pos, int n, int nh, int hd, const float *cs,
                    const float *sn, bool inverse)
{
    if (n <= 0 || nh <= 0 || hd < 2)
        return;
    LAUNCH(k_rope, n, THREADS)(x, stride, pos, nh, hd, cs, sn, inverse ? -1.0f : 1.0f);
    LAUNCHED("rope");
}

/* ---------------- elementwise ---------------- */

/* SwiGLU's element: silu(g) u, and its backward (d gate, d up) for dh */
__device__ static inline float swiglu1(float g, float u) { return g / (1.0f + expf(-g)) * u; }
__device__ static inline void swiglu1_bwd(float *dg, float *du, float d, float g, float u)
{
    float sg = 1.0f / (1.0f + expf(-g));
    *du = d * g * sg;
    *dg = d * u * sg * (1.0f + g * (1.0f - sg));
}
/* A block per (row, 4 * THREADS columns), four columns a thread as float4
 * where f % 4 == 0 and the rows are 16-byte aligned: no index division per
 * element (the grid-stride form divided a 64-bit index by f for each). */
/* (h16, dgu16: the outputs' bf16 copies for the next product, or NULL) */
__global__ static void k_swiglu4(float *h, unsigned short *h16, const float *gu, int f)
{
    int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (4 * j >= f)
        return;
    size_t i = blockIdx.x;
    float4 g = ((const float4 *)(gu + i * 2 * f))[j], u = ((const float4 *)(gu + i * 2 * f + f))[j];
    float4 v = float4{swiglu1(g.x, u.x), swiglu1(g.y, u.y), swiglu1(g.z, u.z), swiglu1(g.w, u.w)};
    ((float4 *)(h + i * f))[j] = v;
    if (h16)
        put_bf16_4(h16 + i * f + 4 * j, v);
}
__global__ static void k_swiglu(float *h, unsigned short *h16, const float *gu, int n, int f)
{
    GRID_STRIDE(t, (size_t)n * f) {
        size_t i = t / f, j = t % f;
        h[t] = swiglu1(gu[i * 2 * f + j], gu[i * 2 * f + f + j]);
        if (h16)
            h16[t] = bf16_rne(h[t]);
    }
}
static bool by_float4(int n, int f, const void *a, const void *b, const void *c)
{
    return n > 0 && f % 4 == 0 && ((size_t)a | (size_t)b | (size_t)c) % 16 == 0 && (f / 4 + THREADS - 1) / THREADS < 65536;
}
static void cu_swiglu(float *h, const float *gu, int n, int f)
{
    if (by_float4(n, f, h, gu, gu)) {
        LAUNCH(k_swiglu4, dim3(n, (f / 4 + THREADS - 1) / THREADS), THREADS)(h, a_copy_for(h, n, f), gu, f);
        LAUNCHED("swiglu");
    } else
        LAUNCH_OVER((size_t)n * f, k_swiglu, "swiglu", h, a_copy_for(h, n, f), gu, n, f);
}

__global__ static void k_swiglu_bwd4(float *dgu, unsigned short *dgu16, const float *dh, const float *gu, int f)
{
    int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (4 * j >= f)
        return;
    size_t i = blockIdx.x;
    float4 g = ((const float4 *)(gu + i * 2 * f))[j], u = ((const float4 *)(gu + i * 2 * f + f))[j];
    float4 d = ((const float4 *)(dh + i * f))[j], dg, du;
    swiglu1_bwd(&dg.x, &du.x, d.x, g.x, u.x);
    swiglu1_bwd(&dg.y, &du.y, d.y, g.y, u.y);
    swiglu1_bwd(&dg.z, &du.z, d.z, g.z, u.z);
    swiglu1_bwd(&dg.w, &du.w, d.w, g.w, u.w);
    ((float4 *)(dgu + i * 2 * f))[j] = dg;
    ((float4 *)(dgu + i * 2 * f + f))[j] = du;
    if (dgu16) {
        put_bf16_4(dgu16 + i * 2 * f + 4 * j, dg);
        put_bf16_4(dgu16 + i * 2 * f + f + 4 * j, du);
    }
}
__global__ static void k_swiglu_bwd(float *dgu, unsigned short *dgu16, const float *dh, const float *gu, int n, int f)
{
    GRID_STRIDE(t, (size_t)n * f) {
        size_t i = t / f, j = t % f, o = i * 2 * f + j;
        swiglu1_bwd(&dgu[o], &dgu[o + f], dh[t], gu[o], gu[o + f]);
        if (dgu16)
            dgu16[o] = bf16_rne(dgu[o]), dgu16[o + f] = bf16_rne(dgu[o + f]);
    }
}
static void cu_swiglu_bwd(float *dgu, const float *dh, const float *gu, int n, int f)
{
    if (by_float4(n, f, dgu, dh, gu)) {
        LAUNCH(k_swiglu_bwd4, dim3(n, (f / 4 + THREADS - 1) / THREADS), THREADS)(dgu, a_copy_for(dgu, n, 2 * f), dh,
                                                                              gu, f);
        LAUNCHED("swiglu_bwd");
    } else
        LAUNCH_OVER((size_t)n * f, k_swiglu_bwd, "swiglu_bwd", dgu, a_copy_for(dgu, n, 2 * f), dh, gu, n, f);
}

__global__ static void k_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) dst[t] = src[(size_t)idx[t / d] * d + t % d];
}
static void cu_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    LAUNCH_OVER((size_t)n * d, k_gather_rows, "gather_rows", dst, src, idx, n, d);
}

__global__ static void k_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) dst[(size_t)idx[t / d] * d + t % d] += src[t];
}
static void cu_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    LAUNCH_OVER((size_t)n * d, k_scatter_add_rows, "scatter_add_rows", dst, src, idx, n, d);
}

__global__ static void k_add(float *y, const float *x, size_t n) { GRID_STRIDE(i, n) y[i] += x[i]; }
__global__ static void k_add4(float4 *y, const float4 *x, size_t n4)
{
    GRID_STRIDE(i, n4) {
        float4 a = y[i], b = x[i];
        y[i] = float4{a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w};
    }
}
static void cu_add(float *y, const float *x, size_t n)
{
    if (n % 4 == 0 && ((size_t)y | (size_t)x) % 16 == 0)
        LAUNCH_OVER(n / 4, k_add4, "add", (float4 *)y, (const float4 *)x, n / 4);
    else
        LAUNCH_OVER(n, k_add, "add", y, x, n);
}

__global__ static void k_add_bias(float *y, const float *b, int n, int d)
{
    GRID_STRIDE(t, (size_t)n * d) y[t] += b[t % d];
}
static void cu_add_bias(float *y, const float *b, int n, int d)
{
    LAUNCH_OVER((size_t)n * d, k_add_bias, "add_bias", y, b, n, d);
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
__global__ static void k_embed_bwd(float *dtable, const float *dx, const int *ids, const int *next,
                                   const int *later, int d)
{
    int i = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= d || later[i])
        return;
    float *t = dtable + (size_t)ids[i] * d + j;
    float acc = *t;
    for (int r = i; r >= 0; r = next[r])
        acc += dx[(size_t)r * d + j];
    *t = acc;
}
static void cu_embed_bwd(float *dtable, const float *dx, const int *ids, int n, int d)
{
    if (n <= 0 || d <= 0)
        return;
    int *next = (int *)workspace(WS_EMBED, 2 * (size_t)n * sizeof *next), *later = next + n;
    LAUNCH_OVER(n, k_embed_next, "embed_bwd (next rows)", next, later, ids, n);
    LAUNCH_OVER(n, k_embed_mark, "embed_bwd (first rows)", later, next, n);
    LAUNCH(k_embed_bwd, dim3(n, (d + THREADS - 1) / THREADS), THREADS)(dtable, dx, ids, next, later, d);
    LAUNCHED("embed_bwd");
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
    unsigned b = blocks_for(n);
    b = b > RED_BLOCKS ? RED_BLOCKS : b;
    LAUNCH(k_sumsq_part, b, THREADS)(red_buf, x, n);
    LAUNCHED("sumsq");
    LAUNCH(k_sum_parts, 1, THREADS)(red_buf + RED_BLOCKS, red_buf, (int)b);
    LAUNCHED("sumsq (total)");
    double s;
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
__global__ static void k_adamw(float *w, unsigned short *w16, const float *g, float *m, float *v, size_t n,
                               float decay, float step, float beta1, float beta2, float omb1, float omb2, float eps,
                               float bc2s)
{
    GRID_STRIDE(i, n) {
        float wi = w[i] * decay, gi = g[i];
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
static void cu_adamw(float *w, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                     float eps, float wd, double bc1, double bc2_sqrt)
{
    /* the scalars exactly as the CPU forms them (torch's Python floats) */
    float decay = (float)(1.0 - (double)lr * wd), step = (float)(lr / bc1), bc2s = (float)bc2_sqrt;
    float omb1 = (float)(1.0 - (double)beta1), omb2 = (float)(1.0 - (double)beta2);
    unsigned short *w16 = param_bf16_update(w, n);
    LAUNCH_OVER(n, k_adamw, "adamw", w, w16, g, m, v, n, decay, step, beta1, beta2, omb1, omb2, eps, bc2s);
}

void cuda_elementwise_ops(struct backend *b)
{
    b->rmsnorm = STAMPED(cu_rmsnorm);
    b->rmsnorm_bwd = STAMPED(cu_rmsnorm_bwd);
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
