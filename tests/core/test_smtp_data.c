/*
 * Unit tests for core/smtp_data: end detection, dot-unstuffing, SMTP
 * smuggling variants, limits, Received counting, allocation failure, and
 * that any split of the input gives exactly the one-shot result.
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
#include "core/smtp_data.h"

#define L(s) (sizeof(s) - 1)
#define NOLIMIT UINT64_MAX

/* Everything smtp_data reports for one input. */
struct result {
  char *out;
  size_t out_len;
  size_t consumed;
  bool done;
  unsigned flags;
  uint64_t size;
  unsigned received;
};

enum split { SPLIT_NONE, SPLIT_BYTES, SPLIT_RANDOM, SPLIT_AT };

static uint32_t xorshift(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/*
 * Feeds in[0..len) in chunks chosen by how: all at once, one byte at a
 * time, random sizes (param is the seed), or two pieces split at param.
 * Each chunk is an exact-size heap copy so ASan sees any over-read.
 */
static struct result feed(const char *in, size_t len, uint64_t max_size, uint64_t max_line, enum split how,
                          uint32_t param) {
  struct smtp_data d;
  struct buf out = BUF_INIT;
  struct result r;
  memset(&r, 0, sizeof r);
  smtp_data_init(&d, max_size, max_line);
  uint32_t seed = param | 1;
  size_t pos = 0;
  while (!r.done) {
    size_t n = len - pos;
    if (how == SPLIT_BYTES && n > 1) n = 1;
    if (how == SPLIT_RANDOM && n > 0) n = 1 + xorshift(&seed) % (xorshift(&seed) % 3 ? 8 : 200);
    if (how == SPLIT_AT && pos < param) n = param - pos;
    if (n > len - pos) n = len - pos;
    char *chunk = malloc(n ? n : 1);
    memcpy(chunk, in + pos, n);
    size_t used = smtp_data_feed(&d, chunk, n, &out, &r.done);
    free(chunk);
    assert_true(used <= n);
    if (!r.done) assert_int_equal(used, n); /* only the end stops consumption */
    pos += used;
    if (pos == len && (how != SPLIT_AT || pos >= param)) break;
  }
  if (r.done) { /* after the end nothing more is consumed */
    bool again = false;
    assert_int_equal(smtp_data_feed(&d, "QUIT\r\n", 6, &out, &again), 0);
    assert_true(again);
  }
  r.consumed = pos;
  r.flags = d.flags;
  r.size = d.size;
  r.received = d.received_count;
  r.out = buf_steal(&out, &r.out_len);
  return r;
}

static void result_free(struct result *r) { free(r->out); }

static void assert_same(const struct result *a, const struct result *b, const char *what, size_t idx) {
  if (a->out_len != b->out_len || memcmp(a->out, b->out, a->out_len) != 0 || a->consumed != b->consumed ||
      a->done != b->done || a->flags != b->flags || a->size != b->size || a->received != b->received)
    fail_msg("%s differs from one-shot for message %zu: out %zu/%zu consumed %zu/%zu done %d/%d flags %x/%x "
             "size %llu/%llu received %u/%u",
             what, idx, a->out_len, b->out_len, a->consumed, b->consumed, a->done, b->done, a->flags, b->flags,
             (unsigned long long)a->size, (unsigned long long)b->size, a->received, b->received);
}

/* ---- golden cases ---- */

struct data_case {
  const char *in;
  size_t in_len;
  const char *out;
  size_t out_len;
  size_t consumed;
  bool done;
  unsigned flags;
};

#define DC(in, out, consumed, done, flags) {in, L(in), out, L(out), consumed, done, flags}
#define BARE SMTP_DATA_BARE_NEWLINE

static const struct data_case golden[] = {
    DC("Hello\r\n.\r\n", "Hello\r\n", 10, true, 0),
    DC(".\r\n", "", 3, true, 0),                               /* empty message */
    DC(".\r\nQUIT\r\n", "", 3, true, 0),                       /* pipelined command is left */
    DC("\r\n.\r\n", "\r\n", 5, true, 0),                       /* one empty line */
    DC("a\r\n.\r\nMAIL FROM:<>\r\n", "a\r\n", 6, true, 0),
    DC("a\r\n..b\r\n.\r\n", "a\r\n.b\r\n", 11, true, 0),       /* dot-unstuffing */
    DC("..\r\n.\r\n", ".\r\n", 7, true, 0),
    DC("...\r\n.\r\n", "..\r\n", 8, true, 0),
    DC("a\r\n.b\r\n.\r\n", "a\r\nb\r\n", 10, true, 0),         /* RFC 5321 4.5.2: leading dot deleted */
    DC("a.\r\nb..\r\n.\r\n", "a.\r\nb..\r\n", 12, true, 0),    /* only a leading dot */
    DC(". \r\n.\r\n", " \r\n", 7, true, 0),                    /* "." SP is not the end */
    DC("abc", "abc", 3, false, 0),                             /* no end yet */
    DC("abc\r\n", "abc\r\n", 5, false, 0),
    DC("abc\r\n.", "abc\r\n", 6, false, 0),
    DC("abc\r\n.\r", "abc\r\n", 7, false, 0),
    DC("abc\r", "abc", 4, false, 0),                           /* the CR waits for its successor */
    DC("", "", 0, false, 0),
    DC("a\r\n\r\n.\r\n", "a\r\n\r\n", 8, true, 0),
    DC("a\0b\r\n.\r\n", "a\0b\r\n", 8, true, 0),                /* NUL is data here */
    DC("\xff\xfe\r\n.\r\n", "\xff\xfe\r\n", 7, true, 0),
    /* bare line ends are content, flagged, never line ends */
    DC("a\nb\r\n.\r\n", "a\nb\r\n", 8, true, BARE),
    DC("a\rb\r\n.\r\n", "a\rb\r\n", 8, true, BARE),
    DC("\n.\r\n.\r\n", "\n.\r\n", 7, true, BARE),
    DC("\r.\r\n.\r\n", "\r.\r\n", 7, true, BARE),
    DC("a\r\r\n.\r\n", "a\r\r\n", 7, true, BARE),
    DC("a\r\n\n.\r\n", "a\r\n\n.\r\n", 7, false, BARE),
    DC("a\r\n.\nX\r\n.\r\n", "a\r\n\nX\r\n", 11, true, BARE), /* leading dot deleted, LF kept */
    DC("a\r\n.\rX\r\n.\r\n", "a\r\n\rX\r\n", 11, true, BARE),
    DC("a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n", 10, true, BARE),
    DC("a\r\n.\r.\r\n.\r\n", "a\r\n\r.\r\n", 11, true, BARE),
    DC("a\n\r\n.\r\n", "a\n\r\n", 7, true, BARE),
};

static void test_golden(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
    const struct data_case *t = &golden[i];
    struct result r = feed(t->in, t->in_len, NOLIMIT, NOLIMIT, SPLIT_NONE, 0);
    if (r.out_len != t->out_len || memcmp(r.out, t->out, r.out_len) != 0 || r.consumed != t->consumed ||
        r.done != t->done || r.flags != t->flags)
      fail_msg("case %zu: out_len %zu consumed %zu done %d flags %x", i, r.out_len, r.consumed, r.done, r.flags);
    assert_int_equal(r.size, r.out_len); /* no limits: size is what was stored */
    result_free(&r);
  }
}

/* ---- SMTP smuggling ---- */

static const char *const fake_ends[] = {
    "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\n.\r", "\r.\n", "\n\n.\n\n",
    "\r\r.\r\r", "\r\n.\n\r\n", "\n.\n\r\n", "\r\n.\r\r\n",
};

static void test_smuggling(void **state) {
  (void)state;
  const char *head = "From: a@b.example\r\nSubject: x\r\n\r\nbody";
  const char *tail = "MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@y.example>\r\nDATA\r\nforged\r\n.\r\n";
  for (size_t i = 0; i < sizeof fake_ends / sizeof fake_ends[0]; i++) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s%s%s", head, fake_ends[i], tail);
    struct result r = feed(msg, (size_t)n, NOLIMIT, NOLIMIT, SPLIT_NONE, 0);
    /* The data ends only at the real CRLF.CRLF at the very end... */
    if (!r.done || r.consumed != (size_t)n) fail_msg("fake end %zu ended the data at %zu of %d", i, r.consumed, n);
    /* ...and the message is marked for rejection. */
    if (!(r.flags & SMTP_DATA_BARE_NEWLINE)) fail_msg("fake end %zu not flagged", i);
    /* The forged commands are message content, not commands. */
    assert_non_null(memmem(r.out, r.out_len, "RCPT TO:<victim@y.example>", 26));
    result_free(&r);
  }
  /* And the one true end is not flagged. */
  struct result r = feed("body\r\n.\r\nMAIL FROM:<>\r\n", 22, NOLIMIT, NOLIMIT, SPLIT_NONE, 0);
  assert_true(r.done);
  assert_int_equal(r.consumed, 9);
  assert_int_equal(r.flags, 0);
  result_free(&r);
}

/* ---- limits ---- */

static void test_size_limit(void **state) {
  (void)state;
  const char msg[] = "0123456789\r\n0123456789\r\n..x\r\n.\r\n"; /* unstuffed: 12 + 12 + 4 = 28 */
  struct result r = feed(msg, L(msg), 28, NOLIMIT, SPLIT_NONE, 0);
  assert_true(r.done);
  assert_int_equal(r.flags, 0);
  assert_int_equal(r.size, 28);
  assert_int_equal(r.out_len, 28);
  result_free(&r);
  r = feed(msg, L(msg), 27, NOLIMIT, SPLIT_NONE, 0);
  assert_true(r.done); /* still read to the real end */
  assert_int_equal(r.consumed, L(msg));
  assert_int_equal(r.flags, SMTP_DATA_TOO_BIG);
  assert_int_equal(r.size, 28); /* counting goes on */
  assert_int_equal(r.out_len, 27); /* appending stopped at the limit */
  assert_memory_equal(r.out, "0123456789\r\n0123456789\r\n.x\r", 27);
  result_free(&r);
  r = feed(msg, L(msg), 5, NOLIMIT, SPLIT_NONE, 0);
  assert_int_equal(r.flags, SMTP_DATA_TOO_BIG);
  assert_int_equal(r.out_len, 5);
  result_free(&r);
  r = feed(msg, L(msg), 0, NOLIMIT, SPLIT_NONE, 0);
  assert_int_equal(r.flags, SMTP_DATA_TOO_BIG);
  assert_int_equal(r.out_len, 0);
  result_free(&r);
  r = feed(".\r\n", 3, 0, 0, SPLIT_NONE, 0); /* an empty message fits any limit */
  assert_true(r.done);
  assert_int_equal(r.flags, 0);
  result_free(&r);
}

static void test_line_limit(void **state) {
  (void)state;
  /* max_line counts octets without the CRLF, after unstuffing. */
  const char ok[] = "12345\r\n..2345\r\n.\r\n";
  struct result r = feed(ok, L(ok), NOLIMIT, 5, SPLIT_NONE, 0);
  assert_true(r.done);
  assert_int_equal(r.flags, 0);
  assert_int_equal(r.out_len, 14);
  result_free(&r);
  const char longl[] = "12345\r\n123456\r\nmore\r\n.\r\n";
  r = feed(longl, L(longl), NOLIMIT, 5, SPLIT_NONE, 0);
  assert_true(r.done);
  assert_int_equal(r.consumed, L(longl));
  assert_int_equal(r.flags, SMTP_DATA_LINE_TOO_LONG);
  assert_int_equal(r.out_len, 12);
  assert_memory_equal(r.out, "12345\r\n12345", 12);
  assert_int_equal(r.size, L(longl) - 3);
  result_free(&r);
  /* A bare CR or LF does not end a line: it is part of its length. */
  const char bare[] = "12\n45\r\n.\r\n";
  r = feed(bare, L(bare), NOLIMIT, 4, SPLIT_NONE, 0);
  assert_int_equal(r.flags, SMTP_DATA_LINE_TOO_LONG | SMTP_DATA_BARE_NEWLINE);
  assert_int_equal(r.out_len, 4);
  result_free(&r);
  const char barecr[] = "12\r45\r\n.\r\n";
  r = feed(barecr, L(barecr), NOLIMIT, 5, SPLIT_NONE, 0);
  assert_int_equal(r.flags, SMTP_DATA_BARE_NEWLINE);
  result_free(&r);
  r = feed(barecr, L(barecr), NOLIMIT, 4, SPLIT_NONE, 0);
  assert_int_equal(r.flags, SMTP_DATA_BARE_NEWLINE | SMTP_DATA_LINE_TOO_LONG);
  result_free(&r);
  /* Both limits at once: the output stops at whichever comes first. */
  r = feed(longl, L(longl), 9, 5, SPLIT_NONE, 0);
  assert_int_equal(r.flags, SMTP_DATA_LINE_TOO_LONG | SMTP_DATA_TOO_BIG);
  assert_int_equal(r.out_len, 9);
  result_free(&r);
}

/* A 1 MiB line with no CR: counted, flagged, and cut at the limit. */
static void test_huge_line(void **state) {
  (void)state;
  size_t n = 1 << 20;
  char *msg = malloc(n + 5);
  memset(msg, 'x', n);
  memcpy(msg + n, "\r\n.\r\n", 5);
  struct result r = feed(msg, n + 5, NOLIMIT, 998, SPLIT_RANDOM, 7);
  assert_true(r.done);
  assert_int_equal(r.flags, SMTP_DATA_LINE_TOO_LONG);
  assert_int_equal(r.out_len, 998);
  assert_int_equal(r.size, n + 2);
  result_free(&r);
  free(msg);
}

/* ---- Received: counting ---- */

static void test_received(void **state) {
  (void)state;
  const char msg[] =
      "Received: from a by b\r\n"
      "\tid 1; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
      "received: from c\r\n"
      "RECEIVED:from d\r\n"
      " Received: continuation, not a field\r\n"
      "X-Received: not counted\r\n"
      "Received : obsolete spacing, not counted\r\n"
      "Receive\r\n"
      "Received\r\n"
      ".Received: stuffed, a Received field once unstuffed\r\n"
      "Subject: hi\r\n"
      "\r\n"
      "Received: in the body, not counted\r\n"
      "\r\n"
      "Received: nor here\r\n"
      ".\r\n";
  struct result r = feed(msg, L(msg), NOLIMIT, NOLIMIT, SPLIT_NONE, 0);
  assert_true(r.done);
  assert_int_equal(r.received, 4);
  result_free(&r);
  /* Without a blank line everything is header. */
  const char nobody[] = "Received: a\r\nReceived: b\r\n.\r\n";
  r = feed(nobody, L(nobody), NOLIMIT, NOLIMIT, SPLIT_NONE, 0);
  assert_int_equal(r.received, 2);
  result_free(&r);
  /* An empty header section: nothing counts. */
  const char nohdr[] = "\r\nReceived: a\r\n.\r\n";
  r = feed(nohdr, L(nohdr), NOLIMIT, NOLIMIT, SPLIT_NONE, 0);
  assert_int_equal(r.received, 0);
  result_free(&r);
  /* A bare LF neither ends the line nor the header. */
  const char bare[] = "X: y\nReceived: a\r\nReceived: b\r\n.\r\n";
  r = feed(bare, L(bare), NOLIMIT, NOLIMIT, SPLIT_NONE, 0);
  assert_int_equal(r.received, 1);
  assert_true(r.flags & SMTP_DATA_BARE_NEWLINE);
  result_free(&r);
  /* Counting continues past the size limit (the hop count must still be
   * known for a message we refuse). */
  r = feed(msg, L(msg), 10, NOLIMIT, SPLIT_NONE, 0);
  assert_int_equal(r.received, 4);
  result_free(&r);
}

/* ---- allocation failure ---- */

static void test_nomem(void **state) {
  (void)state;
  /* A buffer whose every append fails (its size arithmetic overflows)
   * without touching memory. */
  struct buf full = {NULL, SIZE_MAX - 2, SIZE_MAX - 2};
  struct smtp_data d;
  bool done = false;
  smtp_data_init(&d, NOLIMIT, NOLIMIT);
  const char msg[] = "Received: x\r\n\r\nbody\r\n.\r\nQUIT\r\n";
  size_t used = smtp_data_feed(&d, msg, L(msg), &full, &done);
  assert_true(done);
  assert_int_equal(used, L(msg) - 6);
  assert_int_equal(d.flags, SMTP_DATA_NOMEM);
  assert_int_equal(d.received_count, 1);
  assert_int_equal(full.len, SIZE_MAX - 2);
  /* Fed in pieces, the session still reaches the end. */
  smtp_data_init(&d, NOLIMIT, NOLIMIT);
  done = false;
  size_t pos = 0;
  while (!done && pos < L(msg)) pos += smtp_data_feed(&d, msg + pos, 3 < L(msg) - pos ? 3 : L(msg) - pos, &full, &done);
  assert_true(done);
  assert_int_equal(pos, L(msg) - 6);
  assert_int_equal(d.flags, SMTP_DATA_NOMEM);
}

/* ---- chunk-split equivalence ---- */

/* Random streams over an alphabet that hits every state transition. */
static size_t random_message(char *buf, size_t cap, uint32_t *seed) {
  static const char *const pieces[] = {"\r\n", "\r", "\n", ".", "..", "\r\n.", "\r\n..", "\r\n\r\n", "Received:",
                                       "received: x", " cont", "a", "bcdef", "\r\n.\r", "\0", "\xff", "R"};
  size_t n = 0, want = xorshift(seed) % (cap - 16);
  while (n < want) {
    const char *p = pieces[xorshift(seed) % (sizeof pieces / sizeof pieces[0])];
    size_t pl = *p ? strlen(p) : 1;
    if (n + pl > want) break;
    memcpy(buf + n, p, pl);
    n += pl;
  }
  if (xorshift(seed) % 4) { /* usually terminated, sometimes with trailing commands */
    memcpy(buf + n, "\r\n.\r\nQUIT\r\n", 11);
    n += 11;
  }
  return n;
}

static void check_splits(const char *msg, size_t len, size_t idx, uint64_t max_size, uint64_t max_line, bool all_cuts) {
  struct result one = feed(msg, len, max_size, max_line, SPLIT_NONE, 0);
  struct result r = feed(msg, len, max_size, max_line, SPLIT_BYTES, 0);
  assert_same(&r, &one, "byte-at-a-time", idx);
  result_free(&r);
  for (uint32_t s = 1; s <= 8; s++) {
    r = feed(msg, len, max_size, max_line, SPLIT_RANDOM, s * 7919u + (uint32_t)idx);
    assert_same(&r, &one, "random chunks", idx);
    result_free(&r);
  }
  for (size_t k = 0; all_cuts && k <= len; k++) {
    r = feed(msg, len, max_size, max_line, SPLIT_AT, (uint32_t)k);
    assert_same(&r, &one, "two pieces", idx);
    result_free(&r);
  }
  result_free(&one);
}

static void test_split_equivalence(void **state) {
  (void)state;
  size_t idx = 0;
  for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++, idx++) {
    check_splits(golden[i].in, golden[i].in_len, idx, NOLIMIT, NOLIMIT, true);
    check_splits(golden[i].in, golden[i].in_len, idx, 3, 2, true);
  }
  for (size_t i = 0; i < sizeof fake_ends / sizeof fake_ends[0]; i++, idx++) {
    char msg[256];
    int n = snprintf(msg, sizeof msg, "Received: x\r\n\r\nbody%sMAIL FROM:<>\r\n.\r\nQUIT\r\n", fake_ends[i]);
    check_splits(msg, (size_t)n, idx, NOLIMIT, NOLIMIT, true);
    check_splits(msg, (size_t)n, idx, 20, 6, true);
  }
  uint32_t seed = 2024;
  char msg[600];
  for (int i = 0; i < 3000; i++, idx++) {
    size_t n = random_message(msg, sizeof msg - 16, &seed);
    uint64_t ms = (i % 3 == 0) ? NOLIMIT : xorshift(&seed) % 600;
    uint64_t ml = (i % 5 == 0) ? NOLIMIT : xorshift(&seed) % 40;
    check_splits(msg, n, idx, ms, ml, i < 300);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden),         cmocka_unit_test(test_smuggling),  cmocka_unit_test(test_size_limit),
      cmocka_unit_test(test_line_limit),     cmocka_unit_test(test_huge_line),  cmocka_unit_test(test_received),
      cmocka_unit_test(test_nomem),          cmocka_unit_test(test_split_equivalence),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
