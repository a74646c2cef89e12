#!/usr/bin/env python3
"""Twin of bench_manager.c: Manager().dict() set + get round trip, and 4 processes doing
d[k] += 1 on keys of their own (the closest Python has to add_i64; racy on a shared key)."""
import multiprocessing as mp
import statistics
import time

PAIRS = 5000
CLIENTS = 4
OPS = 2000
RUNS = 3


def set_get():
    with mp.Manager() as m:
        d = m.dict()
        t = time.perf_counter()
        for _ in range(PAIRS):
            d["key"] = b"value"
            d["key"]
        t = time.perf_counter() - t
    return t / PAIRS * 1e6


def worker(d, k):
    d[k] = 0
    for _ in range(OPS):
        d[k] += 1


def four_clients():
    with mp.Manager() as m:
        d = m.dict()
        ps = [mp.Process(target=worker, args=(d, chr(97 + c))) for c in range(CLIENTS)]
        t = time.perf_counter()
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        t = time.perf_counter() - t
    return CLIENTS * OPS * 2 / t  # each += is a get and a set


def main():
    mp.set_start_method("fork")
    v = statistics.median(set_get() for _ in range(RUNS))
    print(f"RESULT manager_dict_set_get_1client python {v:.6g} us", flush=True)
    v = statistics.median(four_clients() for _ in range(RUNS))
    print(f"RESULT manager_dict_ops_4clients python {v:.6g} ops/s", flush=True)


if __name__ == "__main__":
    main()
