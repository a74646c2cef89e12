/*
 * The ring (see ring.h for the contract).
 *
 * Layout. One anonymous MAP_SHARED | MAP_NORESERVE mapping made at creation, so every process
 * forked later maps it at the same place: a header, then a data area reserved at about the
 * size of physical memory. Only the first `cap` bytes of the data area are in use (a power of
 * two). Pages are committed just before producers first write into them (at creation only
 * the first), a step at a time
 * (MADV_POPULATE_WRITE, so running out of memory is MPROC_ENOMEM from put, never SIGBUS), and
 * given back (MADV_REMOVE) when a grown ring drains. So a message of any size up to about the machine's memory goes through whole, in
 * one piece: the data area grows to hold it.
 *
 * Records. Every message is a record: an 8-byte word (length, or PAD_BIT | bytes to skip)
 * then the payload, padded to 8 bytes. A record never wraps: when it does not fit before the
 * end of the area, the producer writes a pad record up to the end and starts at offset 0.
 * Positions (wpos, rpos) are 64-bit byte counters that never wrap; the offset of position p
 * is p & (cap - 1).
 *
 * Locks: a two-lock queue. Producers serialize on plock and own wpos; consumers serialize on
 * clock and own rpos; so one producer and one consumer run at once. Changing cap (growth,
 * shrink) needs both, always taken plock first (the consumer's shrink only try-locks plock).
 *
 * Death inside put or get. Bytes are written into free space, then published by one store
 * of the new position; a process killed before that store leaves nothing visible. Each side
 * publishes two counters (position, items), so it first writes both into a journal and marks
 * it valid: the next locker, told MPROC_EOWNERDEAD, rolls a valid journal forward (the bytes
 * were complete) and otherwise discards what was not published. Growth copies live records
 * only into bytes beyond the old cap, then stores the new cap: killed midway, the old layout
 * is untouched. A reader killed mid-copy had not advanced rpos: its message goes to the next
 * reader (no one had received it).
 *
 * Wake-ups. Waiters arm a wait word (struct waitq) before checking the condition one last
 * time and sleeping on it; the other side publishes, then looks at the word (both seq_cst:
 * one of the two sees the other). With no one asleep a put or get is a
 * few atomic operations: no syscall, no clock reading, no allocation but the get's result.
 * Readers and blocked writers spin briefly (adaptively, per process) before sleeping, so a
 * steady stream, bounded or not, hands off without syscalls.
 */
#define _GNU_SOURCE
#include "core/ring.h"
#include "core/start.h"

#include "core/internal.h"

#include <stdlib.h>
#include <string.h>

#define PAD_BIT (UINT64_C(1) << 63)
#define REC_HDR 8u
#define DEFAULT_INITIAL ((size_t)256 << 10)
#define MIN_INITIAL ((size_t)4096)
/* Rings with a bigger area give it back as soon as they drain; smaller ones only once the
 * big messages stop (so a stream of large messages does not grow and shrink each time). */
#define SHRINK_ALWAYS ((size_t)64 << 20)
#define KEEP_DRAINS 64u
#define COMMIT_STEP ((size_t)1 << 20)
/* An unbounded ring holding this much waits up to PATIENT_SPINS pauses (~130 us) for readers
 * to free room before it grows again. */
#define PATIENT_BYTES ((size_t)4 << 20)
#define PATIENT_SPINS 4096u
/* Spin budgets, in pause instructions (~30 ns each here): from ~4 us to ~130 us, about the
 * cost of a futex sleep and wake-up on a VM. */
#define SPIN_MIN 128u
#define SPIN_MAX 4096u
#define SPIN_START 1024u
#define PAUSE_NS 32
#define YIELD_EVERY 128u

typedef _Atomic uint64_t a64;
typedef _Atomic uint32_t a32;

/* Sleepers of one kind wait on seq. A sleeper arms it (sets WQ_ARMED) before its last look
 * at the condition; a waker that changed the condition disarms it (bumping the count) and
 * wakes them all. So with no one asleep, a waker only reads the word; after one wake-up,
 * later wakers make no syscall until someone sleeps again (one wake-up carries every message
 * put meanwhile); and a sleeper killed while asleep costs one spare wake, never a hang. */
#define WQ_ARMED 0x80000000u
typedef struct waitq {
  a32 seq;
} waitq;

typedef struct journal {
  uint64_t pos, items;
  a32 valid;
} journal;

struct ring_hdr {
  size_t reserve;   /* bytes of the data area's address space */
  size_t initial;   /* cap at creation and after a shrink */
  size_t max_items; /* 0: unbounded */
  /* Changed only with both locks held. */
  _Atomic size_t cap;
  a32 closed;

  /* Producer side: plock and what only its holder touches. */
  MPROC__ALIGNED mproc__mutex plock;
  uint64_t p_rpos_seen; /* last rpos the producers read: free space is at least this */
  uint64_t p_got_seen;  /* last items_got the producers read */
  size_t committed;     /* data-area bytes committed, from offset 0 */
  journal pj;
  MPROC__ALIGNED a64 wpos;
  a64 items_put;

  /* Consumer side. */
  MPROC__ALIGNED mproc__mutex clock;
  a64 c_wpos_seen; /* last wpos the consumers read (relaxed: also a lock-free hint) */
  uint64_t c_pending;   /* read_begin: position after the record being read */
  uint64_t c_last_rec;  /* size of the last record taken (shrink policy) */
  bool c_kept;          /* pages beyond initial stayed committed at the last shrink */
  uint32_t c_light_drains; /* drains since then that did not need them */
  journal cj;
  MPROC__ALIGNED a64 rpos;
  a64 items_got;

  MPROC__ALIGNED waitq readers; /* getters waiting for a message */
  MPROC__ALIGNED waitq writers; /* putters waiting for room */
};

struct mproc__ring {
  struct ring_hdr *h;
  char *data;
  size_t map_len;
  a32 spin;  /* adaptive spin budget of this process's readers */
  a32 wspin; /* and of its writers waiting for room */
};

static inline size_t rec_size(uint64_t len) { return (size_t)((len + REC_HDR + 7) & ~UINT64_C(7)); }
static inline uint64_t *rec_at(mproc__ring *r, uint64_t pos, size_t cap) {
  return (uint64_t *)(r->data + (pos & (cap - 1)));
}

/* ---------------------------------------------------------------- creation */

static size_t pow2_at_least(size_t n) {
  size_t p = 1;
  while (p < n && p <= SIZE_MAX / 2)
    p <<= 1;
  return p;
}

int mproc__ring_new(mproc__ring **out, const mproc__ring_opts *opts) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  size_t initial = opts && opts->initial_bytes ? opts->initial_bytes : DEFAULT_INITIAL;
  if (initial > ((size_t)1 << 40))
    return MPROC_EINVAL;
  initial = pow2_at_least(initial < MIN_INITIAL ? MIN_INITIAL : initial);
  size_t reserve = pow2_at_least(mproc__phys_mem());
  if (reserve < ((size_t)1 << 30))
    reserve = (size_t)1 << 30;
  /* At most 64 GiB of address space each, so that thousands of rings fit in it. */
  if (reserve > ((size_t)1 << 36))
    reserve = (size_t)1 << 36;
  if (reserve < initial)
    reserve = initial;
  mproc__ring *r = calloc(1, sizeof *r);
  if (!r)
    return MPROC_ENOMEM;
  size_t hdr_len = mproc__page_round(sizeof(struct ring_hdr));
  void *p = NULL;
  /* Where address space or overcommit is limited, settle for a smaller reserve. */
  while (!(p = mproc__shared_reserve(hdr_len + reserve)) && reserve / 2 >= initial)
    reserve /= 2;
  if (!p) {
    free(r);
    return MPROC_ENOMEM;
  }
  r->h = p;
  r->data = (char *)p + hdr_len;
  r->map_len = hdr_len + reserve;
  atomic_init(&r->spin, SPIN_START);
  atomic_init(&r->wspin, SPIN_START);
  struct ring_hdr *h = r->h;
  /* One page now, the rest of the initial area when a put first reaches it (commit_to): a
   * page costs ~3 us to populate here, and a ring that carries small messages (a pool's
   * tasks and results, most queues) never needs more than its first few. */
  size_t first = mproc__page_size() < initial ? mproc__page_size() : initial;
  int rc = mproc__shared_commit(r->data, first);
  if (rc == 0)
    rc = mproc__mutex_init(&h->plock, false);
  if (rc == 0)
    rc = mproc__mutex_init(&h->clock, false);
  if (rc) {
    mproc__shared_unmap(p, r->map_len);
    free(r);
    return rc;
  }
  h->reserve = reserve;
  h->initial = initial;
  h->committed = first;
  h->max_items = opts ? opts->max_items : 0;
  atomic_store(&h->cap, initial);
  *out = r;
  return 0;
}

void mproc__ring_free(mproc__ring *r) {
  if (!r)
    return;
  mproc__shared_unmap(r->h, r->map_len);
  free(r);
}

/* ---------------------------------------------------------------- locks and repair */

/* ---- wait queues ---- */

/* Disarms q and wakes its sleepers, if it was armed. Call after changing what they wait
 * for (with a seq_cst store, so that this load is ordered after it). */
static void wq_wake(waitq *q) {
  uint32_t v = atomic_load(&q->seq);
  if (MPROC__LIKELY(!(v & WQ_ARMED)))
    return;
  while (!atomic_compare_exchange_weak(&q->seq, &v, (v + 1) & ~WQ_ARMED))
    if (!(v & WQ_ARMED))
      return; /* another waker did it */
  mproc__futex_wake(&q->seq, INT32_MAX);
}

/* Sleeps until woken, the deadline, or !still(h, key), looked at after arming: a waker
 * changes what still() reads, then looks at seq (both seq_cst), so one sees the other.
 * 0, -ETIMEDOUT or another futex error. */
static int wq_wait(waitq *q, struct ring_hdr *h, bool (*still)(struct ring_hdr *, uint64_t),
                   uint64_t key, int64_t deadline) {
  uint32_t v = atomic_load(&q->seq);
  while (!(v & WQ_ARMED) && !atomic_compare_exchange_weak(&q->seq, &v, v | WQ_ARMED))
    ;
  if (!still(h, key))
    return 0;
  int rc = mproc__futex_wait(&q->seq, v | WQ_ARMED, deadline);
  return rc == -EINTR ? 0 : rc;
}

static void wake_readers(struct ring_hdr *h) { wq_wake(&h->readers); }
static void wake_writers(struct ring_hdr *h) { wq_wake(&h->writers); }

/* The last holder died: finish its publication if it had committed to one (its bytes were
 * complete), else drop what it had not published, which no one can see anyway. */
static void repair(journal *j, a64 *pos, a64 *items) {
  if (atomic_load(&j->valid)) {
    atomic_store(pos, j->pos);
    atomic_store(items, j->items);
    atomic_store(&j->valid, 0);
  }
}

static int lock_side(mproc__ring *r, bool producer, int64_t deadline) {
  struct ring_hdr *h = r->h;
  int rc = mproc__mutex_lock(producer ? &h->plock : &h->clock, deadline);
  if (MPROC__LIKELY(rc == 0))
    return 0;
  if (rc != MPROC_EOWNERDEAD)
    return rc;
  if (producer) {
    repair(&h->pj, &h->wpos, &h->items_put);
    h->p_rpos_seen = atomic_load(&h->rpos);
    h->p_got_seen = atomic_load(&h->items_got);
  } else {
    repair(&h->cj, &h->rpos, &h->items_got);
    atomic_store_explicit(&h->c_wpos_seen, atomic_load(&h->wpos), memory_order_relaxed);
  }
  /* The dead process may have been about to wake someone. */
  wake_readers(h);
  wake_writers(h);
  return 0;
}

/* Locks are held only for bounded work (a copy, a growth), never while waiting on the ring's
 * state; so a try-once call (a past deadline: timeout 0) still waits for the lock, and gets
 * the real answer (a put into an unbounded ring succeeds; a get on a closed, drained ring says
 * MPROC_ECLOSED) instead of a spurious "busy". A future deadline bounds the lock wait too. */
static inline int64_t lock_deadline(int64_t deadline) {
  return deadline != MPROC__NEVER && deadline <= 0 ? MPROC__NEVER : deadline;
}

static void unlock_side(mproc__ring *r, bool producer) {
  mproc__mutex_unlock(producer ? &r->h->plock : &r->h->clock);
}

/* The item counter goes first and the position last (seq_cst): a waiter that keys its sleep
 * on the position and saw the old one cannot have seen the new count, and the position store
 * is ordered before the publisher's look at the sleepers. */
static void publish(journal *j, a64 *pos, a64 *items, uint64_t npos, uint64_t nitems) {
  j->pos = npos;
  j->items = nitems;
  atomic_store_explicit(&j->valid, 1, memory_order_release);
  atomic_store_explicit(items, nitems, memory_order_release);
  atomic_store(pos, npos);
  atomic_store_explicit(&j->valid, 0, memory_order_release);
}

static bool past(int64_t deadline) {
  return deadline != MPROC__NEVER && (deadline <= 0 || mproc__now_ns() >= deadline);
}

/* ---------------------------------------------------------------- waiting */

static bool readable(struct ring_hdr *h) {
  return atomic_load(&h->wpos) != atomic_load(&h->rpos) || atomic_load(&h->closed);
}

/* Spins until ready(h, key) or the budget runs out (sleep_adapt() then tunes the budget).
 * Every YIELD_EVERY pauses (~4 us) the spinner offers its CPU: with more runnable processes
 * than CPUs, the one it waits for may be queued behind it on this very CPU, and would
 * otherwise wait out the whole spin (pool workers waiting for a caller that submits:
 * imap_unordered chunksize 1, 2.5 -> 3.5-7.5 M items/s on 2 CPUs; map of 1M int64
 * 4.3-5.0 -> 5.4-7.2e8 items/s). With a CPU to spare the yield returns at once. */
static bool spin_until(struct ring_hdr *h, a32 *spin, bool (*ready)(struct ring_hdr *, uint64_t),
                       uint64_t key, int64_t deadline) {
  uint32_t budget = atomic_load_explicit(spin, memory_order_relaxed);
  for (uint32_t i = 0; i < budget; i++) {
    if (ready(h, key))
      return true;
    mproc__cpu_relax();
    if (i % YIELD_EVERY == YIELD_EVERY - 1)
      mproc__yield();
    /* A short timeout must not be stretched by the spin. */
    if ((i & 255) == 255 && deadline != MPROC__NEVER && mproc__now_ns() >= deadline)
      return false;
  }
  return false;
}

/* Sleeps on q like wq_wait, then sets this process's spin budget from how long the sleep
 * lasted: a short one (a longer spin would have caught it, without two futex calls and a
 * context switch) raises the budget to cover it twice over; a long one (the other side was
 * idle: spinning only burns a CPU) halves it. */
static int sleep_adapt(waitq *q, struct ring_hdr *h, a32 *spin,
                       bool (*still)(struct ring_hdr *, uint64_t), uint64_t key,
                       int64_t deadline) {
  int64_t t0 = mproc__now_ns();
  int rc = wq_wait(q, h, still, key, deadline);
  int64_t slept = mproc__now_ns() - t0;
  uint32_t budget = atomic_load_explicit(spin, memory_order_relaxed), nb = budget;
  if (rc == 0 && slept < (int64_t)SPIN_MAX * PAUSE_NS) {
    int64_t want = slept * 2 / PAUSE_NS;
    nb = want > SPIN_MAX ? SPIN_MAX : (uint32_t)want > budget * 2 ? (uint32_t)want : budget * 2;
    if (nb > SPIN_MAX)
      nb = SPIN_MAX;
  } else if (slept > (int64_t)SPIN_MAX * PAUSE_NS * 4 && budget / 2 >= SPIN_MIN) {
    nb = budget / 2;
  }
  if (nb != budget)
    atomic_store_explicit(spin, nb, memory_order_relaxed);
  return rc;
}

static bool readable_key(struct ring_hdr *h, uint64_t key) {
  (void)key;
  return readable(h);
}

static bool room_key(struct ring_hdr *h, uint64_t rpos_seen) {
  return atomic_load(&h->rpos) != rpos_seen || atomic_load(&h->closed);
}

static bool empty_key(struct ring_hdr *h, uint64_t key) { return !readable_key(h, key); }
static bool full_key(struct ring_hdr *h, uint64_t key) { return !room_key(h, key); }

int mproc__ring_wait_readable(mproc__ring *r, int64_t deadline) {
  if (!r)
    return MPROC_EINVAL;
  struct ring_hdr *h = r->h;
  if (readable(h))
    return 0;
  if (past(deadline))
    return -ETIMEDOUT;
  if (spin_until(h, &r->spin, readable_key, 0, deadline))
    return 0;
  for (;;) {
    int rc = sleep_adapt(&h->readers, h, &r->spin, empty_key, 0, deadline);
    if (readable(h))
      return 0;
    if (rc < 0)
      return rc;
  }
}

/* A putter waits until a get moves rpos from rpos_seen (read before the item count that
 * made it wait), or close. */
static int wait_writable(mproc__ring *r, uint64_t rpos_seen, int64_t deadline) {
  struct ring_hdr *h = r->h;
  if (past(deadline))
    return -ETIMEDOUT;
  if (spin_until(h, &r->wspin, room_key, rpos_seen, deadline))
    return 0;
  return sleep_adapt(&h->writers, h, &r->wspin, full_key, rpos_seen, deadline);
}

/* ---------------------------------------------------------------- growth and shrink */

/* Bytes a record of rec bytes takes at position w with area size cap (its pad included). */
static size_t need_at(uint64_t w, size_t cap, size_t rec) {
  size_t contig = cap - (size_t)(w & (cap - 1));
  return contig < rec ? contig + rec : rec;
}

/* With plock held: commits the data area up to offset end (within limit), a step ahead. */
static int commit_to(mproc__ring *r, size_t end, size_t limit) {
  struct ring_hdr *h = r->h;
  if (MPROC__LIKELY(end <= h->committed))
    return 0;
  size_t to = (end + COMMIT_STEP - 1) & ~(COMMIT_STEP - 1);
  if (to > limit)
    to = limit;
  if (mproc__shared_commit(r->data + h->committed, to - h->committed) != 0)
    return MPROC_ENOMEM;
  h->committed = to;
  return 0;
}

/* Whether rec more bytes fit at w when the reader is at rp. The cached rp may be older than
 * a shrink, so w - rp can exceed cap: that is "no" (then the caller reads rpos again). */
static bool fits(uint64_t w, uint64_t rp, size_t cap, size_t rec) {
  size_t used = (size_t)(w - rp);
  return used <= cap && cap - used >= need_at(w, cap, rec);
}

/* With plock held: makes cap big enough for rec more bytes at w. Takes clock (lock order:
 * plock then clock). 0, MPROC_ENOMEM, or 1 when it cannot grow further (wait for gets). */
static int grow(mproc__ring *r, uint64_t w, size_t rec) {
  struct ring_hdr *h = r->h;
  int rc = lock_side(r, false, MPROC__NEVER);
  if (rc)
    return rc;
  uint64_t rp = atomic_load(&h->rpos);
  size_t used = (size_t)(w - rp), cap = atomic_load(&h->cap), ncap = cap;
  while (ncap - used < need_at(w, ncap, rec)) {
    if (ncap >= h->reserve) {
      unlock_side(r, false);
      /* The whole reserve (about the machine's memory) is in use: wait for gets to free
       * some, unless the ring is empty and still cannot take it. */
      return used == 0 ? MPROC_ENOMEM : 1;
    }
    ncap *= 2;
  }
  if (ncap != cap) {
    /* A byte at position p moves from p & (cap-1) to p & (ncap-1): either the same place or
     * one at or beyond cap, where nothing lives; so no live byte is overwritten. */
    for (uint64_t p = rp; p < w;) {
      size_t o = (size_t)(p & (cap - 1)), n = (size_t)(p & (ncap - 1));
      size_t chunk = (size_t)(w - p);
      if (chunk > cap - o)
        chunk = cap - o;
      if (chunk > ncap - n)
        chunk = ncap - n;
      if (o != n) {
        if (commit_to(r, n + chunk, ncap) != 0) {
          unlock_side(r, false); /* cap unchanged: the copies made so far are unseen */
          return MPROC_ENOMEM;
        }
        memcpy(r->data + n, r->data + o, chunk);
      }
      p += chunk;
    }
    atomic_store(&h->cap, ncap);
  }
  unlock_side(r, false);
  return 0;
}

/* With clock held, the ring just drained: the area goes back to initial. The pages this
 * burst needed stay committed for the next one, which would otherwise fault every page in
 * again (pool apply_async, batches of 100k tasks: 1.4-2.6 -> 2.2-3.2 M tasks/s): unless
 * they are SHRINK_ALWAYS or more, and only until KEEP_DRAINS drains in a row have not
 * needed them. plock is only try-locked (clock is held, so waiting would invert the lock
 * order). */
static void maybe_shrink(mproc__ring *r, uint64_t rp) {
  struct ring_hdr *h = r->h;
  size_t cap = atomic_load_explicit(&h->cap, memory_order_relaxed);
  if (MPROC__LIKELY(cap <= h->initial)) {
    if (MPROC__LIKELY(!h->c_kept) || ++h->c_light_drains < KEEP_DRAINS)
      return;
  } else if (cap < SHRINK_ALWAYS && h->c_last_rec > h->initial / 4) {
    return;
  }
  if (atomic_load(&h->wpos) != rp || lock_side(r, true, 0) != 0)
    return;
  if (atomic_load(&h->wpos) == rp) {
    cap = atomic_load(&h->cap);
    size_t keep = cap > h->initial && cap < SHRINK_ALWAYS ? cap : h->initial;
    atomic_store(&h->cap, h->initial);
    if (h->committed > keep) {
      mproc__shared_discard(r->data + keep, h->committed - keep);
      h->committed = keep;
    }
    h->c_kept = keep > h->initial;
    h->c_light_drains = 0;
  }
  unlock_side(r, true);
}

/* ---------------------------------------------------------------- put */

/* memcpy for the tiny messages that dominate message rates: a call to the library's memcpy
 * costs more than the copy itself. */
static inline void copy_small(char *dst, const char *src, size_t len) {
  if (len <= 16) {
    for (size_t k = 0; k < len; k++)
      dst[k] = src[k];
  } else {
    memcpy(dst, src, len);
  }
}

static void copy_in(char *dst, const struct iovec *iov, int n) {
  for (int i = 0; i < n; i++) {
    copy_small(dst, iov[i].iov_base, iov[i].iov_len);
    dst += iov[i].iov_len;
  }
}

/* With plock held: room for one record of rec bytes? 0 yes, 1 full (wait), <0 error. */
static int make_room(mproc__ring *r, uint64_t w, size_t rec, uint64_t *rpos_seen) {
  struct ring_hdr *h = r->h;
  if (h->max_items) {
    uint64_t put = atomic_load_explicit(&h->items_put, memory_order_relaxed);
    if (put - h->p_got_seen >= h->max_items) {
      /* rpos first: see publish() for why that makes it a sound key to sleep on. */
      *rpos_seen = atomic_load(&h->rpos);
      h->p_got_seen = atomic_load(&h->items_got);
      if (put - h->p_got_seen >= h->max_items)
        return 1;
    }
  }
  size_t cap = atomic_load_explicit(&h->cap, memory_order_relaxed);
  if (MPROC__LIKELY(fits(w, h->p_rpos_seen, cap, rec)))
    return 0;
  h->p_rpos_seen = atomic_load_explicit(&h->rpos, memory_order_acquire);
  if (fits(w, h->p_rpos_seen, cap, rec))
    return 0;
  /* A big backlog: before growing further, give readers a moment to free room. Growing
   * without end when producers outrun consumers by a little trades a warm area for fresh
   * pages (faults, zeroing, cache misses) at every doubling. A bounded pause, not a wait:
   * with no reader making progress the ring grows as before. */
  if ((size_t)(w - h->p_rpos_seen) >= PATIENT_BYTES) {
    for (unsigned i = 0; i < PATIENT_SPINS; i++) {
      mproc__cpu_relax();
      h->p_rpos_seen = atomic_load_explicit(&h->rpos, memory_order_acquire);
      if (fits(w, h->p_rpos_seen, cap, rec))
        return 0;
    }
  }
  *rpos_seen = h->p_rpos_seen;
  return grow(r, w, rec);
}

int mproc__ring_putv(mproc__ring *r, const struct iovec *iov, int n, int64_t deadline) {
  if (!r || n < 0 || (n > 0 && !iov))
    return MPROC_EINVAL;
  uint64_t len = 0;
  for (int i = 0; i < n; i++) {
    if (iov[i].iov_len && !iov[i].iov_base)
      return MPROC_EINVAL;
    len += iov[i].iov_len;
    if (len < iov[i].iov_len || len > (UINT64_MAX >> 2))
      return MPROC_ENOMEM;
  }
  struct ring_hdr *h = r->h;
  if (len + REC_HDR + 7 > h->reserve)
    return MPROC_ENOMEM;
  size_t rec = rec_size(len);
  for (;;) {
    int rc = lock_side(r, true, lock_deadline(deadline));
    if (rc)
      return rc;
    if (atomic_load_explicit(&h->closed, memory_order_relaxed)) {
      unlock_side(r, true);
      return MPROC_ECLOSED;
    }
    uint64_t w = atomic_load_explicit(&h->wpos, memory_order_relaxed), rpos_seen = 0;
    rc = make_room(r, w, rec, &rpos_seen);
    if (rc == 0) {
      size_t cap = atomic_load_explicit(&h->cap, memory_order_relaxed);
      size_t off = (size_t)(w & (cap - 1)), contig = cap - off;
      size_t end = contig < rec ? (off + REC_HDR > rec ? off + REC_HDR : rec) : off + rec;
      if (MPROC__UNLIKELY(end > h->committed) && commit_to(r, end, cap) != 0) {
        unlock_side(r, true);
        return MPROC_ENOMEM;
      }
      if (contig < rec) {
        *rec_at(r, w, cap) = PAD_BIT | contig;
        w += contig;
      }
      uint64_t *hdr = rec_at(r, w, cap);
      *hdr = len;
      copy_in((char *)(hdr + 1), iov, n);
      uint64_t items = atomic_load_explicit(&h->items_put, memory_order_relaxed) + 1;
      publish(&h->pj, &h->wpos, &h->items_put, w + rec, items);
      unlock_side(r, true);
      wake_readers(h);
      return 0;
    }
    unlock_side(r, true);
    if (rc < 0)
      return rc;
    rc = wait_writable(r, rpos_seen, deadline);
    if (rc < 0)
      return rc;
  }
}

/* ---------------------------------------------------------------- get */

/* Whether cap can be the data area's: the header is in shared memory, which a peer may have
 * scribbled over; the mapping's length is this process's own. */
static bool cap_ok(const mproc__ring *r, size_t cap) {
  size_t area = r->map_len - (size_t)(r->data - (const char *)r->h);
  return cap >= MIN_INITIAL && (cap & (cap - 1)) == 0 && cap <= area;
}

/* With clock held: finds the oldest record. 0 (*m set, h->c_pending after it), 1 empty,
 * -EPROTO when the header or the record cannot be (shared memory scribbled over): every
 * position and length read from shared memory is checked before it is used, so a bad one
 * never makes this process read outside the ring or loop. */
static int peek(mproc__ring *r, mproc__ring_msg *m) {
  struct ring_hdr *h = r->h;
  uint64_t rp = atomic_load_explicit(&h->rpos, memory_order_relaxed);
  uint64_t w = atomic_load_explicit(&h->c_wpos_seen, memory_order_relaxed);
  if (rp == w) {
    w = atomic_load_explicit(&h->wpos, memory_order_acquire);
    atomic_store_explicit(&h->c_wpos_seen, w, memory_order_relaxed);
    if (rp == w)
      return 1;
  }
  /* A cached wpos came from an acquire load by an earlier holder of clock: the records below
   * it are published, and clock's hand-over orders that load before the reads here. */
  size_t cap = atomic_load_explicit(&h->cap, memory_order_relaxed);
  if (!cap_ok(r, cap) || w - rp > cap || (rp | w) % 8) /* records are 8-byte aligned */
    return -EPROTO;
  size_t off = (size_t)(rp & (cap - 1));
  uint64_t word = *rec_at(r, rp, cap);
  if (word & PAD_BIT) {
    /* A pad is published together with the record after it. It reached the area's end
     * when it was written; a growth since may have moved it, never past the end. */
    uint64_t pad = word & ~PAD_BIT;
    if (pad < REC_HDR || pad % 8 || pad > cap - off || pad >= w - rp)
      return -EPROTO;
    rp += pad;
    off = (size_t)(rp & (cap - 1));
    word = *rec_at(r, rp, cap);
  }
  if (word > cap || rec_size(word) > cap - off || rec_size(word) > w - rp)
    return -EPROTO;
  m->data = rec_at(r, rp, cap) + 1;
  m->len = (size_t)word;
  h->c_last_rec = rec_size(word);
  h->c_pending = rp + h->c_last_rec;
  return 0;
}

/* With clock held: takes the record peek found, then releases clock. */
static void consume(mproc__ring *r) {
  struct ring_hdr *h = r->h;
  uint64_t rp = h->c_pending;
  uint64_t items = atomic_load_explicit(&h->items_got, memory_order_relaxed) + 1;
  publish(&h->cj, &h->rpos, &h->items_got, rp, items);
  if (rp == atomic_load_explicit(&h->c_wpos_seen, memory_order_relaxed))
    maybe_shrink(r, rp);
  unlock_side(r, false);
  wake_writers(h);
}

int mproc__ring_read_begin(mproc__ring *r, mproc__ring_msg *m, int64_t deadline) {
  if (!r || !m)
    return MPROC_EINVAL;
  struct ring_hdr *h = r->h;
  for (;;) {
    /* Messages known to be there (from wpos as an earlier reader saw it): go straight to the
     * lock, without touching wpos's cache line, which the producers are writing. */
    bool known = atomic_load_explicit(&h->c_wpos_seen, memory_order_relaxed) !=
                 atomic_load_explicit(&h->rpos, memory_order_relaxed);
    int rc = known ? 0 : mproc__ring_wait_readable(r, deadline);
    if (rc)
      return rc;
    if ((rc = lock_side(r, false, lock_deadline(deadline))) != 0)
      return rc;
    if ((rc = peek(r, m)) <= 0) {
      if (rc)
        unlock_side(r, false);
      return rc;
    }
    unlock_side(r, false);
    /* Empty: closed (then nothing more can come, close holds plock), or another reader won. */
    if (atomic_load(&h->closed) && atomic_load(&h->wpos) == atomic_load(&h->rpos))
      return MPROC_ECLOSED;
  }
}

void mproc__ring_read_end(mproc__ring *r, mproc__ring_msg *m, bool consume_it) {
  if (!r || !m)
    return;
  if (consume_it) {
    consume(r);
  } else {
    unlock_side(r, false);
  }
  m->data = NULL;
  m->len = 0;
}

int mproc__ring_get(mproc__ring *r, void **buf, size_t *len, int64_t deadline) {
  if (!r || !buf)
    return MPROC_EINVAL;
  mproc__ring_msg m;
  int rc = mproc__ring_read_begin(r, &m, deadline);
  if (rc)
    return rc;
  void *p = malloc(m.len ? m.len : 1);
  if (!p) {
    mproc__ring_read_end(r, &m, false);
    return MPROC_ENOMEM;
  }
  copy_small(p, m.data, m.len);
  size_t n = m.len;
  mproc__ring_read_end(r, &m, true);
  *buf = p;
  if (len)
    *len = n;
  return 0;
}

/* ---------------------------------------------------------------- state */

int mproc__ring_close(mproc__ring *r) {
  if (!r)
    return MPROC_EINVAL;
  struct ring_hdr *h = r->h;
  /* Under plock, so that once a getter sees closed, wpos is final. */
  int rc = lock_side(r, true, MPROC__NEVER);
  if (rc)
    return rc;
  atomic_store(&h->closed, 1);
  unlock_side(r, true);
  wake_readers(h);
  wake_writers(h);
  return 0;
}

bool mproc__ring_closed(mproc__ring *r) { return r && atomic_load(&r->h->closed); }

size_t mproc__ring_count(mproc__ring *r) {
  if (!r)
    return 0;
  uint64_t got = atomic_load(&r->h->items_got), put = atomic_load(&r->h->items_put);
  /* A get may publish between the two loads of a put's counters: never report < 0. */
  return put > got ? (size_t)(put - got) : 0;
}

size_t mproc__ring_max_items(mproc__ring *r) { return r ? r->h->max_items : 0; }

uint64_t mproc__ring_total_put(mproc__ring *r) { return r ? atomic_load(&r->h->items_put) : 0; }

size_t mproc__ring_capacity(mproc__ring *r) { return r ? atomic_load(&r->h->cap) : 0; }

size_t mproc__ring_initial_capacity(mproc__ring *r) { return r ? r->h->initial : 0; }

size_t mproc__ring_committed(mproc__ring *r) {
  if (!r || lock_side(r, true, MPROC__NEVER) != 0)
    return 0;
  size_t c = r->h->committed;
  unlock_side(r, true);
  return c;
}

size_t mproc__ring_sleepers(mproc__ring *r) {
  if (!r)
    return 0;
  return !!(atomic_load(&r->h->readers.seq) & WQ_ARMED) +
         !!(atomic_load(&r->h->writers.seq) & WQ_ARMED);
}

/* ---- crossing to a child that was not forked ---- */

int mproc__ring_export(const mproc__ring *r, mproc__msg *m) {
  mproc__msg_put_mem(m, r->h);
  mproc__msg_put_u64(m, (uintptr_t)r->h);
  mproc__msg_put_u64(m, r->map_len);
  return m->err;
}

/* A handle for the ring whose mapping (map_len bytes) this process has at h. */
static mproc__ring *handle_at(void *h, size_t map_len) {
  mproc__ring *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->h = h;
  r->data = (char *)h + mproc__page_round(sizeof(struct ring_hdr));
  r->map_len = map_len;
  atomic_init(&r->spin, SPIN_START);
  atomic_init(&r->wspin, SPIN_START);
  return r;
}

mproc__ring *mproc__ring_import(mproc__rd *rd) {
  void *h = (void *)(uintptr_t)mproc__rd_u64(rd);
  size_t map_len = (size_t)mproc__rd_u64(rd);
  return rd->bad ? NULL : handle_at(h, map_len);
}

/* ---- handing a ring to a process that exists already ---- */

int mproc__ring_fd(const mproc__ring *r, size_t *map_len) {
  void *base;
  size_t len;
  int fd = mproc__shared_lookup(r->h, &base, &len);
  if (fd >= 0 && (base != (void *)r->h || len != r->map_len))
    fd = -EINVAL; /* not a mapping of its own: cannot be */
  *map_len = r->map_len;
  return fd;
}

mproc__ring *mproc__ring_attach(int fd, size_t map_len) {
  /* Everything in the shared header is an offset: the ring works at any address. */
  size_t hdr_len = mproc__page_round(sizeof(struct ring_hdr));
  void *h = NULL;
  if (map_len > hdr_len && map_len <= ((size_t)1 << 41))
    h = mproc__shared_map_fd(fd, map_len);
  if (!h) {
    mproc__close(fd);
    return NULL;
  }
  mproc__ring *r = handle_at(h, map_len);
  if (!r)
    mproc__shared_unmap(h, map_len); /* closes fd with the mapping */
  return r;
}

/* ---- test hook (testing.h) ---- */

size_t mproc__ring_test_area(const mproc__ring *r) {
  return r->map_len - (size_t)(r->data - (const char *)r->h);
}

void mproc__ring_test_scribble(mproc__ring *r, unsigned field, uint64_t v) {
  struct ring_hdr *h = r->h;
  switch (field % 5) {
  case 0:
    atomic_store(&h->cap, (size_t)v);
    break;
  case 1:
    atomic_store(&h->rpos, v);
    break;
  case 2:
    atomic_store(&h->wpos, v);
    break;
  case 3:
    atomic_store(&h->c_wpos_seen, v);
    break;
  default: { /* the word at the reader's position, where the area holds it */
    size_t cap = atomic_load(&h->cap);
    if (cap_ok(r, cap))
      *rec_at(r, atomic_load(&h->rpos) & ~(uint64_t)7, cap) = v;
  }
  }
}
