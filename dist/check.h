/* Check macros for the foreign libraries of the distributed layer, one per status type (MPI,
 * NCCL). Each is a do { } while (0) statement that evaluates its argument once; on failure
 * it reports the call's text, file:line, the world rank and the host, with the library's own
 * error string, and makes the enclosing function return DT_ERR_RUNTIME.
 *
 * Returning (rather than aborting) keeps library code free of exits. A failed collective can
 * leave the other ranks of its group waiting, so the caller either agrees on the status first
 * (dist_agree in dist/comm.h) or, at the top level, ends every rank with world_abort.
 *
 * DT_MPI_CHECK needs <mpi.h> and DT_NCCL_CHECK <nccl.h> where they are used; this header
 * itself needs neither, so C callers without CUDA can include it. A CUDA check macro elsewhere
 * can report the same way through dist_check_fail("CUDA", ...). */
#ifndef DT_DIST_CHECK_H
#define DT_DIST_CHECK_H

#include "util/status.h"

/* Reports "LIB call CALL failed at FILE:LINE on rank R of N (HOST): ERR" via dt_error; returns
 * DT_ERR_RUNTIME. The rank and host come from MPI_COMM_WORLD when MPI is initialised (and not
 * finalised), otherwise they read "rank ?" and the host name of the machine. */
dt_status dist_check_fail(const char *lib, const char *call, const char *file, int line,
                          const char *err);
/* MPI's error string of an MPI return code, into buf (always NUL-terminated); returns buf. */
const char *dist_mpi_error_string(int code, char *buf, int len);

#define DT_MPI_CHECK(call)                                                                         \
    do {                                                                                           \
        int dt_mpi_rc_ = (call);                                                                   \
        if (dt_mpi_rc_ != MPI_SUCCESS) {                                                           \
            char dt_mpi_msg_[512];                                                                 \
            return dist_check_fail(                                                                \
                "MPI", #call, __FILE__, __LINE__,                                                  \
                dist_mpi_error_string(dt_mpi_rc_, dt_mpi_msg_, (int)sizeof dt_mpi_msg_));          \
        }                                                                                          \
    } while (0)

#define DT_NCCL_CHECK(call)                                                                        \
    do {                                                                                           \
        ncclResult_t dt_nccl_rc_ = (call);                                                         \
        if (dt_nccl_rc_ != ncclSuccess)                                                            \
            return dist_check_fail("NCCL", #call, __FILE__, __LINE__,                              \
                                   ncclGetErrorString(dt_nccl_rc_));                               \
    } while (0)

#endif
