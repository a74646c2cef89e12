# Smoke tests for the examples: each runs on small data and its output is checked (exit code
# 0 and exact counts or sums), so none can rot. Included by CMakeLists.txt's examples
# section; an example whose target does not exist (not built here) is skipped.
function(mproc_example_smoke name)
  if(NOT TARGET example_${name})
    return()
  endif()
  cmake_parse_arguments(S "" "" "ARGS;EXPECT" ${ARGN})
  add_test(NAME example_${name}
    COMMAND sh ${PROJECT_SOURCE_DIR}/examples/smoke.sh ${S_EXPECT} -- $<TARGET_FILE:example_${name}> ${S_ARGS})
  set_tests_properties(example_${name} PROPERTIES TIMEOUT 180)
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
  EXPECT "^6 of 6 workers done; peak [12] at once, limit 2: OK$")
mproc_example_smoke(event_release ARGS 3
  EXPECT "^3 waiters blocked" "^3 of 3 waiters released by the event$")
