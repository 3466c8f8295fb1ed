/*
 * certstore - the organisation's certificates, named, as the token holds
 * them.  The token is the only store: each key pair carries CKA_LABEL =
 * the certificate's name and a random CKA_ID shared by its private key,
 * public key, certificate (category entity) and chain certificates
 * (category authority).  Renewal adds a key pair under the same name; the
 * older pairs stay, so mail encrypted to them still decrypts (R14).  The
 * current certificate of a name is the one with the latest notBefore.
 *
 * Callers: sealctl (create, import, delete, list), the daemon at start and
 * reload (load).  Everything here calls the token: never on a loop thread.
 * Trusts: the hsm layer; a certificate read back from the token is parsed
 * with d2i_X509 and skipped (with a warning) if it does not parse.
 *
 * Ownership: struct certstore and everything reachable from it belong to
 * the caller of certstore_load() until certstore_free().  Returns 0 or a
 * negative enum sgerr; err names what was wrong.
 */
#ifndef SEALGATE_CERTSTORE_H
#define SEALGATE_CERTSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/x509.h>

#include "core/config.h"
#include "crypto/cert.h"
#include "hsm/hsm.h"

struct certstore_key {
  struct hsm_keyref ref;
  X509 *cert;            /* its entity certificate; NULL if the pair has none */
  bool has_private;      /* false: a certificate whose private key is gone */
  enum hsm_key_type key_type;
  unsigned key_bits;
  STACK_OF(X509) *chain; /* authority certificates stored with it (never NULL) */
};

struct certstore_entry {
  char name[HSM_LABEL_MAX];
  struct certstore_key *keys; /* current first, then older by notBefore */
  size_t n_keys;
};

struct certstore {
  struct certstore_entry *entries; /* sorted by name */
  size_t n;
};

int certstore_load(struct hsm *h, struct certstore **out);
void certstore_free(struct certstore *s);
const struct certstore_entry *certstore_find(const struct certstore *s, const char *name);

/* Names: 1-64 of [A-Za-z0-9._-], starting with a letter or digit. */
int certstore_name_check(const char *name, char *err, size_t errlen);

/* Key pair in the token, self-signed certificate for it (cert.h), both
 * stored under name.  An existing name is refused unless renew.  On any
 * failure nothing of the new pair remains in the token.  *cert_out (may
 * be NULL) receives the new certificate, the caller's. */
int certstore_create(struct hsm *h, const char *name, const struct cert_request *r,
                     enum hsm_key_type type, unsigned bits, bool renew, X509 **cert_out,
                     char *err, size_t errlen);

/* Private key (sensitive, not extractable), certificate and chain from a
 * loaded PKCS#12 into the token under name; then a test signature through
 * the token must verify with the certificate.  Same rules as create. */
int certstore_import(struct hsm *h, const char *name, const struct cert_p12 *p12, bool renew,
                     char *err, size_t errlen);

/* Every key pair and certificate under name.  SG_ENOTFOUND if none. */
int certstore_delete(struct hsm *h, const char *name, char *err, size_t errlen);

/* Where cfg uses certificate name ("sending profile signenc", "listener
 * main (tls_certificate)"), written to buf; false if nowhere. */
bool certstore_used_by(const struct config *cfg, const char *name, char *buf, size_t cap);

/*
 * Check the token against cfg: every certificate the config names exists
 * with a private key; in remote mode no EC certificate meant for
 * encryption (keyAgreement) exists, because the p11-kit RPC forwards no
 * ECDH and such mail could never be decrypted.  Returns SG_ECONFIG with
 * the first problem in err.
 */
int certstore_check_config(const struct certstore *s, const struct config *cfg, char *err,
                           size_t errlen);

/* Sign a fixed test digest with key through w and verify it with cert's
 * public key: proves key and certificate belong together and the token
 * works.  SG_ETEMP when the token is unreachable. */
int certstore_selftest(struct hsm_worker *w, const struct hsm_keyref *ref, X509 *cert,
                       char *err, size_t errlen);

/* The token parameters of cfg.  server_address NULL: the administrator's
 * view (remote means the instance's SoftHSM2 loaded in this process, on
 * its token files); else the daemon's view of a remote token.  Strings
 * point into cfg and server_address. */
void certstore_hsm_params(const struct config *cfg, const char *server_address,
                          struct hsm_params *out);

/* The instance's hsm folder (where softhsm2.conf, tokens/, the PINs and
 * the token server's run/ live): the folder of hsm.softhsm_conf. */
void certstore_hsm_dir(const struct config *cfg, char *buf, size_t cap);

#endif
