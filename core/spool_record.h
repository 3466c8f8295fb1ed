/*
 * spool_record - the on-disk format of one queued message.
 *
 * Owns the encoding only (no files, no threads): core/spool.c writes and
 * reads the bytes, tools/spooldump prints them, the fuzz target feeds the
 * reader garbage.  The reader trusts nothing: a file may be torn by a crash,
 * truncated, or damaged; every such file is rejected with SG_ECORRUPT and a
 * reason, never half-parsed into something deliverable.
 *
 * Layout (all integers little-endian):
 *   file   := "SGSPOOL\n" version:u16 reserved:u16 record* end
 *   record := type:u8 length:u32 payload[length]
 *   end    := 'E' 8:u32 crc32:u32 "END\n"
 * Record types in order: 'Q' queue id (1..63 bytes [A-Za-z0-9.-]),
 * 'A' arrival time (u64 ms since epoch), 'S' sender (0..256 bytes, "" for
 * the null path), 'R' recipient (1..256 bytes; one or more records),
 * 'L' listener name, 'N' next hop "host:port", 'F' flags (u32),
 * 'C' client description (0..255 bytes), 'D' message data (the last record
 * before 'E').  The CRC-32 (zlib) covers every byte of the file before the
 * 'E' record.  Nothing may follow the end record.
 * The version is SPOOL_RECORD_VERSION; a reader refuses other versions.
 */
#ifndef SEALGATE_SPOOL_RECORD_H
#define SEALGATE_SPOOL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define SPOOL_RECORD_VERSION 1
#define SPOOL_ID_MAX 64
#define SPOOL_ADDR_MAX 256
#define SPOOL_RCPT_MAX 100000
#define SPOOL_NAME_MAX 255           /* 'L' listener and 'N' next hop: 0..255 bytes */
#define SPOOL_CLIENT_MAX 255         /* 'C' client description: 0..255 bytes */
#define SPOOL_DATA_MAX 0xffffffffu   /* 'D' length is a u32: 4 GiB - 1 */

enum spool_flags {
  SPOOL_F_8BITMIME = 1u << 0, /* received with BODY=8BITMIME */
  SPOOL_F_DSN = 1u << 1,      /* this message is a delivery status notification */
  SPOOL_F_PLAIN = 1u << 2,    /* the copy split off for recipients without encryption keys
                                 (missing_key_action: split): signed at most, never encrypted */
  SPOOL_F_SMIME = 1u << 3,    /* accepted on a listener with a sending profile: never relayed
                                 unprocessed, even if a reload removes the profile */
  SPOOL_F_RELEASED = 1u << 4, /* released from quarantine (core/quarantine.h): processed
                                 again, filters included, but quarantine actions skipped */
};
/* Every flag this version knows; a reader refuses others, so a new flag must
 * be added here (and, if old readers must not see it, bump the version). */
#define SPOOL_F_KNOWN (SPOOL_F_8BITMIME | SPOOL_F_DSN | SPOOL_F_PLAIN | SPOOL_F_SMIME | SPOOL_F_RELEASED)

/* Envelope of a queued message.  Strings are NUL-terminated. */
struct spool_envelope {
  char queue_id[SPOOL_ID_MAX];
  uint64_t arrival_ms;
  char *sender;       /* "" for <> */
  char **rcpts;
  size_t n_rcpts;
  char **orig_rcpts;  /* the recipients before a split or partial delivery; none = rcpts */
  size_t n_orig_rcpts;
  char *listener;
  char *next_hop;
  uint32_t flags;
  char *client;
};

/*
 * Encode everything before the message data (header records and the 'D'
 * record's type and length) into head, and the end record into tail, for a
 * data part of data_len bytes whose bytes are data.  The file is then
 * head + data + tail.  Appends to head/tail.  Returns 0, SG_EINVAL for an
 * envelope that breaks the limits above, or SG_ENOMEM.
 * Also SG_EINVAL for data_len > SPOOL_DATA_MAX or flags outside
 * SPOOL_F_KNOWN.  Strings may not contain NUL; addresses may not contain CR
 * or LF.  NULL listener, next_hop or client are written as "".  On error
 * head and tail are left as they were.
 */
int spool_record_encode(const struct spool_envelope *env, const void *data,
                        size_t data_len, struct buf *head, struct buf *tail);

/*
 * Parse a whole file image.  On success fills *env (allocating its strings:
 * free with spool_envelope_free) and points *data_out into buf at the
 * message data.  On failure returns SG_ECORRUPT (or SG_ENOMEM) with a
 * static reason in *why_out (e.g. "checksum mismatch", "truncated record"),
 * and env holds nothing to free (it is zeroed).  The reader accepts exactly
 * what the encoder can write, so a parsed file re-encodes to the same bytes.
 * data_out, data_len_out and why_out may be NULL.
 */
int spool_record_parse(const void *buf, size_t len, struct spool_envelope *env,
                       const char **data_out, size_t *data_len_out,
                       const char **why_out);

/* Frees the strings and recipient list and zeroes *env; safe on a zeroed
 * envelope and on NULL. */
void spool_envelope_free(struct spool_envelope *env);

/* Deep copy of a recipient list into *dst (n entries).  0 or SG_ENOMEM;
 * on failure *dst holds *n_dst copied strings (free them and *dst). */
int spool_rcpts_copy(char ***dst, size_t *n_dst, char *const *src, size_t n);

/* Deep copy (strings and recipient list). 0 or SG_ENOMEM.
 * dst is overwritten (not freed first); on error it holds nothing to free. */
int spool_envelope_copy(struct spool_envelope *dst, const struct spool_envelope *src);

#endif
