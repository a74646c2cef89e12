/* Stand-in for Criterion's header in the plain programs run under valgrind (vg_walk.c):
 * Criterion itself under valgrind took over 5 minutes for one suite, with errors inside
 * its libnanomsg. tests/lifecycles.c and tests/helpers.c compile against this instead, and
 * a failed check is printed and counted (tv_failures) rather than reported to a runner. */
#ifndef MPROC_TEST_CRITERION_SHIM_H
#define MPROC_TEST_CRITERION_SHIM_H

#include <stdio.h>
#include <stdlib.h>

extern int tv_failures;

#define TV_CHECK(cond, fatal)                                                                  \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                 \
      tv_failures++;                                                                           \
      if (fatal)                                                                               \
        exit(1);                                                                               \
    }                                                                                          \
  } while (0)

/* The message arguments Criterion takes after the condition are dropped. */
#define cr_expect(cond, ...) TV_CHECK(cond, 0)
#define cr_assert(cond, ...) TV_CHECK(cond, 1)
#define cr_expect_eq(a, b, ...) TV_CHECK((a) == (b), 0)
#define cr_expect_leq(a, b, ...) TV_CHECK((a) <= (b), 0)
#define cr_assert_eq(a, b, ...) TV_CHECK((a) == (b), 1)
#define cr_assert_not_null(p, ...) TV_CHECK((p) != NULL, 1)

#endif
