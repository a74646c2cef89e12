/* Pool workers under limits and the sandbox, where nothing crashes: the RSS recycle, the
 * sandbox's allow-list, ordinary work inside the sandbox, refused options. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static mproc_pool *make(mproc_pool_opts *o) {
  mproc_pool *p = NULL;
  int rc = mproc_pool_new(&p, o);
  cr_assert_eq(rc, 0, "mproc_pool_new: %s", mproc_err_name(rc));
  return p;
}

/* arg: bytes to allocate and touch (0: none); result: the worker's pid and a checksum. */
static int touch(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  size_t n = *(const size_t *)arg;
  int64_t out[2] = {getpid(), 0};
  if (n) {
    volatile char *b = malloc(n);
    if (!b)
      return mproc_result_fail(res, "malloc(%zu) failed", n);
    for (size_t i = 0; i < n; i += 4096)
      b[i] = 1;
    for (size_t i = 0; i < n; i += 4096)
      out[1] += b[i];
    free((void *)b);
  }
  return mproc_result_set(res, out, sizeof out);
}

static int64_t run_touch(mproc_pool *p, size_t n, int64_t *sum) {
  void *r = NULL;
  size_t len = 0;
  cr_assert_eq(mproc_pool_apply(p, touch, &n, sizeof n, &r, &len), 0);
  cr_assert_eq(len, 2 * sizeof(int64_t));
  int64_t pid = ((int64_t *)r)[0];
  *sum = ((int64_t *)r)[1];
  free(r);
  return pid;
}

Test(pool_limits, rss_recycle_replaces_the_worker) {
  th_scope s = th_begin();
  mproc_pool_opts o = {.processes = 1, .max_memory_per_child = (size_t)48 << 20};
  mproc_pool *p = make(&o);
  int64_t sum;
  int64_t a = run_touch(p, 0, &sum);
  cr_assert_eq(run_touch(p, 0, &sum), a, "a small task leaves the worker in place");
  size_t big = (size_t)96 << 20;
  cr_assert_eq(run_touch(p, big, &sum), a);
  cr_assert_eq(sum, (int64_t)(big / 4096), "the big task itself succeeds");
  int64_t b = run_touch(p, 0, &sum);
  cr_assert_neq(b, a, "the worker past max_memory_per_child was replaced");
  cr_assert_eq(run_touch(p, 0, &sum), b);
  mproc_pool_free(p);
  th_end(s);
}

/* Opens arg read-only and returns its first bytes, or fails with the errno. */
static int read_file(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int fd = open((const char *)arg, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return mproc_result_fail(res, "errno %d", errno);
  char buf[5] = {0};
  ssize_t n = read(fd, buf, 4);
  close(fd);
  return n == 4 ? mproc_result_set(res, buf, 4) : mproc_result_fail(res, "short read");
}

static int make_socket(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return mproc_result_fail(res, "errno %d", errno);
  close(fd);
  return 0;
}

Test(pool_limits, the_allow_list_opens_what_it_names) {
  th_scope s = th_begin();
  char dir[] = "/tmp/mproc_sandbox_XXXXXX";
  cr_assert(mkdtemp(dir));
  char inside[64], outside[64];
  snprintf(inside, sizeof inside, "%s/data", dir);
  snprintf(outside, sizeof outside, "%s.out", dir);
  for (int k = 0; k < 2; k++) {
    int fd = open(k ? outside : inside, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, k ? "nope" : "mine", 4), 4);
    close(fd);
  }
  const char *dirs[] = {dir}, *calls[] = {"socket"};
  mproc_sandbox sb = {.read_dirs = dirs, .n_read_dirs = 1, .allow_syscalls = calls,
                      .n_allow_syscalls = 1};
  mproc_pool_opts o = {.processes = 1, .sandbox = &sb};
  mproc_pool *p = make(&o);
  void *r = NULL;
  size_t n = 0;
  cr_assert_eq(mproc_pool_apply(p, read_file, inside, strlen(inside) + 1, &r, &n), 0);
  cr_assert_eq(n, 4);
  cr_assert_eq(memcmp(r, "mine", 4), 0);
  free(r);
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, read_file, outside, strlen(outside) + 1, &a), 0);
  cr_assert_eq(mproc_async_get(a, NULL, NULL, 60), MPROC_ETASK);
  cr_assert_str_eq(mproc_async_error(a), "errno 13", "outside the directories: EACCES");
  mproc_async_free(a);
  cr_assert_eq(mproc_pool_apply(p, make_socket, NULL, 0, NULL, NULL), 0);
  mproc_pool_free(p);
  unlink(inside);
  unlink(outside);
  rmdir(dir);
  th_end(s);
}

static int echo_sum(const void *arg, size_t len, mproc_result *res) {
  int64_t v = 0;
  for (size_t i = 0; i < len; i++)
    v += ((const unsigned char *)arg)[i];
  return mproc_result_set(res, &v, sizeof v);
}

Test(pool_limits, imap_runs_exactly_in_the_sandbox) {
  th_scope s = th_begin();
  mproc_sandbox sb = {0};
  mproc_limits lim = {.cpu_seconds = 30, .open_files = 64, .processes = -1};
  mproc_pool_opts o = {.processes = 2, .sandbox = &sb, .limits = &lim};
  mproc_pool *p = make(&o);
  enum { N = 500 };
  static unsigned char data[N][32];
  const void *items[N];
  size_t lens[N];
  for (int i = 0; i < N; i++) {
    memset(data[i], i & 0xff, sizeof data[i]);
    items[i] = data[i];
    lens[i] = (size_t)(i % 32) + 1;
  }
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap(p, echo_sum, items, lens, N, NULL, &it), 0);
  for (int i = 0; i < N; i++) {
    const void *r;
    size_t n;
    cr_assert_eq(mproc_imap_next(it, &r, &n, 60), 0);
    cr_assert_eq(n, sizeof(int64_t));
    cr_assert_eq(*(const int64_t *)r, (int64_t)(i & 0xff) * (int64_t)lens[i]);
  }
  cr_assert_eq(mproc_imap_next(it, NULL, NULL, 60), MPROC_EOF);
  mproc_imap_free(it);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_limits, bad_limits_are_refused) {
  th_scope s = th_begin();
  mproc_pool *p = (mproc_pool *)1;
  const char *bogus[] = {"no_such_call"}, *empty[] = {""};
  mproc_sandbox sb1 = {.allow_syscalls = bogus, .n_allow_syscalls = 1};
  mproc_sandbox sb2 = {.read_dirs = empty, .n_read_dirs = 1};
  mproc_sandbox sb3 = {.n_allow_syscalls = 2};
  mproc_limits l1 = {.cpu_seconds = -1}, l2 = {.processes = -2};
  mproc_pool_opts o[] = {{.sandbox = &sb1},
                         {.sandbox = &sb2},
                         {.sandbox = &sb3},
                         {.limits = &l1},
                         {.limits = &l2},
                         {.memory_limit = 4096},
                         {.memory_limit = (size_t)64 << 20, .memory_limit_how = 99},
                         {.memory_limit_how = MPROC_MEMLIMIT_RLIMIT_DATA}};
  for (size_t i = 0; i < sizeof o / sizeof *o; i++) {
    o[i].processes = 1;
    cr_assert_eq(mproc_pool_new(&p, &o[i]), MPROC_EINVAL, "case %zu", i);
    cr_assert_null(p);
  }
  cr_assert_eq(mproc_pool_memlimit(NULL), MPROC_MEMLIMIT_NONE);
  mproc_pool_opts plain = {.processes = 1};
  p = make(&plain);
  cr_assert_eq(mproc_pool_memlimit(p), MPROC_MEMLIMIT_NONE);
  mproc_pool_free(p);
  th_end(s);
}

/* A result of arg bytes, each byte its index's low bits. */
static int big_result(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  size_t n = *(const size_t *)arg;
  unsigned char *b = mproc_result_alloc(res, n);
  if (!b)
    return 1;
  for (size_t i = 0; i < n; i++)
    b[i] = (unsigned char)(i * 7);
  return 0;
}

Test(pool_limits, big_arguments_and_results_grow_the_rings_in_the_sandbox) {
  th_scope s = th_begin();
  mproc_sandbox sb = {0};
  mproc_pool_opts o = {.processes = 2, .sandbox = &sb};
  mproc_pool *p = make(&o);
  size_t sizes[] = {100, (size_t)1 << 20, (size_t)8 << 20, 4096};
  for (size_t k = 0; k < 4; k++) {
    void *r = NULL;
    size_t len = 0;
    cr_assert_eq(mproc_pool_apply(p, big_result, &sizes[k], sizeof sizes[k], &r, &len), 0);
    cr_assert_eq(len, sizes[k]);
    for (size_t i = 0; i < len; i += 4099)
      cr_assert_eq(((unsigned char *)r)[i], (unsigned char)(i * 7));
    free(r);
  }
  size_t n = (size_t)4 << 20;
  unsigned char *arg = malloc(n);
  cr_assert(arg);
  for (size_t i = 0; i < n; i++)
    arg[i] = (unsigned char)i;
  void *r = NULL;
  cr_assert_eq(mproc_pool_apply(p, echo_sum, arg, n, &r, NULL), 0);
  int64_t want = 0;
  for (size_t i = 0; i < n; i++)
    want += arg[i];
  cr_assert_eq(*(int64_t *)r, want);
  free(r);
  free(arg);
  mproc_pool_free(p);
  th_end(s);
}
