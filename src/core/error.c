/* Error codes' messages and names, generated from include/mproc.h's MPROC_ERRNO_MAP; the
 * version. */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <string.h>

/* The errno-valued codes must be the negated <errno.h> values (a system call's -errno is
 * returned as is), and mproc's own must lie below any errno, which Linux keeps under 4096. */
_Static_assert(MPROC_EINVAL == -EINVAL && MPROC_ENOMEM == -ENOMEM &&
                   MPROC_ETIMEDOUT == -ETIMEDOUT && MPROC_EAGAIN == -EAGAIN,
               "errno-valued codes follow <errno.h>");
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

/* The switches are generated from the table, so two codes with one value fail to compile
 * (duplicate case). */
const char *mproc_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define MPROC__XX(name, value, message)                                                     \
  case MPROC_##name:                                                                         \
    return message;
    MPROC_ERRNO_MAP(MPROC__XX)
#undef MPROC__XX
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    /* strerrordesc_np is thread-safe and returns a static string (glibc 2.32+). */
    const char *s = strerrordesc_np(-err);
    if (s)
      return s;
  }
  return "unknown error";
}

const char *mproc_err_name(int err) {
  switch (err) {
  case 0:
    return "OK";
#define MPROC__XX(name, value, message)                                                     \
  case MPROC_##name:                                                                         \
    return "MPROC_" #name;
    MPROC_ERRNO_MAP(MPROC__XX)
#undef MPROC__XX
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    const char *s = strerrorname_np(-err);
    if (s)
      return s;
  }
  return "UNKNOWN";
}
