/*
 * sealctl_cert - `sealctl cert ...` and `sealctl alerts list`, and the
 * token half of `sealctl init` (R8-R11, R34).
 *
 * Works on the token directly (the instance's SoftHSM2 in this process, or
 * the configured module), whether or not the daemon runs; every write
 * holds hsm/admin.lock (SoftHSM2 races in key generation and import) and
 * then tells a running daemon to reload its keys.  Arguments, PKCS#12
 * files and password files are untrusted: each bad one is an error naming
 * it, exit 1 (2 for bad usage).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "core/control.h"
#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/certstore.h"
#include "hsm/hsm.h"
#include "hsm/hsm_backup.h"
#include "tools/sealctl.h"

#define ALERT_WARN_DAYS 30
#define ALERT_CRIT_DAYS 7

/* ---- options --------------------------------------------------------------- */

struct ctl_opt {
  const char *name;
  const char **value; /* NULL for a flag */
  bool *flag;
};

/* Positional words go to pos[] (at most npos); options by table. */
static int ctl_opts(const struct ctl *c, int from, struct ctl_opt *opts, const char **pos, int npos,
                    int *npos_out) {
  int n = 0;
  for (int i = from; i < c->argc; i++) {
    const char *a = c->argv[i];
    struct ctl_opt *o = NULL;
    for (struct ctl_opt *k = opts; k && k->name; k++)
      if (strcmp(a, k->name) == 0) o = k;
    if (!o && a[0] == '-' && a[1]) return ctl_usage_error("cert: unknown option %s", a);
    if (!o) {
      if (n >= npos) return ctl_usage_error("cert: unexpected argument '%s'", a);
      pos[n++] = a;
    } else if (o->flag) {
      *o->flag = true;
    } else {
      if (i + 1 >= c->argc) return ctl_usage_error("cert: %s needs a value", a);
      *o->value = c->argv[++i];
    }
  }
  *npos_out = n;
  return 0;
}

/* Split "a,b,c" into a NULL-terminated array of trimmed, non-empty words. */
static char **ctl_split(const char *list, size_t *n_out) {
  *n_out = 0;
  if (!list) return NULL;
  size_t cap = 1;
  for (const char *p = list; *p; p++) cap += *p == ',';
  char **v = calloc(cap + 1, sizeof *v), *copy = strdup(list), *save = NULL;
  if (!v || !copy) exit(1);
  for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
    while (*w == ' ') w++;
    size_t l = strlen(w);
    while (l && w[l - 1] == ' ') w[--l] = '\0';
    if (l) v[(*n_out)++] = strdup(w);
  }
  free(copy);
  return v;
}

static void ctl_free_words(char **v) {
  for (size_t i = 0; v && v[i]; i++) free(v[i]);
  free(v);
}

/* ---- opening the token ----------------------------------------------------- */

struct ctl_tok {
  struct config *cfg;
  struct hsm *hsm;
  char hsm_dir[4096];
  int lock; /* hsm/admin.lock while writing, else -1 */
};

static int ctl_tok_open(const struct ctl *c, bool write, struct ctl_tok *t) {
  memset(t, 0, sizeof *t);
  t->lock = -1;
  int rc = ctl_load(c, &t->cfg);
  if (rc) return rc;
  certstore_hsm_dir(t->cfg, t->hsm_dir, sizeof t->hsm_dir);
  if (write && (t->lock = hsm_admin_lock(t->hsm_dir)) < 0) {
    fprintf(stderr, "sealctl: cannot lock %s/admin.lock: %s\n", t->hsm_dir, sgerr_str(t->lock));
    config_unref(t->cfg);
    return 1;
  }
  struct hsm_params p;
  certstore_hsm_params(t->cfg, NULL, &p);
  char err[512];
  if ((rc = hsm_open(&p, &t->hsm, err, sizeof err)) != 0) {
    fprintf(stderr, "sealctl: %s\n", err);
    if (t->lock >= 0) close(t->lock);
    config_unref(t->cfg);
    return 1;
  }
  return 0;
}

/* Files sealctl (root) created in a token folder owned by the token
 * server's (or gateway's) user must become that user's, or the server
 * cannot read them.  hsm_token_chown never follows a symlink: the folder
 * belongs to a less trusted user. */
static void ctl_tok_fix_owner(const char *hsm_dir) {
  char path[4200], err[512];
  snprintf(path, sizeof path, "%s/tokens", hsm_dir);
  struct stat st;
  if (geteuid() != 0 || lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid == 0) return;
  if (hsm_token_chown(hsm_dir, st.st_uid, st.st_gid, true, err, sizeof err) != 0)
    fprintf(stderr, "sealctl: warning: %s\n", err);
}

/* Close; after a write tell a running daemon (quietly if none runs). */
static void ctl_tok_close(struct ctl_tok *t, bool changed) {
  hsm_close(t->hsm);
  if (changed) ctl_tok_fix_owner(t->hsm_dir);
  if (t->lock >= 0) close(t->lock);
  if (changed) ctl_notify_daemon(t->cfg);
  config_unref(t->cfg);
}

/* Read a --password-file (first line). */
static int ctl_password(const char *path, const char *opt, char *buf, size_t cap) {
  if (!path) return ctl_usage_error("cert: %s is required", opt);
  char err[512];
  if (hsm_read_secret_file(path, false, buf, cap, err, sizeof err) != 0) {
    fprintf(stderr, "sealctl: %s: %s\n", opt, err);
    return 1;
  }
  return 0;
}

/* ---- create, import, delete ------------------------------------------------ */

static int ctl_key_spec(const char *type, const char *size, enum hsm_key_type *t, unsigned *bits) {
  *t = (!type || strcmp(type, "rsa") == 0) ? HSM_KEY_RSA : HSM_KEY_EC;
  if (type && strcmp(type, "rsa") && strcmp(type, "ec"))
    return ctl_usage_error("cert: --key-type must be rsa or ec, not '%s'", type);
  *bits = *t == HSM_KEY_RSA ? 2048 : 256;
  if (size) {
    char *end;
    unsigned long v = strtoul(size, &end, 10);
    bool ok = *end == '\0' && (*t == HSM_KEY_RSA ? (v == 2048 || v == 3072 || v == 4096) : (v == 256 || v == 384));
    if (!ok)
      return ctl_usage_error(*t == HSM_KEY_RSA ? "cert: --key-size for rsa is 2048, 3072 or 4096, not '%s'"
                                               : "cert: --key-size for ec is 256 or 384, not '%s'", size);
    *bits = (unsigned)v;
  }
  return 0;
}

static int ctl_cert_create(const struct ctl *c) {
  const char *pos[1], *ktype = NULL, *ksize = NULL, *days = NULL, *doms = NULL, *mails = NULL;
  struct cert_request r = {0};
  bool fqdn = false, renew = false;
  struct ctl_opt opts[] = {{"--cn", &r.cn, NULL}, {"--org", &r.org, NULL}, {"--ou", &r.ou, NULL},
                           {"--city", &r.city, NULL}, {"--state", &r.state, NULL},
                           {"--country", &r.country, NULL}, {"--days", &days, NULL},
                           {"--san-domains", &doms, NULL}, {"--san-emails", &mails, NULL},
                           {"--key-type", &ktype, NULL}, {"--key-size", &ksize, NULL},
                           {"--fqdn-validate", NULL, &fqdn}, {"--renew", NULL, &renew}, {0}};
  int n, rc = ctl_opts(c, 2, opts, pos, 1, &n);
  if (rc) return rc;
  if (n != 1) return ctl_usage_error("cert create needs a NAME%s", "");
  if (!r.cn) return ctl_usage_error("cert create needs --cn FQDN%s", "");
  enum hsm_key_type type;
  unsigned bits = 0;
  if ((rc = ctl_key_spec(ktype, ksize, &type, &bits)) != 0) return rc;
  if (days) {
    char *end;
    unsigned long d = strtoul(days, &end, 10);
    if (*end || d < 1 || d > 36500) return ctl_usage_error("cert: --days must be 1..36500, not '%s'", days);
    r.days = (unsigned)d;
  }
  r.fqdn_validate = fqdn;
  char **dv = ctl_split(doms, &r.n_san_domains), **mv = ctl_split(mails, &r.n_san_emails);
  r.san_domains = (const char *const *)dv;
  r.san_emails = (const char *const *)mv;
  struct ctl_tok t;
  if ((rc = ctl_tok_open(c, true, &t)) == 0) {
    char err[512];
    X509 *x = NULL;
    rc = certstore_create(t.hsm, pos[0], &r, type, bits, renew, &x, err, sizeof err);
    if (rc) fprintf(stderr, "sealctl: cert create %s: %s\n", pos[0], err);
    else printf("created certificate '%s' (%s-%u key in the token%s)\n", pos[0],
                type == HSM_KEY_RSA ? "RSA" : "EC", bits, renew ? "; the previous key stays for decryption" : "");
    X509_free(x);
    ctl_tok_close(&t, rc == 0);
    rc = rc ? 1 : 0;
  }
  ctl_free_words(dv);
  ctl_free_words(mv);
  return rc;
}

static int ctl_cert_import(const struct ctl *c) {
  const char *pos[2], *pwfile = NULL;
  bool renew = false;
  struct ctl_opt opts[] = {{"--password-file", &pwfile, NULL}, {"--renew", NULL, &renew}, {0}};
  int n, rc = ctl_opts(c, 2, opts, pos, 2, &n);
  if (rc) return rc;
  if (n != 2) return ctl_usage_error("cert import needs NAME FILE.p12%s", "");
  char pw[1024];
  if ((rc = ctl_password(pwfile, "--password-file", pw, sizeof pw)) != 0) return rc;
  char err[512];
  struct cert_p12 p12 = {0};
  rc = cert_p12_load(pos[1], pw, time(NULL), &p12, err, sizeof err);
  OPENSSL_cleanse(pw, sizeof pw);
  if (rc) {
    fprintf(stderr, "sealctl: cert import %s: %s\n", pos[0], err);
    return 1;
  }
  struct ctl_tok t;
  if ((rc = ctl_tok_open(c, true, &t)) == 0) {
    rc = certstore_import(t.hsm, pos[0], &p12, renew, err, sizeof err);
    if (rc) fprintf(stderr, "sealctl: cert import %s: %s\n", pos[0], err);
    else printf("imported certificate '%s' with its private key into the token (%d chain certificate(s))\n",
                pos[0], sk_X509_num(p12.chain));
    ctl_tok_close(&t, rc == 0);
    rc = rc ? 1 : 0;
  }
  cert_p12_free(&p12); /* clears the private key */
  return rc;
}

static int ctl_cert_delete(const struct ctl *c) {
  const char *pos[1];
  int n, rc = ctl_opts(c, 2, NULL, pos, 1, &n);
  if (rc) return rc;
  if (n != 1) return ctl_usage_error("cert delete needs a NAME%s", "");
  struct ctl_tok t;
  if ((rc = ctl_tok_open(c, true, &t)) != 0) return rc;
  char err[512], where[256];
  if (certstore_used_by(t.cfg, pos[0], where, sizeof where)) {
    fprintf(stderr, "sealctl: cert delete %s: in use by %s; change the configuration first\n", pos[0], where);
    rc = SG_EBUSY;
  } else if ((rc = certstore_delete(t.hsm, pos[0], err, sizeof err)) != 0) {
    fprintf(stderr, "sealctl: cert delete %s: %s\n", pos[0], err);
  } else {
    printf("deleted certificate '%s' and its keys from the token\n", pos[0]);
  }
  ctl_tok_close(&t, rc == 0);
  return rc ? 1 : 0;
}

/* ---- reading: list, show, export, csr -------------------------------------- */

const char *ctl_uses(unsigned u) {
  static const char *names[] = {"none", "sign", "encrypt", "sign,encrypt"};
  return names[u & 3];
}

void ctl_json_list(const char *key, char **v, size_t n) {
  printf(",\"%s\":[", key);
  for (size_t i = 0; i < n; i++) {
    if (i) putchar(',');
    ctl_json_str(stdout, v[i]);
  }
  putchar(']');
}

/* The fields every `show` prints (cert show, pubkey show); the caller adds
 * its own lines, or (JSON) its own members and the closing brace. */
void ctl_cert_info_print(bool json, const char *name, const struct cert_info *ci) {
  if (json) {
    printf("{\"name\":");
    ctl_json_str(stdout, name);
    const char *k[] = {"subject", "issuer", "serial", "not_before", "not_after", "key_usage",
                       "extended_key_usage", "fingerprint"};
    const char *v[] = {ci->subject, ci->issuer, ci->serial, ci->not_before, ci->not_after, ci->key_usage,
                       ci->ext_key_usage, ci->fingerprint};
    for (int i = 0; i < 8; i++) {
      printf(",\"%s\":", k[i]);
      ctl_json_str(stdout, v[i]);
    }
    printf(",\"key_type\":\"%s\",\"key_bits\":%u,\"curve\":\"%s\",\"uses\":\"%s\",\"self_signed\":%s",
           ci->key_type, ci->key_bits, ci->curve, ctl_uses(ci->uses), ci->self_signed ? "true" : "false");
    ctl_json_list("san_domains", ci->san_dns, ci->n_san_dns);
    ctl_json_list("san_emails", ci->san_email, ci->n_san_email);
    return;
  }
  printf("name:         %s\nsubject:      %s\nissuer:       %s%s\nserial:       %s\n", name, ci->subject,
         ci->issuer, ci->self_signed ? " (self-signed)" : "", ci->serial);
  printf("valid:        %s .. %s\n", ci->not_before, ci->not_after);
  printf("san domains: ");
  for (size_t i = 0; i < ci->n_san_dns; i++) printf(" %s", ci->san_dns[i]);
  printf("\nsan emails:  ");
  for (size_t i = 0; i < ci->n_san_email; i++) printf(" %s", ci->san_email[i]);
  printf("\nkey usage:    %s\next. usage:   %s\nuses:         %s\n", ci->key_usage, ci->ext_key_usage,
         ctl_uses(ci->uses));
  printf("key:          %s %u%s%s\nfingerprint:  SHA256 %s\n", ci->key_type, ci->key_bits,
         ci->curve[0] ? " " : "", ci->curve, ci->fingerprint);
}

static void ctl_cert_row(const struct ctl *c, const struct certstore_entry *e, bool first) {
  struct cert_info ci = {0};
  const struct certstore_key *k = &e->keys[0];
  if (!k->cert || cert_info_get(k->cert, &ci) != 0) snprintf(ci.subject, sizeof ci.subject, "(no certificate)");
  if (c->json) {
    printf("%s{\"name\":", first ? "" : ",\n ");
    ctl_json_str(stdout, e->name);
    printf(",\"subject\":");
    ctl_json_str(stdout, ci.subject);
    printf(",\"not_after\":\"%s\",\"key_type\":\"%s\",\"key_bits\":%u,\"uses\":\"%s\","
           "\"private_key\":%s,\"keys\":%zu,\"fingerprint\":\"%s\"}",
           ci.not_after, ci.key_type, ci.key_bits, ctl_uses(ci.uses), k->has_private ? "true" : "false",
           e->n_keys, ci.fingerprint);
  } else {
    char key[24];
    snprintf(key, sizeof key, "%s-%u", ci.key_type[0] ? ci.key_type : "?", ci.key_bits);
    printf("%-16s %-9s %-21s %-13s %4zu  %s%s\n", e->name, key, ci.not_after, ctl_uses(ci.uses), e->n_keys,
           ci.subject, k->has_private ? "" : "  (private key missing)");
  }
  cert_info_free(&ci);
}

/* Open the token read-only, load its certificates, run op, close. */
typedef void (*ctl_store_op)(const struct ctl *c, const struct certstore *s);

static int ctl_with_store(const struct ctl *c, ctl_store_op op) {
  struct ctl_tok t;
  int rc = ctl_tok_open(c, false, &t);
  if (rc) return rc;
  struct certstore *s;
  if ((rc = certstore_load(t.hsm, &s)) != 0) {
    fprintf(stderr, "sealctl: cannot list the token: %s\n", sgerr_str(rc));
  } else {
    op(c, s);
    certstore_free(s);
  }
  ctl_tok_close(&t, false);
  return rc ? 1 : 0;
}

static void ctl_op_list(const struct ctl *c, const struct certstore *s) {
  if (c->json) printf("[");
  else printf("%-16s %-9s %-21s %-13s %4s  %s\n", "NAME", "KEY", "NOT AFTER", "USES", "KEYS", "SUBJECT");
  for (size_t i = 0; i < s->n; i++) ctl_cert_row(c, &s->entries[i], i == 0);
  if (c->json) printf("]\n");
}

static int ctl_cert_list(const struct ctl *c) {
  if (c->argc != 2) return ctl_usage_error("cert list takes no argument ('%s')", c->argv[2]);
  return ctl_with_store(c, ctl_op_list);
}

static void ctl_cert_print(const struct ctl *c, const char *name, const struct cert_info *ci, const char *uri,
                           const struct certstore_entry *e) {
  ctl_cert_info_print(c->json, name, ci);
  if (c->json) {
    printf(",\"token_uri\":");
    ctl_json_str(stdout, uri);
    printf(",\"previous_keys\":%zu,\"chain\":%d}\n", e->n_keys - 1, sk_X509_num(e->keys[0].chain));
    return;
  }
  printf("private key:  in the token\ntoken uri:    %s\n", uri);
  printf("chain:        %d certificate(s)\nolder keys:   %zu (kept for decryption)\n",
         sk_X509_num(e->keys[0].chain), e->n_keys - 1);
}

/* The certificate named by pos[0] (argv[2]); op runs with it. */
typedef int (*ctl_cert_op)(const struct ctl *c, struct ctl_tok *t, const struct certstore_entry *e);

static int ctl_with_cert(const struct ctl *c, const char *what, ctl_cert_op op) {
  const char *pos[1];
  int n, rc = ctl_opts(c, 2, NULL, pos, 1, &n);
  if (rc) return rc;
  if (n != 1) return ctl_usage_error("this cert command needs a NAME%s", what);
  struct ctl_tok t;
  if ((rc = ctl_tok_open(c, false, &t)) != 0) return rc;
  struct certstore *s = NULL;
  const struct certstore_entry *e = NULL;
  if ((rc = certstore_load(t.hsm, &s)) != 0) fprintf(stderr, "sealctl: cannot list the token: %s\n", sgerr_str(rc));
  else if (!(e = certstore_find(s, pos[0])) || !e->keys[0].cert) {
    fprintf(stderr, "sealctl: no certificate named '%s'\n", pos[0]);
    rc = SG_ENOTFOUND;
  } else {
    rc = op(c, &t, e);
  }
  certstore_free(s);
  ctl_tok_close(&t, false);
  return rc ? 1 : 0;
}

static int ctl_op_show(const struct ctl *c, struct ctl_tok *t, const struct certstore_entry *e) {
  struct cert_info ci;
  int rc = cert_info_get(e->keys[0].cert, &ci);
  if (rc) return rc;
  char uri[1024];
  hsm_key_uri(t->hsm, &e->keys[0].ref, uri, sizeof uri);
  ctl_cert_print(c, e->name, &ci, uri, e);
  cert_info_free(&ci);
  return 0;
}

static int ctl_op_export(const struct ctl *c, struct ctl_tok *t, const struct certstore_entry *e) {
  (void)c, (void)t;
  int rc = PEM_write_X509(stdout, e->keys[0].cert) ? 0 : SG_EIO;
  for (int i = 0; rc == 0 && i < sk_X509_num(e->keys[0].chain); i++)
    rc = PEM_write_X509(stdout, sk_X509_value(e->keys[0].chain, i)) ? 0 : SG_EIO;
  return rc;
}

static int ctl_op_csr(const struct ctl *c, struct ctl_tok *t, const struct certstore_entry *e) {
  (void)c;
  struct hsm_worker *w;
  char err[512];
  EVP_PKEY *key;
  X509_REQ *req = NULL;
  int rc = hsm_worker_new(t->hsm, &w, err, sizeof err);
  if (rc == 0) {
    if ((rc = hsm_worker_pkey(w, &e->keys[0].ref, &key)) != 0)
      snprintf(err, sizeof err, "key of '%s' not usable: %s", e->name, sgerr_str(rc));
    else rc = cert_create_csr(e->keys[0].cert, key, &req, err, sizeof err);
    if (rc == 0 && !PEM_write_X509_REQ(stdout, req)) rc = SG_EIO;
    X509_REQ_free(req);
    hsm_worker_free(w);
  }
  if (rc) fprintf(stderr, "sealctl: cert csr %s: %s\n", e->name, err);
  return rc;
}

/* ---- backup, restore ------------------------------------------------------- */

static int ctl_cert_backup(const struct ctl *c, bool restore) {
  const char *pos[1], *pwfile = NULL;
  bool replace = false;
  struct ctl_opt opts[] = {{"--password-file", &pwfile, NULL}, {"--replace", NULL, &replace}, {0}};
  if (!restore) opts[1].name = NULL;
  int n, rc = ctl_opts(c, 2, opts, pos, 1, &n);
  if (rc) return rc;
  if (n != 1) return ctl_usage_error("cert backup/restore needs a FILE%s", "");
  struct config *cfg;
  if ((rc = ctl_load(c, &cfg)) != 0) return rc;
  char pw[1024], err[512], hsm_dir[4096], lockpath[4200];
  rc = ctl_password(pwfile, "--password-file", pw, sizeof pw);
  certstore_hsm_dir(cfg, hsm_dir, sizeof hsm_dir);
  snprintf(lockpath, sizeof lockpath, "%s/lock", cfg->dir);
  int lfd = restore && rc == 0 ? open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
  if (rc) {
    /* printed */
  } else if (strcmp(cfg->hsm.module, "remote") && strcmp(cfg->hsm.module, "inprocess")) {
    fprintf(stderr, "sealctl: cert backup works on the instance's SoftHSM2 token; back up a hardware "
            "HSM (%s) with its vendor's tools (docs/HSM.md)\n", cfg->hsm.module);
    rc = 1;
  } else if (restore && (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) != 0)) {
    fprintf(stderr, "sealctl: cert restore: the daemon is running on this instance; stop it first\n");
    rc = 1;
  } else if (!restore) {
    rc = hsm_backup_write(hsm_dir, pos[0], pw, err, sizeof err);
    if (rc == 0) printf("token of %s backed up, encrypted, to %s\n", cfg->path, pos[0]);
  } else {
    rc = hsm_backup_restore(hsm_dir, pos[0], pw, replace, err, sizeof err);
    if (rc == 0) printf("token restored from %s into %s\n", pos[0], hsm_dir);
  }
  if (rc < 0) fprintf(stderr, "sealctl: cert %s: %s\n", restore ? "restore" : "backup", err);
  if (lfd >= 0) close(lfd);
  OPENSSL_cleanse(pw, sizeof pw);
  config_unref(cfg);
  return rc == 2 ? 2 : rc ? 1 : 0; /* 2: a usage error, already printed */
}

/* ---- check: sign through the token (via the daemon when it runs) ----------- */

static int ctl_cert_check(const struct ctl *c) {
  const char *pos[1], *count = "10";
  struct ctl_opt opts[] = {{"--count", &count, NULL}, {0}};
  int n, rc = ctl_opts(c, 2, opts, pos, 1, &n);
  if (rc) return rc;
  char *end;
  unsigned long cnt = strtoul(count, &end, 10);
  if (n != 1 || *end || cnt < 1 || cnt > 20000) return ctl_usage_error("cert check NAME [--count 1..20000]%s", "");
  struct config *cfg;
  if ((rc = ctl_load(c, &cfg)) != 0) return rc;
  char cmd[256], path[4200];
  snprintf(cmd, sizeof cmd, "cert check %s %lu", pos[0], cnt);
  snprintf(path, sizeof path, "%s/control.sock", cfg->dir);
  struct buf out = BUF_INIT;
  rc = control_request(path, cmd, 600000, &out);
  if (rc == 0) {
    printf("%.*s", (int)out.len, out.data ? out.data : "");
  } else if (rc == SG_EINVAL) { /* the daemon's reason */
    fprintf(stderr, "sealctl: cert check %s: %.*s\n", pos[0], (int)out.len, out.data ? out.data : "");
  } else if (rc == SG_ENOTFOUND) { /* no daemon: the same test in this process */
    struct ctl_tok t;
    config_unref(cfg);
    cfg = NULL;
    if ((rc = ctl_tok_open(c, false, &t)) != 0) return rc;
    struct certstore *s = NULL;
    const struct certstore_entry *e = NULL;
    struct hsm_worker *w = NULL;
    char err[512] = "no such certificate";
    if (certstore_load(t.hsm, &s) == 0 && (e = certstore_find(s, pos[0])) && e->keys[0].cert &&
        hsm_worker_new(t.hsm, &w, err, sizeof err) == 0) {
      struct timespec a, b;
      clock_gettime(CLOCK_MONOTONIC, &a);
      for (unsigned long i = 0; i < cnt && rc == 0; i++) rc = certstore_selftest(w, &e->keys[0].ref, e->keys[0].cert, err, sizeof err);
      clock_gettime(CLOCK_MONOTONIC, &b);
      double s_ = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
      if (rc == 0) printf("%lu signatures with '%s' verified (%.0f/s, sealctl in-process)\n", cnt, pos[0], (double)cnt / s_);
    } else {
      rc = SG_ENOTFOUND;
    }
    if (rc) fprintf(stderr, "sealctl: cert check %s: %s\n", pos[0], err);
    hsm_worker_free(w);
    certstore_free(s);
    ctl_tok_close(&t, false);
  } else {
    fprintf(stderr, "sealctl: cert check: the daemon did not answer: %s\n", sgerr_str(rc));
  }
  buf_free(&out);
  if (cfg) config_unref(cfg);
  return rc ? 1 : 0;
}

/* ---- alerts ---------------------------------------------------------------- */

static int ctl_alert_rows(const struct ctl *c, const struct certstore *s) {
  time_t now = time(NULL);
  int n = 0;
  for (size_t i = 0; i < s->n; i++) {
    X509 *x = s->entries[i].keys[0].cert;
    long days = x ? cert_days_left(x, now) : 0;
    if (!x || days > ALERT_WARN_DAYS) continue;
    const char *level = days < 0 ? "expired" : days <= ALERT_CRIT_DAYS ? "critical" : "warning";
    char msg[512];
    if (days < 0) snprintf(msg, sizeof msg, "organisation certificate '%s' has expired", s->entries[i].name);
    else snprintf(msg, sizeof msg, "organisation certificate '%s' expires in %ld day(s): renew it "
                  "(sealctl cert create %s --renew ...)", s->entries[i].name, days, s->entries[i].name);
    if (c->json) {
      printf("%s{\"level\":\"%s\",\"kind\":\"certificate-expiry\",\"name\":", n ? ",\n " : "", level);
      ctl_json_str(stdout, s->entries[i].name);
      printf(",\"days_left\":%ld,\"message\":", days);
      ctl_json_str(stdout, msg);
      putchar('}');
    } else {
      printf("%-9s %s\n", level, msg);
    }
    n++;
  }
  return n;
}

/* Rows ctl_op_alerts printed (-1: the token could not be read).  A file
 * static because ctl_with_store's operations return nothing; sealctl runs
 * one command per process. */
static int ctl_alerts_cert_rows = -1;

static void ctl_op_alerts(const struct ctl *c, const struct certstore *s) {
  if (c->json) printf("[");
  ctl_alerts_cert_rows = ctl_alert_rows(c, s);
}

/* The token's certificate alerts, then the key store's harvest alerts
 * (R19); either half prints even when the other cannot be read, and the
 * exit code is 1 if one could not. */
int ctl_alerts(const struct ctl *c) {
  if (c->argc != 2 || strcmp(c->argv[1], "list") != 0) return ctl_usage_error("alerts needs 'list'%s", "");
  struct config *cfg; /* a bad config is reported once, not by each half */
  int rc = ctl_load(c, &cfg);
  if (rc) return rc;
  config_unref(cfg);
  rc = ctl_with_store(c, ctl_op_alerts);
  int n = ctl_alerts_cert_rows < 0 ? 0 : ctl_alerts_cert_rows;
  if (c->json && ctl_alerts_cert_rows < 0) printf("[");
  int h = ctl_harvest_alerts(c, n);
  if (c->json) printf("]\n");
  else if (rc == 0 && h == 0 && n == 0) printf("no alerts\n");
  return rc || h < 0 ? 1 : 0;
}

/* ---- dispatch ------------------------------------------------------------- */

static int ctl_cert_show(const struct ctl *c) { return ctl_with_cert(c, "", ctl_op_show); }
static int ctl_cert_export(const struct ctl *c) { return ctl_with_cert(c, "", ctl_op_export); }
static int ctl_cert_csr(const struct ctl *c) { return ctl_with_cert(c, "", ctl_op_csr); }
static int ctl_cert_backup_(const struct ctl *c) { return ctl_cert_backup(c, false); }
static int ctl_cert_restore(const struct ctl *c) { return ctl_cert_backup(c, true); }

int ctl_cert(const struct ctl *c) {
  static const struct {
    const char *name;
    int (*fn)(const struct ctl *);
  } cmds[] = {{"create", ctl_cert_create}, {"csr", ctl_cert_csr},       {"import", ctl_cert_import},
              {"list", ctl_cert_list},     {"show", ctl_cert_show},     {"export", ctl_cert_export},
              {"delete", ctl_cert_delete}, {"backup", ctl_cert_backup_}, {"restore", ctl_cert_restore},
              {"check", ctl_cert_check}};
  if (c->argc < 2) return ctl_usage_error("cert needs a subcommand (create, csr, import, list, show, export, "
                                          "delete, backup, restore, check)%s", "");
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
    if (strcmp(c->argv[1], cmds[i].name) == 0) return cmds[i].fn(c);
  return ctl_usage_error("cert: unknown subcommand '%s'", c->argv[1]);
}

/* ---- init ------------------------------------------------------------------ */

static void ctl_hex(char *out, size_t nbytes) {
  unsigned char rnd[32];
  if (getrandom(rnd, nbytes, 0) != (ssize_t)nbytes) exit(1);
  for (size_t i = 0; i < nbytes; i++) snprintf(out + 2 * i, 3, "%02x", rnd[i]);
  OPENSSL_cleanse(rnd, sizeof rnd);
}

/* The token (own SoftHSM2, label sealgate) and the org certificate. */
int ctl_init_token(const char *dir, const char *domain, const char *org, const char *hsm, const char *key_type) {
  if (hsm[0] == '/') {
    printf("  note: --hsm %s: create the token with the vendor's tools, put its user PIN in %s/hsm/pin "
           "(0600), then: sealctl -c %s/sealgate.yaml cert create org --cn %s --san-domains %s\n",
           hsm, dir, dir, domain, domain);
    return 0;
  }
  char so[33], pin[256], err[512], path[4096], conf[4096], text[64];
  ctl_hex(so, 16);
  snprintf(path, sizeof path, "%s/hsm/so-pin", dir);
  snprintf(text, sizeof text, "%s\n", so);
  snprintf(conf, sizeof conf, "%s/hsm/softhsm2.conf", dir);
  int rc = ctl_write_file(path, text, 0600);
  snprintf(path, sizeof path, "%s/hsm/pin", dir);
  if (rc == 0) rc = hsm_read_secret_file(path, true, pin, sizeof pin, err, sizeof err);
  struct hsm_params p = {.mode = HSM_INPROCESS, .token = "sealgate", .pin_file = path, .softhsm_conf = conf};
  if (rc == 0) rc = hsm_token_init(&p, so, pin, err, sizeof err);
  OPENSSL_cleanse(so, sizeof so);
  OPENSSL_cleanse(pin, sizeof pin);
  OPENSSL_cleanse(text, sizeof text);
  struct hsm *h = NULL;
  if (rc == 0) rc = hsm_open(&p, &h, err, sizeof err);
  const char *doms[] = {domain, NULL};
  struct cert_request r = {.cn = domain, .org = org, .days = 730, .san_domains = doms, .n_san_domains = 1};
  bool ec = strcmp(key_type, "ec") == 0;
  if (rc == 0)
    rc = certstore_create(h, "org", &r, ec ? HSM_KEY_EC : HSM_KEY_RSA, ec ? 256 : 2048, false, NULL, err, sizeof err);
  hsm_close(h);
  if (rc) {
    fprintf(stderr, "sealctl: init: cannot create the token or the org certificate: %s\n", err);
    return 1;
  }
  printf("  token: sealgate (SoftHSM2 in %s/hsm/tokens), certificate 'org' for %s (%s key in the token)\n",
         dir, domain, ec ? "EC P-256" : "RSA-2048");
  return 0;
}

int ctl_check_token(const struct config *cfg, char *err, size_t errlen) {
  struct hsm_params p;
  struct hsm *h;
  struct certstore *s = NULL;
  certstore_hsm_params(cfg, NULL, &p);
  int rc = hsm_open(&p, &h, err, errlen);
  if (rc) return rc;
  if ((rc = certstore_load(h, &s)) != 0) snprintf(err, errlen, "cannot list the token: %s", sgerr_str(rc));
  else rc = certstore_check_config(s, cfg, err, errlen);
  certstore_free(s);
  hsm_close(h);
  return rc;
}
