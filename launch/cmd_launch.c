/* `difftrain launch CONFIG.yaml [key.path=value ...] [--dry-run]`: starts `difftrain train` on
 * the ranks the config's launch section describes.
 *   local   mpirun on this host (tp x dp ranks)
 *   mpirun  mpirun over launch.hostfile: nodes x procs_per_node ranks, bound to cores
 *   slurm   an sbatch script running `srun --mpi=pmix --kill-on-bad-exit=1 difftrain train`,
 *           submitted with sbatch; the job id is printed
 * --dry-run prints the command or the script and starts nothing. The world size the launcher
 * starts must equal parallel.tp x parallel.dp, or it refuses (exit 2). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/commands.h"
#include "launch/config.h"
#include "util/alloc.h"

extern char **environ;

#define MAX_ARGS 512

typedef struct argv_builder {
    char *argv[MAX_ARGS];
    int argc;
    char storage[32768];
    size_t used;
} argv_builder;

/* Appends a printf-formatted argument (stored in the builder). */
__attribute__((format(printf, 2, 3))) static int arg(argv_builder *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->storage + b->used, sizeof b->storage - b->used, fmt, ap);
    va_end(ap);
    if (n < 0 || b->used + (size_t)n + 1 > sizeof b->storage || b->argc + 1 >= MAX_ARGS) {
        dt_error("launch: the command line is too long");
        return -1;
    }
    b->argv[b->argc++] = b->storage + b->used;
    b->argv[b->argc] = NULL;
    b->used += (size_t)n + 1;
    return 0;
}

/* Prints s quoted for a POSIX shell when it needs quoting. */
static void print_quoted(FILE *f, const char *s) {
    int plain = *s != '\0';
    for (const char *p = s; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%", *p))
            plain = 0;
    if (plain) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (const char *p = s; *p; p++)
        if (*p == '\'')
            fputs("'\\''", f);
        else
            fputc(*p, f);
    fputc('\'', f);
}

static void print_args(FILE *f, char *const *argv) {
    for (int i = 0; argv[i]; i++) {
        if (i) fputc(' ', f);
        print_quoted(f, argv[i]);
    }
}

static void print_command(FILE *f, char *const *argv) {
    print_args(f, argv);
    fputc('\n', f);
}

/* The command in the background (" &"): the script's shell stays free to take signals. */
static void print_command_bg(FILE *f, char *const *argv) {
    print_args(f, argv);
    fputs(" &\n", f);
}

/* Environment variables the ranks need from the launching shell: NCCL's and difftrain's own. */
static int forwarded_env(const char *entry) {
    return strncmp(entry, "NCCL_", 5) == 0 || strncmp(entry, "DIFFTRAIN_", 10) == 0;
}

typedef struct launch_plan {
    int world, tp, dp, threads;
    char self[PATH_MAX];   /* the difftrain binary */
    char config[PATH_MAX]; /* the config, absolute */
} launch_plan;

static dt_status resolve_plan(launch_plan *lp, const dt_config *c) {
    const dt_launch_config *l = &c->launch;
    lp->world = l->nodes * l->procs_per_node;
    lp->tp = c->parallel.tp;
    lp->dp = c->parallel.dp ? c->parallel.dp : lp->world / lp->tp;
    if (lp->tp * lp->dp != lp->world) {
        dt_error("%s: launch.nodes (%d) x launch.procs_per_node (%d) = %d ranks, but parallel.tp "
                 "(%d) x parallel.dp (%s%d) = %d: the launcher must start exactly tp x dp ranks",
                 c->source, l->nodes, l->procs_per_node, lp->world, lp->tp,
                 c->parallel.dp ? "" : "auto = ", lp->dp, lp->tp * lp->dp);
        return DT_ERR_INPUT;
    }
    if (c->train.threads > 0)
        lp->threads = c->train.threads;
    else if (l->scheduler == DT_SCHED_LOCAL) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        lp->threads = cores / lp->world > 1 ? (int)(cores / lp->world) : 1;
    } else
        lp->threads = l->slurm_cpus_per_task > 0 ? l->slurm_cpus_per_task : 1;
    ssize_t n = readlink("/proc/self/exe", lp->self, sizeof lp->self - 1);
    if (n <= 0) {
        dt_error("launch: cannot find the difftrain binary (/proc/self/exe): %s", strerror(errno));
        return DT_ERR_RUNTIME;
    }
    lp->self[n] = '\0';
    if (!realpath(c->source, lp->config)) {
        dt_error("%s: %s", c->source, strerror(errno));
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

/* `difftrain train CONFIG overrides...` as every rank runs it. */
static int add_train_command(argv_builder *b, const launch_plan *lp, int n_over, char **over) {
    if (arg(b, "%s", lp->self) || arg(b, "train") || arg(b, "%s", lp->config)) return -1;
    for (int i = 0; i < n_over; i++)
        if (arg(b, "%s", over[i])) return -1;
    return 0;
}

static dt_status build_mpirun(argv_builder *b, const dt_config *c, const launch_plan *lp,
                              int n_over, char **over) {
    const dt_launch_config *l = &c->launch;
    if (arg(b, "mpirun") || arg(b, "-np") || arg(b, "%d", lp->world)) return DT_ERR_INPUT;
    if (l->scheduler == DT_SCHED_MPIRUN) {
        if (!l->hostfile[0]) {
            dt_error("%s: launch.hostfile: scheduler mpirun needs a hostfile naming the %d nodes",
                     c->source, l->nodes);
            return DT_ERR_INPUT;
        }
        if (arg(b, "--hostfile") || arg(b, "%s", l->hostfile) || arg(b, "--map-by") ||
            arg(b, "ppr:%d:node:PE=%d", l->procs_per_node, lp->threads) || arg(b, "--bind-to") ||
            arg(b, "core"))
            return DT_ERR_INPUT;
    } else {
        /* one host, often a workstation or a test box: more ranks than cores are allowed and
         * the ranks' OpenMP threads are left to the OS scheduler */
        if (arg(b, "--oversubscribe") || arg(b, "--bind-to") || arg(b, "none")) return DT_ERR_INPUT;
    }
    if (arg(b, "-x") || arg(b, "OMP_NUM_THREADS=%d", lp->threads)) return DT_ERR_INPUT;
    for (char **e = environ; *e; e++)
        if (forwarded_env(*e)) {
            size_t len = strcspn(*e, "=");
            if (arg(b, "-x") || arg(b, "%.*s", (int)len, *e)) return DT_ERR_INPUT;
        }
    if (add_train_command(b, lp, n_over, over)) return DT_ERR_INPUT;
    return DT_OK;
}

/* The sbatch script (DESIGN launch.slurm.*): resources, preemption signal, requeue, the
 * forwarded environment, and srun. */
static dt_status write_sbatch(FILE *f, const dt_config *c, const launch_plan *lp, int n_over,
                              char **over) {
    const dt_launch_config *l = &c->launch;
    fprintf(f, "#!/bin/bash\n");
    fprintf(f, "#SBATCH --job-name=%s\n", l->slurm_job_name);
    fprintf(f, "#SBATCH --nodes=%d\n", l->nodes);
    fprintf(f, "#SBATCH --ntasks-per-node=%d\n", l->procs_per_node);
    if (l->slurm_gpus_per_node > 0) fprintf(f, "#SBATCH --gpus-per-node=%d\n", l->slurm_gpus_per_node);
    if (l->slurm_cpus_per_task > 0) fprintf(f, "#SBATCH --cpus-per-task=%d\n", l->slurm_cpus_per_task);
    if (l->slurm_time[0]) fprintf(f, "#SBATCH --time=%s\n", l->slurm_time);
    if (l->slurm_partition[0]) fprintf(f, "#SBATCH --partition=%s\n", l->slurm_partition);
    if (l->slurm_account[0]) fprintf(f, "#SBATCH --account=%s\n", l->slurm_account);
    if (l->slurm_output[0]) fprintf(f, "#SBATCH --output=%s\n", l->slurm_output);
    /* two minutes before the time limit this script gets SIGUSR1 (B:): it passes it to the ranks
     * through srun (each finishes its step, they save a checkpoint and exit 0), then requeues the
     * job, which resumes from that checkpoint (resume: auto). A preempted or failed job is
     * requeued by Slurm (--requeue) and resumes the same way. */
    fprintf(f, "#SBATCH --signal=B:USR1@120\n");
    fprintf(f, "#SBATCH --requeue\n");
    fprintf(f, "#SBATCH --open-mode=append\n\n");
    fprintf(f, "export OMP_NUM_THREADS=%d\n", lp->threads);
    for (char **e = environ; *e; e++)
        if (forwarded_env(*e)) {
            size_t len = strcspn(*e, "=");
            fprintf(f, "export %.*s=", (int)len, *e);
            print_quoted(f, *e + len + 1);
            fputc('\n', f);
        }
    fprintf(f, "\n# the time limit is near: the ranks stop after their step and save a checkpoint, and\n"
               "# the job goes back to the queue to continue from it\n"
               "requeue() {\n"
               "  echo \"difftrain: SIGUSR1 (time limit near): stopping the ranks, then requeueing "
               "job $SLURM_JOB_ID\"\n"
               "  kill -USR1 \"$srun_pid\"\n"
               "  wait \"$srun_pid\"\n"
               "  scontrol requeue \"$SLURM_JOB_ID\"\n"
               "  exit 0\n"
               "}\n"
               "trap requeue USR1\n");
    argv_builder b;
    memset(&b, 0, sizeof b);
    if (arg(&b, "srun") || arg(&b, "--mpi=pmix") || arg(&b, "--kill-on-bad-exit=1") ||
        add_train_command(&b, lp, n_over, over))
        return DT_ERR_INPUT;
    print_command_bg(f, b.argv);
    fprintf(f, "srun_pid=$!\n"
               "wait \"$srun_pid\"\n");
    return DT_OK;
}

/* Writes the script next to the run's checkpoints (or in the working directory) and submits it. */
static dt_status submit_sbatch(const dt_config *c, const launch_plan *lp, int n_over,
                               char **over) {
    char path[PATH_MAX + 64];
    const char *dir = c->checkpoint.dir[0] ? c->checkpoint.dir : ".";
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        dt_error("checkpoint.dir: cannot create '%s': %s", dir, strerror(errno));
        return DT_ERR_INPUT;
    }
    snprintf(path, sizeof path, "%s/%s.sbatch", dir, c->launch.slurm_job_name);
    FILE *f = fopen(path, "w");
    if (!f) {
        dt_error("launch: cannot write '%s': %s", path, strerror(errno));
        return DT_ERR_INPUT;
    }
    dt_status st = write_sbatch(f, c, lp, n_over, over);
    if (fclose(f) != 0 || st != DT_OK) {
        dt_error("launch: cannot write '%s'", path);
        return DT_ERR_RUNTIME;
    }
    char cmd[PATH_MAX + 128];
    snprintf(cmd, sizeof cmd, "sbatch --parsable '%s'", path);
    FILE *p = popen(cmd, "r");
    char out[256] = "";
    if (!p || !fgets(out, sizeof out, p)) {
        if (p) pclose(p);
        dt_error("launch: sbatch %s failed (is Slurm's sbatch on PATH?)", path);
        return DT_ERR_RUNTIME;
    }
    int rc = pclose(p);
    out[strcspn(out, ";\n")] = '\0';
    if (rc != 0 || !out[0]) {
        dt_error("launch: sbatch %s failed (status %d)", path, rc);
        return DT_ERR_RUNTIME;
    }
    printf("submitted %s as job %s\n", path, out);
    return DT_OK;
}

static void usage(FILE *f) {
    fprintf(f, "usage: difftrain launch CONFIG.yaml [key.path=value ...] [--dry-run]\n"
               "\n"
               "Starts `difftrain train CONFIG` on launch.nodes x launch.procs_per_node ranks\n"
               "(which must equal parallel.tp x parallel.dp) as launch.scheduler says:\n"
               "  local   mpirun on this host\n"
               "  mpirun  mpirun over launch.hostfile, ranks bound to cores, OMP_NUM_THREADS,\n"
               "          NCCL_* and DIFFTRAIN_* forwarded\n"
               "  slurm   writes CHECKPOINT_DIR/JOB_NAME.sbatch (srun --mpi=pmix\n"
               "          --kill-on-bad-exit=1, --signal=USR1@120, --requeue), submits it with\n"
               "          sbatch and prints the job id\n"
               "--dry-run prints the command or the script and starts nothing.\n");
}

int cmd_launch(int argc, char **argv) {
    int dry_run = 0, n_over = 0;
    const char *config = NULL;
    char **over = dt_calloc((size_t)argc + 1, sizeof *over);
    if (!over) return DT_ERR_RUNTIME;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            dt_free(over);
            return DT_OK;
        }
        if (strcmp(argv[i], "--dry-run") == 0)
            dry_run = 1;
        else if (!config)
            config = argv[i];
        else
            over[n_over++] = argv[i];
    }
    dt_config c;
    launch_plan lp;
    argv_builder b;
    memset(&b, 0, sizeof b);
    dt_status st = DT_ERR_INPUT;
    if (!config) {
        usage(stderr);
        goto done;
    }
    DT_TRY_GOTO(st, config_load(&c, config, n_over, over), done);
    DT_TRY_GOTO(st, resolve_plan(&lp, &c), done);
    if (c.launch.scheduler == DT_SCHED_SLURM) {
        if (dry_run)
            st = write_sbatch(stdout, &c, &lp, n_over, over);
        else
            st = submit_sbatch(&c, &lp, n_over, over);
        goto done;
    }
    DT_TRY_GOTO(st, build_mpirun(&b, &c, &lp, n_over, over), done);
    /* Open MPI refuses root unless told; a launcher run as root (containers, CI) says so */
    int root = geteuid() == 0;
    if (dry_run) {
        if (root) printf("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ");
        print_command(stdout, b.argv);
        st = DT_OK;
        goto done;
    }
    if (root) {
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    print_command(stderr, b.argv);
    fflush(stdout);
    execvp(b.argv[0], b.argv);
    dt_error("launch: cannot run %s: %s", b.argv[0], strerror(errno));
    st = DT_ERR_RUNTIME;
done:
    dt_free(over);
    return st;
}
