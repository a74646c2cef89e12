/* The Manager server's objects (store.h): a chained hash table per dict (FNV-1a, doubled
 * at load 1) whose entries are also on a list in insertion order (Python's dict order:
 * what keys/items/values show and popitem takes from), an array per list, and the table of
 * named objects. */
#define _GNU_SOURCE
#include "manager/proto.h"
#include "manager/store.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
  struct entry *next;         /* in its bucket */
  struct entry *older, *newer; /* in insertion order */
  uint64_t hash;
  mproc__blob key, val;
} entry;

struct mproc__dict {
  entry **b;
  size_t nb, n;
  entry *oldest, *newest;
};

struct mproc__list {
  mproc__blob *v;
  size_t n, cap;
};

typedef struct object {
  int kind;
  mproc__blob name;
  void *obj;
} object;

struct mproc__store {
  object *o;
  size_t n, cap;
};

int mproc__blob_set(mproc__blob *b, const void *v, size_t vl) {
  unsigned char *p = malloc(vl ? vl : 1);
  if (!p)
    return MPROC_ENOMEM;
  if (vl)
    memcpy(p, v, vl);
  b->p = p;
  b->len = vl;
  return 0;
}

/* ---- dict ---- */

static uint64_t fnv(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static entry **slot(mproc__dict *d, const void *k, size_t kl, uint64_t h) {
  entry **e = &d->b[h & (d->nb - 1)];
  while (*e && ((*e)->hash != h || (*e)->key.len != kl || memcmp((*e)->key.p, k, kl) != 0))
    e = &(*e)->next;
  return e;
}

static int grow(mproc__dict *d) {
  size_t nb = d->nb ? d->nb * 2 : 16;
  entry **b = calloc(nb, sizeof *b);
  if (!b)
    return MPROC_ENOMEM;
  for (size_t i = 0; i < d->nb; i++)
    for (entry *e = d->b[i], *next; e; e = next) {
      next = e->next;
      e->next = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  free(d->b);
  d->b = b;
  d->nb = nb;
  return 0;
}

mproc__blob *mproc__dict_find(mproc__dict *d, const void *k, size_t kl) {
  if (!d->nb)
    return NULL;
  entry *e = *slot(d, k, kl, fnv(k, kl));
  return e ? &e->val : NULL;
}

int mproc__dict_set(mproc__dict *d, const void *k, size_t kl, const void *v, size_t vl) {
  if (d->n >= d->nb && grow(d))
    return MPROC_ENOMEM;
  uint64_t h = fnv(k, kl);
  entry **s = slot(d, k, kl, h);
  mproc__blob nv;
  if (mproc__blob_set(&nv, v, vl))
    return MPROC_ENOMEM;
  if (*s) {
    free((*s)->val.p);
    (*s)->val = nv;
    return 0;
  }
  entry *e = calloc(1, sizeof *e);
  if (!e || mproc__blob_set(&e->key, k, kl)) {
    free(e);
    free(nv.p);
    return MPROC_ENOMEM;
  }
  e->hash = h;
  e->val = nv;
  e->older = d->newest;
  if (d->newest)
    d->newest->newer = e;
  else
    d->oldest = e;
  d->newest = e;
  *s = e;
  d->n++;
  return 0;
}

/* Takes the entry at *s out of its bucket and out of the order; the caller frees it. */
static entry *unlink_entry(mproc__dict *d, entry **s) {
  entry *e = *s;
  *s = e->next;
  *(e->older ? &e->older->newer : &d->oldest) = e->newer;
  *(e->newer ? &e->newer->older : &d->newest) = e->older;
  d->n--;
  return e;
}

int mproc__dict_remove(mproc__dict *d, const void *k, size_t kl, mproc__blob *out) {
  entry **s = d->nb ? slot(d, k, kl, fnv(k, kl)) : NULL;
  if (!s || !*s)
    return MPROC_ENOTFOUND;
  entry *e = unlink_entry(d, s);
  if (out)
    *out = e->val;
  else
    free(e->val.p);
  free(e->key.p);
  free(e);
  return 0;
}

size_t mproc__dict_len(const mproc__dict *d) { return d->n; }

void mproc__dict_clear(mproc__dict *d) {
  for (entry *e = d->oldest, *newer; e; e = newer) {
    newer = e->newer;
    free(e->key.p);
    free(e->val.p);
    free(e);
  }
  free(d->b);
  d->b = NULL;
  d->oldest = d->newest = NULL;
  d->nb = d->n = 0;
}

int mproc__dict_popitem(mproc__dict *d, mproc__blob *out) {
  entry *e = d->newest;
  if (!e)
    return MPROC_ENOTFOUND;
  mproc_bytes kv[2] = {{e->key.p, e->key.len}, {e->val.p, e->val.len}};
  size_t len = mproc__mgr_packed_size(kv, 2);
  /* The reply first: out of memory, the pair stays. */
  if (!(out->p = malloc(len)))
    return MPROC_ENOMEM;
  mproc__mgr_pack(kv, 2, out->p);
  out->len = len;
  e = unlink_entry(d, slot(d, e->key.p, e->key.len, e->hash));
  free(e->key.p);
  free(e->val.p);
  free(e);
  return 0;
}

int mproc__dict_snapshot(mproc__dict *d, int what, mproc__blob *out, size_t *count) {
  size_t size = 0, n = 0;
  for (entry *e = d->oldest; e; e = e->newer)
    size += (what & MGR_SNAP_KEYS ? 8 + e->key.len : 0) +
            (what & MGR_SNAP_VALUES ? 8 + e->val.len : 0);
  unsigned char *b = malloc(size ? size : 1), *w = b;
  if (!b)
    return MPROC_ENOMEM;
  for (entry *e = d->oldest; e; e = e->newer) {
    mproc_bytes kv[2] = {{e->key.p, e->key.len}, {e->val.p, e->val.len}};
    const mproc_bytes *from = what & MGR_SNAP_KEYS ? kv : kv + 1;
    size_t k = what == (MGR_SNAP_KEYS | MGR_SNAP_VALUES) ? 2 : 1;
    mproc__mgr_pack(from, k, w);
    w += mproc__mgr_packed_size(from, k);
    n++;
  }
  out->p = b;
  out->len = size;
  *count = n;
  return 0;
}

/* ---- list ---- */

size_t mproc__list_len(const mproc__list *l) { return l->n; }

mproc__blob *mproc__list_at(mproc__list *l, size_t i) { return &l->v[i]; }

int mproc__list_insert(mproc__list *l, size_t i, const void *v, size_t vl) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    mproc__blob *nv = realloc(l->v, cap * sizeof *nv);
    if (!nv)
      return MPROC_ENOMEM;
    l->v = nv;
    l->cap = cap;
  }
  mproc__blob b;
  if (mproc__blob_set(&b, v, vl))
    return MPROC_ENOMEM;
  memmove(&l->v[i + 1], &l->v[i], (l->n - i) * sizeof *l->v);
  l->v[i] = b;
  l->n++;
  return 0;
}

void mproc__list_remove(mproc__list *l, size_t i, mproc__blob *out) {
  *out = l->v[i];
  memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof *l->v);
  l->n--;
}

void mproc__list_clear(mproc__list *l) {
  for (size_t j = 0; j < l->n; j++)
    free(l->v[j].p);
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

void mproc__list_reverse(mproc__list *l) {
  for (size_t i = 0, j = l->n; i + 1 < j; i++, j--) {
    mproc__blob t = l->v[i];
    l->v[i] = l->v[j - 1];
    l->v[j - 1] = t;
  }
}

int mproc__blob_cmp(const mproc__blob *a, const mproc__blob *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(a->p, b->p, n) : 0;
  return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Merges the sorted runs v[lo, mid) and v[mid, hi) through tmp; on a tie the left (earlier)
 * one goes first, which keeps the sort stable in either direction. */
static void merge(mproc__blob *v, mproc__blob *tmp, size_t lo, size_t mid, size_t hi, int sign) {
  size_t i = lo, j = mid, k = lo;
  while (i < mid && j < hi)
    tmp[k++] = sign * mproc__blob_cmp(&v[j], &v[i]) < 0 ? v[j++] : v[i++];
  while (i < mid)
    tmp[k++] = v[i++];
  while (j < hi)
    tmp[k++] = v[j++];
  memcpy(&v[lo], &tmp[lo], (hi - lo) * sizeof *v);
}

int mproc__list_sort(mproc__list *l, bool reverse) {
  if (l->n < 2)
    return 0;
  /* Bottom-up merge sort: stable (qsort is not) and O(n log n) whatever the input. */
  mproc__blob *tmp = malloc(l->n * sizeof *tmp);
  if (!tmp)
    return MPROC_ENOMEM;
  for (size_t w = 1; w < l->n; w *= 2)
    for (size_t lo = 0; lo + w < l->n; lo += 2 * w)
      merge(l->v, tmp, lo, lo + w, lo + 2 * w < l->n ? lo + 2 * w : l->n, reverse ? -1 : 1);
  free(tmp);
  return 0;
}

/* ---- named objects ---- */

mproc__store *mproc__store_new(void) { return calloc(1, sizeof(mproc__store)); }

static void object_free(object *o) {
  if (o->kind == MGR_K_DICT || o->kind == MGR_K_NS) {
    mproc__dict_clear(o->obj);
  } else if (o->kind == MGR_K_LIST) {
    mproc__list_clear(o->obj);
  } else if (o->kind == MGR_K_QUEUE || o->kind == MGR_K_JQUEUE) {
    mproc__mqueue *q = o->obj;
    for (size_t j = 0; j < q->n; j++)
      free(q->v[q->head + j].p);
    free(q->v);
  } else if (o->kind == MGR_K_VALUE) {
    free(((mproc__blob *)o->obj)->p);
  }
  free(o->obj);
  free(o->name.p);
}

void mproc__store_free(mproc__store *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n; i++)
    object_free(&s->o[i]);
  free(s->o);
  free(s);
}

static const size_t kind_size[MGR_K_END] = {
    [MGR_K_DICT] = sizeof(mproc__dict),       [MGR_K_LIST] = sizeof(mproc__list),
    [MGR_K_NS] = sizeof(mproc__dict),         [MGR_K_LOCK] = sizeof(mproc__mlock),
    [MGR_K_RLOCK] = sizeof(mproc__mlock),     [MGR_K_SEM] = sizeof(mproc__msem),
    [MGR_K_BSEM] = sizeof(mproc__msem),       [MGR_K_EVENT] = sizeof(mproc__mevent),
    [MGR_K_COND] = sizeof(mproc__mcond),      [MGR_K_BARRIER] = sizeof(mproc__mbarrier),
    [MGR_K_QUEUE] = sizeof(mproc__mqueue),    [MGR_K_JQUEUE] = sizeof(mproc__mqueue),
    [MGR_K_VALUE] = sizeof(mproc__blob)};

/* A new object's state from its param and init (store.h): 0 or MPROC_EINVAL. */
static int object_init(mproc__store *s, int kind, void *obj, int64_t param, const void *init,
                       size_t init_len) {
  switch (kind) {
  case MGR_K_LOCK:
  case MGR_K_RLOCK:
    ((mproc__mlock *)obj)->recursive = kind == MGR_K_RLOCK;
    return 0;
  case MGR_K_SEM:
  case MGR_K_BSEM: {
    mproc__msem *m = obj;
    if (param < 0 || param > INT32_MAX)
      return MPROC_EINVAL;
    m->value = m->initial = param;
    m->bounded = kind == MGR_K_BSEM;
    return 0;
  }
  case MGR_K_COND: {
    mproc__mcond *c = obj;
    c->tail = &c->head;
    c->own.recursive = true;
    int k = param < 0 ? -1 : mproc__store_kind(s, (int32_t)param);
    if (param >= INT32_MAX || (param >= 0 && k != MGR_K_LOCK && k != MGR_K_RLOCK))
      return MPROC_EINVAL;
    c->lock = param < 0 ? &c->own : s->o[param].obj;
    return 0;
  }
  case MGR_K_BARRIER: {
    mproc__mbarrier *b = obj;
    if (param < 1 || param > (1 << 20))
      return MPROC_EINVAL;
    b->parties = (uint64_t)param;
    b->reset_gen = UINT64_MAX;
    return 0;
  }
  case MGR_K_QUEUE:
  case MGR_K_JQUEUE: {
    mproc__mqueue *q = obj;
    if (param < 0)
      return MPROC_EINVAL;
    q->maxsize = (uint64_t)param;
    q->joinable = kind == MGR_K_JQUEUE;
    return 0;
  }
  case MGR_K_VALUE:
    return mproc__blob_set(obj, init, init_len);
  }
  return 0;
}

int mproc__store_open(mproc__store *s, const void *name, size_t n, int kind, int64_t param,
                      const void *init, size_t init_len) {
  if (kind < 0 || kind >= MGR_K_END)
    return MPROC_EINVAL;
  for (size_t i = 0; i < s->n; i++)
    if (s->o[i].name.len == n && memcmp(s->o[i].name.p, name, n) == 0)
      return s->o[i].kind == kind ? (int)i : MPROC_EINVAL;
  if (s->n >= INT32_MAX - 1)
    return MPROC_ENOMEM;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    object *o = realloc(s->o, cap * sizeof *o);
    if (!o)
      return MPROC_ENOMEM;
    s->o = o;
    s->cap = cap;
  }
  object *o = &s->o[s->n];
  o->kind = kind;
  o->obj = calloc(1, kind_size[kind]);
  o->name.p = NULL;
  if (!o->obj || mproc__blob_set(&o->name, name, n)) {
    free(o->obj);
    return MPROC_ENOMEM;
  }
  int rc = object_init(s, kind, o->obj, param, init, init_len);
  if (rc) {
    free(o->obj);
    free(o->name.p);
    return rc;
  }
  return (int)s->n++;
}

int mproc__store_kind(mproc__store *s, int32_t id) {
  return id < 0 || (size_t)id >= s->n ? -1 : s->o[id].kind;
}

void *mproc__store_get(mproc__store *s, int32_t id, int kind) {
  int k = mproc__store_kind(s, id);
  if (k != kind && !(kind == MGR_K_DICT && k == MGR_K_NS))
    return NULL;
  return s->o[id].obj;
}

bool mproc__mlock_orphan(mproc__mlock *l, uint64_t who) {
  if (l->owner != who)
    return false;
  l->owner = 0;
  l->depth = 0;
  l->dead = true;
  return true;
}

bool mproc__store_orphan(mproc__store *s, uint64_t who) {
  bool any = false;
  for (size_t i = 0; i < s->n; i++) {
    int k = s->o[i].kind;
    if (k == MGR_K_LOCK || k == MGR_K_RLOCK)
      any |= mproc__mlock_orphan(s->o[i].obj, who);
    else if (k == MGR_K_COND)
      any |= mproc__mlock_orphan(&((mproc__mcond *)s->o[i].obj)->own, who);
  }
  return any;
}
