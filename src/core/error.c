/* Error codes and messages, version, and process-wide facts. */
#define _GNU_SOURCE
#include "core/internal.h"

#include <string.h>

const char *mproc_version_string(void) {
#define MPROC__STR2(x) #x
#define MPROC__STR(x) MPROC__STR2(x)
  return MPROC__STR(MPROC_VERSION_MAJOR) "." MPROC__STR(MPROC_VERSION_MINOR) "." MPROC__STR(
      MPROC_VERSION_PATCH);
}

const char *mproc_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case MPROC_ESTATE:
    return "not valid in this state";
  case MPROC_ECLOSED:
    return "closed";
  case MPROC_EOF:
    return "end of file: the peer closed";
  case MPROC_ETASK:
    return "the task reported failure";
  case MPROC_ECRASHED:
    return "the worker died while running the task";
  case MPROC_EEXPIRED:
    return "the task ran past its timeout and its worker was killed";
  case MPROC_ECANCELLED:
    return "cancelled: the pool was terminated";
  case MPROC_EOWNERDEAD:
    return "lock acquired; its previous holder died holding it";
  case MPROC_ETOOBIG:
    return "size beyond a hard limit";
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

int mproc_cpu_count(void) { return mproc__cpu_count(); }

static const char *current_name = "MainProcess";

const char *mproc_current_process_name(void) { return current_name; }

void mproc__set_process_name(const char *name) { current_name = name ? name : "MainProcess"; }
