/* The listener layer: Listener/Client over every address kind, the mutual HMAC challenge
 * (right, wrong and no key), interop with the machine's python3 in both roles, 3.12's
 * {digest} handshake done by hand in Python, peers that send garbage, absurd lengths or
 * stall, accept timeouts and bad input; receiving on a socket: read-ahead never loses a
 * frame, recv_bytes_into with cut frames, timeouts and too-short buffers. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEY "s3cret key"

static void nap_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}
#define KEYLEN (sizeof KEY - 1)


static const size_t SIZES[] = {0, 1, 64 << 10, 1 << 20, 64 << 20};
#define NSIZES (sizeof SIZES / sizeof *SIZES)
#define SIZES_ARG "0,1,65536,1048576,67108864"

/* Byte i of a message of n bytes: the Python peer's pattern. */
static unsigned char *pattern(size_t n) {
  unsigned char *b = malloc(n ? n : 1);
  cr_assert(b);
  for (size_t i = 0; i < n; i++)
    b[i] = (unsigned char)((i % 251 * 7 + n) % 251);
  return b;
}

static void expect_msg(mproc_conn *c, const void *want, size_t n) {
  void *m = NULL;
  size_t len = 0;
  cr_assert_eq(mproc_conn_recv(c, &m, &len, 60), 0);
  cr_assert_eq(len, n);
  cr_assert(n == 0 || memcmp(m, want, n) == 0, "message of %zu bytes differs", n);
  free(m);
}

/* Sends msg and expects it echoed back. */
static void round_trip(mproc_conn *c, const void *msg, size_t n) {
  cr_assert_eq(mproc_conn_send(c, msg, n), 0);
  expect_msg(c, msg, n);
}

/* A forked client that connects to address and echoes messages until EOF. Exit code 0,
 * or 10 + how its connection failed (-code). */
static pid_t echo_client(const char *address, const char *key) {
  pid_t pid = th_fork_tied();
  cr_assert(pid >= 0);
  if (pid)
    return pid;
  mproc_conn *c;
  int rc = mproc_client(&c, address, key, key ? strlen(key) : 0, 10);
  if (rc)
    _exit(rc == MPROC_EAUTH ? 10 : rc == -EPROTO ? 11 : 12);
  for (;;) {
    void *m;
    size_t n;
    if ((rc = mproc_conn_recv(c, &m, &n, 30)) == MPROC_EOF)
      break;
    if (rc || mproc_conn_send(c, m, n))
      _exit(13);
    free(m);
  }
  mproc_conn_free(c);
  _exit(0);
}

/* A listener at address with a forked echo client: the conversation checked exactly. */
static void serve_echo(const char *address, const char *key) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, address, key, key ? strlen(key) : 0, 0), 0);
  const char *bound = mproc_listener_address(l);
  cr_assert(bound && strncmp(bound, address ? address : "unix:", 4) == 0, "bound: %s", bound);
  pid_t pid = echo_client(bound, key);
  mproc_conn *c;
  cr_assert_eq(mproc_listener_accept(l, &c, 10), 0);
  for (size_t i = 0; i < 4; i++) {
    unsigned char *m = pattern(SIZES[i]);
    round_trip(c, m, SIZES[i]);
    free(m);
  }
  cr_assert_eq(mproc_conn_poll(c, 0), 0);
  mproc_waitable w = {.conn = c};
  cr_assert_eq(mproc_wait(&w, 1, 0), 0);
  cr_assert_eq(mproc_conn_send(c, "x", 1), 0);
  cr_assert_eq(mproc_wait(&w, 1, 10), 1);
  expect_msg(c, "x", 1);
  mproc_conn_free(c);
  cr_assert_eq(th_exitcode(pid), 0);
  mproc_listener_free(l);
  th_end(s);
}

/* ---- address kinds ---- */

Test(listener, unix_path_with_key_and_file_removed) {
  char path[64];
  snprintf(path, sizeof path, "/tmp/mproc-test-l-%d.sock", (int)getpid());
  char address[80];
  snprintf(address, sizeof address, "unix:%s", path);
  serve_echo(address, KEY);
  struct stat st;
  cr_assert_eq(stat(path, &st), -1, "the socket file stays behind");
}

Test(listener, unix_abstract) {
  char address[80];
  snprintf(address, sizeof address, "unix:@mproc-test-%d", (int)getpid());
  serve_echo(address, KEY);
}

Test(listener, tcp_ipv4_port_chosen) {
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, "tcp:127.0.0.1:0", KEY, KEYLEN, 4), 0);
  cr_assert_str_neq(mproc_listener_address(l), "tcp:127.0.0.1:0");
  mproc_listener_free(l);
  serve_echo("tcp:127.0.0.1:0", KEY);
  serve_echo("tcp:localhost:0", KEY);
}

Test(listener, tcp_ipv6) {
  mproc_listener *l;
  int rc = mproc_listener_new(&l, "tcp:[::1]:0", KEY, KEYLEN, 0);
  if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT)
    cr_skip("no IPv6 loopback here");
  cr_assert_eq(rc, 0);
  cr_assert(strncmp(mproc_listener_address(l), "tcp:[::1]:", 10) == 0);
  mproc_listener_free(l);
  serve_echo("tcp:[::1]:0", KEY);
}

Test(listener, private_default_address_removed_at_free) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, NULL, NULL, 0, 0), 0);
  const char *a = mproc_listener_address(l);
  cr_assert(strncmp(a, "unix:/", 6) == 0, "%s", a);
  char path[300], dir[300];
  snprintf(path, sizeof path, "%s", a + 5);
  snprintf(dir, sizeof dir, "%s", path);
  *strrchr(dir, '/') = '\0';
  struct stat st;
  cr_assert_eq(stat(dir, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0700);
  mproc_listener_free(l);
  cr_assert_eq(stat(path, &st), -1);
  cr_assert_eq(stat(dir, &st), -1);
  th_end(s);
  serve_echo(NULL, NULL);
  serve_echo(NULL, KEY);
}

Test(listener, no_key_only_on_unix) {
  mproc_listener *l = (void *)1;
  cr_assert_eq(mproc_listener_new(&l, "tcp:127.0.0.1:0", NULL, 0, 0), MPROC_EINVAL);
  cr_assert_null(l);
  mproc_conn *c;
  cr_assert_eq(mproc_client(&c, "tcp:127.0.0.1:1", NULL, 0, 1), MPROC_EINVAL);
}

/* ---- keys ---- */

Test(listener, wrong_key_refused_on_both_sides) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, NULL, KEY, KEYLEN, 0), 0);
  pid_t pid = echo_client(mproc_listener_address(l), "not the key");
  mproc_conn *c = NULL;
  cr_assert_eq(mproc_listener_accept(l, &c, 10), MPROC_EAUTH);
  cr_assert_null(c);
  cr_assert_eq(th_exitcode(pid), 10, "the client was not refused with MPROC_EAUTH");
  /* The listener serves the next one. */
  pid = echo_client(mproc_listener_address(l), KEY);
  cr_assert_eq(mproc_listener_accept(l, &c, 10), 0);
  round_trip(c, "after", 5);
  mproc_conn_free(c);
  cr_assert_eq(th_exitcode(pid), 0);
  mproc_listener_free(l);
  th_end(s);
}

/* ---- Python ---- */

/* python3 listener_peer.py ROLE ADDRESS KEY SIZES, its stdout to read. */
static FILE *python(const char *role, const char *address, const char *keyhex,
                    const char *sizes, const char *env) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s exec python3 %s %s '%s' %s '%s'", env ? env : "",
           MPROC_TEST_PEER_PY, role, address, keyhex, sizes);
  FILE *f = popen(cmd, "r");
  cr_assert(f);
  return f;
}

static int python_exit(FILE *f) {
  int st = pclose(f);
  cr_assert(st >= 0 && WIFEXITED(st), "python3 did not exit: %d", st);
  return WEXITSTATUS(st);
}

/* The conversation with a Python peer: its messages checked (received with
 * recv_bytes_into, the last one into a buffer of exactly its size after a too-short one),
 * ours echoed back exactly (received with recv). */
static void talk_to_python(mproc_conn *c) {
  size_t cap = SIZES[NSIZES - 1];
  unsigned char *buf = malloc(cap);
  cr_assert(buf);
  for (size_t i = 0; i < NSIZES; i++) {
    unsigned char *m = pattern(SIZES[i]);
    size_t n = 0;
    if (SIZES[i]) {
      cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, SIZES[i] - 1, &n, 60), MPROC_ETOOBIG);
      cr_assert_eq(n, SIZES[i]);
    }
    cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, i % 2 ? SIZES[i] : cap, &n, 60), 0);
    cr_assert_eq(n, SIZES[i]);
    cr_assert(memcmp(buf, m, n) == 0, "message of %zu bytes differs", n);
    free(m);
  }
  free(buf);
  for (size_t i = 0; i < NSIZES; i++) {
    unsigned char *m = pattern(SIZES[i]);
    m[0 % (SIZES[i] ? SIZES[i] : 1)] ^= SIZES[i] ? 0x55 : 0; /* not just Python's pattern */
    round_trip(c, m, SIZES[i]);
    free(m);
  }
}

static const char *hex(const char *s, char *buf) {
  for (size_t i = 0; s[i]; i++)
    sprintf(buf + 2 * i, "%02x", (unsigned char)s[i]);
  return buf;
}

/* mproc's Listener at address, Python's Client: the full conversation. */
static void python_client(const char *address, const char *role, const char *env,
                          const char *key, const char *pykey) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, address, key, key ? strlen(key) : 0, 0), 0);
  char kh[128];
  FILE *py = python(role, mproc_listener_address(l), pykey ? hex(pykey, kh) : "-",
                    SIZES_ARG, env);
  mproc_conn *c;
  cr_assert_eq(mproc_listener_accept(l, &c, 60), 0);
  talk_to_python(c);
  mproc_conn_free(c);
  cr_assert_eq(python_exit(py), 0);
  mproc_listener_free(l);
  th_end(s);
}

/* Python's Listener at address (port 0), mproc's Client. */
static void python_listener(const char *address, const char *role, const char *env,
                            const char *key) {
  th_scope s = th_begin();
  char kh[128];
  FILE *py = python(role, address, key ? hex(key, kh) : "-", SIZES_ARG, env);
  char bound[300];
  cr_assert(fgets(bound, sizeof bound, py), "python3 printed no address");
  bound[strcspn(bound, "\n")] = '\0';
  mproc_conn *c;
  cr_assert_eq(mproc_client(&c, bound, key, key ? strlen(key) : 0, 60), 0);
  talk_to_python(c);
  mproc_conn_free(c);
  cr_assert_eq(python_exit(py), 0);
  th_end(s);
}

Test(python, python_client_unix_and_tcp, .timeout = 200) {
  python_client(NULL, "client", NULL, KEY, KEY);
  python_client("tcp:127.0.0.1:0", "client", NULL, KEY, KEY);
  python_client(NULL, "client", NULL, NULL, NULL);
}

Test(python, python_listener_unix_and_tcp, .timeout = 200) {
  char path[80];
  snprintf(path, sizeof path, "unix:/tmp/mproc-test-py-%d.sock", (int)getpid());
  python_listener(path, "listen", NULL, KEY);
  python_listener("tcp:127.0.0.1:0", "listen", NULL, KEY);
  snprintf(path, sizeof path, "unix:@mproc-test-py-%d", (int)getpid());
  python_listener(path, "listen", NULL, NULL);
}

Test(python, legacy_challenge_to_python) {
  python_client("tcp:127.0.0.1:0?legacy", "client", NULL, KEY, KEY);
}

Test(python, sha256_form_by_hand_both_roles, .timeout = 200) {
  python_client(NULL, "client312", NULL, KEY, KEY);
  python_listener("tcp:127.0.0.1:0", "listen312", NULL, KEY);
  /* Every digest 3.12 allows, in what mproc answers. */
  python_listener("tcp:127.0.0.1:0", "listen312", "DIGEST=sha384", KEY);
  python_listener("tcp:127.0.0.1:0", "listen312", "DIGEST=sha3_256", KEY);
  python_listener("tcp:127.0.0.1:0", "listen312", "DIGEST=sha3_384", KEY);
  python_listener("tcp:127.0.0.1:0", "listen312", "DIGEST=md5", KEY);
}

Test(python, wrong_key_with_python_on_each_side) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, "tcp:127.0.0.1:0", KEY, KEYLEN, 0), 0);
  char kh[128];
  FILE *py = python("client", mproc_listener_address(l), hex("other", kh), "1", NULL);
  mproc_conn *c;
  cr_assert_eq(mproc_listener_accept(l, &c, 60), MPROC_EAUTH);
  cr_assert_eq(python_exit(py), 3);
  py = python("client312", mproc_listener_address(l), hex("other", kh), "1", NULL);
  cr_assert_eq(mproc_listener_accept(l, &c, 60), MPROC_EAUTH);
  cr_assert_eq(python_exit(py), 3);
  mproc_listener_free(l);

  py = python("listen", "tcp:127.0.0.1:0", hex("other", kh), "1", NULL);
  char bound[300];
  cr_assert(fgets(bound, sizeof bound, py));
  bound[strcspn(bound, "\n")] = '\0';
  cr_assert_eq(mproc_client(&c, bound, KEY, KEYLEN, 60), MPROC_EAUTH);
  cr_assert_eq(python_exit(py), 3);
  th_end(s);
}

/* ---- bad peers ---- */

/* A raw peer of a keyed listener: a keyless client (unix only) writes bytes by hand. */
static mproc_conn *raw_client(mproc_listener *l) {
  mproc_conn *c;
  cr_assert_eq(mproc_client(&c, mproc_listener_address(l), NULL, 0, 10), 0);
  return c;
}

static void raw_write(mproc_conn *c, const void *b, size_t n) {
  cr_assert_eq(write(mproc_conn_fileno(c), b, n), (ssize_t)n);
}

/* After a bad peer: a good client is still served. */
static void serves_next(mproc_listener *l) {
  pid_t pid = echo_client(mproc_listener_address(l), KEY);
  mproc_conn *c;
  cr_assert_eq(mproc_listener_accept(l, &c, 10), 0);
  round_trip(c, "next", 4);
  mproc_conn_free(c);
  cr_assert_eq(th_exitcode(pid), 0);
}

/* Each bad peer's handshake: what it sends (then it stalls), what accept says. */
static void bad_peer(const void *bytes, size_t n, int want) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, NULL, KEY, KEYLEN, 0), 0);
  cr_assert_eq(mproc_listener_set_handshake_timeout(l, 0.3), 0);
  mproc_conn *raw = raw_client(l);
  raw_write(raw, bytes, n);
  mproc_conn *c = NULL;
  cr_assert_eq(mproc_listener_accept(l, &c, 10), want, "accept: %s", "");
  cr_assert_null(c);
  /* The listener dropped it: the raw peer sees its challenge (maybe), then EOF, or a reset
   * when the listener closed with the peer's bytes unread. */
  void *m;
  size_t len;
  int rc;
  while ((rc = mproc_conn_recv(raw, &m, &len, 10)) == 0)
    free(m);
  cr_assert(rc == MPROC_EOF || rc == -ECONNRESET, "%s", mproc_err_name(rc));
  mproc_conn_free(raw);
  serves_next(l);
  mproc_listener_free(l);
  th_end(s);
}

Test(bad_peer, garbage_answer) {
  bad_peer("\0\0\0\x10garbagegarbage!!", 20, MPROC_EAUTH);
}

Test(bad_peer, answer_of_wrong_length_and_unknown_digest) {
  bad_peer("\0\0\0\x05" "abcde", 9, MPROC_EAUTH);
  bad_peer("\0\0\0\x0c{whirlpool}x", 16, MPROC_EAUTH);
}

Test(bad_peer, absurd_lengths) {
  bad_peer("\xff\xff\xff\xff\x40\0\0\0\0\0\0\0", 12, MPROC_ETOOBIG); /* 2^62 */
  bad_peer("\0\0\x01\x01", 4, MPROC_ETOOBIG);                       /* 257 */
  bad_peer("\x7f\xff\xff\xff", 4, MPROC_ETOOBIG);
}

Test(bad_peer, stalls_and_half_sent) {
  bad_peer("", 0, MPROC_ETIMEDOUT);
  bad_peer("\0\0", 2, MPROC_ETIMEDOUT);
  bad_peer("\0\0\0\x10half", 8, MPROC_ETIMEDOUT);
}

/* The client facing a listener (keyless here, driven by hand) that misbehaves. */
static void bad_listener(const void *bytes, size_t n, int want) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, NULL, NULL, 0, 0), 0);
  pid_t pid = th_fork_tied();
  cr_assert(pid >= 0);
  if (pid == 0) {
    mproc_conn *c;
    int rc = mproc_client(&c, mproc_listener_address(l), KEY, KEYLEN, 0.5);
    _exit(rc == want ? 0 : 1);
  }
  mproc_conn *c;
  cr_assert_eq(mproc_listener_accept(l, &c, 10), 0);
  raw_write(c, bytes, n);
  cr_assert_eq(th_exitcode(pid), 0, "the client did not fail as expected");
  mproc_conn_free(c);
  mproc_listener_free(l);
  th_end(s);
}

Test(bad_peer, client_facing_a_bad_listener) {
  bad_listener("\0\0\0\x05hello", 9, -EPROTO);
  bad_listener("\0\0\0\x0e#CHALLENGE#abc", 18, -EPROTO); /* too short */
  bad_listener("\xff\xff\xff\xff\0\0\0\0\0\0\x01\0", 12, MPROC_ETOOBIG);
  bad_listener("", 0, MPROC_ETIMEDOUT);
}

/* ---- timeouts and bad input ---- */

Test(listener, accept_timeout) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, NULL, KEY, KEYLEN, 0), 0);
  mproc_conn *c = NULL;
  cr_assert_eq(mproc_listener_accept(l, &c, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc_listener_accept(l, &c, 0.05), MPROC_ETIMEDOUT);
  cr_assert_null(c);
  cr_assert(mproc_listener_fileno(l) >= 0);
  mproc_listener_free(l);
  th_end(s);
}

Test(listener, client_to_nobody) {
  mproc_conn *c;
  cr_assert_eq(mproc_client(&c, "unix:/nonexistent/mproc.sock", KEY, KEYLEN, 1), -ENOENT);
  cr_assert_eq(mproc_client(&c, "unix:@mproc-nobody-listens-here", KEY, KEYLEN, 1),
               -ECONNREFUSED);
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, "tcp:127.0.0.1:0", KEY, KEYLEN, 0), 0);
  char a[300];
  snprintf(a, sizeof a, "%s", mproc_listener_address(l));
  mproc_listener_free(l); /* that port is free now, nobody on it */
  cr_assert_eq(mproc_client(&c, a, KEY, KEYLEN, 1), -ECONNREFUSED);
}

Test(listener, address_in_use) {
  mproc_listener *l, *l2;
  char a[80];
  snprintf(a, sizeof a, "unix:@mproc-test-inuse-%d", (int)getpid());
  cr_assert_eq(mproc_listener_new(&l, a, KEY, KEYLEN, 0), 0);
  cr_assert_eq(mproc_listener_new(&l2, a, KEY, KEYLEN, 0), -EADDRINUSE);
  mproc_listener_free(l);
}

Test(listener, bad_input) {
  mproc_listener *l;
  mproc_conn *c;
  const char *bad[] = {"", "foo", "unix:", "unix:@", "tcp:", "tcp:127.0.0.1", "tcp::80",
                       "tcp:127.0.0.1:", "tcp:127.0.0.1:x", "tcp:127.0.0.1:65536",
                       "tcp:[::1:80", "tcp:[]:80", "udp:1.2.3.4:5"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_eq(mproc_listener_new(&l, bad[i], KEY, KEYLEN, 0), MPROC_EINVAL, "%s", bad[i]);
    cr_assert_eq(mproc_client(&c, bad[i], KEY, KEYLEN, 0), MPROC_EINVAL, "%s", bad[i]);
  }
  char longp[400];
  memset(longp, 'a', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  memcpy(longp, "unix:/", 6);
  cr_assert_eq(mproc_listener_new(&l, longp, KEY, KEYLEN, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_listener_new(&l, "tcp:no-such-host.invalid:0", KEY, KEYLEN, 0),
               -EADDRNOTAVAIL);
  cr_assert_eq(mproc_listener_new(NULL, NULL, KEY, KEYLEN, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_listener_new(&l, NULL, KEY, 0, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_listener_new(&l, NULL, NULL, 3, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_client(NULL, "unix:@x", KEY, KEYLEN, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_client(&c, NULL, KEY, KEYLEN, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_client(&c, "unix:@x", KEY, 0, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_listener_accept(NULL, &c, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_listener_fileno(NULL), MPROC_EINVAL);
  cr_assert_null(mproc_listener_address(NULL));
  cr_assert_eq(mproc_listener_set_handshake_timeout(NULL, 1), MPROC_EINVAL);
  mproc_listener_free(NULL);
  cr_assert_eq(mproc_listener_new(&l, NULL, KEY, KEYLEN, 0), 0);
  cr_assert_eq(mproc_listener_accept(l, NULL, 0), MPROC_EINVAL);
  mproc_listener_free(l);
}

/* ---- a connection crosses to a child that was not forked ---- */

static int spawned_echo(void *arg) {
  (void)arg;
  mproc_conn_free(mproc_process_handle(1)); /* the parent's end, or it never sees EOF */
  mproc_conn *c = mproc_process_handle(0);
  void *m;
  size_t n;
  int rc;
  while ((rc = mproc_conn_recv(c, &m, &n, 30)) == 0) {
    rc = mproc_conn_send(c, m, n);
    free(m);
    if (rc)
      return 2;
  }
  return rc == MPROC_EOF ? 0 : 1;
}

Test(listener, socket_connection_crosses_to_every_start_method, .timeout = 120) {
  mproc_start_method methods[] = {MPROC_START_SPAWN, MPROC_START_FORKSERVER, MPROC_START_FORK};
  for (size_t k = 0; k < 3; k++) {
    th_scope s = th_begin();
    mproc_listener *l;
    cr_assert_eq(mproc_listener_new(&l, NULL, NULL, 0, 0), 0);
    /* Keyless: no handshake, so one process can be both ends. */
    mproc_conn *mine, *theirs;
    cr_assert_eq(mproc_client(&mine, mproc_listener_address(l), NULL, 0, 10), 0);
    cr_assert_eq(mproc_listener_accept(l, &theirs, 10), 0);
    /* theirs reads "second" ahead with "first": it crosses with the connection. */
    cr_assert_eq(mproc_conn_send(mine, "first", 5), 0);
    cr_assert_eq(mproc_conn_send(mine, "second", 6), 0);
    cr_assert_eq(mproc_conn_poll(theirs, 10), 1);
    nap_ms(20);
    expect_msg(theirs, "first", 5);
    cr_assert_eq(mproc_conn_poll(theirs, 0), 1);
    void *h[2] = {theirs, mine};
    mproc_process_opts o = {.handles = h, .n_handles = 2, .start_method = methods[k]};
    mproc_process *p;
    cr_assert_eq(mproc_process_new(&p, spawned_echo, NULL, &o), 0);
    cr_assert_eq(mproc_process_start(p), 0);
    mproc_conn_free(theirs);
    expect_msg(mine, "second", 6);
    for (size_t i = 0; i < 4; i++) {
      unsigned char *m = pattern(SIZES[i]);
      round_trip(mine, m, SIZES[i]);
      free(m);
    }
    mproc_conn_free(mine);
    cr_assert_eq(mproc_process_join(p, 30), 0);
    int code = -1;
    cr_assert_eq(mproc_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0, "method %d", (int)methods[k]);
    mproc_process_free(p);
    mproc_listener_free(l);
    th_end(s);
  }
}

/* ---- receiving on a socket: read-ahead, recv_bytes_into ---- */

/* A keyless pair over a unix socket: *c accepted, *peer the client whose descriptor the
 * test writes frames to by hand. */
static void socket_pair(mproc_listener **l, mproc_conn **c, mproc_conn **peer) {
  cr_assert_eq(mproc_listener_new(l, NULL, NULL, 0, 0), 0);
  cr_assert_eq(mproc_client(peer, mproc_listener_address(*l), NULL, 0, 10), 0);
  cr_assert_eq(mproc_listener_accept(*l, c, 10), 0);
}

/* Python's frame for a payload of n bytes at f: its length. */
static size_t py_frame(unsigned char *f, const void *payload, size_t n) {
  for (int i = 0; i < 4; i++)
    f[i] = (unsigned char)(n >> (24 - 8 * i));
  memcpy(f + 4, payload, n);
  return 4 + n;
}

/* Many frames in one write: each received exactly, the later ones from what was read
 * ahead (the descriptor empty, yet poll and wait say ready), mixing recv and
 * recv_bytes_into, a too-short buffer among them. */
Test(listener, frames_read_ahead_are_never_lost) {
  th_scope s = th_begin();
  mproc_listener *l;
  mproc_conn *c, *peer;
  socket_pair(&l, &c, &peer);
  static const size_t sizes[] = {8, 0, 1, 3000, 5000, 2, 4100, 7};
  enum { N = sizeof sizes / sizeof *sizes };
  static unsigned char wire[N * 5200];
  size_t at = 0;
  for (size_t i = 0; i < N; i++) {
    unsigned char *m = pattern(sizes[i]);
    at += py_frame(wire + at, m, sizes[i]);
    free(m);
  }
  raw_write(peer, wire, at);
  nap_ms(20); /* all of it arrived */
  unsigned char buf[6000];
  for (size_t i = 0; i < N; i++) {
    unsigned char *m = pattern(sizes[i]);
    cr_assert_eq(mproc_conn_poll(c, 0), 1, "message %zu", i);
    mproc_waitable w = {.conn = c};
    cr_assert_eq(mproc_wait(&w, 1, 0), 1);
    cr_assert(w.ready);
    size_t n = 0;
    if (sizes[i] > 1) {
      cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, sizes[i] - 1, &n, 0), MPROC_ETOOBIG);
      cr_assert_eq(n, sizes[i]);
    }
    if (i % 3 == 1) {
      expect_msg(c, m, sizes[i]);
    } else {
      cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 0), 0, "message %zu", i);
      cr_assert_eq(n, sizes[i]);
      cr_assert(memcmp(buf, m, n) == 0, "message %zu differs", i);
    }
    free(m);
  }
  cr_assert_eq(mproc_conn_poll(c, 0), 0);
  size_t n;
  cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 0), MPROC_EAGAIN);
  mproc_conn_free(peer);
  cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 1), MPROC_EOF);
  mproc_conn_free(c);
  mproc_listener_free(l);
  th_end(s);
}

/* A conn whose descriptor was asked for reads exactly: before each message, the
 * descriptor itself is readable (an event loop sleeping on it misses nothing); after the
 * last, it is not. */
Test(listener, descriptor_asked_for_reads_exactly) {
  th_scope s = th_begin();
  mproc_listener *l;
  mproc_conn *c, *peer;
  socket_pair(&l, &c, &peer);
  int fd = mproc_conn_fileno(c);
  cr_assert_geq(fd, 0);
  static const size_t sizes[] = {8, 0, 3000, 1, 4100, 2};
  enum { N = sizeof sizes / sizeof *sizes };
  static unsigned char wire[N * 4200];
  size_t at = 0;
  for (size_t i = 0; i < N; i++) {
    unsigned char *m = pattern(sizes[i]);
    at += py_frame(wire + at, m, sizes[i]);
    free(m);
  }
  raw_write(peer, wire, at);
  nap_ms(20);
  unsigned char buf[5000];
  for (size_t i = 0; i < N; i++) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 0), 1, "message %zu not on the descriptor", i);
    unsigned char *m = pattern(sizes[i]);
    size_t n = 0;
    cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 0), 0, "message %zu", i);
    cr_assert_eq(n, sizes[i]);
    cr_assert(memcmp(buf, m, n) == 0, "message %zu differs", i);
    free(m);
  }
  struct pollfd p = {.fd = fd, .events = POLLIN};
  cr_assert_eq(poll(&p, 1, 0), 0);
  cr_assert_eq(mproc_conn_poll(c, 0), 0);
  mproc_conn_free(peer);
  mproc_conn_free(c);
  mproc_listener_free(l);
  th_end(s);
}

/* A socket frame cut at every place across header and body, with the next frame's start
 * behind it: timeouts keep the part, and the next calls finish both exactly. */
Test(listener, cut_frames_and_timeouts) {
  th_scope s = th_begin();
  mproc_listener *l;
  mproc_conn *c, *peer;
  socket_pair(&l, &c, &peer);
  unsigned char a[200], b[30], wire[300], buf[256];
  for (size_t i = 0; i < sizeof a; i++)
    a[i] = (unsigned char)(i * 13 + 1);
  memset(b, 'b', sizeof b);
  size_t la = py_frame(wire, a, sizeof a);
  size_t lb = py_frame(wire + la, b, sizeof b);
  size_t cuts[] = {1, 3, 4, 5, 100, la - 1, la, la + 2, la + 6};
  for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
    bool into = k % 2;
    size_t n;
    void *m = NULL;
    raw_write(peer, wire, cuts[k]);
    nap_ms(5);
    int rc = into ? mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 0.01)
                  : mproc_conn_recv(c, &m, &n, 0.01);
    cr_assert_eq(rc, cuts[k] < la ? MPROC_ETIMEDOUT : 0, "cut %zu", cuts[k]);
    if (rc == 0) {
      cr_assert_eq(n, sizeof a);
      cr_assert(memcmp(into ? (void *)buf : m, a, n) == 0);
      free(m);
      m = NULL;
    }
    raw_write(peer, wire + cuts[k], la + lb - cuts[k]);
    if (rc) {
      memset(buf, 0, sizeof buf);
      cr_assert_eq(into ? mproc_conn_recv(c, &m, &n, 10)
                        : mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 10),
                   0, "cut %zu", cuts[k]);
      cr_assert_eq(n, sizeof a);
      cr_assert(memcmp(into ? m : (void *)buf, a, n) == 0, "cut %zu", cuts[k]);
      free(m);
    }
    cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 10), 0);
    cr_assert_eq(n, sizeof b);
    cr_assert(memcmp(buf, b, n) == 0);
    cr_assert_eq(mproc_conn_poll(c, 0), 0);
  }
  /* Closed mid-frame: EOF for both kinds, and it stays. */
  raw_write(peer, wire, 50);
  mproc_conn_free(peer);
  size_t n;
  cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, sizeof buf, &n, 10), MPROC_EOF);
  void *m;
  cr_assert_eq(mproc_conn_recv(c, &m, &n, 0), MPROC_EOF);
  mproc_conn_free(c);
  mproc_listener_free(l);
  th_end(s);
}

/* 64 MiB and the small ones through an mproc echo client over TCP, into one buffer. */
Test(listener, recv_bytes_into_over_tcp, .timeout = 120) {
  th_scope s = th_begin();
  mproc_listener *l;
  cr_assert_eq(mproc_listener_new(&l, "tcp:127.0.0.1:0", KEY, KEYLEN, 0), 0);
  pid_t pid = echo_client(mproc_listener_address(l), KEY);
  mproc_conn *c;
  cr_assert_eq(mproc_listener_accept(l, &c, 10), 0);
  size_t cap = (size_t)64 << 20;
  unsigned char *buf = malloc(cap);
  cr_assert(buf);
  for (size_t i = 0; i < NSIZES; i++) {
    unsigned char *m = pattern(SIZES[i]);
    cr_assert_eq(mproc_conn_send(c, m, SIZES[i]), 0);
    size_t n = 1;
    cr_assert_eq(mproc_conn_recv_bytes_into(c, buf, cap, &n, 60), 0);
    cr_assert_eq(n, SIZES[i]);
    cr_assert(memcmp(buf, m, n) == 0, "message of %zu bytes differs", n);
    free(m);
  }
  free(buf);
  mproc_conn_free(c);
  cr_assert_eq(th_exitcode(pid), 0);
  mproc_listener_free(l);
  th_end(s);
}
