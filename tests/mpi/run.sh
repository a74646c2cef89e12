#!/bin/sh
# Runs one MPI test program under mpirun, then checks that no process of the job is left on
# the machine (every rank's supervisor and workers included: they carry the program's path).
#   run.sh NRANKS PROGRAM [ARGS...]
set -u
n=$1
shift
prog=$1
# As root (CI), quiet and quick on one small machine: shared memory and self only, no
# binding (ranks and their workers share 2 cores), more ranks than cores allowed.
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  mpirun --oversubscribe --bind-to none --mca btl self,vader -n "$n" "$@"
rc=$?
# The ranks exit before mpirun does; their children die with them (death signal), which the
# kernel completes asynchronously: a moment's grace.
i=0
while [ $i -lt 50 ]; do
  left=$(ps -eo pid=,args= | grep -F "$prog" | grep -v -e grep -e "run.sh" || true)
  [ -z "$left" ] && break
  sleep 0.1
  i=$((i + 1))
done
if [ -n "$left" ]; then
  echo "processes left after the job:"
  echo "$left"
  exit 1
fi
exit $rc
