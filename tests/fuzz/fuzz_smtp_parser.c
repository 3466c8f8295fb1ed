/*
 * Fuzz target for core/smtp_parser and core/smtp_data, the two parsers that
 * see raw bytes from SMTP clients.
 *
 * The input is used twice.  Split at LF (a trailing CR dropped, as the
 * session does), each line goes through every parser function, each line
 * copied to an exact-size heap block so ASan flags any read past its end.
 * Then the whole input after the first byte is fed to smtp_data in chunks
 * whose sizes come from the first byte, and the result is compared with a
 * one-shot feed: the DATA machine must not depend on how TCP split the
 * stream.  Invariant violations abort, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "core/smtp_data.h"
#include "core/smtp_parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
  do {              \
    if (!(cond)) abort(); \
  } while (0)

static void check_error(int rc, const struct smtp_error *err) {
  CHECK(rc == 0 || rc == SG_ESYNTAX);
  if (rc) CHECK(err->code >= 500 && err->code < 600 && err->enh && err->text && err->text[0]);
}

static void fuzz_line(const char *line, size_t len) {
  struct smtp_cmd cmd;
  struct smtp_error err;
  int rc = smtp_parse_command(line, len, &cmd, &err);
  check_error(rc, &err);
  if (rc == 0 && cmd.arg_len > 0) CHECK(cmd.arg > line && cmd.arg + cmd.arg_len <= line + len);
  /* The argument as the session would pass it, and the raw line as well:
   * the argument parsers must cope with anything, not just what
   * smtp_parse_command lets through. */
  const char *args[2] = {line, cmd.arg};
  size_t lens[2] = {len, cmd.arg_len};
  for (int i = 0; i < (rc == 0 ? 2 : 1); i++) {
    struct smtp_mail_args m;
    struct smtp_rcpt_args r;
    rc = smtp_parse_mail(args[i], lens[i], &m, &err);
    check_error(rc, &err);
    if (rc == 0) {
      CHECK(m.addr_len <= SMTP_PATH_MAX - 2 && strlen(m.addr) == m.addr_len);
      (void)smtp_addr_domain(m.addr);
    }
    rc = smtp_parse_rcpt(args[i], lens[i], &r, &err);
    check_error(rc, &err);
    if (rc == 0) {
      CHECK(r.addr_len > 0 && r.addr_len <= SMTP_PATH_MAX - 2 && strlen(r.addr) == r.addr_len);
      const char *dom = smtp_addr_domain(r.addr);
      CHECK(dom || strcmp(r.addr, "postmaster") == 0);
    }
    check_error(smtp_parse_helo(args[i], lens[i], &err), &err);
  }
}

static void fuzz_lines(const uint8_t *data, size_t size) {
  size_t start = 0;
  while (start <= size) {
    const uint8_t *nl = memchr(data + start, '\n', size - start);
    size_t end = nl ? (size_t)(nl - data) : size;
    size_t len = end - start;
    if (len > 0 && data[start + len - 1] == '\r') len--;
    char *line = malloc(len ? len : 1);
    if (!line) return;
    memcpy(line, data + start, len);
    fuzz_line(line, len);
    free(line);
    if (!nl) break;
    start = end + 1;
  }
}

struct data_result {
  struct buf out;
  size_t consumed;
  bool done;
  struct smtp_data d;
};

/* chunk == 0: one call; otherwise chunk sizes cycle through 1..chunk. */
static void feed_data(const uint8_t *in, size_t len, uint64_t max_size, uint64_t max_line, unsigned chunk,
                      struct data_result *r) {
  memset(r, 0, sizeof *r);
  smtp_data_init(&r->d, max_size, max_line);
  unsigned next = 1;
  while (r->consumed < len && !r->done) {
    size_t n = len - r->consumed;
    if (chunk && n > next) n = next;
    next = next % (chunk ? chunk : 1) + 1;
    size_t used = smtp_data_feed(&r->d, (const char *)in + r->consumed, n, &r->out, &r->done);
    CHECK(used <= n && (r->done || used == n));
    r->consumed += used;
  }
  unsigned stop = SMTP_DATA_TOO_BIG | SMTP_DATA_LINE_TOO_LONG | SMTP_DATA_NOMEM;
  CHECK(r->out.len <= r->d.size);
  if (!(r->d.flags & stop)) CHECK(r->out.len == r->d.size);
  if (r->d.flags & SMTP_DATA_TOO_BIG) CHECK(r->out.len <= max_size);
  else CHECK(r->d.size <= max_size);
}

static void fuzz_data(const uint8_t *data, size_t size) {
  if (size == 0) return;
  uint8_t b = data[0];
  /* Limits from the first byte too, so the cut-off paths are exercised. */
  uint64_t max_size = (b & 0x80) ? (uint64_t)(b & 0x3f) * 16 : UINT64_MAX;
  uint64_t max_line = (b & 0x40) ? (uint64_t)(b & 0x0f) * 4 : UINT64_MAX;
  unsigned chunk = (b & 0x1f) + 1;
  struct data_result whole, split;
  feed_data(data + 1, size - 1, max_size, max_line, 0, &whole);
  feed_data(data + 1, size - 1, max_size, max_line, chunk, &split);
  CHECK(whole.consumed == split.consumed && whole.done == split.done);
  CHECK(whole.d.flags == split.d.flags && whole.d.size == split.d.size);
  CHECK(whole.d.received_count == split.d.received_count);
  CHECK(whole.out.len == split.out.len);
  CHECK(whole.out.len == 0 || memcmp(whole.out.data, split.out.data, whole.out.len) == 0);
  buf_free(&whole.out);
  buf_free(&split.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_lines(data, size);
  fuzz_data(data, size);
  return 0;
}
