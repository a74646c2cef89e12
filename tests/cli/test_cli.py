#!/usr/bin/env python3
"""The mproc tool's tests: a table of cases with exact stdout, exit status (and stderr or
joblog where they matter), then the cases a table cannot say (timeouts, retries, resume,
function mode, Ctrl-C, containment). Where GNU parallel is installed, every case marked
shared runs through it too and the two tools' stdout and status must be the same.

Usage: test_cli.py MPROC_EXE FNLIB_SO"""
import os, shutil, signal, subprocess, sys, tempfile, time

MPROC, FNLIB = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
PARALLEL = shutil.which("parallel")
ENV = dict(os.environ, SHELL="/bin/sh", LC_ALL="C")
FAILS = []


def run(argv, stdin=b"", timeout=60, cwd=None, env=None):
    p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=dict(ENV, **(env or {})), cwd=cwd)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def check(name, what, got, want):
    if got != want:
        FAILS.append(f"{name}: {what}: got {got!r:.400}, want {want!r:.400}")


# (name, args, stdin, stdout, status, stderr substring or None, shared with parallel)
Y = "".join(f"{i}\n" for i in range(1, 201))
CASES = [
    ("dry_run_replacements", ["-k", "--dry-run", "echo", "{}", "{.}", "{/}", "{//}", "{/.}", "{#}",
                              ":::", "/a/b.c", "d.e/f", "g", "a.", ".bashrc", "/", "a/"], "",
     "echo /a/b.c /a/b b.c /a b 1\necho d.e/f d.e/f f d.e f 2\necho g g g . g 3\n"
     "echo a. a a. . a 4\necho .bashrc '' .bashrc . '' 5\necho / / '' / '' 6\n"
     "echo a/ a/ '' . '' 7\n", 0, None, True),
    ("dry_run_quoting", ["-k", "--dry-run", "echo", ":::", "a b", "it's", "x$y", "p/q.r", "a=b", "",
                         "~x", "-x", "a+b", "{}"], "",
     "echo 'a b'\necho 'it'\"'\"'s'\necho 'x$y'\necho p/q.r\necho 'a=b'\necho ''\n"
     "echo '~x'\necho -x\necho a+b\necho '{}'\n", 0, None, True),
    ("quoted_input_is_one_word", ["-k", "printf '[%s]\\n'", ":::", "a b", "it's", "$HOME;x"], "",
     "[a b]\n[it's]\n[$HOME;x]\n", 0, None, True),
    ("product_of_groups", ["-k", "echo", ":::", "a", "b", ":::", "1", "2"], "",
     "a 1\na 2\nb 1\nb 2\n", 0, None, True),
    ("positional", ["-k", "echo", "{2}-{1.}", ":::", "x.c", "y.d", ":::", "1"], "",
     "1-x\n1-y\n", 0, None, True),
    ("stdin_lines", ["-k", "echo", "x{}y"], "l1\nl2 x\n\nl4\n",
     "xl1y\nxl2 xy\nxy\nxl4y\n", 0, None, True),
    ("arg_file_stdin", ["-k", "-a", "-", "echo"], "p\nq\n", "p\nq\n", 0, None, True),
    ("no_command_runs_inputs", ["-k", ":::", "echo one", "echo two"], "", "one\ntwo\n", 0,
     None, True),
    ("keep_order", ["-j3", "-k", "sleep 0.{}; echo {}", ":::", "3", "2", "1"], "",
     "3\n2\n1\n", 0, None, True),
    ("grouped_never_interleaved", ["-j2", "-k", "echo {}1; sleep 0.2; echo {}2", ":::", "a", "b"],
     "", "a1\na2\nb1\nb2\n", 0, None, True),
    ("tag", ["-k", "--tag", "echo hi", ":::", "a", "b", ":::", "1"], "",
     "a 1\thi a 1\nb 1\thi b 1\n", 0, None, True),
    ("line_buffer_tag", ["--line-buffer", "--tag", "echo a{}; echo b{}", ":::", "1"], "",
     "1\ta1\n1\tb1\n", 0, None, True),
    ("seq", ["-k", "-j1", "echo {#}:{}", ":::", "a", "b", "c"], "", "1:a\n2:b\n3:c\n", 0, None,
     True),
    ("failures_counted", ["-k", "echo {}; exit {}", ":::", "0", "1", "2"], "", "0\n1\n2\n", 2,
     None, True),
    ("failures_capped_101", ["-j4", "exit 1", ":::"] + [str(i) for i in range(105)], "", "",
     101, None, True),
    ("signal_is_failure", ["kill -9 $$", ":::", "1"], "", "", 1, None, True),
    ("halt_now_fail_1", ["-j1", "--halt", "now,fail=1", "echo {}; exit {}", ":::", "0", "3",
                         "0"], "", "0\n3\n", 3, "This job failed", True),
    ("halt_soon_fail_2", ["-j1", "--halt", "soon,fail=2", "echo {}; exit {}", ":::", "0", "3",
                          "4", "0"], "", "0\n3\n4\n", 2, None, True),
    ("big_output_exact", ["-k", "-j3", "seq 1 200; echo {}", ":::", "a", "b", "c"], "",
     Y + "a\n" + Y + "b\n" + Y + "c\n", 0, None, True),
    # Megabytes from each job at once, grouped whole and in order.
    ("megabytes_each_exact", ["-k", "-j2", "head -c 3000000 /dev/zero | tr '\\0' {}", ":::",
                              "a", "b", "c"], "", "a" * 3000000 + "b" * 3000000 + "c" * 3000000,
     0, None, True),
    ("stdout_and_stderr", ["-k", "echo out{}; echo err{} >&2", ":::", "1"], "", "out1\n", 0,
     "err1", True),
    ("job_stdin_is_dev_null", ["cat; echo done{}", ":::", "1"], "", "done1\n", 0, None, True),
    ("empty_input", ["echo"], "", "", 0, None, True),
    ("unknown_option", ["--frobnicate", "echo"], "", "", 255, "unknown option '--frobnicate'",
     False),
    ("missing_command", [], "", "", 255, "no command given", False),
    ("unreadable_file", ["-a", "/nonexistent/x", "echo"], "", "", 255,
     "cannot open input file '/nonexistent/x'", False),
    ("bad_jobs", ["-j", "many", "echo"], "", "", 255, "-j needs a number", False),
    ("bad_halt", ["--halt", "later", "echo", ":::", "a"], "", "", 255, "--halt takes", False),
    ("missing_value", ["--timeout"], "", "", 255, "option --timeout needs a value", False),
    ("option_words_after_command", ["echo", "--timeout", ":::", "x"], "", "--timeout x\n", 0,
     None, True),
    ("bad_library", ["--lib", "/nonexistent.so", "--fn", "f"], "", "", 255,
     "cannot load the library '/nonexistent.so'", False),
    ("bad_function", ["--lib", FNLIB, "--fn", "no_such_fn"], "", "", 255,
     "no function 'no_such_fn'", False),
    ("lib_without_fn", ["--lib", FNLIB], "", "", 255, "needs both --lib", False),
    ("fn_mode_rejects_joblog", ["--lib", FNLIB, "--fn", "upper", "--joblog", "x"], "", "", 255,
     "--joblog is for commands", False),
    ("function_mode", ["--lib", FNLIB, "--fn", "upper"], "ab\ncd\n\nef\n", "AB\nCD\n\nEF\n", 0,
     None, False),
    ("function_mode_groups_tag", ["--tag", "--lib", FNLIB, "--fn", "upper", ":::", "x", "y"],
     "", "x\tX\ny\tY\n", 0, None, False),
    ("function_crash_fails_alone", ["--lib", FNLIB, "--fn", "picky"], "a\ncrash\nb\nfail\nc\n",
     "A\nB\nC\n", 2, "line 2 failed (MPROC_ECRASHED)", False),
    ("help", ["--help"], "", None, 0, None, False),
    ("bar_only_on_a_terminal", ["--bar", "-k", "echo", ":::", "a"], "", "a\n", 0, None, False),
]


def table():
    for name, args, stdin, out, status, err, shared in CASES:
        rc, o, e = run([MPROC] + args, stdin.encode())
        if out is not None:
            check(name, "stdout", o, out)
        check(name, "status", rc, status)
        if err is not None and err not in e:
            FAILS.append(f"{name}: stderr {e!r} lacks {err!r}")
        if shared and PARALLEL:
            prc, po, _ = run([PARALLEL, "--will-cite"] + args, stdin.encode())
            check(name, "parallel's stdout vs mproc's", o, po)
            check(name, "parallel's status vs mproc's", rc, prc)


def read_joblog(path):
    lines = open(path).read().splitlines()
    check(path, "joblog header", lines[0],
          "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand")
    rows = []
    for l in lines[1:]:
        c = l.split("\t", 8)
        float(c[2]), float(c[3])
        if len(c[3]) != 10:
            FAILS.append(f"joblog JobRuntime not %10.3f: {c[3]!r}")
        rows.append((int(c[0]), c[1], c[4], int(c[5]), int(c[6]), int(c[7]), c[8]))
    return rows


def joblog_cases(d):
    for tool in [MPROC] + ([PARALLEL] if PARALLEL else []):
        extra = ["--will-cite"] if tool == PARALLEL else []
        jl = os.path.join(d, "jl")
        rc, o, _ = run([tool] + extra + ["-k", "--joblog", jl, "echo {}; exit {}", ":::", "0",
                                          "1", "2"])
        check("joblog " + tool, "status", rc, 2)
        rows = sorted(read_joblog(jl))
        check("joblog " + tool, "rows", rows,
              [(1, ":", "0", 2, 0, 0, "echo 0; exit 0"), (2, ":", "0", 2, 1, 0, "echo 1; exit 1"),
               (3, ":", "0", 2, 2, 0, "echo 2; exit 2")])
        # --resume: the seqs the log holds are skipped, whatever their status
        rc, o, _ = run([tool] + extra + ["-k", "--resume", "--joblog", jl, "echo {}; exit {}",
                                          ":::", "0", "1", "2", "0", "5"])
        check("resume " + tool, "stdout", o, "0\n5\n")
        check("resume " + tool, "status", rc, 1)
        rows = sorted(read_joblog(jl))
        check("resume " + tool, "seqs", [r[0] for r in rows], [1, 2, 3, 4, 5])
        check("resume " + tool, "new rows", [r[4:] for r in rows[3:]],
              [(0, 0, "echo 0; exit 0"), (5, 0, "echo 5; exit 5")])
        os.unlink(jl)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped by init counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def lingers(pid, limit=5.0):
    """Whether pid is still alive after limit seconds. A process SIGKILLed by the tool dies
    asynchronously (a grandchild is not the tool's to reap), so give it the moment it takes
    on a loaded machine; one that was never killed is still there at the end."""
    end = time.time() + limit
    while alive(pid):
        if time.time() > end:
            return True
        time.sleep(0.01)
    return False


def wait_files(paths, limit=20):
    end = time.time() + limit
    while time.time() < end:
        if all(os.path.exists(p) and open(p).read().strip() for p in paths):
            return [int(open(p).read()) for p in paths]
        time.sleep(0.02)
    FAILS.append(f"files never came: {paths}")
    return []


def timeout_case(d):
    jl, pf = os.path.join(d, "jl_t"), os.path.join(d, "sleep_pid")
    # the job ignores TERM and leaves a grandchild: the whole group is killed
    rc, o, e = run([MPROC, "--timeout", "0.5", "--joblog", jl,
                    f"trap '' TERM; sleep 30 & echo $! > {pf}; wait; echo never", ":::", "1"])
    check("timeout", "status", rc, 1)
    check("timeout", "stdout", o, "")
    if "killed because it timed out" not in e:
        FAILS.append(f"timeout: stderr {e!r}")
    rows = read_joblog(jl)
    check("timeout", "Exitval and Signal", [r[4:6] for r in rows], [(-1, 9)])
    pids = wait_files([pf], 2)
    if pids and lingers(pids[0]):
        FAILS.append("timeout: the job's grandchild lives on")


def retries_case(d):
    for tries, want_rc, want_runs in ((3, 0, 3), (2, 1, 2)):
        cnt, jl = os.path.join(d, f"cnt{tries}"), os.path.join(d, f"jl_r{tries}")
        cmd = f"echo try >> {cnt}; [ $(wc -l < {cnt}) -ge 3 ] && echo ok{{}}"
        rc, o, _ = run([MPROC, "--retries", str(tries), "--joblog", jl, cmd, ":::", "1"])
        check(f"retries {tries}", "status", rc, want_rc)
        check(f"retries {tries}", "stdout", o, "ok1\n" if want_rc == 0 else "")
        check(f"retries {tries}", "runs", len(open(cnt).read().splitlines()), want_runs)
        check(f"retries {tries}", "joblog Exitval", [r[4] for r in read_joblog(jl)],
              [0 if want_rc == 0 else 1])


def ctrl_c_case(d):
    pids = [os.path.join(d, f"pid{i}") for i in range(3)]
    cmd = f"sleep 60 & echo $! > {d}/pid{{}}; sleep 60; wait"
    p = subprocess.Popen([MPROC, "-j3", cmd, ":::", "0", "1", "2"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = wait_files(pids)
    shells = subprocess.run(["pgrep", "-P", str(p.pid)], stdout=subprocess.PIPE,
                            text=True).stdout.split()
    p.send_signal(signal.SIGINT)
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    p.communicate()
    check("ctrl-c", "status", rc, 130)
    for pid in got + [int(s) for s in shells]:
        if lingers(pid):
            FAILS.append(f"ctrl-c: process {pid} lives on")
            os.kill(pid, signal.SIGKILL)


def reader_gone_case(d):
    """mproc ... | head -1: the write that finds no reader stops the run like Ctrl-C."""
    cmd = f"echo {{}}; sleep 0.2; echo $$ > {d}/rg{{}}; echo again; sleep 60"
    sh = f"{MPROC} -k --line-buffer -j2 '{cmd}' ::: 1 2 3 | head -1; echo \"${{PIPESTATUS[0]}}\" >&2"
    p = subprocess.run(["bash", "-c", sh], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=30, env=ENV)
    check("reader gone", "stdout", p.stdout, "1\n")
    check("reader gone", "status", p.stderr.strip().splitlines()[-1], "141")
    for n in os.listdir(d):
        pid = open(os.path.join(d, n)).read().strip() if n.startswith("rg") else ""
        if pid and lingers(int(pid)):
            FAILS.append(f"reader gone: job {n} lives on")


def function_many_lines_case():
    lines = [f"w{i}" for i in range(20000)]
    lines[12345] = "crash"
    stdin = ("\n".join(lines) + "\n").encode()
    want = "".join(l.upper() + "\n" for l in lines if l != "crash")
    # the pool's workers load the library themselves: every start method works
    for extra, method in (([], "fork"), (["--unordered"], "fork"), ([], "spawn"),
                          ([], "forkserver")):
        rc, o, e = run([MPROC, "-j2", "--lib", FNLIB, "--fn", "picky"] + extra, stdin,
                       env={"MPROC_START_METHOD": method})
        name = f"function 20000 lines {method} " + " ".join(extra)
        check(name, "status", rc, 1)
        if extra:
            check(name, "stdout (sorted)", sorted(o.splitlines()), sorted(want.splitlines()))
        else:
            check(name, "stdout", o, want)
        if "line 12346 failed (MPROC_ECRASHED)" not in e:
            FAILS.append(f"{name}: stderr {e!r}")


def main():
    with tempfile.TemporaryDirectory() as d:
        table()
        joblog_cases(d)
        timeout_case(d)
        retries_case(d)
        ctrl_c_case(d)
        reader_gone_case(d)
        function_many_lines_case()
    for f in FAILS:
        print("FAIL", f)
    print(f"{len(CASES)} table cases (+ joblog, resume, timeout, retries, Ctrl-C, function "
          f"mode){' compared with GNU parallel' if PARALLEL else ''}: {len(FAILS)} failures")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
