/*
 * dsn - see dsn.h.
 *
 * The report is a multipart/report (RFC 6522) with three parts: a human
 * explanation, the message/delivery-status fields (RFC 3464), and the
 * original's header section as text/rfc822-headers.  Everything that came
 * from outside (addresses, the next hop's reply, the original headers) is
 * made printable 7-bit ASCII and kept under the 998-octet line limit, so a
 * hostile peer can neither inject header lines nor break the MIME structure.
 * The boundary is chosen so that it provably does not occur in the content.
 */
#include "core/dsn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/sgerr.h"

#define DSN_TEXT_MAX 500             /* one sanitised value, e.g. a diagnostic */
#define DSN_HEADERS_MAX (64 * 1024)  /* the returned header section */
#define DSN_FOLD_AT 900              /* split longer header lines (limit 998) */
#define DSN_QID_IN_BOUNDARY 32       /* keeps the boundary within 70 chars */
#define DSN_BOUNDARY_SIZE 96

/* A sanitised value: printable ASCII only, one line, at most DSN_TEXT_MAX. */
struct dsn_str {
  char s[DSN_TEXT_MAX + 1];
};

/* Runs of CR, LF and TAB become one space (a multi-line SMTP reply reads as
 * one line); other control and non-ASCII bytes become '?'. */
static const char *sanitize(struct dsn_str *out, const char *in) {
  size_t j = 0;
  int space = 0;
  for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && j < DSN_TEXT_MAX;
       p++) {
    if (*p == '\r' || *p == '\n' || *p == '\t') {
      if (!space && j > 0) out->s[j++] = ' ';
      space = 1;
      continue;
    }
    space = 0;
    out->s[j++] = (*p < 0x20 || *p >= 0x7f) ? '?' : (char)*p;
  }
  while (j > 0 && out->s[j - 1] == ' ') j--;
  out->s[j] = '\0';
  return out->s;
}

/* Host names and queue ids go into Message-ID and the boundary: keep only
 * characters that are safe in both. */
static const char *sanitize_token(struct dsn_str *out, const char *in, size_t max,
                                  const char *fallback) {
  size_t j = 0;
  for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && j < max; p++) {
    int ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
             *p == '.' || *p == '-';
    out->s[j++] = ok ? (char)*p : '-';
  }
  out->s[j] = '\0';
  if (j == 0) snprintf(out->s, sizeof out->s, "%s", fallback);
  return out->s;
}

/* RFC 5322 date-time in UTC, independent of the locale. */
static void fmt_date(char out[40], uint64_t ms) {
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999) {
    t = 0;
    gmtime_r(&t, &tm);
  }
  snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
           months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* "class.subject.detail" (RFC 3463); anything else becomes the generic
 * code for the action, so a broken next hop cannot confuse report readers. */
static const char *status_of(const struct dsn_rcpt *r) {
  const char *s = r->status;
  int ok = s && (s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] == '.';
  if (ok) {
    const char *p = s + 2;
    for (int field = 0; ok && field < 2; field++) {
      size_t n = 0;
      while (p[n] >= '0' && p[n] <= '9') n++;
      ok = n >= 1 && n <= 3 && (field == 0 ? p[n] == '.' : p[n] == '\0');
      p += n + 1;
    }
  }
  if (ok) return s;
  return r->action == DSN_ACTION_DELAYED ? "4.0.0" : "5.0.0";
}

static int all_delayed(const struct dsn_info *info) {
  for (size_t i = 0; i < info->n_rcpts; i++)
    if (info->rcpts[i].action != DSN_ACTION_DELAYED) return 0;
  return 1;
}

static const char *action_word(enum dsn_action a) {
  return a == DSN_ACTION_DELAYED ? "delayed" : "failed";
}

/* ---- part 1: the explanation for people ---------------------------------- */

static int build_text(const struct dsn_info *info, struct buf *b) {
  struct dsn_str host, addr, diag, mta;
  sanitize(&host, info->reporting_mta);
  int delayed = all_delayed(info);
  int rc = buf_appendf(b, "This is the mail system at host %s.\r\n\r\n", host.s);
  if (!rc && delayed)
    rc = buf_appendf(b, "Your message could not be delivered yet to the recipients below.\r\n"
                        "The mail system will keep trying; you do not need to send it again.\r\n");
  if (!rc && !delayed)
    rc = buf_appendf(b, "Your message could not be delivered to one or more recipients.\r\n"
                        "Its headers are attached below.\r\n");
  for (size_t i = 0; !rc && i < info->n_rcpts; i++) {
    const struct dsn_rcpt *r = &info->rcpts[i];
    rc = buf_appendf(b, "\r\n<%s>: %s (%s)\r\n", sanitize(&addr, r->addr), action_word(r->action),
                     status_of(r));
    /* Separate lines: each value may be DSN_TEXT_MAX long, together they
     * would pass the 998-octet line limit. */
    if (!rc && sanitize(&mta, r->remote_mta)[0])
      rc = buf_appendf(b, "    Remote host: %s\r\n", mta.s);
    if (!rc && sanitize(&diag, r->diagnostic)[0])
      rc = buf_appendf(b, "    Reason: %s\r\n", diag.s);
  }
  return rc ? SG_ENOMEM : 0;
}

/* ---- part 2: message/delivery-status ------------------------------------- */

/* Optional fields whose value sanitises to nothing are left out. */
static int build_rcpt_fields(const struct dsn_rcpt *r, struct buf *b) {
  struct dsn_str addr, mta, diag;
  sanitize(&mta, r->remote_mta);
  sanitize(&diag, r->diagnostic);
  int rc = buf_appendf(b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n",
                       sanitize(&addr, r->addr), action_word(r->action), status_of(r));
  if (!rc && mta.s[0]) rc = buf_appendf(b, "Remote-MTA: dns; %s\r\n", mta.s);
  if (!rc && diag.s[0]) rc = buf_appendf(b, "Diagnostic-Code: smtp; %s\r\n", diag.s);
  return rc ? SG_ENOMEM : 0;
}

static int build_status(const struct dsn_info *info, struct buf *b) {
  struct dsn_str host, qid;
  char arrival[40];
  fmt_date(arrival, info->arrival_ms);
  int rc = buf_appendf(b,
                       "Reporting-MTA: dns; %s\r\nX-Sealgate-Queue-ID: %s\r\n"
                       "Arrival-Date: %s\r\n",
                       sanitize(&host, info->reporting_mta), sanitize(&qid, info->queue_id),
                       arrival);
  for (size_t i = 0; !rc && i < info->n_rcpts; i++) rc = build_rcpt_fields(&info->rcpts[i], b);
  return rc ? SG_ENOMEM : 0;
}

/* ---- part 3: text/rfc822-headers ------------------------------------------ */

/* Length of the header section: up to the first empty line.  Capped either
 * way, so a message without one (or with huge headers) bounces small. */
static size_t header_section_len(const char *m, size_t len) {
  size_t i = 0;
  while (i < len) {
    if (m[i] == '\n' || (m[i] == '\r' && i + 1 < len && m[i + 1] == '\n')) break;
    const char *nl = memchr(m + i, '\n', len - i);
    i = nl ? (size_t)(nl - m) + 1 : len;
  }
  return i < DSN_HEADERS_MAX ? i : DSN_HEADERS_MAX;
}

/* One line of the original, without its line end: 7-bit printable (TAB
 * kept), folded into continuation lines when it is too long. */
static int put_header_line(struct buf *b, const char *p, size_t n) {
  char chunk[DSN_FOLD_AT + 4];
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (j == DSN_FOLD_AT) {
      memcpy(chunk + j, "\r\n\t", 3);
      if (buf_append(b, chunk, j + 3)) return SG_ENOMEM;
      j = 0;
    }
    chunk[j++] = (c == '\t' || (c >= 0x20 && c < 0x7f)) ? (char)c : '?';
  }
  memcpy(chunk + j, "\r\n", 2);
  return buf_append(b, chunk, j + 2) ? SG_ENOMEM : 0;
}

static int build_headers(const struct dsn_info *info, struct buf *b) {
  const char *m = info->orig_msg;
  size_t len = m ? header_section_len(m, info->orig_len) : 0;
  size_t i = 0;
  while (i < len) {
    const char *nl = memchr(m + i, '\n', len - i);
    size_t end = nl ? (size_t)(nl - m) : len;
    size_t n = end - i;
    if (n > 0 && m[end - 1] == '\r') n--;
    if (put_header_line(b, m + i, n)) return SG_ENOMEM;
    i = end + 1;
  }
  return 0;
}

/* ---- boundary ------------------------------------------------------------ */

/* Candidates are base "." and eight hex digits.  base starts with "=_",
 * which cannot occur inside base again, so occurrences of candidates in the
 * content never overlap; the candidates actually present are therefore
 * fewer than the content's length, and one pass that collects them finds a
 * free one.  Normally none is present and the counter is 0. */
struct used_set {
  unsigned long *v;
  size_t n, cap;
};

static int hex8(const char *p, unsigned long *v_out) {
  unsigned long v = 0;
  for (int i = 0; i < 8; i++) {
    char c = p[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return 0;
    v = v << 4 | (unsigned long)d;
  }
  *v_out = v;
  return 1;
}

static int collect_used(const struct buf *part, const char *base, size_t blen,
                        struct used_set *u) {
  if (!part->data) return 0; /* empty part */
  const char *p = part->data, *end = part->data + part->len;
  while ((size_t)(end - p) >= blen + 9) {
    const char *hit = memmem(p, (size_t)(end - p), base, blen);
    if (!hit || (size_t)(end - hit) < blen + 9) break;
    unsigned long v;
    if (hit[blen] == '.' && hex8(hit + blen + 1, &v)) {
      if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 16;
        unsigned long *nv = realloc(u->v, cap * sizeof *nv);
        if (!nv) return SG_ENOMEM;
        u->v = nv;
        u->cap = cap;
      }
      u->v[u->n++] = v;
    }
    p = hit + 1;
  }
  return 0;
}

static int cmp_ulong(const void *a, const void *b) {
  unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
  return (x > y) - (x < y);
}

static int pick_boundary(const struct dsn_info *info, struct buf parts[3],
                         char out[DSN_BOUNDARY_SIZE]) {
  struct dsn_str qid;
  sanitize_token(&qid, info->queue_id, DSN_QID_IN_BOUNDARY, "noid");
  char base[72];
  int blen = snprintf(base, sizeof base, "=_%s.%llu", qid.s, (unsigned long long)info->now_ms);
  struct used_set u = {0};
  int rc = 0;
  for (int i = 0; i < 3 && !rc; i++) rc = collect_used(&parts[i], base, (size_t)blen, &u);
  if (rc) {
    free(u.v);
    return rc;
  }
  if (u.n) qsort(u.v, u.n, sizeof *u.v, cmp_ulong);
  unsigned long pick = 0;
  for (size_t i = 0; i < u.n && u.v[i] <= pick; i++)
    if (u.v[i] == pick) pick++;
  free(u.v);
  /* pick <= number of candidates found < 2^32: eight hex digits suffice. */
  snprintf(out, DSN_BOUNDARY_SIZE, "%s.%08x", base, (unsigned)pick);
  return 0;
}

/* ---- assembly ------------------------------------------------------------ */

static int build_top(const struct dsn_info *info, const char *boundary, struct buf *out) {
  struct dsn_str host, to, id_host, id_qid;
  char date[40];
  fmt_date(date, info->now_ms);
  sanitize(&host, info->reporting_mta);
  sanitize_token(&id_host, info->reporting_mta, 255, "localhost");
  sanitize_token(&id_qid, info->queue_id, 255, "noid");
  int rc = buf_appendf(out,
                       "From: \"Mail Delivery System\" <MAILER-DAEMON@%s>\r\n"
                       "To: <%s>\r\nSubject: %s\r\nDate: %s\r\n"
                       "Message-ID: <%s.dsn.%llu@%s>\r\nMIME-Version: 1.0\r\n"
                       "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                       "\tboundary=\"%s\"\r\nAuto-Submitted: auto-replied\r\n\r\n"
                       "This is a MIME-encapsulated message.\r\n",
                       host.s, sanitize(&to, info->orig_sender),
                       all_delayed(info) ? "Delayed Mail (still being retried)"
                                         : "Undelivered Mail Returned to Sender",
                       date, id_qid.s, (unsigned long long)info->now_ms, id_host.s, boundary);
  return rc ? SG_ENOMEM : 0;
}

static int build_parts(const char *boundary, struct buf parts[3], struct buf *out) {
  static const char *const heads[3] = {
      "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n",
      "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n",
      "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n",
  };
  int rc = 0;
  for (int i = 0; i < 3 && !rc; i++) {
    rc = buf_appendf(out, "\r\n--%s\r\n%s\r\n", boundary, heads[i]);
    if (!rc) rc = buf_append(out, parts[i].data, parts[i].len);
  }
  if (!rc) rc = buf_appendf(out, "\r\n--%s--\r\n", boundary);
  return rc ? SG_ENOMEM : 0;
}

static int dsn_info_valid(const struct dsn_info *info) {
  if (!info || !info->reporting_mta || !info->queue_id) return 0;
  if (!info->orig_sender || !info->orig_sender[0]) return 0;
  if (!info->rcpts || info->n_rcpts == 0) return 0;
  for (size_t i = 0; i < info->n_rcpts; i++)
    if (!info->rcpts[i].addr) return 0;
  return !(info->orig_len && !info->orig_msg);
}

int dsn_build(const struct dsn_info *info, struct buf *out) {
  if (!out || !dsn_info_valid(info)) return SG_EINVAL;
  struct buf parts[3] = {BUF_INIT, BUF_INIT, BUF_INIT};
  char boundary[DSN_BOUNDARY_SIZE];
  size_t out0 = out->len;
  int rc = build_text(info, &parts[0]);
  if (!rc) rc = build_status(info, &parts[1]);
  if (!rc) rc = build_headers(info, &parts[2]);
  if (!rc) rc = pick_boundary(info, parts, boundary);
  if (!rc) rc = build_top(info, boundary, out);
  if (!rc) rc = build_parts(boundary, parts, out);
  for (int i = 0; i < 3; i++) buf_free(&parts[i]);
  if (rc) {
    out->len = out0; /* leave out as it was */
    if (out->data) out->data[out0] = '\0';
  }
  return rc;
}
