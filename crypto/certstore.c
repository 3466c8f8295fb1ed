/*
 * certstore - the organisation's certificates as the token holds them
 * (see certstore.h for the layout of names, ids and renewals).
 *
 * Owns nothing durable itself: the token is the store.  Every write is
 * made so that a failure leaves the token as it was (a created key pair is
 * destroyed again), because a half-imported key would be a key nobody
 * knows about.
 */
#include "crypto/certstore.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/rsa.h>

#include "core/log.h"
#include "core/sgerr.h"

/* ---- loading --------------------------------------------------------------- */

static struct certstore_entry *certstore__entry(struct certstore *s, const char *name) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->entries[i].name, name) == 0) return &s->entries[i];
  struct certstore_entry *e = realloc(s->entries, (s->n + 1) * sizeof *e);
  if (!e) return NULL;
  s->entries = e;
  e = &s->entries[s->n++];
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s", name);
  return e;
}

static bool certstore__same_id(const struct hsm_keyref *a, const struct hsm_keyref *b) {
  return a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

static struct certstore_key *certstore__key(struct certstore_entry *e, const struct hsm_keyref *ref) {
  for (size_t i = 0; i < e->n_keys; i++)
    if (certstore__same_id(&e->keys[i].ref, ref)) return &e->keys[i];
  struct certstore_key *k = realloc(e->keys, (e->n_keys + 1) * sizeof *k);
  if (!k) return NULL;
  e->keys = k;
  k = &e->keys[e->n_keys++];
  memset(k, 0, sizeof *k);
  k->ref = *ref;
  k->chain = sk_X509_new_null();
  return k->chain ? k : NULL;
}

/* Attach one token object to its name and key pair. */
static int certstore__add(struct certstore *s, const struct hsm_object *o) {
  if (o->cls == HSM_OBJ_PUBLIC_KEY) return 0; /* the certificate says more */
  struct certstore_entry *e = certstore__entry(s, o->ref.label);
  struct certstore_key *k = e ? certstore__key(e, &o->ref) : NULL;
  if (!k) return SG_ENOMEM;
  if (o->cls == HSM_OBJ_PRIVATE_KEY) {
    k->has_private = true;
    k->key_type = o->key_type;
    k->key_bits = o->key_bits;
    return 0;
  }
  const unsigned char *p = o->der;
  X509 *x = d2i_X509(NULL, &p, (long)o->der_len);
  if (!x) {
    log_warn("certstore: certificate object '%s' in the token does not parse; ignored", o->ref.label);
    return 0;
  }
  if (o->cert_category == HSM_CERT_AUTHORITY) {
    if (!sk_X509_push(k->chain, x)) X509_free(x);
  } else if (k->cert) {
    log_warn("certstore: '%s' has two certificates for one key; the first is used", o->ref.label);
    X509_free(x);
  } else {
    k->cert = x;
  }
  return 0;
}

/* Current first: latest notBefore, then the younger key pair (our ids
 * begin with their creation time); pairs without a certificate last. */
static int certstore__cmp_key(const void *a, const void *b) {
  const struct certstore_key *x = a, *y = b;
  if (!x->cert || !y->cert) return (x->cert == NULL) - (y->cert == NULL);
  int c = ASN1_TIME_compare(X509_get0_notBefore(x->cert), X509_get0_notBefore(y->cert));
  if (c) return -c;
  size_t n = x->ref.id_len < y->ref.id_len ? x->ref.id_len : y->ref.id_len;
  return -memcmp(x->ref.id, y->ref.id, n);
}

static int certstore__cmp_entry(const void *a, const void *b) {
  return strcmp(((const struct certstore_entry *)a)->name, ((const struct certstore_entry *)b)->name);
}

int certstore_load(struct hsm *h, struct certstore **out) {
  *out = NULL;
  struct hsm_object *objs;
  size_t n;
  int rc = hsm_list(h, &objs, &n);
  if (rc) return rc;
  struct certstore *s = calloc(1, sizeof *s);
  if (!s) rc = SG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n; i++) rc = certstore__add(s, &objs[i]);
  hsm_objects_free(objs, n);
  if (rc) {
    certstore_free(s);
    return rc;
  }
  for (size_t i = 0; i < s->n; i++) /* every entry has at least one key */
    qsort(s->entries[i].keys, s->entries[i].n_keys, sizeof *s->entries[i].keys, certstore__cmp_key);
  if (s->n > 1) qsort(s->entries, s->n, sizeof *s->entries, certstore__cmp_entry); /* NULL when empty */
  *out = s;
  return 0;
}

void certstore_free(struct certstore *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    for (size_t j = 0; j < s->entries[i].n_keys; j++) {
      X509_free(s->entries[i].keys[j].cert);
      sk_X509_pop_free(s->entries[i].keys[j].chain, X509_free);
    }
    free(s->entries[i].keys);
  }
  free(s->entries);
  free(s);
}

const struct certstore_entry *certstore_find(const struct certstore *s, const char *name) {
  for (size_t i = 0; s && i < s->n; i++)
    if (strcmp(s->entries[i].name, name) == 0) return &s->entries[i];
  return NULL;
}

int certstore_name_check(const char *name, char *err, size_t errlen) {
  size_t n = strlen(name);
  bool ok = n >= 1 && n <= 64 && isalnum((unsigned char)name[0]);
  for (size_t i = 0; ok && i < n; i++)
    ok = isalnum((unsigned char)name[i]) || strchr("._-", name[i]);
  if (ok) return 0;
  snprintf(err, errlen, "'%.80s' is not a certificate name (1-64 letters, digits, '.', '_', '-', "
           "starting with a letter or digit)", name);
  return SG_EINVAL;
}

/* ---- writing --------------------------------------------------------------- */

/* Refuse a bad name, and an existing one unless renewing. */
static int certstore__may_write(struct hsm *h, const char *name, bool renew, char *err, size_t errlen) {
  int rc = certstore_name_check(name, err, errlen);
  if (rc) return rc;
  struct certstore *s;
  if ((rc = certstore_load(h, &s)) != 0) {
    snprintf(err, errlen, "cannot list the token: %s", sgerr_str(rc));
    return rc;
  }
  bool exists = certstore_find(s, name) != NULL;
  certstore_free(s);
  if (exists && !renew) {
    snprintf(err, errlen, "certificate '%s' already exists (--renew adds a new key pair under the "
             "same name; the old key stays for decryption)", name);
    return SG_EEXIST;
  }
  if (!exists && renew) {
    snprintf(err, errlen, "certificate '%s' does not exist: nothing to renew", name);
    return SG_ENOTFOUND;
  }
  return 0;
}

static int certstore__store_x509(struct hsm *h, const struct hsm_keyref *ref, int category, X509 *x,
                                 char *err, size_t errlen) {
  unsigned char *der = NULL;
  int len = i2d_X509(x, &der);
  if (len <= 0) {
    snprintf(err, errlen, "cannot encode the certificate");
    return SG_EINVAL;
  }
  int rc = hsm_store_cert(h, ref, category, der, (size_t)len, err, errlen);
  OPENSSL_free(der);
  return rc;
}

int certstore_selftest(struct hsm_worker *w, const struct hsm_keyref *ref, X509 *cert, char *err,
                       size_t errlen) {
  EVP_PKEY *key;
  int rc = hsm_worker_pkey(w, ref, &key);
  if (rc) {
    snprintf(err, errlen, "key '%s' not usable in the token: %s", ref->label, sgerr_str(rc));
    return rc;
  }
  unsigned char digest[32], sig[1024];
  size_t siglen = sizeof sig;
  memset(digest, 0x5a, sizeof digest);
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
  bool ok = ctx && EVP_PKEY_sign_init(ctx) > 0 &&
            (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA ||
             EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0) &&
            EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0 &&
            EVP_PKEY_sign(ctx, sig, &siglen, digest, sizeof digest) > 0;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) {
    rc = hsm_worker_check(w) == SG_ETEMP ? SG_ETEMP : SG_EIO;
    snprintf(err, errlen, "the token could not sign with key '%s'%s", ref->label,
             rc == SG_ETEMP ? " (token unreachable)" : "");
    return rc;
  }
  EVP_PKEY *pub = X509_get0_pubkey(cert);
  ctx = pub ? EVP_PKEY_CTX_new(pub, NULL) : NULL;
  ok = ctx && EVP_PKEY_verify_init(ctx) > 0 &&
       (EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0) &&
       EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0 &&
       EVP_PKEY_verify(ctx, sig, siglen, digest, sizeof digest) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) {
    snprintf(err, errlen, "the token's key '%s' does not belong to its certificate", ref->label);
    return SG_EINVAL;
  }
  return 0;
}

/* The new pair's certificate, signed in the token.  *x_out is the caller's. */
static int certstore__selfsign(struct hsm *h, const struct hsm_keyref *ref, const struct cert_request *r,
                               X509 **x_out, char *err, size_t errlen) {
  EVP_PKEY *pub = NULL, *signer;
  struct hsm_worker *w = NULL;
  int rc = hsm_public_key(h, ref, &pub);
  if (rc) snprintf(err, errlen, "cannot read the new public key: %s", sgerr_str(rc));
  if (rc == 0) rc = hsm_worker_new(h, &w, err, errlen);
  if (rc == 0 && (rc = hsm_worker_pkey(w, ref, &signer)) != 0)
    snprintf(err, errlen, "cannot use the new key: %s", sgerr_str(rc));
  if (rc == 0) rc = cert_create_selfsigned(r, pub, signer, x_out, err, errlen);
  hsm_worker_free(w);
  EVP_PKEY_free(pub);
  return rc;
}

int certstore_create(struct hsm *h, const char *name, const struct cert_request *r,
                     enum hsm_key_type type, unsigned bits, bool renew, X509 **cert_out, char *err,
                     size_t errlen) {
  if (cert_out) *cert_out = NULL;
  int rc = cert_request_check(r, err, errlen);
  if (rc == 0) rc = certstore__may_write(h, name, renew, err, errlen);
  if (rc) return rc;
  struct hsm_keyref ref;
  if ((rc = hsm_keygen(h, name, type, bits, &ref, err, errlen)) != 0) return rc;
  X509 *x = NULL;
  rc = certstore__selfsign(h, &ref, r, &x, err, errlen);
  if (rc == 0) rc = certstore__store_x509(h, &ref, HSM_CERT_ENTITY, x, err, errlen);
  if (rc) {
    hsm_delete(h, &ref, NULL); /* nothing half-created stays in the token */
    X509_free(x);
    return rc;
  }
  if (cert_out) *cert_out = x;
  else X509_free(x);
  return 0;
}

int certstore_import(struct hsm *h, const char *name, const struct cert_p12 *p12, bool renew, char *err,
                     size_t errlen) {
  int rc = certstore__may_write(h, name, renew, err, errlen);
  if (rc) return rc;
  struct hsm_keyref ref;
  if ((rc = hsm_import_key(h, name, p12->key, &ref, err, errlen)) != 0) return rc;
  rc = certstore__store_x509(h, &ref, HSM_CERT_ENTITY, p12->cert, err, errlen);
  for (int i = 0; rc == 0 && i < sk_X509_num(p12->chain); i++)
    rc = certstore__store_x509(h, &ref, HSM_CERT_AUTHORITY, sk_X509_value(p12->chain, i), err, errlen);
  struct hsm_worker *w = NULL;
  if (rc == 0) rc = hsm_worker_new(h, &w, err, errlen);
  if (rc == 0) rc = certstore_selftest(w, &ref, p12->cert, err, errlen);
  hsm_worker_free(w);
  if (rc) hsm_delete(h, &ref, NULL);
  return rc;
}

int certstore_delete(struct hsm *h, const char *name, char *err, size_t errlen) {
  struct certstore *s;
  int rc = certstore_load(h, &s);
  if (rc) {
    snprintf(err, errlen, "cannot list the token: %s", sgerr_str(rc));
    return rc;
  }
  const struct certstore_entry *e = certstore_find(s, name);
  if (!e) {
    snprintf(err, errlen, "no certificate named '%.80s'", name);
    rc = SG_ENOTFOUND;
  }
  for (size_t i = 0; e && rc == 0 && i < e->n_keys; i++) {
    rc = hsm_delete(h, &e->keys[i].ref, NULL);
    if (rc) snprintf(err, errlen, "cannot delete '%s' from the token: %s", name, sgerr_str(rc));
  }
  certstore_free(s);
  return rc;
}

/* ---- configuration --------------------------------------------------------- */

bool certstore_used_by(const struct config *cfg, const char *name, char *buf, size_t cap) {
  for (size_t i = 0; i < cfg->n_sending_profiles; i++) {
    const char *c = cfg->sending_profiles[i].signing_certificate;
    if (c && strcmp(c, name) == 0) {
      snprintf(buf, cap, "sending profile '%s' (signing_certificate)", cfg->sending_profiles[i].name);
      return true;
    }
  }
  for (size_t i = 0; i < cfg->n_listeners; i++) {
    const char *c = cfg->listeners[i].tls_certificate;
    if (c && strcmp(c, name) == 0) {
      snprintf(buf, cap, "listener '%s' (tls_certificate)", cfg->listeners[i].name);
      return true;
    }
  }
  return false;
}

/* The named certificate exists and has its private key in the token. */
static int certstore__need(const struct certstore *s, const char *name, const char *where, char *err,
                           size_t errlen) {
  const struct certstore_entry *e = certstore_find(s, name);
  if (!e || e->n_keys == 0 || !e->keys[0].cert) {
    snprintf(err, errlen, "%s names certificate '%s', which is not in the token", where, name);
    return SG_ECONFIG;
  }
  if (!e->keys[0].has_private) {
    snprintf(err, errlen, "%s names certificate '%s', whose private key is not in the token", where, name);
    return SG_ECONFIG;
  }
  return 0;
}

/* R12: a signing certificate allows digitalSignature and nonRepudiation
 * (or has no key usage); RSA-PSS needs an RSA key. */
static int certstore__fits_signing(const struct certstore_entry *e, const struct config_sending_profile *p,
                                   const char *where, char *err, size_t errlen) {
  const struct certstore_key *k = &e->keys[0];
  if (!(cert_uses(k->cert) & CERT_USE_SIGN)) {
    snprintf(err, errlen, "%s: certificate '%s' may not sign: its key usage lacks digitalSignature or "
             "nonRepudiation (R12)", where, e->name);
    return SG_ECONFIG;
  }
  if (p->signature == CONFIG_SIG_RSA_PSS && k->key_type != HSM_KEY_RSA) {
    snprintf(err, errlen, "%s: signature rsa-pss needs an RSA key, and certificate '%s' has an EC key", where, e->name);
    return SG_ECONFIG;
  }
  return 0;
}

int certstore_check_config(const struct certstore *s, const struct config *cfg, char *err, size_t errlen) {
  char where[200];
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < cfg->n_sending_profiles; i++) {
    const struct config_sending_profile *p = &cfg->sending_profiles[i];
    snprintf(where, sizeof where, "sending profile '%s'", p->name);
    if (p->signing_certificate) rc = certstore__need(s, p->signing_certificate, where, err, errlen);
    if (rc == 0 && p->signing_certificate && p->mode != CONFIG_MODE_ENCRYPT)
      rc = certstore__fits_signing(certstore_find(s, p->signing_certificate), p, where, err, errlen);
  }
  for (size_t i = 0; rc == 0 && i < cfg->n_listeners; i++) {
    snprintf(where, sizeof where, "listener '%s'", cfg->listeners[i].name);
    if (cfg->listeners[i].tls_certificate)
      rc = certstore__need(s, cfg->listeners[i].tls_certificate, where, err, errlen);
  }
  if (rc || strcmp(cfg->hsm.module, "remote") != 0) return rc;
  for (size_t i = 0; i < s->n; i++)
    for (size_t j = 0; j < s->entries[i].n_keys; j++) {
      const struct certstore_key *k = &s->entries[i].keys[j];
      if (k->key_type == HSM_KEY_EC && k->cert && (cert_uses(k->cert) & CERT_USE_ENCRYPT)) {
        snprintf(err, errlen, "certificate '%s' is an EC encryption certificate (keyAgreement), but "
                 "hsm.module is remote: the token server cannot decrypt with EC keys (the p11-kit "
                 "RPC has no ECDH); use an RSA certificate or hsm.module: inprocess", s->entries[i].name);
        return SG_ECONFIG;
      }
    }
  return 0;
}

void certstore_hsm_params(const struct config *cfg, const char *server_address, struct hsm_params *out) {
  memset(out, 0, sizeof *out);
  out->token = cfg->hsm.token;
  out->pin_file = cfg->hsm.pin_file;
  out->softhsm_conf = cfg->hsm.softhsm_conf;
  if (strcmp(cfg->hsm.module, "inprocess") == 0) {
    out->mode = HSM_INPROCESS;
  } else if (strcmp(cfg->hsm.module, "remote") == 0) {
    out->mode = server_address ? HSM_REMOTE : HSM_INPROCESS;
    out->server_address = server_address;
  } else {
    out->mode = HSM_MODULE;
    out->module = cfg->hsm.module;
  }
}

void certstore_hsm_dir(const struct config *cfg, char *buf, size_t cap) {
  snprintf(buf, cap, "%s", cfg->hsm.softhsm_conf);
  char *slash = strrchr(buf, '/');
  if (slash && slash != buf) *slash = '\0';
}
