/*
 * alloc_fail - allocation failure injection for unit tests.
 *
 * A test linked with sg_alloc_fail() (tests/core/CMakeLists.txt) routes
 * malloc, calloc, realloc and strdup of everything linked into it through
 * the wrappers in alloc_fail.c.  Setting alloc_countdown to n makes the
 * n-th following allocation (0-based) fail; -1 (the default) never fails.
 * Tests loop n upwards to drive every error path and let ASan/LSan show
 * that each one frees what it allocated.
 */
#ifndef SEALGATE_TESTS_ALLOC_FAIL_H
#define SEALGATE_TESTS_ALLOC_FAIL_H

extern long alloc_countdown;

#endif
