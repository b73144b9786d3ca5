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
 * (only the q and k products' backwards read them), rounded the same way as stored; the fused
 * attention's backward does the same rotation in its own stores instead (rope.cuh), so in
 * training this kernel runs only after the tiled attention. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"
#include "model/cuda/rope.cuh"

#define ROPE_THREADS 128

/* ---- the cos/sin table ----
 * Entry (p, i), i < d/2, is {cos, sin} of the angle of pair i at position p, each computed in
 * double as above and rounded to float once: every row at position p reads the same floats that
 * a per-row computation would produce, so the table changes no bit. It is built once (for the
 * positions asked so far, doubling as longer ones are asked) and kept in the CUDA_WS_ROPE
 * workspace between calls, for one (theta, d) at a time: a call with another theta or head width
 * rebuilds it. (Built per row instead, with the double pow and sincos before each row's
 * rotation, RoPE took 8 ms of a 318 ms 830M step on an H100, 1.7 times what its bytes take at
 * the bandwidth reached.) */
static struct {
    float theta;
    int d;
    int npos; /* positions [0, npos) hold their entries; 0: none */
} g_table;

__global__ void rope_table_kernel(float2 *table, int p0, int p1, int d, float theta) {
    const int half = d / 2;
    const size_t n = (size_t)(p1 - p0) * half;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int p = p0 + (int)(e / half), i = (int)(e % half);
        double freq = pow((double)theta, -2.0 * i / d); /* theta^(-2i/d), as the CPU */
        double a = (double)p * freq;
        double s, c;
        sincos(a, &s, &c);
        table[(size_t)p * half + i] = make_float2((float)c, (float)s);
    }
}

/* The table (npos, d/2) for positions [0, need) at least, built where it does not hold them. */
const float2 *cuda_rope_table(float theta, int d, int need) {
    const int half = d / 2;
    const bool same = g_table.npos > 0 && g_table.theta == theta && g_table.d == d;
    int npos = same ? g_table.npos : 0;
    if (need > npos) npos = need > 2 * npos ? need : 2 * npos; /* doubling: generation's +1s */
    bool fresh;
    float2 *table = (float2 *)cuda_workspace_slot_kept(
        CUDA_WS_ROPE, (size_t)npos * half * sizeof(float2), &fresh);
    const int from = same && !fresh ? g_table.npos : 0;
    if (npos > from) {
        const size_t n = (size_t)(npos - from) * half;
        rope_table_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream()>>>(table, from, npos, d,
                                                                          theta);
        CUDA_LAUNCH_CHECK();
    }
    g_table.theta = theta, g_table.d = d, g_table.npos = npos;
    return table;
}

/* One block per token row of all heads (grid-stride over the B*T rows); the row's entries of
 * the table are read by every head (cached). Slot p of a row covers head p / npair, pair
 * p % npair; for an odd head width the last slot of each head is the unpaired last channel,
 * which is copied. Each slot is read before it is written by the same thread, so out may equal
 * inp where both have the same element type. TO, TI: float or operand_bf16 (the forward: both
 * the operand type; the backward: an operand out from an fp32 inp). sign -1 negates sin (exact):
 * the backward's negative angle. */
template <typename TO, typename TI>
__global__ void rope_kernel(TO *out, const TI *inp, const float2 *table, int B, int T,
                            int n_heads, int d, int pos0, float sign) {
    const int half = d / 2, npair = (d + 1) / 2;
    const size_t C = (size_t)n_heads * d;
    const int64_t rows = (int64_t)B * T;
    const int slots = n_heads * npair;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float2 *cs = table + (size_t)(pos0 + (int)(r % T)) * half; /* (half) */
        const TI *x = inp + (size_t)r * C; /* (n_heads*d) */
        TO *o = out + (size_t)r * C;       /* (n_heads*d) */
        for (int p = threadIdx.x; p < slots; p += blockDim.x) {
            int h = p / npair, i = p % npair;
            size_t at = (size_t)h * d + 2 * (size_t)i;
            if (2 * i + 1 < d) {
                float o0, o1;
                rope_rotate(operand_load(x, at), operand_load(x, at + 1), cs[i].x, sign * cs[i].y,
                            &o0, &o1);
                operand_store(o, at, o0); /* at is odd after an odd-width head */
                operand_store(o, at + 1, o1);
            } else { /* an odd head width leaves its last channel (a bf16 inp: exact) */
                operand_store(o, at, operand_load(x, at));
            }
        }
    }
}

/* The same rotation for head widths d = 8k with inp, out and the table 16-byte aligned (the
 * paper models' d: 64, 96, 128): each thread rotates one chunk of 8 elements, 4 pairs of one
 * head, with one 16-byte access in bf16 (two in fp32) and its 4 table entries read as two
 * float4, over all rows' chunks (grid-stride); the scalar kernel moved 4 bytes an access, with a
 * division per pair. Chunk e covers elements [8e, 8e + 8) of the (B*T, C) rows; it is read whole
 * before it is written, so out may equal inp as above. */
template <typename TO, typename TI>
__global__ void __launch_bounds__(ROPE_THREADS)
    rope_vec_kernel(TO *out, const TI *inp, const float2 *table, size_t chunks, int row_chunks,
                    int T, int d, int pos0, float sign) {
    const int half = d / 2;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < chunks;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / (size_t)row_chunks;
        const int j = (int)(e - r * (size_t)row_chunks) * 8 % d; /* its offset in its head */
        const float4 *cs = reinterpret_cast<const float4 *>(
            table + (size_t)(pos0 + (int)(r % (size_t)T)) * half + j / 2);
        const float4 a = cs[0], b = cs[1]; /* {c, s} of pairs 0, 1 and 2, 3 */
        const float c[4] = {a.x, a.z, b.x, b.z};
        const float s[4] = {sign * a.y, sign * a.w, sign * b.y, sign * b.w};
        float v[8];
        operand_load8(inp, 8 * e, v);
        for (int k = 0; k < 4; k++)
            rope_rotate(v[2 * k], v[2 * k + 1], c[k], s[k], &v[2 * k], &v[2 * k + 1]);
        operand_store8(out, 8 * e, v);
    }
}

/* The float4 kernel's conditions (rope_vec_kernel) */
static bool rope_vec_usable(const void *out, const void *inp, const float2 *table, int d) {
    return d % 8 == 0 && (uintptr_t)out % 16 == 0 && (uintptr_t)inp % 16 == 0 &&
           (uintptr_t)table % 16 == 0;
}

template <typename TO, typename TI>
static void rope_launch(TO *out, const TI *inp, int B, int T, int n_heads, int d, float theta,
                        int pos0, float sign) {
    if (B <= 0 || T <= 0 || n_heads <= 0 || d <= 0) return;
    const float2 *table = d >= 2 ? cuda_rope_table(theta, d, pos0 + T) : NULL;
    if (rope_vec_usable(out, inp, table, d)) {
        const int row_chunks = n_heads * (d / 8);
        const size_t chunks = (size_t)B * T * row_chunks;
        auto kernel = rope_vec_kernel<TO, TI>;
        kernel<<<cuda_blocks(chunks, ROPE_THREADS), ROPE_THREADS, 0, cuda_stream()>>>(
            out, inp, table, chunks, row_chunks, T, d, pos0, sign);
    } else {
        auto kernel = rope_kernel<TO, TI>;
        kernel<<<cuda_blocks((size_t)B * T, 1), ROPE_THREADS, 0, cuda_stream()>>>(
            out, inp, table, B, T, n_heads, d, pos0, sign);
    }
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_rope_forward(dt_operand *out, const dt_operand *inp, int B, int T,
                                  int n_heads, int d, float theta, int pos0) {
    if (cuda_operand_bf16())
        rope_launch((operand_bf16 *)out, (const operand_bf16 *)inp, B, T, n_heads, d, theta, pos0,
                    1.0f);
    else
        rope_launch((float *)out, (const float *)inp, B, T, n_heads, d, theta, pos0, 1.0f);
}

/* The backward rotates by the negative angle (the transpose, and inverse, of a rotation). In
 * bf16 mode dinp (2 bytes an element) must not alias dout (4): a row's stores would overwrite
 * elements of the same row that other threads have yet to read. */
extern "C" void cuda_rope_backward(dt_operand *dinp, const float *dout, int B, int T,
                                   int n_heads, int d, float theta, int pos0) {
    if (cuda_operand_bf16())
        rope_launch((operand_bf16 *)dinp, dout, B, T, n_heads, d, theta, pos0, -1.0f);
    else
        rope_launch((float *)dinp, dout, B, T, n_heads, d, theta, pos0, -1.0f);
}
