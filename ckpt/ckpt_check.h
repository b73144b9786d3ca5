/* The HDF5 check macro of the checkpoint code (STYLE: one check macro per foreign status type).
 *
 * DT_H5_CHECK(st, call, label) evaluates `call` once; a negative result (herr_t, hid_t and
 * htri_t all signal failure that way) reports "HDF5 call CALL failed at FILE:LINE on rank R of N
 * (HOST): MESSAGE" through dist_check_fail, with the innermost message of HDF5's error stack,
 * sets st to DT_ERR_RUNTIME and jumps to label (the function's cleanup: HDF5 handles must be
 * closed). `call` may be an assignment (`f = H5Fopen(...)`): its value is the handle. */
#ifndef DT_CKPT_CHECK_H
#define DT_CKPT_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

/* Turns off HDF5's automatic printing of its error stack (the checkpoint code prints one
 * message of its own instead). Idempotent; every public ckpt entry point calls it. */
void ckpt_h5_quiet(void);
/* The innermost (most specific) description on HDF5's current error stack, into buf; "" when
 * the stack is empty. Returns buf. */
const char *ckpt_h5_error(char *buf, size_t n);
/* Whether HDF5's current error stack reports a failed checksum (Fletcher32). */
int ckpt_h5_error_is_checksum(void);

/* Whether the link path ("optim/m/name") exists in the file or group loc, every intermediate
 * group included (H5Lexists alone fails on a missing intermediate group). */
int ckpt_h5_path_exists(int64_t loc, const char *path);

#define DT_H5_CHECK(st, call, label)                                                               \
    do {                                                                                           \
        int64_t dt_h5_rc_ = (int64_t)(call);                                                       \
        if (dt_h5_rc_ < 0) {                                                                       \
            char dt_h5_msg_[256];                                                                  \
            (st) = dist_check_fail("HDF5", #call, __FILE__, __LINE__,                              \
                                   ckpt_h5_error(dt_h5_msg_, sizeof dt_h5_msg_));                  \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#endif
