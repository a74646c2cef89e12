/* Manager: one client's dict set + get round trip, and dict ops/s with 4 client processes
 * (add_i64 on one key each). Twin: bench/py_manager.py (multiprocessing.Manager().dict()). */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAIRS 5000
#define CLIENTS 4
#define OPS 5000
#define RUNS 3

static void need(int rc, const char *what) {
  if (rc) {
    fprintf(stderr, "bench_manager: %s: %s\n", what, mproc_strerror(rc));
    exit(1);
  }
}

static double set_get(void) {
  mproc_manager *m;
  mproc_dict *d;
  need(mproc_manager_new(&m, NULL), "manager");
  need(mproc_manager_dict(m, "d", &d), "dict");
  double t = bench_now();
  for (int i = 0; i < PAIRS; i++) {
    void *v;
    size_t n;
    need(mproc_dict_set(d, "key", 3, "value", 5), "set");
    need(mproc_dict_get(d, "key", 3, &v, &n), "get");
    free(v);
  }
  t = bench_now() - t;
  mproc_dict_free(d);
  mproc_manager_free(m);
  return t / PAIRS * 1e6;
}

static double four_clients(void) {
  mproc_manager *m;
  mproc_dict *d;
  need(mproc_manager_new(&m, NULL), "manager");
  need(mproc_manager_dict(m, "d", &d), "dict");
  need(mproc_dict_len(d) < 0, "connect"); /* this process's connection made before the clock */
  double t = bench_now();
  pid_t pids[CLIENTS];
  for (int c = 0; c < CLIENTS; c++) {
    if ((pids[c] = fork()) == 0) {
      char k = (char)('a' + c);
      for (int i = 0; i < OPS; i++)
        if (mproc_dict_add_i64(d, &k, 1, 1, NULL))
          _exit(1);
      _exit(0);
    }
  }
  for (int c = 0; c < CLIENTS; c++)
    waitpid(pids[c], NULL, 0);
  t = bench_now() - t;
  mproc_dict_free(d);
  mproc_manager_free(m);
  return CLIENTS * OPS / t;
}

int main(void) {
  double a[RUNS], b[RUNS];
  for (int i = 0; i < RUNS; i++) {
    a[i] = set_get();
    b[i] = four_clients();
  }
  bench_report("manager_dict_set_get_1client", "mproc", bench_median(a, RUNS), "us");
  bench_report("manager_dict_ops_4clients", "mproc", bench_median(b, RUNS), "ops/s");
  return 0;
}
