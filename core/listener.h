/*
 * listener - listening sockets, created by the main thread and handed to
 * shards.
 *
 * Each configured address gets one socket per shard, all bound with
 * SO_REUSEPORT so the kernel spreads connections across shards (libuv 1.44
 * cannot do this itself, so sockets are made here and given to
 * uv_tcp_open).  A reload binds every new address first and only then
 * publishes; if any bind fails the reload is rejected and nothing changes.
 * Once a socket is handed to a shard, the shard owns (and closes) it.
 */
#ifndef SEALGATE_LISTENER_H
#define SEALGATE_LISTENER_H

#include <stddef.h>

#include "core/config.h"

/* The sockets to give the shards after a (re)configuration. */
struct listener_plan {
  size_t n;
  struct listener_plan_entry {
    char *key;   /* "host:port" as configured: identity across reloads */
    int *fds;    /* one per shard, or NULL when the address was already bound */
  } *entries;
};

/*
 * Plan sockets for cfg given the keys already bound (old_keys, may be
 * NULL).  New addresses are bound now; on failure everything bound here is
 * closed, err names the listener and the cause, and SG_EIO/SG_ECONFIG is
 * returned.
 */
int listener_plan_build(const struct config *cfg, char **old_keys, size_t n_old, unsigned nshards,
                        struct listener_plan *out, char *err, size_t errlen);
/* Free the plan; closes fds still in it (those not taken by shards). */
void listener_plan_free(struct listener_plan *p, unsigned nshards);

/* "host:port" key of a listener (static buffer owned by caller). */
const char *listener_key(const struct config_listener *l, char *out, size_t cap);

#endif
