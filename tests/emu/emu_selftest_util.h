/* Checks shared by the emulator's self-tests (emu_selftest*.cu; plain host code, included by
 * their rewritten copies in gen/). */
#ifndef DT_EMU_SELFTEST_UTIL_H
#define DT_EMU_SELFTEST_UTIL_H

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime.h>

/* A failed condition prints FAIL with its place and the message, and counts in `counter`. */
#define EMU_CHECK(counter, cond, ...)                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            (counter)++;                                                                           \
        }                                                                                          \
    } while (0)

/* A device copy of `bytes` of host memory (a fresh cudaMalloc buffer). */
template <typename T> static inline T *emu_upload(const T *host, size_t bytes) {
    T *d = NULL;
    cudaMalloc(&d, bytes);
    cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice);
    return d;
}

/* A misuse the emulator must catch: bad(x), with x a fresh 512-byte cudaMalloc buffer (the work
 * then synchronised), runs in a child process, which must die of signal sig. Returns 0 when it
 * did (printing "caught as expected: WHAT"), 1 after printing a FAIL line otherwise. */
static inline int emu_expect_death(const char *what, int sig, void (*bad)(void *)) {
    void *x = NULL;
    int fails = 0;
    cudaMalloc(&x, 512);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        bad(x);
        cudaDeviceSynchronize();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    EMU_CHECK(fails, WIFSIGNALED(status) && WTERMSIG(status) == sig,
              "%s: expected signal %d, got status %d", what, sig, status);
    if (!fails) printf("caught as expected: %s\n", what);
    cudaFree(x);
    return fails;
}

/* emu_expect_death for an emulator check that aborts (SIGABRT) with a message: the child's
 * stderr must also contain `needle`, so that the misuse is caught by the check meant for it
 * and not by another. The message is echoed to stdout. */
static inline int emu_expect_abort_saying(const char *what, const char *needle,
                                          void (*bad)(void *)) {
    void *x = NULL;
    int fails = 0, fd[2];
    cudaMalloc(&x, 512);
    fflush(stdout);
    fflush(stderr);
    if (pipe(fd) != 0) {
        printf("FAIL %s: pipe\n", what);
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        bad(x);
        cudaDeviceSynchronize();
        _exit(0);
    }
    close(fd[1]);
    char msg[4096];
    size_t len = 0;
    ssize_t got;
    while ((got = read(fd[0], msg + len, sizeof msg - 1 - len)) > 0) len += (size_t)got;
    msg[len] = 0;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    printf("%s", msg);
    EMU_CHECK(fails, WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "%s: expected SIGABRT, got status %d", what, status);
    EMU_CHECK(fails, strstr(msg, needle) != NULL, "%s: the message does not say \"%s\"", what,
              needle);
    if (!fails) printf("caught as expected: %s\n", what);
    cudaFree(x);
    return fails;
}

/* One misuse of a table of them: what it is, what its abort must say, and the misuse */
struct emu_abort_case {
    const char *what, *says;
    void (*run)(void *);
};
/* emu_expect_abort_saying for each of the n cases; the number that failed */
static inline int emu_expect_aborts(const emu_abort_case *cases, size_t n) {
    int fails = 0;
    for (size_t c = 0; c < n; c++)
        fails += emu_expect_abort_saying(cases[c].what, cases[c].says, cases[c].run);
    return fails;
}

#endif
