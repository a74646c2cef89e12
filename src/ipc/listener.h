/* The listener layer's internals that its fuzz target drives (fuzz/fuzz_listener.c). */
#ifndef MPROC_IPC_LISTENER_H
#define MPROC_IPC_LISTENER_H

#include "core/internal.h"

/* The listening side's half of the mutual challenge on the connected socket fd: deliver ours
 * (plain 20 bytes if legacy, else "{sha256}" + 40), check the answer, then answer the peer's.
 * All before the deadline. 0, MPROC_EAUTH, -EPROTO, MPROC_ETOOBIG, -ETIMEDOUT, MPROC_EOF, or
 * another -errno. The client's half is the same two steps the other way round. */
int mproc__handshake_serve(int fd, const void *key, size_t klen, bool legacy, int64_t deadline);
int mproc__handshake_client(int fd, const void *key, size_t klen, bool legacy, int64_t deadline);

/* mproc_listener_accept in two halves, for a server that runs handshakes off its loop (the
 * Manager's): take one waiting connection (its socket, or -errno; -EAGAIN/MPROC_ETIMEDOUT
 * when none came before the deadline), then admit it (the handshake within the listener's
 * handshake timeout; fd closed on failure). */
int mproc__listener_take(mproc_listener *l, int64_t deadline);
int mproc__listener_admit(mproc_listener *l, int fd, mproc_conn **c);

#endif
