# Google Benchmark of the incoming side (bench/bench_incoming.cc) ->
# bin/bench_incoming: decrypt_cms msgs/s (AES-256-CBC EnvelopedData and
# AES-256-GCM AuthEnvelopedData, RSA-2048 key in an in-process SoftHSM2
# token) and verify_detached msgs/s, at 4 KiB, 64 KiB and
# 1 MiB, each beside its raw limit (bare EVP calls) measured in the same run.
# Linked like the daemon (tcmalloc in Release) so the figures are its own.
find_package(benchmark QUIET)
if(benchmark_FOUND)
  find_package(OpenSSL 3 REQUIRED)
  add_executable(bench_incoming ${CMAKE_CURRENT_LIST_DIR}/bench_incoming.cc)
  target_link_libraries(bench_incoming PRIVATE sg_decrypt sg_verify sg_keystore sg_cert sg_hsm benchmark::benchmark OpenSSL::Crypto
                        Threads::Threads ${SEALGATE_MALLOC_LIBS})
endif()
