/*
 * decrypt - opening a CMS EnvelopedData or AuthEnvelopedData of incoming
 * mail with the organisation's keys in the token (R6, R14, RFC 5652,
 * RFC 5083/5084).
 *
 * Decides which organisation keys to try from the RecipientInfos
 * (issuer and serial, or subject key identifier, against each candidate
 * certificate: current and older ones, expired included, since mail sent
 * before a renewal must still open), and tries each match at most once,
 * within a budget.  EFAIL and oracle rules (DESIGN.md "S/MIME"): the
 * content-encryption algorithm must fit the content type (CBC and other
 * non-AEAD ciphers only in EnvelopedData, GCM only in AuthEnvelopedData);
 * plaintext goes to the caller's sink and is only valid when 0 is
 * returned (a GCM tag is checked after the last byte: the caller must
 * discard the sink on any failure); every failure that depends on the key
 * or the ciphertext is the one code SG_EPERM (the detail is for the log,
 * never for the sender).
 *
 * Callers: crypto/incoming.c on a crypto worker, with that thread's
 * hsm_worker; tests; bench.  Trusts the candidate list (the token's own
 * certificates); the CMS bytes are untrusted.
 *
 * Ownership: inputs are borrowed; the sink BIO stays the caller's.  The
 * token keys are the worker's (hsm_worker_pkey); a call holds no key past
 * its return.  No global state: one call per worker at a time, any number
 * of workers in parallel.
 */
#ifndef SEALGATE_DECRYPT_H
#define SEALGATE_DECRYPT_H

#include <stddef.h>
#include <openssl/bio.h>
#include <openssl/x509.h>

#include "hsm/hsm.h"

struct decrypt_key {
  const struct hsm_keyref *ref; /* the private key in the token */
  X509 *cert;                   /* its certificate (identifies the RecipientInfo) */
};

struct decrypt_limits {
  size_t max_recipient_infos; /* more are refused before any key work (default 64) */
  size_t max_attempts;        /* private-key operations per message (default 4) */
  size_t max_size;            /* DER bytes accepted (default 64 MiB) */
};
#define DECRYPT_LIMITS_DEFAULT {64, 4, (size_t)64 << 20}

/*
 * der/len: the ContentInfo (id-envelopedData or id-ct-authEnvelopedData),
 * DER or BER, with nothing after it.  keys: the candidates, in the order
 * to try them (NULL ref or cert: skipped).  lim NULL: the defaults.
 *
 * On 0 the whole plaintext was written to sink (and sink flushed).  On any
 * other return the sink may hold bytes (CBC garbage, or GCM plaintext
 * whose tag then failed): the caller must discard it, so write into a
 * memory BIO or an unlinked temp file and release it only on 0.
 *
 * Errors: SG_EPERM (no candidate matches any RecipientInfo, every match
 * failed, cipher/content-type mismatch, an unknown cipher, GCM tag wrong,
 * padding wrong), SG_ELIMIT (a budget: size, recipients, key operations),
 * SG_EINVAL (not an enveloped ContentInfo, malformed, trailing bytes, bad
 * arguments), SG_ETEMP (the token is unreachable, or w is NULL, when a
 * key operation is needed: retry later), SG_EIO (writing to or flushing
 * the sink failed).  Budgets are checked before
 * any key work; the cipher check too.  Every failure of a key operation or
 * of the content's decryption has the same words in the detail
 * ("decryption failed with key NAME"): no padding oracle in the log.
 *
 * detail gets one log line in every case (cut at dlen), of the form
 *   "enveloped-data aes-256-cbc: 2 recipients: opened with key org; key operations: 1"
 * naming the key labels that matched and what happened to each, the
 * budget hit if any, and always ending in "key operations: N" (private-key
 * operations made; 0 when the message was refused before key work).
 * Never a byte of key material or plaintext.
 * *kind_out (may be NULL): "enveloped-data" or "authEnveloped-data" once
 * the content type is known, else NULL.
 *
 * RSA key transport: PKCS#1 v1.5 and OAEP (tested in process; PKCS#1
 * v1.5 through the remote token server too).  EC key
 * agreement (KeyAgreeRecipientInfo, ECDH) needs derive in the token: in
 * process only (the p11-kit RPC does not forward it); elsewhere such a
 * match is an ordinary failed attempt.
 */
int decrypt_cms(struct hsm_worker *w, const unsigned char *der, size_t len, const struct decrypt_key *keys,
                size_t n_keys, const struct decrypt_limits *lim, BIO *sink, const char **kind_out,
                char *detail, size_t dlen);

/* A memory sink for the plaintext of a der_len-byte CMS, sized once (the
 * plaintext is never longer than the DER; a memory BIO that grows would
 * re-allocate, and wipe, each time).  NULL without memory; BIO_free it. */
BIO *decrypt_sink_mem(size_t der_len);

#endif
