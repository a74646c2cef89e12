/*
 * Linux implementation of os.h's shared mappings: every mapping mproc makes is a memfd
 * (shmem, the same pages and faults as MAP_ANONYMOUS|MAP_SHARED), and this file keeps the
 * descriptor of each one, so that a mapping made after a child was forked, or a child that
 * did not come from fork at all (spawn, forkserver), can still get it: the descriptor
 * crosses over a Unix socket and the child maps it at the same address. mproc's objects
 * point into their own mappings, so the same address is what keeps them valid.
 *
 * The registry is process-private: a forked child inherits a copy along with the
 * descriptors, which stay valid there. Uses os_linux.c, never the other way.
 *
 * Where a mapping goes matters for the children that are not forked. Left to the kernel,
 * mappings land just under the mmap base (~127 TiB on x86-64), which ASLR moves by up to
 * 1 TiB per process; a spawned child's own libraries, thread stacks and heap arenas sit
 * there too, and a ring's 32-64 GiB reservation then collides with them often (11 pools in
 * 100 failed with EEXIST before this). So on x86-64 mproc places its mappings itself, in
 * [32 TiB, 80 TiB): above ASan's shadow (which ends at 16 TiB), below a PIE executable and
 * its heap (85-86 TiB) and far below the mmap base, a range nothing in a fresh process
 * uses. Placement is first-fit among the mappings this process knows (made or received),
 * so a child that received its parent's mappings puts its own around them; anything else
 * found there (EEXIST) is stepped over, and a full range falls back to the kernel's choice.
 */
#define _GNU_SOURCE
#include "os/os.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct mapping {
  uintptr_t base;
  size_t len;
  int fd; /* < 0: anonymous, memfd_create having failed with -fd (e.g. -EMFILE) */
} mapping;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static mapping *reg;
static size_t reg_len, reg_cap;

static void reg_prepare(void) { pthread_mutex_lock(&reg_mu); }
static void reg_parent(void) { pthread_mutex_unlock(&reg_mu); }
static void reg_child(void) { pthread_mutex_init(&reg_mu, NULL); }

/* Numbered: it must run before start.c's takeover of a spawned child, which never returns. */
__attribute__((constructor(150))) static void shared_init(void) {
  pthread_atfork(reg_prepare, reg_parent, reg_child);
}

/* Records [p, p+len) backed by fd; false (nothing recorded) when memory runs out. Under
 * reg_mu. */
static bool reg_add_locked(void *p, size_t len, int fd) {
  if (reg_len == reg_cap) {
    size_t cap = reg_cap ? reg_cap * 2 : 64;
    mapping *n = realloc(reg, cap * sizeof *n);
    if (!n)
      return false;
    reg = n;
    reg_cap = cap;
  }
  reg[reg_len++] = (mapping){(uintptr_t)p, len, fd};
  return true;
}

static bool reg_add(void *p, size_t len, int fd) {
  pthread_mutex_lock(&reg_mu);
  bool ok = reg_add_locked(p, len, fd);
  pthread_mutex_unlock(&reg_mu);
  return ok;
}

/* Index of the mapping holding p, or -1. Under reg_mu. */
static ssize_t reg_find(const void *p) {
  uintptr_t a = (uintptr_t)p;
  for (size_t i = 0; i < reg_len; i++)
    if (a >= reg[i].base && a < reg[i].base + reg[i].len)
      return (ssize_t)i;
  return -1;
}

#if defined(__x86_64__)
#define PLACE_LO ((uintptr_t)32 << 40)
#define PLACE_HI ((uintptr_t)80 << 40)
#else /* other layouts (39-bit arm64, 32-bit): the kernel's choice */
#define PLACE_LO ((uintptr_t)0)
#define PLACE_HI ((uintptr_t)0)
#endif
/* 2 MiB: a mapping that may get transparent huge pages starts on a huge-page boundary. */
#define PLACE_ALIGN ((uintptr_t)2 << 20)
#define PLACE_TRIES 16

static uintptr_t place_up(uintptr_t a) { return (a + PLACE_ALIGN - 1) & ~(PLACE_ALIGN - 1); }

/* The lowest aligned address >= from where [a, a+len) overlaps no known mapping, or 0 when
 * none is left below PLACE_HI. Under reg_mu. */
static uintptr_t place_gap(uintptr_t from, size_t len) {
  uintptr_t a = place_up(from);
  for (bool moved = true; moved;) {
    moved = false;
    for (size_t i = 0; i < reg_len; i++) {
      if (a < reg[i].base + reg[i].len && reg[i].base < a + len) {
        a = place_up(reg[i].base + reg[i].len);
        moved = true;
      }
    }
    if (a >= PLACE_HI || PLACE_HI - a < len)
      return 0;
  }
  return a;
}

/* Maps fd (or anonymous memory) in the placement range; NULL when no room was found there
 * (the caller then lets the kernel choose). Under reg_mu, so that two threads do not pick
 * the same gap. */
static void *place_map(size_t len, int flags, int fd) {
  uintptr_t from = PLACE_LO;
  uintptr_t step = len > PLACE_ALIGN ? len : PLACE_ALIGN;
  for (int t = 0; PLACE_HI && t < PLACE_TRIES; t++, step *= 2) {
    uintptr_t a = place_gap(from, len);
    if (!a)
      return NULL;
    void *p = mmap((void *)a, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == (void *)a)
      return p;
    if (p != MAP_FAILED) { /* a kernel older than 4.17 takes the flag as a hint */
      munmap(p, len);
      return NULL;
    }
    if (errno != EEXIST)
      return NULL;
    /* Something not ours is there (Criterion's BoxFort arena, 128 KiB at a random address
     * in this range, is in every test process). Its size is unknown: a step of len clears
     * anything smaller at once, and doubling steps clear anything bigger in a few tries.
     * Stepping 2 MiB at a time, a 32 GiB ring never got past a 128 KiB arena in 16 tries
     * and fell back to the kernel's choice, where a spawned child's own libraries may sit:
     * 13 spawn pools in 100 failed with EEXIST that way. */
    if (UINTPTR_MAX - a < step)
      return NULL;
    from = a + step;
  }
  return NULL;
}

/* A memfd of len bytes, or -1 (errno set). */
static int memfd_of(size_t len) {
  int fd = mproc__inject(MPROC__INJ_MEMFD, EMFILE) ? -1 : memfd_create("mproc", MFD_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = mproc__inject(MPROC__INJ_FTRUNCATE, ENOMEM) ? -ENOMEM : mproc__file_size(fd, len, false);
  if (rc < 0) {
    close(fd);
    errno = -rc;
    return -1;
  }
  return fd;
}

/* Maps len bytes of fd (-1: anonymous memory, recorded with nofd_err: why it has no
 * descriptor) shared, in the placement range where it can, and records it (taking fd over).
 * NULL and errno on failure (fd is then the caller's). */
static void *map_record(size_t len, int flags, int fd, int nofd_err) {
  flags |= MAP_SHARED | (fd < 0 ? MAP_ANONYMOUS : 0);
  if (mproc__inject(MPROC__INJ_MMAP, ENOMEM))
    return NULL;
  pthread_mutex_lock(&reg_mu);
  void *p = place_map(len, flags, fd);
  if (!p)
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
  int e = p == MAP_FAILED ? errno : 0;
  if (p != MAP_FAILED && !reg_add_locked(p, len, fd >= 0 ? fd : -nofd_err)) {
    munmap(p, len);
    p = MAP_FAILED;
    e = ENOMEM;
  }
  pthread_mutex_unlock(&reg_mu);
  if (p == MAP_FAILED) {
    errno = e;
    return NULL;
  }
  return p;
}

/* A shared mapping of len bytes, memfd-backed where a descriptor can be had (anonymous
 * otherwise: still shared with forked children, but it cannot cross to a spawned one). */
static void *map_new(size_t len, int extra_flags) {
  int fd = memfd_of(len);
  int nofd_err = fd < 0 && errno ? errno : EBADF;
  void *p = map_record(len, extra_flags, fd, nofd_err);
  if (!p && fd >= 0) {
    int e = errno;
    close(fd);
    errno = e;
  }
  return p;
}

void *mproc__shared_map(size_t len) { return map_new(len, 0); }

void *mproc__shared_reserve(size_t len) { return map_new(len, MAP_NORESERVE); }

void mproc__shared_unmap(void *p, size_t len) {
  if (!p)
    return;
  munmap(p, len);
  int fd = -1;
  pthread_mutex_lock(&reg_mu);
  ssize_t i = reg_find(p);
  if (i >= 0 && reg[i].base == (uintptr_t)p) {
    fd = reg[i].fd;
    reg[i] = reg[--reg_len];
  }
  pthread_mutex_unlock(&reg_mu);
  if (fd >= 0)
    close(fd);
}

int mproc__shared_lookup(const void *p, void **base, size_t *len) {
  pthread_mutex_lock(&reg_mu);
  ssize_t i = reg_find(p);
  int rc = i < 0 ? -ENOENT : reg[i].fd; /* < 0: why it has no descriptor */
  if (i >= 0) {
    *base = (void *)reg[i].base;
    *len = reg[i].len;
  }
  pthread_mutex_unlock(&reg_mu);
  return rc;
}

void *mproc__shared_map_fd(int fd, size_t len) {
  if (fd < 0 || len == 0) {
    errno = EINVAL;
    return NULL;
  }
  return map_record(len, 0, fd, EBADF);
}

int mproc__shared_map_at(void *base, size_t len, int fd) {
  if (mproc__inject(MPROC__INJ_MMAP, ENOMEM))
    return -ENOMEM;
  void *p = mmap(base, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
  if (p == MAP_FAILED)
    return -errno;
  if (p != base) { /* a kernel older than 4.17 takes the flag as a hint */
    munmap(p, len);
    return -EEXIST;
  }
  if (!reg_add(p, len, fd)) {
    munmap(p, len);
    return -ENOMEM;
  }
  return 0;
}

bool mproc__readable(const void *p, size_t len) {
  /* process_vm_readv on ourselves reports EFAULT for an unmapped address instead of
   * faulting, which is what a check of a pointer the user handed in needs. */
  char buf[64];
  if (len > sizeof buf)
    len = sizeof buf;
  struct iovec local = {buf, len}, remote = {(void *)p, len};
  return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)len;
}
