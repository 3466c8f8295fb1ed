/* spool - see spool.h.  The thread pool and the group folder sync live here. */
#include "core/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"
#include "core/timeutil.h"

/* One folder and the state of its group commit. */
struct spool_dir {
  char *path;
  int fd;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t renamed; /* renames finished so far */
  uint64_t synced;  /* every rename up to this one is durable */
  bool syncing;
  int sync_err;
  /* Recycled files ("pool"): delivered messages are renamed to .pN instead
   * of being unlinked, and the next commit writes into one of them.  On ext4
   * (worst without a journal) allocating and freeing an inode per message
   * costs more than the message's own fdatasync; reusing one also reuses
   * its data blocks.  Protected by mu. */
  struct spool_pool { uint64_t n; uint64_t size; } *pool;
  size_t n_pool, cap_pool;
  uint64_t pool_seq;
};

#define SPOOL_POOL_MAX 1024 /* recycled files kept per folder; more are unlinked */

enum spool_op { SPOOL_OP_COMMIT, SPOOL_OP_REPLACE, SPOOL_OP_REMOVE, SPOOL_OP_LOAD };

struct spool_job {
  struct spool_job *next;
  struct mailbox_item done; /* posts the result: cannot fail, cannot be lost */
  char *loaded;             /* SPOOL_OP_LOAD: the data read, handed over on the loop */
  size_t loaded_len;
  enum spool_op op;
  struct spool_msg *msg;
  struct spool_dir *dir;
  struct mailbox *mb;
  spool_cb cb;
  void *arg;
  int status;
};

struct spool {
  char *root;
  char *corrupt;
  struct spool_dir **dirs;
  unsigned n_dirs;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct spool_job *head, *tail;
  bool stopping;
  pthread_t *threads;
  unsigned n_threads;
  atomic_uint_fast32_t *counters; /* per shard queue-id counters */
  unsigned n_shards;
  atomic_int_fast64_t space_checked_s;
  atomic_uint_fast64_t space_avail; /* free bytes at the last check */
};

const char *spool_msg_path(const struct spool_msg *msg, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", msg->dir->path, msg->env.queue_id);
  return out;
}

static int spool__mkdir(const char *path) {
  if (mkdir(path, 0700) == 0 || errno == EEXIST) return 0;
  log_err("spool: cannot create %s: %s", path, strerror(errno));
  return sgerr_from_errno(errno);
}

static struct spool_dir *spool__dir_open(const char *root, const char *name) {
  struct spool_dir *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  if (asprintf(&d->path, "%s/%s", root, name) < 0) {
    free(d);
    return NULL;
  }
  if (spool__mkdir(d->path) != 0 ||
      (d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    free(d->path);
    free(d);
    return NULL;
  }
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cv, NULL);
  return d;
}

static void spool__dir_free(struct spool_dir *d) {
  if (!d) return;
  free(d->pool);
  close(d->fd);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->cv);
  free(d->path);
  free(d);
}

/* Find or open the folder called name (recovery may find folders of a
 * previous run with more shards). */
static struct spool_dir *spool__dir_get(struct spool *sp, const char *name) {
  for (unsigned i = 0; i < sp->n_dirs; i++) {
    const char *base = strrchr(sp->dirs[i]->path, '/') + 1;
    if (strcmp(base, name) == 0) return sp->dirs[i];
  }
  struct spool_dir **nd = realloc(sp->dirs, (sp->n_dirs + 1) * sizeof *nd);
  if (!nd) return NULL;
  sp->dirs = nd;
  struct spool_dir *d = spool__dir_open(sp->root, name);
  if (d) sp->dirs[sp->n_dirs++] = d;
  return d;
}

/*
 * Group commit: wait until a folder fsync that began after our rename has
 * finished.  Whoever finds no sync running performs one for everybody.
 */
static int spool__dir_sync_after(struct spool_dir *d, uint64_t seq) {
  int rc = 0;
  pthread_mutex_lock(&d->mu);
  while (d->synced < seq) {
    if (d->syncing) {
      pthread_cond_wait(&d->cv, &d->mu);
      continue;
    }
    d->syncing = true;
    uint64_t target = d->renamed;
    pthread_mutex_unlock(&d->mu);
    int r = fsync(d->fd);
    int e = errno;
    pthread_mutex_lock(&d->mu);
    d->syncing = false;
    if (r == 0 && target > d->synced) d->synced = target;
    pthread_cond_broadcast(&d->cv);
    if (r != 0) {
      log_err("spool: fsync of folder %s failed: %s", d->path, strerror(e));
      rc = SG_EIO;
      break;
    }
  }
  pthread_mutex_unlock(&d->mu);
  return rc;
}

static int spool__write_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return sgerr_from_errno(errno);
    }
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

/* Take a pool file for a new write (or name a fresh one). */
static struct spool_pool spool__pool_take(struct spool_dir *d) {
  pthread_mutex_lock(&d->mu);
  struct spool_pool p = {++d->pool_seq, UINT64_MAX};
  if (d->n_pool > 0) p = d->pool[--d->n_pool];
  pthread_mutex_unlock(&d->mu);
  return p;
}

/* Give a file back to the pool; false when the pool is full. */
static bool spool__pool_give(struct spool_dir *d, struct spool_pool p) {
  bool ok = false;
  pthread_mutex_lock(&d->mu);
  if (d->n_pool < SPOOL_POOL_MAX) {
    if (d->n_pool == d->cap_pool) {
      size_t cap = d->cap_pool ? d->cap_pool * 2 : 64;
      struct spool_pool *np = realloc(d->pool, cap * sizeof *np);
      if (np) d->pool = np, d->cap_pool = cap;
    }
    if (d->n_pool < d->cap_pool) d->pool[d->n_pool++] = p, ok = true;
  }
  pthread_mutex_unlock(&d->mu);
  return ok;
}

static void spool__pool_path(const struct spool_dir *d, uint64_t n, char *out, size_t cap) {
  snprintf(out, cap, "%s/.p%" PRIu64, d->path, n);
}

/* Write the record into tmp from its start, cut it to length, fdatasync,
 * close (checked), as Postfix does before its 250.  *size is the file's
 * size before (UINT64_MAX if unknown) and after. */
static int spool__write_file(const char *tmp, const struct spool_msg *msg, uint64_t *size) {
  struct buf head = BUF_INIT, tail = BUF_INIT;
  int rc = spool_record_encode(&msg->env, msg->data, msg->data_len, &head, &tail);
  if (rc) goto out;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = sgerr_from_errno(errno);
    goto out;
  }
  struct iovec iov[3] = {{head.data, head.len}, {msg->data, msg->data_len}, {tail.data, tail.len}};
  uint64_t total = head.len + msg->data_len + tail.len;
  rc = spool__write_all(fd, iov, 3);
  /* The reader refuses bytes after the end record, so a longer old file is
   * cut; a same-size rewrite leaves the inode alone. */
  if (rc == 0 && *size != total && ftruncate(fd, (off_t)total) != 0) rc = sgerr_from_errno(errno);
  if (rc == 0 && fdatasync(fd) != 0) rc = sgerr_from_errno(errno);
  if (close(fd) != 0 && rc == 0) rc = sgerr_from_errno(errno);
  *size = rc ? UINT64_MAX : total;
out:
  buf_free(&head);
  buf_free(&tail);
  return rc;
}

static int spool__do_commit(struct spool_job *j) {
  char path[4096], tmp[4200];
  spool_msg_path(j->msg, path, sizeof path);
  struct spool_pool p = spool__pool_take(j->dir);
  spool__pool_path(j->dir, p.n, tmp, sizeof tmp);
  int rc = spool__write_file(tmp, j->msg, &p.size);
  if (rc) {
    log_err("spool: writing %s failed: %s", tmp, sgerr_str(rc));
    unlink(tmp);
    return rc;
  }
  unsigned flags = j->op == SPOOL_OP_REPLACE ? 0 : RENAME_NOREPLACE;
  if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, flags) != 0) {
    rc = sgerr_from_errno(errno);
    log_err("spool: rename %s failed: %s", tmp, strerror(errno));
    if (!spool__pool_give(j->dir, p)) unlink(tmp);
    return rc;
  }
  pthread_mutex_lock(&j->dir->mu);
  uint64_t seq = ++j->dir->renamed;
  pthread_mutex_unlock(&j->dir->mu);
  rc = spool__dir_sync_after(j->dir, seq);
  if (rc != 0 && j->op == SPOOL_OP_COMMIT) /* the client hears 4xx and retries: no second copy */
    unlink(path);
  return rc;
}

/* A delivered message's file goes back to the pool (renamed, not synced:
 * if a crash undoes the rename, the message is delivered again). */
static int spool__do_remove(struct spool_job *j) {
  char path[4096], tmp[4200];
  spool_msg_path(j->msg, path, sizeof path);
  struct stat st;
  struct spool_pool p = {0, UINT64_MAX};
  pthread_mutex_lock(&j->dir->mu);
  p.n = ++j->dir->pool_seq;
  pthread_mutex_unlock(&j->dir->mu);
  spool__pool_path(j->dir, p.n, tmp, sizeof tmp);
  if (stat(path, &st) == 0) p.size = (uint64_t)st.st_size;
  if (rename(path, tmp) == 0) {
    if (!spool__pool_give(j->dir, p)) unlink(tmp);
    return 0;
  }
  return (unlink(path) == 0 || errno == ENOENT) ? 0 : sgerr_from_errno(errno);
}

/* Map and validate a file; on success env/data are filled (data copied). */
static int spool__read_file(const char *path, struct spool_envelope *env, char **data_out,
                            size_t *len_out, const char **why) {
  *why = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sgerr_from_errno(errno);
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size == 0) {
    close(fd);
    *why = "empty file";
    return SG_ECORRUPT;
  }
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return SG_EIO;
  const char *data;
  size_t dlen;
  int rc = spool_record_parse(map, (size_t)st.st_size, env, &data, &dlen, why);
  if (rc == 0 && len_out) *len_out = dlen;
  if (rc == 0 && data_out) {
    *data_out = malloc(dlen ? dlen : 1);
    if (!*data_out) {
      spool_envelope_free(env);
      rc = SG_ENOMEM;
    } else {
      memcpy(*data_out, data, dlen);
    }
  }
  munmap(map, (size_t)st.st_size);
  return rc;
}

/* Move a damaged file aside; it is never delivered and never silently lost. */
static void spool__quarantine_corrupt(struct spool *sp, const char *path, const char *why) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  char dst[4200];
  snprintf(dst, sizeof dst, "%s/%s.%" PRIu64, sp->corrupt, base, timeutil_wall_ms());
  if (rename(path, dst) == 0)
    log_err("spool: %s is corrupt (%s); moved to %s", path, why ? why : "unreadable", dst);
  else
    log_err("spool: %s is corrupt (%s) and could not be moved: %s", path, why ? why : "?",
            strerror(errno));
}

static int spool__do_load(struct spool *sp, struct spool_job *j) {
  char path[4096];
  spool_msg_path(j->msg, path, sizeof path);
  struct spool_envelope env;
  const char *why;
  char *data = NULL;
  size_t len = 0;
  int rc = spool__read_file(path, &env, &data, &len, &why);
  if (rc == SG_ECORRUPT) spool__quarantine_corrupt(sp, path, why);
  if (rc) return rc;
  spool_envelope_free(&env); /* the in-memory envelope is the current one */
  j->loaded = data;
  j->loaded_len = len;
  return 0;
}

static void spool__job_finish(void *arg) {
  struct spool_job *j = arg;
  if (j->op == SPOOL_OP_LOAD && j->status == 0) { /* on the owner's loop: no race */
    free(j->msg->data);
    j->msg->data = j->loaded;
    j->msg->data_len = j->loaded_len;
  }
  if (j->cb) j->cb(j->msg, j->status, j->arg);
  free(j);
}

static void spool__run_job(struct spool *sp, struct spool_job *j) {
  switch (j->op) {
    case SPOOL_OP_COMMIT:
    case SPOOL_OP_REPLACE:
      j->status = spool__do_commit(j);
      break;
    case SPOOL_OP_REMOVE:
      j->status = spool__do_remove(j);
      break;
    case SPOOL_OP_LOAD:
      j->status = spool__do_load(sp, j);
      break;
  }
  if (!j->mb) {
    free(j->loaded);
    free(j);
    return;
  }
  j->done.fn = spool__job_finish;
  j->done.arg = j;
  mailbox_post_item(j->mb, &j->done);
}

static void *spool__thread(void *arg) {
  struct spool *sp = arg;
  pthread_mutex_lock(&sp->mu);
  for (;;) {
    while (!sp->head && !sp->stopping) pthread_cond_wait(&sp->cv, &sp->mu);
    struct spool_job *j = sp->head;
    if (!j) break;
    sp->head = j->next;
    if (!sp->head) sp->tail = NULL;
    pthread_mutex_unlock(&sp->mu);
    spool__run_job(sp, j);
    pthread_mutex_lock(&sp->mu);
  }
  pthread_mutex_unlock(&sp->mu);
  return NULL;
}

static int spool__submit(struct spool *sp, enum spool_op op, struct spool_msg *msg,
                         struct spool_dir *dir, struct mailbox *mb, spool_cb cb, void *arg) {
  struct spool_job *j = calloc(1, sizeof *j);
  if (!j) return SG_ENOMEM;
  j->op = op;
  j->msg = msg;
  j->dir = dir;
  j->mb = mb;
  j->cb = cb;
  j->arg = arg;
  pthread_mutex_lock(&sp->mu);
  if (sp->tail) sp->tail->next = j; else sp->head = j;
  sp->tail = j;
  pthread_cond_signal(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

int spool_commit(struct spool *sp, unsigned shard, struct spool_msg *msg, bool replace,
                 struct mailbox *mb, spool_cb cb, void *arg) {
  if (!replace) msg->dir = sp->dirs[shard % sp->n_dirs];
  return spool__submit(sp, replace ? SPOOL_OP_REPLACE : SPOOL_OP_COMMIT, msg, msg->dir, mb, cb,
                       arg);
}

int spool_remove(struct spool *sp, struct spool_msg *msg, struct mailbox *mb, spool_cb cb,
                 void *arg) {
  return spool__submit(sp, SPOOL_OP_REMOVE, msg, msg->dir, mb, cb, arg);
}

int spool_load(struct spool *sp, struct spool_msg *msg, struct mailbox *mb, spool_cb cb,
               void *arg) {
  return spool__submit(sp, SPOOL_OP_LOAD, msg, msg->dir, mb, cb, arg);
}

void spool_msg_free(struct spool_msg *msg) {
  if (!msg) return;
  spool_envelope_free(&msg->env);
  free(msg->data);
  free(msg->wire);
  free(msg->last_error);
  free(msg);
}

void spool_new_id(struct spool *sp, unsigned shard, struct spool_msg *msg) {
  uint32_t n = (uint32_t)atomic_fetch_add(&sp->counters[shard % sp->n_shards], 1);
  snprintf(msg->env.queue_id, sizeof msg->env.queue_id, "%011" PRIX64 "%02X%05X",
           timeutil_wall_ms(), shard & 0xff, n & 0xfffff);
}

bool spool_space_ok(struct spool *sp, uint64_t reserve) {
  int64_t now = (int64_t)time(NULL);
  if (atomic_load(&sp->space_checked_s) != now) {
    atomic_store(&sp->space_checked_s, now);
    struct statvfs sv;
    if (statvfs(sp->root, &sv) == 0) atomic_store(&sp->space_avail, (uint64_t)sv.f_bavail * sv.f_frsize);
  }
  return atomic_load(&sp->space_avail) > reserve;
}

int spool_open(const char *spool_dir, unsigned nshards, unsigned threads, struct spool **out) {
  *out = NULL;
  if (nshards == 0 || threads == 0) return SG_EINVAL;
  struct spool *sp = calloc(1, sizeof *sp);
  if (!sp) return SG_ENOMEM;
  sp->n_shards = nshards;
  pthread_mutex_init(&sp->mu, NULL);
  pthread_cond_init(&sp->cv, NULL);
  atomic_store(&sp->space_avail, UINT64_MAX);
  atomic_store(&sp->space_checked_s, 0);
  int rc = SG_ENOMEM;
  sp->root = strdup(spool_dir);
  sp->counters = calloc(nshards, sizeof *sp->counters);
  if (!sp->root || !sp->counters || asprintf(&sp->corrupt, "%s/corrupt", spool_dir) < 0) goto fail;
  if ((rc = spool__mkdir(sp->root)) != 0 || (rc = spool__mkdir(sp->corrupt)) != 0) goto fail;
  for (unsigned i = 0; i < nshards; i++) {
    char name[32];
    snprintf(name, sizeof name, "q%u", i);
    atomic_store(&sp->counters[i], (uint32_t)rand() ^ (uint32_t)getpid());
    if (!spool__dir_get(sp, name)) {
      rc = SG_EIO;
      goto fail;
    }
  }
  sp->threads = calloc(threads, sizeof *sp->threads);
  if (!sp->threads) goto fail;
  for (; sp->n_threads < threads; sp->n_threads++)
  {
    if (pthread_create(&sp->threads[sp->n_threads], NULL, spool__thread, sp) != 0) {
      rc = SG_EIO;
      goto fail;
    }
    char name[16];
    snprintf(name, sizeof name, "sg-spool%u", sp->n_threads);
    pthread_setname_np(sp->threads[sp->n_threads], name);
  }
  *out = sp;
  return 0;
fail:
  spool_close(sp);
  return rc;
}

void spool_close(struct spool *sp) {
  if (!sp) return;
  pthread_mutex_lock(&sp->mu);
  sp->stopping = true;
  pthread_cond_broadcast(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
  for (unsigned i = 0; i < sp->n_threads; i++) pthread_join(sp->threads[i], NULL);
  for (unsigned i = 0; i < sp->n_dirs; i++) spool__dir_free(sp->dirs[i]);
  free(sp->dirs);
  free(sp->threads);
  free(sp->counters);
  free(sp->corrupt);
  free(sp->root);
  free(sp);
}

static bool spool__is_queue_dir(const struct dirent *de) {
  if (de->d_name[0] != 'q' || de->d_name[1] == '\0') return false;
  for (const char *p = de->d_name + 1; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return true;
}

static bool spool__is_tmp(const char *name) {
  size_t n = strlen(name);
  return n > 4 && strcmp(name + n - 4, ".tmp") == 0;
}

/* A recycled file left by the previous run: back into the pool. */
static void spool__pool_adopt(struct spool_dir *d, const char *name, const char *path) {
  char *end;
  if (name[1] != 'p' || name[2] < '0' || name[2] > '9') return;
  uint64_t n = strtoull(name + 2, &end, 10);
  struct stat st;
  if (*end != '\0' || stat(path, &st) != 0) return;
  if (n > d->pool_seq) d->pool_seq = n;
  if (!spool__pool_give(d, (struct spool_pool){n, (uint64_t)st.st_size})) unlink(path);
}

/* Recover one folder: see spool_recover. */
static int spool__recover_dir(struct spool *sp, struct spool_dir *d,
                              void (*fn)(struct spool_msg *, void *), void *arg) {
  DIR *dh = opendir(d->path);
  if (!dh) return SG_EIO;
  int count = 0;
  struct dirent *de;
  while ((de = readdir(dh)) != NULL) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", d->path, de->d_name);
    if (de->d_name[0] == '.') {
      spool__pool_adopt(d, de->d_name, path);
      continue;
    }
    if (spool__is_tmp(de->d_name)) {
      /* Never acknowledged: the 250 comes only after the rename. */
      log_info("spool: removing unfinished %s", path);
      unlink(path);
      continue;
    }
    struct spool_msg *m = calloc(1, sizeof *m);
    if (!m) break;
    const char *why;
    int rc = spool__read_file(path, &m->env, NULL, &m->data_len, &why);
    if (rc == 0 && strcmp(m->env.queue_id, de->d_name) != 0) {
      spool_envelope_free(&m->env);
      rc = SG_ECORRUPT;
      why = "queue id does not match file name";
    }
    if (rc) {
      free(m);
      if (rc == SG_ECORRUPT) spool__quarantine_corrupt(sp, path, why);
      else log_err("spool: cannot read %s: %s", path, sgerr_str(rc));
      continue;
    }
    m->dir = d;
    fn(m, arg);
    count++;
  }
  closedir(dh);
  return count;
}

int spool_recover(struct spool *sp, void (*fn)(struct spool_msg *msg, void *arg), void *arg) {
  DIR *dh = opendir(sp->root);
  if (!dh) return SG_EIO;
  int total = 0;
  struct dirent *de;
  while ((de = readdir(dh)) != NULL) {
    if (!spool__is_queue_dir(de)) continue;
    struct spool_dir *d = spool__dir_get(sp, de->d_name);
    if (!d) continue;
    int n = spool__recover_dir(sp, d, fn, arg);
    if (n > 0) total += n;
  }
  closedir(dh);
  return total;
}

int spool_scan(const char *spool_dir, void (*fn)(struct spool_msg *, const char *, void *),
               void *arg) {
  DIR *dh = opendir(spool_dir);
  if (!dh) return sgerr_from_errno(errno);
  int total = 0;
  struct dirent *de;
  while ((de = readdir(dh)) != NULL) {
    if (!spool__is_queue_dir(de)) continue;
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", spool_dir, de->d_name);
    DIR *qh = opendir(sub);
    if (!qh) continue;
    struct dirent *qe;
    while ((qe = readdir(qh)) != NULL) {
      if (qe->d_name[0] == '.' || spool__is_tmp(qe->d_name)) continue;
      char path[8192];
      snprintf(path, sizeof path, "%s/%s", sub, qe->d_name);
      struct spool_msg m;
      memset(&m, 0, sizeof m);
      const char *why;
      if (spool__read_file(path, &m.env, NULL, &m.data_len, &why) != 0) continue;
      fn(&m, path, arg);
      spool_envelope_free(&m.env);
      total++;
    }
    closedir(qh);
  }
  closedir(dh);
  return total;
}
