/* The Manager's wire format (proto.h). */
#define _GNU_SOURCE
#include "manager/proto.h"

#include <string.h>

static void put_le(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

void mproc__mgr_put_i64(unsigned char b[8], int64_t v) { put_le(b, (uint64_t)v, 8); }

int64_t mproc__mgr_get_i64(const unsigned char b[8]) { return (int64_t)get_le(b, 8); }

size_t mproc__mgr_size(const mproc__mgr_msg *m) {
  size_t n = MGR_HDR;
  for (int i = 0; i < m->nf; i++)
    n += 8 + m->flen[i];
  return n;
}

void mproc__mgr_encode(const mproc__mgr_msg *m, unsigned char *b) {
  b[0] = m->op;
  put_le(b + 1, (uint32_t)m->id, 4);
  put_le(b + 5, (uint64_t)m->num, 8);
  b[13] = m->nf;
  b += MGR_HDR;
  for (int i = 0; i < m->nf; i++) {
    put_le(b, m->flen[i], 8);
    if (m->flen[i])
      memcpy(b + 8, m->f[i], m->flen[i]);
    b += 8 + m->flen[i];
  }
}

size_t mproc__mgr_packed_size(const mproc_bytes *v, size_t n) {
  size_t s = 0;
  for (size_t i = 0; i < n; i++)
    s += 8 + v[i].len;
  return s;
}

void mproc__mgr_pack(const mproc_bytes *v, size_t n, unsigned char *b) {
  for (size_t i = 0; i < n; i++) {
    put_le(b, v[i].len, 8);
    if (v[i].len)
      memcpy(b + 8, v[i].p, v[i].len);
    b += 8 + v[i].len;
  }
}

int mproc__mgr_unpack(const void *buf, size_t len, size_t *off, const void **p, size_t *plen) {
  const unsigned char *b = buf;
  if (*off > len || len - *off < 8)
    return -EPROTO;
  uint64_t l = get_le(b + *off, 8);
  if (l > len - *off - 8)
    return -EPROTO;
  *p = b + *off + 8;
  *plen = (size_t)l;
  *off += 8 + (size_t)l;
  return 0;
}

int mproc__mgr_decode(const void *buf, size_t len, mproc__mgr_msg *m) {
  const unsigned char *b = buf;
  memset(m, 0, sizeof *m);
  if (len < MGR_HDR || b[13] > 2)
    return -EPROTO;
  m->op = b[0];
  m->id = (int32_t)(uint32_t)get_le(b + 1, 4);
  m->num = (int64_t)get_le(b + 5, 8);
  m->nf = b[13];
  size_t off = MGR_HDR;
  for (int i = 0; i < m->nf; i++) {
    if (len - off < 8)
      return -EPROTO;
    uint64_t fl = get_le(b + off, 8);
    off += 8;
    if (fl > len - off) /* a length past what came: never trusted */
      return -EPROTO;
    m->f[i] = b + off;
    m->flen[i] = (size_t)fl;
    off += (size_t)fl;
  }
  return off == len ? 0 : -EPROTO;
}
