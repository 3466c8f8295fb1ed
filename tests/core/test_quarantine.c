/*
 * test_quarantine - unit tests for core/quarantine.c (issue #6).
 *
 * Real files: each test gets its own mkdtemp folder (removed afterwards)
 * holding ROOT, and checks what the store leaves on disk as well as what
 * its API answers: modes, names, what a damaged file becomes, what expiry
 * removes and logs (stderr is captured into a file for that).
 *
 * With QUARANTINE_CORPUS_DIR set, the program instead writes the fuzz seed
 * corpus (valid files made by the encoder) into that folder and exits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/quarantine.h"
#include "core/sgerr.h"
#include "core/timeutil.h"

#define DAY_MS (24ull * 3600 * 1000)

/* ---- fixture and helpers -------------------------------------------------- */

struct fx {
  char dir[64];   /* the mkdtemp folder */
  char root[128]; /* dir/quarantine */
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/sg-quar-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  snprintf(f->root, sizeof f->root, "%s/quarantine", f->dir);
  *state = f;
  return 0;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

static int teardown(void **state) {
  struct fx *f = *state;
  nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static char *rcpts2[] = {"alice@example.org", "bob@example.net"};

static struct spool_envelope sample_env(void) {
  struct spool_envelope e = {
      .queue_id = "Q1a.2-b",
      .arrival_ms = 1704164645123ull,
      .sender = "sender@example.com",
      .rcpts = rcpts2,
      .n_rcpts = 2,
      .listener = "incoming",
      .next_hop = "127.0.0.1:2526",
      .flags = SPOOL_F_8BITMIME | SPOOL_F_SMIME,
      .client = "mx.example.com [192.0.2.1]",
  };
  return e;
}

static const char sample_data[] = "From: a@example.com\r\nSubject: hold me\r\n\r\nbody line\r\n";

/* Hold sample data in quarantine name with the given held time; the ID
 * into id_out (QUARANTINE_ID_MAX bytes).  Opens the store first, as the
 * daemon does before it puts anything. */
static void put(const struct fx *f, const char *name, uint64_t held_ms, char *id_out) {
  struct quarantine_meta m = {.held_ms = held_ms};
  char err[256] = "";
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  snprintf(m.name, sizeof m.name, "%s", name);
  snprintf(m.filter, sizeof m.filter, "quarantine_smime_messages");
  snprintf(m.reason, sizeof m.reason, "smime=fail");
  struct spool_envelope e = sample_env();
  assert_int_equal(quarantine_put(f->root, &m, &e, sample_data, sizeof sample_data - 1, err, sizeof err), 0);
  assert_true(quarantine_id_ok(m.id));
  if (id_out) memcpy(id_out, m.id, QUARANTINE_ID_MAX);
}

static void path_of(const struct fx *f, const char *rel, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", f->root, rel);
}

static bool exists(const struct fx *f, const char *rel) {
  char p[512];
  struct stat st;
  path_of(f, rel, p, sizeof p);
  return lstat(p, &st) == 0;
}

static mode_t mode_of(const struct fx *f, const char *rel) {
  char p[512];
  struct stat st;
  path_of(f, rel, p, sizeof p);
  assert_int_equal(lstat(p, &st), 0);
  return st.st_mode & 07777;
}

static uint64_t size_of(const struct fx *f, const char *name, const char *id) {
  char p[512];
  struct stat st;
  snprintf(p, sizeof p, "%s/%s/%s", f->root, name, id);
  assert_int_equal(stat(p, &st), 0);
  return (uint64_t)st.st_size;
}

/* Flip one byte of the message data part of a held file (the middle of
 * the file: past the header and the envelope). */
static void damage(const struct fx *f, const char *rel) {
  char p[512];
  path_of(f, rel, p, sizeof p);
  int fd = open(p, O_RDWR);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  off_t at = st.st_size - 30;
  unsigned char c;
  assert_int_equal(pread(fd, &c, 1, at), 1);
  c ^= 0x20;
  assert_int_equal(pwrite(fd, &c, 1, at), 1);
  close(fd);
}

/* Every path under dir, sorted, one per line: a snapshot of the tree. */
static struct buf tree;
static int tree_add(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)flag, (void)ftw;
  buf_appendf(&tree, "%s %o %lld\n", p, (unsigned)st->st_mode, (long long)st->st_size);
  return 0;
}
static char *snapshot(const char *dir) {
  buf_reset(&tree);
  nftw(dir, tree_add, 16, FTW_PHYS);
  return strndup(tree.data ? tree.data : "", tree.len);
}

/* A listing collected from quarantine_list. */
struct row {
  struct quarantine_meta meta;
  char sender[64];
  size_t n_rcpts;
  char corrupt[128];
};
struct rows {
  struct row v[128];
  size_t n;
};

static void collect(const struct quarantine_meta *meta, const struct spool_envelope *env, const char *corrupt,
                    void *arg) {
  struct rows *r = arg;
  assert_true(r->n < 128);
  struct row *w = &r->v[r->n++];
  memset(w, 0, sizeof *w);
  w->meta = *meta;
  assert_true((env == NULL) == (corrupt != NULL));
  if (env) {
    snprintf(w->sender, sizeof w->sender, "%s", env->sender);
    w->n_rcpts = env->n_rcpts;
  } else {
    snprintf(w->corrupt, sizeof w->corrupt, "%s", corrupt);
  }
}

static void list(const struct fx *f, const char *name, struct rows *r) {
  char err[256];
  r->n = 0;
  assert_int_equal(quarantine_list(f->root, name, collect, r, err, sizeof err), 0);
}

/* ---- the format ------------------------------------------------------------ */

static void encode(const struct quarantine_meta *m, struct buf *file) {
  struct spool_envelope e = sample_env();
  struct buf head = BUF_INIT, tail = BUF_INIT;
  assert_int_equal(quarantine_encode(m, &e, sample_data, sizeof sample_data - 1, &head, &tail), 0);
  buf_reset(file);
  buf_append(file, head.data, head.len);
  buf_append(file, sample_data, sizeof sample_data - 1);
  buf_append(file, tail.data, tail.len);
  buf_free(&head);
  buf_free(&tail);
}

static void test_parse_roundtrip(void **state) {
  (void)state;
  struct quarantine_meta m = {.id = "0123456789abcdef01234567", .name = "Policy", .held_ms = 1234567,
                              .size = sizeof sample_data - 1, .filter = "f1", .reason = "smime=fail"};
  struct buf file = BUF_INIT;
  encode(&m, &file);
  struct quarantine_meta out;
  struct spool_envelope env;
  const char *data = NULL;
  size_t len = 0;
  assert_int_equal(quarantine_parse(file.data, file.len, &out, &env, &data, &len), 0);
  assert_memory_equal(&out, &m, sizeof m);
  assert_string_equal(env.sender, "sender@example.com");
  assert_int_equal(env.n_rcpts, 2);
  assert_int_equal(len, sizeof sample_data - 1);
  assert_memory_equal(data, sample_data, len);
  spool_envelope_free(&env);
  buf_free(&file);
}

/* Every truncation and every bit flip of a valid image is refused. */
static void test_parse_rejects_damage(void **state) {
  (void)state;
  struct quarantine_meta m = {.id = "00ff", .name = "Q", .size = sizeof sample_data - 1};
  struct buf file = BUF_INIT;
  encode(&m, &file);
  struct quarantine_meta out;
  struct spool_envelope env;
  for (size_t n = 0; n < file.len; n++) {
    assert_int_equal(quarantine_parse(file.data, n, &out, &env, NULL, NULL), SG_ECORRUPT);
    assert_null(env.sender);
  }
  for (size_t i = 0; i < file.len * 8; i++) {
    file.data[i / 8] ^= (char)(1 << (i % 8));
    assert_int_equal(quarantine_parse(file.data, file.len, &out, &env, NULL, NULL), SG_ECORRUPT);
    file.data[i / 8] ^= (char)(1 << (i % 8));
  }
  buf_free(&file);
}

static void test_encode_rejects_bad_meta(void **state) {
  (void)state;
  struct spool_envelope e = sample_env();
  struct buf head = BUF_INIT, tail = BUF_INIT;
  size_t n = sizeof sample_data - 1;
  struct quarantine_meta ok = {.id = "abc", .name = "Policy", .size = n};
  struct quarantine_meta bad[4] = {ok, ok, ok, ok};
  snprintf(bad[0].id, sizeof bad[0].id, "ABC");
  snprintf(bad[1].name, sizeof bad[1].name, "../x");
  bad[2].size = n + 1;
  memset(bad[3].reason, 'r', sizeof bad[3].reason); /* no NUL in QUARANTINE_TEXT_MAX bytes */
  for (int i = 0; i < 4; i++) {
    assert_int_equal(quarantine_encode(&bad[i], &e, sample_data, n, &head, &tail), SG_EINVAL);
    assert_int_equal(head.len, 0);
    assert_int_equal(tail.len, 0);
  }
  assert_int_equal(quarantine_encode(&ok, &e, sample_data, n, &head, &tail), 0);
  buf_free(&head);
  buf_free(&tail);
}

/* ---- open, put, list, show -------------------------------------------------- */

static void test_open_makes_private_folders(void **state) {
  struct fx *f = *state;
  char err[256];
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  assert_int_equal(mode_of(f, "."), 0700);
  assert_int_equal(mode_of(f, "Policy"), 0700);
  char p[512];
  path_of(f, "Policy", p, sizeof p);
  DIR *d = opendir(p);
  assert_non_null(d);
  closedir(d);
  assert_int_equal(mode_of(f, ".released"), 0700);
  /* Twice is fine (the daemon opens at every start). */
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
}

static void test_put_makes_private_files(void **state) {
  struct fx *f = *state;
  char err[256], id[QUARANTINE_ID_MAX], rel[128];
  mode_t old = umask(0); /* the modes are ours, not the umask's */
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  put(f, "Spam", 0, id);
  umask(old);
  assert_int_equal(mode_of(f, "Spam"), 0700);
  snprintf(rel, sizeof rel, "Spam/%s", id);
  assert_int_equal(mode_of(f, rel), 0600);
  assert_int_equal(strlen(id), 24);
}

static void test_put_show_roundtrip(void **state) {
  struct fx *f = *state;
  char err[256];
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  uint64_t before = timeutil_wall_ms();
  char id[QUARANTINE_ID_MAX];
  put(f, "Policy", 0, id);
  struct quarantine_meta m;
  struct spool_envelope e;
  char *data;
  size_t len;
  assert_int_equal(quarantine_show(f->root, id, &m, &e, &data, &len, err, sizeof err), 0);
  assert_string_equal(m.id, id);
  assert_string_equal(m.name, "Policy");
  assert_true(m.held_ms >= before && m.held_ms <= timeutil_wall_ms());
  assert_int_equal(m.size, sizeof sample_data - 1);
  assert_string_equal(m.filter, "quarantine_smime_messages");
  assert_string_equal(m.reason, "smime=fail");
  struct spool_envelope want = sample_env();
  assert_string_equal(e.queue_id, want.queue_id);
  assert_true(e.arrival_ms == want.arrival_ms);
  assert_string_equal(e.sender, want.sender);
  assert_int_equal(e.n_rcpts, 2);
  assert_string_equal(e.rcpts[1], "bob@example.net");
  assert_string_equal(e.listener, "incoming");
  assert_string_equal(e.client, want.client);
  assert_int_equal(e.flags, want.flags); /* not yet released */
  assert_int_equal(len, sizeof sample_data - 1);
  assert_memory_equal(data, sample_data, len);
  assert_int_equal(data[len], '\0');
  spool_envelope_free(&e);
  free(data);
}

static void test_put_list_roundtrip(void **state) {
  struct fx *f = *state;
  char id[QUARANTINE_ID_MAX];
  put(f, "Policy", 5000, id);
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.v[0].meta.id, id);
  assert_string_equal(r.v[0].meta.name, "Policy");
  assert_true(r.v[0].meta.held_ms == 5000);
  assert_int_equal(r.v[0].meta.size, sizeof sample_data - 1);
  assert_string_equal(r.v[0].meta.reason, "smime=fail");
  assert_string_equal(r.v[0].sender, "sender@example.com");
  assert_int_equal(r.v[0].n_rcpts, 2);
}

static void test_list_missing_root_is_empty(void **state) {
  struct fx *f = *state;
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 0);
  list(f, "Policy", &r);
  assert_int_equal(r.n, 0);
  assert_false(exists(f, "."));
}

static void test_list_oldest_first(void **state) {
  struct fx *f = *state;
  char a[QUARANTINE_ID_MAX], b[QUARANTINE_ID_MAX], c[QUARANTINE_ID_MAX], d[QUARANTINE_ID_MAX];
  put(f, "Policy", 3000, a);
  put(f, "Other", 1000, b);
  put(f, "Policy", 2000, c);
  put(f, "Other", 2000, d); /* same time as c: the ID decides */
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 4);
  assert_string_equal(r.v[0].meta.id, b);
  const char *first = strcmp(c, d) < 0 ? c : d, *second = strcmp(c, d) < 0 ? d : c;
  assert_string_equal(r.v[1].meta.id, first);
  assert_string_equal(r.v[2].meta.id, second);
  assert_string_equal(r.v[3].meta.id, a);
  list(f, "Other", &r);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.v[0].meta.id, b);
  assert_string_equal(r.v[1].meta.id, d);
}

static void test_unknown_id_not_found(void **state) {
  struct fx *f = *state;
  char err[256];
  put(f, "Policy", 0, NULL);
  struct quarantine_meta m;
  struct spool_envelope e;
  char *data;
  size_t len;
  const char *id = "0123456789abcdef01234567";
  assert_int_equal(quarantine_show(f->root, id, &m, &e, &data, &len, err, sizeof err), SG_ENOTFOUND);
  assert_null(data);
  assert_int_equal(quarantine_delete(f->root, id, err, sizeof err), SG_ENOTFOUND);
  assert_int_equal(quarantine_release(f->root, id, err, sizeof err), SG_ENOTFOUND);
  assert_non_null(strstr(err, id));
}

/* Nothing from a caller becomes a path: "../x" would name ROOT/x. */
static void test_bad_ids_refused(void **state) {
  struct fx *f = *state;
  char err[256], p[512], long_id[QUARANTINE_ID_MAX + 1];
  put(f, "Policy", 0, NULL);
  path_of(f, "x", p, sizeof p);
  FILE *victim = fopen(p, "w");
  assert_non_null(victim);
  fclose(victim);
  memset(long_id, 'a', QUARANTINE_ID_MAX);
  long_id[QUARANTINE_ID_MAX] = '\0';
  const char *bad[] = {"../x", "", long_id, "abcg", "ABCDEF", "a/b", ".", "..", "x"};
  char *before = snapshot(f->dir);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct quarantine_meta m;
    struct spool_envelope e;
    char *data;
    size_t len;
    assert_false(quarantine_id_ok(bad[i]));
    assert_int_equal(quarantine_show(f->root, bad[i], &m, &e, &data, &len, err, sizeof err), SG_EINVAL);
    assert_int_equal(quarantine_delete(f->root, bad[i], err, sizeof err), SG_EINVAL);
    assert_int_equal(quarantine_release(f->root, bad[i], err, sizeof err), SG_EINVAL);
  }
  char *after = snapshot(f->dir);
  assert_string_equal(before, after);
  assert_true(exists(f, "x"));
  free(before);
  free(after);
}

static void test_bad_names_refused(void **state) {
  struct fx *f = *state;
  char err[256], long_name[QUARANTINE_NAME_MAX + 2];
  memset(long_name, 'n', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  assert_true(quarantine_name_ok("Policy"));
  assert_true(quarantine_name_ok("a.b_c-9"));
  long_name[QUARANTINE_NAME_MAX] = '\0';
  assert_true(quarantine_name_ok(long_name));
  long_name[QUARANTINE_NAME_MAX] = 'n';
  const char *bad[] = {"", ".hidden", "..", "../x", "a/b", "sp ace", "é", long_name};
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  char *before = snapshot(f->dir);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_false(quarantine_name_ok(bad[i]));
    struct quarantine_meta m = {0};
    memcpy(m.name, bad[i], strnlen(bad[i], sizeof m.name)); /* the long one fills it, no NUL */
    struct spool_envelope e = sample_env();
    assert_int_equal(quarantine_put(f->root, &m, &e, "x", 1, err, sizeof err), SG_EINVAL);
    assert_int_equal(quarantine_list(f->root, bad[i], collect, NULL, err, sizeof err), SG_EINVAL);
  }
  char *after = snapshot(f->dir);
  assert_string_equal(before, after);
  free(before);
  free(after);
}

/* ---- delete, release ---------------------------------------------------------- */

static void test_delete(void **state) {
  struct fx *f = *state;
  char err[256], id[QUARANTINE_ID_MAX], keep[QUARANTINE_ID_MAX], rel[128];
  put(f, "Policy", 0, id);
  put(f, "Policy", 0, keep);
  assert_int_equal(quarantine_delete(f->root, id, err, sizeof err), 0);
  snprintf(rel, sizeof rel, "Policy/%s", id);
  assert_false(exists(f, rel));
  assert_int_equal(quarantine_delete(f->root, id, err, sizeof err), SG_ENOTFOUND);
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.v[0].meta.id, keep);
}

struct taken {
  int n;
  char path[512];
  char id[QUARANTINE_ID_MAX];
  uint32_t flags;
  char sender[64];
  char data[256];
  size_t len;
};

static void take(struct spool_envelope *env, char *data, size_t len, const char *path,
                 const struct quarantine_meta *meta, void *arg) {
  struct taken *t = arg;
  t->n++;
  snprintf(t->path, sizeof t->path, "%s", path);
  snprintf(t->id, sizeof t->id, "%s", meta->id);
  snprintf(t->sender, sizeof t->sender, "%s", env->sender);
  t->flags = env->flags;
  t->len = len < sizeof t->data ? len : sizeof t->data;
  memcpy(t->data, data, t->len);
  spool_envelope_free(env);
  free(data);
}

static void test_release_take_done(void **state) {
  struct fx *f = *state;
  char err[256], id[QUARANTINE_ID_MAX], rel[128];
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  put(f, "Policy", 0, id);
  assert_int_equal(quarantine_release(f->root, id, err, sizeof err), 0);
  snprintf(rel, sizeof rel, "Policy/%s", id);
  assert_false(exists(f, rel));
  snprintf(rel, sizeof rel, ".released/%s", id);
  assert_true(exists(f, rel));
  assert_int_equal(mode_of(f, rel), 0600);
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 0); /* released is no longer held */
  assert_int_equal(quarantine_release(f->root, id, err, sizeof err), SG_ENOTFOUND);

  struct taken t = {0};
  assert_int_equal(quarantine_take_released(f->root, take, &t), 1);
  assert_int_equal(t.n, 1);
  assert_string_equal(t.id, id);
  assert_string_equal(t.sender, "sender@example.com");
  assert_int_equal(t.flags, SPOOL_F_8BITMIME | SPOOL_F_SMIME | SPOOL_F_RELEASED);
  assert_int_equal(t.len, sizeof sample_data - 1);
  assert_memory_equal(t.data, sample_data, t.len);
  char want[512];
  path_of(f, rel, want, sizeof want);
  assert_string_equal(t.path, want);
  /* Until done, the file stays: a crash before the requeue loses nothing. */
  assert_true(exists(f, rel));
  assert_int_equal(quarantine_done(t.path), 0);
  assert_false(exists(f, rel));
  assert_int_equal(quarantine_take_released(f->root, take, &t), 0);
  assert_int_equal(t.n, 1);
}

/* ---- damaged files ------------------------------------------------------------ */

static void test_corrupt_listed_not_released(void **state) {
  struct fx *f = *state;
  char err[256], id[QUARANTINE_ID_MAX], good[QUARANTINE_ID_MAX], rel[128];
  put(f, "Policy", 1000, id);
  put(f, "Policy", 2000, good);
  snprintf(rel, sizeof rel, "Policy/%s", id);
  uint64_t bytes = size_of(f, "Policy", id);
  damage(f, rel);
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.v[0].meta.id, id);
  assert_string_equal(r.v[0].meta.name, "Policy");
  assert_true(r.v[0].meta.held_ms == 1000); /* the header is intact */
  assert_true(r.v[0].meta.size == bytes);
  assert_string_equal(r.v[0].corrupt, "checksum mismatch");
  assert_string_equal(r.v[1].corrupt, "");

  struct quarantine_meta m;
  struct spool_envelope e;
  char *data;
  size_t len;
  assert_int_equal(quarantine_show(f->root, id, &m, &e, &data, &len, err, sizeof err), SG_ECORRUPT);
  assert_non_null(strstr(err, "checksum mismatch"));
  assert_null(data);
  assert_int_equal(quarantine_release(f->root, id, err, sizeof err), SG_ECORRUPT);
  assert_true(exists(f, rel)); /* left where it was */
  assert_int_equal(quarantine_delete(f->root, id, err, sizeof err), 0);
}

/* A file copied into another quarantine is not that quarantine's. */
static void test_copied_file_is_corrupt(void **state) {
  struct fx *f = *state;
  char id[QUARANTINE_ID_MAX], from[512], to[512];
  put(f, "A", 0, id);
  put(f, "B", 0, NULL);
  snprintf(from, sizeof from, "%s/A/%s", f->root, id);
  snprintf(to, sizeof to, "%s/B/%s", f->root, id);
  assert_int_equal(rename(from, to), 0);
  struct rows r;
  list(f, "B", &r);
  assert_int_equal(r.n, 2);
  int bad = strcmp(r.v[0].meta.id, id) == 0 ? 0 : 1;
  assert_string_equal(r.v[bad].corrupt, "the header names another message or quarantine");
}

static void test_take_released_sets_damaged_aside(void **state) {
  struct fx *f = *state;
  char err[256], id[QUARANTINE_ID_MAX], rel[128], aside[160];
  put(f, "Policy", 0, id);
  assert_int_equal(quarantine_release(f->root, id, err, sizeof err), 0);
  snprintf(rel, sizeof rel, ".released/%s", id);
  damage(f, rel);
  struct taken t = {0};
  assert_int_equal(quarantine_take_released(f->root, take, &t), 0);
  assert_int_equal(t.n, 0);
  assert_false(exists(f, rel));
  snprintf(aside, sizeof aside, ".released/%s.corrupt", id);
  assert_true(exists(f, aside));
  /* Set aside for good: the next pass does not see it again. */
  assert_int_equal(quarantine_take_released(f->root, take, &t), 0);
  assert_true(exists(f, aside));
}

/* ---- open's clean-up ---------------------------------------------------------- */

static void test_open_removes_tmp_files(void **state) {
  struct fx *f = *state;
  char err[256], id[QUARANTINE_ID_MAX], p[512], rel[128];
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  put(f, "Spam", 0, id);
  const char *tmps[] = {"Spam/.tmp-0123abcd", "Policy/.tmp-x", ".released/.tmp-feed"};
  for (int i = 0; i < 3; i++) {
    path_of(f, tmps[i], p, sizeof p);
    FILE *t = fopen(p, "w");
    assert_non_null(t);
    fputs("half a file", t);
    fclose(t);
  }
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  for (int i = 0; i < 3; i++) assert_false(exists(f, tmps[i]));
  snprintf(rel, sizeof rel, "Spam/%s", id);
  assert_true(exists(f, rel));
}

/* ---- expiry ------------------------------------------------------------------- */

struct limits {
  struct quarantine_limits a, b;
  int calls;
};

static struct quarantine_limits limits_of(const char *name, void *arg) {
  struct limits *l = arg;
  l->calls++;
  return strcmp(name, "A") == 0 ? l->a : l->b;
}

/* Run expire with stderr captured; the log lines into log (cap bytes). */
static int expire_logged(const struct fx *f, uint64_t now, struct limits *l, char *log, size_t cap) {
  char p[512];
  snprintf(p, sizeof p, "%s/stderr", f->dir);
  int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600), saved = dup(2);
  assert_true(fd >= 0 && saved >= 0);
  fflush(stderr);
  dup2(fd, 2);
  int n = quarantine_expire(f->root, now, limits_of, l);
  dup2(saved, 2);
  close(saved);
  ssize_t got = pread(fd, log, cap - 1, 0);
  log[got > 0 ? got : 0] = '\0';
  close(fd);
  unlink(p);
  return n;
}

static void test_expire_by_retention(void **state) {
  struct fx *f = *state;
  uint64_t now = 100 * DAY_MS;
  char old[QUARANTINE_ID_MAX], mid[QUARANTINE_ID_MAX], young[QUARANTINE_ID_MAX], want[256], log[4096];
  put(f, "A", now - 10 * DAY_MS, old);
  put(f, "A", now - 5 * DAY_MS, mid); /* exactly the retention: expired */
  put(f, "A", now - 5 * DAY_MS + 1, young);
  struct limits l = {.a = {.retention_ms = 5 * DAY_MS}};
  assert_int_equal(expire_logged(f, now, &l, log, sizeof log), 2);
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.v[0].meta.id, young);
  snprintf(want, sizeof want, "quarantine: expired id=%s quarantine=A age=864000s reason=retention", old);
  assert_non_null(strstr(log, want));
  snprintf(want, sizeof want, "quarantine: expired id=%s quarantine=A age=432000s reason=retention", mid);
  assert_non_null(strstr(log, want));
  assert_int_equal(l.calls, 2); /* once per quarantine: A and Policy */
}

static void test_expire_by_size_oldest_first(void **state) {
  struct fx *f = *state;
  char a[QUARANTINE_ID_MAX], b[QUARANTINE_ID_MAX], c[QUARANTINE_ID_MAX], want[256], log[4096];
  put(f, "A", 3000, c);
  put(f, "A", 1000, a);
  put(f, "A", 2000, b);
  uint64_t sb = size_of(f, "A", b), sc = size_of(f, "A", c);
  /* Exactly what b and c take: a (the oldest) goes, nothing else. */
  struct limits l = {.a = {.max_bytes = sb + sc}};
  assert_int_equal(expire_logged(f, 4000, &l, log, sizeof log), 1);
  snprintf(want, sizeof want, "quarantine: expired id=%s quarantine=A age=3s reason=size", a);
  assert_non_null(strstr(log, want));
  assert_int_equal(expire_logged(f, 4000, &l, log, sizeof log), 0);
  /* One byte less: b goes too, c stays. */
  l.a.max_bytes = sb + sc - 1;
  assert_int_equal(expire_logged(f, 4000, &l, log, sizeof log), 1);
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.v[0].meta.id, c);
}

static void test_expire_limits_per_quarantine(void **state) {
  struct fx *f = *state;
  char a[QUARANTINE_ID_MAX], b[QUARANTINE_ID_MAX], log[4096];
  uint64_t now = 50 * DAY_MS;
  put(f, "A", now - 2 * DAY_MS, a);
  put(f, "B", now - 2 * DAY_MS, b);
  put(f, "Policy", now - 40 * DAY_MS, NULL);
  /* A: one day; B and Policy: no limits at all. */
  struct limits l = {.a = {.retention_ms = DAY_MS}, .b = {0, 0}};
  assert_int_equal(expire_logged(f, now, &l, log, sizeof log), 1);
  assert_int_equal(l.calls, 3);
  struct rows r;
  list(f, NULL, &r);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.v[1].meta.id, b);
  assert_null(strstr(log, b));
  /* Now B gets a size limit below its one message. */
  l.b.max_bytes = 1;
  assert_int_equal(expire_logged(f, now, &l, log, sizeof log), 2);
  list(f, NULL, &r);
  assert_int_equal(r.n, 0);
}

static void test_expire_counts_damaged_files(void **state) {
  struct fx *f = *state;
  char id[QUARANTINE_ID_MAX], rel[128], log[4096];
  put(f, "A", 1000, id);
  snprintf(rel, sizeof rel, "A/%s", id);
  damage(f, rel);
  struct limits l = {.a = {.max_bytes = 1}};
  assert_int_equal(expire_logged(f, 2000, &l, log, sizeof log), 1);
  assert_false(exists(f, rel));
}

/* ---- concurrency -------------------------------------------------------------- */

#define PUT_THREADS 4
#define PUTS_EACH 25

struct put_arg {
  const struct fx *f;
  char ids[PUTS_EACH][QUARANTINE_ID_MAX];
  int fails;
};

static void *put_thread(void *p) {
  struct put_arg *a = p;
  for (int i = 0; i < PUTS_EACH; i++) {
    struct quarantine_meta m = {.name = "Policy"};
    struct spool_envelope e = sample_env();
    if (quarantine_put(a->f->root, &m, &e, sample_data, sizeof sample_data - 1, NULL, 0) != 0) a->fails++;
    memcpy(a->ids[i], m.id, QUARANTINE_ID_MAX);
  }
  return NULL;
}

static int id_cmp(const void *a, const void *b) { return strcmp(a, b); }

static void test_concurrent_put_distinct_ids(void **state) {
  struct fx *f = *state;
  char err[256];
  assert_int_equal(quarantine_open(f->root, err, sizeof err), 0);
  static struct put_arg args[PUT_THREADS];
  pthread_t th[PUT_THREADS];
  for (int i = 0; i < PUT_THREADS; i++) {
    args[i] = (struct put_arg){.f = f};
    assert_int_equal(pthread_create(&th[i], NULL, put_thread, &args[i]), 0);
  }
  for (int i = 0; i < PUT_THREADS; i++) pthread_join(th[i], NULL);
  static char all[PUT_THREADS * PUTS_EACH][QUARANTINE_ID_MAX];
  for (int i = 0; i < PUT_THREADS; i++) {
    assert_int_equal(args[i].fails, 0);
    memcpy(all[i * PUTS_EACH], args[i].ids, sizeof args[i].ids);
  }
  qsort(all, PUT_THREADS * PUTS_EACH, QUARANTINE_ID_MAX, id_cmp);
  for (int i = 1; i < PUT_THREADS * PUTS_EACH; i++) assert_true(strcmp(all[i - 1], all[i]) < 0);
  struct rows r;
  list(f, "Policy", &r);
  assert_int_equal(r.n, PUT_THREADS * PUTS_EACH);
}

/* ---- fuzz seeds ---------------------------------------------------------------- */

static int write_seed(const char *dir, const char *name, const struct quarantine_meta *m,
                      const struct spool_envelope *e, const char *data, size_t len) {
  struct buf head = BUF_INIT, tail = BUF_INIT;
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  int rc = !f || quarantine_encode(m, e, data, len, &head, &tail) != 0;
  if (!rc) rc = fwrite(head.data, 1, head.len, f) != head.len || fwrite(data, 1, len, f) != len ||
                fwrite(tail.data, 1, tail.len, f) != tail.len;
  if (f && fclose(f) != 0) rc = 1;
  buf_free(&head);
  buf_free(&tail);
  return rc;
}

static int write_corpus(const char *dir) {
  struct spool_envelope e = sample_env();
  struct quarantine_meta m = {.id = "000001a2281bcc1f6028a580", .name = "Policy", .held_ms = 1704164645123ull,
                              .size = sizeof sample_data - 1, .filter = "quarantine_smime_messages",
                              .reason = "smime=fail"};
  int rc = write_seed(dir, "seed-basic", &m, &e, sample_data, m.size);
  struct quarantine_meta empty = {.id = "0", .name = "a"};
  struct spool_envelope bare = {.queue_id = "x", .sender = "", .rcpts = rcpts2, .n_rcpts = 1};
  rc |= write_seed(dir, "seed-empty", &empty, &bare, "", 0);
  memset(m.filter, 'f', sizeof m.filter - 1);
  memset(m.reason, 'r', sizeof m.reason - 1);
  memset(m.id, 'f', sizeof m.id - 1);
  memset(m.name, 'N', sizeof m.name - 1);
  rc |= write_seed(dir, "seed-longest-fields", &m, &e, sample_data, m.size);
  return rc;
}

int main(void) {
  const char *corpus = getenv("QUARANTINE_CORPUS_DIR");
  if (corpus) return write_corpus(corpus);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_roundtrip),
      cmocka_unit_test(test_parse_rejects_damage),
      cmocka_unit_test(test_encode_rejects_bad_meta),
      T(test_open_makes_private_folders),
      T(test_put_makes_private_files),
      T(test_put_show_roundtrip),
      T(test_put_list_roundtrip),
      T(test_list_missing_root_is_empty),
      T(test_list_oldest_first),
      T(test_unknown_id_not_found),
      T(test_bad_ids_refused),
      T(test_bad_names_refused),
      T(test_delete),
      T(test_release_take_done),
      T(test_corrupt_listed_not_released),
      T(test_copied_file_is_corrupt),
      T(test_take_released_sets_damaged_aside),
      T(test_open_removes_tmp_files),
      T(test_expire_by_retention),
      T(test_expire_by_size_oldest_first),
      T(test_expire_limits_per_quarantine),
      T(test_expire_counts_damaged_files),
      T(test_concurrent_put_distinct_ids),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  buf_free(&tree);
  return rc;
}
