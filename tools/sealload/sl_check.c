/* sl_check - see sl_check.h. */
#include "tools/sealload/sl_check.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "core/sgerr.h"

struct sl_check {
  STACK_OF(X509) *signers; /* the one certificate --verify names */
  X509 *rcpt_cert;
  EVP_PKEY *rcpt_key;
};

static X509 *ck__cert(const char *path, char *err, size_t errlen, int *rc) {
  FILE *f = fopen(path, "r");
  X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  if (!x) *rc = sgerr_fail(err, errlen, f ? SG_EINVAL : SG_EIO, "%s: not a readable PEM certificate", path);
  return x;
}

int sl_check_new(const char *verify_cert, const char *decrypt_cert, const char *decrypt_key,
                 struct sl_check **out, char *err, size_t errlen) {
  struct sl_check *k = calloc(1, sizeof *k);
  int rc = k ? 0 : SG_ENOMEM;
  if (rc == 0 && verify_cert) {
    X509 *x = ck__cert(verify_cert, err, errlen, &rc);
    if (x && (!(k->signers = sk_X509_new_null()) || !sk_X509_push(k->signers, x))) {
      X509_free(x);
      rc = SG_ENOMEM;
    }
  }
  if (rc == 0 && decrypt_cert) k->rcpt_cert = ck__cert(decrypt_cert, err, errlen, &rc);
  if (rc == 0 && decrypt_key) {
    FILE *f = fopen(decrypt_key, "r");
    k->rcpt_key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (!k->rcpt_key) rc = sgerr_fail(err, errlen, f ? SG_EINVAL : SG_EIO, "%s: not a readable PEM private key", decrypt_key);
  }
  if (rc == 0 && k->rcpt_cert && k->rcpt_key && X509_check_private_key(k->rcpt_cert, k->rcpt_key) != 1)
    rc = sgerr_fail(err, errlen, SG_EINVAL, "%s does not match %s", decrypt_key, decrypt_cert);
  if (rc == SG_ENOMEM) sgerr_fail(err, errlen, rc, "out of memory");
  ERR_clear_error();
  if (rc) {
    sl_check_free(k);
    return rc;
  }
  *out = k;
  return 0;
}

void sl_check_free(struct sl_check *k) {
  if (!k) return;
  sk_X509_pop_free(k->signers, X509_free);
  X509_free(k->rcpt_cert);
  EVP_PKEY_free(k->rcpt_key);
  free(k);
}

/* Signed by our one signer?  Detached content comes back from
 * SMIME_read_CMS in dcont; the flags are `openssl cms -verify`'s, with the
 * chain check replaced by "the signer is this certificate". */
static enum sl_check_outcome ck__verify(const struct sl_check *k, BIO *in) {
  BIO *dcont = NULL;
  CMS_ContentInfo *cms = SMIME_read_CMS(in, &dcont);
  bool ok = cms && OBJ_obj2nid(CMS_get0_type(cms)) == NID_pkcs7_signed &&
            CMS_verify(cms, k->signers, NULL, dcont, NULL, CMS_NOINTERN | CMS_NO_SIGNER_CERT_VERIFY) == 1;
  CMS_ContentInfo_free(cms);
  BIO_free(dcont);
  return ok ? SL_CHECK_OK : SL_CHECK_FAILED;
}

/* Opens with our key?  The plaintext entity goes to plain. */
static enum sl_check_outcome ck__decrypt(const struct sl_check *k, BIO *in, BIO *plain) {
  CMS_ContentInfo *cms = SMIME_read_CMS(in, NULL);
  int type = cms ? OBJ_obj2nid(CMS_get0_type(cms)) : NID_undef;
  bool ok = (type == NID_pkcs7_enveloped || type == NID_id_smime_ct_authEnvelopedData) &&
            CMS_decrypt(cms, k->rcpt_key, k->rcpt_cert, NULL, plain, 0) == 1;
  CMS_ContentInfo_free(cms);
  return ok ? SL_CHECK_OK : SL_CHECK_FAILED;
}

void sl_check_message(const struct sl_check *k, const char *msg, size_t len, struct sl_check_result *out) {
  out->verify = out->decrypt = SL_CHECK_SKIPPED;
  BIO *in = BIO_new_mem_buf(msg, len > INT32_MAX ? INT32_MAX : (int)len), *plain = NULL;
  if (in && k->rcpt_key) {
    plain = BIO_new(BIO_s_mem());
    out->decrypt = plain ? ck__decrypt(k, in, plain) : SL_CHECK_FAILED;
  }
  if (in && k->signers) {
    if (out->decrypt == SL_CHECK_FAILED) out->verify = SL_CHECK_FAILED; /* nothing to verify */
    else out->verify = ck__verify(k, plain ? plain : in);
  }
  if (!in && k->rcpt_key) out->decrypt = SL_CHECK_FAILED;
  if (!in && k->signers) out->verify = SL_CHECK_FAILED;
  BIO_free(plain);
  BIO_free(in);
  ERR_clear_error(); /* the queue is per thread and would grow with each failure */
}
