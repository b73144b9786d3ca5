/* AdamW with decoupled weight decay (Loshchilov & Hutter), exactly the formula in
 * model/backend.h, elementwise over n contiguous elements. */
#include <math.h>

#include "model/cpu/cpu_ops.h"

#define CPU_ADAMW_PAR_MIN 16384

void cpu_adamw_update(float *params, float *m, float *v, const float *grads, size_t n,
                      float lr, float beta1, float beta2, float eps, float weight_decay,
                      const float *grad_scale_p, int t) {
    float grad_scale = *grad_scale_p;
    /* a refused step (clip_scale found a non-finite loss or norm): nothing moves */
    if (!isfinite(grad_scale)) return;
    /* Bias corrections in double: beta2^t with beta2 = 0.95..0.999 and t ~ 1e5 is far from the
     * float grid's sweet spot, and it costs nothing to do once per call. */
    float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
#pragma omp parallel for schedule(static) if (n >= CPU_ADAMW_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / bc1;
        float vhat = vi / bc2;
        float p = params[i];
        /* Decay uses the parameter before this step's update (decoupled from the gradient). */
        params[i] = p - lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
    }
}
