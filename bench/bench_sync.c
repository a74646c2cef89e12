/* Synchronization benchmarks; bench/py_sync.py does the same work with multiprocessing.
 *   lock_uncontended    ns    one acquire + release, nobody else around
 *   lock_counter_2proc  ops/s two processes incrementing one shared counter under a Lock
 *   event_wake          us    Event set -> a waiter asleep in another process runs again
 *   sem_pingpong        us    round trip: release A / acquire B against a process doing the
 *                             reverse; raw: the same ping-pong on bare futex words */
#define _GNU_SOURCE
#include "common.h"
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { REPEATS = 5 };

static void *shared(size_t len) {
  void *p = mproc__shared_map(len);
  if (!p) {
    perror("mmap");
    exit(1);
  }
  return p;
}

static void reap(pid_t pid) {
  int st;
  mproc__waitpid(pid, &st, 0);
}

static void sleep_us(long us) {
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
}

/* ---- lock_uncontended ---- */

static void lock_uncontended(void) {
  enum { N = 5000000 };
  mproc_lock *l;
  mproc_lock_new(&l, false);
  double v[REPEATS];
  for (int r = 0; r < REPEATS; r++) {
    double t = bench_now();
    for (int i = 0; i < N; i++) {
      mproc_lock_acquire(l, MPROC_FOREVER);
      mproc_lock_release(l);
    }
    v[r] = (bench_now() - t) / N * 1e9;
  }
  bench_report("lock_uncontended", "mproc", bench_median(v, REPEATS), "ns");
  mproc_lock_free(l);

  /* raw: the robust process-shared pthread mutex underneath, called directly. */
  mproc__mutex *m = shared(4096);
  mproc__mutex_init(m, false);
  for (int r = 0; r < REPEATS; r++) {
    double t = bench_now();
    for (int i = 0; i < N; i++) {
      pthread_mutex_lock(&m->m);
      pthread_mutex_unlock(&m->m);
    }
    v[r] = (bench_now() - t) / N * 1e9;
  }
  bench_report("lock_uncontended", "raw", bench_median(v, REPEATS), "ns");
  mproc__shared_unmap(m, 4096);
}

/* ---- lock_counter_2proc ---- */

struct counter {
  mproc_lock *lock;
  mproc__mutex raw;
  _Atomic int go;
  long value;
};

enum { COUNT_N = 1000000 };

static void count_mproc(struct counter *c) {
  for (int i = 0; i < COUNT_N; i++) {
    mproc_lock_acquire(c->lock, MPROC_FOREVER);
    c->value++;
    mproc_lock_release(c->lock);
  }
}

static void count_raw(struct counter *c) {
  for (int i = 0; i < COUNT_N; i++) {
    pthread_mutex_lock(&c->raw.m);
    c->value++;
    pthread_mutex_unlock(&c->raw.m);
  }
}

static double counter_run(struct counter *c, void (*fn)(struct counter *)) {
  c->value = 0;
  atomic_store(&c->go, 0);
  pid_t pid = fork();
  if (pid == 0) {
    while (!atomic_load(&c->go))
      ;
    fn(c);
    _exit(0);
  }
  double t = bench_now();
  atomic_store(&c->go, 1);
  fn(c);
  reap(pid);
  double el = bench_now() - t;
  if (c->value != 2L * COUNT_N)
    fprintf(stderr, "lock_counter_2proc: wrong count %ld\n", c->value);
  return 2.0 * COUNT_N / el;
}

static void lock_counter_2proc(void) {
  struct counter *c = shared(sizeof *c);
  mproc_lock_new(&c->lock, false);
  mproc__mutex_init(&c->raw, false);
  double v[REPEATS];
  for (int r = 0; r < REPEATS; r++)
    v[r] = counter_run(c, count_mproc);
  bench_report("lock_counter_2proc", "mproc", bench_median(v, REPEATS), "ops/s");
  for (int r = 0; r < REPEATS; r++)
    v[r] = counter_run(c, count_raw);
  bench_report("lock_counter_2proc", "raw", bench_median(v, REPEATS), "ops/s");
  mproc_lock_free(c->lock);
  mproc__shared_unmap(c, sizeof *c);
}

/* ---- event_wake ---- */

enum { WAKE_N = 1000 };

struct wake {
  mproc_event *go, *ack;
  double woke_at[WAKE_N];
};

static void wake_child(struct wake *w) {
  for (int i = 0; i < WAKE_N; i++) {
    mproc_event_wait(w->go, MPROC_FOREVER);
    w->woke_at[i] = bench_now();
    mproc_event_clear(w->go);
    mproc_event_set(w->ack);
  }
}

static void event_wake(void) {
  struct wake *w = shared(sizeof *w);
  mproc_event_new(&w->go);
  mproc_event_new(&w->ack);
  pid_t pid = fork();
  if (pid == 0) {
    wake_child(w);
    _exit(0);
  }
  static double lat[WAKE_N];
  for (int i = 0; i < WAKE_N; i++) {
    sleep_us(200); /* the waiter is asleep in the kernel by now, past its spin */
    double t = bench_now();
    mproc_event_set(w->go);
    mproc_event_wait(w->ack, MPROC_FOREVER);
    mproc_event_clear(w->ack);
    lat[i] = (w->woke_at[i] - t) * 1e6;
  }
  reap(pid);
  bench_report("event_wake", "mproc", bench_median(lat, WAKE_N), "us");
  mproc_event_free(w->go);
  mproc_event_free(w->ack);
  mproc__shared_unmap(w, sizeof *w);
}

/* ---- sem_pingpong ---- */

enum { PING_N = 20000 };

struct ping {
  mproc_sem *a, *b;
  _Atomic uint32_t turn; /* raw: 0 the parent's turn, 1 the child's */
};

static void ping_child_mproc(struct ping *p) {
  for (int i = 0; i < PING_N; i++) {
    mproc_sem_acquire(p->a, MPROC_FOREVER);
    mproc_sem_release(p->b);
  }
}

/* A plain futex hand-off: set the word, wake the peer, sleep until it flips back. */
static void raw_pass(_Atomic uint32_t *turn, uint32_t mine, uint32_t theirs) {
  atomic_store(turn, theirs);
  mproc__futex_wake(turn, 1);
  while (atomic_load(turn) != mine)
    mproc__futex_wait(turn, theirs, MPROC__NEVER);
}

static void ping_child_raw(struct ping *p) {
  while (atomic_load(&p->turn) != 1)
    mproc__futex_wait(&p->turn, 0, MPROC__NEVER);
  for (int i = 0; i < PING_N - 1; i++)
    raw_pass(&p->turn, 1, 0);
  atomic_store(&p->turn, 0);
  mproc__futex_wake(&p->turn, 1);
}

static double pingpong(struct ping *p, bool raw) {
  atomic_store(&p->turn, 0);
  pid_t pid = fork();
  if (pid == 0) {
    raw ? ping_child_raw(p) : ping_child_mproc(p);
    _exit(0);
  }
  double t = bench_now();
  for (int i = 0; i < PING_N; i++) {
    if (raw) {
      raw_pass(&p->turn, 0, 1);
    } else {
      mproc_sem_release(p->a);
      mproc_sem_acquire(p->b, MPROC_FOREVER);
    }
  }
  double el = bench_now() - t;
  reap(pid);
  return el / PING_N * 1e6;
}

static void sem_pingpong(void) {
  struct ping *p = shared(sizeof *p);
  mproc_sem_new(&p->a, 0, false);
  mproc_sem_new(&p->b, 0, false);
  double v[REPEATS];
  for (int r = 0; r < REPEATS; r++)
    v[r] = pingpong(p, false);
  bench_report("sem_pingpong", "mproc", bench_median(v, REPEATS), "us");
  for (int r = 0; r < REPEATS; r++)
    v[r] = pingpong(p, true);
  bench_report("sem_pingpong", "raw", bench_median(v, REPEATS), "us");
  mproc_sem_free(p->a);
  mproc_sem_free(p->b);
  mproc__shared_unmap(p, sizeof *p);
}

int main(int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : "";
  struct {
    const char *name;
    void (*fn)(void);
  } cases[] = {{"lock_uncontended", lock_uncontended},
               {"lock_counter_2proc", lock_counter_2proc},
               {"event_wake", event_wake},
               {"sem_pingpong", sem_pingpong}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (!only[0] || strstr(cases[i].name, only))
      cases[i].fn();
  return 0;
}
