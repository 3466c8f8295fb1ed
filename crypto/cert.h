/*
 * cert - X.509 work for the organisation's S/MIME certificates (R8-R13):
 * building self-signed certificates and CSRs whose signature is made by a
 * key in the token, reading PKCS#12 files, judging key usage, and
 * describing a certificate for `sealctl cert show`.
 *
 * Pure OpenSSL: no PKCS#11 here.  The signing key is an EVP_PKEY handed in
 * by the caller (from hsm_worker_pkey, so the signature runs in the token;
 * tests pass software keys).  Callers: sealctl and crypto/certstore.
 *
 * Untrusted input: PKCS#12 files and their certificates (any bytes), the
 * names and SANs an administrator types.  Every failure names what was
 * wrong in err ("PKCS#12 file x.p12: wrong password or corrupt file",
 * "--san-domains: 'exa mple.com' is not a domain name").
 *
 * Ownership: objects returned through *_out are the caller's and are freed
 * with the OpenSSL free function of their type (or the *_free below).
 * Inputs are borrowed.  Returns 0 or a negative enum sgerr.
 */
#ifndef SEALGATE_CERT_H
#define SEALGATE_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* What `cert create` asks for (R8).  Strings are borrowed; NULL = absent. */
struct cert_request {
  const char *cn;           /* required */
  const char *org, *ou, *city, *state;
  const char *country;      /* two ASCII letters, or NULL */
  unsigned days;            /* validity from now; 0 = 365 */
  const char *const *san_domains; /* DNS names; a leftmost "*." is allowed */
  size_t n_san_domains;
  const char *const *san_emails;
  size_t n_san_emails;
  bool fqdn_validate;       /* R9: CN and SAN DNS names must be FQDNs */
};

/* Check a request: CN present; country two letters; each SAN domain a
 * syntactically valid DNS name (wildcard only as the whole leftmost label);
 * each SAN email local@domain with a valid domain; with fqdn_validate, the
 * CN and every SAN DNS name an FQDN (at least two labels, letters, digits
 * and hyphens, no label starting or ending with a hyphen, a TLD that is not
 * all digits, total <= 253).  Form only: no DNS lookup is made. */
int cert_request_check(const struct cert_request *r, char *err, size_t errlen);

/* One DNS name in FQDN form (as above); allow_wildcard permits "*.x.y". */
bool cert_is_fqdn(const char *name, bool allow_wildcard);

/*
 * A self-signed S/MIME certificate for pub, signed with signer (the
 * private half of pub, usually in the token), SHA-256.  Version 3; random
 * 128-bit positive serial; subject = issuer = the request's DN; validity
 * now-5min .. now+days; extensions: basicConstraints critical CA:FALSE,
 * keyUsage critical digitalSignature, nonRepudiation and keyEncipherment
 * (RSA) or keyAgreement (EC); extendedKeyUsage emailProtection; subject
 * key identifier; authority key identifier (keyid); subjectAltName with
 * the SAN domains (DNS) and emails (rfc822Name), when any.
 */
int cert_create_selfsigned(const struct cert_request *r, EVP_PKEY *pub, EVP_PKEY *signer,
                           X509 **cert_out, char *err, size_t errlen);

/* A PKCS#10 CSR with the subject and subjectAltName (and the key usage and
 * EKU, as requested extensions) of cert, for its public key, signed with
 * signer (R10).  SHA-256. */
int cert_create_csr(X509 *cert, EVP_PKEY *signer, X509_REQ **req_out, char *err, size_t errlen);

/* What a PKCS#12 file holds. */
struct cert_p12 {
  EVP_PKEY *key;        /* the private key: free with cert_p12_free only */
  X509 *cert;           /* the certificate matching key */
  STACK_OF(X509) *chain; /* other certificates (may be empty, never NULL) */
};

/*
 * Read a PKCS#12 file (at most 1 MiB) with password.  Refuses, with a
 * reason naming the file: unreadable or corrupt file, wrong password, no
 * private key, no certificate matching the key, a key that is neither RSA
 * (>= 2048 bits) nor EC P-256/P-384, a certificate not yet valid or
 * expired (at now), a certificate fit neither for signing (R12) nor for
 * encryption (R13).  The file's bytes and the decoded structure are wiped
 * from memory before return.
 */
int cert_p12_load(const char *path, const char *password, time_t now, struct cert_p12 *out,
                  char *err, size_t errlen);
void cert_p12_free(struct cert_p12 *p);

/* Uses a certificate allows, per R12/R13. */
#define CERT_USE_SIGN 1u    /* no keyUsage, or digitalSignature + nonRepudiation */
#define CERT_USE_ENCRYPT 2u /* keyUsage with keyEncipherment (RSA) or keyAgreement (EC) */
unsigned cert_uses(X509 *x);

/* Whole days from now until notAfter (negative once expired). */
long cert_days_left(X509 *x, time_t now);

/*
 * Naming rules shared by the key store (lookups), verification (signer vs
 * From) and harvesting, so the three never disagree:
 * cert_email_matches: a certificate's e-mail (SAN rfc822Name or subject
 *   emailAddress) names addr: the domain compared case-insensitively, the
 *   local part exactly, or as addr's lower-cased (certificates carry lower
 *   case, senders often do not; RFC 5321 lets a mailbox be case-sensitive).
 * cert_dns_matches: a SAN DNS name covers domain: exactly (any case), or an
 *   RFC 6125 wildcard "*.parent" for one more leftmost label, never over a
 *   single-label parent ("*.com").
 */
bool cert_email_matches(const char *san, const char *addr);
bool cert_dns_matches(const char *san, const char *domain);

/* Everything `cert show` prints.  Fill with cert_info_get, release with
 * cert_info_free.  Times are ISO 8601 UTC ("2026-11-29T10:00:00Z"). */
struct cert_info {
  char subject[512];     /* RFC 2253 one line */
  char issuer[512];
  char serial[80];       /* hex */
  char not_before[32], not_after[32];
  time_t not_before_t, not_after_t;
  char key_type[8];      /* "RSA" or "EC" */
  unsigned key_bits;
  char curve[16];        /* EC: "P-256" or "P-384"; else "" */
  char fingerprint[100]; /* SHA-256, upper-case hex pairs joined by ':' */
  char key_usage[200];   /* "digitalSignature, nonRepudiation, ..." or "(none)" */
  char ext_key_usage[200];
  char **san_dns;        /* NUL-terminated strings, owned */
  size_t n_san_dns;
  char **san_email;
  size_t n_san_email;
  bool self_signed;
  unsigned uses;         /* CERT_USE_* */
};
int cert_info_get(X509 *x, struct cert_info *out);
void cert_info_free(struct cert_info *ci);

/* PEM of x appended to a malloc'd string (*pem_out, NUL-terminated; the
 * caller frees it). */
int cert_to_pem(X509 *x, char **pem_out);

#endif
