/* Shared checks for every test suite: what a test leaves behind. */
#ifndef MPROC_TEST_HELPERS_H
#define MPROC_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <sys/types.h>

/* Open descriptors of this process. */
int th_fd_count(void);
/* Whether this process has any child left (running or zombie). */
bool th_has_children(void);
/* Entries in /dev/shm whose name starts with prefix ("" for all). */
int th_shm_count(const char *prefix);
/* Whether pid still exists (a zombie counts as gone). */
bool th_pid_alive(pid_t pid);
/* Waits up to seconds for pid to be gone (not in /proc, or a zombie). */
bool th_wait_gone(pid_t pid, double seconds);

/* fork() whose child is SIGKILLed when the test process dies, so a helper process that a
 * failing test never got to kill does not linger. Returns as fork() does. */
pid_t th_fork_tied(void);
/* Reaps pid (blocking) and returns Python's exitcode (status or -signal); -1000 on error. */
int th_exitcode(pid_t pid);
/* Zeroed MAP_SHARED memory shared with children forked later (asserts on failure). */
void *th_shared(size_t len);
/* Sleeps for us microseconds, resuming after signals. */
void th_sleep_us(long us);
/* The state letter of pid in /proc (R, S, Z...), 0 if it is gone. */
char th_proc_state(pid_t pid);

/* Waits (up to 10 s) until pid sleeps, then 5 ms more so that it is well inside its wait. */
void th_wait_asleep(pid_t pid);
/* A field of a struct guarded by condition c's lock, read under that lock. */
struct mproc_cond;
int th_cond_read(struct mproc_cond *c, int *field);
/* One barrier wait for a child's exit code: 10 + index, 1 for MPROC_ESTATE, 2 otherwise. */
struct mproc_barrier;
int th_barrier_once(struct mproc_barrier *b, double timeout);

/* Every one of n messages arrived exactly once: seen[k] counts deliveries of message k. */
void th_expect_each_once(const unsigned char *seen, size_t n);

/* A pool of processes workers (0: one per CPU), default options otherwise; asserts it was
 * made. */
struct mproc_pool;
struct mproc_pool *th_pool(int processes);
/* A task: its 8-byte int64 argument times 3 (1, a failure, for any other length). */
struct mproc_result;
int th_times3(const void *arg, size_t len, struct mproc_result *res);
/* A map function: out = in * in, int64. */
int th_square64(const void *in, void *out, const void *args);

/* Shared memory that a pool's workers find under every start method: th_named_new makes a
 * segment (its name is not an "mproc" one, so th_end does not count it) and sets
 * th_named_buf; th_named_attach, as the pool's initializer with th_named_name as initargs,
 * sets th_named_buf in each worker. */
extern void *th_named_buf;
extern char th_named_name[64];
void th_named_new(size_t size);
void th_named_free(void);
int th_named_attach(const void *name, size_t len);

/* Open a leak scope at the start of a test and check it at the end. */
typedef struct th_scope {
  int fds;
  int shm;
} th_scope;
th_scope th_begin(void);
/* Asserts: same descriptor count, no child left, no new mproc segment in /dev/shm. */
void th_end(th_scope s);

#endif
