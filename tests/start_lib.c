/* libmproc_test_startlib.so: functions in a shared library loaded at start (start_lib.h). */
#include "start_lib.h"
#include "mproc.h"

#include <stddef.h>

int startlib_target(void *arg) {
  const startlib_arg *a = arg;
  mproc_array *v = mproc_process_handle(0);
  if (!a || !v || mproc_array_len(v) != 1)
    return 1;
  *(int64_t *)mproc_array_data(v) = STARTLIB_VALUE(a->seed);
  return STARTLIB_CODE(a->seed);
}

int startlib_map(const void *in, void *out, const void *args) {
  (void)args;
  *(int64_t *)out = (int64_t)*(const int32_t *)in * 3 - 1;
  return 0;
}
