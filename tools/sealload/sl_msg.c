/*
 * sl_msg - see sl_msg.h.
 *
 * Generated messages are built unstuffed ("plain", without the Message-ID
 * line), sized by filling the body last, then stuffed into the template.
 * Body lines are 76 characters (78 octets with CRLF); a remainder of one
 * octet cannot be a line, so it is absorbed by making one line longer or,
 * for a body too small for that, one header character longer.
 */
#include "tools/sealload/sl_msg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "core/sgerr.h"
#include "core/timeutil.h"

#define LINE_OCTETS 78 /* 76 characters and CRLF */

static const char ascii_words[] =
    "sealload test message: the quick brown fox jumps over the lazy dog, 0123456789. ";
/* Mixed 2-, 3- and 4-octet UTF-8 sequences, never cut inside one. */
static const char utf8_words[] =
    "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln, \xc3\xa7" "a va? \xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd"
    "\xce\xb9\xce\xba\xce\xac \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x93\xa7 ";

static size_t utf8_seq_len(unsigned char c) {
  return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
}

/* One line of exactly n octets before its CRLF: words repeated, cut at a
 * character boundary, padded with '-' (ASCII) to the exact length. */
static int sl_msg__line(struct buf *b, size_t n, bool utf8, size_t lineno) {
  const char *w = utf8 ? utf8_words : ascii_words;
  size_t wlen = utf8 ? sizeof utf8_words - 1 : sizeof ascii_words - 1;
  size_t start = b->len, pos = (lineno * 7) % wlen;
  if (buf_reserve(b, n + 2) != 0) return SG_ENOMEM;
  if (utf8) /* the start must be a character boundary too */
    while (((unsigned char)w[pos] & 0xc0) == 0x80) pos = (pos + 1) % wlen;
  while (b->len - start < n) {
    size_t k = utf8_seq_len((unsigned char)w[pos]);
    if (b->len - start + k > n) break;
    memcpy(b->data + b->len, w + pos, k);
    b->len += k;
    pos = (pos + k) % wlen;
  }
  while (b->len - start < n) b->data[b->len++] = '-';
  memcpy(b->data + b->len, "\r\n", 2);
  b->len += 2;
  return 0;
}

/* Exactly n octets of CRLF-terminated lines (n != 1). */
static int sl_msg__fill(struct buf *b, size_t n, bool utf8) {
  size_t full = n / LINE_OCTETS, rest = n % LINE_OCTETS, lineno = 0;
  if (rest == 1) { /* one full line becomes 79 octets instead */
    full--;
    rest = 0;
    if (sl_msg__line(b, LINE_OCTETS - 2 + 1, utf8, lineno++) != 0) return SG_ENOMEM;
  }
  for (size_t i = 0; i < full; i++)
    if (sl_msg__line(b, LINE_OCTETS - 2, utf8, lineno++) != 0) return SG_ENOMEM;
  if (rest >= 2 && sl_msg__line(b, rest - 2, utf8, lineno) != 0) return SG_ENOMEM;
  return 0;
}

/* The header fields after Message-ID.  pad adds one octet to Subject. */
static int sl_msg__header(struct buf *b, const struct sl_msg_opts *o, const char *ctype, const char *cte,
                          bool pad) {
  char date[64];
  time_t now = (time_t)(timeutil_wall_ms() / 1000);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf_appendf(b,
                     "From: <%s>\r\nTo: <%s>\r\nSubject: sealload test message%s\r\nDate: %s\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: %s\r\nContent-Transfer-Encoding: %s\r\n\r\n",
                     o->from, o->to, pad ? "." : "", date, ctype, cte);
}

/* text/plain (7bit or 8bit UTF-8) of o->size octets with the ID line. */
static int sl_msg__text(const struct sl_msg_opts *o, struct buf *plain) {
  bool utf8 = o->kind == SL_MSG_8BIT;
  const char *ctype = utf8 ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii";
  const char *cte = utf8 ? "8bit" : "7bit";
  int rc = sl_msg__header(plain, o, ctype, cte, false);
  if (rc) return rc;
  size_t have = SL_MSG_ID_LINE_LEN + plain->len;
  size_t body = o->size > have ? o->size - have : 0;
  if (body == 1) { /* no line is one octet long: lengthen the Subject */
    buf_reset(plain);
    if ((rc = sl_msg__header(plain, o, ctype, cte, true)) != 0) return rc;
    body = 0;
  }
  return sl_msg__fill(plain, body, utf8);
}

/* Encoded size of n octets in base64 lines of 76 characters plus CRLF. */
static size_t sl_msg__b64_size(size_t n) {
  size_t chars = (n + 2) / 3 * 4;
  return chars + (chars + 75) / 76 * 2;
}

/* n pseudo-random octets as base64 lines (57 octets make 76 characters). */
static int sl_msg__b64(struct buf *b, size_t n, uint32_t seed) {
  unsigned char raw[57];
  uint32_t x = seed | 1;
  for (size_t done = 0; done < n;) {
    size_t k = n - done < sizeof raw ? n - done : sizeof raw;
    for (size_t i = 0; i < k; i++) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      raw[i] = (unsigned char)x;
    }
    if (buf_reserve(b, 79) != 0) return SG_ENOMEM;
    b->len += (size_t)EVP_EncodeBlock((unsigned char *)b->data + b->len, raw, (int)k);
    memcpy(b->data + b->len, "\r\n", 2);
    b->len += 2;
    done += k;
  }
  return 0;
}

/* multipart/mixed: a text part (sized last, to make the total exact) and
 * an application/octet-stream attachment taking the bulk, base64. */
static int sl_msg__attach(const struct sl_msg_opts *o, struct buf *plain) {
  char ctype[96], bnd[48];
  snprintf(bnd, sizeof bnd, "sealload-%08" PRIx32, o->run);
  snprintf(ctype, sizeof ctype, "multipart/mixed; boundary=\"%s\"", bnd);
  static const char intro[] = "This message carries a generated attachment";
  struct buf p1 = BUF_INIT, p2 = BUF_INIT;
  int rc = sl_msg__header(plain, o, ctype, "7bit", false);
  if (!rc) rc = buf_appendf(&p1, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n"
                            "Content-Transfer-Encoding: 7bit\r\n\r\n", bnd);
  if (!rc) rc = buf_appendf(&p2, "--%s\r\nContent-Type: application/octet-stream; name=\"sealload.bin\"\r\n"
                            "Content-Transfer-Encoding: base64\r\n"
                            "Content-Disposition: attachment; filename=\"sealload.bin\"\r\n\r\n", bnd);
  size_t fixed = SL_MSG_ID_LINE_LEN + plain->len + p1.len + (sizeof intro - 1) + 2 + p2.len + strlen(bnd) + 6;
  size_t budget = o->size > fixed ? o->size - fixed : 0, n = budget / LINE_OCTETS * 57;
  while (sl_msg__b64_size(n + 1) <= budget) n++;
  while (n > 0 && sl_msg__b64_size(n) > budget) n--;
  size_t text = budget - sl_msg__b64_size(n);
  bool pad = text == 1; /* absorbed by the intro line */
  if (!rc) rc = buf_append(plain, p1.data, p1.len);
  if (!rc) rc = buf_appendf(plain, "%s%s\r\n", intro, pad ? "." : "");
  if (!rc) rc = sl_msg__fill(plain, pad ? 0 : text, false);
  if (!rc) rc = buf_append(plain, p2.data, p2.len);
  if (!rc) rc = sl_msg__b64(plain, n, o->run);
  if (!rc) rc = buf_appendf(plain, "--%s--\r\n", bnd);
  buf_free(&p1);
  buf_free(&p2);
  return rc;
}

static int sl_msg__read(const char *path, struct buf *raw, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    return sgerr_fail(err, errlen, SG_EIO, "%s: %s", path, strerror(e));
  }
  if ((size_t)st.st_size > SL_MSG_FILE_MAX) {
    close(fd);
    return sgerr_fail(err, errlen, SG_ETOOBIG, "%s: larger than 1 GiB", path);
  }
  int rc = buf_reserve(raw, (size_t)st.st_size + 1);
  while (rc == 0) {
    ssize_t n = read(fd, raw->data + raw->len, raw->cap - raw->len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) rc = sgerr_fail(err, errlen, SG_EIO, "%s: %s", path, strerror(errno));
    if (n <= 0) break;
    raw->len += (size_t)n;
    if (raw->len > SL_MSG_FILE_MAX) rc = sgerr_fail(err, errlen, SG_ETOOBIG, "%s: larger than 1 GiB", path);
    else if (raw->len == raw->cap) rc = buf_reserve(raw, 65536);
  }
  close(fd);
  return rc;
}

/* Does the header line at p (len octets, no CRLF) start a Message-ID field? */
static bool sl_msg__is_id_field(const char *p, size_t len) {
  static const char name[] = "message-id";
  size_t n = sizeof name - 1;
  if (len <= n || strncasecmp(p, name, n) != 0) return false;
  while (n < len && (p[n] == ' ' || p[n] == '\t')) n++;
  return n < len && p[n] == ':';
}

/* The file as a message: CRLF line ends, a final CRLF, no Message-ID
 * field in its header section (continuation lines go with their field). */
static int sl_msg__file(const struct sl_msg_opts *o, struct buf *plain, bool *body8, char *err, size_t errlen) {
  struct buf raw = BUF_INIT;
  int rc = sl_msg__read(o->file, &raw, err, errlen);
  bool in_header = true, dropping = false;
  for (size_t pos = 0; rc == 0 && pos < raw.len;) {
    const char *p = raw.data + pos, *nl = memchr(p, '\n', raw.len - pos);
    size_t len = nl ? (size_t)(nl - p) : raw.len - pos;
    pos += len + (nl != NULL);
    if (len > 0 && p[len - 1] == '\r') len--;
    if (in_header && len == 0) in_header = false;
    if (in_header) {
      bool cont = len > 0 && (p[0] == ' ' || p[0] == '\t');
      if (!cont) dropping = sl_msg__is_id_field(p, len);
      if (dropping) continue;
    }
    for (size_t i = 0; i < len && !*body8; i++) *body8 = (unsigned char)p[i] >= 0x80;
    rc = buf_append(plain, p, len);
    if (!rc) rc = buf_append(plain, "\r\n", 2);
  }
  buf_free(&raw);
  return rc;
}

/* Dot-stuff plain into the template and terminate it (plain ends in CRLF). */
static int sl_msg__stuff(const struct buf *plain, struct buf *tail) {
  int rc = buf_reserve(tail, plain->len + plain->len / 64 + 8);
  for (size_t pos = 0; rc == 0 && pos < plain->len;) {
    const char *p = plain->data + pos, *nl = memchr(p, '\n', plain->len - pos);
    size_t len = nl ? (size_t)(nl - p) + 1 : plain->len - pos;
    if (*p == '.') rc = buf_append(tail, ".", 1);
    if (!rc) rc = buf_append(tail, p, len);
    pos += len;
  }
  if (!rc) rc = buf_append(tail, ".\r\n", 3);
  return rc;
}

int sl_msg_build(const struct sl_msg_opts *o, struct sl_msg *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->run = o->run;
  if (o->kind == SL_MSG_FILE && !o->file) return sgerr_fail(err, errlen, SG_EINVAL, "no message file");
  if (o->kind != SL_MSG_FILE && (!o->from || !o->to))
    return sgerr_fail(err, errlen, SG_EINVAL, "generated messages need From and To");
  struct buf plain = BUF_INIT;
  int rc;
  switch (o->kind) {
    case SL_MSG_TEXT:
    case SL_MSG_8BIT: rc = sl_msg__text(o, &plain); break;
    case SL_MSG_ATTACH: rc = sl_msg__attach(o, &plain); break;
    case SL_MSG_FILE: rc = sl_msg__file(o, &plain, &out->body8, err, errlen); break;
    default: rc = sgerr_fail(err, errlen, SG_EINVAL, "unknown message kind");
  }
  if (o->kind == SL_MSG_8BIT) out->body8 = true;
  if (rc == 0) rc = sl_msg__stuff(&plain, &out->tail);
  out->size = SL_MSG_ID_LINE_LEN + plain.len;
  buf_free(&plain);
  if (rc == SG_ENOMEM) sgerr_fail(err, errlen, rc, "out of memory building the message");
  if (rc) sl_msg_free(out);
  return rc;
}

void sl_msg_free(struct sl_msg *m) { buf_free(&m->tail); }

size_t sl_msg_id_line(const struct sl_msg *m, unsigned worker, uint64_t seq, char *line) {
  snprintf(line, SL_MSG_ID_LINE_LEN + 1, "Message-ID: <%08" PRIx32 ".%03u.%010" PRIu64 "@sealload.invalid>\r\n",
           m->run, worker % SL_MSG_MAX_WORKERS, seq % UINT64_C(10000000000));
  return SL_MSG_ID_LINE_LEN;
}

int sl_msg_render(const struct sl_msg *m, unsigned worker, uint64_t seq, struct buf *out) {
  char line[SL_MSG_ID_LINE_LEN + 1];
  size_t n = sl_msg_id_line(m, worker, seq, line);
  int rc = buf_append(out, line, n);
  return rc ? rc : buf_append(out, m->tail.data, m->tail.len);
}
