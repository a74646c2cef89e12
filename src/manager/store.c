/* The Manager server's objects (store.h): a table in shared memory per dict (table.h), an
 * array per list, and the table of named objects. */
#define _GNU_SOURCE
#include "manager/proto.h"
#include "manager/store.h"

#include <stdlib.h>
#include <string.h>

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
    mproc__table_detach(o->obj);
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
    [MGR_K_DICT] = sizeof(mproc__table),      [MGR_K_LIST] = sizeof(mproc__list),
    [MGR_K_NS] = sizeof(mproc__table),        [MGR_K_LOCK] = sizeof(mproc__mlock),
    [MGR_K_RLOCK] = sizeof(mproc__mlock),     [MGR_K_SEM] = sizeof(mproc__msem),
    [MGR_K_BSEM] = sizeof(mproc__msem),       [MGR_K_EVENT] = sizeof(mproc__mevent),
    [MGR_K_COND] = sizeof(mproc__mcond),      [MGR_K_BARRIER] = sizeof(mproc__mbarrier),
    [MGR_K_QUEUE] = sizeof(mproc__mqueue),    [MGR_K_JQUEUE] = sizeof(mproc__mqueue),
    [MGR_K_VALUE] = sizeof(mproc__blob)};

/* A new object's state from its param and init (store.h): 0 or MPROC_EINVAL. */
static int object_init(mproc__store *s, int kind, void *obj, int64_t param, const void *init,
                       size_t init_len) {
  switch (kind) {
  case MGR_K_DICT:
  case MGR_K_NS:
    return mproc__table_create(obj);
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
