/* Soak: pools made and ended again and again for MPROC_SOAK_SECONDS (default 20), each
 * under a random start method and options, with tasks that kill themselves, workers killed
 * from outside at random moments (or stopped, then continued), maps, and a forked child
 * submitting too. Every result is checked exactly: a task's value, or MPROC_ECRASHED for a task whose worker died; after
 * each pool no child process and no descriptor of it is left. Exits 0, or 1 with what
 * broke. A fixed seed (MPROC_SOAK_SEED) repeats a run. */
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

enum { TASKS = 200, MAP_N = 20000 };
#define SUICIDE INT64_MIN

static unsigned long long stat_pools, stat_tasks, stat_crashed, stat_kills, stat_stops, stat_maps;

#define FAIL(...)                                                                              \
  do {                                                                                         \
    fprintf(stderr, "soak_pool: " __VA_ARGS__);                                                \
    fprintf(stderr, " (line %d)\n", __LINE__);                                                 \
    exit(1);                                                                                   \
  } while (0)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int times3(const void *arg, size_t len, mproc_result *res) {
  int64_t v;
  if (len != sizeof v)
    return 1;
  memcpy(&v, arg, sizeof v);
  if (v == SUICIDE)
    raise(SIGKILL);
  v *= 3;
  return mproc_result_set(res, &v, sizeof v);
}

static int square(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

/* SIGKILL a random worker, or (one time in three) SIGSTOP it and SIGCONT it a moment later:
 * a stopped worker only delays its task, which must still end exactly once. */
static void kill_a_worker(mproc_pool *p) {
  pid_t w[8];
  int n = mproc__pool_worker_pids(p, w, 8);
  if (n <= 0)
    return;
  pid_t pid = w[rand() % (n < 8 ? n : 8)];
  if (rand() % 3 == 0) {
    if (kill(pid, SIGSTOP) == 0) {
      usleep(500 + rand() % 5000);
      kill(pid, SIGCONT);
      stat_stops++;
    }
  } else if (kill(pid, SIGKILL) == 0) {
    stat_kills++;
  }
}

static void run_tasks(mproc_pool *p, bool kills) {
  mproc_async *a[TASKS];
  int64_t arg[TASKS];
  for (int i = 0; i < TASKS; i++) {
    arg[i] = rand() % 50 == 0 ? SUICIDE : (int64_t)rand() - RAND_MAX / 2;
    if (mproc_pool_apply_async(p, times3, &arg[i], sizeof arg[i], &a[i]) != 0)
      FAIL("apply_async %d", i);
  }
  for (int i = 0; i < TASKS; i++) {
    if (kills && rand() % 40 == 0)
      kill_a_worker(p);
    void *r = NULL;
    size_t len = 0;
    int rc = mproc_async_get(a[i], &r, &len, MPROC_FOREVER);
    stat_tasks++;
    if (rc == MPROC_ECRASHED) {
      stat_crashed++; /* its own SIGKILL, or one of ours */
    } else if (arg[i] == SUICIDE) {
      FAIL("a task that killed its worker gave %s", mproc_err_name(rc));
    } else if (rc != 0 || len != sizeof(int64_t) || *(int64_t *)r != 3 * arg[i]) {
      FAIL("task %d: %s, %zu bytes", i, mproc_err_name(rc), len);
    }
    free(r);
    mproc_async_free(a[i]);
  }
}

static void run_map(mproc_pool *p, bool kills) {
  static int64_t in[MAP_N], out[MAP_N];
  for (int i = 0; i < MAP_N; i++)
    in[i] = rand() % 100000;
  if (kills)
    kill_a_worker(p);
  int rc = mproc_pool_map(p, square, in, MAP_N, sizeof *in, out, sizeof *out, NULL);
  stat_maps++;
  if (rc == MPROC_ECRASHED)
    return;
  if (rc != 0)
    FAIL("map: %s", mproc_err_name(rc));
  for (int i = 0; i < MAP_N; i++)
    if (out[i] != in[i] * in[i])
      FAIL("map element %d", i);
}

/* A child forked after the pool was made submits too, exactly checked in the child. */
static void run_client(mproc_pool *p) {
  pid_t c = fork();
  if (c < 0)
    FAIL("fork");
  if (c == 0) {
    int ok = 1;
    for (int64_t v = 1; v <= 20 && ok; v++) {
      void *r = NULL;
      size_t len = 0;
      int rc = mproc_pool_apply(p, times3, &v, sizeof v, &r, &len);
      ok = rc == MPROC_ECRASHED || (rc == 0 && len == sizeof v && *(int64_t *)r == 3 * v);
      free(r);
    }
    mproc_pool_free(p);
    _exit(ok ? 0 : 1);
  }
  int st;
  if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    FAIL("the forked client failed (status %d)", st);
}

static void one_pool(void) {
  static const mproc_start_method methods[] = {MPROC_START_FORK, MPROC_START_FORKSERVER,
                                               MPROC_START_SPAWN};
  mproc_pool_opts o = {.processes = 1 + rand() % 3,
                       .maxtasksperchild = rand() % 2 ? 0 : 1 + (unsigned)(rand() % 20),
                       .task_timeout = rand() % 2 ? 0 : 5.0,
                       .start_method = methods[rand() % 3]};
  mproc_pool *p = NULL;
  int rc = mproc_pool_new(&p, &o);
  if (rc)
    FAIL("pool_new (%s): %s", mproc_start_method_name(o.start_method), mproc_err_name(rc));
  stat_pools++;
  bool kills = rand() % 2;
  run_tasks(p, kills);
  if (rand() % 2)
    run_map(p, kills);
  if (rand() % 4 == 0)
    run_client(p);
  if (rand() % 2) {
    if (mproc_pool_close(p) || mproc_pool_join(p))
      FAIL("close/join");
  }
  mproc_pool_free(p);
}

int main(void) {
  const char *e = getenv("MPROC_SOAK_SECONDS");
  double secs = e && *e ? atof(e) : 20;
  e = getenv("MPROC_SOAK_SEED");
  unsigned seed = e && *e ? (unsigned)strtoul(e, NULL, 10) : (unsigned)time(NULL);
  srand(seed);
  if (mproc_forkserver_start() != 0)
    FAIL("forkserver_start");
  mproc_forkserver_stop();
  int fds = mproc__count_fds();
  double end = now() + secs;
  while (now() < end) {
    one_pool();
    mproc_forkserver_stop(); /* its children are ours in all but name: none may be left */
    if (waitpid(-1, NULL, WNOHANG) != -1)
      FAIL("a child process is left after a pool's free");
    if (mproc__count_fds() != fds)
      FAIL("descriptors: %d after a pool, %d before", mproc__count_fds(), fds);
  }
  printf("soak_pool: seed %u, %.0f s: %llu pools, %llu tasks (%llu crashed), %llu maps, "
         "%llu workers killed, %llu stopped and continued: all exact, nothing left\n",
         seed, secs, stat_pools, stat_tasks, stat_crashed, stat_maps, stat_kills, stat_stops);
  return 0;
}
