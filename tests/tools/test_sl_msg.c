/*
 * Unit tests for tools/sealload/sl_msg: generated messages are exactly
 * the size asked for (once it covers the headers), well-formed on the
 * wire (CRLF only, lines under 998 octets, ".\r\n" end), the Message-IDs
 * are unique and of fixed width, and a --file message is dot-stuffed,
 * CRLF-normalised and gets its Message-ID replaced.  The wire form is
 * read back with core/smtp_data (the server side's own unstuffing), so
 * what is checked is what a real server stores.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "core/smtp_data.h"
#include "tools/sealload/sl_msg.h"

static char tmp[64];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  (void)state;
  snprintf(tmp, sizeof tmp, "/tmp/sg-slmsg-XXXXXX");
  return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  return nftw(tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static struct sl_msg build(enum sl_msg_kind kind, size_t size, const char *file) {
  struct sl_msg_opts o = {.kind = kind, .size = size, .file = file, .from = "a@example.com",
                          .to = "b@example.net", .run = 0x1234abcd};
  struct sl_msg m;
  char err[256] = "";
  int rc = sl_msg_build(&o, &m, err, sizeof err);
  if (rc) fprintf(stderr, "sl_msg_build: %s\n", err);
  assert_int_equal(rc, 0);
  return m;
}

/* The message as a server stores it: the wire form through smtp_data,
 * which must find the end marker exactly at the end. */
static struct buf unstuffed(const struct sl_msg *m, unsigned worker, uint64_t seq, struct buf *wire_out) {
  struct buf wire = BUF_INIT, out = BUF_INIT;
  assert_int_equal(sl_msg_render(m, worker, seq, &wire), 0);
  struct smtp_data d;
  bool done = false;
  smtp_data_init(&d, UINT64_MAX, 998);
  assert_int_equal(smtp_data_feed(&d, wire.data, wire.len, &out, &done), wire.len);
  assert_true(done);
  assert_int_equal(d.flags, 0); /* no bare CR/LF, no line over 998 */
  if (wire_out) *wire_out = wire;
  else buf_free(&wire);
  return out;
}

static void check_size(enum sl_msg_kind kind, size_t size) {
  struct sl_msg m = build(kind, size, NULL);
  struct buf msg = unstuffed(&m, 0, 1, NULL);
  assert_int_equal(msg.len, m.size);
  if (m.size != size) {
    fprintf(stderr, "kind %d: asked %zu, got %zu\n", (int)kind, size, m.size);
    fail();
  }
  buf_free(&msg);
  sl_msg_free(&m);
}

/* Every size from just above the headers up, then large ones. */
static void check_sizes(enum sl_msg_kind kind, size_t from) {
  for (size_t s = from; s < from + 420; s++) check_size(kind, s);
  const size_t big[] = {4096, 4097, 65536, 65537, 1 << 20};
  for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) check_size(kind, big[i]);
}

/* The smallest message of a kind: what a size of 1 gives. */
static size_t overhead(enum sl_msg_kind kind) {
  struct sl_msg m = build(kind, 1, NULL);
  size_t n = m.size;
  sl_msg_free(&m);
  return n;
}

static void test_text_size_exact(void **state) {
  (void)state;
  check_sizes(SL_MSG_TEXT, overhead(SL_MSG_TEXT));
}

static void test_attach_size_exact(void **state) {
  (void)state;
  check_sizes(SL_MSG_ATTACH, overhead(SL_MSG_ATTACH));
}

static void test_8bit_size_exact(void **state) {
  (void)state;
  check_sizes(SL_MSG_8BIT, overhead(SL_MSG_8BIT));
}

/* Too small a size gives the headers and a minimal body, not a cut. */
static void test_size_below_headers(void **state) {
  (void)state;
  struct sl_msg m = build(SL_MSG_TEXT, 10, NULL);
  struct buf msg = unstuffed(&m, 0, 1, NULL);
  assert_true(m.size > 10 && m.size < 400);
  assert_non_null(memmem(msg.data, msg.len, "\r\n\r\n", 4));
  buf_free(&msg);
  sl_msg_free(&m);
}

static bool valid_utf8(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!k || i + k > n || (k == 2 && c < 0xc2)) return false;
    for (size_t j = 1; j < k; j++)
      if ((p[i + j] & 0xc0) != 0x80) return false;
    i += k;
  }
  return true;
}

static void test_8bit_is_utf8(void **state) {
  (void)state;
  for (size_t size = 600; size < 700; size++) {
    struct sl_msg m = build(SL_MSG_8BIT, size, NULL);
    struct buf msg = unstuffed(&m, 0, 1, NULL);
    assert_true(m.body8);
    assert_true(valid_utf8((unsigned char *)msg.data, msg.len));
    const char *body = memmem(msg.data, msg.len, "\r\n\r\n", 4);
    assert_non_null(body);
    bool high = false;
    for (const char *p = body; p < msg.data + msg.len; p++) high |= (unsigned char)*p >= 0x80;
    assert_true(high);
    buf_free(&msg);
    sl_msg_free(&m);
  }
  struct sl_msg t = build(SL_MSG_TEXT, 4096, NULL);
  assert_false(t.body8);
  sl_msg_free(&t);
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, SL_MSG_ID_LEN); }

/* Fixed width, unique over workers and sequence numbers, different runs. */
static void test_message_ids_unique(void **state) {
  (void)state;
  struct sl_msg m = build(SL_MSG_TEXT, 300, NULL), m2 = build(SL_MSG_TEXT, 300, NULL);
  m2.run = 0x1234abce;
  size_t n = 3 * 40000 + 10, k = 0;
  char *ids = malloc(n * SL_MSG_ID_LEN), line[SL_MSG_ID_LINE_LEN + 1];
  assert_non_null(ids);
  for (unsigned w = 0; w < 3; w++)
    for (uint64_t seq = 0; seq < 40000; seq++) {
      assert_int_equal(sl_msg_id_line(&m, w, seq * 7919, line), SL_MSG_ID_LINE_LEN);
      assert_int_equal(strlen(line), SL_MSG_ID_LINE_LEN);
      assert_memory_equal(line, "Message-ID: <", 13);
      assert_memory_equal(line + 13 + SL_MSG_ID_LEN, ">\r\n", 3);
      memcpy(ids + SL_MSG_ID_LEN * k++, line + 13, SL_MSG_ID_LEN);
    }
  for (uint64_t seq = 0; seq < 10; seq++) {
    sl_msg_id_line(&m2, 0, seq, line);
    memcpy(ids + SL_MSG_ID_LEN * k++, line + 13, SL_MSG_ID_LEN);
  }
  qsort(ids, k, SL_MSG_ID_LEN, cmp_id);
  for (size_t i = 1; i < k; i++) assert_true(cmp_id(ids + (i - 1) * SL_MSG_ID_LEN, ids + i * SL_MSG_ID_LEN) != 0);
  free(ids);
  sl_msg_free(&m);
  sl_msg_free(&m2);
}

static void write_file(const char *name, const char *text, char *path, size_t cap) {
  snprintf(path, cap, "%s/%s", tmp, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Lines that start with a dot are stuffed on the wire and come back
 * whole; a lone "." inside the body never ends the message early. */
static void test_file_dot_stuffing(void **state) {
  (void)state;
  char path[128];
  write_file("dots.eml", "Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nmid.dle\r\n.\r\nlast\r\n", path, sizeof path);
  struct sl_msg m = build(SL_MSG_FILE, 0, path);
  struct buf wire, msg = unstuffed(&m, 2, 77, &wire);
  const char *want_wire = "Subject: dots\r\n\r\n..\r\n...\r\n..hidden\r\nmid.dle\r\n..\r\nlast\r\n.\r\n";
  assert_int_equal(wire.len, SL_MSG_ID_LINE_LEN + strlen(want_wire));
  assert_memory_equal(wire.data + SL_MSG_ID_LINE_LEN, want_wire, strlen(want_wire));
  const char *want = "Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nmid.dle\r\n.\r\nlast\r\n";
  assert_int_equal(msg.len, SL_MSG_ID_LINE_LEN + strlen(want));
  assert_memory_equal(msg.data + SL_MSG_ID_LINE_LEN, want, strlen(want));
  assert_int_equal(m.size, msg.len);
  buf_free(&wire);
  buf_free(&msg);
  sl_msg_free(&m);
}

/* The file's Message-ID (any case, folded) is gone; ours is first; bare
 * LF became CRLF and a missing final line end was added; a Message-ID
 * in the body is the body's business. */
static void test_file_message_id_replaced(void **state) {
  (void)state;
  char path[128];
  write_file("id.eml",
             "From: x@example.com\nmessage-id :\n  <old@example.com>\nSubject: keep\n\nbody\nMessage-ID: <inbody>\nend",
             path, sizeof path);
  struct sl_msg m = build(SL_MSG_FILE, 0, path);
  struct buf msg = unstuffed(&m, 0, 5, NULL);
  char line[SL_MSG_ID_LINE_LEN + 1];
  sl_msg_id_line(&m, 0, 5, line);
  const char *want = "From: x@example.com\r\nSubject: keep\r\n\r\nbody\r\nMessage-ID: <inbody>\r\nend\r\n";
  assert_int_equal(msg.len, SL_MSG_ID_LINE_LEN + strlen(want));
  assert_memory_equal(msg.data, line, SL_MSG_ID_LINE_LEN);
  assert_memory_equal(msg.data + SL_MSG_ID_LINE_LEN, want, strlen(want));
  assert_false(m.body8);
  buf_free(&msg);
  sl_msg_free(&m);
}

static void test_file_8bit_detected(void **state) {
  (void)state;
  char path[128];
  write_file("utf8.eml", "Subject: x\r\n\r\nK\xc3\xb6ln\r\n", path, sizeof path);
  struct sl_msg m = build(SL_MSG_FILE, 0, path);
  assert_true(m.body8);
  sl_msg_free(&m);
}

static void test_file_missing(void **state) {
  (void)state;
  char path[128], err[256] = "";
  snprintf(path, sizeof path, "%s/nonexistent.eml", tmp);
  struct sl_msg_opts o = {.kind = SL_MSG_FILE, .file = path};
  struct sl_msg m;
  assert_int_equal(sl_msg_build(&o, &m, err, sizeof err), SG_EIO);
  assert_non_null(strstr(err, "nonexistent.eml"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text_size_exact),       cmocka_unit_test(test_attach_size_exact),
      cmocka_unit_test(test_8bit_size_exact),       cmocka_unit_test(test_size_below_headers),
      cmocka_unit_test(test_8bit_is_utf8),          cmocka_unit_test(test_message_ids_unique),
      cmocka_unit_test(test_file_dot_stuffing),     cmocka_unit_test(test_file_message_id_replaced),
      cmocka_unit_test(test_file_8bit_detected),    cmocka_unit_test(test_file_missing),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
