/*
 * cert - see cert.h.
 *
 * Owns the X.509 objects it builds (until handed out through *_out) and a
 * private copy of each PKCS#12 file it reads, wiped before it is freed.
 *
 * Trusts OpenSSL's DER decoders with hostile bytes, but only after capping
 * the file at 1 MiB; trusts the signer EVP_PKEY to sign (in the token) and
 * nothing more: every signature it makes is verified against the public key
 * it should match before the result is returned, so a token that holds a
 * different key, or returns garbage, cannot produce a certificate.
 *
 * Does not trust: the names and SANs an administrator types (checked by
 * cert_request_check before anything is built, and put into certificates
 * as typed ASN.1 values, never through an OpenSSL config string, so a comma
 * cannot add an extension), and every field of an imported certificate
 * (displayed escaped, SAN entries with embedded NULs skipped).
 */
#include "crypto/cert.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/sgerr.h"

#define CERT__MAX_SAN 100
#define CERT__MAX_P12 (1024 * 1024)
#define CERT__MAX_DAYS 36500u /* beyond ~2100 a notAfter is a typo, not a plan */
#define CERT__DNS_MAX 253
#define CERT__LABEL_MAX 63

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

#define cert__fail sgerr_fail /* core/sgerr.h */

/* An OpenSSL call failed: say what we were doing and OpenSSL's reason (the
 * oldest error, the one that started it), then empty the thread's queue so
 * the next caller does not inherit stale errors. */
static int cert__ossl_fail(char *err, size_t errlen, int rc, const char *what) {
  unsigned long e = ERR_peek_error();
  const char *why = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  if (why) return cert__fail(err, errlen, rc, "%s: %s", what, why);
  return cert__fail(err, errlen, rc, "%s", what);
}

/* ------------------------------------------------------------------------ */
/* Checking a request (R8, R9)                                              */

static bool cert__label_ok(const char *s, size_t n) {
  if (n == 0 || n > CERT__LABEL_MAX || s[0] == '-' || s[n - 1] == '-') return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  }
  return true;
}

/*
 * A DNS name in letters, digits and hyphens.  The top label may not be all
 * digits (RFC 1123 2.1), which also keeps dotted IPv4 addresses out of DNS
 * SANs.  A wildcard is only the whole leftmost label and needs two labels
 * under it: "*.com" would claim every domain of a TLD.  need_fqdn asks for
 * at least two labels (R9); without it "mailhost" passes.
 */
static bool cert__dns_ok(const char *name, bool allow_wildcard, bool need_fqdn) {
  size_t len = strlen(name), labels = 0, min_labels = need_fqdn ? 2 : 1;
  if (len == 0 || len > CERT__DNS_MAX) return false;
  const char *p = name;
  if (allow_wildcard && strncmp(p, "*.", 2) == 0) {
    p += 2;
    min_labels = 2;
  }
  const char *last = p;
  for (;;) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (!cert__label_ok(p, n)) return false;
    labels++;
    last = p;
    if (!dot) break;
    p = dot + 1;
  }
  if (strspn(last, "0123456789") == strlen(last)) return false;
  return labels >= min_labels;
}

bool cert_is_fqdn(const char *name, bool allow_wildcard) {
  return name && cert__dns_ok(name, allow_wildcard, true);
}

/* Well-formed UTF-8 without C0/DEL controls (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF); what MBSTRING_UTF8 will accept. */
static bool cert__utf8_ok(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned c = *p, n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2
                                                        : (c & 0xF8) == 0xF0 ? 3 : 9;
    if (n == 9 || (n == 0 && (c < 0x20 || c == 0x7F))) return false;
    unsigned cp = n ? c & (0x3F >> n) : c;
    for (unsigned i = 1; i <= n; i++) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static const unsigned min_cp[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += n + 1;
  }
  return true;
}

/* An rfc822Name: one '@', a printable-ASCII local part (non-ASCII needs
 * SmtpUTF8Mailbox, RFC 8398, which we do not issue) and a valid domain. */
static bool cert__email_ok(const char *addr, bool need_fqdn) {
  const char *at = strchr(addr, '@');
  if (!at || at == addr || strchr(at + 1, '@') || at - addr > 64) return false;
  for (const char *p = addr; p < at; p++)
    if (*p <= ' ' || *p >= 0x7F) return false;
  return cert__dns_ok(at + 1, false, need_fqdn);
}

/*
 * "OPT: 'value' why".  The value is what was typed, at most 80 bytes of it,
 * with controls and the bytes of invalid UTF-8 shown as '?': an error line
 * must not carry terminal escapes or break a UTF-8 log.
 */
static int cert__bad_value(char *err, size_t errlen, const char *opt, const char *v,
                           const char *why) {
  char shown[84];
  size_t n = 0;
  for (; v && v[n] && n < 80; n++) {
    unsigned char c = (unsigned char)v[n];
    shown[n] = c < ' ' || c == 0x7F ? '?' : (char)c;
  }
  if (v && v[n]) { /* cut: drop the last, maybe partial, UTF-8 sequence */
    while (n > 0 && ((unsigned char)shown[n - 1] & 0xC0) == 0x80) n--;
    if (n > 0 && (unsigned char)shown[n - 1] >= 0xC0) n--;
  }
  shown[n] = '\0';
  if (!cert__utf8_ok(shown))
    for (size_t i = 0; i < n; i++) shown[i] = (unsigned char)shown[i] >= 0x80 ? '?' : shown[i];
  return cert__fail(err, errlen, SG_EINVAL, "%s: '%s' %s", opt, shown, why);
}

/* One optional DN field: UTF-8, non-empty, within the X.520 upper bound. */
static int cert__dn_field_check(const char *opt, const char *v, size_t max, char *err,
                                size_t errlen) {
  if (!v) return 0;
  if (*v && strlen(v) <= max && cert__utf8_ok(v)) return 0;
  char why[64];
  snprintf(why, sizeof why, "must be 1 to %zu bytes of UTF-8 text", max);
  return cert__bad_value(err, errlen, opt, v, why);
}

static int cert__cn_check(const struct cert_request *r, char *err, size_t errlen) {
  if (!r->cn || !*r->cn) return cert__fail(err, errlen, SG_EINVAL, "--cn: a common name is required");
  if (r->fqdn_validate && !cert_is_fqdn(r->cn, false))
    return cert__bad_value(err, errlen, "--cn", r->cn,
                           "is not a fully qualified domain name (--fqdn-validate)");
  return cert__dn_field_check("--cn", r->cn, 64, err, errlen);
}

static int cert__country_check(const char *cc, char *err, size_t errlen) {
  if (!cc) return 0;
  bool ok = strlen(cc) == 2;
  for (size_t i = 0; ok && i < 2; i++)
    ok = (cc[i] >= 'A' && cc[i] <= 'Z') || (cc[i] >= 'a' && cc[i] <= 'z');
  if (!ok) return cert__bad_value(err, errlen, "--country", cc, "is not two letters");
  return 0;
}

static int cert__sans_check(const struct cert_request *r, char *err, size_t errlen) {
  if (r->n_san_domains > CERT__MAX_SAN || r->n_san_emails > CERT__MAX_SAN)
    return cert__fail(err, errlen, SG_ELIMIT, "%s: more than %d entries",
                      r->n_san_domains > CERT__MAX_SAN ? "--san-domains" : "--san-emails",
                      CERT__MAX_SAN);
  for (size_t i = 0; i < r->n_san_domains; i++) {
    const char *d = r->san_domains[i];
    if (!d || !cert__dns_ok(d, true, r->fqdn_validate))
      return cert__bad_value(err, errlen, "--san-domains", d,
                             r->fqdn_validate ? "is not a fully qualified domain name (--fqdn-validate)"
                                              : "is not a valid domain name");
  }
  for (size_t i = 0; i < r->n_san_emails; i++) {
    const char *e = r->san_emails[i];
    if (!e || !cert__email_ok(e, r->fqdn_validate))
      return cert__bad_value(err, errlen, "--san-emails", e, "is not a valid e-mail address");
  }
  return 0;
}

int cert_request_check(const struct cert_request *r, char *err, size_t errlen) {
  int rc;
  if ((rc = cert__cn_check(r, err, errlen)) != 0) return rc;
  if ((rc = cert__dn_field_check("--org", r->org, 64, err, errlen)) != 0) return rc;
  if ((rc = cert__dn_field_check("--ou", r->ou, 64, err, errlen)) != 0) return rc;
  if ((rc = cert__dn_field_check("--city", r->city, 128, err, errlen)) != 0) return rc;
  if ((rc = cert__dn_field_check("--state", r->state, 128, err, errlen)) != 0) return rc;
  if ((rc = cert__country_check(r->country, err, errlen)) != 0) return rc;
  if (r->days > CERT__MAX_DAYS)
    return cert__fail(err, errlen, SG_EINVAL, "--days: %u is more than %u", r->days, CERT__MAX_DAYS);
  return cert__sans_check(r, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Building a self-signed certificate (R8)                                  */

/* 16 random bytes, top bit clear so the INTEGER is positive in 16 bytes
 * (RFC 5280 4.1.2.2 allows at most 20), never zero. */
static int cert__set_serial(X509 *x) {
  unsigned char b[16];
  do {
    if (RAND_bytes(b, sizeof b) != 1) return SG_EIO;
    b[0] &= 0x7F;
  } while (b[0] == 0 && !memcmp(b, b + 1, sizeof b - 1)); /* all zero */
  BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
  ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
  int ok = ai && X509_set_serialNumber(x, ai);
  ASN1_INTEGER_free(ai);
  BN_free(bn);
  return ok ? 0 : SG_ENOMEM;
}

static int cert__set_name(X509 *x, const struct cert_request *r) {
  char cc[3] = "";
  if (r->country) {
    cc[0] = (char)(r->country[0] & ~0x20); /* the checked letters, upper-cased */
    cc[1] = (char)(r->country[1] & ~0x20);
  }
  const char *fields[][2] = {{"C", r->country ? cc : NULL}, {"ST", r->state}, {"L", r->city},
                             {"O", r->org}, {"OU", r->ou}, {"CN", r->cn}};
  X509_NAME *n = X509_NAME_new();
  int ok = n != NULL;
  for (size_t i = 0; ok && i < sizeof fields / sizeof fields[0]; i++)
    if (fields[i][1])
      ok = X509_NAME_add_entry_by_txt(n, fields[i][0], MBSTRING_UTF8,
                                      (const unsigned char *)fields[i][1], -1, -1, 0);
  ok = ok && X509_set_subject_name(x, n) && X509_set_issuer_name(x, n);
  X509_NAME_free(n);
  return ok ? 0 : SG_ENOMEM;
}

static int cert__set_validity(X509 *x, unsigned days) {
  time_t now = time(NULL);
  /* Five minutes of slack for peers whose clocks run behind. */
  if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, -300, &now)) return SG_ENOMEM;
  if (!X509_time_adj_ex(X509_getm_notAfter(x), days ? (int)days : 365, 0, &now)) return SG_ENOMEM;
  return 0;
}

/* Add n names of one type (GEN_DNS or GEN_EMAIL) as IA5Strings. */
static int cert__gens_add(GENERAL_NAMES *gens, int type, const char *const *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!gn || !s || !ASN1_STRING_set(s, v[i], -1)) {
      GENERAL_NAME_free(gn);
      ASN1_IA5STRING_free(s);
      return SG_ENOMEM;
    }
    GENERAL_NAME_set0_value(gn, type, s);
    if (!sk_GENERAL_NAME_push(gens, gn)) {
      GENERAL_NAME_free(gn);
      return SG_ENOMEM;
    }
  }
  return 0;
}

/* The SAN is built as ASN.1, not as a "DNS:a,email:b" config string, so
 * nothing an administrator types can be parsed as another name or option. */
static int cert__add_san(X509 *x, const struct cert_request *r) {
  if (r->n_san_domains + r->n_san_emails == 0) return 0;
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  int rc = gens ? 0 : SG_ENOMEM;
  if (!rc) rc = cert__gens_add(gens, GEN_DNS, r->san_domains, r->n_san_domains);
  if (!rc) rc = cert__gens_add(gens, GEN_EMAIL, r->san_emails, r->n_san_emails);
  if (!rc && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
    rc = SG_ENOMEM;
  GENERAL_NAMES_free(gens);
  return rc;
}

/*
 * The fixed extensions.  The values are constants, so OpenSSL's config
 * syntax is safe here.  SKI goes before AKI: AKI copies the issuer's (our
 * own) SKI.  "keyid:always" because for a self-signed certificate OpenSSL
 * 3.0 turns a plain "keyid" into an empty AKI extension, without a key id.
 */
static int cert__add_fixed_exts(X509 *x, bool is_ec) {
  const struct { int nid; const char *value; } exts[] = {
    {NID_basic_constraints, "critical,CA:FALSE"},
    {NID_key_usage, is_ec ? "critical,digitalSignature,nonRepudiation,keyAgreement"
                          : "critical,digitalSignature,nonRepudiation,keyEncipherment"},
    {NID_ext_key_usage, "emailProtection"},
    {NID_subject_key_identifier, "hash"},
    {NID_authority_key_identifier, "keyid:always"},
  };
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, exts[i].nid, exts[i].value);
    int ok = e && X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (!ok) return SG_ENOMEM;
  }
  return 0;
}

#define CERT__WRONG_KEY "the token's signature does not verify with the key's public half"

static int cert__build(X509 *x, const struct cert_request *r, EVP_PKEY *pub) {
  int rc;
  if (!X509_set_version(x, X509_VERSION_3)) return SG_ENOMEM;
  if ((rc = cert__set_serial(x)) != 0) return rc;
  if ((rc = cert__set_name(x, r)) != 0) return rc;
  if ((rc = cert__set_validity(x, r->days)) != 0) return rc;
  if (!X509_set_pubkey(x, pub)) return SG_ENOMEM;
  if ((rc = cert__add_fixed_exts(x, EVP_PKEY_is_a(pub, "EC"))) != 0) return rc;
  return cert__add_san(x, r);
}

int cert_create_selfsigned(const struct cert_request *r, EVP_PKEY *pub, EVP_PKEY *signer,
                           X509 **cert_out, char *err, size_t errlen) {
  *cert_out = NULL;
  int rc = cert_request_check(r, err, errlen);
  if (rc) return rc;
  if (!EVP_PKEY_is_a(pub, "RSA") && !EVP_PKEY_is_a(pub, "EC"))
    return cert__fail(err, errlen, SG_EINVAL, "the key is %s, not RSA or EC",
                      EVP_PKEY_get0_type_name(pub));
  X509 *x = X509_new();
  if (!x) return SG_ENOMEM;
  if ((rc = cert__build(x, r, pub)) != 0) {
    rc = cert__ossl_fail(err, errlen, rc, "cannot build the certificate");
  } else if (X509_sign(x, signer, EVP_sha256()) <= 0) {
    rc = cert__ossl_fail(err, errlen, SG_EIO, "the token could not sign the certificate");
  } else if (X509_verify(x, pub) != 1) {
    ERR_clear_error();
    rc = cert__fail(err, errlen, SG_EINVAL, CERT__WRONG_KEY);
  }
  if (rc) {
    X509_free(x);
    return rc;
  }
  *cert_out = x;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* CSR (R10)                                                                */

/* The extensions a CA should copy: only those a request can ask for. */
static int cert__req_add_exts(X509_REQ *req, X509 *cert) {
  static const int nids[] = {NID_subject_alt_name, NID_key_usage, NID_ext_key_usage};
  STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
  if (!exts) return SG_ENOMEM;
  int ok = 1;
  for (size_t i = 0; ok && i < sizeof nids / sizeof nids[0]; i++) {
    int at = X509_get_ext_by_NID(cert, nids[i], -1);
    if (at >= 0) ok = sk_X509_EXTENSION_push(exts, X509_get_ext(cert, at)) > 0; /* borrowed */
  }
  /* No empty extensionRequest attribute: some CAs reject it. */
  if (ok && sk_X509_EXTENSION_num(exts) > 0) ok = X509_REQ_add_extensions(req, exts);
  sk_X509_EXTENSION_free(exts);
  return ok ? 0 : SG_ENOMEM;
}

int cert_create_csr(X509 *cert, EVP_PKEY *signer, X509_REQ **req_out, char *err, size_t errlen) {
  *req_out = NULL;
  EVP_PKEY *pub = X509_get0_pubkey(cert);
  if (!pub)
    return cert__ossl_fail(err, errlen, SG_EINVAL, "the certificate's public key is unreadable");
  X509_REQ *req = X509_REQ_new();
  int rc = req ? 0 : SG_ENOMEM;
  if (!rc && (!X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
              !X509_REQ_set_subject_name(req, X509_get_subject_name(cert)) ||
              !X509_REQ_set_pubkey(req, pub)))
    rc = SG_ENOMEM;
  if (!rc) rc = cert__req_add_exts(req, cert);
  if (rc) {
    rc = cert__ossl_fail(err, errlen, rc, "cannot build the CSR");
  } else if (X509_REQ_sign(req, signer, EVP_sha256()) <= 0) {
    rc = cert__ossl_fail(err, errlen, SG_EIO, "the token could not sign the CSR");
  } else if (X509_REQ_verify(req, pub) != 1) {
    ERR_clear_error();
    rc = cert__fail(err, errlen, SG_EINVAL, CERT__WRONG_KEY);
  }
  if (rc) {
    X509_REQ_free(req);
    return rc;
  }
  *req_out = req;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Key usage (R12, R13)                                                     */

unsigned cert_uses(X509 *x) {
  uint32_t flags = X509_get_extension_flags(x);
  /* Extensions OpenSSL could not decode allow nothing, rather than the
   * "no keyUsage" default. */
  if (flags & EXFLAG_INVALID) return 0;
  if (!(flags & EXFLAG_KUSAGE)) return CERT_USE_SIGN;
  uint32_t ku = X509_get_key_usage(x), uses = 0;
  const uint32_t sign = X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_NON_REPUDIATION;
  if ((ku & sign) == sign) uses |= CERT_USE_SIGN;
  EVP_PKEY *pk = X509_get0_pubkey(x);
  if (pk && EVP_PKEY_is_a(pk, "RSA") && (ku & X509v3_KU_KEY_ENCIPHERMENT)) uses |= CERT_USE_ENCRYPT;
  if (pk && EVP_PKEY_is_a(pk, "EC") && (ku & X509v3_KU_KEY_AGREEMENT)) uses |= CERT_USE_ENCRYPT;
  return uses;
}

/* ------------------------------------------------------------------------ */
/* Times and names for display                                              */

static bool cert__time(const ASN1_TIME *t, time_t *t_out, char *iso, size_t isolen) {
  struct tm tm;
  if (!t || !ASN1_TIME_to_tm(t, &tm)) return false;
  if (t_out) *t_out = timegm(&tm);
  if (iso) strftime(iso, isolen, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return true;
}

long cert_days_left(X509 *x, time_t now) {
  time_t na;
  /* Cannot fail for a decoded certificate; if it did, call it long dead. */
  if (!cert__time(X509_get0_notAfter(x), &na, NULL, 0)) return LONG_MIN;
  long long d = (long long)na - (long long)now;
  return (long)(d >= 0 ? d / 86400 : -((-d + 86399) / 86400)); /* floor */
}

/* Append name to a ", "-separated list, truncating rather than overflowing. */
static void cert__list_add(char *buf, size_t cap, const char *name) {
  size_t len = strlen(buf);
  if (len < cap) snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", name);
}

static const struct { uint32_t bit; const char *name; } cert__ku_names[] = {
  {X509v3_KU_DIGITAL_SIGNATURE, "digitalSignature"}, {X509v3_KU_NON_REPUDIATION, "nonRepudiation"},
  {X509v3_KU_KEY_ENCIPHERMENT, "keyEncipherment"}, {X509v3_KU_DATA_ENCIPHERMENT, "dataEncipherment"},
  {X509v3_KU_KEY_AGREEMENT, "keyAgreement"}, {X509v3_KU_KEY_CERT_SIGN, "keyCertSign"},
  {X509v3_KU_CRL_SIGN, "cRLSign"}, {X509v3_KU_ENCIPHER_ONLY, "encipherOnly"},
  {X509v3_KU_DECIPHER_ONLY, "decipherOnly"},
};

static void cert__ku_string(X509 *x, char *buf, size_t cap) {
  buf[0] = '\0';
  if (X509_get_extension_flags(x) & EXFLAG_KUSAGE) {
    uint32_t ku = X509_get_key_usage(x);
    for (size_t i = 0; i < sizeof cert__ku_names / sizeof cert__ku_names[0]; i++)
      if (ku & cert__ku_names[i].bit) cert__list_add(buf, cap, cert__ku_names[i].name);
  }
  if (!buf[0]) snprintf(buf, cap, "(none)");
}

static void cert__eku_string(X509 *x, char *buf, size_t cap) {
  buf[0] = '\0';
  EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
  for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku); i++) {
    const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
    int nid = OBJ_obj2nid(o);
    char oid[80];
    if (nid != NID_undef) snprintf(oid, sizeof oid, "%s", OBJ_nid2sn(nid));
    else OBJ_obj2txt(oid, sizeof oid, o, 1);
    cert__list_add(buf, cap, oid);
  }
  EXTENDED_KEY_USAGE_free(eku);
  ERR_clear_error(); /* an absent extension leaves nothing worth keeping */
  if (!buf[0]) snprintf(buf, cap, "(none)");
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */

/* "P-256" or "P-384" for the curves we accept; else OpenSSL's group name
 * (or "") in name, and false. */
static bool cert__curve(EVP_PKEY *pk, char *name, size_t cap) {
  char group[64] = "";
  name[0] = '\0';
  if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL))
    return false;
  int nid = OBJ_txt2nid(group);
  if (nid == NID_undef) nid = EC_curve_nist2nid(group);
  const char *nist = nid == NID_X9_62_prime256v1 ? "P-256" : nid == NID_secp384r1 ? "P-384" : NULL;
  snprintf(name, cap, "%s", nist ? nist : group);
  return nist != NULL;
}

static void cert__key_info(EVP_PKEY *pk, struct cert_info *ci) {
  if (!pk) return;
  const char *type = EVP_PKEY_get0_type_name(pk); /* "rsaEncryption" for some RSA keys */
  if (EVP_PKEY_is_a(pk, "RSA")) type = "RSA";
  if (EVP_PKEY_is_a(pk, "EC")) type = "EC";
  snprintf(ci->key_type, sizeof ci->key_type, "%s", type ? type : "?");
  ci->key_bits = (unsigned)EVP_PKEY_get_bits(pk);
  if (EVP_PKEY_is_a(pk, "EC")) cert__curve(pk, ci->curve, sizeof ci->curve);
  ERR_clear_error();
}

/* ------------------------------------------------------------------------ */
/* PKCS#12 (R11)                                                            */

/* Read at most CERT__MAX_P12 bytes of path into a fresh buffer. */
static int cert__read_file(const char *path, unsigned char **buf_out, size_t *len_out, char *err,
                           size_t errlen) {
  *buf_out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    return cert__fail(err, errlen, sgerr_from_errno(e), "%s", strerror(e));
  }
  if (!S_ISREG(st.st_mode) || st.st_size > CERT__MAX_P12) {
    close(fd);
    if (!S_ISREG(st.st_mode)) return cert__fail(err, errlen, SG_EINVAL, "not a regular file");
    return cert__fail(err, errlen, SG_ETOOBIG, "larger than 1 MiB (%lld bytes)",
                      (long long)st.st_size);
  }
  /* One spare byte shows a file that grew past the limit after fstat. */
  size_t cap = (size_t)st.st_size + 1, len = 0;
  unsigned char *buf = malloc(cap);
  ssize_t n = 0;
  while (buf && len < cap && (n = read(fd, buf + len, cap - len)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    len += (size_t)n;
  }
  int e = errno;
  close(fd);
  if (!buf) return SG_ENOMEM;
  if (n < 0 || len == cap) {
    OPENSSL_cleanse(buf, len);
    free(buf);
    return n < 0 ? cert__fail(err, errlen, sgerr_from_errno(e), "%s", strerror(e))
                 : cert__fail(err, errlen, SG_ETOOBIG, "grew while read");
  }
  *buf_out = buf;
  *len_out = len;
  return 0;
}

/* The MAC is checked before parsing so a wrong password is reported as one,
 * not as a decryption error.  OpenSSL treats "" and no password as two
 * passwords, as PKCS12_parse does; try both for an empty one. */
static bool cert__p12_mac_ok(PKCS12 *p12, const char *password) {
  if (!PKCS12_mac_present(p12)) return true;
  if (PKCS12_verify_mac(p12, password, -1)) return true;
  return !*password && PKCS12_verify_mac(p12, NULL, 0);
}

/* Whether OpenSSL's last failure was a missing algorithm (RC2, 3DES, ...
 * live in the legacy provider in OpenSSL 3). */
static bool cert__unsupported_error(void) {
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    int reason = ERR_GET_REASON(e);
    if (reason == ERR_R_UNSUPPORTED || reason == EVP_R_UNSUPPORTED_ALGORITHM ||
        reason == EVP_R_UNSUPPORTED_CIPHER || reason == EVP_R_UNSUPPORTED_KEYLENGTH) {
      ERR_clear_error();
      return true;
    }
  }
  return false;
}

static OSSL_PROVIDER *cert__legacy, *cert__default;

/* Registered after OpenSSL's own exit handler, so it runs before it: the
 * providers' child library contexts are released while OpenSSL is intact. */
static void cert__unload_legacy(void) {
  if (cert__legacy) OSSL_PROVIDER_unload(cert__legacy);
  if (cert__default) OSSL_PROVIDER_unload(cert__default);
  cert__legacy = cert__default = NULL;
}

/* Once per process.  Loading any provider explicitly stops OpenSSL from
 * loading "default" implicitly, so both are loaded.  This makes the legacy
 * algorithms available to the whole process; only PKCS#12 import asks for
 * them, and only after a file needed them. */
static void cert__load_legacy(void) {
  cert__legacy = OSSL_PROVIDER_load(NULL, "legacy");
  cert__default = OSSL_PROVIDER_load(NULL, "default");
  atexit(cert__unload_legacy);
}

static bool cert__p12_parse(PKCS12 *p12, const char *password, struct cert_p12 *p, bool *legacy) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  *legacy = false;
  if (PKCS12_parse(p12, password, &p->key, &p->cert, &p->chain)) return true;
  if (!cert__unsupported_error()) return false;
  *legacy = true;
  pthread_once(&once, cert__load_legacy);
  return cert__legacy && cert__default && PKCS12_parse(p12, password, &p->key, &p->cert, &p->chain);
}

/* Decode the buffer into p (key, cert, chain as PKCS12_parse left them). */
static int cert__p12_decode(const unsigned char *buf, size_t len, const char *password,
                            struct cert_p12 *p, char *err, size_t errlen) {
  const unsigned char *q = buf;
  PKCS12 *p12 = len <= LONG_MAX ? d2i_PKCS12(NULL, &q, (long)len) : NULL;
  int rc = 0;
  bool legacy = false;
  if (!p12 || q != buf + len) {
    rc = cert__fail(err, errlen, SG_EINVAL, "not a PKCS#12 file or corrupt");
  } else if (!cert__p12_mac_ok(p12, password ? password : "")) {
    rc = cert__fail(err, errlen, SG_EPERM, "wrong password");
  } else if (!cert__p12_parse(p12, password ? password : "", p, &legacy)) {
    rc = cert__fail(err, errlen, SG_EINVAL, "%s",
                    legacy ? "uses an algorithm OpenSSL cannot decrypt, even with its legacy "
                             "provider"
                           : "wrong password or corrupt file");
  }
  PKCS12_free(p12);
  ERR_clear_error();
  return rc;
}

/* PKCS12_parse picks the certificate by localKeyID; files without one put
 * every certificate in the chain.  Find the key's certificate there. */
static void cert__p12_pick_cert(struct cert_p12 *p) {
  if (p->cert && X509_check_private_key(p->cert, p->key)) return;
  for (int i = 0; p->chain && i < sk_X509_num(p->chain); i++) {
    X509 *c = sk_X509_value(p->chain, i);
    if (X509_check_private_key(c, p->key)) {
      (void)sk_X509_delete(p->chain, i);
      if (p->cert && !sk_X509_push(p->chain, p->cert)) X509_free(p->cert);
      p->cert = c;
      break;
    }
  }
  ERR_clear_error();
}

static int cert__p12_key_check(EVP_PKEY *key, char *err, size_t errlen) {
  char curve[64];
  int bits = EVP_PKEY_get_bits(key);
  if (EVP_PKEY_is_a(key, "RSA")) {
    if (bits >= 2048) return 0;
    return cert__fail(err, errlen, SG_EINVAL, "RSA key of %d bits (needs 2048 or more)", bits);
  }
  if (EVP_PKEY_is_a(key, "EC")) {
    if (cert__curve(key, curve, sizeof curve)) return 0;
    return cert__fail(err, errlen, SG_EINVAL, "EC key on curve %s (needs P-256 or P-384)",
                      curve[0] ? curve : "(unnamed)");
  }
  const char *type = EVP_PKEY_get0_type_name(key);
  return cert__fail(err, errlen, SG_EINVAL, "%s key (needs RSA or EC)", type ? type : "unknown");
}

static int cert__p12_cert_check(X509 *x, time_t now, char *err, size_t errlen) {
  char when[32] = "";
  if (X509_cmp_time(X509_get0_notBefore(x), &now) > 0) {
    cert__time(X509_get0_notBefore(x), NULL, when, sizeof when);
    return cert__fail(err, errlen, SG_EINVAL, "certificate not yet valid (from %s)", when);
  }
  if (X509_cmp_time(X509_get0_notAfter(x), &now) < 0) {
    cert__time(X509_get0_notAfter(x), NULL, when, sizeof when);
    return cert__fail(err, errlen, SG_EINVAL, "certificate expired on %s", when);
  }
  if (cert_uses(x) == 0) {
    char ku[200];
    cert__ku_string(x, ku, sizeof ku);
    return cert__fail(err, errlen, SG_EINVAL,
                      "certificate has key usage %s: fit neither for signing (needs "
                      "digitalSignature and nonRepudiation, R12) nor for encryption (needs "
                      "keyEncipherment, R13)", ku);
  }
  return 0;
}

static int cert__p12_check(struct cert_p12 *p, time_t now, char *err, size_t errlen) {
  if (!p->key) return cert__fail(err, errlen, SG_EINVAL, "no private key");
  cert__p12_pick_cert(p);
  if (!p->cert || !X509_check_private_key(p->cert, p->key)) {
    ERR_clear_error();
    return cert__fail(err, errlen, SG_EINVAL, "no certificate matching the private key");
  }
  int rc = cert__p12_key_check(p->key, err, errlen);
  if (!rc) rc = cert__p12_cert_check(p->cert, now, err, errlen);
  if (!rc && !p->chain && !(p->chain = sk_X509_new_null())) rc = SG_ENOMEM;
  return rc;
}

/* The steps above say what is wrong; this names the file, once. */
static int cert__p12_name_file(const char *path, int rc, char *err, size_t errlen) {
  char why[512];
  snprintf(why, sizeof why, "%s", err && errlen && *err ? err : sgerr_str(rc));
  return cert__fail(err, errlen, rc, "PKCS#12 file %s: %s", path, why);
}

int cert_p12_load(const char *path, const char *password, time_t now, struct cert_p12 *out,
                  char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (err && errlen) err[0] = '\0';
  unsigned char *buf = NULL;
  size_t len = 0;
  struct cert_p12 p = {0};
  int rc = cert__read_file(path, &buf, &len, err, errlen);
  if (!rc) {
    rc = cert__p12_decode(buf, len, password, &p, err, errlen);
    OPENSSL_cleanse(buf, len);
    free(buf);
  }
  if (!rc) rc = cert__p12_check(&p, now, err, errlen);
  if (rc) {
    cert_p12_free(&p);
    return cert__p12_name_file(path, rc, err, errlen);
  }
  *out = p;
  return 0;
}

void cert_p12_free(struct cert_p12 *p) {
  if (!p) return;
  EVP_PKEY_free(p->key); /* providers clear private BIGNUMs on free */
  X509_free(p->cert);
  sk_X509_pop_free(p->chain, X509_free);
  memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------------ */
/* cert show                                                                */

static void cert__name_string(const X509_NAME *n, char *buf, size_t cap) {
  BIO *b = BIO_new(BIO_s_mem());
  int len = 0;
  /* RFC 2253 escapes controls and non-ASCII bytes: an imported name cannot
   * write terminal escapes into `cert show`. */
  if (b && X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253) >= 0) len = BIO_read(b, buf, (int)cap - 1);
  buf[len > 0 ? len : 0] = '\0';
  BIO_free(b);
}

/* Collect the SAN entries of one type.  An entry with an embedded NUL is
 * an attack on C string handling, not a name: skipped. */
static int cert__san_list(const GENERAL_NAMES *gens, int type, char ***list_out, size_t *n_out) {
  int total = sk_GENERAL_NAME_num(gens);
  char **list = calloc(total > 0 ? (size_t)total : 1, sizeof *list);
  if (!list) return SG_ENOMEM;
  size_t n = 0;
  for (int i = 0; i < total; i++) {
    int t;
    const ASN1_STRING *s = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, i), &t);
    if (t != type) continue;
    const char *d = (const char *)ASN1_STRING_get0_data(s);
    size_t len = (size_t)ASN1_STRING_length(s);
    if (memchr(d, '\0', len)) continue;
    if (!(list[n] = strndup(d, len))) {
      *list_out = list;
      *n_out = n;
      return SG_ENOMEM;
    }
    n++;
  }
  *list_out = list;
  *n_out = n;
  return 0;
}

static int cert__san_info(X509 *x, struct cert_info *ci) {
  GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  ERR_clear_error();
  int rc = cert__san_list(gens, GEN_DNS, &ci->san_dns, &ci->n_san_dns);
  if (!rc) rc = cert__san_list(gens, GEN_EMAIL, &ci->san_email, &ci->n_san_email);
  GENERAL_NAMES_free(gens);
  return rc;
}

static int cert__serial_fp(X509 *x, struct cert_info *ci) {
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  BN_free(bn);
  if (!hex) return SG_ENOMEM;
  snprintf(ci->serial, sizeof ci->serial, "%s", hex);
  OPENSSL_free(hex);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!X509_digest(x, EVP_sha256(), md, &n)) return SG_ENOMEM;
  for (unsigned i = 0; i < n && 3 * i + 3 <= sizeof ci->fingerprint; i++)
    snprintf(ci->fingerprint + 3 * i, sizeof ci->fingerprint - 3 * i, "%02X%s", md[i],
             i + 1 < n ? ":" : "");
  return 0;
}

/* Self-signed: issuer = subject, and its own key verifies the signature.
 * Not X509_check_issued(x, x): that also demands keyCertSign, which an
 * end-entity S/MIME certificate (ours) rightly lacks. */
static bool cert__self_signed(X509 *x) {
  EVP_PKEY *pk = X509_get0_pubkey(x);
  bool ss = pk && !X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) &&
            X509_verify(x, pk) == 1;
  ERR_clear_error();
  return ss;
}

int cert_info_get(X509 *x, struct cert_info *out) {
  memset(out, 0, sizeof *out);
  cert__name_string(X509_get_subject_name(x), out->subject, sizeof out->subject);
  cert__name_string(X509_get_issuer_name(x), out->issuer, sizeof out->issuer);
  cert__time(X509_get0_notBefore(x), &out->not_before_t, out->not_before, sizeof out->not_before);
  cert__time(X509_get0_notAfter(x), &out->not_after_t, out->not_after, sizeof out->not_after);
  cert__key_info(X509_get0_pubkey(x), out);
  cert__ku_string(x, out->key_usage, sizeof out->key_usage);
  cert__eku_string(x, out->ext_key_usage, sizeof out->ext_key_usage);
  out->self_signed = cert__self_signed(x);
  out->uses = cert_uses(x);
  int rc = cert__serial_fp(x, out);
  if (!rc) rc = cert__san_info(x, out);
  if (rc) cert_info_free(out);
  ERR_clear_error();
  return rc;
}

static void cert__strv_free(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

void cert_info_free(struct cert_info *ci) {
  if (!ci) return;
  cert__strv_free(ci->san_dns, ci->n_san_dns);
  cert__strv_free(ci->san_email, ci->n_san_email);
  memset(ci, 0, sizeof *ci);
}

int cert_to_pem(X509 *x, char **pem_out) {
  *pem_out = NULL;
  BIO *b = BIO_new(BIO_s_mem());
  char *data = NULL;
  long len = 0;
  int rc = SG_ENOMEM;
  if (b && PEM_write_bio_X509(b, x) && (len = BIO_get_mem_data(b, &data)) > 0 &&
      (*pem_out = malloc((size_t)len + 1)) != NULL) {
    memcpy(*pem_out, data, (size_t)len);
    (*pem_out)[len] = '\0';
    rc = 0;
  }
  BIO_free(b);
  ERR_clear_error();
  return rc;
}

bool cert_email_matches(const char *san, const char *addr) {
  const char *sat = strrchr(san, '@'), *aat = strrchr(addr, '@');
  if (!sat || !aat || sat - san != aat - addr || strcasecmp(sat + 1, aat + 1) != 0) return false;
  size_t local = (size_t)(aat - addr);
  if (memcmp(san, addr, local) == 0) return true;
  for (size_t i = 0; i < local; i++)
    if (san[i] != tolower((unsigned char)addr[i])) return false;
  return true;
}

bool cert_dns_matches(const char *san, const char *domain) {
  if (strcasecmp(san, domain) == 0) return true;
  if (san[0] != '*' || san[1] != '.' || !strchr(san + 2, '.')) return false;
  const char *dot = strchr(domain, '.');
  return dot && dot != domain && strcasecmp(dot + 1, san + 2) == 0;
}
