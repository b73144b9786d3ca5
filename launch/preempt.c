#include "launch/preempt.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>

static volatile sig_atomic_t received = 0;

static void on_signal(int signo) { received = signo; }

void preempt_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* a signal must not break the I/O or the MPI call it lands in */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

dt_status preempt_agree(dt_comm *world, int *signal_out) {
    int64_t s = received;
    DT_TRY(comm_allreduce_i64(world, &s, 1, DT_REDUCE_MAX));
    *signal_out = (int)s;
    return DT_OK;
}
