/* Pool workers under limits and the sandbox: a task that breaks a limit or makes a denied
 * call fails alone, with a message naming the limit or the call, and the pool goes on. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LIM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LIM_ASAN 1
#endif

static mproc_pool *make(mproc_pool_opts *o) {
  mproc_pool *p = NULL;
  int rc = mproc_pool_new(&p, o);
  cr_assert_eq(rc, 0, "mproc_pool_new: %s", mproc_err_name(rc));
  return p;
}

/* Runs fn(arg) and checks it fails with MPROC_ECRASHED and a message containing want. */
static void expect_crash(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                         const char *want) {
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, fn, arg, len, &a), 0);
  cr_assert_eq(mproc_async_get(a, NULL, NULL, 60), MPROC_ECRASHED);
  const char *msg = mproc_async_error(a);
  cr_assert(msg && strstr(msg, want), "message \"%s\" lacks \"%s\"", msg ? msg : "", want);
  mproc_async_free(a);
}

static int square(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int64_t v = *(const int64_t *)arg;
  v *= v;
  return mproc_result_set(res, &v, sizeof v);
}

static void expect_square(mproc_pool *p, int64_t v) {
  void *r = NULL;
  size_t n = 0;
  cr_assert_eq(mproc_pool_apply(p, square, &v, sizeof v, &r, &n), 0);
  cr_assert_eq(n, sizeof v);
  cr_assert_eq(*(int64_t *)r, v * v);
  free(r);
}

/* Allocates and touches arg bytes; an allocation that fails aborts, as a program that does
 * not check would die of it. */
static int allocate(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  size_t n = *(const size_t *)arg;
  char *b = malloc(n);
  if (!b)
    abort();
  memset(b, 1, n);
  size_t sum = 0;
  for (size_t i = 0; i < n; i += 4096)
    sum += (unsigned char)b[i];
  free(b);
  return mproc_result_set(res, &sum, sizeof sum);
}

Test(pool_limits, allocation_past_memory_limit_fails_alone) {
#ifdef LIM_ASAN
  cr_skip_test("ASan's shadow memory counts as the worker's data: RLIMIT_DATA leaves it none");
#endif
  th_scope s = th_begin();
  mproc_pool_opts o = {.processes = 2, .memory_limit = (size_t)64 << 20,
                       .memory_limit_how = MPROC_MEMLIMIT_RLIMIT_DATA};
  mproc_pool *p = make(&o);
  cr_assert_eq(mproc_pool_memlimit(p), MPROC_MEMLIMIT_RLIMIT_DATA);
  size_t big = (size_t)256 << 20, small = (size_t)8 << 20;
  expect_crash(p, allocate, &big, sizeof big, "memory_limit");
  for (int i = 0; i < 4; i++) {
    void *r = NULL;
    cr_assert_eq(mproc_pool_apply(p, allocate, &small, sizeof small, &r, NULL), 0);
    cr_assert_eq(*(size_t *)r, small / 4096);
    free(r);
  }
  mproc_pool_free(p);
  th_end(s);
}

/* The groups named after this process left in the memory cgroup directory. */
static int groups_left(const char *dir) {
  char prefix[32];
  snprintf(prefix, sizeof prefix, "mproc-%d.", (int)getpid());
  int n = 0;
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  for (struct dirent *e; (e = readdir(d));)
    n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

Test(pool_limits, memory_cgroup_kills_the_worker_past_the_cap_alone) {
  char dir[1024];
  int kind = mproc__test_memcg_dir(dir, sizeof dir);
  if (kind < 0)
    cr_skip_test("no memory cgroup can be made below this process's group here");
  th_scope s = th_begin();
  mproc_pool_opts o = {.processes = 2, .memory_limit = (size_t)64 << 20, .maxtasksperchild = 3};
  mproc_pool *p = make(&o);
  cr_assert_eq(mproc_pool_memlimit(p),
               kind == 2 ? MPROC_MEMLIMIT_CGROUP_V2 : MPROC_MEMLIMIT_CGROUP_V1);
  cr_assert_eq(groups_left(dir), 2); /* one per worker */
  size_t big = (size_t)256 << 20, small = (size_t)8 << 20;
  expect_crash(p, allocate, &big, sizeof big, "OOM killer");
  expect_crash(p, allocate, &big, sizeof big, "memory_limit (67108864 bytes, a memory cgroup");
  for (int i = 0; i < 8; i++) { /* and the workers replaced by maxtasksperchild */
    void *r = NULL;
    cr_assert_eq(mproc_pool_apply(p, allocate, &small, sizeof small, &r, NULL), 0);
    cr_assert_eq(*(size_t *)r, small / 4096);
    free(r);
  }
  mproc_pool_free(p);
  cr_assert_eq(groups_left(dir), 0);
  th_end(s);
}

Test(pool_limits, memory_limit_kinds_this_machine_cannot_give_are_refused) {
  th_scope s = th_begin();
  char dir[1024];
  int kind = mproc__test_memcg_dir(dir, sizeof dir);
  mproc_memlimit_kind want[] = {MPROC_MEMLIMIT_CGROUP_V2, MPROC_MEMLIMIT_CGROUP_V1};
  for (int i = 0; i < 2; i++) {
    bool can = kind == (want[i] == MPROC_MEMLIMIT_CGROUP_V2 ? 2 : 1);
    mproc_pool_opts o = {.processes = 1, .memory_limit = (size_t)64 << 20,
                         .memory_limit_how = want[i]};
    mproc_pool *p = NULL;
    int rc = mproc_pool_new(&p, &o);
    cr_assert_eq(rc, can ? 0 : -EOPNOTSUPP, "kind %d: %s", (int)want[i], mproc_err_name(rc));
    if (can) {
      cr_assert_eq(mproc_pool_memlimit(p), want[i]);
      expect_square(p, 9);
    }
    mproc_pool_free(p);
  }
  th_end(s);
}

static int spin(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  volatile uint64_t x = 0;
  for (uint64_t i = 0; i < 400ull * 1000 * 1000 * 1000; i++)
    x += i; /* ~minutes of CPU: the limit ends it long before */
  return x == 42 ? 1 : 0;
}

Test(pool_limits, cpu_seconds_fails_the_task_alone) {
  th_scope s = th_begin();
  mproc_limits lim = {.cpu_seconds = 1};
  mproc_pool_opts o = {.processes = 1, .limits = &lim};
  mproc_pool *p = make(&o);
  expect_square(p, 7);
  expect_crash(p, spin, NULL, 0, "limits.cpu_seconds");
  for (int64_t v = 0; v < 20; v++)
    expect_square(p, v);
  mproc_pool_free(p);
  th_end(s);
}

static int write_big(const void *arg, size_t len, mproc_result *res) {
  (void)len, (void)res;
  int fd = open((const char *)arg, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return 1;
  static char block[65536];
  for (int i = 0; i < 64; i++) /* 4 MiB */
    if (write(fd, block, sizeof block) < 0)
      break;
  close(fd);
  return 2;
}

Test(pool_limits, file_size_fails_the_task_alone) {
  th_scope s = th_begin();
  char path[] = "/tmp/mproc_limits_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  mproc_limits lim = {.file_size = 1 << 20};
  mproc_pool_opts o = {.processes = 1, .limits = &lim};
  mproc_pool *p = make(&o);
  expect_crash(p, write_big, path, sizeof path, "limits.file_size");
  expect_square(p, 3);
  mproc_pool_free(p);
  unlink(path);
  th_end(s);
}

static int open_many(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  int fds[64], n = 0, err = 0;
  while (n < 64) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
      break;
    }
    fds[n++] = fd;
  }
  while (n > 0)
    close(fds[--n]);
  return mproc_result_set(res, &err, sizeof err);
}

Test(pool_limits, open_files_caps_the_descriptors) {
  th_scope s = th_begin();
  mproc_limits lim = {.open_files = 32};
  mproc_pool_opts o = {.processes = 1, .limits = &lim};
  mproc_pool *p = make(&o);
  void *r = NULL;
  cr_assert_eq(mproc_pool_apply(p, open_many, NULL, 0, &r, NULL), 0);
  cr_assert_eq(*(int *)r, EMFILE);
  free(r);
  expect_square(p, 5);
  mproc_pool_free(p);
  th_end(s);
}

static int do_fork(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  pid_t pid = fork();
  if (pid == 0)
    _exit(0);
  if (pid > 0)
    waitpid(pid, NULL, 0);
  return 3;
}

static void *thread_fn(void *a) {
  *(int *)a = 42;
  return NULL;
}

static int do_thread(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  int v = 0;
  pthread_t t;
  if (pthread_create(&t, NULL, thread_fn, &v) != 0)
    return 1;
  pthread_join(t, NULL);
  return mproc_result_set(res, &v, sizeof v);
}

static void expect_thread(mproc_pool *p) {
  void *r = NULL;
  cr_assert_eq(mproc_pool_apply(p, do_thread, NULL, 0, &r, NULL), 0);
  cr_assert_eq(*(int *)r, 42);
  free(r);
}

Test(pool_limits, no_processes_denies_fork_not_threads) {
  th_scope s = th_begin();
  mproc_limits lim = {.processes = -1};
  mproc_pool_opts o = {.processes = 1, .limits = &lim};
  mproc_pool *p = make(&o);
  expect_thread(p);
  expect_crash(p, do_fork, NULL, 0, "limits.processes");
  expect_thread(p);
  mproc_pool_free(p);
  th_end(s);
}

/* ---- the sandbox ---- */

enum { OPEN_PASSWD, SOCKET, EXEC };

static int forbidden(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int what = *(const int *)arg, rc = -1;
  if (what == OPEN_PASSWD)
    rc = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
  else if (what == SOCKET)
    rc = socket(AF_INET, SOCK_STREAM, 0);
  else {
    char *argv[] = {"/bin/true", NULL};
    rc = execve("/bin/true", argv, NULL);
  }
  if (rc >= 0)
    close(rc);
  return mproc_result_fail(res, "the call returned %d (errno %d)", rc, errno);
}

static int add_one(const void *in, void *out, const void *args) {
  (void)args;
  *(int64_t *)out = *(const int64_t *)in + 1;
  return 0;
}

Test(pool_limits, sandbox_denied_calls_fail_alone) {
  th_scope s = th_begin();
  mproc_sandbox sb = {0};
  mproc_pool_opts o = {.processes = 2, .sandbox = &sb};
  mproc_pool *p = make(&o);
  const char *names[] = {"openat", "socket", "execve"};
  for (int k = 0; k < 3; k++) {
    expect_crash(p, forbidden, &k, sizeof k, names[k]);
    expect_square(p, k + 10);
  }
  size_t small = (size_t)4 << 20;
  void *r = NULL;
  cr_assert_eq(mproc_pool_apply(p, allocate, &small, sizeof small, &r, NULL), 0);
  cr_assert_eq(*(size_t *)r, small / 4096);
  free(r);
  expect_thread(p);
  size_t n = 200000;
  int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  cr_assert(in && out);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i * 3;
  cr_assert_eq(mproc_pool_map(p, add_one, in, n, sizeof *in, out, sizeof *out, NULL), 0);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(out[i], (int64_t)i * 3 + 1);
  free(in);
  free(out);
  mproc_pool_free(p);
  th_end(s);
}
