/* Soak: queues, locks and processes under a killer, for MPROC_SOAK_SECONDS (default 10).
 * Each round, under a random start method, starts producers and consumers on one queue and
 * lock holders on one lock, all mproc Processes, while this process (the killer) SIGKILLs
 * and SIGSTOPs (then SIGCONTs) random ones of them. Then it checks exactly:
 * - every message arrived whole and at most once, in its producer's order; a producer's
 *   messages are the first put_ok of its sequence, or one more (it died after its put,
 *   before counting it); a message missing only where a consumer died (at most one each,
 *   taken from the queue before it was recorded);
 * - the counter kept under the lock equals the increments the holders recorded (a holder
 *   killed inside is repaired by the next acquirer, told MPROC_EOWNERDEAD);
 * - no child, descriptor or segment is left.
 * Prints its seed and counts; a fixed seed (MPROC_SOAK_SEED) repeats the random choices. */
#define _GNU_SOURCE
#include "mproc.h"
#include "testing.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MAXP = 4, MAXC = 3, MAXL = 3, MSGS = 400, MAXLEN = 70000 };
enum { ROLE_PRODUCER, ROLE_CONSUMER, ROLE_LOCKER };

/* The shared accounting, an mproc Array of int64 (so every start method shares it). */
enum {
  A_DONE,                        /* set when the producers have ended: consumers drain, stop */
  A_STOP_LOCKERS,                /* set when the lockers are to stop */
  A_COUNTER,                     /* kept under the lock */
  A_RECOVERED,                   /* MPROC_EOWNERDEAD seen by lockers */
  A_PUT = 4,                     /* [MAXP]: messages each producer put and counted */
  A_INCS = A_PUT + MAXP,         /* [MAXL]: increments each locker recorded, under the lock */
  A_SEEN = A_INCS + MAXL,        /* [MAXP * MSGS]: deliveries of each message */
  A_LEN = A_SEEN + MAXP * MSGS
};

typedef struct {
  int role, k;
  unsigned seed;
} job;

static unsigned long long st_rounds, st_msgs, st_lost, st_kills, st_stops, st_incs, st_recov;

#define FAIL(...)                                                                              \
  do {                                                                                         \
    fprintf(stderr, "soak_mix: " __VA_ARGS__);                                                 \
    fprintf(stderr, " (line %d)\n", __LINE__);                                                 \
    exit(1);                                                                                   \
  } while (0)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int64_t ld(int64_t *a, int i) { return __atomic_load_n(&a[i], __ATOMIC_SEQ_CST); }
static void st(int64_t *a, int i, int64_t v) { __atomic_store_n(&a[i], v, __ATOMIC_SEQ_CST); }
static void inc(int64_t *a, int i) { __atomic_fetch_add(&a[i], 1, __ATOMIC_SEQ_CST); }

static uint8_t byte_of(int k, int seq, size_t j) { return (uint8_t)(k * 31 + seq * 7 + j); }

/* A message: producer, sequence number, length, then bytes that depend on all three. */
static size_t make_msg(uint8_t *m, int k, int seq, unsigned *seed) {
  size_t len = 12 + (rand_r(seed) % 8 == 0 ? (size_t)rand_r(seed) % MAXLEN : (size_t)rand_r(seed) % 200);
  int32_t h[3] = {k, seq, (int32_t)len};
  memcpy(m, h, sizeof h);
  for (size_t j = 12; j < len; j++)
    m[j] = byte_of(k, seq, j);
  return len;
}

static int producer(mproc_queue *q, int64_t *a, job *j) {
  static uint8_t m[MAXLEN + 12];
  for (int seq = 0; seq < MSGS; seq++) {
    size_t len = make_msg(m, j->k, seq, &j->seed);
    if (mproc_queue_put(q, m, len, MPROC_FOREVER) != 0)
      return 2;
    st(a, A_PUT + j->k, seq + 1);
  }
  return 0;
}

/* Checks a message and counts it: 0, or why it is wrong. */
static int record(int64_t *a, const uint8_t *m, size_t len) {
  int32_t h[3];
  if (len < sizeof h)
    return 3;
  memcpy(h, m, sizeof h);
  if (h[0] < 0 || h[0] >= MAXP || h[1] < 0 || h[1] >= MSGS || (size_t)h[2] != len)
    return 4;
  for (size_t j = 12; j < len; j++)
    if (m[j] != byte_of(h[0], h[1], j))
      return 5;
  inc(a, A_SEEN + h[0] * MSGS + h[1]);
  return 0;
}

static int consumer(mproc_queue *q, int64_t *a) {
  for (;;) {
    void *m = NULL;
    size_t len = 0;
    bool done = ld(a, A_DONE) != 0; /* read before the get: a timeout after it means empty */
    int rc = mproc_queue_get(q, &m, &len, 0.05);
    if (rc == MPROC_ETIMEDOUT && done)
      return 0;
    if (rc == MPROC_ETIMEDOUT)
      continue;
    if (rc != 0)
      return 6;
    rc = record(a, m, len);
    free(m);
    if (rc)
      return rc;
  }
}

static int locker(mproc_lock *l, int64_t *a, job *j) {
  while (!ld(a, A_STOP_LOCKERS)) {
    int rc = mproc_lock_acquire(l, MPROC_FOREVER);
    if (rc == MPROC_EOWNERDEAD) { /* its holder died between its two writes, or after */
      int64_t sum = 0;
      for (int i = 0; i < MAXL; i++)
        sum += ld(a, A_INCS + i);
      st(a, A_COUNTER, sum);
      inc(a, A_RECOVERED);
    } else if (rc != 0) {
      return 7;
    }
    st(a, A_COUNTER, ld(a, A_COUNTER) + 1);
    for (volatile int spin = rand_r(&j->seed) % 2000; spin > 0; spin--) {
    }
    st(a, A_INCS + j->k, ld(a, A_INCS + j->k) + 1);
    if (mproc_lock_release(l) != 0)
      return 8;
  }
  return 0;
}

/* The target of every child: handles are the queue, the lock and the accounting. */
static int child(void *arg) {
  job *j = arg;
  mproc_queue *q = mproc_process_handle(0);
  mproc_lock *l = mproc_process_handle(1);
  mproc_array *arr = mproc_process_handle(2);
  if (!q || !l || !arr)
    return 9;
  int64_t *a = mproc_array_data(arr);
  switch (j->role) {
  case ROLE_PRODUCER:
    return producer(q, a, j);
  case ROLE_CONSUMER:
    return consumer(q, a);
  default:
    return locker(l, a, j);
  }
}

typedef struct {
  mproc_process *p;
  int role;
  bool killed;
} kid;

/* Starts a child of role number k. */
static void start_kid(kid *c, int role, int k, mproc_start_method m, void *const *h) {
  job j = {role, k, (unsigned)rand()};
  mproc_process_opts o = {.start_method = m, .arg_len = sizeof j, .handles = h, .n_handles = 3};
  int rc = mproc_process_new(&c->p, child, &j, &o);
  if (rc == 0)
    rc = mproc_process_start(c->p);
  if (rc)
    FAIL("process start (%s): %s", mproc_start_method_name(m), mproc_err_name(rc));
  c->role = role;
  c->killed = false;
}

/* One act of the killer on a random child still running: SIGKILL, or SIGSTOP then SIGCONT
 * a little later. Producers are killed less often, so that messages flow. */
static void strike(kid *kids, int n) {
  kid *c = &kids[rand() % n];
  pid_t pid = mproc_process_pid(c->p);
  if (c->killed || !mproc_process_is_alive(c->p))
    return;
  if (rand() % 3 == 0) {
    if (c->role == ROLE_PRODUCER && rand() % 2)
      return;
    if (kill(pid, SIGKILL) == 0) {
      c->killed = true;
      st_kills++;
    }
  } else if (kill(pid, SIGSTOP) == 0) {
    usleep(500 + rand() % 3000);
    kill(pid, SIGCONT);
    st_stops++;
  }
}

/* Joins every child of role; returns how many were killed (and checks the others ended 0). */
static int join_role(kid *kids, int n, int role) {
  int killed = 0;
  for (int i = 0; i < n; i++) {
    if (kids[i].role != role)
      continue;
    int ec = -1;
    if (mproc_process_join(kids[i].p, 60) != 0 || mproc_process_exitcode(kids[i].p, &ec) != 0)
      FAIL("a child of role %d did not end", role);
    if (ec == -SIGKILL && kids[i].killed)
      killed++;
    else if (ec != 0)
      FAIL("a child of role %d ended with %d", role, ec);
  }
  return killed;
}

static void check_messages(mproc_queue *q, int64_t *a, int np, int consumers_killed) {
  for (;;) { /* what no consumer took (they may all have been killed) */
    void *m = NULL;
    size_t len = 0;
    int rc = mproc_queue_get(q, &m, &len, 0);
    if (rc == MPROC_EAGAIN || rc == MPROC_ETIMEDOUT)
      break;
    if (rc != 0 || record(a, m, len) != 0)
      FAIL("draining: %s", mproc_err_name(rc));
    free(m);
  }
  long missing = 0;
  for (int k = 0; k < np; k++) {
    int64_t put = ld(a, A_PUT + k);
    for (int s = 0; s < MSGS; s++) {
      int64_t seen = ld(a, A_SEEN + k * MSGS + s);
      if (seen > 1)
        FAIL("message %d of producer %d arrived %lld times", s, k, (long long)seen);
      if (s < put && seen == 0)
        missing++;
      /* One past put_ok: put, then the producer was killed before it counted it. */
      if (s > put && seen)
        FAIL("message %d of producer %d arrived, %lld put", s, k, (long long)put);
      st_msgs += (unsigned long long)seen;
    }
  }
  if (missing > consumers_killed)
    FAIL("%ld messages lost with %d consumers killed", missing, consumers_killed);
  st_lost += (unsigned long long)missing;
}

static void one_round(void) {
  static const mproc_start_method methods[] = {MPROC_START_FORK, MPROC_START_FORKSERVER,
                                               MPROC_START_SPAWN};
  mproc_start_method m = methods[rand() % 3];
  mproc_queue *q;
  mproc_lock *l;
  mproc_array *arr;
  if (mproc_queue_new(&q, NULL) || mproc_lock_new(&l, false) ||
      mproc_array_new(&arr, sizeof(int64_t), A_LEN, NULL, false))
    FAIL("making the queue, lock and array");
  int64_t *a = mproc_array_data(arr);
  void *const h[3] = {q, l, arr};
  int np = 1 + rand() % MAXP, nc = 1 + rand() % MAXC, nl = 1 + rand() % MAXL, n = 0;
  kid kids[MAXP + MAXC + MAXL];
  for (int i = 0; i < np; i++)
    start_kid(&kids[n++], ROLE_PRODUCER, i, m, h);
  for (int i = 0; i < nc; i++)
    start_kid(&kids[n++], ROLE_CONSUMER, i, m, h);
  for (int i = 0; i < nl; i++)
    start_kid(&kids[n++], ROLE_LOCKER, i, m, h);
  double end = now() + 0.3 + (rand() % 700) / 1000.0;
  while (now() < end) {
    usleep(1000 + rand() % 20000);
    strike(kids, n);
  }
  join_role(kids, n, ROLE_PRODUCER);
  st(a, A_DONE, 1);
  int ckilled = join_role(kids, n, ROLE_CONSUMER);
  st(a, A_STOP_LOCKERS, 1);
  join_role(kids, n, ROLE_LOCKER);
  check_messages(q, a, np, ckilled);
  /* A holder killed after its last increment leaves the repair to the next acquirer. */
  int lrc = mproc_lock_acquire(l, 5);
  if (lrc != 0 && lrc != MPROC_EOWNERDEAD)
    FAIL("lock after the round: %s", mproc_err_name(lrc));
  int64_t sum = 0;
  for (int i = 0; i < MAXL; i++)
    sum += ld(a, A_INCS + i);
  if (lrc == MPROC_EOWNERDEAD)
    st(a, A_COUNTER, sum), st_recov++;
  if (ld(a, A_COUNTER) != sum)
    FAIL("counter %lld, %lld increments recorded", (long long)ld(a, A_COUNTER), (long long)sum);
  mproc_lock_release(l);
  st_incs += (unsigned long long)sum;
  st_recov += (unsigned long long)ld(a, A_RECOVERED);
  for (int i = 0; i < n; i++)
    mproc_process_free(kids[i].p);
  mproc_array_free(arr);
  mproc_lock_free(l);
  mproc_queue_free(q);
  st_rounds++;
}

int main(void) {
  const char *e = getenv("MPROC_SOAK_SECONDS");
  double secs = e && *e ? atof(e) : 10;
  e = getenv("MPROC_SOAK_SEED");
  unsigned seed = e && *e ? (unsigned)strtoul(e, NULL, 10) : (unsigned)time(NULL);
  srand(seed);
  printf("soak_mix: seed %u\n", seed);
  fflush(stdout);
  int fds = mproc__count_fds();
  double end = now() + secs;
  while (now() < end) {
    one_round();
    mproc_forkserver_stop(); /* its children are ours in all but name: none may be left */
    if (waitpid(-1, NULL, WNOHANG) != -1)
      FAIL("a child process is left after a round");
    if (mproc__count_fds() != fds)
      FAIL("descriptors: %d after a round, %d before", mproc__count_fds(), fds);
  }
  printf("soak_mix: seed %u, %.0f s: %llu rounds, %llu processes killed, %llu stopped and "
         "continued, %llu messages arrived whole and once (%llu taken by a killed consumer), "
         "%llu increments exact under the lock (%llu owner-dead recoveries): nothing left\n",
         seed, secs, st_rounds, st_kills, st_stops, st_msgs, st_lost, st_incs, st_recov);
  return 0;
}
