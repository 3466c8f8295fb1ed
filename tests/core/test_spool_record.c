/*
 * test_spool_record - unit tests for core/spool_record.c.
 *
 * Round trips, then damage: every truncation and every single-bit flip of a
 * valid file must be rejected, and hand-built files (with a correct CRC, so
 * the structural checks themselves are exercised) must be rejected for the
 * specific reason.  Allocation failures are injected (malloc/calloc/realloc
 * are wrapped at link time) to show no error path leaks; run under the
 * sanitizer build, LeakSanitizer checks that claim.
 *
 * With SPOOL_CORPUS_DIR set, the program instead writes the fuzz seed corpus
 * (valid files made by the encoder) into that folder and exits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "core/spool_record.h"

#include "tests/core/alloc_fail.h"

/* ---- helpers ------------------------------------------------------------ */

static char *rcpts3[] = {"alice@example.org", "bob@example.net", "carol@example.com"};

static struct spool_envelope sample_env(void) {
  struct spool_envelope e = {
      .queue_id = "4F2a.9-b",
      .arrival_ms = 1704164645123ull,
      .sender = "sender@example.com",
      .rcpts = rcpts3,
      .n_rcpts = 3,
      .listener = "main",
      .next_hop = "127.0.0.1:2526",
      .flags = SPOOL_F_8BITMIME,
      .client = "mx.example.com [192.0.2.1]",
  };
  return e;
}

/* The whole file as spool.c would write it: head, data, tail. */
static void encode_file(const struct spool_envelope *e, const void *data, size_t n, struct buf *f) {
  struct buf head = BUF_INIT, tail = BUF_INIT;
  assert_int_equal(spool_record_encode(e, data, n, &head, &tail), 0);
  buf_reset(f);
  assert_int_equal(buf_append(f, head.data, head.len), 0);
  assert_int_equal(buf_append(f, data, n), 0);
  assert_int_equal(buf_append(f, tail.data, tail.len), 0);
  buf_free(&head);
  buf_free(&tail);
}

static void assert_env_equal(const struct spool_envelope *a, const struct spool_envelope *b) {
  assert_string_equal(a->queue_id, b->queue_id);
  assert_true(a->arrival_ms == b->arrival_ms);
  assert_string_equal(a->sender, b->sender);
  assert_int_equal(a->n_rcpts, b->n_rcpts);
  for (size_t i = 0; i < a->n_rcpts; i++) assert_string_equal(a->rcpts[i], b->rcpts[i]);
  assert_int_equal(a->n_orig_rcpts, b->n_orig_rcpts);
  for (size_t i = 0; i < a->n_orig_rcpts; i++) assert_string_equal(a->orig_rcpts[i], b->orig_rcpts[i]);
  assert_string_equal(a->listener ? a->listener : "", b->listener ? b->listener : "");
  assert_string_equal(a->next_hop ? a->next_hop : "", b->next_hop ? b->next_hop : "");
  assert_int_equal(a->flags, b->flags);
  assert_string_equal(a->client ? a->client : "", b->client ? b->client : "");
}

static void roundtrip(const struct spool_envelope *e, const void *data, size_t n) {
  struct buf f = BUF_INIT;
  encode_file(e, data, n, &f);
  struct spool_envelope out;
  const char *d = NULL, *why = "unset";
  size_t dlen = 99;
  assert_int_equal(spool_record_parse(f.data, f.len, &out, &d, &dlen, &why), 0);
  assert_null(why);
  assert_env_equal(e, &out);
  assert_int_equal(dlen, n);
  assert_true(d >= f.data && d + dlen <= f.data + f.len);
  if (n) assert_memory_equal(d, data, n);
  spool_envelope_free(&out);
  buf_free(&f);
}

static int is_zero(const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i]) return 0;
  return 1;
}

/* Parse must fail with SG_ECORRUPT, give a reason and leave env zeroed. */
static const char *expect_corrupt(const void *p, size_t n) {
  struct spool_envelope env;
  memset(&env, 0xa5, sizeof env);
  const char *why = NULL;
  assert_int_equal(spool_record_parse(p, n, &env, NULL, NULL, &why), SG_ECORRUPT);
  assert_non_null(why);
  assert_true(is_zero(&env, sizeof env));
  return why;
}

/* ---- raw file builder: arbitrary records, correct CRC ------------------ */

static void raw_begin(struct buf *b, uint16_t version) {
  unsigned char v[4] = {(unsigned char)version, (unsigned char)(version >> 8), 0, 0};
  buf_reset(b);
  buf_append(b, "SGSPOOL\n", 8);
  buf_append(b, v, 4);
}

static void raw_rec_len(struct buf *b, char type, uint32_t len, const void *p, size_t n) {
  unsigned char h[5] = {(unsigned char)type, (unsigned char)len, (unsigned char)(len >> 8),
                        (unsigned char)(len >> 16), (unsigned char)(len >> 24)};
  buf_append(b, h, 5);
  buf_append(b, p, n);
}

static void raw_rec(struct buf *b, char type, const void *p, size_t n) {
  raw_rec_len(b, type, (uint32_t)n, p, n);
}

static void raw_str(struct buf *b, char type, const char *s) { raw_rec(b, type, s, strlen(s)); }

static void raw_end(struct buf *b) {
  uint32_t crc = (uint32_t)crc32(0, (const Bytef *)b->data, (uInt)b->len);
  unsigned char c[4] = {(unsigned char)crc, (unsigned char)(crc >> 8), (unsigned char)(crc >> 16),
                        (unsigned char)(crc >> 24)};
  raw_rec_len(b, 'E', 8, NULL, 0);
  buf_append(b, c, 4);
  buf_append(b, "END\n", 4);
}

static const unsigned char arrival8[8] = {1, 2, 3, 4, 5, 6, 7, 0};
static const unsigned char flags4[4] = {1, 0, 0, 0};

/* A valid file's records in order, with `skip` left out and `extra`
 * (type, payload) inserted before the record of type `before`. */
struct raw_opts {
  char skip;
  char before;
  char extra_type;
  const char *extra;
  size_t extra_len;
};

static void raw_record_of(struct buf *b, char t) {
  switch (t) {
    case 'Q': raw_str(b, 'Q', "Q1"); break;
    case 'A': raw_rec(b, 'A', arrival8, 8); break;
    case 'S': raw_str(b, 'S', "s@example.com"); break;
    case 'R': raw_str(b, 'R', "r@example.com"); break;
    case 'L': raw_str(b, 'L', "main"); break;
    case 'N': raw_str(b, 'N', "hop:25"); break;
    case 'F': raw_rec(b, 'F', flags4, 4); break;
    case 'C': raw_str(b, 'C', "client"); break;
    case 'D': raw_str(b, 'D', "Subject: x\r\n\r\nbody\r\n"); break;
  }
}

static void raw_file(struct buf *b, const struct raw_opts *o) {
  raw_begin(b, SPOOL_RECORD_VERSION);
  for (const char *t = "QASRLNFCD"; *t; t++) {
    if (o->before == *t) raw_rec(b, o->extra_type, o->extra, o->extra_len);
    if (o->skip != *t) raw_record_of(b, *t);
  }
  if (o->before == 'E') raw_rec(b, o->extra_type, o->extra, o->extra_len);
  raw_end(b);
}

static const char *raw_why(const struct raw_opts *o) {
  struct buf b = BUF_INIT;
  raw_file(&b, o);
  const char *why = expect_corrupt(b.data, b.len);
  buf_free(&b);
  return why;
}

/* ---- round trips -------------------------------------------------------- */

static void test_roundtrip_basic(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  const char *msg = "From: a@b\r\nSubject: hi\r\n\r\nhello\r\n";
  roundtrip(&e, msg, strlen(msg));
  e.flags = SPOOL_F_8BITMIME | SPOOL_F_DSN;
  e.arrival_ms = UINT64_MAX;
  roundtrip(&e, msg, strlen(msg));
  e.arrival_ms = 0;
  e.flags = 0;
  e.n_rcpts = 1;
  roundtrip(&e, "x", 1);
}

/* 'O' records (the recipients before a split, issue #6): optional, after
 * the 'R' records, kept by a copy. */
static void test_original_recipients(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  char *orig[] = {"alice@example.org", "bob@example.net", "carol@example.com", "dave@example.com"};
  e.orig_rcpts = orig;
  e.n_orig_rcpts = 4;
  roundtrip(&e, "body", 4);
  struct spool_envelope c;
  assert_int_equal(spool_envelope_copy(&c, &e), 0);
  assert_env_equal(&e, &c);
  spool_envelope_free(&c);
  /* out of place: before the first 'R', after the 'L' */
  struct raw_opts o = {.before = 'R', .extra_type = 'O', .extra = "x@y", .extra_len = 3};
  assert_string_equal(raw_why(&o), "missing recipient record");
  o = (struct raw_opts){.before = 'N', .extra_type = 'O', .extra = "x@y", .extra_len = 3};
  assert_string_equal(raw_why(&o), "record out of order");
  o = (struct raw_opts){.before = 'L', .extra_type = 'O', .extra = "x\ny", .extra_len = 3};
  assert_string_equal(raw_why(&o), "bad original recipient");
}

static void test_roundtrip_empty_sender_and_fields(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  e.sender = "";
  e.listener = NULL; /* written as "" */
  e.next_hop = "";
  e.client = NULL;
  roundtrip(&e, "body", 4);
}

static void test_roundtrip_limits(void **state) {
  (void)state;
  char qid[SPOOL_ID_MAX], addr[SPOOL_ADDR_MAX + 1], name[SPOOL_NAME_MAX + 1];
  memset(qid, 'a', sizeof qid - 1);
  qid[sizeof qid - 1] = '\0';
  memset(addr, 'x', SPOOL_ADDR_MAX);
  addr[SPOOL_ADDR_MAX] = '\0';
  memset(name, 'n', SPOOL_NAME_MAX);
  name[SPOOL_NAME_MAX] = '\0';
  char *r[] = {addr};
  struct spool_envelope e = sample_env();
  memcpy(e.queue_id, qid, sizeof qid);
  e.sender = addr;
  e.rcpts = r;
  e.n_rcpts = 1;
  e.listener = e.next_hop = e.client = name;
  roundtrip(&e, "", 0);
}

static void test_roundtrip_many_rcpts(void **state) {
  (void)state;
  size_t n = SPOOL_RCPT_MAX;
  char **r = malloc(n * sizeof *r);
  char *pool = malloc(n * 16);
  assert_non_null(r);
  assert_non_null(pool);
  for (size_t i = 0; i < n; i++) {
    r[i] = pool + i * 16;
    snprintf(r[i], 16, "u%zu@x.org", i);
  }
  struct spool_envelope e = sample_env();
  e.rcpts = r;
  e.n_rcpts = n;
  roundtrip(&e, "data", 4);
  free(pool);
  free(r);
}

static void test_roundtrip_empty_data(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  roundtrip(&e, NULL, 0);
  roundtrip(&e, "", 0);
}

static void test_roundtrip_binary_data(void **state) {
  (void)state;
  /* Every byte value, plus things that look like format markers: the data
   * is opaque to the reader, which finds the end by length, not by marker. */
  unsigned char data[256 * 3 + 40];
  size_t n = 0;
  for (int i = 0; i < 256 * 3; i++) data[n++] = (unsigned char)(i * 7);
  static const char marks[] = "E\x08\0\0\0SGSPOOL\nEND\n\0\r\n.\r\n";
  memcpy(data + n, marks, sizeof marks - 1);
  n += sizeof marks - 1;
  struct spool_envelope e = sample_env();
  roundtrip(&e, data, n);
}

/* Encode appends: a head and tail that already hold bytes keep them, and
 * the CRC covers only this file's bytes. */
static void test_encode_appends(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  struct buf head = BUF_INIT, tail = BUF_INIT, f = BUF_INIT;
  buf_append(&head, "prefix", 6);
  buf_append(&tail, "TT", 2);
  assert_int_equal(spool_record_encode(&e, "abc", 3, &head, &tail), 0);
  assert_memory_equal(head.data, "prefix", 6);
  assert_memory_equal(tail.data, "TT", 2);
  buf_append(&f, head.data + 6, head.len - 6);
  buf_append(&f, "abc", 3);
  buf_append(&f, tail.data + 2, tail.len - 2);
  struct spool_envelope out;
  assert_int_equal(spool_record_parse(f.data, f.len, &out, NULL, NULL, NULL), 0);
  spool_envelope_free(&out);
  buf_free(&head);
  buf_free(&tail);
  buf_free(&f);
}

/* The exact layout from the header comment, byte by byte. */
static void test_layout_golden(void **state) {
  (void)state;
  char *r[] = {"r"};
  struct spool_envelope e = {.queue_id = "Q", .arrival_ms = 0x0102030405060708ull, .sender = "",
                             .rcpts = r, .n_rcpts = 1, .listener = "L", .next_hop = "",
                             .flags = 2, .client = ""};
  struct buf f = BUF_INIT;
  encode_file(&e, "dd", 2, &f);
  static const unsigned char want[] = {
      'S', 'G', 'S', 'P', 'O', 'O', 'L', '\n', 1, 0, 0, 0,          /* preamble */
      'Q', 1, 0, 0, 0, 'Q',                                         /* queue id */
      'A', 8, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1,                      /* arrival */
      'S', 0, 0, 0, 0, 'R', 1, 0, 0, 0, 'r', 'L', 1, 0, 0, 0, 'L',  /* S R L */
      'N', 0, 0, 0, 0, 'F', 4, 0, 0, 0, 2, 0, 0, 0, 'C', 0, 0, 0, 0, /* N F C */
      'D', 2, 0, 0, 0, 'd', 'd'};
  assert_int_equal(f.len, sizeof want + 13);
  assert_memory_equal(f.data, want, sizeof want);
  uint32_t crc = (uint32_t)crc32(0, want, sizeof want);
  const unsigned char *t = (const unsigned char *)f.data + sizeof want;
  assert_int_equal(t[0], 'E');
  assert_int_equal(t[1] | t[2] << 8 | t[3] << 16 | (uint32_t)t[4] << 24, 8);
  assert_int_equal(t[5] | t[6] << 8 | t[7] << 16 | (uint32_t)t[8] << 24, crc);
  assert_memory_equal(t + 9, "END\n", 4);
  buf_free(&f);
}

/* ---- damage ------------------------------------------------------------- */

static void test_every_truncation_rejected(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  struct buf f = BUF_INIT;
  encode_file(&e, "Subject: t\r\n\r\nbody\r\n", 20, &f);
  for (size_t n = 0; n < f.len; n++) {
    /* A fresh copy of exactly n bytes, so ASan sees any read past it. */
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, f.data, n);
    expect_corrupt(p, n);
    free(p);
  }
  assert_string_equal(expect_corrupt(f.data, 0), "truncated header");
  assert_string_equal(expect_corrupt(f.data, f.len - 1), "truncated record");
  buf_free(&f);
}

static void test_every_bit_flip_rejected(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  struct buf f = BUF_INIT;
  encode_file(&e, "Subject: t\r\n\r\nbody\r\n", 20, &f);
  size_t flips = 0;
  for (size_t i = 0; i < f.len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      f.data[i] ^= (char)(1 << bit);
      expect_corrupt(f.data, f.len);
      f.data[i] ^= (char)(1 << bit);
      flips++;
    }
  }
  assert_int_equal(flips, f.len * 8);
  struct spool_envelope out;
  assert_int_equal(spool_record_parse(f.data, f.len, &out, NULL, NULL, NULL), 0);
  spool_envelope_free(&out);
  buf_free(&f);
}

static void test_header_checks(void **state) {
  (void)state;
  struct buf b = BUF_INIT;
  raw_begin(&b, 2);
  for (const char *t = "QASRLNFCD"; *t; t++) raw_record_of(&b, *t);
  raw_end(&b);
  assert_string_equal(expect_corrupt(b.data, b.len), "unsupported version");
  raw_begin(&b, 0);
  assert_string_equal(expect_corrupt(b.data, b.len), "unsupported version");
  struct raw_opts none = {0};
  raw_file(&b, &none);
  b.data[10] = 1; /* reserved */
  assert_string_equal(expect_corrupt(b.data, b.len), "reserved field not zero");
  raw_file(&b, &none);
  b.data[0] = 'X';
  assert_string_equal(expect_corrupt(b.data, b.len), "bad magic");
  assert_string_equal(expect_corrupt("SGSPOOL", 7), "truncated header");
  assert_string_equal(expect_corrupt("SGSPOOL\n\1", 9), "truncated header");
  assert_string_equal(expect_corrupt("GIF89a", 6), "bad magic");
  raw_begin(&b, 1);
  assert_string_equal(expect_corrupt(b.data, b.len), "truncated file (no end record)");
  buf_append(&b, "Q\1", 2);
  assert_string_equal(expect_corrupt(b.data, b.len), "truncated record header");
  buf_free(&b);
}

static void test_trailing_garbage(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  struct buf f = BUF_INIT;
  encode_file(&e, "x", 1, &f);
  buf_append(&f, "\n", 1);
  assert_string_equal(expect_corrupt(f.data, f.len), "trailing bytes after end record");
  encode_file(&e, "x", 1, &f);
  buf_append(&f, f.data + f.len - 13, 13); /* a second end record */
  assert_string_equal(expect_corrupt(f.data, f.len), "trailing bytes after end record");
  buf_free(&f);
}

static void test_control_file_is_valid(void **state) {
  (void)state;
  struct buf b = BUF_INIT;
  struct raw_opts none = {0};
  raw_file(&b, &none);
  struct spool_envelope env;
  const char *d;
  size_t dl;
  assert_int_equal(spool_record_parse(b.data, b.len, &env, &d, &dl, NULL), 0);
  assert_string_equal(env.queue_id, "Q1");
  assert_true(env.arrival_ms == 0x0007060504030201ull);
  assert_int_equal(env.n_rcpts, 1);
  assert_int_equal(dl, 20);
  spool_envelope_free(&env);
  buf_free(&b);
}

static void test_order_and_presence(void **state) {
  (void)state;
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'Q'}), "missing queue id record");
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'A'}), "missing arrival record");
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'S'}), "missing sender record");
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'R'}), "missing recipient record");
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'L'}), "missing listener record");
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'N'}), "missing next hop record");
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'F'}), "missing flags record");
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'C'}), "missing client record");
  /* Without 'D' the end record arrives where 'D' is due. */
  assert_string_equal(raw_why(&(struct raw_opts){.skip = 'D'}), "missing data record");
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'L', .extra_type = 'Q', .extra = "Q2",
                                                 .extra_len = 2}),
                      "record out of order");
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'S', .extra_type = 'A',
                                                 .extra = (const char *)arrival8, .extra_len = 8}),
                      "duplicate arrival record");
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'A', .extra_type = 'Q', .extra = "Q2",
                                                 .extra_len = 2}),
                      "duplicate queue id record");
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'E', .extra_type = 'C', .extra = "c",
                                                 .extra_len = 1}),
                      "data record is not last");
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'E', .extra_type = 'D', .extra = "d",
                                                 .extra_len = 1}),
                      "data record is not last");
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'C', .extra_type = 'D', .extra = "d",
                                                 .extra_len = 1}),
                      "missing client record");
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'F', .extra_type = 'X', .extra = "",
                                                 .extra_len = 0}),
                      "unknown record type");
  /* Swapped: 'S' before 'A'. */
  struct buf b = BUF_INIT;
  raw_begin(&b, 1);
  for (const char *t = "QSARLNFCD"; *t; t++) raw_record_of(&b, *t);
  raw_end(&b);
  assert_string_equal(expect_corrupt(b.data, b.len), "missing arrival record");
  /* Several recipients are fine; a recipient after 'L' is not. */
  raw_begin(&b, 1);
  for (const char *t = "QASRRRLNFCD"; *t; t++) raw_record_of(&b, *t);
  raw_end(&b);
  struct spool_envelope env;
  assert_int_equal(spool_record_parse(b.data, b.len, &env, NULL, NULL, NULL), 0);
  assert_int_equal(env.n_rcpts, 3);
  spool_envelope_free(&env);
  assert_string_equal(raw_why(&(struct raw_opts){.before = 'N', .extra_type = 'R', .extra = "r",
                                                 .extra_len = 1}),
                      "record out of order");
  buf_free(&b);
}

static void test_lengths(void **state) {
  (void)state;
  char big[SPOOL_ADDR_MAX + 1];
  memset(big, 'a', sizeof big);
  struct raw_opts o = {.skip = 'A', .before = 'A', .extra_type = 'A', .extra = "1234567",
                       .extra_len = 7};
  assert_string_equal(raw_why(&o), "bad arrival record length");
  o = (struct raw_opts){.skip = 'F', .before = 'F', .extra_type = 'F', .extra = "12345",
                        .extra_len = 5};
  assert_string_equal(raw_why(&o), "bad flags record length");
  o = (struct raw_opts){.skip = 'F', .before = 'F', .extra_type = 'F', .extra = "123",
                        .extra_len = 3};
  assert_string_equal(raw_why(&o), "bad flags record length");
  o = (struct raw_opts){.skip = 'Q', .before = 'Q', .extra_type = 'Q', .extra = big,
                        .extra_len = SPOOL_ID_MAX};
  assert_string_equal(raw_why(&o), "bad queue id length");
  o.extra_len = 0;
  assert_string_equal(raw_why(&o), "bad queue id length");
  o = (struct raw_opts){.skip = 'S', .before = 'S', .extra_type = 'S', .extra = big,
                        .extra_len = SPOOL_ADDR_MAX + 1};
  assert_string_equal(raw_why(&o), "sender too long");
  o = (struct raw_opts){.skip = 'R', .before = 'R', .extra_type = 'R', .extra = big,
                        .extra_len = SPOOL_ADDR_MAX + 1};
  assert_string_equal(raw_why(&o), "bad recipient length");
  o.extra_len = 0;
  assert_string_equal(raw_why(&o), "bad recipient length");
  o = (struct raw_opts){.skip = 'C', .before = 'C', .extra_type = 'C', .extra = big,
                        .extra_len = SPOOL_CLIENT_MAX + 1};
  assert_string_equal(raw_why(&o), "client too long");
  o = (struct raw_opts){.skip = 'L', .before = 'L', .extra_type = 'L', .extra = big,
                        .extra_len = SPOOL_NAME_MAX + 1};
  assert_string_equal(raw_why(&o), "listener too long");
}

/* A length that points past the end of the file, for each position. */
static void test_oversize_lengths(void **state) {
  (void)state;
  struct buf b = BUF_INIT;
  raw_begin(&b, 1);
  raw_record_of(&b, 'Q');
  raw_rec_len(&b, 'A', 8, "1234", 4); /* claims 8, file has 4 */
  assert_string_equal(expect_corrupt(b.data, b.len), "truncated record");
  raw_begin(&b, 1);
  for (const char *t = "QASRLNFC"; *t; t++) raw_record_of(&b, *t);
  raw_rec_len(&b, 'D', 0xffffffffu, "data", 4);
  raw_end(&b);
  assert_string_equal(expect_corrupt(b.data, b.len), "truncated record");
  raw_begin(&b, 1);
  raw_rec_len(&b, 'Q', 0xffffffffu, "Q", 1);
  assert_string_equal(expect_corrupt(b.data, b.len), "bad queue id length");
  /* The end record's own length must be 8. */
  raw_begin(&b, 1);
  for (const char *t = "QASRLNFCD"; *t; t++) raw_record_of(&b, *t);
  raw_rec_len(&b, 'E', 9, "\0\0\0\0END\n\n", 9);
  assert_string_equal(expect_corrupt(b.data, b.len), "bad end record length");
  buf_free(&b);
}

static void test_content_checks(void **state) {
  (void)state;
  struct raw_opts o = {.skip = 'S', .before = 'S', .extra_type = 'S', .extra = "a\rb",
                       .extra_len = 3};
  assert_string_equal(raw_why(&o), "bad sender");
  o = (struct raw_opts){.skip = 'R', .before = 'R', .extra_type = 'R', .extra = "a\nb",
                        .extra_len = 3};
  assert_string_equal(raw_why(&o), "bad recipient");
  o.extra = "a\0b";
  assert_string_equal(raw_why(&o), "bad recipient");
  o = (struct raw_opts){.skip = 'C', .before = 'C', .extra_type = 'C', .extra = "a\0b",
                        .extra_len = 3};
  assert_string_equal(raw_why(&o), "NUL byte in string");
  o = (struct raw_opts){.skip = 'Q', .before = 'Q', .extra_type = 'Q', .extra = "a/b",
                        .extra_len = 3};
  assert_string_equal(raw_why(&o), "bad queue id");
  o = (struct raw_opts){.skip = 'F', .before = 'F', .extra_type = 'F', .extra = "\40\0\0\0", /* bit 5: past SPOOL_F_RELEASED */
                        .extra_len = 4};
  assert_string_equal(raw_why(&o), "unknown flags");
  /* End record details: marker and checksum. */
  struct buf b = BUF_INIT;
  struct raw_opts none = {0};
  raw_file(&b, &none);
  b.data[b.len - 1] = '\r';
  assert_string_equal(expect_corrupt(b.data, b.len), "bad end marker");
  raw_file(&b, &none);
  b.data[b.len - 6] ^= 0x10;
  assert_string_equal(expect_corrupt(b.data, b.len), "checksum mismatch");
  raw_file(&b, &none);
  b.data[25] ^= 0x01; /* inside the arrival payload (12 + 7 + 5 + 1) */
  assert_string_equal(expect_corrupt(b.data, b.len), "checksum mismatch");
  buf_free(&b);
}

static void test_too_many_rcpts(void **state) {
  (void)state;
  struct buf b = BUF_INIT;
  raw_begin(&b, 1);
  raw_record_of(&b, 'Q');
  raw_record_of(&b, 'A');
  raw_record_of(&b, 'S');
  for (size_t i = 0; i < SPOOL_RCPT_MAX + 1; i++) raw_record_of(&b, 'R');
  for (const char *t = "LNFCD"; *t; t++) raw_record_of(&b, *t);
  raw_end(&b);
  assert_string_equal(expect_corrupt(b.data, b.len), "too many recipients");
  buf_free(&b);
}

/* ---- encoder validation ------------------------------------------------- */

static void expect_encode_einval(const struct spool_envelope *e, const void *d, size_t n) {
  struct buf head = BUF_INIT, tail = BUF_INIT;
  buf_append(&head, "h", 1);
  assert_int_equal(spool_record_encode(e, d, n, &head, &tail), SG_EINVAL);
  assert_int_equal(head.len, 1); /* untouched */
  assert_int_equal(tail.len, 0);
  buf_free(&head);
  buf_free(&tail);
}

static void test_encode_rejects(void **state) {
  (void)state;
  char big[SPOOL_ADDR_MAX + 2];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0'; /* 257 bytes */
  struct spool_envelope e = sample_env();
  e.queue_id[0] = '\0';
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  e.queue_id[2] = '/';
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  memset(e.queue_id, 'a', SPOOL_ID_MAX); /* no terminator inside the array */
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  e.sender = NULL;
  expect_encode_einval(&e, "x", 1);
  e.sender = "a\r\nRCPT TO:<x>";
  expect_encode_einval(&e, "x", 1);
  e.sender = "a\nb";
  expect_encode_einval(&e, "x", 1);
  e.sender = big;
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  e.n_rcpts = 0;
  expect_encode_einval(&e, "x", 1);
  e.n_rcpts = SPOOL_RCPT_MAX + 1;
  expect_encode_einval(&e, "x", 1);
  char *bad_rcpts[] = {"ok@x", ""};
  e.rcpts = bad_rcpts;
  e.n_rcpts = 2;
  expect_encode_einval(&e, "x", 1);
  bad_rcpts[1] = big;
  expect_encode_einval(&e, "x", 1);
  bad_rcpts[1] = NULL;
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  e.rcpts = NULL;
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  e.client = big;
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  e.next_hop = big;
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  e.flags = 1u << 7;
  expect_encode_einval(&e, "x", 1);
  e = sample_env();
  expect_encode_einval(&e, NULL, 1);
  /* Rejected on length alone: the data is never read. */
  expect_encode_einval(&e, "x", (size_t)SPOOL_DATA_MAX + 1);
  struct buf h = BUF_INIT;
  assert_int_equal(spool_record_encode(NULL, "x", 1, &h, &h), SG_EINVAL);
}

/* ---- ownership ---------------------------------------------------------- */

static void test_copy_and_free(void **state) {
  (void)state;
  struct spool_envelope e = sample_env(), c, c2;
  assert_int_equal(spool_envelope_copy(&c, &e), 0);
  assert_env_equal(&e, &c);
  assert_ptr_not_equal(c.sender, e.sender);
  e.listener = NULL;
  assert_int_equal(spool_envelope_copy(&c2, &e), 0);
  assert_null(c2.listener);
  spool_envelope_free(&c);
  spool_envelope_free(&c);  /* zeroed: a second free is harmless */
  spool_envelope_free(&c2);
  spool_envelope_free(NULL);
  assert_true(is_zero(&c, sizeof c));
}

/* Fail the 1st, 2nd, ... allocation until the call succeeds: every failure
 * must report SG_ENOMEM and leave nothing allocated (checked by LSan). */
static void test_alloc_failures(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  struct buf f = BUF_INIT;
  encode_file(&e, "data", 4, &f);
  int rc = SG_ENOMEM;
  long k;
  for (k = 0; rc == SG_ENOMEM; k++) {
    struct spool_envelope out;
    const char *why = NULL;
    alloc_countdown = k;
    rc = spool_record_parse(f.data, f.len, &out, NULL, NULL, &why);
    alloc_countdown = -1;
    if (rc == SG_ENOMEM) {
      assert_string_equal(why, "out of memory");
      assert_true(is_zero(&out, sizeof out));
    }
    if (rc == 0) spool_envelope_free(&out);
  }
  assert_int_equal(rc, 0);
  assert_true(k > 3);
  for (rc = SG_ENOMEM, k = 0; rc == SG_ENOMEM; k++) {
    struct spool_envelope c;
    alloc_countdown = k;
    rc = spool_envelope_copy(&c, &e);
    alloc_countdown = -1;
    if (rc == SG_ENOMEM) assert_true(is_zero(&c, sizeof c));
    else spool_envelope_free(&c);
  }
  assert_int_equal(rc, 0);
  for (rc = SG_ENOMEM, k = 0; rc == SG_ENOMEM; k++) {
    struct buf head = BUF_INIT, tail = BUF_INIT;
    alloc_countdown = k;
    rc = spool_record_encode(&e, "data", 4, &head, &tail);
    alloc_countdown = -1;
    if (rc == SG_ENOMEM) assert_int_equal(head.len + tail.len, 0);
    buf_free(&head);
    buf_free(&tail);
  }
  assert_int_equal(rc, 0);
  buf_free(&f);
}

/* ---- seed corpus for the fuzz target ------------------------------------ */

static int write_file(const char *dir, const char *name, const struct buf *b) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *fp = fopen(path, "wb");
  if (!fp) return -1;
  size_t w = fwrite(b->data, 1, b->len, fp);
  return (fclose(fp) == 0 && w == b->len) ? 0 : -1;
}

static int write_corpus(const char *dir) {
  struct spool_envelope e = sample_env();
  struct buf f = BUF_INIT;
  int rc = 0;
  const char *msg = "From: a@example.com\r\nSubject: seed\r\n\r\nhello\r\n";
  encode_file(&e, msg, strlen(msg), &f);
  rc |= write_file(dir, "seed-basic", &f);
  e.sender = "";
  e.n_rcpts = 1;
  e.flags = SPOOL_F_DSN;
  encode_file(&e, "", 0, &f);
  rc |= write_file(dir, "seed-null-sender-empty-data", &f);
  e = sample_env();
  e.listener = e.next_hop = e.client = NULL;
  unsigned char bin[64];
  for (int i = 0; i < 64; i++) bin[i] = (unsigned char)(i * 37);
  encode_file(&e, bin, sizeof bin, &f);
  rc |= write_file(dir, "seed-binary", &f);
  buf_free(&f);
  return rc;
}

int main(void) {
  const char *corpus = getenv("SPOOL_CORPUS_DIR");
  if (corpus) return write_corpus(corpus) ? 1 : 0;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_basic),
      cmocka_unit_test(test_roundtrip_empty_sender_and_fields),
      cmocka_unit_test(test_roundtrip_limits),
      cmocka_unit_test(test_roundtrip_many_rcpts),
      cmocka_unit_test(test_roundtrip_empty_data),
      cmocka_unit_test(test_roundtrip_binary_data),
      cmocka_unit_test(test_encode_appends),
      cmocka_unit_test(test_layout_golden),
      cmocka_unit_test(test_every_truncation_rejected),
      cmocka_unit_test(test_every_bit_flip_rejected),
      cmocka_unit_test(test_header_checks),
      cmocka_unit_test(test_trailing_garbage),
      cmocka_unit_test(test_control_file_is_valid),
      cmocka_unit_test(test_order_and_presence),
      cmocka_unit_test(test_lengths),
      cmocka_unit_test(test_oversize_lengths),
      cmocka_unit_test(test_content_checks),
      cmocka_unit_test(test_original_recipients),
      cmocka_unit_test(test_too_many_rcpts),
      cmocka_unit_test(test_encode_rejects),
      cmocka_unit_test(test_copy_and_free),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
