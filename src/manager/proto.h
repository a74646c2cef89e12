/* The Manager's wire format: one request and one reply per Connection message.
 *
 * A message: op (1 byte), id (4 bytes: the object; in a reply, the status as int32), num
 * (8 bytes: an index, a delta, a count), nf (1 byte, at most 2), then nf fields of an
 * 8-byte length and the bytes. Integers little-endian (fixed, so TCP peers of other
 * machines agree). The parser checks every length against what came and rejects anything
 * left over. */
#ifndef MPROC_MANAGER_PROTO_H
#define MPROC_MANAGER_PROTO_H

#include "core/internal.h"
#include "core/start.h"

enum mproc__mgr_op {
  MGR_OPEN_DICT = 1, /* f0 name -> num id */
  MGR_OPEN_LIST,     /* f0 name -> num id */
  MGR_D_SET,         /* f0 key, f1 value */
  MGR_D_GET,         /* f0 key -> f0 value */
  MGR_D_DEL,         /* f0 key */
  MGR_D_LEN,         /* -> num */
  MGR_D_ADD,         /* f0 key, num delta -> num now */
  MGR_D_CONTAINS,    /* f0 key -> num 0/1 */
  MGR_D_POP,         /* f0 key -> f0 value */
  MGR_D_SETDEFAULT,  /* f0 key, f1 default -> f0 value */
  MGR_D_CLEAR,
  MGR_D_KEYS,        /* -> f0 packed keys, num count */
  MGR_D_ITEMS,       /* -> f0 packed key, value, key, value..., num pairs */
  MGR_D_UPDATE,      /* f0 packed key, value pairs, num pairs */
  MGR_L_APPEND,      /* f0 value */
  MGR_L_GET,         /* num index -> f0 value */
  MGR_L_LEN,         /* -> num */
  MGR_L_SET,         /* num index, f0 value */
  MGR_L_INSERT,      /* num index, f0 value */
  MGR_L_POP,         /* num index -> f0 value */
  MGR_L_EXTEND,      /* f0 packed values, num count */
  MGR_L_REMOVE,      /* f0 value: the first equal one removed */
  MGR_SHUTDOWN,
  MGR_OPEN,          /* id kind (store.h), num param, f0 name, f1 init (optional) -> num id */
  MGR_V_GET,         /* a Value: -> f0 bytes */
  MGR_V_SET,         /* f0 bytes */
  MGR_Q_PUT,         /* num timeout (ns, < 0: none), f0 value */
  MGR_Q_GET,         /* num timeout -> f0 value */
  MGR_X,             /* MGR_X + rop (start.h's mproc__rop): num the timeout in ns for a
                        blocking one (< 0: none), else its argument -> num */
  /* The later dict and list calls, after the rest so that every number above stays what
   * it was on the wire (and in fuzz/corpus). */
  MGR_D_VALUES = MGR_X + MPROC__R_END, /* -> f0 packed values, num count */
  MGR_D_POPITEM,                       /* -> f0 packed key, value (the newest pair) */
  MGR_L_CLEAR,
  MGR_L_INDEX,   /* f0 value, num start, f1 stop (8 bytes, little-endian) -> num index */
  MGR_L_COUNT,   /* f0 value -> num count */
  MGR_L_REVERSE,
  MGR_L_SORT,    /* num 1: reversed */
  MGR_L_ITEMS,   /* -> f0 packed values, num count */
  /* A dict's (or Namespace's) table for a client on the same machine (table.h): -> f0 the
   * server's numbers of the table's and its life page's descriptors (8 bytes: table << 32
   * | life); on a Unix socket one byte follows the reply, carrying the two descriptors. */
  MGR_D_SHM,
  MGR_OP_END
};

typedef struct mproc__mgr_msg {
  uint8_t op;
  int32_t id;
  int64_t num;
  uint8_t nf;
  const void *f[2];
  size_t flen[2];
} mproc__mgr_msg;

#define MGR_HDR 14
/* Bytes m takes on the wire. */
size_t mproc__mgr_size(const mproc__mgr_msg *m);
/* Writes m into buf (mproc__mgr_size(m) bytes). */
void mproc__mgr_encode(const mproc__mgr_msg *m, unsigned char *buf);
/* A packed list of byte strings (one field): each an 8-byte length and the bytes. */
size_t mproc__mgr_packed_size(const mproc_bytes *v, size_t n);
void mproc__mgr_pack(const mproc_bytes *v, size_t n, unsigned char *buf);
/* An int64_t as 8 bytes little-endian, and back (MGR_L_INDEX's stop). */
void mproc__mgr_put_i64(unsigned char b[8], int64_t v);
int64_t mproc__mgr_get_i64(const unsigned char b[8]);
/* The next string of a packed field at *off: 0 and *p, *len, or -EPROTO past its end. */
int mproc__mgr_unpack(const void *buf, size_t len, size_t *off, const void **p, size_t *plen);
/* Parses buf[len) into *m, whose fields point into buf: 0, or -EPROTO for a malformed one. */
int mproc__mgr_decode(const void *buf, size_t len, mproc__mgr_msg *m);

#endif
