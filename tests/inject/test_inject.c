/* Injected failures (issue 18): the Nth call that can fail from outside (mmap, memfd_create,
 * ftruncate, fork, pidfd_open, socketpair, eventfd/signalfd/pipe, malloc) fails, for every N
 * that a lifecycle of a Pool, a Queue, a Process, a Pipe and the shared objects reaches.
 * Each failure must come back as a clear code (never MPROC_EINVAL or MPROC_ESTATE: the
 * caller did nothing wrong), or be absorbed by a fallback with exact results; either way
 * nothing is left behind (descriptors, children, segments; leaks: ASan's check at exit),
 * and the next, uninjected attempt works. Built only with MPROC_FAULT_INJECTION (the
 * sanitizer build of make test). */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "os/os.h"
#include "testing.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The library's allocations, seen through ld --wrap (this executable links it statically). */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n) {
  return mproc__inject(MPROC__INJ_MALLOC, ENOMEM) ? NULL : __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
  return mproc__inject(MPROC__INJ_MALLOC, ENOMEM) ? NULL : __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
  return mproc__inject(MPROC__INJ_MALLOC, ENOMEM) ? NULL : __real_realloc(p, n);
}
char *__wrap_strdup(const char *s) {
  return mproc__inject(MPROC__INJ_MALLOC, ENOMEM) ? NULL : __real_strdup(s);
}
int __wrap_asprintf(char **out, const char *fmt, ...) {
  if (mproc__inject(MPROC__INJ_MALLOC, ENOMEM))
    return -1;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(out, fmt, ap);
  va_end(ap);
  return n;
}

#define ALL_KINDS 0xffu
/* More than any lifecycle below makes (the walk stops at the first N that did not fire). */
#define MAX_WALK 3000

/* ---- the lifecycles: 0, or the first error; results checked exactly on the way ---- */

static int times3(const void *arg, size_t len, mproc_result *res) {
  int64_t v;
  if (len != sizeof v)
    return 1;
  memcpy(&v, arg, sizeof v);
  v *= 3;
  return mproc_result_set(res, &v, sizeof v);
}

static int square64(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

#define MAP_N 4096
static int64_t map_in[MAP_N], map_out[MAP_N];

static int pool_life(void) {
  mproc_pool_opts o = {.processes = 2};
  mproc_pool *p;
  int rc = mproc_pool_new(&p, &o);
  if (rc)
    return rc;
  int64_t v = 14, *got = NULL;
  size_t len = 0;
  if ((rc = mproc_pool_apply(p, times3, &v, sizeof v, (void **)&got, &len)) == 0) {
    cr_expect(len == sizeof v && *got == 42, "apply gave %zu bytes", len);
    free(got);
  }
  mproc_async *a = NULL;
  if (rc == 0 && (rc = mproc_pool_apply_async(p, times3, &v, sizeof v, &a)) == 0) {
    got = NULL;
    if ((rc = mproc_async_get(a, (void **)&got, &len, MPROC_FOREVER)) == 0) {
      cr_expect(len == sizeof v && *got == 42);
      free(got);
    }
    mproc_async_free(a);
  }
  if (rc == 0) {
    memset(map_out, 0, sizeof map_out);
    rc = mproc_pool_map(p, square64, map_in, MAP_N, sizeof(int64_t), map_out, sizeof(int64_t),
                        NULL);
    for (int i = 0; rc == 0 && i < MAP_N; i++)
      cr_expect(map_out[i] == (int64_t)i * i, "map_out[%d] = %lld", i, (long long)map_out[i]);
  }
  int crc = mproc_pool_close(p);
  int jrc = crc ? crc : mproc_pool_join(p);
  mproc_pool_free(p);
  return rc ? rc : jrc;
}

static int queue_life(void) {
  mproc_queue *q;
  int rc = mproc_queue_new(&q, NULL);
  if (rc)
    return rc;
  static char big[256 << 10]; /* beyond the ring's first pages: it grows */
  for (int i = 0; rc == 0 && i < 8; i++) {
    memset(big, 'a' + i, sizeof big);
    rc = mproc_queue_put(q, big, i % 2 ? sizeof big : 16, MPROC_FOREVER);
  }
  for (int i = 0; rc == 0 && i < 8; i++) {
    char *m = NULL;
    size_t len = 0;
    if ((rc = mproc_queue_get(q, (void **)&m, &len, 5)) == 0) {
      cr_expect(len == (i % 2 ? sizeof big : 16) && m[0] == 'a' + i && m[len - 1] == 'a' + i);
      free(m);
    }
  }
  mproc_queue_free(q);
  return rc;
}

static int child_target(void *arg) { return *(int *)arg; }

static int process_life(void) {
  int code = 7;
  mproc_process_opts o = {.arg_len = sizeof code}; /* copied: spawn and forkserver need it */
  mproc_process *p;
  int rc = mproc_process_new(&p, child_target, &code, &o);
  if (rc)
    return rc;
  int ec = -1;
  if ((rc = mproc_process_start(p)) == 0 && (rc = mproc_process_join(p, MPROC_FOREVER)) == 0 &&
      (rc = mproc_process_exitcode(p, &ec)) == 0)
    cr_expect(ec == 7, "exit code %d", ec);
  mproc_process_free(p);
  return rc;
}

static int pipe_life(void) {
  mproc_conn *a, *b;
  int rc = mproc_pipe(&a, &b, true);
  if (rc)
    return rc;
  char *m = NULL;
  size_t len = 0;
  if ((rc = mproc_conn_send(a, "hello", 5)) == 0 && (rc = mproc_conn_recv(b, (void **)&m, &len, 5)) == 0) {
    cr_expect(len == 5 && memcmp(m, "hello", 5) == 0);
    free(m);
  }
  mproc_conn_free(a);
  mproc_conn_free(b);
  return rc;
}

static int sync_life(void) {
  mproc_lock *l;
  int rc = mproc_lock_new(&l, false);
  if (rc)
    return rc;
  mproc_array *arr = NULL;
  int64_t init[64] = {0};
  if ((rc = mproc_lock_acquire(l, MPROC_FOREVER)) == 0) {
    rc = mproc_array_new(&arr, sizeof(int64_t), 64, init, true);
    mproc_lock_release(l);
  }
  if (arr) {
    cr_expect(mproc_array_len(arr) == 64 && ((int64_t *)mproc_array_data(arr))[63] == 0);
    mproc_array_free(arr);
  }
  mproc_lock_free(l);
  return rc;
}

/* ---- the walk ---- */

static void walk(const char *what, int (*life)(void)) {
  for (int i = 0; i < MAP_N; i++)
    map_in[i] = i;
  /* Once uninjected first: what lives for the whole process (caches, the registries) is
   * made before the leak scope opens; the forkserver is not counted (th_end stops it). */
  cr_assert_eq(life(), 0, "%s without injection", what);
  mproc_forkserver_stop();
  th_scope s = th_begin();
  long n = 1, calls = 0;
  for (; n <= MAX_WALK; n++) {
    mproc__test_inject_arm(ALL_KINDS, n);
    int rc = life();
    bool fired = mproc__test_inject_disarm(&calls);
    if (!fired) {
      cr_assert_eq(rc, 0, "%s: no failure injected, yet %s", what, mproc_err_name(rc));
      break;
    }
    cr_assert(rc == 0 || (rc < 0 && rc != MPROC_EINVAL && rc != MPROC_ESTATE),
              "%s, call %ld failed: %d (%s)", what, n, rc, mproc_err_name(rc));
    cr_assert(strlen(mproc_strerror(rc)) > 0);
    th_end(s);
    cr_assert_eq(life(), 0, "%s after call %ld failed: the next attempt", what, n);
    th_end(s);
  }
  cr_assert(n > 1 && n <= MAX_WALK, "%s: walked %ld calls", what, n - 1);
  cr_log_info("%s: %ld calls made failed one at a time\n", what, n - 1);
}

TestSuite(inject, .timeout = 280);

Test(inject, pool_lifecycle) { walk("pool", pool_life); }
Test(inject, queue_lifecycle) { walk("queue", queue_life); }
Test(inject, process_lifecycle) { walk("process", process_life); }
Test(inject, pipe_lifecycle) { walk("pipe", pipe_life); }
Test(inject, lock_and_array_lifecycle) { walk("lock and array", sync_life); }
