/* A full /dev/shm for real (issue 18): a child, in a mount namespace of its own, mounts a
 * small tmpfs over /dev/shm and makes named shared memory there. A segment that does not
 * fit must fail at mproc_shm_create with -ENOSPC, leaving no name behind, rather than be
 * made sparse and kill with SIGBUS whoever first writes to a page past the room; one that
 * fits works whole. Skipped where the machine cannot (not root, no mount namespaces). */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#define ROOM (256 << 10) /* the tmpfs's size */
#define SKIP 77

/* Entries in the (private) /dev/shm. */
static int entries(void) {
  DIR *d = opendir("/dev/shm");
  if (!d)
    return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* In the child: 0, SKIP, or the number of the check that failed. */
static int full_shm_child(void) {
  if (unshare(CLONE_NEWNS) != 0)
    return SKIP;
  /* Private first: the tmpfs must not appear in the machine's own /dev/shm. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
      mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=256k") != 0)
    return SKIP;
  mproc_shm *s = NULL, *t = NULL;
  int fds = th_fd_count();
  /* Larger than the whole room: refused at once. */
  if (mproc_shm_create(&s, NULL, 4 * ROOM) != -ENOSPC || s)
    return 1;
  if (entries() != 0 || th_fd_count() != fds)
    return 2;
  /* Two thirds of the room: it fits, every byte of it writable. */
  if (mproc_shm_create(&s, NULL, ROOM / 3 * 2) != 0)
    return 3;
  memset(mproc_shm_buf(s), 0x5a, mproc_shm_size(s));
  /* Another two thirds: only a third is left, so -ENOSPC, not SIGBUS at the memset below. */
  int rc = mproc_shm_create(&t, "mproc_test_full", ROOM / 3 * 2);
  if (rc == 0)
    memset(mproc_shm_buf(t), 0x5a, mproc_shm_size(t));
  if (rc != -ENOSPC || t || entries() != 1)
    return 4;
  /* The name is free again: the same create fits once the first segment is gone. */
  if (mproc_shm_unlink(s) != 0)
    return 5;
  mproc_shm_free(s);
  if (mproc_shm_create(&t, "mproc_test_full", ROOM / 3 * 2) != 0)
    return 6;
  memset(mproc_shm_buf(t), 0xa5, mproc_shm_size(t));
  if (((unsigned char *)mproc_shm_buf(t))[mproc_shm_size(t) - 1] != 0xa5)
    return 7;
  if (mproc_shm_unlink(t) != 0)
    return 8;
  mproc_shm_free(t);
  return entries() == 0 && th_fd_count() == fds ? 0 : 9;
}

Test(full_shm, named_segments, .timeout = 60) {
  th_scope sc = th_begin();
  pid_t c = th_fork_tied();
  cr_assert_geq(c, 0);
  if (c == 0)
    _exit(full_shm_child());
  int code = th_exitcode(c);
  if (code == SKIP)
    cr_skip_test("no private mount namespace here (needs root and unshare(CLONE_NEWNS))");
  cr_expect_eq(code, 0, "full /dev/shm: check %d failed (negative: killed by that signal)",
               code);
  th_end(sc);
}
