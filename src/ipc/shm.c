/*
 * The shm layer: named POSIX shared memory segments (SharedMemory) and shared arrays
 * (Value/Array/RawArray).
 *
 * A segment handle is private to the process (malloc'd); its mapping is MAP_SHARED, so a
 * child forked after create/attach uses the same handle. No descriptor is kept after the
 * mmap, and nothing is ever unlinked except by mproc_shm_unlink (or by a create that fails
 * after making its name).
 *
 * The shared arena (core/arena.h) holds every mproc object; an array is one block of it: header,
 * optional lock and data. The handle is the block's address, valid in every child forked
 * after it was made.
 */
#define _GNU_SOURCE
#include "core/arena.h"
#include "core/internal.h"
#include "core/sync.h"
#include "core/start.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHM_NAME_MAX 200

#define SHM_MAGIC 0x53484d45u /* "SHME" */

struct mproc_shm {
  uint32_t magic; /* first: how a handle's kind is told (start.h) */
  void *buf;
  size_t size;
  char name[SHM_NAME_MAX + 2]; /* "/" + name + NUL; mproc_shm_name returns name + 1 */
};

/* Checks a user name and writes it with one leading '/' into out. */
static int shm_name_set(char out[SHM_NAME_MAX + 2], const char *name) {
  if (!name)
    return MPROC_EINVAL;
  if (name[0] == '/')
    name++;
  size_t len = strnlen(name, SHM_NAME_MAX + 1);
  if (len == 0 || len > SHM_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return MPROC_EINVAL;
  for (size_t i = 0; i < len; i++) {
    char ch = name[i];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-';
    if (!ok)
      return MPROC_EINVAL;
  }
  out[0] = '/';
  memcpy(out + 1, name, len + 1);
  return 0;
}

/* "/mproc-<pid>-<32 hex>": unguessable (128 random bits), and the "mproc" prefix lets
 * tests and users spot leaked segments in /dev/shm. */
static int shm_name_generate(char out[SHM_NAME_MAX + 2]) {
  unsigned char rnd[16];
  int rc = mproc__random_bytes(rnd, sizeof rnd);
  if (rc)
    return rc;
  int n = snprintf(out, SHM_NAME_MAX + 2, "/mproc-%d-", (int)mproc__getpid());
  for (size_t i = 0; i < sizeof rnd; i++)
    n += snprintf(out + n, (size_t)(SHM_NAME_MAX + 2 - n), "%02x", rnd[i]);
  return 0;
}

/* Creates s->name exclusively (-EEXIST leaves an existing segment untouched), or maps the
 * existing one whole (an empty segment cannot be mapped: EINVAL, as Python's ValueError).
 * A NULL name, for create only, is a fresh random one. */
static int shm_open_named(mproc_shm *s, const char *name, size_t size, bool create) {
  if (!create) {
    int rc = shm_name_set(s->name, name);
    return rc ? rc : mproc__named_attach(s->name, &s->buf, &s->size);
  }
  s->size = size;
  if (name) {
    int rc = shm_name_set(s->name, name);
    return rc ? rc : mproc__named_create(s->name, size, &s->buf);
  }
  /* A clash of 128 random bits means something else is wrong; retry a few times. */
  int rc = -EEXIST;
  for (int tries = 0; tries < 8 && rc == -EEXIST; tries++) {
    rc = shm_name_generate(s->name);
    if (rc == 0)
      rc = mproc__named_create(s->name, size, &s->buf);
  }
  return rc;
}

static int shm_new(mproc_shm **out, const char *name, size_t size, bool create) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  if (create && size == 0)
    return MPROC_EINVAL;
  if ((uint64_t)size > (uint64_t)INT64_MAX)
    return MPROC_ETOOBIG;
  mproc_shm *s = calloc(1, sizeof *s);
  if (!s)
    return MPROC_ENOMEM;
  int rc = shm_open_named(s, name, size, create);
  if (rc) {
    free(s);
    return rc;
  }
  s->magic = SHM_MAGIC;
  *out = s;
  return 0;
}

int mproc_shm_create(mproc_shm **out, const char *name, size_t size) {
  return shm_new(out, name, size, true);
}

int mproc_shm_attach(mproc_shm **out, const char *name) { return shm_new(out, name, 0, false); }

void *mproc_shm_buf(const mproc_shm *s) { return s ? s->buf : NULL; }

size_t mproc_shm_size(const mproc_shm *s) { return s ? s->size : 0; }

const char *mproc_shm_name(const mproc_shm *s) { return s ? s->name + 1 : NULL; }

int mproc_shm_unlink(mproc_shm *s) {
  if (!s)
    return MPROC_EINVAL;
  return mproc__named_unlink(s->name);
}

void mproc_shm_free(mproc_shm *s) {
  if (!s)
    return;
  mproc__shared_unmap(s->buf, s->size);
  free(s);
}

/* ---- arrays ---- */

#define ARRAY_MAGIC 0x41525259u /* "ARRY" */

struct mproc_array {
  uint32_t magic;
  size_t elem_size, n;
  size_t alloc_len;
  size_t data_off;
  mproc_lock *lock; /* inside this mapping, or NULL */
};

/* Offsets inside the mapping, each rounded to a cache line so the data is aligned for any
 * type and the lock does not share a line with the header or the data. */
static size_t round_line(size_t x) {
  return (x + MPROC__CACHELINE - 1) & ~(size_t)(MPROC__CACHELINE - 1);
}

int mproc_array_new(mproc_array **out, size_t elem_size, size_t n, const void *init,
                    bool with_lock) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  if (elem_size == 0 || n == 0 || n > SIZE_MAX / elem_size)
    return MPROC_EINVAL;
  size_t bytes = elem_size * n;
  size_t lock_off = round_line(sizeof(struct mproc_array));
  size_t data_off = with_lock ? round_line(lock_off + sizeof(mproc_lock)) : lock_off;
  if (bytes > SIZE_MAX - data_off)
    return MPROC_EINVAL;
  size_t alloc_len = data_off + bytes;
  struct mproc_array *a = mproc__shared_alloc(alloc_len);
  if (!a)
    return -errno;
  a->elem_size = elem_size;
  a->n = n;
  a->alloc_len = alloc_len;
  a->data_off = data_off;
  if (with_lock) {
    a->lock = (mproc_lock *)((char *)a + lock_off);
    int rc = mproc__lock_init(a->lock, true, true);
    if (rc) {
      mproc__shared_free(a, alloc_len);
      return rc;
    }
  }
  if (init)
    memcpy((char *)a + data_off, init, bytes); /* else the fresh mapping is zero-filled */
  a->magic = ARRAY_MAGIC;
  *out = a;
  return 0;
}

static bool array_ok(const mproc_array *a) { return a && a->magic == ARRAY_MAGIC; }

void *mproc_array_data(const mproc_array *a) {
  return array_ok(a) ? (char *)a + a->data_off : NULL;
}

size_t mproc_array_len(const mproc_array *a) { return array_ok(a) ? a->n : 0; }

mproc_lock *mproc_array_lock(const mproc_array *a) { return array_ok(a) ? a->lock : NULL; }

void mproc_array_free(mproc_array *a) {
  if (!array_ok(a))
    return;
  /* Only this process's view goes; children keep theirs. The magic stays: other
   * processes still use the same memory. */
  if (a->lock)
    mproc__lock_drop(a->lock);
  mproc__shared_free(a, a->alloc_len);
}

/* ---- crossing to a child that was not forked ---- */

/* A segment crosses by name, as Python's SharedMemory pickles: the child attaches it (so
 * it must not be unlinked before the child starts). An array is its own mapping. */
static int shm_export(const void *h, mproc__msg *m) {
  mproc__msg_put_str(m, ((const mproc_shm *)h)->name);
  return m->err;
}

static void *shm_import(mproc__rd *r) {
  const char *name = mproc__rd_str(r);
  mproc_shm *s = NULL;
  int rc = name ? mproc_shm_attach(&s, name) : -EPROTO;
  if (rc)
    r->err = rc; /* -ENOENT: unlinked before the child could attach it */
  return rc ? NULL : s;
}

__attribute__((constructor(MPROC__CTOR_KINDS))) static void shm_kinds(void) {
  static const mproc__kind k[] = {
      {SHM_MAGIC, shm_export, shm_import},
      {ARRAY_MAGIC, mproc__kind_same_export, mproc__kind_same_import},
  };
  for (size_t i = 0; i < sizeof k / sizeof *k; i++)
    mproc__kind_register(&k[i]);
}
