/* The Manager: dict and list semantics on tables of cases, exact counts after concurrent
 * updates from forked processes and from an unrelated program over Unix and TCP, the
 * server's death (blocked and later calls fail promptly), clients that die, stall or send
 * garbage, wrong keys, shutdown and bad input. Runs under every start method (the server
 * is born with it). */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <errno.h>
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
    /* Blocked on a server that does not answer, until it dies. */
    long n = mproc_dict_len(d);
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
