/*
 * hsm - the one door to private keys: a PKCS#11 token reached through
 * p11-kit (module loading, pkcs11: URIs) and libp11 (keys as EVP_PKEYs).
 *
 * Owns: the loaded module, the token's login, one administrative session,
 * and per-thread workers whose EVP_PKEYs perform sign and decrypt inside
 * the token.  Nothing outside hsm/ includes a PKCS#11 header or libp11.
 *
 * Who calls it: sealctl (administration, one thread), the daemon at start
 * and reload (listing, key lookup), and the crypto worker pool (one
 * struct hsm_worker per thread).  Every call may block on the token: never
 * call any of this from a libuv loop thread.
 *
 * What it trusts: the module path and token label from the validated
 * config.  It does not trust the PIN file's permissions (checked: 0600 or
 * stricter, a regular file) nor what the token returns (lengths checked).
 *
 * Key material: private keys are generated in the token with CKA_SENSITIVE
 * true and CKA_EXTRACTABLE false; an imported key's private parts are
 * copied into buffers that are wiped (OPENSSL_cleanse) before returning,
 * whatever the outcome.  The PIN is wiped when struct hsm is closed.
 *
 * Concurrency: admin calls on one struct hsm are serialised by an internal
 * mutex (SoftHSM2 has races in key generation and import).  A worker is
 * used by one thread at a time; a remote worker owns its own connection to
 * the token server (p11-kit-client opens one per C_GetFunctionList, and one
 * connection serves one request at a time), so signing scales with
 * workers.  In-process workers share one libp11 context: its key
 * operations take a session from libp11's per-slot pool.
 *
 * Errors: every function returns 0 or a negative enum sgerr.  Functions
 * with err/errlen fill a one-line English reason naming what was wrong
 * ("wrong PIN for token sealgate", "token sealgate not found in module
 * /usr/lib/softhsm/libsofthsm2.so", "PIN file /x/pin is readable by group
 * or others (mode 0644): chmod 600 it").  SG_ETEMP means the token could
 * not be reached (server down): retry later.
 */
#ifndef SEALGATE_HSM_H
#define SEALGATE_HSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

/* Where the module comes from. */
enum hsm_mode {
  HSM_INPROCESS, /* SoftHSM2 loaded in this process (softhsm_conf applies) */
  HSM_REMOTE,    /* p11-kit-client.so talking to a p11-kit server */
  HSM_MODULE,    /* any PKCS#11 module by path (a real HSM) */
};

struct hsm_params {
  enum hsm_mode mode;
  const char *module;         /* HSM_MODULE: module path; else NULL (built in) */
  const char *token;          /* token label, e.g. "sealgate" */
  const char *pin_file;       /* absolute path; first line is the user PIN */
  const char *softhsm_conf;   /* HSM_INPROCESS: exported as SOFTHSM2_CONF
                                 before the module loads; may be NULL */
  const char *server_address; /* HSM_REMOTE: "unix:path=..." exported as
                                 P11_KIT_SERVER_ADDRESS; must stay the same
                                 for the life of the process (a symlink that
                                 hsm_server repoints on restart) */
};

/* Default module paths on Debian 12 (used when params.module is NULL). */
#define HSM_SOFTHSM2_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define HSM_P11KIT_CLIENT_MODULE "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"

#define HSM_ID_MAX 32     /* CKA_ID bytes we create: 16 (8 of creation time in
                             microseconds, big-endian, then 8 random), so ids
                             of one name sort by age */
#define HSM_LABEL_MAX 128 /* CKA_LABEL, certificate names */

enum hsm_key_type { HSM_KEY_RSA = 1, HSM_KEY_EC = 2 };

/* Identifies a key pair (and its certificates) in the token. */
struct hsm_keyref {
  char label[HSM_LABEL_MAX];    /* the certificate name, NUL-terminated */
  unsigned char id[HSM_ID_MAX]; /* CKA_ID, shared by private key, public key
                                   and certificates of one key pair */
  size_t id_len;
};

enum hsm_object_class { HSM_OBJ_PRIVATE_KEY, HSM_OBJ_PUBLIC_KEY, HSM_OBJ_CERT };

/* Certificate categories (CKA_CERTIFICATE_CATEGORY). */
#define HSM_CERT_ENTITY 1    /* the certificate of a key pair in the token */
#define HSM_CERT_AUTHORITY 2 /* a chain certificate stored beside it */

/* One object found in the token.  All memory belongs to the array returned
 * by hsm_list() and is freed by hsm_objects_free(). */
struct hsm_object {
  enum hsm_object_class cls;
  struct hsm_keyref ref;       /* label and id */
  enum hsm_key_type key_type;  /* keys: RSA or EC; certificates: 0 */
  unsigned key_bits;           /* keys: modulus bits or curve bits */
  bool sensitive, extractable; /* private keys: as the token reports them */
  int cert_category;           /* certificates: HSM_CERT_* (0 if unset) */
  unsigned char *der;          /* certificates: CKA_VALUE; else NULL */
  size_t der_len;
};

struct hsm;

/* Load the module, find the token by label, read the PIN file, log in, and
 * open the admin session.  *out is the caller's until hsm_close(). */
int hsm_open(const struct hsm_params *p, struct hsm **out, char *err, size_t errlen);

/* Wipe the PIN, finalize the module.  Every worker of h must be freed
 * first.  NULL is a no-op. */
void hsm_close(struct hsm *h);

/* The mode h was opened with. */
enum hsm_mode hsm_get_mode(const struct hsm *h);

/* Every private key, public key and certificate object on the token.
 * *objs_out is the caller's (hsm_objects_free). */
int hsm_list(struct hsm *h, struct hsm_object **objs_out, size_t *n_out);
void hsm_objects_free(struct hsm_object *objs, size_t n);

/* Generate a key pair in the token: RSA (bits 2048, 3072, 4096) or EC
 * (bits 256 = P-256, 384 = P-384).  Private key: CKA_TOKEN, CKA_PRIVATE,
 * CKA_SENSITIVE, !CKA_EXTRACTABLE, CKA_SIGN, and CKA_DECRYPT|CKA_UNWRAP (RSA)
 * or CKA_DERIVE (EC).  A fresh CKA_ID (see HSM_ID_MAX); label = label.  On success
 * *ref_out names the pair. */
int hsm_keygen(struct hsm *h, const char *label, enum hsm_key_type type, unsigned bits,
               struct hsm_keyref *ref_out, char *err, size_t errlen);

/* Import the private key of key (RSA or EC; not consumed, still the
 * caller's) as a sensitive, non-extractable token object, plus its public
 * key object, with a fresh CKA_ID.  Host copies of the private parts are
 * wiped before return. */
int hsm_import_key(struct hsm *h, const char *label, const EVP_PKEY *key,
                   struct hsm_keyref *ref_out, char *err, size_t errlen);

/* Store a DER certificate with ref's label and id (category HSM_CERT_*). */
int hsm_store_cert(struct hsm *h, const struct hsm_keyref *ref, int category,
                   const unsigned char *der, size_t der_len, char *err, size_t errlen);

/* Destroy every object with this id (and this label).  Used to delete a
 * name and to roll back a half-done import.  Missing objects are not an
 * error; *n_out (may be NULL) counts what was destroyed. */
int hsm_delete(struct hsm *h, const struct hsm_keyref *ref, size_t *n_out);

/* The public half of a key pair, built from the public key object
 * (RSA modulus/exponent, EC params/point).  *pub_out is the caller's. */
int hsm_public_key(struct hsm *h, const struct hsm_keyref *ref, EVP_PKEY **pub_out);

/* RFC 7512 URI of the private key, e.g.
 * "pkcs11:token=sealgate;id=%0a%1b...;object=org;type=private" (never a
 * PIN).  Writes at most cap bytes including the NUL. */
void hsm_key_uri(const struct hsm *h, const struct hsm_keyref *ref, char *buf, size_t cap);

/* ---- private-key operations ------------------------------------------ */

/*
 * A worker is a thread's view of the token.  hsm_worker_pkey() returns an
 * EVP_PKEY (RSA or EC) whose private operations run in the token; it is
 * borrowed: valid on this thread until the next hsm_worker_* call on w, and
 * never freed by the caller.  Keys are found once and cached per worker.
 *
 * Remote mode: when the token server dies, every handle of the old
 * connection is dead.  After any failed operation call
 * hsm_worker_check(): it returns SG_ETEMP if the connection is gone (the
 * worker reconnects on its next use, and the operation should be retried
 * later), or 0 if the connection is healthy (the failure was the
 * operation's own).  A worker that cannot reconnect answers SG_ETEMP.
 */
struct hsm_worker;

int hsm_worker_new(struct hsm *h, struct hsm_worker **out, char *err, size_t errlen);
void hsm_worker_free(struct hsm_worker *w);
int hsm_worker_pkey(struct hsm_worker *w, const struct hsm_keyref *ref, EVP_PKEY **pkey_out);
int hsm_worker_check(struct hsm_worker *w);
/* Remote: drop this worker's connection (and every EVP_PKEY it handed
 * out); the next hsm_worker_pkey reconnects.  For a failure check() could
 * not pin on the server (it may have died and come back between the
 * operation and the check): retry once on a fresh connection before
 * calling the failure the operation's own.  No-op in-process. */
void hsm_worker_reset(struct hsm_worker *w);
/* Connections (re)built by this worker, for tests and logs. */
unsigned hsm_worker_generation(const struct hsm_worker *w);

/* Create the token: on the first free (uninitialised) slot of the module
 * (HSM_INPROCESS: the SoftHSM2 named by p->softhsm_conf), C_InitToken
 * with label p->token and so_pin, then C_InitPIN with user_pin.  Refuses
 * (SG_EEXIST) if a token with that label already exists.  Used by
 * `sealctl init`; p->pin_file is not read. */
int hsm_token_init(const struct hsm_params *p, const char *so_pin, const char *user_pin,
                   char *err, size_t errlen);

/* Read the first line of a PIN or password file (trailing CR/LF stripped)
 * into buf (cap bytes).  With must_be_private, refuse a file that is not a
 * regular file or is readable/writable by group or others.  buf is wiped
 * on failure.  Shared by the PIN, `--password-file` and backups. */
int hsm_read_secret_file(const char *path, bool must_be_private, char *buf, size_t cap,
                         char *err, size_t errlen);

#endif
