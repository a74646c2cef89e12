/*
 * image_batch: blur every PNG in a folder (Gaussian, radius 2) into an output folder, one
 * image per task, on a Pool, with a live progress bar.
 *
 * Each image is one task of an imap_unordered iteration ("in-path\0out-path\0" in, a
 * checksum out): results come back as they complete, and imap's progress callback draws the
 * bar. A task that fails — an unreadable PNG, or a worker that crashes — fails alone at its
 * position, reported by file name, and every other image completes.
 *
 * A file named poison*.png makes its task call abort() ON PURPOSE: it stands for a decoder
 * bug on a bad input. Under mproc that kills one worker and fails one task with
 * MPROC_ECRASHED; the pool replaces the worker and goes on. (A serial run, or a Python
 * pool's lost worker, cannot survive that; --serial skips such files.)
 *
 *   usage: image_batch [options] [IN_DIR OUT_DIR]
 *     --serial       blur in this process, no pool (poison files are skipped)
 *     --compare      blur serially, then on the pool; print both times and the speedup
 *     --count N      with no dirs: the generated sample has N images (default 12)
 *     --size S       ... of S x S pixels (default 256)
 *     --poison       ... and a poison.png
 *     --keep         keep the generated sample folder (it is removed by default)
 *     --progress     show progress even when stderr is not a terminal (a line per tenth)
 *     --no-progress  no progress bar (default: a bar when stderr is a terminal)
 *   Exit status: 0 when every image was blurred, 1 when any failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <mproc.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct outcome {
  uint64_t checksum; /* FNV-1a of the blurred pixels: equal runs give equal checksums */
  uint32_t width, height;
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int is_poison(const char *name) {
  const char *base = strrchr(name, '/');
  return strncmp(base ? base + 1 : name, "poison", 6) == 0;
}

/* ---- the work: a 5x5 Gaussian (binomial 1 4 6 4 1, sigma ~1), separable, edges clamped ---- */

static void blur_pass(const uint8_t *src, uint8_t *dst, uint32_t w, uint32_t h, int dx, int dy) {
  static const int k[5] = {1, 4, 6, 4, 1};
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++)
      for (int c = 0; c < 4; c++) {
        int sum = 0;
        for (int t = -2; t <= 2; t++) {
          long sx = (long)x + t * dx, sy = (long)y + t * dy;
          sx = sx < 0 ? 0 : sx >= (long)w ? (long)w - 1 : sx;
          sy = sy < 0 ? 0 : sy >= (long)h ? (long)h - 1 : sy;
          sum += k[t + 2] * src[((size_t)sy * w + (size_t)sx) * 4 + (size_t)c];
        }
        dst[((size_t)y * w + x) * 4 + (size_t)c] = (uint8_t)((sum + 8) >> 4);
      }
}

/* Reads in, blurs, writes out. 0, or -1 with a message in err. */
static int blur_file(const char *in, const char *out, struct outcome *o, char *err, size_t cap) {
  png_image img = {.version = PNG_IMAGE_VERSION};
  uint8_t *px = NULL, *tmp = NULL;
  int ok = png_image_begin_read_from_file(&img, in);
  if (ok) {
    img.format = PNG_FORMAT_RGBA;
    px = malloc(PNG_IMAGE_SIZE(img));
    tmp = malloc(PNG_IMAGE_SIZE(img));
    ok = px && tmp && png_image_finish_read(&img, NULL, px, 0, NULL);
  }
  if (ok) {
    blur_pass(px, tmp, img.width, img.height, 1, 0);
    blur_pass(tmp, px, img.width, img.height, 0, 1);
    ok = png_image_write_to_file(&img, out, 0, px, 0, NULL);
  }
  if (ok) {
    uint64_t hsh = 0xcbf29ce484222325u;
    for (size_t i = 0; i < PNG_IMAGE_SIZE(img); i++)
      hsh = (hsh ^ px[i]) * 0x100000001b3u;
    *o = (struct outcome){hsh, img.width, img.height};
  } else {
    snprintf(err, cap, "%s", img.warning_or_error ? img.message : "out of memory");
  }
  png_image_free(&img);
  free(px);
  free(tmp);
  return ok ? 0 : -1;
}

/* The pool task: arg is "in\0out\0". */
static int blur_task(const void *arg, size_t len, mproc_result *res) {
  const char *in = arg, *out = len ? memchr(in, 0, len) : NULL;
  if (!out || out + 1 >= in + len || in[len - 1])
    return mproc_result_fail(res, "not \"in-path\\0out-path\\0\" (a path too long?)");
  out++;
  if (is_poison(in))
    abort(); /* DELIBERATE: the demo's poisoned input crashes its worker (see the top) */
  struct outcome o;
  char err[256];
  if (blur_file(in, out, &o, err, sizeof err) < 0)
    return mproc_result_fail(res, "%s", err);
  return mproc_result_set(res, &o, sizeof o);
}

/* ---- the folder ---- */

struct batch {
  const char *in_dir, *out_dir;
  char **names; /* sorted *.png file names */
  size_t n;
  enum { NO_BAR, TTY_BAR, LOG_BAR } progress;
  const char *label; /* on the progress bar */
};

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_pngs(struct batch *b) {
  DIR *d = opendir(b->in_dir);
  if (!d)
    return -1;
  size_t cap = 0;
  for (struct dirent *e; (e = readdir(d));) {
    size_t l = strlen(e->d_name);
    if (l < 5 || strcmp(e->d_name + l - 4, ".png") != 0)
      continue;
    if (b->n == cap) {
      char **v = realloc(b->names, (cap = cap ? 2 * cap : 64) * sizeof *v);
      if (!v)
        break;
      b->names = v;
    }
    if (!(b->names[b->n] = strdup(e->d_name)))
      break;
    b->n++;
  }
  closedir(d);
  qsort(b->names, b->n, sizeof *b->names, by_name);
  return 0;
}

/* "in_dir/name\0out_dir/name\0" in buf (cap >= 2); its length, or 0 when too long. */
static size_t job_arg(const struct batch *b, size_t i, char *buf, size_t cap) {
  int k = snprintf(buf, cap / 2, "%s/%s", b->in_dir, b->names[i]);
  int m = snprintf(buf + k + 1, cap / 2, "%s/%s", b->out_dir, b->names[i]);
  if (k < 0 || m < 0 || (size_t)k >= cap / 2 || (size_t)m >= cap / 2)
    return 0;
  return (size_t)k + 1 + (size_t)m + 1;
}

/* On a terminal the bar is redrawn in place; into a file or pipe (LOG_BAR) a line is
 * written at each tenth instead, so that a log stays readable. */
static void draw_bar(const struct batch *b, size_t done, double t0) {
  int fill = b->n ? (int)(40 * done / b->n) : 40;
  int same_tenth = done && fill / 4 == (int)(40 * (done - 1) / b->n) / 4;
  if (!b->progress || (b->progress == LOG_BAR && same_tenth))
    return;
  fprintf(stderr, "%s%-7s[%.*s%*s] %zu/%zu  %.1f s%s", b->progress == TTY_BAR ? "\r" : "",
          b->label, fill, "########################################", 40 - fill, "", done, b->n,
          now() - t0, b->progress == TTY_BAR ? "" : "\n");
  fflush(stderr);
}

static void clear_bar(const struct batch *b) {
  if (b->progress == TTY_BAR)
    fprintf(stderr, "\r%*s\r", 70, "");
}

static const char *code_name(int rc) {
  switch (rc) {
  case MPROC_ETASK: return "MPROC_ETASK";
  case MPROC_ECRASHED: return "MPROC_ECRASHED";
  case MPROC_EEXPIRED: return "MPROC_EEXPIRED";
  case MPROC_ECANCELLED: return "MPROC_ECANCELLED";
  default: return mproc_strerror(rc);
  }
}

struct bar_ctx {
  const struct batch *b;
  double t0;
};

/* imap's progress callback: it runs in this thread, inside mproc_imap_next. */
static void on_progress(size_t done, size_t total, void *ctx) {
  (void)total;
  const struct bar_ctx *c = ctx;
  draw_bar(c->b, done, c->t0);
}

/* Blurs every image on a pool with imap_unordered: results come back as they complete, and
 * a failed image (its task failed, or its worker crashed) is reported by name while the
 * others go on. Returns the number that failed. */
static size_t run_pool(const struct batch *b, uint64_t *sum, double *secs) {
  const void **items = calloc(b->n + 1, sizeof *items);
  size_t *lens = calloc(b->n + 1, sizeof *lens), failed = 0;
  for (size_t i = 0; items && lens && i < b->n; i++) {
    char arg[8192], *copy;
    lens[i] = job_arg(b, i, arg, sizeof arg); /* a path too long: 0 bytes, its task fails */
    if (!(copy = malloc(lens[i] + 1)))
      break;
    items[i] = memcpy(copy, arg, lens[i]);
  }
  mproc_pool *pool = NULL;
  mproc_imap *it = NULL;
  struct bar_ctx bar = {b, now()};
  mproc_imap_opts opts = {.unordered = true, .progress = on_progress, .progress_ctx = &bar};
  int rc = items && lens && (!b->n || items[b->n - 1]) ? 0 : MPROC_ENOMEM;
  if (rc == 0)
    rc = mproc_pool_new(&pool, NULL);
  if (rc == 0)
    rc = mproc_pool_imap(pool, blur_task, items, lens, b->n, &opts, &it);
  if (rc < 0) {
    fprintf(stderr, "image_batch: %s\n", mproc_strerror(rc));
    failed = b->n;
  }
  draw_bar(b, 0, bar.t0);
  for (size_t done = 0; it;) {
    const void *res;
    size_t len;
    struct outcome o;
    rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER);
    if (rc == MPROC_EOF || done++ == b->n)
      break; /* the end; or an error past the last item, which no image owns */
    if (rc == 0 && len == sizeof o) {
      memcpy(&o, res, sizeof o); /* result bytes carry no alignment promise */
      *sum ^= o.checksum;
      continue;
    }
    clear_bar(b); /* the failed image, by name; then the bar again */
    const char *why = rc ? mproc_imap_error(it) : "a result of the wrong size";
    printf("  %s: %s: %s\n", b->names[mproc_imap_index(it)], rc ? code_name(rc) : "error",
           why ? why : "");
    if (b->progress == TTY_BAR)
      draw_bar(b, done, bar.t0);
    failed++;
  }
  *secs = now() - bar.t0;
  if (b->progress == TTY_BAR)
    fprintf(stderr, "\n");
  mproc_imap_free(it);
  if (pool) {
    mproc_pool_close(pool);
    mproc_pool_join(pool);
    mproc_pool_free(pool);
  }
  for (size_t i = 0; items && i < b->n; i++)
    free((void *)items[i]);
  free(items);
  free(lens);
  return failed;
}

static size_t run_serial(const struct batch *b, uint64_t *sum, double *secs, size_t *skipped) {
  size_t failed = 0;
  double t0 = now();
  draw_bar(b, 0, t0);
  for (size_t i = 0; i < b->n; i++) {
    char arg[8192], err[256];
    struct outcome o;
    if (!job_arg(b, i, arg, sizeof arg)) {
      clear_bar(b);
      printf("  %s: path too long\n", b->names[i]);
      failed++;
    } else if (is_poison(arg)) { /* its abort() would end this whole process */
      clear_bar(b);
      printf("  %s: skipped in the serial run (it would kill this process)\n", b->names[i]);
      ++*skipped;
    } else if (blur_file(arg, arg + strlen(arg) + 1, &o, err, sizeof err) < 0) {
      clear_bar(b);
      printf("  %s: %s\n", b->names[i], err);
      failed++;
    } else {
      *sum ^= o.checksum;
    }
    fflush(stdout);
    draw_bar(b, i + 1, t0);
  }
  *secs = now() - t0;
  if (b->progress == TTY_BAR)
    fprintf(stderr, "\n");
  return failed;
}

/* ---- the generated sample: deterministic, so its checksum is known ---- */

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* A map function: element k is the image number, args the size and folder; out unused. */
struct gen_args {
  uint32_t size;
  char dir[4096];
};

static int generate_one(const void *in, void *out, const void *args) {
  (void)out;
  const struct gen_args *g = args;
  int k = *(const int *)in;
  uint32_t s = g->size;
  uint8_t *px = malloc((size_t)s * s * 4);
  if (!px)
    return 1;
  uint64_t seed = (uint64_t)k;
  for (uint32_t y = 0; y < s; y++)
    for (uint32_t x = 0; x < s; x++) {
      uint8_t *p = px + ((size_t)y * s + x) * 4;
      long dx = (long)x - s / 2, dy = (long)y - s / 2;
      int ring = (int)((dx * dx + dy * dy) / (s / 16 + 1)) % 64;
      int noise = (int)(splitmix64(&seed) & 3);
      p[0] = (uint8_t)(x * 255 / s + (uint32_t)k * 13);
      p[1] = (uint8_t)(y * 255 / s + (uint32_t)noise);
      p[2] = (uint8_t)(ring * 4);
      p[3] = 255;
    }
  char path[4200];
  if (k < 0)
    snprintf(path, sizeof path, "%s/poison.png", g->dir);
  else
    snprintf(path, sizeof path, "%s/tile%04d.png", g->dir, k); /* after poison.png */
  png_image img = {.version = PNG_IMAGE_VERSION, .width = s, .height = s,
                   .format = PNG_FORMAT_RGBA, .flags = PNG_IMAGE_FLAG_FAST}; /* inputs only */
  int ok = png_image_write_to_file(&img, path, 0, px, 0, NULL);
  png_image_free(&img);
  free(px);
  return ok ? 0 : 1;
}

/* count images (and poison.png, as image -1) into dir, generated on a pool. */
static int generate(const char *dir, int count, uint32_t size, int poison) {
  struct gen_args g = {.size = size};
  snprintf(g.dir, sizeof g.dir, "%s", dir);
  int *ks = malloc(((size_t)count + 1) * sizeof *ks), n = 0;
  if (!ks)
    return -1;
  for (int k = 0; k < count; k++)
    ks[n++] = k;
  if (poison)
    ks[n++] = -1;
  mproc_pool *pool;
  int rc = mproc_pool_new(&pool, NULL);
  if (rc == 0) {
    rc = mproc_pool_map(pool, generate_one, ks, (size_t)n, sizeof *ks, NULL, 0,
                        &(mproc_map_opts){.chunksize = 1, .args = &g, .args_len = sizeof g});
    mproc_pool_close(pool);
    mproc_pool_join(pool);
    mproc_pool_free(pool);
  }
  free(ks);
  return rc;
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  for (struct dirent *e; d && (e = readdir(d));) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      unlink(path);
  }
  if (d)
    closedir(d);
  rmdir(dir);
}

int main(int argc, char **argv) {
  int serial = 0, compare = 0, count = 12, poison = 0, keep = 0;
  long size = 256;
  struct batch b = {.progress = isatty(2) ? TTY_BAR : NO_BAR};
  setvbuf(stdout, NULL, _IOLBF, 0); /* lines in order with the bar on stderr, even in a pipe */
  const char *dirs[2] = {NULL, NULL};
  int ndirs = 0, bad = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--serial")) serial = 1;
    else if (!strcmp(a, "--compare")) compare = 1;
    else if (!strcmp(a, "--poison")) poison = 1;
    else if (!strcmp(a, "--keep")) keep = 1;
    else if (!strcmp(a, "--progress")) b.progress = isatty(2) ? TTY_BAR : LOG_BAR;
    else if (!strcmp(a, "--no-progress")) b.progress = NO_BAR;
    else if (!strcmp(a, "--count") && i + 1 < argc) count = atoi(argv[++i]);
    else if (!strcmp(a, "--size") && i + 1 < argc) size = atol(argv[++i]);
    else if (a[0] != '-' && ndirs < 2) dirs[ndirs++] = a;
    else bad = 1;
  }
  if (bad || ndirs == 1 || count < 0 || count > 100000 || size < 1 || size > 16384) {
    fprintf(stderr, "usage: image_batch [--serial|--compare] [--count N] [--size S] [--poison]"
                    " [--keep] [--progress|--no-progress] [IN_DIR OUT_DIR]\n");
    return 2;
  }

  char root[] = "/tmp/image_batch-XXXXXX", in[64], out[64];
  if (ndirs == 0) {
    if (!mkdtemp(root)) {
      perror("mkdtemp");
      return 1;
    }
    snprintf(in, sizeof in, "%s/in", root);
    snprintf(out, sizeof out, "%s/out", root);
    double t0 = now();
    int rc = mkdir(in, 0700) < 0 ? -errno : generate(in, count, (uint32_t)size, poison);
    if (rc < 0) {
      fprintf(stderr, "image_batch: generating the sample: %s\n", mproc_strerror(rc));
      return 1;
    }
    printf("generated %d images of %ldx%ld%s in %s (%.1f s)\n", count, size, size,
           poison ? " and poison.png" : "", in, now() - t0);
    dirs[0] = in, dirs[1] = out;
  }
  b.in_dir = dirs[0], b.out_dir = dirs[1];
  if (list_pngs(&b) < 0) {
    perror(b.in_dir);
    return 1;
  }
  if (mkdir(b.out_dir, 0700) < 0 && errno != EEXIST) {
    perror(b.out_dir);
    return 1;
  }
  printf("%zu PNG files in %s -> %s\n", b.n, b.in_dir, b.out_dir);
  fflush(stdout);

  uint64_t sum_serial = 0, sum_pool = 0;
  double t_serial = 0, t_pool = 0;
  size_t skipped = 0, failed = 0;
  if (serial || compare) {
    b.label = "serial";
    failed = run_serial(&b, &sum_serial, &t_serial, &skipped);
    printf("serial: %zu of %zu blurred in %.2f s\n", b.n - failed - skipped, b.n, t_serial);
  }
  if (!serial) {
    b.label = "mproc";
    failed = run_pool(&b, &sum_pool, &t_pool);
    printf("mproc:  %zu of %zu blurred in %.2f s on %d workers", b.n - failed, b.n, t_pool,
           mproc_cpu_count());
    if (failed)
      printf("; %zu failed, every other image completed", failed);
    printf("\n");
  }
  printf("checksum %016llx\n", (unsigned long long)(serial ? sum_serial : sum_pool));
  if (compare)
    printf("speedup %.2fx; the results %s the serial run's\n", t_serial / t_pool,
           sum_serial == sum_pool ? "equal" : "DIFFER FROM");
  if (ndirs == 0 && !keep) {
    remove_dir(out);
    remove_dir(in);
    rmdir(root);
  } else if (ndirs == 0) {
    printf("sample kept in %s\n", root);
  }
  for (size_t i = 0; i < b.n; i++)
    free(b.names[i]);
  free(b.names);
  return failed || (compare && sum_serial != sum_pool) ? 1 : 0;
}
