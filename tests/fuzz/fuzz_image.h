/*
 * fuzz_image - shared by the fuzz targets of the on-disk formats
 * (fuzz_spool_record, fuzz_quarantine): an input the reader accepted must
 * re-encode to exactly the same bytes (head + data + tail), or the reader
 * and the writer disagree about the format.  Aborts on any difference;
 * frees head and tail.
 */
#ifndef SEALGATE_FUZZ_IMAGE_H
#define SEALGATE_FUZZ_IMAGE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static inline void fuzz_image_must_match(const uint8_t *in, size_t len, struct buf *head, const char *data,
                                         size_t data_len, struct buf *tail) {
  if (head->len + data_len + tail->len != len) abort();
  if (memcmp(in, head->data, head->len) != 0) abort();
  if (data_len && memcmp(in + head->len, data, data_len) != 0) abort();
  if (memcmp(in + head->len + data_len, tail->data, tail->len) != 0) abort();
  buf_free(head);
  buf_free(tail);
}

#endif
