#!/usr/bin/env python3
"""The multiprocessing twin of bench/prog_mproc.c, a whole program per run:
  prog_py.py empty | apply | map N
(apply: a Pool(2), one apply, exit; map: a Pool(2), one map of N ints (squares), checked).
Exit status 0 only when the result is right."""
import sys


def echo(x):
    return x


def square(x):
    return x * x


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "empty"
    if mode == "empty":
        return 0
    import multiprocessing as mp
    with mp.Pool(2) as p:
        if mode == "apply":
            return 0 if p.apply(echo, (42,)) == 42 else 1
        if mode == "map":
            n = int(sys.argv[2])
            out = p.map(square, range(n))
            return 0 if out == [i * i for i in range(n)] else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
