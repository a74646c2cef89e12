/*
 * log_stats: requests per HTTP status code and per hour in a large access log, in parallel.
 *
 * The file is split into byte ranges whose edges are moved forward to the next line start,
 * so every line belongs to exactly one range. Each range is one map element: a worker reads
 * it with pread and counts its lines into a `struct stats`; the parent adds the partial
 * results up. The log's path travels once per call as the map's shared args. A serial pass
 * over the whole file must give identical counts.
 *
 *   usage: log_stats [LOGFILE [PARTS]]
 *   With no arguments it generates a sample log of 300000 lines (and removes it after).
 *   Lines look like: 10.0.3.7 - - [22/Nov/2026:13:45:12 +0000] "GET /a HTTP/1.1" 200 5120
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct range {
  int64_t start, end; /* [start, end) in bytes; start is a line start */
};

struct stats {
  uint64_t status[600]; /* requests per status code 100..599 */
  uint64_t hour[24];
  uint64_t lines, malformed;
};

/* One line (without its '\n'); malformed when no "[dd/Mon/yyyy:HH" or no status follows. */
static void count_line(const char *s, size_t n, struct stats *st) {
  const char *end = s + n, *b = memchr(s, '[', n), *q;
  st->lines++;
  if (!b || end - b < 16 || b[12] != ':' || !(q = memchr(b, '"', (size_t)(end - b))) ||
      !(q = memchr(q + 1, '"', (size_t)(end - q - 1))) || end - q < 5) {
    st->malformed++;
    return;
  }
  int hour = (b[13] - '0') * 10 + (b[14] - '0');
  int code = (q[2] - '0') * 100 + (q[3] - '0') * 10 + (q[4] - '0');
  if (hour < 0 || hour > 23 || code < 100 || code > 599) {
    st->malformed++;
    return;
  }
  st->hour[hour]++;
  st->status[code]++;
}

/* The map function: in is a range, out its stats, args the log's path. */
static int parse_range(const void *in, void *out, const void *args) {
  const struct range *r = in;
  struct stats *st = out;
  memset(st, 0, sizeof *st);
  size_t len = (size_t)(r->end - r->start);
  char *buf = malloc(len + 1);
  int fd = open(args, O_RDONLY);
  int ok = buf && fd >= 0;
  for (size_t got = 0; ok && got < len;) {
    ssize_t k = pread(fd, buf + got, len - got, r->start + (off_t)got);
    ok = k > 0;
    got += ok ? (size_t)k : 0;
  }
  for (size_t i = 0; ok && i < len;) {
    const char *nl = memchr(buf + i, '\n', len - i);
    size_t n = nl ? (size_t)(nl - (buf + i)) : len - i;
    count_line(buf + i, n, st);
    i += n + 1;
  }
  if (fd >= 0)
    close(fd);
  free(buf);
  return ok ? 0 : 1;
}

/* Part edges: the nominal offsets k*size/parts, each moved just past the next '\n'. */
static void split(const char *path, int64_t size, struct range *r, int parts) {
  FILE *f = fopen(path, "r");
  int64_t prev = 0;
  for (int k = 0; k < parts; k++) {
    int64_t edge = k + 1 == parts ? size : size * (k + 1) / parts;
    if (edge < prev)
      edge = prev;
    if (f && edge > 0 && edge < size && fseeko(f, (off_t)edge - 1, SEEK_SET) == 0) {
      int c;
      while ((c = getc(f)) != EOF && c != '\n')
        edge++;
      edge = c == EOF ? size : edge;
    }
    r[k] = (struct range){prev, edge};
    prev = edge;
  }
  if (f)
    fclose(f);
}

static void add(struct stats *to, const struct stats *from) {
  for (int i = 0; i < 600; i++)
    to->status[i] += from->status[i];
  for (int i = 0; i < 24; i++)
    to->hour[i] += from->hour[i];
  to->lines += from->lines;
  to->malformed += from->malformed;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* A deterministic sample: busier by day, mostly 200s, a malformed line now and then. */
static int make_sample(char *path, long lines) {
  static const int weight[24] = {2, 1, 1, 1, 1, 2, 4, 7, 9, 10, 10, 11,
                                 12, 11, 10, 10, 9, 9, 8, 7, 6, 5, 4, 3};
  static const char *const pages[] = {"/", "/index.html", "/about", "/api/items", "/img/a.png"};
  int fd = mkstemp(path);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f)
    return -1;
  uint64_t seed = 42;
  long written = 0;
  for (int h = 0; h < 24; h++) {
    long n = h == 23 ? lines - written : lines * weight[h] / 153;
    for (long i = 0; i < n; i++, written++) {
      uint64_t r = splitmix64(&seed);
      int pct = (int)(r % 1000), code = pct < 800 ? 200 : pct < 870 ? 304 : pct < 950 ? 404
                                     : pct < 970 ? 301 : 500;
      if (r % 10007 == 0) {
        fprintf(f, "garbage line %ld\n", written);
        continue;
      }
      int sec = (int)(i * 3600 / n);
      fprintf(f, "10.0.%d.%d - - [22/Nov/2026:%02d:%02d:%02d +0000] \"GET %s HTTP/1.1\" %d %d\n",
              (int)(r >> 8 & 255), (int)(r >> 16 & 255), h, sec / 60, sec % 60,
              pages[(r >> 24) % 5], code, (int)(r >> 32 & 0xffff));
    }
  }
  return fclose(f);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void report(const struct stats *st) {
  printf("status  requests\n");
  for (int c = 100; c < 600; c++)
    if (st->status[c])
      printf("%d     %llu\n", c, (unsigned long long)st->status[c]);
  printf("hour    requests\n");
  uint64_t top = 1;
  for (int h = 0; h < 24; h++)
    top = st->hour[h] > top ? st->hour[h] : top;
  for (int h = 0; h < 24; h++)
    printf("%02d      %-8llu %.*s\n", h, (unsigned long long)st->hour[h],
           (int)(40 * st->hour[h] / top), "########################################");
  printf("lines %llu, malformed %llu\n", (unsigned long long)st->lines,
         (unsigned long long)st->malformed);
}

int main(int argc, char **argv) {
  char sample[] = "/tmp/log_stats-XXXXXX";
  const char *path = argc > 1 ? argv[1] : sample;
  if (argc < 2 && make_sample(sample, 300000) < 0) {
    perror("log_stats: sample");
    return 1;
  }
  struct stat sb;
  if (stat(path, &sb) < 0) {
    perror(path);
    return 1;
  }
  int64_t size = sb.st_size;
  int parts = argc > 2 ? atoi(argv[2]) : 4 * mproc_cpu_count();
  if (argc <= 2 && size / (16 << 20) > parts) /* ranges of at most ~16 MiB */
    parts = (int)(size / (16 << 20));
  if (parts < 1 || parts > 100000) {
    fprintf(stderr, "usage: log_stats [LOGFILE [PARTS 1..100000]]\n");
    return 2;
  }
  struct range *ranges = malloc((size_t)parts * sizeof *ranges);
  struct stats *partial = malloc((size_t)parts * sizeof *partial);
  struct stats *merged = calloc(1, sizeof *merged), *serial = malloc(sizeof *serial);
  if (!ranges || !partial || !merged || !serial)
    return 1;
  split(path, size, ranges, parts);

  double t0 = now(); /* the serial pass: the same ranges, one after the other, here */
  memset(serial, 0, sizeof *serial);
  for (int k = 0; k < parts; k++) {
    parse_range(&ranges[k], &partial[k], path);
    add(serial, &partial[k]);
  }
  double t_serial = now() - t0;

  mproc_pool *pool;
  int rc = mproc_pool_new(&pool, NULL);
  if (rc < 0) {
    fprintf(stderr, "log_stats: %s\n", mproc_strerror(rc));
    return 1;
  }
  /* The path is the call's shared args: copied to the workers once, passed to every call. */
  mproc_map_opts opts = {.chunksize = 1, .args = path, .args_len = strlen(path) + 1};
  t0 = now();
  rc = mproc_pool_map(pool, parse_range, ranges, (size_t)parts, sizeof *ranges, partial,
                      sizeof *partial, &opts);
  for (int k = 0; rc == 0 && k < parts; k++)
    add(merged, &partial[k]);
  double t_pool = now() - t0;
  mproc_pool_close(pool);
  mproc_pool_join(pool);
  mproc_pool_free(pool);
  if (rc < 0) {
    fprintf(stderr, "log_stats: map: %s\n", mproc_strerror(rc));
    return 1;
  }

  printf("%s: %.1f MB in %d parts\n", path, size / 1e6, parts);
  report(merged);
  int same = memcmp(merged, serial, sizeof *merged) == 0;
  printf("serial %.3f s, mproc %.3f s on %d workers (speedup %.2fx); serial pass %s\n",
         t_serial, t_pool, mproc_cpu_count(), t_serial / t_pool,
         same ? "identical" : "DIFFERENT");
  if (argc < 2)
    unlink(sample);
  free(ranges);
  free(partial);
  free(merged);
  free(serial);
  return same ? 0 : 1;
}
