#!/usr/bin/env python3
"""Python twin of bench_imap.c: imap / imap_unordered with multiprocessing.Pool (2 workers)."""
import multiprocessing as mp, statistics, time

WORKERS = 2


def report(case, value, unit):
    print(f"RESULT {case} python {value:.6g} {unit}", flush=True)


def echo(x):
    return x


def run(p, n, ordered, chunksize=None):
    v = []
    for _ in range(3):
        t0 = time.perf_counter()
        f = p.imap if ordered else p.imap_unordered
        it = f(echo, range(n)) if chunksize is None else f(echo, range(n), chunksize)
        s = sum(it)
        v.append(n / (time.perf_counter() - t0))
        assert s == n * (n - 1) // 2
    return statistics.median(v)


def main():
    mp.set_start_method("fork")
    with mp.Pool(WORKERS) as p:
        report("pool_imap_unordered_c1", run(p, 15000, False, 1), "items/s")
        report("pool_imap_ordered_c1", run(p, 15000, True, 1), "items/s")
        report("pool_imap_unordered_default", run(p, 15000, False), "items/s")
        report("pool_imap_unordered_c100", run(p, 500000, False, 100), "items/s")


if __name__ == "__main__":
    main()
