/*
 * process - see process.h.
 *
 * The message being worked on changes hands twice: incoming processing
 * makes a new one (the decrypted or checked message), and inserting header
 * fields makes another.  struct process__cur tracks which buffer is
 * current and whether this run owns it, so each is freed exactly once and
 * an outgoing transformation may free it as soon as it has made the MIME
 * entity (outgoing_request.consume).
 */
#include "core/process.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/policy.h"
#include "core/quarantine.h"
#include "core/sgerr.h"
#include "core/timeutil.h"
#include "crypto/incoming.h"

struct process__cur {
  char *owned;      /* a buffer this run made (freed at the end), or NULL; always
                       NUL-terminated, so at least len + 1 bytes (a struct buf may
                       take it over) */
  const char *data; /* the current message: owned, or the request's data */
  size_t len;
  const char *action; /* static: incoming processing's action, or NULL */
  char note[160];     /* the S/MIME result, for a quarantined message's record */
};

static void process__temp(struct process_result *res, const char *why) {
  res->verdict = PROCESS_SEND;
  res->res.status = OUTGOING_TEMP;
  snprintf(res->res.reason, sizeof res->res.reason, "%.200s", why);
}

/* Make cur the NUL-terminated buffer data (taken over; NULL = empty). */
static void process__take(struct process__cur *cur, char *data, size_t len) {
  free(cur->owned);
  cur->owned = data;
  cur->data = data ? data : "";
  cur->len = data ? len : 0;
}

/* Decrypt and verify, harvest, and log the S/MIME result; 0 with cur set
 * to the processed message, or -1 with res set (TEMP). */
static int process__incoming(struct hsm_worker *w, struct process_request *rq, struct process_result *res,
                             struct process__cur *cur) {
  const struct config *cfg = rq->cfg;
  /* Signers are judged as of the message's arrival, so a retry days later
   * does not turn "pass" into "expired"; only the first attempt counts
   * toward the oracle guard. */
  time_t arrived = rq->env->arrival_ms ? (time_t)(rq->env->arrival_ms / 1000) : time(NULL);
  struct incoming_request irq = {rq->flow, cfg->hostname, rq->in->trust, rq->in->keys, rq->in->n_keys,
                                 rq->first ? rq->in->guard : NULL, cfg->spool_dir, rq->data, rq->len, arrived};
  struct incoming_result ir;
  incoming_process(w, &irq, &ir);
  res->smime_message = ir.smime;
  res->smime_verified = ir.verified;
  if (ir.status != INCOMING_DONE) {
    process__temp(res, ir.reason);
    incoming_result_free(&ir);
    return -1;
  }
  cur->action = ir.action;
  snprintf(cur->note, sizeof cur->note, "smime=%s%s%s", ir.result, ir.result_reason[0] ? " reason=" : "",
           ir.result_reason);
  if (rq->flow->smime_decrypt_verify) {
    char from[330], id[330], detail[300];
    log_safe(from, sizeof from, ir.from, strlen(ir.from));
    log_safe(id, sizeof id, ir.sig.identity, strlen(ir.sig.identity));
    log_safe(detail, sizeof detail, ir.reason, strlen(ir.reason));
    log_info("queue_id=%s from=<%s> action=%s smime=%s%s%s identity=<%s> detail=\"%s\"", rq->env->queue_id, from,
             ir.action, ir.result, ir.result_reason[0] ? " reason=" : "", ir.result_reason, id, detail);
    if (rq->first) keyring_harvest(rq->keys, cfg, rq->flow, &ir, rq->env->queue_id);
  }
  size_t len = 0;
  char *out = buf_steal(&ir.out, &len);
  incoming_result_free(&ir);
  if (!out) {
    process__temp(res, "out of memory");
    return -1;
  }
  process__take(cur, out, len);
  return 0;
}

struct quarantine_limits process_quarantine_limits(const char *name, void *cfg) {
  struct config_quarantine q = config_quarantine_limits(cfg, name);
  return (struct quarantine_limits){q.retention_ms, q.max_size};
}

/* What each quarantine held when this process last scanned it, plus what
 * it has held there since (an estimate from above: removals by sealctl
 * are not seen, only cause an earlier scan).  A hold scans the folder
 * again only when a limit may have been reached: a scan per hold made a
 * burst of holds into a big quarantine quadratic, on the crypto workers.
 * A hold racing a scan may be left out of the estimate; the daemon's
 * minute pass (core/release.c) catches what that delays. */
#define PROCESS__QUSAGE_MAX 64
static struct {
  char name[QUARANTINE_NAME_MAX + 1];
  struct quarantine_usage u;
} process__qusage[PROCESS__QUSAGE_MAX];
static size_t process__n_qusage;
static pthread_mutex_t process__qusage_mu = PTHREAD_MUTEX_INITIALIZER;

/* Count a hold of about `bytes` in quarantine name; true if its folder
 * should be scanned now (never scanned, or a limit may be passed). */
static bool process__expiry_due(const char *name, uint64_t bytes, uint64_t now_ms, struct quarantine_limits lim) {
  bool due = true;
  pthread_mutex_lock(&process__qusage_mu);
  size_t i = 0;
  while (i < process__n_qusage && strcmp(process__qusage[i].name, name) != 0) i++;
  if (i < process__n_qusage) {
    struct quarantine_usage *u = &process__qusage[i].u;
    u->bytes += bytes;
    if (u->oldest_ms == 0) u->oldest_ms = now_ms;
    due = (lim.max_bytes && u->bytes > lim.max_bytes) ||
          (lim.retention_ms && now_ms - u->oldest_ms >= lim.retention_ms);
  }
  pthread_mutex_unlock(&process__qusage_mu);
  return due;
}

/* What a scan of quarantine name left (more names than the table holds:
 * those are scanned at every hold). */
static void process__expiry_done(const char *name, const struct quarantine_usage *u) {
  pthread_mutex_lock(&process__qusage_mu);
  size_t i = 0;
  while (i < process__n_qusage && strcmp(process__qusage[i].name, name) != 0) i++;
  if (i == process__n_qusage && i < PROCESS__QUSAGE_MAX) {
    snprintf(process__qusage[i].name, sizeof process__qusage[i].name, "%s", name);
    process__n_qusage++;
  }
  if (i < process__n_qusage) process__qusage[i].u = *u;
  pthread_mutex_unlock(&process__qusage_mu);
}

/* Hold the message as spooled (for incoming mail: as it arrived, still
 * encrypted) in quarantine o->quarantine.  A message larger than the
 * quarantine may hold is refused (a DSN) rather than held and expired at
 * once. */
static void process__quarantine(struct process_request *rq, const struct policy_outcome *o,
                                const struct process__cur *cur, struct process_result *res) {
  struct quarantine_limits lim = process_quarantine_limits(o->quarantine, (void *)rq->cfg);
  uint64_t need = rq->len + 4096; /* the file: the data, the envelope and the record's header */
  for (size_t i = 0; i < rq->env->n_rcpts; i++) need += strlen(rq->env->rcpts[i]) + 5;
  if (lim.max_bytes && need > lim.max_bytes) {
    res->verdict = PROCESS_SEND;
    res->res.status = OUTGOING_FAIL;
    snprintf(res->res.reason, sizeof res->res.reason, "filter '%.60s' holds the message in quarantine '%.64s', "
             "but it is larger than that quarantine's max_size", o->decided_by, o->quarantine);
    return;
  }
  struct quarantine_meta meta = {0};
  snprintf(meta.name, sizeof meta.name, "%s", o->quarantine);
  snprintf(meta.filter, sizeof meta.filter, "%s", o->decided_by);
  snprintf(meta.reason, sizeof meta.reason, "policy=%s filters=%s%s%s", o->policy, o->filters,
           cur->note[0] ? " " : "", cur->note);
  char err[300];
  int rc = quarantine_put(rq->cfg->quarantine_dir, &meta, rq->env, rq->data, rq->len, err, sizeof err);
  if (rc) {
    char why[400];
    snprintf(why, sizeof why, "cannot hold the message in quarantine '%s': %s", o->quarantine, err);
    process__temp(res, why);
    return;
  }
  res->verdict = PROCESS_QUARANTINED;
  /* Its limits are enforced as soon as a quarantine grows past them, not
   * only by the daemon's minute timer (core/release.c); only this folder
   * is scanned, and only when a limit may have been reached. */
  uint64_t now = timeutil_wall_ms();
  if (process__expiry_due(meta.name, need, now, lim)) {
    struct quarantine_usage left;
    if (quarantine_expire_name(rq->cfg->quarantine_dir, meta.name, now, lim, &left) < 0)
      log_err("quarantine: expiry failed after holding %s", meta.id);
    else
      process__expiry_done(meta.name, &left);
  }
  snprintf(res->quarantine, sizeof res->quarantine, "%s", meta.name);
  snprintf(res->quarantine_id, sizeof res->quarantine_id, "%s", meta.id);
}

/* The last step: the sending profile (if any) over cur, else cur as is. */
static void process__send(struct hsm_worker *w, struct process_request *rq, const struct config_sending_profile *p,
                          struct process__cur *cur, struct process_result *res) {
  res->verdict = PROCESS_SEND;
  res->profile = p;
  if (!p) {
    res->res.action = cur->action ? cur->action : "relay";
    if (cur->owned) {
      res->res.out = (struct buf){.data = cur->owned, .len = cur->len, .cap = cur->len + 1};
      cur->owned = NULL;
    } else if (buf_append(&res->res.out, cur->data, cur->len) != 0) {
      process__temp(res, "out of memory");
      return;
    }
    res->res.status = OUTGOING_DONE;
    return;
  }
  struct outgoing_signer signer = {0};
  if (p->mode != CONFIG_MODE_ENCRYPT && keyring_signer(rq->keys, p->signing_certificate, &signer) != 0) {
    char why[300];
    snprintf(why, sizeof why, "signing certificate '%s' is not in the token", p->signing_certificate);
    process__temp(res, why);
    return;
  }
  char **consume = cur->owned ? &cur->owned : &rq->data;
  struct outgoing_request orq = {p, p->mode != CONFIG_MODE_ENCRYPT ? &signer : NULL, keyring_keystore(rq->keys),
                                 keyring_keycache(rq->keys), (rq->env->flags & SPOOL_F_PLAIN) != 0, cur->data,
                                 cur->len, consume, rq->env->rcpts, rq->env->n_rcpts, time(NULL)};
  outgoing_process(w, &orq, &res->res);
  keyring_signer_free(&signer);
}

/* Filters and policies; returns true when the message goes on to be sent
 * (with *profile and cur possibly changed), false when res is final. */
static bool process__policy(struct process_request *rq, struct process__cur *cur,
                            const struct config_sending_profile **profile, struct process_result *res) {
  struct policy_input in = {cur->data, cur->len, rq->env->sender, rq->env->rcpts, rq->env->n_rcpts,
                            rq->env->orig_rcpts, rq->env->n_orig_rcpts, rq->direction,
                            res->smime_message, res->smime_verified, (rq->env->flags & SPOOL_F_RELEASED) != 0};
  struct policy_result pr;
  if (policy_evaluate(rq->cfg, &in, &pr) != 0) {
    process__temp(res, "out of memory evaluating filters");
    return false;
  }
  bool go_on = false;
  const struct policy_outcome *o = &pr.groups[0];
  snprintf(res->filters, sizeof res->filters, "%s", o->filters);
  snprintf(res->decided_by, sizeof res->decided_by, "%s", o->decided_by);
  if (pr.n_groups > 1) {
    res->verdict = PROCESS_SPLIT;
    res->group_of = pr.group_of;
    res->n_groups = pr.n_groups;
    pr.group_of = NULL;
  } else if (o->verdict == POLICY_DROP || o->verdict == POLICY_BOUNCE) {
    res->verdict = o->verdict == POLICY_DROP ? PROCESS_DROP : PROCESS_BOUNCE;
  } else if (o->verdict == POLICY_QUARANTINE) {
    process__quarantine(rq, o, cur, res);
  } else {
    go_on = true;
    if (o->profile) *profile = config_sending_profile_find(rq->cfg, o->profile);
    char *with = NULL;
    size_t with_len = 0;
    if (o->n_headers && policy_insert_headers(o, cur->data, cur->len, &with, &with_len) != 0) {
      process__temp(res, "out of memory inserting header fields");
      go_on = false;
    } else if (o->n_headers) {
      process__take(cur, with, with_len);
    }
  }
  policy_result_free(&pr);
  return go_on;
}

void process_run(struct hsm_worker *w, struct process_request *rq, struct process_result *res) {
  *res = (struct process_result){0};
  struct process__cur cur = {NULL, rq->data, rq->len, NULL, ""};
  const struct config_sending_profile *profile = rq->profile;
  if (rq->flow && process__incoming(w, rq, res, &cur) != 0) return;
  if (!rq->policy || process__policy(rq, &cur, &profile, res)) process__send(w, rq, profile, &cur, res);
  free(cur.owned);
}

void process_result_free(struct process_result *res) {
  if (!res) return;
  outgoing_result_free(&res->res);
  free(res->group_of);
  res->group_of = NULL;
}
