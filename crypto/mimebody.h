/*
 * mimebody - the decoded view of a message that content and message
 * filters look at (issue #6): the text of its text parts, the file names
 * of its attachments, and RFC 2047 decoding of header values.  Built on
 * GMime 3 (MIME parsing, quoted-printable and base64 decoding, charset
 * conversion with iconv, RFC 2231 parameters), not on hand-written
 * decoders.
 *
 * Owns one struct mimebody per message evaluation: the parsed message and
 * the decoded, case-folded text, made lazily on the first question that
 * needs them, so a message that no body condition looks at is never
 * parsed.  Callers: policy evaluation (core/policy.c) on crypto worker
 * threads, tests, the bench.  One struct is used by one thread at a time;
 * different structs may be used on different threads at once
 * (mimebody_global_init must have run once before, from any thread: call
 * it at startup, before the workers, because crypto/mime.c's mime_init()
 * also runs g_mime_init(), whose first call must not race with another).
 *
 * Trust: the message is hostile.  Parsing is bounded (MIMEBODY_MAX_DEPTH
 * levels, MIMEBODY_MAX_PARTS parts: the rest is not looked at), the text
 * kept is bounded by MIMEBODY_MAX_TEXT bytes (beyond it a search does not
 * see the text), invalid charsets or bytes are replaced, never fatal.
 * Parts that are not text (images, application/pkcs7-mime, ...) are not
 * searched; a message/rfc822 part is looked into like the message.
 * Encrypted S/MIME content is opaque here: incoming processing decrypted
 * it before, or it stays unreadable.
 */
#ifndef SEALGATE_MIMEBODY_H
#define SEALGATE_MIMEBODY_H

#include <stdbool.h>
#include <stddef.h>

#define MIMEBODY_MAX_DEPTH 32
#define MIMEBODY_MAX_PARTS 1000
#define MIMEBODY_MAX_TEXT (64u * 1024 * 1024)

struct mimebody;

/* g_mime_init, once per process (pthread_once); 0 or SG_ENOMEM.
 * mimebody_new calls it too, so a forgotten call costs only the race
 * described above. */
int mimebody_global_init(void);

/* A view of the message data (header and body, CRLF or LF line ends).
 * data must stay valid and unchanged until mimebody_free; nothing is
 * parsed yet.  *out is the caller's (mimebody_free).  0 or SG_ENOMEM. */
int mimebody_new(const char *data, size_t len, struct mimebody **out);
void mimebody_free(struct mimebody *b); /* NULL is fine */

/* Does the decoded text of the text parts (text/plain, text/html, ...;
 * the body of a single-part text message too; an attachment of type
 * text is a text part as well) contain needle?  Both are compared case-insensitively
 * (Unicode full case folding, UTF-8).  Text is transfer-decoded and
 * converted from its declared charset; text that is then not UTF-8 is
 * read as windows-1252.  Header fields, the preamble and non-text parts
 * are not searched.  The folded text is made on the first call and kept.
 * needle is UTF-8 as written in the filter; an empty needle is contained
 * in every message.  False if the message cannot be parsed or memory runs
 * out. */
bool mimebody_contains(struct mimebody *b, const char *needle);

/* The file name of the index-th attachment (Content-Disposition filename=
 * or Content-Type name=, RFC 2231 and RFC 2047 decoded, UTF-8), in MIME
 * order, counting only parts that carry a name; NULL after the last.  The
 * string belongs to b. */
const char *mimebody_attachment(struct mimebody *b, size_t index);

/* Did a limit (MIMEBODY_MAX_DEPTH, _PARTS, _TEXT) leave part of the
 * message unread in the questions asked so far?  Then a "not found" means
 * little: a crafted message can hide text or names behind the limits, and
 * policies fail closed (core/policy.c). */
bool mimebody_incomplete(const struct mimebody *b);

/* RFC 2047 decode and unfold one header value (raw bytes as they stand
 * after "Name:"), to UTF-8.  Returns a malloc'd string (the caller's) or
 * NULL when out of memory.  Leading whitespace and a final line end are
 * dropped.  A value with no encoded-word and valid UTF-8 comes back
 * unfolded, otherwise unchanged; other 8-bit bytes are read with GMime's
 * fallback charsets.  The result is always valid UTF-8. */
char *mimebody_header_decode(const char *raw, size_t len);

#endif
