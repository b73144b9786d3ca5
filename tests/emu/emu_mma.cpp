/* The host emulator's tensor-core instructions (a test tool; see include/cuda_runtime.h): the
 * warp-collective software versions of mma.sync.m16n8k16 (bf16 in, fp32 accumulate) and
 * ldmatrix.x4[.trans] that model/cuda/mma.cuh calls under DT_CUDA_EMULATOR.
 *
 * Each gathers the whole warp's operands by the PTX ISA's fragment layouts ("Matrix Fragments for
 * mma.m16n8k16 with floating point type"; "Warp-level matrix load instruction: ldmatrix"), with
 * groupID g = lane >> 2 and threadID_in_group t = lane % 4, computes, and scatters each lane's
 * results by the same layouts, so a kernel that puts an element in the wrong register or lane
 * computes a wrong product here exactly as on a GPU. Checked by emu_selftest against a plain
 * matrix product. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_runtime.h"

static void mma_fail(const char *fmt, const char *file, int line, unsigned lane,
                     const void *p) __attribute__((noreturn));
static void mma_fail(const char *fmt, const char *file, int line, unsigned lane, const void *p) {
    fflush(stdout);
    fprintf(stderr, "emu: ");
    fprintf(stderr, fmt, file, line, lane, p);
    fprintf(stderr, "\n");
    abort();
}

static float bf16_lo(uint32_t r) { /* the element in bits 0..15 */
    uint32_t u = r << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static float bf16_hi(uint32_t r) { /* the element in bits 16..31 */
    uint32_t u = r & 0xffff0000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 ---- */

struct mma_lane {
    float *d;
    const uint32_t *a, *b;
};

static void mma_op(void *const *lanes) {
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < 32; lane++) {
        const mma_lane *l = (const mma_lane *)lanes[lane];
        const int g = lane >> 2, t = lane & 3;
        /* A: a[r] holds elements 2r (low half) and 2r + 1; element i sits at row g (i in 0, 1,
         * 4, 5) or g + 8, column 2t + (i & 1), + 8 for i >= 4 */
        for (int i = 0; i < 8; i++) {
            const int row = (i & 2) ? g + 8 : g, col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = (i & 1) ? bf16_hi(l->a[i >> 1]) : bf16_lo(l->a[i >> 1]);
        }
        /* B: b[r] holds elements 2r and 2r + 1; element i at row 2t + (i & 1) (+ 8 for i >= 2),
         * column g */
        for (int i = 0; i < 4; i++) {
            const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
            B[row][g] = (i & 1) ? bf16_hi(l->b[i >> 1]) : bf16_lo(l->b[i >> 1]);
        }
        /* C: element i at row g (i < 2) or g + 8, column 2t + (i & 1) */
        for (int i = 0; i < 4; i++) C[i < 2 ? g : g + 8][2 * t + (i & 1)] = l->d[i];
    }
    /* the products of bf16 values are exact in double; each dot product is summed exactly enough
     * (16 terms) and rounded once to fp32 (tensor cores round no more finely than this) */
    float D[16][8];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            double acc = C[i][j];
            for (int k = 0; k < 16; k++) acc += (double)A[i][k] * (double)B[k][j];
            D[i][j] = (float)acc;
        }
    for (int lane = 0; lane < 32; lane++) {
        const mma_lane *l = (const mma_lane *)lanes[lane];
        const int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 4; i++) l->d[i] = D[i < 2 ? g : g + 8][2 * t + (i & 1)];
    }
}

void emu_mma_bf16_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const char *file,
                           int line) {
    mma_lane mine = {d, a, b};
    emu_warp_collective(mma_op, &mine, file, line);
}

/* ---- ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 ---- */

struct ldm_lane {
    uint32_t *r;
    const void *row;
    int trans;
    const char *file;
    int line;
};

static void ldmatrix_op(void *const *lanes) {
    uint16_t M[4][8][8]; /* matrix i, row, column: lanes 8i..8i+7 give rows 0..7 of matrix i */
    const ldm_lane *l0 = (const ldm_lane *)lanes[0];
    for (unsigned lane = 0; lane < 32; lane++) {
        const ldm_lane *l = (const ldm_lane *)lanes[lane];
        if (l->trans != l0->trans)
            mma_fail("ldmatrix at %s:%d: lane %u differs from lane 0 in .trans (%p)", l->file,
                     l->line, lane, l->row);
        if ((uintptr_t)l->row % 16 != 0)
            mma_fail("ldmatrix at %s:%d: lane %u's row address %p is not 16-byte aligned",
                     l->file, l->line, lane, l->row);
        if (!emu_shared_range(l->row, 16))
            mma_fail("ldmatrix at %s:%d: lane %u's row address %p is not in shared memory",
                     l->file, l->line, lane, l->row);
        memcpy(M[lane >> 3][lane & 7], l->row, 16);
    }
    for (int lane = 0; lane < 32; lane++) {
        const ldm_lane *l = (const ldm_lane *)lanes[lane];
        const int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 4; i++) {
            /* without .trans: row g, columns 2t, 2t + 1; with .trans: the transpose's */
            const uint16_t lo = l0->trans ? M[i][2 * t][g] : M[i][g][2 * t];
            const uint16_t hi = l0->trans ? M[i][2 * t + 1][g] : M[i][g][2 * t + 1];
            l->r[i] = (uint32_t)lo | (uint32_t)hi << 16;
        }
    }
}

void emu_ldmatrix_x4(uint32_t r[4], const void *row, int trans, const char *file, int line) {
    ldm_lane mine = {r, row, trans, file, line};
    emu_warp_collective(ldmatrix_op, &mine, file, line);
}
