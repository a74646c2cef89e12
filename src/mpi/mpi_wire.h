/*
 * What crosses between rank 0 and the serving ranks (all within MPI_COMM_WORLD), and the
 * batches they are sent in.
 *
 * rank r -> 0  HELLO {rc, workers}: r's local pool started (rc 0) with that many workers.
 * 0 -> r       TASKS: records, each a wire_task then body_len bytes, padded to 16:
 *                FN    defines function index fn for this rank: body = u64 offset, path, NUL
 *                APPLY body = the argument (a function inside it named as below)
 *                MAP   body = count * in_size input bytes, then args_len bytes of args
 * r -> 0       RESULTS: records, each an mproc__result_hdr, msg_len + data_len bytes,
 *              padded to 16 (the pool's own result message, as a worker posts it).
 * 0 -> r       STOP: end now (terminate the local pool); r answers STOPPED after its last
 *              message, so nothing is left in flight when both finalize.
 * A batch is one MPI message; its pieces may lie in several buffers (a map chunk's input is
 * sent straight from the caller's array): then it goes as one hindexed datatype.
 */
#ifndef MPROC_MPI_WIRE_H
#define MPROC_MPI_WIRE_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { MPIW_HELLO = 1, MPIW_TASKS = 2, MPIW_RESULTS = 3, MPIW_STOP = 4, MPIW_STOPPED = 5 };
enum { MPIW_FN = 1, MPIW_APPLY = 2, MPIW_MAP = 3 };

/* Functions a pool may name (per rank 0); past it, a task fails with MPROC_ETOOBIG. */
#define MPIW_FNS 256
/* A batch is sent once it holds this much (a single bigger record goes alone). */
#define MPIW_BATCH_BYTES ((size_t)1 << 20)

typedef struct mpiw_hello {
  int32_t rc, workers;
} mpiw_hello;

/* APPLY with inner: the argument holds a function pointer at inner_off (imap's chunks); it
 * travels as function index inner - 1, made the serving rank's address there. */
typedef struct mpiw_task {
  uint32_t kind, fn;
  uint32_t inner, inner_off;
  uint64_t id, in_size, out_size, count, args_len, start, body_len;
} mpiw_task;

static inline size_t mpiw_pad16(size_t n) { return (n + 15) & ~(size_t)15; }

/* One message being built: bytes copied into buf, and pieces that stay where they are. */
typedef struct mpiw_seg {
  const char *ext; /* NULL: buf[off, off + len) */
  size_t off, len;
} mpiw_seg;
typedef struct mpiw_batch {
  char *buf;
  size_t len, cap;
  mpiw_seg *seg;
  size_t nseg, segcap;
  size_t bytes; /* of the whole message */
  size_t records;
} mpiw_batch;

/* Appends len bytes copied (p NULL: zeros). 0 or MPROC_ENOMEM. */
int mpiw_copy(mpiw_batch *b, const void *p, size_t len);
/* Appends len bytes sent from p itself (p must stay valid until the send completes). */
int mpiw_ref(mpiw_batch *b, const void *p, size_t len);
/* Zeros up to the next multiple of 16 of the message. */
int mpiw_pad(mpiw_batch *b);
void mpiw_batch_free(mpiw_batch *b);

/* Sends in flight, each with what it owns. */
typedef struct mpiw_send {
  MPI_Request req;
  char *buf;
  MPI_Datatype type;
} mpiw_send;
typedef struct mpiw_sends {
  mpiw_send *s;
  size_t n, cap;
} mpiw_sends;

/* Starts sending b to dest with tag; b is empty again after (its buffer is the send's).
 * 0 or an MPROC code. */
int mpiw_send_batch(mpiw_sends *s, mpiw_batch *b, int dest, int tag);
/* Settles the sends that completed; true when any did. */
bool mpiw_test(mpiw_sends *s);
/* Waits for every send (the peer is receiving). */
void mpiw_wait_all(mpiw_sends *s);

/* Receives the message st names (after a probe) into a malloc'd *buf of *len bytes. */
int mpiw_recv(const MPI_Status *st, char **buf, size_t *len);

/* Waiting with no descriptor: spins a little, then sleeps longer and longer (up to 1 ms) so
 * that an idle rank costs next to nothing on a small machine. */
typedef struct mpiw_backoff {
  int64_t idle_since; /* 0: something moved last time */
  int64_t sleep_ns;
} mpiw_backoff;
/* Something moved: the next wait starts short again. */
static inline void mpiw_moved(mpiw_backoff *b) { b->idle_since = 0; }
/* How long to wait now (0: spin), up to max_ns. */
int64_t mpiw_idle_ns(mpiw_backoff *b, int64_t now, int64_t max_ns);

int64_t mpiw_now_ns(void);

#endif /* MPROC_MPI_WIRE_H */
