# Google Benchmark of core/policy.c (bench/bench_policy.cc) -> bin/bench_policy:
# policy evaluation per message (issue #6) with 50 content filters and 20
# mail policies, with and without body conditions, 4 KiB and 1 MiB, 1 and
# 10 recipients, each beside its limit (header indexing and the same
# JIT-compiled PCRE2 matches done directly; for body conditions plus GMime
# decoding of the text parts) measured in the same run.  Linked like the
# daemon (tcmalloc in Release) so the figures are its own.
find_package(benchmark QUIET)
if(benchmark_FOUND)
  find_package(OpenSSL 3 REQUIRED)
  add_executable(bench_policy ${CMAKE_CURRENT_LIST_DIR}/bench_policy.cc)
  # sg_policy brings sg_config, sg_filter (and PCRE2's headers), sg_mime and
  # sg_mimebody; OpenSSL only for base64 when building the messages.
  target_link_libraries(bench_policy PRIVATE sg_policy benchmark::benchmark OpenSSL::Crypto Threads::Threads
                        ${SEALGATE_MALLOC_LIBS})
endif()
