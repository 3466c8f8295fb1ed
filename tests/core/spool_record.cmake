# Unit tests for core/spool_record.c and core/dsn.c.
sg_unit_test(test_spool_record ${CMAKE_CURRENT_SOURCE_DIR}/test_spool_record.c sg_spool_record)
sg_unit_test(test_dsn ${CMAKE_CURRENT_SOURCE_DIR}/test_dsn.c sg_dsn)
# The spool record test injects allocation failures to prove that every
# error path frees what it allocated (tests/core/alloc_fail.h).
sg_alloc_fail(test_spool_record)
