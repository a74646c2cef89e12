/* The process layer: lifecycle, exit codes, names, the registry, exit-time handling. */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"
#include "testing.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- targets ---- */

/* Targets get an int through arg_len (a copy crosses under every start method). */
static int int_arg(void *arg) { return arg ? *(const int *)arg : 0; }

static int ret_arg(void *arg) { return int_arg(arg); }

static int sleep_forever(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return 0;
}

static int raise_sig(void *arg) {
  raise(int_arg(arg));
  return 99;
}

static void nap_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static int nap_then_return(void *arg) {
  nap_ms(int_arg(arg));
  return 3;
}

static mproc_process *started(mproc_target_fn fn, int arg, bool daemon) {
  mproc_process *p = NULL;
  mproc_process_opts o = {.daemon = daemon, .arg_len = sizeof arg};
  cr_assert_eq(mproc_process_new(&p, fn, &arg, &o), 0);
  cr_assert_eq(mproc_process_start(p), 0);
  return p;
}

static int exit_of(mproc_process *p) {
  int code = 12345;
  cr_assert_eq(mproc_process_join(p, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  return code;
}

/* ---- exit codes ---- */

Test(process, exit_codes_from_return_values) {
  th_scope s = th_begin();
  int codes[] = {0, 1, 7, 255};
  for (size_t i = 0; i < 4; i++) {
    mproc_process *p = started(ret_arg, codes[i], false);
    cr_assert_eq(exit_of(p), codes[i]);
    mproc_process_free(p);
  }
  th_end(s);
}

Test(process, exit_codes_from_signals) {
  th_scope s = th_begin();
  int sigs[] = {SIGUSR1, SIGKILL, SIGTERM};
  for (size_t i = 0; i < 3; i++) {
    mproc_process *p = started(raise_sig, sigs[i], false);
    cr_assert_eq(exit_of(p), -sigs[i]);
    mproc_process_free(p);
  }
  th_end(s);
}

Test(process, terminate_kill_interrupt) {
  th_scope s = th_begin();
  int (*fns[])(mproc_process *) = {mproc_process_terminate, mproc_process_kill,
                                   mproc_process_interrupt};
  int sigs[] = {SIGTERM, SIGKILL, SIGINT};
  for (size_t i = 0; i < 3; i++) {
    mproc_process *p = started(sleep_forever, 0, true); /* daemon: dies with a failed test */
    cr_assert_eq(fns[i](p), 0);
    cr_assert_eq(exit_of(p), -sigs[i]);
    cr_assert_eq(fns[i](p), 0, "signalling an ended process is 0");
    mproc_process_free(p);
  }
  th_end(s);
}

/* ---- join and is_alive ---- */

static void join_timeouts(void) {
  mproc_process *p = started(sleep_forever, 0, true);
  cr_assert_eq(mproc_process_join(p, 0), MPROC_ETIMEDOUT);
  int64_t t0 = mproc__now_ns();
  cr_assert_eq(mproc_process_join(p, 0.05), MPROC_ETIMEDOUT);
  cr_assert_geq(mproc__now_ns() - t0, 50000000, "join returned before its timeout");
  cr_assert(mproc_process_is_alive(p));
  int code;
  cr_assert_eq(mproc_process_exitcode(p, &code), MPROC_ESTATE);
  mproc_process_kill(p);
  cr_assert_eq(mproc_process_join(p, 10.0), 0);
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, -SIGKILL);
  cr_assert_eq(mproc_process_join(p, 0), 0, "joining again is fine");
  mproc_process_free(p);

  /* A child that ends within the timeout. */
  p = started(nap_then_return, 20, false);
  cr_assert_eq(mproc_process_join(p, 30.0), 0);
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, 3);
  mproc_process_free(p);
}

Test(process, join_timeouts) {
  th_scope s = th_begin();
  join_timeouts();
  th_end(s);
}

Test(process, join_timeouts_without_pidfd) {
  th_scope s = th_begin();
  mproc__test_no_pidfd = true;
  join_timeouts();
  mproc_process *p = started(ret_arg, 0, false);
  /* A forkserver child's sentinel is where the server writes its status: no pidfd needed. */
  if (mproc_get_start_method() == MPROC_START_FORKSERVER)
    cr_assert_geq(mproc_process_sentinel(p), 0);
  else
    cr_assert_eq(mproc_process_sentinel(p), -1);
  mproc_process_free(p);
  mproc__test_no_pidfd = false;
  th_end(s);
}

Test(process, is_alive_transitions) {
  th_scope s = th_begin();
  mproc_process *p = NULL;
  mproc_process_opts daemon = {.daemon = true}; /* dies with a failed test */
  cr_assert_eq(mproc_process_new(&p, sleep_forever, NULL, &daemon), 0);
  cr_assert(!mproc_process_is_alive(p));
  cr_assert_eq(mproc_process_pid(p), 0);
  cr_assert_eq(mproc_process_sentinel(p), -1);
  cr_assert_eq(mproc_process_start(p), 0);
  cr_assert(mproc_process_is_alive(p));
  cr_assert_gt(mproc_process_pid(p), 0);
  cr_assert_geq(mproc_process_sentinel(p), 0);
  mproc_process_terminate(p);
  /* is_alive reaps: poll it until the child is gone (bounded: a failure is a message). */
  for (int i = 0; i < 10000 && mproc_process_is_alive(p); i++)
    nap_ms(1);
  cr_assert(!mproc_process_is_alive(p), "SIGTERM did not end the child");
  int code;
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  cr_assert_eq(code, -SIGTERM);
  mproc_process_free(p);
  th_end(s);
}

Test(process, sentinel_turns_readable) {
  th_scope s = th_begin();
  mproc_process *p = started(nap_then_return, 10, false);
  struct pollfd pf = {.fd = mproc_process_sentinel(p), .events = POLLIN};
  cr_assert_eq(poll(&pf, 1, 30000), 1);
  cr_assert_eq(exit_of(p), 3);
  mproc_process_free(p);
  th_end(s);
}

/* ---- wrong states ---- */

Test(process, wrong_state_calls) {
  th_scope s = th_begin();
  mproc_process *p = NULL;
  cr_assert_eq(mproc_process_new(&p, ret_arg, NULL, NULL), 0);
  int code;
  cr_assert_eq(mproc_process_join(p, 0), MPROC_ESTATE);
  cr_assert_eq(mproc_process_exitcode(p, &code), MPROC_ESTATE);
  cr_assert_eq(mproc_process_terminate(p), MPROC_ESTATE);
  cr_assert_eq(mproc_process_kill(p), MPROC_ESTATE);
  cr_assert_eq(mproc_process_interrupt(p), MPROC_ESTATE);
  cr_assert_eq(mproc_process_start(p), 0);
  cr_assert_eq(mproc_process_start(p), MPROC_ESTATE);
  cr_assert_eq(exit_of(p), 0);
  cr_assert_eq(mproc_process_start(p), MPROC_ESTATE, "no restart after it ended");
  mproc_process_free(p);
  th_end(s);
}

Test(process, free_kills_and_reaps_running_child) {
  th_scope s = th_begin();
  mproc_process *p = started(sleep_forever, 0, false);
  pid_t pid = mproc_process_pid(p);
  mproc_process_free(p);
  cr_assert(!th_pid_alive(pid));
  mproc_process_free(NULL);
  th_end(s);
}

Test(process, failed_child_setup_is_reported_by_start) {
  th_scope s = th_begin();
  mproc_process *p = NULL;
  /* The injected failure is in the forked child's setup (start_kinds has the others'). */
  mproc_process_opts fork = {.start_method = MPROC_START_FORK};
  cr_assert_eq(mproc_process_new(&p, ret_arg, NULL, &fork), 0);
  mproc__test_setup_errno = EPERM;
  cr_assert_eq(mproc_process_start(p), -EPERM);
  mproc__test_setup_errno = 0;
  cr_assert(!mproc_process_is_alive(p));
  cr_assert_eq(mproc_active_children(NULL, 0), 0);
  cr_assert_eq(mproc_process_start(p), 0, "a failed start leaves it startable");
  cr_assert_eq(exit_of(p), 0);
  mproc_process_free(p);
  th_end(s);
}

/* ---- names and identity ---- */

static int check_own_name(void *arg) {
  const char *want = arg;
  if (strcmp(mproc_current_process_name(), want) != 0)
    return 1;
  /* A grandchild's default name extends this child's identity, as in Python. */
  mproc_process *g = NULL;
  if (mproc_process_new(&g, ret_arg, NULL, NULL) != 0)
    return 2;
  int bad = strncmp(mproc_process_name(g), "Process-", 8) != 0 ||
            strchr(mproc_process_name(g), ':') == NULL;
  mproc_process_free(g);
  return bad ? 3 : 0;
}

Test(process, names) {
  th_scope s = th_begin();
  cr_assert_str_eq(mproc_current_process_name(), "MainProcess");
  mproc_process *a = NULL, *b = NULL;
  cr_assert_eq(mproc_process_new(&a, ret_arg, NULL, NULL), 0);
  cr_assert_eq(mproc_process_new(&b, ret_arg, NULL, NULL), 0);
  int na = 0, nb = 0;
  cr_assert_eq(sscanf(mproc_process_name(a), "Process-%d", &na), 1);
  cr_assert_eq(sscanf(mproc_process_name(b), "Process-%d", &nb), 1);
  cr_assert_eq(nb, na + 1);
  mproc_process_free(a);
  mproc_process_free(b);

  char name[32] = "worker-x";
  mproc_process_opts o = {.name = name, .arg_len = sizeof "worker-x"};
  cr_assert_eq(mproc_process_new(&a, check_own_name, (void *)"worker-x", &o), 0);
  name[0] = 'W'; /* the name was copied */
  cr_assert_str_eq(mproc_process_name(a), "worker-x");
  cr_assert(!mproc_process_daemon(a));
  cr_assert_eq(mproc_process_start(a), 0);
  cr_assert_eq(exit_of(a), 0);
  mproc_process_free(a);
  cr_assert_str_eq(mproc_current_process_name(), "MainProcess");
  th_end(s);
}

/* Under forkserver the OS parent is the server; mproc_parent_pid is still the caller. */
static int check_parent(void *arg) {
  pid_t me = int_arg(arg);
  bool served = mproc_get_start_method() == MPROC_START_FORKSERVER;
  return mproc_parent_pid() == me && (served || getppid() == me) ? 0 : 1;
}

Test(process, parent_pid) {
  th_scope s = th_begin();
  mproc_process *p = started(check_parent, getpid(), false);
  cr_assert_eq(exit_of(p), 0);
  mproc_process_free(p);
  cr_assert_eq(mproc_parent_pid(), getppid());
  th_end(s);
}

/* ---- the registry ---- */

Test(process, active_children_reaps_finished_ones) {
  th_scope s = th_begin();
  mproc_process *quick1 = started(ret_arg, 0, false);
  mproc_process *quick2 = started(ret_arg, 0, false);
  mproc_process *slow = started(sleep_forever, 0, true);
  /* Wait (without reaping) until both quick ones have ended. */
  mproc_waitable w[2] = {{.process = quick1}, {.process = quick2}};
  while (!(w[0].ready && w[1].ready))
    cr_assert_geq(mproc_wait(w, 2, 10.0), 1);
  mproc_process *act[4] = {0};
  cr_assert_eq(mproc_active_children(act, 4), 1);
  cr_assert_eq(act[0], slow);
  int code = -1;
  cr_assert_eq(mproc_process_exitcode(quick1, &code), 0, "active_children reaped it");
  cr_assert_eq(code, 0);
  cr_assert_eq(mproc_active_children(NULL, 0), 1);
  mproc_process_kill(slow);
  cr_assert_eq(mproc_process_join(slow, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_active_children(act, 4), 0);
  mproc_process_free(quick1);
  mproc_process_free(quick2);
  mproc_process_free(slow);
  th_end(s);
}

/* A forked child has its own, empty registry; the parent's handles are inert there. */
Test(process, inherited_handles_are_inert_in_a_forked_child) {
  th_scope s = th_begin();
  mproc_process *p = started(sleep_forever, 0, true);
  pid_t pid = fork();
  if (pid == 0) {
    int bad = mproc_active_children(NULL, 0) != 0 || mproc_process_is_alive(p) ||
              mproc_process_join(p, 0) != MPROC_ESTATE ||
              mproc_process_kill(p) != MPROC_ESTATE;
    mproc_process_free(p); /* releases only this copy */
    _exit(bad);
  }
  int st;
  cr_assert_eq(mproc__waitpid(pid, &st, 0), pid);
  cr_assert_eq(mproc__exitcode(st), 0);
  cr_assert(mproc_process_is_alive(p), "the child's free must not kill its sibling");
  mproc_process_free(p);
  th_end(s);
}

/* ---- output is flushed, not lost ---- */

static int print_unflushed(void *arg) {
  (void)arg;
  printf("hello from the child");
  return 0;
}

Test(process, child_output_flushed_when_target_returns) {
  th_scope s = th_begin();
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  dup2(fds[1], STDOUT_FILENO);
  mproc_process *p = started(print_unflushed, 0, false);
  int code = exit_of(p);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  close(fds[1]);
  char buf[64] = {0};
  ssize_t n = mproc__read_full(fds[0], buf, sizeof buf - 1);
  close(fds[0]);
  cr_assert_eq(code, 0);
  cr_assert_eq(n, (ssize_t)strlen("hello from the child"));
  cr_assert_str_eq(buf, "hello from the child");
  mproc_process_free(p);
  th_end(s);
}

/* ---- exit-time behaviour: daemons killed, non-daemons joined ---- */

#define PLAIN_MARK "plain-done\n"

static int plain_child(void *arg) {
  int fd = int_arg(arg);
  nap_ms(150);
  return mproc__write_full(fd, PLAIN_MARK, strlen(PLAIN_MARK)) == 0 ? 0 : 1;
}

static mproc_process *g_daemon, *g_plain; /* reachable at exit: no leak report */

/* Starts a daemon and a non-daemon child and writes their pids to fd. */
static void start_pair(int fd) {
  mproc_process_opts od = {.daemon = true};
  /* The plain child writes to an inherited descriptor: a forked one. */
  mproc_process_opts op = {.start_method = MPROC_START_FORK, .arg_len = sizeof fd};
  if (mproc_process_new(&g_daemon, sleep_forever, NULL, &od) ||
      mproc_process_new(&g_plain, plain_child, &fd, &op) ||
      mproc_process_start(g_daemon) || mproc_process_start(g_plain))
    _exit(90);
  char line[64];
  int n = snprintf(line, sizeof line, "%d %d\n", (int)mproc_process_pid(g_daemon),
                   (int)mproc_process_pid(g_plain));
  if (mproc__write_full(fd, line, (size_t)n))
    _exit(91);
}

/* When re-executed as the helper, run before Criterion and leave by exit(). */
__attribute__((constructor)) static void atexit_helper(void) {
  const char *env = getenv("MPROC_TEST_ATEXIT_FD");
  if (!env)
    return;
  start_pair(atoi(env));
  exit(0);
}

static int helper_target(void *arg) {
  start_pair(int_arg(arg));
  return 0; /* the target returns: its children are handled like at exit */
}

/* Waits for the helper, then checks that its daemon was killed and its plain child had
 * already written its mark (it was joined before the helper ended). */
static void check_helper_exit(pid_t helper, int rfd, bool via_mproc, mproc_process *hp) {
  if (via_mproc) {
    cr_assert_eq(exit_of(hp), 0);
  } else {
    int st;
    cr_assert_eq(mproc__waitpid(helper, &st, 0), helper);
    cr_assert_eq(mproc__exitcode(st), 0);
  }
  /* Everything must be there now: read what is buffered without waiting. */
  char buf[256] = {0};
  size_t got = 0;
  struct pollfd pf = {.fd = rfd, .events = POLLIN};
  while (got < sizeof buf - 1 && poll(&pf, 1, 0) == 1) {
    ssize_t n = read(rfd, buf + got, sizeof buf - 1 - got);
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  int dpid = 0, ppid = 0;
  cr_assert_eq(sscanf(buf, "%d %d", &dpid, &ppid), 2, "got: %s", buf);
  cr_assert(strstr(buf, PLAIN_MARK) != NULL, "the non-daemon was not joined: %s", buf);
  cr_assert(th_wait_gone(dpid, 5.0), "the daemon outlived its parent");
  cr_assert(th_wait_gone(ppid, 5.0));
}

Test(process, exit_kills_daemons_and_joins_others) {
  th_scope s = th_begin();
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
  pid_t pid = fork();
  if (pid == 0) {
    /* The helper inherits the write end across exec. */
    int w = dup(fds[1]);
    char num[16];
    snprintf(num, sizeof num, "%d", w);
    setenv("MPROC_TEST_ATEXIT_FD", num, 1);
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    char *argv[] = {"test_process_helper", NULL};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  close(fds[1]);
  check_helper_exit(pid, fds[0], false, NULL);
  close(fds[0]);
  th_end(s);
}

Test(process, target_return_kills_daemons_and_joins_others) {
  th_scope s = th_begin();
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
  /* The helper writes to an inherited descriptor: a forked one. */
  mproc_process *h = NULL;
  mproc_process_opts o = {.start_method = MPROC_START_FORK, .arg_len = sizeof fds[1]};
  cr_assert_eq(mproc_process_new(&h, helper_target, &fds[1], &o), 0);
  cr_assert_eq(mproc_process_start(h), 0);
  close(fds[1]);
  check_helper_exit(0, fds[0], true, h);
  close(fds[0]);
  mproc_process_free(h);
  th_end(s);
}
