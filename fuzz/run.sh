#!/bin/sh
# Runs one libFuzzer target from its corpus in the repository (fuzz/corpus/NAME).
#   run.sh ci   EXE SECONDS   make test: the corpus is read, never written; what the run
#                             finds goes to a scratch folder that is removed after
#   run.sh long EXE SECONDS   make fuzz: then the new inputs that add coverage are merged
#                             into fuzz/corpus/NAME (commit them)
# A crash, leak or timeout fails the run; its input is printed in hex, to add to the corpus.
set -eu
mode=$1 exe=$2 secs=$3
name=$(basename "$exe")
here=$(cd "$(dirname "$0")" && pwd)
corpus=$here/corpus/$name
mkdir -p "$corpus"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/mproc-$name.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
mkdir "$scratch/new" "$scratch/art"

# -seed fixed: a failure is the same run again; -timeout: one input may take 10 s at most (a
# hang is a bug); new inputs go to the first folder, so the repository's is only read.
set +e
"$exe" -seed=1 -max_len=8192 -timeout=10 -max_total_time="$secs" -print_final_stats=1 \
  -artifact_prefix="$scratch/art/" "$scratch/new" "$corpus" >"$scratch/log" 2>&1
rc=$?
set -e
grep -E "^stat::number_of_executed_units|^#[0-9]+.*DONE" "$scratch/log" | tail -2
echo "$name: corpus $(ls "$corpus" | wc -l) files, $(cat "$corpus"/* 2>/dev/null | wc -c) bytes; \
$(ls "$scratch/new" | wc -l) new inputs this run"
if [ $rc -ne 0 ]; then
  tail -60 "$scratch/log"
  for f in "$scratch"/art/*; do
    [ -f "$f" ] || continue
    echo "== $(basename "$f") =="
    od -An -tx1 -v "$f" | head -64
  done
  exit $rc
fi
if [ "$mode" = long ]; then
  # Keeps only the new inputs that reach code the corpus does not (libFuzzer's merge).
  "$exe" -merge=1 -max_len=8192 "$corpus" "$scratch/new" >"$scratch/merge.log" 2>&1 || {
    tail -20 "$scratch/merge.log"; exit 1; }
  echo "$name: merged, corpus now $(ls "$corpus" | wc -l) files"
fi
