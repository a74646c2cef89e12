/* The Manager's managed Queue, Lock, Semaphore, Event, Condition and Barrier: handles of
 * the local kinds' types whose magic sends their calls here (start.h's mproc__remote), each
 * call one request; and Value. */
#define _GNU_SOURCE
#include "manager/proxies.h"
#include "manager/store.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct proxy {
  mproc__remote base; /* first: the handle's magic */
  mproc_manager *m;
  int32_t id;
} proxy;

struct mproc_value {
  mproc_manager *m;
  int32_t id;
};

/* A timeout for the wire: ns, -1 for none. */
static int timeout_ns(double t, int64_t *ns) {
  if (t != t)
    return MPROC_EINVAL;
  *ns = t < 0 ? -1 : t >= 1e9 ? (int64_t)1e18 : (int64_t)(t * 1e9);
  if (t > 0 && *ns == 0)
    *ns = 1; /* a wait, however short: MPROC_ETIMEDOUT, never timeout 0's MPROC_EAGAIN */
  return 0;
}

static bool blocking(int rop) {
  return rop == MPROC__R_ACQUIRE || rop == MPROC__R_WAIT || rop == MPROC__R_JOIN;
}

static int p_call(mproc__remote *r, int rop, int64_t arg, double timeout, int64_t *out) {
  proxy *p = (proxy *)r;
  mproc__mgr_msg q = {.op = (uint8_t)(MGR_X + rop), .id = p->id, .num = arg};
  if (blocking(rop) && timeout_ns(timeout, &q.num))
    return MPROC_EINVAL;
  return mproc__mgr_call_simple(p->m, &q, out);
}

static int p_put(mproc__remote *r, const void *buf, size_t len, double timeout) {
  proxy *p = (proxy *)r;
  mproc__mgr_msg q = {.op = MGR_Q_PUT, .id = p->id, .nf = 1, .f = {buf}, .flen = {len}};
  if (timeout_ns(timeout, &q.num))
    return MPROC_EINVAL;
  return mproc__mgr_call_simple(p->m, &q, NULL);
}

static int p_get(mproc__remote *r, void **buf, size_t *len, double timeout) {
  proxy *p = (proxy *)r;
  mproc__mgr_msg q = {.op = MGR_Q_GET, .id = p->id};
  if (timeout_ns(timeout, &q.num))
    return MPROC_EINVAL;
  return mproc__mgr_call_value(p->m, &q, buf, len);
}

static void p_free(mproc__remote *r) {
  r->magic = 0; /* a use after free reads MPROC_EINVAL where the memory survives */
  free(r);
}

static const mproc__remote_ops ops = {p_call, p_put, p_get, p_free};

/* Opens (makes) the object name of kind in the server: its id. */
static int open_kind(mproc_manager *m, const char *name, int kind, int64_t param,
                     const void *init, size_t len, int32_t *id) {
  if (!m || !name || (!init && len))
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = MGR_OPEN, .id = kind, .num = param, .nf = init ? 2 : 1,
                      .f = {name, init}, .flen = {strlen(name), len}};
  int64_t num = -1;
  int rc = mproc__mgr_call_simple(m, &q, &num);
  if (rc == 0 && (num < 0 || num > INT32_MAX))
    rc = -EPROTO;
  *id = (int32_t)num;
  return rc;
}

static int open_proxy(mproc_manager *m, const char *name, int kind, int64_t param,
                      void **out) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  int32_t id;
  int rc = open_kind(m, name, kind, param, NULL, 0, &id);
  if (rc)
    return rc;
  proxy *p = malloc(sizeof *p);
  if (!p)
    return MPROC_ENOMEM;
  *p = (proxy){{MPROC__REMOTE_MAGIC, &ops}, m, id};
  *out = p;
  return 0;
}

int mproc_manager_lock(mproc_manager *m, const char *name, bool recursive, mproc_lock **l) {
  return open_proxy(m, name, recursive ? MGR_K_RLOCK : MGR_K_LOCK, 0, (void **)l);
}

int mproc_manager_sem(mproc_manager *m, const char *name, unsigned value, bool bounded,
                      mproc_sem **s) {
  if (value > INT_MAX)
    return MPROC_EINVAL;
  return open_proxy(m, name, bounded ? MGR_K_BSEM : MGR_K_SEM, value, (void **)s);
}

int mproc_manager_event(mproc_manager *m, const char *name, mproc_event **e) {
  return open_proxy(m, name, MGR_K_EVENT, 0, (void **)e);
}

int mproc_manager_cond(mproc_manager *m, const char *name, mproc_lock *lock, mproc_cond **c) {
  proxy *l = (proxy *)lock;
  if (lock && (!mproc__is_remote(lock) || l->m != m))
    return MPROC_EINVAL; /* a local lock cannot be the server's */
  return open_proxy(m, name, MGR_K_COND, lock ? l->id : -1, (void **)c);
}

int mproc_manager_barrier(mproc_manager *m, const char *name, unsigned parties,
                          mproc_barrier **b) {
  if (parties < 1 || parties > (1u << 20))
    return MPROC_EINVAL;
  return open_proxy(m, name, MGR_K_BARRIER, parties, (void **)b);
}

int mproc_manager_queue(mproc_manager *m, const char *name, const mproc_queue_opts *opts,
                        mproc_queue **q) {
  if (opts && opts->maxsize > INT64_MAX)
    return MPROC_EINVAL;
  return open_proxy(m, name, opts && opts->joinable ? MGR_K_JQUEUE : MGR_K_QUEUE,
                    opts ? (int64_t)opts->maxsize : 0, (void **)q);
}

/* ---- Value ---- */

int mproc_manager_value(mproc_manager *m, const char *name, const void *init, size_t len,
                        mproc_value **v) {
  if (!v || (!init && len))
    return MPROC_EINVAL;
  *v = NULL;
  int32_t id;
  int rc = open_kind(m, name, MGR_K_VALUE, 0, init ? init : "", len, &id);
  if (rc)
    return rc;
  if (!(*v = malloc(sizeof **v)))
    return MPROC_ENOMEM;
  (*v)->m = m;
  (*v)->id = id;
  return 0;
}

int mproc_value_get(mproc_value *v, void **val, size_t *len) {
  if (!v || !val || !len)
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = MGR_V_GET, .id = v->id};
  return mproc__mgr_call_value(v->m, &q, val, len);
}

int mproc_value_set(mproc_value *v, const void *val, size_t len) {
  if (!v || (!val && len))
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = MGR_V_SET, .id = v->id, .nf = 1, .f = {val}, .flen = {len}};
  return mproc__mgr_call_simple(v->m, &q, NULL);
}

void mproc_value_free(mproc_value *v) { free(v); }
