/* The forward pass, top to bottom: embed, n x (attention block, MLP block),
 * final norm, then the LM head (log-probs, chunked over rows so that a large
 * vocabulary never needs [tokens x vocab] logits at once) or the score head.
 * The same code serves training (every layer's activations kept for the
 * backward), scoring (one reused set) and generation (K/V in a kv_cache). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "model_impl.h"

/* A sequence of at most this many new tokens (a decode step) goes through
 * the row-invariant matmul_rows when the model is batch-invariant. */
#define FEW_ROWS 4

/* Whether linear() takes every row of the batch (n = the batch's T) in one
 * matmul_rows call: a decode step's few rows, or a batch-invariant model's
 * batch of short sequences only (packed from row 0) */
static bool rows_whole(const struct model *m)
{
    const struct model_acts *a = m->acts;
    if (!m->batch_invariant)
        return a->T <= FEW_ROWS;
    for (int s = 0; s < a->n_seq; s++)
        if (a->seq_len[s] > FEW_ROWS)
            return false;
    return a->n_seq > 0;
}

/* out[n, dout] = in[n, din] @ w^T (+ b): HF's nn.Linear with w [out, in].
 * sgemm's rounding of a row depends on the other rows of the call (its
 * kernels and thread split change with the row count), so when the model is
 * batch-invariant each sequence gets its own call, and a decode step's few
 * rows use matmul_rows: a sequence's results are then the same bits whatever
 * else is in the batch. Where the backend's matmul rows do not depend on
 * the row count (matmul_invariant), a run of sequences shares one call. */
static void linear(const struct model *m, float *out, const float *in, const float *w,
                   const float *b, int n, int din, int dout)
{
    const struct model_acts *a = m->acts;
    const struct backend *bk = m->bk;
    if (rows_whole(m)) {                /* a decode step: faster than sgemm here */
        bk->matmul_rows(out, in, w, n, dout, din);
    } else if (!m->batch_invariant) {
        bk->matmul(false, true, n, dout, din, 1.0f, in, din, w, din, 0.0f, out, dout);
    } else {
        for (int s = 0; s < a->n_seq;) {
            /* a run of consecutive short sequences is one matmul_rows call;
             * of long ones, one matmul call where the rows are invariant */
            bool few = a->seq_len[s] <= FEW_ROWS;
            int s1 = s, rows = 0;
            while (s1 < a->n_seq && (a->seq_len[s1] <= FEW_ROWS) == few && (s1 == s || few || bk->matmul_invariant))
                rows += a->seq_len[s1++];
            size_t r = (size_t)a->seq_row[s];
            if (few)
                bk->matmul_rows(act_at(m, out, r * dout), act_at(m, in, r * din), w, rows, dout, din);
            else
                bk->matmul(false, true, rows, dout, din, 1.0f, act_at(m, in, r * din), din, w, din, 0.0f,
                           act_at(m, out, r * dout), dout);
            s = s1;
        }
    }
    if (b)
        bk->add_bias(out, b, n, dout);
}

/* Bytes from a KV cache's start to the first position of slot's layer l. */
static size_t kv_offset(const struct kv_cache *c, int slot, int l)
{
    return ((size_t)slot * c->n_layers + l) * c->max_len * c->kv_dim * kv_value_bytes(c);
}

/* Point each sequence's attention at its keys and values: the batch's own
 * rows (training, scoring) or its cache slot (where layer_forward appends
 * the new rows). */
static void attn_sources(struct model *m, struct layer_acts *la, int l,
                         struct kv_cache *c, const int *slots)
{
    struct model_acts *a = m->acts;
    size_t poff = 0;
    const float *k_new = act_at(m, la->qkv, m->q_dim), *v_new = act_at(m, k_new, m->kv_dim);
    for (int s = 0; s < a->n_seq; s++) {
        struct bk_attn_seq *q = &a->seqs[s];
        q->row = a->seq_row[s];
        q->n = a->seq_len[s];
        q->pos = a->seq_pos[s];
        size_t scratch = model_attn_scratch(m, q->n, q->pos, false);
        q->p = scratch ? a->p + poff : NULL;
        q->lse = la->lse + (size_t)q->row * m->n_heads;
        q->dk = q->dv = q->dp = NULL;
        poff += scratch;
        q->kv_bf16 = c && c->bf16;
        if (!c) {
            q->k = act_at(m, k_new, (size_t)q->row * m->qkv_dim);
            q->v = act_at(m, v_new, (size_t)q->row * m->qkv_dim);
            q->kv_stride = m->qkv_dim;
            continue;
        }
        size_t base = kv_offset(c, slots[s], l);
        q->k = (const float *)((const char *)c->k + base);
        q->v = (const float *)((const char *)c->v + base);
        q->kv_stride = c->kv_dim;
    }
}

/* One decoder layer: x_out = x2 + mlp(norm(x2)), x2 = x + attn(norm(x)),
 * except that each residual add is left to the norm that reads its sum
 * (add_rmsnorm, one pass): x_out gets mlp(norm(x2)) alone, and the next
 * layer's first norm (or the final norm) adds x2 into it. res_in is that
 * pending x2 of the previous layer, NULL for the first (x is the embedding).
 * x_out may alias la->x (inference reuses one buffer set). */
static void layer_forward(struct model *m, int l, struct layer_acts *la, const float *res_in, float *x_out,
                          struct kv_cache *c, const int *slots)
{
    const struct backend *bk = m->bk;
    const struct layer_tensors *w = &m->w.layer[l];
    struct model_acts *a = m->acts;
    int T = a->T, H = m->H;
    float eps = m->cfg.rms_norm_eps;

    if (res_in)
        bk->add_rmsnorm(la->xn1, la->rstd1, la->x, res_in, w->ln1, T, H, eps);
    else
        bk->rmsnorm(la->xn1, la->rstd1, la->x, w->ln1, T, H, eps);
    /* q, k, v in one matmul: their weights (and biases) are adjacent in w_mem */
    linear(m, la->qkv, la->xn1, w->wq, w->bq, T, H, m->qkv_dim);
    /* q's heads and k's are adjacent in a row (q | k | v): one call rotates
     * both, and with a cache also appends the rotated k and v to it */
    attn_sources(m, la, l, c, slots);
    if (c)
        bk->rope_kv_append(la->qkv, m->qkv_dim, a->d_pos, m->n_heads, m->n_kv, m->hd, m->rope_cos, m->rope_sin,
                           a->seqs, a->n_seq);
    else
        bk->rope(la->qkv, m->qkv_dim, a->d_pos, T, m->n_heads + m->n_kv, m->hd, m->rope_cos, m->rope_sin, false);
    bk->attention(la->att, m->q_dim, la->qkv, m->qkv_dim, a->seqs, a->n_seq, m->n_heads, m->n_kv,
                  m->hd, 1.0f / sqrtf((float)m->hd));
    linear(m, la->x2, la->att, w->wo, w->bo, T, m->q_dim, H);
    bk->add_rmsnorm(la->xn2, la->rstd2, la->x2, la->x, w->ln2, T, H, eps);
    /* gate | up, adjacent too; in a decode step SwiGLU may go into the
     * product (gu, which only the backward reads, then unwritten) */
    if (c && !w->bg && rows_whole(m))
        bk->matmul_rows_swiglu(la->h, la->gu, la->xn2, w->wg, T, m->ffn, H);
    else {
        linear(m, la->gu, la->xn2, w->wg, w->bg, T, H, 2 * m->ffn);
        bk->swiglu(la->h, la->gu, T, m->ffn);
    }
    linear(m, x_out, la->h, w->wd, w->bd, T, m->ffn, H);
}

/* Gather hidden rows a->rows[k0..k0+n) into a->hg and compute their logits in a->chunk. */
void model_head_logits(struct model *m, int k0, int n)
{
    struct model_acts *a = m->acts;
    m->bk->gather_rows(a->hg, a->hf, a->d_rows + k0, n, m->H);
    m->bk->matmul(false, true, n, m->V, m->H, 1.0f, a->hg, m->H, m->w.lm_head, m->H,
                  0.0f, a->chunk, m->V);
}

void model_ints_upload(const struct model *m, int *dev, const int *host, int n)
{
    if (!m->bk->host && n > 0)
        m->bk->upload(dev, host, (size_t)n * sizeof(int));
}

static void head_plan(struct model *m, bool all_rows);

/* The LM head's work list: rows with a target (or all rows, for logits),
 * cut into chunks of at most Tc rows; with batch invariance a chunk never
 * spans two sequences, so a sequence's chunks depend on it alone (unless
 * the backend's matmul rows are invariant anyway). */
void model_head_plan(struct model *m, bool all_rows)
{
    head_plan(m, all_rows);
    struct model_acts *a = m->acts;
    model_ints_upload(m, a->d_rows, a->rows, a->n_rows);
    model_ints_upload(m, a->d_gtargets, a->gtargets, a->n_rows);
}

static void head_plan(struct model *m, bool all_rows)
{
    struct model_acts *a = m->acts;
    a->n_rows = a->n_chunks = 0;
    for (int s = 0; s < a->n_seq; s++) {
        int in_chunk = a->Tc;                       /* forces a new chunk */
        if ((!m->batch_invariant || m->bk->matmul_invariant) && s > 0 && a->n_chunks > 0)
            in_chunk = a->chunk_len[a->n_chunks - 1];
        for (int t = a->seq_row[s]; t < a->seq_row[s] + a->seq_len[s]; t++) {
            if (!all_rows && a->targets[t] < 0)
                continue;
            if (in_chunk == a->Tc) {
                a->chunk_start[a->n_chunks] = a->n_rows;
                a->chunk_len[a->n_chunks++] = 0;
                in_chunk = 0;
            }
            a->chunk_len[a->n_chunks - 1]++;
            in_chunk++;
            a->gtargets[a->n_rows] = a->targets[t];
            a->rows[a->n_rows++] = t;
        }
    }
}

/* Log-probs of the targets (and the full logits when asked), chunk by chunk. */
static void lm_head_forward(struct model *m, bool want_logits)
{
    struct model_acts *a = m->acts;
    model_head_plan(m, want_logits);
    m->bk->zero(a->logp, a->T);
    for (int c = 0; c < a->n_chunks; c++) {
        int k0 = a->chunk_start[c], n = a->chunk_len[c];
        model_head_logits(m, k0, n);
        if (want_logits)
            for (int k = 0; k < n; k++)
                m->bk->copy(a->logits + (size_t)a->rows[k0 + k] * m->V, a->chunk + (size_t)k * m->V, m->V);
        m->bk->logsoftmax(a->lse + k0, a->glogp + k0, a->chunk, a->d_gtargets + k0, n, m->V);
    }
    m->bk->scatter_add_rows(a->logp, a->glogp, a->d_rows, a->n_rows, 1);
}

/* score[s] = hidden state of sequence s's last token @ score^T */
static void score_head_forward(struct model *m, float *out)
{
    struct model_acts *a = m->acts;
    int nl = m->cfg.num_labels;
    for (int s = 0; s < a->n_seq; s++) {
        int r = a->seq_row[s] + a->seq_len[s] - 1;
        m->bk->matmul(false, true, 1, nl, m->H, 1.0f, act_at(m, a->hf, (size_t)r * m->H), m->H,
                      m->w.score, m->H, 0.0f, out + (size_t)s * nl, nl);
    }
}

/* Embed, run the layers, final norm. */
static void trunk_forward(struct model *m, struct kv_cache *c, const int *slots)
{
    struct model_acts *a = m->acts;
    bool train = a->train;
    m->bk->embed(a->layer[0].x, m->w.embed, a->d_tokens, a->T, m->H);
    const float *res = NULL;            /* the previous layer's x2, still to be added */
    for (int l = 0; l < m->L; l++) {
        struct layer_acts *la = &a->layer[train ? l : 0];
        float *x_out = l + 1 == m->L ? a->xf : a->layer[train ? l + 1 : 0].x;
        layer_forward(m, l, la, res, x_out, c, slots);
        res = la->x2;
    }
    m->bk->add_rmsnorm(a->hf, a->rstd_f, a->xf, res, m->w.norm, a->T, m->H, m->cfg.rms_norm_eps);
}

static int check_tokens(const struct model *m, const int *tok, int n, int seq, const char *what)
{
    for (int i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= m->V)
            return rl_err("sequence %d: %s %d is %d, outside the vocabulary [0, %d)", seq, what, i, tok[i], m->V);
    return 0;
}

/* Point m->logp, m->scores and m->logits at host memory: the backend's
 * buffers themselves on the CPU, else copies. */
static void results_to_host(struct model *m, bool want_logits)
{
    struct model_acts *a = m->acts;
    const struct backend *bk = m->bk;
    bool score = m->cfg.head == HEAD_SCORE;
    if (bk->host) {
        m->logp = a->logp;
        m->scores = score ? a->scores : NULL;
        m->logits = want_logits ? a->logits : NULL;
        return;
    }
    bk->download(a->h_logp, a->logp, (size_t)a->T * sizeof(float));
    m->logp = a->h_logp;
    m->scores = m->logits = NULL;
    if (score) {
        bk->download(a->h_scores, a->scores, (size_t)a->n_seq * m->cfg.num_labels * sizeof(float));
        m->scores = a->h_scores;
    }
    if (want_logits) {
        bk->download(a->h_logits, a->logits, (size_t)a->T * m->V * sizeof(float));
        m->logits = a->h_logits;
    }
}

int model_forward(struct model *m, const struct model_batch *b, int flags)
{
    bool train = flags & MODEL_TRAIN, want_logits = flags & MODEL_LOGITS;
    if (b->n_seq <= 0)
        return rl_err("empty batch");
    if ((b->targets || want_logits) && m->cfg.head != HEAD_LM)
        return rl_err("log-probs and logits need a causal LM head; this model has a score head");
    size_t T = 0, p = 0;
    int maxlen = 0;
    for (int s = 0; s < b->n_seq; s++) {
        if (b->len[s] <= 0)
            return rl_err("sequence %d is empty", s);
        if (check_tokens(m, b->tokens + T, b->len[s], s, "token") < 0)
            return -1;
        if (b->targets)
            for (int i = 0; i < b->len[s]; i++)
                if (b->targets[T + i] < -1 || b->targets[T + i] >= m->V)
                    return rl_err("sequence %d: target %d is %d, outside the vocabulary [0, %d)", s, i,
                                  b->targets[T + i], m->V);
        T += b->len[s];
        size_t fwd = model_attn_scratch(m, b->len[s], 0, false);
        size_t bwd = train ? model_attn_scratch(m, b->len[s], 0, true) : 0;
        p += fwd > bwd ? fwd : bwd;
        if (b->len[s] > maxlen)
            maxlen = b->len[s];
    }
    if (T > (1u << 30))
        return rl_err("batch of %zu tokens is too large", T);
    if (model_acts_reserve(m, (int)T, b->n_seq, p, train, want_logits) < 0 ||
        model_rope_reserve(m, maxlen) < 0)
        return -1;
    struct model_acts *a = m->acts;
    a->T = (int)T;
    a->n_seq = b->n_seq;
    a->train = train;
    a->has_targets = b->targets != NULL;
    memcpy(a->tokens, b->tokens, T * sizeof(int));
    for (size_t t = 0; t < T; t++)
        a->targets[t] = b->targets ? b->targets[t] : -1;
    for (int s = 0, row = 0; s < b->n_seq; row += b->len[s++]) {
        a->seq_row[s] = row;
        a->seq_len[s] = b->len[s];
        a->seq_pos[s] = 0;
        for (int i = 0; i < b->len[s]; i++)
            a->pos[row + i] = i;
    }

    model_ints_upload(m, a->d_tokens, a->tokens, a->T);
    model_ints_upload(m, a->d_pos, a->pos, a->T);

    trunk_forward(m, NULL, NULL);
    m->n_tok = a->T;
    m->n_seq = a->n_seq;
    m->hidden = a->hf;
    if (m->cfg.head == HEAD_SCORE) {
        score_head_forward(m, a->scores);
    } else if (b->targets || want_logits) {
        lm_head_forward(m, want_logits);
    } else {
        m->bk->zero(a->logp, a->T);
        a->n_rows = 0;
    }
    results_to_host(m, want_logits);
    return 0;
}

/* ---- KV cache ---- */

struct kv_cache *kv_cache_new(const struct model *m, int n_slots, int max_len)
{
    if (n_slots <= 0 || max_len <= 0)
        return rl_err("KV cache of %d slots x %d tokens", n_slots, max_len), NULL;
    struct kv_cache *c = rl_calloc(1, sizeof *c);
    c->bk = m->bk;
    c->n_slots = n_slots;
    c->max_len = max_len;
    c->n_layers = m->L;
    c->kv_dim = m->kv_dim;
    /* kv_dim is even wherever RoPE is (head_dim is): bf16 rows then keep the
     * 4-byte alignment that bk->copy's floats need in kv_cache_fork */
    c->bf16 = m->bk->kv_bf16 && m->kv_dim % 2 == 0;
    c->len = rl_calloc(n_slots, sizeof *c->len);
    size_t bytes = kv_cache_bytes(c);
    c->k = m->bk->alloc(bytes / 2);
    c->v = m->bk->alloc(bytes / 2);
    if (!c->k || !c->v) {
        kv_cache_free(c);
        return rl_err("out of memory for a KV cache of %d x %d tokens (%.1f GiB)", n_slots, max_len,
                      bytes / 1073741824.0), NULL;
    }
    return c;
}

void kv_cache_free(struct kv_cache *c)
{
    if (!c)
        return;
    c->bk->free(c->k);
    c->bk->free(c->v);
    free(c->len);
    free(c);
}

size_t kv_cache_bytes(const struct kv_cache *c) { return 2 * kv_offset(c, c->n_slots, 0); }

void kv_cache_clear(struct kv_cache *c, int slot) { c->len[slot] = 0; }

void kv_cache_fork(struct kv_cache *c, int dst, int src, int len)
{
    if (dst != src) {
        /* the bits as floats: a bf16 slot's len x kv_dim values are an even count */
        size_t n = (size_t)len * c->kv_dim * kv_value_bytes(c) / sizeof(float);
        for (int l = 0; l < c->n_layers; l++) {
            size_t d = kv_offset(c, dst, l), s = kv_offset(c, src, l);
            c->bk->copy((float *)((char *)c->k + d), (const float *)((const char *)c->k + s), n);
            c->bk->copy((float *)((char *)c->v + d), (const float *)((const char *)c->v + s), n);
        }
    }
    c->len[dst] = len;
}

/* model_step up to the last hidden states */
static int step_trunk(struct model *m, struct kv_cache *c, int n, const int *slots, const int *ntok,
                      const int *tokens)
{
    if (n <= 0)
        return rl_err("model_step: no sequences");
    if (c->n_layers != m->L || c->kv_dim != m->kv_dim)
        return rl_err("model_step: the KV cache was made for another model");
    size_t T = 0, p = 0;
    int maxpos = 0;
    bool decode = true;               /* every sequence adds at most FEW_ROWS tokens */
    for (int s = 0; s < n; s++) {
        if (slots[s] < 0 || slots[s] >= c->n_slots)
            return rl_err("model_step: slot %d out of range [0, %d)", slots[s], c->n_slots);
        for (int r = 0; r < s; r++)
            if (slots[r] == slots[s])
                return rl_err("model_step: slot %d given twice", slots[s]);
        if (ntok[s] <= 0)
            return rl_err("model_step: sequence %d has no new tokens", s);
        int end = c->len[slots[s]] + ntok[s];
        if (end > c->max_len)
            return rl_err("slot %d: %d tokens exceed the KV cache length %d", slots[s], end, c->max_len);
        if (check_tokens(m, tokens + T, ntok[s], s, "token") < 0)
            return -1;
        T += ntok[s];
        decode = decode && ntok[s] <= FEW_ROWS;
        /* a decode step reserves the scratch of the slot's last position:
         * it grows by a row every step, and each growth reallocates every
         * activation buffer (20 ms a step on an H100 after training had
         * sized them) */
        p += model_attn_scratch(m, ntok[s], ntok[s] <= FEW_ROWS ? c->max_len - ntok[s] : c->len[slots[s]], false);
        if (end > maxpos)
            maxpos = end;
    }
    if (model_acts_reserve(m, (int)T, n, p, false, false) < 0 || model_rope_reserve(m, maxpos) < 0)
        return -1;
    struct model_acts *a = m->acts;
    a->T = (int)T;
    a->n_seq = n;
    a->train = false;
    a->has_targets = false;
    memcpy(a->tokens, tokens, T * sizeof(int));
    for (int s = 0, row = 0; s < n; row += ntok[s++]) {
        a->seq_row[s] = row;
        a->seq_len[s] = ntok[s];
        a->seq_pos[s] = c->len[slots[s]];
        for (int i = 0; i < ntok[s]; i++)
            a->pos[row + i] = a->seq_pos[s] + i;
    }

    model_ints_upload(m, a->d_tokens, a->tokens, a->T);
    model_ints_upload(m, a->d_pos, a->pos, a->T);

    /* a decode step's launches as one graph where the backend has them:
     * its kernels are short, and the host's launches can outlast them */
    bool graph = m->bk->graph_begin && decode;
    if (graph)
        m->bk->graph_begin();
    trunk_forward(m, c, slots);
    if (graph)
        m->bk->graph_end();
    for (int s = 0; s < n; s++)
        c->len[slots[s]] += ntok[s];
    m->n_tok = a->T;
    m->n_seq = n;
    m->hidden = a->hf;
    m->logp = NULL;
    m->logits = NULL;
    return 0;
}

/* The LM head's rows of a step: each sequence's last new token */
static void step_head_plan(struct model *m, int n)
{
    struct model_acts *a = m->acts;
    a->n_rows = n;
    for (int s = 0; s < n; s++)
        a->rows[s] = a->seq_row[s] + a->seq_len[s] - 1;
    model_ints_upload(m, a->d_rows, a->rows, n);
}

/* Their logits k0..k0+nr (at most a->Tc rows) into a->chunk: row-invariant
 * matmul_rows when batch-invariant (at any row count) */
static void step_head_logits(struct model *m, int n, int k0, int nr)
{
    struct model_acts *a = m->acts;
    if (m->batch_invariant || n <= FEW_ROWS) {
        m->bk->gather_rows(a->hg, a->hf, a->d_rows + k0, nr, m->H);
        m->bk->matmul_rows(a->chunk, a->hg, m->w.lm_head, nr, m->V, m->H);
    } else {
        model_head_logits(m, k0, nr);
    }
}

int model_step(struct model *m, struct kv_cache *c, int n, const int *slots, const int *ntok,
               const int *tokens, float *logits)
{
    if (step_trunk(m, c, n, slots, ntok, tokens))
        return -1;
    struct model_acts *a = m->acts;
    if (!logits)
        return 0;
    if (m->cfg.head == HEAD_SCORE) {
        score_head_forward(m, a->scores);
        m->bk->download(logits, a->scores, (size_t)n * m->cfg.num_labels * sizeof(float));
        return 0;
    }
    step_head_plan(m, n);
    for (int k0 = 0; k0 < n; k0 += a->Tc) {
        int nr = n - k0 < a->Tc ? n - k0 : a->Tc;
        step_head_logits(m, n, k0, nr);
        m->bk->download(logits + (size_t)k0 * m->V, a->chunk, (size_t)nr * m->V * sizeof(float));
    }
    return 0;
}

/* Backend memory for a step's draws: n uniforms in, n ids and log-probs out
 * (the caller's arrays themselves on a host backend) */
static int draw_reserve(struct model *m, int n)
{
    struct model_acts *a = m->acts;
    if (m->bk->host || n <= a->draw_cap)
        return 0;
    if (a->draw_mem)
        m->bk->free(a->draw_mem);
    a->draw_cap = 0;
    if (!(a->draw_mem = m->bk->alloc((size_t)n * (2 * sizeof(double) + sizeof(int)))))
        return rl_err("out of memory for the draws of %d sequences", n);
    a->draw_cap = n;
    return 0;
}

int model_step_draw(struct model *m, struct kv_cache *c, int n, const int *slots, const int *ntok,
                    const int *tokens, const struct sampler *sampler, const double *u, int *tok, double *logp1)
{
    if (m->cfg.head != HEAD_LM)
        return rl_err("model_step_draw: drawing tokens needs a causal LM head; this model has a score head");
    if (step_trunk(m, c, n, slots, ntok, tokens) || draw_reserve(m, n))
        return -1;
    struct model_acts *a = m->acts;
    const struct backend *bk = m->bk;
    const double *du = u;
    double *dlp = logp1;
    int *dtok = tok;
    if (!bk->host) {
        double *mem = a->draw_mem;
        bk->upload(mem, u, (size_t)n * sizeof *u);
        du = mem;
        dlp = mem + a->draw_cap;
        dtok = (int *)(dlp + a->draw_cap);
    }
    step_head_plan(m, n);
    for (int k0 = 0; k0 < n; k0 += a->Tc) {
        int nr = n - k0 < a->Tc ? n - k0 : a->Tc;
        step_head_logits(m, n, k0, nr);
        bk->sample_rows(dtok + k0, dlp + k0, a->chunk, du + k0, nr, m->V, sampler);
    }
    if (!bk->host) {
        bk->download(tok, dtok, (size_t)n * sizeof *tok);
        bk->download(logp1, dlp, (size_t)n * sizeof *logp1);
    }
    return 0;
}

/* ---- sequence log-probs (DESIGN.md: sum over response tokens of
 * log_softmax(logits at t-1)[y_t], prompt masked, fp32) ---- */
int model_response_logps(struct model *m, int n, const int *const *prompt, const int *plen,
                         const int *const *resp, const int *rlen, double *out)
{
    size_t T = 0;
    int ns = 0;
    for (int i = 0; i < n; i++) {
        if (rlen[i] > 0 && plen[i] <= 0)
            return rl_err("sequence %d: a response needs a non-empty prompt to be conditioned on", i);
        if (rlen[i] > 0) {
            T += (size_t)plen[i] + rlen[i] - 1;     /* the last token is only a target */
            ns++;
        }
    }
    for (int i = 0; i < n; i++)
        out[i] = 0;
    if (ns == 0)
        return 0;
    int *len = rl_malloc(ns * sizeof *len), *tok = rl_malloc(T * sizeof *tok), *tgt = rl_malloc(T * sizeof *tgt);
    size_t t = 0;
    for (int i = 0, s = 0; i < n; i++) {
        if (rlen[i] <= 0)
            continue;
        len[s++] = plen[i] + rlen[i] - 1;
        for (int j = 0; j < plen[i]; j++, t++) {
            tok[t] = prompt[i][j];
            tgt[t] = j + 1 < plen[i] ? -1 : resp[i][0];
        }
        for (int j = 0; j + 1 < rlen[i]; j++, t++) {
            tok[t] = resp[i][j];
            tgt[t] = resp[i][j + 1];
        }
    }
    struct model_batch b = {ns, len, tok, tgt};
    int rc = model_forward(m, &b, 0);
    if (rc == 0) {
        t = 0;
        for (int i = 0, s = 0; i < n; i++) {
            if (rlen[i] <= 0)
                continue;
            double sum = 0;
            for (int j = 0; j < len[s]; j++)
                sum += m->logp[t + j];
            out[i] = sum;
            t += len[s++];
        }
    }
    free(len);
    free(tok);
    free(tgt);
    return rc;
}
