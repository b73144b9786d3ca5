#include <omp.h>

#include "model/cpu/cpu_ops.h"

/* OpenBLAS's own setter; declared here so this file does not depend on which cblas.h the
 * system installs. */
void openblas_set_num_threads(int num_threads);

void cpu_set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}
