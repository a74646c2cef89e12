/* Queue users SIGKILLed at any instant: the queue stays usable for everyone else, nothing
 * hangs, no torn or duplicated message is delivered, at most one message per kill is lost. */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Message i of producer p: (p, i), then bytes following from them. Sizes vary up to 256 KiB
 * so that kills often land inside a copy. */
static size_t flen(unsigned p, unsigned i) {
  uint32_t h = (i + 1) * 2654435761u ^ (p + 1) * 40503u;
  return (h % 16 == 0) ? 8 + h % (256u << 10) : 8 + h % 200;
}
static void ffill(unsigned char *b, size_t len, unsigned p, unsigned i) {
  memcpy(b, &p, 4);
  memcpy(b + 4, &i, 4);
  uint64_t x = p * 7919u + i * 104729u + 1;
  for (size_t k = 8; k < len; k++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    b[k] = (unsigned char)(x >> 56);
  }
}
static bool fcheck(const unsigned char *b, size_t len, unsigned *p, unsigned *i) {
  if (len < 8)
    return false;
  memcpy(p, b, 4);
  memcpy(i, b + 4, 4);
  if (len != flen(*p, *i))
    return false;
  uint64_t x = *p * 7919u + *i * 104729u + 1;
  for (size_t k = 8; k < len; k++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    if (b[k] != (unsigned char)(x >> 56))
      return false;
  }
  return true;
}

static _Noreturn void producer(mproc_queue *q, unsigned p) {
  unsigned char *buf = malloc(300u << 10);
  for (unsigned i = 0;; i++) {
    size_t len = flen(p, i);
    ffill(buf, len, p, i);
    if (mproc_queue_put(q, buf, len, MPROC_FOREVER) != 0)
      _exit(1);
  }
}

/* A consumer blocked in get is killed: the others go on. */
Test(queue_faults, consumer_killed_while_blocked) {
  th_scope s = th_begin();
  mproc_queue *q = NULL;
  cr_assert_eq(mproc_queue_new(&q, NULL), 0);
  pid_t victim = th_fork_tied();
  if (victim == 0) {
    void *b;
    mproc_queue_get(q, &b, NULL, MPROC_FOREVER);
    _exit(9);
  }
  th_sleep_us(30000);
  kill(victim, SIGKILL);
  cr_assert_eq(th_exitcode(victim), -SIGKILL);
  pid_t other = th_fork_tied();
  if (other == 0) {
    void *b;
    size_t n;
    int rc = mproc_queue_get(q, &b, &n, MPROC_FOREVER);
    _exit(rc == 0 && n == 2 && memcmp(b, "hi", 2) == 0 ? 0 : 1);
  }
  th_sleep_us(10000);
  cr_assert_eq(mproc_queue_put(q, "hi", 2, 0), 0);
  int st;
  cr_assert_eq(mproc__waitpid(other, &st, 0), other);
  cr_assert_eq(mproc__exitcode(st), 0);
  cr_assert_eq(mproc_queue_put(q, "ok", 2, 0), 0);
  void *b;
  cr_assert_eq(mproc_queue_get(q, &b, NULL, 0), 0);
  free(b);
  mproc_queue_free(q);
  th_end(s);
}

/* Two producers killed at random moments mid-put, 50 times over, while this process reads. */
Test(queue_faults, producers_killed_mid_put) {
  th_scope s = th_begin();
  srand(12345);
  mproc_queue *q = NULL;
  mproc_queue_opts o = {.maxsize = 64};
  cr_assert_eq(mproc_queue_new(&q, &o), 0);
  for (int round = 0; round < 50; round++) {
    pid_t kids[2];
    for (unsigned p = 0; p < 2; p++)
      if ((kids[p] = th_fork_tied()) == 0)
        producer(q, p);
    int last[2] = {-1, -1};
    int64_t until = mproc__now_ns() + 2000000 + rand() % 8000000;
    bool killed = false;
    for (;;) {
      if (!killed && mproc__now_ns() >= until) {
        kill(kids[0], SIGKILL);
        kill(kids[1], SIGKILL);
        cr_assert_eq(th_exitcode(kids[0]), -SIGKILL);
        cr_assert_eq(th_exitcode(kids[1]), -SIGKILL);
        killed = true;
      }
      void *b;
      size_t n;
      int rc = mproc_queue_get(q, &b, &n, killed ? 0 : 0.05);
      if (rc == MPROC_EAGAIN && killed)
        break;
      if (rc == MPROC_ETIMEDOUT)
        continue;
      cr_assert_eq(rc, 0, "get: %s", mproc_strerror(rc));
      unsigned p, i;
      cr_assert(fcheck(b, n, &p, &i), "torn message in round %d", round);
      /* Each producer's messages arrive in order and without a gap: a kill loses at most
       * the one being put, which is never published. */
      cr_assert(p < 2 && (int)i == last[p] + 1, "lost, duplicate or reordered message in round %d", round);
      last[p] = (int)i;
      free(b);
    }
    /* Still usable: a put and a get go through at once. */
    cr_assert_eq(mproc_queue_put(q, "ok", 2, 0), 0);
    void *b;
    size_t n;
    cr_assert_eq(mproc_queue_get(q, &b, &n, 0), 0);
    cr_assert_eq(n, 2);
    free(b);
  }
  mproc_queue_free(q);
  th_end(s);
}

/* Consumers killed at random moments mid-get: no duplicate, nothing torn, at most one message
 * lost per kill, and the queue still usable. */
enum { KROUNDS = 50, KPER = 400 };
Test(queue_faults, consumers_killed_mid_get) {
  th_scope s = th_begin();
  srand(777);
  mproc_queue *q = NULL;
  cr_assert_eq(mproc_queue_new(&q, NULL), 0);
  unsigned char *seen = mproc__shared_map(KPER);
  _Atomic int *bad = mproc__shared_map(4096);
  unsigned char *buf = malloc(300u << 10);
  for (int round = 0; round < KROUNDS; round++) {
    memset(seen, 0, KPER);
    for (unsigned i = 0; i < KPER; i++) {
      size_t len = flen(round, i);
      ffill(buf, len, round, i);
      cr_assert_eq(mproc_queue_put(q, buf, len, 0), 0);
    }
    pid_t kids[2];
    for (int c = 0; c < 2; c++) {
      if ((kids[c] = th_fork_tied()) == 0) {
        for (;;) {
          void *b;
          size_t n;
          if (mproc_queue_get(q, &b, &n, MPROC_FOREVER) != 0)
            _exit(1);
          unsigned p, i;
          if (!fcheck(b, n, &p, &i) || p != (unsigned)round || i >= KPER)
            atomic_fetch_add(bad, 1);
          else
            __atomic_fetch_add(&seen[i], 1, __ATOMIC_RELAXED);
          free(b);
        }
      }
    }
    th_sleep_us(200 + rand() % 3000);
    kill(kids[0], SIGKILL);
    kill(kids[1], SIGKILL);
    cr_assert_eq(th_exitcode(kids[0]), -SIGKILL);
    cr_assert_eq(th_exitcode(kids[1]), -SIGKILL);
    void *b;
    size_t n;
    while (mproc_queue_get(q, &b, &n, 0) == 0) {
      unsigned p, i;
      cr_assert(fcheck(b, n, &p, &i) && p == (unsigned)round && i < KPER, "torn message");
      seen[i]++;
      free(b);
    }
    int missing = 0;
    for (int i = 0; i < KPER; i++) {
      cr_assert_leq(seen[i], 1, "message %d delivered twice in round %d", i, round);
      missing += seen[i] == 0;
    }
    cr_assert_leq(missing, 2, "%d messages lost to 2 kills", missing);
    cr_assert_eq(mproc_queue_qsize(q), 0);
  }
  cr_assert_eq(atomic_load(bad), 0);
  free(buf);
  mproc__shared_unmap(seen, KPER);
  mproc__shared_unmap((void *)bad, 4096);
  mproc_queue_free(q);
  th_end(s);
}

/* JoinableQueue: a producer killed mid-put never leaves join waiting for an item that was not
 * put (the count of items put is the ring's own, made with the message). */
Test(queue_faults, join_after_producers_killed) {
  th_scope s = th_begin();
  srand(4242);
  mproc_queue *q = NULL;
  mproc_queue_opts o = {.maxsize = 16, .joinable = true};
  cr_assert_eq(mproc_queue_new(&q, &o), 0);
  for (int round = 0; round < 20; round++) {
    pid_t pid = th_fork_tied();
    if (pid == 0)
      producer(q, 0);
    int64_t until = mproc__now_ns() + 1000000 + rand() % 4000000;
    bool killed = false;
    for (;;) {
      if (!killed && mproc__now_ns() >= until) {
        kill(pid, SIGKILL);
        cr_assert_eq(th_exitcode(pid), -SIGKILL);
        killed = true;
      }
      void *b;
      size_t n;
      int rc = mproc_queue_get(q, &b, &n, killed ? 0 : 0.02);
      if (rc == MPROC_EAGAIN && killed)
        break;
      if (rc == MPROC_ETIMEDOUT)
        continue;
      cr_assert_eq(rc, 0);
      unsigned p, i;
      cr_assert(fcheck(b, n, &p, &i));
      free(b);
      cr_assert_eq(mproc_queue_task_done(q), 0);
    }
    cr_assert_eq(mproc_queue_join(q, 10.0), 0, "join waits for an item never put");
    cr_assert_eq(mproc_queue_task_done(q), MPROC_ESTATE);
  }
  mproc_queue_free(q);
  th_end(s);
}
