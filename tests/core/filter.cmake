# Unit tests for core/filter.c (the filter language of issue #6).
sg_unit_test(test_filter ${CMAKE_CURRENT_SOURCE_DIR}/test_filter.c sg_filter)
# Allocation failures are injected to show every error path of the compiler
# frees what it allocated (tests/core/alloc_fail.h).
sg_alloc_fail(test_filter)
