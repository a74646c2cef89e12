#!/usr/bin/env python3
"""Twin of bench_listener.c: multiprocessing.connection Listener/Client with an authkey."""
import os
import statistics
import time
from multiprocessing import connection

ROUNDS = 20000
CONNECTS = 500
RUNS = 5
RT_RUNS = 15  # as bench_listener.c: the round trip swings with the shared VM's state
BIG = 64 << 20
BIG_MSGS = 16
KEY = b"bench key"


def child(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def roundtrip():
    with connection.Listener(family="AF_UNIX", authkey=KEY) as l:
        def echo():
            with connection.Client(l.address, authkey=KEY) as c:
                try:
                    while True:
                        c.send_bytes(c.recv_bytes())
                except EOFError:
                    pass
        pid = child(echo)
        c = l.accept()
        t = time.perf_counter()
        for _ in range(ROUNDS):
            c.send_bytes(b"ping!!!\0")
            c.recv_bytes()
        t = time.perf_counter() - t
        c.close()
        os.waitpid(pid, 0)
    return t / ROUNDS * 1e6


def connect():
    with connection.Listener(family="AF_UNIX", authkey=KEY) as l:
        def acceptor():
            for _ in range(CONNECTS):
                l.accept().close()
        pid = child(acceptor)
        t = time.perf_counter()
        for _ in range(CONNECTS):
            connection.Client(l.address, authkey=KEY).close()
        t = time.perf_counter() - t
        os.waitpid(pid, 0)
    return t / CONNECTS * 1e6


def tcp_big(into=False):
    with connection.Listener(("127.0.0.1", 0), authkey=KEY) as l:
        def sender():
            buf = bytes(BIG)
            with connection.Client(l.address, authkey=KEY) as c:
                for _ in range(BIG_MSGS):
                    c.send_bytes(buf)
        pid = child(sender)
        c = l.accept()
        buf = bytearray(BIG) if into else None
        t = time.perf_counter()
        for _ in range(BIG_MSGS):
            if into:
                c.recv_bytes_into(buf)
            else:
                c.recv_bytes()
        t = time.perf_counter() - t
        c.close()
        os.waitpid(pid, 0)
    return BIG_MSGS * BIG / t / 1e9


def main():
    for name, fn, unit, runs in (("listener_roundtrip_8B_unix", roundtrip, "us", RT_RUNS),
                                 ("listener_connect_handshake_unix", connect, "us", RUNS),
                                 ("listener_64MiB_tcp_oneway", tcp_big, "GB/s", RUNS),
                                 ("listener_64MiB_tcp_oneway_into", lambda: tcp_big(True),
                                  "GB/s", RUNS)):
        v = statistics.median(fn() for _ in range(runs))
        print(f"RESULT {name} python {v:.6g} {unit}", flush=True)


if __name__ == "__main__":
    main()
