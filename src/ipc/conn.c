/*
 * Pipe and Connection: length-prefixed messages over pipe(2), and mproc_wait
 * (multiprocessing.connection.wait).
 *
 * Transport: pipes, two for a duplex connection. Measured on Linux 6.x (2 vCPUs), an 8-byte
 * round trip costs ~6 us over pipes and ~12 us over a Unix socket pair; socket pairs move
 * 1 MiB messages faster (~7 vs ~4 GB/s), but pipes reach that ~4 GB/s once their buffer is
 * raised to 1 MiB, which a connection does the first time it sends a message larger than
 * the default 64 KiB buffer (lazily, so that many small-message pipes do not eat into the
 * user's pipe-buffer quota). A send to a gone reader returns -EPIPE: the write blocks
 * SIGPIPE in the calling thread and consumes the one it raised (os: mproc__writev_full),
 * so the program's own SIGPIPE disposition and mask stay as they were.
 *
 * Framing is Python's (Connection.send_bytes) with one change: a 4-byte big-endian length;
 * for a message longer than 0x7fffffff bytes the 4 bytes are 0xffffffff and an 8-byte
 * big-endian length follows; then the payload. The change: a frame shorter than 64 bytes
 * is padded to 64, so that every frame is at least 64 bytes long and the receiver takes
 * the first 64 bytes in one read without reading into the next frame — a small message
 * costs one syscall on each side instead of two on the receiving one (measured: ~15% of an
 * 8-byte round trip). The receiver never reads past the end of the current frame, so
 * fileno()'s readability stays exact.
 *
 * A connection made by a Listener or Client (listener.c) is one stream socket carrying
 * both directions, and speaks Python's framing exactly: no padding (a Python peer would take
 * it as the next message). So its receiver reads ahead instead: every read asks for up to
 * 4 KiB (RA) past what it needs, into a buffer kept in the conn that the next recv takes
 * first; a small message then costs one readv, header and payload, instead of two reads
 * (measured: an 8-byte round trip ~1.3 x a raw socket's before, ~1.1 x after), and a big one
 * that ends in a readv of [rest of the body, read-ahead] picks up the next header for free.
 * The price: the descriptor's readability is no longer exact for these connections, so
 * mproc_conn_poll and mproc_wait count the held bytes, and a conn crossing to a spawned
 * child carries them along; and a conn whose owner asks for its descriptor
 * (mproc_conn_fileno: to sleep on it in an event loop of its own) reads exactly from then
 * on, as Python's connections do. Its sends use sendmsg with MSG_NOSIGNAL rather than the SIGPIPE
 * dance of pipes.
 *
 * A recv whose deadline passes with a message half-arrived keeps what it read in the conn
 * and returns MPROC_ETIMEDOUT (MPROC_EAGAIN for timeout 0); the next recv continues the
 * same message, so messages are never torn. A peer that closes mid-message: MPROC_EOF.
 * mproc_conn_recv_bytes_into writes straight into the caller's buffer (no malloc, no page
 * faults for a reused one); cut short, it moves the part it read into the conn, so either
 * kind of recv goes on with it, and a message longer than the buffer stays whole in the
 * conn (only its header was consumed) until a recv with room takes it.
 */
#define _GNU_SOURCE
#include "core/process.h"
#include "core/start.h"
#include "ipc/conn.h"

#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define HDR_SHORT 4
#define HDR_LONG 12
#define FIRST 64 /* every frame is at least this long */
#define LEN_ESCAPE 0xffffffffu
#define LEN_SHORT_MAX 0x7fffffffu /* Python reads the short length as a signed int */
#define PIPE_DEFAULT (64 << 10)   /* Linux's default pipe buffer */
#define PIPE_BIG (1 << 20)        /* asked for at the first large message (pipe-max-size) */

#define CONN_MAGIC 0x434f4e4eu /* "CONN" */
/* A body past this is allocated as its bytes arrive (doubling), so that a header claiming
 * terabytes costs only what the peer really sent. Big blocks come from mmap in glibc, so
 * growing one is an mremap, not a copy. */
#define BODY_FIRST_MAX ((size_t)1 << 20)
/* A socket's read-ahead: each read asks for this much past what it needs. */
#define RA 4096
/* A socket's message up to this long (header included) is copied and sent in one piece. */
#define SMALL_SEND 512

struct mproc_conn {
  uint32_t magic; /* first: how a handle's kind is told (start.h) */
  int rfd, wfd; /* -1 where this end does not receive / send */
  bool grown;   /* the send pipe's buffer was raised (or could not be) */
  bool sock;    /* rfd == wfd, one stream socket: Python's framing, no padding */
  bool exact;   /* no read-ahead: the owner sleeps on the descriptor (mproc_conn_fileno) */
  /* The message being received, kept across a recv that timed out or a buffer too short. */
  bool have_len;
  bool lost;    /* its bytes so far could not be kept: the rest is skipped, then the next */
  size_t len;   /* its length, once have_len */
  size_t got;   /* bytes of it in body (or dropped, when lost) */
  size_t cap;   /* bytes of body allocated: all of len, or less while a big one arrives */
  char *body;
  uint64_t limit; /* longest message accepted (0: SSIZE_MAX) */
  /* Bytes read and not yet taken, ra[ra_pos, ra_end). A pipe: the frame's first 64 bytes
   * (header, payload; the padding is dropped). A socket: what a read brought past what was
   * asked for, up to RA bytes: the next frame's header and small payload, taken by the next
   * recv without a syscall. */
  size_t ra_pos, ra_end;
  unsigned char ra[RA];
};

/* ---- making pipes ---- */

void mproc_conn_free(mproc_conn *c) {
  if (!c)
    return;
  mproc__close(c->rfd);
  if (!c->sock)
    mproc__close(c->wfd);
  free(c->body);
  free(c);
}

/* A connection owning rfd and wfd; NULL (both closed) when out of memory. */
static mproc_conn *conn_make(int rfd, int wfd) {
  mproc_conn *c = calloc(1, sizeof *c);
  if (!c) {
    mproc__close(rfd);
    mproc__close(wfd);
    return NULL;
  }
  c->magic = CONN_MAGIC;
  c->rfd = rfd;
  c->wfd = wfd;
  return c;
}

void mproc__conn_set_limit(mproc_conn *c, uint64_t limit) { c->limit = limit; }

mproc_conn *mproc__conn_socket(int fd) {
  mproc_conn *c = conn_make(fd, -1);
  if (c) {
    c->wfd = fd;
    c->sock = true;
  }
  return c;
}

int mproc_pipe(mproc_conn **a, mproc_conn **b, bool duplex) {
  if (!a || !b)
    return MPROC_EINVAL;
  int p1[2], p2[2] = {-1, -1};
  int rc = mproc__pipe(p1, false);
  if (rc)
    return rc;
  if (duplex && (rc = mproc__pipe(p2, false)) < 0) {
    mproc__close(p1[0]);
    mproc__close(p1[1]);
    return rc;
  }
  /* p1 carries b -> a; p2 (duplex only) a -> b. */
  mproc_conn *ca = conn_make(p1[0], p2[1]);
  mproc_conn *cb = conn_make(p2[0], p1[1]);
  if (!ca || !cb) {
    mproc_conn_free(ca);
    mproc_conn_free(cb);
    return MPROC_ENOMEM;
  }
  *a = ca;
  *b = cb;
  return 0;
}

int mproc__conn_fd(const mproc_conn *c) { return c->rfd >= 0 ? c->rfd : c->wfd; }

void mproc__conn_exact(mproc_conn *c, bool exact) { c->exact = exact; }

int mproc_conn_fileno(mproc_conn *c) {
  if (!c)
    return MPROC_EINVAL;
  c->exact = true; /* its owner polls the descriptor: its readability must be the truth */
  return mproc__conn_fd(c);
}

/* ---- send ---- */

static size_t put_header(unsigned char *h, size_t len) {
  if (len <= LEN_SHORT_MAX) {
    for (int i = 0; i < 4; i++)
      h[i] = (unsigned char)(len >> (24 - 8 * i));
    return HDR_SHORT;
  }
  memset(h, 0xff, 4);
  uint64_t l = len;
  for (int i = 0; i < 8; i++)
    h[4 + i] = (unsigned char)(l >> (56 - 8 * i));
  return HDR_LONG;
}

/* A large message: raise the pipe's buffer once (best effort: the kernel may refuse past
 * pipe-max-size or the user's quota, and then the default buffer does). */
static void grow_pipe(mproc_conn *c) {
  c->grown = true;
  mproc__pipe_grow(c->wfd, PIPE_BIG);
}

int mproc_conn_send(mproc_conn *c, const void *buf, size_t len) {
  if (!c || (!buf && len > 0) || c->wfd < 0)
    return MPROC_EINVAL;
  if (len > (size_t)SSIZE_MAX)
    return MPROC_ETOOBIG;
  unsigned char f[SMALL_SEND];
  size_t hl = put_header(f, len);
  if (c->sock && hl + len <= SMALL_SEND) {
    /* One contiguous send: cheaper in the kernel than a sendmsg of two pieces. */
    if (len)
      memcpy(f + hl, buf, len);
    return mproc__write_sock(c->wfd, f, hl + len);
  }
  if (c->sock) {
    struct iovec iov[2] = {{.iov_base = f, .iov_len = hl},
                           {.iov_base = (void *)buf, .iov_len = len}};
    return mproc__sendv_sock(c->wfd, iov, 2);
  }
  if (hl + len <= FIRST) {
    /* A small message goes out as one padded 64-byte frame. */
    if (len)
      memcpy(f + hl, buf, len);
    memset(f + hl + len, 0, FIRST - hl - len);
    return mproc__write_full(c->wfd, f, FIRST);
  }
  if (!c->grown && len > PIPE_DEFAULT)
    grow_pipe(c);
  /* Header and payload in one writev: one syscall, no copy. */
  struct iovec iov[2] = {{.iov_base = f, .iov_len = hl}, {.iov_base = (void *)buf, .iov_len = len}};
  return mproc__writev_full(c->wfd, iov, 2);
}

/* ---- recv ---- */

static size_t ra_held(const mproc_conn *c) { return c->ra_end - c->ra_pos; }

static void ra_norm(mproc_conn *c) {
  if (c->ra_pos == c->ra_end)
    c->ra_pos = c->ra_end = 0;
}

/* Takes up to n held bytes into dst (NULL only when n is 0): how many. */
static size_t ra_take(mproc_conn *c, char *dst, size_t n) {
  size_t k = ra_held(c) < n ? ra_held(c) : n;
  if (k)
    memcpy(dst, c->ra + c->ra_pos, k);
  c->ra_pos += k;
  ra_norm(c);
  return k;
}

/* What a read that needs need bytes asks for: a socket's RA past them, unless exact. */
static size_t ra_ask(const mproc_conn *c, size_t need) { return c->sock && !c->exact ? RA : need; }

/* One read of what has come into the free end of ra (a pipe: at most max bytes, so that it
 * never reads past its frame). */
static int ra_read(mproc_conn *c, size_t max, int64_t deadline) {
  size_t room = RA - c->ra_end;
  struct iovec v = {.iov_base = c->ra + c->ra_end, .iov_len = room < max ? room : max};
  ssize_t n = mproc__readv_some(c->rfd, &v, 1, deadline);
  if (n < 0)
    return (int)n;
  c->ra_end += (size_t)n;
  return 0;
}

/* Until n (<= RA) bytes are held: 0, MPROC_EOF, -ETIMEDOUT, -errno. A pipe reads exactly
 * the frame's first n; a socket whatever comes, up to RA. */
static int ra_fill(mproc_conn *c, size_t n, int64_t deadline) {
  if (!c->sock)
    return mproc__read_until(c->rfd, c->ra, n, &c->ra_end, deadline); /* ra_pos is 0 here */
  if (c->ra_pos + n > RA) {
    memmove(c->ra, c->ra + c->ra_pos, ra_held(c));
    c->ra_end -= c->ra_pos;
    c->ra_pos = 0;
  }
  int rc = 0;
  while (rc == 0 && ra_held(c) < n)
    rc = ra_read(c, ra_ask(c, n - ra_held(c)), deadline);
  return rc;
}

static uint64_t get_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

/* Reads and parses the next frame's header (once per message): 0 with c->len set, or the
 * reason. A socket's frames are not padded: the 4-byte header, the long one's 8 after. */
static int rx_header(mproc_conn *c, int64_t deadline) {
  if (c->have_len)
    return 0;
  int rc = ra_fill(c, c->sock ? HDR_SHORT : FIRST, deadline);
  if (rc)
    return rc;
  uint64_t l = get_be(c->ra + c->ra_pos, 4);
  size_t hl = HDR_SHORT;
  if (l == LEN_ESCAPE) {
    if ((rc = ra_fill(c, HDR_LONG, deadline)))
      return rc;
    l = get_be(c->ra + c->ra_pos + 4, 8);
    hl = HDR_LONG;
  }
  if (l > (uint64_t)SSIZE_MAX || (c->limit && l > c->limit))
    return MPROC_ETOOBIG; /* the header stays held: every later recv says the same */
  c->ra_pos += hl;
  c->len = (size_t)l;
  c->have_len = true;
  c->got = 0;
  if (!c->sock && ra_held(c) > c->len)
    c->ra_end = c->ra_pos + c->len; /* a pipe frame's padding */
  ra_norm(c);
  return 0;
}

/* The message's bytes [*got, upto) into dst (upto <= len): the held ones first, then the
 * descriptor's. A socket's read that ends the message also asks for up to RA bytes past
 * it, into ra (the same syscall: never lost, taken by the next recv). */
static int rx_body(mproc_conn *c, char *dst, size_t upto, size_t *got, int64_t deadline) {
  *got += ra_take(c, dst ? dst + *got : NULL, upto - *got);
  if (*got == upto)
    return 0;
  if (!c->sock)
    return mproc__read_until(c->rfd, dst, upto, got, deadline);
  while (*got < upto) { /* ra is empty here: ra_take took all it held */
    size_t want = upto - *got < ((size_t)1 << 30) ? upto - *got : (size_t)1 << 30;
    struct iovec v[2] = {{.iov_base = dst + *got, .iov_len = want},
                         {.iov_base = c->ra, .iov_len = RA}};
    ssize_t n = mproc__readv_some(c->rfd, v, want == c->len - *got && !c->exact ? 2 : 1,
                                  deadline);
    if (n < 0)
      return (int)n;
    if ((size_t)n > want) {
      c->ra_end = (size_t)n - want;
      n = (ssize_t)want;
    }
    *got += (size_t)n;
  }
  return 0;
}

/* A message received (or dropped): the next one starts; held bytes stay. */
static void rx_done(mproc_conn *c) {
  c->have_len = c->lost = false;
  c->len = c->got = c->cap = 0;
  c->body = NULL;
}

/* The peer closed mid-message: what was read of it goes. */
static void rx_drop(mproc_conn *c) {
  free(c->body);
  rx_done(c);
  c->ra_pos = c->ra_end = 0;
}

/* The rest of a lost message, read and dropped. */
static int rx_skip(mproc_conn *c, int64_t deadline) {
  while (c->got < c->len) {
    if (!ra_held(c)) {
      int rc = ra_read(c, ra_ask(c, c->len - c->got), deadline);
      if (rc)
        return rc;
    }
    size_t held = ra_held(c), left = c->len - c->got, k = held < left ? held : left;
    c->ra_pos += k;
    c->got += k;
    ra_norm(c);
  }
  rx_done(c);
  return 0;
}

/* The header, then (once) a lost message's rest skipped and the next header. */
static int rx_start(mproc_conn *c, int64_t deadline) {
  int rc = rx_header(c, deadline);
  if (rc == 0 && c->lost && (rc = rx_skip(c, deadline)) == 0)
    rc = rx_header(c, deadline);
  return rc;
}

/* The body's bytes so far are in: room for more of it (twice as much, at most len). */
static int grow_body(mproc_conn *c) {
  size_t cap = c->len - c->cap < c->cap ? c->len : 2 * c->cap;
  char *b = realloc(c->body, cap);
  if (!b)
    return MPROC_ENOMEM; /* the bytes so far stay: the next recv goes on from there */
  /* The new pages in one call rather than a fault each as the bytes land (a VM's fault
   * costs more than the copy into the page). */
  mproc__prefault_write(b + c->cap, cap - c->cap);
  c->body = b;
  c->cap = cap;
  return 0;
}

/* A body for the message with room for at least have bytes. Kept NULL on failure: the next
 * recv tries again for the same message. */
static int body_alloc(mproc_conn *c, size_t have) {
  size_t cap = c->len < BODY_FIRST_MAX ? c->len : BODY_FIRST_MAX;
  if (cap < have)
    cap = have;
  if (!(c->body = malloc(cap ? cap : 1)))
    return MPROC_ENOMEM;
  c->cap = cap;
  return 0;
}

int mproc_conn_recv(mproc_conn *c, void **buf, size_t *len, double timeout) {
  if (!c || !buf || !len || c->rfd < 0)
    return MPROC_EINVAL;
  int64_t deadline = mproc__deadline(timeout);
  int rc = rx_start(c, deadline);
  if (rc == 0 && !c->body)
    rc = body_alloc(c, 0);
  while (rc == 0 && (rc = rx_body(c, c->body, c->cap, &c->got, deadline)) == 0 &&
         c->cap < c->len)
    rc = grow_body(c);
  if (rc == MPROC_EOF)
    rx_drop(c); /* a message cut short by the peer's close is dropped with the connection */
  if (rc)
    return mproc__take_rc(rc, timeout);
  *buf = c->body;
  *len = c->len;
  rx_done(c);
  return 0;
}

int mproc_conn_recv_bytes_into(mproc_conn *c, void *buf, size_t cap, size_t *len,
                               double timeout) {
  if (!c || !len || (!buf && cap) || c->rfd < 0)
    return MPROC_EINVAL;
  *len = 0;
  int64_t deadline = mproc__deadline(timeout);
  int rc = rx_start(c, deadline);
  if (rc == MPROC_EOF)
    rx_drop(c);
  if (rc)
    return mproc__take_rc(rc, timeout);
  if (c->len > cap) {
    *len = c->len; /* kept whole, for a bigger buffer or mproc_conn_recv */
    return MPROC_ETOOBIG;
  }
  /* What an earlier call kept of this message, then the rest straight into buf. */
  size_t got = c->got;
  if (c->body) {
    if (got)
      memcpy(buf, c->body, got);
    free(c->body);
    c->body = NULL;
    c->cap = 0;
  }
  rc = rx_body(c, buf, c->len, &got, deadline);
  if (rc == 0) {
    *len = c->len;
    rx_done(c);
    return 0;
  }
  if (rc == MPROC_EOF) {
    rx_drop(c);
    return rc;
  }
  /* Cut short (the deadline, a signal's error): the part read moves into c, so that the
   * next recv of either kind goes on with this message. No memory for it: the message is
   * lost, its rest skipped by the next recv. */
  c->got = got;
  if (got && body_alloc(c, got) == 0)
    memcpy(c->body, buf, got);
  else if (got) {
    c->lost = true;
    rc = MPROC_ENOMEM;
  }
  return mproc__take_rc(rc, timeout);
}

int mproc_conn_poll(mproc_conn *c, double timeout) {
  if (!c || c->rfd < 0)
    return MPROC_EINVAL;
  if (ra_held(c))
    return 1; /* read ahead already: the descriptor may have nothing more */
  /* Readable covers EOF too (POLLHUP): recv then reports it. */
  return mproc__poll_fd(c->rfd, POLLIN, mproc__deadline(timeout), NULL);
}

/* ---- wait ---- */

/* The descriptor to poll for one item: >= 0, -1 when none (see *ended / *scan), or an
 * error code below -1. *ended: ready already (an ended process, or a connection holding
 * bytes it read ahead). */
static int item_fd(const mproc_waitable *w, bool *ended, bool *scan) {
  *ended = *scan = false;
  if (!w->conn == !w->process)
    return MPROC_EINVAL;
  if (w->conn) {
    *ended = ra_held(w->conn) > 0; /* read ahead: ready whatever the descriptor says */
    return w->conn->rfd >= 0 ? w->conn->rfd : MPROC_EINVAL;
  }
  int fd = -1;
  int rc = mproc__process_wait_fd(w->process, &fd);
  if (rc < 0)
    return rc;
  *ended = rc == 1;
  *scan = rc == 0 && fd < 0;
  return rc == 1 ? -1 : fd;
}

/* Marks the ready items: those poll flagged, and ended processes without a pidfd. */
static int mark_ready(mproc_waitable *items, const struct pollfd *pf, size_t n) {
  int ready = 0;
  for (size_t i = 0; i < n; i++) {
    bool ended, scan;
    int fd = item_fd(&items[i], &ended, &scan);
    (void)fd;
    if (pf[i].revents || ended || (scan && mproc__process_ended(items[i].process)))
      items[i].ready = true;
    ready += items[i].ready;
  }
  return ready;
}

static int wait_loop(mproc_waitable *items, struct pollfd *pf, size_t n, bool scan,
                     int64_t deadline) {
  for (int64_t step = 1000000;; step = step < 10000000 ? step * 2 : step) {
    /* Processes without a pidfd are checked between short polls. */
    int64_t until = deadline;
    if (scan && mproc__remaining_ns(deadline) > step)
      until = mproc__now_ns() + step;
    int rc = mproc__poll(pf, n, until);
    if (rc == -EINTR)
      continue;
    if (rc < 0)
      return rc;
    int ready = mark_ready(items, pf, n);
    if (ready > 0 || mproc__remaining_ns(deadline) == 0)
      return ready;
  }
}

int mproc_wait(mproc_waitable *items, size_t n, double timeout) {
  if (!items || n == 0 || n > INT_MAX)
    return MPROC_EINVAL;
  int64_t deadline = mproc__deadline(timeout);
  struct pollfd stack[16];
  struct pollfd *pf = n <= 16 ? stack : calloc(n, sizeof *pf);
  if (!pf)
    return MPROC_ENOMEM;
  bool any_scan = false, any_ended = false;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    bool ended, scan;
    int fd = item_fd(&items[i], &ended, &scan);
    if (fd < -1)
      rc = fd;
    pf[i] = (struct pollfd){.fd = fd < 0 ? -1 : fd, .events = POLLIN};
    any_scan |= scan;
    any_ended |= ended;
  }
  if (rc == 0) {
    for (size_t i = 0; i < n; i++)
      items[i].ready = false;
    /* Something has ended already: just collect what else is ready now. */
    rc = wait_loop(items, pf, n, any_scan, any_ended ? 0 : deadline);
  }
  if (pf != stack)
    free(pf);
  return rc;
}

/* ---- crossing to a child that was not forked ---- */

/* The descriptors cross (SCM_RIGHTS), and the bytes a socket read ahead with them; a
 * message half-received here stays here. */
static int conn_export(const void *h, mproc__msg *m) {
  const mproc_conn *c = h;
  size_t held = c->have_len ? 0 : ra_held(c);
  mproc__msg_put_u64(m, (c->rfd >= 0) | (c->wfd >= 0 && !c->sock) << 1 | c->grown << 2 |
                           c->sock << 3);
  if (c->rfd >= 0)
    mproc__msg_put_fd(m, c->rfd);
  if (c->wfd >= 0 && !c->sock)
    mproc__msg_put_fd(m, c->wfd);
  mproc__msg_put_u64(m, held);
  if (held)
    mproc__msg_put(m, c->ra + c->ra_pos, held);
  return m->err;
}

static void *conn_import(mproc__rd *r) {
  uint64_t f = mproc__rd_u64(r);
  int rfd = f & 1 ? mproc__rd_fd(r) : -1;
  int wfd = f & 2 ? mproc__rd_fd(r) : -1;
  uint64_t held = mproc__rd_u64(r);
  const void *ra = held && held <= RA ? mproc__rd_bytes(r, (size_t)held) : NULL;
  if (r->bad || (held && !ra)) {
    mproc__close(rfd);
    mproc__close(wfd);
    return NULL;
  }
  mproc_conn *c = f & 8 ? mproc__conn_socket(rfd) : conn_make(rfd, wfd);
  if (c) {
    c->grown = f & 4;
    if (held)
      memcpy(c->ra, ra, (size_t)held);
    c->ra_end = (size_t)held;
  }
  return c;
}

__attribute__((constructor(MPROC__CTOR_KINDS))) static void conn_kind(void) {
  static const mproc__kind k = {CONN_MAGIC, conn_export, conn_import};
  mproc__kind_register(&k);
}
