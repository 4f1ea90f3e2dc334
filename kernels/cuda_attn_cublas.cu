/* The CUDA backend's attention through cuBLAS.
 * The CPU backend's algorithm: per sequence, the scores S = scale q k^T of
 * every head in the scratch ([head][n][ctx]; the causal upper triangle is
 * computed and discarded: on tensor cores the square costs less than
 * skipping it), a masked softmax row by row, then out = P v. The query heads
 * of one kv head are one strided batch that shares the K (V) operand. In
 * bf16 mode the row kernels write P and dS as bf16 (what the next GEMM reads)
 * into workspaces; otherwise fp32 in place, over S and dP. */
#include "cuda_attention.cuh"

/* Per (row, head): P = the causal row's softmax of S, 0 above the diagonal
 * (p may be s itself); lse saved. exp is recomputed rather than stored, so
 * that S is read-only until the last pass. */
template <class T>
__global__ static void k_softmax_causal(const float *s, T *p, float *lse, int n, int ctx, int pos)
{
    int i = blockIdx.x, h = blockIdx.y, len = pos + i + 1;
    size_t o = ((size_t)h * n + i) * ctx;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        mx = fmaxf(mx, s[o + j]);
    mx = block_max(mx);
    double sum = 0;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        sum += expf(s[o + j] - mx);
    sum = block_sum_d(sum);
    float inv = (float)(1.0 / sum);
    for (int j = threadIdx.x; j < ctx; j += blockDim.x)
        put(p, o + j, j < len ? expf(s[o + j] - mx) * inv : 0.0f);
    if (lse && threadIdx.x == 0)
        lse[(size_t)h * n + i] = mx + (float)log(sum);
}

/* The backward's row work, per (row, head): P = exp(S - lse) again, then
 * dS = P (dP - rowsum(P dP)) scale; writes P and dS (0 above the diagonal;
 * p may be s and ds may be dp). */
template <class T>
__global__ static void k_attn_p_ds(const float *s, const float *dp, const float *lse, T *p, T *ds, int n, int ctx,
                                   int pos, float scale)
{
    int i = blockIdx.x, h = blockIdx.y, len = pos + i + 1;
    size_t o = ((size_t)h * n + i) * ctx;
    float l = lse[(size_t)h * n + i];
    double acc = 0;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        acc += (double)expf(s[o + j] - l) * dp[o + j];
    float rowdot = (float)block_sum_d(acc);
    for (int j = threadIdx.x; j < ctx; j += blockDim.x) {
        float pj = j < len ? expf(s[o + j] - l) : 0.0f, dsj = j < len ? pj * (dp[o + j] - rowdot) * scale : 0.0f;
        put(p, o + j, pj);
        put(ds, o + j, dsj);
    }
}

/* Where P (and dS) go: bf16 workspaces in bf16 mode, else over S (dP). */
static operand attn_rows(int which, float *fp32_place, size_t n)
{
    if (!gemm_bf16)
        return operand{fp32_place, false};
    return operand{workspace(which, n * sizeof(unsigned short)), true};
}
static void launch_softmax(const float *s, operand p, float *lse, int n, int nh, int ctx, int pos)
{
    if (p.bf16)
        LAUNCH(k_softmax_causal<unsigned short>, dim3(n, nh), THREADS)(s, (unsigned short *)p.p, lse, n, ctx, pos);
    else
        LAUNCH(k_softmax_causal<float>, dim3(n, nh), THREADS)(s, (float *)p.p, lse, n, ctx, pos);
    LAUNCHED("attention (softmax)");
}
static void launch_p_ds(const float *s, const float *dp, const float *lse, operand p, operand ds, int n, int nh,
                        int ctx, int pos, float scale)
{
    if (p.bf16)
        LAUNCH(k_attn_p_ds<unsigned short>, dim3(n, nh), THREADS)(s, dp, lse, (unsigned short *)p.p,
                                                                 (unsigned short *)ds.p, n, ctx, pos, scale);
    else
        LAUNCH(k_attn_p_ds<float>, dim3(n, nh), THREADS)(s, dp, lse, (float *)p.p, (float *)ds.p, n, ctx, pos,
                                                         scale);
    LAUNCHED("attention_bwd (P, dS)");
}
/* src's heads stacked ([head][n][hd]), so that one product sums over the
 * query heads of a kv head; bf16 in bf16 mode */
static operand heads_major(int half, const float *src, int stride, int n, int nh, int hd)
{
    size_t count = (size_t)nh * n * hd;
    char *ws = (char *)workspace(WS_ATTN, 2 * count * (gemm_bf16 ? 2 : 4));
    void *dst = ws + half * count * (gemm_bf16 ? 2 : 4);
    if (gemm_bf16)
        pack((unsigned short *)dst, src, n, n, hd, stride, hd, nh, "attention (head-major copy)");
    else
        pack((float *)dst, src, n, n, hd, stride, hd, nh, "attention (head-major copy)");
    return operand{dst, gemm_bf16};
}
/* element offset into an operand of either width */
static operand at(operand x, size_t off)
{
    return operand{(const char *)x.p + off * (x.bf16 ? 2 : 4), x.bf16};
}

/* out (or dP) rows of every head = scale A_h B_c^T, batched per kv head c,
 * A's head h at column h*hd of its rows (stride a_stride), B = K or V. */
static void attn_products_nt(float *c_out, const float *a, int a_stride, const float *b, const struct bk_attn_seq *x,
                             int nh, int nkv, int hd, float scale)
{
    int g = nh / nkv, n = x->n, ctx = x->pos + n;
    long long pn = (long long)n * ctx;
    for (int c = 0; c < nkv; c++)
        gemm_ex(false, true, n, ctx, hd, scale, f32(a + (size_t)c * g * hd), a_stride, hd, f32(b + (size_t)c * hd),
                x->kv_stride, 0, 0.0f, c_out + c * g * pn, ctx, pn, g);
}
/* c rows of every head (column h*hd, stride c_stride) = P_h B_c, batched per kv head */
static void attn_products_nn(float *c_out, int c_stride, operand p, const float *b, const struct bk_attn_seq *x,
                             int nh, int nkv, int hd)
{
    int g = nh / nkv, n = x->n, ctx = x->pos + n;
    long long pn = (long long)n * ctx;
    for (int c = 0; c < nkv; c++)
        gemm_ex(false, false, n, hd, ctx, 1.0f, at(p, c * g * pn), ctx, pn, f32(b + (size_t)c * hd), x->kv_stride, 0,
                0.0f, c_out + (size_t)c * g * hd, c_stride, hd, g);
}

void attn_gemm_fwd(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *x,
                          int nh, int nkv, int hd, float scale)
{
    int n = x->n, ctx = x->pos + n;
    attn_products_nt(x->p, q + (size_t)x->row * q_stride, q_stride, x->k, x, nh, nkv, hd, scale);
    operand p = attn_rows(WS_P16, x->p, (size_t)nh * n * ctx);
    launch_softmax(x->p, p, x->lse, n, nh, ctx, x->pos);
    attn_products_nn(out + (size_t)x->row * out_stride, out_stride, p, x->v, x, nh, nkv, hd);
}

/* dP = dO v^T; P and dS = P (dP - rowsum(P dP)) scale; dv += P^T dO;
 * dq = dS k; dk += dS^T q. The sums over a kv head's query heads are one
 * product each, over the stacked rows of the head-major copies. */
void attn_gemm_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                          const struct bk_attn_seq *x, int nh, int nkv, int hd, float scale)
{
    int g = nh / nkv, n = x->n, ctx = x->pos + n, kvs = x->kv_stride;
    long long pn = (long long)n * ctx, gn = (long long)g * n;
    const float *qr = q + (size_t)x->row * q_stride, *dor = dout + (size_t)x->row * dout_stride;
    attn_products_nt(x->p, qr, q_stride, x->k, x, nh, nkv, hd, scale);
    attn_products_nt(x->dp, dor, dout_stride, x->v, x, nh, nkv, hd, 1.0f);
    operand p = attn_rows(WS_P16, x->p, (size_t)nh * pn), ds = attn_rows(WS_DS16, x->dp, (size_t)nh * pn);
    launch_p_ds(x->p, x->dp, x->lse, p, ds, n, nh, ctx, x->pos, scale);
    operand qh = heads_major(0, qr, q_stride, n, nh, hd), doh = heads_major(1, dor, dout_stride, n, nh, hd);
    gemm_ex(true, false, ctx, hd, (int)gn, 1.0f, p, ctx, g * pn, doh, hd, gn * hd, 1.0f, x->dv, kvs, hd, nkv);
    attn_products_nn(dq + (size_t)x->row * q_stride, q_stride, ds, x->k, x, nh, nkv, hd);
    gemm_ex(true, false, ctx, hd, (int)gn, 1.0f, ds, ctx, g * pn, qh, hd, gn * hd, 1.0f, x->dk, kvs, hd, nkv);
}

