/* A single Process under limits and the sandbox (the pool's, through mproc_process_opts):
 * a child that breaks one ends with the signal, and mproc_process_error names the limit or
 * the denied call; a child within them runs as usual. Run under each start method. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LIM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LIM_ASAN 1
#endif

/* Runs target(arg) in a Process with opts o; returns its exit code (-N: signal N) and
 * copies mproc_process_error's message (or "") into why. */
static int run(mproc_target_fn target, void *arg, size_t arg_len, mproc_process_opts *o,
               char *why, size_t cap) {
  mproc_process *p = NULL;
  o->arg_len = arg_len;
  int rc = mproc_process_new(&p, target, arg, o);
  cr_assert_eq(rc, 0, "new: %s", mproc_err_name(rc));
  cr_assert_null(mproc_process_error(p));
  rc = mproc_process_start(p);
  cr_assert_eq(rc, 0, "start: %s", mproc_err_name(rc));
  cr_assert_eq(mproc_process_join(p, 60), 0);
  int code = 0;
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  const char *e = mproc_process_error(p);
  snprintf(why, cap, "%s", e ? e : "");
  mproc_process_free(p);
  return code;
}

static int open_passwd(void *arg) {
  (void)arg;
  int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
  return fd >= 0 ? 7 : 8;
}

static int make_socket(void *arg) {
  (void)arg;
  return socket(AF_INET, SOCK_STREAM, 0) >= 0 ? 7 : 8;
}

/* Sums the bytes of its argument: computing and memory are allowed in the sandbox. */
static int compute(void *arg) {
  const unsigned char *b = arg;
  unsigned sum = 0;
  for (size_t i = 0; i < 4096; i++)
    sum += b[i];
  char *m = malloc((size_t)4 << 20);
  if (!m)
    return 9;
  memset(m, 1, (size_t)4 << 20);
  sum += (unsigned)m[12345];
  free(m);
  return (int)(sum % 200);
}

Test(process_limits, sandbox_denies_open_and_socket_names_the_call) {
  th_scope s = th_begin();
  mproc_sandbox sb = {0};
  mproc_process_opts o = {.sandbox = &sb};
  char why[512];
  cr_assert_eq(run(open_passwd, NULL, 0, &o, why, sizeof why), -SIGSYS);
  cr_assert(strstr(why, "openat") && strstr(why, "process's sandbox"), "%s", why);
  cr_assert_eq(run(make_socket, NULL, 0, &o, why, sizeof why), -SIGSYS);
  cr_assert(strstr(why, "socket"), "%s", why);
  unsigned char data[4096];
  unsigned sum = 1;
  for (size_t i = 0; i < sizeof data; i++) {
    data[i] = (unsigned char)(i * 31);
    sum += data[i];
  }
  cr_assert_eq(run(compute, data, sizeof data, &o, why, sizeof why), (int)(sum % 200));
  cr_assert_str_empty(why);
  th_end(s);
}

Test(process_limits, allow_list_opens_what_it_names) {
  th_scope s = th_begin();
  const char *calls[] = {"openat", "open"};
  mproc_sandbox sb = {.allow_syscalls = calls, .n_allow_syscalls = 2};
  mproc_process_opts o = {.sandbox = &sb};
  char why[512];
  cr_assert_eq(run(open_passwd, NULL, 0, &o, why, sizeof why), 7, "%s", why);
  th_end(s);
}

static int burn(void *arg) {
  (void)arg;
  volatile uint64_t x = 0;
  for (;;)
    x++;
  return 0;
}

Test(process_limits, cpu_seconds_ends_the_child) {
  th_scope s = th_begin();
  mproc_limits l = {.cpu_seconds = 1};
  mproc_process_opts o = {.limits = &l};
  char why[512];
  cr_assert_eq(run(burn, NULL, 0, &o, why, sizeof why), -SIGXCPU);
  cr_assert(strstr(why, "limits.cpu_seconds (1 s)") && strstr(why, "SIGXCPU"), "%s", why);
  th_end(s);
}

static int start_child(void *arg) {
  (void)arg;
  pid_t pid = fork();
  if (pid == 0)
    _exit(0);
  return pid > 0 ? 7 : 8;
}

Test(process_limits, no_processes_forbids_fork) {
  th_scope s = th_begin();
  mproc_limits l = {.processes = -1};
  mproc_process_opts o = {.limits = &l};
  char why[512];
  cr_assert_eq(run(start_child, NULL, 0, &o, why, sizeof why), -SIGSYS);
  cr_assert(strstr(why, "limits.processes (-1)"), "%s", why);
  th_end(s);
}

static int open_many(void *arg) {
  (void)arg;
  int n = 0;
  while (n < 1000 && open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0)
    n++;
  return errno == EMFILE && n < 64 ? 7 : 8;
}

Test(process_limits, open_files_caps_the_descriptors) {
  th_scope s = th_begin();
  mproc_limits l = {.open_files = 64};
  mproc_process_opts o = {.limits = &l};
  char why[512];
  cr_assert_eq(run(open_many, NULL, 0, &o, why, sizeof why), 7);
  th_end(s);
}

static int allocate(void *arg) {
  size_t n = *(const size_t *)arg;
  char *b = malloc(n);
  if (!b)
    return 3; /* RLIMIT_DATA: the allocation fails */
  memset(b, 1, n);
  size_t sum = 0; /* read back, or the compiler drops the allocation */
  for (size_t i = 0; i < n; i += 4096)
    sum += ((volatile unsigned char *)b)[i];
  free(b);
  return sum == n / 4096 ? 7 : 4;
}

Test(process_limits, memory_limit_caps_the_child) {
  th_scope s = th_begin();
  size_t big = (size_t)256 << 20, small = (size_t)8 << 20;
  char why[512], dir[1024];
  if (mproc__test_memcg_dir(dir, sizeof dir) > 0) { /* a memory group: the OOM killer */
    mproc_process_opts o = {.memory_limit = (size_t)64 << 20};
    int code = run(allocate, &big, sizeof big, &o, why, sizeof why);
    cr_assert_eq(code, -SIGKILL, "code %d: %s", code, why);
    cr_assert(strstr(why, "OOM killer") && strstr(why, "process's memory_limit"), "%s", why);
    cr_assert_eq(run(allocate, &small, sizeof small, &o, why, sizeof why), 7);
  }
#ifndef LIM_ASAN /* ASan's shadow counts as data: RLIMIT_DATA would leave it none */
  mproc_process_opts o = {.memory_limit = (size_t)64 << 20,
                          .memory_limit_how = MPROC_MEMLIMIT_RLIMIT_DATA};
  cr_assert_eq(run(allocate, &big, sizeof big, &o, why, sizeof why), 3);
  cr_assert_eq(run(allocate, &small, sizeof small, &o, why, sizeof why), 7);
#endif
  th_end(s);
}

Test(process_limits, bad_limits_are_refused) {
  th_scope s = th_begin();
  const char *bogus[] = {"no_such_call"};
  mproc_sandbox sb = {.allow_syscalls = bogus, .n_allow_syscalls = 1};
  mproc_limits l = {.cpu_seconds = -1};
  mproc_process_opts o[] = {{.sandbox = &sb},
                            {.limits = &l},
                            {.memory_limit = 4096},
                            {.memory_limit = (size_t)64 << 20, .memory_limit_how = 42}};
  for (size_t i = 0; i < sizeof o / sizeof *o; i++) {
    mproc_process *p = NULL;
    cr_assert_eq(mproc_process_new(&p, burn, NULL, &o[i]), MPROC_EINVAL, "case %zu", i);
    cr_assert_null(p);
  }
  cr_assert_null(mproc_process_error(NULL));
  cr_assert_eq(mproc_process_memlimit(NULL), MPROC_MEMLIMIT_NONE);
  th_end(s);
}
