/* Preemption: SIGTERM (Slurm's preemption and scancel) and SIGUSR1 (`#SBATCH --signal=USR1@120`
 * before the time limit, or `scancel --signal=USR1`) ask the run to stop. The handler only
 * records the signal; after each step the ranks agree (an all-reduce over the world) so that
 * they all stop after the same step, save a checkpoint and exit 0. */
#ifndef DT_PREEMPT_H
#define DT_PREEMPT_H

#include "dist/comm.h"

/* Installs the handlers for SIGTERM and SIGUSR1. */
void preempt_install(void);
/* Collective over `world`: the signal any rank received (the largest number), 0 if none;
 * *signal_out receives it. Returns the status of the all-reduce. */
dt_status preempt_agree(dt_comm *world, int *signal_out);

#endif
