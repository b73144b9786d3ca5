/* The training step's scalars on the CPU backend (model/backend.h): the micro-batch losses added
 * into the step's double and the clipping factor from the reduced sums. The arithmetic is the
 * one the trainer did on the host before these lived in backend memory, operation for
 * operation, so a CPU run's losses, norms and parameters keep their bits. */
#include <math.h>

#include "model/cpu/cpu_ops.h"

/* Row order, in double: the sum does not depend on the thread count. */
void cpu_loss_accumulate(double *acc, const float *losses, int N, const int32_t *n_targets_p) {
    const int n_targets = *n_targets_p;
    double sum = 0;
    for (int i = 0; i < N; i++) sum += losses[i];
    float mean = n_targets ? (float)(sum / n_targets) : 0.0f;
    *acc += mean;
}

void cpu_clip_scale(float *grad_scale, const double *sumsq, const double *loss_sum,
                    double max_norm) {
    if (!isfinite(*sumsq) || !isfinite(*loss_sum)) {
        *grad_scale = NAN; /* adamw_update skips the step */
        return;
    }
    double norm = sqrt(*sumsq);
    *grad_scale = max_norm > 0 && norm > max_norm ? (float)(max_norm / norm) : 1.0f;
}
