/*
 * incoming - the incoming S/MIME transformation of one message under a
 * flow policy (R5, R6, R14, R31-R33): recognise the S/MIME layers
 * (multipart/signed, application/(x-)pkcs7-mime signed-data,
 * enveloped-data, authEnveloped-data, found by the smime-type parameter or
 * by the content), open them from the outside in (decrypt with the
 * organisation's keys, verify signatures), decide what is delivered
 * (keep_signature) and write the result header (RFC 7281
 * Authentication-Results) after removing any that claims to be ours.
 *
 * Every message is delivered whatever the outcome (R32): the result says
 * what was found, and a message that cannot be decrypted goes on as it
 * came with smime=permerror.  Only a token outage holds a message back
 * (INCOMING_TEMP: it waits and is retried).  Plaintext is released only
 * when decryption succeeded as a whole (a GCM tag is checked after the
 * last byte, so large plaintexts go to an unlinked temp file first).
 *
 * Runs on a crypto worker (its hsm_worker) for core/delivery.c; tests.
 * Trusts the request (validated config, the token's own certificates, a
 * verify_trust built from the key store); the message is untrusted:
 * budgets (layers, RecipientInfos, SignerInfos, certificates, sizes) bound
 * the work one message can cause.
 *
 * Ownership: the request borrows what it points to; the result owns its
 * buffer and the verify_result (incoming_result_free).
 */
#ifndef SEALGATE_INCOMING_H
#define SEALGATE_INCOMING_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "core/buf.h"
#include "core/config.h"
#include "crypto/decrypt.h"
#include "crypto/verify.h"
#include "hsm/hsm.h"

#define INCOMING_MAX_LAYERS 4             /* S/MIME layers opened per message (triple is 3) */
#define INCOMING_SPILL_OVER ((size_t)1 << 20) /* plaintexts larger than this spill to disk */

struct incoming_guard;

struct incoming_request {
  const struct config_flow_policy *flow;
  const char *hostname;                /* authserv-id of our Authentication-Results */
  const struct verify_trust *trust;    /* NULL: no anchors (every signer untrusted) */
  const struct decrypt_key *keys;      /* the organisation's key pairs, current and older */
  size_t n_keys;
  struct incoming_guard *guard;        /* decryption failures per sender (may be NULL) */
  const char *spill_dir;               /* where large plaintexts are spilled (O_TMPFILE); NULL: memory */
  const char *data;                    /* the message as received (CRLF) */
  size_t len;
  time_t now;                          /* the time signers are judged at (the daemon: arrival) */
};

enum incoming_status {
  INCOMING_DONE = 0, /* out holds the message to deliver */
  INCOMING_TEMP,     /* the token is unreachable: keep the message, retry */
};

struct incoming_result {
  enum incoming_status status;
  char reason[256];          /* TEMP: why; DONE: a detail for the log */
  bool smime;                /* R33 smime-gateway-message: an S/MIME layer was found */
  bool verified;             /* R33 smime-gateway-verified: every layer decrypted, every
                                signature passed (and there was at least one layer) */
  bool decrypted;            /* an encryption layer was removed */
  bool has_signature;        /* a signature layer was checked: sig holds it */
  const char *result;        /* "pass", "fail", "policy", "none", "permerror" (static) */
  char result_reason[40];    /* reason= of fail, policy and permerror */
  const char *action;        /* static, for logs: "decrypt-verify", "decrypt", "verify", "check" */
  struct verify_result sig;  /* the signature reported (the innermost one) */
  char from[320];            /* the From address */
  struct buf out;            /* DONE: the message to deliver */
};

void incoming_process(struct hsm_worker *w, const struct incoming_request *rq, struct incoming_result *res);
void incoming_result_free(struct incoming_result *res);

/*
 * Harvesting (R17, R18): may res's signer certificate be kept for
 * encrypting to its owner?  Only when the flow policy enables it, the
 * signature verified (unless harvest.on_failed_verification), the chain
 * validated, the signer matches From, and the certificate is neither
 * expired nor self-signed (unless harvest.expired / harvest.self_signed;
 * a self-signed certificate then also needs no chain).  On true, key gets
 * the record's key (the proven address, or the domain of a domain
 * certificate); on false, *why says which rule refused.
 */
bool incoming_may_harvest(const struct config_flow_policy *flow, const struct incoming_result *res, char *key,
                          size_t cap, const char **why);

/* The SMIMECapabilities bits of res's signer, as the key store keeps them. */
unsigned incoming_caps(const struct incoming_result *res);

/*
 * Oracle guard (DESIGN.md "S/MIME"): failed decryptions counted per
 * sender address; beyond INCOMING_GUARD_FAILS within
 * INCOMING_GUARD_WINDOW seconds no more decryption is tried for that
 * sender (the message gets permerror without a token operation).
 * Thread-safe; owned by the keyring.
 */
#define INCOMING_GUARD_FAILS 10
#define INCOMING_GUARD_WINDOW 600
int incoming_guard_new(struct incoming_guard **out);
void incoming_guard_free(struct incoming_guard *g);

#endif
