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

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/sgerr.h"
#include "crypto/mime.h"
#include "crypto/mimebody.h"

#define POLICY__FIELDS_INLINE 64 /* most messages: no allocation for the index */

struct policy__eval {
  const struct policy_input *in;
  struct mime_field inline_fields[POLICY__FIELDS_INLINE];
  struct mime_field *fields; /* inline_fields, or malloc'd for a long header */
  size_t n_fields;
  char **decoded;            /* per field, its value as the filters see it (made once, on demand) */
  struct mimebody *body;
  bool body_failed;
  bool incomplete;           /* more header fields than POLICY_MAX_HEADERS */
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

/* The header block's index; a block longer than POLICY_MAX_HEADERS fields
 * is indexed up to it and marks the evaluation incomplete. */
static int policy__index(struct policy__eval *e) {
  const struct policy_input *in = e->in;
  e->fields = e->inline_fields;
  size_t n = mime_header_index(in->data, in->len, e->fields, POLICY__FIELDS_INLINE);
  if (n > POLICY__FIELDS_INLINE) {
    size_t want = n < POLICY_MAX_HEADERS ? n : POLICY_MAX_HEADERS;
    if (!(e->fields = malloc(want * sizeof *e->fields))) return SG_ENOMEM;
    mime_header_index(in->data, in->len, e->fields, want);
  }
  e->incomplete = n > POLICY_MAX_HEADERS;
  e->n_fields = n < POLICY_MAX_HEADERS ? n : POLICY_MAX_HEADERS;
  return 0;
}

/* A value the filters may see as it stands in the message: one line,
 * ASCII, no encoded-word.  Leading blanks are skipped either way. */
static bool policy__plain(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c >= 0x80 || c == '\r' || c == '\n' || (c == '=' && i + 1 < n && v[i + 1] == '?')) return false;
  }
  return true;
}

/* Field i's value as the filters see it, and its length: a pointer into
 * the message when it needs no decoding (no copy: most fields), else
 * decoded (RFC 2047, unfolded) once however many conditions ask.  nul:
 * the caller needs a NUL-terminated string (then it is always a copy). */
static const char *policy__value(struct policy__eval *e, size_t i, bool nul, size_t *len) {
  const struct mime_field *f = &e->fields[i];
  const char *v = e->in->data + f->value_off;
  size_t n = f->value_len;
  while (n && (*v == ' ' || *v == '\t')) v++, n--;
  if (!nul && policy__plain(v, n)) {
    *len = n;
    return v;
  }
  if (!e->decoded && !(e->decoded = calloc(e->n_fields, sizeof *e->decoded))) return NULL;
  if (!e->decoded[i]) e->decoded[i] = mimebody_header_decode(e->in->data + f->value_off, f->value_len);
  *len = e->decoded[i] ? strlen(e->decoded[i]) : 0;
  return e->decoded[i];
}

/* The index-th field called name, or SIZE_MAX. */
static size_t policy__find(const struct policy__eval *e, const char *name, size_t index) {
  size_t want = strlen(name);
  int c0 = tolower((unsigned char)name[0]);
  for (size_t i = 0; i < e->n_fields; i++) {
    const struct mime_field *f = &e->fields[i];
    const char *fname = e->in->data + f->name_off;
    if (f->name_len != want || tolower((unsigned char)fname[0]) != c0 || strncasecmp(fname, name, want) != 0)
      continue;
    if (index-- == 0) return i;
  }
  return SIZE_MAX;
}

static const char *policy__header(void *arg, const char *name, size_t index, size_t *len) {
  struct policy__eval *e = arg;
  size_t i = policy__find(e, name, index);
  return i == SIZE_MAX ? NULL : policy__value(e, i, false, len);
}

/* The Subject as a NUL-terminated string (struct filter_msg's subject). */
static const char *policy__subject(struct policy__eval *e) {
  size_t len, i = policy__find(e, "Subject", 0);
  return i == SIZE_MAX ? NULL : policy__value(e, i, true, &len);
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
  for (size_t i = 0; e->decoded && i < e->n_fields; i++) free(e->decoded[i]);
  free(e->decoded);
  if (e->fields != e->inline_fields) free(e->fields);
  mimebody_free(e->body);
}

/* Filters fail closed: when a limit kept part of the message from them
 * (too many header fields, MIME nested too deep, too many parts, too much
 * text), what they did not find may be hidden there, so a message that
 * would be delivered is held in Policy instead (a release delivers it). */
static void policy__fail_closed(struct policy__eval *e, struct policy_result *r) {
  bool body = e->body && mimebody_incomplete(e->body);
  if (!e->incomplete && !body) return;
  for (size_t g = 0; g < r->n_groups; g++) {
    struct policy_outcome *o = &r->groups[g];
    if (o->verdict != POLICY_DELIVER || e->in->released) continue;
    o->verdict = POLICY_QUARANTINE;
    o->quarantine = "Policy";
    snprintf(o->decided_by, sizeof o->decided_by, "%s",
             e->incomplete ? "(limits: more header fields than filters look at)"
                           : "(limits: MIME too deep, too many parts or too much text for filters)");
  }
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

/* Which policies the message's sender (and direction) can select: the
 * same for every recipient, so worked out once.  *out is the caller's. */
static int policy__senders(const struct config *cfg, const struct policy_input *in, bool **out) {
  if (!(*out = malloc((cfg->n_mail_policies ? cfg->n_mail_policies : 1) * sizeof **out))) return SG_ENOMEM;
  for (size_t i = 0; i < cfg->n_mail_policies; i++) {
    const struct config_mail_policy *p = &cfg->mail_policies[i];
    (*out)[i] = p->direction == in->direction && policy__any(p->senders, p->n_senders, in->sender);
  }
  return 0;
}

/* The index of rcpt's mail policy in cfg, or cfg->n_mail_policies for the
 * implicit default.  "default" is tried last wherever it is written. */
static size_t policy__of(const struct config *cfg, const bool *sender_ok, const char *rcpt) {
  size_t dflt = cfg->n_mail_policies;
  for (size_t i = 0; i < cfg->n_mail_policies; i++) {
    const struct config_mail_policy *p = &cfg->mail_policies[i];
    if (!sender_ok[i]) continue;
    if (!strcmp(p->name, "default")) dflt = i;
    else if (policy__any(p->recipients, p->n_recipients, rcpt)) return i;
  }
  if (dflt < cfg->n_mail_policies && policy__any(cfg->mail_policies[dflt].recipients,
                                                 cfg->mail_policies[dflt].n_recipients, rcpt))
    return dflt;
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

/* Append ",filter" (cut to fit) to the list of filters that ran. */
static void policy__note(struct policy__acts *a, const char *filter) {
  size_t room = sizeof a->filters - 1 - a->filters_len, n = strlen(filter);
  if (a->filters_len && room) a->filters[a->filters_len++] = ',', room--;
  if (n > room) n = room;
  memcpy(a->filters + a->filters_len, filter, n);
  a->filters_len += n;
  a->filters[a->filters_len] = '\0';
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
 * message.)  Which filters led there does not matter, nor, for a message
 * that is not delivered now, its headers and profile: a release judges it
 * again (and a split there would let one part escape a quarantine). */
static bool policy__same(const struct policy_outcome *a, const struct policy_outcome *b) {
  if (a->verdict != b->verdict || !policy__streq(a->quarantine, b->quarantine)) return false;
  if (a->verdict != POLICY_DELIVER) return true;
  if (a->n_headers != b->n_headers || !policy__streq(a->profile, b->profile)) return false;
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
  if (rc) free(o->headers); /* a fold that failed half way */
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

/* Who the filters judge: the message's original recipients (before a
 * split or a partial delivery), plus any pending one not among them, so a
 * message keeps the outcome it first got.  *u is the caller's (free). */
static int policy__judged(const struct policy_input *in, char ***u, size_t *n_u, size_t *pidx) {
  char *const *all = in->n_all_rcpts ? in->all_rcpts : in->rcpts;
  size_t n_all = in->n_all_rcpts ? in->n_all_rcpts : in->n_rcpts, n = n_all;
  if (!(*u = malloc((n_all + in->n_rcpts) * sizeof **u))) return SG_ENOMEM;
  memcpy(*u, all, n_all * sizeof **u);
  for (size_t i = 0; i < in->n_rcpts; i++) {
    size_t j = 0;
    while (j < n && strcmp((*u)[j], in->rcpts[i]) != 0) j++;
    if (j == n) (*u)[n++] = in->rcpts[i];
    pidx[i] = j;
  }
  *n_u = n;
  return 0;
}

/* Recipients grouped by mail policy, each group evaluated (with all its
 * judged recipients in rcpt-to) and placed for its pending recipients. */
static int policy__groups(const struct config *cfg, struct policy__eval *e, struct filter_msg *m,
                          const struct policy__acts *base, bool go_on, char **u, size_t n_u, const size_t *pidx,
                          struct policy_result *r) {
  const struct policy_input *in = e->in;
  size_t *pol = malloc(n_u * sizeof *pol), *idx = malloc(in->n_rcpts * sizeof *idx);
  char **members = malloc(n_u * sizeof *members);
  bool *done = calloc(n_u, sizeof *done), *sender_ok = NULL;
  int rc = pol && idx && members && done ? policy__senders(cfg, in, &sender_ok) : SG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n_u; i++) pol[i] = policy__of(cfg, sender_ok, u[i]);
  for (size_t i = 0; rc == 0 && i < n_u; i++) {
    if (done[i]) continue;
    size_t n = 0, k = 0;
    for (size_t j = i; j < n_u; j++)
      if (!done[j] && pol[j] == pol[i]) done[j] = true, members[n++] = u[j];
    for (size_t p = 0; p < in->n_rcpts; p++)
      if (pol[pidx[p]] == pol[i]) idx[k++] = p;
    if (k == 0) continue; /* all of them delivered already */
    struct policy_outcome o;
    rc = policy__group(cfg, m, base, go_on, pol[i], members, n, in->released, &o);
    if (rc == 0) policy__place(r, &o, idx, k);
  }
  free(pol), free(idx), free(members), free(done), free(sender_ok);
  return rc;
}

int policy_evaluate(const struct config *cfg, const struct policy_input *in, struct policy_result *out) {
  if (!cfg || !in || !out || !in->data || in->n_rcpts == 0) return SG_EINVAL;
  *out = (struct policy_result){0};
  struct policy__eval *e = malloc(sizeof *e); /* not calloc: the inline index need not be zeroed */
  out->groups = calloc(in->n_rcpts, sizeof *out->groups);
  out->group_of = calloc(in->n_rcpts, sizeof *out->group_of);
  if (!e || !out->groups || !out->group_of) {
    free(e);
    policy_result_free(out);
    return SG_ENOMEM;
  }
  e->in = in, e->decoded = NULL, e->body = NULL, e->body_failed = false; /* the rest: policy__index */
  if (policy__index(e) != 0) {
    free(e);
    policy_result_free(out);
    return SG_ENOMEM;
  }
  struct filter_msg m = {.scratch = filter_scratch_new(), .subject = policy__subject(e), .mail_from = in->sender,
                         .header = policy__header, .attachment = policy__attachment,
                         .body_contains = policy__body_contains, .arg = e, .body_size = in->len,
                         .smime_message = in->smime_message, .smime_verified = in->smime_verified};
  char **u = NULL;
  size_t n_u = 0, *pidx = malloc(in->n_rcpts * sizeof *pidx); /* pending -> judged index */
  struct policy__acts base = {0};
  bool go_on = true;
  int rc = pidx ? policy__judged(in, &u, &n_u, pidx) : SG_ENOMEM;
  m.rcpts = u;
  m.n_rcpts = n_u;
  if (rc == 0) rc = policy__message_filters(cfg, &m, &base, &go_on);
  if (rc == 0) rc = policy__groups(cfg, e, &m, &base, go_on, u, n_u, pidx, out);
  if (rc == 0) policy__fail_closed(e, out);
  out->used_body = e->body != NULL;
  filter_scratch_free(m.scratch);
  free(u);
  free(pidx);
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
