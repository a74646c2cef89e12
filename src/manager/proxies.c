/* The Manager's dict and list proxies: each call one request (manager.c's call), but for
 * a dict whose table this process maps (a server on this machine, reached over a Unix
 * socket: table.h), whose one-key calls run on the table itself under its lock. Before
 * each, one load of the server's life word: a server that died is MPROC_EOF then
 * MPROC_ECLOSED, as on the socket. A process forked with the proxy shares the mapping,
 * so the path works there unchanged. */
#define _GNU_SOURCE
#include "manager/proxies.h"
#include "manager/store.h"
#include "manager/table.h"
#include "testing.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct mproc_dict {
  mproc_manager *m;
  int32_t id;
  mproc__table t;             /* t.base NULL: every call a request */
  const mproc__alive *alive;  /* the server's life (the handle's, with t) */
};

struct mproc_list {
  mproc_manager *m;
  int32_t id;
};

static int open_obj(mproc_manager *m, const char *name, uint8_t op, int32_t *id) {
  if (!m || !name)
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = op, .nf = 1, .f = {name}, .flen = {strlen(name)}};
  int64_t num = -1;
  int rc = mproc__mgr_call_simple(m, &q, &num);
  if (rc == 0 && (num < 0 || num > INT32_MAX))
    rc = -EPROTO;
  *id = (int32_t)num;
  return rc;
}

/* The dict's table and the server's life page, when the socket can carry them; without
 * them (TCP, or any failure here) the dict works through requests. */
static void attach_table(mproc_dict *d) {
  mproc__mgr_msg q = {.op = MGR_D_SHM, .id = d->id};
  int fds[2];
  if (mproc__mgr_call_fds(d->m, &q, fds))
    return;
  if (!(d->alive = mproc__mgr_alive(d->m, fds[1]))) {
    mproc__close(fds[0]);
    return;
  }
  (void)mproc__table_attach(&d->t, fds[0]);
}

static void dict_init(mproc_dict *d, mproc_manager *m, int32_t id) {
  *d = (mproc_dict){.m = m, .id = id};
  attach_table(d);
}

static void dict_fini(mproc_dict *d) { mproc__table_detach(&d->t); }

int mproc_manager_dict(mproc_manager *m, const char *name, mproc_dict **d) {
  if (!d)
    return MPROC_EINVAL;
  int32_t id;
  int rc = open_obj(m, name, MGR_OPEN_DICT, &id);
  if (rc)
    return rc;
  if (!(*d = malloc(sizeof **d)))
    return MPROC_ENOMEM;
  dict_init(*d, m, id);
  return 0;
}

int mproc_manager_list(mproc_manager *m, const char *name, mproc_list **l) {
  if (!l)
    return MPROC_EINVAL;
  int32_t id;
  int rc = open_obj(m, name, MGR_OPEN_LIST, &id);
  if (rc)
    return rc;
  if (!(*l = malloc(sizeof **l)))
    return MPROC_ENOMEM;
  (*l)->m = m;
  (*l)->id = id;
  return 0;
}

void mproc_dict_free(mproc_dict *d) {
  if (d)
    dict_fini(d);
  free(d);
}

/* ---- Namespace: a dict in the server, its attributes the keys ---- */

struct mproc_namespace {
  mproc_dict d;
};

int mproc_manager_namespace(mproc_manager *m, const char *name, mproc_namespace **ns) {
  if (!m || !name || !ns)
    return MPROC_EINVAL;
  *ns = NULL;
  mproc__mgr_msg q = {.op = MGR_OPEN, .id = MGR_K_NS, .nf = 1, .f = {name}, .flen = {strlen(name)}};
  int64_t num = -1;
  int rc = mproc__mgr_call_simple(m, &q, &num);
  if (rc == 0 && (num < 0 || num > INT32_MAX))
    rc = -EPROTO;
  if (rc)
    return rc;
  if (!(*ns = malloc(sizeof **ns)))
    return MPROC_ENOMEM;
  dict_init(&(*ns)->d, m, (int32_t)num);
  return 0;
}

int mproc_ns_set(mproc_namespace *ns, const char *attr, const void *val, size_t len) {
  return ns && attr ? mproc_dict_set(&ns->d, attr, strlen(attr), val, len) : MPROC_EINVAL;
}

int mproc_ns_get(mproc_namespace *ns, const char *attr, void **val, size_t *len) {
  return ns && attr ? mproc_dict_get(&ns->d, attr, strlen(attr), val, len) : MPROC_EINVAL;
}

int mproc_ns_del(mproc_namespace *ns, const char *attr) {
  return ns && attr ? mproc_dict_del(&ns->d, attr, strlen(attr)) : MPROC_EINVAL;
}

int mproc_ns_attrs(mproc_namespace *ns, mproc_bytes **names, size_t *n) {
  return ns ? mproc_dict_keys(&ns->d, names, n) : MPROC_EINVAL;
}

void mproc_ns_free(mproc_namespace *ns) {
  if (ns)
    dict_fini(&ns->d);
  free(ns);
}
void mproc_list_free(mproc_list *l) { free(l); }

/* ---- dict ---- */

/* The table's lock for a call on it: 0, or the call's result (the server gone). */
static int shm_enter(mproc_dict *d) {
  if (mproc__mgr_closed(d->m))
    return MPROC_ECLOSED;
  if (MPROC__UNLIKELY(!mproc__alive_is(d->alive)))
    return mproc__mgr_lost(d->m);
  return mproc__table_lock(&d->t);
}

/* A malloc'd copy of v[vl) (one byte at least, so an empty one is not NULL), or NULL. */
static void *dup_mem(const void *v, size_t vl) {
  void *p = malloc(vl ? vl : 1);
  if (p && vl)
    memcpy(p, v, vl);
  return p;
}

static void *dup_bytes(const mproc_bytes *b) { return dup_mem(b->p, b->len); }

static int copy_out(const void *v, size_t vl, void **val, size_t *vlen) {
  if (!(*val = dup_mem(v, vl)))
    return MPROC_ENOMEM;
  *vlen = vl;
  return 0;
}

/* get, pop and setdefault on the table (op says which). */
static int shm_key_value(mproc_dict *d, uint8_t op, const void *key, size_t klen,
                         const void *dflt, size_t dlen, void **val, size_t *vlen) {
  int rc = shm_enter(d);
  if (rc)
    return rc;
  const void *v;
  size_t vl;
  rc = mproc__table_find(&d->t, key, klen, &v, &vl);
  if (rc == 0)
    rc = copy_out(v, vl, val, vlen);
  if (rc == 0 && op == MGR_D_POP)
    rc = mproc__table_remove(&d->t, key, klen);
  else if (rc == MPROC_ENOTFOUND && op == MGR_D_SETDEFAULT &&
           (rc = copy_out(dflt, dlen, val, vlen)) == 0 &&
           (rc = mproc__table_set(&d->t, key, klen, dflt, dlen)) != 0)
    free(*val);
  mproc__table_unlock(&d->t);
  return rc;
}

#define KEY_OK(d, key, klen) ((d) && ((key) || (klen) == 0))
#define DQ(d, o) {.op = (o), .id = (d)->id}

int mproc_dict_set(mproc_dict *d, const void *key, size_t klen, const void *val, size_t vlen) {
  if (!KEY_OK(d, key, klen) || (!val && vlen))
    return MPROC_EINVAL;
  if (d->t.base) {
    int rc = shm_enter(d);
    if (rc == 0) {
      rc = mproc__table_set(&d->t, key, klen, val, vlen);
      mproc__table_unlock(&d->t);
    }
    return rc;
  }
  mproc__mgr_msg q = {.op = MGR_D_SET, .id = d->id, .nf = 2, .f = {key, val}, .flen = {klen, vlen}};
  return mproc__mgr_call_simple(d->m, &q, NULL);
}

static int dict_key_value(mproc_dict *d, uint8_t op, const void *key, size_t klen, void **val,
                          size_t *vlen) {
  if (!KEY_OK(d, key, klen) || !val || !vlen)
    return MPROC_EINVAL;
  if (d->t.base)
    return shm_key_value(d, op, key, klen, NULL, 0, val, vlen);
  mproc__mgr_msg q = {.op = op, .id = d->id, .nf = 1, .f = {key}, .flen = {klen}};
  return mproc__mgr_call_value(d->m, &q, val, vlen);
}

int mproc_dict_get(mproc_dict *d, const void *key, size_t klen, void **val, size_t *vlen) {
  return dict_key_value(d, MGR_D_GET, key, klen, val, vlen);
}

int mproc_dict_pop(mproc_dict *d, const void *key, size_t klen, void **val, size_t *vlen) {
  return dict_key_value(d, MGR_D_POP, key, klen, val, vlen);
}

int mproc_dict_setdefault(mproc_dict *d, const void *key, size_t klen, const void *dflt,
                          size_t dlen, void **val, size_t *vlen) {
  if (!KEY_OK(d, key, klen) || (!dflt && dlen) || !val || !vlen)
    return MPROC_EINVAL;
  if (d->t.base)
    return shm_key_value(d, MGR_D_SETDEFAULT, key, klen, dflt, dlen, val, vlen);
  mproc__mgr_msg q = {.op = MGR_D_SETDEFAULT, .id = d->id, .nf = 2, .f = {key, dflt},
                      .flen = {klen, dlen}};
  return mproc__mgr_call_value(d->m, &q, val, vlen);
}

int mproc_dict_del(mproc_dict *d, const void *key, size_t klen) {
  if (!KEY_OK(d, key, klen))
    return MPROC_EINVAL;
  if (d->t.base) {
    int rc = shm_enter(d);
    if (rc == 0) {
      rc = mproc__table_remove(&d->t, key, klen);
      mproc__table_unlock(&d->t);
    }
    return rc;
  }
  mproc__mgr_msg q = {.op = MGR_D_DEL, .id = d->id, .nf = 1, .f = {key}, .flen = {klen}};
  return mproc__mgr_call_simple(d->m, &q, NULL);
}

int mproc_dict_contains(mproc_dict *d, const void *key, size_t klen) {
  if (!KEY_OK(d, key, klen))
    return MPROC_EINVAL;
  if (d->t.base) {
    int rc = shm_enter(d);
    if (rc == 0) {
      const void *v;
      size_t vl;
      rc = mproc__table_find(&d->t, key, klen, &v, &vl) == 0;
      mproc__table_unlock(&d->t);
    }
    return rc;
  }
  mproc__mgr_msg q = {.op = MGR_D_CONTAINS, .id = d->id, .nf = 1, .f = {key}, .flen = {klen}};
  int64_t num = 0;
  int rc = mproc__mgr_call_simple(d->m, &q, &num);
  return rc ? rc : num != 0;
}

int mproc_dict_add_i64(mproc_dict *d, const void *key, size_t klen, int64_t delta,
                       int64_t *now) {
  if (!KEY_OK(d, key, klen))
    return MPROC_EINVAL;
  if (d->t.base) {
    int64_t n = 0;
    int rc = shm_enter(d);
    if (rc == 0) {
      rc = mproc__table_add(&d->t, key, klen, delta, &n);
      mproc__table_unlock(&d->t);
    }
    if (rc == 0 && now)
      *now = n;
    return rc;
  }
  mproc__mgr_msg q = {.op = MGR_D_ADD, .id = d->id, .num = delta, .nf = 1, .f = {key},
                      .flen = {klen}};
  int64_t n = 0;
  int rc = mproc__mgr_call_simple(d->m, &q, &n);
  if (rc == 0 && now)
    *now = n;
  return rc;
}

long mproc_dict_len(mproc_dict *d) {
  if (!d)
    return MPROC_EINVAL;
  if (d->t.base) {
    int rc = shm_enter(d);
    if (rc)
      return rc;
    long n = (long)mproc__table_len(&d->t);
    mproc__table_unlock(&d->t);
    return n;
  }
  mproc__mgr_msg q = DQ(d, MGR_D_LEN);
  int64_t n = 0;
  int rc = mproc__mgr_call_simple(d->m, &q, &n);
  return rc ? rc : (long)n;
}

int mproc_dict_clear(mproc_dict *d) {
  if (!d)
    return MPROC_EINVAL;
  mproc__mgr_msg q = DQ(d, MGR_D_CLEAR);
  return mproc__mgr_call_simple(d->m, &q, NULL);
}

/* A packed reply of n strings as one block: the array, then the bytes it points into. */
static int unpack_all(void *packed, size_t len, int64_t n, mproc_bytes **out) {
  if (n < 0 || (uint64_t)n > len / 8 + 1) {
    free(packed);
    return -EPROTO;
  }
  size_t head = (size_t)n * sizeof(mproc_bytes);
  mproc_bytes *v = malloc(head + len + 1);
  if (!v) {
    free(packed);
    return MPROC_ENOMEM;
  }
  unsigned char *bytes = (unsigned char *)v + head;
  memcpy(bytes, packed, len);
  free(packed);
  size_t off = 0;
  for (int64_t i = 0; i < n; i++)
    if (mproc__mgr_unpack(bytes, len, &off, &v[i].p, &v[i].len)) {
      free(v);
      return -EPROTO;
    }
  if (off != len) {
    free(v);
    return -EPROTO;
  }
  *out = v;
  return 0;
}

/* A dict's or list's snapshot: *n entries of per strings each, as one block. */
static int snapshot(mproc_manager *m, int32_t id, uint8_t op, int per, mproc_bytes **out,
                    size_t *n) {
  mproc__mgr_msg q = {.op = op, .id = id};
  void *packed;
  size_t len;
  int64_t count = 0;
  int rc = mproc__mgr_call_value_num(m, &q, &packed, &len, &count);
  if (rc)
    return rc;
  if (count < 0 || count > INT64_MAX / 2)
    count = -1;
  if ((rc = unpack_all(packed, len, count < 0 ? -1 : count * per, out)))
    return rc;
  *n = (size_t)count;
  return 0;
}

int mproc_dict_keys(mproc_dict *d, mproc_bytes **keys, size_t *n) {
  return d && keys && n ? snapshot(d->m, d->id, MGR_D_KEYS, 1, keys, n) : MPROC_EINVAL;
}

int mproc_dict_values(mproc_dict *d, mproc_bytes **vals, size_t *n) {
  return d && vals && n ? snapshot(d->m, d->id, MGR_D_VALUES, 1, vals, n) : MPROC_EINVAL;
}

int mproc_dict_items(mproc_dict *d, mproc_bytes **items, size_t *n) {
  return d && items && n ? snapshot(d->m, d->id, MGR_D_ITEMS, 2, items, n) : MPROC_EINVAL;
}

/* A malloc'd copy of b (one byte at least, so an empty one is not NULL). */

int mproc_dict_popitem(mproc_dict *d, void **key, size_t *klen, void **val, size_t *vlen) {
  if (!d || !key || !klen || !val || !vlen)
    return MPROC_EINVAL;
  mproc_bytes *kv;
  size_t n;
  int rc = snapshot(d->m, d->id, MGR_D_POPITEM, 2, &kv, &n);
  if (rc)
    return rc;
  void *k = n == 1 ? dup_bytes(&kv[0]) : NULL, *v = n == 1 ? dup_bytes(&kv[1]) : NULL;
  if (n != 1 || !k || !v) {
    /* The pair is gone from the dict by now, as with a reply lost on the way. */
    rc = n != 1 ? -EPROTO : MPROC_ENOMEM;
    free(k);
    free(v);
  } else {
    *key = k, *klen = kv[0].len;
    *val = v, *vlen = kv[1].len;
  }
  free(kv);
  return rc;
}

/* Sends n strings packed in one field with op (a batch: one request). */
static int batch(mproc_manager *m, uint8_t op, int32_t id, const mproc_bytes *v, size_t n,
                 int64_t count) {
  for (size_t i = 0; i < n; i++)
    if (!v[i].p && v[i].len)
      return MPROC_EINVAL;
  size_t len = mproc__mgr_packed_size(v, n);
  unsigned char *packed = malloc(len ? len : 1);
  if (!packed)
    return MPROC_ENOMEM;
  mproc__mgr_pack(v, n, packed);
  mproc__mgr_msg q = {.op = op, .id = id, .num = count, .nf = 1, .f = {packed}, .flen = {len}};
  int rc = mproc__mgr_call_simple(m, &q, NULL);
  free(packed);
  return rc;
}

int mproc_dict_update(mproc_dict *d, const mproc_bytes *items, size_t n) {
  if (!d || (!items && n) || n > SIZE_MAX / 2)
    return MPROC_EINVAL;
  return batch(d->m, MGR_D_UPDATE, d->id, items, 2 * n, (int64_t)n);
}

/* ---- list ---- */

static int list_simple(mproc_list *l, uint8_t op, int64_t arg) {
  if (!l)
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = op, .id = l->id, .num = arg};
  return mproc__mgr_call_simple(l->m, &q, NULL);
}

int mproc_list_clear(mproc_list *l) { return list_simple(l, MGR_L_CLEAR, 0); }

int mproc_list_reverse(mproc_list *l) { return list_simple(l, MGR_L_REVERSE, 0); }

int mproc_list_sort(mproc_list *l, bool reverse) { return list_simple(l, MGR_L_SORT, reverse); }

long mproc_list_index(mproc_list *l, const void *val, size_t len, long start, long stop) {
  if (!l || (!val && len))
    return MPROC_EINVAL;
  unsigned char stop_le[8];
  mproc__mgr_put_i64(stop_le, stop);
  mproc__mgr_msg q = {.op = MGR_L_INDEX, .id = l->id, .num = start, .nf = 2,
                      .f = {val, stop_le}, .flen = {len, sizeof stop_le}};
  int64_t i = 0;
  int rc = mproc__mgr_call_simple(l->m, &q, &i);
  return rc ? rc : (long)i;
}

long mproc_list_count(mproc_list *l, const void *val, size_t len) {
  if (!l || (!val && len))
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = MGR_L_COUNT, .id = l->id, .nf = 1, .f = {val}, .flen = {len}};
  int64_t n = 0;
  int rc = mproc__mgr_call_simple(l->m, &q, &n);
  return rc ? rc : (long)n;
}

int mproc_list_items(mproc_list *l, mproc_bytes **vals, size_t *n) {
  return l && vals && n ? snapshot(l->m, l->id, MGR_L_ITEMS, 1, vals, n) : MPROC_EINVAL;
}

int mproc_list_extend(mproc_list *l, const mproc_bytes *vals, size_t n) {
  if (!l || (!vals && n))
    return MPROC_EINVAL;
  return batch(l->m, MGR_L_EXTEND, l->id, vals, n, (int64_t)n);
}


static int list_put(mproc_list *l, uint8_t op, long i, const void *val, size_t len) {
  if (!l || (!val && len))
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = op, .id = l->id, .num = i, .nf = 1, .f = {val}, .flen = {len}};
  return mproc__mgr_call_simple(l->m, &q, NULL);
}

int mproc_list_append(mproc_list *l, const void *val, size_t len) {
  return list_put(l, MGR_L_APPEND, 0, val, len);
}

int mproc_list_set(mproc_list *l, long i, const void *val, size_t len) {
  return list_put(l, MGR_L_SET, i, val, len);
}

int mproc_list_insert(mproc_list *l, long i, const void *val, size_t len) {
  return list_put(l, MGR_L_INSERT, i, val, len);
}

static int list_take(mproc_list *l, uint8_t op, long i, void **val, size_t *len) {
  if (!l || !val || !len)
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = op, .id = l->id, .num = i};
  return mproc__mgr_call_value(l->m, &q, val, len);
}

int mproc_list_get(mproc_list *l, long i, void **val, size_t *len) {
  return list_take(l, MGR_L_GET, i, val, len);
}

int mproc_list_pop(mproc_list *l, long i, void **val, size_t *len) {
  return list_take(l, MGR_L_POP, i, val, len);
}

long mproc_list_len(mproc_list *l) {
  if (!l)
    return MPROC_EINVAL;
  mproc__mgr_msg q = {.op = MGR_L_LEN, .id = l->id};
  int64_t n = 0;
  int rc = mproc__mgr_call_simple(l->m, &q, &n);
  return rc ? rc : (long)n;
}
int mproc_list_remove(mproc_list *l, const void *val, size_t len) {
  return list_put(l, MGR_L_REMOVE, 0, val, len);
}

/* ---- test hooks (testing.h) ---- */

bool mproc__dict_test_shared(mproc_dict *d) { return d && d->t.base; }

int mproc__dict_test_half_set(mproc_dict *d, const void *k, size_t kl, const void *v,
                              size_t vl) {
  if (!d || !d->t.base)
    return MPROC_ESTATE;
  int rc = shm_enter(d);
  return rc ? rc : mproc__table_test_half_set(&d->t, k, kl, v, vl);
}
