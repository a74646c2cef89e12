/* Whole lifecycles for the fault suites: see lifecycles.h. */
#include "helpers.h"
#include "lifecycles.h"
#include "mproc.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


#define MAP_N 4096
static int64_t map_in[MAP_N], map_out[MAP_N];

int tl_pool(void) {
  for (int i = 0; i < MAP_N; i++)
    map_in[i] = i;
  mproc_pool_opts o = {.processes = 2};
  mproc_pool *p;
  int rc = mproc_pool_new(&p, &o);
  if (rc)
    return rc;
  int64_t v = 14, *got = NULL;
  size_t len = 0;
  if ((rc = mproc_pool_apply(p, th_times3, &v, sizeof v, (void **)&got, &len)) == 0) {
    cr_expect(len == sizeof v && *got == 42, "apply gave %zu bytes", len);
    free(got);
  }
  mproc_async *a = NULL;
  if (rc == 0 && (rc = mproc_pool_apply_async(p, th_times3, &v, sizeof v, &a)) == 0) {
    got = NULL;
    if ((rc = mproc_async_get(a, (void **)&got, &len, MPROC_FOREVER)) == 0) {
      cr_expect(len == sizeof v && *got == 42);
      free(got);
    }
    mproc_async_free(a);
  }
  if (rc == 0) {
    memset(map_out, 0, sizeof map_out);
    rc = mproc_pool_map(p, th_square64, map_in, MAP_N, sizeof(int64_t), map_out, sizeof(int64_t),
                        NULL);
    for (int i = 0; rc == 0 && i < MAP_N; i++)
      cr_expect(map_out[i] == (int64_t)i * i, "map_out[%d] = %lld", i, (long long)map_out[i]);
  }
  int crc = mproc_pool_close(p);
  int jrc = crc ? crc : mproc_pool_join(p);
  mproc_pool_free(p);
  return rc ? rc : jrc;
}

int tl_queue(void) {
  mproc_queue *q;
  int rc = mproc_queue_new(&q, NULL);
  if (rc)
    return rc;
  static char big[256 << 10]; /* beyond the ring's first pages: it grows */
  int put = 0;
  /* Timeout 0: a ring that cannot grow (address space short) is full, MPROC_EAGAIN, where
   * waiting would wait for gets that only this process would make. */
  for (; rc == 0 && put < 8; put += rc == 0) {
    memset(big, 'a' + put, sizeof big);
    rc = mproc_queue_put(q, big, put % 2 ? sizeof big : 16, 0);
  }
  for (int i = 0; i < put; i++) {
    char *m = NULL;
    size_t len = 0;
    int grc = mproc_queue_get(q, (void **)&m, &len, 5);
    rc = rc ? rc : grc;
    if (grc != 0)
      break; /* a failed get leaves its message in the queue: the next get would see it */
    cr_expect(len == (i % 2 ? sizeof big : 16) && m[0] == 'a' + i && m[len - 1] == 'a' + i,
              "message %d: %zu bytes of '%c'", i, len, len ? m[0] : '-');
    free(m);
  }
  mproc_queue_free(q);
  return rc;
}

static int child_target(void *arg) { return *(int *)arg; }

int tl_process(void) {
  int code = 7;
  mproc_process_opts o = {.arg_len = sizeof code}; /* copied: spawn and forkserver need it */
  mproc_process *p;
  int rc = mproc_process_new(&p, child_target, &code, &o);
  if (rc)
    return rc;
  int ec = -1;
  if ((rc = mproc_process_start(p)) == 0 && (rc = mproc_process_join(p, MPROC_FOREVER)) == 0 &&
      (rc = mproc_process_exitcode(p, &ec)) == 0)
    cr_expect(ec == 7, "exit code %d", ec);
  mproc_process_free(p);
  return rc;
}

int tl_pipe(void) {
  mproc_conn *a, *b;
  int rc = mproc_pipe(&a, &b, true);
  if (rc)
    return rc;
  char *m = NULL;
  size_t len = 0;
  if ((rc = mproc_conn_send(a, "hello", 5)) == 0 && (rc = mproc_conn_recv(b, (void **)&m, &len, 5)) == 0) {
    cr_expect(len == 5 && memcmp(m, "hello", 5) == 0);
    free(m);
  }
  mproc_conn_free(a);
  mproc_conn_free(b);
  return rc;
}

int tl_sync(void) {
  mproc_lock *l;
  int rc = mproc_lock_new(&l, false);
  if (rc)
    return rc;
  mproc_array *arr = NULL;
  int64_t init[64] = {0};
  if ((rc = mproc_lock_acquire(l, MPROC_FOREVER)) == 0) {
    rc = mproc_array_new(&arr, sizeof(int64_t), 64, init, true);
    mproc_lock_release(l);
  }
  if (arr) {
    cr_expect(mproc_array_len(arr) == 64 && ((int64_t *)mproc_array_data(arr))[63] == 0);
    mproc_array_free(arr);
  }
  mproc_lock_free(l);
  return rc;
}

int tl_listener(void) {
  mproc_listener *l;
  int rc = mproc_listener_new(&l, NULL, NULL, 0, 4);
  if (rc)
    return rc;
  mproc_conn *c = NULL, *s = NULL;
  /* No key, so no handshake: the connect completes in the backlog, before the accept. */
  if ((rc = mproc_client(&c, mproc_listener_address(l), NULL, 0, 5)) == 0 &&
      (rc = mproc_listener_accept(l, &s, 5)) == 0 && (rc = mproc_conn_send(c, "ping", 4)) == 0) {
    char *m = NULL;
    size_t len = 0;
    if ((rc = mproc_conn_recv(s, (void **)&m, &len, 5)) == 0) {
      cr_expect(len == 4 && memcmp(m, "ping", 4) == 0);
      free(m);
    }
  }
  mproc_conn_free(s);
  mproc_conn_free(c);
  mproc_listener_free(l);
  return rc;
}

int tl_manager(void) {
  mproc_manager *m;
  int rc = mproc_manager_new(&m, NULL);
  if (rc)
    return rc;
  mproc_dict *d = NULL;
  if ((rc = mproc_manager_dict(m, "d", &d)) == 0 && (rc = mproc_dict_set(d, "k", 1, "v1", 2)) == 0) {
    int64_t now = 0;
    char *v = NULL;
    size_t len = 0;
    if ((rc = mproc_dict_add_i64(d, "n", 1, 5, &now)) == 0)
      cr_expect(now == 5);
    if (rc == 0 && (rc = mproc_dict_get(d, "k", 1, (void **)&v, &len)) == 0) {
      cr_expect(len == 2 && memcmp(v, "v1", 2) == 0);
      free(v);
    }
  }
  mproc_dict_free(d);
  /* A managed Lock and Queue: the same handles as the local ones. */
  mproc_lock *l = NULL;
  mproc_queue *q = NULL;
  if (rc == 0 && (rc = mproc_manager_lock(m, "l", false, &l)) == 0 &&
      (rc = mproc_lock_acquire(l, MPROC_FOREVER)) == 0)
    rc = mproc_lock_release(l);
  if (rc == 0 && (rc = mproc_manager_queue(m, "q", NULL, &q)) == 0 &&
      (rc = mproc_queue_put(q, "m", 1, 0)) == 0) {
    char *v = NULL;
    size_t len = 0;
    if ((rc = mproc_queue_get(q, (void **)&v, &len, MPROC_FOREVER)) == 0) {
      cr_expect(len == 1 && v[0] == 'm');
      free(v);
    }
  }
  mproc_lock_free(l);
  mproc_queue_free(q);
  int src = mproc_manager_shutdown(m);
  mproc_manager_free(m);
  return rc ? rc : src;
}
