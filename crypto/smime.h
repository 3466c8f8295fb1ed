/*
 * smime - the CMS operations of outgoing S/MIME (RFC 5652, RFC 8551) on a
 * canonical MIME entity (crypto/mime.h): sign (detached multipart/signed
 * or opaque signed-data), encrypt (EnvelopedData AES-256-CBC or
 * AuthEnvelopedData AES-256-GCM), and putting a message back together.
 * Sign-then-encrypt and triple wrapping (RFC 2634: sign, encrypt, sign)
 * are compositions the caller makes of these.
 *
 * Choices (DESIGN.md "S/MIME"): SHA-256; RSA PKCS#1 v1.5 signatures unless
 * PSS is asked for; ECDSA for EC keys; RSA PKCS#1 v1.5 key transport
 * unless OAEP; signed attributes contentType, signingTime, messageDigest
 * and our own SMIMECapabilities (AES-256-GCM, AES-128-GCM, AES-256-CBC,
 * AES-128-CBC, RSAES-OAEP; never OpenSSL's default list with RC2/DES);
 * the signer's certificate and its chain included so recipients can
 * harvest them.  Output is 7-bit (base64), CRLF, lines under 998 octets.
 * Large inputs stream (CMS_STREAM) instead of being copied around.
 *
 * Callers: crypto/outgoing.c on crypto worker threads; tests; bench.
 * Thread-safe (no shared state).  Inputs are trusted to be what mime.h
 * produced (the caller's), keys and certificates the caller checked.
 * The signing key may live in a token (libp11 EVP_PKEY): a failure of the
 * private-key operation returns SG_EIO and the caller asks the hsm worker
 * whether the token is reachable.
 *
 * Ownership: outputs are appended to a caller's struct buf; inputs are
 * borrowed.  Returns 0 or a negative enum sgerr with err filled.
 */
#ifndef SEALGATE_SMIME_H
#define SEALGATE_SMIME_H

#include <stddef.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/buf.h"

/* (SMIME_DETACHED is taken: OpenSSL defines it as a PKCS7 flag.) */
enum smime_sign_mode { SMIME_SIGN_DETACHED = 0, SMIME_SIGN_OPAQUE = 1 };
enum smime_signature { SMIME_SIG_PKCS1 = 0, SMIME_SIG_PSS = 1 };      /* RSA only */
enum smime_cipher { SMIME_AES256_CBC = 0, SMIME_AES256_GCM = 1 };
enum smime_key_transport { SMIME_KT_PKCS1 = 0, SMIME_KT_OAEP = 1 };  /* RSA recipients */

struct smime_signer {
  EVP_PKEY *key;          /* private key (usually in the token) */
  X509 *cert;             /* its certificate */
  STACK_OF(X509) *chain;  /* more certificates to include; may be NULL */
  enum smime_signature signature;
};

/*
 * Sign entity (Content-* headers, empty line, body; CRLF) and append the
 * resulting MIME entity to out: "Content-Type: multipart/signed;
 * protocol="application/pkcs7-signature"; micalg=sha-256; boundary=..."
 * with the entity as first part byte for byte and the base64 signature
 * (Content-Type: application/pkcs7-signature; name=smime.p7s) as second;
 * or, opaque, "Content-Type: application/pkcs7-mime;
 * smime-type=signed-data; name=smime.p7m" with the base64 SignedData.
 * No MIME-Version field (smime_compose adds it).
 */
int smime_sign(const char *entity, size_t len, const struct smime_signer *s,
               enum smime_sign_mode mode, struct buf *out, char *err, size_t errlen);

/*
 * The same detached signature, made around an entity that is already in a
 * buffer: io->data[off..len) is the entity; on success the framing is put
 * around it in place (io grows by the header and the signature part), so
 * a large entity is never copied.  On failure io is unchanged.
 */
int smime_sign_around(struct buf *io, size_t off, const struct smime_signer *s, char *err,
                      size_t errlen);

/*
 * Encrypt entity for every certificate in rcpts (RSA key transport, or
 * ECDH for EC recipients with OpenSSL's defaults) and append the MIME
 * entity "Content-Type: application/pkcs7-mime;
 * smime-type=enveloped-data; name=smime.p7m" (CBC) or
 * "smime-type=authEnveloped-data" (GCM), base64.
 */
int smime_encrypt(const char *entity, size_t len, STACK_OF(X509) *rcpts, enum smime_cipher cipher,
                  enum smime_key_transport kt, struct buf *out, char *err, size_t errlen);

/* The whole message: outer header fields (CRLF-terminated, from
 * mime_split), "MIME-Version: 1.0", then entity.  Appends to out. */
int smime_compose(const char *outer, size_t outer_len, const char *entity, size_t len,
                  struct buf *out);

#endif
