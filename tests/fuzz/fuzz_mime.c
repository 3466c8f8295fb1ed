/*
 * fuzz_mime - libFuzzer target for mime_split() and mime_from_address().
 *
 * Any bytes are a possible message from an SMTP client.  mime_split must
 * survive them (ASan, UBSan and LSan run with the fuzzer) and either fail
 * cleanly or return what it promises: an entity that is 7-bit, has CRLF
 * line ends only and no line over 998 octets, and an outer header whose
 * every line ends in CRLF.  Anything else aborts, so the fuzzer keeps it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/sgerr.h"
#include "crypto/mime.h"

/* CRLF only, and with seven_bit also no NUL, no 8-bit octet and no line
 * over 998 octets. */
static void check_lines(const char *p, size_t n, int seven_bit) {
  size_t line = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (seven_bit && (c == 0 || c >= 0x80)) abort();
    if (c == '\n') abort(); /* a LF not after a CR */
    if (c == '\r') {
      if (i + 1 == n || p[i + 1] != '\n') abort();
      if (seven_bit && line > 998) abort();
      line = 0;
      i++;
    } else {
      line++;
    }
  }
  if (seven_bit && line > 998) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len) {
  static int ready;
  if (!ready) {
    mime_init();
    ready = 1;
  }
  struct mime_split s;
  int rc = mime_split((const char *)in, len, &s);
  if (rc != 0) {
    if (rc != SG_EINVAL && rc != SG_ELIMIT && rc != SG_ENOMEM) abort();
    if (s.outer || s.entity) abort();
    return 0;
  }
  if (!s.outer || !s.entity) abort();
  check_lines(s.entity, s.entity_len, 1);
  check_lines(s.outer, s.outer_len, 0);
  if (s.outer_len && (s.outer_len < 2 || memcmp(s.outer + s.outer_len - 2, "\r\n", 2))) abort();
  /* The entity always starts with its header block: a field, not a blank. */
  if (s.entity_len < 2 || s.entity[0] == '\r' || s.entity[0] == ' ') abort();
  char addr[256];
  mime_from_address(s.outer, s.outer_len, addr, sizeof addr);
  if (strlen(addr) >= sizeof addr) abort();
  mime_split_free(&s);
  return 0;
}
