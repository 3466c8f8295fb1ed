/*
 * keycache - the lock-free cache of recipients' encryption certificates in
 * front of the key store (DESIGN.md "Public keys"): a liburcu cds_lfht
 * keyed by lower-cased address (the store's e-mail tier) and by domain
 * (its domain tier), read by every shard and crypto worker without locks.
 *
 * Owns the table and its entries.  A lookup is RCU read-side only: no
 * lock, no write to shared memory except a CLOCK "referenced" bit set only
 * when it is clear.  A miss asks the store (keystore_lookup_tier: LMDB
 * readers never lock) and inserts the answer, found or not found, so the
 * next lookup of the same key does not reach the store.  Entries live
 * until the store changes (keycache_flush, or keycache_invalidate for one
 * key after our own write), their certificate expires, or they are evicted
 * (CLOCK, beyond max_entries); an entry is freed with call_rcu after it
 * has been unlinked, never under a reader.
 *
 * Threads: every thread that calls keycache_lookup must be registered with
 * liburcu first (keycache_thread_online) and unregistered before it exits
 * (keycache_thread_offline): the shards and the crypto workers, never
 * libuv's threadpool.  Writers (insert on a miss, invalidate, flush,
 * eviction) serialise on one internal mutex that readers never take.
 * Trusts the store's answers (it checks what it reads).
 *
 * Ownership: certificates returned by keycache_lookup are up-referenced
 * copies, the caller's (X509_free).  Returns 0 or a negative enum sgerr.
 */
#ifndef SEALGATE_KEYCACHE_H
#define SEALGATE_KEYCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <openssl/x509.h>

struct keystore;
struct keycache;

/* ks is borrowed and must outlive the cache.  max_entries 0: 65536. */
int keycache_new(struct keystore *ks, size_t max_entries, struct keycache **out);
/* After every reader thread has stopped using it. */
void keycache_free(struct keycache *c);

void keycache_thread_online(void);  /* rcu_register_thread */
void keycache_thread_offline(void); /* rcu_unregister_thread */

/* The same answer as keystore_lookup(ks, address, now, ...), from the
 * cache when it has it: SG_ENOTFOUND, SG_EINVAL, or 0 with *cert_out (the
 * caller's) and *caps_out (may be NULL).  A store error is returned as is
 * and not cached. */
int keycache_lookup(struct keycache *c, const char *address, time_t now, X509 **cert_out, unsigned *caps_out);

/* Drop one key's entry (an address or a domain) after a write to the
 * store, so the next lookup reads the new answer. */
void keycache_invalidate(struct keycache *c, const char *key);
/* Drop everything (the store changed in a way we did not see). */
void keycache_flush(struct keycache *c);
/* The store's generation as of the last flush, for keyring's check. */
unsigned long keycache_generation(const struct keycache *c);
void keycache_set_generation(struct keycache *c, unsigned long gen);

/* Keys of entries served since the last call whose answer came from a
 * harvested record (R20 eviction needs their use times): fn gets each
 * once; the marks are cleared.  Runs on one thread at a time. */
typedef void (*keycache_used_fn)(void *arg, const char *key);
void keycache_collect_used(struct keycache *c, keycache_used_fn fn, void *arg);

struct keycache_stats {
  size_t entries, hits, misses, evictions;
};
void keycache_stats(const struct keycache *c, struct keycache_stats *out);

#endif
