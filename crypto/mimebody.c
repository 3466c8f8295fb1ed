/*
 * mimebody - the decoded view of a message for content filters: the
 * case-folded text of its text parts, the names of its attachments, and
 * RFC 2047 header decoding.  See mimebody.h for the API.
 *
 * Owns: a read-only GMime stream over the caller's bytes (no copy of the
 * message: GMime's parser gives every leaf a substream of it), the parsed
 * GMimeMessage, the folded text and the name list of one struct mimebody,
 * each made on the first question that needs it and kept until
 * mimebody_free.
 *
 * Trusts nothing in the message.  GMime bounds its own recursion (its
 * parser stops nesting at 1024 levels and treats what lies deeper as
 * opaque content); our walk over the parsed tree stops at
 * MIMEBODY_MAX_DEPTH levels and MIMEBODY_MAX_PARTS parts, and decodes at
 * most MIMEBODY_MAX_TEXT bytes in all.  Text that is not valid UTF-8
 * after charset conversion is repaired (U+FFFD), never refused.
 *
 * Rules decided here:
 *  - A text part is any leaf of type text (any subtype), wherever it is
 *    (a text/plain attachment too: its words are in the message just the
 *    same).  text/html is searched as its decoded source, tags and
 *    entities included.
 *  - A declared charset other than UTF-8/US-ASCII is converted by GMime's
 *    charset filter.  Text that then still is not valid UTF-8 (no charset,
 *    a wrong or unknown one) is read as windows-1252, else ISO-8859-1: the
 *    usual mislabelling in practice, and every byte has a meaning there.
 *  - NUL bytes in text become spaces (GLib's UTF-8 functions stop at a
 *    NUL), and parts are joined by "\n", so the last word of one part and
 *    the first of the next never run together.
 *  - Case folding is Unicode full case folding (g_utf8_casefold), done
 *    per chunk (it maps each character on its own, so chunks cut at
 *    character boundaries fold the same as the whole), with pure-ASCII
 *    chunks lower-cased directly.
 *
 * Memory: the folded text (at most MIMEBODY_MAX_TEXT bytes) is ours
 * (malloc, SG_ENOMEM when it fails); text is decoded, converted and folded
 * a few KiB at a time, so no decoded copy of a whole part is ever held.
 * GLib and GMime abort on allocation failure themselves, which we cannot
 * change; besides the parse tree, their allocations here are one chunk.
 */
#include "crypto/mimebody.h"
#include "crypto/mime.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>

#include "core/buf.h"
#include "core/sgerr.h"

#define MIMEBODY_CHUNK (64u * 1024) /* read and fold granularity */

struct mimebody {
  const char *data; /* the caller's, never written */
  size_t len;
  GMimeMessage *msg; /* parsed on first use; NULL if that failed */
  bool parsed;
  struct buf text; /* folded text of all text parts, at most MAX_TEXT bytes */
  bool text_done, text_ok;
  GPtrArray *names; /* attachment names, UTF-8, g_free'd; NULL until asked */
  bool names_ok;
  bool incomplete;  /* a limit left part of the message unread (mimebody_incomplete) */
};

/* ------------------------------------------------------------------------ */
/* Process init                                                              */

/* One g_mime_init for the process, crypto/mime.c's: g_mime_init itself
 * is not safe to call from two threads at once. */
int mimebody_global_init(void) {
  mime_init();
  return 0;
}

/* ------------------------------------------------------------------------ */
/* A read-only GMime stream over borrowed bytes                              */

/* GMimeStreamMem would copy the message into a GByteArray; this stream
 * reads the caller's bytes in place.  Substreams (one per leaf part, made
 * by the parser) share the bytes and keep their parent alive through
 * GMimeStream's super_stream reference. */
typedef struct {
  GMimeStream parent;
  const char *data;
  gint64 len;
} MimebodyStream;

typedef struct {
  GMimeStreamClass parent_class;
} MimebodyStreamClass;

static GType mimebody__stream_type(void);

static gint64 mimebody__s_end(GMimeStream *s) {
  gint64 len = ((MimebodyStream *)s)->len;
  return s->bound_end != -1 && s->bound_end < len ? s->bound_end : len;
}

static ssize_t mimebody__s_read(GMimeStream *s, char *buf, size_t n) {
  gint64 end = mimebody__s_end(s);
  if (s->position > end) return -1;
  size_t k = (size_t)MIN((gint64)MIN(n, (size_t)SSIZE_MAX), end - s->position);
  if (k) memcpy(buf, ((MimebodyStream *)s)->data + s->position, k);
  s->position += (gint64)k;
  return (ssize_t)k;
}

static ssize_t mimebody__s_write(GMimeStream *s, const char *buf, size_t n) {
  (void)s, (void)buf, (void)n;
  return -1; /* the caller's message is never written */
}

static int mimebody__s_nop(GMimeStream *s) {
  (void)s;
  return 0; /* flush and close: nothing buffered, nothing owned */
}

static gboolean mimebody__s_eos(GMimeStream *s) { return s->position >= mimebody__s_end(s); }

static int mimebody__s_reset(GMimeStream *s) {
  s->position = s->bound_start;
  return 0;
}

static gint64 mimebody__s_seek(GMimeStream *s, gint64 off, GMimeSeekWhence whence) {
  gint64 end = mimebody__s_end(s), at = off;
  if (whence == GMIME_STREAM_SEEK_CUR) at = s->position + off;
  else if (whence == GMIME_STREAM_SEEK_END) at = end + off;
  if (at < s->bound_start || at > end) return -1;
  return s->position = at;
}

static gint64 mimebody__s_tell(GMimeStream *s) { return s->position; }

static gint64 mimebody__s_length(GMimeStream *s) { return mimebody__s_end(s) - s->bound_start; }

static GMimeStream *mimebody__s_sub(GMimeStream *s, gint64 start, gint64 end) {
  MimebodyStream *sub = g_object_new(mimebody__stream_type(), NULL);
  sub->data = ((MimebodyStream *)s)->data;
  sub->len = ((MimebodyStream *)s)->len;
  g_mime_stream_construct(&sub->parent, start, end);
  return &sub->parent;
}

static void mimebody__stream_class_init(gpointer klass, gpointer data) {
  (void)data;
  GMimeStreamClass *c = klass;
  c->read = mimebody__s_read;
  c->write = mimebody__s_write;
  c->flush = mimebody__s_nop;
  c->close = mimebody__s_nop;
  c->eos = mimebody__s_eos;
  c->reset = mimebody__s_reset;
  c->seek = mimebody__s_seek;
  c->tell = mimebody__s_tell;
  c->length = mimebody__s_length;
  c->substream = mimebody__s_sub;
}

/* Registered by hand rather than with G_DEFINE_TYPE, which would export
 * a non-static get_type function from this file. */
static GType mimebody__stream_type(void) {
  static gsize type = 0;
  if (g_once_init_enter(&type)) {
    static const GTypeInfo info = {
        .class_size = sizeof(MimebodyStreamClass),
        .class_init = mimebody__stream_class_init,
        .instance_size = sizeof(MimebodyStream),
    };
    GType t = g_type_register_static(GMIME_TYPE_STREAM, "SealgateMimebodyStream", &info, 0);
    g_once_init_leave(&type, t);
  }
  return (GType)type;
}

/* ------------------------------------------------------------------------ */
/* The struct                                                                */

int mimebody_new(const char *data, size_t len, struct mimebody **out) {
  *out = NULL;
  /* Cheap after the first time; makes a forgotten global init harmless. */
  int rc = mimebody_global_init();
  if (rc) return rc;
  struct mimebody *b = calloc(1, sizeof *b);
  if (!b) return SG_ENOMEM;
  b->data = data ? data : "";
  b->len = data ? len : 0;
  *out = b;
  return 0;
}

void mimebody_free(struct mimebody *b) {
  if (!b) return;
  if (b->msg) g_object_unref(b->msg);
  buf_free(&b->text);
  if (b->names) g_ptr_array_free(b->names, TRUE);
  free(b);
}

/* The parsed message, or NULL if GMime could make nothing of the bytes. */
static GMimeMessage *mimebody__message(struct mimebody *b) {
  if (b->parsed) return b->msg;
  b->parsed = true;
  MimebodyStream *s = g_object_new(mimebody__stream_type(), NULL);
  s->data = b->data;
  s->len = (gint64)b->len;
  g_mime_stream_construct(&s->parent, 0, -1);
  GMimeParser *p = g_mime_parser_new_with_stream(&s->parent);
  b->msg = g_mime_parser_construct_message(p, NULL);
  g_object_unref(p);
  g_object_unref(s); /* the parts' substreams hold it from here on */
  return b->msg;
}

/* ------------------------------------------------------------------------ */
/* Walking the parsed tree, bounded                                          */

struct mimebody__walk {
  struct mimebody *b;
  size_t parts;
  int rc;    /* first failure of a visit, which ends the walk */
  bool stop; /* limit reached or failure: visit nothing more */
  /* Called for each object that is not a multipart, in MIME order, before
   * a message/rfc822 part is looked into; 0, 1 to stop, or an sgerr. */
  int (*visit)(struct mimebody__walk *w, GMimeObject *o);
};

static void mimebody__walk(struct mimebody__walk *w, GMimeObject *o, unsigned depth) {
  if (!o || w->stop) return;
  if (depth > MIMEBODY_MAX_DEPTH || ++w->parts > MIMEBODY_MAX_PARTS) { /* not looked at */
    w->b->incomplete = true;
    w->stop = depth <= MIMEBODY_MAX_DEPTH;
    return;
  }
  if (GMIME_IS_MULTIPART(o)) {
    GMimeMultipart *mp = GMIME_MULTIPART(o);
    int n = g_mime_multipart_get_count(mp);
    for (int i = 0; i < n && !w->stop; i++) mimebody__walk(w, g_mime_multipart_get_part(mp, i), depth + 1);
    return;
  }
  int rc = w->visit(w, o);
  if (rc) {
    w->rc = rc < 0 ? rc : 0;
    w->stop = true;
    return;
  }
  if (GMIME_IS_MESSAGE_PART(o)) {
    GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
    if (m) mimebody__walk(w, g_mime_message_get_mime_part(m), depth + 1);
  }
}

/* Walks the whole message with visit; 0 or the visit's error. */
static int mimebody__walk_all(struct mimebody *b, int (*visit)(struct mimebody__walk *, GMimeObject *)) {
  GMimeMessage *m = mimebody__message(b);
  if (!m) return SG_EINVAL;
  struct mimebody__walk w = {.b = b, .visit = visit};
  mimebody__walk(&w, g_mime_message_get_mime_part(m), 0);
  return w.rc;
}

/* ------------------------------------------------------------------------ */
/* Text: decode, make UTF-8, fold                                            */

static bool mimebody__is_utf8_name(const char *cs) {
  return !g_ascii_strcasecmp(cs, "utf-8") || !g_ascii_strcasecmp(cs, "utf8") ||
         !g_ascii_strcasecmp(cs, "us-ascii") || !g_ascii_strcasecmp(cs, "ascii");
}

/* One text part being read: the decoding stream, and what is known about
 * the bytes it gives. */
struct mimebody__part {
  GMimeStream *in;  /* transfer-decoded (and charset-converted) content; ours */
  GMimeStream *src; /* the raw content under it; the part's */
  bool converted;   /* GMime's charset filter made it UTF-8 */
  bool cp1252;      /* not UTF-8 and no known charset: read as windows-1252 */
  bool eof;
};

/* Opens part for reading: transfer-decoded and, if its charset is declared
 * and known to iconv, converted to UTF-8.  False if it has no content. */
static bool mimebody__open(GMimePart *part, struct mimebody__part *pt) {
  *pt = (struct mimebody__part){0};
  GMimeDataWrapper *dw = g_mime_part_get_content(part);
  pt->src = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
  if (!pt->src) return false;
  g_mime_stream_reset(pt->src);
  pt->in = g_mime_stream_filter_new(pt->src);
  GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(dw);
  if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
      enc == GMIME_CONTENT_ENCODING_UUENCODE) {
    GMimeFilter *basic = g_mime_filter_basic_new(enc, FALSE);
    g_mime_stream_filter_add(GMIME_STREAM_FILTER(pt->in), basic);
    g_object_unref(basic);
  }
  const char *cs = GMIME_IS_TEXT_PART(part) ? g_mime_text_part_get_charset(GMIME_TEXT_PART(part)) : NULL;
  GMimeFilter *conv = cs && !mimebody__is_utf8_name(cs) ? g_mime_filter_charset_new(cs, "UTF-8") : NULL;
  if (conv) { /* NULL too when iconv does not know the charset */
    g_mime_stream_filter_add(GMIME_STREAM_FILTER(pt->in), conv);
    g_object_unref(conv);
    pt->converted = true;
  }
  return true;
}

/* Appends the next decoded bytes of pt to raw (at most one chunk; NULs
 * made spaces), or sets pt->eof. */
static int mimebody__read(struct mimebody__part *pt, struct buf *raw) {
  int rc = buf_reserve(raw, MIMEBODY_CHUNK);
  if (rc) return rc;
  for (int zeros = 0;;) {
    ssize_t n = g_mime_stream_read(pt->in, raw->data + raw->len, MIMEBODY_CHUNK);
    if (n > 0) {
      char *p = raw->data + raw->len, *e = p + n;
      while ((p = memchr(p, '\0', (size_t)(e - p))) != NULL) *p = ' ';
      raw->len += (size_t)n;
      return 0;
    }
    /* A filter may turn a read of its source into nothing (base64 of only
     * line ends) before the end; the end is an empty read after the
     * source's end, once the filters were flushed. */
    if (n < 0 || g_mime_stream_eos(pt->in) || (g_mime_stream_eos(pt->src) && ++zeros > 2)) {
      pt->eof = true;
      return 0;
    }
  }
}

/* How many bytes at the end of p (n bytes) start a UTF-8 character that
 * the next read completes: kept for then, so a chunk edge never splits one. */
static size_t mimebody__utf8_tail(const char *p, size_t n) {
  for (size_t back = 1; back <= 3 && back <= n; back++) {
    unsigned char c = (unsigned char)p[n - back];
    if ((c & 0xC0) == 0x80) continue;
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

/* p (n decoded bytes of pt) as valid UTF-8: NULL if it is already, else a
 * g_malloc'd string (the caller's) with its length in *len_out. */
static char *mimebody__utf8(struct mimebody__part *pt, const char *p, size_t n, size_t *len_out) {
  if (!pt->cp1252 && g_utf8_validate_len(p, n, NULL)) return NULL;
  gsize k = 0;
  char *s = NULL;
  if (!pt->converted) { /* no (known) charset: the usual guesses, see the top */
    pt->cp1252 = true;
    s = g_convert(p, (gssize)n, "UTF-8", "WINDOWS-1252", NULL, &k, NULL);
    if (!s) s = g_convert(p, (gssize)n, "UTF-8", "ISO-8859-1", NULL, &k, NULL);
  }
  if (!s) {
    s = g_utf8_make_valid(p, (gssize)n);
    k = strlen(s);
  }
  *len_out = k;
  return s;
}

static bool mimebody__ascii(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] >= 0x80) return false;
  return true;
}

/* Appends up to cap - out->len bytes of src (n bytes of UTF-8), cut at a
 * character boundary; *cut_out tells whether anything was left out. */
static int mimebody__append_capped(struct buf *out, const char *src, size_t n, size_t cap, bool *cut_out) {
  size_t room = cap - out->len;
  *cut_out = n > room;
  if (*cut_out) {
    n = room;
    while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
  }
  return buf_append(out, src, n);
}

/* Appends the case folding of valid UTF-8 p (n bytes) to out, as long as
 * out stays within cap bytes (cut at a character boundary). */
static int mimebody__fold(const char *p, size_t n, struct buf *out, size_t cap) {
  bool cut = false;
  while (n && !cut) {
    size_t k = MIN(n, (size_t)MIMEBODY_CHUNK);
    while (k < n && k > 1 && ((unsigned char)p[k] & 0xC0) == 0x80) k--; /* whole characters */
    size_t at = out->len;
    int rc;
    if (mimebody__ascii(p, k)) { /* lower-cased by hand, as g_utf8_casefold would */
      rc = mimebody__append_capped(out, p, k, cap, &cut);
      for (size_t i = at; i < out->len; i++) out->data[i] = g_ascii_tolower(out->data[i]);
    } else {
      char *folded = g_utf8_casefold(p, (gssize)k);
      rc = mimebody__append_capped(out, folded, strlen(folded), cap, &cut);
      g_free(folded);
    }
    if (rc) return rc;
    p += k;
    n -= k;
  }
  return 0;
}

/* Adds pt's text to text, read and folded one chunk at a time, until its
 * end or MIMEBODY_MAX_TEXT. */
static int mimebody__text_add(struct mimebody__part *pt, struct buf *text) {
  struct buf raw = BUF_INIT;
  int rc = 0;
  while (rc == 0 && !pt->eof && text->len < MIMEBODY_MAX_TEXT) {
    rc = mimebody__read(pt, &raw);
    size_t tail = pt->eof || pt->cp1252 ? 0 : mimebody__utf8_tail(raw.data, raw.len);
    size_t n = raw.len - tail, fixed_len = 0;
    if (rc || n == 0) continue;
    char *fixed = mimebody__utf8(pt, raw.data, n, &fixed_len);
    rc = mimebody__fold(fixed ? fixed : raw.data, fixed ? fixed_len : n, text, MIMEBODY_MAX_TEXT);
    g_free(fixed);
    memmove(raw.data, raw.data + n, tail);
    raw.len = tail;
  }
  buf_free(&raw);
  return rc;
}

/* Visit: adds one text part's folded text to b->text; 1 when full. */
static int mimebody__text_visit(struct mimebody__walk *w, GMimeObject *o) {
  struct buf *text = &w->b->text;
  if (!GMIME_IS_TEXT_PART(o)) return 0;
  if (text->len + 1 >= MIMEBODY_MAX_TEXT) {
    w->b->incomplete = true;
    return 1;
  }
  struct mimebody__part pt;
  if (!mimebody__open(GMIME_PART(o), &pt)) return 0;
  int rc = text->len ? buf_append(text, "\n", 1) : 0;
  if (rc == 0) rc = mimebody__text_add(&pt, text);
  if (rc == 0 && !pt.eof) w->b->incomplete = true; /* stopped at MIMEBODY_MAX_TEXT */
  g_object_unref(pt.in);
  return rc;
}

bool mimebody_incomplete(const struct mimebody *b) { return b && b->incomplete; }

bool mimebody_contains(struct mimebody *b, const char *needle) {
  if (!needle || !*needle) return true;
  if (!b) return false;
  if (!b->text_done) {
    b->text_done = true;
    b->text_ok = mimebody__walk_all(b, mimebody__text_visit) == 0;
  }
  if (!b->text_ok || !b->text.len) return false;
  char *valid = g_utf8_make_valid(needle, -1);
  struct buf folded = BUF_INIT;
  int rc = mimebody__fold(valid, strlen(valid), &folded, SIZE_MAX);
  g_free(valid);
  bool found = rc == 0 && folded.len && memmem(b->text.data, b->text.len, folded.data, folded.len) != NULL;
  buf_free(&folded);
  return found;
}

/* ------------------------------------------------------------------------ */
/* Attachment names                                                          */

/* The name a part carries: g_mime_part_get_filename looks at
 * Content-Disposition filename= then Content-Type name= (parameters are
 * RFC 2231 and RFC 2047 decoded by GMime).  A message/rfc822 part (a
 * forwarded mail) is no GMimePart but may carry a name the same way. */
static const char *mimebody__filename(GMimeObject *o) {
  if (GMIME_IS_PART(o)) return g_mime_part_get_filename(GMIME_PART(o));
  const char *name = g_mime_object_get_content_disposition_parameter(o, "filename");
  return name ? name : g_mime_object_get_content_type_parameter(o, "name");
}

static int mimebody__name_visit(struct mimebody__walk *w, GMimeObject *o) {
  const char *name = mimebody__filename(o);
  if (name && *name) g_ptr_array_add(w->b->names, g_utf8_make_valid(name, -1));
  return 0;
}

const char *mimebody_attachment(struct mimebody *b, size_t index) {
  if (!b) return NULL;
  if (!b->names) {
    b->names = g_ptr_array_new_with_free_func(g_free);
    b->names_ok = mimebody__walk_all(b, mimebody__name_visit) == 0;
  }
  return b->names_ok && index < b->names->len ? b->names->pdata[index] : NULL;
}

/* ------------------------------------------------------------------------ */
/* Header values                                                             */

/* raw unfolded (RFC 5322 2.2.3: a line end followed by WSP is removed, the
 * WSP kept), without leading whitespace, a final line end or NUL bytes.
 * malloc'd, or NULL. */
static char *mimebody__unfold(const char *raw, size_t len) {
  char *out = malloc(len + 1);
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char c = raw[i];
    size_t eol = c == '\n' ? 1 : c == '\r' && i + 1 < len && raw[i + 1] == '\n' ? 2 : 0;
    if (eol && (i + eol == len || raw[i + eol] == ' ' || raw[i + eol] == '\t')) {
      i += eol - 1;
      continue;
    }
    if (c == '\0' || (o == 0 && (c == ' ' || c == '\t'))) continue;
    out[o++] = c;
  }
  out[o] = '\0';
  return out;
}

char *mimebody_header_decode(const char *raw, size_t len) {
  char *s = mimebody__unfold(raw ? raw : "", raw ? len : 0);
  if (!s || (!strstr(s, "=?") && g_utf8_validate(s, -1, NULL))) return s; /* the fast path */
  /* Encoded words, or raw 8-bit bytes that GMime reads with its fallback
   * charsets; whatever comes back is made valid UTF-8. */
  char *decoded = g_mime_utils_header_decode_text(NULL, s);
  free(s);
  if (!decoded) return NULL;
  char *valid = g_utf8_make_valid(decoded, -1);
  g_free(decoded);
  char *out = strdup(valid);
  g_free(valid);
  return out;
}
