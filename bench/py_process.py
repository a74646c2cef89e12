#!/usr/bin/env python3
"""Twin of bench_process.c: multiprocessing.Process start+join (fork start method)."""
import multiprocessing as mp
import statistics
import time

REPS = 100
RUNS = 5


def noop():
    pass


def start_join():
    t = time.perf_counter()
    for _ in range(REPS):
        p = mp.Process(target=noop)
        p.start()
        p.join()
    return (time.perf_counter() - t) / REPS * 1e6


def main():
    mp.set_start_method("fork")
    v = statistics.median(start_join() for _ in range(RUNS))
    print(f"RESULT process_start_join python {v:.6g} us", flush=True)


if __name__ == "__main__":
    main()
