/*
 * sealctl_pubkey - `sealctl pubkey ...` (others' public keys, R15, R16)
 * and `sealctl ca ...` (CA lists for verification, R22).
 *
 * Works on the LMDB key store at the config's `key_store` directly,
 * whether or not the daemon runs (LMDB has one writer at a time and never
 * blocks readers); after a change it tells a running daemon to reload.
 * A managed key is an explicit trust decision of the administrator: no
 * chain or signature check is made.
 *
 * Untrusted input: arguments (each unexpected word is a usage error) and
 * PEM files (each bad block is an error naming the file and block).  Exit
 * codes: 0 success, 1 failed operation, 2 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/keystore.h"
#include "tools/sealctl.h"

/* ---- opening the store -------------------------------------------------------- */

struct ctl_ks {
  struct config *cfg;
  struct keystore *ks;
};

static int ctl_ks_open(const struct ctl *c, bool write, struct ctl_ks *k) {
  memset(k, 0, sizeof *k);
  int rc = ctl_load(c, &k->cfg);
  if (rc) return rc;
  char err[512];
  if (keystore_open(k->cfg->key_store, write, &k->ks, err, sizeof err) != 0) {
    fprintf(stderr, "sealctl: %s\n", err);
    config_unref(k->cfg);
    return 1;
  }
  return 0;
}

/* Files root (sealctl) created in a key store owned by the daemon's user
 * must become that user's, or the daemon cannot open them.  Never follows
 * a symlink: the folder belongs to a less trusted user. */
static void ctl_ks_fix_owner(const char *dir) {
  struct stat st;
  if (geteuid() != 0 || stat(dir, &st) != 0 || st.st_uid == 0) return;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;
  static const char *files[] = {"data.mdb", "lock.mdb"};
  for (size_t i = 0; i < 2; i++)
    if (fchownat(dfd, files[i], st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != ENOENT)
      fprintf(stderr, "sealctl: warning: cannot give %s/%s to uid %u: %s\n", dir, files[i],
              (unsigned)st.st_uid, strerror(errno));
  close(dfd);
}

static void ctl_ks_close(struct ctl_ks *k, bool changed) {
  keystore_close(k->ks);
  if (changed) {
    ctl_ks_fix_owner(k->cfg->key_store);
    ctl_notify_daemon(k->cfg);
  }
  config_unref(k->cfg);
}

/* Exactly n positional words after the subcommand, no options ("-" is a
 * word: standard input or output). */
static int ctl_ks_args(const struct ctl *c, int n, const char *usage) {
  for (int i = 2; i < c->argc; i++)
    if (c->argv[i][0] == '-' && c->argv[i][1]) return ctl_usage_error("unknown option %s", c->argv[i]);
  if (c->argc != 2 + n) return ctl_usage_error("usage: sealctl %s", usage);
  return 0;
}

/* Every PEM certificate in path, in order (*out owned by the caller). */
static int ctl_ks_read_pem(const char *path, STACK_OF(X509) **out) {
  BIO *b = BIO_new_file(path, "r");
  if (!b) {
    fprintf(stderr, "sealctl: cannot read %s: %s\n", path, strerror(errno));
    ERR_clear_error();
    return 1;
  }
  STACK_OF(X509) *sk = sk_X509_new_null();
  X509 *x;
  while (sk && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) sk_X509_push(sk, x);
  /* The loop ends at the end of the file (no start line) or at a bad block. */
  unsigned long e = ERR_peek_last_error();
  bool eof = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
  BIO_free(b);
  int n = sk_X509_num(sk);
  if (!eof || n <= 0) {
    const char *why = ERR_reason_error_string(e);
    fprintf(stderr, "sealctl: %s: block %d: not a PEM certificate (%s)\n", path, n + 1, why ? why : "no data");
    sk_X509_pop_free(sk, X509_free);
    ERR_clear_error();
    return 1;
  }
  ERR_clear_error();
  *out = sk;
  return 0;
}

/* ---- describing a certificate ------------------------------------------------- */

static void ctl_ks_iso(time_t t, char *out, size_t cap) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void ctl_pk_describe(bool json, const char *name, const struct cert_info *ci, const char *added) {
  ctl_cert_info_print(json, name, ci);
  if (json) {
    printf(",\"added\":");
    ctl_json_str(stdout, added);
    printf(",\"trust\":\"explicit\"}\n");
  } else {
    printf("added:        %s\ntrust:        explicit (added by an administrator; no chain check)\n", added);
  }
}

/* ---- pubkey add, delete, show ------------------------------------------------- */

/* Keys that lookups will never use are still added (they may be wanted
 * later, or for verification), but the administrator hears why. */
static void ctl_pk_warn(const char *name, X509 *x) {
  struct cert_info ci;
  if (cert_info_get(x, &ci) != 0) return;
  if (!(ci.uses & CERT_USE_ENCRYPT))
    fprintf(stderr, "sealctl: warning: '%s' is not fit for encryption (key usage %s; R13 needs "
            "keyEncipherment, or keyAgreement for EC): mail will not be encrypted with it\n", name, ci.key_usage);
  if (ci.not_after_t < time(NULL))
    fprintf(stderr, "sealctl: warning: '%s' expired on %s: mail will not be encrypted with it\n", name,
            ci.not_after);
  cert_info_free(&ci);
}

static int ctl_pk_add(const struct ctl *c) {
  int rc = ctl_ks_args(c, 2, "pubkey add NAME FILE.pem");
  if (rc) return rc;
  const char *name = c->argv[2], *path = c->argv[3];
  char err[512];
  if (keystore_name_check(name, err, sizeof err) != 0) return ctl_usage_error("pubkey add: %s", err);
  STACK_OF(X509) *sk;
  if ((rc = ctl_ks_read_pem(path, &sk)) != 0) return rc;
  struct ctl_ks k;
  if (sk_X509_num(sk) != 1) {
    fprintf(stderr, "sealctl: %s holds %d certificates; pubkey add takes one (pubkey import takes many)\n",
            path, sk_X509_num(sk));
    rc = 1;
  } else if ((rc = ctl_ks_open(c, true, &k)) == 0) {
    X509 *x = sk_X509_value(sk, 0);
    rc = keystore_pubkey_add(k.ks, name, x, err, sizeof err);
    if (rc) fprintf(stderr, "sealctl: pubkey add %s: %s: %s\n", name, path, err);
    else {
      printf("added public key '%s' (an explicit trust decision: no chain check was made)\n", name);
      ctl_pk_warn(name, x);
    }
    ctl_ks_close(&k, rc == 0);
    rc = rc ? 1 : 0;
  }
  sk_X509_pop_free(sk, X509_free);
  return rc;
}

static int ctl_pk_delete(const struct ctl *c) {
  int rc = ctl_ks_args(c, 1, "pubkey delete NAME");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, true, &k)) != 0) return rc;
  const char *name = c->argv[2];
  rc = keystore_pubkey_delete(k.ks, name);
  if (rc == SG_ENOTFOUND) fprintf(stderr, "sealctl: no public key named '%s'\n", name);
  else if (rc) fprintf(stderr, "sealctl: pubkey delete %s: %s\n", name, sgerr_str(rc));
  else printf("deleted public key '%s'\n", name);
  ctl_ks_close(&k, rc == 0);
  return rc ? 1 : 0;
}

static int ctl_pk_show(const struct ctl *c) {
  int rc = ctl_ks_args(c, 1, "pubkey show NAME");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, false, &k)) != 0) return rc;
  const char *name = c->argv[2];
  X509 *x = NULL;
  time_t added;
  struct cert_info ci;
  rc = keystore_pubkey_get(k.ks, name, &x, &added);
  if (rc == SG_ENOTFOUND) fprintf(stderr, "sealctl: no public key named '%s'\n", name);
  else if (rc || (rc = cert_info_get(x, &ci)) != 0) fprintf(stderr, "sealctl: pubkey show %s: %s\n", name, sgerr_str(rc));
  else {
    char when[32];
    ctl_ks_iso(added, when, sizeof when);
    ctl_pk_describe(c->json, name, &ci, when);
    cert_info_free(&ci);
  }
  X509_free(x);
  ctl_ks_close(&k, false);
  return rc ? 1 : 0;
}

/* ---- pubkey list -------------------------------------------------------------- */

/* A listing in progress (pubkey list, ca list). */
struct ctl_pk_list {
  const struct ctl *c;
  size_t n;
};

static void ctl_pk_row_text(const char *name, const struct cert_info *ci) {
  printf("%-24s ", name);
  int w = 0;
  for (size_t i = 0; i < ci->n_san_email + ci->n_san_dns; i++) {
    const char *id = i < ci->n_san_email ? ci->san_email[i] : ci->san_dns[i - ci->n_san_email];
    w += printf("%s%s", i ? "," : "", id);
  }
  printf("%*s %-21s %s\n", w < 40 ? 40 - w : 0, "", ci->not_after, ctl_uses(ci->uses));
}

static int ctl_pk_row(void *arg, const char *name, X509 *x, time_t added) {
  (void)added;
  struct ctl_pk_list *l = arg;
  struct cert_info ci;
  int rc = cert_info_get(x, &ci);
  if (rc) return rc;
  if (!l->c->json) {
    ctl_pk_row_text(name, &ci);
  } else {
    printf("%s{\"name\":", l->n ? ",\n " : "");
    ctl_json_str(stdout, name);
    printf(",\"subject\":");
    ctl_json_str(stdout, ci.subject);
    ctl_json_list("emails", ci.san_email, ci.n_san_email);
    ctl_json_list("domains", ci.san_dns, ci.n_san_dns);
    printf(",\"not_after\":\"%s\",\"fingerprint\":\"%s\",\"uses\":\"%s\"}", ci.not_after, ci.fingerprint,
           ctl_uses(ci.uses));
  }
  l->n++;
  cert_info_free(&ci);
  return 0;
}

static int ctl_pk_list(const struct ctl *c) {
  int rc = ctl_ks_args(c, 0, "pubkey list");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, false, &k)) != 0) return rc;
  struct ctl_pk_list l = {c, 0};
  if (c->json) printf("[");
  else printf("%-24s %-40s %-21s %s\n", "NAME", "EMAILS/DOMAINS", "NOT AFTER", "USES");
  rc = keystore_pubkey_each(k.ks, ctl_pk_row, &l);
  if (c->json) printf("]\n");
  if (rc) fprintf(stderr, "sealctl: pubkey list: %s\n", sgerr_str(rc));
  ctl_ks_close(&k, false);
  return rc ? 1 : 0;
}

/* ---- pubkey export, import ---------------------------------------------------- */

/* To a temporary file renamed over FILE, so a failed export never leaves
 * half a file where a good one was. */
static int ctl_pk_export(const struct ctl *c) {
  int rc = ctl_ks_args(c, 1, "pubkey export FILE");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, false, &k)) != 0) return rc;
  const char *path = c->argv[2];
  bool std = strcmp(path, "-") == 0;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = std ? stdout : fopen(tmp, "w");
  size_t n = 0;
  if (!f) rc = sgerr_from_errno(errno);
  else rc = keystore_pubkey_export(k.ks, f, &n);
  if (!std && f) {
    if (rc == 0 && fsync(fileno(f)) != 0) rc = SG_EIO;
    if (fclose(f) != 0 && rc == 0) rc = SG_EIO;
    if (rc == 0 && rename(tmp, path) != 0) rc = sgerr_from_errno(errno);
    if (rc) unlink(tmp);
  }
  if (rc) fprintf(stderr, "sealctl: pubkey export %s: %s\n", path, sgerr_str(rc));
  else fprintf(std ? stderr : stdout, "exported %zu public keys to %s\n", n, std ? "standard output" : path);
  ctl_ks_close(&k, false);
  return rc ? 1 : 0;
}

/* Progress on a terminal only: a script reading stderr wants one line. */
static void ctl_pk_progress(void *arg, size_t done) {
  (void)arg;
  fprintf(stderr, "\rimported %zu keys...", done);
}

static int ctl_pk_import(const struct ctl *c) {
  int rc = ctl_ks_args(c, 1, "pubkey import FILE");
  if (rc) return rc;
  const char *path = c->argv[2];
  bool std = strcmp(path, "-") == 0;
  FILE *f = std ? stdin : fopen(path, "r");
  if (!f) {
    fprintf(stderr, "sealctl: cannot read %s: %s\n", path, strerror(errno));
    return 1;
  }
  struct ctl_ks k;
  if ((rc = ctl_ks_open(c, true, &k)) == 0) {
    char err[1024];
    size_t n;
    bool tty = isatty(STDERR_FILENO);
    rc = keystore_pubkey_import(k.ks, f, path, tty ? ctl_pk_progress : NULL, NULL, &n, err, sizeof err);
    if (tty) fprintf(stderr, "\r\033[K");
    if (rc) fprintf(stderr, "sealctl: pubkey import: %s (nothing was imported)\n", err);
    else printf("imported %zu public keys from %s\n", n, path);
    ctl_ks_close(&k, rc == 0);
    rc = rc ? 1 : 0;
  }
  if (!std) fclose(f);
  return rc;
}

int ctl_pubkey(const struct ctl *c) {
  static const struct {
    const char *name;
    int (*fn)(const struct ctl *);
  } cmds[] = {{"add", ctl_pk_add},       {"list", ctl_pk_list},     {"show", ctl_pk_show},
              {"delete", ctl_pk_delete}, {"export", ctl_pk_export}, {"import", ctl_pk_import}};
  if (c->argc < 2) return ctl_usage_error("pubkey needs a subcommand (add, list, show, delete, export, import)%s", "");
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
    if (strcmp(c->argv[1], cmds[i].name) == 0) return cmds[i].fn(c);
  return ctl_usage_error("pubkey: unknown subcommand '%s'", c->argv[1]);
}

/* ---- ca ----------------------------------------------------------------------- */

static int ctl_ca_import(const struct ctl *c) {
  int rc = ctl_ks_args(c, 2, "ca import NAME FILE.pem");
  if (rc) return rc;
  const char *name = c->argv[2], *path = c->argv[3];
  char err[512];
  if (keystore_name_check(name, err, sizeof err) != 0) return ctl_usage_error("ca import: %s", err);
  STACK_OF(X509) *sk;
  if ((rc = ctl_ks_read_pem(path, &sk)) != 0) return rc;
  struct ctl_ks k;
  if ((rc = ctl_ks_open(c, true, &k)) == 0) {
    rc = keystore_ca_import(k.ks, name, sk, NULL, err, sizeof err);
    if (rc) fprintf(stderr, "sealctl: ca import %s: %s: %s\n", name, path, err);
    else printf("imported CA list '%s' (%d certificate(s))\n", name, sk_X509_num(sk));
    ctl_ks_close(&k, rc == 0);
    rc = rc ? 1 : 0;
  }
  sk_X509_pop_free(sk, X509_free);
  return rc;
}

static int ctl_ca_row(void *arg, const char *name, STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls) {
  struct ctl_pk_list *l = arg;
  (void)crls; /* XXX(#5): shown with the CRL import */
  bool json = l->c->json;
  int count = sk_X509_num(certs);
  if (json) {
    printf("%s{\"name\":", l->n ? ",\n " : "");
    ctl_json_str(stdout, name);
    printf(",\"count\":%d,\"subjects\":[", count);
  } else {
    printf("%-24s %5d  ", name, count);
  }
  for (int i = 0; i < count; i++) {
    char subj[512];
    X509_NAME_oneline(X509_get_subject_name(sk_X509_value(certs, i)), subj, sizeof subj);
    if (json) {
      if (i) putchar(',');
      ctl_json_str(stdout, subj);
    } else {
      printf("%s%s", i ? "; " : "", subj);
    }
  }
  printf(json ? "]}" : "\n");
  l->n++;
  return 0;
}

static int ctl_ca_list(const struct ctl *c) {
  int rc = ctl_ks_args(c, 0, "ca list");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, false, &k)) != 0) return rc;
  struct ctl_pk_list l = {c, 0};
  if (c->json) printf("[");
  else printf("%-24s %5s  %s\n", "NAME", "COUNT", "SUBJECTS");
  rc = keystore_ca_each(k.ks, ctl_ca_row, &l);
  if (c->json) printf("]\n");
  if (rc) fprintf(stderr, "sealctl: ca list: %s\n", sgerr_str(rc));
  ctl_ks_close(&k, false);
  return rc ? 1 : 0;
}

static int ctl_ca_delete(const struct ctl *c) {
  int rc = ctl_ks_args(c, 1, "ca delete NAME");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, true, &k)) != 0) return rc;
  const char *name = c->argv[2];
  rc = keystore_ca_delete(k.ks, name);
  if (rc == SG_ENOTFOUND) fprintf(stderr, "sealctl: no CA list named '%s'\n", name);
  else if (rc) fprintf(stderr, "sealctl: ca delete %s: %s\n", name, sgerr_str(rc));
  else printf("deleted CA list '%s'\n", name);
  ctl_ks_close(&k, rc == 0);
  return rc ? 1 : 0;
}

int ctl_ca(const struct ctl *c) {
  if (c->argc < 2) return ctl_usage_error("ca needs a subcommand (import, list, delete)%s", "");
  if (strcmp(c->argv[1], "import") == 0) return ctl_ca_import(c);
  if (strcmp(c->argv[1], "list") == 0) return ctl_ca_list(c);
  if (strcmp(c->argv[1], "delete") == 0) return ctl_ca_delete(c);
  return ctl_usage_error("ca: unknown subcommand '%s'", c->argv[1]);
}
