/*
 * The Pool over MPI, run under mpirun -n 2 and -n 3 (tests/mpi/mpi.cmake, tests/mpi/run.sh).
 * A plain C program, not Criterion: Criterion forks each test into its own process, and an
 * MPI rank cannot be forked into a fresh rank. Every check is exact; rank 0 counts the
 * failures and exits nonzero on any (so mpirun does); the serving ranks exit 0 once they
 * have served. run.sh then checks that no process of the job is left on the machine.
 *
 *   test_mpi_pool [all|terminate|badopts]
 */
#define _GNU_SOURCE
#include <mproc_mpi.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(c)                                                                          \
  do {                                                                                     \
    if (!(c)) {                                                                            \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)
#define CHECK_EQ(a, b)                                                                     \
  do {                                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                                    \
    if (a_ != b_) {                                                                        \
      fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, \
              a_, #b, b_);                                                                 \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)

static int my_rank(void) {
  const char *v = getenv("OMPI_COMM_WORLD_RANK");
  return v ? atoi(v) : -1;
}

static int square(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

/* Element 777 segfaults (wherever it runs). */
static int square_or_crash(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  if (v == 777)
    raise(SIGSEGV);
  *(int64_t *)out = v * v;
  return 0;
}

/* arg: an int64; result: {3 * arg, the rank it ran on}. */
static int times3(const void *arg, size_t len, mproc_result *res) {
  if (len != sizeof(int64_t))
    return mproc_result_fail(res, "bad length %zu", len);
  int64_t r[2] = {3 * *(const int64_t *)arg, my_rank()};
  return mproc_result_set(res, r, sizeof r);
}

/* As times3, but dies of SIGSEGV on the job's last rank (rank 2 under -n 3). */
static int times3_crash_last(const void *arg, size_t len, mproc_result *res) {
  const char *n = getenv("OMPI_COMM_WORLD_SIZE");
  if (n && my_rank() == atoi(n) - 1)
    raise(SIGSEGV);
  return times3(arg, len, res);
}

static int sleepy(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  (void)res;
  struct timespec ts = {*(const int64_t *)arg, 0};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  return 0;
}

static int fail_odd(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int64_t v = *(const int64_t *)arg;
  if (v & 1)
    return mproc_result_fail(res, "odd %lld", (long long)v);
  return mproc_result_set(res, &v, sizeof v);
}

static void test_map(mproc_pool *p) {
  size_t n = 1000000;
  int64_t *in = malloc(n * sizeof *in), *out = calloc(n, sizeof *out);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i - 500000;
  CHECK_EQ(mproc_pool_map(p, square, in, n, 8, out, 8, NULL), 0);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    bad += out[i] != in[i] * in[i];
  CHECK_EQ(bad, 0);
  /* Small chunks (many to a batch) and shared args. */
  memset(out, 0, n * sizeof *out);
  mproc_map_opts mo = {.chunksize = 7};
  CHECK_EQ(mproc_pool_map(p, square, in, 5000, 8, out, 8, &mo), 0);
  bad = 0;
  for (size_t i = 0; i < 5000; i++)
    bad += out[i] != in[i] * in[i];
  CHECK_EQ(bad, 0);
  free(in);
  free(out);
}

static void test_apply_async(mproc_pool *p) {
  enum { N = 10000 };
  mproc_async **r = malloc(N * sizeof *r);
  for (int64_t i = 0; i < N; i++)
    CHECK_EQ(mproc_pool_apply_async(p, times3, &i, sizeof i, &r[i]), 0);
  int bad = 0, seen[64] = {0};
  for (int64_t i = 0; i < N; i++) {
    void *res = NULL;
    size_t len = 0;
    int rc = mproc_async_get(r[i], &res, &len, -1);
    int64_t *v = res;
    if (rc || len != 16 || v[0] != 3 * i || v[1] < 1 || v[1] >= 64)
      bad++;
    else
      seen[v[1]]++;
    free(res);
    mproc_async_free(r[i]);
  }
  CHECK_EQ(bad, 0);
  CHECK(seen[0] == 0 && seen[1] > 0); /* rank 0 runs nothing; rank 1 took its share */
  free(r);
  /* And the synchronous apply. */
  int64_t x = 14, *v = NULL;
  size_t len = 0;
  CHECK_EQ(mproc_pool_apply(p, times3, &x, sizeof x, (void **)&v, &len), 0);
  CHECK(len == 16 && v && v[0] == 42);
  free(v);
}

static void test_imap(mproc_pool *p, bool unordered) {
  enum { N = 2000 };
  static int64_t vals[N];
  static const void *items[N];
  static size_t lens[N];
  for (int i = 0; i < N; i++) {
    vals[i] = i;
    items[i] = &vals[i];
    lens[i] = sizeof vals[i];
  }
  mproc_imap_opts o = {.unordered = unordered, .chunksize = unordered ? 3 : 1};
  mproc_imap *it;
  CHECK_EQ(mproc_pool_imap(p, times3, items, lens, N, &o, &it), 0);
  static bool got[N];
  memset(got, 0, sizeof got);
  int n = 0, bad = 0;
  const void *res;
  size_t len;
  int rc;
  while ((rc = mproc_imap_next(it, &res, &len, -1)) == 0) {
    size_t idx = mproc_imap_index(it);
    int64_t v[2];
    memcpy(v, res, sizeof v);
    if (len != 16 || idx >= N || got[idx] || v[0] != 3 * (int64_t)idx ||
        (!unordered && idx != (size_t)n))
      bad++;
    else
      got[idx] = true;
    n++;
  }
  CHECK_EQ(rc, MPROC_EOF);
  CHECK_EQ(n, N);
  CHECK_EQ(bad, 0);
  mproc_imap_free(it);
}

static void test_crash(mproc_pool *p) {
  /* A map whose element 777 segfaults: it fails alone, the others are exact. */
  size_t n = 1000;
  int64_t in[1000], out[1000];
  for (size_t i = 0; i < n; i++) {
    in[i] = (int64_t)i;
    out[i] = -1;
  }
  mproc_map_opts mo = {.chunksize = 1};
  mproc_async *a;
  CHECK_EQ(mproc_pool_map_async(p, square_or_crash, in, n, 8, out, 8, &mo, &a), 0);
  CHECK_EQ(mproc_async_wait(a, -1), 0);
  CHECK_EQ(mproc_async_get(a, NULL, NULL, 0), MPROC_ECRASHED);
  CHECK_EQ(mproc_async_fail_index(a), 777);
  CHECK(mproc_async_error(a) && strlen(mproc_async_error(a)) > 0);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    bad += i != 777 && out[i] != (int64_t)(i * i);
  CHECK_EQ(bad, 0);
  mproc_async_free(a);
  /* Tasks that segfault on the last rank only: each fails alone; the rest are exact. */
  enum { N = 300 };
  mproc_async *r[N];
  for (int64_t i = 0; i < N; i++)
    CHECK_EQ(mproc_pool_apply_async(p, times3_crash_last, &i, sizeof i, &r[i]), 0);
  int ok = 0, crashed = 0, other = 0;
  for (int64_t i = 0; i < N; i++) {
    void *res = NULL;
    size_t len = 0;
    int rc = mproc_async_get(r[i], &res, &len, -1);
    int64_t *v = res;
    if (rc == 0 && len == 16 && v[0] == 3 * i)
      ok++;
    else if (rc == MPROC_ECRASHED && mproc_async_error(r[i]))
      crashed++;
    else
      other++;
    free(res);
    mproc_async_free(r[i]);
  }
  CHECK_EQ(other, 0);
  CHECK_EQ(ok + crashed, N);
  CHECK(crashed > 0);
  CHECK(ok > 0 || !getenv("OMPI_COMM_WORLD_SIZE") || atoi(getenv("OMPI_COMM_WORLD_SIZE")) == 2);
}

/* With rank0_workers: rank 0's own workers run some of 10 000 tasks, all exact. */
static void test_rank0(mproc_pool *p) {
  enum { N = 10000 };
  mproc_async **r = malloc(N * sizeof *r);
  for (int64_t i = 0; i < N; i++)
    CHECK_EQ(mproc_pool_apply_async(p, times3, &i, sizeof i, &r[i]), 0);
  int bad = 0, seen0 = 0;
  for (int64_t i = 0; i < N; i++) {
    void *res = NULL;
    size_t len = 0;
    int64_t *v = (mproc_async_get(r[i], &res, &len, -1) == 0 && len == 16) ? res : NULL;
    if (!v || v[0] != 3 * i)
      bad++;
    else
      seen0 += v[1] == 0;
    free(res);
    mproc_async_free(r[i]);
  }
  CHECK_EQ(bad, 0);
  CHECK(seen0 > 0);
  free(r);
}

static void test_timeout(mproc_pool *p) {
  /* The pool's task_timeout is 2 s: a 30 s task expires on whichever rank ran it, and the
   * tasks beside it finish. */
  int64_t long_s = 30;
  mproc_async *a;
  CHECK_EQ(mproc_pool_apply_async(p, sleepy, &long_s, sizeof long_s, &a), 0);
  int64_t x = 5, *v = NULL;
  size_t len;
  CHECK_EQ(mproc_pool_apply(p, times3, &x, sizeof x, (void **)&v, &len), 0);
  CHECK(v && v[0] == 15);
  free(v);
  CHECK_EQ(mproc_async_get(a, NULL, NULL, -1), MPROC_EEXPIRED);
  mproc_async_free(a);
}

typedef struct cb_count {
  int ok, failed;
  int64_t sum;
} cb_count;

static void on_ok(mproc_async *r, void *ctx) {
  cb_count *c = ctx;
  void *res = NULL;
  size_t len = 0;
  if (mproc_async_get(r, &res, &len, 0) == 0 && len == 8) {
    c->ok++;
    c->sum += *(int64_t *)res;
  }
  free(res);
}

static void on_err(mproc_async *r, void *ctx) {
  cb_count *c = ctx;
  if (mproc_async_get(r, NULL, NULL, 0) == MPROC_ETASK && mproc_async_error(r) &&
      strncmp(mproc_async_error(r), "odd ", 4) == 0)
    c->failed++;
}

static void test_callbacks(mproc_pool *p) {
  enum { N = 1000 };
  cb_count c = {0};
  mproc_async_opts cb = {.callback = on_ok, .error_callback = on_err, .ctx = &c};
  mproc_async *r[N];
  for (int64_t i = 0; i < N; i++)
    CHECK_EQ(mproc_pool_apply_async_ex(p, fail_odd, &i, sizeof i, &cb, &r[i]), 0);
  for (int i = 0; i < N; i++)
    mproc_async_wait(r[i], -1);
  while (mproc_pool_poll(p, 0) > 0)
    ;
  CHECK_EQ(c.ok, N / 2);
  CHECK_EQ(c.failed, N / 2);
  CHECK_EQ(c.sum, (int64_t)(N / 2) * (N / 2 - 1)); /* 0 + 2 + ... + (N - 2) */
  for (int i = 0; i < N; i++)
    mproc_async_free(r[i]);
}

static void test_bad_input(mproc_pool *p) {
  int64_t x = 1, out;
  mproc_async *a = NULL;
  CHECK_EQ(mproc_pool_apply_async(p, NULL, &x, sizeof x, &a), MPROC_EINVAL);
  CHECK_EQ(mproc_pool_apply_async(p, times3, NULL, 8, &a), MPROC_EINVAL);
  CHECK_EQ(mproc_pool_map(p, square, &x, 1, 0, &out, 8, NULL), MPROC_EINVAL);
  CHECK_EQ(mproc_pool_map(p, NULL, &x, 1, 8, &out, 8, NULL), MPROC_EINVAL);
  CHECK_EQ(mproc_pool_join(p), MPROC_ESTATE); /* still running */
  CHECK_EQ(mproc_pool_resize(p, 3), MPROC_ESTATE);
  CHECK_EQ(mproc_pool_map(p, square, &x, 0, 8, &out, 8, NULL), 0); /* nothing to do */
}

static void test_close_join(mproc_pool *p) {
  int64_t two = 2;
  mproc_async *slow;
  CHECK_EQ(mproc_pool_apply_async(p, sleepy, &(int64_t){1}, 8, &slow), 0);
  CHECK_EQ(mproc_pool_close(p), 0);
  mproc_async *a = NULL;
  CHECK_EQ(mproc_pool_apply_async(p, times3, &two, sizeof two, &a), MPROC_ECLOSED);
  CHECK_EQ(mproc_pool_join(p), 0); /* waits for the task still out */
  CHECK(mproc_async_ready(slow));
  CHECK_EQ(mproc_async_get(slow, NULL, NULL, 0), 0);
  mproc_async_free(slow);
  CHECK_EQ(mproc_pool_join(p), 0);
}

static void test_terminate(mproc_pool *p) {
  enum { N = 8 };
  mproc_async *r[N];
  int64_t s = 20;
  for (int i = 0; i < N; i++)
    CHECK_EQ(mproc_pool_apply_async(p, sleepy, &s, sizeof s, &r[i]), 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK_EQ(mproc_pool_terminate(p), 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  for (int i = 0; i < N; i++) {
    CHECK_EQ(mproc_async_get(r[i], NULL, NULL, 0), MPROC_ECANCELLED);
    mproc_async_free(r[i]);
  }
  CHECK_EQ(mproc_pool_join(p), 0);
  mproc_async *a = NULL;
  CHECK_EQ(mproc_pool_apply_async(p, times3, &s, sizeof s, &a), MPROC_ECLOSED);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "all";
  if (mproc_mpi_pool_new(NULL, NULL, &argc, &argv) != MPROC_EINVAL)
    return 10;
  mproc_pool_opts o = {.processes = 2, .task_timeout = 2.0};
  if (strcmp(mode, "badopts") == 0)
    o.processes = -1;
  mproc_pool *p = NULL;
  bool r0 = strcmp(mode, "rank0") == 0;
  int rc = mproc_mpi_pool_new_ex(&p, &o, &(mproc_mpi_opts){.rank0_workers = r0 ? 1 : 0},
                                 &argc, &argv);
  if (strcmp(mode, "badopts") == 0)
    return rc == MPROC_EINVAL && !p ? 0 : 1; /* on every rank */
  if (rc == 1)
    return p == NULL ? 0 : 1; /* a serving rank, done */
  if (rc != 0) {
    fprintf(stderr, "mproc_mpi_pool_new: %s\n", mproc_strerror(rc));
    return 1;
  }
  if (r0) { /* rank 0's own workers take tasks beside the other ranks: all the same */
    test_map(p);
    test_crash(p);
    test_rank0(p);
    test_imap(p, false);
    test_imap(p, true);
    test_callbacks(p);
    test_timeout(p);
    test_close_join(p);
  } else if (strcmp(mode, "terminate") == 0) {
    test_terminate(p);
  } else {
    test_bad_input(p);
    test_map(p);
    test_apply_async(p);
    test_imap(p, false);
    test_imap(p, true);
    test_callbacks(p);
    test_crash(p);
    test_timeout(p);
    test_close_join(p);
  }
  mproc_pool_free(p);
  fprintf(stderr, "test_mpi_pool %s: %s\n", mode, failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
