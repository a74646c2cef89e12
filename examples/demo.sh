#!/bin/sh
# make demo: blur a folder of generated PNGs serially, then on an mproc pool, with a live
# progress bar; print both times and the speedup. One input, poison.png, makes its task
# abort() on purpose: its worker dies, the task is reported by name with MPROC_ECRASHED, and
# every other image still completes. (Python's multiprocessing.Pool waits forever for a task
# whose worker died: bpo-22393.)
#
#   usage: sh examples/demo.sh [BUILD_DIR]      (DEMO_COUNT, DEMO_SIZE override the data)
B=${1:-build}
count=${DEMO_COUNT:-32}
size=${DEMO_SIZE:-640}
ex="$B/examples/image_batch"
if [ ! -x "$ex" ]; then
  echo "demo: $ex was not built (it needs libpng: apt-get install libpng-dev, then make)."
  echo "demo: running montecarlo_pi instead."
  exec "$B/examples/montecarlo_pi"
fi

echo "mproc demo: blur $count generated ${size}x${size} PNGs (Gaussian, radius 2), one per task,"
echo "first serially in one process, then on a pool of $(nproc 2>/dev/null || echo N) worker processes."
echo "poison.png makes its task call abort(): watch it crash its worker and nothing else."
echo
"$ex" --compare --poison --count "$count" --size "$size" --progress
rc=$?
echo
# Exit status 1 is the expected outcome: one image (the poisoned one) failed.
if [ $rc -eq 1 ]; then
  echo "demo: done. poison.png failed alone with MPROC_ECRASHED; the pool replaced its worker"
  echo "      and blurred every other image."
  exit 0
fi
echo "demo: image_batch exited with $rc (expected 1: the poisoned image fails)" >&2
exit 1
