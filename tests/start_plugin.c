/* mproc_test_plugin.so: a module the test dlopens; its functions run in spawned children,
 * which open the same file (start_lib.h). */
#include "start_lib.h"
#include "mproc.h"

#include <stddef.h>

int plugin_target(void *arg);
int plugin_map(const void *in, void *out, const void *args);

int plugin_target(void *arg) {
  const startlib_arg *a = arg;
  mproc_array *v = mproc_process_handle(0);
  if (!a || !v || mproc_array_len(v) != 1)
    return 1;
  *(int64_t *)mproc_array_data(v) = PLUGIN_VALUE(a->seed);
  return PLUGIN_CODE;
}

int plugin_map(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int32_t *)in;
  *(int64_t *)out = v * v + 7;
  return 0;
}
