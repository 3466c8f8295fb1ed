/*
 * incoming - one message through a flow policy (incoming.h).
 *
 * The layers are opened from the outside in, each giving the entity the
 * next one is looked for in:
 *   multipart/signed                      -> verify_detached, its first part
 *   application/(x-)pkcs7-mime SignedData -> verify_opaque, its content
 *   ... EnvelopedData / AuthEnvelopedData -> decrypt_cms, the plaintext
 * The kind of a pkcs7-mime body is read from its ContentInfo's OID, not
 * from the smime-type parameter (which is optional and may lie).
 *
 * What is delivered (R31): the entity below the last encryption layer
 * (the original entity if there was none) with its signatures kept, or
 * with keep_signature false, the content below every signature that
 * passed.  A signature that did not pass is never removed: the reader's
 * client can still show it.  A message that does not decrypt goes on as
 * it came.  Entities made here (plaintexts, opaque contents) live in
 * ctx.hold until the output is composed.
 */
#include "crypto/incoming.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/mime.h"

enum in_kind { IN_NONE, IN_DETACHED, IN_OPAQUE, IN_ENVELOPED };

struct in_ctx {
  struct hsm_worker *w;
  const struct incoming_request *rq;
  struct incoming_result *res;
  struct mime_split split;          /* the message's header block: outer fields, Content-* fields */
  struct buf hold[INCOMING_MAX_LAYERS];
  size_t n_hold;
  const char *cur, *deliver;        /* the entity being looked at; the one to deliver */
  size_t cur_len, deliver_len;
  size_t n_sigs;
  bool all_pass, outer_fail, failed_decrypt;
  bool from_single;                 /* one From: field naming one mailbox */
};

void incoming_result_free(struct incoming_result *res) {
  buf_free(&res->out);
  verify_result_free(&res->sig);
}

/* ---- oracle guard ------------------------------------------------------ */

#define GUARD_SLOTS 1024

struct incoming_guard {
  pthread_mutex_t mu;
  struct {
    unsigned long hash;
    time_t start;
    unsigned fails;
  } slot[GUARD_SLOTS];
};

int incoming_guard_new(struct incoming_guard **out) {
  struct incoming_guard *g = calloc(1, sizeof *g);
  if (!g) return SG_ENOMEM;
  pthread_mutex_init(&g->mu, NULL);
  *out = g;
  return 0;
}

void incoming_guard_free(struct incoming_guard *g) {
  if (!g) return;
  pthread_mutex_destroy(&g->mu);
  free(g);
}

static unsigned long in__hash(const char *s) {
  unsigned long h = 1469598103934665603ul;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ul;
  return h ? h : 1;
}

/* May we try to decrypt for this sender (fail false), or count a failure
 * (fail true)?  Senders whose hashes share a slot share its count within
 * a window (stricter, never looser: a new sender does not reset it).
 * The From address is the sender's to choose, so this bounds one
 * careless or hostile sender, not an attacker who rotates addresses: what
 * keeps the oracle closed is that the result never goes back to the
 * sender (one generic permerror, never a bounce). */
static bool in__guard(struct incoming_guard *g, const char *sender, time_t now, bool fail) {
  if (!g) return true;
  unsigned long h = in__hash(sender);
  pthread_mutex_lock(&g->mu);
  __typeof__(g->slot[0]) *s = &g->slot[h % GUARD_SLOTS];
  if (s->hash == 0 || now - s->start > INCOMING_GUARD_WINDOW) {
    if (!fail) {
      pthread_mutex_unlock(&g->mu);
      return true;
    }
    s->hash = h, s->start = now, s->fails = 0;
  }
  if (fail) s->fails++;
  bool ok = s->fails < INCOMING_GUARD_FAILS;
  pthread_mutex_unlock(&g->mu);
  return ok;
}

/* ---- recognising a layer ------------------------------------------------ */

/* The NID of a DER ContentInfo's contentType, reading only its first
 * bytes; NID_undef if it is not one. */
static int in__content_nid(const unsigned char *der, size_t len) {
  const unsigned char *p = der;
  long n;
  int tag, xclass;
  if (len > LONG_MAX) return NID_undef;
  int r = ASN1_get_object(&p, &n, &tag, &xclass, (long)len);
  if ((r & 0x80) || tag != V_ASN1_SEQUENCE || !(r & V_ASN1_CONSTRUCTED)) {
    ERR_clear_error();
    return NID_undef;
  }
  ASN1_OBJECT *o = d2i_ASN1_OBJECT(NULL, &p, (long)(len - (size_t)(p - der)));
  int nid = o ? OBJ_obj2nid(o) : NID_undef;
  ASN1_OBJECT_free(o);
  ERR_clear_error();
  return nid;
}

static bool in__is_pkcs7_mime(const struct mime_entity_info *mi) {
  if (!strcmp(mi->type, "application/pkcs7-mime") || !strcmp(mi->type, "application/x-pkcs7-mime")) return true;
  size_t n = strlen(mi->name);
  return !strcmp(mi->type, "application/octet-stream") && n > 4 && !strcmp(mi->name + n - 4, ".p7m");
}

/* The bytes of a body as its Content-Transfer-Encoding says. */
static int in__body_bytes(const char *body, size_t len, const char *cte, struct buf *out) {
  if (!strcmp(cte, "base64")) return mime_base64_decode(body, len, out);
  if (!*cte || !strcmp(cte, "binary") || !strcmp(cte, "8bit") || !strcmp(cte, "7bit")) return buf_append(out, body, len);
  return SG_EINVAL; /* quoted-printable CMS: nobody makes it */
}

/* ---- opening layers ----------------------------------------------------- */

static void in__params(const struct in_ctx *c, struct verify_params *p) {
  /* Two From fields, or one naming two mailboxes: no signer can match
   * "the" sender (verify reports no-from). */
  *p = (struct verify_params){.trust = c->rq->trust, .from = c->res->from[0] && c->from_single ? c->res->from : NULL,
                              .revocation_hard = c->rq->flow->revocation == CONFIG_REVOCATION_HARD, .now = c->rq->now};
}

/* One signature layer checked: remember the innermost result; fold the
 * outcome into the totals. */
static void in__signature(struct in_ctx *c, struct verify_result *vr, const char *content, size_t len) {
  c->res->smime = true;
  c->res->has_signature = true;
  if (c->n_sigs++ && c->res->sig.status == VERIFY_FAIL) c->outer_fail = true;
  if (vr->status != VERIFY_PASS) c->all_pass = false;
  verify_result_free(&c->res->sig);
  c->res->sig = *vr;
  memset(vr, 0, sizeof *vr);
  if (!c->rq->flow->keep_signature && c->res->sig.status == VERIFY_PASS && c->deliver == c->cur) {
    c->deliver = content;
    c->deliver_len = len;
  }
  c->cur = content;
  c->cur_len = len;
}

/* A malformed signature layer: a failed signature over what it wraps. */
static void in__malformed(struct verify_result *vr, const char *err) {
  verify_result_free(vr);
  memset(vr, 0, sizeof *vr);
  vr->status = VERIFY_FAIL;
  snprintf(vr->reason, sizeof vr->reason, "malformed");
  snprintf(vr->detail, sizeof vr->detail, "%s", err);
}

static int in__detached(struct in_ctx *c, const struct mime_entity_info *mi) {
  const char *body = c->cur + mi->body_off;
  size_t blen = c->cur_len - mi->body_off, n = 0;
  struct mime_range parts[3];
  struct mime_entity_info si;
  struct buf sig = BUF_INIT;
  struct verify_result vr = {0};
  struct verify_params p;
  char err[200] = "multipart/signed without two parts";
  in__params(c, &p);
  int rc = mime_multipart_parts(body, blen, mi->boundary, parts, 3, &n);
  if (rc == SG_ENOMEM) return rc;
  if (rc == 0 && n == 2) {
    const char *s = body + parts[1].off;
    mime_entity_info(s, parts[1].len, &si);
    rc = in__body_bytes(s + si.body_off, parts[1].len - si.body_off, si.cte, &sig);
    if (rc == 0) rc = verify_detached(body + parts[0].off, parts[0].len, (unsigned char *)sig.data, sig.len, &p, &vr,
                                      err, sizeof err);
    else snprintf(err, sizeof err, "the signature part is not valid base64");
  }
  buf_free(&sig);
  if (rc == SG_ENOMEM) {
    verify_result_free(&vr);
    return rc;
  }
  if (rc != 0 || n != 2) in__malformed(&vr, err);
  /* Even a malformed one reports its first part as the content. */
  in__signature(c, &vr, n >= 1 ? body + parts[0].off : c->cur, n >= 1 ? parts[0].len : c->cur_len);
  return n >= 1 ? 0 : 1;
}

/* A plaintext or an opaque content: kept in hold, line ends made CRLF. */
static int in__hold(struct in_ctx *c, struct buf *b, const char **p, size_t *len) {
  struct buf *h = &c->hold[c->n_hold++];
  int rc = mime_crlf(b->data, b->len, h);
  if (rc == 1) { /* already canonical: take it as it is */
    *h = *b;
    *b = (struct buf)BUF_INIT;
    rc = 0;
  }
  *p = h->data ? h->data : "";
  *len = h->len;
  return rc;
}

static int in__opaque(struct in_ctx *c, const struct buf *der) {
  struct buf content = BUF_INIT;
  struct verify_result vr = {0};
  struct verify_params p;
  char err[200] = "";
  in__params(c, &p);
  int rc = verify_opaque((unsigned char *)der->data, der->len, &p, &content, &vr, err, sizeof err);
  if (rc == SG_ENOMEM) return rc;
  const char *inner = c->cur;
  size_t ilen = c->cur_len;
  if (rc != 0) {
    in__malformed(&vr, err);
  } else if (in__hold(c, &content, &inner, &ilen) != 0) { /* no memory: nothing was decided */
    buf_free(&content);
    verify_result_free(&vr);
    return SG_ENOMEM;
  }
  buf_free(&content);
  bool opened = inner != c->cur;
  in__signature(c, &vr, inner, ilen);
  return opened ? 0 : 1;
}

/* Where the plaintext goes until decryption has succeeded as a whole: an
 * unlinked file for large ones (never named, gone when closed), else
 * memory. */
static BIO *in__sink(const struct incoming_request *rq, size_t der_len, int *fd_out) {
  *fd_out = -1;
  if (rq->spill_dir && der_len > INCOMING_SPILL_OVER) {
    int fd = open(rq->spill_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
      *fd_out = fd;
      return BIO_new_fd(fd, BIO_NOCLOSE);
    }
  }
  return decrypt_sink_mem(der_len);
}

static int in__sink_read(BIO *sink, int fd, struct buf *out) {
  if (fd < 0) {
    char *p;
    long n = BIO_get_mem_data(sink, &p);
    return buf_append(out, p, n > 0 ? (size_t)n : 0);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || lseek(fd, 0, SEEK_SET) != 0) return SG_EIO;
  int rc = buf_reserve(out, (size_t)st.st_size);
  while (rc == 0 && out->len < (size_t)st.st_size) {
    ssize_t r = read(fd, out->data + out->len, (size_t)st.st_size - out->len);
    if (r <= 0 && errno != EINTR) rc = SG_EIO;
    else if (r > 0) out->len += (size_t)r;
  }
  return rc;
}

static int in__enveloped(struct in_ctx *c, const struct buf *der) {
  struct incoming_result *res = c->res;
  res->smime = true;
  if (!in__guard(c->rq->guard, res->from, c->rq->now, false)) {
    c->failed_decrypt = true;
    snprintf(res->reason, sizeof res->reason, "decryption not tried: too many failures for sender <%.200s>", res->from);
    return 1;
  }
  int fd;
  BIO *sink = in__sink(c->rq, der->len, &fd);
  char detail[512] = "";
  struct decrypt_limits lim = DECRYPT_LIMITS_DEFAULT;
  int rc = sink ? decrypt_cms(c->w, (unsigned char *)der->data, der->len, c->rq->keys, c->rq->n_keys, &lim, sink, NULL,
                              detail, sizeof detail)
                : SG_ENOMEM;
  struct buf plain = BUF_INIT;
  if (rc == 0) rc = in__sink_read(sink, fd, &plain);
  BIO_free(sink);
  if (fd >= 0) close(fd);
  if (rc == SG_ETEMP || rc == SG_ENOMEM || rc == SG_EIO) { /* not the message's fault: retry */
    res->status = INCOMING_TEMP;
    snprintf(res->reason, sizeof res->reason, "%s: %.200s", rc == SG_ETEMP ? "token unreachable" : "cannot decrypt now",
             detail[0] ? detail : sgerr_str(rc));
    buf_free(&plain);
    return rc;
  }
  if (rc != 0) {
    c->failed_decrypt = true;
    in__guard(c->rq->guard, res->from, c->rq->now, true);
    snprintf(res->reason, sizeof res->reason, "decryption failed: %.230s", detail);
    buf_free(&plain);
    return 1;
  }
  res->decrypted = true;
  rc = in__hold(c, &plain, &c->cur, &c->cur_len);
  buf_free(&plain);
  c->deliver = c->cur;
  c->deliver_len = c->cur_len;
  return rc;
}

/* Look at c->cur: open the layer it is (0: opened, c->cur is what it
 * wrapped), or 1 when it is content (or cannot be opened), or a negative
 * code (TEMP: the message waits). */
static int in__layer(struct in_ctx *c) {
  struct mime_entity_info mi;
  mime_entity_info(c->cur, c->cur_len, &mi);
  if (mi.ambiguous) return 1; /* two Content-Types: readers may see another structure than we would check */
  if (!strcmp(mi.type, "multipart/signed") &&
      (!strcmp(mi.protocol, "application/pkcs7-signature") || !strcmp(mi.protocol, "application/x-pkcs7-signature")))
    return in__detached(c, &mi);
  if (!in__is_pkcs7_mime(&mi)) return 1;
  struct buf der = BUF_INIT;
  int rc = in__body_bytes(c->cur + mi.body_off, c->cur_len - mi.body_off, mi.cte, &der);
  int nid = rc == 0 ? in__content_nid((unsigned char *)der.data, der.len) : NID_undef;
  if (rc == SG_ENOMEM) {
    buf_free(&der);
    return rc;
  }
  if (nid == NID_pkcs7_signed) rc = in__opaque(c, &der);
  else if (nid == NID_pkcs7_enveloped || nid == NID_id_smime_ct_authEnvelopedData) rc = in__enveloped(c, &der);
  else { /* a pkcs7-mime body we cannot read (compressed, garbage): a failed decryption as far as the reader knows */
    c->res->smime = true;
    c->failed_decrypt = true;
    snprintf(c->res->reason, sizeof c->res->reason, "unreadable %s body (%s)", mi.type,
             nid == NID_undef ? "not a CMS ContentInfo" : OBJ_nid2sn(nid));
    rc = 1;
  }
  buf_free(&der);
  return rc;
}

/* ---- the result ---------------------------------------------------------- */

static const char *in__result_of(const struct verify_result *v) {
  return v->status == VERIFY_PASS ? "pass" : v->status == VERIFY_FAIL ? "fail" : "policy";
}

static void in__conclude(struct in_ctx *c) {
  struct incoming_result *res = c->res;
  res->verified = res->smime && !c->failed_decrypt && c->all_pass;
  if (c->failed_decrypt) {
    res->result = "permerror";
    snprintf(res->result_reason, sizeof res->result_reason, "decryption failed");
  } else if (!res->has_signature) {
    res->result = "none";
  } else if (c->outer_fail && res->sig.status != VERIFY_FAIL) {
    res->result = "fail";
    snprintf(res->result_reason, sizeof res->result_reason, "outer-signature");
  } else {
    res->result = in__result_of(&res->sig);
    snprintf(res->result_reason, sizeof res->result_reason, "%s", res->sig.status == VERIFY_PASS ? "" : res->sig.reason);
  }
  res->action = !c->rq->flow->smime_decrypt_verify ? "relay"
                : res->decrypted      ? (res->has_signature ? "decrypt-verify" : "decrypt")
                : res->has_signature  ? "verify"
                                      : "check";
  if (!res->reason[0] && res->has_signature)
    snprintf(res->reason, sizeof res->reason, "%s", res->sig.detail[0] ? res->sig.detail : res->result);
}

/* RFC 7281 / RFC 8601: "Authentication-Results: host; smime=RESULT
 * [reason="..."] [body.smime-identifier=ADDR]". */
static int in__header(const struct in_ctx *c, struct buf *out) {
  const struct incoming_result *res = c->res;
  int rc = buf_appendf(out, "Authentication-Results: %s;\r\n\tsmime=%s", c->rq->hostname, res->result);
  if (rc == 0 && res->result_reason[0]) rc = buf_appendf(out, " reason=\"%s\"", res->result_reason);
  if (rc == 0 && res->has_signature && res->sig.identity[0] && !strpbrk(res->sig.identity, " \t\r\n;()\"\\"))
    rc = buf_appendf(out, " body.smime-identifier=%s", res->sig.identity);
  if (rc == 0) rc = buf_append(out, "\r\n", 2);
  return rc;
}

/* RFC 5322 CFWS from f[i]: whitespace, line ends, and comments (nested,
 * with quoted-pairs).  Returns the index after it. */
static size_t in__cfws(const char *f, size_t n, size_t i) {
  int depth = 0;
  for (; i < n; i++) {
    char ch = f[i];
    if (depth > 0 && ch == '\\') i++; /* a quoted-pair: the next octet is literal */
    else if (ch == '(') depth++;
    else if (depth > 0 && ch == ')') depth--;
    else if (depth == 0 && ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') break;
  }
  return i;
}

/* Is this Authentication-Results field (name and value, folded) one that
 * claims to come from us?  Its authserv-id is the first token (or quoted
 * string, RFC 8601 allows either) of the value, after CFWS. */
static bool in__forged(const char *f, size_t n, const char *hostname) {
  static const char name[] = "authentication-results";
  size_t i = sizeof name - 1;
  if (n < i || strncasecmp(f, name, i) != 0) return false;
  while (i < n && (f[i] == ' ' || f[i] == '\t')) i++;
  if (i == n || f[i] != ':') return false;
  i = in__cfws(f, n, i + 1);
  char id[256];
  size_t k = 0;
  if (i < n && f[i] == '"') { /* quoted-string: unescape it */
    for (i++; i < n && f[i] != '"' && k + 1 < sizeof id; i++) {
      if (f[i] == '\\' && i + 1 < n) i++;
      if (f[i] != '\r' && f[i] != '\n') id[k++] = f[i];
    }
  } else {
    for (; i < n && !strchr(";()\" \t\r\n", f[i]) && k + 1 < sizeof id; i++) id[k++] = f[i];
  }
  id[k] = '\0';
  return strcasecmp(id, hostname) == 0;
}

/* Copy the fields of the header block hdr[0..len) to out, a field running
 * to the next line that does not start with WSP: never one in__forged
 * names; with only_content, only Content-* fields (an inner entity's
 * header must not add fields to the message's own: From, Subject or a
 * result of ours spliced in from a decrypted or signed part).  An empty
 * line is not a field: it ends the block. */
static int in__copy_fields(const char *hdr, size_t len, const char *hostname, bool only_content,
                           struct buf *out) {
  size_t i = 0;
  int rc = 0;
  while (rc == 0 && i < len && hdr[i] != '\r' && hdr[i] != '\n') {
    size_t j = i;
    do {
      const char *nl = memchr(hdr + j, '\n', len - j);
      j = nl ? (size_t)(nl - hdr) + 1 : len;
    } while (j < len && (hdr[j] == ' ' || hdr[j] == '\t'));
    bool keep = !in__forged(hdr + i, j - i, hostname) &&
                (!only_content || (j - i > 8 && strncasecmp(hdr + i, "content-", 8) == 0));
    if (keep) rc = buf_append(out, hdr + i, j - i);
    i = j;
  }
  return rc;
}

/* The message to deliver: our header (when the flow decrypts/verifies),
 * then the original as it came when nothing was removed (its field order
 * kept), else the outer fields, a MIME-Version, the entity's Content-*
 * fields and its body. */
static int in__compose(struct in_ctx *c) {
  struct buf *out = &c->res->out;
  const struct incoming_request *rq = c->rq;
  int rc = buf_reserve(out, 256 + c->split.outer_len + c->deliver_len);
  if (rc == 0 && rq->flow->smime_decrypt_verify) rc = in__header(c, out);
  if (rc) return rc;
  struct mime_entity_info mi;
  mime_entity_info(c->deliver, c->deliver_len, &mi);
  if (c->deliver == rq->data) {
    rc = in__copy_fields(rq->data, mi.body_off, rq->hostname, false, out);
  } else {
    rc = in__copy_fields(c->split.outer, c->split.outer_len, rq->hostname, false, out);
    if (rc == 0) rc = buf_append(out, "MIME-Version: 1.0\r\n", 19);
    if (rc == 0) rc = in__copy_fields(c->deliver, mi.body_off, rq->hostname, true, out);
  }
  /* The empty line, then the body exactly as it is. */
  if (rc == 0) rc = buf_append(out, "\r\n", 2);
  if (rc == 0) rc = buf_append(out, c->deliver + mi.body_off, c->deliver_len - mi.body_off);
  return rc;
}

void incoming_process(struct hsm_worker *w, const struct incoming_request *rq, struct incoming_result *res) {
  memset(res, 0, sizeof *res);
  res->status = INCOMING_DONE;
  struct in_ctx c = {.w = w, .rq = rq, .res = res, .all_pass = true};
  /* The message itself is the first entity looked at (only its Content-*
   * fields count), so its body is never copied; the outer fields are
   * split from its header block alone. */
  struct mime_entity_info mi;
  mime_entity_info(rq->data, rq->len, &mi);
  int rc = mime_split_raw(rq->data, mi.body_off, &c.split);
  c.cur = c.deliver = rq->data;
  c.cur_len = c.deliver_len = rq->len;
  if (rc == 0 && rq->flow->smime_decrypt_verify) {
    mime_from_address(c.split.outer, c.split.outer_len, res->from, sizeof res->from);
    c.from_single = mime_from_single(c.split.outer, c.split.outer_len);
    int depth = 0;
    for (; rc == 0 && depth < INCOMING_MAX_LAYERS; depth++) rc = in__layer(&c);
    if (rc == 0) { /* a layer is left unopened: nothing below it was checked */
      c.all_pass = false;
      snprintf(res->reason, sizeof res->reason, "more than %d S/MIME layers: the innermost was not opened",
               INCOMING_MAX_LAYERS);
    }
    if (rc == 1) rc = 0;
  }
  if (rc == 0) {
    if (c.failed_decrypt) { /* delivered as it came (R32) */
      c.deliver = rq->data;
      c.deliver_len = rq->len;
    }
    in__conclude(&c);
    rc = in__compose(&c);
  }
  if (rc != 0 && res->status == INCOMING_DONE) {
    res->status = INCOMING_TEMP;
    snprintf(res->reason, sizeof res->reason, "cannot process the message now: %s", sgerr_str(rc));
  }
  if (res->status != INCOMING_DONE) buf_free(&res->out);
  for (size_t i = 0; i < c.n_hold; i++) buf_free(&c.hold[i]);
  mime_split_free(&c.split);
}

/* ---- harvesting ------------------------------------------------------------ */

/* Does the signer's identity prove From (its address, or its domain for
 * a domain certificate; "*.d" one label deeper)?  verify says so for a
 * signature that verified; a failed one (on_failed_verification) is
 * judged here the same way. */
static bool in__proves_from(const struct verify_result *v, const char *from) {
  const char *at = strrchr(from, '@');
  if (!at) return false;
  return v->identity_is_domain ? cert_dns_matches(v->identity, at + 1) : cert_email_matches(v->identity, from);
}

bool incoming_may_harvest(const struct config_flow_policy *flow, const struct incoming_result *res, char *key,
                          size_t cap, const char **why) {
  const struct verify_result *v = &res->sig;
  *why = NULL;
  if (!flow->harvest_enabled) *why = "harvesting is off for this flow policy";
  else if (!res->has_signature || !v->signer) *why = "no signer certificate";
  else if (v->status == VERIFY_FAIL && !flow->harvest_on_failed_verification) *why = "the signature did not verify";
  else if (v->status == VERIFY_POLICY && !strcmp(v->reason, "from-mismatch")) *why = "the signer does not match From";
  else if (v->status == VERIFY_POLICY && !strcmp(v->reason, "no-from")) *why = "the message has no From";
  else if (v->expired && !flow->harvest_expired) *why = "the certificate has expired";
  else if (v->self_signed && !flow->harvest_self_signed) *why = "the certificate is self-signed";
  else if (!v->chain_ok && !(v->self_signed && flow->harvest_self_signed)) *why = "the chain does not validate";
  else if (!v->identity[0]) *why = "the certificate names no address or domain";
  else if (strlen(v->identity) >= cap) *why = "the address is too long";
  else if (!in__proves_from(v, res->from)) *why = "the signer does not match From";
  if (*why) return false;
  /* A policy result other than the ones above (revocation, key usage,
   * key size) is not a key to encrypt to either. */
  if (v->status == VERIFY_POLICY && strcmp(v->reason, "expired") != 0 && strcmp(v->reason, "untrusted") != 0) {
    *why = "the signer did not pass the policy checks";
    return false;
  }
  /* A wildcard certificate is kept under the domain it proved. */
  const char *at = strrchr(res->from, '@');
  snprintf(key, cap, "%s", v->identity_is_domain && v->identity[0] == '*' ? at + 1 : v->identity);
  return true;
}

unsigned incoming_caps(const struct incoming_result *res) { return res->has_signature ? res->sig.caps : 0; }
