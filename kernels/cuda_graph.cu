/* Decode steps as CUDA graphs ($RL_CUDA_GRAPHS). A decode step of
 * TinyLlama's shape is about 180 launches (8 a layer), each a few
 * microseconds of the host's time, against a step of a few milliseconds at
 * batch 1: the GPU can end up waiting for the host. Between graph_begin and
 * graph_end the backend's stream is captured instead: the ops run their
 * host code as always (the sequences' positions, the workspaces, the
 * routes), but their launches are recorded, and graph_end launches the
 * record as one graph. The results are the launches' own, in their order.
 *
 * A step's graph differs from the last one's only in kernel parameters
 * (positions, cache rows, the products' routes are the same), so the
 * instantiated graph of the last step with as many nodes is updated in
 * place (cudaGraphExecUpdate), which costs far less than instantiating;
 * where the update is refused (another topology), the step's graph is
 * instantiated anew and replaces it.
 *
 * What a capture cannot hold (cudaMalloc, cudaFree, a synchronous copy or
 * memset: a workspace that grows, a bf16 copy of parameters made for the
 * first time, an upload or a download) calls capture_pause first: it ends
 * the capture, launches what was recorded, and the step's remaining ops
 * run as they come. The capture mode is thread-local, so a call that
 * skipped capture_pause fails at once instead of being recorded wrongly
 * (and the emulation of tests/emu refuses it likewise).
 *
 * This file also owns the backend's stream, cu_stream, and starts cuBLAS
 * on it with a workspace of its own. */
#include "cuda_common.cuh"

/* Whether auto runs decode steps as graphs: not until a GPU has timed them
 * (tests/gpu/run times a decode step both ways and says which to choose). */
#define AUTO_GRAPHS false
#define GRAPH_EXECS 8                 /* instantiated graphs kept, by node count */
/* cuBLAS's own workspace (its guide's size for Hopper; 4 MiB would do on
 * older cards): cuBLAS then never allocates inside a capture, where from
 * CUDA 12.2 on it would add allocations to the graph. Set with graphs on
 * and off alike: cuBLAS may choose its kernels by the workspace, and a
 * product's bits must not depend on RL_CUDA_GRAPHS. */
#define BLAS_WORKSPACE (32u << 20)

cudaStream_t cu_stream;
static bool graphs_on, capturing;
static struct exec_slot {
    cudaGraphExec_t exec;
    size_t nodes;
    unsigned long long used;          /* the step that last launched it, for eviction */
} execs[GRAPH_EXECS];
/* for rlflow_cuda_graph_stats: graphs launched, of those updated in place
 * and instantiated, and captures ended early by capture_pause */
static unsigned long long n_launched, n_updated, n_instantiated, n_paused;

int cuda_graphs_mode(const char *name)
{
    static const char *const modes[] = {"auto", "on", "off"};
    int i = mode_index(name, modes);
    graphs_on = i == 0 ? AUTO_GRAPHS : i == 1;
    return i < 0 ? -1 : 0;
}
bool cuda_graphs(void) { return graphs_on; }

/* The slot to launch g from: the one of as many nodes, updated to g, or
 * the least recently used one, with g instantiated in it. */
static cudaGraphExec_t exec_for(cudaGraph_t g, size_t nodes)
{
    exec_slot *slot = NULL, *oldest = &execs[0];
    for (exec_slot &x : execs) {
        if (x.exec && x.nodes == nodes)
            slot = &x;
        if (x.used < oldest->used)
            oldest = &x;
    }
    if (slot) {
        cudaGraphExecUpdateResultInfo info;
        cudaError_t e = cudaGraphExecUpdate(slot->exec, g, &info);
        if (e == cudaSuccess) {
            n_updated++;
            slot->used = n_launched;
            return slot->exec;
        }
        if (e != cudaErrorGraphExecUpdateFailure)
            fatal("cudaGraphExecUpdate", cudaGetErrorString(e));
        cudaGetLastError();           /* refused: another topology, instantiated below */
    } else {
        slot = oldest;
    }
    if (slot->exec)
        CU(cudaGraphExecDestroy(slot->exec));
    CU(cudaGraphInstantiate(&slot->exec, g, 0));
    slot->nodes = nodes;
    slot->used = n_launched;
    n_instantiated++;
    return slot->exec;
}

/* Ends the capture and launches what it recorded. */
static void launch_captured(void)
{
    cudaGraph_t g = NULL;
    capturing = false;
    cudaError_t e = cudaStreamEndCapture(cu_stream, &g);
    if (e != cudaSuccess)
        fatal("cudaStreamEndCapture (an op made a call a capture cannot hold without capture_pause)",
              cudaGetErrorString(e));
    size_t nodes = 0;
    CU(cudaGraphGetNodes(g, NULL, &nodes));
    if (nodes) {
        n_launched++;
        CU(cudaGraphLaunch(exec_for(g, nodes), cu_stream));
    }
    CU(cudaGraphDestroy(g));
}

void capture_pause(void)
{
    if (capturing) {
        n_paused++;
        launch_captured();
    }
}

static void graph_begin(void)
{
    if (capturing)
        return;
    CU(cudaStreamBeginCapture(cu_stream, cudaStreamCaptureModeThreadLocal));
    capturing = true;
}
static void graph_end(void)
{
    if (capturing)
        launch_captured();
}

extern "C" __attribute__((visibility("default"))) void rlflow_cuda_graph_stats(unsigned long long out[4])
{
    out[0] = n_launched, out[1] = n_updated, out[2] = n_instantiated, out[3] = n_paused;
}

/* The stream, cuBLAS on it and cuBLAS's workspace (after cublasCreate);
 * NULL, or what failed */
const char *cuda_stream_start(void)
{
    static void *ws;
    if (cudaStreamCreate(&cu_stream) != cudaSuccess)
        return "cannot create a CUDA stream";
    if (cublasSetStream(blas, cu_stream) != CUBLAS_STATUS_SUCCESS)   /* first: it resets the workspace */
        return "cuBLAS refused the stream";
    if (cudaMalloc(&ws, BLAS_WORKSPACE) != cudaSuccess)
        return "out of GPU memory for cuBLAS's workspace";
    if (cublasSetWorkspace(blas, ws, BLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS)
        return "cuBLAS refused its workspace";
    return NULL;
}

/* Kernel times wait for the device after every launch: no capture then. */
void cuda_graph_ops(struct backend *b)
{
    if (graphs_on && !ktimes_on) {
        b->graph_begin = graph_begin;
        b->graph_end = graph_end;
    }
}
