/* libFuzzer target: the ring's reader facing a shared header and records a peer scribbled
 * over. The input puts a few messages (sizes from the input), then overwrites header fields
 * and the word at the reader's position with values from the input; every read after that
 * must end in a message that lies inside the ring's area, or -EPROTO / empty, without a
 * crash, a read outside the mapping (ASan, SIGBUS) or a loop. Not inside what was put: a
 * scribbled cap is a peer's growth as far as the reader can tell, and the bytes it then
 * reads (zeros, or old records) are garbage but the ring's own. */
#define _GNU_SOURCE
#include "core/internal.h"
#include "core/ring.h"
#include "testing.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t take_u64(const uint8_t **d, size_t *n) {
  uint64_t v = 0;
  size_t k = *n < 8 ? *n : 8;
  memcpy(&v, *d, k);
  *d += k;
  *n -= k;
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char payload[8192];
  mproc__ring *r = NULL;
  mproc__ring_opts o = {.initial_bytes = 4096};
  if (mproc__ring_new(&r, &o) != 0)
    abort();
  /* Up to 8 messages: one byte each for the size (in 32-byte steps, so some wrap or grow). */
  unsigned nmsg = size ? data[0] % 9 : 0;
  data++, size -= size ? 1 : 0;
  for (unsigned i = 0; i < nmsg && size; i++) {
    size_t len = (size_t)data[0] * 32;
    data++, size--;
    (void)mproc__ring_put(r, payload, len, 0);
  }
  /* Then scribbles: a field byte and an 8-byte value each. */
  while (size >= 2) {
    unsigned field = data[0];
    data++, size--;
    mproc__ring_test_scribble(r, field, take_u64(&data, &size));
  }
  for (int i = 0; i < 64; i++) {
    void *buf = NULL;
    size_t len = 0;
    int rc = mproc__ring_get(r, &buf, &len, 0);
    if (rc == -EPROTO || rc == -ETIMEDOUT || rc == MPROC_ECLOSED)
      break;
    if (rc != 0 || len > mproc__ring_test_area(r))
      abort();
    free(buf);
  }
  mproc__ring_free(r);
  return 0;
}
