/*
 * shard - one reactor thread: its libuv loop, its listening sockets, its
 * SMTP sessions and its deliveries.
 *
 * Created and joined by the daemon (main thread); everything else about a
 * shard happens on its own thread.  Other threads talk to it only through
 * shard_post() (its mailbox).  A shard never blocks: disk work goes to the
 * spool's threads and comes back through the mailbox.
 */
#ifndef SEALGATE_SHARD_H
#define SEALGATE_SHARD_H

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

#include "core/listener.h"
#include "core/mailbox.h"

struct daemon;
struct delivery;
struct smtp_session;

struct shard_listener {
  uv_tcp_t tcp;
  struct shard_listener *next;
  struct shard *sh;
  char *key;
};

struct shard {
  unsigned id;
  struct daemon *d;
  uv_loop_t loop;
  pthread_t thread;
  struct mailbox mb;
  struct shard_listener *listeners;
  struct smtp_session *sessions; /* doubly linked through the sessions */
  unsigned n_sessions;
  struct delivery *dl;
  bool draining;
  bool stopped;
  uv_timer_t drain_timer;
  char readbuf[65536]; /* shared by all reads on this loop: data is consumed in the callback */
};

/* Start the thread (loop running, no listeners yet). */
int shard_start(struct daemon *d, unsigned id, struct shard **out);
/* Give the shard its sockets from plan (takes plan fds[id], leaving -1) and
 * close listeners whose key is not in the plan.  Thread-safe. */
int shard_apply_plan(struct shard *sh, struct listener_plan *plan);
/* Stop accepting, finish sessions and deliveries in flight, then stop. */
void shard_drain(struct shard *sh);
/* Wait for the thread to end and free the shard. */
void shard_join(struct shard *sh);
/* Run fn(arg) on the shard's loop. Thread-safe. */
int shard_post(struct shard *sh, mailbox_fn fn, void *arg);

/* Called by sessions and deliveries when they finish, so a draining shard
 * can tell when it is idle. Loop thread. */
void shard_check_idle(struct shard *sh);

#endif
