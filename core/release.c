/* release - see release.h. */
#include "core/release.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/daemon.h"
#include "core/delivery.h"
#include "core/log.h"
#include "core/process.h"
#include "core/quarantine.h"
#include "core/sgerr.h"
#include "core/shard.h"
#include "core/spool.h"
#include "core/timeutil.h"

#define RELEASE_EVERY_MS 60000

struct release {
  uv_timer_t timer;
  uv_work_t work;
  struct daemon *d;
  struct config *cfg; /* the scan's, referenced on the main loop (the pool's threads are not RCU readers) */
  bool scanning, again, closed;
  atomic_bool stopping; /* read by the scan: no new message is handed to a shard */
  atomic_bool in_scan;  /* release__scan is running on the pool */
  atomic_uint committing; /* released messages handed to shards, not yet committed */
  unsigned next_shard;
};

/* One released message on its way into a shard's spool. */
struct release_msg {
  struct release *r;
  struct shard *sh;
  struct spool_msg *m;
  char *path; /* its file under ROOT/.released, removed once queued */
};

static void release__committed(struct spool_msg *m, int status, void *arg) {
  struct release_msg *rm = arg;
  if (status == 0) {
    log_info("quarantine: released message queued as %s", m->env.queue_id);
    if (quarantine_done(rm->path) != 0) log_err("quarantine: cannot remove %s (it may be delivered twice)", rm->path);
    delivery_enqueue(rm->sh->dl, m);
  } else { /* the file stays in .released: the next scan tries again */
    log_err("quarantine: cannot queue released message: %s", sgerr_str(status));
    spool_msg_free(m);
  }
  atomic_fetch_sub(&rm->r->committing, 1);
  free(rm->path);
  free(rm);
}

/* On the shard's loop. */
static void release__on_shard(void *arg) {
  struct release_msg *rm = arg;
  spool_new_id(rm->r->d->spool, rm->sh->id, rm->m);
  if (spool_commit(rm->r->d->spool, rm->sh->id, rm->m, false, &rm->sh->mb, release__committed, rm) != 0)
    release__committed(rm->m, SG_EIO, rm);
}

/* On the thread pool: one released message, handed to a shard. */
static void release__take(struct spool_envelope *env, char *data, size_t len, const char *path,
                          const struct quarantine_meta *meta, void *arg) {
  (void)meta;
  struct release *r = arg;
  if (atomic_load(&r->stopping)) { /* stays in .released for the next start */
    free(data);
    spool_envelope_free(env);
    return;
  }
  struct release_msg *rm = calloc(1, sizeof *rm);
  struct spool_msg *m = calloc(1, sizeof *m);
  char *p = strdup(path);
  if (!rm || !m || !p) {
    free(rm), free(m), free(p), free(data);
    spool_envelope_free(env);
    return;
  }
  m->env = *env;
  m->env.flags |= SPOOL_F_RELEASED;
  m->env.arrival_ms = timeutil_wall_ms();
  m->data = data;
  m->data_len = len;
  *rm = (struct release_msg){r, daemon_shard(r->d, r->next_shard++), m, p};
  atomic_fetch_add(&r->committing, 1);
  if (shard_post(rm->sh, release__on_shard, rm) != 0) {
    atomic_fetch_sub(&r->committing, 1);
    spool_msg_free(m);
    free(p), free(rm);
  }
}

static void release__scan(uv_work_t *w) {
  struct release *r = w->data;
  int n = quarantine_expire(r->cfg->quarantine_dir, timeutil_wall_ms(), process_quarantine_limits, r->cfg);
  if (n < 0) log_err("quarantine: expiry failed: %s", sgerr_str(n));
  if (!atomic_load(&r->stopping)) quarantine_take_released(r->cfg->quarantine_dir, release__take, r);
  atomic_store(&r->in_scan, false);
}

static void release__start_scan(struct release *r);

static void release__scanned(uv_work_t *w, int status) {
  (void)status;
  struct release *r = w->data;
  r->scanning = false;
  config_unref(r->cfg);
  r->cfg = NULL;
  if (r->closed) {
    free(r);
    return;
  }
  if (r->again && !r->stopping) {
    r->again = false;
    release__start_scan(r);
  }
}

static void release__start_scan(struct release *r) {
  if (r->stopping) return;
  if (r->scanning || atomic_load(&r->committing) > 0) { /* the poke is not lost: after this one */
    r->again = true;
    return;
  }
  r->scanning = true;
  r->work.data = r;
  r->cfg = daemon_config_get(r->d);
  atomic_store(&r->in_scan, true);
  if (uv_queue_work(r->timer.loop, &r->work, release__scan, release__scanned) != 0) {
    atomic_store(&r->in_scan, false);
    r->scanning = false;
    config_unref(r->cfg);
    r->cfg = NULL;
  }
}

static void release__tick(uv_timer_t *t) {
  release__start_scan(t->data);
}

int release_start(struct daemon *d, uv_loop_t *loop, struct release **out) {
  struct release *r = calloc(1, sizeof *r);
  if (!r) return SG_ENOMEM;
  r->d = d;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  uv_timer_start(&r->timer, release__tick, 0, RELEASE_EVERY_MS);
  *out = r;
  return 0;
}

void release_poke(struct release *r) {
  if (r) release__start_scan(r);
}

static void release__closed(uv_handle_t *h) {
  struct release *r = h->data;
  r->closed = true;
  if (!r->scanning) free(r); /* else release__scanned frees it */
}

/* Waits for a scan still running on the pool: after this, nothing posts
 * to a shard, so the daemon may drain and join them. */
void release_stop(struct release *r) {
  if (!r) return;
  atomic_store(&r->stopping, true);
  while (atomic_load(&r->in_scan)) uv_sleep(10);
  uv_close((uv_handle_t *)&r->timer, release__closed);
}
