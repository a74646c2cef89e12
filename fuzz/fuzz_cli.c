/* libFuzzer target: the mproc tool's command-line parsing (cli_parse) and command building
 * ({} replacement and shell quoting, cli_command) facing any words. The input is split at
 * NUL bytes into argv; whatever parses, the command built with the words themselves as
 * inputs is a whole string (and, without replacement strings, exactly the words and the
 * quoted inputs), and every quoted word comes back as itself by /bin/sh's single-quote rules
 * (checked here by undoing the quoting), with no leak (ASan's leak check). */
#include "../tools/cli.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORDS 64

/* Undoes cli_quote's quoting of one word: plain, or '...' with '"'"' for a quote. */
static int unquote(const char *q, size_t n, char *out, size_t *olen) {
  size_t o = 0, i = 0;
  if (n == 0 || q[0] != '\'') {
    memcpy(out, q, n);
    *olen = n;
    return 0;
  }
  while (i < n) {
    if (q[i] != '\'')
      return -1;
    i++;
    while (i < n && q[i] != '\'')
      out[o++] = q[i++];
    if (i >= n)
      return -1;
    i++; /* the closing quote */
    if (i < n) { /* "'" then a new single-quoted run */
      if (n - i < 4 || memcmp(q + i, "\"'\"", 3) != 0)
        return -1;
      out[o++] = '\'';
      i += 3;
    }
  }
  *olen = o;
  return 0;
}

/* Appends a plain string (the test's own growing buffer, cli_quote's layout). */
static void cli_quote_raw_append(char **s, size_t *len, size_t *cap, const char *src) {
  size_t n = strlen(src);
  if (*len + n + 1 > *cap) {
    *cap = (*len + n + 1) * 2;
    if (!(*s = realloc(*s, *cap)))
      abort();
  }
  memcpy(*s + *len, src, n + 1);
  *len += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  char *buf = malloc(size + 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  buf[size] = 0;
  char *argv[MAX_WORDS + 2];
  int argc = 0;
  argv[argc++] = "mproc";
  for (size_t i = 0; i <= size && argc < MAX_WORDS + 1;) {
    argv[argc++] = buf + i;
    i += strlen(buf + i) + 1;
  }
  argv[argc] = NULL;

  FILE *null = fopen("/dev/null", "w");
  cli_opts o;
  int rc = cli_parse(&o, argc, argv, null ? null : stderr);
  if (rc == 0 && o.ncmd > 0) {
    char *const *args = argv + 1;
    size_t nargs = (size_t)argc - 1;
    char *cmd = cli_command(o.cmd, o.ncmd, args, nargs, 7);
    if (cmd && !cli_has_replacement(o.cmd, o.ncmd)) {
      /* no replacement string: the words as they are, then each input quoted */
      char *want = NULL;
      size_t len = 0, cap = 0;
      for (size_t w = 0; w < o.ncmd; w++) {
        if (w)
          cli_quote_raw_append(&want, &len, &cap, " ");
        cli_quote_raw_append(&want, &len, &cap, o.cmd[w]);
      }
      for (size_t i = 0; i < nargs; i++) {
        cli_quote_raw_append(&want, &len, &cap, " ");
        if (cli_quote(&want, &len, &cap, args[i], strlen(args[i])))
          abort();
      }
      if (!want || strcmp(want, cmd) != 0)
        abort();
      free(want);
    }
    free(cmd);
  }
  cli_opts_free(&o);
  if (null)
    fclose(null);

  /* Quoting: every word quotes to a string that unquotes to the word. */
  for (int k = 1; k < argc; k++) {
    char *q = NULL;
    size_t len = 0, cap = 0;
    size_t n = strlen(argv[k]);
    if (cli_quote(&q, &len, &cap, argv[k], n) == 0) {
      char *back = malloc(len + 1);
      size_t blen = 0;
      if (!back || unquote(q, len, back, &blen) != 0 || blen != n || memcmp(back, argv[k], n))
        abort();
      free(back);
    }
    free(q);
  }
  free(buf);
  return 0;
}
