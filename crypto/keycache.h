/*
 * keycache - the lock-free cache of recipients' encryption certificates in
 * front of the key store (DESIGN.md "Public keys"): a liburcu cds_lfht
 * keyed by address (the store's e-mail tier) and by domain (its domain
 * tier), read by every shard and crypto worker without locks.
 *
 * Owns the table and its entries.  A lookup is RCU read-side only: no
 * lock, no write to shared memory except a CLOCK "referenced" bit (and,
 * for harvested answers, a "used" mark) set only when clear, and its own
 * thread's hit counter.  A miss asks the store (keystore_lookup_tier: LMDB
 * readers never lock) and inserts the answer, found or not found, so the
 * next lookup of the same key does not reach the store.  Entries live
 * until the store changes (keycache_flush, or keycache_invalidate for one
 * key after our own write), their certificate expires, or they are evicted
 * (CLOCK, beyond max_entries); an entry is freed with call_rcu after it
 * has been unlinked, never under a reader.
 *
 * Threads: every thread that calls any keycache function other than
 * keycache_new, keycache_stats and the generation pair must be registered
 * with liburcu's default (memb) flavour first (keycache_thread_online) and
 * unregistered before it exits (keycache_thread_offline): the shards and
 * the crypto workers, never libuv's threadpool.  A thread that registered
 * itself with rcu_register_thread (core/shard.c does for shards) is
 * already online and must not call keycache_thread_online: liburcu
 * refuses a second registration.  Writers (insert on a miss, invalidate,
 * flush, eviction) serialise on one internal mutex that readers never
 * take.  Trusts the store's answers (it checks what it reads); addresses
 * are untrusted: bounded copies, a hash with a per-cache random seed.
 *
 * Freshness: an answer is served for at most 60 s after the store gave it,
 * and a certificate no later than its notAfter; so a certificate that
 * becomes valid later (notBefore), or a write by another process that no
 * one invalidated, is seen within a minute.  An e-mail entry is keyed by
 * the address with its domain lower-cased and its local part as written
 * (the store compares local parts case-sensitively first), a domain entry
 * by the lower-cased domain.
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

/* ks is borrowed and must outlive the cache.  max_entries 0: 65536.
 * SG_ENOMEM. */
int keycache_new(struct keystore *ks, size_t max_entries, struct keycache **out);
/* After every reader thread has stopped using it; on an online thread
 * (it waits for the entries' call_rcu callbacks: rcu_barrier). */
void keycache_free(struct keycache *c);

/* rcu_register_thread / rcu_unregister_thread; calls nest per thread
 * (only the outermost pair registers). */
void keycache_thread_online(void);
void keycache_thread_offline(void);

/* The same answer as keystore_lookup(ks, address, now, ...), from the
 * cache when it has it: SG_ENOTFOUND, SG_EINVAL, or 0 with *cert_out (the
 * caller's) and *caps_out (may be NULL).  A store error is returned as is
 * and not cached. */
int keycache_lookup(struct keycache *c, const char *address, time_t now, X509 **cert_out, unsigned *caps_out);

/* Drop one key's entry (an address, in every spelling of its case, or a
 * domain) after a write to the store, so the next lookup reads the new
 * answer.  A certificate with a wildcard DNS name answers domains the
 * caller cannot list: flush after adding or removing one.  A miss that
 * asked the store before an invalidate or flush does not cache its
 * answer. */
void keycache_invalidate(struct keycache *c, const char *key);
/* Drop everything (the store changed in a way we did not see). */
void keycache_flush(struct keycache *c);
/* The store's generation as of the last flush, for keyring's check. */
unsigned long keycache_generation(const struct keycache *c);
void keycache_set_generation(struct keycache *c, unsigned long gen);

/* Keys of entries served since the last call whose answer came from a
 * harvested record (R20 eviction needs their use times), lower-cased as
 * the harvested records are keyed: fn gets each once (key borrowed for the
 * call); the marks are cleared.  Marks of entries evicted or invalidated
 * meanwhile are kept for the next call (up to 1 MiB of keys: call it at
 * least every few minutes).  A use served from an entry at the moment it
 * is removed may be missed.  Runs on one online thread at a time; fn is
 * called outside any lock. */
typedef void (*keycache_used_fn)(void *arg, const char *key);
void keycache_collect_used(struct keycache *c, keycache_used_fn fn, void *arg);

/* hits and misses count tier lookups (an address answered by its domain
 * is two), summed from per-thread counters (a lookup writes only its own
 * thread's cache line); beyond 64 threads two threads may share one and
 * lose a count. */
struct keycache_stats {
  size_t entries, hits, misses, evictions;
};
void keycache_stats(const struct keycache *c, struct keycache_stats *out);

#endif
