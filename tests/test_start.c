/* Start methods (issue 13): the default method, Processes and Pools born by spawn and by the
 * forkserver, every object kind crossing through opts.handles, functions from the
 * executable, a shared library and a dlopened plugin, the errors at start and submission.
 * Every case runs under both methods (NAME_forkserver, NAME_spawn), always with
 * opts.start_method set explicitly, inside a leak scope that stops the forkserver first. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "start_lib.h"

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define T 30.0 /* any wait that should end at once; long only to be safe on a loaded VM */

/* Set to 77 by the parent at run time: a child that was not forked sees 0. */
static int g_marker;

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* One case, run under one method: a leak scope around it; the forkserver (a child of ours)
 * is stopped before the scope is checked. */
static void run_case(void (*fn)(mproc_start_method), mproc_start_method m) {
  th_scope s = th_begin();
  fn(m);
  mproc_forkserver_stop();
  th_end(s);
}

#define BOTH(name)                                                                         \
  static void name(mproc_start_method m);                                                  \
  Test(start, name##_forkserver) { run_case(name, MPROC_START_FORKSERVER); }               \
  Test(start, name##_spawn) { run_case(name, MPROC_START_SPAWN); }                         \
  static void name(mproc_start_method m)

/* A started daemon (it dies with a test that fails) under method m. */
static mproc_process *start_p(mproc_start_method m, mproc_target_fn fn, const void *arg,
                              size_t arg_len, void *const *handles, size_t n_handles) {
  mproc_process *p = NULL;
  mproc_process_opts o = {.daemon = true, .start_method = m, .arg_len = arg_len,
                          .handles = handles, .n_handles = n_handles};
  cr_assert_eq(mproc_process_new(&p, fn, (void *)arg, &o), 0);
  int rc = mproc_process_start(p);
  cr_assert_eq(rc, 0, "start under %s: %s", mproc_start_method_name(m), mproc_err_name(rc));
  return p;
}

static int exit_of(mproc_process *p) {
  int code = 12345;
  cr_assert_eq(mproc_process_join(p, 60), 0, "the child did not end");
  cr_assert_eq(mproc_process_exitcode(p, &code), 0);
  return code;
}

/* Starts fn and returns its exit code, freeing the process. */
static int run_p(mproc_start_method m, mproc_target_fn fn, const void *arg, size_t arg_len,
                 void *const *handles, size_t n_handles) {
  mproc_process *p = start_p(m, fn, arg, arg_len, handles, n_handles);
  int code = exit_of(p);
  mproc_process_free(p);
  return code;
}

static mproc_array *value_new(size_t elem, size_t n, bool with_lock) {
  mproc_array *a = NULL;
  cr_assert_eq(mproc_array_new(&a, elem, n, NULL, with_lock), 0);
  return a;
}

static int64_t *i64(mproc_array *a) { return mproc_array_data(a); }

/* ---- targets ---- */

static int ret_int(void *arg) { return g_marker == 0 ? *(const int *)arg : 200; }

static int ret_marker(void *arg) {
  (void)arg;
  return g_marker;
}

static int ret_null_check(void *arg) { return arg == NULL ? 9 : 8; }

static int raise_int(void *arg) {
  int sig = *(const int *)arg;
  signal(sig, SIG_DFL); /* a sanitizer's SIGSEGV handler would turn the death into exit 1 */
  raise(sig);
  return 99;
}

static int sleep_forever(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return 0;
}

/* ---- the default method ---- */

Test(start, method_names_set_get) {
  th_scope s = th_begin();
  cr_expect_str_eq(mproc_start_method_name(MPROC_START_DEFAULT), "default");
  cr_expect_str_eq(mproc_start_method_name(MPROC_START_FORK), "fork");
  cr_expect_str_eq(mproc_start_method_name(MPROC_START_FORKSERVER), "forkserver");
  cr_expect_str_eq(mproc_start_method_name(MPROC_START_SPAWN), "spawn");
  cr_expect_null(mproc_start_method_name((mproc_start_method)4));
  cr_expect_null(mproc_start_method_name((mproc_start_method)-1));
  cr_expect_null(mproc_start_method_name((mproc_start_method)1000));
  cr_expect_neq(mproc_get_start_method(), MPROC_START_DEFAULT);

  mproc_start_method all[] = {MPROC_START_FORK, MPROC_START_FORKSERVER, MPROC_START_SPAWN};
  for (size_t i = 0; i < 3; i++) {
    cr_assert_eq(mproc_set_start_method(all[i]), 0);
    cr_expect_eq(mproc_get_start_method(), all[i]);
    int bad[] = {MPROC_START_DEFAULT, 4, -1, 1000};
    for (size_t k = 0; k < 4; k++) {
      cr_expect_eq(mproc_set_start_method((mproc_start_method)bad[k]), MPROC_EINVAL, "%d",
                   bad[k]);
      cr_expect_eq(mproc_get_start_method(), all[i], "a refused value changed the default");
    }
  }
  cr_assert_eq(mproc_set_start_method(MPROC_START_FORK), 0);
  th_end(s);
}

/* A Process or Pool whose start_method is DEFAULT follows mproc_set_start_method. */
static int marker_task(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  return mproc_result_set(res, &g_marker, sizeof g_marker);
}

Test(start, default_method_is_followed) {
  th_scope s = th_begin();
  g_marker = 77;
  mproc_start_method all[] = {MPROC_START_FORK, MPROC_START_FORKSERVER, MPROC_START_SPAWN};
  int want[] = {77, 0, 0};
  for (size_t i = 0; i < 3; i++) {
    cr_assert_eq(mproc_set_start_method(all[i]), 0);
    cr_expect_eq(run_p(MPROC_START_DEFAULT, ret_marker, NULL, 0, NULL, 0), want[i], "%s",
                 mproc_start_method_name(all[i]));
    mproc_pool *p = NULL;
    mproc_pool_opts o = {.processes = 1};
    cr_assert_eq(mproc_pool_new(&p, &o), 0);
    void *r = NULL;
    size_t len = 0;
    cr_assert_eq(mproc_pool_apply(p, marker_task, NULL, 0, &r, &len), 0);
    cr_expect_eq(len, sizeof(int));
    cr_expect_eq(*(int *)r, want[i], "pool under %s", mproc_start_method_name(all[i]));
    free(r);
    mproc_pool_free(p);
  }
  cr_assert_eq(mproc_set_start_method(MPROC_START_FORK), 0);
  mproc_forkserver_stop();
  th_end(s);
}

Test(start, bad_method_in_options) {
  th_scope s = th_begin();
  mproc_process *p = NULL;
  mproc_process_opts po = {.start_method = (mproc_start_method)4};
  cr_expect_eq(mproc_process_new(&p, ret_marker, NULL, &po), MPROC_EINVAL);
  po.start_method = (mproc_start_method)-1;
  cr_expect_eq(mproc_process_new(&p, ret_marker, NULL, &po), MPROC_EINVAL);
  mproc_pool *pool = NULL;
  mproc_pool_opts o = {.processes = 1, .start_method = (mproc_start_method)4};
  int rc = mproc_pool_new(&pool, &o);
  cr_expect_eq(rc, MPROC_EINVAL, "pool start_method 4: %s", mproc_err_name(rc));
  if (rc == 0)
    mproc_pool_free(pool);
  mproc_forkserver_stop();
  th_end(s);
}

/* ---- Process: start, join, exit codes ---- */

BOTH(exit_codes) {
  g_marker = 77;
  int codes[] = {0, 1, 7, 255};
  for (size_t i = 0; i < 4; i++)
    cr_expect_eq(run_p(m, ret_int, &codes[i], sizeof codes[i], NULL, 0), codes[i]);
  int sigs[] = {SIGUSR1, SIGKILL, SIGTERM, SIGSEGV};
  for (size_t i = 0; i < 4; i++)
    cr_expect_eq(run_p(m, raise_int, &sigs[i], sizeof sigs[i], NULL, 0), -sigs[i]);
  cr_expect_eq(run_p(m, ret_null_check, NULL, 0, NULL, 0), 9, "a NULL arg stays NULL");
}

BOTH(join_timeout_terminate_kill) {
  int (*fns[])(mproc_process *) = {mproc_process_terminate, mproc_process_kill};
  int sigs[] = {SIGTERM, SIGKILL};
  for (size_t i = 0; i < 2; i++) {
    mproc_process *p = NULL;
    mproc_process_opts o = {.daemon = true, .start_method = m};
    cr_assert_eq(mproc_process_new(&p, sleep_forever, NULL, &o), 0);
    int code;
    cr_expect_eq(mproc_process_join(p, 0), MPROC_ESTATE);
    cr_expect_eq(mproc_process_exitcode(p, &code), MPROC_ESTATE);
    cr_expect_eq(mproc_process_pid(p), 0);
    cr_assert_eq(mproc_process_start(p), 0);
    cr_expect_eq(mproc_process_start(p), MPROC_ESTATE);
    cr_expect_gt(mproc_process_pid(p), 0);
    cr_expect_neq(mproc_process_pid(p), getpid());
    cr_expect(mproc_process_is_alive(p));
    cr_expect_eq(mproc_process_join(p, 0), MPROC_ETIMEDOUT);
    cr_expect_eq(mproc_process_join(p, 0.05), MPROC_ETIMEDOUT);
    cr_expect_eq(mproc_process_exitcode(p, &code), MPROC_ESTATE);
    int sentinel = mproc_process_sentinel(p);
    cr_expect_geq(sentinel, 0);
    struct pollfd pf = {sentinel, POLLIN, 0};
    cr_expect_eq(poll(&pf, 1, 0), 0, "the sentinel is readable while the child runs");
    cr_assert_eq(fns[i](p), 0);
    pf.revents = 0;
    cr_expect_eq(poll(&pf, 1, 30000), 1, "the sentinel is not readable after the end");
    cr_expect_eq(exit_of(p), -sigs[i]);
    cr_expect(!mproc_process_is_alive(p));
    cr_expect_eq(fns[i](p), 0, "signalling an ended child is 0");
    cr_expect_eq(mproc_process_join(p, 0), 0, "joining again is fine");
    mproc_process_free(p);
  }
  /* A running child freed: killed and reaped (th_end sees no child). */
  mproc_process *p = start_p(m, sleep_forever, NULL, 0, NULL, 0);
  mproc_process_free(p);
}

typedef struct who_arg {
  pid_t parent;
} who_arg;

/* 42 when the child sees what it should: its name, its parent, no handles, none of the
 * parent's memory; otherwise a bit per failed check. */
static int who_am_i(void *arg) {
  const who_arg *a = arg;
  int bad = 0;
  if (strcmp(mproc_current_process_name(), "start-child") != 0)
    bad |= 1;
  if (mproc_parent_pid() != a->parent)
    bad |= 2;
  if (mproc_process_handle(0) != NULL)
    bad |= 4;
  if (g_marker != 0)
    bad |= 8;
  if (getpid() == a->parent)
    bad |= 16;
  return bad ? bad : 42;
}

BOTH(child_identity) {
  g_marker = 77;
  who_arg a = {getpid()};
  mproc_process *p = NULL;
  mproc_process_opts o = {.name = "start-child", .start_method = m, .arg_len = sizeof a};
  cr_assert_eq(mproc_process_new(&p, who_am_i, &a, &o), 0);
  cr_expect_str_eq(mproc_process_name(p), "start-child");
  cr_expect(!mproc_process_daemon(p));
  cr_assert_eq(mproc_process_start(p), 0);
  cr_expect_eq(exit_of(p), 42);
  mproc_process_free(p);
  cr_expect_null(mproc_process_handle(0), "the main program has no handles");
  cr_expect_str_eq(mproc_current_process_name(), "MainProcess");
}

/* ---- arg ---- */

static uint64_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* arg: u64 length, then that many bytes. Writes the bytes' hash and the length it saw into
 * handle 0 (int64[2]); 1 when the copy is not aligned for any type. */
static int hash_arg(void *arg) {
  mproc_array *v = mproc_process_handle(0);
  if (!v)
    return 2;
  uint64_t n;
  memcpy(&n, arg, sizeof n);
  i64(v)[0] = (int64_t)fnv1a((const char *)arg + 8, n);
  i64(v)[1] = (int64_t)n;
  return (uintptr_t)arg % 16 == 0 ? 0 : 1;
}

BOTH(arg_copied_exactly) {
  mproc_array *v = value_new(8, 2, false);
  void *h[] = {v};
  size_t sizes[] = {0, 1, 7, 4096, 65537, (size_t)1 << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    size_t n = sizes[i];
    unsigned char *buf = malloc(8 + n);
    cr_assert_not_null(buf);
    uint64_t n64 = n;
    memcpy(buf, &n64, 8);
    for (size_t k = 0; k < n; k++)
      buf[8 + k] = (unsigned char)(k * 31 + i);
    uint64_t want = fnv1a(buf + 8, n);
    mproc_process *p = NULL;
    mproc_process_opts o = {.daemon = true, .start_method = m, .arg_len = 8 + n,
                            .handles = h, .n_handles = 1};
    cr_assert_eq(mproc_process_new(&p, hash_arg, buf, &o), 0);
    /* Copied at new: what the caller does to its buffer afterwards does not reach it. */
    memset(buf + 8, 0xAB, n);
    free(buf);
    i64(v)[0] = i64(v)[1] = -1;
    cr_assert_eq(mproc_process_start(p), 0);
    cr_expect_eq(exit_of(p), 0, "size %zu", n);
    cr_expect_eq((uint64_t)i64(v)[0], want, "size %zu: the child saw other bytes", n);
    cr_expect_eq(i64(v)[1], (int64_t)n);
    mproc_process_free(p);
  }
  mproc_array_free(v);
}

BOTH(arg_without_len_is_einval) {
  g_marker = 77;
  int x = 5;
  mproc_process *p = NULL;
  mproc_process_opts o = {.daemon = true, .start_method = m};
  cr_assert_eq(mproc_process_new(&p, ret_int, &x, &o), 0);
  cr_expect_eq(mproc_process_start(p), MPROC_EINVAL);
  cr_expect_eq(mproc_process_pid(p), 0);
  cr_expect(!mproc_process_is_alive(p));
  cr_expect_eq(mproc_process_join(p, 0), MPROC_ESTATE, "not started");
  cr_expect_eq(mproc_process_start(p), MPROC_EINVAL, "still refused");
  mproc_process_free(p);
  /* arg_len without an arg: refused at new. */
  o.arg_len = 4;
  p = NULL;
  cr_expect_eq(mproc_process_new(&p, ret_int, NULL, &o), MPROC_EINVAL);
  /* Under fork the same pointer is fine: the child has the caller's memory. */
  o.arg_len = 0;
  o.start_method = MPROC_START_FORK;
  cr_assert_eq(mproc_process_new(&p, ret_int, &x, &o), 0);
  cr_assert_eq(mproc_process_start(p), 0);
  cr_expect_eq(exit_of(p), 200, "a forked child sees the caller's marker (ret_int: 200)");
  mproc_process_free(p);
}

BOTH(target_in_no_object_is_einval) {
  g_marker = 0;
  void *heap = malloc(64);
  cr_assert_not_null(heap);
  memset(heap, 0xC3, 64); /* ret */
  unsigned char stack[64];
  memset(stack, 0xC3, sizeof stack);
  void *anon = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(anon, MAP_FAILED);
  void *where[] = {heap, stack, anon, (char *)heap + 13};
  for (size_t i = 0; i < 4; i++) {
    mproc_process *p = NULL;
    mproc_process_opts o = {.daemon = true, .start_method = m};
    cr_assert_eq(mproc_process_new(&p, (mproc_target_fn)where[i], NULL, &o), 0);
    cr_expect_eq(mproc_process_start(p), MPROC_EINVAL, "target %zu", i);
    cr_expect_eq(mproc_process_pid(p), 0);
    mproc_process_free(p);
  }
  munmap(anon, 4096);
  free(heap);
  /* A good one afterwards still starts. */
  int code = 3;
  cr_expect_eq(run_p(m, ret_int, &code, sizeof code, NULL, 0), 3);
}

static int handles_present(void *arg) {
  size_t n = *(const size_t *)arg;
  for (size_t i = 0; i < n; i++)
    if (!mproc_process_handle(i))
      return 10 + (int)i;
  return mproc_process_handle(n) == NULL ? 0 : 1;
}

BOTH(handle_not_mproc_is_einval) {
  int plain = 0x12345678;
  uint32_t fake_magic[16] = {0};
  mproc_lock *l = NULL;
  cr_assert_eq(mproc_lock_new(&l, false), 0);
  void *heap = calloc(1, 4096);
  cr_assert_not_null(heap);
  void *bad[][2] = {{&plain, NULL}, {heap, NULL}, {(void *)(uintptr_t)16, NULL},
                    {NULL, NULL},   {l, &plain},  {fake_magic, NULL}};
  size_t nbad[] = {1, 1, 1, 1, 2, 1};
  size_t one = 1, two = 2;
  for (size_t i = 0; i < sizeof nbad / sizeof *nbad; i++) {
    mproc_process *p = NULL;
    mproc_process_opts o = {.daemon = true, .start_method = m, .arg_len = sizeof one,
                            .handles = bad[i], .n_handles = nbad[i]};
    cr_assert_eq(mproc_process_new(&p, handles_present, &one, &o), 0);
    cr_expect_eq(mproc_process_start(p), MPROC_EINVAL, "case %zu", i);
    cr_expect_eq(mproc_process_pid(p), 0);
    mproc_process_free(p);
  }
  /* Handles without their array: refused at new. */
  mproc_process *p = NULL;
  mproc_process_opts o = {.start_method = m, .n_handles = 1};
  cr_expect_eq(mproc_process_new(&p, handles_present, NULL, &o), MPROC_EINVAL);
  /* The same lock twice is fine. */
  void *ok[] = {l, l};
  cr_expect_eq(run_p(m, handles_present, &two, sizeof two, ok, 2), 0);
  free(heap);
  mproc_lock_free(l);
}

/* ---- Connection ---- */

/* Handle 0: a duplex end. Echoes a message reversed, answers an empty one with "empty",
 * then sends 100000 bytes of a pattern. */
static int conn_echo(void *arg) {
  (void)arg;
  mproc_conn *c = mproc_process_handle(0);
  if (!c)
    return 1;
  void *buf;
  size_t len;
  if (mproc_conn_recv(c, &buf, &len, T) != 0)
    return 2;
  char *rev = malloc(len + 1);
  for (size_t i = 0; i < len; i++)
    rev[i] = ((char *)buf)[len - 1 - i];
  int rc = mproc_conn_send(c, rev, len);
  free(rev);
  free(buf);
  if (rc != 0)
    return 3;
  if (mproc_conn_recv(c, &buf, &len, T) != 0)
    return 4;
  free(buf);
  if (len != 0 || mproc_conn_send(c, "empty", 5) != 0)
    return 5;
  unsigned char *big = malloc(100000);
  for (size_t i = 0; i < 100000; i++)
    big[i] = (unsigned char)(i * 7 + 1);
  rc = mproc_conn_send(c, big, 100000);
  free(big);
  return rc == 0 ? 0 : 6;
}

BOTH(connection_duplex) {
  mproc_conn *a = NULL, *b = NULL;
  cr_assert_eq(mproc_pipe(&a, &b, true), 0);
  void *h[] = {b};
  mproc_process *p = start_p(m, conn_echo, NULL, 0, h, 1);
  mproc_conn_free(b); /* the child has its own end now */
  const char msg[] = "hello, spawned child";
  cr_assert_eq(mproc_conn_send(a, msg, sizeof msg - 1), 0);
  void *buf;
  size_t len;
  cr_assert_eq(mproc_conn_recv(a, &buf, &len, T), 0);
  cr_assert_eq(len, sizeof msg - 1);
  for (size_t i = 0; i < len; i++)
    cr_expect_eq(((char *)buf)[i], msg[len - 1 - i]);
  free(buf);
  cr_assert_eq(mproc_conn_send(a, "", 0), 0);
  cr_assert_eq(mproc_conn_recv(a, &buf, &len, T), 0);
  cr_expect_eq(len, 5);
  cr_expect_eq(memcmp(buf, "empty", 5), 0);
  free(buf);
  cr_assert_eq(mproc_conn_recv(a, &buf, &len, T), 0);
  cr_assert_eq(len, 100000);
  size_t wrong = 0;
  for (size_t i = 0; i < 100000; i++)
    wrong += ((unsigned char *)buf)[i] != (unsigned char)(i * 7 + 1);
  cr_expect_eq(wrong, 0);
  free(buf);
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  /* No copy of the child's end is left anywhere: EOF. */
  cr_expect_eq(mproc_conn_recv(a, &buf, &len, T), MPROC_EOF);
  mproc_conn_free(a);
}

static int conn_send3(void *arg) {
  (void)arg;
  mproc_conn *w = mproc_process_handle(0);
  if (!w)
    return 1;
  char m[8];
  for (int i = 0; i < 3; i++) {
    snprintf(m, sizeof m, "m%d", i);
    if (mproc_conn_send(w, m, strlen(m)) != 0)
      return 2;
  }
  return mproc_conn_poll(w, 0) == MPROC_EINVAL ? 0 : 3; /* send-only end */
}

static int conn_recv_sum(void *arg) {
  (void)arg;
  mproc_conn *r = mproc_process_handle(0);
  if (!r)
    return 1;
  int sum = 0, n = 0;
  void *buf;
  size_t len;
  int rc;
  while ((rc = mproc_conn_recv(r, &buf, &len, T)) == 0) {
    int v;
    memcpy(&v, buf, sizeof v);
    free(buf);
    sum += v;
    n++;
  }
  return rc == MPROC_EOF && n == 10 ? sum : 255;
}

BOTH(connection_one_way) {
  mproc_conn *r = NULL, *w = NULL;
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  void *hw[] = {w};
  mproc_process *p = start_p(m, conn_send3, NULL, 0, hw, 1);
  mproc_conn_free(w);
  for (int i = 0; i < 3; i++) {
    void *buf;
    size_t len;
    char want[8];
    snprintf(want, sizeof want, "m%d", i);
    cr_assert_eq(mproc_conn_recv(r, &buf, &len, T), 0);
    cr_expect_eq(len, strlen(want));
    cr_expect_eq(memcmp(buf, want, len), 0);
    free(buf);
  }
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  void *buf;
  size_t len;
  cr_expect_eq(mproc_conn_recv(r, &buf, &len, T), MPROC_EOF);
  mproc_conn_free(r);

  /* The receiving end crosses: the child reads to EOF. */
  cr_assert_eq(mproc_pipe(&r, &w, false), 0);
  void *hr[] = {r};
  p = start_p(m, conn_recv_sum, NULL, 0, hr, 1);
  mproc_conn_free(r);
  for (int i = 1; i <= 10; i++)
    cr_assert_eq(mproc_conn_send(w, &i, sizeof i), 0);
  mproc_conn_free(w);
  cr_expect_eq(exit_of(p), 55);
  mproc_process_free(p);
}

/* ---- Queue ---- */

#define QN 200

/* Handles: qin, qout, res (int64[3]). Gets ints from qin until it is closed, puts v*3+1 on
 * qout, then a 1 MiB message; res: count, the rc of a put on the closed qin, the rc of the
 * last get. */
static int queue_worker(void *arg) {
  (void)arg;
  mproc_queue *qin = mproc_process_handle(0), *qout = mproc_process_handle(1);
  mproc_array *res = mproc_process_handle(2);
  if (!qin || !qout || !res)
    return 1;
  int64_t count = 0;
  int rc;
  void *buf;
  size_t len;
  while ((rc = mproc_queue_get(qin, &buf, &len, T)) == 0) {
    int v;
    if (len != sizeof v)
      return 2;
    memcpy(&v, buf, sizeof v);
    free(buf);
    v = v * 3 + 1;
    if (mproc_queue_put(qout, &v, sizeof v, T) != 0)
      return 3;
    count++;
  }
  i64(res)[0] = count;
  i64(res)[1] = mproc_queue_put(qin, "x", 1, 0);
  i64(res)[2] = rc;
  size_t big = (size_t)1 << 20;
  unsigned char *b = malloc(big);
  for (size_t i = 0; i < big; i++)
    b[i] = (unsigned char)(i ^ (i >> 8));
  rc = mproc_queue_put(qout, b, big, T);
  free(b);
  return rc == 0 ? 0 : 4;
}

BOTH(queue_plain) {
  mproc_queue *qin = NULL, *qout = NULL;
  cr_assert_eq(mproc_queue_new(&qin, NULL), 0);
  cr_assert_eq(mproc_queue_new(&qout, NULL), 0);
  mproc_array *res = value_new(8, 3, false);
  void *h[] = {qin, qout, res};
  mproc_process *p = start_p(m, queue_worker, NULL, 0, h, 3);
  for (int i = 0; i < QN; i++)
    cr_assert_eq(mproc_queue_put(qin, &i, sizeof i, T), 0);
  cr_assert_eq(mproc_queue_close(qin), 0);
  for (int i = 0; i < QN; i++) {
    void *buf;
    size_t len;
    cr_assert_eq(mproc_queue_get(qout, &buf, &len, T), 0, "item %d", i);
    cr_assert_eq(len, sizeof(int));
    cr_expect_eq(*(int *)buf, i * 3 + 1, "item %d", i);
    free(buf);
  }
  void *buf;
  size_t len;
  cr_assert_eq(mproc_queue_get(qout, &buf, &len, T), 0);
  cr_assert_eq(len, (size_t)1 << 20);
  size_t wrong = 0;
  for (size_t i = 0; i < len; i++)
    wrong += ((unsigned char *)buf)[i] != (unsigned char)(i ^ (i >> 8));
  cr_expect_eq(wrong, 0);
  free(buf);
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  cr_expect_eq(i64(res)[0], QN);
  cr_expect_eq(i64(res)[1], MPROC_ECLOSED, "a put on a queue closed by the parent");
  cr_expect_eq(i64(res)[2], MPROC_ECLOSED, "closed and drained");
  cr_expect_eq(mproc_queue_get(qout, &buf, &len, 0), MPROC_EAGAIN);
  cr_expect_eq(mproc_queue_qsize(qin), 0);
  cr_expect_eq(mproc_queue_get(qin, &buf, &len, 0), MPROC_ECLOSED);
  mproc_array_free(res);
  mproc_queue_free(qin);
  mproc_queue_free(qout);
}

/* Handles: q (maxsize 2), ev, res (int64[1]). Fills q, records a put on the full queue
 * with timeout 0, tells the parent, then puts the rest (blocking). */
static int bounded_putter(void *arg) {
  (void)arg;
  mproc_queue *q = mproc_process_handle(0);
  mproc_event *ev = mproc_process_handle(1);
  mproc_array *res = mproc_process_handle(2);
  if (!q || !ev || !res)
    return 1;
  for (int i = 0; i < 2; i++)
    if (mproc_queue_put(q, &i, sizeof i, T) != 0)
      return 2;
  int x = -1;
  i64(res)[0] = mproc_queue_put(q, &x, sizeof x, 0);
  if (mproc_event_set(ev) != 0)
    return 3;
  for (int i = 2; i < 50; i++)
    if (mproc_queue_put(q, &i, sizeof i, T) != 0)
      return 4;
  return 0;
}

BOTH(queue_bounded) {
  mproc_queue *q = NULL;
  mproc_queue_opts qo = {.maxsize = 2};
  cr_assert_eq(mproc_queue_new(&q, &qo), 0);
  mproc_event *ev = NULL;
  cr_assert_eq(mproc_event_new(&ev), 0);
  mproc_array *res = value_new(8, 1, false);
  void *h[] = {q, ev, res};
  mproc_process *p = start_p(m, bounded_putter, NULL, 0, h, 3);
  cr_assert_eq(mproc_event_wait(ev, T), 0);
  cr_expect_eq(i64(res)[0], MPROC_EAGAIN);
  cr_expect_eq(mproc_queue_qsize(q), 2);
  cr_expect(mproc_queue_full(q));
  for (int i = 0; i < 50; i++) {
    void *buf;
    size_t len;
    cr_assert_eq(mproc_queue_get(q, &buf, &len, T), 0, "item %d", i);
    cr_assert_eq(len, sizeof(int));
    cr_expect_eq(*(int *)buf, i);
    free(buf);
  }
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  cr_expect(mproc_queue_empty(q));
  mproc_array_free(res);
  mproc_event_free(ev);
  mproc_queue_free(q);
}

/* Handles: jq, res (int64[2]). Gets 20 items, marks each done; res: their sum, the rc of
 * one task_done too many. */
static int joinable_consumer(void *arg) {
  (void)arg;
  mproc_queue *q = mproc_process_handle(0);
  mproc_array *res = mproc_process_handle(1);
  if (!q || !res)
    return 1;
  int64_t sum = 0;
  for (int i = 0; i < 20; i++) {
    void *buf;
    size_t len;
    if (mproc_queue_get(q, &buf, &len, T) != 0 || len != sizeof(int))
      return 2;
    sum += *(int *)buf;
    free(buf);
    nap_ms(1);
    if (mproc_queue_task_done(q) != 0)
      return 3;
  }
  i64(res)[0] = sum;
  i64(res)[1] = mproc_queue_task_done(q);
  return 0;
}

BOTH(queue_joinable) {
  mproc_queue *q = NULL;
  mproc_queue_opts qo = {.joinable = true};
  cr_assert_eq(mproc_queue_new(&q, &qo), 0);
  mproc_array *res = value_new(8, 2, false);
  int64_t want = 0;
  for (int i = 0; i < 20; i++) {
    int v = i * i + 1;
    want += v;
    cr_assert_eq(mproc_queue_put(q, &v, sizeof v, T), 0);
  }
  cr_expect_eq(mproc_queue_join(q, 0), MPROC_ETIMEDOUT);
  void *h[] = {q, res};
  mproc_process *p = start_p(m, joinable_consumer, NULL, 0, h, 2);
  cr_expect_eq(mproc_queue_join(q, T), 0, "every item was marked done in the child");
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  cr_expect_eq(i64(res)[0], want);
  cr_expect_eq(i64(res)[1], MPROC_ESTATE);
  cr_expect_eq(mproc_queue_join(q, 0), 0);
  mproc_array_free(res);
  mproc_queue_free(q);
}

/* ---- Lock and RLock ---- */

/* Handles: lock, held, go. Holds the lock (an RLock twice) until go is set. */
static int lock_holder(void *arg) {
  bool recursive = *(const bool *)arg;
  mproc_lock *l = mproc_process_handle(0);
  mproc_event *held = mproc_process_handle(1), *go = mproc_process_handle(2);
  if (!l || !held || !go)
    return 1;
  if (mproc_lock_acquire(l, T) != 0)
    return 2;
  if (recursive && (mproc_lock_acquire(l, 0) != 0 || mproc_lock_release(l) != 0))
    return 3;
  if (!recursive && mproc_lock_acquire(l, 0) != MPROC_EAGAIN)
    return 4;
  mproc_event_set(held);
  if (mproc_event_wait(go, T) != 0)
    return 5;
  return mproc_lock_release(l) == 0 ? 0 : 6;
}

BOTH(lock_mutual_exclusion) {
  for (int k = 0; k < 2; k++) {
    bool rec = k == 1;
    mproc_lock *l = NULL;
    mproc_event *held = NULL, *go = NULL;
    cr_assert_eq(mproc_lock_new(&l, rec), 0);
    cr_assert_eq(mproc_event_new(&held), 0);
    cr_assert_eq(mproc_event_new(&go), 0);
    void *h[] = {l, held, go};
    mproc_process *p = start_p(m, lock_holder, &rec, sizeof rec, h, 3);
    cr_assert_eq(mproc_event_wait(held, T), 0);
    cr_expect_eq(mproc_lock_acquire(l, 0), MPROC_EAGAIN);
    cr_expect_eq(mproc_lock_acquire(l, 0.05), MPROC_ETIMEDOUT);
    cr_expect_eq(mproc_lock_release(l), MPROC_ESTATE, "not ours to release");
    cr_assert_eq(mproc_event_set(go), 0);
    cr_expect_eq(mproc_lock_acquire(l, T), 0);
    cr_expect_eq(mproc_lock_release(l), 0);
    cr_expect_eq(exit_of(p), 0, "recursive %d", rec);
    mproc_process_free(p);
    mproc_event_free(go);
    mproc_event_free(held);
    mproc_lock_free(l);
  }
}

/* Handles: lock, held. Takes the lock (three deep for an RLock), says so, waits a little
 * (so that the parent is blocked in acquire, when asked to be) and dies holding it. */
static int lock_die_holding(void *arg) {
  const int *a = arg; /* a[0]: depth, a[1]: ms to wait before dying */
  mproc_lock *l = mproc_process_handle(0);
  mproc_event *held = mproc_process_handle(1);
  if (!l || !held)
    return 1;
  for (int i = 0; i < a[0]; i++)
    if (mproc_lock_acquire(l, T) != 0)
      return 2;
  mproc_event_set(held);
  nap_ms(a[1]);
  return 0; /* exits holding it */
}

BOTH(lock_owner_dead) {
  for (int k = 0; k < 4; k++) {
    bool rec = k & 1, blocked = k & 2;
    mproc_lock *l = NULL;
    mproc_event *held = NULL;
    cr_assert_eq(mproc_lock_new(&l, rec), 0);
    cr_assert_eq(mproc_event_new(&held), 0);
    int a[2] = {rec ? 3 : 1, blocked ? 100 : 0};
    void *h[] = {l, held};
    mproc_process *p = start_p(m, lock_die_holding, a, sizeof a, h, 2);
    cr_assert_eq(mproc_event_wait(held, T), 0);
    if (!blocked) {
      cr_expect_eq(exit_of(p), 0);
      cr_expect_eq(mproc_lock_acquire(l, T), MPROC_EOWNERDEAD, "rec %d, after the death", rec);
    } else {
      cr_expect_eq(mproc_lock_acquire(l, T), MPROC_EOWNERDEAD, "rec %d, blocked", rec);
      cr_expect_eq(exit_of(p), 0);
    }
    cr_expect_eq(mproc_lock_release(l), 0, "held once, at depth 1");
    cr_expect_eq(mproc_lock_release(l), MPROC_ESTATE);
    cr_expect_eq(mproc_lock_acquire(l, 0), 0, "an ordinary lock again");
    cr_expect_eq(mproc_lock_release(l), 0);
    mproc_process_free(p);
    mproc_event_free(held);
    mproc_lock_free(l);
  }
}

/* ---- Semaphore and BoundedSemaphore ---- */

static int sem_release3(void *arg) {
  (void)arg;
  mproc_sem *s = mproc_process_handle(0);
  if (!s)
    return 1;
  for (int i = 0; i < 3; i++) {
    nap_ms(5);
    if (mproc_sem_release(s) != 0)
      return 2;
  }
  return 0;
}

/* Handles: bounded sem (2, both taken by the parent), res (int64[3]): three releases. */
static int bsem_release3(void *arg) {
  (void)arg;
  mproc_sem *s = mproc_process_handle(0);
  mproc_array *res = mproc_process_handle(1);
  if (!s || !res)
    return 1;
  for (int i = 0; i < 3; i++)
    i64(res)[i] = mproc_sem_release(s);
  return 0;
}

BOTH(semaphores) {
  mproc_sem *s = NULL;
  cr_assert_eq(mproc_sem_new(&s, 0, false), 0);
  void *h[] = {s};
  mproc_process *p = start_p(m, sem_release3, NULL, 0, h, 1);
  for (int i = 0; i < 3; i++)
    cr_expect_eq(mproc_sem_acquire(s, T), 0, "unit %d", i);
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  cr_expect_eq(mproc_sem_acquire(s, 0), MPROC_EAGAIN);
  cr_expect_eq(mproc_sem_value(s), 0);
  mproc_sem_free(s);

  mproc_sem *b = NULL;
  cr_assert_eq(mproc_sem_new(&b, 2, true), 0);
  cr_assert_eq(mproc_sem_acquire(b, 0), 0);
  cr_assert_eq(mproc_sem_acquire(b, 0), 0);
  cr_expect_eq(mproc_sem_value(b), 0);
  mproc_array *res = value_new(8, 3, false);
  void *hb[] = {b, res};
  cr_expect_eq(run_p(m, bsem_release3, NULL, 0, hb, 2), 0);
  cr_expect_eq(i64(res)[0], 0);
  cr_expect_eq(i64(res)[1], 0);
  cr_expect_eq(i64(res)[2], MPROC_ESTATE, "beyond its initial value");
  cr_expect_eq(mproc_sem_value(b), 2);
  mproc_array_free(res);
  mproc_sem_free(b);
}

/* ---- Event ---- */

/* Handles: e1, e2. Waits for e1 (set by the parent), then sets e2 after a pause. */
static int event_ping(void *arg) {
  (void)arg;
  mproc_event *e1 = mproc_process_handle(0), *e2 = mproc_process_handle(1);
  if (!e1 || !e2)
    return 1;
  if (mproc_event_wait(e1, T) != 0)
    return 2;
  nap_ms(30);
  return mproc_event_set(e2) == 0 ? 0 : 3;
}

BOTH(event_wakes) {
  mproc_event *e1 = NULL, *e2 = NULL;
  cr_assert_eq(mproc_event_new(&e1), 0);
  cr_assert_eq(mproc_event_new(&e2), 0);
  void *h[] = {e1, e2};
  mproc_process *p = start_p(m, event_ping, NULL, 0, h, 2);
  th_wait_asleep(mproc_process_pid(p)); /* inside its wait */
  cr_assert_eq(mproc_event_set(e1), 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  cr_expect_eq(mproc_event_wait(e2, T), 0, "the child's set woke the parent");
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  cr_expect_lt(dt, 10.0, "woken late: %.3f s", dt);
  cr_expect(mproc_event_is_set(e2));
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  mproc_event_free(e1);
  mproc_event_free(e2);
}

/* ---- Condition ---- */

/* Handles: cond, state (int32[4]: [0] waiters ready, [1] data, [2+k] what waiter k read).
 * arg: k. Counts itself in under the lock, waits for a notify, records data. */
static int cond_waiter(void *arg) {
  int k = *(const int *)arg;
  mproc_cond *c = mproc_process_handle(0);
  mproc_array *st = mproc_process_handle(1);
  if (!c || !st)
    return 1;
  int32_t *s = mproc_array_data(st);
  if (mproc_cond_acquire(c, T) != 0)
    return 2;
  s[0]++;
  int rc = mproc_cond_wait(c, T);
  s[2 + k] = s[1];
  if (mproc_cond_release(c) != 0)
    return 3;
  return rc == 0 ? 0 : 4;
}

BOTH(condition_notify) {
  for (int variant = 0; variant < 2; variant++) {
    /* 0: the condition's own RLock, notify(1) twice; 1: a user Lock, notify_all. */
    mproc_lock *l = NULL;
    if (variant == 1)
      cr_assert_eq(mproc_lock_new(&l, false), 0);
    mproc_cond *c = NULL;
    cr_assert_eq(mproc_cond_new(&c, l), 0);
    mproc_array *st = value_new(4, 4, false);
    int32_t *s = mproc_array_data(st);
    void *h[] = {c, st};
    int k0 = 0, k1 = 1;
    mproc_process *p0 = start_p(m, cond_waiter, &k0, sizeof k0, h, 2);
    mproc_process *p1 = start_p(m, cond_waiter, &k1, sizeof k1, h, 2);
    for (int i = 0; i < 30000 && th_cond_read(c, &s[0]) < 2; i++)
      nap_ms(1);
    cr_assert_eq(th_cond_read(c, &s[0]), 2, "the waiters never came");
    cr_assert_eq(mproc_cond_acquire(c, T), 0);
    s[1] = 4242 + variant;
    if (variant == 0) {
      cr_expect_eq(mproc_cond_notify(c, 1), 0);
      cr_expect_eq(mproc_cond_notify(c, 1), 0);
    } else {
      cr_expect_eq(mproc_cond_notify_all(c), 0);
    }
    cr_assert_eq(mproc_cond_release(c), 0);
    cr_expect_eq(exit_of(p0), 0);
    cr_expect_eq(exit_of(p1), 0);
    cr_expect_eq(s[2], 4242 + variant);
    cr_expect_eq(s[3], 4242 + variant);
    cr_assert_eq(mproc_cond_acquire(c, T), 0);
    cr_expect_eq(mproc_cond_wait(c, 0.01), MPROC_ETIMEDOUT, "no waiter was left over");
    cr_assert_eq(mproc_cond_release(c), 0);
    mproc_process_free(p0);
    mproc_process_free(p1);
    mproc_array_free(st);
    mproc_cond_free(c);
    if (l)
      mproc_lock_free(l);
  }
}

/* ---- Barrier ---- */

static int barrier_child(void *arg) {
  (void)arg;
  mproc_barrier *b = mproc_process_handle(0);
  return b ? th_barrier_once(b, T) : 3;
}

BOTH(barrier_parties) {
  mproc_barrier *b = NULL;
  cr_assert_eq(mproc_barrier_new(&b, 3), 0);
  void *h[] = {b};
  for (int round = 0; round < 2; round++) {
    mproc_process *p0 = start_p(m, barrier_child, NULL, 0, h, 1);
    mproc_process *p1 = start_p(m, barrier_child, NULL, 0, h, 1);
    int mine = mproc_barrier_wait(b, T);
    cr_assert_geq(mine, 0, "round %d: %s", round, mproc_err_name(mine));
    int c0 = exit_of(p0), c1 = exit_of(p1);
    cr_assert_geq(c0, 10);
    cr_assert_geq(c1, 10);
    int seen = 1 << mine | 1 << (c0 - 10) | 1 << (c1 - 10);
    cr_expect_eq(seen, 7, "round %d: indices %d %d %d", round, mine, c0 - 10, c1 - 10);
    mproc_process_free(p0);
    mproc_process_free(p1);
  }
  mproc_barrier_free(b);
}

/* ---- Array and Value ---- */

#define AN 1000
#define INCS 20000

/* Handles: array int64[AN] (i*i), value with lock, raw value. */
static int array_worker(void *arg) {
  (void)arg;
  mproc_array *a = mproc_process_handle(0), *v = mproc_process_handle(1),
              *raw = mproc_process_handle(2);
  if (!a || !v || !raw)
    return 1;
  if (mproc_array_len(a) != AN || mproc_array_len(v) != 1 || mproc_array_len(raw) != 1)
    return 2;
  if (mproc_array_lock(raw) != NULL || mproc_array_lock(a) != NULL)
    return 3;
  mproc_lock *l = mproc_array_lock(v);
  if (!l)
    return 4;
  for (int64_t i = 0; i < AN; i++)
    if (i64(a)[i] != i * i)
      return 5;
  for (int64_t i = 0; i < AN; i++)
    i64(a)[i] = -3 * i;
  for (int i = 0; i < INCS; i++) {
    if (mproc_lock_acquire(l, T) != 0)
      return 6;
    i64(v)[0]++;
    if (mproc_lock_release(l) != 0)
      return 7;
  }
  i64(raw)[0] = 0x5eed;
  return 0;
}

BOTH(array_and_value) {
  int64_t init[AN];
  for (int64_t i = 0; i < AN; i++)
    init[i] = i * i;
  mproc_array *a = NULL;
  cr_assert_eq(mproc_array_new(&a, 8, AN, init, false), 0);
  mproc_array *v = value_new(8, 1, true), *raw = value_new(8, 1, false);
  void *h[] = {a, v, raw};
  mproc_process *p = start_p(m, array_worker, NULL, 0, h, 3);
  mproc_lock *l = mproc_array_lock(v);
  cr_assert_not_null(l);
  for (int i = 0; i < INCS; i++) {
    cr_assert_eq(mproc_lock_acquire(l, T), 0);
    i64(v)[0]++;
    cr_assert_eq(mproc_lock_release(l), 0);
  }
  cr_expect_eq(exit_of(p), 0);
  mproc_process_free(p);
  cr_expect_eq(i64(v)[0], 2 * INCS, "increments lost: the lock did not exclude");
  cr_expect_eq(i64(raw)[0], 0x5eed);
  size_t wrong = 0;
  for (int64_t i = 0; i < AN; i++)
    wrong += i64(a)[i] != -3 * i;
  cr_expect_eq(wrong, 0);
  mproc_array_free(a);
  mproc_array_free(v);
  mproc_array_free(raw);
}

/* ---- SharedMemory ---- */

#define SHM_SIZE 8192

/* Handle: a segment of SHM_SIZE; arg: its name. Checks the first half, fills the second. */
static int shm_worker(void *arg) {
  mproc_shm *s = mproc_process_handle(0);
  if (!s)
    return 1;
  if (mproc_shm_size(s) != SHM_SIZE)
    return 2;
  if (strcmp(mproc_shm_name(s), (const char *)arg) != 0)
    return 3;
  unsigned char *b = mproc_shm_buf(s);
  for (size_t i = 0; i < SHM_SIZE / 2; i++)
    if (b[i] != (unsigned char)(i * 3))
      return 4;
  for (size_t i = SHM_SIZE / 2; i < SHM_SIZE; i++)
    b[i] = (unsigned char)(i * 5 + 1);
  return 0;
}

BOTH(shared_memory) {
  mproc_shm *s = NULL;
  cr_assert_eq(mproc_shm_create(&s, NULL, SHM_SIZE), 0);
  unsigned char *b = mproc_shm_buf(s);
  for (size_t i = 0; i < SHM_SIZE / 2; i++)
    b[i] = (unsigned char)(i * 3);
  const char *name = mproc_shm_name(s);
  void *h[] = {s};
  cr_expect_eq(run_p(m, shm_worker, name, strlen(name) + 1, h, 1), 0);
  size_t wrong = 0;
  for (size_t i = SHM_SIZE / 2; i < SHM_SIZE; i++)
    wrong += b[i] != (unsigned char)(i * 5 + 1);
  cr_expect_eq(wrong, 0);
  cr_expect_eq(mproc_shm_unlink(s), 0);
  /* Unlinked before the start: the child cannot attach it, and start says so. */
  mproc_process *p = NULL;
  mproc_process_opts o = {.daemon = true, .start_method = m, .arg_len = strlen(name) + 1,
                          .handles = h, .n_handles = 1};
  cr_assert_eq(mproc_process_new(&p, shm_worker, (void *)name, &o), 0);
  int rc = mproc_process_start(p);
  cr_expect_lt(rc, 0, "an unlinked segment crossed");
  cr_expect_eq(rc, -ENOENT, "%s", mproc_err_name(rc));
  mproc_process_free(p);
  mproc_shm_free(s);
}

/* ---- every kind at once ---- */

BOTH(every_kind_in_one_child) {
  mproc_conn *ca = NULL, *cb = NULL;
  cr_assert_eq(mproc_pipe(&ca, &cb, true), 0);
  mproc_queue *q1 = NULL, *q2 = NULL, *q3 = NULL;
  mproc_queue_opts bounded = {.maxsize = 4}, joinable = {.joinable = true};
  cr_assert_eq(mproc_queue_new(&q1, NULL), 0);
  cr_assert_eq(mproc_queue_new(&q2, &bounded), 0);
  cr_assert_eq(mproc_queue_new(&q3, &joinable), 0);
  mproc_lock *l = NULL, *rl = NULL;
  cr_assert_eq(mproc_lock_new(&l, false), 0);
  cr_assert_eq(mproc_lock_new(&rl, true), 0);
  mproc_sem *s = NULL, *bs = NULL;
  cr_assert_eq(mproc_sem_new(&s, 1, false), 0);
  cr_assert_eq(mproc_sem_new(&bs, 1, true), 0);
  mproc_event *e = NULL;
  cr_assert_eq(mproc_event_new(&e), 0);
  mproc_cond *c = NULL;
  cr_assert_eq(mproc_cond_new(&c, NULL), 0);
  mproc_barrier *b = NULL;
  cr_assert_eq(mproc_barrier_new(&b, 1), 0);
  mproc_array *a = value_new(4, 16, true);
  mproc_shm *shm = NULL;
  cr_assert_eq(mproc_shm_create(&shm, NULL, 4096), 0);
  void *h[] = {ca, cb, q1, q2, q3, l, rl, s, bs, e, c, b, a, shm};
  size_t n = sizeof h / sizeof *h;
  cr_expect_eq(run_p(m, handles_present, &n, sizeof n, h, n), 0);
  cr_expect_eq(mproc_shm_unlink(shm), 0);
  mproc_shm_free(shm);
  mproc_array_free(a);
  mproc_barrier_free(b);
  mproc_cond_free(c);
  mproc_event_free(e);
  mproc_sem_free(bs);
  mproc_sem_free(s);
  mproc_lock_free(rl);
  mproc_lock_free(l);
  mproc_queue_free(q3);
  mproc_queue_free(q2);
  mproc_queue_free(q1);
  mproc_conn_free(cb);
  mproc_conn_free(ca);
}

/* ---- functions from a shared library and a dlopened plugin ---- */

BOTH(target_in_shared_library) {
  mproc_array *v = value_new(8, 1, false);
  void *h[] = {v};
  for (uint32_t seed = 1; seed <= 3; seed++) {
    startlib_arg a = {seed};
    i64(v)[0] = 0;
    cr_expect_eq(run_p(m, startlib_target, &a, sizeof a, h, 1), STARTLIB_CODE(seed));
    cr_expect_eq(i64(v)[0], STARTLIB_VALUE(seed));
  }
  mproc_array_free(v);
}

static void *open_plugin(void) {
  void *dl = dlopen(MPROC_TEST_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
  cr_assert_not_null(dl, "dlopen %s: %s", MPROC_TEST_PLUGIN_PATH, dlerror());
  return dl;
}

BOTH(target_in_dlopened_plugin) {
  void *dl = open_plugin();
  mproc_target_fn fn = (mproc_target_fn)dlsym(dl, "plugin_target");
  cr_assert_not_null(fn);
  mproc_array *v = value_new(8, 1, false);
  void *h[] = {v};
  for (uint32_t seed = 5; seed <= 6; seed++) {
    startlib_arg a = {seed};
    i64(v)[0] = 0;
    cr_expect_eq(run_p(m, fn, &a, sizeof a, h, 1), PLUGIN_CODE);
    cr_expect_eq(i64(v)[0], PLUGIN_VALUE(seed));
  }
  mproc_array_free(v);
  dlclose(dl);
}

/* ---- Pool ---- */

static mproc_pool *pool_m(mproc_start_method m, int processes) {
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = processes, .start_method = m};
  int rc = mproc_pool_new(&p, &o);
  cr_assert_eq(rc, 0, "pool under %s: %s", mproc_start_method_name(m), mproc_err_name(rc));
  return p;
}

static int add_one(const void *arg, size_t len, mproc_result *res) {
  if (len != sizeof(int))
    return mproc_result_fail(res, "len %zu", len);
  int v = *(const int *)arg + 1;
  return mproc_result_set(res, &v, sizeof v);
}

static int apply_int(mproc_pool *p, mproc_task_fn fn, int v) {
  void *r = NULL;
  size_t len = 0;
  int rc = mproc_pool_apply(p, fn, &v, sizeof v, &r, &len);
  cr_assert_eq(rc, 0, "apply: %s", mproc_err_name(rc));
  cr_assert_eq(len, sizeof(int));
  int out;
  memcpy(&out, r, sizeof out);
  free(r);
  return out;
}

static int twice_plus_one(const void *in, void *out, const void *args) {
  (void)args;
  *(int64_t *)out = 2 * (int64_t)*(const int32_t *)in + 1;
  return 0;
}

#define MAPN 100000

/* map over MAPN int32 (i - MAPN/2) into int64 (2x + 1): every element and the sum exact. */
static void map_exact(mproc_pool *p, const int32_t *in, int64_t *out) {
  int rc = mproc_pool_map(p, twice_plus_one, in, MAPN, sizeof *in, out, sizeof *out, NULL);
  cr_assert_eq(rc, 0, "map: %s", mproc_err_name(rc));
  int64_t sum = 0;
  size_t wrong = 0;
  for (int64_t i = 0; i < MAPN; i++) {
    sum += out[i];
    wrong += out[i] != 2 * (i - MAPN / 2) + 1;
  }
  cr_expect_eq(wrong, 0);
  /* sum of 2x + 1 over x = -MAPN/2 .. MAPN/2 - 1 */
  cr_expect_eq(sum, 2 * (-(int64_t)(MAPN / 2)) + MAPN, "sum %lld", (long long)sum);
}

static void fill_in(int32_t *in) {
  for (int32_t i = 0; i < MAPN; i++)
    in[i] = i - MAPN / 2;
}

static int reverse_task(const void *arg, size_t len, mproc_result *res) {
  char *out = mproc_result_alloc(res, len);
  if (!out && len)
    return mproc_result_fail(res, "no memory");
  for (size_t i = 0; i < len; i++)
    out[i] = ((const char *)arg)[len - 1 - i];
  return 0;
}

BOTH(pool_apply_map_imap) {
  g_marker = 77;
  mproc_pool *p = pool_m(m, 2);
  for (int i = 0; i < 20; i++)
    cr_expect_eq(apply_int(p, add_one, i * 1000), i * 1000 + 1);
  cr_expect_eq(apply_int(p, marker_task, 0), 0, "a worker saw the caller's memory");

  int32_t *in = malloc(MAPN * sizeof *in);
  int64_t *out = malloc(MAPN * sizeof *out);
  cr_assert(in && out);
  fill_in(in);
  map_exact(p, in, out);
  free(in);
  free(out);

  /* apply_async */
  mproc_async *as[8];
  for (int i = 0; i < 8; i++)
    cr_assert_eq(mproc_pool_apply_async(p, add_one, &i, sizeof i, &as[i]), 0);
  for (int i = 0; i < 8; i++) {
    void *r;
    size_t len;
    cr_assert_eq(mproc_async_get(as[i], &r, &len, T), 0);
    cr_expect_eq(len, sizeof(int));
    cr_expect_eq(*(int *)r, i + 1);
    cr_expect(mproc_async_successful(as[i]));
    free(r);
    mproc_async_free(as[i]);
  }

  /* imap, ordered then unordered */
  enum { NI = 64 };
  char *items[NI];
  size_t lens[NI];
  for (size_t i = 0; i < NI; i++) {
    lens[i] = (i * 37) % 300;
    items[i] = malloc(lens[i] + 1);
    for (size_t j = 0; j < lens[i]; j++)
      items[i][j] = (char)(i + j * 13);
  }
  for (int unordered = 0; unordered < 2; unordered++) {
    mproc_imap_opts io = {.unordered = unordered, .chunksize = unordered ? 3 : 1};
    mproc_imap *it = NULL;
    cr_assert_eq(mproc_pool_imap(p, reverse_task, (const void *const *)items, lens, NI, &io, &it),
                 0);
    bool seen[NI] = {0};
    for (size_t k = 0; k < NI; k++) {
      const void *res;
      size_t len;
      cr_assert_eq(mproc_imap_next(it, &res, &len, T), 0, "item %zu", k);
      size_t i = mproc_imap_index(it);
      cr_assert_lt(i, NI);
      if (!unordered)
        cr_expect_eq(i, k);
      cr_expect(!seen[i], "item %zu twice", i);
      seen[i] = true;
      cr_assert_eq(len, lens[i]);
      for (size_t j = 0; j < len; j++)
        cr_expect_eq(((const char *)res)[j], items[i][lens[i] - 1 - j]);
    }
    cr_expect_eq(mproc_imap_next(it, NULL, NULL, T), MPROC_EOF);
    mproc_imap_free(it);
  }
  for (size_t i = 0; i < NI; i++)
    free(items[i]);

  cr_expect_eq(mproc_pool_close(p), 0);
  cr_expect_eq(mproc_pool_join(p), 0);
  mproc_pool_free(p);
}

/* map input and output in mproc arrays, made before and after the pool. */
/* A mapping that is not mproc's inside the range where mproc places its own (Criterion's
 * BoxFort arena lands at a random address there in every test process): the pool's rings
 * must be placed past it, not left to the kernel, whose choice a spawned child may be using
 * for its own libraries (then mapping them there fails with EEXIST, about 1 pool in 8). */
BOTH(pool_beside_a_foreign_mapping) {
#if defined(__x86_64__)
  void *foreign = MAP_FAILED;
  for (uintptr_t off = 1; off < 64 && foreign == MAP_FAILED; off++) {
    void *want = (void *)(((uintptr_t)32 << 40) + (off << 30));
    foreign = mmap(want, 128 << 10, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (foreign != MAP_FAILED && foreign != want) { /* a kernel that took it as a hint */
      munmap(foreign, 128 << 10);
      cr_skip("MAP_FIXED_NOREPLACE is not supported");
    }
  }
  cr_assert_neq(foreign, MAP_FAILED);
  for (int i = 0; i < 40; i++) {
    mproc_pool *p = pool_m(m, 1);
    cr_assert_eq(apply_int(p, add_one, i), i + 1);
    mproc_pool_free(p);
  }
  munmap(foreign, 128 << 10);
#else
  (void)m;
  cr_skip("mproc places its mappings itself on x86-64 only");
#endif
}

BOTH(pool_map_shared_arrays) {
  mproc_array *ain = NULL, *aout = NULL;
  cr_assert_eq(mproc_array_new(&ain, 4, MAPN, NULL, false), 0);
  cr_assert_eq(mproc_array_new(&aout, 8, MAPN, NULL, false), 0);
  mproc_pool *p = pool_m(m, 2);
  fill_in(mproc_array_data(ain));
  map_exact(p, mproc_array_data(ain), mproc_array_data(aout));
  mproc_array *bin = NULL, *bout = NULL;
  cr_assert_eq(mproc_array_new(&bin, 4, MAPN, NULL, false), 0);
  cr_assert_eq(mproc_array_new(&bout, 8, MAPN, NULL, false), 0);
  fill_in(mproc_array_data(bin));
  map_exact(p, mproc_array_data(bin), mproc_array_data(bout));
  mproc_pool_free(p);
  mproc_array_free(bout);
  mproc_array_free(bin);
  mproc_array_free(aout);
  mproc_array_free(ain);
}

static int segv_task(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  signal(SIGSEGV, SIG_DFL);
  raise(SIGSEGV);
  return 0;
}

static int segv_at_7(const void *in, void *out, const void *args) {
  (void)args;
  int32_t v = *(const int32_t *)in;
  if (v == 7) {
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }
  *(int64_t *)out = v;
  return 0;
}

BOTH(pool_crash_is_contained) {
  mproc_pool *p = pool_m(m, 2);
  void *r = (void *)1;
  cr_expect_eq(mproc_pool_apply(p, segv_task, NULL, 0, &r, NULL), MPROC_ECRASHED);
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, segv_task, NULL, 0, &a), 0);
  cr_expect_eq(mproc_async_get(a, NULL, NULL, T), MPROC_ECRASHED);
  cr_expect(!mproc_async_successful(a));
  cr_expect_not_null(mproc_async_error(a));
  mproc_async_free(a);
  int32_t in[100];
  int64_t out[100];
  for (int i = 0; i < 100; i++)
    in[i] = i;
  cr_expect_eq(mproc_pool_map(p, segv_at_7, in, 100, 4, out, 8, NULL), MPROC_ECRASHED);
  /* The pool goes on: replaced workers. */
  for (int i = 0; i < 10; i++)
    cr_expect_eq(apply_int(p, add_one, i), i + 1);
  int32_t *bin = malloc(MAPN * sizeof *bin);
  int64_t *bout = malloc(MAPN * sizeof *bout);
  fill_in(bin);
  map_exact(p, bin, bout);
  free(bin);
  free(bout);
  mproc_pool_free(p);
}

static int g_init_value; /* set by the initializer, in the workers only */
static int g_init_misalign; /* initargs' address modulo malloc's alignment, as it saw it */

static int init_fn(const void *initargs, size_t len) {
  if (len != sizeof(int))
    return 1;
  g_init_misalign = (int)((uintptr_t)initargs % _Alignof(max_align_t));
  memcpy(&g_init_value, initargs, sizeof g_init_value);
  return 0;
}

static int read_misalign(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  return mproc_result_set(res, &g_init_misalign, sizeof g_init_misalign);
}

static int read_init(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  return mproc_result_set(res, &g_init_value, sizeof g_init_value);
}

static int pid_task(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len;
  pid_t me = getpid();
  return mproc_result_set(res, &me, sizeof me);
}

BOTH(pool_initializer_and_maxtasks) {
  int v = 4242;
  mproc_pool_opts o = {.processes = 2, .initializer = init_fn, .initargs = &v,
                       .initargs_len = sizeof v, .maxtasksperchild = 2, .start_method = m};
  mproc_pool *p = NULL;
  cr_assert_eq(mproc_pool_new(&p, &o), 0);
  v = 0; /* copied */
  for (int i = 0; i < 10; i++) /* replacement workers run it too */
    cr_expect_eq(apply_int(p, read_init, 0), 4242, "task %d", i);
  cr_expect_eq(g_init_value, 0, "the initializer ran in the caller");
  /* As under fork (a malloc'd copy), and as a Process's arg: aligned for any type. */
  cr_expect_eq(apply_int(p, read_misalign, 0), 0, "initargs not aligned for any type");
  mproc_pool_free(p);

  /* maxtasksperchild 1: every task in a fresh worker. */
  mproc_pool_opts o1 = {.processes = 2, .maxtasksperchild = 1, .start_method = m};
  cr_assert_eq(mproc_pool_new(&p, &o1), 0);
  pid_t pids[10];
  mproc_async *a[10];
  for (int i = 0; i < 10; i++)
    cr_assert_eq(mproc_pool_apply_async(p, pid_task, NULL, 0, &a[i]), 0);
  for (int i = 0; i < 10; i++) {
    void *r;
    size_t len;
    cr_assert_eq(mproc_async_get(a[i], &r, &len, T), 0);
    cr_assert_eq(len, sizeof(pid_t));
    memcpy(&pids[i], r, sizeof(pid_t));
    free(r);
    mproc_async_free(a[i]);
    cr_expect_neq(pids[i], getpid());
  }
  for (int i = 0; i < 10; i++)
    for (int j = 0; j < i; j++)
      cr_expect_neq(pids[i], pids[j], "tasks %d and %d ran in the same worker", i, j);
  mproc_pool_free(p);
}

static int init_fail(const void *initargs, size_t len) {
  (void)initargs, (void)len;
  return 1;
}

BOTH(pool_fn_in_no_object_is_einval) {
  void *heap = malloc(64);
  cr_assert_not_null(heap);
  memset(heap, 0xC3, 64);
  mproc_pool *p = pool_m(m, 2);
  int x = 1;
  void *r = NULL;
  cr_expect_eq(mproc_pool_apply(p, (mproc_task_fn)heap, &x, sizeof x, &r, NULL), MPROC_EINVAL);
  mproc_async *a = NULL;
  cr_expect_eq(mproc_pool_apply_async(p, (mproc_task_fn)heap, &x, sizeof x, &a), MPROC_EINVAL);
  int32_t in[4] = {1, 2, 3, 4};
  int64_t out[4];
  cr_expect_eq(mproc_pool_map(p, (mproc_map_fn)heap, in, 4, 4, out, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map_async(p, (mproc_map_fn)heap, in, 4, 4, out, 8, NULL, &a),
               MPROC_EINVAL);
  const void *items[1] = {&x};
  size_t lens[1] = {sizeof x};
  mproc_imap *it = NULL;
  cr_expect_eq(mproc_pool_imap(p, (mproc_task_fn)heap, items, lens, 1, NULL, &it), MPROC_EINVAL);
  /* Nothing was submitted: the pool works on. */
  cr_expect_eq(apply_int(p, add_one, 41), 42);
  cr_expect_eq(mproc_pool_map(p, twice_plus_one, in, 4, 4, out, 8, NULL), 0);
  cr_expect_eq(out[3], 9);
  mproc_pool_free(p);

  /* An initializer in no object: refused at new, nothing left behind. */
  mproc_pool_opts o = {.processes = 1, .initializer = (int (*)(const void *, size_t))heap,
                       .start_method = m};
  p = (mproc_pool *)1;
  cr_expect_eq(mproc_pool_new(&p, &o), MPROC_EINVAL);
  cr_expect_null(p);
  /* An initializer that fails: MPROC_ETASK. */
  o.initializer = init_fail;
  cr_expect_eq(mproc_pool_new(&p, &o), MPROC_ETASK);
  free(heap);
}

BOTH(pool_fns_from_library_and_plugin) {
  void *dl = open_plugin();
  mproc_map_fn pmap = (mproc_map_fn)dlsym(dl, "plugin_map");
  cr_assert_not_null(pmap);
  mproc_pool *p = pool_m(m, 2);
  enum { N = 10000 };
  int32_t *in = malloc(N * sizeof *in);
  int64_t *out = malloc(N * sizeof *out);
  for (int32_t i = 0; i < N; i++)
    in[i] = i - 17;
  cr_assert_eq(mproc_pool_map(p, startlib_map, in, N, 4, out, 8, NULL), 0);
  size_t wrong = 0;
  for (int64_t i = 0; i < N; i++)
    wrong += out[i] != (i - 17) * 3 - 1;
  cr_expect_eq(wrong, 0, "library map function");
  cr_assert_eq(mproc_pool_map(p, pmap, in, N, 4, out, 8, NULL), 0);
  wrong = 0;
  for (int64_t i = 0; i < N; i++)
    wrong += out[i] != (i - 17) * (i - 17) + 7;
  cr_expect_eq(wrong, 0, "plugin map function");
  /* And the executable's own, in the same pool. */
  cr_assert_eq(mproc_pool_map(p, twice_plus_one, in, N, 4, out, 8, NULL), 0);
  cr_expect_eq(out[N - 1], 2 * (int64_t)(N - 1 - 17) + 1);
  free(in);
  free(out);
  mproc_pool_free(p);
  dlclose(dl);
}

/* Several pools and processes alive at once, freed in another order. */
BOTH(pools_and_processes_together) {
  mproc_pool *p1 = pool_m(m, 1), *p2 = pool_m(m, 2);
  mproc_process *pr[4];
  int codes[4] = {11, 12, 13, 14};
  for (int i = 0; i < 4; i++)
    pr[i] = start_p(m, ret_int, &codes[i], sizeof codes[i], NULL, 0);
  cr_expect_eq(apply_int(p1, add_one, 1), 2);
  cr_expect_eq(apply_int(p2, add_one, 2), 3);
  mproc_pool_free(p1);
  for (int i = 0; i < 4; i++) {
    cr_expect_eq(exit_of(pr[i]), codes[i]);
    mproc_process_free(pr[i]);
  }
  cr_expect_eq(apply_int(p2, add_one, 3), 4);
  mproc_pool_free(p2);
}
