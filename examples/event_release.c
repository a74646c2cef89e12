/*
 * event_release: waiters block on an Event until the parent sets it, then all run at once.
 *
 * Each waiter first signals "ready" on a Semaphore, so the parent knows all are waiting
 * before it sets the event. The parent writes a shared flag just before set(); a waiter that
 * saw the flag still 0 after its wait would mean it was released early. The objects cross to
 * the waiters via opts.handles, so the example works under every start method.
 *
 *   usage: event_release [WAITERS]     (default 3)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int waiter(void *arg) {
  (void)arg;
  mproc_event *go = mproc_process_handle(0);
  mproc_sem *ready = mproc_process_handle(1);
  mproc_sem_release(ready);
  if (mproc_event_wait(go, 30.0) != 0)
    return 1; /* never released */
  int flag = *(volatile int *)mproc_array_data(mproc_process_handle(2));
  printf("%s released (flag %d)\n", mproc_current_process_name(), flag);
  return flag == 1 ? 0 : 2;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 3;
  if (n < 1 || n > 64) {
    fprintf(stderr, "usage: event_release [WAITERS 1..64]\n");
    return 2;
  }
  mproc_event *go;
  mproc_sem *ready;
  mproc_array *flag; /* int[1], raw: written once by the parent before set() */
  int rc = mproc_event_new(&go);
  if (rc == 0)
    rc = mproc_sem_new(&ready, 0, false);
  if (rc == 0)
    rc = mproc_array_new(&flag, sizeof(int), 1, NULL, false);
  if (rc < 0) {
    fprintf(stderr, "event_release: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_process_opts opts = {.handles = (void *[]){go, ready, flag}, .n_handles = 3};
  mproc_process *procs[64];
  int started = 0;
  for (int i = 0; i < n; i++) {
    if (mproc_process_new(&procs[i], waiter, NULL, &opts) < 0)
      break;
    if (mproc_process_start(procs[i]) < 0) {
      mproc_process_free(procs[i]);
      break;
    }
    started++;
  }
  for (int i = 0; i < started; i++) /* every waiter is about to wait */
    mproc_sem_acquire(ready, MPROC_FOREVER);
  nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
  printf("%d waiters blocked; setting the event\n", started);
  fflush(stdout);
  *(volatile int *)mproc_array_data(flag) = 1;
  mproc_event_set(go);

  int released = 0;
  for (int i = 0; i < started; i++) {
    int code = -1;
    mproc_process_join(procs[i], MPROC_FOREVER);
    mproc_process_exitcode(procs[i], &code);
    released += code == 0;
    mproc_process_free(procs[i]);
  }
  printf("%d of %d waiters released by the event\n", released, n);
  mproc_array_free(flag);
  mproc_sem_free(ready);
  mproc_event_free(go);
  return released == n ? 0 : 1;
}
