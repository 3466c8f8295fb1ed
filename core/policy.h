/*
 * policy - which processing each recipient of a message gets: message
 * filters (R33), mail policies (R30) and their content filters (R27-R29),
 * evaluated into a few outcomes, one per group of recipients.
 *
 * Owns the evaluation only: the compiled filters and policies belong to
 * the config snapshot (core/config.h, compiled when it loads), the
 * decoded body to crypto/mimebody.h.  Callers: delivery, on a crypto
 * worker, once per delivery attempt of a message (the message then goes
 * the way its outcome says); the bench; tests.  Any thread; nothing is
 * shared between calls.
 *
 * The order, as with the vendor:
 *   1. message_filters, on the whole message (every recipient);
 *   2. each recipient's mail policy: the first policy of the message's
 *      direction whose senders match the sender and whose recipients
 *      match the recipient, the policy named "default" last wherever it
 *      is written, and with no match an implicit default without filters;
 *   3. that policy's content filters, in the policy's order, seeing only
 *      the recipients of its group in rcpt-to.
 * A final action ends the run: smime-gateway (R28), drop, bounce; deliver
 * ends the filters of its kind (a message filter's deliver() still lets
 * the content filters run, as the vendor's does).  The actions that ran
 * are then folded into one outcome per group:
 *   drop or bounce wins over everything; otherwise quarantine(Q) holds the
 *   message (the first Q named; skipped entirely for a message released
 *   from quarantine); the last smime-gateway or smime-gateway-on-delivery
 *   names the sending profile applied just before delivery (R29); the
 *   insert-header actions are applied in order.
 * Recipients whose outcomes are equal share one group, so a message is
 * split only when its recipients really are processed differently.
 *
 * Trust: the message is hostile (see core/filter.h and crypto/mimebody.h
 * for the bounds); header values are decoded (RFC 2047) and unfolded
 * before the filters see them, each once; the body is decoded only if a
 * condition that is evaluated needs it.  Filters fail closed: when a
 * bound kept part of the message from them (POLICY_MAX_HEADERS, or
 * mimebody_incomplete for a body condition that was evaluated), an
 * outcome that would deliver holds the message in Policy instead.
 */
#ifndef SEALGATE_POLICY_H
#define SEALGATE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/filter.h"

/* Header fields filters look at.  A message with more is held in Policy
 * rather than judged on part of its header (fail closed). */
#define POLICY_MAX_HEADERS 10000

enum policy_verdict { POLICY_DELIVER = 0, POLICY_QUARANTINE, POLICY_DROP, POLICY_BOUNCE };

/* One group's outcome.  Pointers point into the config snapshot given to
 * policy_evaluate and live as long as it. */
struct policy_outcome {
  enum policy_verdict verdict;
  const char *profile;         /* sending profile to apply, or NULL (then the listener's, if any) */
  const char *quarantine;      /* POLICY_QUARANTINE: where */
  const struct filter_action **headers; /* insert-header actions, in order (owned by the result) */
  size_t n_headers;
  const char *policy;          /* the mail policy ("default" when none matched) */
  char filters[256];           /* the filters whose actions ran, "a,b" (for logs and quarantine) */
  char decided_by[128];        /* the filter whose drop/bounce/quarantine decided, or "" */
};

struct policy_input {
  const char *data;            /* the message (header and body) as it will be delivered */
  size_t len;
  const char *sender;          /* "" for <> */
  char *const *rcpts;          /* the recipients to decide for (still pending) */
  size_t n_rcpts;
  char *const *all_rcpts;      /* the message's original recipients (spool 'O' records), whom
                                  the filters judge; NULL/0: the same as rcpts */
  size_t n_all_rcpts;
  enum config_direction direction;
  bool smime_message, smime_verified; /* R33 (incoming processing's result) */
  bool released;               /* SPOOL_F_RELEASED: quarantine actions are skipped */
};

struct policy_result {
  struct policy_outcome *groups; /* n_groups >= 1 */
  size_t n_groups;
  size_t *group_of;            /* per recipient: its group */
  bool used_body;              /* the body was decoded (for the bench and logs) */
};

/* Does cfg have anything to evaluate for this direction?  When false the
 * caller may skip policy_evaluate (every recipient gets the default). */
bool policy_active(const struct config *cfg, enum config_direction direction);

/* Evaluate.  *out is the caller's (policy_result_free) on success.
 * Returns 0, SG_ENOMEM (then *out holds nothing), or SG_EINVAL. */
int policy_evaluate(const struct config *cfg, const struct policy_input *in, struct policy_result *out);
void policy_result_free(struct policy_result *r);

/* Does address match pattern ("*", an address, "@domain", "*.domain")?
 * Case-insensitive; the null sender "" matches only "*". */
bool policy_address_match(const char *pattern, const char *address);

/* Prepend the insert-header fields of o to data (before the first line),
 * into a new malloc'd, NUL-terminated buffer (*out, the caller's; *out_len
 * excludes the NUL).  0 or SG_ENOMEM. */
int policy_insert_headers(const struct policy_outcome *o, const char *data, size_t len, char **out,
                          size_t *out_len);

#endif
