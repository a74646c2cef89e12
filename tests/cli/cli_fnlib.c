/* Functions for the mproc tool's function mode (tests/cli/test_cli.py, bench/bench_cli.py). */
#include "mproc.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The line upper-cased, and a newline. */
int upper(const char *line, size_t len, mproc_result *res) {
  char *out = mproc_result_alloc(res, len + 1);
  if (!out)
    return 1;
  for (size_t i = 0; i < len; i++)
    out[i] = (line[i] >= 'a' && line[i] <= 'z') ? (char)(line[i] - 32) : line[i];
  out[len] = '\n';
  return 0;
}

/* Crashes (SIGSEGV) on the line "crash", fails on "fail", else as upper. */
int picky(const char *line, size_t len, mproc_result *res) {
  if (strcmp(line, "crash") == 0)
    raise(SIGSEGV);
  if (strcmp(line, "fail") == 0)
    return mproc_result_fail(res, "refused '%s'", line);
  return upper(line, len, res);
}

/* The short function of the benchmark: the line's length. */
int length(const char *line, size_t len, mproc_result *res) {
  (void)line;
  unsigned char n = (unsigned char)len;
  return mproc_result_set(res, &n, 1);
}
