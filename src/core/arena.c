/*
 * The arena layer: the shared memory every mproc object lives in (see arena.h for the
 * contract). Below sync, ring and everything else; it uses only the OS seam.
 *
 * Why per-process bookkeeping: after fork both sides hold the same blocks, and only the
 * process that made a chunk hands out its blocks, so two processes never hand out one block.
 */
#define _GNU_SOURCE
#include "core/arena.h"
#include "os/os.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE ((size_t)64 * 1024)
#define BLOCK_MIN 64
#define BLOCK_MAX 2048
#define CHUNK_MAX_BLOCKS (CHUNK_SIZE / BLOCK_MIN)

/* One MAP_SHARED chunk of equal blocks. The bookkeeping is private to the process (a
 * forked child gets a copy and then keeps its own). */
typedef struct chunk {
  struct chunk *next;
  char *base;
  pid_t creator;     /* only this process hands out its blocks */
  uint32_t block;    /* block size */
  uint32_t nblocks;
  uint32_t used;     /* handed out and not freed, as this process sees it */
  uint32_t retired;  /* freed after a fork: never handed out again */
  uint32_t fresh;    /* blocks [fresh, nblocks) were never handed out */
  uint32_t nfree;    /* freelist[0..nfree): freed with no fork since: reusable */
  uint16_t freelist[CHUNK_MAX_BLOCKS];
  uint32_t gen[CHUNK_MAX_BLOCKS]; /* fork generation when each block was handed out */
} chunk;

static pthread_mutex_t arena_mu = PTHREAD_MUTEX_INITIALIZER;
static chunk *chunks;
/* Counts forks seen by this process, on both sides: every block handed out before a fork
 * may be in use by the other side. */
static uint32_t fork_gen;

static void arena_prepare(void) { pthread_mutex_lock(&arena_mu); }
static void arena_parent(void) {
  fork_gen++;
  pthread_mutex_unlock(&arena_mu);
}
static void arena_child(void) {
  fork_gen++;
  pthread_mutex_init(&arena_mu, NULL); /* held by the forking thread's copy: start afresh */
}

/* Numbered: it must run before start.c's takeover of a spawned child, which never returns. */
__attribute__((constructor(150))) static void arena_init(void) {
  pthread_atfork(arena_prepare, arena_parent, arena_child);
}

static chunk *chunk_new(uint32_t block, pid_t me) {
  chunk *c = calloc(1, sizeof *c);
  if (!c) {
    errno = ENOMEM;
    return NULL;
  }
  c->base = mproc__shared_map(CHUNK_SIZE);
  if (!c->base) {
    free(c);
    return NULL;
  }
  c->creator = me;
  c->block = block;
  c->nblocks = (uint32_t)(CHUNK_SIZE / block);
  c->next = chunks;
  chunks = c;
  return c;
}

static void *chunk_take(chunk *c) {
  uint32_t i;
  if (c->nfree > 0) {
    i = c->freelist[--c->nfree];
    memset(c->base + (size_t)i * c->block, 0, c->block);
  } else if (c->fresh < c->nblocks) {
    i = c->fresh++; /* still zero from the mapping */
  } else {
    return NULL;
  }
  c->gen[i] = fork_gen;
  c->used++;
  return c->base + (size_t)i * c->block;
}

void *mproc__shared_alloc(size_t size) {
  if (size > BLOCK_MAX) {
    size_t len = mproc__page_round(size);
    if (len == 0) {
      errno = ENOMEM;
      return NULL;
    }
    return mproc__shared_map(len);
  }
  uint32_t block = BLOCK_MIN;
  while (block < size)
    block <<= 1;
  pid_t me = mproc__getpid();
  void *p = NULL;
  pthread_mutex_lock(&arena_mu);
  for (chunk *c = chunks; c && !p; c = c->next)
    if (c->block == block && c->creator == me)
      p = chunk_take(c);
  if (!p) {
    chunk *c = chunk_new(block, me);
    if (c)
      p = chunk_take(c);
  }
  pthread_mutex_unlock(&arena_mu);
  return p;
}

/* Drops c from this process once nothing in it is in use here. An empty chunk is not kept
 * for reuse: its mapping holds a descriptor (so that it can reach a spawned child), and a
 * program that frees all its objects must be left with none (a new chunk costs ~5 us). */
static void chunk_maybe_release(chunk **link) {
  chunk *c = *link;
  if (c->used > 0)
    return;
  *link = c->next;
  mproc__shared_unmap(c->base, CHUNK_SIZE);
  free(c);
}

void mproc__shared_free(void *p, size_t size) {
  if (!p)
    return;
  if (size > BLOCK_MAX) {
    mproc__shared_unmap(p, mproc__page_round(size));
    return;
  }
  pid_t me = mproc__getpid();
  pthread_mutex_lock(&arena_mu);
  chunk **link = &chunks;
  while (*link && !((char *)p >= (*link)->base && (char *)p < (*link)->base + CHUNK_SIZE))
    link = &(*link)->next;
  chunk *c = *link;
  if (c) {
    uint32_t i = (uint32_t)(((char *)p - c->base) / c->block);
    if (c->creator == me && c->gen[i] == fork_gen)
      c->freelist[c->nfree++] = (uint16_t)i;
    else
      c->retired++;
    c->used--;
    chunk_maybe_release(link);
  }
  pthread_mutex_unlock(&arena_mu);
}
