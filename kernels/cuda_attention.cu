/* The CUDA backend's attention: which route each sequence of a call takes
 * ($RL_CUDA_ATTN, the GEMM mode, head_dim, the scratch budget), and the ops
 * that dispatch to the routes. */
#include "cuda_attention.cuh"

static void check_hd(int hd)
{
    if (hd > MAX_HD || hd <= 0)
        fatal("attention", "head_dim must be 1 to 256 on this backend");
}

/* $RL_CUDA_ATTN: auto (the fastest measured: the tensor-core kernels where
 * they apply, bf16 mode and head_dim 64, in the directions AUTO_TC_FWD and
 * AUTO_TC_BWD say; else cuBLAS where the scores fit; else the tiled fp32
 * kernels), tc (the tensor-core kernels in both directions, their tiles
 * loaded through the registers), tc-fwd (those in the forward only),
 * tc-pipe (in both directions, the tiles brought by cp.async a step ahead),
 * tc-wide (tc-pipe's with 128 queries a block in the forward and dq, and
 * dq's and dk/dv's scores in halves of a tile), cublas (none), tiled (no
 * cuBLAS either), simple (the per-query kernels). AUTO_TC_KIND says which
 * tensor-core kernels auto takes. The modes up to cublas may take cuBLAS. */
enum { ATTN_AUTO, ATTN_TC, ATTN_TC_FWD, ATTN_TC_PIPE, ATTN_TC_WIDE, ATTN_CUBLAS, ATTN_TILED, ATTN_SIMPLE };
static const char *const attn_modes[] = {"auto", "tc", "tc-fwd", "tc-pipe", "tc-wide", "cublas", "tiled", "simple"};
static int attn_mode;
/* measured on an H100 (eighth session; TinyLlama-1.1B's shape, 4 x 1024
 * tokens, bf16): a training step took 0.101 s with the tensor-core kernels
 * in both directions, 0.119 s with them in the forward only, 0.136 s with
 * cuBLAS in both (four of Mistral-7B's layers, head_dim 128: 0.067 s
 * against 0.072 s) */
#define AUTO_TC_FWD 1
#define AUTO_TC_BWD 1
/* the pipelined kernels (cp.async, ldmatrix), measured on the H100 (eighth
 * session, third run): a step took 0.084 s against the tc kernels' 0.092 s
 * (four of Mistral-7B's layers: 0.062 against 0.066 s); their three
 * kernels 1.5 to 1.9 times faster, and bit for bit the same results */
#define AUTO_TC_KIND TC_PIPE
int attn_tc_kind(void)
{
    return attn_mode == ATTN_TC_PIPE ? TC_PIPE : attn_mode == ATTN_TC_WIDE ? TC_WIDE
         : attn_mode == ATTN_AUTO    ? AUTO_TC_KIND : TC_PLAIN;
}
/* whether the mode asks for the tensor-core kernels in this direction */
static bool tc_wanted(bool backward)
{
    return attn_mode == ATTN_TC || attn_mode == ATTN_TC_PIPE || attn_mode == ATTN_TC_WIDE ||
           (attn_mode == ATTN_TC_FWD && !backward) ||
           (attn_mode == ATTN_AUTO && (backward ? AUTO_TC_BWD : AUTO_TC_FWD));
}

/* $RL_CUDA_DECODE: auto (AUTO_DECODE_SPLIT), split (decode steps on the
 * split kernel where it applies: head_dim <= 128, groups of up to 8 query
 * heads) or query (the per-query kernel). RL_CUDA_ATTN=simple keeps the
 * per-query kernel. */
enum { DECODE_AUTO, DECODE_SPLIT, DECODE_QUERY };
static const char *const decode_modes[] = {"auto", "split", "query"};
static int decode_mode;
/* measured on an H100 (eighth session; TinyLlama's shape, bf16 cache):
 * decode steps over 2048 cached tokens ran at 210 tokens/s at batch 1 and
 * 2463 at batch 64 with the split kernel, 47 and 1254 with the per-query
 * kernel; over 128 tokens 253 and 4012 against 213 and 3730 */
#define AUTO_DECODE_SPLIT 1
static bool split_decode_on(void)
{
    return attn_mode != ATTN_SIMPLE && (decode_mode == DECODE_SPLIT || (decode_mode == DECODE_AUTO && AUTO_DECODE_SPLIT));
}
static bool use_split_decode(int n, int hd, int group) { return split_decode_on() && attn_decode_applies(n, hd, group); }

/* Whether a call whose longest sequence has n queries takes the tiled
 * kernels: decode steps (a few queries per sequence) keep a block per query
 * in the forward; the backward is always tiled. */
bool attn_use_tiled(int n, int hd, bool backward)
{
    return attn_mode != ATTN_SIMPLE && hd <= FA_HD && (backward || n > 4);
}

/* How one sequence of n queries over ctx keys is attended: on the tensor
 * cores, through cuBLAS (when its scores, n x ctx per head in fp32, take at
 * most ATTN_GEMM_BYTES of scratch), or by the fp32 kernels. */
#define ATTN_GEMM_BYTES ((size_t)1 << 30)
enum attn_route_t { BY_TC, BY_GEMM, BY_KERNELS };
static attn_route_t attn_route(int n, int ctx, int n_heads, int hd, bool backward)
{
    if (n > 4 && tc_wanted(backward) && gemm_bf16 && attn_tc_applies(hd))
        return BY_TC;
    if (n > 4 && attn_mode <= ATTN_CUBLAS && (size_t)n_heads * n * ctx * sizeof(float) <= ATTN_GEMM_BYTES)
        return BY_GEMM;
    return BY_KERNELS;
}
/* cuBLAS and the per-query kernels go through the scratch; the tiled and tensor-core kernels keep scores on chip. */
static bool cu_attn_scratch(int n, int ctx, int n_heads, int hd, bool backward)
{
    attn_route_t r = attn_route(n, ctx, n_heads, hd, backward);
    return r == BY_GEMM || (r == BY_KERNELS && !attn_use_tiled(n, hd, backward));
}
/* The route a sequence of a call takes (cuBLAS only where the scratch was given). */
static attn_route_t seq_route(const struct bk_attn_seq *x, int n_heads, int hd, bool backward)
{
    attn_route_t r = attn_route(x->n, x->pos + x->n, n_heads, hd, backward);
    return r == BY_GEMM && !(x->p && (!backward || x->dp)) ? BY_KERNELS : r;
}

/* The sequences of s that take route r, or with `except` all the others
 * (host memory, to free). */
static struct bk_attn_seq *seqs_by_route(const struct bk_attn_seq *s, int n_seq, int n_heads, int hd, bool backward,
                                         attn_route_t r, int *n_out, bool except = false)
{
    struct bk_attn_seq *out = (struct bk_attn_seq *)malloc((size_t)(n_seq ? n_seq : 1) * sizeof *out);
    if (!out)
        fatal("attention", "out of host memory");
    *n_out = 0;
    for (int i = 0; i < n_seq; i++)
        if ((seq_route(&s[i], n_heads, hd, backward) == r) != except)
            out[(*n_out)++] = s[i];
    return out;
}

/* A bf16 KV cache is read as such by the per-query kernel, which decode
 * steps take (their cost is reading the cache), and by the tensor-core
 * kernels' bf16 copies. Prefills on the other routes read fp32: widen_kv
 * gives those sequences fp32 copies of their keys and values (exact; a
 * small cost beside a prefill's products). */
static bool reads_bf16_kv(const struct bk_attn_seq *x, int n_heads, int hd)
{
    attn_route_t r = seq_route(x, n_heads, hd, false);
    return r == BY_TC || (r == BY_KERNELS && !attn_use_tiled(x->n, hd, false));
}
__global__ static void k_widen(float *dst, const unsigned short *src, int cols, int ld)
{
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        dst[(size_t)blockIdx.x * cols + c] = get(src, (size_t)blockIdx.x * ld + c);
}
/* The floats of the fp32 copy widen_kv makes of sequence x's K and V. */
static size_t widened_floats(const struct bk_attn_seq *x, int n_heads, int n_kv, int hd)
{
    return x->kv_bf16 && !reads_bf16_kv(x, n_heads, hd) ? 2 * (size_t)(x->pos + x->n) * n_kv * hd : 0;
}
static struct bk_attn_seq *widen_kv(const struct bk_attn_seq *s, int n_seq, int n_heads, int n_kv, int hd)
{
    struct bk_attn_seq *w = (struct bk_attn_seq *)malloc((size_t)(n_seq ? n_seq : 1) * sizeof *w);
    if (!w)
        fatal("attention", "out of host memory");
    memcpy(w, s, (size_t)n_seq * sizeof *w);
    size_t kvd = (size_t)n_kv * hd, total = 0;
    for (int i = 0; i < n_seq; i++)
        total += widened_floats(&s[i], n_heads, n_kv, hd);
    float *ws = total ? (float *)workspace(WS_KV32, total * sizeof(float)) : NULL;
    for (int i = 0; i < n_seq && ws; i++) {
        int ctx = s[i].pos + s[i].n;
        if (!widened_floats(&s[i], n_heads, n_kv, hd))
            continue;
        int threads = kvd < THREADS ? ((int)kvd + 31) / 32 * 32 : THREADS;
        LAUNCH(k_widen, ctx, threads)(ws, (const unsigned short *)s[i].k, (int)kvd, s[i].kv_stride);
        LAUNCH(k_widen, ctx, threads)(ws + ctx * kvd, (const unsigned short *)s[i].v, (int)kvd, s[i].kv_stride);
        LAUNCHED("widen a bf16 KV cache");
        w[i].k = ws;
        w[i].v = ws + ctx * kvd;
        w[i].kv_stride = (int)kvd;
        w[i].kv_bf16 = false;
        ws += 2 * ctx * kvd;
    }
    return w;
}

/* Stable partition: the sequences for which keep(x) holds first; their count. */
template <class P> static int partition(struct bk_attn_seq *k, int n, P keep)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        if (keep(k[i])) {
            struct bk_attn_seq t = k[i];
            memmove(&k[m + 1], &k[m], (size_t)(i - m) * sizeof *k);
            k[m++] = t;
        }
    return m;
}

/* The decode steps of k the split kernel takes, moved to its front and
 * attended (a launch per kind of cache); their count. */
static int attn_split_decodes(float *out, int out_stride, const float *q, int q_stride, struct bk_attn_seq *k, int nk,
                              int n_heads, int n_kv, int hd, float scale)
{
    int nd = partition(k, nk, [&](const bk_attn_seq &x) {
        return seq_route(&x, n_heads, hd, false) == BY_KERNELS && use_split_decode(x.n, hd, n_heads / n_kv);
    });
    int n16 = partition(k, nd, [](const bk_attn_seq &x) { return x.kv_bf16; });
    attn_decode(out, out_stride, q, q_stride, k, n16, n_heads, n_kv, hd, scale);
    attn_decode(out, out_stride, q, q_stride, k + n16, nd - n16, n_heads, n_kv, hd, scale);
    return nd;
}

/* The sequences the fp32 kernels take: decode steps on the split kernel
 * where it applies, the rest with fp32 and bf16 caches in separate launches. */
static void attn_kernels_all(float *out, int out_stride, const float *q, int q_stride, struct bk_attn_seq *k, int nk,
                             int n_heads, int n_kv, int hd, float scale)
{
    int nd = attn_split_decodes(out, out_stride, q, q_stride, k, nk, n_heads, n_kv, hd, scale);
    k += nd, nk -= nd;
    int n32 = partition(k, nk, [](const bk_attn_seq &x) { return !x.kv_bf16; });
    attn_kernels(out, out_stride, q, q_stride, k, n32, n_heads, n_kv, hd, scale);
    attn_kernels(out, out_stride, q, q_stride, k + n32, nk - n32, n_heads, n_kv, hd, scale);
}

static void attention_part(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s_in,
                           int n_seq, int n_heads, int n_kv, int hd, float scale)
{
    struct bk_attn_seq *s = widen_kv(s_in, n_seq, n_heads, n_kv, hd);
    for (int i = 0; i < n_seq; i++)
        if (seq_route(&s[i], n_heads, hd, false) == BY_GEMM)
            attn_gemm_fwd(out, out_stride, q, q_stride, &s[i], n_heads, n_kv, hd, scale);
    int nt, nk;
    struct bk_attn_seq *t = seqs_by_route(s, n_seq, n_heads, hd, false, BY_TC, &nt);
    attn_tc_fwd(out, out_stride, q, q_stride, t, nt, n_heads, n_kv, hd, scale);
    free(t);
    struct bk_attn_seq *k = seqs_by_route(s, n_seq, n_heads, hd, false, BY_KERNELS, &nk);
    attn_kernels_all(out, out_stride, q, q_stride, k, nk, n_heads, n_kv, hd, scale);
    free(k);
    free(s);
}

/* The fp32 copies of a call's bf16 caches take at most this much workspace
 * at once (unless one sequence's alone is more): a call is cut into parts
 * of consecutive sequences that fit. Sequences are attended independently,
 * so the parts give the call's bits. The emulation's budget is small, so
 * that the tests cut calls too. */
#ifdef RL_CUDA_EMU
#define WIDEN_BUDGET ((size_t)64 << 10)
#else
#define WIDEN_BUDGET ((size_t)256 << 20)
#endif

static void attention_f32(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s,
                          int n_seq, int n_heads, int n_kv, int hd, float scale)
{
    for (int i = 0; i < n_seq;) {
        int j = i + 1;
        size_t bytes = widened_floats(&s[i], n_heads, n_kv, hd) * sizeof(float);
        for (; j < n_seq; j++) {
            size_t more = widened_floats(&s[j], n_heads, n_kv, hd) * sizeof(float);
            if (bytes + more > WIDEN_BUDGET)
                break;
            bytes += more;
        }
        attention_part(out, out_stride, q, q_stride, s + i, j - i, n_heads, n_kv, hd, scale);
        i = j;
    }
}

static void attention_bwd_f32(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                              const float *out, int out_stride, const struct bk_attn_seq *s, int n_seq, int n_heads,
                              int n_kv, int hd, float scale)
{
    for (int i = 0; i < n_seq; i++)
        if (seq_route(&s[i], n_heads, hd, true) == BY_GEMM)
            attn_gemm_bwd(dq, q_stride, dout, dout_stride, q, &s[i], n_heads, n_kv, hd, scale);
    int nt, nk;
    struct bk_attn_seq *t = seqs_by_route(s, n_seq, n_heads, hd, true, BY_TC, &nt);
    attn_tc_bwd(dq, q_stride, dout, dout_stride, q, out, out_stride, t, nt, n_heads, n_kv, hd, scale);
    free(t);
    struct bk_attn_seq *k = seqs_by_route(s, n_seq, n_heads, hd, true, BY_KERNELS, &nk);
    attn_bwd_kernels(dq, q_stride, dout, dout_stride, q, out, out_stride, k, nk, n_heads, n_kv, hd, scale);
    free(k);
}

/* ---- bf16 activations (cuda_acts.cu) ----
 * The routes read and write fp32: a call on activations gets fp32 copies
 * of its queries (and its forward output and dO), of keys and values that
 * are activations (training's; a KV cache keeps its own handling), and
 * fp32 outputs, narrowed into the activations after it. An fp32 region
 * of one sequence's keys: rows [0, rows) x cols of activation src (ld
 * apart), at *ws */
static float *region(float **ws, const float *src, long long ld, size_t rows, int cols, bool widen)
{
    float *f32 = *ws;
    *ws += rows * cols;
    if (widen)
        act_widen(f32, cols, src, ld, rows, cols);
    return f32;
}
static inline const float *act_from(const float *x, long long ld, size_t lo)
{
    return (const float *)((const unsigned short *)x + lo * ld);
}
/* The copies of the queries' side (q, out, dO, dQ) hold the rows of the
 * call's sequences only, back to back: pack_rows renumbers them from 0
 * (*rows in all) and returns each one's activation row, malloc'd. A span
 * from the first to the last would also hold the rows of the sequences on
 * other routes between them, in a packed batch most of it (its size was
 * the batch's, not the call's, and outside the model's memory budget). */
static int *pack_rows(struct bk_attn_seq *s, int n_seq, size_t *rows)
{
    int *from = (int *)malloc((size_t)(n_seq ? n_seq : 1) * sizeof *from);
    if (!from)
        fatal("attention", "out of host memory");
    *rows = 0;
    for (int i = 0; i < n_seq; i++) {
        from[i] = s[i].row;
        s[i].row = (int)*rows;
        *rows += (size_t)s[i].n;
    }
    return from;
}
/* f(packed row, activation row, rows) for each run of sequences whose
 * activation rows follow one another (a decode step's are one run): one
 * conversion a run, not one a sequence */
template <class F> static void seq_runs(const struct bk_attn_seq *s, const int *from, int n_seq, F f)
{
    for (int i = 0, j; i < n_seq; i = j) {
        size_t rows = (size_t)s[i].n;
        for (j = i + 1; j < n_seq && from[j] == from[j - 1] + s[j - 1].n; j++)
            rows += (size_t)s[j].n;
        f((size_t)s[i].row, (size_t)from[i], rows);
    }
}
/* The packed rows of activation src (ld apart) at *ws, widened or not */
static float *packed_region(float **ws, const float *src, long long ld, int cols, const struct bk_attn_seq *s,
                            const int *from, int n_seq, size_t rows, bool widen)
{
    float *f32 = *ws;
    *ws += rows * cols;
    if (widen)
        seq_runs(s, from, n_seq, [&](size_t p, size_t a, size_t n) {
            act_widen(f32 + p * cols, cols, act_from(src, ld, a), ld, n, cols);
        });
    return f32;
}
/* ... and the packed rows narrowed back into it */
static void narrow_packed(const float *dst, long long ld, const float *f32, int cols, const struct bk_attn_seq *s,
                          const int *from, int n_seq)
{
    seq_runs(s, from, n_seq, [&](size_t p, size_t a, size_t n) {
        act_narrow((unsigned short *)dst + a * ld, ld, f32 + p * cols, cols, n, cols, false);
    });
}
/* The backward's fp32 copies of the sequences' activation keys and values
 * at *ws, and zeroed dk, dv: a host copy of s pointing at them */
static struct bk_attn_seq *acts_kv(const struct bk_attn_seq *s, int n_seq, int kvd, float **ws)
{
    struct bk_attn_seq *w = (struct bk_attn_seq *)malloc((size_t)(n_seq ? n_seq : 1) * sizeof *w);
    if (!w)
        fatal("attention", "out of host memory");
    memcpy(w, s, (size_t)n_seq * sizeof *w);
    for (int i = 0; i < n_seq; i++) {
        if (!is_act(s[i].k))
            continue;
        size_t ctx = (size_t)s[i].pos + s[i].n;
        w[i].k = region(ws, s[i].k, s[i].kv_stride, ctx, kvd, true);
        w[i].v = region(ws, s[i].v, s[i].kv_stride, ctx, kvd, true);
        w[i].dk = region(ws, s[i].dk, s[i].kv_stride, ctx, kvd, false);
        w[i].dv = region(ws, s[i].dv, s[i].kv_stride, ctx, kvd, false);
        CU(cudaMemsetAsync(w[i].dk, 0, 2 * ctx * kvd * sizeof(float), cu_stream));
        w[i].kv_stride = kvd;
    }
    return w;
}
static size_t acts_kv_floats(const struct bk_attn_seq *s, int n_seq, int kvd)
{
    size_t n = 0;
    for (int i = 0; i < n_seq; i++)
        if (is_act(s[i].k))
            n += 4 * ((size_t)s[i].pos + s[i].n) * kvd;
    return n;
}

static void cu_attention(float *out, int out_stride, const float *q, int q_stride, const struct bk_attn_seq *s,
                         int n_seq, int n_heads, int n_kv, int hd, float scale)
{
    check_hd(hd);
    same_kind("attention", q, out);
    if (!is_act(q)) {
        attention_f32(out, out_stride, q, q_stride, s, n_seq, n_heads, n_kv, hd, scale);
        return;
    }
    /* activation keys and values are bf16 like a bf16 cache's, and are
     * read the same way: by the tensor-core kernels' copies and the
     * decode kernels as they are, widened by widen_kv for the others */
    struct bk_attn_seq *w = (struct bk_attn_seq *)malloc((size_t)(n_seq ? n_seq : 1) * sizeof *w);
    if (!w)
        fatal("attention", "out of host memory");
    for (int i = 0; i < n_seq; i++) {
        same_kind("attention", s[i].k, s[i].v);
        w[i] = s[i];
        w[i].kv_bf16 = s[i].kv_bf16 || is_act(s[i].k);
    }
    /* the tensor-core kernels and the split decode kernel read and write
     * activations themselves */
    int nt, no;
    struct bk_attn_seq *t = seqs_by_route(w, n_seq, n_heads, hd, false, BY_TC, &nt);
    attn_tc_fwd(out, out_stride, q, q_stride, t, nt, n_heads, n_kv, hd, scale);
    free(t);
    struct bk_attn_seq *o = seqs_by_route(w, n_seq, n_heads, hd, false, BY_TC, &no, true);
    int nd = attn_split_decodes(out, out_stride, q, q_stride, o, no, n_heads, n_kv, hd, scale);
    /* the rest through fp32 copies of q and out */
    struct bk_attn_seq *r = o + nd;
    int nr = no - nd, qw = n_heads * hd;
    size_t rows;
    int *from = pack_rows(r, nr, &rows);
    float *ws = (float *)workspace(WS_ACT32, 2 * rows * qw * sizeof(float));
    float *q32 = packed_region(&ws, q, q_stride, qw, r, from, nr, rows, true);
    float *o32 = packed_region(&ws, out, out_stride, qw, r, from, nr, rows, false);
    attention_f32(o32, qw, q32, qw, r, nr, n_heads, n_kv, hd, scale);
    narrow_packed(out, out_stride, o32, qw, r, from, nr);
    free(from);
    free(o);
    free(w);
}

static void cu_attention_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                             const float *out, int out_stride, const struct bk_attn_seq *s, int n_seq, int n_heads,
                             int n_kv, int hd, float scale)
{
    check_hd(hd);
    for (int i = 0; i < n_seq; i++) {
        if (s[i].kv_bf16)
            fatal("attention_bwd", "a bf16 KV cache has no backward");
        same_kind("attention_bwd", s[i].k, s[i].v);
        same_kind("attention_bwd", s[i].k, s[i].dk);
        same_kind("attention_bwd", s[i].dk, s[i].dv);
    }
    same_kind("attention_bwd", q, dq);
    same_kind("attention_bwd", q, dout);
    same_kind("attention_bwd", q, out);
    if (!is_act(q)) {
        attention_bwd_f32(dq, q_stride, dout, dout_stride, q, out, out_stride, s, n_seq, n_heads, n_kv, hd, scale);
        return;
    }
    int kvd = n_kv * hd, nt, no;
    struct bk_attn_seq *t = seqs_by_route(s, n_seq, n_heads, hd, true, BY_TC, &nt);
    attn_tc_bwd(dq, q_stride, dout, dout_stride, q, out, out_stride, t, nt, n_heads, n_kv, hd, scale);
    free(t);
    struct bk_attn_seq *o = seqs_by_route(s, n_seq, n_heads, hd, true, BY_TC, &no, true);
    int qw = n_heads * hd;
    size_t rows;
    int *from = pack_rows(o, no, &rows);
    float *ws = (float *)workspace(WS_ACT32, (4 * rows * qw + acts_kv_floats(o, no, kvd)) * sizeof(float));
    float *q32 = packed_region(&ws, q, q_stride, qw, o, from, no, rows, true);
    float *o32 = packed_region(&ws, out, out_stride, qw, o, from, no, rows, true);
    float *do32 = packed_region(&ws, dout, dout_stride, qw, o, from, no, rows, true);
    float *dq32 = packed_region(&ws, dq, q_stride, qw, o, from, no, rows, false);
    struct bk_attn_seq *w = acts_kv(o, no, kvd, &ws);
    attention_bwd_f32(dq32, qw, do32, qw, q32, o32, qw, w, no, n_heads, n_kv, hd, scale);
    narrow_packed(dq, q_stride, dq32, qw, o, from, no);
    free(from);
    for (int i = 0; i < no; i++) {
        if (!is_act(o[i].k))
            continue;
        size_t ctx = (size_t)o[i].pos + o[i].n;
        act_narrow((unsigned short *)o[i].dk, o[i].kv_stride, w[i].dk, kvd, ctx, kvd, true);
        act_narrow((unsigned short *)o[i].dv, o[i].kv_stride, w[i].dv, kvd, ctx, kvd, true);
    }
    free(w);
    free(o);
}

int cuda_decode_mode(const char *name)
{
    decode_mode = mode_index(name, decode_modes);
    return decode_mode < 0 ? -1 : 0;
}
bool cuda_split_decode(void) { return split_decode_on(); }

int cuda_attention_mode(const char *name)
{
    attn_mode = mode_index(name, attn_modes);
    return attn_mode < 0 ? -1 : 0;
}

/* what the device line says of the attention (the GPU tests read it) */
const char *cuda_attention_desc(void)
{
    static const char *const tc[] = {"tensor-core+cuBLAS+tiled", "tensor-core (cp.async)+cuBLAS+tiled",
                                     "tensor-core (cp.async, wide)+cuBLAS+tiled"};
    if (gemm_bf16 && (tc_wanted(false) || tc_wanted(true)))
        return tc[attn_tc_kind()];
    return attn_mode <= ATTN_CUBLAS ? "cuBLAS+tiled" : attn_mode == ATTN_TILED ? "tiled" : "simple";
}

void cuda_attention_ops(struct backend *b)
{
    b->attention = STAMPED(cu_attention);
    b->attention_bwd = STAMPED(cu_attention_bwd);
    b->kv_append = STAMPED(attn_kv_append);   /* reads activations (bf16) itself */
    b->rope_kv_append = STAMPED(attn_rope_kv_append);
    b->attn_scratch = cu_attn_scratch;   /* writes nothing of the caller's: not STAMPED */
}
