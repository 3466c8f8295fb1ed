/*
 * keycache - the lock-free cache of recipients' encryption certificates in
 * front of the key store (keycache.h; DESIGN.md "Public keys").
 *
 * Owns one liburcu cds_lfht (memb flavour, auto-resize) of entries, each
 * the store's answer for one key of one tier: found (a certificate, the
 * entry's own reference, and its caps) or not found.  Called by every shard
 * and crypto worker (lookups) and by the keyring (invalidate, flush,
 * generation, collect_used).  Trusts the store's answers; addresses are
 * untrusted (they come from SMTP envelopes): they are only copied into a
 * bounded buffer and hashed with a per-cache random seed, so a sender
 * cannot choose keys that pile into one hash chain.
 *
 * Keys.  E-mail tier: the address with its domain lower-cased and its
 * local part as given, because the store's answer depends on the local
 * part's case (a SAN "Bob@x" matches "Bob@x" but not "bob@x");
 * lower-casing it too would let one spelling's answer serve another.
 * Domain tier: the lower-cased domain.  The hash folds ASCII case, so all
 * spellings of one address share a hash chain and keycache_invalidate can
 * drop every one of them.
 *
 * Freshness.  An entry answers lookups with asked <= now < asked + ttl,
 * where asked is the `now` of the lookup that filled it and ttl is 60 s,
 * or less so that a found certificate is never served at its notAfter.
 * The TTL bounds how long a certificate that became valid later
 * (notBefore), or a newer one, goes unseen; writes through our own
 * process invalidate at once.
 *
 * Concurrency.  Readers: rcu_read_lock, lookup, copy out, rcu_read_unlock;
 * their only shared writes are the CLOCK bit and the "used" mark, each
 * written only when clear.  Entries are immutable after publication except
 * those two bytes.  Writers (insert after a miss, invalidate, flush,
 * eviction, free) hold c->wlock, which readers never take; an unlinked
 * entry is freed by call_rcu after a grace period.  A miss asks the store
 * without the lock; it inserts only if no invalidate or flush ran since it
 * started (c->seq), so an answer read before a write can never be cached
 * after that write's invalidation.
 *
 * ThreadSanitizer: liburcu is not instrumented, so TSan cannot see the
 * ordering it provides.  Two things make that ordering visible, both in
 * our code, none suppressing a report: the entry's len is stored with
 * release after its fields are written and loaded with acquire before
 * they are read (publication; free on x86); under TSan only, readers and
 * retiring writers release a token before leaving and the call_rcu
 * callback acquires it before freeing (the grace period).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <urcu.h>
#include <urcu/rculfhash.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "crypto/keycache.h"
#include "crypto/keystore.h"

#define KEYCACHE__TTL 60             /* seconds an answer is trusted */
#define KEYCACHE__DEFAULT_MAX 65536
#define KEYCACHE__KEY_MAX 511        /* longer addresses go to the store uncached */
#define KEYCACHE__SLOTS 64           /* per-thread statistics slots */
#define KEYCACHE__GONE_MAX (1 << 20) /* bytes of removed entries' use marks kept for collect_used */

#if defined(__SANITIZE_THREAD__)
#define KEYCACHE__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KEYCACHE__TSAN 1
#endif
#endif
#ifdef KEYCACHE__TSAN
#include <sanitizer/tsan_interface.h>
static char keycache__grace; /* the TSan token standing for a grace period */
#define KEYCACHE__GP_RELEASE() __tsan_release(&keycache__grace)
#define KEYCACHE__GP_ACQUIRE() __tsan_acquire(&keycache__grace)
#else
#define KEYCACHE__GP_RELEASE() ((void)0)
#define KEYCACHE__GP_ACQUIRE() ((void)0)
#endif

#define KEYCACHE__LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define KEYCACHE__STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/*
 * An entry: what a hit reads first, in one 64-byte-aligned block, so that
 * a hit on a key of up to 23 bytes touches a single cache line (node,
 * then len and key in keycache__match, then the answer); what only
 * writers and call_rcu use is in a tail after the key (keycache__tail).
 */
struct keycache__entry {
  struct cds_lfht_node node; /* first: cds_lfht_for_each_entry's NULL stays NULL */
  X509 *cert;                /* the entry's reference; NULL: not found */
  time_t asked;              /* the `now` of the lookup that filled it */
  unsigned caps;
  uint16_t len;              /* published with release (keycache__match) */
  unsigned char ttl;         /* fresh while asked <= now < asked + ttl (1..60) */
  unsigned char referenced;  /* CLOCK bit: set by readers, cleared by the sweep */
  unsigned char used;        /* a harvested answer served since collect_used */
  char key[];                /* NUL-terminated */
};

struct keycache__tail {
  struct rcu_head rcu;
  struct keycache__entry *entry;
  unsigned long hash;
};

/* Hits and misses of the threads that map to one slot: one cache line per
 * slot, written by its threads only (relaxed load + store, so two threads
 * sharing a slot beyond 64 threads may lose a count, never corrupt one). */
struct keycache__slot {
  size_t hits, misses;
} __attribute__((aligned(64)));

struct keycache {
  /* Read by every lookup, written only by keycache_new. */
  struct cds_lfht *ht;
  struct keystore *ks; /* borrowed */
  size_t max_entries;
  uint64_t seed;
  /* The writers' state starts a cache line of its own, so that taking the
   * lock does not take the line above from the readers' caches.  Written
   * under wlock, read relaxed by anyone. */
  pthread_mutex_t wlock __attribute__((aligned(64)));
  size_t entries, evictions;
  unsigned long seq; /* +1 per invalidate or flush */
  unsigned long generation;
  /* Under wlock: the next entry the CLOCK sweep looks at (NULL: the
   * table's first), and lower-cased keys of removed entries that still
   * carried a "used" mark, NUL-separated, for collect_used. */
  struct keycache__entry *hand;
  struct buf gone;
  struct keycache__slot slots[KEYCACHE__SLOTS];
};

struct keycache__key {
  const char *s;
  size_t len;
};

/* ---- keys and hashing ------------------------------------------------------- */

/* ASCII upper case to lower case in eight bytes at once: a byte in
 * 'A'..'Z' (high bit clear) gets 0x20 added; no carry crosses bytes. */
static inline uint64_t keycache__fold(uint64_t w) {
  const uint64_t ones = 0x0101010101010101ull;
  uint64_t low7 = w & (0x7f * ones);
  uint64_t ge_a = low7 + (0x80 - 'A') * ones;
  uint64_t gt_z = low7 + (0x80 - 'Z' - 1) * ones;
  return w | (((ge_a & ~gt_z & ~w) & (0x80 * ones)) >> 2);
}

/* 64x64 -> 128-bit multiply folded to 64 bits (the wyhash mixing step). */
static inline uint64_t keycache__mix(uint64_t a, uint64_t b) {
  __uint128_t p = (__uint128_t)a * b;
  return (uint64_t)p ^ (uint64_t)(p >> 64);
}

static inline uint64_t keycache__load8(const char *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

static inline uint64_t keycache__load4(const char *p) {
  uint32_t w;
  memcpy(&w, p, 4);
  return w;
}

/*
 * Case-insensitive (ASCII), seeded: all spellings of a key hash alike, so
 * the raw address can be hashed while its normalised copy is being built.
 * Whole-word loads only (the tail as an overlapping last word, or two
 * overlapping halves below 8 bytes): a tail gathered byte by byte into a
 * word stalls on store forwarding, which perf showed as a tenth of a hit.
 */
static unsigned long keycache__hash(const struct keycache *c, const char *s, size_t len) {
  const uint64_t k1 = 0xa0761d6478bd642full, k2 = 0xe7037ed1a0b428dbull;
  uint64_t h = c->seed ^ len, a = 0, b = 0;
  if (len >= 8) {
    const char *last = s + len - 8;
    for (; s < last; s += 8) h = keycache__mix(keycache__fold(keycache__load8(s)) ^ k1, h ^ k2);
    a = keycache__load8(last);
  } else if (len >= 4) {
    a = keycache__load4(s);
    b = keycache__load4(s + len - 4);
  } else if (len) {
    a = (uint64_t)(unsigned char)s[0] << 16 | (uint64_t)(unsigned char)s[len >> 1] << 8 | (unsigned char)s[len - 1];
  }
  return keycache__mix(keycache__fold(a) ^ k1, keycache__fold(b) ^ h ^ k2);
}

/* Copy n bytes lower-casing ASCII, eight at a time where possible. */
static void keycache__lower(char *dst, const char *src, size_t n) {
  uint64_t w;
  for (; n >= 8; dst += 8, src += 8, n -= 8) {
    memcpy(&w, src, 8);
    w = keycache__fold(w);
    memcpy(dst, &w, 8);
  }
  for (; n; n--, src++) *dst++ = (char)(*src >= 'A' && *src <= 'Z' ? *src + 32 : *src);
}

static inline struct keycache__entry *keycache__entry_of(struct cds_lfht_node *n) {
  return caa_container_of(n, struct keycache__entry, node);
}

static size_t keycache__tail_offset(size_t len) {
  size_t a = _Alignof(struct keycache__tail);
  return (offsetof(struct keycache__entry, key) + len + 1 + a - 1) / a * a;
}

static struct keycache__tail *keycache__tail(struct keycache__entry *e) {
  return (struct keycache__tail *)((char *)e + keycache__tail_offset(e->len));
}

/* The acquire pairs with the release in keycache__entry_new: whoever saw
 * len sees the fields written before it. */
static int keycache__match(struct cds_lfht_node *node, const void *arg) {
  const struct keycache__entry *e = keycache__entry_of(node);
  const struct keycache__key *k = arg;
  return __atomic_load_n(&e->len, __ATOMIC_ACQUIRE) == k->len && memcmp(e->key, k->s, k->len) == 0;
}

/* Every spelling of the key (invalidate). */
static int keycache__match_nocase(struct cds_lfht_node *node, const void *arg) {
  const struct keycache__entry *e = keycache__entry_of(node);
  const struct keycache__key *k = arg;
  return __atomic_load_n(&e->len, __ATOMIC_ACQUIRE) == k->len && strncasecmp(e->key, k->s, k->len) == 0;
}

/* One particular entry (the CLOCK hand). */
static int keycache__match_node(struct cds_lfht_node *node, const void *arg) {
  return node == arg;
}

/* ---- statistics --------------------------------------------------------------- */

static unsigned keycache__threads;      /* slot numbers handed out */
static __thread unsigned keycache__tslot; /* this thread's slot + 1; 0: none yet */
static __thread unsigned keycache__online_depth;

static struct keycache__slot *keycache__slot(struct keycache *c) {
  if (!keycache__tslot) keycache__tslot = __atomic_add_fetch(&keycache__threads, 1, __ATOMIC_RELAXED);
  return &c->slots[(keycache__tslot - 1) % KEYCACHE__SLOTS];
}

static inline void keycache__count(size_t *ctr) {
  KEYCACHE__STORE(ctr, KEYCACHE__LOAD(ctr) + 1);
}

/* Set a flag byte only when it is clear: a hit must not write a shared
 * cache line it does not need to (the line would bounce between cores). */
static inline void keycache__mark(unsigned char *flag) {
  if (!KEYCACHE__LOAD(flag)) KEYCACHE__STORE(flag, 1);
}

/* ---- entries ------------------------------------------------------------------ */

static void keycache__free_entry(struct rcu_head *h) {
  KEYCACHE__GP_ACQUIRE(); /* before the first read of the entry */
  struct keycache__entry *e = caa_container_of(h, struct keycache__tail, rcu)->entry;
  X509_free(e->cert);
  free(e);
}

static void keycache__read_unlock(void) {
  KEYCACHE__GP_RELEASE();
  rcu_read_unlock();
}

/* notAfter as time_t; false if OpenSSL cannot convert it. */
static bool keycache__not_after(X509 *x, time_t *out) {
  struct tm tm;
  if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) return false;
  *out = timegm(&tm);
  return *out != (time_t)-1;
}

/* A new unpublished entry holding its own reference to x (may be NULL:
 * not found); NULL when memory or the certificate's time fails (then the
 * answer is simply not cached). */
static struct keycache__entry *keycache__entry_new(const struct keycache__key *k, unsigned long hash, X509 *x,
                                                   unsigned caps, time_t now) {
  time_t not_after;
  long ttl = KEYCACHE__TTL;
  if (x && !keycache__not_after(x, &not_after)) return NULL;
  if (x) {
    time_t left; /* >= 1: the store checked notAfter > now */
    if (__builtin_sub_overflow(not_after, now, &left) || left < 1) return NULL;
    if (left < ttl) ttl = (long)left;
  }
  size_t size = keycache__tail_offset(k->len) + sizeof(struct keycache__tail);
  struct keycache__entry *e = aligned_alloc(64, (size + 63) / 64 * 64);
  if (!e) return NULL;
  cds_lfht_node_init(&e->node);
  if (x) X509_up_ref(x);
  e->cert = x;
  e->asked = now;
  e->caps = caps;
  e->ttl = (unsigned char)ttl;
  e->referenced = 0;                              /* a second use earns the second chance */
  e->used = (caps & KEYSTORE_CAP_HARVESTED) != 0; /* the miss itself served it */
  memcpy(e->key, k->s, k->len);
  e->key[k->len] = '\0';
  struct keycache__tail *t = (struct keycache__tail *)((char *)e + keycache__tail_offset(k->len));
  t->entry = e;
  t->hash = hash;
  __atomic_store_n(&e->len, (uint16_t)k->len, __ATOMIC_RELEASE); /* last: publishes the rest */
  return e;
}

/* An entry has left the table (under wlock, inside an RCU read section):
 * keep its "used" mark for collect_used, free it after a grace period. */
static void keycache__retire(struct keycache *c, struct keycache__entry *e) {
  if (c->hand == e) c->hand = NULL;
  if (KEYCACHE__LOAD(&e->used) && c->gone.len < KEYCACHE__GONE_MAX && buf_reserve(&c->gone, e->len + 1) == 0) {
    keycache__lower(c->gone.data + c->gone.len, e->key, e->len + 1);
    c->gone.len += e->len + 1;
  }
  KEYCACHE__GP_RELEASE();
  call_rcu(&keycache__tail(e)->rcu, keycache__free_entry);
}

/* Unlink one entry (under wlock, inside an RCU read section). */
static void keycache__unlink(struct keycache *c, struct keycache__entry *e) {
  if (cds_lfht_del(c->ht, &e->node) != 0) return; /* only writers delete, under wlock: cannot happen */
  KEYCACHE__STORE(&c->entries, c->entries - 1);
  keycache__retire(c, e);
}

/* Position it at the CLOCK hand, or the table's first entry. */
static void keycache__hand_iter(struct keycache *c, struct cds_lfht_iter *it) {
  if (c->hand) {
    cds_lfht_lookup(c->ht, keycache__tail(c->hand)->hash, keycache__match_node, &c->hand->node, it);
    if (cds_lfht_iter_get_node(it)) return;
  }
  cds_lfht_first(c->ht, it);
}

/*
 * CLOCK (under wlock, inside an RCU read section): from the hand, an entry
 * whose referenced bit is set loses the bit and stays; one whose bit is
 * clear is evicted; until the table is at 90 % of max_entries.  Two turns
 * at most: the first clears every bit it passes.
 */
static void keycache__sweep(struct keycache *c) {
  size_t target = c->max_entries - c->max_entries / 10;
  size_t steps = 2 * c->entries + 2;
  struct cds_lfht_iter it;
  keycache__hand_iter(c, &it);
  c->hand = NULL;
  while (c->entries > target && steps--) {
    struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
    if (!n) {
      cds_lfht_first(c->ht, &it);
      continue;
    }
    struct keycache__entry *e = keycache__entry_of(n);
    cds_lfht_next(c->ht, &it);
    if (KEYCACHE__LOAD(&e->referenced)) {
      KEYCACHE__STORE(&e->referenced, 0);
      continue;
    }
    keycache__unlink(c, e);
    KEYCACHE__STORE(&c->evictions, c->evictions + 1);
  }
  struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
  c->hand = n ? keycache__entry_of(n) : NULL;
}

/* Publish e unless an invalidate or flush ran since the miss that made it
 * began (seq); replaces an entry of the same key.  Takes e. */
static void keycache__insert(struct keycache *c, struct keycache__entry *e, unsigned long seq) {
  pthread_mutex_lock(&c->wlock);
  if (KEYCACHE__LOAD(&c->seq) != seq) {
    pthread_mutex_unlock(&c->wlock);
    X509_free(e->cert);
    free(e); /* never published */
    return;
  }
  struct keycache__key k = {e->key, e->len};
  rcu_read_lock();
  struct cds_lfht_node *old = cds_lfht_add_replace(c->ht, keycache__tail(e)->hash, keycache__match, &k, &e->node);
  if (old)
    keycache__retire(c, keycache__entry_of(old));
  else
    KEYCACHE__STORE(&c->entries, c->entries + 1);
  if (c->entries > c->max_entries) keycache__sweep(c);
  keycache__read_unlock();
  pthread_mutex_unlock(&c->wlock);
}

/* ---- lookup ------------------------------------------------------------------- */

#define KEYCACHE__MISS 1

/* The read side: KEYCACHE__MISS, or the cached answer (0 with *cert_out
 * up-referenced for the caller, or SG_ENOTFOUND). */
static int keycache__hit(struct keycache *c, const struct keycache__key *k, unsigned long hash, time_t now,
                         X509 **cert_out, unsigned *caps_out) {
  struct cds_lfht_iter it;
  int rc = KEYCACHE__MISS;
  rcu_read_lock();
  cds_lfht_lookup(c->ht, hash, keycache__match, k, &it);
  struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
  if (n) {
    struct keycache__entry *e = keycache__entry_of(n);
    /* Unsigned: exact for asked <= now, and no overflow for any time_t. */
    if (e->asked <= now && (unsigned long)now - (unsigned long)e->asked < e->ttl) {
      rc = SG_ENOTFOUND;
      if (e->cert) {
        X509_up_ref(e->cert); /* inside the read section: the entry's reference keeps it alive */
        *cert_out = e->cert;
        if (caps_out) *caps_out = e->caps;
        rc = 0;
      }
      keycache__mark(&e->referenced);
      if (e->caps & KEYSTORE_CAP_HARVESTED) keycache__mark(&e->used);
    }
  }
  keycache__read_unlock();
  return rc;
}

/* One tier: from the cache, else from the store (and then cached).  key
 * is the normalised key, hash that of any spelling of it. */
static int keycache__tier(struct keycache *c, enum keystore_tier tier, const char *key, size_t len,
                          unsigned long hash, time_t now, X509 **cert_out, unsigned *caps_out) {
  struct keycache__key k = {key, len};
  struct keycache__slot *slot = keycache__slot(c);
  int rc = keycache__hit(c, &k, hash, now, cert_out, caps_out);
  if (rc != KEYCACHE__MISS) {
    keycache__count(&slot->hits);
    return rc;
  }
  keycache__count(&slot->misses);
  unsigned long seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
  X509 *x = NULL;
  unsigned caps = 0;
  rc = keystore_lookup_tier(c->ks, tier, key, now, &x, &caps);
  if (rc != 0 && rc != SG_ENOTFOUND) return rc; /* a store error is not an answer */
  struct keycache__entry *e = keycache__entry_new(&k, hash, x, caps, now);
  if (e) keycache__insert(c, e, seq);
  *cert_out = x;
  if (caps_out) *caps_out = caps;
  return rc;
}

int keycache_lookup(struct keycache *c, const char *address, time_t now, X509 **cert_out, unsigned *caps_out) {
  *cert_out = NULL;
  if (caps_out) *caps_out = 0;
  if (!address) return SG_EINVAL;
  size_t len = strlen(address);
  const char *at = memrchr(address, '@', len);
  if (!at || at == address || at == address + len - 1) return SG_EINVAL;
  /* Longer than any key we hold: the store judges (it refuses such lengths
   * today; asking keeps its limit in one place). */
  if (len > KEYCACHE__KEY_MAX) return keystore_lookup(c->ks, address, now, cert_out, caps_out);
  char key[KEYCACHE__KEY_MAX + 1];
  size_t local = (size_t)(at - address);
  unsigned long hash = keycache__hash(c, address, len);
  memcpy(key, address, local + 1);
  keycache__lower(key + local + 1, at + 1, len - local); /* with the NUL */
  int rc = keycache__tier(c, KEYSTORE_TIER_EMAIL, key, len, hash, now, cert_out, caps_out);
  if (rc != SG_ENOTFOUND) return rc;
  hash = keycache__hash(c, at + 1, len - local - 1);
  return keycache__tier(c, KEYSTORE_TIER_DOMAIN, key + local + 1, len - local - 1, hash, now, cert_out, caps_out);
}

/* ---- writers ------------------------------------------------------------------ */

/* Under wlock: unlink everything. */
static void keycache__remove_all(struct keycache *c) {
  struct cds_lfht_iter it;
  struct keycache__entry *e;
  rcu_read_lock();
  cds_lfht_for_each_entry(c->ht, &it, e, node) keycache__unlink(c, e);
  keycache__read_unlock();
}

void keycache_invalidate(struct keycache *c, const char *key) {
  size_t len = key ? strlen(key) : 0;
  if (!len || len > KEYCACHE__KEY_MAX) return; /* nothing is cached under it */
  struct keycache__key k = {key, len};
  unsigned long hash = keycache__hash(c, key, len);
  struct cds_lfht_iter it;
  struct cds_lfht_node *n;
  pthread_mutex_lock(&c->wlock);
  __atomic_store_n(&c->seq, c->seq + 1, __ATOMIC_RELEASE);
  rcu_read_lock();
  cds_lfht_for_each_duplicate(c->ht, hash, keycache__match_nocase, &k, &it, n) {
    keycache__unlink(c, keycache__entry_of(n));
  }
  keycache__read_unlock();
  pthread_mutex_unlock(&c->wlock);
}

void keycache_flush(struct keycache *c) {
  pthread_mutex_lock(&c->wlock);
  __atomic_store_n(&c->seq, c->seq + 1, __ATOMIC_RELEASE);
  keycache__remove_all(c);
  pthread_mutex_unlock(&c->wlock);
}

unsigned long keycache_generation(const struct keycache *c) {
  return __atomic_load_n(&c->generation, __ATOMIC_ACQUIRE);
}

void keycache_set_generation(struct keycache *c, unsigned long gen) {
  __atomic_store_n(&c->generation, gen, __ATOMIC_RELEASE);
}

/* ---- collect_used ------------------------------------------------------------- */

static int keycache__strcmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* fn once per distinct key of the NUL-separated list. */
static void keycache__each_once(const struct buf *keys, keycache_used_fn fn, void *arg) {
  size_t n = 0;
  for (size_t i = 0; i < keys->len; i++) n += keys->data[i] == '\0';
  char **v = n ? malloc(n * sizeof *v) : NULL;
  if (!v) { /* no memory to sort: duplicates are harmless to a use-time update */
    for (size_t i = 0; i < keys->len; i += strlen(keys->data + i) + 1) fn(arg, keys->data + i);
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < keys->len; i += strlen(keys->data + i) + 1) v[k++] = keys->data + i;
  qsort(v, n, sizeof *v, keycache__strcmp);
  for (size_t i = 0; i < n; i++)
    if (i == 0 || strcmp(v[i], v[i - 1]) != 0) fn(arg, v[i]);
  free(v);
}

void keycache_collect_used(struct keycache *c, keycache_used_fn fn, void *arg) {
  pthread_mutex_lock(&c->wlock);
  struct buf keys = c->gone;
  c->gone = (struct buf)BUF_INIT;
  pthread_mutex_unlock(&c->wlock);
  struct cds_lfht_iter it;
  struct keycache__entry *e;
  rcu_read_lock();
  cds_lfht_for_each_entry(c->ht, &it, e, node) {
    if (!KEYCACHE__LOAD(&e->used) || !__atomic_exchange_n(&e->used, 0, __ATOMIC_RELAXED)) continue;
    if (buf_reserve(&keys, e->len + 1) != 0) continue; /* the mark is lost; so is one use time */
    keycache__lower(keys.data + keys.len, e->key, e->len + 1);
    keys.len += e->len + 1;
  }
  keycache__read_unlock();
  keycache__each_once(&keys, fn, arg);
  buf_free(&keys);
}

/* ---- life cycle --------------------------------------------------------------- */

void keycache_thread_online(void) {
  if (keycache__online_depth++ == 0) rcu_register_thread();
}

void keycache_thread_offline(void) {
  if (keycache__online_depth && --keycache__online_depth == 0) rcu_unregister_thread();
}

/*
 * Buckets to create the table with: one per entry the cache may hold
 * (16 bytes each: 1 MiB for the default 65,536), at most 2^20.
 *
 * liburcu 0.13's automatic resizing does not keep chains short on its
 * own.  Without CDS_LFHT_ACCOUNTING it grows only when an insert walks a
 * chain of 3 or more, in a worker thread; inserts that come faster than
 * the worker (filling the cache) leave it at the size of its first
 * trigger until the next inserts, and every lookup then walks tens of
 * nodes, a cache miss each (bench_keycache measured 300 ns instead of
 * 100).  With accounting it does not grow past 1024 buckets per CPU until
 * there are 8 nodes per bucket.  So the table starts at the size
 * max_entries needs; AUTO_RESIZE (no accounting: it never shrinks) stays
 * as the safety net beyond 2^20.
 */
static unsigned long keycache__buckets(size_t max_entries) {
  unsigned long n = 64;
  while (n < max_entries && n < (1ul << 20)) n <<= 1;
  return n;
}

int keycache_new(struct keystore *ks, size_t max_entries, struct keycache **out) {
  *out = NULL;
  struct keycache *c;
  if (posix_memalign((void **)&c, 64, sizeof *c) != 0) return SG_ENOMEM;
  memset(c, 0, sizeof *c);
  c->ks = ks;
  c->max_entries = max_entries ? max_entries : KEYCACHE__DEFAULT_MAX;
  c->gone = (struct buf)BUF_INIT;
  if (getrandom(&c->seed, sizeof c->seed, 0) != (ssize_t)sizeof c->seed)
    c->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)c; /* weaker, still per cache */
  c->ht = cds_lfht_new(keycache__buckets(c->max_entries), 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
  if (!c->ht || pthread_mutex_init(&c->wlock, NULL) != 0) {
    if (c->ht) cds_lfht_destroy(c->ht, NULL);
    free(c);
    return SG_ENOMEM;
  }
  *out = c;
  return 0;
}

void keycache_free(struct keycache *c) {
  if (!c) return;
  pthread_mutex_lock(&c->wlock);
  keycache__remove_all(c);
  pthread_mutex_unlock(&c->wlock);
  rcu_barrier(); /* every entry and its certificate is freed before we return */
  cds_lfht_destroy(c->ht, NULL);
  pthread_mutex_destroy(&c->wlock);
  buf_free(&c->gone);
  free(c);
}

void keycache_stats(const struct keycache *c, struct keycache_stats *out) {
  *out = (struct keycache_stats){.entries = KEYCACHE__LOAD(&c->entries),
                                 .evictions = KEYCACHE__LOAD(&c->evictions)};
  for (size_t i = 0; i < KEYCACHE__SLOTS; i++) {
    out->hits += KEYCACHE__LOAD(&c->slots[i].hits);
    out->misses += KEYCACHE__LOAD(&c->slots[i].misses);
  }
}
