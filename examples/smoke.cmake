# Smoke tests for the examples: each runs on small data and its output is checked (exit code
# 0 and exact counts or sums), so none can rot. Included by CMakeLists.txt's examples
# section; an example whose target does not exist (not built here) is skipped.
# mproc_example_smoke(NAME [TEST test-name] [EXIT code] [ARGS arg...] EXPECT regex...)
function(mproc_example_smoke name)
  if(NOT TARGET example_${name})
    return()
  endif()
  cmake_parse_arguments(S "" "TEST;EXIT" "ARGS;EXPECT" ${ARGN})
  if(NOT S_TEST)
    set(S_TEST ${name})
  endif()
  if(NOT S_EXIT)
    set(S_EXIT 0)
  endif()
  mproc_test_each_method(example_${S_TEST} TIMEOUT 180
    COMMAND sh ${PROJECT_SOURCE_DIR}/examples/smoke.sh --exit ${S_EXIT} ${S_EXPECT}
            -- $<TARGET_FILE:example_${name}> ${S_ARGS})
endfunction()

# Tutorial patterns
mproc_example_smoke(pipe_pingpong ARGS 6
  EXPECT "^squares: 1 4 9 16 25 36$" "sum of squares 1..6 = 91, child exit code 0")
mproc_example_smoke(lock_counter ARGS 4 5000
  EXPECT "^counter = 20000 \\(expected 20000\\): no increment lost$")
mproc_example_smoke(shared_value
  EXPECT "^num = 3.1415927$" "^arr = \\[0, -1, -2, -3, -4, -5, -6, -7, -8, -9\\]$"
  "^plain global = 7 ")
mproc_example_smoke(semaphore_workers ARGS 6 2
  EXPECT "^6 of 6 workers done. peak [12] at once, limit 2: OK$") # a ";" would split the list
mproc_example_smoke(event_release ARGS 3
  EXPECT "^3 waiters blocked" "^3 of 3 waiters released by the event$")
mproc_example_smoke(producer_consumer ARGS 1000 2 3
  EXPECT "^consumed 1000 items, sum 500500 \\(expected 1000 items, sum 500500\\)$")

# Pool
mproc_example_smoke(square ARGS 10
  EXPECT "^\\[0, 1, 4, 9, 16, 25, 36, 49, 64, 81\\]$" "^sum of the 10 squares = 285$")
mproc_example_smoke(square TEST square_100k ARGS 100000
  EXPECT "^sum of the 100000 squares = 333328333350000$")
mproc_example_smoke(montecarlo_pi ARGS 2000000 16
  EXPECT "^serial: +pi ~ 3.143416 +hits 1571708 " "^mproc: +pi ~ 3.143416 +hits 1571708 "
  "^hit counts identical$")
mproc_example_smoke(file_search
  EXPECT "^sample tree .*: 200 files, 29 with the keyword$" "/dir9/file196.txt: 10 lines$"
  "^29 of 200 files contain \"needle\" \\(430 lines\\)$")
mproc_example_smoke(log_stats
  EXPECT "^lines 300000, malformed 34$" "^200     239844$" "^404     23928$" "^12      23525 "
  "serial pass identical$")
# image_batch: the checksum is of the blurred pixels of a deterministic sample.
mproc_example_smoke(image_batch ARGS --count 6 --size 96 --no-progress
  EXPECT "^mproc:  6 of 6 blurred" "^checksum 22d5849fa2bcb518$")
# One poisoned input crashes its worker: reported by name, every other image completes.
mproc_example_smoke(image_batch TEST image_batch_poison EXIT 1
  ARGS --count 6 --size 96 --no-progress --poison --compare
  EXPECT "^  poison.png: MPROC_ECRASHED: .*signal 6" "^mproc:  6 of 7 blurred .*; 1 failed"
  "^checksum 22d5849fa2bcb518$" "the results equal the serial run's$")

# make demo's script itself, on tiny data.
if(TARGET example_image_batch)
  mproc_test_each_method(example_demo TIMEOUT 180 ENV DEMO_COUNT=4 DEMO_SIZE=64
    COMMAND sh ${PROJECT_SOURCE_DIR}/examples/smoke.sh "^  poison.png: MPROC_ECRASHED"
            "^mproc:  4 of 5 blurred" "^speedup .*the results equal" "^demo: done"
            -- sh ${PROJECT_SOURCE_DIR}/examples/demo.sh ${PROJECT_BINARY_DIR})
endif()
