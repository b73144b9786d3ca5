/* Rotary position embedding on the CUDA backend, GPT-J interleaved pairs (SPEC section 2; the
 * CPU oracle is model/cpu/rope.c): pair i of a head is (x[2i], x[2i+1]), rotated by the angle
 * pos * theta^(-2i/d).
 *
 * The angle is computed exactly as the CPU computes it, in double: freq = pow(theta, -2i/d),
 * a = pos * freq, then cos and sin in double, rounded to float once. CUDA's double pow, cos and
 * sin are within 2 ulp of glibc's, an error of ~1e-11 radians at pos 1e5, so the float cos and
 * sin equal the CPU's except where a double value lies within that distance of a float rounding
 * tie (about one in a thousand), and then differ by 1 ulp.
 *
 * The forward rotates q and k, dt_operands (operand.cuh): read widened, rotated in fp32 and
 * stored rounded in bf16 mode, so that mode's result is the rounding of fp32 mode's on the same
 * (widened) values. The backward reads the fp32 gradients of the attention and writes operands
 * (only the q and k products' backwards read them), rounded the same way as stored. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"

#define ROPE_THREADS 128

/* One block per token row of all heads (grid-stride over the B*T rows). The block first builds
 * the row's cos/sin table (half entries, shared memory) and then rotates every head with it.
 * Slot p of a row covers head p / npair, pair p % npair; for an odd head width the last slot of
 * each head is the unpaired last channel, which is copied. Each slot is read before it is
 * written by the same thread, so out may equal inp where both have the same element type. TO,
 * TI: float or operand_bf16 (the forward: both the operand type; the backward: an operand out
 * from an fp32 inp). */
template <typename TO, typename TI>
__global__ void rope_kernel(TO *out, const TI *inp, int B, int T, int n_heads, int d, float theta,
                            int pos0, double sign) {
    extern __shared__ float rope_table[]; /* cs (half), sn (half) */
    int half = d / 2;
    int npair = (d + 1) / 2;
    float *cs = rope_table;
    float *sn = rope_table + (half > 0 ? half : 1);
    size_t C = (size_t)n_heads * d;
    int64_t rows = (int64_t)B * T;
    int slots = n_heads * npair;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int t = (int)(r % T);
        double pos = (double)pos0 + t;
        __syncthreads(); /* the previous row's table is no longer read */
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            double freq = pow((double)theta, -2.0 * i / d); /* theta^(-2i/d), as the CPU */
            double a = pos * freq;
            double s, c;
            sincos(a, &s, &c);
            cs[i] = (float)c;
            sn[i] = (float)(sign * s);
        }
        __syncthreads();
        const TI *x = inp + (size_t)r * C; /* (n_heads*d) */
        TO *o = out + (size_t)r * C;       /* (n_heads*d) */
        for (int p = threadIdx.x; p < slots; p += blockDim.x) {
            int h = p / npair, i = p % npair;
            size_t at = (size_t)h * d + 2 * (size_t)i;
            if (2 * i + 1 < d) {
                float x0 = operand_load(x, at), x1 = operand_load(x, at + 1);
                operand_store(o, at, x0 * cs[i] - x1 * sn[i]);
                operand_store(o, at + 1, x1 * cs[i] + x0 * sn[i]);
            } else { /* an odd head width leaves its last channel (a bf16 inp: exact) */
                operand_store(o, at, operand_load(x, at));
            }
        }
    }
}

template <typename TO, typename TI>
static void rope_launch(TO *out, const TI *inp, int B, int T, int n_heads, int d, float theta,
                        int pos0, double sign) {
    if (B <= 0 || T <= 0 || n_heads <= 0 || d <= 0) return;
    int half = d / 2;
    size_t smem = 2 * (size_t)(half > 0 ? half : 1) * sizeof(float);
    auto kernel = rope_kernel<TO, TI>;
    kernel<<<cuda_blocks((size_t)B * T, 1), ROPE_THREADS, smem, cuda_stream()>>>(
        out, inp, B, T, n_heads, d, theta, pos0, sign);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_rope_forward(dt_operand *out, const dt_operand *inp, int B, int T,
                                  int n_heads, int d, float theta, int pos0) {
    if (cuda_operand_bf16())
        rope_launch((operand_bf16 *)out, (const operand_bf16 *)inp, B, T, n_heads, d, theta, pos0,
                    1.0);
    else
        rope_launch((float *)out, (const float *)inp, B, T, n_heads, d, theta, pos0, 1.0);
}

/* The backward rotates by the negative angle (the transpose, and inverse, of a rotation). In
 * bf16 mode dinp (2 bytes an element) must not alias dout (4): a row's stores would overwrite
 * elements of the same row that other threads have yet to read. */
extern "C" void cuda_rope_backward(dt_operand *dinp, const float *dout, int B, int T,
                                   int n_heads, int d, float theta, int pos0) {
    if (cuda_operand_bf16())
        rope_launch((operand_bf16 *)dinp, dout, B, T, n_heads, d, theta, pos0, -1.0);
    else
        rope_launch((float *)dinp, dout, B, T, n_heads, d, theta, pos0, -1.0);
}
