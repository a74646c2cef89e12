/* The OS layer: deadlines, futexes, robust mutexes, full reads and writes. */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"
#include "testing.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

Test(os, deadlines) {
  cr_assert_eq(mproc__deadline(-1), MPROC__NEVER);
  cr_assert_eq(mproc__deadline(0), 0);
  int64_t now = mproc__now_ns();
  int64_t d = mproc__deadline(1.5);
  cr_assert_geq(d - now, 1500000000LL);
  cr_assert_eq(mproc__remaining_ns(0), 0);
  cr_assert_eq(mproc__poll_ms(MPROC__NEVER), -1);
  cr_assert_eq(mproc__poll_ms(0), 0);
}

Test(os, futex_value_mismatch_and_timeout) {
  _Atomic uint32_t w = 5;
  cr_assert_eq(mproc__futex_wait(&w, 4, MPROC__NEVER), 0); /* differs: returns at once */
  cr_assert_eq(mproc__futex_wait(&w, 5, 0), -ETIMEDOUT);
  cr_assert_eq(mproc__futex_wait(&w, 5, mproc__deadline(0.01)), -ETIMEDOUT);
  cr_assert_eq(mproc__futex_wake(&w, 1), 0);
}

Test(os, futex_wakes_other_process) {
  th_scope sc = th_begin();
  _Atomic uint32_t *w = mproc__shared_map(4096);
  cr_assert_not_null(w);
  pid_t pid = fork();
  if (pid == 0) {
    while (atomic_load(w) == 0)
      mproc__futex_wait(w, 0, MPROC__NEVER);
    _exit(atomic_load(w) == 7 ? 0 : 1);
  }
  atomic_store(w, 7);
  mproc__futex_wake(w, INT32_MAX);
  int st;
  cr_assert_eq(mproc__waitpid(pid, &st, 0), pid);
  cr_assert_eq(mproc__exitcode(st), 0);
  mproc__shared_unmap((void *)w, 4096);
  th_end(sc);
}

Test(os, robust_mutex_owner_death) {
  th_scope sc = th_begin();
  mproc__mutex *m = mproc__shared_map(4096);
  cr_assert_eq(mproc__mutex_init(m, false), 0);
  pid_t pid = fork();
  if (pid == 0) {
    mproc__mutex_lock(m, MPROC__NEVER);
    raise(SIGKILL);
  }
  int st;
  mproc__waitpid(pid, &st, 0);
  cr_assert_eq(mproc__exitcode(st), -SIGKILL);
  cr_assert_eq(mproc__mutex_lock(m, MPROC__NEVER), MPROC_EOWNERDEAD);
  cr_assert(mproc__mutex_held(m));
  cr_assert_eq(mproc__mutex_unlock(m), 0);
  cr_assert_eq(mproc__mutex_lock(m, 0), 0);
  cr_assert_eq(mproc__mutex_lock(m, 0), -ETIMEDOUT); /* plain: held by us, no recursion */
  cr_assert_eq(mproc__mutex_unlock(m), 0);
  cr_assert_eq(mproc__mutex_unlock(m), MPROC_ESTATE);
  cr_assert(!mproc__mutex_held(m));
  mproc__shared_unmap(m, 4096);
  th_end(sc);
}

Test(os, recursive_mutex) {
  mproc__mutex *m = mproc__shared_map(4096);
  cr_assert_eq(mproc__mutex_init(m, true), 0);
  cr_assert_eq(mproc__mutex_lock(m, 0), 0);
  cr_assert_eq(mproc__mutex_lock(m, 0), 0);
  cr_assert_eq(mproc__mutex_unlock(m), 0);
  cr_assert(mproc__mutex_held(m));
  cr_assert_eq(mproc__mutex_unlock(m), 0);
  cr_assert_eq(mproc__mutex_unlock(m), MPROC_ESTATE);
  mproc__shared_unmap(m, 4096);
}

Test(os, full_read_write_through_pipe) {
  th_scope sc = th_begin();
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
  size_t len = 1 << 20;
  char *src = malloc(len), *dst = malloc(len);
  for (size_t i = 0; i < len; i++)
    src[i] = (char)(i * 31 + 7);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    _exit(mproc__write_full(fds[1], src, len) == 0 ? 0 : 1);
  }
  close(fds[1]);
  cr_assert_eq(mproc__read_full(fds[0], dst, len), (ssize_t)len);
  cr_assert_eq(mproc__read_full(fds[0], dst, 1), 0); /* EOF */
  cr_assert_eq(memcmp(src, dst, len), 0);
  int st;
  mproc__waitpid(pid, &st, 0);
  cr_assert_eq(mproc__exitcode(st), 0);
  close(fds[0]);
  free(src);
  free(dst);
  th_end(sc);
}

/* SIGPIPE at its default would kill us: the write must return -EPIPE, raise nothing
 * that stays pending, and leave the disposition and the mask as they were. */
Test(os, write_to_closed_pipe_is_epipe_and_leaves_sigpipe_alone) {
  struct sigaction dfl = {.sa_handler = SIG_DFL}, now;
  cr_assert_eq(sigaction(SIGPIPE, &dfl, NULL), 0);
  sigset_t before, after, pending;
  pthread_sigmask(SIG_SETMASK, NULL, &before);
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
  close(fds[0]);
  cr_assert_eq(mproc__write_full(fds[1], "x", 1), -EPIPE);
  struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
  cr_assert_eq(mproc__writev_full(fds[1], iov, 2), -EPIPE);
  close(fds[1]);
  cr_assert_eq(sigaction(SIGPIPE, NULL, &now), 0);
  cr_expect(now.sa_handler == SIG_DFL, "the disposition was changed");
  pthread_sigmask(SIG_SETMASK, NULL, &after);
  cr_expect_eq(sigismember(&after, SIGPIPE), sigismember(&before, SIGPIPE));
  sigpending(&pending);
  cr_expect(!sigismember(&pending, SIGPIPE), "a SIGPIPE was left pending");
}

/* A thread that blocks SIGPIPE itself keeps its own pending one. */
Test(os, a_blocked_sigpipe_stays_the_programs) {
  sigset_t pipe_set, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
  raise(SIGPIPE);
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
  close(fds[0]);
  cr_assert_eq(mproc__write_full(fds[1], "x", 1), -EPIPE);
  close(fds[1]);
  sigpending(&pending);
  cr_expect(sigismember(&pending, SIGPIPE), "the program's pending SIGPIPE was eaten");
  struct timespec zero = {0, 0};
  cr_expect_eq(sigtimedwait(&pipe_set, NULL, &zero), SIGPIPE);
  pthread_sigmask(SIG_UNBLOCK, &pipe_set, NULL);
}

Test(os, die_with_parent_detects_gone_parent) {
  cr_assert_eq(mproc__die_with_parent(getppid(), 0), 0);
  cr_assert_eq(mproc__die_with_parent(getppid() + 100000, 0), -ESRCH);
}

Test(os, cpu_count_and_fds) {
  cr_assert_geq(mproc__cpu_count(), 1);
  int n = mproc__count_fds();
  cr_assert_eq(n, th_fd_count());
  int pfd = mproc__pidfd_open(getpid());
  cr_assert_geq(pfd, 0);
  cr_assert_eq(mproc__count_fds(), n + 1);
  mproc__close(pfd);
}

/* Prefaulting maps in the whole pages inside the range and no others, and keeps the bytes:
 * the page written before stays as it was, the fresh ones read as zero. */
Test(os, prefault_write_maps_whole_pages_keeping_bytes) {
  size_t pg = mproc__page_size(), n = 8;
  unsigned char *m = mmap(NULL, n * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                          -1, 0);
  cr_assert_neq(m, MAP_FAILED);
  memset(m + pg, 0xab, pg); /* page 1 present, the rest not yet */
  unsigned char vec[8];
  cr_assert_eq(mincore(m, n * pg, vec), 0);
  cr_assert_eq(vec[2] & 1, 0, "page 2 should not be present yet");
  /* From the middle of page 0 to the middle of page 6: pages 1..5 are whole inside. */
  mproc__prefault_write(m + pg / 2, 6 * pg);
  cr_assert_eq(mincore(m, n * pg, vec), 0);
  for (size_t i = 1; i <= 5; i++)
    cr_expect_eq(vec[i] & 1, 1, "page %zu not present", i);
  cr_expect_eq(vec[0] & 1, 0, "page 0 is only partly inside: left alone");
  cr_expect_eq(vec[7] & 1, 0, "page 7 is outside: left alone");
  for (size_t i = 0; i < pg; i++)
    cr_assert_eq(m[pg + i], 0xab);
  for (size_t i = 2 * pg; i < 6 * pg; i++)
    cr_assert_eq(m[i], 0);
  mproc__prefault_write(NULL, 0); /* nothing to do */
  cr_assert_eq(munmap(m, n * pg), 0);
}
