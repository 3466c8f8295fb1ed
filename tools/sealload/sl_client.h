/*
 * sl_client - one worker of the load generator: its own libuv loop, its
 * share of the sessions, and the schedule that hands them messages.
 *
 * Closed loop (rate 0): every free session takes the next message at
 * once; latency counts from that moment.  Open loop (rate > 0): message k
 * is due at start + offset + k / rate, whatever the sessions are doing; a
 * due message waits for a free session, and its latency counts from when
 * it was due, so queueing behind a slow server shows (no coordinated
 * omission).  The run ends after `count` messages, or when `duration_ms`
 * is up (messages in flight finish; due ones not started are "unsent"),
 * or when sl_client_stop() is called, or when every session gave up.
 *
 * Callers: sealload.c, one per thread.  sl_client_new and sl_client_free
 * on the main thread, sl_client_run on the worker thread, sl_client_stop
 * from any thread.  Ownership: the client borrows opts' pointers (message,
 * recipients, address) for its whole life, and writes only its stats.
 */
#ifndef SEALGATE_SL_CLIENT_H
#define SEALGATE_SL_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tools/sealload/sl_msg.h"
#include "tools/sealload/sl_report.h"

struct sl_client_opts {
  const struct sockaddr *addr;
  const struct sl_msg *msg;
  const char *helo, *from;
  char *const *rcpts;
  size_t n_rcpts;
  unsigned sessions;        /* this worker's */
  uint64_t count;           /* messages; 0 with a duration */
  uint64_t duration_ms;     /* 0 with a count */
  double rate;              /* this worker's msgs/s; 0 closed loop */
  uint64_t offset_ns;       /* open loop: this worker's first message */
  bool reuse;
  unsigned retries;
  uint64_t timeout_ms;
  unsigned worker;          /* < SL_MSG_MAX_WORKERS, in Message-IDs */
  int acked_fd;             /* --acked file (O_APPEND), or -1 */
};

struct sl_client;

/* Set up a client with its own loop; stats must outlive it. */
int sl_client_new(const struct sl_client_opts *o, struct sl_client_stats *stats, struct sl_client **out);
/* Run to the end (on the worker thread).  start_ns/end_ns: when the
 * schedule started and when the last session ended (uv_hrtime). */
void sl_client_run(struct sl_client *c, uint64_t *start_ns, uint64_t *end_ns);
/* Ask the run to end: no new messages, in-flight ones finish.  Any
 * thread, any time before sl_client_free. */
void sl_client_stop(struct sl_client *c);
void sl_client_free(struct sl_client *c);

#endif
