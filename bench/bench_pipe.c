/* Pipe/Connection: 8-byte round trips and 1 MiB one-way bandwidth, mproc vs raw pipe(2).
 * Twin: bench/py_pipe.py (multiprocessing.Pipe). */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"
#include "os/os.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 20000
#define RUNS 5
#define MIB (1u << 20)
#define BIG_MSGS 1000

/* ---- 8-byte round trips ---- */

typedef struct ends {
  mproc_conn *mine, *theirs;
} ends;

static int mproc_echo(void *arg) {
  ends *e = arg;
  mproc_conn_free(e->theirs);
  for (;;) {
    void *m;
    size_t n;
    int rc = mproc_conn_recv(e->mine, &m, &n, MPROC_FOREVER);
    if (rc)
      return rc == MPROC_EOF ? 0 : 1;
    rc = mproc_conn_send(e->mine, m, n);
    free(m);
    if (rc)
      return 2;
  }
}

static double mproc_roundtrip(void) {
  mproc_conn *a, *b;
  if (mproc_pipe(&a, &b, true))
    exit(1);
  ends e = {b, a};
  mproc_process *p;
  if (mproc_process_new(&p, mproc_echo, &e, NULL) || mproc_process_start(p))
    exit(1);
  mproc_conn_free(b);
  char msg[8] = "ping!!!";
  double t = bench_now();
  for (int i = 0; i < ROUNDS; i++) {
    void *m;
    size_t n;
    if (mproc_conn_send(a, msg, 8) || mproc_conn_recv(a, &m, &n, MPROC_FOREVER))
      exit(1);
    free(m);
  }
  t = bench_now() - t;
  mproc_conn_free(a);
  mproc_process_join(p, MPROC_FOREVER);
  mproc_process_free(p);
  return t / ROUNDS * 1e6;
}

static double raw_roundtrip(void) {
  int to[2], from[2];
  if (pipe(to) || pipe(from))
    exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    close(to[1]);
    close(from[0]);
    char m[8];
    while (mproc__read_full(to[0], m, 8) == 8)
      mproc__write_full(from[1], m, 8);
    _exit(0);
  }
  close(to[0]);
  close(from[1]);
  char msg[8] = "ping!!!";
  double t = bench_now();
  for (int i = 0; i < ROUNDS; i++) {
    if (mproc__write_full(to[1], msg, 8) || mproc__read_full(from[0], msg, 8) != 8)
      exit(1);
  }
  t = bench_now() - t;
  close(to[1]);
  close(from[0]);
  waitpid(pid, NULL, 0);
  return t / ROUNDS * 1e6;
}

/* ---- 1 MiB messages one way ---- */

static int mproc_sender(void *arg) {
  ends *e = arg;
  mproc_conn_free(e->theirs);
  char *buf = malloc(MIB);
  memset(buf, 7, MIB);
  for (int i = 0; i < BIG_MSGS; i++)
    if (mproc_conn_send(e->mine, buf, MIB))
      return 1;
  free(buf);
  return 0;
}

static double mproc_oneway(void) {
  mproc_conn *r, *w;
  if (mproc_pipe(&r, &w, false))
    exit(1);
  ends e = {w, r};
  mproc_process *p;
  if (mproc_process_new(&p, mproc_sender, &e, NULL) || mproc_process_start(p))
    exit(1);
  mproc_conn_free(w);
  double t = bench_now();
  for (int i = 0; i < BIG_MSGS; i++) {
    void *m;
    size_t n;
    if (mproc_conn_recv(r, &m, &n, MPROC_FOREVER) || n != MIB)
      exit(1);
    free(m);
  }
  t = bench_now() - t;
  mproc_conn_free(r);
  mproc_process_join(p, MPROC_FOREVER);
  mproc_process_free(p);
  return (double)BIG_MSGS * MIB / t / 1e9;
}

static double raw_oneway(void) {
  int fds[2];
  if (pipe(fds))
    exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    char *buf = malloc(MIB);
    memset(buf, 7, MIB);
    for (int i = 0; i < BIG_MSGS; i++)
      mproc__write_full(fds[1], buf, MIB);
    _exit(0);
  }
  close(fds[1]);
  char *buf = malloc(MIB);
  double t = bench_now();
  for (int i = 0; i < BIG_MSGS; i++)
    if (mproc__read_full(fds[0], buf, MIB) != MIB)
      exit(1);
  t = bench_now() - t;
  close(fds[0]);
  free(buf);
  waitpid(pid, NULL, 0);
  return (double)BIG_MSGS * MIB / t / 1e9;
}

/* Alternates the two so that background load hits both alike; medians of RUNS. */
static void compare(const char *name, const char *unit, double (*mine)(void),
                    double (*raw)(void)) {
  double m[RUNS], r[RUNS];
  for (int i = 0; i < RUNS; i++) {
    m[i] = mine();
    r[i] = raw();
  }
  bench_report(name, "mproc", bench_median(m, RUNS), unit);
  bench_report(name, "raw", bench_median(r, RUNS), unit);
}

int main(void) {
  compare("pipe_roundtrip_8B", "us", mproc_roundtrip, raw_roundtrip);
  compare("pipe_1MiB_oneway", "GB/s", mproc_oneway, raw_oneway);
  return 0;
}
