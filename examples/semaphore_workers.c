/*
 * semaphore_workers: more workers than slots; a Semaphore lets only LIMIT work at a time.
 *
 * Each worker acquires the semaphore, marks itself active in a shared Array (under the
 * array's lock), works for a moment, and releases. The peak number active at once never
 * exceeds the semaphore's initial value. The objects cross to the workers via opts.handles,
 * so the example works under every start method.
 *
 *   usage: semaphore_workers [WORKERS] [LIMIT]     (default 6 2)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { ACTIVE, PEAK, DONE };

static void update(mproc_array *stats, int delta) {
  mproc_lock *l = mproc_array_lock(stats);
  long *s = mproc_array_data(stats);
  mproc_lock_acquire(l, MPROC_FOREVER);
  s[ACTIVE] += delta;
  if (s[ACTIVE] > s[PEAK])
    s[PEAK] = s[ACTIVE];
  if (delta < 0)
    s[DONE]++;
  mproc_lock_release(l);
}

static int worker(void *arg) {
  (void)arg;
  mproc_sem *slots = mproc_process_handle(0);
  mproc_array *stats = mproc_process_handle(1);
  if (mproc_sem_acquire(slots, MPROC_FOREVER) < 0)
    return 1;
  update(stats, +1);
  printf("%s working\n", mproc_current_process_name());
  nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL); /* the "work" */
  update(stats, -1);
  mproc_sem_release(slots);
  return 0;
}

int main(int argc, char **argv) {
  int workers = argc > 1 ? atoi(argv[1]) : 6;
  int limit = argc > 2 ? atoi(argv[2]) : 2;
  if (workers < 1 || workers > 64 || limit < 1) {
    fprintf(stderr, "usage: semaphore_workers [WORKERS 1..64] [LIMIT >= 1]\n");
    return 2;
  }
  mproc_sem *slots;
  mproc_array *stats; /* long[3]: ACTIVE, PEAK, DONE, with the array's own lock */
  int rc = mproc_sem_new(&slots, (unsigned)limit, true);
  if (rc == 0)
    rc = mproc_array_new(&stats, sizeof(long), 3, NULL, true);
  if (rc < 0) {
    fprintf(stderr, "semaphore_workers: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_process_opts opts = {.handles = (void *[]){slots, stats}, .n_handles = 2};
  mproc_process *procs[64];
  int started = 0;
  for (int i = 0; i < workers; i++) {
    if (mproc_process_new(&procs[i], worker, NULL, &opts) < 0)
      break;
    if (mproc_process_start(procs[i]) < 0) {
      mproc_process_free(procs[i]);
      break;
    }
    started++;
  }
  for (int i = 0; i < started; i++) {
    mproc_process_join(procs[i], MPROC_FOREVER);
    mproc_process_free(procs[i]);
  }
  const long *s = mproc_array_data(stats);
  int ok = started == workers && s[DONE] == workers && s[PEAK] <= limit;
  printf("%ld of %d workers done; peak %ld at once, limit %d: %s\n", s[DONE], workers, s[PEAK],
         limit, ok ? "OK" : "FAILED");
  mproc_array_free(stats);
  mproc_sem_free(slots);
  return ok ? 0 : 1;
}
