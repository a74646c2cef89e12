/*
 * file_search: which files under a directory contain a keyword? One file per task.
 *
 * The parent walks the tree, then streams one task per regular file through an ordered
 * imap (the task's argument is "keyword\0path", built by a generator as room frees up, so
 * a huge tree never has more than imap's buffersize tasks in flight); a worker counts the
 * file's lines containing the keyword and returns the count. Results come back in file
 * order. A file that cannot be read fails its own task (mproc_result_fail), never the
 * search.
 *
 *   usage: file_search [DIR KEYWORD]
 *   With no arguments it searches a generated sample tree for "needle" (then removes it).
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct list {
  char **v;
  size_t n, cap;
};

static int push(struct list *l, const char *s) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    char **v = realloc(l->v, cap * sizeof *v);
    if (!v)
      return -1;
    l->v = v;
    l->cap = cap;
  }
  return (l->v[l->n] = strdup(s)) ? (int)l->n++ : -1;
}

static void walk(const char *dir, struct list *files) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  for (struct dirent *e; (e = readdir(d));) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
      continue;
    char path[4096];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
        lstat(path, &st) < 0)
      continue;
    if (S_ISDIR(st.st_mode))
      walk(path, files);
    else if (S_ISREG(st.st_mode))
      push(files, path);
  }
  closedir(d);
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The task: arg is "keyword\0path\0"; the result is the number of matching lines. */
static int count_matches(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  const char *keyword = arg, *path = keyword + strlen(keyword) + 1;
  FILE *f = fopen(path, "r");
  if (!f)
    return mproc_result_fail(res, "cannot open %s", path);
  int64_t lines = 0;
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) >= 0)
    lines += strstr(line, keyword) != NULL;
  free(line);
  fclose(f);
  return mproc_result_set(res, &lines, sizeof lines);
}

/* A sample tree: 10 directories of 20 files; every 7th file has the keyword on 1..5 lines. */
static int make_sample(char *root) {
  if (!mkdtemp(root))
    return -1;
  int planted = 0;
  for (int i = 0; i < 200; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/dir%d", root, i / 20);
    mkdir(path, 0700);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/file%03d.txt", i);
    FILE *f = fopen(path, "w");
    if (!f)
      return -1;
    for (int l = 0; l < 100; l++)
      fprintf(f, "line %d of file %d: %s\n", l, i,
              i % 7 == 0 && l % 20 < i % 5 + 1 ? "a needle in a haystack" : "just hay");
    fclose(f);
    planted += i % 7 == 0;
  }
  printf("sample tree %s: 200 files, %d with the keyword\n", root, planted);
  return 0;
}

static void remove_tree(const char *dir, const struct list *files) {
  for (size_t i = 0; i < files->n; i++)
    unlink(files->v[i]);
  for (int i = 0; i < 10; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/dir%d", dir, i);
    rmdir(path);
  }
  rmdir(dir);
}

/* imap's generator: the next file's "keyword\0path\0", in a buffer reused from call to call
 * (imap copies the bytes before it asks again). */
struct feed {
  const char *keyword;
  const struct list *files;
  size_t next;
  char buf[8192];
};

static int next_file(void *ctx, const void **item, size_t *len) {
  struct feed *f = ctx;
  if (f->next == f->files->n)
    return 0;
  const char *path = f->files->v[f->next++];
  int n = snprintf(f->buf, sizeof f->buf, "%s%c%s", f->keyword, '\0', path);
  if (n < 0 || (size_t)n >= sizeof f->buf)
    return MPROC_EINVAL; /* stops the iteration with this error */
  *item = f->buf;
  *len = (size_t)n + 1;
  return 1;
}

int main(int argc, char **argv) {
  char sample[] = "/tmp/file_search-XXXXXX";
  const char *dir = argc > 2 ? argv[1] : sample, *keyword = argc > 2 ? argv[2] : "needle";
  if (argc == 2 || !*keyword) {
    fprintf(stderr, "usage: file_search [DIR KEYWORD]\n");
    return 2;
  }
  if (argc < 3 && make_sample(sample) < 0) {
    perror("file_search: sample");
    return 1;
  }
  struct stat st;
  if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "file_search: %s is not a directory\n", dir);
    return 1;
  }
  struct list files = {0};
  walk(dir, &files);
  qsort(files.v, files.n, sizeof *files.v, by_name);

  mproc_pool *pool;
  int rc = mproc_pool_new(&pool, NULL);
  if (rc < 0) {
    fprintf(stderr, "file_search: %s\n", mproc_strerror(rc));
    return 1;
  }
  struct feed feed = {.keyword = keyword, .files = &files};
  mproc_imap *it = NULL;
  rc = mproc_pool_imap_gen(pool, count_matches, next_file, &feed, NULL, &it);
  size_t matched = 0, failed = 0;
  int64_t lines = 0;
  while (rc == 0) {
    const void *res;
    rc = mproc_imap_next(it, &res, NULL, MPROC_FOREVER);
    if (rc == MPROC_EOF) {
      rc = 0;
      break;
    }
    const char *path = files.v[mproc_imap_index(it)];
    if (rc == 0) {
      int64_t n;
      memcpy(&n, res, sizeof n); /* result bytes carry no alignment promise */
      if (n > 0)
        printf("%s: %lld line%s\n", path, (long long)n, n == 1 ? "" : "s");
      matched += n > 0;
      lines += n;
    } else if (rc == MPROC_ETASK || rc == MPROC_ECRASHED || rc == MPROC_EEXPIRED) {
      /* This file's own task failed: the search goes on. */
      fprintf(stderr, "%s: %s (%s)\n", path, mproc_strerror(rc),
              mproc_imap_error(it) ? mproc_imap_error(it) : "");
      failed++;
      rc = 0;
    }
  }
  if (rc < 0)
    fprintf(stderr, "file_search: %s\n", mproc_strerror(rc));
  mproc_imap_free(it);
  mproc_pool_close(pool);
  mproc_pool_join(pool);
  mproc_pool_free(pool);
  printf("%zu of %zu files contain \"%s\" (%lld lines)", matched, files.n, keyword,
         (long long)lines);
  if (failed)
    printf("; %zu could not be read", failed);
  printf("\n");
  if (argc < 3)
    remove_tree(sample, &files);
  for (size_t i = 0; i < files.n; i++)
    free(files.v[i]);
  free(files.v);
  return rc < 0 ? 1 : 0;
}
