/*
 * outgoing - the outgoing S/MIME transformation of one message under a
 * sending profile (R1-R4, R22-R25): look up every envelope recipient's
 * encryption certificate, then sign, encrypt, sign-then-encrypt or
 * triple-wrap (RFC 2634) the message's MIME entity.
 *
 * It decides nothing about delivery: when recipients lack keys it says
 * which (OUTGOING_NOKEYS) and the caller applies missing_key_action
 * (bounce, drop, split).  The copy made for recipients without keys after
 * a split is processed with plain_copy set: signed when the mode signs,
 * otherwise passed through unchanged.
 *
 * Runs on a crypto worker thread (cryptopool), with that thread's
 * hsm_worker.  Trusts the profile and signer (from the validated config
 * and the token); the message bytes are untrusted (crypto/mime.c parses
 * them).  Ownership: the request borrows everything it points to; the
 * result owns its buffer and array (outgoing_result_free).
 */
#ifndef SEALGATE_OUTGOING_H
#define SEALGATE_OUTGOING_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <openssl/x509.h>

#include "core/buf.h"
#include "core/config.h"
#include "hsm/hsm.h"

struct keystore;
struct keycache;

/* The organisation's signing key and certificates, as the keyring had them
 * when the job was made (up-referenced copies: see keyring_signer). */
struct outgoing_signer {
  struct hsm_keyref ref;
  X509 *cert;
  STACK_OF(X509) *chain; /* never NULL */
};

struct outgoing_request {
  const struct config_sending_profile *profile;
  const struct outgoing_signer *signer; /* NULL when the mode does not sign */
  struct keystore *keys;                /* recipient certificates */
  struct keycache *cache;               /* in front of keys (may be NULL: keys asked directly) */
  bool plain_copy;                      /* the split-off copy for recipients without keys */
  const char *data;                     /* the message as received */
  size_t len;
  char **consume;                       /* if set, *consume is data: freed (and set
                                           NULL) once the entity is made, so a large
                                           message is not held three times */
  char *const *rcpts;                   /* envelope recipients */
  size_t n_rcpts;
  time_t now;
};

enum outgoing_status {
  OUTGOING_DONE = 0, /* out holds the message for every recipient */
  OUTGOING_NOKEYS,   /* keyed[] says who has a key; nothing was made */
  OUTGOING_TEMP,     /* the token is unreachable: keep the message, retry */
  OUTGOING_FAIL,     /* permanent: signing failed (R25) or the message cannot be processed */
};

struct outgoing_result {
  enum outgoing_status status;
  char reason[256];   /* TEMP and FAIL: why, for logs and DSNs */
  const char *action; /* static: "sign", "encrypt", "sign-encrypt", "triple", "relay" */
  struct buf out;     /* DONE: the whole message to send */
  bool *keyed;        /* n_rcpts entries (NOKEYS and DONE with encryption) */
  bool all_gcm;       /* every recipient's key announced AES-256-GCM (encryption: auto) */
  size_t n_keyed;
};

/* Never fails outright: every outcome is in res (free with
 * outgoing_result_free even on FAIL). */
void outgoing_process(struct hsm_worker *w, const struct outgoing_request *rq,
                      struct outgoing_result *res);
void outgoing_result_free(struct outgoing_result *res);

/* The action name of a profile's mode ("sign", ...), for logs. */
const char *outgoing_action(const struct config_sending_profile *p, bool plain_copy);

#endif
