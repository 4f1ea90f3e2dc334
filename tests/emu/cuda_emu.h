/* A CUDA emulation for checking kernels' logic on the CPU: just enough of
 * the runtime, cuBLAS and the device language for the files of kernels/ to
 * compile with g++ -DRL_CUDA_EMU and run, so that the GPU test programs
 * (test_cuda_ops, test_cuda_model, tests/gpu/test_tools.sh) check every
 * kernel's indexing, masking, reductions and barriers in CI, where there is
 * no GPU.
 *
 * A launch runs the blocks one after another; a block's threads are fibers
 * on the calling thread, switched only at barriers: __syncthreads
 * is a real barrier over them, each warp's shuffles go through a 32-slot
 * exchange with its own barrier, and a barrier that not every thread reaches
 * stops the run with a message instead of hanging. __shared__ variables are
 * statics, shared by the threads of the block running. A thread that returns
 * early drops out of the block's barriers, as on the GPU.
 * RL_EMU_ORDER=reverse runs the blocks of a launch, and the threads of a
 * block between two barriers, last first. Both orders are schedules a GPU
 * may take, so a kernel must give the same result in both: a thread that
 * reads what another writes with no barrier in between sees the write in
 * one order and not in the other (tests/run runs the GPU suites both ways).
 * RL_EMU_ORDER=shuffle runs the blocks in a fixed pseudo-random order, for
 * kernels whose blocks meet through a counter (last_block). Blocks never
 * run at the same time, so a fence left out, or a counter's block that acts
 * before the others have written, goes unseen here.
 * cuBLAS column-major GEMMs go to OpenBLAS
 * in column-major, which also checks the row-major mapping above them.
 * mma.sync's fragments are exchanged across the warp in the layout PTX
 * specifies; bf16 tile products sum in fp32 in k order.
 * Stream capture and graphs: while a capture is on, launches, cuBLAS calls
 * and async copies are recorded instead of run, and a graph runs its
 * record in order; a call that would wait for the device (cudaMalloc,
 * cudaFree, a synchronous copy or memset) is refused and spoils the
 * capture, as CUDA's thread-local capture mode does, so that an op that
 * forgot to end the capture first fails here too.
 * Not emulated: timing, memory-model subtleties, warp divergence beyond
 * uniform branches, and bf16 arithmetic (bf16 and tf32 modes compute in fp32).
 * Not part of the library: built only into rlflow-cuda-emu.so for the tests. */
#ifndef RLFLOW_CUDA_EMU_H
#define RLFLOW_CUDA_EMU_H
#include <cblas.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>
#include <cstdint>
#include <ucontext.h>
#include <vector>
#if defined(__SANITIZE_ADDRESS__)   /* make check SANITIZE=1: the fibers' switches are told to ASan */
#define EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define EMU_ASAN 0
#endif

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__
#define __launch_bounds__(...)

struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 {
    unsigned x, y, z;
};
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace emu {
/* The threads of a block are fibers on the calling thread, switched only at
 * barriers: cheap enough to run thousands of blocks, and deterministic. */
struct gate {                    /* a barrier: __syncthreads, or a warp's exchange */
    int count, arrived;
    unsigned gen;
};
/* Switching: on x86-64 a few instructions that keep the callee-saved
 * registers and swap stacks (glibc's swapcontext also saves the signal mask,
 * a system call per switch, which made the emulation three times slower);
 * elsewhere ucontext. The routine is a weak symbol: every file of the
 * backend includes this header, and the linker keeps one copy. */
#if defined(__x86_64__)
extern "C" void emu_switch(void **save_sp, void **load_sp);
asm(R"(
    .text
    .weak emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq (%rsi), %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
/* Under AddressSanitizer (make check SANITIZE=1) every switch is announced
 * to it, with the stack it goes to: ASan then checks the kernels' reads and
 * writes of device memory (heap here) on the fibers' stacks as on any. */
struct context {
    void *sp;
    const void *bottom;          /* its stack, for ASan (the scheduler's: learnt at the first switch) */
    size_t size;
    void *fake;                  /* ASan's fake stack of a context switched away from */
};
/* last: save is never resumed (a finished fiber), so ASan drops its fake stack */
inline void switch_to(context *save, context *load, bool last = false)
{
#if EMU_ASAN
    __sanitizer_start_switch_fiber(last ? nullptr : &save->fake, load->bottom, load->size);
#endif
    (void)last;
    emu_switch(&save->sp, &load->sp);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(save->fake, nullptr, nullptr);
#endif
}
/* The first code a new context runs, its switch's other half: it learns
 * the stack it came from (the scheduler's). */
inline void started(context *from)
{
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &from->bottom, &from->size);
#endif
    (void)from;
}
/* A new stack whose first switch "returns" into start(), aligned as after a call. */
inline void prepare(context *c, char *stack, size_t size, void (*start)())
{
#if EMU_ASAN
    /* a finished fiber's frames never returned: their redzones are still poisoned */
    ASAN_UNPOISON_MEMORY_REGION(stack, size);
#endif
    c->bottom = stack;
    c->size = size;
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;                     /* start()'s return address: it never returns */
    *--sp = (void *)start;               /* emu_switch's ret goes here */
    for (int i = 0; i < 6; i++)
        *--sp = nullptr;                 /* rbp rbx r12-r15 */
    c->sp = sp;
}
#else
struct context {
    ucontext_t uc;
};
inline void switch_to(context *save, context *load, bool last = false)
{
    (void)last;
    swapcontext(&save->uc, &load->uc);
}
inline void started(context *) {}
inline void prepare(context *c, char *stack, size_t size, void (*start)())
{
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, start, 0);
}
#endif

struct fiber {
    context ctx;
    uint3 tid;
    int lane, warp;
    bool done;
};
inline context sched;
inline fiber *cur;
inline std::vector<fiber> fibers;
inline std::vector<char> stacks;
inline std::vector<gate> warp_gate;
inline gate block_gate;
inline double slot[1024];
inline long progress;            /* gate releases and finished threads: a stall is a deadlock */
inline const std::function<void()> *body;
enum { STACK = 1 << 16 };
/* RL_EMU_ORDER: forward (the default: between two barriers a block's
 * threads run one after another, first first), reverse (blocks and threads
 * last first), warp (each warp runs as far as it can, through its own
 * exchanges, before the next starts, and cp.async copies land at once: a
 * warp refilling a buffer that another has yet to read shows) or shuffle
 * (the blocks in a fixed pseudo-random order: blocks that meet through a
 * counter, last_block, finish in orders that forward and reverse never
 * give, such as the tiles' blocks interleaved) */
enum { ORDER_FORWARD, ORDER_REVERSE, ORDER_WARP, ORDER_SHUFFLE };
inline int order_mode()
{
    static int m = -1;
    if (m < 0) {
        const char *e = getenv("RL_EMU_ORDER");
        m = !e                        ? ORDER_FORWARD
          : !strcmp(e, "reverse")     ? ORDER_REVERSE
          : !strcmp(e, "warp")        ? ORDER_WARP
          : !strcmp(e, "shuffle")     ? ORDER_SHUFFLE
                                      : ORDER_FORWARD;
    }
    return m;
}
inline bool reverse_order() { return order_mode() == ORDER_REVERSE; }

inline void enter(fiber *f)
{
    cur = f;
    threadIdx = f->tid;
}
inline void yield()
{
    fiber *me = cur;
    switch_to(&me->ctx, &sched);
    enter(me);
}
inline void wait(gate &g)
{
    unsigned my = g.gen;
    if (++g.arrived == g.count) {
        g.arrived = 0;
        g.gen++;
        progress++;
        return;
    }
    while (g.gen == my)
        yield();
}
/* A thread that returns stops counting in the block's barriers, as on the GPU. */
inline void drop(gate &g)
{
    if (--g.count > 0 && g.arrived == g.count) {
        g.arrived = 0;
        g.gen++;
    }
}
inline void async_check_done();
inline void entry()
{
    started(&sched);
    fiber *me = cur;
    enter(me);
    (*body)();
    async_check_done();
    me->done = true;
    progress++;
    drop(block_gate);
    drop(warp_gate[me->warp]);
    switch_to(&me->ctx, &sched, true);
    abort();                             /* a finished fiber is never resumed */
}

template <class T> T exchange(T v, int src)
{
    fiber *me = cur;
    int base = me->warp * 32;
    slot[base + me->lane] = (double)v;
    wait(warp_gate[me->warp]);
    T r = (T)slot[base + (src & 31)];
    wait(warp_gate[me->warp]);
    return r;
}

inline void run_block(int nt)
{
    int nw = (nt + 31) / 32;
    block_gate = {nt, 0, 0};
    warp_gate.assign(nw, gate{});
    for (int w = 0; w < nw; w++)
        warp_gate[w] = {w + 1 < nw ? 32 : nt - 32 * w, 0, 0};
    for (int t = 0; t < nt; t++) {
        fiber &f = fibers[t];
        f.done = false;
        prepare(&f.ctx, &stacks[(size_t)t * STACK], STACK, entry);
    }
    for (int alive = nt; alive > 0;) {
        long before = progress;
        alive = 0;
        if (order_mode() == ORDER_WARP) {
            for (int w = 0; w < nw; w++)
                for (long p = -1; p != progress;) {   /* until its lanes all wait on the block */
                    p = progress;
                    for (int t = 32 * w; t < nt && t < 32 * w + 32; t++)
                        if (!fibers[t].done) {
                            enter(&fibers[t]);
                            switch_to(&sched, &fibers[t].ctx);
                        }
                }
            for (int t = 0; t < nt; t++)
                alive += !fibers[t].done;
        } else
            for (int i = 0; i < nt; i++) {
                int t = reverse_order() ? nt - 1 - i : i;
                if (fibers[t].done)
                    continue;
                enter(&fibers[t]);
                switch_to(&sched, &fibers[t].ctx);
                alive += !fibers[t].done;
            }
        if (alive && progress == before) {
            fprintf(stderr, "cuda_emu: deadlock in block (%u, %u): a barrier not reached by every thread\n",
                    blockIdx.x, blockIdx.y);
            abort();
        }
    }
}

inline void run(dim3 grid, dim3 blk, const std::function<void()> &fn)
{
    int nt = (int)(blk.x * blk.y * blk.z);
    if (nt > 1024)
        abort();
    fibers.resize(nt);
    if (stacks.size() < (size_t)nt * STACK)
        stacks.resize((size_t)nt * STACK);
    for (int t = 0; t < nt; t++) {
        fibers[t].tid = {(unsigned)t % blk.x, (unsigned)(t / blk.x) % blk.y, (unsigned)(t / (blk.x * blk.y))};
        fibers[t].lane = t % 32;
        fibers[t].warp = t / 32;
    }
    body = &fn;
    blockDim = blk;
    gridDim = grid;
    bool rev = reverse_order();
    size_t blocks = (size_t)grid.x * grid.y * grid.z;
    std::vector<size_t> perm(blocks);
    for (size_t i = 0; i < blocks; i++)
        perm[i] = rev ? blocks - 1 - i : i;
    if (order_mode() == ORDER_SHUFFLE) {  /* Fisher-Yates with a fixed LCG: the same order every run */
        unsigned long long r = 0x9e3779b97f4a7c15ull ^ blocks;
        for (size_t i = blocks; i > 1; i--) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            size_t j = (size_t)((r >> 33) % i), t = perm[i - 1];
            perm[i - 1] = perm[j], perm[j] = t;
        }
    }
    for (size_t b : perm) {
        blockIdx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / grid.x / grid.y)};
        run_block(nt);
    }
    body = nullptr;                      /* fn lives only for this launch */
}

/* RL_EMU_TRACE=FILE: every launch's name (LAUNCHED in cuda_common.cuh), a
 * line each, so that a test can count the kernels an op ran (the operand
 * copies a product made, or did not) */
inline void note_launch(const char *name)
{
    static FILE *trace = [] {
        const char *p = getenv("RL_EMU_TRACE");
        return p && *p ? fopen(p, "a") : nullptr;
    }();
    if (trace) {
        fprintf(trace, "%s\n", name);
        fflush(trace);
    }
}

/* Stream capture: the work recorded since cudaStreamBeginCapture, each
 * item with the kind of node it makes (a graph update needs the same kinds
 * in the same order); null when no capture is on. */
struct recorded {
    const char *kind;
    std::function<void()> run;
};
inline std::vector<recorded> *capture;
inline bool capture_spoiled;
inline int capture_stream;            /* the stream captured: work given another is refused */
inline int blas_stream;               /* cublasSetStream's */
/* Work for `stream` (a cudaStream_t: an int here): recorded during a
 * capture of that stream; on another stream (the legacy one, 0, which a
 * capture cannot record), it spoils the capture, as CUDA's
 * implicit synchronisation does. */
inline void on_stream(const char *kind, std::function<void()> work, int stream)
{
    if (capture && stream != capture_stream)
        capture_spoiled = true;
    else if (capture)
        capture->push_back({kind, std::move(work)});
    else
        work();
}
/* A call that waits for the device: refused while a capture is on. */
inline bool refused_in_capture()
{
    if (capture)
        capture_spoiled = true;
    return capture != nullptr;
}

template <class K> auto launcher(K kernel, dim3 grid, dim3 blk)
{
    /* LAUNCH's stream on a GPU is always cu_stream: the one captured */
    return [=](auto... args) { on_stream("kernel", [=] { run(grid, blk, [=] { kernel(args...); }); }, capture_stream); };
}
} // namespace emu

#define LAUNCH(kernel, grid, block) emu::launcher(kernel, dim3(grid), dim3(block))

inline void __syncthreads() { emu::wait(emu::block_gate); }
/* Blocks run one after another: an atomic is a plain update, a fence has
 * nothing to order, and no cache can hold a stale line. */
inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    unsigned old = *p;
    *p = old + v;
    return old;
}
inline void __threadfence() {}
inline float __ldcg(const float *p) { return *p; }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return emu::exchange(v, emu::cur->lane ^ o); }
template <class T> T __shfl_sync(unsigned, T v, int src) { return emu::exchange(v, src); }
inline unsigned __float_as_uint(float x)
{
    unsigned u;
    memcpy(&u, &x, sizeof u);
    return u;
}
inline float __uint_as_float(unsigned u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
inline long long __double_as_longlong(double x)
{
    long long u;
    memcpy(&u, &x, sizeof u);
    return u;
}
/* A barrier over the caller's warp; the mask is not emulated: every lane that
 * has not returned must reach it, as the warp gate counts. */
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    (void)mask;
    emu::wait(emu::warp_gate[emu::cur->warp]);
}

/* ---- bf16: the raw bits, rounded and widened as cuda_bf16.h does ---- */
struct __nv_bfloat16 {
    unsigned short x;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)         /* NaN: keep the sign and top bits, make it quiet */
        return {(unsigned short)((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1);              /* to nearest, ties to even; overflow carries to inf */
    return {(unsigned short)(u >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h)
{
    unsigned u = (unsigned)h.x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (c += a b), with
 * the fragments laid out as the PTX ISA specifies ("Matrix Fragments for
 * mma.m16n8k16"): every lane deposits its registers, then computes its own
 * four results from the whole warp's, so a kernel that loads fragments in
 * the wrong layout computes the wrong product here as on a GPU. Lane l,
 * g = l / 4, t = l % 4: A register j holds row g + 8 (j % 2), columns
 * 2t + 8 (j / 2) and the next (the lower in the low half); B register j
 * holds column g, rows 2t + 8 j and the next; C element i is at row
 * g + 8 (i / 2), column 2t + i % 2. The sum runs over k in order with fmaf
 * (the tensor cores' order and rounding differ in the last bits). ---- */
namespace emu {
struct mma_regs {
    unsigned a[4], b[2];
};
inline mma_regs mma_slot[1024];
inline float bf16_bits(unsigned bits) { return __bfloat162float({(unsigned short)(bits & 0xffffu)}); }
inline void mma_m16n8k16_bf16(float c[4], const unsigned a[4], const unsigned b[2])
{
    fiber *me = cur;
    int base = me->warp * 32;
    memcpy(mma_slot[base + me->lane].a, a, sizeof mma_slot[0].a);
    memcpy(mma_slot[base + me->lane].b, b, sizeof mma_slot[0].b);
    wait(warp_gate[me->warp]);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        const mma_regs &r = mma_slot[base + l];
        int g = l >> 2, t = l & 3;
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 2; e++)
                A[g + 8 * (j & 1)][2 * t + e + 8 * (j >> 1)] = bf16_bits(r.a[j] >> (16 * e));
        for (int j = 0; j < 2; j++)
            for (int e = 0; e < 2; e++)
                B[2 * t + e + 8 * j][g] = bf16_bits(r.b[j] >> (16 * e));
    }
    int g = me->lane >> 2, t = me->lane & 3;
    for (int i = 0; i < 4; i++) {
        int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; k++)
            acc = fmaf(A[row][k], B[k][col], acc);
        c[i] = acc;
    }
    wait(warp_gate[me->warp]);        /* no lane deposits again before all have read */
}
/* ---- cp.async.cg.shared.global (16 bytes): a thread's copies wait in its
 * queue and land, in order, only when cp.async.wait_group lets their group
 * go, so a kernel that reads a tile it has not waited for reads the old
 * one here as it might on a GPU. A thread must not end with copies
 * pending. With RL_EMU_ORDER=warp they land at once instead, the other
 * extreme: a refill before every warp is done with the buffer shows. ---- */
struct async_copy {
    void *dst;
    const void *src;
    int group;
};
inline std::vector<async_copy> async_queue[1024];
inline int async_groups[1024];           /* groups committed: the open group's number */
inline int fiber_index() { return (int)(cur - fibers.data()); }
inline void cp_async16(void *dst, const void *src)
{
    if (((uintptr_t)dst | (uintptr_t)src) & 15) {
        fprintf(stderr, "cuda_emu: cp.async of 16 bytes between %p and %p, misaligned\n", dst, src);
        abort();
    }
    if (order_mode() == ORDER_WARP) {   /* at once: early refills show */
        memcpy(dst, src, 16);
        return;
    }
    int me = fiber_index();
    async_queue[me].push_back({dst, src, async_groups[me]});
}
inline void cp_async_commit() { async_groups[fiber_index()]++; }
/* every committed group but the newest n lands */
inline void cp_async_wait(int n)
{
    int me = fiber_index();
    std::vector<async_copy> &q = async_queue[me];
    size_t i = 0;
    for (; i < q.size() && q[i].group < async_groups[me] - n; i++)
        memcpy(q[i].dst, q[i].src, 16);
    q.erase(q.begin(), q.begin() + i);
}
inline void async_check_done()
{
    int me = fiber_index();
    if (!async_queue[me].empty()) {
        fprintf(stderr, "cuda_emu: thread %d of block (%u, %u) ended with %zu cp.async copies not waited for\n",
                me, blockIdx.x, blockIdx.y, async_queue[me].size());
        abort();
    }
    async_groups[me] = 0;
}

/* ---- ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lanes 8j..8j+7
 * give the rows (8 bf16, 16-byte aligned) of matrix j; lane l, g = l / 4,
 * t = l % 4, gets in register j the elements (g, 2t) and (g, 2t + 1) of
 * matrix j, or with trans (2t, g) and (2t + 1, g), the lower in the low
 * half. Every lane deposits its address first, as the hardware gathers
 * them, so a kernel giving the wrong rows loads the wrong fragments. ---- */
inline const unsigned short *ldsm_slot[1024];
inline void ldmatrix_x4(unsigned r[4], const unsigned short *row, bool trans)
{
    fiber *me = cur;
    int base = me->warp * 32;
    if ((uintptr_t)row & 15) {
        fprintf(stderr, "cuda_emu: ldmatrix row address %p, not 16-byte aligned\n", (const void *)row);
        abort();
    }
    ldsm_slot[base + me->lane] = row;
    wait(warp_gate[me->warp]);
    int g = me->lane >> 2, t = me->lane & 3;
    for (int j = 0; j < 4; j++) {
        const unsigned short *const *m = &ldsm_slot[base + 8 * j];
        unsigned lo = trans ? m[2 * t][g] : m[g][2 * t], hi = trans ? m[2 * t + 1][g] : m[g][2 * t + 1];
        r[j] = lo | hi << 16;
    }
    wait(warp_gate[me->warp]);        /* no lane deposits again before all have read */
}
} // namespace emu

/* ---- runtime ---- */
typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorGraphExecUpdateFailure = 910,
};
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
#define CUDART_VERSION 13000
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
    int multiProcessorCount;
};
typedef int cudaStream_t;
typedef struct emu_event *cudaEvent_t;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
/* a launch returns when its kernel is done */
inline cudaError_t cudaDeviceSynchronize() { return emu::refused_in_capture() ? cudaErrorStreamCaptureUnsupported : 0; }
inline const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaErrorStreamCaptureUnsupported   ? "operation not permitted when stream is capturing"
           : e == cudaErrorStreamCaptureInvalidated ? "capture invalidated by an operation it could not hold"
           : e                                      ? "emulated error"
                                                    : "no error";
}
inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int)
{
    snprintf(p->name, sizeof p->name, "CPU emulation");
    p->major = 0, p->minor = 0, p->totalGlobalMem = (size_t)1 << 30;
    p->multiProcessorCount = 2;
    return cudaSuccess;
}
template <class T> cudaError_t cudaMalloc(T **p, size_t n)
{
    if (emu::refused_in_capture())
        return cudaErrorStreamCaptureUnsupported;
    *p = (T *)malloc(n);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void *p)
{
    if (emu::refused_in_capture())
        return cudaErrorStreamCaptureUnsupported;
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *p, int v, size_t n)
{
    if (emu::refused_in_capture())
        return cudaErrorStreamCaptureUnsupported;
    memset(p, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    emu::on_stream("memset", [=] { memset(p, v, n); }, s);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind)
{
    if (emu::refused_in_capture())
        return cudaErrorStreamCaptureUnsupported;
    memmove(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t stream)
{
    emu::on_stream("memcpy", [=] { memmove(d, s, n); }, stream);
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    *s = 1;
    return cudaSuccess;
}

/* ---- graphs: a capture's record, run in order ---- */
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed };
typedef struct { int result; } cudaGraphExecUpdateResultInfo;
typedef struct emu_graph { std::vector<emu::recorded> nodes; } *cudaGraph_t, *cudaGraphExec_t;
typedef struct emu_graph_node *cudaGraphNode_t;
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode)
{
    if (emu::capture || s == 0)          /* the legacy stream cannot be captured */
        return cudaErrorStreamCaptureUnsupported;
    emu::capture = new std::vector<emu::recorded>;
    emu::capture_stream = s;
    emu::capture_spoiled = false;
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g)
{
    std::unique_ptr<std::vector<emu::recorded>> rec(emu::capture);
    emu::capture = nullptr;
    *g = nullptr;
    if (!rec || emu::capture_spoiled)
        return cudaErrorStreamCaptureInvalidated;
    *g = new emu_graph{std::move(*rec)};
    return cudaSuccess;
}
inline cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *n)
{
    if (nodes)
        return cudaErrorStreamCaptureUnsupported;     /* not used by the backend */
    *n = g->nodes.size();
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long)
{
    *x = new emu_graph{g->nodes};
    return cudaSuccess;
}
/* Refused unless the nodes are of the same kinds in the same order. */
inline cudaError_t cudaGraphExecUpdate(cudaGraphExec_t x, cudaGraph_t g, cudaGraphExecUpdateResultInfo *)
{
    bool same = x->nodes.size() == g->nodes.size();
    for (size_t i = 0; same && i < g->nodes.size(); i++)
        same = !strcmp(x->nodes[i].kind, g->nodes[i].kind);
    if (!same)
        return cudaErrorGraphExecUpdateFailure;
    x->nodes = g->nodes;
    return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t)
{
    if (emu::capture)
        return cudaErrorStreamCaptureUnsupported;      /* not used by the backend */
    for (emu::recorded &r : x->nodes)
        r.run();
    return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return cudaSuccess; }
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) { delete x; return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t *) { return 1; }      /* timing is not emulated */
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return 1; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return 1; }
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) { *ms = 0; return 1; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }

/* ---- cuBLAS (column-major, as cuBLAS is) ---- */
typedef int cublasHandle_t;
typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
typedef enum { CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_COMPUTE_32F_FAST_TF32 } cublasComputeType_t;
typedef enum { CUDA_R_32F, CUDA_R_16BF } cudaDataType;
enum { CUBLAS_GEMM_DEFAULT = -1 };
inline const char *cublasGetStatusString(cublasStatus_t s) { return s ? "not supported by the emulation" : "success"; }
inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = 1; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t s)
{
    emu::blas_stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
/* A cuBLAS call during a capture, after its arguments were checked:
 * recorded with its scalars' values (as the host pointer mode reads them
 * at the call), on the handle's stream, run when the graph runs. */
#define EMU_BLAS_DEFER(alpha, beta, call)                                         \
    do {                                                                          \
        if (emu::capture) {                                                       \
            float al_ = *(const float *)(alpha), be_ = *(const float *)(beta);    \
            emu::on_stream("cuBLAS", [=] {                                        \
                const float *alpha_ = &al_, *beta_ = &be_;                        \
                emu_replayed(#call, call);                                        \
            }, emu::blas_stream);                                                 \
            return CUBLAS_STATUS_SUCCESS;                                         \
        }                                                                         \
    } while (0)
/* A recorded call failing when its graph runs would lose its work unseen. */
inline void emu_replayed(const char *what, cublasStatus_t s)
{
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cuda_emu: a recorded call failed when its graph ran: %s\n", what);
        abort();
    }
}
inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float *alpha, const float *a, int lda, const float *b, int ldb,
                                  const float *beta, float *c, int ldc)
{
    EMU_BLAS_DEFER(alpha, beta, cublasSgemm(h, ta, tb, m, n, k, alpha_, a, lda, b, ldb, beta_, c, ldc));
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                tb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
    return CUBLAS_STATUS_SUCCESS;
}
/* A bf16 operand (column-major, `cols` columns of ld) widened to fp32, exactly. */
inline float *emu_widen_bf16(const void *x, int ld, int rows, int cols)
{
    size_t n = (size_t)ld * (cols - 1) + rows;
    float *f = (float *)malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++)
        f[i] = __bfloat162float({((const unsigned short *)x)[i]});
    return f;
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *a, cudaDataType at, int lda, const void *b,
                                   cudaDataType bt, int ldb, const void *beta, void *c, cudaDataType ct, int ldc,
                                   cublasComputeType_t, int)
{
    if (at != bt || (ct == CUDA_R_16BF && at != CUDA_R_16BF))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    EMU_BLAS_DEFER(alpha, beta, cublasGemmEx(h, ta, tb, m, n, k, alpha_, a, at, lda, b, bt, ldb, beta_, c, ct, ldc,
                                             CUBLAS_COMPUTE_32F, 0));
    if (at == CUDA_R_32F)
        return cublasSgemm(h, ta, tb, m, n, k, (const float *)alpha, (const float *)a, lda, (const float *)b, ldb,
                           (const float *)beta, (float *)c, ldc);
    /* bf16 in, fp32 (or bf16) out: the products of the rounded values in
     * fp32; a bf16 c is widened for beta and rounded to nearest even after */
    float *fa = emu_widen_bf16(a, lda, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m);
    float *fb = emu_widen_bf16(b, ldb, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k);
    float *fc = ct == CUDA_R_16BF ? emu_widen_bf16(c, ldc, m, n) : (float *)c;
    cublasSgemm(h, ta, tb, m, n, k, (const float *)alpha, fa, lda, fb, ldb, (const float *)beta, fc, ldc);
    if (ct == CUDA_R_16BF) {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
                ((unsigned short *)c)[(size_t)j * ldc + i] = __float2bfloat16_rn(fc[(size_t)j * ldc + i]).x;
        free(fc);
    }
    free(fa), free(fb);
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                                int n, int k, const float *alpha, const float *a, int lda,
                                                long long sa, const float *b, int ldb, long long sb,
                                                const float *beta, float *c, int ldc, long long sc, int batch)
{
    EMU_BLAS_DEFER(alpha, beta, cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha_, a, lda, sa, b, ldb, sb, beta_, c,
                                                          ldc, sc, batch));
    for (int i = 0; i < batch; i++)
        cublasSgemm(h, ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * sc, ldc);
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                                 int n, int k, const void *alpha, const void *a, cudaDataType at,
                                                 int lda, long long sa, const void *b, cudaDataType bt, int ldb,
                                                 long long sb, const void *beta, void *c, cudaDataType ct, int ldc,
                                                 long long sc, int batch, cublasComputeType_t, int)
{
    if (at != bt || (ct == CUDA_R_16BF && at != CUDA_R_16BF))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    EMU_BLAS_DEFER(alpha, beta, cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha_, a, at, lda, sa, b, bt, ldb, sb,
                                                           beta_, c, ct, ldc, sc, batch, CUBLAS_COMPUTE_32F, 0));
    size_t es = at == CUDA_R_16BF ? 2 : 4, cs = ct == CUDA_R_16BF ? 2 : 4;
    for (int i = 0; i < batch; i++) {
        cublasStatus_t st = cublasGemmEx(h, ta, tb, m, n, k, alpha, (const char *)a + i * sa * es, at, lda,
                                         (const char *)b + i * sb * es, bt, ldb, beta, (char *)c + i * sc * cs, ct, ldc,
                                         CUBLAS_COMPUTE_32F, 0);
        if (st)
            return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- cuBLASLt (column-major; the subset kernels/cuda_gemm_lt.cu uses) ----
 * The emulated heuristic picks by the shape, as a real one does, so that a
 * route that does not pin one algorithm loses batch invariance here too:
 * an algorithm sums k in blocks (of 16 where the product has fewer than 64
 * columns, the row count of gemm_ex's product, else 64), a block in k
 * order, then the blocks' sums in order; and where k >= 256 its first
 * offer splits k in three parts whose sums meet in an order that follows
 * the grid (as a split's in-place reduction does on a GPU). Algorithms
 * require the alignment the preference allowed. bf16 values are widened
 * exactly, the sums are fp32 (the compute type's bf16 or tf32 rounding of
 * fp32 inputs is not emulated, as for cublasGemmEx). RL_EMU_LT=split-only
 * leaves the unsplit offer out where k is split (a heuristic whose every
 * offer splits k: a pinned route must then set the split to none). */
typedef int cublasLtHandle_t;
struct emu_lt_desc { cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N; };
struct emu_lt_layout { cudaDataType type; uint64_t rows, cols; int64_t ld; };
struct emu_lt_pref { uint32_t align = 256; };
typedef emu_lt_desc *cublasLtMatmulDesc_t;
typedef emu_lt_layout *cublasLtMatrixLayout_t;
typedef emu_lt_pref *cublasLtMatmulPreference_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;   /* emulation: block, splits, scheme, alignment */
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;
typedef enum { CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4 } cublasLtMatmulDescAttributes_t;
typedef enum {
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
} cublasLtMatmulPreferenceAttributes_t;
typedef enum {
    CUBLASLT_ALGO_CONFIG_ID = 0,
    CUBLASLT_ALGO_CONFIG_TILE_ID = 1,
    CUBLASLT_ALGO_CONFIG_SPLITK_NUM = 2,
    CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME = 3,
    CUBLASLT_ALGO_CONFIG_STAGES_ID = 6,
    CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID = 7,
    CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID = 8,
} cublasLtMatmulAlgoConfigAttributes_t;
enum { CUBLASLT_REDUCTION_SCHEME_NONE = 0, CUBLASLT_REDUCTION_SCHEME_INPLACE = 1 };
enum { CUBLAS_STATUS_INVALID_VALUE = 7 };
inline cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = 1; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t, cudaDataType)
{
    *d = new emu_lt_desc;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                                     const void *v, size_t n)
{
    if (n != sizeof(cublasOperation_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(a == CUBLASLT_MATMUL_DESC_TRANSA ? &d->ta : &d->tb, v, n);
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows,
                                                 uint64_t cols, int64_t ld)
{
    if (rows == 0 || cols == 0 || ld < (int64_t)rows)
        return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new emu_lt_pref;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                           cublasLtMatmulPreferenceAttributes_t a, const void *v, size_t n)
{
    if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && n == sizeof(uint32_t)) {
        uint32_t x;
        memcpy(&x, v, n);
        p->align = x < p->align ? x : p->align;     /* one alignment for all four: the strictest asked */
    }
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }
inline cublasLtMatmulAlgo_t emu_lt_algo(uint64_t block, uint64_t splits, uint64_t align)
{
    cublasLtMatmulAlgo_t a = {{block, splits, splits > 1 ? (uint64_t)CUBLASLT_REDUCTION_SCHEME_INPLACE : 0, align}};
    return a;
}
inline cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t al,
                                                     cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                                     cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t p, int want,
                                                     cublasLtMatmulHeuristicResult_t *r, int *got)
{
    if (want <= 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    uint64_t k = d->ta == CUBLAS_OP_N ? al->cols : al->rows, block = dl->cols < 64 ? 16 : 64;
    const char *only = getenv("RL_EMU_LT");    /* split-only: no unsplit offer where k is split */
    bool split_only = only && !strcmp(only, "split-only") && k >= 256;
    *got = 0;
    for (uint64_t splits : {3, 1})
        if ((splits == 1 ? !split_only : k >= 256) && *got < want) {
            r[*got] = {};
            r[*got].algo = emu_lt_algo(block, splits, p->align);
            r[(*got)++].state = CUBLAS_STATUS_SUCCESS;
        }
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *a,
                                                          cublasLtMatmulAlgoConfigAttributes_t w, void *v, size_t n,
                                                          size_t *written)
{
    size_t size = w == CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID || w == CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID ? 2 : 4;
    if (n != size)
        return CUBLAS_STATUS_INVALID_VALUE;
    /* the emulation's algorithms: id 1, tile = k's block, one stage */
    uint32_t x = w == CUBLASLT_ALGO_CONFIG_SPLITK_NUM          ? (uint32_t)a->data[1]
                 : w == CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME ? (uint32_t)a->data[2]
                 : w == CUBLASLT_ALGO_CONFIG_TILE_ID          ? (uint32_t)a->data[0]
                 : w == CUBLASLT_ALGO_CONFIG_ID || w == CUBLASLT_ALGO_CONFIG_STAGES_ID ? 1u : 0u;
    memcpy(v, &x, size);             /* little-endian: a 2-byte setting is x's low half */
    *written = size;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulAlgoConfigSetAttribute(cublasLtMatmulAlgo_t *a,
                                                          cublasLtMatmulAlgoConfigAttributes_t w, const void *v, size_t n)
{
    if (n != 4 || (w != CUBLASLT_ALGO_CONFIG_SPLITK_NUM && w != CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME))
        return CUBLAS_STATUS_INVALID_VALUE;  /* the emulation's algorithms let only these two be set */
    uint32_t x;
    memcpy(&x, v, 4);
    a->data[w == CUBLASLT_ALGO_CONFIG_SPLITK_NUM ? 1 : 2] = x;
    return CUBLAS_STATUS_SUCCESS;
}
/* Whether op(A) (m x k), op(B) (k x n) and D (m x n) agree */
inline bool emu_lt_dims(const emu_lt_desc *d, const emu_lt_layout *al, const emu_lt_layout *bl,
                        const emu_lt_layout *dl)
{
    uint64_t am = d->ta == CUBLAS_OP_N ? al->rows : al->cols, ak = d->ta == CUBLAS_OP_N ? al->cols : al->rows;
    uint64_t bk = d->tb == CUBLAS_OP_N ? bl->rows : bl->cols, bn = d->tb == CUBLAS_OP_N ? bl->cols : bl->rows;
    return am == dl->rows && bn == dl->cols && ak == bk && al->type == bl->type;
}
inline cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t al,
                                              cublasLtMatrixLayout_t bl, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t dl, const cublasLtMatmulAlgo_t *a,
                                              cublasLtMatmulHeuristicResult_t *r)
{
    *r = {};
    r->algo = *a;
    bool ok = a->data[0] && a->data[1] >= 1 && a->data[1] <= 3 && emu_lt_dims(d, al, bl, dl);
    return ok ? (cublasStatus_t)CUBLAS_STATUS_SUCCESS : (cublasStatus_t)CUBLAS_STATUS_INVALID_VALUE;
}
inline float emu_lt_get(const void *x, cudaDataType t, size_t i)
{
    return t == CUDA_R_32F ? ((const float *)x)[i] : __bfloat162float({((const unsigned short *)x)[i]});
}
/* Element (r, c) of op(x) for a column-major layout l. */
inline float emu_lt_at(const void *x, const emu_lt_layout *l, cublasOperation_t op, uint64_t r, uint64_t c)
{
    return op == CUBLAS_OP_N ? emu_lt_get(x, l->type, c * l->ld + r) : emu_lt_get(x, l->type, r * l->ld + c);
}
/* op(x)'s rows (or, with cols, its columns), each k floats in a row of the
 * result: the dot products below then run over contiguous floats (the same
 * values and the same order as element by element, many times faster) */
inline std::vector<float> emu_lt_lines(const void *x, const emu_lt_layout *l, cublasOperation_t op, bool cols,
                                       uint64_t lines, uint64_t k)
{
    std::vector<float> out(lines * k);
    for (uint64_t r = 0; r < lines; r++)
        for (uint64_t i = 0; i < k; i++)
            out[r * k + i] = cols ? emu_lt_at(x, l, op, i, r) : emu_lt_at(x, l, op, r, i);
    return out;
}
/* The dot product of a row of op(A) and a column of op(B) over k0..k1, in
 * the algorithm's blocks. */
inline float emu_lt_dot(const float *arow, const float *bcol, uint64_t k0, uint64_t k1, uint64_t block)
{
    float total = 0;
    for (uint64_t kb = k0; kb < k1; kb += block) {
        float part = 0;
        for (uint64_t k = kb; k < k1 && k < kb + block; k++)
            part = fmaf(arow[k], bcol[k], part);
        total += part;
    }
    return total;
}
inline cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *a,
                                     cublasLtMatrixLayout_t al, const void *b, cublasLtMatrixLayout_t bl,
                                     const void *beta, const void *c, cublasLtMatrixLayout_t cl, void *dst,
                                     cublasLtMatrixLayout_t dl, const cublasLtMatmulAlgo_t *algo, void *, size_t,
                                     cudaStream_t stream)
{
    uint64_t block = algo->data[0], splits = algo->data[1], align = algo->data[3];
    size_t es = al->type == CUDA_R_16BF ? 2 : 4, cs = dl->type == CUDA_R_16BF ? 2 : 4;
    if (!emu_lt_dims(d, al, bl, dl) || c != dst || splits < 1 || splits > 3)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (((size_t)a | (size_t)b | (size_t)c | (size_t)dst | al->ld * es | bl->ld * es | dl->ld * cs) % align)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (emu::capture) {               /* the descriptors as they are now, as a GPU's launch takes them */
        emu_lt_desc d_ = *d;
        emu_lt_layout al_ = *al, bl_ = *bl, cl_ = *cl, dl_ = *dl;
        cublasLtMatmulAlgo_t algo_ = *algo;
        float alpha_ = *(const float *)alpha, beta_ = *(const float *)beta;
        emu::on_stream("cuBLASLt", [=]() mutable {
            emu_replayed("cublasLtMatmul", cublasLtMatmul(0, &d_, &alpha_, a, &al_, b, &bl_, &beta_, c, &cl_, dst,
                                                          &dl_, &algo_, nullptr, 0, stream));
        }, stream);
        return CUBLAS_STATUS_SUCCESS;
    }
    uint64_t k = d->ta == CUBLAS_OP_N ? al->cols : al->rows, n = dl->cols;
    float al_ = *(const float *)alpha, be = *(const float *)beta;
    std::vector<float> arows = emu_lt_lines(a, al, d->ta, false, dl->rows, k);
    std::vector<float> bcols = emu_lt_lines(b, bl, d->tb, true, n, k);
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t i = 0; i < dl->rows; i++) {
            float part[3] = {0, 0, 0}, sum = 0;
            for (uint64_t s = 0; s < splits; s++)
                part[s] = emu_lt_dot(&arows[i * k], &bcols[j * k], k * s / splits, k * (s + 1) / splits, block);
            for (uint64_t s = 0; s < splits; s++)   /* the split parts meet in the grid's order */
                sum += part[(n / 8) % 2 ? splits - 1 - s : s];
            size_t at = j * dl->ld + i;
            float y = al_ * sum + (be != 0 ? be * emu_lt_get(c, cl->type, at) : 0.0f);
            if (dl->type == CUDA_R_32F)
                ((float *)dst)[at] = y;
            else
                ((unsigned short *)dst)[at] = __float2bfloat16_rn(y).x;
        }
    return CUBLAS_STATUS_SUCCESS;
}
#endif
