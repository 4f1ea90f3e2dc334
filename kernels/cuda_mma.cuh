/* mma.sync on the CUDA backend (attention, matmul_rows): bf16 tiles of
 * 16 x 16 times 16 x 8 with fp32 accumulation, their fragments in the
 * layout the PTX ISA specifies, so that kernels can keep tiles in
 * registers and reuse an accumulator as the next product's operand. The
 * emulation (tests/emu) exchanges the fragments across the warp in the same
 * layout. Needs sm_80 or newer (the build's targets). */
#ifndef RLFLOW_CUDA_MMA_CUH
#define RLFLOW_CUDA_MMA_CUH
#include "cuda_common.cuh"

/* ---- the fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"): with
 * g = lane / 4 and t = lane % 4, a lane holds of A (16 x 16) the rows g and
 * g + 8 at columns 2t, 2t + 1 and 2t + 8, 2t + 9 (registers: (g, 2t), (g + 8,
 * 2t), (g, 2t + 8), (g + 8, 2t + 8), two bf16 each, the lower column in the
 * low half); of B (16 x 8) the column g at rows 2t, 2t + 1 and 2t + 8, 2t + 9;
 * of C (16 x 8, fp32) the rows g, g + 8 at columns 2t, 2t + 1. ---- */

/* two bf16 at p (4-byte aligned) as one register */
__device__ static inline unsigned ld_pair(const unsigned short *p)
{
#ifdef RL_CUDA_EMU
    unsigned v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return *(const unsigned *)p;
#endif
}
/* lo and hi rounded to bf16, lo in the low half */
__device__ static inline unsigned pack_bf16(float lo, float hi)
{
#ifdef RL_CUDA_EMU
    return bf16_rne(lo) | (unsigned)bf16_rne(hi) << 16;
#else
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *(unsigned *)&h;
#endif
}
/* c (16 x 8) += a (16 x 16) b (16 x 8) */
__device__ static inline void mma_bf16(float c[4], const unsigned a[4], const unsigned b[2])
{
#ifdef RL_CUDA_EMU
    emu::mma_m16n8k16_bf16(c, a, b);
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
/* A = the 16 x 16 at m (bf16, pitch ld, k contiguous) */
__device__ static inline void load_a(unsigned a[4], const unsigned short *m, int ld, int lane)
{
    const unsigned short *p = m + (lane >> 2) * ld + 2 * (lane & 3);
    a[0] = ld_pair(p), a[1] = ld_pair(p + 8 * ld), a[2] = ld_pair(p + 8), a[3] = ld_pair(p + 8 * ld + 8);
}
/* B = M^T for the 8 x 16 M at m (rows n, k contiguous, pitch ld) */
__device__ static inline void load_bt(unsigned b[2], const unsigned short *m, int ld, int lane)
{
    const unsigned short *p = m + (lane >> 2) * ld + 2 * (lane & 3);
    b[0] = ld_pair(p), b[1] = ld_pair(p + 8);
}
#endif
