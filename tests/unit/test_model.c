/* Model properties that need no reference: batch invariance, KV-cache
 * generation (prefill, decode, fork) equal to the full forward, a
 * finite-difference gradient check, save/load round trips and errors.
 * Models come from tests/data/golden/ (made by tests/ref/llama_ref.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../harness.h"
#include "err.h"
#include "fsutil.h"
#include "model.h"
#include "sample.h"

static char golden[512];

static struct model *open_case(const char *c)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", golden, c);
    struct model *m = model_open(dir, "cpu");
    if (!m)
        fprintf(stderr, "%s: %s\n", c, rl_errmsg());
    return m;
}

static uint64_t rng_state = 88172645463325252ull;
static double urand(void)       /* xorshift64*, uniform [0, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static float nrand(void) { return (float)(sqrt(-2 * log(1 - urand())) * cos(2 * M_PI * urand())); }

/* a fixed batch of three sequences of unequal lengths */
static const int LENS[3] = {9, 4, 14};
static int TOK[27], TGT[27];
static void make_batch(int V)
{
    for (int s = 0, t = 0; s < 3; s++)
        for (int i = 0; i < LENS[s]; i++, t++) {
            TOK[t] = (int)(urand() * V);
            TGT[t] = i == LENS[s] - 1 ? -1 : -2;      /* patched below: next token */
        }
    for (int t = 0; t < 27; t++)
        if (TGT[t] == -2)
            TGT[t] = TOK[t + 1];
}

static void test_batch_invariance(const char *c)
{
    char name[160];
    struct model *m = open_case(c);
    if (!m)
        return;
    make_batch(m->V);
    struct model_batch b = {3, LENS, TOK, TGT};
    int rc = model_forward(m, &b, MODEL_LOGITS);
    size_t T = 27, V = m->V;
    float *lp = rl_malloc(T * sizeof *lp), *lg = rl_malloc(T * V * sizeof *lg);
    if (rc == 0) {
        memcpy(lp, m->logp, T * sizeof *lp);
        memcpy(lg, m->logits, T * V * sizeof *lg);
    }
    int same = rc == 0;
    for (int s = 0, off = 0; s < 3 && same; off += LENS[s++]) {
        struct model_batch one = {1, &LENS[s], TOK + off, TGT + off};
        same = model_forward(m, &one, MODEL_LOGITS) == 0 &&
               !memcmp(m->logp, lp + off, LENS[s] * sizeof *lp) &&
               !memcmp(m->logits, lg + (size_t)off * V, LENS[s] * V * sizeof *lg);
    }
    /* the same sequences in another order and with training activations */
    int order[3] = {2, 0, 1}, lens2[3], tok2[27], tgt2[27], offs[3] = {0, 9, 13};
    for (int k = 0, t = 0; k < 3; k++) {
        lens2[k] = LENS[order[k]];
        memcpy(tok2 + t, TOK + offs[order[k]], lens2[k] * sizeof(int));
        memcpy(tgt2 + t, TGT + offs[order[k]], lens2[k] * sizeof(int));
        t += lens2[k];
    }
    struct model_batch b2 = {3, lens2, tok2, tgt2};
    int same2 = same && model_forward(m, &b2, MODEL_TRAIN | MODEL_LOGITS) == 0 &&
                !memcmp(m->logp, lp + 13, 14 * sizeof *lp) && !memcmp(m->logp + 14, lp, 13 * sizeof *lp);
    /* without batch invariance: one sgemm per layer for the batch, head
     * chunks spanning sequences; equal to rounding */
    m->batch_invariant = false;
    double e = 1;
    if (model_forward(m, &b, 0) == 0)
        e = harness_max_rel_err(m->logp, lp, T);
    m->batch_invariant = true;
    snprintf(name, sizeof name, "%s: batch_invariant off: same log-probs within 1e-6", c);
    CHECKF(name, e <= 1e-6, "max rel err %.3g", e);
    snprintf(name, sizeof name, "%s: each sequence alone == in the batch (bit-exact)", c);
    CHECK(name, same);
    snprintf(name, sizeof name, "%s: reordered batch, training mode: same log-probs (bit-exact)", c);
    CHECK(name, same2);
    free(lp);
    free(lg);
    model_close(m);
}

static void test_kv_cache(const char *c)
{
    char name[160];
    struct model *m = open_case(c);
    if (!m)
        return;
    make_batch(m->V);
    int V = m->V, n = 14;
    const int *seq = TOK + 13;
    struct model_batch b = {1, &n, seq, NULL};
    float *full = rl_malloc((size_t)n * V * sizeof *full), *out = rl_malloc((size_t)4 * V * sizeof *out);
    int rc = model_forward(m, &b, MODEL_LOGITS);
    if (rc == 0)
        memcpy(full, m->logits, (size_t)n * V * sizeof *full);
    struct kv_cache *kv = kv_cache_new(m, 4, 32);
    /* prefill 5, then decode one token at a time */
    int slot = 0, pre = 5;
    double worst = 0;
    rc = rc || !kv || model_step(m, kv, 1, &slot, &pre, seq, out);
    if (rc == 0)
        worst = harness_max_rel_err(out, full + (size_t)(pre - 1) * V, V);
    for (int t = pre; t < n && rc == 0; t++) {
        int one = 1;
        rc = model_step(m, kv, 1, &slot, &one, seq + t, out);
        double e = harness_max_rel_err(out, full + (size_t)t * V, V);
        if (harness_worse(e, worst))
            worst = e;
    }
    snprintf(name, sizeof name, "%s: prefill + decode logits == full forward (1e-5)", c);
    CHECKF(name, rc == 0 && worst <= 1e-5, "rc %d (%s), worst %.3g", rc, rl_errmsg(), worst);

    /* fork: one prompt's prefill copied to three slots, each continued differently */
    int prompt = 4, slots[3] = {0, 1, 2}, ones[3] = {1, 1, 1}, twos[3] = {2, 2, 2};
    int next[3] = {3, 7, 11}, next2[6] = {5, 6, 9, 8, 1, 2};
    kv_cache_clear(kv, 0);
    rc = model_step(m, kv, 1, &slot, &prompt, seq, NULL);
    kv_cache_fork(kv, 1, 0, prompt);
    kv_cache_fork(kv, 2, 0, prompt);
    float *got = rl_malloc((size_t)3 * V * sizeof *got);
    rc = rc || model_step(m, kv, 3, slots, ones, next, out);
    if (rc == 0)
        memcpy(got, out, (size_t)3 * V * sizeof *got);
    rc = rc || model_step(m, kv, 3, slots, twos, next2, out);
    worst = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        int s7[7], len = 7;
        memcpy(s7, seq, 4 * sizeof(int));
        s7[4] = next[k];
        s7[5] = next2[2 * k];
        s7[6] = next2[2 * k + 1];
        struct model_batch bk = {1, &len, s7, NULL};
        rc = model_forward(m, &bk, MODEL_LOGITS);
        double e1 = harness_max_rel_err(got + (size_t)k * V, m->logits + (size_t)4 * V, V);
        double e2 = harness_max_rel_err(out + (size_t)k * V, m->logits + (size_t)6 * V, V);
        worst = harness_max(worst, harness_max(e1, e2));
    }
    snprintf(name, sizeof name, "%s: forked prompt cache, 3 continuations == full forwards (1e-5)", c);
    CHECKF(name, rc == 0 && worst <= 1e-5, "rc %d (%s), worst %.3g", rc, rl_errmsg(), worst);

    /* batched decoding is batch-invariant: slot 1 of that 3-slot step again,
     * alone, gives the same bits (prefill of 4 and decode of 1 token) */
    slot = 3;
    kv_cache_clear(kv, slot);
    int one = 1;
    int same = model_step(m, kv, 1, &slot, &prompt, seq, NULL) == 0 &&
               model_step(m, kv, 1, &slot, &one, &next[1], out) == 0 &&
               !memcmp(out, got + V, V * sizeof *out);
    snprintf(name, sizeof name, "%s: a decode step alone == in a batch of 3 (bit-exact)", c);
    CHECK(name, same);

    int big = 40, tk[40] = {0};
    slot = 3;
    CHECK("kv cache: overflowing a slot is an error",
          model_step(m, kv, 1, &slot, &big, tk, out) < 0 && strstr(rl_errmsg(), "exceed"));
    int dup[2] = {1, 1};
    CHECK("kv cache: a slot twice in one step is an error",
          model_step(m, kv, 2, dup, ones, next, out) < 0 && strstr(rl_errmsg(), "twice"));
    kv_cache_free(kv);
    free(full);
    free(out);
    free(got);
    model_close(m);
}

/* The CPU backend with its live bytes counted, for test_acts_growth. */
static struct { void *p[64]; size_t n[64]; size_t live, peak; } counted;
static void *counted_alloc(size_t bytes)
{
    void *p = backend_cpu.alloc(bytes);
    for (int i = 0; p && i < 64; i++)
        if (!counted.p[i]) {
            counted.p[i] = p, counted.n[i] = bytes;
            counted.live += bytes;
            counted.peak = counted.live > counted.peak ? counted.live : counted.peak;
            break;
        }
    return p;
}
static void counted_free(void *p)
{
    for (int i = 0; p && i < 64; i++)
        if (counted.p[i] == p) {
            counted.live -= counted.n[i];
            counted.p[i] = NULL;
        }
    backend_cpu.free(p);
}

/* A batch that outgrows the activations frees the old set before it
 * allocates the new one: at no time are both held (on a GPU, a training
 * set beside the next could not fit where either alone does). */
static void test_acts_growth(void)
{
    struct model *m = open_case("gqa_tied");
    if (!m)
        return;
    static struct backend bk;
    bk = backend_cpu;
    bk.alloc = counted_alloc, bk.free = counted_free;
    m->bk = &bk;                         /* the weights, allocated before, are freed through it too */
    int len[2] = {4, 32}, tok[32] = {0};
    struct model_batch small = {1, len, tok, tok}, big = {1, len + 1, tok, tok};
    bool ok = !model_forward(m, &small, MODEL_TRAIN);
    size_t old_set = counted.live;
    counted.peak = counted.live;
    ok = ok && !model_forward(m, &big, MODEL_TRAIN);
    CHECKF("growing activations: the forwards run", ok, "%s", rl_errmsg());
    size_t held_beyond = counted.peak - counted.live;
    CHECKF("growing activations: the old set is freed before the new one is allocated", held_beyond < old_set / 2,
           "%zu bytes held beyond the new set at the peak; the old set was %zu", held_beyond, old_set);
    model_close(m);
}

/* The forward adds each residual in the norm that reads the sum
 * (add_rmsnorm): on the CPU that is add() then rmsnorm(), bit for bit,
 * rows in parallel or not. */
static void test_add_rmsnorm(void)
{
    const struct backend *bk = &backend_cpu;
    for (int n = 3; n <= 300; n += 297) {
        int d = 576;
        size_t nd = (size_t)n * d;
        float *x = bk->alloc(nd * 4), *x2 = bk->alloc(nd * 4), *r = bk->alloc(nd * 4), *w = bk->alloc(d * 4);
        float *y = bk->alloc(nd * 4), *y2 = bk->alloc(nd * 4), *rs = bk->alloc(n * 4), *rs2 = bk->alloc(n * 4);
        for (size_t i = 0; i < nd; i++)
            x[i] = x2[i] = nrand(), r[i] = nrand();
        for (int j = 0; j < d; j++)
            w[j] = 1 + 0.1f * nrand();
        bk->add_rmsnorm(y, rs, x, r, w, n, d, 1e-5f);
        bk->add(x2, r, nd);
        bk->rmsnorm(y2, rs2, x2, w, n, d, 1e-5f);
        bool sx = !memcmp(x, x2, nd * 4), sy = !memcmp(y, y2, nd * 4), sr = !memcmp(rs, rs2, (size_t)n * 4);
        CHECKF(harness_name("add_rmsnorm is add then rmsnorm, bit for bit (%d rows)", n), sx && sy && sr,
               "x %s, y %s, 1/rms %s", sx ? "same" : "differs", sy ? "same" : "differs", sr ? "same" : "differs");
        float *all[8] = {x, x2, r, w, y, y2, rs, rs2};
        for (int i = 0; i < 8; i++)
            bk->free(all[i]);
    }
}

/* The LM head in chunks of 3 rows (many chunks per sequence) against one
 * chunk: same log-probs and gradients to rounding. */
static void test_head_chunks(void)
{
    struct model *m = open_case("mha_untied");
    if (!m)
        return;
    make_batch(m->V);
    struct model_batch b = {3, LENS, TOK, TGT};
    float w[27], *lp = rl_malloc(27 * sizeof *lp), *g = rl_malloc(m->n_params * sizeof *g);
    for (int t = 0; t < 27; t++)
        w[t] = nrand();
    int rc = model_forward(m, &b, MODEL_TRAIN);
    model_zero_grad(m);
    rc = rc || model_backward(m, w, NULL, NULL);
    memcpy(lp, m->logp, 27 * sizeof *lp);
    memcpy(g, m->g_mem, m->n_params * sizeof *g);
    m->head_rows = 3;
    rc = rc || model_forward(m, &b, MODEL_TRAIN);
    model_zero_grad(m);
    rc = rc || model_backward(m, w, NULL, NULL);
    double e1 = harness_max_rel_err(m->logp, lp, 27), e2 = harness_max_rel_err(m->g_mem, g, m->n_params);
    CHECKF("LM head in 3-row chunks: same log-probs and gradients (1e-6)", rc == 0 && e1 <= 1e-6 && e2 <= 1e-6,
           "rc %d, %.3g %.3g", rc, e1, e2);
    free(lp);
    free(g);
    model_close(m);
}

/* model_step_draw draws, for each slot, sample_draw's token and log-prob
 * from the logits model_step gives for the same step (two caches stepped
 * alike), with the LM head in 3-row chunks; on the CPU and on devsim, whose
 * memory the host cannot touch (the uniforms, ids and log-probs cross by
 * upload and download). Greedy, temperature 1 and 0.7, top-k with top-p. */
static void test_step_draw(const char *dev)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/gqa_tied", golden);
    struct model *m = model_open(dir, dev);
    if (!m) {
        harness_report(0, harness_name("model_step_draw on %s", dev), "%s", rl_errmsg());
        return;
    }
    enum { N = 7, STEPS = 4 };
    m->head_rows = 3;
    struct kv_cache *ka = kv_cache_new(m, N, 16), *kb = kv_cache_new(m, N, 16);
    int slots[N], four[N], ones[N], tok[4 * N], drawn[N], bad = 0, rc = !ka || !kb;
    float *logits = rl_malloc((size_t)N * m->V * sizeof *logits);
    double u[N], lp[N];
    for (int s = 0; s < N; s++)
        slots[s] = s, four[s] = 4, ones[s] = 1;
    for (int i = 0; i < 4 * N; i++)
        tok[i] = (int)(urand() * m->V);
    rc = rc || model_step(m, ka, N, slots, four, tok, NULL) || model_step(m, kb, N, slots, four, tok, NULL);
    struct sampler cs[STEPS] = {{.temperature = 0, .top_p = 1}, {.temperature = 1, .top_p = 1},
                                {.temperature = 0.7f, .top_p = 1}, {.temperature = 1, .top_p = 0.7f, .top_k = 9}};
    struct sample_scratch sc;
    sample_scratch_init(&sc, m->V);
    for (int k = 0; k < STEPS && !rc; k++) {
        for (int s = 0; s < N; s++)
            tok[s] = (int)(urand() * m->V), u[s] = urand();
        rc = model_step(m, ka, N, slots, ones, tok, logits) ||
             model_step_draw(m, kb, N, slots, ones, tok, &cs[k], u, drawn, lp);
        for (int s = 0; s < N && !rc; s++) {
            double want_lp;
            int want = sample_draw(&cs[k], logits + (size_t)s * m->V, m->V, u[s], &sc, &want_lp);
            bad += drawn[s] != want || lp[s] != want_lp;
        }
    }
    sample_scratch_free(&sc);
    CHECKF(harness_name("model_step_draw on %s: sample_draw's tokens and log-probs from model_step's logits", dev),
           !rc && !bad, "rc %d (%s), %d of %d draws differ", rc, rc ? rl_errmsg() : "", bad, N * STEPS);
    kv_cache_free(ka), kv_cache_free(kb);
    free(logits);
    model_close(m);
}

/* model_response_logps == the sum of a forward's response-token log-probs */
static void test_response_logps(void)
{
    struct model *m = open_case("gqa_tied");
    if (!m)
        return;
    int p0[3] = {1, 5, 9}, r0[4] = {40, 41, 2, 7}, p1[1] = {8}, r1[2] = {3, 3};
    const int *pp[3] = {p0, p1, p0}, *rp[3] = {r0, r1, r0};
    int pl[3] = {3, 1, 3}, rl[3] = {4, 2, 0};
    double out[3] = {1, 1, 1};
    int rc = model_response_logps(m, 3, pp, pl, rp, rl, out);
    int seq[6] = {1, 5, 9, 40, 41, 2}, tgt[6] = {-1, -1, 40, 41, 2, 7}, n = 6;
    double want = 0;
    if (model_forward(m, &(struct model_batch){1, &n, seq, tgt}, 0) == 0)
        for (int t = 0; t < 6; t++)
            want += m->logp[t];
    CHECKF("response log-probs: the sum over response tokens, prompt masked", rc == 0 && out[0] == want && out[2] == 0 && out[1] < 0,
           "rc %d: %.9g vs %.9g, %g, %g", rc, out[0], want, out[1], out[2]);
    int empty = 0;
    const int *ep[1] = {p0};
    CHECK("response log-probs: an empty prompt is an error",
          model_response_logps(m, 1, ep, &empty, rp, rl, out) < 0 && strstr(rl_errmsg(), "prompt"));
    model_close(m);
}

/* A hidden-state gradient equals the score head's: d score (s) on the last
 * row times score.weight gives the same trunk gradients. */
static void test_hidden_grad(void)
{
    struct model *m = open_case("score_head");
    if (!m)
        return;
    make_batch(m->V);
    struct model_batch b = {3, LENS, TOK, NULL};
    float ds[3] = {0.5f, -1.25f, 2.0f};
    float *dh = rl_calloc((size_t)27 * m->H, sizeof *dh), *g = rl_malloc(m->n_params * sizeof *g);
    int rc = model_forward(m, &b, MODEL_TRAIN);
    model_zero_grad(m);
    rc = rc || model_backward(m, NULL, ds, NULL);
    memcpy(g, m->g_mem, m->n_params * sizeof *g);
    for (int s = 0, row = 0; s < 3; row += LENS[s++])
        for (int j = 0; j < m->H; j++)
            dh[(size_t)(row + LENS[s] - 1) * m->H + j] = ds[s] * m->w.score[j];
    model_zero_grad(m);
    rc = rc || model_backward(m, NULL, NULL, dh);
    const struct model_param *sc = model_find_param(m, "score.weight");
    double e = sc ? harness_max_rel_err(m->g_mem, g, sc->offset) : 1;   /* everything before score.weight */
    int score_zero = sc && m->g_mem[sc->offset] == 0;
    CHECKF("hidden-state gradient == the score head's, for the trunk (1e-6)", rc == 0 && e <= 1e-6 && score_zero,
           "rc %d, err %.3g", rc, e);
    free(dh);
    free(g);
    model_close(m);
}

static void test_score_step(void)
{
    struct model *m = open_case("score_head");
    if (!m)
        return;
    int n = 9, slot = 0;
    struct model_batch b = {1, &n, TOK, NULL};
    float s1 = NAN, s2 = NAN;
    if (model_forward(m, &b, 0) == 0)
        s1 = m->scores[0];
    struct kv_cache *kv = kv_cache_new(m, 1, 16);
    if (kv && model_step(m, kv, 1, &slot, &n, TOK, &s2) < 0)
        s2 = NAN;
    CHECKF("score head: cached prefill score == forward score", fabsf(s1 - s2) <= 1e-5f * fmaxf(1, fabsf(s1)),
           "%g vs %g", s1, s2);
    CHECK("score head: log-probs are refused",
          model_forward(m, &(struct model_batch){1, &n, TOK, TGT}, 0) < 0 && strstr(rl_errmsg(), "score head"));
    kv_cache_free(kv);
    model_close(m);
}

/* Loss = sum_t w_t logp_t, accumulated in double. */
static double fd_loss(struct model *m, const struct model_batch *b, const float *w)
{
    if (model_forward(m, b, 0) < 0)
        return NAN;
    double l = 0;
    for (int t = 0; t < m->n_tok; t++)
        l += (double)w[t] * m->logp[t];
    return l;
}

/* Central differences in fp32 (step h = 1e-3 along a unit direction, loss
 * summed in double) against the analytic directional derivative g.u, for
 * every tensor and two directions: the gradient's own (checks magnitude) and
 * a random one (checks the rest). Tolerance 1% of |g| + 1e-3. */
static void test_finite_differences(void)
{
    struct model_config c = {0};
    snprintf(c.architecture, sizeof c.architecture, "LlamaForCausalLM");
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.arch = ARCH_LLAMA;
    c.head = HEAD_LM;
    c.hidden_size = 8;
    c.intermediate_size = 12;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 6;
    c.vocab_size = 11;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 100;
    c.attention_bias = c.o_bias = c.mlp_bias = true;
    struct model *m = model_new(&c, "cpu");
    CHECKF("fd: tiny model builds", m, "%s", rl_errmsg());
    if (!m)
        return;
    for (size_t i = 0; i < m->n_params; i++)
        m->w_mem[i] += 0.4f * nrand();
    int lens[2] = {5, 3}, tok[8], tgt[8];
    float w[8];
    for (int t = 0; t < 8; t++) {
        tok[t] = (int)(urand() * 11);
        w[t] = nrand();
    }
    for (int t = 0; t < 8; t++)
        tgt[t] = t == 4 || t == 7 ? -1 : tok[t + 1];
    struct model_batch b = {2, lens, tok, tgt};
    model_forward(m, &b, MODEL_TRAIN);
    model_zero_grad(m);
    model_backward(m, w, NULL, NULL);
    float *g = rl_malloc(m->n_params * sizeof *g), *u = rl_malloc(m->n_params * sizeof *u);
    memcpy(g, m->g_mem, m->n_params * sizeof *g);
    const double h = 1e-3;
    int bad = 0;
    char why[300] = "";
    for (int i = 0; i < m->n_params_tensors; i++) {
        const struct model_param *p = &m->params[i];
        const float *gp = g + p->offset;
        double gn = 0;
        for (size_t j = 0; j < p->numel; j++)
            gn += (double)gp[j] * gp[j];
        gn = sqrt(gn);
        for (int dir = 0; dir < 2; dir++) {
            double un = 0, gu = 0;
            for (size_t j = 0; j < p->numel; j++) {
                u[j] = dir == 0 && gn > 0 ? gp[j] : nrand();
                un += (double)u[j] * u[j];
            }
            un = sqrt(un);
            float *wp = m->w_mem + p->offset;
            for (size_t j = 0; j < p->numel; j++) {
                u[j] = (float)(u[j] / un);
                gu += (double)gp[j] * u[j];
            }
            for (size_t j = 0; j < p->numel; j++)
                wp[j] += (float)h * u[j];
            double lp = fd_loss(m, &b, w);
            for (size_t j = 0; j < p->numel; j++)
                wp[j] -= 2 * (float)h * u[j];
            double lm = fd_loss(m, &b, w);
            for (size_t j = 0; j < p->numel; j++)
                wp[j] += (float)h * u[j];
            double fd = (lp - lm) / (2 * h);
            if (!(fabs(fd - gu) <= 1e-2 * gn + 1e-3)) {
                if (!bad++)
                    snprintf(why, sizeof why, "%s dir %d: fd %.6g vs analytic %.6g (|g| %.3g)", p->name, dir, fd, gu, gn);
            }
        }
    }
    CHECKF("fd: every tensor's directional derivatives match central differences", bad == 0, "%d bad; %s", bad, why);
    free(g);
    free(u);
    model_close(m);
}

static void test_save_roundtrip(const char *c, enum st_dtype dt)
{
    char name[160], dir[128];
    struct model *m = open_case(c);
    if (!m)
        return;
    snprintf(dir, sizeof dir, "/tmp/rlflow-model-test-%d-%s", (int)getpid(), c);
    m->save_dtype = dt;
    int rc = model_save(m, dir);
    struct model *m2 = rc == 0 ? model_open(dir, "cpu") : NULL;
    snprintf(name, sizeof name, "%s: saved as %s, reloads with identical weights", c, st_dtype_name(dt));
    CHECKF(name, m2 && m2->n_params == m->n_params && m2->save_dtype == dt &&
                     !memcmp(m2->w_mem, m->w_mem, m->n_params * sizeof(float)),
           "%s", rl_errmsg());
    fs_rm_rf(dir);
    model_close(m2);
    model_close(m);
}

static void test_errors(void)
{
    struct model *m = open_case("gqa_tied");
    if (!m)
        return;
    int n = 3, tok[3] = {1, 500, 2};
    CHECK("error: token outside the vocabulary names it",
          model_forward(m, &(struct model_batch){1, &n, tok, NULL}, 0) < 0 && strstr(rl_errmsg(), "token 1 is 500"));
    tok[1] = 3;
    float d[3] = {1, 1, 1};
    CHECK("error: backward without MODEL_TRAIN",
          model_forward(m, &(struct model_batch){1, &n, tok, NULL}, 0) == 0 &&
              model_backward(m, d, NULL, NULL) < 0 && strstr(rl_errmsg(), "MODEL_TRAIN"));
    model_close(m);
    CHECK("error: a missing model directory", !model_open("/nonexistent/model", "cpu") && *rl_errmsg());
    char gq[600];
    snprintf(gq, sizeof gq, "%s/gqa_tied", golden);
    CHECK("error: an unknown device", !model_open(gq, "tpu") && strstr(rl_errmsg(), "unknown device"));
    /* a config whose shapes disagree with the weights: names the tensor */
    char dir[128], src[700], dst[700];
    snprintf(dir, sizeof dir, "/tmp/rlflow-model-mix-%d", (int)getpid());
    fs_rm_rf(dir);
    if (mkdir(dir, 0777) == 0) {
        snprintf(src, sizeof src, "%s/mha_untied/config.json", golden);
        snprintf(dst, sizeof dst, "%s/config.json", dir);
        fs_copy_file(src, dst);
        snprintf(src, sizeof src, "%s/gqa_tied/model.safetensors", golden);
        snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
        fs_copy_file(src, dst);
        struct model *bad = model_open(dir, "cpu");
        CHECKF("error: weights that do not fit the config name the tensor",
               !bad && strstr(rl_errmsg(), "model."), "%s", bad ? "opened" : rl_errmsg());
        model_close(bad);
        fs_rm_rf(dir);
    }
}

int main(void)
{
    const char *root = getenv("RL_ROOT");
    snprintf(golden, sizeof golden, "%s/tests/data/golden", root ? root : ".");
    test_batch_invariance("gqa_tied");
    test_batch_invariance("qwen2_bias");
    test_kv_cache("gqa_tied");
    test_kv_cache("llama3_rope");
    test_score_step();
    test_hidden_grad();
    test_response_logps();
    test_head_chunks();
    test_acts_growth();
    test_add_rmsnorm();
    test_step_draw("cpu");
    test_step_draw("devsim");
    test_finite_differences();
    test_save_roundtrip("mha_untied", ST_BF16);
    test_save_roundtrip("gqa_tied", ST_F32);
    test_errors();
    return harness_exit();
}
