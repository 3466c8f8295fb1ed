# Google Benchmark of crypto/keycache.c (bench/bench_keycache.cc) ->
# bin/bench_keycache: cached recipient-key lookups/s, the lock-free cache
# beside a mutex-protected hash table, 1 and 2 threads, 10,000 keys in a
# real LMDB store.  Linked like the daemon (tcmalloc in Release).
find_package(benchmark QUIET)
if(benchmark_FOUND)
  find_package(OpenSSL 3 REQUIRED)
  add_executable(bench_keycache ${CMAKE_CURRENT_LIST_DIR}/bench_keycache.cc)
  target_link_libraries(bench_keycache PRIVATE sg_keycache sg_keystore sg_cert benchmark::benchmark OpenSSL::Crypto
                        Threads::Threads ${SEALGATE_MALLOC_LIBS})
endif()
