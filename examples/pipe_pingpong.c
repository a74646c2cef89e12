/*
 * pipe_pingpong: two processes talking over a duplex Pipe (Python's `Pipe()` tutorial).
 *
 * The parent sends the numbers 1..N; the child answers each with its square. When the parent
 * closes its end, the child's next recv returns MPROC_EOF and the child exits. The ends cross
 * to the child via opts.handles, so the example works under every start method.
 *
 *   usage: pipe_pingpong [N]        (default 5)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int child_main(void *arg) {
  (void)arg;
  mproc_conn *mine = mproc_process_handle(0);
  /* handles[1] is this process's copy of the parent's end (inherited by fork, or passed):
   * close it, or the pipe would never report EOF (this process would still hold a writer). */
  mproc_conn_free(mproc_process_handle(1));
  for (;;) {
    void *msg;
    size_t len;
    int rc = mproc_conn_recv(mine, &msg, &len, MPROC_FOREVER);
    if (rc == MPROC_EOF)
      break; /* the parent is done */
    if (rc < 0 || len != sizeof(int64_t)) {
      fprintf(stderr, "child: recv: %s\n", mproc_strerror(rc));
      return 1;
    }
    int64_t x = *(int64_t *)msg, sq = x * x;
    free(msg);
    if (mproc_conn_send(mine, &sq, sizeof sq) < 0)
      return 1;
  }
  mproc_conn_free(mine);
  return 0;
}

int main(int argc, char **argv) {
  int64_t n = argc > 1 ? atoll(argv[1]) : 5;
  mproc_conn *parent, *child;
  mproc_process *p;
  int rc = mproc_pipe(&parent, &child, true);
  if (rc == 0)
    rc = mproc_process_new(&p, child_main, NULL,
                           &(mproc_process_opts){.name = "squarer",
                                                 .handles = (void *[]){child, parent},
                                                 .n_handles = 2});
  if (rc == 0)
    rc = mproc_process_start(p);
  if (rc < 0) {
    fprintf(stderr, "pipe_pingpong: %s\n", mproc_strerror(rc));
    return 1;
  }
  mproc_conn_free(child); /* the child has its own copy */

  int64_t sum = 0;
  printf("squares:");
  for (int64_t i = 1; i <= n; i++) {
    void *msg;
    size_t len;
    if (mproc_conn_send(parent, &i, sizeof i) < 0 ||
        mproc_conn_recv(parent, &msg, &len, 5.0) < 0 || len != sizeof(int64_t)) {
      fprintf(stderr, "\npipe_pingpong: the child stopped answering\n");
      break;
    }
    printf(" %lld", (long long)*(int64_t *)msg);
    sum += *(int64_t *)msg;
    free(msg);
  }
  mproc_conn_free(parent); /* EOF for the child */

  int code = -1;
  mproc_process_join(p, MPROC_FOREVER);
  mproc_process_exitcode(p, &code);
  mproc_process_free(p);
  printf("\nsum of squares 1..%lld = %lld, child exit code %d\n", (long long)n, (long long)sum,
         code);
  return code == 0 ? 0 : 1;
}
