/*
 * sl_sink - one worker of `sealload sink`: an SMTP server on its own
 * libuv loop that accepts every message and counts it.
 *
 * It speaks enough SMTP for any client (HELO/EHLO with PIPELINING and
 * 8BITMIME, MAIL, RCPT, DATA, RSET, NOOP, QUIT; the grammar is
 * core/smtp_parser's, the data phase core/smtp_data's) and stores
 * nothing unless asked: without checks or --keep a message is only
 * scanned for its end, never copied.  With sl_check (verify, decrypt) or
 * keep_dir each message is collected and checked or written to a file.
 * With several workers each has its own listening socket on the same
 * port (SO_REUSEPORT) and the kernel spreads the connections.
 *
 * Callers: sealload.c (new/free on the main thread, run on the worker
 * thread, stop from any thread).  Clients are untrusted: line lengths are
 * bounded, every command is parsed before use.  Ownership: the sink
 * borrows opts' pointers for its life and writes only its stats.
 */
#ifndef SEALGATE_SL_SINK_H
#define SEALGATE_SL_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tools/sealload/sl_check.h"
#include "tools/sealload/sl_report.h"

struct sl_sink_opts {
  const struct sockaddr *addr;
  bool reuseport;               /* several workers share the port */
  const char *hostname;         /* in the banner and EHLO */
  const struct sl_check *check; /* or NULL */
  const char *keep_dir;         /* or NULL */
  unsigned worker;
  /* -n: every worker adds to *total; the one reaching limit calls
   * on_limit(arg) (from its thread).  limit 0: none. */
  uint64_t *total;
  uint64_t limit;
  void (*on_limit)(void *arg);
  void *arg;
};

struct sl_sink;

/* Bind and listen (errors here, with err, so a busy port is reported at
 * once).  stats must outlive the sink. */
int sl_sink_new(const struct sl_sink_opts *o, struct sl_sink_stats *stats, struct sl_sink **out, char *err,
                size_t errlen);
void sl_sink_run(struct sl_sink *k);
/* Stop listening and close every connection; any thread. */
void sl_sink_stop(struct sl_sink *k);
void sl_sink_free(struct sl_sink *k);

#endif
