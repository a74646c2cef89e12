/* The error layer: codes, their messages and names, the version; and the process facts in
 * mproc.h's Common part (CPU count, process name). */
#include "helpers.h"
#include "mproc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const int codes[] = {MPROC_EINVAL,   MPROC_ENOMEM,     MPROC_ETIMEDOUT, MPROC_EAGAIN,
                            MPROC_ESTATE,   MPROC_ECLOSED,    MPROC_EOF,       MPROC_ETASK,
                            MPROC_ECRASHED, MPROC_EEXPIRED,   MPROC_ECANCELLED,
                            MPROC_EOWNERDEAD, MPROC_ETOOBIG};

Test(error, codes_are_distinct_negative) {
  size_t n = sizeof codes / sizeof codes[0];
  for (size_t i = 0; i < n; i++) {
    cr_assert_lt(codes[i], 0);
    for (size_t j = i + 1; j < n; j++)
      cr_assert_neq(codes[i], codes[j]);
  }
  cr_assert_eq(MPROC_EINVAL, -EINVAL);
  cr_assert_eq(MPROC_ENOMEM, -ENOMEM);
  cr_assert_eq(MPROC_ETIMEDOUT, -ETIMEDOUT);
  cr_assert_eq(MPROC_EAGAIN, -EAGAIN);
}

Test(error, strerror_names_every_code) {
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    const char *s = mproc_strerror(codes[i]);
    cr_assert_not_null(s);
    cr_assert_str_neq(s, "unknown error");
    for (size_t j = i + 1; j < sizeof codes / sizeof codes[0]; j++)
      cr_assert_str_neq(s, mproc_strerror(codes[j]));
  }
  cr_assert_str_eq(mproc_strerror(-EPIPE), strerror(EPIPE));
  cr_assert_str_eq(mproc_strerror(0), "success");
  cr_assert_str_eq(mproc_strerror(-999999), "unknown error");
  cr_assert_str_eq(mproc_strerror(12345), "unknown error");
}

Test(error, cpu_count_and_version) {
  int n = mproc_cpu_count();
  cr_assert_geq(n, 1);
  cr_assert_leq(n, 4096);
  char expect[32];
  snprintf(expect, sizeof expect, "%d.%d.%d", MPROC_VERSION_MAJOR, MPROC_VERSION_MINOR,
           MPROC_VERSION_PATCH);
  cr_assert_str_eq(mproc_version_string(), expect);
  cr_assert_str_eq(mproc_current_process_name(), "MainProcess");
}

Test(error, table_gives_names_and_messages) {
#define XX(name, value, message)                                                              \
  cr_assert_eq(MPROC_##name, (value));                                                         \
  cr_assert_str_eq(mproc_err_name(MPROC_##name), "MPROC_" #name);                              \
  cr_assert_str_eq(mproc_strerror(MPROC_##name), message);
  MPROC_ERRNO_MAP(XX)
#undef XX
  cr_assert_str_eq(mproc_strerror(MPROC_ECANCELLED),
                   "cancelled: the pool was terminated before the task finished");
  cr_assert_str_eq(mproc_err_name(MPROC_EOF), "MPROC_EOF");
  cr_assert_str_eq(mproc_err_name(-EPIPE), "EPIPE");
  cr_assert_str_eq(mproc_err_name(-ENOENT), "ENOENT");
  cr_assert_str_eq(mproc_err_name(0), "OK");
  cr_assert_str_eq(mproc_err_name(-999999), "UNKNOWN");
  cr_assert_str_eq(mproc_err_name(-4000), "UNKNOWN");
  cr_assert_str_eq(mproc_err_name(7), "UNKNOWN");
}
