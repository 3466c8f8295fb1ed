/*
 * sl_client - see sl_client.h.
 *
 * Free sessions wait on a stack (c->idle).  dispatch() hands them
 * messages while there is work: in closed loop whenever the count is not
 * reached, in open loop while messages are due.  The open-loop schedule
 * is arithmetic (message k is due at t0 + k * interval), so a backlog
 * costs no memory: it is just due(now) - dispatched.  A timerfd, armed
 * at the next due time in nanoseconds, wakes the loop (libuv's timers
 * count whole milliseconds: above 1000 msgs/s they would send bursts and
 * add up to a millisecond of their own to every latency).
 */
#include "tools/sealload/sl_client.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include "core/sgerr.h"
#include "tools/sealload/sl_session.h"

struct sl_client {
  uv_loop_t loop;
  struct sl_client_opts o;
  struct sl_client_stats *stats;
  struct sl_session_env env;
  struct sl_session *sess;
  struct sl_session *idle;
  unsigned live;              /* sessions not yet dead */
  uv_timer_t deadline;
  uv_poll_t sched;            /* on sched_fd, a timerfd: open loop only */
  int sched_fd;
  uv_async_t stop_async;
  uv_check_t flush;           /* writes --acked lines once per loop turn */
  bool stopping, finishing, torn_down;
  uint64_t start_ns, end_ns, stop_ns, dispatched;
  double interval_ns;
  struct buf acked;
  pthread_mutex_t lock;       /* stop_async may be sent until it is closed */
  bool async_closed;
};

/* ---- the open-loop schedule ------------------------------------------------ */

/* Messages with t0 + k * interval inside the duration, or the count. */
static uint64_t cl__limit(const struct sl_client *c) {
  if (c->o.count) return c->o.count;
  double span = (double)c->o.duration_ms * 1e6 - (double)c->o.offset_ns;
  return span > 0 ? (uint64_t)ceil(span / c->interval_ns) : 0;
}

/* How many messages are due at now (uv_hrtime). */
static uint64_t cl__due(const struct sl_client *c, uint64_t now) {
  uint64_t t0 = c->start_ns + c->o.offset_ns;
  if (now < t0) return 0;
  uint64_t k = (uint64_t)((double)(now - t0) / c->interval_ns) + 1, lim = cl__limit(c);
  return k < lim ? k : lim;
}

static bool cl__next(struct sl_client *c, uint64_t *t_sched) {
  if (c->finishing) return false;
  if (c->o.rate <= 0) {
    if (c->o.count && c->dispatched >= c->o.count) return false;
    *t_sched = uv_hrtime();
    return true;
  }
  if (c->dispatched >= cl__due(c, uv_hrtime())) return false;
  *t_sched = c->start_ns + c->o.offset_ns + (uint64_t)((double)c->dispatched * c->interval_ns);
  return true;
}

static void cl__finish(struct sl_client *c);

static void cl__dispatch(struct sl_client *c) {
  uint64_t t;
  while (c->idle && cl__next(c, &t)) {
    struct sl_session *s = c->idle;
    c->idle = s->next_idle;
    c->dispatched++;
    sl_session_take(s, t);
  }
  if (!c->finishing && c->o.count && c->dispatched >= c->o.count) cl__finish(c);
}

/* Wake up when the next message falls due (free sessions take due ones
 * as they come back, so the timer only matters while some are idle).
 * uv_hrtime() reads CLOCK_MONOTONIC, the timerfd's clock. */
static void cl__arm_sched(struct sl_client *c) {
  if (c->finishing || c->o.rate <= 0) return;
  uint64_t k = cl__due(c, uv_hrtime());
  if (k >= cl__limit(c)) return;
  uint64_t t_next = c->start_ns + c->o.offset_ns + (uint64_t)ceil((double)k * c->interval_ns);
  struct itimerspec its = {.it_value = {(time_t)(t_next / 1000000000), (long)(t_next % 1000000000)}};
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1; /* 0 disarms */
  timerfd_settime(c->sched_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void cl__on_sched(uv_poll_t *h, int status, int events) {
  (void)status, (void)events;
  struct sl_client *c = h->data;
  uint64_t expirations;
  if (read(c->sched_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) return;
  cl__dispatch(c);
  cl__arm_sched(c);
}

static void cl__on_sched_closed(uv_handle_t *h) {
  struct sl_client *c = h->data;
  close(c->sched_fd);
  c->sched_fd = -1;
}

/* ---- the end ------------------------------------------------------------------ */

static void cl__flush_acked(struct sl_client *c) {
  size_t off = 0;
  while (off < c->acked.len) {
    ssize_t n = write(c->o.acked_fd, c->acked.data + off, c->acked.len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* XXX a full disk loses lines; the report still counts them */
    off += (size_t)n;
  }
  buf_reset(&c->acked);
}

static void cl__on_check(uv_check_t *h) {
  struct sl_client *c = h->data;
  if (c->acked.len) cl__flush_acked(c);
}

/* Every session is dead: count what never went out, close the handles. */
static void cl__teardown(struct sl_client *c) {
  if (c->torn_down) return;
  c->torn_down = c->finishing = true;
  c->end_ns = uv_hrtime();
  if (!c->stop_ns) c->stop_ns = c->end_ns;
  uint64_t due = c->o.count ? c->o.count : c->o.rate > 0 ? cl__due(c, c->stop_ns) : c->dispatched;
  if (due > c->dispatched) c->stats->unsent += due - c->dispatched;
  if (c->o.acked_fd >= 0) cl__flush_acked(c);
  if (c->sched_fd >= 0) uv_close((uv_handle_t *)&c->sched, cl__on_sched_closed);
  uv_close((uv_handle_t *)&c->deadline, NULL);
  uv_close((uv_handle_t *)&c->flush, NULL);
  pthread_mutex_lock(&c->lock);
  c->async_closed = true;
  uv_close((uv_handle_t *)&c->stop_async, NULL);
  pthread_mutex_unlock(&c->lock);
  for (unsigned i = 0; i < c->o.sessions; i++) sl_session_release(&c->sess[i]);
}

/* No new messages: free sessions end now, busy ones when they are free. */
static void cl__finish(struct sl_client *c) {
  if (c->finishing) return;
  c->finishing = true;
  c->stop_ns = uv_hrtime();
  if (c->sched_fd >= 0) uv_poll_stop(&c->sched);
  uv_timer_stop(&c->deadline);
  while (c->idle) {
    struct sl_session *s = c->idle;
    c->idle = s->next_idle;
    sl_session_shutdown(s);
  }
  if (c->live == 0) cl__teardown(c);
}

static void cl__on_free(struct sl_session *s, void *owner) {
  struct sl_client *c = owner;
  if (c->finishing) {
    sl_session_shutdown(s);
    return;
  }
  s->next_idle = c->idle;
  c->idle = s;
  cl__dispatch(c);
}

static void cl__on_dead(struct sl_session *s, void *owner) {
  (void)s;
  struct sl_client *c = owner;
  if (--c->live == 0) {
    if (!c->stop_ns) c->stop_ns = uv_hrtime();
    cl__teardown(c); /* done, or every session gave up */
  }
}

/* Time is up, or sealload was interrupted: in-flight messages finish. */
static void cl__stop_now(struct sl_client *c) {
  c->stopping = true;
  cl__finish(c);
}

/* libuv timers count in the loop's cached milliseconds and may fire a
 * little early by uv_hrtime(): wait out the rest so -t is never short. */
static void cl__on_deadline(uv_timer_t *t) {
  struct sl_client *c = t->data;
  uint64_t end = c->start_ns + c->o.duration_ms * 1000000, now = uv_hrtime();
  if (now < end) uv_timer_start(t, cl__on_deadline, (end - now + 999999) / 1000000, 0);
  else cl__stop_now(c);
}
static void cl__on_stop_async(uv_async_t *a) { cl__stop_now(a->data); }

/* ---- public ------------------------------------------------------------------- */

int sl_client_new(const struct sl_client_opts *o, struct sl_client_stats *stats, struct sl_client **out) {
  struct sl_client *c = calloc(1, sizeof *c);
  if (!c || !(c->sess = calloc(o->sessions ? o->sessions : 1, sizeof *c->sess))) {
    free(c);
    return SG_ENOMEM;
  }
  c->sched_fd = o->rate > 0 ? timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC) : -1;
  if ((o->rate > 0 && c->sched_fd < 0) || uv_loop_init(&c->loop) != 0) {
    if (c->sched_fd >= 0) close(c->sched_fd);
    free(c->sess);
    free(c);
    return SG_EIO;
  }
  c->o = *o;
  c->stats = stats;
  c->interval_ns = o->rate > 0 ? 1e9 / o->rate : 0;
  pthread_mutex_init(&c->lock, NULL);
  c->env = (struct sl_session_env){
      .loop = &c->loop, .addr = o->addr, .msg = o->msg, .helo = o->helo, .from = o->from,
      .rcpts = o->rcpts, .n_rcpts = o->n_rcpts, .reuse = o->reuse, .retries = o->retries,
      .timeout_ms = o->timeout_ms, .worker = o->worker, .stopping = &c->stopping, .stats = stats,
      .acked = o->acked_fd >= 0 ? &c->acked : NULL, .on_free = cl__on_free, .on_dead = cl__on_dead,
      .owner = c};
  if (c->sched_fd >= 0) uv_poll_init(&c->loop, &c->sched, c->sched_fd);
  uv_timer_init(&c->loop, &c->deadline);
  uv_check_init(&c->loop, &c->flush);
  uv_async_init(&c->loop, &c->stop_async, cl__on_stop_async);
  c->sched.data = c->deadline.data = c->flush.data = c->stop_async.data = c;
  for (unsigned i = 0; i < o->sessions; i++) sl_session_init(&c->sess[i], &c->env);
  c->live = o->sessions;
  *out = c;
  return 0;
}

/* Closed loop: every session takes a message.  Open loop: with reuse the
 * sessions connect ahead of the first message; without, they wait. */
static void cl__start(struct sl_client *c) {
  c->start_ns = uv_hrtime();
  if (c->o.duration_ms) uv_timer_start(&c->deadline, cl__on_deadline, c->o.duration_ms, 0);
  if (c->o.acked_fd >= 0) uv_check_start(&c->flush, cl__on_check);
  if (c->sched_fd >= 0) uv_poll_start(&c->sched, UV_READABLE, cl__on_sched);
  for (unsigned i = c->o.sessions; i-- > 0;) {
    struct sl_session *s = &c->sess[i];
    if (c->o.rate > 0 && c->o.reuse) {
      sl_session_connect(s);
    } else {
      s->next_idle = c->idle;
      c->idle = s;
    }
  }
  if (c->o.sessions == 0) {
    cl__teardown(c);
    return;
  }
  cl__dispatch(c);
  cl__arm_sched(c);
}

void sl_client_run(struct sl_client *c, uint64_t *start_ns, uint64_t *end_ns) {
  cl__start(c);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  *start_ns = c->start_ns;
  *end_ns = c->end_ns;
}

void sl_client_stop(struct sl_client *c) {
  pthread_mutex_lock(&c->lock);
  if (!c->async_closed) uv_async_send(&c->stop_async);
  pthread_mutex_unlock(&c->lock);
}

void sl_client_free(struct sl_client *c) {
  if (!c) return;
  if (!c->torn_down) cl__teardown(c); /* never run: close what new opened */
  uv_run(&c->loop, UV_RUN_DEFAULT);  /* close callbacks still pending, if any */
  uv_loop_close(&c->loop);
  pthread_mutex_destroy(&c->lock);
  buf_free(&c->acked);
  free(c->sess);
  free(c);
}
