/* --joblog and --resume. The columns and their formats are GNU parallel's, so tools that
 * read its joblogs read ours: Seq, Host (":" for this machine), Starttime (epoch, %.3f),
 * JobRuntime (%10.3f), Send (0), Receive (stdout bytes), Exitval (-1 when killed by the
 * tool: a timeout, --halt now, Ctrl-C), Signal, Command. --resume skips every seq the log
 * holds (whatever its status), as parallel's --resume does. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cli_joblog {
  FILE *f;
  unsigned char *seen; /* bitmap of seqs the log held */
  size_t nseen_bits;
};

static const char HEADER[] =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

static int mark(cli_joblog *j, unsigned long seq) {
  if (seq >= j->nseen_bits) {
    size_t bits = j->nseen_bits ? j->nseen_bits : 1024;
    while (bits <= seq)
      bits *= 2;
    unsigned char *n = realloc(j->seen, bits / 8);
    if (!n)
      return -1;
    memset(n + j->nseen_bits / 8, 0, (bits - j->nseen_bits) / 8);
    j->seen = n;
    j->nseen_bits = bits;
  }
  j->seen[seq / 8] |= (unsigned char)(1u << (seq % 8));
  return 0;
}

static int read_seen(cli_joblog *j, const char *path, FILE *err) {
  FILE *f = fopen(path, "r");
  if (!f)
    return errno == ENOENT ? 0 : -1; /* no log yet: nothing done */
  char *line = NULL;
  size_t cap = 0;
  int rc = 0;
  while (getline(&line, &cap, f) > 0) {
    char *end;
    unsigned long seq = strtoul(line, &end, 10);
    if (end != line && *end == '\t' && seq < (1ul << 40) && mark(j, seq)) {
      rc = -1;
      break;
    }
  }
  free(line);
  fclose(f);
  if (rc)
    fprintf(err, "mproc: Error: out of memory reading the joblog\n");
  return rc;
}

int cli_joblog_open(cli_joblog **out, const char *path, bool resume, FILE *err) {
  cli_joblog *j = calloc(1, sizeof *j);
  if (!j)
    return -1;
  if (resume && read_seen(j, path, err)) {
    fprintf(err, "mproc: Error: cannot read the joblog '%s': %s\n", path, strerror(errno));
    free(j);
    return -1;
  }
  bool append = resume && j->nseen_bits > 0;
  j->f = fopen(path, append ? "a" : "w");
  if (!j->f) {
    fprintf(err, "mproc: Error: cannot open the joblog '%s': %s\n", path, strerror(errno));
    free(j->seen);
    free(j);
    return -1;
  }
  if (!append)
    fputs(HEADER, j->f);
  fflush(j->f);
  *out = j;
  return 0;
}

bool cli_joblog_done(const cli_joblog *j, unsigned long seq) {
  return j && seq < j->nseen_bits && (j->seen[seq / 8] & (1u << (seq % 8)));
}

void cli_joblog_write(cli_joblog *j, unsigned long seq, double start, double runtime,
                      unsigned long long received, int exitval, int sig, const char *cmd) {
  if (!j)
    return;
  fprintf(j->f, "%lu\t:\t%.3f\t%10.3f\t0\t%llu\t%d\t%d\t%s\n", seq, start, runtime, received,
          exitval, sig, cmd);
  fflush(j->f); /* a log that a killed run leaves is still whole up to its last job */
}

void cli_joblog_close(cli_joblog *j) {
  if (!j)
    return;
  fclose(j->f);
  free(j->seen);
  free(j);
}
