/* Unit tests for crypto/mimebody.c on real GMime: what body-contains()
 * sees (transfer-decoded, charset-converted, case-folded text of the text
 * parts only), attachment names (plain, RFC 2231, RFC 2047, name= only,
 * order, inside forwarded messages), RFC 2047 header decoding and
 * unfolding, the depth, part and garbage limits on hostile input, four
 * threads with a struct each, and a timing print for 1 MiB of base64.
 * Messages are written inline; base64 bodies for the large cases are made
 * by this file's own encoder. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "crypto/mimebody.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static struct mimebody *body_of(const char *msg, size_t len) {
  struct mimebody *b = NULL;
  assert_int_equal(mimebody_new(msg, len, &b), 0);
  assert_non_null(b);
  return b;
}

/* Does msg (a C string) contain needle, asked on a fresh struct? */
static bool has(const char *msg, const char *needle) {
  struct mimebody *b = body_of(msg, strlen(msg));
  bool r = mimebody_contains(b, needle);
  mimebody_free(b);
  return r;
}

static void append(struct buf *b, const char *s) { assert_int_equal(buf_append(b, s, strlen(s)), 0); }

/* Base64 of n bytes, 76 characters a line, LF line ends. */
static void b64(struct buf *out, const unsigned char *p, size_t n) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t col = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    char q[4] = {a[v >> 18], a[(v >> 12) & 63], i + 1 < n ? a[(v >> 6) & 63] : '=', i + 2 < n ? a[v & 63] : '='};
    assert_int_equal(buf_append(out, q, 4), 0);
    if ((col += 4) == 76) {
      append(out, "\n");
      col = 0;
    }
  }
  append(out, "\n");
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int setup(void **state) {
  (void)state;
  return mimebody_global_init();
}

/* ------------------------------------------------------------------------ */
/* body-contains                                                            */

static void test_plain_case_insensitive(void **state) {
  (void)state;
  const char *msg = "From: a@example.org\r\nSubject: hi\r\n\r\nThis document is CONFIDENTIAL.\r\n";
  assert_true(has(msg, "confidential"));
  assert_true(has(msg, "Confidential"));
  assert_true(has(msg, "document is confidential."));
  assert_false(has(msg, "secret"));
  assert_false(has(msg, "confidentiality"));
  assert_true(has(msg, "")); /* the empty needle is in every message */
}

static void test_qp_soft_break(void **state) {
  (void)state;
  const char *msg = "Content-Type: text/plain; charset=us-ascii\n"
                    "Content-Transfer-Encoding: quoted-printable\n\n"
                    "Strictly conf=\nidential, and =43LASSIFIED too.\n";
  assert_true(has(msg, "strictly confidential"));
  assert_true(has(msg, "classified"));
  assert_false(has(msg, "conf=")); /* the encoded form is not what is searched */
}

static void test_base64_body(void **state) {
  (void)state;
  const char *msg = "Content-Type: text/plain; charset=utf-8\n"
                    "Content-Transfer-Encoding: base64\n\n"
                    "VG9wIHNlY3JldDogUHJvamVrdCBOb3JkbGlj\naHQgc3RhcnRldCBtb3JnZW4uDQo=\n";
  assert_true(has(msg, "PROJEKT NORDLICHT"));
  assert_false(has(msg, "UHJvamVrdCBO")); /* a piece of the base64 text */
}

static void test_latin1_and_cp1252(void **state) {
  (void)state;
  const char *latin1 = "Content-Type: text/plain; charset=ISO-8859-1\n"
                       "Content-Transfer-Encoding: 8bit\n\nVertraulich f\xfcr Herrn M\xfcller\n";
  assert_true(has(latin1, "FÜR"));
  assert_true(has(latin1, "müller"));
  const char *qp = "Content-Type: text/plain; charset=iso-8859-1\n"
                   "Content-Transfer-Encoding: quoted-printable\n\nVertraulich f=FCr Sie\n";
  assert_true(has(qp, "vertraulich FÜR sie"));
  const char *cp1252 = "Content-Type: text/plain; charset=windows-1252\n\nPreis: 100 \x80, \x84Zitat\x93\n";
  assert_true(has(cp1252, "100 €"));
  assert_true(has(cp1252, "„zitat“"));
  /* No charset at all, 8-bit bytes that are not UTF-8: read as windows-1252. */
  assert_true(has("Subject: x\n\nGr\xfc\xdf\x65 aus K\xf6ln\n", "GRÜSSE AUS KÖLN"));
}

static void test_utf8_needle_folding(void **state) {
  (void)state;
  const char *msg = "Content-Type: text/plain; charset=utf-8\n\nSo viel ärger in der Straße, ΣΟΦΊΑ.\n";
  assert_true(has(msg, "ÄRGER"));
  assert_true(has(msg, "STRASSE"));    /* full folding: ß is ss */
  assert_true(has(msg, "σοφία"));      /* Greek, accented capital */
  assert_false(has(msg, "ARGER"));     /* folding is not accent stripping */
  assert_false(has(msg, "\xff\xfe")); /* an invalid needle is repaired, not a wildcard */
}

/* Text is decoded in pieces of a few KiB: a UTF-8 character cut by a
 * piece's end must not make the part look like windows-1252. */
static void test_utf8_across_reads(void **state) {
  (void)state;
  for (size_t pad = 4090; pad < 4100; pad++) {
    struct buf m = BUF_INIT;
    append(&m, "Subject: no charset given\n\n");
    for (size_t i = 0; i < pad; i++) append(&m, "x");
    for (int i = 0; i < 2000; i++) append(&m, " ärger €");
    append(&m, "\n");
    struct mimebody *b = body_of(m.data, m.len);
    assert_true(mimebody_contains(b, "ÄRGER €"));
    assert_false(mimebody_contains(b, "Ã")); /* UTF-8 bytes read as windows-1252 */
    mimebody_free(b);
    buf_free(&m);
  }
}

static void test_multipart_alternative_and_html(void **state) {
  (void)state;
  const char *msg = "MIME-Version: 1.0\n"
                    "Content-Type: multipart/alternative; boundary=\"alt\"\n\n"
                    "preamble words\n"
                    "--alt\nContent-Type: text/plain; charset=utf-8\n\nPlain Alpha\n"
                    "--alt\nContent-Type: text/html; charset=utf-8\n"
                    "Content-Transfer-Encoding: quoted-printable\n\n<p>Html <b>Bravo</b> =C3=A4</p>\n"
                    "--alt--\n";
  assert_true(has(msg, "plain alpha"));
  assert_true(has(msg, "<B>BRAVO</B> Ä")); /* html counts, searched as its source */
  assert_false(has(msg, "preamble")); /* not a part */
}

static void test_message_rfc822(void **state) {
  (void)state;
  const char *msg = "Content-Type: multipart/mixed; boundary=\"out\"\n\n"
                    "--out\nContent-Type: text/plain\n\nsee the forwarded mail\n"
                    "--out\nContent-Type: message/rfc822\n\n"
                    "From: inner@example.org\nSubject: InnerSubjectWord\n"
                    "Content-Type: multipart/mixed; boundary=\"in\"\n\n"
                    "--in\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
                    "Nested Geheimsache=21\n"
                    "--in--\n"
                    "--out--\n";
  assert_true(has(msg, "forwarded"));
  assert_true(has(msg, "geheimsache!"));
  assert_false(has(msg, "innersubjectword")); /* the inner header is no body text */
}

static void test_octet_stream_not_searched(void **state) {
  (void)state;
  const char *msg = "Content-Type: multipart/mixed; boundary=\"b\"\n\n"
                    "--b\nContent-Type: text/plain\n\nvisible words\n"
                    "--b\nContent-Type: application/octet-stream\n"
                    "Content-Disposition: attachment; filename=\"data.bin\"\n\n"
                    "hidden payload words\n"
                    "--b--\n";
  assert_true(has(msg, "visible"));
  assert_false(has(msg, "payload"));
}

static void test_header_not_searched(void **state) {
  (void)state;
  const char *msg = "Subject: Streng Geheim\nX-Tag: marker-in-header\n\nonly the body\n";
  assert_false(has(msg, "geheim"));
  assert_false(has(msg, "marker-in-header"));
  assert_true(has(msg, "the body"));
}

static void test_nul_and_parts_joined(void **state) {
  (void)state;
  static const char msg[] = "Content-Type: multipart/mixed; boundary=b\n\n"
                            "--b\nContent-Type: text/plain; charset=utf-8\n\nbefore\0after \xc3\xa4rger end\n"
                            "--b\nContent-Type: text/plain\n\nstart of two\n--b--\n";
  struct mimebody *b = body_of(msg, sizeof msg - 1);
  /* Text after a NUL is seen, and still read as the UTF-8 it is. */
  assert_true(mimebody_contains(b, "after ÄRGER end"));
  assert_true(mimebody_contains(b, "start of two"));
  assert_false(mimebody_contains(b, "endstart")); /* parts do not run together */
  assert_true(mimebody_contains(b, "AFTER")); /* cached text, asked again */
  mimebody_free(b);
}

/* ------------------------------------------------------------------------ */
/* Attachment names                                                         */

static void test_attachment_names(void **state) {
  (void)state;
  const char *msg =
      "Content-Type: multipart/mixed; boundary=\"b\"\n\n"
      "--b\nContent-Type: text/plain\n\nbody\n"
      "--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"report.pdf\"\n\nx\n"
      "--b\nContent-Type: application/pdf\n"
      "Content-Disposition: attachment; filename*=UTF-8''%C3%A4rger%20Bericht.pdf\n\nx\n"
      "--b\nContent-Type: image/png; name=\"only-name.png\"\n\nx\n"
      "--b\nContent-Type: image/png\nContent-Disposition: attachment; filename=\"\"\n\nx\n" /* no name */
      "--b\nContent-Type: text/plain\n"
      "Content-Disposition: attachment;\n filename*0*=UTF-8''%C3%BC; filename*1=\"ber.txt\"\n\nx\n"
      "--b\nContent-Type: application/octet-stream\n"
      "Content-Disposition: attachment; filename=\"=?UTF-8?B?QmVyaWNodCDDvGJlciDDhHJnZXIucGRm?=\"\n\nx\n"
      "--b\nContent-Type: message/rfc822\n\n"
      "Subject: fwd\nContent-Type: multipart/mixed; boundary=\"i\"\n\n"
      "--i\nContent-Type: application/zip\nContent-Disposition: attachment; filename=inner.zip\n\nx\n"
      "--i--\n"
      "--b--\n";
  struct mimebody *b = body_of(msg, strlen(msg));
  const char *want[] = {"report.pdf", "ärger Bericht.pdf", "only-name.png", "über.txt", "Bericht über Ärger.pdf",
                        "inner.zip"};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    const char *got = mimebody_attachment(b, i);
    assert_non_null(got);
    assert_string_equal(got, want[i]);
  }
  assert_null(mimebody_attachment(b, 6));
  assert_null(mimebody_attachment(b, 1000));
  assert_string_equal(mimebody_attachment(b, 0), "report.pdf"); /* asked again: the same list */
  mimebody_free(b);
}

static void test_attachment_none(void **state) {
  (void)state;
  struct mimebody *b = body_of("Subject: x\n\nplain body\n", 23);
  assert_null(mimebody_attachment(b, 0));
  mimebody_free(b);
}

/* ------------------------------------------------------------------------ */
/* Header decoding                                                          */

static void header_is(const char *raw, const char *want) {
  char *got = mimebody_header_decode(raw, strlen(raw));
  assert_non_null(got);
  assert_string_equal(got, want);
  free(got);
}

static void test_header_decode(void **state) {
  (void)state;
  header_is(" =?UTF-8?B?w4RyZ2VyIGltIELDvHJv?=\r\n", "Ärger im Büro");
  header_is(" =?ISO-8859-1?Q?Vertraulich_f=FCr_Sie?=", "Vertraulich für Sie");
  header_is(" Re: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Bonn", "Re: Grüße aus Bonn");
  /* Adjacent encoded words on two lines: the fold and the space go. */
  header_is(" =?UTF-8?Q?Ab?=\r\n =?UTF-8?Q?cd?=", "Abcd");
}

static void test_header_unfold(void **state) {
  (void)state;
  header_is(" A long\r\n subject\r\n\tline\r\n", "A long subject\tline");
  header_is("\tLF only\n folded", "LF only folded");
  header_is(" a =? b", "a =? b"); /* "=?" that is no encoded word stays */
  header_is("", "");
  char *s = mimebody_header_decode(NULL, 0);
  assert_non_null(s);
  assert_string_equal(s, "");
  free(s);
}

/* ------------------------------------------------------------------------ */
/* Hostile input                                                            */

static void test_truncated_multipart(void **state) {
  (void)state;
  const char *msg = "Content-Type: multipart/mixed; boundary=\"b\"\n\n"
                    "--b\nContent-Type: text/plain\n\nfirst part complete\n"
                    "--b\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\nVHJ1bmNhdGVkIHRl";
  assert_true(has(msg, "first part complete"));
  assert_true(has(msg, "truncated")); /* what the cut base64 still holds */
  struct mimebody *b = body_of(msg, strlen(msg) - 40); /* cut inside the second part's header */
  assert_true(mimebody_contains(b, "first part"));
  mimebody_free(b);
}

/* n multiparts, each inside the last, with a text part innermost. */
static void nested(struct buf *m, size_t n, const char *word) {
  append(m, "From: a@example.org\nMIME-Version: 1.0\n");
  char line[96];
  for (size_t i = 0; i < n; i++) {
    snprintf(line, sizeof line, "Content-Type: multipart/mixed; boundary=\"b%zu\"\n\n--b%zu\n", i, i);
    append(m, line);
  }
  append(m, "Content-Type: text/plain\nContent-Disposition: attachment; filename=deep.txt\n\n");
  append(m, word);
  append(m, "\n");
  for (size_t i = n; i-- > 0;) {
    snprintf(line, sizeof line, "--b%zu--\n", i);
    append(m, line);
  }
}

static void test_depth_limit(void **state) {
  (void)state;
  struct buf m = BUF_INIT;
  nested(&m, MIMEBODY_MAX_DEPTH, "deepword"); /* the text at depth 32: seen */
  assert_true(has(m.data, "deepword"));
  buf_free(&m);
  nested(&m, MIMEBODY_MAX_DEPTH + 1, "deepword"); /* at depth 33: not looked at */
  struct mimebody *b = body_of(m.data, m.len);
  assert_false(mimebody_contains(b, "deepword"));
  assert_null(mimebody_attachment(b, 0));
  mimebody_free(b);
  buf_free(&m);
}

static void test_nesting_10000(void **state) {
  (void)state;
  struct buf m = BUF_INIT;
  nested(&m, 10000, "deepword");
  double t0 = now_ms();
  struct mimebody *b = body_of(m.data, m.len);
  assert_false(mimebody_contains(b, "deepword"));
  assert_null(mimebody_attachment(b, 0));
  mimebody_free(b);
  print_message("10000 nested multiparts (%zu bytes): %.0f ms\n", m.len, now_ms() - t0);
  buf_free(&m);
  /* The same with message/rfc822 nesting, the other container GMime recurses into. */
  append(&m, "Subject: top\n");
  for (int i = 0; i < 10000; i++) append(&m, "Content-Type: message/rfc822\n\nSubject: in\n");
  append(&m, "\ninnermost\n");
  assert_false(has(m.data, "innermost"));
  buf_free(&m);
}

static void test_parts_limit(void **state) {
  (void)state;
  struct buf m = BUF_INIT;
  append(&m, "Content-Type: multipart/mixed; boundary=b\n\n");
  char part[96];
  for (int i = 1; i <= 1500; i++) {
    snprintf(part, sizeof part, "--b\nContent-Type: text/plain; name=n%d.txt\n\nw%05dx\n", i, i);
    append(&m, part);
  }
  append(&m, "--b--\n");
  struct mimebody *b = body_of(m.data, m.len);
  /* The multipart itself is the first of MIMEBODY_MAX_PARTS parts. */
  assert_true(mimebody_contains(b, "w00010x"));
  assert_true(mimebody_contains(b, "w00999x"));
  assert_false(mimebody_contains(b, "w01000x"));
  assert_false(mimebody_contains(b, "w01400x"));
  assert_string_equal(mimebody_attachment(b, 998), "n999.txt");
  assert_null(mimebody_attachment(b, 999));
  mimebody_free(b);
  buf_free(&m);
}

static void test_text_limit(void **state) {
  (void)state;
  size_t fill = MIMEBODY_MAX_TEXT - 4096;
  struct buf m = BUF_INIT;
  append(&m, "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n");
  assert_int_equal(buf_reserve(&m, fill + 16384), 0);
  memset(m.data + m.len, 'f', fill);
  m.len += fill;
  append(&m, "\n--b\nContent-Type: text/plain\n\ninsideword\n--b\nContent-Type: text/plain\n\n");
  for (int i = 0; i < 128; i++) append(&m, "filler line of sixty-four bytes, repeated to pass the limit...\n");
  append(&m, "beyondword\n--b--\n");
  double t0 = now_ms();
  struct mimebody *b = body_of(m.data, m.len);
  assert_true(mimebody_contains(b, "INSIDEWORD"));
  assert_true(mimebody_contains(b, "filler line of sixty-four")); /* the third part, up to the limit */
  assert_false(mimebody_contains(b, "beyondword"));               /* beyond MIMEBODY_MAX_TEXT */
  print_message("%zu MiB message at the text limit: %.0f ms\n", m.len >> 20, now_ms() - t0);
  mimebody_free(b);
  buf_free(&m);
}

static void test_garbage(void **state) {
  (void)state;
  unsigned char g[65536];
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < sizeof g; i++) { /* xorshift: the same bytes every run */
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    g[i] = (unsigned char)x;
  }
  for (int round = 0; round < 3; round++) {
    /* plain garbage; garbage after a multipart header; garbage with a marker in it */
    struct buf m = BUF_INIT;
    if (round == 1) append(&m, "Content-Type: multipart/mixed; boundary=\"\xff\"\n\n--\xff\n");
    if (round == 2) append(&m, "Subject: x\n\n");
    assert_int_equal(buf_append(&m, g, sizeof g), 0);
    if (round == 2) append(&m, " MarkerAfterGarbage ");
    struct mimebody *b = body_of(m.data, m.len);
    assert_false(mimebody_contains(b, "definitely-not-in-there"));
    for (size_t i = 0; mimebody_attachment(b, i); i++) assert_true(i < MIMEBODY_MAX_PARTS);
    if (round == 2) assert_true(mimebody_contains(b, "markeraftergarbage"));
    mimebody_free(b);
    buf_free(&m);
  }
}

static void test_empty_message(void **state) {
  (void)state;
  struct mimebody *b = body_of("", 0);
  assert_false(mimebody_contains(b, "a"));
  assert_true(mimebody_contains(b, ""));
  assert_null(mimebody_attachment(b, 0));
  mimebody_free(b);
  b = body_of(NULL, 0);
  assert_false(mimebody_contains(b, "a"));
  mimebody_free(b);
  mimebody_free(NULL);
}

/* ------------------------------------------------------------------------ */
/* Threads and timing                                                       */

struct thread_job {
  int id;
  int failures;
};

static void *thread_main(void *arg) {
  struct thread_job *j = arg;
  char msg[512], word[32], other[32], name[32];
  snprintf(word, sizeof word, "thread%dword", j->id);
  snprintf(other, sizeof other, "thread%dword", (j->id + 1) % 4);
  snprintf(name, sizeof name, "file%d.pdf", j->id);
  snprintf(msg, sizeof msg,
           "Content-Type: multipart/mixed; boundary=b\n\n"
           "--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
           "Gr=FC=DFe %s\n"
           "--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename*=UTF-8''%s\n\nx\n"
           "--b--\n",
           word, name);
  for (int i = 0; i < 300; i++) {
    struct mimebody *b = NULL;
    if (mimebody_new(msg, strlen(msg), &b) != 0) {
      j->failures++;
      continue;
    }
    if (!mimebody_contains(b, "GRÜSSE")) j->failures++;
    if (!mimebody_contains(b, word) || mimebody_contains(b, other)) j->failures++;
    const char *n = mimebody_attachment(b, 0);
    if (!n || strcmp(n, name) != 0 || mimebody_attachment(b, 1)) j->failures++;
    static const char raw[] = " =?ISO-8859-1?Q?f=FCr?=";
    char *h = mimebody_header_decode(raw, sizeof raw - 1);
    if (!h || strcmp(h, "für") != 0) j->failures++;
    free(h);
    mimebody_free(b);
  }
  return NULL;
}

static void test_four_threads(void **state) {
  (void)state;
  pthread_t t[4];
  struct thread_job jobs[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (struct thread_job){.id = i};
    assert_int_equal(pthread_create(&t[i], NULL, thread_main, &jobs[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(jobs[i].failures, 0);
  }
}

static void test_perf_base64_1mib(void **state) {
  (void)state;
  size_t n = 1024 * 1024;
  unsigned char *text = malloc(n);
  assert_non_null(text);
  static const char words[] = "lorem ipsum dolor sit amet consectetur adipiscing elit ";
  for (size_t i = 0; i < n; i++) text[i] = (unsigned char)words[i % (sizeof words - 1)];
  memcpy(text + n - 16, "NeedleAtTheEnd.\n", 16);
  struct buf m = BUF_INIT;
  append(&m, "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n");
  b64(&m, text, n);
  free(text);
  struct mimebody *b = body_of(m.data, m.len);
  double t0 = now_ms();
  bool first = mimebody_contains(b, "NEEDLEATTHEEND");
  double t1 = now_ms();
  bool again = mimebody_contains(b, "needle-not-there");
  double t2 = now_ms();
  print_message("1 MiB base64 text part: first contains %.1f ms (parse, decode, fold), cached %.2f ms\n",
                t1 - t0, t2 - t1);
  assert_true(first);
  assert_false(again);
  mimebody_free(b);
  buf_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_case_insensitive),
      cmocka_unit_test(test_qp_soft_break),
      cmocka_unit_test(test_base64_body),
      cmocka_unit_test(test_latin1_and_cp1252),
      cmocka_unit_test(test_utf8_needle_folding),
      cmocka_unit_test(test_utf8_across_reads),
      cmocka_unit_test(test_multipart_alternative_and_html),
      cmocka_unit_test(test_message_rfc822),
      cmocka_unit_test(test_octet_stream_not_searched),
      cmocka_unit_test(test_header_not_searched),
      cmocka_unit_test(test_nul_and_parts_joined),
      cmocka_unit_test(test_attachment_names),
      cmocka_unit_test(test_attachment_none),
      cmocka_unit_test(test_header_decode),
      cmocka_unit_test(test_header_unfold),
      cmocka_unit_test(test_truncated_multipart),
      cmocka_unit_test(test_depth_limit),
      cmocka_unit_test(test_nesting_10000),
      cmocka_unit_test(test_parts_limit),
      cmocka_unit_test(test_text_limit),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_empty_message),
      cmocka_unit_test(test_four_threads),
      cmocka_unit_test(test_perf_base64_1mib),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
