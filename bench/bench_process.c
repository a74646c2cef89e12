/* Process start+join: mproc vs raw fork+waitpid. Twin: bench/py_process.py. */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define REPS 300
#define RUNS 5

static int noop(void *arg) {
  (void)arg;
  return 0;
}

static double mproc_start_join(void) {
  double t = bench_now();
  for (int i = 0; i < REPS; i++) {
    mproc_process *p;
    if (mproc_process_new(&p, noop, NULL, NULL) || mproc_process_start(p) ||
        mproc_process_join(p, MPROC_FOREVER))
      exit(1);
    mproc_process_free(p);
  }
  return (bench_now() - t) / REPS * 1e6;
}

static double raw_fork_wait(void) {
  double t = bench_now();
  for (int i = 0; i < REPS; i++) {
    pid_t pid = fork();
    if (pid == 0)
      _exit(0);
    if (pid < 0 || waitpid(pid, NULL, 0) != pid)
      exit(1);
  }
  return (bench_now() - t) / REPS * 1e6;
}

int main(void) {
  double m[RUNS], r[RUNS];
  for (int i = 0; i < RUNS; i++) {
    m[i] = mproc_start_join();
    r[i] = raw_fork_wait();
  }
  bench_report("process_start_join", "mproc", bench_median(m, RUNS), "us");
  bench_report("process_start_join", "raw", bench_median(r, RUNS), "us");
  return 0;
}
