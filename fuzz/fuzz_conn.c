/* libFuzzer target: the Connection frame reader (mproc_conn_recv) facing any bytes a peer
 * may send, then the peer's close. It must never crash, hang or read past what came: every
 * call ends in a whole message no longer than the input, or MPROC_EOF / MPROC_ETOOBIG /
 * MPROC_ENOMEM, and the connection is freed without a leak (ASan's leak check). */
#include "mproc.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* Below a pipe's default buffer: the write never blocks. */
#define MAX_INPUT 60000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > MAX_INPUT)
    return 0;
  mproc_conn *a, *b;
  if (mproc_pipe(&a, &b, false) != 0)
    abort();
  if (size && write(mproc_conn_fileno(b), data, size) != (ssize_t)size)
    abort();
  mproc_conn_free(b); /* the peer goes: everything after this is in the pipe or EOF */
  size_t total = 0;
  for (int n = 0;; n++) {
    void *buf = NULL;
    size_t len = 0;
    int rc = mproc_conn_recv(a, &buf, &len, 0);
    if (rc == MPROC_EOF || rc == MPROC_ETOOBIG || rc == MPROC_ENOMEM)
      break;
    /* Every frame is at least 64 bytes: more messages than that, or more bytes than came,
     * or a timeout with the writer gone, is a reader that invents data or would hang. */
    if (rc != 0 || !buf || len > size || (size_t)n > size / 64)
      abort();
    total += len;
    if (total > size)
      abort();
    free(buf);
  }
  mproc_conn_free(a);
  return 0;
}
