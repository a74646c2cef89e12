#!/usr/bin/env python3
"""Python twin of bench_first.c: first calls against later ones with multiprocessing, each
case in a fresh interpreter. Python's queue moves ~0.1 GB/s, so its burst is 300 messages
of 1 MiB instead of 10 000 (the figure is a rate)."""
import multiprocessing as mp, subprocess, sys, time


def report(case, value, unit):
    print(f"RESULT {case} python {value:.6g} {unit}", flush=True)


def square(v):
    return v * v


def echo(x):
    return x


def first_map():
    n = 1000000
    data = list(range(n))
    with mp.Pool(2) as p:
        t0 = time.perf_counter()
        out = p.map(square, data)
        report("first_map_1M_int64", n / (time.perf_counter() - t0), "items/s")
        assert out[-1] == (n - 1) ** 2


def producer(q, n, size):
    m = b"\x07" * size
    for _ in range(n):
        q.put(m)


def first_queue():
    n, size = 300, 1 << 20
    q = mp.Queue()
    pr = mp.Process(target=producer, args=(q, n, size))
    pr.start()
    t0 = time.perf_counter()
    for _ in range(n):
        assert len(q.get()) == size
    report("first_queue_10k_1MiB", n * size / (time.perf_counter() - t0) / 1e9, "GB/s")
    pr.join()


def first_imap():
    n = 100000
    with mp.Pool(2) as p:
        t0 = time.perf_counter()
        total = sum(p.imap_unordered(echo, range(n)))
        report("first_imap_unordered_100k", n / (time.perf_counter() - t0), "items/s")
        assert total == n * (n - 1) // 2


CASES = {"map": first_map, "queue": first_queue, "imap": first_imap}

if __name__ == "__main__":
    if len(sys.argv) > 1:
        CASES[sys.argv[1]]()
    else:
        for name in CASES:
            subprocess.run([sys.executable, __file__, name], check=False)
