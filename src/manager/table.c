/* A Manager dict's table in shared memory (table.h). */
#define _GNU_SOURCE
#include "manager/table.h"

#include <string.h>

/* Address space per table, the most a dict holds: a mapping of it costs nothing until the
 * file grows into it, and 4 GiB leaves room for ~30 000 tables in a 47-bit address space.
 * The header says it, so a mapper built with another figure maps what the server made. */
#define TABLE_RESERVE ((size_t)1 << 32)
#define TABLE_FIRST ((size_t)64 << 10) /* the file's first size */
#define TABLE_MAGIC 0x6d70726f63746231ull /* "mproctb1" */
#define HEAP_START 1024                  /* the header's room; blocks from here */
/* Block sizes are 32 << c bytes (its 16-byte head included), c < NCLASS: 32 B .. 4 GiB. */
#define NCLASS 28
#define BLOCK_HEAD 16
#define FIRST_CAP 8 /* a new hash table's entries */
/* An index slot: 0 empty, SLOT_GONE a deleted pair's, else the entry's number + 1. */
#define SLOT_GONE UINT32_MAX
#define MAX_ENTRIES ((uint64_t)1 << 30)

typedef struct header {
  uint64_t magic;
  uint64_t reserve; /* every mapping's length: the file never grows past it */
  uint64_t size;  /* the file's length: every offset in use lies below */
  uint64_t top;   /* the heap's first byte never handed out */
  uint64_t tab;   /* the current hash table's block (the commit of a rebuild or a clear) */
  uint64_t free_[NCLASS]; /* per class the first free block; each's first word the next */
  mproc_lock lock;
} header;

/* A block: w0 its class while in use (the next free one's offset while free), len the bytes
 * used, then the bytes. */
typedef struct block {
  uint64_t w0, len;
} block;

/* A hash table's block holds this, then uint32_t slots[nslots], then entry e[cap]. */
typedef struct tabh {
  uint64_t nslots, cap;
  uint64_t n;    /* entries used (pairs and holes); a new pair's n++ is its commit */
  uint64_t live; /* pairs */
} tabh;

typedef struct entry {
  uint64_t hash;
  uint64_t key; /* the key's block; 0: a hole (the pair deleted; the clearing is the commit) */
  uint64_t val; /* the value's block (a new value's switch is the commit) */
} entry;

_Static_assert(sizeof(header) <= HEAP_START, "the header outgrew its room");

#define HDR(t) ((header *)(t)->base)
#define AT(t, off) ((t)->base + (off))
#define BLK(t, off) ((block *)AT(t, off))
#define DATA(t, off) (AT(t, off) + BLOCK_HEAD)
/* The commit stores: release, so that no earlier write of the change moves after them (a
 * killed holder's stores up to its last instruction are all in the shared pages). */
#define COMMIT(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static tabh *tab(mproc__table *t) { return (tabh *)DATA(t, HDR(t)->tab); }
static uint32_t *slots(tabh *h) { return (uint32_t *)(h + 1); }
static entry *entries(tabh *h) { return (entry *)(slots(h) + h->nslots); }

static uint64_t hash_of(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/* ---- the heap ---- */

/* Grows the file so that [0, need) lies in it, by half at least (few ftruncates; the
 * file's blocks are allocated, so growing by more would hold memory no one uses). */
static int grow_file(mproc__table *t, uint64_t need) {
  header *h = HDR(t);
  if (need <= h->size)
    return 0;
  if (need > h->reserve)
    return MPROC_ENOMEM;
  uint64_t size = h->size + h->size / 2 > need ? h->size + h->size / 2 : need;
  if (size > h->reserve)
    size = h->reserve;
  size = mproc__page_round(size);
  /* Its blocks allocated now: out of memory is MPROC_ENOMEM here, not SIGBUS at a touch. */
  int rc = mproc__file_size(t->fd, size, true);
  if (rc)
    return rc == -ENOSPC || rc == -EFBIG ? MPROC_ENOMEM : rc;
  COMMIT(&h->size, size); /* after the file: a mapper never looks past what exists */
  return 0;
}

/* A block for len bytes: its offset, or 0 when out of room. */
static uint64_t blk_alloc(mproc__table *t, size_t len, int *err) {
  header *h = HDR(t);
  int c = 0;
  while (c < NCLASS && ((uint64_t)32 << c) < (uint64_t)len + BLOCK_HEAD)
    c++;
  if (c == NCLASS) {
    *err = MPROC_ENOMEM;
    return 0;
  }
  uint64_t off = h->free_[c];
  if (off) {
    COMMIT(&h->free_[c], BLK(t, off)->w0); /* taken: a crash from here leaks it only */
  } else {
    uint64_t size = (uint64_t)32 << c;
    int rc = grow_file(t, h->top + size);
    if (rc) {
      *err = rc;
      return 0;
    }
    off = h->top;
    COMMIT(&h->top, off + size);
  }
  BLK(t, off)->w0 = (uint64_t)c;
  BLK(t, off)->len = len;
  return off;
}

static void blk_free(mproc__table *t, uint64_t off) {
  if (!off)
    return;
  header *h = HDR(t);
  uint64_t c = BLK(t, off)->w0;
  BLK(t, off)->w0 = h->free_[c];
  COMMIT(&h->free_[c], off); /* a crash before: the block leaks, nothing worse */
}

static uint64_t blk_copy(mproc__table *t, const void *p, size_t len, int *err) {
  uint64_t off = blk_alloc(t, len, err);
  if (off && len)
    memcpy(DATA(t, off), p, len);
  return off;
}

/* ---- the hash table ---- */

static bool same_key(mproc__table *t, const entry *e, uint64_t hash, const void *k, size_t kl) {
  return e->key && e->hash == hash && BLK(t, e->key)->len == kl &&
         (kl == 0 || memcmp(DATA(t, e->key), k, kl) == 0);
}

/* The slot of k in h (its entry's number + 1 in it), or of the empty slot that ends its
 * probe (then *found false). Linear probing; a slot is used by at most one entry ever, and
 * n <= cap = nslots / 2, so an empty slot always ends the walk. */
static uint64_t probe(mproc__table *t, tabh *h, uint64_t hash, const void *k, size_t kl,
                      bool *found) {
  uint32_t *s = slots(h);
  entry *e = entries(h);
  uint64_t mask = h->nslots - 1;
  for (uint64_t i = hash & mask;; i = (i + 1) & mask) {
    if (s[i] == 0) {
      *found = false;
      return i;
    }
    if (s[i] != SLOT_GONE && s[i] - 1 < h->n && same_key(t, &e[s[i] - 1], hash, k, kl)) {
      *found = true;
      return i;
    }
  }
}

/* Puts entry i of h in its slot (its key known absent from the slots). */
static void slot_add(tabh *h, uint64_t i) {
  uint32_t *s = slots(h);
  uint64_t mask = h->nslots - 1;
  uint64_t j = entries(h)[i].hash & mask;
  while (s[j] != 0)
    j = (j + 1) & mask;
  s[j] = (uint32_t)(i + 1);
}

/* Rebuilds the slots and the count from the entries: after a holder's death, whatever it
 * had done of a change to them. */
static void repair(mproc__table *t) {
  tabh *h = tab(t);
  memset(slots(h), 0, h->nslots * sizeof(uint32_t));
  h->live = 0;
  for (uint64_t i = 0; i < h->n; i++)
    if (entries(h)[i].key) {
      slot_add(h, i);
      h->live++;
    }
}

/* A new hash table block for cap entries (a power of two), empty. */
static uint64_t tab_new(mproc__table *t, uint64_t cap, int *err) {
  uint64_t nslots = cap * 2;
  size_t bytes = sizeof(tabh) + nslots * sizeof(uint32_t) + cap * sizeof(entry);
  uint64_t off = blk_alloc(t, bytes, err);
  if (!off)
    return 0;
  tabh *h = (tabh *)DATA(t, off);
  memset(h, 0, bytes);
  h->nslots = nslots;
  h->cap = cap;
  return off;
}

/* Room for one more entry: the live pairs into a new table (twice as big if they fill more
 * than half of it, else the same size: the holes squeezed out), switched to by one store. */
static int make_room(mproc__table *t) {
  tabh *old = tab(t);
  if (old->n < old->cap)
    return 0;
  uint64_t cap = old->live * 2 > old->cap ? old->cap * 2 : old->cap;
  if (cap > MAX_ENTRIES)
    return MPROC_ENOMEM;
  int err = 0;
  uint64_t off = tab_new(t, cap, &err);
  if (!off)
    return err;
  old = tab(t); /* the same place: the mapping never moves */
  tabh *h = (tabh *)DATA(t, off);
  for (uint64_t i = 0; i < old->n; i++)
    if (entries(old)[i].key) {
      entries(h)[h->n] = entries(old)[i];
      slot_add(h, h->n++);
    }
  h->live = h->n;
  uint64_t was = HDR(t)->tab;
  COMMIT(&HDR(t)->tab, off);
  blk_free(t, was);
  return 0;
}

int mproc__table_find(mproc__table *t, const void *k, size_t kl, const void **v, size_t *vl) {
  tabh *h = tab(t);
  bool found;
  uint64_t s = probe(t, h, hash_of(k, kl), k, kl, &found);
  if (!found)
    return MPROC_ENOTFOUND;
  entry *e = &entries(h)[slots(h)[s] - 1];
  *v = DATA(t, e->val);
  *vl = BLK(t, e->val)->len;
  return 0;
}

/* Sets k; half: a new key's slot left out (the test hook's holder killed there). */
static int set(mproc__table *t, const void *k, size_t kl, const void *v, size_t vl, bool half) {
  uint64_t hash = hash_of(k, kl);
  bool found;
  tabh *h = tab(t);
  uint64_t s = probe(t, h, hash, k, kl, &found);
  int err = 0;
  if (found) {
    entry *e = &entries(h)[slots(h)[s] - 1];
    uint64_t nv = blk_copy(t, v, vl, &err);
    if (!nv)
      return err;
    uint64_t was = e->val;
    COMMIT(&e->val, nv);
    blk_free(t, was);
    return 0;
  }
  int rc = make_room(t);
  if (rc)
    return rc;
  uint64_t kb = blk_copy(t, k, kl, &err);
  uint64_t vb = kb ? blk_copy(t, v, vl, &err) : 0;
  if (!vb) {
    blk_free(t, kb);
    return err;
  }
  h = tab(t);
  entry *e = &entries(h)[h->n];
  e->hash = hash;
  e->key = kb;
  e->val = vb;
  COMMIT(&h->n, h->n + 1); /* the pair exists; its slot (derived) follows */
  if (half)
    return 0;
  slot_add(h, h->n - 1);
  h->live++;
  return 0;
}

int mproc__table_set(mproc__table *t, const void *k, size_t kl, const void *v, size_t vl) {
  return set(t, k, kl, v, vl, false);
}

int mproc__table_test_half_set(mproc__table *t, const void *k, size_t kl, const void *v,
                               size_t vl) {
  return set(t, k, kl, v, vl, true);
}

int mproc__table_remove(mproc__table *t, const void *k, size_t kl) {
  tabh *h = tab(t);
  bool found;
  uint64_t s = probe(t, h, hash_of(k, kl), k, kl, &found);
  if (!found)
    return MPROC_ENOTFOUND;
  entry *e = &entries(h)[slots(h)[s] - 1];
  uint64_t kb = e->key, vb = e->val;
  COMMIT(&e->key, 0);
  slots(h)[s] = SLOT_GONE;
  h->live--;
  blk_free(t, kb);
  blk_free(t, vb);
  return 0;
}

size_t mproc__table_len(mproc__table *t) { return (size_t)tab(t)->live; }

int mproc__table_add(mproc__table *t, const void *k, size_t kl, int64_t delta, int64_t *now) {
  const void *v;
  size_t vl;
  int64_t x = 0;
  bool found = mproc__table_find(t, k, kl, &v, &vl) == 0;
  if (found) {
    if (vl != sizeof x)
      return MPROC_EINVAL; /* not a counter: Python's TypeError */
    memcpy(&x, v, sizeof x);
  }
  /* Wraps as int64_t arithmetic would, without the undefined behaviour. */
  x = (int64_t)((uint64_t)x + (uint64_t)delta);
  int rc = 0;
  if (found)
    /* One aligned 8-byte store (a block's bytes start 16-aligned): no torn counter. */
    COMMIT((int64_t *)(uintptr_t)v, x);
  else
    rc = mproc__table_set(t, k, kl, &x, sizeof x);
  if (rc == 0)
    *now = x;
  return rc;
}

int mproc__table_clear(mproc__table *t) {
  int err = 0;
  uint64_t off = tab_new(t, FIRST_CAP, &err);
  if (!off)
    return err;
  tabh *old = tab(t);
  uint64_t was = HDR(t)->tab;
  COMMIT(&HDR(t)->tab, off); /* empty from here; a crash below leaks the old blocks only */
  for (uint64_t i = 0; i < old->n; i++) {
    entry *e = &entries(old)[i];
    if (e->key) {
      blk_free(t, e->key);
      blk_free(t, e->val);
    }
  }
  blk_free(t, was);
  return 0;
}

size_t mproc__table_end(mproc__table *t) { return (size_t)tab(t)->n; }

int mproc__table_at(mproc__table *t, size_t i, const void **k, size_t *kl, const void **v,
                    size_t *vl) {
  tabh *h = tab(t);
  if (i >= h->n || !entries(h)[i].key)
    return -ENOENT;
  entry *e = &entries(h)[i];
  *k = DATA(t, e->key);
  *kl = BLK(t, e->key)->len;
  *v = DATA(t, e->val);
  *vl = BLK(t, e->val)->len;
  return 0;
}

/* ---- the lock ---- */

int mproc__table_lock(mproc__table *t) {
  int rc = mproc_lock_acquire(&HDR(t)->lock, MPROC_FOREVER);
  if (rc == MPROC_EOWNERDEAD) {
    repair(t);
    rc = 0;
  }
  return rc;
}

void mproc__table_unlock(mproc__table *t) { (void)mproc_lock_release(&HDR(t)->lock); }

/* ---- making and mapping ---- */

int mproc__table_create(mproc__table *t) {
  /* A reserve's memfd has the whole length: cut to the first size, grown as it fills. */
  unsigned char *p = mproc__shared_reserve(TABLE_RESERVE);
  if (!p)
    return errno == ENOMEM ? MPROC_ENOMEM : -errno;
  void *base;
  size_t len;
  int fd = mproc__shared_lookup(p, &base, &len);
  int rc = fd < 0 ? fd : mproc__file_size(fd, TABLE_FIRST, true);
  if (rc) {
    mproc__shared_unmap(p, TABLE_RESERVE);
    return rc == -ENOSPC ? MPROC_ENOMEM : rc;
  }
  t->base = p;
  t->fd = fd;
  header *h = HDR(t);
  h->reserve = TABLE_RESERVE;
  h->size = TABLE_FIRST;
  h->top = HEAP_START;
  if ((rc = mproc__lock_init(&h->lock, false, true)) == 0) {
    int err = 0;
    h->tab = tab_new(t, FIRST_CAP, &err);
    rc = h->tab ? 0 : err;
  }
  if (rc) {
    mproc__shared_unmap(p, TABLE_RESERVE);
    t->base = NULL;
    return rc;
  }
  /* The magic last: a table is whole before anyone takes it for one. */
  COMMIT(&h->magic, TABLE_MAGIC);
  return 0;
}

int mproc__table_attach(mproc__table *t, int fd) {
  /* The header first, for the reserve the server made the table with. The sender is the
   * server (authenticated by the key), trusted as our own memory is; the magic only keeps
   * a wrong descriptor of ours from being taken for a table. */
  int dup = mproc__dup_cloexec(fd);
  header *h = dup < 0 ? NULL : mproc__shared_map_fd(dup, mproc__page_size());
  uint64_t reserve = h && h->magic == TABLE_MAGIC ? h->reserve : 0;
  if (h)
    mproc__shared_unmap(h, mproc__page_size());
  else if (dup >= 0)
    mproc__close(dup);
  unsigned char *p = NULL;
  int rc = MPROC_EINVAL;
  if (reserve >= TABLE_FIRST && reserve <= SIZE_MAX && !(p = mproc__shared_map_fd(fd, reserve)))
    rc = -errno;
  if (!p) {
    mproc__close(fd);
    return rc;
  }
  t->base = p;
  t->fd = fd;
  return 0;
}

void mproc__table_detach(mproc__table *t) {
  if (t->base)
    mproc__shared_unmap(t->base, HDR(t)->reserve);
  t->base = NULL;
}

/* ---- the server's life ---- */

int mproc__alive_create(mproc__alive *a) {
  size_t len = mproc__page_size();
  mproc_lock *l = mproc__shared_map(len);
  if (!l)
    return -errno;
  void *base;
  int fd = mproc__shared_lookup(l, &base, &len);
  int rc = fd < 0 ? fd : mproc__lock_init(l, false, true);
  if (rc == 0)
    rc = mproc_lock_acquire(l, MPROC_FOREVER);
  if (rc) {
    mproc__shared_unmap(l, mproc__page_size());
    return rc;
  }
  a->l = l;
  a->fd = fd;
  return 0;
}

int mproc__alive_attach(mproc__alive *a, int fd) {
  mproc_lock *l = mproc__shared_map_fd(fd, mproc__page_size());
  if (!l) {
    int e = errno;
    mproc__close(fd);
    return -e;
  }
  a->l = l;
  a->fd = fd;
  return 0;
}

bool mproc__alive_is(const mproc__alive *a) { return mproc__mutex_locked(&a->l->m); }

void mproc__alive_detach(mproc__alive *a) {
  if (!a->l)
    return;
  mproc__lock_drop(a->l);
  mproc__shared_unmap(a->l, mproc__page_size());
  a->l = NULL;
}
