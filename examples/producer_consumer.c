/*
 * producer_consumer: producers put numbers on a bounded Queue, consumers take them.
 *
 * Producers put the numbers 1..N between them; a full queue makes them wait. When every
 * producer has finished, the parent closes the queue: consumers drain what is left, then get
 * MPROC_ECLOSED — the "no more items" signal, with no sentinel values to count. Each consumer
 * writes its count and sum into its own slot of a shared Array. The queue and the array cross
 * to the children via opts.handles, so the example works under every start method.
 *
 *   usage: producer_consumer [N] [PRODUCERS] [CONSUMERS]     (default 1000 2 2)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { MAXPROCS = 32 };

/* Each child's own copy (opts.arg_len); handles: 0 the queue, 1 the totals array. */
struct job {
  long n;
  int index, count; /* this process's index among its kind, and how many of its kind */
};

static int producer(void *arg) {
  const struct job *j = arg;
  mproc_queue *q = mproc_process_handle(0);
  for (int64_t x = j->index + 1; x <= j->n; x += j->count)
    if (mproc_queue_put(q, &x, sizeof x, MPROC_FOREVER) < 0)
      return 1;
  return 0;
}

static int consumer(void *arg) {
  const struct job *j = arg;
  mproc_queue *q = mproc_process_handle(0);
  int64_t items = 0, sum = 0;
  for (;;) {
    void *buf;
    size_t len;
    int rc = mproc_queue_get(q, &buf, &len, MPROC_FOREVER);
    if (rc == MPROC_ECLOSED)
      break; /* closed and drained */
    if (rc < 0 || len != sizeof(int64_t))
      return 1;
    items++;
    sum += *(int64_t *)buf;
    free(buf);
  }
  int64_t *t = mproc_array_data(mproc_process_handle(1));
  t[2 * j->index] = items; /* our own slot: no lock needed */
  t[2 * j->index + 1] = sum;
  printf("consumer %d took %lld items\n", j->index, (long long)items);
  return 0;
}

/* Starts count processes running fn; returns how many started. */
static int start_all(mproc_process **procs, int count, mproc_target_fn fn, long n,
                     const mproc_process_opts *opts) {
  for (int i = 0; i < count; i++) {
    struct job j = {.n = n, .index = i, .count = count}; /* copied by new */
    if (mproc_process_new(&procs[i], fn, &j, opts) < 0)
      return i;
    if (mproc_process_start(procs[i]) < 0) {
      mproc_process_free(procs[i]);
      return i;
    }
  }
  return count;
}

static int join_all(mproc_process **procs, int count) {
  int failed = 0;
  for (int i = 0; i < count; i++) {
    int code = -1;
    mproc_process_join(procs[i], MPROC_FOREVER);
    mproc_process_exitcode(procs[i], &code);
    failed |= code != 0;
    mproc_process_free(procs[i]);
  }
  return failed;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000;
  int np = argc > 2 ? atoi(argv[2]) : 2, nc = argc > 3 ? atoi(argv[3]) : 2;
  if (n < 0 || np < 1 || np > MAXPROCS || nc < 1 || nc > MAXPROCS) {
    fprintf(stderr, "usage: producer_consumer [N] [PRODUCERS 1..32] [CONSUMERS 1..32]\n");
    return 2;
  }
  mproc_queue *q;
  mproc_array *totals; /* int64[2 * consumers]: items, sum per consumer */
  int rc = mproc_queue_new(&q, &(mproc_queue_opts){.maxsize = 16});
  if (rc == 0)
    rc = mproc_array_new(&totals, sizeof(int64_t), 2 * (size_t)nc, NULL, false);
  if (rc < 0) {
    fprintf(stderr, "producer_consumer: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_process_opts opts = {.handles = (void *[]){q, totals}, .n_handles = 2,
                             .arg_len = sizeof(struct job)};
  mproc_process *prod[MAXPROCS], *cons[MAXPROCS];
  int started_c = start_all(cons, nc, consumer, n, &opts);
  int started_p = start_all(prod, np, producer, n, &opts);
  int failed = started_c < nc || started_p < np;

  failed |= join_all(prod, started_p);
  mproc_queue_close(q); /* every item is in: consumers drain, then see MPROC_ECLOSED */
  failed |= join_all(cons, started_c);

  int64_t items = 0, sum = 0;
  const int64_t *t = mproc_array_data(totals);
  for (int i = 0; i < nc; i++) {
    items += t[2 * i];
    sum += t[2 * i + 1];
  }
  int64_t want = (int64_t)n * (n + 1) / 2;
  printf("consumed %lld items, sum %lld (expected %ld items, sum %lld)\n", (long long)items,
         (long long)sum, n, (long long)want);
  mproc_array_free(totals);
  mproc_queue_free(q);
  return !failed && items == n && sum == want ? 0 : 1;
}
