#!/usr/bin/env python3
"""Python twin of bench_pool.c: the same work with multiprocessing.Pool (2 workers)."""
import math, multiprocessing as mp, statistics, time

WORKERS = 2
BIG = 1 << 20


def report(case, value, unit):
    print(f"RESULT {case} python {value:.6g} {unit}", flush=True)


def tiny(x):
    return x


def square(v):
    return v * v


def copy_mib(b):
    return bytes(b)


def burn(x):
    acc = 0.0
    for i in range(40000):
        acc += math.sqrt(x + i) * 1.0000001
    return acc


def start_first_result():
    t = []
    for _ in range(10):
        t0 = time.perf_counter()
        with mp.Pool(WORKERS) as p:
            p.apply(tiny, (42,))
            t.append(time.perf_counter() - t0)
    report("pool_start_first_result", statistics.median(t) * 1e3, "ms")


def main():
    mp.set_start_method("fork")
    start_first_result()
    with mp.Pool(WORKERS) as p:
        n = 1_000_000
        data = list(range(n))
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            p.map(square, data)
            t.append(time.perf_counter() - t0)
        report("pool_map_1M_int64", n / statistics.median(t), "items/s")

        n = 100_000
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            rs = [p.apply_async(tiny, (7,)) for _ in range(n)]
            for r in rs:
                r.wait()
            rates.append(n / (time.perf_counter() - t0))
        report("pool_apply_async_throughput", statistics.median(rates), "tasks/s")

        t = []
        for _ in range(2000):
            t0 = time.perf_counter()
            p.apply_async(tiny, (7,)).get()
            t.append(time.perf_counter() - t0)
        report("pool_apply_roundtrip", statistics.median(t) * 1e6, "us")

        blobs = [bytes([1]) * BIG for _ in range(256)]
        t = []
        for _ in range(3):
            t0 = time.perf_counter()
            p.map(copy_mib, blobs)
            t.append(time.perf_counter() - t0)
        report("pool_map_256x1MiB", 256 * BIG / statistics.median(t) / 1e9, "GB/s")

        n = 200  # Python's loop is ~50x slower than C's: fewer elements, same per-element shape
        xs = [float(i) for i in range(n)]
        t0 = time.perf_counter()
        [burn(x) for x in xs]
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        p.map(burn, xs)
        report("pool_cpu_speedup_2", serial / (time.perf_counter() - t0), "x")


if __name__ == "__main__":
    main()
