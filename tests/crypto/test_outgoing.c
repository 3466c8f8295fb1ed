/* Tests for crypto/outgoing.c: what one message under a sending profile
 * becomes, with a real SoftHSM2 token (in-process, a throwaway folder) and
 * a real LMDB key store.  The bytes themselves are checked by openssl and
 * gpgsm in tests/integration/test_outgoing*.py; here each outcome of the
 * decision is pinned down: DONE, NOKEYS with who has a key, TEMP when
 * there is no token worker, FAIL when the token signs with a key that does
 * not belong to the certificate (R25), and never DONE by default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/keystore.h"
#include "crypto/outgoing.h"
#include "hsm/hsm.h"

static char dir[64], conf[128], pin_file[128], keys_dir[128];
static struct hsm *h;
static struct hsm_worker *w;
static struct keystore *ks;
static struct outgoing_signer signer, wrong_signer;

static const char MSG[] =
    "From: <alice@example.com>\r\nTo: <bob@example.net>\r\nSubject: numbers\r\n"
    "Message-ID: <t1@test>\r\n\r\nthe quarterly numbers\r\n";

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  chmod(path, 0600);
}

/* A self-signed certificate for key pair ref in the token. */
static X509 *token_cert(const struct hsm_keyref *ref, const char *cn) {
  EVP_PKEY *pub = NULL, *priv = NULL;
  assert_int_equal(hsm_public_key(h, ref, &pub), 0);
  assert_int_equal(hsm_worker_pkey(w, ref, &priv), 0);
  struct cert_request r = {.cn = cn, .days = 30};
  X509 *x = NULL;
  char err[256];
  assert_int_equal(cert_create_selfsigned(&r, pub, priv, &x, err, sizeof err), 0);
  EVP_PKEY_free(pub);
  return x;
}

/* bob@example.net's encryption certificate (a software key) in the store. */
static void add_recipient(void) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  const char *emails[] = {"bob@example.net"};
  struct cert_request r = {.cn = "bob", .days = 30, .san_emails = emails, .n_san_emails = 1};
  X509 *x = NULL;
  char err[256];
  assert_int_equal(cert_create_selfsigned(&r, k, k, &x, err, sizeof err), 0);
  assert_int_equal(keystore_pubkey_add(ks, "bob", x, err, sizeof err), 0);
  X509_free(x);
  EVP_PKEY_free(k);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/sg-out-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  char tokens[128], text[256], err[256];
  snprintf(tokens, sizeof tokens, "%s/tokens", dir);
  snprintf(conf, sizeof conf, "%s/softhsm2.conf", dir);
  snprintf(pin_file, sizeof pin_file, "%s/pin", dir);
  snprintf(keys_dir, sizeof keys_dir, "%s/keys", dir);
  mkdir(tokens, 0700);
  snprintf(text, sizeof text, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens);
  write_file(conf, text);
  write_file(pin_file, "123456\n");
  struct hsm_params p = {.mode = HSM_INPROCESS, .token = "t", .pin_file = pin_file, .softhsm_conf = conf};
  if (hsm_token_init(&p, "654321", "123456", err, sizeof err) || hsm_open(&p, &h, err, sizeof err)) {
    fprintf(stderr, "token: %s\n", err);
    return -1;
  }
  struct hsm_keyref a, b;
  if (hsm_keygen(h, "org", HSM_KEY_RSA, 2048, &a, err, sizeof err) ||
      hsm_keygen(h, "other", HSM_KEY_RSA, 2048, &b, err, sizeof err) || hsm_worker_new(h, &w, err, sizeof err))
    return -1;
  signer = (struct outgoing_signer){a, token_cert(&a, "org.example.com"), sk_X509_new_null()};
  /* The certificate of "org" with the key of "other": the token signs, the
   * signature cannot be made to match (a refused signature, R25). */
  wrong_signer = (struct outgoing_signer){b, X509_dup(signer.cert), sk_X509_new_null()};
  if (keystore_open(keys_dir, true, &ks, err, sizeof err)) return -1;
  add_recipient();
  return 0;
}

static void signer_free(struct outgoing_signer *s) {
  X509_free(s->cert);
  sk_X509_free(s->chain);
}

static int teardown(void **state) {
  (void)state;
  signer_free(&signer);
  signer_free(&wrong_signer);
  keystore_close(ks);
  hsm_worker_free(w);
  hsm_close(h);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void run(enum config_mode mode, const struct outgoing_signer *s, char *const *rcpts, size_t n,
                bool plain, struct hsm_worker *worker, struct outgoing_result *res) {
  static struct config_sending_profile p;
  p = (struct config_sending_profile){.name = "p", .mode = mode, .signing_certificate = "org"};
  struct outgoing_request rq = {&p, s, ks, NULL, plain, MSG, sizeof MSG - 1, NULL, rcpts, n, time(NULL)};
  outgoing_process(worker, &rq, res);
}

static void test_sign_done(void **state) {
  (void)state;
  char *rcpts[] = {"someone@example.org"};
  struct outgoing_result res;
  run(CONFIG_MODE_SIGN, &signer, rcpts, 1, false, w, &res);
  assert_int_equal(res.status, OUTGOING_DONE);
  assert_string_equal(res.action, "sign");
  assert_non_null(strstr(res.out.data, "Subject: numbers\r\n"));
  assert_non_null(strstr(res.out.data, "MIME-Version: 1.0\r\nContent-Type: multipart/signed;"));
  outgoing_result_free(&res);
}

static void test_encrypt_nokeys_says_who(void **state) {
  (void)state;
  char *rcpts[] = {"bob@example.net", "nokey@example.org", "BOB@Example.NET"};
  struct outgoing_result res;
  run(CONFIG_MODE_SIGN_ENCRYPT, &signer, rcpts, 3, false, w, &res);
  assert_int_equal(res.status, OUTGOING_NOKEYS);
  assert_int_equal(res.n_keyed, 3);
  assert_true(res.keyed[0]);
  assert_false(res.keyed[1]);
  assert_int_equal(res.out.len, 0); /* nothing made, no token work */
  outgoing_result_free(&res);
}

static void test_encrypt_done_when_all_have_keys(void **state) {
  (void)state;
  char *rcpts[] = {"bob@example.net"};
  struct outgoing_result res;
  run(CONFIG_MODE_TRIPLE, &signer, rcpts, 1, false, w, &res);
  assert_int_equal(res.status, OUTGOING_DONE);
  assert_string_equal(res.action, "triple");
  assert_null(strstr(res.out.data, "quarterly")); /* the text is inside the envelope */
  outgoing_result_free(&res);
}

static void test_plain_copy_of_encrypt_only_is_unchanged(void **state) {
  (void)state;
  char *rcpts[] = {"nokey@example.org"};
  struct outgoing_result res;
  run(CONFIG_MODE_ENCRYPT, NULL, rcpts, 1, true, w, &res);
  assert_int_equal(res.status, OUTGOING_DONE);
  assert_string_equal(res.action, "relay");
  assert_int_equal(res.out.len, sizeof MSG - 1);
  assert_memory_equal(res.out.data, MSG, sizeof MSG - 1);
  outgoing_result_free(&res);
}

static void test_plain_copy_of_sign_encrypt_is_signed(void **state) {
  (void)state;
  char *rcpts[] = {"nokey@example.org"};
  struct outgoing_result res;
  run(CONFIG_MODE_SIGN_ENCRYPT, &signer, rcpts, 1, true, w, &res);
  assert_int_equal(res.status, OUTGOING_DONE);
  assert_string_equal(res.action, "sign");
  assert_non_null(strstr(res.out.data, "multipart/signed"));
  outgoing_result_free(&res);
}

static void test_no_worker_is_temporary(void **state) {
  (void)state;
  char *rcpts[] = {"bob@example.net"};
  struct outgoing_result res;
  run(CONFIG_MODE_SIGN, &signer, rcpts, 1, false, NULL, &res);
  assert_int_equal(res.status, OUTGOING_TEMP);
  assert_non_null(strstr(res.reason, "token unreachable"));
  assert_int_equal(res.out.len, 0);
  outgoing_result_free(&res);
}

static void test_refused_signature_fails(void **state) {
  (void)state;
  char *rcpts[] = {"bob@example.net"};
  struct outgoing_result res;
  run(CONFIG_MODE_SIGN, &wrong_signer, rcpts, 1, false, w, &res);
  assert_int_equal(res.status, OUTGOING_FAIL);
  assert_non_null(strstr(res.reason, "signing failed"));
  outgoing_result_free(&res);
}

static void test_missing_signer_fails(void **state) {
  (void)state;
  char *rcpts[] = {"bob@example.net"};
  struct outgoing_result res;
  run(CONFIG_MODE_SIGN, NULL, rcpts, 1, false, w, &res);
  assert_int_equal(res.status, OUTGOING_FAIL);
  outgoing_result_free(&res);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sign_done),
      cmocka_unit_test(test_encrypt_nokeys_says_who),
      cmocka_unit_test(test_encrypt_done_when_all_have_keys),
      cmocka_unit_test(test_plain_copy_of_encrypt_only_is_unchanged),
      cmocka_unit_test(test_plain_copy_of_sign_encrypt_is_signed),
      cmocka_unit_test(test_no_worker_is_temporary),
      cmocka_unit_test(test_refused_signature_fails),
      cmocka_unit_test(test_missing_signer_fails),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
