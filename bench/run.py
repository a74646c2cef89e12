#!/usr/bin/env python3
"""Runs every C benchmark (build/bench/bench_*) and every Python twin (bench/py_*.py), then
prints one line per case: mproc's figure, Python multiprocessing's and the raw C reference
beside it, with ratios (>1 means mproc is better). Usage: run.py BUILD_BENCH_DIR [filter]"""
import collections, glob, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
LOWER_IS_BETTER = {"ns", "us", "ms", "s"}


def collect(cmd):
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=900).stdout
    except subprocess.TimeoutExpired:
        print("timed out:", " ".join(cmd), file=sys.stderr)
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "RESULT":
            rows.append((parts[1], parts[2], float(parts[3]), parts[4]))
    return rows


def ratio(mine, other, unit):
    if not mine or not other:
        return "-"
    r = other / mine if unit in LOWER_IS_BETTER else mine / other
    return f"{r:.2f}x"


def main():
    bdir = sys.argv[1] if len(sys.argv) > 1 else "build/bench"
    filt = sys.argv[2] if len(sys.argv) > 2 else ""
    results = collections.OrderedDict()
    for exe in sorted(glob.glob(os.path.join(bdir, "bench_*"))):
        if filt and filt not in exe:
            continue
        for case, impl, val, unit in collect([exe]):
            results.setdefault(case, {})[impl] = (val, unit)
    for py in sorted(glob.glob(os.path.join(HERE, "py_*.py"))):
        if filt and filt not in py:
            continue
        for case, impl, val, unit in collect([sys.executable, py]):
            results.setdefault(case, {})[impl] = (val, unit)
    hdr = f"{'case':38} {'mproc':>14} {'python':>14} {'vs py':>8} {'raw/omp':>14} {'vs raw':>8}"
    print(hdr)
    print("-" * len(hdr))
    for case, impls in results.items():
        if "mproc" not in impls:
            continue
        val, unit = impls["mproc"]
        py = impls.get("python", (None, unit))[0]
        ref_impl = "raw" if "raw" in impls else ("openmp" if "openmp" in impls else None)
        ref = impls[ref_impl][0] if ref_impl else None
        fmt = lambda v: "-" if v is None else f"{v:.4g} {unit}"
        print(f"{case:38} {fmt(val):>14} {fmt(py):>14} {ratio(val, py, unit):>8} "
              f"{fmt(ref):>14} {ratio(val, ref, unit):>8}")


if __name__ == "__main__":
    main()
