/* The conn layer: Pipe/Connection framing, timeouts, EOF, wrong ends, mproc_wait. */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"
#include "testing.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void nap_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static void fill(unsigned char *b, size_t n, unsigned seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    b[i] = (unsigned char)(x >> 16);
  }
}

/* ---- round trips through an echoing child ---- */

/* A child running fn with the given ends as its handles 0 and 1 (h1 may be NULL): they
 * cross under every start method. */
static mproc_process *start_with(mproc_target_fn fn, mproc_conn *h0, mproc_conn *h1) {
  void *h[2] = {h0, h1};
  mproc_process_opts o = {.handles = h, .n_handles = h1 ? 2 : 1};
  mproc_process *p;
  cr_assert_eq(mproc_process_new(&p, fn, NULL, &o), 0);
  cr_assert_eq(mproc_process_start(p), 0);
  return p;
}

/* The child's copy of the parent's end (handle 1) must go, or it never sees EOF. */
static int echo(void *arg) {
  (void)arg;
  mproc_conn_free(mproc_process_handle(1));
  mproc_conn *c = mproc_process_handle(0);
  for (;;) {
    void *m;
    size_t n;
    int rc = mproc_conn_recv(c, &m, &n, MPROC_FOREVER);
    if (rc == MPROC_EOF)
      return 0;
    if (rc)
      return 1;
    rc = mproc_conn_send(c, m, n);
    free(m);
    if (rc)
      return 2;
  }
}

static void round_trip(mproc_conn *c, size_t len, unsigned seed) {
  unsigned char *src = malloc(len ? len : 1);
  cr_assert_not_null(src);
  fill(src, len, seed);
  cr_assert_eq(mproc_conn_send(c, src, len), 0);
  void *got = NULL;
  size_t n = 12345;
  cr_assert_eq(mproc_conn_recv(c, &got, &n, MPROC_FOREVER), 0);
  cr_assert_not_null(got, "even a 0-byte message comes in a buffer");
  cr_assert_eq(n, len);
  cr_assert_eq(memcmp(got, src, len), 0, "%zu bytes differ", len);
  free(got);
  free(src);
}

Test(conn, round_trips_exact_contents) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, true), 0);
  mproc_process *p = start_with(echo, b, a);
  mproc_conn_free(b);
  size_t sizes[] = {0, 1, 2, 3, 4, 5, 100, 65536, 65537, 1 << 20, (size_t)256 << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    round_trip(a, sizes[i], (unsigned)i);
  mproc_conn_free(a); /* EOF ends the echo loop */
  int code;
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, 0);
  mproc_process_free(p);
  th_end(s);
}

/* ---- one-way pipes: order, EOF, wrong ends ---- */

#define N_ORDERED 10000

static int send_ordered(void *arg) {
  (void)arg;
  mproc_conn *w = mproc_process_handle(0);
  unsigned char buf[300];
  for (uint32_t i = 0; i < N_ORDERED; i++) {
    size_t len = 4 + i % 200;
    fill(buf, len, i);
    memcpy(buf, &i, 4);
    if (mproc_conn_send(w, buf, len))
      return 1;
  }
  return 0;
}

Test(conn, ten_thousand_ordered_messages_then_eof) {
  th_scope s = th_begin();
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  mproc_process *p = start_with(send_ordered, w, NULL);
  mproc_conn_free(w);
  unsigned char want[300];
  for (uint32_t i = 0; i < N_ORDERED; i++) {
    void *m;
    size_t n;
    cr_assert_eq(mproc_conn_recv(r, &m, &n, 30.0), 0);
    size_t len = 4 + i % 200;
    fill(want, len, i);
    memcpy(want, &i, 4);
    cr_assert_eq(n, len);
    cr_assert_eq(memcmp(m, want, len), 0, "message %u", i);
    free(m);
  }
  void *m = NULL;
  size_t n;
  cr_assert_eq(mproc_conn_recv(r, &m, &n, 30.0), MPROC_EOF);
  cr_assert_eq(mproc_conn_recv(r, &m, &n, 0), MPROC_EOF, "EOF stays");
  cr_assert_eq(mproc_conn_poll(r, 0), 1, "EOF is ready");
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  mproc_conn_free(r);
  mproc_process_free(p);
  th_end(s);
}

Test(conn, wrong_ends_of_one_way_pipe) {
  th_scope s = th_begin();
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_send(r, "x", 1), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv(w, &m, &n, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv(w, &m, &n, MPROC_FOREVER), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_poll(w, MPROC_FOREVER), MPROC_EINVAL);
  mproc_waitable wt = {.conn = w};
  cr_assert_eq(mproc_wait(&wt, 1, MPROC_FOREVER), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_send(w, "xy", 2), 0);
  cr_assert_eq(mproc_conn_recv(r, &m, &n, 0), 0);
  cr_assert_eq(n, 2);
  free(m);
  cr_assert_geq(mproc_conn_fileno(r), 0);
  cr_assert_neq(mproc_conn_fileno(r), mproc_conn_fileno(w));
  mproc_conn_free(r);
  mproc_conn_free(w);
  th_end(s);
}

/* mproc raises no SIGPIPE (as send(MSG_NOSIGNAL) does not): a send to a gone reader is
 * -EPIPE, small or big, a handler stays installed and is not called, and at the default
 * disposition the program is not killed. */
static void send_to_gone_reader(bool duplex) {
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, duplex), 0);
  mproc_conn_free(r);
  cr_assert_eq(mproc_conn_send(w, "lost", 4), -EPIPE);
  char big[100000] = {0};
  cr_assert_eq(mproc_conn_send(w, big, sizeof big), -EPIPE);
  mproc_conn_free(w);
}

Test(conn, eof_after_buffered_messages_and_epipe_without_sigpipe) {
  th_scope s = th_begin();
  for (int duplex = 0; duplex < 2; duplex++) {
    mproc_conn *r, *w;
    cr_assert_eq(mproc_pipe(&r, &w, duplex), 0);
    cr_assert_eq(mproc_conn_send(w, "one", 3), 0);
    cr_assert_eq(mproc_conn_send(w, "", 0), 0);
    mproc_conn_free(w);
    void *m;
    size_t n;
    cr_assert_eq(mproc_conn_recv(r, &m, &n, 0), 0);
    cr_assert_eq(n, 3);
    free(m);
    cr_assert_eq(mproc_conn_recv(r, &m, &n, 0), 0);
    cr_assert_eq(n, 0);
    free(m);
    cr_assert_eq(mproc_conn_recv(r, &m, &n, MPROC_FOREVER), MPROC_EOF);
    mproc_conn_free(r);

    send_to_gone_reader(duplex);
  }
  th_end(s);
}

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int sig) {
  (void)sig;
  sigpipes++;
}

Test(conn, user_sigpipe_handler_is_left_alone) {
  th_scope s = th_begin();
  struct sigaction sa = {.sa_handler = on_sigpipe};
  sigaction(SIGPIPE, &sa, NULL);
  send_to_gone_reader(false);
  struct sigaction now;
  sigaction(SIGPIPE, NULL, &now);
  cr_assert_eq(now.sa_handler, on_sigpipe);
  cr_assert_eq(sigpipes, 0);
  th_end(s);
}

Test(conn, default_sigpipe_does_not_kill_the_sender) {
  th_scope s = th_begin();
  struct sigaction dfl = {.sa_handler = SIG_DFL}, now;
  sigaction(SIGPIPE, &dfl, NULL);
  send_to_gone_reader(false);
  sigaction(SIGPIPE, NULL, &now);
  cr_assert(now.sa_handler == SIG_DFL, "the disposition was changed");
  th_end(s);
}

/* ---- timeouts ---- */

Test(conn, recv_and_poll_timeouts) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, true), 0);
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0), MPROC_EAGAIN);
  int64_t t0 = mproc__now_ns();
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0.05), MPROC_ETIMEDOUT);
  cr_assert_geq(mproc__now_ns() - t0, 50000000, "recv returned before its timeout");
  cr_assert_eq(mproc_conn_poll(a, 0), 0);
  t0 = mproc__now_ns();
  cr_assert_eq(mproc_conn_poll(a, 0.03), 0);
  cr_assert_geq(mproc__now_ns() - t0, 30000000);
  cr_assert_eq(mproc_conn_send(b, "hi", 2), 0);
  cr_assert_eq(mproc_conn_poll(a, 0), 1);
  cr_assert_eq(mproc_conn_poll(a, MPROC_FOREVER), 1);
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0), 0);
  cr_assert_eq(n, 2);
  cr_assert_eq(memcmp(m, "hi", 2), 0);
  free(m);
  mproc_conn_free(a);
  mproc_conn_free(b);
  th_end(s);
}

/* Frames as conn.c writes them: header, payload, padding up to 64 bytes. */
static size_t frame(unsigned char *f, const char *payload, size_t len, bool long_form) {
  size_t hl = long_form ? 12 : 4;
  memset(f, 0, 64);
  if (long_form) {
    memset(f, 0xff, 4);
    for (int i = 0; i < 8; i++)
      f[4 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
  } else {
    for (int i = 0; i < 4; i++)
      f[i] = (unsigned char)(len >> (24 - 8 * i));
  }
  memcpy(f + hl, payload, len);
  return hl + len < 64 ? 64 : hl + len;
}

static void expect_msg(mproc_conn *c, const char *want, size_t len) {
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(c, &m, &n, 1.0), 0);
  cr_assert_eq(n, len);
  cr_assert_eq(memcmp(m, want, len), 0);
  free(m);
}

/* A message half-arrived at the deadline is kept and finished by the next recv. */
Test(conn, half_arrived_message_is_not_torn) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, false), 0); /* b's fileno is its sending descriptor */
  int fd = mproc_conn_fileno(b);
  unsigned char f[256];
  char text[101];
  for (int i = 0; i < 100; i++)
    text[i] = (char)('a' + i % 26);
  /* Small: cut inside the header, then inside the padded first 64 bytes. */
  size_t fl = frame(f, text, 10, false);
  cr_assert_eq(mproc__write_full(fd, f, 2), 0);
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc__write_full(fd, f + 2, 8), 0);
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc__write_full(fd, f + 10, fl - 10), 0);
  cr_assert_eq(mproc_conn_send(b, "next", 4), 0);
  expect_msg(a, text, 10);
  expect_msg(a, "next", 4);
  /* Larger than the first 64 bytes: cut inside the rest of the payload. */
  fl = frame(f, text, 100, false);
  cr_assert_eq(mproc__write_full(fd, f, 80), 0);
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc__write_full(fd, f + 80, fl - 80), 0);
  expect_msg(a, text, 100);
  /* A peer that closes mid-message: EOF, not a torn message. */
  cr_assert_eq(mproc__write_full(fd, f, 70), 0);
  mproc_conn_free(b);
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 1.0), MPROC_EOF);
  mproc_conn_free(a);
  th_end(s);
}

/* Python's long form (0xffffffff then an 8-byte big-endian length) is read for any size. */
Test(conn, long_length_header) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, false), 0);
  unsigned char f[256];
  char text[100];
  memset(text, 'q', sizeof text);
  size_t fl = frame(f, text, 5, true);
  cr_assert_eq(mproc__write_full(mproc_conn_fileno(b), f, fl), 0);
  fl = frame(f, text, 100, true);
  cr_assert_eq(mproc__write_full(mproc_conn_fileno(b), f, fl), 0);
  expect_msg(a, text, 5);
  expect_msg(a, text, 100);
  mproc_conn_free(a);
  mproc_conn_free(b);
  th_end(s);
}

/* A header that claims far more than comes: the receiver allocates as bytes arrive, so a
 * lying peer costs what it sent, and its close is a plain EOF (not ENOMEM, not a crash). */
Test(conn, lying_length_header) {
  th_scope s = th_begin();
  uint64_t claims[] = {(uint64_t)1 << 40, (uint64_t)3 << 20, (uint64_t)INT64_MAX};
  for (size_t k = 0; k < sizeof claims / sizeof *claims; k++) {
    mproc_conn *a, *b;
    cr_assert_eq(mproc_pipe(&a, &b, false), 0);
    unsigned char f[64 + 4096];
    memset(f, 'z', sizeof f);
    f[0] = f[1] = f[2] = f[3] = 0xff; /* the long form: 8 bytes of length follow */
    for (int i = 0; i < 8; i++)
      f[4 + i] = (unsigned char)(claims[k] >> (56 - 8 * i));
    cr_assert_eq(mproc__write_full(mproc_conn_fileno(b), f, sizeof f), 0);
    /* 1 MiB and a bit more of the body, then the peer goes. */
    static char more[(1 << 20) + 12345];
    pid_t w = th_fork_tied();
    if (w == 0) {
      mproc_conn_free(a);
      _exit(mproc__write_full(mproc_conn_fileno(b), more, sizeof more) == 0 ? 0 : 1);
    }
    mproc_conn_free(b);
    void *buf = NULL;
    size_t len = 0;
    cr_expect_eq(mproc_conn_recv(a, &buf, &len, MPROC_FOREVER), MPROC_EOF, "claim %llu",
                 (unsigned long long)claims[k]);
    cr_expect_null(buf);
    cr_expect_eq(th_exitcode(w), 0);
    mproc_conn_free(a);
  }
  th_end(s);
}

static void on_usr1(int sig) { (void)sig; }

static int signal_then_send(void *arg) {
  (void)arg;
  mproc_conn *c = mproc_process_handle(0);
  kill(mproc_parent_pid(), SIGUSR1);
  nap_ms(50);
  kill(mproc_parent_pid(), SIGUSR1);
  return mproc_conn_send(c, "late", 4) ? 1 : 0;
}

Test(conn, signals_do_not_break_a_blocking_recv) {
  th_scope s = th_begin();
  struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: EINTR comes back */
  sigaction(SIGUSR1, &sa, NULL);
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  mproc_process *p = start_with(signal_then_send, w, NULL);
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(r, &m, &n, MPROC_FOREVER), 0);
  cr_assert_eq(n, 4);
  free(m);
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  int code;
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, 0);
  mproc_process_free(p);
  mproc_conn_free(r);
  mproc_conn_free(w);
  th_end(s);
}

/* ---- mproc_wait ---- */

static int sleep_forever(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return 0;
}

static int quick(void *arg) {
  (void)arg;
  return 5;
}

static void wait_over_conns_and_processes(void) {
  mproc_conn *a1, *b1, *a2, *b2;
  cr_assert_eq(mproc_pipe(&a1, &b1, true), 0);
  cr_assert_eq(mproc_pipe(&a2, &b2, false), 0);
  mproc_process *sl, *q;
  mproc_process_opts d = {.daemon = true};
  cr_assert_eq(mproc_process_new(&sl, sleep_forever, NULL, &d), 0);
  cr_assert_eq(mproc_process_new(&q, quick, NULL, NULL), 0);
  mproc_waitable w[4] = {{.conn = a1}, {.conn = a2}, {.process = sl}, {.process = q}};
  cr_assert_eq(mproc_wait(w, 4, 0), MPROC_ESTATE, "a process not started");
  cr_assert_eq(mproc_process_start(sl), 0);
  cr_assert_eq(mproc_process_start(q), 0);
  w[3].process = NULL;
  cr_assert_eq(mproc_wait(w, 3, 0), 0);
  int64_t t0 = mproc__now_ns();
  cr_assert_eq(mproc_wait(w, 3, 0.03), 0);
  cr_assert_geq(mproc__now_ns() - t0, 30000000);
  cr_assert(!w[0].ready && !w[1].ready && !w[2].ready);

  w[3].process = q;
  cr_assert_eq(mproc_wait(w, 4, 30.0), 1);
  cr_assert(w[3].ready && !w[0].ready && !w[1].ready && !w[2].ready);
  cr_assert(mproc_process_is_alive(q) == false);
  cr_assert_eq(mproc_wait(w, 4, MPROC_FOREVER), 1, "a reaped process stays ready");

  cr_assert_eq(mproc_conn_send(b2, "x", 1), 0);
  cr_assert_eq(mproc_conn_send(b1, "y", 1), 0);
  cr_assert_eq(mproc_wait(w, 3, 10.0), 2);
  cr_assert(w[0].ready && w[1].ready && !w[2].ready);
  mproc_process_kill(sl);
  cr_assert_eq(mproc_wait(w + 2, 1, 30.0), 1);
  cr_assert(w[2].ready);
  mproc_process_free(sl);
  mproc_process_free(q);
  mproc_conn_free(a1);
  mproc_conn_free(b1);
  mproc_conn_free(a2);
  mproc_conn_free(b2);
}

Test(conn, wait_over_conns_and_processes) {
  th_scope s = th_begin();
  wait_over_conns_and_processes();
  th_end(s);
}

Test(conn, wait_over_processes_without_pidfd) {
  th_scope s = th_begin();
  mproc__test_no_pidfd = true;
  wait_over_conns_and_processes();
  mproc__test_no_pidfd = false;
  th_end(s);
}

Test(conn, wait_many_items) {
  th_scope s = th_begin();
  enum { N = 40 };
  mproc_conn *a[N], *b[N];
  mproc_waitable w[N];
  for (int i = 0; i < N; i++) {
    cr_assert_eq(mproc_pipe(&a[i], &b[i], false), 0);
    w[i] = (mproc_waitable){.conn = a[i]};
  }
  cr_assert_eq(mproc_wait(w, N, 0), 0);
  for (int i = 0; i < N; i += 3)
    cr_assert_eq(mproc_conn_send(b[i], "", 0), 0);
  cr_assert_eq(mproc_wait(w, N, 1.0), (N + 2) / 3);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(w[i].ready, i % 3 == 0);
    mproc_conn_free(a[i]);
    mproc_conn_free(b[i]);
  }
  th_end(s);
}

/* ---- beyond 4 GiB (needs ~5 GiB of memory: only with MPROC_TEST_HUGE=1) ---- */

static int send_huge(void *arg) {
  (void)arg;
  mproc_conn *w = mproc_process_handle(0);
  size_t len = ((size_t)4 << 30) + 3;
  /* Untouched anonymous pages read as zeros and cost no memory. */
  unsigned char *z = mmap(NULL, len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (z == MAP_FAILED)
    return 1;
  z[0] = 1;
  z[len - 1] = 2;
  z[(size_t)1 << 32] = 3;
  return mproc_conn_send(w, z, len) ? 2 : 0;
}

Test(conn, message_beyond_4GiB) {
  if (!getenv("MPROC_TEST_HUGE"))
    cr_skip_test("set MPROC_TEST_HUGE=1 to run (needs ~5 GiB)");
  th_scope s = th_begin();
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  mproc_process *p = start_with(send_huge, w, NULL);
  mproc_conn_free(w);
  unsigned char *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(r, (void **)&m, &n, MPROC_FOREVER), 0);
  size_t len = ((size_t)4 << 30) + 3;
  cr_assert_eq(n, len);
  cr_assert_eq(m[0], 1);
  cr_assert_eq(m[len - 1], 2);
  cr_assert_eq(m[(size_t)1 << 32], 3);
  size_t nonzero = 0;
  for (size_t i = 0; i < len; i++)
    nonzero += m[i] != 0;
  cr_assert_eq(nonzero, 3);
  free(m);
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  int code;
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, 0);
  mproc_process_free(p);
  mproc_conn_free(r);
  th_end(s);
}

/* ---- recv_bytes_into ---- */

/* Sends len bytes of pattern seed and receives them back with recv_bytes_into. */
static void round_trip_into(mproc_conn *c, unsigned char *buf, size_t cap, size_t len,
                            unsigned seed) {
  unsigned char *src = malloc(len ? len : 1);
  cr_assert_not_null(src);
  fill(src, len, seed);
  cr_assert_eq(mproc_conn_send(c, src, len), 0);
  size_t n = 12345;
  if (len < cap)
    buf[len] = 0xa5; /* past the message: left alone */
  cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, cap, &n, MPROC_FOREVER), 0);
  cr_assert_eq(n, len);
  cr_assert_eq(memcmp(buf, src, len), 0, "%zu bytes differ", len);
  if (len < cap)
    cr_assert_eq(buf[len], 0xa5);
  free(src);
}

Test(conn, recv_bytes_into_exact_contents) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, true), 0);
  mproc_process *p = start_with(echo, b, a);
  mproc_conn_free(b);
  size_t cap = (size_t)64 << 20;
  unsigned char *buf = malloc(cap);
  cr_assert_not_null(buf);
  size_t sizes[] = {0, 1, 59, 60, 61, 100, 65536, 65537, 1 << 20, cap};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    round_trip_into(a, buf, cap, sizes[i], (unsigned)i);
  /* A 0-byte message into no buffer at all. */
  cr_assert_eq(mproc_conn_send(a, "", 0), 0);
  size_t n = 1;
  cr_assert_eq(mproc_conn_recv_bytes_into(a, NULL, 0, &n, 10.0), 0);
  cr_assert_eq(n, 0);
  free(buf);
  mproc_conn_free(a);
  int code;
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, 0);
  mproc_process_free(p);
  th_end(s);
}

/* A message longer than the buffer: MPROC_ETOOBIG with its length, and it stays whole for
 * a bigger buffer or mproc_conn_recv; the one after it is untouched. */
Test(conn, recv_bytes_into_buffer_too_short_keeps_the_message) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, false), 0);
  unsigned char src[3000], buf[3000];
  fill(src, sizeof src, 7);
  size_t sizes[] = {1, 10, 60, 61, 3000};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    size_t len = sizes[i], n = 99;
    cr_assert_eq(mproc_conn_send(b, src, len), 0);
    cr_assert_eq(mproc_conn_send(b, "after", 5), 0);
    cr_assert_eq(mproc_conn_recv_bytes_into(a, NULL, 0, &n, 1.0), MPROC_ETOOBIG);
    cr_assert_eq(n, len);
    memset(buf, 0, sizeof buf);
    cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, len - 1, &n, 1.0), MPROC_ETOOBIG);
    cr_assert_eq(n, len);
    for (size_t k = 0; k < len - 1; k++)
      cr_assert_eq(buf[k], 0, "a too-short buffer was written to");
    if (i % 2 == 0) {
      cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, len, &n, 1.0), 0);
      cr_assert_eq(n, len);
      cr_assert_eq(memcmp(buf, src, len), 0);
    } else {
      expect_msg(a, (const char *)src, len);
    }
    cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 1.0), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(buf, "after", 5), 0);
  }
  mproc_conn_free(a);
  mproc_conn_free(b);
  th_end(s);
}

/* Timeouts: nothing there, a header only, part of the body: the part read is kept in the
 * connection and the next call of either kind finishes the message exactly. */
Test(conn, recv_bytes_into_timeouts_keep_the_half_message) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, false), 0);
  int fd = mproc_conn_fileno(b);
  unsigned char buf[256];
  size_t n;
  cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 0), MPROC_EAGAIN);
  int64_t t0 = mproc__now_ns();
  cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 0.05), MPROC_ETIMEDOUT);
  cr_assert_geq(mproc__now_ns() - t0, 50000000, "recv returned before its timeout");
  char text[101];
  for (int i = 0; i < 100; i++)
    text[i] = (char)('a' + i % 26);
  unsigned char f[256];
  for (int next_into = 0; next_into < 2; next_into++) {
    size_t fl = frame(f, text, 100, false);
    cr_assert_eq(mproc__write_full(fd, f, 2), 0);
    cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 0), MPROC_EAGAIN);
    cr_assert_eq(mproc__write_full(fd, f + 2, 80), 0);
    cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 0.02), MPROC_ETIMEDOUT);
    memset(buf, 0, sizeof buf); /* the kept part lives in the connection, not here */
    cr_assert_eq(mproc__write_full(fd, f + 82, fl - 82), 0);
    cr_assert_eq(mproc_conn_send(b, "next", 4), 0);
    if (next_into) {
      cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 1.0), 0);
      cr_assert_eq(n, 100);
      cr_assert_eq(memcmp(buf, text, 100), 0);
    } else {
      expect_msg(a, text, 100);
    }
    cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 1.0), 0);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(buf, "next", 4), 0);
  }
  /* Started by recv, finished by recv_bytes_into. */
  size_t fl = frame(f, text, 100, false);
  cr_assert_eq(mproc__write_full(fd, f, 90), 0);
  void *m;
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc__write_full(fd, f + 90, fl - 90), 0);
  cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, 99, &n, 1.0), MPROC_ETOOBIG);
  cr_assert_eq(n, 100);
  cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, 100, &n, 1.0), 0);
  cr_assert_eq(memcmp(buf, text, 100), 0);
  /* The peer closes mid-message: EOF, and it stays. */
  cr_assert_eq(mproc__write_full(fd, f, 70), 0);
  mproc_conn_free(b);
  cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 1.0), MPROC_EOF);
  cr_assert_eq(mproc_conn_recv_bytes_into(a, buf, sizeof buf, &n, 0), MPROC_EOF);
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0), MPROC_EOF);
  mproc_conn_free(a);
  th_end(s);
}

Test(conn, recv_bytes_into_bad_input) {
  th_scope s = th_begin();
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  unsigned char buf[8];
  size_t n;
  cr_assert_eq(mproc_conn_recv_bytes_into(NULL, buf, sizeof buf, &n, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv_bytes_into(r, buf, sizeof buf, NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv_bytes_into(r, NULL, 1, &n, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv_bytes_into(w, buf, sizeof buf, &n, 0), MPROC_EINVAL,
               "the send-only end");
  cr_assert_eq(mproc_conn_recv_bytes_into(r, NULL, 0, &n, 0), MPROC_EAGAIN);
  /* A long-form header past SSIZE_MAX: a hard limit, not a short buffer (*len 0). */
  unsigned char f[64] = {0xff, 0xff, 0xff, 0xff, 0xff};
  cr_assert_eq(mproc__write_full(mproc_conn_fileno(w), f, sizeof f), 0);
  n = 5;
  cr_assert_eq(mproc_conn_recv_bytes_into(r, buf, sizeof buf, &n, 1.0), MPROC_ETOOBIG);
  cr_assert_eq(n, 0);
  cr_assert_eq(mproc_conn_recv_bytes_into(r, buf, sizeof buf, &n, 1.0), MPROC_ETOOBIG);
  mproc_conn_free(w);
  cr_assert_eq(mproc_conn_recv_bytes_into(r, buf, sizeof buf, &n, 1.0), MPROC_ETOOBIG);
  mproc_conn_free(r);
  th_end(s);
}
