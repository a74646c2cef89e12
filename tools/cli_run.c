/* Running commands. Each job is /bin/sh -c COMMAND, spawned (posix_spawn: vfork speed) as
 * the leader of its own process group, stdin /dev/null, stdout and stderr into pipes the
 * event loop drains. One poll() loop watches the pipes and a self-pipe the tool's signal
 * handlers write to (SIGCHLD wakes it to reap; SIGINT/TERM/HUP stop the run). A job is done
 * when its shell is reaped and both pipes are at EOF (so output a grandchild writes before
 * it exits is kept). Signals to a job always go to its whole group: a timeout sends TERM,
 * then KILL 200 ms later; Ctrl-C and --halt now do the same to every running job. Because a
 * job's group is not the terminal's foreground group, the terminal's Ctrl-C reaches only the
 * tool, which passes it on: nothing is left running when it exits. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define KILL_GRACE 0.2 /* seconds between TERM and KILL */

typedef struct job {
  unsigned long seq;
  char *cmd, *tag;
  pid_t pid;     /* 0 once reaped */
  int fd[2];     /* stdout, stderr read ends; -1 at EOF */
  cli_buf buf[2];
  size_t flushed[2]; /* --line-buffer: bytes of buf already written */
  unsigned long long received;
  double start_mono, start_wall, deadline, kill_at;
  int tries, status;
  bool timed_out, killed; /* killed: by the tool (timeout, halt, Ctrl-C) */
  bool done;
} job;

typedef struct run {
  const cli_opts *o;
  cli_input *in;
  cli_joblog *log;
  cli_bar bar;
  size_t total, ndone;
  job **running;
  size_t nrunning;
  job **fifo; /* -k: started jobs not yet written, in seq order */
  size_t fifo_head, fifo_len, fifo_cap;
  unsigned long seq;
  bool input_done, halting;
  int failed, halt_status;
} run;

/* To the job's group: the shell and whatever it started. j->pid is the leader's pid while it
 * runs and its negation once reaped (the group can outlive it in a grandchild). */
static void kill_job(job *j, int sig) {
  if (j->pid)
    kill(j->pid > 0 ? -j->pid : j->pid, sig);
}

/* Writes what can be written of channel c now: everything when final, else (line-buffer)
 * the complete lines. */
static void emit(run *r, job *j, int c, bool final) {
  cli_buf *b = &j->buf[c];
  size_t from = j->flushed[c], to = b->len;
  if (!final) {
    while (to > from && b->p[to - 1] != '\n')
      to--;
  }
  if (to > from)
    (void)cli_write_tagged(c + 1, r->o->tag ? j->tag : NULL, b->p + from, to - from);
  j->flushed[c] = to;
}

static bool streaming(run *r, job *j) {
  return r->o->line_buffer &&
         (!r->o->keep_order || (r->fifo_len && r->fifo[r->fifo_head] == j));
}

static void job_free(job *j) {
  free(j->cmd);
  free(j->tag);
  cli_buf_free(&j->buf[0]);
  cli_buf_free(&j->buf[1]);
  free(j);
}

static int spawn(job *j) {
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe(out) || pipe(err))
    goto fail;
  for (int k = 0; k < 2; k++) {
    fcntl(out[k], F_SETFD, FD_CLOEXEC);
    fcntl(err[k], F_SETFD, FD_CLOEXEC);
  }
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  char *argv[] = {"sh", "-c", j->cmd, NULL};
  int rc = posix_spawn(&j->pid, "/bin/sh", &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (rc) {
    errno = rc;
    goto fail;
  }
  close(out[1]);
  close(err[1]);
  j->fd[0] = out[0];
  j->fd[1] = err[0];
  return 0;
fail:;
  int e = errno;
  for (int k = 0; k < 2; k++) {
    if (out[k] >= 0)
      close(out[k]);
    if (err[k] >= 0)
      close(err[k]);
  }
  fprintf(stderr, "mproc: Error: cannot start a job: %s\n", strerror(e));
  return -1;
}

static int start_attempt(run *r, job *j) {
  for (int c = 0; c < 2; c++) {
    j->buf[c].len = 0;
    j->flushed[c] = 0;
  }
  j->received = 0;
  j->tries++;
  j->start_mono = cli_now();
  j->start_wall = cli_wall();
  j->deadline = r->o->timeout > 0 ? j->start_mono + r->o->timeout : 0;
  j->kill_at = 0;
  return spawn(j);
}

/* Takes the next input and starts its job: 1 started, 0 no more input, -1 error. */
static int start_next(run *r) {
  for (;;) {
    char **args;
    size_t nargs;
    int rc = cli_input_next(r->in, &args, &nargs);
    if (rc <= 0) {
      r->input_done = true;
      return rc;
    }
    unsigned long seq = ++r->seq;
    if (cli_joblog_done(r->log, seq))
      continue;
    char *cmd = cli_command(r->o->cmd, r->o->ncmd, args, nargs, seq);
    if (!cmd)
      return -1;
    if (r->o->dry_run) {
      size_t n = strlen(cmd);
      cmd[n] = '\n'; /* the terminating NUL's place: one write */
      (void)cli_write_all(1, cmd, n + 1);
      free(cmd);
      continue;
    }
    job *j = calloc(1, sizeof *j);
    char *tag = r->o->tag ? cli_tag_of(args, nargs) : NULL;
    if (!j || (r->o->tag && !tag)) {
      free(j);
      free(tag);
      free(cmd);
      return -1;
    }
    *j = (job){.seq = seq, .cmd = cmd, .tag = tag, .fd = {-1, -1}};
    if (start_attempt(r, j)) {
      job_free(j);
      return -1;
    }
    r->running[r->nrunning++] = j;
    if (r->o->keep_order) {
      if (r->fifo_len == r->fifo_cap) {
        size_t cap = r->fifo_cap ? 2 * r->fifo_cap : 64;
        job **n = malloc(cap * sizeof *n);
        if (!n)
          return -1;
        for (size_t i = 0; i < r->fifo_len; i++)
          n[i] = r->fifo[(r->fifo_head + i) % r->fifo_cap];
        free(r->fifo);
        r->fifo = n;
        r->fifo_cap = cap;
        r->fifo_head = 0;
      }
      r->fifo[(r->fifo_head + r->fifo_len++) % r->fifo_cap] = j;
    }
    return 1;
  }
}

/* Writes the finished jobs at the head of the -k order (or j itself without -k). */
static void write_done(run *r, job *j) {
  if (!r->o->keep_order) {
    emit(r, j, 0, true);
    emit(r, j, 1, true);
    job_free(j);
    return;
  }
  while (r->fifo_len && r->fifo[r->fifo_head]->done) {
    job *h = r->fifo[r->fifo_head];
    r->fifo_head = (r->fifo_head + 1) % r->fifo_cap;
    r->fifo_len--;
    emit(r, h, 0, true);
    emit(r, h, 1, true);
    job_free(h);
  }
  if (r->fifo_len && r->o->line_buffer) { /* the new head streams from now on */
    emit(r, r->fifo[r->fifo_head], 0, false);
    emit(r, r->fifo[r->fifo_head], 1, false);
  }
}

/* Whether the finished job is to be tried again (--retries). */
static bool retry(run *r, job *j, bool failed) {
  if (!failed || j->killed || r->halting || j->tries >= r->o->retries)
    return false;
  return start_attempt(r, j) == 0;
}

static void halt_now(run *r) {
  for (size_t i = 0; i < r->nrunning; i++) {
    if (!r->running[i]->done && !r->running[i]->killed) {
      r->running[i]->killed = true;
      r->running[i]->kill_at = cli_now() + KILL_GRACE;
      kill_job(r->running[i], SIGTERM);
    }
  }
}

/* Logs and writes a job that is over (and frees it, unless -k keeps it for its turn); or
 * starts it again: true then. */
static bool finish(run *r, job *j) {
  int st = j->status;
  bool sig = WIFSIGNALED(st);
  int exitval = j->killed ? -1 : sig ? 0 : WEXITSTATUS(st);
  int signo = sig ? WTERMSIG(st) : 0;
  bool failed = j->killed || sig || exitval != 0;
  if (retry(r, j, failed))
    return true;
  j->done = true;
  cli_joblog_write(r->log, j->seq, j->start_wall, cli_now() - j->start_mono, j->received,
                   exitval, signo, j->cmd);
  if (j->timed_out)
    fprintf(stderr, "mproc: Warning: This job was killed because it timed out:\n"
                    "mproc: Warning: %s\n", j->cmd);
  if (failed && !(j->killed && !j->timed_out)) {
    r->failed++;
    if (r->o->halt != CLI_HALT_NONE && !r->halting && r->failed >= r->o->halt_fail) {
      fprintf(stderr, "mproc: This job failed:\n%s\n", j->cmd);
      r->halting = true;
      r->halt_status = r->o->halt_fail == 1 ? (exitval > 0 ? exitval : 1) : -1;
      if (r->o->halt == CLI_HALT_NOW)
        halt_now(r);
      else if (r->nrunning > 1)
        fprintf(stderr, "mproc: Starting no more jobs. Waiting for %zu jobs to finish.\n",
                r->nrunning - 1);
    }
  }
  r->ndone++;
  cli_bar_update(&r->bar, r->ndone, r->total, false);
  write_done(r, j);
  return false;
}

/* Reads what a job's pipe holds; closes it at EOF. */
static void drain(run *r, job *j, int c) {
  char tmp[65536];
  for (;;) {
    ssize_t n = read(j->fd[c], tmp, sizeof tmp);
    if (n > 0) {
      if (cli_buf_add(&j->buf[c], tmp, (size_t)n)) {
        fprintf(stderr, "mproc: Error: out of memory for a job's output\n");
        j->killed = true;
        kill_job(j, SIGKILL);
        break;
      }
      if (c == 0)
        j->received += (unsigned long long)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      close(j->fd[c]);
      j->fd[c] = -1;
    }
    break;
  }
  if (streaming(r, j))
    emit(r, j, c, false);
}

/* Reaps, checks deadlines, and finishes the jobs that are over. */
static void step_jobs(run *r) {
  double now = cli_now();
  for (size_t i = 0; i < r->nrunning;) {
    job *j = r->running[i];
    if (j->pid > 0) {
      int st;
      pid_t w = waitpid(j->pid, &st, WNOHANG);
      if (w == j->pid) {
        j->status = st;
        j->pid = -j->pid; /* reaped: the group may live on in a grandchild */
      }
    }
    if (j->deadline && now >= j->deadline && !j->killed) {
      j->killed = j->timed_out = true;
      j->kill_at = now + KILL_GRACE;
      kill_job(j, SIGTERM);
    } else if (j->kill_at && now >= j->kill_at) {
      j->kill_at = 0;
      kill_job(j, SIGKILL);
    }
    if (j->pid < 0 && j->fd[0] < 0 && j->fd[1] < 0) {
      if (j->kill_at)
        kill(j->pid, SIGKILL); /* j->pid is -group: what is left of it */
      r->running[i] = r->running[--r->nrunning];
      j->pid = 0;
      if (finish(r, j)) /* retried: running again */
        r->running[r->nrunning++] = j;
      continue;
    }
    i++;
  }
}

static double next_wake(run *r) {
  double t = -1, now = cli_now();
  for (size_t i = 0; i < r->nrunning; i++) {
    job *j = r->running[i];
    double d = j->kill_at ? j->kill_at : j->killed ? 0 : j->deadline;
    if (d && (t < 0 || d - now < t))
      t = d - now > 0 ? d - now : 0;
  }
  return t;
}

/* Ctrl-C (or TERM/HUP): every job's group gets TERM, then KILL; all reaped. */
static void stop_all(run *r) {
  for (size_t i = 0; i < r->nrunning; i++)
    kill_job(r->running[i], SIGTERM);
  double until = cli_now() + KILL_GRACE;
  bool left = true;
  while (left && cli_now() < until) {
    left = false;
    for (size_t i = 0; i < r->nrunning; i++) {
      job *j = r->running[i];
      if (j->pid > 0 && waitpid(j->pid, &j->status, WNOHANG) == j->pid)
        j->pid = -j->pid;
      left |= j->pid > 0;
    }
    if (left)
      poll(NULL, 0, 5);
  }
  for (size_t i = 0; i < r->nrunning; i++) {
    job *j = r->running[i];
    kill(j->pid > 0 ? -j->pid : j->pid, SIGKILL);
    if (j->pid > 0)
      while (waitpid(j->pid, &j->status, 0) < 0 && errno == EINTR) {
      }
  }
}

static int loop(run *r) {
  struct pollfd *pf = malloc((2 * (size_t)r->o->jobs + 1) * sizeof *pf);
  job **who = malloc(2 * (size_t)r->o->jobs * sizeof *who);
  if (!pf || !who) {
    free(pf);
    free(who);
    return -1;
  }
  int rc = 0;
  for (;;) {
    while (!r->input_done && !r->halting && r->nrunning < (size_t)r->o->jobs)
      if (start_next(r) < 0) {
        rc = -1;
        goto out;
      }
    if (r->nrunning == 0)
      break;
    nfds_t n = 0;
    pf[n++] = (struct pollfd){.fd = cli_signal_fd(), .events = POLLIN};
    for (size_t i = 0; i < r->nrunning; i++)
      for (int c = 0; c < 2; c++)
        if (r->running[i]->fd[c] >= 0) {
          who[n - 1] = r->running[i];
          pf[n++] = (struct pollfd){.fd = r->running[i]->fd[c], .events = POLLIN};
        }
    double t = next_wake(r);
    int pr = poll(pf, n, t < 0 ? -1 : (int)(t * 1000) + 1);
    if (cli_interrupted()) {
      stop_all(r);
      rc = 128 + cli_interrupted();
      goto out;
    }
    if (pr > 0)
      for (nfds_t k = 1; k < n; k++)
        if (pf[k].revents)
          drain(r, who[k - 1], pf[k].fd == who[k - 1]->fd[0] ? 0 : 1);
    step_jobs(r);
  }
out:
  free(pf);
  free(who);
  return rc;
}

int cli_run_commands(const cli_opts *o) {
  run r = {.o = o};
  int status = CLI_EXIT_USAGE;
  if (cli_signals_install(true)) {
    fprintf(stderr, "mproc: Error: cannot set up signal handling: %s\n", strerror(errno));
    return CLI_EXIT_USAGE;
  }
  if (cli_input_open(&r.in, o, stderr))
    goto out;
  if (o->joblog && !o->dry_run && cli_joblog_open(&r.log, o->joblog, o->resume, stderr))
    goto out;
  if (!(r.running = calloc((size_t)o->jobs, sizeof *r.running)))
    goto out;
  r.total = cli_input_total(r.in);
  if (o->bar)
    cli_bar_start(&r.bar);
  int rc = loop(&r);
  if (rc > 0) {
    status = rc;
  } else if (rc < 0) {
    fprintf(stderr, "mproc: Error: out of memory\n");
    stop_all(&r);
  } else {
    cli_bar_update(&r.bar, r.ndone, r.total, true);
    status = r.halt_status > 0 ? r.halt_status : r.failed > 101 ? 101 : r.failed;
  }
out:
  for (size_t i = 0; i < r.nrunning; i++) {
    for (int c = 0; c < 2; c++)
      if (r.running[i]->fd[c] >= 0)
        close(r.running[i]->fd[c]);
    if (!o->keep_order)
      job_free(r.running[i]);
  }
  for (size_t i = 0; i < r.fifo_len; i++)
    job_free(r.fifo[(r.fifo_head + i) % r.fifo_cap]);
  free(r.fifo);
  free(r.running);
  cli_joblog_close(r.log);
  cli_input_free(r.in);
  return status;
}
