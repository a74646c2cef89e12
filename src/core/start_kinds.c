/*
 * The start layer's table of object kinds that cross to a child that was not forked
 * (mproc_process_opts.handles): each object layer registers its own from a constructor, so
 * this layer needs to know none of them, and a program that links no queue has no queue
 * kind.
 */
#define _GNU_SOURCE
#include "core/start.h"

#include <string.h>

#define KINDS_MAX 16

/* Filled by constructors before main and before any thread exists; read-only after. */
static mproc__kind kinds[KINDS_MAX];
static size_t nkinds;

void mproc__kind_register(const mproc__kind *k) {
  if (nkinds < KINDS_MAX)
    kinds[nkinds++] = *k;
}

static const mproc__kind *kind_of_magic(uint32_t magic) {
  for (size_t i = 0; i < nkinds; i++)
    if (kinds[i].magic == magic)
      return &kinds[i];
  return NULL;
}

int mproc__handle_export(const void *h, mproc__msg *m) {
  uint32_t magic;
  /* A pointer that is not an mproc object must not crash us: look before reading. */
  if (!h || !mproc__readable(h, sizeof magic))
    return MPROC_EINVAL;
  memcpy(&magic, h, sizeof magic);
  const mproc__kind *k = kind_of_magic(magic);
  if (!k)
    return MPROC_EINVAL;
  mproc__msg_put_u64(m, magic);
  int rc = k->export(h, m);
  return rc ? rc : m->err;
}

void *mproc__handle_import(mproc__rd *r) {
  const mproc__kind *k = kind_of_magic((uint32_t)mproc__rd_u64(r));
  void *h = k && !r->bad ? k->import(r) : NULL;
  uint32_t magic = 0;
  if (h)
    memcpy(&magic, h, sizeof magic);
  if (!h || !k || magic != k->magic) {
    r->bad = true;
    return NULL;
  }
  return h;
}

int mproc__kind_same_export(const void *h, mproc__msg *m) {
  mproc__msg_put_mem(m, h);
  mproc__msg_put_u64(m, (uintptr_t)h);
  return m->err;
}

void *mproc__kind_same_import(mproc__rd *r) {
  void *h = (void *)(uintptr_t)mproc__rd_u64(r);
  return r->bad || !mproc__readable(h, sizeof(uint32_t)) ? NULL : h;
}
