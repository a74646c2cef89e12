/*
 * The Manager's client side: the handle (starting the server or connecting to one) and the
 * dict and list proxies. Each call is one request and one reply over the handle's
 * Connection (a Listener/Client socket with the key's handshake). A process forked with
 * the handle must not share its parent's socket (their requests and replies would mix), so
 * a handle remembers whose connection it holds and a child reconnects at its first call.
 * The server's death shows as EOF on the socket: a call blocked on its reply returns
 * MPROC_EOF at once, and the handle is marked closed (MPROC_ECLOSED from then on).
 */
#define _GNU_SOURCE
#include "manager/proxies.h"
#include "manager/server.h"
#include "manager/table.h"
#include "ipc/conn.h"
#include "ipc/listener.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define START_TIMEOUT 30.0 /* for the server to report its address */
#define CONNECT_TIMEOUT 10.0
#define ASK_AGAIN_TIMEOUT 2.0 /* for a server that did not answer our shutdown */

struct mproc_manager {
  mproc_conn *c;
  pid_t conn_pid;         /* the process whose connection c is */
  pid_t owner;            /* the process that started the server (0: connected) */
  mproc_process *server;  /* NULL for a connected handle */
  bool closed;
  mproc__alive alive; /* the server's life page, mapped with the first shared dict */
  bool private_dir; /* address is a socket file in a private directory the server made */
  char address[300];
  size_t klen;
  unsigned char key[256];
};

/* ---- one call ---- */

static int gone(mproc_manager *m, int rc) {
  if (rc == MPROC_EOF || rc == -ECONNRESET || rc == -EPIPE) {
    m->closed = true;
    return MPROC_EOF;
  }
  return rc;
}

static int reconnect(mproc_manager *m) {
  /* Our copy of the parent's descriptor goes; the parent's connection stays open. */
  mproc_conn_free(m->c);
  m->c = NULL;
  int rc = mproc_client(&m->c, m->address, m->key, m->klen, CONNECT_TIMEOUT);
  if (rc) {
    /* A server that is gone (or died during the handshake) is the server's death here too. */
    m->closed = true;
    return rc == -ECONNREFUSED || rc == -ENOENT || rc == -ECONNRESET ? MPROC_EOF
                                                                      : gone(m, rc);
  }
  m->conn_pid = mproc__getpid();
  return 0;
}

/* Sends q, waits for the reply into *r, whose fields point into *hold (the caller frees it).
 * Returns the server's status, or the transport's failure. */
static int call(mproc_manager *m, const mproc__mgr_msg *q, mproc__mgr_msg *r, void **hold) {
  *hold = NULL;
  if (m->closed)
    return MPROC_ECLOSED;
  int rc;
  if (m->conn_pid != mproc__getpid() && (rc = reconnect(m)))
    return rc;
  size_t n = mproc__mgr_size(q);
  unsigned char stack[256], *buf = n <= sizeof stack ? stack : malloc(n);
  if (!buf)
    return MPROC_ENOMEM;
  mproc__mgr_encode(q, buf);
  /* MGR_D_SHM's reply is followed by a byte carrying descriptors, which a read-ahead would
   * take as frame bytes (and the descriptors with it, dropped): that reply is read exactly. */
  mproc__conn_exact(m->c, q->op == MGR_D_SHM);
  rc = mproc_conn_send(m->c, buf, n);
  if (buf != stack)
    free(buf);
  if (rc)
    return gone(m, rc);
  size_t len;
  if ((rc = mproc_conn_recv(m->c, hold, &len, MPROC_FOREVER)))
    return gone(m, rc);
  if (mproc__mgr_decode(*hold, len, r) < 0) {
    free(*hold);
    *hold = NULL;
    return -EPROTO;
  }
  return r->id;
}

/* A call whose reply carries nothing the caller keeps. */
int mproc__mgr_call_simple(mproc_manager *m, const mproc__mgr_msg *q, int64_t *num) {
  mproc__mgr_msg r;
  void *hold;
  int rc = call(m, q, &r, &hold);
  if (rc == 0 && num)
    *num = r.num;
  free(hold);
  return rc;
}

/* A call whose reply is one value, handed to the caller (a malloc'd copy). */
int mproc__mgr_call_value(mproc_manager *m, const mproc__mgr_msg *q, void **val, size_t *len) {
  return mproc__mgr_call_value_num(m, q, val, len, NULL);
}

int mproc__mgr_call_value_num(mproc_manager *m, const mproc__mgr_msg *q, void **val,
                              size_t *len, int64_t *num) {
  mproc__mgr_msg r;
  void *hold;
  int rc = call(m, q, &r, &hold);
  if (rc == 0 && num)
    *num = r.num;
  if (rc == 0 && r.nf != 1)
    rc = -EPROTO;
  if (rc == 0) {
    /* The value sits at the end of the reply: move it to the front, keep the block. */
    unsigned char *p = hold;
    size_t n = r.flen[0];
    memmove(p, r.f[0], n);
    *val = p;
    *len = n;
    return 0;
  }
  free(hold);
  return rc;
}

/* MGR_D_SHM: the reply names the server's two descriptors; a Unix socket carries copies
 * in one byte after it, and over TCP the process that started the server (which is on this
 * machine, unlike any other TCP peer's) copies them out of it with pidfd_getfd. */
int mproc__mgr_call_fds(mproc_manager *m, const mproc__mgr_msg *q, int fds[2]) {
  bool unix_ = strncmp(m->address, "unix:", 5) == 0;
  if (!unix_ && !m->server)
    return MPROC_ESTATE;
  mproc__mgr_msg r;
  void *hold;
  int rc = call(m, q, &r, &hold);
  if (!hold || (rc == 0 && (r.nf != 1 || r.flen[0] != 8))) {
    /* No reply taken whole (out of memory, say), or not this one: what is left of it, and
     * the byte after, would be read as the next call's reply. A fresh connection then. */
    free(hold);
    if (!m->closed)
      m->conn_pid = 0;
    return rc ? rc : -EPROTO;
  }
  int64_t both = rc == 0 ? mproc__mgr_get_i64(r.f[0]) : -1;
  free(hold);
  if (rc)
    return rc; /* the server's refusal: nothing follows */
  if (!unix_) {
    int pidfd = mproc__pidfd_open(mproc_process_pid(m->server));
    if (pidfd < 0)
      return pidfd;
    fds[0] = mproc__pidfd_getfd(pidfd, (int)(both >> 32));
    fds[1] = fds[0] < 0 ? -1 : mproc__pidfd_getfd(pidfd, (int)(both & 0xffffffff));
    mproc__close(pidfd);
    if (fds[1] >= 0)
      return 0;
    rc = fds[0] < 0 ? fds[0] : fds[1];
    if (fds[0] >= 0)
      mproc__close(fds[0]);
    return rc;
  }
  char byte;
  size_t n = 2;
  ssize_t got = mproc__recv_fds(mproc__conn_fd(m->c), &byte, 1, fds, &n);
  if (got == 1 && n == 2)
    return 0;
  for (size_t i = 0; got == 1 && i < n; i++)
    mproc__close(fds[i]);
  /* The byte is part of the reply: without it the stream is out of step, as at EOF. */
  return got < 0 ? gone(m, (int)got) : gone(m, MPROC_EOF);
}

const mproc__alive *mproc__mgr_alive(mproc_manager *m, int fd) {
  /* One mapping per handle: a later dict's copy of the descriptor is not needed. */
  if (m->alive.l) {
    mproc__close(fd);
    return &m->alive;
  }
  return mproc__alive_attach(&m->alive, fd) == 0 ? &m->alive : NULL;
}

bool mproc__mgr_closed(const mproc_manager *m) { return m->closed; }

int mproc__mgr_lost(mproc_manager *m) {
  bool was = m->closed;
  m->closed = true;
  return was ? MPROC_ECLOSED : MPROC_EOF;
}

/* ---- the handle ---- */

static int handle_new(mproc_manager **out, const char *address, const void *key, size_t klen) {
  mproc_manager *m = calloc(1, sizeof *m);
  if (!m)
    return MPROC_ENOMEM;
  snprintf(m->address, sizeof m->address, "%s", address);
  memcpy(m->key, key, klen);
  m->klen = klen;
  *out = m;
  return 0;
}

int mproc_manager_connect(mproc_manager **mp, const char *address, const void *authkey,
                          size_t authkey_len, double timeout) {
  if (!mp || !address || strlen(address) >= 300 || authkey_len > 256 || !authkey != !authkey_len)
    return MPROC_EINVAL;
  *mp = NULL;
  mproc_manager *m;
  int rc = handle_new(&m, address, authkey, authkey_len);
  if (rc)
    return rc;
  if ((rc = mproc_client(&m->c, address, authkey, authkey_len, timeout))) {
    free(m);
    return rc;
  }
  m->conn_pid = mproc__getpid();
  *mp = m;
  return 0;
}

/* Starts the server and reads the address it bound (or why it could not). */
static int start_server(mproc_manager *m, const mproc__mgr_boot *boot, mproc_start_method how) {
  mproc_conn *rd, *wr;
  int rc = mproc_pipe(&rd, &wr, false);
  if (rc)
    return rc;
  void *h[1] = {wr};
  mproc_process_opts o = {.name = "Manager", .daemon = true, .start_method = how,
                          .arg_len = sizeof *boot, .handles = h, .n_handles = 1};
  if ((rc = mproc_process_new(&m->server, mproc__mgr_server_main, (void *)boot, &o)) == 0)
    rc = mproc_process_start(m->server);
  mproc_conn_free(wr);
  void *msg = NULL;
  size_t len = 0;
  if (rc == 0 && (rc = mproc_conn_recv(rd, &msg, &len, START_TIMEOUT)) == 0) {
    /* The address, or "!" and the server's failure code (not NUL-terminated). */
    if (len == 0 || len >= sizeof m->address) {
      rc = -EPROTO;
    } else {
      memcpy(m->address, msg, len);
      m->address[len] = '\0';
      if (m->address[0] == '!') {
        rc = atoi(m->address + 1);
        m->address[0] = '\0';
        if (rc >= 0)
          rc = -EPROTO;
      }
    }
  }
  free(msg);
  mproc_conn_free(rd);
  return rc;
}

int mproc_manager_new(mproc_manager **mp, const mproc_manager_opts *opts) {
  mproc_manager_opts none = {0};
  if (!opts)
    opts = &none;
  if (!mp || (opts->address && strlen(opts->address) >= 300) || opts->authkey_len > 256 ||
      !opts->authkey != !opts->authkey_len)
    return MPROC_EINVAL;
  *mp = NULL;
  mproc__mgr_boot *boot = calloc(1, sizeof *boot);
  if (!boot)
    return MPROC_ENOMEM;
  snprintf(boot->address, sizeof boot->address, "%s", opts->address ? opts->address : "");
  boot->klen = opts->authkey ? opts->authkey_len : 32;
  int rc = opts->authkey ? (memcpy(boot->key, opts->authkey, boot->klen), 0)
                         : mproc__random_bytes(boot->key, boot->klen);
  mproc_manager *m = NULL;
  if (rc == 0)
    rc = handle_new(&m, "", boot->key, boot->klen);
  if (rc == 0) {
    m->owner = mproc__getpid();
    rc = start_server(m, boot, opts->start_method);
    m->private_dir = rc == 0 && !opts->address;
  }
  if (rc == 0 && (rc = mproc_client(&m->c, m->address, m->key, m->klen, CONNECT_TIMEOUT)) == 0)
    m->conn_pid = mproc__getpid();
  free(boot);
  if (rc && m) {
    m->closed = true;
    mproc_manager_free(m);
  }
  if (rc == 0)
    *mp = m;
  return rc;
}

const char *mproc_manager_address(const mproc_manager *m) { return m ? m->address : NULL; }

pid_t mproc_manager_pid(const mproc_manager *m) {
  return m && m->server ? mproc_process_pid(m->server) : 0;
}

/* The shutdown request did not get its answer (our connection broke or was dropped, or a
 * step of ours failed), yet the server we started may live on: ask again over a fresh
 * connection, briefly, rather than wait out a join for a server that was never told. */
static void ask_again(mproc_manager *m) {
  mproc_conn *c;
  if (mproc_client(&c, m->address, m->key, m->klen, ASK_AGAIN_TIMEOUT))
    return;
  unsigned char req[MGR_HDR];
  mproc__mgr_encode(&(mproc__mgr_msg){.op = MGR_SHUTDOWN}, req);
  void *reply = NULL;
  size_t len;
  if (mproc_conn_send(c, req, sizeof req) == 0)
    (void)mproc_conn_recv(c, &reply, &len, ASK_AGAIN_TIMEOUT);
  free(reply);
  mproc_conn_free(c);
}

int mproc_manager_shutdown(mproc_manager *m) {
  if (!m)
    return MPROC_EINVAL;
  int rc = MPROC_ECLOSED;
  if (!m->closed) {
    mproc__mgr_msg q = {.op = MGR_SHUTDOWN};
    rc = mproc__mgr_call_simple(m, &q, NULL);
    m->closed = true;
  }
  if (m->server && m->owner == mproc__getpid()) {
    if (rc != 0 && mproc_process_is_alive(m->server))
      ask_again(m);
    /* The server exits right after its reply; one that does not is killed. */
    if (mproc_process_join(m->server, rc == 0 ? 10 : ASK_AGAIN_TIMEOUT) != 0) {
      mproc_process_kill(m->server);
      mproc_process_join(m->server, MPROC_FOREVER);
    }
  }
  return rc == MPROC_EOF || rc == MPROC_ECLOSED ? 0 : rc;
}

void mproc_manager_free(mproc_manager *m) {
  if (!m)
    return;
  if (m->server && m->owner == mproc__getpid()) {
    if (mproc_process_is_alive(m->server) || !m->closed)
      mproc_manager_shutdown(m);
  }
  if (m->private_dir && m->owner == mproc__getpid()) {
    /* A server that was killed left its socket file and directory: they go with it. */
    const char *path = m->address + 5;
    (void)mproc__unlink(path);
    char dir[300];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
      *slash = '\0';
      (void)mproc__rmdir(dir);
    }
  }
  mproc_process_free(m->server); /* in a forked child: only the handle, never a kill */
  mproc_conn_free(m->c);
  mproc__alive_detach(&m->alive);
  free(m);
}
