/* The conn layer's internal entries: a Connection over a connected stream socket, and the
 * descriptor of one for mproc's own polls. */
#ifndef MPROC_IPC_CONN_H
#define MPROC_IPC_CONN_H

#include "core/internal.h"

/* A Connection owning the stream socket fd, both directions, with Python's framing exactly
 * (Listener/Client connections). NULL (fd closed) when out of memory. */
mproc_conn *mproc__conn_socket(int fd);
/* c's descriptor for mproc's own polls (mproc_conn_fileno would stop its read-ahead). */
int mproc__conn_fd(const mproc_conn *c);
/* Whether c reads exactly (no read-ahead past a message) from now on: on while what
 * follows a reply on the socket is not a frame (a byte carrying descriptors). */
void mproc__conn_exact(mproc_conn *c, bool exact);

/* Messages longer than limit bytes (a header's claim) fail recv with MPROC_ETOOBIG at once,
 * before any of the body is awaited. */
void mproc__conn_set_limit(mproc_conn *c, uint64_t limit);

#endif
