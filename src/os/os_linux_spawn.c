/*
 * Linux implementation of os.h's process birth without fork (exec of the program) and of
 * the Unix-socket calls that carry descriptors to such a child. Uses os_linux.c, never the
 * other way.
 */
#define _GNU_SOURCE
#include "os/os.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

int mproc__socketpair(int fds[2], bool seqpacket) {
  int type = (seqpacket ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC;
  if (mproc__inject(MPROC__INJ_SOCKET, EMFILE))
    return -EMFILE;
  return socketpair(AF_UNIX, type, 0, fds) < 0 ? -errno : 0;
}

int mproc__send_fds(int sock, const void *buf, size_t len, const int *fds, size_t nfds) {
  if (nfds > MPROC__FDS_MAX || len == 0)
    return -EINVAL;
  union {
    char buf[CMSG_SPACE(sizeof(int) * MPROC__FDS_MAX)];
    struct cmsghdr align;
  } u;
  struct iovec iov = {(void *)buf, len};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    m.msg_control = u.buf;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  /* MSG_NOSIGNAL: a dead peer is -EPIPE, never SIGPIPE in the caller. */
  while ((n = sendmsg(sock, &m, MSG_NOSIGNAL)) < 0)
    if (errno != EINTR)
      return -errno;
  /* The descriptors went with the first byte; a stream socket may take less than len. */
  if ((size_t)n < len)
    return mproc__write_sock(sock, (const char *)buf + n, len - (size_t)n);
  return 0;
}

int mproc__write_sock(int sock, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(sock, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Closes every descriptor of a control message: the ones a caller could not take. */
static void close_cmsg_fds(struct msghdr *m) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      close(fd);
    }
  }
}

ssize_t mproc__recv_fds(int sock, void *buf, size_t len, int *fds, size_t *nfds) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * MPROC__FDS_MAX)];
    struct cmsghdr align;
  } u;
  struct iovec iov = {buf, len};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                     .msg_controllen = sizeof u.buf};
  ssize_t n;
  while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0)
    if (errno != EINTR)
      return -errno;
  size_t got = 0, want = *nfds;
  if (m.msg_flags & MSG_CTRUNC) {
    close_cmsg_fds(&m);
    *nfds = 0;
    return -EMSGSIZE;
  }
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
    got = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    if (got > want) {
      close_cmsg_fds(&m);
      *nfds = 0;
      return -EMSGSIZE;
    }
    memcpy(fds, CMSG_DATA(c), got * sizeof(int));
  }
  *nfds = got;
  return n;
}

int mproc__spawn_exe(const char *path, char *const argv[], char *const envp[], int keep_fd,
                     pid_t *pid) {
  posix_spawn_file_actions_t fa;
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc)
    return -rc;
  /* dup2 onto itself clears close-on-exec in the child only (POSIX 2017; glibc 2.29), so
   * no other thread's exec can inherit the descriptor meanwhile. */
  rc = posix_spawn_file_actions_adddup2(&fa, keep_fd, keep_fd);
  if (rc == 0)
    rc = mproc__inject(MPROC__INJ_FORK, EAGAIN) ? EAGAIN : posix_spawn(pid, path, &fa, NULL, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  return -rc;
}

int mproc__pidfd_kill(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
  return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
#else
  (void)pidfd;
  (void)sig;
  return -ENOSYS;
#endif
}

/* ---- functions as (object file, offset) ---- */

typedef struct locate {
  uintptr_t addr;
  const char *name; /* found: the object's name ("" for the main program) */
  uintptr_t base, lo, hi;
} locate;

/* Whether addr lies in one of the object's loaded segments; if so, the object's span. */
static int locate_cb(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  locate *l = data;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  bool in = false;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD)
      continue;
    uintptr_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
    in = in || (l->addr >= a && l->addr < b);
    lo = a < lo ? a : lo;
    hi = b > hi ? b : hi;
  }
  if (!in)
    return 0;
  l->name = info->dlpi_name ? info->dlpi_name : "";
  l->base = info->dlpi_addr;
  l->lo = lo;
  l->hi = hi;
  return 1;
}

int mproc__fn_object(const void *fn, char *path, size_t cap, uintptr_t span[3]) {
  locate l = {.addr = (uintptr_t)fn};
  if (!fn || dl_iterate_phdr(locate_cb, &l) == 0)
    return -ENOENT;
  /* The vDSO has no file to open in another process. */
  if (strncmp(l.name, "linux-vdso", 10) == 0 || strncmp(l.name, "linux-gate", 10) == 0)
    return -ENOENT;
  if (strlen(l.name) >= cap)
    return -ENAMETOOLONG;
  strcpy(path, l.name);
  span[0] = l.base;
  span[1] = l.lo;
  span[2] = l.hi;
  return 0;
}

int mproc__fn_locate(const void *fn, char *path, size_t cap, uint64_t *off) {
  uintptr_t span[3];
  int rc = mproc__fn_object(fn, path, cap, span);
  if (rc == 0)
    *off = (uintptr_t)fn - span[0];
  return rc;
}

typedef struct find {
  const char *name;
  bool found;
  uintptr_t base;
} find;

static int find_cb(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  find *f = data;
  const char *n = info->dlpi_name ? info->dlpi_name : "";
  /* The main program comes first, with an empty name. */
  if (strcmp(n, f->name) == 0) {
    f->found = true;
    f->base = info->dlpi_addr;
    return 1;
  }
  return 0;
}

int mproc__fn_resolve(const char *path, uint64_t off, void **fn) {
  find f = {.name = path};
  dl_iterate_phdr(find_cb, &f);
  if (!f.found && path[0]) {
    /* Not loaded here: the parent dlopened it. Open the same file; the handle is never
     * closed (the function must stay valid). */
    void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!h)
      return -ENOENT;
    dl_iterate_phdr(find_cb, &f);
  }
  if (!f.found)
    return -ENOENT;
  *fn = (void *)(f.base + (uintptr_t)off);
  return 0;
}
