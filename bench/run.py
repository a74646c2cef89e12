#!/usr/bin/env python3
"""Runs every C benchmark (build/bench/bench_*) and every Python twin (bench/py_*.py), then
the cold cases (whole programs, each run a fresh process, timed from here), and prints one
line per case: mproc's figure, Python multiprocessing's and a reference beside it (raw C,
OpenMP, an empty C program, for the first_* cases the same call warm, for the start_* cases
the fork figure or the figure without the heap; for the cli_* cases of py_cli.py the python
column is GNU parallel and the reference xargs -P), with ratios (>1 means mproc is better). Usage: run.py BUILD_BENCH_DIR [filter]"""
import collections, glob, os, statistics, subprocess, sys, time

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


# Cold cases: (case, runs, {impl: argv}); "{b}" is the bench build folder. Each round runs
# every impl once, so a machine whose speed drifts weighs on all alike.
def cold_cases(b):
    py = [sys.executable, os.path.join(HERE, "prog_py.py")]
    m, omp = os.path.join(b, "prog_mproc"), os.path.join(b, "prog_omp")
    return [
        ("cold_program_pool_apply", 15,
         {"mproc": [m, "apply"], "python": py + ["apply"], "raw": [m, "empty"]}),
        ("cold_program_pool_map_1M", 11,
         {"mproc": [m, "map", "1000000"], "python": py + ["map", "1000000"],
          "openmp": [omp, "map", "1000000"]}),
        ("cold_program_pool_map_10M", 5,
         {"mproc": [m, "map", "10000000"], "python": py + ["map", "10000000"],
          "openmp": [omp, "map", "10000000"]}),
    ]


def run_cold(bdir, filt, results):
    for case, runs, impls in cold_cases(bdir):
        if filt and filt not in case:
            continue
        if not all(os.path.exists(a[0]) for a in impls.values()):
            continue
        times = collections.defaultdict(list)
        for r in range(runs + 1):  # the first round warms the file cache only
            for impl, argv in impls.items():
                if impl == "python" and "10000000" in argv and r > 2:
                    continue  # 7 s a run: two timed runs are enough
                t0 = time.perf_counter()
                rc = subprocess.run(argv, stdout=subprocess.DEVNULL).returncode
                dt = time.perf_counter() - t0
                if rc != 0:
                    print(f"{case}: {impl} exited {rc}", file=sys.stderr)
                elif r > 0:
                    times[impl].append(dt * 1e3)
        for impl, v in times.items():
            results.setdefault(case, {})[impl] = (statistics.median(v), "ms")


# The "mpi" family (run.py BUILD_BENCH_DIR mpi): the Pool over MPI on this machine under
# mpirun -n 3, beside mpi4py.futures' MPIPoolExecutor in the same launch shape (a Python
# that has mpi4py: Debian's python3-mpi4py is /usr/bin/python3's), and the CPU-bound map's
# reference on one local pool of as many workers (made by mpi_bench itself, in the same launch).
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader",
          "-n", "3"]


def run_mpi(bdir, filt, results):
    exe = os.path.join(bdir, "mpi_bench")
    if (filt and not "mpi_bench".startswith(filt) and not filt.startswith("mpi")) \
            or not os.path.exists(exe):
        return
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    py = next((p for p in (sys.executable, "/usr/bin/python3")
               if subprocess.run([p, "-c", "import mpi4py.futures"],
                                 stderr=subprocess.DEVNULL).returncode == 0), None)
    cmds = [MPIRUN + [exe], MPIRUN[:-1] + ["2", exe, "rank0"]]
    if py:
        cmds.append(MPIRUN + [py, "-m", "mpi4py.futures", os.path.join(HERE, "mpi4py_bench.py")])
    for cmd in cmds:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=900).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] == "RESULT":
                results.setdefault(parts[1], {})[parts[2]] = (float(parts[3]), parts[4])


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
    run_cold(bdir, filt, results)
    run_mpi(bdir, filt, results)
    hdr = f"{'case':38} {'mproc':>14} {'python':>14} {'vs py':>8} {'raw/omp':>14} {'vs raw':>8}"
    print(hdr)
    print("-" * len(hdr))
    for case, impls in results.items():
        if "mproc" not in impls:
            continue
        val, unit = impls["mproc"]
        py = impls.get("python", (None, unit))[0]
        # start_* cases: a forkserver or spawn row's reference is the fork figure, a heap
        # row's the same method without the heap; pool_client_* rows' the pool's owner; limits_*
        # rows' the same pool without limits and sandbox; the cli rows' xargs -P.
        ref_impl = next((i for i in ("raw", "openmp", "warm", "fork", "noheap", "owner", "off", "xargs",
                                                "local")
                         if i in impls),
                        None)
        ref = impls[ref_impl][0] if ref_impl else None
        fmt = lambda v: "-" if v is None else f"{v:.4g} {unit}"
        print(f"{case:38} {fmt(val):>14} {fmt(py):>14} {ratio(val, py, unit):>8} "
              f"{fmt(ref):>14} {ratio(val, ref, unit):>8}")


if __name__ == "__main__":
    main()
