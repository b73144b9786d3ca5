/* `difftrain train ... --dump-params DIR`: after the last step, rank 0 writes the model's
 * parameters as GLOBAL tensors, whatever the parallel layout: DIR/layout.txt (one line per
 * tensor: name ndim shape0 shape1 offset numel) and DIR/params.bin (fp32, the tensors
 * concatenated in layout order). Runs of any two layouts can then be compared tensor by tensor
 * (tests/scripts/parallel_layouts.sh does). */
#ifndef DT_PARAM_DUMP_H
#define DT_PARAM_DUMP_H

#include "dist/groups.h"
#include "model/model.h"

/* Collective over the TP group (every rank calls it); rank 0 of the world writes. */
dt_status param_dump_global(const dt_model *m, dt_groups *g, const char *dir);

#endif
