/*
 * The sync layer: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, all
 * usable across processes.
 *
 * Every object lives in the shared arena (shm.h) and the handle is its address there, so an
 * object made before a fork is the same pointer in the child; free gives up this process's
 * use only (the memory goes with the last process's view).
 *
 * Lock/RLock are the kernel's robust futexes (glibc's robust process-shared mutex), so a
 * holder's death hands the lock to the next acquirer at once with MPROC_EOWNERDEAD. The
 * others are futex words with waiter counts (an uncontended post or set is one atomic op,
 * no syscall), an adaptive spin before sleeping, and absolute deadlines so EINTR never
 * stretches a wait.
 *
 * Condition and Barrier queue their sleepers in a table of waiter slots (struct wslot). Each
 * waiter holds its slot's robust mutex while it waits, so a waiter that dies is seen by the
 * next notifier (the kernel clears the holder's tid at its exit) and is neither counted nor
 * left in the table. A waiter's outcome (notified, released, broken) is written into its own
 * slot, so a wait never returns spuriously and notify(n) wakes exactly min(n, waiting).
 */
#define _GNU_SOURCE
#include "core/internal.h"
#include "core/arena.h"
#include "core/sync.h"
#include "core/start.h"

#include <limits.h>
#include <string.h>

#define LOCK_MAGIC 0x4c4f434bu    /* "LOCK" */
#define SEM_MAGIC 0x53454d41u     /* "SEMA" */
#define EVENT_MAGIC 0x45564e54u   /* "EVNT" */
#define COND_MAGIC 0x434f4e44u    /* "COND" */
#define BARRIER_MAGIC 0x42415252u /* "BARR" */

/* Adaptive spinning before a futex sleep (a pause is ~30 ns here). A hand-off between two
 * running processes takes well under a microsecond, while a futex sleep and wake costs
 * several to tens of microseconds on a VM; but when the peer is not running (a busy
 * machine) spinning only burns time, even the peer's. So each object keeps a spin budget in
 * shared memory: a spin that ends with the awaited thing raises it to twice what was
 * needed; a spin that ended in a sleep doubles it when the sleep was shorter than the spin
 * (spinning twice as long would have caught it) and halves it otherwise. Below SPIN_MIN,
 * one spin in 16 probes at full length, which is how two processes that fell into sleeping
 * hand-offs get back to spinning ones; probes that keep failing are made rarer, down to one
 * in 256, so a busy machine pays little for them. A zeroed budget starts with a probe. */
enum { SPIN_MIN = 16, SPIN_MAX = 300, SPIN_PROBE_EVERY = 16, SPIN_PROBE_SHIFT_MAX = 4 };

static int spin_rounds(mproc__spin *sp) {
  uint32_t b = atomic_load_explicit(&sp->budget, memory_order_relaxed);
  if (b >= SPIN_MIN)
    return (int)b;
  uint32_t t = atomic_fetch_add_explicit(&sp->tries, 1, memory_order_relaxed);
  uint32_t every = SPIN_PROBE_EVERY << atomic_load_explicit(&sp->probe_shift,
                                                            memory_order_relaxed);
  return t % every == 0 ? SPIN_MAX : SPIN_MIN;
}

static void spin_set(mproc__spin *sp, uint32_t b) {
  atomic_store_explicit(&sp->budget, b > SPIN_MAX ? SPIN_MAX : b, memory_order_relaxed);
}

static void spin_won(mproc__spin *sp, int used) {
  uint32_t want = 2 * (uint32_t)used + SPIN_MIN;
  if (atomic_load_explicit(&sp->budget, memory_order_relaxed) < want)
    spin_set(sp, want);
  if (atomic_load_explicit(&sp->probe_shift, memory_order_relaxed))
    atomic_store_explicit(&sp->probe_shift, 0, memory_order_relaxed);
}

/* A spin of `rounds` (begun at spin_start) failed; sleeping began at sleep_start and just
 * ended with the awaited thing. */
static void spin_slept(mproc__spin *sp, int rounds, int64_t spin_start, int64_t sleep_start) {
  int64_t now = mproc__now_ns();
  uint32_t b = atomic_load_explicit(&sp->budget, memory_order_relaxed);
  bool nearly = now - sleep_start < sleep_start - spin_start;
  spin_set(sp, nearly ? (b < SPIN_MIN ? 2 * SPIN_MIN : 2 * b) : b / 2);
  uint32_t shift = atomic_load_explicit(&sp->probe_shift, memory_order_relaxed);
  if (!nearly && rounds == SPIN_MAX && b < SPIN_MIN && shift < SPIN_PROBE_SHIFT_MAX)
    atomic_store_explicit(&sp->probe_shift, shift + 1, memory_order_relaxed);
}

/* What Semaphore.acquire and Event.wait wait for: ready(obj) takes it (or sees it happened)
 * and says so; when not, *sleep_on is the futex word's value to sleep on. */
typedef bool (*wait_ready_fn)(void *obj, uint32_t *sleep_on);

/* Sleeps on *word, counted in *waiters, until ready, the deadline or an error. seq_cst pairs
 * with the waker's change-then-read of waiters: either the waker sees us counted and
 * wakes, or we see its change (the kernel rechecks the word too). */
static int counted_sleep(_Atomic uint32_t *word, _Atomic uint32_t *waiters, wait_ready_fn ready,
                         void *obj, int64_t deadline) {
  atomic_fetch_add(waiters, 1);
  int rc = 0;
  uint32_t v;
  while (!ready(obj, &v)) {
    rc = mproc__futex_wait(word, v, deadline);
    if (rc == -ETIMEDOUT) {
      rc = ready(obj, &v) ? 0 : MPROC_ETIMEDOUT;
      break;
    }
    if (rc < 0 && rc != -EINTR)
      break;
    rc = 0;
  }
  atomic_fetch_sub(waiters, 1);
  return rc;
}

/* The slow path of Semaphore.acquire and Event.wait: the learned spin, then the counted
 * sleep, with timeout counted from the spin's start. */
static int spin_then_sleep(mproc__spin *sp, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                           wait_ready_fn ready, void *obj, double timeout) {
  int64_t t0 = mproc__now_ns();
  int n = spin_rounds(sp);
  uint32_t v;
  for (int i = 0; i < n; i++) {
    mproc__cpu_relax();
    if (ready(obj, &v)) {
      spin_won(sp, i);
      return 0;
    }
  }
  int64_t t1 = mproc__now_ns();
  int rc = counted_sleep(word, waiters, ready, obj, mproc__deadline_from(t0, timeout));
  if (rc == 0)
    spin_slept(sp, n, t0, t1);
  return rc;
}

#define LOAD(p) atomic_load_explicit((p), memory_order_acquire)
#define STORE(p, v) atomic_store_explicit((p), (v), memory_order_release)

/* ------------------------------------------------------------------------------------------ */
/* Lock, RLock                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static bool lock_ok(const mproc_lock *l) { return l && l->magic == LOCK_MAGIC; }

int mproc__lock_init(mproc_lock *l, bool recursive, bool embedded) {
  int rc = mproc__mutex_init(&l->m, recursive);
  if (rc)
    return rc;
  l->recursive = recursive;
  l->embedded = embedded;
  l->magic = LOCK_MAGIC;
  return 0;
}

int mproc_lock_new(mproc_lock **out, bool recursive) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  mproc_lock *l = mproc__shared_alloc(sizeof *l);
  if (!l)
    return -errno;
  int rc = mproc__lock_init(l, recursive, false);
  if (rc) {
    mproc__shared_free(l, sizeof *l);
    return rc;
  }
  *out = l;
  return 0;
}

/* A spinning waiter reads the lock word only every LOCK_GAP pauses (~1 us). Each read
 * pulls the line out of the holder's cache, so its next acquire misses; and a waiter that
 * checks often grabs the lock in the holder's short free window between release and
 * re-acquire, so the line changes hands on nearly every acquire. Two processes
 * incrementing a counter: gap 1 gives 1.8e7 ops/s, gap 32 gives 4.4e7. */
enum { LOCK_GAP = 32 };

/* Acquires l: one try, then (unless timeout is 0) a bounded spin, then a futex sleep.
 * The fast path reads no clock. */
static int lock_take(mproc_lock *l, double timeout) {
  /* Look before the CAS: a failed CAS still takes the line from the holder. An RLock may
   * be this thread's own, which only the try can tell. */
  int rc = -EBUSY;
  if (MPROC__LIKELY(!mproc__mutex_locked(&l->m)) || l->recursive)
    rc = mproc__mutex_trylock(&l->m);
  if (MPROC__LIKELY(rc != -EBUSY))
    return rc;
  if (timeout == 0)
    return MPROC_EAGAIN;
  /* A plain lock held by this very thread is only released by it: spinning cannot help. */
  int64_t t0 = mproc__now_ns();
  int n = 0;
  if (!mproc__mutex_held(&l->m)) {
    n = spin_rounds(&l->spin);
    for (int i = 0; i < n;) {
      for (int k = 0; k < LOCK_GAP; k++)
        mproc__cpu_relax();
      i += LOCK_GAP;
      if (!mproc__mutex_locked(&l->m) && (rc = mproc__mutex_trylock(&l->m)) != -EBUSY) {
        spin_won(&l->spin, i);
        return rc;
      }
    }
  }
  /* The timeout counts from the call, the spin included. */
  int64_t t1 = mproc__now_ns();
  rc = mproc__mutex_lock(&l->m, mproc__deadline_from(t0, timeout));
  if (rc == 0 || rc == MPROC_EOWNERDEAD)
    spin_slept(&l->spin, n, t0, t1);
  return rc; /* -ETIMEDOUT is MPROC_ETIMEDOUT */
}

int mproc_lock_acquire(mproc_lock *l, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(l)))
    return mproc__rcall(l, MPROC__R_ACQUIRE, 0, timeout, NULL);
  if (MPROC__UNLIKELY(!lock_ok(l)))
    return MPROC_EINVAL;
  return lock_take(l, timeout);
}

int mproc_lock_release(mproc_lock *l) {
  if (MPROC__UNLIKELY(mproc__is_remote(l)))
    return mproc__rcall(l, MPROC__R_RELEASE, 0, 0, NULL);
  if (MPROC__UNLIKELY(!lock_ok(l)))
    return MPROC_EINVAL;
  return mproc__mutex_unlock(&l->m);
}

/* Releases every level of a (possibly recursive) lock held by this thread; returns how
 * many there were. */
static unsigned lock_release_all(mproc_lock *l) {
  unsigned depth = 0;
  while (mproc__mutex_held(&l->m) && mproc__mutex_unlock(&l->m) == 0)
    depth++;
  return depth;
}

void mproc__lock_drop(mproc_lock *l) {
  /* A mutex this thread holds is on its robust list, which the kernel walks when the thread
   * exits: left there unmapped, it would stop that walk and other robust mutexes would not
   * be recovered. And no one else could ever take it. So let go of it first. */
  (void)lock_release_all(l);
}

void mproc_lock_free(mproc_lock *l) {
  if (MPROC__UNLIKELY(mproc__is_remote(l))) {
    ((mproc__remote *)l)->ops->free((mproc__remote *)l);
    return;
  }
  /* The magic stays: other processes may still be using the same memory. */
  if (lock_ok(l) && !l->embedded) {
    mproc__lock_drop(l);
    mproc__shared_free(l, sizeof *l);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Semaphore, BoundedSemaphore                                                                 */
/* ------------------------------------------------------------------------------------------ */

struct mproc_sem {
  uint32_t magic;
  _Atomic uint32_t value;   /* the futex word */
  /* Sleepers (or about to be): a post with none is one CAS. A sleeper killed stays
   * counted, which only costs later posts a needless wake call. */
  _Atomic uint32_t waiters;
  uint32_t initial;
  bool bounded;
  mproc__spin spin;
};

static bool sem_ok(const mproc_sem *s) { return s && s->magic == SEM_MAGIC; }

int mproc_sem_new(mproc_sem **out, unsigned value, bool bounded) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  if (value > INT_MAX)
    return MPROC_EINVAL;
  mproc_sem *s = mproc__shared_alloc(sizeof *s);
  if (!s)
    return -errno;
  atomic_init(&s->value, value);
  s->initial = value;
  s->bounded = bounded;
  s->magic = SEM_MAGIC;
  *out = s;
  return 0;
}

static bool sem_try(mproc_sem *s) {
  uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
  while (v > 0)
    if (atomic_compare_exchange_weak_explicit(&s->value, &v, v - 1, memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  return false;
}

static bool sem_ready(void *obj, uint32_t *sleep_on) {
  *sleep_on = 0;
  return sem_try(obj);
}

int mproc_sem_acquire(mproc_sem *s, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(s)))
    return mproc__rcall(s, MPROC__R_ACQUIRE, 0, timeout, NULL);
  if (!sem_ok(s))
    return MPROC_EINVAL;
  if (sem_try(s))
    return 0;
  if (timeout == 0)
    return MPROC_EAGAIN;
  return spin_then_sleep(&s->spin, &s->value, &s->waiters, sem_ready, s, timeout);
}

int mproc_sem_release(mproc_sem *s) {
  if (MPROC__UNLIKELY(mproc__is_remote(s)))
    return mproc__rcall(s, MPROC__R_RELEASE, 0, 0, NULL);
  if (!sem_ok(s))
    return MPROC_EINVAL;
  uint32_t limit = s->bounded ? s->initial : (uint32_t)INT_MAX;
  uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
  do {
    if (v >= limit)
      return MPROC_ESTATE;
  } while (!atomic_compare_exchange_weak(&s->value, &v, v + 1));
  if (atomic_load(&s->waiters) > 0)
    mproc__futex_wake(&s->value, 1);
  return 0;
}

int mproc_sem_value(mproc_sem *s) {
  if (MPROC__UNLIKELY(mproc__is_remote(s)))
    return (int)mproc__rnum(s, MPROC__R_VALUE);
  if (!sem_ok(s))
    return MPROC_EINVAL;
  return (int)LOAD(&s->value);
}

void mproc_sem_free(mproc_sem *s) {
  if (MPROC__UNLIKELY(mproc__is_remote(s))) {
    ((mproc__remote *)s)->ops->free((mproc__remote *)s);
    return;
  }
  if (sem_ok(s))
    mproc__shared_free(s, sizeof *s);
}

/* ------------------------------------------------------------------------------------------ */
/* Event                                                                                       */
/* ------------------------------------------------------------------------------------------ */

struct mproc_event {
  uint32_t magic;
  /* Bit 0: the flag. Bits 1..31: how many times it was set (mod 2^31), so a waiter that saw
   * it clear returns 0 once it was set, even if it was cleared again before the waiter ran
   * (threading.Event's rule). The futex word. */
  _Atomic uint32_t word;
  _Atomic uint32_t waiters;
  mproc__spin spin;
};

static bool event_ok(const mproc_event *e) { return e && e->magic == EVENT_MAGIC; }

int mproc_event_new(mproc_event **out) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  mproc_event *e = mproc__shared_alloc(sizeof *e);
  if (!e)
    return -errno;
  e->magic = EVENT_MAGIC;
  *out = e;
  return 0;
}

/* Sets or clears the flag (a set also counts one more set): whether it changed. */
static bool event_flip(mproc_event *e, bool set) {
  uint32_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
  do {
    if ((w & 1) == set)
      return false;
  } while (!atomic_compare_exchange_weak(&e->word, &w, set ? (w + 2) | 1 : w & ~1u));
  return true;
}

int mproc_event_set(mproc_event *e) {
  if (MPROC__UNLIKELY(mproc__is_remote(e)))
    return mproc__rcall(e, MPROC__R_SET, 0, 0, NULL);
  if (!event_ok(e))
    return MPROC_EINVAL;
  if (event_flip(e, true) && atomic_load(&e->waiters) > 0)
    mproc__futex_wake(&e->word, INT32_MAX);
  return 0;
}

int mproc_event_clear(mproc_event *e) {
  if (MPROC__UNLIKELY(mproc__is_remote(e)))
    return mproc__rcall(e, MPROC__R_CLEAR, 0, 0, NULL);
  if (!event_ok(e))
    return MPROC_EINVAL;
  event_flip(e, false);
  return 0;
}

bool mproc_event_is_set(mproc_event *e) {
  if (MPROC__UNLIKELY(mproc__is_remote(e)))
    return mproc__rnum(e, MPROC__R_VALUE) == 1;
  return event_ok(e) && (LOAD(&e->word) & 1);
}

typedef struct event_waiter {
  mproc_event *e;
  uint32_t seen; /* the word as this waiter found it, clear */
} event_waiter;

/* Any change from a clear word means a set happened. */
static bool event_ready(void *obj, uint32_t *sleep_on) {
  event_waiter *w = obj;
  *sleep_on = w->seen;
  return atomic_load(&w->e->word) != w->seen;
}

int mproc_event_wait(mproc_event *e, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(e)))
    return mproc__rcall(e, MPROC__R_WAIT, 0, timeout, NULL);
  if (!event_ok(e))
    return MPROC_EINVAL;
  event_waiter w = {e, LOAD(&e->word)};
  if (w.seen & 1)
    return 0;
  if (timeout == 0)
    return MPROC_ETIMEDOUT;
  return spin_then_sleep(&e->spin, &e->word, &e->waiters, event_ready, &w, timeout);
}

void mproc_event_free(mproc_event *e) {
  if (MPROC__UNLIKELY(mproc__is_remote(e))) {
    ((mproc__remote *)e)->ops->free((mproc__remote *)e);
    return;
  }
  if (event_ok(e))
    mproc__shared_free(e, sizeof *e);
}

/* ------------------------------------------------------------------------------------------ */
/* Waiter slots, for Condition and Barrier                                                     */
/* ------------------------------------------------------------------------------------------ */

/* A slot's state, its futex word. FREE -> WAITING (spinning) -> SLEEPING -> one of GRANTED
 * (notified / barrier released), BROKEN (barrier broken or reset) by a granter, or
 * CANCELLED by the waiter itself when its time is up -> FREE. Exactly one of granter and
 * waiter moves it out of WAITING/SLEEPING, by CAS: that is what makes notify exact. */
enum { W_FREE, W_WAITING, W_SLEEPING, W_GRANTED, W_BROKEN, W_CANCELLED };

typedef struct wslot {
  /* Held by the waiting thread from before the slot leaves FREE until after it is FREE
   * again: a slot that is not FREE while its owner is not held belongs to a dead thread. */
  mproc__mutex owner;
  _Atomic uint32_t state;
  uint32_t ticket; /* arrival order, for FIFO notify */
} MPROC__ALIGNED wslot;

/* The table. Registering and granting must be serialized by the caller (the Condition's
 * lock, the Barrier's internal mutex); a waiter cancels and leaves without it. */
typedef struct waitlist {
  uint32_t hwm; /* slots[0..hwm) have been initialized */
  uint32_t cap;
  uint32_t next_ticket;
  wslot *slots; /* inside the same shared mapping: the same address in every process */
  mproc__spin spin;
} waitlist;

static bool slot_waiting(uint32_t st) { return st == W_WAITING || st == W_SLEEPING; }

/* Takes a slot for the calling thread, in state WAITING. Returns its index or MPROC_ENOMEM
 * when the table is full. */
static int wl_register(waitlist *wl) {
  wslot *s = NULL;
  for (uint32_t i = 0; i < wl->hwm && !s; i++) {
    wslot *c = &wl->slots[i];
    if (LOAD(&c->state) != W_FREE) {
      if (mproc__mutex_locked(&c->owner))
        continue;
      STORE(&c->state, W_FREE); /* its waiter died: reclaim it */
    }
    int rc = mproc__mutex_trylock(&c->owner); /* busy: its last waiter is just leaving */
    if (rc == 0 || rc == MPROC_EOWNERDEAD)
      s = c;
  }
  if (!s) {
    if (wl->hwm == wl->cap)
      return MPROC_ENOMEM;
    s = &wl->slots[wl->hwm];
    int rc = mproc__mutex_init(&s->owner, false);
    if (rc == 0)
      rc = mproc__mutex_trylock(&s->owner);
    if (rc)
      return rc;
    wl->hwm++;
  }
  s->ticket = wl->next_ticket++;
  STORE(&s->state, W_WAITING);
  return (int)(s - wl->slots);
}

/* Hands outcome to the waiter in s. True when a live waiter got it; a dead one's slot is
 * freed instead, and one that has just cancelled keeps its timeout. Death is judged before
 * the grant: a live waiter holds its owner mutex from before it waits until after it has
 * left, but once granted it may leave at once, so "unowned" after the grant would not mean
 * dead. (A waiter dying between the check and the grant counts as notified.) */
static bool slot_grant(wslot *s, uint32_t outcome) {
  uint32_t old = LOAD(&s->state);
  if (!slot_waiting(old))
    return false;
  if (!mproc__mutex_locked(&s->owner)) {
    atomic_compare_exchange_strong(&s->state, &old, W_FREE);
    return false;
  }
  do {
    if (!slot_waiting(old))
      return false;
  } while (!atomic_compare_exchange_weak(&s->state, &old, outcome));
  if (old == W_SLEEPING)
    mproc__futex_wake(&s->state, 1);
  return true;
}

/* Grants outcome to every waiter; returns how many live ones got it. */
static int wl_grant_all(waitlist *wl, uint32_t outcome) {
  int n = 0;
  for (uint32_t i = 0; i < wl->hwm; i++)
    n += slot_grant(&wl->slots[i], outcome);
  return n;
}

/* The waiter that registered first among those still waiting, or NULL. */
static wslot *wl_oldest(waitlist *wl) {
  wslot *best = NULL;
  for (uint32_t i = 0; i < wl->hwm; i++) {
    wslot *s = &wl->slots[i];
    if (!slot_waiting(LOAD(&s->state)))
      continue;
    if (!best || (int32_t)(s->ticket - best->ticket) < 0)
      best = s;
  }
  return best;
}

/* Waits until s is granted or the deadline passes; returns the state then (W_SLEEPING: time
 * is up and the caller must cancel). */
static uint32_t slot_wait(waitlist *wl, wslot *s, int64_t deadline) {
  uint32_t st;
  int64_t t0 = mproc__now_ns();
  int n = 0;
  if (deadline != 0) {
    n = spin_rounds(&wl->spin);
    for (int i = 0; i < n; i++) {
      if (!slot_waiting(st = LOAD(&s->state))) {
        spin_won(&wl->spin, i);
        return st;
      }
      mproc__cpu_relax();
    }
  }
  uint32_t expect = W_WAITING;
  if (!atomic_compare_exchange_strong(&s->state, &expect, W_SLEEPING))
    return expect; /* granted meanwhile */
  int64_t t1 = mproc__now_ns();
  for (;;) {
    int rc = mproc__futex_wait(&s->state, W_SLEEPING, deadline);
    if ((st = LOAD(&s->state)) != W_SLEEPING) {
      spin_slept(&wl->spin, n, t0, t1);
      return st;
    }
    if (rc < 0 && rc != -EINTR)
      return W_SLEEPING; /* -ETIMEDOUT (or a futex failure, treated alike: never hang) */
  }
}

/* The waiter gives up: W_CANCELLED if it was still waiting, else what it was granted. */
static uint32_t slot_cancel(wslot *s) {
  uint32_t old = LOAD(&s->state);
  while (slot_waiting(old))
    if (atomic_compare_exchange_weak(&s->state, &old, W_CANCELLED))
      return W_CANCELLED;
  return old;
}

/* FREE before the owner goes: a registrant that sees FREE while the owner is still held
 * just skips the slot, and "not FREE and no owner" keeps meaning "its waiter died". */
static void slot_leave(wslot *s) {
  STORE(&s->state, W_FREE);
  mproc__mutex_unlock(&s->owner);
}

/* ------------------------------------------------------------------------------------------ */
/* Condition                                                                                   */
/* ------------------------------------------------------------------------------------------ */

enum { COND_SLOTS = 1022 }; /* the whole object in 64 KiB */

struct mproc_cond {
  uint32_t magic;
  mproc_lock *lock; /* the user's, or &own */
  waitlist wl;      /* registering and notifying happen under *lock */
  mproc_lock own MPROC__ALIGNED;
  wslot slots[COND_SLOTS];
};

_Static_assert(sizeof(struct mproc_cond) <= 65536, "a Condition should fit in 64 KiB");

static bool cond_ok(const mproc_cond *c) { return c && c->magic == COND_MAGIC; }

int mproc_cond_new(mproc_cond **out, mproc_lock *lock) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  if (lock && !lock_ok(lock))
    return MPROC_EINVAL;
  mproc_cond *c = mproc__shared_alloc(sizeof *c);
  if (!c)
    return -errno;
  c->lock = lock;
  if (!lock) {
    int rc = mproc__lock_init(&c->own, true, true);
    if (rc) {
      mproc__shared_free(c, sizeof *c);
      return rc;
    }
    c->lock = &c->own;
  }
  c->wl.cap = COND_SLOTS;
  c->wl.slots = c->slots; /* slots' mutexes are set up as the table grows */
  c->magic = COND_MAGIC;
  *out = c;
  return 0;
}

int mproc_cond_acquire(mproc_cond *c, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(c)))
    return mproc__rcall(c, MPROC__R_ACQUIRE, 0, timeout, NULL);
  if (!cond_ok(c))
    return MPROC_EINVAL;
  return lock_take(c->lock, timeout);
}

int mproc_cond_release(mproc_cond *c) {
  if (MPROC__UNLIKELY(mproc__is_remote(c)))
    return mproc__rcall(c, MPROC__R_RELEASE, 0, 0, NULL);
  if (!cond_ok(c))
    return MPROC_EINVAL;
  return mproc__mutex_unlock(&c->lock->m);
}

/* Takes the lock back to depth levels, however long it takes (Python does the same). */
static int lock_restore(mproc_lock *l, unsigned depth) {
  int rc = 0;
  for (unsigned i = 0; i < depth; i++) {
    int r = mproc__mutex_lock(&l->m, MPROC__NEVER);
    if (r == MPROC_EOWNERDEAD)
      rc = r;
    else if (r && !rc)
      rc = r;
  }
  return rc;
}

int mproc_cond_wait(mproc_cond *c, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(c)))
    return mproc__rcall(c, MPROC__R_WAIT, 0, timeout, NULL);
  if (!cond_ok(c))
    return MPROC_EINVAL;
  if (!mproc__mutex_held(&c->lock->m))
    return MPROC_ESTATE;
  int64_t deadline = mproc__deadline(timeout);
  /* Registered while the lock is held: a notify made after we release it sees us. */
  int idx = wl_register(&c->wl);
  if (idx < 0)
    return idx;
  wslot *s = &c->wl.slots[idx];
  unsigned depth = lock_release_all(c->lock);
  uint32_t st = slot_wait(&c->wl, s, deadline);
  if (st == W_SLEEPING)
    st = slot_cancel(s);
  slot_leave(s);
  int rc = lock_restore(c->lock, depth);
  if (rc)
    return rc; /* MPROC_EOWNERDEAD: held, but its last holder died holding it */
  return st == W_GRANTED ? 0 : MPROC_ETIMEDOUT;
}

int mproc_cond_notify(mproc_cond *c, int n) {
  if (MPROC__UNLIKELY(mproc__is_remote(c)))
    return n < 0 ? MPROC_EINVAL : mproc__rcall(c, MPROC__R_NOTIFY, n, 0, NULL);
  if (!cond_ok(c) || n < 0)
    return MPROC_EINVAL;
  if (!mproc__mutex_held(&c->lock->m))
    return MPROC_ESTATE;
  wslot *s;
  for (int woken = 0; woken < n && (s = wl_oldest(&c->wl)) != NULL;)
    woken += slot_grant(s, W_GRANTED);
  return 0;
}

int mproc_cond_notify_all(mproc_cond *c) {
  if (MPROC__UNLIKELY(mproc__is_remote(c)))
    return mproc__rcall(c, MPROC__R_NOTIFY, -1, 0, NULL);
  if (!cond_ok(c))
    return MPROC_EINVAL;
  if (!mproc__mutex_held(&c->lock->m))
    return MPROC_ESTATE;
  wl_grant_all(&c->wl, W_GRANTED);
  return 0;
}

void mproc_cond_free(mproc_cond *c) {
  if (MPROC__UNLIKELY(mproc__is_remote(c))) {
    ((mproc__remote *)c)->ops->free((mproc__remote *)c);
    return;
  }
  if (!cond_ok(c))
    return;
  if (c->lock == &c->own)
    mproc__lock_drop(&c->own);
  mproc__shared_free(c, sizeof *c);
}

/* ------------------------------------------------------------------------------------------ */
/* Barrier                                                                                     */
/* ------------------------------------------------------------------------------------------ */

enum { BARRIER_MAX_PARTIES = 1 << 20, BARRIER_SPARE_SLOTS = 1024 };

struct mproc_barrier {
  uint32_t magic;
  uint32_t parties;
  size_t len; /* of the whole object */
  /* Under m: */
  uint32_t count; /* arrivals in the current round */
  bool broken;
  waitlist wl;
  mproc__mutex m MPROC__ALIGNED;
  wslot slots[]; /* parties + spare: sleepers of this round plus late leavers of the last */
};

static bool barrier_ok(const mproc_barrier *b) { return b && b->magic == BARRIER_MAGIC; }

int mproc_barrier_new(mproc_barrier **out, unsigned parties) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  if (parties == 0 || parties > BARRIER_MAX_PARTIES)
    return MPROC_EINVAL;
  uint32_t cap = parties + BARRIER_SPARE_SLOTS;
  size_t len = sizeof(struct mproc_barrier) + cap * sizeof(wslot);
  mproc_barrier *b = mproc__shared_alloc(len);
  if (!b)
    return -errno;
  int rc = mproc__mutex_init(&b->m, false);
  if (rc) {
    mproc__shared_free(b, len);
    return rc;
  }
  b->parties = parties;
  b->len = len;
  b->wl.cap = cap;
  b->wl.slots = b->slots;
  b->magic = BARRIER_MAGIC;
  *out = b;
  return 0;
}

/* Breaks the round: every waiter gets MPROC_ESTATE, and so does every later wait until a
 * reset. Under m. */
static void barrier_break(mproc_barrier *b) {
  b->broken = true;
  b->count = 0;
  wl_grant_all(&b->wl, W_BROKEN);
}

/* Takes m. A process that died holding it died mid-bookkeeping (count may be off): the
 * barrier is broken, as if that participant had aborted it. */
static void barrier_lock(mproc_barrier *b) {
  if (mproc__mutex_lock(&b->m, MPROC__NEVER) == MPROC_EOWNERDEAD)
    barrier_break(b);
}

static void barrier_unlock(mproc_barrier *b) { mproc__mutex_unlock(&b->m); }

/* Sleeps in slot idx until the round ends; returns the index, MPROC_ETIMEDOUT or
 * MPROC_ESTATE. */
static int barrier_sleep(mproc_barrier *b, int idx, int index, int64_t deadline) {
  wslot *s = &b->wl.slots[idx];
  uint32_t st = slot_wait(&b->wl, s, deadline);
  if (st == W_SLEEPING) {
    /* Cancel under m, so no round can complete between our timeout and the break. */
    barrier_lock(b);
    st = slot_cancel(s);
    if (st == W_CANCELLED)
      barrier_break(b);
    barrier_unlock(b);
  }
  slot_leave(s);
  if (st == W_CANCELLED)
    return MPROC_ETIMEDOUT;
  return st == W_GRANTED ? index : MPROC_ESTATE;
}

int mproc_barrier_wait(mproc_barrier *b, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(b))) {
    int64_t i = 0;
    int rc = mproc__rcall(b, MPROC__R_WAIT, 0, timeout, &i);
    return rc ? rc : (int)i;
  }
  if (!barrier_ok(b))
    return MPROC_EINVAL;
  int64_t deadline = mproc__deadline(timeout);
  barrier_lock(b);
  if (b->broken) {
    barrier_unlock(b);
    return MPROC_ESTATE;
  }
  int index = (int)b->count++;
  if (b->count == b->parties) {
    b->count = 0;
    wl_grant_all(&b->wl, W_GRANTED);
    barrier_unlock(b);
    return index;
  }
  int idx = wl_register(&b->wl);
  if (idx < 0) {
    b->count--;
    barrier_unlock(b);
    return idx;
  }
  barrier_unlock(b);
  return barrier_sleep(b, idx, index, deadline);
}

int mproc_barrier_abort(mproc_barrier *b) {
  if (MPROC__UNLIKELY(mproc__is_remote(b)))
    return mproc__rcall(b, MPROC__R_ABORT, 0, 0, NULL);
  if (!barrier_ok(b))
    return MPROC_EINVAL;
  barrier_lock(b);
  barrier_break(b);
  barrier_unlock(b);
  return 0;
}

int mproc_barrier_reset(mproc_barrier *b) {
  if (MPROC__UNLIKELY(mproc__is_remote(b)))
    return mproc__rcall(b, MPROC__R_RESET, 0, 0, NULL);
  if (!barrier_ok(b))
    return MPROC_EINVAL;
  barrier_lock(b);
  barrier_break(b); /* those waiting now get MPROC_ESTATE (Python's BrokenBarrierError) */
  b->broken = false;
  barrier_unlock(b);
  return 0;
}

void mproc_barrier_free(mproc_barrier *b) {
  if (MPROC__UNLIKELY(mproc__is_remote(b))) {
    ((mproc__remote *)b)->ops->free((mproc__remote *)b);
    return;
  }
  if (barrier_ok(b))
    mproc__shared_free(b, b->len);
}

/* ---- crossing to a child that was not forked ---- */

/* A Condition made on the user's lock needs that lock's mapping too. */
static int cond_export(const void *h, mproc__msg *m) {
  const mproc_cond *c = h;
  mproc__msg_put_mem(m, c->lock);
  return mproc__kind_same_export(h, m);
}

__attribute__((constructor(MPROC__CTOR_KINDS))) static void sync_kinds(void) {
  static const mproc__kind k[] = {
      {LOCK_MAGIC, mproc__kind_same_export, mproc__kind_same_import},
      {SEM_MAGIC, mproc__kind_same_export, mproc__kind_same_import},
      {EVENT_MAGIC, mproc__kind_same_export, mproc__kind_same_import},
      {COND_MAGIC, cond_export, mproc__kind_same_import},
      {BARRIER_MAGIC, mproc__kind_same_export, mproc__kind_same_import},
  };
  for (size_t i = 0; i < sizeof k / sizeof *k; i++)
    mproc__kind_register(&k[i]);
}
