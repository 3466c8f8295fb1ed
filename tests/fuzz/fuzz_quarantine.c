/*
 * fuzz_quarantine - libFuzzer target for quarantine_parse(), the reader of
 * a held message's file (core/quarantine.c).
 *
 * The reader must survive any bytes (no crash, no overread, no leak: ASan
 * and LSan run with the fuzzer), and accept only what the writer produces:
 * whatever parses is encoded again and must give back exactly the input.
 *
 * A mutated file almost never carries correct checksums, which would hide
 * every check behind them.  So each input is also parsed as a copy whose
 * two CRCs are made right: the header's (after the hlen bytes of fields it
 * announces) and the spool record's (in the last 13 bytes, where a valid
 * file's end record lies).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/buf.h"
#include "core/quarantine.h"
#include "tests/fuzz/fuzz_image.h"
#include "core/sgerr.h"

static void reencode_must_match(const struct quarantine_meta *meta, const struct spool_envelope *env,
                                const char *data, size_t data_len, const uint8_t *in, size_t len) {
  struct buf head = BUF_INIT, tail = BUF_INIT;
  if (quarantine_encode(meta, env, data, data_len, &head, &tail) != 0) abort(); /* parsed: encodable */
  fuzz_image_must_match(in, len, &head, data, data_len, &tail);
}

static void check_one(const uint8_t *in, size_t len) {
  struct quarantine_meta meta;
  struct spool_envelope env;
  const char *data = NULL;
  size_t data_len = 0;
  int rc = quarantine_parse(in, len, &meta, &env, &data, &data_len);
  if (rc != 0) {
    /* A failure leaves nothing behind. */
    if (rc != SG_ECORRUPT && rc != SG_ENOMEM) abort();
    if (env.sender || env.rcpts || env.n_rcpts || meta.id[0] || meta.name[0]) abort();
    return;
  }
  if (!data || data < (const char *)in || data + data_len > (const char *)in + len) abort();
  if (!quarantine_id_ok(meta.id) || !quarantine_name_ok(meta.name) || meta.size != data_len) abort();
  reencode_must_match(&meta, &env, data, data_len, in, len);
  spool_envelope_free(&env);
}

static void put_crc(uint8_t *at, uint32_t crc) {
  for (int i = 0; i < 4; i++) at[i] = (uint8_t)(crc >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len) {
  check_one(in, len);
  if (len < 12) return 0;
  size_t hlen = (size_t)in[8] | (size_t)in[9] << 8 | (size_t)in[10] << 16 | (size_t)in[11] << 24;
  size_t head_end = 12 + hlen + 4;
  if (hlen > len || head_end + 13 > len) return 0;
  /* Exactly len bytes, so ASan catches a read past the end. */
  uint8_t *fixed = malloc(len);
  if (!fixed) return 0;
  memcpy(fixed, in, len);
  put_crc(fixed + 12 + hlen, (uint32_t)crc32_z(0, fixed, 12 + hlen));
  put_crc(fixed + len - 8, (uint32_t)crc32_z(0, fixed + head_end, len - 13 - head_end));
  check_one(fixed, len);
  free(fixed);
  return 0;
}
