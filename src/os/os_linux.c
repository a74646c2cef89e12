/* Linux implementation of src/os.h. */
#define _GNU_SOURCE
#include "os/os.h"
#include "mproc.h"
#include "testing.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- clocks and deadlines ---- */

int64_t mproc__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mproc__deadline(double timeout) {
  return mproc__deadline_from(timeout > 0 && timeout <= 9.0e9 ? mproc__now_ns() : 0, timeout);
}

int64_t mproc__deadline_from(int64_t now, double timeout) {
  if (timeout < 0 || timeout != timeout)
    return MPROC__NEVER;
  if (timeout == 0)
    return 0;
  /* Beyond ~292 years the sum overflows: treat it as forever. */
  if (timeout > 9.0e9)
    return MPROC__NEVER;
  return now + (int64_t)(timeout * 1e9);
}

int64_t mproc__remaining_ns(int64_t deadline) {
  if (deadline == MPROC__NEVER)
    return INT64_MAX;
  int64_t left = deadline - mproc__now_ns();
  return left > 0 ? left : 0;
}

int mproc__poll_ms(int64_t deadline) {
  if (deadline == MPROC__NEVER)
    return -1;
  int64_t left = mproc__remaining_ns(deadline);
  int64_t ms = (left + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

static struct timespec to_timespec(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  return ts;
}

/* ---- futexes ---- */

int mproc__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline) {
  struct timespec ts, *tsp = NULL;
  if (deadline != MPROC__NEVER) {
    if (deadline <= mproc__now_ns())
      return -ETIMEDOUT;
    ts = to_timespec(deadline);
    tsp = &ts;
  }
  /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a wait cut short by a
   * signal resumes without stretching. */
  long rc = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, expected, tsp, NULL,
                    FUTEX_BITSET_MATCH_ANY);
  if (rc == 0)
    return 0;
  switch (errno) {
  case EAGAIN:
    return 0;
  case ETIMEDOUT:
    return -ETIMEDOUT;
  case EINTR:
    return -EINTR;
  default:
    return -errno;
  }
}

int mproc__futex_wake(_Atomic uint32_t *addr, int n) {
  long rc = syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
  return rc < 0 ? -errno : (int)rc;
}

void mproc__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

void mproc__yield(void) { sched_yield(); }

/* ---- thread and process ids, cached and reset in a forked child ---- */

static __thread pid_t cached_tid;
static atomic_uint fork_generation;
static __thread unsigned cached_generation;
static _Atomic pid_t cached_pid;

/* In the child only the forking thread exists: nothing races with these. */
static void atfork_child(void) {
  atomic_fetch_add(&fork_generation, 1);
  atomic_store(&cached_pid, 0);
}

/* Numbered: it must run before start.c's takeover of a spawned child, which never returns. */
__attribute__((constructor(150))) static void os_init(void) {
  pthread_atfork(NULL, NULL, atfork_child);
}

pid_t mproc__gettid(void) {
  unsigned gen = atomic_load_explicit(&fork_generation, memory_order_relaxed);
  if (cached_tid == 0 || cached_generation != gen) {
    cached_tid = (pid_t)syscall(SYS_gettid);
    cached_generation = gen;
  }
  return cached_tid;
}

pid_t mproc__getpid(void) {
  pid_t pid = atomic_load_explicit(&cached_pid, memory_order_relaxed);
  if (pid == 0) {
    pid = getpid();
    atomic_store_explicit(&cached_pid, pid, memory_order_relaxed);
  }
  return pid;
}

/* ---- robust mutex ---- */

int mproc__mutex_init(mproc__mutex *m, bool recursive) {
  pthread_mutexattr_t a;
  int rc = pthread_mutexattr_init(&a);
  if (rc)
    return -rc;
  if ((rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0 &&
      (rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0 &&
      (rc = pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE
                                                    : PTHREAD_MUTEX_NORMAL)) == 0)
    rc = pthread_mutex_init(&m->m, &a);
  pthread_mutexattr_destroy(&a);
  return -rc;
}

/* A pthread lock attempt's answer in mproc's terms; busy is what EBUSY/ETIMEDOUT become. */
static int lock_result(mproc__mutex *m, int rc, int busy) {
  switch (rc) {
  case 0:
    return 0;
  case EOWNERDEAD:
    /* The holder died: we hold it now. Mark it usable again and tell the caller, who knows
     * whether the protected state needs repair. */
    pthread_mutex_consistent(&m->m);
    return MPROC_EOWNERDEAD;
  case EBUSY:
  case ETIMEDOUT:
    return busy;
  case EAGAIN: /* recursion count overflow */
  case ENOTRECOVERABLE:
    return MPROC_ESTATE;
  default:
    return -rc;
  }
}

int mproc__mutex_lock(mproc__mutex *m, int64_t deadline) {
  int rc;
  if (deadline == MPROC__NEVER) {
    rc = pthread_mutex_lock(&m->m);
  } else {
    rc = pthread_mutex_trylock(&m->m);
    if (rc == EBUSY && deadline > 0 && deadline > mproc__now_ns()) {
      struct timespec ts = to_timespec(deadline);
      rc = pthread_mutex_clocklock(&m->m, CLOCK_MONOTONIC, &ts);
    }
  }
  return lock_result(m, rc, -ETIMEDOUT);
}

int mproc__mutex_unlock(mproc__mutex *m) {
  int rc = pthread_mutex_unlock(&m->m);
  if (rc == EPERM)
    return MPROC_ESTATE;
  return -rc;
}

bool mproc__mutex_held(mproc__mutex *m) {
  /* glibc keeps the owner's tid in the lock word of a robust mutex (with waiter and
   * owner-died bits above FUTEX_TID_MASK). */
  unsigned word = (unsigned)__atomic_load_n(&m->m.__data.__lock, __ATOMIC_ACQUIRE);
  return (pid_t)(word & FUTEX_TID_MASK) == mproc__gettid();
}

int mproc__mutex_trylock(mproc__mutex *m) {
  return lock_result(m, pthread_mutex_trylock(&m->m), -EBUSY);
}

bool mproc__mutex_locked(mproc__mutex *m) {
  /* The tid bits: 0 when free, and also after the kernel's robust-list walk at a holder's
   * death (it keeps only FUTEX_OWNER_DIED and FUTEX_WAITERS). */
  unsigned word = (unsigned)__atomic_load_n(&m->m.__data.__lock, __ATOMIC_ACQUIRE);
  return (word & FUTEX_TID_MASK) != 0;
}

int mproc__random_bytes(void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = getrandom((char *)buf + done, len - done, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    done += (size_t)n;
  }
  return 0;
}

/* ---- memory ---- */

size_t mproc__page_size(void) {
  static size_t page;
  if (!page)
    page = (size_t)sysconf(_SC_PAGESIZE);
  return page;
}

size_t mproc__page_round(size_t len) {
  size_t pg = mproc__page_size();
  if (len > SIZE_MAX - pg)
    return 0;
  return (len + pg - 1) & ~(pg - 1);
}

int mproc__shared_commit(void *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  for (;;) {
    if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
      return 0;
    /* EINTR, or EAGAIN for a transient fault: retry. EINVAL: an older kernel without it, where
     * pages are committed at first touch instead. */
    if (errno == EINTR || errno == EAGAIN)
      continue;
    if (errno == EINVAL)
      return 0;
    return errno == EFAULT || errno == EHWPOISON ? -ENOMEM : -errno;
  }
#else
  (void)p;
  (void)len;
  return 0;
#endif
}

void mproc__prefault_write(void *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  enum { PIECE = 1024 }; /* pages looked at per mincore call */
  size_t pg = mproc__page_size();
  uintptr_t lo = ((uintptr_t)p + pg - 1) & ~(uintptr_t)(pg - 1);
  uintptr_t hi = ((uintptr_t)p + len) & ~(uintptr_t)(pg - 1);
  unsigned char vec[PIECE];
  for (uintptr_t at = lo; at < hi; at += PIECE * pg) {
    size_t n = (hi - at) / pg < PIECE ? (hi - at) / pg : PIECE;
    if (mincore((void *)at, n * pg, vec) != 0)
      return;
    size_t i = 0;
    while (i < n && (vec[i] & 1))
      i++;
    if (i < n)
      (void)madvise((void *)(at + i * pg), (n - i) * pg, MADV_POPULATE_WRITE);
  }
#else
  (void)p;
  (void)len;
#endif
}

int mproc__shared_discard(void *p, size_t len) {
  if (len == 0)
    return 0;
  while (madvise(p, len, MADV_REMOVE) != 0) {
    if (errno != EINTR && errno != EAGAIN)
      return -errno;
  }
  return 0;
}

size_t mproc__phys_mem(void) {
  long pages = sysconf(_SC_PHYS_PAGES);
  size_t pg = mproc__page_size();
  if (pages <= 0)
    return pg;
  if ((size_t)pages > SIZE_MAX / pg)
    return SIZE_MAX;
  return (size_t)pages * pg;
}

/* Maps len bytes of fd shared and read-write; the descriptor is not kept by the mapping. */
static int map_fd(int fd, size_t len, void **p) {
  if (mproc__inject(MPROC__INJ_MMAP, ENOMEM))
    return -ENOMEM;
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED)
    return -errno;
  *p = m;
  return 0;
}

int mproc__named_create(const char *name, size_t len, void **p) {
  if (len > (size_t)INT64_MAX)
    return -EFBIG;
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  int rc = mproc__inject(MPROC__INJ_FTRUNCATE, ENOSPC) ? -ENOSPC : mproc__file_size(fd, len, true);
  if (rc == 0)
    rc = map_fd(fd, len, p);
  close(fd);
  if (rc)
    shm_unlink(name); /* ours, made by this failed call */
  return rc;
}

int mproc__named_attach(const char *name, void **p, size_t *len) {
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) < 0)
    rc = -errno;
  else if (st.st_size <= 0)
    rc = -EINVAL;
  else
    rc = map_fd(fd, (size_t)st.st_size, p);
  close(fd);
  if (rc == 0)
    *len = (size_t)st.st_size;
  return rc;
}

int mproc__named_unlink(const char *name) { return shm_unlink(name) < 0 ? -errno : 0; }

/* ---- descriptors ---- */

ssize_t mproc__read_full(int fd, void *buf, size_t len) {
  size_t got = 0;
  int rc = mproc__read_until(fd, buf, len, &got, MPROC__NEVER);
  return rc < 0 && rc != MPROC_EOF ? rc : (ssize_t)got;
}

int mproc__read_until(int fd, void *buf, size_t len, size_t *got, int64_t deadline) {
  while (*got < len) {
    struct iovec v = {.iov_base = (char *)buf + *got, .iov_len = len - *got};
    ssize_t n = mproc__readv_some(fd, &v, 1, deadline);
    if (n < 0)
      return (int)n;
    *got += (size_t)n;
  }
  return 0;
}

ssize_t mproc__readv_some(int fd, struct iovec *iov, int iovcnt, int64_t deadline) {
  for (;;) {
    /* With a deadline, poll first so that a read never blocks past it (the descriptor
     * stays blocking: it may be shared with other processes). */
    if (deadline != MPROC__NEVER) {
      int rc = mproc__poll_fd(fd, POLLIN, deadline, NULL);
      if (rc < 0)
        return rc;
      if (rc == 0)
        return -ETIMEDOUT;
    }
    ssize_t n = iovcnt == 1 ? read(fd, iov->iov_base, iov->iov_len) : readv(fd, iov, iovcnt);
    if (n > 0)
      return n;
    if (n == 0)
      return MPROC_EOF;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    /* A non-blocking descriptor: wait here (with a deadline, the loop polls at its top). */
    if (deadline == MPROC__NEVER) {
      int rc = mproc__poll_fd(fd, POLLIN, MPROC__NEVER, NULL);
      if (rc < 0)
        return rc;
    }
  }
}

int mproc__write_full(int fd, const void *buf, size_t len) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return mproc__writev_full(fd, &iov, 1);
}

static int writev_loop(int fd, struct iovec *iov, int iovcnt) {
  while (iovcnt > 0) {
    if (iov->iov_len == 0) {
      iov++, iovcnt--;
      continue;
    }
    ssize_t n = writev(fd, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
          return -errno;
        continue;
      }
      return -errno;
    }
    /* Partial write: skip what went out and go on with the rest. */
    size_t left = (size_t)n;
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++, iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (char *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

/* Blocks sig in this thread for a call that may raise it; *old is the mask to restore. */
static void quiet_begin(int sig, sigset_t *set, sigset_t *old) {
  sigemptyset(set);
  sigaddset(set, sig);
  pthread_sigmask(SIG_BLOCK, set, old);
}

/* Consumes the sig the call raised (raised: it failed the way that raises it), then
 * restores the mask. If the thread already blocked sig, a pending one may be the program's
 * own: it is left alone. */
static void quiet_end(const sigset_t *set, const sigset_t *old, int sig, bool raised) {
  if (raised && !sigismember(old, sig)) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(set, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* A write to a pipe whose reader is gone raises SIGPIPE in the writing thread, and a
 * library must not change the program's disposition for it (many keep the default to die
 * quietly in a shell pipeline). So SIGPIPE is blocked in this thread around the write, and
 * the one the write raised is consumed before the mask is restored. Two extra syscalls per
 * write (~0.2 us). */
int mproc__writev_full(int fd, struct iovec *iov, int iovcnt) {
  sigset_t set, old;
  quiet_begin(SIGPIPE, &set, &old);
  int rc = writev_loop(fd, iov, iovcnt);
  quiet_end(&set, &old, SIGPIPE, rc == -EPIPE);
  return rc;
}

/* Growing a file (a memfd or /dev/shm's tmpfs too) past RLIMIT_FSIZE raises SIGXFSZ, whose
 * default kills the process: a program with a file-size limit would die making a queue.
 * Blocked around the calls and consumed as SIGPIPE is for writes; the caller sees -EFBIG. */
int mproc__file_size(int fd, size_t len, bool allocate) {
  if (len > (size_t)INT64_MAX)
    return -EFBIG;
  sigset_t set, old;
  quiet_begin(SIGXFSZ, &set, &old);
  int rc = 0;
  while (rc == 0 && ftruncate(fd, (off_t)len) < 0)
    if (errno != EINTR)
      rc = -errno;
  /* ftruncate leaves a tmpfs file sparse: with /dev/shm full, the first write to a page would
   * be SIGBUS in whichever process touched it. Allocating the blocks makes that -ENOSPC here
   * (a file system without fallocate keeps the sparse file, as Python's has). */
  while (allocate && rc == 0 && fallocate(fd, 0, 0, (off_t)len) < 0 && errno != EOPNOTSUPP)
    if (errno != EINTR)
      rc = -errno;
  quiet_end(&set, &old, SIGXFSZ, rc == -EFBIG);
  return rc;
}

int mproc__poll(struct pollfd *fds, size_t n, int64_t deadline) {
  int rc = poll(fds, (nfds_t)n, mproc__poll_ms(deadline));
  return rc < 0 ? -errno : rc;
}

int mproc__poll_fd(int fd, short events, int64_t deadline, short *revents) {
  struct pollfd p = {.fd = fd, .events = events};
  for (;;) {
    int rc = mproc__poll(&p, 1, deadline);
    if (rc > 0) {
      if (revents)
        *revents = p.revents;
      return 1;
    }
    /* poll rounds to ms; make sure the deadline really passed. */
    if ((rc == 0 && mproc__remaining_ns(deadline) == 0) || (rc < 0 && rc != -EINTR))
      return rc;
  }
}

int mproc__pipe(int fds[2], bool nonblock) {
  if (mproc__inject(MPROC__INJ_FD, EMFILE))
    return -EMFILE;
  return pipe2(fds, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0)) < 0 ? -errno : 0;
}

void mproc__pipe_grow(int fd, int size) {
  int now = fcntl(fd, F_GETPIPE_SZ);
  if (now >= 0 && now < size)
    (void)fcntl(fd, F_SETPIPE_SZ, size);
}

void mproc__close(int fd) {
  if (fd >= 0)
    close(fd);
}

int mproc__dup2(int from, int to) {
  int rc;
  do
    rc = dup2(from, to);
  while (rc < 0 && (errno == EINTR || errno == EBUSY));
  return rc < 0 ? -errno : 0;
}

int mproc__dup_cloexec(int fd) {
  int rc = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* fcntl's F_DUPFD never fails with EINTR */
  return rc < 0 ? -errno : rc;
}

bool mproc__fd_is_open(int fd) { return fcntl(fd, F_GETFD) >= 0 || errno != EBADF; }

int mproc__stdio_to_null(void) {
  int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++)
    rc = fd == i ? 0 : mproc__dup2(fd, i);
  if (fd > 2)
    close(fd);
  else
    fcntl(fd, F_SETFD, 0); /* it is one of the three now: keep it across exec */
  return rc;
}

int mproc__count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -errno;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

/* ---- processes ---- */

pid_t mproc__fork(void) {
  fflush(stdout);
  fflush(stderr);
  return mproc__inject(MPROC__INJ_FORK, EAGAIN) ? -1 : fork();
}

pid_t mproc__fork_lean(void) {
  if (mproc__inject(MPROC__INJ_FORK, EAGAIN))
    return -1;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  pid_t pid = _Fork(); /* glibc's fork without the atfork handlers */
  if (pid == 0)
    atfork_child();
  return pid;
#else
  return fork();
#endif
}

int mproc__pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  long fd = mproc__inject(MPROC__INJ_PIDFD, EMFILE) ? -1 : syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0)
    return -errno;
  /* pidfds are always close-on-exec. */
  return (int)fd;
#else
  (void)pid;
  return -ENOSYS;
#endif
}

int mproc__pidfd_getfd(int pidfd, int fd) {
#ifdef SYS_pidfd_getfd
  long got = syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  /* The kernel makes the copy close-on-exec. */
  return got < 0 ? -errno : (int)got;
#else
  (void)pidfd, (void)fd;
  return -ENOSYS;
#endif
}

int mproc__die_with_parent(pid_t expected_parent, int sig) {
  if (prctl(PR_SET_PDEATHSIG, sig) < 0)
    return -errno;
  /* The parent may have died before prctl took effect: then we were reparented already. */
  if (getppid() != expected_parent)
    return -ESRCH;
  return 0;
}

pid_t mproc__waitpid(pid_t pid, int *status, int flags) {
  for (;;) {
    pid_t r = waitpid(pid, status, flags);
    if (r >= 0)
      return r;
    if (errno != EINTR)
      return -errno;
  }
}

int mproc__exitcode(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return -WTERMSIG(status);
  return 0;
}


/* ---- wake-up descriptors ---- */

int mproc__eventfd(void) {
  int fd = mproc__inject(MPROC__INJ_FD, EMFILE) ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int mproc__eventfd_signal(int fd) {
  uint64_t one = 1;
  for (;;) {
    if (write(fd, &one, sizeof one) == (ssize_t)sizeof one)
      return 0;
    if (errno == EINTR)
      continue;
    /* EAGAIN: the counter is at its maximum, so a reader will wake anyway. */
    return errno == EAGAIN ? 0 : -errno;
  }
}

void mproc__eventfd_drain(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) < 0 && errno == EINTR)
    ;
}

int mproc__signalfd(const void *mask) {
  int fd = mproc__inject(MPROC__INJ_FD, EMFILE) ? -1
                                                 : signalfd(-1, (const sigset_t *)mask, SFD_NONBLOCK | SFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int mproc__signalfd_read(int fd) {
  struct signalfd_siginfo si;
  for (;;) {
    ssize_t n = read(fd, &si, sizeof si);
    if (n == (ssize_t)sizeof si)
      return (int)si.ssi_signo;
    if (n < 0 && errno == EINTR)
      continue;
    return (n < 0 && errno != EAGAIN) ? -errno : 0;
  }
}

/* ---- shared mappings ---- */

int mproc__shared_mapping_find(pid_t pid, const void *addr, size_t len, mproc__mapping_id *id) {
  char path[64];
  if (pid)
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  else
    snprintf(path, sizeof path, "/proc/self/maps");
  FILE *f = fopen(path, "re");
  if (!f)
    return -errno;
  uintptr_t a = (uintptr_t)addr, b = a + len;
  char line[512];
  int rc = -ENOENT;
  while (fgets(line, sizeof line, f)) {
    unsigned long start, end, off, ino;
    unsigned maj, min;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &off, &maj, &min,
               &ino) != 7)
      continue;
    if (a < start || a >= end)
      continue;
    /* Only a shared mapping, holding the whole range, is the same memory in another
     * process. */
    if (perms[3] == 's' && b <= end && b >= a) {
      *id = (mproc__mapping_id){start, end, ((uint64_t)maj << 32) | min, ino, off};
      rc = 0;
    }
    break;
  }
  fclose(f);
  return rc;
}

/* ---- CPUs ---- */

/* The cgroup v2 quota (cpu.max "quota period") of this process's cgroup and its ancestors,
 * as a whole number of CPUs rounded up; 0 when there is none. */
static int cgroup_cpu_limit(void) {
  char line[4096];
  FILE *f = fopen("/proc/self/cgroup", "re");
  if (!f)
    return 0;
  char path[4096] = "";
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "0::", 3) == 0) {
      snprintf(path, sizeof path, "%s", line + 3);
      path[strcspn(path, "\n")] = 0;
      break;
    }
  }
  fclose(f);
  if (!path[0])
    return 0;
  int best = 0;
  for (;;) {
    char file[4200];
    snprintf(file, sizeof file, "/sys/fs/cgroup%s/cpu.max", strcmp(path, "/") ? path : "");
    FILE *c = fopen(file, "re");
    if (c) {
      char quota[64];
      long long period = 0;
      if (fscanf(c, "%63s %lld", quota, &period) == 2 && strcmp(quota, "max") != 0 &&
          period > 0) {
        long long q = atoll(quota);
        int cpus = (int)((q + period - 1) / period);
        if (cpus < 1)
          cpus = 1;
        if (best == 0 || cpus < best)
          best = cpus;
      }
      fclose(c);
    }
    char *slash = strrchr(path, '/');
    if (!slash || slash == path)
      break;
    *slash = 0;
  }
  return best;
}

int mproc__cpu_count(void) {
  int n = 0;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    n = CPU_COUNT(&set);
  if (n <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (int)c : 1;
  }
  /* Reading the cgroup files costs ~35 us (two opens, a walk up the tree), a tenth of a
   * pool's start: a quota changes rarely, so one reading serves for a second. */
  static _Atomic int64_t read_at; /* 0: never */
  static _Atomic int cached;
  int64_t now = mproc__now_ns(), at = atomic_load_explicit(&read_at, memory_order_acquire);
  int quota;
  if (at != 0 && now - at < 1000000000) {
    quota = atomic_load_explicit(&cached, memory_order_relaxed);
  } else {
    quota = cgroup_cpu_limit();
    atomic_store_explicit(&cached, quota, memory_order_relaxed);
    atomic_store_explicit(&read_at, now, memory_order_release);
  }
  if (quota > 0 && quota < n)
    n = quota;
  return n;
}
