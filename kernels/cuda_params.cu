/* The CUDA backend's bf16 copies of parameters (mark_params). In bf16 mode
 * a GEMM whose operand lies in a marked range reads the copy instead of
 * rounding the operand itself: the same bits (round to nearest even), once
 * per update instead of once per product (a weight is an operand of the
 * forward's product and of the backward's dx), and where a product is thin
 * (decode steps) it reads 2 bytes a weight instead of 4. A copy goes stale
 * when its range is written by upload, copy, zero or scale and is made
 * again, in one pass, by the next product that needs it; adamw keeps it
 * fresh by writing each rounded weight beside the weight. Where the GPU has
 * no memory left for a copy, products round their operands as before. */
#include "cuda_common.cuh"

#define PARAM_SETS 8                  /* marked ranges (policy, reference, reward model, ...) */
struct param_set {
    const float *w;
    size_t n;
    unsigned short *bf16;
    bool fresh, no_memory;
};
static param_set sets[PARAM_SETS];

void params_forget(const void *p)
{
    for (param_set &s : sets)
        if (s.w && s.w == p) {
            capture_pause();
            if (s.bf16)
                CU(cudaFree(s.bf16));
            s = param_set{};
        }
}
void params_written(const void *p, size_t bytes)
{
    const char *a = (const char *)p;
    for (param_set &s : sets)
        if (s.w && a < (const char *)(s.w + s.n) && a + bytes > (const char *)s.w)
            s.fresh = false;
}
static param_set *set_of(const float *p, size_t n)
{
    for (param_set &s : sets)
        if (s.w && p >= s.w && p + n <= s.w + s.n)
            return &s;
    return NULL;
}

__global__ static void k_round_bf16(unsigned short *dst, const float *src, size_t n)
{
    GRID_STRIDE(i, n) dst[i] = bf16_rne(src[i]);
}

const unsigned short *param_bf16(const float *p, size_t n)
{
    param_set *s = set_of(p, n);
    if (!s || s->no_memory)
        return NULL;
    if (!s->bf16)
        capture_pause();
    if (!s->bf16 && cudaMalloc(&s->bf16, s->n * sizeof *s->bf16) != cudaSuccess) {
        cudaGetLastError();
        s->bf16 = NULL;
        s->no_memory = true;
        return NULL;
    }
    if (!s->fresh) {
        LAUNCH_OVER(s->n, k_round_bf16, "bf16 copy of parameters", s->bf16, s->w, s->n);
        s->fresh = true;
    }
    return s->bf16 + (p - s->w);
}

unsigned short *param_bf16_update(const float *w, size_t n)
{
    param_set *s = set_of(w, n);
    if (s && s->bf16 && s->fresh)
        return s->bf16 + (w - s->w);
    params_written(w, n * sizeof *w);
    return NULL;
}

static void cu_mark_params(const float *w, size_t n)
{
    params_forget(w);
    for (param_set &s : sets)
        if (!s.w) {
            s = param_set{w, n, NULL, false, false};
            return;
        }
    /* more sets than slots: the rest take per-product copies */
}

void cuda_params_ops(struct backend *b) { b->mark_params = STAMPED(cu_mark_params); }
