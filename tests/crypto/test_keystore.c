/* Unit tests for crypto/keystore.c and keystore_harvest.c (R13, R15-R22):
 * add, get, delete and their index entries (checked in LMDB itself), the
 * lookup rules (e-mail case, domain, wildcard, validity, key usage, latest
 * notBefore), export/import round trip and all-or-nothing import, a
 * 10,000-key import against the time limit, concurrent readers beside a
 * writer, CA lists with CRLs; harvested keys: the put outcomes (added,
 * same, replaced, held, the 48-hour alert), lookups beside managed keys,
 * caps, LRU eviction, promote, the generation counter and corrupt
 * records.  Certificates are made here with OpenSSL; one EC issuer key
 * signs them all (the store never checks signatures: explicit trust). */
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/sgerr.h"
#include "crypto/keystore.h"
#include "testutil.h"

#define DAY 86400L

static EVP_PKEY *rsa_key, *ec_key, *issuer_key;

struct fx {
  char dir[300];
  struct keystore *ks;
};

/* ------------------------------------------------------------------------ */
/* Certificates                                                             */

struct spec {
  EVP_PKEY *key;   /* default rsa_key */
  const char *cn;  /* default "test" */
  const char *san; /* "email:a@b,DNS:c" or NULL */
  const char *ku;  /* keyUsage value or NULL (none) */
  long from, to;   /* validity, seconds from now (default -1 day .. +30 days) */
  bool ca;         /* basicConstraints CA:TRUE */
  long serial;
};

static void add_ext(X509 *x, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  assert_non_null(e);
  assert_int_equal(X509_add_ext(x, e, -1), 1);
  X509_EXTENSION_free(e);
}

static X509 *make(struct spec s) {
  X509 *x = X509_new();
  assert_non_null(x);
  time_t now = time(NULL);
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), s.serial ? s.serial : 1);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                             (const unsigned char *)(s.cn ? s.cn : "test"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(X509_get_issuer_name(x), "CN", MBSTRING_UTF8,
                             (const unsigned char *)"Test Issuer", -1, -1, 0);
  X509_time_adj_ex(X509_getm_notBefore(x), 0, s.from || s.to ? s.from : -DAY, &now);
  X509_time_adj_ex(X509_getm_notAfter(x), 0, s.from || s.to ? s.to : 30 * DAY, &now);
  X509_set_pubkey(x, s.key ? s.key : rsa_key);
  if (s.san) add_ext(x, NID_subject_alt_name, s.san);
  if (s.ku) add_ext(x, NID_key_usage, s.ku);
  if (s.ca) add_ext(x, NID_basic_constraints, "critical,CA:TRUE");
  assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
  return x;
}

#define RSA_ENC "digitalSignature,nonRepudiation,keyEncipherment"
#define EC_ENC "digitalSignature,nonRepudiation,keyAgreement"

static X509 *enc_cert(const char *san) { return make((struct spec){.san = san, .ku = RSA_ENC}); }

static bool same_cert(X509 *a, X509 *b) { return a && b && X509_cmp(a, b) == 0; }

/* ------------------------------------------------------------------------ */
/* Fixture: a fresh store per test                                          */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

static void rm_rf(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int fx_setup(void **state) {
  static int n;
  struct fx *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "%s/ks%d", tu_dir(), ++n);
  char err[256] = "";
  int rc = keystore_open(f->dir, true, &f->ks, err, sizeof err);
  if (rc) fail_msg("keystore_open: %s", err);
  *state = f;
  return 0;
}

static int fx_teardown(void **state) {
  struct fx *f = *state;
  keystore_close(f->ks);
  rm_rf(f->dir);
  free(f);
  return 0;
}

static void add_ok(struct keystore *ks, const char *name, X509 *x) {
  char err[256] = "";
  int rc = keystore_pubkey_add(ks, name, x, err, sizeof err);
  if (rc) fail_msg("add %s: %s", name, err);
}

/* Lookup at now; NULL when not found (and then rc must say so). */
static X509 *look(struct keystore *ks, const char *addr) {
  X509 *x = NULL;
  int rc = keystore_lookup(ks, addr, time(NULL), &x, NULL);
  if (rc == SG_ENOTFOUND) assert_null(x);
  else if (rc) fail_msg("lookup %s: %s", addr, sgerr_str(rc));
  return x;
}

static void expect_found(struct keystore *ks, const char *addr, X509 *want) {
  X509 *x = look(ks, addr);
  if (!same_cert(x, want)) fail_msg("%s: expected the certificate, got %s", addr, x ? "another" : "none");
  X509_free(x);
}

static void expect_none(struct keystore *ks, const char *addr) {
  X509 *x = look(ks, addr);
  if (x) fail_msg("%s: expected no certificate", addr);
}

/* Names in the store, joined by ',' (name order). */
static int collect(void *arg, const char *name, X509 *cert, time_t added) {
  (void)cert, (void)added;
  char *s = arg;
  strcat(s, s[0] ? "," : "");
  strcat(s, name);
  return 0;
}

/* How many entries LMDB holds under key in index db (read directly: the
 * indexes must be cleaned, not merely skipped). */
static size_t index_count(const char *dir, const char *db, const char *key) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *cur;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
  assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
  MDB_val k = {strlen(key), (void *)key}, v;
  size_t n = 0;
  if (mdb_cursor_get(cur, &k, &v, MDB_SET_KEY) == 0) mdb_cursor_count(cur, &n);
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return n;
}

/* ------------------------------------------------------------------------ */
/* Add, get, delete                                                         */

static void test_add_get_delete(void **state) {
  struct fx *f = *state;
  X509 *a = enc_cert("email:alice@example.com"), *got = NULL;
  add_ok(f->ks, "alice", a);
  time_t added = 0;
  assert_int_equal(keystore_pubkey_get(f->ks, "alice", &got, &added), 0);
  assert_true(same_cert(a, got));
  assert_true(labs((long)(added - time(NULL))) < 60);
  X509_free(got);
  char err[256] = "";
  assert_int_equal(keystore_pubkey_add(f->ks, "alice", a, err, sizeof err), SG_EEXIST);
  assert_non_null(strstr(err, "alice"));
  assert_int_equal(keystore_pubkey_delete(f->ks, "alice"), 0);
  assert_int_equal(keystore_pubkey_get(f->ks, "alice", &got, NULL), SG_ENOTFOUND);
  assert_null(got);
  assert_int_equal(keystore_pubkey_delete(f->ks, "alice"), SG_ENOTFOUND);
  X509_free(a);
}

static void test_names_and_refusals(void **state) {
  struct fx *f = *state;
  static const char *bad[] = {"", "-x", ".x", "a b", "a/b", "a\xc3\xa9", "x:y"};
  char err[256], long_name[KEYSTORE_NAME_MAX + 2];
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (keystore_name_check(bad[i], err, sizeof err) != SG_EINVAL) fail_msg("'%s' accepted", bad[i]);
  memset(long_name, 'a', sizeof long_name - 1);
  long_name[KEYSTORE_NAME_MAX + 1] = '\0';
  assert_int_equal(keystore_name_check(long_name, err, sizeof err), SG_EINVAL);
  long_name[KEYSTORE_NAME_MAX] = '\0';
  assert_int_equal(keystore_name_check(long_name, err, sizeof err), 0);
  assert_int_equal(keystore_name_check("Bob.Smith+tag@x-y_z", err, sizeof err), 0);
  X509 *x = make((struct spec){.ku = RSA_ENC}); /* nothing to find it by */
  assert_int_equal(keystore_pubkey_add(f->ks, "anon", x, err, sizeof err), SG_EINVAL);
  print_message("refused: %s\n", err);
  X509_free(x);
}

static void test_delete_cleans_index(void **state) {
  struct fx *f = *state;
  X509 *x = enc_cert("email:Carol@Example.com,DNS:carol.example");
  add_ok(f->ks, "carol", x);
  assert_int_equal(index_count(f->dir, "by_email", "carol@example.com"), 1);
  assert_int_equal(index_count(f->dir, "by_domain", "carol.example"), 1);
  assert_int_equal(keystore_pubkey_delete(f->ks, "carol"), 0);
  assert_int_equal(index_count(f->dir, "by_email", "carol@example.com"), 0);
  assert_int_equal(index_count(f->dir, "by_domain", "carol.example"), 0);
  expect_none(f->ks, "Carol@Example.com");
  expect_none(f->ks, "x@carol.example");
  X509_free(x);
}

/* ------------------------------------------------------------------------ */
/* Lookup rules                                                             */

static void test_lookup_email_case(void **state) {
  struct fx *f = *state;
  X509 *a = enc_cert("email:alice@example.com"), *b = enc_cert("email:Bob@example.com");
  add_ok(f->ks, "alice", a);
  add_ok(f->ks, "bob", b);
  expect_found(f->ks, "alice@example.com", a);
  expect_found(f->ks, "alice@EXAMPLE.Com", a); /* domain: any case */
  expect_found(f->ks, "Alice@example.com", a); /* lower-case form of the local part */
  expect_found(f->ks, "Bob@example.com", b);   /* exact local part */
  expect_found(f->ks, "Bob@Example.COM", b);
  expect_none(f->ks, "bob@example.com");       /* local part is case-sensitive */
  expect_none(f->ks, "BOB@example.com");
  expect_none(f->ks, "alice@example.org");
  X509 *x = NULL;
  assert_int_equal(keystore_lookup(f->ks, "no-at-sign", time(NULL), &x, NULL), SG_EINVAL);
  X509_free(a);
  X509_free(b);
}

static void test_lookup_domain_and_wildcard(void **state) {
  struct fx *f = *state;
  X509 *d = enc_cert("DNS:partner.example"), *w = enc_cert("DNS:*.example.com");
  add_ok(f->ks, "partner", d);
  add_ok(f->ks, "wild", w);
  expect_found(f->ks, "anyone@partner.example", d);
  expect_found(f->ks, "anyone@PARTNER.Example", d);
  expect_none(f->ks, "anyone@sub.partner.example"); /* no wildcard there */
  expect_found(f->ks, "x@a.example.com", w);
  expect_none(f->ks, "x@a.b.example.com"); /* one label only */
  expect_none(f->ks, "x@example.com");     /* the wildcard needs a label */
  /* An e-mail certificate wins over the domain's. */
  X509 *e = enc_cert("email:ceo@partner.example");
  add_ok(f->ks, "ceo", e);
  expect_found(f->ks, "ceo@partner.example", e);
  expect_found(f->ks, "other@partner.example", d);
  X509_free(d);
  X509_free(w);
  X509_free(e);
}

static void test_lookup_filters(void **state) {
  struct fx *f = *state;
  struct {
    const char *name;
    struct spec s;
    bool usable;
  } t[] = {
      {"expired", {.san = "email:expired@t.example", .ku = RSA_ENC, .from = -30 * DAY, .to = -DAY}, false},
      {"future", {.san = "email:future@t.example", .ku = RSA_ENC, .from = DAY, .to = 30 * DAY}, false},
      {"signonly", {.san = "email:signonly@t.example", .ku = "digitalSignature,nonRepudiation"}, false},
      {"noku", {.san = "email:noku@t.example"}, false}, /* R13: key usage must be present */
      {"ec-ka", {.key = NULL, .san = "email:ec-ka@t.example", .ku = EC_ENC}, true},
      {"ec-ke", {.key = NULL, .san = "email:ec-ke@t.example", .ku = RSA_ENC}, false},
      {"rsa-ke", {.san = "email:rsa-ke@t.example", .ku = RSA_ENC}, true},
  };
  t[4].s.key = t[5].s.key = ec_key;
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    X509 *x = make(t[i].s);
    add_ok(f->ks, t[i].name, x); /* added all the same: lookups filter */
    char addr[64];
    snprintf(addr, sizeof addr, "%s@t.example", t[i].name);
    if (t[i].usable) expect_found(f->ks, addr, x);
    else expect_none(f->ks, addr);
    X509_free(x);
  }
}

static void test_latest_not_before_wins(void **state) {
  struct fx *f = *state;
  X509 *newer = make((struct spec){.san = "email:d@x.example", .ku = RSA_ENC, .from = -DAY, .to = 9 * DAY});
  X509 *older = make((struct spec){.san = "email:d@x.example", .ku = RSA_ENC, .from = -9 * DAY, .to = 99 * DAY});
  X509 *expired = make((struct spec){.san = "email:d@x.example", .ku = RSA_ENC, .from = -2, .to = -1});
  add_ok(f->ks, "d-new", newer); /* added first: order must not matter */
  add_ok(f->ks, "d-old", older);
  add_ok(f->ks, "d-expired", expired);
  expect_found(f->ks, "d@x.example", newer);
  assert_int_equal(keystore_pubkey_delete(f->ks, "d-new"), 0);
  expect_found(f->ks, "d@x.example", older);
  X509_free(newer);
  X509_free(older);
  X509_free(expired);
}

/* ------------------------------------------------------------------------ */
/* Export and import                                                        */

static char *file_path(const char *name) {
  static char buf[2][400];
  static int i;
  char *p = buf[i++ % 2];
  snprintf(p, sizeof buf[0], "%s/%s", tu_dir(), name);
  return p;
}

static int import_file(struct keystore *ks, const char *path, size_t *n, char *err, size_t errlen) {
  FILE *in = fopen(path, "r");
  assert_non_null(in);
  int rc = keystore_pubkey_import(ks, in, path, NULL, NULL, n, err, errlen);
  fclose(in);
  return rc;
}

static void test_export_import_round_trip(void **state) {
  struct fx *f = *state;
  X509 *c[3] = {enc_cert("email:a@r.example"), make((struct spec){.key = ec_key, .san = "DNS:r.example", .ku = EC_ENC}),
                enc_cert("DNS:*.r.example")};
  const char *names[3] = {"a@r.example", "domain", "wild-card"};
  for (int i = 0; i < 3; i++) add_ok(f->ks, names[i], c[i]);
  const char *path = file_path("export.pem");
  FILE *out = fopen(path, "w");
  size_t n = 0;
  assert_int_equal(keystore_pubkey_export(f->ks, out, &n), 0);
  fclose(out);
  assert_int_equal(n, 3);
  struct fx g;
  snprintf(g.dir, sizeof g.dir, "%s/fresh", tu_dir());
  char err[256] = "", list[256] = "";
  assert_int_equal(keystore_open(g.dir, true, &g.ks, err, sizeof err), 0);
  if (import_file(g.ks, path, &n, err, sizeof err)) fail_msg("import: %s", err);
  assert_int_equal(n, 3);
  assert_int_equal(keystore_pubkey_each(g.ks, collect, list), 0);
  assert_string_equal(list, "a@r.example,domain,wild-card");
  for (int i = 0; i < 3; i++) {
    X509 *x = NULL;
    assert_int_equal(keystore_pubkey_get(g.ks, names[i], &x, NULL), 0);
    assert_true(same_cert(x, c[i]));
    X509_free(x);
  }
  expect_found(g.ks, "who@x.r.example", c[2]); /* the indexes came along */
  expect_found(g.ks, "a@r.example", c[0]);
  for (int i = 0; i < 3; i++) X509_free(c[i]);
  keystore_close(g.ks);
  rm_rf(g.dir);
}

static void write_text(const char *path, const char *text) {
  FILE *out = fopen(path, "w");
  assert_non_null(out);
  fputs(text, out);
  fclose(out);
}

static char *pem_of(X509 *x) {
  BIO *b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char *data;
  long len = BIO_get_mem_data(b, &data);
  char *s = strndup(data, (size_t)len);
  BIO_free(b);
  X509_free(x);
  return s;
}

/* A bad block anywhere leaves the store exactly as it was. */
static void test_import_bad_block_changes_nothing(void **state) {
  struct fx *f = *state;
  X509 *keep = enc_cert("email:keep@b.example");
  add_ok(f->ks, "keep", keep);
  char *good = pem_of(enc_cert("email:new@b.example")), *repl = pem_of(enc_cert("email:keep2@b.example"));
  static const char *bad[] = {
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
      "-----BEGIN CERTIFICATE-----\nMIIB\n", /* no END line */
      "# sealgate-pubkey: bad name\n",
  };
  const char *path = file_path("bad.pem");
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    size_t len = strlen(good) + strlen(repl) + strlen(bad[i]) + 100;
    char *text = malloc(len);
    snprintf(text, len, "# sealgate-pubkey: new\n%s# sealgate-pubkey: keep\n%s%s", good, repl, bad[i]);
    write_text(path, text);
    free(text);
    char err[512] = "", list[256] = "";
    size_t n = 99;
    assert_true(import_file(f->ks, path, &n, err, sizeof err) < 0);
    print_message("refused: %s\n", err);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "block 3"));
    assert_int_equal(keystore_pubkey_each(f->ks, collect, list), 0);
    assert_string_equal(list, "keep");
    expect_found(f->ks, "keep@b.example", keep); /* not replaced */
  }
  write_text(path, "just text\n");
  char err[512] = "";
  size_t n;
  assert_int_equal(import_file(f->ks, path, &n, err, sizeof err), SG_EINVAL);
  assert_non_null(strstr(err, "no PEM certificate"));
  free(good);
  free(repl);
  X509_free(keep);
}

/* Two addresses whose automatic names collide ('/' becomes '-') keep both
 * keys: an import must not make one of them keyless. */
static void test_import_auto_names_never_collide(void **state) {
  struct fx *f = *state;
  X509 *first = enc_cert("email:a-b@x.example"), *second = enc_cert("email:a/b@x.example");
  X509_up_ref(first); /* pem_of consumes its certificate */
  X509_up_ref(second);
  char *a = pem_of(first), *b = pem_of(second), text[8192];
  snprintf(text, sizeof text, "%s%s", a, b);
  const char *path = file_path("collide.pem");
  write_text(path, text);
  char err[512] = "";
  size_t n;
  if (import_file(f->ks, path, &n, err, sizeof err)) fail_msg("import: %s", err);
  assert_int_equal(n, 2);
  expect_found(f->ks, "a-b@x.example", first);
  expect_found(f->ks, "a/b@x.example", second);
  free(a);
  free(b);
  X509_free(first);
  X509_free(second);
}

/* Plain concatenated PEM: names from the first e-mail, else the CN, else
 * key-N; a name already in the store is replaced, index entries too. */
static void test_import_plain_pem_names(void **state) {
  struct fx *f = *state;
  X509 *old = enc_cert("email:first@p.example");
  add_ok(f->ks, "first@p.example", old);
  char *a = pem_of(enc_cert("email:first@p.example,email:second@p.example"));
  char *b = pem_of(make((struct spec){.cn = "Gateway Of P", .san = "DNS:p.example", .ku = RSA_ENC}));
  char *c = pem_of(make((struct spec){.cn = "-", .san = "DNS:q.example", .ku = RSA_ENC}));
  char text[8192];
  snprintf(text, sizeof text, "subject=whatever\n%s%s\n%s", a, b, c);
  const char *path = file_path("plain.pem");
  write_text(path, text);
  char err[512] = "", list[256] = "";
  size_t n;
  if (import_file(f->ks, path, &n, err, sizeof err)) fail_msg("import: %s", err);
  assert_int_equal(n, 3);
  assert_int_equal(keystore_pubkey_each(f->ks, collect, list), 0);
  assert_string_equal(list, "Gateway-Of-P,first@p.example,key-3");
  X509 *x = look(f->ks, "second@p.example");
  assert_non_null(x);
  expect_found(f->ks, "first@p.example", x);
  assert_false(same_cert(x, old));
  X509_free(x);
  X509_free(old);
  free(a);
  free(b);
  free(c);
}

static void count_progress(void *arg, size_t done) {
  size_t *calls = arg;
  assert_int_equal(done, (*calls + 1) * 500);
  ++*calls;
}

/* R16: large imports must not time out the admin interface. */
static void test_import_10000(void **state) {
  struct fx *f = *state;
  const char *path = file_path("bulk.pem");
  FILE *out = fopen(path, "w");
  char san[64];
  for (int i = 0; i < 10000; i++) {
    snprintf(san, sizeof san, "email:user%05d@bulk.example", i);
    X509 *x = make((struct spec){.key = ec_key, .san = san, .ku = EC_ENC, .serial = i + 1});
    assert_true(PEM_write_X509(out, x));
    X509_free(x);
  }
  fclose(out);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  FILE *in = fopen(path, "r");
  size_t n = 0, calls = 0;
  char err[256] = "";
  int rc = keystore_pubkey_import(f->ks, in, path, count_progress, &calls, &n, err, sizeof err);
  fclose(in);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (rc) fail_msg("import: %s", err);
  print_message("imported %zu keys in %.2f s\n", n, s);
  assert_int_equal(n, 10000);
  assert_int_equal(calls, 20);
  assert_true(s < 60.0);
  X509 *x = look(f->ks, "user09999@bulk.example");
  assert_non_null(x);
  X509_free(x);
  x = look(f->ks, "user00000@bulk.example");
  assert_non_null(x);
  X509_free(x);
  unlink(path);
}

/* ------------------------------------------------------------------------ */
/* Concurrency: readers never block, and see whole transactions            */

struct conc {
  struct keystore *ks;
  X509 *stable;
  volatile int stop;
  int errors;
  long lookups;
};

static void *reader(void *arg) {
  struct conc *c = arg;
  long n = 0;
  while (!c->stop) {
    X509 *x = NULL;
    if (keystore_lookup(c->ks, "stable@c.example", time(NULL), &x, NULL) != 0 || !same_cert(x, c->stable))
      __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
    X509_free(x);
    x = NULL;
    int rc = keystore_lookup(c->ks, "churn@c.example", time(NULL), &x, NULL);
    if (rc != 0 && rc != SG_ENOTFOUND) __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
    X509_free(x);
    n++;
  }
  __atomic_add_fetch(&c->lookups, n, __ATOMIC_RELAXED);
  return NULL;
}

static void *writer(void *arg) {
  struct conc *c = arg;
  X509 *x = enc_cert("email:churn@c.example");
  char err[256];
  for (int i = 0; i < 200; i++) {
    if (keystore_pubkey_add(c->ks, "churn", x, err, sizeof err) != 0 ||
        keystore_pubkey_delete(c->ks, "churn") != 0)
      __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
  }
  X509_free(x);
  c->stop = 1;
  return NULL;
}

static void test_concurrent_readers_and_writer(void **state) {
  struct fx *f = *state;
  struct conc c = {.ks = f->ks, .stable = enc_cert("email:stable@c.example")};
  add_ok(f->ks, "stable", c.stable);
  pthread_t t[3];
  pthread_create(&t[0], NULL, reader, &c);
  pthread_create(&t[1], NULL, reader, &c);
  pthread_create(&t[2], NULL, writer, &c);
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  print_message("%ld lookups beside 400 commits\n", c.lookups);
  assert_int_equal(c.errors, 0);
  assert_true(c.lookups > 0);
  expect_none(f->ks, "churn@c.example");
  X509_free(c.stable);
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                  */

/* The daemon opens read-only, possibly before sealctl ever wrote. */
static void test_open_read_only(void **state) {
  (void)state;
  char dir[400], err[256] = "";
  struct keystore *ks, *again;
  snprintf(dir, sizeof dir, "%s/missing/keys", tu_dir());
  assert_int_equal(keystore_open(dir, false, &ks, err, sizeof err), 0);
  expect_none(ks, "a@b.example");
  char list[64] = "";
  assert_int_equal(keystore_pubkey_each(ks, collect, list), 0);
  X509 *x = enc_cert("email:a@b.example");
  assert_int_equal(keystore_pubkey_add(ks, "a", x, err, sizeof err), SG_EPERM);
  keystore_close(ks);
  snprintf(dir, sizeof dir, "%s/ro", tu_dir());
  assert_int_equal(mkdir(dir, 0700), 0);
  assert_int_equal(keystore_open(dir, false, &ks, err, sizeof err), 0); /* creates the empty env */
  assert_int_equal(keystore_open(dir, true, &again, err, sizeof err), SG_EBUSY);
  print_message("refused: %s\n", err);
  keystore_close(ks);
  assert_int_equal(keystore_open(dir, true, &ks, err, sizeof err), 0);
  add_ok(ks, "a", x);
  keystore_close(ks);
  assert_int_equal(keystore_open(dir, false, &ks, err, sizeof err), 0);
  expect_found(ks, "a@b.example", x);
  keystore_close(ks);
  X509_free(x);
  rm_rf(dir);
}

/* ------------------------------------------------------------------------ */
/* CA lists                                                                 */

static int ca_collect(void *arg, const char *name, STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls) {
  (void)crls;
  STACK_OF(X509) **out = arg;
  assert_string_equal(name, "partners");
  *out = X509_chain_up_ref(certs);
  return 0;
}

static X509_CRL *make_crl(X509 *issuer, EVP_PKEY *signer, long revoked_serial) {
  X509_CRL *c = X509_CRL_new();
  assert_non_null(c);
  X509_CRL_set_version(c, 1);
  X509_CRL_set_issuer_name(c, X509_get_subject_name(issuer));
  ASN1_TIME *t = ASN1_TIME_adj(NULL, time(NULL), 0, 0), *next = ASN1_TIME_adj(NULL, time(NULL), 30, 0);
  X509_CRL_set1_lastUpdate(c, t);
  X509_CRL_set1_nextUpdate(c, next);
  X509_REVOKED *r = X509_REVOKED_new();
  ASN1_INTEGER *serial = ASN1_INTEGER_new();
  ASN1_INTEGER_set(serial, revoked_serial);
  X509_REVOKED_set_serialNumber(r, serial);
  X509_REVOKED_set_revocationDate(r, t);
  X509_CRL_add0_revoked(c, r);
  X509_CRL_sort(c);
  assert_true(X509_CRL_sign(c, signer, EVP_sha256()) > 0);
  ASN1_INTEGER_free(serial);
  ASN1_TIME_free(t);
  ASN1_TIME_free(next);
  return c;
}

struct crl_seen {
  int lists, certs, crls;
  STACK_OF(X509_CRL) *want;
};

static int crl_collect(void *arg, const char *name, STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls) {
  struct crl_seen *s = arg;
  assert_string_equal(name, "with-crls");
  s->lists++;
  s->certs = sk_X509_num(certs);
  s->crls = sk_X509_CRL_num(crls);
  for (int i = 0; i < s->crls && i < sk_X509_CRL_num(s->want); i++)
    assert_int_equal(X509_CRL_cmp(sk_X509_CRL_value(crls, i), sk_X509_CRL_value(s->want, i)), 0);
  return 0;
}

/* CRLs are kept with their list; one from a CA outside the list, or not
 * signed by the CA it names, is refused with the reason. */
static void test_ca_list_crls(void **state) {
  struct fx *f = *state;
  X509 *root = make((struct spec){.cn = "Root One", .ca = true}), *other = make((struct spec){.cn = "Root Two", .ca = true});
  STACK_OF(X509) *certs = sk_X509_new_null();
  STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
  sk_X509_push(certs, root);
  sk_X509_CRL_push(crls, make_crl(root, rsa_key, 42));
  sk_X509_CRL_push(crls, make_crl(root, rsa_key, 43));
  char err[512] = "";
  if (keystore_ca_import(f->ks, "with-crls", certs, crls, err, sizeof err)) fail_msg("import: %s", err);
  struct crl_seen seen = {.want = crls};
  assert_int_equal(keystore_ca_each(f->ks, crl_collect, &seen), 0);
  assert_int_equal(seen.lists, 1);
  assert_int_equal(seen.certs, 1);
  assert_int_equal(seen.crls, 2);
  STACK_OF(X509_CRL) *bad = sk_X509_CRL_new_null();
  sk_X509_CRL_push(bad, make_crl(other, rsa_key, 1)); /* issuer not in the list */
  assert_int_equal(keystore_ca_import(f->ks, "foreign", certs, bad, err, sizeof err), SG_EINVAL);
  print_message("refused: %s\n", err);
  assert_non_null(strstr(err, "Root Two"));
  assert_non_null(strstr(err, "no certificate of the list"));
  sk_X509_CRL_pop_free(bad, X509_CRL_free);
  bad = sk_X509_CRL_new_null();
  sk_X509_CRL_push(bad, make_crl(root, ec_key, 1)); /* names Root One, another key signed it */
  assert_int_equal(keystore_ca_import(f->ks, "forged", certs, bad, err, sizeof err), SG_EINVAL);
  print_message("refused: %s\n", err);
  assert_non_null(strstr(err, "does not verify"));
  seen = (struct crl_seen){.want = crls};
  assert_int_equal(keystore_ca_each(f->ks, crl_collect, &seen), 0);
  assert_int_equal(seen.lists, 1); /* the refused lists were not stored */
  sk_X509_CRL_pop_free(bad, X509_CRL_free);
  sk_X509_CRL_pop_free(crls, X509_CRL_free);
  sk_X509_pop_free(certs, X509_free);
  X509_free(other);
}

static void test_ca_lists(void **state) {
  struct fx *f = *state;
  STACK_OF(X509) *sk = sk_X509_new_null(), *got = NULL;
  char err[512] = "";
  assert_int_equal(keystore_ca_import(f->ks, "empty", sk, NULL, err, sizeof err), SG_EINVAL);
  sk_X509_push(sk, make((struct spec){.cn = "Root One", .ca = true, .ku = "keyCertSign,cRLSign"}));
  sk_X509_push(sk, enc_cert("email:leaf@ca.example"));
  assert_int_equal(keystore_ca_import(f->ks, "partners", sk, NULL, err, sizeof err), SG_EINVAL);
  print_message("refused: %s\n", err);
  assert_non_null(strstr(err, "certificate 2"));
  assert_non_null(strstr(err, "CN=test"));
  X509_free(sk_X509_pop(sk));
  sk_X509_push(sk, make((struct spec){.cn = "Root Two", .ca = true}));
  assert_int_equal(keystore_ca_import(f->ks, "partners", sk, NULL, err, sizeof err), 0);
  assert_int_equal(keystore_ca_import(f->ks, "partners", sk, NULL, err, sizeof err), SG_EEXIST);
  assert_int_equal(keystore_ca_each(f->ks, ca_collect, &got), 0);
  assert_non_null(got);
  assert_int_equal(sk_X509_num(got), 2);
  for (int i = 0; i < 2; i++) assert_true(same_cert(sk_X509_value(got, i), sk_X509_value(sk, i)));
  sk_X509_pop_free(got, X509_free);
  assert_int_equal(keystore_ca_delete(f->ks, "partners"), 0);
  assert_int_equal(keystore_ca_delete(f->ks, "partners"), SG_ENOTFOUND);
  got = NULL;
  assert_int_equal(keystore_ca_each(f->ks, ca_collect, &got), 0);
  assert_null(got);
  sk_X509_pop_free(sk, X509_free);
}

/* ------------------------------------------------------------------------ */
/* Harvested keys (R17-R21)                                                 */

#define HOUR 3600L

static const char *outcome_name(enum keystore_harvest_outcome o) {
  static const char *names[] = {"added", "same", "replaced", "held", "alert"};
  return (unsigned)o < 5 ? names[o] : "?";
}

/* keystore_harvest_put that must succeed; its outcome. */
static enum keystore_harvest_outcome hput(struct keystore *ks, const char *key, X509 *x, unsigned caps, time_t now,
                                          bool updated_keys) {
  struct keystore_harvest_opts o = {updated_keys, 0, false};
  enum keystore_harvest_outcome out = (enum keystore_harvest_outcome)-1;
  char err[512] = "";
  int rc = keystore_harvest_put(ks, key, x, caps, now, &o, &out, NULL, err, sizeof err);
  if (rc) fail_msg("harvest put %s: %s", key, err);
  return out;
}

static void expect_outcome(enum keystore_harvest_outcome got, enum keystore_harvest_outcome want) {
  if (got != want) fail_msg("outcome %s, expected %s", outcome_name(got), outcome_name(want));
}

/* A harvestable certificate for san valid from `from` days to +30 days. */
static X509 *hcert(const char *san, long from_days, long serial) {
  return make((struct spec){.san = san, .ku = RSA_ENC, .from = from_days * DAY, .to = 30 * DAY, .serial = serial});
}

/* "key:active" / "key:held" for every record, joined by ','. */
static int hcollect(void *arg, const struct keystore_harvested *h) {
  char *s = arg;
  strcat(s, s[0] ? "," : "");
  strcat(s, h->key);
  strcat(s, h->held ? ":held" : ":active");
  return 0;
}

struct hrecs {
  X509 *active, *held; /* up-referenced copies */
  unsigned caps;
  time_t last_used;
};

static int hget_one(void *arg, const struct keystore_harvested *h) {
  struct hrecs *r = arg;
  X509_up_ref(h->cert);
  if (h->held) {
    r->held = h->cert;
  } else {
    r->active = h->cert;
    r->caps = h->caps;
    r->last_used = h->last_used;
  }
  return 0;
}

static struct hrecs hget(struct keystore *ks, const char *key) {
  struct hrecs r = {0};
  int rc = keystore_harvest_get(ks, key, hget_one, &r);
  if (rc && rc != SG_ENOTFOUND) fail_msg("harvest get %s: %s", key, sgerr_str(rc));
  return r;
}

static void hrecs_free(struct hrecs *r) {
  X509_free(r->active);
  X509_free(r->held);
}

static unsigned long generation(struct keystore *ks) {
  unsigned long g = 99;
  assert_int_equal(keystore_generation(ks, &g), 0);
  return g;
}

static void test_harvest_added_then_same(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *a = hcert("email:alice@h.example", -1, 1);
  expect_outcome(hput(f->ks, "Alice@H.example", a, 0, t, false), KEYSTORE_HARVEST_ADDED);
  expect_found(f->ks, "alice@h.example", a);
  unsigned long g = generation(f->ks);
  expect_outcome(hput(f->ks, "alice@h.example", a, 0, t + 60, false), KEYSTORE_HARVEST_SAME);
  assert_int_equal(generation(f->ks), g); /* nothing an answer depends on changed */
  struct hrecs r = hget(f->ks, "alice@h.example");
  assert_true(same_cert(r.active, a));
  assert_null(r.held);
  assert_int_equal(r.last_used, t); /* within the hour: not rewritten */
  hrecs_free(&r);
  expect_outcome(hput(f->ks, "alice@h.example", a, 0, t + 2 * HOUR, false), KEYSTORE_HARVEST_SAME);
  r = hget(f->ks, "alice@h.example");
  assert_int_equal(r.last_used, t + 2 * HOUR);
  hrecs_free(&r);
  X509_free(a);
}

static void test_harvest_replaced_by_newer(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *old = hcert("email:bob@h.example", -3, 1), *newer = hcert("email:bob@h.example", -1, 2);
  expect_outcome(hput(f->ks, "bob@h.example", old, 0, t, true), KEYSTORE_HARVEST_ADDED);
  expect_outcome(hput(f->ks, "bob@h.example", newer, 0, t + HOUR, true), KEYSTORE_HARVEST_REPLACED);
  expect_found(f->ks, "bob@h.example", newer);
  struct hrecs r = hget(f->ks, "bob@h.example");
  assert_true(same_cert(r.active, newer));
  assert_null(r.held);
  hrecs_free(&r);
  X509_free(old);
  X509_free(newer);
}

/* Without updated_keys a newer certificate waits for an administrator. */
static void test_harvest_held_without_updated_keys(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *old = hcert("email:carol@h.example", -3, 1), *newer = hcert("email:carol@h.example", -1, 2);
  expect_outcome(hput(f->ks, "carol@h.example", old, 0, t, false), KEYSTORE_HARVEST_ADDED);
  expect_outcome(hput(f->ks, "carol@h.example", newer, 0, t + HOUR, false), KEYSTORE_HARVEST_HELD);
  expect_found(f->ks, "carol@h.example", old);
  struct hrecs r = hget(f->ks, "carol@h.example");
  assert_true(same_cert(r.active, old));
  assert_true(same_cert(r.held, newer));
  hrecs_free(&r);
  char list[256] = "";
  assert_int_equal(keystore_harvest_each(f->ks, hcollect, list), 0);
  assert_string_equal(list, "carol@h.example:active,carol@h.example:held");
  X509_free(old);
  X509_free(newer);
}

/* Key substitution: a certificate that is not newer never replaces. */
static void test_harvest_held_when_not_newer(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *cur = hcert("email:dave@h.example", -1, 1), *older = hcert("email:dave@h.example", -3, 2);
  expect_outcome(hput(f->ks, "dave@h.example", cur, 0, t, true), KEYSTORE_HARVEST_ADDED);
  expect_outcome(hput(f->ks, "dave@h.example", older, 0, t + 1, true), KEYSTORE_HARVEST_HELD);
  /* The same notBefore is not newer either; the later hold replaces the earlier. */
  X509 *same_nb = X509_dup(cur);
  ASN1_INTEGER_set(X509_get_serialNumber(same_nb), 3);
  assert_true(X509_sign(same_nb, issuer_key, EVP_sha256()) > 0);
  expect_outcome(hput(f->ks, "dave@h.example", same_nb, 0, t + 2, true), KEYSTORE_HARVEST_HELD);
  expect_found(f->ks, "dave@h.example", cur);
  struct hrecs r = hget(f->ks, "dave@h.example");
  assert_true(same_cert(r.held, same_nb));
  hrecs_free(&r);
  X509_free(cur);
  X509_free(older);
  X509_free(same_nb);
}

struct alerts_seen {
  int n;
  time_t when;
  char key[128], text[1500];
};

static int alert_collect(void *arg, time_t when, const char *key, const char *text) {
  struct alerts_seen *a = arg;
  a->n++;
  a->when = when;
  snprintf(a->key, sizeof a->key, "%s", key);
  snprintf(a->text, sizeof a->text, "%s", text);
  return 0;
}

/* R19: a second updated key within 48 hours is held and alerted, once. */
static void test_harvest_alert_within_48h(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL) - 10 * HOUR;
  X509 *a = hcert("email:erin@h.example", -5, 1), *b = hcert("email:erin@h.example", -3, 2);
  X509 *c = hcert("email:erin@h.example", -1, 3);
  expect_outcome(hput(f->ks, "erin@h.example", a, 0, t, true), KEYSTORE_HARVEST_ADDED);
  expect_outcome(hput(f->ks, "erin@h.example", b, 0, t + HOUR, true), KEYSTORE_HARVEST_REPLACED);
  expect_outcome(hput(f->ks, "erin@h.example", c, 0, t + 47 * HOUR, true), KEYSTORE_HARVEST_ALERT);
  expect_found(f->ks, "erin@h.example", b);
  struct alerts_seen seen = {0};
  assert_int_equal(keystore_alert_each(f->ks, alert_collect, &seen), 0);
  assert_int_equal(seen.n, 1);
  assert_int_equal(seen.when, t + 47 * HOUR);
  assert_string_equal(seen.key, "erin@h.example");
  print_message("alert: %s\n", seen.text);
  assert_non_null(strstr(seen.text, "48 hours"));
  /* The held certificate again: still held, no alert per message. */
  expect_outcome(hput(f->ks, "erin@h.example", c, 0, t + 47 * HOUR + 60, true), KEYSTORE_HARVEST_HELD);
  seen = (struct alerts_seen){0};
  assert_int_equal(keystore_alert_each(f->ks, alert_collect, &seen), 0);
  assert_int_equal(seen.n, 1);
  X509_free(a);
  X509_free(b);
  X509_free(c);
}

static void test_harvest_no_alert_after_48h(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL) - 60 * HOUR;
  X509 *a = hcert("email:fay@h.example", -5, 1), *b = hcert("email:fay@h.example", -3, 2);
  X509 *c = hcert("email:fay@h.example", -1, 3);
  expect_outcome(hput(f->ks, "fay@h.example", a, 0, t, true), KEYSTORE_HARVEST_ADDED);
  expect_outcome(hput(f->ks, "fay@h.example", b, 0, t + HOUR, true), KEYSTORE_HARVEST_REPLACED);
  expect_outcome(hput(f->ks, "fay@h.example", c, 0, t + 49 * HOUR, true), KEYSTORE_HARVEST_REPLACED);
  expect_found(f->ks, "fay@h.example", c);
  struct alerts_seen seen = {0};
  assert_int_equal(keystore_alert_each(f->ks, alert_collect, &seen), 0);
  assert_int_equal(seen.n, 0);
  X509_free(a);
  X509_free(b);
  X509_free(c);
}

/* A held certificate is never an answer, even when the active one is not
 * usable any more. */
static void test_harvest_held_never_returned(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *dying = make((struct spec){.san = "email:gus@h.example", .ku = RSA_ENC, .from = -3 * DAY, .to = 2 * HOUR});
  X509 *fresh = hcert("email:gus@h.example", -1, 2);
  expect_outcome(hput(f->ks, "gus@h.example", dying, 0, t, false), KEYSTORE_HARVEST_ADDED);
  expect_outcome(hput(f->ks, "gus@h.example", fresh, 0, t, false), KEYSTORE_HARVEST_HELD);
  X509 *x = NULL;
  assert_int_equal(keystore_lookup(f->ks, "gus@h.example", t + 3 * HOUR, &x, NULL), SG_ENOTFOUND);
  assert_null(x);
  X509_free(dying);
  X509_free(fresh);
}

static void test_harvest_managed_beats_harvested(void **state) {
  struct fx *f = *state;
  X509 *managed = hcert("email:hal@h.example", -5, 1), *harvested = hcert("email:hal@h.example", -1, 2);
  add_ok(f->ks, "hal", managed);
  /* A managed key answers for the address: the harvested one is held. */
  expect_outcome(hput(f->ks, "hal@h.example", harvested, KEYSTORE_CAP_AES256_GCM, time(NULL), false),
                 KEYSTORE_HARVEST_HELD);
  X509 *x = NULL;
  unsigned caps = 99;
  assert_int_equal(keystore_lookup(f->ks, "hal@h.example", time(NULL), &x, &caps), 0);
  assert_true(same_cert(x, managed)); /* although the harvested one is newer */
  assert_int_equal(caps, 0);
  X509_free(x);
  X509_free(managed);
  X509_free(harvested);
}

/* A managed domain key (a partner's gateway) answers for every address of
 * the domain: a harvested address key would outrank it, so it is held. */
static void test_harvest_shadowed_by_managed_domain_is_held(void **state) {
  struct fx *f = *state;
  X509 *gw = hcert("DNS:partner.example", -5, 1), *bob = hcert("email:bob@partner.example", -1, 2);
  add_ok(f->ks, "partner-gw", gw);
  expect_outcome(hput(f->ks, "bob@partner.example", bob, 0, time(NULL), false), KEYSTORE_HARVEST_HELD);
  expect_found(f->ks, "bob@partner.example", gw);
  struct hrecs r = hget(f->ks, "bob@partner.example");
  assert_null(r.active);
  assert_true(r.held && same_cert(r.held, bob));
  hrecs_free(&r);
  /* The same certificate again: still held, nothing new written. */
  unsigned long g = generation(f->ks);
  expect_outcome(hput(f->ks, "bob@partner.example", bob, 0, time(NULL), false), KEYSTORE_HARVEST_HELD);
  assert_int_equal(generation(f->ks), g);
  X509_free(gw);
  X509_free(bob);
}

/* A certificate whose chain did not validate (harvest.self_signed) may
 * fill a gap but never replace a known key, even newer, with updated_keys. */
static void test_harvest_unvalidated_never_replaces(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *old = hcert("email:una@u.example", -5, 1), *newer = hcert("email:una@u.example", -1, 2);
  struct keystore_harvest_opts o = {true, 0, true};
  enum keystore_harvest_outcome out;
  char err[256];
  assert_int_equal(keystore_harvest_put(f->ks, "una@u.example", old, 0, t, &o, &out, NULL, err, sizeof err), 0);
  expect_outcome(out, KEYSTORE_HARVEST_ADDED);
  assert_int_equal(keystore_harvest_put(f->ks, "una@u.example", newer, 0, t, &o, &out, NULL, err, sizeof err), 0);
  expect_outcome(out, KEYSTORE_HARVEST_HELD);
  expect_found(f->ks, "una@u.example", old);
  X509_free(old);
  X509_free(newer);
}

static void test_harvest_email_tier_beats_domain(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *dom = hcert("DNS:tier.example", -1, 1), *ivy = hcert("email:ivy@tier.example", -2, 2);
  expect_outcome(hput(f->ks, "tier.example", dom, 0, t, false), KEYSTORE_HARVEST_ADDED);
  expect_outcome(hput(f->ks, "ivy@tier.example", ivy, 0, t, false), KEYSTORE_HARVEST_ADDED);
  expect_found(f->ks, "ivy@tier.example", ivy);
  expect_found(f->ks, "Ivy@TIER.example", ivy);
  expect_found(f->ks, "jim@tier.example", dom);
  expect_none(f->ks, "jim@sub.tier.example"); /* harvested domain keys match exactly */
  /* A managed domain key does not hide the harvested address key. */
  X509 *mdom = hcert("DNS:tier.example", -1, 3);
  add_ok(f->ks, "tier", mdom);
  expect_found(f->ks, "ivy@tier.example", ivy);
  expect_found(f->ks, "jim@tier.example", mdom);
  X509_free(dom);
  X509_free(ivy);
  X509_free(mdom);
}

static void test_harvest_caps_round_trip(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *x = hcert("email:kim@h.example", -1, 1), *got = NULL;
  unsigned want = KEYSTORE_CAP_AES256_GCM | KEYSTORE_CAP_RSA_OAEP, caps = 0;
  hput(f->ks, "kim@h.example", x, want | KEYSTORE_CAP_HARVESTED, t, false); /* the marker bit is not stored */
  assert_int_equal(keystore_lookup_tier(f->ks, KEYSTORE_TIER_EMAIL, "kim@h.example", t, &got, &caps), 0);
  assert_true(same_cert(got, x));
  assert_int_equal(caps, want | KEYSTORE_CAP_HARVESTED);
  X509_free(got);
  struct hrecs r = hget(f->ks, "kim@h.example");
  assert_int_equal(r.caps, want);
  hrecs_free(&r);
  /* New caps with the same certificate: stored at once, and an answer changed. */
  unsigned long g = generation(f->ks);
  expect_outcome(hput(f->ks, "kim@h.example", x, KEYSTORE_CAP_AES128_GCM, t + 1, false), KEYSTORE_HARVEST_SAME);
  assert_true(generation(f->ks) > g);
  assert_int_equal(keystore_lookup_tier(f->ks, KEYSTORE_TIER_EMAIL, "kim@h.example", t, &got, &caps), 0);
  assert_int_equal(caps, KEYSTORE_CAP_AES128_GCM | KEYSTORE_CAP_HARVESTED);
  X509_free(got);
  X509_free(x);
}

/* R20: over max_bytes, the least recently used keys go first; a touch
 * moves a key to the back of the line. */
static void test_harvest_eviction_lru(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *c[6];
  char key[6][32], san[48];
  size_t sizes = 0;
  for (int i = 0; i < 6; i++) {
    snprintf(key[i], sizeof key[i], "u%d@lru.example", i);
    snprintf(san, sizeof san, "email:%s", key[i]);
    c[i] = make((struct spec){.key = ec_key, .san = san, .ku = EC_ENC, .serial = i + 1});
    if (i < 5) sizes += strlen(key[i]) + 41 + (size_t)i2d_X509(c[i], NULL); /* key + record (keystore_harvest.c) */
  }
  struct keystore_harvest_opts o = {false, sizes + 8, false}; /* five fit, six do not */
  enum keystore_harvest_outcome out;
  size_t evicted = 99;
  char err[256] = "";
  for (int i = 0; i < 5; i++) {
    if (keystore_harvest_put(f->ks, key[i], c[i], 0, t + i, &o, &out, &evicted, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(evicted, 0);
  }
  char *touched[] = {key[0]};
  assert_int_equal(keystore_harvest_touch(f->ks, touched, 1, t + 10), 0);
  if (keystore_harvest_put(f->ks, key[5], c[5], 0, t + 11, &o, &out, &evicted, err, sizeof err)) fail_msg("%s", err);
  expect_outcome(out, KEYSTORE_HARVEST_ADDED);
  assert_int_equal(evicted, 2); /* down to 90 %: four of the five sizes */
  char list[512] = "";
  assert_int_equal(keystore_harvest_each(f->ks, hcollect, list), 0);
  assert_string_equal(list, "u0@lru.example:active,u3@lru.example:active,u4@lru.example:active,"
                            "u5@lru.example:active");
  expect_none(f->ks, "u1@lru.example");
  expect_found(f->ks, "u0@lru.example", c[0]);
  for (int i = 0; i < 6; i++) X509_free(c[i]);
}

/* R21: the held certificate becomes a managed key and the active one. */
static void test_harvest_promote_held(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *old = hcert("email:lee@h.example", -3, 1), *newer = hcert("email:lee@h.example", -1, 2);
  hput(f->ks, "lee@h.example", old, KEYSTORE_CAP_AES256_GCM, t, false);
  expect_outcome(hput(f->ks, "lee@h.example", newer, 0, t, false), KEYSTORE_HARVEST_HELD);
  char err[256] = "";
  if (keystore_harvest_promote(f->ks, "LEE@h.example", "lee", t + 5, err, sizeof err)) fail_msg("promote: %s", err);
  X509 *x = NULL;
  assert_int_equal(keystore_pubkey_get(f->ks, "lee", &x, NULL), 0);
  assert_true(same_cert(x, newer));
  X509_free(x);
  struct hrecs r = hget(f->ks, "lee@h.example");
  assert_true(same_cert(r.active, newer));
  assert_null(r.held); /* the hold is cleared */
  assert_int_equal(r.last_used, t + 5);
  hrecs_free(&r);
  unsigned caps = 99;
  assert_int_equal(keystore_lookup(f->ks, "lee@h.example", time(NULL), &x, &caps), 0);
  assert_true(same_cert(x, newer));
  assert_int_equal(caps, 0); /* answered by the managed key now */
  X509_free(x);
  X509_free(old);
  X509_free(newer);
}

static void test_harvest_promote_refusals(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *a = hcert("email:max@h.example", -3, 1), *b = hcert("email:max@h.example", -1, 2);
  add_ok(f->ks, "taken", a);
  hput(f->ks, "max@h.example", a, 0, t, false);
  hput(f->ks, "max@h.example", b, 0, t, false);
  char err[256] = "";
  assert_int_equal(keystore_harvest_promote(f->ks, "max@h.example", "taken", t, err, sizeof err), SG_EEXIST);
  assert_non_null(strstr(err, "taken"));
  struct hrecs r = hget(f->ks, "max@h.example");
  assert_true(same_cert(r.active, a)); /* nothing changed */
  assert_true(same_cert(r.held, b));
  hrecs_free(&r);
  assert_int_equal(keystore_harvest_promote(f->ks, "nobody@h.example", "n", t, err, sizeof err), SG_ENOTFOUND);
  assert_int_equal(keystore_harvest_promote(f->ks, "max@h.example", "bad name", t, err, sizeof err), SG_EINVAL);
  X509_free(a);
  X509_free(b);
}

static void test_harvest_refuses_foreign_certificate(void **state) {
  struct fx *f = *state;
  X509 *x = hcert("email:ned@h.example", -1, 1);
  struct keystore_harvest_opts o = {false, 0, false};
  enum keystore_harvest_outcome out;
  char err[256] = "";
  assert_int_equal(keystore_harvest_put(f->ks, "other@h.example", x, 0, time(NULL), &o, &out, NULL, err, sizeof err),
                   SG_EINVAL);
  print_message("refused: %s\n", err);
  assert_non_null(strstr(err, "other@h.example"));
  expect_none(f->ks, "other@h.example");
  X509_free(x);
}

/* Every write that can change an answer moves the generation; use times
 * and failed writes do not. */
static void test_generation_counts_writes(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  assert_int_equal(generation(f->ks), 0);
  X509 *x = hcert("email:olga@h.example", -1, 1), *y = hcert("email:pia@h.example", -2, 2);
  add_ok(f->ks, "olga", x);
  assert_int_equal(generation(f->ks), 1);
  char err[256];
  assert_int_equal(keystore_pubkey_add(f->ks, "olga", x, err, sizeof err), SG_EEXIST);
  assert_int_equal(generation(f->ks), 1);
  hput(f->ks, "pia@h.example", y, 0, t, false);
  assert_int_equal(generation(f->ks), 2);
  char *keys[] = {"pia@h.example"};
  assert_int_equal(keystore_harvest_touch(f->ks, keys, 1, t + HOUR), 0);
  assert_int_equal(generation(f->ks), 2);
  struct hrecs r = hget(f->ks, "pia@h.example");
  assert_int_equal(r.last_used, t + HOUR); /* the touch did write */
  hrecs_free(&r);
  STACK_OF(X509) *sk = sk_X509_new_null();
  sk_X509_push(sk, make((struct spec){.cn = "Gen Root", .ca = true}));
  assert_int_equal(keystore_ca_import(f->ks, "gen", sk, NULL, err, sizeof err), 0);
  assert_int_equal(generation(f->ks), 3);
  assert_int_equal(keystore_ca_delete(f->ks, "gen"), 0);
  assert_int_equal(keystore_pubkey_delete(f->ks, "olga"), 0);
  assert_int_equal(generation(f->ks), 5);
  sk_X509_pop_free(sk, X509_free);
  X509_free(x);
  X509_free(y);
}

/* Overwrite the value of key in db with bytes, through LMDB itself (the
 * store is closed meanwhile: one environment per process). */
static void raw_put(struct fx *f, const char *db, const char *key, const void *bytes, size_t len) {
  keystore_close(f->ks);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  assert_int_equal(mdb_env_open(env, f->dir, MDB_NOTLS, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
  MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)bytes};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  char err[256] = "";
  if (keystore_open(f->dir, true, &f->ks, err, sizeof err)) fail_msg("reopen: %s", err);
}

static void test_harvest_corrupt_record_not_found(void **state) {
  struct fx *f = *state;
  time_t t = time(NULL);
  X509 *x = hcert("email:pat@h.example", -1, 1);
  hput(f->ks, "pat@h.example", x, 0, t, false);
  static const unsigned char bad[][50] = {
      {1, 0, 0, 0, 0},                                   /* too short */
      {9, [41] = 0x30},                                  /* unknown version */
      {1, [37] = 0, 0, 0, 200, [41] = 0x30, 0x82},       /* DER length beyond the value */
      {1, [37] = 0, 0, 0, 9, [41] = 0x30, 7, 1, 2, 3},  /* not a certificate */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    raw_put(f, "harvested", "pat@h.example", bad[i], i == 0 ? 5 : 50);
    expect_none(f->ks, "pat@h.example");
    struct hrecs r = hget(f->ks, "pat@h.example");
    assert_null(r.active);
    char list[128] = "";
    assert_int_equal(keystore_harvest_each(f->ks, hcollect, list), 0);
    assert_string_equal(list, "");
  }
  /* The next put of the key stores a good record over the bad one. */
  expect_outcome(hput(f->ks, "pat@h.example", x, 0, t + 1, false), KEYSTORE_HARVEST_ADDED);
  expect_found(f->ks, "pat@h.example", x);
  X509_free(x);
}

int main(void) {
  if (tu_dir_make("keystore") != 0) return 1;
  rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  issuer_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (!rsa_key || !ec_key || !issuer_key) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_add_get_delete, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_names_and_refusals, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_delete_cleans_index, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_lookup_email_case, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_lookup_domain_and_wildcard, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_lookup_filters, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_latest_not_before_wins, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_export_import_round_trip, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_import_bad_block_changes_nothing, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_import_auto_names_never_collide, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_import_plain_pem_names, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_import_10000, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_readers_and_writer, fx_setup, fx_teardown),
      cmocka_unit_test(test_open_read_only),
      cmocka_unit_test_setup_teardown(test_ca_lists, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_ca_list_crls, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_added_then_same, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_replaced_by_newer, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_held_without_updated_keys, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_held_when_not_newer, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_alert_within_48h, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_no_alert_after_48h, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_held_never_returned, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_managed_beats_harvested, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_shadowed_by_managed_domain_is_held, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_unvalidated_never_replaces, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_email_tier_beats_domain, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_caps_round_trip, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_eviction_lru, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_promote_held, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_promote_refusals, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_refuses_foreign_certificate, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_generation_counts_writes, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_harvest_corrupt_record_not_found, fx_setup, fx_teardown),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  EVP_PKEY_free(rsa_key);
  EVP_PKEY_free(ec_key);
  EVP_PKEY_free(issuer_key);
  (void)tu_dir_remove();
  return failed;
}
