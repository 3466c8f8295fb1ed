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
 *  - A text part is any leaf of type text (any subtype), wherever it is (also a text/plain
 *    attachment: its words are in the message just the same).  text/html
 *    is searched as its decoded source, tags and entities included.
 *  - A declared charset other than UTF-8/US-ASCII is converted by GMime's
 *    charset filter.  Text that then still is not valid UTF-8 (no charset,
 *    a wrong or unknown one) is read as windows-1252, else ISO-8859-1: the
 *    usual mislabelling in practice, and every byte has a meaning there.
 *  - NUL bytes in text become spaces, and parts are joined by "\n", so a
 *    needle never matches across two parts.
 *  - Case folding is Unicode full case folding (g_utf8_casefold), done
 *    per chunk (it maps each character on its own, so chunks cut at
 *    character boundaries fold the same as the whole), with pure-ASCII
 *    chunks lower-cased directly.
 *
 * Memory: large buffers are ours (malloc, SG_ENOMEM when it fails); GLib
 * and GMime abort on allocation failure themselves, which we cannot
 * change, but their allocations here are bounded by one chunk or one part.
 */
#include "crypto/mimebody.h"

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
};

/* ------------------------------------------------------------------------ */
/* Process init                                                              */

static pthread_once_t mimebody_once = PTHREAD_ONCE_INIT;

/* g_mime_init counts its calls and does the work only on the first, so
 * crypto/mime.c's own once-init calling it too is harmless, as long as the
 * two first calls do not race (both are made at startup). */
static void mimebody__init_once(void) { g_mime_init(); }

int mimebody_global_init(void) {
  return pthread_once(&mimebody_once, mimebody__init_once) == 0 ? 0 : SG_ENOMEM;
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
  if (depth > MIMEBODY_MAX_DEPTH) return; /* too deep: not looked at */
  if (++w->parts > MIMEBODY_MAX_PARTS) {
    w->stop = true;
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

/* A stream that reads part's content transfer-decoded and, if its charset
 * is declared and known, converted to UTF-8 (*converted_out).  NULL if the
 * part has no content.  The stream is the caller's (g_object_unref). */
static GMimeStream *mimebody__decoder(GMimePart *part, bool *converted_out) {
  *converted_out = false;
  GMimeDataWrapper *dw = g_mime_part_get_content(part);
  GMimeStream *src = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
  if (!src) return NULL;
  g_mime_stream_reset(src);
  GMimeStream *f = g_mime_stream_filter_new(src);
  GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(dw);
  if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
      enc == GMIME_CONTENT_ENCODING_UUENCODE) {
    GMimeFilter *basic = g_mime_filter_basic_new(enc, FALSE);
    g_mime_stream_filter_add(GMIME_STREAM_FILTER(f), basic);
    g_object_unref(basic);
  }
  const char *cs = GMIME_IS_TEXT_PART(part) ? g_mime_text_part_get_charset(GMIME_TEXT_PART(part)) : NULL;
  GMimeFilter *conv = cs && !mimebody__is_utf8_name(cs) ? g_mime_filter_charset_new(cs, "UTF-8") : NULL;
  if (conv) { /* NULL too when iconv does not know the charset */
    g_mime_stream_filter_add(GMIME_STREAM_FILTER(f), conv);
    g_object_unref(conv);
    *converted_out = true;
  }
  return f;
}

/* Reads all of s, but at most cap bytes, into out (NULs made spaces). */
static int mimebody__read(GMimeStream *s, size_t cap, struct buf *out) {
  int zeros = 0;
  while (out->len < cap) {
    size_t want = MIN((size_t)MIMEBODY_CHUNK, cap - out->len);
    int rc = buf_reserve(out, want);
    if (rc) return rc;
    ssize_t n = g_mime_stream_read(s, out->data + out->len, want);
    if (n < 0) break;
    /* A filter may turn a whole chunk into nothing (base64 of only line
     * ends) before the end: only an empty read at the end stops us. */
    if (n == 0 && (g_mime_stream_eos(s) || ++zeros > 3)) break;
    if (n > 0) zeros = 0;
    for (char *p = out->data + out->len, *e = p + n; (p = memchr(p, '\0', (size_t)(e - p))) != NULL;) ;
    out->len += (size_t)n;
  }
  if (out->data) out->data[out->len] = '\0';
  return 0;
}

/* raw (NUL-free) as valid UTF-8: itself, or a new g_malloc'd string in
 * *fixed_out (the caller's, g_free) with its length in *len_out. */
static void mimebody__utf8(const struct buf *raw, bool converted, char **fixed_out, size_t *len_out) {
  *fixed_out = NULL;
  *len_out = raw->len;
  if (g_utf8_validate_len(raw->data, raw->len, NULL)) return;
  gsize n = 0;
  if (!converted) { /* no (known) charset: the usual guesses, see the top */
    *fixed_out = g_convert(raw->data, (gssize)raw->len, "UTF-8", "WINDOWS-1252", NULL, &n, NULL);
    if (!*fixed_out) *fixed_out = g_convert(raw->data, (gssize)raw->len, "UTF-8", "ISO-8859-1", NULL, &n, NULL);
  }
  if (!*fixed_out) {
    *fixed_out = g_utf8_make_valid(raw->data, (gssize)raw->len);
    n = strlen(*fixed_out);
  }
  *len_out = n;
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

/* Visit: adds one text part's folded text to b->text; 1 when full. */
static int mimebody__text_visit(struct mimebody__walk *w, GMimeObject *o) {
  struct buf *text = &w->b->text;
  if (!GMIME_IS_TEXT_PART(o)) return 0;
  if (text->len + 1 >= MIMEBODY_MAX_TEXT) return 1;
  if (text->len) {
    int rc = buf_append(text, "\n", 1);
    if (rc) return rc;
  }
  bool converted;
  GMimeStream *s = mimebody__decoder(GMIME_PART(o), &converted);
  if (!s) return 0;
  struct buf raw = BUF_INIT;
  int rc = mimebody__read(s, MIMEBODY_MAX_TEXT - text->len, &raw);
  g_object_unref(s);
  if (rc == 0 && raw.len) {
    char *fixed;
    size_t n;
    mimebody__utf8(&raw, converted, &fixed, &n);
    rc = mimebody__fold(fixed ? fixed : raw.data, n, text, MIMEBODY_MAX_TEXT);
    g_free(fixed);
  }
  buf_free(&raw);
  return rc;
}

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
