/* Every public call with a NULL handle or a NULL out-parameter: an error code (or false,
 * NULL, 0), never a crash, an abort or a hang. One place that covers the whole header, so a
 * new function without its check shows up here. */
#include "helpers.h"
#include "mproc.h"

#include <stdint.h>

#define EINV(call) cr_expect_eq((call), MPROC_EINVAL, "%s", #call)

static int map_fn(const void *in, void *out, const void *args) {
  (void)in, (void)out, (void)args;
  return 0;
}
static int task_fn(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  return 0;
}
static int target(void *arg) {
  (void)arg;
  return 0;
}

Test(bad_input, process_and_conn) {
  th_scope s = th_begin();
  int code = 7;
  EINV(mproc_process_new(NULL, target, NULL, NULL));
  mproc_process *p = (mproc_process *)1;
  EINV(mproc_process_new(&p, NULL, NULL, NULL));
  EINV(mproc_process_start(NULL));
  EINV(mproc_process_join(NULL, 0));
  cr_expect(!mproc_process_is_alive(NULL));
  EINV(mproc_process_terminate(NULL));
  EINV(mproc_process_kill(NULL));
  EINV(mproc_process_interrupt(NULL));
  cr_expect_eq(mproc_process_pid(NULL), 0);
  EINV(mproc_process_exitcode(NULL, &code));
  cr_expect_eq(code, 7);
  cr_expect_null(mproc_process_name(NULL));
  cr_expect(!mproc_process_daemon(NULL));
  cr_expect_eq(mproc_process_sentinel(NULL), -1);
  mproc_process_free(NULL);
  EINV(mproc_pipe(NULL, NULL, true));
  void *buf = NULL;
  size_t len = 0;
  EINV(mproc_conn_send(NULL, "x", 1));
  EINV(mproc_conn_recv(NULL, &buf, &len, 0));
  EINV(mproc_conn_poll(NULL, 0));
  cr_expect_lt(mproc_conn_fileno(NULL), 0);
  mproc_conn_free(NULL);
  EINV(mproc_wait(NULL, 1, 0));
  th_end(s);
}

Test(bad_input, queue_sync_shm_array) {
  th_scope s = th_begin();
  void *buf = NULL;
  size_t len = 0;
  EINV(mproc_queue_new(NULL, NULL));
  EINV(mproc_queue_put(NULL, "x", 1, 0));
  EINV(mproc_queue_get(NULL, &buf, &len, 0));
  cr_expect_lt(mproc_queue_qsize(NULL), 0);
  EINV(mproc_queue_close(NULL));
  EINV(mproc_queue_task_done(NULL));
  EINV(mproc_queue_join(NULL, 0));
  mproc_queue_free(NULL);

  EINV(mproc_lock_new(NULL, false));
  EINV(mproc_lock_acquire(NULL, 0));
  EINV(mproc_lock_release(NULL));
  mproc_lock_free(NULL);
  EINV(mproc_sem_new(NULL, 1, false));
  EINV(mproc_sem_acquire(NULL, 0));
  EINV(mproc_sem_release(NULL));
  EINV(mproc_sem_value(NULL));
  mproc_sem_free(NULL);
  EINV(mproc_event_new(NULL));
  EINV(mproc_event_set(NULL));
  EINV(mproc_event_clear(NULL));
  cr_expect(!mproc_event_is_set(NULL));
  EINV(mproc_event_wait(NULL, 0));
  mproc_event_free(NULL);
  EINV(mproc_cond_new(NULL, NULL));
  EINV(mproc_cond_acquire(NULL, 0));
  EINV(mproc_cond_release(NULL));
  EINV(mproc_cond_wait(NULL, 0));
  EINV(mproc_cond_notify(NULL, 1));
  EINV(mproc_cond_notify_all(NULL));
  mproc_cond_free(NULL);
  EINV(mproc_barrier_new(NULL, 2));
  mproc_barrier *b = NULL;
  EINV(mproc_barrier_new(&b, 0));
  EINV(mproc_barrier_wait(NULL, 0));
  EINV(mproc_barrier_abort(NULL));
  EINV(mproc_barrier_reset(NULL));
  mproc_barrier_free(NULL);

  mproc_shm *sh = NULL;
  EINV(mproc_shm_create(NULL, NULL, 4096));
  EINV(mproc_shm_create(&sh, NULL, 0));
  EINV(mproc_shm_create(&sh, "bad/name", 4096));
  EINV(mproc_shm_attach(&sh, NULL));
  EINV(mproc_shm_attach(NULL, "mproc-x"));
  cr_expect_null(mproc_shm_buf(NULL));
  cr_expect_eq(mproc_shm_size(NULL), 0);
  cr_expect_null(mproc_shm_name(NULL));
  EINV(mproc_shm_unlink(NULL));
  mproc_shm_free(NULL);
  mproc_array *a = NULL;
  EINV(mproc_array_new(NULL, 8, 1, NULL, false));
  EINV(mproc_array_new(&a, 0, 1, NULL, false));
  EINV(mproc_array_new(&a, 8, 0, NULL, false));
  EINV(mproc_array_new(&a, SIZE_MAX / 2, 4, NULL, false));
  cr_expect_null(mproc_array_data(NULL));
  cr_expect_eq(mproc_array_len(NULL), 0);
  cr_expect_null(mproc_array_lock(NULL));
  mproc_array_free(NULL);
  th_end(s);
}

Test(bad_input, pool_and_results) {
  th_scope s = th_begin();
  int x = 1;
  long out = 0;
  void *res = NULL;
  size_t len = 0;
  mproc_async *r = NULL;
  mproc_imap *it = NULL;
  mproc_pool *pool = NULL;
  EINV(mproc_pool_new(NULL, NULL));
  EINV(mproc_pool_new(&pool, &(mproc_pool_opts){.processes = -1}));
  cr_expect_null(pool);
  EINV(mproc_pool_apply(NULL, task_fn, &x, sizeof x, &res, &len));
  EINV(mproc_pool_apply_async(NULL, task_fn, &x, sizeof x, &r));
  EINV(mproc_pool_map(NULL, map_fn, &x, 1, sizeof x, &out, sizeof out, NULL));
  EINV(mproc_pool_map_async(NULL, map_fn, &x, 1, sizeof x, &out, sizeof out, NULL, &r));
  EINV(mproc_pool_apply_async_ex(NULL, task_fn, &x, sizeof x, NULL, &r));
  EINV(mproc_pool_map_async_ex(NULL, map_fn, &x, 1, sizeof x, &out, sizeof out, NULL, NULL,
                               &r));
  EINV(mproc_pool_map_ex(NULL, map_fn, &x, 1, sizeof x, &out, sizeof out, NULL, NULL));
  cr_expect_null(r);
  EINV(mproc_pool_close(NULL));
  EINV(mproc_pool_join(NULL));
  EINV(mproc_pool_terminate(NULL));
  mproc_pool_free(NULL);
  cr_expect_lt(mproc_pool_fileno(NULL), 0);
  EINV(mproc_pool_poll(NULL, 0));
  EINV(mproc_async_get(NULL, &res, &len, 0));
  EINV(mproc_async_wait(NULL, 0));
  cr_expect(!mproc_async_ready(NULL));
  cr_expect(!mproc_async_successful(NULL));
  cr_expect_null(mproc_async_error(NULL));
  cr_expect_eq(mproc_async_fail_index(NULL), SIZE_MAX);
  mproc_async_free(NULL);
  const void *item = &x;
  size_t ilen = sizeof x;
  EINV(mproc_pool_imap(NULL, task_fn, &item, &ilen, 1, NULL, &it));
  EINV(mproc_pool_imap_gen(NULL, task_fn, NULL, NULL, NULL, &it));
  cr_expect_null(it);
  const void *cres = NULL;
  EINV(mproc_imap_next(NULL, &cres, &len, 0));
  cr_expect_eq(mproc_imap_index(NULL), SIZE_MAX);
  cr_expect_null(mproc_imap_error(NULL));
  mproc_imap_free(NULL);
  cr_expect_null(mproc_result_alloc(NULL, 8));
  EINV(mproc_result_set(NULL, "x", 1));
  EINV(mproc_result_fail(NULL, "no %s", "result"));
  th_end(s);
}
