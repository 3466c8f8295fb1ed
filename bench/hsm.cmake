# Google Benchmark of private-key operations (bench/bench_hsm.cc) ->
# bin/bench_hsm: RSA-2048 and P-256 signatures/s through hsm/ in-process
# and remote, each beside raw C_Sign on the same token in the same run.
# Linked like the daemon (tcmalloc in Release) so the figures are its own.
find_package(benchmark QUIET)
if(benchmark_FOUND)
  # hsm/CMakeLists.txt's PkgConfig::P11KIT is not visible in this
  # directory: look p11-kit up again under a prefix of our own.
  pkg_check_modules(P11KIT_BENCH REQUIRED IMPORTED_TARGET p11-kit-1)
  find_package(OpenSSL 3 REQUIRED)
  add_executable(bench_hsm ${CMAKE_CURRENT_LIST_DIR}/bench_hsm.cc)
  target_link_libraries(bench_hsm PRIVATE sg_hsm benchmark::benchmark PkgConfig::P11KIT_BENCH
                        OpenSSL::Crypto Threads::Threads ${CMAKE_DL_LIBS} ${SEALGATE_MALLOC_LIBS})
endif()
