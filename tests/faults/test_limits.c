/* The process's limits (issue 18): with few descriptors left (RLIMIT_NOFILE) or little
 * address space (RLIMIT_AS), every lifecycle of lifecycles.h either works or fails with a
 * clear code — never MPROC_EINVAL or MPROC_ESTATE, never a crash or a hang — leaves nothing
 * behind, and works again once the limit is lifted. The limits reach the pool's supervisor
 * and workers too (they inherit them). */
#define _GNU_SOURCE
#include "helpers.h"
#include "lifecycles.h"
#include "mproc.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LIMITS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LIMITS_ASAN 1
#endif

typedef int (*life_fn)(void);
static const struct {
  const char *name;
  life_fn fn;
} LIVES[] = {{"pool", tl_pool}, {"queue", tl_queue}, {"process", tl_process},
             {"pipe", tl_pipe}, {"lock and array", tl_sync}};
#define NLIVES (sizeof LIVES / sizeof LIVES[0])

static void expect_clean(const char *what, const char *limit, long room, int rc) {
  cr_assert(rc == 0 || (rc < 0 && rc != MPROC_EINVAL && rc != MPROC_ESTATE),
            "%s with %s %ld: %d (%s)", what, limit, room, rc, mproc_err_name(rc));
}

/* Runs every lifecycle with the soft limit res set to base + room, for each room. */
static void under_limit(int res, const char *limit, long base, const long *rooms, size_t n,
                        int *failed) {
  struct rlimit old;
  cr_assert_eq(getrlimit(res, &old), 0);
  for (size_t l = 0; l < NLIVES; l++) {
    cr_assert_eq(LIVES[l].fn(), 0, "%s without a limit", LIVES[l].name);
    mproc_forkserver_stop();
    th_scope s = th_begin();
    for (size_t i = 0; i < n; i++) {
      struct rlimit lim = old;
      lim.rlim_cur = (rlim_t)(base + rooms[i]);
      if (old.rlim_max != RLIM_INFINITY && lim.rlim_cur > old.rlim_max)
        lim.rlim_cur = old.rlim_max;
      cr_assert_eq(setrlimit(res, &lim), 0);
      int rc = LIVES[l].fn();
      cr_assert_eq(setrlimit(res, &old), 0);
      expect_clean(LIVES[l].name, limit, rooms[i], rc);
      *failed += rc != 0;
      th_end(s);
      cr_assert_eq(LIVES[l].fn(), 0, "%s after %s %ld was lifted", LIVES[l].name, limit,
                   rooms[i]);
      th_end(s);
    }
  }
}

TestSuite(limits, .timeout = 200);

/* Descriptors: from none free to enough for everything. */
Test(limits, few_descriptors) {
  long rooms[41];
  for (int i = 0; i <= 40; i++)
    rooms[i] = i;
  int failed = 0;
  under_limit(RLIMIT_NOFILE, "descriptors free", th_fd_count(), rooms, 41, &failed);
  cr_expect(failed > 0, "no lifecycle ever ran out of descriptors: the test tests nothing");
  cr_log_info("few_descriptors: %d of %zu runs failed cleanly\n", failed, 41 * NLIVES);
}

#ifndef LIMITS_ASAN
static long vm_size(void) {
  FILE *f = fopen("/proc/self/status", "r");
  cr_assert(f);
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
      break;
  fclose(f);
  cr_assert(kb > 0);
  return kb * 1024;
}

/* Address space: the rings reserve ~1 GiB each and settle for less; below that, clear
 * failures. ASan reserves terabytes of shadow, so it cannot run under such a limit. */
Test(limits, little_address_space) {
  const long M = 1L << 20;
  long rooms[] = {0, M, 4 * M, 16 * M, 64 * M, 256 * M, 1024 * M, 4096 * M};
  int failed = 0;
  under_limit(RLIMIT_AS, "bytes of address space free", vm_size(), rooms,
              sizeof rooms / sizeof rooms[0], &failed);
  cr_expect(failed > 0, "no lifecycle ever ran out of address space: the test tests nothing");
  cr_log_info("little_address_space: %d runs failed cleanly\n", failed);
}
#endif

/* A file-size limit (RLIMIT_FSIZE) reaches a memfd's ftruncate: EFBIG, and SIGXFSZ at its
 * default (it would end the process) is never delivered, so every shared object of mproc is
 * made smaller than the limit or fails with a clear code, never a crash. */
Test(limits, file_size) {
  const long K = 1024;
  long rooms[] = {0, 4 * K, 64 * K, 1024 * K, 16384 * K};
  int failed = 0;
  cr_assert_neq(signal(SIGXFSZ, SIG_DFL), SIG_ERR);
  under_limit(RLIMIT_FSIZE, "bytes of file size", 0, rooms, sizeof rooms / sizeof rooms[0],
              &failed);
  cr_log_info("file_size: %d runs failed cleanly\n", failed);
}
