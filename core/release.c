/*
 * release - see release.h.
 *
 * Lifetime: struct release is shared by the main loop (timer, scans), the
 * pool thread running a scan and the shards committing released messages.
 * It is reference counted: one reference for the timer (dropped when it
 * is closed), one while a scan is queued, one per message on its way into
 * a shard's spool; the last one frees it.  A shard counts each such commit
 * as one of its delivery jobs (delivery_hold), so it does not finish
 * draining, and its mailbox stays open, until the commit reported back.
 */
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
#define RELEASE_SOON_MS 200 /* a poke during commits: look again this soon */

struct release {
  uv_timer_t timer;
  uv_work_t work;
  struct daemon *d;
  struct config *cfg; /* the scan's, referenced on the main loop (the pool's threads are not RCU readers) */
  bool scanning, again;
  atomic_int refs;
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
  char *path;     /* its file under ROOT/.released, removed once queued */
  uv_fs_t unlink; /* that removal, on the shard's loop without blocking it */
};

static void release__unref(struct release *r) {
  if (atomic_fetch_sub(&r->refs, 1) == 1) free(r);
}

/* The end of one released message's trip (on the shard's loop): only now
 * may a scan look at .released again, and the shard finish draining. */
static void release__finished(struct release_msg *rm) {
  struct delivery *dl = rm->sh->dl;
  atomic_fetch_sub(&rm->r->committing, 1);
  release__unref(rm->r);
  free(rm->path);
  free(rm);
  delivery_unhold(dl);
}

/* Its file in .released is gone (the quarantine_done of quarantine.h,
 * done with uv_fs_unlink: a loop never waits on the disk). */
static void release__unlinked(uv_fs_t *req) {
  struct release_msg *rm = req->data;
  if (req->result < 0 && req->result != UV_ENOENT)
    log_err("quarantine: cannot remove %s (it may be delivered twice): %s", rm->path, uv_strerror((int)req->result));
  uv_fs_req_cleanup(req);
  release__finished(rm);
}

/* On the shard's loop: the commit is over; the message is the shard's. */
static void release__committed(struct spool_msg *m, int status, void *arg) {
  struct release_msg *rm = arg;
  if (status != 0) { /* the file stays in .released: the next scan tries again */
    log_err("quarantine: cannot queue released message: %s", sgerr_str(status));
    spool_msg_free(m);
    release__finished(rm);
    return;
  }
  log_info("quarantine: released message queued as %s", m->env.queue_id);
  delivery_enqueue(rm->sh->dl, m);
  rm->unlink.data = rm;
  if (uv_fs_unlink(&rm->sh->loop, &rm->unlink, rm->path, release__unlinked) != 0) {
    log_err("quarantine: cannot remove %s (it may be delivered twice)", rm->path);
    release__finished(rm);
  }
}

/* On the shard's loop. */
static void release__on_shard(void *arg) {
  struct release_msg *rm = arg;
  delivery_hold(rm->sh->dl);
  spool_new_id(rm->r->d->spool, rm->sh->id, rm->m);
  if (spool_commit(rm->r->d->spool, rm->sh->id, rm->m, false, &rm->sh->mb, release__committed, rm) != 0)
    release__committed(rm->m, SG_EIO, rm);
}

/* On the thread pool: one released message, handed to a shard. */
static void release__take(struct spool_envelope *env, char *data, size_t len, const char *path,
                          const struct quarantine_meta *meta, void *arg) {
  (void)meta;
  struct release *r = arg;
  struct release_msg *rm = atomic_load(&r->stopping) ? NULL : calloc(1, sizeof *rm);
  struct spool_msg *m = rm ? calloc(1, sizeof *m) : NULL;
  char *p = m ? strdup(path) : NULL;
  if (!p) { /* stopping or out of memory: it stays in .released for the next scan or start */
    free(rm), free(m), free(data);
    spool_envelope_free(env);
    return;
  }
  m->env = *env;
  m->env.flags |= SPOOL_F_RELEASED;
  m->env.arrival_ms = timeutil_wall_ms();
  m->data = data;
  m->data_len = len;
  rm->r = r, rm->sh = daemon_shard(r->d, r->next_shard++), rm->m = m, rm->path = p; /* calloc zeroed the rest */
  atomic_fetch_add(&r->committing, 1);
  atomic_fetch_add(&r->refs, 1);
  if (shard_post(rm->sh, release__on_shard, rm) != 0) {
    atomic_fetch_sub(&r->committing, 1);
    atomic_fetch_sub(&r->refs, 1); /* the timer's reference is still held: never the last */
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
static void release__tick(uv_timer_t *t);

static void release__scanned(uv_work_t *w, int status) {
  (void)status;
  struct release *r = w->data;
  r->scanning = false;
  config_unref(r->cfg);
  r->cfg = NULL;
  if (r->again && !atomic_load(&r->stopping)) {
    r->again = false;
    release__start_scan(r);
  }
  release__unref(r);
}

/* A scan while the previous one's messages are still being committed
 * could hand the same files out again: wait for them, a moment at a time. */
static void release__start_scan(struct release *r) {
  if (atomic_load(&r->stopping)) return;
  if (r->scanning || atomic_load(&r->committing) > 0) {
    r->again = true;
    if (!r->scanning) uv_timer_start(&r->timer, release__tick, RELEASE_SOON_MS, RELEASE_EVERY_MS);
    return;
  }
  r->again = false;
  r->scanning = true;
  r->work.data = r;
  r->cfg = daemon_config_get(r->d);
  atomic_store(&r->in_scan, true);
  atomic_fetch_add(&r->refs, 1);
  if (uv_queue_work(r->timer.loop, &r->work, release__scan, release__scanned) != 0) {
    atomic_store(&r->in_scan, false);
    r->scanning = false;
    config_unref(r->cfg);
    r->cfg = NULL;
    atomic_fetch_sub(&r->refs, 1);
  }
}

static void release__tick(uv_timer_t *t) {
  release__start_scan(t->data);
}

int release_start(struct daemon *d, uv_loop_t *loop, struct release **out) {
  struct release *r = calloc(1, sizeof *r);
  if (!r) return SG_ENOMEM;
  r->d = d;
  atomic_init(&r->refs, 1);
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
  release__unref(h->data);
}

/* Waits for a scan still running on the pool: after this, nothing is
 * posted to a shard, so the daemon may drain and join them. */
void release_stop(struct release *r) {
  if (!r) return;
  atomic_store(&r->stopping, true);
  while (atomic_load(&r->in_scan)) uv_sleep(10);
  uv_close((uv_handle_t *)&r->timer, release__closed);
}
