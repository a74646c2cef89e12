/* Injected failures (issue 18): the Nth call that can fail from outside (mmap, memfd_create,
 * ftruncate, fork, pidfd_open, socket/socketpair/accept, eventfd/signalfd/pipe, malloc) fails,
 * for every N that a lifecycle of a Pool, a Queue, a Process, a Pipe, the shared objects, a
 * Listener and a Manager reaches.
 * Each failure must come back as a clear code (never MPROC_EINVAL or MPROC_ESTATE: the
 * caller did nothing wrong), or be absorbed by a fallback with exact results; either way
 * nothing is left behind (descriptors, children, segments; leaks: ASan's check at exit),
 * and the next, uninjected attempt works. Built only with MPROC_FAULT_INJECTION (the
 * sanitizer build of make test). */
#define _GNU_SOURCE
#include "helpers.h"
#include "lifecycles.h"
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

/* ---- the walk ---- */

static void walk(const char *what, int (*life)(void)) {
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

Test(inject, pool_lifecycle) { walk("pool", tl_pool); }
Test(inject, queue_lifecycle) { walk("queue", tl_queue); }
Test(inject, process_lifecycle) { walk("process", tl_process); }
Test(inject, pipe_lifecycle) { walk("pipe", tl_pipe); }
Test(inject, lock_and_array_lifecycle) { walk("lock and array", tl_sync); }
Test(inject, listener_lifecycle) { walk("listener", tl_listener); }
Test(inject, manager_lifecycle) { walk("manager", tl_manager); }

/* A recv_bytes_into cut short by its deadline moves the part it read into the connection;
 * with no memory for that the call says MPROC_ENOMEM and that one message is skipped: the
 * next recv returns the message after it, exactly (a pipe, then a socket). */
static void lost_then_next(mproc_conn *rx, int wfd, const unsigned char *frame, size_t cut,
                           size_t flen) {
  unsigned char buf[256];
  size_t n;
  cr_assert_eq(mproc__write_full(wfd, frame, cut), 0);
  mproc__test_inject_arm(MPROC__INJ_MALLOC, 1);
  int rc = mproc_conn_recv_bytes_into(rx, buf, sizeof buf, &n, 0.02);
  long calls;
  cr_assert(mproc__test_inject_disarm(&calls), "no allocation was asked for");
  cr_assert_eq(rc, MPROC_ENOMEM);
  cr_assert_eq(mproc__write_full(wfd, frame + cut, flen - cut), 0);
  cr_assert_eq(mproc__write_full(wfd, "\0\0\0\x04next", 8), 0);
  void *m;
  cr_assert_eq(mproc_conn_recv(rx, &m, &n, 5), 0);
  cr_assert_eq(n, 4);
  cr_assert_eq(memcmp(m, "next", 4), 0);
  free(m);
}

Test(inject, recv_bytes_into_without_memory_skips_one_message) {
  th_scope s = th_begin();
  unsigned char f[4 + 100];
  memset(f, 'x', sizeof f);
  memcpy(f, "\0\0\0\x64", 4); /* 100 bytes: a pipe frame past the 64-byte first read */
  mproc_conn *r, *w;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  int wfd = mproc_conn_fileno(w);
  /* A pipe's frame of 8 bytes is padded to 64: "next" is sent by the conn itself below. */
  unsigned char buf[256];
  size_t n;
  cr_assert_eq(mproc__write_full(wfd, f, 80), 0);
  mproc__test_inject_arm(MPROC__INJ_MALLOC, 1);
  int rc = mproc_conn_recv_bytes_into(r, buf, sizeof buf, &n, 0.02);
  long calls;
  cr_assert(mproc__test_inject_disarm(&calls));
  cr_assert_eq(rc, MPROC_ENOMEM);
  cr_assert_eq(mproc__write_full(wfd, f + 80, sizeof f - 80), 0);
  cr_assert_eq(mproc_conn_send(w, "next", 4), 0);
  cr_assert_eq(mproc_conn_recv_bytes_into(r, buf, sizeof buf, &n, 5), 0);
  cr_assert_eq(n, 4);
  cr_assert_eq(memcmp(buf, "next", 4), 0);
  mproc_conn_free(r);
  mproc_conn_free(w);

  mproc_listener *l;
  mproc_conn *c, *peer;
  cr_assert_eq(mproc_listener_new(&l, NULL, NULL, 0, 0), 0);
  cr_assert_eq(mproc_client(&peer, mproc_listener_address(l), NULL, 0, 10), 0);
  cr_assert_eq(mproc_listener_accept(l, &c, 10), 0);
  lost_then_next(c, mproc_conn_fileno(peer), f, 54, sizeof f);
  mproc_conn_free(c);
  mproc_conn_free(peer);
  mproc_listener_free(l);
  th_end(s);
}
