/* Unit tests for crypto/cert.c (R8-R13): request checks, self-signed
 * certificates and CSRs (cross-checked with the openssl command), PKCS#12
 * import and its refusals, key usage, `cert show` details.  Software keys
 * stand in for token keys: cert.c only ever signs through an EVP_PKEY. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/sgerr.h"
#include "crypto/cert.h"

static EVP_PKEY *rsa_key, *rsa_other, *ec_key, *ca_key;
static X509 *ca_cert;
static char tmpdir[] = "/tmp/test_cert.XXXXXX";

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static const char *tmp_path(const char *name) {
  static char buf[4][256];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
  return p;
}

__attribute__((format(printf, 1, 2)))
static int run(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static void write_cert_pem(const char *path, X509 *x) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(PEM_write_X509(f, x), 1);
  assert_int_equal(fclose(f), 0);
}

static void write_key_pem(const char *path, EVP_PKEY *k) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
  assert_int_equal(fclose(f), 0);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  assert_non_null(e);
  assert_int_equal(X509_add_ext(x, e, -1), 1);
  X509_EXTENSION_free(e);
}

/* A certificate for key, issued by issuer/issuer_key (NULL: self-signed),
 * valid from now+from_s to now+to_s, with keyUsage ku (NULL: none). */
static X509 *make_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
                       const char *ku, long from_s, long to_s) {
  X509 *x = X509_new();
  assert_non_null(x);
  time_t now = time(NULL);
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(now & 0xffffff) + 1);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                             (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
  X509_time_adj_ex(X509_getm_notBefore(x), 0, from_s, &now);
  X509_time_adj_ex(X509_getm_notAfter(x), 0, to_s, &now);
  X509_set_pubkey(x, key);
  if (ku) add_ext(x, issuer ? issuer : x, NID_key_usage, ku);
  assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return x;
}

static X509 *leaf(EVP_PKEY *key, const char *ku) {
  return make_cert(key, ca_cert, ca_key, "leaf.example.com", ku, -3600, 30 * 86400);
}

static const char *const good_domains[] = {"example.com", "*.example.net"};
static const char *const good_emails[] = {"alice@example.com"};

static struct cert_request good_request(void) {
  return (struct cert_request){
      .cn = "gw.example.com", .org = "Example Ltd", .ou = "IT", .city = "Zürich",
      .state = "ZH", .country = "ch", .days = 30, .san_domains = good_domains,
      .n_san_domains = 2, .san_emails = good_emails, .n_san_emails = 1, .fqdn_validate = true};
}

static X509 *make_selfsigned(EVP_PKEY *key) {
  struct cert_request r = good_request();
  X509 *x = NULL;
  char err[256] = "";
  int rc = cert_create_selfsigned(&r, key, key, &x, err, sizeof err);
  if (rc) fprintf(stderr, "cert_create_selfsigned: %s\n", err);
  assert_int_equal(rc, 0);
  assert_non_null(x);
  return x;
}

static void make_p12(const char *path, EVP_PKEY *key, X509 *x, STACK_OF(X509) *chain) {
  PKCS12 *p12 = PKCS12_create("secret", "test", key, x, chain, 0, 0, 0, 0, 0);
  assert_non_null(p12);
  unsigned char *der = NULL;
  int len = i2d_PKCS12(p12, &der);
  assert_true(len > 0);
  write_bytes(path, der, (size_t)len);
  OPENSSL_free(der);
  PKCS12_free(p12);
}

/* Load a PKCS#12 that must be refused; return rc and the message in err. */
static int p12_refused(const char *path, const char *password, char *err, size_t errlen) {
  struct cert_p12 p;
  int rc = cert_p12_load(path, password, time(NULL), &p, err, errlen);
  print_message("refused: %s\n", err);
  assert_true(rc < 0);
  assert_null(p.key);
  assert_null(p.cert);
  assert_null(p.chain);
  return rc;
}

static void make_p12_with_ku(const char *path, EVP_PKEY *key, const char *ku, long from_s,
                             long to_s) {
  X509 *x = make_cert(key, ca_cert, ca_key, "leaf.example.com", ku, from_s, to_s);
  make_p12(path, key, x, NULL);
  X509_free(x);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */

static void test_fqdn_table(void **state) {
  (void)state;
  static const struct { const char *name; bool wildcard, ok; } t[] = {
      {"gw.example.com", false, true},     {"a-b.example.co.uk", false, true},
      {"*.example.net", true, true},       {"*.example.net", false, false},
      {"gateway", false, false},           {"-a.example.com", false, false},
      {"a-.example.com", false, false},    {"a..b", false, false},
      {"example.123", false, false},       {"192.0.2.1", false, false},
      {"exa mple.com", false, false},      {"*.com", true, false},
      {"*foo.example.com", true, false},   {"foo.*.example.com", true, false},
      {"", false, false},                  {"gw.example.com.", false, false},
      {"under_score.example.com", false, false},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    if (cert_is_fqdn(t[i].name, t[i].wildcard) != t[i].ok) fail_msg("'%s' misjudged", t[i].name);
  }
  char name[300];
  memset(name, 0, sizeof name);
  for (int i = 0; i < 4; i++) {
    memset(name + i * 62, 'a', 61); /* four labels of 61 letters and a dot */
    name[i * 62 + 61] = '.';
  }
  memcpy(name + 248, "ab.cd", 5); /* 253 characters: the limit */
  assert_int_equal(strlen(name), 253);
  assert_true(cert_is_fqdn(name, false));
  memcpy(name + 248, "abc.de", 6); /* 254 */
  assert_false(cert_is_fqdn(name, false));
  char label64[80];
  memset(label64, 'a', 64);
  strcpy(label64 + 64, ".com");
  assert_false(cert_is_fqdn(label64, false));
}

static void expect_refused(const struct cert_request *r, int code, const char *needle) {
  char err[256] = "";
  assert_int_equal(cert_request_check(r, err, sizeof err), code);
  print_message("refused: %s\n", err);
  if (!strstr(err, needle)) fail_msg("'%s' lacks '%s'", err, needle);
}

static void test_request_errors_name_the_option(void **state) {
  (void)state;
  struct cert_request r = good_request();
  char err[256];
  assert_int_equal(cert_request_check(&r, err, sizeof err), 0);
  r.cn = "gateway";
  expect_refused(&r, SG_EINVAL,
                 "--cn: 'gateway' is not a fully qualified domain name (--fqdn-validate)");
  r = good_request();
  r.cn = NULL;
  expect_refused(&r, SG_EINVAL, "--cn");
  r = good_request();
  const char *bad_dom[] = {"ok.example.com", "exa mple.com"};
  r.san_domains = bad_dom;
  expect_refused(&r, SG_EINVAL,
                 "--san-domains: 'exa mple.com' is not a fully qualified domain name (--fqdn-validate)");
  r.fqdn_validate = false;
  expect_refused(&r, SG_EINVAL, "--san-domains: 'exa mple.com' is not a valid domain name");
  r = good_request();
  const char *bad_mail[] = {"a@b@example.com"};
  r.san_emails = bad_mail;
  expect_refused(&r, SG_EINVAL, "--san-emails: 'a@b@example.com'");
  r = good_request();
  r.country = "CHE";
  expect_refused(&r, SG_EINVAL, "--country: 'CHE'");
  r = good_request();
  r.org = "bad\x1b[31morg"; /* an escape sequence is not echoed back */
  expect_refused(&r, SG_EINVAL, "--org: 'bad?[31morg' must be 1 to 64 bytes of UTF-8 text");
}

static void test_request_email_forms(void **state) {
  (void)state;
  static const struct { const char *addr; bool ok; } t[] = {
      {"alice@example.com", true}, {"a.b+c@sub.example.org", true}, {"@example.com", false},
      {"alice", false},            {"al ice@example.com", false},   {"alice@", false},
      {"alice@exa mple.com", false}, {"al\tice@example.com", false}, {"alice@*.example.com", false},
  };
  struct cert_request r = good_request();
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    const char *one[] = {t[i].addr};
    r.san_emails = one;
    char err[256] = "";
    int rc = cert_request_check(&r, err, sizeof err);
    if ((rc == 0) != t[i].ok) fail_msg("'%s' misjudged: %s", t[i].addr, err);
  }
}

static void test_request_without_fqdn_validate(void **state) {
  (void)state;
  struct cert_request r = good_request();
  const char *single[] = {"mailhost"};
  r.fqdn_validate = false;
  r.cn = "Example gateway ü";
  r.san_domains = single;
  r.n_san_domains = 1;
  char err[256] = "";
  assert_int_equal(cert_request_check(&r, err, sizeof err), 0);
  char cn65[66];
  memset(cn65, 'x', 65);
  cn65[65] = '\0';
  r.cn = cn65;
  expect_refused(&r, SG_EINVAL, "--cn");
  r.cn = "\xC3\x28"; /* not UTF-8, and shown without its stray byte */
  expect_refused(&r, SG_EINVAL, "--cn: '?(' must be");
}

static void test_request_san_limit(void **state) {
  (void)state;
  const char *many[101];
  for (int i = 0; i < 101; i++) many[i] = "example.com";
  struct cert_request r = good_request();
  r.san_domains = many;
  r.n_san_domains = 100;
  char err[256] = "";
  assert_int_equal(cert_request_check(&r, err, sizeof err), 0);
  r.n_san_domains = 101;
  expect_refused(&r, SG_ELIMIT, "--san-domains");
}

/* ------------------------------------------------------------------------ */
/* Self-signed certificates (R8)                                            */

static void test_selfsigned_rsa_extensions(void **state) {
  (void)state;
  X509 *x = make_selfsigned(rsa_key);
  int crit = -1;
  BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
  assert_non_null(bc);
  assert_int_equal(crit, 1);
  assert_false(bc->ca);
  BASIC_CONSTRAINTS_free(bc);
  ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
  assert_non_null(ku);
  assert_int_equal(crit, 1);
  assert_true(ASN1_BIT_STRING_get_bit(ku, 0)); /* digitalSignature */
  assert_true(ASN1_BIT_STRING_get_bit(ku, 1)); /* nonRepudiation */
  assert_true(ASN1_BIT_STRING_get_bit(ku, 2)); /* keyEncipherment */
  assert_false(ASN1_BIT_STRING_get_bit(ku, 4)); /* keyAgreement */
  assert_false(ASN1_BIT_STRING_get_bit(ku, 5)); /* keyCertSign */
  ASN1_BIT_STRING_free(ku);
  EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
  assert_non_null(eku);
  assert_int_equal(sk_ASN1_OBJECT_num(eku), 1);
  assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_email_protect);
  EXTENDED_KEY_USAGE_free(eku);
  ASN1_OCTET_STRING *ski = X509_get_ext_d2i(x, NID_subject_key_identifier, NULL, NULL);
  AUTHORITY_KEYID *aki = X509_get_ext_d2i(x, NID_authority_key_identifier, NULL, NULL);
  assert_non_null(ski);
  assert_non_null(aki);
  assert_non_null(aki->keyid);
  assert_int_equal(ASN1_OCTET_STRING_cmp(ski, aki->keyid), 0);
  ASN1_OCTET_STRING_free(ski);
  AUTHORITY_KEYID_free(aki);
  assert_int_equal(X509_get_version(x), X509_VERSION_3);
  X509_free(x);
}

static void test_selfsigned_serial_positive_128_bits(void **state) {
  (void)state;
  X509 *a = make_selfsigned(ec_key), *b = make_selfsigned(ec_key);
  BIGNUM *sa = ASN1_INTEGER_to_BN(X509_get0_serialNumber(a), NULL);
  BIGNUM *sb = ASN1_INTEGER_to_BN(X509_get0_serialNumber(b), NULL);
  assert_false(BN_is_negative(sa));
  assert_false(BN_is_zero(sa));
  assert_true(BN_num_bits(sa) <= 127);
  assert_true(BN_cmp(sa, sb) != 0);
  BN_free(sa);
  BN_free(sb);
  X509_free(a);
  X509_free(b);
}

static void test_selfsigned_subject_sans_validity(void **state) {
  (void)state;
  time_t before = time(NULL);
  X509 *x = make_selfsigned(rsa_key);
  struct cert_info ci;
  assert_int_equal(cert_info_get(x, &ci), 0);
  assert_string_equal(ci.subject, "CN=gw.example.com,OU=IT,O=Example Ltd,L=Z\\C3\\BCrich,ST=ZH,C=CH");
  assert_string_equal(ci.issuer, ci.subject);
  assert_int_equal(ci.n_san_dns, 2);
  assert_string_equal(ci.san_dns[0], "example.com");
  assert_string_equal(ci.san_dns[1], "*.example.net");
  assert_int_equal(ci.n_san_email, 1);
  assert_string_equal(ci.san_email[0], "alice@example.com");
  assert_true(ci.not_before_t >= before - 301 && ci.not_before_t <= time(NULL) - 299);
  assert_true(ci.not_after_t - ci.not_before_t == 30 * 86400 + 300);
  assert_true(ci.self_signed);
  assert_int_equal(ci.uses, CERT_USE_SIGN | CERT_USE_ENCRYPT);
  long left = cert_days_left(x, time(NULL));
  assert_true(left == 30 || left == 29);
  assert_int_equal(X509_verify(x, rsa_key), 1);
  cert_info_free(&ci);
  X509_free(x);
}

static void test_selfsigned_openssl_accepts(void **state) {
  (void)state;
  X509 *x = make_selfsigned(rsa_key);
  char *pem = NULL;
  assert_int_equal(cert_to_pem(x, &pem), 0);
  const char *path = tmp_path("self.pem");
  write_bytes(path, pem, strlen(pem));
  assert_int_equal(run("openssl x509 -in %s -noout -text >/dev/null", path), 0);
  /* A CA:FALSE leaf is no trust anchor for plain -CAfile: trust it as the
   * end of a partial chain, which still runs the S/MIME purpose checks. */
  assert_int_equal(run("openssl verify -partial_chain -trusted %s -purpose smimesign %s >/dev/null",
                       path, path), 0);
  assert_int_equal(run("openssl verify -partial_chain -trusted %s -purpose smimeencrypt %s >/dev/null",
                       path, path), 0);
  /* And the checks would notice a wrong purpose. */
  assert_int_not_equal(run("openssl verify -partial_chain -trusted %s -purpose sslserver %s "
                           ">/dev/null 2>&1", path, path), 0);
  free(pem);
  unlink(path);
  X509_free(x);
}

static void test_selfsigned_ec_has_key_agreement(void **state) {
  (void)state;
  X509 *x = make_selfsigned(ec_key);
  uint32_t ku = X509_get_key_usage(x);
  assert_true(ku & X509v3_KU_KEY_AGREEMENT);
  assert_false(ku & X509v3_KU_KEY_ENCIPHERMENT);
  assert_true(ku & X509v3_KU_DIGITAL_SIGNATURE);
  assert_true(ku & X509v3_KU_NON_REPUDIATION);
  assert_int_equal(cert_uses(x), CERT_USE_SIGN | CERT_USE_ENCRYPT);
  assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
  X509_free(x);
}

static void test_selfsigned_wrong_signer_refused(void **state) {
  (void)state;
  struct cert_request r = good_request();
  X509 *x = (X509 *)1;
  char err[256] = "";
  assert_int_equal(cert_create_selfsigned(&r, rsa_key, rsa_other, &x, err, sizeof err), SG_EINVAL);
  assert_null(x);
  assert_string_equal(err, "the token's signature does not verify with the key's public half");
  assert_int_equal(ERR_peek_error(), 0); /* nothing left in OpenSSL's queue */
}

static void test_selfsigned_checks_request(void **state) {
  (void)state;
  struct cert_request r = good_request();
  const char *inject[] = {"example.com,email:evil@example.org"};
  r.san_domains = inject;
  r.n_san_domains = 1;
  X509 *x = NULL;
  char err[256] = "";
  assert_int_equal(cert_create_selfsigned(&r, rsa_key, rsa_key, &x, err, sizeof err), SG_EINVAL);
  assert_null(x);
  assert_non_null(strstr(err, "--san-domains"));
}

/* ------------------------------------------------------------------------ */
/* CSR (R10)                                                                */

static void test_csr_verifies_and_copies(void **state) {
  (void)state;
  X509 *x = make_selfsigned(rsa_key);
  X509_REQ *req = NULL;
  char err[256] = "";
  assert_int_equal(cert_create_csr(x, rsa_key, &req, err, sizeof err), 0);
  assert_int_equal(X509_NAME_cmp(X509_REQ_get_subject_name(req), X509_get_subject_name(x)), 0);
  STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
  assert_int_equal(sk_X509_EXTENSION_num(exts), 3);
  int at = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
  assert_true(at >= 0);
  ASN1_OCTET_STRING *mine = X509_EXTENSION_get_data(sk_X509_EXTENSION_value(exts, at));
  ASN1_OCTET_STRING *theirs =
      X509_EXTENSION_get_data(X509_get_ext(x, X509_get_ext_by_NID(x, NID_subject_alt_name, -1)));
  assert_int_equal(ASN1_OCTET_STRING_cmp(mine, theirs), 0);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  const char *path = tmp_path("csr.pem");
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(PEM_write_X509_REQ(f, req), 1);
  fclose(f);
  assert_int_equal(run("openssl req -in %s -verify -noout 2>/dev/null", path), 0);
  unlink(path);
  X509_REQ_free(req);
  X509_free(x);
}

static void test_csr_wrong_signer_refused(void **state) {
  (void)state;
  X509 *x = make_selfsigned(rsa_key);
  X509_REQ *req = (X509_REQ *)1;
  char err[256] = "";
  assert_int_equal(cert_create_csr(x, rsa_other, &req, err, sizeof err), SG_EINVAL);
  assert_null(req);
  assert_non_null(strstr(err, "does not verify"));
  X509_free(x);
}

/* ------------------------------------------------------------------------ */
/* PKCS#12 (R11)                                                            */

static void test_p12_good_with_chain(void **state) {
  (void)state;
  X509 *x = leaf(rsa_key, "critical,digitalSignature,nonRepudiation,keyEncipherment");
  STACK_OF(X509) *chain = sk_X509_new_null();
  sk_X509_push(chain, ca_cert);
  const char *path = tmp_path("good.p12");
  make_p12(path, rsa_key, x, chain);
  sk_X509_free(chain);
  struct cert_p12 p;
  char err[256] = "";
  assert_int_equal(cert_p12_load(path, "secret", time(NULL), &p, err, sizeof err), 0);
  assert_int_equal(EVP_PKEY_eq(p.key, rsa_key), 1);
  assert_int_equal(X509_cmp(p.cert, x), 0);
  assert_int_equal(sk_X509_num(p.chain), 1);
  assert_int_equal(X509_cmp(sk_X509_value(p.chain, 0), ca_cert), 0);
  cert_p12_free(&p);
  assert_null(p.key);
  unlink(path);
  X509_free(x);
}

/* Files from `openssl pkcs12 -export`, in 3.0's default (AES, PBKDF2) and
 * -legacy (RC2-40 and 3DES, which need the legacy provider) formats. */
static void test_p12_openssl_export(void **state) {
  (void)state;
  X509 *x = leaf(ec_key, "critical,digitalSignature,nonRepudiation,keyAgreement");
  const char *key = tmp_path("k.pem"), *crt = tmp_path("c.pem"), *out = tmp_path("cli.p12");
  write_key_pem(key, ec_key);
  write_cert_pem(crt, x);
  static const char *const variants[] = {"", "-legacy"};
  for (size_t i = 0; i < 2; i++) {
    assert_int_equal(run("openssl pkcs12 -export %s -inkey %s -in %s -passout pass:pw -out %s",
                         variants[i], key, crt, out), 0);
    struct cert_p12 p;
    char err[256] = "";
    int rc = cert_p12_load(out, "pw", time(NULL), &p, err, sizeof err);
    if (rc) fail_msg("%s: %s", variants[i], err);
    assert_int_equal(X509_cmp(p.cert, x), 0);
    assert_int_equal(sk_X509_num(p.chain), 0);
    cert_p12_free(&p);
  }
  unlink(key);
  unlink(crt);
  unlink(out);
  X509_free(x);
}

static void test_p12_wrong_password(void **state) {
  (void)state;
  X509 *x = leaf(rsa_key, NULL);
  const char *path = tmp_path("pw.p12");
  make_p12(path, rsa_key, x, NULL);
  char err[256] = "";
  assert_int_equal(p12_refused(path, "not-the-secret", err, sizeof err), SG_EPERM);
  assert_non_null(strstr(err, "wrong password"));
  assert_non_null(strstr(err, path));
  unlink(path);
  X509_free(x);
}

static void test_p12_corrupt(void **state) {
  (void)state;
  X509 *x = leaf(rsa_key, NULL);
  const char *good = tmp_path("whole.p12"), *bad = tmp_path("bad.p12");
  make_p12(good, rsa_key, x, NULL);
  FILE *f = fopen(good, "rb");
  unsigned char buf[8192];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  assert_true(n > 100 && n < sizeof buf);
  char err[256] = "";
  write_bytes(bad, buf, n / 2); /* truncated */
  assert_int_equal(p12_refused(bad, "secret", err, sizeof err), SG_EINVAL);
  assert_non_null(strstr(err, "not a PKCS#12 file or corrupt"));
  RAND_bytes(buf, 2000);
  buf[0] = 0x42; /* not a SEQUENCE: random bytes that cannot start DER */
  write_bytes(bad, buf, 2000);
  assert_int_equal(p12_refused(bad, "secret", err, sizeof err), SG_EINVAL);
  assert_non_null(strstr(err, "not a PKCS#12 file or corrupt"));
  write_bytes(bad, "", 0); /* empty */
  assert_int_equal(p12_refused(bad, "secret", err, sizeof err), SG_EINVAL);
  unlink(good);
  unlink(bad);
  X509_free(x);
}

static void test_p12_expired_and_not_yet_valid(void **state) {
  (void)state;
  const char *path = tmp_path("time.p12");
  char err[256] = "";
  make_p12_with_ku(path, rsa_key, NULL, -10 * 86400, -86400);
  p12_refused(path, "secret", err, sizeof err);
  assert_non_null(strstr(err, "expired on 20"));
  make_p12_with_ku(path, rsa_key, NULL, 86400, 10 * 86400);
  p12_refused(path, "secret", err, sizeof err);
  assert_non_null(strstr(err, "not yet valid"));
  unlink(path);
}

static void test_p12_key_usage_unfit(void **state) {
  (void)state;
  const char *path = tmp_path("ku.p12");
  char err[512] = "";
  make_p12_with_ku(path, rsa_key, "critical,keyCertSign", -3600, 86400);
  p12_refused(path, "secret", err, sizeof err);
  assert_non_null(strstr(err, "key usage keyCertSign"));
  assert_non_null(strstr(err, "R12"));
  assert_non_null(strstr(err, "R13"));
  unlink(path);
}

static void test_p12_small_rsa_refused(void **state) {
  (void)state;
  EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  assert_non_null(small);
  const char *path = tmp_path("small.p12");
  char err[256] = "";
  make_p12_with_ku(path, small, NULL, -3600, 86400);
  p12_refused(path, "secret", err, sizeof err);
  assert_non_null(strstr(err, "RSA key of 1024 bits"));
  unlink(path);
  EVP_PKEY_free(small);
}

static void test_p12_other_curve_refused(void **state) {
  (void)state;
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
  assert_non_null(k);
  const char *path = tmp_path("k1.p12");
  char err[256] = "";
  make_p12_with_ku(path, k, NULL, -3600, 86400);
  p12_refused(path, "secret", err, sizeof err);
  assert_non_null(strstr(err, "secp256k1"));
  unlink(path);
  EVP_PKEY_free(k);
}

static void test_p12_too_big(void **state) {
  (void)state;
  const char *path = tmp_path("big.p12");
  size_t n = 1024 * 1024 + 1;
  char *buf = calloc(1, n);
  write_bytes(path, buf, n);
  free(buf);
  char err[256] = "";
  assert_int_equal(p12_refused(path, "secret", err, sizeof err), SG_ETOOBIG);
  assert_non_null(strstr(err, "1 MiB"));
  unlink(path);
}

static void test_p12_missing_file(void **state) {
  (void)state;
  const char *path = tmp_path("absent.p12");
  char err[256] = "";
  assert_int_equal(p12_refused(path, "secret", err, sizeof err), SG_ENOTFOUND);
  assert_non_null(strstr(err, strerror(ENOENT)));
  assert_non_null(strstr(err, path));
}

/* ------------------------------------------------------------------------ */
/* Key usage, days, details                                                 */

static void test_cert_uses_table(void **state) {
  (void)state;
  static const struct { int ec; const char *ku; unsigned uses; } t[] = {
      {0, NULL, CERT_USE_SIGN},
      {0, "digitalSignature,nonRepudiation", CERT_USE_SIGN},
      {0, "keyEncipherment", CERT_USE_ENCRYPT},
      {0, "digitalSignature", 0},
      {0, "keyAgreement", 0},
      {1, "keyAgreement", CERT_USE_ENCRYPT},
      {1, "keyEncipherment", 0},
      {1, "digitalSignature,nonRepudiation,keyAgreement", CERT_USE_SIGN | CERT_USE_ENCRYPT},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    X509 *x = leaf(t[i].ec ? ec_key : rsa_key, t[i].ku);
    if (cert_uses(x) != t[i].uses) fail_msg("row %zu: uses %u", i, cert_uses(x));
    X509_free(x);
  }
}

static void test_cert_days_left(void **state) {
  (void)state;
  X509 *x = leaf(ec_key, NULL);
  time_t na;
  struct tm tm;
  assert_int_equal(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
  na = timegm(&tm);
  assert_int_equal(cert_days_left(x, na - 3 * 86400), 3);
  assert_int_equal(cert_days_left(x, na - 3 * 86400 + 1), 2);
  assert_int_equal(cert_days_left(x, na), 0);
  assert_int_equal(cert_days_left(x, na + 1), -1);
  assert_int_equal(cert_days_left(x, na + 86400), -1);
  assert_int_equal(cert_days_left(x, na + 86401), -2);
  X509_free(x);
}

static void test_cert_info_details(void **state) {
  (void)state;
  X509 *x = make_selfsigned(ec_key);
  struct cert_info ci;
  assert_int_equal(cert_info_get(x, &ci), 0);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n;
  assert_int_equal(X509_digest(x, EVP_sha256(), md, &n), 1);
  char want[100] = "";
  for (unsigned i = 0; i < n; i++) sprintf(want + strlen(want), "%s%02X", i ? ":" : "", md[i]);
  assert_string_equal(ci.fingerprint, want);
  assert_string_equal(ci.key_type, "EC");
  assert_int_equal(ci.key_bits, 256);
  assert_string_equal(ci.curve, "P-256");
  assert_string_equal(ci.key_usage, "digitalSignature, nonRepudiation, keyAgreement");
  assert_string_equal(ci.ext_key_usage, "emailProtection");
  assert_int_equal(strlen(ci.not_after), 20);
  assert_int_equal(ci.not_after[19], 'Z');
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *hex = BN_bn2hex(bn);
  assert_string_equal(ci.serial, hex);
  OPENSSL_free(hex);
  BN_free(bn);
  cert_info_free(&ci);
  assert_null(ci.san_dns);
  X509_free(x);
}

static void test_cert_info_foreign_leaf(void **state) {
  (void)state;
  X509 *x = leaf(rsa_key, NULL);
  struct cert_info ci;
  assert_int_equal(cert_info_get(x, &ci), 0);
  assert_false(ci.self_signed);
  assert_string_equal(ci.key_type, "RSA");
  assert_int_equal(ci.key_bits, 2048);
  assert_string_equal(ci.curve, "");
  assert_string_equal(ci.key_usage, "(none)");
  assert_string_equal(ci.ext_key_usage, "(none)");
  assert_int_equal(ci.n_san_dns, 0);
  assert_int_equal(ci.n_san_email, 0);
  assert_int_equal(ci.uses, CERT_USE_SIGN);
  assert_string_equal(ci.issuer, "CN=Test CA");
  cert_info_free(&ci);
  X509_free(x);
}

static void test_cert_to_pem_round_trip(void **state) {
  (void)state;
  X509 *x = make_selfsigned(ec_key);
  char *pem = NULL;
  assert_int_equal(cert_to_pem(x, &pem), 0);
  assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE-----"));
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *y = PEM_read_bio_X509(b, NULL, NULL, NULL);
  assert_non_null(y);
  assert_int_equal(X509_cmp(x, y), 0);
  X509_free(y);
  BIO_free(b);
  free(pem);
  X509_free(x);
}

/* ------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int group_setup(void **state) {
  (void)state;
  if (!mkdtemp(tmpdir)) return -1;
  rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (!rsa_key || !rsa_other || !ec_key || !ca_key) return -1;
  ca_cert = make_cert(ca_key, NULL, NULL, "Test CA", "critical,keyCertSign,cRLSign", -86400,
                      365 * 86400);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  X509_free(ca_cert);
  EVP_PKEY_free(rsa_key);
  EVP_PKEY_free(rsa_other);
  EVP_PKEY_free(ec_key);
  EVP_PKEY_free(ca_key);
  return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The naming rules the key store, verification and harvesting share. */
static void test_name_matching_rules(void **state) {
  (void)state;
  assert_true(cert_email_matches("bob@example.com", "bob@EXAMPLE.com"));
  assert_true(cert_email_matches("bob@example.com", "Bob@example.com")); /* sender's case, cert lower */
  assert_true(cert_email_matches("Bob@example.com", "Bob@example.com"));
  assert_false(cert_email_matches("Bob@example.com", "bob@example.com")); /* a mailbox may be case-sensitive */
  assert_false(cert_email_matches("bob@example.com", "bobby@example.com"));
  assert_false(cert_email_matches("bob@example.com", "bob@example.org"));
  assert_false(cert_email_matches("no-at-sign", "bob@example.com"));
  assert_true(cert_dns_matches("example.com", "EXAMPLE.com"));
  assert_true(cert_dns_matches("*.example.com", "a.example.com"));
  assert_false(cert_dns_matches("*.example.com", "b.a.example.com")); /* one label only */
  assert_false(cert_dns_matches("*.example.com", "example.com"));
  assert_false(cert_dns_matches("*.com", "example.com")); /* never over a single label */
  assert_false(cert_dns_matches("*.example.com", ".example.com"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fqdn_table),
      cmocka_unit_test(test_request_errors_name_the_option),
      cmocka_unit_test(test_request_email_forms),
      cmocka_unit_test(test_request_without_fqdn_validate),
      cmocka_unit_test(test_request_san_limit),
      cmocka_unit_test(test_selfsigned_rsa_extensions),
      cmocka_unit_test(test_selfsigned_serial_positive_128_bits),
      cmocka_unit_test(test_selfsigned_subject_sans_validity),
      cmocka_unit_test(test_selfsigned_openssl_accepts),
      cmocka_unit_test(test_selfsigned_ec_has_key_agreement),
      cmocka_unit_test(test_selfsigned_wrong_signer_refused),
      cmocka_unit_test(test_selfsigned_checks_request),
      cmocka_unit_test(test_csr_verifies_and_copies),
      cmocka_unit_test(test_csr_wrong_signer_refused),
      cmocka_unit_test(test_p12_good_with_chain),
      cmocka_unit_test(test_p12_openssl_export),
      cmocka_unit_test(test_p12_wrong_password),
      cmocka_unit_test(test_p12_corrupt),
      cmocka_unit_test(test_p12_expired_and_not_yet_valid),
      cmocka_unit_test(test_p12_key_usage_unfit),
      cmocka_unit_test(test_p12_small_rsa_refused),
      cmocka_unit_test(test_p12_other_curve_refused),
      cmocka_unit_test(test_p12_too_big),
      cmocka_unit_test(test_p12_missing_file),
      cmocka_unit_test(test_cert_uses_table),
      cmocka_unit_test(test_cert_days_left),
      cmocka_unit_test(test_cert_info_details),
      cmocka_unit_test(test_cert_info_foreign_leaf),
      cmocka_unit_test(test_cert_to_pem_round_trip),
      cmocka_unit_test(test_name_matching_rules),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
