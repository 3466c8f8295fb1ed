/*
 * keystore - the instance's public keys of others and CA lists, in LMDB
 * at `key_store` (R15, R16, R22).
 *
 * Owns the LMDB environment (one per process, MDB_NOTLS, stale readers
 * cleared at open).  Databases: "pubkeys" (name -> DER certificate and the
 * time it was added), "by_email" (lower-cased SAN e-mail -> name,
 * duplicates sorted), "by_domain" (lower-cased SAN DNS name, a wildcard
 * kept as "*.example.com" -> name, duplicates sorted), "cas" (list name ->
 * DER certificates and CRLs).  Managed keys are an explicit trust decision
 * of the administrator (`sealctl pubkey add`): no chain check.  Harvested
 * keys (R17-R21) live beside them, with their own records ("harvested",
 * "held", "by_used", "alerts", "meta": crypto/keystore_harvest.c).
 *
 * Callers: sealctl (writes; may run while the daemon runs: LMDB has one
 * writer at a time and readers never block), the daemon's crypto workers
 * (keystore_lookup, read-only transactions; keystore_harvest_put).  Writes
 * commit (fsync) and must not run on a loop thread.
 *
 * Untrusted input: PEM files given to add/import (any bytes: each bad
 * block is an error naming the file and block number), certificates
 * harvested from mail, and whatever the database holds (each record is
 * parsed and checked before use; a corrupt record is not found).
 *
 * Ownership: X509 objects returned through *_out are the caller's.
 * Returns 0 or a negative enum sgerr; err (when given) names the problem.
 */
#ifndef SEALGATE_KEYSTORE_H
#define SEALGATE_KEYSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <openssl/x509.h>

struct keystore;

#define KEYSTORE_NAME_MAX 128

/* Open (creating the folder's database when writable). */
int keystore_open(const char *dir, bool writable, struct keystore **out, char *err, size_t errlen);
void keystore_close(struct keystore *ks);

/* Names: 1-128 of [A-Za-z0-9._@+-], starting with a letter or digit. */
int keystore_name_check(const char *name, char *err, size_t errlen);

/* ---- managed public keys --------------------------------------------------- */

/* Add cert under name (SG_EEXIST if the name exists).  The certificate
 * must parse, carry at least one SAN e-mail or SAN DNS name (or an
 * emailAddress in the subject), and have a public key OpenSSL can use. */
int keystore_pubkey_add(struct keystore *ks, const char *name, X509 *cert, char *err, size_t errlen);
int keystore_pubkey_delete(struct keystore *ks, const char *name);
int keystore_pubkey_get(struct keystore *ks, const char *name, X509 **cert_out, time_t *added_out);

/* Calls fn for every managed key in name order; stops at a non-zero
 * return (which it returns).  cert is borrowed for the call. */
typedef int (*keystore_each_fn)(void *arg, const char *name, X509 *cert, time_t added);
int keystore_pubkey_each(struct keystore *ks, keystore_each_fn fn, void *arg);

/*
 * Export every managed key to f as text: per key a line
 * "# sealgate-pubkey: NAME" and the PEM certificate.  Import reads that
 * format (and plain concatenated PEM, naming each key after its first SAN
 * e-mail, else its CN) in one transaction: all or nothing.  Existing names
 * are replaced.  progress(arg, done) is called every 500 keys (may be
 * NULL).  *n_out: keys imported.
 */
int keystore_pubkey_export(struct keystore *ks, FILE *f, size_t *n_out);
int keystore_pubkey_import(struct keystore *ks, FILE *f, const char *fname,
                           void (*progress)(void *arg, size_t done), void *arg, size_t *n_out,
                           char *err, size_t errlen);

/*
 * The one lookup the mail path uses (crypto/keycache.c sits in front of
 * it): the encryption certificate for an envelope recipient at time now.
 * Two tiers, which the cache keys separately:
 *   KEYSTORE_TIER_EMAIL (key: the address): a certificate whose SAN e-mail
 *     equals the address (domain compared case-insensitively, local part
 *     exactly or in lower case, since SAN e-mails are usually lower case);
 *   KEYSTORE_TIER_DOMAIN (key: the address's domain): one whose SAN DNS
 *     name matches the domain exactly, else an RFC 6125 wildcard
 *     "*.example.com" matching one more leftmost label.
 * Only certificates valid at now and fit for encryption (key usage present
 * with keyEncipherment, or keyAgreement for EC: R13).  Managed keys first;
 * active harvested keys (never held ones) when no managed key matches the
 * tier.  Among several, the latest notBefore.  SG_ENOTFOUND if none,
 * SG_EINVAL for an address no key can match.
 *
 * *caps_out (may be NULL) receives the SMIMECapabilities bits recorded with
 * a harvested key (KEYSTORE_CAP_*), 0 for managed keys.
 */
enum keystore_tier { KEYSTORE_TIER_EMAIL = 0, KEYSTORE_TIER_DOMAIN = 1 };

#define KEYSTORE_CAP_AES256_GCM 0x1u /* announced AES-256-GCM (AuthEnvelopedData) */
#define KEYSTORE_CAP_AES128_GCM 0x2u
#define KEYSTORE_CAP_RSA_OAEP 0x4u
/* Not a capability: set in *caps_out when the answer is a harvested
 * record, whose key is then the lower-cased tier key (for use times). */
#define KEYSTORE_CAP_HARVESTED 0x80000000u

int keystore_lookup_tier(struct keystore *ks, enum keystore_tier tier, const char *key, time_t now,
                         X509 **cert_out, unsigned *caps_out);
/* Email tier, then the domain tier of the address's domain. */
int keystore_lookup(struct keystore *ks, const char *address, time_t now, X509 **cert_out,
                    unsigned *caps_out);

/* ---- harvested keys (R17-R21) ----------------------------------------------
 *
 * Records keyed by the lower-cased address the signer proved (SAN e-mail
 * matching From) or, for a domain certificate (SAN DNS only), by the
 * domain (the store lower-cases the key it is given).  The caller
 * (crypto/incoming.c) has already decided the certificate may be harvested
 * (signature, chain, From, R18); the store still refuses (SG_EINVAL) a
 * certificate that does not name its key (an address key: a SAN e-mail or
 * subject emailAddress equal to it; a domain key: a SAN DNS name equal to
 * it or a wildcard one label up), and decides replacement:
 *   - unknown key: stored (KEYSTORE_HARVEST_ADDED), unless a managed key
 *     (explicit trust, any tier) already answers for it with another
 *     certificate: then held (KEYSTORE_HARVEST_HELD), since a harvested
 *     e-mail key would otherwise take precedence over the managed one;
 *   - the same certificate (DER) again: KEYSTORE_HARVEST_SAME; the record
 *     is rewritten only when its caps changed or its use time is more than
 *     an hour old (every signed message is a put; a commit is an fsync);
 *   - a different certificate for a known key replaces it only when
 *     updated_keys is set and its notBefore is strictly later than the
 *     stored one's (KEYSTORE_HARVEST_REPLACED; a hold of that same
 *     certificate is cleared); otherwise it is held
 *     (KEYSTORE_HARVEST_HELD) for an administrator, never used; one hold
 *     per key: a later one replaces it;
 *   - a different certificate less than 48 hours after the key's last
 *     replacement (R19): held, and an alert is recorded
 *     (KEYSTORE_HARVEST_ALERT); the caller logs it.  The certificate that
 *     is already held arriving again is HELD with no new alert (one alert
 *     per substitution, not one per message).
 * The store is bounded (max_bytes of key + record bytes of active and held
 * records, 512 MB default, R20): when a put goes over, the keys used least
 * recently (never the one just put) are evicted with their holds, in the
 * same transaction, until it is at 90 %.  Use times are written in batches
 * (keystore_harvest_touch), never on every lookup.
 */
enum keystore_harvest_outcome {
  KEYSTORE_HARVEST_ADDED,
  KEYSTORE_HARVEST_SAME,
  KEYSTORE_HARVEST_REPLACED,
  KEYSTORE_HARVEST_HELD,
  KEYSTORE_HARVEST_ALERT,
};

struct keystore_harvest_opts {
  bool updated_keys;  /* flow policy harvest.updated_keys */
  size_t max_bytes;   /* 0: the 512 MB default */
  bool unvalidated;   /* the certificate's chain did not validate (harvest.self_signed):
                         it may fill a gap, never replace a known key */
};

/* key: the address or domain (lower-cased by the store).  caps:
 * KEYSTORE_CAP_* from the signer's SMIMECapabilities.  o NULL: the
 * defaults (updated_keys false, 512 MB).  *outcome_out (may be NULL) says
 * what happened; *evicted_out (may be NULL) how many keys were evicted to
 * make room.  One write transaction: all of it happens, or none. */
int keystore_harvest_put(struct keystore *ks, const char *key, X509 *cert, unsigned caps, time_t now,
                         const struct keystore_harvest_opts *o, enum keystore_harvest_outcome *outcome_out,
                         size_t *evicted_out, char *err, size_t errlen);

struct keystore_harvested {
  char key[KEYSTORE_NAME_MAX * 4]; /* address or domain */
  X509 *cert;                      /* borrowed for the callback */
  unsigned caps;
  time_t added, last_used;
  bool held;                       /* a held candidate (never used for mail) */
};
typedef int (*keystore_harvest_fn)(void *arg, const struct keystore_harvested *h);
/* Every record (active and held) in key order; held ones after the active
 * record of the same key. */
int keystore_harvest_each(struct keystore *ks, keystore_harvest_fn fn, void *arg);
/* Records of one key (the active one, then a held one, if any).
 * SG_ENOTFOUND if none. */
int keystore_harvest_get(struct keystore *ks, const char *key, keystore_harvest_fn fn, void *arg);
/* Copy key's held certificate if there is one, else its active one, into
 * the managed keys as name (R21); a held certificate also becomes the
 * active harvested one and the hold is cleared.  SG_ENOTFOUND, SG_EEXIST
 * (name taken) as for keystore_pubkey_add. */
int keystore_harvest_promote(struct keystore *ks, const char *key, const char *name, time_t now,
                             char *err, size_t errlen);
/* Mark keys (addresses or domains, any case) as used at now, one
 * transaction; unknown keys and times that would go back are skipped.
 * Does not move the generation (a use time changes no answer). */
int keystore_harvest_touch(struct keystore *ks, char *const *keys, size_t n, time_t now);

/* Alerts the store recorded (R19), oldest first; the newest 1000 are
 * kept.  key and text are borrowed for the call. */
typedef int (*keystore_alert_fn)(void *arg, time_t when, const char *key, const char *text);
int keystore_alert_each(struct keystore *ks, keystore_alert_fn fn, void *arg);

/* A number that changes on every write to the store that can change an
 * answer (any process): managed add, delete and import, CA import and
 * delete, harvest put (except a SAME that only moved the use time) and
 * promote; not keystore_harvest_touch.  The daemon's cache compares it to
 * know when to drop what it holds.  0 for a store never written. */
int keystore_generation(struct keystore *ks, unsigned long *gen_out);

/* ---- CA lists (trust anchors for verifying incoming mail, R5, R22) ---------
 *
 * A list holds CA certificates and, optionally, CRLs of those CAs (PEM
 * "X509 CRL" blocks in the file given to `sealctl ca import`); crls may be
 * NULL or empty.  An existing name is SG_EEXIST (delete it first). */

int keystore_ca_import(struct keystore *ks, const char *name, STACK_OF(X509) *certs,
                       STACK_OF(X509_CRL) *crls, char *err, size_t errlen);
/* What import requires of each CRL: its issuer is the subject of one of
 * certs, and its signature verifies with that certificate's key
 * (SG_EINVAL naming the issuer otherwise).  Exposed so that sealctl can
 * name the file's block. */
int keystore_ca_crl_check(STACK_OF(X509) *certs, X509_CRL *crl, char *err, size_t errlen);
int keystore_ca_delete(struct keystore *ks, const char *name);
/* fn gets each list's name, certificates and CRLs (borrowed; crls never NULL). */
typedef int (*keystore_ca_fn)(void *arg, const char *name, STACK_OF(X509) *certs,
                              STACK_OF(X509_CRL) *crls);
int keystore_ca_each(struct keystore *ks, keystore_ca_fn fn, void *arg);

#endif
