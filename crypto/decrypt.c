/*
 * decrypt - opening incoming EnvelopedData and AuthEnvelopedData with the
 * organisation's keys in the token (R6, R14; DESIGN.md "S/MIME").
 *
 * Owns nothing beyond one call: the parsed CMS structure, a 16 KiB chunk
 * of plaintext on the stack (wiped before return) and the detail line.
 * Callers: crypto/incoming.c on a crypto worker thread, with that
 * thread's hsm_worker; tests; bench.  Trusts the candidate keys (the
 * token's own certificates); every byte of the CMS is untrusted.
 *
 * Order of work, each step before anything costlier:
 *  1. size budget, parse, nothing left over, content type;
 *  2. the content-encryption algorithm against the content type (EFAIL),
 *     read from the DER by a small walker because OpenSSL 3.0 has no
 *     getter for it, and checked again on the cipher context OpenSSL
 *     actually builds, before the first byte of plaintext;
 *  3. the RecipientInfo budget;
 *  4. (RecipientInfo, candidate) pairs whose identifiers match (issuer and
 *     serial or subject key identifier, OpenSSL's own comparisons), each
 *     tried once, at most max_attempts private-key operations in all;
 *  5. the content, streamed into the caller's sink.
 *
 * Oracles: PKCS#1 v1.5 key transport on a long-lived key is a
 * Bleichenbacher oracle if its failures can be told apart.  Every failure
 * that depends on the key or the ciphertext is SG_EPERM with the same
 * words in the detail, and when every key operation failed the content is
 * still decrypted (OpenSSL then uses a random key) into nothing, so such a
 * message costs what a good one costs.  The result never goes back to the
 * sender anyway (the caller delivers the message as it came).
 */
#include "crypto/decrypt.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/buffer.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>

#include "core/sgerr.h"

/* Nesting accepted below an indefinite-length (BER) element we skip. */
#define DECRYPT__BER_DEPTH 32
#define DECRYPT__CHUNK 16384

/* One call's state, on decrypt_cms's stack. */
struct decrypt__call {
  struct hsm_worker *w;
  const struct decrypt_key *keys;
  size_t n_keys;
  struct decrypt_limits lim;
  CMS_ContentInfo *cms; /* owned; freed by decrypt_cms */
  bool auth;            /* AuthEnvelopedData */
  const char *kind;     /* "enveloped-data" / "authEnveloped-data" */
  char cipher[64];      /* the content-encryption algorithm, for the detail */
  size_t matched;       /* pairs whose identifiers matched */
  size_t ops;           /* private-key operations made */
  const char *opened;   /* the label of the key that opened it */
  char *detail;         /* the caller's, dlen bytes */
  size_t dlen, dused;
};

/* Appends to the detail line, silently cut at its end. */
static void decrypt__say(struct decrypt__call *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void decrypt__say(struct decrypt__call *c, const char *fmt, ...) {
  if (c->detail == NULL || c->dlen == 0 || c->dused + 1 >= c->dlen) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(c->detail + c->dused, c->dlen - c->dused, fmt, ap);
  va_end(ap);
  if (n > 0) c->dused = c->dused + (size_t)n < c->dlen ? c->dused + (size_t)n : c->dlen - 1;
}

/* ---- the content-encryption algorithm, from the DER ----------------------- */

/* The header of the element at *p (not past end).  On success *p is at its
 * contents, *cend at their end (end itself for an indefinite length), and
 * the return value is ASN1_get_object's (0x20 constructed, 0x01
 * indefinite); -1 on malformed input. */
static int decrypt__header(const unsigned char **p, const unsigned char *end, int *tag, int *cls,
                           const unsigned char **cend) {
  const unsigned char *q = *p;
  long plen = 0;
  int r = ASN1_get_object(&q, &plen, tag, cls, end - *p);
  if (r & 0x80) return -1;
  *cend = (r & 0x01) ? end : q + plen;
  *p = q;
  return r;
}

/* Skips the element at *p, of the given class and tag (tag -1: any),
 * following indefinite lengths down to depth levels. */
static int decrypt__skip(const unsigned char **p, const unsigned char *end, int cls, int tag, int depth) {
  const unsigned char *q = *p, *cend;
  int t, cl, r = decrypt__header(&q, end, &t, &cl, &cend);
  if (r < 0 || (tag >= 0 && (t != tag || cl != cls))) return -1;
  if (!(r & 0x01)) {
    *p = cend;
    return 0;
  }
  if (depth == 0) return -1;
  while (end - q >= 2 && (q[0] != 0 || q[1] != 0))
    if (decrypt__skip(&q, end, 0, -1, depth - 1) != 0) return -1;
  if (end - q < 2) return -1;
  *p = q + 2; /* the end-of-contents octets */
  return 0;
}

/* Steps into the constructed element at *p of the given class and tag:
 * *p moves to its contents and *end to their end. */
static int decrypt__enter(const unsigned char **p, const unsigned char **end, int cls, int tag) {
  const unsigned char *cend;
  int t, cl, r = decrypt__header(p, *end, &t, &cl, &cend);
  if (r < 0 || !(r & V_ASN1_CONSTRUCTED) || t != tag || cl != cls) return -1;
  *end = cend;
  return 0;
}

static bool decrypt__next_is(const unsigned char *p, const unsigned char *end, int cls, int tag) {
  const unsigned char *cend;
  int t, cl;
  return decrypt__header(&p, end, &t, &cl, &cend) >= 0 && t == tag && cl == cls;
}

/*
 * The contentEncryptionAlgorithm of a ContentInfo holding an EnvelopedData
 * (RFC 5652 6.1) or AuthEnvelopedData (RFC 5083 2.1); both start
 *   SEQUENCE { version INTEGER, originatorInfo [0] IMPLICIT OPTIONAL,
 *              recipientInfos SET, SEQUENCE { contentType OID,
 *              contentEncryptionAlgorithm AlgorithmIdentifier, ... } ... }
 * BER (indefinite lengths) is accepted as OpenSSL's parser accepts it.
 * *alg_out is the caller's (X509_ALGOR_free).
 */
static int decrypt__content_alg(const unsigned char *der, size_t len, X509_ALGOR **alg_out) {
  const unsigned char *p = der, *end = der + len;
  const int U = V_ASN1_UNIVERSAL, C = V_ASN1_CONTEXT_SPECIFIC, D = DECRYPT__BER_DEPTH;
  if (decrypt__enter(&p, &end, U, V_ASN1_SEQUENCE) || decrypt__skip(&p, end, U, V_ASN1_OBJECT, D) ||
      decrypt__enter(&p, &end, C, 0) || decrypt__enter(&p, &end, U, V_ASN1_SEQUENCE) ||
      decrypt__skip(&p, end, U, V_ASN1_INTEGER, D))
    return -1;
  if (decrypt__next_is(p, end, C, 0) && decrypt__skip(&p, end, C, 0, D)) return -1;
  if (decrypt__skip(&p, end, U, V_ASN1_SET, D) || decrypt__enter(&p, &end, U, V_ASN1_SEQUENCE) ||
      decrypt__skip(&p, end, U, V_ASN1_OBJECT, D))
    return -1;
  *alg_out = d2i_X509_ALGOR(NULL, &p, end - p);
  return *alg_out ? 0 : -1;
}

/*
 * The GCM tag of an AuthEnvelopedData (RFC 5083 2.1, RFC 5084 3.2):
 * OpenSSL 3.0 checks as many tag octets as the mac OCTET STRING holds, so
 * a 1-octet mac would make forging a message a matter of 256 tries.  The
 * mac must be as long as GCMParameters' aes-ICVlen (default 12) says, and
 * that 12 to 16 octets.  Walks
 *   ContentInfo { OID, [0] AuthEnvelopedData { version, [0]?, SET,
 *   authEncryptedContentInfo SEQUENCE, [1] authAttrs?, mac OCTET STRING } }
 * Returns the mac length, or -1.
 */
static long decrypt__mac_len(const unsigned char *der, size_t len) {
  const unsigned char *p = der, *end = der + len, *cend;
  const int U = V_ASN1_UNIVERSAL, C = V_ASN1_CONTEXT_SPECIFIC, D = DECRYPT__BER_DEPTH;
  if (decrypt__enter(&p, &end, U, V_ASN1_SEQUENCE) || decrypt__skip(&p, end, U, V_ASN1_OBJECT, D) ||
      decrypt__enter(&p, &end, C, 0) || decrypt__enter(&p, &end, U, V_ASN1_SEQUENCE) ||
      decrypt__skip(&p, end, U, V_ASN1_INTEGER, D))
    return -1;
  if (decrypt__next_is(p, end, C, 0) && decrypt__skip(&p, end, C, 0, D)) return -1;
  if (decrypt__skip(&p, end, U, V_ASN1_SET, D) || decrypt__skip(&p, end, U, V_ASN1_SEQUENCE, D)) return -1;
  if (decrypt__next_is(p, end, C, 1) && decrypt__skip(&p, end, C, 1, D)) return -1;
  int tag, cls, r = decrypt__header(&p, end, &tag, &cls, &cend);
  if (r != 0 || tag != V_ASN1_OCTET_STRING || cls != U) return -1; /* primitive, definite */
  return (long)(cend - p);
}

/* aes-ICVlen of a GCMParameters SEQUENCE { aes-nonce OCTET STRING,
 * aes-ICVlen INTEGER DEFAULT 12 }; -1 if malformed. */
static long decrypt__icv_len(const X509_ALGOR *alg) {
  const ASN1_TYPE *t = alg->parameter;
  if (t == NULL || t->type != V_ASN1_SEQUENCE) return -1;
  const unsigned char *p = t->value.sequence->data, *end = p + t->value.sequence->length;
  if (decrypt__enter(&p, &end, V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE) ||
      decrypt__skip(&p, end, V_ASN1_UNIVERSAL, V_ASN1_OCTET_STRING, DECRYPT__BER_DEPTH))
    return -1;
  if (p == end) return 12;
  ASN1_INTEGER *n = d2i_ASN1_INTEGER(NULL, &p, end - p);
  long v = n ? ASN1_INTEGER_get(n) : -1;
  ASN1_INTEGER_free(n);
  return v;
}

static int decrypt__check_mac(struct decrypt__call *c, const unsigned char *der, size_t len, const X509_ALGOR *alg) {
  long mac = decrypt__mac_len(der, len), icv = decrypt__icv_len(alg);
  if (mac < 12 || mac > 16 || mac != icv) {
    decrypt__say(c, "GCM tag of %ld octets (aes-ICVlen %ld) refused: 12 to 16, as announced", mac, icv);
    return SG_EPERM;
  }
  return 0;
}

/* ---- cipher against content type (EFAIL) ------------------------------------ */

static bool decrypt__is_aead(const EVP_CIPHER *ci) {
  int mode = EVP_CIPHER_get_mode(ci);
  return (EVP_CIPHER_get_flags(ci) & EVP_CIPH_FLAG_AEAD_CIPHER) != 0 || mode == EVP_CIPH_GCM_MODE ||
         mode == EVP_CIPH_CCM_MODE || mode == EVP_CIPH_OCB_MODE || mode == EVP_CIPH_SIV_MODE;
}

/* AuthEnvelopedData carries GCM (RFC 5084, all OpenSSL 3.0 opens), and
 * EnvelopedData anything but an AEAD cipher: an AEAD cipher there has no
 * tag, hence malleable CTR-mode plaintext released unchecked. */
static int decrypt__cipher_fits(struct decrypt__call *c, const EVP_CIPHER *ci) {
  if (c->auth && EVP_CIPHER_get_mode(ci) != EVP_CIPH_GCM_MODE) {
    decrypt__say(c, "non-AEAD cipher %s in authEnveloped-data refused (EFAIL)", c->cipher);
    return SG_EPERM;
  }
  if (!c->auth && decrypt__is_aead(ci)) {
    decrypt__say(c, "AEAD cipher %s in enveloped-data refused (EFAIL)", c->cipher);
    return SG_EPERM;
  }
  return 0;
}

static int decrypt__check_cipher(struct decrypt__call *c, const unsigned char *der, size_t len) {
  X509_ALGOR *alg = NULL;
  if (decrypt__content_alg(der, len, &alg) != 0) {
    decrypt__say(c, "%s: no content-encryption algorithm found", c->kind);
    return SG_EINVAL;
  }
  int nid = OBJ_obj2nid(alg->algorithm);
  if (nid != NID_undef)
    snprintf(c->cipher, sizeof c->cipher, "%s", OBJ_nid2ln(nid)); /* "aes-256-gcm" */
  else
    OBJ_obj2txt(c->cipher, sizeof c->cipher, alg->algorithm, 1);
  decrypt__say(c, "%s %s: ", c->kind, c->cipher);
  const EVP_CIPHER *ci = nid == NID_undef ? NULL : EVP_get_cipherbynid(nid);
  int rc = 0;
  if (ci == NULL) {
    decrypt__say(c, "content-encryption algorithm not supported");
    rc = SG_EPERM;
  }
  if (rc == 0) rc = decrypt__cipher_fits(c, ci);
  if (rc == 0 && c->auth) rc = decrypt__check_mac(c, der, len, alg);
  X509_ALGOR_free(alg);
  return rc;
}

/* ---- parsing ------------------------------------------------------------------ */

static int decrypt__parse(struct decrypt__call *c, const unsigned char *der, size_t len) {
  if (len > c->lim.max_size || len > LONG_MAX) {
    decrypt__say(c, "CMS of %zu bytes over the budget of %zu", len, c->lim.max_size);
    return SG_ELIMIT;
  }
  const unsigned char *p = der;
  c->cms = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  if (c->cms == NULL) {
    decrypt__say(c, "not a CMS ContentInfo");
    return SG_EINVAL;
  }
  if (p != der + len) {
    decrypt__say(c, "%zu bytes after the CMS ContentInfo", (size_t)(der + len - p));
    return SG_EINVAL;
  }
  int nid = OBJ_obj2nid(CMS_get0_type(c->cms));
  if (nid != NID_pkcs7_enveloped && nid != NID_id_smime_ct_authEnvelopedData) {
    decrypt__say(c, "content type %s is not enveloped data", nid == NID_undef ? "(unknown)" : OBJ_nid2sn(nid));
    return SG_EINVAL;
  }
  c->auth = nid == NID_id_smime_ct_authEnvelopedData;
  c->kind = c->auth ? "authEnveloped-data" : "enveloped-data";
  return decrypt__check_cipher(c, der, len);
}

/* RecipientInfos, counting each recipient key of a KeyAgreeRecipientInfo:
 * the budget bounds identifier comparisons as well as key work. */
static int decrypt__count(struct decrypt__call *c, STACK_OF(CMS_RecipientInfo) *ris) {
  size_t n = 0;
  for (int i = 0; i < sk_CMS_RecipientInfo_num(ris); i++) {
    CMS_RecipientInfo *ri = sk_CMS_RecipientInfo_value(ris, i);
    int nk = 1;
    if (CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_AGREE)
      nk = sk_CMS_RecipientEncryptedKey_num(CMS_RecipientInfo_kari_get0_reks(ri));
    n += nk > 0 ? (size_t)nk : 0;
  }
  decrypt__say(c, "%zu recipient%s: ", n, n == 1 ? "" : "s");
  if (n > c->lim.max_recipient_infos) {
    decrypt__say(c, "over the budget of %zu recipients", c->lim.max_recipient_infos);
    return SG_ELIMIT;
  }
  return 0;
}

/* ---- private-key operations ------------------------------------------------- */

/* set0_pkey takes ownership: the RecipientInfo gets a reference of its
 * own, and gives it back before anything else touches the worker (a remote
 * worker's reset frees the key underneath). */
static bool decrypt__ktri_op(struct decrypt__call *c, CMS_RecipientInfo *ri, EVP_PKEY *pk) {
  if (!EVP_PKEY_up_ref(pk)) return false;
  CMS_RecipientInfo_set0_pkey(ri, pk);
  int r = CMS_RecipientInfo_decrypt(c->cms, ri);
  CMS_RecipientInfo_set0_pkey(ri, NULL);
  return r > 0;
}

/* The key agreement's derive context holds its own reference; set0(NULL)
 * drops it. */
static bool decrypt__kari_op(struct decrypt__call *c, CMS_RecipientInfo *ri, CMS_RecipientEncryptedKey *rek,
                             EVP_PKEY *pk) {
  int r = CMS_RecipientInfo_kari_set0_pkey(ri, pk) > 0 && CMS_RecipientInfo_kari_decrypt(c->cms, ri, rek) > 0;
  CMS_RecipientInfo_kari_set0_pkey(ri, NULL);
  return r;
}

/*
 * One matching pair: 0 when it yielded the content key, SG_ENOTFOUND when
 * it did not (the walk goes on), SG_ETEMP (token unreachable), SG_ELIMIT
 * (the attempt budget was spent before this pair).  No remote reset and
 * retry after a failure check() cannot pin on the server: a failed
 * decryption is something any sender can cause, and a reconnection per
 * crafted message would be theirs to order.
 */
static int decrypt__try(struct decrypt__call *c, CMS_RecipientInfo *ri, CMS_RecipientEncryptedKey *rek, size_t k) {
  const char *name = c->keys[k].ref->label;
  c->matched++;
  if (c->ops >= c->lim.max_attempts) {
    decrypt__say(c, "budget of %zu key operations reached at %s; ", c->lim.max_attempts, name);
    return SG_ELIMIT;
  }
  EVP_PKEY *pk = NULL; /* borrowed from the worker */
  int rc = c->w ? hsm_worker_pkey(c->w, c->keys[k].ref, &pk) : SG_ETEMP; /* no worker: token not up yet */
  if (rc == SG_ETEMP) {
    decrypt__say(c, "token unreachable for key %s; ", name);
    return SG_ETEMP;
  }
  if (rc != 0) {
    decrypt__say(c, "key %s not usable in the token (%s); ", name, sgerr_str(rc));
    return SG_ENOTFOUND;
  }
  c->ops++;
  if (rek ? decrypt__kari_op(c, ri, rek, pk) : decrypt__ktri_op(c, ri, pk)) {
    c->opened = name;
    return 0;
  }
  ERR_clear_error();
  if (hsm_worker_check(c->w) == SG_ETEMP) {
    decrypt__say(c, "token unreachable while trying key %s; ", name);
    return SG_ETEMP;
  }
  decrypt__say(c, "decryption failed with key %s; ", name);
  return SG_ENOTFOUND;
}

static int decrypt__ktri(struct decrypt__call *c, CMS_RecipientInfo *ri) {
  for (size_t k = 0; k < c->n_keys; k++) {
    if (c->keys[k].cert == NULL || c->keys[k].ref == NULL) continue;
    if (CMS_RecipientInfo_ktri_cert_cmp(ri, c->keys[k].cert) != 0) continue;
    int rc = decrypt__try(c, ri, NULL, k);
    if (rc != SG_ENOTFOUND) return rc;
  }
  return SG_ENOTFOUND;
}

static int decrypt__kari(struct decrypt__call *c, CMS_RecipientInfo *ri) {
  STACK_OF(CMS_RecipientEncryptedKey) *reks = CMS_RecipientInfo_kari_get0_reks(ri);
  for (int j = 0; j < sk_CMS_RecipientEncryptedKey_num(reks); j++) {
    CMS_RecipientEncryptedKey *rek = sk_CMS_RecipientEncryptedKey_value(reks, j);
    for (size_t k = 0; k < c->n_keys; k++) {
      if (c->keys[k].cert == NULL || c->keys[k].ref == NULL) continue;
      if (CMS_RecipientEncryptedKey_cert_cmp(rek, c->keys[k].cert) != 0) continue;
      int rc = decrypt__try(c, ri, rek, k);
      if (rc != SG_ENOTFOUND) return rc;
    }
  }
  return SG_ENOTFOUND;
}

/* Every RecipientInfo against every candidate, in order; stops at the
 * first pair that yields the content key.  Other kinds of RecipientInfo
 * (KEK, password) are never ours. */
static int decrypt__find_key(struct decrypt__call *c, STACK_OF(CMS_RecipientInfo) *ris) {
  for (int i = 0; i < sk_CMS_RecipientInfo_num(ris); i++) {
    CMS_RecipientInfo *ri = sk_CMS_RecipientInfo_value(ris, i);
    int type = CMS_RecipientInfo_type(ri), rc = SG_ENOTFOUND;
    if (type == CMS_RECIPINFO_TRANS) rc = decrypt__ktri(c, ri);
    if (type == CMS_RECIPINFO_AGREE) rc = decrypt__kari(c, ri);
    if (rc != SG_ENOTFOUND) return rc;
  }
  /* Each failed pair has said so already. */
  if (c->matched == 0) decrypt__say(c, "no matching key among %zu candidate%s; ", c->n_keys, c->n_keys == 1 ? "" : "s");
  return SG_EPERM;
}

/* ---- the content ---------------------------------------------------------------- */

/* The cipher OpenSSL set up is the one the walker read: checked again so
 * that no parser difference between the two can let an AEAD cipher into
 * EnvelopedData (or the reverse). */
static int decrypt__cipher_in_use(struct decrypt__call *c, BIO *cont) {
  BIO *cb = BIO_find_type(cont, BIO_TYPE_CIPHER);
  EVP_CIPHER_CTX *ctx = NULL;
  if (cb == NULL || BIO_get_cipher_ctx(cb, &ctx) <= 0 || ctx == NULL || EVP_CIPHER_CTX_get0_cipher(ctx) == NULL)
    return SG_EPERM;
  return decrypt__cipher_fits(c, EVP_CIPHER_CTX_get0_cipher(ctx));
}

/*
 * Decrypts the content with the content key the RecipientInfo left in
 * the structure (none: OpenSSL picks a random key) into sink (NULL:
 * nowhere).  The padding (CBC) or the tag (GCM) is judged only after the
 * last byte, so on failure the sink holds bytes that must be discarded.
 */
static int decrypt__content(struct decrypt__call *c, BIO *sink) {
  BIO *cont = CMS_dataInit(c->cms, NULL);
  if (cont == NULL) return SG_EPERM; /* said by the caller, in the words of any decryption failure */
  int rc = decrypt__cipher_in_use(c, cont);
  unsigned char chunk[DECRYPT__CHUNK];
  while (rc == 0) {
    int n = BIO_read(cont, chunk, sizeof chunk);
    if (n <= 0) {
      BIO *cb = BIO_find_type(cont, BIO_TYPE_CIPHER);
      if (n < 0 || cb == NULL || BIO_get_cipher_status(cb) <= 0) rc = SG_EPERM;
      break;
    }
    if (sink != NULL && BIO_write(sink, chunk, n) != n) rc = SG_EIO;
  }
  OPENSSL_cleanse(chunk, sizeof chunk);
  BIO_free_all(cont);
  return rc;
}

/* ---- the call --------------------------------------------------------------------- */

static int decrypt__open(struct decrypt__call *c, BIO *sink) {
  STACK_OF(CMS_RecipientInfo) *ris = CMS_get0_RecipientInfos(c->cms);
  int rc = ris ? decrypt__count(c, ris) : SG_EINVAL;
  if (rc != 0) return rc;
  rc = decrypt__find_key(c, ris);
  if (rc == SG_ETEMP) return rc;
  if (rc != 0) {
    /* A key operation failed: spend the content's decryption anyway
     * (random key, output dropped), as an opened message would. */
    if (c->ops > 0) (void)decrypt__content(c, NULL);
    return rc;
  }
  rc = decrypt__content(c, sink);
  if (rc == SG_EIO) {
    decrypt__say(c, "key %s opened it; writing the plaintext failed; ", c->opened);
  } else if (rc != 0) {
    decrypt__say(c, "decryption failed with key %s; ", c->opened);
  } else if (BIO_flush(sink) <= 0) {
    decrypt__say(c, "key %s opened it; flushing the plaintext failed; ", c->opened);
    rc = SG_EIO;
  } else {
    decrypt__say(c, "opened with key %s; ", c->opened);
  }
  return rc;
}

int decrypt_cms(struct hsm_worker *w, const unsigned char *der, size_t len, const struct decrypt_key *keys,
                size_t n_keys, const struct decrypt_limits *lim, BIO *sink, const char **kind_out,
                char *detail, size_t dlen) {
  static const struct decrypt_limits defaults = DECRYPT_LIMITS_DEFAULT;
  struct decrypt__call c = {.w = w, .keys = keys, .n_keys = n_keys, .lim = lim ? *lim : defaults,
                            .detail = detail, .dlen = dlen};
  if (detail != NULL && dlen > 0) detail[0] = '\0';
  if (kind_out != NULL) *kind_out = NULL;
  int rc;
  if (der == NULL || sink == NULL || (keys == NULL && n_keys > 0)) {
    decrypt__say(&c, "bad arguments; ");
    rc = SG_EINVAL;
  } else {
    rc = decrypt__parse(&c, der, len);
    if (kind_out != NULL) *kind_out = c.kind;
    if (rc == 0) rc = decrypt__open(&c, sink);
  }
  if (c.dused > 0 && c.dused + 1 < c.dlen && c.detail[c.dused - 1] != ' ') decrypt__say(&c, "; ");
  decrypt__say(&c, "key operations: %zu", c.ops);
  CMS_ContentInfo_free(c.cms);
  ERR_clear_error();
  return rc;
}

BIO *decrypt_sink_mem(size_t der_len) {
  BIO *b = BIO_new(BIO_s_mem());
  BUF_MEM *bm = b ? BUF_MEM_new() : NULL;
  if (!bm || !BUF_MEM_grow(bm, der_len ? der_len : 1)) {
    BUF_MEM_free(bm);
    BIO_free(b);
    return NULL;
  }
  bm->length = 0;
  BIO_set_mem_buf(b, bm, BIO_CLOSE);
  return b;
}
