/*
 * verify - incoming CMS SignedData (R5, R12): the signature over the
 * content, then the signer's certificate against the instance's anchors,
 * its validity, revocation, key usage and the From address.
 *
 * Owns struct verify_trust (an X509_STORE of CA lists, CRLs and, when
 * asked, the system bundle; and the managed public keys, kept apart as
 * explicitly trusted signers).  It is built once and then only read: every
 * verification makes its own X509_STORE_CTX and CMS structure, so several
 * crypto workers may share one trust.  No global state: the chain
 * callback finds its per-call state through the context's app data (ex
 * data index 0, which needs no index allocation).
 *
 * Callers: crypto/incoming.c on crypto workers (the MIME split is theirs),
 * tests.  Trusts nothing in the message: the DER, its certificates, its
 * CRLs (ignored: see verify__chain) and the content.  Budgets (signers,
 * certificates, key size) are applied before any public-key operation.
 *
 * How the outcome is found: OpenSSL checks each SignerInfo's signature on
 * its own (CMS_SignerInfo_verify for the signed attributes,
 * CMS_SignerInfo_verify_content for the digest), not CMS_verify, which
 * fails the whole message when any one signer fails; then our own
 * X509_verify_cert, whose callback records every error class and lets the
 * walk go on, so one pass tells revoked from untrusted from expired.
 */
#include "crypto/verify.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/certcache.h"
#include "crypto/keystore.h"

/* A CRL file larger than this is refused (the biggest public CRLs are a
 * few tens of MB). */
#define VERIFY__CRL_FILE_MAX (256u << 20)

struct verify_trust {
  X509_STORE *store;       /* CA certificates and CRLs; read-only after build */
  STACK_OF(X509_CRL) *crls; /* the same CRLs again: see verify__chain */
  STACK_OF(X509) *managed; /* managed public keys: trusted as they are */
};

/* A CRL into both the store and the list (each takes a reference). */
static bool verify__add_crl(struct verify_trust *t, X509_CRL *crl) {
  if (X509_STORE_add_crl(t->store, crl) != 1 || X509_CRL_up_ref(crl) != 1) return false;
  if (sk_X509_CRL_push(t->crls, crl) > 0) return true;
  X509_CRL_free(crl);
  return false;
}

/* ---- building the trust ----------------------------------------------------- */

struct verify__build {
  struct verify_trust *t;
  int rc;
};

/* X509_STORE_add_* take their own reference; a duplicate is not an error
 * in OpenSSL 3 (it returns 1). */
static int verify__add_ca(void *arg, const char *name, STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls) {
  (void)name;
  struct verify__build *b = arg;
  for (int i = 0; i < sk_X509_num(certs); i++)
    if (X509_STORE_add_cert(b->t->store, sk_X509_value(certs, i)) != 1) return b->rc = SG_ENOMEM;
  for (int i = 0; i < sk_X509_CRL_num(crls); i++)
    if (!verify__add_crl(b->t, sk_X509_CRL_value(crls, i))) return b->rc = SG_ENOMEM;
  return 0;
}

static int verify__add_managed(void *arg, const char *name, X509 *cert, time_t added) {
  (void)name, (void)added;
  struct verify__build *b = arg;
  if (X509_up_ref(cert) != 1) return b->rc = SG_ENOMEM;
  if (sk_X509_push(b->t->managed, cert) <= 0) {
    X509_free(cert);
    return b->rc = SG_ENOMEM;
  }
  return 0;
}

/* The whole file into b (at most VERIFY__CRL_FILE_MAX bytes). */
static int verify__slurp(const char *path, struct buf *b, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return sgerr_fail(err, errlen, SG_EIO, "CRL file %s: %s", path, strerror(errno));
  char chunk[65536];
  size_t n;
  int rc = 0;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b->len + n > VERIFY__CRL_FILE_MAX) rc = sgerr_fail(err, errlen, SG_ETOOBIG, "CRL file %s: too large", path);
    else if (buf_append(b, chunk, n) != 0) rc = sgerr_fail(err, errlen, SG_ENOMEM, "CRL file %s: out of memory", path);
  }
  if (rc == 0 && ferror(f)) rc = sgerr_fail(err, errlen, SG_EIO, "CRL file %s: read error", path);
  fclose(f);
  return rc;
}

/* Every "X509 CRL" block of a PEM file (other blocks are skipped by
 * PEM_read_bio_X509_CRL).  Returns how many were added, or a negative
 * code. */
static int verify__pem_crls(struct verify_trust *t, BIO *in, const char *path, char *err, size_t errlen) {
  int n = 0;
  for (;;) {
    X509_CRL *crl = PEM_read_bio_X509_CRL(in, NULL, NULL, NULL);
    if (crl == NULL) {
      unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) return n;
      return sgerr_fail(err, errlen, SG_EINVAL, "CRL file %s: CRL block %d is corrupt", path, n + 1);
    }
    bool ok = verify__add_crl(t, crl);
    X509_CRL_free(crl);
    if (!ok) return sgerr_fail(err, errlen, SG_ENOMEM, "CRL file %s: out of memory", path);
    n++;
  }
}

/* One CRL file: PEM with one or more CRLs, or a single DER CRL. */
static int verify__crl_file(struct verify_trust *t, const char *path, char *err, size_t errlen) {
  struct buf b = BUF_INIT;
  int rc = verify__slurp(path, &b, err, errlen);
  if (rc == 0 && b.len == 0) rc = sgerr_fail(err, errlen, SG_EINVAL, "CRL file %s: empty", path);
  if (rc == 0 && memmem(b.data, b.len, "-----BEGIN X509 CRL-----", 24) != NULL) {
    BIO *in = BIO_new_mem_buf(b.data, (int)b.len);
    rc = in == NULL ? sgerr_fail(err, errlen, SG_ENOMEM, "CRL file %s: out of memory", path)
                    : verify__pem_crls(t, in, path, err, errlen);
    BIO_free(in);
    if (rc > 0) rc = 0;
  } else if (rc == 0) {
    const unsigned char *p = (const unsigned char *)b.data;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)b.len);
    if (crl == NULL || p != (const unsigned char *)b.data + b.len)
      rc = sgerr_fail(err, errlen, SG_EINVAL, "CRL file %s: neither a PEM nor a DER CRL", path);
    else if (!verify__add_crl(t, crl))
      rc = sgerr_fail(err, errlen, SG_ENOMEM, "CRL file %s: out of memory", path);
    X509_CRL_free(crl);
  }
  buf_free(&b);
  ERR_clear_error();
  return rc;
}

static int verify__trust_fill(struct verify_trust *t, struct keystore *ks, bool system_cas, char *const *crl_files,
                              size_t n_crl_files, char *err, size_t errlen) {
  struct verify__build b = {t, 0};
  if (ks != NULL) {
    int rc = keystore_ca_each(ks, verify__add_ca, &b);
    if (rc == 0) rc = keystore_pubkey_each(ks, verify__add_managed, &b);
    if (b.rc != 0) return sgerr_fail(err, errlen, b.rc, "trust: out of memory");
    if (rc != 0) return sgerr_fail(err, errlen, rc, "trust: reading the key store: %s", sgerr_str(rc));
  }
  if (system_cas && X509_STORE_set_default_paths(t->store) != 1)
    return sgerr_fail(err, errlen, SG_ECONFIG, "trust: the system CA bundle could not be loaded");
  for (size_t i = 0; i < n_crl_files; i++) {
    int rc = verify__crl_file(t, crl_files[i], err, errlen);
    if (rc != 0) return rc;
  }
  return 0;
}

int verify_trust_new(struct keystore *ks, bool system_cas, char *const *crl_files, size_t n_crl_files,
                     struct verify_trust **out, char *err, size_t errlen) {
  *out = NULL;
  struct verify_trust *t = calloc(1, sizeof *t);
  if (t == NULL || (t->store = X509_STORE_new()) == NULL || (t->crls = sk_X509_CRL_new_null()) == NULL ||
      (t->managed = sk_X509_new_null()) == NULL) {
    verify_trust_free(t);
    return sgerr_fail(err, errlen, SG_ENOMEM, "trust: out of memory");
  }
  int rc = verify__trust_fill(t, ks, system_cas, crl_files, n_crl_files, err, errlen);
  ERR_clear_error();
  if (rc != 0) {
    verify_trust_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

void verify_trust_free(struct verify_trust *t) {
  if (t == NULL) return;
  X509_STORE_free(t->store);
  sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
  sk_X509_pop_free(t->managed, X509_free);
  free(t);
}

void verify_result_free(struct verify_result *res) {
  if (res == NULL) return;
  X509_free(res->signer);
  sk_X509_pop_free(res->certs, X509_free);
  res->signer = NULL;
  res->certs = NULL;
}

/* ---- judging one signer ------------------------------------------------------ */

/* What keeps a signer whose signature verified from passing.  The bit
 * order is the order of precedence: the lowest bit set names the reason. */
enum {
  VERIFY__REVOKED = 1u << 0,
  VERIFY__UNTRUSTED = 1u << 1,
  VERIFY__EXPIRED = 1u << 2,
  VERIFY__NOT_YET_VALID = 1u << 3,
  VERIFY__WEAK_KEY = 1u << 4,
  VERIFY__REV_UNKNOWN = 1u << 5,
  VERIFY__KEY_USAGE = 1u << 6,
  VERIFY__NO_FROM = 1u << 7,
  VERIFY__FROM_MISMATCH = 1u << 8,
  VERIFY__N_PROBLEMS = 9
};
static const char *const verify__reasons[] = {"revoked",   "untrusted",          "expired",
                                              "not-yet-valid", "weak-key", "revocation-unknown",
                                              "key-usage", "no-from",            "from-mismatch"};
/* Problems that mean the certificate does not validate at now. */
#define VERIFY__CHAIN_PROBLEMS \
  (VERIFY__REVOKED | VERIFY__UNTRUSTED | VERIFY__EXPIRED | VERIFY__NOT_YET_VALID | VERIFY__REV_UNKNOWN)

struct verify__judgement {
  unsigned problems;
  bool chain_ok, self_signed, expired, identity_is_domain;
  char identity[320];
  char subject[100]; /* RFC 2253, for the log when there is no identity */
  bool managed;      /* trusted as a managed public key, no chain */
  unsigned key_bits;
  /* The first chain error (X509_V_ERR_*) of each problem bit, and its
   * depth, for the log line. */
  int chain_err[VERIFY__N_PROBLEMS], chain_depth[VERIFY__N_PROBLEMS];
};

/* State of one X509_verify_cert, reached from the callback. */
struct verify__chainstate {
  bool hard;
  struct verify__judgement *j;
};

/* Which problem a chain error is.  Missing revocation information (no CRL
 * for an issuer) is a problem only with revocation_hard; a CRL that is
 * there but unusable (bad signature, stale, wrong scope) always is, since
 * an administrator who loads CRLs expects them to be current. */
static unsigned verify__classify(int e, int depth, bool hard) {
  switch (e) {
  case X509_V_ERR_CERT_REVOKED: return VERIFY__REVOKED;
  case X509_V_ERR_CERT_HAS_EXPIRED: return VERIFY__EXPIRED;
  case X509_V_ERR_CERT_NOT_YET_VALID: return VERIFY__NOT_YET_VALID;
  case X509_V_ERR_UNABLE_TO_GET_CRL: return hard ? VERIFY__REV_UNKNOWN : 0;
  case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
  case X509_V_ERR_CRL_SIGNATURE_FAILURE:
  case X509_V_ERR_CRL_NOT_YET_VALID:
  case X509_V_ERR_CRL_HAS_EXPIRED:
  case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
  case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
  case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
  case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
  case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
  case X509_V_ERR_DIFFERENT_CRL_SCOPE:
  case X509_V_ERR_CRL_PATH_VALIDATION_ERROR: return VERIFY__REV_UNKNOWN;
  /* The signer's own certificate not being for S/MIME signing is a key
   * usage matter (R12); a CA's wrong purpose breaks the chain. */
  case X509_V_ERR_INVALID_PURPOSE: return depth == 0 ? VERIFY__KEY_USAGE : VERIFY__UNTRUSTED;
  default: return VERIFY__UNTRUSTED;
  }
}

/*
 * Record every error and go on (return 1), so that one walk finds all the
 * classes; the decision is ours, from the recorded bits, not OpenSSL's
 * return value.  OpenSSL validates an indirect CRL's issuer in a nested
 * context (with our callback, but no app data): there errors are not
 * overridden, so an invalid CRL path makes its CRL unusable
 * (X509_V_ERR_CRL_PATH_VALIDATION_ERROR in the outer walk), except a
 * missing CRL when revocation is soft.
 */
static int verify__cb(int ok, X509_STORE_CTX *ctx) {
  if (ok) return 1;
  X509_STORE_CTX *top = ctx;
  while (X509_STORE_CTX_get0_parent_ctx(top) != NULL) top = X509_STORE_CTX_get0_parent_ctx(top);
  struct verify__chainstate *s = X509_STORE_CTX_get_app_data(top);
  int e = X509_STORE_CTX_get_error(ctx), depth = X509_STORE_CTX_get_error_depth(ctx);
  if (s == NULL) return 0;
  if (top != ctx) return e == X509_V_ERR_UNABLE_TO_GET_CRL && !s->hard;
  unsigned p = verify__classify(e, depth, s->hard);
  /* The anchor's own revocation is not part of the path (RFC 5280 6.1):
   * an imported intermediate that ends the chain (PARTIAL_CHAIN) has no
   * CRL issuer to check with, a root need not carry its own CRL. */
  if (p == VERIFY__REV_UNKNOWN && depth == sk_X509_num(X509_STORE_CTX_get0_chain(ctx)) - 1) return 1;
  if (p == 0 || (s->j->problems & p)) return 1;
  s->j->problems |= p;
  unsigned bit = (unsigned)__builtin_ctz(p);
  s->j->chain_err[bit] = e;
  s->j->chain_depth[bit] = depth;
  return 1;
}

/*
 * The chain of signer to an anchor at now, purpose S/MIME signing, the
 * message's certificates as untrusted intermediates.  CRLs: only those of
 * the trust (CA lists, CRL files), checked for every certificate of the
 * chain; the message's own CRLs are not used, because OpenSSL prefers a
 * usable CRL from the context over the store's, so a sender could attach
 * an older, still current CRL from before its revocation.  Our CRLs are
 * given to the context as well as kept in the store: the store finds
 * CRLs only by the certificate's issuer name, so an indirect CRL (issued
 * by another entity, RFC 5280 5.2.5) is found only in the context's list
 * (PKITS 4.14.24-33).  Delta CRLs and
 * CRL distribution points / indirect CRLs are processed (OpenSSL's
 * "extended" CRL support).  Certificate policies are checked with the
 * default initial set (any policy, no explicit policy required: RFC 5280
 * 6.1.1 defaults); there is no configuration for other initial sets.
 * PARTIAL_CHAIN: every certificate of an imported CA list is an anchor,
 * also an intermediate imported on its own.
 */
static int verify__chain(const struct verify_trust *t, X509 *signer, STACK_OF(X509) *certs,
                         const struct verify_params *p, struct verify__judgement *j) {
  if (t == NULL) { /* no anchors at all (verify_params allows it): nobody is trusted */
    j->problems |= VERIFY__UNTRUSTED;
    j->chain_ok = false;
    return 0;
  }
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  if (ctx == NULL || X509_STORE_CTX_init(ctx, t->store, signer, certs) != 1) {
    X509_STORE_CTX_free(ctx);
    return SG_ENOMEM;
  }
  struct verify__chainstate s = {.hard = p->revocation_hard, .j = j};
  unsigned before = j->problems;
  X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_time(vp, p->now);
  X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL | X509_V_FLAG_EXTENDED_CRL_SUPPORT |
                                      X509_V_FLAG_USE_DELTAS | X509_V_FLAG_POLICY_CHECK | X509_V_FLAG_PARTIAL_CHAIN);
  /* The initial policy set {anyPolicy}, given explicitly: OpenSSL 3.0
   * with POLICY_CHECK and no set given rejects valid mapped-policy paths
   * ("no explicit policy", PKITS 4.10.1).  The object is OpenSSL's static
   * one, which ASN1_OBJECT_free leaves alone. */
  X509_VERIFY_PARAM_add0_policy(vp, OBJ_nid2obj(NID_any_policy));
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SMIME_SIGN);
  X509_STORE_CTX_set0_crls(ctx, t->crls); /* read only, stays the trust's */
  X509_STORE_CTX_set_verify_cb(ctx, verify__cb);
  X509_STORE_CTX_set_app_data(ctx, &s);
  int ok = X509_verify_cert(ctx);
  if (ok <= 0 && j->problems == before) {
    /* An error the callback never saw (out of memory, lookup failure). */
    j->problems |= VERIFY__UNTRUSTED;
    j->chain_err[__builtin_ctz(VERIFY__UNTRUSTED)] = X509_STORE_CTX_get_error(ctx);
  }
  X509_STORE_CTX_free(ctx);
  j->chain_ok = (j->problems & VERIFY__CHAIN_PROBLEMS) == 0;
  return 0;
}

static bool verify__is_managed(const struct verify_trust *t, X509 *x) {
  for (int i = 0; t != NULL && i < sk_X509_num(t->managed); i++)
    if (X509_cmp(sk_X509_value(t->managed, i), x) == 0) return true;
  return false;
}

/* Copy a name lower-cased into the identity; false if it does not fit. */
static bool verify__set_identity(struct verify__judgement *j, const char *name, bool is_domain) {
  size_t n = strlen(name);
  if (n >= sizeof j->identity) return false;
  for (size_t i = 0; i <= n; i++) j->identity[i] = (char)tolower((unsigned char)name[i]);
  j->identity_is_domain = is_domain;
  return true;
}


/* The subject's emailAddress values into v (at most cap), as C strings;
 * values with a NUL or too long to be an identity are skipped.  cert_info
 * lists only SAN e-mails, and some CAs still put the address here. */
static size_t verify__subject_emails(X509 *x, char (*v)[320], size_t cap) {
  const X509_NAME *subj = X509_get_subject_name(x);
  size_t n = 0;
  for (int i = -1; n < cap && (i = X509_NAME_get_index_by_NID(subj, NID_pkcs9_emailAddress, i)) >= 0;) {
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
    int len = ASN1_STRING_length(s);
    const unsigned char *d = ASN1_STRING_get0_data(s);
    if (len <= 0 || len >= 320 || memchr(d, '\0', (size_t)len) != NULL) continue;
    memcpy(v[n], d, (size_t)len);
    v[n++][len] = '\0';
  }
  return n;
}

/* Identity and the From check (INTERFACE.md: the signer must name From's
 * address, or its domain for a domain certificate). */
static void verify__from(X509 *x, const struct cert_info *ci, const char *from, struct verify__judgement *j) {
  char subj[4][320];
  size_t n_subj = verify__subject_emails(x, subj, 4);
  const char *at = from != NULL ? strrchr(from, '@') : NULL;
  bool matched = false;
  for (size_t i = 0; at != NULL && !matched && i < ci->n_san_email; i++)
    matched = cert_email_matches(ci->san_email[i], from) && verify__set_identity(j, ci->san_email[i], false);
  for (size_t i = 0; at != NULL && !matched && i < n_subj; i++)
    matched = cert_email_matches(subj[i], from) && verify__set_identity(j, subj[i], false);
  for (size_t i = 0; at != NULL && !matched && i < ci->n_san_dns; i++)
    matched = cert_dns_matches(ci->san_dns[i], at + 1) && verify__set_identity(j, ci->san_dns[i], true);
  if (matched) return;
  j->problems |= from == NULL || from[0] == '\0' ? VERIFY__NO_FROM : VERIFY__FROM_MISMATCH;
  bool named = false;
  for (size_t i = 0; !named && i < ci->n_san_email; i++) named = verify__set_identity(j, ci->san_email[i], false);
  for (size_t i = 0; !named && i < n_subj; i++) named = verify__set_identity(j, subj[i], false);
  for (size_t i = 0; !named && i < ci->n_san_dns; i++) named = verify__set_identity(j, ci->san_dns[i], true);
}

/*
 * Everything about a signer whose signature verified.  A managed public
 * key is an explicit trust decision: no chain and no revocation check,
 * but it must still be within its validity at now.
 */
static int verify__judge(const struct verify_params *p, const struct verify_limits *lim, X509 *signer,
                         STACK_OF(X509) *certs, struct verify__judgement *j) {
  memset(j, 0, sizeof *j);
  struct cert_info ci;
  if (cert_info_get(signer, &ci) != 0) return SG_ENOMEM;
  j->self_signed = ci.self_signed;
  snprintf(j->subject, sizeof j->subject, "%.99s", ci.subject);
  time_t now = p->now;
  bool nyv = X509_cmp_time(X509_get0_notBefore(signer), &now) > 0;
  bool exp = X509_cmp_time(X509_get0_notAfter(signer), &now) < 0;
  j->expired = nyv || exp;
  int rc = 0;
  if (verify__is_managed(p->trust, signer)) {
    j->problems |= (exp ? VERIFY__EXPIRED : 0) | (nyv ? VERIFY__NOT_YET_VALID : 0);
    j->chain_ok = !j->expired;
    j->managed = true;
  } else {
    rc = verify__chain(p->trust, signer, certs, p, j);
  }
  j->key_bits = ci.key_bits;
  if (strcmp(ci.key_type, "RSA") == 0 && ci.key_bits < lim->min_rsa_bits) j->problems |= VERIFY__WEAK_KEY;
  if (!(ci.uses & CERT_USE_SIGN)) j->problems |= VERIFY__KEY_USAGE;
  verify__from(signer, &ci, p->from, j);
  cert_info_free(&ci);
  return rc;
}

/* ---- the signatures ---------------------------------------------------------- */

enum verify__sig { VERIFY__SIG_OK, VERIFY__SIG_BAD, VERIFY__SIG_NOCERT, VERIFY__SIG_TOO_BIG };

/* RSA moduli above the limit are not tried: a huge key makes one
 * verification expensive, and it is the sender's choice. */
static bool verify__too_big(EVP_PKEY *pk, const struct verify_limits *lim) {
  return (EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_is_a(pk, "RSA-PSS")) &&
         (unsigned)EVP_PKEY_get_bits(pk) > lim->max_rsa_bits;
}

/* One SignerInfo: signed attributes (when present, which also checks the
 * attribute rules of RFC 5652), then the messageDigest against the
 * content that went through cmsbio. */
static enum verify__sig verify__signature(CMS_SignerInfo *si, BIO *cmsbio, const struct verify_limits *lim) {
  EVP_PKEY *pk = NULL;
  X509 *cert = NULL;
  CMS_SignerInfo_get0_algs(si, &pk, &cert, NULL, NULL);
  if (cert == NULL || pk == NULL) return VERIFY__SIG_NOCERT;
  if (verify__too_big(pk, lim)) return VERIFY__SIG_TOO_BIG;
  if (CMS_signed_get_attr_count(si) >= 0 && CMS_SignerInfo_verify(si) != 1) return VERIFY__SIG_BAD;
  return CMS_SignerInfo_verify_content(si, cmsbio) == 1 ? VERIFY__SIG_OK : VERIFY__SIG_BAD;
}

/* Find each SignerInfo's certificate: in the message, else among the
 * managed keys (a sender we know may leave its certificate out).  The
 * managed list is searched only when needed: it may be long. */
static void verify__find_signers(CMS_ContentInfo *cms, const struct verify_trust *t) {
  int found = CMS_set1_signers_certs(cms, NULL, 0);
  if (t != NULL && found < sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) && sk_X509_num(t->managed) > 0)
    CMS_set1_signers_certs(cms, t->managed, CMS_NOINTERN);
  ERR_clear_error();
}

/* Free the BIOs CMS_dataInit put in front of upto (the caller's detached
 * content, which stays the caller's); all of them when upto is NULL. */
static void verify__free_upto(BIO *b, BIO *upto) {
  if (upto == NULL) {
    BIO_free_all(b);
    return;
  }
  while (b != NULL && b != upto) {
    BIO *next = BIO_pop(b);
    BIO_free(b);
    b = next;
  }
}

/* Digest the content: everything through the BIO chain that CMS_dataInit
 * built (detached: over dcont; opaque: over the eContent). */
static int verify__digest(CMS_ContentInfo *cms, BIO *dcont, BIO **cmsbio_out) {
  BIO *cmsbio = CMS_dataInit(cms, dcont);
  if (cmsbio == NULL) return SG_EINVAL;
  char chunk[16384];
  int n;
  while ((n = BIO_read(cmsbio, chunk, sizeof chunk)) > 0) {}
  if (n < 0) {
    verify__free_upto(cmsbio, dcont);
    return SG_EINVAL;
  }
  *cmsbio_out = cmsbio;
  return 0;
}

/* ---- putting the result together --------------------------------------------- */

static void verify__status(struct verify_result *res, enum verify_status st, const char *reason, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));
static void verify__status(struct verify_result *res, enum verify_status st, const char *reason, const char *fmt,
                           ...) {
  res->status = st;
  snprintf(res->reason, sizeof res->reason, "%s", reason);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(res->detail, sizeof res->detail, fmt, ap);
  va_end(ap);
}

/* The bits of the SMIMECapabilities signed attribute (RFC 8551 2.5.2)
 * that the key store records; an absent or malformed attribute is 0. */
static unsigned verify__caps(CMS_SignerInfo *si) {
  ASN1_STRING *seq = CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_SMIMECapabilities), -3, V_ASN1_SEQUENCE);
  if (seq == NULL) return 0;
  const unsigned char *d = ASN1_STRING_get0_data(seq);
  STACK_OF(X509_ALGOR) *algs = d2i_X509_ALGORS(NULL, &d, ASN1_STRING_length(seq));
  unsigned caps = 0;
  for (int i = 0; i < sk_X509_ALGOR_num(algs); i++) {
    const ASN1_OBJECT *obj = NULL;
    X509_ALGOR_get0(&obj, NULL, NULL, sk_X509_ALGOR_value(algs, i));
    int nid = OBJ_obj2nid(obj);
    caps |= nid == NID_aes_256_gcm ? VERIFY_CAP_AES256_GCM
            : nid == NID_aes_128_gcm ? VERIFY_CAP_AES128_GCM
            : nid == NID_rsaesOaep   ? VERIFY_CAP_RSA_OAEP
                                     : 0;
  }
  sk_X509_ALGOR_pop_free(algs, X509_ALGOR_free);
  return caps;
}

static void verify__fill(struct verify_result *res, CMS_SignerInfo *si, X509 *cert, const struct verify__judgement *j) {
  X509_up_ref(cert);
  res->signer = cert;
  res->caps = verify__caps(si);
  memcpy(res->identity, j->identity, sizeof res->identity);
  res->identity_is_domain = j->identity_is_domain;
  res->chain_ok = j->chain_ok;
  res->self_signed = j->self_signed;
  res->expired = j->expired;
  const char *who = j->identity[0] != '\0' ? j->identity : j->subject;
  if (j->problems == 0) {
    verify__status(res, VERIFY_PASS, "", "signer %.100s verified (%s)", who,
                   j->managed ? "managed public key" : "chain to an anchor");
    return;
  }
  unsigned bit = (unsigned)__builtin_ctz(j->problems);
  char why[100] = "";
  if (j->chain_err[bit] != 0)
    snprintf(why, sizeof why, ": %.70s (depth %d)", X509_verify_cert_error_string(j->chain_err[bit]),
             j->chain_depth[bit]);
  else if ((1u << bit) == VERIFY__WEAK_KEY)
    snprintf(why, sizeof why, ": RSA %u bits", j->key_bits);
  verify__status(res, VERIFY_POLICY, verify__reasons[bit], "signer %.100s: %s%s", who, verify__reasons[bit], why);
}

/* No signer verified: a bad signature is tampering; otherwise every
 * signer was beyond the key budget or had no certificate. */
static void verify__no_signer(struct verify_result *res, int bad, int too_big, int nocert) {
  if (bad > 0)
    verify__status(res, VERIFY_FAIL, "bad-signature", "%d signature(s) do not verify over the content", bad);
  else if (too_big > 0)
    verify__status(res, VERIFY_POLICY, "key-size", "signer key larger than the limit: not tried");
  else
    verify__status(res, VERIFY_FAIL, "bad-signature",
                   "%d signer(s) without a usable certificate (none in the message or the managed keys, "
                   "or a key OpenSSL cannot use)", nocert);
}

/*
 * Each SignerInfo's signature, then the judgement of those that verified:
 * the first that passes everything makes the message pass; otherwise the
 * first whose signature verified is reported with its first problem.
 */
static int verify__signers(CMS_ContentInfo *cms, BIO *cmsbio, const struct verify_params *p,
                           const struct verify_limits *lim, struct verify_result *res) {
  STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
  int count[4] = {0};
  CMS_SignerInfo *first_si = NULL, *bad_si = NULL;
  X509 *first_cert = NULL, *bad_cert = NULL;
  struct verify__judgement first, j;
  for (int i = 0; i < sk_CMS_SignerInfo_num(sis); i++) {
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, i);
    enum verify__sig s = verify__signature(si, cmsbio, lim);
    ERR_clear_error();
    count[s]++;
    X509 *cert = NULL;
    CMS_SignerInfo_get0_algs(si, NULL, &cert, NULL, NULL);
    if (s == VERIFY__SIG_BAD && bad_si == NULL && cert != NULL) bad_si = si, bad_cert = cert;
    if (s != VERIFY__SIG_OK) continue;
    int rc = verify__judge(p, lim, cert, res->certs, &j);
    if (rc != 0) return rc;
    if (j.problems == 0) {
      verify__fill(res, si, cert, &j);
      return 0;
    }
    if (first_si == NULL) {
      first_si = si;
      first_cert = cert;
      first = j;
    }
  }
  if (first_si != NULL) {
    verify__fill(res, first_si, first_cert, &first);
    return 0;
  }
  /* Nothing verified.  The certificate of the first signer whose
   * signature failed is still judged and reported (signer, chain_ok,
   * identity...), so harvest.on_failed_verification can act on it; the
   * status stays FAIL. */
  if (bad_si != NULL) {
    int rc = verify__judge(p, lim, bad_cert, res->certs, &j);
    if (rc != 0) return rc;
    verify__fill(res, bad_si, bad_cert, &j);
  }
  verify__no_signer(res, count[VERIFY__SIG_BAD], count[VERIFY__SIG_TOO_BIG], count[VERIFY__SIG_NOCERT]);
  return 0;
}

/* ---- the two forms ------------------------------------------------------------ */

/* Parse a SignedData ContentInfo; res->certs gets its certificates. */
static int verify__parse(const unsigned char *der, size_t len, CMS_ContentInfo **cms_out, struct verify_result *res,
                         char *err, size_t errlen) {
  memset(res, 0, sizeof *res);
  if (len == 0 || len > LONG_MAX) return sgerr_fail(err, errlen, SG_EINVAL, "signature: empty or too large");
  CMS_ContentInfo *cms = certcache_d2i_cms(der, len); /* a partner's certificates decoded once */
  if (cms == NULL) return sgerr_fail(err, errlen, SG_EINVAL, "signature: not a CMS structure");
  if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed || sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) <= 0) {
    CMS_ContentInfo_free(cms);
    return sgerr_fail(err, errlen, SG_EINVAL, "signature: not a SignedData with a SignerInfo");
  }
  res->certs = CMS_get1_certs(cms);
  if (res->certs == NULL) res->certs = sk_X509_new_null();
  if (res->certs == NULL) {
    CMS_ContentInfo_free(cms);
    return sgerr_fail(err, errlen, SG_ENOMEM, "signature: out of memory");
  }
  *cms_out = cms;
  return 0;
}

/* The budgets, before any public-key operation.  true if one is exceeded
 * (res then holds the POLICY outcome). */
static bool verify__over_budget(CMS_ContentInfo *cms, const struct verify_limits *lim, struct verify_result *res) {
  int signers = sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)), certs = sk_X509_num(res->certs);
  if ((size_t)signers > lim->max_signers) {
    verify__status(res, VERIFY_POLICY, "too-many-signers", "%d SignerInfos, limit %zu", signers, lim->max_signers);
    return true;
  }
  if ((size_t)certs > lim->max_certs) {
    verify__status(res, VERIFY_POLICY, "too-many-certificates", "%d certificates, limit %zu", certs,
                   lim->max_certs);
    return true;
  }
  return false;
}

/* Parsed SignedData, optional detached content: budgets, digest,
 * signers.  Frees nothing of the caller's. */
static int verify__run(CMS_ContentInfo *cms, BIO *dcont, const struct verify_params *p, struct verify_result *res,
                       char *err, size_t errlen) {
  static const struct verify_limits defaults = VERIFY_LIMITS_DEFAULT;
  const struct verify_limits *lim = p->limits != NULL ? p->limits : &defaults;
  if (verify__over_budget(cms, lim, res)) return 0;
  verify__find_signers(cms, p->trust);
  BIO *cmsbio = NULL;
  if (verify__digest(cms, dcont, &cmsbio) != 0)
    return sgerr_fail(err, errlen, SG_EINVAL, "signature: the content could not be digested");
  int rc = verify__signers(cms, cmsbio, p, lim, res);
  verify__free_upto(cmsbio, dcont);
  return rc == 0 ? 0 : sgerr_fail(err, errlen, rc, "verification: %s", sgerr_str(rc));
}

/* The end of every public call: no OpenSSL errors left on the thread's
 * queue, and no half result on failure. */
static int verify__finish(int rc, struct verify_result *res) {
  ERR_clear_error();
  if (rc != 0) verify_result_free(res);
  return rc;
}

int verify_detached(const char *content, size_t len, const unsigned char *sig, size_t sig_len,
                    const struct verify_params *p, struct verify_result *res, char *err, size_t errlen) {
  CMS_ContentInfo *cms = NULL;
  int rc = verify__parse(sig, sig_len, &cms, res, err, errlen);
  if (rc != 0) return verify__finish(rc, res);
  /* BIO_new_mem_buf refuses NULL, even for no bytes. */
  BIO *dcont = len <= INT_MAX ? BIO_new_mem_buf(content != NULL ? content : "", (int)len) : NULL;
  if (dcont == NULL) rc = sgerr_fail(err, errlen, len <= INT_MAX ? SG_ENOMEM : SG_ETOOBIG, "content: cannot be read");
  else rc = verify__run(cms, dcont, p, res, err, errlen);
  BIO_free(dcont);
  CMS_ContentInfo_free(cms);
  return verify__finish(rc, res);
}

int verify_opaque(const unsigned char *der, size_t len, const struct verify_params *p, struct buf *content_out,
                  struct verify_result *res, char *err, size_t errlen) {
  CMS_ContentInfo *cms = NULL;
  int rc = verify__parse(der, len, &cms, res, err, errlen);
  if (rc != 0) return verify__finish(rc, res);
  /* The content goes out whatever the outcome: the caller may deliver it
   * (marked) when the signature fails. */
  size_t old_len = content_out->len;
  ASN1_OCTET_STRING **pos = CMS_get0_content(cms);
  if (pos == NULL || *pos == NULL)
    rc = sgerr_fail(err, errlen, SG_EINVAL, "signature: no encapsulated content (a detached signature)");
  else if (buf_append(content_out, ASN1_STRING_get0_data(*pos), (size_t)ASN1_STRING_length(*pos)) != 0)
    rc = sgerr_fail(err, errlen, SG_ENOMEM, "content: out of memory");
  else
    rc = verify__run(cms, NULL, p, res, err, errlen);
  if (rc != 0) content_out->len = old_len;
  CMS_ContentInfo_free(cms);
  return verify__finish(rc, res);
}
