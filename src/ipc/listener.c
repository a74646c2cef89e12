/*
 * Listener and Client: Connections over Unix and TCP sockets, with the mutual HMAC
 * challenge of Python's multiprocessing.connection, so that either end may be Python.
 *
 * The handshake (Python's deliver_challenge / answer_challenge): the listener sends
 * "#CHALLENGE#" + a random message, the client answers with the HMAC of that message under
 * the shared key, the listener replies "#WELCOME#" or "#FAILURE#"; then the same the other
 * way round, so each side knows the other holds the key before any payload moves. Python
 * 3.11 and older send 20 random bytes and expect a raw HMAC-MD5; 3.12 sends "{sha256}" + 40
 * bytes and expects "{sha256}" + HMAC-SHA256 of the whole message, prefix included, and
 * still accepts a raw HMAC-MD5 from an old peer (which takes the whole prefixed message as
 * its challenge). Which digest an answer uses is read from the message itself: 20 or 16
 * bytes long is the legacy form, else a "{name}" prefix from Python's allowed list.
 *
 * Every handshake message is at most 256 bytes (Python's recv_bytes(256)); a longer length
 * drops the peer before reading on. The answer is compared in constant time.
 */
#define _GNU_SOURCE
#include "ipc/listener.h"
#include "ipc/conn.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#define CHALLENGE "#CHALLENGE#"
#define WELCOME "#WELCOME#"
#define FAILURE "#FAILURE#"
#define HS_MAX 256         /* the longest handshake message (Python's limit) */
#define LEGACY_LEN 20      /* Python <= 3.11's challenge; also its MD5-only minimum */
#define MESSAGE_LEN 40     /* 3.12's random part */
#define MD5_LEN 16
#define KEY_MAX (1 << 20)  /* past this an authkey is a mistake, not a key */
#define HS_DEFAULT 10.0    /* seconds a client gets for its handshake */

/* ---- handshake messages: Python's framing, bounded ---- */

static int hs_send(int fd, const void *msg, size_t len) {
  unsigned char f[4 + HS_MAX];
  for (int i = 0; i < 4; i++)
    f[i] = (unsigned char)(len >> (24 - 8 * i));
  memcpy(f + 4, msg, len);
  return mproc__write_sock(fd, f, 4 + len);
}

static int hs_send_str(int fd, const char *s) { return hs_send(fd, s, strlen(s)); }

/* One message of at most HS_MAX bytes into buf: 0 and *len, or the reason. */
static int hs_recv(int fd, unsigned char buf[HS_MAX], size_t *len, int64_t deadline) {
  unsigned char h[4];
  size_t got = 0;
  int rc = mproc__read_until(fd, h, 4, &got, deadline);
  if (rc)
    return rc;
  uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
  if (n > HS_MAX) /* the long form's 0xffffffff included: nothing to read on for */
    return MPROC_ETOOBIG;
  got = 0;
  if ((rc = mproc__read_until(fd, buf, n, &got, deadline)))
    return rc;
  *len = n;
  return 0;
}

/* ---- digests ---- */

static const EVP_MD *digest_named(const unsigned char *name, size_t n) {
  static const struct {
    const char *name;
    const EVP_MD *(*md)(void);
  } allowed[] = {{"md5", EVP_md5},       {"sha256", EVP_sha256},     {"sha384", EVP_sha384},
                 {"sha3_256", EVP_sha3_256}, {"sha3_384", EVP_sha3_384}};
  for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
    if (strlen(allowed[i].name) == n && memcmp(allowed[i].name, name, n) == 0)
      return allowed[i].md();
  return NULL;
}

/* Python's _get_digest_name_and_payload: a message 20 or 16 bytes long is legacy (*md NULL,
 * meaning MD5, *name_len 0); else "{name}" with an allowed name within its first 20 bytes.
 * -EPROTO for neither. *payload: where the rest starts. */
static int digest_of(const unsigned char *m, size_t len, const EVP_MD **md, size_t *name_len,
                     size_t *payload) {
  *md = NULL;
  *name_len = *payload = 0;
  if (len == LEGACY_LEN || len == MD5_LEN)
    return 0;
  if (len == 0 || m[0] != '{')
    return -EPROTO;
  const unsigned char *close = memchr(m + 1, '}', (len < 20 ? len : 20) - 1);
  if (!close || !(*md = digest_named(m + 1, (size_t)(close - m) - 1)))
    return -EPROTO;
  *name_len = (size_t)(close - m) - 1;
  *payload = (size_t)(close - m) + 1;
  return 0;
}

static int mac(const EVP_MD *md, const void *key, size_t klen, const unsigned char *m, size_t n,
               unsigned char *out, unsigned *out_len) {
  return HMAC(md ? md : EVP_md5(), key, (int)klen, m, n, out, out_len) ? 0 : MPROC_ENOMEM;
}

/* ---- the two halves ---- */

/* Sends a challenge, checks the answer, says WELCOME or FAILURE. */
static int deliver(int fd, const void *key, size_t klen, bool legacy, int64_t deadline) {
  unsigned char msg[sizeof CHALLENGE - 1 + 8 + MESSAGE_LEN];
  size_t hl = sizeof CHALLENGE - 1, ml;
  memcpy(msg, CHALLENGE, hl);
  if (legacy) {
    ml = LEGACY_LEN;
  } else {
    memcpy(msg + hl, "{sha256}", 8);
    ml = 8 + MESSAGE_LEN;
  }
  int rc = mproc__random_bytes(msg + hl + ml - (legacy ? LEGACY_LEN : MESSAGE_LEN),
                               legacy ? LEGACY_LEN : MESSAGE_LEN);
  if (rc || (rc = hs_send(fd, msg, hl + ml)))
    return rc;
  unsigned char resp[HS_MAX], want[EVP_MAX_MD_SIZE];
  size_t rlen, name_len, payload;
  unsigned wlen;
  const EVP_MD *md;
  if ((rc = hs_recv(fd, resp, &rlen, deadline)))
    return rc;
  bool ok = digest_of(resp, rlen, &md, &name_len, &payload) == 0 &&
            mac(md, key, klen, msg + hl, ml, want, &wlen) == 0 && rlen - payload == wlen &&
            CRYPTO_memcmp(want, resp + payload, wlen) == 0;
  if ((rc = hs_send_str(fd, ok ? WELCOME : FAILURE)))
    return rc;
  return ok ? 0 : MPROC_EAUTH;
}

/* Answers the peer's challenge and reads its verdict. */
static int answer(int fd, const void *key, size_t klen, int64_t deadline) {
  unsigned char msg[HS_MAX], resp[2 + 8 + EVP_MAX_MD_SIZE];
  size_t len, hl = sizeof CHALLENGE - 1, name_len, payload;
  const EVP_MD *md;
  int rc = hs_recv(fd, msg, &len, deadline);
  if (rc)
    return rc;
  if (len < hl + LEGACY_LEN || memcmp(msg, CHALLENGE, hl) != 0 ||
      digest_of(msg + hl, len - hl, &md, &name_len, &payload) < 0)
    return -EPROTO;
  /* The legacy form answers with the raw MAC; the new one names its digest first. */
  size_t pre = md ? name_len + 2 : 0;
  memcpy(resp, msg + hl, pre);
  unsigned wlen;
  if ((rc = mac(md, key, klen, msg + hl, len - hl, resp + pre, &wlen)) ||
      (rc = hs_send(fd, resp, pre + wlen)) || (rc = hs_recv(fd, msg, &len, deadline)))
    return rc;
  if (len == sizeof WELCOME - 1 && memcmp(msg, WELCOME, len) == 0)
    return 0;
  return len == sizeof FAILURE - 1 && memcmp(msg, FAILURE, len) == 0 ? MPROC_EAUTH : -EPROTO;
}

int mproc__handshake_serve(int fd, const void *key, size_t klen, bool legacy, int64_t deadline) {
  int rc = deliver(fd, key, klen, legacy, deadline);
  return rc ? rc : answer(fd, key, klen, deadline);
}

int mproc__handshake_client(int fd, const void *key, size_t klen, bool legacy, int64_t deadline) {
  int rc = answer(fd, key, klen, deadline);
  return rc ? rc : deliver(fd, key, klen, legacy, deadline);
}

/* ---- addresses ---- */

#define ADDR_MAX 300

/* Parses "unix:PATH", "unix:@NAME" or "tcp:HOST:PORT" ("tcp:[V6]:PORT"), with an optional
 * "?legacy" suffix. */
static int parse_address(const char *address, mproc__sockaddr *a, bool *legacy) {
  char buf[ADDR_MAX];
  size_t n = strlen(address);
  if (n >= sizeof buf)
    return MPROC_EINVAL;
  memcpy(buf, address, n + 1);
  *legacy = n >= 7 && strcmp(buf + n - 7, "?legacy") == 0;
  if (*legacy)
    buf[n - 7] = '\0';
  if (strncmp(buf, "unix:", 5) == 0) {
    bool abstract = buf[5] == '@';
    return mproc__addr_unix(a, buf + 5 + abstract, abstract) ? MPROC_EINVAL : 0;
  }
  if (strncmp(buf, "tcp:", 4) != 0)
    return MPROC_EINVAL;
  char *host = buf + 4, *colon = strrchr(host, ':');
  if (!colon || colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
      strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)
    return MPROC_EINVAL;
  *colon = '\0';
  if (host[0] == '[') {
    size_t hl = strlen(host);
    if (hl < 3 || host[hl - 1] != ']')
      return MPROC_EINVAL;
    host[hl - 1] = '\0';
    host++;
  }
  if (!*host)
    return MPROC_EINVAL;
  return mproc__addr_tcp(a, host, colon + 1);
}

static int copy_key(const void *key, size_t klen, unsigned char **out) {
  *out = NULL;
  if (!key != !klen || klen > KEY_MAX)
    return MPROC_EINVAL;
  if (key && !(*out = malloc(klen)))
    return MPROC_ENOMEM;
  if (key)
    memcpy(*out, key, klen);
  return 0;
}

/* ---- Listener ---- */

struct mproc_listener {
  int fd;
  bool legacy;
  double hs_timeout;
  unsigned char *key;
  size_t klen;
  pid_t owner;          /* only the process that bound it removes its file */
  char path[ADDR_MAX];  /* the socket file to remove at free, "" for none */
  char dir[ADDR_MAX];   /* the private directory to remove at free, "" for none */
  char address[ADDR_MAX + 8];
};

void mproc_listener_free(mproc_listener *l) {
  if (!l)
    return;
  mproc__close(l->fd);
  if (l->owner == mproc__getpid()) {
    if (l->path[0])
      (void)mproc__unlink(l->path);
    if (l->dir[0])
      (void)mproc__rmdir(l->dir);
  }
  if (l->key)
    OPENSSL_cleanse(l->key, l->klen);
  free(l->key);
  free(l);
}

/* A fresh socket file in a 0700 directory of its own: Python's default address. */
static int private_address(mproc_listener *l, mproc__sockaddr *a) {
  int rc = mproc__private_dir(l->dir, sizeof l->dir);
  if (rc)
    return rc;
  size_t n = strlen(l->dir);
  if (n + sizeof "/listener" > sizeof l->path)
    return -ENAMETOOLONG;
  memcpy(l->path, l->dir, n);
  memcpy(l->path + n, "/listener", sizeof "/listener");
  return mproc__addr_unix(a, l->path, false);
}

static int listener_bind(mproc_listener *l, const char *address, int backlog) {
  mproc__sockaddr a;
  int rc = address ? parse_address(address, &a, &l->legacy) : private_address(l, &a);
  if (rc)
    return rc;
  if (!l->key && !mproc__addr_is_unix(&a))
    return MPROC_EINVAL; /* a TCP port open to anyone who finds it: never without a key */
  bool file = address && mproc__addr_is_unix(&a) && address[5] != '@';
  if ((rc = mproc__sock_listen(&a, backlog)) < 0)
    return rc;
  l->fd = rc;
  if (file) {
    /* From here on the file is ours to remove. */
    const char *p = address + 5;
    size_t n = strcspn(p, "?");
    memcpy(l->path, p, n);
    l->path[n] = '\0';
  }
  if ((rc = mproc__addr_format(&a, l->address, sizeof l->address)))
    return rc;
  if (l->legacy)
    strcat(l->address, "?legacy");
  return 0;
}

int mproc_listener_new(mproc_listener **lp, const char *address, const void *authkey,
                       size_t authkey_len, int backlog) {
  if (!lp)
    return MPROC_EINVAL;
  *lp = NULL;
  mproc_listener *l = calloc(1, sizeof *l);
  if (!l)
    return MPROC_ENOMEM;
  l->fd = -1;
  l->owner = mproc__getpid();
  l->hs_timeout = HS_DEFAULT;
  int rc = copy_key(authkey, authkey_len, &l->key);
  l->klen = authkey_len;
  if (rc == 0)
    rc = listener_bind(l, address, backlog > 0 ? backlog : 128);
  if (rc) {
    mproc_listener_free(l);
    return rc;
  }
  *lp = l;
  return 0;
}

int mproc_listener_set_handshake_timeout(mproc_listener *l, double timeout) {
  if (!l || timeout != timeout)
    return MPROC_EINVAL;
  l->hs_timeout = timeout;
  return 0;
}

const char *mproc_listener_address(const mproc_listener *l) { return l ? l->address : NULL; }

int mproc_listener_fileno(const mproc_listener *l) { return l ? l->fd : MPROC_EINVAL; }

/* The next waiting connection before the deadline: its descriptor or a code. */
static int take_one(mproc_listener *l, int64_t deadline) {
  for (;;) {
    int rc = mproc__poll_fd(l->fd, POLLIN, deadline, NULL);
    if (rc <= 0)
      return rc == 0 ? MPROC_ETIMEDOUT : rc;
    /* -EAGAIN: the client went away between poll and accept; wait for the next. */
    if ((rc = mproc__sock_accept(l->fd)) != -EAGAIN || mproc__remaining_ns(deadline) == 0)
      return rc;
  }
}

int mproc__listener_take(mproc_listener *l, int64_t deadline) {
  return take_one(l, deadline);
}

int mproc__listener_admit(mproc_listener *l, int fd, mproc_conn **c) {
  int rc = l->key ? mproc__handshake_serve(fd, l->key, l->klen, l->legacy,
                                           mproc__deadline(l->hs_timeout))
                  : 0;
  if (rc) {
    mproc__close(fd);
    return rc;
  }
  return (*c = mproc__conn_socket(fd)) ? 0 : MPROC_ENOMEM;
}

int mproc_listener_accept(mproc_listener *l, mproc_conn **c, double timeout) {
  if (!l || !c || timeout != timeout)
    return MPROC_EINVAL;
  int fd = take_one(l, mproc__deadline(timeout));
  if (fd < 0)
    return mproc__take_rc(fd == -EAGAIN ? MPROC_ETIMEDOUT : fd, timeout);
  return mproc__listener_admit(l, fd, c);
}

/* ---- Client ---- */

int mproc_client(mproc_conn **c, const char *address, const void *authkey, size_t authkey_len,
                 double timeout) {
  if (!c || !address || !authkey != !authkey_len || authkey_len > KEY_MAX || timeout != timeout)
    return MPROC_EINVAL;
  mproc__sockaddr a;
  bool legacy;
  int rc = parse_address(address, &a, &legacy);
  if (rc)
    return rc;
  if (!authkey && !mproc__addr_is_unix(&a))
    return MPROC_EINVAL;
  int64_t deadline = mproc__deadline(timeout);
  int fd = mproc__sock_connect(&a, deadline);
  if (fd < 0)
    return fd;
  if (authkey && (rc = mproc__handshake_client(fd, authkey, authkey_len, legacy, deadline))) {
    mproc__close(fd);
    return rc;
  }
  return (*c = mproc__conn_socket(fd)) ? 0 : MPROC_ENOMEM;
}
