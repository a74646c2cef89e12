/* A program outside the project, built against an installed mproc. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  if (strcmp(mproc_version_string(), "0.0.0") == 0 || mproc_cpu_count() < 1)
    return 1;
  if (mproc_strerror(MPROC_ECRASHED) == NULL)
    return 1;
  printf("consumer ok: mproc %s\n", mproc_version_string());
  return 0;
}
