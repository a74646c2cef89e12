/*
 * shared_value: a Value and an Array modified by a child, seen by the parent (the
 * `Value('d', 0.0)` / `Array('i', range(10))` example of Python's documentation).
 *
 * Ordinary memory is copied at fork, so a child's writes to it stay in the child; an
 * mproc_array lives in shared memory, so the parent sees what the child wrote.
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdio.h>

struct shared {
  mproc_array *num; /* Value('d', 0.0): an array of one double */
  mproc_array *arr; /* Array('i', range(10)) */
};

static int plain_global = 7; /* copied into the child: the child's change stays there */

static int child_main(void *arg) {
  struct shared *s = arg;
  /* Each array carries an RLock (with_lock = true), as Python's Value and Array do. */
  mproc_lock_acquire(mproc_array_lock(s->num), MPROC_FOREVER);
  *(double *)mproc_array_data(s->num) = 3.1415927;
  mproc_lock_release(mproc_array_lock(s->num));

  mproc_lock_acquire(mproc_array_lock(s->arr), MPROC_FOREVER);
  int *a = mproc_array_data(s->arr);
  for (size_t i = 0; i < mproc_array_len(s->arr); i++)
    a[i] = -a[i];
  mproc_lock_release(mproc_array_lock(s->arr));

  plain_global = 1000;
  return 0;
}

int main(void) {
  struct shared s;
  int init[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  mproc_process *p;
  int rc = mproc_array_new(&s.num, sizeof(double), 1, NULL, true);
  if (rc == 0)
    rc = mproc_array_new(&s.arr, sizeof(int), 10, init, true);
  if (rc == 0)
    rc = mproc_process_new(&p, child_main, &s, NULL);
  if (rc == 0)
    rc = mproc_process_start(p);
  if (rc == 0)
    rc = mproc_process_join(p, MPROC_FOREVER);
  if (rc < 0) {
    fprintf(stderr, "shared_value: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_process_free(p);

  printf("num = %.7f\narr = [", *(double *)mproc_array_data(s.num));
  const int *a = mproc_array_data(s.arr);
  for (size_t i = 0; i < mproc_array_len(s.arr); i++)
    printf("%s%d", i ? ", " : "", a[i]);
  printf("]\nplain global = %d (the child's change stayed in the child)\n", plain_global);
  mproc_array_free(s.num);
  mproc_array_free(s.arr);
  return 0;
}
