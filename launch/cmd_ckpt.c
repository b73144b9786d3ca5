/* `difftrain ckpt inspect|verify DIR`: a checkpoint's contents, and a complete integrity check. */
#include <stdio.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "launch/commands.h"

static void usage(FILE *f) {
    fprintf(f, "usage: difftrain ckpt inspect DIR\n"
               "       difftrain ckpt verify DIR\n"
               "\n"
               "DIR is a checkpoint (a step_NNNNNNNN directory holding index.h5) or a\n"
               "checkpoint.dir, whose `latest` names the newest committed checkpoint.\n"
               "\n"
               "inspect  prints step, tokens and samples consumed, the layout it was saved with,\n"
               "         the format version, the resolved config, and every tensor's global\n"
               "         shape, dtype, bytes and number of pieces, with totals\n"
               "verify   checks that the index is readable and of a known version, that every\n"
               "         shard file exists, that every piece has the shape the index says and\n"
               "         the pieces tile each tensor, and reads every piece whole so that every\n"
               "         chunk's Fletcher32 checksum is verified; prints one line per problem\n"
               "\n"
               "Exit status: 0 ok, 1 a damaged checkpoint, 2 bad usage or not a checkpoint.\n");
}

int cmd_ckpt(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return DT_OK;
    }
    if (argc != 3 || (strcmp(argv[1], "inspect") != 0 && strcmp(argv[1], "verify") != 0)) {
        usage(stderr);
        return DT_ERR_INPUT;
    }
    if (strcmp(argv[2], "--help") == 0) {
        usage(stdout);
        return DT_OK;
    }
    dt_status st = strcmp(argv[1], "inspect") == 0 ? ckpt_inspect(argv[2], stdout)
                                                   : ckpt_verify(argv[2], stdout);
    fflush(stdout);
    return st;
}
