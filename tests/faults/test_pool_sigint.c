/* Ctrl-C: the pool's processes ignore SIGINT; a caller blocked in a pool call whose SIGINT
 * handler runs gets -EINTR promptly; free afterwards leaves nothing behind. A helper child
 * sends SIGINT to the test process again and again until the call returns, so no timing is
 * assumed. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t handled;

static void on_sigint(int sig) {
  (void)sig;
  handled++;
}

static struct sigaction old_sa;

static void install(bool restart) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(SIGINT, &sa, &old_sa), 0);
  handled = 0;
}

static void uninstall(void) { sigaction(SIGINT, &old_sa, NULL); }

/* A child that sends SIGINT to its parent every 20 ms until killed. */
static pid_t start_interrupter(void) {
  pid_t parent = getpid();
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    for (;;) {
      struct timespec ts = {0, 20 * 1000000};
      nanosleep(&ts, NULL);
      if (kill(parent, SIGINT) != 0)
        _exit(0);
    }
  }
  return pid;
}

static void stop_interrupter(pid_t pid) {
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

static int sleepy_task(const void *arg, size_t len, mproc_result *res) {
  (void)arg;
  (void)len;
  (void)res;
  sleep(60);
  return 0;
}

static int sleepy_map(const void *in, void *out, const void *args) {
  (void)in;
  (void)out;
  (void)args;
  sleep(60);
  return 0;
}

static int quick_task(const void *arg, size_t len, mproc_result *res) {
  return mproc_result_set(res, arg, len);
}

/* The pool's processes ignore SIGINT: they survive it and the pool still works. */
Test(pool_sigint, workers_ignore_sigint) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  pid_t pids[2];
  cr_assert_eq(mproc__pool_worker_pids(p, pids, 2), 2);
  kill(mproc__pool_supervisor_pid(p), SIGINT);
  kill(pids[0], SIGINT);
  kill(pids[1], SIGINT);
  for (int i = 0; i < 20; i++) {
    int v = i, *r = NULL;
    cr_assert_eq(mproc_pool_apply(p, quick_task, &v, sizeof v, (void **)&r, NULL), 0);
    cr_assert_eq(*r, i);
    free(r);
  }
  cr_expect(th_pid_alive(pids[0]));
  cr_expect(th_pid_alive(pids[1]));
  cr_expect(th_pid_alive(mproc__pool_supervisor_pid(p)));
  mproc_pool_free(p);
  th_end(s);
}

static void get_case(bool restart) {
  mproc_pool *p = th_pool(1);
  mproc_async *a;
  cr_assert_eq(mproc_pool_apply_async(p, sleepy_task, NULL, 0, &a), 0);
  install(restart);
  pid_t k = start_interrupter();
  int rc = mproc_async_get(a, NULL, NULL, MPROC_FOREVER);
  stop_interrupter(k);
  uninstall();
  cr_expect_eq(rc, -EINTR);
  cr_expect_geq(handled, 1);
  cr_expect(!mproc_async_ready(a));
  mproc_pool_free(p); /* Python hangs here (bpo-8296) */
  cr_expect_eq(mproc_async_get(a, NULL, NULL, 0), MPROC_ECANCELLED);
  mproc_async_free(a);
}

Test(pool_sigint, during_get) {
  th_scope s = th_begin();
  get_case(false);
  get_case(true); /* SA_RESTART changes nothing */
  th_end(s);
}

Test(pool_sigint, during_map_and_apply) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  int64_t in[64] = {0}, out[64];
  install(false);
  pid_t k = start_interrupter();
  int rc = mproc_pool_map(p, sleepy_map, in, 64, 8, out, 8, NULL);
  stop_interrupter(k);
  cr_expect_eq(rc, -EINTR);
  k = start_interrupter();
  rc = mproc_pool_apply(p, sleepy_task, NULL, 0, NULL, NULL);
  stop_interrupter(k);
  cr_expect_eq(rc, -EINTR);
  uninstall();
  cr_expect_geq(handled, 2);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_sigint, during_imap_next_and_join) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(1);
  const void *items[3] = {"a", "b", "c"};
  size_t lens[3] = {1, 1, 1};
  mproc_imap *it;
  cr_assert_eq(mproc_pool_imap(p, sleepy_task, items, lens, 3, NULL, &it), 0);
  install(false);
  pid_t k = start_interrupter();
  int rc = mproc_imap_next(it, NULL, NULL, MPROC_FOREVER);
  stop_interrupter(k);
  cr_expect_eq(rc, -EINTR);
  cr_assert_eq(mproc_pool_close(p), 0);
  k = start_interrupter();
  rc = mproc_pool_join(p);
  stop_interrupter(k);
  cr_expect_eq(rc, -EINTR);
  uninstall();
  mproc_imap_free(it);
  mproc_pool_free(p);
  th_end(s);
}
