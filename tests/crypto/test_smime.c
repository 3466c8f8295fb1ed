/* Tests for crypto/smime.c (R1-R4): every message we make is checked by
 * independent peers, the OpenSSL CLI (all modes) and gpgsm (RSA, PKCS#1
 * v1.5, CBC: what it supports), never only by our own code.
 *
 * The group setup builds a throwaway PKI with the openssl CLI in a temp
 * folder: a CA (RSA-2048), signers RSA-2048 and EC P-256, recipients RSA
 * and EC, and an Ed25519 certificate no S/MIME recipient can use.  One test
 * signs with a key in a SoftHSM2 token in its own temp folder (as
 * tests/hsm/test_hsm.c does).  A 50 MiB entity is signed and encrypted in
 * child processes and the peak RSS of each is printed (not asserted:
 * allocators differ, ASan more so). */
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "crypto/smime.h"
#include "hsm/hsm.h"
#include "testutil.h"

static X509 *ca, *rsa_cert, *ec_cert, *rcpt_rsa, *rcpt_ec, *ed_cert;
static EVP_PKEY *rsa_key, *ec_key;
static bool have_gpgsm;

static const char ENTITY[] =
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "\r\n"
    "Hello from org A.\r\n"
    "--not-a-boundary\r\n"
    "Last line.\r\n";
static const char OUTER[] =
    "From: a@example.org\r\nTo: b@example.net\r\nSubject: smime test\r\n"
    "Message-ID: <1@example.org>\r\n";

/* ---- helpers -------------------------------------------------------------- */

static void assert_file_equals(const char *name, const char *want, size_t n) {
  size_t got_n;
  char *got = tu_read_file(name, &got_n);
  if (got_n != n || memcmp(got, want, n) != 0)
    fprintf(stderr, "%s: %zu bytes, want %zu, differ\n", name, got_n, n);
  assert_int_equal(got_n, n);
  assert_memory_equal(got, want, n);
  free(got);
}

/* A 7-bit entity of MIME shape: CRLF everywhere, lines under 998 octets,
 * only ASCII; no MIME-Version field. */
static void assert_mime_shape(const char *p, size_t n) {
  size_t line = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    assert_true(c < 128);
    if (c == '\r') {
      assert_true(i + 1 < n && p[i + 1] == '\n');
    } else if (c == '\n') {
      assert_true(i > 0 && p[i - 1] == '\r');
      line = 0;
      continue;
    }
    assert_true(++line < 998);
  }
  assert_true(n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n');
  assert_true(strncasecmp(p, "MIME-Version", 12) != 0);
}

static bool starts_with(const char *p, const char *prefix) { return strncmp(p, prefix, strlen(prefix)) == 0; }

/* The base64 body of a single-part entity (after the blank line), decoded. */
static unsigned char *b64_body(const char *p, size_t n, size_t *len_out) {
  const char *body = memmem(p, n, "\r\n\r\n", 4);
  assert_non_null(body);
  body += 4;
  return tu_b64_decode(body, n - (size_t)(body - p), len_out);
}

/* multipart/signed: the first part's bytes and the signature part. */
struct split {
  const char *content, *sig;
  size_t content_len, sig_len;
};

static struct split split_signed(const char *p, size_t n) {
  const char *b = strstr(p, "boundary=\"");
  assert_non_null(b);
  b += 10;
  char delim[128];
  int dl = snprintf(delim, sizeof delim, "--%.*s", (int)(strchr(b, '"') - b), b);
  const char *first = memmem(p, n, delim, (size_t)dl);
  assert_non_null(first);
  first += dl + 2;
  char mid[140];
  int ml = snprintf(mid, sizeof mid, "\r\n%s\r\n", delim);
  const char *end = memmem(first, n - (size_t)(first - p), mid, (size_t)ml);
  assert_non_null(end);
  struct split s = {.content = first, .content_len = (size_t)(end - first), .sig = end + ml};
  char close[140];
  int cl = snprintf(close, sizeof close, "\r\n%s--\r\n", delim);
  const char *fin = memmem(s.sig, n - (size_t)(s.sig - p), close, (size_t)cl);
  assert_non_null(fin);
  assert_true(fin + cl == p + n);
  s.sig_len = (size_t)(fin - s.sig) + 2; /* keep the last line's CRLF */
  return s;
}

static struct smime_signer signer(bool ec, enum smime_signature sig) {
  static STACK_OF(X509) *chain;
  if (chain == NULL) {
    chain = sk_X509_new_null();
    sk_X509_push(chain, ca);
  }
  struct smime_signer s = {.key = ec ? ec_key : rsa_key, .cert = ec ? ec_cert : rsa_cert, .chain = chain,
                           .signature = sig};
  return s;
}

static void sign_ok(const char *e, size_t n, const struct smime_signer *s, enum smime_sign_mode m,
                    struct buf *out) {
  char err[256] = "";
  int rc = smime_sign(e, n, s, m, out, err, sizeof err);
  if (rc != 0) fprintf(stderr, "smime_sign: %s\n", err);
  assert_int_equal(rc, 0);
  assert_mime_shape(out->data, out->len);
}

static void encrypt_ok(const char *e, size_t n, STACK_OF(X509) *r, enum smime_cipher c,
                       enum smime_key_transport kt, struct buf *out) {
  char err[256] = "";
  int rc = smime_encrypt(e, n, r, c, kt, out, err, sizeof err);
  if (rc != 0) fprintf(stderr, "smime_encrypt: %s\n", err);
  assert_int_equal(rc, 0);
  assert_mime_shape(out->data, out->len);
}

/* Write outer + MIME-Version + entity to name, as a mail client gets it. */
static void write_message(const char *name, const struct buf *entity) {
  struct buf msg = BUF_INIT;
  assert_int_equal(smime_compose(OUTER, strlen(OUTER), entity->data, entity->len, &msg), 0);
  assert_true(starts_with(msg.data, OUTER));
  assert_true(starts_with(msg.data + strlen(OUTER), "MIME-Version: 1.0\r\n"));
  tu_write_file(name, msg.data, msg.len);
  buf_free(&msg);
}

/* openssl cms -verify (S/MIME purpose, our CA only); content to out. */
static void openssl_verify(const char *in, const char *out) {
  assert_int_equal(tu_run("openssl cms -verify -in %s -CAfile ca.pem -purpose smimesign -out %s 2>/dev/null",
                       in, out), 0);
}

static void openssl_decrypt(const char *in, const char *who, const char *out) {
  assert_int_equal(tu_run("openssl cms -decrypt -in %s -recip %s.pem -inkey %s.key -out %s", in, who, who, out), 0);
}

static STACK_OF(X509) *rcpts(X509 *a, X509 *b) {
  STACK_OF(X509) *s = sk_X509_new_null();
  sk_X509_push(s, a);
  if (b != NULL) sk_X509_push(s, b);
  return s;
}

/* ---- fixture: a throwaway PKI ------------------------------------------------ */

static const char EXT[] =
    "[sign]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n"
    "extendedKeyUsage=emailProtection\nsubjectAltName=email:gateway@example.org\n"
    "[enc]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,keyEncipherment\n"
    "extendedKeyUsage=emailProtection\nsubjectAltName=email:gateway@example.net\n"
    "[agree]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,keyAgreement\n"
    "extendedKeyUsage=emailProtection\nsubjectAltName=email:ec@example.net\n";

static int leaf(const char *name, const char *newkey, const char *ext, int serial) {
  return tu_run("openssl req -new -newkey %s -nodes -keyout %s.key -out %s.csr -subj /CN=%s 2>/dev/null && "
             "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -set_serial %d -days 30 "
             "-extfile ext.cnf -extensions %s -out %s.pem 2>/dev/null",
             newkey, name, name, name, name, serial, ext, name);
}

static int group_setup(void **state) {
  (void)state;
  if (tu_dir_make("smime") != 0) return -1;
  tu_write_file("ext.cnf", EXT, strlen(EXT));
  if (tu_run("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 "
          "-subj '/CN=sealgate test CA' -addext basicConstraints=critical,CA:TRUE "
          "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null") != 0 ||
      leaf("signer", "rsa:2048", "sign", 2) != 0 ||
      leaf("ecsigner", "ec -pkeyopt ec_paramgen_curve:P-256", "sign", 3) != 0 ||
      leaf("rcpt", "rsa:2048", "enc", 4) != 0 ||
      leaf("ecrcpt", "ec -pkeyopt ec_paramgen_curve:P-256", "agree", 5) != 0 ||
      leaf("ed", "ed25519", "sign", 6) != 0)
    return -1;
  ca = tu_load_cert("ca.pem");
  rsa_cert = tu_load_cert("signer.pem");
  ec_cert = tu_load_cert("ecsigner.pem");
  rcpt_rsa = tu_load_cert("rcpt.pem");
  rcpt_ec = tu_load_cert("ecrcpt.pem");
  ed_cert = tu_load_cert("ed.pem");
  rsa_key = tu_load_key("signer.key");
  ec_key = tu_load_key("ecsigner.key");
  have_gpgsm = system("gpgsm --version >/dev/null 2>&1") == 0;
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  X509 *xs[] = {ca, rsa_cert, ec_cert, rcpt_rsa, rcpt_ec, ed_cert};
  for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) X509_free(xs[i]);
  EVP_PKEY_free(rsa_key);
  EVP_PKEY_free(ec_key);
  return tu_dir_remove();
}

/* ---- signing ---------------------------------------------------------------- */

/* The SignedData inside an entity we produced: its certificates and its
 * signature algorithm. */
static void check_signed_der(const unsigned char *der, size_t n, bool pss) {
  const unsigned char *p = der;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)n);
  assert_non_null(cms);
  STACK_OF(X509) *certs = CMS_get1_certs(cms);
  assert_int_equal(sk_X509_num(certs), 2); /* the signer and the CA */
  sk_X509_pop_free(certs, X509_free);
  CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
  X509_ALGOR *sigalg = NULL;
  CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sigalg);
  const ASN1_OBJECT *obj = NULL;
  X509_ALGOR_get0(&obj, NULL, NULL, sigalg);
  assert_int_equal(OBJ_obj2nid(obj) == NID_rsassaPss, pss);
  CMS_ContentInfo_free(cms);
}

static void sign_case(bool ec, enum smime_signature sig, enum smime_sign_mode mode) {
  struct smime_signer s = signer(ec, sig);
  struct buf out = BUF_INIT;
  sign_ok(ENTITY, strlen(ENTITY), &s, mode, &out);
  size_t dn;
  unsigned char *der;
  if (mode == SMIME_SIGN_DETACHED) {
    assert_true(starts_with(out.data, "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; "
                                      "micalg=sha-256; boundary=\""));
    struct split sp = split_signed(out.data, out.len);
    /* The first part is the entity, byte for byte. */
    assert_int_equal(sp.content_len, strlen(ENTITY));
    assert_memory_equal(sp.content, ENTITY, sp.content_len);
    assert_true(starts_with(sp.sig, "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
                                    "Content-Transfer-Encoding: base64\r\n"
                                    "Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"));
    der = b64_body(sp.sig, sp.sig_len, &dn);
  } else {
    assert_true(starts_with(out.data, "Content-Type: application/pkcs7-mime; smime-type=signed-data; "
                                      "name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n"));
    der = b64_body(out.data, out.len, &dn);
  }
  check_signed_der(der, dn, sig == SMIME_SIG_PSS && !ec);
  free(der);
  write_message("signed.eml", &out);
  openssl_verify("signed.eml", "verified.txt");
  assert_file_equals("verified.txt", ENTITY, strlen(ENTITY));
  /* PSS: salt as long as the SHA-256 digest, MGF1 with SHA-256. */
  if (sig == SMIME_SIG_PSS && !ec)
    assert_int_equal(tu_run("openssl cms -cmsout -print -in signed.eml > pss.txt && grep -q 'cont \\[ 2 \\].*' pss.txt "
                         "&& grep -q 'INTEGER *:20$' pss.txt && grep -q ':mgf1' pss.txt"), 0);
  /* (Not `openssl cms -verify -binary`: in binary mode OpenSSL's MIME reader
   * turns the CRLFs of the signed part into LFs.  The non-canonicalising
   * verifier is gpgsm, over the raw bytes of the first part.) */
  buf_free(&out);
}

static void test_sign_rsa_pkcs1(void **state) {
  (void)state;
  sign_case(false, SMIME_SIG_PKCS1, SMIME_SIGN_DETACHED);
  sign_case(false, SMIME_SIG_PKCS1, SMIME_SIGN_OPAQUE);
}

static void test_sign_rsa_pss(void **state) {
  (void)state;
  sign_case(false, SMIME_SIG_PSS, SMIME_SIGN_DETACHED);
  sign_case(false, SMIME_SIG_PSS, SMIME_SIGN_OPAQUE);
}

static void test_sign_ecdsa(void **state) {
  (void)state;
  sign_case(true, SMIME_SIG_PKCS1, SMIME_SIGN_DETACHED);
  sign_case(true, SMIME_SIG_PSS, SMIME_SIGN_OPAQUE); /* PSS asked of an EC key: ECDSA */
}

/* SMIMECapabilities: exactly our list, as another implementation reads it. */
static void test_smimecap_list(void **state) {
  (void)state;
  struct smime_signer s = signer(false, SMIME_SIG_PKCS1);
  struct buf out = BUF_INIT;
  sign_ok(ENTITY, strlen(ENTITY), &s, SMIME_SIGN_OPAQUE, &out);
  write_message("cap.eml", &out);
  assert_int_equal(tu_run("openssl cms -cmsout -print -in cap.eml > cap.txt"), 0);
  size_t n;
  char *t = tu_read_file("cap.txt", &n);
  const char *want[] = {"aes-256-gcm", "aes-128-gcm", "aes-256-cbc", "aes-128-cbc", "rsaesOaep"};
  const char *at = strstr(t, "S/MIME Capabilities");
  if (at == NULL) at = strstr(t, "SMIMECapabilities");
  assert_non_null(at);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const char *w = strstr(at, want[i]);
    if (w == NULL) fprintf(stderr, "capability %s missing\n", want[i]);
    assert_non_null(w);
    at = w; /* in order of preference */
  }
  const char *never[] = {"rc2", "des-", "des-ede3", "DES", "RC2"};
  for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) assert_null(strstr(t, never[i]));
  assert_non_null(strstr(t, "signingTime"));
  assert_non_null(strstr(t, "messageDigest"));
  assert_non_null(strstr(t, "contentType"));
  free(t);
  buf_free(&out);
}

/* ---- encryption --------------------------------------------------------------- */

static void encrypt_case(enum smime_cipher c, enum smime_key_transport kt, bool ec) {
  STACK_OF(X509) *r = rcpts(ec ? rcpt_ec : rcpt_rsa, NULL);
  struct buf out = BUF_INIT;
  encrypt_ok(ENTITY, strlen(ENTITY), r, c, kt, &out);
  const char *type = c == SMIME_AES256_GCM ? "authEnveloped-data" : "enveloped-data";
  char want[160];
  snprintf(want, sizeof want, "Content-Type: application/pkcs7-mime; smime-type=%s; name=smime.p7m\r\n", type);
  assert_true(starts_with(out.data, want));
  write_message("enc.eml", &out);
  openssl_decrypt("enc.eml", ec ? "ecrcpt" : "rcpt", "dec.txt");
  assert_file_equals("dec.txt", ENTITY, strlen(ENTITY));
  /* The key transport is what was asked for. */
  assert_int_equal(tu_run("openssl cms -cmsout -print -in enc.eml > enc.txt"), 0);
  size_t n;
  char *t = tu_read_file("enc.txt", &n);
  if (!ec) assert_int_equal(strstr(t, "rsaesOaep") != NULL, kt == SMIME_KT_OAEP);
  assert_non_null(strstr(t, c == SMIME_AES256_GCM ? "aes-256-gcm" : "aes-256-cbc"));
  free(t);
  sk_X509_free(r);
  buf_free(&out);
}

static void test_encrypt_cbc(void **state) {
  (void)state;
  encrypt_case(SMIME_AES256_CBC, SMIME_KT_PKCS1, false);
  encrypt_case(SMIME_AES256_CBC, SMIME_KT_OAEP, false);
  encrypt_case(SMIME_AES256_CBC, SMIME_KT_PKCS1, true);
}

static void test_encrypt_gcm(void **state) {
  (void)state;
  encrypt_case(SMIME_AES256_GCM, SMIME_KT_PKCS1, false);
  encrypt_case(SMIME_AES256_GCM, SMIME_KT_OAEP, false);
  encrypt_case(SMIME_AES256_GCM, SMIME_KT_OAEP, true);
}

/* Sign, then encrypt for an RSA (OAEP) and an EC recipient: each peels it. */
static void test_sign_then_encrypt(void **state) {
  (void)state;
  struct smime_signer s = signer(false, SMIME_SIG_PKCS1);
  struct buf sig = BUF_INIT, enc = BUF_INIT;
  sign_ok(ENTITY, strlen(ENTITY), &s, SMIME_SIGN_DETACHED, &sig);
  STACK_OF(X509) *r = rcpts(rcpt_rsa, rcpt_ec);
  encrypt_ok(sig.data, sig.len, r, SMIME_AES256_GCM, SMIME_KT_OAEP, &enc);
  write_message("se.eml", &enc);
  const char *who[] = {"rcpt", "ecrcpt"};
  for (int i = 0; i < 2; i++) {
    openssl_decrypt("se.eml", who[i], "se-inner.eml");
    assert_file_equals("se-inner.eml", sig.data, sig.len);
    openssl_verify("se-inner.eml", "se-content.txt");
    assert_file_equals("se-content.txt", ENTITY, strlen(ENTITY));
  }
  sk_X509_free(r);
  buf_free(&sig);
  buf_free(&enc);
}

/* RFC 2634 triple wrapping: sign, encrypt, sign; peel the three layers. */
static void test_triple_wrap(void **state) {
  (void)state;
  struct smime_signer in = signer(false, SMIME_SIG_PKCS1), outs = signer(true, SMIME_SIG_PKCS1);
  struct buf s1 = BUF_INIT, e = BUF_INIT, s2 = BUF_INIT;
  sign_ok(ENTITY, strlen(ENTITY), &in, SMIME_SIGN_OPAQUE, &s1);
  STACK_OF(X509) *r = rcpts(rcpt_rsa, NULL);
  encrypt_ok(s1.data, s1.len, r, SMIME_AES256_CBC, SMIME_KT_PKCS1, &e);
  sign_ok(e.data, e.len, &outs, SMIME_SIGN_DETACHED, &s2);
  write_message("triple.eml", &s2);
  openssl_verify("triple.eml", "t1.eml");
  assert_file_equals("t1.eml", e.data, e.len);
  openssl_decrypt("t1.eml", "rcpt", "t2.eml");
  assert_file_equals("t2.eml", s1.data, s1.len);
  openssl_verify("t2.eml", "t3.txt");
  assert_file_equals("t3.txt", ENTITY, strlen(ENTITY));
  sk_X509_free(r);
  buf_free(&s1);
  buf_free(&e);
  buf_free(&s2);
}

/* ---- gpgsm ----------------------------------------------------------------------- */

/* A private GNUPGHOME that trusts our CA (DESIGN.md "Setting up the real
 * components"). */
static void gpgsm_home(void) {
  assert_int_equal(tu_run("rm -rf gh && mkdir -m 700 gh && "
                       "echo allow-loopback-pinentry > gh/gpg-agent.conf && "
                       "GNUPGHOME=$PWD/gh gpgsm --batch --disable-crl-checks --import ca.pem signer.pem "
                       ">/dev/null 2>&1"), 0);
  assert_int_equal(tu_run("fp=$(openssl x509 -in ca.pem -noout -fingerprint -sha1 | sed 's/.*=//') && "
                       "echo \"$fp S\" > gh/trustlist.txt"), 0);
}

static void gpgsm_done(void) { tu_run("GNUPGHOME=$PWD/gh gpgconf --kill all >/dev/null 2>&1; rm -rf gh"); }

#define GPGSM "GNUPGHOME=$PWD/gh gpgsm --batch --disable-crl-checks --disable-dirmngr "

static void test_gpgsm_verify(void **state) {
  (void)state;
  if (!have_gpgsm) skip();
  gpgsm_home();
  struct smime_signer s = signer(false, SMIME_SIG_PKCS1);
  struct buf out = BUF_INIT;
  sign_ok(ENTITY, strlen(ENTITY), &s, SMIME_SIGN_DETACHED, &out);
  /* gpgsm reads CMS, not MIME: the first part's bytes and the DER. */
  struct split sp = split_signed(out.data, out.len);
  size_t dn;
  unsigned char *der = b64_body(sp.sig, sp.sig_len, &dn);
  tu_write_file("g.p7s", der, dn);
  tu_write_file("g.txt", sp.content, sp.content_len);
  assert_int_equal(tu_run(GPGSM "--verify g.p7s g.txt 2>g.log || (cat g.log >&2; false)"), 0);
  free(der);
  buf_reset(&out);
  /* Opaque: gpgsm writes the content it verified. */
  sign_ok(ENTITY, strlen(ENTITY), &s, SMIME_SIGN_OPAQUE, &out);
  der = b64_body(out.data, out.len, &dn);
  tu_write_file("g.p7m", der, dn);
  assert_int_equal(tu_run(GPGSM "--output g.out --verify g.p7m 2>g.log || (cat g.log >&2; false)"), 0);
  assert_file_equals("g.out", ENTITY, strlen(ENTITY));
  free(der);
  buf_free(&out);
  gpgsm_done();
}

static void test_gpgsm_decrypt(void **state) {
  (void)state;
  if (!have_gpgsm) skip();
  gpgsm_home();
  assert_int_equal(tu_run("openssl pkcs12 -export -legacy -in rcpt.pem -inkey rcpt.key -passout pass:sgtest "
                       "-out rcpt.p12 && echo sgtest > pass.txt && "
                       GPGSM "--pinentry-mode loopback --passphrase-fd 0 --import rcpt.p12 "
                       "< pass.txt >/dev/null 2>g.log || (cat g.log >&2; false)"), 0);
  STACK_OF(X509) *r = rcpts(rcpt_rsa, NULL);
  struct buf out = BUF_INIT;
  encrypt_ok(ENTITY, strlen(ENTITY), r, SMIME_AES256_CBC, SMIME_KT_PKCS1, &out);
  size_t dn;
  unsigned char *der = b64_body(out.data, out.len, &dn);
  tu_write_file("g.enc", der, dn);
  assert_int_equal(tu_run(GPGSM "--pinentry-mode loopback --passphrase-fd 0 --output g.dec --decrypt g.enc "
                       "< pass.txt 2>g.log || (cat g.log >&2; false)"), 0);
  assert_file_equals("g.dec", ENTITY, strlen(ENTITY));
  free(der);
  sk_X509_free(r);
  buf_free(&out);
  gpgsm_done();
}

/* ---- failures ---------------------------------------------------------------------- */

/* A signer key that cannot sign (public half only) is a failed private-key
 * operation: SG_EIO, a reason, and nothing appended. */
static void test_sign_key_refuses(void **state) {
  (void)state;
  EVP_PKEY *pub = X509_get_pubkey(rsa_cert);
  struct smime_signer s = {.key = pub, .cert = rsa_cert};
  struct buf out = BUF_INIT;
  assert_int_equal(buf_append(&out, "x", 1), 0);
  for (int m = 0; m < 2; m++) {
    char err[256] = "";
    assert_int_equal(smime_sign(ENTITY, strlen(ENTITY), &s, (enum smime_sign_mode)m, &out, err, sizeof err),
                     SG_EIO);
    assert_non_null(strstr(err, "signing failed"));
    assert_int_equal(out.len, 1);
  }
  EVP_PKEY_free(pub);
  buf_free(&out);
}

static void test_encrypt_bad_recipient(void **state) {
  (void)state;
  STACK_OF(X509) *r = rcpts(rcpt_rsa, ed_cert);
  struct buf out = BUF_INIT;
  char err[256] = "";
  assert_int_equal(smime_encrypt(ENTITY, strlen(ENTITY), r, SMIME_AES256_CBC, SMIME_KT_PKCS1, &out, err, sizeof err),
                   SG_EINVAL);
  assert_non_null(strstr(err, "recipient certificate 2 has an unusable public key"));
  assert_int_equal(out.len, 0);
  sk_X509_free(r);
  STACK_OF(X509) *none = sk_X509_new_null();
  assert_int_equal(smime_encrypt(ENTITY, strlen(ENTITY), none, SMIME_AES256_CBC, SMIME_KT_PKCS1, &out, err, sizeof err),
                   SG_EINVAL);
  sk_X509_free(none);
  buf_free(&out);
}

/* ---- a key in a SoftHSM2 token -------------------------------------------------- */

static void test_sign_with_token(void **state) {
  (void)state;
  char conf[128], pin[128], err[256] = "";
  tu_softhsm_files("12345678", conf, pin, sizeof conf);
  setenv("SOFTHSM2_CONF", conf, 1);
  struct hsm_params p = {.mode = HSM_INPROCESS, .token = "smimetest", .pin_file = pin, .softhsm_conf = conf};
  assert_int_equal(hsm_token_init(&p, "87654321", "12345678", err, sizeof err), 0);
  struct hsm *h = NULL;
  struct hsm_worker *w = NULL;
  struct hsm_keyref ref;
  EVP_PKEY *tk = NULL;
  assert_int_equal(hsm_open(&p, &h, err, sizeof err), 0);
  assert_int_equal(hsm_import_key(h, "gateway", rsa_key, &ref, err, sizeof err), 0);
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  assert_int_equal(hsm_worker_pkey(w, &ref, &tk), 0);
  for (int sig = 0; sig < 2; sig++)
    for (int m = 0; m < 2; m++) {
      struct smime_signer s = {.key = tk, .cert = rsa_cert, .signature = (enum smime_signature)sig};
      struct buf out = BUF_INIT;
      sign_ok(ENTITY, strlen(ENTITY), &s, (enum smime_sign_mode)m, &out);
      write_message("token.eml", &out);
      openssl_verify("token.eml", "token.txt");
      assert_file_equals("token.txt", ENTITY, strlen(ENTITY));
      buf_free(&out);
    }
  hsm_worker_free(w);
  hsm_close(h);
}

/* ---- a 50 MiB entity ------------------------------------------------------------------ */

#define BIG (50u << 20)

static long maxrss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* In a child (so each operation's peak is its own): build the entity,
 * run one operation, print output/input and (peak - before)/input. */
static void big_case(const char *what, int op) {
  fflush(stdout);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct buf e = BUF_INIT;
    static const char hdr[] = "Content-Type: text/plain; charset=us-ascii\r\n\r\n";
    if (buf_append(&e, hdr, sizeof hdr - 1) != 0 || buf_reserve(&e, BIG) != 0) _exit(2);
    while (e.len + 78 <= BIG) {
      memset(e.data + e.len, 'a' + (char)(e.len % 26), 76);
      memcpy(e.data + e.len + 76, "\r\n", 2);
      e.len += 78;
    }
    long before = maxrss_kib();
    struct buf out = BUF_INIT;
    struct smime_signer s = signer(false, SMIME_SIG_PKCS1);
    STACK_OF(X509) *r = rcpts(rcpt_rsa, NULL);
    char err[256] = "";
    int rc = op == 2 ? smime_encrypt(e.data, e.len, r, SMIME_AES256_CBC, SMIME_KT_PKCS1, &out, err, sizeof err)
                     : smime_sign(e.data, e.len, &s, (enum smime_sign_mode)op, &out, err, sizeof err);
    long peak = maxrss_kib();
    if (rc != 0) {
      fprintf(stderr, "%s: %s\n", what, err);
      _exit(1);
    }
    printf("  50 MiB %-16s output/input %.3f  peak RSS %ld MiB above the input's %ld MiB: %.2f x input\n", what,
           (double)out.len / (double)e.len, (peak - before) / 1024, before / 1024,
           (double)(peak - before) * 1024.0 / (double)e.len);
    fflush(stdout);
    _exit(0);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_big_entity(void **state) {
  (void)state;
  big_case("sign detached", SMIME_SIGN_DETACHED);
  big_case("sign opaque", SMIME_SIGN_OPAQUE);
  big_case("encrypt CBC", 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sign_rsa_pkcs1),     cmocka_unit_test(test_sign_rsa_pss),
      cmocka_unit_test(test_sign_ecdsa),         cmocka_unit_test(test_smimecap_list),
      cmocka_unit_test(test_encrypt_cbc),        cmocka_unit_test(test_encrypt_gcm),
      cmocka_unit_test(test_sign_then_encrypt),  cmocka_unit_test(test_triple_wrap),
      cmocka_unit_test(test_gpgsm_verify),       cmocka_unit_test(test_gpgsm_decrypt),
      cmocka_unit_test(test_sign_key_refuses),   cmocka_unit_test(test_encrypt_bad_recipient),
      cmocka_unit_test(test_sign_with_token),    cmocka_unit_test(test_big_entity),
  };
  /* SG_TEST_FILTER=test_sign_with_token runs one test (cmocka pattern). */
  if (getenv("SG_TEST_FILTER") != NULL) cmocka_set_test_filter(getenv("SG_TEST_FILTER"));
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
