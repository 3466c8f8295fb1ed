/* timeutil - see timeutil.h. */
#include "core/timeutil.h"

#include <time.h>

static uint64_t timeutil__ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t timeutil_wall_ms(void) { return timeutil__ms(CLOCK_REALTIME); }
uint64_t timeutil_mono_ms(void) { return timeutil__ms(CLOCK_MONOTONIC); }
