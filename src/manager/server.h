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
/* One request on the store: fills *reply (fields pointing into the store, or into *scratch,
 * which the caller frees after sending). 1 when the request was MGR_SHUTDOWN. */
int mproc__mgr_handle(mproc__store *s, const mproc__mgr_msg *req, mproc__mgr_msg *reply,
                      mproc__blob *scratch);

#endif
