/*
 * keystore - the instance's public keys of others and CA lists, in LMDB
 * at `key_store` (R15, R16, R22).
 *
 * Owns the LMDB environment (one per process, MDB_NOTLS, stale readers
 * cleared at open).  Databases: "pubkeys" (name -> DER certificate and the
 * time it was added), "by_email" (lower-cased SAN e-mail -> name,
 * duplicates sorted), "by_domain" (lower-cased SAN DNS name, a wildcard
 * kept as "*.example.com" -> name, duplicates sorted), "cas" (list name ->
 * DER certificates).  Managed keys are an explicit trust decision of the
 * administrator (`sealctl pubkey add`): no chain check.  Harvested keys
 * (#5) will live beside them.
 *
 * Callers: sealctl (writes; may run while the daemon runs: LMDB has one
 * writer at a time and readers never block), the daemon's crypto workers
 * (keystore_lookup, read-only transactions).  Writes commit (fsync) and
 * must not run on a loop thread.
 *
 * Untrusted input: PEM files given to add/import (any bytes: each bad
 * block is an error naming the file and block number), and whatever the
 * database holds (each record is parsed and checked before use).
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
 * The one lookup the mail path uses (the lock-free cache of #5 slots in
 * behind it): the encryption certificate for an envelope recipient at time
 * now.  A certificate whose SAN e-mail equals the address (domain
 * compared case-insensitively, local part exactly or in lower case,
 * since SAN e-mails are usually lower case), else one whose SAN
 * DNS name matches the address's domain (exactly, or an RFC 6125
 * wildcard "*.example.com" matching one more leftmost label).  Only
 * certificates valid at now and fit for encryption (key usage present
 * with keyEncipherment, or keyAgreement for EC: R13).  Among several, the
 * latest notBefore.  SG_ENOTFOUND if none.
 */
int keystore_lookup(struct keystore *ks, const char *address, time_t now, X509 **cert_out);

/* ---- CA lists (trust anchors for verifying incoming mail, #5) -------------- */

int keystore_ca_import(struct keystore *ks, const char *name, STACK_OF(X509) *certs, char *err,
                       size_t errlen);
int keystore_ca_delete(struct keystore *ks, const char *name);
/* fn gets each list's name and certificates (borrowed). */
typedef int (*keystore_ca_fn)(void *arg, const char *name, STACK_OF(X509) *certs);
int keystore_ca_each(struct keystore *ks, keystore_ca_fn fn, void *arg);

#endif
