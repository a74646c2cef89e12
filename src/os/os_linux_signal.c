/* Linux implementation of src/os.h, part two: signals, and the waits that must see them. */
#define _GNU_SOURCE
#include "os/os.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- waiting on descriptors while signals may come ---- */

int mproc__ppoll(struct pollfd *fds, size_t n, int64_t deadline, const sigset_t *mask) {
  int64_t left = mproc__remaining_ns(deadline);
  struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
  int rc = ppoll(fds, (nfds_t)n, deadline == MPROC__NEVER ? NULL : &ts, mask);
  return rc < 0 ? -errno : rc;
}

/* ---- signals ---- */

int mproc__kill(pid_t pid, int sig) { return kill(pid, sig) < 0 ? -errno : 0; }

void mproc__block_async_signals(sigset_t *old) {
  sigset_t all;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  sigdelset(&all, SIGTRAP);
  pthread_sigmask(SIG_BLOCK, &all, old);
}

void mproc__block_signals(const sigset_t *mask, sigset_t *old) {
  pthread_sigmask(SIG_BLOCK, mask, old);
}

void mproc__set_signal_mask(const sigset_t *mask) { pthread_sigmask(SIG_SETMASK, mask, NULL); }

bool mproc__handler_pending(const sigset_t *old) {
  sigset_t pend;
  if (sigpending(&pend) != 0)
    return false;
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sigismember(&pend, sig) == 1 && !sigismember(old, sig) &&
        sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN)
      return true;
  }
  return false;
}

void mproc__signal_set(int sig, bool ignore) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ignore ? SIG_IGN : SIG_DFL;
  sigaction(sig, &sa, NULL);
}
