/*
 * smime - outgoing CMS (RFC 5652, RFC 8551) on a canonical MIME entity:
 * detached or opaque SignedData, EnvelopedData (AES-256-CBC) or
 * AuthEnvelopedData (AES-256-GCM), and the S/MIME framing around them.
 *
 * Owns nothing beyond one call: every OpenSSL object made here is freed
 * before returning; the one BIO_METHOD (a base64 sink into a struct buf)
 * is built once and never changes.  Trusts its caller: the entity is what
 * crypto/mime.c produced (Content-* fields, empty line, body, CRLF, 7-bit),
 * keys and certificates were checked by the key store.  It does not trust
 * the token: a failed private-key operation is reported as SG_EIO.
 *
 * Why the MIME framing is written here and not by SMIME_write_CMS:
 * SMIME_write_CMS writes a MIME-Version line we must not emit, uses LF
 * line ends through BIO_f_base64 (we need CRLF), and in detached mode
 * re-reads the content through its own copy loop.  Writing the framing
 * ourselves puts the entity into multipart/signed byte for byte (the
 * signed bytes are exactly the entity: CMS_BINARY, no canonicalisation),
 * and the DER goes straight from OpenSSL's streaming encoder through one
 * base64 pass into the caller's buffer, with no intermediate copy of the
 * content (the input is never copied; the output is reserved once).
 *
 * Streaming (opaque signing, encryption) uses BIO_new_NDEF, which is what
 * i2d_CMS_bio_stream does internally, but i2d_CMS_bio_stream ignores
 * every error of the copy and the final flush: we run the same steps and
 * check each, and for signatures also check that a signature was made.
 */
#include "crypto/smime.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "core/sgerr.h"

/* 57 input bytes make a 76-character base64 line, the RFC 2045 maximum. */
#define B64_LINE_IN 57
#define B64_LINE_OUT 76
/* Slack for certificates, attributes and framing when reserving output. */
#define SMIME_OVERHEAD 16384
/* BIO_write takes an int: feed large entities in pieces. */
#define FEED_CHUNK (1u << 30)

static const char P7M_HEADER[] =
    "Content-Type: application/pkcs7-mime; smime-type=%s; name=smime.p7m\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename=smime.p7m\r\n"
    "\r\n";

/* What a failed private-key operation is called: the caller then asks the
 * hsm worker whether the token is reachable. */
static const char SIGN_FAILED[] = "signing failed (the token refused or is unreachable)";

static const char P7S_HEADER[] =
    "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename=smime.p7s\r\n"
    "\r\n";

/* ---- errors ---------------------------------------------------------------- */

/* Fill err with what failed, plus OpenSSL's most recent reason if it left
 * one, and clear the thread's OpenSSL error queue so the next operation on
 * this worker thread starts clean.  Returns code. */
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  unsigned long e = ERR_peek_last_error();
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (e != 0 && n >= 0 && (size_t)n + 3 < errlen) {
      const char *why = ERR_reason_error_string(e);
      if (why != NULL) snprintf(err + n, errlen - (size_t)n, ": %s", why);
    }
  }
  ERR_clear_error();
  return code;
}

/* ---- a BIO that base64-encodes into a struct buf ------------------------ */

/* OpenSSL's BIO_f_base64 ends lines with LF only and would need a second
 * pass (and copy) to become CRLF; this sink encodes whole lines straight
 * into the reserved tail of the output buffer. */
struct b64sink {
  struct buf *out;
  unsigned char rem[B64_LINE_IN]; /* a partial line waiting for more bytes */
  size_t nrem;
  bool nomem;
};

/* Encode n bytes (whole lines, except for the final call) as CRLF lines. */
static int b64_emit(struct b64sink *s, const unsigned char *p, size_t n) {
  size_t lines = (n + B64_LINE_IN - 1) / B64_LINE_IN;
  /* +1: EVP_EncodeBlock writes a NUL after each line, overwritten by CR. */
  if (buf_reserve(s->out, lines * (B64_LINE_OUT + 2) + 1) != 0) return s->nomem = true, -1;
  unsigned char *d = (unsigned char *)s->out->data + s->out->len;
  for (; n > 0;) {
    size_t take = n < B64_LINE_IN ? n : B64_LINE_IN;
    int w = EVP_EncodeBlock(d, p, (int)take);
    d[w] = '\r';
    d[w + 1] = '\n';
    d += w + 2;
    p += take;
    n -= take;
  }
  s->out->len = (size_t)((char *)d - s->out->data);
  return 0;
}

static int b64sink_write(BIO *b, const char *data, int len) {
  struct b64sink *s = BIO_get_data(b);
  const unsigned char *p = (const unsigned char *)data;
  size_t n = len > 0 ? (size_t)len : 0;
  if (s->nrem > 0) {
    size_t take = B64_LINE_IN - s->nrem < n ? B64_LINE_IN - s->nrem : n;
    memcpy(s->rem + s->nrem, p, take);
    s->nrem += take;
    p += take;
    n -= take;
    if (s->nrem < B64_LINE_IN) return len;
    if (b64_emit(s, s->rem, B64_LINE_IN) != 0) return -1;
    s->nrem = 0;
  }
  size_t whole = n - n % B64_LINE_IN;
  if (whole > 0 && b64_emit(s, p, whole) != 0) return -1;
  memcpy(s->rem, p + whole, n - whole);
  s->nrem = n - whole;
  return len;
}

static long b64sink_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  /* Flushes arrive from the encoders above; the tail is written by
   * b64sink_finish once the structure is complete. */
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int b64sink_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *b64sink_method;
static pthread_once_t b64sink_once = PTHREAD_ONCE_INIT;

static void b64sink_method_init(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sealgate base64 into buf");
  if (m != NULL && (BIO_meth_set_write(m, b64sink_write) != 1 || BIO_meth_set_ctrl(m, b64sink_ctrl) != 1 ||
                    BIO_meth_set_create(m, b64sink_create) != 1)) {
    BIO_meth_free(m);
    m = NULL;
  }
  b64sink_method = m;
}

static BIO *b64sink_new(struct b64sink *s, struct buf *out) {
  pthread_once(&b64sink_once, b64sink_method_init);
  if (b64sink_method == NULL) return NULL;
  memset(s, 0, sizeof *s);
  s->out = out;
  BIO *b = BIO_new(b64sink_method);
  if (b != NULL) BIO_set_data(b, s);
  return b;
}

/* The last, short line (base64 padding included). */
static int b64sink_finish(struct b64sink *s) {
  if (s->nomem) return SG_ENOMEM;
  if (s->nrem > 0 && b64_emit(s, s->rem, s->nrem) != 0) return SG_ENOMEM;
  s->nrem = 0;
  return 0;
}

/* ---- streaming through OpenSSL's encoders ------------------------------- */

static int feed(BIO *b, const char *p, size_t len) {
  while (len > 0) {
    int n = BIO_write(b, p, (int)(len < FEED_CHUNK ? len : FEED_CHUNK));
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return BIO_flush(b) > 0 ? 0 : -1;
}

/* Free the BIOs OpenSSL stacked on top of base, leaving base. */
static void pop_until(BIO *top, BIO *base) {
  while (top != NULL && top != base) {
    BIO *next = BIO_pop(top);
    BIO_free(top);
    top = next;
  }
}

/*
 * Write cms, with entity as its (encapsulated) content, as base64 BER to
 * out.  BIO_new_NDEF runs CMS_dataInit (for EnvelopedData this is where each
 * recipient's key is wrapped); the final flush runs CMS_dataFinal (the
 * signature, the GCM tag).  what names the operation for err; a failure
 * while streaming is reported as failed_msg with code failed_code.
 */
static int stream_cms(CMS_ContentInfo *cms, const char *entity, size_t len, struct buf *out,
                      const char *what, int failed_code, const char *failed_msg, char *err,
                      size_t errlen) {
  struct b64sink s;
  BIO *sink = b64sink_new(&s, out);
  if (sink == NULL) return fail(err, errlen, SG_ENOMEM, "%s: out of memory", what);
  int rc = 0;
  BIO *top = BIO_new_NDEF(sink, (ASN1_VALUE *)cms, ASN1_ITEM_rptr(CMS_ContentInfo));
  if (top == NULL)
    rc = fail(err, errlen, s.nomem ? SG_ENOMEM : SG_EINVAL, "%s: could not start the CMS encoder", what);
  else if (feed(top, entity, len) != 0)
    rc = s.nomem ? fail(err, errlen, SG_ENOMEM, "%s: out of memory", what)
                 : fail(err, errlen, failed_code, "%s", failed_msg);
  pop_until(top, sink);
  if (rc == 0 && b64sink_finish(&s) != 0) rc = fail(err, errlen, SG_ENOMEM, "%s: out of memory", what);
  BIO_free(sink);
  return rc;
}

/* DER of a finished (detached) structure, base64 into out. */
static int write_der(CMS_ContentInfo *cms, struct buf *out, char *err, size_t errlen) {
  struct b64sink s;
  BIO *sink = b64sink_new(&s, out);
  if (sink == NULL) return fail(err, errlen, SG_ENOMEM, "signature encoding: out of memory");
  int rc = i2d_CMS_bio(sink, cms) == 1 ? b64sink_finish(&s) : SG_ENOMEM;
  BIO_free(sink);
  return rc == 0 ? 0 : fail(err, errlen, rc, "signature encoding failed");
}

/* Room for base64 of n bytes plus framing, so the output grows once. */
static int reserve_for(struct buf *out, size_t n, bool base64) {
  size_t body = n + SMIME_OVERHEAD;
  if (base64) body = body / B64_LINE_IN * (B64_LINE_OUT + 2) + B64_LINE_OUT + 2;
  return buf_reserve(out, body);
}

/* ---- signing ------------------------------------------------------------- */

/*
 * Our SMIMECapabilities, in order of preference (RFC 8551 2.5.2).  GCM and
 * CBC OIDs carry no parameters; RSAES-OAEP carries an empty
 * RSAES-OAEP-params SEQUENCE, which means its defaults (RFC 3560 section 5):
 * the OAEP we produce when asked is OpenSSL's default, SHA-1 and MGF1-SHA-1.
 */
static int add_smimecap(CMS_SignerInfo *si) {
  static const unsigned char empty_seq[] = {0x30, 0x00};
  static const int aes[] = {NID_aes_256_gcm, NID_aes_128_gcm, NID_aes_256_cbc, NID_aes_128_cbc};
  STACK_OF(X509_ALGOR) *caps = NULL;
  int ok = 1;
  for (size_t i = 0; ok && i < sizeof aes / sizeof aes[0]; i++)
    ok = CMS_add_simple_smimecap(&caps, aes[i], -1);
  X509_ALGOR *oaep = ok ? X509_ALGOR_new() : NULL;
  ASN1_STRING *params = oaep != NULL ? ASN1_STRING_type_new(V_ASN1_SEQUENCE) : NULL;
  ok = params != NULL && ASN1_STRING_set(params, empty_seq, sizeof empty_seq) == 1 &&
       X509_ALGOR_set0(oaep, OBJ_nid2obj(NID_rsaesOaep), V_ASN1_SEQUENCE, params) == 1;
  if (ok)
    params = NULL; /* now oaep's */
  ok = ok && sk_X509_ALGOR_push(caps, oaep) > 0;
  if (ok) oaep = NULL; /* now caps' */
  ok = ok && CMS_add_smimecap(si, caps) == 1;
  ASN1_STRING_free(params);
  X509_ALGOR_free(oaep);
  sk_X509_ALGOR_pop_free(caps, X509_ALGOR_free);
  return ok ? 0 : -1;
}

/* The chain, without the signer's own certificate or repeats (CMS_add1_cert
 * refuses a certificate already present). */
static int add_chain(CMS_ContentInfo *cms, const struct smime_signer *s) {
  for (int i = 0; i < sk_X509_num(s->chain); i++) {
    X509 *x = sk_X509_value(s->chain, i);
    bool dup = X509_cmp(x, s->cert) == 0;
    for (int j = 0; !dup && j < i; j++) dup = X509_cmp(x, sk_X509_value(s->chain, j)) == 0;
    if (!dup && CMS_add1_cert(cms, x) != 1) return -1;
  }
  return 0;
}

/*
 * RSA-PSS with a salt as long as the digest (RFC 4056 3.1, what peers
 * expect) and MGF1 with the signing digest (OpenSSL's default).  With
 * CMS_KEY_PARAM, OpenSSL fills signatureAlgorithm only when it signs, but a
 * streaming encoder writes the SignerInfo's shape before that: give it the
 * algorithm now (signing replaces it, with the PSS parameters).
 */
static int set_pss(CMS_SignerInfo *si) {
  EVP_PKEY_CTX *pctx = CMS_SignerInfo_get0_pkey_ctx(si);
  X509_ALGOR *sigalg = NULL;
  CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sigalg);
  if (pctx == NULL || sigalg == NULL || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0)
    return -1;
  return X509_ALGOR_set0(sigalg, OBJ_nid2obj(NID_rsassaPss), V_ASN1_UNDEF, NULL) == 1 ? 0 : -1;
}

/*
 * A SignedData with one SignerInfo, signed attributes set up but not yet
 * signed (that happens in CMS_dataFinal, after the content is digested).
 * PSS only for RSA keys; an EC key always makes ECDSA-with-SHA256.
 */
static int build_signed(const struct smime_signer *s, bool detached, CMS_ContentInfo **cms_out,
                        CMS_SignerInfo **si_out, char *err, size_t errlen) {
  unsigned flags = CMS_BINARY | CMS_PARTIAL | CMS_NOSMIMECAP | (detached ? CMS_DETACHED : CMS_STREAM);
  bool pss = s->signature == SMIME_SIG_PSS && EVP_PKEY_get_base_id(s->key) == EVP_PKEY_RSA;
  CMS_ContentInfo *cms = CMS_sign(NULL, NULL, NULL, NULL, flags);
  if (cms == NULL) return fail(err, errlen, SG_ENOMEM, "signing: could not create SignedData");
  CMS_SignerInfo *si = CMS_add1_signer(cms, s->cert, s->key, EVP_sha256(), flags | (pss ? CMS_KEY_PARAM : 0));
  int rc = 0;
  if (si == NULL) {
    rc = fail(err, errlen, SG_EINVAL, "signing: the signer key does not fit its certificate");
  } else if (pss && set_pss(si) != 0) {
    rc = fail(err, errlen, SG_EIO, "signing: the signer key refused RSA-PSS");
  } else if (add_smimecap(si) != 0) {
    rc = fail(err, errlen, SG_ENOMEM, "signing: could not add SMIMECapabilities");
  } else if (add_chain(cms, s) != 0) {
    rc = fail(err, errlen, SG_ENOMEM, "signing: could not add the chain certificates");
  } else if (!detached && CMS_set_detached(cms, 0) != 1) {
    rc = fail(err, errlen, SG_ENOMEM, "signing: could not set up the content");
  }
  if (rc != 0) {
    CMS_ContentInfo_free(cms);
    return rc;
  }
  *cms_out = cms;
  *si_out = si;
  return 0;
}

/* Digest the entity and sign: the detached structure holds no content. */
static int sign_detached_cms(CMS_ContentInfo *cms, const char *entity, size_t len, char *err,
                             size_t errlen) {
  BIO *chain = CMS_dataInit(cms, NULL);
  if (chain == NULL) return fail(err, errlen, SG_ENOMEM, "signing: could not start the digest");
  int rc = 0;
  if (feed(chain, entity, len) != 0)
    rc = fail(err, errlen, SG_ENOMEM, "signing: digesting the content failed");
  else if (CMS_dataFinal(cms, chain) != 1)
    rc = fail(err, errlen, SG_EIO, "%s", SIGN_FAILED);
  BIO_free_all(chain);
  return rc;
}

/* A boundary that cannot occur in the entity (RFC 2046 5.1.1). */
static int make_boundary(const char *entity, size_t len, char *b, size_t cap) {
  for (int tries = 0; tries < 8; tries++) {
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1) return -1;
    int n = snprintf(b, cap, "----sealgate-");
    for (size_t i = 0; i < sizeof r; i++) n += snprintf(b + n, cap - (size_t)n, "%02x", r[i]);
    if (memmem(entity, len, b, (size_t)n) == NULL) return 0;
  }
  return -1;
}

/* The multipart/signed framing around an entity: what goes before it
 * (header, preamble, first boundary) and after it (the signature part and
 * the closing boundary).  Appended to pre and post. */
static int detached_parts(CMS_ContentInfo *cms, const char *entity, size_t len, struct buf *pre,
                          struct buf *post, char *err, size_t errlen) {
  char bd[64];
  if (make_boundary(entity, len, bd, sizeof bd) != 0)
    return fail(err, errlen, SG_EIO, "signing: no random boundary");
  if (buf_appendf(pre,
                  "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; "
                  "micalg=sha-256; boundary=\"%s\"\r\n\r\n"
                  "This is an S/MIME signed message\r\n\r\n--%s\r\n",
                  bd, bd) != 0 ||
      buf_appendf(post, "\r\n--%s\r\n%s", bd, P7S_HEADER) != 0)
    return fail(err, errlen, SG_ENOMEM, "signing: out of memory");
  int rc = write_der(cms, post, err, errlen);
  if (rc == 0 && buf_appendf(post, "\r\n--%s--\r\n", bd) != 0)
    rc = fail(err, errlen, SG_ENOMEM, "signing: out of memory");
  return rc;
}

static int write_detached(CMS_ContentInfo *cms, const char *entity, size_t len, struct buf *out,
                          char *err, size_t errlen) {
  struct buf post = BUF_INIT;
  int rc = reserve_for(out, len, false) != 0 ? fail(err, errlen, SG_ENOMEM, "signing: out of memory") : 0;
  if (rc == 0) rc = detached_parts(cms, entity, len, out, &post, err, errlen);
  if (rc == 0 && (buf_append(out, entity, len) != 0 || buf_append(out, post.data, post.len) != 0))
    rc = fail(err, errlen, SG_ENOMEM, "signing: out of memory");
  buf_free(&post);
  return rc;
}

int smime_sign_around(struct buf *io, size_t off, const struct smime_signer *s, char *err, size_t errlen) {
  if (err != NULL && errlen > 0) err[0] = '\0';
  if (io == NULL || off > io->len || s == NULL || s->key == NULL || s->cert == NULL)
    return fail(err, errlen, SG_EINVAL, "signing: no entity, key or certificate");
  const char *entity = io->data + off;
  size_t len = io->len - off;
  CMS_ContentInfo *cms = NULL;
  CMS_SignerInfo *si = NULL;
  struct buf pre = BUF_INIT, post = BUF_INIT;
  int rc = build_signed(s, true, &cms, &si, err, errlen);
  if (rc == 0) rc = sign_detached_cms(cms, entity, len, err, errlen);
  if (rc == 0) rc = detached_parts(cms, entity, len, &pre, &post, err, errlen);
  /* Make room, slide the entity up and put the framing around it: the
   * entity is never held twice. */
  if (rc == 0 && buf_reserve(io, pre.len + post.len) != 0) rc = fail(err, errlen, SG_ENOMEM, "signing: out of memory");
  if (rc == 0) {
    memmove(io->data + off + pre.len, io->data + off, len);
    memcpy(io->data + off, pre.data, pre.len);
    io->len += pre.len;
    buf_append(io, post.data, post.len); /* room reserved above: cannot fail */
  }
  buf_free(&pre);
  buf_free(&post);
  CMS_ContentInfo_free(cms);
  return rc;
}

int smime_sign(const char *entity, size_t len, const struct smime_signer *s, enum smime_sign_mode mode,
               struct buf *out, char *err, size_t errlen) {
  if (err != NULL && errlen > 0) err[0] = '\0';
  if (entity == NULL || s == NULL || s->key == NULL || s->cert == NULL || out == NULL)
    return fail(err, errlen, SG_EINVAL, "signing: no entity, key or certificate");
  bool detached = mode == SMIME_SIGN_DETACHED;
  CMS_ContentInfo *cms = NULL;
  CMS_SignerInfo *si = NULL;
  int rc = build_signed(s, detached, &cms, &si, err, errlen);
  if (rc != 0) return rc;
  size_t start = out->len;
  if (detached) {
    rc = sign_detached_cms(cms, entity, len, err, errlen);
    if (rc == 0) rc = write_detached(cms, entity, len, out, err, errlen);
  } else if (reserve_for(out, len, true) != 0 || buf_appendf(out, P7M_HEADER, "signed-data") != 0) {
    rc = fail(err, errlen, SG_ENOMEM, "signing: out of memory");
  } else {
    rc = stream_cms(cms, entity, len, out, "signing", SG_EIO, SIGN_FAILED, err, errlen);
    /* The signature is made in the encoder's final flush; be sure it was. */
    if (rc == 0 && ASN1_STRING_length(CMS_SignerInfo_get0_signature(si)) <= 0)
      rc = fail(err, errlen, SG_EIO, "%s", SIGN_FAILED);
  }
  if (rc != 0) out->len = start;
  CMS_ContentInfo_free(cms);
  return rc;
}

/* ---- encryption ---------------------------------------------------------- */

/* Recipient n (from 1, for the message) by its key: RSA key transport
 * (PKCS#1 v1.5, or OAEP with OpenSSL's default SHA-1 parameters, which is
 * what our SMIMECapabilities announce), or ECDH key agreement for EC. */
static int add_recipient(CMS_ContentInfo *cms, X509 *x, int n, enum smime_key_transport kt, char *err,
                         size_t errlen) {
  EVP_PKEY *pub = X509_get0_pubkey(x);
  int type = pub != NULL ? EVP_PKEY_get_base_id(pub) : EVP_PKEY_NONE;
  if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC)
    return fail(err, errlen, SG_EINVAL, "recipient certificate %d has an unusable public key", n);
  bool oaep = type == EVP_PKEY_RSA && kt == SMIME_KT_OAEP;
  CMS_RecipientInfo *ri =
      CMS_add1_recipient_cert(cms, x, CMS_BINARY | CMS_PARTIAL | (oaep ? CMS_KEY_PARAM : 0));
  if (ri == NULL)
    return fail(err, errlen, SG_EINVAL, "recipient certificate %d has an unusable public key", n);
  if (oaep && EVP_PKEY_CTX_set_rsa_padding(CMS_RecipientInfo_get0_pkey_ctx(ri), RSA_PKCS1_OAEP_PADDING) <= 0)
    return fail(err, errlen, SG_EINVAL, "recipient certificate %d: RSA-OAEP refused", n);
  return 0;
}

int smime_encrypt(const char *entity, size_t len, STACK_OF(X509) *rcpts, enum smime_cipher cipher,
                  enum smime_key_transport kt, struct buf *out, char *err, size_t errlen) {
  if (err != NULL && errlen > 0) err[0] = '\0';
  if (entity == NULL || out == NULL || sk_X509_num(rcpts) <= 0)
    return fail(err, errlen, SG_EINVAL, "encryption: no entity or no recipient certificate");
  bool gcm = cipher == SMIME_AES256_GCM;
  /* OpenSSL 3.0 makes AuthEnvelopedData for a GCM cipher. */
  CMS_ContentInfo *cms = CMS_encrypt(NULL, NULL, gcm ? EVP_aes_256_gcm() : EVP_aes_256_cbc(),
                                     CMS_BINARY | CMS_PARTIAL | CMS_STREAM);
  if (cms == NULL) return fail(err, errlen, SG_ENOMEM, "encryption: could not create EnvelopedData");
  int rc = 0;
  for (int i = 0; rc == 0 && i < sk_X509_num(rcpts); i++)
    rc = add_recipient(cms, sk_X509_value(rcpts, i), i + 1, kt, err, errlen);
  size_t start = out->len;
  if (rc == 0 && (reserve_for(out, len, true) != 0 ||
                  buf_appendf(out, P7M_HEADER, gcm ? "authEnveloped-data" : "enveloped-data") != 0))
    rc = fail(err, errlen, SG_ENOMEM, "encryption: out of memory");
  if (rc == 0) rc = stream_cms(cms, entity, len, out, "encryption", SG_ENOMEM, "encryption failed", err, errlen);
  if (rc != 0) out->len = start;
  CMS_ContentInfo_free(cms);
  return rc;
}

/* ---- the whole message --------------------------------------------------- */

int smime_compose(const char *outer, size_t outer_len, const char *entity, size_t len, struct buf *out) {
  static const char mv[] = "MIME-Version: 1.0\r\n";
  if ((outer == NULL && outer_len > 0) || (entity == NULL && len > 0) || out == NULL) return SG_EINVAL;
  size_t start = out->len;
  int rc = buf_reserve(out, outer_len + sizeof mv + len);
  if (rc == 0 && outer_len > 0) rc = buf_append(out, outer, outer_len);
  if (rc == 0) rc = buf_append(out, mv, sizeof mv - 1);
  if (rc == 0 && len > 0) rc = buf_append(out, entity, len);
  if (rc != 0) out->len = start;
  return rc;
}
