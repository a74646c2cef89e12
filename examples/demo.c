/* Placeholder demo: the real one (issue 7) runs a pool over generated data. */
#include <mproc.h>
#include <stdio.h>

int main(void) {
  printf("mproc %s on %d CPUs\n", mproc_version_string(), mproc_cpu_count());
  return 0;
}
