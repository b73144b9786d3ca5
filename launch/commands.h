/* Subcommands of the difftrain program. Each takes its own argv (argv[0] is the subcommand's
 * name) and returns the process exit status: 0 ok, 1 runtime failure, 2 bad usage or input. */
#ifndef DT_COMMANDS_H
#define DT_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_launch(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_ckpt(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_analyze(int argc, char **argv);

#endif
