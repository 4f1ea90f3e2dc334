/* mma.sync on the CUDA backend (attention, matmul_rows): bf16 tiles of
 * 16 x 16 times 16 x 8 with fp32 accumulation, their fragments in the
 * layout the PTX ISA specifies, so that kernels can keep tiles in
 * registers and reuse an accumulator as the next product's operand. The
 * emulation (tests/emu) exchanges the fragments across the warp in the same
 * layout; ldmatrix and cp.async move the tiles. Needs sm_80 or newer (the
 * build's targets). */
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
/* ---- shared memory: ldmatrix and cp.async (sm_80) ---- */
/* Four 8 x 8 bf16 matrices from shared memory: lanes 8j..8j+7 give the rows
 * of matrix j (16-byte aligned); register j gets of matrix j the elements
 * (g, 2t), (g, 2t + 1), or transposed (2t, g), (2t + 1, g): fragments. */
template <bool TRANS> __device__ static inline void ldsm_x4(unsigned r[4], const unsigned short *row)
{
#ifdef RL_CUDA_EMU
    emu::ldmatrix_x4(r, row, TRANS);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(row);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
#endif
}
/* load_bt for two blocks of 8 rows: b[0..1] = the B fragment of M^T for the
 * rows 0..7 of the 16 x 16 M at m (rows n, k contiguous, pitch ld), b[2..3]
 * for its rows 8..15 */
__device__ static inline void load_bt2(unsigned b[4], const unsigned short *m, int ld, int lane)
{
    ldsm_x4<false>(b, m + (size_t)((lane & 7) + 8 * (lane >> 4)) * ld + 8 * ((lane >> 3) & 1));
}
/* B = M itself, the 16 x 16 at m stored k-major (rows k, n contiguous,
 * pitch ld): b[0..1] the fragment of its columns 0..7, b[2..3] of 8..15 */
__device__ static inline void load_b2(unsigned b[4], const unsigned short *m, int ld, int lane)
{
    ldsm_x4<true>(b, m + (size_t)(lane & 15) * ld + 8 * (lane >> 4));
}
/* 16 bytes from global to shared memory without the registers, in the
 * background: they land by cp_async_wait<n> of the thread that copied
 * (groups closed by cp_async_commit), visible to the block after a
 * __syncthreads. Both addresses 16-byte aligned. */
__device__ static inline void cp_async16(void *dst, const void *src)
{
#ifdef RL_CUDA_EMU
    emu::cp_async16(dst, src);
#else
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
#endif
}
__device__ static inline void cp_async_commit()
{
#ifdef RL_CUDA_EMU
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
/* wait until at most n of this thread's groups are in flight */
template <int N> __device__ static inline void cp_async_wait()
{
#ifdef RL_CUDA_EMU
    emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
#endif
