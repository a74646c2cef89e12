/* Queue throughput and latency, beside a raw single-producer single-consumer ring (the
 * hardware's limit for a hand-off through shared memory) and Python's multiprocessing.Queue
 * (bench/py_queue.py). */
#define _GNU_SOURCE
#include "common.h"
#include "core/internal.h"
#include "mproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef Q1MAX
#define Q1MAX 0
#endif
#ifndef QMAX
#define QMAX 0 /* unbounded, like Python's default */
#endif

static void wait_all(int n) {
  for (int i = 0; i < n; i++)
    wait(NULL);
}

/* A start line for the children, so process creation is not timed. */
static _Atomic int *go;

static void wait_go(void) {
  while (!atomic_load(go))
    mproc__cpu_relax();
}

/* np producers put n messages of len bytes each (in all); the last to finish closes the
 * queue. nc consumers (this process among them) get until MPROC_ECLOSED. Messages/s. */
static double run_queue(int np, int nc, long n, size_t len, size_t maxsize) {
  mproc_queue *q;
  mproc_queue_opts o = {.maxsize = maxsize};
  if (mproc_queue_new(&q, &o))
    return 0;
  _Atomic long *done = mproc__shared_map(4096);
  atomic_store(go, 0);
  for (int p = 0; p < np; p++) {
    if (fork() == 0) {
      char *buf = calloc(1, len ? len : 1);
      wait_go();
      for (long i = p; i < n; i += np)
        mproc_queue_put(q, buf, len, MPROC_FOREVER);
      if (atomic_fetch_add(done, 1) == np - 1)
        mproc_queue_close(q);
      _exit(0);
    }
  }
  for (int c = 1; c < nc; c++) {
    if (fork() == 0) {
      wait_go();
      void *b;
      while (mproc_queue_get(q, &b, NULL, MPROC_FOREVER) == 0)
        free(b);
      _exit(0);
    }
  }
  double t0 = bench_now();
  atomic_store(go, 1);
  void *b;
  while (mproc_queue_get(q, &b, NULL, MPROC_FOREVER) == 0)
    free(b);
  wait_all(np + nc - 1);
  double dt = bench_now() - t0;
  mproc__shared_unmap((void *)done, 4096);
  mproc_queue_free(q);
  return (double)n / dt;
}

/* ---- raw SPSC ring: fixed slots, one producer, one consumer, spin only ---- */

struct raw_ring {
  MPROC__ALIGNED _Atomic uint64_t head;
  MPROC__ALIGNED _Atomic uint64_t tail;
};

static double run_raw(long n, size_t len, size_t slots) {
  size_t bytes = sizeof(struct raw_ring) + slots * len;
  struct raw_ring *r = mproc__shared_map(bytes);
  char *data = (char *)(r + 1);
  atomic_store(go, 0);
  if (fork() == 0) {
    char *buf = calloc(1, len);
    uint64_t head_seen = 0;
    wait_go();
    for (long i = 0; i < n; i++) {
      uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
      while (t - head_seen >= slots)
        head_seen = atomic_load_explicit(&r->head, memory_order_acquire);
      memcpy(data + (t % slots) * len, buf, len);
      atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    }
    _exit(0);
  }
  char *out = malloc(len);
  double t0 = bench_now();
  atomic_store(go, 1);
  uint64_t tail_seen = 0;
  for (long i = 0; i < n; i++) {
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    while (h == tail_seen)
      tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
    memcpy(out, data + (h % slots) * len, len);
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
  }
  double dt = bench_now() - t0;
  wait_all(1);
  free(out);
  mproc__shared_unmap(r, bytes);
  return (double)n / dt;
}

/* ---- latency: the producer stamps each message; the consumer subtracts ---- */

static double run_latency(bool sleeping, int samples) {
  mproc_queue *q, *back;
  mproc_queue_new(&q, NULL);
  mproc_queue_new(&back, NULL);
  pid_t pid = fork();
  if (pid == 0) {
    for (int i = 0; i < samples; i++) {
      if (sleeping) {
        struct timespec ts = {0, 2000000}; /* long enough for the getter to fall asleep */
        nanosleep(&ts, NULL);
      }
      int64_t t = mproc__now_ns();
      mproc_queue_put(q, &t, sizeof t, MPROC_FOREVER);
      void *b; /* wait for the ack so the next stamp is not queued behind */
      if (mproc_queue_get(back, &b, NULL, MPROC_FOREVER) == 0)
        free(b);
    }
    _exit(0);
  }
  double *lat = malloc(sizeof(double) * (size_t)samples);
  for (int i = 0; i < samples; i++) {
    void *b;
    mproc_queue_get(q, &b, NULL, MPROC_FOREVER);
    int64_t now = mproc__now_ns(), t;
    memcpy(&t, b, sizeof t);
    free(b);
    lat[i] = (double)(now - t) / 1000.0;
    mproc_queue_put(back, "", 0, MPROC_FOREVER);
  }
  wait_all(1);
  double med = bench_median(lat, samples);
  free(lat);
  mproc_queue_free(q);
  mproc_queue_free(back);
  return med;
}

static double best_of(int runs, double (*f)(void)) {
  double best = 0;
  for (int i = 0; i < runs; i++) {
    double v = f();
    if (v > best)
      best = v;
  }
  return best;
}

static double q8_1p1c(void) { return run_queue(1, 1, 4000000, 8, QMAX); }
static double q8_2p2c(void) { return run_queue(2, 2, 4000000, 8, QMAX); }
static double q1m(void) { return run_queue(1, 1, 3000, 1 << 20, Q1MAX); }
static double raw8(void) { return run_raw(20000000, 8, 4096); }
static double raw1m(void) { return run_raw(3000, 1 << 20, 8); }

int main(int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : "";
  go = mproc__shared_map(4096);
  if (strstr("queue_8B_1p1c", only)) {
    bench_report("queue_8B_1p1c", "mproc", best_of(3, q8_1p1c), "msgs/s");
    bench_report("queue_8B_1p1c", "raw", best_of(3, raw8), "msgs/s");
  }
  if (strstr("queue_8B_2p2c", only))
    bench_report("queue_8B_2p2c", "mproc", best_of(3, q8_2p2c), "msgs/s");
  if (strstr("queue_1MiB", only)) {
    bench_report("queue_1MiB", "mproc", best_of(3, q1m) * (1 << 20) / 1e9, "GB/s");
    bench_report("queue_1MiB", "raw", best_of(3, raw1m) * (1 << 20) / 1e9, "GB/s");
  }
  if (strstr("queue_latency_sleeping", only))
    bench_report("queue_latency_sleeping", "mproc", run_latency(true, 300), "us");
  if (strstr("queue_latency_spinning", only))
    bench_report("queue_latency_spinning", "mproc", run_latency(false, 20000), "us");
  return 0;
}
