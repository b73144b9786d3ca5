/* RoPE's pieces that another kernel may take into its own epilogue (the fused attention's
 * backward stores dq and dk rotated back: flash_backward.cuh): the rotation of one pair and the
 * cos/sin table (rope.cu). Internal to model/cuda. */
#ifndef DT_CUDA_ROPE_CUH
#define DT_CUDA_ROPE_CUH

#include "model/cuda/cuda_common.cuh"

/* The rotation of pair (x0, x1) by the angle of (c, s), each product and sum rounded as written
 * (no contraction left to the compiler): every kernel that rotates gives the same bits. The
 * backward's negative angle is (c, -s). */
__device__ __forceinline__ void rope_rotate(float x0, float x1, float c, float s, float *o0,
                                            float *o1) {
    *o0 = __fmaf_rn(x0, c, -__fmul_rn(x1, s));
    *o1 = __fmaf_rn(x1, c, __fmul_rn(x0, s));
}

/* The table (npos positions at least, d/2 pairs): entry (p, i) = {cos, sin} of pair i's angle
 * at position p (rope.cu says how each is computed). Stream-ordered: it is (re)built by a kernel
 * where it does not yet hold what is asked, and stays valid until a call with another theta or
 * d. */
const float2 *cuda_rope_table(float theta, int d, int npos);

#endif
