/* Output: buffers, whole writes, --tag prefixes, the --bar; and the tool's clocks and its
 * own signal handlers (a self-pipe the event loops poll). */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cli_buf_add(cli_buf *b, const void *src, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) {
      if (cap > SIZE_MAX / 2)
        return -1;
      cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
      return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
  return 0;
}

void cli_buf_free(cli_buf *b) {
  free(b->p);
  *b = (cli_buf){0};
}

int cli_write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

int cli_write_tagged(int fd, const char *tag, const char *data, size_t n) {
  if (!tag)
    return cli_write_all(fd, data, n);
  size_t tlen = strlen(tag);
  cli_buf out = {0};
  int rc = 0;
  while (n && rc == 0) {
    const char *nl = memchr(data, '\n', n);
    size_t line = nl ? (size_t)(nl - data) + 1 : n;
    rc = cli_buf_add(&out, tag, tlen) || cli_buf_add(&out, "\t", 1) ||
         cli_buf_add(&out, data, line);
    data += line;
    n -= line;
  }
  if (rc == 0)
    rc = cli_write_all(fd, out.p, out.len);
  cli_buf_free(&out);
  return rc;
}

char *cli_tag_of(char *const *args, size_t nargs) {
  size_t len = 1;
  for (size_t i = 0; i < nargs; i++)
    len += strlen(args[i]) + 1;
  char *t = malloc(len), *p = t;
  if (!t)
    return NULL;
  for (size_t i = 0; i < nargs; i++) {
    if (i)
      *p++ = ' ';
    size_t n = strlen(args[i]);
    memcpy(p, args[i], n);
    p += n;
  }
  *p = 0;
  return t;
}

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double cli_wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the bar: "done/total pct% rate/s ETA s" rewritten in place, at most 10 times/s ---- */
void cli_bar_start(cli_bar *b) {
  b->on = isatty(STDERR_FILENO) == 1;
  b->t0 = b->last = cli_now();
}

void cli_bar_update(cli_bar *b, size_t done, size_t total, bool final) {
  if (!b->on)
    return;
  double now = cli_now();
  if (!final && now - b->last < 0.1)
    return;
  b->last = now;
  double el = now - b->t0, rate = el > 0 ? (double)done / el : 0;
  char line[160];
  int n;
  if (total) {
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    int pct = (int)(100.0 * (double)done / (double)total);
    char bar[21];
    int fill = pct / 5;
    for (int i = 0; i < 20; i++)
      bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    n = snprintf(line, sizeof line, "\r%3d%% [%s] %zu/%zu %.1f/s ETA %.0fs ", pct, bar, done,
                 total, rate, eta);
  } else {
    n = snprintf(line, sizeof line, "\r%zu done %.1f/s ", done, rate);
  }
  if (n > 0)
    (void)cli_write_all(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
  if (final)
    (void)cli_write_all(STDERR_FILENO, "\n", 1);
}

/* ---- signals: the tool is a program, so it owns its dispositions ---- */
static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t sig_came;

static void on_signal(int sig) {
  int saved = errno;
  if (sig != SIGCHLD && !sig_came)
    sig_came = sig;
  char c = (char)sig;
  (void)!write(sig_pipe[1], &c, 1);
  errno = saved;
}

int cli_signals_install(bool chld) {
  if (pipe(sig_pipe))
    return -1;
  for (int k = 0; k < 2; k++) {
    fcntl(sig_pipe[k], F_SETFD, FD_CLOEXEC);
    fcntl(sig_pipe[k], F_SETFL, fcntl(sig_pipe[k], F_GETFL) | O_NONBLOCK);
  }
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  /* SIGPIPE too: a reader of our output that went away (mproc ... | head) stops the run
   * like Ctrl-C, so the jobs' groups are killed rather than left running. */
  int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0] - !chld; i++)
    if (sigaction(sigs[i], &sa, NULL))
      return -1;
  return 0;
}

int cli_signal_fd(void) { return sig_pipe[0]; }

int cli_interrupted(void) {
  char c[64];
  while (read(sig_pipe[0], c, sizeof c) > 0) {
  }
  return sig_came;
}
