/*
 * lock_counter: several processes increment one shared counter under a Lock.
 *
 * The counter is a raw shared Value (an mproc_array of one int64); the Lock makes each
 * read-modify-write whole, so no increment is lost. mproc_lock_acquire may also return
 * MPROC_EOWNERDEAD: the lock is ours, but its previous holder died while holding it. The
 * objects cross to the children via opts.handles, so the example works under every start
 * method.
 *
 *   usage: lock_counter [PROCESSES] [INCREMENTS]     (default 4 10000)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int worker(void *arg) {
  long increments = *(const long *)arg;
  mproc_lock *lock = mproc_process_handle(0);
  int64_t *counter = mproc_array_data(mproc_process_handle(1));
  for (long i = 0; i < increments; i++) {
    int rc = mproc_lock_acquire(lock, MPROC_FOREVER);
    if (rc < 0 && rc != MPROC_EOWNERDEAD)
      return 1;
    *counter += 1;
    mproc_lock_release(lock);
  }
  return 0;
}

int main(int argc, char **argv) {
  int nproc = argc > 1 ? atoi(argv[1]) : 4;
  long increments = argc > 2 ? atol(argv[2]) : 10000;
  if (nproc < 1 || nproc > 64 || increments < 0) {
    fprintf(stderr, "usage: lock_counter [PROCESSES 1..64] [INCREMENTS]\n");
    return 2;
  }
  mproc_lock *lock;
  mproc_array *counter;
  int rc = mproc_lock_new(&lock, false);
  if (rc == 0)
    rc = mproc_array_new(&counter, sizeof(int64_t), 1, NULL, false);
  if (rc < 0) {
    fprintf(stderr, "lock_counter: %s\n", mproc_strerror(rc));
    return 1;
  }

  mproc_process_opts opts = {.handles = (void *[]){lock, counter}, .n_handles = 2,
                             .arg_len = sizeof increments};
  mproc_process *procs[64];
  int started = 0, failed = 0;
  for (int i = 0; i < nproc; i++) {
    rc = mproc_process_new(&procs[i], worker, &increments, &opts);
    if (rc == 0 && (rc = mproc_process_start(procs[i])) < 0)
      mproc_process_free(procs[i]);
    if (rc < 0) {
      fprintf(stderr, "lock_counter: start: %s\n", mproc_strerror(rc));
      failed = 1;
      break;
    }
    started++;
  }
  for (int i = 0; i < started; i++) {
    int code = -1;
    mproc_process_join(procs[i], MPROC_FOREVER);
    mproc_process_exitcode(procs[i], &code);
    failed |= code != 0;
    mproc_process_free(procs[i]);
  }

  int64_t got = *(int64_t *)mproc_array_data(counter);
  int64_t want = (int64_t)nproc * increments;
  printf("counter = %lld (expected %lld): %s\n", (long long)got, (long long)want,
         got == want ? "no increment lost" : "INCREMENTS LOST");
  mproc_array_free(counter);
  mproc_lock_free(lock);
  return got == want && !failed ? 0 : 1;
}
