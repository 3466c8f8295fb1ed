/*
 * sl_hist - a log-bucketed latency histogram (HdrHistogram-like) for
 * sealload: fixed memory, O(1) recording, bounded relative error.
 *
 * Values are unsigned integers (sealload records microseconds).  Values
 * below 2 * SL_HIST_SUB are counted exactly; above, each power of two is
 * split into SL_HIST_SUB equal buckets, so a bucket's width is at most
 * 1/SL_HIST_SUB of its lower bound and a percentile read back (the
 * bucket's midpoint, clamped to the exact min and max) is within
 * SL_HIST_REL_ERR of the value at that rank.  Values above SL_HIST_MAX go
 * to one overflow bucket: they still count, min and max stay exact, and a
 * percentile that falls there reads as the exact max.
 *
 * Callers: sl_client.c (one per worker, merged by sealload.c), tests.
 * Inputs are the caller's measurements (trusted).  A struct sl_hist is
 * plain memory (about 17 KiB): no allocation, no free, not thread-safe.
 */
#ifndef SEALGATE_SL_HIST_H
#define SEALGATE_SL_HIST_H

#include <stdint.h>

#define SL_HIST_SUB_BITS 6
#define SL_HIST_SUB (1u << SL_HIST_SUB_BITS)   /* 64 buckets per power of two */
#define SL_HIST_TOP_BIT 36                      /* values < 2^36 (19 h in us) */
#define SL_HIST_MAX ((UINT64_C(1) << SL_HIST_TOP_BIT) - 1)
/* 2 * SL_HIST_SUB exact buckets, then SL_HIST_SUB per power of two. */
#define SL_HIST_BUCKETS (2 * SL_HIST_SUB + (SL_HIST_TOP_BIT - SL_HIST_SUB_BITS - 1) * SL_HIST_SUB)
/* Half a bucket's width over its lower bound, at worst: 1/128 < 1 %. */
#define SL_HIST_REL_ERR (1.0 / (2.0 * SL_HIST_SUB))

struct sl_hist {
  uint64_t count;     /* every recorded value, overflow included */
  uint64_t overflow;  /* values above SL_HIST_MAX */
  uint64_t min, max;  /* exact; min is UINT64_MAX while empty */
  double sum;         /* for the mean */
  uint64_t bucket[SL_HIST_BUCKETS];
};

void sl_hist_init(struct sl_hist *h);
void sl_hist_record(struct sl_hist *h, uint64_t v);
/* Add every count of src to dst (workers' histograms into one). */
void sl_hist_merge(struct sl_hist *dst, const struct sl_hist *src);
/* The value at percentile p (0..100; nearest rank: the smallest recorded
 * value with at least p % of the values at or below it); 0 when empty.
 * p <= 0 gives the exact min, p >= 100 the exact max. */
uint64_t sl_hist_percentile(const struct sl_hist *h, double p);
double sl_hist_mean(const struct sl_hist *h);

#endif
