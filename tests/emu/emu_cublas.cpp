/* cuBLAS shim of the CUDA host emulator (a test tool; semantics in include/cublas_v2.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <set>
#include <vector>

#include "cublas_v2.h"

struct emu_cublas {
    cudaStream_t stream;
};
static std::set<cublasHandle_t> g_handles;

static cublasStatus_t fail(cublasStatus_t s, const char *what) {
    fprintf(stderr, "emu: cuBLAS: %s\n", what);
    return s;
}

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate: NULL");
    *handle = new emu_cublas{NULL};
    g_handles.insert(*handle);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!g_handles.erase(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy: no such handle");
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (!g_handles.count(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream: no such handle");
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}
/* Checked (device memory of the size given) and otherwise unused: the emulated products need no
 * scratch memory. */
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes) {
    if (!g_handles.count(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetWorkspace: no such handle");
    if (bytes && !emu_device_range(workspace, bytes))
        return fail(CUBLAS_STATUS_INVALID_VALUE,
                    "cublasSetWorkspace: the workspace is not inside one device allocation");
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!g_handles.count(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetMathMode: no such handle");
    if (mode != CUBLAS_DEFAULT_MATH) /* TF32 and the others are not emulated */
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasSetMathMode: only CUBLAS_DEFAULT_MATH");
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

/* bf16 as the tensor cores see an fp32 input: round to nearest even to 8 mantissa bits. */
static float round_bf16(float x) {
    unsigned u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) return x; /* inf, NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Element i of X: fp32, or bf16 bits widened. */
static float element(const void *X, cudaDataType type, size_t i) {
    if (type == CUDA_R_32F) return ((const float *)X)[i];
    const unsigned u = (unsigned)((const unsigned short *)X)[i] << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* op(X) (rows x cols) of the column-major X (ld) copied row by row: out[r * cols + c]. */
static void pack(std::vector<float> &out, const void *X, cudaDataType type, int ld,
                 cublasOperation_t op, int rows, int cols, bool bf16) {
    out.resize((size_t)rows * cols);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float v = element(X, type, op == CUBLAS_OP_N ? r + (size_t)c * ld : c + (size_t)r * ld);
            out[(size_t)r * cols + c] = bf16 ? round_bf16(v) : v;
        }
}

/* Elements spanned by a column-major rows x cols matrix with leading dimension ld. */
static size_t span(int rows, int cols, int ld) {
    return rows && cols ? (size_t)(cols - 1) * ld + rows : 0;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
    if (!g_handles.count(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGemmEx: no such handle");
    if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_16BF)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasGemmEx: compute type not emulated");
    const bool ab16 = Atype == CUDA_R_16BF && Btype == CUDA_R_16BF;
    const bool c16 = Ctype == CUDA_R_16BF;
    if (!(ab16 || (Atype == CUDA_R_32F && Btype == CUDA_R_32F)) ||
        !(Ctype == CUDA_R_32F || (c16 && ab16)) || algo != CUBLAS_GEMM_DEFAULT ||
        (ab16 && computeType != CUBLAS_COMPUTE_32F))
        return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                    "cublasGemmEx: only fp32 A, B, C (or bf16 A, B with CUBLAS_COMPUTE_32F and an "
                    "fp32 or bf16 C), default algo");
    const size_t ab_size = ab16 ? 2 : sizeof(float), c_size = c16 ? 2 : sizeof(float);
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) ||
        (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGemmEx: bad operation");
    /* stored shapes: A is m x k (N) or k x m (T), B is k x n (N) or n x k (T), C is m x n */
    const int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    const int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) ||
        ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1) || !alpha || !beta)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGemmEx: bad sizes or leading dimensions");
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    if (!emu_device_range(C, span(m, n, ldc) * c_size) ||
        (k > 0 && (!emu_device_range(A, span(a_rows, a_cols, lda) * ab_size) ||
                   !emu_device_range(B, span(b_rows, b_cols, ldb) * ab_size))))
        return fail(CUBLAS_STATUS_INVALID_VALUE,
                    "cublasGemmEx: a matrix is not inside one device allocation");
    if (emu_capturing(handle->stream)) { /* recorded with its scalars' values */
        emu_capture_add(handle->stream, "cublasGemmEx", [=](cudaStream_t on) {
            cudaStream_t was = handle->stream;
            handle->stream = on;
            (void)cublasGemmEx(handle, transa, transb, m, n, k, &al, A, Atype, lda, B, Btype, ldb,
                               &be, C, Ctype, ldc, computeType, algo);
            handle->stream = was;
        });
        return CUBLAS_STATUS_SUCCESS;
    }
    /* one operation on the handle's stream: it reads A and B, writes C (checked against the
     * other streams' work, as a kernel's arguments are) */
    if (emu_stream_op(handle->stream, "cublasGemmEx") != cudaSuccess)
        return fail(CUBLAS_STATUS_INVALID_VALUE,
                    "cublasGemmEx: the handle's stream does not exist");
    if (k > 0) {
        (void)emu_stream_access(A, span(a_rows, a_cols, lda) * ab_size, 0);
        (void)emu_stream_access(B, span(b_rows, b_cols, ldb) * ab_size, 0);
    }
    (void)emu_stream_access(C, span(m, n, ldc) * c_size, 1);
    const bool bf16 = computeType == CUBLAS_COMPUTE_32F_FAST_16BF;
    std::vector<float> a, bt; /* op(A) as m rows of k, op(B)^T as n rows of k */
    if (k > 0) {
        pack(a, A, Atype, lda, transa, m, k, bf16);
        pack(bt, B, Btype, ldb, transb == CUBLAS_OP_N ? CUBLAS_OP_T : CUBLAS_OP_N, n, k, bf16);
    }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0.0f; /* fp32, over k in order */
            const float *ar = a.data() + (size_t)i * k, *br = bt.data() + (size_t)j * k;
            for (int l = 0; l < k; l++) acc += ar[l] * br[l];
            const size_t at = i + (size_t)j * ldc;
            /* beta 0: C is not read */
            const float r = be == 0.0f ? al * acc : al * acc + be * element(C, Ctype, at);
            if (c16) { /* stored rounded; a NaN stays a (quiet) NaN, not its high half */
                const float rr = round_bf16(r);
                unsigned u;
                memcpy(&u, &rr, sizeof u);
                ((unsigned short *)C)[at] = (unsigned short)((u >> 16) | (r != r ? 0x40u : 0u));
            } else {
                ((float *)C)[at] = r;
            }
        }
    return CUBLAS_STATUS_SUCCESS;
}
