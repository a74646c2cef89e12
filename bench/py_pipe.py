#!/usr/bin/env python3
"""Twin of bench_pipe.c: multiprocessing.Pipe round trips of 8 bytes and 1 MiB one way."""
import multiprocessing as mp
import statistics
import time

ROUNDS = 20000
RUNS = 5
MIB = 1 << 20
BIG_MSGS = 1000


def echo(conn, other):
    other.close()
    try:
        while True:
            conn.send_bytes(conn.recv_bytes())
    except EOFError:
        pass


def roundtrip():
    a, b = mp.Pipe(duplex=True)
    p = mp.Process(target=echo, args=(b, a))
    p.start()
    b.close()
    msg = b"ping!!!\0"
    t = time.perf_counter()
    for _ in range(ROUNDS):
        a.send_bytes(msg)
        a.recv_bytes()
    t = time.perf_counter() - t
    a.close()
    p.join()
    return t / ROUNDS * 1e6


def sender(w, r):
    r.close()
    buf = bytes(MIB)
    for _ in range(BIG_MSGS):
        w.send_bytes(buf)


def oneway():
    r, w = mp.Pipe(duplex=False)
    p = mp.Process(target=sender, args=(w, r))
    p.start()
    w.close()
    t = time.perf_counter()
    for _ in range(BIG_MSGS):
        r.recv_bytes()
    t = time.perf_counter() - t
    r.close()
    p.join()
    return BIG_MSGS * MIB / t / 1e9


def main():
    mp.set_start_method("fork")
    rt = statistics.median(roundtrip() for _ in range(RUNS))
    print(f"RESULT pipe_roundtrip_8B python {rt:.6g} us", flush=True)
    bw = statistics.median(oneway() for _ in range(RUNS))
    print(f"RESULT pipe_1MiB_oneway python {bw:.6g} GB/s", flush=True)


if __name__ == "__main__":
    main()
