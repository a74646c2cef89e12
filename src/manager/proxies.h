/* What the proxies (proxies.c) need of the handle (manager.c): one call. */
#ifndef MPROC_MANAGER_PROXIES_H
#define MPROC_MANAGER_PROXIES_H

#include "manager/proto.h"
#include "manager/table.h"

/* Sends q and waits for the reply: the server's status (0 or a code) or the transport's
 * failure (MPROC_EOF when the server died, MPROC_ECLOSED after). *num: the reply's number. */
int mproc__mgr_call_simple(mproc_manager *m, const mproc__mgr_msg *q, int64_t *num);
/* The same for a reply carrying one value: *val from malloc, *len; *num too if non-NULL. */
int mproc__mgr_call_value(mproc_manager *m, const mproc__mgr_msg *q, void **val, size_t *len);
int mproc__mgr_call_value_num(mproc_manager *m, const mproc__mgr_msg *q, void **val,
                              size_t *len, int64_t *num);

/* The same for MGR_D_SHM: the two descriptors that follow its reply into fds (the
 * caller's). MPROC_ESTATE when the handle's socket cannot carry them (TCP). */
int mproc__mgr_call_fds(mproc_manager *m, const mproc__mgr_msg *q, int fds[2]);
/* The server's life page for the handle's shared dicts, from a descriptor of it (taken
 * over: kept for the first, closed for the later ones); NULL on failure. Valid until the
 * handle is freed (hence proxies before their manager). */
const mproc__alive *mproc__mgr_alive(mproc_manager *m, int fd);
/* Whether the handle is closed (shut down, or its server seen dead). */
bool mproc__mgr_closed(const mproc_manager *m);
/* The server seen dead by other means than the socket (table.h's life page): the handle
 * closed; MPROC_EOF the first time, MPROC_ECLOSED after. */
int mproc__mgr_lost(mproc_manager *m);

#endif
