# Tests for crypto/certcache.c (#7): CMS parsing with a partner's
# certificates decoded once always agrees with OpenSSL's own parser.
sg_unit_test(test_certcache ${CMAKE_CURRENT_SOURCE_DIR}/test_certcache.c sg_verify Threads::Threads)
