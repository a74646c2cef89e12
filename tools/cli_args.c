/* The command line: GNU parallel's everyday options, the command words, the ::: and ::::
 * groups. Options come before the command; the first word that is not an option starts it
 * (as parallel, so `mproc sh -c '...'` passes -c to sh). */
#include "cli.h"

#include "mproc.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define JOBS_UNLIMITED 256 /* -j 0: "as many as possible", bounded by descriptors */

void cli_usage(FILE *f) {
  fputs("Usage: mproc [OPTIONS] COMMAND [ARG...] [::: INPUT... | :::: FILE...]...\n"
        "       mproc [OPTIONS] COMMAND [ARG...] < inputs (one per line)\n"
        "       mproc [OPTIONS] --lib ./libfoo.so --fn name < lines\n"
        "\n"
        "Runs COMMAND (through /bin/sh -c) once per input, in parallel, as GNU parallel.\n"
        "{} input  {.} without extension  {/} basename  {//} dirname  {/.} basename\n"
        "without extension  {#} job number  {N} {N.} {N/} {N//} {N/.} the Nth group's\n"
        "input. Without any, the input is appended. Several ::: groups: their product.\n"
        "\n"
        "  -j, --jobs N        jobs at once (default: the usable CPUs; 0: as many as possible)\n"
        "  -k, --keep-order    output in input order\n"
        "      --line-buffer   stream output line by line (default: whole per job)\n"
        "      --tag           prefix each output line with the input and a tab\n"
        "      --timeout S     kill a job (its whole process group) after S seconds\n"
        "      --retries N     try a failing job up to N times\n"
        "      --halt WHEN,fail=N  WHEN: now (kill running jobs) or soon (let them end)\n"
        "      --joblog FILE   one line per job: Seq Host Starttime JobRuntime Send\n"
        "                      Receive Exitval Signal Command\n"
        "      --resume        skip jobs the joblog lists\n"
        "      --dry-run       print the commands, run nothing\n"
        "      --bar           a progress bar on stderr (when it is a terminal)\n"
        "  -a, --arg-file FILE inputs from FILE, one per line (- : stdin)\n"
        "      --lib SO --fn NAME  function mode: int NAME(const char *line, size_t len,\n"
        "                      mproc_result *res) per line in a pool; results in order\n"
        "      --unordered     function mode: results as they come\n"
        "  -h, --help          this text\n"
        "      --version       the version\n"
        "\n"
        "Exit status: the number of failed jobs (at most 101); 255 for bad usage;\n"
        "130 after Ctrl-C; with --halt ...,fail=1 the failing job's status.\n",
        f);
}

static int bad(FILE *err, const char *fmt, const char *what) {
  fputs("mproc: Error: ", err);
  fprintf(err, fmt, what);
  fputs("\nTry 'mproc --help'.\n", err);
  return -1;
}

static bool parse_int(const char *s, int lo, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > INT_MAX)
    return false;
  *out = (int)v;
  return true;
}

static bool parse_halt(const char *s, cli_opts *o) {
  if (strcmp(s, "never") == 0 || strcmp(s, "0") == 0) {
    o->halt = CLI_HALT_NONE;
    return true;
  }
  const char *rest;
  if (strncmp(s, "now,fail=", 9) == 0) {
    o->halt = CLI_HALT_NOW;
    rest = s + 9;
  } else if (strncmp(s, "soon,fail=", 10) == 0) {
    o->halt = CLI_HALT_SOON;
    rest = s + 10;
  } else if (strcmp(s, "1") == 0 || strcmp(s, "2") == 0) { /* parallel's old forms */
    o->halt = s[0] == '1' ? CLI_HALT_SOON : CLI_HALT_NOW;
    rest = "1";
  } else {
    return false;
  }
  return parse_int(rest, 1, &o->halt_fail);
}

static int add_source(cli_opts *o, cli_source s) {
  cli_source *n = realloc(o->sources, (o->nsources + 1) * sizeof *n);
  if (!n)
    return -1;
  o->sources = n;
  o->sources[o->nsources++] = s;
  return 0;
}

/* The value of an option: "--opt=v", "-jN", or the next word. NULL if there is none. */
static const char *value_of(int argc, char **argv, int *i, size_t skip) {
  const char *a = argv[*i];
  if (a[skip] == '=')
    return a + skip + 1;
  if (a[skip])
    return a + skip;
  if (*i + 1 >= argc)
    return NULL;
  return argv[++*i];
}

/* Parses the ::: / :::: groups from argv[i] on (argv[i] is a separator). */
static int parse_groups(cli_opts *o, int argc, char **argv, int i, FILE *err) {
  while (i < argc) {
    bool files = strcmp(argv[i], "::::") == 0;
    int start = ++i;
    while (i < argc && strcmp(argv[i], ":::") != 0 && strcmp(argv[i], "::::") != 0)
      i++;
    if (files) {
      for (int k = start; k < i; k++)
        if (add_source(o, (cli_source){.path = argv[k], .is_file = true}))
          return bad(err, "%s", "out of memory");
    } else if (add_source(o, (cli_source){.words = argv + start, .nwords = (size_t)(i - start)})) {
      return bad(err, "%s", "out of memory");
    }
  }
  return 0;
}

static bool is_sep(const char *a) { return strcmp(a, ":::") == 0 || strcmp(a, "::::") == 0; }

/* One option at argv[*i]: 0 done, 1 help/version printed, -1 bad. */
static int parse_option(cli_opts *o, int argc, char **argv, int *i, FILE *err) {
  const char *a = argv[*i], *v;
#define LONG(n) (strncmp(a, n, sizeof(n) - 1) == 0 && (a[sizeof(n) - 1] == 0 || a[sizeof(n) - 1] == '='))
#define NEED(n, skip)                                                                      \
  if (!(v = value_of(argc, argv, i, skip)))                                             \
    return bad(err, "option %s needs a value", n);
  if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
    cli_usage(stdout);
    return 1;
  } else if (strcmp(a, "--version") == 0) {
    printf("mproc %s\n", mproc_version_string());
    return 1;
  } else if (strcmp(a, "-k") == 0 || strcmp(a, "--keep-order") == 0) {
    o->keep_order = true;
  } else if (strcmp(a, "--line-buffer") == 0 || strcmp(a, "--lb") == 0) {
    o->line_buffer = true;
  } else if (strcmp(a, "--tag") == 0) {
    o->tag = true;
  } else if (strcmp(a, "--resume") == 0) {
    o->resume = true;
  } else if (strcmp(a, "--dry-run") == 0) {
    o->dry_run = true;
  } else if (strcmp(a, "--bar") == 0) {
    o->bar = true;
  } else if (strcmp(a, "--unordered") == 0) {
    o->unordered = true;
  } else if (strncmp(a, "-j", 2) == 0 || LONG("--jobs")) {
    NEED("-j", a[1] == 'j' ? 2 : 6);
    int j;
    if (!parse_int(v, 0, &j))
      return bad(err, "-j needs a number of jobs >= 0, not '%s'", v);
    o->jobs = j ? j : JOBS_UNLIMITED;
  } else if (LONG("--timeout")) {
    NEED("--timeout", 9);
    char *end;
    errno = 0;
    double t = strtod(v, &end);
    if (errno || end == v || *end || !(t > 0) || t > 1e9)
      return bad(err, "--timeout needs seconds > 0, not '%s'", v);
    o->timeout = t;
  } else if (LONG("--retries")) {
    NEED("--retries", 9);
    if (!parse_int(v, 0, &o->retries))
      return bad(err, "--retries needs a number >= 0, not '%s'", v);
  } else if (LONG("--halt") || LONG("--halt-on-error")) {
    NEED("--halt", a[6] == '-' ? 15 : 6);
    if (!parse_halt(v, o))
      return bad(err, "--halt takes now,fail=N or soon,fail=N (N >= 1), not '%s'", v);
  } else if (LONG("--joblog")) {
    NEED("--joblog", 8);
    o->joblog = v;
  } else if (strncmp(a, "-a", 2) == 0 || LONG("--arg-file")) {
    NEED("-a", a[1] == 'a' ? 2 : 10);
    if (add_source(o, (cli_source){.path = v, .is_file = true}))
      return bad(err, "%s", "out of memory");
  } else if (LONG("--lib")) {
    NEED("--lib", 5);
    o->lib = v;
  } else if (LONG("--fn")) {
    NEED("--fn", 4);
    o->fn = v;
  } else {
    return bad(err, "unknown option '%s'", a);
  }
#undef LONG
#undef NEED
  return 0;
}

int cli_parse(cli_opts *o, int argc, char **argv, FILE *err) {
  *o = (cli_opts){.jobs = mproc_cpu_count()};
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (a[0] != '-' || a[1] == 0 || is_sep(a))
      break;
    int rc = parse_option(o, argc, argv, &i, err);
    if (rc)
      return rc;
  }
  int cmd0 = i;
  while (i < argc && !is_sep(argv[i]))
    i++;
  o->cmd = argv + cmd0;
  o->ncmd = (size_t)(i - cmd0);
  if (parse_groups(o, argc, argv, i, err))
    return -1;
  if ((o->lib != NULL) != (o->fn != NULL))
    return bad(err, "%s", "function mode needs both --lib FILE and --fn NAME");
  if (o->lib && o->ncmd)
    return bad(err, "function mode takes no command ('%s')", o->cmd[0]);
  bool has_groups = false;
  for (size_t k = 0; k < o->nsources; k++)
    has_groups |= !o->sources[k].is_file;
  if (!o->lib && o->ncmd == 0 && !has_groups)
    return bad(err, "%s", "no command given");
  return 0;
}

void cli_opts_free(cli_opts *o) {
  free(o->sources);
  o->sources = NULL;
  o->nsources = 0;
}
