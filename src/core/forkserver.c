/*
 * The forkserver: a spawned (so single-threaded and clean) copy of the program that forks
 * children on request. One per process that uses it, started at its first use or by
 * mproc_forkserver_start. A forked child of that process does not share its parent's
 * server (two processes on one socket would take each other's replies): it starts its own.
 *
 * A request is one SOCK_SEQPACKET message carrying the child's chan; the server forks, the
 * child runs the boot message that the parent then sends on the chan (start.c), and the
 * server replies with the child's pid and a pidfd. The server keeps its copy of each
 * child's chan and, when it reaps the child, writes the wait status there: that is how the
 * parent, which is not the child's parent, learns the exit code. The server ends when its
 * socket closes or the program dies; children it forked live on as orphans then, except
 * daemons, whose death signal follows the server.
 */
#define _GNU_SOURCE
#include "core/start.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the program's side ---- */

static pthread_mutex_t fs_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t fs_owner;     /* the process whose server this is; 0: none */
static mproc__child fs = {0, -1, -1}; /* the server: a spawned child of fs_owner */
static int fs_req = -1;    /* our end of the request socket */

static void fs_prepare(void) { pthread_mutex_lock(&fs_mu); }
static void fs_parent(void) { pthread_mutex_unlock(&fs_mu); }
/* The parent's server is not ours: forget it (its descriptors are copies, closed here). */
static void fs_child(void) {
  pthread_mutex_init(&fs_mu, NULL);
  mproc__close(fs_req);
  mproc__child_release(&fs);
  fs_req = -1;
  fs_owner = 0;
  fs.pid = 0;
}


__attribute__((constructor(MPROC__CTOR_KINDS))) static void fs_init(void) {
  pthread_atfork(fs_prepare, fs_parent, fs_child);
}

static void forkserver_main(int chan, mproc__rd *r);

/* Under fs_mu. */
static void fs_stop_locked(void) {
  if (fs_owner != mproc__getpid() || fs.pid <= 0)
    return;
  mproc__close(fs_req); /* EOF: the server leaves */
  fs_req = -1;
  mproc__waitpid(fs.pid, NULL, 0);
  mproc__child_release(&fs);
  fs.pid = 0;
  fs_owner = 0;
}

/* Under fs_mu. */
static int fs_start_locked(void) {
  if (fs_owner == mproc__getpid() && fs.pid > 0)
    return 0;
  int sv[2];
  int rc = mproc__socketpair(sv, true);
  if (rc)
    return rc;
  mproc__msg m;
  mproc__msg_init(&m);
  mproc__msg_put_fd(&m, sv[1]);
  mproc__msg_put_u64(&m, (uint64_t)mproc__getpid());
  rc = mproc__boot_start(mproc__spawn_birth, false, forkserver_main, &m, &fs);
  mproc__msg_free(&m);
  mproc__close(sv[1]);
  if (rc) {
    mproc__close(sv[0]);
    return rc;
  }
  fs_req = sv[0];
  fs_owner = mproc__getpid();
  return 0;
}

int mproc_forkserver_start(void) {
  pthread_mutex_lock(&fs_mu);
  int rc = fs_start_locked();
  pthread_mutex_unlock(&fs_mu);
  return rc;
}

void mproc_forkserver_stop(void) {
  pthread_mutex_lock(&fs_mu);
  fs_stop_locked();
  pthread_mutex_unlock(&fs_mu);
}

pid_t mproc__forkserver_pid(void) {
  pthread_mutex_lock(&fs_mu);
  pid_t pid = fs_owner == mproc__getpid() ? fs.pid : 0;
  pthread_mutex_unlock(&fs_mu);
  return pid;
}

typedef struct fs_reply {
  int32_t pid; /* or -errno */
} fs_reply;

/* One request on a running server: 0, -errno from the server, or -EPIPE when it is gone. */
static int fs_request(int child_chan, pid_t *pid, int *pidfd) {
  /* The child's stdin, stdout and stderr are the caller's now (as a forked child's would
   * be), not the server's: they ride along, and a closed one stays closed. */
  char op[2] = {'F', 0};
  int fds[4] = {child_chan};
  size_t nfds = 1;
  for (int i = 0; i < 3; i++)
    if (mproc__fd_is_open(i)) {
      op[1] |= (char)(1 << i);
      fds[nfds++] = i;
    }
  int rc = mproc__send_fds(fs_req, op, sizeof op, fds, nfds);
  if (rc)
    return rc == -ECONNRESET ? -EPIPE : rc;
  fs_reply rep;
  size_t nf = 1;
  ssize_t n = mproc__recv_fds(fs_req, &rep, sizeof rep, fds, &nf);
  if (n <= 0)
    return n == 0 || n == -ECONNRESET ? -EPIPE : (int)n;
  if (n != sizeof rep || rep.pid == 0) {
    if (nf)
      mproc__close(fds[0]);
    return -EPROTO;
  }
  if (rep.pid < 0)
    return rep.pid;
  *pid = rep.pid;
  *pidfd = nf ? fds[0] : -1;
  return 0;
}

/* The birth of a forkserver child. */
static int forkserver_birth(int child_chan, mproc__child *c) {
  pthread_mutex_lock(&fs_mu);
  int rc = fs_start_locked();
  if (rc == 0)
    rc = fs_request(child_chan, &c->pid, &c->pidfd);
  if (rc == -EPIPE) { /* the server died (killed, or Ctrl-C): one fresh one, once */
    fs_stop_locked();
    rc = fs_start_locked();
    if (rc == 0)
      rc = fs_request(child_chan, &c->pid, &c->pidfd);
  }
  pthread_mutex_unlock(&fs_mu);
  return rc;
}

int mproc__child_start(mproc_start_method method, mproc__boot_entry entry, mproc__msg *msg,
                       mproc__child *c) {
  bool served = method == MPROC_START_FORKSERVER;
  return mproc__boot_start(served ? forkserver_birth : mproc__spawn_birth, served, entry, msg, c);
}

/* ---- the server's side ---- */

typedef struct served {
  pid_t pid;
  int chan; /* where its wait status goes */
} served;

typedef struct server {
  int req, sig, caller;
  sigset_t old_mask;
  served *kids;
  size_t nkids, cap;
} server;

/* In the new child: stdio[i] (-1: closed in the caller) becomes descriptor i. */
static int take_stdio(const int stdio[3]) {
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++) {
    if (stdio[i] < 0)
      mproc__close(i);
    else
      rc = mproc__dup2(stdio[i], i);
  }
  for (int i = 0; i < 3; i++)
    mproc__close(stdio[i]);
  return rc;
}

static _Noreturn void serve_child(server *s, int chan, const int stdio[3]) {
  if (take_stdio(stdio) != 0)
    _exit(255); /* the caller sees its chan close: the start fails */
  mproc__close(s->req);
  mproc__close(s->sig);
  mproc__close(s->caller);
  for (size_t i = 0; i < s->nkids; i++)
    mproc__close(s->kids[i].chan);
  mproc__signal_set(SIGINT, false);
  mproc__set_signal_mask(&s->old_mask);
  mproc__boot_run(chan);
}

/* The request's stdio mask and descriptors as stdio[0..2]; false if they do not match. */
static bool request_stdio(const char op[2], const int *fds, size_t nf, int stdio[3]) {
  size_t k = 1;
  for (int i = 0; i < 3; i++)
    stdio[i] = (op[1] >> i) & 1 && k < nf ? fds[k++] : -1;
  return op[0] == 'F' && k == nf && (op[1] & ~7) == 0;
}

static void serve_fork(server *s) {
  char op[2];
  int fds[4], stdio[3];
  size_t nf = 4;
  ssize_t n = mproc__recv_fds(s->req, op, sizeof op, fds, &nf);
  if (n == 0 || (n < 0 && n != -EINTR && n != -EAGAIN))
    _exit(0); /* the program closed its end, or it is gone */
  if (n < 0)
    return;
  fs_reply rep = {-EPROTO};
  int pidfd = -1;
  if (n == sizeof op && nf >= 1 && request_stdio(op, fds, nf, stdio)) {
    if (s->nkids == s->cap) {
      size_t cap = s->cap ? s->cap * 2 : 16;
      served *k = realloc(s->kids, cap * sizeof *k);
      if (k) {
        s->kids = k;
        s->cap = cap;
      }
    }
    pid_t pid = s->nkids < s->cap ? mproc__fork() : -ENOMEM;
    if (pid == 0)
      serve_child(s, fds[0], stdio);
    rep.pid = pid < 0 ? (pid == -ENOMEM ? -ENOMEM : -errno) : pid;
    if (pid > 0) {
      s->kids[s->nkids++] = (served){pid, fds[0]};
      fds[0] = -1;
      pidfd = mproc__pidfd_open(pid);
    }
  }
  for (size_t i = 0; i < nf; i++)
    mproc__close(fds[i]);
  (void)mproc__send_fds(s->req, &rep, sizeof rep, &pidfd, pidfd >= 0 ? 1 : 0);
  mproc__close(pidfd);
}

static void serve_reap(server *s) {
  while (mproc__signalfd_read(s->sig) > 0) {
  }
  int st;
  pid_t pid;
  while ((pid = mproc__waitpid(-1, &st, WNOHANG)) > 0) {
    for (size_t i = 0; i < s->nkids; i++) {
      if (s->kids[i].pid == pid) {
        mproc__boot_exit_status(s->kids[i].chan, st);
        mproc__close(s->kids[i].chan);
        s->kids[i] = s->kids[--s->nkids];
        break;
      }
    }
  }
}

static void forkserver_main(int chan, mproc__rd *r) {
  server s = {.req = mproc__rd_fd(r), .sig = -1, .caller = -1};
  pid_t caller = (pid_t)mproc__rd_u64(r);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  mproc__block_signals(&chld, &s.old_mask);
  int rc = r->bad ? -EPROTO : 0;
  /* Its children get the caller's stdio with each request; the server itself must not
   * keep the caller's pipes open (a reader waiting for EOF would wait for the server). */
  if (rc == 0)
    rc = mproc__stdio_to_null();
  if (rc == 0)
    rc = s.sig = mproc__signalfd(&chld);
  if (rc >= 0) {
    /* Ctrl-C goes to the terminal's whole group: the server is not the user's to stop. */
    mproc__signal_set(SIGINT, true);
    /* A program that ignores SIGCHLD passed that on through exec: the kernel would reap
     * our children itself and their exit codes would be lost. */
    mproc__signal_set(SIGCHLD, false);
    s.caller = mproc__pidfd_open(caller);
    rc = s.caller >= 0 || caller == getppid() ? 0 : -ESRCH;
  }
  mproc__boot_report(chan, rc < 0 ? rc : 0);
  if (rc < 0)
    _exit(255);
  for (;;) {
    struct pollfd pf[3] = {{s.req, POLLIN, 0}, {s.sig, POLLIN, 0}, {s.caller, POLLIN, 0}};
    int n = mproc__poll(pf, s.caller >= 0 ? 3 : 2, MPROC__NEVER);
    if (n < 0 && n != -EINTR)
      _exit(1);
    if (s.caller >= 0 && pf[2].revents)
      _exit(0); /* the program died */
    if (pf[1].revents)
      serve_reap(&s);
    if (pf[0].revents)
      serve_fork(&s);
  }
}
