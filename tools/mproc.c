/* mproc: run commands, or a C function, over inputs in parallel; GNU parallel's everyday
 * interface on mproc's pool. See docs/mproc.1 and tools/README.md. */
#include "cli.h"

int main(int argc, char **argv) {
  cli_opts o;
  int rc = cli_parse(&o, argc, argv, stderr);
  if (rc) {
    cli_opts_free(&o);
    return rc > 0 ? 0 : CLI_EXIT_USAGE;
  }
  int status = o.lib ? cli_run_function(&o) : cli_run_commands(&o);
  cli_opts_free(&o);
  return status;
}
