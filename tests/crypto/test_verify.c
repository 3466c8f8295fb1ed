/* Tests for crypto/verify.c (R5, R12; issue #5): every outcome of one
 * signed message against a trust built from a real LMDB key store.
 *
 * The group setup makes a throwaway PKI with the openssl CLI in a temp
 * folder: a root CA and an intermediate; end-entity signers with a SAN
 * e-mail (alice), SAN DNS names (a domain certificate), a short-lived one,
 * one without digitalSignature, one with digitalSignature only (R12 wants
 * nonRepudiation too), a 1024-bit one, a revoked one (CRLs made with
 * `openssl ca`), one with its address only in the subject, one from a CA
 * that is not imported, and a self-signed one.  Messages are signed with
 * `openssl cms -sign` (detached and -nodetach, -binary), except those with
 * chosen SMIMECapabilities, made with OpenSSL's CMS API.  Key stores live
 * in the temp folder; SG_KEEP_TMP keeps it for inspection. */
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "crypto/keystore.h"
#include "crypto/verify.h"
#include "testutil.h"

static struct keystore *ks_plain;   /* CA list: the root, no CRL */
static struct keystore *ks_crl;     /* CA list: root, intermediate, both CRLs */
static struct keystore *ks_managed; /* the root, and "self" as a managed key */
static struct keystore *ks_inter;   /* CA list: the intermediate alone */
static X509 *alice_cert, *inter_cert;
static EVP_PKEY *alice_key;

static const char CONTENT[] = "Content-Type: text/plain; charset=us-ascii\r\n"
                              "\r\n"
                              "Hello from example.org.\r\n"
                              "Second line.\r\n";

/* ---- helpers -------------------------------------------------------------- */

/* openssl cms -sign of CONTENT: detached (or opaque) DER into out.
 * signers: "alice" or "alice -signer x.pem -inkey x.key"; extra: more
 * options (-certfile, -nocerts). */
static void cms_sign(const char *out, const char *signer, bool opaque, const char *extra) {
  assert_int_equal(tu_run("openssl cms -sign -binary %s -in content.txt -signer %s.pem -inkey %s.key %s "
                       "-outform DER -out %s",
                       opaque ? "-nodetach" : "", signer, signer, extra, out),
                   0);
}

/* A trust from a key store (may be NULL) and CRL files; soft revocation
 * unless the test says so. */
static struct verify_trust *trust_of(struct keystore *ks, const char *crl_file) {
  char f[256], err[256] = "";
  char *files[1] = {f};
  if (crl_file != NULL) tu_path(f, sizeof f, crl_file);
  struct verify_trust *t = NULL;
  int rc = verify_trust_new(ks, false, files, crl_file != NULL ? 1 : 0, &t, err, sizeof err);
  if (rc != 0) fprintf(stderr, "verify_trust_new: %s\n", err);
  assert_int_equal(rc, 0);
  return t;
}

struct check {
  const struct verify_trust *trust;
  const char *from;
  bool hard;
  time_t now;                       /* 0: time(NULL) */
  const struct verify_limits *limits;
};

/* Verify sig (a DER file) over content (CONTENT when NULL); asserts the
 * call produced a result and left no OpenSSL error behind. */
static void verify_file(const struct check *c, const char *sig, const char *content, size_t content_len,
                        struct verify_result *res) {
  size_t n;
  unsigned char *der = tu_read_file(sig, &n);
  struct verify_params p = {.trust = c->trust, .limits = c->limits, .from = c->from,
                            .revocation_hard = c->hard, .now = c->now ? c->now : time(NULL)};
  char err[256] = "";
  if (content == NULL) content = CONTENT, content_len = strlen(CONTENT);
  int rc = verify_detached(content, content_len, der, n, &p, res, err, sizeof err);
  if (rc != 0) fprintf(stderr, "verify_detached: %s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(ERR_peek_error(), 0);
  assert_non_null(res->certs);
  free(der);
}

static void assert_outcome(const struct verify_result *res, enum verify_status st, const char *reason) {
  if (res->status != st || strcmp(res->reason, reason) != 0)
    fprintf(stderr, "got status %d reason '%s' (%s), want %d '%s'\n", (int)res->status, res->reason, res->detail,
            (int)st, reason);
  assert_int_equal(res->status, st);
  assert_string_equal(res->reason, reason);
}

/* The common case: one message signed by name, checked with c. */
static void outcome_of(const char *name, const char *extra, const struct check *c, enum verify_status st,
                       const char *reason, struct verify_result *res) {
  char out[128];
  snprintf(out, sizeof out, "%s.p7s", name);
  cms_sign(out, name, false, extra);
  verify_file(c, out, NULL, 0, res);
  assert_outcome(res, st, reason);
}

static bool signer_is(const struct verify_result *res, const char *cn) {
  char buf[256];
  X509_NAME_get_text_by_NID(X509_get_subject_name(res->signer), NID_commonName, buf, sizeof buf);
  return strcmp(buf, cn) == 0;
}

/* ---- fixture: a throwaway PKI --------------------------------------------- */

static const char EXT[] =
    "[ca_ext]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    "[ee]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n"
    "extendedKeyUsage=emailProtection\nsubjectAltName=email:${ENV::SAN}\n"
    "[domain]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n"
    "subjectAltName=DNS:example.net,DNS:*.example.com\n"
    "[noku]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,keyEncipherment\n"
    "subjectAltName=email:noku@example.org\n"
    "[dsonly]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    "subjectAltName=email:dsonly@example.org\n"
    "[subj]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n";

static const char CA_CNF[] = "[inter_ca]\ndatabase = inter.idx\ncrlnumber = inter.crlnum\ndefault_md = sha256\n"
                             "default_crl_days = 30\n"
                             "[root_ca]\ndatabase = root.idx\ncrlnumber = root.crlnum\ndefault_md = sha256\n"
                             "default_crl_days = 30\n";

/* An end entity: key, CSR, certificate from ca (its .pem/.key). */
static int leaf(const char *name, const char *bits, const char *ca, const char *ext, const char *san, int days,
                int serial, const char *subj) {
  return tu_run("SAN='%s' && export SAN && "
             "openssl req -new -newkey rsa:%s -nodes -keyout %s.key -out %s.csr -subj '/CN=%s%s' 2>/dev/null && "
             "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -set_serial %d -days %d "
             "-extfile ext.cnf -extensions %s -out %s.pem 2>/dev/null",
             san, bits, name, name, name, subj, name, ca, ca, serial, days, ext, name);
}

static int make_pki(void) {
  if (tu_run("openssl req -x509 -newkey rsa:2048 -nodes -keyout root.key -out root.pem -days 3650 "
          "-subj '/CN=verify root' -addext basicConstraints=critical,CA:TRUE "
          "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && "
          "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 3650 "
          "-subj '/CN=other root' -addext basicConstraints=critical,CA:TRUE "
          "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && "
          "openssl req -new -newkey rsa:2048 -nodes -keyout inter.key -out inter.csr -subj '/CN=verify inter' "
          "2>/dev/null && openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -set_serial 2 "
          "-days 3650 -extfile ext.cnf -extensions ca_ext -out inter.pem 2>/dev/null") != 0)
    return -1;
  if (leaf("alice", "2048", "inter", "ee", "alice@example.org", 30, 10, "") != 0 ||
      leaf("domain", "2048", "inter", "domain", "", 30, 11, "") != 0 ||
      leaf("short", "2048", "inter", "ee", "short@example.org", 1, 12, "") != 0 ||
      leaf("noku", "2048", "inter", "noku", "", 30, 13, "") != 0 ||
      leaf("dsonly", "2048", "inter", "dsonly", "", 30, 14, "") != 0 ||
      leaf("weak", "1024", "inter", "ee", "weak@example.org", 30, 15, "") != 0 ||
      leaf("revoked", "2048", "inter", "ee", "revoked@example.org", 30, 16, "") != 0 ||
      leaf("subj", "2048", "inter", "subj", "", 30, 17, "/emailAddress=subj@example.org") != 0 ||
      leaf("stranger", "2048", "other", "ee", "stranger@example.org", 30, 18, "") != 0)
    return -1;
  /* Self-signed, with the extensions of an S/MIME signer. */
  if (tu_run("openssl req -x509 -newkey rsa:2048 -nodes -keyout self.key -out self.pem -days 30 -subj /CN=self "
          "-addext keyUsage=critical,digitalSignature,nonRepudiation -addext subjectAltName=email:self@example.org "
          "2>/dev/null") != 0)
    return -1;
  /* CRLs: the intermediate's revokes "revoked"; the root's is empty. */
  return tu_run("touch inter.idx root.idx && echo 01 > inter.crlnum && echo 01 > root.crlnum && "
             "openssl ca -config ca.cnf -name inter_ca -revoke revoked.pem -keyfile inter.key -cert inter.pem "
             "2>/dev/null && "
             "openssl ca -config ca.cnf -name inter_ca -gencrl -keyfile inter.key -cert inter.pem -out inter.crl "
             "2>/dev/null && "
             "openssl ca -config ca.cnf -name root_ca -gencrl -keyfile root.key -cert root.pem -out root.crl "
             "2>/dev/null && cat root.crl inter.crl > both.crl && "
             "openssl crl -in inter.crl -outform DER -out inter.der");
}

/* A key store in dir/sub with ca (a PEM file) as CA list "test" (with
 * the intermediate and both CRLs when asked) and, when given, one managed
 * key. */
static struct keystore *make_store(const char *sub, const char *ca, bool crls, const char *managed) {
  char d[256], err[256] = "";
  tu_path(d, sizeof d, sub);
  struct keystore *ks = NULL;
  assert_int_equal(keystore_open(d, true, &ks, err, sizeof err), 0);
  STACK_OF(X509) *certs = sk_X509_new_null();
  STACK_OF(X509_CRL) *cl = sk_X509_CRL_new_null();
  sk_X509_push(certs, tu_load_cert(ca));
  if (crls) {
    /* The key store keeps a CRL only with its issuer's certificate. */
    sk_X509_push(certs, tu_load_cert("inter.pem"));
    sk_X509_CRL_push(cl, tu_load_crl("root.crl"));
    sk_X509_CRL_push(cl, tu_load_crl("inter.crl"));
  }
  int rc = keystore_ca_import(ks, "test", certs, cl, err, sizeof err);
  if (rc != 0) fprintf(stderr, "keystore_ca_import: %s\n", err);
  assert_int_equal(rc, 0);
  sk_X509_pop_free(certs, X509_free);
  sk_X509_CRL_pop_free(cl, X509_CRL_free);
  if (managed != NULL) {
    char f[64];
    snprintf(f, sizeof f, "%s.pem", managed);
    X509 *x = tu_load_cert(f);
    assert_int_equal(keystore_pubkey_add(ks, managed, x, err, sizeof err), 0);
    X509_free(x);
  }
  return ks;
}

static int group_setup(void **state) {
  (void)state;
  if (tu_dir_make("verify") != 0) return -1;
  /* ext.cnf names ${ENV::SAN}: OpenSSL wants it set for every section. */
  setenv("SAN", "", 1);
  tu_write_file("ext.cnf", EXT, strlen(EXT));
  tu_write_file("ca.cnf", CA_CNF, strlen(CA_CNF));
  tu_write_file("content.txt", CONTENT, strlen(CONTENT));
  if (make_pki() != 0) return -1;
  ks_plain = make_store("ks-plain", "root.pem", false, NULL);
  ks_crl = make_store("ks-crl", "root.pem", true, NULL);
  ks_managed = make_store("ks-managed", "root.pem", false, "self");
  ks_inter = make_store("ks-inter", "inter.pem", false, NULL);
  alice_cert = tu_load_cert("alice.pem");
  inter_cert = tu_load_cert("inter.pem");
  alice_key = tu_load_key("alice.key");
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  keystore_close(ks_plain);
  keystore_close(ks_crl);
  keystore_close(ks_managed);
  keystore_close(ks_inter);
  X509_free(alice_cert);
  X509_free(inter_cert);
  EVP_PKEY_free(alice_key);
  return tu_dir_remove();
}

/* ---- outcomes --------------------------------------------------------------- */

static void test_detached_pass(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "alice@example.org"};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
  assert_string_equal(res.identity, "alice@example.org");
  assert_false(res.identity_is_domain);
  assert_true(res.chain_ok);
  assert_false(res.self_signed);
  assert_false(res.expired);
  assert_true(signer_is(&res, "alice"));
  assert_int_equal(sk_X509_num(res.certs), 2); /* alice and the intermediate */
  verify_result_free(&res);
  verify_trust_free(t);
}

/* Opaque: the same outcome, and the encapsulated content comes out byte
 * for byte. */
static void test_opaque_pass_returns_content(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  cms_sign("opaque.p7m", "alice", true, "-certfile inter.pem");
  size_t n;
  unsigned char *der = tu_read_file("opaque.p7m", &n);
  struct verify_params p = {.trust = t, .from = "alice@example.org", .now = time(NULL)};
  struct verify_result res;
  struct buf out = BUF_INIT;
  char err[256] = "";
  assert_int_equal(verify_opaque(der, n, &p, &out, &res, err, sizeof err), 0);
  assert_outcome(&res, VERIFY_PASS, "");
  assert_int_equal(out.len, strlen(CONTENT));
  assert_memory_equal(out.data, CONTENT, out.len);
  verify_result_free(&res);
  buf_free(&out);
  free(der);
  verify_trust_free(t);
}

static void test_detached_tampered_content_fails(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  cms_sign("tamper.p7s", "alice", false, "-certfile inter.pem");
  char changed[sizeof CONTENT];
  memcpy(changed, CONTENT, sizeof CONTENT);
  changed[strlen(CONTENT) - 5] ^= 0x01;
  struct check c = {.trust = t, .from = "alice@example.org"};
  struct verify_result res;
  verify_file(&c, "tamper.p7s", changed, strlen(changed), &res);
  assert_outcome(&res, VERIFY_FAIL, "bad-signature");
  /* The failed signer's certificate is still reported and judged (for
   * harvest.on_failed_verification), the status staying FAIL. */
  assert_non_null(res.signer);
  assert_true(res.chain_ok);
  assert_string_equal(res.identity, "alice@example.org");
  verify_result_free(&res);
  verify_trust_free(t);
}

/* An opaque message whose content was changed in transit: FAIL, and the
 * (changed) content is still handed out for the caller to mark. */
static void test_opaque_tampered_content_fails_but_is_returned(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  cms_sign("opaque2.p7m", "alice", true, "-certfile inter.pem");
  size_t n;
  unsigned char *der = tu_read_file("opaque2.p7m", &n);
  unsigned char *hit = memmem(der, n, "Second line", 11);
  assert_non_null(hit);
  hit[0] = 's';
  struct verify_params p = {.trust = t, .from = "alice@example.org", .now = time(NULL)};
  struct verify_result res;
  struct buf out = BUF_INIT;
  char err[256] = "";
  assert_int_equal(verify_opaque(der, n, &p, &out, &res, err, sizeof err), 0);
  assert_outcome(&res, VERIFY_FAIL, "bad-signature");
  assert_int_equal(out.len, strlen(CONTENT));
  assert_non_null(memmem(out.data, out.len, "second line", 11));
  verify_result_free(&res);
  buf_free(&out);
  free(der);
  verify_trust_free(t);
}

/* The signature value itself damaged (its last byte, the end of the DER):
 * the content digest matches, the RSA signature does not. */
static void test_corrupt_signature_value_fails(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  cms_sign("sigval.p7s", "alice", false, "-certfile inter.pem");
  size_t n;
  unsigned char *der = tu_read_file("sigval.p7s", &n);
  der[n - 1] ^= 0x40;
  tu_write_file("sigval-bad.p7s", der, n);
  free(der);
  struct check c = {.trust = t, .from = "alice@example.org"};
  struct verify_result res;
  verify_file(&c, "sigval-bad.p7s", NULL, 0, &res);
  assert_outcome(&res, VERIFY_FAIL, "bad-signature");
  verify_result_free(&res);
  verify_trust_free(t);
}

static void test_from_mismatch(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "carol@example.org"};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_POLICY, "from-mismatch", &res);
  assert_true(res.chain_ok);
  assert_string_equal(res.identity, "alice@example.org"); /* its first SAN e-mail */
  verify_result_free(&res);
  verify_trust_free(t);
}

/* Domain case-insensitive, local part exact or lower-cased. */
static void test_from_case_rules(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct verify_result res;
  const char *same[] = {"alice@EXAMPLE.ORG", "Alice@Example.org"};
  for (size_t i = 0; i < 2; i++) {
    struct check c = {.trust = t, .from = same[i]};
    outcome_of("alice", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
    assert_string_equal(res.identity, "alice@example.org");
    verify_result_free(&res);
  }
  struct check c = {.trust = t, .from = "alice@example.org.evil"};
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_POLICY, "from-mismatch", &res);
  verify_result_free(&res);
  verify_trust_free(t);
}

static void test_no_from(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = NULL};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_POLICY, "no-from", &res);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* A domain certificate (SAN DNS example.net) proves any sender there. */
static void test_domain_certificate_passes(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "bob@Example.NET"};
  struct verify_result res;
  outcome_of("domain", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
  assert_string_equal(res.identity, "example.net");
  assert_true(res.identity_is_domain);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* "*.example.com" covers exactly one more label. */
static void test_domain_wildcard_one_label(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct verify_result res;
  struct check c = {.trust = t, .from = "bob@mail.example.com"};
  outcome_of("domain", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
  assert_string_equal(res.identity, "*.example.com");
  assert_true(res.identity_is_domain);
  verify_result_free(&res);
  const char *no[] = {"bob@example.com", "bob@a.mail.example.com", "bob@mailexample.com"};
  for (size_t i = 0; i < 3; i++) {
    c.from = no[i];
    outcome_of("domain", "-certfile inter.pem", &c, VERIFY_POLICY, "from-mismatch", &res);
    verify_result_free(&res);
  }
  verify_trust_free(t);
}

/* The address only in the subject's emailAddress (older CAs). */
static void test_subject_email_address(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "subj@example.org"};
  struct verify_result res;
  outcome_of("subj", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
  assert_string_equal(res.identity, "subj@example.org");
  verify_result_free(&res);
  verify_trust_free(t);
}

/* A signer from a CA that was not imported. */
static void test_untrusted_ca(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "stranger@example.org"};
  struct verify_result res;
  outcome_of("stranger", "-certfile other.pem", &c, VERIFY_POLICY, "untrusted", &res);
  assert_false(res.chain_ok);
  assert_string_equal(res.identity, "stranger@example.org");
  verify_result_free(&res);
  verify_trust_free(t);
}

/* The intermediate comes from the message: without it there is no chain. */
static void test_missing_intermediate_untrusted(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "alice@example.org"};
  struct verify_result res;
  outcome_of("alice", "", &c, VERIFY_POLICY, "untrusted", &res);
  assert_int_equal(sk_X509_num(res.certs), 1);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* An intermediate imported on its own is an anchor; its own revocation
 * is not checked (it ends the path), its CRL covers alice. */
static void test_intermediate_as_anchor(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_inter, "inter.der");
  struct check c = {.trust = t, .from = "alice@example.org", .hard = true};
  struct verify_result res;
  outcome_of("alice", "", &c, VERIFY_PASS, "", &res);
  assert_true(res.chain_ok);
  verify_result_free(&res);
  c.from = "revoked@example.org";
  outcome_of("revoked", "", &c, VERIFY_POLICY, "revoked", &res);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* A one-day certificate checked three days on. */
static void test_expired(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "short@example.org", .now = time(NULL) + 3 * 86400};
  struct verify_result res;
  outcome_of("short", "-certfile inter.pem", &c, VERIFY_POLICY, "expired", &res);
  assert_true(res.expired);
  assert_false(res.chain_ok);
  verify_result_free(&res);
  verify_trust_free(t);
}

static void test_not_yet_valid(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "alice@example.org", .now = time(NULL) - 2 * 86400};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_POLICY, "not-yet-valid", &res);
  assert_true(res.expired);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* R12: keyEncipherment only. */
static void test_key_usage_without_digital_signature(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "noku@example.org"};
  struct verify_result res;
  outcome_of("noku", "-certfile inter.pem", &c, VERIFY_POLICY, "key-usage", &res);
  assert_true(res.chain_ok);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* R12: digitalSignature without nonRepudiation (OpenSSL's S/MIME purpose
 * accepts it; our rule does not). */
static void test_key_usage_needs_non_repudiation(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "dsonly@example.org"};
  struct verify_result res;
  outcome_of("dsonly", "-certfile inter.pem", &c, VERIFY_POLICY, "key-usage", &res);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* CRLs from the CA list in the key store. */
static void test_revoked_by_ca_list_crl(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_crl, NULL);
  struct check c = {.trust = t, .from = "revoked@example.org"};
  struct verify_result res;
  outcome_of("revoked", "-certfile inter.pem", &c, VERIFY_POLICY, "revoked", &res);
  assert_false(res.chain_ok);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* The same from CRL files: PEM with two CRLs, and DER. */
static void test_revoked_by_crl_files(void **state) {
  (void)state;
  const char *files[] = {"both.crl", "inter.der"};
  for (size_t i = 0; i < 2; i++) {
    struct verify_trust *t = trust_of(ks_plain, files[i]);
    struct check c = {.trust = t, .from = "revoked@example.org"};
    struct verify_result res;
    outcome_of("revoked", "-certfile inter.pem", &c, VERIFY_POLICY, "revoked", &res);
    verify_result_free(&res);
    verify_trust_free(t);
  }
}

/* Hard revocation with CRLs for every issuer of the chain: a good signer
 * passes. */
static void test_revocation_hard_with_crls_passes(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_crl, NULL);
  struct check c = {.trust = t, .from = "alice@example.org", .hard = true};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* No CRL at all: hard is revocation-unknown, soft passes. */
static void test_revocation_unknown_hard_soft(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "alice@example.org", .hard = true};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_POLICY, "revocation-unknown", &res);
  assert_false(res.chain_ok);
  verify_result_free(&res);
  c.hard = false;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
  verify_result_free(&res);
  /* Only the intermediate's CRL: the root's is missing for the
   * intermediate itself. */
  verify_trust_free(t);
  t = trust_of(ks_plain, "inter.der");
  c.trust = t;
  c.hard = true;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_POLICY, "revocation-unknown", &res);
  verify_result_free(&res);
  verify_trust_free(t);
}

static void test_crl_file_errors_name_the_file(void **state) {
  (void)state;
  tu_write_file("junk.crl", "not a crl at all\n", 17);
  tu_write_file("badpem.crl", "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", 54);
  const char *names[] = {"missing.crl", "junk.crl", "badpem.crl"};
  for (size_t i = 0; i < 3; i++) {
    char f[256], err[256] = "";
    tu_path(f, sizeof f, names[i]);
    char *files[1] = {f};
    struct verify_trust *t = (struct verify_trust *)1;
    assert_true(verify_trust_new(ks_plain, false, files, 1, &t, err, sizeof err) < 0);
    assert_null(t);
    assert_non_null(strstr(err, names[i]));
    assert_int_equal(ERR_peek_error(), 0);
  }
}

static void test_self_signed_untrusted(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "self@example.org"};
  struct verify_result res;
  outcome_of("self", "", &c, VERIFY_POLICY, "untrusted", &res);
  assert_true(res.self_signed);
  assert_false(res.chain_ok);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* A managed public key is trusted as it is, without a chain. */
static void test_managed_key_trusted_without_chain(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_managed, NULL);
  struct check c = {.trust = t, .from = "self@example.org", .hard = true};
  struct verify_result res;
  outcome_of("self", "", &c, VERIFY_PASS, "", &res);
  assert_true(res.self_signed);
  assert_true(res.chain_ok);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* A sender we hold as a managed key may leave its certificate out; for
 * anyone else there is nothing to verify with. */
static void test_signer_certificate_from_managed_keys(void **state) {
  (void)state;
  cms_sign("nocerts.p7s", "self", false, "-nocerts");
  struct verify_result res;
  struct verify_trust *t = trust_of(ks_managed, NULL);
  struct check c = {.trust = t, .from = "self@example.org"};
  verify_file(&c, "nocerts.p7s", NULL, 0, &res);
  assert_outcome(&res, VERIFY_PASS, "");
  assert_int_equal(sk_X509_num(res.certs), 0);
  verify_result_free(&res);
  verify_trust_free(t);
  t = trust_of(ks_plain, NULL);
  c.trust = t;
  verify_file(&c, "nocerts.p7s", NULL, 0, &res);
  assert_outcome(&res, VERIFY_FAIL, "bad-signature");
  verify_result_free(&res);
  verify_trust_free(t);
}

/* ---- several signers, budgets, keys ------------------------------------------- */

static void test_too_many_signers(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct verify_limits lim = {1, 16, 8192, 2048};
  struct check c = {.trust = t, .from = "alice@example.org", .limits = &lim};
  struct verify_result res;
  outcome_of("alice", "-signer domain.pem -inkey domain.key -certfile inter.pem", &c, VERIFY_POLICY,
             "too-many-signers", &res);
  assert_null(res.signer);
  assert_int_equal(sk_X509_num(res.certs), 3);
  verify_result_free(&res);
  verify_trust_free(t);
}

static void test_too_many_certificates(void **state) {
  (void)state;
  tu_write_file("chain.pem", "", 0);
  assert_int_equal(tu_run("cat inter.pem root.pem > chain.pem"), 0);
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct verify_limits lim = {4, 2, 8192, 2048};
  struct check c = {.trust = t, .from = "alice@example.org", .limits = &lim};
  struct verify_result res;
  outcome_of("alice", "-certfile chain.pem", &c, VERIFY_POLICY, "too-many-certificates", &res);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* One signer that passes is enough, whatever its position. */
static void test_one_passing_signer_of_two(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "alice@example.org"};
  struct verify_result res;
  outcome_of("stranger", "-signer alice.pem -inkey alice.key -certfile inter.pem", &c, VERIFY_PASS, "", &res);
  assert_true(signer_is(&res, "alice"));
  verify_result_free(&res);
  verify_trust_free(t);
}

/* None passes: the first whose signature verified is reported. */
static void test_no_passing_signer_reports_first(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "noku@example.org"};
  struct verify_result res;
  outcome_of("stranger", "-signer noku.pem -inkey noku.key -certfile inter.pem", &c, VERIFY_POLICY, "untrusted",
             &res);
  assert_true(signer_is(&res, "stranger"));
  verify_result_free(&res);
  verify_trust_free(t);
}

static void test_weak_key(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "weak@example.org"};
  struct verify_result res;
  outcome_of("weak", "-certfile inter.pem", &c, VERIFY_POLICY, "weak-key", &res);
  assert_non_null(res.signer);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* Above max_rsa_bits the signature is not even tried. */
static void test_key_above_limit_not_tried(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct verify_limits lim = {4, 16, 1024, 1024};
  struct check c = {.trust = t, .from = "alice@example.org", .limits = &lim};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_POLICY, "key-size", &res);
  assert_null(res.signer);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* ---- malformed input ------------------------------------------------------------ */

static int verify_bytes(const unsigned char *der, size_t n, const struct verify_trust *t, struct verify_result *res) {
  struct verify_params p = {.trust = t, .from = "alice@example.org", .now = time(NULL)};
  char err[256] = "";
  int rc = verify_detached(CONTENT, strlen(CONTENT), der, n, &p, res, err, sizeof err);
  assert_int_equal(ERR_peek_error(), 0);
  return rc;
}

static void test_garbage_is_einval(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct verify_result res;
  unsigned char junk[512];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 37 + 11);
  assert_int_equal(verify_bytes(junk, sizeof junk, t, &res), SG_EINVAL);
  assert_int_equal(verify_bytes(junk, 0, t, &res), SG_EINVAL);
  assert_null(res.certs);
  /* A CMS structure that is not SignedData. */
  assert_int_equal(tu_run("openssl cms -encrypt -binary -aes256 -in content.txt -outform DER -out env.p7m "
                       "alice.pem"), 0);
  size_t n;
  unsigned char *der = tu_read_file("env.p7m", &n);
  assert_int_equal(verify_bytes(der, n, t, &res), SG_EINVAL);
  free(der);
  verify_trust_free(t);
}

/* A detached signature given as opaque: no content to hand out. */
static void test_opaque_without_content_is_einval(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  cms_sign("det.p7s", "alice", false, "-certfile inter.pem");
  size_t n;
  unsigned char *der = tu_read_file("det.p7s", &n);
  struct verify_params p = {.trust = t, .from = "alice@example.org", .now = time(NULL)};
  struct verify_result res;
  struct buf out = BUF_INIT;
  char err[256] = "";
  assert_int_equal(verify_opaque(der, n, &p, &out, &res, err, sizeof err), SG_EINVAL);
  assert_int_equal(out.len, 0);
  assert_null(res.certs);
  free(der);
  verify_trust_free(t);
}

/* Every truncation of a good signature: SG_EINVAL or a result that is not
 * a pass; never a crash (ASan run) or a leaked error. */
static void test_truncated_der_never_passes(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  cms_sign("trunc.p7s", "alice", false, "-certfile inter.pem");
  size_t n;
  unsigned char *der = tu_read_file("trunc.p7s", &n);
  size_t einval = 0, results = 0;
  for (size_t len = 1; len < n; len++) {
    struct verify_result res;
    int rc = verify_bytes(der, len, t, &res);
    assert_true(rc == 0 || rc == SG_EINVAL);
    if (rc == 0) {
      assert_int_not_equal(res.status, VERIFY_PASS);
      results++;
      verify_result_free(&res);
    } else {
      einval++;
    }
  }
  printf("[ truncate ] %zu prefixes: %zu SG_EINVAL, %zu results (none a pass)\n", n - 1, einval, results);
  free(der);
  verify_trust_free(t);
}

/* ---- SMIMECapabilities ------------------------------------------------------------ */

/* OpenSSL's default list (AES-CBC, 3DES, RC2...): none of our bits. */
static void test_caps_openssl_default_has_no_gcm(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "alice@example.org"};
  struct verify_result res;
  outcome_of("alice", "-certfile inter.pem", &c, VERIFY_PASS, "", &res);
  assert_int_equal(res.caps, 0);
  verify_result_free(&res);
  assert_int_equal(tu_run("openssl cms -cmsout -print -inform DER -in alice.p7s | grep -q aes-256-cbc"), 0);
  verify_trust_free(t);
}

/* A detached signature of CONTENT by alice with our own capability list,
 * made with OpenSSL's CMS API, written to name. */
static void sign_with_caps(const char *name, const int *nids, size_t n) {
  unsigned flags = CMS_BINARY | CMS_PARTIAL | CMS_DETACHED | CMS_NOSMIMECAP;
  CMS_ContentInfo *cms = CMS_sign(NULL, NULL, NULL, NULL, flags);
  assert_non_null(cms);
  CMS_SignerInfo *si = CMS_add1_signer(cms, alice_cert, alice_key, EVP_sha256(), flags);
  assert_non_null(si);
  STACK_OF(X509_ALGOR) *caps = NULL;
  for (size_t i = 0; i < n; i++) assert_int_equal(CMS_add_simple_smimecap(&caps, nids[i], -1), 1);
  assert_int_equal(CMS_add_smimecap(si, caps), 1);
  sk_X509_ALGOR_pop_free(caps, X509_ALGOR_free);
  assert_int_equal(CMS_add1_cert(cms, inter_cert), 1);
  BIO *in = BIO_new_mem_buf(CONTENT, (int)strlen(CONTENT));
  assert_int_equal(CMS_final(cms, in, NULL, flags), 1);
  BIO_free(in);
  unsigned char *der = NULL;
  int len = i2d_CMS_ContentInfo(cms, &der);
  assert_true(len > 0);
  tu_write_file(name, der, (size_t)len);
  OPENSSL_free(der);
  CMS_ContentInfo_free(cms);
}

static void test_caps_gcm_and_oaep_parsed(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_plain, NULL);
  struct check c = {.trust = t, .from = "alice@example.org"};
  struct verify_result res;
  const int all[] = {NID_aes_256_gcm, NID_aes_128_gcm, NID_aes_256_cbc, NID_rsaesOaep};
  sign_with_caps("caps-all.p7s", all, 4);
  verify_file(&c, "caps-all.p7s", NULL, 0, &res);
  assert_outcome(&res, VERIFY_PASS, "");
  assert_int_equal(res.caps, VERIFY_CAP_AES256_GCM | VERIFY_CAP_AES128_GCM | VERIFY_CAP_RSA_OAEP);
  verify_result_free(&res);
  const int one[] = {NID_aes_128_cbc, NID_aes_128_gcm};
  sign_with_caps("caps-one.p7s", one, 2);
  verify_file(&c, "caps-one.p7s", NULL, 0, &res);
  assert_int_equal(res.caps, VERIFY_CAP_AES128_GCM);
  verify_result_free(&res);
  verify_trust_free(t);
}

/* ---- sharing ------------------------------------------------------------------------ */

struct worker {
  const struct verify_trust *t;
  const unsigned char *der;
  size_t n;
  int passes;
};

static void *worker_run(void *arg) {
  struct worker *w = arg;
  for (int i = 0; i < 25; i++) {
    struct verify_params p = {.trust = w->t, .from = "alice@example.org", .now = time(NULL)};
    struct verify_result res;
    char err[256];
    if (verify_detached(CONTENT, strlen(CONTENT), w->der, w->n, &p, &res, err, sizeof err) == 0 &&
        res.status == VERIFY_PASS && ERR_peek_error() == 0)
      w->passes++;
    verify_result_free(&res);
  }
  return NULL;
}

/* One trust, read by four threads at once (the crypto workers' case). */
static void test_trust_shared_by_threads(void **state) {
  (void)state;
  struct verify_trust *t = trust_of(ks_crl, NULL);
  cms_sign("threads.p7s", "alice", false, "-certfile inter.pem");
  size_t n;
  unsigned char *der = tu_read_file("threads.p7s", &n);
  pthread_t th[4];
  struct worker w[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (struct worker){t, der, n, 0};
    assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(w[i].passes, 25);
  }
  free(der);
  verify_trust_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_detached_pass),
      cmocka_unit_test(test_opaque_pass_returns_content),
      cmocka_unit_test(test_detached_tampered_content_fails),
      cmocka_unit_test(test_opaque_tampered_content_fails_but_is_returned),
      cmocka_unit_test(test_corrupt_signature_value_fails),
      cmocka_unit_test(test_from_mismatch),
      cmocka_unit_test(test_from_case_rules),
      cmocka_unit_test(test_no_from),
      cmocka_unit_test(test_domain_certificate_passes),
      cmocka_unit_test(test_domain_wildcard_one_label),
      cmocka_unit_test(test_subject_email_address),
      cmocka_unit_test(test_untrusted_ca),
      cmocka_unit_test(test_missing_intermediate_untrusted),
      cmocka_unit_test(test_intermediate_as_anchor),
      cmocka_unit_test(test_expired),
      cmocka_unit_test(test_not_yet_valid),
      cmocka_unit_test(test_key_usage_without_digital_signature),
      cmocka_unit_test(test_key_usage_needs_non_repudiation),
      cmocka_unit_test(test_revoked_by_ca_list_crl),
      cmocka_unit_test(test_revoked_by_crl_files),
      cmocka_unit_test(test_revocation_hard_with_crls_passes),
      cmocka_unit_test(test_revocation_unknown_hard_soft),
      cmocka_unit_test(test_crl_file_errors_name_the_file),
      cmocka_unit_test(test_self_signed_untrusted),
      cmocka_unit_test(test_managed_key_trusted_without_chain),
      cmocka_unit_test(test_signer_certificate_from_managed_keys),
      cmocka_unit_test(test_too_many_signers),
      cmocka_unit_test(test_too_many_certificates),
      cmocka_unit_test(test_one_passing_signer_of_two),
      cmocka_unit_test(test_no_passing_signer_reports_first),
      cmocka_unit_test(test_weak_key),
      cmocka_unit_test(test_key_above_limit_not_tried),
      cmocka_unit_test(test_garbage_is_einval),
      cmocka_unit_test(test_opaque_without_content_is_einval),
      cmocka_unit_test(test_truncated_der_never_passes),
      cmocka_unit_test(test_caps_openssl_default_has_no_gcm),
      cmocka_unit_test(test_caps_gcm_and_oaep_parsed),
      cmocka_unit_test(test_trust_shared_by_threads),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
