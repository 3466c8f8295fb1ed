/*
 * daemon - the running gateway: owns the config snapshot, the spool, the
 * shards and the main thread's loop (signals, control socket, reload).
 *
 * core/main.c calls daemon_run(); everything else reaches shared state
 * through struct daemon, which shards read but never write except through
 * the functions below.  The current config is published with RCU (liburcu
 * memb flavour): daemon_config_get() returns a referenced snapshot, valid
 * until config_unref(), on any thread registered with RCU.
 */
#ifndef SEALGATE_DAEMON_H
#define SEALGATE_DAEMON_H

#include <stdatomic.h>
#include <stdbool.h>

#include "core/config.h"

struct spool;
struct shard;
struct keyring;

struct daemon {
  struct config *cfg;       /* RCU-published; use daemon_config_get() */
  struct spool *spool;
  struct shard **shards;
  unsigned n_shards;
  char *instance_dir;       /* folder of the config file */
  struct keyring *keys;     /* token, crypto workers, certificates (crypto/keyring.h) */
  atomic_bool draining;
};

/* Run in the foreground until SIGTERM; returns the process exit code. */
int daemon_run(const char *config_path);

/* Referenced current config; pair with config_unref().  Any RCU thread. */
struct config *daemon_config_get(struct daemon *d);

/* The shard that owns new messages for queue-id or recovery placement. */
struct shard *daemon_shard(struct daemon *d, unsigned i);

#endif
