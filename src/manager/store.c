/* The Manager server's objects (store.h): a chained hash table per dict (FNV-1a, doubled
 * at load 1), an array per list, and the table of named objects. */
#define _GNU_SOURCE
#include "manager/proto.h"
#include "manager/store.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
  struct entry *next;
  uint64_t hash;
  mproc__blob key, val;
} entry;

struct mproc__dict {
  entry **b;
  size_t nb, n;
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
  *s = e;
  d->n++;
  return 0;
}

int mproc__dict_remove(mproc__dict *d, const void *k, size_t kl, mproc__blob *out) {
  entry **s = d->nb ? slot(d, k, kl, fnv(k, kl)) : NULL;
  if (!s || !*s)
    return MPROC_ENOTFOUND;
  entry *e = *s;
  *s = e->next;
  if (out)
    *out = e->val;
  else
    free(e->val.p);
  free(e->key.p);
  free(e);
  d->n--;
  return 0;
}

size_t mproc__dict_len(const mproc__dict *d) { return d->n; }

void mproc__dict_clear(mproc__dict *d) {
  for (size_t i = 0; i < d->nb; i++)
    for (entry *e = d->b[i], *next; e; e = next) {
      next = e->next;
      free(e->key.p);
      free(e->val.p);
      free(e);
    }
  free(d->b);
  d->b = NULL;
  d->nb = d->n = 0;
}

int mproc__dict_snapshot(mproc__dict *d, bool values, mproc__blob *out, size_t *count) {
  size_t size = 0, n = 0;
  for (size_t i = 0; i < d->nb; i++)
    for (entry *e = d->b[i]; e; e = e->next)
      size += 8 + e->key.len + (values ? 8 + e->val.len : 0);
  unsigned char *b = malloc(size ? size : 1), *w = b;
  if (!b)
    return MPROC_ENOMEM;
  for (size_t i = 0; i < d->nb; i++)
    for (entry *e = d->b[i]; e; e = e->next) {
      mproc_bytes kv[2] = {{e->key.p, e->key.len}, {e->val.p, e->val.len}};
      mproc__mgr_pack(kv, values ? 2 : 1, w);
      w += mproc__mgr_packed_size(kv, values ? 2 : 1);
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

/* ---- named objects ---- */

mproc__store *mproc__store_new(void) { return calloc(1, sizeof(mproc__store)); }

void mproc__store_free(mproc__store *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n; i++) {
    if (s->o[i].kind == 0) {
      mproc__dict_clear(s->o[i].obj);
    } else {
      mproc__list *l = s->o[i].obj;
      for (size_t j = 0; j < l->n; j++)
        free(l->v[j].p);
      free(l->v);
    }
    free(s->o[i].obj);
    free(s->o[i].name.p);
  }
  free(s->o);
  free(s);
}

int mproc__store_open(mproc__store *s, const void *name, size_t n, int kind) {
  for (size_t i = 0; i < s->n; i++)
    if (s->o[i].name.len == n && memcmp(s->o[i].name.p, name, n) == 0)
      return s->o[i].kind == kind ? (int)i : MPROC_EINVAL;
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
  o->obj = kind == 0 ? calloc(1, sizeof(mproc__dict)) : calloc(1, sizeof(mproc__list));
  if (!o->obj || mproc__blob_set(&o->name, name, n)) {
    free(o->obj);
    return MPROC_ENOMEM;
  }
  return (int)s->n++;
}

void *mproc__store_get(mproc__store *s, int32_t id, int kind) {
  if (id < 0 || (size_t)id >= s->n || s->o[id].kind != kind)
    return NULL;
  return s->o[id].obj;
}
