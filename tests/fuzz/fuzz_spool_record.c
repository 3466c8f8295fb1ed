/*
 * fuzz_spool_record - libFuzzer target for spool_record_parse().
 *
 * The reader must survive any bytes (no crash, no overread, no leak: ASan
 * and LSan run with the fuzzer).  And it must accept only what the writer
 * produces: whatever parses is encoded again and must give back exactly
 * the input bytes, so no two files mean the same envelope and nothing the
 * writer cannot produce is ever delivered.
 *
 * A mutated file almost never carries a correct CRC, which would hide every
 * check after it from the fuzzer.  So each input is parsed twice: as is, and
 * as a copy whose last 13 bytes (where a valid file's end record lies) get
 * the CRC of the bytes before them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "core/spool_record.h"
#include "tests/fuzz/fuzz_image.h"

static void reencode_must_match(const struct spool_envelope *env, const char *data,
                                size_t data_len, const uint8_t *in, size_t len) {
  struct buf head = BUF_INIT, tail = BUF_INIT;
  int rc = spool_record_encode(env, data, data_len, &head, &tail);
  if (rc != 0) abort(); /* parsed, so it must be encodable */
  fuzz_image_must_match(in, len, &head, data, data_len, &tail);
}

static void check_one(const uint8_t *in, size_t len) {
  struct spool_envelope env;
  const char *data = NULL, *why = NULL;
  size_t data_len = 0;
  int rc = spool_record_parse(in, len, &env, &data, &data_len, &why);
  if (rc != 0) {
    /* A failure always explains itself and leaves nothing behind. */
    if (rc != SG_ECORRUPT && rc != SG_ENOMEM) abort();
    if (!why || env.sender || env.rcpts || env.n_rcpts) abort();
    return;
  }
  if (why || !data || data < (const char *)in || data + data_len > (const char *)in + len) abort();
  reencode_must_match(&env, data, data_len, in, len);
  spool_envelope_free(&env);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len) {
  check_one(in, len);
  if (len < 13) return 0;
  /* Exactly len bytes, so ASan catches a read past the end. */
  uint8_t *fixed = malloc(len);
  if (!fixed) return 0;
  memcpy(fixed, in, len);
  uint32_t crc = (uint32_t)crc32_z(0, fixed, len - 13);
  for (int i = 0; i < 4; i++) fixed[len - 8 + i] = (uint8_t)(crc >> (8 * i));
  check_one(fixed, len);
  free(fixed);
  return 0;
}
