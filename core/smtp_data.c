/*
 * smtp_data - see smtp_data.h.
 *
 * The machine has one state per position that matters for the end marker:
 *
 *   BOL     at the start of a line (also the initial state: DATA's own CRLF
 *           counts as the line end before the first line)
 *   DOT     a "." was the first octet of the line
 *   DOT_CR  "." CR at the start of a line: LF now means the end
 *   TEXT    inside a line
 *   CR      a CR inside a line: LF now ends the line, anything else makes
 *           the CR a bare CR
 *   DONE    the end marker was consumed
 *
 * A line-leading dot is always removed: it is either the end marker or, per
 * RFC 5321 4.5.2, "the first character is deleted" from any other line that
 * starts with a period.  So the dot is never held back and re-emitted.
 * Bare LF is ordinary line content (flagged), never a line end, which is
 * what makes "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n" etc. harmless.
 *
 * Speed: inside a line the machine jumps from CR to CR with memchr() and
 * appends whole runs; runs that are contiguous in the input (a line and its
 * CRLF, many lines in a row) are merged into one buf_append().  The output
 * and every counter depend only on the byte stream, never on how it was
 * split: the limits cut the output at an exact octet, and a CR held over a
 * call boundary is emitted from a constant.
 */
#include "core/smtp_data.h"

#include <string.h>
#include <strings.h>

#include "core/sgerr.h"

enum { ST_BOL = 0, ST_DOT, ST_DOT_CR, ST_TEXT, ST_CR, ST_DONE };

#define STOP_APPENDING (SMTP_DATA_TOO_BIG | SMTP_DATA_LINE_TOO_LONG | SMTP_DATA_NOMEM)

static const char received[] = "received:";
#define RECEIVED_LEN (sizeof received - 1)

void smtp_data_init(struct smtp_data *d, uint64_t max_size, uint64_t max_line) {
  memset(d, 0, sizeof *d);
  d->max_size = max_size;
  d->max_line = max_line;
  d->state = ST_BOL;
  d->in_header = true;
}

/* The pending output run: [start, end) in the caller's input, appended
 * lazily so that adjacent pieces become one append. */
struct run {
  const char *start;
  const char *end;
  struct buf *out;
};

static void run_flush(struct smtp_data *d, struct run *r) {
  if (r->start != r->end && !(d->flags & SMTP_DATA_NOMEM)) {
    if (buf_append(r->out, r->start, (size_t)(r->end - r->start))) d->flags |= SMTP_DATA_NOMEM;
  }
  r->start = r->end = NULL;
}

/*
 * Account for n octets of unstuffed message (content: part of the line, not
 * its CRLF) and return how many of them may still be appended: the output
 * stops exactly at the first octet that breaks a limit.
 */
static uint64_t data_account(struct smtp_data *d, uint64_t n, bool content) {
  uint64_t ok = n;
  if (content) {
    if (n > d->max_line || d->line_len > d->max_line - n) {
      uint64_t room = d->line_len < d->max_line ? d->max_line - d->line_len : 0;
      if (room < ok) ok = room;
      d->flags |= SMTP_DATA_LINE_TOO_LONG;
    }
    d->line_len += n;
  }
  if (n > d->max_size || d->size > d->max_size - n) {
    uint64_t room = d->size < d->max_size ? d->max_size - d->size : 0;
    if (room < ok) ok = room;
    d->flags |= SMTP_DATA_TOO_BIG;
  }
  d->size = (d->size > UINT64_MAX - n) ? UINT64_MAX : d->size + n;
  return ok;
}

/* Emit n octets at p: from the input when in_input, else from a constant
 * (a CR or CRLF whose CR arrived in an earlier call). */
static void data_emit(struct smtp_data *d, struct run *r, const char *p, size_t n, bool content, bool in_input) {
  bool appending = !(d->flags & STOP_APPENDING);
  size_t ok = (size_t)data_account(d, n, content);
  if (!appending || ok == 0) return;
  if (!in_input) {
    run_flush(d, r);
    if (!(d->flags & SMTP_DATA_NOMEM) && buf_append(r->out, p, ok)) d->flags |= SMTP_DATA_NOMEM;
    return;
  }
  if (r->end != p) {
    run_flush(d, r);
    r->start = p;
  }
  r->end = p + ok;
}

/* Collect the first octets of a header line to recognise "Received:". */
static void data_header_prefix(struct smtp_data *d, const char *p, size_t n) {
  size_t take = RECEIVED_LEN - d->hdr_prefix_len;
  if (take > n) take = n;
  memcpy(d->hdr_prefix + d->hdr_prefix_len, p, take);
  d->hdr_prefix_len += (unsigned)take;
  if (d->hdr_prefix_len < RECEIVED_LEN) return;
  d->line_is_received = strncasecmp(d->hdr_prefix, received, RECEIVED_LEN) == 0;
  if (d->line_is_received && d->received_count < UINT32_MAX) d->received_count++;
}

/* Inside a line: everything up to the next CR is content. */
static const char *data_text(struct smtp_data *d, struct run *r, const char *p, const char *end) {
  const char *cr = memchr(p, '\r', (size_t)(end - p));
  const char *stop = cr ? cr : end;
  size_t n = (size_t)(stop - p);
  if (n > 0) {
    if (d->in_header && d->hdr_prefix_len < RECEIVED_LEN) data_header_prefix(d, p, n);
    if (!(d->flags & SMTP_DATA_BARE_NEWLINE) && memchr(p, '\n', n)) d->flags |= SMTP_DATA_BARE_NEWLINE;
    data_emit(d, r, p, n, true, true);
  }
  if (!cr) return end;
  d->state = ST_CR;
  return cr + 1; /* the CR is emitted once we know what follows it */
}

/* A CR (consumed just before p, possibly in an earlier call) was not
 * followed by LF: it is a content octet, and a smuggling signal. */
static void data_bare_cr(struct smtp_data *d, struct run *r, const char *in, const char *p) {
  d->flags |= SMTP_DATA_BARE_NEWLINE;
  if (d->in_header && d->hdr_prefix_len < RECEIVED_LEN) data_header_prefix(d, "\r", 1);
  if (p > in) data_emit(d, r, p - 1, 1, true, true);
  else data_emit(d, r, "\r", 1, true, false);
  d->state = ST_TEXT;
}

/* CR LF inside the data (p is on the LF): the line ends; an empty line
 * ends the header section. */
static void data_crlf(struct smtp_data *d, struct run *r, const char *in, const char *p) {
  if (p > in) data_emit(d, r, p - 1, 2, false, true);
  else data_emit(d, r, "\r\n", 2, false, false);
  if (d->line_len == 0) d->in_header = false;
  d->line_len = 0;
  d->hdr_prefix_len = 0;
  d->line_is_received = false;
  d->state = ST_BOL;
}

size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, struct buf *out, bool *done_out) {
  struct run r = {NULL, NULL, out};
  const char *p = in, *end = in + len;
  while (p < end && d->state != ST_DONE) {
    switch (d->state) {
      case ST_BOL:
        if (*p == '.') p++, d->state = ST_DOT;
        else d->state = ST_TEXT;
        break;
      case ST_DOT:
        if (*p == '\r') p++, d->state = ST_DOT_CR;
        else d->state = ST_TEXT;
        break;
      case ST_DOT_CR:
        if (*p == '\n') p++, d->state = ST_DONE;
        else data_bare_cr(d, &r, in, p);
        break;
      case ST_CR:
        if (*p == '\n') data_crlf(d, &r, in, p++);
        else data_bare_cr(d, &r, in, p);
        break;
      default:
        p = data_text(d, &r, p, end);
        break;
    }
  }
  run_flush(d, &r);
  if (done_out) *done_out = d->state == ST_DONE;
  return (size_t)(p - in);
}
