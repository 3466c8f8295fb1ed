/*
 * sealctl - the administrator's command line (INTERFACE.md "Admin commands").
 *
 * Reads the config named by -c; talks to a running daemon through
 * DIR/control.sock; works on the instance's files directly when the
 * command allows it and no daemon runs.  Exit codes: 0 success, 1 the
 * operation failed, 2 bad usage.  Arguments are untrusted: every
 * unexpected word is a usage error naming it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/control.h"
#include "core/sgerr.h"
#include "core/spool.h"
#include "crypto/keystore.h"
#include "crypto/verify.h"

#include "tools/json.h"
#include "tools/sealctl.h"

int ctl_usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "sealctl: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (try --help)\n");
  return 2;
}

static void ctl_usage(FILE *f) {
  fprintf(f,
          "usage: sealctl [-c CONFIG] [--json] COMMAND ...\n"
          "  init DIR [--domain D] [--org O] [--hostname H] [--hsm remote|inprocess|PATH]\n"
          "           [--key-type rsa|ec] [--listen ADDR:PORT] [--next-hop ADDR:PORT]\n"
          "  config check          validate the configuration\n"
          "  reload                make the running daemon load its configuration\n"
          "  queue list            messages waiting for delivery\n"
          "  queue flush           retry every deferred message now\n"
          "  cert create NAME --cn FQDN [--org O] [--ou OU] [--city L] [--state ST]\n"
          "       [--country CC] [--days N] [--san-domains a.com,*.b.net] [--san-emails x@a.com,...]\n"
          "       [--key-type rsa|ec] [--key-size 2048|3072|4096|256|384] [--fqdn-validate] [--renew]\n"
          "  cert csr NAME         PEM certificate signing request on stdout\n"
          "  cert import NAME FILE.p12 --password-file F [--renew]\n"
          "  cert list | show NAME | export NAME | delete NAME\n"
          "  cert backup FILE --password-file F\n"
          "  cert restore FILE --password-file F [--replace]\n"
          "  cert check NAME [--count N]   sign through the token and verify\n"
          "  alerts list           certificates expiring within 30 days, harvested key updates\n"
          "  pubkey add NAME FILE.pem   others' certificate (explicit trust: no chain check)\n"
          "  pubkey list | show NAME | delete NAME\n"
          "  pubkey export FILE | import FILE   all public keys as text (\"-\" = stdout/stdin)\n"
          "  harvested list        keys harvested from signed mail (active and held)\n"
          "  harvested show ADDRESS\n"
          "  harvested promote ADDRESS NAME   copy into the public keys (a held key also\n"
          "                        becomes the active harvested one)\n"
          "  ca import NAME FILE.pem   a CA list (certificates and their CRLs) for verifying\n"
          "                        incoming mail\n"
          "  ca list | delete NAME\n"
          "  quarantine list [NAME] | show ID [--body] | release ID | delete ID\n"
          "  profile list | show NAME | export FILE | import FILE | search TEXT | delete NAME\n"
          "                        sending profiles (in the config; \"-\" = stdout/stdin)\n"
          "Global options -c and --json may stand anywhere. Exit 0 success,\n"
          "1 failed operation, 2 bad usage.\n");
}

/* ---- config and control helpers -------------------------------------------- */

int ctl_load(const struct ctl *c, struct config **out) {
  if (!c->config) {
    fprintf(stderr, "sealctl: -c CONFIG is required for this command\n");
    return 2;
  }
  char err[1024];
  if (config_load(c->config, out, err, sizeof err) != 0) {
    fprintf(stderr, "sealctl: %s\n", err);
    return 1;
  }
  return 0;
}

int ctl_request(const struct config *cfg, const char *cmd, struct buf *out) {
  char path[4096];
  snprintf(path, sizeof path, "%s/control.sock", cfg->dir);
  int rc = control_request(path, cmd, CTL_TIMEOUT_MS, out);
  if (rc == SG_ENOTFOUND) fprintf(stderr, "sealctl: no sealgate daemon is running for %s\n", cfg->path);
  else if (rc == SG_EINVAL) fprintf(stderr, "sealctl: %s: %.*s\n", cmd, (int)out->len, out->data ? out->data : "");
  else if (rc) fprintf(stderr, "sealctl: %s: %s\n", cmd, sgerr_str(rc));
  return rc;
}

/* Quiet when no daemon runs: the change is on disk and a starting daemon
 * reads it anyway. */
void ctl_notify_daemon(const struct config *cfg) {
  char path[4200];
  snprintf(path, sizeof path, "%s/control.sock", cfg->dir);
  struct buf out = BUF_INIT;
  int rc = control_request(path, "keys reload", CTL_TIMEOUT_MS, &out);
  if (rc == 0) printf("the running daemon reloaded its keys\n");
  else if (rc != SG_ENOTFOUND)
    fprintf(stderr, "sealctl: warning: the running daemon did not reload its keys: %.*s\n", (int)out.len,
            out.data ? out.data : sgerr_str(rc));
  buf_free(&out);
}

void ctl_json_str(FILE *f, const char *s) { tool_json_str(f, s); }

/* ---- queue ----------------------------------------------------------------- */

static void ctl_scan_row(struct spool_msg *m, const char *path, void *arg) {
  (void)path;
  struct buf *out = arg;
  buf_appendf(out, "%s\t%" PRIu64 "\t%zu\t0\t0\t%s\t", m->env.queue_id, m->env.arrival_ms,
              m->data_len, m->env.sender);
  for (size_t i = 0; i < m->env.n_rcpts; i++) buf_appendf(out, "%s%s", i ? "\x1f" : "", m->env.rcpts[i]);
  buf_appendf(out, "\t(daemon not running)\n");
}

static void ctl_time(uint64_t ms, char *out, size_t cap) {
  if (ms == 0) {
    snprintf(out, cap, "-");
    return;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One row: id arrival size attempts next_try sender rcpts error (tabs). */
static void ctl_queue_row(const struct ctl *c, char *line, bool first) {
  char *f[8] = {0};
  int n = 0;
  for (char *p = line; n < 8; n++) {
    f[n] = p;
    char *tab = strchr(p, '\t');
    if (!tab) {
      n++;
      break;
    }
    *tab = '\0';
    p = tab + 1;
  }
  if (n < 8) return;
  char arr[32], next[32];
  ctl_time(strtoull(f[1], NULL, 10), arr, sizeof arr);
  ctl_time(strtoull(f[4], NULL, 10), next, sizeof next);
  if (!c->json) {
    for (char *p = f[6]; *p; p++)
      if (*p == '\x1f') *p = ' ';
    printf("%-20s %-20s %8s %3s %-20s <%s> %s  %s\n", f[0], arr, f[2], f[3], next, f[5], f[6], f[7]);
    return;
  }
  printf("%s{\"id\":", first ? "" : ",\n ");
  ctl_json_str(stdout, f[0]);
  printf(",\"arrival\":\"%s\",\"size\":%s,\"attempts\":%s,\"next_try\":\"%s\",\"sender\":", arr, f[2],
         f[3], next);
  ctl_json_str(stdout, f[5]);
  printf(",\"recipients\":[");
  char *save = NULL;
  bool one = true;
  for (char *r = strtok_r(f[6], "\x1f", &save); r; r = strtok_r(NULL, "\x1f", &save), one = false) {
    if (!one) putchar(',');
    ctl_json_str(stdout, r);
  }
  printf("],\"last_error\":");
  ctl_json_str(stdout, f[7]);
  putchar('}');
}

static int ctl_queue(const struct ctl *c) {
  if (c->argc != 2 || (strcmp(c->argv[1], "list") && strcmp(c->argv[1], "flush")))
    return ctl_usage_error("queue needs 'list' or 'flush'%s", "");
  struct config *cfg;
  int rc = ctl_load(c, &cfg);
  if (rc) return rc;
  struct buf out = BUF_INIT;
  bool list = strcmp(c->argv[1], "list") == 0;
  rc = ctl_request(cfg, list ? "queue list" : "queue flush", &out);
  if (rc == SG_ENOTFOUND && list) { /* no daemon: the spool on disk is the truth */
    fprintf(stderr, "sealctl: reading the spool directly\n");
    buf_reset(&out);
    rc = spool_scan(cfg->spool_dir, ctl_scan_row, &out) < 0 ? SG_EIO : 0;
  }
  if (rc == 0 && list) {
    if (c->json) printf("[");
    else printf("%-20s %-20s %8s %3s %-20s %s\n", "ID", "ARRIVAL", "SIZE", "TRY", "NEXT TRY", "SENDER RECIPIENTS  LAST ERROR");
    char *save = NULL;
    bool first = true;
    for (char *l = out.data ? strtok_r(out.data, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
      ctl_queue_row(c, l, first);
      first = false;
    }
    if (c->json) printf("]\n");
  } else if (rc == 0) {
    printf("deferred messages are being retried now\n");
  }
  buf_free(&out);
  config_unref(cfg);
  return rc ? 1 : 0;
}

static int ctl_reload(const struct ctl *c) {
  if (c->argc != 1) return ctl_usage_error("unexpected argument '%s' after reload", c->argv[1]);
  struct config *cfg;
  int rc = ctl_load(c, &cfg); /* catch errors here first, with the line number */
  if (rc) return rc;
  struct buf out = BUF_INIT;
  rc = ctl_request(cfg, "reload", &out);
  if (rc == 0) printf("reloaded\n");
  buf_free(&out);
  config_unref(cfg);
  return rc ? 1 : 0;
}

/* The verification anchors the daemon would build (CA lists, CRLs of the
 * key store, trust.crl_files): an unreadable CRL file stops a start. */
static int ctl_check_trust(const struct config *cfg, char *err, size_t errlen) {
  struct keystore *ks = NULL;
  struct verify_trust *t = NULL;
  struct stat st;
  int rc = stat(cfg->key_store, &st) == 0 ? keystore_open(cfg->key_store, false, &ks, err, errlen) : 0;
  if (rc == 0) rc = verify_trust_new(ks, cfg->trust_system_cas, cfg->trust_crl_files, cfg->n_trust_crl_files, &t, err,
                                     errlen);
  verify_trust_free(t);
  keystore_close(ks);
  return rc;
}

static int ctl_config(const struct ctl *c) {
  if (c->argc != 2 || strcmp(c->argv[1], "check") != 0) return ctl_usage_error("config needs 'check'%s", "");
  struct config *cfg;
  int rc = ctl_load(c, &cfg);
  if (rc) return rc;
  char err[1024];
  if ((rc = ctl_check_token(cfg, err, sizeof err)) != 0 || (rc = ctl_check_trust(cfg, err, sizeof err)) != 0) {
    fprintf(stderr, "sealctl: %s: %s\n", cfg->path, err);
    config_unref(cfg);
    return 1;
  }
  if (c->json) printf("{\"ok\":true,\"listeners\":%zu}\n", cfg->n_listeners);
  else printf("%s: configuration OK (%zu listener(s))\n", cfg->path, cfg->n_listeners);
  config_unref(cfg);
  return 0;
}

static void ctl_yaml_quoted(struct buf *b, const char *s);

/* ---- init ------------------------------------------------------------------ */

struct ctl_init {
  const char *dir, *domain, *org, *hostname, *hsm, *key_type, *listen, *next_hop;
};

static int ctl_init_args(const struct ctl *c, struct ctl_init *o) {
  static const char *names[] = {"--domain", "--org", "--hostname", "--hsm", "--key-type", "--listen", "--next-hop"};
  const char **slots[] = {&o->domain, &o->org, &o->hostname, &o->hsm, &o->key_type, &o->listen, &o->next_hop};
  for (int i = 1; i < c->argc; i++) {
    int k = -1;
    for (int j = 0; j < 7; j++)
      if (strcmp(c->argv[i], names[j]) == 0) k = j;
    if (k < 0 && c->argv[i][0] == '-') return ctl_usage_error("init: unknown option %s", c->argv[i]);
    if (k < 0) {
      if (o->dir) return ctl_usage_error("init: unexpected argument '%s'", c->argv[i]);
      o->dir = c->argv[i];
      continue;
    }
    if (i + 1 >= c->argc) return ctl_usage_error("init: %s needs a value", names[k]);
    *slots[k] = c->argv[++i];
  }
  if (!o->dir) return ctl_usage_error("init needs a folder%s", "");
  struct config_hostport hp;
  const char *addrs[] = {o->listen, o->next_hop};
  for (int i = 0; i < 2; i++) {
    if (config_parse_hostport(addrs[i], &hp) != 0)
      return ctl_usage_error("init: '%s' is not HOST:PORT", addrs[i]);
    free(hp.host);
  }
  if (strcmp(o->key_type, "rsa") && strcmp(o->key_type, "ec"))
    return ctl_usage_error("init: --key-type must be rsa or ec, not '%s'", o->key_type);
  if (strcmp(o->hsm, "remote") && strcmp(o->hsm, "inprocess") && o->hsm[0] != '/')
    return ctl_usage_error("init: --hsm must be remote, inprocess or an absolute module path, not '%s'", o->hsm);
  if (strcmp(o->key_type, "ec") == 0 && strcmp(o->hsm, "remote") == 0)
    return ctl_usage_error("init: --key-type ec needs --hsm inprocess or a module path: through the remote "
                           "token server EC keys can sign but not decrypt (the p11-kit RPC has no ECDH)%s", "");
  if (strchr(o->domain, '"') || strchr(o->domain, '\\') || !strchr(o->domain, '.'))
    return ctl_usage_error("init: '%s' is not a domain name", o->domain);
  return 0;
}

/* Write path atomically with mode; 0 or an errno-derived code. */
/* The temporary file is made with a fresh name (mkstemp: O_EXCL, so a
 * symlink planted in the folder, which may belong to the daemon's user,
 * is never followed by a root sealctl) and given its mode through its fd. */
int ctl_write_file(const char *path, const char *text, mode_t mode) {
  char tmp[4200];
  if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp) return SG_EINVAL;
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) return sgerr_from_errno(errno);
  size_t len = strlen(text);
  int rc = (fchmod(fd, mode) == 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0) ? 0 : sgerr_from_errno(errno);
  if (close(fd) != 0 && rc == 0) rc = SG_EIO;
  if (rc == 0 && rename(tmp, path) != 0) rc = sgerr_from_errno(errno);
  if (rc) unlink(tmp);
  return rc;
}

/* Plain scalars where YAML allows them (the shape INTERFACE.md shows);
 * quoted when the text starts with a YAML indicator such as '[' (IPv6). */
static void ctl_yaml_scalar(struct buf *b, const char *s) {
  if (strchr("[]{}#&*!|>'\"%@`,", s[0]) == NULL && !strstr(s, ": ") && !strstr(s, " #")) {
    buf_append(b, s, strlen(s));
    return;
  }
  ctl_yaml_quoted(b, s);
}

static void ctl_yaml_quoted(struct buf *b, const char *s) {
  buf_append(b, "\"", 1);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') buf_append(b, "\\", 1);
    buf_append(b, s, 1);
  }
  buf_append(b, "\"", 1);
}

static void ctl_init_yaml(const struct ctl_init *o, struct buf *y) {
  buf_appendf(y, "# sealgate instance for %s", o->domain);
  buf_appendf(y, " (organisation: ");
  ctl_yaml_quoted(y, o->org);
  buf_appendf(y, "), made by sealctl init\n");
  buf_appendf(y, "hostname: %s        # banner, Received, Authentication-Results, DSNs\n", o->hostname);
  buf_appendf(y, "listeners:\n  - name: main\n    address: ");
  ctl_yaml_scalar(y, o->listen);
  buf_appendf(y, "\n    direction: outgoing\n    flow_policy: default\n"
                 "    relay_from: [\"127.0.0.1/32\", \"::1/128\"]\n    next_hop: ");
  ctl_yaml_scalar(y, o->next_hop);
  buf_appendf(y, "\nspool_dir: spool\nkey_store: keys\nhsm:\n  module: %s\n  token: sealgate\n"
                 "  pin_file: hsm/pin\nflow_policies:\n  - name: default\n", o->hsm);
}

static int ctl_init_files(const struct ctl_init *o) {
  static const char *dirs[] = {"", "/spool", "/keys", "/quarantine", "/hsm", "/hsm/tokens"};
  char path[4096];
  for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
    snprintf(path, sizeof path, "%s%s", o->dir, dirs[i]);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
      fprintf(stderr, "sealctl: cannot create %s: %s\n", path, strerror(errno));
      return 1;
    }
  }
  char abs[4096], text[8192];
  if (!realpath(o->dir, abs)) return 1;
  unsigned char rnd[12];
  if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) return 1;
  char pin[32];
  for (size_t i = 0; i < sizeof rnd; i++) snprintf(pin + 2 * i, 3, "%02x", rnd[i]);
  snprintf(text, sizeof text, "%s\n", pin);
  snprintf(path, sizeof path, "%s/hsm/pin", o->dir);
  int rc = ctl_write_file(path, text, 0600);
  explicit_bzero(text, sizeof text); /* the PIN lives in its file only */
  explicit_bzero(pin, sizeof pin);
  explicit_bzero(rnd, sizeof rnd);
  snprintf(text, sizeof text,
           "# SoftHSM2 config of this sealgate instance (never the system token folder)\n"
           "directories.tokendir = %s/hsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", abs);
  snprintf(path, sizeof path, "%s/hsm/softhsm2.conf", o->dir);
  if (rc == 0) rc = ctl_write_file(path, text, 0600);
  if (rc) {
    fprintf(stderr, "sealctl: cannot write %s: %s\n", path, sgerr_str(rc));
    return 1;
  }
  /* The token before the config: a config exists only for a whole instance. */
  if (ctl_init_token(abs, o->domain, o->org, o->hsm, o->key_type) != 0) return 1;
  struct buf y = BUF_INIT;
  ctl_init_yaml(o, &y);
  snprintf(path, sizeof path, "%s/sealgate.yaml", o->dir);
  rc = ctl_write_file(path, y.data, 0600);
  buf_free(&y);
  if (rc) fprintf(stderr, "sealctl: cannot write %s: %s\n", path, sgerr_str(rc));
  return rc ? 1 : 0;
}

static int ctl_init(const struct ctl *c) {
  struct ctl_init o = {NULL, "example.com", "Example Ltd", NULL, "remote", "rsa", "127.0.0.1:2525", "127.0.0.1:2526"};
  int rc = ctl_init_args(c, &o);
  if (rc) return rc;
  char host[300], path[4096];
  if (!o.hostname) {
    snprintf(host, sizeof host, "gw.%s", o.domain);
    o.hostname = host;
  }
  snprintf(path, sizeof path, "%s/sealgate.yaml", o.dir);
  char tokens[4200];
  snprintf(tokens, sizeof tokens, "%s/hsm/tokens", o.dir);
  /* A token without a config is an earlier init that failed half-way:
   * refuse too, rather than put a second token beside it. */
  bool exists = access(path, F_OK) == 0, token = false;
  if (!exists && rmdir(tokens) != 0 && (errno == ENOTEMPTY || errno == EEXIST)) token = true;
  if (exists || token) {
    fprintf(stderr, "sealctl: %s already holds a sealgate instance (%s exists)\n", o.dir, exists ? path : tokens);
    return 1;
  }
  if ((rc = ctl_init_files(&o)) != 0) return rc;
  struct config *cfg; /* what we wrote must load: proves the shape */
  char err[1024];
  if (config_load(path, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "sealctl: internal error, the new config does not load: %s\n", err);
    return 1;
  }
  config_unref(cfg);
  printf("created instance %s\n  config: %s\n  run:    sealgate -c %s\n", o.dir, path, path);
  return 0;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv) {
  struct ctl c = {NULL, false, 0, calloc((size_t)argc + 1, sizeof(char *))};
  if (!c.argv) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      ctl_usage(stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0) {
      printf("sealctl %s\n", SEALGATE_VERSION);
      return 0;
    } else if (strcmp(a, "--json") == 0) {
      c.json = true;
    } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
      if (i + 1 >= argc) return ctl_usage_error("%s needs a file", a);
      c.config = argv[++i];
    } else if (a[0] == '-' && c.argc == 0) {
      return ctl_usage_error("unknown option %s", a);
    } else {
      c.argv[c.argc++] = argv[i];
    }
  }
  if (c.argc == 0) return ctl_usage_error("no command given%s", "");
  const char *cmd = c.argv[0];
  int rc;
  if (strcmp(cmd, "init") == 0) rc = ctl_init(&c);
  else if (strcmp(cmd, "config") == 0) rc = ctl_config(&c);
  else if (strcmp(cmd, "reload") == 0) rc = ctl_reload(&c);
  else if (strcmp(cmd, "queue") == 0) rc = ctl_queue(&c);
  else if (strcmp(cmd, "cert") == 0) rc = ctl_cert(&c);
  else if (strcmp(cmd, "alerts") == 0) rc = ctl_alerts(&c);
  else if (strcmp(cmd, "pubkey") == 0) rc = ctl_pubkey(&c);
  else if (strcmp(cmd, "harvested") == 0) rc = ctl_harvested(&c);
  else if (strcmp(cmd, "ca") == 0) rc = ctl_ca(&c);
  else if (strcmp(cmd, "quarantine") == 0) rc = ctl_quarantine(&c);
  else if (strcmp(cmd, "profile") == 0) rc = ctl_profile(&c);
  else rc = ctl_usage_error("unknown command '%s'", cmd);
  free(c.argv);
  return rc;
}
