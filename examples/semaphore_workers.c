/*
 * semaphore_workers: more workers than slots; a Semaphore lets only LIMIT work at a time.
 *
 * Each worker acquires the semaphore, marks itself active in a shared Array (under the
 * array's lock), works for a moment, and releases. The peak number active at once never
 * exceeds the semaphore's initial value.
 *
 *   usage: semaphore_workers [WORKERS] [LIMIT]     (default 6 2)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { ACTIVE, PEAK, DONE };

struct shared {
  mproc_sem *slots;
  mproc_array *stats; /* long[3]: ACTIVE, PEAK, DONE, with the array's own lock */
};

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
  struct shared *sh = arg;
  if (mproc_sem_acquire(sh->slots, MPROC_FOREVER) < 0)
    return 1;
  update(sh->stats, +1);
  printf("%s working\n", mproc_current_process_name());
  nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL); /* the "work" */
  update(sh->stats, -1);
  mproc_sem_release(sh->slots);
  return 0;
}

int main(int argc, char **argv) {
  int workers = argc > 1 ? atoi(argv[1]) : 6;
  int limit = argc > 2 ? atoi(argv[2]) : 2;
  if (workers < 1 || workers > 64 || limit < 1) {
    fprintf(stderr, "usage: semaphore_workers [WORKERS 1..64] [LIMIT >= 1]\n");
    return 2;
  }
  struct shared sh;
  int rc = mproc_sem_new(&sh.slots, (unsigned)limit, true);
  if (rc == 0)
    rc = mproc_array_new(&sh.stats, sizeof(long), 3, NULL, true);
  if (rc < 0) {
    fprintf(stderr, "semaphore_workers: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_process *procs[64];
  int started = 0;
  for (int i = 0; i < workers; i++) {
    if (mproc_process_new(&procs[i], worker, &sh, NULL) < 0)
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
  const long *s = mproc_array_data(sh.stats);
  int ok = started == workers && s[DONE] == workers && s[PEAK] <= limit;
  printf("%ld of %d workers done; peak %ld at once, limit %d: %s\n", s[DONE], workers, s[PEAK],
         limit, ok ? "OK" : "FAILED");
  mproc_array_free(sh.stats);
  mproc_sem_free(sh.slots);
  return ok ? 0 : 1;
}
