#!/usr/bin/env python3
"""Python multiprocessing twin of bench/bench_sync.c: the same cases, impl "python".
   lock_uncontended    ns    one acquire + release, nobody else around
   lock_counter_2proc  ops/s two processes incrementing one shared counter under a Lock
   event_wake          us    Event set -> a waiter asleep in another process runs again
   sem_pingpong        us    round trip: release A / acquire B against a process doing the
                             reverse"""
import multiprocessing as mp
import statistics
import sys
import time

REPEATS = 5


def report(case, value, unit):
    print(f"RESULT {case} python {value:.6g} {unit}", flush=True)


def lock_uncontended():
    n = 500_000
    lock = mp.Lock()
    v = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        v.append((time.perf_counter() - t) / n * 1e9)
    report("lock_uncontended", statistics.median(v), "ns")


COUNT_N = 100_000


def count(lock, value, go):
    go.wait()
    for _ in range(COUNT_N):
        with lock:
            value.value += 1


def lock_counter_2proc():
    v = []
    for _ in range(REPEATS):
        lock, value, go = mp.Lock(), mp.RawValue("l", 0), mp.Event()
        p = mp.Process(target=count, args=(lock, value, go))
        p.start()
        t = time.perf_counter()
        go.set()
        count(lock, value, go)
        p.join()
        el = time.perf_counter() - t
        assert value.value == 2 * COUNT_N
        v.append(2 * COUNT_N / el)
    report("lock_counter_2proc", statistics.median(v), "ops/s")


WAKE_N = 500


def wake_child(go, ack, woke_at):
    for i in range(WAKE_N):
        go.wait()
        woke_at[i] = time.monotonic()
        go.clear()
        ack.set()


def event_wake():
    go, ack = mp.Event(), mp.Event()
    woke_at = mp.RawArray("d", WAKE_N)
    p = mp.Process(target=wake_child, args=(go, ack, woke_at))
    p.start()
    lat = []
    for i in range(WAKE_N):
        time.sleep(200e-6)  # the waiter is asleep by now
        t = time.monotonic()
        go.set()
        ack.wait()
        ack.clear()
        lat.append((woke_at[i] - t) * 1e6)
    p.join()
    report("event_wake", statistics.median(lat), "us")


PING_N = 5000


def ping_child(a, b):
    for _ in range(PING_N):
        a.acquire()
        b.release()


def sem_pingpong():
    v = []
    for _ in range(REPEATS):
        a, b = mp.Semaphore(0), mp.Semaphore(0)
        p = mp.Process(target=ping_child, args=(a, b))
        p.start()
        t = time.perf_counter()
        for _ in range(PING_N):
            a.release()
            b.acquire()
        el = time.perf_counter() - t
        p.join()
        v.append(el / PING_N * 1e6)
    report("sem_pingpong", statistics.median(v), "us")


def main():
    mp.set_start_method("fork")
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    for name, fn in [("lock_uncontended", lock_uncontended),
                     ("lock_counter_2proc", lock_counter_2proc),
                     ("event_wake", event_wake),
                     ("sem_pingpong", sem_pingpong)]:
        if not only or only in name:
            fn()


if __name__ == "__main__":
    main()
