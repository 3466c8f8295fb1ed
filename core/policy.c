/*
 * policy - see policy.h.
 *
 * One evaluation builds a struct policy__eval: the header index of the
 * message (crypto/mime.h), the decoded values handed to the filters (kept
 * until the end so the pointers stay valid), and the lazily made body view
 * (crypto/mimebody.h).  The filters see it through struct filter_msg's
 * callbacks, so nothing is decoded that no evaluated condition asks for.
 */
#include "core/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/sgerr.h"
#include "crypto/mime.h"
#include "crypto/mimebody.h"

struct policy__eval {
  const struct policy_input *in;
  struct mime_field fields[POLICY_MAX_HEADERS];
  size_t n_fields;
  char **decoded; /* values returned to the filters, freed at the end */
  size_t n_decoded, cap_decoded;
  struct mimebody *body;
  bool body_failed;
};

/* The actions one group collected, in the order they ran, and the
 * filter each came from. */
struct policy__act {
  const struct filter_action *act;
  const char *filter;
};
struct policy__acts {
  struct policy__act *v;
  size_t n;
  char filters[256];
  size_t filters_len;
};

/* ---- the message as the filters see it ---------------------------------------- */

static const char *policy__keep(struct policy__eval *e, char *s) {
  if (!s) return NULL;
  if (e->n_decoded == e->cap_decoded) {
    size_t cap = e->cap_decoded ? 2 * e->cap_decoded : 8;
    char **v = realloc(e->decoded, cap * sizeof *v);
    if (!v) {
      free(s);
      return NULL;
    }
    e->decoded = v;
    e->cap_decoded = cap;
  }
  return e->decoded[e->n_decoded++] = s;
}

static const char *policy__header(void *arg, const char *name, size_t index) {
  struct policy__eval *e = arg;
  size_t want = strlen(name);
  for (size_t i = 0; i < e->n_fields; i++) {
    const struct mime_field *f = &e->fields[i];
    if (f->name_len != want || strncasecmp(e->in->data + f->name_off, name, want) != 0) continue;
    if (index-- > 0) continue;
    return policy__keep(e, mimebody_header_decode(e->in->data + f->value_off, f->value_len));
  }
  return NULL;
}

static struct mimebody *policy__body(struct policy__eval *e) {
  if (!e->body && !e->body_failed && mimebody_new(e->in->data, e->in->len, &e->body) != 0) e->body_failed = true;
  return e->body;
}

static bool policy__body_contains(void *arg, const char *needle) {
  struct mimebody *b = policy__body(arg);
  return b && mimebody_contains(b, needle);
}

static const char *policy__attachment(void *arg, size_t index) {
  struct mimebody *b = policy__body(arg);
  return b ? mimebody_attachment(b, index) : NULL;
}

static void policy__eval_free(struct policy__eval *e) {
  for (size_t i = 0; i < e->n_decoded; i++) free(e->decoded[i]);
  free(e->decoded);
  mimebody_free(e->body);
}

/* ---- mail policies ---------------------------------------------------------------- */

bool policy_address_match(const char *pattern, const char *address) {
  if (!strcmp(pattern, "*")) return true;
  const char *at = strrchr(address, '@');
  if (!*address || !at) return false;
  const char *domain = at + 1;
  if (pattern[0] == '@') return strcasecmp(pattern + 1, domain) == 0;
  if (pattern[0] == '*' && pattern[1] == '.') {
    size_t n = strlen(pattern + 1), d = strlen(domain); /* ".example.com" */
    return d > n && strcasecmp(domain + d - n, pattern + 1) == 0;
  }
  return strcasecmp(pattern, address) == 0;
}

static bool policy__any(char *const *patterns, size_t n, const char *address) {
  for (size_t i = 0; i < n; i++)
    if (policy_address_match(patterns[i], address)) return true;
  return false;
}

static bool policy__matches(const struct config_mail_policy *p, const struct policy_input *in, const char *rcpt) {
  return p->direction == in->direction && policy__any(p->senders, p->n_senders, in->sender) &&
         policy__any(p->recipients, p->n_recipients, rcpt);
}

/* The index of rcpt's mail policy in cfg, or cfg->n_mail_policies for the
 * implicit default.  "default" is tried last wherever it is written. */
static size_t policy__of(const struct config *cfg, const struct policy_input *in, const char *rcpt) {
  size_t dflt = cfg->n_mail_policies;
  for (size_t i = 0; i < cfg->n_mail_policies; i++) {
    const struct config_mail_policy *p = &cfg->mail_policies[i];
    if (!strcmp(p->name, "default")) {
      if (p->direction == in->direction) dflt = i;
      continue;
    }
    if (policy__matches(p, in, rcpt)) return i;
  }
  if (dflt < cfg->n_mail_policies && policy__matches(&cfg->mail_policies[dflt], in, rcpt)) return dflt;
  return cfg->n_mail_policies;
}

bool policy_active(const struct config *cfg, enum config_direction direction) {
  if (cfg->message_program && filter_program_count(cfg->message_program) > 0) return true;
  for (size_t i = 0; i < cfg->n_mail_policies; i++)
    if (cfg->mail_policies[i].direction == direction && cfg->mail_policies[i].n_content_filters > 0) return true;
  return false;
}

/* ---- running the filters ---------------------------------------------------------- */

static int policy__add(struct policy__acts *a, const struct filter_action *act, const char *filter) {
  struct policy__act *v = realloc(a->v, (a->n + 1) * sizeof *v);
  if (!v) return SG_ENOMEM;
  a->v = v;
  a->v[a->n++] = (struct policy__act){act, filter};
  return 0;
}

static void policy__note(struct policy__acts *a, const char *filter) {
  if (a->filters_len >= sizeof a->filters - 1) return;
  int k = snprintf(a->filters + a->filters_len, sizeof a->filters - a->filters_len, "%s%s",
                   a->filters_len ? "," : "", filter);
  if (k > 0) a->filters_len += (size_t)k;
  if (a->filters_len >= sizeof a->filters) a->filters_len = sizeof a->filters - 1;
}

/* message_filters: their actions start every group's list.  *go_on is
 * false when a final action other than deliver() ended the run. */
static int policy__message_filters(const struct config *cfg, const struct filter_msg *m, struct policy__acts *out,
                                   bool *go_on) {
  *go_on = true;
  if (!cfg->message_program) return 0;
  const struct filter_action **acts = NULL;
  size_t n = 0;
  int rc = filter_program_run(cfg->message_program, m, &acts, &n);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const char *name = filter_program_action_filter(cfg->message_program, acts[i]);
    if (!name) name = "message_filters";
    if ((rc = policy__add(out, acts[i], name)) == 0 && (out->n == 1 || strcmp(out->v[out->n - 2].filter, name)))
      policy__note(out, name);
  }
  if (n > 0 && filter_action_is_final(acts[n - 1]) && acts[n - 1]->kind != FILTER_DELIVER) *go_on = false;
  free(acts);
  return rc;
}

/* The content filters of policy p (NULL: the implicit default, none). */
static int policy__content_filters(const struct config_mail_policy *p, const struct filter_msg *m,
                                   struct policy__acts *a) {
  for (size_t i = 0; p && i < p->n_content_filters; i++) {
    const struct config_content_filter *f = p->filters[i];
    if (!filter_cond_eval(f->cond, m)) continue;
    policy__note(a, f->name);
    for (size_t k = 0; k < f->n_actions; k++) {
      if (policy__add(a, &f->parsed[k], f->name)) return SG_ENOMEM;
      if (filter_action_is_final(&f->parsed[k])) return 0;
    }
  }
  return 0;
}

/* Fold the actions into an outcome (the rules are in policy.h). */
static int policy__fold(const struct policy__acts *a, bool released, struct policy_outcome *o) {
  for (size_t i = 0; i < a->n; i++) {
    const struct filter_action *act = a->v[i].act;
    switch (act->kind) {
      case FILTER_DROP:
      case FILTER_BOUNCE:
        o->verdict = act->kind == FILTER_DROP ? POLICY_DROP : POLICY_BOUNCE;
        o->quarantine = NULL;
        snprintf(o->decided_by, sizeof o->decided_by, "%s", a->v[i].filter);
        break;
      case FILTER_QUARANTINE:
        if (released || o->verdict != POLICY_DELIVER) break;
        o->verdict = POLICY_QUARANTINE;
        o->quarantine = act->arg1;
        snprintf(o->decided_by, sizeof o->decided_by, "%s", a->v[i].filter);
        break;
      case FILTER_SMIME_GATEWAY:
      case FILTER_SMIME_ON_DELIVERY: o->profile = act->arg1; break;
      case FILTER_INSERT_HEADER: {
        const struct filter_action **v = realloc(o->headers, (o->n_headers + 1) * sizeof *v);
        if (!v) return SG_ENOMEM;
        o->headers = v;
        o->headers[o->n_headers++] = act;
        break;
      }
      case FILTER_DELIVER: break;
    }
    if (o->verdict == POLICY_DROP || o->verdict == POLICY_BOUNCE) break;
  }
  snprintf(o->filters, sizeof o->filters, "%s", a->filters);
  return 0;
}

static bool policy__streq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* Would the two groups be processed the same way?  (Then they stay one
 * message.)  Which filters led there does not matter. */
static bool policy__same(const struct policy_outcome *a, const struct policy_outcome *b) {
  if (a->verdict != b->verdict || a->n_headers != b->n_headers || !policy__streq(a->profile, b->profile) ||
      !policy__streq(a->quarantine, b->quarantine))
    return false;
  for (size_t i = 0; i < a->n_headers; i++)
    if (!policy__streq(a->headers[i]->arg1, b->headers[i]->arg1) ||
        !policy__streq(a->headers[i]->arg2, b->headers[i]->arg2))
      return false;
  return true;
}

void policy_result_free(struct policy_result *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n_groups; i++) free(r->groups[i].headers);
  free(r->groups);
  free(r->group_of);
  *r = (struct policy_result){0};
}

/* Evaluate the group of recipients whose mail policy is pi (their
 * indexes in in->rcpts are idx[0..n)) into *o. */
static int policy__group(const struct config *cfg, struct filter_msg *m, const struct policy__acts *base, bool go_on,
                         size_t pi, char **rcpts, size_t n, bool released, struct policy_outcome *o) {
  const struct config_mail_policy *p = pi < cfg->n_mail_policies ? &cfg->mail_policies[pi] : NULL;
  struct policy__acts a = *base;
  a.v = base->n ? malloc(base->n * sizeof *a.v) : NULL;
  if (base->n && !a.v) return SG_ENOMEM;
  if (base->n) memcpy(a.v, base->v, base->n * sizeof *a.v);
  m->rcpts = rcpts;
  m->n_rcpts = n;
  int rc = go_on ? policy__content_filters(p, m, &a) : 0;
  *o = (struct policy_outcome){.policy = p ? p->name : "default"};
  if (rc == 0) rc = policy__fold(&a, released, o);
  free(a.v);
  return rc;
}

/* Put outcome o (of the recipients idx[0..n)) into r: into an equal group
 * if there is one (o's headers are then freed), else as a new group. */
static void policy__place(struct policy_result *r, struct policy_outcome *o, const size_t *idx, size_t n) {
  size_t g = 0;
  while (g < r->n_groups && !policy__same(&r->groups[g], o)) g++;
  if (g == r->n_groups) r->groups[r->n_groups++] = *o;
  else free(o->headers);
  for (size_t i = 0; i < n; i++) r->group_of[idx[i]] = g;
}

/* Recipients grouped by mail policy, each group evaluated and placed. */
static int policy__groups(const struct config *cfg, struct policy__eval *e, struct filter_msg *m,
                          const struct policy__acts *base, bool go_on, struct policy_result *r) {
  const struct policy_input *in = e->in;
  size_t *pol = malloc(in->n_rcpts * sizeof *pol), *idx = malloc(in->n_rcpts * sizeof *idx);
  char **rcpts = malloc(in->n_rcpts * sizeof *rcpts);
  bool *done = calloc(in->n_rcpts, sizeof *done);
  int rc = pol && idx && rcpts && done ? 0 : SG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < in->n_rcpts; i++) pol[i] = policy__of(cfg, in, in->rcpts[i]);
  for (size_t i = 0; rc == 0 && i < in->n_rcpts; i++) {
    if (done[i]) continue;
    size_t n = 0;
    for (size_t j = i; j < in->n_rcpts; j++)
      if (!done[j] && pol[j] == pol[i]) done[j] = true, idx[n] = j, rcpts[n++] = in->rcpts[j];
    struct policy_outcome o;
    rc = policy__group(cfg, m, base, go_on, pol[i], rcpts, n, in->released, &o);
    if (rc == 0) policy__place(r, &o, idx, n);
  }
  free(pol), free(idx), free(rcpts), free(done);
  return rc;
}

int policy_evaluate(const struct config *cfg, const struct policy_input *in, struct policy_result *out) {
  if (!cfg || !in || !out || !in->data || in->n_rcpts == 0) return SG_EINVAL;
  *out = (struct policy_result){0};
  struct policy__eval *e = calloc(1, sizeof *e);
  out->groups = calloc(in->n_rcpts, sizeof *out->groups);
  out->group_of = calloc(in->n_rcpts, sizeof *out->group_of);
  if (!e || !out->groups || !out->group_of) {
    free(e);
    policy_result_free(out);
    return SG_ENOMEM;
  }
  e->in = in;
  e->n_fields = mime_header_index(in->data, in->len, e->fields, POLICY_MAX_HEADERS);
  struct filter_msg m = {.subject = policy__header(e, "Subject", 0), .mail_from = in->sender,
                         .header = policy__header, .attachment = policy__attachment,
                         .body_contains = policy__body_contains, .arg = e, .body_size = in->len,
                         .smime_message = in->smime_message, .smime_verified = in->smime_verified};
  m.rcpts = in->rcpts;
  m.n_rcpts = in->n_rcpts;
  struct policy__acts base = {0};
  bool go_on = true;
  int rc = policy__message_filters(cfg, &m, &base, &go_on);
  if (rc == 0) rc = policy__groups(cfg, e, &m, &base, go_on, out);
  out->used_body = e->body != NULL;
  free(base.v);
  policy__eval_free(e);
  free(e);
  if (rc) policy_result_free(out);
  return rc;
}

/* ---- applying an outcome ---------------------------------------------------------- */

int policy_insert_headers(const struct policy_outcome *o, const char *data, size_t len, char **out, size_t *out_len) {
  size_t need = len + 1;
  for (size_t i = 0; i < o->n_headers; i++) need += strlen(o->headers[i]->arg1) + strlen(o->headers[i]->arg2) + 4;
  char *b = malloc(need), *p = b;
  if (!b) return SG_ENOMEM;
  for (size_t i = 0; i < o->n_headers; i++)
    p += sprintf(p, "%s: %s\r\n", o->headers[i]->arg1, o->headers[i]->arg2);
  memcpy(p, data, len);
  p[len] = '\0';
  *out = b;
  *out_len = (size_t)(p - b) + len;
  return 0;
}
