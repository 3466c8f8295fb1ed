# Tests for crypto/keycache.c: the lock-free key cache in front of a real
# LMDB key store (answers, tiers, negative entries, invalidate/flush,
# expiry, CLOCK eviction, harvested use marks), and issue #5's acceptance
# test (readers on every core while a writer churns the store and the
# cache).  tools/test.sh also runs it under ThreadSanitizer (build-tsan).
sg_unit_test(test_keycache ${CMAKE_CURRENT_SOURCE_DIR}/test_keycache.c sg_keycache sg_keystore sg_cert sg_testutil
             Threads::Threads)
# In a ThreadSanitizer build, ctest runs it as tools/test.sh does.
if(SEALGATE_TSAN)
  set_tests_properties(test_keycache PROPERTIES ENVIRONMENT
                       "TSAN_OPTIONS=halt_on_error=1 suppressions=${CMAKE_CURRENT_SOURCE_DIR}/tsan.supp")
endif()
