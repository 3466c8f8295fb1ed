/*
 * sealctl_profile - `sealctl profile list|show|export|import|search|delete`:
 * the sending profiles (R26) kept in the config file's `sending_profiles:`.
 *
 * Reading commands work on the config as sealgate loads it (defaults
 * filled in).  Changing commands rewrite the config file itself, R35's
 * way, all or nothing:
 *   1. the new text is the old one with only the byte range of the
 *      top-level `sending_profiles` entry replaced (found through libyaml's
 *      event marks), so every other byte, comments included, stays;
 *   2. that text is written to a file beside the config (same folder, so
 *      relative paths resolve alike), loaded with config_load as the
 *      daemon would, and for an import checked against the token as
 *      `config check` does (the daemon refuses a reload otherwise);
 *   3. only then is that very file renamed over the config, keeping the
 *      original's mode and owner.
 * Any error before the rename leaves the config byte-identical.  A running
 * daemon is then asked to reload, as `sealctl reload` does.
 * XXX: two administrators changing profiles at the same moment are not
 * serialised; the later rename wins.
 *
 * Untrusted input: arguments, and the import file (any bytes).  The import
 * file is located with libyaml and validated by config.c's own reader at
 * its own line numbers, so its errors name FILE:LINE as a config error
 * names the config.  Exit codes: 0 success, 1 failed operation, 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/filter.h"
#include "core/sgerr.h"
#include "tools/sealctl.h"

/* An import file or config larger than this is a mistake (config.c's bound). */
#define CTL_PF_MAX_FILE (16u * 1024 * 1024)

/* ---- small helpers ---------------------------------------------------------- */

/* Out of memory in a command line tool: the operation fails before it has
 * changed anything (every change is one rename at the very end). */
static void ctl_pf_oom(void) {
  fprintf(stderr, "sealctl: out of memory\n");
  exit(1);
}

static void ctl_pf_put(struct buf *b, const void *p, size_t n) {
  if (buf_append(b, p, n) != 0) ctl_pf_oom();
}

static void ctl_pf_puts(struct buf *b, const char *s) { ctl_pf_put(b, s, strlen(s)); }

/* A whole stream into out (the caller's; NUL-terminated), bounded. */
static int ctl_pf_read_stream(FILE *in, const char *label, struct buf *out) {
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, in)) > 0) {
    if (out->len + n > CTL_PF_MAX_FILE) {
      fprintf(stderr, "sealctl: %s: larger than 16M\n", label);
      return 1;
    }
    ctl_pf_put(out, chunk, n);
  }
  if (ferror(in)) {
    fprintf(stderr, "sealctl: cannot read %s: %s\n", label, strerror(errno));
    return 1;
  }
  if (buf_reserve(out, 0) != 0) ctl_pf_oom(); /* data non-NULL even for an empty file */
  out->data[out->len] = '\0';
  return 0;
}

/* Exactly n positional words after the subcommand ("-" is a word). */
static int ctl_pf_args(const struct ctl *c, int n, const char *usage) {
  for (int i = 2; i < c->argc; i++)
    if (c->argv[i][0] == '-' && c->argv[i][1]) return ctl_usage_error("unknown option %s", c->argv[i]);
  if (c->argc != 2 + n) return ctl_usage_error("usage: sealctl %s", usage);
  return 0;
}

/* ---- a profile's keys ------------------------------------------------------- */

/* The keys in config.c's PROFILE_FIELDS order (every rewrite is loaded by
 * config.c before it is installed, so a divergence fails loudly instead of
 * writing a wrong file); the enum values' words are config.h's tables. */
static const char *const CTL_PF_KEYS[] = {"name",      "mode",       "signing_certificate", "sign_mode",
                                          "missing_key_action", "encryption", "signature", "key_transport"};
#define CTL_PF_NKEYS (sizeof CTL_PF_KEYS / sizeof *CTL_PF_KEYS)

/* names[v] of a NULL-terminated table, or "?" past its end. */
static const char *ctl_pf_enum(const char *const *names, int v) {
  for (int i = 0; names[i]; i++)
    if (i == v) return names[i];
  return "?";
}

/* Key i of p as the config spells it, defaults included; NULL when the
 * key does not apply to p's mode (config.c refuses such a key). */
static const char *ctl_pf_value(const struct config_sending_profile *p, size_t i) {
  bool signs = p->mode != CONFIG_MODE_ENCRYPT, encrypts = p->mode != CONFIG_MODE_SIGN;
  switch (i) {
    case 0: return p->name;
    case 1: return ctl_pf_enum(config_mode_names, p->mode);
    case 2: return signs ? p->signing_certificate : NULL;
    case 3: return signs ? ctl_pf_enum(config_sign_mode_names, p->sign_mode) : NULL;
    case 4: return encrypts ? ctl_pf_enum(config_missing_key_names, p->missing_key_action) : NULL;
    case 5: return encrypts ? ctl_pf_enum(config_encryption_names, p->encryption) : NULL;
    case 6: return signs ? ctl_pf_enum(config_signature_names, p->signature) : NULL;
    case 7: return encrypts ? ctl_pf_enum(config_key_transport_names, p->key_transport) : NULL;
    default: return NULL;
  }
}

/* Whether name or any key's value contains text, ignoring case. */
static bool ctl_pf_matches(const struct config_sending_profile *p, const char *text) {
  for (size_t i = 0; i < CTL_PF_NKEYS; i++) {
    const char *v = ctl_pf_value(p, i);
    if (v && strcasestr(v, text)) return true;
  }
  return false;
}

/* ---- who uses a profile ----------------------------------------------------- */

/* "listener:NAME", "content_filter:NAME", "message_filter:NAME"; owned. */
struct ctl_pf_users {
  char **v;
  size_t n;
};

static void ctl_pf_users_add(struct ctl_pf_users *u, const char *kind, const char *name) {
  struct buf b = BUF_INIT;
  if (buf_appendf(&b, "%s:%s", kind, name) != 0) ctl_pf_oom();
  if (u->n && strcmp(u->v[u->n - 1], b.data) == 0) { /* one filter, two actions */
    buf_free(&b);
    return;
  }
  char **v = realloc(u->v, (u->n + 1) * sizeof *v);
  if (!v) ctl_pf_oom();
  u->v = v;
  u->v[u->n++] = buf_steal(&b, NULL);
}

static void ctl_pf_users_free(struct ctl_pf_users *u) {
  for (size_t i = 0; i < u->n; i++) free(u->v[i]);
  free(u->v);
  u->v = NULL;
  u->n = 0;
}

static bool ctl_pf_action_uses(const struct filter_action *a, const char *profile) {
  return (a->kind == FILTER_SMIME_GATEWAY || a->kind == FILTER_SMIME_ON_DELIVERY) && a->arg1 &&
         strcmp(a->arg1, profile) == 0;
}

struct ctl_pf_use {
  const char *profile;
  struct ctl_pf_users *u;
};

static int ctl_pf_program_action(const char *filter, const struct filter_action *a, void *arg) {
  struct ctl_pf_use *use = arg;
  if (ctl_pf_action_uses(a, use->profile)) ctl_pf_users_add(use->u, "message_filter", filter);
  return 0;
}

/* Everything in cfg that names profile: listeners (sending_profile), and
 * content and message filters through their compiled actions. */
static void ctl_pf_users_of(const struct config *cfg, const char *profile, struct ctl_pf_users *u) {
  memset(u, 0, sizeof *u);
  for (size_t i = 0; i < cfg->n_listeners; i++)
    if (cfg->listeners[i].sending_profile && strcmp(cfg->listeners[i].sending_profile, profile) == 0)
      ctl_pf_users_add(u, "listener", cfg->listeners[i].name);
  for (size_t i = 0; i < cfg->n_content_filters; i++) {
    const struct config_content_filter *cf = &cfg->content_filters[i];
    for (size_t j = 0; cf->parsed && j < cf->n_actions; j++)
      if (ctl_pf_action_uses(&cf->parsed[j], profile)) ctl_pf_users_add(u, "content_filter", cf->name);
  }
  struct ctl_pf_use use = {profile, u};
  if (cfg->message_program) filter_program_each_action(cfg->message_program, ctl_pf_program_action, &use);
}

/* ---- list, search, show ----------------------------------------------------- */

/* One JSON object: name, every key (null where it does not apply), users. */
static void ctl_pf_json(const struct config_sending_profile *p, const struct ctl_pf_users *u) {
  putchar('{');
  for (size_t i = 0; i < CTL_PF_NKEYS; i++) {
    const char *v = ctl_pf_value(p, i);
    printf("%s\"%s\":", i ? "," : "", CTL_PF_KEYS[i]);
    if (v) ctl_json_str(stdout, v);
    else printf("null");
  }
  ctl_json_list("used_by", u->v, u->n);
  printf(",\"line\":%d}", p->line);
}

static void ctl_pf_row(const struct config_sending_profile *p, const struct ctl_pf_users *u) {
  const char *cert = ctl_pf_value(p, 2), *missing = ctl_pf_value(p, 4), *enc = ctl_pf_value(p, 5);
  printf("%-24s %-13s %-20s %-11s %-11s ", p->name, ctl_pf_value(p, 1), cert ? cert : "-",
         missing ? missing : "-", enc ? enc : "-");
  for (size_t i = 0; i < u->n; i++) printf("%s%s", i ? "," : "", u->v[i]);
  printf("%s\n", u->n ? "" : "-");
}

/* profile list, and profile search TEXT (text != NULL). */
static int ctl_pf_list(const struct ctl *c, const char *text) {
  struct config *cfg;
  int rc = ctl_load(c, &cfg);
  if (rc) return rc;
  if (c->json) putchar('[');
  else printf("%-24s %-13s %-20s %-11s %-11s %s\n", "NAME", "MODE", "SIGNING_CERTIFICATE", "MISSING_KEY",
              "ENCRYPTION", "USED_BY");
  size_t shown = 0;
  for (size_t i = 0; i < cfg->n_sending_profiles; i++) {
    const struct config_sending_profile *p = &cfg->sending_profiles[i];
    if (text && !ctl_pf_matches(p, text)) continue;
    struct ctl_pf_users u;
    ctl_pf_users_of(cfg, p->name, &u);
    if (c->json) {
      if (shown) printf(",\n ");
      ctl_pf_json(p, &u);
    } else {
      ctl_pf_row(p, &u);
    }
    shown++;
    ctl_pf_users_free(&u);
  }
  if (c->json) printf("]\n");
  config_unref(cfg);
  return 0;
}

static int ctl_pf_list_cmd(const struct ctl *c) {
  int rc = ctl_pf_args(c, 0, "profile list");
  return rc ? rc : ctl_pf_list(c, NULL);
}

static int ctl_pf_search(const struct ctl *c) {
  int rc = ctl_pf_args(c, 1, "profile search TEXT");
  return rc ? rc : ctl_pf_list(c, c->argv[2]);
}

static int ctl_pf_show(const struct ctl *c) {
  struct config *cfg;
  int rc = ctl_pf_args(c, 1, "profile show NAME");
  if (rc || (rc = ctl_load(c, &cfg)) != 0) return rc;
  const struct config_sending_profile *p = config_sending_profile_find(cfg, c->argv[2]);
  if (!p) {
    fprintf(stderr, "sealctl: no sending profile named '%s' in %s\n", c->argv[2], cfg->path);
    config_unref(cfg);
    return 1;
  }
  struct ctl_pf_users u;
  ctl_pf_users_of(cfg, p->name, &u);
  if (c->json) {
    ctl_pf_json(p, &u);
    putchar('\n');
  } else {
    for (size_t i = 0; i < CTL_PF_NKEYS; i++) {
      const char *v = ctl_pf_value(p, i);
      printf("%-20s %s%s\n", CTL_PF_KEYS[i], v ? v : "-", v ? "" : " (does not apply to this mode)");
    }
    printf("%-20s ", "used_by");
    for (size_t i = 0; i < u.n; i++) printf("%s%s", i ? ", " : "", u.v[i]);
    printf("%s\n%-20s %s:%d\n", u.n ? "" : "-", "defined_at", cfg->path, p->line);
  }
  ctl_pf_users_free(&u);
  config_unref(cfg);
  return 0;
}

/* ---- emitting YAML ---------------------------------------------------------- */

/* A double-quoted YAML scalar: backslash escapes for '"', '\\' and
 * control characters, so any string reads back as itself. */
static void ctl_pf_yaml_str(struct buf *b, const char *s) {
  ctl_pf_puts(b, "\"");
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    char esc[8];
    if (ch == '"' || ch == '\\') snprintf(esc, sizeof esc, "\\%c", ch);
    else if (ch == '\n') snprintf(esc, sizeof esc, "\\n");
    else if (ch == '\t') snprintf(esc, sizeof esc, "\\t");
    else if (ch < 0x20 || ch == 0x7f) snprintf(esc, sizeof esc, "\\x%02x", ch);
    else esc[0] = (char)ch, esc[1] = '\0';
    ctl_pf_puts(b, esc);
  }
  ctl_pf_puts(b, "\"");
}

/* `sending_profiles:` and the list v[0..n), block style, two-space
 * indent, every key that applies written out; no final newline. */
static void ctl_pf_yaml(struct buf *b, const struct config_sending_profile *const *v, size_t n) {
  ctl_pf_puts(b, n ? "sending_profiles:" : "sending_profiles: []");
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < CTL_PF_NKEYS; k++) {
      const char *val = ctl_pf_value(v[i], k);
      if (!val) continue;
      ctl_pf_puts(b, k == 0 ? "\n  - " : "\n    ");
      ctl_pf_puts(b, CTL_PF_KEYS[k]);
      ctl_pf_puts(b, ": ");
      ctl_pf_yaml_str(b, val);
    }
}

/* ---- locating the sending_profiles entry in a YAML text --------------------- */

/* Where the top-level `sending_profiles: VALUE` lies in a text. */
struct ctl_pf_span {
  bool found;
  size_t start, end; /* bytes [start, end): the key through the value and a comment after it
                        (character indexes while the events are walked) */
  size_t line;       /* 1-based line of the key */
  char other[80];    /* the first other top-level key ("" if none) */
  size_t other_line;
};

/* The event walk's state.  libyaml reports the end of a block collection
 * only at the next token, after any comments and blank lines that follow
 * it, so the value's end is the furthest end of its scalars, aliases and
 * flow brackets (the tokens that really are inside it). */
struct ctl_pf_scan {
  struct ctl_pf_span *sp;
  int depth;    /* open collections */
  bool at_key;  /* the next node at depth 1 is a top-level key */
  bool ours;    /* the key just read is sending_profiles */
  bool inside;  /* within its value */
  size_t end;   /* furthest end inside the value so far */
  int docs;
};

static void ctl_pf_scan_key(struct ctl_pf_scan *s, const yaml_event_t *e) {
  const char *k = e->type == YAML_SCALAR_EVENT ? (const char *)e->data.scalar.value : "(not a plain key)";
  struct ctl_pf_span *sp = s->sp;
  if (strcmp(k, "sending_profiles") == 0 && !sp->found) {
    sp->found = s->ours = true;
    sp->start = e->start_mark.index;
    sp->line = e->start_mark.line + 1;
  } else if (!sp->other[0]) {
    snprintf(sp->other, sizeof sp->other, "%.60s", k);
    sp->other_line = e->start_mark.line + 1;
  }
}

static int ctl_pf_scan_event(struct ctl_pf_scan *s, const yaml_event_t *e, char *err, size_t errlen) {
  yaml_event_type_t t = e->type;
  bool open = t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT;
  bool leaf = t == YAML_SCALAR_EVENT || t == YAML_ALIAS_EVENT;
  bool close = t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT;
  size_t line = e->start_mark.line + 1;
  if (t == YAML_DOCUMENT_START_EVENT && ++s->docs > 1)
    return sgerr_fail(err, errlen, SG_ECONFIG, "%zu: a second YAML document (the file must hold one)", line);
  if (s->depth == 0 && (open || leaf) && t != YAML_MAPPING_START_EVENT)
    return sgerr_fail(err, errlen, SG_ECONFIG, "%zu: expected a mapping of keys", line);
  if (s->depth == 1 && (open || leaf)) {
    if (s->at_key) ctl_pf_scan_key(s, e);
    else if (s->ours) s->inside = true, s->ours = false, s->end = e->end_mark.index;
  }
  bool real_token = leaf || (close && e->end_mark.index > e->start_mark.index);
  if (s->inside && real_token && e->end_mark.index > s->end) s->end = e->end_mark.index;
  if (open) s->depth++;
  if (close) s->depth--;
  if (s->depth == 1 && (leaf || close)) { /* a node at depth 1 is complete */
    if (!s->at_key && s->inside) s->sp->end = s->end, s->inside = false;
    s->at_key = !s->at_key;
  }
  if (t == YAML_MAPPING_START_EVENT && s->depth == 1) s->at_key = true;
  return 0;
}

/* A comment (and blanks) after the value on its last line belongs to it. */
static size_t ctl_pf_line_end(const char *text, size_t len, size_t end) {
  if (end == 0 || text[end - 1] == '\n') return end;
  size_t j = end;
  while (j < len && (text[j] == ' ' || text[j] == '\t')) j++;
  if (j < len && text[j] == '#')
    while (j < len && text[j] != '\n' && text[j] != '\r') j++;
  return j == len || text[j] == '\n' || text[j] == '\r' ? j : end;
}

/* libyaml's marks count characters after a byte order mark, not bytes:
 * the byte offset of character number chars of UTF-8 text. */
static size_t ctl_pf_byte_at(const char *text, size_t len, size_t chars) {
  size_t i = len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
  for (; i < len; i++)
    if (((unsigned char)text[i] & 0xc0) != 0x80 && chars-- == 0) return i;
  return len;
}

/* Find the top-level sending_profiles entry of text.  0, or SG_ECONFIG
 * with err "LINE: what" (YAML syntax, not one mapping, not UTF-8). */
static int ctl_pf_locate(const char *text, size_t len, struct ctl_pf_span *sp, char *err, size_t errlen) {
  memset(sp, 0, sizeof *sp);
  if (len >= 2 && ((text[0] == '\xff' && text[1] == '\xfe') || (text[0] == '\xfe' && text[1] == '\xff')))
    return sgerr_fail(err, errlen, SG_ECONFIG, "1: UTF-16 text: write the file as UTF-8");
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) return sgerr_fail(err, errlen, SG_ENOMEM, "0: out of memory");
  yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
  struct ctl_pf_scan s = {.sp = sp};
  int rc = 0;
  for (bool done = false; !done && rc == 0;) {
    yaml_event_t e;
    if (!yaml_parser_parse(&p, &e)) {
      rc = sgerr_fail(err, errlen, SG_ECONFIG, "%zu: YAML syntax error: %s%s%s", p.problem_mark.line + 1,
                      p.problem ? p.problem : "malformed input", p.context ? " " : "", p.context ? p.context : "");
      break;
    }
    rc = ctl_pf_scan_event(&s, &e, err, errlen);
    done = e.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&e);
  }
  yaml_parser_delete(&p);
  if (rc == 0 && sp->found) {
    sp->start = ctl_pf_byte_at(text, len, sp->start);
    sp->end = ctl_pf_line_end(text, len, ctl_pf_byte_at(text, len, sp->end));
  }
  return rc;
}

/* text with the span replaced by section, or section appended (on a line
 * of its own) when text has no sending_profiles entry. */
static void ctl_pf_splice(const char *text, size_t len, const struct ctl_pf_span *sp, const char *section,
                          struct buf *out) {
  if (!sp->found) {
    ctl_pf_put(out, text, len);
    if (len && text[len - 1] != '\n') ctl_pf_puts(out, "\n");
    ctl_pf_puts(out, section);
    ctl_pf_puts(out, "\n");
    return;
  }
  ctl_pf_put(out, text, sp->start);
  ctl_pf_puts(out, section);
  if (text[sp->end - 1] == '\n') ctl_pf_puts(out, "\n"); /* the value ended with its line */
  ctl_pf_put(out, text + sp->end, len - sp->end);
}

/* ---- installing a changed config -------------------------------------------- */

/* The config file as read for a change: the snapshot (its path is the
 * real file, symlinks resolved), the text that is rewritten, its inode. */
struct ctl_pf_file {
  struct config *cfg;
  struct buf text;
  struct stat st;
};

static int ctl_pf_open(const struct ctl *c, struct ctl_pf_file *f) {
  memset(f, 0, sizeof *f);
  int rc = ctl_load(c, &f->cfg);
  if (rc) return rc;
  FILE *in = fopen(f->cfg->path, "rb");
  if (!in || fstat(fileno(in), &f->st) != 0) {
    fprintf(stderr, "sealctl: cannot read %s: %s\n", f->cfg->path, strerror(errno));
    rc = 1;
  } else {
    rc = ctl_pf_read_stream(in, f->cfg->path, &f->text);
  }
  if (in) fclose(in);
  return rc;
}

static void ctl_pf_close(struct ctl_pf_file *f) {
  config_unref(f->cfg);
  buf_free(&f->text);
}

/* A rename is durable once the folder is synced. */
static void ctl_pf_sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    if (fsync(fd) != 0) fprintf(stderr, "sealctl: warning: fsync %s: %s\n", dir, strerror(errno));
    close(fd);
  }
}

/* The candidate at next must load as the daemon would load it (and, with
 * token, fit the token); err names the config, not the candidate. */
static int ctl_pf_check(const struct config *cfg, const char *next, bool token) {
  char err[1024];
  struct config *nc = NULL;
  int rc = config_load(next, &nc, err, sizeof err);
  if (rc == 0 && token && (rc = ctl_check_token(nc, err, sizeof err)) != 0)
    fprintf(stderr, "sealctl: refused, nothing was changed: %s: %s\n", cfg->path, err);
  else if (rc) {
    size_t n = strlen(next);
    const char *rest = strncmp(err, next, n) == 0 ? err + n : err;
    fprintf(stderr, "sealctl: refused, nothing was changed: the config would not load after this change: %s%s\n",
            rest == err ? "" : cfg->path, rest);
  }
  config_unref(nc);
  return rc ? 1 : 0;
}

/* Install text as f's config: written beside it, checked, renamed over it
 * (R35: the config is either the old bytes or the new ones). */
static int ctl_pf_commit(const struct ctl_pf_file *f, const char *text, bool token) {
  const char *path = f->cfg->path;
  char next[4200];
  snprintf(next, sizeof next, "%s.new", path);
  int rc = ctl_write_file(next, text, f->st.st_mode & 07777);
  if (rc) {
    fprintf(stderr, "sealctl: refused, nothing was changed: cannot write %s: %s\n", next, sgerr_str(rc));
    return 1;
  }
  /* root editing a config that belongs to the daemon's user keeps it theirs */
  if (geteuid() == 0 && (f->st.st_uid != 0 || f->st.st_gid != 0) && lchown(next, f->st.st_uid, f->st.st_gid) != 0)
    fprintf(stderr, "sealctl: warning: cannot give %s to uid %u: %s\n", next, (unsigned)f->st.st_uid,
            strerror(errno));
  rc = ctl_pf_check(f->cfg, next, token);
  if (rc == 0 && rename(next, path) != 0) {
    fprintf(stderr, "sealctl: refused, nothing was changed: cannot replace %s: %s\n", path, strerror(errno));
    rc = 1;
  }
  if (rc) unlink(next);
  else ctl_pf_sync_dir(f->cfg->dir);
  return rc;
}

/* The config with its profiles replaced by v[0..n), installed. */
static int ctl_pf_rewrite(const struct ctl_pf_file *f, const struct config_sending_profile *const *v, size_t n,
                          bool token) {
  struct ctl_pf_span sp;
  char err[512];
  if (ctl_pf_locate(f->text.data, f->text.len, &sp, err, sizeof err) != 0) {
    fprintf(stderr, "sealctl: %s:%s\n", f->cfg->path, err); /* changed since it was loaded */
    return 1;
  }
  struct buf section = BUF_INIT, text = BUF_INIT;
  ctl_pf_yaml(&section, v, n);
  ctl_pf_splice(f->text.data, f->text.len, &sp, section.data, &text);
  int rc = ctl_pf_commit(f, text.data, token);
  buf_free(&section);
  buf_free(&text);
  return rc;
}

/* As `sealctl reload`: the daemon loads the whole file and switches to it,
 * or keeps the old one and says why (then exit 1: the file changed but
 * the daemon did not follow). */
static int ctl_pf_reload(const struct config *cfg) {
  struct buf out = BUF_INIT;
  int rc = ctl_request(cfg, "reload", &out);
  buf_free(&out);
  if (rc == 0) printf("the running daemon reloaded its configuration\n");
  else if (rc == SG_ENOTFOUND) printf("the change applies when sealgate next starts\n");
  else fprintf(stderr, "sealctl: the config file was changed, but the running daemon kept its previous one\n");
  return rc && rc != SG_ENOTFOUND ? 1 : 0;
}

/* ---- export, import, delete ------------------------------------------------- */

static int ctl_pf_export(const struct ctl *c) {
  struct config *cfg;
  int rc = ctl_pf_args(c, 1, "profile export FILE");
  if (rc || (rc = ctl_load(c, &cfg)) != 0) return rc;
  const char *path = c->argv[2];
  bool std = strcmp(path, "-") == 0;
  size_t n = cfg->n_sending_profiles;
  const struct config_sending_profile **v = calloc(n + 1, sizeof *v);
  struct buf y = BUF_INIT;
  if (!v) ctl_pf_oom();
  for (size_t i = 0; i < n; i++) v[i] = &cfg->sending_profiles[i];
  ctl_pf_puts(&y, "# sealgate sending profiles (sealctl profile export); load with: sealctl profile import FILE\n");
  ctl_pf_yaml(&y, v, n);
  ctl_pf_puts(&y, "\n");
  if (std) rc = fwrite(y.data, 1, y.len, stdout) == y.len && fflush(stdout) == 0 ? 0 : SG_EIO;
  else rc = ctl_write_file(path, y.data, 0644);
  if (rc) fprintf(stderr, "sealctl: profile export %s: %s\n", path, sgerr_str(rc));
  else fprintf(std ? stderr : stdout, "exported %zu sending profiles to %s\n", n, std ? "standard output" : path);
  free(v);
  buf_free(&y);
  config_unref(cfg);
  return rc ? 1 : 0;
}

/* A minimal valid config after the imported entry: config.c then reads
 * the entry as it reads a config's, at the import file's own lines. */
static const char CTL_PF_STUB[] =
    "hostname: import.invalid\nspool_dir: /nonexistent\nkey_store: /nonexistent\n"
    "hsm: {module: inprocess, token: import, pin_file: /nonexistent}\n"
    "listeners: [{name: import, address: \"127.0.0.1:1\", direction: outgoing, next_hop: \"127.0.0.1:2\"}]\n"
    "flow_policies: [{name: default}]\n";

/* Validate the import text (label names it in errors) into *out, whose
 * sending_profiles are the file's.  0, or 1 with the error printed. */
static int ctl_pf_import_load(const struct buf *in, const char *label, const char *dir, struct config **out) {
  struct ctl_pf_span sp;
  char err[1024];
  if (ctl_pf_locate(in->data, in->len, &sp, err, sizeof err) != 0) {
    fprintf(stderr, "sealctl: %s:%s\n", label, err);
    return 1;
  }
  if (sp.other[0]) {
    bool dup = strcmp(sp.other, "sending_profiles") == 0;
    fprintf(stderr, "sealctl: %s:%zu: %s key '%s': the file holds sending_profiles: once and nothing else "
            "(as profile export writes it)\n", label, sp.other_line, dup ? "duplicate" : "unexpected", sp.other);
    return 1;
  }
  if (!sp.found) {
    fprintf(stderr, "sealctl: %s:1: no sending_profiles: key (the file holds sending_profiles: and a list of "
            "profiles, as profile export writes it)\n", label);
    return 1;
  }
  struct buf doc = BUF_INIT;
  for (size_t i = 1; i < sp.line; i++) ctl_pf_puts(&doc, "\n"); /* same line numbers as the file */
  ctl_pf_put(&doc, in->data + sp.start, sp.end - sp.start);
  ctl_pf_puts(&doc, "\n");
  ctl_pf_puts(&doc, CTL_PF_STUB);
  int rc = config_load_string(doc.data, doc.len, dir, label, out, err, sizeof err);
  if (rc) fprintf(stderr, "sealctl: %s (nothing was changed)\n", err);
  buf_free(&doc);
  return rc ? 1 : 0;
}

/* The profiles after the import: cfg's in order, each replaced by the
 * imported one of that name, then the new ones in the file's order.
 * The array is the caller's (free); its entries borrow from cfg and imp. */
static const struct config_sending_profile **ctl_pf_merge(const struct config *cfg, const struct config *imp,
                                                         size_t *n_out, size_t *replaced_out) {
  const struct config_sending_profile **v = calloc(cfg->n_sending_profiles + imp->n_sending_profiles + 1, sizeof *v);
  size_t n = 0, replaced = 0;
  if (!v) return NULL;
  for (size_t i = 0; i < cfg->n_sending_profiles; i++) {
    const struct config_sending_profile *p = config_sending_profile_find(imp, cfg->sending_profiles[i].name);
    replaced += p != NULL;
    v[n++] = p ? p : &cfg->sending_profiles[i];
  }
  for (size_t i = 0; i < imp->n_sending_profiles; i++)
    if (!config_sending_profile_find(cfg, imp->sending_profiles[i].name)) v[n++] = &imp->sending_profiles[i];
  *n_out = n;
  *replaced_out = replaced;
  return v;
}

static int ctl_pf_import_apply(const struct ctl_pf_file *f, const struct config *imp, const char *label) {
  size_t n, replaced;
  if (imp->n_sending_profiles == 0) {
    printf("%s holds no sending profiles: nothing was changed\n", label);
    return 0;
  }
  const struct config_sending_profile **v = ctl_pf_merge(f->cfg, imp, &n, &replaced);
  if (!v) ctl_pf_oom();
  int rc = ctl_pf_rewrite(f, v, n, true);
  free(v);
  if (rc) return rc;
  printf("imported %zu sending profiles from %s (%zu added, %zu replaced) into %s\n", imp->n_sending_profiles,
         label, imp->n_sending_profiles - replaced, replaced, f->cfg->path);
  return ctl_pf_reload(f->cfg);
}

static int ctl_pf_import(const struct ctl *c) {
  int rc = ctl_pf_args(c, 1, "profile import FILE");
  if (rc) return rc;
  const char *path = c->argv[2];
  bool std = strcmp(path, "-") == 0;
  const char *label = std ? "<stdin>" : path;
  FILE *in = std ? stdin : fopen(path, "rb");
  if (!in) {
    fprintf(stderr, "sealctl: cannot read %s: %s\n", path, strerror(errno));
    return 1;
  }
  struct buf text = BUF_INIT;
  rc = ctl_pf_read_stream(in, label, &text);
  if (!std) fclose(in);
  struct ctl_pf_file f;
  struct config *imp = NULL;
  if (rc == 0 && (rc = ctl_pf_open(c, &f)) == 0) {
    rc = ctl_pf_import_load(&text, label, f.cfg->dir, &imp);
    if (rc == 0) rc = ctl_pf_import_apply(&f, imp, label);
    config_unref(imp);
    ctl_pf_close(&f);
  }
  buf_free(&text);
  return rc;
}

/* Refused while anything names the profile: the config would not load
 * (a listener's sending_profile must exist) or a filter would lose its
 * action; the error says who, so the administrator knows what to change. */
static int ctl_pf_delete_check(const struct config *cfg, const char *name) {
  if (!config_sending_profile_find(cfg, name)) {
    fprintf(stderr, "sealctl: no sending profile named '%s' in %s\n", name, cfg->path);
    return 1;
  }
  struct ctl_pf_users u;
  ctl_pf_users_of(cfg, name, &u);
  if (u.n) {
    fprintf(stderr, "sealctl: sending profile '%s' is used by ", name);
    for (size_t i = 0; i < u.n; i++) fprintf(stderr, "%s%s", i ? ", " : "", u.v[i]);
    fprintf(stderr, ": change %s first (nothing was changed)\n", u.n > 1 ? "those" : "that");
  }
  int rc = u.n ? 1 : 0;
  ctl_pf_users_free(&u);
  return rc;
}

static int ctl_pf_delete(const struct ctl *c) {
  struct ctl_pf_file f;
  int rc = ctl_pf_args(c, 1, "profile delete NAME");
  if (rc || (rc = ctl_pf_open(c, &f)) != 0) return rc;
  const char *name = c->argv[2];
  const struct config *cfg = f.cfg;
  if ((rc = ctl_pf_delete_check(cfg, name)) == 0) {
    const struct config_sending_profile **v = calloc(cfg->n_sending_profiles + 1, sizeof *v);
    size_t n = 0;
    if (!v) ctl_pf_oom();
    for (size_t i = 0; i < cfg->n_sending_profiles; i++)
      if (strcmp(cfg->sending_profiles[i].name, name) != 0) v[n++] = &cfg->sending_profiles[i];
    rc = ctl_pf_rewrite(&f, v, n, false);
    free(v);
    if (rc == 0) printf("deleted sending profile '%s' from %s\n", name, cfg->path);
    if (rc == 0) rc = ctl_pf_reload(cfg);
  }
  ctl_pf_close(&f);
  return rc;
}

int ctl_profile(const struct ctl *c) {
  static const struct {
    const char *name;
    int (*fn)(const struct ctl *);
  } cmds[] = {{"list", ctl_pf_list_cmd}, {"show", ctl_pf_show},     {"export", ctl_pf_export},
              {"import", ctl_pf_import}, {"search", ctl_pf_search}, {"delete", ctl_pf_delete}};
  if (c->argc < 2) return ctl_usage_error("profile needs a subcommand (list, show, export, import, search, delete)%s", "");
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
    if (strcmp(c->argv[1], cmds[i].name) == 0) return cmds[i].fn(c);
  return ctl_usage_error("profile: unknown subcommand '%s'", c->argv[1]);
}
