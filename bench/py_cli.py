#!/usr/bin/env python3
"""The mproc tool beside GNU parallel and xargs -P, in the same run (bench/run.py prints
GNU parallel in the python column and xargs in the reference column for the cli_* cases).

  cli_true_5000_jobs_j2      jobs/s of 5000 jobs of `true`, -j 2
  cli_fn_1M_lines            lines/s of function mode over 10^6 lines (a short function), -j 2
  cli_print_100KiB_1000_k    MB/s of 1000 jobs each printing 100 KiB, -k (output checked exact
                             against GNU parallel's when it is installed)

The tool is MPROC_BUILD/mproc (default: build/), the function library
MPROC_BUILD/mproc_test_clilib.so (built with the tests)."""
import hashlib, os, shutil, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("MPROC_BUILD", os.path.join(HERE, "..", "build"))
MPROC = os.path.join(BUILD, "mproc")
FNLIB = os.path.join(BUILD, "mproc_test_clilib.so")
PARALLEL, XARGS = shutil.which("parallel"), shutil.which("xargs")
ENV = dict(os.environ, SHELL="/bin/sh")


def timed(argv, stdin):
    t0 = time.perf_counter()
    p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       env=ENV)
    return time.perf_counter() - t0, p.returncode, p.stdout


def best(argv, stdin, runs):
    out, times = None, []
    for _ in range(runs):
        dt, rc, out = timed(argv, stdin)
        if rc != 0:
            print(f"{argv[0]} exited {rc}", file=sys.stderr)
            return None, out
        times.append(dt)
    return min(times), out


def result(case, impl, value, unit):
    print(f"RESULT {case} {impl} {value:.6g} {unit}", flush=True)


def main():
    if not os.path.exists(MPROC):
        print(f"no {MPROC}: build first", file=sys.stderr)
        return
    n = 5000
    lines = "".join(f"{i}\n" for i in range(n)).encode()
    impls = {"mproc": [MPROC, "-j2", "true"]}
    if PARALLEL:
        impls["python"] = [PARALLEL, "--will-cite", "-j2", "true"]
    if XARGS:
        impls["xargs"] = [XARGS, "-P2", "-n1", "true"]
    for impl, argv in impls.items():
        dt, _ = best(argv, lines, 1 if impl == "python" else 3)
        if dt:
            result("cli_true_5000_jobs_j2", impl, n / dt, "jobs/s")

    if os.path.exists(FNLIB):
        m = 1000000
        lines = "".join(f"line {i}\n" for i in range(m)).encode()
        dt, out = best([MPROC, "-j2", "--lib", FNLIB, "--fn", "length"], lines, 3)
        if dt and len(out) == m:
            result("cli_fn_1M_lines", "mproc", m / dt, "lines/s")

    jobs, size = 1000, 100 * 1024
    cmd = f"yes {{}} | head -c {size}"
    inputs = "".join(f"{i}\n" for i in range(jobs)).encode()
    impls = {"mproc": [MPROC, "-j2", "-k", cmd]}
    if PARALLEL:
        impls["python"] = [PARALLEL, "--will-cite", "-j2", "-k", cmd]
    if XARGS:  # no order to keep: the reference for raw speed only
        impls["xargs"] = [XARGS, "-P2", "-I{}", "sh", "-c", cmd]
    digests = {}
    for impl, argv in impls.items():
        dt, out = best(argv, inputs, 1 if impl == "python" else 3)
        if dt and len(out) == jobs * size:
            digests[impl] = hashlib.sha256(out).hexdigest()
            result("cli_print_100KiB_1000_k", impl, jobs * size / dt / 1e6, "MB/s")
        else:
            print(f"cli_print_100KiB_1000_k: {impl} wrote {len(out or b'')} bytes", file=sys.stderr)
    if "python" in digests and digests["python"] != digests.get("mproc"):
        print("cli_print_100KiB_1000_k: mproc's output differs from GNU parallel's",
              file=sys.stderr)


if __name__ == "__main__":
    main()
