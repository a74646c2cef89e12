/*
 * The start layer: births without fork (spawn, forkserver) and what crosses to such a child.
 * Not installed.
 *
 * A child that was not forked gets one boot message over a Unix stream socket (its "chan"):
 * the shared mappings it must map at the parent's addresses (mproc's objects point into
 * their own mappings, so the same address keeps them valid), descriptors, and bytes: first
 * the entry function (as object file + offset), then what that entry reads. The entry
 * reports its setup with mproc__boot_report; mproc__child_start returns that report.
 *
 * Under spawn the child is the caller's own child (posix_spawn of /proc/self/exe; a
 * constructor in mproc recognises MPROC_BOOT and never returns to main). Under forkserver
 * it is the server's child: the caller gets a pidfd for it, and its wait status arrives on
 * the chan (mproc__child_poll), written by the server when it reaps it.
 */
#ifndef MPROC_START_H
#define MPROC_START_H

#include "core/internal.h"
#include "os/os.h"

/* ---- the default method ---- */

/* m itself, or the process-wide default for MPROC_START_DEFAULT. */
mproc_start_method mproc__start_resolve(mproc_start_method m);

/* ---- the boot message ---- */

#define MPROC__MSG_MAPS_MAX 64

typedef struct mproc__msg {
  char *buf;
  size_t len, cap;
  int err; /* the first failure (MPROC_ENOMEM, MPROC_EINVAL, ...): sticky, seen at send */
  int fds[MPROC__FDS_MAX]; /* the sender's own; not closed by the message */
  size_t nfds;
  struct {
    uintptr_t base;
    size_t len;
    int fd;
  } maps[MPROC__MSG_MAPS_MAX];
  size_t nmaps;
} mproc__msg;

void mproc__msg_init(mproc__msg *m);
void mproc__msg_free(mproc__msg *m);
void mproc__msg_put(mproc__msg *m, const void *p, size_t n);
void mproc__msg_put_u64(mproc__msg *m, uint64_t v);
/* A string or NULL. */
void mproc__msg_put_str(mproc__msg *m, const char *s);
/* A descriptor; the reader takes them in the order put. */
void mproc__msg_put_fd(mproc__msg *m, int fd);
/* The shared mapping that holds p goes along (once however often it is put): the child maps
 * it at the same address before the entry runs. MPROC_EINVAL when p is in no mproc mapping. */
void mproc__msg_put_mem(mproc__msg *m, const void *p);
/* A function, as (object file, offset). MPROC_EINVAL when it lies in no loaded object. */
void mproc__msg_put_fn(mproc__msg *m, const void *fn);

/* Reading a boot message in the child. A read past the end marks it bad and yields zeros. */
typedef struct mproc__rd {
  const char *p;
  size_t len, off;
  int *fds;
  size_t nfds, fd_off;
  bool bad;
  int err; /* when bad because a resource was not there (-errno from an import), else 0 */
} mproc__rd;

void mproc__rd_get(mproc__rd *r, void *out, size_t n);
uint64_t mproc__rd_u64(mproc__rd *r);
/* A string put with mproc__msg_put_str, inside the message (valid for the child's life), or
 * NULL. */
const char *mproc__rd_str(mproc__rd *r);
/* n bytes inside the message, or NULL. */
const void *mproc__rd_bytes(mproc__rd *r, size_t n);
/* The next descriptor (now the caller's), or -1. */
int mproc__rd_fd(mproc__rd *r);
/* The next function, resolved in this process, or NULL (and bad). */
void *mproc__rd_fn(mproc__rd *r);

/* ---- children that were not forked ---- */

typedef struct mproc__child {
  pid_t pid;
  int pidfd; /* -1 where there is none */
  int chan;  /* forkserver: where the wait status arrives; -1 for a spawned child */
} mproc__child;

/* What a boot message starts in the child: reads its part of the message, reports with
 * mproc__boot_report, and never returns. */
typedef void (*mproc__boot_entry)(int chan, mproc__rd *r);

/* Starts a child with method (SPAWN or FORKSERVER) that runs entry, and sends it msg (entry
 * first, then msg's contents). Returns the child's report (0, or its -errno), with *c; on
 * an error the child is gone (reaped, or left to the server). (forkserver.c) */
int mproc__child_start(mproc_start_method method, mproc__boot_entry entry, mproc__msg *msg,
                       mproc__child *c);

/* The pid of this process's running forkserver, 0 when there is none (for tests: its
 * children are this process's children in all but name). */
pid_t mproc__forkserver_pid(void);

/* How a child comes to be, given the socket end its boot message will arrive on: sets
 * c->pid and c->pidfd. 0 or -errno. */
typedef int (*mproc__boot_birth)(int child_chan, mproc__child *c);
/* The birth of a spawned child: posix_spawn of this program (start.c). */
int mproc__spawn_birth(int child_chan, mproc__child *c);
/* mproc__child_start's common part (start.c): births the child with birth and boots it.
 * served: the child is not ours (a forkserver's): not reaped here, its chan kept. */
int mproc__boot_start(mproc__boot_birth birth, bool served, mproc__boot_entry entry,
                      mproc__msg *msg, mproc__child *c);
/* In the child: sends the parent the setup result (0 or -errno) and closes chan. */
void mproc__boot_report(int chan, int err);
/* A forkserver child's end: 1 with *status (a wait status) once it ended, 0 while it runs
 * (waits until deadline), or -errno. */
int mproc__child_poll(mproc__child *c, int64_t deadline, int *status);
/* Kills the child (through its pidfd when it has one). 0 or -errno; -ESRCH once gone. */
int mproc__child_kill(mproc__child *c, int sig);
/* Closes the child's descriptors (after it ended, or to let it go). */
void mproc__child_release(mproc__child *c);

/* The server's word to a parent (start.c's format): its child ended with wait status. */
void mproc__boot_exit_status(int chan, int status);
/* The child side of a boot message (start.c): maps, resolves the entry, runs it. */
_Noreturn void mproc__boot_run(int chan);

/* ---- objects that cross: mproc_process_opts.handles ---- */

/* Each object kind registers, from a constructor with priority MPROC__CTOR_KINDS, how it is
 * written into a boot message and rebuilt in the child. A kind is recognised by the 32-bit
 * magic at offset 0 of its handle. export puts what import reads; import returns the
 * child's handle (NULL on failure). */
#define MPROC__CTOR_KINDS 200
typedef struct mproc__kind {
  uint32_t magic;
  int (*export)(const void *h, mproc__msg *m);
  void *(*import)(mproc__rd *r);
} mproc__kind;
void mproc__kind_register(const mproc__kind *k);

/* For a kind whose handle is the object's own shared memory: the mapping goes along and
 * the child's handle is the same address. */
int mproc__kind_same_export(const void *h, mproc__msg *m);
void *mproc__kind_same_import(mproc__rd *r);

/* Writes handle h (of a registered kind) into m: MPROC_EINVAL for anything else. */
int mproc__handle_export(const void *h, mproc__msg *m);
/* Reads one handle written by mproc__handle_export; NULL (r marked bad) on failure. */
void *mproc__handle_import(mproc__rd *r);

/* ---- managed objects (the Manager's proxies, src/manager/proxies_sync.c) ----
 * A managed Lock, Queue, Event... is a handle of the local kind's type (mproc_lock,
 * mproc_queue, ...) whose magic is MPROC__REMOTE_MAGIC: the kind's calls hand it to its
 * ops, so code written for the local objects works on managed ones unchanged. The kinds'
 * layers know only this table, never the Manager. */
#define MPROC__REMOTE_MAGIC 0x524d4f54u /* "RMOT" */
enum mproc__rop {
  MPROC__R_ACQUIRE = 1, /* lock, sem, cond: timeout */
  MPROC__R_RELEASE,
  MPROC__R_VALUE,   /* sem value, event is_set, queue qsize -> *out */
  MPROC__R_SET,     /* event */
  MPROC__R_CLEAR,   /* event */
  MPROC__R_WAIT,    /* event, cond, barrier (-> *out the index): timeout */
  MPROC__R_NOTIFY,  /* cond: arg n (-1: all) */
  MPROC__R_ABORT,   /* barrier */
  MPROC__R_RESET,   /* barrier */
  MPROC__R_FULL,    /* queue -> *out 0/1 */
  MPROC__R_CLOSE,   /* queue */
  MPROC__R_TASK_DONE,
  MPROC__R_JOIN,    /* queue: timeout */
  MPROC__R_END
};
typedef struct mproc__remote mproc__remote;
typedef struct mproc__remote_ops {
  int (*call)(mproc__remote *r, int op, int64_t arg, double timeout, int64_t *out);
  int (*put)(mproc__remote *r, const void *buf, size_t len, double timeout);
  int (*get)(mproc__remote *r, void **buf, size_t *len, double timeout);
  void (*free)(mproc__remote *r);
} mproc__remote_ops;
struct mproc__remote {
  uint32_t magic; /* MPROC__REMOTE_MAGIC */
  const mproc__remote_ops *ops;
};
static inline bool mproc__is_remote(const void *h) {
  return h && *(const uint32_t *)h == MPROC__REMOTE_MAGIC;
}
/* op on a managed handle h; *out (if non-NULL) its number. */
static inline int mproc__rcall(const void *h, int op, int64_t arg, double timeout, int64_t *out) {
  mproc__remote *r = (mproc__remote *)h;
  return r->ops->call(r, op, arg, timeout, out);
}
static inline int64_t mproc__rnum(const void *h, int op) {
  int64_t n = 0;
  int rc = mproc__rcall(h, op, 0, 0, &n);
  return rc < 0 ? rc : n;
}

#endif /* MPROC_START_H */
