/*
 * keyring - the running daemon's keys: the supervised token server (remote
 * mode), the open token, the crypto worker pool and the loaded
 * organisation certificates.
 *
 * Process layout (docs/HSM.md): with `hsm.module: remote`, keyring_start()
 * forks the token server's keeper before any thread exists.  Started as
 * root with `user:`, the token server runs as hsm.server_user (default
 * sealgate-hsm), which alone owns hsm/tokens (0700) and softhsm2.conf; the
 * gateway keeps only the PIN file and a connection to the server's socket.
 *
 * Called by core/daemon.c on the main thread: start before threads,
 * open after privileges are dropped, reload on `keys reload` and config
 * reloads, check for `cert check`, stop at exit.  Functions may block on
 * the token (the main loop is not a shard loop; shards never call this).
 */
#ifndef SEALGATE_KEYRING_H
#define SEALGATE_KEYRING_H

#include <stddef.h>

#include "core/buf.h"
#include "core/config.h"
#include "crypto/cryptopool.h"
#include "crypto/incoming.h"
#include "crypto/outgoing.h"

struct keyring;

/* Before any thread: for remote mode, start the token server (as its own
 * user when root with `user:`).  *out is the caller's until keyring_stop. */
int keyring_start(const struct config *cfg, struct keyring **out, char *err, size_t errlen);

/* After privileges are dropped: open the token, load the certificates,
 * check them against cfg (certstore_check_config), start the workers. */
int keyring_open(struct keyring *k, const struct config *cfg, char *err, size_t errlen);

/* Load the certificates again (after sealctl changed the token, the key
 * store, or the config changed) and check them against cfg; rebuild the
 * verification anchors from the key store and drop the key cache.  On
 * failure the old set stays and err says why. */
int keyring_reload(struct keyring *k, const struct config *cfg, char *err, size_t errlen);

/* Main thread, about once a second: after a token server restart that a
 * reload could not reconnect to (the server was still starting), try
 * again, so the workers come back without anyone reloading.  Also drops
 * the key cache when the key store changed (any process), and writes the
 * use times of harvested keys the cache served (R20) every few minutes. */
void keyring_tick(struct keyring *k);

/* `cert check NAME COUNT`: COUNT signatures with NAME's current key on the
 * crypto workers, each verified with the certificate; a one-line report
 * in out. */
int keyring_check(struct keyring *k, const char *name, unsigned long count, struct buf *out,
                  char *err, size_t errlen);

/* ---- for the mail path (any thread) ---- */

/* The current key pair and certificates of name, up-referenced into *out
 * (free with keyring_signer_free).  SG_ENOTFOUND if the token has no
 * certificate of that name. */
int keyring_signer(struct keyring *k, const char *name, struct outgoing_signer *out);
void keyring_signer_free(struct outgoing_signer *s);

/* The key store of others' public keys (read-only, may be NULL if it
 * could not be opened: then nobody has a key). */
struct keystore *keyring_keystore(struct keyring *k);

/* ---- incoming S/MIME (#5) ---- */

/* What one incoming job needs, as the keyring has it now: every key pair
 * of the token with a certificate and a private key (current and older
 * ones: mail from before a renewal, R14), and the verification anchors.
 * Up-referenced: free with keyring_incoming_free (any thread). */
struct keyring_incoming {
  struct decrypt_key *keys;
  size_t n_keys;
  struct keyring_trust *trust_ref; /* keeps trust alive */
  const struct verify_trust *trust;
  struct incoming_guard *guard;
};
int keyring_incoming(struct keyring *k, struct keyring_incoming *out);
void keyring_incoming_free(struct keyring_incoming *s);

/* The lock-free cache of recipients' keys (crypto/keycache.h). */
struct keycache *keyring_keycache(struct keyring *k);

/* Crypto worker, after incoming_process: keep the signer's certificate if
 * flow allows it (R17-R19); logs what happened, with queue_id. */
void keyring_harvest(struct keyring *k, const struct config *cfg, const struct config_flow_policy *flow,
                     const struct incoming_result *res, const char *queue_id);

/* Run job on a crypto worker.  SG_ETEMP while the workers are being
 * rebuilt (the job is not run: retry later). */
int keyring_submit(struct keyring *k, struct cryptopool_job *job);

/* Stop workers, close the token, stop the token server.  NULL is a no-op. */
void keyring_stop(struct keyring *k);

#endif
