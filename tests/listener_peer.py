#!/usr/bin/env python3
"""The Python end of tests/test_listener.c: a real multiprocessing.connection peer.

Usage: listener_peer.py ROLE ADDRESS KEY [SIZES]
  ROLE     listen: a Listener at ADDRESS (port 0 / any), prints its address, accepts one;
           client: a Client of ADDRESS;
           listen312 / client312: the same without authkey, then Python 3.12's {DIGEST}
           handshake done by hand (3.11 has only the legacy one), DIGEST from $DIGEST
           (sha256 by default), answered and checked strictly in the new form.
  ADDRESS  mproc's form: unix:PATH, unix:@NAME, tcp:HOST:PORT, tcp:[HOST6]:PORT
  KEY      the authkey in hex, "-" for none
  SIZES    comma-separated sizes of the messages this end sends first (default none)
After the handshake it sends one message of each size (byte i = (i * 7 + size) % 251),
then echoes every message it receives until EOF. Exit codes: 0 done, 3 authentication
refused, 4 a protocol error.
"""
import hmac, os, sys
from multiprocessing import connection
from multiprocessing.connection import AuthenticationError

CHALLENGE, WELCOME, FAILURE = b"#CHALLENGE#", b"#WELCOME#", b"#FAILURE#"


def py_address(a):
    a = a.split("?")[0]
    if a.startswith("unix:@"):
        return "\0" + a[6:], "AF_UNIX"
    if a.startswith("unix:"):
        return a[5:], "AF_UNIX"
    host, port = a[4:].rsplit(":", 1)
    host = host.strip("[]")
    return (host, int(port)), "AF_INET6" if ":" in host else "AF_INET"


def mproc_address(addr, family):
    if family == "AF_UNIX":
        if isinstance(addr, bytes):  # an abstract name comes back as bytes
            addr = addr.decode()
        return "unix:@" + addr[1:] if addr.startswith("\0") else "unix:" + addr
    host, port = addr[0], addr[1]
    return "tcp:[%s]:%d" % (host, port) if family == "AF_INET6" else "tcp:%s:%d" % (host, port)


def pattern(n):
    return bytes((i * 7 + n) % 251 for i in range(251)) * (n // 251) + \
        bytes((i * 7 + n) % 251 for i in range(n % 251))


def deliver312(c, key, digest):
    msg = b"{%s}" % digest.encode() + os.urandom(40)
    c.send_bytes(CHALLENGE + msg)
    resp = c.recv_bytes(256)
    want = b"{%s}" % digest.encode() + hmac.new(key, msg, digest).digest()
    ok = hmac.compare_digest(resp, want)
    c.send_bytes(WELCOME if ok else FAILURE)
    if not ok:
        raise AuthenticationError("digest received was wrong: %r" % resp[:12])


def answer312(c, key):
    msg = c.recv_bytes(256)
    if not msg.startswith(CHALLENGE + b"{sha256}") or len(msg) != len(CHALLENGE) + 8 + 40:
        raise ValueError("not a {sha256} challenge: %r" % msg[:24])
    msg = msg[len(CHALLENGE):]
    c.send_bytes(b"{sha256}" + hmac.new(key, msg, "sha256").digest())
    if c.recv_bytes(256) != WELCOME:
        raise AuthenticationError("digest sent was rejected")


def main():
    role, address, key = sys.argv[1], sys.argv[2], sys.argv[3]
    sizes = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 and sys.argv[4] else []
    key = None if key == "-" else bytes.fromhex(key)
    addr, family = py_address(address)
    by_hand = role.endswith("312")
    auth = None if by_hand else key
    digest = os.environ.get("DIGEST", "sha256")
    try:
        if role.startswith("listen"):
            with connection.Listener(addr, family, authkey=auth) as l:
                print(mproc_address(l.address, family), flush=True)
                c = l.accept()
                if by_hand:
                    deliver312(c, key, digest)
                    answer312(c, key)
        else:
            c = connection.Client(addr, family, authkey=auth)
            if by_hand:
                answer312(c, key)
                deliver312(c, key, digest)
    except AuthenticationError as e:
        print("auth:", e, file=sys.stderr)
        return 3
    except (OSError, ValueError, EOFError) as e:
        print("protocol:", e, file=sys.stderr)
        return 4
    with c:
        for n in sizes:
            c.send_bytes(pattern(n))
        while True:
            try:
                m = c.recv_bytes()
            except EOFError:
                return 0
            c.send_bytes(m)


if __name__ == "__main__":
    sys.exit(main())
