/*
 * quarantine - the store of held messages (issue #6); the API, its callers
 * and its rules are in quarantine.h.  This file owns the folder layout and
 * the file format.
 *
 * File format (integers little-endian):
 *   file   := "SGQUAR1\n" hlen:u32 fields[hlen] crc:u32 record
 *   fields := idlen:u8 id namelen:u8 name held_ms:u64 size:u64
 *             filterlen:u16 filter reasonlen:u16 reason
 *   record := one whole spool record (core/spool_record.h): the envelope
 *             and the message data, with its own CRC and end record, up to
 *             the end of the file.
 * The version is the "1" of the magic: a reader refuses any other.  crc is
 * the CRC-32 (zlib) of every byte before it.  Every field is bounded (id as
 * quarantine_id_ok, name as quarantine_name_ok, texts shorter than
 * QUARANTINE_TEXT_MAX bytes, no NUL in any), hlen must be exactly their sum
 * and size must equal the record's data length, so the reader accepts
 * exactly what quarantine_encode writes (tests/fuzz/fuzz_quarantine.c
 * checks it).  The id and name in a file must also be its own file name
 * and folder, so a file copied or renamed by hand is reported, not
 * trusted.  The header comes first so that scans (list order, expiry) read
 * a few hundred bytes of each file, not the message.
 *
 * Paths: every name that comes from a caller or from a folder listing is
 * checked (quarantine_name_ok, quarantine_id_ok) before it is joined to
 * ROOT; files are opened O_NOFOLLOW and must be regular files, folders
 * O_DIRECTORY | O_NOFOLLOW.  ROOT itself is the config's and trusted.
 * Nothing here holds state between calls: processes share the store
 * through renames and unlinks only (see quarantine.h).
 */
#include "core/quarantine.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "core/log.h"
#include "core/sgerr.h"
#include "core/timeutil.h"

#define Q_MAGIC "SGQUAR1\n"
#define Q_MAGIC_LEN 8
#define Q_FIELDS_MAX \
  (1 + (QUARANTINE_ID_MAX - 1) + 1 + QUARANTINE_NAME_MAX + 8 + 8 + 2 * (2 + QUARANTINE_TEXT_MAX - 1))
#define Q_HEAD_MAX (Q_MAGIC_LEN + 4 + Q_FIELDS_MAX + 4)
#define Q_RELEASED ".released"
#define Q_TMP ".tmp-"
#define Q_ENT_MAX 72              /* a folder entry we keep: a name, an ID or .tmp-ID */
#define Q_REL_MAX (2 * Q_ENT_MAX + 16) /* NAME/ID, .released/ID.corrupt */

/* ---- names ------------------------------------------------------------------ */

bool quarantine_name_ok(const char *name) {
  size_t n = name ? strnlen(name, QUARANTINE_NAME_MAX + 1) : 0;
  if (n == 0 || n > QUARANTINE_NAME_MAX || name[0] == '.') return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool quarantine_id_ok(const char *id) {
  size_t n = id ? strnlen(id, QUARANTINE_ID_MAX) : 0;
  if (n == 0 || n >= QUARANTINE_ID_MAX) return false;
  for (size_t i = 0; i < n; i++)
    if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return false;
  return true;
}

static bool quarantine__is_tmp(const char *s) { return strncmp(s, Q_TMP, sizeof Q_TMP - 1) == 0; }

/* 16 hex digits of the time in ms (so IDs sort as they were made), 8 of
 * randomness (so two puts in one millisecond, in one process or two, do
 * not collide; a collision in one folder is caught by RENAME_NOREPLACE). */
static void quarantine__new_id(char id[QUARANTINE_ID_MAX]) {
  static _Atomic uint32_t fallback;
  uint32_t r;
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)getpid() * 2654435761u + fallback++;
  snprintf(id, QUARANTINE_ID_MAX, "%016" PRIx64 "%08" PRIx32, timeutil_wall_ms(), r);
}

/* ---- the format ------------------------------------------------------------- */

static int quarantine__le(struct buf *b, uint64_t v, int n) {
  unsigned char x[8];
  for (int i = 0; i < n; i++) x[i] = (unsigned char)(v >> (8 * i));
  return buf_append(b, x, (size_t)n);
}

static int quarantine__str(struct buf *b, const char *s, size_t n, int len_bytes) {
  int rc = quarantine__le(b, n, len_bytes);
  return rc ? rc : buf_append(b, s, n);
}

int quarantine_encode(const struct quarantine_meta *meta, const struct spool_envelope *env, const void *data,
                      size_t len, struct buf *head, struct buf *tail) {
  size_t filter = strnlen(meta->filter, QUARANTINE_TEXT_MAX), reason = strnlen(meta->reason, QUARANTINE_TEXT_MAX);
  if (!quarantine_id_ok(meta->id) || !quarantine_name_ok(meta->name) || filter == QUARANTINE_TEXT_MAX ||
      reason == QUARANTINE_TEXT_MAX || meta->size != len)
    return SG_EINVAL;
  size_t old = head->len;
  struct buf f = BUF_INIT;
  int rc = quarantine__str(&f, meta->id, strlen(meta->id), 1);
  if (!rc) rc = quarantine__str(&f, meta->name, strlen(meta->name), 1);
  if (!rc) rc = quarantine__le(&f, meta->held_ms, 8);
  if (!rc) rc = quarantine__le(&f, meta->size, 8);
  if (!rc) rc = quarantine__str(&f, meta->filter, filter, 2);
  if (!rc) rc = quarantine__str(&f, meta->reason, reason, 2);
  if (!rc) rc = buf_append(head, Q_MAGIC, Q_MAGIC_LEN);
  if (!rc) rc = quarantine__le(head, f.len, 4);
  if (!rc) rc = buf_append(head, f.data, f.len);
  if (!rc) rc = quarantine__le(head, crc32_z(0, (const Bytef *)head->data + old, head->len - old), 4);
  if (!rc) rc = spool_record_encode(env, data, len, head, tail);
  buf_free(&f);
  if (rc) head->len = old;
  return rc;
}

struct quarantine__rd {
  const unsigned char *p;
  size_t n;
};

static bool quarantine__get(struct quarantine__rd *r, uint64_t *v, int n) {
  if (r->n < (size_t)n) return false;
  *v = 0;
  for (int i = 0; i < n; i++) *v |= (uint64_t)r->p[i] << (8 * i);
  r->p += n;
  r->n -= (size_t)n;
  return true;
}

/* A length-prefixed string into out (cap bytes with its NUL); one too
 * long for out, longer than what is left, or holding a NUL is refused. */
static bool quarantine__get_str(struct quarantine__rd *r, int len_bytes, char *out, size_t cap) {
  uint64_t n;
  if (!quarantine__get(r, &n, len_bytes) || n >= cap || n > r->n || memchr(r->p, 0, n)) return false;
  memcpy(out, r->p, n);
  out[n] = '\0';
  r->p += n;
  r->n -= n;
  return true;
}

static const char *quarantine__fields(struct quarantine__rd *r, struct quarantine_meta *m) {
  if (!quarantine__get_str(r, 1, m->id, sizeof m->id) || !quarantine_id_ok(m->id)) return "bad id in header";
  if (!quarantine__get_str(r, 1, m->name, sizeof m->name) || !quarantine_name_ok(m->name))
    return "bad quarantine name in header";
  if (!quarantine__get(r, &m->held_ms, 8) || !quarantine__get(r, &m->size, 8)) return "truncated header fields";
  if (!quarantine__get_str(r, 2, m->filter, sizeof m->filter)) return "bad filter text in header";
  if (!quarantine__get_str(r, 2, m->reason, sizeof m->reason)) return "bad reason text in header";
  return r->n ? "bytes left over in header" : NULL;
}

static uint32_t quarantine__le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The header at the start of a file image into m (zeroed on failure); on
 * success *used is its length.  Returns NULL or a static reason. */
static const char *quarantine__head_parse(const unsigned char *p, size_t len, struct quarantine_meta *m,
                                          size_t *used) {
  memset(m, 0, sizeof *m);
  if (len < Q_MAGIC_LEN || memcmp(p, Q_MAGIC, Q_MAGIC_LEN) != 0) return "not a quarantine file (magic or version)";
  if (len < Q_MAGIC_LEN + 4) return "truncated header";
  uint32_t hlen = quarantine__le32(p + Q_MAGIC_LEN);
  if (hlen > Q_FIELDS_MAX) return "header too long";
  size_t end = Q_MAGIC_LEN + 4 + (size_t)hlen;
  if (len < end + 4) return "truncated header";
  if ((uint32_t)crc32_z(0, p, end) != quarantine__le32(p + end)) return "header checksum mismatch";
  struct quarantine__rd r = {p + Q_MAGIC_LEN + 4, hlen};
  const char *why = quarantine__fields(&r, m);
  if (why) memset(m, 0, sizeof *m);
  else *used = end + 4;
  return why;
}

static int quarantine__parse(const void *buf, size_t len, struct quarantine_meta *meta, struct spool_envelope *env,
                             const char **data, size_t *len_out, const char **why) {
  size_t used = 0, n = 0;
  const char *d = NULL;
  memset(env, 0, sizeof *env);
  if ((*why = quarantine__head_parse(buf, len, meta, &used)) != NULL) return SG_ECORRUPT;
  int rc = spool_record_parse((const char *)buf + used, len - used, env, &d, &n, why);
  if (rc == 0 && n != meta->size) {
    spool_envelope_free(env);
    *why = "size in header does not match the data";
    rc = SG_ECORRUPT;
  }
  if (rc) {
    if (!*why) *why = sgerr_str(rc);
    memset(meta, 0, sizeof *meta);
    return rc;
  }
  if (data) *data = d;
  if (len_out) *len_out = n;
  return 0;
}

int quarantine_parse(const void *buf, size_t len, struct quarantine_meta *meta, struct spool_envelope *env,
                     const char **data, size_t *len_out) {
  const char *why;
  return quarantine__parse(buf, len, meta, env, data, len_out, &why);
}

/* ---- files and folders ------------------------------------------------------ */

static int quarantine__root(const char *root, char *err, size_t errlen) {
  int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) return fd;
  int e = errno;
  return sgerr_fail(err, errlen, sgerr_from_errno(e), "quarantine folder %s: %s", root, strerror(e));
}

/* Folder rel of dfd, made 0700 if missing.  When we run as root (sealctl
 * may), a folder we make is given to dfd's owner, the daemon's user, or
 * the daemon could not use it. */
static int quarantine__mkdir(int dfd, const char *rel, bool *created) {
  *created = false;
  if (mkdirat(dfd, rel, 0700) != 0) return errno == EEXIST ? 0 : sgerr_from_errno(errno);
  *created = true;
  struct stat st;
  if (geteuid() == 0 && fstat(dfd, &st) == 0 && st.st_uid != 0 &&
      fchownat(dfd, rel, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0)
    log_warn("quarantine: cannot give folder %s to uid %u: %s", rel, (unsigned)st.st_uid, strerror(errno));
  return 0;
}

static int quarantine__sync_dir(int dfd, const char *rel) {
  int fd = openat(dfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return sgerr_from_errno(errno);
  int rc = fsync(fd) == 0 ? 0 : sgerr_from_errno(errno);
  close(fd);
  return rc;
}

/* Open the regular file rel of dfd for reading, never through a symlink:
 * an fd, SG_ENOTFOUND if it is gone, SG_ECORRUPT if it is not a regular
 * file (O_NONBLOCK: opening a FIFO must not hang). */
static int quarantine__open(int dfd, const char *rel, struct stat *st) {
  int fd = openat(dfd, rel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return errno == ELOOP ? SG_ECORRUPT : sgerr_from_errno(errno);
  int rc = fstat(fd, st) != 0 ? SG_EIO : !S_ISREG(st->st_mode) ? SG_ECORRUPT : 0;
  if (rc) {
    close(fd);
    return rc;
  }
  return fd;
}

/* Up to cap bytes from the start of fd (fewer at its end); -1 on error. */
static ssize_t quarantine__pread(int fd, char *p, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    ssize_t r = pread(fd, p + got, cap - got, (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* The whole file rel of dfd in a malloc'd buffer (the caller's) with a NUL
 * after its *len_out bytes.  Files are never changed in place (only
 * renamed or unlinked), so the size seen by fstat is the size read. */
static int quarantine__slurp(int dfd, const char *rel, char **out, size_t *len_out) {
  struct stat st;
  int fd = quarantine__open(dfd, rel, &st);
  if (fd < 0) return fd;
  char *p = (uint64_t)st.st_size < SIZE_MAX ? malloc((size_t)st.st_size + 1) : NULL;
  ssize_t n = p ? quarantine__pread(fd, p, (size_t)st.st_size) : -1;
  int rc = !p ? SG_ENOMEM : n < 0 ? sgerr_from_errno(errno) : 0;
  close(fd);
  if (rc) {
    free(p);
    return rc;
  }
  p[n] = '\0';
  *out = p;
  *len_out = (size_t)n;
  return 0;
}

static int quarantine__grow(void **v, size_t *cap, size_t n, size_t elem) {
  if (n < *cap) return 0;
  size_t ncap = *cap ? *cap * 2 : 16;
  void *nv = realloc(*v, ncap * elem);
  if (!nv) return SG_ENOMEM;
  *v = nv;
  *cap = ncap;
  return 0;
}

/* Entries of a folder, sorted (so released IDs go in the order held). */
struct quarantine__names {
  char (*v)[Q_ENT_MAX];
  size_t n, cap;
};

static int quarantine__names_cmp(const void *a, const void *b) { return strcmp(a, b); }

/* The entries of folder rel of dfd that keep() accepts, appended to out
 * (the caller's: free(out->v)).  SG_ENOTFOUND when rel is missing, not a
 * folder or a symlink: nothing of ours. */
static int quarantine__list_dir(int dfd, const char *rel, bool (*keep)(const char *), struct quarantine__names *out) {
  int fd = openat(dfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOTDIR || errno == ELOOP ? SG_ENOTFOUND : sgerr_from_errno(errno);
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return SG_ENOMEM;
  }
  int rc = 0;
  while (rc == 0) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      rc = errno ? sgerr_from_errno(errno) : 0;
      break;
    }
    size_t n = strlen(e->d_name);
    if (n >= Q_ENT_MAX || !keep(e->d_name) || e->d_type == DT_LNK) continue;
    /* A quarantine folder is used as NAME/ID below: a symlink planted as
     * NAME (by whoever owns ROOT) must not lead a root sealctl elsewhere. */
    struct stat st;
    if (keep == quarantine_name_ok && (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)))
      continue;
    if ((rc = quarantine__grow((void **)&out->v, &out->cap, out->n, sizeof *out->v)) == 0)
      memcpy(out->v[out->n++], e->d_name, n + 1);
  }
  closedir(d);
  if (out->n) qsort(out->v, out->n, sizeof *out->v, quarantine__names_cmp);
  return rc;
}

/* ---- open, put ---------------------------------------------------------------- */

/* Remove the .tmp-* files a crash left in the quarantine folders and in
 * .released (only the daemon writes them, and it is starting). */
static void quarantine__sweep(int rfd) {
  struct quarantine__names dirs = {0};
  if (quarantine__list_dir(rfd, ".", quarantine_name_ok, &dirs) != 0 ||
      quarantine__grow((void **)&dirs.v, &dirs.cap, dirs.n, sizeof *dirs.v) != 0) {
    free(dirs.v);
    return;
  }
  memcpy(dirs.v[dirs.n++], Q_RELEASED, sizeof Q_RELEASED);
  for (size_t i = 0; i < dirs.n; i++) {
    struct quarantine__names tmp = {0};
    quarantine__list_dir(rfd, dirs.v[i], quarantine__is_tmp, &tmp);
    for (size_t j = 0; j < tmp.n; j++) {
      char rel[Q_REL_MAX];
      snprintf(rel, sizeof rel, "%s/%s", dirs.v[i], tmp.v[j]);
      if (unlinkat(rfd, rel, 0) == 0) log_info("quarantine: removed the left-over %s", rel);
    }
    free(tmp.v);
  }
  free(dirs.v);
}

int quarantine_open(const char *root, char *err, size_t errlen) {
  if (mkdir(root, 0700) != 0 && errno != EEXIST)
    return sgerr_fail(err, errlen, sgerr_from_errno(errno), "cannot create %s: %s", root, strerror(errno));
  int rfd = quarantine__root(root, err, errlen);
  if (rfd < 0) return rfd;
  bool created;
  int rc = quarantine__mkdir(rfd, "Policy", &created);
  if (rc == 0) rc = quarantine__mkdir(rfd, Q_RELEASED, &created);
  if (rc) sgerr_fail(err, errlen, rc, "cannot create the folders of %s: %s", root, sgerr_str(rc));
  else quarantine__sweep(rfd);
  close(rfd);
  return rc;
}

static int quarantine__write_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return sgerr_from_errno(errno);
    for (; n > 0 && (size_t)w >= iov->iov_len; iov++, n--) w -= (ssize_t)iov->iov_len;
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

/* The file of meta->id in folder dfd: a temporary file, fdatasync, rename
 * (never over another file: SG_EEXIST), fsync of the folder. */
static int quarantine__write(int dfd, const struct quarantine_meta *meta, const struct spool_envelope *env,
                             const char *data, size_t len) {
  struct buf head = BUF_INIT, tail = BUF_INIT;
  char tmp[Q_ENT_MAX];
  snprintf(tmp, sizeof tmp, Q_TMP "%s", meta->id);
  int rc = quarantine_encode(meta, env, data, len, &head, &tail);
  int fd = rc ? -1 : openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (rc == 0 && fd < 0) rc = sgerr_from_errno(errno);
  if (fd >= 0) {
    struct iovec iov[3] = {{head.data, head.len}, {(void *)data, len}, {tail.data, tail.len}};
    rc = quarantine__write_all(fd, iov, 3);
    if (rc == 0 && fdatasync(fd) != 0) rc = sgerr_from_errno(errno);
    if (close(fd) != 0 && rc == 0) rc = sgerr_from_errno(errno);
    if (rc == 0 && renameat2(dfd, tmp, dfd, meta->id, RENAME_NOREPLACE) != 0) rc = sgerr_from_errno(errno);
    if (rc) unlinkat(dfd, tmp, 0);
    /* Not durable, so not held: the caller keeps the message and retries
     * (a second copy would be held then). */
    else if (fsync(dfd) != 0 && (rc = sgerr_from_errno(errno)) != 0) unlinkat(dfd, meta->id, 0);
  }
  buf_free(&head);
  buf_free(&tail);
  return rc;
}

int quarantine_put(const char *root, struct quarantine_meta *meta, const struct spool_envelope *env,
                   const char *data, size_t len, char *err, size_t errlen) {
  char safe[QUARANTINE_NAME_MAX + 8];
  if (!quarantine_name_ok(meta->name))
    return sgerr_fail(err, errlen, SG_EINVAL, "'%s' is not a quarantine name",
                      log_safe(safe, sizeof safe, meta->name, strnlen(meta->name, sizeof meta->name)));
  meta->size = len;
  if (meta->held_ms == 0) meta->held_ms = timeutil_wall_ms();
  int rfd = quarantine__root(root, err, errlen);
  if (rfd < 0) return rfd;
  bool created = false;
  int rc = quarantine__mkdir(rfd, meta->name, &created);
  /* The folder's own entry must be durable before a file in it is.  Always
   * synced, not only when we made it: another thread may have made it an
   * instant ago and not synced yet (a sync with nothing to write is cheap). */
  if (rc == 0 && fsync(rfd) != 0) rc = sgerr_from_errno(errno);
  int dfd = rc ? -1 : openat(rfd, meta->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (rc == 0 && dfd < 0) rc = sgerr_from_errno(errno);
  for (int i = 0; dfd >= 0 && i < 8; i++) {
    quarantine__new_id(meta->id);
    if ((rc = quarantine__write(dfd, meta, env, data, len)) != SG_EEXIST) break;
  }
  if (rc) {
    meta->id[0] = '\0';
    sgerr_fail(err, errlen, rc, "quarantine %s: cannot hold the message: %s", meta->name, sgerr_str(rc));
  }
  if (dfd >= 0) close(dfd);
  close(rfd);
  return rc;
}

/* ---- one message by ID: show, delete, release ------------------------------- */

/* Open ROOT (*rfd, the caller's to close) and find the quarantine holding
 * id: rel is then "NAME/ID".  SG_EINVAL for a bad ID, SG_ENOTFOUND. */
static int quarantine__locate(const char *root, const char *id, int *rfd, char name[QUARANTINE_NAME_MAX + 1],
                              char rel[Q_REL_MAX], char *err, size_t errlen) {
  *rfd = -1;
  if (!quarantine_id_ok(id)) return sgerr_fail(err, errlen, SG_EINVAL, "not a quarantine message ID");
  int fd = quarantine__root(root, err, errlen);
  if (fd == SG_ENOTFOUND) return sgerr_fail(err, errlen, SG_ENOTFOUND, "no quarantined message %s", id);
  if (fd < 0) return fd;
  struct quarantine__names dirs = {0};
  int rc = quarantine__list_dir(fd, ".", quarantine_name_ok, &dirs);
  if (rc == 0) rc = SG_ENOTFOUND;
  for (size_t i = 0; rc == SG_ENOTFOUND && i < dirs.n; i++) {
    struct stat st;
    snprintf(rel, Q_REL_MAX, "%s/%s", dirs.v[i], id);
    if (fstatat(fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      memcpy(name, dirs.v[i], strlen(dirs.v[i]) + 1);
      rc = 0;
    }
  }
  free(dirs.v);
  if (rc) {
    close(fd);
    if (rc == SG_ENOTFOUND) return sgerr_fail(err, errlen, rc, "no quarantined message %s", id);
    return sgerr_fail(err, errlen, rc, "quarantine folder %s: %s", root, sgerr_str(rc));
  }
  *rfd = fd;
  return 0;
}

/* Read and check the file rel of rfd, which must name id (and name, when
 * given) in its header.  On success meta, *env (the caller's) and, when
 * data_out is given, the data (the caller's, moved to the start of the
 * file's buffer, NUL after it) are filled; else *why says why not. */
static int quarantine__load(int rfd, const char *rel, const char *id, const char *name,
                            struct quarantine_meta *meta, struct spool_envelope *env, char **data_out,
                            size_t *len_out, const char **why) {
  char *buf = NULL;
  size_t n = 0, dn = 0;
  const char *d = NULL;
  *why = NULL;
  memset(meta, 0, sizeof *meta);
  memset(env, 0, sizeof *env);
  int rc = quarantine__slurp(rfd, rel, &buf, &n);
  if (rc == SG_ECORRUPT) *why = "not a regular file";
  if (rc == 0) rc = quarantine__parse(buf, n, meta, env, &d, &dn, why);
  if (rc == 0 && (strcmp(meta->id, id) != 0 || (name && strcmp(meta->name, name) != 0))) {
    spool_envelope_free(env);
    memset(meta, 0, sizeof *meta);
    *why = "the header names another message or quarantine";
    rc = SG_ECORRUPT;
  }
  if (rc || !data_out) {
    free(buf);
    return rc;
  }
  memmove(buf, d, dn);
  buf[dn] = '\0';
  *data_out = buf;
  *len_out = dn;
  return 0;
}

int quarantine_show(const char *root, const char *id, struct quarantine_meta *meta, struct spool_envelope *env,
                    char **data, size_t *len, char *err, size_t errlen) {
  char name[QUARANTINE_NAME_MAX + 1], rel[Q_REL_MAX];
  int rfd;
  const char *why;
  memset(meta, 0, sizeof *meta);
  memset(env, 0, sizeof *env);
  *data = NULL;
  *len = 0;
  int rc = quarantine__locate(root, id, &rfd, name, rel, err, errlen);
  if (rc) return rc;
  rc = quarantine__load(rfd, rel, id, name, meta, env, data, len, &why);
  close(rfd);
  if (rc == SG_ECORRUPT) return sgerr_fail(err, errlen, rc, "quarantined message %s is damaged: %s", id, why);
  if (rc) return sgerr_fail(err, errlen, rc, "quarantined message %s: %s", id, sgerr_str(rc));
  return 0;
}

int quarantine_delete(const char *root, const char *id, char *err, size_t errlen) {
  char name[QUARANTINE_NAME_MAX + 1], rel[Q_REL_MAX];
  int rfd;
  int rc = quarantine__locate(root, id, &rfd, name, rel, err, errlen);
  if (rc) return rc;
  if (unlinkat(rfd, rel, 0) != 0) {
    rc = sgerr_from_errno(errno);
    if (rc == SG_ENOTFOUND) sgerr_fail(err, errlen, rc, "no quarantined message %s", id);
    else sgerr_fail(err, errlen, rc, "cannot delete %s: %s", rel, strerror(errno));
  }
  close(rfd);
  return rc;
}

/* Move the checked message rel whole (one rename) to .released, then sync
 * both folders so that neither a crash nor the daemon loses or doubles
 * it.  If a sync fails the rename stands: the daemon queues it anyway. */
static int quarantine__move(int rfd, const char *rel, const char *name, const char *id, char *err,
                            size_t errlen) {
  char dst[Q_REL_MAX];
  bool created;
  int rc = quarantine__mkdir(rfd, Q_RELEASED, &created);
  if (rc) return sgerr_fail(err, errlen, rc, "cannot create the folder %s: %s", Q_RELEASED, sgerr_str(rc));
  snprintf(dst, sizeof dst, Q_RELEASED "/%s", id);
  if (renameat2(rfd, rel, rfd, dst, RENAME_NOREPLACE) != 0) {
    int e = errno;
    if (e == ENOENT) return sgerr_fail(err, errlen, SG_ENOTFOUND, "no quarantined message %s", id);
    return sgerr_fail(err, errlen, sgerr_from_errno(e), "cannot release %s: %s", id, strerror(e));
  }
  if (created && fsync(rfd) != 0) rc = sgerr_from_errno(errno);
  if (rc == 0) rc = quarantine__sync_dir(rfd, Q_RELEASED);
  if (rc == 0) rc = quarantine__sync_dir(rfd, name);
  if (rc) sgerr_fail(err, errlen, rc, "released %s, but a folder sync failed: %s", id, sgerr_str(rc));
  return rc;
}

int quarantine_release(const char *root, const char *id, char *err, size_t errlen) {
  char name[QUARANTINE_NAME_MAX + 1], rel[Q_REL_MAX];
  int rfd;
  const char *why;
  struct quarantine_meta meta;
  struct spool_envelope env;
  int rc = quarantine__locate(root, id, &rfd, name, rel, err, errlen);
  if (rc) return rc;
  rc = quarantine__load(rfd, rel, id, name, &meta, &env, NULL, NULL, &why);
  spool_envelope_free(&env);
  if (rc == SG_ECORRUPT) sgerr_fail(err, errlen, rc, "quarantined message %s is damaged (%s): not released", id, why);
  else if (rc) sgerr_fail(err, errlen, rc, "quarantined message %s: %s", id, sgerr_str(rc));
  else rc = quarantine__move(rfd, rel, name, id, err, errlen);
  close(rfd);
  return rc;
}

/* ---- scans: list, expire ------------------------------------------------------ */

struct quarantine__ent {
  char name[QUARANTINE_NAME_MAX + 1];
  char id[QUARANTINE_ID_MAX];
  uint64_t held_ms; /* from the header, or the file's mtime when the header is damaged */
  uint64_t bytes;   /* the file's size */
  bool gone;        /* expired (or removed by someone else) */
};

struct quarantine__scan {
  struct quarantine__ent *v;
  size_t n, cap;
};

static int quarantine__ent_cmp(const void *a, const void *b) {
  const struct quarantine__ent *x = a, *y = b;
  if (x->held_ms != y->held_ms) return x->held_ms < y->held_ms ? -1 : 1;
  return strcmp(x->id, y->id);
}

/* NAME/ID's header, for its held time, and its size; only the header is
 * read.  A file that vanished meanwhile is skipped. */
static int quarantine__scan_one(int rfd, const char *name, const char *id, struct quarantine__scan *s) {
  char rel[Q_REL_MAX], head[Q_HEAD_MAX];
  struct stat st;
  snprintf(rel, sizeof rel, "%s/%s", name, id);
  if (fstatat(rfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : sgerr_from_errno(errno);
  if (quarantine__grow((void **)&s->v, &s->cap, s->n, sizeof *s->v) != 0) return SG_ENOMEM;
  struct quarantine__ent *e = &s->v[s->n++];
  memset(e, 0, sizeof *e);
  memcpy(e->name, name, strlen(name) + 1);
  memcpy(e->id, id, strlen(id) + 1);
  e->bytes = (uint64_t)st.st_size;
  e->held_ms = (uint64_t)st.st_mtim.tv_sec * 1000 + (uint64_t)st.st_mtim.tv_nsec / 1000000;
  int fd = quarantine__open(rfd, rel, &st);
  if (fd < 0) return 0;
  ssize_t n = quarantine__pread(fd, head, sizeof head);
  close(fd);
  struct quarantine_meta m;
  size_t used;
  if (n > 0 && !quarantine__head_parse((const unsigned char *)head, (size_t)n, &m, &used)) e->held_ms = m.held_ms;
  return 0;
}

static int quarantine__scan_dir(int rfd, const char *name, struct quarantine__scan *s) {
  struct quarantine__names ids = {0};
  int rc = quarantine__list_dir(rfd, name, quarantine_id_ok, &ids);
  for (size_t i = 0; rc == 0 && i < ids.n; i++) rc = quarantine__scan_one(rfd, name, ids.v[i], s);
  free(ids.v);
  return rc == SG_ENOTFOUND ? 0 : rc;
}

/* The held messages of quarantine name (NULL = all) into s (the caller's:
 * free(s->v)), oldest first. */
static int quarantine__scan(int rfd, const char *name, struct quarantine__scan *s) {
  struct quarantine__names dirs = {0};
  int rc = 0;
  if (name) rc = quarantine__scan_dir(rfd, name, s);
  else if ((rc = quarantine__list_dir(rfd, ".", quarantine_name_ok, &dirs)) == 0)
    for (size_t i = 0; rc == 0 && i < dirs.n; i++) rc = quarantine__scan_dir(rfd, dirs.v[i], s);
  free(dirs.v);
  if (rc == 0 && s->n) qsort(s->v, s->n, sizeof *s->v, quarantine__ent_cmp);
  return rc;
}

static int quarantine__list_one(int rfd, const struct quarantine__ent *e, quarantine_list_fn fn, void *arg) {
  char rel[Q_REL_MAX];
  struct quarantine_meta meta;
  struct spool_envelope env;
  const char *why;
  snprintf(rel, sizeof rel, "%s/%s", e->name, e->id);
  int rc = quarantine__load(rfd, rel, e->id, e->name, &meta, &env, NULL, NULL, &why);
  if (rc == SG_ENOTFOUND) return 0; /* deleted or released meanwhile */
  if (rc == SG_ENOMEM) return rc;
  if (rc == 0) {
    fn(&meta, &env, NULL, arg);
    spool_envelope_free(&env);
    return 0;
  }
  memcpy(meta.id, e->id, sizeof meta.id);
  memcpy(meta.name, e->name, sizeof meta.name);
  meta.held_ms = e->held_ms;
  meta.size = e->bytes;
  fn(&meta, NULL, why ? why : sgerr_str(rc), arg);
  return 0;
}

int quarantine_list(const char *root, const char *name, quarantine_list_fn fn, void *arg, char *err,
                    size_t errlen) {
  if (name && !quarantine_name_ok(name)) return sgerr_fail(err, errlen, SG_EINVAL, "not a quarantine name");
  int rfd = quarantine__root(root, err, errlen);
  if (rfd == SG_ENOTFOUND) return 0; /* the daemon never ran: nothing is held */
  if (rfd < 0) return rfd;
  struct quarantine__scan s = {0};
  int rc = quarantine__scan(rfd, name, &s);
  for (size_t i = 0; rc == 0 && i < s.n; i++) rc = quarantine__list_one(rfd, &s.v[i], fn, arg);
  if (rc) sgerr_fail(err, errlen, rc, "quarantine folder %s: %s", root, sgerr_str(rc));
  free(s.v);
  close(rfd);
  return rc;
}

/* 1 removed, 0 already gone, -1 failed (logged). */
static int quarantine__expire_rm(int rfd, struct quarantine__ent *e, uint64_t now_ms, const char *why) {
  char rel[Q_REL_MAX];
  snprintf(rel, sizeof rel, "%s/%s", e->name, e->id);
  if (unlinkat(rfd, rel, 0) != 0) {
    if (errno != ENOENT) {
      log_warn("quarantine: cannot expire id=%s quarantine=%s: %s", e->id, e->name, strerror(errno));
      return -1;
    }
    e->gone = true;
    return 0;
  }
  e->gone = true;
  uint64_t age = now_ms > e->held_ms ? now_ms - e->held_ms : 0;
  log_info("quarantine: expired id=%s quarantine=%s age=%" PRIu64 "s reason=%s", e->id, e->name, age / 1000, why);
  return 1;
}

/* One quarantine: retention first, then the oldest while over its size;
 * what is left into *after (may be NULL). */
static int quarantine__expire_one(int rfd, const char *name, struct quarantine_limits lim, uint64_t now_ms,
                                  struct quarantine_usage *after) {
  struct quarantine__scan s = {0};
  int rc = quarantine__scan(rfd, name, &s), n = 0;
  uint64_t total = 0;
  for (size_t i = 0; rc == 0 && i < s.n; i++) {
    struct quarantine__ent *e = &s.v[i];
    uint64_t age = now_ms > e->held_ms ? now_ms - e->held_ms : 0;
    if (lim.retention_ms && age >= lim.retention_ms) n += quarantine__expire_rm(rfd, e, now_ms, "retention") > 0;
    if (!e->gone) total += e->bytes;
  }
  for (size_t i = 0; rc == 0 && lim.max_bytes && total > lim.max_bytes && i < s.n; i++) {
    struct quarantine__ent *e = &s.v[i];
    if (e->gone) continue;
    n += quarantine__expire_rm(rfd, e, now_ms, "size") > 0;
    if (e->gone) total -= e->bytes;
  }
  if (after != NULL) {
    *after = (struct quarantine_usage){total, 0};
    for (size_t i = 0; i < s.n; i++)
      if (!s.v[i].gone && (after->oldest_ms == 0 || s.v[i].held_ms < after->oldest_ms)) after->oldest_ms = s.v[i].held_ms;
  }
  free(s.v);
  return rc ? rc : n;
}

int quarantine_expire(const char *root, uint64_t now_ms, quarantine_limits_fn limits_of, void *arg) {
  int rfd = quarantine__root(root, NULL, 0);
  if (rfd == SG_ENOTFOUND) return 0;
  if (rfd < 0) return rfd;
  struct quarantine__names dirs = {0};
  int rc = quarantine__list_dir(rfd, ".", quarantine_name_ok, &dirs), n = 0;
  for (size_t i = 0; rc == 0 && i < dirs.n; i++) {
    struct quarantine_limits lim = limits_of ? limits_of(dirs.v[i], arg) : (struct quarantine_limits){0, 0};
    int r = quarantine__expire_one(rfd, dirs.v[i], lim, now_ms, NULL);
    if (r < 0) rc = r;
    else n += r;
  }
  free(dirs.v);
  close(rfd);
  return rc ? rc : n;
}

int quarantine_expire_name(const char *root, const char *name, uint64_t now_ms, struct quarantine_limits lim,
                           struct quarantine_usage *after) {
  if (!quarantine_name_ok(name)) return SG_EINVAL;
  int rfd = quarantine__root(root, NULL, 0);
  if (rfd == SG_ENOTFOUND) return 0;
  if (rfd < 0) return rfd;
  int rc = quarantine__expire_one(rfd, name, lim, now_ms, after);
  close(rfd);
  return rc;
}

/* ---- released messages -------------------------------------------------------- */

/* 1 handed to fn, 0 skipped (gone, damaged and set aside, unreadable). */
static int quarantine__take_one(int rfd, const char *root, const char *id, quarantine_take_fn fn, void *arg) {
  char rel[Q_REL_MAX], path[4096], *data = NULL;
  struct quarantine_meta meta;
  struct spool_envelope env;
  const char *why;
  size_t len = 0;
  snprintf(rel, sizeof rel, Q_RELEASED "/%s", id);
  int rc = quarantine__load(rfd, rel, id, NULL, &meta, &env, &data, &len, &why);
  if (rc == SG_ECORRUPT) {
    char dst[Q_REL_MAX];
    snprintf(dst, sizeof dst, Q_RELEASED "/%s.corrupt", id);
    if (renameat(rfd, rel, rfd, dst) != 0) log_warn("quarantine: cannot rename %s: %s", rel, strerror(errno));
    log_warn("quarantine: released message id=%s is damaged (%s): kept as %s/%s.corrupt, not queued", id, why,
             root, rel);
    return 0;
  }
  if (rc == 0 && snprintf(path, sizeof path, "%s/%s", root, rel) >= (int)sizeof path) rc = SG_ETOOBIG;
  if (rc) {
    if (rc != SG_ENOTFOUND) log_warn("quarantine: released message id=%s: %s", id, sgerr_str(rc));
    spool_envelope_free(&env);
    free(data);
    return 0;
  }
  env.flags |= SPOOL_F_RELEASED;
  fn(&env, data, len, path, &meta, arg);
  return 1;
}

int quarantine_take_released(const char *root, quarantine_take_fn fn, void *arg) {
  int rfd = quarantine__root(root, NULL, 0);
  if (rfd == SG_ENOTFOUND) return 0;
  if (rfd < 0) return rfd;
  struct quarantine__names ids = {0};
  int rc = quarantine__list_dir(rfd, Q_RELEASED, quarantine_id_ok, &ids), n = 0;
  for (size_t i = 0; rc == 0 && i < ids.n; i++) n += quarantine__take_one(rfd, root, ids.v[i], fn, arg);
  free(ids.v);
  close(rfd);
  if (rc == SG_ENOTFOUND) return 0;
  return rc ? rc : n;
}

int quarantine_done(const char *path) { return unlink(path) == 0 ? 0 : sgerr_from_errno(errno); }
