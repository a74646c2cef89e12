/* Function mode: --lib FILE --fn NAME calls int NAME(const char *line, size_t len,
 * mproc_result *res) for each input line in a pool's workers. Lines go through
 * mproc_pool_imap_gen in chunks (one task per CHUNK lines, so the cost of a task is shared
 * by hundreds of lines); results come back in input order (--unordered: as they come) and
 * are written as they are (the function adds a newline if it wants one).
 *
 * A line whose function crashes (or runs past --timeout) takes its whole chunk down with
 * its worker, so every line of a chunk that failed that way is run again alone (apply): the
 * one that crashes again fails alone, the others give their results at their place. The
 * lines in flight are kept here for that, in a table keyed by input index.
 *
 * Each worker loads the library itself (the pool's initializer), so this works whatever
 * the start method; the tool loads it too, first, to report a bad library or name at once. */
#include "cli.h"

#include "mproc.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 512

typedef int (*line_fn)(const char *line, size_t len, mproc_result *res);
static line_fn user_fn;

/* The pool's initializer, in each worker: initargs is "LIB\0FN\0". */
static int load_fn(const void *initargs, size_t len) {
  const char *lib = initargs;
  if (len < 4 || memchr(lib, 0, len) == NULL)
    return 1;
  const char *fn = lib + strlen(lib) + 1;
  void *h = dlopen(lib, RTLD_NOW);
  if (!h)
    return 1;
  user_fn = (line_fn)(uintptr_t)dlsym(h, fn);
  return user_fn ? 0 : 1;
}

/* The task: an item is the line's bytes and a NUL (so line is a C string too). */
static int line_task(const void *arg, size_t len, mproc_result *res) {
  return user_fn((const char *)arg, len - 1, res);
}

typedef struct held {
  struct held *next;
  size_t index, len; /* len: with the NUL */
  char line[];
} held;

typedef struct fnrun {
  const cli_opts *o;
  cli_input *in;
  cli_buf line; /* the item being yielded */
  size_t next_index;
  held **table;
  size_t nbuckets;
  int gen_error;
} fnrun;

/* The generator: the next input tuple, joined by spaces, with a NUL; kept in the table. */
static int gen(void *ctx, const void **item, size_t *len) {
  fnrun *f = ctx;
  char **args;
  size_t nargs;
  int rc = cli_input_next(f->in, &args, &nargs);
  if (rc <= 0)
    return rc < 0 ? -EIO : 0;
  size_t total = 1;
  for (size_t i = 0; i < nargs; i++)
    total += strlen(args[i]) + (i > 0);
  held *h = malloc(sizeof *h + total);
  if (!h)
    return MPROC_ENOMEM;
  char *p = h->line;
  for (size_t i = 0; i < nargs; i++) {
    if (i)
      *p++ = ' ';
    size_t n = strlen(args[i]);
    memcpy(p, args[i], n);
    p += n;
  }
  *p = 0;
  h->index = f->next_index++;
  h->len = total;
  size_t b = h->index % f->nbuckets;
  h->next = f->table[b];
  f->table[b] = h;
  *item = h->line;
  *len = total;
  return 1;
}

static held *take(fnrun *f, size_t index) {
  for (held **pp = &f->table[index % f->nbuckets]; *pp; pp = &(*pp)->next) {
    if ((*pp)->index == index) {
      held *h = *pp;
      *pp = h->next;
      return h;
    }
  }
  return NULL;
}

static void put_result(const cli_opts *o, const held *h, const void *res, size_t len) {
  if (o->tag) {
    fwrite(h->line, 1, h->len - 1, stdout);
    fputc('\t', stdout);
  }
  fwrite(res, 1, len, stdout);
}

static void report(const held *h, int rc, const char *why) {
  fflush(stdout);
  fprintf(stderr, "mproc: line %zu failed (%s): %s\n", h->index + 1, mproc_err_name(rc),
          why ? why : mproc_strerror(rc));
}

/* One result of the iteration: 0 written, 1 failed (reported). */
static int one(fnrun *f, mproc_pool *pool, mproc_imap *it, int rc, const void *res,
               size_t len) {
  held *h = take(f, mproc_imap_index(it));
  if (!h) /* cannot happen: every index the iterator returns was yielded */
    return 1;
  int failed = 0;
  if (rc == 0) {
    put_result(f->o, h, res, len);
  } else if (rc == MPROC_ECRASHED || rc == MPROC_EEXPIRED) {
    void *r = NULL;
    size_t rlen = 0;
    mproc_async *a = NULL;
    int again = mproc_pool_apply_async(pool, line_task, h->line, h->len, &a);
    if (again == 0)
      again = mproc_async_get(a, &r, &rlen, MPROC_FOREVER);
    if (again == 0) {
      put_result(f->o, h, r, rlen);
    } else {
      report(h, again, again == MPROC_ECRASHED ? "the function crashed on this line"
                       : a ? mproc_async_error(a) : NULL);
      failed = 1;
    }
    mproc_async_free(a);
    free(r);
  } else {
    report(h, rc, mproc_imap_error(it));
    failed = 1;
  }
  free(h);
  return failed;
}

static int check_mode(const cli_opts *o) {
  const char *bad = o->joblog ? "--joblog" : o->resume ? "--resume" : o->retries ? "--retries"
                    : o->halt ? "--halt" : o->dry_run ? "--dry-run"
                    : o->line_buffer ? "--line-buffer" : NULL;
  if (bad)
    fprintf(stderr, "mproc: Error: %s is for commands, not function mode\n", bad);
  return bad ? -1 : 0;
}

static int iterate(fnrun *f, mproc_pool *pool, mproc_imap *it) {
  int failed = 0;
  cli_bar bar = {0};
  if (f->o->bar)
    cli_bar_start(&bar);
  size_t done = 0, total = cli_input_total(f->in);
  for (;;) {
    const void *res;
    size_t len;
    int rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER);
    if (rc == MPROC_EOF)
      break;
    if (rc == -EINTR) {
      if (cli_interrupted())
        return -(128 + cli_interrupted());
      continue;
    }
    if (rc == -EIO || rc == MPROC_ENOMEM) { /* the generator's: message printed */
      failed++;
      break;
    }
    failed += one(f, pool, it, rc, res, len);
    cli_bar_update(&bar, ++done, total, false);
  }
  cli_bar_update(&bar, done, total, true);
  return failed;
}

int cli_run_function(const cli_opts *o) {
  if (check_mode(o))
    return CLI_EXIT_USAGE;
  void *h = dlopen(o->lib, RTLD_NOW);
  if (!h) {
    fprintf(stderr, "mproc: Error: cannot load the library '%s': %s\n", o->lib, dlerror());
    return CLI_EXIT_USAGE;
  }
  if (!dlsym(h, o->fn)) {
    fprintf(stderr, "mproc: Error: no function '%s' in '%s'\n", o->fn, o->lib);
    dlclose(h);
    return CLI_EXIT_USAGE;
  }
  size_t llen = strlen(o->lib), flen = strlen(o->fn);
  char *initargs = malloc(llen + flen + 2);
  fnrun f = {.o = o, .nbuckets = 4096};
  f.table = calloc(f.nbuckets, sizeof *f.table);
  int status = CLI_EXIT_USAGE;
  mproc_pool *pool = NULL;
  mproc_imap *it = NULL;
  if (!initargs || !f.table || cli_signals_install(false))
    goto out;
  memcpy(initargs, o->lib, llen + 1);
  memcpy(initargs + llen + 1, o->fn, flen + 1);
  if (cli_input_open(&f.in, o, stderr))
    goto out;
  mproc_pool_opts po = {.processes = o->jobs, .initializer = load_fn, .initargs = initargs,
                        .initargs_len = llen + flen + 2, .task_timeout = o->timeout};
  int rc = mproc_pool_new(&pool, &po);
  if (rc) {
    fprintf(stderr, "mproc: Error: cannot start the pool: %s\n", mproc_strerror(rc));
    goto out;
  }
  mproc_imap_opts io = {.unordered = o->unordered, .chunksize = CHUNK,
                        .buffersize = (size_t)CHUNK * 4 * (size_t)o->jobs};
  if ((rc = mproc_pool_imap_gen(pool, line_task, gen, &f, &io, &it))) {
    fprintf(stderr, "mproc: Error: %s\n", mproc_strerror(rc));
    goto out;
  }
  int failed = iterate(&f, pool, it);
  status = failed < 0 ? -failed : failed > 101 ? 101 : failed;
out:
  fflush(stdout);
  mproc_imap_free(it);
  if (pool)
    mproc_pool_terminate(pool);
  mproc_pool_free(pool);
  for (size_t b = 0; f.table && b < f.nbuckets; b++)
    while (f.table[b]) {
      held *n = f.table[b]->next;
      free(f.table[b]);
      f.table[b] = n;
    }
  free(f.table);
  free(initargs);
  cli_input_free(f.in);
  dlclose(h);
  return status;
}
