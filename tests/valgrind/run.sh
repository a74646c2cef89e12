#!/bin/sh
# run.sh [--no-leak-check] SUPPRESSIONS PROGRAM [ARG...]
# Runs PROGRAM under valgrind (memcheck, full leak check, children traced) with one log per
# process, prints the program's output and each log that has an error, and passes only when
# the program exited 0 and no process of it (parent, workers, servers) had an error: a
# worker's errors do not reach the parent's exit code, so the logs are read instead.
# --no-leak-check: memory errors only. A pool's processes map its stage and rings (hundreds
# of MiB reserved, committed as used); memcheck's leak scan at each exit reads all of it,
# page by page (it took over 5 minutes for one pool), so pools are walked without it.
# (--track-origins=yes, for where an uninitialised value came from, is for a run by hand:
# it made a pool walk take minutes.)
leak=full
if [ "$1" = "--no-leak-check" ]; then
  leak=no
  shift
fi
supp=$1
shift
logs=$(mktemp -d "${TMPDIR:-/tmp}/mproc-vg.XXXXXX") || exit 2
valgrind -q --error-exitcode=99 --leak-check=$leak --errors-for-leak-kinds=definite,indirect \
  --trace-children=yes --child-silent-after-fork=no \
  --suppressions="$supp" --log-file="$logs/vg.%p" "$@"
rc=$?
procs=$(ls "$logs" | wc -l)
bad=0
for f in "$logs"/vg.*; do
  [ -s "$f" ] || continue
  if grep -Eq "ERROR SUMMARY: [1-9]|^==[0-9]+== [A-Z]" "$f"; then
    echo "---- valgrind: $f" >&2
    cat "$f" >&2
    bad=$((bad + 1))
  fi
done
rm -rf "$logs"
echo "valgrind: $procs process(es) traced, $bad with errors, exit $rc"
[ "$rc" -eq 0 ] && [ "$bad" -eq 0 ]
