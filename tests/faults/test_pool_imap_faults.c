/* imap when the pool itself breaks: the supervisor killed from outside mid-stream. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static int slowish(const void *arg, size_t len, mproc_result *res) {
  usleep(1000);
  return mproc_result_set(res, arg, len);
}

typedef struct counter_gen {
  uint64_t next, end, buf;
} counter_gen;

static int counter(void *ctx, const void **item, size_t *len) {
  counter_gen *g = ctx;
  if (g->next == g->end)
    return 0;
  g->buf = g->next++;
  *item = &g->buf;
  *len = 8;
  return 1;
}

/* Every item held fails (MPROC_ECRASHED) at its position, the next one is refused, then
 * MPROC_EOF: no hang, and free leaves nothing behind. */
Test(pool_imap_faults, supervisor_killed_mid_stream) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  cr_assert_eq(mproc_pool_new(&p, &(mproc_pool_opts){.processes = 2}), 0);
  counter_gen g = {0, 100000, 0};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap_gen(p, slowish, counter, &g, &(mproc_imap_opts){.buffersize = 32},
                                   &it),
               0);
  for (int i = 0; i < 10; i++)
    cr_assert_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), 0);
  kill(mproc__pool_supervisor_pid(p), SIGKILL);
  int rc;
  size_t n = 10, failed = 0;
  while ((rc = mproc_imap_next(it, NULL, NULL, MPROC_FOREVER)) != MPROC_EOF) {
    cr_assert_eq(mproc_imap_index(it), n);
    cr_assert(rc == 0 || rc == MPROC_ECRASHED || rc == MPROC_ECLOSED, "rc %d", rc);
    failed += rc != 0;
    n++;
  }
  cr_expect_geq(failed, 1);
  cr_expect_lt(n, 100000);
  mproc_imap_free(it);
  mproc_pool_free(p);
  th_end(s);
}
