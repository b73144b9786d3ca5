/* difftrain: git-style dispatch to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "launch/commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", cmd_train, "train a model from a YAML config (alone, or under mpirun/srun)"},
    {"data", cmd_data, "prepare token shards from text files, or describe shards"},
    {"launch", cmd_launch, "start training on this host, over a hostfile, or as a Slurm job"},
    {"eval", cmd_eval, "loss and perplexity of a checkpoint on data.val or a token shard"},
    {"generate", cmd_generate, "sample a continuation of a prompt from a checkpoint (KV cache)"},
    {"analyze", cmd_analyze, "attention statistics of a checkpoint on needle documents"},
    {"ckpt", cmd_ckpt, "inspect or verify a checkpoint directory"},
    {"plan", cmd_plan, "parameters, memory per rank, FLOPs/token; fails if it cannot fit"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: difftrain COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`difftrain COMMAND --help` describes each. Exit status: 0 ok, 1 runtime failure,\n"
               "2 bad usage, config or input.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "difftrain: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
