/* libFuzzer target: the Connection frame reader facing any bytes a peer may send, then the
 * peer's close, four ways: a pipe (padded frames) and a stream socket (Python's framing,
 * read ahead), each read with mproc_conn_recv and with mproc_conn_recv_bytes_into into a
 * buffer whose size varies from call to call (a message too long for it is then taken with
 * mproc_conn_recv). It must never crash, hang or read past what came: every call ends in a
 * whole message no longer than the input, or MPROC_EOF / MPROC_ETOOBIG / MPROC_ENOMEM, and
 * the connection is freed without a leak (ASan's leak check). */
#define _POSIX_C_SOURCE 200809L /* sigset_t in os.h */
#include "ipc/conn.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* Below a pipe's and a Unix socket's default buffer: the write never blocks. */
#define MAX_INPUT 60000

/* The receiving end of a pipe or socket holding data, its writer gone. */
static mproc_conn *loaded(bool sock, const uint8_t *data, size_t size) {
  mproc_conn *a, *b;
  int fd;
  if (sock) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || !(a = mproc__conn_socket(sv[0])))
      abort();
    fd = sv[1];
  } else {
    if (mproc_pipe(&a, &b, false) != 0)
      abort();
    fd = mproc_conn_fileno(b);
  }
  if (size && write(fd, data, size) != (ssize_t)size)
    abort();
  if (sock)
    close(fd);
  else
    mproc_conn_free(b); /* the peer goes: everything after this is in the pipe or EOF */
  return a;
}

static void drain(bool sock, bool into, const uint8_t *data, size_t size) {
  mproc_conn *a = loaded(sock, data, size);
  /* Every pipe frame is at least 64 bytes, a socket's at least 4. */
  size_t most = size / (sock ? 4 : 64), total = 0;
  static unsigned char buf[MAX_INPUT];
  for (size_t n = 0;; n++) {
    void *m = NULL;
    size_t len = 0, cap = size ? (data[n % size] * 37u + n) % (size + 2) : 0;
    int rc = into ? mproc_conn_recv_bytes_into(a, cap ? buf : NULL, cap, &len, 0)
                  : mproc_conn_recv(a, &m, &len, 0);
    if (into && rc == MPROC_ETOOBIG && len > cap) {
      /* Too long for the buffer (its header says; the body may never come): kept, so
       * recv returns exactly it, or EOF for a body cut short. */
      size_t want = len;
      rc = mproc_conn_recv(a, &m, &len, 0);
      if (rc == 0 && len != want)
        abort();
    }
    if (rc == MPROC_EOF || rc == MPROC_ETOOBIG || rc == MPROC_ENOMEM)
      break;
    /* More messages than frames fit, more bytes than came, or a timeout with the writer
     * gone: a reader that invents data or would hang. */
    if (rc != 0 || (!into && !m) || len > size || n > most)
      abort();
    total += len;
    if (total > size)
      abort();
    free(m);
  }
  mproc_conn_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > MAX_INPUT)
    return 0;
  for (int k = 0; k < 4; k++)
    drain(k & 1, k & 2, data, size);
  return 0;
}
