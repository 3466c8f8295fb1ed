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
 * A CRL file that cannot be read is an error naming the file.  Chains
 * are checked against these CRLs only (never CRLs carried in a message),
 * for every certificate of the chain, delta CRLs and distribution points
 * included; certificate policies with RFC 5280's default initial set.
 * Every certificate of a CA list is an anchor (an intermediate too); an
 * anchor's own revocation is not checked (RFC 5280 6.1).  A signer equal
 * to a managed key is trusted without chain or CRL, but must be within
 * its validity at now. */
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
  const struct verify_trust *trust;   /* NULL: no anchors (every signer untrusted) */
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
   * "revocation-unknown", "key-usage", "weak-key", "key-size" (signer key
   * above max_rsa_bits: not tried), "from-mismatch", "no-from",
   * "too-many-signers", "too-many-certificates", "malformed" (the
   * caller's, for SG_EINVAL)), and a longer detail for the log.  PASS:
   * reason "", detail names the signer.
   *
   * Precedence: budgets; then FAIL when no signature verifies; then for
   * the signer reported, the first of revoked, untrusted (any other chain
   * error), expired, not-yet-valid (the signer or any certificate of its
   * chain), weak-key, revocation-unknown (no CRL for an issuer with
   * revocation_hard; a CRL present but stale, badly signed or of the
   * wrong scope always), key-usage (R12: cert_uses() CERT_USE_SIGN, and
   * OpenSSL's S/MIME signing purpose), no-from / from-mismatch.
   * Several SignerInfos: each signature is checked on its own; the
   * message passes if one signer passes everything, else the first whose
   * signature verified is reported; when none verified (FAIL), the
   * certificate of the first signer whose signature failed is still
   * judged and reported in signer, identity, chain_ok... (for
   * harvest.on_failed_verification), the status staying FAIL. */
  char reason[32];
  char detail[200];
  /* The signer reported (see above; NULL when no signer had a certificate) and
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

/* Releases signer and certs (the struct itself is the caller's).  The
 * verify_* functions overwrite res without freeing it: free a result
 * before reusing the struct.  On a negative return res holds nothing. */
void verify_result_free(struct verify_result *res);

/* multipart/signed: content is the first part exactly as it was signed
 * (CRLF canonical), sig the DER of the application/pkcs7-signature part.
 * The digest is over these bytes as they are (CMS binary mode): nothing
 * is canonicalised here. */
int verify_detached(const char *content, size_t len, const unsigned char *sig, size_t sig_len,
                    const struct verify_params *p, struct verify_result *res, char *err, size_t errlen);

/* application/pkcs7-mime; smime-type=signed-data: der is the SignedData
 * ContentInfo; the encapsulated content (a MIME entity) is appended to
 * content_out whatever the outcome (FAIL and POLICY too: the caller may
 * deliver it marked), byte for byte, untrusted.  On a negative return
 * content_out is as it was (SG_EINVAL also for a SignedData without
 * encapsulated content). */
int verify_opaque(const unsigned char *der, size_t len, const struct verify_params *p,
                  struct buf *content_out, struct verify_result *res, char *err, size_t errlen);

#endif
