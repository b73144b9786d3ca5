/* The host side of tma.cuh: tensor maps for TMA loads, encoded by the driver's
 * cuTensorMapEncodeTiled (reached through the runtime's driver entry point, so that nothing
 * links libcuda directly) or, under the host emulator, by the emulator. */
#include <stdarg.h>
#include <stdio.h>

#include "model/cuda/tma.cuh"

#ifndef DT_CUDA_EMULATOR
#include <cuda.h>
#include <cudaTypedefs.h>

static_assert(sizeof(tma_map) == sizeof(CUtensorMap) && alignof(tma_map) == alignof(CUtensorMap),
              "tma_map must be a CUtensorMap");
#endif

static int tma_refuse(char *why, int len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tma_refuse(char *why, int len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (why && len > 0) vsnprintf(why, (size_t)len, fmt, ap);
    va_end(ap);
    return -1;
}

/* The arguments both encoders take, held to tma_encode_bf16's contract (tma.cuh). */
static int tma_check(const void *base, int rank, const uint64_t *dims, const uint64_t *strides,
                     const uint32_t *box, int swizzle, char *why, int len) {
    if (rank < 2 || rank > 5) return tma_refuse(why, len, "rank %d (2 to 5)", rank);
    if (!base || (uintptr_t)base % 16)
        return tma_refuse(why, len, "tensor at %p (16-byte aligned device memory)", base);
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 0 || dims[i] > (1ull << 32))
            return tma_refuse(why, len, "dimension %d of %llu elements (1 to 2^32)", i,
                              (unsigned long long)dims[i]);
        if (box[i] == 0 || box[i] > 256)
            return tma_refuse(why, len, "box dimension %d of %u elements (1 to 256)", i, box[i]);
        if (i > 0 && (strides[i - 1] % 16 || strides[i - 1] >= (1ull << 40)))
            return tma_refuse(why, len, "stride of dimension %d: %llu bytes (a multiple of 16, "
                              "below 2^40)", i, (unsigned long long)strides[i - 1]);
    }
    const unsigned row = 2u * box[0];
    if (row % 16) return tma_refuse(why, len, "box rows of %u bytes (a multiple of 16)", row);
    if (swizzle != 0 && swizzle != 32 && swizzle != 64 && swizzle != 128)
        return tma_refuse(why, len, "swizzle %d (0, 32, 64 or 128 bytes)", swizzle);
    if (swizzle && row != (unsigned)swizzle)
        return tma_refuse(why, len, "box rows of %u bytes under the %d-byte swizzle (they must "
                          "be the swizzle's width)", row, swizzle);
    return 0;
}

#ifdef DT_CUDA_EMULATOR

int tma_encode_bf16(tma_map *map, const void *base, int rank, const uint64_t *dims,
                    const uint64_t *strides, const uint32_t *box, int swizzle, char *why,
                    int len) {
    if (tma_check(base, rank, dims, strides, box, swizzle, why, len)) return -1;
    return emu_tma_encode(map, base, rank, 2, dims, strides, box, swizzle, why, len);
}

#else

/* cuTensorMapEncodeTiled, looked up once; NULL where the driver has none */
static PFN_cuTensorMapEncodeTiled_v12000 tma_encoder(void) {
    static const PFN_cuTensorMapEncodeTiled_v12000 fn = []() {
        void *p = NULL;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                             cudaEnableDefault, &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess) {
            (void)cudaGetLastError();
            p = NULL;
        }
        return (PFN_cuTensorMapEncodeTiled_v12000)p;
    }();
    return fn;
}

int tma_encode_bf16(tma_map *map, const void *base, int rank, const uint64_t *dims,
                    const uint64_t *strides, const uint32_t *box, int swizzle, char *why,
                    int len) {
    if (tma_check(base, rank, dims, strides, box, swizzle, why, len)) return -1;
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tma_encoder();
    if (!encode)
        return tma_refuse(why, len, "the CUDA driver has no cuTensorMapEncodeTiled (12.0 or "
                          "later needed)");
    cuuint64_t d[5], st[4];
    cuuint32_t bx[5], es[5];
    for (int i = 0; i < rank; i++) {
        d[i] = dims[i];
        bx[i] = box[i];
        es[i] = 1;
        if (i > 0) st[i - 1] = strides[i - 1];
    }
    const CUtensorMapSwizzle sw = swizzle == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                  : swizzle == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                  : swizzle == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                                  : CU_TENSOR_MAP_SWIZZLE_NONE;
    const CUresult r = encode((CUtensorMap *)map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                              (cuuint32_t)rank, const_cast<void *>(base), d, st, bx, es,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, sw, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return tma_refuse(why, len, "cuTensorMapEncodeTiled refused the map (CUresult %d)",
                          (int)r);
    return 0;
}

#endif
