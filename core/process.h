/*
 * process - what happens to one message between the spool and the next
 * hop, on a crypto worker: incoming S/MIME (decrypt, verify, harvest;
 * crypto/incoming.h), then message filters, mail policies and content
 * filters (core/policy.h), then one of: split the recipients into groups
 * processed differently, drop, bounce, hold in quarantine
 * (core/quarantine.h), or deliver with the chosen header fields inserted
 * and the chosen sending profile applied last (crypto/outgoing.h, R28,
 * R29).
 *
 * Owns the order of those steps and nothing else; delivery (core/
 * delivery.c) prepares a request on its loop, runs process_run on a
 * crypto worker, and acts on the result back on the loop (the spool
 * operations, DSNs and sends are its).  Trusts the config snapshot and the
 * keys it is given; the message is hostile (each step bounds itself).
 *
 * The one blocking step is quarantine_put (an fsync), done here because a
 * crypto worker may block and the loop may not: by the time the loop sees
 * PROCESS_QUARANTINED the held copy is durable, so removing the message
 * from the spool can never lose it.
 */
#ifndef SEALGATE_PROCESS_H
#define SEALGATE_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/quarantine.h"
#include "core/spool_record.h"
#include "crypto/keyring.h"
#include "crypto/outgoing.h"

struct hsm_worker;

struct process_request {
  const struct config *cfg;           /* referenced by the caller for the whole run */
  struct keyring *keys;
  const struct spool_envelope *env;   /* the message's envelope (read only) */
  char *data;                         /* the message as spooled: owned by the request, and
                                         freed (set NULL) by the run when an outgoing
                                         transformation no longer needs it */
  size_t len;
  const struct config_flow_policy *flow;      /* incoming processing, or NULL */
  const struct config_sending_profile *profile; /* the listener's profile, or NULL */
  const struct keyring_incoming *in;  /* flow: the keys and trust (the caller's) */
  enum config_direction direction;
  bool policy;                        /* evaluate filters and policies */
  bool first;                         /* first attempt in this process: harvest, count failures */
};

enum process_verdict {
  PROCESS_SEND = 0,   /* res.status says: DONE (res.out), NOKEYS, TEMP or FAIL */
  PROCESS_SPLIT,      /* group_of: the recipients go different ways; nothing made */
  PROCESS_DROP,       /* a filter dropped it (decided_by) */
  PROCESS_BOUNCE,     /* a filter bounced it (decided_by) */
  PROCESS_QUARANTINED /* held durably in quarantine (quarantine, quarantine_id) */
};

struct process_result {
  enum process_verdict verdict;
  struct outgoing_result res;          /* SEND (and TEMP for any verdict that could not be reached) */
  const struct config_sending_profile *profile; /* SEND: the profile applied, or NULL */
  size_t *group_of;                    /* SPLIT: per recipient, 0..n_groups-1 (owned) */
  size_t n_groups;
  char decided_by[128];                /* DROP, BOUNCE, QUARANTINED: the filter */
  char quarantine[QUARANTINE_NAME_MAX + 1];
  char quarantine_id[QUARANTINE_ID_MAX];
  char filters[256];                   /* filters whose actions ran, for the log */
  bool smime_message, smime_verified;  /* R33, from incoming processing */
};

/* Never fails outright: every outcome is in res (process_result_free even
 * on TEMP).  A temporary failure anywhere (token away, out of memory,
 * quarantine not writable) is res.status OUTGOING_TEMP with verdict SEND:
 * the message waits and is processed again. */
void process_run(struct hsm_worker *w, struct process_request *rq, struct process_result *res);
void process_result_free(struct process_result *res);

/* quarantine_limits_fn over a struct config (arg): its `quarantines:`
 * entry for name, or the defaults.  For every caller of quarantine_expire. */
struct quarantine_limits process_quarantine_limits(const char *name, void *cfg);

#endif
