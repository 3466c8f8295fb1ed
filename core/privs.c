/* privs - see privs.h. */
#define _XOPEN_SOURCE 700
#include "core/privs.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"

static uid_t privs_uid;
static gid_t privs_gid;

static int privs__chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return lchown(path, privs_uid, privs_gid) == 0 || errno == ENOENT ? 0 : -1;
}

/* path and (when tree) everything below it; missing paths are fine. */
static int privs__chown(const char *dir, const char *name, int tree, char *err, size_t errlen) {
  char path[4096];
  if (name) snprintf(path, sizeof path, "%s/%s", dir, name);
  else snprintf(path, sizeof path, "%s", dir);
  if (access(path, F_OK) != 0) return 0;
  int r = tree ? nftw(path, privs__chown_one, 32, FTW_PHYS) : privs__chown_one(path, NULL, 0, NULL);
  if (r != 0) {
    snprintf(err, errlen, "cannot give %s to uid %u: %s", path, (unsigned)privs_uid, strerror(errno));
    return SG_EIO;
  }
  return 0;
}

static int privs__chown_instance(const struct config *cfg, char *err, size_t errlen) {
  int rc = privs__chown(cfg->dir, NULL, 0, err, errlen);
  if (!rc) rc = privs__chown(cfg->path, NULL, 0, err, errlen);
  if (!rc) rc = privs__chown(cfg->dir, "lock", 0, err, errlen);
  if (!rc) rc = privs__chown(cfg->dir, "control.sock", 0, err, errlen);
  if (!rc) rc = privs__chown(cfg->quarantine_dir, NULL, 1, err, errlen);
  if (!rc) rc = privs__chown(cfg->spool_dir, NULL, 1, err, errlen);
  if (!rc) rc = privs__chown(cfg->key_store, NULL, 1, err, errlen);
  if (!rc) rc = privs__chown(cfg->hsm.pin_file, NULL, 0, err, errlen);
  return rc;
}

int privs_drop(const struct config *cfg, char *err, size_t errlen) {
  if (!cfg->user) return 0;
  struct passwd *pw = getpwnam(cfg->user);
  if (!pw) {
    snprintf(err, errlen, "user '%s' does not exist", cfg->user);
    return SG_ENOTFOUND;
  }
  if (geteuid() != 0) {
    if (pw->pw_uid == geteuid()) return 0;
    snprintf(err, errlen, "'user: %s' needs sealgate to be started as root", cfg->user);
    return SG_EPERM;
  }
  if (pw->pw_uid == 0) return 0;
  privs_uid = pw->pw_uid;
  privs_gid = pw->pw_gid;
  int rc = privs__chown_instance(cfg, err, errlen);
  if (rc) return rc;
  if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
      setuid(pw->pw_uid) != 0) {
    snprintf(err, errlen, "cannot become user '%s': %s", cfg->user, strerror(errno));
    return SG_EPERM;
  }
  if (setuid(0) == 0) { /* must be impossible now */
    snprintf(err, errlen, "root could be regained after dropping to '%s'", cfg->user);
    return SG_EPERM;
  }
  log_info("running as user %s (uid %u)", cfg->user, (unsigned)pw->pw_uid);
  return 0;
}
