/*
 * mproc — Python's multiprocessing for C.
 *
 * The one public header. Every object is an opaque handle made by mproc_X_new (out-parameter
 * first) and released by mproc_X_free. Options structs may be NULL (or zeroed) for defaults.
 *
 * Errors: success is 0 (or a documented non-negative value); failure is negative: -errno for
 * system errors or one of the MPROC_E* codes below. mproc_strerror() describes every code,
 * mproc_err_name() names it.
 *
 * Timeouts are seconds as double: < 0 (MPROC_FOREVER) waits without limit, 0 never blocks.
 * With timeout 0, *taking or putting* something unavailable returns MPROC_EAGAIN; *waiting for
 * something to happen* returns MPROC_ETIMEDOUT when it has not happened.
 *
 * Threads: Pool, Queue, the synchronization objects and arrays are safe from several threads
 * of one process. Process and Connection handles are for one thread at a time. Every handle
 * made before a fork() works in the child; the child's _free releases only its own mapping.
 * mproc never starts a thread in the caller's process.
 *
 * Signals: mproc never changes a signal disposition in the caller's process. It changes the
 * calling thread's mask only inside a call and restores it before returning: SIGPIPE is
 * blocked around a Connection write (the SIGPIPE a gone reader raises is consumed, -EPIPE
 * returned); SIGXFSZ around growing shared memory (past RLIMIT_FSIZE: consumed, -EFBIG
 * returned, or private memory where a mapping need not cross to a spawned child); a pool
 * wait blocks the asynchronous signals and sleeps in ppoll with the
 * caller's mask, so a handler that runs makes the call return -EINTR. Children: a daemon
 * gets PR_SET_PDEATHSIG (SIGKILL) to die with its parent. mproc's own processes (a pool's
 * supervisor and workers, the forkserver) ignore SIGINT and take SIGCHLD at its default;
 * a Process child starts with the caller's dispositions and mask under fork, with exec's
 * under spawn (handlers back at the default, the mask kept), and under forkserver with the
 * server's as it was spawned, SIGINT at its default. At the first Process start one atexit
 * handler is registered (daemons killed, other children joined, as Python does).
 */
#ifndef MPROC_H
#define MPROC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MPROC_VERSION_MAJOR 0
#define MPROC_VERSION_MINOR 1
#define MPROC_VERSION_PATCH 0

/* "MAJOR.MINOR.PATCH" of the library actually linked. */
const char *mproc_version_string(void);

/* ------------------------------------------------------------------------------------------ */
/* Common                                                                                      */
/* ------------------------------------------------------------------------------------------ */

#define MPROC_FOREVER (-1.0) /* any timeout < 0: wait without limit; 0: never block */

/* Error codes: XX(name, value, message), one row per code, the only list of them. The first
 * four are the negated <errno.h> values (a system call's -errno passes through unchanged);
 * the rest lie below any errno. The message is mproc_strerror's text for the code. */
#define MPROC_ERRNO_MAP(XX)                                                                  \
  XX(EINVAL, -EINVAL, "invalid argument (NULL handle, zero size, out of range)")            \
  XX(ENOMEM, -ENOMEM, "out of memory")                                                       \
  XX(ETIMEDOUT, -ETIMEDOUT, "timed out: the wait ran out; the awaited thing may still happen") \
  XX(EAGAIN, -EAGAIN, "unavailable: timeout 0 and nothing to take or no room to put")       \
  XX(ESTATE, -10001, "not valid in this state")                                              \
  XX(ECLOSED, -10002, "closed: the queue, pool or connection was closed")                    \
  XX(EOF, -10003, "end of file: the peer closed and nothing is left to read")                \
  XX(ETASK, -10004, "the task function reported failure")                                    \
  XX(ECRASHED, -10005, "the worker died while running the task")                             \
  XX(EEXPIRED, -10006, "the task ran past task_timeout and its worker was killed")           \
  XX(ECANCELLED, -10007, "cancelled: the pool was terminated before the task finished")      \
  XX(EOWNERDEAD, -10008, "lock acquired; its previous holder died holding it")               \
  XX(ETOOBIG, -10009, "a message or size beyond a hard limit")                               \
  XX(EAUTH, -10010, "authentication failed: wrong key, or the peer refused ours")            \
  XX(ENOTFOUND, -10011, "not found: no such key, index or object")

typedef enum {
#define MPROC__XX(name, value, message) MPROC_##name = (value),
  MPROC_ERRNO_MAP(MPROC__XX)
#undef MPROC__XX
} mproc_errno_t;

/* A static, never-NULL description of any return value (MPROC_E*, -errno, or 0). */
const char *mproc_strerror(int err);

/* A static, never-NULL name of a return value: "MPROC_ETIMEDOUT" for a table code, the errno
 * name ("EPIPE") for another -errno, "OK" for 0 and "UNKNOWN" for anything else. */
const char *mproc_err_name(int err);

/* Usable CPUs: the affinity mask, lowered by a cgroup v2 cpu.max quota when set. >= 1. */
int mproc_cpu_count(void);

/* "MainProcess" in the main program; the Process name inside a child started by mproc. */
const char *mproc_current_process_name(void);

/* ------------------------------------------------------------------------------------------ */
/* Start methods                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* How a Process, a Pool's supervisor (its workers always fork from it) or a Manager's server
 * is born. fork copies the caller as it is (fast; unsafe when the caller has other threads,
 * which may hold locks the child then finds held, and it costs page tables in proportion to
 * the heap). spawn execs a fresh image of the program (/proc/self/exe): mproc takes over
 * in a constructor before main, maps the objects the parent passed, runs the target and
 * exits. forkserver asks a server, itself spawned at the first use, to fork the child.
 * Under spawn and forkserver the child sees none of the caller's memory: only arg (copied,
 * arg_len bytes), the objects in opts.handles, and functions, which cross as (object file,
 * offset), so they may live in the executable, a library loaded at start, or one the
 * parent dlopened (the child opens the same path). */
typedef enum mproc_start_method {
  MPROC_START_DEFAULT = 0, /* the process-wide default */
  MPROC_START_FORK,
  MPROC_START_FORKSERVER,
  MPROC_START_SPAWN,
} mproc_start_method;

/* Sets the default for later Processes, Pools and Managers. MPROC_EINVAL for an unknown
 * method. Thread-safe. The environment variable MPROC_START_METHOD=fork|forkserver|spawn
 * sets the default at load time. */
int mproc_set_start_method(mproc_start_method m);
/* The default now; never MPROC_START_DEFAULT. */
mproc_start_method mproc_get_start_method(void);
/* "fork", "forkserver", "spawn"; "default" for MPROC_START_DEFAULT; NULL for others. */
const char *mproc_start_method_name(mproc_start_method m);
/* Starts this process's forkserver now (else it starts at the first forkserver use): call
 * it early in main, before the program's threads exist, for the cheapest server. 0 if it
 * runs, or -errno. */
int mproc_forkserver_start(void);
/* Stops this process's forkserver and reaps it; children it forked live on. A later use
 * starts a new one. */
void mproc_forkserver_stop(void);

/* ------------------------------------------------------------------------------------------ */
/* Process                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* One child process running target(arg). For one thread at a time.
 * Only the process that started a child may join, signal or reap it: in a forked child an
 * inherited handle is inert (MPROC_ESTATE; free releases only that copy), and a forked
 * child starts with no children of its own (mproc_active_children).
 * At normal exit (exit() or a return from main), and in an mproc child when its target
 * returns, daemon children are killed (SIGKILL) and the others joined, as Python does.
 * A daemon also dies when its parent dies in any way (PR_SET_PDEATHSIG): note that this
 * signal follows the *thread* that started it, so a daemon started from a thread that
 * ends before the process is killed then. */
typedef struct mproc_process mproc_process;

/* ---- limits and the sandbox (a pool's workers, or one Process) ---- */

/* Kernel-enforced limits on a worker (or a Process's child), set after the initializer.
 * Zero fields: no limit. A task that breaks one fails alone (the worker is replaced) with a
 * message that names the limit. */
typedef struct mproc_limits {
  /* CPU seconds one task may use (RLIMIT_CPU, moved before each task; whole seconds plus a
   * quarter, so a task may get up to ~1.25 s more): past it the worker gets SIGXCPU, the
   * task MPROC_ECRASHED. task_timeout is the wall-clock limit beside it. */
  double cpu_seconds;
  /* Descriptors open at once (RLIMIT_NOFILE): past it an open fails with EMFILE. */
  uint64_t open_files;
  /* Bytes a file may be written to (RLIMIT_FSIZE): past it the worker gets SIGXFSZ, the
   * task MPROC_ECRASHED. */
  uint64_t file_size;
  /* Processes a task may start. -1: none (fork, vfork, clone and exec's helpers trap, the
   * task fails with MPROC_ECRASHED; threads stay allowed; needs libseccomp). N > 0: the
   * kernel's RLIMIT_NPROC = N, which counts all of the user's processes and does not apply
   * to root. 0: no limit. */
  long processes;
} mproc_limits;

/* A seccomp sandbox (no_new_privs plus a filter, needs libseccomp: without it the call that
 * asks for one fails with -EOPNOTSUPP), applied after the initializer. Allowed: computing,
 * memory (mmap, brk, madvise), threads, reading and writing descriptors the process has,
 * clocks, sleeping, the pool's own transport (futex, poll). Denied: everything else, among
 * it open/openat, socket, exec, fork, ptrace, kill of others. A denied call kills the
 * worker with SIGSYS and its task fails with MPROC_ECRASHED and a message naming the call. */
typedef struct mproc_sandbox {
  /* More system calls to allow, by name ("openat", "socket"); NULL/0: none. An unknown
   * name: MPROC_EINVAL. Copied. */
  const char *const *allow_syscalls;
  size_t n_allow_syscalls;
  /* Directories under which files may be opened read-only (Landlock; openat is then
   * allowed, and any other use of a path fails with EACCES). Where the kernel lacks
   * Landlock the call fails with -EOPNOTSUPP. Copied. */
  const char *const *read_dirs;
  size_t n_read_dirs;
} mproc_sandbox;

/* How memory_limit is enforced. */
typedef enum {
  MPROC_MEMLIMIT_NONE = 0,
  /* RLIMIT_DATA on the worker's private memory (heap, private mappings; not the pool's
   * shared rings): an allocation past the cap fails (malloc returns NULL). */
  MPROC_MEMLIMIT_RLIMIT_DATA = 1,
  /* A memory cgroup of each worker's (child's) own, made below this process's group: the
   * cap is exact (all memory it is charged for, no swap past it) and the kernel's OOM
   * killer ends the worker that goes past it. v2 where the memory controller is on for
   * this process's group's children, else v1's memory hierarchy. The groups are removed
   * as their processes are reaped. */
  MPROC_MEMLIMIT_CGROUP_V2 = 2,
  MPROC_MEMLIMIT_CGROUP_V1 = 3,
} mproc_memlimit_kind;

/* Runs in the child; its return value is the child's exit code (its low 8 bits). The child
 * flushes stdout/stderr and leaves with _exit: the parent's atexit handlers do not run. */
typedef int (*mproc_target_fn)(void *arg);

typedef struct mproc_process_opts {
  const char *name; /* NULL: "Process-N"; copied */
  bool daemon;      /* killed when the parent exits; non-daemons are joined at normal exit */
  mproc_start_method start_method; /* DEFAULT: mproc_get_start_method() at start */
  size_t arg_len;   /* > 0: arg's arg_len bytes are copied at new; the child gets the copy */
  /* mproc objects the child uses (Connection, Queue, Lock, RLock, Semaphore, Event,
   * Condition, Barrier, Array/Value, SharedMemory), found there with mproc_process_handle.
   * The array is copied at new; the objects must stay alive until start. */
  void *const *handles;
  size_t n_handles;
  /* The pool's limits, for this child: set in it before the target runs (cpu_seconds
   * counts from then, for its whole life). A child ended by one has mproc_process_error
   * naming it. All copied at new; zero / NULL: none. */
  size_t memory_limit;
  mproc_memlimit_kind memory_limit_how;
  const mproc_limits *limits;
  const mproc_sandbox *sandbox;
} mproc_process_opts;

/* Makes (does not start) a process. arg is passed as is and must stay valid until start,
 * unless opts->arg_len copies it. Under spawn and forkserver a non-NULL arg needs arg_len
 * (MPROC_EINVAL at start), and target must lie in a loaded object file. */
int mproc_process_new(mproc_process **p, mproc_target_fn target, void *arg,
                      const mproc_process_opts *opts);
/* Forks the child. MPROC_ESTATE if already started; a child that fails to set itself up is
 * reported here as an error code (-errno; p can then be started again). stdout/stderr are
 * flushed first. */
int mproc_process_start(mproc_process *p);
/* Waits for the child to end: 0, or MPROC_ETIMEDOUT. Reaps it. MPROC_ESTATE if not started. */
int mproc_process_join(mproc_process *p, double timeout);
/* Started and not yet ended. Never blocks. */
bool mproc_process_is_alive(mproc_process *p);
/* SIGTERM / SIGKILL / SIGINT to the child. 0 also when it has already ended. */
int mproc_process_terminate(mproc_process *p);
int mproc_process_kill(mproc_process *p);
int mproc_process_interrupt(mproc_process *p);
/* The child's pid; 0 before start. */
pid_t mproc_process_pid(const mproc_process *p);
/* 0 and *code = exit status, or -N if killed by signal N; MPROC_ESTATE while not finished
 * (call join or is_alive first to reap it); -ECHILD when the child was reaped behind
 * mproc's back (SIGCHLD ignored, or a waitpid(-1) of the program's own). */
int mproc_process_exitcode(const mproc_process *p, int *code);
/* Why the ended child died, when one of its limits or its sandbox explains it: a message
 * naming the limit (or the denied system call), owned by p. NULL otherwise. */
const char *mproc_process_error(const mproc_process *p);
/* How the child's memory_limit is enforced (MPROC_MEMLIMIT_NONE without one, or for NULL). */
mproc_memlimit_kind mproc_process_memlimit(const mproc_process *p);
/* The name (owned by p). */
const char *mproc_process_name(const mproc_process *p);
bool mproc_process_daemon(const mproc_process *p);
/* A descriptor that becomes readable when the child ends (Python's sentinel); owned by p.
 * -1 before start or where pidfds are not available. */
int mproc_process_sentinel(const mproc_process *p);
/* Releases p; a still-running child is killed and reaped. */
void mproc_process_free(mproc_process *p);

/* In a child started by mproc: its own handle for the parent's opts.handles[i] (under
 * fork, handles[i] itself); NULL out of range or in the main program. Owned by mproc. */
void *mproc_process_handle(size_t i);

/* The pid of this process's parent (Python's parent_process().pid). */
pid_t mproc_parent_pid(void);
/* Reaps finished children started by mproc in this process and returns how many are still
 * alive; when procs is non-NULL, fills up to max of their handles (not owned by the caller). */
int mproc_active_children(mproc_process **procs, size_t max);

/* ------------------------------------------------------------------------------------------ */
/* Pipe and Connection                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* One end of a pipe. For one thread at a time. */
typedef struct mproc_conn mproc_conn;

/* duplex: both ends send and receive. !duplex: *a only receives, *b only sends. */
int mproc_pipe(mproc_conn **a, mproc_conn **b, bool duplex);
/* Sends one message of any size (0 allowed), whole; blocks while the pipe is full.
 * A peer that is gone: -EPIPE. No SIGPIPE is raised, and the program's SIGPIPE
 * disposition and signal mask are left as they are. */
int mproc_conn_send(mproc_conn *c, const void *buf, size_t len);
/* Receives one whole message: *buf from malloc (never NULL on success, even for 0 bytes;
 * the caller frees it), *len its size. MPROC_EOF when the peer closed and nothing is left;
 * timeout 0 and nothing there: MPROC_EAGAIN; later: MPROC_ETIMEDOUT. */
int mproc_conn_recv(mproc_conn *c, void **buf, size_t *len, double timeout);
/* Connection.recv_bytes_into: receives one whole message into the caller's buf (cap bytes;
 * buf NULL only with cap 0), its size in *len; blocks, times out and reports EOF as recv.
 * Longer than cap: MPROC_ETOOBIG at once, *len its length, and the message stays whole in c
 * for the next recv or recv_bytes_into (Python's BufferTooShort; nothing of it is lost). */
int mproc_conn_recv_bytes_into(mproc_conn *c, void *buf, size_t cap, size_t *len,
                               double timeout);
/* 1: a message or EOF is ready (read ahead in c, or on the descriptor); 0: not within
 * timeout. Send-only end: MPROC_EINVAL. */
int mproc_conn_poll(mproc_conn *c, double timeout);
/* The underlying descriptor (owned by c), for poll/epoll. A Listener/Client connection
 * reads ahead (up to 4 KiB past a message, one syscall per small message) until its
 * descriptor is asked for here: from then on it reads exactly, so the descriptor is
 * readable exactly when a message is there (a message read ahead before the call is
 * still held: mproc_conn_poll(c, 0) says so). */
int mproc_conn_fileno(mproc_conn *c);
/* Closes and releases c. */
void mproc_conn_free(mproc_conn *c);
/* Notes. A recv whose deadline passes while a message is half-arrived keeps the part it
 * read inside c and returns MPROC_ETIMEDOUT / MPROC_EAGAIN; the next recv continues that
 * message: messages are never torn (recv_bytes_into moves the part it read into c, so that
 * either call finishes it; with no memory for that: MPROC_ENOMEM, and that one message is
 * skipped). A peer that closes mid-message: MPROC_EOF. The wire
 * format is Python's (4-byte big-endian length, or 0xffffffff and an 8-byte length beyond
 * 2 GiB) except that frames shorter than 64 bytes are zero-padded to 64. In a child, free
 * the ends it does not use (its copy of the parent's end keeps the pipe open: no EOF).
 * Pipes are pipe(2) (two for duplex). A send blocks SIGPIPE in the calling thread for the
 * write and consumes the one a gone peer raises, so no process-wide setting changes. */

/* multiprocessing.connection.wait: one object to wait on. */
typedef struct mproc_waitable {
  mproc_conn *conn;       /* ready when a message or EOF is there */
  mproc_process *process; /* ready when the process has ended */
  bool ready;             /* out */
} mproc_waitable;
/* Waits until at least one of items[0..n) is ready; marks each ready one. Returns the number
 * ready (>= 1), or 0 on timeout. */
int mproc_wait(mproc_waitable *items, size_t n, double timeout);

/* ------------------------------------------------------------------------------------------ */
/* Listener and Client (multiprocessing.connection)                                            */
/* ------------------------------------------------------------------------------------------ */

/* A socket that accepts Connections, wire-compatible with Python's
 * multiprocessing.connection.Listener for bytes (send_bytes/recv_bytes). For one thread at a
 * time. Addresses: "unix:PATH" (the socket file is removed at free), "unix:@NAME" (abstract),
 * "tcp:HOST:PORT" with an IPv4 or IPv6 host ("tcp:[::1]:PORT"; port 0: any free one), NULL: a
 * fresh Unix socket in a private 0700 directory (both removed at free). A "?legacy" suffix
 * makes this end deliver Python 3.11's plain HMAC-MD5 challenge instead of 3.12's
 * "{sha256}" one; either way it answers whichever form the peer sends. */
typedef struct mproc_listener mproc_listener;
/* Binds and listens (backlog <= 0: 128). authkey NULL (authkey_len 0): no authentication,
 * allowed only for unix addresses (MPROC_EINVAL for tcp); else every connection makes the
 * mutual HMAC challenge with the key (copied) before accept returns it. */
int mproc_listener_new(mproc_listener **l, const char *address, const void *authkey,
                       size_t authkey_len, int backlog);
/* Waits up to timeout for a client, then runs the handshake, bounded by the handshake
 * timeout (below) rather than by timeout. 0 and *c (the caller frees it), MPROC_ETIMEDOUT
 * (MPROC_EAGAIN for timeout 0) when no client came. A client that fails the handshake is
 * dropped and its reason returned, the listener serving on: MPROC_EAUTH (wrong key, sent
 * #FAILURE#), -EPROTO (not the protocol), MPROC_ETOOBIG (a handshake message over 256
 * bytes), MPROC_ETIMEDOUT (stalled past the handshake timeout), MPROC_EOF (hung up). */
int mproc_listener_accept(mproc_listener *l, mproc_conn **c, double timeout);
/* How long accept gives a client's handshake (default 10 s; < 0: no limit). */
int mproc_listener_set_handshake_timeout(mproc_listener *l, double timeout);
/* The bound address, port included ("tcp:127.0.0.1:40123"), owned by l; NULL for NULL. */
const char *mproc_listener_address(const mproc_listener *l);
/* Readable when a client waits to be accepted (owned by l). */
int mproc_listener_fileno(const mproc_listener *l);
/* Closes the socket (and removes the file of a unix path it made). */
void mproc_listener_free(mproc_listener *l);
/* Connects to a Listener (mproc's or Python's) at address and, with an authkey, makes the
 * mutual challenge, all before timeout: 0 and *c; MPROC_EAUTH for a key the listener
 * refused or one that failed to answer ours; -ECONNREFUSED / -ENOENT for no listener;
 * MPROC_ETIMEDOUT; -EPROTO for a peer that does not speak the protocol. */
int mproc_client(mproc_conn **c, const char *address, const void *authkey, size_t authkey_len,
                 double timeout);

/* ------------------------------------------------------------------------------------------ */
/* Manager: dicts and lists served by a process                                                */
/* ------------------------------------------------------------------------------------------ */

/* A handle on a Manager's server: the one that started it (mproc_manager_new) or one that
 * connected to it (mproc_manager_connect, from any program). Objects live in the server and
 * are opened by name; each operation is one request and one reply, atomic in the server.
 * For one thread at a time; a child forked with the handle gets its own connection at its
 * first call (the key and address are inherited). When the server dies, every call returns
 * MPROC_EOF (blocked ones too, promptly) and MPROC_ECLOSED after that. */
typedef struct mproc_manager mproc_manager;
/* A byte string: snapshots and batches of the Manager's dicts and lists. */
typedef struct mproc_bytes {
  const void *p;
  size_t len;
} mproc_bytes;
typedef struct mproc_manager_opts {
  const char *address; /* as for mproc_listener_new; NULL: a private Unix socket */
  const void *authkey; /* NULL: a random key (children forked later inherit the handle) */
  size_t authkey_len;  /* at most 256 */
  mproc_start_method start_method; /* how the server is born; DEFAULT: the default */
} mproc_manager_opts;
/* Starts the server (a daemon child: it dies with this process) and connects to it. */
int mproc_manager_new(mproc_manager **m, const mproc_manager_opts *opts);
/* Connects to a running server (BaseManager.connect). */
int mproc_manager_connect(mproc_manager **m, const char *address, const void *authkey,
                          size_t authkey_len, double timeout);
/* The server's address, owned by m. */
const char *mproc_manager_address(const mproc_manager *m);
/* The server's pid for a handle that started it; 0 for a connected one. */
pid_t mproc_manager_pid(const mproc_manager *m);
/* Ends the server (every client's later calls: MPROC_EOF / MPROC_ECLOSED); joins it if this
 * handle started it. Twice: 0. */
int mproc_manager_shutdown(mproc_manager *m);
/* Releases m; shuts down a server this handle started (in the process that started it). */
void mproc_manager_free(mproc_manager *m);

/* Manager().dict(): bytes keys -> bytes values. A proxy: free it, the object stays. Proxies
 * must be freed before their manager. The dict lives in shared memory the server owns: a
 * proxy of a handle on the same machine (connected over a Unix socket, or the starter of
 * the server) maps it, and its set, get, del, len, contains, add_i64, pop and setdefault
 * run there under the dict's robust lock without a request (a client killed in one leaves
 * the dict whole); the rest are requests. A dict holds up to 4 GiB of keys and values,
 * each taking a power of two of at least its length + 16 bytes: beyond, MPROC_ENOMEM. */
typedef struct mproc_dict mproc_dict;
/* Opens (makes if absent) the dict called name. MPROC_EINVAL if name is a list. */
int mproc_manager_dict(mproc_manager *m, const char *name, mproc_dict **d);
int mproc_dict_set(mproc_dict *d, const void *key, size_t klen, const void *val, size_t vlen);
/* *val from malloc (the caller frees it); MPROC_ENOTFOUND when absent. */
int mproc_dict_get(mproc_dict *d, const void *key, size_t klen, void **val, size_t *vlen);
int mproc_dict_del(mproc_dict *d, const void *key, size_t klen); /* MPROC_ENOTFOUND */
long mproc_dict_len(mproc_dict *d);                             /* or a negative code */
/* Atomic d[key] += delta (absent: 0; wraps as int64_t); the value is 8 bytes, native
 * order; another value's length: MPROC_EINVAL. *now (if non-NULL): the new value. */
int mproc_dict_add_i64(mproc_dict *d, const void *key, size_t klen, int64_t delta,
                       int64_t *now);
/* 1 if key is in d, 0 if not, or a negative code. */
int mproc_dict_contains(mproc_dict *d, const void *key, size_t klen);
/* Removes key and hands its value over (*val from malloc); MPROC_ENOTFOUND. */
int mproc_dict_pop(mproc_dict *d, const void *key, size_t klen, void **val, size_t *vlen);
/* d.setdefault(key, dflt): the value now at key (dflt stored if absent), *val from malloc. */
int mproc_dict_setdefault(mproc_dict *d, const void *key, size_t klen, const void *dflt,
                          size_t dlen, void **val, size_t *vlen);
int mproc_dict_clear(mproc_dict *d);
/* Snapshots (taken atomically): *keys is *n keys, *items 2 * *n entries (key, value, key,
 * value...), each array one malloc block with the bytes after it: one free(). */
int mproc_dict_keys(mproc_dict *d, mproc_bytes **keys, size_t *n);
int mproc_dict_items(mproc_dict *d, mproc_bytes **items, size_t *n);
/* d.values(): *n values, one malloc block as keys (one free()). Keys, values and items come
 * in insertion order, as in Python (a key set again keeps its place). */
int mproc_dict_values(mproc_dict *d, mproc_bytes **vals, size_t *n);
/* d.popitem(): removes the pair inserted last (LIFO) and hands it over (*key and *val each
 * from malloc, the caller frees both); MPROC_ENOTFOUND when d is empty. */
int mproc_dict_popitem(mproc_dict *d, void **key, size_t *klen, void **val, size_t *vlen);
/* d.update: n pairs, items[2i] the key and items[2i+1] the value, applied as one request. */
int mproc_dict_update(mproc_dict *d, const mproc_bytes *items, size_t n);
void mproc_dict_free(mproc_dict *d);

/* Manager().list(): a list of byte strings. Indexes < 0 count from the end. */
typedef struct mproc_list mproc_list;
int mproc_manager_list(mproc_manager *m, const char *name, mproc_list **l);
int mproc_list_append(mproc_list *l, const void *val, size_t len);
/* *val from malloc; MPROC_ENOTFOUND out of range. */
int mproc_list_get(mproc_list *l, long i, void **val, size_t *len);
long mproc_list_len(mproc_list *l);
int mproc_list_set(mproc_list *l, long i, const void *val, size_t len); /* MPROC_ENOTFOUND */
/* list.insert: i past either end is clamped to it. */
int mproc_list_insert(mproc_list *l, long i, const void *val, size_t len);
/* Removes item i and hands it over (*val from malloc); MPROC_ENOTFOUND out of range. */
int mproc_list_pop(mproc_list *l, long i, void **val, size_t *len);
/* Appends n values as one request. */
int mproc_list_extend(mproc_list *l, const mproc_bytes *vals, size_t n);
/* Removes the first item equal to val; MPROC_ENOTFOUND when none is. */
int mproc_list_remove(mproc_list *l, const void *val, size_t len);
int mproc_list_clear(mproc_list *l);
/* list.index(val, start, stop): the first index of an item equal to val within the slice
 * [start, stop) (clamped as a slice is; 0, LONG_MAX for the whole list), or a negative
 * code: MPROC_ENOTFOUND when none is. */
long mproc_list_index(mproc_list *l, const void *val, size_t len, long start, long stop);
/* list.count(val): how many items equal val, or a negative code. */
long mproc_list_count(mproc_list *l, const void *val, size_t len);
int mproc_list_reverse(mproc_list *l);
/* list.sort(): in place, stable, by Python's bytes order (memcmp over the common prefix,
 * then the shorter first); descending if reverse. */
int mproc_list_sort(mproc_list *l, bool reverse);
/* l[:]: a snapshot of the *n items in order, one malloc block as mproc_dict_keys (one
 * free()). */
int mproc_list_items(mproc_list *l, mproc_bytes **vals, size_t *n);
void mproc_list_free(mproc_list *l);

/* ------------------------------------------------------------------------------------------ */
/* Queue (Queue, SimpleQueue, JoinableQueue)                                                   */
/* ------------------------------------------------------------------------------------------ */

/* A queue lives in one shared mapping made by mproc_queue_new: a ring of messages whose data
 * area is a large MAP_NORESERVE reservation (about the machine's memory, at most 64 GiB of
 * address space), committed as the queue grows and given back when it drains (what its last
 * backlog needed, below 64 MiB, stays until 64 drains in a row have not needed it). So a message
 * of any size goes through whole, in one piece; a put returns once the message is in shared
 * memory (no reader needed for the putter to exit); only maxsize (in items) makes a put wait
 * (an unbounded queue holding megabytes may pause a put ~0.1 ms for readers to free room
 * before it grows again); MPROC_ENOMEM comes only when memory runs out. A process SIGKILLed
 * inside put or get costs at most that one message; everyone else goes on. Safe from several
 * threads. */
typedef struct mproc_queue mproc_queue;
typedef struct mproc_queue_opts {
  size_t maxsize; /* most items held at once; 0: unbounded */
  bool joinable;  /* JoinableQueue: task_done / join */
} mproc_queue_opts;

/* Makes a queue in fresh shared memory (opts NULL: unbounded, not joinable); *q is the
 * caller's, shared with children forked later. */
int mproc_queue_new(mproc_queue **q, const mproc_queue_opts *opts);
/* Copies buf (any size) into the queue; blocks while full. Timeout 0 and full: MPROC_EAGAIN.
 * Returns once the message is in shared memory: a putter never waits for a reader to exit. */
int mproc_queue_put(mproc_queue *q, const void *buf, size_t len, double timeout);
/* Takes the oldest message: *buf from malloc (caller frees). Timeout 0 and empty:
 * MPROC_EAGAIN; closed and drained: MPROC_ECLOSED. */
int mproc_queue_get(mproc_queue *q, void **buf, size_t *len, double timeout);
/* Items held now (exact when nothing else is in flight); negative on a bad handle. */
long mproc_queue_qsize(mproc_queue *q);
bool mproc_queue_empty(mproc_queue *q);
bool mproc_queue_full(mproc_queue *q);
/* No more puts, in every process (MPROC_ECLOSED); gets drain what is left. Twice: 0. */
int mproc_queue_close(mproc_queue *q);
/* JoinableQueue: marks one got item done (MPROC_ESTATE if too many). */
int mproc_queue_task_done(mproc_queue *q);
/* JoinableQueue: waits until every item put has been marked task_done. */
int mproc_queue_join(mproc_queue *q, double timeout);
void mproc_queue_free(mproc_queue *q);

/* ------------------------------------------------------------------------------------------ */
/* Synchronization                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Every synchronization object lives in shared memory made by its _new: create it before
 * fork() to share it with the child (the same handle works there). _free releases only the
 * calling process's view; other processes keep using the object, and the memory goes with
 * the last view. Timeouts: < 0 waits without limit; 0 never blocks (acquires then return
 * MPROC_EAGAIN, waits MPROC_ETIMEDOUT). Waiters spin briefly (a budget each object learns),
 * then sleep in a futex. */

/* Lock, or RLock when recursive. Owned by the acquiring thread; robust to a holder's death:
 * when a holder dies (killed at any moment), the next acquirer, or one already blocked, gets
 * the lock at once with MPROC_EOWNERDEAD. A plain Lock acquired again by its holder waits
 * (timeout 0: MPROC_EAGAIN), as in Python. */
typedef struct mproc_lock mproc_lock;
int mproc_lock_new(mproc_lock **l, bool recursive);
/* 0; MPROC_ETIMEDOUT; MPROC_EAGAIN (timeout 0); MPROC_EOWNERDEAD: acquired (held now), but
 * the previous holder died holding it — the protected data may be inconsistent. */
int mproc_lock_acquire(mproc_lock *l, double timeout);
/* MPROC_ESTATE if this thread does not hold it (another process or thread holds it, or no
 * one does). */
int mproc_lock_release(mproc_lock *l);
/* A lock the calling thread still holds is released first. */
void mproc_lock_free(mproc_lock *l);

/* Semaphore, or BoundedSemaphore. Not owned (any process may release): a process that dies
 * after acquiring does not give its unit back, as in Python. Use a Lock where a death must
 * be noticed. */
typedef struct mproc_sem mproc_sem;
/* value <= INT_MAX (else MPROC_EINVAL). */
int mproc_sem_new(mproc_sem **s, unsigned value, bool bounded);
/* 0; MPROC_EAGAIN (timeout 0); MPROC_ETIMEDOUT. */
int mproc_sem_acquire(mproc_sem *s, double timeout);
/* Bounded and already at its initial value (or any at INT_MAX): MPROC_ESTATE. */
int mproc_sem_release(mproc_sem *s);
/* The current value (>= 0), or a negative error. */
int mproc_sem_value(mproc_sem *s);
void mproc_sem_free(mproc_sem *s);

/* Event: a flag that processes wait for. */
typedef struct mproc_event mproc_event;
/* Makes an event, initially clear. */
int mproc_event_new(mproc_event **e);
/* Sets the flag and wakes every waiter; never blocks. */
int mproc_event_set(mproc_event *e);
/* Clears the flag; never blocks. */
int mproc_event_clear(mproc_event *e);
/* Whether the flag is set now (false for a NULL handle). */
bool mproc_event_is_set(mproc_event *e);
/* 0 when set, MPROC_ETIMEDOUT. Returns 0 also when the event was set during the wait and
 * cleared again before this waiter ran (threading.Event's rule). */
int mproc_event_wait(mproc_event *e, double timeout);
void mproc_event_free(mproc_event *e);

/* Condition; lock NULL: it makes its own RLock. A given lock is borrowed and must outlive c.
 * Waiters are woken in the order they began waiting. At most 1022 threads wait on one
 * Condition at a time (one more: MPROC_ENOMEM from mproc_cond_wait).
 *
 * When a process dies, survivors see exactly this:
 * - A waiter that dies while waiting is skipped by notify and not counted (each waiter holds
 *   a robust futex for the duration of its wait, so the kernel reports its death).
 * - A process that dies holding the lock: the next acquirer gets MPROC_EOWNERDEAD with the
 *   lock held; that includes a waiter taking the lock back at the end of mproc_cond_wait,
 *   which then returns MPROC_EOWNERDEAD (notified or timed out: unknown).
 * - A process that dies before it could notify is indistinguishable from a slow one: only
 *   a timeout ends the others' waits. */
typedef struct mproc_cond mproc_cond;
int mproc_cond_new(mproc_cond **c, mproc_lock *lock);
int mproc_cond_acquire(mproc_cond *c, double timeout);
int mproc_cond_release(mproc_cond *c);
/* Lock held on entry and on return; returns only when notified (0) or timed out
 * (MPROC_ETIMEDOUT), never spuriously. Not holding the lock: MPROC_ESTATE. An RLock held
 * several levels deep is released completely and taken back to the same depth. */
int mproc_cond_wait(mproc_cond *c, double timeout);
/* Wakes exactly min(n, waiting) waiters (n >= 0, else MPROC_EINVAL); returns 0. Lock must
 * be held (MPROC_ESTATE otherwise). */
int mproc_cond_notify(mproc_cond *c, int n);
int mproc_cond_notify_all(mproc_cond *c);
void mproc_cond_free(mproc_cond *c);

/* Barrier for parties (1..2^20) participants. When a process dies, survivors see exactly
 * this:
 * - One that dies after arriving (while waiting) still counts: the round completes when the
 *   others arrive, and they get their indices.
 * - One that dies before arriving is indistinguishable from a slow one: the others wait
 *   until a timeout, which breaks the barrier (that waiter MPROC_ETIMEDOUT, the rest and
 *   every later wait MPROC_ESTATE until reset). Use timeouts when a participant may die.
 * - One that dies inside the barrier's own bookkeeping (a few instructions under its
 *   internal robust mutex) breaks it, as an abort would.
 * More than parties + 1024 threads inside wait at once (possible only when more processes
 * than parties share it): the extra ones get MPROC_ENOMEM. */
typedef struct mproc_barrier mproc_barrier;
int mproc_barrier_new(mproc_barrier **b, unsigned parties);
/* A distinct index 0..parties-1; MPROC_ETIMEDOUT (and the barrier breaks); MPROC_ESTATE
 * when broken (until reset). */
int mproc_barrier_wait(mproc_barrier *b, double timeout);
/* Breaks it: waiters and later waits get MPROC_ESTATE until reset. */
int mproc_barrier_abort(mproc_barrier *b);
/* Back to the empty, unbroken state; those waiting now get MPROC_ESTATE (Python's
 * BrokenBarrierError). */
int mproc_barrier_reset(mproc_barrier *b);
void mproc_barrier_free(mproc_barrier *b);

/* ------------------------------------------------------------------------------------------ */
/* Shared memory, Value and Array                                                              */
/* ------------------------------------------------------------------------------------------ */

/* multiprocessing.shared_memory.SharedMemory: a named segment any process of the user can
 * attach. Names: up to 200 bytes of [A-Za-z0-9._-], optional leading '/'. */
typedef struct mproc_shm mproc_shm;
/* Creates a segment of size bytes (0: MPROC_EINVAL), zero-filled, mode 0600. name NULL: an
 * unguessable one is generated ("mproc-<pid>-<32 hex digits>"). A name already in use:
 * -EEXIST, and the existing segment is left untouched. No descriptor is kept open. */
int mproc_shm_create(mproc_shm **s, const char *name, size_t size);
/* Maps the whole segment (its current size); -ENOENT when no such name exists. */
int mproc_shm_attach(mproc_shm **s, const char *name);
void *mproc_shm_buf(const mproc_shm *s);
size_t mproc_shm_size(const mproc_shm *s);
/* The name without '/', ready for attach; owned by s. */
const char *mproc_shm_name(const mproc_shm *s);
/* Removes the name; mappings stay valid. mproc never unlinks on its own. */
int mproc_shm_unlink(mproc_shm *s);
/* Unmaps; does not unlink. */
void mproc_shm_free(mproc_shm *s);

/* Array, RawArray; a Value is an array of 1. Shared with children forked after it is made. */
typedef struct mproc_array mproc_array;
/* init NULL: zero-filled; else n * elem_size bytes copied. with_lock: an RLock comes with it. */
int mproc_array_new(mproc_array **a, size_t elem_size, size_t n, const void *init, bool with_lock);
void *mproc_array_data(const mproc_array *a);
size_t mproc_array_len(const mproc_array *a);
/* The array's RLock (owned by a), or NULL for a raw array. */
mproc_lock *mproc_array_lock(const mproc_array *a);
void mproc_array_free(mproc_array *a);

/* ------------------------------------------------------------------------------------------ */
/* Pool and AsyncResult                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* A pool of worker processes. Safe from several threads of the caller. A child forked
 * after the pool was made may submit too (apply, map, imap, their _async forms, poll,
 * fileno): its results come to it, its first call registers it with the pool (one round
 * trip), and free there releases only its own view; close, join and terminate are the
 * owner's (MPROC_ESTATE elsewhere), and an AsyncResult submitted before the fork is waited
 * for only where it was submitted (MPROC_ESTATE in the child). A worker that dies (signal, exit) or runs past task_timeout fails
 * only the task it held (MPROC_ECRASHED / MPROC_EEXPIRED) and is replaced; for map,
 * task_timeout applies to each element. map input and output that already lie in shared
 * memory the workers have (an mproc_array made before a fork-started pool) cross by
 * address, with no copy; under spawn and forkserver they are copied like any memory. */
typedef struct mproc_pool mproc_pool;
/* AsyncResult. */
typedef struct mproc_async mproc_async;
/* Where a task writes its result (valid only during the task call). */
typedef struct mproc_result mproc_result;

/* map: one fixed-size input element to one fixed-size output element. args: the call's
 * shared arguments (mproc_map_opts.args), NULL if none. Nonzero return: the element failed. */
typedef int (*mproc_map_fn)(const void *in, void *out, const void *args);

/* apply/imap: arbitrary bytes in, arbitrary bytes out. Nonzero return: MPROC_ETASK. */
typedef int (*mproc_task_fn)(const void *arg, size_t len, mproc_result *res);
/* A result buffer of len bytes to fill (replaces any earlier one); NULL on ENOMEM. */
void *mproc_result_alloc(mproc_result *res, size_t len);
/* Copies buf as the result. */
int mproc_result_set(mproc_result *res, const void *buf, size_t len);
/* Sets the failure message (printf format); returns MPROC_ETASK for `return mproc_result_fail(...)`. */
int mproc_result_fail(mproc_result *res, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

typedef struct mproc_pool_opts {
  int processes; /* 0: mproc_cpu_count() */
  int (*initializer)(const void *initargs, size_t len); /* once per worker; nonzero: it failed */
  const void *initargs;                                 /* copied */
  size_t initargs_len;
  unsigned maxtasksperchild; /* 0: unlimited */
  double task_timeout;       /* 0: none; a longer task is killed with its worker: MPROC_EEXPIRED */
  mproc_start_method start_method; /* how the supervisor is born; workers fork from it */
  /* Bytes of peak RSS: a worker past it after a task is replaced, like billiard's
   * max_memory_per_child (the task itself succeeds). 0: none. */
  size_t max_memory_per_child;
  /* A hard cap on each worker's memory, bytes (0: none); mproc_pool_memlimit says how it
   * is enforced. A task that dies of it fails with MPROC_ECRASHED and a message naming
   * memory_limit. */
  size_t memory_limit;
  /* How: MPROC_MEMLIMIT_NONE (0) for the best this machine allows (a cgroup, else
   * RLIMIT_DATA), or one kind (-EOPNOTSUPP at new when it cannot be had). */
  mproc_memlimit_kind memory_limit_how;
  const mproc_limits *limits;   /* copied; NULL: none */
  const mproc_sandbox *sandbox; /* copied; NULL: no sandbox */
} mproc_pool_opts;

typedef struct mproc_map_opts {
  size_t chunksize; /* 0: automatic (Python's ceil(n / (4 x workers)), at most 1 MiB, the
                       last workers x chunksize elements in quarter-size chunks) */
  const void *args; /* copied to the workers once per call, passed to every fn call */
  size_t args_len;
} mproc_map_opts;

/* Starts the workers (and runs the initializer) now. Initializer failing in the first
 * workers: MPROC_ETASK; a first worker dying while it starts: MPROC_ECRASHED; no process to
 * be had: -EAGAIN. In each case nothing is left behind. */
int mproc_pool_new(mproc_pool **p, const mproc_pool_opts *opts);
/* Runs fn(arg) in a worker and waits: 0 and *res (malloc'd, caller frees; res may be NULL),
 * or the task's error code. */
int mproc_pool_apply(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len, void **res,
                     size_t *res_len);
/* Submits fn(arg) (arg copied now); *r is the caller's, freed with mproc_async_free. */
int mproc_pool_apply_async(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                           mproc_async **r);
/* out[i] = fn(in[i]) for i < n, in chunks. Returns 0 or the first failure's code; the other
 * chunks still run and out is filled where they succeeded. */
int mproc_pool_map(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                   void *out, size_t out_size, const mproc_map_opts *opts);
/* As map, without waiting. in and out must stay valid until *r is ready. For the index and
 * message of the first failed element: mproc_async_fail_index / mproc_async_error. */
int mproc_pool_map_async(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                         size_t in_size, void *out, size_t out_size, const mproc_map_opts *opts,
                         mproc_async **r);
/* No more work: later submissions get MPROC_ECLOSED. */
int mproc_pool_close(mproc_pool *p);
/* After close or terminate: waits for the workers to finish and exit. MPROC_ESTATE otherwise. */
int mproc_pool_join(mproc_pool *p);
/* Stops now: returns once the workers are dead; unfinished tasks fail with MPROC_ECANCELLED. */
int mproc_pool_terminate(mproc_pool *p);
/* Terminates if still running; leaves no process, descriptor or segment. */
void mproc_pool_free(mproc_pool *p);

/* 0 and the result (*res from malloc, a fresh copy each call; res and len may be NULL), or
 * the task's error code; MPROC_ETIMEDOUT if not ready in time. map_async: status only. */
int mproc_async_get(mproc_async *r, void **res, size_t *len, double timeout);
/* 0 when ready, MPROC_ETIMEDOUT. */
int mproc_async_wait(mproc_async *r, double timeout);
bool mproc_async_ready(mproc_async *r);
/* Ready and succeeded. */
bool mproc_async_successful(mproc_async *r);
/* Why it failed (owned by r); NULL if it did not fail or is not ready. */
const char *mproc_async_error(mproc_async *r);
/* map_async: index of the first failed element; SIZE_MAX if none failed or not ready. */
size_t mproc_async_fail_index(mproc_async *r);
/* Releases r; an unfinished result is discarded. */
void mproc_async_free(mproc_async *r);

/* imap / imap_unordered: an iterator over fn(item) for a stream of items, each item and each
 * result any number of bytes. Items are pulled lazily: at most buffersize of them are held
 * (submitted, running, or done and not yet returned by next), so memory stays bounded
 * however long the stream. An iterator is for one thread at a time, in the pool's owner. */
typedef struct mproc_imap mproc_imap;

/* Pulls the next item: returns 1 with *item / *len set (the bytes need stay valid only until
 * the next call), 0 at the end, or a negative code to stop with that error. Called in the
 * caller's thread, inside mproc_pool_imap_gen and mproc_imap_next only. */
typedef int (*mproc_imap_gen_fn)(void *ctx, const void **item, size_t *len);
/* Progress: done items (returned by next) of total (0 when unknown: a generator). Runs in
 * the caller's thread inside mproc_imap_next, once for each item returned. */
typedef void (*mproc_progress_fn)(size_t done, size_t total, void *ctx);

typedef struct mproc_imap_opts {
  bool unordered;     /* imap_unordered: results as they come, not in input order */
  size_t chunksize;   /* items per task; 0: 1, as in Python */
  size_t buffersize;  /* most items held at once; 0: 1024 (at least 2 chunks per worker) */
  mproc_progress_fn progress; /* NULL: none */
  void *progress_ctx;
} mproc_imap_opts;

/* Iterates over n items (items[i] of lens[i] bytes; the arrays and bytes stay the caller's
 * and must stay valid until *it is freed). Submits the first buffersize items now. */
int mproc_pool_imap(mproc_pool *p, mproc_task_fn fn, const void *const *items,
                    const size_t *lens, size_t n, const mproc_imap_opts *opts,
                    mproc_imap **it);
/* Iterates over the items gen(gen_ctx) yields, pulled as room frees up. */
int mproc_pool_imap_gen(mproc_pool *p, mproc_task_fn fn, mproc_imap_gen_fn gen, void *gen_ctx,
                        const mproc_imap_opts *opts, mproc_imap **it);
/* The next result: 0 and *res / *len (owned by it, valid until the next call or free,
 * aligned as malloc's memory is; res and len may be NULL); the item's own error (MPROC_ETASK, MPROC_ECRASHED when its worker
 * died, MPROC_EEXPIRED, MPROC_ECANCELLED) at its position, and the iteration goes on;
 * MPROC_EOF at the end (again on every later call); MPROC_ETIMEDOUT; a generator's error
 * after the items it yielded before. As in Python, an iterator made before mproc_pool_close
 * goes on submitting its input after it; mproc_pool_join (or terminate) cuts it off: the
 * first item then refused fails with MPROC_ECLOSED at its position and ends the stream.
 * Blocks up to timeout, collecting results (and running callbacks). -EINTR: see Ctrl-C. */
int mproc_imap_next(mproc_imap *it, const void **res, size_t *len, double timeout);
/* The input index (0-based) of the item next returned last; SIZE_MAX before the first. */
size_t mproc_imap_index(const mproc_imap *it);
/* Why the item next returned last failed (owned by it); NULL if it succeeded. */
const char *mproc_imap_error(const mproc_imap *it);
/* Releases it; items not yet returned are cancelled (results discarded). Never blocks.
 * Free iterators before their pool. */
void mproc_imap_free(mproc_imap *it);

/* Callbacks. They run in the caller's process, never on a hidden thread and never under a
 * lock of mproc's: in whichever of the pool owner's threads is inside one of these calls on
 * the pool when the event has been collected (or later in that call): mproc_async_get /
 * _wait / _ready on a result not ready yet, mproc_pool_apply / _map / _map_ex,
 * mproc_imap_next, mproc_pool_poll, and (the error callbacks of unfinished tasks,
 * MPROC_ECANCELLED) mproc_pool_join / _terminate / _free. Each runs once, in the order the
 * events were collected, one at a time (an mproc call inside a callback runs no others); a
 * callback may call mproc functions, but must not free its own r, and r must not be freed
 * by another thread while its callback may be running. */
typedef void (*mproc_async_fn)(mproc_async *r, void *ctx);
typedef struct mproc_async_opts {
  mproc_async_fn callback;       /* r succeeded (r is ready: mproc_async_get works at once) */
  mproc_async_fn error_callback; /* r failed, cancelled included */
  mproc_progress_fn progress;    /* map: elements done (their chunk came back) of n */
  void *ctx;                     /* passed to all three */
} mproc_async_opts;
/* As mproc_pool_apply_async / _map_async / _map, with callbacks (cb NULL: none). */
int mproc_pool_apply_async_ex(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                              const mproc_async_opts *cb, mproc_async **r);
int mproc_pool_map_async_ex(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                            size_t in_size, void *out, size_t out_size,
                            const mproc_map_opts *opts, const mproc_async_opts *cb,
                            mproc_async **r);
int mproc_pool_map_ex(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                      void *out, size_t out_size, const mproc_map_opts *opts,
                      const mproc_async_opts *cb);
/* A descriptor (owned by p; never read it) that is readable while results have arrived or
 * callbacks are due, for poll/epoll/libuv: when it is, call mproc_pool_poll(p, 0). */
int mproc_pool_fileno(mproc_pool *p);
/* Grows or shrinks a running pool to n workers (1..4096). Growing forks the new workers
 * soon after (they run the initializer; they do not delay this call). Shrinking retires
 * workers behind the tasks already submitted: running and queued tasks all finish. Never
 * blocks. MPROC_ESTATE after close/terminate or outside the owner. */
int mproc_pool_resize(mproc_pool *p, int n);
/* The pids of the workers taking tasks now: up to n into pids; returns how many there are
 * (may exceed n), or an error. Workers starting or retiring are not listed. */
int mproc_pool_workers(mproc_pool *p, pid_t *pids, size_t n);
/* How the pool's memory_limit is enforced (MPROC_MEMLIMIT_NONE without one, or for NULL). */
mproc_memlimit_kind mproc_pool_memlimit(mproc_pool *p);
/* Collects the results that have arrived, waiting up to timeout for one, and runs the
 * callbacks due. Returns how many callbacks ran (>= 0), or an error (-EINTR). */
int mproc_pool_poll(mproc_pool *p, double timeout);

/* Ctrl-C. The pool's processes ignore SIGINT (the terminal sends it to the whole group; it
 * is the caller's to handle). When a signal handler of the caller runs in a thread blocked
 * in a pool call (mproc_async_get / _wait, mproc_pool_apply / _map, mproc_imap_next,
 * mproc_pool_join, mproc_pool_poll), that call returns -EINTR promptly, SA_RESTART or not,
 * whatever the signal (a program with, say, a SIGCHLD handler calls again); the pool stays
 * usable and mproc_pool_free still ends every process. An apply or map so interrupted
 * abandons its tasks (their results are dropped; a chunk already running may still write a
 * shared out). A handler that runs in the first microseconds of a wait (before it sleeps)
 * may be reported only by the next wait. */

/* ------------------------------------------------------------------------------------------ */
/* Manager: managed Queue, Lock, Semaphore, Event, Condition, Barrier; Value, Namespace       */
/* ------------------------------------------------------------------------------------------ */

/* Managed objects live in the Manager's server, opened by name ("created or opened": one
 * opened again keeps what it was made with; the name of another kind: MPROC_EINVAL). The
 * queue and synchronization ones are the local kinds' own handles: every mproc_queue_*,
 * mproc_lock_*, mproc_sem_*, mproc_event_*, mproc_cond_* and mproc_barrier_* call works on
 * them with the local semantics and codes, each call one request to the server (a blocking
 * one waits there, holding no one else up; its timeout is counted there). Differences:
 * - A managed Lock is owned by the connection (one per process: the manager handle), not
 *   the thread. When a client process dies (or its connection ends) holding a Lock, the
 *   next acquirer, or one already waiting, gets it with MPROC_EOWNERDEAD.
 * - The server's death: every call, blocked ones too, returns MPROC_EOF promptly, then
 *   MPROC_ECLOSED (the manager handle's rules).
 * - The handles do not cross to spawned children (mproc_process_opts.handles); a forked
 *   child uses them as they are (its own connection, so its own Lock ownership).
 * - Free each with its kind's _free (the object stays in the server), before the manager. */
int mproc_manager_lock(mproc_manager *m, const char *name, bool recursive, mproc_lock **l);
/* value <= INT_MAX. */
int mproc_manager_sem(mproc_manager *m, const char *name, unsigned value, bool bounded,
                      mproc_sem **s);
int mproc_manager_event(mproc_manager *m, const char *name, mproc_event **e);
/* lock NULL: the Condition's own RLock; else a managed Lock of the same manager. */
int mproc_manager_cond(mproc_manager *m, const char *name, mproc_lock *lock, mproc_cond **c);
/* parties 1..2^20. */
int mproc_manager_barrier(mproc_manager *m, const char *name, unsigned parties,
                          mproc_barrier **b);
/* Queue or JoinableQueue (opts NULL: unbounded, not joinable). */
int mproc_manager_queue(mproc_manager *m, const char *name, const mproc_queue_opts *opts,
                        mproc_queue **q);

/* Manager().Value(): one byte string, read and replaced whole (atomically). */
typedef struct mproc_value mproc_value;
/* Made with init[len) if absent. */
int mproc_manager_value(mproc_manager *m, const char *name, const void *init, size_t len,
                        mproc_value **v);
/* *val from malloc (the caller frees it). */
int mproc_value_get(mproc_value *v, void **val, size_t *len);
int mproc_value_set(mproc_value *v, const void *val, size_t len);
void mproc_value_free(mproc_value *v);

/* Manager().Namespace(): attributes by name. */
typedef struct mproc_namespace mproc_namespace;
int mproc_manager_namespace(mproc_manager *m, const char *name, mproc_namespace **ns);
int mproc_ns_set(mproc_namespace *ns, const char *attr, const void *val, size_t len);
/* *val from malloc; MPROC_ENOTFOUND (Python's AttributeError) when it has none such. */
int mproc_ns_get(mproc_namespace *ns, const char *attr, void **val, size_t *len);
int mproc_ns_del(mproc_namespace *ns, const char *attr); /* MPROC_ENOTFOUND */
/* The attributes' names now: as mproc_dict_keys (one block, one free()). */
int mproc_ns_attrs(mproc_namespace *ns, mproc_bytes **names, size_t *n);
void mproc_ns_free(mproc_namespace *ns);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_H */
