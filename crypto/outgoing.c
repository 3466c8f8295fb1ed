/*
 * outgoing - one message through a sending profile (outgoing.h).
 *
 * The layers are made innermost first, each an entity for the next:
 * sign; encrypt; sign-encrypt = encrypt(sign); triple = sign(encrypt(sign)).
 * Recipient keys are looked up before any private-key operation, so a
 * message that will bounce or be split costs no token work.
 */
#include "crypto/outgoing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sgerr.h"
#include "crypto/keycache.h"
#include "crypto/keystore.h"
#include "crypto/mime.h"
#include "crypto/smime.h"

const char *outgoing_action(const struct config_sending_profile *p, bool plain_copy) {
  bool signs = p->mode != CONFIG_MODE_ENCRYPT;
  if (plain_copy) return signs ? "sign" : "relay";
  static const char *names[] = {"sign", "encrypt", "sign-encrypt", "triple"};
  return names[p->mode];
}

void outgoing_result_free(struct outgoing_result *res) {
  buf_free(&res->out);
  free(res->keyed);
  res->keyed = NULL;
}

static void outgoing__set(struct outgoing_result *res, enum outgoing_status st, const char *fmt,
                          const char *detail) {
  res->status = st;
  snprintf(res->reason, sizeof res->reason, fmt, detail);
}

/* Every recipient's certificate into *certs_out.  Returns 0 when all have
 * one, SG_ENOTFOUND (keyed[] filled) when some have none, or another code
 * when the store could not answer: that must never read as "no key",
 * which would send plaintext (split) or lose mail (drop). */
static int outgoing__keys(const struct outgoing_request *rq, struct outgoing_result *res,
                          STACK_OF(X509) **certs_out) {
  STACK_OF(X509) *certs = sk_X509_new_null();
  res->keyed = calloc(rq->n_rcpts ? rq->n_rcpts : 1, sizeof *res->keyed);
  res->all_gcm = rq->n_rcpts > 0;
  res->n_keyed = rq->n_rcpts;
  int rc = certs && res->keyed ? 0 : SG_ENOMEM;
  bool all = true;
  for (size_t i = 0; rc == 0 && i < rq->n_rcpts; i++) {
    X509 *x = NULL;
    unsigned caps = 0;
    int lr = rq->cache  ? keycache_lookup(rq->cache, rq->rcpts[i], rq->now, &x, &caps)
             : rq->keys ? keystore_lookup(rq->keys, rq->rcpts[i], rq->now, &x, &caps)
                        : SG_ENOTFOUND;
    if (!(caps & KEYSTORE_CAP_AES256_GCM)) res->all_gcm = false; /* encryption: auto (#5) */
    if (lr == 0 && sk_X509_push(certs, x)) {
      res->keyed[i] = true;
    } else {
      X509_free(x);
      all = false;
      if (lr == 0) rc = SG_ENOMEM;
      else if (lr != SG_ENOTFOUND && lr != SG_EINVAL) rc = lr; /* EINVAL: an address no key can match */
    }
  }
  if (rc == 0 && all) {
    *certs_out = certs;
    return 0;
  }
  sk_X509_pop_free(certs, X509_free);
  *certs_out = NULL;
  return rc ? rc : SG_ENOTFOUND;
}

struct outgoing_layers {
  struct hsm_worker *w;
  const struct outgoing_request *rq;
  struct outgoing_result *res;
  struct smime_signer signer;
  STACK_OF(X509) *certs;
  struct buf inner; /* the layer below the outermost, while the next is made */
};

/* Sign in, appending to out, or (around != NULL) around the entity at
 * around->data[off..] in place; a failed private-key operation is a token
 * outage (retry) or a signing failure (R25, bounce). */
static int outgoing__sign(struct outgoing_layers *L, const char *in, size_t len, struct buf *out,
                          struct buf *around, size_t off) {
  char err[200]; /* fits the result's reason with its prefix */
  enum smime_sign_mode sm = L->rq->profile->sign_mode == CONFIG_SIGN_OPAQUE ? SMIME_SIGN_OPAQUE : SMIME_SIGN_DETACHED;
#define OUTGOING_SIGN() (around ? smime_sign_around(around, off, &L->signer, err, sizeof err) \
                                : smime_sign(in, len, &L->signer, sm, out, err, sizeof err))
  int rc = OUTGOING_SIGN();
  /* A signature the token refused on a connection that looks healthy may
   * still be a server that died and came back in between: once more on a
   * fresh connection, and only a second refusal is the key's (R25). */
  if (rc != 0 && hsm_worker_check(L->w) != SG_ETEMP) {
    hsm_worker_reset(L->w);
    if ((rc = hsm_worker_pkey(L->w, &L->rq->signer->ref, &L->signer.key)) == 0) rc = OUTGOING_SIGN();
  }
#undef OUTGOING_SIGN
  if (rc == 0) return 0;
  if (hsm_worker_check(L->w) == SG_ETEMP) outgoing__set(L->res, OUTGOING_TEMP, "token unreachable: %s", err);
  else outgoing__set(L->res, OUTGOING_FAIL, "signing failed: %s", err);
  return rc;
}

/* Triple wrap's outer detached signature over the encrypted layer, made in
 * that layer's own buffer (outer header slid in front of it), which then
 * becomes the message: the largest layer is never held twice. */
static int outgoing__sign_last_around(struct outgoing_layers *L, struct buf *out) {
  size_t hl = out->len; /* out holds the outer header and MIME-Version */
  if (buf_reserve(&L->inner, hl) != 0) {
    outgoing__set(L->res, OUTGOING_TEMP, "%s", "out of memory");
    return SG_ENOMEM;
  }
  memmove(L->inner.data + hl, L->inner.data, L->inner.len);
  memcpy(L->inner.data, out->data, hl);
  L->inner.len += hl;
  int rc = outgoing__sign(L, NULL, 0, NULL, &L->inner, hl);
  if (rc == 0) {
    buf_free(out);
    *out = L->inner;
    L->inner = (struct buf)BUF_INIT;
  }
  return rc;
}

static int outgoing__encrypt(struct outgoing_layers *L, const char *in, size_t len, struct buf *out) {
  char err[200];
  /* auto: GCM when every recipient announced it (harvested
   * SMIMECapabilities, R17), else CBC, which every peer reads. */
  bool gcm = L->rq->profile->encryption == CONFIG_ENC_AES256_GCM ||
             (L->rq->profile->encryption == CONFIG_ENC_AUTO && L->res->all_gcm);
  enum smime_cipher c = gcm ? SMIME_AES256_GCM : SMIME_AES256_CBC;
  enum smime_key_transport kt = L->rq->profile->key_transport == CONFIG_KT_RSA_OAEP ? SMIME_KT_OAEP : SMIME_KT_PKCS1;
  int rc = smime_encrypt(in, len, L->certs, c, kt, out, err, sizeof err);
  if (rc) outgoing__set(L->res, OUTGOING_FAIL, "encryption failed: %s", err);
  return rc;
}

/*
 * The layers of the profile's mode over the entity, innermost first; the
 * outermost is appended straight to out (after the outer header the
 * caller put there), and each input is freed as soon as the next layer
 * exists, so a large message is held at most twice plus the original
 * (docs/OUTGOING.md: memory).
 */
static int outgoing__wrap(struct outgoing_layers *L, struct mime_split *ms, struct buf *out) {
  enum config_mode mode = L->rq->profile->mode;
  bool signs = mode != CONFIG_MODE_ENCRYPT, encrypts = !L->rq->plain_copy && mode != CONFIG_MODE_SIGN;
  char steps[3];
  int n = 0;
  if (signs) steps[n++] = 's';
  if (encrypts) steps[n++] = 'e';
  if (encrypts && mode == CONFIG_MODE_TRIPLE) steps[n++] = 's';
  bool around = n == 3 && L->rq->profile->sign_mode == CONFIG_SIGN_DETACHED;
  struct buf layer = BUF_INIT;
  int rc = 0;
  for (int i = 0; rc == 0 && i < n; i++) {
    if (around && i == n - 1) {
      rc = outgoing__sign_last_around(L, out);
      break;
    }
    const char *in = i == 0 ? ms->entity : L->inner.data;
    size_t len = i == 0 ? ms->entity_len : L->inner.len;
    struct buf *dst = i == n - 1 ? out : &layer;
    /* The layer the outer signature goes around gets its room now, so it
     * never moves (and is never copied) later. */
    if (around && i == n - 2 && buf_reserve(dst, len / 3 * 4 + len / 38 + out->len + 65536) != 0) rc = SG_ENOMEM;
    if (rc == 0) rc = steps[i] == 's' ? outgoing__sign(L, in, len, dst, NULL, 0) : outgoing__encrypt(L, in, len, dst);
    if (i == 0) { /* the entity is no longer needed */
      free(ms->entity);
      ms->entity = NULL;
    }
    buf_free(&L->inner);
    L->inner = layer;
    layer = (struct buf)BUF_INIT;
  }
  return rc;
}

/* The signer's key from the token; TEMP when it cannot be reached. */
static int outgoing__signer(struct outgoing_layers *L) {
  const struct outgoing_signer *s = L->rq->signer;
  if (!s || !s->cert) {
    outgoing__set(L->res, OUTGOING_FAIL, "signing failed: %s", "no signing certificate");
    return SG_ENOTFOUND;
  }
  int rc = L->w ? hsm_worker_pkey(L->w, &s->ref, &L->signer.key) : SG_ETEMP;
  if (rc == SG_ETEMP) outgoing__set(L->res, OUTGOING_TEMP, "token unreachable (%s)", s->ref.label);
  else if (rc) outgoing__set(L->res, OUTGOING_FAIL, "signing failed: key '%s' not usable in the token", s->ref.label);
  L->signer.cert = s->cert;
  L->signer.chain = s->chain;
  L->signer.signature = L->rq->profile->signature == CONFIG_SIG_RSA_PSS ? SMIME_SIG_PSS : SMIME_SIG_PKCS1;
  return rc;
}

/* The outer header and MIME-Version go first; the outermost layer is
 * appended after them.  Room for the base64 of the whole is reserved now,
 * so the buffer does not move (and copy) while the layer streams in. */
static int outgoing__reserve(const struct outgoing_request *rq, struct mime_split *ms, size_t len,
                             struct buf *out) {
  /* A detached signature outermost carries the entity as it is; anything
   * else is base64 (4/3, plus CRLF every 76).  Not reserving more than
   * needed lets the allocator reuse the freed original for it. */
  const struct config_sending_profile *p = rq->profile;
  bool detached_out = p->sign_mode == CONFIG_SIGN_DETACHED && (p->mode == CONFIG_MODE_SIGN || rq->plain_copy);
  size_t body = detached_out ? len : len / 3 * 4 + len / 38;
  int rc = buf_reserve(out, ms->outer_len + body + 16384);
  if (rc == 0) rc = smime_compose(ms->outer, ms->outer_len, NULL, 0, out);
  return rc;
}

void outgoing_process(struct hsm_worker *w, const struct outgoing_request *rq, struct outgoing_result *res) {
  memset(res, 0, sizeof *res);
  /* Until something says otherwise, nothing was made: never DONE by default. */
  outgoing__set(res, OUTGOING_TEMP, "%s", "out of memory while processing the message");
  const struct config_sending_profile *p = rq->profile;
  res->action = outgoing_action(p, rq->plain_copy);
  bool signs = p->mode != CONFIG_MODE_ENCRYPT, encrypts = !rq->plain_copy && p->mode != CONFIG_MODE_SIGN;
  if (!signs && !encrypts) { /* the split-off copy of an encrypt-only profile */
    res->status = buf_append(&res->out, rq->data, rq->len) == 0 ? OUTGOING_DONE : OUTGOING_TEMP;
    return;
  }
  struct outgoing_layers L = {.w = w, .rq = rq, .res = res};
  int krc = encrypts ? outgoing__keys(rq, res, &L.certs) : 0;
  if (krc == SG_ENOTFOUND) {
    res->status = OUTGOING_NOKEYS;
    return;
  }
  if (krc) {
    outgoing__set(res, OUTGOING_TEMP, "the key store could not be read (%s)", sgerr_str(krc));
    return;
  }
  struct mime_split ms = {0};
  int rc = mime_split(rq->data, rq->len, &ms);
  if (rc) outgoing__set(res, OUTGOING_FAIL, "the message cannot be processed: %s", sgerr_str(rc));
  if (rc == 0 && rq->consume) { /* the entity holds everything the layers need */
    free(*rq->consume);
    *rq->consume = NULL;
  }
  if (rc == 0 && signs) rc = outgoing__signer(&L);
  if (rc == 0) rc = outgoing__reserve(rq, &ms, rq->len, &res->out);
  if (rc == 0) rc = outgoing__wrap(&L, &ms, &res->out);
  if (rc == 0) res->status = OUTGOING_DONE;
  else buf_free(&res->out); /* nothing half-made leaves here */
  buf_free(&L.inner);
  sk_X509_pop_free(L.certs, X509_free);
  mime_split_free(&ms);
}
