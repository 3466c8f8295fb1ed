/* alloc_fail - see alloc_fail.h. */
#include "tests/core/alloc_fail.h"

#include <stddef.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t a, size_t b);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

long alloc_countdown = -1;

static int alloc_should_fail(void) {
  if (alloc_countdown < 0) return 0;
  return alloc_countdown-- == 0;
}

void *__wrap_malloc(size_t n) { return alloc_should_fail() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { return alloc_should_fail() ? NULL : __real_calloc(a, b); }
void *__wrap_realloc(void *p, size_t n) { return alloc_should_fail() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return alloc_should_fail() ? NULL : __real_strdup(s); }
