/*
 * The shm layer: named POSIX shared memory segments (SharedMemory) and shared arrays
 * (Value/Array/RawArray).
 *
 * A segment handle is private to the process (malloc'd); its mapping is MAP_SHARED, so a
 * child forked after create/attach uses the same handle. No descriptor is kept after the
 * mmap, and nothing is ever unlinked except by mproc_shm_unlink (or by a create that fails
 * after making its name).
 *
 * The shared arena (shm.h) holds every mproc object; an array is one block of it: header,
 * optional lock and data. The handle is the block's address, valid in every child forked
 * after it was made.
 */
#define _GNU_SOURCE
#include "core/arena.h"
#include "core/internal.h"
#include "core/sync.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHM_NAME_MAX 200

struct mproc_shm {
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
  int n = snprintf(out, SHM_NAME_MAX + 2, "/mproc-%d-", (int)getpid());
  for (size_t i = 0; i < sizeof rnd; i++)
    n += snprintf(out + n, (size_t)(SHM_NAME_MAX + 2 - n), "%02x", rnd[i]);
  return 0;
}

static int ftruncate_retry(int fd, off_t size) {
  while (ftruncate(fd, size) < 0)
    if (errno != EINTR)
      return -errno;
  return 0;
}

/* Maps size bytes of fd shared and read-write; the descriptor is not kept. */
static int shm_map(mproc_shm *s, int fd, size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return -errno;
  s->buf = p;
  s->size = size;
  return 0;
}

/* Creates s->name exclusively; -EEXIST leaves an existing segment untouched. */
static int shm_create_named(mproc_shm *s, size_t size) {
  int fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  int rc = ftruncate_retry(fd, (off_t)size);
  if (rc == 0)
    rc = shm_map(s, fd, size);
  mproc__close(fd);
  if (rc)
    shm_unlink(s->name); /* ours, made by this failed call: a failed call changes nothing */
  return rc;
}

int mproc_shm_create(mproc_shm **out, const char *name, size_t size) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  if (size == 0)
    return MPROC_EINVAL;
  if ((uint64_t)size > (uint64_t)INT64_MAX)
    return MPROC_ETOOBIG;
  mproc_shm *s = calloc(1, sizeof *s);
  if (!s)
    return MPROC_ENOMEM;
  int rc;
  if (name) {
    rc = shm_name_set(s->name, name);
    if (rc == 0)
      rc = shm_create_named(s, size);
  } else {
    /* A clash of 128 random bits means something else is wrong; retry a few times. */
    rc = -EEXIST;
    for (int tries = 0; tries < 8 && rc == -EEXIST; tries++) {
      rc = shm_name_generate(s->name);
      if (rc == 0)
        rc = shm_create_named(s, size);
    }
  }
  if (rc) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int mproc_shm_attach(mproc_shm **out, const char *name) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  mproc_shm *s = calloc(1, sizeof *s);
  if (!s)
    return MPROC_ENOMEM;
  int rc = shm_name_set(s->name, name);
  if (rc == 0) {
    int fd = shm_open(s->name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
      rc = -errno;
    } else {
      struct stat st;
      if (fstat(fd, &st) < 0)
        rc = -errno;
      else if (st.st_size <= 0)
        rc = MPROC_EINVAL; /* an empty segment cannot be mapped (Python: ValueError) */
      else
        rc = shm_map(s, fd, (size_t)st.st_size);
      mproc__close(fd);
    }
  }
  if (rc) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void *mproc_shm_buf(const mproc_shm *s) { return s ? s->buf : NULL; }

size_t mproc_shm_size(const mproc_shm *s) { return s ? s->size : 0; }

const char *mproc_shm_name(const mproc_shm *s) { return s ? s->name + 1 : NULL; }

int mproc_shm_unlink(mproc_shm *s) {
  if (!s)
    return MPROC_EINVAL;
  return shm_unlink(s->name) < 0 ? -errno : 0;
}

void mproc_shm_free(mproc_shm *s) {
  if (!s)
    return;
  munmap(s->buf, s->size);
  free(s);
}

/* ---- the shared arena ---- */

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

__attribute__((constructor)) static void arena_init(void) {
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

/* Drops c from this process once nothing in it is in use here and it has dead weight
 * (retired blocks) or is not ours to hand out; an empty chunk of our own stays for reuse. */
static void chunk_maybe_release(chunk **link, pid_t me) {
  chunk *c = *link;
  if (c->used > 0 || (c->retired == 0 && c->creator == me))
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
    chunk_maybe_release(link, me);
  }
  pthread_mutex_unlock(&arena_mu);
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
