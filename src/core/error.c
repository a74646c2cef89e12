/* Error codes' messages and names, generated from include/mproc.h's MPROC_ERRNO_MAP; the
 * version. */
#define _GNU_SOURCE
#include "core/internal.h"

#include <string.h>

/* Every code is negative; the errno-valued ones (taken from <errno.h> by the table) lie
 * where Linux keeps errno, under 4096, and mproc's own below -10000, so none can be taken
 * for a system call's -errno. */
#define MPROC__XX(name, value, message)                                                     \
  _Static_assert((value) < 0 && ((value) > -4096 || (value) < -10000), "MPROC_" #name);
MPROC_ERRNO_MAP(MPROC__XX)
#undef MPROC__XX

const char *mproc_version_string(void) {
#define MPROC__STR2(x) #x
#define MPROC__STR(x) MPROC__STR2(x)
  return MPROC__STR(MPROC_VERSION_MAJOR) "." MPROC__STR(MPROC_VERSION_MINOR) "." MPROC__STR(
      MPROC_VERSION_PATCH);
}

/* The table's rows, in its order. */
enum {
#define MPROC__XX(name, value, message) ROW_##name,
  MPROC_ERRNO_MAP(MPROC__XX)
#undef MPROC__XX
};
static const struct {
  const char *name, *message;
} rows[] = {
#define MPROC__XX(name, value, message) {"MPROC_" #name, message},
    MPROC_ERRNO_MAP(MPROC__XX)
#undef MPROC__XX
};

/* err's row in the table, or -1. A switch generated from the table, so two codes with one
 * value fail to compile (duplicate case). */
static int row_of(int err) {
  switch (err) {
#define MPROC__XX(name, value, message)                                                     \
  case MPROC_##name:                                                                         \
    return ROW_##name;
    MPROC_ERRNO_MAP(MPROC__XX)
#undef MPROC__XX
  default:
    return -1;
  }
}

/* err's name or message: its row's, else its errno's, else a fixed text. */
static const char *lookup(int err, bool name) {
  int row = row_of(err);
  if (row >= 0)
    return name ? rows[row].name : rows[row].message;
  if (err < 0 && err > -4096) { /* -errno: Linux keeps errno under 4096 */
    /* Both are thread-safe and return static strings (glibc 2.32+). */
    const char *s = name ? strerrorname_np(-err) : strerrordesc_np(-err);
    if (s)
      return s;
  }
  if (err == 0)
    return name ? "OK" : "success";
  return name ? "UNKNOWN" : "unknown error";
}

const char *mproc_strerror(int err) { return lookup(err, false); }

const char *mproc_err_name(int err) { return lookup(err, true); }
