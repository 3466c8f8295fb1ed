/* Unit tests for crypto/mime.c: the header/entity split and its rules for
 * odd messages, the canonical CRLF form, re-encoding to 7-bit through
 * GMime (checked by decoding with this file's own QP and base64 decoders,
 * not GMime's), the depth and part limits, garbage input, and the From:
 * address.  Every successful split is also checked for the canonical
 * properties: 7-bit, CRLF only, no line over 998 octets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/sgerr.h"
#include "crypto/mime.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static void assert_canonical(const char *p, size_t n) {
  size_t line = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    assert_true(c != 0 && c < 0x80);
    if (c == '\r') {
      assert_true(i + 1 < n && p[i + 1] == '\n');
      assert_true(line <= 998);
      line = 0;
      i++;
    } else {
      assert_true(c != '\n'); /* a lone LF */
      line++;
    }
  }
  assert_true(line <= 998);
}

/* Splits msg (n bytes, or strlen when n is 0), which must succeed. */
static void split_ok(const char *msg, size_t n, struct mime_split *s) {
  int rc = mime_split(msg, n ? n : strlen(msg), s);
  assert_int_equal(rc, 0);
  assert_non_null(s->outer);
  assert_non_null(s->entity);
  assert_canonical(s->entity, s->entity_len);
}

static void assert_bytes(const char *got, size_t got_len, const char *want, size_t want_len) {
  if (got_len != want_len || memcmp(got, want, want_len) != 0) {
    print_error("got  (%zu) [%.*s]\nwant (%zu) [%.*s]\n", got_len, (int)got_len, got, want_len,
                (int)want_len, want);
    fail();
  }
}

#define assert_str_bytes(got, got_len, want) assert_bytes(got, got_len, want, strlen(want))

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* RFC 2045 6.7: "=XX" is an octet, "=" CRLF a soft break, CRLF a line
 * break; trailing whitespace never occurs in our input.  Returns a malloc'd
 * buffer and its length. */
static char *qp_decode(const char *p, size_t n, size_t *len_out) {
  char *out = malloc(n + 1);
  size_t o = 0;
  assert_non_null(out);
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '=') {
      out[o++] = p[i];
    } else if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
      i += 2;
    } else {
      assert_true(i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0);
      out[o++] = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
      i += 2;
    }
  }
  *len_out = o;
  return out;
}

static int b64val(char c) {
  const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *hit = c ? strchr(a, c) : NULL;
  return hit ? (int)(hit - a) : -1;
}

static char *b64_decode(const char *p, size_t n, size_t *len_out) {
  char *out = malloc(n + 1);
  size_t o = 0;
  unsigned acc = 0, bits = 0;
  assert_non_null(out);
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\r' || p[i] == '\n' || p[i] == '=') continue;
    int v = b64val(p[i]);
    assert_true(v >= 0);
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  *len_out = o;
  return out;
}

/* The body of the part whose header block contains marker: from after its
 * empty line to the CRLF before the next "--boundary" (or the end). */
static const char *part_body(const struct mime_split *s, const char *marker,
                             const char *boundary, size_t *len_out) {
  const char *m = strstr(s->entity, marker);
  assert_non_null(m);
  const char *body = strstr(m, "\r\n\r\n");
  assert_non_null(body);
  body += 4;
  char delim[128];
  snprintf(delim, sizeof delim, "\r\n--%s", boundary ? boundary : "");
  const char *end = boundary ? strstr(body, delim) : NULL;
  *len_out = end ? (size_t)(end - body) : strlen(body);
  return body;
}

/* The part body must be in enc ("quoted-printable" or "base64") and decode
 * to want. */
static void assert_decodes_to(const char *body, size_t n, const char *enc, const char *want,
                              size_t want_len) {
  size_t len;
  char *got = strcmp(enc, "base64") == 0 ? b64_decode(body, n, &len) : qp_decode(body, n, &len);
  assert_bytes(got, len, want, want_len);
  free(got);
}

/* ------------------------------------------------------------------------ */
/* Split and fast path                                                      */

static void test_fast_plain_text_split(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("Received: from a by b\r\nFrom: a@b.example\r\nMIME-Version: 1.0\r\n"
           "Subject: hi\r\n\r\nHello\r\nworld\r\n",
           0, &s);
  assert_str_bytes(s.outer, s.outer_len,
                   "Received: from a by b\r\nFrom: a@b.example\r\nSubject: hi\r\n");
  assert_str_bytes(s.entity, s.entity_len,
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello\r\nworld\r\n");
  assert_false(s.reencoded);
  mime_split_free(&s);
}

static void test_content_fields_go_to_entity(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("To: x@y\r\ncontent-type: text/html\r\nMime-Version : 1.0\r\n"
           "Content-ID: <1@x>\r\nDate: now\r\n\r\n<p>hi</p>\r\n",
           0, &s);
  assert_str_bytes(s.outer, s.outer_len, "To: x@y\r\nDate: now\r\n");
  assert_str_bytes(s.entity, s.entity_len,
                   "content-type: text/html\r\nContent-ID: <1@x>\r\n\r\n<p>hi</p>\r\n");
  assert_false(s.reencoded);
  mime_split_free(&s);
}

static void test_lf_and_lone_cr_become_crlf(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("From: a@b\nSubject: s\n\nline one\nline two\rline three\r\n", 0, &s);
  assert_str_bytes(s.outer, s.outer_len, "From: a@b\r\nSubject: s\r\n");
  assert_str_bytes(s.entity, s.entity_len,
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                   "line one\r\nline two\r\nline three\r\n");
  assert_false(s.reencoded);
  mime_split_free(&s);
}

static void test_folded_subject_stays_outer_folded(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("Subject: a long\r\n\tsubject\n  folded twice\r\nTo: t@x\r\n\r\nbody\r\n", 0, &s);
  assert_str_bytes(s.outer, s.outer_len,
                   "Subject: a long\r\n\tsubject\r\n  folded twice\r\nTo: t@x\r\n");
  mime_split_free(&s);
}

static void test_folded_content_field_stays_in_entity(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("From: a@b\r\nContent-Type: text/plain;\r\n\tcharset=us-ascii;\r\n format=flowed\r\n"
           "Subject: s\r\n\r\nbody\r\n",
           0, &s);
  assert_str_bytes(s.outer, s.outer_len, "From: a@b\r\nSubject: s\r\n");
  assert_str_bytes(s.entity, s.entity_len,
                   "Content-Type: text/plain;\r\n\tcharset=us-ascii;\r\n format=flowed\r\n"
                   "\r\nbody\r\n");
  mime_split_free(&s);
}

static void test_no_body(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("From: a@b\r\nSubject: s\r\n\r\n", 0, &s);
  assert_str_bytes(s.outer, s.outer_len, "From: a@b\r\nSubject: s\r\n");
  assert_str_bytes(s.entity, s.entity_len, "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
  mime_split_free(&s);
}

static void test_headers_only_without_empty_line(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("From: a@b\r\nSubject: no end", 0, &s);
  assert_str_bytes(s.outer, s.outer_len, "From: a@b\r\nSubject: no end\r\n");
  assert_str_bytes(s.entity, s.entity_len, "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
  mime_split_free(&s);
}

static void test_first_line_not_a_field_means_no_header(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("just some text\r\nFrom: not a header now\r\n", 0, &s);
  assert_int_equal(s.outer_len, 0);
  assert_str_bytes(s.entity, s.entity_len,
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                   "just some text\r\nFrom: not a header now\r\n");
  mime_split_free(&s);
}

static void test_garbage_line_ends_header(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("From: a@b\r\n: no name\r\nSubject: body now\r\n\r\ntext\r\n", 0, &s);
  assert_str_bytes(s.outer, s.outer_len, "From: a@b\r\n");
  assert_str_bytes(s.entity, s.entity_len,
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                   ": no name\r\nSubject: body now\r\n\r\ntext\r\n");
  mime_split_free(&s);
}

static void test_empty_message(void **state) {
  (void)state;
  struct mime_split s;
  assert_int_equal(mime_split("", 0, &s), 0);
  assert_int_equal(s.outer_len, 0);
  assert_str_bytes(s.entity, s.entity_len, "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
  mime_split_free(&s);
}

/* ------------------------------------------------------------------------ */
/* Re-encoding                                                              */

static const char utf8_text[] =
    "Gr\xc3\xbc\xc3\x9f" "e aus M\xc3\xbcnchen, this line is mostly ASCII text.\r\n"
    "A second line with trailing space and a tab:\r\n"
    "From the start of a line.\r\n";

static void test_8bit_text_becomes_qp(void **state) {
  (void)state;
  char msg[1024];
  snprintf(msg, sizeof msg,
           "From: a@b\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n%s",
           utf8_text);
  struct mime_split s;
  split_ok(msg, 0, &s);
  assert_true(s.reencoded);
  assert_str_bytes(s.outer, s.outer_len, "From: a@b\r\n");
  assert_non_null(strstr(s.entity, "Content-Type: text/plain; charset=utf-8\r\n"));
  assert_non_null(strstr(s.entity, "Content-Transfer-Encoding: quoted-printable\r\n"));
  assert_null(strstr(s.entity, "8bit"));
  size_t n;
  const char *body = part_body(&s, "Content-Type", NULL, &n);
  assert_decodes_to(body, n, "quoted-printable", utf8_text, strlen(utf8_text));
  mime_split_free(&s);
}

static void test_long_line_becomes_qp(void **state) {
  (void)state;
  static const char head[] = "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\n";
  char *text = malloc(5003), *msg = malloc(sizeof head + 5003);
  memset(text, 'x', 5000);
  memcpy(text + 5000, "\r\n", 3);
  snprintf(msg, sizeof head + 5003, "%s%s", head, text);
  struct mime_split s;
  split_ok(msg, 0, &s);
  assert_true(s.reencoded);
  assert_non_null(strstr(s.entity, "Content-Transfer-Encoding: quoted-printable\r\n"));
  size_t n;
  const char *body = part_body(&s, "Content-Type", NULL, &n);
  for (const char *l = body; l < body + n;) { /* RFC 2045: at most 76 */
    const char *e = strstr(l, "\r\n");
    size_t len = e ? (size_t)(e - l) : strlen(l);
    assert_true(len <= 76);
    l += len + 2;
  }
  assert_decodes_to(body, n, "quoted-printable", text, 5002);
  mime_split_free(&s);
  free(text);
  free(msg);
}

static void test_nul_in_text_is_encoded(void **state) {
  (void)state;
  static const char msg[] = "Content-Type: text/plain\r\n\r\nbefore\0after\r\n";
  struct mime_split s;
  split_ok(msg, sizeof msg - 1, &s);
  assert_true(s.reencoded);
  size_t n;
  const char *body = part_body(&s, "Content-Type", NULL, &n);
  const char *enc = strstr(s.entity, "Content-Transfer-Encoding: base64") ? "base64"
                                                                          : "quoted-printable";
  assert_decodes_to(body, n, enc, "before\0after\r\n", 14);
  mime_split_free(&s);
}

/* A multipart/mixed: an untouched 7-bit part (with a folded header), an
 * 8-bit text part and a binary attachment holding every byte value. */
static char *mixed_message(size_t *len_out, char *bin) {
  for (int i = 0; i < 256; i++) bin[i] = (char)i;
  static const char head[] =
      "From: a@b\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n"
      "This is a preamble.\r\n"
      "--=_b1\r\nContent-Type: text/plain;\r\n  charset=us-ascii\r\n\r\nplain 7-bit\r\n"
      "--=_b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
      "\r\n";
  static const char mid[] =
      "\r\n--=_b1\r\nContent-Type: application/octet-stream\r\n"
      "Content-Transfer-Encoding: binary\r\n\r\n";
  static const char tail[] = "\r\n--=_b1--\r\n";
  size_t len = strlen(head) + strlen(utf8_text) + strlen(mid) + 256 + strlen(tail);
  char *msg = malloc(len), *p = msg;
  p = mempcpy(p, head, strlen(head));
  p = mempcpy(p, utf8_text, strlen(utf8_text));
  p = mempcpy(p, mid, strlen(mid));
  p = mempcpy(p, bin, 256);
  memcpy(p, tail, strlen(tail));
  *len_out = len;
  return msg;
}

static void test_multipart_mixed_reencoded(void **state) {
  (void)state;
  char bin[256];
  size_t len, n;
  char *msg = mixed_message(&len, bin);
  struct mime_split s;
  split_ok(msg, len, &s);
  assert_true(s.reencoded);
  assert_str_bytes(s.outer, s.outer_len, "From: a@b\r\n");
  /* Root header and preamble untouched, boundaries kept. */
  assert_int_equal(strncmp(s.entity,
                           "Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n"
                           "This is a preamble.\r\n--=_b1\r\n",
                           78),
                   0);
  assert_non_null(strstr(s.entity, "\r\n--=_b1--"));
  /* The 7-bit part comes through byte for byte, folded header included. */
  assert_non_null(strstr(s.entity, "--=_b1\r\nContent-Type: text/plain;\r\n  charset=us-ascii\r\n"
                                   "\r\nplain 7-bit\r\n--=_b1\r\n"));
  const char *body = part_body(&s, "charset=utf-8", "=_b1", &n);
  assert_non_null(strstr(strstr(s.entity, "charset=utf-8"), "quoted-printable"));
  /* utf8_text ends in CRLF, and the CRLF before "--=_b1" belongs to the
   * boundary (RFC 2046 5.1.1): the content is utf8_text exactly. */
  assert_decodes_to(body, n, "quoted-printable", utf8_text, strlen(utf8_text));
  body = part_body(&s, "application/octet-stream", "=_b1", &n);
  assert_non_null(strstr(strstr(s.entity, "application/octet-stream"),
                         "Content-Transfer-Encoding: base64\r\n"));
  assert_decodes_to(body, n, "base64", bin, 256);
  mime_split_free(&s);
  free(msg);
}

static void test_nested_alternative_in_mixed(void **state) {
  (void)state;
  static const char html[] =
      "--alt\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>same</p>\r\n--alt--\r\n";
  static const char pdf[] =
      "--mix\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "JVBERi0xLjQK\r\n--mix--\r\n";
  char msg[2048];
  snprintf(msg, sizeof msg,
           "Content-Type: multipart/mixed; boundary=mix\r\n\r\n"
           "--mix\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
           "--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit"
           "\r\n\r\n%s\r\n%s\r\n%s",
           utf8_text, html, pdf);
  struct mime_split s;
  split_ok(msg, 0, &s);
  assert_true(s.reencoded);
  size_t n;
  const char *body = part_body(&s, "charset=utf-8", "alt", &n);
  assert_decodes_to(body, n, "quoted-printable", utf8_text, strlen(utf8_text));
  assert_non_null(strstr(s.entity, html));
  assert_non_null(strstr(s.entity, pdf));
  mime_split_free(&s);
}

static void test_missing_type_8bit_utf8_body(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("Subject: s\r\n\r\ncaf\xc3\xa9 au lait, with a long enough ASCII tail\r\n", 0, &s);
  assert_true(s.reencoded);
  assert_non_null(strstr(s.entity, "Content-Type: text/plain; charset=utf-8\r\n"));
  assert_non_null(strstr(s.entity, "Content-Transfer-Encoding: quoted-printable\r\n"));
  mime_split_free(&s);
}

static void test_missing_type_binary_body(void **state) {
  (void)state;
  static const char msg[] = "Subject: s\r\n\r\n\xff\xfe\x80 not UTF-8\r\n";
  struct mime_split s;
  split_ok(msg, 0, &s);
  assert_non_null(strstr(s.entity, "Content-Type: application/octet-stream\r\n"));
  size_t n;
  const char *body = part_body(&s, "Content-Type", NULL, &n);
  assert_decodes_to(body, n, "base64", msg + 14, sizeof msg - 15);
  mime_split_free(&s);
}

static void test_8bit_header_value_is_encoded(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("Content-Type: application/pdf\r\n"
           "Content-Disposition: attachment; filename=\"M\xc3\xbcller.pdf\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n",
           0, &s);
  assert_true(s.reencoded);
  assert_non_null(strstr(s.entity, "filename*="));
  assert_non_null(strstr(s.entity, "\r\n\r\nJVBERi0xLjQK\r\n"));
  mime_split_free(&s);
}

/* GMime 3.2 loops on long 8-bit parameter names (found by fuzz_mime):
 * such a header is refused, fast. */
static void test_8bit_param_name_is_refused(void **state) {
  (void)state;
  char msg[512];
  char name[200];
  for (size_t i = 0; i + 1 < sizeof name; i += 2) memcpy(name + i, "\xc3\xbf", 2);
  name[sizeof name - 1] = '\0';
  snprintf(msg, sizeof msg, "Content-Type: multipart/mixed; b%s=\"x\"\r\n\r\nbody\r\n", name);
  struct mime_split s;
  assert_int_equal(mime_split(msg, strlen(msg), &s), SG_EINVAL);
  assert_null(s.entity);
}

static void test_8bit_label_on_ascii_becomes_7bit(void **state) {
  (void)state;
  struct mime_split s;
  split_ok("Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nascii only\r\n",
           0, &s);
  assert_true(s.reencoded);
  assert_str_bytes(s.entity, s.entity_len,
                   "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                   "ascii only\r\n");
  mime_split_free(&s);
}

/* ------------------------------------------------------------------------ */
/* Limits and garbage                                                       */

static char *nested_message(int depth) {
  size_t cap = (size_t)depth * 80 + 128, len = 0;
  char *msg = malloc(cap);
  for (int i = 0; i < depth; i++)
    len += (size_t)snprintf(msg + len, cap - len,
                            "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
  snprintf(msg + len, cap - len, "Content-Type: text/plain\r\n\r\ndeep\r\n");
  return msg;
}

static void test_depth_40_is_refused(void **state) {
  (void)state;
  char *msg = nested_message(40);
  struct mime_split s;
  assert_int_equal(mime_split(msg, strlen(msg), &s), SG_ELIMIT);
  assert_null(s.outer);
  assert_null(s.entity);
  free(msg);
}

/* Too many "multipart" tokens for the fast path's bound, but within the
 * limits: the exact check passes and the bytes are only canonicalised. */
static void test_depth_20_passes_unchanged(void **state) {
  (void)state;
  char *msg = nested_message(20);
  struct mime_split s;
  split_ok(msg, 0, &s);
  assert_false(s.reencoded);
  assert_str_bytes(s.entity, s.entity_len, msg);
  mime_split_free(&s);
  free(msg);
}

static void test_2000_parts_are_refused(void **state) {
  (void)state;
  size_t cap = 2000 * 48 + 128, len = 0;
  char *msg = malloc(cap);
  len += (size_t)snprintf(msg, cap, "Content-Type: multipart/mixed; boundary=b\r\n\r\n");
  for (int i = 0; i < 2000; i++)
    len += (size_t)snprintf(msg + len, cap - len, "--b\r\nContent-Type: text/plain\r\n\r\n%d\r\n", i);
  snprintf(msg + len, cap - len, "--b--\r\n");
  struct mime_split s;
  assert_int_equal(mime_split(msg, strlen(msg), &s), SG_ELIMIT);
  free(msg);
}

static void check_garbage(const char *msg, size_t len) {
  struct mime_split s;
  int rc = mime_split(msg, len, &s);
  if (rc == 0) {
    assert_canonical(s.entity, s.entity_len);
    mime_split_free(&s);
  } else {
    assert_true(rc == SG_EINVAL || rc == SG_ELIMIT);
    assert_null(s.entity);
  }
}

static void test_random_garbage(void **state) {
  (void)state;
  enum { LEN = 64 * 1024 };
  static const char mp[] = "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n";
  char *buf = malloc(LEN);
  srandom(8551);
  for (int round = 0; round < 16; round++) {
    for (size_t i = 0; i < LEN; i++) buf[i] = (char)(random() & 0xff);
    if (round % 2) memcpy(buf, mp, sizeof mp - 1); /* get past the root header */
    check_garbage(buf, LEN);
  }
  free(buf);
}

/* ------------------------------------------------------------------------ */
/* mime_from_address                                                        */

static void assert_from(const char *outer, const char *want) {
  char buf[256];
  memset(buf, 'x', sizeof buf);
  mime_from_address(outer, strlen(outer), buf, sizeof buf);
  assert_string_equal(buf, want);
}

static void test_from_display_name(void **state) {
  (void)state;
  assert_from("To: t@x\r\nFrom: Alice <Alice@Example.COM>\r\n", "Alice@example.com");
}

static void test_from_bare_address(void **state) {
  (void)state;
  assert_from("From: bob@x.org\r\n", "bob@x.org");
}

static void test_from_quoted_comma(void **state) {
  (void)state;
  assert_from("from: \"A, B\" <a@b.c>\r\n", "a@b.c");
}

static void test_from_folded(void **state) {
  (void)state;
  assert_from("Subject: s\r\nFrom: \"Carol\r\n Q\"\r\n\t<carol@Q.Example>\r\nTo: t@x\r\n",
              "carol@q.example");
}

static void test_from_missing(void **state) {
  (void)state;
  assert_from("Subject: From: x@y\r\nReply-From: r@x\r\n", "");
}

static void test_from_too_long_for_buffer(void **state) {
  (void)state;
  char buf[8] = "zzz";
  mime_from_address("From: longer@example.org\r\n", 26, buf, sizeof buf);
  assert_string_equal(buf, "");
}

/* ------------------------------------------------------------------------ */
/* The incoming side: reading without changing a byte                       */

static void test_split_raw_keeps_8bit_body(void **state) {
  (void)state;
  const char msg[] = "From: <a@b.example>\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\nSubject: x\r\n\r\nGr\xc3\xbc\xc3\x9f" "e\nbare LF\r\n";
  struct mime_split s;
  assert_int_equal(mime_split_raw(msg, sizeof msg - 1, &s), 0);
  const char *body = strstr(msg, "\r\n\r\n") + 4;
  assert_true(s.entity_len >= strlen(body));
  assert_memory_equal(s.entity + s.entity_len - strlen(body), body, strlen(body));
  assert_non_null(strstr(s.outer, "Subject: x\r\n"));
  assert_null(strstr(s.outer, "Content-Type"));
  mime_split_free(&s);
}

static void test_entity_info_params(void **state) {
  (void)state;
  const char e[] = "Content-Type: multipart/signed;\r\n protocol=\"application/x-pkcs7-signature\";\r\n"
                   "\tmicalg=sha-256; boundary=\"----=_Part 1\"\r\nContent-Transfer-Encoding: 7BIT\r\n\r\nbody";
  struct mime_entity_info mi;
  assert_int_equal(mime_entity_info(e, sizeof e - 1, &mi), 0);
  assert_string_equal(mi.type, "multipart/signed");
  assert_string_equal(mi.protocol, "application/x-pkcs7-signature");
  assert_string_equal(mi.boundary, "----=_Part 1");
  assert_string_equal(mi.cte, "7bit");
  assert_string_equal(e + mi.body_off, "body");
  const char p7[] = "Content-Type: Application/PKCS7-MIME; smime-type=Enveloped-Data; name=smime.p7m\r\n\r\nx";
  assert_int_equal(mime_entity_info(p7, sizeof p7 - 1, &mi), 0);
  assert_string_equal(mi.type, "application/pkcs7-mime");
  assert_string_equal(mi.smime_type, "enveloped-data");
  assert_string_equal(mi.name, "smime.p7m");
  assert_int_equal(mime_entity_info("no header at all", 16, &mi), 0);
  assert_string_equal(mi.type, "text/plain");
}

static void test_multipart_parts_ranges(void **state) {
  (void)state;
  const char b[] = "preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\none\r\n--XX  \r\n"
                   "second\r\n\r\n--XX--\r\nepilogue\r\n";
  struct mime_range r[3];
  size_t n;
  assert_int_equal(mime_multipart_parts(b, sizeof b - 1, "XX", r, 3, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(r[0].len, strlen("Content-Type: text/plain\r\n\r\none"));
  assert_memory_equal(b + r[0].off, "Content-Type: text/plain\r\n\r\none", r[0].len);
  assert_int_equal(r[1].len, strlen("second\r\n"));
  assert_memory_equal(b + r[1].off, "second\r\n", r[1].len);
}

static void test_multipart_parts_truncated_and_limits(void **state) {
  (void)state;
  struct mime_range r[2];
  size_t n;
  const char cut[] = "--XX\r\none\r\n--XX\r\ntwo";
  assert_int_equal(mime_multipart_parts(cut, sizeof cut - 1, "XX", r, 2, &n), SG_EINVAL);
  const char three[] = "--XX\r\n1\r\n--XX\r\n2\r\n--XX\r\n3\r\n--XX--\r\n";
  assert_int_equal(mime_multipart_parts(three, sizeof three - 1, "XX", r, 2, &n), SG_ELIMIT);
  const char other[] = "--XXY\r\n1\r\n--XXY--\r\n";
  assert_int_equal(mime_multipart_parts(other, sizeof other - 1, "XX", r, 2, &n), SG_EINVAL);
}

static void test_base64_decode_lines(void **state) {
  (void)state;
  struct buf b = BUF_INIT;
  const char in[] = "aGVsbG8g\r\nd29ybGQ=\r\n";
  assert_int_equal(mime_base64_decode(in, sizeof in - 1, &b), 0);
  assert_int_equal(b.len, 11);
  assert_memory_equal(b.data, "hello world", 11);
  buf_free(&b);
  assert_int_equal(mime_base64_decode("!!notbase64**", 13, &b), SG_EINVAL);
  buf_free(&b);
  assert_int_equal(mime_base64_decode("QUJD-REVG", 9, &b), SG_EINVAL); /* no silent stop at '-' */
  buf_free(&b);
}

static void test_crlf_only_when_needed(void **state) {
  (void)state;
  struct buf b = BUF_INIT;
  assert_int_equal(mime_crlf("a\r\nb\r\n", 6, &b), 1);
  assert_int_equal(b.len, 0);
  assert_int_equal(mime_crlf("a\nb\r\n", 5, &b), 0);
  assert_int_equal(b.len, 6);
  assert_memory_equal(b.data, "a\r\nb\r\n", 6);
  buf_free(&b);
}

int main(void) {
  mime_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fast_plain_text_split),
      cmocka_unit_test(test_content_fields_go_to_entity),
      cmocka_unit_test(test_lf_and_lone_cr_become_crlf),
      cmocka_unit_test(test_folded_subject_stays_outer_folded),
      cmocka_unit_test(test_folded_content_field_stays_in_entity),
      cmocka_unit_test(test_no_body),
      cmocka_unit_test(test_headers_only_without_empty_line),
      cmocka_unit_test(test_first_line_not_a_field_means_no_header),
      cmocka_unit_test(test_garbage_line_ends_header),
      cmocka_unit_test(test_empty_message),
      cmocka_unit_test(test_8bit_text_becomes_qp),
      cmocka_unit_test(test_long_line_becomes_qp),
      cmocka_unit_test(test_nul_in_text_is_encoded),
      cmocka_unit_test(test_multipart_mixed_reencoded),
      cmocka_unit_test(test_nested_alternative_in_mixed),
      cmocka_unit_test(test_missing_type_8bit_utf8_body),
      cmocka_unit_test(test_missing_type_binary_body),
      cmocka_unit_test(test_8bit_header_value_is_encoded),
      cmocka_unit_test(test_8bit_param_name_is_refused),
      cmocka_unit_test(test_8bit_label_on_ascii_becomes_7bit),
      cmocka_unit_test(test_depth_40_is_refused),
      cmocka_unit_test(test_depth_20_passes_unchanged),
      cmocka_unit_test(test_2000_parts_are_refused),
      cmocka_unit_test(test_random_garbage),
      cmocka_unit_test(test_from_display_name),
      cmocka_unit_test(test_from_bare_address),
      cmocka_unit_test(test_from_quoted_comma),
      cmocka_unit_test(test_from_folded),
      cmocka_unit_test(test_from_missing),
      cmocka_unit_test(test_from_too_long_for_buffer),
      cmocka_unit_test(test_split_raw_keeps_8bit_body),
      cmocka_unit_test(test_entity_info_params),
      cmocka_unit_test(test_multipart_parts_ranges),
      cmocka_unit_test(test_multipart_parts_truncated_and_limits),
      cmocka_unit_test(test_base64_decode_lines),
      cmocka_unit_test(test_crlf_only_when_needed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
