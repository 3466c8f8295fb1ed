/*
 * clientlimit - per-client connection count and connection rate, shared by
 * all shards without locks.
 *
 * Owns a fixed table of atomic counters indexed by a keyed hash of the
 * client's IP address (IPv6 clients by their /64, since one host owns a
 * whole /64).  Two clients that collide share a counter: the limit can only
 * get stricter, never looser, and the key is random per process so a
 * client cannot aim collisions at someone else.  Called by shards on accept
 * and close; the address is the peer's (trusted from the kernel).
 */
#ifndef SEALGATE_CLIENTLIMIT_H
#define SEALGATE_CLIENTLIMIT_H

#include <stdint.h>
#include <sys/socket.h>

/* Initialise once at start (not thread-safe). 0 or SG_ENOMEM. */
int clientlimit_init(void);

/*
 * Count a new connection from sa.  max_conns: concurrent limit (0 = none);
 * rate_per_min: new connections in any 60 s (0 = none; a sliding window).  Returns 0 (then
 * clientlimit_release must be called when it closes), SG_ELIMIT for too many
 * concurrent connections, SG_EBUSY for too high a rate (nothing to release).
 */
int clientlimit_acquire(const struct sockaddr *sa, unsigned max_conns, unsigned rate_per_min);
void clientlimit_release(const struct sockaddr *sa);

/* clientlimit_acquire at a given time (ms since the epoch), for tests. */
int clientlimit_acquire_at(const struct sockaddr *sa, unsigned max_conns, unsigned rate_per_min,
                           uint64_t now_ms);

#endif
