/* Faults for the process and conn layers: parent death, bad input, NULL handles. */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/process.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int sleep_forever(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return 0;
}

/* ---- the parent is SIGKILLed ---- */

typedef struct published {
  _Atomic uint32_t ready;
  pid_t daemons[2];
  pid_t plain;
} published;

/* The intermediate process: starts two daemons and one non-daemon, publishes their pids,
 * then waits to be killed. */
static _Noreturn void intermediate(published *pub) {
  mproc_process *d[2], *n;
  mproc_process_opts od = {.daemon = true};
  for (int i = 0; i < 2; i++)
    if (mproc_process_new(&d[i], sleep_forever, NULL, &od) || mproc_process_start(d[i]))
      _exit(1);
  if (mproc_process_new(&n, sleep_forever, NULL, NULL) || mproc_process_start(n))
    _exit(2);
  pub->daemons[0] = mproc_process_pid(d[0]);
  pub->daemons[1] = mproc_process_pid(d[1]);
  pub->plain = mproc_process_pid(n);
  atomic_store(&pub->ready, 1);
  mproc__futex_wake(&pub->ready, INT32_MAX);
  for (;;)
    pause();
}

Test(process_faults, daemons_die_when_parent_is_sigkilled) {
  th_scope s = th_begin();
  published *pub = mproc__shared_map(4096);
  cr_assert_not_null(pub);
  pid_t mid = th_fork_tied();
  if (mid == 0)
    intermediate(pub);
  int64_t deadline = mproc__deadline(30.0);
  while (atomic_load(&pub->ready) == 0 && mproc__remaining_ns(deadline) > 0)
    mproc__futex_wait(&pub->ready, 0, deadline);
  cr_assert_eq(atomic_load(&pub->ready), 1, "the intermediate process did not start");
  kill(mid, SIGKILL);
  int st;
  cr_assert_eq(mproc__waitpid(mid, &st, 0), mid);
  cr_assert(th_wait_gone(pub->daemons[0], 1.0), "daemon 1 survived its parent");
  cr_assert(th_wait_gone(pub->daemons[1], 1.0), "daemon 2 survived its parent");
  /* A non-daemon survives its parent's death, as in Python; clean it up by hand. */
  cr_assert(th_pid_alive(pub->plain), "the non-daemon died with its parent");
  kill(pub->plain, SIGKILL);
  cr_assert(th_wait_gone(pub->plain, 5.0));
  mproc__shared_unmap(pub, 4096);
  th_end(s);
}

/* A daemon of a daemon: the grandchild dies when the whole chain is killed at its root. */
static int daemon_with_daemon(void *arg) {
  (void)arg;
  published *pub = mproc_array_data(mproc_process_handle(0));
  mproc_process *g;
  mproc_process_opts od = {.daemon = true};
  if (mproc_process_new(&g, sleep_forever, NULL, &od) || mproc_process_start(g))
    return 1;
  pub->daemons[1] = mproc_process_pid(g);
  atomic_store(&pub->ready, 1);
  mproc__futex_wake(&pub->ready, INT32_MAX);
  for (;;)
    pause();
}

Test(process_faults, daemon_chain_dies_with_its_root) {
  th_scope s = th_begin();
  /* A shared Array handle: the daemon sees it under every start method. */
  mproc_array *shm;
  cr_assert_eq(mproc_array_new(&shm, sizeof(published), 1, NULL, false), 0);
  published *pub = mproc_array_data(shm);
  pid_t mid = th_fork_tied();
  if (mid == 0) {
    mproc_process *c;
    void *h[1] = {shm};
    mproc_process_opts od = {.daemon = true, .handles = h, .n_handles = 1};
    if (mproc_process_new(&c, daemon_with_daemon, NULL, &od) || mproc_process_start(c))
      _exit(1);
    pub->daemons[0] = mproc_process_pid(c);
    for (;;)
      pause();
  }
  int64_t deadline = mproc__deadline(30.0);
  while (atomic_load(&pub->ready) == 0 && mproc__remaining_ns(deadline) > 0)
    mproc__futex_wait(&pub->ready, 0, deadline);
  cr_assert_eq(atomic_load(&pub->ready), 1);
  kill(mid, SIGKILL);
  mproc__waitpid(mid, NULL, 0);
  cr_assert(th_wait_gone(pub->daemons[1], 2.0), "the grandchild daemon survived");
  cr_assert(th_wait_gone(pub->daemons[0], 2.0));
  mproc_array_free(shm);
  th_end(s);
}

/* ---- bad input and NULL handles: every Process call ---- */

static int noop(void *arg) {
  (void)arg;
  return 0;
}

Test(process_faults, null_and_bad_process_calls) {
  th_scope s = th_begin();
  mproc_process *p = (mproc_process *)0x1;
  cr_assert_eq(mproc_process_new(NULL, noop, NULL, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_process_new(&p, NULL, NULL, NULL), MPROC_EINVAL);
  cr_assert_eq(p, (mproc_process *)0x1, "a failed call changes nothing");
  cr_assert_eq(mproc_process_start(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_process_join(NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_process_join(NULL, MPROC_FOREVER), MPROC_EINVAL);
  cr_assert(!mproc_process_is_alive(NULL));
  cr_assert_eq(mproc_process_terminate(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_process_kill(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_process_interrupt(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_process_pid(NULL), 0);
  int code;
  cr_assert_eq(mproc_process_exitcode(NULL, &code), MPROC_EINVAL);
  cr_assert_null(mproc_process_name(NULL));
  cr_assert(!mproc_process_daemon(NULL));
  cr_assert_eq(mproc_process_sentinel(NULL), -1);
  mproc_process_free(NULL);
  cr_assert_eq(mproc_active_children(NULL, 5), 0);
  cr_assert_gt(mproc_parent_pid(), 0);

  cr_assert_eq(mproc_process_new(&p, noop, NULL, NULL), 0);
  cr_assert_eq(mproc_process_exitcode(p, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_process_start(p), 0);
  cr_assert_eq(mproc_process_exitcode(p, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_process_join(p, -5.0), 0, "any negative timeout waits");
  cr_assert_eq(mproc_process_join(p, 1e300), 0, "an absurd timeout is forever");
  mproc_process_free(p);
  th_end(s);
}

/* ---- bad input and NULL handles: every Pipe call ---- */

Test(process_faults, null_and_bad_pipe_calls) {
  th_scope s = th_begin();
  mproc_conn *a = NULL, *b = NULL;
  void *m = NULL;
  size_t n = 0;
  cr_assert_eq(mproc_pipe(NULL, &b, true), MPROC_EINVAL);
  cr_assert_eq(mproc_pipe(&a, NULL, false), MPROC_EINVAL);
  cr_assert_null(a);
  cr_assert_eq(mproc_conn_send(NULL, "x", 1), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_send(NULL, NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv(NULL, &m, &n, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv(NULL, &m, &n, MPROC_FOREVER), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_poll(NULL, MPROC_FOREVER), MPROC_EINVAL);
  cr_assert_lt(mproc_conn_fileno(NULL), 0);
  mproc_conn_free(NULL);
  cr_assert_eq(mproc_wait(NULL, 1, MPROC_FOREVER), MPROC_EINVAL);

  cr_assert_eq(mproc_pipe(&a, &b, true), 0);
  cr_assert_eq(mproc_conn_send(a, NULL, 5), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_send(a, NULL, 0), 0, "an empty message needs no buffer");
  cr_assert_eq(mproc_conn_recv(b, NULL, &n, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv(b, &m, NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_conn_recv(b, &m, &n, -3.0), 0);
  cr_assert_eq(n, 0);
  free(m);
  cr_assert_eq(mproc_conn_send(a, "abc", (size_t)-1), MPROC_ETOOBIG);

  mproc_waitable w[2] = {{.conn = a}, {0}};
  cr_assert_eq(mproc_wait(w, 0, MPROC_FOREVER), MPROC_EINVAL, "nothing to wait on");
  cr_assert_eq(mproc_wait(w, 2, MPROC_FOREVER), MPROC_EINVAL, "an empty item");
  mproc_process *p;
  cr_assert_eq(mproc_process_new(&p, noop, NULL, NULL), 0);
  w[1].conn = b;
  w[1].process = p;
  cr_assert_eq(mproc_wait(w, 2, MPROC_FOREVER), MPROC_EINVAL, "both conn and process");
  w[1].conn = NULL;
  cr_assert_eq(mproc_wait(w, 2, MPROC_FOREVER), MPROC_ESTATE, "a process not started");
  mproc_process_free(p);
  mproc_conn_free(a);
  mproc_conn_free(b);
  th_end(s);
}

/* A garbage length on the wire: an error, not a crash or a hang. */
Test(process_faults, absurd_length_on_the_wire) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, false), 0);
  unsigned char hdr[64] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                           0xff, 0xff, 0xff, 0xf0};
  cr_assert_eq(mproc__write_full(mproc_conn_fileno(b), hdr, sizeof hdr), 0);
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 1.0), MPROC_ETOOBIG);
  mproc_conn_free(a);
  mproc_conn_free(b);
  th_end(s);
}

/* ---- children reaped behind mproc's back ---- */

static int ret3(void *arg) {
  (void)arg;
  return 3;
}

/* With SIGCHLD ignored the kernel reaps children itself: join still returns, and the exit
 * status is reported as unknown (-ECHILD) rather than invented. */
Test(process_faults, sigchld_ignored) {
  th_scope s = th_begin();
  struct sigaction ign = {.sa_handler = SIG_IGN}, old;
  sigaction(SIGCHLD, &ign, &old);
  for (int timed = 0; timed < 2; timed++) {
    mproc_process *p;
    cr_assert_eq(mproc_process_new(&p, ret3, NULL, NULL), 0);
    cr_assert_eq(mproc_process_start(p), 0);
    cr_assert_eq(mproc_process_join(p, timed ? 30.0 : MPROC_FOREVER), 0);
    cr_assert(!mproc_process_is_alive(p));
    int code = 0;
    /* The kernel reaped our own child; a forkserver's child is the server's to reap. */
    if (mproc_get_start_method() == MPROC_START_FORKSERVER) {
      cr_assert_eq(mproc_process_exitcode(p, &code), 0);
      cr_assert_eq(code, 3);
    } else {
      cr_assert_eq(mproc_process_exitcode(p, &code), -ECHILD);
    }
    cr_assert_eq(mproc_active_children(NULL, 0), 0);
    mproc_process_free(p);
  }
  sigaction(SIGCHLD, &old, NULL);
  th_end(s);
}

/* The peer's end freed while a waiter waits: EOF makes the conn ready. */
Test(process_faults, wait_wakes_on_peer_close) {
  th_scope s = th_begin();
  mproc_conn *a, *b;
  cr_assert_eq(mproc_pipe(&a, &b, true), 0);
  mproc_waitable w = {.conn = a};
  cr_assert_eq(mproc_wait(&w, 1, 0), 0);
  mproc_conn_free(b);
  cr_assert_eq(mproc_wait(&w, 1, 10.0), 1);
  cr_assert(w.ready);
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(a, &m, &n, 0), MPROC_EOF);
  mproc_conn_free(a);
  th_end(s);
}

/* ---- a sender killed mid-message ---- */

/* Handles: 0 its end, 1 the parent's (freed, or it never sees EOF). */
static int send_16MiB(void *arg) {
  (void)arg;
  mproc_conn_free(mproc_process_handle(1));
  size_t len = (size_t)16 << 20;
  char *buf = calloc(1, len);
  /* The pipe holds at most 1 MiB: this blocks until killed, since no one reads. */
  return buf && mproc_conn_send(mproc_process_handle(0), buf, len) == 0 ? 0 : 1;
}

Test(process_faults, sender_killed_mid_message_gives_eof) {
  th_scope s = th_begin();
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  void *h[2] = {w, r};
  mproc_process_opts o = {.handles = h, .n_handles = 2};
  mproc_process *p;
  cr_assert_eq(mproc_process_new(&p, send_16MiB, NULL, &o), 0);
  cr_assert_eq(mproc_process_start(p), 0);
  mproc_conn_free(w);
  cr_assert_eq(mproc_conn_poll(r, 30.0), 1);
  /* Do not read before the kill: reading would let the whole message through. */
  mproc_process_kill(p);
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  int code;
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, -SIGKILL);
  void *m;
  size_t n;
  cr_assert_eq(mproc_conn_recv(r, &m, &n, MPROC_FOREVER), MPROC_EOF);
  cr_assert_eq(mproc_conn_recv(r, &m, &n, 0), MPROC_EOF);
  mproc_process_free(p);
  mproc_conn_free(r);
  th_end(s);
}
