/*
 * buf - a growable byte buffer.
 *
 * A struct buf owns its data; buf_free() releases it and leaves an empty
 * buffer that may be reused.  buf_steal() hands the memory to the caller
 * (who frees it with free()).  Capacity grows geometrically, so appending
 * is amortised O(1).  Buffers are not thread-safe; ownership moves between
 * threads only by handing over the whole struct.
 */
#ifndef SEALGATE_BUF_H
#define SEALGATE_BUF_H

#include <stddef.h>

struct buf {
  char *data; /* may be NULL when cap == 0 */
  size_t len;
  size_t cap;
};

#define BUF_INIT {NULL, 0, 0}

int buf_reserve(struct buf *b, size_t extra);           /* 0 or SG_ENOMEM */
int buf_append(struct buf *b, const void *p, size_t n); /* 0 or SG_ENOMEM */
int buf_appendf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b); /* len = 0, keeps memory */
void buf_free(struct buf *b);
char *buf_steal(struct buf *b, size_t *len_out); /* NUL-terminated copy owner moves */

#endif
