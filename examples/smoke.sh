#!/bin/sh
# smoke.sh [--exit CODE] PATTERN... -- PROGRAM [ARG...]
# Runs PROGRAM; passes only when it exits with CODE (default 0) and its output (stdout and
# stderr) has a line matching each PATTERN (grep -E). Used by smoke.cmake so that no example
# can rot.
want=0
if [ "$1" = "--exit" ]; then
  want=$2
  shift 2
fi
n=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  n=$((n + 1))
  eval "pat_$n=\$1"
  shift
done
[ "$1" = "--" ] || { echo "usage: smoke.sh PATTERN... -- PROGRAM [ARG...]" >&2; exit 2; }
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ $rc -ne "$want" ]; then
  echo "smoke: '$*' exited with $rc, not $want" >&2
  exit 1
fi
i=1
while [ $i -le $n ]; do
  eval "pat=\$pat_$i"
  if ! printf '%s\n' "$out" | grep -Eq -- "$pat"; then
    echo "smoke: no line matches '$pat'" >&2
    exit 1
  fi
  i=$((i + 1))
done
echo "smoke: exit $rc, $n pattern(s) matched"
