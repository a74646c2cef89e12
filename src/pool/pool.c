/*
 * Pool and AsyncResult, the caller's side: making and ending a pool, apply, and the
 * AsyncResult and descriptor calls: the top of the pool's files. The machinery they share
 * is pool_async.c's (the structures are in pool_async.h), collecting pool_collect.c's, map
 * pool_map.c's and imap pool_imap.c's.
 *
 * No thread is started here. Results are collected inside mproc calls (get, wait, map,
 * join): one caller thread at a time is the collector (p->collecting); the others wait on
 * p->cv and are woken after each batch the collector dispatches, and when it leaves.
 * Lock order: the result ring's read side, then p->mu.
 */
#define _GNU_SOURCE
#include "pool/pool_collect.h"
#include "core/start.h"
#include "testing.h"

#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCESSES 4096
#define RING_INITIAL_BYTES ((size_t)64 << 10)
#define RELAY_INITIAL_BYTES ((size_t)4 << 10)

/* ---- the supervisor's end ---- */

static void wait_supervisor(mproc_pool *p) {
  pthread_mutex_lock(&p->join_mu);
  if (!p->sup_reaped) {
    /* A forkserver's child is reaped by the server; its pid may be anyone's by then. */
    pid_t r = p->sup_served ? -ECHILD : mproc__waitpid(p->sup_pid, NULL, 0);
    /* -ECHILD: the caller ignores SIGCHLD and the kernel reaped it; the pidfd still tells. */
    if (r < 0 && p->sup_fd >= 0)
      mproc__poll_fd(p->sup_fd, POLLIN, MPROC__NEVER, NULL);
    p->sup_reaped = true;
  }
  pthread_mutex_unlock(&p->join_mu);
}

/* After the supervisor's exit: collects what it left behind, cancels the rest. */
static void settle(mproc_pool *p) {
  wait_supervisor(p);
  mproc__ring_close(p->ctx.results);
  mproc__ring_close(p->ctx.tasks);
  pthread_mutex_lock(&p->mu);
  while (mproc__pool_await_locked(p, NULL, MPROC__NEVER) == -EINTR)
    ; /* free and terminate finish whatever the signals */
  pthread_mutex_unlock(&p->mu);
}

/* ---- making and ending a pool ---- */

static int check_opts(const mproc_pool_opts *o) {
  if (!o)
    return 0;
  if (o->processes < 0 || o->processes > MAX_PROCESSES)
    return MPROC_EINVAL;
  if (!(o->task_timeout >= 0) || o->task_timeout > 1e9)
    return MPROC_EINVAL;
  if (!o->initargs && o->initargs_len)
    return MPROC_EINVAL;
  if ((unsigned)o->start_method > MPROC_START_SPAWN) /* as mproc_process_new refuses it */
    return MPROC_EINVAL;
  if (o->memory_limit && o->memory_limit < ((size_t)1 << 20)) /* below what a worker needs */
    return MPROC_EINVAL;
  return 0;
}

static void release(mproc_pool *p) {
  if (p->engine)
    p->engine->release(p->engine);
  mproc__ring_free(p->ctx.tasks);
  mproc__ring_free(p->ctx.results);
  mproc__ring_free(p->ctx.relay);
  mproc__shared_unmap(p->ctx.sh, p->ctx.sh_len);
  mproc__shared_unmap(p->ctx.fns, sizeof *p->ctx.fns);
  mproc__stage_destroy(&p->stage);
  mproc__close(p->ctx.ctl_fd);
  mproc__close(p->ctx.notify_fd);
  mproc__close(p->ctx.reg_fd);
  mproc__close(p->ctx.reg_sup);
  mproc__close(p->sup_fd);
  free(p->poll_wake);
  free(p->ctx.initargs);
  mproc__limits_free(&p->ctx.lim);
  for (size_t i = 0; i < p->tab_cap; i++)
    if (p->tab[i].id)
      free(entry_staged(&p->tab[i]));
  free(p->tab);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->join_mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

static int init_locals(mproc_pool *p) {
  int rc = mproc__pool_init_sync(p);
  if (rc)
    return rc;
  p->sup_fd = -1;
  p->ctx.ctl_fd = -1;
  p->ctx.notify_fd = -1;
  p->ctx.reg_fd = p->ctx.reg_sup = -1;
  p->owner = mproc__getpid();
  atomic_init(&p->view, (uint32_t)p->owner);
  atomic_init(&p->claim, (uint32_t)p->owner);
  return 0;
}

static int init_shared(mproc_pool *p, const mproc_pool_opts *o) {
  mproc__pool_ctx *c = &p->ctx;
  p->ncpu = mproc__cpu_count();
  c->nworkers = o && o->processes ? o->processes : p->ncpu;
  c->maxtasks = o ? o->maxtasksperchild : 0;
  c->timeout_s = o ? o->task_timeout : 0;
  c->timeout_ns = (int64_t)(c->timeout_s * 1e9);
  c->initializer = o ? o->initializer : NULL;
  c->caller = p->owner;
  c->parent = p->owner;
  int lrc = mproc__pool_limits_init(&c->lim, o);
  if (lrc)
    return lrc;
  if (o && o->initargs_len) {
    if (!(c->initargs = malloc(o->initargs_len)))
      return MPROC_ENOMEM;
    memcpy(c->initargs, o->initargs, o->initargs_len);
    c->initargs_len = o->initargs_len;
  }
  /* Room for every slot a resize may use: pages never touched cost nothing. */
  c->sh_len = mproc__page_round(sizeof *c->sh + MPROC__POOL_SLOTS * sizeof(mproc__pool_slot));
  if (!(c->sh = mproc__shared_map(c->sh_len)))
    return -errno;
  atomic_store(&c->sh->sup_deadline, MPROC__NEVER);
  atomic_store(&c->sh->target, (uint32_t)c->nworkers);
  /* Small to start with (a pool starts fast); the rings grow for big tasks and results. */
  mproc__ring_opts ro = {.initial_bytes = RING_INITIAL_BYTES};
  int rc = mproc__ring_new(&c->tasks, &ro);
  if (rc == 0)
    rc = mproc__ring_new(&c->results, &ro);
  /* Only clients (forked children using the pool) post there: as small as a ring comes. */
  mproc__ring_opts relay_o = {.initial_bytes = RELAY_INITIAL_BYTES};
  if (rc == 0)
    rc = mproc__ring_new(&c->relay, &relay_o);
  int sv[2];
  if (rc == 0 && (rc = mproc__socketpair(sv, true)) == 0) {
    c->reg_sup = sv[0];
    c->reg_fd = sv[1];
  }
  if (rc == 0)
    rc = mproc__stage_init(&p->stage);
  c->stage_base = p->stage.base;
  if (rc == 0 && (c->ctl_fd = mproc__eventfd()) < 0)
    rc = c->ctl_fd;
  if (rc == 0 && (c->notify_fd = mproc__eventfd()) < 0)
    rc = c->notify_fd;
  if (rc == 0 && p->method != MPROC_START_FORK) {
    if (!(c->fns = mproc__shared_map(sizeof *c->fns)))
      rc = -errno;
    else
      rc = mproc__mutex_init(&c->fns->mu, false);
  }
  return rc;
}

/* Forks the supervisor, or has it spawned or forked by the forkserver. */
static int start_supervisor(mproc_pool *p) {
  int rc = 0;
  if (p->method != MPROC_START_FORK) {
    rc = mproc__pool_start_unforked(&p->ctx, p->method, &p->sup_pid, &p->sup_fd);
    p->sup_served = rc == 0 && p->method == MPROC_START_FORKSERVER;
  } else {
    pid_t pid = mproc__fork();
    if (pid == 0)
      mproc__pool_supervise(&p->ctx);
    rc = pid < 0 ? -errno : 0;
    p->sup_pid = pid;
    p->sup_fd = pid < 0 ? -1 : mproc__pidfd_open(pid);
  }
  /* Only the supervisor may hold the receiving end: its close is how clients learn it is
   * gone. */
  mproc__close(p->ctx.reg_sup);
  p->ctx.reg_sup = -1;
  return rc;
}

/* Whether the supervisor has ended, without reaping it. */
static bool supervisor_ended(mproc_pool *p) {
  if (p->sup_served) /* not our child: only its pidfd can tell */
    return p->sup_fd < 0 || mproc__poll_fd(p->sup_fd, POLLIN, 0, NULL) != 0;
  return mproc__waitpid(p->sup_pid, NULL, WNOHANG) != 0;
}

/* Waits until every first worker has run its initializer (or one failed). */
static int wait_boot(mproc_pool *p) {
  mproc__pool_shared *sh = p->ctx.sh;
  for (;;) {
    uint32_t b = atomic_load(&sh->boot);
    if (b == MPROC__BOOT_OK)
      return 0;
    if (b == MPROC__BOOT_FAILED)
      return atomic_load(&sh->boot_rc);
    /* A slice, so a supervisor that died without a word is noticed too. */
    mproc__futex_wait(&sh->boot, MPROC__BOOT_WAIT, mproc__now_ns() + 50 * 1000000);
    if (atomic_load(&sh->boot) == MPROC__BOOT_WAIT && supervisor_ended(p)) {
      p->sup_reaped = true;
      return MPROC_ECRASHED;
    }
  }
}

/* The opening both kinds of pool share: *out cleared, opts checked, the handle and its
 * process-local parts made. 0 and *p, or an error with nothing left. */
static int pool_alloc(mproc_pool **out, const mproc_pool_opts *opts, mproc_pool **p) {
  *out = NULL;
  int rc = check_opts(opts);
  if (rc)
    return rc;
  if (!(*p = calloc(1, sizeof **p)))
    return MPROC_ENOMEM;
  if ((rc = init_locals(*p)) != 0) {
    free(*p);
    *p = NULL;
  }
  return rc;
}

int mproc_pool_new(mproc_pool **out, const mproc_pool_opts *opts) {
  mproc_pool *p;
  int rc = out ? pool_alloc(out, opts, &p) : MPROC_EINVAL;
  if (rc)
    return rc;
  p->method = mproc__start_resolve(opts ? opts->start_method : MPROC_START_DEFAULT);
  if ((rc = init_shared(p, opts)) != 0 || (rc = start_supervisor(p)) != 0) {
    release(p);
    return rc;
  }
  if ((rc = wait_boot(p)) != 0) {
    wait_supervisor(p); /* it kills and reaps the workers before it exits */
    release(p);
    return rc;
  }
  *out = p;
  return 0;
}

int mproc__pool_new_engine(mproc_pool **out, const mproc_pool_opts *opts, int nworkers,
                           mproc__engine *e) {
  mproc_pool *p;
  int rc = out && e && nworkers >= 1 ? pool_alloc(out, opts, &p) : MPROC_EINVAL;
  if (rc)
    return rc;
  /* No process of ours runs the tasks: the caller's addresses are the engine's. */
  p->method = MPROC_START_FORK;
  mproc_pool_opts o = opts ? *opts : (mproc_pool_opts){0};
  o.processes = nworkers;
  if ((rc = init_shared(p, &o)) != 0) {
    release(p);
    return rc;
  }
  p->sup_reaped = true; /* there is no supervisor to wait for */
  e->pool = &p->ctx;
  p->engine = e;
  *out = p;
  return 0;
}

/* An engine pool's join: collects until the engine holds no task (it has taken the closed
 * ring's last one and every result is in). 0 or -EINTR. */
static int engine_drain(mproc_pool *p) {
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  while (rc != -EINTR && !p->engine->idle(p->engine))
    rc = mproc__pool_await_locked(p, NULL, mproc__now_ns() + 20 * 1000000);
  pthread_mutex_unlock(&p->mu);
  return rc == -EINTR ? rc : 0;
}

/* For the owner's calls: the pool's lock, taken when it returns 0. */
static int lock_checked(mproc_pool *p) {
  int rc = mproc__pool_owner_check(p);
  if (rc == 0)
    pthread_mutex_lock(&p->mu);
  return rc;
}

int mproc_pool_close(mproc_pool *p) {
  int rc = lock_checked(p);
  if (rc)
    return rc;
  if (p->state == POOL_RUNNING) {
    p->state = POOL_CLOSED;
    /* Workers drain the closed ring, then exit. A map still putting its chunks closes it
     * when it has put the last one. */
    if (p->feeding == 0)
      rc = mproc__ring_close(p->ctx.tasks);
  }
  pthread_mutex_unlock(&p->mu);
  return rc == MPROC_ECLOSED ? 0 : rc;
}

int mproc_pool_join(mproc_pool *p) {
  int rc = lock_checked(p);
  if (rc)
    return rc;
  int state = p->state;
  pthread_mutex_unlock(&p->mu);
  if (state == POOL_RUNNING)
    return MPROC_ESTATE;
  mproc__pool_cut_feeders(p);
  if (p->engine && (rc = engine_drain(p)) != 0)
    return rc;
  /* Interruptible (Ctrl-C): the supervisor exits once every task is done. */
  struct pollfd pf = {.fd = p->sup_fd, .events = POLLIN};
  if (p->sup_fd >= 0 && !p->sup_reaped && mproc__poll(&pf, 1, MPROC__NEVER) == -EINTR)
    return -EINTR; /* any other failure: settle below waits for the supervisor anyway */
  settle(p);
  pthread_mutex_lock(&p->mu);
  if (p->state == POOL_CLOSED)
    p->state = POOL_JOINED;
  pthread_mutex_unlock(&p->mu);
  mproc__pool_run_callbacks(p);
  return 0;
}

int mproc_pool_terminate(mproc_pool *p) {
  int rc = lock_checked(p);
  if (rc)
    return rc;
  if (p->state != POOL_JOINED)
    p->state = POOL_TERMINATED;
  pthread_mutex_unlock(&p->mu);
  atomic_fetch_or(&p->ctx.sh->flags, MPROC__FLAG_TERMINATE);
  mproc__eventfd_signal(p->ctx.ctl_fd);
  if (p->engine)
    p->engine->terminate(p->engine);
  settle(p);
  mproc__pool_run_callbacks(p);
  return 0;
}

void mproc_pool_free(mproc_pool *p) {
  if (!p)
    return;
  if (p->owner == mproc__getpid()) {
    mproc_pool_terminate(p);
    pthread_mutex_lock(&p->mu);
    mproc__pool_cancel_all(p);
    pthread_mutex_unlock(&p->mu);
    mproc__pool_run_callbacks(p); /* none stays queued: an AsyncResult freed later must not look here */
    mproc__limits_sweep(&p->ctx.lim); /* groups of workers that died with their supervisor */
  } else {
    /* In a forked child only this process's view goes: the pool's processes are the owner's. */
    mproc__pool_client_leave(p);
  }
  release(p);
}

int mproc_pool_apply_async(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                           mproc_async **r) {
  return mproc_pool_apply_async_ex(p, fn, arg, len, NULL, r);
}

int mproc_pool_apply(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len, void **res,
                     size_t *res_len) {
  mproc_async a = {.r.hand_over = true};
  int rc = mproc__pool_submit_apply(p, &a, fn, arg, len, NULL);
  if (rc)
    return rc;
  if ((rc = mproc__pool_await(&a, MPROC__NEVER)) != 0) {
    mproc__pool_abandon(p, &a);
    free(a.r.res); /* another collector may have finished it meanwhile */
    free(a.err);
    return rc;
  }
  rc = a.rc;
  if (rc == 0 && res) {
    *res = a.r.res; /* handed over: no second copy */
    a.r.res = NULL;
  } else if (res) {
    *res = NULL;
  }
  if (res_len)
    *res_len = rc == 0 ? a.r.len : 0;
  free(a.r.res);
  free(a.err);
  return rc;
}

/* ---- AsyncResult ---- */

int mproc_async_wait(mproc_async *r, double timeout) {
  if (!r)
    return MPROC_EINVAL;
  return mproc__pool_await(r, mproc__deadline(timeout));
}

int mproc_async_get(mproc_async *r, void **res, size_t *len, double timeout) {
  if (!r)
    return MPROC_EINVAL;
  int rc = mproc__pool_await(r, mproc__deadline(timeout));
  if (rc)
    return rc;
  if (res)
    *res = NULL;
  if (len)
    *len = 0;
  if (r->rc)
    return r->rc;
  if (res && !r->is_map) {
    if (!(*res = malloc(r->r.len ? r->r.len : 1)))
      return MPROC_ENOMEM;
    memcpy(*res, r->r.res, r->r.len);
  }
  if (len && !r->is_map)
    *len = r->r.len;
  return 0;
}

bool mproc_async_ready(mproc_async *r) {
  if (!r)
    return false;
  mproc__pool_await(r, 0); /* collects what has arrived: there is no thread to do it */
  return atomic_load(&r->ready);
}

bool mproc_async_successful(mproc_async *r) { return mproc_async_ready(r) && r->rc == 0; }

const char *mproc_async_error(mproc_async *r) {
  if (!r || !atomic_load(&r->ready) || r->rc == 0)
    return NULL;
  return r->err ? r->err : mproc_strerror(r->rc);
}

void mproc_async_free(mproc_async *r) {
  if (!r)
    return;
  /* One submitted by another process's view (before a fork) is that process's to forget. */
  if (r->pool && r->view == (uint32_t)mproc__getpid() && (!atomic_load(&r->ready) || r->cb.queued))
    mproc__pool_abandon(r->pool, r);
  free(r->err);
  if (r->r.res != r->r.small_res)
    free(r->r.res);
  free(r);
}

/* ---- callbacks and the descriptor ---- */

int mproc_pool_apply_async_ex(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                              const mproc_async_opts *cb, mproc_async **r) {
  if (!r)
    return MPROC_EINVAL;
  *r = NULL;
  async_cb c = {.opts = cb ? *cb : (mproc_async_opts){0}};
  return mproc__pool_apply_new(p, fn, arg, len, &c, NULL, NULL, r);
}

int mproc_pool_fileno(mproc_pool *p) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  atomic_store(&p->fd_wanted, true);
  mproc__pool_after_wait(p);
  return p->ctx.notify_fd;
}

int mproc_pool_poll(mproc_pool *p, double timeout) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  int64_t deadline = mproc__deadline(timeout);
  mproc__eventfd_drain(p->ctx.notify_fd); /* what it announced is looked at below */
  pthread_mutex_lock(&p->mu);
  if (!p->poll_wake && !(p->poll_wake = mproc__pool_sentinel_new(p))) {
    pthread_mutex_unlock(&p->mu);
    return MPROC_ENOMEM;
  }
  bool due = atomic_load(&p->cb_queued) > 0 || mproc__ring_wait_readable(p->ctx.results, 0) == 0;
  atomic_store(&p->poll_wake->ready, false);
  rc = mproc__pool_await_locked(p, p->poll_wake, due ? 0 : deadline);
  pthread_mutex_unlock(&p->mu);
  int n = mproc__pool_run_callbacks(p);
  mproc__pool_after_wait(p);
  return rc == 0 || rc == MPROC_ETIMEDOUT ? n : rc;
}

mproc_memlimit_kind mproc_pool_memlimit(mproc_pool *p) {
  return p ? (mproc_memlimit_kind)p->ctx.lim.memlimit_kind : MPROC_MEMLIMIT_NONE;
}

/* ---- test hooks (testing.h) ---- */

pid_t mproc__pool_supervisor_pid(mproc_pool *p) { return p ? p->sup_pid : 0; }

int mproc__pool_worker_pids(mproc_pool *p, pid_t *pids, size_t max) {
  if (!p)
    return MPROC_EINVAL;
  int n = 0;
  for (int i = 0; i < p->ctx.nworkers; i++) {
    pid_t pid = atomic_load(&p->ctx.sh->slots[i].pid);
    uint32_t st = atomic_load(&p->ctx.sh->slots[i].state);
    if (pid > 0 && st == MPROC__SLOT_READY) {
      if (pids && (size_t)n < max)
        pids[n] = pid;
      n++;
    }
  }
  return n;
}
