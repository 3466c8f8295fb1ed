/*
 * smtp_parser - the SMTP command grammar (RFC 5321), as pure functions.
 *
 * Owns no state and allocates nothing: every result points into the caller's
 * line or is copied into caller-provided fixed-size fields.  Called by the
 * SMTP server session (core/smtp_session.c) for each command line and by
 * the fuzz target.  Everything it reads is untrusted network input: any
 * byte sequence yields either a parsed command or an error reply, never a
 * crash or an out-of-bounds read.
 *
 * A "line" here is the command without its terminating CRLF (or LF).
 */
#ifndef SEALGATE_SMTP_PARSER_H
#define SEALGATE_SMTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX 512   /* RFC 5321 4.5.3.1.4, including CRLF */
#define SMTP_PATH_MAX 256   /* RFC 5321 4.5.3.1.3, including the brackets */
#define SMTP_DOMAIN_MAX 255

enum smtp_verb {
  SMTP_VERB_UNKNOWN = 0,
  SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_RCPT,
  SMTP_VERB_DATA, SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_QUIT,
  SMTP_VERB_VRFY, SMTP_VERB_EXPN, SMTP_VERB_HELP, SMTP_VERB_STARTTLS,
  SMTP_VERB_BDAT, SMTP_VERB_AUTH,
  SMTP_VERB_HTTP /* "GET ", "POST ", "CONNECT ": a web client, close at once */
};

/* A reply for a rejected command: static strings, e.g. {501, "5.5.4", "..."}. */
struct smtp_error {
  int code;
  const char *enh;
  const char *text;
};

struct smtp_cmd {
  enum smtp_verb verb;
  const char *arg;   /* points into the line after the verb and one space; may be "" */
  size_t arg_len;
};

enum smtp_body { SMTP_BODY_7BIT = 0, SMTP_BODY_8BITMIME };

struct smtp_mail_args {
  char addr[SMTP_PATH_MAX + 1]; /* mailbox without brackets; "" for the null path <> */
  size_t addr_len;
  bool has_size;
  uint64_t size;                /* SIZE= value */
  enum smtp_body body;          /* BODY= value */
};

struct smtp_rcpt_args {
  char addr[SMTP_PATH_MAX + 1]; /* mailbox without brackets; "postmaster" allowed */
  size_t addr_len;
};

/*
 * Split a command line into verb and argument.  Verbs are case-insensitive.
 * Returns 0, or SG_ESYNTAX with *err set (500 5.5.2 for NUL bytes, bare CR
 * or non-ASCII in the line; 500 5.5.1 for an unknown verb — then
 * cmd->verb is SMTP_VERB_UNKNOWN).  Length limits are the caller's job.
 */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd, struct smtp_error *err);

/* "FROM:<a@b> SIZE=123 BODY=8BITMIME" (the argument of MAIL).  A space after
 * the colon is tolerated.  Unknown parameters: 555 5.5.4.  Bad path: 501
 * 5.1.7.  Source routes are accepted and dropped. */
int smtp_parse_mail(const char *arg, size_t len, struct smtp_mail_args *out, struct smtp_error *err);

/* "TO:<a@b>" (the argument of RCPT).  Any parameter: 555 5.5.4.  Bad path or
 * empty path: 501 5.1.3. */
int smtp_parse_rcpt(const char *arg, size_t len, struct smtp_rcpt_args *out, struct smtp_error *err);

/* HELO/EHLO argument: a domain or an address literal; 501 5.5.4 otherwise. */
int smtp_parse_helo(const char *arg, size_t len, struct smtp_error *err);

/* Domain part of a mailbox (after the last '@'), or NULL if none. */
const char *smtp_addr_domain(const char *addr);

/*
 * Details common to the functions above:
 * - err may be NULL; on success it is left untouched.  *cmd and *out are
 *   always initialised, also on failure.
 * - The addresses in *out keep the client's spelling (quotes, case), except
 *   that "<Postmaster>" in any case is stored as "postmaster".
 * - MAIL replies: 501 5.5.4 for the command's own syntax (no "FROM:", no
 *   angle brackets, malformed parameter, duplicate parameter, bad SIZE or
 *   BODY value); 501 5.1.7 for a bad or over-long path; 555 5.5.4 for an
 *   unknown parameter or BODY=BINARYMIME; 552 5.3.4 for a SIZE that does not
 *   fit 64 bits.  RCPT: 501 5.5.4 / 501 5.1.3 / 555 5.5.4 likewise.
 * - smtp_parse_command: a verb is followed by end of line or one SP (a TAB
 *   makes it unknown); for DATA, RSET, QUIT and STARTTLS an argument of
 *   blanks only is tolerated, anything else is 501 5.5.4.  The HTTP check
 *   (case-insensitive) comes before the character check.
 */

#endif
