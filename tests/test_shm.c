/* The shm layer: named segments (SharedMemory) and shared arrays (Value/Array). */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"
#include "core/arena.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A segment name unique to this test process, under the "mproc" prefix the leak check
 * watches. */
static const char *tname(const char *tag) {
  static char buf[128];
  snprintf(buf, sizeof buf, "mproc-test-%d-%s", (int)getpid(), tag);
  return buf;
}

Test(shm, create_write_attach_read) {
  th_scope sc = th_begin();
  mproc_shm *a, *b;
  cr_assert_eq(mproc_shm_create(&a, NULL, 10000), 0);
  const char *name = mproc_shm_name(a);
  cr_assert_eq(strncmp(name, "mproc", 5), 0, "generated name %s", name);
  cr_assert_null(strchr(name, '/'));
  cr_assert_eq(mproc_shm_size(a), 10000);
  memset(mproc_shm_buf(a), 0x5a, 10000);
  cr_assert_eq(mproc_shm_attach(&b, name), 0);
  cr_assert_geq(mproc_shm_size(b), 10000);
  cr_assert_eq(((unsigned char *)mproc_shm_buf(b))[9999], 0x5a);
  ((char *)mproc_shm_buf(b))[0] = 7;
  cr_assert_eq(((char *)mproc_shm_buf(a))[0], 7);
  cr_assert_str_eq(mproc_shm_name(b), name);
  cr_assert_eq(mproc_shm_unlink(a), 0);
  mproc_shm_free(b);
  mproc_shm_free(a);
  th_end(sc);
}

Test(shm, generated_names_differ) {
  th_scope sc = th_begin();
  mproc_shm *a, *b;
  cr_assert_eq(mproc_shm_create(&a, NULL, 1), 0);
  cr_assert_eq(mproc_shm_create(&b, NULL, 1), 0);
  cr_assert_str_neq(mproc_shm_name(a), mproc_shm_name(b));
  cr_assert_geq(strlen(mproc_shm_name(a)), 30); /* pid plus 128 random bits */
  cr_assert_eq(mproc_shm_unlink(a), 0);
  cr_assert_eq(mproc_shm_unlink(b), 0);
  mproc_shm_free(a);
  mproc_shm_free(b);
  th_end(sc);
}

Test(shm, user_name_with_and_without_slash) {
  th_scope sc = th_begin();
  char slashed[160];
  snprintf(slashed, sizeof slashed, "/%s", tname("slash"));
  mproc_shm *a, *b, *c;
  cr_assert_eq(mproc_shm_create(&a, slashed, 64), 0);
  cr_assert_str_eq(mproc_shm_name(a), slashed + 1);
  cr_assert_eq(mproc_shm_attach(&b, slashed + 1), 0);
  cr_assert_eq(mproc_shm_attach(&c, slashed), 0);
  cr_assert_eq(mproc_shm_size(c), 64);
  cr_assert_eq(mproc_shm_unlink(c), 0);
  mproc_shm_free(a);
  mproc_shm_free(b);
  mproc_shm_free(c);
  th_end(sc);
}

Test(shm, create_twice_fails_and_leaves_the_first_alone) {
  th_scope sc = th_begin();
  mproc_shm *a, *b = (mproc_shm *)1;
  cr_assert_eq(mproc_shm_create(&a, tname("twice"), 4096), 0);
  strcpy(mproc_shm_buf(a), "first");
  cr_assert_eq(mproc_shm_create(&b, tname("twice"), 100), -EEXIST);
  cr_assert_null(b);
  cr_assert_str_eq(mproc_shm_buf(a), "first");
  mproc_shm *c;
  cr_assert_eq(mproc_shm_attach(&c, tname("twice")), 0);
  cr_assert_eq(mproc_shm_size(c), 4096); /* not truncated by the failed create */
  cr_assert_str_eq(mproc_shm_buf(c), "first");
  cr_assert_eq(mproc_shm_unlink(a), 0);
  mproc_shm_free(c);
  mproc_shm_free(a);
  th_end(sc);
}

Test(shm, unlink_then_attach_fails) {
  th_scope sc = th_begin();
  mproc_shm *a, *b = (mproc_shm *)1;
  cr_assert_eq(mproc_shm_create(&a, NULL, 128), 0);
  strcpy(mproc_shm_buf(a), "still here");
  cr_assert_eq(mproc_shm_unlink(a), 0);
  cr_assert_eq(mproc_shm_attach(&b, mproc_shm_name(a)), -ENOENT);
  cr_assert_null(b);
  cr_assert_eq(mproc_shm_unlink(a), -ENOENT);
  cr_assert_str_eq(mproc_shm_buf(a), "still here"); /* the mapping outlives the name */
  mproc_shm_free(a);
  th_end(sc);
}

Test(shm, free_never_unlinks) {
  th_scope sc = th_begin();
  mproc_shm *a, *b;
  cr_assert_eq(mproc_shm_create(&a, tname("keep"), 32), 0);
  strcpy(mproc_shm_buf(a), "kept");
  mproc_shm_free(a);
  cr_assert_eq(th_shm_count(tname("keep")), 1);
  cr_assert_eq(mproc_shm_attach(&b, tname("keep")), 0);
  cr_assert_str_eq(mproc_shm_buf(b), "kept");
  cr_assert_eq(mproc_shm_unlink(b), 0);
  mproc_shm_free(b);
  th_end(sc);
}

/* The child exists before the segment: it learns the name through shared memory. */
struct rendezvous {
  _Atomic uint32_t ready;
  _Atomic uint32_t done;
  char name[256];
};

static int attach_late_child(struct rendezvous *r) {
  int64_t deadline = mproc__deadline(10);
  while (atomic_load(&r->ready) == 0 && mproc__remaining_ns(deadline) > 0)
    mproc__futex_wait(&r->ready, 0, deadline);
  if (atomic_load(&r->ready) == 0)
    return 3; /* the parent failed before it published the name */
  mproc_shm *s;
  if (mproc_shm_attach(&s, r->name) != 0)
    return 1;
  int ok = mproc_shm_size(s) == 3000 && strcmp(mproc_shm_buf(s), "from parent") == 0;
  strcpy((char *)mproc_shm_buf(s) + 1000, "from child");
  mproc_shm_free(s);
  return ok ? 0 : 2;
}

Test(shm, attach_from_process_forked_before) {
  th_scope sc = th_begin();
  struct rendezvous *r = mproc__shared_map(sizeof *r);
  cr_assert_not_null(r);
  pid_t pid = fork();
  if (pid == 0)
    _exit(attach_late_child(r));
  mproc_shm *s;
  cr_assert_eq(mproc_shm_create(&s, NULL, 3000), 0);
  strcpy(mproc_shm_buf(s), "from parent");
  strcpy(r->name, mproc_shm_name(s));
  atomic_store(&r->ready, 1);
  mproc__futex_wake(&r->ready, INT32_MAX);
  cr_assert_eq(th_exitcode(pid), 0);
  cr_assert_str_eq((char *)mproc_shm_buf(s) + 1000, "from child");
  cr_assert_eq(mproc_shm_unlink(s), 0);
  mproc_shm_free(s);
  mproc__shared_unmap(r, sizeof *r);
  th_end(sc);
}

Test(shm, handle_inherited_by_fork) {
  th_scope sc = th_begin();
  mproc_shm *s;
  cr_assert_eq(mproc_shm_create(&s, NULL, 64), 0);
  pid_t pid = fork();
  if (pid == 0) {
    strcpy(mproc_shm_buf(s), "child wrote");
    mproc_shm_free(s);
    _exit(0);
  }
  cr_assert_eq(th_exitcode(pid), 0);
  cr_assert_str_eq(mproc_shm_buf(s), "child wrote");
  cr_assert_eq(mproc_shm_unlink(s), 0);
  mproc_shm_free(s);
  th_end(sc);
}

Test(shm, name_validation) {
  th_scope sc = th_begin();
  const char *bad[] = {"", "/", "a/b", "//a", "x y", "a\n", "na*me", ".", "..", "/..", "é"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    mproc_shm *s = (mproc_shm *)1;
    cr_assert_eq(mproc_shm_create(&s, bad[i], 16), MPROC_EINVAL, "name '%s'", bad[i]);
    cr_assert_null(s);
    cr_assert_eq(mproc_shm_attach(&s, bad[i]), MPROC_EINVAL, "name '%s'", bad[i]);
  }
  char longest[202] = "mproc";
  memset(longest + 5, 'x', 195);
  longest[200] = 0;
  mproc_shm *s;
  cr_assert_eq(mproc_shm_create(&s, longest, 16), 0);
  cr_assert_str_eq(mproc_shm_name(s), longest);
  cr_assert_eq(mproc_shm_unlink(s), 0);
  mproc_shm_free(s);
  longest[200] = 'x';
  longest[201] = 0;
  cr_assert_eq(mproc_shm_create(&s, longest, 16), MPROC_EINVAL);
  cr_assert_eq(mproc_shm_create(&s, "mproc-ok_Name.9-", 16), 0);
  cr_assert_eq(mproc_shm_unlink(s), 0);
  mproc_shm_free(s);
  th_end(sc);
}

Test(shm, bad_input) {
  th_scope sc = th_begin();
  mproc_shm *s = (mproc_shm *)1;
  cr_assert_eq(mproc_shm_create(NULL, NULL, 16), MPROC_EINVAL);
  cr_assert_eq(mproc_shm_create(&s, NULL, 0), MPROC_EINVAL);
  cr_assert_null(s);
  cr_assert_eq(mproc_shm_create(&s, tname("zero"), 0), MPROC_EINVAL);
  cr_assert_eq(th_shm_count(tname("zero")), 0);
  cr_assert_eq(mproc_shm_create(&s, NULL, SIZE_MAX), MPROC_ETOOBIG);
  cr_assert_eq(mproc_shm_attach(NULL, "x"), MPROC_EINVAL);
  cr_assert_eq(mproc_shm_attach(&s, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_shm_attach(&s, tname("absent")), -ENOENT);
  cr_assert_null(mproc_shm_buf(NULL));
  cr_assert_eq(mproc_shm_size(NULL), 0);
  cr_assert_null(mproc_shm_name(NULL));
  cr_assert_eq(mproc_shm_unlink(NULL), MPROC_EINVAL);
  mproc_shm_free(NULL);
  th_end(sc);
}

Test(shm, attach_empty_segment_is_einval) {
  th_scope sc = th_begin();
  char path[160];
  snprintf(path, sizeof path, "/%s", tname("empty"));
  int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
  cr_assert_geq(fd, 0);
  close(fd);
  mproc_shm *s = (mproc_shm *)1;
  cr_assert_eq(mproc_shm_attach(&s, path), MPROC_EINVAL);
  cr_assert_null(s);
  shm_unlink(path);
  th_end(sc);
}

/* ---- arrays ---- */

Test(array, init_copy_and_zero_fill) {
  th_scope sc = th_begin();
  double init[5] = {1.5, 2.5, 3.5, 4.5, 5.5};
  mproc_array *a, *z;
  cr_assert_eq(mproc_array_new(&a, sizeof(double), 5, init, false), 0);
  cr_assert_eq(mproc_array_len(a), 5);
  cr_assert_eq(memcmp(mproc_array_data(a), init, sizeof init), 0);
  cr_assert_null(mproc_array_lock(a));
  cr_assert_eq((uintptr_t)mproc_array_data(a) % 64, 0);
  cr_assert_eq(mproc_array_new(&z, 3, 100000, NULL, true), 0);
  unsigned char *p = mproc_array_data(z);
  for (size_t i = 0; i < 300000; i++)
    cr_assert_eq(p[i], 0);
  cr_assert_not_null(mproc_array_lock(z));
  mproc_array_free(a);
  mproc_array_free(z);
  th_end(sc);
}

Test(array, value_is_array_of_one_shared_with_child) {
  th_scope sc = th_begin();
  long v0 = 41;
  mproc_array *v;
  cr_assert_eq(mproc_array_new(&v, sizeof(long), 1, &v0, false), 0);
  pid_t pid = fork();
  if (pid == 0) {
    long *x = mproc_array_data(v);
    int ok = *x == 41;
    *x = 42;
    mproc_array_free(v);
    _exit(ok ? 0 : 1);
  }
  cr_assert_eq(th_exitcode(pid), 0);
  cr_assert_eq(*(long *)mproc_array_data(v), 42);
  mproc_array_free(v);
  th_end(sc);
}

Test(array, lock_is_recursive) {
  th_scope sc = th_begin();
  mproc_array *a;
  cr_assert_eq(mproc_array_new(&a, 4, 4, NULL, true), 0);
  mproc_lock *l = mproc_array_lock(a);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  cr_assert_eq(mproc_lock_release(l), 0);
  cr_assert_eq(mproc_lock_release(l), 0);
  cr_assert_eq(mproc_lock_release(l), MPROC_ESTATE);
  mproc_lock_free(l); /* owned by the array: does nothing */
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  cr_assert_eq(mproc_lock_release(l), 0);
  mproc_array_free(a);
  th_end(sc);
}

enum { NPROC = 4, NINC = 20000 };

static int array_incrementer(mproc_array *a) {
  long *x = mproc_array_data(a);
  mproc_lock *l = mproc_array_lock(a);
  for (int i = 0; i < NINC; i++) {
    if (mproc_lock_acquire(l, MPROC_FOREVER) != 0)
      return 1;
    x[0]++; /* a plain read-modify-write: only the lock keeps it exact */
    x[1] += 2;
    if (mproc_lock_release(l) != 0)
      return 2;
  }
  return 0;
}

Test(array, exact_counter_under_its_lock) {
  th_scope sc = th_begin();
  mproc_array *a;
  cr_assert_eq(mproc_array_new(&a, sizeof(long), 2, NULL, true), 0);
  pid_t pids[NPROC];
  for (int i = 0; i < NPROC; i++)
    if ((pids[i] = fork()) == 0)
      _exit(array_incrementer(a));
  for (int i = 0; i < NPROC; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  long *x = mproc_array_data(a);
  cr_assert_eq(x[0], (long)NPROC * NINC);
  cr_assert_eq(x[1], 2L * NPROC * NINC);
  mproc_array_free(a);
  th_end(sc);
}

Test(array, bad_input) {
  th_scope sc = th_begin();
  mproc_array *a = (mproc_array *)1;
  cr_assert_eq(mproc_array_new(NULL, 1, 1, NULL, false), MPROC_EINVAL);
  cr_assert_eq(mproc_array_new(&a, 0, 10, NULL, false), MPROC_EINVAL);
  cr_assert_null(a);
  cr_assert_eq(mproc_array_new(&a, 10, 0, NULL, true), MPROC_EINVAL);
  cr_assert_eq(mproc_array_new(&a, SIZE_MAX / 2, 3, NULL, false), MPROC_EINVAL);
  cr_assert_eq(mproc_array_new(&a, 1, SIZE_MAX - 10, NULL, false), MPROC_EINVAL);
  cr_assert_null(mproc_array_data(NULL));
  cr_assert_eq(mproc_array_len(NULL), 0);
  cr_assert_null(mproc_array_lock(NULL));
  mproc_array_free(NULL);
  th_end(sc);
}

/* ---- the shared arena ---- */

Test(arena, reuses_blocks_freed_before_any_fork) {
  void *a = mproc__shared_alloc(40);
  cr_assert_not_null(a);
  cr_assert_eq((uintptr_t)a % 64, 0);
  memset(a, 0xff, 40);
  mproc__shared_free(a, 40);
  unsigned char *b = mproc__shared_alloc(64);
  cr_assert_eq((void *)b, a);
  for (int i = 0; i < 64; i++)
    cr_assert_eq(b[i], 0); /* zeroed again */
  mproc__shared_free(b, 64);
  void *big = mproc__shared_alloc(100000);
  cr_assert_not_null(big);
  cr_assert_eq((uintptr_t)big % 4096, 0);
  mproc__shared_free(big, 100000);
}

struct arena_share {
  _Atomic uint32_t go;
  long *block;
};

static int check_block_later(struct arena_share *t) {
  int64_t deadline = mproc__deadline(30);
  while (atomic_load(&t->go) == 0)
    if (mproc__futex_wait(&t->go, 0, deadline) == -ETIMEDOUT)
      return 2;
  for (int i = 0; i < 16; i++)
    if (t->block[i] != 1000 + i)
      return 1;
  return 0;
}

Test(arena, never_reuses_a_block_shared_by_a_fork) {
  th_scope sc = th_begin();
  struct arena_share *t = mproc__shared_map(sizeof *t);
  t->block = mproc__shared_alloc(16 * sizeof(long));
  for (int i = 0; i < 16; i++)
    t->block[i] = 1000 + i;
  pid_t pid = fork();
  if (pid == 0)
    _exit(check_block_later(t));
  /* The parent lets go of it; the child still uses it: it must not be handed out again
   * (the same address may come back, but then as new memory: the child's view is intact). */
  mproc__shared_free(t->block, 16 * sizeof(long));
  void *again[200];
  for (int i = 0; i < 200; i++) {
    again[i] = mproc__shared_alloc(16 * sizeof(long));
    memset(again[i], 0x11, 16 * sizeof(long));
  }
  atomic_store(&t->go, 1);
  mproc__futex_wake(&t->go, 1);
  cr_assert_eq(th_exitcode(pid), 0);
  for (int i = 0; i < 200; i++)
    mproc__shared_free(again[i], 16 * sizeof(long));
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

enum { MARKS = 3000 };

struct arena_race {
  _Atomic uint32_t done;
};

/* Allocates MARKS blocks, stamps each with (pid, i), waits for the other side to finish the
 * same, then checks every stamp survived: parent and child never got the same block. */
static int stamp_blocks(struct arena_race *r, long **mine) {
  long me = getpid();
  for (int i = 0; i < MARKS; i++) {
    mine[i] = mproc__shared_alloc(2 * sizeof(long));
    if (!mine[i])
      return 1;
    mine[i][0] = me;
    mine[i][1] = i;
  }
  atomic_fetch_add(&r->done, 1);
  mproc__futex_wake(&r->done, INT32_MAX);
  uint32_t d;
  int64_t deadline = mproc__deadline(30);
  while ((d = atomic_load(&r->done)) < 2)
    if (mproc__futex_wait(&r->done, d, deadline) == -ETIMEDOUT)
      return 3;
  for (int i = 0; i < MARKS; i++)
    if (mine[i][0] != me || mine[i][1] != i)
      return 2;
  for (int i = 0; i < MARKS; i++)
    mproc__shared_free(mine[i], 2 * sizeof(long));
  return 0;
}

Test(arena, parent_and_child_never_share_a_new_block) {
  th_scope sc = th_begin();
  /* Leave a half-used chunk behind so the child inherits blocks it must not hand out. */
  void *keep = mproc__shared_alloc(16);
  struct arena_race *r = mproc__shared_map(sizeof *r);
  static long *mine[MARKS];
  pid_t pid = fork();
  if (pid == 0)
    _exit(stamp_blocks(r, mine));
  cr_assert_eq(stamp_blocks(r, mine), 0);
  cr_assert_eq(th_exitcode(pid), 0);
  mproc__shared_free(keep, 16);
  mproc__shared_unmap(r, sizeof *r);
  th_end(sc);
}

Test(arena, a_hundred_thousand_locks) {
  enum { N = 100000 };
  static mproc_lock *locks[N];
  for (int i = 0; i < N; i++)
    cr_assert_eq(mproc_lock_new(&locks[i], i % 2), 0, "lock %d", i);
  for (int i = 0; i < N; i += 997) {
    cr_assert_eq(mproc_lock_acquire(locks[i], 0), 0);
    cr_assert_eq(mproc_lock_release(locks[i]), 0);
  }
  for (int i = 0; i < N; i++)
    mproc_lock_free(locks[i]);
}
