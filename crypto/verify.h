/*
 * verify - checking a CMS SignedData of incoming mail (R5, R12, RFC 5652,
 * RFC 8551): the signature over the content, the signer's chain against
 * the instance's trust anchors (CA lists imported with `sealctl ca
 * import`, plus Debian's system bundle only if trust.system_cas), its
 * validity, its key usage for signing (R12), revocation from CRLs, and
 * whether the signer's certificate names the From address (SAN e-mail) or
 * its domain (SAN DNS).  A managed public key (`sealctl pubkey add`) is an
 * explicit trust decision: a signer whose certificate is one of them is
 * trusted without a chain.
 *
 * Owns struct verify_trust: an X509_STORE with the anchors and CRLs, built
 * once (daemon start, `keys reload`, store changes) and shared read-only
 * by every crypto worker.  Callers: crypto/incoming.c on crypto workers;
 * tests; bench.  Trusts nothing in the message: every SignedData is
 * untrusted bytes and gets budgets (verify_limits) before any expensive
 * work.  Not reentrant on one verify_result; thread-safe otherwise.
 *
 * Ownership: verify_trust_* own their store; a verify_result owns the
 * certificates it points to (verify_result_free).  Functions return 0 when
 * a result was produced (good or bad: see res->status) or a negative enum
 * sgerr when none could be (SG_ENOMEM; SG_EINVAL when the bytes are not a
 * SignedData at all, with err naming why).
 */
#ifndef SEALGATE_VERIFY_H
#define SEALGATE_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <openssl/bio.h>
#include <openssl/x509.h>

#include "core/buf.h"

struct keystore;
struct verify_trust;

/* Anchors: every CA list and CRL in ks (may be NULL), the managed public
 * keys of ks (explicitly trusted signers), the system bundle when
 * system_cas, and the CRL files named (PEM or DER, each may hold several).
 * A CRL file that cannot be read is an error naming the file. */
int verify_trust_new(struct keystore *ks, bool system_cas, char *const *crl_files, size_t n_crl_files,
                     struct verify_trust **out, char *err, size_t errlen);
void verify_trust_free(struct verify_trust *t);

struct verify_limits {
  size_t max_signers;   /* SignerInfos (default 4) */
  size_t max_certs;     /* certificates carried in the message (default 16) */
  unsigned max_rsa_bits; /* larger signer keys are not tried (default 8192) */
  unsigned min_rsa_bits; /* smaller ones are policy failures (default 2048) */
};
#define VERIFY_LIMITS_DEFAULT {4, 16, 8192, 2048}

struct verify_params {
  const struct verify_trust *trust;
  const struct verify_limits *limits; /* NULL: VERIFY_LIMITS_DEFAULT */
  const char *from;       /* the From address (bare addr-spec), NULL if none */
  bool revocation_hard;   /* status unknown (no CRL for an issuer) is a policy failure */
  time_t now;
};

enum verify_status {
  VERIFY_PASS = 0, /* signature good, chain trusted, valid, key usage ok, matches From */
  VERIFY_FAIL,     /* the signature does not verify (tampered, wrong key, malformed SignerInfo) */
  VERIFY_POLICY,   /* the signature verifies but the signer does not pass: see reason */
};

#define VERIFY_CAP_AES256_GCM 0x1u /* same bits as KEYSTORE_CAP_* */
#define VERIFY_CAP_AES128_GCM 0x2u
#define VERIFY_CAP_RSA_OAEP 0x4u

struct verify_result {
  enum verify_status status;
  /* FAIL and POLICY: one short token for Authentication-Results reason=
   * ("bad-signature", "untrusted", "expired", "not-yet-valid", "revoked",
   * "revocation-unknown", "key-usage", "weak-key", "from-mismatch",
   * "no-from", "too-many-signers", "too-many-certificates",
   * "malformed"), and a longer detail for the log. */
  char reason[32];
  char detail[200];
  /* The signer (first SignerInfo whose signature verified; else NULL) and
   * every certificate the message carried (never NULL after success). */
  X509 *signer;
  STACK_OF(X509) *certs;
  /* The identity the signer's certificate proves: the SAN e-mail equal to
   * From, else the SAN DNS name matching From's domain, else its first SAN
   * e-mail or DNS name; lower-cased.  Empty if none. */
  char identity[320];
  bool identity_is_domain;   /* identity is a domain (domain certificate) */
  bool chain_ok;             /* validates to an anchor (or is a managed key) at now */
  bool self_signed;          /* the signer's certificate is self-signed */
  bool expired;              /* outside its validity at now */
  unsigned caps;             /* VERIFY_CAP_* from the signed SMIMECapabilities */
};

void verify_result_free(struct verify_result *res);

/* multipart/signed: content is the first part exactly as it was signed
 * (CRLF canonical), sig the DER of the application/pkcs7-signature part. */
int verify_detached(const char *content, size_t len, const unsigned char *sig, size_t sig_len,
                    const struct verify_params *p, struct verify_result *res, char *err, size_t errlen);

/* application/pkcs7-mime; smime-type=signed-data: der is the SignedData
 * ContentInfo; the encapsulated content (a MIME entity) is appended to
 * content_out whatever the outcome, as long as it could be parsed. */
int verify_opaque(const unsigned char *der, size_t len, const struct verify_params *p,
                  struct buf *content_out, struct verify_result *res, char *err, size_t errlen);

#endif
