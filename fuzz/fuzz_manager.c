/* libFuzzer target: the Manager server's request parser and dispatch facing any bytes a
 * client may send as requests. The input is cut into requests at 0xff 0xfe 0xfd marks and
 * each runs against one store, as the server would: it must never crash or read past the
 * request, a request that parses must get a reply that encodes and parses back, and the
 * store is freed without a leak (ASan's leak check). */
#define _POSIX_C_SOURCE 200809L /* sigset_t in os.h */
#include "manager/server.h"

#include <stdlib.h>
#include <string.h>

/* Blocking requests never wait here: each times out at once. */
static int no_wait(void *ctx, int64_t deadline) {
  (void)ctx, (void)deadline;
  return -ETIMEDOUT;
}
static void no_change(void *ctx) { (void)ctx; }
static const mproc__mgr_waiter stub = {.who = 1, .wait = no_wait, .changed = no_change};

static void one(mproc__store *s, const uint8_t *p, size_t n) {
  /* A copy of exactly n bytes: ASan sees any read past the request. */
  uint8_t *req = malloc(n ? n : 1);
  if (!req)
    abort();
  memcpy(req, p, n);
  mproc__mgr_msg q, r;
  if (mproc__mgr_decode(req, n, &q) == 0) {
    mproc__blob scratch = {0, NULL};
    mproc__mgr_handle(s, &stub, &q, &r, &scratch);
    size_t len = mproc__mgr_size(&r);
    uint8_t *out = malloc(len);
    if (!out)
      abort();
    mproc__mgr_encode(&r, out);
    mproc__mgr_msg back;
    if (mproc__mgr_decode(out, len, &back) != 0 || back.id != r.id || back.nf != r.nf)
      abort();
    free(out);
    free(scratch.p);
  }
  free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mproc__store *s = mproc__store_new();
  if (!s)
    abort();
  size_t start = 0;
  for (size_t i = 0; i + 3 <= size; i++)
    if (data[i] == 0xff && data[i + 1] == 0xfe && data[i + 2] == 0xfd) {
      one(s, data + start, i - start);
      start = i + 3;
      i += 2;
    }
  one(s, data + start, size - start);
  mproc__store_free(s);
  return 0;
}
