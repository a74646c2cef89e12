/* Pool and AsyncResult: exact results of map/apply, lifecycles, threads, leaks. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* ---- map ---- */

static int square32(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int32_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

static int square64(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

Test(pool, map_n0_and_n1) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  cr_expect_eq(mproc_pool_map(p, square64, NULL, 0, 8, NULL, 8, NULL), 0);
  int64_t in = -7, out = 0;
  cr_expect_eq(mproc_pool_map(p, square64, &in, 1, 8, &out, 8, NULL), 0);
  cr_expect_eq(out, 49);
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_map_async(p, square64, NULL, 0, 8, NULL, 8, NULL, &a), 0);
  cr_expect(mproc_async_ready(a));
  cr_expect_eq(mproc_async_get(a, NULL, NULL, 0), 0);
  mproc_async_free(a);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool, map_ten_million) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  size_t n = 10 * 1000 * 1000;
  int32_t *in = malloc(n * sizeof *in);
  int64_t *out = malloc(n * sizeof *out);
  cr_assert(in && out);
  for (size_t i = 0; i < n; i++)
    in[i] = (int32_t)(i % 100003) - 50000;
  memset(out, 0xff, n * sizeof *out);
  cr_assert_eq(mproc_pool_map(p, square32, in, n, sizeof *in, out, sizeof *out, NULL), 0);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    bad += out[i] != (int64_t)in[i] * in[i];
  cr_expect_eq(bad, 0, "%zu wrong elements", bad);
  free(in);
  free(out);
  mproc_pool_free(p);
  th_end(s);
}

/* args: the element size. */
static int xor_elem(const void *in, void *out, const void *args) {
  size_t len = *(const size_t *)args;
  const unsigned char *a = in;
  unsigned char *b = out;
  for (size_t i = 0; i < len; i++)
    b[i] = (unsigned char)(a[i] ^ 0x5a);
  return 0;
}

/* The automatic chunks (head chunks, then quarter-size ones for the last workers * cs
 * elements) cover every element once, for every n around their boundaries. */
static int add_index(const void *in, void *out, const void *args) {
  (void)args;
  *(int64_t *)out = *(const int64_t *)in + 1;
  return 0;
}

static int fail_at(const void *in, void *out, const void *args) {
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v;
  return v == *(const int64_t *)args ? 7 : 0;
}

Test(pool, map_auto_chunks_cover_every_element) {
  th_scope s = th_begin();
  for (int w = 2; w <= 3; w++) {
    mproc_pool *p = th_pool(w);
    size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49,
                      63, 64, 65, 99, 100, 101, 1000, 1001, 4095, 4096, 4097, 262143, 262145};
    size_t most = 262145;
    int64_t *in = malloc(most * 8), *out = malloc((most + 1) * 8);
    cr_assert(in && out);
    for (size_t i = 0; i < most; i++)
      in[i] = (int64_t)i;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      size_t n = sizes[k];
      memset(out, 0xff, (most + 1) * 8);
      cr_assert_eq(mproc_pool_map(p, add_index, in, n, 8, out, 8, NULL), 0);
      size_t bad = 0;
      for (size_t i = 0; i < n; i++)
        bad += out[i] != (int64_t)i + 1;
      cr_expect_eq(bad, 0, "n %zu, %d workers: %zu wrong", n, w, bad);
      cr_expect_eq(out[n], -1, "n %zu: written past the end", n);
      /* The failing element's index comes back exactly, in a head or a tail chunk. */
      int64_t at = (int64_t)(n * 7 / 8);
      mproc_map_opts mo = {.args = &at, .args_len = sizeof at};
      mproc_async *a = NULL;
      cr_assert_eq(mproc_pool_map_async(p, fail_at, in, n, 8, out, 8, &mo, &a), 0);
      cr_expect_eq(mproc_async_get(a, NULL, NULL, MPROC_FOREVER), MPROC_ETASK);
      cr_expect_eq(mproc_async_fail_index(a), (size_t)at, "n %zu", n);
      mproc_async_free(a);
    }
    free(in);
    free(out);
    mproc_pool_free(p);
  }
  th_end(s);
}

/* ---- the map stage (big chunks cross through a shared block, not the rings) ---- */

static void stage_usage(mproc_pool *p, size_t *live, size_t *retired, size_t *committed) {
  mproc__pool_stage_usage(p, live, retired, committed);
}

static int64_t *iota64(size_t n) {
  int64_t *v = malloc(n * sizeof *v);
  cr_assert_not_null(v);
  for (size_t i = 0; i < n; i++)
    v[i] = (int64_t)i - (int64_t)(n / 2);
  return v;
}

static void expect_squares(const int64_t *in, const int64_t *out, size_t n) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    bad += out[i] != in[i] * in[i];
  cr_expect_eq(bad, 0, "%zu of %zu results wrong", bad, n);
}

Test(pool, map_stage_gives_memory_back) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  /* map_async puts every chunk at once: 64 MiB in and 64 MiB out staged together. */
  size_t n = (size_t)8 << 20, live, retired, committed;
  int64_t *in = iota64(n), *out = calloc(n, sizeof *out);
  cr_assert_not_null(out);
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_map_async(p, square64, in, n, 8, out, 8, NULL, &a), 0);
  stage_usage(p, &live, &retired, &committed);
  cr_expect_gt(committed, (size_t)64 << 20, "the chunks were not staged");
  cr_assert_eq(mproc_async_get(a, NULL, NULL, MPROC_FOREVER), 0);
  mproc_async_free(a);
  expect_squares(in, out, n);
  stage_usage(p, &live, &retired, &committed);
  cr_expect_eq(live, 0);
  cr_expect_eq(retired, 0);
  cr_expect_leq(committed, (size_t)32 << 20, "the stage kept %zu bytes", committed);
  /* The windowed map stays within what is kept, and reuses it. */
  memset(out, 0, n * sizeof *out);
  cr_assert_eq(mproc_pool_map(p, square64, in, n, 8, out, 8, NULL), 0);
  expect_squares(in, out, n);
  stage_usage(p, &live, &retired, &committed);
  cr_expect_eq(live, 0);
  cr_expect_leq(committed, (size_t)32 << 20);
  free(in);
  free(out);
  mproc_pool_free(p);
  th_end(s);
}

static int slow_square64(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  if ((v & 4095) == 0)
    sleep_ms(1);
  *(int64_t *)out = v * v;
  return 0;
}

static int nothing(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  return 0;
}

Test(pool, map_stage_abandoned_chunks) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  size_t n = (size_t)1 << 20, live, retired, committed;
  int64_t *in = iota64(n), *out = calloc(n, sizeof *out), *junk = calloc(n, sizeof *junk);
  cr_assert(out && junk);
  mproc_map_opts mo = {.chunksize = 16384}; /* 128 KiB in, 128 KiB out: staged */
  for (int round = 0; round < 3; round++) {
    /* Freed while its chunks run: their blocks are set aside, since workers still write
     * them, and nothing of them reaches junk after the free. */
    mproc_async *a = NULL;
    cr_assert_eq(mproc_pool_map_async(p, slow_square64, in, n, 8, junk, 8, &mo, &a), 0);
    mproc_async_free(a);
    memset(junk, 0x5a, n * sizeof *junk);
    memset(out, 0, n * sizeof *out);
    cr_assert_eq(mproc_pool_map(p, square64, in, n, 8, out, 8, &mo), 0);
    expect_squares(in, out, n);
    size_t untouched = 0;
    for (size_t i = 0; i < n; i++)
      untouched += junk[i] == 0x5a5a5a5a5a5a5a5a;
    cr_expect_eq(untouched, n, "a freed map wrote into its out");
    /* Each abandoned chunk's block is freed when its result comes back (results are
     * collected inside mproc calls: keep making some). */
    stage_usage(p, &live, &retired, &committed);
    for (int i = 0; i < 5000 && live; i++) {
      cr_assert_eq(mproc_pool_apply(p, nothing, NULL, 0, NULL, NULL), 0);
      sleep_ms(1);
      stage_usage(p, &live, &retired, &committed);
    }
    cr_expect_eq(live, 0, "round %d", round);
    cr_expect_eq(retired, 0, "round %d", round);
  }
  free(in);
  free(out);
  free(junk);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool, map_stage_terminate_midway) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  size_t n = (size_t)1 << 20;
  int64_t *in = iota64(n), *out = calloc(n, sizeof *out);
  cr_assert_not_null(out);
  mproc_map_opts mo = {.chunksize = 16384}; /* staged */
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_map_async(p, slow_square64, in, n, 8, out, 8, &mo, &a), 0);
  sleep_ms(5);
  cr_expect_eq(mproc_pool_terminate(p), 0);
  cr_expect_eq(mproc_async_get(a, NULL, NULL, MPROC_FOREVER), MPROC_ECANCELLED);
  cr_expect_eq(mproc_pool_map(p, square64, in, n, 8, out, 8, NULL), MPROC_ECLOSED);
  mproc_async_free(a);
  mproc_pool_free(p);
  free(in);
  free(out);
  th_end(s);
}

Test(pool, map_element_sizes) {
  th_scope s = th_begin();
  /* The last two are bigger than a chunk may be: one element a chunk, through the stage. */
  const size_t sizes[] = {1, 3, 8, 64, 1000, 4096, (1u << 20) + 1, (3u << 20) + 7};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    size_t elem = sizes[k];
    mproc_pool *p = th_pool(2);
    size_t n = elem > 65536 ? 5 : 301;
    unsigned char *in = malloc(n * elem), *out = calloc(n, elem);
    for (size_t i = 0; i < n * elem; i++)
      in[i] = (unsigned char)(i * 131 + k);
    mproc_map_opts mo = {.args = &elem, .args_len = sizeof elem};
    cr_assert_eq(mproc_pool_map(p, xor_elem, in, n, elem, out, elem, &mo), 0);
    size_t bad = 0;
    for (size_t i = 0; i < n * elem; i++)
      bad += out[i] != (unsigned char)(in[i] ^ 0x5a);
    cr_expect_eq(bad, 0, "element size %zu: %zu wrong bytes", elem, bad);
    free(in);
    free(out);
    mproc_pool_free(p);
  }
  th_end(s);
}

typedef struct star_in {
  int32_t a;
  double b;
  char tag[12];
} star_in;

typedef struct star_out {
  double sum;
  int32_t len;
} star_out;

static int starfn(const void *in, void *out, const void *args) {
  (void)args;
  const star_in *x = in;
  star_out *y = out;
  y->sum = x->a + x->b;
  y->len = (int32_t)strlen(x->tag);
  return 0;
}

Test(pool, starmap_structs) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  size_t n = 1000;
  star_in *in = calloc(n, sizeof *in);
  star_out *out = calloc(n, sizeof *out);
  for (size_t i = 0; i < n; i++) {
    in[i].a = (int32_t)i;
    in[i].b = 0.5 * (double)i;
    snprintf(in[i].tag, sizeof in[i].tag, "t%zu", i);
  }
  cr_assert_eq(mproc_pool_map(p, starfn, in, n, sizeof *in, out, sizeof *out, NULL), 0);
  for (size_t i = 0; i < n; i++) {
    cr_expect_eq(out[i].sum, 1.5 * (double)i);
    cr_expect_eq(out[i].len, (int32_t)strlen(in[i].tag));
  }
  free(in);
  free(out);
  mproc_pool_free(p);
  th_end(s);
}

typedef struct lin_args {
  int64_t mul, add;
} lin_args;

static int linear(const void *in, void *out, const void *args) {
  const lin_args *a = args;
  *(int64_t *)out = *(const int64_t *)in * a->mul + a->add;
  return 0;
}

Test(pool, map_chunksizes_and_args) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  size_t n = 1001;
  int64_t *in = malloc(n * 8), *out = malloc(n * 8);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i - 300;
  const size_t chunks[] = {1, 7, 0};
  for (size_t k = 0; k < 3; k++) {
    lin_args la = {.mul = 3 + (int64_t)k, .add = -11};
    mproc_map_opts mo = {.chunksize = chunks[k], .args = &la, .args_len = sizeof la};
    memset(out, 0, n * 8);
    cr_assert_eq(mproc_pool_map(p, linear, in, n, 8, out, 8, &mo), 0);
    la.mul = 1000; /* args were copied: changing them now must not matter */
    for (size_t i = 0; i < n; i++)
      cr_expect_eq(out[i], in[i] * (3 + (int64_t)k) - 11, "chunksize %zu, i %zu", chunks[k], i);
  }
  free(in);
  free(out);
  mproc_pool_free(p);
  th_end(s);
}

static int fail_at_137(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  if (v == 137 || v == 500)
    return 9;
  *(int64_t *)out = v + 1;
  return 0;
}

Test(pool, map_element_failure) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  size_t n = 1000;
  int64_t *in = malloc(n * 8), *out = calloc(n, 8);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i;
  mproc_map_opts mo = {.chunksize = 10};
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_map_async(p, fail_at_137, in, n, 8, out, 8, &mo, &a), 0);
  cr_expect_eq(mproc_async_get(a, NULL, NULL, MPROC_FOREVER), MPROC_ETASK);
  cr_expect_eq(mproc_async_fail_index(a), 137);
  cr_expect(!mproc_async_successful(a));
  const char *e = mproc_async_error(a);
  cr_assert(e);
  cr_expect(strstr(e, "137") != NULL, "message: %s", e);
  for (size_t i = 0; i < n; i++)
    if (i != 137 && i != 500)
      cr_expect_eq(out[i], (int64_t)i + 1);
  mproc_async_free(a);
  cr_expect_eq(mproc_pool_map(p, fail_at_137, in, n, 8, out, 8, NULL), MPROC_ETASK);
  free(in);
  free(out);
  mproc_pool_free(p);
  th_end(s);
}

/* ---- apply ---- */

static int make_bytes(const void *arg, size_t len, mproc_result *res) {
  if (len != sizeof(size_t)) /* runs in a worker: report through the result */
    return mproc_result_fail(res, "argument of %zu bytes", len);
  size_t n = *(const size_t *)arg;
  unsigned char *b = mproc_result_alloc(res, n);
  if (!b)
    return mproc_result_fail(res, "no memory for %zu bytes", n);
  for (size_t i = 0; i < n; i++)
    b[i] = (unsigned char)(i * 7 + n);
  return 0;
}

static bool bytes_ok(const unsigned char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (b[i] != (unsigned char)(i * 7 + n))
      return false;
  return true;
}

Test(pool, apply_result_sizes) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  const size_t sizes[] = {0, 1, 100, 4096, 65537, 1 << 20, 16 << 20};
  const size_t ns = sizeof sizes / sizeof *sizes;
  for (size_t k = 0; k < ns; k++) {
    void *r = NULL;
    size_t len = 1234;
    cr_assert_eq(mproc_pool_apply(p, make_bytes, &sizes[k], sizeof(size_t), &r, &len), 0);
    cr_assert(r != NULL);
    cr_expect_eq(len, sizes[k]);
    cr_expect(bytes_ok(r, len), "size %zu", sizes[k]);
    free(r);
  }
  mproc_async *as[7];
  for (size_t k = 0; k < ns; k++)
    cr_assert_eq(mproc_pool_apply_async(p, make_bytes, &sizes[k], sizeof(size_t), &as[k]), 0);
  for (size_t k = ns; k-- > 0;) {
    for (int twice = 0; twice < 2; twice++) {
      void *r = NULL;
      size_t len = 0;
      cr_assert_eq(mproc_async_get(as[k], &r, &len, MPROC_FOREVER), 0);
      cr_expect_eq(len, sizes[k]);
      cr_expect(bytes_ok(r, len));
      free(r);
    }
    cr_expect_eq(mproc_async_get(as[k], NULL, NULL, 0), 0);
    cr_expect(mproc_async_successful(as[k]));
    cr_expect_null(mproc_async_error(as[k]));
    mproc_async_free(as[k]);
  }
  mproc_pool_free(p);
  th_end(s);
}

static int echo(const void *arg, size_t len, mproc_result *res) {
  return mproc_result_set(res, arg, len);
}

static int no_result(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  return 0;
}

static int fail_msg(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int k = *(const int *)arg;
  if (k == 0)
    return mproc_result_fail(res, "bad input %d", 42);
  if (k == 1)
    return 7; /* no message */
  char *big = malloc(10000);
  memset(big, 'x', 9999);
  big[9999] = 0;
  memcpy(big, "START", 5);
  int rc = mproc_result_fail(res, "%s", big);
  free(big);
  return rc;
}

Test(pool, apply_messages_and_empty_results) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  void *r = (void *)1;
  size_t len = 5;
  cr_expect_eq(mproc_pool_apply(p, no_result, NULL, 0, &r, &len), 0);
  cr_expect(r != NULL);
  cr_expect_eq(len, 0);
  free(r);
  cr_expect_eq(mproc_pool_apply(p, echo, "hello", 6, &r, NULL), 0);
  cr_expect_str_eq(r, "hello");
  free(r);
  cr_expect_eq(mproc_pool_apply(p, echo, "x", 1, NULL, NULL), 0);

  mproc_async *a[3];
  int ks[3] = {0, 1, 2};
  for (int i = 0; i < 3; i++)
    cr_assert_eq(mproc_pool_apply_async(p, fail_msg, &ks[i], sizeof(int), &a[i]), 0);
  r = (void *)1;
  cr_expect_eq(mproc_async_get(a[0], &r, NULL, MPROC_FOREVER), MPROC_ETASK);
  cr_expect_null(r);
  cr_expect_str_eq(mproc_async_error(a[0]), "bad input 42");
  cr_expect_eq(mproc_async_get(a[1], NULL, NULL, MPROC_FOREVER), MPROC_ETASK);
  cr_expect(mproc_async_error(a[1]) && strstr(mproc_async_error(a[1]), "7"));
  cr_expect_eq(mproc_async_get(a[2], NULL, NULL, MPROC_FOREVER), MPROC_ETASK);
  const char *e = mproc_async_error(a[2]);
  cr_assert(e);
  cr_expect(strlen(e) >= 4096);
  cr_expect_eq(strncmp(e, "START", 5), 0);
  for (int i = 0; i < 3; i++)
    mproc_async_free(a[i]);
  cr_expect_eq(mproc_pool_apply(p, fail_msg, &ks[0], sizeof(int), &r, &len), MPROC_ETASK);
  mproc_pool_free(p);
  th_end(s);
}

static int sleepy(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  sleep_ms(*(const int *)arg);
  pid_t me = getpid();
  return mproc_result_set(res, &me, sizeof me);
}

Test(pool, get_with_timeout) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  int ms = 300;
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, sleepy, &ms, sizeof ms, &a), 0);
  cr_expect_eq(mproc_async_get(a, NULL, NULL, 0.01), MPROC_ETIMEDOUT);
  cr_expect_eq(mproc_async_wait(a, 0), MPROC_ETIMEDOUT);
  cr_expect(!mproc_async_ready(a));
  cr_expect_null(mproc_async_error(a));
  cr_expect_eq(mproc_async_wait(a, MPROC_FOREVER), 0);
  cr_expect(mproc_async_ready(a));
  pid_t pid = 0;
  void *r;
  cr_expect_eq(mproc_async_get(a, &r, NULL, 0), 0);
  memcpy(&pid, r, sizeof pid);
  free(r);
  cr_expect_neq(pid, getpid());
  mproc_async_free(a);
  mproc_pool_free(p);
  th_end(s);
}

static int pid_task(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  pid_t me = getpid();
  return mproc_result_set(res, &me, sizeof me);
}

Test(pool, maxtasksperchild) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 2, .maxtasksperchild = 1};
  cr_assert_eq(mproc_pool_new(&p, &o), 0);
  pid_t pids[10];
  mproc_async *a[10];
  for (int i = 0; i < 10; i++)
    cr_assert_eq(mproc_pool_apply_async(p, pid_task, NULL, 0, &a[i]), 0);
  for (int i = 0; i < 10; i++) {
    void *r;
    cr_assert_eq(mproc_async_get(a[i], &r, NULL, MPROC_FOREVER), 0);
    memcpy(&pids[i], r, sizeof(pid_t));
    free(r);
    mproc_async_free(a[i]);
  }
  for (int i = 0; i < 10; i++)
    for (int j = 0; j < i; j++)
      cr_expect_neq(pids[i], pids[j], "tasks %d and %d ran in the same worker", i, j);
  mproc_pool_free(p);
  th_end(s);
}

static int g_init_value; /* set by the initializer, in the workers only */

static int init_fn(const void *initargs, size_t len) {
  if (len != sizeof(int))
    return 1;
  g_init_value = *(const int *)initargs;
  return 0;
}

static int read_init(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  return mproc_result_set(res, &g_init_value, sizeof g_init_value);
}

Test(pool, initializer) {
  th_scope s = th_begin();
  int v = 4242;
  mproc_pool_opts o = {.processes = 2, .initializer = init_fn, .initargs = &v,
                       .initargs_len = sizeof v, .maxtasksperchild = 2};
  mproc_pool *p = NULL;
  cr_assert_eq(mproc_pool_new(&p, &o), 0);
  v = 0; /* copied */
  for (int i = 0; i < 8; i++) { /* replacements run it too */
    void *r;
    cr_assert_eq(mproc_pool_apply(p, read_init, NULL, 0, &r, NULL), 0);
    cr_expect_eq(*(int *)r, 4242);
    free(r);
  }
  cr_expect_eq(g_init_value, 0);
  mproc_pool_free(p);
  th_end(s);
}

static int add_one(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int v = *(const int *)arg + 1;
  sleep_ms(5);
  return mproc_result_set(res, &v, sizeof v);
}

Test(pool, close_and_join) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  cr_expect_eq(mproc_pool_join(p), MPROC_ESTATE);
  mproc_async *a[20];
  for (int i = 0; i < 20; i++)
    cr_assert_eq(mproc_pool_apply_async(p, add_one, &i, sizeof i, &a[i]), 0);
  cr_expect_eq(mproc_pool_close(p), 0);
  cr_expect_eq(mproc_pool_close(p), 0);
  mproc_async *late = NULL;
  cr_expect_eq(mproc_pool_apply_async(p, add_one, &(int){1}, sizeof(int), &late), MPROC_ECLOSED);
  cr_expect_null(late);
  int64_t x = 1, y;
  cr_expect_eq(mproc_pool_map(p, square64, &x, 1, 8, &y, 8, NULL), MPROC_ECLOSED);
  cr_expect_eq(mproc_pool_join(p), 0);
  cr_expect(!th_pid_alive(mproc__pool_supervisor_pid(p)));
  for (int i = 0; i < 20; i++) {
    cr_expect(mproc_async_ready(a[i]));
    void *r;
    cr_assert_eq(mproc_async_get(a[i], &r, NULL, 0), 0);
    cr_expect_eq(*(int *)r, i + 1);
    free(r);
    mproc_async_free(a[i]);
  }
  cr_expect_eq(mproc_pool_join(p), 0);
  cr_expect_eq(mproc_pool_terminate(p), 0);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool, terminate) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  pid_t w[2];
  cr_assert_eq(mproc__pool_worker_pids(p, w, 2), 2);
  int quick = 0, slow = 20000;
  void *r;
  cr_assert_eq(mproc_pool_apply(p, sleepy, &quick, sizeof quick, &r, NULL), 0);
  free(r);
  mproc_async *a[4];
  for (int i = 0; i < 4; i++)
    cr_assert_eq(mproc_pool_apply_async(p, sleepy, &slow, sizeof slow, &a[i]), 0);
  cr_expect_eq(mproc_pool_terminate(p), 0);
  cr_expect(!th_pid_alive(w[0]) && !th_pid_alive(w[1]), "workers still alive");
  for (int i = 0; i < 4; i++) {
    cr_expect_eq(mproc_async_get(a[i], NULL, NULL, 0), MPROC_ECANCELLED);
    cr_expect(mproc_async_error(a[i]) != NULL);
    mproc_async_free(a[i]);
  }
  mproc_async *late = NULL;
  cr_expect_eq(mproc_pool_apply_async(p, sleepy, &quick, sizeof quick, &late), MPROC_ECLOSED);
  cr_expect_eq(mproc_pool_join(p), 0);
  cr_expect_eq(mproc_pool_close(p), 0);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool, async_outlives_pool) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  int quick = 0, slow = 20000;
  mproc_async *done = NULL, *pending = NULL, *dropped = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, sleepy, &quick, sizeof quick, &done), 0);
  cr_assert_eq(mproc_async_wait(done, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_pool_apply_async(p, sleepy, &slow, sizeof slow, &pending), 0);
  cr_assert_eq(mproc_pool_apply_async(p, sleepy, &quick, sizeof quick, &dropped), 0);
  mproc_async_free(dropped); /* freed before ready: its result is discarded */
  mproc_pool_free(p);
  void *r = NULL;
  size_t len = 0;
  cr_expect_eq(mproc_async_get(done, &r, &len, 0), 0);
  cr_expect_eq(len, sizeof(pid_t));
  free(r);
  cr_expect_eq(mproc_async_get(pending, &r, &len, 0), MPROC_ECANCELLED);
  cr_expect(mproc_async_ready(pending));
  mproc_async_free(done);
  mproc_async_free(pending);
  th_end(s);
}

/* ---- threads ---- */

static int times3(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int64_t v = *(const int64_t *)arg * 3;
  return mproc_result_set(res, &v, sizeof v);
}

typedef struct thr {
  mproc_pool *p;
  int64_t base;
  int errors;
} thr;

static void *thread_body(void *arg) {
  thr *t = arg;
  enum { N = 300 };
  mproc_async *a[N];
  for (int i = 0; i < N; i++) {
    int64_t v = t->base + i;
    if (mproc_pool_apply_async(t->p, times3, &v, sizeof v, &a[i]) != 0)
      t->errors++;
  }
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    if (mproc_async_get(a[i], &r, NULL, MPROC_FOREVER) != 0 ||
        *(int64_t *)r != (t->base + i) * 3)
      t->errors++;
    free(r);
    mproc_async_free(a[i]);
  }
  int64_t in[500], out[500];
  for (int i = 0; i < 500; i++)
    in[i] = t->base - i;
  mproc_map_opts mo = {.chunksize = 13};
  if (mproc_pool_map(t->p, square64, in, 500, 8, out, 8, &mo) != 0)
    t->errors++;
  for (int i = 0; i < 500; i++)
    if (out[i] != in[i] * in[i])
      t->errors++;
  return NULL;
}

Test(pool, two_threads_share_a_pool) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  thr t[2] = {{p, 1000000, 0}, {p, -5000000, 0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, thread_body, &t[i]);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  cr_expect_eq(t[0].errors + t[1].errors, 0);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool, default_processes_and_worker_count) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  cr_assert_eq(mproc_pool_new(&p, NULL), 0);
  cr_expect_eq(mproc__pool_worker_pids(p, NULL, 0), mproc_cpu_count());
  void *r;
  cr_expect_eq(mproc_pool_apply(p, pid_task, NULL, 0, &r, NULL), 0);
  free(r);
  mproc_pool_free(p);
  th_end(s);
}

/* ---- big maps go a window of chunks at a time ---- */

#define MIB (1u << 20)

/* Shared with the workers (helpers.h: th_named_*). */
static _Atomic int *started(void) { return th_named_buf; }

static int mib_plus_one(const void *in, void *out, const void *args) {
  (void)args;
  const unsigned char *a = in;
  unsigned char *b = out;
  for (size_t i = 0; i < MIB; i += 4096)
    b[i] = (unsigned char)(a[i] + 1);
  atomic_fetch_add(started(), 1);
  sleep_ms(1);
  return 0;
}

typedef struct big_map {
  mproc_pool *p;
  unsigned char *in, *out;
  size_t n;
  int rc;
} big_map;

static void *big_map_thread(void *arg) {
  big_map *m = arg;
  mproc_map_opts mo = {.chunksize = 1};
  m->rc = mproc_pool_map(m->p, mib_plus_one, m->in, m->n, MIB, m->out, MIB, &mo);
  return NULL;
}

Test(pool, windowed_map_and_close_while_it_runs) {
  th_scope s = th_begin();
  th_named_new(4096);
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 2, .initializer = th_named_attach,
                       .initargs = th_named_name, .initargs_len = strlen(th_named_name) + 1};
  cr_assert_eq(mproc_pool_new(&p, &o), 0);
  big_map m = {p, NULL, NULL, 80, -1};
  m.in = malloc(m.n * MIB);
  m.out = calloc(m.n, MIB);
  for (size_t i = 0; i < m.n * MIB; i += 4096)
    m.in[i] = (unsigned char)(i / 4096);
  pthread_t t;
  pthread_create(&t, NULL, big_map_thread, &m);
  while (atomic_load(started()) < 3)
    sleep_ms(1);
  cr_expect_eq(mproc_pool_close(p), 0); /* the map was submitted before: it still completes */
  pthread_join(t, NULL);
  cr_expect_eq(m.rc, 0);
  size_t bad = 0;
  for (size_t i = 0; i < m.n * MIB; i += 4096)
    bad += m.out[i] != (unsigned char)(m.in[i] + 1);
  cr_expect_eq(bad, 0);
  cr_expect_eq(mproc_pool_join(p), 0);
  free(m.in);
  free(m.out);
  mproc_pool_free(p);
  th_named_free();
  th_end(s);
}

/* ---- data already in shared memory crosses by address ---- */

/* The worker marks the input element it was given and reports what the output element held
 * before it wrote: the caller sees the marks, and the worker the caller's fill, only when
 * both crossed by address. */
typedef struct zc_in {
  int64_t v;
  int64_t touched;
} zc_in;

#define ZC_FILL INT64_C(0x5a5a5a5a5a5a5a5a)

static int zc_square(const void *in, void *out, const void *args) {
  (void)args;
  zc_in *x = (zc_in *)in; /* shared with the caller when zero-copy: the mark shows there */
  x->touched = 1;
  int64_t *y = out;
  int rc = y[1] == ZC_FILL ? 0 : 2;
  y[0] = x->v * x->v;
  y[1] = rc;
  return 0;
}

static void zc_run(mproc_pool *p, mproc_array *ai, mproc_array *ao, size_t n, bool shared) {
  zc_in *in = mproc_array_data(ai);
  int64_t *out = mproc_array_data(ao);
  for (size_t i = 0; i < n; i++) {
    in[i] = (zc_in){(int64_t)i - 1000, 0};
    out[2 * i] = 0;
    out[2 * i + 1] = ZC_FILL;
  }
  cr_expect_eq(mproc_pool_map(p, zc_square, in, n, sizeof *in, out, 16, NULL), 0);
  size_t bad = 0, marked = 0, saw_fill = 0;
  for (size_t i = 0; i < n; i++) {
    bad += out[2 * i] != in[i].v * in[i].v;
    marked += in[i].touched == 1;
    saw_fill += out[2 * i + 1] == 0;
  }
  cr_expect_eq(bad, 0);
  cr_expect_eq(marked, shared ? n : 0, "%zu of %zu inputs crossed by address", marked, n);
  cr_expect_eq(saw_fill, shared ? n : 0, "%zu of %zu outputs crossed by address", saw_fill, n);
}

Test(pool, shared_arrays_cross_without_copies) {
  th_scope s = th_begin();
  size_t n = 1 << 20;
  mproc_array *ai = NULL, *ao = NULL, *late_i = NULL, *late_o = NULL;
  cr_assert_eq(mproc_array_new(&ai, 16, n, NULL, false), 0);
  cr_assert_eq(mproc_array_new(&ao, 16, n, NULL, false), 0);
  mproc_pool *p = th_pool(2);
  /* Only forked workers have the caller's mappings; others get copies, as exact. */
  zc_run(p, ai, ao, n, mproc_get_start_method() == MPROC_START_FORK);
  /* Made after the workers: they do not have it, so the data is copied. */
  cr_assert_eq(mproc_array_new(&late_i, 16, n, NULL, false), 0);
  cr_assert_eq(mproc_array_new(&late_o, 16, n, NULL, false), 0);
  zc_run(p, late_i, late_o, n, false);
  mproc_pool_free(p);
  mproc_array_free(ai);
  mproc_array_free(ao);
  mproc_array_free(late_i);
  mproc_array_free(late_o);
  th_end(s);
}
