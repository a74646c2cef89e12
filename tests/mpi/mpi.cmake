# The MPI tests (included from CMakeLists.txt's libmproc_mpi block): one plain C program run
# under mpirun -n 2 and -n 3 by run.sh, which also checks that no process is left.
if(MPROC_BUILD_TESTS)
  find_program(MPROC_MPIRUN NAMES mpirun mpiexec)
  add_executable(test_mpi_pool ${PROJECT_SOURCE_DIR}/tests/mpi/test_mpi_pool.c)
  target_compile_options(test_mpi_pool PRIVATE ${MPROC_WARNINGS})
  target_link_libraries(test_mpi_pool PRIVATE mproc_mpi)
  # Open MPI's own allocations (its init and finalize leave some by design) swamp LSan's
  # report: leaks are checked by the local pool's suites; here ASan checks the rest.
  set(MPROC_MPI_TEST_ENV "ASAN_OPTIONS=detect_leaks=0:abort_on_error=0")
  foreach(n 2 3)
    foreach(mode all terminate badopts rank0)
      add_test(NAME mpi_pool_${mode}_n${n}
        COMMAND sh ${PROJECT_SOURCE_DIR}/tests/mpi/run.sh ${n} $<TARGET_FILE:test_mpi_pool> ${mode})
      set_tests_properties(mpi_pool_${mode}_n${n} PROPERTIES TIMEOUT 240 LABELS mpi RUN_SERIAL TRUE
        ENVIRONMENT "${MPROC_MPI_TEST_ENV}")
    endforeach()
  endforeach()
endif()
