/* The inputs. One source (stdin, a file, or one ::: group) is read as a stream, a line at a
 * time, so a million lines never sit in memory at once; several sources are read whole and
 * walked as their cross product, the first source varying slowest (GNU parallel's order). */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct group {
  char **items; /* owned when the source was a file */
  size_t n;
  bool owned;
} group;

struct cli_input {
  /* streaming: one source */
  FILE *f;
  bool close_f;
  const char *fname;
  char *line;
  size_t line_cap;
  char **words; /* one ::: group, streamed too */
  size_t nwords, next_word;
  bool streaming;
  /* product: several sources */
  group *groups;
  size_t ngroups;
  size_t *odo; /* the current index in each group */
  bool started, done;
  char **tuple; /* the current args */
};

static FILE *open_source(const char *path, bool *close_f, FILE *err) {
  *close_f = false;
  if (!path || strcmp(path, "-") == 0)
    return stdin;
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(err, "mproc: Error: cannot open input file '%s': %s\n", path, strerror(errno));
    return NULL;
  }
  *close_f = true;
  return f;
}

/* One line without its newline: 1, 0 at the end, -1 on a read error. */
static int read_line(FILE *f, char **line, size_t *cap, const char *name) {
  errno = 0;
  ssize_t n = getline(line, cap, f);
  if (n < 0) {
    if (ferror(f)) {
      fprintf(stderr, "mproc: Error: reading '%s': %s\n", name ? name : "stdin",
              strerror(errno ? errno : EIO));
      return -1;
    }
    return 0;
  }
  if (n > 0 && (*line)[n - 1] == '\n')
    (*line)[n - 1] = 0;
  return 1;
}

static int read_group(group *g, const char *path, FILE *err) {
  bool close_f;
  FILE *f = open_source(path, &close_f, err);
  if (!f)
    return -1;
  char *line = NULL;
  size_t cap = 0, alloc = 0;
  int rc;
  while ((rc = read_line(f, &line, &cap, path)) == 1) {
    if (g->n == alloc) {
      alloc = alloc ? 2 * alloc : 64;
      char **n = realloc(g->items, alloc * sizeof *n);
      if (!n) {
        rc = -1;
        break;
      }
      g->items = n;
    }
    if (!(g->items[g->n] = strdup(line))) {
      rc = -1;
      break;
    }
    g->n++;
  }
  free(line);
  if (close_f)
    fclose(f);
  return rc < 0 ? -1 : 0;
}

int cli_input_open(cli_input **out, const cli_opts *o, FILE *err) {
  cli_input *in = calloc(1, sizeof *in);
  if (!in)
    return -1;
  *out = in;
  if (o->nsources <= 1) {
    in->streaming = true;
    const cli_source *s = o->nsources ? &o->sources[0] : NULL;
    if (s && !s->is_file) {
      in->words = s->words;
      in->nwords = s->nwords;
      return 0;
    }
    in->fname = s ? s->path : NULL;
    in->f = open_source(in->fname, &in->close_f, err);
    return in->f ? 0 : -1;
  }
  in->groups = calloc(o->nsources, sizeof *in->groups);
  in->odo = calloc(o->nsources, sizeof *in->odo);
  in->tuple = calloc(o->nsources, sizeof *in->tuple);
  if (!in->groups || !in->odo || !in->tuple)
    return -1;
  in->ngroups = o->nsources;
  for (size_t k = 0; k < o->nsources; k++) {
    const cli_source *s = &o->sources[k];
    if (s->is_file) {
      in->groups[k].owned = true;
      if (read_group(&in->groups[k], s->path, err))
        return -1;
    } else {
      in->groups[k].items = s->words;
      in->groups[k].n = s->nwords;
    }
    if (in->groups[k].n == 0)
      in->done = true; /* a product with an empty factor is empty */
  }
  return 0;
}

int cli_input_next(cli_input *in, char ***args, size_t *nargs) {
  if (in->streaming) {
    *nargs = 1;
    if (in->words) {
      if (in->next_word == in->nwords)
        return 0;
      *args = &in->words[in->next_word++];
      return 1;
    }
    int rc = read_line(in->f, &in->line, &in->line_cap, in->fname);
    *args = &in->line;
    return rc;
  }
  if (in->done)
    return 0;
  if (in->started) { /* the odometer: the last group turns fastest */
    size_t k = in->ngroups;
    while (k > 0) {
      k--;
      if (++in->odo[k] < in->groups[k].n)
        break;
      in->odo[k] = 0;
      if (k == 0) {
        in->done = true;
        return 0;
      }
    }
  }
  in->started = true;
  for (size_t k = 0; k < in->ngroups; k++)
    in->tuple[k] = in->groups[k].items[in->odo[k]];
  *args = in->tuple;
  *nargs = in->ngroups;
  return 1;
}

void cli_input_free(cli_input *in) {
  if (!in)
    return;
  if (in->close_f)
    fclose(in->f);
  free(in->line);
  for (size_t k = 0; in->groups && k < in->ngroups; k++) {
    if (in->groups[k].owned) {
      for (size_t i = 0; i < in->groups[k].n; i++)
        free(in->groups[k].items[i]);
      free(in->groups[k].items);
    }
  }
  free(in->groups);
  free(in->odo);
  free(in->tuple);
  free(in);
}

size_t cli_input_total(const cli_input *in) {
  if (in->streaming)
    return in->words ? in->nwords : 0;
  size_t t = 1;
  for (size_t k = 0; k < in->ngroups; k++)
    t *= in->groups[k].n;
  return t;
}
