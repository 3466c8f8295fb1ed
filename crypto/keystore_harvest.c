/*
 * keystore_harvest - harvested public keys (R17-R21), the alerts they
 * raise (R19) and the store's generation counter.  The rest of the key
 * store (opening, managed keys, CA lists, lookups) is keystore.c; both
 * share keystore_internal.h.  The contract is keystore.h.
 *
 * Databases (integers big-endian):
 *   harvested  key -> record: the active certificate of an address or
 *              domain (the key is lower-cased)
 *   held       key -> record: at most one candidate per key waiting for an
 *              administrator (a later hold replaces it); never used for mail
 *   by_used    8-byte last_used + key -> "": the active records in use
 *              order, so eviction (R20) walks the least recently used first
 *              and costs O(evicted), not a scan of every record
 *   alerts     8-byte time + 8-byte generation (unique: one alert per write
 *              transaction) -> version 1, 2-byte key length, key, text
 *   meta       "generation" and "harvest_bytes" -> 8 bytes each
 * A record: version 1, caps (4), added (8), last_used (8), notBefore of
 * the certificate (8), time of the last replacement (8, 0 for none), DER
 * length (4), DER.  harvest_bytes counts key + value bytes of harvested
 * and held records; by_used and alerts (at most KSH_ALERTS_MAX) are small
 * beside them and not counted.
 *
 * Callers: crypto/incoming.c (keystore_harvest_put, on crypto workers),
 * the daemon's keyring (touch, generation), sealctl (list, show, promote,
 * alerts).  Writes commit (fsync): never on a loop thread.
 *
 * Trusts nothing it reads: each record's version and lengths are checked
 * and its DER must parse exactly; a record that fails is not found (and
 * is overwritten by the next put, or evicted), never a crash.  A by_used
 * entry that no longer matches its record is dropped when eviction meets
 * it.  Certificates handed to put come from mail: the caller has judged
 * them (signature, chain, From, R18); this file checks that they name the
 * key they are filed under.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/err.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/keystore.h"
#include "crypto/keystore_internal.h"

#define KSH_VERSION 1
#define KSH_HEAD 41 /* version 1, caps 4, added 8, last_used 8, notBefore 8, replaced 8, DER length 4 */
#define KSH_DEFAULT_MAX ((size_t)512 * 1024 * 1024)
#define KSH_WINDOW (48 * 3600L) /* R19: a second replacement this soon is held and alerted */
/* Seeing the same certificate again rewrites its use time at most this
 * often: every signed message from a sender is a put, and a commit is an
 * fsync.  Lookups report use through keystore_harvest_touch in batches. */
#define KSH_SAME_SLACK 3600L
#define KSH_ALERTS_MAX 1000 /* oldest dropped beyond: an attacker must not grow the store */

struct ksh_rec {
  unsigned caps;
  int64_t added, last_used, not_before, replaced;
  const unsigned char *der; /* borrowed: LMDB's memory or the caller's */
  size_t der_len;
};

static void ksh__be32_put(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static uint32_t ksh__be32_get(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- records ---------------------------------------------------------------- */

static int ksh__decode(const MDB_val *v, struct ksh_rec *r) {
  const unsigned char *p = v->mv_data;
  if (v->mv_size <= KSH_HEAD || p[0] != KSH_VERSION) return SG_ECORRUPT;
  r->caps = ksh__be32_get(p + 1);
  r->added = (int64_t)ks__be64_get(p + 5);
  r->last_used = (int64_t)ks__be64_get(p + 13);
  r->not_before = (int64_t)ks__be64_get(p + 21);
  r->replaced = (int64_t)ks__be64_get(p + 29);
  r->der_len = ksh__be32_get(p + 37);
  r->der = p + KSH_HEAD;
  return r->der_len == v->mv_size - KSH_HEAD ? 0 : SG_ECORRUPT;
}

static int ksh__encode(const struct ksh_rec *r, unsigned char **out, size_t *len_out) {
  if (r->der_len == 0 || r->der_len > UINT32_MAX - KSH_HEAD) return SG_EINVAL;
  unsigned char *p = malloc(KSH_HEAD + r->der_len);
  if (!p) return SG_ENOMEM;
  p[0] = KSH_VERSION;
  ksh__be32_put(p + 1, r->caps);
  ks__be64_put(p + 5, (uint64_t)r->added);
  ks__be64_put(p + 13, (uint64_t)r->last_used);
  ks__be64_put(p + 21, (uint64_t)r->not_before);
  ks__be64_put(p + 29, (uint64_t)r->replaced);
  ksh__be32_put(p + 37, (uint32_t)r->der_len);
  memcpy(p + KSH_HEAD, r->der, r->der_len);
  *out = p;
  *len_out = KSH_HEAD + r->der_len;
  return 0;
}

/* The record's certificate, or NULL if its DER is not exactly one. */
static X509 *ksh__cert(const struct ksh_rec *r) {
  const unsigned char *d = r->der;
  X509 *x = d2i_X509(NULL, &d, (long)r->der_len);
  if (x && d == r->der + r->der_len) return x;
  X509_free(x);
  ERR_clear_error();
  return NULL;
}

static bool ksh__parses(const struct ksh_rec *r) {
  X509 *x = ksh__cert(r);
  bool ok = x != NULL;
  X509_free(x);
  return ok;
}

static bool ksh__same_der(const struct ksh_rec *r, const unsigned char *der, size_t len) {
  return r->der_len == len && memcmp(r->der, der, len) == 0;
}

/* Record of key in dbi: 0 (decoded), SG_ENOTFOUND, SG_ECORRUPT (*v still
 * holds the raw value, for its size) or another store error. */
static int ksh__get(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *v, struct ksh_rec *r) {
  size_t n = strlen(key);
  if (n == 0 || n > KS_ID_MAX) return SG_ENOTFOUND;
  MDB_val k = {n, (void *)key};
  int rc = mdb_get(txn, dbi, &k, v);
  if (rc) return ks__rc(rc);
  return ksh__decode(v, r);
}

/* ---- meta: generation and byte total ------------------------------------------ */

static int ksh__meta_get(struct keystore *ks, MDB_txn *txn, const char *name, uint64_t *out) {
  MDB_val k = {strlen(name), (void *)name}, v;
  *out = 0;
  int rc = mdb_get(txn, ks->meta, &k, &v);
  if (rc == 0 && v.mv_size == 8) *out = ks__be64_get(v.mv_data);
  return rc == MDB_NOTFOUND ? 0 : rc; /* a malformed value counts from 0 again */
}

static int ksh__meta_put(struct keystore *ks, MDB_txn *txn, const char *name, uint64_t value) {
  unsigned char b[8];
  ks__be64_put(b, value);
  MDB_val k = {strlen(name), (void *)name}, v = {8, b};
  return mdb_put(txn, ks->meta, &k, &v, 0);
}

int ks__generation_bump(struct keystore *ks, MDB_txn *txn) {
  if (!ks->harvest_dbs) return 0;
  uint64_t g;
  int rc = ksh__meta_get(ks, txn, "generation", &g);
  return rc ? rc : ksh__meta_put(ks, txn, "generation", g + 1);
}

int keystore_generation(struct keystore *ks, unsigned long *gen_out) {
  *gen_out = 0;
  MDB_txn *txn;
  int rc = ks__begin(ks, false, &txn, NULL, 0);
  if (rc) return rc == SG_ENOTFOUND ? 0 : rc; /* no database yet: generation 0 */
  uint64_t g = 0;
  if (ks->harvest_dbs) rc = ks__rc(ksh__meta_get(ks, txn, "generation", &g));
  mdb_txn_abort(txn);
  *gen_out = (unsigned long)g;
  return rc;
}

int ks__harvest_dbis(struct keystore *ks, MDB_txn *txn, bool create) {
  unsigned c = create ? MDB_CREATE : 0;
  int rc;
  if (!(rc = mdb_dbi_open(txn, "harvested", c, &ks->harvested)) && !(rc = mdb_dbi_open(txn, "held", c, &ks->held)) &&
      !(rc = mdb_dbi_open(txn, "by_used", c, &ks->by_used)) && !(rc = mdb_dbi_open(txn, "alerts", c, &ks->alerts)) &&
      !(rc = mdb_dbi_open(txn, "meta", c, &ks->meta)))
    ks->harvest_dbs = true;
  return rc == MDB_NOTFOUND && !create ? 0 : rc;
}

/* ---- keys ------------------------------------------------------------------- */

/* A harvest key as stored: lower-cased, 1..KS_ID_MAX printable bytes. */
static int ksh__key(const char *in, char *out, char *err, size_t errlen) {
  size_t n = in ? strlen(in) : 0;
  if (n == 0 || n > KS_ID_MAX) return sgerr_fail(err, errlen, SG_EINVAL, "harvest key must be 1-%d bytes", KS_ID_MAX);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)in[i] <= ' ' || in[i] == 0x7f)
      return sgerr_fail(err, errlen, SG_EINVAL, "harvest key holds a space or control character");
  ks__lower(in, out);
  return 0;
}

struct ksh_names {
  const char *key;
  bool email;
};

/* An address key: a SAN e-mail (or subject emailAddress) equal to it; a
 * domain key: a SAN DNS name equal to it, or a wildcard one label up. */
static int ksh__names_one(void *arg, enum ks_kind kind, const char *id) {
  const struct ksh_names *n = arg;
  if (n->email) return kind == KS_EMAIL && strcasecmp(id, n->key) == 0;
  return kind == KS_DOMAIN && cert_dns_matches(id, n->key);
}

/* A certificate filed under a key it does not name would be served for a
 * recipient it was never issued to: refused, whatever the caller decided. */
static int ksh__names_key(X509 *x, const char *key, char *err, size_t errlen) {
  struct ksh_names n = {key, strchr(key, '@') != NULL};
  if (ks__ids(x, ksh__names_one, &n) == 1) return 0;
  return sgerr_fail(err, errlen, SG_EINVAL, "certificate does not name %s '%s'", n.email ? "the address" : "the domain",
                    key);
}

/* by_used key: 8-byte time, then the key. */
static MDB_val ksh__used_key(unsigned char *buf, int64_t t, const char *key) {
  size_t n = strlen(key);
  ks__be64_put(buf, (uint64_t)t);
  memcpy(buf + 8, key, n);
  return (MDB_val){8 + n, buf};
}

/* Move key's by_used entry from old_t (< 0: none) to new_t. */
static int ksh__used_move(struct keystore *ks, MDB_txn *txn, const char *key, int64_t old_t, int64_t new_t) {
  unsigned char buf[8 + KS_ID_MAX];
  MDB_val k, empty = {0, NULL};
  int rc = 0;
  if (old_t >= 0) {
    k = ksh__used_key(buf, old_t, key);
    rc = mdb_del(txn, ks->by_used, &k, NULL);
    if (rc == MDB_NOTFOUND) rc = 0;
  }
  if (rc == 0) {
    k = ksh__used_key(buf, new_t, key);
    rc = mdb_put(txn, ks->by_used, &k, &empty, 0);
  }
  return rc;
}

/* ---- put -------------------------------------------------------------------- */

/* One keystore_harvest_put in progress. */
struct ksh_put {
  struct keystore *ks;
  MDB_txn *txn;
  const char *key; /* lower-cased */
  X509 *cert;
  unsigned char *der; /* the new certificate's DER (owned) */
  size_t der_len;
  unsigned caps;
  time_t now;
  int64_t not_before;
  const struct keystore_harvest_opts *o;
  int64_t delta; /* change of harvest_bytes */
  bool changed;  /* a write that can change an answer: the generation moves */
  char *err;
  size_t errlen;
};

static int ksh__read_fail(struct ksh_put *p, int rc) {
  return sgerr_fail(p->err, p->errlen, rc, "reading the key store: %s", sgerr_str(rc));
}

/* The new certificate as a fresh record (active or held). */
static struct ksh_rec ksh__fresh(const struct ksh_put *p, int64_t replaced) {
  return (struct ksh_rec){p->caps, p->now, p->now, p->not_before, replaced, p->der, p->der_len};
}

/* Write r under the put's key in dbi (over a value of old_size bytes,
 * key included; 0 if none).  r is encoded before anything is written, so
 * it may point into LMDB's memory. */
static int ksh__store(struct ksh_put *p, MDB_dbi dbi, const struct ksh_rec *r, size_t old_size) {
  unsigned char *val;
  size_t len;
  int rc = ksh__encode(r, &val, &len);
  if (rc) return sgerr_fail(p->err, p->errlen, rc, "harvested record cannot be encoded");
  MDB_val k = {strlen(p->key), (void *)p->key}, v = {len, val};
  int mrc = mdb_put(p->txn, dbi, &k, &v, 0);
  free(val);
  if (mrc) return ks__mdb_fail(p->err, p->errlen, mrc, "writing the key store");
  p->delta += (int64_t)(k.mv_size + len) - (int64_t)old_size;
  return 0;
}

/* The active record: stored, and its by_used entry moved from old_used. */
static int ksh__store_active(struct ksh_put *p, const struct ksh_rec *r, int64_t old_used, size_t old_size) {
  int rc = ksh__store(p, p->ks->harvested, r, old_size);
  if (rc == 0 && (rc = ksh__used_move(p->ks, p->txn, p->key, old_used, r->last_used)) != 0)
    rc = ks__mdb_fail(p->err, p->errlen, rc, "writing the key store");
  return rc;
}

static int ksh__drop(struct ksh_put *p, MDB_dbi dbi, size_t old_size) {
  MDB_val k = {strlen(p->key), (void *)p->key};
  int rc = mdb_del(p->txn, dbi, &k, NULL);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return ks__mdb_fail(p->err, p->errlen, rc, "writing the key store");
  p->delta -= (int64_t)old_size;
  return 0;
}

/* Record an alert (R19) in this transaction; the oldest go beyond the cap. */
static int ksh__alert(struct ksh_put *p, const char *text) {
  uint64_t gen;
  int rc = ksh__meta_get(p->ks, p->txn, "generation", &gen);
  size_t kl = strlen(p->key), tl = strlen(text);
  unsigned char kb[16], *val = malloc(3 + kl + tl);
  if (!val) return sgerr_fail(p->err, p->errlen, SG_ENOMEM, "out of memory");
  ks__be64_put(kb, (uint64_t)p->now);
  ks__be64_put(kb + 8, gen);
  val[0] = 1;
  val[1] = (unsigned char)(kl >> 8);
  val[2] = (unsigned char)kl;
  memcpy(val + 3, p->key, kl);
  memcpy(val + 3 + kl, text, tl);
  MDB_val k = {16, kb}, v = {3 + kl + tl, val};
  if (rc == 0) rc = mdb_put(p->txn, p->ks->alerts, &k, &v, 0);
  free(val);
  MDB_stat st;
  MDB_cursor *cur;
  if (rc == 0 && (rc = mdb_stat(p->txn, p->ks->alerts, &st)) == 0 && st.ms_entries > KSH_ALERTS_MAX &&
      (rc = mdb_cursor_open(p->txn, p->ks->alerts, &cur)) == 0) {
    for (size_t n = st.ms_entries; rc == 0 && n > KSH_ALERTS_MAX; n--)
      if ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) rc = mdb_cursor_del(cur, 0);
    mdb_cursor_close(cur);
  }
  return rc ? ks__mdb_fail(p->err, p->errlen, rc, "recording an alert") : 0;
}

static void ksh__iso(int64_t t, char *out, size_t cap) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (!gmtime_r(&tt, &tm) || !strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(out, cap, "%lld", (long long)t);
}

static int ksh__alert_second(struct ksh_put *p, int64_t replaced) {
  struct cert_info ci;
  char when[32], text[1400];
  ksh__iso(replaced, when, sizeof when);
  if (cert_info_get(p->cert, &ci) != 0) return sgerr_fail(p->err, p->errlen, SG_ENOMEM, "out of memory");
  snprintf(text, sizeof text, "another updated key for %s within 48 hours of the last replacement (%s): held for "
           "an administrator, not used; its certificate: subject %s, issuer %s, not before %s, SHA256 %s",
           p->key, when, ci.subject, ci.issuer, ci.not_before, ci.fingerprint);
  cert_info_free(&ci);
  return ksh__alert(p, text);
}

/* The same certificate again: only its caps and (at most hourly) its use
 * time change.  No write at all in the common case. */
static int ksh__put_same(struct ksh_put *p, const struct ksh_rec *a, size_t a_size, bool *write) {
  bool caps_changed = a->caps != p->caps;
  *write = caps_changed || p->now - a->last_used >= KSH_SAME_SLACK;
  if (!*write) return 0;
  struct ksh_rec n = *a;
  n.caps = p->caps;
  if (p->now > n.last_used) n.last_used = p->now;
  p->changed = caps_changed;
  return ksh__store_active(p, &n, a->last_used, a_size);
}

/* A different certificate for a known key (the header's rules). */
static int ksh__put_other(struct ksh_put *p, const struct ksh_rec *a, size_t a_size,
                          enum keystore_harvest_outcome *out) {
  MDB_val hv;
  struct ksh_rec h;
  int hrc = ksh__get(p->txn, p->ks->held, p->key, &hv, &h);
  if (hrc && hrc != SG_ENOTFOUND && hrc != SG_ECORRUPT) return ksh__read_fail(p, hrc);
  size_t h_size = hrc == SG_ENOTFOUND ? 0 : strlen(p->key) + hv.mv_size;
  bool held_same = hrc == 0 && ksh__same_der(&h, p->der, p->der_len);
  /* A clock that went back counts as within the window: the cautious side. */
  bool recent = a->replaced != 0 && p->now - a->replaced < KSH_WINDOW;
  int rc;
  if (!recent && p->o->updated_keys && !p->o->unvalidated && p->not_before > a->not_before) {
    struct ksh_rec n = ksh__fresh(p, p->now);
    *out = KEYSTORE_HARVEST_REPLACED;
    p->changed = true;
    rc = ksh__store_active(p, &n, a->last_used, a_size);
    return rc == 0 && held_same ? ksh__drop(p, p->ks->held, h_size) : rc;
  }
  *out = KEYSTORE_HARVEST_HELD;
  if (held_same) return 0; /* already held (and alerted once): no alert per message */
  struct ksh_rec n = ksh__fresh(p, 0);
  p->changed = true;
  if ((rc = ksh__store(p, p->ks->held, &n, h_size)) != 0 || !recent) return rc;
  *out = KEYSTORE_HARVEST_ALERT;
  return ksh__alert_second(p, a->replaced);
}

/* A key a managed key answers for with another certificate: the new one
 * is held (once; a hold of the same certificate stays as it is). */
static int ksh__put_shadowed(struct ksh_put *p, enum keystore_harvest_outcome *out) {
  MDB_val hv;
  struct ksh_rec h;
  int rc = ksh__get(p->txn, p->ks->held, p->key, &hv, &h);
  if (rc && rc != SG_ENOTFOUND && rc != SG_ECORRUPT) return ksh__read_fail(p, rc);
  *out = KEYSTORE_HARVEST_HELD;
  if (rc == 0 && ksh__same_der(&h, p->der, p->der_len)) return 0;
  struct ksh_rec n = ksh__fresh(p, 0);
  p->changed = true;
  return ksh__store(p, p->ks->held, &n, rc == SG_ENOTFOUND ? 0 : strlen(p->key) + hv.mv_size);
}

/* An unknown key (or one whose record no longer decodes). */
static int ksh__put_new(struct ksh_put *p, size_t a_size, enum keystore_harvest_outcome *out) {
  X509 *managed = NULL;
  int rc = ks__managed_answer(p->ks, p->txn, p->key, p->now, &managed);
  if (rc) return ksh__read_fail(p, rc);
  unsigned char *mder = NULL;
  int mlen = managed ? i2d_X509(managed, &mder) : 0;
  bool other = managed && (mlen != (int)p->der_len || memcmp(mder, p->der, p->der_len) != 0);
  OPENSSL_free(mder);
  X509_free(managed);
  if (other) return ksh__put_shadowed(p, out);
  *out = KEYSTORE_HARVEST_ADDED;
  MDB_val hv;
  struct ksh_rec h;
  rc = ksh__get(p->txn, p->ks->held, p->key, &hv, &h);
  if (rc && rc != SG_ENOTFOUND && rc != SG_ECORRUPT) return ksh__read_fail(p, rc);
  /* A hold without an active record is debris of a corrupt record. */
  if (rc != SG_ENOTFOUND && (rc = ksh__drop(p, p->ks->held, strlen(p->key) + hv.mv_size)) != 0) return rc;
  struct ksh_rec n = ksh__fresh(p, 0);
  p->changed = true;
  return ksh__store_active(p, &n, -1, a_size);
}

static int ksh__put_decide(struct ksh_put *p, enum keystore_harvest_outcome *out, bool *write) {
  MDB_val av;
  struct ksh_rec a;
  int rc = ksh__get(p->txn, p->ks->harvested, p->key, &av, &a);
  *write = true;
  if (rc == SG_ENOTFOUND || rc == SG_ECORRUPT || (rc == 0 && !ksh__parses(&a)))
    return ksh__put_new(p, rc == SG_ENOTFOUND ? 0 : strlen(p->key) + av.mv_size, out);
  if (rc) return ksh__read_fail(p, rc);
  size_t a_size = strlen(p->key) + av.mv_size;
  if (ksh__same_der(&a, p->der, p->der_len)) {
    *out = KEYSTORE_HARVEST_SAME;
    return ksh__put_same(p, &a, a_size, write);
  }
  return ksh__put_other(p, &a, a_size, out);
}

/* ---- eviction (R20) ------------------------------------------------------------- */

/* Remove one key's active and held records (after its by_used entry). */
static int ksh__evict_key(struct ksh_put *p, const char *key, bool *evicted) {
  MDB_dbi dbis[2] = {p->ks->harvested, p->ks->held};
  MDB_val k = {strlen(key), (void *)key}, v;
  *evicted = false;
  for (int i = 0; i < 2; i++) {
    int rc = mdb_get(p->txn, dbis[i], &k, &v);
    if (rc == MDB_NOTFOUND) continue;
    size_t size = k.mv_size + v.mv_size;
    if (rc || (rc = mdb_del(p->txn, dbis[i], &k, NULL)) != 0) return rc;
    p->delta -= (int64_t)size;
    if (i == 0) *evicted = true;
  }
  return 0;
}

/* Walk by_used from the least recently used until the harvested bytes
 * are at 90 % of max; never the key just put.  An entry whose record has
 * another use time (or none) is stale: dropped, nothing evicted. */
static int ksh__evict(struct ksh_put *p, uint64_t bytes0, size_t max, size_t *n_out) {
  int64_t target = (int64_t)(max / 10 * 9);
  MDB_cursor *cur;
  int rc = mdb_cursor_open(p->txn, p->ks->by_used, &cur);
  if (rc) return ks__mdb_fail(p->err, p->errlen, rc, "evicting");
  MDB_val k, v;
  MDB_cursor_op op = MDB_FIRST;
  char key[KS_ID_MAX + 1];
  while (rc == 0 && (int64_t)bytes0 + p->delta > target && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
    op = MDB_NEXT; /* after mdb_cursor_del, NEXT yields the entry that followed */
    size_t n = k.mv_size - 8;
    if (k.mv_size <= 8 || n > KS_ID_MAX || memchr((char *)k.mv_data + 8, '\0', n)) {
      rc = mdb_cursor_del(cur, 0); /* not ours: drop */
      continue;
    }
    int64_t t = (int64_t)ks__be64_get(k.mv_data);
    memcpy(key, (char *)k.mv_data + 8, n);
    key[n] = '\0';
    if (strcmp(key, p->key) == 0) continue;
    MDB_val av;
    struct ksh_rec a;
    int arc = ksh__get(p->txn, p->ks->harvested, key, &av, &a);
    bool stale = arc == SG_ENOTFOUND || (arc == 0 && a.last_used != t), evicted = false;
    if ((rc = mdb_cursor_del(cur, 0)) == 0 && !stale) rc = ksh__evict_key(p, key, &evicted);
    if (evicted) ++*n_out;
  }
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) rc = 0;
  return rc ? ks__mdb_fail(p->err, p->errlen, rc, "evicting") : 0;
}

static int ksh__put_txn(struct ksh_put *p, enum keystore_harvest_outcome *out, size_t *evicted, bool *write) {
  uint64_t bytes;
  int rc = ksh__meta_get(p->ks, p->txn, "harvest_bytes", &bytes);
  if (rc) return ks__mdb_fail(p->err, p->errlen, rc, "reading the key store");
  if ((rc = ksh__put_decide(p, out, write)) != 0 || !*write) return rc;
  size_t max = p->o->max_bytes ? p->o->max_bytes : KSH_DEFAULT_MAX;
  if ((int64_t)bytes + p->delta > (int64_t)max && (rc = ksh__evict(p, bytes, max, evicted)) != 0) return rc;
  int64_t total = (int64_t)bytes + p->delta;
  rc = ksh__meta_put(p->ks, p->txn, "harvest_bytes", total > 0 ? (uint64_t)total : 0);
  return rc ? ks__mdb_fail(p->err, p->errlen, rc, "writing the key store") : 0;
}

static int64_t ksh__time(const ASN1_TIME *t) {
  struct tm tm;
  if (!ASN1_TIME_to_tm(t, &tm)) return 0;
  return (int64_t)timegm(&tm);
}

int keystore_harvest_put(struct keystore *ks, const char *key, X509 *cert, unsigned caps, time_t now,
                         const struct keystore_harvest_opts *o, enum keystore_harvest_outcome *outcome_out,
                         size_t *evicted_out, char *err, size_t errlen) {
  static const struct keystore_harvest_opts defaults = {false, 0, false};
  size_t evicted = 0;
  if (evicted_out) *evicted_out = 0;
  char lkey[KS_ID_MAX + 1];
  int rc = ksh__key(key, lkey, err, errlen);
  if (rc || (rc = ks__cert_check(cert, err, errlen)) || (rc = ksh__names_key(cert, lkey, err, errlen))) return rc;
  struct ksh_put p = {.ks = ks, .key = lkey, .cert = cert, .caps = caps & ~KEYSTORE_CAP_HARVESTED, .now = now,
                      .not_before = ksh__time(X509_get0_notBefore(cert)), .o = o ? o : &defaults, .err = err,
                      .errlen = errlen};
  int len = i2d_X509(cert, &p.der);
  if (len <= 0) return sgerr_fail(err, errlen, SG_EINVAL, "certificate cannot be encoded");
  p.der_len = (size_t)len;
  bool write = false;
  enum keystore_harvest_outcome out = KEYSTORE_HARVEST_SAME;
  if ((rc = ks__begin(ks, true, &p.txn, err, errlen)) == 0) {
    rc = ksh__put_txn(&p, &out, &evicted, &write);
    if (rc || !write) mdb_txn_abort(p.txn);
    else rc = ks__commit(ks, p.txn, p.changed, err, errlen);
  }
  OPENSSL_free(p.der);
  if (rc == 0 && outcome_out) *outcome_out = out;
  if (rc == 0 && evicted_out) *evicted_out = evicted;
  return rc;
}

/* ---- reading ---------------------------------------------------------------- */

int ks__harvest_lookup(struct keystore *ks, MDB_txn *txn, const char *key, time_t now, X509 **cert_out,
                       unsigned *caps_out) {
  if (!ks->harvest_dbs) return 0;
  MDB_val v;
  struct ksh_rec r;
  int rc = ksh__get(txn, ks->harvested, key, &v, &r);
  if (rc == SG_ENOTFOUND || rc == SG_ECORRUPT) return 0;
  if (rc) return rc;
  X509 *x = ksh__cert(&r);
  if (!x || !ks__usable(x, now)) {
    X509_free(x);
    return 0;
  }
  *cert_out = x;
  if (caps_out) *caps_out = r.caps | KEYSTORE_CAP_HARVESTED;
  return 0;
}

/* fn with one record (k, v of dbi held or not); a record that does not
 * decode is skipped, as lookups skip it. */
static int ksh__emit(const MDB_val *k, const MDB_val *v, bool held, keystore_harvest_fn fn, void *arg) {
  struct ksh_rec r;
  struct keystore_harvested h = {.held = held};
  if (k->mv_size == 0 || k->mv_size >= sizeof h.key || memchr(k->mv_data, '\0', k->mv_size) ||
      ksh__decode(v, &r) != 0 || !(h.cert = ksh__cert(&r)))
    return 0;
  memcpy(h.key, k->mv_data, k->mv_size);
  h.key[k->mv_size] = '\0';
  h.caps = r.caps;
  h.added = (time_t)r.added;
  h.last_used = (time_t)r.last_used;
  int rc = fn(arg, &h);
  X509_free(h.cert);
  return rc;
}

/* Both databases in key order, merged: an active record before the held
 * one of the same key, a held one without an active record in its place. */
static int ksh__merge(struct keystore *ks, MDB_txn *txn, keystore_harvest_fn fn, void *arg) {
  MDB_cursor *ca, *ch;
  int rc = mdb_cursor_open(txn, ks->harvested, &ca);
  if (rc) return ks__rc(rc);
  if ((rc = mdb_cursor_open(txn, ks->held, &ch)) != 0) {
    mdb_cursor_close(ca);
    return ks__rc(rc);
  }
  MDB_val ak, av, hk, hv;
  int arc = mdb_cursor_get(ca, &ak, &av, MDB_FIRST), hrc = mdb_cursor_get(ch, &hk, &hv, MDB_FIRST);
  rc = 0;
  while (rc == 0 && (arc == 0 || hrc == 0)) {
    bool active = arc == 0 && (hrc != 0 || mdb_cmp(txn, ks->harvested, &ak, &hk) <= 0);
    if (active) {
      rc = ksh__emit(&ak, &av, false, fn, arg);
      arc = mdb_cursor_get(ca, &ak, &av, MDB_NEXT);
    } else {
      rc = ksh__emit(&hk, &hv, true, fn, arg);
      hrc = mdb_cursor_get(ch, &hk, &hv, MDB_NEXT);
    }
  }
  if (rc == 0 && arc != MDB_NOTFOUND) rc = ks__rc(arc);
  if (rc == 0 && hrc != MDB_NOTFOUND) rc = ks__rc(hrc);
  mdb_cursor_close(ca);
  mdb_cursor_close(ch);
  return rc;
}

/* A read transaction on a store that has harvest databases; SG_ENOTFOUND
 * when there is nothing to read. */
static int ksh__read_begin(struct keystore *ks, MDB_txn **txn) {
  int rc = ks__begin(ks, false, txn, NULL, 0);
  if (rc == 0 && !ks->harvest_dbs) {
    mdb_txn_abort(*txn);
    rc = SG_ENOTFOUND;
  }
  return rc;
}

int keystore_harvest_each(struct keystore *ks, keystore_harvest_fn fn, void *arg) {
  MDB_txn *txn;
  int rc = ksh__read_begin(ks, &txn);
  if (rc) return rc == SG_ENOTFOUND ? 0 : rc;
  rc = ksh__merge(ks, txn, fn, arg);
  mdb_txn_abort(txn);
  return rc;
}

int keystore_harvest_get(struct keystore *ks, const char *key, keystore_harvest_fn fn, void *arg) {
  char lkey[KS_ID_MAX + 1];
  if (ksh__key(key, lkey, NULL, 0) != 0) return SG_ENOTFOUND;
  MDB_txn *txn;
  int rc = ksh__read_begin(ks, &txn);
  if (rc) return rc;
  MDB_dbi dbis[2] = {ks->harvested, ks->held};
  MDB_val k = {strlen(lkey), lkey}, v;
  struct ksh_rec r;
  bool found = false;
  for (int i = 0; rc == 0 && i < 2; i++) {
    int mrc = mdb_get(txn, dbis[i], &k, &v);
    if (mrc == MDB_NOTFOUND) continue;
    if (mrc) rc = ks__rc(mrc);
    else if (ksh__decode(&v, &r) == 0 && ksh__parses(&r)) found = true, rc = ksh__emit(&k, &v, i == 1, fn, arg);
  }
  mdb_txn_abort(txn);
  return rc == 0 && !found ? SG_ENOTFOUND : rc;
}

/* ---- promote, touch --------------------------------------------------------- */

/* The held certificate becomes the active record (keeping the last
 * replacement time of the record it replaces: an administrator's choice
 * is not an arrival for R19), and the hold is cleared. */
static int ksh__promote_held(struct ksh_put *p, const struct ksh_rec *h, size_t h_size, const MDB_val *av) {
  struct ksh_rec a, n = *h;
  bool has_a = av->mv_size && ksh__decode(av, &a) == 0;
  n.last_used = p->now;
  n.replaced = has_a ? a.replaced : 0;
  uint64_t bytes;
  int rc = ksh__meta_get(p->ks, p->txn, "harvest_bytes", &bytes);
  if (rc) return ks__mdb_fail(p->err, p->errlen, rc, "reading the key store");
  size_t a_size = av->mv_size ? strlen(p->key) + av->mv_size : 0;
  if ((rc = ksh__store_active(p, &n, has_a ? a.last_used : -1, a_size)) != 0 ||
      (rc = ksh__drop(p, p->ks->held, h_size)) != 0)
    return rc;
  int64_t total = (int64_t)bytes + p->delta;
  rc = ksh__meta_put(p->ks, p->txn, "harvest_bytes", total > 0 ? (uint64_t)total : 0);
  return rc ? ks__mdb_fail(p->err, p->errlen, rc, "writing the key store") : 0;
}

static int ksh__promote_txn(struct ksh_put *p, const char *name) {
  MDB_val av = {0, NULL}, hv;
  struct ksh_rec a, h;
  int arc = ksh__get(p->txn, p->ks->harvested, p->key, &av, &a);
  int hrc = ksh__get(p->txn, p->ks->held, p->key, &hv, &h);
  if (arc && arc != SG_ENOTFOUND && arc != SG_ECORRUPT) return ksh__read_fail(p, arc);
  if (hrc && hrc != SG_ENOTFOUND && hrc != SG_ECORRUPT) return ksh__read_fail(p, hrc);
  X509 *x = hrc == 0 ? ksh__cert(&h) : NULL;
  bool from_held = x != NULL;
  if (!x && arc == 0) x = ksh__cert(&a);
  if (!x) return sgerr_fail(p->err, p->errlen, SG_ENOTFOUND, "no harvested key for '%s'", p->key);
  if (arc == SG_ENOTFOUND) av.mv_size = 0;
  int rc = 0;
  /* The harvest records first: their values point into LMDB's memory,
   * which the managed key's write may move. */
  if (from_held) rc = ksh__promote_held(p, &h, strlen(p->key) + hv.mv_size, &av);
  if (rc == 0) rc = ks__store(p->ks, p->txn, name, x, false, p->err, p->errlen);
  X509_free(x);
  return rc;
}

int keystore_harvest_promote(struct keystore *ks, const char *key, const char *name, time_t now, char *err,
                             size_t errlen) {
  char lkey[KS_ID_MAX + 1];
  int rc = ksh__key(key, lkey, err, errlen);
  if (rc || (rc = keystore_name_check(name, err, errlen))) return rc;
  struct ksh_put p = {.ks = ks, .key = lkey, .now = now, .err = err, .errlen = errlen};
  if ((rc = ks__begin(ks, true, &p.txn, err, errlen)) != 0) return rc;
  if ((rc = ksh__promote_txn(&p, name)) != 0) {
    mdb_txn_abort(p.txn);
    return rc;
  }
  return ks__commit(ks, p.txn, true, err, errlen);
}

/* One key's use time, when it moves forward. */
static int ksh__touch_one(struct keystore *ks, MDB_txn *txn, const char *key, time_t now) {
  char lkey[KS_ID_MAX + 1];
  MDB_val v;
  struct ksh_rec r;
  if (ksh__key(key, lkey, NULL, 0) != 0) return 0;
  int rc = ksh__get(txn, ks->harvested, lkey, &v, &r);
  if (rc == SG_ENOTFOUND || rc == SG_ECORRUPT) return 0; /* evicted or corrupt: nothing to mark */
  if (rc || r.last_used >= now) return rc;
  unsigned char *copy = malloc(v.mv_size); /* v is LMDB's memory: copied before writing */
  if (!copy) return SG_ENOMEM;
  memcpy(copy, v.mv_data, v.mv_size);
  ks__be64_put(copy + 13, (uint64_t)now);
  MDB_val k = {strlen(lkey), lkey}, nv = {v.mv_size, copy};
  rc = ksh__used_move(ks, txn, lkey, r.last_used, now);
  if (rc == 0) rc = mdb_put(txn, ks->harvested, &k, &nv, 0);
  free(copy);
  return rc ? ks__rc(rc) : 0;
}

/* No generation bump: a use time changes no lookup answer, and bumping
 * would make every daemon drop its cache after each batch. */
int keystore_harvest_touch(struct keystore *ks, char *const *keys, size_t n, time_t now) {
  if (n == 0) return 0;
  MDB_txn *txn;
  int rc = ks__begin(ks, true, &txn, NULL, 0);
  if (rc) return rc;
  for (size_t i = 0; rc == 0 && i < n; i++) rc = ksh__touch_one(ks, txn, keys[i], now);
  if (rc) {
    mdb_txn_abort(txn);
    return rc;
  }
  return ks__commit(ks, txn, false, NULL, 0);
}

/* ---- alerts ----------------------------------------------------------------- */

/* One alert record; SG_ECORRUPT if malformed (then skipped). */
static int ksh__alert_emit(const MDB_val *k, const MDB_val *v, keystore_alert_fn fn, void *arg) {
  const unsigned char *p = v->mv_data;
  if (k->mv_size != 16 || v->mv_size < 3 || p[0] != 1) return SG_ECORRUPT;
  size_t kl = (size_t)p[1] << 8 | p[2];
  if (kl == 0 || kl > KS_ID_MAX || 3 + kl > v->mv_size || memchr(p + 3, '\0', kl)) return SG_ECORRUPT;
  size_t tl = v->mv_size - 3 - kl;
  char key[KS_ID_MAX + 1], *text = malloc(tl + 1);
  if (!text) return SG_ENOMEM;
  memcpy(key, p + 3, kl);
  key[kl] = '\0';
  memcpy(text, p + 3 + kl, tl);
  text[tl] = '\0';
  int rc = fn(arg, (time_t)ks__be64_get(k->mv_data), key, text);
  free(text);
  return rc;
}

int keystore_alert_each(struct keystore *ks, keystore_alert_fn fn, void *arg) {
  MDB_txn *txn;
  MDB_cursor *cur;
  int rc = ksh__read_begin(ks, &txn);
  if (rc) return rc == SG_ENOTFOUND ? 0 : rc;
  if ((rc = mdb_cursor_open(txn, ks->alerts, &cur)) != 0) {
    mdb_txn_abort(txn);
    return ks__rc(rc);
  }
  MDB_val k, v;
  int mrc;
  rc = 0;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && rc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    if ((rc = ksh__alert_emit(&k, &v, fn, arg)) == SG_ECORRUPT) rc = 0;
  if (rc == 0 && mrc != MDB_NOTFOUND) rc = ks__rc(mrc);
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return rc;
}
