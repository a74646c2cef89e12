/*
 * The shared arena: where mproc places its objects (locks, semaphores, events, small arrays)
 * so that an object made before a fork is the same memory, at the same address, in the
 * child. Not installed.
 *
 * Small blocks are carved from 64 KiB MAP_SHARED chunks; larger ones get a mapping of their
 * own. A block freed by a process is reused by that process only if no fork happened since
 * it was handed out (else another process may still be using it); a chunk is unmapped, in
 * this process only (its descriptor closed), once none of its blocks is in use here. A
 * process allocates only from chunks it made itself, never from inherited ones. Thread-safe; fork-safe.
 */
#ifndef MPROC_ARENA_H
#define MPROC_ARENA_H

#include <stddef.h>

/* size bytes of zeroed shared memory, aligned to 64 bytes; NULL and errno on failure. */
void *mproc__shared_alloc(size_t size);
/* Releases this process's use of p, which mproc__shared_alloc(size) returned. */
void mproc__shared_free(void *p, size_t size);

#endif /* MPROC_ARENA_H */
