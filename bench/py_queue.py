#!/usr/bin/env python3
"""Python twin of bench_queue.c: multiprocessing.Queue doing the same work, same case names."""
import multiprocessing as mp
import statistics
import sys
import time


def producer(q, go, n, size, start, step):
    buf = bytes(size)
    go.wait()
    for _ in range(start, n, step):
        q.put(buf)


def consumer(q, go, counter):
    go.wait()
    got = 0
    while True:
        m = q.get()
        if m is None:
            break
        got += 1
    with counter.get_lock():
        counter.value += got


def run_queue(np_, nc, n, size, maxsize=0):
    """np_ producers put n messages of size bytes in all; nc consumers get them."""
    q = mp.Queue(maxsize)
    go = mp.Event()
    counter = mp.Value("l", 0)
    prods = [mp.Process(target=producer, args=(q, go, n, size, p, np_)) for p in range(np_)]
    cons = [mp.Process(target=consumer, args=(q, go, counter)) for _ in range(nc)]
    for p in prods + cons:
        p.start()
    t0 = time.perf_counter()
    go.set()
    for p in prods:
        p.join()
    for _ in cons:
        q.put(None)
    for c in cons:
        c.join()
    dt = time.perf_counter() - t0
    assert counter.value == n
    return n / dt


def latency(sleeping, samples):
    q, back = mp.Queue(), mp.Queue()

    def child(q, back, samples, sleeping):
        for _ in range(samples):
            if sleeping:
                time.sleep(0.002)
            q.put(time.monotonic_ns())
            back.get()

    p = mp.Process(target=child, args=(q, back, samples, sleeping))
    p.start()
    lat = []
    for _ in range(samples):
        t = q.get()
        lat.append((time.monotonic_ns() - t) / 1000.0)
        back.put(b"")
    p.join()
    return statistics.median(lat)


def report(case, value, unit):
    print(f"RESULT {case} python {value:.6g} {unit}", flush=True)


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    mp.set_start_method("fork")
    if only in "queue_8B_1p1c":
        report("queue_8B_1p1c", max(run_queue(1, 1, 200000, 8) for _ in range(2)), "msgs/s")
    if only in "queue_8B_2p2c":
        report("queue_8B_2p2c", max(run_queue(2, 2, 200000, 8) for _ in range(2)), "msgs/s")
    if only in "queue_1MiB":
        report("queue_1MiB", max(run_queue(1, 1, 500, 1 << 20) for _ in range(2)) * (1 << 20) / 1e9,
               "GB/s")
    if only in "queue_latency_sleeping":
        report("queue_latency_sleeping", latency(True, 200), "us")
    if only in "queue_latency_spinning":
        report("queue_latency_spinning", latency(False, 2000), "us")


if __name__ == "__main__":
    main()
