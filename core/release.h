/*
 * release - the running daemon's side of the quarantine (core/
 * quarantine.h): every minute, and at once when sealctl says a message
 * was released, it expires held messages past their quarantine's limits
 * (`quarantines:` in the config) and queues released messages again.
 *
 * Owns one timer on the daemon's main loop and the scan running on
 * libuv's thread pool (file work never runs on a loop thread).  A
 * released message is handed to a shard, which commits it to its spool
 * as a new message (flag SPOOL_F_RELEASED, arrival = the release) and only
 * then removes the released file: a crash in between delivers it twice,
 * never loses it.  One scan at a time; a scan does not start while
 * messages of the previous one are still being committed, so a file is
 * never queued twice by one daemon.
 *
 * Callers: core/daemon.c only, on the main loop.
 */
#ifndef SEALGATE_RELEASE_H
#define SEALGATE_RELEASE_H

#include <uv.h>

struct daemon;
struct release;

/* Start the timer (first scan at once); *out is the daemon's. */
int release_start(struct daemon *d, uv_loop_t *loop, struct release **out);
/* Scan soon (control command "quarantine released"). */
void release_poke(struct release *r);
/* Stop: no further scan; waits for one running on the pool to finish its
 * file work (so no shard is posted to after this returns).  Frees r once
 * the loop has closed its timer and the scan's completion has run.  Call
 * before the shards are drained. */
void release_stop(struct release *r);

#endif
