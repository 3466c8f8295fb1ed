/*
 * sealctl - shared pieces of the admin command line (sealctl.c holds
 * main, init, config, queue and reload; sealctl_cert.c the certificate
 * and alert commands; sealctl_pubkey.c the public key, harvested key and
 * CA commands and the key store's alerts; sealctl_quarantine.c and
 * sealctl_profile.c their commands).  Exit codes: 0 success, 1
 * failed operation, 2 bad usage.
 */
#ifndef SEALGATE_SEALCTL_H
#define SEALGATE_SEALCTL_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/config.h"

#define CTL_TIMEOUT_MS 30000

struct ctl {
  const char *config;
  bool json;
  int argc;     /* command words and their options, globals removed */
  char **argv;
};

/* Print "sealctl: " fmt(arg) " (try --help)"; returns 2. */
int ctl_usage_error(const char *fmt, const char *arg);
/* Load -c CONFIG; 0, or the exit code (message printed). */
int ctl_load(const struct ctl *c, struct config **out);
/* One control-socket request; SG_ENOTFOUND when no daemon runs (printed). */
int ctl_request(const struct config *cfg, const char *cmd, struct buf *out);
void ctl_json_str(FILE *f, const char *s);
/* After a store changed: "keys reload" to a running daemon (quiet when
 * none runs; a warning when it refused). */
void ctl_notify_daemon(const struct config *cfg);
/* Write path atomically (tmp, fsync, rename) with mode. */
int ctl_write_file(const char *path, const char *text, mode_t mode);

struct cert_info;
/* Shared by cert show and pubkey show (sealctl_cert.c). */
const char *ctl_uses(unsigned uses);
void ctl_json_list(const char *key, char **v, size_t n);
void ctl_cert_info_print(bool json, const char *name, const struct cert_info *ci);

int ctl_cert(const struct ctl *c);
/* config check's token half: the token opens and fits the config. */
int ctl_check_token(const struct config *cfg, char *err, size_t errlen);
int ctl_alerts(const struct ctl *c);
int ctl_pubkey(const struct ctl *c);
int ctl_harvested(const struct ctl *c);
int ctl_ca(const struct ctl *c);
/* sealctl_quarantine.c: quarantine list|show|release|delete. */
int ctl_quarantine(const struct ctl *c);
/* sealctl_profile.c: profile list|show|export|import|search|delete. */
int ctl_profile(const struct ctl *c);
/* alerts list's key store half (sealctl_pubkey.c): prints the harvest
 * alerts as rows after n_before rows already printed (JSON commas);
 * returns how many, or -1 when the store could not be read (printed). */
int ctl_harvest_alerts(const struct ctl *c, int n_before);
/* init's token and org certificate (sealctl_cert.c). */
int ctl_init_token(const char *dir, const char *domain, const char *org, const char *hsm,
                   const char *key_type);

#endif
