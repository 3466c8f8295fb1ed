/*
 * hsm_backup - encrypted backups of the embedded SoftHSM2 token and the
 * instance's PINs (format and consistency rules in hsm_backup.h).
 *
 * The archive is built in memory (a token is a few KiB per key) and wiped
 * before it is freed: it holds the PINs.  A restore stages everything in
 * a new folder and swaps folders with rename(), so an interrupted restore
 * leaves either the old token or the new one, never a mix.
 */
#include "hsm/hsm_backup.h"

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/pem.h> /* before cms.h: it declares PEM_*_CMS with pem.h's macros */
#include <openssl/cms.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/buf.h"
#include "core/sgerr.h"

#define BACKUP_MAGIC "SGBACKUP 1\n"
#define BACKUP_MAX_FILE (64u << 20)    /* one token object */
#define BACKUP_MAX_TOTAL (512u << 20)  /* the whole archive */
#define BACKUP_PBKDF2_ITER 200000

static const char *const backup_pin_files[] = {"pin", "so-pin"};

int hsm_admin_lock(const char *hsm_dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/admin.lock", hsm_dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return sgerr_from_errno(errno);
  if (flock(fd, LOCK_EX) != 0) {
    int rc = sgerr_from_errno(errno);
    close(fd);
    return rc;
  }
  return fd;
}

static void backup__wipe(struct buf *b) {
  if (b->data) OPENSSL_cleanse(b->data, b->cap);
  buf_free(b);
}

/* ---- writing --------------------------------------------------------------- */

/* Append file rel (under hsm_dir) as one record, holding SoftHSM2's lock on
 * it (NAME.lock beside NAME.object) shared while reading. */
static int backup__add_file(struct buf *ar, const char *hsm_dir, const char *rel, char *err, size_t errlen) {
  char path[4096], lockpath[4200];
  snprintf(path, sizeof path, "%s/%s", hsm_dir, rel);
  snprintf(lockpath, sizeof lockpath, "%s", path);
  char *dot = strrchr(lockpath, '.');
  int lfd = -1;
  if (dot && strcmp(dot, ".object") == 0) {
    strcpy(dot, ".lock");
    lfd = open(lockpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    if (lfd >= 0) fcntl(lfd, F_SETLKW, &fl);
  }
  /* O_NONBLOCK: a FIFO planted in the token folder must not hang us. */
  int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > BACKUP_MAX_FILE) {
    snprintf(err, errlen, "cannot back up %s: %s", path, fd < 0 ? strerror(errno) : "not a regular file of sane size");
    rc = SG_EIO;
  }
  if (rc == 0 && ar->len + (size_t)st.st_size > BACKUP_MAX_TOTAL) {
    snprintf(err, errlen, "the token is larger than a backup may be (%u MiB)", BACKUP_MAX_TOTAL >> 20);
    rc = SG_ETOOBIG;
  }
  if (rc == 0) rc = buf_appendf(ar, "F %s %lld\n", rel, (long long)st.st_size);
  if (rc == 0) rc = buf_reserve(ar, (size_t)st.st_size);
  if (rc == 0 && pread(fd, ar->data + ar->len, (size_t)st.st_size, 0) != st.st_size) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    rc = SG_EIO;
  }
  if (rc == 0) ar->len += (size_t)st.st_size;
  if (fd >= 0) close(fd);
  if (lfd >= 0) close(lfd); /* releases the fcntl lock */
  return rc;
}

/* tokens/<token folder>/<file>: SoftHSM2's file store is two levels deep. */
static int backup__add_tokens(struct buf *ar, const char *hsm_dir, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tokens", hsm_dir);
  DIR *top = opendir(path);
  if (!top) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return SG_EIO;
  }
  int rc = 0, files = 0;
  struct dirent *t;
  while (rc == 0 && (t = readdir(top)) != NULL) {
    if (t->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/tokens/%s", hsm_dir, t->d_name);
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode)) continue; /* never follow a symlink */
    DIR *sub = opendir(path);
    if (!sub) continue;
    struct dirent *f;
    while (rc == 0 && (f = readdir(sub)) != NULL) {
      if (f->d_name[0] == '.' || f->d_type == DT_DIR) continue;
      if (strpbrk(t->d_name, " \t\n\\") || strpbrk(f->d_name, " \t\n\\")) {
        snprintf(err, errlen, "unexpected file name in the token folder: %s/%s", t->d_name, f->d_name);
        rc = SG_EINVAL;
        break;
      }
      char rel[1024];
      snprintf(rel, sizeof rel, "tokens/%s/%s", t->d_name, f->d_name);
      rc = backup__add_file(ar, hsm_dir, rel, err, errlen);
      files++;
    }
    closedir(sub);
  }
  closedir(top);
  if (rc == 0 && files == 0) {
    snprintf(err, errlen, "%s/tokens holds no token: nothing to back up", hsm_dir);
    rc = SG_ENOTFOUND;
  }
  return rc;
}

static void backup__sha256_hex(const void *p, size_t n, char hex[65]) {
  unsigned char md[32];
  EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static int backup__archive(const char *hsm_dir, struct buf *ar, char *err, size_t errlen) {
  int rc = buf_append(ar, BACKUP_MAGIC, strlen(BACKUP_MAGIC));
  if (rc == 0) rc = backup__add_tokens(ar, hsm_dir, err, errlen);
  /* Room for the PIN records and the END line now: a realloc after the
   * PINs are in would free a copy of them unwiped. */
  if (rc == 0) rc = buf_reserve(ar, 2 * (4096 + 64) + 128);
  for (size_t i = 0; rc == 0 && i < 2; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", hsm_dir, backup_pin_files[i]);
    if (access(path, F_OK) == 0) rc = backup__add_file(ar, hsm_dir, backup_pin_files[i], err, errlen);
  }
  char hex[65];
  if (rc == 0) {
    backup__sha256_hex(ar->data, ar->len, hex);
    rc = buf_appendf(ar, "END %s\n", hex);
  }
  return rc;
}

/* PWRI-encrypt ar and write it, PEM, to out_path (0600, atomically). */
static int backup__seal(const struct buf *ar, const char *out_path, const char *password, char *err,
                        size_t errlen) {
  BIO *in = BIO_new_mem_buf(ar->data, (int)ar->len);
  CMS_ContentInfo *cms = in ? CMS_encrypt(NULL, in, EVP_aes_256_cbc(), CMS_BINARY | CMS_PARTIAL) : NULL;
  /* The CMS structure owns (and clears) the copy once it is added. */
  unsigned char *pw = (unsigned char *)OPENSSL_strdup(password);
  bool added = cms && pw && CMS_add0_recipient_password(cms, BACKUP_PBKDF2_ITER, NID_undef, NID_hmacWithSHA256,
                                                        pw, (ossl_ssize_t)strlen(password), EVP_aes_256_cbc());
  if (!added && pw) OPENSSL_clear_free(pw, strlen(password));
  bool ok = added && CMS_final(cms, in, NULL, CMS_BINARY);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
  if (ok) unlink(tmp); /* a planted file or symlink is removed, never followed */
  int fd = ok ? open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
  BIO *out = fd >= 0 ? BIO_new_fd(fd, BIO_CLOSE) : NULL;
  ok = ok && out && PEM_write_bio_CMS(out, cms) && BIO_flush(out) > 0 && fsync(fd) == 0;
  BIO_free(out);
  if (fd >= 0 && !out) close(fd);
  ok = ok && rename(tmp, out_path) == 0;
  if (!ok) {
    unlink(tmp);
    snprintf(err, errlen, "cannot write the backup to %s: %s", out_path, errno ? strerror(errno) : "CMS error");
  }
  CMS_ContentInfo_free(cms);
  BIO_free(in);
  return ok ? 0 : SG_EIO;
}

int hsm_backup_write(const char *hsm_dir, const char *out_path, const char *password, char *err,
                     size_t errlen) {
  if (strlen(password) < 8) {
    snprintf(err, errlen, "the backup password must be at least 8 characters");
    return SG_EINVAL;
  }
  int lock = hsm_admin_lock(hsm_dir);
  if (lock < 0) {
    snprintf(err, errlen, "cannot lock %s/admin.lock: %s", hsm_dir, sgerr_str(lock));
    return lock;
  }
  struct buf ar = BUF_INIT;
  int rc = backup__archive(hsm_dir, &ar, err, errlen);
  close(lock); /* the files are copied: writers may go on */
  if (rc == 0) rc = backup__seal(&ar, out_path, password, err, errlen);
  backup__wipe(&ar);
  return rc;
}

/* ---- restoring ------------------------------------------------------------- */

static int backup__open(const char *in_path, const char *password, struct buf *plain, char *err,
                        size_t errlen) {
  BIO *in = BIO_new_file(in_path, "rb");
  if (!in) {
    snprintf(err, errlen, "cannot read %s: %s", in_path, strerror(errno));
    return SG_EIO;
  }
  CMS_ContentInfo *cms = PEM_read_bio_CMS(in, NULL, NULL, NULL);
  BIO_free(in);
  if (!cms) {
    snprintf(err, errlen, "%s is not a sealgate backup (no PEM CMS structure)", in_path);
    return SG_EINVAL;
  }
  BIO *out = BIO_new(BIO_s_mem());
  bool ok = out && CMS_decrypt_set1_password(cms, (unsigned char *)password, (ossl_ssize_t)strlen(password)) &&
            CMS_decrypt(cms, NULL, NULL, NULL, out, CMS_BINARY);
  CMS_ContentInfo_free(cms);
  char *p = NULL;
  long n = out ? BIO_get_mem_data(out, &p) : 0;
  int rc = 0;
  if (!ok) {
    snprintf(err, errlen, "cannot decrypt %s: wrong password or damaged file", in_path);
    rc = SG_EPERM;
  } else if (n <= 0 || (unsigned long)n > BACKUP_MAX_TOTAL || buf_append(plain, p, (size_t)n) != 0) {
    snprintf(err, errlen, "%s: backup content empty or too large", in_path);
    rc = SG_ETOOBIG;
  }
  if (p && n > 0) OPENSSL_cleanse(p, (size_t)n);
  BIO_free(out);
  return rc;
}

/* A path inside the archive: tokens/A/B, pin or so-pin; nothing else. */
static bool backup__path_ok(const char *rel) {
  if (strcmp(rel, "pin") == 0 || strcmp(rel, "so-pin") == 0) return true;
  if (strncmp(rel, "tokens/", 7) != 0) return false;
  const char *a = rel + 7, *slash = strchr(a, '/');
  if (!slash || slash == a || strchr(slash + 1, '/') || !slash[1]) return false;
  return strstr(rel, "..") == NULL && !strpbrk(rel, "\\\n");
}

/* Check magic, records and digest; with stage != NULL write the files. */
static int backup__walk(const struct buf *pl, const char *stage, char *err, size_t errlen) {
  size_t mlen = strlen(BACKUP_MAGIC), off = mlen;
  bool token = false, pin = false;
  if (pl->len < mlen || memcmp(pl->data, BACKUP_MAGIC, mlen) != 0) goto bad;
  for (;;) {
    const char *line = pl->data + off, *nl = memchr(line, '\n', pl->len - off);
    if (!nl || nl - line > 1100) goto bad;
    char hdr[1101], rel[1024];
    memcpy(hdr, line, (size_t)(nl - line));
    hdr[nl - line] = '\0';
    long long size;
    if (strncmp(hdr, "END ", 4) == 0) {
      char hex[65];
      backup__sha256_hex(pl->data, off, hex);
      if (strcmp(hdr + 4, hex) != 0 || (size_t)(nl + 1 - pl->data) != pl->len) goto bad;
      if (token && pin) return 0;
      snprintf(err, errlen, "the backup holds no %s: nothing to restore", token ? "PIN" : "token");
      return SG_ECORRUPT;
    }
    if (sscanf(hdr, "F %1023s %lld", rel, &size) != 2 || size < 0 || size > BACKUP_MAX_FILE ||
        !backup__path_ok(rel) || (size_t)size > pl->len - (size_t)(nl + 1 - pl->data))
      goto bad;
    off = (size_t)(nl + 1 - pl->data);
    const char *base = strrchr(rel, '/');
    token |= base && strcmp(base, "/token.object") == 0;
    pin |= strcmp(rel, "pin") == 0;
    if (stage) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", stage, rel);
      /* tokens/ and tokens/<token>/ as needed; errors show at open */
      for (char *slash = strchr(path + strlen(stage) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(path, 0700);
        *slash = '/';
      }
      int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600); /* a duplicate fails */
      bool ok = fd >= 0 && write(fd, pl->data + off, (size_t)size) == size && fsync(fd) == 0;
      if (fd >= 0) close(fd);
      if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return SG_EIO;
      }
    }
    off += (size_t)size;
  }
bad:
  snprintf(err, errlen, "the backup's content is damaged (bad record or digest)");
  return SG_ECORRUPT;
}

static bool backup__has_token(const char *hsm_dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tokens", hsm_dir);
  DIR *d = opendir(path);
  bool any = false;
  for (struct dirent *e; d && !any && (e = readdir(d)) != NULL;) any = e->d_name[0] != '.';
  if (d) closedir(d);
  return any;
}

/* Move tokens/, pin, so-pin aside (if replacing) and the staged ones in. */
static int backup__swap(const char *hsm_dir, const char *stage, bool had, char *err, size_t errlen) {
  char aside[4096], from[4200], to[4200];
  snprintf(aside, sizeof aside, "%s/replaced-%lld-XXXXXX", hsm_dir, (long long)time(NULL));
  if (had && mkdtemp(aside) == NULL) {
    snprintf(err, errlen, "cannot create %s: %s", aside, strerror(errno));
    return SG_EIO;
  }
  const char *names[] = {"tokens", "pin", "so-pin"};
  for (int i = 0; i < 3; i++) {
    snprintf(from, sizeof from, "%s/%s", hsm_dir, names[i]);
    snprintf(to, sizeof to, "%s/%s", aside, names[i]);
    if (had && rename(from, to) != 0 && errno != ENOENT) goto fail;
    if (!had && i == 0) rmdir(from); /* the empty tokens/ of a fresh instance */
    snprintf(to, sizeof to, "%s/%s", stage, names[i]);
    if (rename(to, from) != 0 && errno != ENOENT) goto fail;
  }
  rmdir(stage);
  return 0;
fail:
  snprintf(err, errlen, "cannot move %s into place: %s (previous files are in %s)", from, strerror(errno), aside);
  return SG_EIO;
}

static int backup__rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Who owned what the restore replaces: the restored files get the same
 * owners (a token folder of the token server's user, a PIN of the gateway's). */
struct backup_owners {
  bool tokens, pin;
  struct stat tokens_st, pin_st;
};

static void backup__owners_get(const char *hsm_dir, struct backup_owners *o) {
  char path[4200];
  snprintf(path, sizeof path, "%s/tokens", hsm_dir);
  o->tokens = lstat(path, &o->tokens_st) == 0 && S_ISDIR(o->tokens_st.st_mode);
  snprintf(path, sizeof path, "%s/pin", hsm_dir);
  o->pin = lstat(path, &o->pin_st) == 0 && S_ISREG(o->pin_st.st_mode);
}

static int backup__owners_set(const char *hsm_dir, const struct backup_owners *o, char *err, size_t errlen) {
  if (geteuid() != 0) return 0; /* we can only have made our own files */
  int rc = o->tokens ? hsm_token_chown(hsm_dir, o->tokens_st.st_uid, o->tokens_st.st_gid, false, err, errlen) : 0;
  int dfd = open(hsm_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  for (int i = 0; rc == 0 && o->pin && dfd >= 0 && i < 2; i++)
    if (fchownat(dfd, backup_pin_files[i], o->pin_st.st_uid, o->pin_st.st_gid, AT_SYMLINK_NOFOLLOW) != 0 &&
        errno != ENOENT) {
      snprintf(err, errlen, "cannot give %s/%s back to uid %u: %s", hsm_dir, backup_pin_files[i],
               (unsigned)o->pin_st.st_uid, strerror(errno));
      rc = SG_EIO;
    }
  if (dfd >= 0) close(dfd);
  return rc;
}

int hsm_backup_restore(const char *hsm_dir, const char *in_path, const char *password, bool replace,
                       char *err, size_t errlen) {
  struct buf pl = BUF_INIT;
  int rc = backup__open(in_path, password, &pl, err, errlen);
  if (rc == 0) rc = backup__walk(&pl, NULL, err, errlen); /* all checked before anything is written */
  int lock = rc == 0 ? hsm_admin_lock(hsm_dir) : -1;
  if (rc == 0 && lock < 0) {
    snprintf(err, errlen, "cannot lock %s/admin.lock: %s", hsm_dir, sgerr_str(lock));
    rc = lock;
  }
  bool had = rc == 0 && backup__has_token(hsm_dir);
  if (rc == 0 && had && !replace) {
    snprintf(err, errlen, "this instance already has a token (%s/tokens); --replace moves it aside "
             "to %s/replaced-TIME-... and restores the backup", hsm_dir, hsm_dir);
    rc = SG_EEXIST;
  }
  struct backup_owners owners = {0};
  backup__owners_get(hsm_dir, &owners);
  char stage[4096];
  snprintf(stage, sizeof stage, "%s/restore-XXXXXX", hsm_dir);
  bool staged = rc == 0 && mkdtemp(stage) != NULL;
  if (rc == 0 && !staged) {
    snprintf(err, errlen, "cannot create %s: %s", stage, strerror(errno));
    rc = SG_EIO;
  }
  if (rc == 0) rc = backup__walk(&pl, stage, err, errlen);
  if (rc == 0) rc = backup__swap(hsm_dir, stage, had, err, errlen);
  if (rc == 0) rc = backup__owners_set(hsm_dir, &owners, err, errlen);
  if (staged && rc) nftw(stage, backup__rm_one, 16, FTW_DEPTH | FTW_PHYS); /* it holds the PIN */
  if (lock >= 0) close(lock);
  backup__wipe(&pl);
  return rc;
}

/* ---- ownership of token files ----------------------------------------------- */

/* One entry of a folder given by dfd: a real folder or regular file (never
 * a symlink), root-owned unless !only_root. */
static int backup__chown_at(int dfd, const char *name, uid_t uid, gid_t gid, bool only_root, bool *is_dir) {
  struct stat st;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -1;
  *is_dir = S_ISDIR(st.st_mode);
  if (!*is_dir && !S_ISREG(st.st_mode)) return 0;
  if (only_root && st.st_uid != 0) return 0;
  return fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);
}

int hsm_token_chown(const char *hsm_dir, uid_t uid, gid_t gid, bool only_root, char *err, size_t errlen) {
  int hfd = open(hsm_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), rc = 0;
  bool dir = false;
  if (hfd < 0 || backup__chown_at(hfd, "tokens", uid, gid, false, &dir) != 0) rc = SG_EIO;
  int tfd = rc == 0 ? openat(hfd, "tokens", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
  DIR *top = tfd >= 0 ? fdopendir(tfd) : NULL;
  if (rc == 0 && !top) rc = SG_EIO;
  for (struct dirent *t; rc == 0 && (t = readdir(top)) != NULL;) {
    if (t->d_name[0] == '.') continue;
    if (backup__chown_at(tfd, t->d_name, uid, gid, only_root, &dir) != 0) rc = SG_EIO;
    int sfd = rc == 0 && dir ? openat(tfd, t->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    DIR *sub = sfd >= 0 ? fdopendir(sfd) : NULL;
    for (struct dirent *f; sub && rc == 0 && (f = readdir(sub)) != NULL;)
      if (f->d_name[0] != '.' && backup__chown_at(sfd, f->d_name, uid, gid, only_root, &dir) != 0) rc = SG_EIO;
    if (sub) closedir(sub);
    else if (sfd >= 0) close(sfd);
  }
  if (rc) snprintf(err, errlen, "cannot give the token files in %s/tokens to uid %u: %s", hsm_dir,
                   (unsigned)uid, strerror(errno));
  if (top) closedir(top);
  else if (tfd >= 0) close(tfd);
  if (hfd >= 0) close(hfd);
  return rc;
}
