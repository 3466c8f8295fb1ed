/*
 * sealctl_quarantine - `sealctl quarantine list [NAME] | show ID [--body] |
 * release ID | delete ID` (issue #6): the messages held by quarantine("NAME")
 * filter actions.
 *
 * Works on the quarantine folder (the config's quarantine_dir) directly
 * through core/quarantine.h, whether or not the daemon runs: every change
 * there is one rename or unlink.  A release moves the message to the
 * folder the daemon queues from, then tells a running daemon through the
 * control socket ("quarantine released") so it does so at once.
 *
 * Untrusted input: arguments (an ID or name with a bad syntax is a usage
 * error, exit 2, before any path is built) and the held files (read by the
 * strict reader; a damaged one is listed as corrupt).  Names, addresses
 * and headers from the files were written by mail senders: they are made
 * safe for a terminal (log_safe) in text output and escaped in JSON; only
 * `show --body` prints the message raw, because it was asked for.  Exit
 * codes: 0 success, 1 failed operation, 2 bad usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/quarantine.h"
#include "core/sgerr.h"
#include "tools/json.h"
#include "tools/sealctl.h"

#define CTL_Q_SAFE 1024 /* longer than any text field of a held file */

/* ---- shared pieces ------------------------------------------------------------ */

struct ctl_q {
  struct config *cfg;
  const char *root;
  const char *words[2]; /* positional words after the subcommand */
  int n_words;
  bool body;            /* show --body */
};

/* Positional words (min..max) after the subcommand; only the option flag
 * (NULL: none) is accepted, into q->body. */
static int ctl_q_args(const struct ctl *c, struct ctl_q *q, int min, int max, const char *flag,
                      const char *usage) {
  memset(q, 0, sizeof *q);
  for (int i = 2; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (a[0] == '-' && a[1] && flag && strcmp(a, flag) == 0) q->body = true;
    else if (a[0] == '-' && a[1]) return ctl_usage_error("unknown option %s", a);
    else if (q->n_words == max) return ctl_usage_error("usage: sealctl %s", usage);
    else q->words[q->n_words++] = a;
  }
  if (q->n_words < min) return ctl_usage_error("usage: sealctl %s", usage);
  return 0;
}

static int ctl_q_load(const struct ctl *c, struct ctl_q *q) {
  int rc = ctl_load(c, &q->cfg);
  if (rc) return rc;
  q->root = q->cfg->quarantine_dir; /* config.c always sets it (the default: DIR/quarantine) */
  return 0;
}

static const char *ctl_q_safe(char out[CTL_Q_SAFE], const char *s) {
  return log_safe(out, CTL_Q_SAFE, s ? s : "", s ? strlen(s) : 0);
}

/* The ID argument: a bad syntax is a usage error, before any path. */
static int ctl_q_id(const char *id) {
  if (quarantine_id_ok(id)) return 0;
  char safe[64];
  log_safe(safe, sizeof safe, id, strlen(id));
  return ctl_usage_error("'%s' is not a quarantined message ID (hex digits, as quarantine list shows)", safe);
}

static int ctl_q_fail(const char *id, int rc, const char *err) {
  if (rc == SG_ENOTFOUND) fprintf(stderr, "sealctl: no quarantined message '%s'\n", id);
  else fprintf(stderr, "sealctl: %s\n", err);
  return 1;
}

static void ctl_q_iso(uint64_t ms, char *out, size_t cap) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The fields list and show share, without the closing brace. */
static void ctl_q_json_meta(const struct quarantine_meta *m, const struct spool_envelope *env, const char *corrupt) {
  char held[32];
  ctl_q_iso(m->held_ms, held, sizeof held);
  printf("{\"id\":");
  ctl_json_str(stdout, m->id);
  printf(",\"quarantine\":");
  ctl_json_str(stdout, m->name);
  printf(",\"held\":\"%s\",\"size\":%" PRIu64, held, m->size);
  if (corrupt) {
    printf(",\"corrupt\":");
    ctl_json_str(stdout, corrupt);
    return;
  }
  printf(",\"sender\":");
  ctl_json_str(stdout, env->sender);
  ctl_json_list("recipients", env->rcpts, env->n_rcpts);
  printf(",\"filter\":");
  ctl_json_str(stdout, m->filter);
  printf(",\"reason\":");
  ctl_json_str(stdout, m->reason);
}

/* ---- list ----------------------------------------------------------------------- */

struct ctl_q_list {
  bool json;
  size_t n;
};

static void ctl_q_row_text(const struct quarantine_meta *m, const struct spool_envelope *env, const char *corrupt) {
  char held[32], from[CTL_Q_SAFE], rcpt[CTL_Q_SAFE], filter[CTL_Q_SAFE], more[32] = "";
  ctl_q_iso(m->held_ms, held, sizeof held);
  printf("%-24s %-16s %-20s %9" PRIu64 " ", m->id, m->name, held, m->size);
  if (corrupt) {
    printf("CORRUPT: %s\n", ctl_q_safe(from, corrupt));
    return;
  }
  if (env->n_rcpts > 1) snprintf(more, sizeof more, " (+%zu)", env->n_rcpts - 1);
  ctl_q_safe(rcpt, env->n_rcpts ? env->rcpts[0] : "");
  printf("%-32s %s%-*s %s\n", env->sender[0] ? ctl_q_safe(from, env->sender) : "<>", rcpt,
         (int)(strlen(rcpt) < 32 ? 32 - strlen(rcpt) : 0), more, ctl_q_safe(filter, m->filter));
}

static void ctl_q_row(const struct quarantine_meta *m, const struct spool_envelope *env, const char *corrupt,
                      void *arg) {
  struct ctl_q_list *l = arg;
  if (l->json) {
    printf("%s", l->n ? ",\n " : "");
    ctl_q_json_meta(m, env, corrupt);
    putchar('}');
  } else {
    ctl_q_row_text(m, env, corrupt);
  }
  l->n++;
}

static int ctl_q_list(const struct ctl *c) {
  struct ctl_q q;
  int rc = ctl_q_args(c, &q, 0, 1, NULL, "quarantine list [NAME]");
  if (rc) return rc;
  const char *name = q.n_words ? q.words[0] : NULL;
  char safe[CTL_Q_SAFE], err[1024];
  if (name && !quarantine_name_ok(name))
    return ctl_usage_error("'%s' is not a quarantine name", ctl_q_safe(safe, name));
  if ((rc = ctl_q_load(c, &q)) != 0) return rc;
  struct ctl_q_list l = {c->json, 0};
  if (c->json) printf("[");
  else printf("%-24s %-16s %-20s %9s %-32s %-32s %s\n", "ID", "QUARANTINE", "HELD", "SIZE", "FROM", "RCPTS",
              "FILTER");
  rc = quarantine_list(q.root, name, ctl_q_row, &l, err, sizeof err);
  if (c->json) printf("]\n");
  if (rc) fprintf(stderr, "sealctl: quarantine list: %s\n", err);
  config_unref(q.cfg);
  return rc ? 1 : 0;
}

/* ---- show ----------------------------------------------------------------------- */

/* The length of the message's header block (up to the empty line, not
 * included); *body_at is where the body starts. */
static size_t ctl_q_split(const char *data, size_t len, size_t *body_at) {
  size_t at = 0;
  while (at < len) {
    const char *nl = memchr(data + at, '\n', len - at);
    size_t end = nl ? (size_t)(nl - data) : len, line = end - at;
    if (line && data[end - 1] == '\r') line--;
    if (line == 0) {
      *body_at = nl ? end + 1 : len;
      return at;
    }
    at = nl ? end + 1 : len;
  }
  *body_at = len;
  return len;
}

/* Header lines made safe: CR dropped, a folding tab shown as a space, any
 * other control or non-ASCII byte as '?'. */
static void ctl_q_headers_text(const char *data, size_t n) {
  char *line = malloc(n + 1), *safe = malloc(n + 1);
  for (size_t at = 0; line && safe && at < n;) {
    const char *nl = memchr(data + at, '\n', n - at);
    size_t end = nl ? (size_t)(nl - data) : n, len = end - at;
    if (len && data[end - 1] == '\r') len--;
    for (size_t i = 0; i < len; i++) line[i] = data[at + i] == '\t' ? ' ' : data[at + i];
    printf("%s\n", log_safe(safe, n + 1, line, len));
    at = end + 1;
  }
  free(line);
  free(safe);
}

static void ctl_q_show_text(const struct quarantine_meta *m, const struct spool_envelope *env, const char *data,
                            size_t len, bool body) {
  char held[32], arrival[32], s[CTL_Q_SAFE];
  ctl_q_iso(m->held_ms, held, sizeof held);
  ctl_q_iso(env->arrival_ms, arrival, sizeof arrival);
  printf("id:           %s\nquarantine:   %s\nheld:         %s\nsize:         %" PRIu64 "\n", m->id, m->name,
         held, m->size);
  printf("filter:       %s\n", ctl_q_safe(s, m->filter));
  printf("reason:       %s\n", ctl_q_safe(s, m->reason));
  printf("queue id:     %s\narrival:      %s\n", ctl_q_safe(s, env->queue_id), arrival);
  printf("from:         %s\n", env->sender[0] ? ctl_q_safe(s, env->sender) : "<>");
  for (size_t i = 0; i < env->n_rcpts; i++) printf("%s%s\n", i ? "              " : "to:           ",
                                                   ctl_q_safe(s, env->rcpts[i]));
  printf("listener:     %s\n", ctl_q_safe(s, env->listener));
  printf("client:       %s\n\n", ctl_q_safe(s, env->client));
  if (body) {
    fwrite(data, 1, len, stdout);
  } else {
    size_t body_at;
    ctl_q_headers_text(data, ctl_q_split(data, len, &body_at));
    if (body_at < len) printf("\n(body of %zu bytes not shown: --body shows the whole message)\n", len - body_at);
  }
}

static void ctl_q_show_json(const struct quarantine_meta *m, const struct spool_envelope *env, const char *data,
                            size_t len, bool body) {
  char arrival[32];
  size_t body_at, head = ctl_q_split(data, len, &body_at);
  ctl_q_iso(env->arrival_ms, arrival, sizeof arrival);
  ctl_q_json_meta(m, env, NULL);
  printf(",\"queue_id\":");
  ctl_json_str(stdout, env->queue_id);
  printf(",\"arrival\":\"%s\",\"listener\":", arrival);
  ctl_json_str(stdout, env->listener);
  printf(",\"client\":");
  ctl_json_str(stdout, env->client);
  printf(",\"headers\":");
  tool_json_mem(stdout, data, head);
  if (body) {
    printf(",\"body\":");
    tool_json_mem(stdout, data + body_at, len - body_at);
  }
  printf("}\n");
}

static int ctl_q_show(const struct ctl *c) {
  struct ctl_q q;
  int rc = ctl_q_args(c, &q, 1, 1, "--body", "quarantine show ID [--body]");
  if (rc || (rc = ctl_q_id(q.words[0])) != 0 || (rc = ctl_q_load(c, &q)) != 0) return rc;
  const char *id = q.words[0];
  struct quarantine_meta m;
  struct spool_envelope env;
  char *data, err[1024];
  size_t len;
  rc = quarantine_show(q.root, id, &m, &env, &data, &len, err, sizeof err);
  if (rc) ctl_q_fail(id, rc, err);
  else if (c->json) ctl_q_show_json(&m, &env, data, len, q.body);
  else ctl_q_show_text(&m, &env, data, len, q.body);
  spool_envelope_free(&env);
  free(data);
  config_unref(q.cfg);
  return rc ? 1 : 0;
}

/* ---- release, delete -------------------------------------------------------------- */

static int ctl_q_release(const struct ctl *c) {
  struct ctl_q q;
  int rc = ctl_q_args(c, &q, 1, 1, NULL, "quarantine release ID");
  if (rc || (rc = ctl_q_id(q.words[0])) != 0 || (rc = ctl_q_load(c, &q)) != 0) return rc;
  const char *id = q.words[0];
  char err[1024];
  rc = quarantine_release(q.root, id, err, sizeof err);
  if (rc) {
    ctl_q_fail(id, rc, err);
  } else {
    /* Released is released: the message is durably where the daemon looks;
     * the request only saves waiting for its next scan. */
    struct buf out = BUF_INIT;
    int r = ctl_request(q.cfg, "quarantine released", &out);
    if (r == 0) printf("released %s\n", id);
    else if (r == SG_ENOTFOUND) printf("released; the daemon delivers it when it starts\n");
    else printf("released %s; the running daemon did not take it yet: it delivers it when it next starts\n", id);
    buf_free(&out);
  }
  config_unref(q.cfg);
  return rc ? 1 : 0;
}

static int ctl_q_delete(const struct ctl *c) {
  struct ctl_q q;
  int rc = ctl_q_args(c, &q, 1, 1, NULL, "quarantine delete ID");
  if (rc || (rc = ctl_q_id(q.words[0])) != 0 || (rc = ctl_q_load(c, &q)) != 0) return rc;
  const char *id = q.words[0];
  char err[1024];
  rc = quarantine_delete(q.root, id, err, sizeof err);
  if (rc) ctl_q_fail(id, rc, err);
  else printf("deleted %s\n", id);
  config_unref(q.cfg);
  return rc ? 1 : 0;
}

int ctl_quarantine(const struct ctl *c) {
  if (c->argc < 2) return ctl_usage_error("quarantine needs a subcommand (list, show, release, delete)%s", "");
  if (strcmp(c->argv[1], "list") == 0) return ctl_q_list(c);
  if (strcmp(c->argv[1], "show") == 0) return ctl_q_show(c);
  if (strcmp(c->argv[1], "release") == 0) return ctl_q_release(c);
  if (strcmp(c->argv[1], "delete") == 0) return ctl_q_delete(c);
  char safe[64];
  return ctl_usage_error("quarantine: unknown subcommand '%s'", log_safe(safe, sizeof safe, c->argv[1],
                                                                         strlen(c->argv[1])));
}
