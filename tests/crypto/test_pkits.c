/* PKITS through crypto/verify.c (issue #5 acceptance; R5): NIST's
 * certification path validation suite as signed S/MIME messages, from
 * Debian's python3-cryptography-vectors (x509/PKITS_data: smime/NAME.eml,
 * certs/TrustAnchorRootCertificate.crt, crls/NAME.crl).
 *
 * The anchor is imported into a temp LMDB key store as a CA list, every
 * CRL is given as a CRL file (DER), revocation is hard.  Each message is
 * split here (multipart/signed with a base64 p7s part: a few lines of
 * parsing) and verified with verify_detached at a fixed time inside the
 * suite's validity (2010-2030).  The certificates carry no e-mail
 * addresses, so the From check is not counted: a message is "verified"
 * when the outcome is PASS or POLICY from-mismatch/no-from, i.e. the
 * signature verified and the chain validated.
 *
 * Names: SignedValid* must verify, SignedInvalid* must be rejected; the
 * other 22 (Signed*Policies*, SignedUserNoticeQualifier*, ...,
 * SignedMissingCRLTest1) are PKITS tests whose outcome depends on the
 * initial policy settings: they must have PKITS's outcome under the
 * default settings, which are sealgate's (RFC 5280 6.1.1: any policy, no
 * explicit policy, nothing inhibited; there is no setting to change them).
 * Two valid messages fail for OpenSSL limitations, listed in known[].
 * PKITS_ALL=1 in the environment prints every message's outcome.
 * Skipped, with a message, when the vectors are not installed. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/sgerr.h"
#include "crypto/keystore.h"
#include "crypto/verify.h"
#include "testutil.h"

#define PKITS "/usr/lib/python3/dist-packages/cryptography_vectors/x509/PKITS_data"
/* 2020-06-01T00:00:00Z: inside every PKITS validity period that is meant
 * to be valid, so the test does not expire in 2030. */
#define PKITS_NOW ((time_t)1590969600)
#define MAX_MSGS 400

struct outcome {
  char name[96];
  int rc;
  enum verify_status status;
  char reason[32];
  char detail[200];
};

static struct outcome results[MAX_MSGS];
static size_t n_results;
static bool have_vectors;

/* Messages whose PKITS expectation we do not meet, each with why.  Keep
 * this list short and explained: anything else that deviates fails. */
static const struct {
  const char *name;
  const char *why;
} known[] = {
    {"SignedValidDSAParameterInheritanceTest5",
     "DSA parameters inherited from the issuer (PKITS 4.1.5): OpenSSL cannot use such a key"},
    {"SignedValidcRLIssuerTest30",
     "an indirect CRL that also covers its own issuer's certificate (PKITS 4.14.30): OpenSSL 3.0's "
     "CRL path validation rejects it (openssl cms -verify does too)"},
    {NULL, NULL},
};

/* The messages named neither Valid nor Invalid: PKITS 4.8 and 4.12.3
 * policy tests and 4.4.1, with their outcome under the default settings
 * (initial policy set any-policy, explicit policy not required, mapping
 * and any-policy not inhibited), which are sealgate's.  Listed here: the
 * invalid ones; every other such message must verify. */
static const char *const invalid_by_default[] = {
    "SignedDifferentPoliciesTest4", "SignedDifferentPoliciesTest5", "SignedDifferentPoliciesTest7",
    "SignedDifferentPoliciesTest8", "SignedDifferentPoliciesTest9", "SignedDifferentPoliciesTest12",
    "SignedMissingCRLTest1",        NULL,
};

static const char *known_why(const char *name) {
  for (size_t i = 0; known[i].name != NULL; i++)
    if (strcmp(known[i].name, name) == 0) return known[i].why;
  return NULL;
}

/* ---- reading one message ------------------------------------------------------ */

/* The bytes before a delimiter line, without the line break that RFC 2046
 * makes part of the delimiter (CRLF, or LF in these files). */
static size_t before_delim(const char *start, const char *delim_at) {
  size_t n = (size_t)(delim_at - start);
  if (n > 0 && start[n - 1] == '\n') n--;
  if (n > 0 && start[n - 1] == '\r') n--;
  return n;
}

struct signed_msg {
  const char *content;
  size_t content_len;
  unsigned char *sig; /* malloc'd DER */
  size_t sig_len;
  char from[128];
};

static void header_from(const char *msg, char *from, size_t cap) {
  const char *f = strstr(msg, "\nFrom: ");
  assert_non_null(f);
  f += 7;
  size_t n = strcspn(f, "\r\n");
  assert_true(n < cap);
  memcpy(from, f, n);
  from[n] = '\0';
}

/* multipart/signed: the first part exactly as signed, the p7s decoded. */
static void split(const char *msg, size_t n, struct signed_msg *m) {
  header_from(msg, m->from, sizeof m->from);
  const char *b = strstr(msg, "boundary=\"");
  assert_non_null(b);
  b += 10;
  char delim[128];
  int dl = snprintf(delim, sizeof delim, "--%.*s", (int)strcspn(b, "\""), b);
  const char *first = strstr(b, delim);
  assert_non_null(first);
  first += dl;
  first += first[0] == '\r' ? 2 : 1;
  const char *second = memmem(first, n - (size_t)(first - msg), delim, (size_t)dl);
  assert_non_null(second);
  m->content = first;
  m->content_len = before_delim(first, second);
  const char *body = strstr(second, "\n\n");
  const char *body_crlf = strstr(second, "\r\n\r\n");
  if (body == NULL || (body_crlf != NULL && body_crlf < body)) body = body_crlf;
  assert_non_null(body);
  const char *end = memmem(body, n - (size_t)(body - msg), delim, (size_t)dl);
  assert_non_null(end);
  m->sig = tu_b64_decode(body, (size_t)(end - body), &m->sig_len);
}

/* ---- the run ------------------------------------------------------------------ */

static X509 *read_der_cert(const char *path) {
  size_t n;
  char *d = tu_read_path(path, &n);
  const unsigned char *p = (const unsigned char *)d;
  X509 *x = d2i_X509(NULL, &p, (long)n);
  free(d);
  assert_non_null(x);
  return x;
}

/* Key store with the anchor, CRL file names, the trust. */
static struct verify_trust *make_trust(void) {
  assert_int_equal(tu_dir_make("pkits"), 0);
  char err[256] = "";
  struct keystore *ks = NULL;
  assert_int_equal(keystore_open(tu_dir(), true, &ks, err, sizeof err), 0);
  STACK_OF(X509) *anchor = sk_X509_new_null();
  sk_X509_push(anchor, read_der_cert(PKITS "/certs/TrustAnchorRootCertificate.crt"));
  assert_int_equal(keystore_ca_import(ks, "pkits", anchor, NULL, err, sizeof err), 0);
  sk_X509_pop_free(anchor, X509_free);

  char *files[400];
  size_t nf = 0;
  DIR *d = opendir(PKITS "/crls");
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (strstr(e->d_name, ".crl") == NULL) continue;
    assert_true(nf < 400);
    assert_true(asprintf(&files[nf++], PKITS "/crls/%s", e->d_name) > 0);
  }
  closedir(d);
  struct verify_trust *t = NULL;
  int rc = verify_trust_new(ks, false, files, nf, &t, err, sizeof err);
  if (rc != 0) fprintf(stderr, "verify_trust_new: %s\n", err);
  assert_int_equal(rc, 0);
  for (size_t i = 0; i < nf; i++) free(files[i]);
  keystore_close(ks);
  printf("[ pkits    ] anchor imported as a CA list, %zu CRL files\n", nf);
  return t;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void run_one(const struct verify_trust *t, const char *name, struct outcome *o) {
  char path[512];
  snprintf(path, sizeof path, PKITS "/smime/%s", name);
  size_t n;
  char *msg = tu_read_path(path, &n);
  struct signed_msg m;
  split(msg, n, &m);
  struct verify_params p = {.trust = t, .from = m.from, .revocation_hard = true, .now = PKITS_NOW};
  struct verify_result res;
  char err[256] = "";
  snprintf(o->name, sizeof o->name, "%.*s", (int)(strlen(name) - 4), name);
  o->rc = verify_detached(m.content, m.content_len, m.sig, m.sig_len, &p, &res, err, sizeof err);
  if (o->rc == 0) {
    o->status = res.status;
    snprintf(o->reason, sizeof o->reason, "%s", res.reason);
    snprintf(o->detail, sizeof o->detail, "%s", res.detail);
    verify_result_free(&res);
  } else {
    snprintf(o->detail, sizeof o->detail, "%.190s", err);
  }
  free(m.sig);
  free(msg);
}

static int group_setup(void **state) {
  (void)state;
  have_vectors = access(PKITS "/smime/SignedValidSignaturesTest1.eml", R_OK) == 0;
  if (!have_vectors) {
    printf("[ SKIPPED  ] PKITS vectors not installed (%s): apt-get install python3-cryptography-vectors\n", PKITS);
    return 0;
  }
  struct verify_trust *t = make_trust();
  char *names[MAX_MSGS];
  size_t nn = 0;
  DIR *d = opendir(PKITS "/smime");
  for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
    if (strstr(e->d_name, ".eml") != NULL && nn < MAX_MSGS) names[nn++] = strdup(e->d_name);
  if (d != NULL) closedir(d);
  qsort(names, nn, sizeof names[0], by_name);
  for (size_t i = 0; i < nn; i++) {
    run_one(t, names[i], &results[n_results++]);
    free(names[i]);
  }
  verify_trust_free(t);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  return tu_dir_remove();
}

/* ---- judging the outcomes ------------------------------------------------------ */

static bool starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* What PKITS expects: true for a path valid under the default settings. */
static bool expect_valid(const char *name) {
  if (starts(name, "SignedValid")) return true;
  if (starts(name, "SignedInvalid")) return false;
  for (size_t i = 0; invalid_by_default[i] != NULL; i++)
    if (strcmp(invalid_by_default[i], name) == 0) return false;
  return true;
}

/* Signature verified and chain valid; the From check does not count. */
static bool verified(const struct outcome *o) {
  return o->rc == 0 && (o->status == VERIFY_PASS ||
                        (o->status == VERIFY_POLICY && (strcmp(o->reason, "from-mismatch") == 0 ||
                                                        strcmp(o->reason, "no-from") == 0)));
}

static void print_outcome(const char *tag, const struct outcome *o) {
  printf("  %-8s %-50s rc=%d status=%d %s: %s\n", tag, o->name, o->rc, (int)o->status, o->reason, o->detail);
}

/* Counts as the issue asks for them, and every deviation by name. */
static void test_every_message_has_a_result(void **state) {
  (void)state;
  if (!have_vectors) skip();
  size_t n[3][2] = {{0}}; /* [Valid, Invalid, other][total, as expected] */
  for (size_t i = 0; i < n_results; i++) {
    const struct outcome *o = &results[i];
    if (o->rc != 0) print_outcome("ERROR", o);
    assert_int_equal(o->rc, 0);
    size_t k = starts(o->name, "SignedValid") ? 0 : starts(o->name, "SignedInvalid") ? 1 : 2;
    bool as_expected = verified(o) == expect_valid(o->name);
    n[k][0]++;
    n[k][1] += as_expected;
    if (getenv("PKITS_ALL")) print_outcome("ALL", o);
    if (!as_expected) print_outcome(known_why(o->name) ? "KNOWN" : "MISMATCH", o);
  }
  printf("[ pkits    ] %zu messages: Valid verified %zu/%zu, Invalid rejected %zu/%zu, "
         "policy-settings tests as expected under the defaults %zu/%zu\n",
         n_results, n[0][1], n[0][0], n[1][1], n[1][0], n[2][1], n[2][0]);
  for (size_t i = 0; known[i].name != NULL; i++) printf("  known: %s: %s\n", known[i].name, known[i].why);
  assert_int_equal(n_results, 224);
}

/* Each message PKITS calls valid (valid) or invalid has that outcome,
 * but for a valid one with a known OpenSSL limitation, which is not
 * counted; every deviation is printed with tag.  At least min_checked
 * messages were looked at. */
static void assert_as_expected(bool valid, const char *tag, size_t min_checked) {
  size_t bad = 0, checked = 0;
  for (size_t i = 0; i < n_results; i++) {
    const struct outcome *o = &results[i];
    if (expect_valid(o->name) != valid || (valid && known_why(o->name) != NULL)) continue;
    checked++;
    if (verified(o) == valid) continue;
    print_outcome(tag, o);
    bad++;
  }
  assert_true(checked >= min_checked);
  assert_int_equal(bad, 0);
}

/* Each message PKITS calls valid (by name or under the default settings)
 * verifies, but for the known OpenSSL limitations. */
static void test_valid_paths_verify(void **state) {
  (void)state;
  if (!have_vectors) skip();
  assert_as_expected(true, "FAILED", 100);
}

/* Each invalid one is rejected: signatures, validity, CRLs, basic
 * constraints, key usage, name chaining, name constraints, policies. */
static void test_invalid_paths_rejected(void **state) {
  (void)state;
  if (!have_vectors) skip();
  assert_as_expected(false, "ACCEPTED", 120);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_message_has_a_result),
      cmocka_unit_test(test_valid_paths_verify),
      cmocka_unit_test(test_invalid_paths_rejected),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
