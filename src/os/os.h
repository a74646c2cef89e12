/*
 * The porting contract: everything mproc needs from the operating system. Only src/os/
 * (os_linux.c, os_linux_signal.c) implements it; no other file includes Linux-specific
 * headers or makes a system call of its own.
 *
 * Not covered, used directly by the layers above because they are the same on every POSIX
 * system and cannot fail in a way to report: _exit, getppid, the pthread mutex and
 * condition calls on private (in-process) objects, and building sigset_t values
 * (sigemptyset, sigaddset) and struct pollfd arrays.
 *
 * Conventions: functions return 0 (or a documented non-negative value) or -errno. Every
 * syscall is retried on EINTR unless the function says it reports -EINTR. Every descriptor
 * is made close-on-exec.
 *
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds (int64_t). MPROC__NEVER waits without
 * limit; a deadline already past (0 included) means "try once, do not block".
 */
#ifndef MPROC_OS_H
#define MPROC_OS_H

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MPROC__NEVER INT64_MAX

/* ---- clocks and deadlines ---- */

/* CLOCK_MONOTONIC now, in ns. */
int64_t mproc__now_ns(void);
/* timeout < 0: MPROC__NEVER; 0: 0 (past); else now + timeout. */
int64_t mproc__deadline(double timeout);
/* The same, counted from now (a clock reading the caller already has). */
int64_t mproc__deadline_from(int64_t now, double timeout);
/* ns left until deadline (0 if past, INT64_MAX for MPROC__NEVER). */
int64_t mproc__remaining_ns(int64_t deadline);
/* Milliseconds for poll(2): -1 for NEVER, rounded up so a wait never ends early. */
int mproc__poll_ms(int64_t deadline);

/* ---- futexes (shared between processes: never FUTEX_PRIVATE) ---- */

/* Sleeps while *addr == expected, until woken or the deadline. 0 when woken or *addr
 * differed, -ETIMEDOUT, or -EINTR when a signal handler ran (callers loop or report it). */
int mproc__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline);
/* Wakes up to n sleepers on addr (INT32_MAX: all). Returns how many woke. */
int mproc__futex_wake(_Atomic uint32_t *addr, int n);

/* A short pause for spin loops (the CPU's pause instruction). */
void mproc__cpu_relax(void);
/* Gives the CPU to another runnable thread, if one waits for it (sched_yield). */
void mproc__yield(void);

/* ---- robust process-shared mutex ---- */

/* A mutex in shared memory, owned by the thread that locked it. When its holder dies, the
 * next locker gets MPROC_EOWNERDEAD with the mutex held (already made consistent). */
typedef struct mproc__mutex {
  pthread_mutex_t m;
} mproc__mutex;

/* Initializes m in place (m must lie in memory shared before any fork that uses it). */
int mproc__mutex_init(mproc__mutex *m, bool recursive);
/* 0; MPROC_EOWNERDEAD (held now); -ETIMEDOUT when the deadline passed without it. */
int mproc__mutex_lock(mproc__mutex *m, int64_t deadline);
/* 0, or MPROC_ESTATE when the calling thread does not hold it. */
int mproc__mutex_unlock(mproc__mutex *m);
/* Whether the calling thread holds m (for recursive mutexes too). */
bool mproc__mutex_held(mproc__mutex *m);
/* One attempt, never blocks and never reads the clock: 0; MPROC_EOWNERDEAD (held now);
 * -EBUSY when someone (this thread included, for a plain mutex) holds it. */
int mproc__mutex_trylock(mproc__mutex *m);
/* Whether a live thread holds m right now (one that died holding it does not). */
bool mproc__mutex_locked(mproc__mutex *m);

/* ---- memory ---- */

/* MAP_SHARED memory, zero-filled, shared with children forked later and, through its
 * descriptor (mproc__shared_lookup), with children that were not forked. NULL and errno on
 * failure. Unmap whole mappings only. */
void *mproc__shared_map(size_t len);
void mproc__shared_unmap(void *p, size_t len);
/* The mapping made by mproc__shared_map/_reserve/_map_at that holds p: *base, *len, and its
 * descriptor (owned by the mapping: do not close) as the return value; -ENOENT when p is in
 * none, and when it has no descriptor the error that kept it from having one (memfd_create's,
 * e.g. -EMFILE). */
int mproc__shared_lookup(const void *p, void **base, size_t *len);
/* Maps len bytes of the shared memory fd at exactly base (never replacing a mapping there:
 * -EEXIST) and takes fd over (closed at unmap; on failure the caller keeps it). 0 or -errno. */
int mproc__shared_map_at(void *base, size_t len, int fd);
/* Maps len bytes of the shared memory fd wherever there is room (for memory another process
 * made after this one was forked: its address may be taken here) and takes fd over (closed
 * at unmap; on failure the caller keeps it). NULL and errno on failure. */
void *mproc__shared_map_fd(int fd, size_t len);
/* Whether len bytes (up to 64 are looked at) at p can be read without a fault. */
bool mproc__readable(const void *p, size_t len);
/* Page size, cached. */
size_t mproc__page_size(void);
/* len rounded up to whole pages; 0 on overflow. */
size_t mproc__page_round(size_t len);
/* Reserves len bytes of anonymous MAP_SHARED address space with MAP_NORESERVE: shared with
 * children forked later, zero-filled, pages committed only when touched or committed below.
 * NULL and errno on failure. Release with mproc__shared_unmap. */
void *mproc__shared_reserve(size_t len);
/* Commits the pages of [p, p+len) now (MADV_POPULATE_WRITE where the kernel has it), so that
 * running out of memory is -ENOMEM here instead of SIGBUS at first touch. 0 or -errno. */
int mproc__shared_commit(void *p, size_t len);
/* Makes the whole pages inside [p, p+len) present and writable in this process, with one
 * call instead of a fault per page, when mincore finds any of them missing (looking costs
 * ~1.6 us a MiB; a fault ~10 us a page on a VM, populating ~0.7 us). The bytes are left
 * as they are. Best effort: memory it cannot populate faults in as usual. */
void mproc__prefault_write(void *p, size_t len);
/* Gives the pages of [p, p+len) (page aligned) back to the system (MADV_REMOVE): they read as
 * zero afterwards, in every process that maps them. 0 or -errno. */
int mproc__shared_discard(void *p, size_t len);
/* Physical memory of the machine in bytes (at least one page). */
size_t mproc__phys_mem(void);

/* Named shared memory ("/name", POSIX shm_open). Creates name exclusively (-EEXIST leaves
 * an existing segment untouched) with len bytes, mapped shared read-write at *p; a failed
 * call leaves no segment behind. Unmap with mproc__shared_unmap. 0 or -errno. */
int mproc__named_create(const char *name, size_t len, void **p);
/* Sets fd's size to len, and allocates its blocks too when allocate (-ENOSPC now rather than
 * SIGBUS at a first touch). Past RLIMIT_FSIZE: -EFBIG, and the SIGXFSZ it raises is consumed
 * in this thread, never delivered. 0 or -errno. */
int mproc__file_size(int fd, size_t len, bool allocate);
/* Maps all of an existing named segment: *p, *len. -EINVAL for an empty one (it cannot be
 * mapped). 0 or -errno. */
int mproc__named_attach(const char *name, void **p, size_t *len);
/* Removes the name; mappings stay valid until unmapped. 0 or -errno. */
int mproc__named_unlink(const char *name);

/* ---- descriptors ---- */

/* Reads exactly len bytes unless EOF comes first. Returns bytes read (< len only at EOF) or
 * -errno. Partial reads and EINTR handled. */
ssize_t mproc__read_full(int fd, void *buf, size_t len);
/* Reads buf[*got..len), counting progress in *got (a call cut short resumes where it was):
 * 0 when complete, MPROC_EOF at end of file first, -ETIMEDOUT at the deadline, -errno.
 * Waits through EINTR and non-blocking descriptors. */
int mproc__read_until(int fd, void *buf, size_t len, size_t *got, int64_t deadline);
/* One readv(2) of whatever has come, up to the buffers' total, waiting for the first byte
 * until the deadline: the bytes read (> 0), MPROC_EOF at end of file, -ETIMEDOUT at the
 * deadline, -errno. Waits through EINTR and non-blocking descriptors. */
struct iovec;
ssize_t mproc__readv_some(int fd, struct iovec *iov, int iovcnt, int64_t deadline);
/* Writes all len bytes: 0 or -errno (-EPIPE for a gone peer; SIGPIPE is never raised). */
int mproc__write_full(int fd, const void *buf, size_t len);
/* As mproc__write_full, for several buffers (writev), tracking partial writes. */
struct iovec;
int mproc__writev_full(int fd, struct iovec *iov, int iovcnt);
/* Waits until fd has any of events: 1 ready (revents in *revents if non-NULL), 0 at the
 * deadline, -errno. */
int mproc__poll_fd(int fd, short events, int64_t deadline, short *revents);
/* poll(2) on n descriptors until the deadline (rounded up to poll's milliseconds): how many
 * are ready, 0 at the deadline, or -errno; -EINTR is reported, not retried. */
int mproc__poll(struct pollfd *fds, size_t n, int64_t deadline);
/* The same with the thread's signal mask set to *mask while it sleeps, atomically
 * (ppoll(2)): a signal that mask lets through interrupts it with -EINTR. */
int mproc__ppoll(struct pollfd *fds, size_t n, int64_t deadline, const sigset_t *mask);
/* A close-on-exec pipe (non-blocking too if nonblock): 0 or -errno. */
int mproc__pipe(int fds[2], bool nonblock);
/* Raises the pipe's buffer to at least size bytes, best effort (the kernel may refuse past
 * pipe-max-size or the user's quota; the default buffer then does). */
void mproc__pipe_grow(int fd, int size);
/* close(2) that never retries on EINTR (Linux has released the descriptor by then). */
void mproc__close(int fd);
/* dup2(2), retried on EINTR and EBUSY (a race with another thread's open). 0 or -errno. */
int mproc__dup2(int from, int to);
/* A close-on-exec copy of fd (the lowest free number), or -errno. */
int mproc__dup_cloexec(int fd);
/* Whether fd is an open descriptor. */
bool mproc__fd_is_open(int fd);
/* Points descriptors 0, 1 and 2 at /dev/null: for a long-lived helper process that must
 * not keep the caller's terminal or pipes open. 0 or -errno. */
int mproc__stdio_to_null(void);

/* ---- Unix sockets that carry descriptors ---- */

/* Most descriptors one message carries (the kernel's SCM_MAX_FD is 253). */
#define MPROC__FDS_MAX 250
/* A close-on-exec AF_UNIX socketpair, SOCK_SEQPACKET or SOCK_STREAM. 0 or -errno. */
int mproc__socketpair(int fds[2], bool seqpacket);
/* Sends all len (> 0) bytes of buf with nfds descriptors riding on the first byte (the
 * sender keeps its copies). A dead peer is -EPIPE, never SIGPIPE. 0 or -errno. */
int mproc__send_fds(int sock, const void *buf, size_t len, const int *fds, size_t nfds);
/* send(2) of all len bytes with MSG_NOSIGNAL. 0 or -errno. */
int mproc__write_sock(int sock, const void *buf, size_t len);
/* One recvmsg of up to len bytes; up to *nfds descriptors that came with them (close-on-exec)
 * go to fds, their number to *nfds. More descriptors than room: all closed, -EMSGSIZE.
 * Returns bytes read (0 at EOF) or -errno. */
ssize_t mproc__recv_fds(int sock, void *buf, size_t len, int *fds, size_t *nfds);

/* ---- listening and connecting sockets (Listener/Client) ---- */

/* A socket address of any family, opaque above os/. */
typedef struct mproc__sockaddr {
  _Alignas(8) unsigned char raw[128];
  uint32_t len;
} mproc__sockaddr;
/* A Unix address: a path, or (abstract) a name in the abstract namespace. -ENAMETOOLONG
 * for an empty name or one past sun_path. */
int mproc__addr_unix(mproc__sockaddr *a, const char *name, bool abstract);
/* A TCP address from a host name or numeric address (IPv4 or IPv6) and a decimal port:
 * the resolver's first answer. 0, -EADDRNOTAVAIL when the host does not resolve, -errno. */
int mproc__addr_tcp(mproc__sockaddr *a, const char *host, const char *port);
bool mproc__addr_is_unix(const mproc__sockaddr *a);
/* "unix:PATH", "unix:@NAME", "tcp:HOST:PORT", "tcp:[HOST6]:PORT" into buf[cap]. 0 or -errno. */
int mproc__addr_format(const mproc__sockaddr *a, char *buf, size_t cap);
/* A non-blocking close-on-exec stream socket bound to *a and listening; *a becomes the bound
 * address (the port the kernel chose for port 0). The descriptor, or -errno. */
int mproc__sock_listen(mproc__sockaddr *a, int backlog);
/* accept4 of one waiting connection, blocking and close-on-exec (TCP_NODELAY for TCP): the
 * descriptor, -EAGAIN when none waits, or -errno. */
int mproc__sock_accept(int lfd);
/* A blocking close-on-exec stream socket connected to *a before the deadline (TCP_NODELAY
 * for TCP): the descriptor, -ETIMEDOUT, -ECONNREFUSED, -ENOENT, or another -errno. */
int mproc__sock_connect(const mproc__sockaddr *a, int64_t deadline);
/* sendmsg(2) of every byte of the buffers with MSG_NOSIGNAL, tracking partial sends (the
 * iovecs are consumed). 0 or -errno (-EPIPE for a gone peer; SIGPIPE is never raised). */
int mproc__sendv_sock(int sock, struct iovec *iov, int iovcnt);
/* A fresh directory only this user may enter (mkdtemp under $TMPDIR or /tmp) into buf[cap]. */
int mproc__private_dir(char *buf, size_t cap);
/* unlink(2) and rmdir(2): 0 or -errno. */
int mproc__unlink(const char *path);
int mproc__rmdir(const char *path);

/* ---- processes ---- */

/* posix_spawn of path (vfork-like: the caller's page tables are not copied, and it is safe
 * with threads), keep_fd left open in the child. 0 and *pid, or -errno (exec's own error
 * included). */
int mproc__spawn_exe(const char *path, char *const argv[], char *const envp[], int keep_fd,
                     pid_t *pid);
/* Sends sig through a pidfd (no pid-reuse race for a process that is not our child). */
int mproc__pidfd_kill(int pidfd, int sig);
/* Where function fn lies: the loaded object's path ("" for the main program) into
 * path[cap] and fn's offset in it. -ENOENT when no object file holds fn. */
int mproc__fn_locate(const void *fn, char *path, size_t cap, uint64_t *off);
/* As mproc__fn_locate, with the object's load base and the span of its segments:
 * span = {base, lo, hi}. */
int mproc__fn_object(const void *fn, char *path, size_t cap, uintptr_t span[3]);
/* The function at off in the object path ("": the main program), dlopening it if it is not
 * loaded yet. 0 and *fn, or -ENOENT. */
int mproc__fn_resolve(const char *path, uint64_t off, void **fn);

/* fork(2) after flushing stdout/stderr, so buffered output is neither lost nor doubled. */
pid_t mproc__fork(void);
/* fork(2) for mproc's own single-threaded processes (a supervisor forking its workers):
 * no stdio flush and no atfork handlers (no other thread can hold a lock, nothing was
 * buffered; the program's handlers ran when that process itself was forked, and the child
 * inherits what they reset), only the id caches reset in the child. Each page the parent
 * or the child writes after a fork costs a fault (~6 us on this VM); the handlers and the
 * flush wrote ~15 of them per worker. */
pid_t mproc__fork_lean(void);
/* A pidfd for pid (close-on-exec), or -errno (-ENOSYS where the kernel lacks it). */
int mproc__pidfd_open(pid_t pid);
/* A copy of descriptor fd of the process pidfd refers to (close-on-exec; needs the right
 * to ptrace it: -EPERM otherwise), or -errno (-ENOSYS before Linux 5.6). */
int mproc__pidfd_getfd(int pidfd, int fd);
/* Makes the calling (just forked) child get sig when its parent dies, then checks that the
 * parent is still expected_parent: -ESRCH if it already died. Async-signal-safe. */
int mproc__die_with_parent(pid_t expected_parent, int sig);
/* waitpid(pid, status, flags) retried on EINTR: the pid, 0 (WNOHANG, still running), -errno. */
pid_t mproc__waitpid(pid_t pid, int *status, int flags);
/* Python's exitcode from a wait status: exit status, or -signal. */
int mproc__exitcode(int status);
/* Gettid. */
pid_t mproc__gettid(void);
/* getpid(), cached; reset in a forked child. */
pid_t mproc__getpid(void);
/* Fills buf with len bytes from the kernel's CSPRNG: 0 or -errno. */
int mproc__random_bytes(void *buf, size_t len);

/* ---- signals ---- */

/* kill(2): 0 or -errno. */
int mproc__kill(pid_t pid, int sig);
/* Blocks, in the calling thread, every signal but the synchronous faults (SEGV, BUS, FPE,
 * ILL, TRAP: a fault must still kill at once); *old gets the mask as it was. */
void mproc__block_async_signals(sigset_t *old);
/* Blocks the signals in *mask in the calling thread; *old (if non-NULL) gets the old mask. */
void mproc__block_signals(const sigset_t *mask, sigset_t *old);
/* Sets the calling thread's signal mask to *mask. */
void mproc__set_signal_mask(const sigset_t *mask);
/* Whether a signal is pending that *old lets through and that has a handler installed: one
 * that came while blocked and runs once *old is back. */
bool mproc__handler_pending(const sigset_t *old);
/* Sets sig's disposition to SIG_IGN (ignore) or SIG_DFL. */
void mproc__signal_set(int sig, bool ignore);

/* ---- wake-up descriptors (for the pool's supervisor) ---- */

/* A non-blocking close-on-exec eventfd, or -errno. */
int mproc__eventfd(void);
/* Adds 1 to an eventfd (never blocks); 0 or -errno. Async-signal-safe. */
int mproc__eventfd_signal(int fd);
/* Resets an eventfd to 0 (never blocks). */
void mproc__eventfd_drain(int fd);
/* A non-blocking close-on-exec signalfd for the signals in *mask (the caller blocks them),
 * or -errno. */
int mproc__signalfd(const void *mask /* sigset_t */);
/* One pending signal from a signalfd: its number, 0 when none is pending, or -errno. */
int mproc__signalfd_read(int fd);

/* ---- shared mappings (for zero-copy hand-over of data already in shared memory) ---- */

/* What backs a mapping: two processes whose mappings of one address have the same identity
 * see the same bytes there. */
typedef struct mproc__mapping_id {
  uintptr_t start, end;
  uint64_t dev, inode, offset;
} mproc__mapping_id;
/* Finds the MAP_SHARED mapping that holds all of [addr, addr + len) in process pid (0: this
 * process): 0 and *id, -ENOENT when there is none (private memory, or the range spans
 * mappings), or -errno. */
int mproc__shared_mapping_find(pid_t pid, const void *addr, size_t len, mproc__mapping_id *id);

/* ---- CPUs ---- */

/* CPUs in the affinity mask, lowered by a cgroup v2 cpu.max quota. >= 1. */
int mproc__cpu_count(void);

/* ---- fault injection (builds with MPROC_FAULT_INJECTION: the sanitizer build's tests) ----
 * Each call below that can fail from outside (memory, descriptors, processes) asks first
 * whether it is the one to fail; tests/inject/ walks that failure over every such call a
 * lifecycle makes. Without the option the question compiles to false. */
enum {
  MPROC__INJ_MMAP = 1u << 0,
  MPROC__INJ_MEMFD = 1u << 1,
  MPROC__INJ_FTRUNCATE = 1u << 2,
  MPROC__INJ_FORK = 1u << 3,
  MPROC__INJ_PIDFD = 1u << 4,
  MPROC__INJ_SOCKET = 1u << 5,
  MPROC__INJ_MALLOC = 1u << 6, /* asked by the test's malloc wrappers (ld --wrap) */
  MPROC__INJ_FD = 1u << 7,     /* eventfd, signalfd, pipe */
};
#ifdef MPROC_FAULT_INJECTION
/* true, with errno = err, when this call of that kind is the one to fail. */
bool mproc__inject(unsigned kind, int err);
#else
static inline bool mproc__inject(unsigned kind, int err) {
  (void)kind;
  (void)err;
  return false;
}
#endif

/* ---- what a process may do (os_linux_limits.c) ---- */

enum { MPROC__RLIM_AS = 1, MPROC__RLIM_DATA, MPROC__RLIM_CPU, MPROC__RLIM_NOFILE, MPROC__RLIM_FSIZE,
       MPROC__RLIM_NPROC };
/* Sets the soft limit which (MPROC__RLIM_*, in bytes, seconds or a count; UINT64_MAX:
 * none), capped at the hard one; the hard limit too when hard_too (irreversible without
 * privilege). 0 or -errno. */
int mproc__rlimit_set(int which, uint64_t soft, bool hard_too);
/* CPU time this process has used, in ns (0 if the clock cannot be read). */
int64_t mproc__cpu_time_ns(void);
/* The process's peak resident set size, in bytes (getrusage's ru_maxrss). */
uint64_t mproc__peak_rss(void);
/* PR_SET_NO_NEW_PRIVS: exec can never again raise privileges. 0 or -errno. */
int mproc__no_new_privs(void);
/* Installs a SIGSYS handler for the seccomp filter's traps: it stores the denied call's
 * number in *record and kills the process with SIGSYS. 0 or -errno. */
int mproc__sigsys_trap(_Atomic int32_t *record);
/* The kernel's Landlock ABI version (>= 1), or -errno (-EOPNOTSUPP, -ENOSYS: none). */
int mproc__landlock_abi(void);
/* Landlock: from now on this process may use paths only to read files and list
 * directories under dirs[0..n) (n == 0: no path at all). 0 or -errno. */
int mproc__landlock_read_only(const char *const *dirs, size_t n);
/* Whether mproc was built with libseccomp (the sandbox and the processes limit need it). */
bool mproc__seccomp_available(void);
/* Loads a seccomp filter in the calling process (no_new_privs is set with it). sandbox:
 * only the calls of computing on descriptors it has (plus extra[0..n_extra), by name) are
 * allowed, every other traps (mproc__sigsys_trap); no_processes: making a process (fork,
 * vfork, clone without CLONE_THREAD) traps, threads stay allowed. 0, -EINVAL for an
 * unknown name in extra, -EOPNOTSUPP without libseccomp, or -errno. */
int mproc__seccomp_apply(bool sandbox, bool no_processes, const char *const *extra,
                         size_t n_extra);
/* The number of the system call named name on this architecture, or -ENOENT. */
int mproc__syscall_nr(const char *name);
/* The name of system call nr on this architecture into buf, or -ENOENT. */
int mproc__syscall_name(int nr, char *buf, size_t cap);

/* ---- memory cgroups for children (os_linux_cgroup.c) ---- */

enum { MPROC__MEMCG_V1 = 1, MPROC__MEMCG_V2 = 2 };
#define MPROC__MEMCG_PATH 1024
/* Where this process may make memory cgroups for its children: a directory below its own
 * group (v2 with the memory controller on for its children, else v1's memory hierarchy)
 * in which a group could be made and capped just now. Writes it into dir; returns
 * MPROC__MEMCG_V2 / _V1, or -EOPNOTSUPP. */
int mproc__memcg_probe(char *dir, size_t cap);
/* Makes dir/name with a cap of limit bytes (and no swap past it) and moves the calling
 * process into it. 0 or -errno (then nothing is left made). */
int mproc__memcg_enter(int kind, const char *dir, const char *name, uint64_t limit);
/* How many processes the OOM killer has killed in dir/name, or -errno. */
int64_t mproc__memcg_oom_kills(int kind, const char *dir, const char *name);
/* Removes dir/name (ENOENT counts as done); wait: its last process was just reaped, so
 * retry briefly while the kernel still counts it. 0 or -errno. */
int mproc__memcg_remove(const char *dir, const char *name, bool wait);
/* Removes every group in dir whose name starts with prefix and that holds no process. */
void mproc__memcg_sweep(const char *dir, const char *prefix);

/* ---- the Manager server's threads (its own process: threads are allowed there) ---- */
/* Starts a thread running fn(arg) with every signal blocked (the process's first thread
 * takes them). 0 or -errno. */
int mproc__thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
/* Waits for the thread to end (its return value dropped). */
void mproc__thread_join(pthread_t t);
/* shutdown(2) of both directions: a thread blocked reading or writing fd returns. */
void mproc__sock_shutdown(int fd);

#endif /* MPROC_OS_H */
