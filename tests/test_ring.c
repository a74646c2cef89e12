/* The shared-memory message ring (src/ring.c). */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"
#include "core/ring.h"
#include "testing.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A message from producer p, number i: its length varies (0 included), its bytes follow from
 * (p, i), so a reader can check it whole. */
static size_t msg_len(unsigned p, unsigned i, size_t maxlen) {
  return (size_t)((i * 2654435761u + p * 40503u) % (maxlen + 1));
}
static void msg_fill(unsigned char *b, size_t len, unsigned p, unsigned i) {
  uint32_t x = p * 7919u + i * 104729u + 1;
  for (size_t k = 0; k < len; k++) {
    x = x * 1103515245u + 12345u;
    b[k] = (unsigned char)(x >> 16);
  }
  if (len >= 8) {
    memcpy(b, &p, 4);
    memcpy(b + 4, &i, 4);
  }
}
/* Every message of at least 8 bytes carries (p, i) in its first 8. */
static size_t msg_len8(unsigned p, unsigned i, size_t maxlen) {
  return 8 + msg_len(p, i, maxlen - 8);
}
static bool msg_ok_len(const void *b, size_t len, unsigned p, unsigned i, size_t want_len) {
  if (len != want_len)
    return false;
  unsigned char *want = malloc(len ? len : 1);
  msg_fill(want, len, p, i);
  bool ok = memcmp(want, b, len) == 0;
  free(want);
  return ok;
}
static bool msg_ok(const void *b, size_t len, unsigned p, unsigned i, size_t maxlen) {
  return msg_ok_len(b, len, p, i, msg_len(p, i, maxlen));
}

/* Shared memory this process has resident, in KiB (RssShmem of /proc/self/status). */
static long rss_shmem_kib(void) {
  FILE *f = fopen("/proc/self/status", "re");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "RssShmem: %ld", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

static mproc__ring *make(size_t max_items, size_t initial) {
  mproc__ring *r = NULL;
  mproc__ring_opts o = {.max_items = max_items, .initial_bytes = initial};
  cr_assert_eq(mproc__ring_new(&r, &o), 0);
  cr_assert_not_null(r);
  return r;
}

Test(ring, put_get_fifo_and_empty_messages) {
  th_scope s = th_begin();
  mproc__ring *r = make(0, 0);
  cr_assert_eq(mproc__ring_put(r, "hello", 5, MPROC__NEVER), 0);
  cr_assert_eq(mproc__ring_put(r, NULL, 0, MPROC__NEVER), 0);
  struct iovec iov[3] = {{"ab", 2}, {NULL, 0}, {"cde", 3}};
  cr_assert_eq(mproc__ring_putv(r, iov, 3, MPROC__NEVER), 0);
  cr_assert_eq(mproc__ring_count(r), 3);
  void *b;
  size_t n;
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
  cr_assert_eq(n, 5);
  cr_assert_eq(memcmp(b, "hello", 5), 0);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
  cr_assert_eq(n, 0);
  cr_assert_not_null(b);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
  cr_assert_eq(n, 5);
  cr_assert_eq(memcmp(b, "abcde", 5), 0);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), -ETIMEDOUT);
  cr_assert_eq(mproc__ring_count(r), 0);
  mproc__ring_free(r);
  th_end(s);
}

Test(ring, wraps_with_varied_sizes) {
  mproc__ring *r = make(0, 4096);
  unsigned next_put = 0, next_get = 0;
  /* Keep a few messages in flight so records wrap at every offset. */
  for (int round = 0; round < 20000; round++) {
    unsigned char buf[700];
    while (next_put - next_get < 3) {
      size_t len = msg_len(0, next_put, 600);
      msg_fill(buf, len, 0, next_put);
      cr_assert_eq(mproc__ring_put(r, buf, len, 0), 0);
      next_put++;
    }
    void *b;
    size_t n;
    cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
    cr_assert(msg_ok(b, n, 0, next_get, 600), "message %u", next_get);
    next_get++;
    free(b);
  }
  cr_assert_eq(mproc__ring_capacity(r), 4096);
  mproc__ring_free(r);
}

Test(ring, read_begin_end) {
  mproc__ring *r = make(0, 0);
  mproc__ring_msg m;
  cr_assert_eq(mproc__ring_read_begin(r, &m, 0), -ETIMEDOUT);
  cr_assert_eq(mproc__ring_put(r, "one", 3, 0), 0);
  cr_assert_eq(mproc__ring_put(r, "two", 3, 0), 0);
  cr_assert_eq(mproc__ring_read_begin(r, &m, 0), 0);
  cr_assert_eq(m.len, 3);
  cr_assert_eq(memcmp(m.data, "one", 3), 0);
  mproc__ring_read_end(r, &m, false); /* left for the next reader */
  cr_assert_eq(mproc__ring_count(r), 2);
  cr_assert_eq(mproc__ring_read_begin(r, &m, 0), 0);
  cr_assert_eq(memcmp(m.data, "one", 3), 0);
  mproc__ring_read_end(r, &m, true);
  cr_assert_eq(mproc__ring_read_begin(r, &m, MPROC__NEVER), 0);
  cr_assert_eq(memcmp(m.data, "two", 3), 0);
  mproc__ring_read_end(r, &m, true);
  cr_assert_eq(mproc__ring_count(r), 0);
  cr_assert_eq(mproc__ring_close(r), 0);
  cr_assert_eq(mproc__ring_read_begin(r, &m, MPROC__NEVER), MPROC_ECLOSED);
  mproc__ring_free(r);
}

Test(ring, wait_readable) {
  th_scope s = th_begin();
  mproc__ring *r = make(0, 0);
  cr_assert_eq(mproc__ring_wait_readable(r, 0), -ETIMEDOUT);
  int64_t t0 = mproc__now_ns();
  cr_assert_eq(mproc__ring_wait_readable(r, mproc__deadline(0.05)), -ETIMEDOUT);
  cr_assert_geq(mproc__now_ns() - t0, 50000000);
  cr_assert_eq(mproc__ring_put(r, "x", 1, 0), 0);
  cr_assert_eq(mproc__ring_wait_readable(r, 0), 0);
  cr_assert_eq(mproc__ring_count(r), 1); /* not taken */
  void *b;
  cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), 0);
  free(b);
  /* A child wakes a parent asleep in wait_readable. */
  pid_t pid = th_fork_tied();
  if (pid == 0) {
    usleep(50000);
    _exit(mproc__ring_put(r, "y", 1, MPROC__NEVER) == 0 ? 0 : 1);
  }
  cr_assert_eq(mproc__ring_wait_readable(r, MPROC__NEVER), 0);
  cr_expect_eq(th_exitcode(pid), 0);
  cr_assert_eq(mproc__ring_count(r), 1);
  cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), 0);
  free(b);
  /* Closed counts as readable. */
  mproc__ring_close(r);
  cr_assert_eq(mproc__ring_wait_readable(r, MPROC__NEVER), 0);
  mproc__ring_free(r);
  th_end(s);
}

Test(ring, max_items_and_timeouts) {
  mproc__ring *r = make(2, 0);
  cr_assert_eq(mproc__ring_max_items(r), 2);
  cr_assert_eq(mproc__ring_put(r, "a", 1, 0), 0);
  cr_assert_eq(mproc__ring_put(r, "b", 1, 0), 0);
  cr_assert_eq(mproc__ring_put(r, "c", 1, 0), -ETIMEDOUT);
  int64_t t0 = mproc__now_ns();
  cr_assert_eq(mproc__ring_put(r, "c", 1, mproc__deadline(0.03)), -ETIMEDOUT);
  cr_assert_geq(mproc__now_ns() - t0, 30000000);
  void *b;
  cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), 0);
  free(b);
  cr_assert_eq(mproc__ring_put(r, "c", 1, 0), 0);
  cr_assert_eq(mproc__ring_count(r), 2);
  t0 = mproc__now_ns();
  cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), 0);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), 0);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, NULL, mproc__deadline(0.03)), -ETIMEDOUT);
  cr_assert_geq(mproc__now_ns() - t0, 30000000);
  mproc__ring_free(r);
}

Test(ring, blocked_putter_woken_by_get) {
  th_scope s = th_begin();
  mproc__ring *r = make(1, 0);
  cr_assert_eq(mproc__ring_put(r, "a", 1, 0), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(mproc__ring_put(r, "b", 1, MPROC__NEVER) == 0 ? 0 : 1);
  usleep(30000);
  void *b;
  size_t n;
  cr_assert_eq(mproc__ring_get(r, &b, &n, MPROC__NEVER), 0);
  cr_assert_eq(((char *)b)[0], 'a');
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, &n, MPROC__NEVER), 0);
  cr_assert_eq(((char *)b)[0], 'b');
  free(b);
  cr_expect_eq(th_exitcode(pid), 0);
  mproc__ring_free(r);
  th_end(s);
}

Test(ring, close_drains_then_refuses) {
  th_scope s = th_begin();
  mproc__ring *r = make(1, 0);
  cr_assert_eq(mproc__ring_put(r, "a", 1, 0), 0);
  /* A putter blocked on a full ring, and (below) a getter blocked on an empty one, are both
   * woken by close. */
  pid_t putter = th_fork_tied();
  if (putter == 0)
    _exit(mproc__ring_put(r, "b", 1, MPROC__NEVER) == MPROC_ECLOSED ? 0 : 1);
  usleep(30000);
  cr_assert_not(mproc__ring_closed(r));
  cr_assert_eq(mproc__ring_close(r), 0);
  cr_assert_eq(mproc__ring_close(r), 0);
  cr_assert(mproc__ring_closed(r));
  cr_expect_eq(th_exitcode(putter), 0);
  cr_assert_eq(mproc__ring_put(r, "c", 1, 0), MPROC_ECLOSED);
  void *b;
  cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), 0);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), MPROC_ECLOSED);
  cr_assert_eq(mproc__ring_get(r, &b, NULL, MPROC__NEVER), MPROC_ECLOSED);
  mproc__ring_free(r);

  r = make(0, 0);
  pid_t getter = th_fork_tied();
  if (getter == 0) {
    void *x;
    _exit(mproc__ring_get(r, &x, NULL, MPROC__NEVER) == MPROC_ECLOSED ? 0 : 1);
  }
  usleep(30000);
  cr_assert_eq(mproc__ring_close(r), 0);
  cr_expect_eq(th_exitcode(getter), 0);
  mproc__ring_free(r);
  th_end(s);
}

Test(ring, grows_for_big_messages_and_shrinks_back) {
  mproc__ring *r = make(0, 4096);
  size_t init = mproc__ring_initial_capacity(r);
  cr_assert_eq(mproc__ring_capacity(r), init);
  size_t big = (size_t)40 << 20;
  unsigned char *m = malloc(big);
  msg_fill(m, big, 1, 2);
  cr_assert_eq(mproc__ring_put(r, "small", 5, 0), 0);
  long rss0 = rss_shmem_kib();
  cr_assert_eq(mproc__ring_put(r, m, big, 0), 0);
  cr_assert_eq(mproc__ring_put(r, "after", 5, 0), 0);
  cr_assert_geq(mproc__ring_capacity(r), big);
  /* Committed as written: about the message, not the whole grown area. */
  long rss1 = rss_shmem_kib();
  cr_assert_geq(rss1 - rss0, (long)(big >> 10));
  cr_assert_lt(rss1 - rss0, (long)(big >> 10) + 4096);
  void *b;
  size_t n;
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
  cr_assert_eq(n, 5);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
  cr_assert_eq(n, big);
  cr_assert_eq(memcmp(b, m, big), 0);
  free(b);
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
  cr_assert_eq(memcmp(b, "after", 5), 0);
  free(b);
  /* Drained after a small message: the area is given back. */
  cr_assert_eq(mproc__ring_capacity(r), init);
  cr_assert_lt(rss_shmem_kib() - rss0, 1024);
  /* A backlog of small messages grows it too, keeping their order across the move. */
  for (unsigned i = 0; i < 5000; i++) {
    unsigned char buf[64];
    size_t len = msg_len(2, i, 64);
    msg_fill(buf, len, 2, i);
    cr_assert_eq(mproc__ring_put(r, buf, len, 0), 0);
    if (i % 3 == 0) { /* keep rpos moving so the backlog wraps before it grows */
      int rc = mproc__ring_get(r, &b, &n, 0);
      cr_assert_eq(rc, 0, "get %u: %d count %zu", i, rc, mproc__ring_count(r));
      cr_assert(msg_ok(b, n, 2, i / 3, 64));
      free(b);
    }
  }
  cr_assert_gt(mproc__ring_capacity(r), init);
  for (unsigned i = 5000 / 3 + 1; i < 5000; i++) {
    cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
    cr_assert(msg_ok(b, n, 2, i, 64), "message %u", i);
    free(b);
  }
  cr_assert_eq(mproc__ring_capacity(r), init);
  free(m);
  mproc__ring_free(r);
}

/* A drained ring keeps the pages its last burst needed (the next burst of the same size
 * then faults nothing in), and gives them back after 64 drains in a row that did not. */
Test(ring, keeps_a_bursts_pages_for_a_while) {
  th_scope s = th_begin();
  mproc__ring *r = make(0, 4096);
  size_t init = mproc__ring_initial_capacity(r);
  cr_assert_eq(mproc__ring_committed(r), init);
  for (int burst = 0; burst < 3; burst++) {
    for (unsigned i = 0; i < 4000; i++)
      cr_assert_eq(mproc__ring_put(r, &i, sizeof i, 0), 0);
    size_t grown = mproc__ring_capacity(r);
    cr_assert_gt(grown, init);
    for (unsigned i = 0; i < 4000; i++) {
      unsigned v = ~0u;
      void *b;
      size_t n;
      cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
      memcpy(&v, b, sizeof v);
      free(b);
      cr_assert_eq(v, i);
    }
    cr_assert_eq(mproc__ring_capacity(r), init);
    cr_expect_eq(mproc__ring_committed(r), grown, "burst %d", burst);
  }
  /* Light use: one message at a time, drained each time. */
  for (int i = 0; i < 63; i++) {
    void *b;
    size_t n;
    cr_assert_eq(mproc__ring_put(r, "x", 1, 0), 0);
    cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
    free(b);
  }
  cr_expect_gt(mproc__ring_committed(r), init);
  void *b;
  size_t n;
  cr_assert_eq(mproc__ring_put(r, "x", 1, 0), 0);
  cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
  free(b);
  cr_expect_eq(mproc__ring_committed(r), init);
  mproc__ring_free(r);
  th_end(s);
}

/* Several producers and consumers in child processes; every message once, intact, in order
 * per producer. Consumers report what they got through a shared table. */
#define NP 3
#define NC 3
#define PER 20000
Test(ring, many_producers_many_consumers) {
  th_scope s = th_begin();
  mproc__ring *r = make(64, 4096);
  /* seen[p][i]: how many times message i of producer p was received. */
  unsigned char *seen = mproc__shared_map(NP * PER);
  _Atomic int *bad = mproc__shared_map(4096);
  pid_t kids[NP + NC];
  for (unsigned p = 0; p < NP; p++) {
    if ((kids[p] = th_fork_tied()) == 0) {
      unsigned char buf[300];
      for (unsigned i = 0; i < PER; i++) {
        size_t len = msg_len8(p, i, 300);
        msg_fill(buf, len, p, i);
        if (mproc__ring_put(r, buf, len, MPROC__NEVER) != 0)
          _exit(1);
      }
      _exit(0);
    }
  }
  for (unsigned c = 0; c < NC; c++) {
    if ((kids[NP + c] = th_fork_tied()) == 0) {
      int last[NP];
      for (int p = 0; p < NP; p++)
        last[p] = -1;
      for (;;) {
        void *b;
        size_t n;
        int rc = mproc__ring_get(r, &b, &n, MPROC__NEVER);
        if (rc == MPROC_ECLOSED)
          _exit(0);
        if (rc != 0)
          _exit(2);
        unsigned p = 0, i = 0;
        bool found = false;
        if (n >= 8) {
          memcpy(&p, b, 4);
          memcpy(&i, (char *)b + 4, 4);
          found = p < NP && i < PER && msg_ok_len(b, n, p, i, msg_len8(p, i, 300));
        }
        free(b);
        if (!found || (int)i <= last[p]) {
          atomic_fetch_add(bad, 1);
          continue;
        }
        last[p] = (int)i;
        __atomic_fetch_add(&seen[p * PER + i], 1, __ATOMIC_RELAXED);
      }
    }
  }
  for (int k = 0; k < NP; k++)
    cr_expect_eq(th_exitcode(kids[k]), 0);
  mproc__ring_close(r);
  for (int k = NP; k < NP + NC; k++)
    cr_expect_eq(th_exitcode(kids[k]), 0);
  cr_expect_eq(atomic_load(bad), 0, "%d bad or out-of-order messages", atomic_load(bad));
  th_expect_each_once(seen, NP * PER);
  mproc__shared_unmap(seen, NP * PER);
  mproc__shared_unmap((void *)bad, 4096);
  mproc__ring_free(r);
  th_end(s);
}

Test(ring, bad_input) {
  mproc__ring *r = NULL;
  cr_assert_eq(mproc__ring_new(NULL, NULL), MPROC_EINVAL);
  mproc__ring_opts o = {.initial_bytes = SIZE_MAX};
  cr_assert_eq(mproc__ring_new(&r, &o), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_new(&r, NULL), 0);
  void *b;
  mproc__ring_msg m;
  cr_assert_eq(mproc__ring_put(NULL, "x", 1, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_put(r, NULL, 1, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_putv(r, NULL, 1, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_putv(r, NULL, -1, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_get(NULL, &b, NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_get(r, NULL, NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_read_begin(r, NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_read_begin(NULL, &m, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_wait_readable(NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc__ring_close(NULL), MPROC_EINVAL);
  cr_assert_not(mproc__ring_closed(NULL));
  cr_assert_eq(mproc__ring_count(NULL), 0);
  /* Absurd sizes: beyond any memory. */
  struct iovec huge[2] = {{"x", SIZE_MAX / 2}, {"y", SIZE_MAX / 2}};
  cr_assert_eq(mproc__ring_putv(r, huge, 2, 0), MPROC_ENOMEM);
  mproc__ring_read_end(NULL, NULL, true);
  mproc__ring_free(NULL);
  mproc__ring_free(r);
}

/* A holder of either lock killed at any instant: the next user repairs and goes on. */
Test(ring, killed_inside_put_or_get) {
  th_scope s = th_begin();
  mproc__ring *r = make(0, 4096);
  for (int round = 0; round < 30; round++) {
    pid_t pid = th_fork_tied();
    if (pid == 0) {
      unsigned char buf[2000];
      for (unsigned i = 0;; i++) {
        size_t len = msg_len8(9, i, 2000);
        msg_fill(buf, len, 9, i);
        mproc__ring_put(r, buf, len, MPROC__NEVER);
        void *b;
        size_t n;
        if (mproc__ring_get(r, &b, &n, 0) == 0)
          free(b);
      }
    }
    usleep(200 + (unsigned)(rand() % 3000));
    kill(pid, SIGKILL);
    cr_expect_eq(th_exitcode(pid), -SIGKILL);
    /* Drain: every message intact (the killer may have left one or none mid-flight). */
    void *b;
    size_t n;
    int rc;
    while ((rc = mproc__ring_get(r, &b, &n, 0)) == 0) {
      unsigned i = 0;
      cr_assert_geq(n, 8);
      memcpy(&i, (char *)b + 4, 4);
      cr_assert(msg_ok_len(b, n, 9, i, msg_len8(9, i, 2000)), "torn message in round %d", round);
      free(b);
    }
    cr_assert_eq(rc, -ETIMEDOUT);
    cr_assert_eq(mproc__ring_put(r, "ok", 2, 0), 0);
    cr_assert_eq(mproc__ring_get(r, &b, &n, 0), 0);
    cr_assert_eq(n, 2);
    free(b);
  }
  mproc__ring_free(r);
  th_end(s);
}

/* Getters and a putter killed while asleep: the next put or get wakes no one, once, and
 * after that puts and gets make no wake-up syscall again (the wait words are disarmed). */
Test(ring, sleepers_killed_cost_one_wake) {
  th_scope s = th_begin();
  mproc__ring *r = make(1, 0);
  pid_t kids[3];
  for (int k = 0; k < 2; k++) {
    if ((kids[k] = th_fork_tied()) == 0) {
      void *b;
      mproc__ring_get(r, &b, NULL, MPROC__NEVER);
      _exit(1);
    }
  }
  while (mproc__ring_sleepers(r) < 1)
    usleep(1000);
  usleep(20000);
  for (int k = 0; k < 2; k++) {
    kill(kids[k], SIGKILL);
    cr_expect_eq(th_exitcode(kids[k]), -SIGKILL);
  }
  cr_assert_eq(mproc__ring_sleepers(r), 1);
  cr_assert_eq(mproc__ring_put(r, "x", 1, 0), 0);
  cr_assert_eq(mproc__ring_sleepers(r), 0);
  if ((kids[2] = th_fork_tied()) == 0) {
    mproc__ring_put(r, "y", 1, MPROC__NEVER); /* full: sleeps */
    _exit(1);
  }
  while (mproc__ring_sleepers(r) < 1)
    usleep(1000);
  kill(kids[2], SIGKILL);
  cr_expect_eq(th_exitcode(kids[2]), -SIGKILL);
  for (int i = 0; i < 100; i++) {
    void *b;
    cr_assert_eq(mproc__ring_get(r, &b, NULL, 0), 0);
    free(b);
    cr_assert_eq(mproc__ring_sleepers(r), 0);
    cr_assert_eq(mproc__ring_put(r, "z", 1, 0), 0);
  }
  cr_assert_eq(mproc__ring_sleepers(r), 0);
  mproc__ring_free(r);
  th_end(s);
}

/* A peer that scribbled over the shared header or a record: each read says -EPROTO and
 * takes nothing, never reading outside the ring, crashing or looping. */
Test(ring, scribbled_header_is_refused) {
  th_scope s = th_begin();
  struct {
    unsigned field;
    uint64_t v;
  } cases[] = {
      {0, 12345},                               /* cap not a power of two */
      {0, (uint64_t)1 << 50},                   /* cap beyond the mapping */
      {0, 1024},                                /* cap below any ring's */
      {1, (uint64_t)1 << 40},                   /* rpos past wpos */
      {2, (uint64_t)1 << 40},                   /* wpos a terabyte ahead */
      {3, (uint64_t)1 << 40},                   /* the readers' cached wpos too */
      {4, (uint64_t)1 << 40},                   /* a record longer than the area */
      {4, 60000},                               /* longer than what was put */
      {4, (UINT64_C(1) << 63) | 3},             /* a pad of no whole record */
      {4, (UINT64_C(1) << 63) | (1u << 20)},    /* a pad past the area's end */
  };
  for (size_t k = 0; k <= sizeof cases / sizeof *cases; k++) {
    mproc__ring *r = NULL;
    mproc__ring_opts o = {.initial_bytes = 65536};
    cr_assert_eq(mproc__ring_new(&r, &o), 0);
    char big[100];
    memset(big, 'b', sizeof big);
    cr_assert_eq(mproc__ring_put(r, "a", 1, 0), 0);
    cr_assert_eq(mproc__ring_put(r, big, sizeof big, 0), 0);
    bool control = k == sizeof cases / sizeof *cases; /* last: nothing scribbled */
    if (!control)
      mproc__ring_test_scribble(r, cases[k].field, cases[k].v);
    void *buf = NULL;
    size_t len = 0;
    int rc = mproc__ring_get(r, &buf, &len, 0);
    if (control) {
      cr_expect_eq(rc, 0);
      cr_expect_eq(len, 1);
      cr_expect_eq(*(char *)buf, 'a');
      free(buf);
    } else {
      cr_expect_eq(rc, -EPROTO, "case %zu", k);
      cr_expect_null(buf);
      mproc__ring_msg m;
      cr_expect_eq(mproc__ring_read_begin(r, &m, 0), -EPROTO, "case %zu (again)", k);
    }
    mproc__ring_free(r);
  }
  th_end(s);
}
