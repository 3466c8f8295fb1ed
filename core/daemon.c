/* daemon - see daemon.h.  The main thread: start, reload, drain. */
#include "core/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <urcu.h>
#include <uv.h>

#include "core/clientlimit.h"
#include "core/control.h"
#include "core/delivery.h"
#include "core/listener.h"
#include "core/log.h"
#include "crypto/mime.h"
#include "core/quarantine.h"
#include "core/release.h"
#include "core/privs.h"
#include "core/sgerr.h"
#include "core/shard.h"
#include "core/spool.h"
#include "crypto/keyring.h"

#define DAEMON_DRAIN_MAX_S 30
#define DAEMON_SPOOL_THREADS 8

struct daemon_main {
  struct daemon d;
  uv_loop_t loop;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t keys_tick; /* keyring_tick: reconnect the token after a failed reload */
  struct control *ctl;
  char **keys; /* listener addresses currently bound */
  size_t n_keys;
  int lock_fd;
  bool loop_ready; /* the main loop was initialised (daemon__stop must know) */
  struct release *release; /* quarantine expiry and released messages (core/release.h) */
};

struct config *daemon_config_get(struct daemon *d) {
  rcu_read_lock();
  struct config *c = config_ref(rcu_dereference(d->cfg));
  rcu_read_unlock();
  return c;
}

struct shard *daemon_shard(struct daemon *d, unsigned i) { return d->shards[i % d->n_shards]; }

/* TLS is configurable before it is implemented (issue #8): say what the
 * settings mean until then, so nobody believes mail is encrypted. */
static void daemon__warn_tls(const struct config *cfg) {
  for (size_t i = 0; i < cfg->n_listeners; i++) {
    const struct config_listener *l = &cfg->listeners[i];
    if (l->tls == CONFIG_TLS_REQUIRED)
      log_warn("listener '%s': tls: required, but this version has no STARTTLS: every MAIL gets 530",
               l->name);
    if (l->next_hop.tls == CONFIG_TLS_REQUIRED || l->next_hop.tls == CONFIG_TLS_VERIFY)
      log_warn("listener '%s': next hop requires TLS, which this version cannot do: its mail waits",
               l->name);
  }
}

/* ---- listeners ------------------------------------------------------------ */

static void daemon__keys_free(struct daemon_main *m) {
  for (size_t i = 0; i < m->n_keys; i++) free(m->keys[i]);
  free(m->keys);
  m->keys = NULL;
  m->n_keys = 0;
}

/* Give every shard its sockets from plan and remember the bound keys. */
static void daemon__hand_out(struct daemon_main *m, struct listener_plan *plan) {
  for (unsigned s = 0; s < m->d.n_shards; s++) shard_apply_plan(m->d.shards[s], plan);
  char **keys = calloc(plan->n ? plan->n : 1, sizeof *keys);
  for (size_t i = 0; keys && i < plan->n; i++) keys[i] = strdup(plan->entries[i].key);
  daemon__keys_free(m);
  m->keys = keys;
  m->n_keys = keys ? plan->n : 0;
  listener_plan_free(plan, m->d.n_shards);
}

/* ---- reload ----------------------------------------------------------------- */

static int daemon__same(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static int daemon__reload(struct daemon_main *m, char *err, size_t errlen) {
  struct config *nc;
  int rc = config_load(m->d.cfg->path, &nc, err, errlen);
  if (rc) return rc;
  const struct config *oc = m->d.cfg; /* only this thread writes d.cfg */
  const char *fixed = NULL;
  if (!daemon__same(oc->spool_dir, nc->spool_dir)) fixed = "spool_dir";
  else if (config_effective_shards(oc) != config_effective_shards(nc)) fixed = "shards";
  else if (!daemon__same(oc->user, nc->user)) fixed = "user";
  else if (!daemon__same(oc->quarantine_dir, nc->quarantine_dir)) fixed = "quarantine_dir"; /* made and owned at start */
  else if (!daemon__same(oc->hsm.module, nc->hsm.module) || !daemon__same(oc->hsm.token, nc->hsm.token) ||
           !daemon__same(oc->hsm.pin_file, nc->hsm.pin_file) ||
           !daemon__same(oc->hsm.softhsm_conf, nc->hsm.softhsm_conf) ||
           !daemon__same(oc->hsm.server_user, nc->hsm.server_user) || oc->hsm.workers != nc->hsm.workers)
    fixed = "hsm";
  if (fixed) {
    snprintf(err, errlen, "%s cannot change while running; restart sealgate to apply it", fixed);
    config_unref(nc);
    return SG_ECONFIG;
  }
  /* The new config must fit the token (names it uses, EC in remote mode). */
  if ((rc = keyring_reload(m->d.keys, nc, err, errlen)) != 0) {
    config_unref(nc);
    return rc;
  }
  struct listener_plan plan;
  if ((rc = listener_plan_build(nc, m->keys, m->n_keys, m->d.n_shards, &plan, err, errlen)) != 0) {
    config_unref(nc);
    return rc;
  }
  /* Publish first, then hand out sockets: a connection on a new listener
   * must find its listener in the config it sees. */
  struct config *old = rcu_xchg_pointer(&m->d.cfg, nc);
  daemon__hand_out(m, &plan);
  if (!daemon__same(old->log_syslog, nc->log_syslog))
    log_set_syslog(nc->log_syslog != NULL, nc->log_syslog ? nc->log_syslog : "sealgate");
  synchronize_rcu(); /* no reader still dereferences old without a reference */
  config_unref(old);
  daemon__warn_tls(nc);
  log_info("configuration reloaded from %s", nc->path);
  return 0;
}

/* ---- control socket -------------------------------------------------------- */

/* Answers gathered from every shard; the last one out frees it, so a
 * request that timed out leaves nothing dangling. */
struct daemon_collect {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs;
  unsigned pending;
  struct buf out;
};

static void daemon__collect_unref(struct daemon_collect *c) {
  pthread_mutex_lock(&c->mu);
  bool last = --c->refs == 0;
  pthread_mutex_unlock(&c->mu);
  if (!last) return;
  buf_free(&c->out);
  free(c);
}

struct daemon_collect_arg {
  struct daemon_collect *c;
  struct shard *sh;
};

static void daemon__collect_shard(void *arg) {
  struct daemon_collect_arg *a = arg;
  struct buf mine = BUF_INIT;
  delivery_list(a->sh->dl, &mine);
  pthread_mutex_lock(&a->c->mu);
  buf_append(&a->c->out, mine.data, mine.len);
  a->c->pending--;
  pthread_cond_signal(&a->c->cv);
  pthread_mutex_unlock(&a->c->mu);
  buf_free(&mine);
  daemon__collect_unref(a->c);
  free(a);
}

static int daemon__queue_list(struct daemon_main *m, struct buf *payload) {
  struct daemon_collect *c = calloc(1, sizeof *c);
  if (!c) return SG_ENOMEM;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->refs = 1;
  for (unsigned s = 0; s < m->d.n_shards; s++) {
    struct daemon_collect_arg *a = malloc(sizeof *a);
    if (!a) break;
    *a = (struct daemon_collect_arg){c, m->d.shards[s]};
    pthread_mutex_lock(&c->mu);
    c->refs++;
    c->pending++;
    pthread_mutex_unlock(&c->mu);
    if (shard_post(m->d.shards[s], daemon__collect_shard, a) != 0) {
      free(a);
      c->refs--, c->pending--;
    }
  }
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 5;
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  while (c->pending > 0 && rc == 0) rc = pthread_cond_timedwait(&c->cv, &c->mu, &until);
  if (rc == 0) buf_append(payload, c->out.data, c->out.len);
  pthread_mutex_unlock(&c->mu);
  daemon__collect_unref(c);
  return rc == 0 ? 0 : SG_ETIMEDOUT;
}

static void daemon__flush_shard(void *arg) { delivery_flush(((struct shard *)arg)->dl); }

/* "NAME COUNT": signatures through the crypto workers (sealctl cert check). */
static int daemon__cert_check(struct daemon_main *m, const char *args, struct buf *payload, char *err,
                              size_t errlen) {
  char name[129];
  unsigned long count;
  if (sscanf(args, "%128s %lu", name, &count) != 2 || count < 1 || count > 20000) {
    snprintf(err, errlen, "usage: cert check NAME COUNT (1..20000)");
    return SG_EINVAL;
  }
  return keyring_check(m->d.keys, name, count, payload, err, errlen);
}

static int daemon__control(void *arg, const char *cmd, struct buf *payload, char *err,
                           size_t errlen) {
  struct daemon_main *m = arg;
  if (strcmp(cmd, "ping") == 0) return 0;
  if (strcmp(cmd, "reload") == 0) {
    int rc = daemon__reload(m, err, errlen);
    if (rc) log_err("reload rejected: %s", err);
    return rc;
  }
  if (strcmp(cmd, "queue list") == 0) return daemon__queue_list(m, payload);
  if (strcmp(cmd, "keys reload") == 0) {
    struct config *cfg = daemon_config_get(&m->d);
    int rc = keyring_reload(m->d.keys, cfg, err, errlen);
    config_unref(cfg);
    if (rc) log_err("keys reload rejected: %s", err);
    return rc;
  }
  if (strncmp(cmd, "cert check ", 11) == 0) return daemon__cert_check(m, cmd + 11, payload, err, errlen);
  if (strcmp(cmd, "quarantine released") == 0) {
    release_poke(m->release);
    return 0;
  }
  if (strcmp(cmd, "queue flush") == 0) {
    for (unsigned s = 0; s < m->d.n_shards; s++) shard_post(m->d.shards[s], daemon__flush_shard, m->d.shards[s]);
    return 0;
  }
  snprintf(err, errlen, "unknown command '%.64s'", cmd);
  return SG_EINVAL;
}

/* ---- signals and drain ------------------------------------------------------- */

static void *daemon__watchdog(void *arg) {
  (void)arg;
  sleep(DAEMON_DRAIN_MAX_S);
  /* Everything acknowledged is on disk; what is still in flight was not. */
  log_warn("drain took longer than %d s; exiting anyway", DAEMON_DRAIN_MAX_S);
  _exit(0);
  return NULL;
}

static void daemon__on_signal(uv_signal_t *s, int signum) {
  struct daemon_main *m = s->data;
  if (signum == SIGHUP) {
    char err[1024];
    if (daemon__reload(m, err, sizeof err) != 0) log_err("reload rejected, old configuration kept: %s", err);
    return;
  }
  if (atomic_exchange(&m->d.draining, true)) return;
  log_info("signal %d: draining (no new connections; finishing what is in flight)", signum);
  pthread_t t;
  if (pthread_create(&t, NULL, daemon__watchdog, NULL) == 0) pthread_detach(t);
  release_stop(m->release); /* nothing more is posted to the shards */
  m->release = NULL;
  for (unsigned i = 0; i < m->d.n_shards; i++) shard_drain(m->d.shards[i]);
  uv_stop(&m->loop);
}

/* ---- start ------------------------------------------------------------------- */

/* Messages found by the recovery scan, handed to the shards only after the
 * scan: a shard delivering (and recycling files) in a folder that is still
 * being scanned could make the scan see a file twice or reuse a pool name. */
struct daemon_recover {
  struct spool_msg *head;
  int n;
};

struct daemon_post {
  struct shard *sh;
  struct spool_msg *msg;
};

static void daemon__enqueue_on_shard(void *arg) {
  struct daemon_post *p = arg;
  delivery_enqueue(p->sh->dl, p->msg);
  free(p);
}

static void daemon__recover_one(struct spool_msg *msg, void *arg) {
  struct daemon_recover *r = arg;
  msg->next = r->head;
  r->head = msg;
  r->n++;
}

/* Spread recovered messages over the shards, round robin. */
static void daemon__hand_out_recovered(struct daemon *d, struct daemon_recover *r) {
  for (unsigned i = 0; r->head; i++) {
    struct spool_msg *msg = r->head;
    r->head = msg->next;
    msg->next = NULL;
    struct daemon_post *p = malloc(sizeof *p);
    if (p) *p = (struct daemon_post){daemon_shard(d, i), msg};
    if (!p || shard_post(p->sh, daemon__enqueue_on_shard, p) != 0) {
      spool_msg_free(msg); /* still on disk: the next start finds it */
      free(p);
    }
  }
}

/* DIR/lock: SO_REUSEPORT would let a second daemon bind our ports silently. */
static int daemon__lock(struct daemon_main *m, const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/lock", dir);
  m->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (m->lock_fd < 0) {
    log_err("cannot open %s: %s", path, strerror(errno));
    return SG_EIO;
  }
  if (flock(m->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    log_err("another sealgate is running on this instance (%s is locked)", path);
    return SG_EBUSY;
  }
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
  if (ftruncate(m->lock_fd, 0) != 0 || write(m->lock_fd, pid, (size_t)n) != n) log_warn("cannot write pid to %s", path);
  return 0;
}

static int daemon__start_shards(struct daemon_main *m) {
  struct config *cfg = m->d.cfg;
  m->d.n_shards = config_effective_shards(cfg);
  int rc = spool_open(cfg->spool_dir, m->d.n_shards, DAEMON_SPOOL_THREADS, &m->d.spool);
  if (rc) {
    log_err("cannot open spool %s: %s", cfg->spool_dir, sgerr_str(rc));
    return rc;
  }
  m->d.shards = calloc(m->d.n_shards, sizeof *m->d.shards);
  if (!m->d.shards) return SG_ENOMEM;
  for (unsigned i = 0; i < m->d.n_shards; i++)
    if ((rc = shard_start(&m->d, i, &m->d.shards[i])) != 0) {
      m->d.n_shards = i;
      return rc;
    }
  return 0;
}

static void daemon__keys_tick(uv_timer_t *t) {
  struct daemon_main *m = t->data;
  if (m->d.keys) keyring_tick(m->d.keys);
}

static int daemon__start_main_loop(struct daemon_main *m) {
  if (uv_loop_init(&m->loop) != 0) return SG_EIO;
  m->loop_ready = true;
  uv_signal_t *sigs[] = {&m->sig_term, &m->sig_int, &m->sig_hup};
  int nums[] = {SIGTERM, SIGINT, SIGHUP};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(&m->loop, sigs[i]);
    sigs[i]->data = m;
    uv_signal_start(sigs[i], daemon__on_signal, nums[i]);
  }
  uv_timer_init(&m->loop, &m->keys_tick);
  m->keys_tick.data = m;
  uv_timer_start(&m->keys_tick, daemon__keys_tick, 1000, 1000);
  char path[4096];
  snprintf(path, sizeof path, "%s/control.sock", m->d.instance_dir);
  return control_listen(&m->loop, path, daemon__control, m, &m->ctl);
}

/* The quarantine folder (Policy always exists), made before privileges
 * are dropped so it can be given to the user with the rest. */
static int daemon__open_quarantine(const struct config *cfg) {
  char err[512];
  int rc = quarantine_open(cfg->quarantine_dir, err, sizeof err);
  if (rc) log_err("quarantine: %s", err);
  return rc;
}

static void daemon__walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void daemon__stop(struct daemon_main *m) {
  release_stop(m->release);
  m->release = NULL;
  for (unsigned i = 0; i < m->d.n_shards; i++) {
    if (!atomic_load(&m->d.draining)) shard_drain(m->d.shards[i]);
  }
  for (unsigned i = 0; i < m->d.n_shards; i++) shard_join(m->d.shards[i]);
  free(m->d.shards);
  spool_close(m->d.spool);
  keyring_stop(m->d.keys);
  if (m->loop_ready) {
    control_close(m->ctl);
    uv_walk(&m->loop, daemon__walk_close, NULL);
    uv_run(&m->loop, UV_RUN_DEFAULT);
    uv_loop_close(&m->loop);
  }
  daemon__keys_free(m);
  config_unref(m->d.cfg);
  free(m->d.instance_dir);
  if (m->lock_fd >= 0) close(m->lock_fd);
}

int daemon_run(const char *config_path) {
  struct daemon_main m;
  memset(&m, 0, sizeof m);
  m.lock_fd = -1;
  char err[1024];
  rcu_register_thread();
  signal(SIGPIPE, SIG_IGN);
  mime_init(); /* GMime's one-time init, before any crypto worker may need it */
  struct config *cfg;
  if (config_load(config_path, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "sealgate: %s\n", err);
    rcu_unregister_thread();
    return 1;
  }
  if (cfg->log_syslog) log_set_syslog(1, cfg->log_syslog);
  daemon__warn_tls(cfg);
  m.d.cfg = cfg;
  m.d.instance_dir = strdup(cfg->dir);
  if (!cfg->user && geteuid() == 0) log_warn("running as root; set 'user:' to drop privileges");
  int rc = daemon__lock(&m, cfg->dir);
  /* The token server's keeper is forked here, before any thread exists. */
  if (rc == 0 && (rc = keyring_start(cfg, &m.d.keys, err, sizeof err)) != 0) log_err("hsm: %s", err);
  if (rc == 0) rc = clientlimit_init();
  if (rc == 0) rc = daemon__start_shards(&m);
  /* Bind while still root, then give up root before the first client and
   * before the spool is read back (its files must become the user's). */
  struct listener_plan plan = {0, NULL};
  if (rc == 0 && (rc = listener_plan_build(cfg, NULL, 0, m.d.n_shards, &plan, err, sizeof err)) != 0)
    log_err("%s", err);
  if (rc == 0) rc = daemon__start_main_loop(&m);
  if (rc == 0) rc = daemon__open_quarantine(cfg);
  if (rc == 0 && (rc = privs_drop(cfg, err, sizeof err)) != 0) log_err("%s", err);
  if (rc == 0 && (rc = keyring_open(m.d.keys, cfg, err, sizeof err)) != 0) log_err("hsm: %s", err);
  if (rc == 0) {
    struct daemon_recover r = {NULL, 0};
    spool_recover(m.d.spool, daemon__recover_one, &r);
    if (r.n > 0) log_info("spool: recovered %d message(s) for delivery", r.n);
    daemon__hand_out_recovered(&m.d, &r);
    daemon__hand_out(&m, &plan);
    if (release_start(&m.d, &m.loop, &m.release) != 0) log_err("quarantine: cannot start its housekeeping");
    log_info("sealgate %s started: %u shard(s), %zu listener(s), hostname %s", SEALGATE_VERSION,
             m.d.n_shards, cfg->n_listeners, cfg->hostname);
    uv_run(&m.loop, UV_RUN_DEFAULT);
  }
  listener_plan_free(&plan, m.d.n_shards);
  daemon__stop(&m);
  rcu_unregister_thread();
  if (rc == 0) log_info("sealgate stopped");
  return rc == 0 ? 0 : 1;
}
