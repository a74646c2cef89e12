/* Listener/Client: an 8-byte round trip over a Unix socket (with the authkey handshake
 * done once), the cost of one connect + mutual handshake + accept, and 64 MiB messages one
 * way over loopback TCP (each a fresh malloc'd message, and all into one reused buffer with
 * recv_bytes_into); beside a raw socket doing the same by hand. Twin:
 * bench/py_listener.py (multiprocessing.connection). */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 20000
#define CONNECTS 500
#define RUNS 5
/* The round trip swings between ~4 and ~35 us with the shared VM's state (an idle vCPU's
 * wake-up): more alternated pairs, so that both medians see the same mix. */
#define RT_RUNS 15
#define BIG ((size_t)64 << 20)
#define BIG_MSGS 16
#define KEY "bench key"

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_listener: %s: %s\n", what, mproc_strerror(rc));
  exit(1);
}

/* A forked child that connects to l and then runs fn on the connection. */
static pid_t client_child(mproc_listener *l, void (*fn)(mproc_conn *)) {
  pid_t pid = fork();
  if (pid == 0) {
    mproc_conn *c;
    int rc = mproc_client(&c, mproc_listener_address(l), KEY, strlen(KEY), 10);
    if (rc)
      die("client", rc);
    fn(c);
    mproc_conn_free(c);
    _exit(0);
  }
  return pid;
}

static void echo(mproc_conn *c) {
  void *m;
  size_t n;
  while (mproc_conn_recv(c, &m, &n, MPROC_FOREVER) == 0) {
    mproc_conn_send(c, m, n);
    free(m);
  }
}

static double mproc_roundtrip(void) {
  mproc_listener *l;
  int rc = mproc_listener_new(&l, NULL, KEY, strlen(KEY), 0);
  if (rc)
    die("listener", rc);
  pid_t pid = client_child(l, echo);
  mproc_conn *c;
  if ((rc = mproc_listener_accept(l, &c, 10)))
    die("accept", rc);
  double t = bench_now();
  for (int i = 0; i < ROUNDS; i++) {
    void *m;
    size_t n;
    if (mproc_conn_send(c, "ping!!!", 8) || mproc_conn_recv(c, &m, &n, MPROC_FOREVER))
      exit(1);
    free(m);
  }
  t = bench_now() - t;
  mproc_conn_free(c);
  waitpid(pid, NULL, 0);
  mproc_listener_free(l);
  return t / ROUNDS * 1e6;
}

/* The raw reference: a socketpair, 8 bytes each way with read/write. */
static double raw_roundtrip(void) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
    exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    char m[8];
    while (mproc__read_full(sv[1], m, 8) == 8)
      mproc__write_sock(sv[1], m, 8);
    _exit(0);
  }
  close(sv[1]);
  char msg[8] = "ping!!!";
  double t = bench_now();
  for (int i = 0; i < ROUNDS; i++)
    if (mproc__write_sock(sv[0], msg, 8) || mproc__read_full(sv[0], msg, 8) != 8)
      exit(1);
  t = bench_now() - t;
  close(sv[0]);
  waitpid(pid, NULL, 0);
  return t / ROUNDS * 1e6;
}

/* connect + both challenges + accept, CONNECTS times; the child accepts. */
static double mproc_connect(void) {
  mproc_listener *l;
  int rc = mproc_listener_new(&l, NULL, KEY, strlen(KEY), 0);
  if (rc)
    die("listener", rc);
  pid_t pid = fork();
  if (pid == 0) {
    for (int i = 0; i < CONNECTS; i++) {
      mproc_conn *c;
      if ((rc = mproc_listener_accept(l, &c, 10)))
        die("accept", rc);
      mproc_conn_free(c);
    }
    _exit(0);
  }
  double t = bench_now();
  for (int i = 0; i < CONNECTS; i++) {
    mproc_conn *c;
    if ((rc = mproc_client(&c, mproc_listener_address(l), KEY, strlen(KEY), 10)))
      die("client", rc);
    mproc_conn_free(c);
  }
  t = bench_now() - t;
  waitpid(pid, NULL, 0);
  mproc_listener_free(l);
  return t / CONNECTS * 1e6;
}

static void big_sender(mproc_conn *c) {
  char *buf = malloc(BIG);
  memset(buf, 7, BIG);
  for (int i = 0; i < BIG_MSGS; i++)
    if (mproc_conn_send(c, buf, BIG))
      exit(1);
  free(buf);
}

/* 64 MiB messages over loopback TCP into the receiver: each a fresh malloc'd block from
 * mproc_conn_recv (into == false), or all into one reused buffer with
 * mproc_conn_recv_bytes_into, as the raw reference reads. */
static double tcp_big(bool into) {
  mproc_listener *l;
  int rc = mproc_listener_new(&l, "tcp:127.0.0.1:0", KEY, strlen(KEY), 0);
  if (rc)
    die("listener", rc);
  pid_t pid = client_child(l, big_sender);
  mproc_conn *c;
  if ((rc = mproc_listener_accept(l, &c, 10)))
    die("accept", rc);
  char *buf = into ? malloc(BIG) : NULL;
  double t = bench_now();
  for (int i = 0; i < BIG_MSGS; i++) {
    void *m;
    size_t n;
    if (into ? mproc_conn_recv_bytes_into(c, buf, BIG, &n, MPROC_FOREVER)
             : mproc_conn_recv(c, &m, &n, MPROC_FOREVER))
      exit(1);
    if (n != BIG)
      exit(1);
    if (!into)
      free(m);
  }
  t = bench_now() - t;
  free(buf);
  mproc_conn_free(c);
  waitpid(pid, NULL, 0);
  mproc_listener_free(l);
  return (double)BIG_MSGS * BIG / t / 1e9;
}

static double mproc_tcp_big(void) { return tcp_big(false); }
static double mproc_tcp_big_into(void) { return tcp_big(true); }

/* The raw reference: the same bytes over a loopback TCP connection, read into one buffer. */
static double raw_tcp_big(void) {
  mproc__sockaddr a;
  if (mproc__addr_tcp(&a, "127.0.0.1", "0"))
    exit(1);
  int lfd = mproc__sock_listen(&a, 1);
  if (lfd < 0)
    exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = mproc__sock_connect(&a, MPROC__NEVER);
    char *buf = malloc(BIG);
    memset(buf, 7, BIG);
    for (int i = 0; i < BIG_MSGS; i++)
      mproc__write_sock(fd, buf, BIG);
    _exit(0);
  }
  if (mproc__poll_fd(lfd, POLLIN, MPROC__NEVER, NULL) != 1)
    exit(1);
  int fd = mproc__sock_accept(lfd);
  char *buf = malloc(BIG);
  double t = bench_now();
  for (int i = 0; i < BIG_MSGS; i++)
    if (mproc__read_full(fd, buf, BIG) != (ssize_t)BIG)
      exit(1);
  t = bench_now() - t;
  free(buf);
  close(fd);
  close(lfd);
  waitpid(pid, NULL, 0);
  return (double)BIG_MSGS * BIG / t / 1e9;
}

/* runs alternated pairs of mine and raw, the median of each reported. */
static void compare(const char *name, const char *unit, int runs, double (*mine)(void),
                    double (*raw)(void)) {
  double m[RT_RUNS], r[RT_RUNS];
  for (int i = 0; i < runs; i++) {
    m[i] = mine();
    if (raw)
      r[i] = raw();
  }
  bench_report(name, "mproc", bench_median(m, runs), unit);
  if (raw)
    bench_report(name, "raw", bench_median(r, runs), unit);
}

int main(void) {
  compare("listener_roundtrip_8B_unix", "us", RT_RUNS, mproc_roundtrip, raw_roundtrip);
  compare("listener_connect_handshake_unix", "us", RUNS, mproc_connect, NULL);
  compare("listener_64MiB_tcp_oneway", "GB/s", RUNS, mproc_tcp_big, raw_tcp_big);
  compare("listener_64MiB_tcp_oneway_into", "GB/s", RUNS, mproc_tcp_big_into, raw_tcp_big);
  return 0;
}
