/* sl_hist - see sl_hist.h. */
#include "tools/sealload/sl_hist.h"

#include <math.h>
#include <string.h>

void sl_hist_init(struct sl_hist *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

/* Bucket of v (v <= SL_HIST_MAX): exact below 2 * SUB; above, the top
 * SUB_BITS + 1 bits of v pick one of SUB buckets in v's power of two. */
static unsigned sl_hist__index(uint64_t v) {
  if (v < 2 * SL_HIST_SUB) return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned shift = msb - SL_HIST_SUB_BITS;
  unsigned top = (unsigned)(v >> shift); /* SUB .. 2 * SUB - 1 */
  return 2 * SL_HIST_SUB + (shift - 1) * SL_HIST_SUB + (top - SL_HIST_SUB);
}

/* The value a bucket stands for: the middle of the values it holds, so
 * the error is at most half its width either way. */
static uint64_t sl_hist__value(unsigned idx) {
  if (idx < 2 * SL_HIST_SUB) return idx;
  unsigned k = idx - 2 * SL_HIST_SUB;
  unsigned shift = k / SL_HIST_SUB + 1;
  uint64_t low = (uint64_t)(SL_HIST_SUB + k % SL_HIST_SUB) << shift;
  return low + ((UINT64_C(1) << shift) - 1) / 2;
}

void sl_hist_record(struct sl_hist *h, uint64_t v) {
  h->count++;
  h->sum += (double)v;
  if (v < h->min) h->min = v;
  if (v > h->max) h->max = v;
  if (v > SL_HIST_MAX) h->overflow++;
  else h->bucket[sl_hist__index(v)]++;
}

void sl_hist_merge(struct sl_hist *dst, const struct sl_hist *src) {
  dst->count += src->count;
  dst->overflow += src->overflow;
  dst->sum += src->sum;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
  for (unsigned i = 0; i < SL_HIST_BUCKETS; i++) dst->bucket[i] += src->bucket[i];
}

uint64_t sl_hist_percentile(const struct sl_hist *h, double p) {
  if (h->count == 0) return 0;
  if (p <= 0) return h->min;
  if (p >= 100) return h->max;
  /* The epsilon keeps 99.9 % of 1000 at rank 999 despite rounding. */
  uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count - 1e-9);
  if (rank < 1) rank = 1;
  if (rank > h->count - h->overflow) return h->max;
  uint64_t seen = 0;
  for (unsigned i = 0; i < SL_HIST_BUCKETS; i++) {
    seen += h->bucket[i];
    if (seen >= rank) {
      uint64_t v = sl_hist__value(i);
      return v < h->min ? h->min : v > h->max ? h->max : v;
    }
  }
  return h->max; /* not reached: the buckets hold count - overflow values */
}

double sl_hist_mean(const struct sl_hist *h) { return h->count ? h->sum / (double)h->count : 0.0; }
