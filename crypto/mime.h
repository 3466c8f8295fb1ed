/*
 * mime - what S/MIME needs of a message before it is signed or encrypted:
 * the split between the RFC 5322 header (From, To, Subject, Date,
 * Message-ID, Received, ... which stay outside) and the MIME entity
 * (Content-* header fields and the body, which get signed or encrypted),
 * in canonical form: CRLF line ends, 7-bit safe, no line over 998 octets.
 *
 * Fast path: a message whose entity is already 7-bit with short lines is
 * only split and its line ends normalised; no MIME parsing happens.
 * Otherwise GMime 3 parses the entity and re-encodes every leaf part that
 * needs it (quoted-printable for text, base64 for the rest), so the
 * signature survives 7-bit transport (RFC 8551 3.1.2).
 *
 * Callers: crypto/outgoing.c on crypto worker threads (thread-safe: no
 * global state besides GMime's one-time init, done by mime_init()).
 * Untrusted input: the whole message (from any SMTP client).  Never
 * crashes on garbage: an unparsable header block is treated as a body
 * with default content type.  Bounded: at most MIME_MAX_DEPTH nesting and
 * MIME_MAX_PARTS parts, else SG_ELIMIT.
 *
 * Ownership: struct mime_split holds two malloc'd buffers owned by it
 * (mime_split_free).  Returns 0 or a negative enum sgerr.
 */
#ifndef SEALGATE_MIME_H
#define SEALGATE_MIME_H

#include <stdbool.h>
#include <stddef.h>

#define MIME_MAX_DEPTH 32
#define MIME_MAX_PARTS 1000

struct mime_split {
  /* The RFC 5322 header fields that stay outside, CRLF-terminated each
   * (folded fields kept folded), in their original order, without
   * MIME-Version and Content-* fields. */
  char *outer;
  size_t outer_len;
  /* The MIME entity: its Content-* header fields (a Content-Type is
   * always present: "text/plain; charset=us-ascii" when the message had
   * none), an empty line, and the body.  CRLF line ends, 7-bit, lines at
   * most 998 octets. */
  char *entity;
  size_t entity_len;
  bool reencoded; /* true if any part had to be re-encoded */
};

/* One-time process init (GMime).  Thread-safe, idempotent. */
void mime_init(void);

/* Split and canonicalise msg (len bytes, as received: CRLF or LF line
 * ends).  *out is filled; free with mime_split_free. */
int mime_split(const char *msg, size_t len, struct mime_split *out);
void mime_split_free(struct mime_split *s);

/* The addr-spec of the first address in the message's From: field
 * (lower-cased domain), for logs and policy; "" if none.  Writes at most
 * cap bytes. */
void mime_from_address(const char *outer, size_t outer_len, char *buf, size_t cap);

#endif
