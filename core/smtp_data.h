/*
 * smtp_data - the DATA phase byte stream: end detection, dot-unstuffing
 * and the checks that must see every line.
 *
 * A pure, incremental state machine: bytes may arrive split anywhere, and
 * smtp_data_feed() may be called any number of times until it reports the
 * end.  Called by the SMTP session; fed untrusted bytes.
 *
 * The end of data is only CR LF "." CR LF (RFC 5321 4.1.1.4).  SMTP
 * smuggling defence: a bare LF or a bare CR anywhere in the data is never
 * taken as a line end; the message is still read to its real end and then
 * rejected (flag SMTP_DATA_BARE_NEWLINE), so nothing after a fake end can
 * become a command.  The message is stored with CRLF line ends exactly as
 * received, minus the dot-stuffing.
 *
 * Over-size or over-long-line messages keep being read to their end (the
 * client must not desynchronise) but are no longer appended to out.
 */
#ifndef SEALGATE_SMTP_DATA_H
#define SEALGATE_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum smtp_data_flags {
  SMTP_DATA_TOO_BIG = 1u << 0,        /* more than max_size octets: 552 5.3.4 */
  SMTP_DATA_LINE_TOO_LONG = 1u << 1,  /* a line over max_line octets: 552 5.3.4 */
  SMTP_DATA_BARE_NEWLINE = 1u << 2,   /* bare CR or LF seen: 554 5.6.11 */
  SMTP_DATA_NOMEM = 1u << 3,          /* appending failed: 451 4.3.0 */
};

struct smtp_data {
  /* configuration */
  uint64_t max_size;
  uint64_t max_line;
  /* state, private */
  int state;
  uint64_t line_len;
  bool in_header;        /* still in the RFC 5322 header section */
  bool line_is_received; /* current header line starts with "Received:" */
  char hdr_prefix[10];
  unsigned hdr_prefix_len;
  /* results */
  uint64_t size;             /* octets of the unstuffed message so far */
  unsigned received_count;   /* Received: header fields in the header section */
  unsigned flags;            /* enum smtp_data_flags */
};

/* The limits are literal (0 refuses any octet); UINT64_MAX means none.
 * max_line counts the octets of a line after unstuffing, without its CRLF
 * (a bare CR or LF is part of the line). */
void smtp_data_init(struct smtp_data *d, uint64_t max_size, uint64_t max_line);

/*
 * Dot-unstuffing follows RFC 5321 4.5.2: the first octet of any line that
 * starts with "." is deleted (so ".." gives ".", and ".x" gives "x").
 * When a limit is hit, out holds exactly the unstuffed message up to the
 * octet that broke it, whatever the split of the input; size and
 * received_count keep counting to the end.
 *
 * Consume up to len bytes.  Appends the unstuffed message to out (without
 * the terminating ".CRLF"; the final CRLF of the last line is kept).
 * Returns the number of bytes consumed; *done_out becomes true when the end
 * marker was consumed, and then bytes after it (pipelined commands) are not
 * consumed.
 */
size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, struct buf *out, bool *done_out);

#endif
