/* imap / imap_unordered: exact contents and order, completeness, chunking, failures at their
 * positions, lazy generators with bounded memory, early free. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPROC_TEST_ASAN 1
#endif
#endif
#ifndef MPROC_TEST_ASAN
#define MPROC_TEST_ASAN 0
#endif

/* Result: the item's bytes reversed, then its length as a uint32 (variable-size results). */
static int reverse_task(const void *arg, size_t len, mproc_result *res) {
  char *out = mproc_result_alloc(res, len + 4);
  if (!out)
    return 1;
  for (size_t i = 0; i < len; i++)
    out[i] = ((const char *)arg)[len - 1 - i];
  uint32_t l = (uint32_t)len;
  memcpy(out + len, &l, 4);
  return 0;
}

/* 8-byte items: v -> v * 3; fails for v % 7 == 3; the worker dies for v == 1000003. */
static int triple_task(const void *arg, size_t len, mproc_result *res) {
  if (len != 8)
    return mproc_result_fail(res, "bad length %zu", len);
  uint64_t v;
  memcpy(&v, arg, 8);
  if (v == 1000003)
    raise(SIGKILL);
  if (v % 7 == 3)
    return mproc_result_fail(res, "item %llu refused", (unsigned long long)v);
  v *= 3;
  return mproc_result_set(res, &v, 8);
}

#define NVAR 300

static void make_items(char **items, size_t *lens, size_t n) {
  for (size_t i = 0; i < n; i++) {
    lens[i] = (i * 37) % 200; /* 0 included */
    items[i] = malloc(lens[i] + 1);
    for (size_t j = 0; j < lens[i]; j++)
      items[i][j] = (char)(i + j * 13);
  }
}

static void check_reversed(const char *item, size_t ilen, const void *res, size_t len) {
  cr_assert_eq(len, ilen + 4);
  const char *r = res;
  for (size_t j = 0; j < ilen; j++)
    cr_assert_eq(r[j], item[ilen - 1 - j]);
  uint32_t l;
  memcpy(&l, r + ilen, 4);
  cr_assert_eq(l, ilen);
}

static void ordered_case(size_t chunksize, size_t buffersize) {
  mproc_pool *p = th_pool(2);
  char *items[NVAR];
  size_t lens[NVAR];
  make_items(items, lens, NVAR);
  mproc_imap_opts o = {.chunksize = chunksize, .buffersize = buffersize};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap(p, reverse_task, (const void *const *)items, lens, NVAR, &o, &it),
               0);
  for (size_t i = 0; i < NVAR; i++) {
    const void *res;
    size_t len;
    cr_assert_eq(mproc_imap_next(it, &res, &len, MPROC_FOREVER), 0, "item %zu", i);
    cr_assert_eq(mproc_imap_index(it), i);
    check_reversed(items[i], lens[i], res, len);
  }
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), MPROC_EOF);
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, 0), MPROC_EOF);
  mproc_imap_free(it);
  for (size_t i = 0; i < NVAR; i++)
    free(items[i]);
  mproc_pool_free(p);
}

Test(pool_imap, ordered_exact_c1) {
  th_scope s = th_begin();
  ordered_case(1, 0);
  th_end(s);
}

Test(pool_imap, ordered_exact_chunks) {
  th_scope s = th_begin();
  ordered_case(7, 0);
  ordered_case(64, 5); /* buffersize below one chunk: one chunk at a time */
  ordered_case(1, 1);  /* one item at a time */
  th_end(s);
}

static void unordered_case(size_t chunksize) {
  mproc_pool *p = th_pool(2);
  char *items[NVAR];
  size_t lens[NVAR];
  make_items(items, lens, NVAR);
  mproc_imap_opts o = {.unordered = true, .chunksize = chunksize, .buffersize = 40};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap(p, reverse_task, (const void *const *)items, lens, NVAR, &o, &it),
               0);
  bool seen[NVAR] = {0};
  const void *res;
  size_t len;
  int rc, count = 0;
  while ((rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER)) == 0) {
    size_t i = mproc_imap_index(it);
    cr_assert_lt(i, NVAR);
    cr_assert(!seen[i], "item %zu twice", i);
    seen[i] = true;
    check_reversed(items[i], lens[i], res, len);
    count++;
  }
  cr_expect_eq(rc, MPROC_EOF);
  cr_expect_eq(count, NVAR);
  mproc_imap_free(it);
  for (size_t i = 0; i < NVAR; i++)
    free(items[i]);
  mproc_pool_free(p);
}

Test(pool_imap, unordered_complete) {
  th_scope s = th_begin();
  unordered_case(1);
  unordered_case(9);
  th_end(s);
}

/* ---- generators ---- */

typedef struct counter_gen {
  uint64_t next, end;
  uint64_t buf;
  int fail_at_end; /* returned at the end instead of 0 */
} counter_gen;

static int counter(void *ctx, const void **item, size_t *len) {
  counter_gen *g = ctx;
  if (g->next == g->end)
    return g->fail_at_end;
  g->buf = g->next++;
  *item = &g->buf;
  *len = 8;
  return 1;
}

static void failures_case(size_t chunksize, bool unordered) {
  mproc_pool *p = th_pool(2);
  counter_gen g = {.next = 0, .end = 100, .fail_at_end = -ENOSPC};
  mproc_imap_opts o = {.chunksize = chunksize, .unordered = unordered};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap_gen(p, triple_task, counter, &g, &o, &it), 0);
  int n = 0;
  bool seen[100] = {0};
  for (;;) {
    const void *res;
    size_t len;
    int rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER);
    if (rc == -ENOSPC)
      break;
    size_t i = mproc_imap_index(it);
    if (!unordered)
      cr_assert_eq(i, (size_t)n);
    cr_assert(i < 100 && !seen[i], "item %zu twice or out of range", i);
    seen[i] = true;
    if (i % 7 == 3) {
      cr_assert_eq(rc, MPROC_ETASK, "item %zu: %d", i, rc);
      char want[64];
      snprintf(want, sizeof want, "item %zu refused", i);
      cr_assert_str_eq(mproc_imap_error(it), want);
    } else {
      cr_assert_eq(rc, 0, "item %zu: %d", i, rc);
      cr_assert_eq(len, 8);
      uint64_t v;
      memcpy(&v, res, 8);
      cr_assert_eq(v, 3 * i);
      cr_assert_null(mproc_imap_error(it));
    }
    n++;
  }
  cr_expect_eq(n, 100);
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), MPROC_EOF);
  mproc_imap_free(it);
  mproc_pool_free(p);
}

Test(pool_imap, failures_at_position_and_generator_error) {
  th_scope s = th_begin();
  failures_case(1, false);
  failures_case(4, false);
  failures_case(3, true);
  th_end(s);
}

/* A worker killed mid-stream: that item (its whole chunk) is MPROC_ECRASHED, the rest go on. */
static void crash_case(size_t chunksize) {
  mproc_pool *p = th_pool(2);
  counter_gen g = {.next = 1000000, .end = 1000010};
  mproc_imap_opts o = {.chunksize = chunksize};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap_gen(p, triple_task, counter, &g, &o, &it), 0);
  int crashed = 0, ok = 0;
  for (size_t n = 0;; n++) {
    const void *res;
    size_t len;
    int rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER);
    if (rc == MPROC_EOF)
      break;
    size_t i = mproc_imap_index(it);
    cr_assert_eq(i, n);
    uint64_t v = 1000000 + i;
    bool same_chunk = (i / chunksize) == (3 / chunksize);
    if (same_chunk) {
      cr_assert_eq(rc, MPROC_ECRASHED, "item %zu: %d", i, rc);
      cr_assert_not_null(mproc_imap_error(it));
      crashed++;
    } else if (v % 7 == 3) {
      cr_assert_eq(rc, MPROC_ETASK);
    } else {
      cr_assert_eq(rc, 0, "item %zu: %d", i, rc);
      uint64_t r;
      memcpy(&r, res, 8);
      cr_assert_eq(r, 3 * v);
      ok++;
    }
  }
  cr_expect_eq((size_t)crashed, chunksize);
  mproc_imap_free(it);
  /* The pool replaced its worker and still works. */
  uint64_t x = 5, *r = NULL;
  size_t len = 0;
  cr_expect_eq(mproc_pool_apply(p, triple_task, &x, 8, (void **)&r, &len), 0);
  cr_expect_eq(*r, 15);
  free(r);
  mproc_pool_free(p);
}

Test(pool_imap, crash_mid_stream) {
  th_scope s = th_begin();
  crash_case(1);
  crash_case(2);
  th_end(s);
}

/* Peak resident memory in KiB. */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &v) == 1)
      break;
  if (f)
    fclose(f);
  return v;
}

static int noop_task(const void *arg, size_t len, mproc_result *res) {
  return mproc_result_set(res, arg, len < 8 ? len : 8);
}

/* A 10^8-item generator: pulled lazily (never more than buffersize ahead of next), and the
 * resident memory stays flat while a few million items go through. */
Test(pool_imap, huge_generator_bounded_memory) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  counter_gen g = {.next = 0, .end = 100000000};
  mproc_imap_opts o = {.chunksize = 512, .buffersize = 8192};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap_gen(p, noop_task, counter, &g, &o, &it), 0);
  cr_expect_leq(g.next, 8192);
  long rss_early = 0;
  const size_t total = 3000000;
  for (size_t i = 0; i < total; i++) {
    const void *res;
    size_t len;
    int rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER);
    if (rc != 0 || len != 8 || *(const uint64_t *)res != i)
      cr_assert_fail("item %zu: rc %d len %zu", i, rc, len);
    if (i + 1 + 8192 < g.next)
      cr_assert_fail("pulled %llu with %zu returned", (unsigned long long)g.next, i + 1);
    if (i == 200000)
      rss_early = rss_kib();
  }
  long rss_late = rss_kib();
#if !defined(__SANITIZE_ADDRESS__) && !MPROC_TEST_ASAN
  /* (ASan's quarantine keeps freed memory resident: checked in the normal build.) */
  cr_expect_lt(rss_late - rss_early, 8 * 1024, "RSS grew from %ld to %ld KiB", rss_early,
               rss_late);
#else
  (void)rss_early;
  (void)rss_late;
#endif
  cr_expect_lt(g.next, total + 8192 + 1);
  mproc_imap_free(it); /* cancels the ~8192 pending items */
  mproc_pool_free(p);
  th_end(s);
}

static int slow_task(const void *arg, size_t len, mproc_result *res) {
  usleep(2000);
  return mproc_result_set(res, arg, len);
}

/* Freeing early, mid-stream, with items running and queued: no leak, no hang, and the pool
 * goes on (later results are not confused with the cancelled ones). */
Test(pool_imap, early_free) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  for (int round = 0; round < 3; round++) {
    counter_gen g = {.next = 0, .end = 1000};
    mproc_imap_opts o = {.chunksize = (size_t)round + 1, .buffersize = 64,
                         .unordered = round == 1};
    mproc_imap *it = NULL;
    cr_assert_eq(mproc_pool_imap_gen(p, slow_task, counter, &g, &o, &it), 0);
    for (int i = 0; i < 5; i++)
      cr_assert_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), 0);
    mproc_imap_free(it);
  }
  mproc_imap *it = NULL;
  mproc_imap_opts o = {0};
  cr_assert_eq(mproc_pool_imap_gen(p, slow_task, counter, &(counter_gen){0, 0, 0, 0}, &o, &it),
               0);
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), MPROC_EOF);
  mproc_imap_free(it);
  uint64_t x = 4, *r = NULL;
  cr_expect_eq(mproc_pool_apply(p, triple_task, &x, 8, (void **)&r, NULL), 0);
  cr_expect_eq(*r, 12);
  free(r);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_imap, timeout_and_bad_input) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(1);
  mproc_imap *it = NULL;
  cr_expect_eq(mproc_pool_imap(NULL, noop_task, NULL, NULL, 0, NULL, &it), MPROC_EINVAL);
  cr_expect_null(it);
  cr_expect_eq(mproc_pool_imap(p, NULL, NULL, NULL, 0, NULL, &it), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_imap(p, noop_task, NULL, NULL, 3, NULL, &it), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_imap(p, noop_task, NULL, NULL, 0, NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_imap_gen(p, noop_task, NULL, NULL, NULL, &it), MPROC_EINVAL);
  cr_expect_eq(mproc_imap_next(NULL, NULL, NULL, 0), MPROC_EINVAL);
  cr_expect_eq(mproc_imap_index(NULL), SIZE_MAX);
  mproc_imap_free(NULL);

  uint64_t v = 1;
  const void *items[1] = {&v};
  size_t lens[1] = {8};
  cr_assert_eq(mproc_pool_imap(p, slow_task, items, lens, 1, NULL, &it), 0);
  cr_expect_eq(mproc_imap_index(it), SIZE_MAX);
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, 0), MPROC_ETIMEDOUT);
  pid_t child = fork();
  if (child == 0) /* not the owner: refused, and nothing is taken from the owner */
    _exit(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER) == MPROC_ESTATE ? 0 : 1);
  int status = -1;
  cr_assert_eq(waitpid(child, &status, 0), child);
  cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), 0);
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), MPROC_EOF);
  mproc_imap_free(it);

  cr_assert_eq(mproc_pool_close(p), 0);
  cr_expect_eq(mproc_pool_imap(p, slow_task, items, lens, 1, NULL, &it), MPROC_ECLOSED);
  cr_expect_null(it);
  cr_expect_eq(mproc_pool_join(p), 0);
  mproc_pool_free(p);
  th_end(s);
}

/* The pool terminated mid-iteration: the items held fail with MPROC_ECANCELLED at their
 * positions, the next one the pool refuses with MPROC_ECLOSED, then MPROC_EOF. */
Test(pool_imap, pool_terminated_mid_stream) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  counter_gen g = {.next = 0, .end = 1000};
  mproc_imap_opts o = {.buffersize = 16};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap_gen(p, slow_task, counter, &g, &o, &it), 0);
  cr_assert_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_pool_terminate(p), 0);
  int rc, n = 1;
  while ((rc = mproc_imap_next(it, NULL, NULL, MPROC_FOREVER)) != MPROC_ECLOSED) {
    cr_assert(rc == MPROC_ECANCELLED || rc == 0, "rc %d", rc);
    cr_assert_eq(mproc_imap_index(it), (size_t)n);
    n++;
  }
  cr_expect_leq(n, 1 + 16 + 16);
  cr_expect_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), MPROC_EOF);
  mproc_imap_free(it);
  mproc_pool_free(p);
  th_end(s);
}

/* Python's idiom: imap, close, consume, join. An iterator made before close goes on
 * feeding its input; one still unconsumed at join is cut off there (its items not yet
 * submitted fail with MPROC_ECLOSED), so join never waits for a reader. */
Test(pool_imap, close_then_consume_then_join) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  counter_gen g = {.next = 0, .end = 500};
  mproc_imap_opts o = {.buffersize = 8, .chunksize = 2};
  mproc_imap *it = NULL;
  cr_assert_eq(mproc_pool_imap_gen(p, triple_task, counter, &g, &o, &it), 0);
  cr_assert_eq(mproc_pool_close(p), 0);
  int rc;
  size_t n = 0;
  while ((rc = mproc_imap_next(it, NULL, NULL, MPROC_FOREVER)) != MPROC_EOF) {
    cr_assert_eq(rc, n % 7 == 3 ? MPROC_ETASK : 0, "item %zu: %d", n, rc);
    n++;
  }
  cr_expect_eq(n, 500);
  mproc_imap_free(it);
  cr_expect_eq(mproc_pool_join(p), 0);
  mproc_pool_free(p);

  p = th_pool(2);
  g = (counter_gen){.next = 0, .end = 500};
  cr_assert_eq(mproc_pool_imap_gen(p, triple_task, counter, &g, &o, &it), 0);
  cr_assert_eq(mproc_pool_close(p), 0);
  cr_assert_eq(mproc_pool_join(p), 0); /* cuts the iterator off */
  n = 0;
  size_t closed = 0;
  while ((rc = mproc_imap_next(it, NULL, NULL, MPROC_FOREVER)) != MPROC_EOF) {
    cr_assert_lt(n, 500);
    closed += rc == MPROC_ECLOSED;
    n++;
  }
  cr_expect_leq(n, 8 + 2);
  cr_expect_leq(closed, 2);
  mproc_imap_free(it);
  mproc_pool_free(p);
  th_end(s);
}

/* Odd-length results and failure messages mixed in one chunk: every result handed out in
 * place is aligned as malloc's memory is, so the caller may read a struct from it. */
static int odd_task(const void *arg, size_t len, mproc_result *res) {
  uint64_t v;
  memcpy(&v, arg, len < 8 ? len : 8);
  if (v % 3 == 1)
    return mproc_result_fail(res, "odd failure %llu", (unsigned long long)v);
  char *out = mproc_result_alloc(res, (size_t)(v % 13) + 8);
  if (!out)
    return 1;
  memset(out, 0, (size_t)(v % 13) + 8);
  memcpy(out, &v, 8);
  return 0;
}

Test(imap, results_are_aligned) {
  th_scope sc = th_begin();
  mproc_pool *p = th_pool(2);
  enum { N = 200 };
  uint64_t vals[N];
  const void *items[N];
  size_t lens[N];
  for (size_t i = 0; i < N; i++) {
    vals[i] = i;
    items[i] = &vals[i];
    lens[i] = 8;
  }
  size_t chunks[] = {1, 7};
  for (size_t k = 0; k < 2; k++) {
    mproc_imap *it = NULL;
    mproc_imap_opts o = {.chunksize = chunks[k]};
    cr_assert_eq(mproc_pool_imap(p, odd_task, items, lens, N, &o, &it), 0);
    size_t ok = 0, failed = 0;
    for (size_t i = 0; i < N; i++) {
      const void *res = NULL;
      size_t len = 0;
      int rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER);
      if (i % 3 == 1) {
        cr_assert_eq(rc, MPROC_ETASK);
        failed++;
        continue;
      }
      cr_assert_eq(rc, 0);
      cr_assert_eq((uintptr_t)res % _Alignof(max_align_t), 0, "item %zu at %p", i, res);
      cr_assert_eq(len, i % 13 + 8);
      cr_assert_eq(*(const uint64_t *)res, i);
      ok++;
    }
    cr_assert_eq(mproc_imap_next(it, NULL, NULL, MPROC_FOREVER), MPROC_EOF);
    cr_assert_eq(ok + failed, N);
    mproc_imap_free(it);
  }
  mproc_pool_free(p);
  th_end(sc);
}
