/*
 * mime - split a message into its RFC 5322 header and its MIME entity, and
 * put the entity in the canonical form S/MIME signs (RFC 8551 3.1): CRLF
 * line ends, 7-bit, no line over 998 octets.  See mime.h for the API.
 *
 * Owns: the header/body split rules, the fast path (one pass, no parser)
 * and the re-encoding path (GMime 3).  Trusts nothing in the message: it
 * comes from any SMTP client.  Trusts GMime to parse without crashing, but
 * not to produce canonical output: every GMime result is checked again
 * before it is returned, and refused (SG_EINVAL) if it breaks the rules,
 * since a non-canonical entity would give a signature that fails later.
 *
 * Rules that the RFCs leave open, decided here:
 *  - A line ends at CRLF, at a lone LF and at a lone CR; each becomes CRLF.
 *  - The header block ends at the first empty line.  It also ends before
 *    the first line that is neither a "Name: value" field nor a
 *    continuation of one (RFC 5322 allows nothing else there): that line
 *    and all after it are the body.  So a message whose first line is not
 *    a field has no header at all, and one without an empty line is all
 *    header if every line is a field.
 *  - MIME-Version is dropped from both halves (the S/MIME composer adds
 *    its own); Content-* fields go to the entity; all others stay outside.
 *  - No Content-Type: "text/plain; charset=us-ascii" (RFC 2045 default).
 *    If the body is not 7-bit, the message is non-conforming and we guess:
 *    "text/plain; charset=utf-8" when it is valid UTF-8, else
 *    "application/octet-stream".
 *  - Re-encoding: a text leaf becomes quoted-printable, unless it holds
 *    NUL bytes or at least 17 % 8-bit bytes (GMime's own threshold), where
 *    base64 is smaller; other leaves become base64.  Text is put in CRLF
 *    form before it is encoded (RFC 8551 3.1.1); other content is encoded
 *    byte for byte.  Header values with raw 8-bit bytes are re-encoded by
 *    GMime (RFC 2047 words, RFC 2231 parameters).  Leaves already in
 *    base64 or quoted-printable are kept unless their encoded form itself
 *    breaks the rules.
 */
#include "crypto/mime.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>
#include <openssl/evp.h>

#include "core/buf.h"
#include "core/sgerr.h"

#define MIME_MAX_LINE 998

static pthread_once_t mime_once = PTHREAD_ONCE_INIT;

static void mime_init_once(void) { g_mime_init(); }

void mime_init(void) { pthread_once(&mime_once, mime_init_once); }

/* ------------------------------------------------------------------------ */
/* Lines and byte statistics                                                 */

/* Length of the line at p (at most n bytes), without its line end.
 * *eol_out: 2 for CRLF, 1 for a lone LF or a lone CR, 0 at end of input. */
static size_t line_next(const char *p, size_t n, size_t *eol_out) {
  /* Two vectorised scans instead of a byte loop: this runs over every
   * header line of every message policies look at. */
  const char *lf = memchr(p, '\n', n);
  size_t i = lf ? (size_t)(lf - p) : n;
  const char *cr = memchr(p, '\r', i);
  if (cr) i = (size_t)(cr - p);
  if (i == n) *eol_out = 0;
  else if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') *eol_out = 2;
  else *eol_out = 1;
  return i;
}

/* What one pass over some bytes learned; enough to decide whether they are
 * canonical and whether the MIME limits could possibly be exceeded. */
struct scan {
  size_t total;      /* octets, line ends excluded */
  size_t high;       /* octets >= 0x80 */
  size_t nul;        /* NUL octets */
  size_t maxline;    /* longest line, line end excluded */
  size_t odd_eols;   /* line ends other than CRLF */
  size_t lone_crs;   /* of which lone CRs */
  size_t dashes;     /* lines starting with "--" (boundary candidates) */
  size_t containers; /* "multipart" or "message" anywhere, any case */
  bool cte_8bit;     /* a Content-Transfer-Encoding line says 8bit/binary */
};

static bool has_prefix_ci(const char *p, size_t n, const char *prefix) {
  size_t k = strlen(prefix);
  return n >= k && strncasecmp(p, prefix, k) == 0;
}

/* A token test, not a parse: these lines can only make the fast path give
 * way to the exact (GMime) path, never make a wrong result. */
static bool line_is_8bit_cte(const char *p, size_t n) {
  static const char name[] = "content-transfer-encoding:";
  if (!has_prefix_ci(p, n, name)) return false;
  size_t i = sizeof name - 1;
  while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
  return has_prefix_ci(p + i, n - i, "8bit") || has_prefix_ci(p + i, n - i, "binary");
}

static void scan_line(struct scan *st, const char *p, size_t n, size_t eol) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c >= 0x80) st->high++;
    else if (c == 0) st->nul++;
    else if ((c | 0x20) == 'm' && (has_prefix_ci(p + i, n - i, "multipart") ||
                                   has_prefix_ci(p + i, n - i, "message")))
      st->containers++;
  }
  st->total += n;
  if (n > st->maxline) st->maxline = n;
  if (eol == 1) { /* p[n] is the line end itself */
    st->odd_eols++;
    if (p[n] == '\r') st->lone_crs++;
  }
  if (n >= 2 && p[0] == '-' && p[1] == '-') st->dashes++;
  if (n && (p[0] | 0x20) == 'c' && line_is_8bit_cte(p, n)) st->cte_8bit = true;
}

/* Scans n bytes as they are, without changing line ends. */
static void scan_bytes(struct scan *st, const char *p, size_t n) {
  while (n) {
    size_t eol, k = line_next(p, n, &eol);
    scan_line(st, p, k, eol);
    p += k + eol;
    n -= k + eol;
  }
}

/* Appends n bytes with every line end made CRLF, scanning them on the way
 * (st may be NULL).  The one pass of the fast path. */
static int canon_append(struct buf *b, const char *p, size_t n, struct scan *st) {
  int rc = buf_reserve(b, n + n / 8);
  while (rc == 0 && n) {
    size_t eol, k = line_next(p, n, &eol);
    if (st) scan_line(st, p, k, eol);
    rc = buf_append(b, p, k);
    if (rc == 0 && eol) rc = buf_append(b, "\r\n", 2);
    p += k + eol;
    n -= k + eol;
  }
  return rc;
}

static bool scan_is_canonical(const struct scan *st) {
  return st->high == 0 && st->nul == 0 && st->maxline <= MIME_MAX_LINE && st->odd_eols == 0;
}

/* The fast path may skip the parser only if no message these bytes could
 * be parsed into can exceed the limits.  A part other than the root starts
 * after a "--" line or is the body of a message part; a container needs a
 * "multipart" or "message" token (a multipart/digest child is a message
 * part without one, hence the factors of two). */
static bool scan_within_limits(const struct scan *st) {
  return 1 + 2 * st->containers <= MIME_MAX_DEPTH &&
         1 + 2 * st->dashes + st->containers <= MIME_MAX_PARTS;
}

/* ------------------------------------------------------------------------ */
/* Header block                                                             */

/* "Name:" (RFC 5322 ftext, then optional WSP from the obsolete syntax). */
static bool line_is_field(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && p[i] > ' ' && p[i] < 0x7f && p[i] != ':') i++;
  if (i == 0) return false;
  while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
  return i < n && p[i] == ':';
}

static bool field_is(const char *p, size_t n, const char *name) {
  if (!has_prefix_ci(p, n, name)) return false;
  size_t i = strlen(name);
  while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
  return i < n && p[i] == ':';
}

/* How many fields called name the header block p[0..n) holds. */
static size_t field_count(const char *p, size_t n, const char *name) {
  size_t count = 0;
  while (n) {
    size_t eol, k = line_next(p, n, &eol);
    if (k == 0) break;
    if (p[0] != ' ' && p[0] != '\t' && field_is(p, k, name)) count++;
    p += k + eol;
    n -= k + eol;
  }
  return count;
}

size_t mime_header_index(const char *msg, size_t len, struct mime_field *out, size_t max) {
  size_t n = 0, off = 0;
  while (off < len) {
    const char *p = msg + off;
    size_t eol, k = line_next(p, len - off, &eol);
    bool cont = k && (p[0] == ' ' || p[0] == '\t');
    if (k == 0 || (!cont && !line_is_field(p, k))) break;
    if (cont && n > 0 && n <= max) {
      out[n - 1].value_len = off + k - out[n - 1].value_off;
    } else if (!cont) {
      if (n < max) {
        size_t colon = (size_t)((const char *)memchr(p, ':', k) - p), name = 0;
        while (name < colon && p[name] != ' ' && p[name] != '\t') name++;
        out[n] = (struct mime_field){off, name, off + colon + 1, k - colon - 1};
      }
      n++;
    }
    off += k + eol;
  }
  return n;
}

struct header_split {
  struct buf outer;   /* CRLF-terminated fields that stay outside */
  struct buf ehdr;    /* the entity's Content-* fields, CRLF-terminated */
  bool has_type;      /* ehdr holds a Content-Type */
  size_t body_off;    /* where the body starts in the message */
};

/* Walks the header block (see the rules at the top) and sorts each field,
 * continuation lines included, into outer or ehdr. */
static int header_split(const char *msg, size_t len, struct header_split *hs,
                        struct scan *st) {
  struct buf *dest = NULL;
  bool in_field = false;
  size_t i = 0;
  int rc = 0;
  while (rc == 0 && i < len) {
    size_t eol, n = line_next(msg + i, len - i, &eol);
    const char *line = msg + i;
    if (n == 0) { /* the empty line ending the header */
      i += eol;
      break;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      if (!in_field) break;
    } else if (line_is_field(line, n)) {
      in_field = true;
      if (field_is(line, n, "mime-version")) dest = NULL;
      else if (has_prefix_ci(line, n, "content-")) dest = &hs->ehdr;
      else dest = &hs->outer;
      if (field_is(line, n, "content-type")) hs->has_type = true;
    } else {
      break; /* not a field: the body starts here */
    }
    if (dest) {
      rc = canon_append(dest, line, n, dest == &hs->ehdr ? st : NULL);
      if (rc == 0) rc = buf_append(dest, "\r\n", 2);
    }
    i += n + eol;
  }
  hs->body_off = i;
  return rc;
}

/* RFC 2045 default, or our guess for a non-conforming 8-bit body. */
static const char *default_type(const char *body, size_t n) {
  struct scan st = {0};
  scan_bytes(&st, body, n);
  if (st.high == 0 && st.nul == 0) return "text/plain; charset=us-ascii";
  if (g_utf8_validate_len(body, n, NULL)) return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

/* ------------------------------------------------------------------------ */
/* Re-encoding with GMime                                                   */

struct walk {
  int parts;
  bool changed;
};

/* Bytes of a stream, or of a data wrapper's decoded content. */
static GByteArray *stream_bytes(GMimeStream *s) {
  GByteArray *ba = g_byte_array_new();
  GMimeStream *mem = g_mime_stream_mem_new_with_byte_array(ba);
  g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(mem), FALSE);
  g_mime_stream_reset(s);
  g_mime_stream_write_to_stream(s, mem);
  g_mime_stream_reset(s);
  g_object_unref(mem);
  return ba;
}

static GByteArray *decoded_bytes(GMimeDataWrapper *w) {
  GByteArray *ba = g_byte_array_new();
  GMimeStream *mem = g_mime_stream_mem_new_with_byte_array(ba);
  g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(mem), FALSE);
  g_mime_data_wrapper_write_to_stream(w, mem);
  g_object_unref(mem);
  return ba;
}

/* GMime 3.2 splits a long or 8-bit parameter *name* into RFC 2231
 * continuations without end (found by fuzz_mime: gigabytes for one short
 * header).  So a Content-Type or Content-Disposition is handed back to
 * GMime for encoding only if its parameter names are short ASCII tokens. */
#define MIME_MAX_PARAM_NAME 64

static bool params_encodable(GMimeParamList *pl) {
  int n = pl ? g_mime_param_list_length(pl) : 0;
  for (int i = 0; i < n; i++) {
    const char *name = g_mime_param_get_name(g_mime_param_list_get_parameter_at(pl, i));
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > MIME_MAX_PARAM_NAME) return false;
    for (size_t k = 0; k < len; k++)
      if ((unsigned char)name[k] <= ' ' || (unsigned char)name[k] >= 0x7f) return false;
  }
  return true;
}

static bool header_encodable(const char *name, const char *value) {
  bool ok = true;
  if (g_ascii_strcasecmp(name, "Content-Type") == 0) {
    GMimeContentType *ct = g_mime_content_type_parse(NULL, value);
    ok = ct && params_encodable(g_mime_content_type_get_parameters(ct));
    if (ct) g_object_unref(ct);
  } else if (g_ascii_strcasecmp(name, "Content-Disposition") == 0) {
    GMimeContentDisposition *cd = g_mime_content_disposition_parse(NULL, value);
    ok = cd && params_encodable(g_mime_content_disposition_get_parameters(cd));
    if (cd) g_object_unref(cd);
  }
  return ok;
}

/* Raw 8-bit header values would break 7-bit output; GMime re-encodes a
 * value it is given decoded (RFC 2047 words, RFC 2231 parameters). */
static int walk_headers(GMimeObject *o, struct walk *w) {
  GMimeHeaderList *hl = g_mime_object_get_header_list(o);
  int n = g_mime_header_list_get_count(hl);
  for (int i = 0; i < n; i++) {
    GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
    const char *raw = g_mime_header_get_raw_value(h);
    struct scan st = {0};
    if (raw) scan_bytes(&st, raw, strlen(raw));
    if (st.high == 0) continue;
    const char *name = g_mime_header_get_name(h);
    char *value = g_strdup(g_mime_header_get_value(h));
    if (!value || !name || !header_encodable(name, value)) {
      g_free(value);
      return SG_EINVAL;
    }
    g_mime_header_set_value(h, NULL, value, "utf-8");
    g_free(value);
    w->changed = true;
  }
  return 0;
}

/* A multipart or message/rfc822 may only be 7bit, 8bit or binary (RFC 2045
 * 6.4); once its leaves are 7-bit, so is it. */
static void walk_container_cte(GMimeObject *o, struct walk *w) {
  const char *cte = g_mime_object_get_header(o, "Content-Transfer-Encoding");
  if (!cte) return;
  while (*cte == ' ' || *cte == '\t') cte++;
  if (strncasecmp(cte, "8bit", 4) && strncasecmp(cte, "binary", 6)) return;
  g_mime_object_set_header(o, "Content-Transfer-Encoding", "7bit", NULL);
  w->changed = true;
}

/* Replaces a leaf's content with data (decoded), to be written in enc. */
static void leaf_set_content(GMimePart *part, GByteArray *data, bool text,
                             GMimeContentEncoding enc) {
  struct buf canon = BUF_INIT;
  const char *p = (const char *)data->data;
  size_t n = data->len;
  if (text && canon_append(&canon, p, n, NULL) == 0) {
    p = canon.data;
    n = canon.len;
  }
  GMimeStream *s = g_mime_stream_mem_new_with_buffer(p ? p : "", n);
  GMimeDataWrapper *dw = g_mime_data_wrapper_new_with_stream(s, GMIME_CONTENT_ENCODING_DEFAULT);
  g_mime_part_set_content(part, dw);
  g_mime_part_set_content_encoding(part, enc);
  g_object_unref(dw);
  g_object_unref(s);
  buf_free(&canon);
}

/* Leaves whose encoded form is already canonical keep their bytes (only a
 * false 8bit/binary label is corrected); the others are re-encoded. */
static void walk_leaf(GMimePart *part, struct walk *w) {
  GMimeDataWrapper *dw = g_mime_part_get_content(part);
  GMimeContentEncoding enc = g_mime_part_get_content_encoding(part);
  bool labelled_8bit = enc == GMIME_CONTENT_ENCODING_8BIT || enc == GMIME_CONTENT_ENCODING_BINARY;
  GMimeStream *stream = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
  if (!stream) return; /* no content: nothing to write */
  GByteArray *raw = stream_bytes(stream);
  struct scan st = {0};
  scan_bytes(&st, (const char *)raw->data, raw->len);
  g_byte_array_free(raw, TRUE);
  /* Lone LFs are fine here: the DOS newline filter turns them into CRLF. */
  if (st.high == 0 && st.nul == 0 && st.maxline <= MIME_MAX_LINE && st.lone_crs == 0) {
    if (labelled_8bit) {
      g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_7BIT);
      w->changed = true;
    }
    return;
  }
  GByteArray *data = decoded_bytes(dw);
  memset(&st, 0, sizeof st);
  scan_bytes(&st, (const char *)data->data, data->len);
  GMimeContentType *ct = g_mime_object_get_content_type(GMIME_OBJECT(part));
  bool text = ct && g_mime_content_type_is_type(ct, "text", "*");
  bool qp = text && st.nul == 0 && (double)st.high < 0.17 * (double)(st.total ? st.total : 1);
  leaf_set_content(part, data, text,
                   qp ? GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE : GMIME_CONTENT_ENCODING_BASE64);
  g_byte_array_free(data, TRUE);
  w->changed = true;
}

/* Depth counts the root as 1; every object GMime built counts as a part,
 * a message part's embedded message body included. */
static int walk_object(GMimeObject *o, int depth, struct walk *w) {
  if (++w->parts > MIME_MAX_PARTS || depth > MIME_MAX_DEPTH) return SG_ELIMIT;
  int rc = walk_headers(o, w);
  if (rc) return rc;
  /* XXX a multipart/signed whose parts need re-encoding loses its inner
   * signature; such a part was never valid for 7-bit transport anyway. */
  if (GMIME_IS_MULTIPART(o)) {
    GMimeMultipart *mp = GMIME_MULTIPART(o);
    walk_container_cte(o, w);
    int n = g_mime_multipart_get_count(mp);
    for (int i = 0; i < n && rc == 0; i++)
      rc = walk_object(g_mime_multipart_get_part(mp, i), depth + 1, w);
  } else if (GMIME_IS_MESSAGE_PART(o)) {
    GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
    walk_container_cte(o, w);
    if (m) rc = walk_headers(GMIME_OBJECT(m), w);
    GMimeObject *body = m ? g_mime_message_get_mime_part(m) : NULL;
    if (rc == 0 && body) rc = walk_object(body, depth + 1, w);
  } else if (GMIME_IS_PART(o)) {
    walk_leaf(GMIME_PART(o), w);
  }
  return rc;
}

static int gmime_write(GMimeObject *o, struct buf *out) {
  GByteArray *ba = g_byte_array_new();
  GMimeStream *mem = g_mime_stream_mem_new_with_byte_array(ba);
  g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(mem), FALSE);
  GMimeFormatOptions *fo = g_mime_format_options_new();
  g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
  ssize_t w = g_mime_object_write_to_stream(o, fo, mem);
  g_mime_format_options_free(fo);
  g_object_unref(mem);
  int rc = w < 0 ? SG_EINVAL : buf_append(out, ba->data, ba->len);
  g_byte_array_free(ba, TRUE);
  return rc;
}

/* Parses the entity, re-encodes what needs it, writes it back and checks
 * the result.  *changed_out: whether GMime changed anything at all. */
static int gmime_reencode(const char *entity, size_t len, struct buf *out, bool *changed_out) {
  GMimeStream *s = g_mime_stream_mem_new_with_buffer(entity, len);
  GMimeParser *parser = g_mime_parser_new_with_stream(s);
  GMimeObject *o = g_mime_parser_construct_part(parser, NULL);
  struct walk w = {0, false};
  int rc = o ? walk_object(o, 1, &w) : SG_EINVAL;
  if (rc == 0 && w.changed) rc = gmime_write(o, out);
  if (o) g_object_unref(o);
  g_object_unref(parser);
  g_object_unref(s);
  *changed_out = w.changed;
  if (rc || !w.changed) return rc;
  /* GMime drops the line end after a multipart's epilogue. */
  bool in_eol = len && (entity[len - 1] == '\n' || entity[len - 1] == '\r');
  bool out_eol = out->len >= 2 && memcmp(out->data + out->len - 2, "\r\n", 2) == 0;
  if (in_eol && !out_eol && (rc = buf_append(out, "\r\n", 2))) return rc;
  struct scan st = {0};
  scan_bytes(&st, out->data, out->len);
  return scan_is_canonical(&st) ? 0 : SG_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* mime_split                                                               */

/* Entity headers (with a default Content-Type if there was none) and an
 * empty line; the body follows. */
static int entity_head(struct buf *e, const struct header_split *hs, const char *body,
                       size_t body_len, struct scan *st) {
  int rc = buf_append(e, hs->ehdr.data, hs->ehdr.len);
  if (rc == 0 && !hs->has_type) {
    rc = buf_appendf(e, "Content-Type: %s\r\n", default_type(body, body_len));
    if (st) scan_bytes(st, e->data + hs->ehdr.len, e->len - hs->ehdr.len);
  }
  if (rc == 0) rc = buf_append(e, "\r\n", 2);
  return rc;
}

/* The slow path: the raw body (binary parts must keep their bytes), so
 * the canonical one just built is replaced. */
static int split_slow(const struct header_split *hs, const char *body, size_t body_len,
                      struct buf *canon, bool *reencoded_out) {
  struct buf raw = BUF_INIT, out = BUF_INIT;
  bool changed = false;
  int rc = entity_head(&raw, hs, body, body_len, NULL);
  if (rc == 0) rc = buf_append(&raw, body, body_len);
  if (rc == 0) rc = gmime_reencode(raw.data, raw.len, &out, &changed);
  if (rc == 0 && !changed) {
    /* Only the limits had to be checked: keep the canonical bytes, unless
     * they needed changes GMime did not make. */
    struct scan st = {0};
    scan_bytes(&st, canon->data, canon->len);
    if (!scan_is_canonical(&st)) rc = SG_EINVAL;
  } else if (rc == 0) {
    buf_free(canon);
    *canon = out;
    out = (struct buf)BUF_INIT;
  }
  *reencoded_out = changed;
  buf_free(&raw);
  buf_free(&out);
  return rc;
}

/* The end of both splits: on success out takes the outer fields and the
 * entity; the working buffers are freed either way. */
static int split_finish(int rc, struct header_split *hs, struct buf *entity, struct mime_split *out) {
  if (rc == 0) out->outer = buf_steal(&hs->outer, &out->outer_len);
  if (rc == 0 && out->outer) out->entity = buf_steal(entity, &out->entity_len);
  if (rc == 0 && !out->entity) rc = SG_ENOMEM;
  buf_free(&hs->outer);
  buf_free(&hs->ehdr);
  buf_free(entity);
  if (rc) mime_split_free(out);
  return rc;
}

int mime_split(const char *msg, size_t len, struct mime_split *out) {
  memset(out, 0, sizeof *out);
  if (!msg && len) return SG_EINVAL;
  if (!msg) msg = "";
  mime_init();
  struct header_split hs = {BUF_INIT, BUF_INIT, false, 0};
  struct buf entity = BUF_INIT;
  struct scan st = {0};
  int rc = header_split(msg, len, &hs, &st);
  const char *body = msg + hs.body_off;
  size_t body_len = len - hs.body_off;
  if (rc == 0) rc = entity_head(&entity, &hs, body, body_len, &st);
  if (rc == 0) rc = canon_append(&entity, body, body_len, &st);
  bool fast = rc == 0 && st.high == 0 && st.nul == 0 && st.maxline <= MIME_MAX_LINE &&
              !st.cte_8bit && scan_within_limits(&st);
  if (rc == 0 && !fast) rc = split_slow(&hs, body, body_len, &entity, &out->reencoded);
  return split_finish(rc, &hs, &entity, out);
}

void mime_split_free(struct mime_split *s) {
  if (!s) return;
  free(s->outer);
  free(s->entity);
  memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------ */
/* mime_from_address                                                        */


/* The unfolded value of the first field called name in the header block
 * p[0..n) (which ends at the empty line or at n), or NULL. */
static char *field_value(const char *p, size_t n, const char *name) {
  struct buf v = BUF_INIT;
  bool in = false;
  while (n) {
    size_t eol, k = line_next(p, n, &eol);
    if (k == 0) break; /* the empty line: end of the header */
    bool cont = p[0] == ' ' || p[0] == '\t';
    size_t skip = 0;
    if (in && !cont) break;
    if (!in && !cont && field_is(p, k, name)) {
      in = true;
      skip = (size_t)((const char *)memchr(p, ':', k) - p) + 1;
    }
    if (in && buf_append(&v, p + skip, k - skip)) break;
    p += k + eol;
    n -= k + eol;
  }
  return in ? buf_steal(&v, NULL) : NULL;
}

/* The first mailbox of a list, looking inside groups. */
static const char *first_addr(InternetAddressList *list) {
  int n = list ? internet_address_list_length(list) : 0;
  for (int i = 0; i < n; i++) {
    InternetAddress *a = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_MAILBOX(a))
      return internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
    const char *in = first_addr(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a)));
    if (in) return in;
  }
  return NULL;
}

/* Mailboxes in a list, groups' members included. */
static int count_addrs(InternetAddressList *list) {
  int n = list ? internet_address_list_length(list) : 0, total = 0;
  for (int i = 0; i < n; i++) {
    InternetAddress *a = internet_address_list_get_address(list, i);
    total += INTERNET_ADDRESS_IS_MAILBOX(a) ? 1 : count_addrs(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a)));
  }
  return total;
}

bool mime_from_single(const char *outer, size_t outer_len) {
  if (!outer || field_count(outer, outer_len, "from") != 1) return false;
  mime_init();
  char *value = field_value(outer, outer_len, "from");
  InternetAddressList *list = value ? internet_address_list_parse(NULL, value) : NULL;
  bool one = count_addrs(list) == 1;
  if (list) g_object_unref(list);
  free(value);
  return one;
}

void mime_from_address(const char *outer, size_t outer_len, char *buf, size_t cap) {
  if (!buf || cap == 0) return;
  buf[0] = '\0';
  if (!outer) return;
  mime_init();
  char *value = field_value(outer, outer_len, "from");
  if (!value) return;
  InternetAddressList *list = internet_address_list_parse(NULL, value);
  const char *addr = first_addr(list);
  size_t n = addr ? strlen(addr) : 0;
  /* A cut address would name another mailbox: all or nothing. */
  if (n && n < cap) {
    memcpy(buf, addr, n + 1);
    char *at = strrchr(buf, '@');
    for (char *c = at; c && *c; c++)
      if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  }
  if (list) g_object_unref(list);
  free(value);
}

/* ------------------------------------------------------------------------ */
/* Reading what a sender made (incoming S/MIME)                             */

int mime_split_raw(const char *msg, size_t len, struct mime_split *out) {
  memset(out, 0, sizeof *out);
  if (!msg && len) return SG_EINVAL;
  if (!msg) msg = "";
  struct header_split hs = {BUF_INIT, BUF_INIT, false, 0};
  struct buf entity = BUF_INIT;
  int rc = header_split(msg, len, &hs, NULL);
  const char *body = msg + hs.body_off;
  size_t body_len = len - hs.body_off;
  if (rc == 0) rc = entity_head(&entity, &hs, body, body_len, NULL);
  if (rc == 0) rc = buf_append(&entity, body, body_len);
  return split_finish(rc, &hs, &entity, out);
}


static void lower_copy(char *dst, size_t cap, const char *s) {
  size_t i = 0;
  for (; s && s[i] && i + 1 < cap; i++) dst[i] = (char)tolower((unsigned char)s[i]);
  dst[i] = '\0';
}

/* Where the body starts: after the empty line, or at the first line that
 * is neither a field nor a continuation (as header_split decides). */
static size_t body_offset(const char *p, size_t n) {
  size_t i = 0;
  bool in_field = false;
  while (i < n) {
    size_t eol, k = line_next(p + i, n - i, &eol);
    if (k == 0) return i + eol;
    if (p[i] == ' ' || p[i] == '\t') {
      if (!in_field) break;
    } else if (line_is_field(p + i, k)) {
      in_field = true;
    } else {
      break;
    }
    i += k + eol;
  }
  return i;
}

int mime_entity_info(const char *entity, size_t len, struct mime_entity_info *out) {
  memset(out, 0, sizeof *out);
  mime_init();
  out->body_off = body_offset(entity, len);
  snprintf(out->type, sizeof out->type, "text/plain");
  char *ct = field_value(entity, out->body_off, "content-type");
  char *cte = field_value(entity, out->body_off, "content-transfer-encoding");
  out->ambiguous = field_count(entity, out->body_off, "content-type") > 1 ||
                   field_count(entity, out->body_off, "content-transfer-encoding") > 1;
  if (cte) lower_copy(out->cte, sizeof out->cte, g_strstrip(cte));
  GMimeContentType *t = ct ? g_mime_content_type_parse(NULL, ct) : NULL;
  if (t && g_mime_content_type_get_media_type(t) && g_mime_content_type_get_media_subtype(t)) {
    char tmp[sizeof out->type];
    snprintf(tmp, sizeof tmp, "%s/%s", g_mime_content_type_get_media_type(t), g_mime_content_type_get_media_subtype(t));
    lower_copy(out->type, sizeof out->type, tmp);
    lower_copy(out->smime_type, sizeof out->smime_type, g_mime_content_type_get_parameter(t, "smime-type"));
    lower_copy(out->protocol, sizeof out->protocol, g_mime_content_type_get_parameter(t, "protocol"));
    lower_copy(out->name, sizeof out->name, g_mime_content_type_get_parameter(t, "name"));
    const char *b = g_mime_content_type_get_parameter(t, "boundary");
    if (b && strlen(b) < sizeof out->boundary) snprintf(out->boundary, sizeof out->boundary, "%s", b);
  }
  if (t) g_object_unref(t);
  free(ct);
  free(cte);
  return 0;
}

/* Is the line p[0..k) a delimiter of boundary ("--b", then optional
 * whitespace; "--b--" closes)?  *close_out says which. */
static bool line_is_delimiter(const char *p, size_t k, const char *b, size_t blen, bool *close_out) {
  if (k < blen + 2 || p[0] != '-' || p[1] != '-' || memcmp(p + 2, b, blen) != 0) return false;
  size_t i = blen + 2;
  *close_out = k >= i + 2 && p[i] == '-' && p[i + 1] == '-';
  if (*close_out) i += 2;
  while (i < k && (p[i] == ' ' || p[i] == '\t')) i++;
  return i == k;
}

int mime_multipart_parts(const char *body, size_t len, const char *boundary, struct mime_range *parts,
                         size_t max, size_t *n_out) {
  size_t blen = strlen(boundary), n = 0, i = 0;
  bool open = false, closed = false;
  *n_out = 0;
  if (blen == 0) return SG_EINVAL;
  while (i < len && !closed) {
    size_t eol, k = line_next(body + i, len - i, &eol);
    bool close;
    if (line_is_delimiter(body + i, k, boundary, blen, &close)) {
      if (open) { /* the line end before a delimiter belongs to it (RFC 2046 5.1.1) */
        size_t end = i;
        if (end >= 2 && body[end - 2] == '\r' && body[end - 1] == '\n') end -= 2;
        else if (end >= 1 && body[end - 1] == '\n') end -= 1;
        parts[n - 1].len = end > parts[n - 1].off ? end - parts[n - 1].off : 0;
      }
      closed = close;
      if (!close) {
        if (n == max) return SG_ELIMIT;
        parts[n++] = (struct mime_range){i + k + eol, 0};
        open = true;
      } else {
        open = false;
      }
    }
    i += k + eol;
  }
  if (!closed || n == 0) return SG_EINVAL; /* no closing delimiter: truncated or not multipart */
  *n_out = n;
  return 0;
}

int mime_base64_decode(const char *p, size_t n, struct buf *out) {
  /* OpenSSL's decoder stops quietly at '-' (a PEM end line): base64 never
   * has one, so it is an error rather than a silent truncation. */
  if (memchr(p, '-', n)) return SG_EINVAL;
  EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
  if (!ctx) return SG_ENOMEM;
  int rc = buf_reserve(out, n / 4 * 3 + 3);
  EVP_DecodeInit(ctx);
  int got = 0;
  /* EVP_DecodeUpdate takes an int length: feed it in slices. */
  for (size_t off = 0; rc == 0 && off < n; off += 1u << 20) {
    int len = (int)(n - off < (1u << 20) ? n - off : 1u << 20);
    if (EVP_DecodeUpdate(ctx, (unsigned char *)out->data + out->len, &got, (const unsigned char *)p + off, len) < 0)
      rc = SG_EINVAL;
    else
      out->len += (size_t)got;
  }
  if (rc == 0 && EVP_DecodeFinal(ctx, (unsigned char *)out->data + out->len, &got) < 0) rc = SG_EINVAL;
  else if (rc == 0) out->len += (size_t)got;
  EVP_ENCODE_CTX_free(ctx);
  return rc;
}

int mime_crlf(const char *p, size_t n, struct buf *out) {
  struct scan st = {0};
  scan_bytes(&st, p, n);
  if (st.odd_eols == 0) return 1;
  return canon_append(out, p, n, NULL);
}
