/* Tests for crypto/decrypt.c (R6, R14; DESIGN.md "S/MIME": EFAIL, oracle,
 * budgets): incoming EnvelopedData and AuthEnvelopedData opened with keys
 * in a real SoftHSM2 token in a temp folder.  Every message is made by an
 * independent peer, the `openssl cms -encrypt` CLI, to certificates of the
 * token's keys; tampered messages are those bytes patched at places the
 * test first proves (the GCM tag, the ciphertext, the algorithm OID).
 *
 * Key operations are counted through the detail's "key operations: N"
 * (decrypt.h): a refusal "before any key work" asserts N = 0.
 *
 * Built twice: test_decrypt (SoftHSM2 in process: every behaviour, EC key
 * agreement included) and, with DECRYPT_TEST_REMOTE, test_decrypt_remote
 * (the token behind a `p11-kit server` started with hsm_server_start, as
 * the daemon does: a CBC message opens, and a stopped server is SG_ETEMP). */
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/decrypt.h"
#include "hsm/hsm.h"
#include "testutil.h"
#ifdef DECRYPT_TEST_REMOTE
#include "hsm/hsm_server.h"
#endif

#define PLAIN_LEN 40000 /* several 16 KiB chunks; a multiple of 16: one whole padding block */
#define TOKEN "sgdecrypt"

static struct hsm *h;
static struct hsm_worker *w;
#ifdef DECRYPT_TEST_REMOTE
static struct hsm_server *server;
#endif
static struct hsm_keyref org, old, other;
static X509 *org_cert, *old_cert;
#ifndef DECRYPT_TEST_REMOTE
static struct hsm_keyref ec;
static X509 *ec_cert;
#endif
static unsigned char plain[PLAIN_LEN];

/* ---- helpers -------------------------------------------------------------- */

static int write_pem(const char *name, X509 *x) {
  char f[256];
  tu_path(f, sizeof f, name);
  FILE *fp = fopen(f, "w");
  if (fp == NULL) return -1;
  int ok = PEM_write_X509(fp, x);
  return fclose(fp) == 0 && ok ? 0 : -1;
}

/* `openssl cms -encrypt` of plain.bin with opts (cipher, recipients);
 * the DER it wrote (the caller frees it). */
static unsigned char *encrypt_cli(size_t *len, const char *opts) {
  assert_int_equal(tu_run("openssl cms -encrypt -binary -in plain.bin -outform DER -out msg.der %s", opts), 0);
  return tu_read_file("msg.der", len);
}

struct result {
  int rc;
  const char *kind;
  char detail[1024];
  unsigned char *out; /* what the sink received (malloc'd copy) */
  size_t out_len;
};

static void result_free(struct result *r) { free(r->out); }

static void decrypt_with(const unsigned char *der, size_t len, const struct decrypt_key *keys, size_t n,
                         const struct decrypt_limits *lim, struct result *r) {
  memset(r, 0, sizeof *r);
  BIO *sink = BIO_new(BIO_s_mem());
  assert_non_null(sink);
  r->rc = decrypt_cms(w, der, len, keys, n, lim, sink, &r->kind, r->detail, sizeof r->detail);
  char *p = NULL;
  long got = BIO_get_mem_data(sink, &p);
  r->out_len = (size_t)got;
  r->out = malloc(r->out_len + 1);
  assert_non_null(r->out);
  if (got > 0) memcpy(r->out, p, r->out_len);
  BIO_free(sink);
  if (getenv("SG_TEST_VERBOSE")) printf("  rc=%d sink=%zu bytes detail: %s\n", r->rc, r->out_len, r->detail);
}

/* The token's current and old keys, as crypto/incoming.c hands them. */
static void decrypt_default(const unsigned char *der, size_t len, struct result *r) {
  struct decrypt_key keys[] = {{&org, org_cert}, {&old, old_cert}};
  decrypt_with(der, len, keys, 2, NULL, r);
}

static void assert_ops(const struct result *r, unsigned n) {
  char want[64];
  snprintf(want, sizeof want, "key operations: %u", n);
  assert_non_null(strstr(r->detail, want));
}

static void assert_opened(const struct result *r, const char *kind, const char *label) {
  char want[128];
  assert_int_equal(r->rc, 0);
  assert_string_equal(r->kind, kind);
  assert_int_equal(r->out_len, PLAIN_LEN);
  assert_memory_equal(r->out, plain, PLAIN_LEN);
  snprintf(want, sizeof want, "opened with key %s", label);
  assert_non_null(strstr(r->detail, want));
}

#define ANY (-1) /* a count a check leaves open */

/* r's code, and where given (not NULL, not ANY) its content type, a
 * phrase of its detail, its key operations and the bytes in the sink. */
static void assert_result(const struct result *r, int rc, const char *kind, const char *detail, int ops,
                          long out_len) {
  assert_int_equal(r->rc, rc);
  if (kind != NULL) assert_string_equal(r->kind, kind);
  if (detail != NULL) assert_non_null(strstr(r->detail, detail));
  if (ops != ANY) assert_ops(r, (unsigned)ops);
  if (out_len != ANY) assert_int_equal(r->out_len, (size_t)out_len);
}

/* der, given the token's current and old keys, has that result. */
static void expect_refused(const unsigned char *der, size_t len, int rc, const char *kind, const char *detail,
                           int ops, long out_len) {
  struct result r;
  decrypt_default(der, len, &r);
  assert_result(&r, rc, kind, detail, ops, out_len);
  result_free(&r);
}

/* What `openssl cms -encrypt` makes with opts (left in msg.der) opens with
 * the token's current and old keys: as kind, with key label; where given
 * (not NULL, not ANY) the detail names cipher and counts ops key
 * operations. */
static void expect_opens(const char *opts, const char *kind, const char *label, const char *cipher, int ops) {
  size_t len;
  unsigned char *der = encrypt_cli(&len, opts);
  struct result r;
  decrypt_default(der, len, &r);
  assert_opened(&r, kind, label);
  if (cipher != NULL) assert_non_null(strstr(r.detail, cipher));
  if (ops != ANY) assert_ops(&r, (unsigned)ops);
  result_free(&r);
  free(der);
}

/* ---- fixture -------------------------------------------------------------- */

/* A self-signed certificate for the token key pair ref (signed in the
 * token), valid from now. */
static X509 *token_cert(const struct hsm_keyref *ref, const char *cn) {
  EVP_PKEY *pub = NULL, *priv = NULL;
  if (hsm_public_key(h, ref, &pub) || hsm_worker_pkey(w, ref, &priv)) return NULL;
  struct cert_request r = {.cn = cn, .days = 30};
  X509 *x = NULL;
  char err[256];
  if (cert_create_selfsigned(&r, pub, priv, &x, err, sizeof err)) fprintf(stderr, "cert: %s\n", err);
  EVP_PKEY_free(pub);
  return x;
}

/* The certificate of a key pair from before a renewal: it expired a year
 * ago (cert_create_selfsigned only makes certificates valid from now). */
static X509 *expired_token_cert(const struct hsm_keyref *ref, const char *cn) {
  EVP_PKEY *pub = NULL, *priv = NULL;
  if (hsm_public_key(h, ref, &pub) || hsm_worker_pkey(w, ref, &priv)) return NULL;
  X509 *x = X509_new();
  X509_NAME *name = X509_NAME_new();
  bool ok = x && name && X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 20240101) &&
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) &&
            X509_set_subject_name(x, name) && X509_set_issuer_name(x, name) &&
            X509_gmtime_adj(X509_getm_notBefore(x), -2L * 365 * 86400) &&
            X509_gmtime_adj(X509_getm_notAfter(x), -365L * 86400) && X509_set_pubkey(x, pub) &&
            X509_sign(x, priv, EVP_sha256()) > 0;
  X509_NAME_free(name);
  EVP_PKEY_free(pub);
  if (!ok) X509_free(x);
  return ok ? x : NULL;
}

/* The temp folder: a SoftHSM2 token directory and plain.bin, the
 * plaintext of every message. */
static void make_dir(char *conf, char *pin, size_t cap) {
  assert_int_equal(tu_dir_make("decrypt"), 0);
  tu_softhsm_files("123456", conf, pin, cap);
  RAND_bytes(plain, sizeof plain);
  tu_write_file("plain.bin", plain, sizeof plain);
}

static int open_token(const char *conf, const char *pin) {
  char err[256] = "";
  struct hsm_params p = {.mode = HSM_INPROCESS, .token = TOKEN, .pin_file = pin, .softhsm_conf = conf};
  if (hsm_token_init(&p, "654321", "123456", err, sizeof err)) goto fail;
#ifdef DECRYPT_TEST_REMOTE
  char run[128];
  tu_path(run, sizeof run, "run");
  struct hsm_server_params sp = {.run_dir = run, .softhsm_conf = conf, .token = TOKEN};
  if (hsm_server_start(&sp, 10000, &server, err, sizeof err)) goto fail;
  p = (struct hsm_params){.mode = HSM_REMOTE, .token = TOKEN, .pin_file = pin,
                          .server_address = hsm_server_address(server)};
#endif
  if (hsm_open(&p, &h, err, sizeof err) || hsm_worker_new(h, &w, err, sizeof err)) goto fail;
  return 0;
fail:
  fprintf(stderr, "token: %s\n", err);
  return -1;
}

static int setup(void **state) {
  (void)state;
  char conf[128], pin[128], err[256] = "";
  make_dir(conf, pin, sizeof conf);
  if (open_token(conf, pin)) return -1;
  if (hsm_keygen(h, "org", HSM_KEY_RSA, 2048, &org, err, sizeof err) ||
      hsm_keygen(h, "old", HSM_KEY_RSA, 2048, &old, err, sizeof err) ||
      hsm_keygen(h, "other", HSM_KEY_RSA, 2048, &other, err, sizeof err)) {
    fprintf(stderr, "keygen: %s\n", err);
    return -1;
  }
  org_cert = token_cert(&org, "org.example.com");
  old_cert = expired_token_cert(&old, "org.example.com (2024)");
  if (!org_cert || !old_cert || write_pem("org.pem", org_cert) || write_pem("old.pem", old_cert)) return -1;
#ifndef DECRYPT_TEST_REMOTE
  /* EC key agreement needs ECDH in the token: in process only (the p11-kit
   * RPC does not forward derive). */
  if (hsm_keygen(h, "ec", HSM_KEY_EC, 256, &ec, err, sizeof err)) return -1;
  ec_cert = token_cert(&ec, "ec.example.com");
  if (!ec_cert || write_pem("ec.pem", ec_cert)) return -1;
#endif
  return 0;
}

static int teardown(void **state) {
  (void)state;
  X509_free(org_cert);
  X509_free(old_cert);
#ifndef DECRYPT_TEST_REMOTE
  X509_free(ec_cert);
#endif
  hsm_worker_free(w);
  hsm_close(h);
#ifdef DECRYPT_TEST_REMOTE
  if (server) hsm_server_stop(server);
#endif
  return tu_dir_remove();
}

#ifndef DECRYPT_TEST_REMOTE
/* ---- messages that open ----------------------------------------------------- */

static void test_cbc256_opens(void **state) {
  (void)state;
  expect_opens("-aes-256-cbc org.pem", "enveloped-data", "org", "aes-256-cbc", 1);
}

static void test_cbc128_opens(void **state) {
  (void)state;
  expect_opens("-aes-128-cbc org.pem", "enveloped-data", "org", "aes-128-cbc", ANY);
}

/* RSAES-OAEP key transport (the CLI writes rsaesOaep as the key
 * encryption algorithm; OpenSSL sets the padding on the token key's
 * context from it). */
static void test_oaep_opens(void **state) {
  (void)state;
  expect_opens("-aes-256-cbc -recip org.pem -keyopt rsa_padding_mode:oaep", "enveloped-data", "org", NULL, ANY);
  /* The message that opened is OAEP. */
  assert_int_equal(tu_run("openssl asn1parse -inform DER -in msg.der | grep -q rsaesOaep"), 0);
}

/* OpenSSL 3.0's CLI makes AuthEnvelopedData for a GCM cipher. */
static void test_gcm_auth_enveloped_opens(void **state) {
  (void)state;
  expect_opens("-aes-256-gcm org.pem", "authEnveloped-data", "org", "aes-256-gcm", ANY);
  /* The message that opened is AuthEnvelopedData. */
  assert_int_equal(tu_run("openssl asn1parse -inform DER -in msg.der | grep -q id-smime-ct-authEnvelopedData"), 0);
}

/* R14: mail sent before a renewal, to a certificate that has expired
 * since, still opens with the old key. */
static void test_old_expired_key_opens(void **state) {
  (void)state;
  assert_true(X509_cmp_current_time(X509_get0_notAfter(old_cert)) < 0);
  /* One key operation: the current key's certificate did not match, so
   * that key was not tried. */
  expect_opens("-aes-256-cbc old.pem", "enveloped-data", "old", NULL, 1);
}

/* A RecipientInfo naming the certificate by subject key identifier. */
static void test_keyid_recipient_opens(void **state) {
  (void)state;
  expect_opens("-aes-256-cbc -keyid org.pem", "enveloped-data", "org", NULL, ANY);
  /* The message that opened names the certificate by key identifier. */
  size_t len;
  unsigned char *der = tu_read_file("msg.der", &len);
  const unsigned char *p = der;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  assert_non_null(cms);
  ASN1_OCTET_STRING *keyid = NULL;
  X509_NAME *issuer = NULL;
  ASN1_INTEGER *serial = NULL;
  CMS_RecipientInfo *ri = sk_CMS_RecipientInfo_value(CMS_get0_RecipientInfos(cms), 0);
  assert_int_equal(CMS_RecipientInfo_ktri_get0_signer_id(ri, &keyid, &issuer, &serial), 1);
  assert_non_null(keyid);
  assert_null(issuer);
  CMS_ContentInfo_free(cms);
  free(der);
}

/* Key agreement (ECDH, KeyAgreeRecipientInfo) with an EC key in the token. */
static void test_ec_key_agreement_opens(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc ec.pem");
  struct decrypt_key keys[] = {{&org, org_cert}, {&ec, ec_cert}};
  struct result r;
  decrypt_with(der, len, keys, 2, NULL, &r);
  assert_opened(&r, "enveloped-data", "ec");
  assert_ops(&r, 1);
  result_free(&r);
  free(der);
}

/* ---- tampering ---------------------------------------------------------------- */

/* A flipped GCM tag: SG_EPERM.  OpenSSL checks the tag only after the last
 * byte, so the whole (unauthenticated) plaintext is already in the sink:
 * the reason the caller must discard the sink on any failure. */
static void test_gcm_flipped_tag_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-gcm org.pem");
  /* AuthEnvelopedData ends with mac OCTET STRING (16 bytes). */
  assert_int_equal(der[len - 18], 0x04);
  assert_int_equal(der[len - 17], 0x10);
  der[len - 1] ^= 0x01;
  /* The whole plaintext was written before the tag failed. */
  expect_refused(der, len, SG_EPERM, "authEnveloped-data", "decryption failed with key org", ANY, PLAIN_LEN);
  free(der);
}

/* A GCM tag cut to one octet: OpenSSL 3.0 would check just that octet
 * (a forgery in 256 tries).  The mac must be the announced aes-ICVlen, 12
 * to 16 octets: refused before any key work, nothing in the sink.  With
 * -stream the BER has indefinite lengths, so the mac (04 10, 16 octets)
 * sits just before the three end-of-contents pairs and can be cut. */
static void test_gcm_short_tag_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-gcm -stream org.pem");
  size_t off = len - 6 - 18;
  assert_int_equal(der[off], 0x04);
  assert_int_equal(der[off + 1], 0x10);
  for (size_t i = len - 6; i < len; i++) assert_int_equal(der[i], 0);
  der[off + 1] = 1;
  memmove(der + off + 3, der + len - 6, 6);
  len = off + 3 + 6;
  expect_refused(der, len, SG_EPERM, NULL, "GCM tag of 1 octets", ANY, 0);
  free(der);
}

/* The ciphertext of an EnvelopedData: proves that it is the last ct_len
 * bytes of the DER (a primitive [0] at the end) and returns its length. */
static size_t cbc_ciphertext_at_end(const unsigned char *der, size_t len) {
  const unsigned char *p = der;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  assert_non_null(cms);
  ASN1_OCTET_STRING **ct = CMS_get0_content(cms);
  assert_true(ct != NULL && *ct != NULL);
  size_t n = (size_t)ASN1_STRING_length(*ct);
  assert_int_equal(n, (PLAIN_LEN / 16 + 1) * 16);
  assert_memory_equal(der + len - n, ASN1_STRING_get0_data(*ct), n);
  CMS_ContentInfo_free(cms);
  return n;
}

/* CBC padding made invalid: the last byte of the next-to-last ciphertext
 * block XORs into the last plaintext byte, the padding length 16 here;
 * XOR with 16 makes it 0, never valid padding.  SG_EPERM. */
static void test_cbc_bad_padding_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  cbc_ciphertext_at_end(der, len);
  der[len - 17] ^= 16;
  expect_refused(der, len, SG_EPERM, NULL, "decryption failed with key org", ANY, ANY);
  free(der);
}

/* CBC has no integrity: a flipped bit in the first ciphertext block
 * garbles plaintext block 0 and flips the same bit of block 1, and the
 * padding stays valid, so the message "opens" (0).  Inherent to
 * EnvelopedData with CBC; only AuthEnvelopedData detects it. */
static void test_cbc_flip_decrypts_to_garbage(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  size_t n = cbc_ciphertext_at_end(der, len);
  der[len - n] ^= 0x01;
  struct result r;
  decrypt_default(der, len, &r);
  assert_int_equal(r.rc, 0);
  assert_int_equal(r.out_len, PLAIN_LEN);
  assert_memory_not_equal(r.out, plain, 16);
  assert_int_equal(r.out[16], plain[16] ^ 0x01);
  assert_memory_equal(r.out + 17, plain + 17, PLAIN_LEN - 17);
  result_free(&r);
  free(der);
}

/* The one place the OID of id-aes256-CBC (2.16.840.1.101.3.4.1.42) or
 * id-aes256-GCM (...1.46) is in der: its last byte. */
static unsigned char *aes256_oid_last_byte(unsigned char *der, size_t len, unsigned char last) {
  unsigned char oid[] = {0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, last};
  unsigned char *at = memmem(der, len, oid, sizeof oid);
  assert_non_null(at);
  assert_null(memmem(at + 1, len - (size_t)(at + 1 - der), oid, sizeof oid));
  return at + sizeof oid - 1;
}

#define EFAIL_GCM_IN_ENVELOPED "AEAD cipher aes-256-gcm in enveloped-data refused (EFAIL)"

/* EFAIL: an EnvelopedData claiming GCM would release unauthenticated
 * CTR-mode plaintext.  Refused before any key operation. */
static void test_gcm_in_enveloped_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  *aes256_oid_last_byte(der, len, 0x2a) = 0x2e;
  expect_refused(der, len, SG_EPERM, "enveloped-data", EFAIL_GCM_IN_ENVELOPED, 0, 0);
  free(der);
}

/* And the reverse: an AuthEnvelopedData whose cipher is CBC. */
static void test_cbc_in_auth_enveloped_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-gcm org.pem");
  *aes256_oid_last_byte(der, len, 0x2e) = 0x2a;
  expect_refused(der, len, SG_EPERM, "authEnveloped-data",
                 "non-AEAD cipher aes-256-cbc in authEnveloped-data refused (EFAIL)", 0, ANY);
  free(der);
}

/* Appends tag, DER length and contents at out + *n. */
static void put_tlv(unsigned char *out, size_t *n, unsigned char tag, const unsigned char *p, size_t len) {
  out[(*n)++] = tag;
  if (len < 0x80) {
    out[(*n)++] = (unsigned char)len;
  } else {
    assert_true(len < 0x10000);
    out[(*n)++] = 0x82;
    out[(*n)++] = (unsigned char)(len >> 8);
    out[(*n)++] = (unsigned char)len;
  }
  memmove(out + *n, p, len);
  *n += len;
}

/* The element at *p (header and contents); *p moves past it. */
static size_t next_tlv(const unsigned char **p, const unsigned char *end, int want_tag) {
  const unsigned char *q = *p;
  long plen;
  int tag, cls;
  assert_int_equal(ASN1_get_object(&q, &plen, &tag, &cls, end - q) & 0x81, 0);
  assert_int_equal(tag, want_tag);
  size_t total = (size_t)(q + plen - *p);
  *p = q + plen;
  return total;
}

/* The EFAIL downgrade: a real AuthEnvelopedData (GCM) rewrapped as an
 * EnvelopedData, its mac dropped.  OpenSSL would decrypt it as GCM without
 * a tag and fail only at the end, after the plaintext went out.  Refused
 * before any key operation, nothing in the sink. */
static void test_auth_enveloped_downgrade_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-gcm org.pem");
  /* ContentInfo SEQ, OID, [0], AuthEnvelopedData SEQ: step into each. */
  const unsigned char *p = der, *end = der + len, *q;
  long plen;
  int tag, cls;
  for (int i = 0; i < 4; i++) {
    q = p;
    assert_int_equal(ASN1_get_object(&q, &plen, &tag, &cls, end - p) & 0x81, 0);
    p = i == 1 ? q + plen : q;
  }
  const unsigned char *body = p;
  size_t body_len = next_tlv(&p, end, V_ASN1_INTEGER);
  body_len += next_tlv(&p, end, V_ASN1_SET);
  body_len += next_tlv(&p, end, V_ASN1_SEQUENCE); /* version, recipientInfos, content */
  assert_int_equal(next_tlv(&p, end, V_ASN1_OCTET_STRING), 18); /* the mac, dropped */
  static const unsigned char enveloped_oid[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03};
  unsigned char *a = malloc(len + 16), *b = malloc(len + 16);
  assert_true(a && b);
  size_t na = 0, nb = 0;
  put_tlv(a, &na, 0x30, body, body_len);              /* EnvelopedData */
  memcpy(b, enveloped_oid, sizeof enveloped_oid);
  nb = sizeof enveloped_oid;
  put_tlv(b, &nb, 0xa0, a, na);                        /* [0] EXPLICIT */
  na = 0;
  put_tlv(a, &na, 0x30, b, nb);                        /* ContentInfo */
  expect_refused(a, na, SG_EPERM, "enveloped-data", EFAIL_GCM_IN_ENVELOPED, 0, 0);
  free(a);
  free(b);
  free(der);
}

/* ---- keys and budgets --------------------------------------------------------- */

/* Mail for someone else's key: no RecipientInfo matches, no token work. */
static void test_other_key_no_match(void **state) {
  (void)state;
  assert_int_equal(tu_run("openssl req -x509 -newkey rsa:2048 -nodes -keyout stranger.key -out stranger.pem "
                      "-subj /CN=stranger -days 1 2>/dev/null"),
                   0);
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc stranger.pem");
  expect_refused(der, len, SG_EPERM, NULL, "no matching key among 2 candidates", 0, 0);
  free(der);
}

/* Throwaway recipient certificates (one software key, many serials). */
static void make_throwaway_certs(int n, char *args, size_t cap) {
  EVP_PKEY *k = EVP_RSA_gen(2048);
  assert_non_null(k);
  args[0] = '\0';
  for (int i = 0; i < n; i++) {
    char cn[32], name[32];
    snprintf(cn, sizeof cn, "throwaway %d", i);
    snprintf(name, sizeof name, "t%d.pem", i);
    struct cert_request r = {.cn = cn, .days = 1};
    X509 *x = NULL;
    char err[256];
    assert_int_equal(cert_create_selfsigned(&r, k, k, &x, err, sizeof err), 0);
    assert_int_equal(write_pem(name, x), 0);
    X509_free(x);
    strncat(args, name, cap - strlen(args) - 2);
    strcat(args, " ");
  }
  EVP_PKEY_free(k);
}

/* 70 recipients against the default budget of 64: SG_ELIMIT before any key
 * work, though one of them is ours; with a budget of 70 the same message
 * opens. */
static void test_too_many_recipients(void **state) {
  (void)state;
  char args[4096], opts[4200];
  make_throwaway_certs(69, args, sizeof args);
  snprintf(opts, sizeof opts, "-aes-256-cbc %s org.pem", args);
  size_t len;
  unsigned char *der = encrypt_cli(&len, opts);
  expect_refused(der, len, SG_ELIMIT, NULL, "70 recipients: over the budget of 64", 0, ANY);
  struct result r;
  struct decrypt_limits lim = DECRYPT_LIMITS_DEFAULT;
  lim.max_recipient_infos = 70;
  struct decrypt_key keys[] = {{&org, org_cert}};
  decrypt_with(der, len, keys, 1, &lim, &r);
  assert_opened(&r, "enveloped-data", "org");
  result_free(&r);
  free(der);
}

/* Six RecipientInfos for our certificate, but the candidate's token key
 * is another one (OAEP: a wrong key never unpads by chance), so every
 * attempt fails: the default budget stops at 4 key operations
 * (SG_ELIMIT); a budget of 10 tries each RecipientInfo exactly once
 * (6 operations, SG_EPERM). */
static void test_attempt_budget(void **state) {
  (void)state;
  char opts[1024] = "-aes-256-cbc";
  for (int i = 0; i < 6; i++) strcat(opts, " -recip org.pem -keyopt rsa_padding_mode:oaep");
  size_t len;
  unsigned char *der = encrypt_cli(&len, opts);
  struct decrypt_key keys[] = {{&other, org_cert}};
  struct result r;
  decrypt_with(der, len, keys, 1, NULL, &r);
  assert_result(&r, SG_ELIMIT, NULL, "6 recipients", 4, 0);
  assert_non_null(strstr(r.detail, "budget of 4 key operations reached"));
  result_free(&r);
  struct decrypt_limits lim = DECRYPT_LIMITS_DEFAULT;
  lim.max_attempts = 10;
  decrypt_with(der, len, keys, 1, &lim, &r);
  assert_result(&r, SG_EPERM, NULL, "decryption failed with key other", 6, 0);
  result_free(&r);
  free(der);
}

static void test_size_budget(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  struct decrypt_limits lim = DECRYPT_LIMITS_DEFAULT;
  lim.max_size = len - 1;
  struct decrypt_key keys[] = {{&org, org_cert}};
  struct result r;
  decrypt_with(der, len, keys, 1, &lim, &r);
  assert_result(&r, SG_ELIMIT, NULL, "over the budget", 0, ANY);
  result_free(&r);
  free(der);
}

/* A sink that refuses writes: SG_EIO, not a decryption failure. */
static void test_sink_write_failure(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  struct decrypt_key keys[] = {{&org, org_cert}};
  BIO *ro = BIO_new_mem_buf("", 0); /* read-only */
  char detail[512];
  int rc = decrypt_cms(w, der, len, keys, 1, NULL, ro, NULL, detail, sizeof detail);
  BIO_free(ro);
  assert_int_equal(rc, SG_EIO);
  assert_non_null(strstr(detail, "writing the plaintext failed"));
  free(der);
}

/* No token worker yet (the token server is still starting): a message
 * that needs a key is "retry later"; one that could never open is final. */
static void test_no_worker_is_temporary_only_for_key_work(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  struct decrypt_key keys[] = {{&org, org_cert}};
  BIO *sink = BIO_new(BIO_s_mem());
  char detail[512];
  assert_int_equal(decrypt_cms(NULL, der, len, keys, 1, NULL, sink, NULL, detail, sizeof detail), SG_ETEMP);
  assert_non_null(strstr(detail, "token unreachable for key org"));
  assert_int_equal(BIO_ctrl_pending(sink), 0);
  struct decrypt_key old_only[] = {{&old, old_cert}};
  assert_int_equal(decrypt_cms(NULL, der, len, old_only, 1, NULL, sink, NULL, detail, sizeof detail), SG_EPERM);
  assert_non_null(strstr(detail, "no matching key"));
  BIO_free(sink);
  free(der);
}

/* ---- not enveloped data -------------------------------------------------------- */

/* Refused as not what it must be, before any key work, nothing written. */
static void assert_einval(const unsigned char *der, size_t len, const char *why) {
  expect_refused(der, len, SG_EINVAL, NULL, why, 0, 0);
}

static void test_garbage_refused(void **state) {
  (void)state;
  unsigned char junk[4096];
  RAND_bytes(junk, sizeof junk);
  junk[0] = 0x30; /* looks like a SEQUENCE */
  junk[1] = 0x82;
  assert_einval(junk, sizeof junk, "not a CMS ContentInfo");
  assert_einval(junk, 0, "not a CMS ContentInfo");
}

/* Every proper prefix of a real message (stepping 7 bytes) is refused. */
static void test_truncated_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  for (size_t n = 0; n < len; n += n < 600 ? 7 : 4999) expect_refused(der, n, SG_EINVAL, NULL, NULL, ANY, ANY);
  free(der);
}

static void test_trailing_bytes_refused(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  unsigned char *more = realloc(der, len + 3);
  assert_non_null(more);
  memcpy(more + len, "\0\0\0", 3);
  assert_einval(more, len + 3, "3 bytes after the CMS ContentInfo");
  free(more);
}

static void test_signed_data_refused(void **state) {
  (void)state;
  assert_int_equal(tu_run("openssl req -x509 -newkey rsa:2048 -nodes -keyout signer.key -out signer.pem "
                      "-subj /CN=signer -days 1 2>/dev/null && openssl cms -sign -binary -in plain.bin "
                      "-signer signer.pem -inkey signer.key -outform DER -out signed.der"),
                   0);
  size_t len;
  unsigned char *der = tu_read_file("signed.der", &len);
  assert_einval(der, len, "content type pkcs7-signedData is not enveloped data");
  free(der);
}
#endif

#ifdef DECRYPT_TEST_REMOTE
/* ---- remote token ------------------------------------------------------------------ */

static void test_remote_cbc_opens(void **state) {
  (void)state;
  expect_opens("-aes-256-cbc org.pem", "enveloped-data", "org", NULL, 1);
}

/* The token server stops: the key operation fails, the worker's check
 * finds the server gone, and the answer is "retry later". */
static void test_remote_stopped_server_is_temporary(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = encrypt_cli(&len, "-aes-256-cbc org.pem");
  hsm_server_stop(server);
  server = NULL;
  expect_refused(der, len, SG_ETEMP, NULL, "token unreachable", ANY, 0);
  free(der);
}
#endif

int main(void) {
  /* p11-kit-client writes to the server socket without MSG_NOSIGNAL. */
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
#ifndef DECRYPT_TEST_REMOTE
      cmocka_unit_test(test_cbc256_opens),
      cmocka_unit_test(test_cbc128_opens),
      cmocka_unit_test(test_oaep_opens),
      cmocka_unit_test(test_gcm_auth_enveloped_opens),
      cmocka_unit_test(test_old_expired_key_opens),
      cmocka_unit_test(test_keyid_recipient_opens),
      cmocka_unit_test(test_ec_key_agreement_opens),
      cmocka_unit_test(test_gcm_flipped_tag_refused),
      cmocka_unit_test(test_gcm_short_tag_refused),
      cmocka_unit_test(test_cbc_bad_padding_refused),
      cmocka_unit_test(test_cbc_flip_decrypts_to_garbage),
      cmocka_unit_test(test_gcm_in_enveloped_refused),
      cmocka_unit_test(test_cbc_in_auth_enveloped_refused),
      cmocka_unit_test(test_auth_enveloped_downgrade_refused),
      cmocka_unit_test(test_other_key_no_match),
      cmocka_unit_test(test_too_many_recipients),
      cmocka_unit_test(test_attempt_budget),
      cmocka_unit_test(test_size_budget),
      cmocka_unit_test(test_sink_write_failure),
      cmocka_unit_test(test_no_worker_is_temporary_only_for_key_work),
      cmocka_unit_test(test_garbage_refused),
      cmocka_unit_test(test_truncated_refused),
      cmocka_unit_test(test_trailing_bytes_refused),
      cmocka_unit_test(test_signed_data_refused),
#else
      cmocka_unit_test(test_remote_cbc_opens),
      cmocka_unit_test(test_remote_stopped_server_is_temporary),
#endif
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
