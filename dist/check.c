#include "dist/check.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *dist_mpi_error_string(int code, char *buf, int len) {
    int n = 0;
    if (len <= 0) return buf;
    buf[0] = '\0';
    /* MPI_Error_string needs a buffer of MPI_MAX_ERROR_STRING; copy through one so that any
     * caller buffer size is safe. */
    char tmp[MPI_MAX_ERROR_STRING + 1];
    if (MPI_Error_string(code, tmp, &n) != MPI_SUCCESS) snprintf(tmp, sizeof tmp, "code %d", code);
    else tmp[n < 0 ? 0 : (n > MPI_MAX_ERROR_STRING ? MPI_MAX_ERROR_STRING : n)] = '\0';
    snprintf(buf, (size_t)len, "%s", tmp);
    return buf;
}

dt_status dist_check_fail(const char *lib, const char *call, const char *file, int line,
                          const char *err) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    char host[MPI_MAX_PROCESSOR_NAME + 1] = "";
    if (inited && !finalized) {
        int rank = -1, size = 0, len = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (MPI_Get_processor_name(host, &len) != MPI_SUCCESS) host[0] = '\0';
        dt_error("%s call %s failed at %s:%d on rank %d of %d (%s): %s", lib, call, file, line,
                 rank, size, host, err ? err : "unknown error");
    } else {
        if (gethostname(host, sizeof host - 1) != 0) strcpy(host, "?");
        host[sizeof host - 1] = '\0';
        dt_error("%s call %s failed at %s:%d on rank ? (%s): %s", lib, call, file, line, host,
                 err ? err : "unknown error");
    }
    return DT_ERR_RUNTIME;
}
