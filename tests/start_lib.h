/* A shared library linked into test_start, and a plugin it dlopens: functions that run as
 * Process targets and Pool map functions in children born by spawn or by the forkserver.
 * Their mproc calls resolve against the test executable (it exports its symbols). */
#ifndef MPROC_TEST_START_LIB_H
#define MPROC_TEST_START_LIB_H

#include <stdint.h>

/* The exit code startlib_target returns for arg (a startlib_arg). */
#define STARTLIB_CODE(seed) ((int)(((seed) * 5u + 3u) & 0x7f))
/* What startlib_target writes into the int64 Value it finds as handle 0. */
#define STARTLIB_VALUE(seed) ((int64_t)(seed) * 1000003 + 17)
/* What the plugin's target writes into the int64 Value it finds as handle 0, and returns. */
#define PLUGIN_VALUE(seed) ((int64_t)(seed) * 7919 + 0xC0FFEE)
#define PLUGIN_CODE 33

typedef struct startlib_arg {
  uint32_t seed;
} startlib_arg;

/* Process target: writes STARTLIB_VALUE(seed) into handle 0 (an int64 Value), returns
 * STARTLIB_CODE(seed); 1 when the handle is missing. */
int startlib_target(void *arg);
/* Map function: out (int64) = in (int32) * 3 - 1. */
int startlib_map(const void *in, void *out, const void *args);

/* In the plugin (found with dlsym): "plugin_target", a Process target (writes
 * PLUGIN_VALUE(seed) into handle 0 and returns PLUGIN_CODE), and "plugin_map", a map
 * function (out int64 = in int32 * in int32 + 7). */

#endif
