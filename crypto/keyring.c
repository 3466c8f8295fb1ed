/*
 * keyring - the daemon's keys (keyring.h): token server, token, crypto
 * workers, organisation certificates.
 *
 * The certificate set is swapped under a mutex on reload; the outgoing
 * issue reads it from the workers and will publish it with RCU instead.
 */
#include "crypto/keyring.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"
#include "crypto/certstore.h"
#include "crypto/cryptopool.h"
#include "crypto/keycache.h"
#include "crypto/keystore.h"
#include "crypto/verify.h"
#include "hsm/hsm.h"
#include "hsm/hsm_backup.h"
#include "hsm/hsm_server.h"

#define KEYRING_SERVER_START_MS 15000
#define KEYRING_ALERT_DAYS 30
#define KEYRING_TOUCH_TICKS 300 /* write harvested keys' use times every 5 minutes */

/* The verification anchors, shared by the jobs using them. */
struct keyring_trust {
  atomic_int refs;
  struct verify_trust *t;
};

struct keyring {
  struct hsm_server *server; /* remote mode only */
  struct hsm *hsm;
  struct keystore *keys;     /* others' public keys, read-only */
  pthread_rwlock_t pool_lock; /* submitters read, a reconnect writes */
  struct cryptopool *pool;
  pthread_mutex_t mu;        /* guards certs */
  struct certstore *certs;
  struct config *cfg;        /* referenced: what a reconnect opens the token with */
  bool stale;                /* a reload could not reach the token: keyring_tick retries it */
  struct keyring_trust *trust; /* under mu */
  struct keycache *cache;
  struct incoming_guard *guard;
  unsigned ticks;
};

/* Give the token files (hsm/tokens, softhsm2.conf) to uid:gid and let the
 * other users traverse DIR and DIR/hsm.  Runs as root on folders a less
 * trusted user may own: nothing here follows a symlink, and hsm/ itself
 * must be root's (else that user could have put a folder of its own there). */
static int keyring__give_token(const struct config *cfg, const char *hsm_dir, uid_t uid, gid_t gid,
                               const char *who, char *err, size_t errlen) {
  struct stat st;
  if (lstat(hsm_dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0) {
    snprintf(err, errlen, "%s must be a folder owned by root when sealgate starts as root", hsm_dir);
    return SG_EPERM;
  }
  int rc = hsm_token_chown(hsm_dir, uid, gid, false, err, errlen);
  if (rc) return rc;
  int hfd = open(hsm_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int tfd = hfd >= 0 ? openat(hfd, "tokens", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
  int dfd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  const char *conf = strrchr(cfg->hsm.softhsm_conf, '/') + 1;
  bool ok = hfd >= 0 && tfd >= 0 && dfd >= 0 && fchmod(tfd, 0700) == 0 && fchmod(hfd, 0711) == 0 &&
            fchmod(dfd, 0711) == 0 && fstatat(hfd, conf, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode) && fchownat(hfd, conf, uid, gid, AT_SYMLINK_NOFOLLOW) == 0;
  if (!ok) snprintf(err, errlen, "cannot give %s/tokens and %s to %s: %s", hsm_dir, cfg->hsm.softhsm_conf, who,
                    strerror(errno));
  int fds[] = {hfd, tfd, dfd};
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0) close(fds[i]);
  return ok ? 0 : SG_EIO;
}

/* Root with `user:`.  Remote: the token server's user owns the token and
 * the gateway's user may only traverse to its PIN and the server's socket.
 * In-process: the gateway itself opens the token, so it owns the files. */
static int keyring__layout(const struct config *cfg, const char *hsm_dir, struct hsm_server_params *p,
                           char *err, size_t errlen) {
  if (geteuid() != 0 || !cfg->user) return 0;
  struct passwd *gw = getpwnam(cfg->user);
  if (!gw) {
    snprintf(err, errlen, "user '%s' does not exist", cfg->user);
    return SG_ENOTFOUND;
  }
  if (strcmp(cfg->hsm.module, "inprocess") == 0)
    return keyring__give_token(cfg, hsm_dir, gw->pw_uid, gw->pw_gid, cfg->user, err, errlen);
  if (strcmp(cfg->hsm.module, "remote") != 0) return 0; /* a real HSM: only the PIN is ours */
  p->server_user = cfg->hsm.server_user ? cfg->hsm.server_user : "sealgate-hsm";
  p->client_uid = gw->pw_uid;
  p->client_gid = gw->pw_gid;
  struct passwd *su = getpwnam(p->server_user);
  if (!su) {
    snprintf(err, errlen, "hsm.server_user '%s' does not exist: the token server needs its own user "
             "(useradd --system --no-create-home --shell /usr/sbin/nologin %s)", p->server_user, p->server_user);
    return SG_ENOTFOUND;
  }
  return keyring__give_token(cfg, hsm_dir, su->pw_uid, su->pw_gid, p->server_user, err, errlen);
}

int keyring_start(const struct config *cfg, struct keyring **out, char *err, size_t errlen) {
  struct keyring *k = calloc(1, sizeof *k);
  if (!k) return SG_ENOMEM;
  pthread_mutex_init(&k->mu, NULL);
  pthread_rwlock_init(&k->pool_lock, NULL);
  *out = k;
  char hsm_dir[4096], run_dir[4200];
  certstore_hsm_dir(cfg, hsm_dir, sizeof hsm_dir);
  snprintf(run_dir, sizeof run_dir, "%s/run", hsm_dir);
  struct hsm_server_params p = {.run_dir = run_dir, .softhsm_conf = cfg->hsm.softhsm_conf, .token = cfg->hsm.token};
  int rc = keyring__layout(cfg, hsm_dir, &p, err, errlen);
  if (rc || strcmp(cfg->hsm.module, "remote") != 0) return rc;
  rc = hsm_server_start(&p, KEYRING_SERVER_START_MS, &k->server, err, errlen);
  if (rc == 0)
    log_info("token server started (p11-kit server for token %s%s%s)", cfg->hsm.token,
             p.server_user ? ", as user " : "", p.server_user ? p.server_user : "");
  return rc;
}

static void keyring__alerts(const struct certstore *s) {
  time_t now = time(NULL);
  for (size_t i = 0; i < s->n; i++) {
    X509 *x = s->entries[i].keys[0].cert;
    long days = x ? cert_days_left(x, now) : KEYRING_ALERT_DAYS + 1;
    if (days < 0) log_warn("certificate '%s' has expired", s->entries[i].name);
    else if (days <= KEYRING_ALERT_DAYS)
      log_warn("certificate '%s' expires in %ld day(s): renew it (sealctl cert create %s --renew)",
               s->entries[i].name, days, s->entries[i].name);
  }
}

/* The admin connection of a remote token does not survive a token server
 * restart (only workers reconnect): rebuild token and workers.  Jobs still
 * queued run first and fail as "token unreachable" (retryable). */
static int keyring__reconnect(struct keyring *k, const struct config *cfg, char *err, size_t errlen) {
  pthread_rwlock_wrlock(&k->pool_lock); /* shards submitting now get SG_ETEMP */
  struct cryptopool *old = k->pool;
  k->pool = NULL;
  pthread_rwlock_unlock(&k->pool_lock);
  cryptopool_stop(old);
  hsm_close(k->hsm);
  k->hsm = NULL;
  struct hsm_params p;
  certstore_hsm_params(cfg, hsm_server_address(k->server), &p);
  int rc = hsm_open(&p, &k->hsm, err, errlen);
  struct cryptopool *pool = NULL;
  if (rc == 0) rc = cryptopool_start(k->hsm, cfg->hsm.workers, &pool, err, errlen);
  pthread_rwlock_wrlock(&k->pool_lock);
  k->pool = pool;
  pthread_rwlock_unlock(&k->pool_lock);
  if (rc == 0) log_info("reconnected to the token server");
  return rc;
}

static void keyring__trust_unref(struct keyring_trust *t) {
  if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
    verify_trust_free(t->t);
    free(t);
  }
}

/* Anchors from the key store (CA lists, CRLs, managed keys), the system
 * bundle if cfg says so, and trust.crl_files; the key cache is dropped
 * since the store may have changed.  Needs the store open. */
static int keyring__store_changed(struct keyring *k, const struct config *cfg, char *err, size_t errlen) {
  if (!k->keys) return 0;
  struct keyring_trust *t = calloc(1, sizeof *t);
  if (!t) return SG_ENOMEM;
  int rc = verify_trust_new(k->keys, cfg->trust_system_cas, cfg->trust_crl_files, cfg->n_trust_crl_files, &t->t, err,
                            errlen);
  if (rc) {
    free(t);
    return rc;
  }
  atomic_init(&t->refs, 1);
  pthread_mutex_lock(&k->mu);
  struct keyring_trust *old = k->trust;
  k->trust = t;
  pthread_mutex_unlock(&k->mu);
  keyring__trust_unref(old);
  unsigned long gen = 0;
  if (k->cache) {
    keystore_generation(k->keys, &gen);
    keycache_flush(k->cache);
    keycache_set_generation(k->cache, gen);
  }
  return 0;
}

int keyring_reload(struct keyring *k, const struct config *cfg, char *err, size_t errlen) {
  struct certstore *s;
  int rc = k->hsm ? certstore_load(k->hsm, &s) : SG_ETEMP;
  if (rc && k->server && keyring__reconnect(k, cfg, err, errlen) == 0) rc = certstore_load(k->hsm, &s);
  if (rc) {
    snprintf(err, errlen, "cannot list the token: %s", sgerr_str(rc));
    k->stale = k->server != NULL; /* the token server may be restarting: retry on the tick */
    return rc;
  }
  if ((rc = certstore_check_config(s, cfg, err, errlen)) != 0) {
    certstore_free(s);
    return rc;
  }
  if ((rc = keyring__store_changed(k, cfg, err, errlen)) != 0) {
    certstore_free(s);
    return rc;
  }
  keyring__alerts(s);
  k->stale = false;
  config_ref((struct config *)cfg);
  config_unref(k->cfg);
  k->cfg = (struct config *)cfg;
  pthread_mutex_lock(&k->mu);
  struct certstore *old = k->certs;
  k->certs = s;
  pthread_mutex_unlock(&k->mu);
  certstore_free(old);
  size_t keys = 0;
  for (size_t i = 0; i < s->n; i++) keys += s->entries[i].n_keys;
  log_info("keys: %zu certificate name(s), %zu key pair(s) in token %s", s->n, keys, cfg->hsm.token);
  return 0;
}

int keyring_open(struct keyring *k, const struct config *cfg, char *err, size_t errlen) {
  struct hsm_params p;
  certstore_hsm_params(cfg, k->server ? hsm_server_address(k->server) : NULL, &p);
  int rc = hsm_open(&p, &k->hsm, err, errlen);
  if (rc == 0) rc = keyring_reload(k, cfg, err, errlen);
  /* keyring_reload may have reconnected, and started the workers then. */
  if (rc == 0 && !k->pool) rc = cryptopool_start(k->hsm, cfg->hsm.workers, &k->pool, err, errlen);
  /* Opened (created if need be) for good now: LMDB shows every later
   * commit of sealctl to this environment.  A store that cannot be opened
   * stops the start: running on with "nobody has a key" would bounce,
   * drop or send in plaintext what should be encrypted. */
  if (rc == 0 && (rc = keystore_open(cfg->key_store, true, &k->keys, err, errlen)) != 0)
    log_err("key store %s cannot be opened", cfg->key_store);
  if (rc == 0) rc = keycache_new(k->keys, 0, &k->cache);
  if (rc == 0) rc = incoming_guard_new(&k->guard);
  if (rc == 0) rc = keyring__store_changed(k, cfg, err, errlen);
  if (rc == 0) log_info("crypto workers: %u", cryptopool_size(k->pool));
  return rc;
}

/* ---- cert check ------------------------------------------------------------ */

struct keyring_check {
  struct cryptopool_job job;
  pthread_mutex_t *mu;
  pthread_cond_t *cv;
  unsigned long *pending, *failed;
  const struct hsm_keyref *ref;
  X509 *cert;
  char *first_err; /* 256 bytes, shared, written once */
};

static void keyring__check_run(struct cryptopool_job *job, struct hsm_worker *w) {
  struct keyring_check *c = (struct keyring_check *)job;
  char err[256] = "token unreachable";
  int rc = w ? certstore_selftest(w, c->ref, c->cert, err, sizeof err) : SG_ETEMP;
  pthread_mutex_lock(c->mu);
  if (rc) {
    if ((*c->failed)++ == 0) snprintf(c->first_err, 256, "%s", err);
  }
  if (--*c->pending == 0) pthread_cond_signal(c->cv);
  pthread_mutex_unlock(c->mu);
}

static void keyring__used(void *arg, const char *key) {
  struct buf *b = arg;
  char *dup = strdup(key);
  if (dup && buf_append(b, &dup, sizeof dup) != 0) free(dup);
}

/* Use times of harvested keys, written on a crypto worker: a commit
 * fsyncs, and the main loop must not wait for it (nor for a worker's
 * harvest holding LMDB's write lock). */
struct keyring_touch {
  struct cryptopool_job job; /* first */
  struct keystore *ks;
  char **keys;               /* owned, strdup'ed */
  size_t n;
};

static void keyring__touch_run(struct cryptopool_job *job, struct hsm_worker *w) {
  (void)w;
  struct keyring_touch *t = (struct keyring_touch *)job;
  if (keystore_harvest_touch(t->ks, t->keys, t->n, time(NULL)) != 0)
    log_warn("cannot record the use of %zu harvested key(s)", t->n);
  for (size_t i = 0; i < t->n; i++) free(t->keys[i]);
  free(t->keys);
  free(t);
}

static void keyring__touch(struct keyring *k) {
  struct buf used = BUF_INIT;
  keycache_collect_used(k->cache, keyring__used, &used);
  struct keyring_touch *t = used.len ? calloc(1, sizeof *t) : NULL;
  size_t n = used.len / sizeof(char *);
  if (t) {
    *t = (struct keyring_touch){{NULL, keyring__touch_run}, k->keys, (char **)buf_steal(&used, NULL), n};
    if (t->keys && keyring_submit(k, &t->job) == 0) return;
    used.data = (char *)t->keys; /* not submitted: freed below, the marks are lost (a use time, no more) */
    free(t);
  }
  for (size_t i = 0; i < n; i++) free(((char **)used.data)[i]);
  free(used.data);
}

/* The store changed behind the cache (sealctl, or a harvest the cache did
 * not follow): rebuild the anchors (a CA list or managed key may have
 * gone) and drop the cache, whether or not the token answers.  Every few
 * minutes, the use times of harvested keys served. */
static void keyring__store_tick(struct keyring *k) {
  unsigned long gen;
  if (!k->cache || keystore_generation(k->keys, &gen) != 0) return;
  if (gen != keycache_generation(k->cache)) {
    char err[256];
    if (!k->cfg || keyring__store_changed(k, k->cfg, err, sizeof err) != 0) {
      keycache_flush(k->cache); /* anchors kept as they were: the log says why */
      keycache_set_generation(k->cache, gen);
      if (k->cfg) log_err("key store changed, but its anchors cannot be rebuilt: %s", err);
    }
  }
  if (++k->ticks % KEYRING_TOUCH_TICKS == 0) keyring__touch(k);
}

void keyring_tick(struct keyring *k) {
  keyring__store_tick(k);
  if (!k->server || !k->cfg || (k->pool && !k->stale)) return;
  char err[256];
  if (keyring_reload(k, k->cfg, err, sizeof err) != 0) log_debug("hsm: still no token server: %s", err);
}

int keyring_check(struct keyring *k, const char *name, unsigned long count, struct buf *out, char *err,
                  size_t errlen) {
  keyring_tick(k);
  if (!k->pool) {
    snprintf(err, errlen, "token unreachable (the token server is being restarted); try again");
    return SG_ETEMP;
  }
  pthread_mutex_lock(&k->mu);
  const struct certstore_entry *e = certstore_find(k->certs, name);
  X509 *cert = e && e->keys[0].cert ? X509_dup(e->keys[0].cert) : NULL;
  struct hsm_keyref ref;
  memset(&ref, 0, sizeof ref);
  if (e) ref = e->keys[0].ref;
  pthread_mutex_unlock(&k->mu);
  if (!cert) {
    snprintf(err, errlen, "no certificate named '%.80s' (sealctl cert list)", name);
    return SG_ENOTFOUND;
  }
  struct keyring_check *jobs = calloc(count, sizeof *jobs);
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  unsigned long pending = count, failed = 0;
  char first[256] = "";
  if (!jobs) {
    X509_free(cert);
    return SG_ENOMEM;
  }
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (unsigned long i = 0; i < count; i++) {
    jobs[i] = (struct keyring_check){{NULL, keyring__check_run}, &mu, &cv, &pending, &failed, &ref, cert, first};
    cryptopool_submit(k->pool, &jobs[i].job);
  }
  pthread_mutex_lock(&mu);
  while (pending > 0) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  buf_appendf(out, "%lu signatures with '%s': %lu verified, %lu failed (%.0f/s, %u crypto workers)%s%s\n", count,
              name, count - failed, failed, (double)count / (s > 0 ? s : 1e-9), cryptopool_size(k->pool),
              failed ? "; first error: " : "", first);
  free(jobs);
  X509_free(cert);
  if (failed) snprintf(err, errlen, "%lu of %lu signatures failed: %s", failed, count, first);
  return failed ? SG_EIO : 0;
}

int keyring_signer(struct keyring *k, const char *name, struct outgoing_signer *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&k->mu);
  const struct certstore_entry *e = certstore_find(k->certs, name);
  const struct certstore_key *key = e && e->n_keys && e->keys[0].cert && e->keys[0].has_private ? &e->keys[0] : NULL;
  if (key) {
    out->ref = key->ref;
    out->cert = key->cert;
    X509_up_ref(out->cert);
    out->chain = X509_chain_up_ref(key->chain);
  }
  pthread_mutex_unlock(&k->mu);
  if (key && !out->chain) {
    keyring_signer_free(out);
    return SG_ENOMEM;
  }
  return key ? 0 : SG_ENOTFOUND;
}

void keyring_signer_free(struct outgoing_signer *s) {
  X509_free(s->cert);
  sk_X509_pop_free(s->chain, X509_free);
  memset(s, 0, sizeof *s);
}

struct keystore *keyring_keystore(struct keyring *k) { return k->keys; }

int keyring_submit(struct keyring *k, struct cryptopool_job *job) {
  pthread_rwlock_rdlock(&k->pool_lock);
  int rc = k->pool ? 0 : SG_ETEMP;
  if (k->pool) cryptopool_submit(k->pool, job);
  pthread_rwlock_unlock(&k->pool_lock);
  return rc;
}

/* ---- incoming --------------------------------------------------------------- */

int keyring_incoming(struct keyring *k, struct keyring_incoming *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&k->mu);
  size_t n = 0;
  for (size_t i = 0; k->certs && i < k->certs->n; i++) n += k->certs->entries[i].n_keys;
  out->keys = calloc(n ? n : 1, sizeof *out->keys + sizeof(struct hsm_keyref));
  struct hsm_keyref *refs = out->keys ? (struct hsm_keyref *)(out->keys + (n ? n : 1)) : NULL;
  for (size_t i = 0; refs && k->certs && i < k->certs->n; i++) {
    for (size_t j = 0; j < k->certs->entries[i].n_keys; j++) {
      const struct certstore_key *key = &k->certs->entries[i].keys[j];
      if (!key->cert || !key->has_private) continue;
      refs[out->n_keys] = key->ref;
      X509_up_ref(key->cert);
      out->keys[out->n_keys] = (struct decrypt_key){&refs[out->n_keys], key->cert};
      out->n_keys++;
    }
  }
  if (k->trust) {
    atomic_fetch_add(&k->trust->refs, 1);
    out->trust_ref = k->trust;
    out->trust = k->trust->t;
  }
  pthread_mutex_unlock(&k->mu);
  out->guard = k->guard;
  return out->keys ? 0 : SG_ENOMEM;
}

void keyring_incoming_free(struct keyring_incoming *s) {
  for (size_t i = 0; i < s->n_keys; i++) X509_free(s->keys[i].cert);
  free(s->keys);
  keyring__trust_unref(s->trust_ref);
  memset(s, 0, sizeof *s);
}

struct keycache *keyring_keycache(struct keyring *k) { return k->cache; }

void keyring_harvest(struct keyring *k, const struct config *cfg, const struct config_flow_policy *flow,
                     const struct incoming_result *res, const char *queue_id) {
  char key[320], err[256];
  const char *why;
  if (!flow->harvest_enabled || !res->has_signature) return;
  if (!incoming_may_harvest(flow, res, key, sizeof key, &why)) {
    log_info("queue_id=%s harvest=skipped reason=\"%s\"", queue_id, why);
    return;
  }
  struct keystore_harvest_opts o = {flow->harvest_updated_keys, cfg->limits.harvested_store, !res->sig.chain_ok};
  enum keystore_harvest_outcome out;
  size_t evicted = 0;
  unsigned long before = 0, after = 0;
  bool gens = keystore_generation(k->keys, &before) == 0;
  int rc = keystore_harvest_put(k->keys, key, res->sig.signer, incoming_caps(res), time(NULL), &o, &out, &evicted, err,
                                sizeof err);
  /* Our own write: drop only the key it changed, not the whole cache (the
   * tick flushes it when the generation moved for anyone else's write;
   * exactly one step from where the cache was means it was only ours). */
  gens = gens && rc == 0 && keystore_generation(k->keys, &after) == 0;
  if (gens && k->cache && evicted == 0 && after == before + 1 && keycache_generation(k->cache) == before) {
    keycache_invalidate(k->cache, key);
    keycache_set_generation(k->cache, after);
  }
  if (rc) {
    log_warn("queue_id=%s harvest=error key=<%s> reason=\"%s\"", queue_id, key, err);
    return;
  }
  static const char *names[] = {"added", "same", "replaced", "held", "held"};
  if (out == KEYSTORE_HARVEST_ALERT)
    log_warn("queue_id=%s ALERT: more than one updated key for <%s> within 48 hours; the new one is held until "
             "`sealctl harvested promote` accepts it (R19)", queue_id, key);
  else if (out == KEYSTORE_HARVEST_HELD)
    log_warn("queue_id=%s harvest=held key=<%s>: a different certificate for a known key is held, not used "
             "(updated_keys off, or not newer); `sealctl harvested show %s`", queue_id, key, key);
  else
    log_info("queue_id=%s harvest=%s key=<%s>%s", queue_id, names[out], key, evicted ? " (evicted old keys)" : "");
  if (out != KEYSTORE_HARVEST_SAME && k->cache) keycache_invalidate(k->cache, key);
}

void keyring_stop(struct keyring *k) {
  if (!k) return;
  cryptopool_stop(k->pool);
  keycache_free(k->cache);
  incoming_guard_free(k->guard);
  keyring__trust_unref(k->trust);
  keystore_close(k->keys);
  certstore_free(k->certs);
  config_unref(k->cfg);
  hsm_close(k->hsm);
  hsm_server_stop(k->server);
  pthread_mutex_destroy(&k->mu);
  pthread_rwlock_destroy(&k->pool_lock);
  free(k);
}
