/*
 * timeutil - the two clocks sealgate reads, in milliseconds.
 *
 * timeutil_wall_ms(): real time since the epoch, for what is stored or
 * shown (arrival times, queue ids, Date:, retry times compared with
 * arrival).  It may step back (NTP, VM resume): compare with care.
 * timeutil_mono_ms(): a clock that never steps, for durations and
 * timeouts measured within one process.  Thread-safe; no state.
 */
#ifndef SEALGATE_TIMEUTIL_H
#define SEALGATE_TIMEUTIL_H

#include <stdint.h>

uint64_t timeutil_wall_ms(void);
uint64_t timeutil_mono_ms(void);

#endif
