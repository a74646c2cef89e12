/* A job's command line, as GNU parallel builds it: the command words joined by spaces, each
 * replacement string replaced by the input, transformed, shell-quoted (so an input is one
 * word to /bin/sh whatever it holds), or the quoted inputs appended when the words hold no
 * replacement string. The transforms are parallel's: {.} drops the extension (/\.[^/.]*$/),
 * {/} drops the directory (/^.*\//), {//} is dirname(1)'s, {/.} both. */
#include "cli.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_NONE, T_NOEXT, T_BASE, T_DIR, T_BASE_NOEXT } transform;

static int grow(char **s, size_t *len, size_t *cap, size_t more) {
  if (*len + more + 1 <= *cap)
    return 0;
  size_t n = *cap ? *cap : 64;
  while (n < *len + more + 1) {
    if (n > SIZE_MAX / 2)
      return -1;
    n *= 2;
  }
  char *p = realloc(*s, n);
  if (!p)
    return -1;
  *s = p;
  *cap = n;
  return 0;
}

static int put(char **s, size_t *len, size_t *cap, const char *src, size_t n) {
  if (grow(s, len, cap, n))
    return -1;
  memcpy(*s + *len, src, n);
  *len += n;
  (*s)[*len] = 0;
  return 0;
}

static bool plain(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '+' || c == '/' || c == '-';
}

int cli_quote(char **s, size_t *len, size_t *cap, const char *src, size_t n) {
  bool all_plain = n > 0;
  for (size_t i = 0; i < n && all_plain; i++)
    all_plain = plain((unsigned char)src[i]);
  if (all_plain)
    return put(s, len, cap, src, n);
  if (put(s, len, cap, "'", 1))
    return -1;
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    if (src[i] == '\'') {
      if (put(s, len, cap, src + from, i - from) || put(s, len, cap, "'\"'\"'", 5))
        return -1;
      from = i + 1;
    }
  }
  return put(s, len, cap, src + from, n - from) || put(s, len, cap, "'", 1) ? -1 : 0;
}

/* The part [*b, *e) of a that the transform keeps (dirname may be a constant instead). */
static const char *apply(transform t, const char *a, size_t *n) {
  size_t len = strlen(a);
  const char *b = a;
  if (t == T_BASE || t == T_BASE_NOEXT) {
    const char *slash = strrchr(a, '/');
    if (slash)
      b = slash + 1;
    len = strlen(b);
  }
  if (t == T_NOEXT || t == T_BASE_NOEXT) {
    for (size_t i = len; i > 0; i--) {
      if (b[i - 1] == '/')
        break;
      if (b[i - 1] == '.') {
        len = i - 1;
        break;
      }
    }
  }
  if (t == T_DIR) { /* dirname(1) */
    while (len > 1 && a[len - 1] == '/')
      len--;
    while (len > 0 && a[len - 1] != '/')
      len--;
    if (len == 0) {
      *n = 1;
      return ".";
    }
    while (len > 1 && a[len - 1] == '/')
      len--;
  }
  *n = len;
  return b;
}

/* Recognizes a replacement string at p ('{'): its length (0: none), the group (0: all) and
 * the transform. */
static size_t token(const char *p, size_t *group, transform *t, bool *seq) {
  const char *q = p + 1;
  *group = 0;
  *seq = false;
  if (*q == '#' && q[1] == '}') {
    *seq = true;
    return 3;
  }
  if (*q >= '1' && *q <= '9') {
    size_t g = 0;
    while (*q >= '0' && *q <= '9' && g < 1000000)
      g = g * 10 + (size_t)(*q++ - '0');
    *group = g;
  }
  static const struct {
    const char *s;
    transform t;
  } forms[] = {{"}", T_NONE}, {".}", T_NOEXT}, {"/}", T_BASE}, {"//}", T_DIR},
               {"/.}", T_BASE_NOEXT}};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    size_t n = strlen(forms[i].s);
    if (strncmp(q, forms[i].s, n) == 0) {
      *t = forms[i].t;
      return (size_t)(q - p) + n;
    }
  }
  return 0;
}

bool cli_has_replacement(char *const *cmd, size_t ncmd) {
  for (size_t w = 0; w < ncmd; w++) {
    for (const char *p = strchr(cmd[w], '{'); p; p = strchr(p + 1, '{')) {
      size_t g;
      transform t;
      bool seq;
      if (token(p, &g, &t, &seq))
        return true;
    }
  }
  return false;
}

static int put_arg(char **s, size_t *len, size_t *cap, const char *a, transform t) {
  size_t n;
  const char *v = apply(t, a, &n);
  return cli_quote(s, len, cap, v, n);
}

static int replace_word(char **s, size_t *len, size_t *cap, const char *w, char *const *args,
                        size_t nargs, unsigned long seq) {
  const char *from = w;
  for (const char *p = strchr(w, '{'); p; p = strchr(p, '{')) {
    size_t g;
    transform t;
    bool is_seq;
    size_t n = token(p, &g, &t, &is_seq);
    if (!n) {
      p++;
      continue;
    }
    if (put(s, len, cap, from, (size_t)(p - from)))
      return -1;
    if (is_seq) {
      char num[24];
      int k = snprintf(num, sizeof num, "%lu", seq);
      if (put(s, len, cap, num, (size_t)k))
        return -1;
    } else if (g == 0) {
      for (size_t i = 0; i < nargs; i++)
        if ((i && put(s, len, cap, " ", 1)) || put_arg(s, len, cap, args[i], t))
          return -1;
    } else if (g <= nargs && put_arg(s, len, cap, args[g - 1], t)) {
      return -1; /* a group beyond the inputs' is empty, as in parallel */
    }
    p += n;
    from = p;
  }
  return put(s, len, cap, from, strlen(from));
}

char *cli_command(char *const *cmd, size_t ncmd, char *const *args, size_t nargs,
                  unsigned long seq) {
  char *s = NULL;
  size_t len = 0, cap = 0;
  if (grow(&s, &len, &cap, 0))
    return NULL;
  s[0] = 0;
  bool has = cli_has_replacement(cmd, ncmd);
  for (size_t w = 0; w < ncmd; w++) {
    if ((w && put(&s, &len, &cap, " ", 1)) ||
        replace_word(&s, &len, &cap, cmd[w], args, nargs, seq))
      goto fail;
  }
  if (!has) { /* no command: the inputs are the command, as they are (parallel ::: 'ls -l') */
    for (size_t i = 0; i < nargs; i++)
      if (((ncmd || i) && put(&s, &len, &cap, " ", 1)) ||
          (ncmd ? put_arg(&s, &len, &cap, args[i], T_NONE)
                : put(&s, &len, &cap, args[i], strlen(args[i]))))
        goto fail;
  }
  return s;
fail:
  free(s);
  return NULL;
}
