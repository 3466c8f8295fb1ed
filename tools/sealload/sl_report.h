/*
 * sl_report - what a sealload run counted, client or sink, and how it is
 * printed: a few human lines, or one JSON object (--json).
 *
 * Each worker thread owns one stats struct and updates it on its loop;
 * the counters a progress line reads from another thread (client: sent,
 * acked, failed; sink: messages) are updated with relaxed atomics through
 * the SL_COUNT macro.  After the workers ended, sealload.c merges their
 * structs with sl_report_*_merge and prints the sum.  Nothing here is
 * untrusted: reply codes were range-checked by the parser (100..599).
 */
#ifndef SEALGATE_SL_REPORT_H
#define SEALGATE_SL_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tools/sealload/sl_hist.h"

#define SL_COUNT(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)
#define SL_READ(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* Failures that are not an SMTP reply. */
enum sl_fail {
  SL_FAIL_CONNECT = 0, /* TCP connect, or banner / EHLO refused: per attempt */
  SL_FAIL_TIMEOUT,     /* no reply within --timeout during a transaction */
  SL_FAIL_LOST,        /* connection closed or reset during a transaction */
  SL_FAIL_PROTO,       /* malformed reply, or a reply before the data was written */
  SL_FAIL_N
};

struct sl_client_stats {
  uint64_t sent;         /* transactions started (MAIL written) */
  uint64_t acked;        /* 2xx to the end of data */
  uint64_t failed;       /* started, not acked */
  uint64_t unsent;       /* due but never started (time up, or every session gave up) */
  uint64_t bytes_acked;  /* message octets of acked messages */
  uint64_t connections;  /* connections that got through EHLO */
  uint64_t fail[SL_FAIL_N];
  uint64_t replies[600]; /* the final reply of each transaction, by code */
  struct sl_hist lat;    /* microseconds from the scheduled start, acked only */
};

struct sl_sink_stats {
  uint64_t connections, messages, bytes, rcpts;
  uint64_t verified, verify_failed, decrypted, decrypt_failed, kept, keep_failed;
  uint64_t first_ns, last_ns; /* first MAIL, last end of data (uv_hrtime) */
};

/* The run's parameters, printed with the figures. */
struct sl_run_info {
  const char *target;     /* "HOST:PORT" */
  unsigned sessions, threads, rcpts;
  double rate;            /* 0: closed loop */
  size_t msg_size;
  bool reuse, verify, decrypt, keep;
  double elapsed_s;
};

void sl_report_client_init(struct sl_client_stats *s);
void sl_report_client_merge(struct sl_client_stats *dst, const struct sl_client_stats *src);
void sl_report_client_print(FILE *f, const struct sl_run_info *ri, const struct sl_client_stats *s, bool json);

void sl_report_sink_merge(struct sl_sink_stats *dst, const struct sl_sink_stats *src);
void sl_report_sink_print(FILE *f, const struct sl_run_info *ri, const struct sl_sink_stats *s, bool json);

extern const char *const sl_fail_names[SL_FAIL_N]; /* "connect-failed", ... */

#endif
