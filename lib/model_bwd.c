/* The backward pass: the forward of model_fwd.c read bottom to top. Each
 * step turns the gradient of its output into the gradient of its input and
 * adds its parameters' gradients into m->g (so micro-batches accumulate;
 * after model_zero_grad the layers' matrices are written, not added to).
 * The LM head recomputes its logits chunk by chunk from the saved final hidden
 * states and logsumexps instead of keeping [tokens x vocab] logits. */
#include <math.h>
#include <string.h>

#include "err.h"
#include "model_impl.h"

/* Backward of out = in @ w^T + b: din (= or += by beta) dout @ w,
 * dw (= or +=, by m->grad_unwritten) dout^T @ in, db += column sums of dout. */
static void linear_bwd(const struct model *m, float *din, float beta, float *dw, float *db,
                       const float *dout, const float *in, const float *w, int n, int d_in, int d_out)
{
    const struct backend *bk = m->bk;
    /* the step's first backward writes dw (model_zero_grad left it) */
    float dw_beta = m->grad_unwritten ? 0.0f : 1.0f;
    bk->matmul(false, false, n, d_in, d_out, 1.0f, dout, d_out, w, d_in, beta, din, d_in);
    bk->matmul(true, false, d_out, d_in, n, 1.0f, dout, d_out, in, d_in, dw_beta, dw, d_in);
    if (db)
        bk->bias_bwd(db, dout, n, d_out);
}

/* dres: in = d loss / d layer output; out = d loss / d layer input. */
static void layer_backward(struct model *m, int l, float *dres)
{
    const struct backend *bk = m->bk;
    struct model_acts *a = m->acts;
    const struct layer_acts *la = &a->layer[l];
    const struct layer_tensors *w = &m->w.layer[l];
    struct layer_tensors *g = &m->g.layer[l];
    int T = a->T, H = m->H, F = m->ffn;

    /* MLP block: out = x2 + down(silu(gate(xn2)) * up(xn2)) */
    linear_bwd(m, a->dh, 0.0f, g->wd, g->bd, dres, la->h, w->wd, T, F, H);
    bk->swiglu_bwd(a->dgu, a->dh, la->gu, T, F);
    linear_bwd(m, a->dxn, 0.0f, g->wg, g->bg, a->dgu, la->xn2, w->wg, T, H, 2 * F);
    bk->rmsnorm_bwd(dres, g->ln2, a->dxn, la->x2, w->ln2, la->rstd2, T, H);

    /* attention block: x2 = x + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1))) */
    linear_bwd(m, a->datt, 0.0f, g->wo, g->bo, dres, la->att, w->wo, T, m->q_dim, H);
    bk->zero(a->dqkv, (size_t)T * m->qkv_dim);         /* dk, dv accumulate */
    size_t poff = 0;
    for (int s = 0; s < a->n_seq; s++) {
        struct bk_attn_seq *q = &a->seqs[s];
        q->row = a->seq_row[s];
        q->n = a->seq_len[s];
        q->pos = 0;
        size_t scratch = model_attn_scratch(m, q->n, 0, true);
        q->p = scratch ? a->p + poff : NULL;
        q->lse = la->lse + (size_t)q->row * m->n_heads;
        q->dp = scratch ? a->dp + poff : NULL;
        poff += scratch;
        size_t r = (size_t)q->row * m->qkv_dim + m->q_dim;
        q->k = act_at(m, la->qkv, r);
        q->v = act_at(m, q->k, m->kv_dim);
        q->dk = act_at(m, a->dqkv, r);
        q->dv = act_at(m, q->dk, m->kv_dim);
        q->kv_stride = m->qkv_dim;
        q->kv_bf16 = false;
    }
    bk->attention_bwd(a->dqkv, m->qkv_dim, a->datt, m->q_dim, la->qkv, la->att, m->q_dim, a->seqs, a->n_seq,
                      m->n_heads, m->n_kv, m->hd, 1.0f / sqrtf((float)m->hd));
    bk->rope(a->dqkv, m->qkv_dim, a->d_pos, T, m->n_heads + m->n_kv, m->hd, m->rope_cos, m->rope_sin, true);
    linear_bwd(m, a->dxn, 0.0f, g->wq, g->bq, a->dqkv, la->xn1, w->wq, T, H, m->qkv_dim);
    bk->rmsnorm_bwd(dres, g->ln1, a->dxn, la->x, w->ln1, la->rstd1, T, H);
}

/* d loss / d logits = dlogp[t] * (onehot(target) - softmax), recomputed per chunk. */
static void lm_head_backward(struct model *m, const float *dlogp)
{
    const struct backend *bk = m->bk;
    struct model_acts *a = m->acts;
    int H = m->H, V = m->V;
    /* the rows' d/dlogp, in place of their log-probs (in a->logp by now) */
    float *gg = a->glogp, *hg = bk->host ? gg : a->h_g;
    for (int k = 0; k < a->n_rows; k++)
        hg[k] = dlogp[a->rows[k]];
    if (!bk->host)
        bk->upload(gg, hg, (size_t)a->n_rows * sizeof *hg);
    for (int c = 0; c < a->n_chunks; c++) {
        int k0 = a->chunk_start[c], n = a->chunk_len[c];
        model_head_logits(m, k0, n);
        bk->logsoftmax_bwd(a->chunk, a->lse + k0, a->d_gtargets + k0, gg + k0, n, V);
        bk->matmul(false, false, n, H, V, 1.0f, a->chunk, V, m->w.lm_head, H, 0.0f, a->dhg, H);
        bk->matmul(true, false, V, H, n, 1.0f, a->chunk, V, a->hg, H, 1.0f, m->g.lm_head, H);
        bk->scatter_add_rows(a->dhf, a->dhg, a->d_rows + k0, n, H);
    }
}

static void score_head_backward(struct model *m, const float *host_dscore)
{
    struct model_acts *a = m->acts;
    int nl = m->cfg.num_labels, H = m->H;
    m->bk->upload(a->dscore, host_dscore, (size_t)a->n_seq * nl * sizeof(float));
    const float *dscore = a->dscore;
    for (int s = 0; s < a->n_seq; s++) {
        size_t r = (size_t)(a->seq_row[s] + a->seq_len[s] - 1) * H;
        m->bk->matmul(false, false, 1, H, nl, 1.0f, dscore + (size_t)s * nl, nl, m->w.score, H,
                      1.0f, act_at(m, a->dhf, r), H);
        m->bk->matmul(true, false, nl, H, 1, 1.0f, dscore + (size_t)s * nl, nl, act_at(m, a->hf, r), H,
                      1.0f, m->g.score, H);
    }
}

int model_backward(struct model *m, const float *dlogp, const float *dscore, const float *dhidden)
{
    struct model_acts *a = m->acts;
    if (!a->train || a->T == 0)
        return rl_err("model_backward: the last forward did not keep activations (MODEL_TRAIN)");
    if (dlogp && (m->cfg.head != HEAD_LM || !a->has_targets))
        return rl_err("model_backward: d/dlogp given but the forward computed no log-probs");
    if (dscore && m->cfg.head != HEAD_SCORE)
        return rl_err("model_backward: d/dscore given but the model has no score head");
    const struct backend *bk = m->bk;
    int T = a->T, H = m->H;

    if (dhidden && bk->act_bf16) {       /* fp32 in, converted by copy */
        bk->upload(a->stage, dhidden, (size_t)T * H * sizeof(float));
        bk->copy(a->dhf, a->stage, (size_t)T * H);
    } else if (dhidden)
        bk->upload(a->dhf, dhidden, (size_t)T * H * sizeof(float));
    else
        bk->zero(a->dhf, (size_t)T * H);
    if (dlogp)
        lm_head_backward(m, dlogp);
    if (dscore)
        score_head_backward(m, dscore);

    bk->zero(a->dx, (size_t)T * H);
    bk->rmsnorm_bwd(a->dx, m->g.norm, a->dhf, a->xf, m->w.norm, a->rstd_f, T, H);
    for (int l = m->L - 1; l >= 0; l--)
        layer_backward(m, l, a->dx);
    bk->embed_bwd(m->g.embed, a->dx, a->d_tokens, T, H);
    m->grad_unwritten = false;
    return 0;
}
