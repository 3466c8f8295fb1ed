/* certcache - see certcache.h. */
#include "crypto/certcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

/* One DER element: tag, header length, content length. */
struct certcache__tlv {
  const unsigned char *p;
  size_t hdr, len;
  unsigned char tag;
};

/* The element at p (avail bytes left), definite length only. */
static bool certcache__tlv(const unsigned char *p, size_t avail, struct certcache__tlv *out) {
  if (avail < 2 || (p[0] & 0x1f) == 0x1f) return false; /* no high tag numbers here */
  size_t hdr = 2, len = p[1];
  if (len & 0x80) {
    size_t k = len & 0x7f;
    if (k == 0 || k > 4 || avail < 2 + k) return false; /* 0: BER indefinite length */
    len = 0;
    for (size_t i = 0; i < k; i++) len = len << 8 | p[2 + i];
    hdr += k;
  }
  if (len > avail - hdr) return false;
  *out = (struct certcache__tlv){p, hdr, len, p[0]};
  return true;
}

static const unsigned char *certcache__end(const struct certcache__tlv *t) { return t->p + t->hdr + t->len; }

/* The element after prev inside parent, with the given tag. */
static bool certcache__next(const struct certcache__tlv *parent, const unsigned char *at, unsigned char tag,
                            struct certcache__tlv *out) {
  const unsigned char *end = certcache__end(parent);
  return at < end && certcache__tlv(at, (size_t)(end - at), out) && out->tag == tag;
}

static size_t certcache__put_len(unsigned char *out, size_t len) {
  if (len < 0x80) {
    out[0] = (unsigned char)len;
    return 1;
  }
  size_t k = len > 0xffffff ? 4 : len > 0xffff ? 3 : len > 0xff ? 2 : 1;
  out[0] = (unsigned char)(0x80 | k);
  for (size_t i = 0; i < k; i++) out[1 + i] = (unsigned char)(len >> (8 * (k - 1 - i)));
  return 1 + k;
}

/* Where the pieces of a ContentInfo/SignedData with a certificate set are. */
struct certcache__shape {
  struct certcache__tlv ci, oid, sd, certs;
  const unsigned char *certs_end;
  size_t n_certs;
  struct certcache__tlv cert[CERTCACHE_MAX_CERTS];
};

static const unsigned char certcache__signed_oid[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02};

/* true only for the one shape the fast path handles (certcache.h). */
static bool certcache__find(const unsigned char *der, size_t len, struct certcache__shape *s) {
  struct certcache__tlv ex, v, algs, encap;
  if (!certcache__tlv(der, len, &s->ci) || s->ci.tag != 0x30 || certcache__end(&s->ci) != der + len) return false;
  if (!certcache__next(&s->ci, der + s->ci.hdr, 0x06, &s->oid) ||
      s->oid.hdr + s->oid.len != sizeof certcache__signed_oid ||
      memcmp(s->oid.p, certcache__signed_oid, sizeof certcache__signed_oid) != 0)
    return false;
  if (!certcache__next(&s->ci, certcache__end(&s->oid), 0xa0, &ex) || certcache__end(&ex) != certcache__end(&s->ci))
    return false;
  if (!certcache__next(&ex, ex.p + ex.hdr, 0x30, &s->sd) || certcache__end(&s->sd) != certcache__end(&ex)) return false;
  if (!certcache__next(&s->sd, s->sd.p + s->sd.hdr, 0x02, &v) ||
      !certcache__next(&s->sd, certcache__end(&v), 0x31, &algs) ||
      !certcache__next(&s->sd, certcache__end(&algs), 0x30, &encap) ||
      !certcache__next(&s->sd, certcache__end(&encap), 0xa0, &s->certs))
    return false;
  s->certs_end = certcache__end(&s->certs);
  s->n_certs = 0;
  for (const unsigned char *at = s->certs.p + s->certs.hdr; at < s->certs_end;) {
    if (s->n_certs == CERTCACHE_MAX_CERTS || !certcache__next(&s->certs, at, 0x30, &s->cert[s->n_certs]))
      return false; /* too many, or not a plain certificate */
    at = certcache__end(&s->cert[s->n_certs++]);
  }
  return s->n_certs > 0;
}

/* der without the certificate set, lengths fixed up; malloc'd. */
static unsigned char *certcache__strip(const struct certcache__shape *s, size_t *out_len) {
  size_t cut = s->certs.hdr + s->certs.len;
  size_t sd_len = s->sd.len - cut;
  unsigned char l1[5], l2[5], l3[5];
  size_t n3 = certcache__put_len(l3, sd_len);
  size_t ex_len = 1 + n3 + sd_len;
  size_t n2 = certcache__put_len(l2, ex_len);
  size_t ci_len = s->oid.hdr + s->oid.len + 1 + n2 + ex_len;
  size_t n1 = certcache__put_len(l1, ci_len);
  unsigned char *out = malloc(1 + n1 + ci_len), *w = out;
  if (out == NULL) return NULL;
  *w++ = 0x30, memcpy(w, l1, n1), w += n1;
  memcpy(w, s->oid.p, s->oid.hdr + s->oid.len), w += s->oid.hdr + s->oid.len;
  *w++ = 0xa0, memcpy(w, l2, n2), w += n2;
  *w++ = 0x30, memcpy(w, l3, n3), w += n3;
  const unsigned char *body = s->sd.p + s->sd.hdr;
  memcpy(w, body, (size_t)(s->certs.p - body)), w += s->certs.p - body;
  memcpy(w, s->certs_end, (size_t)(certcache__end(&s->sd) - s->certs_end)), w += certcache__end(&s->sd) - s->certs_end;
  *out_len = (size_t)(w - out);
  return out;
}

/* ---- the table ---------------------------------------------------------------- */

static pthread_mutex_t certcache__mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  unsigned char key[32];
  X509 *x;
} certcache__slot[CERTCACHE_SLOTS];
static unsigned certcache__next_slot;
static atomic_ulong certcache__fast, certcache__decoded;
static EVP_MD *certcache__sha256; /* fetched once: an implicit fetch per digest costs more than the digest */
static pthread_once_t certcache__once = PTHREAD_ONCE_INIT;

static void certcache__init(void) { certcache__sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); }

/* The cached certificate with this key, with a reference for the caller;
 * NULL if none.  Under certcache__mu. */
static X509 *certcache__find_locked(const unsigned char key[32]) {
  for (unsigned i = 0; i < CERTCACHE_SLOTS; i++)
    if (certcache__slot[i].x != NULL && memcmp(certcache__slot[i].key, key, 32) == 0)
      return X509_up_ref(certcache__slot[i].x) == 1 ? certcache__slot[i].x : NULL;
  return NULL;
}

/* The decoded certificate for these DER bytes (a reference the caller
 * frees), from the table or decoded now and put in it. */
static X509 *certcache__get(const struct certcache__tlv *t) {
  size_t n = t->hdr + t->len;
  unsigned char key[32];
  unsigned int key_len = 0;
  pthread_once(&certcache__once, certcache__init);
  if (certcache__sha256 == NULL || EVP_Digest(t->p, n, key, &key_len, certcache__sha256, NULL) != 1) return NULL;
  pthread_mutex_lock(&certcache__mu);
  X509 *x = certcache__find_locked(key);
  pthread_mutex_unlock(&certcache__mu);
  if (x != NULL) return x;
  const unsigned char *p = t->p;
  x = d2i_X509(NULL, &p, (long)n); /* outside the lock: this is the slow part */
  if (x == NULL || p != t->p + n) { /* trailing bytes: not this path's shape */
    X509_free(x);
    return NULL;
  }
  atomic_fetch_add(&certcache__decoded, 1);
  pthread_mutex_lock(&certcache__mu);
  X509 *had = certcache__find_locked(key), *old = NULL; /* another worker may have put it meanwhile */
  if (had == NULL && X509_up_ref(x) == 1) {
    unsigned i = certcache__next_slot++ % CERTCACHE_SLOTS;
    old = certcache__slot[i].x;
    memcpy(certcache__slot[i].key, key, sizeof key);
    certcache__slot[i].x = x; /* the table's reference */
  }
  pthread_mutex_unlock(&certcache__mu);
  X509_free(old);
  if (had != NULL) {
    X509_free(x);
    x = had;
  }
  return x;
}

/* The stripped structure with the certificates put back; NULL to take
 * the plain path. */
static CMS_ContentInfo *certcache__fast_path(const struct certcache__shape *s) {
  size_t len = 0;
  unsigned char *stripped = certcache__strip(s, &len);
  if (stripped == NULL) return NULL;
  const unsigned char *p = stripped;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  bool ok = cms != NULL && p == stripped + len && OBJ_obj2nid(CMS_get0_type(cms)) == NID_pkcs7_signed;
  free(stripped);
  for (size_t i = 0; ok && i < s->n_certs; i++) {
    X509 *x = certcache__get(&s->cert[i]);
    ok = x != NULL && CMS_add1_cert(cms, x) == 1; /* fails on a duplicate: then the plain path */
    X509_free(x);
  }
  if (!ok) {
    CMS_ContentInfo_free(cms);
    return NULL;
  }
  atomic_fetch_add(&certcache__fast, 1);
  return cms;
}

CMS_ContentInfo *certcache_d2i_cms(const unsigned char *der, size_t len) {
  struct certcache__shape s;
  if (len > 0 && len <= 0x7fffffff && certcache__find(der, len, &s)) {
    CMS_ContentInfo *cms = certcache__fast_path(&s);
    if (cms != NULL) return cms;
    ERR_clear_error();
  }
  const unsigned char *p = der;
  return len <= 0x7fffffff ? d2i_CMS_ContentInfo(NULL, &p, (long)len) : NULL;
}

void certcache_stats(unsigned long *fast, unsigned long *decoded) {
  *fast = atomic_load(&certcache__fast);
  *decoded = atomic_load(&certcache__decoded);
}
