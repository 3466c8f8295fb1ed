/*
 * delivery - a shard's outgoing queue: which message goes to which next hop
 * when, the SMTP client connections that carry them, retries with
 * exponential backoff, and bounces (DSNs).
 *
 * Owns every struct spool_msg handed to it (delivery_enqueue) until the
 * message leaves the spool: after the next hop's 250 for every recipient,
 * or after its failures were reported in a DSN that is itself durable.
 * Runs on its shard's loop; disk work goes through the spool.  Next-hop
 * replies are untrusted input (bounded, sanitised before they reach a DSN
 * or a log).
 */
#ifndef SEALGATE_DELIVERY_H
#define SEALGATE_DELIVERY_H

#include <stdbool.h>

#include "core/buf.h"

struct shard;
struct delivery;
struct spool_msg;

int delivery_init(struct shard *sh, struct delivery **out);
/* Take msg (durable in the spool; data may be NULL) and deliver it. */
void delivery_enqueue(struct delivery *dl, struct spool_msg *msg);
/* Retry every deferred message now. */
void delivery_flush(struct delivery *dl);
/* Append one line per queued message: id, arrival_ms, size, attempts,
 * next_try_ms, sender, recipients (separated by 0x1f, which the SMTP parser
 * never lets into an address), last error; fields
 * separated by tabs, no tabs or newlines inside fields. */
void delivery_list(struct delivery *dl, struct buf *out);
/* A spool job started on this shard for a message that will then be
 * enqueued (core/release.c): while held, the shard does not finish
 * draining (delivery_idle is false).  Pair each hold with one unhold, on
 * the shard's loop. */
void delivery_hold(struct delivery *dl);
void delivery_unhold(struct delivery *dl);
/* Stop starting deliveries; transactions in flight finish. */
void delivery_drain(struct delivery *dl);
/* True when nothing is in flight (no connection busy, no spool job pending). */
bool delivery_idle(struct delivery *dl);
/* Close idle connections and free the queue (messages stay on disk). */
void delivery_close(struct delivery *dl);

#endif
