/*
 * The start layer (see start.h): the default start method, the boot message, spawning, and
 * the child's side of a boot, which takes over in a constructor before main.
 */
#define _GNU_SOURCE
#include "core/start.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BOOT_ENV "MPROC_BOOT"
#define BOOT_MAGIC 0x4d50424fu /* "MPBO" */
#define PATH_CAP 4096

/* On the chan, from child or server to the parent: a report, then (forkserver) the end. */
enum { REC_REPORT = 1, REC_EXIT = 2 };
typedef struct rec {
  uint32_t tag;
  int32_t value;
} rec;

/* ---- the default method ---- */

static _Atomic int default_method = MPROC_START_FORK;

static const char *const method_names[] = {"default", "fork", "forkserver", "spawn"};

const char *mproc_start_method_name(mproc_start_method m) {
  return (unsigned)m < sizeof method_names / sizeof *method_names ? method_names[m] : NULL;
}

int mproc_set_start_method(mproc_start_method m) {
  if (m != MPROC_START_FORK && m != MPROC_START_FORKSERVER && m != MPROC_START_SPAWN)
    return MPROC_EINVAL;
  atomic_store(&default_method, m);
  return 0;
}

mproc_start_method mproc_get_start_method(void) { return atomic_load(&default_method); }

mproc_start_method mproc__start_resolve(mproc_start_method m) {
  return m == MPROC_START_DEFAULT ? mproc_get_start_method() : m;
}

/* argv[0] as the program was started, for a spawned child's own argv[0]. */
static char *prog_argv0;

/* glibc passes (argc, argv, envp) to ELF constructors, in shared and static programs. */
__attribute__((constructor(MPROC__CTOR_KINDS))) static void start_init(int argc, char **argv,
                                                                       char **envp) {
  (void)envp;
  if (argc > 0 && argv && argv[0])
    prog_argv0 = argv[0];
  const char *e = getenv("MPROC_START_METHOD");
  for (int m = MPROC_START_FORK; e && m <= MPROC_START_SPAWN; m++)
    if (strcmp(e, method_names[m]) == 0)
      atomic_store(&default_method, m);
}

/* ---- the boot message ---- */

void mproc__msg_init(mproc__msg *m) { memset(m, 0, sizeof *m); }

void mproc__msg_free(mproc__msg *m) {
  free(m->buf);
  m->buf = NULL;
}

static void msg_fail(mproc__msg *m, int err) {
  if (!m->err)
    m->err = err;
}

void mproc__msg_put(mproc__msg *m, const void *p, size_t n) {
  if (m->err)
    return;
  if (n > m->cap - m->len) {
    size_t cap = m->cap ? m->cap : 256;
    while (cap - m->len < n && cap < (SIZE_MAX >> 1))
      cap *= 2;
    char *b = cap - m->len >= n ? realloc(m->buf, cap) : NULL;
    if (!b)
      return msg_fail(m, MPROC_ENOMEM);
    m->buf = b;
    m->cap = cap;
  }
  if (n)
    memcpy(m->buf + m->len, p, n);
  m->len += n;
}

void mproc__msg_put_u64(mproc__msg *m, uint64_t v) { mproc__msg_put(m, &v, sizeof v); }

void mproc__msg_put_str(mproc__msg *m, const char *s) {
  mproc__msg_put_u64(m, s ? strlen(s) + 1 : 0);
  if (s)
    mproc__msg_put(m, s, strlen(s) + 1);
}

void mproc__msg_put_fd(mproc__msg *m, int fd) {
  if (fd < 0)
    return msg_fail(m, MPROC_EINVAL);
  if (m->nfds + m->nmaps >= MPROC__FDS_MAX)
    return msg_fail(m, MPROC_ETOOBIG);
  m->fds[m->nfds++] = fd;
}

void mproc__msg_put_mem(mproc__msg *m, const void *p) {
  void *base;
  size_t len;
  int fd = mproc__shared_lookup(p, &base, &len);
  if (fd < 0) /* not mproc's memory; or memory made without a descriptor, and why */
    return msg_fail(m, fd == -ENOENT ? MPROC_EINVAL : fd);
  for (size_t i = 0; i < m->nmaps; i++)
    if (m->maps[i].base == (uintptr_t)base)
      return;
  if (m->nmaps == MPROC__MSG_MAPS_MAX || m->nfds + m->nmaps >= MPROC__FDS_MAX)
    return msg_fail(m, MPROC_ETOOBIG);
  m->maps[m->nmaps].base = (uintptr_t)base;
  m->maps[m->nmaps].len = len;
  m->maps[m->nmaps++].fd = fd;
}

void mproc__msg_put_fn(mproc__msg *m, const void *fn) {
  char path[PATH_CAP];
  uint64_t off = 0;
  if (mproc__fn_locate(fn, path, sizeof path, &off) != 0)
    return msg_fail(m, MPROC_EINVAL);
  mproc__msg_put_str(m, path);
  mproc__msg_put_u64(m, off);
}

void mproc__rd_get(mproc__rd *r, void *out, size_t n) {
  if (r->bad || n > r->len - r->off) {
    r->bad = true;
    memset(out, 0, n);
    return;
  }
  memcpy(out, r->p + r->off, n);
  r->off += n;
}

uint64_t mproc__rd_u64(mproc__rd *r) {
  uint64_t v;
  mproc__rd_get(r, &v, sizeof v);
  return v;
}

const void *mproc__rd_bytes(mproc__rd *r, size_t n) {
  if (r->bad || n > r->len - r->off) {
    r->bad = true;
    return NULL;
  }
  const void *p = r->p + r->off;
  r->off += n;
  return p;
}

const char *mproc__rd_str(mproc__rd *r) {
  uint64_t n = mproc__rd_u64(r);
  if (n == 0)
    return NULL;
  const char *s = mproc__rd_bytes(r, n);
  if (s && s[n - 1] != '\0') {
    r->bad = true;
    return NULL;
  }
  return s;
}

int mproc__rd_fd(mproc__rd *r) {
  if (r->bad || r->fd_off >= r->nfds) {
    r->bad = true;
    return -1;
  }
  int fd = r->fds[r->fd_off];
  r->fds[r->fd_off++] = -1; /* the caller's now */
  return fd;
}

void *mproc__rd_fn(mproc__rd *r) {
  const char *path = mproc__rd_str(r);
  uint64_t off = mproc__rd_u64(r);
  void *fn = NULL;
  if (!path || r->bad || mproc__fn_resolve(path, off, &fn) != 0) {
    r->bad = true;
    return NULL;
  }
  return fn;
}

/* ---- sending a boot message ---- */

typedef struct boot_hdr {
  uint32_t magic;
  uint32_t nmaps;
  uint32_t nfds; /* after the maps' own */
  uint32_t pad;
  uint64_t body_len;
} boot_hdr;

typedef struct boot_map {
  uint64_t base, len;
} boot_map;

/* Header and map table with every descriptor in one sendmsg, then the body. */
static int msg_send(int chan, const mproc__msg *m) {
  size_t nf = m->nmaps + m->nfds;
  size_t head_len = sizeof(boot_hdr) + m->nmaps * sizeof(boot_map);
  char *head = malloc(head_len);
  int *fds = malloc((nf ? nf : 1) * sizeof *fds);
  int rc = head && fds ? 0 : MPROC_ENOMEM;
  if (rc == 0) {
    boot_hdr h = {BOOT_MAGIC, (uint32_t)m->nmaps, (uint32_t)m->nfds, 0, m->len};
    memcpy(head, &h, sizeof h);
    for (size_t i = 0; i < m->nmaps; i++) {
      boot_map bm = {m->maps[i].base, m->maps[i].len};
      memcpy(head + sizeof h + i * sizeof bm, &bm, sizeof bm);
      fds[i] = m->maps[i].fd;
    }
    memcpy(fds + m->nmaps, m->fds, m->nfds * sizeof *fds);
    rc = mproc__send_fds(chan, head, head_len, fds, nf);
    if (rc == 0 && m->len)
      rc = mproc__write_sock(chan, m->buf, m->len);
  }
  free(head);
  free(fds);
  return rc;
}

/* Reads the report (0 or -errno), or the end a forkserver child came to first. */
static int read_report(int chan) {
  rec r;
  ssize_t n = mproc__read_full(chan, &r, sizeof r);
  if (n < 0)
    return (int)n;
  if (n != sizeof r)
    return MPROC_ECRASHED; /* it died before it could report */
  if (r.tag == REC_REPORT)
    return r.value <= 0 ? r.value : -EIO;
  return MPROC_ECRASHED;
}

void mproc__boot_report(int chan, int err) {
  rec r = {REC_REPORT, err};
  (void)mproc__write_sock(chan, &r, sizeof r);
  mproc__close(chan);
}

/* The program to exec: this very file, as the kernel knows it. */
int mproc__spawn_birth(int child_chan, mproc__child *c) {
  char env_boot[64];
  snprintf(env_boot, sizeof env_boot, BOOT_ENV "=%d:%d", child_chan, (int)mproc__getpid());
  extern char **environ;
  size_t n = 0;
  while (environ[n])
    n++;
  char **envp = malloc((n + 2) * sizeof *envp);
  if (!envp)
    return MPROC_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], BOOT_ENV "=", sizeof BOOT_ENV) != 0)
      envp[k++] = environ[i];
  envp[k++] = env_boot;
  envp[k] = NULL;
  char *argv[] = {prog_argv0 ? prog_argv0 : "mproc-child", NULL};
  int rc = mproc__spawn_exe("/proc/self/exe", argv, envp, child_chan, &c->pid);
  if (rc == -ENOENT && prog_argv0 && strchr(prog_argv0, '/'))
    rc = mproc__spawn_exe(prog_argv0, argv, envp, child_chan, &c->pid);
  free(envp);
  if (rc == 0)
    c->pidfd = mproc__pidfd_open(c->pid);
  return rc;
}

int mproc__boot_start(mproc__boot_birth birth, bool served, mproc__boot_entry entry,
                      mproc__msg *msg, mproc__child *c) {
  *c = (mproc__child){0, -1, -1};
  mproc__msg head;
  mproc__msg_init(&head);
  mproc__msg_put_fn(&head, (const void *)entry);
  mproc__msg_put(&head, msg->buf, msg->len);
  int rc = head.err ? head.err : msg->err;
  int sv[2] = {-1, -1};
  if (rc == 0)
    rc = mproc__socketpair(sv, false);
  if (rc == 0) {
    rc = birth(sv[1], c);
    mproc__close(sv[1]);
  }
  if (rc == 0) {
    memcpy(head.fds, msg->fds, msg->nfds * sizeof *msg->fds);
    head.nfds = msg->nfds;
    memcpy(head.maps, msg->maps, msg->nmaps * sizeof *msg->maps);
    head.nmaps = msg->nmaps;
    rc = msg_send(sv[0], &head);
    if (rc == 0)
      rc = read_report(sv[0]);
  }
  mproc__msg_free(&head);
  if (rc != 0 && c->pid > 0) {
    (void)mproc__child_kill(c, SIGKILL);
    if (!served)
      mproc__waitpid(c->pid, NULL, 0); /* a forkserver child is reaped by the server */
    mproc__close(c->pidfd);
    *c = (mproc__child){0, -1, -1};
  }
  if (rc == 0 && served)
    c->chan = sv[0];
  else
    mproc__close(sv[0]);
  return rc;
}

int mproc__child_poll(mproc__child *c, int64_t deadline, int *status) {
  int rc = mproc__poll_fd(c->chan, POLLIN, deadline, NULL);
  if (rc <= 0)
    return rc;
  rec r;
  ssize_t n = mproc__read_full(c->chan, &r, sizeof r);
  if (n < 0)
    return (int)n;
  if (n != sizeof r || r.tag != REC_EXIT)
    return -ECHILD; /* the server died before it could tell */
  *status = r.value;
  return 1;
}

int mproc__child_kill(mproc__child *c, int sig) {
  if (c->pidfd >= 0)
    return mproc__pidfd_kill(c->pidfd, sig);
  /* Without a pidfd (kernels before 5.3) our own unreaped child's pid is safe. A server's
   * child is safe until the server reaps it, and it tells us at once when it does: while
   * no status waits on chan the pid is still the child's, but for the moment between the
   * server's waitpid and its write (the race Python's forkserver accepts for every kill). */
  if (c->chan >= 0 && mproc__poll_fd(c->chan, POLLIN, 0, NULL) != 0)
    return -ESRCH;
  return mproc__kill(c->pid, sig);
}

void mproc__child_release(mproc__child *c) {
  mproc__close(c->pidfd);
  mproc__close(c->chan);
  c->pidfd = c->chan = -1;
}

void mproc__boot_exit_status(int chan, int status) {
  rec r = {REC_EXIT, status};
  (void)mproc__write_sock(chan, &r, sizeof r);
}

/* ---- the child's side ---- */

/* Receives the boot message, maps its mappings, and runs its entry. Any failure ends the
 * child with a report the parent returns from mproc__child_start. */
_Noreturn void mproc__boot_run(int chan) {
  boot_hdr h;
  int fds[MPROC__FDS_MAX];
  size_t nf = MPROC__FDS_MAX;
  ssize_t n = mproc__recv_fds(chan, &h, sizeof h, fds, &nf);
  int rc = n < 0 ? (int)n : 0;
  if (rc == 0 && (n != sizeof h || h.magic != BOOT_MAGIC || h.nmaps + h.nfds != nf))
    rc = -EPROTO;
  boot_map *maps = rc == 0 ? malloc((h.nmaps ? h.nmaps : 1) * sizeof *maps) : NULL;
  char *body = rc == 0 ? malloc(h.body_len ? h.body_len : 1) : NULL;
  if (rc == 0 && (!maps || !body))
    rc = -ENOMEM;
  if (rc == 0 && (mproc__read_full(chan, maps, h.nmaps * sizeof *maps) !=
                      (ssize_t)(h.nmaps * sizeof *maps) ||
                  mproc__read_full(chan, body, h.body_len) != (ssize_t)h.body_len))
    rc = -EPROTO;
  for (uint32_t i = 0; rc == 0 && i < h.nmaps; i++) {
    rc = mproc__shared_map_at((void *)(uintptr_t)maps[i].base, maps[i].len, fds[i]);
    if (rc == 0)
      fds[i] = -1;
  }
  free(maps);
  mproc__rd r = {body, h.body_len, 0, fds + (rc == 0 ? h.nmaps : 0),
                 rc == 0 ? h.nfds : 0, 0, false, 0};
  mproc__boot_entry entry = rc == 0 ? (mproc__boot_entry)mproc__rd_fn(&r) : NULL;
  if (rc == 0 && !entry)
    rc = -ENOENT;
  if (rc != 0) {
    mproc__boot_report(chan, rc);
    _exit(255);
  }
  entry(chan, &r);
  _exit(255); /* entries do not return */
}

/* Takes over a spawned child before main. MPROC_BOOT=fd:parent, checked against the real
 * parent so that a stray variable in the environment is ignored. After the kinds, but
 * before every constructor of default priority: in a program linked with the static
 * library, one of the program's own that starts a process (it saw a variable the child
 * inherited) would otherwise run first in the child, which would start one again, and so
 * on (12 000 processes under forkserver in test_process before this had a priority). */
__attribute__((constructor(MPROC__CTOR_KINDS + 1))) static void boot_takeover(void) {
  const char *e = getenv(BOOT_ENV);
  int fd, parent;
  if (!e || sscanf(e, "%d:%d", &fd, &parent) != 2 || parent != getppid() || fd < 0)
    return;
  unsetenv(BOOT_ENV);
  mproc__boot_run(fd);
}
