/*
 * sealctl_pubkey - `sealctl pubkey ...` (others' public keys, R15, R16),
 * `sealctl harvested ...` (keys harvested from signed mail, R17-R21),
 * `sealctl ca ...` (CA lists and their CRLs for verification, R22), and
 * the key store's half of `sealctl alerts list` (R19).
 *
 * Works on the LMDB key store at the config's `key_store` directly,
 * whether or not the daemon runs (LMDB has one writer at a time and never
 * blocks readers); after a change it tells a running daemon to reload.
 * A managed key is an explicit trust decision of the administrator: no
 * chain or signature check is made (a promoted harvested key becomes one).
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

/* What a PEM file held, block by block (ctl_pem_read). */
struct ctl_pem {
  STACK_OF(X509) *certs;
  STACK_OF(X509_CRL) *crls; /* set by the caller to accept "X509 CRL" blocks */
  int *crl_block;           /* the file's block number of each CRL */
};

static void ctl_pem_free(struct ctl_pem *p) {
  sk_X509_pop_free(p->certs, X509_free);
  sk_X509_CRL_pop_free(p->crls, X509_CRL_free);
  free(p->crl_block);
}

/* One block: a certificate, or a CRL where they are accepted; anything
 * else (a key, a request, bad DER) is an error naming it. */
static int ctl_pem_block(struct ctl_pem *p, const char *path, int block, const char *name,
                         const unsigned char *data, long len) {
  const unsigned char *d = data;
  bool is_crl = strcmp(name, PEM_STRING_X509_CRL) == 0;
  if (is_crl && p->crls) {
    X509_CRL *c = d2i_X509_CRL(NULL, &d, len);
    int n = sk_X509_CRL_num(p->crls);
    int *blocks = c && d == data + len ? realloc(p->crl_block, (size_t)(n + 1) * sizeof *blocks) : NULL;
    if (blocks && sk_X509_CRL_push(p->crls, c) > 0) {
      p->crl_block = blocks;
      blocks[n] = block;
      return 0;
    }
    if (blocks) p->crl_block = blocks;
    X509_CRL_free(c);
    fprintf(stderr, "sealctl: %s: block %d: not a valid CRL\n", path, block);
    return 1;
  }
  if (strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0) {
    X509 *x = d2i_X509(NULL, &d, len);
    if (x && d == data + len && sk_X509_push(p->certs, x) > 0) return 0;
    X509_free(x);
    fprintf(stderr, "sealctl: %s: block %d: not a PEM certificate (bad DER)\n", path, block);
    return 1;
  }
  fprintf(stderr, "sealctl: %s: block %d: not a PEM certificate%s (%s)\n", path, block, p->crls ? " or CRL" : "",
          name);
  return 1;
}

/* Every PEM block of path, in order, into p (the caller's, also on
 * failure: ctl_pem_free).  At least one certificate is required. */
static int ctl_pem_read(const char *path, struct ctl_pem *p) {
  BIO *b = BIO_new_file(path, "r");
  if (!b) {
    fprintf(stderr, "sealctl: cannot read %s: %s\n", path, strerror(errno));
    ERR_clear_error();
    return 1;
  }
  if (!(p->certs = sk_X509_new_null())) exit(1);
  int rc = 0, block = 1;
  for (;; block++) {
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long len = 0;
    if (!PEM_read_bio(b, &name, &header, &data, &len)) break;
    rc = ctl_pem_block(p, path, block, name, data, len);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    if (rc) break;
  }
  /* The loop ends at the end of the file (no start line) or at a bad block. */
  unsigned long e = ERR_peek_last_error();
  bool eof = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
  BIO_free(b);
  if (rc == 0 && (!eof || sk_X509_num(p->certs) == 0)) {
    const char *why = ERR_reason_error_string(e);
    if (eof && block > 1) fprintf(stderr, "sealctl: %s: holds no certificate\n", path);
    else fprintf(stderr, "sealctl: %s: block %d: not a PEM certificate (%s)\n", path, block, why ? why : "no data");
    rc = 1;
  }
  ERR_clear_error();
  return rc;
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
  struct ctl_pem pem = {0};
  if ((rc = ctl_pem_read(path, &pem)) != 0) {
    ctl_pem_free(&pem);
    return rc;
  }
  STACK_OF(X509) *sk = pem.certs;
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
  ctl_pem_free(&pem);
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

/* Each CRL must come from a CA of the same file (the store's rule, asked
 * here first so the error names the block).  A CRL past its nextUpdate is
 * stored all the same, with a warning: verification decides what a stale
 * CRL means. */
static int ctl_ca_crls_check(const char *path, const struct ctl_pem *pem) {
  char why[512];
  for (int i = 0; i < sk_X509_CRL_num(pem->crls); i++) {
    X509_CRL *crl = sk_X509_CRL_value(pem->crls, i);
    if (keystore_ca_crl_check(pem->certs, crl, why, sizeof why) != 0) {
      fprintf(stderr, "sealctl: %s: block %d: CRL %s\n", path, pem->crl_block[i], why);
      return 1;
    }
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    if (next && X509_cmp_current_time(next) < 0)
      fprintf(stderr, "sealctl: warning: %s: block %d: the CRL is past its nextUpdate\n", path, pem->crl_block[i]);
  }
  return 0;
}

static int ctl_ca_import(const struct ctl *c) {
  int rc = ctl_ks_args(c, 2, "ca import NAME FILE.pem");
  if (rc) return rc;
  const char *name = c->argv[2], *path = c->argv[3];
  char err[512];
  if (keystore_name_check(name, err, sizeof err) != 0) return ctl_usage_error("ca import: %s", err);
  struct ctl_pem pem = {.crls = sk_X509_CRL_new_null()};
  if (!pem.crls) return 1;
  struct ctl_ks k;
  if ((rc = ctl_pem_read(path, &pem)) == 0 && (rc = ctl_ca_crls_check(path, &pem)) == 0 &&
      (rc = ctl_ks_open(c, true, &k)) == 0) {
    rc = keystore_ca_import(k.ks, name, pem.certs, pem.crls, err, sizeof err);
    if (rc) fprintf(stderr, "sealctl: ca import %s: %s: %s\n", name, path, err);
    else printf("imported CA list '%s' (%d certificate(s), %d CRL(s))\n", name, sk_X509_num(pem.certs),
                sk_X509_CRL_num(pem.crls));
    ctl_ks_close(&k, rc == 0);
    rc = rc ? 1 : 0;
  }
  ctl_pem_free(&pem);
  return rc;
}

static int ctl_ca_row(void *arg, const char *name, STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls) {
  struct ctl_pk_list *l = arg;
  bool json = l->c->json;
  int count = sk_X509_num(certs), n_crls = sk_X509_CRL_num(crls);
  if (json) {
    printf("%s{\"name\":", l->n ? ",\n " : "");
    ctl_json_str(stdout, name);
    printf(",\"count\":%d,\"crls\":%d,\"subjects\":[", count, n_crls);
  } else {
    printf("%-24s %5d %5d  ", name, count, n_crls);
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
  else printf("%-24s %5s %5s  %s\n", "NAME", "COUNT", "CRLS", "SUBJECTS");
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

/* ---- harvested ---------------------------------------------------------------- */

static void ctl_hv_caps(unsigned caps, char *out, size_t cap) {
  static const struct {
    unsigned bit;
    const char *name;
  } names[] = {{KEYSTORE_CAP_AES256_GCM, "aes256-gcm"}, {KEYSTORE_CAP_AES128_GCM, "aes128-gcm"},
               {KEYSTORE_CAP_RSA_OAEP, "rsa-oaep"}};
  size_t n = 0;
  out[0] = '\0';
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if ((caps & names[i].bit) && n < cap) n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "," : "", names[i].name);
  if (!out[0]) snprintf(out, cap, "-");
}

static void ctl_hv_caps_json(unsigned caps) {
  char text[64];
  ctl_hv_caps(caps, text, sizeof text);
  printf(",\"caps\":[");
  for (char *save = NULL, *w = strcmp(text, "-") ? strtok_r(text, ",", &save) : NULL; w; w = strtok_r(NULL, ",", &save))
    printf("%s\"%s\"", w == text ? "" : ",", w);
  putchar(']');
}

/* The members list and show share after the certificate's own: status,
 * caps, added, last use (null for a held candidate: never used). */
static void ctl_hv_json_tail(const struct keystore_harvested *h) {
  char added[32], used[32];
  ctl_ks_iso(h->added, added, sizeof added);
  ctl_ks_iso(h->last_used, used, sizeof used);
  printf(",\"status\":\"%s\",\"held\":%s", h->held ? "held" : "active", h->held ? "true" : "false");
  ctl_hv_caps_json(h->caps);
  printf(",\"added\":\"%s\",\"last_used\":", added);
  if (h->held) printf("null}");
  else printf("\"%s\"}", used);
}

static int ctl_hv_row(void *arg, const struct keystore_harvested *h) {
  struct ctl_pk_list *l = arg;
  struct cert_info ci;
  int rc = cert_info_get(h->cert, &ci);
  if (rc) return rc;
  char caps[64], added[32], used[32];
  ctl_hv_caps(h->caps, caps, sizeof caps);
  ctl_ks_iso(h->added, added, sizeof added);
  ctl_ks_iso(h->last_used, used, sizeof used);
  if (!l->c->json) {
    printf("%-32s %-6s %-20s %-20s %-20s %-20s %-40s %s\n", h->key, h->held ? "held" : "active", ci.not_after, caps,
           added, h->held ? "-" : used, ci.subject, ci.issuer);
  } else {
    printf("%s{\"name\":", l->n ? ",\n " : "");
    ctl_json_str(stdout, h->key);
    printf(",\"subject\":");
    ctl_json_str(stdout, ci.subject);
    printf(",\"issuer\":");
    ctl_json_str(stdout, ci.issuer);
    ctl_json_list("emails", ci.san_email, ci.n_san_email);
    ctl_json_list("domains", ci.san_dns, ci.n_san_dns);
    printf(",\"not_before\":\"%s\",\"not_after\":\"%s\",\"fingerprint\":\"%s\",\"uses\":\"%s\"", ci.not_before,
           ci.not_after, ci.fingerprint, ctl_uses(ci.uses));
    ctl_hv_json_tail(h);
  }
  l->n++;
  cert_info_free(&ci);
  return 0;
}

static int ctl_hv_list(const struct ctl *c) {
  int rc = ctl_ks_args(c, 0, "harvested list");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, false, &k)) != 0) return rc;
  struct ctl_pk_list l = {c, 0};
  if (c->json) printf("[");
  else printf("%-32s %-6s %-20s %-20s %-20s %-20s %-40s %s\n", "KEY", "STATUS", "NOT AFTER", "CAPS", "ADDED",
              "LAST USED", "SUBJECT", "ISSUER");
  rc = keystore_harvest_each(k.ks, ctl_hv_row, &l);
  if (c->json) printf("]\n");
  if (rc) fprintf(stderr, "sealctl: harvested list: %s\n", sgerr_str(rc));
  ctl_ks_close(&k, false);
  return rc ? 1 : 0;
}

/* One record of `harvested show`: the certificate as `pubkey show` prints
 * it, then what the harvest knows. */
static int ctl_hv_show_one(void *arg, const struct keystore_harvested *h) {
  struct ctl_pk_list *l = arg;
  struct cert_info ci;
  int rc = cert_info_get(h->cert, &ci);
  if (rc) return rc;
  if (l->c->json) {
    printf(l->n ? ",\n " : "["); /* an array only when there is a record: not found prints nothing */
    ctl_cert_info_print(true, h->key, &ci);
    ctl_hv_json_tail(h);
  } else {
    char caps[64], added[32], used[32];
    ctl_hv_caps(h->caps, caps, sizeof caps);
    ctl_ks_iso(h->added, added, sizeof added);
    ctl_ks_iso(h->last_used, used, sizeof used);
    if (l->n) putchar('\n');
    ctl_cert_info_print(false, h->key, &ci);
    if (h->held)
      printf("status:       held (waiting for an administrator; never used for mail: sealctl harvested promote "
             "%s NAME)\n", h->key);
    else printf("status:       active (used to encrypt to %s when no public key was added for it)\n", h->key);
    printf("caps:         %s\nadded:        %s\nlast used:    %s\n", caps, added, h->held ? "-" : used);
  }
  l->n++;
  cert_info_free(&ci);
  return 0;
}

static int ctl_hv_show(const struct ctl *c) {
  int rc = ctl_ks_args(c, 1, "harvested show ADDRESS");
  struct ctl_ks k;
  if (rc || (rc = ctl_ks_open(c, false, &k)) != 0) return rc;
  struct ctl_pk_list l = {c, 0};
  rc = keystore_harvest_get(k.ks, c->argv[2], ctl_hv_show_one, &l);
  if (c->json && l.n) printf("]\n");
  if (rc == SG_ENOTFOUND) fprintf(stderr, "sealctl: no harvested key for '%s'\n", c->argv[2]);
  else if (rc) fprintf(stderr, "sealctl: harvested show %s: %s\n", c->argv[2], sgerr_str(rc));
  ctl_ks_close(&k, false);
  return rc ? 1 : 0;
}

static int ctl_hv_held(void *arg, const struct keystore_harvested *h) {
  if (h->held) *(bool *)arg = true;
  return 0;
}

static int ctl_hv_promote(const struct ctl *c) {
  int rc = ctl_ks_args(c, 2, "harvested promote ADDRESS NAME");
  if (rc) return rc;
  const char *key = c->argv[2], *name = c->argv[3];
  char err[512];
  if (keystore_name_check(name, err, sizeof err) != 0) return ctl_usage_error("harvested promote: %s", err);
  struct ctl_ks k;
  if ((rc = ctl_ks_open(c, true, &k)) != 0) return rc;
  bool held = false;
  keystore_harvest_get(k.ks, key, ctl_hv_held, &held); /* only for the message: promote decides */
  rc = keystore_harvest_promote(k.ks, key, name, time(NULL), err, sizeof err);
  if (rc) fprintf(stderr, "sealctl: harvested promote %s: %s\n", key, err);
  else if (held)
    printf("promoted the held key of %s to public key '%s'; it is now also the active harvested key\n", key, name);
  else printf("copied the harvested key of %s to public key '%s'\n", key, name);
  ctl_ks_close(&k, rc == 0);
  return rc ? 1 : 0;
}

int ctl_harvested(const struct ctl *c) {
  if (c->argc < 2) return ctl_usage_error("harvested needs a subcommand (list, show, promote)%s", "");
  if (strcmp(c->argv[1], "list") == 0) return ctl_hv_list(c);
  if (strcmp(c->argv[1], "show") == 0) return ctl_hv_show(c);
  if (strcmp(c->argv[1], "promote") == 0) return ctl_hv_promote(c);
  return ctl_usage_error("harvested: unknown subcommand '%s'", c->argv[1]);
}

/* ---- alerts list: the key store's alerts -------------------------------------- */

struct ctl_alerts {
  const struct ctl *c;
  int n; /* rows printed so far, certificate alerts included */
};

static int ctl_alert_row(void *arg, time_t when, const char *key, const char *text) {
  struct ctl_alerts *a = arg;
  char iso[32];
  ctl_ks_iso(when, iso, sizeof iso);
  if (a->c->json) {
    printf("%s{\"level\":\"warning\",\"kind\":\"harvest-update\",\"name\":", a->n ? ",\n " : "");
    ctl_json_str(stdout, key);
    printf(",\"time\":\"%s\",\"message\":", iso);
    ctl_json_str(stdout, text);
    putchar('}');
  } else {
    printf("%-9s %s harvested key %s: %s\n", "warning", iso, key, text);
  }
  a->n++;
  return 0;
}

int ctl_harvest_alerts(const struct ctl *c, int n_before) {
  struct config *cfg;
  if (ctl_load(c, &cfg) != 0) return -1;
  struct keystore *ks;
  char err[512];
  struct ctl_alerts a = {c, n_before};
  int rc = keystore_open(cfg->key_store, false, &ks, err, sizeof err);
  if (rc == 0) {
    rc = keystore_alert_each(ks, ctl_alert_row, &a);
    if (rc) snprintf(err, sizeof err, "%s: %s", cfg->key_store, sgerr_str(rc));
    keystore_close(ks);
  }
  if (rc) fprintf(stderr, "sealctl: the key store's alerts cannot be listed: %s\n", err);
  config_unref(cfg);
  return rc ? -1 : a.n - n_before;
}
