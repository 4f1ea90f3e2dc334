/* The model's parameters (one flat fp32 array in Hugging Face tensor order),
 * loading and saving checkpoints, RoPE tables and the activation buffers.
 * The forward lives in model_fwd.c, the backward in model_bwd.c. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "fsutil.h"
#include "model_impl.h"
#include "weights_layout.h"

/* ---- the parameter table ---- */

/* Where a tensor of the shared layout (weights_layout.h) lives in a model_tensors. */
static float **role_slot(struct model_tensors *t, const struct hf_tensor *h)
{
    struct layer_tensors *l = h->layer >= 0 ? &t->layer[h->layer] : NULL;
    switch (h->role) {
    case HF_EMBED: return &t->embed;
    case HF_ATTN_NORM: return &l->ln1;
    case HF_Q: return &l->wq;
    case HF_Q_BIAS: return &l->bq;
    case HF_K: return &l->wk;
    case HF_K_BIAS: return &l->bk;
    case HF_V: return &l->wv;
    case HF_V_BIAS: return &l->bv;
    case HF_O: return &l->wo;
    case HF_O_BIAS: return &l->bo;
    case HF_MLP_NORM: return &l->ln2;
    case HF_GATE: return &l->wg;
    case HF_GATE_BIAS: return &l->bg;
    case HF_UP: return &l->wu;
    case HF_UP_BIAS: return &l->bu;
    case HF_DOWN: return &l->wd;
    case HF_DOWN_BIAS: return &l->bd;
    case HF_FINAL_NORM: return &t->norm;
    case HF_LM_HEAD: return &t->lm_head;
    case HF_SCORE: return &t->score;
    }
    return NULL;
}

static bool is_bias(enum hf_role r)
{
    return r == HF_Q_BIAS || r == HF_K_BIAS || r == HF_V_BIAS || r == HF_O_BIAS ||
           r == HF_GATE_BIAS || r == HF_UP_BIAS || r == HF_DOWN_BIAS;
}

/* The table lists the checkpoint's tensors in the shared order
 * (weights_layout.h); m->w and m->g point into the flat arrays by role. In
 * the flat arrays the weights come first, in that order, then the biases, in
 * that order: so q, k, v weights are one [q_dim + 2 kv_dim, H] matrix (and
 * their biases one vector), gate and up one [2F, H] matrix, and the forward
 * does each group in one matmul. Tied embeddings: the LM head is
 * embed_tokens itself, so its gradient adds into the embedding's. */
static void layout_params(struct model *m)
{
    m->n_params_tensors = hf_tensor_count(&m->cfg);
    m->params = rl_calloc(m->n_params_tensors, sizeof *m->params);
    m->by_offset = rl_calloc(m->n_params_tensors, sizeof *m->by_offset);
    m->n_params = 0;
    int placed = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < m->n_params_tensors; i++) {
            struct hf_tensor h;
            hf_tensor_info(&m->cfg, i, &h);
            if (is_bias(h.role) != (pass == 1))
                continue;
            struct model_param *p = &m->params[i];
            snprintf(p->name, sizeof p->name, "%s", h.name);
            p->ndim = h.ndim;
            p->shape[0] = h.shape[0];
            p->shape[1] = h.ndim > 1 ? h.shape[1] : 0;
            p->offset = m->n_params;
            p->numel = (size_t)h.numel;
            p->init = h.init;
            p->role = h.role;
            p->layer = h.layer;
            m->n_params += p->numel;
            m->by_offset[placed++] = i;
        }
}

static void point_params(struct model *m)
{
    for (int i = 0; i < m->n_params_tensors; i++) {
        struct hf_tensor h = {.role = m->params[i].role, .layer = m->params[i].layer};
        *role_slot(&m->w, &h) = m->w_mem + m->params[i].offset;
        *role_slot(&m->g, &h) = m->g_mem + m->params[i].offset;
    }
    if (m->cfg.head == HEAD_LM && m->cfg.tie_word_embeddings) {
        m->w.lm_head = m->w.embed;
        m->g.lm_head = m->g.embed;
    }
}

const struct model_param *model_find_param(const struct model *m, const char *name)
{
    for (int i = 0; i < m->n_params_tensors; i++)
        if (!strcmp(m->params[i].name, name))
            return &m->params[i];
    return NULL;
}

static int check_config(struct model_config *c)
{
#define NEED(cond, field) \
    if (!(cond)) return rl_err("config: invalid or unsupported \"%s\"", field)
    NEED(c->hidden_size > 0, "hidden_size");
    NEED(c->intermediate_size > 0, "intermediate_size");
    NEED(c->num_hidden_layers > 0, "num_hidden_layers");
    NEED(c->num_attention_heads > 0, "num_attention_heads");
    if (c->num_key_value_heads <= 0)
        c->num_key_value_heads = c->num_attention_heads;
    NEED(c->num_attention_heads % c->num_key_value_heads == 0, "num_key_value_heads");
    if (c->head_dim <= 0)
        c->head_dim = c->hidden_size / c->num_attention_heads;
    NEED(c->head_dim > 0 && c->head_dim % 2 == 0, "head_dim");
    NEED(c->vocab_size > 0, "vocab_size");
    NEED(c->rms_norm_eps > 0, "rms_norm_eps");
    NEED(c->rope_theta > 0, "rope_theta");
    if (c->head == HEAD_SCORE && c->num_labels <= 0)
        c->num_labels = 1;
    if (c->rope_type == ROPE_LLAMA3) {
        NEED(c->rope_factor > 0, "rope_scaling.factor");
        NEED(c->rope_high_freq_factor > c->rope_low_freq_factor && c->rope_low_freq_factor > 0,
             "rope_scaling.high_freq_factor");
        NEED(c->rope_original_max_position > 0, "rope_scaling.original_max_position_embeddings");
    }
#undef NEED
    return 0;
}

struct model *model_new(const struct model_config *cfg, const char *device)
{
    const struct backend *bk = backend_get(device);
    if (!bk)
        return NULL;
    struct model *m = rl_calloc(1, sizeof *m);
    m->cfg = *cfg;
    m->bk = bk;
    m->save_dtype = ST_F32;
    m->batch_invariant = true;
    if (check_config(&m->cfg) < 0) {
        free(m);
        return NULL;
    }
    const struct model_config *c = &m->cfg;
    m->H = c->hidden_size;
    m->ffn = c->intermediate_size;
    m->L = c->num_hidden_layers;
    m->V = c->vocab_size;
    m->n_heads = c->num_attention_heads;
    m->n_kv = c->num_key_value_heads;
    m->hd = c->head_dim;
    m->q_dim = m->n_heads * m->hd;
    m->kv_dim = m->n_kv * m->hd;
    m->qkv_dim = m->q_dim + 2 * m->kv_dim;
    m->w.layer = rl_calloc(m->L, sizeof *m->w.layer);
    m->g.layer = rl_calloc(m->L, sizeof *m->g.layer);
    m->acts = rl_calloc(1, sizeof *m->acts);

    layout_params(m);
    m->w_mem = bk->alloc(m->n_params * sizeof(float));
    m->g_mem = bk->alloc(m->n_params * sizeof(float));
    if (!m->w_mem || !m->g_mem) {
        rl_err("out of memory for %zu parameters", m->n_params);
        model_close(m);
        return NULL;
    }
    if (bk->mark_params)                 /* the weights: bf16 copies for the GPU's products */
        bk->mark_params(m->w_mem, m->n_params);
    point_params(m);
    for (int l = 0; l < m->L; l++) {
        const struct layer_tensors *t = &m->w.layer[l];
        size_t H = (size_t)m->H;
        if (t->wk != t->wq + m->q_dim * H || t->wv != t->wk + m->kv_dim * H || t->wu != t->wg + m->ffn * H ||
            (t->bq && (t->bk != t->bq + m->q_dim || t->bv != t->bk + m->kv_dim)) ||
            (t->bg && t->bu != t->bg + m->ffn)) {
            rl_err("internal: layer %d's q/k/v or gate/up tensors are not contiguous", l);
            model_close(m);
            return NULL;
        }
    }
    /* norm weights start at 1 (the identity), like a freshly built HF model */
    for (int i = 0; i < m->n_params_tensors; i++)
        if (m->params[i].init == HF_INIT_ONES) {
            size_t n = m->params[i].numel;
            float *ones = rl_malloc(n * sizeof *ones);
            for (size_t j = 0; j < n; j++)
                ones[j] = 1.0f;
            bk->upload(m->w_mem + m->params[i].offset, ones, n * sizeof *ones);
            free(ones);
        }
    return m;
}

void model_close(struct model *m)
{
    if (!m)
        return;
    model_acts_free(m);
    free(m->acts);
    m->bk->free(m->w_mem);
    m->bk->free(m->g_mem);
    m->bk->free(m->rope_cos);
    m->bk->free(m->rope_sin);
    free(m->params);
    free(m->by_offset);
    free(m->w.layer);
    free(m->g.layer);
    free(m);
}

struct model *model_open(const char *dir, const char *device)
{
    char path[FS_PATH_MAX];
    struct model_config c;
    if (!backend_get(device))          /* a device error is not the config's */
        return NULL;
    if (fs_join(path, sizeof path, dir, "config.json") < 0)
        return NULL;
    if (config_load(path, &c) < 0)
        return NULL;
    struct model *m = model_new(&c, device);
    if (!m) {
        rl_err_prefix("%s", path);
        return NULL;
    }
    struct st_file *f = st_open_dir(dir);
    if (!f) {
        model_close(m);
        return NULL;
    }
    /* the CPU reads straight into place; another backend gets each tensor
     * through a host buffer as large as the largest tensor */
    size_t most = 0;
    for (int i = 0; i < m->n_params_tensors; i++)
        most = m->params[i].numel > most ? m->params[i].numel : most;
    float *stage = m->bk->host ? NULL : rl_malloc(most * sizeof *stage);
    int rc = 0;
    for (int i = 0; i < m->n_params_tensors && rc == 0; i++) {
        const struct model_param *p = &m->params[i];
        float *dst = stage ? stage : m->w_mem + p->offset;
        rc = st_read_f32(f, p->name, dst, p->ndim, p->shape);
        if (rc == 0 && stage)
            m->bk->upload(m->w_mem + p->offset, stage, p->numel * sizeof *stage);
    }
    free(stage);
    const struct st_tensor *e = st_find(f, "model.embed_tokens.weight");
    if (e)
        m->save_dtype = e->dtype;
    st_close(f);
    if (rc < 0) {
        rl_err_prefix("%s", dir);
        model_close(m);
        return NULL;
    }
    return m;
}

int model_save(const struct model *m, const char *dir)
{
    char path[FS_PATH_MAX];
    if (mkdir(dir, 0777) < 0 && errno != EEXIST)
        return rl_errno("%s: cannot create directory", dir);
    struct st_out_tensor *t = rl_calloc(m->n_params_tensors, sizeof *t);
    float *w = m->w_mem, *host = NULL;
    if (!m->bk->host) {
        w = host = rl_malloc(m->n_params * sizeof *host);
        m->bk->download(host, m->w_mem, m->n_params * sizeof *host);
    }
    for (int i = 0; i < m->n_params_tensors; i++) {
        const struct model_param *p = &m->params[i];
        t[i].name = p->name;
        t[i].dtype = m->save_dtype;
        t[i].ndim = p->ndim;
        t[i].shape[0] = p->shape[0];
        t[i].shape[1] = p->shape[1];
        t[i].data = w + p->offset;
    }
    int rc = fs_join(path, sizeof path, dir, "model.safetensors");
    if (rc == 0)
        rc = st_write(path, t, m->n_params_tensors);
    free(t);
    free(host);
    if (rc == 0)
        rc = fs_join(path, sizeof path, dir, "config.json");
    if (rc == 0)
        rc = config_save(path, &m->cfg);
    return rc;
}

void model_param_runs(const struct model *m, int (*group)(const struct model_param *p),
                      void (*fn)(void *ctx, size_t off, size_t n, int group), void *ctx)
{
    int n = m->n_params_tensors;
    for (int i = 0; i < n;) {
        const struct model_param *first = &m->params[m->by_offset[i]];
        int g = group(first);
        size_t off = first->offset, end = off + first->numel;
        for (i++; i < n; i++) {
            const struct model_param *p = &m->params[m->by_offset[i]];
            if (p->offset != end || group(p) != g)
                break;
            end += p->numel;
        }
        fn(ctx, off, end - off, g);
    }
}

/* The tensors whose first gradient in a backward is one product over all
 * of them (model_bwd.c layer_backward: q|k|v, o, gate|up, down). */
static int written_by_backward(const struct model_param *p)
{
    switch (p->role) {
    case HF_Q: case HF_K: case HF_V: case HF_O: case HF_GATE: case HF_UP: case HF_DOWN:
        return 1;
    default:
        return 0;
    }
}
static void zero_run(void *ctx, size_t off, size_t n, int written)
{
    struct model *m = ctx;
    if (!written)
        m->bk->zero(m->g_mem + off, n);
}
void model_zero_grad(struct model *m)
{
    model_param_runs(m, written_by_backward, zero_run, m);
    m->grad_unwritten = true;
}

/* ---- RoPE ----
 * inv_freq and the angles are formed in fp32 exactly as Hugging Face does
 * (so positions far out agree too); cos/sin of each fp32 angle are rounded
 * once from double. */
static void rope_inv_freq(const struct model *m, float *inv)
{
    const struct model_config *c = &m->cfg;
    int half = m->hd / 2;
    for (int i = 0; i < half; i++)
        inv[i] = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)m->hd);
    if (c->rope_type != ROPE_LLAMA3)
        return;
    /* llama3: long wavelengths slowed by `factor`, short ones kept, a smooth
     * blend in between */
    float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor,
          hi = (float)c->rope_high_freq_factor, old = (float)c->rope_original_max_position;
    float lo_wavelen = old / lo, hi_wavelen = old / hi;
    for (int i = 0; i < half; i++) {
        float wavelen = 2.0f * (float)M_PI / inv[i];
        float f = wavelen > lo_wavelen ? inv[i] / factor : inv[i];
        if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
            float smooth = (old / wavelen - lo) / (hi - lo);
            f = (1 - smooth) * f / factor + smooth * f;
        }
        inv[i] = f;
    }
}

int model_rope_reserve(struct model *m, int n)
{
    /* every path sizes the tables for its longest sequence first: the place
     * to refuse what full causal attention would get wrong */
    if (m->cfg.sliding_window > 0 && n > m->cfg.sliding_window)
        return rl_err("a sequence of %d tokens is longer than this model's sliding_window (%d): sliding-window "
                      "attention is not implemented, and full attention past the window would not be the model's",
                      n, m->cfg.sliding_window);
    if (n <= m->rope_len)
        return 0;
    int len = m->rope_len ? m->rope_len : 256;
    while (len < n)
        len *= 2;
    int half = m->hd / 2;
    size_t cells = (size_t)len * half;
    float *cs = m->bk->alloc(cells * sizeof(float));
    float *sn = m->bk->alloc(cells * sizeof(float));
    if (!cs || !sn) {
        m->bk->free(cs);
        m->bk->free(sn);
        return rl_err("out of memory for RoPE tables of %d positions", len);
    }
    float *inv = rl_malloc(half * sizeof *inv), *hc = rl_malloc(2 * cells * sizeof *hc), *hs = hc + cells;
    rope_inv_freq(m, inv);
    for (int p = 0; p < len; p++)
        for (int i = 0; i < half; i++) {
            float a = (float)p * inv[i];
            hc[(size_t)p * half + i] = (float)cos((double)a);
            hs[(size_t)p * half + i] = (float)sin((double)a);
        }
    m->bk->upload(cs, hc, cells * sizeof(float));
    m->bk->upload(sn, hs, cells * sizeof(float));
    free(inv);
    free(hc);
    m->bk->free(m->rope_cos);
    m->bk->free(m->rope_sin);
    m->rope_cos = cs;
    m->rope_sin = sn;
    m->rope_len = len;
    return 0;
}

size_t model_attn_scratch(const struct model *m, int n, int pos, bool backward)
{
    if (!m->bk->attn_scratch(n, pos + n, m->n_heads, m->hd, backward))
        return 0;
    return (size_t)m->n_heads * n * (pos + n);
}

/* ---- activations ---- */

/* Carve n elements of `size` bytes (64-byte aligned) at *off; assign only when base is set. */
static float *carve(char *base, size_t *off, size_t n, size_t size)
{
    float *p = base ? (float *)(base + *off) : NULL;
    *off += (n * size + 63) & ~(size_t)63;
    return p;
}

/* The activations first (act_size elements: a->act_bytes of them, the
 * range the backend is told of), then the fp32 buffers. */
static size_t layout_acts(struct model *m, struct model_acts *a, char *base)
{
    size_t off = 0, T = a->T_cap, H = m->H, F = m->ffn, e = act_size(m), f = sizeof(float);
    int nl = a->layers_cap;
    /* first, what only rmsnorm and swiglu write and the backward reads
     * again as weight gradients' operands: marked for the backend in
     * training (mark_params), which may keep bf16 copies of them */
    for (int l = 0; l < nl; l++) {
        struct layer_acts *la = &a->layer[l];
        la->xn1 = carve(base, &off, T * H, e);
        la->xn2 = carve(base, &off, T * H, e);
        la->h = carve(base, &off, T * F, e);
    }
    a->saved_bytes = off;
    for (int l = 0; l < nl; l++) {
        struct layer_acts *la = &a->layer[l];
        la->x = carve(base, &off, T * H, e);
        la->qkv = carve(base, &off, T * m->qkv_dim, e);
        la->att = carve(base, &off, T * m->q_dim, e);
        la->x2 = carve(base, &off, T * H, e);
        la->gu = carve(base, &off, T * 2 * F, e);
    }
    size_t tc = (size_t)(a->Tc < a->T_cap ? a->Tc : a->T_cap);   /* no chunk is longer than the batch */
    a->xf = carve(base, &off, T * H, e);
    a->hf = carve(base, &off, T * H, e);
    a->hg = carve(base, &off, tc * H, e);
    a->dhg = carve(base, &off, tc * H, e);
    if (a->train_cap) {
        a->dx = carve(base, &off, T * H, e);
        a->dxn = carve(base, &off, T * H, e);
        a->dhf = carve(base, &off, T * H, e);
        a->dqkv = carve(base, &off, T * m->qkv_dim, e);
        a->datt = carve(base, &off, T * m->q_dim, e);
        a->dh = carve(base, &off, T * F, e);
        a->dgu = carve(base, &off, T * 2 * F, e);
    }
    a->act_bytes = off;
    for (int l = 0; l < nl; l++) {
        struct layer_acts *la = &a->layer[l];
        la->rstd1 = carve(base, &off, T, f);
        la->rstd2 = carve(base, &off, T, f);
        la->lse = carve(base, &off, T * m->n_heads, f);
    }
    a->rstd_f = carve(base, &off, T, f);
    a->lse = carve(base, &off, T, f);
    a->glogp = carve(base, &off, T, f);
    a->logp = carve(base, &off, T, f);
    a->chunk = carve(base, &off, tc * m->V, f);
    a->logits = a->logits_cap ? carve(base, &off, T * m->V, f) : NULL;
    a->p = carve(base, &off, a->p_cap, f);
    size_t labels = (size_t)(m->cfg.num_labels > 0 ? m->cfg.num_labels : 1);
    a->scores = carve(base, &off, (size_t)a->seq_cap * labels, f);
    a->dscore = carve(base, &off, (size_t)a->seq_cap * labels, f);
    /* the largest of T x H activations, for an upload of fp32 to convert
     * into them (model_backward's dhidden) */
    a->stage = a->train_cap ? carve(base, &off, T * H, f) : NULL;
    if (a->train_cap)
        a->dp = carve(base, &off, a->p_cap, f);
    return off;
}

void model_acts_free(struct model *m)
{
    struct model_acts *a = m->acts;
    if (!a)
        return;
    m->bk->free(a->mem);
    if (!m->bk->host)
        m->bk->free(a->dimem);
    if (a->draw_mem)
        m->bk->free(a->draw_mem);
    free(a->hmem);
    free(a->imem);
    free(a->layer);
    memset(a, 0, sizeof *a);
}

/* The LM head's row chunk: the backend's head_chunk_mb of logits at a time.
 * It depends on the vocabulary and the device alone (never on the batch),
 * so a sequence's chunks do too. */
static int head_chunk(const struct model *m)
{
    if (m->head_rows > 0)
        return m->head_rows;
    int tc = (int)(((size_t)m->bk->head_chunk_mb << 18) / (unsigned)m->V);
    return tc < 8 ? 8 : tc > 4096 ? 4096 : tc;
}

/* The backend-memory copies of the int arrays and the host-memory copies of
 * the results, for a backend whose memory the host cannot touch. */
static int mirror_ints(struct model *m, struct model_acts *na)
{
    size_t T = (size_t)na->T_cap;
    if (m->bk->host) {
        na->d_tokens = na->tokens;
        na->d_pos = na->pos;
        na->d_rows = na->rows;
        na->d_gtargets = na->gtargets;
        return 0;
    }
    na->dimem = m->bk->alloc(4 * T * sizeof(int));
    if (!na->dimem)
        return rl_err("out of memory for the index arrays of %zu tokens", T);
    na->d_tokens = na->dimem;
    na->d_pos = na->d_tokens + T;
    na->d_rows = na->d_pos + T;
    na->d_gtargets = na->d_rows + T;
    size_t nl = (size_t)(m->cfg.num_labels > 0 ? m->cfg.num_labels : 1);
    size_t logits = na->logits_cap ? T * m->V : 0;
    na->hmem = rl_malloc((2 * T + na->seq_cap * nl + logits) * sizeof(float));
    na->h_logp = na->hmem;
    na->h_g = na->h_logp + T;
    na->h_scores = na->h_g + T;
    na->h_logits = na->logits_cap ? na->h_scores + na->seq_cap * nl : NULL;
    return 0;
}

int model_acts_reserve(struct model *m, int T, int n_seq, size_t p, bool train, bool logits)
{
    struct model_acts *a = m->acts;
    int layers = train ? m->L : 1;
    if (T <= a->T_cap && n_seq <= a->seq_cap && p <= a->p_cap && layers <= a->layers_cap &&
        a->Tc == head_chunk(m) &&
        (!train || a->train_cap) && (!logits || a->logits_cap))
        return 0;
    struct model_acts na = {0};
    /* grow, never shrink: a varying batch settles after a few calls */
    na.T_cap = T > a->T_cap ? T : a->T_cap;
    na.seq_cap = n_seq > a->seq_cap ? n_seq : a->seq_cap;
    na.p_cap = p > a->p_cap ? p : a->p_cap;
    na.layers_cap = layers > a->layers_cap ? layers : a->layers_cap;
    na.train_cap = train || a->train_cap;
    na.logits_cap = logits || a->logits_cap;
    na.Tc = head_chunk(m);
    na.layer = rl_calloc(na.layers_cap, sizeof *na.layer);
    size_t bytes = layout_acts(m, &na, NULL);
    /* the old set goes first, so that growing never holds both (a GPU's
     * training set beside the next one could not fit where either alone
     * does); nothing in it outlives the call that grows it */
    model_acts_free(m);
    na.mem = m->bk->alloc(bytes);
    if (!na.mem) {
        free(na.layer);
        return rl_err("out of memory for activations of %d tokens (%.1f GiB)", T, bytes / 1073741824.0);
    }
    layout_acts(m, &na, na.mem);
    if (m->bk->act_bf16)
        m->bk->mark_acts(na.mem, na.act_bytes);
    else if (na.train_cap && m->bk->mark_params)
        m->bk->mark_params(na.mem, na.saved_bytes / sizeof(float));
    size_t ib = (size_t)na.T_cap * 7 * sizeof(int) + (size_t)na.seq_cap * (3 * sizeof(int) + sizeof(struct bk_attn_seq));
    na.imem = rl_malloc(ib);
    na.seqs = na.imem;
    na.tokens = (int *)(na.seqs + na.seq_cap);
    na.targets = na.tokens + na.T_cap;
    na.pos = na.targets + na.T_cap;
    na.rows = na.pos + na.T_cap;
    na.gtargets = na.rows + na.T_cap;
    na.chunk_start = na.gtargets + na.T_cap;
    na.chunk_len = na.chunk_start + na.T_cap;
    na.seq_row = na.chunk_len + na.T_cap;
    na.seq_len = na.seq_row + na.seq_cap;
    na.seq_pos = na.seq_len + na.seq_cap;
    if (mirror_ints(m, &na) < 0) {
        m->bk->free(na.mem);
        free(na.imem);
        free(na.layer);
        return -1;
    }
    *a = na;
    return 0;
}
