/*
 * keystore_internal - what crypto/keystore.c (managed keys, CA lists,
 * opening, lookups) and crypto/keystore_harvest.c (harvested keys, alerts,
 * the generation counter) share.  Not a public API: nothing outside these
 * two files includes it.
 *
 * Owns nothing itself; describes the one struct keystore both files work
 * on and the helpers each lends the other.  Everything read from LMDB is
 * untrusted here too (each record is decoded and checked before use).
 * Ownership: as in keystore.h; MDB values are borrowed only until the next
 * write in the same transaction (LMDB's rule), so callers copy what they
 * keep across a write.
 */
#ifndef SEALGATE_KEYSTORE_INTERNAL_H
#define SEALGATE_KEYSTORE_INTERNAL_H

#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <openssl/x509.h>

#include "crypto/keystore.h"

#define KS_ID_MAX 500 /* LMDB's key limit is 511 bytes; by_used adds 8 */

struct keystore {
  MDB_env *env; /* NULL: read-only and no database exists (all lookups miss) */
  MDB_dbi pubkeys, by_email, by_domain, cas;
  /* keystore_harvest.c's databases (see there). */
  MDB_dbi harvested, held, by_used, alerts, meta;
  bool harvest_dbs; /* false only for a read-only store written before they existed: empty */
  bool writable;
  dev_t dev;
  ino_t ino;
  struct keystore *next; /* in keystore.c's list of open stores */
};

/* ---- lent by keystore.c ----------------------------------------------------- */

int ks__rc(int mdb_rc);
int ks__mdb_fail(char *err, size_t errlen, int mdb_rc, const char *what);
int ks__begin(struct keystore *ks, bool write, MDB_txn **txn, char *err, size_t errlen);
/* Commit a write transaction; bump: count it in the generation first
 * (every write that can change an answer does; use-time updates do not). */
int ks__commit(struct keystore *ks, MDB_txn *txn, bool bump, char *err, size_t errlen);
void ks__lower(const char *in, char *out);
/* Valid at now and fit for encryption (R13). */
bool ks__usable(X509 *x, time_t now);
/* A managed key answering for key (an address: its e-mail tier, then its
 * domain's; a domain: the domain tier) at now, or NULL (*out, the caller's). */
int ks__managed_answer(struct keystore *ks, MDB_txn *txn, const char *key, time_t now, X509 **out);
/* What add, import and harvest require of a certificate. */
int ks__cert_check(X509 *x, char *err, size_t errlen);
/* Store x as the managed key name (SG_EEXIST unless replace). */
int ks__store(struct keystore *ks, MDB_txn *txn, const char *name, X509 *x, bool replace, char *err,
              size_t errlen);

enum ks_kind { KS_EMAIL, KS_DOMAIN };
typedef int (*ks_id_fn)(void *arg, enum ks_kind kind, const char *id);
/* fn for each SAN e-mail, subject emailAddress and SAN DNS name of x;
 * stops at (and returns) a non-zero return. */
int ks__ids(X509 *x, ks_id_fn fn, void *arg);

void ks__be64_put(unsigned char *p, uint64_t v);
uint64_t ks__be64_get(const unsigned char *p);

/* ---- lent by keystore_harvest.c --------------------------------------------- */

/* The lookup's harvested probe: the active record under key (already
 * lower-cased) if usable at now; *cert_out stays NULL otherwise. */
int ks__harvest_lookup(struct keystore *ks, MDB_txn *txn, const char *key, time_t now, X509 **cert_out,
                       unsigned *caps_out);
/* Open (create) the harvest databases inside keystore.c's opening txn;
 * a read-only store that predates them opens with harvest_dbs false. */
int ks__harvest_dbis(struct keystore *ks, MDB_txn *txn, bool create);
/* Add one to the generation counter inside txn (ks__commit's bump). */
int ks__generation_bump(struct keystore *ks, MDB_txn *txn);

#endif
