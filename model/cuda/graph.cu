/* CUDA graphs of the backend's work (model/backend.h, graph_begin .. graph_free): the compute
 * stream is captured, the capture instantiated once, and each launch replays every kernel,
 * copy and product with one call, where issuing them one by one costs the host a few
 * microseconds each and the GPU a gap between them.
 *
 * A graph keeps the addresses it was captured with. The model's buffers, the staging buffers
 * and cuBLAS's workspace (matmul.cu) live as long as the model; the op workspaces may move when
 * they grow, so each graph remembers their generation (memory.cu) and a launch after one moved
 * is refused (the caller captures again). Growth inside a capture aborts with its own message:
 * the eager run before a capture sizes them. */
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

struct dt_graph {
    cudaGraphExec_t exec;
    unsigned long long generation; /* cuda_workspace_generation() at the capture */
};

static int graph_error(cudaError_t e, const char *what) {
    fprintf(stderr, "difftrain: error: CUDA graph: %s: %s (%s)\n", what, cudaGetErrorString(e),
            cudaGetErrorName(e));
    (void)cudaGetLastError();
    return -1;
}

extern "C" int cuda_graph_begin(void) {
    if (cuda_capturing()) {
        fprintf(stderr, "difftrain: error: CUDA graph: a capture is already active\n");
        return -1;
    }
    /* global mode: a call anywhere in the process that would wait for the device or allocate
     * fails (and ends the capture) rather than silently splitting the step */
    cudaError_t e = cudaStreamBeginCapture(cuda_stream(), cudaStreamCaptureModeGlobal);
    if (e != cudaSuccess) return graph_error(e, "cudaStreamBeginCapture");
    cuda_set_capturing(1);
    cuda_weights_drop(); /* the recording makes the weight copies (each launch drops them too) */
    return 0;
}

extern "C" dt_graph *cuda_graph_end(void) {
    if (!cuda_capturing()) {
        fprintf(stderr, "difftrain: error: CUDA graph: no capture to end\n");
        return NULL;
    }
    cuda_set_capturing(0);
    cuda_weights_drop(); /* the recording made none: the host's record of them must say so */
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(cuda_stream(), &graph);
    if (e != cudaSuccess) {
        graph_error(e, "cudaStreamEndCapture");
        return NULL;
    }
    /* a launch error recorded while capturing belongs to the capture */
    e = cudaGetLastError();
    if (e != cudaSuccess) {
        (void)cudaGraphDestroy(graph);
        graph_error(e, "a launch while capturing");
        return NULL;
    }
    dt_graph *g = (dt_graph *)calloc(1, sizeof *g);
    if (!g) {
        (void)cudaGraphDestroy(graph);
        fprintf(stderr, "difftrain: error: CUDA graph: out of memory\n");
        return NULL;
    }
    e = cudaGraphInstantiate(&g->exec, graph, 0);
    (void)cudaGraphDestroy(graph); /* the executable graph keeps what it needs */
    if (e != cudaSuccess) {
        free(g);
        graph_error(e, "cudaGraphInstantiate");
        return NULL;
    }
    g->generation = cuda_workspace_generation();
    return g;
}

extern "C" int cuda_graph_launch(dt_graph *g) {
    if (!g || g->generation != cuda_workspace_generation()) return 0;
    cuda_weights_drop(); /* the graph makes them, as the recording did */
    CUDA_CHECK(cudaGraphLaunch(g->exec, cuda_stream()));
    CUDA_LAUNCH_CHECK(); /* a replayed launch's own error */
    return 1;
}

extern "C" void cuda_graph_free(dt_graph *g) {
    if (!g) return;
    (void)cudaGraphExecDestroy(g->exec);
    free(g);
}
