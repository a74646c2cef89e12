/* Start methods (issue 13): Process start -> join, Pool start -> first result, Pool start with
 * a big touched heap in the caller, and apply_async throughput, under fork, forkserver and
 * spawn. Twin: bench/py_start.py. The forkserver is started once before any timing
 * (mproc_forkserver_start), as Python's is preloaded once (forkserver.ensure_running).
 * References: for Process start -> join, the same method done by hand (fork + waitpid;
 * a byte to a pre-forked server that forks, reaps and answers; posix_spawn of this program,
 * which exits at once, + waitpid); for forkserver and spawn pools, the fork pool's figure;
 * for the heap cases, the same method's figure without the heap (rounds before the heap is
 * touched and after it is freed). MPROC_BENCH_HEAP_MIB sets the heap (default 4096).
 * Usage: bench_start [substring of a case name] */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"

#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define WORKERS 2
#define NM 3

extern char **environ;

static const mproc_start_method METHODS[NM] = {MPROC_START_FORK, MPROC_START_FORKSERVER,
                                               MPROC_START_SPAWN};
static const char *const NAMES[NM] = {"fork", "forkserver", "spawn"};

static void report(const char *what, int m, const char *impl, double v, const char *unit) {
  char name[96];
  snprintf(name, sizeof name, "start_%s_%s", what, NAMES[m]);
  bench_report(name, impl, v, unit);
}

static mproc_pool *new_pool(mproc_start_method m) {
  mproc_pool_opts o = {.processes = WORKERS, .start_method = m};
  mproc_pool *p = NULL;
  int rc = mproc_pool_new(&p, &o);
  if (rc != 0) {
    fprintf(stderr, "mproc_pool_new (%s): %s\n", mproc_start_method_name(m), mproc_err_name(rc));
    exit(1);
  }
  return p;
}

static int noop(void *arg) {
  (void)arg;
  return 0;
}

static int tiny(const void *arg, size_t len, mproc_result *res) {
  return mproc_result_set(res, arg, len);
}

/* ---- hand-made references for Process start -> join ---- */

static double raw_fork_join(void) {
  double t0 = bench_now();
  pid_t pid = fork();
  if (pid == 0)
    _exit(0);
  if (pid < 0 || waitpid(pid, NULL, 0) != pid)
    exit(1);
  return bench_now() - t0;
}

/* A minimal fork server: one byte in, it forks a child that exits, reaps it, status out. */
static int raw_server_fd = -1;
static pid_t raw_server_pid;

static void raw_server_start(void) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    exit(1);
  raw_server_pid = fork();
  if (raw_server_pid < 0)
    exit(1);
  if (raw_server_pid == 0) {
    close(sv[0]);
    char c;
    while (read(sv[1], &c, 1) == 1) {
      pid_t pid = fork();
      if (pid == 0)
        _exit(0);
      int st = -1;
      if (pid > 0)
        waitpid(pid, &st, 0);
      if (write(sv[1], &st, sizeof st) != sizeof st)
        break;
    }
    _exit(0);
  }
  close(sv[1]);
  raw_server_fd = sv[0];
}

static void raw_server_stop(void) {
  close(raw_server_fd);
  waitpid(raw_server_pid, NULL, 0);
}

static double raw_forkserver_join(void) {
  double t0 = bench_now();
  char c = 1;
  int st;
  if (write(raw_server_fd, &c, 1) != 1 || read(raw_server_fd, &st, sizeof st) != sizeof st ||
      st != 0)
    exit(1);
  return bench_now() - t0;
}

static double raw_spawn_join(void) {
  char *argv[] = {"bench_start", "--exit-at-once", NULL};
  double t0 = bench_now();
  pid_t pid;
  int st;
  if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ) != 0 ||
      waitpid(pid, &st, 0) != pid || st != 0)
    exit(1);
  return bench_now() - t0;
}

/* ---- cases ---- */

static double mproc_process_join_once(mproc_start_method m) {
  mproc_process_opts o = {.start_method = m};
  mproc_process *p;
  double t0 = bench_now();
  int rc = mproc_process_new(&p, noop, NULL, &o);
  if (rc == 0)
    rc = mproc_process_start(p);
  if (rc == 0)
    rc = mproc_process_join(p, MPROC_FOREVER);
  double t = bench_now() - t0;
  if (rc != 0) {
    fprintf(stderr, "process (%s): %s\n", mproc_start_method_name(m), mproc_err_name(rc));
    exit(1);
  }
  mproc_process_free(p);
  return t;
}

/* The methods interleaved, one start each per round, so that the VM's drift weighs on all. */
static void process_join(void) {
  enum { R = 60 };
  static double t[NM][R], raw[NM][R];
  double (*const rawf[NM])(void) = {raw_fork_join, raw_forkserver_join, raw_spawn_join};
  for (int r = 0; r < R; r++)
    for (int m = 0; m < NM; m++) {
      t[m][r] = mproc_process_join_once(METHODS[m]);
      raw[m][r] = rawf[m]();
    }
  for (int m = 0; m < NM; m++) {
    report("process_join", m, "mproc", bench_median(t[m], R) * 1e6, "us");
    report("process_join", m, "raw", bench_median(raw[m], R) * 1e6, "us");
  }
}

/* Make a pool, one apply, its result: the time to the first result (free not counted). */
static double pool_first_result_once(mproc_start_method m) {
  int64_t v = 42;
  void *res = NULL;
  double t0 = bench_now();
  mproc_pool *p = new_pool(m);
  int rc = mproc_pool_apply(p, tiny, &v, sizeof v, &res, NULL);
  double t = bench_now() - t0;
  if (rc != 0 || !res || *(int64_t *)res != 42) {
    fprintf(stderr, "pool apply (%s): %s\n", mproc_start_method_name(m), mproc_err_name(rc));
    exit(1);
  }
  free(res);
  mproc_pool_free(p);
  return t;
}

/* Pool start -> first result without the heap, R rounds of the three methods, the rounds
 * before the heap exists first in the array and those after it freed next. */
enum { NOHEAP_R = 15 };
static double noheap_t[NM][2 * NOHEAP_R];

static void noheap_rounds(int from) {
  for (int r = from; r < from + NOHEAP_R; r++)
    for (int m = 0; m < NM; m++)
      noheap_t[m][r] = pool_first_result_once(METHODS[m]);
}

static void pool_first_result(void) {
  noheap_rounds(0);
  double fork_ms = 0;
  for (int m = 0; m < NM; m++) {
    double v[NOHEAP_R];
    memcpy(v, noheap_t[m], sizeof v);
    double ms = bench_median(v, NOHEAP_R) * 1e3;
    fork_ms = m ? fork_ms : ms;
    report("pool_first_result", m, "mproc", ms, "ms");
    if (m)
      report("pool_first_result", m, "fork", fork_ms, "ms");
  }
}

/* The heap: malloc'd, every page written (MADV_POPULATE_WRITE, else memset). */
static void *touch_heap(size_t mib) {
  size_t n = mib << 20, pg = (size_t)sysconf(_SC_PAGESIZE);
  char *h = malloc(n);
  if (!h) {
    fprintf(stderr, "heap of %zu MiB: out of memory\n", mib);
    exit(1);
  }
  double t0 = bench_now();
  char *a = (char *)(((uintptr_t)h + pg - 1) & ~(uintptr_t)(pg - 1));
  if (madvise(a, n - (size_t)(a - h), MADV_POPULATE_WRITE) != 0)
    memset(h, 1, n);
  h[0] = 1; /* the part before the first whole page */
  fprintf(stderr, "bench_start: touched a %zu MiB heap in %.2f s\n", mib, bench_now() - t0);
  return h;
}

static void pool_heap(void) {
  const char *e = getenv("MPROC_BENCH_HEAP_MIB");
  size_t mib = e && *e ? strtoull(e, NULL, 10) : 4096;
  char *h = touch_heap(mib);
  /* A pause first: the kernel's own work after populating the heap (kswapd and kdamond run
   * on this VM) settles, as it would in a program that has had its heap for a while. */
  usleep(1000 * 1000);
  enum { R = 5, R2 = 11 };
  double t[NM][R2];
  /* forkserver and spawn first, then fork: a fork pool's start and end with the heap leave
   * the VM busy for a while after (measured: the next forkserver and spawn pools took
   * 0.2-0.3 ms more when the rounds were interleaved with fork's, and the same as without
   * the heap when they were not). */
  for (int r = 0; r < R2; r++)
    for (int m = 1; m < NM; m++)
      t[m][r] = pool_first_result_once(METHODS[m]);
  for (int r = 0; r < R; r++)
    t[0][r] = pool_first_result_once(METHODS[0]);
  char what[64] = "pool_heap4g";
  if (mib != 4096)
    snprintf(what, sizeof what, "pool_heap%zum", mib);
  free(h);
  /* The reference: the same method without the heap, the rounds before the heap and as
   * many after it, so that the VM's drift over the heap's touch weighs on both. */
  noheap_rounds(NOHEAP_R);
  for (int m = 0; m < NM; m++) {
    report(what, m, "mproc", bench_median(t[m], m ? R2 : R) * 1e3, "ms");
    report(what, m, "noheap", bench_median(noheap_t[m], 2 * NOHEAP_R) * 1e3, "ms");
  }
}

static double apply_async_rate(mproc_pool *p, mproc_async **a, int n) {
  int64_t v = 7;
  double t0 = bench_now();
  for (int i = 0; i < n; i++)
    if (mproc_pool_apply_async(p, tiny, &v, sizeof v, &a[i]) != 0)
      exit(1);
  int bad = 0; /* a failed task must not count as a fast one */
  for (int i = 0; i < n; i++) {
    bad |= mproc_async_wait(a[i], MPROC_FOREVER) != 0 || !mproc_async_successful(a[i]);
    mproc_async_free(a[i]);
  }
  if (bad) {
    fprintf(stderr, "apply_async: a task failed\n");
    exit(1);
  }
  return n / (bench_now() - t0);
}

/* apply_async throughput on a fork pool and on a spawn pool, runs interleaved. */
static void apply_async(void) {
  enum { N = 100000, R = 7 };
  static const int ms[2] = {0, 2}; /* fork, spawn */
  mproc_async **a = malloc(N * sizeof *a);
  mproc_pool *p[2] = {new_pool(METHODS[ms[0]]), new_pool(METHODS[ms[1]])};
  double rate[2][R];
  for (int i = 0; i < 2; i++)
    apply_async_rate(p[i], a, N / 10); /* warm: rings grown, spin budgets learnt */
  for (int r = 0; r < R; r++)
    for (int i = 0; i < 2; i++)
      rate[i][r] = apply_async_rate(p[i], a, N);
  double fork_rate = bench_median(rate[0], R);
  report("apply_async", ms[0], "mproc", fork_rate, "tasks/s");
  report("apply_async", ms[1], "mproc", bench_median(rate[1], R), "tasks/s");
  report("apply_async", ms[1], "fork", fork_rate, "tasks/s");
  for (int i = 0; i < 2; i++)
    mproc_pool_free(p[i]);
  free(a);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--exit-at-once") == 0)
    return 0; /* raw_spawn_join's child */
  const char *only = argc > 1 ? argv[1] : "";
#define WANT(name) (strstr(name, only) != NULL)
  int rc = mproc_forkserver_start();
  if (rc != 0) {
    fprintf(stderr, "mproc_forkserver_start: %s\n", mproc_err_name(rc));
    return 1;
  }
  raw_server_start();
  if (WANT("start_process_join"))
    process_join();
  raw_server_stop();
  if (WANT("start_pool_first_result") || WANT("start_pool_heap"))
    pool_first_result();
  if (WANT("start_apply_async"))
    apply_async();
  if (WANT("start_pool_heap"))
    pool_heap();
  mproc_forkserver_stop();
  return 0;
}
