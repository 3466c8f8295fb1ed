/*
 * dsn - builds delivery status notifications (RFC 3464, RFC 3462 report).
 *
 * Pure: turns the facts of a failed delivery into the bytes of a bounce
 * message; the caller queues it with the null sender (<>) to the original
 * envelope sender (never for a message whose sender is already <>).
 * Called by core/delivery.c.  Diagnostic text comes from the next hop and is
 * untrusted: it is sanitised (printable ASCII, one line, bounded) before it
 * is written into the report.
 */
#ifndef SEALGATE_DSN_H
#define SEALGATE_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum dsn_action { DSN_ACTION_FAILED = 0, DSN_ACTION_DELAYED };

struct dsn_rcpt {
  const char *addr;        /* the envelope recipient */
  enum dsn_action action;
  const char *status;      /* "5.1.1", "4.4.7", ... */
  const char *diagnostic;  /* next hop reply, e.g. "550 5.1.1 no such user"; NULL if none */
  const char *remote_mta;  /* next hop host name or address; NULL if never reached */
};

struct dsn_info {
  const char *reporting_mta;  /* our hostname */
  const char *queue_id;       /* of the original message */
  uint64_t arrival_ms;        /* when we accepted the original */
  uint64_t now_ms;            /* Date: of the report */
  const char *orig_sender;    /* envelope sender of the original: the report's To */
  const struct dsn_rcpt *rcpts;
  size_t n_rcpts;
  const char *orig_msg;       /* the original message (only its header section is returned) */
  size_t orig_len;
};

/* Append a complete RFC 5322 message (headers, CRLF line ends) to out.
 * Returns 0, SG_EINVAL (no recipients, no sender) or SG_ENOMEM. */
int dsn_build(const struct dsn_info *info, struct buf *out);

#endif
