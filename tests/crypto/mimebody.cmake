# Unit tests for crypto/mimebody.c (#6): decoded text search, attachment
# names, header decoding, hostile input (depth, parts, size, garbage) and
# four threads with a struct each, on real GMime.
sg_unit_test(test_mimebody ${CMAKE_CURRENT_SOURCE_DIR}/test_mimebody.c sg_mimebody Threads::Threads)
# In a ThreadSanitizer build: GLib's slice allocator recycles memory
# between threads through atomics TSan cannot see in the uninstrumented
# library (false races in g_slice_alloc0); plain malloc lets it check all.
if(SEALGATE_TSAN)
  set_tests_properties(test_mimebody PROPERTIES ENVIRONMENT "G_SLICE=always-malloc;TSAN_OPTIONS=halt_on_error=1")
endif()
