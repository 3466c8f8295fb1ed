# Google Benchmark micro-benchmarks (bench/micro.cc) -> bin/sealgate-micro.
find_package(benchmark QUIET)
if(benchmark_FOUND)
  add_executable(sealgate-micro ${CMAKE_CURRENT_LIST_DIR}/micro.cc)
  target_link_libraries(sealgate-micro PRIVATE sg_smtp sg_spool_record benchmark::benchmark
                        PkgConfig::ZLIB)
  # -Werror applies to C++ too; Google Benchmark's headers are clean with it.
endif()
