#!/usr/bin/env python3
"""Checks that src/ keeps the layering docs/architecture.md describes.

Usage: check_layers.py SOURCE_DIR OBJECT_DIR
  SOURCE_DIR  the project's root (docs/architecture.md, src/)
  OBJECT_DIR  where the library's objects were built (CMake's mproc_objects.dir)

Reads the layer table of docs/architecture.md (layer, files, may use) and its list of known
exceptions, then finds which src/ file uses which: calls and data from the objects' symbol
tables (nm: what a file defines, what it needs), and #include "..." lines. It fails on
  - a file under src/ that no layer claims,
  - a use of a layer the user's layer may not use (upwards, or sideways unlisted),
  - a circle of calls between files (within a layer too),
  - an exception listed that no longer happens (so the list cannot go stale).
"""
import fnmatch, os, re, subprocess, sys


def read_architecture(path):
    layers, exceptions = [], set()
    section = None
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            section = line.strip("# \n").lower()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section == "layers" and line.startswith("|") and len(cells) >= 3:
            if cells[0] in ("layer", "") or set(cells[0]) <= set("-: "):
                continue
            files = re.findall(r"`([^`]+)`", cells[1])
            uses = re.findall(r"`([^`]+)`", cells[2])
            layers.append((cells[0].strip("`* "), files, set(uses)))
        if section == "known exceptions" and line.lstrip().startswith("-"):
            m = re.search(r"`([^`]+)`\s*->\s*`([^`]+)`", line)
            if m:
                exceptions.add((m.group(1), m.group(2)))
    return layers, exceptions


def layer_of(rel, layers):
    for name, pats, _ in layers:
        if any(fnmatch.fnmatch(rel, p) for p in pats):
            return name
    return None


def symbols(obj):
    out = subprocess.run(["nm", "--defined-only", obj], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    defined = {l.split()[-1] for l in out.splitlines() if l.split()[-2:-1] and
               l.split()[-2] in "TDBRC"}
    out = subprocess.run(["nm", "--undefined-only", obj], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    needed = {l.split()[-1] for l in out.splitlines() if l.strip()}
    return defined, needed


def find_cycle(graph):
    """Returns one circle of the graph as a list of nodes, or None."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def check_tools(root, objdir, layers):
    """tools/ (the command-line tool) stands on the public API alone: every file is claimed
    by a row, includes only mproc.h and tools/ headers, and its object needs no mproc__
    internal (its objects are CMake's mproc_cli.dir, beside mproc_objects.dir)."""
    errors = []
    tdir = os.path.join(root, "tools")
    if not os.path.isdir(tdir):
        return errors
    tobj = os.path.join(os.path.dirname(objdir.rstrip("/")), "mproc_cli.dir")
    for n in sorted(os.listdir(tdir)):
        if not n.endswith((".c", ".h")):
            continue
        rel = os.path.join("tools", n)
        if layer_of(rel, layers) is None:
            errors.append(f"{rel}: no layer in docs/architecture.md claims it")
        for line in open(os.path.join(root, rel), encoding="utf-8"):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m and m.group(1) != "mproc.h" and not os.path.exists(os.path.join(tdir, m.group(1))):
                errors.append(f"{rel} includes {m.group(1)}: tools/ may use only mproc.h")
        obj = os.path.join(tobj, rel + ".o")
        if n.endswith(".c") and os.path.exists(obj):
            _, needed = symbols(obj)
            for s in sorted(x for x in needed if x.startswith("mproc__")):
                errors.append(f"{rel} calls {s}: tools/ may use only the public API")
    return errors


def main():
    root, objdir = sys.argv[1], sys.argv[2]
    layers, exceptions = read_architecture(os.path.join(root, "docs", "architecture.md"))
    if not layers:
        print("docs/architecture.md: no layer table found")
        return 1
    allowed = {name: uses for name, _, uses in layers}
    errors = []
    files = []
    for d, _, names in os.walk(os.path.join(root, "src")):
        for n in names:
            if n.endswith((".c", ".h")):
                files.append(os.path.relpath(os.path.join(d, n), root))
    files.sort()
    owner = {}
    for rel in files:
        owner[rel] = layer_of(rel, layers)
        if owner[rel] is None:
            errors.append(f"{rel}: no layer in docs/architecture.md claims it")

    uses = {}  # (file, file) -> why
    defs, needs = {}, {}
    # libmproc_mpi's objects (src/mpi/) are its own target's, beside the core's; without an
    # MPI it is not built, and its files are checked by their includes only.
    mpidir = os.path.join(os.path.dirname(objdir.rstrip("/")), "mproc_mpi.dir")
    for rel in files:
        if rel.endswith(".c"):
            obj = os.path.join(objdir, rel + ".o")
            if rel.startswith("src/mpi/"):
                obj = os.path.join(mpidir, rel + ".o")
                if not os.path.isdir(mpidir):
                    continue
            if not os.path.exists(obj):
                errors.append(f"{rel}: no object {obj} (build first)")
                continue
            d, n = symbols(obj)
            needs[rel] = n
            for s in d:
                defs[s] = rel
    calls = {}
    for rel, n in needs.items():
        for s in sorted(n):
            to = defs.get(s)
            if to and to != rel:
                calls.setdefault(rel, set()).add(to)
                uses.setdefault((rel, to), f"calls {s}")
    for rel in files:
        for line in open(os.path.join(root, rel), encoding="utf-8"):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m and m.group(1) != "mproc.h":
                inc = os.path.join("src", m.group(1))
                if inc in owner and inc != rel:
                    uses.setdefault((rel, inc), f"includes {m.group(1)}")

    seen_exceptions = set()
    for (a, b), why in sorted(uses.items()):
        la, lb = owner.get(a), owner.get(b)
        if not la or not lb or la == lb:
            continue
        if lb not in allowed[la]:
            if (a, b) in exceptions:
                seen_exceptions.add((a, b))
                continue
            errors.append(f"{a} ({la}) {why} of {b} ({lb}): layer {la} may use only "
                          f"{', '.join(sorted(allowed[la])) or 'nothing'}")
    graph = {a: {b for b in bs if (a, b) not in exceptions} for a, bs in calls.items()}
    for a, bs in calls.items():
        seen_exceptions |= {(a, b) for b in bs if (a, b) in exceptions}
    cycle = find_cycle(graph)
    if cycle:
        errors.append("a call circle: " + " -> ".join(cycle))
    for a, b in sorted(exceptions - seen_exceptions):
        errors.append(f"known exception {a} -> {b} no longer happens: take it out of "
                      "docs/architecture.md")

    errors += check_tools(root, objdir, layers)
    for e in errors:
        print("layers:", e)
    nfiles = len(files)
    print(f"layers: {nfiles} files, {len(layers)} layers, {len(calls)} calling files, "
          f"{len(exceptions)} known exceptions: {'FAILED' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
