/* Tests for crypto/certcache.c (issue #7: a partner's certificates decoded
 * once, not per message).  The one property that matters: for any input,
 * certcache_d2i_cms gives what d2i_CMS_ContentInfo gives (both NULL, or
 * structures that encode to the same bytes), whichever path it took.
 * Fixtures: EC P-256 certificates and CMS SignedData made in-process with
 * OpenSSL's API. */
#include <openssl/cms.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/certcache.h"

#define N_CERTS (CERTCACHE_MAX_CERTS + 1)

static EVP_PKEY *key[N_CERTS];
static X509 *cert[N_CERTS];

static X509 *self_signed(EVP_PKEY *k, int serial) {
  X509 *x = X509_new();
  assert_non_null(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_NAME *n = X509_get_subject_name(x);
  char cn[32];
  snprintf(cn, sizeof cn, "certcache test %d", serial);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, n);
  X509_set_pubkey(x, k);
  assert_true(X509_sign(x, k, EVP_sha256()) > 0);
  return x;
}

static int setup(void **state) {
  (void)state;
  for (int i = 0; i < N_CERTS; i++) {
    key[i] = EVP_EC_gen("P-256");
    assert_non_null(key[i]);
    cert[i] = self_signed(key[i], i + 1);
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < N_CERTS; i++) X509_free(cert[i]), EVP_PKEY_free(key[i]);
  return 0;
}

/* A detached SignedData by cert[0] carrying cert[0..n_certs-1]; DER
 * (indefinite-length BER when streamed) into *len, malloc'd. */
static unsigned char *signed_der(int n_certs, bool streamed, size_t *len) {
  static const char content[] = "Content-Type: text/plain\r\n\r\nhello\r\n";
  STACK_OF(X509) *extra = sk_X509_new_null();
  for (int i = 1; i < n_certs; i++) sk_X509_push(extra, cert[i]);
  BIO *in = BIO_new_mem_buf(content, (int)strlen(content));
  unsigned flags = CMS_DETACHED | CMS_BINARY | (streamed ? CMS_STREAM : 0) | (n_certs == 0 ? CMS_NOCERTS : 0);
  CMS_ContentInfo *cms = CMS_sign(cert[0], key[0], extra, in, flags);
  assert_non_null(cms);
  BIO *out = BIO_new(BIO_s_mem());
  if (streamed) assert_int_equal(i2d_CMS_bio_stream(out, cms, in, (int)flags), 1);
  else assert_int_equal(i2d_CMS_bio(out, cms), 1);
  char *p;
  *len = (size_t)BIO_get_mem_data(out, &p);
  unsigned char *der = malloc(*len);
  memcpy(der, p, *len);
  BIO_free(out);
  BIO_free(in);
  CMS_ContentInfo_free(cms);
  sk_X509_free(extra);
  return der;
}

/* Both parsers on der: 1 if they agree and it parsed, 0 if they agree
 * that it does not, -1 if they disagree (no cmocka assert: threads call it). */
static int compare_with_plain(const unsigned char *der, size_t len) {
  const unsigned char *p = der;
  CMS_ContentInfo *plain = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  CMS_ContentInfo *ours = certcache_d2i_cms(der, len);
  int rc = (plain == NULL) != (ours == NULL) ? -1 : plain != NULL;
  if (rc == 1) {
    unsigned char *a = NULL, *b = NULL;
    int na = i2d_CMS_ContentInfo(plain, &a), nb = i2d_CMS_ContentInfo(ours, &b);
    if (na != nb || (na > 0 && memcmp(a, b, (size_t)na) != 0)) rc = -1;
    OPENSSL_free(a);
    OPENSSL_free(b);
  }
  CMS_ContentInfo_free(plain);
  CMS_ContentInfo_free(ours);
  return rc;
}

/* The same, asserted; true if it parsed. */
static bool same_as_plain(const unsigned char *der, size_t len) {
  int rc = compare_with_plain(der, len);
  assert_int_not_equal(rc, -1);
  return rc == 1;
}

static void stats(unsigned long *fast, unsigned long *decoded) { certcache_stats(fast, decoded); }

/* The usual message (signer and one more certificate): the fast path, the
 * same structure, and the second parse decodes nothing. */
static void test_fast_path_same_and_cached(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = signed_der(2, false, &len);
  unsigned long f0, d0, f1, d1, f2, d2;
  stats(&f0, &d0);
  assert_true(same_as_plain(der, len));
  stats(&f1, &d1);
  assert_int_equal(f1, f0 + 1);
  assert_true(same_as_plain(der, len));
  stats(&f2, &d2);
  assert_int_equal(f2, f1 + 1);
  assert_int_equal(d2, d1); /* both certificates came from the table */
  CMS_ContentInfo *cms = certcache_d2i_cms(der, len);
  STACK_OF(X509) *certs = CMS_get1_certs(cms);
  assert_int_equal(sk_X509_num(certs), 2);
  /* (in the DER's order, which sorts the SET OF: either way round) */
  bool straight = X509_cmp(sk_X509_value(certs, 0), cert[0]) == 0;
  assert_int_equal(X509_cmp(sk_X509_value(certs, straight ? 0 : 1), cert[0]), 0);
  assert_int_equal(X509_cmp(sk_X509_value(certs, straight ? 1 : 0), cert[1]), 0);
  sk_X509_pop_free(certs, X509_free);
  CMS_ContentInfo_free(cms);
  free(der);
}

/* Every single-bit change and every truncation: never a different answer
 * from OpenSSL's own parser (a changed certificate is a different key). */
static void test_every_flip_and_cut_same_as_plain(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = signed_der(2, false, &len);
  unsigned char *m = malloc(len);
  for (size_t i = 0; i < len; i++)
    for (int bit = 0; bit < 8; bit += 3) {
      memcpy(m, der, len);
      m[i] ^= (unsigned char)(1u << bit);
      same_as_plain(m, len);
    }
  for (size_t cut = 0; cut < len; cut++) same_as_plain(der, cut);
  free(m);
  free(der);
}

/* Shapes the fast path leaves alone: no certificates, more than
 * CERTCACHE_MAX_CERTS, BER with indefinite lengths, trailing bytes. */
static void test_other_shapes_take_the_plain_path(void **state) {
  (void)state;
  struct {
    int n_certs;
    bool streamed;
    size_t trailing;
  } cases[] = {{0, false, 0}, {N_CERTS, false, 0}, {2, true, 0}, {2, false, 3}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    size_t len;
    unsigned char *der = signed_der(cases[c].n_certs, cases[c].streamed, &len);
    der = realloc(der, len + cases[c].trailing);
    memset(der + len, 0, cases[c].trailing);
    unsigned long f0, d0, f1, d1;
    stats(&f0, &d0);
    assert_true(same_as_plain(der, len + cases[c].trailing));
    stats(&f1, &d1);
    assert_int_equal(f1, f0);
    free(der);
  }
}

/* More distinct certificates than the table holds: entries are replaced
 * and every answer stays right. */
static void test_table_turns_over(void **state) {
  (void)state;
  for (int round = 0; round < 2 * CERTCACHE_SLOTS / CERTCACHE_MAX_CERTS + 2; round++) {
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = self_signed(k, 1000 + round);
    BIO *in = BIO_new_mem_buf("x", 1);
    STACK_OF(X509) *extra = sk_X509_new_null();
    for (int i = 1; i < CERTCACHE_MAX_CERTS; i++) sk_X509_push(extra, cert[(round + i) % N_CERTS]);
    CMS_ContentInfo *cms = CMS_sign(x, k, extra, in, CMS_DETACHED | CMS_BINARY);
    unsigned char *der = NULL;
    int n = i2d_CMS_ContentInfo(cms, &der);
    assert_true(n > 0);
    assert_true(same_as_plain(der, (size_t)n));
    OPENSSL_free(der);
    CMS_ContentInfo_free(cms);
    sk_X509_free(extra);
    BIO_free(in);
    X509_free(x);
    EVP_PKEY_free(k);
  }
}

struct thread_arg {
  const unsigned char *der;
  size_t len;
  int bad;
};

static void *parse_many(void *arg) {
  struct thread_arg *a = arg;
  for (int i = 0; i < 300; i++)
    if (compare_with_plain(a->der, a->len) != 1) a->bad++;
  return NULL;
}

/* Crypto workers share the table. */
static void test_threads_share_the_table(void **state) {
  (void)state;
  size_t len;
  unsigned char *der = signed_der(3, false, &len);
  struct thread_arg a[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (struct thread_arg){der, len, 0};
    assert_int_equal(pthread_create(&t[i], NULL, parse_many, &a[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(a[i].bad, 0);
  }
  free(der);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fast_path_same_and_cached),
      cmocka_unit_test(test_every_flip_and_cut_same_as_plain),
      cmocka_unit_test(test_other_shapes_take_the_plain_path),
      cmocka_unit_test(test_table_turns_over),
      cmocka_unit_test(test_threads_share_the_table),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
