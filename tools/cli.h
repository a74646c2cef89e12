/* The mproc command-line tool: what its parts share. Each part is one job:
 *   cli_args.c   the command line: options, the command, the ::: groups
 *   cli_input.c  the inputs: ::: groups, -a / :::: files, stdin lines; their cross product
 *   cli_subst.c  a job's command: {} and its kin replaced, values shell-quoted
 *   cli_run.c    running commands: the slots, the event loop, timeouts, retries, halt, Ctrl-C
 *   cli_output.c a job's output: grouped, --line-buffer, --tag, -k order, the --bar
 *   cli_joblog.c --joblog lines and --resume
 *   cli_fn.c     function mode: --lib/--fn lines through a pool
 * The tool uses only mproc.h and POSIX. */
#ifndef MPROC_CLI_H
#define MPROC_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CLI_EXIT_USAGE 255 /* bad usage, as GNU parallel */
#define CLI_EXIT_INTERRUPTED 130

typedef enum { CLI_HALT_NONE, CLI_HALT_SOON, CLI_HALT_NOW } cli_halt_kind;

/* One input source: a ::: group (words from argv) or a file (-a FILE, :::: FILE, or stdin
 * when path is NULL). */
typedef struct cli_source {
  char **words; /* ::: group: borrowed from argv */
  size_t nwords;
  const char *path; /* file source: NULL words; "-" or NULL path is stdin */
  bool is_file;
} cli_source;

typedef struct cli_opts {
  int jobs; /* > 0 */
  bool keep_order, line_buffer, tag, dry_run, bar, resume, unordered;
  double timeout;  /* 0: none */
  int retries;     /* tries in all, as GNU parallel's --retries (0 and 1: once) */
  cli_halt_kind halt;
  int halt_fail;   /* failures that halt */
  const char *joblog;
  const char *lib, *fn; /* function mode when lib is set */
  char **cmd; /* the command words (borrowed from argv) */
  size_t ncmd;
  cli_source *sources; /* in command-line order; none: stdin */
  size_t nsources;
} cli_opts;

/* Parses argv into *o (o->sources malloc'd; free with cli_opts_free). Returns 0, 1 when it
 * printed --help or --version (exit 0), or -1 after printing a message on err (exit 255). */
int cli_parse(cli_opts *o, int argc, char **argv, FILE *err);
void cli_opts_free(cli_opts *o);
void cli_usage(FILE *f);

/* ---- inputs ---- */
typedef struct cli_input cli_input;
/* Opens every source (a file that cannot be opened: message on err, -1). */
int cli_input_open(cli_input **in, const cli_opts *o, FILE *err);
/* The next tuple of arguments: 1 and *args / *nargs (owned by in, valid until the next
 * call), 0 at the end, -1 on a read error (message printed). */
int cli_input_next(cli_input *in, char ***args, size_t *nargs);
void cli_input_free(cli_input *in);
/* How many tuples in all when known before reading (::: groups, files read whole), else 0. */
size_t cli_input_total(const cli_input *in);

/* ---- {} replacement ---- */
/* Appends src to *s, shell-quoted as GNU parallel quotes a replacement: as is when made only
 * of [A-Za-z0-9_.+/-] (and non-empty), else in single quotes with ' written '"'"'. */
int cli_quote(char **s, size_t *len, size_t *cap, const char *src, size_t n);
/* The command line of job seq for args: the command words joined by spaces with the
 * replacement strings replaced ({} {.} {/} {//} {/.} {#} and {N} {N.} {N/} {N//} {N/.});
 * without any, the quoted args appended. malloc'd, NULL on ENOMEM. */
char *cli_command(char *const *cmd, size_t ncmd, char *const *args, size_t nargs,
                  unsigned long seq);
/* Whether the words hold a replacement string. */
bool cli_has_replacement(char *const *cmd, size_t ncmd);

/* ---- joblog ---- */
typedef struct cli_joblog cli_joblog;
/* Opens the joblog (appending when resuming, after reading the seqs it holds; else
 * truncating and writing the header). -1 with a message on err. */
int cli_joblog_open(cli_joblog **j, const char *path, bool resume, FILE *err);
/* Whether --resume found seq in the log. */
bool cli_joblog_done(const cli_joblog *j, unsigned long seq);
/* One line: GNU parallel's columns. */
void cli_joblog_write(cli_joblog *j, unsigned long seq, double start, double runtime,
                      unsigned long long received, int exitval, int sig, const char *cmd);
void cli_joblog_close(cli_joblog *j);

/* ---- output ---- */
typedef struct cli_buf {
  char *p;
  size_t len, cap;
} cli_buf;
int cli_buf_add(cli_buf *b, const void *src, size_t n);
void cli_buf_free(cli_buf *b);
/* Writes all of n bytes to fd (retrying EINTR and short writes); -1 on error. */
int cli_write_all(int fd, const void *p, size_t n);
/* Writes data to fd, each line prefixed with tag + '\t' when tag is non-NULL. A last line
 * without a newline is written as it is (prefixed too). */
int cli_write_tagged(int fd, const char *tag, const char *data, size_t n);
/* The --tag text of a tuple: the args joined by spaces (as parallel). malloc'd. */
char *cli_tag_of(char *const *args, size_t nargs);

/* The progress bar on stderr: done of total (total 0: unknown), rate and ETA. */
typedef struct cli_bar {
  bool on;
  double t0, last;
} cli_bar;
void cli_bar_start(cli_bar *b);
void cli_bar_update(cli_bar *b, size_t done, size_t total, bool final);

/* ---- the two modes: each returns the tool's exit status ---- */
int cli_run_commands(const cli_opts *o);
int cli_run_function(const cli_opts *o);

/* ---- shared ---- */
double cli_now(void); /* CLOCK_MONOTONIC seconds */
double cli_wall(void); /* seconds since the epoch */
/* Ctrl-C, TERM, HUP, PIPE (and SIGCHLD when chld): the tool's own handlers write a byte to a
 * self-pipe, so a poll on cli_signal_fd() wakes. */
int cli_signals_install(bool chld);
int cli_signal_fd(void);
int cli_interrupted(void); /* drains the pipe: the first INT/TERM/HUP/PIPE that came, or 0 */

#endif
