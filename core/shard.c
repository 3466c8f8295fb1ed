/* shard - see shard.h. */
#include "core/shard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <urcu.h>

#include "core/daemon.h"
#include "core/delivery.h"
#include "core/log.h"
#include "core/sgerr.h"
#include "core/smtp_session.h"

struct shard_plan_msg {
  struct shard *sh;
  size_t n;
  char **keys; /* every key of the new config */
  int *fds;    /* fd to adopt for keys[i], or -1 to keep what we have */
};

static void shard__on_connection(uv_stream_t *server, int status) {
  struct shard_listener *l = server->data;
  if (status < 0) {
    log_warn("shard %u: accept on %s failed: %s", l->sh->id, l->key, uv_strerror(status));
    return;
  }
  smtp_session_accept(l->sh, server, l->key);
}

static void shard__listener_closed(uv_handle_t *h) {
  struct shard_listener *l = h->data;
  free(l->key);
  free(l);
}

/* Accept what already waits in the kernel queue, then close: clients that
 * were queued when we stopped are served, not reset (DESIGN.md). */
static void shard__listener_close(struct shard *sh, struct shard_listener *l, bool serve_queue) {
  uv_os_fd_t fd;
  if (serve_queue && uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0) {
    for (;;) {
      int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) break;
      smtp_session_adopt_fd(sh, c, l->key);
    }
  }
  uv_close((uv_handle_t *)&l->tcp, shard__listener_closed);
}

static int shard__listener_open(struct shard *sh, const char *key, int fd) {
  struct shard_listener *l = calloc(1, sizeof *l);
  if (!l || !(l->key = strdup(key))) {
    free(l);
    close(fd);
    return SG_ENOMEM;
  }
  l->sh = sh;
  uv_tcp_init(&sh->loop, &l->tcp);
  l->tcp.data = l;
  int r = uv_tcp_open(&l->tcp, fd);
  if (r != 0) close(fd); /* not the handle's yet, so uv_close would not close it */
  if (r == 0) r = uv_listen((uv_stream_t *)&l->tcp, 1024, shard__on_connection);
  if (r != 0) {
    log_err("shard %u: cannot listen on %s: %s", sh->id, key, uv_strerror(r));
    uv_close((uv_handle_t *)&l->tcp, shard__listener_closed);
    return SG_EIO;
  }
  l->next = sh->listeners;
  sh->listeners = l;
  return 0;
}

static void shard__apply_plan(void *arg) {
  struct shard_plan_msg *m = arg;
  struct shard *sh = m->sh;
  struct shard_listener **pp = &sh->listeners;
  while (*pp) { /* close listeners the new config no longer has */
    struct shard_listener *l = *pp;
    bool keep = false;
    for (size_t i = 0; i < m->n && !keep; i++) keep = strcmp(m->keys[i], l->key) == 0;
    if (keep) {
      pp = &l->next;
      continue;
    }
    *pp = l->next;
    shard__listener_close(sh, l, true);
  }
  for (size_t i = 0; i < m->n; i++) {
    if (m->fds[i] >= 0 && !sh->draining) shard__listener_open(sh, m->keys[i], m->fds[i]);
    else if (m->fds[i] >= 0) close(m->fds[i]);
    free(m->keys[i]);
  }
  free(m->keys);
  free(m->fds);
  free(m);
}

int shard_apply_plan(struct shard *sh, struct listener_plan *plan) {
  struct shard_plan_msg *m = calloc(1, sizeof *m);
  if (!m) return SG_ENOMEM;
  m->sh = sh;
  m->keys = calloc(plan->n ? plan->n : 1, sizeof *m->keys);
  m->fds = calloc(plan->n ? plan->n : 1, sizeof *m->fds);
  if (!m->keys || !m->fds) goto nomem;
  for (size_t i = 0; i < plan->n; i++) {
    if (!(m->keys[i] = strdup(plan->entries[i].key))) goto nomem;
    m->fds[i] = -1;
  }
  m->n = plan->n;
  for (size_t i = 0; i < plan->n; i++)
    if (plan->entries[i].fds) { /* ownership of the fd moves to the shard */
      m->fds[i] = plan->entries[i].fds[sh->id];
      plan->entries[i].fds[sh->id] = -1;
    }
  if (shard_post(sh, shard__apply_plan, m) == 0) return 0;
  for (size_t i = 0; i < m->n; i++)
    if (m->fds[i] >= 0) close(m->fds[i]);
nomem:
  for (size_t i = 0; m->keys && i < plan->n; i++) free(m->keys[i]);
  free(m->keys);
  free(m->fds);
  free(m);
  return SG_ENOMEM;
}

static void shard__walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void shard_check_idle(struct shard *sh) {
  if (!sh->draining || sh->stopped || sh->n_sessions > 0 || !delivery_idle(sh->dl)) return;
  sh->stopped = true;
  log_info("shard %u: drained", sh->id);
  delivery_close(sh->dl);
  uv_close((uv_handle_t *)&sh->drain_timer, NULL);
  mailbox_close(&sh->mb);
}

static void shard__drain_tick(uv_timer_t *t) { shard_check_idle(t->data); }

static void shard__drain(void *arg) {
  struct shard *sh = arg;
  if (sh->draining) return;
  sh->draining = true;
  while (sh->listeners) {
    struct shard_listener *l = sh->listeners;
    sh->listeners = l->next;
    shard__listener_close(sh, l, true);
  }
  smtp_session_drain_all(sh);
  delivery_drain(sh->dl);
  uv_timer_start(&sh->drain_timer, shard__drain_tick, 100, 100);
  shard_check_idle(sh);
}

void shard_drain(struct shard *sh) { shard_post(sh, shard__drain, sh); }

int shard_post(struct shard *sh, mailbox_fn fn, void *arg) { return mailbox_post(&sh->mb, fn, arg); }

static void *shard__thread(void *arg) {
  struct shard *sh = arg;
  rcu_register_thread();
  uv_run(&sh->loop, UV_RUN_DEFAULT);
  uv_walk(&sh->loop, shard__walk_close, NULL);
  uv_run(&sh->loop, UV_RUN_DEFAULT);
  rcu_unregister_thread();
  return NULL;
}

int shard_start(struct daemon *d, unsigned id, struct shard **out) {
  struct shard *sh = calloc(1, sizeof *sh);
  if (!sh) return SG_ENOMEM;
  sh->id = id;
  sh->d = d;
  int rc = SG_EIO;
  if (uv_loop_init(&sh->loop) != 0) goto fail;
  if ((rc = mailbox_init(&sh->loop, &sh->mb)) != 0) goto fail;
  uv_timer_init(&sh->loop, &sh->drain_timer);
  sh->drain_timer.data = sh;
  if ((rc = delivery_init(sh, &sh->dl)) != 0) goto fail;
  if (pthread_create(&sh->thread, NULL, shard__thread, sh) != 0) {
    rc = SG_EIO;
    goto fail;
  }
  char name[16]; /* shown by top -H, perf and /proc/PID/task: who burns the CPU */
  snprintf(name, sizeof name, "sg-shard%u", id);
  pthread_setname_np(sh->thread, name);
  *out = sh;
  return 0;
fail:
  log_err("shard %u: cannot start: %s", id, sgerr_str(rc));
  free(sh);
  return rc;
}

void shard_join(struct shard *sh) {
  pthread_join(sh->thread, NULL);
  uv_loop_close(&sh->loop);
  free(sh);
}
