/* The OpenMP twin of `prog_mproc map N` (bench/prog_mproc.c): a whole program that squares
 * N int64 once with `parallel for` on 2 threads, checks, exits. Without OpenMP it is the
 * same loop on one thread, and says so on stderr. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[1], "map") != 0)
    return 2;
  size_t n = strtoull(argv[2], NULL, 10);
  int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  if (!in || !out)
    return 1;
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i;
#ifdef _OPENMP
#pragma omp parallel for num_threads(2) schedule(static)
#else
  fprintf(stderr, "prog_omp: built without OpenMP\n");
#endif
  for (size_t i = 0; i < n; i++)
    out[i] = in[i] * in[i];
  int bad = 0;
  for (size_t i = 0; !bad && i < n; i++)
    bad = out[i] != (int64_t)i * (int64_t)i;
  free(in);
  free(out);
  return bad;
}
