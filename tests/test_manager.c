/* The Manager: dict and list semantics on tables of cases, exact counts after concurrent
 * updates from forked processes and from an unrelated program over Unix and TCP, the
 * server's death (blocked and later calls fail promptly), clients that die, stall or send
 * garbage, wrong keys, shutdown and bad input. Runs under every start method (the server
 * is born with it). */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY "manager key"
#define KEYLEN (sizeof KEY - 1)
#define KEYHEX "6d616e61676572206b6579"

static mproc_manager *start(const char *address) {
  mproc_manager_opts o = {.address = address, .authkey = KEY, .authkey_len = KEYLEN};
  mproc_manager *m;
  cr_assert_eq(mproc_manager_new(&m, &o), 0);
  return m;
}

static void expect_value(int rc, void *v, size_t n, const char *want) {
  cr_assert_eq(rc, 0, "%s", mproc_err_name(rc));
  cr_assert_eq(n, strlen(want), "got %zu bytes, want %s", n, want);
  cr_assert(memcmp(v, want, n) == 0, "got %.*s, want %s", (int)n, (char *)v, want);
  free(v);
}

/* The call first, then its outputs (an argument list would read them before the call). */
#define EXPECT(call, want)                                                                     \
  do {                                                                                         \
    int rc_ = (call);                                                                          \
    expect_value(rc_, v, n, want);                                                             \
  } while (0)

static void expect_get(mproc_dict *d, const char *k, const char *want) {
  void *v = NULL;
  size_t n = 0;
  EXPECT(mproc_dict_get(d, k, strlen(k), &v, &n), want);
}

static void expect_item(mproc_list *l, long i, const char *want) {
  void *v = NULL;
  size_t n = 0;
  EXPECT(mproc_list_get(l, i, &v, &n), want);
}

Test(manager, dict_semantics) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d, *same;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  void *v;
  size_t n;
  cr_assert_eq(mproc_dict_len(d), 0);
  cr_assert_eq(mproc_dict_get(d, "a", 1, &v, &n), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_dict_set(d, "a", 1, "1", 1), 0);
  cr_assert_eq(mproc_dict_set(d, "b", 1, "", 0), 0);    /* empty value */
  cr_assert_eq(mproc_dict_set(d, "", 0, "empty", 5), 0); /* empty key */
  cr_assert_eq(mproc_dict_set(d, "a", 1, "one", 3), 0);  /* replaced */
  expect_get(d, "a", "one");
  expect_get(d, "b", "");
  expect_get(d, "", "empty");
  cr_assert_eq(mproc_dict_len(d), 3);
  cr_assert_eq(mproc_dict_contains(d, "a", 1), 1);
  cr_assert_eq(mproc_dict_contains(d, "z", 1), 0);
  cr_assert_eq(mproc_dict_del(d, "z", 1), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_dict_del(d, "b", 1), 0);
  cr_assert_eq(mproc_dict_contains(d, "b", 1), 0);
  EXPECT(mproc_dict_pop(d, "a", 1, &v, &n), "one");
  cr_assert_eq(mproc_dict_pop(d, "a", 1, &v, &n), MPROC_ENOTFOUND);
  EXPECT(mproc_dict_setdefault(d, "s", 1, "dflt", 4, &v, &n), "dflt");
  EXPECT(mproc_dict_setdefault(d, "s", 1, "other", 5, &v, &n), "dflt");
  int64_t now = 0;
  cr_assert_eq(mproc_dict_add_i64(d, "c", 1, 5, &now), 0);
  cr_assert_eq(now, 5);
  cr_assert_eq(mproc_dict_add_i64(d, "c", 1, -7, &now), 0);
  cr_assert_eq(now, -2);
  cr_assert_eq(mproc_dict_add_i64(d, "s", 1, 1, &now), MPROC_EINVAL); /* not a counter */
  /* Many keys: the table grows, every one found. */
  for (int i = 0; i < 1000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i);
    cr_assert_eq(mproc_dict_set(d, k, (size_t)kl, k, (size_t)kl), 0);
  }
  cr_assert_eq(mproc_dict_len(d), 1000 + 3);
  expect_get(d, "k777", "k777");
  /* The same name is the same object; a list by that name is refused. */
  cr_assert_eq(mproc_manager_dict(m, "d", &same), 0);
  expect_get(same, "k1", "k1");
  mproc_list *l;
  cr_assert_eq(mproc_manager_list(m, "d", &l), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_clear(same), 0);
  cr_assert_eq(mproc_dict_len(d), 0);
  mproc_dict_free(same);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager, list_semantics) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_list *l;
  cr_assert_eq(mproc_manager_list(m, "l", &l), 0);
  void *v;
  size_t n;
  cr_assert_eq(mproc_list_len(l), 0);
  cr_assert_eq(mproc_list_get(l, 0, &v, &n), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_list_get(l, -1, &v, &n), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_list_pop(l, -1, &v, &n), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_list_append(l, "b", 1), 0);
  cr_assert_eq(mproc_list_append(l, "d", 1), 0);
  cr_assert_eq(mproc_list_insert(l, 0, "a", 1), 0);   /* a b d */
  cr_assert_eq(mproc_list_insert(l, -1, "c", 1), 0);  /* a b c d */
  cr_assert_eq(mproc_list_insert(l, 100, "e", 1), 0); /* clamped: a b c d e */
  cr_assert_eq(mproc_list_insert(l, -100, "_", 1), 0); /* _ a b c d e */
  cr_assert_eq(mproc_list_len(l), 6);
  const char *want[] = {"_", "a", "b", "c", "d", "e"};
  for (long i = 0; i < 6; i++) {
    expect_item(l, i, want[i]);
    expect_item(l, i - 6, want[i]);
  }
  cr_assert_eq(mproc_list_get(l, 6, &v, &n), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_list_get(l, -7, &v, &n), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_list_set(l, -1, "E", 1), 0);
  cr_assert_eq(mproc_list_set(l, 6, "x", 1), MPROC_ENOTFOUND);
  expect_item(l, 5, "E");
  EXPECT(mproc_list_pop(l, 0, &v, &n), "_");
  EXPECT(mproc_list_pop(l, -1, &v, &n), "E");
  EXPECT(mproc_list_pop(l, 1, &v, &n), "b"); /* a c d */
  cr_assert_eq(mproc_list_len(l), 3);
  expect_item(l, 1, "c");
  cr_assert_eq(mproc_list_append(l, "", 0), 0);
  expect_item(l, -1, "");
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "l", &d), MPROC_EINVAL);
  mproc_list_free(l);
  mproc_manager_free(m);
  th_end(s);
}

/* ---- concurrency ---- */

#define WORKERS 4
#define ADDS 10000

Test(manager, four_processes_add_exactly) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "counts", &d), 0);
  pid_t pids[WORKERS];
  for (int w = 0; w < WORKERS; w++) {
    pids[w] = th_fork_tied();
    cr_assert(pids[w] >= 0);
    if (pids[w] == 0) {
      /* The inherited handle reconnects: this process gets a connection of its own. */
      for (int i = 0; i < ADDS; i++)
        if (mproc_dict_add_i64(d, "k", 1, 1, NULL))
          _exit(1);
      mproc_dict_free(d);
      mproc_manager_free(m);
      _exit(0);
    }
  }
  for (int w = 0; w < WORKERS; w++)
    cr_assert_eq(th_exitcode(pids[w]), 0);
  int64_t now = 0;
  cr_assert_eq(mproc_dict_add_i64(d, "k", 1, 0, &now), 0);
  cr_assert_eq(now, WORKERS * ADDS);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

/* The unrelated program (manager_peer) n times at once against address. */
static void peers(mproc_manager *m, int n, int adds) {
  pid_t pids[8];
  char count[16];
  snprintf(count, sizeof count, "%d", adds);
  for (int i = 0; i < n; i++) {
    pids[i] = th_fork_tied();
    cr_assert(pids[i] >= 0);
    if (pids[i] == 0) {
      execl(MPROC_TEST_MANAGER_PEER, "manager_peer", mproc_manager_address(m), KEYHEX, count,
            (char *)NULL);
      _exit(127);
    }
  }
  for (int i = 0; i < n; i++)
    cr_assert_eq(th_exitcode(pids[i]), 0);
  mproc_dict *d;
  mproc_list *l;
  cr_assert_eq(mproc_manager_dict(m, "counts", &d), 0);
  cr_assert_eq(mproc_manager_list(m, "log", &l), 0);
  int64_t now = 0;
  cr_assert_eq(mproc_dict_add_i64(d, "k", 1, 0, &now), 0);
  cr_assert_eq(now, (int64_t)n * adds);
  cr_assert_eq(mproc_list_len(l), n);
  cr_assert_eq(mproc_dict_contains(d, "peer", 4), 1);
  mproc_dict_free(d);
  mproc_list_free(l);
}

Test(manager, unrelated_program_connects_over_unix_and_tcp) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  peers(m, 3, 2000);
  mproc_manager_free(m);
  m = start("tcp:127.0.0.1:0");
  cr_assert(strncmp(mproc_manager_address(m), "tcp:127.0.0.1:", 14) == 0);
  peers(m, 3, 2000);
  /* And a connected handle of this process, beside the starting one. */
  mproc_manager *c;
  cr_assert_eq(mproc_manager_connect(&c, mproc_manager_address(m), KEY, KEYLEN, 10), 0);
  cr_assert_eq(mproc_manager_pid(c), 0);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(c, "counts", &d), 0);
  cr_assert_eq(mproc_dict_len(d), 2);
  mproc_dict_free(d);
  mproc_manager_free(c);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager, wrong_key_refused) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL), *c = (void *)1;
  cr_assert_eq(mproc_manager_connect(&c, mproc_manager_address(m), "nope", 4, 10), MPROC_EAUTH);
  cr_assert_null(c);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0); /* the server goes on */
  cr_assert_eq(mproc_dict_len(d), 0);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

/* ---- faults ---- */

Test(manager, server_killed_blocked_and_later_calls_fail_promptly) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  cr_assert_eq(mproc_dict_set(d, "a", 1, "x", 1), 0);
  pid_t server = mproc_manager_pid(m);
  cr_assert(server > 0);
  cr_assert_eq(kill(server, SIGSTOP), 0);
  pid_t child = th_fork_tied();
  if (child == 0) {
    /* Blocked on a server that does not answer, until it dies (keys is a request; the
     * one-key calls run on the shared table and need no answer). */
    mproc_bytes *keys;
    size_t nk;
    int n = mproc_dict_keys(d, &keys, &nk);
    int again = mproc_dict_set(d, "a", 1, "y", 1);
    _exit(n == MPROC_EOF && again == MPROC_ECLOSED ? 0 : 1);
  }
  th_wait_asleep(child);
  cr_assert_eq(kill(server, SIGKILL), 0);
  cr_assert_eq(th_exitcode(child), 0, "the blocked call did not end with MPROC_EOF");
  long n = mproc_dict_len(d);
  cr_assert(n == MPROC_EOF || n == MPROC_ECLOSED, "%ld", n);
  cr_assert_eq(mproc_dict_len(d), MPROC_ECLOSED);
  void *v;
  size_t vl;
  cr_assert_eq(mproc_dict_get(d, "a", 1, &v, &vl), MPROC_ECLOSED);
  mproc_dict_free(d);
  char path[300];
  snprintf(path, sizeof path, "%s", mproc_manager_address(m) + 5);
  mproc_manager_free(m);
  struct stat st;
  cr_assert_eq(stat(path, &st), -1, "the dead server's socket file stays behind");
  th_end(s);
}

/* A raw client of the manager's address, with the key, sending bytes by hand. */
static mproc_conn *raw(mproc_manager *m) {
  mproc_conn *c;
  cr_assert_eq(mproc_client(&c, mproc_manager_address(m), KEY, KEYLEN, 10), 0);
  return c;
}

static void still_serves(mproc_manager *m) {
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "alive", &d), 0);
  int64_t now;
  cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 1, &now), 0);
  mproc_dict_free(d);
}

Test(manager, stalled_dead_and_garbage_clients_cost_nothing) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  /* Half a request, then silence: the others are served meanwhile. */
  mproc_conn *stalled = raw(m);
  cr_assert_eq(write(mproc_conn_fileno(stalled), "\0\0\0\x40half", 8), 8);
  still_serves(m);
  /* A length of 2^62: that client is dropped at once (faults_test_manager_faults). */
  mproc_conn *huge = raw(m);
  cr_assert_eq(write(mproc_conn_fileno(huge), "\xff\xff\xff\xff\x40\0\0\0\0\0\0\0", 12), 12);
  still_serves(m);
  /* A well-framed message that is not a request: dropped (EOF to it). */
  mproc_conn *junk = raw(m);
  cr_assert_eq(mproc_conn_send(junk, "not a request", 13), 0);
  void *v;
  size_t n;
  cr_assert_eq(mproc_conn_recv(junk, &v, &n, 10), MPROC_EOF);
  still_serves(m);
  /* A client killed in the middle of its request. */
  pid_t child = th_fork_tied();
  if (child == 0) {
    mproc_conn *c = raw(m);
    (void)!write(mproc_conn_fileno(c), "\0\0\0\x20\x03", 5);
    kill(getpid(), SIGKILL);
  }
  cr_assert_eq(th_exitcode(child), -SIGKILL);
  still_serves(m);
  mproc_conn_free(stalled);
  mproc_conn_free(huge);
  mproc_conn_free(junk);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "alive", &d), 0);
  int64_t now;
  cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 0, &now), 0);
  cr_assert_eq(now, 4);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager, shutdown_then_closed) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d;
  mproc_list *l;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  cr_assert_eq(mproc_manager_list(m, "l", &l), 0);
  cr_assert_eq(mproc_manager_shutdown(m), 0);
  cr_assert_eq(mproc_manager_shutdown(m), 0);
  cr_assert_eq(mproc_dict_set(d, "a", 1, "b", 1), MPROC_ECLOSED);
  cr_assert_eq(mproc_list_len(l), MPROC_ECLOSED);
  cr_assert_eq(mproc_manager_dict(m, "e", &d), MPROC_ECLOSED);
  mproc_dict_free(d);
  mproc_list_free(l);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager, random_key_and_bad_input) {
  th_scope s = th_begin();
  mproc_manager *m;
  cr_assert_eq(mproc_manager_new(&m, NULL), 0); /* a random key, a private address */
  mproc_manager *c;
  cr_assert_eq(mproc_manager_connect(&c, mproc_manager_address(m), KEY, KEYLEN, 10), MPROC_EAUTH);
  mproc_dict *d;
  mproc_list *l;
  void *v;
  size_t n;
  cr_assert_eq(mproc_manager_dict(m, NULL, &d), MPROC_EINVAL);
  cr_assert_eq(mproc_manager_dict(m, "x", NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_manager_list(NULL, "x", &l), MPROC_EINVAL);
  cr_assert_eq(mproc_manager_dict(m, "x", &d), 0);
  cr_assert_eq(mproc_dict_set(d, NULL, 3, "v", 1), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_set(d, "k", 1, NULL, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_get(d, "k", 1, NULL, &n), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_get(NULL, "k", 1, &v, &n), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_len(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_list_len(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_list_get(NULL, 0, &v, &n), MPROC_EINVAL);
  cr_assert_eq(mproc_list_append(NULL, "v", 1), MPROC_EINVAL);
  cr_assert_eq(mproc_manager_new(NULL, NULL), MPROC_EINVAL);
  mproc_manager_opts o = {.authkey = KEY};
  cr_assert_eq(mproc_manager_new(&c, &o), MPROC_EINVAL);
  o = (mproc_manager_opts){.address = "tcp:nowhere", .authkey = KEY, .authkey_len = KEYLEN};
  cr_assert_eq(mproc_manager_new(&c, &o), MPROC_EINVAL); /* the server's own bind failed */
  cr_assert_eq(mproc_manager_connect(NULL, "unix:@x", KEY, KEYLEN, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_manager_connect(&c, NULL, KEY, KEYLEN, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_manager_shutdown(NULL), MPROC_EINVAL);
  cr_assert_null(mproc_manager_address(NULL));
  mproc_dict_free(NULL);
  mproc_list_free(NULL);
  mproc_manager_free(NULL);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

/* ---- snapshots and batches ---- */

/* Whether the n strings of v hold exactly the texts want[0..n), in any order. */
static void expect_set(const mproc_bytes *v, size_t n, const char *const *want, size_t nw) {
  cr_assert_eq(n, nw);
  for (size_t i = 0; i < nw; i++) {
    size_t hits = 0;
    for (size_t j = 0; j < n; j++)
      hits += v[j].len == strlen(want[i]) && memcmp(v[j].p, want[i], v[j].len) == 0;
    cr_assert_eq(hits, 1, "%s found %zu times", want[i], hits);
  }
}

Test(manager, dict_snapshots_and_update) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  mproc_bytes *v = NULL;
  size_t n = 99;
  cr_assert_eq(mproc_dict_keys(d, &v, &n), 0); /* empty */
  cr_assert_eq(n, 0);
  free(v);
  mproc_bytes up[] = {{"a", 1}, {"1", 1}, {"bb", 2}, {"", 0}, {"", 0}, {"empty key", 9},
                      {"a", 1}, {"again", 5}}; /* the later "a" wins, as in dict.update */
  cr_assert_eq(mproc_dict_update(d, up, 4), 0);
  cr_assert_eq(mproc_dict_len(d), 3);
  cr_assert_eq(mproc_dict_keys(d, &v, &n), 0);
  const char *keys[] = {"a", "bb", ""};
  expect_set(v, n, keys, 3);
  free(v);
  cr_assert_eq(mproc_dict_items(d, &v, &n), 0);
  cr_assert_eq(n, 3);
  for (size_t i = 0; i < n; i++) {
    const char *want = v[2 * i].len == 1 ? "again" : v[2 * i].len == 2 ? "" : "empty key";
    cr_assert_eq(v[2 * i + 1].len, strlen(want));
    cr_assert(memcmp(v[2 * i + 1].p, want, strlen(want)) == 0);
  }
  free(v);
  cr_assert_eq(mproc_dict_update(d, NULL, 0), 0);
  cr_assert_eq(mproc_dict_update(d, NULL, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_keys(d, NULL, &n), MPROC_EINVAL);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager, list_extend_and_remove) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_list *l;
  cr_assert_eq(mproc_manager_list(m, "l", &l), 0);
  mproc_bytes vals[] = {{"x", 1}, {"y", 1}, {"x", 1}, {"", 0}};
  cr_assert_eq(mproc_list_extend(l, vals, 4), 0);
  cr_assert_eq(mproc_list_extend(l, NULL, 0), 0);
  cr_assert_eq(mproc_list_len(l), 4);
  cr_assert_eq(mproc_list_remove(l, "x", 1), 0); /* the first x only: y x "" */
  cr_assert_eq(mproc_list_remove(l, "z", 1), MPROC_ENOTFOUND);
  cr_assert_eq(mproc_list_remove(l, "", 0), 0); /* y x */
  cr_assert_eq(mproc_list_len(l), 2);
  expect_item(l, 0, "y");
  expect_item(l, 1, "x");
  mproc_bytes bad[] = {{NULL, 3}};
  cr_assert_eq(mproc_list_extend(l, bad, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_list_remove(NULL, "x", 1), MPROC_EINVAL);
  mproc_list_free(l);
  mproc_manager_free(m);
  th_end(s);
}

/* ---- the rest of Python's dict and list, on tables of cases ---- */

/* Whether the n strings of v are exactly want (NULL-terminated), in that order. */
static void expect_seq(const mproc_bytes *v, size_t n, size_t stride, const char *const *want,
                       size_t step) {
  size_t nw = 0;
  while (want[nw])
    nw += step;
  cr_assert_eq(n, nw / step, "%zu entries, want %zu", n, nw / step);
  for (size_t i = 0; i < n; i++) {
    const char *w = want[i * step];
    const mproc_bytes *b = &v[i * stride];
    cr_assert(b->len == strlen(w) && memcmp(b->p, w, b->len) == 0, "entry %zu: %.*s, want %s",
              i, (int)b->len, (const char *)b->p, w);
  }
}

enum { D_SET, D_DEL, D_POP, D_POPITEM, D_CLEAR, D_UPDATE };

typedef struct dict_case {
  int op;
  const char *key, *val; /* D_UPDATE: key "k1=v1,k2=v2" */
  int want;              /* the call's result */
  const char *got_key, *got_val; /* D_POPITEM, D_POP: what came back */
  const char *after[12]; /* key, value, key, value... in order, NULL-terminated */
} dict_case;

static const dict_case dict_cases[] = {
    {D_POPITEM, .want = MPROC_ENOTFOUND, .after = {NULL}},
    {D_SET, "a", "1", 0, .after = {"a", "1", NULL}},
    {D_SET, "b", "2", 0, .after = {"a", "1", "b", "2", NULL}},
    {D_SET, "c", "3", 0, .after = {"a", "1", "b", "2", "c", "3", NULL}},
    /* Set again: the value changes, the place does not. */
    {D_SET, "a", "4", 0, .after = {"a", "4", "b", "2", "c", "3", NULL}},
    /* Deleted and set again: the newest. */
    {D_DEL, "a", .want = 0, .after = {"b", "2", "c", "3", NULL}},
    {D_SET, "a", "5", 0, .after = {"b", "2", "c", "3", "a", "5", NULL}},
    {D_POPITEM, .want = 0, "a", "5", .after = {"b", "2", "c", "3", NULL}},
    {D_SET, "", "", 0, .after = {"b", "2", "c", "3", "", "", NULL}},
    {D_POP, "b", .want = 0, NULL, "2", .after = {"c", "3", "", "", NULL}},
    {D_POPITEM, .want = 0, "", "", .after = {"c", "3", NULL}},
    {D_UPDATE, "x=1,c=6,y=2,x=7", .want = 0, .after = {"c", "6", "x", "7", "y", "2", NULL}},
    {D_POPITEM, .want = 0, "y", "2", .after = {"c", "6", "x", "7", NULL}},
    {D_POPITEM, .want = 0, "x", "7", .after = {"c", "6", NULL}},
    {D_POPITEM, .want = 0, "c", "6", .after = {NULL}},
    {D_POPITEM, .want = MPROC_ENOTFOUND, .after = {NULL}},
    {D_SET, "p", "q", 0, .after = {"p", "q", NULL}},
    {D_CLEAR, .want = 0, .after = {NULL}},
    {D_SET, "after clear", "z", 0, .after = {"after clear", "z", NULL}},
};

/* "k1=v1,k2=v2" as pairs for mproc_dict_update. */
static int update_from(mproc_dict *d, const char *spec) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s", spec);
  mproc_bytes kv[16];
  size_t n = 0;
  for (char *save, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(p, '=');
    kv[2 * n] = (mproc_bytes){p, (size_t)(eq - p)};
    kv[2 * n + 1] = (mproc_bytes){eq + 1, strlen(eq + 1)};
    n++;
  }
  return mproc_dict_update(d, kv, n);
}

static int dict_run(mproc_dict *d, const dict_case *c) {
  void *k = NULL, *v = NULL;
  size_t kl = 0, vl = 0;
  int rc = MPROC_EINVAL;
  const char *key = c->key ? c->key : "";
  switch (c->op) {
  case D_SET:
    return mproc_dict_set(d, key, strlen(key), c->val, strlen(c->val));
  case D_DEL:
    return mproc_dict_del(d, key, strlen(key));
  case D_CLEAR:
    return mproc_dict_clear(d);
  case D_UPDATE:
    return update_from(d, c->key);
  case D_POP:
    if ((rc = mproc_dict_pop(d, key, strlen(key), &v, &vl)) == 0)
      expect_value(0, v, vl, c->got_val);
    return rc;
  case D_POPITEM:
    if ((rc = mproc_dict_popitem(d, &k, &kl, &v, &vl)) == 0) {
      expect_value(0, k, kl, c->got_key);
      expect_value(0, v, vl, c->got_val);
    }
    return rc;
  }
  return rc;
}

/* keys, values and items all show exactly want, in its order. */
static void expect_dict(mproc_dict *d, const char *const *want) {
  mproc_bytes *v;
  size_t n;
  cr_assert_eq(mproc_dict_items(d, &v, &n), 0);
  expect_seq(v, n, 2, want, 2);
  expect_seq(v + 1, n, 2, want + 1, 2);
  free(v);
  cr_assert_eq(mproc_dict_keys(d, &v, &n), 0);
  expect_seq(v, n, 1, want, 2);
  free(v);
  cr_assert_eq(mproc_dict_values(d, &v, &n), 0);
  expect_seq(v, n, 1, want + 1, 2);
  free(v);
  size_t nw = 0;
  while (want[nw])
    nw += 2;
  cr_assert_eq(mproc_dict_len(d), (long)nw / 2);
}

Test(manager, dict_order_popitem_values) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "ordered", &d), 0);
  for (size_t i = 0; i < sizeof dict_cases / sizeof *dict_cases; i++) {
    const dict_case *c = &dict_cases[i];
    int rc = dict_run(d, c);
    cr_assert_eq(rc, c->want, "case %zu: %s, want %s", i, mproc_err_name(rc),
                 mproc_err_name(c->want));
    expect_dict(d, c->after);
  }
  /* Order survives the table's growth: 100 keys, the odd ones deleted, popped newest first. */
  cr_assert_eq(mproc_dict_clear(d), 0);
  char k[16];
  for (int i = 0; i < 100; i++)
    cr_assert_eq(mproc_dict_set(d, k, (size_t)snprintf(k, sizeof k, "k%d", i), "v", 1), 0);
  for (int i = 1; i < 100; i += 2)
    cr_assert_eq(mproc_dict_del(d, k, (size_t)snprintf(k, sizeof k, "k%d", i)), 0);
  mproc_bytes *keys;
  size_t n;
  cr_assert_eq(mproc_dict_keys(d, &keys, &n), 0);
  cr_assert_eq(n, 50);
  for (size_t i = 0; i < n; i++) {
    int kl = snprintf(k, sizeof k, "k%zu", 2 * i);
    cr_assert(keys[i].len == (size_t)kl && memcmp(keys[i].p, k, (size_t)kl) == 0);
  }
  free(keys);
  for (int i = 98; i >= 0; i -= 2) {
    void *kp, *vp;
    size_t kl, vl;
    cr_assert_eq(mproc_dict_popitem(d, &kp, &kl, &vp, &vl), 0);
    snprintf(k, sizeof k, "k%d", i);
    expect_value(0, kp, kl, k);
    expect_value(0, vp, vl, "v");
  }
  cr_assert_eq(mproc_dict_len(d), 0);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

enum { L_FILL, L_CLEAR, L_INDEX, L_COUNT, L_REVERSE, L_SORT, L_SORT_REV };

typedef struct list_case {
  int op;
  const char *val; /* L_FILL: the new contents, comma-separated ("" none; "," one empty) */
  long start, stop;
  long want; /* the call's result: an index, a count, 0, or a code */
  const char *after[8]; /* the contents after, NULL-terminated */
} list_case;

#define ALL 0, LONG_MAX
static const list_case list_cases[] = {
    {L_INDEX, "a", ALL, MPROC_ENOTFOUND, {NULL}},
    {L_COUNT, "a", ALL, 0, {NULL}},
    {L_SORT, NULL, ALL, 0, {NULL}},
    {L_REVERSE, NULL, ALL, 0, {NULL}},
    {L_FILL, "a,b,a,c,a", ALL, 0, {"a", "b", "a", "c", "a", NULL}},
    {L_INDEX, "a", ALL, 0, {"a", "b", "a", "c", "a", NULL}},
    {L_INDEX, "a", 1, LONG_MAX, 2, {"a", "b", "a", "c", "a", NULL}},
    {L_INDEX, "a", -2, LONG_MAX, 4, {"a", "b", "a", "c", "a", NULL}}, /* from 3 */
    {L_INDEX, "a", 1, -1, 2, {"a", "b", "a", "c", "a", NULL}},        /* [1, 4) */
    {L_INDEX, "a", 3, -1, MPROC_ENOTFOUND, {"a", "b", "a", "c", "a", NULL}}, /* [3, 4): c */
    {L_INDEX, "a", -100, 1, 0, {"a", "b", "a", "c", "a", NULL}},      /* start clamped to 0 */
    {L_INDEX, "c", LONG_MIN, 100, 3, {"a", "b", "a", "c", "a", NULL}},
    {L_INDEX, "a", 5, LONG_MAX, MPROC_ENOTFOUND, {"a", "b", "a", "c", "a", NULL}},
    {L_INDEX, "a", 3, 2, MPROC_ENOTFOUND, {"a", "b", "a", "c", "a", NULL}}, /* empty slice */
    {L_INDEX, "a", 0, -100, MPROC_ENOTFOUND, {"a", "b", "a", "c", "a", NULL}},
    {L_INDEX, "z", ALL, MPROC_ENOTFOUND, {"a", "b", "a", "c", "a", NULL}},
    {L_INDEX, "", ALL, MPROC_ENOTFOUND, {"a", "b", "a", "c", "a", NULL}},
    {L_COUNT, "a", ALL, 3, {"a", "b", "a", "c", "a", NULL}},
    {L_COUNT, "c", ALL, 1, {"a", "b", "a", "c", "a", NULL}},
    {L_COUNT, "z", ALL, 0, {"a", "b", "a", "c", "a", NULL}},
    {L_COUNT, "", ALL, 0, {"a", "b", "a", "c", "a", NULL}},
    {L_REVERSE, NULL, ALL, 0, {"a", "c", "a", "b", "a", NULL}},
    {L_FILL, "b,a,ab,", ALL, 0, {"b", "a", "ab", "", NULL}},
    {L_INDEX, "", ALL, 3, {"b", "a", "ab", "", NULL}},
    {L_COUNT, "", ALL, 1, {"b", "a", "ab", "", NULL}},
    {L_SORT, NULL, ALL, 0, {"", "a", "ab", "b", NULL}},
    {L_SORT_REV, NULL, ALL, 0, {"b", "ab", "a", "", NULL}},
    {L_REVERSE, NULL, ALL, 0, {"", "a", "ab", "b", NULL}},
    /* Bytes compare unsigned: 0xff after every letter, 0x01 before. */
    {L_FILL, "b,\xff,\x01,B,bb,b", ALL, 0, {"b", "\xff", "\x01", "B", "bb", "b", NULL}},
    {L_SORT, NULL, ALL, 0, {"\x01", "B", "b", "b", "bb", "\xff", NULL}},
    {L_SORT_REV, NULL, ALL, 0, {"\xff", "bb", "b", "b", "B", "\x01", NULL}},
    {L_FILL, "x", ALL, 0, {"x", NULL}},
    {L_REVERSE, NULL, ALL, 0, {"x", NULL}},
    {L_SORT, NULL, ALL, 0, {"x", NULL}},
    {L_CLEAR, NULL, ALL, 0, {NULL}},
    {L_CLEAR, NULL, ALL, 0, {NULL}},
    {L_FILL, ",", ALL, 0, {"", NULL}},
    {L_INDEX, "", -1, LONG_MAX, 0, {"", NULL}},
};

/* Replaces l's contents with spec's comma-separated items ("": none, ",": one empty). */
static int list_fill(mproc_list *l, const char *spec) {
  int rc = mproc_list_clear(l);
  if (rc || !*spec)
    return rc;
  if (strcmp(spec, ",") == 0)
    return mproc_list_append(l, "", 0);
  for (const char *p = spec;; p++) {
    size_t n = strcspn(p, ",");
    if ((rc = mproc_list_append(l, p, n)) || !p[n])
      return rc;
    p += n;
  }
}

static long list_run(mproc_list *l, const list_case *c) {
  switch (c->op) {
  case L_FILL:
    return list_fill(l, c->val);
  case L_CLEAR:
    return mproc_list_clear(l);
  case L_INDEX:
    return mproc_list_index(l, c->val, strlen(c->val), c->start, c->stop);
  case L_COUNT:
    return mproc_list_count(l, c->val, strlen(c->val));
  case L_REVERSE:
    return mproc_list_reverse(l);
  case L_SORT:
  case L_SORT_REV:
    return mproc_list_sort(l, c->op == L_SORT_REV);
  }
  return MPROC_EINVAL;
}

static void expect_list(mproc_list *l, const char *const *want) {
  mproc_bytes *v;
  size_t n;
  cr_assert_eq(mproc_list_items(l, &v, &n), 0);
  expect_seq(v, n, 1, want, 1);
  free(v);
  cr_assert_eq(mproc_list_len(l), (long)n);
}

static int bytes_cmp(const void *a, const void *b) {
  const mproc_bytes *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->p, y->p, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* A sort of n pseudo-random strings gives what qsort does here (equal items are the same
 * bytes, so any correct sort agrees), ascending and descending. */
static void sort_matches_qsort(mproc_list *l, size_t n) {
  cr_assert_eq(mproc_list_clear(l), 0);
  char (*s)[8] = calloc(n, sizeof *s);
  mproc_bytes *want = calloc(n, sizeof *want);
  cr_assert(s && want);
  uint32_t x = 12345;
  for (size_t i = 0; i < n; i++) {
    size_t len = (x = x * 1103515245u + 12345u) >> 29; /* 0..7 bytes of 4 letters */
    for (size_t j = 0; j < len; j++)
      s[i][j] = (char)('a' + ((x = x * 1103515245u + 12345u) >> 30));
    want[i] = (mproc_bytes){s[i], len};
  }
  cr_assert_eq(mproc_list_extend(l, want, n), 0);
  qsort(want, n, sizeof *want, bytes_cmp);
  for (int rev = 0; rev < 2; rev++) {
    cr_assert_eq(mproc_list_sort(l, rev), 0);
    mproc_bytes *got;
    size_t gn;
    cr_assert_eq(mproc_list_items(l, &got, &gn), 0);
    cr_assert_eq(gn, n);
    for (size_t i = 0; i < n; i++) {
      const mproc_bytes *w = &want[rev ? n - 1 - i : i];
      cr_assert(got[i].len == w->len && memcmp(got[i].p, w->p, w->len) == 0, "n %zu item %zu", n, i);
    }
    free(got);
  }
  free(want);
  free(s);
}

Test(manager, list_index_count_sort_reverse) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_list *l;
  cr_assert_eq(mproc_manager_list(m, "table", &l), 0);
  for (size_t i = 0; i < sizeof list_cases / sizeof *list_cases; i++) {
    const list_case *c = &list_cases[i];
    long rc = list_run(l, c);
    cr_assert_eq(rc, c->want, "case %zu: %ld, want %ld", i, rc, c->want);
    expect_list(l, c->after);
  }
  sort_matches_qsort(l, 37);
  sort_matches_qsort(l, 1000);
  mproc_list_free(l);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager, new_calls_bad_input_and_closed) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d;
  mproc_list *l;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  cr_assert_eq(mproc_manager_list(m, "l", &l), 0);
  mproc_bytes *v;
  void *k, *x;
  size_t n, kl, xl;
  cr_assert_eq(mproc_dict_values(NULL, &v, &n), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_values(d, NULL, &n), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_values(d, &v, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_popitem(NULL, &k, &kl, &x, &xl), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_popitem(d, NULL, &kl, &x, &xl), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_popitem(d, &k, NULL, &x, &xl), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_popitem(d, &k, &kl, NULL, &xl), MPROC_EINVAL);
  cr_assert_eq(mproc_dict_popitem(d, &k, &kl, &x, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_list_clear(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_list_reverse(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_list_sort(NULL, false), MPROC_EINVAL);
  cr_assert_eq(mproc_list_index(NULL, "a", 1, 0, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_list_index(l, NULL, 1, 0, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_list_count(NULL, "a", 1), MPROC_EINVAL);
  cr_assert_eq(mproc_list_count(l, NULL, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_list_count(l, NULL, 0), 0); /* NULL with length 0: the empty string */
  cr_assert_eq(mproc_list_items(NULL, &v, &n), MPROC_EINVAL);
  cr_assert_eq(mproc_list_items(l, NULL, &n), MPROC_EINVAL);
  cr_assert_eq(mproc_list_items(l, &v, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_manager_shutdown(m), 0);
  cr_assert_eq(mproc_dict_values(d, &v, &n), MPROC_ECLOSED);
  cr_assert_eq(mproc_dict_popitem(d, &k, &kl, &x, &xl), MPROC_ECLOSED);
  cr_assert_eq(mproc_list_clear(l), MPROC_ECLOSED);
  cr_assert_eq(mproc_list_reverse(l), MPROC_ECLOSED);
  cr_assert_eq(mproc_list_sort(l, true), MPROC_ECLOSED);
  cr_assert_eq(mproc_list_index(l, "a", 1, 0, LONG_MAX), MPROC_ECLOSED);
  cr_assert_eq(mproc_list_count(l, "a", 1), MPROC_ECLOSED);
  cr_assert_eq(mproc_list_items(l, &v, &n), MPROC_ECLOSED);
  mproc_dict_free(d);
  mproc_list_free(l);
  mproc_manager_free(m);
  th_end(s);
}
