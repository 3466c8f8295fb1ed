/*
 * sl_check - what `sealload sink --verify/--decrypt` checks in each
 * message it receives, with OpenSSL's CMS (RFC 5652, RFC 8551).
 *
 * Verify: the message must be S/MIME signed (multipart/signed or
 * application/pkcs7-mime signed-data) and its signature must verify with
 * the given certificate as the signer (CMS_NOINTERN: certificates the
 * message carries are not used; no chain or purpose check, since the
 * question is "did this key sign it").  Decrypt: the message must be
 * enveloped data that opens with the given certificate and key.  With
 * both, the decrypted entity is what gets verified (sign, then encrypt).
 *
 * Callers: sl_sink.c, on its worker loops (a check blocks that loop for
 * the time of one CMS operation: the sink is a test tool, and --threads
 * spreads the work).  The message is untrusted: any bytes give a result,
 * never a crash.  The certificate and key files are the user's.
 * Ownership: struct sl_check owns its OpenSSL objects; it is read-only
 * after sl_check_new and shared by the worker threads.
 */
#ifndef SEALGATE_SL_CHECK_H
#define SEALGATE_SL_CHECK_H

#include <stddef.h>

struct sl_check;

enum sl_check_outcome { SL_CHECK_SKIPPED = 0, SL_CHECK_OK, SL_CHECK_FAILED };

struct sl_check_result {
  enum sl_check_outcome verify, decrypt;
};

/* Load the files (PEM); either part may be NULL.  0, or SG_EIO /
 * SG_EINVAL with err naming the file. */
int sl_check_new(const char *verify_cert, const char *decrypt_cert, const char *decrypt_key,
                 struct sl_check **out, char *err, size_t errlen);
void sl_check_free(struct sl_check *k);
void sl_check_message(const struct sl_check *k, const char *msg, size_t len, struct sl_check_result *out);

#endif
