/*
 * Unit tests for tools/sealload/sl_hist: percentiles read from the
 * histogram against the exact nearest-rank values of a sorted array of the
 * same random values (within SL_HIST_REL_ERR), exact min and max, exact
 * small values, the overflow bucket, merging, and the empty histogram.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/sealload/sl_hist.h"

static const double pcts[] = {0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99};
#define N_PCTS (sizeof pcts / sizeof pcts[0])

static uint64_t xorshift64(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The nearest-rank percentile of sorted v[0..n). */
static uint64_t exact_pct(const uint64_t *v, size_t n, double p) {
  double r = ceil(p / 100.0 * (double)n - 1e-9);
  size_t rank = r < 1 ? 1 : (size_t)r;
  return v[rank - 1];
}

/* Record v, then check every percentile and min/max against the sort. */
static void check_against_sorted(uint64_t *v, size_t n) {
  struct sl_hist *h = malloc(sizeof *h);
  assert_non_null(h);
  sl_hist_init(h);
  for (size_t i = 0; i < n; i++) sl_hist_record(h, v[i]);
  qsort(v, n, sizeof *v, cmp_u64);
  assert_int_equal(h->count, n);
  assert_int_equal(sl_hist_percentile(h, 0), v[0]);
  assert_int_equal(sl_hist_percentile(h, 100), v[n - 1]);
  assert_int_equal(h->min, v[0]);
  assert_int_equal(h->max, v[n - 1]);
  for (size_t i = 0; i < N_PCTS; i++) {
    double want = (double)exact_pct(v, n, pcts[i]), got = (double)sl_hist_percentile(h, pcts[i]);
    if (fabs(got - want) > want * SL_HIST_REL_ERR) {
      fprintf(stderr, "p%g: histogram %.0f, exact %.0f\n", pcts[i], got, want);
      fail();
    }
  }
  free(h);
}

static void test_uniform_values(void **state) {
  (void)state;
  size_t n = 200000;
  uint64_t *v = malloc(n * sizeof *v), seed = 0x9e3779b97f4a7c15u;
  assert_non_null(v);
  for (size_t i = 0; i < n; i++) v[i] = xorshift64(&seed) % 10000000;
  check_against_sorted(v, n);
  free(v);
}

/* Log-uniform over 1 .. 2^35: every power of two has values, which is
 * where a log-bucketed histogram's error would show. */
static void test_log_uniform_values(void **state) {
  (void)state;
  size_t n = 200000;
  uint64_t *v = malloc(n * sizeof *v), seed = 42;
  assert_non_null(v);
  for (size_t i = 0; i < n; i++) {
    unsigned bits = (unsigned)(xorshift64(&seed) % 35);
    v[i] = (UINT64_C(1) << bits) + xorshift64(&seed) % (UINT64_C(1) << bits);
  }
  check_against_sorted(v, n);
  free(v);
}

/* A few outliers far above a tight cluster: the tail percentiles and max
 * must still be right (latency distributions look like this). */
static void test_clustered_with_outliers(void **state) {
  (void)state;
  size_t n = 10000;
  uint64_t *v = malloc(n * sizeof *v), seed = 7;
  assert_non_null(v);
  for (size_t i = 0; i < n; i++) v[i] = 900 + xorshift64(&seed) % 200;
  v[17] = 5000000;
  v[4242] = 123456789;
  check_against_sorted(v, n);
  free(v);
}

/* Below 2 * SL_HIST_SUB every value has its own bucket: no error at all. */
static void test_small_values_exact(void **state) {
  (void)state;
  struct sl_hist h;
  sl_hist_init(&h);
  for (uint64_t x = 0; x < 2 * SL_HIST_SUB; x++) sl_hist_record(&h, x);
  for (uint64_t x = 1; x <= 2 * SL_HIST_SUB; x++)
    assert_int_equal(sl_hist_percentile(&h, 100.0 * (double)x / (2 * SL_HIST_SUB)), x - 1);
}

static void test_overflow_bucket(void **state) {
  (void)state;
  struct sl_hist h;
  sl_hist_init(&h);
  for (int i = 0; i < 98; i++) sl_hist_record(&h, 1000);
  sl_hist_record(&h, SL_HIST_MAX + 1);
  sl_hist_record(&h, UINT64_C(1) << 50);
  assert_int_equal(h.count, 100);
  assert_int_equal(h.overflow, 2);
  assert_int_equal(h.max, UINT64_C(1) << 50);
  assert_int_equal(h.min, 1000);
  /* 98 % in range: p98 is 1000 within the error, p99 and up fall in the
   * overflow bucket and read as the exact max. */
  assert_true(fabs((double)sl_hist_percentile(&h, 98) - 1000) <= 1000 * SL_HIST_REL_ERR);
  assert_int_equal(sl_hist_percentile(&h, 99), UINT64_C(1) << 50);
  assert_int_equal(sl_hist_percentile(&h, 100), UINT64_C(1) << 50);
  /* SL_HIST_MAX itself is still in range. */
  struct sl_hist g;
  sl_hist_init(&g);
  sl_hist_record(&g, SL_HIST_MAX);
  assert_int_equal(g.overflow, 0);
  assert_int_equal(sl_hist_percentile(&g, 50), SL_HIST_MAX);
}

/* Two workers' histograms merged read exactly like one that saw it all. */
static void test_merge_equals_single(void **state) {
  (void)state;
  struct sl_hist *a = malloc(sizeof *a), *b = malloc(sizeof *b), *all = malloc(sizeof *all);
  assert_true(a && b && all);
  sl_hist_init(a), sl_hist_init(b), sl_hist_init(all);
  uint64_t seed = 99;
  for (int i = 0; i < 50000; i++) {
    uint64_t x = xorshift64(&seed) % 3000000;
    sl_hist_record(i % 3 ? a : b, x);
    sl_hist_record(all, x);
  }
  sl_hist_record(b, UINT64_MAX);
  sl_hist_record(all, UINT64_MAX);
  sl_hist_merge(a, b);
  assert_int_equal(a->count, all->count);
  assert_int_equal(a->overflow, all->overflow);
  assert_int_equal(a->min, all->min);
  assert_int_equal(a->max, all->max);
  assert_memory_equal(a->bucket, all->bucket, sizeof a->bucket);
  for (size_t i = 0; i < N_PCTS; i++)
    assert_int_equal(sl_hist_percentile(a, pcts[i]), sl_hist_percentile(all, pcts[i]));
  free(a), free(b), free(all);
}

static void test_empty(void **state) {
  (void)state;
  struct sl_hist h;
  sl_hist_init(&h);
  assert_int_equal(sl_hist_percentile(&h, 50), 0);
  assert_int_equal(sl_hist_percentile(&h, 100), 0);
  assert_true(sl_hist_mean(&h) == 0.0);
  sl_hist_record(&h, 10);
  sl_hist_record(&h, 30);
  assert_true(sl_hist_mean(&h) == 20.0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uniform_values),   cmocka_unit_test(test_log_uniform_values),
      cmocka_unit_test(test_clustered_with_outliers), cmocka_unit_test(test_small_values_exact),
      cmocka_unit_test(test_overflow_bucket),  cmocka_unit_test(test_merge_equals_single),
      cmocka_unit_test(test_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
