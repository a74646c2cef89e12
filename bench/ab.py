#!/usr/bin/env python3
"""Compares two builds' C benchmarks in one sitting: runs each bench_* of build A and of
build B alternately (A B A B ...), ROUNDS times, so that a noisy machine weighs on both
alike, and prints per case the median of each and B's ratio to A (>1: B is better).
Usage: ab.py A_BENCH_DIR B_BENCH_DIR [rounds=3] [filter]"""
import collections, glob, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import LOWER_IS_BETTER, collect  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    a_dir, b_dir = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    filt = sys.argv[4] if len(sys.argv) > 4 else ""
    figs = collections.OrderedDict()  # case -> {"A": [...], "B": [...], "unit": u}
    for exe in sorted(glob.glob(os.path.join(a_dir, "bench_*"))):
        name = os.path.basename(exe)
        if filt and filt not in name:
            continue
        for _ in range(rounds):
            for side, d in (("A", a_dir), ("B", b_dir)):
                for case, impl, val, unit in collect([os.path.join(d, name)]):
                    if impl != "mproc":
                        continue
                    f = figs.setdefault(case, {"A": [], "B": [], "unit": unit})
                    f[side].append(val)
    print(f"{'case':38} {'A (median)':>16} {'B (median)':>16} {'B vs A':>8}   runs")
    for case, f in figs.items():
        if not f["A"] or not f["B"]:
            continue
        a, b, u = statistics.median(f["A"]), statistics.median(f["B"]), f["unit"]
        r = a / b if u in LOWER_IS_BETTER else b / a
        print(f"{case:38} {a:>11.4g} {u:<4} {b:>11.4g} {u:<4} {r:>7.2f}x   {len(f['A'])}+{len(f['B'])}")


if __name__ == "__main__":
    main()
