/* The Manager's server process (server.c) and what its starter hands it. */
#ifndef MPROC_MANAGER_SERVER_H
#define MPROC_MANAGER_SERVER_H

#include "manager/proto.h"
#include "manager/store.h"

/* The starter's copy for the server (arg, arg_len bytes): the address (NUL-terminated, ""
 * for a private Unix socket) and the key. */
typedef struct mproc__mgr_boot {
  char address[300];
  size_t klen;
  unsigned char key[256];
} mproc__mgr_boot;

/* The server's target: handle 0 is a pipe end on which it reports its bound address (or a
 * failure as "!" + code), then it serves until MGR_SHUTDOWN or its parent's death. */
int mproc__mgr_server_main(void *arg);
/* How a blocking request waits (the server's, or a stub's). */
typedef struct mproc__mgr_waiter {
  uint64_t who; /* the client's number, never 0: who holds a Lock */
  /* Waits for a change until deadline (the caller's lock held across, as a condition
   * variable's wait): 0 (look again), -ETIMEDOUT, or MGR_GONE. */
  int (*wait)(void *ctx, int64_t deadline);
  void (*changed)(void *ctx); /* something changed: every waiter looks again */
  void *ctx;
} mproc__mgr_waiter;
/* The status of a request whose client (or the server) is going: no reply, the client
 * dropped. */
#define MGR_GONE (-ECONNRESET)

/* One request on the store: fills *reply (fields pointing into the store, or into *scratch,
 * which the caller frees after sending). 1 when the request was MGR_SHUTDOWN. */
int mproc__mgr_handle(mproc__store *s, const mproc__mgr_waiter *w, const mproc__mgr_msg *req,
                      mproc__mgr_msg *reply, mproc__blob *scratch);
/* A Value's, a Queue's or a synchronization object's request (server_sync.c): its status. */
int mproc__mgr_sync(mproc__store *s, const mproc__mgr_waiter *w, const mproc__mgr_msg *req,
                    mproc__mgr_msg *reply, mproc__blob *scratch);

#endif
