/* delivery - see delivery.h. */
#include "core/delivery.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/daemon.h"
#include "core/dsn.h"
#include "core/log.h"
#include "core/policy.h"
#include "core/process.h"
#include "core/sgerr.h"
#include "core/timeutil.h"
#include "core/shard.h"
#include "core/smtp_client.h"
#include "core/spool.h"
#include "crypto/keyring.h"
#include "crypto/outgoing.h"

#define DL_IDLE_CONN_MS 5000
/* Bytes of message data a next hop's waiting queue keeps in memory; the
 * rest is dropped and read back from the spool shortly before its turn, so
 * a slow next hop costs disk reads, not unbounded memory. */
#define DL_QUEUE_BYTES (16u << 20)

struct dl_host;

struct dl_conn {
  struct dl_conn *next;
  struct dl_host *h;
  struct smtp_client *c;
  struct spool_msg *m; /* in flight, or NULL */
  uv_timer_t idle;
  bool ready;
};

struct dl_host {
  struct dl_host *next;
  struct delivery *dl;
  char *key;
  struct config_hostport addr;
  /* Three queues, each in arrival order: cold (dropped from memory until
   * there is room: only on disk), waiting (being read back or processed)
   * and ready (the bytes for the next hop are in memory).  A connection
   * takes the head of the ready queue and a read back the head of the cold
   * one: O(1) however many wait in front of them. */
  struct spool_msg *c_head, *c_tail; /* cold */
  struct spool_msg *q_head, *q_tail; /* waiting */
  struct spool_msg *r_head, *r_tail; /* ready */
  uint64_t q_bytes;                  /* data of queued messages held in memory, those being
                                        processed included */
  uint64_t q_loading_bytes;          /* data being read back by dl__prefetch (not yet in q_bytes) */
  struct dl_conn *conns;
  unsigned n_conns;
  uint64_t down_until_ms;
  char last_error[SMTP_CLIENT_TEXT_MAX];
};

struct delivery {
  struct shard *sh;
  struct dl_host *hosts;
  struct spool_msg *all;      /* every message we own, for queue list */
  struct spool_msg *deferred; /* waiting for next_try_ms */
  uv_timer_t retry;
  uint64_t retry_due;         /* when the retry timer fires, if active */
  unsigned jobs;              /* spool operations in flight */
  unsigned busy;              /* transactions in flight */
  bool draining;
};

static void dl__route(struct delivery *dl, struct spool_msg *m);
static void dl__pump(struct delivery *dl, struct dl_host *h);
static void dl__queue_remove(struct dl_host *h, struct spool_msg *m);

/* ---- bookkeeping --------------------------------------------------------- */

static void dl__own(struct delivery *dl, struct spool_msg *m) {
  m->all_prev = NULL;
  m->all_next = dl->all;
  if (dl->all) dl->all->all_prev = m;
  dl->all = m;
}

static void dl__release(struct delivery *dl, struct spool_msg *m) {
  if (m->all_prev) m->all_prev->all_next = m->all_next;
  else dl->all = m->all_next;
  if (m->all_next) m->all_next->all_prev = m->all_prev;
  spool_msg_free(m);
}

static void dl__set_error(struct spool_msg *m, const char *err) {
  free(m->last_error);
  m->last_error = err ? strdup(err) : NULL;
}

static void dl__log(const struct spool_msg *m, const char *result, size_t n, const char *hop,
                    const char *reply) {
  char from[300];
  log_safe(from, sizeof from, m->env.sender, strlen(m->env.sender));
  log_info("queue_id=%s from=<%s> rcpts=%zu size=%zu action=%s result=%s relay=%s ms=%" PRIu64 " reply=\"%s\"",
           m->env.queue_id, from, n, m->data_len, m->action ? m->action : "relay", result, hop ? hop : "none",
           m->smime_ms, reply ? reply : "");
}

/* The next hop a message goes to: its listener's current next_hop (a reload
 * may have changed it), else the one recorded when it was accepted. */
static int dl__next_hop(struct delivery *dl, const struct spool_msg *m, struct config_hostport *out,
                        enum config_tls *tls_out) {
  struct config *cfg = daemon_config_get(dl->sh->d);
  const struct config_listener *l = config_listener_find(cfg, m->env.listener);
  int rc;
  *tls_out = CONFIG_TLS_NONE;
  if (l) {
    out->host = strdup(l->next_hop.addr.host);
    out->port = l->next_hop.addr.port;
    *tls_out = l->next_hop.tls;
    rc = out->host ? 0 : SG_ENOMEM;
  } else {
    rc = config_parse_hostport(m->env.next_hop, out);
  }
  config_unref(cfg);
  return rc;
}

static struct dl_host *dl__host(struct delivery *dl, struct config_hostport *hp) {
  char key[300];
  snprintf(key, sizeof key, "%s:%u", hp->host, (unsigned)hp->port);
  for (struct dl_host *h = dl->hosts; h; h = h->next)
    if (strcmp(h->key, key) == 0) {
      free(hp->host);
      return h;
    }
  struct dl_host *h = calloc(1, sizeof *h);
  if (!h || !(h->key = strdup(key))) {
    free(h);
    free(hp->host);
    return NULL;
  }
  h->addr = *hp;
  h->dl = dl;
  h->next = dl->hosts;
  dl->hosts = h;
  return h;
}

/* ---- retry timer --------------------------------------------------------- */

static void dl__on_retry(uv_timer_t *t);

/* Make the retry timer fire by `when` (ms since the epoch).  Each defer
 * calls this with its own time, so no scan of the whole list per message. */
static void dl__arm_retry(struct delivery *dl, uint64_t when) {
  if (dl->draining) return;
  if (uv_is_active((uv_handle_t *)&dl->retry) && dl->retry_due <= when) return;
  uint64_t now = timeutil_wall_ms();
  dl->retry_due = when;
  uv_timer_start(&dl->retry, dl__on_retry, when > now ? when - now : 0, 0);
}

static void dl__on_retry(uv_timer_t *t) {
  struct delivery *dl = t->data;
  uint64_t now = timeutil_wall_ms();
  struct spool_msg **pp = &dl->deferred, *due = NULL;
  uint64_t first = UINT64_MAX;
  while (*pp) {
    struct spool_msg *m = *pp;
    if (m->next_try_ms <= now) {
      *pp = m->next;
      m->next = due;
      due = m;
    } else {
      if (m->next_try_ms < first) first = m->next_try_ms;
      pp = &m->next;
    }
  }
  while (due) {
    struct spool_msg *m = due;
    due = m->next;
    m->next = NULL;
    dl__route(dl, m);
  }
  if (first != UINT64_MAX) dl__arm_retry(dl, first);
}

/* ---- after an attempt: bounce, rewrite, remove or retry ---------------- */

/* What one attempt decided, carried across the asynchronous spool steps. */
struct dl_fin {
  struct delivery *dl;
  struct spool_msg *m;
  char **pending; /* recipients to retry (strings borrowed from m->env.rcpts) */
  size_t n_pending;
  char **failed;  /* recipients that failed for good (borrowed) */
  size_t n_failed;
  bool changed;   /* the file must be rewritten with only the pending ones */
};

static void dl__fin_free(struct dl_fin *f) {
  free(f->pending);
  free(f->failed);
  free(f);
}

static void dl__defer(struct delivery *dl, struct spool_msg *m);

/* Before the recipient list first shrinks (a split, a partial delivery),
 * keep the whole list as the original recipients ('O' records), so that
 * filters judge the rest as they judged the message (core/policy.h).
 * false without memory. */
static bool dl__remember_rcpts(struct spool_envelope *e) {
  if (e->n_orig_rcpts) return true;
  if (spool_rcpts_copy(&e->orig_rcpts, &e->n_orig_rcpts, e->rcpts, e->n_rcpts) == 0) return true;
  for (size_t i = 0; i < e->n_orig_rcpts; i++) free(e->orig_rcpts[i]);
  free(e->orig_rcpts);
  e->orig_rcpts = NULL;
  e->n_orig_rcpts = 0;
  return false;
}

/* Replace the envelope's recipient list with the pending ones. */
static void dl__keep_pending(struct dl_fin *f) {
  struct spool_envelope *e = &f->m->env;
  if (!dl__remember_rcpts(e)) return; /* keep them all: a duplicate is better than a loss */
  char **keep = malloc((f->n_pending ? f->n_pending : 1) * sizeof *keep);
  if (!keep) return;
  size_t k = 0;
  for (size_t i = 0; i < e->n_rcpts; i++) {
    bool pend = false;
    for (size_t j = 0; j < f->n_pending && !pend; j++) pend = f->pending[j] == e->rcpts[i];
    if (pend) keep[k++] = e->rcpts[i];
    else free(e->rcpts[i]);
  }
  free(e->rcpts);
  e->rcpts = keep;
  e->n_rcpts = k;
}

static void dl__removed(struct spool_msg *m, int status, void *arg) {
  struct delivery *dl = arg;
  dl->jobs--;
  if (status != 0) log_err("queue_id=%s: cannot remove from spool: %s", m->env.queue_id, sgerr_str(status));
  dl__release(dl, m);
  shard_check_idle(dl->sh);
}

static void dl__rewritten(struct spool_msg *m, int status, void *arg) {
  struct delivery *dl = arg;
  dl->jobs--;
  if (status != 0) /* the old file still lists everyone: some get it twice */
    log_err("queue_id=%s: cannot rewrite spool file: %s", m->env.queue_id, sgerr_str(status));
  dl__defer(dl, m);
  shard_check_idle(dl->sh);
}

static void dl__finish(struct dl_fin *f) {
  struct delivery *dl = f->dl;
  struct spool_msg *m = f->m;
  int rc = 0;
  if (f->n_pending == 0) {
    dl->jobs++;
    rc = spool_remove(dl->sh->d->spool, m, &dl->sh->mb, dl__removed, dl);
  } else if (f->changed) {
    dl__keep_pending(f);
    dl->jobs++;
    rc = spool_commit(dl->sh->d->spool, dl->sh->id, m, true, &dl->sh->mb, dl__rewritten, dl);
  } else {
    dl__defer(dl, m);
  }
  if (rc != 0) {
    dl->jobs--;
    dl__defer(dl, m);
  }
  dl__fin_free(f);
}

static void dl__dsn_committed(struct spool_msg *dsn, int status, void *arg) {
  struct dl_fin *f = arg;
  f->dl->jobs--;
  if (status == 0) {
    log_info("queue_id=%s: bounce queued as %s", f->m->env.queue_id, dsn->env.queue_id);
    delivery_enqueue(f->dl, dsn);
  } else { /* no bounce could be written: keep the failed recipients queued */
    log_err("queue_id=%s: cannot queue bounce: %s", f->m->env.queue_id, sgerr_str(status));
    spool_msg_free(dsn);
    for (size_t i = 0; i < f->n_failed; i++) f->pending[f->n_pending++] = f->failed[i];
  }
  dl__finish(f);
}

/* The enhanced status code in a reply text ("550 5.1.1 ..."), or a default
 * by class. */
static void dl__status(const struct smtp_client_reply *r, bool expired, char *out, size_t cap) {
  unsigned a, b, c;
  int used = 0;
  if (expired) {
    snprintf(out, cap, "4.4.7");
  } else if (strlen(r->text) > 4 && sscanf(r->text + 4, "%1u.%3u.%3u%n", &a, &b, &c, &used) == 3 &&
             used > 0 && (a == 4 || a == 5)) {
    snprintf(out, cap, "%u.%u.%u", a, b, c);
  } else {
    snprintf(out, cap, "%d.0.0", r->code / 100 == 5 ? 5 : 4);
  }
}

/* Build the bounce for the failed recipients; NULL if none is due. */
static struct spool_msg *dl__build_dsn(struct delivery *dl, const struct spool_msg *m,
                                       const struct dsn_rcpt *rc, size_t n) {
  if (n == 0 || m->env.sender[0] == '\0') return NULL; /* never bounce a bounce (RFC 5321 6.1) */
  struct config *cfg = daemon_config_get(dl->sh->d);
  /* Data may have been dropped from memory (a long queue): then the report
   * goes without the original's headers rather than not at all. */
  struct dsn_info info = {cfg->hostname, m->env.queue_id, m->env.arrival_ms, timeutil_wall_ms(),
                          m->env.sender, rc, n, m->data ? m->data : "", m->data ? m->data_len : 0};
  struct buf out = BUF_INIT;
  struct spool_msg *d = calloc(1, sizeof *d);
  int err = (!d || dsn_build(&info, &out) != 0);
  if (!err) {
    d->env.arrival_ms = timeutil_wall_ms();
    d->env.sender = strdup("");
    d->env.rcpts = calloc(1, sizeof(char *));
    d->env.n_rcpts = 1;
    if (d->env.rcpts) d->env.rcpts[0] = strdup(m->env.sender);
    d->env.listener = strdup(m->env.listener);
    d->env.next_hop = strdup(m->env.next_hop);
    d->env.client = strdup("local (bounce)");
    d->env.flags = SPOOL_F_DSN;
    d->data = buf_steal(&out, &d->data_len);
    err = !d->env.sender || !d->env.rcpts || !d->env.rcpts[0] || !d->env.listener ||
          !d->env.next_hop || !d->env.client || !d->data;
  }
  buf_free(&out);
  config_unref(cfg);
  if (err) {
    log_err("queue_id=%s: cannot build bounce", m->env.queue_id);
    spool_msg_free(d);
    return NULL;
  }
  spool_new_id(dl->sh->d->spool, dl->sh->id, d);
  return d;
}

/*
 * One attempt is over: r[i] is recipient i's reply (a synthetic 4xx when the
 * connection failed).  Recipients with 2xx are done, 5xx failed, 4xx pending
 * (failed too once the queue lifetime is over).
 */
static void dl__after_attempt(struct delivery *dl, struct spool_msg *m,
                              const struct smtp_client_reply *r, const char *hop);

/* S/MIME processing frees a message's data once its entity is made.  A
 * rewrite (some recipients done, some not) and a DSN (the original's
 * header) need it again: read it back first, then finish the attempt. */
struct dl_reread {
  struct delivery *dl;
  struct smtp_client_reply *r;
  char hop[300];
  bool has_hop;
};

static void dl__reread_done(struct spool_msg *m, int status, void *arg) {
  struct dl_reread *rr = arg;
  struct delivery *dl = rr->dl;
  dl->jobs--;
  if (status == 0) dl__after_attempt(dl, m, rr->r, rr->has_hop ? rr->hop : NULL);
  else if (status == SG_ECORRUPT) dl__release(dl, m); /* moved to corrupt/, logged */
  else dl__defer(dl, m);
  free(rr->r);
  free(rr);
  shard_check_idle(dl->sh);
}

static bool dl__needs_data(const struct spool_msg *m, const struct smtp_client_reply *r) {
  bool done = false, undone = false, failed = false;
  for (size_t i = 0; i < m->env.n_rcpts; i++) {
    done |= r[i].code / 100 == 2;
    undone |= r[i].code / 100 != 2;
    failed |= r[i].code / 100 == 5;
  }
  return !m->data && m->data_len > 0 && ((done && undone) || failed);
}

static bool dl__reread(struct delivery *dl, struct spool_msg *m, const struct smtp_client_reply *r,
                       const char *hop) {
  struct dl_reread *rr = calloc(1, sizeof *rr);
  if (rr) rr->r = malloc(m->env.n_rcpts * sizeof *r);
  if (!rr || !rr->r) {
    if (rr) free(rr->r);
    free(rr);
    return false;
  }
  memcpy(rr->r, r, m->env.n_rcpts * sizeof *r);
  rr->dl = dl;
  rr->has_hop = hop != NULL;
  snprintf(rr->hop, sizeof rr->hop, "%s", hop ? hop : "");
  dl->jobs++;
  if (spool_load(dl->sh->d->spool, m, &dl->sh->mb, dl__reread_done, rr) == 0) return true;
  dl->jobs--;
  free(rr->r);
  free(rr);
  return false;
}

static void dl__after_attempt(struct delivery *dl, struct spool_msg *m,
                              const struct smtp_client_reply *r, const char *hop) {
  if (dl__needs_data(m, r) && dl__reread(dl, m, r, hop)) return;
  size_t n = m->env.n_rcpts, n_done = 0;
  struct dl_fin *f = calloc(1, sizeof *f);
  struct dsn_rcpt *dr = calloc(n, sizeof *dr);
  char (*status)[16] = calloc(n, sizeof *status);
  if (f) f->pending = calloc(n, sizeof(char *)), f->failed = calloc(n, sizeof(char *));
  if (!f || !dr || !status || !f->pending || !f->failed) { /* retry it all later */
    if (f) dl__fin_free(f);
    free(dr);
    free(status);
    dl__defer(dl, m);
    return;
  }
  struct config *cfg = daemon_config_get(dl->sh->d);
  uint64_t now = timeutil_wall_ms(); /* wall clock: arrival_ms survives restarts; may step back */
  bool expired = now > m->env.arrival_ms && now - m->env.arrival_ms >= cfg->limits.queue_lifetime_ms;
  config_unref(cfg);
  f->dl = dl;
  f->m = m;
  for (size_t i = 0; i < n; i++) {
    int cls = r[i].code / 100;
    if (cls == 2) {
      n_done++;
      continue;
    }
    if (cls == 5 || expired) {
      dl__status(&r[i], cls != 5, status[f->n_failed], sizeof status[0]);
      dr[f->n_failed] = (struct dsn_rcpt){m->env.rcpts[i], DSN_ACTION_FAILED, status[f->n_failed],
                                          r[i].text, hop};
      f->failed[f->n_failed++] = m->env.rcpts[i];
    } else {
      f->pending[f->n_pending++] = m->env.rcpts[i];
    }
    dl__set_error(m, r[i].text);
  }
  f->changed = n_done + f->n_failed > 0;
  dl__log(m, f->n_pending ? "deferred" : f->n_failed ? "bounced" : "delivered",
          n, hop, f->n_pending || f->n_failed ? m->last_error : r[0].text);
  if (n_done && (f->n_pending || f->n_failed)) dl__log(m, "delivered", n_done, hop, NULL);
  struct spool_msg *dsn = dl__build_dsn(dl, m, dr, f->n_failed);
  if (!dsn && f->n_failed && m->env.sender[0]) { /* keep what could not be reported */
    for (size_t i = 0; i < f->n_failed; i++) f->pending[f->n_pending++] = f->failed[i];
    f->changed = n_done > 0;
  }
  free(dr);
  free(status);
  if (dsn) {
    dl->jobs++;
    if (spool_commit(dl->sh->d->spool, dl->sh->id, dsn, false, &dl->sh->mb, dl__dsn_committed, f) == 0)
      return;
    dl->jobs--;
    spool_msg_free(dsn);
  }
  dl__finish(f);
}

/* ---- queueing and connections --------------------------------------------- */

static void dl__defer(struct delivery *dl, struct spool_msg *m) {
  struct config *cfg = daemon_config_get(dl->sh->d);
  uint64_t delay = cfg->limits.retry_min_ms;
  for (unsigned i = 0; i < m->attempts && delay < cfg->limits.retry_max_ms; i++) delay *= 2;
  if (delay > cfg->limits.retry_max_ms) delay = cfg->limits.retry_max_ms;
  config_unref(cfg);
  m->attempts++;
  m->next_try_ms = timeutil_wall_ms() + delay;
  free(m->data); /* reloaded from the spool at the next try: retries cost disk, not memory */
  m->data = NULL;
  free(m->wire);
  m->wire = NULL;
  m->next = dl->deferred;
  dl->deferred = m;
  dl__arm_retry(dl, m->next_try_ms);
}

/* Every recipient gets the same synthetic reply (a connection problem). */
static void dl__fail_all(struct delivery *dl, struct spool_msg *m, int code, const char *err,
                         const char *hop) {
  struct smtp_client_reply *r = calloc(m->env.n_rcpts, sizeof *r);
  if (!r) {
    dl__defer(dl, m);
    return;
  }
  for (size_t i = 0; i < m->env.n_rcpts; i++) {
    r[i].code = code;
    snprintf(r[i].text, sizeof r[i].text, "%s", err);
  }
  dl__after_attempt(dl, m, r, hop);
  free(r);
}

/* Close callback for handles whose data is their owning allocation. */
static void dl__closed(uv_handle_t *h) { free(h->data); }

static void dl__conn_drop(struct dl_conn *cn) {
  struct dl_host *h = cn->h;
  for (struct dl_conn **pp = &h->conns; *pp; pp = &(*pp)->next)
    if (*pp == cn) {
      *pp = cn->next;
      break;
    }
  h->n_conns--;
  if (cn->c) smtp_client_close(cn->c);
  uv_close((uv_handle_t *)&cn->idle, dl__closed);
}

static void dl__on_idle(uv_timer_t *t) { dl__conn_drop(t->data); }

static void dl__conn_next(struct dl_conn *cn);

static void dl__on_done(struct smtp_client *c, int status, const char *err,
                        const struct smtp_client_reply *rcpt, size_t n,
                        const struct smtp_client_reply *data, void *arg) {
  struct dl_conn *cn = arg;
  struct delivery *dl = cn->h->dl;
  struct spool_msg *m = cn->m;
  cn->m = NULL;
  dl->busy--;
  free(m->wire); /* made for this attempt; a retry makes it again */
  m->wire = NULL;
  if (status != 0) {
    struct dl_host *h = cn->h;
    cn->c = NULL; /* the client closes itself after a failure */
    dl__conn_drop(cn);
    dl__fail_all(dl, m, 451, err, h->key);
    if (!dl->draining) dl__pump(dl, h); /* the others waiting need a connection */
    return;
  }
  struct smtp_client_reply *r = malloc(n * sizeof *r);
  if (!r) {
    dl__defer(dl, m);
  } else {
    for (size_t i = 0; i < n; i++) /* a recipient is done only if the data was taken too */
      r[i] = rcpt[i].code / 100 == 2 ? *data : rcpt[i];
    dl__after_attempt(dl, m, r, cn->h->key);
    free(r);
  }
  if (!smtp_client_reusable(c)) { /* 421: the hop is closing; the next message gets a new connection */
    struct dl_host *h = cn->h;
    dl__conn_drop(cn);
    if (!dl->draining) dl__pump(dl, h);
    return;
  }
  dl__conn_next(cn);
}

static void dl__on_ready(struct smtp_client *c, int status, const char *err, void *arg) {
  (void)c;
  struct dl_conn *cn = arg;
  struct dl_host *h = cn->h;
  if (status == 0) {
    cn->ready = true;
    dl__conn_next(cn);
    return;
  }
  cn->c = NULL;
  bool was_idle = cn->ready;
  dl__conn_drop(cn);
  if (was_idle) return; /* an idle connection closed by the peer: nothing lost */
  snprintf(h->last_error, sizeof h->last_error, "%s", err);
  struct delivery *dl = cn->h->dl;
  struct config *cfg = daemon_config_get(dl->sh->d);
  h->down_until_ms = timeutil_wall_ms() + cfg->limits.retry_min_ms;
  config_unref(cfg);
  /* The host is down: everyone ready or cold retries later (those being
   * read back or processed stay; their completion brings them here again). */
  for (struct spool_msg *m = h->r_head; m && h->n_conns == 0; m = h->r_head) {
    dl__queue_remove(h, m);
    dl__fail_all(dl, m, 451, err, h->key);
  }
  for (struct spool_msg *m = h->c_head; m && h->n_conns == 0; m = h->c_head) {
    dl__queue_remove(h, m);
    dl__fail_all(dl, m, 451, err, h->key);
  }
}


static void dl__prefetch(struct dl_host *h);

/* Ready to send: the bytes for the next hop are in memory (for a message
 * under a sending profile, the S/MIME result; else the data). */
static bool dl__ready(const struct spool_msg *m) { return m->smime ? m->wire != NULL : m->data != NULL; }

/* What a ready message holds in memory, counted in its host's q_bytes (a
 * message being processed is not counted until it is ready). */
static size_t dl__ready_bytes(const struct spool_msg *m) {
  if (!dl__ready(m)) return 0;
  return (m->data ? m->data_len : 0) + (m->wire ? m->wire_len : 0);
}

/* A host's three queues are doubly linked and every message knows which
 * one holds it: a message leaves the waiting queue wherever S/MIME
 * processing or a read back finishes, and a search from the head made each
 * removal cost the length of the backlog (14 % of a loop's time at 20,000
 * queued). */
enum { DL_Q_NONE, DL_Q_COLD, DL_Q_WAITING, DL_Q_READY };

static struct spool_msg **dl__list_head(struct dl_host *h, int which, struct spool_msg ***tail) {
  switch (which) {
    case DL_Q_COLD: *tail = &h->c_tail; return &h->c_head;
    case DL_Q_READY: *tail = &h->r_tail; return &h->r_head;
    default: *tail = &h->q_tail; return &h->q_head;
  }
}

static void dl__list_push(struct dl_host *h, int which, struct spool_msg *m) {
  struct spool_msg **tail, **head = dl__list_head(h, which, &tail);
  m->next = NULL;
  m->prev = *tail;
  if (*tail) (*tail)->next = m;
  else *head = m;
  *tail = m;
  m->queue = (unsigned char)which;
}

static void dl__list_unlink(struct dl_host *h, struct spool_msg *m) {
  if (m->queue == DL_Q_NONE) return;
  struct spool_msg **tail, **head = dl__list_head(h, m->queue, &tail);
  if (m->prev) m->prev->next = m->next;
  else *head = m->next;
  if (m->next) m->next->prev = m->prev;
  else *tail = m->prev;
  m->next = m->prev = NULL;
  m->queue = DL_Q_NONE;
}

/* Take m off whichever queue of h holds it (none: nothing to do). */
static void dl__queue_remove(struct dl_host *h, struct spool_msg *m) {
  if (m->queue == DL_Q_NONE) return;
  dl__list_unlink(h, m);
  h->q_bytes -= dl__ready_bytes(m);
}

/* m (waiting) has its bytes in memory now: to the end of the ready queue
 * (the caller has counted them). */
static void dl__queue_ready(struct dl_host *h, struct spool_msg *m) {
  dl__list_unlink(h, m);
  dl__list_push(h, DL_Q_READY, m);
}

/* m's data was dropped from memory (it is on disk): to the cold queue,
 * read back by dl__prefetch when there is room. */
static void dl__queue_cold(struct dl_host *h, struct spool_msg *m) {
  free(m->data);
  m->data = NULL;
  dl__list_unlink(h, m);
  dl__list_push(h, DL_Q_COLD, m);
}

/* The first ready message, taken off its queue; NULL when none is (reads
 * or S/MIME processing are then on their way). */
static struct spool_msg *dl__queue_take(struct dl_host *h) {
  struct spool_msg *m = h->r_head;
  if (m) dl__queue_remove(h, m);
  dl__prefetch(h);
  return m;
}

static void dl__smime_start(struct delivery *dl, struct dl_host *h, struct spool_msg *m);

static void dl__prefetched(struct spool_msg *m, int status, void *arg) {
  struct dl_host *h = arg;
  struct delivery *dl = h->dl;
  dl->jobs--;
  m->loading = false;
  h->q_loading_bytes -= m->data_len;
  if (status == 0 && m->smime) {
    dl__smime_start(dl, h, m); /* ready once processed */
  } else if (status == 0) {
    h->q_bytes += m->data_len;
    dl__queue_ready(h, m);
  } else { /* off the queue: corrupt ones were moved aside, others retry later */
    dl__queue_remove(h, m);
    if (status == SG_ECORRUPT) dl__release(dl, m);
    else dl__defer(dl, m);
  }
  if (!dl->draining) dl__pump(dl, h);
  shard_check_idle(dl->sh);
}

/* Read back the first cold messages while the memory they and everything
 * queued take stays under DL_QUEUE_BYTES; only once a quarter of it is
 * free, so reads come in batches. */
static void dl__prefetch(struct dl_host *h) {
  struct delivery *dl = h->dl;
  if (h->q_bytes + h->q_loading_bytes > DL_QUEUE_BYTES / 4 * 3) return;
  for (struct spool_msg *m; (m = h->c_head) && !dl->draining;) {
    if (h->q_bytes + h->q_loading_bytes + m->data_len > DL_QUEUE_BYTES &&
        h->q_bytes + h->q_loading_bytes > 0)
      break; /* (an empty queue takes one however large) */
    dl__list_unlink(h, m);
    dl__list_push(h, DL_Q_WAITING, m);
    m->loading = true;
    dl->jobs++;
    h->q_loading_bytes += m->data_len;
    if (spool_load(dl->sh->d->spool, m, &dl->sh->mb, dl__prefetched, h) != 0) {
      dl->jobs--;
      h->q_loading_bytes -= m->data_len;
      m->loading = false;
      dl__list_unlink(h, m);
      dl__list_push(h, DL_Q_COLD, m); /* tried again at the next send */
      break;
    }
  }
}

static void dl__conn_next(struct dl_conn *cn) {
  struct dl_host *h = cn->h;
  struct delivery *dl = h->dl;
  if (dl->draining) {
    dl__conn_drop(cn);
    return;
  }
  struct spool_msg *m = dl__queue_take(h);
  if (!m) { /* keep it a moment for the next message (connection reuse) */
    uv_timer_start(&cn->idle, dl__on_idle, DL_IDLE_CONN_MS, 0);
    return;
  }
  uv_timer_stop(&cn->idle);
  cn->m = m;
  dl->busy++;
  const char *bytes = m->smime ? m->wire : m->data; /* S/MIME output is 7-bit */
  size_t len = m->smime ? m->wire_len : m->data_len;
  /* Declaring 8BITMIME for 7-bit S/MIME output is harmless; not declaring
   * it for an unprocessed copy (relay, plain split copy) would not be. */
  bool eightbit = (m->env.flags & SPOOL_F_8BITMIME) != 0;
  int rc = smtp_client_send(cn->c, m->env.sender, m->env.rcpts, m->env.n_rcpts, bytes, len, eightbit,
                            dl__on_done, cn);
  if (rc != 0) {
    cn->m = NULL;
    dl->busy--;
    dl__conn_drop(cn);
    dl__fail_all(dl, m, 451, sgerr_str(rc), h->key);
    if (!dl->draining) dl__pump(dl, h);
  }
}

static void dl__conn_open(struct delivery *dl, struct dl_host *h) {
  struct dl_conn *cn = calloc(1, sizeof *cn);
  if (!cn) return;
  struct config *cfg = daemon_config_get(dl->sh->d);
  struct smtp_client_opts o = {h->addr.host, h->addr.port, cfg->hostname,
                               cfg->limits.connect_timeout_ms, cfg->limits.reply_timeout_ms};
  cn->h = h;
  uv_timer_init(&dl->sh->loop, &cn->idle);
  cn->idle.data = cn;
  cn->next = h->conns;
  h->conns = cn;
  h->n_conns++;
  int rc = smtp_client_open(&dl->sh->loop, &o, dl__on_ready, cn, &cn->c);
  config_unref(cfg);
  if (rc != 0) {
    cn->c = NULL;
    dl__conn_drop(cn);
  }
}

static void dl__pump(struct delivery *dl, struct dl_host *h) {
  struct config *cfg = daemon_config_get(dl->sh->d);
  unsigned max = cfg->limits.delivery_connections;
  config_unref(cfg);
  /* Cold messages are read back here too, not only when a connection
   * takes one: with nothing ready (a message over the memory bound, or
   * everything in memory dropped or held by its processing) no connection
   * would ever ask. */
  dl__prefetch(h);
  for (struct dl_conn *cn = h->conns, *next; cn && h->r_head; cn = next) {
    next = cn->next;
    if (cn->ready && !cn->m) dl__conn_next(cn);
  }
  size_t queued = 0, connecting = 0;
  for (struct spool_msg *m = h->r_head; m && queued <= max; m = m->next) queued++;
  for (struct spool_msg *m = h->q_head; m && queued <= max; m = m->next) queued++;
  for (struct spool_msg *m = h->c_head; m && queued <= max; m = m->next) queued++;
  for (struct dl_conn *cn = h->conns; cn; cn = cn->next) connecting += !cn->ready;
  while (connecting < queued && h->n_conns < max) {
    unsigned before = h->n_conns;
    dl__conn_open(dl, h);
    if (h->n_conns <= before) break;
    connecting++;
  }
}

/* ---- processing: S/MIME, filters and policies (core/process.h) ------------- */

/* The flow policy of m's listener if it is incoming (DSNs are our own).
 * Every incoming message goes through crypto/incoming.c: with
 * smime_decrypt_verify it is decrypted and verified; in any case an
 * Authentication-Results field claiming our host name is removed. */
static const struct config_flow_policy *dl__flow_of(const struct config *cfg, const struct spool_msg *m) {
  if (m->env.flags & (SPOOL_F_DSN | SPOOL_F_SMIME)) return NULL;
  const struct config_listener *l = config_listener_find(cfg, m->env.listener);
  return l && l->direction == CONFIG_INCOMING ? config_flow_policy_find(cfg, l->flow_policy) : NULL;
}

/* A listener gone since the message arrived counts as outgoing. */
static enum config_direction dl__direction(const struct config *cfg, const struct spool_msg *m) {
  const struct config_listener *l = config_listener_find(cfg, m->env.listener);
  return l ? l->direction : CONFIG_OUTGOING;
}

/* A message goes through a crypto worker (core/process.h) when its
 * listener (in the current config) names a sending profile, is incoming
 * (forged results are removed; with smime_decrypt_verify, S/MIME is
 * opened), or when filters or mail policies apply to its direction.  DSNs
 * never are (they go back to our own sender).  One accepted under a
 * profile (SPOOL_F_SMIME) is processed even if a reload renamed its
 * listener or removed the profile: dl__smime_request then makes it wait
 * instead of sending it unprocessed (fail closed). */
static bool dl__profile_of(struct delivery *dl, const struct spool_msg *m) {
  if (m->env.flags & SPOOL_F_DSN) return false;
  if (m->env.flags & SPOOL_F_SMIME) return true;
  struct config *cfg = daemon_config_get(dl->sh->d);
  const struct config_listener *l = config_listener_find(cfg, m->env.listener);
  bool yes = (l && l->sending_profile && config_sending_profile_find(cfg, l->sending_profile)) ||
             dl__flow_of(cfg, m) || policy_active(cfg, dl__direction(cfg, m));
  config_unref(cfg);
  return yes;
}

struct dl_smime {
  struct cryptopool_job job; /* first: the pool hands this pointer back */
  struct mailbox_item item;  /* the result's way back to the shard loop */
  struct delivery *dl;
  struct dl_host *h;
  struct spool_msg *m;
  struct config *cfg;        /* referenced: the request and result point into it */
  size_t counted;            /* bytes counted in h->q_bytes while processing */
  struct keyring_incoming in;
  struct process_request rq; /* rq.data: m's data, handed over while processing */
  struct process_result res;
  uint64_t t0;
};

static void dl__smime_free(struct dl_smime *j) {
  free(j->rq.data);
  keyring_incoming_free(&j->in);
  process_result_free(&j->res);
  config_unref(j->cfg);
  free(j);
}

static void dl__smime_done(void *arg);

/* Crypto worker thread: the processing, then back to the loop. */
static void dl__smime_run(struct cryptopool_job *job, struct hsm_worker *w) {
  struct dl_smime *j = (struct dl_smime *)job;
  process_run(w, &j->rq, &j->res);
  j->item.fn = dl__smime_done;
  j->item.arg = j;
  mailbox_post_item(&j->dl->sh->mb, &j->item);
}

/* The message's first processing: the only one that harvests and counts
 * toward the oracle guard.  A part of a split (and the original kept with
 * the rest) starts again at attempt 0 but carries the original recipients
 * ('O' records): it was judged already, so an incoming message split N
 * ways is not counted N + 1 times. */
static bool dl__first_processing(const struct spool_msg *m) {
  return m->attempts == 0 && m->env.n_orig_rcpts == 0;
}

/* Fill the request from the current config and keys; false with res set
 * when it cannot even be made (then the result is handled at once). */
static bool dl__smime_request(struct dl_smime *j) {
  struct config *cfg = j->cfg;
  struct spool_msg *m = j->m;
  const struct config_listener *l = config_listener_find(cfg, m->env.listener);
  const struct config_sending_profile *p = l && l->sending_profile ? config_sending_profile_find(cfg, l->sending_profile) : NULL;
  enum config_direction dir = dl__direction(cfg, m);
  j->rq = (struct process_request){cfg, j->dl->sh->d->keys, &m->env, j->rq.data, m->data_len, NULL, p, NULL, dir,
                                   policy_active(cfg, dir), dl__first_processing(m)};
  j->res.res.status = OUTGOING_TEMP;
  if (!p && (m->env.flags & SPOOL_F_SMIME)) { /* accepted under a profile that is gone */
    snprintf(j->res.res.reason, sizeof j->res.res.reason, "listener '%.80s' or its sending profile is no longer "
             "configured; the message is not sent unprocessed", m->env.listener);
    return false;
  }
  if (!p && (j->rq.flow = dl__flow_of(cfg, m)) != NULL) {
    if (keyring_incoming(j->dl->sh->d->keys, &j->in) != 0) {
      snprintf(j->res.res.reason, sizeof j->res.res.reason, "out of memory");
      return false;
    }
    j->rq.in = &j->in;
  }
  return true;
}

/* Process m (queued on h, data in memory) on a crypto worker; it stays
 * "loading" (not ready) until dl__smime_done. */
static void dl__smime_start(struct delivery *dl, struct dl_host *h, struct spool_msg *m) {
  struct dl_smime *j = calloc(1, sizeof *j);
  if (!j) {
    dl__queue_cold(h, m); /* read and processed again by the prefetch */
    return;
  }
  *j = (struct dl_smime){.dl = dl, .h = h, .m = m, .cfg = daemon_config_get(dl->sh->d), .t0 = timeutil_mono_ms()};
  j->rq.data = m->data;
  m->data = NULL; /* the job's until dl__smime_done */
  j->job.run = dl__smime_run;
  m->loading = true;
  dl->jobs++;
  j->counted = m->data_len; /* the queue's memory bound covers messages being processed */
  h->q_bytes += j->counted;
  if (!dl__smime_request(j) || keyring_submit(dl->sh->d->keys, &j->job) != 0) {
    if (j->res.res.status == OUTGOING_TEMP && !j->res.res.reason[0])
      snprintf(j->res.res.reason, sizeof j->res.res.reason, "token unreachable (the crypto workers are being rebuilt)");
    dl__smime_done(j);
  }
}

/* missing_key_action: bounce.  Nothing is delivered; the DSN says who has
 * no key and that the others were not sent to because of them (R24). */
static void dl__nokeys_bounce(struct delivery *dl, struct spool_msg *m, const bool *keyed) {
  struct smtp_client_reply *r = calloc(m->env.n_rcpts, sizeof *r);
  if (!r) {
    dl__defer(dl, m);
    return;
  }
  for (size_t i = 0; i < m->env.n_rcpts; i++) {
    r[i].code = 550;
    snprintf(r[i].text, sizeof r[i].text, "%s",
             keyed[i] ? "550 5.7.1 not sent: other recipients of this message have no encryption key "
                        "(missing_key_action: bounce)"
                      : "550 5.7.1 no encryption key for this recipient (missing_key_action: bounce)");
  }
  dl__after_attempt(dl, m, r, NULL);
  free(r);
}

/* The message leaves the spool without being delivered: dropped (by
 * missing_key_action: drop or a filter's drop()) or held in quarantine
 * (already durable there).  One log line says why. */
static void dl__retire(struct delivery *dl, struct spool_msg *m, const char *result, const char *why) {
  char from[300];
  log_safe(from, sizeof from, m->env.sender, strlen(m->env.sender));
  log_warn("queue_id=%s from=<%s> rcpts=%zu size=%zu action=%s result=%s %s", m->env.queue_id, from,
           m->env.n_rcpts, m->data_len, m->action ? m->action : "relay", result, why);
  dl->jobs++;
  if (spool_remove(dl->sh->d->spool, m, &dl->sh->mb, dl__removed, dl) != 0) {
    dl->jobs--;
    dl__defer(dl, m);
  }
}

static void dl__nokeys_drop(struct delivery *dl, struct spool_msg *m, const bool *keyed) {
  size_t nokey = 0;
  char why[200];
  for (size_t i = 0; i < m->env.n_rcpts; i++) nokey += !keyed[i];
  snprintf(why, sizeof why, "reason=\"no encryption key for %zu recipient(s) (missing_key_action: drop)\"", nokey);
  m->action = m->action ? m->action : "encrypt";
  dl__retire(dl, m, "dropped", why);
}

/* After the split-off copies are durable, the original keeps group 0's
 * recipients and goes round again. */
static void dl__split_rewritten(struct spool_msg *m, int status, void *arg) {
  struct delivery *dl = arg;
  dl->jobs--;
  if (status != 0) { /* the old file still lists everyone: the others may get two copies */
    log_err("queue_id=%s: cannot rewrite spool file: %s", m->env.queue_id, sgerr_str(status));
    dl__defer(dl, m);
  } else {
    dl__route(dl, m);
  }
  shard_check_idle(dl->sh);
}

static void dl__split_rewrite(struct delivery *dl, struct spool_msg *m) {
  dl->jobs++;
  if (spool_commit(dl->sh->d->spool, dl->sh->id, m, true, &dl->sh->mb, dl__split_rewritten, dl) != 0) {
    dl->jobs--;
    dl__defer(dl, m);
  }
}

/* A split of one message into groups of recipients: group 0 stays in the
 * original, each other group becomes a durable copy, committed one after
 * the other.  Used by missing_key_action: split (R24) and by mail policies
 * whose outcomes differ between recipients (R30). */
struct dl_split {
  struct delivery *dl;
  struct spool_msg *orig;
  size_t *group_of;   /* per recipient of orig (owned) */
  size_t n_groups, next;
  uint32_t copy_flags; /* added to each copy's flags */
  const char *why;     /* static, for the log */
};

static void dl__split_free(struct dl_split *sp) {
  free(sp->group_of);
  free(sp);
}

/* A copy of m (data and envelope) for the recipients of group g. */
static struct spool_msg *dl__group_copy(struct delivery *dl, const struct spool_msg *m, const struct dl_split *sp,
                                        size_t g) {
  struct spool_msg *c = calloc(1, sizeof *c);
  if (!c || spool_envelope_copy(&c->env, &m->env) != 0 || !dl__remember_rcpts(&c->env) ||
      !(c->data = malloc(m->data_len ? m->data_len : 1))) {
    spool_msg_free(c);
    return NULL;
  }
  memcpy(c->data, m->data, m->data_len);
  c->data_len = m->data_len;
  size_t k = 0;
  for (size_t i = 0; i < c->env.n_rcpts; i++) {
    if (sp->group_of[i] != g) free(c->env.rcpts[i]);
    else c->env.rcpts[k++] = c->env.rcpts[i];
  }
  c->env.n_rcpts = k;
  c->env.flags |= sp->copy_flags;
  spool_new_id(dl->sh->d->spool, dl->sh->id, c);
  return c;
}

static void dl__split_next(struct dl_split *sp);

static void dl__split_committed(struct spool_msg *copy, int status, void *arg) {
  struct dl_split *sp = arg;
  struct delivery *dl = sp->dl;
  struct spool_msg *m = sp->orig;
  dl->jobs--;
  if (status != 0) { /* everyone stays in the original: those in earlier copies may get two */
    log_err("queue_id=%s: cannot queue a split-off copy: %s", m->env.queue_id, sgerr_str(status));
    spool_msg_free(copy);
    dl__split_free(sp);
    dl__defer(dl, m);
  } else {
    log_info("queue_id=%s: %zu recipient(s) %s split off as %s", m->env.queue_id, copy->env.n_rcpts, sp->why,
             copy->env.queue_id);
    delivery_enqueue(dl, copy);
    sp->next++;
    dl__split_next(sp);
  }
  shard_check_idle(dl->sh);
}

static void dl__split_next(struct dl_split *sp) {
  struct delivery *dl = sp->dl;
  struct spool_msg *m = sp->orig;
  if (sp->next < sp->n_groups) {
    struct spool_msg *copy = dl__group_copy(dl, m, sp, sp->next);
    dl->jobs++;
    if (copy && spool_commit(dl->sh->d->spool, dl->sh->id, copy, false, &dl->sh->mb, dl__split_committed, sp) == 0)
      return;
    dl->jobs--;
    spool_msg_free(copy);
    dl__split_free(sp);
    dl__defer(dl, m);
    return;
  }
  struct dl_fin f = {.dl = dl, .m = m, .pending = calloc(m->env.n_rcpts, sizeof(char *))};
  for (size_t i = 0; f.pending && i < m->env.n_rcpts; i++)
    if (sp->group_of[i] == 0) f.pending[f.n_pending++] = m->env.rcpts[i];
  if (f.pending) dl__keep_pending(&f); /* without memory all stay: duplicates, not losses */
  free(f.pending);
  dl__split_free(sp);
  dl__split_rewrite(dl, m);
}

/* Start a split; group_of is taken over.  Group 0 must not be empty. */
static void dl__split(struct delivery *dl, struct spool_msg *m, size_t *group_of, size_t n_groups, uint32_t flags,
                      const char *why) {
  struct dl_split *sp = calloc(1, sizeof *sp);
  if (!sp) {
    free(group_of);
    dl__defer(dl, m);
    return;
  }
  *sp = (struct dl_split){dl, m, group_of, n_groups, 1, flags, why};
  dl__split_next(sp);
}

/* missing_key_action: split.  A copy (flag PLAIN: signed at most) for the
 * recipients without keys; the original keeps the others (R24). */
static void dl__nokeys_split(struct delivery *dl, struct spool_msg *m, const bool *keyed) {
  size_t nkeyed = 0;
  for (size_t i = 0; i < m->env.n_rcpts; i++) nkeyed += keyed[i];
  if (nkeyed == 0) { /* nobody has a key: the whole message is the plain copy */
    m->env.flags |= SPOOL_F_PLAIN;
    dl__split_rewrite(dl, m);
    return;
  }
  size_t *group_of = malloc(m->env.n_rcpts * sizeof *group_of);
  if (!group_of) {
    dl__defer(dl, m);
    return;
  }
  for (size_t i = 0; i < m->env.n_rcpts; i++) group_of[i] = keyed[i] ? 0 : 1;
  dl__split(dl, m, group_of, 2, SPOOL_F_PLAIN, "without encryption keys (missing_key_action: split)");
}

/* What the filters decided, other than sending (m is off its queue). */
static void dl__policy_outcome(struct delivery *dl, struct spool_msg *m, struct dl_smime *j) {
  char why[700], by[200];
  log_safe(by, sizeof by, j->res.decided_by, strlen(j->res.decided_by));
  switch (j->res.verdict) {
    case PROCESS_SPLIT:
      dl__split(dl, m, j->res.group_of, j->res.n_groups, 0, "processed differently by mail policies or filters");
      j->res.group_of = NULL;
      return;
    case PROCESS_DROP:
      snprintf(why, sizeof why, "filter=\"%s\" reason=\"drop()\"", by);
      dl__retire(dl, m, "dropped", why);
      return;
    case PROCESS_BOUNCE: {
      char text[SMTP_CLIENT_TEXT_MAX];
      snprintf(text, sizeof text, "550 5.7.1 message refused by filter '%.150s' (bounce)", by);
      dl__fail_all(dl, m, 550, text, NULL);
      return;
    }
    case PROCESS_QUARANTINED:
      snprintf(why, sizeof why, "quarantine=%s id=%s filter=\"%s\"", j->res.quarantine, j->res.quarantine_id, by);
      dl__retire(dl, m, "quarantined", why);
      return;
    case PROCESS_SEND:
      return;
  }
}

/* A result other than DONE: m is off its host's queue. */
static void dl__smime_outcome(struct delivery *dl, struct spool_msg *m, struct dl_smime *j) {
  char text[SMTP_CLIENT_TEXT_MAX];
  if (j->res.verdict != PROCESS_SEND) {
    dl__policy_outcome(dl, m, j);
    return;
  }
  switch (j->res.res.status) {
    case OUTGOING_TEMP: /* the token is unreachable: not a signing failure (R25) */
      snprintf(text, sizeof text, "451 4.3.0 %.200s; the message waits and is retried", j->res.res.reason);
      dl__fail_all(dl, m, 451, text, NULL);
      return;
    case OUTGOING_FAIL:
      snprintf(text, sizeof text, "554 5.7.0 %.200s", j->res.res.reason);
      dl__fail_all(dl, m, 554, text, NULL);
      return;
    case OUTGOING_NOKEYS:
      if (j->res.profile->missing_key_action == CONFIG_MISSING_DROP) dl__nokeys_drop(dl, m, j->res.res.keyed);
      else if (j->res.profile->missing_key_action == CONFIG_MISSING_SPLIT) dl__nokeys_split(dl, m, j->res.res.keyed);
      else dl__nokeys_bounce(dl, m, j->res.res.keyed);
      return;
    case OUTGOING_DONE:
      return;
  }
}

/* Shard loop: the processing of m is over. */
static void dl__smime_done(void *arg) {
  struct dl_smime *j = arg;
  struct delivery *dl = j->dl;
  struct dl_host *h = j->h;
  struct spool_msg *m = j->m;
  dl->jobs--;
  m->loading = false;
  h->q_bytes -= j->counted;
  m->data = j->rq.data; /* back, unless outgoing freed it once the entity was made */
  j->rq.data = NULL;
  m->action = j->res.res.action;
  m->smime_ms = timeutil_mono_ms() - j->t0;
  m->smime_message = j->res.smime_message;
  m->smime_verified = j->res.smime_verified;
  bool send = j->res.verdict == PROCESS_SEND && j->res.res.status == OUTGOING_DONE;
  if (send && !(m->wire = buf_steal(&j->res.res.out, &m->wire_len))) {
    j->res.res.status = OUTGOING_TEMP;
    snprintf(j->res.res.reason, sizeof j->res.res.reason, "out of memory");
    send = false;
  }
  if (send) {
    h->q_bytes += dl__ready_bytes(m);
    dl__queue_ready(h, m);
  } else {
    dl__queue_remove(h, m);
    dl__smime_outcome(dl, m, j);
  }
  dl__smime_free(j);
  if (!dl->draining) dl__pump(dl, h);
  shard_check_idle(dl->sh);
}

static void dl__loaded(struct spool_msg *m, int status, void *arg) {
  struct delivery *dl = arg;
  dl->jobs--;
  if (status == 0) dl__route(dl, m);
  else if (status == SG_ECORRUPT) dl__release(dl, m); /* moved to corrupt/, logged */
  else dl__defer(dl, m);
  shard_check_idle(dl->sh);
}

static void dl__route(struct delivery *dl, struct spool_msg *m) {
  if (dl->draining) { /* it is on disk; the next start delivers it */
    m->next = dl->deferred;
    dl->deferred = m;
    return;
  }
  if (!m->data) {
    dl->jobs++;
    if (spool_load(dl->sh->d->spool, m, &dl->sh->mb, dl__loaded, dl) != 0) {
      dl->jobs--;
      dl__defer(dl, m);
    }
    return;
  }
  struct config_hostport hp;
  enum config_tls tls;
  struct dl_host *h = dl__next_hop(dl, m, &hp, &tls) == 0 ? dl__host(dl, &hp) : NULL;
  if (!h) {
    dl__defer(dl, m);
    return;
  }
  if (tls == CONFIG_TLS_REQUIRED || tls == CONFIG_TLS_VERIFY) {
    /* XXX: TLS to the next hop arrives with issue #8.  Until then a hop
     * that must be reached over TLS gets nothing in clear: mail waits. */
    dl__fail_all(dl, m, 451, "451 4.7.5 next hop requires TLS, which this version cannot do", h->key);
    return;
  }
  if (h->down_until_ms > timeutil_wall_ms()) {
    dl__fail_all(dl, m, 451, h->last_error, h->key);
    return;
  }
  m->smime = dl__profile_of(dl, m);
  m->action = NULL; /* this attempt's, set again by its processing */
  m->smime_ms = 0;
  if (h->q_bytes + h->q_loading_bytes + m->data_len > DL_QUEUE_BYTES) { /* on disk already: read back later */
    dl__queue_cold(h, m);
  } else if (m->smime) {
    dl__list_push(h, DL_Q_WAITING, m);
    dl__smime_start(dl, h, m);
  } else {
    h->q_bytes += m->data_len;
    dl__list_push(h, DL_Q_READY, m);
  }
  dl__pump(dl, h);
}

/* ---- public ------------------------------------------------------------- */

int delivery_init(struct shard *sh, struct delivery **out) {
  struct delivery *dl = calloc(1, sizeof *dl);
  if (!dl) return SG_ENOMEM;
  dl->sh = sh;
  uv_timer_init(&sh->loop, &dl->retry);
  dl->retry.data = dl;
  *out = dl;
  return 0;
}

void delivery_enqueue(struct delivery *dl, struct spool_msg *m) {
  dl__own(dl, m);
  dl__route(dl, m);
}

void delivery_hold(struct delivery *dl) { dl->jobs++; }

void delivery_unhold(struct delivery *dl) {
  dl->jobs--;
  shard_check_idle(dl->sh);
}

void delivery_flush(struct delivery *dl) {
  for (struct dl_host *h = dl->hosts; h; h = h->next) h->down_until_ms = 0;
  for (struct spool_msg *m = dl->deferred; m; m = m->next) m->next_try_ms = 0;
  if (dl->deferred) dl__arm_retry(dl, 0);
}

static void dl__field(struct buf *out, const char *s) {
  for (; s && *s; s++) {
    char ch = (*s == '\t' || *s == '\n' || *s == '\r') ? ' ' : *s;
    buf_append(out, &ch, 1);
  }
}

void delivery_list(struct delivery *dl, struct buf *out) {
  for (struct spool_msg *m = dl->all; m; m = m->all_next) {
    buf_appendf(out, "%s\t%" PRIu64 "\t%zu\t%u\t%" PRIu64 "\t", m->env.queue_id, m->env.arrival_ms,
                m->data_len, m->attempts, m->next_try_ms);
    dl__field(out, m->env.sender);
    buf_append(out, "\t", 1);
    for (size_t i = 0; i < m->env.n_rcpts; i++) {
      if (i) buf_append(out, "\x1f", 1); /* a quoted local part may hold a comma */
      dl__field(out, m->env.rcpts[i]);
    }
    buf_append(out, "\t", 1);
    dl__field(out, m->last_error);
    buf_append(out, "\n", 1);
  }
}

void delivery_drain(struct delivery *dl) {
  dl->draining = true;
  uv_timer_stop(&dl->retry);
  for (struct dl_host *h = dl->hosts; h; h = h->next)
    for (struct dl_conn *cn = h->conns, *next; cn; cn = next) {
      next = cn->next;
      if (!cn->m) dl__conn_drop(cn);
    }
}

bool delivery_idle(struct delivery *dl) { return dl->busy == 0 && dl->jobs == 0; }

void delivery_close(struct delivery *dl) {
  while (dl->hosts) {
    struct dl_host *h = dl->hosts;
    dl->hosts = h->next;
    while (h->conns) dl__conn_drop(h->conns);
    free(h->key);
    free(h->addr.host);
    free(h);
  }
  while (dl->all) dl__release(dl, dl->all);
  uv_close((uv_handle_t *)&dl->retry, dl__closed);
}
