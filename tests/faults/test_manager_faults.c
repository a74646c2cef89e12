/* The Manager under faults: its server SIGKILLed while clients are blocked in a managed
 * Lock's acquire and a Queue's get (both calls end with MPROC_EOF, later ones
 * MPROC_ECLOSED); a client SIGKILLed holding a managed Lock (handed on with
 * MPROC_EOWNERDEAD, to one already waiting and to the next) or blocked in a request; a
 * wrong key, a malformed frame, a length of 2^62, a half-sent handshake, a client that
 * stops reading its replies: each costs only its own connection, the server serves the
 * rest. Nothing is left behind. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define KEY "manager key"
#define KEYLEN (sizeof KEY - 1)

static mproc_manager *start(const char *address) {
  mproc_manager_opts o = {.address = address, .authkey = KEY, .authkey_len = KEYLEN};
  mproc_manager *m;
  cr_assert_eq(mproc_manager_new(&m, &o), 0);
  return m;
}

/* One round trip on a fresh object: the server still serves. */
static void still_serves(mproc_manager *m) {
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "alive", &d), 0);
  cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 1, NULL), 0);
  mproc_dict_free(d);
}

static bool gone_code(int rc) { return rc == MPROC_EOF || rc == MPROC_ECLOSED; }

Test(manager_faults, server_killed_while_clients_block_in_acquire_and_get) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_lock *l;
  mproc_queue *q;
  cr_assert_eq(mproc_manager_lock(m, "l", false, &l), 0);
  cr_assert_eq(mproc_manager_queue(m, "q", NULL, &q), 0);
  cr_assert_eq(mproc_lock_acquire(l, MPROC_FOREVER), 0);
  pid_t a = th_fork_tied();
  if (a == 0) {
    int rc = mproc_lock_acquire(l, MPROC_FOREVER);
    _exit(gone_code(rc) && mproc_lock_release(l) == MPROC_ECLOSED ? 0 : 1);
  }
  pid_t b = th_fork_tied();
  if (b == 0) {
    void *v;
    size_t n;
    int rc = mproc_queue_get(q, &v, &n, MPROC_FOREVER);
    _exit(gone_code(rc) && mproc_queue_put(q, "x", 1, 0) == MPROC_ECLOSED ? 0 : 1);
  }
  th_wait_asleep(a);
  th_wait_asleep(b);
  cr_assert_eq(kill(mproc_manager_pid(m), SIGKILL), 0);
  cr_assert_eq(th_exitcode(a), 0, "the blocked acquire did not end with MPROC_EOF");
  cr_assert_eq(th_exitcode(b), 0, "the blocked get did not end with MPROC_EOF");
  cr_assert(gone_code(mproc_lock_release(l)));
  cr_assert_eq(mproc_queue_qsize(q), MPROC_ECLOSED);
  mproc_lock_free(l);
  mproc_queue_free(q);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_faults, client_killed_holding_a_lock_hands_it_on) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_lock *l, *r;
  cr_assert_eq(mproc_manager_lock(m, "l", false, &l), 0);
  cr_assert_eq(mproc_manager_lock(m, "r", true, &r), 0);
  int held[2];
  cr_assert_eq(pipe(held), 0);
  pid_t holder = th_fork_tied();
  if (holder == 0) {
    if (mproc_lock_acquire(l, MPROC_FOREVER) || mproc_lock_acquire(r, 0) ||
        mproc_lock_acquire(r, 0))
      _exit(1);
    (void)!write(held[1], "h", 1); /* held: now kill me */
    pause();
    _exit(2);
  }
  close(held[1]);
  char h;
  cr_assert_eq(read(held[0], &h, 1), 1, "the holder did not take the locks");
  close(held[0]);
  /* One already waiting when the holder dies gets the lock with MPROC_EOWNERDEAD. */
  pid_t waiter = th_fork_tied();
  if (waiter == 0) {
    int rc = mproc_lock_acquire(l, MPROC_FOREVER);
    _exit(rc == MPROC_EOWNERDEAD && mproc_lock_release(l) == 0 ? 0 : 1);
  }
  th_wait_asleep(waiter);
  cr_assert_eq(mproc_lock_acquire(r, 0), MPROC_EAGAIN);
  cr_assert_eq(kill(holder, SIGKILL), 0);
  cr_assert_eq(th_exitcode(holder), -SIGKILL);
  cr_assert_eq(th_exitcode(waiter), 0, "the waiter did not get the lock with MPROC_EOWNERDEAD");
  /* The next acquirer of the RLock held twice: MPROC_EOWNERDEAD once, depth 1. */
  cr_assert_eq(mproc_lock_acquire(r, MPROC_FOREVER), MPROC_EOWNERDEAD);
  cr_assert_eq(mproc_lock_release(r), 0);
  cr_assert_eq(mproc_lock_release(r), MPROC_ESTATE);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0); /* handed on cleanly once */
  cr_assert_eq(mproc_lock_release(l), 0);
  mproc_lock_free(l);
  mproc_lock_free(r);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_faults, client_killed_blocked_in_a_request_costs_nothing) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_queue *q;
  mproc_sem *sem;
  cr_assert_eq(mproc_manager_queue(m, "q", NULL, &q), 0);
  cr_assert_eq(mproc_manager_sem(m, "s", 0, false, &sem), 0);
  pid_t c = th_fork_tied();
  if (c == 0) {
    void *v;
    size_t n;
    (void)mproc_queue_get(q, &v, &n, MPROC_FOREVER);
    _exit(1);
  }
  pid_t d = th_fork_tied();
  if (d == 0) {
    (void)mproc_sem_acquire(sem, MPROC_FOREVER);
    _exit(1);
  }
  th_wait_asleep(c);
  th_wait_asleep(d);
  cr_assert_eq(kill(c, SIGKILL), 0);
  cr_assert_eq(kill(d, SIGKILL), 0);
  cr_assert_eq(th_exitcode(c), -SIGKILL);
  cr_assert_eq(th_exitcode(d), -SIGKILL);
  /* The dead getter took nothing: the next message is ours, the unit too. */
  cr_assert_eq(mproc_queue_put(q, "m", 1, 0), 0);
  cr_assert_eq(mproc_sem_release(sem), 0);
  void *v;
  size_t n;
  cr_assert_eq(mproc_queue_get(q, &v, &n, MPROC_FOREVER), 0);
  cr_assert(n == 1 && memcmp(v, "m", 1) == 0);
  free(v);
  cr_assert_eq(mproc_sem_acquire(sem, 0), 0);
  still_serves(m);
  mproc_queue_free(q);
  mproc_sem_free(sem);
  mproc_manager_free(m);
  th_end(s);
}

/* A socket connected to a unix: path address, nothing sent. */
static int raw_unix(const char *address) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert(fd >= 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", address + 5);
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

Test(manager_faults, bad_clients_are_dropped_the_rest_served) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_manager *c = NULL;
  /* A wrong key: refused with MPROC_EAUTH. */
  cr_assert_eq(mproc_manager_connect(&c, mproc_manager_address(m), "nope", 4, 10), MPROC_EAUTH);
  still_serves(m);
  /* Half a handshake, then silence, on two connections: the others go on meanwhile (the
   * handshake runs in the client's own thread, not the accept loop). */
  int half = raw_unix(mproc_manager_address(m)), mute = raw_unix(mproc_manager_address(m));
  cr_assert_eq(write(half, "\0\0\0\x14", 4), 4);
  for (int i = 0; i < 20; i++)
    still_serves(m);
  close(half);
  close(mute);
  /* A length of 2^62: dropped at once (EOF to it), nothing awaited. */
  mproc_conn *huge;
  cr_assert_eq(mproc_client(&huge, mproc_manager_address(m), KEY, KEYLEN, 10), 0);
  cr_assert_eq(write(mproc_conn_fileno(huge), "\xff\xff\xff\xff\x40\0\0\0\0\0\0\0", 12), 12);
  void *v;
  size_t n;
  cr_assert_eq(mproc_conn_recv(huge, &v, &n, 10), MPROC_EOF);
  mproc_conn_free(huge);
  /* A malformed request (a field's length past the message): dropped. */
  mproc_conn *bad;
  cr_assert_eq(mproc_client(&bad, mproc_manager_address(m), KEY, KEYLEN, 10), 0);
  unsigned char req[14 + 8] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0};
  cr_assert_eq(mproc_conn_send(bad, req, sizeof req), 0);
  cr_assert_eq(mproc_conn_recv(bad, &v, &n, 10), MPROC_EOF);
  mproc_conn_free(bad);
  still_serves(m);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "alive", &d), 0);
  int64_t now = 0;
  cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 0, &now), 0);
  cr_assert_eq(now, 22);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

/* A client that asks for big values and never reads the replies stalls only its own
 * connection: its sends wait in its thread, the others are served. */
Test(manager_faults, a_client_that_stops_reading_stalls_no_one) {
  th_scope s = th_begin();
  mproc_manager *m = start(NULL);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  size_t big = 8u << 20;
  char *val = calloc(1, big);
  cr_assert_eq(mproc_dict_set(d, "big", 3, val, big), 0);
  free(val);
  mproc_conn *greedy;
  cr_assert_eq(mproc_client(&greedy, mproc_manager_address(m), KEY, KEYLEN, 10), 0);
  /* MGR_OPEN_DICT "d" (its id is 0, the first object), then MGR_D_GET "big" four times. */
  unsigned char open[14 + 9] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 'd'};
  cr_assert_eq(mproc_conn_send(greedy, open, sizeof open), 0);
  unsigned char get[14 + 11] = {4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0,
                                'b', 'i', 'g'};
  for (int i = 0; i < 4; i++)
    cr_assert_eq(mproc_conn_send(greedy, get, sizeof get), 0);
  for (int i = 0; i < 50; i++)
    still_serves(m);
  mproc_conn_free(greedy);
  still_serves(m);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}
