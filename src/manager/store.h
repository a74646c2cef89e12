/* The Manager server's objects: named dicts (bytes -> bytes) and lists of bytes. Only the
 * server process holds them; every operation runs whole between two requests, which is
 * what makes each one atomic. */
#ifndef MPROC_MANAGER_STORE_H
#define MPROC_MANAGER_STORE_H

#include "core/internal.h"

typedef struct mproc__blob {
  size_t len;
  unsigned char *p;
} mproc__blob;

typedef struct mproc__store mproc__store;
mproc__store *mproc__store_new(void);
void mproc__store_free(mproc__store *s);
/* The id of the object called name of kind (0 dict, 1 list), made if absent: >= 0, or
 * MPROC_EINVAL (the name is the other kind's), MPROC_ENOMEM. */
int mproc__store_open(mproc__store *s, const void *name, size_t n, int kind);
/* The object id of kind, NULL for a bad id. */
void *mproc__store_get(mproc__store *s, int32_t id, int kind);

/* Dicts. A found value's blob stays the dict's (valid until the next change). */
typedef struct mproc__dict mproc__dict;
int mproc__dict_set(mproc__dict *d, const void *k, size_t kl, const void *v, size_t vl);
mproc__blob *mproc__dict_find(mproc__dict *d, const void *k, size_t kl);
/* Removes the key; its value goes to *out (the caller frees out->p) if out. MPROC_ENOTFOUND. */
int mproc__dict_remove(mproc__dict *d, const void *k, size_t kl, mproc__blob *out);
size_t mproc__dict_len(const mproc__dict *d);
void mproc__dict_clear(mproc__dict *d);
/* The keys (or keys and values alternating) packed as proto.h says into *out (malloc'd;
 * the caller frees out->p), their count in *count. */
int mproc__dict_snapshot(mproc__dict *d, bool values, mproc__blob *out, size_t *count);

/* Lists. Indexes already normalised (0 <= i < len, or <= len for insert). */
typedef struct mproc__list mproc__list;
size_t mproc__list_len(const mproc__list *l);
mproc__blob *mproc__list_at(mproc__list *l, size_t i);
int mproc__list_insert(mproc__list *l, size_t i, const void *v, size_t vl);
/* Removes item i into *out (the caller frees out->p). */
void mproc__list_remove(mproc__list *l, size_t i, mproc__blob *out);
/* A copy of v[vl) as a blob: 0 or MPROC_ENOMEM. */
int mproc__blob_set(mproc__blob *b, const void *v, size_t vl);

#endif
