/*
 * keystore - others' public keys and CA lists in LMDB (R15, R16, R22);
 * harvested keys, alerts and the generation live in keystore_harvest.c.
 *
 * Owns one LMDB environment per open store and, per process, the rule
 * that a folder is opened at most once (LMDB's locks are per process:
 * closing a second environment on the same files would drop the first
 * one's locks).  Records:
 *   pubkeys   name -> 8-byte big-endian time added, then the DER certificate
 *   by_email  lower-cased e-mail (SAN rfc822Name, or subject emailAddress)
 *             -> name, MDB_DUPSORT
 *   by_domain lower-cased SAN dNSName ("*.example.com" kept) -> name,
 *             MDB_DUPSORT
 *   cas       list name -> per certificate or CRL a 4-byte big-endian
 *             length (top bit set for a CRL) and the DER
 * (harvested, held, by_used, alerts and meta: keystore_harvest.c).
 * Index entries are written and removed in the same write transaction as
 * the record they point to, and are recomputed from the stored
 * certificate on delete, so the indexes never need their own format.
 *
 * Trusts nothing it reads: PEM files are parsed block by block with
 * errors naming the file and block; every database record is decoded and
 * its certificate re-checked against the looked-up address, so a stale
 * or corrupt index entry can only make a key not found, never a wrong
 * key used.
 */
#include <ctype.h>
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/keystore.h"
#include "crypto/keystore_internal.h"

/* LMDB reserves the map as address space, not disk: the file grows only
 * as records are written.  4 GiB holds the 512 MB harvest bound (DESIGN,
 * R20) beside many managed keys, with ample room for LMDB's copy-on-write
 * pages (a long read transaction pins the old ones).  A harvest bound set
 * above about 2 GB (limits.harvested_store) would need a larger map. */
#define KS_MAPSIZE ((size_t)4 << 30)
#define KS_MAXDBS 16 /* 9 used: 4 here, 5 in keystore_harvest.c */
#define KS_BLOCK_MAX (1u << 20) /* one PEM certificate block */
#define KS_PROGRESS_EVERY 500

/* Stores open in this process (see the header comment). */
static pthread_mutex_t ks__open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct keystore *ks__open_list;

/* ---- errors ----------------------------------------------------------------- */

#define ks__fail sgerr_fail /* core/sgerr.h */

int ks__rc(int mdb_rc) {
  switch (mdb_rc) {
  case MDB_SUCCESS: return 0;
  case MDB_NOTFOUND: return SG_ENOTFOUND;
  case MDB_KEYEXIST: return SG_EEXIST;
  case MDB_MAP_FULL: case ENOSPC: return SG_ENOSPC;
  case MDB_READERS_FULL: case MDB_MAP_RESIZED: return SG_ETEMP;
  case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID: case MDB_VERSION_MISMATCH:
    return SG_ECORRUPT;
  default: return mdb_rc > 0 ? sgerr_from_errno(mdb_rc) : SG_EIO;
  }
}

/* An LMDB failure as err text and a sealgate code. */
int ks__mdb_fail(char *err, size_t errlen, int mdb_rc, const char *what) {
  return ks__fail(err, errlen, ks__rc(mdb_rc), "%s: %s", what, mdb_strerror(mdb_rc));
}

/* ---- names ------------------------------------------------------------------ */

int keystore_name_check(const char *name, char *err, size_t errlen) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > KEYSTORE_NAME_MAX)
    return ks__fail(err, errlen, SG_EINVAL, "name must be 1-%d characters", KEYSTORE_NAME_MAX);
  if (!isalnum((unsigned char)name[0]))
    return ks__fail(err, errlen, SG_EINVAL, "name '%s' must start with a letter or digit", name);
  for (const char *p = name; *p; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch >= 0x80 || !(isalnum(ch) || strchr("._@+-", ch)))
      return ks__fail(err, errlen, SG_EINVAL, "name '%s': only letters, digits and . _ @ + - are allowed",
                      name);
  }
  return 0;
}

/* ---- what a certificate is indexed under ------------------------------------ */

/* One identity as a C string (case as written), or -1 when it cannot be
 * one (an embedded NUL, an over-long or empty value): such names are
 * skipped, as a certificate cannot be looked up by them anyway. */
static int ks__id_copy(const ASN1_STRING *s, char *out) {
  int len = ASN1_STRING_length(s);
  const unsigned char *d = ASN1_STRING_get0_data(s);
  if (len <= 0 || len > KS_ID_MAX || memchr(d, '\0', (size_t)len)) return -1;
  memcpy(out, d, (size_t)len);
  out[len] = '\0';
  return len;
}

void ks__lower(const char *in, char *out) {
  while ((*out++ = (char)tolower((unsigned char)*in++)) != '\0') {}
}

/* Calls fn for each SAN e-mail, subject emailAddress and SAN DNS name. */
int ks__ids(X509 *x, ks_id_fn fn, void *arg) {
  char id[KS_ID_MAX + 1];
  int rc = 0;
  GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  for (int i = 0; rc == 0 && i < sk_GENERAL_NAME_num(gens); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    if (g->type == GEN_EMAIL && ks__id_copy(g->d.rfc822Name, id) > 0) rc = fn(arg, KS_EMAIL, id);
    else if (g->type == GEN_DNS && ks__id_copy(g->d.dNSName, id) > 0) rc = fn(arg, KS_DOMAIN, id);
  }
  GENERAL_NAMES_free(gens);
  const X509_NAME *subj = X509_get_subject_name(x);
  for (int i = -1; rc == 0 && (i = X509_NAME_get_index_by_NID(subj, NID_pkcs9_emailAddress, i)) >= 0;) {
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
    if (ks__id_copy(s, id) > 0) rc = fn(arg, KS_EMAIL, id);
  }
  return rc;
}

static int ks__count_id(void *arg, enum ks_kind kind, const char *id) {
  (void)kind, (void)id;
  ++*(int *)arg;
  return 0;
}

/* What add and import require of a certificate (the header's rule). */
int ks__cert_check(X509 *x, char *err, size_t errlen) {
  int n = 0;
  ks__ids(x, ks__count_id, &n);
  if (n == 0)
    return ks__fail(err, errlen, SG_EINVAL, "certificate has no SAN e-mail, SAN DNS name or subject "
                    "emailAddress: nothing to find it by");
  if (!X509_get0_pubkey(x)) {
    ERR_clear_error();
    return ks__fail(err, errlen, SG_EINVAL, "certificate's public key is not usable");
  }
  return 0;
}

/* ---- records ---------------------------------------------------------------- */

void ks__be64_put(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
}

uint64_t ks__be64_get(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

/* The pubkeys value for x: time added (big-endian) and the DER. */
static int ks__encode(X509 *x, time_t added, unsigned char **out, size_t *len_out) {
  int der_len = i2d_X509(x, NULL);
  if (der_len <= 0) return SG_EINVAL;
  unsigned char *v = malloc(8 + (size_t)der_len), *p = v + 8;
  if (!v) return SG_ENOMEM;
  ks__be64_put(v, (uint64_t)added);
  i2d_X509(x, &p);
  *out = v;
  *len_out = 8 + (size_t)der_len;
  return 0;
}

/* Decode a pubkeys value; SG_ECORRUPT unless it is a time and exactly one
 * DER certificate. */
static int ks__decode(const MDB_val *v, X509 **x_out, time_t *added_out) {
  if (v->mv_size <= 8) return SG_ECORRUPT;
  const unsigned char *p = v->mv_data;
  uint64_t t = ks__be64_get(p);
  const unsigned char *der = p + 8;
  X509 *x = d2i_X509(NULL, &der, (long)(v->mv_size - 8));
  if (!x || der != p + v->mv_size) {
    X509_free(x);
    ERR_clear_error();
    return SG_ECORRUPT;
  }
  *x_out = x;
  if (added_out) *added_out = (time_t)t;
  return 0;
}

/* ---- index maintenance (inside the caller's write transaction) -------------- */

struct ks_index_op {
  struct keystore *ks;
  MDB_txn *txn;
  const char *name;
  bool put; /* else delete */
};

static int ks__index_one(void *arg, enum ks_kind kind, const char *id) {
  struct ks_index_op *op = arg;
  MDB_dbi dbi = kind == KS_EMAIL ? op->ks->by_email : op->ks->by_domain;
  char key[KS_ID_MAX + 1];
  ks__lower(id, key);
  MDB_val k = {strlen(key), key}, v = {strlen(op->name), (void *)op->name};
  int rc = op->put ? mdb_put(op->txn, dbi, &k, &v, MDB_NODUPDATA) : mdb_del(op->txn, dbi, &k, &v);
  /* A certificate naming one address twice, or an entry already gone. */
  return rc == MDB_KEYEXIST || rc == MDB_NOTFOUND ? 0 : rc;
}

static int ks__index(struct keystore *ks, MDB_txn *txn, const char *name, X509 *x, bool put) {
  struct ks_index_op op = {ks, txn, name, put};
  return ks__ids(x, ks__index_one, &op);
}

/* Remove name's record and its index entries; MDB_NOTFOUND if absent.  A
 * record that no longer decodes leaves stale index entries behind, which
 * lookups skip (they re-read the record). */
static int ks__remove(struct keystore *ks, MDB_txn *txn, const char *name) {
  MDB_val k = {strlen(name), (void *)name}, v;
  int rc = mdb_get(txn, ks->pubkeys, &k, &v);
  if (rc) return rc;
  X509 *old = NULL;
  if (ks__decode(&v, &old, NULL) == 0) rc = ks__index(ks, txn, name, old, false);
  X509_free(old);
  return rc ? rc : mdb_del(txn, ks->pubkeys, &k, NULL);
}

/* Store x under name (replacing an existing record only when replace). */
int ks__store(struct keystore *ks, MDB_txn *txn, const char *name, X509 *x, bool replace, char *err,
              size_t errlen) {
  unsigned char *val;
  size_t len;
  int rc = ks__encode(x, time(NULL), &val, &len);
  if (rc) return ks__fail(err, errlen, rc, "certificate cannot be encoded");
  if (replace && (rc = ks__remove(ks, txn, name)) != 0 && rc != MDB_NOTFOUND) {
    free(val);
    return ks__mdb_fail(err, errlen, rc, "removing the old key");
  }
  MDB_val k = {strlen(name), (void *)name}, v = {len, val};
  rc = mdb_put(txn, ks->pubkeys, &k, &v, MDB_NOOVERWRITE);
  free(val);
  if (rc == MDB_KEYEXIST) return ks__fail(err, errlen, SG_EEXIST, "a public key named '%s' exists", name);
  if (rc == 0) rc = ks__index(ks, txn, name, x, true);
  return rc ? ks__mdb_fail(err, errlen, rc, "writing the key store") : 0;
}

/* ---- opening ---------------------------------------------------------------- */

static int ks__dbis(struct keystore *ks, bool create) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(ks->env, NULL, create ? 0 : MDB_RDONLY, &txn);
  if (rc) return rc;
  unsigned c = create ? MDB_CREATE : 0;
  if (!(rc = mdb_dbi_open(txn, "pubkeys", c, &ks->pubkeys)) &&
      !(rc = mdb_dbi_open(txn, "by_email", c | MDB_DUPSORT, &ks->by_email)) &&
      !(rc = mdb_dbi_open(txn, "by_domain", c | MDB_DUPSORT, &ks->by_domain)) &&
      !(rc = mdb_dbi_open(txn, "cas", c, &ks->cas)) && !(rc = ks__harvest_dbis(ks, txn, create)))
    return mdb_txn_commit(txn); /* a read-only commit keeps the handles */
  mdb_txn_abort(txn);
  return rc;
}

/*
 * Read-only openers (the daemon) may come before sealctl ever wrote.  If
 * the folder is ours to write, create the empty environment then, so a
 * later `pubkey add` is seen by the open environment; if it is not (or
 * is missing), the store is empty until reopened (`keys reload`).
 */
static int ks__env_open(struct keystore *ks, const char *dir, bool writable) {
  char path[4200];
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  bool create = writable || (access(path, F_OK) != 0 && errno == ENOENT && access(dir, W_OK) == 0);
  if (!writable && !create && access(path, F_OK) != 0) return MDB_NOTFOUND;
  int rc = mdb_env_create(&ks->env);
  if (rc) return rc;
  if ((rc = mdb_env_set_maxdbs(ks->env, KS_MAXDBS)) || (rc = mdb_env_set_mapsize(ks->env, KS_MAPSIZE)) ||
      (rc = mdb_env_open(ks->env, dir, MDB_NOTLS | (create ? 0 : MDB_RDONLY), 0600)))
    return rc;
  int dead;
  mdb_reader_check(ks->env, &dead); /* readers of crashed processes pin old pages */
  return ks__dbis(ks, create);
}

static int ks__register(struct keystore *ks, const char *dir, char *err, size_t errlen) {
  struct stat st;
  if (stat(dir, &st) != 0) return 0; /* an empty read-only store: nothing to guard */
  ks->dev = st.st_dev;
  ks->ino = st.st_ino;
  pthread_mutex_lock(&ks__open_lock);
  for (struct keystore *o = ks__open_list; o; o = o->next)
    if (o->dev == ks->dev && o->ino == ks->ino) {
      pthread_mutex_unlock(&ks__open_lock);
      return ks__fail(err, errlen, SG_EBUSY, "%s: key store already open in this process", dir);
    }
  ks->next = ks__open_list;
  ks__open_list = ks;
  pthread_mutex_unlock(&ks__open_lock);
  return 0;
}

static void ks__unregister(struct keystore *ks) {
  pthread_mutex_lock(&ks__open_lock);
  for (struct keystore **p = &ks__open_list; *p; p = &(*p)->next)
    if (*p == ks) {
      *p = ks->next;
      break;
    }
  pthread_mutex_unlock(&ks__open_lock);
}

int keystore_open(const char *dir, bool writable, struct keystore **out, char *err, size_t errlen) {
  *out = NULL;
  if (writable && mkdir(dir, 0700) != 0 && errno != EEXIST)
    return ks__fail(err, errlen, sgerr_from_errno(errno), "%s: cannot create: %s", dir, strerror(errno));
  struct keystore *ks = calloc(1, sizeof *ks);
  if (!ks) return ks__fail(err, errlen, SG_ENOMEM, "out of memory");
  ks->writable = writable;
  int rc = ks__register(ks, dir, err, errlen);
  if (rc) {
    free(ks);
    return rc;
  }
  if ((rc = ks__env_open(ks, dir, writable)) != 0) {
    if (ks->env) mdb_env_close(ks->env);
    ks->env = NULL;
    if (writable || rc != MDB_NOTFOUND) {
      ks__unregister(ks);
      free(ks);
      return ks__fail(err, errlen, ks__rc(rc), "key store %s: %s", dir, mdb_strerror(rc));
    }
  }
  *out = ks;
  return 0;
}

void keystore_close(struct keystore *ks) {
  if (!ks) return;
  ks__unregister(ks);
  if (ks->env) mdb_env_close(ks->env);
  free(ks);
}

/* ---- transactions ----------------------------------------------------------- */

/* Each call makes its own transaction: with MDB_NOTLS a read transaction
 * belongs to no thread slot, so crypto workers may look up concurrently. */
int ks__begin(struct keystore *ks, bool write, MDB_txn **txn, char *err, size_t errlen) {
  if (write && !ks->writable) return ks__fail(err, errlen, SG_EPERM, "key store opened read-only");
  if (!ks->env) return ks__fail(err, errlen, SG_ENOTFOUND, "key store is empty");
  int rc = mdb_txn_begin(ks->env, NULL, write ? 0 : MDB_RDONLY, txn);
  return rc ? ks__mdb_fail(err, errlen, rc, "key store") : 0;
}

int ks__commit(struct keystore *ks, MDB_txn *txn, bool bump, char *err, size_t errlen) {
  int rc = bump ? ks__generation_bump(ks, txn) : 0;
  if (rc) {
    mdb_txn_abort(txn);
    return ks__mdb_fail(err, errlen, rc, "counting the key store's generation");
  }
  rc = mdb_txn_commit(txn);
  return rc ? ks__mdb_fail(err, errlen, rc, "committing the key store") : 0;
}

/* ---- managed public keys ---------------------------------------------------- */

int keystore_pubkey_add(struct keystore *ks, const char *name, X509 *cert, char *err, size_t errlen) {
  int rc = keystore_name_check(name, err, errlen);
  if (rc || (rc = ks__cert_check(cert, err, errlen))) return rc;
  MDB_txn *txn;
  if ((rc = ks__begin(ks, true, &txn, err, errlen)) != 0) return rc;
  if ((rc = ks__store(ks, txn, name, cert, false, err, errlen)) != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return ks__commit(ks, txn, true, err, errlen);
}

int keystore_pubkey_delete(struct keystore *ks, const char *name) {
  MDB_txn *txn;
  int rc = ks__begin(ks, true, &txn, NULL, 0);
  if (rc) return rc;
  if ((rc = ks__remove(ks, txn, name)) != 0) {
    mdb_txn_abort(txn);
    return ks__rc(rc);
  }
  return ks__commit(ks, txn, true, NULL, 0);
}

int keystore_pubkey_get(struct keystore *ks, const char *name, X509 **cert_out, time_t *added_out) {
  *cert_out = NULL;
  MDB_txn *txn;
  int rc = ks__begin(ks, false, &txn, NULL, 0);
  if (rc) return rc;
  MDB_val k = {strlen(name), (void *)name}, v;
  if ((rc = mdb_get(txn, ks->pubkeys, &k, &v)) == 0) rc = ks__decode(&v, cert_out, added_out);
  else rc = ks__rc(rc);
  mdb_txn_abort(txn);
  return rc;
}

/* Name of a key as a C string (names are checked on the way in, but the
 * database is not trusted: over-long or NUL-holding keys are corrupt). */
static int ks__key_name(const MDB_val *k, char *name) {
  if (k->mv_size == 0 || k->mv_size > KEYSTORE_NAME_MAX || memchr(k->mv_data, '\0', k->mv_size))
    return SG_ECORRUPT;
  memcpy(name, k->mv_data, k->mv_size);
  name[k->mv_size] = '\0';
  return 0;
}

/* fn for every record of *dbi in key order, inside one read transaction
 * (a consistent snapshot; writers are not held up). */
typedef int (*ks_record_fn)(void *arg, const char *name, const MDB_val *v);

static int ks__each(struct keystore *ks, const MDB_dbi *dbi, ks_record_fn fn, void *arg) {
  MDB_txn *txn;
  MDB_cursor *cur;
  int rc = ks__begin(ks, false, &txn, NULL, 0);
  if (rc) return rc == SG_ENOTFOUND ? 0 : rc; /* no database yet: nothing to list */
  if ((rc = mdb_cursor_open(txn, *dbi, &cur)) != 0) {
    mdb_txn_abort(txn);
    return ks__rc(rc);
  }
  MDB_val k, v;
  char name[KEYSTORE_NAME_MAX + 1];
  int mrc;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && rc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    if ((rc = ks__key_name(&k, name)) == 0) rc = fn(arg, name, &v);
  if (rc == 0 && mrc != MDB_NOTFOUND) rc = ks__rc(mrc);
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return rc;
}

struct ks_each {
  keystore_each_fn pk;
  keystore_ca_fn ca;
  void *arg;
};

static int ks__each_pubkey(void *arg, const char *name, const MDB_val *v) {
  struct ks_each *e = arg;
  X509 *x;
  time_t added;
  int rc = ks__decode(v, &x, &added);
  if (rc) return rc;
  rc = e->pk(e->arg, name, x, added);
  X509_free(x);
  return rc;
}

int keystore_pubkey_each(struct keystore *ks, keystore_each_fn fn, void *arg) {
  struct ks_each e = {fn, NULL, arg};
  return ks__each(ks, &ks->pubkeys, ks__each_pubkey, &e);
}

/* ---- export and import ------------------------------------------------------ */

#define KS_NAME_LINE "# sealgate-pubkey: "

struct ks_export {
  FILE *f;
  size_t n;
};

static int ks__export_one(void *arg, const char *name, X509 *cert, time_t added) {
  (void)added;
  struct ks_export *e = arg;
  if (fprintf(e->f, KS_NAME_LINE "%s\n", name) < 0 || !PEM_write_X509(e->f, cert)) return SG_EIO;
  e->n++;
  return 0;
}

int keystore_pubkey_export(struct keystore *ks, FILE *f, size_t *n_out) {
  struct ks_export e = {f, 0};
  int rc = keystore_pubkey_each(ks, ks__export_one, &e);
  if (rc == 0 && (fflush(f) != 0 || ferror(f))) rc = SG_EIO;
  *n_out = rc ? 0 : e.n;
  return rc;
}

/* The state of one import: the PEM block being collected and the name
 * its "# sealgate-pubkey:" line gave. */
struct ks_import {
  struct keystore *ks;
  MDB_txn *txn;
  const char *fname;
  char name[KEYSTORE_NAME_MAX + 1]; /* "" when the next block is unnamed */
  char *block;
  size_t len, cap;
  bool in_block;
  size_t n_blocks, n_done;
  char *err;
  size_t errlen;
};

/* An automatic name from a candidate: characters a name may not hold
 * become '-'; "" if it cannot start a name. */
static void ks__auto_name(const char *cand, char *out) {
  size_t n = 0;
  for (; cand && cand[n] && n < KEYSTORE_NAME_MAX; n++) {
    unsigned char ch = (unsigned char)cand[n];
    out[n] = ch < 0x80 && (isalnum(ch) || strchr("._@+-", ch)) ? (char)ch : '-';
  }
  out[n] = '\0';
  if (n == 0 || !isalnum((unsigned char)out[0])) out[0] = '\0';
}

static int ks__first_email(void *arg, enum ks_kind kind, const char *id) {
  if (kind != KS_EMAIL) return 0;
  ks__auto_name(id, arg);
  return *(char *)arg ? 1 : 0; /* stop at the first usable one */
}

/* Unnamed blocks: the first e-mail, else the subject CN, else key-N. */
static void ks__name_for(X509 *x, size_t block, char *out) {
  out[0] = '\0';
  ks__ids(x, ks__first_email, out);
  if (!out[0]) {
    char cn[KEYSTORE_NAME_MAX + 1] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    ks__auto_name(cn, out);
  }
  if (!out[0]) snprintf(out, KEYSTORE_NAME_MAX + 1, "key-%zu", block);
}

static int ks__email_is(void *arg, enum ks_kind kind, const char *id) {
  return kind == KS_EMAIL && strcmp(id, arg) == 0;
}

/* The name is one of the certificate's own e-mail addresses, unchanged:
 * a newer certificate for that address replaces the old one. */
static bool ks__is_own_email(X509 *x, const char *name) { return ks__ids(x, ks__email_is, (void *)name) == 1; }

/* An automatic name must never replace another address's key (two
 * addresses can map to one name once odd characters become '-'): keep
 * name if it is free or already holds this very certificate, else the
 * first free "name-N".  Explicitly named blocks replace, by design. */
static void ks__auto_unique(struct keystore *ks, MDB_txn *txn, char *name, X509 *x) {
  char base[KEYSTORE_NAME_MAX - 7], cand[KEYSTORE_NAME_MAX + 1]; /* base + "-NNNNN" fits */
  snprintf(base, sizeof base, "%s", name);
  for (unsigned i = 1; i < 100000; i++) {
    if (i == 1) snprintf(cand, sizeof cand, "%s", name);
    else snprintf(cand, sizeof cand, "%s-%u", base, i);
    MDB_val k = {strlen(cand), cand}, v;
    X509 *old = NULL;
    int rc = mdb_get(txn, ks->pubkeys, &k, &v);
    bool same = rc == 0 && ks__decode(&v, &old, NULL) == 0 && X509_cmp(old, x) == 0;
    X509_free(old);
    if (rc == MDB_NOTFOUND || same) {
      memcpy(name, cand, sizeof cand);
      return;
    }
  }
}

/* The first OpenSSL reason on the error queue, for messages. */
static const char *ks__ssl_reason(void) {
  const char *r = ERR_reason_error_string(ERR_peek_error());
  return r ? r : "malformed";
}

/* Parse the collected block and store it. */
static int ks__import_block(struct ks_import *im) {
  BIO *b = BIO_new_mem_buf(im->block, (int)im->len);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  char why[256];
  int rc;
  if (!x) {
    rc = ks__fail(im->err, im->errlen, SG_EINVAL, "%s: block %zu: not a PEM certificate (%s)", im->fname,
                  im->n_blocks, ks__ssl_reason());
    ERR_clear_error();
    return rc;
  }
  char name[KEYSTORE_NAME_MAX + 1];
  if (im->name[0]) memcpy(name, im->name, sizeof name);
  else if (ks__name_for(x, im->n_blocks, name), !ks__is_own_email(x, name))
    ks__auto_unique(im->ks, im->txn, name, x);
  im->name[0] = '\0';
  if ((rc = ks__cert_check(x, why, sizeof why)) != 0 ||
      (rc = ks__store(im->ks, im->txn, name, x, true, why, sizeof why)) != 0)
    ks__fail(im->err, im->errlen, rc, "%s: block %zu: %s", im->fname, im->n_blocks, why);
  X509_free(x);
  if (rc == 0) im->n_done++;
  return rc;
}

static int ks__block_add(struct ks_import *im, const char *line, size_t n) {
  if (im->len + n > KS_BLOCK_MAX)
    return ks__fail(im->err, im->errlen, SG_ETOOBIG, "%s: block %zu: longer than %u bytes", im->fname,
                    im->n_blocks, KS_BLOCK_MAX);
  if (im->len + n > im->cap) {
    size_t cap = im->cap ? im->cap * 2 : 4096;
    while (cap < im->len + n) cap *= 2;
    char *p = realloc(im->block, cap);
    if (!p) return ks__fail(im->err, im->errlen, SG_ENOMEM, "out of memory");
    im->block = p;
    im->cap = cap;
  }
  memcpy(im->block + im->len, line, n);
  im->len += n;
  return 0;
}

/* "# sealgate-pubkey: NAME": the name of the block that follows. */
static int ks__name_line(struct ks_import *im, const char *line) {
  char name[KEYSTORE_NAME_MAX + 2], why[200];
  size_t n = strcspn(line, "\r\n");
  while (n && (line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
  if (n > KEYSTORE_NAME_MAX) n = KEYSTORE_NAME_MAX + 1; /* too long: the check says so */
  memcpy(name, line, n);
  name[n] = '\0';
  if (keystore_name_check(name, why, sizeof why) != 0)
    return ks__fail(im->err, im->errlen, SG_EINVAL, "%s: before block %zu: %s", im->fname, im->n_blocks + 1,
                    why);
  memcpy(im->name, name, n + 1);
  return 0;
}

/* One line of the file.  Text outside blocks is ignored (openssl puts
 * "subject=" lines there), except our name lines and foreign PEM blocks,
 * which are errors rather than silently skipped keys. */
static int ks__import_line(struct ks_import *im, const char *line, size_t n) {
  if (!im->in_block) {
    if (strncmp(line, KS_NAME_LINE, strlen(KS_NAME_LINE)) == 0)
      return ks__name_line(im, line + strlen(KS_NAME_LINE));
    if (strncmp(line, "-----BEGIN ", 11) != 0) return 0;
    im->n_blocks++;
    if (strncmp(line, "-----BEGIN CERTIFICATE-----", 27) != 0)
      return ks__fail(im->err, im->errlen, SG_EINVAL, "%s: block %zu: not a PEM certificate (%.*s)",
                      im->fname, im->n_blocks, (int)strcspn(line + 11, "-\r\n"), line + 11);
    im->in_block = true;
    im->len = 0;
  }
  int rc = ks__block_add(im, line, n);
  if (rc || strncmp(line, "-----END ", 9) != 0) return rc;
  im->in_block = false;
  return ks__import_block(im);
}

static int ks__import_file(struct ks_import *im, FILE *f, void (*progress)(void *, size_t), void *arg) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  int rc = 0;
  while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
    size_t before = im->n_done;
    rc = ks__import_line(im, line, (size_t)n);
    if (progress && im->n_done != before && im->n_done % KS_PROGRESS_EVERY == 0) progress(arg, im->n_done);
  }
  free(line);
  if (rc) return rc;
  if (ferror(f)) return ks__fail(im->err, im->errlen, SG_EIO, "%s: read error", im->fname);
  if (im->in_block)
    return ks__fail(im->err, im->errlen, SG_EINVAL, "%s: block %zu: no END line", im->fname, im->n_blocks);
  if (im->n_blocks == 0) return ks__fail(im->err, im->errlen, SG_EINVAL, "%s: no PEM certificate", im->fname);
  return 0;
}

/* One write transaction for the whole file: all or nothing, and one
 * commit (one fsync) however many keys. */
int keystore_pubkey_import(struct keystore *ks, FILE *f, const char *fname,
                           void (*progress)(void *arg, size_t done), void *arg, size_t *n_out,
                           char *err, size_t errlen) {
  *n_out = 0;
  struct ks_import im = {.ks = ks, .fname = fname, .err = err, .errlen = errlen};
  int rc = ks__begin(ks, true, &im.txn, err, errlen);
  if (rc) return rc;
  rc = ks__import_file(&im, f, progress, arg);
  free(im.block);
  if (rc) {
    mdb_txn_abort(im.txn);
    return rc;
  }
  if ((rc = ks__commit(ks, im.txn, true, err, errlen)) == 0) *n_out = im.n_done;
  return rc;
}

/* ---- lookup ----------------------------------------------------------------- */


struct ks_match {
  enum ks_kind kind;
  const char *addr;   /* KS_EMAIL: the recipient, as given */
  const char *domain; /* KS_DOMAIN: the index key probed ("*.x.y" or "a.x.y") */
};

static int ks__match_id(void *arg, enum ks_kind kind, const char *id) {
  const struct ks_match *m = arg;
  if (kind != m->kind) return 0;
  return kind == KS_EMAIL ? cert_email_matches(id, m->addr) : strcasecmp(id, m->domain) == 0;
}

/* Validity at now and fitness for encryption (R13: cert_uses judges). */
bool ks__usable(X509 *x, time_t now) {
  return X509_cmp_time(X509_get0_notBefore(x), &now) < 0 && X509_cmp_time(X509_get0_notAfter(x), &now) > 0 &&
         (cert_uses(x) & CERT_USE_ENCRYPT);
}

/* Every name the index holds under key: keep the usable certificate with
 * the latest notBefore in *best. */
static int ks__probe(struct keystore *ks, MDB_txn *txn, MDB_dbi dbi, const char *key,
                     const struct ks_match *m, time_t now, X509 **best) {
  MDB_cursor *cur;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return ks__rc(rc);
  MDB_val k = {strlen(key), (void *)key}, name, rec;
  for (rc = mdb_cursor_get(cur, &k, &name, MDB_SET_KEY); rc == 0;
       rc = mdb_cursor_get(cur, &k, &name, MDB_NEXT_DUP)) {
    X509 *x;
    if (mdb_get(txn, ks->pubkeys, &name, &rec) != 0 || ks__decode(&rec, &x, NULL) != 0) continue;
    if (ks__ids(x, ks__match_id, (void *)m) == 1 && ks__usable(x, now) &&
        (!*best || ASN1_TIME_compare(X509_get0_notBefore(x), X509_get0_notBefore(*best)) > 0)) {
      X509_free(*best);
      *best = x;
    } else {
      X509_free(x);
    }
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : ks__rc(rc);
}

/* One tier of the lookup (keystore.h): the e-mail index for an address;
 * for a domain the exact SAN DNS name, then a wildcard one label up. */
static int ks__lookup(struct keystore *ks, MDB_txn *txn, enum keystore_tier tier, const char *addr, time_t now,
                      X509 **best) {
  size_t len = strlen(addr);
  const char *at = strrchr(addr, '@');
  if (len > KS_ID_MAX - 2 || !*addr) return SG_EINVAL;
  if (tier == KEYSTORE_TIER_EMAIL && (!at || at == addr || !at[1])) return SG_EINVAL;
  if (tier == KEYSTORE_TIER_DOMAIN && at) return SG_EINVAL;
  char key[KS_ID_MAX + 1];
  ks__lower(addr, key);
  if (tier == KEYSTORE_TIER_EMAIL) {
    struct ks_match m = {KS_EMAIL, addr, NULL};
    return ks__probe(ks, txn, ks->by_email, key, &m, now, best);
  }
  struct ks_match m = {KS_DOMAIN, NULL, key};
  int rc = ks__probe(ks, txn, ks->by_domain, key, &m, now, best);
  if (rc || *best) return rc;
  /* "*.example.com" for a.example.com: one more leftmost label, and never
   * a wildcard over a single label ("*.com"). */
  const char *parent = strchr(key, '.');
  if (!parent || !strchr(parent + 1, '.')) return 0;
  char wild[KS_ID_MAX + 2];
  snprintf(wild, sizeof wild, "*%s", parent);
  m.domain = wild;
  return ks__probe(ks, txn, ks->by_domain, wild, &m, now, best);
}

int ks__managed_answer(struct keystore *ks, MDB_txn *txn, const char *key, time_t now, X509 **out) {
  *out = NULL;
  const char *at = strrchr(key, '@');
  int rc = at ? ks__lookup(ks, txn, KEYSTORE_TIER_EMAIL, key, now, out) : 0;
  if (rc == 0 && !*out) rc = ks__lookup(ks, txn, KEYSTORE_TIER_DOMAIN, at ? at + 1 : key, now, out);
  return rc == SG_EINVAL ? 0 : rc;
}

int keystore_lookup_tier(struct keystore *ks, enum keystore_tier tier, const char *key, time_t now,
                         X509 **cert_out, unsigned *caps_out) {
  *cert_out = NULL;
  if (caps_out) *caps_out = 0;
  MDB_txn *txn;
  int rc = ks__begin(ks, false, &txn, NULL, 0);
  if (rc) return rc;
  X509 *best = NULL;
  rc = ks__lookup(ks, txn, tier, key, now, &best);
  if (rc == 0 && !best) { /* managed keys first; then the tier key's harvested record */
    char lower[KS_ID_MAX + 1];
    ks__lower(key, lower);
    rc = ks__harvest_lookup(ks, txn, lower, now, &best, caps_out);
  }
  mdb_txn_abort(txn);
  if (rc == 0 && !best) rc = SG_ENOTFOUND;
  if (rc) X509_free(best);
  else *cert_out = best;
  return rc;
}

int keystore_lookup(struct keystore *ks, const char *address, time_t now, X509 **cert_out, unsigned *caps_out) {
  int rc = keystore_lookup_tier(ks, KEYSTORE_TIER_EMAIL, address, now, cert_out, caps_out);
  if (rc != SG_ENOTFOUND) return rc;
  return keystore_lookup_tier(ks, KEYSTORE_TIER_DOMAIN, strrchr(address, '@') + 1, now, cert_out, caps_out);
}

/* ---- CA lists --------------------------------------------------------------- */

/* basicConstraints CA:TRUE, or a self-signed version 1 root (X509_check_ca
 * says 1 and 3; keyUsage or Netscape types alone do not make a CA here). */
static int ks__ca_check(STACK_OF(X509) *certs, char *err, size_t errlen) {
  if (sk_X509_num(certs) <= 0) return ks__fail(err, errlen, SG_EINVAL, "the CA list holds no certificate");
  for (int i = 0; i < sk_X509_num(certs); i++) {
    X509 *x = sk_X509_value(certs, i);
    int ca = X509_check_ca(x);
    if (ca == 1 || ca == 3) continue;
    char subj[256] = "";
    X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
    return ks__fail(err, errlen, SG_EINVAL, "certificate %d (%s) is not a CA certificate (needs "
                    "basicConstraints CA:TRUE, or a self-signed version 1 root)", i + 1, subj);
  }
  return 0;
}

/* The issuer is found by name, and the signature must verify with its key:
 * a CRL naming one CA but signed by another key is a forgery or a
 * mistake, and either way verification must never lean on it. */
int keystore_ca_crl_check(STACK_OF(X509) *certs, X509_CRL *crl, char *err, size_t errlen) {
  char issuer[256] = "";
  X509_NAME_oneline(X509_CRL_get_issuer(crl), issuer, sizeof issuer);
  bool named = false;
  for (int i = 0; i < sk_X509_num(certs); i++) {
    X509 *ca = sk_X509_value(certs, i);
    if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) != 0) continue;
    named = true;
    EVP_PKEY *pub = X509_get0_pubkey(ca);
    int ok = pub ? X509_CRL_verify(crl, pub) : 0;
    ERR_clear_error();
    if (ok == 1) return 0;
  }
  if (!named)
    return ks__fail(err, errlen, SG_EINVAL, "issued by %s, and no certificate of the list has that subject", issuer);
  return ks__fail(err, errlen, SG_EINVAL, "issued by %s, but its signature does not verify with that CA's key",
                  issuer);
}

static int ks__crls_check(STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls, char *err, size_t errlen) {
  char why[400];
  for (int i = 0; crls && i < sk_X509_CRL_num(crls); i++)
    if (keystore_ca_crl_check(certs, sk_X509_CRL_value(crls, i), why, sizeof why) != 0)
      return ks__fail(err, errlen, SG_EINVAL, "CRL %d: %s", i + 1, why);
  return 0;
}

/* Items: a 4-byte big-endian length, its top bit set for a CRL, then the
 * DER.  Lists written before CRLs were stored hold certificates only. */
#define KS_CA_CRL 0x80000000u

static int ks__i2d(void *obj, bool crl, unsigned char **pp) {
  return crl ? i2d_X509_CRL(obj, pp) : i2d_X509(obj, pp);
}

static int ks__ca_encode(STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls, unsigned char **out, size_t *len_out) {
  int nc = sk_X509_num(certs), nl = crls ? sk_X509_CRL_num(crls) : 0;
  size_t total = 0;
  for (int i = 0; i < nc + nl; i++) {
    int n = i < nc ? i2d_X509(sk_X509_value(certs, i), NULL) : i2d_X509_CRL(sk_X509_CRL_value(crls, i - nc), NULL);
    if (n <= 0 || (uint32_t)n >= KS_CA_CRL) return SG_EINVAL;
    total += 4 + (size_t)n;
  }
  unsigned char *v = malloc(total ? total : 1), *p = v;
  if (!v) return SG_ENOMEM;
  for (int i = 0; i < nc + nl; i++) {
    unsigned char *der = p + 4;
    bool crl = i >= nc;
    uint32_t n = (uint32_t)ks__i2d(crl ? (void *)sk_X509_CRL_value(crls, i - nc) : (void *)sk_X509_value(certs, i), crl,
                                   &der);
    if (crl) n |= KS_CA_CRL;
    for (int b = 0; b < 4; b++) p[b] = (unsigned char)(n >> (24 - 8 * b));
    p = der;
  }
  *out = v;
  *len_out = total;
  return 0;
}

static int ks__ca_decode(const MDB_val *v, STACK_OF(X509) **out, STACK_OF(X509_CRL) **crls_out) {
  STACK_OF(X509) *sk = sk_X509_new_null();
  STACK_OF(X509_CRL) *cl = sk_X509_CRL_new_null();
  const unsigned char *p = v->mv_data, *end = p + v->mv_size;
  int rc = sk && cl ? 0 : SG_ENOMEM;
  while (rc == 0 && p < end) {
    uint32_t n = end - p >= 4 ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
    bool crl = (n & KS_CA_CRL) != 0;
    n &= ~KS_CA_CRL;
    const unsigned char *der = p + 4;
    bool fits = n && n <= (size_t)(end - der);
    X509 *x = fits && !crl ? d2i_X509(NULL, &der, (long)n) : NULL;
    X509_CRL *c = fits && crl ? d2i_X509_CRL(NULL, &der, (long)n) : NULL;
    bool ok = (x || c) && der == p + 4 + n && (x ? sk_X509_push(sk, x) : sk_X509_CRL_push(cl, c)) > 0;
    if (!ok) {
      X509_free(x);
      X509_CRL_free(c);
      ERR_clear_error();
      rc = SG_ECORRUPT;
    }
    p += 4 + n;
  }
  if (rc == 0 && sk_X509_num(sk) == 0) rc = SG_ECORRUPT;
  if (rc) {
    sk_X509_pop_free(sk, X509_free);
    sk_X509_CRL_pop_free(cl, X509_CRL_free);
  } else {
    *out = sk;
    *crls_out = cl;
  }
  return rc;
}

int keystore_ca_import(struct keystore *ks, const char *name, STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls,
                       char *err, size_t errlen) {
  int rc = keystore_name_check(name, err, errlen);
  if (rc || (rc = ks__ca_check(certs, err, errlen)) || (rc = ks__crls_check(certs, crls, err, errlen)))
    return rc;
  unsigned char *val;
  size_t len;
  if ((rc = ks__ca_encode(certs, crls, &val, &len)) != 0) return ks__fail(err, errlen, rc, "cannot encode the list");
  MDB_txn *txn;
  if ((rc = ks__begin(ks, true, &txn, err, errlen)) == 0) {
    MDB_val k = {strlen(name), (void *)name}, v = {len, val};
    int mrc = mdb_put(txn, ks->cas, &k, &v, MDB_NOOVERWRITE);
    if (mrc == MDB_KEYEXIST) rc = ks__fail(err, errlen, SG_EEXIST, "a CA list named '%s' exists; delete it first", name);
    else if (mrc) rc = ks__mdb_fail(err, errlen, mrc, "writing the key store");
    if (rc) mdb_txn_abort(txn);
    else rc = ks__commit(ks, txn, true, err, errlen);
  }
  free(val);
  return rc;
}

int keystore_ca_delete(struct keystore *ks, const char *name) {
  MDB_txn *txn;
  int rc = ks__begin(ks, true, &txn, NULL, 0);
  if (rc) return rc;
  MDB_val k = {strlen(name), (void *)name};
  if ((rc = mdb_del(txn, ks->cas, &k, NULL)) != 0) {
    mdb_txn_abort(txn);
    return ks__rc(rc);
  }
  return ks__commit(ks, txn, true, NULL, 0);
}

static int ks__each_ca(void *arg, const char *name, const MDB_val *v) {
  struct ks_each *e = arg;
  STACK_OF(X509) *sk;
  STACK_OF(X509_CRL) *crls;
  int rc = ks__ca_decode(v, &sk, &crls);
  if (rc) return rc;
  rc = e->ca(e->arg, name, sk, crls);
  sk_X509_pop_free(sk, X509_free);
  sk_X509_CRL_pop_free(crls, X509_CRL_free);
  return rc;
}

int keystore_ca_each(struct keystore *ks, keystore_ca_fn fn, void *arg) {
  struct ks_each e = {NULL, fn, arg};
  return ks__each(ks, &ks->cas, ks__each_ca, &e);
}
