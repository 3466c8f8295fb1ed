/*
 * certcache - CMS SignedData parsing with the embedded certificates
 * decoded once per distinct certificate instead of once per message.
 *
 * Why: OpenSSL 3.0 decodes every certificate's public key through its
 * provider decoders when it parses a CMS structure, and that was 59 % of
 * verifying a 4 KiB signed message (bench/RESULTS.md, issue #5).  A
 * partner sends the same certificate with every message, so the decoded
 * X509 is kept, keyed by the SHA-256 of its exact DER bytes.
 *
 * Owns a small process-wide table (CERTCACHE_SLOTS decoded certificates,
 * replaced round robin) behind one mutex; the X509 objects in it are
 * shared read-only with the CMS structures handed out (OpenSSL reference
 * counts and locks them).  Callers: crypto/verify.c on any crypto worker;
 * tests; bench.
 *
 * Trust: the DER is the sender's and untrusted.  The fast path accepts
 * exactly one shape: a definite-length ContentInfo holding a SignedData
 * whose certificate set holds plain certificates (at most
 * CERTCACHE_MAX_CERTS, no two alike); it takes the certificate set out of
 * the DER, lets OpenSSL parse the rest, and adds the cached certificates
 * back in their order.  A certificate's bytes are its key: a different
 * byte anywhere is a different certificate.  Anything else (BER
 * indefinite lengths, other certificate choices, duplicates, trailing
 * bytes, a DER OpenSSL refuses) takes the plain path, d2i_CMS_ContentInfo
 * on the whole input, so the result never depends on the cache.  The
 * signature does not cover the certificate set, so taking it out and
 * putting the same certificates back changes no verification outcome.
 */
#ifndef SEALGATE_CERTCACHE_H
#define SEALGATE_CERTCACHE_H

#include <stddef.h>

#include <openssl/cms.h>

#define CERTCACHE_SLOTS 64    /* decoded certificates kept */
#define CERTCACHE_MAX_CERTS 8 /* more in one message: the plain path (no cache churn) */

/* Parse der as d2i_CMS_ContentInfo would (NULL when it is not a CMS
 * structure); the result is the caller's (CMS_ContentInfo_free). */
CMS_ContentInfo *certcache_d2i_cms(const unsigned char *der, size_t len);

/* How many parses took the cached path and how many certificates were
 * decoded (for tests and benchmarks). */
void certcache_stats(unsigned long *fast, unsigned long *decoded);

#endif
