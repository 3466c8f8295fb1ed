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

#include "core/buf.h"

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

/* Exactly one From: field, naming exactly one mailbox?  A signature can
 * only vouch for a sender readers cannot see two ways. */
bool mime_from_single(const char *outer, size_t outer_len);

/* ---- the incoming side: reading what a sender made, byte for byte ---- */

/* Like mime_split, but the entity's body is kept exactly as received (a
 * signature covers those bytes): only the header fields are sorted into
 * outer and entity (CRLF-terminated), nothing is re-encoded.  The
 * entity's header gets a default Content-Type if it had none. */
int mime_split_raw(const char *msg, size_t len, struct mime_split *out);

/* What an entity's header says about it.  Lower-cased, "" when absent;
 * type defaults to "text/plain"; values too long for a field are cut
 * (boundary: left "" rather than cut). */
struct mime_entity_info {
  size_t body_off;     /* offset of the body in the entity */
  char type[96];       /* "type/subtype" */
  char smime_type[40]; /* smime-type parameter */
  char protocol[96];   /* protocol parameter */
  char name[96];       /* name parameter */
  char boundary[80];   /* boundary parameter, case kept (RFC 2046: at most 70) */
  char cte[32];        /* Content-Transfer-Encoding */
  bool ambiguous;      /* Content-Type or Content-Transfer-Encoding appears twice:
                          readers may take either, so nothing about it can be vouched for */
};
int mime_entity_info(const char *entity, size_t len, struct mime_entity_info *out);

/* The parts of a multipart body: byte ranges (relative to body) of each
 * part's entity, the line end before each delimiter excluded.  SG_EINVAL
 * without a closing delimiter (truncated), SG_ELIMIT beyond max parts. */
struct mime_range {
  size_t off, len;
};
int mime_multipart_parts(const char *body, size_t len, const char *boundary, struct mime_range *parts,
                         size_t max, size_t *n_out);

/* One header field of a message, as byte ranges in it: the name, and the
 * raw value after the ':' up to the end of its last continuation line
 * (folding kept, final line end excluded). */
struct mime_field {
  size_t name_off, name_len, value_off, value_len;
};
/* Index msg's header block: at most max fields into out; returns how
 * many fields the block holds (more than max: the rest were not stored;
 * max 0 just counts).  The block ends at the empty line, or at the first
 * line that is neither a field nor a continuation. */
size_t mime_header_index(const char *msg, size_t len, struct mime_field *out, size_t max);

/* Line ends made CRLF: 1 (out untouched) if they all are already, else 0
 * with the canonical bytes appended to out, or SG_ENOMEM. */
int mime_crlf(const char *p, size_t n, struct buf *out);

/* Base64 (line breaks and whitespace allowed) appended to out as bytes;
 * SG_EINVAL for anything else. */
int mime_base64_decode(const char *p, size_t n, struct buf *out);

#endif
