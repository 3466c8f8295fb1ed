/* Tests for crypto/keycache.c: the lock-free cache in front of a real LMDB
 * key store (a throwaway folder per test), with certificates made by
 * OpenSSL here (one EC P-256 key signs them all: the cache never looks at
 * the key).  Whether an answer came from the cache or from the store is
 * proven two ways: the cache's hit/miss counters, and writes made to the
 * store behind the cache's back, which a cached answer must not show until
 * invalidate, flush or expiry.  The last test is issue #5's acceptance
 * test: readers on every core while a writer adds, deletes, invalidates,
 * flushes and evicts; no stable key may ever be missed.  It runs under
 * ThreadSanitizer in tools/test.sh (build-tsan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/keycache.h"
#include "crypto/keystore.h"
#include "testutil.h"

static struct keystore *ks;
static struct keycache *c;
static EVP_PKEY *key; /* signs every test certificate */

/* A self-signed encryption certificate naming email and/or domain (NULL:
 * none), valid from five minutes ago for 30 days.  The caller's. */
static X509 *make_cert(const char *cn, const char *email, const char *domain) {
  const char *emails[] = {email}, *domains[] = {domain};
  struct cert_request r = {.cn = cn, .days = 30, .san_emails = emails, .n_san_emails = email ? 1 : 0,
                           .san_domains = domains, .n_san_domains = domain ? 1 : 0};
  X509 *x = NULL;
  char err[256];
  assert_int_equal(cert_create_selfsigned(&r, key, key, &x, err, sizeof err), 0);
  return x;
}

/* make_cert, stored as a managed key under name; the certificate is the
 * caller's. */
static X509 *add_key(const char *name, const char *email, const char *domain) {
  X509 *x = make_cert(name, email, domain);
  char err[256];
  assert_int_equal(keystore_pubkey_add(ks, name, x, err, sizeof err), 0);
  return x;
}

static struct keycache_stats stats(void) {
  struct keycache_stats s;
  keycache_stats(c, &s);
  return s;
}

/* A lookup at time now that must find want (freed here, with the answer). */
static void expect_cert(const char *address, time_t now, X509 *want) {
  X509 *got = NULL;
  assert_int_equal(keycache_lookup(c, address, now, &got, NULL), 0);
  assert_non_null(got);
  assert_int_equal(X509_cmp(got, want), 0);
  X509_free(got);
}

static void expect_none(const char *address, time_t now) {
  X509 *got = (X509 *)1;
  assert_int_equal(keycache_lookup(c, address, now, &got, NULL), SG_ENOTFOUND);
  assert_null(got);
}

static int setup(void **state) {
  (void)state;
  keycache_thread_online();
  key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  return key ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  EVP_PKEY_free(key);
  keycache_thread_offline();
  return 0;
}

static int teardown_test(void **state) {
  (void)state;
  keycache_free(c);
  if (ks) keystore_close(ks);
  c = NULL;
  ks = NULL;
  return tu_dir_remove();
}

/* A fresh store and cache (max_entries) per test; on failure nothing is
 * left behind (cmocka skips the teardown of a failed setup). */
static int open_cache(size_t max_entries) {
  char keys[96], err[256] = "";
  if (tu_dir_make("kc") != 0) return -1;
  tu_path(keys, sizeof keys, "keys");
  if (keystore_open(keys, true, &ks, err, sizeof err) == 0 && keycache_new(ks, max_entries, &c) == 0) return 0;
  fprintf(stderr, "cannot open the store or the cache: %s\n", err);
  teardown_test(NULL);
  return -1;
}

static int setup_test(void **state) {
  (void)state;
  return open_cache(0);
}

static int setup_small(void **state) {
  (void)state;
  return open_cache(10);
}

/* ---- answers ------------------------------------------------------------------ */

/* The cache gives the store's certificate and caps; the second lookup (in
 * another case of the domain) is a hit that hands out the cached object. */
static void test_hit_returns_store_certificate(void **state) {
  (void)state;
  time_t now = time(NULL);
  X509 *x = add_key("alice", "alice@example.com", NULL), *from_store = NULL, *a = NULL, *b = NULL;
  unsigned store_caps = 99, caps_a = 99, caps_b = 99;
  assert_int_equal(keystore_lookup(ks, "alice@example.com", now, &from_store, &store_caps), 0);
  assert_int_equal(keycache_lookup(c, "alice@example.com", now, &a, &caps_a), 0);
  assert_int_equal(X509_cmp(a, from_store), 0);
  assert_int_equal(X509_cmp(a, x), 0);
  assert_int_equal(caps_a, store_caps);
  struct keycache_stats s = stats();
  assert_int_equal(s.misses, 1);
  assert_int_equal(s.hits, 0);
  assert_int_equal(s.entries, 1);
  assert_int_equal(keycache_lookup(c, "alice@EXAMPLE.com", now, &b, &caps_b), 0);
  assert_ptr_equal(b, a); /* the cached object, up-referenced for each caller */
  assert_int_equal(caps_b, store_caps);
  s = stats();
  assert_int_equal(s.hits, 1);
  assert_int_equal(s.misses, 1);
  X509_free(a);
  X509_free(b);
  X509_free(from_store);
  X509_free(x);
}

static void test_address_tier_beats_domain_tier(void **state) {
  (void)state;
  time_t now = time(NULL);
  X509 *dom = add_key("org-domain", NULL, "example.org"), *carol = add_key("carol", "carol@example.org", NULL);
  X509 *from_store = NULL;
  assert_int_equal(keystore_lookup(ks, "carol@example.org", now, &from_store, NULL), 0);
  assert_int_equal(X509_cmp(from_store, carol), 0);
  for (int i = 0; i < 2; i++) { /* from the store, then from the cache */
    X509 *got = NULL;
    assert_int_equal(keycache_lookup(c, "carol@example.org", now, &got, NULL), 0);
    assert_int_equal(X509_cmp(got, carol), 0);
    assert_int_not_equal(X509_cmp(got, dom), 0);
    X509_free(got);
  }
  assert_int_equal(stats().hits, 1);
  X509_free(from_store);
  X509_free(dom);
  X509_free(carol);
}

/* One domain entry serves every address of the domain, whatever its case;
 * each address still gets its own (not found) e-mail entry. */
static void test_domain_certificate_answers_any_address(void **state) {
  (void)state;
  time_t now = time(NULL);
  X509 *dom = add_key("org-domain", NULL, "example.org");
  expect_cert("a@example.org", now, dom);
  expect_cert("b@example.org", now, dom);
  expect_cert("C@Example.ORG", now, dom);
  struct keycache_stats s = stats();
  assert_int_equal(s.misses, 4); /* three e-mail entries, one domain entry */
  assert_int_equal(s.hits, 2);   /* the domain entry, for b and C */
  assert_int_equal(s.entries, 4);
  X509_free(dom);
}

/* A key added to the store behind the cache's back stays unseen: the
 * second lookup never reached the store. */
static void test_not_found_is_cached(void **state) {
  (void)state;
  time_t now = time(NULL);
  expect_none("dave@example.net", now);
  X509 *dave = add_key("dave", "dave@example.net", NULL), *from_store = NULL;
  assert_int_equal(keystore_lookup(ks, "dave@example.net", now, &from_store, NULL), 0);
  expect_none("dave@example.net", now);
  struct keycache_stats s = stats();
  assert_int_equal(s.misses, 2); /* e-mail and domain tier, first lookup only */
  assert_int_equal(s.hits, 2);
  keycache_invalidate(c, "dave@example.net");
  expect_cert("dave@example.net", now, dave);
  X509_free(from_store);
  X509_free(dave);
}

/* Invalidating one address drops that address in every spelling of its
 * case, and nothing else. */
static void test_invalidate_drops_one_address(void **state) {
  (void)state;
  time_t now = time(NULL);
  expect_none("xena@example.net", now);
  expect_none("Xena@example.net", now);
  expect_none("yuri@example.net", now);
  X509 *x = add_key("xena", "xena@example.net", NULL), *y = add_key("yuri", "yuri@example.net", NULL);
  size_t before = stats().entries;
  keycache_invalidate(c, "XENA@EXAMPLE.NET");
  assert_int_equal(stats().entries, before - 2);
  expect_cert("xena@example.net", now, x);
  expect_cert("Xena@example.net", now, x);
  expect_none("yuri@example.net", now);
  X509_free(x);
  X509_free(y);
}

static void test_invalidate_drops_one_domain(void **state) {
  (void)state;
  time_t now = time(NULL);
  expect_none("walt@example.com", now);
  expect_none("walt@example.net", now);
  X509 *com = add_key("com-domain", NULL, "example.com"), *net = add_key("net-domain", NULL, "example.net");
  expect_none("walt@example.com", now);
  keycache_invalidate(c, "Example.COM");
  expect_cert("walt@example.com", now, com);
  expect_none("walt@example.net", now);
  X509_free(com);
  X509_free(net);
}

static void test_flush_drops_everything(void **state) {
  (void)state;
  time_t now = time(NULL);
  expect_none("xena@example.net", now);
  expect_none("yuri@example.org", now);
  X509 *x = add_key("xena", "xena@example.net", NULL), *y = add_key("yuri", "yuri@example.org", NULL);
  expect_none("xena@example.net", now);
  keycache_flush(c);
  assert_int_equal(stats().entries, 0);
  expect_cert("xena@example.net", now, x);
  expect_cert("yuri@example.org", now, y);
  X509_free(x);
  X509_free(y);
}

/* Every spelling of a domain (short, medium and long keys: each length
 * class of the case-folding hash) finds the entries the first made. */
static void test_spellings_share_entries(void **state) {
  (void)state;
  time_t now = time(NULL);
  const char *pairs[][2] = {{"u@A.B", "u@a.b"}, {"u@Ab.Io", "u@ab.io"}, {"uu@EXAMPLE.NET", "uu@example.net"},
                            {"v@Sub.Domain.Example.ORG", "v@sub.domain.example.org"}};
  for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
    struct keycache_stats before = stats();
    expect_none(pairs[i][0], now);
    expect_none(pairs[i][1], now);
    struct keycache_stats after = stats();
    assert_int_equal(after.misses - before.misses, 2); /* the first spelling, both tiers */
    assert_int_equal(after.hits - before.hits, 2);     /* the second, both tiers */
  }
}

/* What the keyring stores is what it reads back. */
static void test_generation_is_remembered(void **state) {
  (void)state;
  assert_int_equal(keycache_generation(c), 0);
  keycache_set_generation(c, 42);
  assert_int_equal(keycache_generation(c), 42);
  keycache_flush(c); /* a flush is the keyring's business: it keeps the number */
  assert_int_equal(keycache_generation(c), 42);
}

/* ---- freshness ------------------------------------------------------------------ */

/* A found entry is served until the certificate's notAfter, not a second
 * longer, even within the TTL: at notAfter the store is asked again (and
 * says not found, as keystore_lookup does). */
static void test_found_entry_stale_at_not_after(void **state) {
  (void)state;
  X509 *x = add_key("erin", "erin@example.com", NULL), *none = NULL;
  struct cert_info ci;
  assert_int_equal(cert_info_get(x, &ci), 0);
  time_t na = ci.not_after_t;
  cert_info_free(&ci);
  expect_cert("erin@example.com", na - 30, x);
  expect_cert("erin@example.com", na - 1, x);
  assert_int_equal(stats().hits, 1);
  assert_int_equal(keystore_lookup(ks, "erin@example.com", na, &none, NULL), SG_ENOTFOUND);
  expect_none("erin@example.com", na);
  assert_int_equal(stats().misses, 3); /* the first lookup, then both tiers at notAfter */
  X509_free(x);
}

/* Not found before the certificate's notBefore; the negative answer holds
 * for the TTL (60 s) even once the certificate is valid, then the store is
 * asked again and the certificate found. */
static void test_negative_entry_asked_again_after_ttl(void **state) {
  (void)state;
  X509 *x = add_key("fay", "fay@example.com", NULL), *from_store = NULL;
  struct cert_info ci;
  assert_int_equal(cert_info_get(x, &ci), 0);
  time_t nb = ci.not_before_t;
  cert_info_free(&ci);
  expect_none("fay@example.com", nb - 30);
  assert_int_equal(keystore_lookup(ks, "fay@example.com", nb + 10, &from_store, NULL), 0);
  expect_none("fay@example.com", nb + 10); /* within the TTL: still the cached answer */
  assert_int_equal(stats().hits, 2);
  expect_cert("fay@example.com", nb + 30, x); /* asked + 60 s */
  X509_free(from_store);
  X509_free(x);
}

/* ---- bad input ------------------------------------------------------------------ */

/* The store's EINVAL, without touching the cache; addresses too long for
 * the store are refused by it (asked, never cached). */
static void test_invalid_addresses(void **state) {
  (void)state;
  time_t now = time(NULL);
  char long_addr[600], mid_addr[506];
  memset(long_addr, 'a', sizeof long_addr - 1);
  long_addr[sizeof long_addr - 1] = '\0';
  memcpy(long_addr + 500, "@example.com", 12);
  memset(mid_addr, 'b', sizeof mid_addr - 1);
  strcpy(mid_addr + sizeof mid_addr - 13, "@example.com");
  const char *bad[] = {"", "nobody", "@example.com", "user@", "a@b@", long_addr, mid_addr};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    X509 *got = (X509 *)1, *from_store = NULL;
    assert_int_equal(keystore_lookup(ks, bad[i], now, &from_store, NULL), SG_EINVAL);
    assert_int_equal(keycache_lookup(c, bad[i], now, &got, NULL), SG_EINVAL);
    assert_null(got);
    if (i == 4) { /* the syntax cases never reach the cache */
      struct keycache_stats s = stats();
      assert_int_equal(s.entries + s.hits + s.misses, 0);
    }
  }
  X509 *got = (X509 *)1;
  assert_int_equal(keycache_lookup(c, NULL, now, &got, NULL), SG_EINVAL);
  assert_null(got);
  assert_int_equal(stats().entries, 0);
}

/* ---- eviction ------------------------------------------------------------------- */

/* max_entries 10: five hot keys hit before every insert of a cold one
 * survive every CLOCK sweep (each of their lookups stays a hit); the
 * cold ones are evicted and the table never holds more than 10. */
static void test_eviction_keeps_referenced_entries(void **state) {
  (void)state;
  time_t now = time(NULL);
  enum { HOT = 5, COLD = 30 };
  X509 *hot[HOT];
  char a[64], name[32];
  for (int i = 0; i < HOT; i++) {
    snprintf(name, sizeof name, "hot%d", i);
    snprintf(a, sizeof a, "hot%d@example.com", i);
    hot[i] = add_key(name, a, NULL);
    expect_cert(a, now, hot[i]);
  }
  for (int i = 0; i < COLD; i++) {
    snprintf(name, sizeof name, "cold%d", i);
    snprintf(a, sizeof a, "cold%d@example.com", i);
    X509 *x = add_key(name, a, NULL);
    size_t hits = stats().hits;
    for (int j = 0; j < HOT; j++) {
      char h[64];
      snprintf(h, sizeof h, "hot%d@example.com", j);
      expect_cert(h, now, hot[j]);
    }
    assert_int_equal(stats().hits, hits + HOT);
    expect_cert(a, now, x);
    assert_true(stats().entries <= 10);
    X509_free(x);
  }
  struct keycache_stats s = stats();
  assert_int_equal(s.evictions, HOT + COLD - s.entries);
  assert_true(s.evictions >= 25);
  X509 *got = NULL; /* the first cold key was evicted long ago: a miss */
  assert_int_equal(keycache_lookup(c, "cold0@example.com", now, &got, NULL), 0);
  assert_int_equal(stats().misses, s.misses + 1);
  X509_free(got);
  for (int i = 0; i < HOT; i++) X509_free(hot[i]);
}

/* ---- harvested use marks ------------------------------------------------------ */

struct used {
  char keys[8][64];
  size_t n;
};

static void used_add(void *arg, const char *k) {
  struct used *u = arg;
  if (u->n < 8) snprintf(u->keys[u->n], sizeof u->keys[0], "%s", k);
  u->n++;
}

static struct used collect(void) {
  struct used u = {.n = 0};
  keycache_collect_used(c, used_add, &u);
  return u;
}

/* hank@example.com as a harvested record (the cert names it), caps
 * AES-256-GCM; the certificate is the caller's. */
static X509 *harvest_hank(void) {
  X509 *x = make_cert("hank", "hank@example.com", NULL);
  enum keystore_harvest_outcome out;
  char err[256];
  assert_int_equal(keystore_harvest_put(ks, "hank@example.com", x, KEYSTORE_CAP_AES256_GCM, time(NULL), NULL, &out,
                                        NULL, err, sizeof err),
                   0);
  assert_int_equal(out, KEYSTORE_HARVEST_ADDED);
  return x;
}

/* Only answers from harvested records are reported, once per (lower-cased)
 * key however many spellings and hits served it; the caps come through
 * unchanged; the marks are cleared by the report. */
static void test_collect_used_reports_harvested_answers(void **state) {
  (void)state;
  time_t now = time(NULL);
  X509 *hank = harvest_hank(), *mia = add_key("mia", "mia@example.com", NULL), *got = NULL;
  unsigned store_caps = 0, caps = 0;
  assert_int_equal(keystore_lookup(ks, "hank@example.com", now, &got, &store_caps), 0);
  X509_free(got);
  assert_int_equal(store_caps, KEYSTORE_CAP_HARVESTED | KEYSTORE_CAP_AES256_GCM);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(keycache_lookup(c, "hank@example.com", now, &got, &caps), 0);
    assert_int_equal(caps, store_caps);
    assert_int_equal(X509_cmp(got, hank), 0);
    X509_free(got);
  }
  expect_cert("HANK@example.com", now, hank);
  expect_cert("mia@example.com", now, mia);
  struct used u = collect();
  assert_int_equal(u.n, 1);
  assert_string_equal(u.keys[0], "hank@example.com");
  assert_int_equal(collect().n, 0);
  expect_cert("mia@example.com", now, mia);
  assert_int_equal(collect().n, 0);
  expect_cert("hank@example.com", now, hank); /* a hit marks again */
  u = collect();
  assert_int_equal(u.n, 1);
  assert_string_equal(u.keys[0], "hank@example.com");
  X509_free(hank);
  X509_free(mia);
}

/* A use served from an entry that is then invalidated (or evicted) is
 * still reported by the next collect, once. */
static void test_collect_used_keeps_marks_of_removed_entries(void **state) {
  (void)state;
  time_t now = time(NULL);
  X509 *hank = harvest_hank();
  expect_cert("hank@example.com", now, hank);
  keycache_invalidate(c, "hank@example.com");
  assert_int_equal(stats().entries, 0);
  struct used u = collect();
  assert_int_equal(u.n, 1);
  assert_string_equal(u.keys[0], "hank@example.com");
  assert_int_equal(collect().n, 0);
  X509_free(hank);
}

/* ---- readers and a writer at once (issue #5's acceptance test) ----------------- */

enum { STABLE = 8, CHURN = 16, RACE_SECONDS = 3, TRANSIENT_PER_ROUND = 40, MAX_READERS = 64 };

static struct {
  X509 *stable[STABLE], *churn[CHURN];
  char stable_addr[STABLE][48], churn_addr[CHURN][48];
  int stop;
} race;

struct race_reader {
  pthread_t t;
  unsigned id;
  size_t lookups, lost, errors;
};

/* Stable keys must always come back, with their certificate; churn keys
 * may come and go, but never as an error. */
static void *race_read(void *arg) {
  struct race_reader *r = arg;
  keycache_thread_online();
  for (unsigned i = r->id; !__atomic_load_n(&race.stop, __ATOMIC_ACQUIRE); i++) {
    X509 *got = NULL;
    int rc = keycache_lookup(c, race.stable_addr[i % STABLE], time(NULL), &got, NULL);
    if (rc != 0 || X509_cmp(got, race.stable[i % STABLE]) != 0) r->lost++;
    X509_free(got);
    r->lookups++;
    if (i % 8 == 0) {
      got = NULL;
      rc = keycache_lookup(c, race.churn_addr[(i / 8) % CHURN], time(NULL), &got, NULL);
      if (rc != 0 && rc != SG_ENOTFOUND) r->errors++;
      X509_free(got);
    }
  }
  keycache_thread_offline();
  return NULL;
}

struct race_writer {
  pthread_t t;
  size_t rounds, flushes, errors;
};

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Per round: replace one churn key in the store and invalidate it, look up
 * 40 new addresses (the cache holds 16: evictions), every 8th round flush. */
static void *race_write(void *arg) {
  struct race_writer *w = arg;
  keycache_thread_online();
  double end = mono() + RACE_SECONDS;
  unsigned next = 0;
  for (w->rounds = 0; mono() < end; w->rounds++) {
    unsigned k = (unsigned)(w->rounds % CHURN);
    char name[32], err[256], addr[64];
    snprintf(name, sizeof name, "churn%u", k);
    int rc = keystore_pubkey_delete(ks, name);
    if (rc != 0 && rc != SG_ENOTFOUND) w->errors++;
    if (keystore_pubkey_add(ks, name, race.churn[k], err, sizeof err) != 0) w->errors++;
    keycache_invalidate(c, race.churn_addr[k]);
    for (int j = 0; j < TRANSIENT_PER_ROUND; j++, next++) {
      snprintf(addr, sizeof addr, "t%u@d%u.example", next, next % 4);
      X509 *got = NULL;
      rc = keycache_lookup(c, addr, time(NULL), &got, NULL);
      if (rc != SG_ENOTFOUND) w->errors++;
      X509_free(got);
    }
    if (w->rounds % 8 == 7) {
      keycache_flush(c);
      w->flushes++;
    }
  }
  __atomic_store_n(&race.stop, 1, __ATOMIC_RELEASE);
  keycache_thread_offline();
  return NULL;
}

static int setup_race(void **state) {
  (void)state;
  return open_cache(16);
}

static void test_readers_never_lose_a_key_while_writer_churns(void **state) {
  (void)state;
  char name[32];
  for (int i = 0; i < STABLE; i++) {
    snprintf(name, sizeof name, "stable%d", i);
    snprintf(race.stable_addr[i], sizeof race.stable_addr[i], "stable%d@stable.example", i);
    race.stable[i] = add_key(name, race.stable_addr[i], NULL);
  }
  for (int i = 0; i < CHURN; i++) {
    snprintf(name, sizeof name, "churn%d", i);
    snprintf(race.churn_addr[i], sizeof race.churn_addr[i], "churn%d@churn.example", i);
    race.churn[i] = make_cert(name, race.churn_addr[i], NULL);
  }
  race.stop = 0;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  size_t n = (size_t)(cores < 2 ? 2 : cores > MAX_READERS - 2 ? MAX_READERS - 2 : cores) + 2;
  struct race_reader readers[MAX_READERS] = {{0}};
  struct race_writer w = {0};
  for (size_t i = 0; i < n; i++) {
    readers[i].id = (unsigned)i;
    assert_int_equal(pthread_create(&readers[i].t, NULL, race_read, &readers[i]), 0);
  }
  assert_int_equal(pthread_create(&w.t, NULL, race_write, &w), 0);
  pthread_join(w.t, NULL);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    pthread_join(readers[i].t, NULL);
    assert_int_equal(readers[i].lost, 0);
    assert_int_equal(readers[i].errors, 0);
    assert_true(readers[i].lookups > 0);
    total += readers[i].lookups;
  }
  struct keycache_stats s = stats();
  fprintf(stderr,
          "# %zu readers: %zu lookups of stable keys; writer: %zu rounds, %zu flushes; cache: %zu hits, %zu misses, "
          "%zu evictions\n",
          n, total, w.rounds, w.flushes, s.hits, s.misses, s.evictions);
  assert_int_equal(w.errors, 0);
  assert_true(s.hits > 0); /* the lock-free path ran while the writer did */
  assert_true(w.flushes > 0);
  assert_true(s.evictions > 0);
  assert_true(s.entries <= 16);
  for (int i = 0; i < STABLE; i++) X509_free(race.stable[i]);
  for (int i = 0; i < CHURN; i++) X509_free(race.churn[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_hit_returns_store_certificate, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_address_tier_beats_domain_tier, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_domain_certificate_answers_any_address, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_not_found_is_cached, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_invalidate_drops_one_address, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_invalidate_drops_one_domain, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_flush_drops_everything, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_spellings_share_entries, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_generation_is_remembered, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_found_entry_stale_at_not_after, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_negative_entry_asked_again_after_ttl, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_invalid_addresses, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_eviction_keeps_referenced_entries, setup_small, teardown_test),
      cmocka_unit_test_setup_teardown(test_collect_used_reports_harvested_answers, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_collect_used_keeps_marks_of_removed_entries, setup_test, teardown_test),
      cmocka_unit_test_setup_teardown(test_readers_never_lose_a_key_while_writer_churns, setup_race, teardown_test),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
