/*
 * shared_value: a Value and an Array modified by a child, seen by the parent (the
 * `Value('d', 0.0)` / `Array('i', range(10))` example of Python's documentation).
 *
 * Ordinary memory is not shared, so a child's writes to it stay in the child; an mproc_array
 * lives in shared memory, so the parent sees what the child wrote. The arrays cross to the
 * child via opts.handles, so the example works under every start method.
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdio.h>

static int plain_global = 7; /* the child has its own: the child's change stays there */

static int child_main(void *arg) {
  (void)arg;
  mproc_array *num = mproc_process_handle(0), *arr = mproc_process_handle(1);
  /* Each array carries an RLock (with_lock = true), as Python's Value and Array do. */
  mproc_lock_acquire(mproc_array_lock(num), MPROC_FOREVER);
  *(double *)mproc_array_data(num) = 3.1415927;
  mproc_lock_release(mproc_array_lock(num));

  mproc_lock_acquire(mproc_array_lock(arr), MPROC_FOREVER);
  int *a = mproc_array_data(arr);
  for (size_t i = 0; i < mproc_array_len(arr); i++)
    a[i] = -a[i];
  mproc_lock_release(mproc_array_lock(arr));

  plain_global = 1000;
  return 0;
}

int main(void) {
  mproc_array *num; /* Value('d', 0.0): an array of one double */
  mproc_array *arr; /* Array('i', range(10)) */
  int init[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  mproc_process *p;
  int rc = mproc_array_new(&num, sizeof(double), 1, NULL, true);
  if (rc == 0)
    rc = mproc_array_new(&arr, sizeof(int), 10, init, true);
  if (rc == 0)
    rc = mproc_process_new(&p, child_main, NULL,
                           &(mproc_process_opts){.handles = (void *[]){num, arr}, .n_handles = 2});
  if (rc == 0)
    rc = mproc_process_start(p);
  if (rc == 0)
    rc = mproc_process_join(p, MPROC_FOREVER);
  if (rc < 0) {
    fprintf(stderr, "shared_value: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_process_free(p);

  printf("num = %.7f\narr = [", *(double *)mproc_array_data(num));
  const int *a = mproc_array_data(arr);
  for (size_t i = 0; i < mproc_array_len(arr); i++)
    printf("%s%d", i ? ", " : "", a[i]);
  printf("]\nplain global = %d (the child's change stayed in the child)\n", plain_global);
  mproc_array_free(num);
  mproc_array_free(arr);
  return 0;
}
