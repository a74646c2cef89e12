#!/usr/bin/env python3
"""Twin of bench_start.c: multiprocessing's three start methods. Process start -> join, Pool
(2 workers) start -> first result, the same with a touched heap in the caller (a bytearray of
MPROC_BENCH_HEAP_MIB MiB, default 4096, one byte written in every page), and apply_async
throughput on a spawn pool and a fork pool. The forkserver is started (and __main__
preloaded in it, Python's default) once before any timing. Methods are interleaved round by
round, so the VM's drift weighs on all alike. Usage: py_start.py [substring of a case name]"""
import multiprocessing as mp
import multiprocessing.forkserver
import os
import statistics
import sys
import time

WORKERS = 2
METHODS = ("fork", "forkserver", "spawn")


def report(what, method, value, unit, impl="python"):
    print(f"RESULT start_{what}_{method} {impl} {value:.6g} {unit}", flush=True)


def noop():
    pass


def tiny(x):
    return x


def process_join_once(ctx):
    t0 = time.perf_counter()
    p = ctx.Process(target=noop)
    p.start()
    p.join()
    t = time.perf_counter() - t0
    if p.exitcode != 0:
        sys.exit(f"process ({ctx.get_start_method()}) exited {p.exitcode}")
    return t


def pool_first_result_once(ctx):
    t0 = time.perf_counter()
    with ctx.Pool(WORKERS) as p:
        if p.apply(tiny, (42,)) != 42:
            sys.exit("wrong result")
        t = time.perf_counter() - t0
    return t


def rounds(fn, ctxs, r):
    t = {m: [] for m in METHODS}
    for _ in range(r):
        for m in METHODS:
            t[m].append(fn(ctxs[m]))
    return t


def apply_async_rate(p, n):
    t0 = time.perf_counter()
    rs = [p.apply_async(tiny, (7,)) for _ in range(n)]
    for r in rs:
        r.wait()
    return n / (time.perf_counter() - t0)


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    want = lambda name: only in name
    ctxs = {m: mp.get_context(m) for m in METHODS}
    multiprocessing.forkserver.ensure_running()

    if want("start_process_join"):
        t = rounds(process_join_once, ctxs, 20)
        for m in METHODS:
            report("process_join", m, statistics.median(t[m]) * 1e6, "us")

    noheap = {m: [] for m in METHODS}
    if want("start_pool_first_result") or want("start_pool_heap"):
        noheap = rounds(pool_first_result_once, ctxs, 8)
        for m in METHODS:
            report("pool_first_result", m, statistics.median(noheap[m]) * 1e3, "ms")

    if want("start_apply_async"):
        n = 20000
        pools = {m: ctxs[m].Pool(WORKERS) for m in ("fork", "spawn")}
        rates = {m: [] for m in pools}
        for m, p in pools.items():
            apply_async_rate(p, n // 10)  # warm
        for _ in range(3):
            for m, p in pools.items():
                rates[m].append(apply_async_rate(p, n))
        for m, p in pools.items():
            report("apply_async", m, statistics.median(rates[m]), "tasks/s")
            p.terminate()
            p.join()

    if want("start_pool_heap"):
        mib = int(os.environ.get("MPROC_BENCH_HEAP_MIB") or 4096)
        what = "pool_heap4g" if mib == 4096 else f"pool_heap{mib}m"
        n = mib << 20
        t0 = time.perf_counter()
        heap = bytearray(n)
        heap[::4096] = b"\x01" * len(range(0, n, 4096))
        print(f"py_start: touched a {mib} MiB heap in {time.perf_counter() - t0:.2f} s",
              file=sys.stderr)
        t = rounds(pool_first_result_once, ctxs, 3)
        del heap
        after = rounds(pool_first_result_once, ctxs, 8)
        for m in METHODS:
            report(what, m, statistics.median(t[m]) * 1e3, "ms")
            # Python's own figure without the heap (before and after), for the docs
            report(what, m, statistics.median(noheap[m] + after[m]) * 1e3, "ms",
                   "python_noheap")


if __name__ == "__main__":
    main()
