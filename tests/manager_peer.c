/* An unrelated program for tests/test_manager.c: connects to a Manager by address and key
 * (hex), adds 1 to the dict "counts"'s key "k" n times, stores "peer" -> its pid as text,
 * appends to list "log", and exits 0, or 10 + the failing step.
 * Usage: manager_peer ADDRESS KEYHEX N */
#include "mproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 4)
    return 2;
  unsigned char key[256];
  size_t klen = strlen(argv[2]) / 2;
  for (size_t i = 0; i < klen && i < sizeof key; i++)
    sscanf(argv[2] + 2 * i, "%2hhx", &key[i]);
  long n = atol(argv[3]);
  mproc_manager *m;
  if (mproc_manager_connect(&m, argv[1], key, klen, 10))
    return 10;
  mproc_dict *d;
  mproc_list *l;
  if (mproc_manager_dict(m, "counts", &d) || mproc_manager_list(m, "log", &l))
    return 11;
  for (long i = 0; i < n; i++)
    if (mproc_dict_add_i64(d, "k", 1, 1, NULL))
      return 12;
  char pid[32];
  int len = snprintf(pid, sizeof pid, "%d", (int)getpid());
  if (mproc_dict_set(d, "peer", 4, pid, (size_t)len) || mproc_list_append(l, pid, (size_t)len))
    return 13;
  mproc_dict_free(d);
  mproc_list_free(l);
  mproc_manager_free(m);
  return 0;
}
