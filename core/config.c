/*
 * config - see config.h.
 *
 * The file is parsed with libyaml's document API, then walked by a small
 * table-driven reader: each mapping the file may contain is described by a
 * table of fields (key, type, where the value goes, range, whether it is
 * required).  parse_map() applies a table to a mapping in three passes:
 * first every key is checked (unknown keys and duplicates are errors at
 * their own line), then required keys, then values in table order.  Table
 * order matters at the top level: sections that are referred to by name
 * (flow_policies, sending_profiles, content_filters) are read before the
 * sections that refer to them, so references are checked as they are read
 * and the error points at the referring line.
 *
 * Nothing is published until the whole file has been validated; on any
 * error the partial struct is freed.  Every allocation hangs off the
 * struct config as soon as it is made, so one free routine handles both
 * the partial and the complete case.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/filter.h"
#include "core/log.h"
#include "core/quarantine.h"
#include "core/sgerr.h"

/* Enum fields are written through an int pointer by the generic reader. */
_Static_assert(sizeof(enum config_tls) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_direction) == sizeof(int), "enum size");

/* A config file larger than this is a mistake, not a configuration. */
#define CONFIG_MAX_FILE ((off_t)16 * 1024 * 1024)
#define KIB 1024ull
#define MIB (1024ull * 1024)
#define GIB (1024ull * 1024 * 1024)
#define SEC 1000ull
#define MINUTE (60 * SEC)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)

/* ------------------------------------------------------------------------
 * Parse helpers shared by the public API and the YAML reader.  The
 * internal forms explain what was wrong through *why so that config
 * errors can say more than "invalid".
 */

/* Decimal digits only: no sign, no spaces, no 0x.  Stops at the first
 * non-digit (*end) so callers can read a unit suffix. */
static int parse_digits(const char *s, uint64_t *out, const char **end, const char **why) {
  uint64_t v = 0;
  const char *p = s;
  if (!isdigit((unsigned char)*p)) {
    *why = (*p == '-') ? "must not be negative" : "must start with a decimal number";
    return SG_EINVAL;
  }
  for (; isdigit((unsigned char)*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) {
      *why = "is too large";
      return SG_EINVAL;
    }
    v = v * 10 + d;
  }
  *out = v;
  *end = p;
  return 0;
}

static int duration_parse(const char *s, uint64_t *ms_out, const char **why) {
  static const struct { const char *unit; uint64_t ms; } units[] = {
      {"", SEC}, {"ms", 1}, {"s", SEC}, {"m", MINUTE}, {"h", HOUR}, {"d", DAY}};
  uint64_t n;
  const char *p;
  if (!s || parse_digits(s, &n, &p, why)) return SG_EINVAL;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(p, units[i].unit) != 0) continue;
    if (n > UINT64_MAX / units[i].ms) {
      *why = "is too large";
      return SG_EINVAL;
    }
    *ms_out = n * units[i].ms;
    return 0;
  }
  *why = "has an unknown unit (use ms, s, m, h or d)";
  return SG_EINVAL;
}

static int size_parse(const char *s, uint64_t *bytes_out, const char **why) {
  uint64_t n, mul = 1;
  const char *p;
  if (!s || parse_digits(s, &n, &p, why)) return SG_EINVAL;
  switch (toupper((unsigned char)*p)) {
    case 'K': mul = KIB; p++; break;
    case 'M': mul = MIB; p++; break;
    case 'G': mul = GIB; p++; break;
    default: break;
  }
  if (toupper((unsigned char)*p) == 'B') p++; /* "50MB" and "100B" read fine */
  if (*p) {
    *why = "has an unknown unit (use K, M or G)";
    return SG_EINVAL;
  }
  if (n > UINT64_MAX / mul) {
    *why = "is too large";
    return SG_EINVAL;
  }
  *bytes_out = n * mul;
  return 0;
}

int config_parse_duration(const char *s, uint64_t *ms_out) {
  const char *why;
  return duration_parse(s, ms_out, &why);
}

int config_parse_size(const char *s, uint64_t *bytes_out) {
  const char *why;
  return size_parse(s, bytes_out, &why);
}

/* Clear the bits past the prefix so that "10.1.2.3/8" means 10.0.0.0/8. */
static void cidr_mask(struct config_cidr *c) {
  unsigned bytes = c->family == AF_INET ? 4 : 16;
  for (unsigned i = 0; i < bytes; i++) {
    unsigned keep = c->prefix > i * 8 ? c->prefix - i * 8 : 0;
    if (keep < 8) c->addr[i] &= (uint8_t)(0xff00u >> keep);
  }
}

static int cidr_parse(const char *s, struct config_cidr *out, const char **why) {
  char host[INET6_ADDRSTRLEN + 1];
  const char *slash = s ? strchr(s, '/') : NULL;
  size_t hlen = s ? (slash ? (size_t)(slash - s) : strlen(s)) : 0;
  struct config_cidr c = {0};
  *why = "is not an IPv4 or IPv6 address";
  if (hlen == 0 || hlen >= sizeof host) return SG_EINVAL;
  memcpy(host, s, hlen);
  host[hlen] = '\0';
  if (inet_pton(AF_INET, host, c.addr) == 1) c.family = AF_INET;
  else if (inet_pton(AF_INET6, host, c.addr) == 1) c.family = AF_INET6;
  else return SG_EINVAL;
  unsigned maxp = c.family == AF_INET ? 32 : 128;
  c.prefix = maxp;
  if (slash) {
    uint64_t p;
    const char *end;
    if (parse_digits(slash + 1, &p, &end, why) || *end || p > maxp) {
      *why = c.family == AF_INET ? "has a bad prefix length (0..32)"
                                 : "has a bad prefix length (0..128)";
      return SG_EINVAL;
    }
    c.prefix = (unsigned)p;
  }
  cidr_mask(&c);
  *out = c;
  return 0;
}

int config_parse_cidr(const char *s, struct config_cidr *out) {
  const char *why;
  return cidr_parse(s, out, &why);
}

/* RFC 1123 host name: labels of letters, digits and inner hyphens. */
static bool valid_domain(const char *s) {
  size_t len = strlen(s), label = 0;
  if (len == 0 || len > 253) return false;
  for (size_t i = 0; i <= len; i++) {
    char ch = s[i];
    if (ch == '.' || ch == '\0') {
      if (label == 0 || label > 63 || s[i - 1] == '-') return false;
      label = 0;
    } else if (isalnum((unsigned char)ch) || ch == '-') {
      if (label == 0 && ch == '-') return false;
      label++;
    } else {
      return false;
    }
  }
  return true;
}

/* Split "host:port" / "[v6]:port"; host_out gets a NUL-terminated copy. */
static int hostport_split(const char *s, char *host_out, size_t cap, const char **port,
                          bool *bracketed, const char **why) {
  const char *h = s, *colon;
  size_t hlen;
  *bracketed = (s[0] == '[');
  if (*bracketed) {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':') return *why = "needs the form [v6-address]:port", SG_EINVAL;
    h = s + 1;
    hlen = (size_t)(close - h);
    colon = close + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon) return *why = "needs a port (host:port)", SG_EINVAL;
    if (memchr(s, ':', (size_t)(colon - s)))
      return *why = "is an IPv6 address without brackets (write [::1]:25)", SG_EINVAL;
    hlen = (size_t)(colon - s);
  }
  if (hlen == 0 || hlen >= cap) return *why = "has an empty or overlong host", SG_EINVAL;
  memcpy(host_out, h, hlen);
  host_out[hlen] = '\0';
  *port = colon + 1;
  return 0;
}

static int hostport_parse(const char *s, struct config_hostport *out, const char **why) {
  char host[256];
  const char *port, *end;
  bool v6;
  uint64_t p;
  unsigned char bin[16];
  if (!s) return *why = "is empty", SG_EINVAL;
  if (hostport_split(s, host, sizeof host, &port, &v6, why)) return SG_EINVAL;
  if (parse_digits(port, &p, &end, why) || *end || p < 1 || p > 65535)
    return *why = "has a bad port (1..65535)", SG_EINVAL;
  if (v6 && inet_pton(AF_INET6, host, bin) != 1)
    return *why = "has a bad IPv6 address", SG_EINVAL;
  /* All digits and dots means the user meant an IPv4 address. */
  if (!v6 && strspn(host, "0123456789.") == strlen(host) && inet_pton(AF_INET, host, bin) != 1)
    return *why = "has a bad IPv4 address", SG_EINVAL;
  if (!v6 && !valid_domain(host)) return *why = "has a bad host name", SG_EINVAL;
  char *copy = strdup(host);
  if (!copy) return *why = "out of memory", SG_ENOMEM;
  out->host = copy;
  out->port = (uint16_t)p;
  return 0;
}

int config_parse_hostport(const char *s, struct config_hostport *out) {
  const char *why;
  return hostport_parse(s, out, &why);
}

/* A v4-mapped IPv6 network (::ffff:0:0/96 and narrower) is an IPv4 one. */
static struct config_cidr cidr_canonical(const struct config_cidr *c) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  struct config_cidr r = *c;
  if (c->family == AF_INET6 && c->prefix >= 96 && memcmp(c->addr, mapped, 12) == 0) {
    memset(&r, 0, sizeof r);
    r.family = AF_INET;
    memcpy(r.addr, c->addr + 12, 4);
    r.prefix = c->prefix - 96;
  }
  return r;
}

bool config_cidr_match(const struct config_cidr *cidr, const struct sockaddr *sa) {
  struct config_cidr a = {0}, net;
  if (!cidr || !sa) return false;
  if (sa->sa_family == AF_INET) {
    a.family = AF_INET;
    memcpy(a.addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    a.prefix = 32;
  } else if (sa->sa_family == AF_INET6) {
    a.family = AF_INET6;
    memcpy(a.addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    a.prefix = 128;
  } else {
    return false;
  }
  /* Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d. */
  a = cidr_canonical(&a);
  net = cidr_canonical(cidr);
  if (a.family != net.family) return false;
  a.prefix = net.prefix;
  cidr_mask(&a);
  return memcmp(a.addr, net.addr, a.family == AF_INET ? 4 : 16) == 0;
}

unsigned config_effective_shards(const struct config *c) {
  if (c && c->shards) return c->shards;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) return 1;
  return n > 256 ? 256 : (unsigned)n;
}

/* ------------------------------------------------------------------------
 * Reference counting and freeing.
 */

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

static void free_listener(struct config_listener *l) {
  free(l->name);
  free(l->address.host);
  free(l->flow_policy);
  free(l->next_hop.addr.host);
  free(l->next_hop.ca_file);
  free(l->relay_from);
  free_strv(l->local_domains, l->n_local_domains);
  free(l->tls_certificate);
  free(l->sending_profile);
}

static void free_sections(struct config *c) {
  for (size_t i = 0; i < c->n_listeners; i++) free_listener(&c->listeners[i]);
  free(c->listeners);
  for (size_t i = 0; i < c->n_sending_profiles; i++) {
    free(c->sending_profiles[i].name);
    free(c->sending_profiles[i].signing_certificate);
  }
  free(c->sending_profiles);
  for (size_t i = 0; i < c->n_flow_policies; i++) free(c->flow_policies[i].name);
  free(c->flow_policies);
  for (size_t i = 0; i < c->n_content_filters; i++) {
    struct config_content_filter *f = &c->content_filters[i];
    free(f->name);
    free(f->condition);
    free_strv(f->actions, f->n_actions);
    filter_cond_free(f->cond);
    for (size_t k = 0; f->parsed && k < f->n_actions; k++) filter_action_clear(&f->parsed[k]);
    free(f->parsed);
  }
  free(c->content_filters);
  for (size_t i = 0; i < c->n_mail_policies; i++) {
    struct config_mail_policy *p = &c->mail_policies[i];
    free(p->name);
    free_strv(p->senders, p->n_senders);
    free_strv(p->recipients, p->n_recipients);
    free_strv(p->content_filters, p->n_content_filters);
    free(p->filters);
  }
  free(c->mail_policies);
  for (size_t i = 0; i < c->n_quarantines; i++) free(c->quarantines[i].name);
  free(c->quarantines);
  filter_program_free(c->message_program);
}

static void config_free(struct config *c) {
  free_sections(c);
  free(c->path);
  free(c->dir);
  free(c->hostname);
  free(c->user);
  free(c->spool_dir);
  free(c->key_store);
  free_strv(c->trust_crl_files, c->n_trust_crl_files);
  free(c->log_syslog);
  free(c->hsm.module);
  free(c->hsm.token);
  free(c->hsm.pin_file);
  free(c->hsm.softhsm_conf);
  free(c->hsm.server_user);
  free(c->message_filters);
  free(c->quarantine_dir);
  free(c);
}

struct config *config_ref(struct config *c) {
  if (c) atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

void config_unref(struct config *c) {
  if (!c) return;
  /* acq_rel: every user's reads happen before the last one frees. */
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) config_free(c);
}

#define FIND_BY_NAME(arr, n, name)                                        \
  do {                                                                    \
    if (!c || !(name)) return NULL;                                       \
    for (size_t i = 0; i < (n); i++)                                      \
      if (strcmp((arr)[i].name, (name)) == 0) return &(arr)[i];           \
    return NULL;                                                          \
  } while (0)

const struct config_listener *config_listener_find(const struct config *c, const char *name) {
  FIND_BY_NAME(c->listeners, c->n_listeners, name);
}

const struct config_flow_policy *config_flow_policy_find(const struct config *c,
                                                         const char *name) {
  FIND_BY_NAME(c->flow_policies, c->n_flow_policies, name);
}

const struct config_sending_profile *config_sending_profile_find(const struct config *c,
                                                                 const char *name) {
  FIND_BY_NAME(c->sending_profiles, c->n_sending_profiles, name);
}

struct config_quarantine config_quarantine_limits(const struct config *c, const char *name) {
  for (size_t i = 0; c && name && i < c->n_quarantines; i++)
    if (strcmp(c->quarantines[i].name, name) == 0) return c->quarantines[i];
  return (struct config_quarantine){(char *)name, CONFIG_QUARANTINE_RETENTION_MS, CONFIG_QUARANTINE_MAX_SIZE, 0};
}

static const struct config_content_filter *content_filter_find(const struct config *c, const char *name) {
  FIND_BY_NAME(c->content_filters, c->n_content_filters, name);
}

/* ------------------------------------------------------------------------
 * The YAML reader: context, errors, key paths.
 */

struct ctx {
  yaml_document_t *doc;
  const char *text;  /* the file's bytes: block scalars' indentation for filter errors */
  size_t text_len;
  struct config *c;
  const char *name; /* labels errors: the path as the caller gave it */
  char *err;
  size_t errlen;
  bool failed;
  char path[256]; /* key path of the value being read, "listeners[0].tls" */
  size_t plen;
};

static void set_err(struct ctx *x, int line, const char *msg) {
  if (x->failed) return; /* the first error is the one worth reading */
  x->failed = true;
  if (!x->err || x->errlen == 0) return;
  if (line > 0) snprintf(x->err, x->errlen, "%s:%d: %s", x->name, line, msg);
  else snprintf(x->err, x->errlen, "%s: %s", x->name, msg);
}

static int node_line(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 1; }

/* "PATH:LINE: KEYPATH: message" */
__attribute__((format(printf, 3, 4)))
static int fail(struct ctx *x, const yaml_node_t *n, const char *fmt, ...) {
  char msg[400], full[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (x->plen) snprintf(full, sizeof full, "%s: %s", x->path, msg);
  else snprintf(full, sizeof full, "%s", msg);
  set_err(x, node_line(n), full);
  return SG_ECONFIG;
}

static int oom(struct ctx *x) {
  set_err(x, 0, "out of memory");
  return SG_ENOMEM;
}

static size_t path_push(struct ctx *x, const char *key) {
  size_t old = x->plen;
  int n = snprintf(x->path + old, sizeof x->path - old, "%s%s", old ? "." : "", key);
  x->plen = (n < 0 || (size_t)n >= sizeof x->path - old) ? sizeof x->path - 1 : old + (size_t)n;
  return old;
}

static size_t path_push_index(struct ctx *x, size_t i) {
  size_t old = x->plen;
  int n = snprintf(x->path + old, sizeof x->path - old, "[%zu]", i);
  x->plen = (n < 0 || (size_t)n >= sizeof x->path - old) ? sizeof x->path - 1 : old + (size_t)n;
  return old;
}

static void path_pop(struct ctx *x, size_t old) {
  x->plen = old;
  x->path[old] = '\0';
}

/* Values from the file are shown in errors, made safe for one log line. */
struct shown { char s[72]; };
static struct shown show(const char *v) {
  struct shown r;
  log_safe(r.s, sizeof r.s, v, strlen(v));
  return r;
}

static const char *node_kind(const yaml_node_t *n) {
  switch (n->type) {
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return n->data.scalar.length ? "a single value" : "an empty value";
  }
}

static yaml_node_t *node_at(struct ctx *x, int index) {
  return yaml_document_get_node(x->doc, index);
}

/* A plain scalar that YAML reads as null: "key:" with nothing after it. */
static bool node_is_null(const yaml_node_t *n) {
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
  const char *s = (const char *)n->data.scalar.value;
  return (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
          !strcmp(s, "NULL"));
}

/* Any scalar; explicit tags other than !!str are refused because the
 * reader does its own typing and a tag would silently mean nothing. */
static int get_scalar(struct ctx *x, yaml_node_t *n, const char **s_out) {
  *s_out = "";
  if (n->type != YAML_SCALAR_NODE)
    return fail(x, n, "expected a single value, got %s", node_kind(n));
  if (n->tag && strcmp((const char *)n->tag, YAML_STR_TAG) != 0)
    return fail(x, n, "YAML tag '%s' is not supported", show((const char *)n->tag).s);
  if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
    return fail(x, n, "value contains a NUL character");
  *s_out = (const char *)n->data.scalar.value;
  return 0;
}

/* A one-line, non-empty string without control characters. */
static int get_string(struct ctx *x, yaml_node_t *n, const char **s_out) {
  int rc = get_scalar(x, n, s_out);
  if (rc) return rc;
  if (node_is_null(n) || !**s_out) return fail(x, n, "needs a value");
  for (const unsigned char *p = (const unsigned char *)*s_out; *p; p++)
    if (*p < 0x20 || *p == 0x7f) return fail(x, n, "value must be one line without control characters");
  return 0;
}

static int dup_into(struct ctx *x, char **dst, const char *s) {
  char *copy = strdup(s);
  if (!copy) return oom(x);
  free(*dst);
  *dst = copy;
  return 0;
}

/* Relative paths in the file are relative to the file's folder. */
static int resolve_path(struct ctx *x, char **dst, const char *p) {
  if (p[0] == '/') return dup_into(x, dst, p);
  size_t n = strlen(x->c->dir) + strlen(p) + 2;
  char *full = malloc(n);
  if (!full) return oom(x);
  snprintf(full, n, "%s/%s", x->c->dir, p);
  free(*dst);
  *dst = full;
  return 0;
}

/* ------------------------------------------------------------------------
 * Field tables.
 */

enum ftype { T_STR, T_NAME, T_PATH, T_TEXT, T_BOOL, T_UINT, T_SIZE, T_DUR, T_ENUM,
             T_HOSTPORT, T_LIST, T_MAP, T_FN };
enum elem { E_STR, E_NAME, E_DOMAIN, E_CIDR, E_PATH };
enum ref { REF_NONE, REF_FLOW, REF_PROFILE, REF_FILTER };

struct field;
typedef int (*field_fn)(struct ctx *x, const struct field *f, yaml_node_t *n, void *base);

struct field {
  const char *key;
  enum ftype type;
  size_t off;                 /* where the value goes, from the table's base */
  bool required;
  uint64_t min, max;          /* T_UINT, T_SIZE, T_DUR (ms); T_LIST: min entries */
  const char *const *names;   /* T_ENUM: names[i] is value i; NULL-terminated */
  enum elem elem;             /* T_LIST */
  size_t off_n;               /* T_LIST: where the count goes */
  enum ref ref;               /* T_NAME and T_LIST of E_NAME: must exist */
  const struct field *sub;    /* T_MAP: same base, nested keys */
  field_fn fn;                /* T_FN */
};

static yaml_node_t *map_get(struct ctx *x, const yaml_node_t *map, const char *key) {
  if (!map || map->type != YAML_MAPPING_NODE) return NULL;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node_at(x, p->key);
    if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
      return node_at(x, p->value);
  }
  return NULL;
}

/* Levenshtein distance, for "did you mean" on unknown keys. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), row[40];
  if (la >= 40 || lb >= 40) return 99;
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[lb];
}

static const struct field *field_find(const struct field *fields, const char *key) {
  for (const struct field *f = fields; f->key; f++)
    if (!strcmp(f->key, key)) return f;
  return NULL;
}

static int unknown_key(struct ctx *x, yaml_node_t *k, const struct field *fields) {
  const char *key = (const char *)k->data.scalar.value, *best = NULL;
  size_t bestd = 3; /* suggest only close misspellings */
  for (const struct field *f = fields; f->key; f++) {
    size_t d = edit_distance(key, f->key);
    if (d < bestd) bestd = d, best = f->key;
  }
  char where[300], hint[80] = "", msg[500];
  if (x->plen) snprintf(where, sizeof where, " in %s", x->path);
  else snprintf(where, sizeof where, " at top level");
  if (best) snprintf(hint, sizeof hint, " (did you mean '%s'?)", best);
  snprintf(msg, sizeof msg, "unknown key '%s'%s%s", show(key).s, where, hint);
  set_err(x, node_line(k), msg);
  return SG_ECONFIG;
}

/* Pass 1: every key is a known scalar and appears once. */
static int check_keys(struct ctx *x, yaml_node_t *map, const struct field *fields) {
  yaml_node_pair_t *start = map->data.mapping.pairs.start;
  for (yaml_node_pair_t *p = start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node_at(x, p->key);
    if (k->type != YAML_SCALAR_NODE) return fail(x, k, "keys must be plain names, got %s", node_kind(k));
    const char *key = (const char *)k->data.scalar.value;
    if (!field_find(fields, key)) return unknown_key(x, k, fields);
    for (yaml_node_pair_t *q = start; q < p; q++) {
      yaml_node_t *k2 = node_at(x, q->key);
      if (!strcmp((const char *)k2->data.scalar.value, key))
        return fail(x, k, "duplicate key '%s' (first at line %d)", show(key).s, node_line(k2));
    }
  }
  return 0;
}

static int parse_field(struct ctx *x, const struct field *f, yaml_node_t *n, void *base);

/* Apply a field table to a mapping; see the file comment for the passes. */
static int parse_map(struct ctx *x, yaml_node_t *map, const struct field *fields, void *base) {
  if (map->type != YAML_MAPPING_NODE)
    return fail(x, map, "expected a mapping of keys, got %s", node_kind(map));
  int rc = check_keys(x, map, fields);
  if (rc) return rc;
  for (const struct field *f = fields; f->key; f++)
    if (f->required && !map_get(x, map, f->key))
      return fail(x, map, "missing required key '%s'", f->key);
  for (const struct field *f = fields; f->key; f++) {
    yaml_node_t *v = map_get(x, map, f->key);
    if (!v) continue;
    size_t old = path_push(x, f->key);
    rc = parse_field(x, f, v, base);
    path_pop(x, old);
    if (rc) return rc;
  }
  return 0;
}

#define AT(base, off, type) ((type *)(void *)((char *)(base) + (off)))

static bool ref_exists(struct ctx *x, enum ref ref, const char *name) {
  switch (ref) {
    case REF_FLOW: return config_flow_policy_find(x->c, name) != NULL;
    case REF_PROFILE: return config_sending_profile_find(x->c, name) != NULL;
    case REF_FILTER: return content_filter_find(x->c, name) != NULL;
    default: return true;
  }
}

static int check_ref(struct ctx *x, enum ref ref, yaml_node_t *n, const char *name) {
  static const char *const what[] = {"", "flow policy", "sending profile", "content filter"};
  static const char *const section[] = {"", "flow_policies", "sending_profiles", "content_filters"};
  if (ref_exists(x, ref, name)) return 0;
  return fail(x, n, "no %s named '%s' (define it under %s)", what[ref], show(name).s, section[ref]);
}

/* Names label objects in logs and sealctl output; keep them plain. */
static int check_name(struct ctx *x, yaml_node_t *n, const char *s) {
  size_t len = strlen(s);
  bool ok = len <= 64 && isalnum((unsigned char)s[0]);
  for (size_t i = 0; ok && i < len; i++)
    ok = isalnum((unsigned char)s[i]) || strchr("._-", s[i]);
  if (!ok) return fail(x, n, "bad name '%s' (letters, digits, '.', '_', '-'; at most 64)", show(s).s);
  return 0;
}

static int parse_string_value(struct ctx *x, const struct field *f, yaml_node_t *n, char **dst) {
  const char *s;
  int rc = get_string(x, n, &s);
  if (!rc && f->type == T_NAME) rc = check_name(x, n, s);
  if (!rc && f->ref) rc = check_ref(x, f->ref, n, s);
  if (rc) return rc;
  return f->type == T_PATH ? resolve_path(x, dst, s) : dup_into(x, dst, s);
}

/* Block scalars keep their text verbatim, newlines included. */
static int parse_text(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  const char *s;
  int rc = get_scalar(x, n, &s);
  if (rc) return rc;
  if (node_is_null(n) || !*s) return fail(x, n, "needs a value");
  return dup_into(x, AT(base, f->off, char *), s);
}

static int parse_bool(struct ctx *x, yaml_node_t *n, bool *dst) {
  static const char *const yaml11[] = {"yes", "no", "on", "off", "y", "n", NULL};
  const char *s;
  int rc = get_scalar(x, n, &s);
  if (rc) return rc;
  if (node_is_null(n)) return fail(x, n, "needs a value (true or false)");
  bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  if (plain && !strcmp(s, "true")) return *dst = true, 0;
  if (plain && !strcmp(s, "false")) return *dst = false, 0;
  for (size_t i = 0; yaml11[i]; i++)
    if (!strcasecmp(s, yaml11[i]))
      return fail(x, n, "'%s' is not a boolean in YAML 1.2: use true or false", show(s).s);
  if (!plain) return fail(x, n, "expected true or false, got a quoted string");
  return fail(x, n, "expected true or false, got '%s'", show(s).s);
}

static int parse_uint(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  const char *s, *end, *why = "";
  uint64_t v;
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return fail(x, n, "expected a number, got a quoted string (write it without quotes)");
  if (parse_digits(s, &v, &end, &why) || *end)
    return fail(x, n, "expected a decimal integer, got '%s'", show(s).s);
  if (v < f->min || v > f->max)
    return fail(x, n, "%llu is out of range %llu..%llu", (unsigned long long)v,
                (unsigned long long)f->min, (unsigned long long)f->max);
  *AT(base, f->off, unsigned) = (unsigned)v;
  return 0;
}

/* Render a byte count or milliseconds the way the user would write it. */
static void show_amount(char *out, size_t cap, uint64_t v, bool dur) {
  static const struct { const char *u; uint64_t m; } sz[] = {{"G", GIB}, {"M", MIB}, {"K", KIB}},
      du[] = {{"d", DAY}, {"h", HOUR}, {"m", MINUTE}, {"s", SEC}};
  size_t n = dur ? 4 : 3;
  for (size_t i = 0; i < n; i++) {
    uint64_t m = dur ? du[i].m : sz[i].m;
    if (v && v % m == 0) {
      snprintf(out, cap, "%llu%s", (unsigned long long)(v / m), dur ? du[i].u : sz[i].u);
      return;
    }
  }
  snprintf(out, cap, "%llu%s", (unsigned long long)v, dur ? "ms" : "");
}

static int parse_amount(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  bool dur = f->type == T_DUR;
  const char *s, *why = "";
  uint64_t v;
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  rc = dur ? duration_parse(s, &v, &why) : size_parse(s, &v, &why);
  if (rc)
    return fail(x, n, "invalid %s '%s': %s (use e.g. \"%s\")", dur ? "duration" : "size",
                show(s).s, why, dur ? "30s" : "50M");
  if (v < f->min || v > f->max) {
    char lo[32], hi[32];
    show_amount(lo, sizeof lo, f->min, dur);
    show_amount(hi, sizeof hi, f->max, dur);
    return fail(x, n, "'%s' is out of range %s..%s", show(s).s, lo, hi);
  }
  *AT(base, f->off, uint64_t) = v;
  return 0;
}

static int parse_enum(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  const char *s;
  char list[160] = "";
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  for (int i = 0; f->names[i]; i++) {
    if (!strcmp(s, f->names[i])) return *AT(base, f->off, int) = i, 0;
    size_t used = strlen(list);
    snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", f->names[i]);
  }
  return fail(x, n, "invalid value '%s' (one of: %s)", show(s).s, list);
}

static int parse_hostport_field(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  struct config_hostport *hp = AT(base, f->off, struct config_hostport);
  const char *s, *why = "";
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  free(hp->host);
  hp->host = NULL;
  rc = hostport_parse(s, hp, &why);
  if (rc == SG_ENOMEM) return oom(x);
  if (rc) return fail(x, n, "invalid address '%s': %s", show(s).s, why);
  return 0;
}

/* ------------------------------------------------------------------------
 * Lists of scalars.
 */

static int list_items(struct ctx *x, const struct field *f, yaml_node_t *n, size_t *count) {
  if (n->type != YAML_SEQUENCE_NODE) return fail(x, n, "expected a list, got %s", node_kind(n));
  *count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
  if (*count < f->min) return fail(x, n, "needs at least %llu entr%s", (unsigned long long)f->min, f->min == 1 ? "y" : "ies");
  return 0;
}

static int list_string(struct ctx *x, const struct field *f, yaml_node_t *n, char **dst) {
  const char *s;
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  if (f->elem == E_NAME && ((rc = check_name(x, n, s)) || (rc = check_ref(x, f->ref, n, s))))
    return rc;
  if (f->elem == E_PATH) return resolve_path(x, dst, s);
  if (dup_into(x, dst, s)) return SG_ENOMEM;
  if (f->elem != E_DOMAIN) return 0;
  for (char *p = *dst; *p; p++) *p = (char)tolower((unsigned char)*p);
  if (!valid_domain(*dst)) return fail(x, n, "'%s' is not a valid domain name", show(s).s);
  return 0;
}

static int list_cidr(struct ctx *x, yaml_node_t *n, struct config_cidr *dst) {
  const char *s, *why = "";
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  if (cidr_parse(s, dst, &why)) return fail(x, n, "invalid network '%s': %s", show(s).s, why);
  return 0;
}

static int parse_list(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  size_t count = 0, esize = f->elem == E_CIDR ? sizeof(struct config_cidr) : sizeof(char *);
  int rc = list_items(x, f, n, &count);
  if (rc || count == 0) return rc;
  void *arr = calloc(count, esize);
  if (!arr) return oom(x);
  *AT(base, f->off, void *) = arr; /* owned by the config from here on */
  *AT(base, f->off_n, size_t) = count;
  for (size_t i = 0; i < count && !rc; i++) {
    yaml_node_t *item = node_at(x, n->data.sequence.items.start[i]);
    size_t old = path_push_index(x, i);
    if (f->elem == E_CIDR) rc = list_cidr(x, item, (struct config_cidr *)arr + i);
    else rc = list_string(x, f, item, (char **)arr + i);
    path_pop(x, old);
  }
  return rc;
}

static int parse_field(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  switch (f->type) {
    case T_STR:
    case T_NAME:
    case T_PATH: return parse_string_value(x, f, n, AT(base, f->off, char *));
    case T_TEXT: return parse_text(x, f, n, base);
    case T_BOOL: return parse_bool(x, n, AT(base, f->off, bool));
    case T_UINT: return parse_uint(x, f, n, base);
    case T_SIZE:
    case T_DUR: return parse_amount(x, f, n, base);
    case T_ENUM: return parse_enum(x, f, n, base);
    case T_HOSTPORT: return parse_hostport_field(x, f, n, base);
    case T_LIST: return parse_list(x, f, n, base);
    case T_MAP: return parse_map(x, n, f->sub, base);
    case T_FN: return f->fn(x, f, n, base);
  }
  return fail(x, n, "internal error: unhandled field type");
}

/* ------------------------------------------------------------------------
 * Lists of records (listeners, profiles, policies, filters).
 */

struct rec_spec {
  size_t size;
  const struct field *fields;
  size_t arr_off, n_off;  /* array and count in struct config */
  size_t name_off, line_off;
  size_t min;             /* fewest entries */
  void (*init)(void *rec);
  int (*check)(struct ctx *x, yaml_node_t *map, void *rec, size_t idx);
};

static int unique_name(struct ctx *x, const struct rec_spec *s, char *arr, size_t i, yaml_node_t *map) {
  const char *name = *AT(arr + i * s->size, s->name_off, char *);
  for (size_t j = 0; j < i; j++) {
    char *other = arr + j * s->size;
    if (!strcmp(*AT(other, s->name_off, char *), name))
      return fail(x, map_get(x, map, "name"), "duplicate name '%s' (first at line %d)",
                  show(name).s, *AT(other, s->line_off, int));
  }
  return 0;
}

static int parse_records(struct ctx *x, const struct rec_spec *s, yaml_node_t *n) {
  if (n->type != YAML_SEQUENCE_NODE) return fail(x, n, "expected a list, got %s", node_kind(n));
  size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
  if (count < s->min) return fail(x, n, "needs at least %zu entr%s", s->min, s->min == 1 ? "y" : "ies");
  if (count == 0) return 0;
  char *arr = calloc(count, s->size);
  if (!arr) return oom(x);
  *AT(x->c, s->arr_off, void *) = arr;
  *AT(x->c, s->n_off, size_t) = count;
  for (size_t i = 0; i < count; i++) {
    yaml_node_t *item = node_at(x, n->data.sequence.items.start[i]);
    void *rec = arr + i * s->size;
    size_t old = path_push_index(x, i);
    if (s->init) s->init(rec);
    *AT(rec, s->line_off, int) = node_line(item);
    int rc = parse_map(x, item, s->fields, rec);
    if (!rc) rc = unique_name(x, s, arr, i, item);
    if (!rc && s->check) rc = s->check(x, item, rec, i);
    path_pop(x, old);
    if (rc) return rc;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Sections.
 */

static const char *const DIRECTIONS[] = {"outgoing", "incoming", NULL};
static const char *const LISTENER_TLS[] = {"none", "may", "required", NULL};
static const char *const NEXT_HOP_TLS[] = {"none", "may", "required", "verify", NULL};
const char *const config_mode_names[] = {"sign", "encrypt", "sign-encrypt", "triple", NULL};
const char *const config_sign_mode_names[] = {"detached", "opaque", NULL};
const char *const config_missing_key_names[] = {"bounce", "drop", "split", NULL};
const char *const config_encryption_names[] = {"auto", "aes256-cbc", "aes256-gcm", NULL};
const char *const config_signature_names[] = {"rsa-pkcs1", "rsa-pss", NULL};
const char *const config_key_transport_names[] = {"rsa-pkcs1", "rsa-oaep", NULL};
static const char *const REVOCATIONS[] = {"soft", "hard", NULL};

#define REQ .required = true
#define F(k, t, T, m, ...) {.key = k, .type = t, .off = offsetof(T, m), __VA_ARGS__}
#define FLIST(k, T, m, e, ...) \
  {.key = k, .type = T_LIST, .off = offsetof(T, m), .off_n = offsetof(T, n_##m), .elem = e, __VA_ARGS__}

/* Flow policies. */
static const struct field HARVEST_FIELDS[] = {
    F("enabled", T_BOOL, struct config_flow_policy, harvest_enabled),
    F("on_failed_verification", T_BOOL, struct config_flow_policy, harvest_on_failed_verification),
    F("updated_keys", T_BOOL, struct config_flow_policy, harvest_updated_keys),
    /* Extensions (docs/CONFIG.md): R18's defaults made explicit. */
    F("expired", T_BOOL, struct config_flow_policy, harvest_expired),
    F("self_signed", T_BOOL, struct config_flow_policy, harvest_self_signed),
    {0}};

static const struct field FLOW_FIELDS[] = {
    F("name", T_NAME, struct config_flow_policy, name, REQ),
    F("smime_decrypt_verify", T_BOOL, struct config_flow_policy, smime_decrypt_verify),
    F("keep_signature", T_BOOL, struct config_flow_policy, keep_signature),
    {.key = "harvest", .type = T_MAP, .sub = HARVEST_FIELDS},
    /* Extension (docs/CONFIG.md): a signer whose revocation status is
     * unknown (no CRL for its issuer) passes (soft) or not (hard). */
    F("revocation", T_ENUM, struct config_flow_policy, revocation, .names = REVOCATIONS),
    {0}};

static void flow_init(void *rec) { ((struct config_flow_policy *)rec)->keep_signature = true; }

static const struct rec_spec FLOW_SPEC = {
    .size = sizeof(struct config_flow_policy), .fields = FLOW_FIELDS,
    .arr_off = offsetof(struct config, flow_policies), .n_off = offsetof(struct config, n_flow_policies),
    .name_off = offsetof(struct config_flow_policy, name), .line_off = offsetof(struct config_flow_policy, line),
    .min = 1, .init = flow_init};

static int parse_flow_policies(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  (void)f, (void)base;
  int rc = parse_records(x, &FLOW_SPEC, n);
  if (rc) return rc;
  if (!config_flow_policy_find(x->c, "default"))
    return fail(x, n, "needs a flow policy named 'default'");
  return 0;
}

/* Sending profiles. */
static const struct field PROFILE_FIELDS[] = {
    F("name", T_NAME, struct config_sending_profile, name, REQ),
    F("mode", T_ENUM, struct config_sending_profile, mode, REQ, .names = config_mode_names),
    F("signing_certificate", T_NAME, struct config_sending_profile, signing_certificate),
    F("sign_mode", T_ENUM, struct config_sending_profile, sign_mode, .names = config_sign_mode_names),
    F("missing_key_action", T_ENUM, struct config_sending_profile, missing_key_action, .names = config_missing_key_names),
    F("encryption", T_ENUM, struct config_sending_profile, encryption, .names = config_encryption_names),
    F("signature", T_ENUM, struct config_sending_profile, signature, .names = config_signature_names),
    F("key_transport", T_ENUM, struct config_sending_profile, key_transport, .names = config_key_transport_names),
    {0}};

/* Keys that only mean something when the mode signs (true) or encrypts. */
static const struct { const char *key; bool for_signing; } PROFILE_MODE_KEYS[] = {
    {"signing_certificate", true}, {"sign_mode", true}, {"signature", true},
    {"missing_key_action", false}, {"encryption", false}, {"key_transport", false}};

static int check_profile(struct ctx *x, yaml_node_t *map, void *rec, size_t idx) {
  struct config_sending_profile *p = rec;
  bool signs = p->mode != CONFIG_MODE_ENCRYPT, encrypts = p->mode != CONFIG_MODE_SIGN;
  (void)idx;
  /* A key that does not apply would be silently ignored; refuse it so the
   * reader of the file is never misled about what the profile does. */
  for (size_t i = 0; i < sizeof PROFILE_MODE_KEYS / sizeof PROFILE_MODE_KEYS[0]; i++) {
    bool applies = PROFILE_MODE_KEYS[i].for_signing ? signs : encrypts;
    yaml_node_t *k = map_get(x, map, PROFILE_MODE_KEYS[i].key);
    if (k && !applies)
      return fail(x, k, "%s does not apply to mode %s (it does not %s)", PROFILE_MODE_KEYS[i].key,
                  config_mode_names[p->mode], PROFILE_MODE_KEYS[i].for_signing ? "sign" : "encrypt");
  }
  if (signs && !p->signing_certificate)
    return fail(x, map, "mode %s signs, so it needs signing_certificate", config_mode_names[p->mode]);
  return 0;
}

static const struct rec_spec PROFILE_SPEC = {
    .size = sizeof(struct config_sending_profile), .fields = PROFILE_FIELDS,
    .arr_off = offsetof(struct config, sending_profiles), .n_off = offsetof(struct config, n_sending_profiles),
    .name_off = offsetof(struct config_sending_profile, name), .line_off = offsetof(struct config_sending_profile, line),
    .check = check_profile};

static int parse_profiles(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  (void)f, (void)base;
  return parse_records(x, &PROFILE_SPEC, n);
}

/* Content filters, mail policies and message filters: compiled here
 * (core/filter.h), so an error in a condition or an action rejects the
 * whole file and names the filter, the line and the column. */

/* How many characters stand before a scalar's text on its first line: its
 * column, plus the quote; for a block scalar (|, >) the indentation of its
 * first text line, which libyaml strips, read from the file itself. */
static int scalar_text_column(const struct ctx *x, const yaml_node_t *n) {
  yaml_scalar_style_t st = n->data.scalar.style;
  if (st == YAML_SINGLE_QUOTED_SCALAR_STYLE || st == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
    return (int)n->start_mark.column + 1;
  if (st != YAML_LITERAL_SCALAR_STYLE && st != YAML_FOLDED_SCALAR_STYLE) return (int)n->start_mark.column;
  size_t i = n->start_mark.index;
  while (i < x->text_len && x->text[i] != '\n') i++; /* the rest of the "|" line */
  int indent = 0;
  for (i++; i < x->text_len && x->text[i] == ' '; i++) indent++;
  return indent;
}

static int scalar_text_line(const yaml_node_t *n) {
  yaml_scalar_style_t st = n->data.scalar.style;
  return node_line(n) + (st == YAML_LITERAL_SCALAR_STYLE || st == YAML_FOLDED_SCALAR_STYLE ? 1 : 0);
}

/* A filter error already carries "line L, column C: ..."; a content
 * filter's name is put after the position, where a message filter's
 * stands (fname NULL: already there). */
static int filter_fail(struct ctx *x, int rc, const char *what, const char *fname, const char *msg) {
  char full[1300], named[700];
  if (rc == SG_ENOMEM) return oom(x);
  const char *col = strstr(msg, ", column ");
  const char *after = col ? strstr(col, ": ") : NULL;
  if (fname && after)
    snprintf(named, sizeof named, "%.*s: filter '%s': %s", (int)(after - msg), msg, show(fname).s, after + 2);
  else
    snprintf(named, sizeof named, "%s", msg);
  snprintf(full, sizeof full, "%s%s%s: %s", x->path, x->plen ? ": " : "", what, named);
  set_err(x, 0, full);
  return SG_ECONFIG;
}

/* Checks an action needs beyond its text: the sending profile exists. */
static int check_action(struct ctx *x, const char *filter, const struct filter_action *a) {
  if (a->kind != FILTER_SMIME_GATEWAY && a->kind != FILTER_SMIME_ON_DELIVERY) return 0;
  if (config_sending_profile_find(x->c, a->arg1)) return 0;
  char msg[300];
  snprintf(msg, sizeof msg, "line %d, column %d: filter '%s': no sending profile named '%s'", a->line, a->column,
           show(filter).s, show(a->arg1).s);
  return filter_fail(x, SG_ECONFIG, "actions", NULL, msg);
}

static int check_filter(struct ctx *x, yaml_node_t *map, void *rec, size_t idx) {
  (void)idx;
  struct config_content_filter *f = rec;
  char err[400];
  yaml_node_t *cn = map_get(x, map, "condition");
  int rc = filter_cond_compile(f->condition, scalar_text_line(cn), scalar_text_column(x, cn), &f->cond, err, sizeof err);
  if (rc) return filter_fail(x, rc, "condition", f->name, err);
  f->needs_body = filter_cond_needs_body(f->cond);
  if (!(f->parsed = calloc(f->n_actions, sizeof *f->parsed))) return oom(x);
  yaml_node_t *an = map_get(x, map, "actions");
  for (size_t i = 0; i < f->n_actions; i++) {
    yaml_node_t *item = node_at(x, an->data.sequence.items.start[i]);
    rc = filter_action_parse(f->actions[i], scalar_text_line(item), scalar_text_column(x, item), &f->parsed[i], err,
                             sizeof err);
    if (rc) return filter_fail(x, rc, "actions", f->name, err);
    if ((rc = check_action(x, f->name, &f->parsed[i]))) return rc;
    if (filter_action_is_final(&f->parsed[i]) && i + 1 < f->n_actions) {
      yaml_node_t *next = node_at(x, an->data.sequence.items.start[i + 1]);
      return fail(x, next, "actions: '%s' can never run: '%s' before it is final", show(f->actions[i + 1]).s,
                  show(f->actions[i]).s);
    }
  }
  return 0;
}

static const struct field FILTER_FIELDS[] = {
    F("name", T_NAME, struct config_content_filter, name, REQ),
    F("direction", T_ENUM, struct config_content_filter, direction, REQ, .names = DIRECTIONS),
    F("condition", T_STR, struct config_content_filter, condition, REQ),
    FLIST("actions", struct config_content_filter, actions, E_STR, REQ, .min = 1),
    {0}};

static const struct rec_spec FILTER_SPEC = {
    .size = sizeof(struct config_content_filter), .fields = FILTER_FIELDS,
    .arr_off = offsetof(struct config, content_filters), .n_off = offsetof(struct config, n_content_filters),
    .name_off = offsetof(struct config_content_filter, name), .line_off = offsetof(struct config_content_filter, line),
    .check = check_filter};

static int parse_filters(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  (void)f, (void)base;
  return parse_records(x, &FILTER_SPEC, n);
}

/* Sender and recipient patterns (core/policy.c matches them): "*", an
 * address, "@domain" or "*.domain" (its subdomains). */
static bool address_pattern_ok(const char *s) {
  if (!strcmp(s, "*")) return true;
  const char *at = strchr(s, '@');
  const char *domain = s[0] == '*' && s[1] == '.' ? s + 2 : at ? at + 1 : NULL;
  if (!domain || (s[0] == '*' && at) || (at && strchr(at + 1, '@'))) return false;
  if (at && at != s && at - s > 64) return false;
  for (const char *p = s; p < (at ? at : s); p++)
    if (*p <= ' ' || *p == 0x7f || *p == '<' || *p == '>') return false;
  char low[256];
  size_t n = strlen(domain);
  if (n == 0 || n >= sizeof low) return false;
  for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)domain[i]);
  return valid_domain(low);
}

static int check_policy(struct ctx *x, yaml_node_t *map, void *rec, size_t idx) {
  (void)idx;
  struct config_mail_policy *p = rec;
  static const char *const keys[] = {"senders", "recipients"};
  for (int k = 0; k < 2; k++) {
    char **v = k ? p->recipients : p->senders;
    size_t n = k ? p->n_recipients : p->n_senders;
    yaml_node_t *list = map_get(x, map, keys[k]);
    for (size_t i = 0; i < n; i++)
      if (!address_pattern_ok(v[i]))
        return fail(x, node_at(x, list->data.sequence.items.start[i]),
                    "%s: '%s' is not '*', an address, '@domain' or '*.domain'", keys[k], show(v[i]).s);
  }
  if (p->n_content_filters && !(p->filters = calloc(p->n_content_filters, sizeof *p->filters))) return oom(x);
  yaml_node_t *list = map_get(x, map, "content_filters");
  for (size_t i = 0; i < p->n_content_filters; i++) {
    const struct config_content_filter *f = content_filter_find(x->c, p->content_filters[i]); /* checked: exists */
    if (f->direction != p->direction)
      return fail(x, node_at(x, list->data.sequence.items.start[i]),
                  "content_filters: '%s' is an %s filter, this policy is %s", show(f->name).s,
                  DIRECTIONS[f->direction], DIRECTIONS[p->direction]);
    p->filters[i] = f;
  }
  return 0;
}

static const struct field POLICY_FIELDS[] = {
    F("name", T_NAME, struct config_mail_policy, name, REQ),
    F("direction", T_ENUM, struct config_mail_policy, direction, REQ, .names = DIRECTIONS),
    FLIST("senders", struct config_mail_policy, senders, E_STR, REQ, .min = 1),
    FLIST("recipients", struct config_mail_policy, recipients, E_STR, REQ, .min = 1),
    FLIST("content_filters", struct config_mail_policy, content_filters, E_NAME, .ref = REF_FILTER),
    {0}};

static const struct rec_spec POLICY_SPEC = {
    .size = sizeof(struct config_mail_policy), .fields = POLICY_FIELDS,
    .arr_off = offsetof(struct config, mail_policies), .n_off = offsetof(struct config, n_mail_policies),
    .name_off = offsetof(struct config_mail_policy, name), .line_off = offsetof(struct config_mail_policy, line),
    .check = check_policy};

static int parse_policies(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  (void)f, (void)base;
  return parse_records(x, &POLICY_SPEC, n);
}

/* quarantines: limits per quarantine (extension). */
static int check_quarantine(struct ctx *x, yaml_node_t *map, void *rec, size_t idx) {
  (void)idx;
  const struct config_quarantine *q = rec;
  if (quarantine_name_ok(q->name)) return 0;
  return fail(x, map_get(x, map, "name"), "'%s' is not a quarantine name (1-64 letters, digits, '_', '-' or '.', "
              "not starting with '.')", show(q->name).s);
}

static void quarantine_init(void *rec) {
  struct config_quarantine *q = rec;
  q->retention_ms = CONFIG_QUARANTINE_RETENTION_MS;
  q->max_size = CONFIG_QUARANTINE_MAX_SIZE;
}

static const struct field QUARANTINE_FIELDS[] = {
    F("name", T_STR, struct config_quarantine, name, REQ),
    F("retention", T_DUR, struct config_quarantine, retention_ms, .max = 3650 * DAY),
    F("max_size", T_SIZE, struct config_quarantine, max_size, .max = 1024 * GIB),
    {0}};

static const struct rec_spec QUARANTINE_SPEC = {
    .size = sizeof(struct config_quarantine), .fields = QUARANTINE_FIELDS,
    .arr_off = offsetof(struct config, quarantines), .n_off = offsetof(struct config, n_quarantines),
    .name_off = offsetof(struct config_quarantine, name), .line_off = offsetof(struct config_quarantine, line),
    .init = quarantine_init, .check = check_quarantine};

static int parse_quarantines(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  (void)f, (void)base;
  return parse_records(x, &QUARANTINE_SPEC, n);
}

static int message_action_ok(const char *filter, const struct filter_action *a, void *arg) {
  return check_action(arg, filter, a);
}

/* message_filters: one program, compiled with the file's positions. */
static int compile_message_filters(struct ctx *x, yaml_node_t *mf) {
  struct config *c = x->c;
  char err[400];
  c->message_filters_line = scalar_text_line(mf);
  int rc = filter_program_compile(c->message_filters, c->message_filters_line, scalar_text_column(x, mf),
                                  &c->message_program, err, sizeof err);
  if (rc) return filter_fail(x, rc, "message_filters", NULL, err);
  size_t old = path_push(x, "message_filters");
  rc = filter_program_each_action(c->message_program, message_action_ok, x);
  path_pop(x, old);
  return rc;
}

/* Listeners. */
static const struct field NEXT_HOP_FIELDS[] = {
    F("address", T_HOSTPORT, struct config_next_hop, addr, REQ),
    F("tls", T_ENUM, struct config_next_hop, tls, .names = NEXT_HOP_TLS),
    F("ca_file", T_PATH, struct config_next_hop, ca_file),
    {0}};

static int parse_next_hop(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  struct config_next_hop *nh = AT(base, f->off, struct config_next_hop);
  if (n->type == YAML_SCALAR_NODE) {
    static const struct field addr = F("next_hop", T_HOSTPORT, struct config_next_hop, addr);
    return parse_hostport_field(x, &addr, n, nh);
  }
  int rc = parse_map(x, n, NEXT_HOP_FIELDS, nh);
  if (rc) return rc;
  /* Only verify reads a CA file; accepting it elsewhere would suggest the
   * peer is authenticated when it is not. */
  yaml_node_t *ca = map_get(x, n, "ca_file");
  if (ca && nh->tls != CONFIG_TLS_VERIFY) {
    path_push(x, "ca_file");
    return fail(x, ca, "ca_file only applies with tls: verify");
  }
  return 0;
}

static const struct field LISTENER_FIELDS[] = {
    F("name", T_NAME, struct config_listener, name, REQ),
    F("address", T_HOSTPORT, struct config_listener, address, REQ),
    F("direction", T_ENUM, struct config_listener, direction, REQ, .names = DIRECTIONS),
    F("flow_policy", T_NAME, struct config_listener, flow_policy, .ref = REF_FLOW),
    F("next_hop", T_FN, struct config_listener, next_hop, REQ, .fn = parse_next_hop),
    FLIST("relay_from", struct config_listener, relay_from, E_CIDR),
    FLIST("local_domains", struct config_listener, local_domains, E_DOMAIN),
    F("tls", T_ENUM, struct config_listener, tls, .names = LISTENER_TLS),
    F("tls_certificate", T_NAME, struct config_listener, tls_certificate),
    F("sending_profile", T_NAME, struct config_listener, sending_profile, .ref = REF_PROFILE),
    {0}};

/* Two listeners on one address would fail at bind time; say it here. */
static bool same_address(const struct config_hostport *a, const struct config_hostport *b) {
  unsigned char x[16], y[16];
  if (a->port != b->port) return false;
  if (!strcasecmp(a->host, b->host)) return true;
  if (inet_pton(AF_INET6, a->host, x) == 1 && inet_pton(AF_INET6, b->host, y) == 1)
    return memcmp(x, y, 16) == 0;
  return false;
}

static int listener_defaults(struct ctx *x, yaml_node_t *map, struct config_listener *l) {
  if (!l->flow_policy) {
    if (dup_into(x, &l->flow_policy, "default")) return SG_ENOMEM;
    if (!config_flow_policy_find(x->c, "default"))
      return fail(x, map, "no flow policy named 'default' (define it under flow_policies)");
  }
  if (!map_get(x, map, "relay_from")) {
    l->relay_from = calloc(2, sizeof *l->relay_from);
    if (!l->relay_from) return oom(x);
    l->n_relay_from = 2;
    config_parse_cidr("127.0.0.1/32", &l->relay_from[0]);
    config_parse_cidr("::1/128", &l->relay_from[1]);
  }
  return 0;
}

static int check_listener(struct ctx *x, yaml_node_t *map, void *rec, size_t idx) {
  struct config_listener *l = rec;
  int rc = listener_defaults(x, map, l);
  if (rc) return rc;
  if (l->direction == CONFIG_INCOMING && l->n_local_domains == 0)
    return fail(x, map, "an incoming listener needs local_domains (the domains we accept mail for)");
  /* Errors below concern one key: name it and point at its line. */
  if (l->tls != CONFIG_TLS_NONE && !l->tls_certificate)
    return path_push(x, "tls"), fail(x, map_get(x, map, "tls"), "%s needs tls_certificate",
                                     LISTENER_TLS[l->tls]);
  if (l->tls == CONFIG_TLS_NONE && l->tls_certificate)
    return path_push(x, "tls_certificate"),
           fail(x, map_get(x, map, "tls_certificate"), "has no effect without tls: may or required");
  for (size_t j = 0; j < idx; j++) {
    const struct config_listener *o = &x->c->listeners[j];
    if (same_address(&o->address, &l->address))
      return path_push(x, "address"),
             fail(x, map_get(x, map, "address"), "%s:%u is already used by listener '%s' (line %d)",
                  show(l->address.host).s, l->address.port, o->name, o->line);
  }
  return 0;
}

static const struct rec_spec LISTENER_SPEC = {
    .size = sizeof(struct config_listener), .fields = LISTENER_FIELDS,
    .arr_off = offsetof(struct config, listeners), .n_off = offsetof(struct config, n_listeners),
    .name_off = offsetof(struct config_listener, name), .line_off = offsetof(struct config_listener, line),
    .min = 1, .check = check_listener};

static int parse_listeners(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  (void)f, (void)base;
  return parse_records(x, &LISTENER_SPEC, n);
}

/* Top-level scalars with their own rules. */
static int parse_shards(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  static const struct field num = {.key = "shards", .type = T_UINT, .min = 1, .max = 256,
                                   .off = offsetof(struct config, shards)};
  const char *s;
  (void)f;
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  if (!strcmp(s, "auto")) return ((struct config *)base)->shards = 0, 0;
  if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && isdigit((unsigned char)s[0]))
    return parse_uint(x, &num, n, base);
  return fail(x, n, "expected \"auto\" or a number 1..256, got '%s'", show(s).s);
}

static int parse_hostname(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  const char *s;
  (void)f;
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  /* It goes into the banner and into headers: no spaces, no specials. */
  if (!valid_domain(s)) return fail(x, n, "'%s' is not a valid host name", show(s).s);
  return dup_into(x, &((struct config *)base)->hostname, s);
}

static int parse_module(struct ctx *x, const struct field *f, yaml_node_t *n, void *base) {
  const char *s;
  char **dst = AT(base, f->off, char *);
  int rc = get_string(x, n, &s);
  if (rc) return rc;
  if (!strcmp(s, "remote") || !strcmp(s, "inprocess")) return dup_into(x, dst, s);
  return resolve_path(x, dst, s); /* a PKCS#11 module file */
}

#define DUR(k, m, lo, hi) F(k, T_DUR, struct config, limits.m, .min = (lo), .max = (hi))
static const struct field LIMIT_FIELDS[] = {
    F("message_size", T_SIZE, struct config, limits.message_size, .min = KIB, .max = 2 * GIB),
    F("recipients", T_UINT, struct config, limits.recipients, .min = 1, .max = 100000),
    F("connections_per_client", T_UINT, struct config, limits.connections_per_client, .min = 1, .max = 1000000),
    F("connection_rate_per_client", T_UINT, struct config, limits.connection_rate_per_client, .min = 0, .max = 1000000),
    F("max_hops", T_UINT, struct config, limits.max_hops, .min = 1, .max = 1000),
    /* Durations: at least 100ms (zero would mean "never" or "at once",
     * which no one intends; 100ms still lets tests run fast). */
    DUR("command_timeout", command_timeout_ms, 100, HOUR),
    DUR("idle_timeout", idle_timeout_ms, 100, DAY),
    F("data_line_length", T_SIZE, struct config, limits.data_line_length, .min = 1000, .max = 16 * MIB),
    F("max_errors", T_UINT, struct config, limits.max_errors, .min = 1, .max = 1000),
    F("disk_reserve", T_SIZE, struct config, limits.disk_reserve, .min = 0, .max = UINT64_MAX),
    F("data_memory", T_SIZE, struct config, limits.data_memory, .min = MIB, .max = UINT64_MAX),
    DUR("queue_lifetime", queue_lifetime_ms, 100, 365 * DAY),
    DUR("retry_min", retry_min_ms, 100, DAY),
    DUR("retry_max", retry_max_ms, 100, 7 * DAY),
    F("delivery_connections", T_UINT, struct config, limits.delivery_connections, .min = 1, .max = 1000),
    DUR("connect_timeout", connect_timeout_ms, 100, HOUR),
    DUR("reply_timeout", reply_timeout_ms, 100, HOUR),
    F("harvested_store", T_SIZE, struct config, limits.harvested_store, .min = MIB, .max = UINT64_MAX),
    {0}};

static const struct field HSM_FIELDS[] = {
    F("module", T_FN, struct config, hsm.module, REQ, .fn = parse_module),
    F("token", T_STR, struct config, hsm.token, REQ),
    F("pin_file", T_PATH, struct config, hsm.pin_file, REQ),
    /* Extensions (docs/CONFIG.md). */
    F("softhsm_conf", T_PATH, struct config, hsm.softhsm_conf),
    F("server_user", T_STR, struct config, hsm.server_user),
    F("workers", T_UINT, struct config, hsm.workers, .min = 0, .max = 256),
    {0}};

static const struct field TRUST_FIELDS[] = {
    F("system_cas", T_BOOL, struct config, trust_system_cas),
    /* Extension (docs/CONFIG.md): CRLs (PEM or DER) besides those imported
     * with `sealctl ca import`. */
    FLIST("crl_files", struct config, trust_crl_files, E_PATH),
    {0}};

static const struct field LOG_FIELDS[] = {
    F("syslog", T_NAME, struct config, log_syslog),
    {0}};

/* Table order is parse order: named sections before their users. */
static const struct field TOP_FIELDS[] = {
    {.key = "hostname", .type = T_FN, .fn = parse_hostname},
    {.key = "shards", .type = T_FN, .fn = parse_shards},
    F("user", T_STR, struct config, user),
    F("spool_dir", T_PATH, struct config, spool_dir, REQ),
    F("key_store", T_PATH, struct config, key_store, REQ),
    {.key = "log", .type = T_MAP, .sub = LOG_FIELDS},
    {.key = "limits", .type = T_MAP, .sub = LIMIT_FIELDS},
    {.key = "hsm", .type = T_MAP, .sub = HSM_FIELDS, REQ},
    {.key = "trust", .type = T_MAP, .sub = TRUST_FIELDS},
    {.key = "flow_policies", .type = T_FN, .fn = parse_flow_policies, REQ},
    {.key = "sending_profiles", .type = T_FN, .fn = parse_profiles},
    {.key = "content_filters", .type = T_FN, .fn = parse_filters},
    {.key = "listeners", .type = T_FN, .fn = parse_listeners, REQ},
    {.key = "mail_policies", .type = T_FN, .fn = parse_policies},
    F("message_filters", T_TEXT, struct config, message_filters),
    F("quarantine_dir", T_PATH, struct config, quarantine_dir),
    {.key = "quarantines", .type = T_FN, .fn = parse_quarantines},
    {0}};

static void limits_defaults(struct config_limits *l) {
  l->message_size = 50 * MIB;
  l->recipients = 1000;
  l->connections_per_client = 100;
  l->connection_rate_per_client = 0;
  l->max_hops = 50;
  l->command_timeout_ms = MINUTE;
  l->idle_timeout_ms = 5 * MINUTE;
  l->data_line_length = 65536;
  l->max_errors = 10;
  l->disk_reserve = 100 * MIB;
  l->data_memory = 512 * MIB;
  l->harvested_store = 512 * MIB;
  l->queue_lifetime_ms = 5 * DAY;
  l->retry_min_ms = MINUTE;
  l->retry_max_ms = HOUR;
  l->delivery_connections = 16;
  l->connect_timeout_ms = 30 * SEC;
  l->reply_timeout_ms = 5 * MINUTE;
}

/* Checks that span keys, after every value has been read. */
static int check_top(struct ctx *x, yaml_node_t *root) {
  struct config *c = x->c;
  if (c->limits.retry_min_ms > c->limits.retry_max_ms) {
    yaml_node_t *limits = map_get(x, root, "limits");
    yaml_node_t *at = map_get(x, limits, "retry_min");
    path_push(x, "limits");
    return fail(x, at ? at : limits, "retry_min must not be larger than retry_max");
  }
  yaml_node_t *mf = map_get(x, root, "message_filters");
  int rc = mf && c->message_filters ? compile_message_filters(x, mf) : 0;
  if (rc) return rc;
  if (!c->quarantine_dir && (rc = resolve_path(x, &c->quarantine_dir, "quarantine"))) return rc;
  if (!c->hsm.softhsm_conf) { /* the instance's own SoftHSM2 (sealctl init) */
    size_t n = strlen(c->dir) + sizeof "/hsm/softhsm2.conf";
    if (!(c->hsm.softhsm_conf = malloc(n))) return oom(x);
    snprintf(c->hsm.softhsm_conf, n, "%s/hsm/softhsm2.conf", c->dir);
  }
  if (!c->hostname) {
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) strcpy(host, "localhost");
    return dup_into(x, &c->hostname, host);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Loading.
 */

static int yaml_error(struct ctx *x, const yaml_parser_t *p) {
  char msg[400];
  if (p->error == YAML_MEMORY_ERROR) return oom(x);
  int line = (int)p->problem_mark.line + 1;
  if (p->context)
    snprintf(msg, sizeof msg, "YAML syntax error: %s %s", p->problem ? p->problem : "error", p->context);
  else
    snprintf(msg, sizeof msg, "YAML syntax error: %s", p->problem ? p->problem : "malformed input");
  set_err(x, line, msg);
  return SG_ECONFIG;
}

/* Exactly one document; a second "---" section would be silently ignored. */
static int load_document(struct ctx *x, const char *yaml, size_t len, yaml_document_t *doc) {
  yaml_parser_t p;
  yaml_document_t extra;
  int rc = 0;
  if (!yaml_parser_initialize(&p)) return oom(x);
  yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
  if (!yaml_parser_load(&p, doc)) {
    rc = yaml_error(x, &p);
    yaml_parser_delete(&p);
    return rc;
  }
  if (!yaml_parser_load(&p, &extra)) {
    rc = yaml_error(x, &p);
  } else {
    yaml_node_t *root2 = yaml_document_get_root_node(&extra);
    if (root2) rc = fail(x, root2, "a config file holds one YAML document, found a second");
    yaml_document_delete(&extra);
  }
  yaml_parser_delete(&p);
  if (rc) yaml_document_delete(doc);
  return rc;
}

static int parse_document(struct ctx *x, yaml_document_t *doc) {
  yaml_node_t *root = yaml_document_get_root_node(doc);
  x->doc = doc;
  if (!root) return fail(x, NULL, "the file is empty (expected a mapping of settings)");
  if (root->type != YAML_MAPPING_NODE)
    return fail(x, root, "the file must be a mapping of settings, got %s", node_kind(root));
  limits_defaults(&x->c->limits);
  int rc = parse_map(x, root, TOP_FIELDS, x->c);
  if (!rc) rc = check_top(x, root);
  return rc;
}

static char *absolute(const char *p) {
  char cwd[PATH_MAX];
  if (p && p[0] == '/') return strdup(p);
  if (!getcwd(cwd, sizeof cwd)) return NULL;
  size_t n = strlen(cwd) + (p ? strlen(p) : 0) + 2;
  char *r = malloc(n);
  if (r) snprintf(r, n, "%s%s%s", cwd, p && *p ? "/" : "", p ? p : "");
  return r;
}

static int config_new(struct ctx *x, const char *dir, const char *name) {
  struct config *c = calloc(1, sizeof *c);
  if (!c) return oom(x);
  atomic_init(&c->refs, 1);
  x->c = c;
  c->dir = absolute(dir);
  if (!c->dir) return oom(x);
  if (name[0] == '/') c->path = strdup(name);
  else if ((c->path = malloc(strlen(c->dir) + strlen(name) + 2)))
    sprintf(c->path, "%s/%s", c->dir, name);
  return c->path ? 0 : oom(x);
}

int config_load_string(const char *yaml, size_t len, const char *dir, const char *name,
                       struct config **out, char *err, size_t errlen) {
  struct ctx x = {.name = name ? name : "<config>", .err = err, .errlen = errlen, .text = yaml, .text_len = len};
  yaml_document_t doc;
  if (err && errlen) err[0] = '\0';
  if (out) *out = NULL;
  if (!out || (!yaml && len)) {
    set_err(&x, 0, "invalid arguments");
    return SG_EINVAL;
  }
  int rc = config_new(&x, dir, name ? name : "sealgate.yaml");
  if (!rc) rc = load_document(&x, yaml ? yaml : "", len, &doc);
  if (rc) {
    if (x.c) config_free(x.c);
    return rc;
  }
  rc = parse_document(&x, &doc);
  yaml_document_delete(&doc);
  if (rc) {
    config_free(x.c);
    return rc;
  }
  *out = x.c;
  return 0;
}

/* Read the whole file; a directory or an oversized file is refused. */
static int read_file(const char *path, char **data_out, size_t *len_out, char *msg, size_t cap) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f) return snprintf(msg, cap, "cannot open: %s", strerror(errno)), SG_ECONFIG;
  if (fstat(fileno(f), &st) != 0) st.st_mode = 0;
  if (!S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX_FILE) {
    snprintf(msg, cap, "%s", S_ISREG(st.st_mode) ? "file is too large (over 16M)" : "not a regular file");
    fclose(f);
    return SG_ECONFIG;
  }
  char *data = malloc((size_t)st.st_size + 1);
  size_t n = data ? fread(data, 1, (size_t)st.st_size, f) : 0;
  int bad = !data ? SG_ENOMEM : ferror(f) ? SG_EIO : 0;
  fclose(f);
  if (bad) {
    snprintf(msg, cap, "%s", bad == SG_ENOMEM ? "out of memory" : "read error");
    free(data);
    return bad;
  }
  data[n] = '\0';
  *data_out = data;
  *len_out = n;
  return 0;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen) {
  char msg[256] = "", *data = NULL, *real = NULL;
  size_t len = 0;
  if (out) *out = NULL;
  if (!path || !out) {
    if (err && errlen) snprintf(err, errlen, "config_load: invalid arguments");
    return SG_EINVAL;
  }
  int rc = read_file(path, &data, &len, msg, sizeof msg);
  if (!rc && !(real = realpath(path, NULL))) rc = SG_ENOMEM;
  if (rc) {
    if (err && errlen) snprintf(err, errlen, "%s: %s", path, rc == SG_ENOMEM && !msg[0] ? "out of memory" : msg);
    free(data);
    return rc;
  }
  /* Relative paths in the file resolve against the real folder of the
   * file, so a symlinked config behaves like its target. */
  char *slash = strrchr(real, '/');
  *slash = '\0';
  rc = config_load_string(data, len, real[0] ? real : "/", path, out, err, errlen);
  *slash = '/';
  if (!rc) {
    free((*out)->path);
    (*out)->path = real;
    real = NULL;
  }
  free(real);
  free(data);
  return rc;
}
