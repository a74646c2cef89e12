/* The Manager's dicts in shared memory: a local client's one-key calls run on the dict's
 * table without a request (they go on while the server is stopped), exact counts from
 * four processes, a client killed holding the table's lock or in the middle of sets (the
 * others go on with exact contents), the server killed (later calls MPROC_EOF, then
 * MPROC_ECLOSED), big values growing the table, the shared and the server's paths mixed
 * (insertion order kept), and a TCP client seeing what the shared path wrote. Runs under
 * every start method. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY "manager key"
#define KEYLEN (sizeof KEY - 1)

static mproc_manager *start(const char *address) {
  mproc_manager_opts o = {.address = address, .authkey = KEY, .authkey_len = KEYLEN};
  mproc_manager *m;
  cr_assert_eq(mproc_manager_new(&m, &o), 0);
  return m;
}

static mproc_dict *open_shared(mproc_manager *m, const char *name) {
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, name, &d), 0);
  cr_assert(mproc__dict_test_shared(d), "a local client's dict is not on the shared path");
  return d;
}

static void expect_get(mproc_dict *d, const char *k, const void *want, size_t wl) {
  void *v = NULL;
  size_t n = 0;
  int rc = mproc_dict_get(d, k, strlen(k), &v, &n);
  cr_assert_eq(rc, 0, "%s: %s", k, mproc_err_name(rc));
  cr_assert_eq(n, wl, "%s: %zu bytes, want %zu", k, n, wl);
  cr_assert(memcmp(v, want, n) == 0, "%s: other bytes", k);
  free(v);
}

/* The keys as the server lists them, oldest first, joined by ','. */
static void expect_keys(mproc_dict *d, const char *want) {
  mproc_bytes *k;
  size_t n;
  cr_assert_eq(mproc_dict_keys(d, &k, &n), 0);
  char got[512] = "";
  for (size_t i = 0; i < n; i++)
    snprintf(got + strlen(got), sizeof got - strlen(got), "%s%.*s", i ? "," : "",
             (int)k[i].len, (const char *)k[i].p);
  free(k);
  cr_assert_str_eq(got, want);
}

#define WORKERS 4
#define ADDS 10000

Test(manager_shm, four_processes_add_exactly_without_the_server) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d = open_shared(m, "counts");
  /* Stopped, the server answers no request: the adds can only be done on the table. */
  pid_t server = mproc_manager_pid(m);
  cr_assert_eq(kill(server, SIGSTOP), 0);
  pid_t pids[WORKERS];
  for (int w = 0; w < WORKERS; w++) {
    pids[w] = th_fork_tied();
    cr_assert(pids[w] >= 0);
    if (pids[w] == 0) {
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
  cr_assert_eq(kill(server, SIGCONT), 0);
  /* And the server sees the same table. */
  mproc_bytes *items;
  size_t n;
  cr_assert_eq(mproc_dict_items(d, &items, &n), 0);
  cr_assert_eq(n, 1);
  memcpy(&now, items[1].p, sizeof now);
  cr_assert_eq(now, WORKERS * ADDS);
  free(items);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_shm, client_killed_holding_the_lock_halfway_through_a_set) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d = open_shared(m, "d");
  cr_assert_eq(mproc_dict_set(d, "a", 1, "1", 1), 0);
  cr_assert_eq(mproc_dict_set(d, "b", 1, "2", 1), 0);
  int p[2];
  cr_assert_eq(pipe(p), 0);
  pid_t child = th_fork_tied();
  if (child == 0) {
    close(p[0]);
    if (mproc__dict_test_half_set(d, "new", 3, "val", 3))
      _exit(1);
    (void)!write(p[1], "x", 1);
    for (;;)
      pause(); /* killed here, the lock held */
  }
  close(p[1]);
  char c;
  cr_assert_eq(read(p[0], &c, 1), 1, "the child did not get halfway");
  close(p[0]);
  /* Another client waits for the lock meanwhile: the holder's death hands it on. */
  pid_t waiter = th_fork_tied();
  if (waiter == 0) {
    int64_t now = 0;
    int rc = mproc_dict_add_i64(d, "w", 1, 2, &now);
    _exit(rc == 0 && now == 2 ? 0 : 1);
  }
  th_wait_asleep(waiter);
  cr_assert_eq(kill(child, SIGKILL), 0);
  cr_assert_eq(th_exitcode(child), -SIGKILL);
  cr_assert_eq(th_exitcode(waiter), 0);
  /* The next holder repaired: the pair (committed) is there, nothing else changed. */
  cr_assert_eq(mproc_dict_len(d), 4);
  expect_get(d, "new", "val", 3);
  expect_get(d, "a", "1", 1);
  cr_assert_eq(mproc_dict_set(d, "new", 3, "v2", 2), 0);
  cr_assert_eq(mproc_dict_set(d, "c", 1, "3", 1), 0);
  cr_assert_eq(mproc_dict_len(d), 5);
  expect_keys(d, "a,b,new,w,c");
  expect_get(d, "new", "v2", 2);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

#define NKEYS 32
#define BIG (64 << 10)

/* A value of round r for key i: BIG bytes of one letter, so a torn one shows. */
static void value_of(unsigned char *v, int i, int r) { memset(v, 'A' + (i + r) % 26, BIG); }

Test(manager_shm, clients_killed_in_the_middle_of_sets) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d = open_shared(m, "big");
  unsigned char *v = malloc(BIG);
  cr_assert(v);
  for (int round = 0; round < 4; round++) {
    pid_t child = th_fork_tied();
    if (child == 0) {
      /* Big values: most of the time goes to copying them, under the lock. */
      for (int r = 0;; r++)
        for (int i = 0; i < NKEYS; i++) {
          char k[16];
          snprintf(k, sizeof k, "k%d", i);
          value_of(v, i, r);
          if (mproc_dict_set(d, k, strlen(k), v, BIG) ||
              (i % 3 == 0 && mproc_dict_del(d, k, strlen(k))))
            _exit(1);
        }
    }
    th_sleep_us(20000 + round * 7000);
    cr_assert_eq(kill(child, SIGKILL), 0);
    cr_assert_eq(th_exitcode(child), -SIGKILL);
    /* Every pair there whole: one letter throughout. */
    long len = mproc_dict_len(d);
    cr_assert(len >= 0 && len <= NKEYS, "%ld", len);
    mproc_bytes *items;
    size_t n;
    cr_assert_eq(mproc_dict_items(d, &items, &n), 0);
    cr_assert_eq((long)n, len);
    for (size_t j = 0; j < n; j++) {
      const unsigned char *b = items[2 * j + 1].p;
      cr_assert_eq(items[2 * j + 1].len, BIG);
      for (size_t x = 1; x < BIG; x++)
        cr_assert_eq(b[x], b[0], "a torn value");
    }
    free(items);
  }
  /* And it goes on, exactly. */
  cr_assert_eq(mproc_dict_clear(d), 0);
  for (int i = 0; i < NKEYS; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    value_of(v, i, 7);
    cr_assert_eq(mproc_dict_set(d, k, strlen(k), v, BIG), 0);
  }
  cr_assert_eq(mproc_dict_len(d), NKEYS);
  for (int i = 0; i < NKEYS; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    value_of(v, i, 7);
    expect_get(d, k, v, BIG);
  }
  free(v);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_shm, server_killed_later_calls_fail) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d = open_shared(m, "d");
  mproc_namespace *ns;
  cr_assert_eq(mproc_manager_namespace(m, "ns", &ns), 0);
  cr_assert_eq(mproc_dict_set(d, "a", 1, "x", 1), 0);
  cr_assert_eq(mproc_ns_set(ns, "attr", "y", 1), 0);
  pid_t server = mproc_manager_pid(m);
  cr_assert_eq(kill(server, SIGKILL), 0);
  cr_assert(th_wait_gone(server, 10));
  pid_t child = th_fork_tied();
  if (child == 0) {
    /* A process forked from the client sees it too. */
    int rc = mproc_dict_add_i64(d, "n", 1, 1, NULL);
    int again = mproc_dict_contains(d, "a", 1);
    _exit(rc == MPROC_EOF && again == MPROC_ECLOSED ? 0 : 1);
  }
  cr_assert_eq(th_exitcode(child), 0);
  cr_assert_eq(mproc_dict_set(d, "a", 1, "y", 1), MPROC_EOF);
  void *v;
  size_t vl;
  cr_assert_eq(mproc_dict_get(d, "a", 1, &v, &vl), MPROC_ECLOSED);
  cr_assert_eq(mproc_dict_len(d), MPROC_ECLOSED);
  cr_assert_eq(mproc_ns_get(ns, "attr", &v, &vl), MPROC_ECLOSED);
  cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 1, NULL), MPROC_ECLOSED);
  mproc_ns_free(ns);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_shm, shutdown_closes_the_shared_path) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d = open_shared(m, "d");
  cr_assert_eq(mproc_dict_set(d, "a", 1, "x", 1), 0);
  cr_assert_eq(mproc_manager_shutdown(m), 0);
  cr_assert_eq(mproc_dict_set(d, "a", 1, "y", 1), MPROC_ECLOSED);
  cr_assert_eq(mproc_dict_contains(d, "a", 1), MPROC_ECLOSED);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_shm, big_values_and_many_keys_grow_the_table) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d = open_shared(m, "d");
  size_t sizes[] = {1 << 20, 8 << 20, 40 << 20, 3};
  for (size_t i = 0; i < 4; i++) {
    unsigned char *v = malloc(sizes[i]);
    cr_assert(v);
    for (size_t x = 0; x < sizes[i]; x++)
      v[x] = (unsigned char)(x * 31 + i);
    char k[8];
    snprintf(k, sizeof k, "v%zu", i);
    cr_assert_eq(mproc_dict_set(d, k, strlen(k), v, sizes[i]), 0);
    expect_get(d, k, v, sizes[i]);
    free(v);
  }
  /* Enough keys for several rebuilds of the hash table, half deleted between. */
  for (int i = 0; i < 20000; i++) {
    char k[16];
    snprintf(k, sizeof k, "n%d", i);
    cr_assert_eq(mproc_dict_set(d, k, strlen(k), &i, sizeof i), 0);
    if (i % 2)
      cr_assert_eq(mproc_dict_del(d, k, strlen(k)), 0);
  }
  cr_assert_eq(mproc_dict_len(d), 4 + 10000);
  /* A second client (forked, so on the table already mapped) and the server agree. */
  pid_t child = th_fork_tied();
  if (child == 0) {
    bool ok = mproc_dict_len(d) == 4 + 10000;
    for (int i = 0; ok && i < 20000; i++) {
      char k[16];
      snprintf(k, sizeof k, "n%d", i);
      ok = mproc_dict_contains(d, k, strlen(k)) == !(i % 2);
    }
    _exit(ok ? 0 : 1);
  }
  cr_assert_eq(th_exitcode(child), 0);
  mproc_bytes *keys;
  size_t n;
  cr_assert_eq(mproc_dict_keys(d, &keys, &n), 0);
  cr_assert_eq(n, 4 + 10000);
  cr_assert_eq(keys[3].len, 2);
  cr_assert(memcmp(keys[3].p, "v3", 2) == 0);
  cr_assert_eq(keys[5].len, 2);
  cr_assert(memcmp(keys[5].p, "n2", 2) == 0, "insertion order lost");
  free(keys);
  /* Replacing a big value by a small one, and clearing, give the blocks back for reuse. */
  for (int r = 0; r < 4; r++) {
    unsigned char *v = calloc(1, 40 << 20);
    cr_assert(v);
    cr_assert_eq(mproc_dict_set(d, "v2", 2, v, 40 << 20), 0);
    free(v);
  }
  cr_assert_eq(mproc_dict_clear(d), 0);
  cr_assert_eq(mproc_dict_len(d), 0);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_shm, shared_and_server_paths_mixed) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d = open_shared(m, "d");
  cr_assert_eq(mproc_dict_set(d, "a", 1, "1", 1), 0);
  cr_assert_eq(mproc_dict_set(d, "b", 1, "2", 1), 0);
  cr_assert_eq(mproc_dict_set(d, "c", 1, "3", 1), 0);
  mproc_bytes up[] = {{"d", 1}, {"4", 1}, {"a", 1}, {"one", 3}};
  cr_assert_eq(mproc_dict_update(d, up, 2), 0); /* the server's */
  cr_assert_eq(mproc_dict_del(d, "b", 1), 0);   /* the table's */
  cr_assert_eq(mproc_dict_set(d, "b", 1, "two", 3), 0);
  expect_keys(d, "a,c,d,b");
  expect_get(d, "a", "one", 3);
  void *k, *v;
  size_t kl, vl;
  cr_assert_eq(mproc_dict_popitem(d, &k, &kl, &v, &vl), 0);
  cr_assert(kl == 1 && memcmp(k, "b", 1) == 0 && vl == 3 && memcmp(v, "two", 3) == 0);
  free(k);
  free(v);
  cr_assert_eq(mproc_dict_contains(d, "b", 1), 0);
  cr_assert_eq(mproc_dict_setdefault(d, "e", 1, "5", 1, &v, &vl), 0);
  cr_assert(vl == 1 && memcmp(v, "5", 1) == 0);
  free(v);
  cr_assert_eq(mproc_dict_setdefault(d, "e", 1, "6", 1, &v, &vl), 0);
  cr_assert(vl == 1 && memcmp(v, "5", 1) == 0);
  free(v);
  cr_assert_eq(mproc_dict_pop(d, "c", 1, &v, &vl), 0);
  free(v);
  mproc_bytes *vals;
  size_t n;
  cr_assert_eq(mproc_dict_values(d, &vals, &n), 0);
  cr_assert_eq(n, 3);
  cr_assert(vals[0].len == 3 && vals[1].len == 1 && vals[2].len == 1);
  cr_assert(memcmp(vals[1].p, "4", 1) == 0 && memcmp(vals[2].p, "5", 1) == 0);
  free(vals);
  expect_keys(d, "a,d,e");
  cr_assert_eq(mproc_dict_add_i64(d, "a", 1, 1, NULL), MPROC_EINVAL); /* not a counter */
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_shm, tcp_client_sees_the_shared_path) {
  th_scope s = th_begin();
  mproc_manager *m = start("tcp:127.0.0.1:0");
  mproc_manager *c;
  cr_assert_eq(mproc_manager_connect(&c, mproc_manager_address(m), KEY, KEYLEN, 10), 0);
  mproc_dict *remote;
  cr_assert_eq(mproc_manager_dict(c, "d", &remote), 0);
  cr_assert(!mproc__dict_test_shared(remote), "no descriptor crosses TCP");
  /* The starter maps the table (the server is its own child, on this machine). */
  mproc_dict *d = open_shared(m, "d");
  cr_assert_eq(mproc_dict_set(d, "a", 1, "1", 1), 0);
  cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 5, NULL), 0);
  expect_get(remote, "a", "1", 1);
  int64_t now = 0;
  cr_assert_eq(mproc_dict_add_i64(remote, "n", 1, 1, &now), 0);
  cr_assert_eq(now, 6);
  cr_assert_eq(mproc_dict_set(remote, "b", 1, "2", 1), 0);
  expect_get(d, "b", "2", 1);
  cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 1, &now), 0);
  cr_assert_eq(now, 7);
  expect_keys(remote, "a,n,b");
  mproc_dict_free(remote);
  mproc_manager_free(c);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}
