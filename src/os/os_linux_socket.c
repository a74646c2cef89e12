/*
 * Linux implementation of os.h's listening and connecting sockets (Unix path, abstract
 * Unix, TCP over IPv4 and IPv6) for Listener/Client. Uses os_linux.c, never the other way.
 */
#define _GNU_SOURCE
#include "os/os.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

_Static_assert(sizeof(struct sockaddr_storage) <= sizeof(((mproc__sockaddr *)0)->raw),
               "mproc__sockaddr holds any address");

int mproc__addr_unix(mproc__sockaddr *a, const char *name, bool abstract) {
  struct sockaddr_un *u = (struct sockaddr_un *)(void *)a->raw;
  size_t n = strlen(name);
  /* A path needs room for its terminating NUL; an abstract name starts after a NUL byte. */
  if (n == 0 || n + 1 > sizeof u->sun_path)
    return -ENAMETOOLONG;
  memset(a, 0, sizeof *a);
  u->sun_family = AF_UNIX;
  memcpy(u->sun_path + abstract, name, n);
  a->len = (uint32_t)(offsetof(struct sockaddr_un, sun_path) + abstract + n + !abstract);
  return 0;
}

int mproc__addr_tcp(mproc__sockaddr *a, const char *host, const char *port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV}, *res = NULL;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0)
    return rc == EAI_MEMORY ? -ENOMEM : rc == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
  memset(a, 0, sizeof *a);
  memcpy(a->raw, res->ai_addr, res->ai_addrlen);
  a->len = (uint32_t)res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

bool mproc__addr_is_unix(const mproc__sockaddr *a) {
  return ((const struct sockaddr *)(const void *)a->raw)->sa_family == AF_UNIX;
}

int mproc__addr_format(const mproc__sockaddr *a, char *buf, size_t cap) {
  const struct sockaddr *s = (const void *)a->raw;
  char host[INET6_ADDRSTRLEN];
  int n;
  if (s->sa_family == AF_UNIX) {
    const struct sockaddr_un *u = (const void *)a->raw;
    size_t len = a->len - offsetof(struct sockaddr_un, sun_path);
    bool abstract = len > 0 && u->sun_path[0] == '\0';
    if (!abstract)
      len = strnlen(u->sun_path, len);
    n = snprintf(buf, cap, "unix:%s%.*s", abstract ? "@" : "", (int)(len - abstract),
                 u->sun_path + abstract);
  } else if (s->sa_family == AF_INET) {
    const struct sockaddr_in *i = (const void *)a->raw;
    inet_ntop(AF_INET, &i->sin_addr, host, sizeof host);
    n = snprintf(buf, cap, "tcp:%s:%u", host, ntohs(i->sin_port));
  } else if (s->sa_family == AF_INET6) {
    const struct sockaddr_in6 *i = (const void *)a->raw;
    inet_ntop(AF_INET6, &i->sin6_addr, host, sizeof host);
    n = snprintf(buf, cap, "tcp:[%s]:%u", host, ntohs(i->sin6_port));
  } else {
    return -EAFNOSUPPORT;
  }
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Small messages go out at once: a request/response protocol must not wait on Nagle. */
static void tcp_nodelay(int fd, int family) {
  int one = 1;
  if (family != AF_UNIX)
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int mproc__sock_listen(mproc__sockaddr *a, int backlog) {
  int family = ((struct sockaddr *)(void *)a->raw)->sa_family;
  /* Non-blocking: a client that vanished between poll and accept must not block accept. */
  int fd = mproc__inject(MPROC__INJ_SOCKET, EMFILE) ? -1
                                                 : socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  /* A restarted server can bind its port again while old connections sit in TIME_WAIT. */
  if (family != AF_UNIX)
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = sizeof a->raw;
  if (bind(fd, (struct sockaddr *)(void *)a->raw, a->len) < 0 || listen(fd, backlog) < 0 ||
      getsockname(fd, (struct sockaddr *)(void *)a->raw, &len) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  a->len = (uint32_t)len; /* the bound address: the port the kernel chose */
  return fd;
}

int mproc__sock_accept(int lfd) {
  for (;;) {
    int fd = mproc__inject(MPROC__INJ_SOCKET, EMFILE) ? -1 : accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
      struct sockaddr_storage s;
      socklen_t len = sizeof s;
      if (getsockname(fd, (struct sockaddr *)&s, &len) == 0)
        tcp_nodelay(fd, s.ss_family);
      return fd;
    }
    /* A connection reset before it was taken is the client's loss, not the listener's. */
    if (errno != EINTR && errno != ECONNABORTED)
      return -errno;
  }
}

/* Waits for a non-blocking connect to finish: 0, or -errno (-ETIMEDOUT at the deadline). */
static int connect_wait(int fd, int64_t deadline) {
  int rc = mproc__poll_fd(fd, POLLOUT, deadline, NULL);
  if (rc < 0)
    return rc;
  if (rc == 0)
    return -ETIMEDOUT;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    return -errno;
  return -err;
}

int mproc__sock_connect(const mproc__sockaddr *a, int64_t deadline) {
  int family = ((const struct sockaddr *)(const void *)a->raw)->sa_family;
  int fd = mproc__inject(MPROC__INJ_SOCKET, EMFILE) ? -1
                                                 : socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  int rc = 0;
  /* Non-blocking so that the deadline holds; an EINTR'd connect goes on in the kernel, and
   * waiting for writability finishes it just as EINPROGRESS does. */
  if (connect(fd, (const struct sockaddr *)(const void *)a->raw, a->len) < 0) {
    rc = errno == EINPROGRESS || errno == EINTR ? connect_wait(fd, deadline) : -errno;
    /* A full Unix listen queue says EAGAIN: poll says it was refused; keep the cause. */
  }
  int fl = rc == 0 ? fcntl(fd, F_GETFL) : -1;
  if (rc == 0 && (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0))
    rc = -errno;
  if (rc < 0) {
    close(fd);
    return rc;
  }
  tcp_nodelay(fd, family);
  return fd;
}

int mproc__sendv_sock(int sock, struct iovec *iov, int iovcnt) {
  struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
  while (m.msg_iovlen > 0) {
    if (m.msg_iov->iov_len == 0) {
      m.msg_iov++, m.msg_iovlen--;
      continue;
    }
    ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL); /* a dead peer: -EPIPE, never SIGPIPE */
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    size_t left = (size_t)n;
    while (m.msg_iovlen > 0 && left >= m.msg_iov->iov_len) {
      left -= m.msg_iov->iov_len;
      m.msg_iov++, m.msg_iovlen--;
    }
    if (m.msg_iovlen > 0) {
      m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + left;
      m.msg_iov->iov_len -= left;
    }
  }
  return 0;
}

int mproc__private_dir(char *buf, size_t cap) {
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp)
    tmp = "/tmp";
  int n = snprintf(buf, cap, "%s/mproc-XXXXXX", tmp);
  if (n < 0 || (size_t)n >= cap)
    return -ENAMETOOLONG;
  return mkdtemp(buf) ? 0 : -errno; /* mode 0700: only this user reaches inside */
}

int mproc__unlink(const char *path) { return unlink(path) < 0 ? -errno : 0; }

int mproc__rmdir(const char *path) { return rmdir(path) < 0 ? -errno : 0; }

/* ---- the Manager server's threads ---- */

int mproc__thread_start(pthread_t *t, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = mproc__inject(MPROC__INJ_FORK, EAGAIN) ? EAGAIN : pthread_create(t, NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return -rc;
}

void mproc__thread_join(pthread_t t) { (void)pthread_join(t, NULL); }

void mproc__sock_shutdown(int fd) { (void)shutdown(fd, SHUT_RDWR); }
