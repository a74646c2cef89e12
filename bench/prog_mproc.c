/* A whole user program, for the cold cases of bench/run.py (each run a fresh process):
 *   prog_mproc empty        nothing (the floor: exec, libc, exit)
 *   prog_mproc apply        a pool of 2, one apply, free, exit
 *   prog_mproc map N        a pool of 2, one map of N int64 (squares), checked, exit
 * bench/prog_py.py and prog_omp do the same with multiprocessing and OpenMP. Exit status 0
 * only when the result is right. */
#include "mproc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int echo(const void *arg, size_t len, mproc_result *res) {
  return mproc_result_set(res, arg, len);
}

static int square(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

static int run_apply(mproc_pool *p) {
  int64_t v = 42, *r = NULL;
  size_t len = 0;
  int rc = mproc_pool_apply(p, echo, &v, sizeof v, (void **)&r, &len);
  int ok = rc == 0 && len == sizeof v && *r == 42;
  free(r);
  return ok ? 0 : 1;
}

static int run_map(mproc_pool *p, size_t n) {
  int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  if (!in || !out)
    return 1;
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i;
  int rc = mproc_pool_map(p, square, in, n, sizeof *in, out, sizeof *out, NULL);
  int bad = rc != 0;
  for (size_t i = 0; !bad && i < n; i++)
    bad = out[i] != (int64_t)i * (int64_t)i;
  free(in);
  free(out);
  return bad;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "empty";
  if (strcmp(mode, "empty") == 0)
    return 0;
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 2};
  int rc = mproc_pool_new(&p, &o);
  if (rc) {
    fprintf(stderr, "prog_mproc: %s\n", mproc_strerror(rc));
    return 1;
  }
  int bad = 1;
  if (strcmp(mode, "apply") == 0)
    bad = run_apply(p);
  else if (strcmp(mode, "map") == 0 && argc > 2)
    bad = run_map(p, strtoull(argv[2], NULL, 10));
  mproc_pool_free(p);
  return bad;
}
