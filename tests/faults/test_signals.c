/* No process-wide side effects: a whole Process, Pipe and Pool lifecycle (a send to a gone
 * reader included) leaves every signal disposition and the thread's mask as they were. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct sig_state {
  struct sigaction act[NSIG];
  sigset_t mask;
} sig_state;

static void snapshot(sig_state *s) {
  memset(s, 0, sizeof *s);
  for (int sig = 1; sig < NSIG; sig++)
    sigaction(sig, NULL, &s->act[sig]); /* fails (and stays zero) for SIGKILL/STOP/RT gaps */
  pthread_sigmask(SIG_SETMASK, NULL, &s->mask);
}

static void expect_same(const sig_state *a, const sig_state *b) {
  for (int sig = 1; sig < NSIG; sig++) {
    cr_expect(a->act[sig].sa_handler == b->act[sig].sa_handler, "signal %d (%s): disposition changed",
              sig, strsignal(sig));
    cr_expect_eq(a->act[sig].sa_flags, b->act[sig].sa_flags, "signal %d: flags changed", sig);
    cr_expect_eq(sigismember(&a->mask, sig), sigismember(&b->mask, sig),
                 "signal %d: mask changed", sig);
  }
}

static int ret7(void *arg) {
  (void)arg;
  return 7;
}

static int twice(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int64_t v = *(const int64_t *)arg * 2;
  return mproc_result_set(res, &v, sizeof v);
}

static int sq(const void *in, void *out, const void *args) {
  (void)args;
  *(int64_t *)out = *(const int64_t *)in * *(const int64_t *)in;
  return 0;
}

static void lifecycle(void) {
  mproc_process *p;
  cr_assert_eq(mproc_process_new(&p, ret7, NULL, NULL), 0);
  cr_assert_eq(mproc_process_start(p), 0);
  int code = 0;
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, 7);
  mproc_process_free(p);

  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, true), 0);
  mproc_conn_free(r);
  cr_assert_eq(mproc_conn_send(w, "x", 1), -EPIPE);
  mproc_conn_free(w);

  mproc_pool *pool;
  mproc_pool_opts o = {.processes = 2};
  cr_assert_eq(mproc_pool_new(&pool, &o), 0);
  int64_t v = 21, *got = NULL;
  cr_assert_eq(mproc_pool_apply(pool, twice, &v, sizeof v, (void **)&got, NULL), 0);
  cr_assert_eq(*got, 42);
  free(got);
  int64_t in[100], out[100];
  for (int i = 0; i < 100; i++)
    in[i] = i;
  cr_assert_eq(mproc_pool_map(pool, sq, in, 100, 8, out, 8, NULL), 0);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(out[i], (int64_t)i * i);
  cr_assert_eq(mproc_pool_close(pool), 0);
  cr_assert_eq(mproc_pool_join(pool), 0);
  mproc_pool_free(pool);
}

static void on_signal(int sig) { (void)sig; }

Test(signals, defaults_stay_defaults) {
  th_scope s = th_begin();
  sig_state before, after;
  snapshot(&before);
  lifecycle();
  snapshot(&after);
  expect_same(&before, &after);
  th_end(s);
}

/* A program's own handlers and blocked signals are kept too. */
Test(signals, the_programs_handlers_and_mask_stay) {
  th_scope s = th_begin();
  struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
  int sigs[] = {SIGPIPE, SIGCHLD, SIGINT, SIGTERM, SIGUSR1};
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
    cr_assert_eq(sigaction(sigs[i], &sa, NULL), 0);
  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, NULL);
  sig_state before, after;
  snapshot(&before);
  lifecycle();
  snapshot(&after);
  expect_same(&before, &after);
  pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);
  th_end(s);
}

/* Growing shared memory past RLIMIT_FSIZE raises SIGXFSZ, whose default ends the process:
 * the calls fail with -EFBIG instead (or, for a mapping that need not be named, fall back to
 * anonymous memory), nothing is left pending, and the limit's removal lets them work. */
Test(signals, file_size_limit_is_an_error_not_a_signal) {
  th_scope s = th_begin();
  sig_state before, after;
  snapshot(&before);
  struct rlimit old, low;
  cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
  low = old;
  low.rlim_cur = 64 << 10;
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &low), 0);
  mproc_array *a = NULL; /* a private mapping stands in for a memfd that could not grow */
  int rc = mproc_array_new(&a, 1, 1 << 20, NULL, false);
  cr_expect(rc == 0 || rc == -EFBIG, "%s", mproc_err_name(rc));
  if (rc == 0) {
    ((char *)mproc_array_data(a))[(1 << 20) - 1] = 4;
    cr_expect_eq(((char *)mproc_array_data(a))[(1 << 20) - 1], 4);
    mproc_array_free(a);
  }
  char name[64];
  snprintf(name, sizeof name, "/mproc-test-fsize-%d", (int)getpid());
  mproc_shm *sh = NULL;
  cr_expect_eq(mproc_shm_create(&sh, name, 1 << 20), -EFBIG);
  cr_expect_null(sh);
  sigset_t pending;
  sigpending(&pending);
  cr_expect_not(sigismember(&pending, SIGXFSZ), "a SIGXFSZ was left pending");
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
  cr_assert_eq(mproc_array_new(&a, 1, 1 << 20, NULL, false), 0);
  ((char *)mproc_array_data(a))[(1 << 20) - 1] = 5;
  cr_expect_eq(((char *)mproc_array_data(a))[(1 << 20) - 1], 5);
  mproc_array_free(a);
  cr_assert_eq(mproc_shm_create(&sh, name, 1 << 20), 0);
  cr_expect_eq(mproc_shm_unlink(sh), 0);
  mproc_shm_free(sh);
  snapshot(&after);
  expect_same(&before, &after);
  th_end(s);
}
