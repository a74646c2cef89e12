/* A plain program (no Criterion: see shim/criterion/criterion.h) that walks mproc's main
 * lifecycles once each, for valgrind (run.sh): tests/lifecycles.c's Pool, Queue, Process,
 * Pipe, Lock/Array, Listener and Manager, then a pool's imap and a task that crashes its
 * worker, and an Event. The start method comes from MPROC_START_METHOD. Exits 0 when every
 * lifecycle returned 0 and every check held, and no descriptor or child is left. */
#include "helpers.h"
#include "lifecycles.h"
#include "mproc.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tv_failures;

static int crashing(const void *arg, size_t len, mproc_result *res) {
  (void)arg;
  (void)len;
  (void)res;
  abort();
}

/* imap over 64 int64 (times 3, in order), then a task that aborts its worker: MPROC_ECRASHED,
 * and the pool goes on (a task after it is right). */
static int tv_pool_imap_crash(void) {
  mproc_pool_opts o = {.processes = 2};
  mproc_pool *p;
  int rc = mproc_pool_new(&p, &o);
  if (rc)
    return rc;
  enum { N = 64 };
  int64_t in[N];
  const void *items[N];
  size_t lens[N];
  for (int i = 0; i < N; i++) {
    in[i] = i;
    items[i] = &in[i];
    lens[i] = sizeof in[i];
  }
  mproc_imap *it = NULL;
  if ((rc = mproc_pool_imap(p, th_times3, items, lens, N, NULL, &it)) == 0) {
    int got = 0;
    const void *r;
    size_t len;
    while ((rc = mproc_imap_next(it, &r, &len, MPROC_FOREVER)) == 0) {
      cr_expect(len == sizeof(int64_t) && *(const int64_t *)r == 3 * (int64_t)got);
      got++;
    }
    cr_expect(rc == MPROC_EOF && got == N);
    rc = rc == MPROC_EOF ? 0 : rc;
    mproc_imap_free(it);
  }
  void *r = NULL;
  size_t len = 0;
  if (rc == 0) {
    int crc = mproc_pool_apply(p, crashing, NULL, 0, &r, &len);
    cr_expect(crc == MPROC_ECRASHED);
    free(r);
    int64_t v = 5;
    r = NULL;
    if ((rc = mproc_pool_apply(p, th_times3, &v, sizeof v, &r, &len)) == 0)
      cr_expect(len == sizeof v && *(int64_t *)r == 15);
    free(r);
  }
  int crc = mproc_pool_close(p);
  int jrc = crc ? crc : mproc_pool_join(p);
  mproc_pool_free(p);
  return rc ? rc : jrc;
}

static int tv_event(void) {
  mproc_event *e;
  int rc = mproc_event_new(&e);
  if (rc)
    return rc;
  cr_expect(!mproc_event_is_set(e));
  if ((rc = mproc_event_set(e)) == 0 && (rc = mproc_event_wait(e, 1)) == 0)
    cr_expect(mproc_event_is_set(e));
  mproc_event_free(e);
  return rc;
}

/* Whether name is one of the comma-separated names in list. */
static bool listed(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; (p = strstr(p, name)); p += n)
    if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
      return true;
  return false;
}

int main(void) {
  static const struct {
    const char *name;
    int (*fn)(void);
  } walk[] = {{"pool", tl_pool},       {"pool_imap_crash", tv_pool_imap_crash},
              {"queue", tl_queue},     {"process", tl_process},
              {"pipe", tl_pipe},       {"sync", tl_sync},
              {"event", tv_event},     {"listener", tl_listener},
              {"manager", tl_manager}};
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *only = getenv("VG_WALK_ONLY"); /* "name,name": those lifecycles alone */
  int fds = th_fd_count(), bad = 0;
  for (size_t i = 0; i < sizeof walk / sizeof walk[0]; i++) {
    if (only && *only && !listed(only, walk[i].name))
      continue;
    int before = tv_failures, rc = walk[i].fn();
    mproc_forkserver_stop(); /* its processes are not left for the next check */
    bool left = th_has_children();
    printf("vg_walk %s: %s%s%s\n", walk[i].name, mproc_err_name(rc),
           tv_failures > before ? ", a check failed" : "", left ? ", a child is left" : "");
    bad += rc != 0 || tv_failures > before || left;
  }
  if (th_fd_count() != fds) {
    printf("vg_walk: descriptors %d after, %d before\n", th_fd_count(), fds);
    bad++;
  }
  printf("vg_walk (%s): %d of %zu lifecycles failed\n",
         mproc_start_method_name(mproc_get_start_method()), bad, sizeof walk / sizeof walk[0]);
  return bad ? 1 : 0;
}
