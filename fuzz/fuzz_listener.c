/* libFuzzer target: the Listener/Client handshake reader facing any bytes a peer may send,
 * then the peer's half-close. The first byte picks the side (listener or client) and the
 * challenge form; the rest is what the peer sent. It must never crash, hang or read past
 * what came: every handshake ends in one of the documented codes, never a timeout (the
 * peer's EOF is there), and the descriptors are closed without a leak. */
#define _POSIX_C_SOURCE 200809L /* sigset_t in os.h, shutdown */
#include "ipc/listener.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* Below a Unix socket's default buffer: the write never blocks. */
#define MAX_INPUT 60000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size > MAX_INPUT)
    return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    abort();
  if (size > 1 && write(sv[1], data + 1, size - 1) != (ssize_t)(size - 1))
    abort();
  shutdown(sv[1], SHUT_WR); /* EOF after the input; our replies still fit in its buffer */
  static const char key[] = "fuzz key";
  bool legacy = data[0] & 1;
  int64_t deadline = mproc__deadline(5);
  int rc = data[0] & 2 ? mproc__handshake_client(sv[0], key, sizeof key - 1, legacy, deadline)
                       : mproc__handshake_serve(sv[0], key, sizeof key - 1, legacy, deadline);
  if (rc != 0 && rc != MPROC_EAUTH && rc != -EPROTO && rc != MPROC_ETOOBIG && rc != MPROC_EOF)
    abort();
  close(sv[0]);
  close(sv[1]);
  return 0;
}
