/*
 * cryptopool - the crypto worker threads: every private-key operation and
 * every CMS job runs here, never on a loop thread (DESIGN.md: not libuv's
 * threadpool either, which file I/O shares).
 *
 * Each thread owns one hsm_worker (with the remote token, its own
 * connection to the token server), so PKCS#11 sessions are never shared
 * between threads and signing scales with threads.  Jobs run in FIFO
 * order on whichever thread is free.
 *
 * Ownership: a job is the submitter's memory; the pool only links it.  The
 * job's run() is called exactly once, on a worker thread, with that
 * thread's worker (NULL if the worker could not be created: the token is
 * unreachable, so the job should fail with SG_ETEMP); how the result gets
 * back (mailbox_post_item to a loop, a condition variable) is the job's
 * business.  run() may free the job.
 */
#ifndef SEALGATE_CRYPTOPOOL_H
#define SEALGATE_CRYPTOPOOL_H

#include <stddef.h>

#include "hsm/hsm.h"

struct cryptopool_job {
  struct cryptopool_job *next; /* the pool's link */
  void (*run)(struct cryptopool_job *job, struct hsm_worker *w);
};

struct cryptopool;

/* Start threads (0 = one per online CPU) working on token h, which must
 * outlive the pool.  *out is the caller's until cryptopool_stop(). */
int cryptopool_start(struct hsm *h, unsigned threads, struct cryptopool **out, char *err,
                     size_t errlen);

/* Thread-safe; cannot fail.  Must not be called after cryptopool_stop(). */
void cryptopool_submit(struct cryptopool *p, struct cryptopool_job *job);

/* Number of threads. */
unsigned cryptopool_size(const struct cryptopool *p);

/* Run every job already queued, join the threads, free their workers and
 * the pool.  NULL is a no-op. */
void cryptopool_stop(struct cryptopool *p);

#endif
