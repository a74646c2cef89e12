/*
 * square: the hello world of every multiprocessing tutorial —
 *
 *     with Pool() as p: print(p.map(f, range(n)))
 *
 * mproc_pool_map calls square() on every element of `in`, in worker processes, and writes
 * each result into `out` at the same index. Elements are fixed-size bytes: an int64 in, an
 * int64 out.
 *
 *   usage: square [N]     (default 10; the squares are printed when N <= 20)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int square(const void *in, void *out, const void *args) {
  (void)args; /* mproc_map_opts.args: none here */
  int64_t x = *(const int64_t *)in;
  *(int64_t *)out = x * x;
  return 0; /* nonzero would fail this element */
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10;
  if (n < 0 || n > 100000000) {
    fprintf(stderr, "usage: square [N 0..1e8]\n");
    return 2;
  }
  int64_t *in = malloc(((size_t)n + 1) * sizeof *in), *out = malloc(((size_t)n + 1) * sizeof *out);
  if (!in || !out)
    return 1;
  for (long i = 0; i < n; i++)
    in[i] = i;

  mproc_pool *pool;
  int rc = mproc_pool_new(&pool, NULL); /* one worker per CPU */
  if (rc == 0)
    rc = mproc_pool_map(pool, square, in, (size_t)n, sizeof *in, out, sizeof *out, NULL);
  if (rc < 0) {
    fprintf(stderr, "square: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_pool_close(pool);
  mproc_pool_join(pool);
  mproc_pool_free(pool);

  int64_t sum = 0;
  if (n <= 20)
    printf("[");
  for (long i = 0; i < n; i++) {
    if (n <= 20)
      printf("%s%lld", i ? ", " : "", (long long)out[i]);
    sum += out[i];
  }
  if (n <= 20)
    printf("]\n");
  printf("sum of the %ld squares = %lld\n", n, (long long)sum);
  free(in);
  free(out);
  return 0;
}
