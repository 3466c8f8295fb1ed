/*
 * test_dsn - unit tests for core/dsn.c.
 *
 * Each report is taken apart the way a receiving MUA would: top headers
 * (unfolded), the boundary from Content-Type, the three body parts between
 * delimiter lines, and the fields inside each part.  Every report is also
 * checked for CRLF line ends, the 998-octet line limit and a boundary that
 * does not occur in the content.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/dsn.h"
#include "core/sgerr.h"

#define NOW_MS 1704164645123ull     /* Tue, 02 Jan 2024 03:04:05 UTC */
#define ARRIVAL_MS 1704078245000ull /* Mon, 01 Jan 2024 03:04:05 UTC */

static const char orig_msg[] =
    "Received: from client.example.com\r\n"
    "From: Alice <alice@example.com>\r\n"
    "To: bob@example.net\r\n"
    "Subject: quarterly figures\r\n"
    "\r\n"
    "SECRET BODY LINE\r\n";

static struct dsn_rcpt two_rcpts[2] = {
    {"bob@example.net", DSN_ACTION_FAILED, "5.1.1", "550 5.1.1 <bob@example.net>: no such user",
     "mx.example.net"},
    {"carol@example.net", DSN_ACTION_FAILED, "5.4.7", NULL, NULL},
};

static struct dsn_info sample_info(void) {
  struct dsn_info i = {
      .reporting_mta = "gw.example.com",
      .queue_id = "4F2a9b",
      .arrival_ms = ARRIVAL_MS,
      .now_ms = NOW_MS,
      .orig_sender = "alice@example.com",
      .rcpts = two_rcpts,
      .n_rcpts = 2,
      .orig_msg = orig_msg,
      .orig_len = sizeof orig_msg - 1,
  };
  return i;
}

/* ---- a small MIME reader -------------------------------------------------- */

struct report {
  struct buf raw;
  char *headers;  /* top header section, unfolded, lines joined by "\n" */
  char boundary[128];
  char *part[3];  /* whole part: its headers, empty line, content */
  const char *content[3];
};

/* CRLF everywhere (no bare CR or LF) and no line longer than 998 octets. */
static void assert_lines_ok(const char *p, size_t n) {
  size_t line = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\r') {
      assert_true(i + 1 < n && p[i + 1] == '\n');
      assert_true(line <= 998);
      line = 0;
      i++;
      continue;
    }
    assert_true(p[i] != '\n');
    line++;
  }
  assert_int_equal(line, 0); /* ends with CRLF */
}

static char *dup_range(const char *p, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

/* Unfold the top header section: "\r\n" + WSP continues the line. */
static char *unfold(const char *p, size_t n) {
  char *s = malloc(n + 1);
  size_t j = 0;
  assert_non_null(s);
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\r' && i + 2 < n && (p[i + 2] == ' ' || p[i + 2] == '\t')) {
      i++;
      continue;
    }
    if (p[i] == '\r') continue;
    s[j++] = p[i];
  }
  s[j] = '\0';
  return s;
}

/* The value of header name (at a line start), or NULL. */
static const char *find_header(const char *headers, const char *name) {
  size_t n = strlen(name);
  for (const char *l = headers; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, name, n) == 0 && l[n] == ':') return l + n + 2;
  return NULL;
}

static int header_is(const char *headers, const char *name, const char *want) {
  const char *v = find_header(headers, name);
  return v && strncmp(v, want, strlen(want)) == 0 && (v[strlen(want)] == '\n' || !v[strlen(want)]);
}

static void parse_report(struct report *r) {
  const char *p = r->raw.data;
  assert_lines_ok(p, r->raw.len);
  const char *eoh = strstr(p, "\r\n\r\n");
  assert_non_null(eoh);
  r->headers = unfold(p, (size_t)(eoh - p) + 2);
  const char *ct = find_header(r->headers, "Content-Type");
  assert_non_null(ct);
  assert_true(strncmp(ct, "multipart/report; report-type=delivery-status;", 46) == 0);
  const char *b = strstr(ct, "boundary=\"");
  assert_non_null(b);
  b += 10;
  const char *q = strchr(b, '"');
  assert_non_null(q);
  assert_true(q - b > 0 && q - b <= 70);
  memcpy(r->boundary, b, (size_t)(q - b));
  r->boundary[q - b] = '\0';
  char delim[160], close[160];
  snprintf(delim, sizeof delim, "\r\n--%s\r\n", r->boundary);
  snprintf(close, sizeof close, "\r\n--%s--\r\n", r->boundary);
  const char *cur = strstr(eoh, delim);
  for (int i = 0; i < 3; i++) {
    assert_non_null(cur);
    const char *start = cur + strlen(delim);
    const char *next = strstr(start, i < 2 ? delim : close);
    assert_non_null(next);
    r->part[i] = dup_range(start, (size_t)(next - start));
    const char *body = strstr(r->part[i], "\r\n\r\n");
    assert_non_null(body);
    r->content[i] = body + 4;
    /* The boundary must not occur inside any part. */
    assert_null(strstr(r->part[i], r->boundary));
    cur = next;
  }
  /* The close delimiter ends the message. */
  assert_int_equal(strlen(cur), strlen(close));
}

static void build_report(const struct dsn_info *info, struct report *r) {
  memset(r, 0, sizeof *r);
  assert_int_equal(dsn_build(info, &r->raw), 0);
  parse_report(r);
}

static void free_report(struct report *r) {
  buf_free(&r->raw);
  free(r->headers);
  for (int i = 0; i < 3; i++) free(r->part[i]);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_top_headers(void **state) {
  (void)state;
  struct dsn_info info = sample_info();
  struct report r;
  build_report(&info, &r);
  assert_true(header_is(r.headers, "From", "\"Mail Delivery System\" <MAILER-DAEMON@gw.example.com>"));
  assert_true(header_is(r.headers, "To", "<alice@example.com>"));
  assert_true(header_is(r.headers, "Subject", "Undelivered Mail Returned to Sender"));
  assert_true(header_is(r.headers, "Date", "Tue, 02 Jan 2024 03:04:05 +0000"));
  assert_true(header_is(r.headers, "Message-ID", "<4F2a9b.dsn.1704164645123@gw.example.com>"));
  assert_true(header_is(r.headers, "MIME-Version", "1.0"));
  assert_true(header_is(r.headers, "Auto-Submitted", "auto-replied"));
  free_report(&r);
}

static void test_parts(void **state) {
  (void)state;
  struct dsn_info info = sample_info();
  struct report r;
  build_report(&info, &r);
  assert_non_null(strstr(r.part[0], "Content-Type: text/plain; charset=us-ascii\r\n"));
  assert_non_null(strstr(r.content[0], "<bob@example.net>: failed (5.1.1)\r\n"));
  assert_non_null(strstr(r.content[0], "no such user"));
  assert_non_null(strstr(r.content[0], "<carol@example.net>: failed (5.4.7)\r\n"));
  assert_non_null(strstr(r.part[1], "Content-Type: message/delivery-status\r\n"));
  assert_non_null(strstr(r.part[2], "Content-Type: text/rfc822-headers\r\n"));
  free_report(&r);
}

static void test_delivery_status_fields(void **state) {
  (void)state;
  struct dsn_info info = sample_info();
  struct report r;
  build_report(&info, &r);
  const char *want =
      "Reporting-MTA: dns; gw.example.com\r\n"
      "X-Sealgate-Queue-ID: 4F2a9b\r\n"
      "Arrival-Date: Mon, 01 Jan 2024 03:04:05 +0000\r\n"
      "\r\n"
      "Final-Recipient: rfc822; bob@example.net\r\n"
      "Action: failed\r\n"
      "Status: 5.1.1\r\n"
      "Remote-MTA: dns; mx.example.net\r\n"
      "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: no such user\r\n"
      "\r\n"
      "Final-Recipient: rfc822; carol@example.net\r\n"
      "Action: failed\r\n"
      "Status: 5.4.7\r\n";
  assert_string_equal(r.content[1], want);
  free_report(&r);
}

static void test_headers_part_has_headers_not_body(void **state) {
  (void)state;
  struct dsn_info info = sample_info();
  struct report r;
  build_report(&info, &r);
  assert_non_null(strstr(r.content[2], "Subject: quarterly figures\r\n"));
  assert_non_null(strstr(r.content[2], "From: Alice <alice@example.com>\r\n"));
  assert_null(strstr(r.raw.data, "SECRET BODY"));
  free_report(&r);
}

static void test_delayed(void **state) {
  (void)state;
  struct dsn_rcpt d[1] = {{"bob@example.net", DSN_ACTION_DELAYED, "4.4.7", "421 try later",
                           "mx.example.net"}};
  struct dsn_info info = sample_info();
  info.rcpts = d;
  info.n_rcpts = 1;
  struct report r;
  build_report(&info, &r);
  assert_true(header_is(r.headers, "Subject", "Delayed Mail (still being retried)"));
  assert_non_null(strstr(r.content[1], "Action: delayed\r\nStatus: 4.4.7\r\n"));
  free_report(&r);
  /* Mixed: one failed makes it a bounce. */
  struct dsn_rcpt m[2] = {d[0], two_rcpts[0]};
  info.rcpts = m;
  info.n_rcpts = 2;
  build_report(&info, &r);
  assert_true(header_is(r.headers, "Subject", "Undelivered Mail Returned to Sender"));
  free_report(&r);
}

static void test_hostile_diagnostic(void **state) {
  (void)state;
  char longdiag[3000];
  memset(longdiag, 'z', sizeof longdiag - 1);
  longdiag[sizeof longdiag - 1] = '\0';
  struct dsn_rcpt h[3] = {
      {"bob@example.net\r\nBcc: victim@example.org", DSN_ACTION_FAILED, "5.1.1\r\nX: y",
       "550 no\r\nBcc: evil@example.org\r\n\r\n--=_x\r\nContent-Type: text/html\r\n\x01\x80\xff",
       "mx\r\nX-Injected: 1"},
      {"d@x", DSN_ACTION_FAILED, "9.9", longdiag, longdiag},
      {"e@x", DSN_ACTION_DELAYED, NULL, "", ""},
  };
  struct dsn_info info = sample_info();
  info.rcpts = h;
  info.n_rcpts = 3;
  info.orig_sender = "alice@example.com\r\nBcc: x@y";
  struct report r;
  build_report(&info, &r);
  /* No injected line starts anywhere in the message. */
  assert_null(strstr(r.raw.data, "\r\nBcc:"));
  assert_null(strstr(r.raw.data, "\r\nX-Injected:"));
  assert_null(strstr(r.raw.data, "\r\nX: y"));
  assert_null(strstr(r.raw.data, "\r\nContent-Type: text/html"));
  assert_non_null(strstr(r.content[1], "Diagnostic-Code: smtp; 550 no Bcc: evil@example.org "
                                       "--=_x Content-Type: text/html ???\r\n"));
  assert_non_null(strstr(r.content[1], "Status: 5.0.0\r\n")); /* bad status replaced */
  assert_non_null(strstr(r.content[1], "Action: delayed\r\nStatus: 4.0.0\r\n"));
  assert_true(header_is(r.headers, "To", "<alice@example.com Bcc: x@y>"));
  /* Empty diagnostic and remote MTA are left out, not written empty. */
  assert_non_null(strstr(r.content[1], "Final-Recipient: rfc822; e@x\r\nAction: delayed\r\n"
                                       "Status: 4.0.0\r\n"));
  assert_null(strstr(r.content[1], "smtp; \r\n"));
  /* Bounded: the 3000-byte diagnostic is cut to at most 500. */
  const char *dc = strstr(r.content[1], "Diagnostic-Code: smtp; zzz");
  assert_non_null(dc);
  assert_true(strcspn(dc, "\r") <= 600);
  free_report(&r);
}

/* Long header lines are folded under the limit; no empty line is created. */
static void test_long_header_lines(void **state) {
  (void)state;
  struct buf m = BUF_INIT;
  buf_appendf(&m, "Subject: ");
  for (int i = 0; i < 5000; i++) buf_append(&m, "w", 1);
  buf_appendf(&m, "\r\nX-Bin: a\x01\x80 b\r\n\r\nbody\r\n");
  struct dsn_info info = sample_info();
  info.orig_msg = m.data;
  info.orig_len = m.len;
  struct report r;
  build_report(&info, &r);
  assert_null(strstr(r.content[2], "\r\n\r\n"));
  assert_non_null(strstr(r.content[2], "\r\n\twww"));
  assert_non_null(strstr(r.content[2], "X-Bin: a?? b\r\n"));
  size_t ws = 0;
  for (const char *p = r.content[2]; *p; p++) ws += *p == 'w';
  assert_int_equal(ws, 5000); /* folded, nothing lost */
  free_report(&r);
  buf_free(&m);
}

/* No empty line at all: the whole thing, capped at 64 KiB; LF-only input
 * still gives CRLF output. */
static void test_no_header_end_capped(void **state) {
  (void)state;
  struct buf m = BUF_INIT;
  for (int i = 0; i < 20000; i++) buf_appendf(&m, "X-Line-%05d: v\n", i);
  struct dsn_info info = sample_info();
  info.orig_msg = m.data;
  info.orig_len = m.len;
  struct report r;
  build_report(&info, &r);
  size_t n = strlen(r.content[2]);
  assert_true(n > 60 * 1024 && n < 70 * 1024);
  assert_non_null(strstr(r.content[2], "X-Line-00000: v\r\n"));
  assert_null(strstr(r.content[2], "X-Line-19999"));
  free_report(&r);
  /* LF-only message with a header end. */
  const char *lf = "Subject: lf only\nFrom: a@b\n\nbody text\n";
  info.orig_msg = lf;
  info.orig_len = strlen(lf);
  build_report(&info, &r);
  assert_string_equal(r.content[2], "Subject: lf only\r\nFrom: a@b\r\n");
  free_report(&r);
  /* No original at all. */
  info.orig_msg = NULL;
  info.orig_len = 0;
  build_report(&info, &r);
  assert_string_equal(r.content[2], "");
  free_report(&r);
  buf_free(&m);
}

/* A message that carries the boundary the report would use gets another. */
static void test_boundary_not_in_content(void **state) {
  (void)state;
  struct dsn_info info = sample_info();
  struct report r;
  build_report(&info, &r);
  char first[128];
  snprintf(first, sizeof first, "%s", r.boundary);
  free_report(&r);
  /* The original carries the first boundary, and the next few. */
  struct buf m = BUF_INIT;
  size_t base_len = strlen(first) - 8;
  for (int i = 0; i < 4; i++) buf_appendf(&m, "X-Evil-%d: --%.*s%08x\r\n", i, (int)base_len, first, i);
  buf_appendf(&m, "\r\nbody\r\n");
  info.orig_msg = m.data;
  info.orig_len = m.len;
  build_report(&info, &r); /* parse_report checks the boundary is absent */
  assert_string_not_equal(r.boundary, first);
  assert_non_null(strstr(r.content[2], first));
  free_report(&r);
  /* The same through a recipient address. */
  struct dsn_rcpt evil[1] = {{first, DSN_ACTION_FAILED, "5.1.1", first, first}};
  info = sample_info();
  info.rcpts = evil;
  info.n_rcpts = 1;
  build_report(&info, &r);
  assert_string_not_equal(r.boundary, first);
  free_report(&r);
  buf_free(&m);
}

static void test_message_ids_differ(void **state) {
  (void)state;
  struct dsn_info info = sample_info();
  struct report a, b;
  build_report(&info, &a);
  info.now_ms += 1;
  build_report(&info, &b);
  assert_string_not_equal(find_header(a.headers, "Message-ID"), find_header(b.headers, "Message-ID"));
  assert_string_not_equal(a.boundary, b.boundary);
  free_report(&a);
  free_report(&b);
}

static void test_invalid_arguments(void **state) {
  (void)state;
  struct buf out = BUF_INIT;
  buf_append(&out, "keep", 4);
  struct dsn_info info = sample_info();
  info.n_rcpts = 0;
  assert_int_equal(dsn_build(&info, &out), SG_EINVAL);
  info = sample_info();
  info.rcpts = NULL;
  assert_int_equal(dsn_build(&info, &out), SG_EINVAL);
  info = sample_info();
  info.orig_sender = NULL;
  assert_int_equal(dsn_build(&info, &out), SG_EINVAL);
  info.orig_sender = ""; /* never bounce a bounce */
  assert_int_equal(dsn_build(&info, &out), SG_EINVAL);
  info = sample_info();
  info.reporting_mta = NULL;
  assert_int_equal(dsn_build(&info, &out), SG_EINVAL);
  assert_int_equal(dsn_build(NULL, &out), SG_EINVAL);
  assert_int_equal(out.len, 4);
  /* Appends after what is there. */
  info = sample_info();
  assert_int_equal(dsn_build(&info, &out), 0);
  assert_memory_equal(out.data, "keepFrom: ", 10);
  buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_top_headers),
      cmocka_unit_test(test_parts),
      cmocka_unit_test(test_delivery_status_fields),
      cmocka_unit_test(test_headers_part_has_headers_not_body),
      cmocka_unit_test(test_delayed),
      cmocka_unit_test(test_hostile_diagnostic),
      cmocka_unit_test(test_long_header_lines),
      cmocka_unit_test(test_no_header_end_capped),
      cmocka_unit_test(test_boundary_not_in_content),
      cmocka_unit_test(test_message_ids_differ),
      cmocka_unit_test(test_invalid_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
