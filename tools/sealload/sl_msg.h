/*
 * sl_msg - the messages sealload sends: generated text/plain of an exact
 * size, generated MIME (multipart/mixed with a base64 attachment, 8bit
 * UTF-8), or a file sent as it is; each with a fresh Message-ID.
 *
 * A message is built once, before the run, as a template: everything
 * after its first header line, already in wire form (CRLF line ends,
 * dot-stuffed, terminated by ".\r\n").  Each message on the wire is then
 * one Message-ID line (sl_msg_id_line, a few dozen bytes per message)
 * followed by the shared template, so sessions never copy or stuff a body.
 * Message-IDs have a fixed width, which keeps sizes exact.
 *
 * Callers: sealload.c builds the template, sl_client.c writes messages;
 * tests.  The file given with --file is the user's and only normalised
 * (bare LF to CRLF, a final CRLF added, its Message-ID fields removed).
 * Ownership: struct sl_msg owns its buffers (sl_msg_free); it is read-only
 * once built and may be shared by threads.
 */
#ifndef SEALGATE_SL_MSG_H
#define SEALGATE_SL_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum sl_msg_kind {
  SL_MSG_TEXT = 0,  /* text/plain, 7bit */
  SL_MSG_ATTACH,    /* multipart/mixed: a short text part and a base64 attachment */
  SL_MSG_8BIT,      /* text/plain; charset=utf-8, 8bit: sent with BODY=8BITMIME */
  SL_MSG_FILE,      /* the file named in opts.file */
};

struct sl_msg_opts {
  enum sl_msg_kind kind;
  size_t size;        /* generated kinds: the message's size in octets */
  const char *file;   /* SL_MSG_FILE */
  const char *from;   /* From: and To: of generated messages */
  const char *to;
  uint32_t run;       /* tag in every Message-ID (random per run) */
};

/* "Message-ID: <" id ">\r\n", id = "RRRRRRRR.WWW.SSSSSSSSSS@sealload.invalid" */
#define SL_MSG_ID_LEN 40
#define SL_MSG_ID_LINE_LEN (13 + SL_MSG_ID_LEN + 3)
#define SL_MSG_MAX_WORKERS 1000
#define SL_MSG_FILE_MAX ((size_t)1 << 30)

struct sl_msg {
  struct buf tail;   /* wire form after the Message-ID line, ending ".\r\n" */
  size_t size;       /* octets as delivered: unstuffed, Message-ID line included */
  bool body8;        /* 8-bit octets present: MAIL gets BODY=8BITMIME */
  uint32_t run;
};

/* Build the template.  A generated message is exactly o->size octets
 * when o->size is at least its headers' size (else it is just headers
 * and a minimal body).  Errors: SG_EINVAL (bad options), SG_EIO or
 * SG_ETOOBIG (the file), SG_ENOMEM; err says which. */
int sl_msg_build(const struct sl_msg_opts *o, struct sl_msg *out, char *err, size_t errlen);
void sl_msg_free(struct sl_msg *m);

/* Write the Message-ID line of message seq of worker (< SL_MSG_MAX_WORKERS)
 * into line (at least SL_MSG_ID_LINE_LEN + 1 octets); returns
 * SL_MSG_ID_LINE_LEN.  The id proper is at line + 13. */
size_t sl_msg_id_line(const struct sl_msg *m, unsigned worker, uint64_t seq, char *line);

/* Append the whole wire form of one message (ID line + template) to out:
 * what a session sends after DATA.  0 or SG_ENOMEM. */
int sl_msg_render(const struct sl_msg *m, unsigned worker, uint64_t seq, struct buf *out);

#endif
