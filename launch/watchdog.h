/* The watchdog of a run on several ranks (`difftrain train`, `difftrain eval`). A rank that
 * stops making progress while staying alive (a GPU kernel that never finishes, a peer stopped or
 * livelocked inside a collective, a file system that never answers) would hold every rank of the
 * job in its next collective until the scheduler's time limit: mpirun and srun end a job only
 * when a rank dies. A thread of each rank times the run's current phase (start-up, a training
 * step or an evaluation batch, validation, a checkpoint's save or load, shutdown); when one phase
 * has lasted longer than the limit, the rank says what it was doing and for how long, and exits
 * with status 1 (a runtime failure), which ends the job (mpirun aborts the other ranks, srun
 * --kill-on-bad-exit kills them).
 *
 * The limit: DIFFTRAIN_WATCHDOG_S seconds (default 1800; 0 turns the watchdog off), from the
 * environment of the ranks (the launcher forwards DIFFTRAIN_* variables). It bounds each phase,
 * so it must exceed the longest legitimate one: a step, the start-up (a 3B model is initialised
 * on the host in minutes), a checkpoint save. */
#ifndef DT_WATCHDOG_H
#define DT_WATCHDOG_H

#include "util/status.h"

/* Reads the limit and starts the thread (none when the limit is 0). `unit` names what the
 * phases' numbers count in the message ("step", "batch"). DT_ERR_INPUT, naming the variable, when
 * DIFFTRAIN_WATCHDOG_S is not a whole number of seconds from 0 to 10^7; DT_ERR_RUNTIME when the
 * thread cannot start. */
dt_status watchdog_start(const char *unit);
/* The run enters phase `what` (a static string) of number `n` (0: none) of the unit: its clock
 * restarts. */
void watchdog_phase(const char *what, int n);
/* Stops and joins the thread. */
void watchdog_stop(void);

#endif
