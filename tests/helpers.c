#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"
#include "core/start.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int th_fd_count(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1;
}

bool th_has_children(void) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  /* WNOWAIT: look without reaping. ECHILD means no child at all. */
  int rc = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
  if (rc < 0 && errno == ECHILD)
    return false;
  if (rc == 0 && si.si_pid != 0)
    return true; /* a zombie */
  /* rc == 0 and si_pid == 0: children exist but none has exited. */
  return rc == 0;
}

int th_shm_count(const char *prefix) {
  DIR *d = opendir("/dev/shm");
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  size_t pl = strlen(prefix);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, pl) == 0)
      n++;
  closedir(d);
  return n;
}

char th_proc_state(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  return (p && p[1] == ' ') ? p[2] : 0;
}

bool th_pid_alive(pid_t pid) {
  char s = th_proc_state(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

bool th_wait_gone(pid_t pid, double seconds) {
  struct timespec ts = {0, 2 * 1000 * 1000};
  int rounds = (int)(seconds / 0.002) + 1;
  for (int i = 0; i < rounds; i++) {
    if (!th_pid_alive(pid))
      return true;
    nanosleep(&ts, NULL);
  }
  return !th_pid_alive(pid);
}

th_scope th_begin(void) {
  th_scope s = {th_fd_count(), th_shm_count("mproc")};
  return s;
}

/* Whether the forkserver (a child of ours under MPROC_START_METHOD=forkserver) has a child:
 * those are the test's children in all but name. */
static bool th_server_has_children(pid_t server) {
  char path[64], buf[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)server, (int)server);
  FILE *f = fopen(path, "re");
  if (!f)
    return false;
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return n > 0;
}

void th_end(th_scope s) {
  /* The server is not the test's leftover, but what it forked is. It reaps its children
   * on its own clock, so give it a moment; then stop it, which also closes its socket
   * (the descriptor count below would see it) and reaps it. */
  pid_t server = mproc__forkserver_pid();
  if (server > 0) {
    bool left = th_server_has_children(server);
    for (int i = 0; i < 500 && left; i++) {
      th_sleep_us(10 * 1000);
      left = th_server_has_children(server);
    }
    cr_expect(!left, "a process the forkserver started is left");
    mproc_forkserver_stop();
  }
  cr_expect_eq(th_fd_count(), s.fds, "descriptors leaked: %d before, %d after", s.fds,
               th_fd_count());
  cr_expect(!th_has_children(), "a child process is left");
  /* Other suites run at the same time and may hold segments of their own for a moment:
   * a leak is a count that stays above the starting one. */
  int shm = th_shm_count("mproc");
  for (int i = 0; i < 300 && shm > s.shm; i++) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    shm = th_shm_count("mproc");
  }
  cr_expect_leq(shm, s.shm, "shared segments left in /dev/shm");
}

int th_exitcode(pid_t pid) {
  int st;
  if (mproc__waitpid(pid, &st, 0) != pid)
    return -1000;
  return mproc__exitcode(st);
}

void *th_shared(size_t len) {
  void *p = mproc__shared_map(len);
  cr_assert_not_null(p);
  return p;
}

void th_sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

pid_t th_fork_tied(void) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0 && mproc__die_with_parent(parent, SIGKILL) != 0)
    _exit(99);
  return pid;
}

void th_wait_asleep(pid_t pid) {
  for (int i = 0; i < 10000 && th_proc_state(pid) != 'S'; i++)
    th_sleep_us(1000);
  th_sleep_us(5000);
}

int th_cond_read(mproc_cond *c, int *field) {
  cr_assert_eq(mproc_cond_acquire(c, MPROC_FOREVER), 0);
  int v = *field;
  cr_assert_eq(mproc_cond_release(c), 0);
  return v;
}

int th_barrier_once(mproc_barrier *b, double timeout) {
  int rc = mproc_barrier_wait(b, timeout);
  return rc >= 0 ? 10 + rc : (rc == MPROC_ESTATE ? 1 : 2);
}

void th_expect_each_once(const unsigned char *seen, size_t n) {
  size_t missing = 0, dup = 0;
  for (size_t k = 0; k < n; k++) {
    missing += seen[k] == 0;
    dup += seen[k] > 1;
  }
  cr_expect_eq(missing, 0, "%zu of %zu messages never arrived", missing, n);
  cr_expect_eq(dup, 0, "%zu of %zu messages arrived twice", dup, n);
}

void *th_named_buf;
char th_named_name[64];
static mproc_shm *th_named_shm;

void th_named_new(size_t size) {
  static int seq;
  snprintf(th_named_name, sizeof th_named_name, "th-%d-%d", (int)getpid(), seq++);
  cr_assert_eq(mproc_shm_create(&th_named_shm, th_named_name, size), 0);
  th_named_buf = mproc_shm_buf(th_named_shm);
}

void th_named_free(void) {
  mproc_shm_unlink(th_named_shm);
  mproc_shm_free(th_named_shm);
  th_named_shm = NULL;
  th_named_buf = NULL;
}

/* The worker's mapping ends with the worker. */
int th_named_attach(const void *name, size_t len) {
  (void)len;
  mproc_shm *s;
  if (mproc_shm_attach(&s, name) != 0)
    return 1;
  th_named_buf = mproc_shm_buf(s);
  return 0;
}

mproc_pool *th_pool(int processes) {
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = processes};
  int rc = mproc_pool_new(&p, &o);
  cr_assert_eq(rc, 0, "mproc_pool_new: %s", mproc_err_name(rc));
  return p;
}

int th_times3(const void *arg, size_t len, mproc_result *res) {
  int64_t v;
  if (len != sizeof v)
    return 1;
  memcpy(&v, arg, sizeof v);
  v *= 3;
  return mproc_result_set(res, &v, sizeof v);
}

int th_square64(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}
