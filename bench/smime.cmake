# Google Benchmark of crypto/smime.c (bench/bench_smime.cc) -> bin/bench_smime:
# S/MIME messages/s (sign, encrypt, sign-encrypt, triple; 4 KiB to 1 MiB;
# 1 and 2 threads; signing key in software and in an in-process SoftHSM2
# token), each beside its crypto-only limit measured in the same run.
# Linked like the daemon (tcmalloc in Release) so the figures are its own.
find_package(benchmark QUIET)
if(benchmark_FOUND)
  find_package(OpenSSL 3 REQUIRED)
  add_executable(bench_smime ${CMAKE_CURRENT_LIST_DIR}/bench_smime.cc)
  target_link_libraries(bench_smime PRIVATE sg_smime sg_hsm benchmark::benchmark OpenSSL::Crypto
                        Threads::Threads ${SEALGATE_MALLOC_LIBS})
endif()
