/*
 * hsm_worker - private-key operations: EVP_PKEYs whose sign, decrypt and
 * derive run inside the token, through libp11's PKCS11_* API (not the
 * engine: it cannot be instantiated twice in one process).
 *
 * Owns, by mode:
 *  - HSM_REMOTE: each worker owns a libp11 context loaded on
 *    p11-kit-client.so, hence its own connection to the token server (the
 *    client opens one per C_GetFunctionList, and the server runs one
 *    single-threaded process per connection), and the EVP_PKEYs found
 *    through it.  When the server dies the whole context is thrown away
 *    and rebuilt on next use (generation counter).
 *  - HSM_INPROCESS / HSM_MODULE: one context shared by all workers, owned
 *    by struct hsm (h->shared), with one EVP_PKEY per key.  A second
 *    context on the same in-process module would work until it is
 *    unloaded: its C_Finalize ends the module under everyone else.  The
 *    shared context is unloaded by hsm_close(), before the admin side
 *    finalizes (whoever finalizes first ends the module for both).
 *
 * Locking: building a context and looking keys up (PKCS11_enumerate_*,
 * PKCS11_get_private_key) is done under h->mu, because libp11 documents its
 * PKCS11_* API as not fully thread-safe and sets up global methods lazily.
 * Signing with a key already found takes no lock of ours: libp11 takes a
 * session from its per-slot pool for each operation.
 *
 * Trusts: struct hsm (validated config, PIN already read).  Does not
 * trust the server: its liveness is judged by connecting, and by whether
 * the address symlink still points where it did when we connected.
 */
#include <libp11.h>

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"
#include "hsm/hsm_internal.h"

struct wkey {
  unsigned char id[HSM_ID_MAX];
  size_t id_len;
  EVP_PKEY *pkey;
};

struct keyset {
  struct wkey *v;
  size_t n, cap;
};

/* One libp11 context on the token. */
struct p11conn {
  PKCS11_CTX *ctx;
  bool loaded;
  PKCS11_SLOT *slots;
  unsigned nslots;
  PKCS11_SLOT *slot;
  struct keyset keys; /* EVP_PKEYs owned by this context's user */
};

struct hsm__shared {
  struct p11conn c;
};

struct hsm_worker {
  struct hsm *h;
  struct p11conn own;     /* remote: this worker's connection */
  bool connected;         /* remote: own is usable */
  struct keyset borrowed; /* in-process: pointers owned by h->shared */
  char link[PATH_MAX];    /* remote: symlink target when we connected */
  bool have_link;
  bool warned;            /* remote: the outage was logged (once per outage) */
  unsigned gen;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- key sets ----------------------------------------------------------- */

static EVP_PKEY *keyset_find(const struct keyset *s, const struct hsm_keyref *ref) {
  for (size_t i = 0; i < s->n; i++)
    if (s->v[i].id_len == ref->id_len && memcmp(s->v[i].id, ref->id, ref->id_len) == 0)
      return s->v[i].pkey;
  return NULL;
}

static int keyset_add(struct keyset *s, const struct hsm_keyref *ref, EVP_PKEY *pk) {
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 8;
    struct wkey *g = realloc(s->v, nc * sizeof *g);
    if (g == NULL) return SG_ENOMEM;
    s->v = g;
    s->cap = nc;
  }
  struct wkey *k = &s->v[s->n++];
  memcpy(k->id, ref->id, ref->id_len);
  k->id_len = ref->id_len;
  k->pkey = pk;
  return 0;
}

static void keyset_free(struct keyset *s, bool owned) {
  for (size_t i = 0; owned && i < s->n; i++) EVP_PKEY_free(s->v[i].pkey);
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* ---- one libp11 context -------------------------------------------------- */

static void conn_close(struct p11conn *c) {
  keyset_free(&c->keys, true);
  if (c->slots) PKCS11_release_all_slots(c->ctx, c->slots, c->nslots);
  /* After a server death unload reports errors; there is nothing to do. */
  if (c->loaded) PKCS11_CTX_unload(c->ctx);
  if (c->ctx) PKCS11_CTX_free(c->ctx);
  memset(c, 0, sizeof *c);
}

/* libp11 trims the token label's padding; compare on the trimmed form. */
static bool label_is(const char *got, const char *want) {
  size_t n = got ? strlen(got) : 0;
  while (n > 0 && got[n - 1] == ' ') n--;
  return n == strlen(want) && memcmp(got, want, n) == 0;
}

static int conn_find_slot(struct hsm *h, struct p11conn *c, char *err, size_t errlen) {
  if (PKCS11_enumerate_slots(c->ctx, &c->slots, &c->nslots) != 0) {
    c->slots = NULL;
    if (h->mode == HSM_REMOTE)
      seterr(err, errlen, "token server at %s unreachable", h->server_address);
    else
      seterr(err, errlen, "cannot list the slots of %s", h->module_path);
    return h->mode == HSM_REMOTE ? SG_ETEMP : SG_EIO;
  }
  for (unsigned i = 0; i < c->nslots; i++) {
    PKCS11_SLOT *s = &c->slots[i];
    if (s->token && s->token->initialized && label_is(s->token->label, h->token)) {
      c->slot = s;
      return 0;
    }
  }
  /* p11-kit-client shows no slots at all when it cannot reach the server. */
  if (h->mode == HSM_REMOTE && !hsm__server_accepts(h)) {
    seterr(err, errlen, "token server at %s unreachable", h->server_address);
    return SG_ETEMP;
  }
  seterr(err, errlen, "token %s not found in module %s", h->token, h->module_path);
  return SG_ENOTFOUND;
}

/* Load the module in a fresh context, find the token and log in.  In
 * process the admin side is already logged in (login state belongs to
 * the token), which libp11 accepts. */
static int conn_open(struct hsm *h, struct p11conn *c, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->ctx = PKCS11_CTX_new();
  if (c->ctx == NULL) return SG_ENOMEM;
  if (PKCS11_CTX_load(c->ctx, h->module_path) != 0) {
    if (h->mode == HSM_REMOTE)
      seterr(err, errlen, "token server at %s unreachable", h->server_address);
    else
      seterr(err, errlen, "libp11 cannot load module %s", h->module_path);
    conn_close(c);
    return h->mode == HSM_REMOTE ? SG_ETEMP : SG_EIO;
  }
  c->loaded = true;
  int rc = conn_find_slot(h, c, err, errlen);
  if (rc == 0 && PKCS11_login(c->slot, 0, h->pin) != 0) {
    int in = 0;
    if (PKCS11_is_logged_in(c->slot, 0, &in) != 0 || !in) {
      seterr(err, errlen, "cannot log in to token %s", h->token);
      rc = h->mode == HSM_REMOTE ? SG_ETEMP : SG_EPERM;
    }
  }
  if (rc != 0) conn_close(c);
  return rc;
}

static PKCS11_KEY *key_match(PKCS11_KEY *keys, unsigned n, const struct hsm_keyref *ref) {
  for (unsigned i = 0; i < n; i++)
    if (keys[i].isPrivate && keys[i].id_len == ref->id_len &&
        memcmp(keys[i].id, ref->id, ref->id_len) == 0)
      return &keys[i];
  return NULL;
}

/* The EVP_PKEY of ref in c, found once and cached in c->keys.  Caller
 * holds h->mu.  The key list is enumerated again only on a miss (a key
 * created after the context was built). */
static int conn_key(struct p11conn *c, const struct hsm_keyref *ref, EVP_PKEY **out) {
  EVP_PKEY *pk = keyset_find(&c->keys, ref);
  if (pk) {
    *out = pk;
    return 0;
  }
  PKCS11_KEY *keys = NULL;
  unsigned n = 0;
  if (PKCS11_enumerate_keys(c->slot->token, &keys, &n) != 0) return SG_EIO;
  PKCS11_KEY *k = key_match(keys, n, ref);
  if (k == NULL) return SG_ENOTFOUND;
  pk = PKCS11_get_private_key(k);
  if (pk == NULL) return SG_EIO;
  if (keyset_add(&c->keys, ref, pk) != 0) {
    EVP_PKEY_free(pk);
    return SG_ENOMEM;
  }
  *out = pk;
  return 0;
}

/* ---- remote liveness ------------------------------------------------------- */

static const char *addr_path(const struct hsm *h) {
  static const char pfx[] = "unix:path=";
  if (strncmp(h->server_address, pfx, sizeof pfx - 1) != 0) return NULL;
  return h->server_address + sizeof pfx - 1;
}

static void link_record(struct hsm_worker *w) {
  const char *path = addr_path(w->h);
  ssize_t n = path ? readlink(path, w->link, sizeof w->link - 1) : -1;
  w->have_link = n >= 0;
  w->link[n >= 0 ? n : 0] = '\0';
}

static bool link_moved(const struct hsm_worker *w) {
  if (!w->have_link) return false;
  char now[PATH_MAX];
  ssize_t n = readlink(addr_path(w->h), now, sizeof now - 1);
  if (n < 0) return true;
  now[n] = '\0';
  return strcmp(now, w->link) != 0;
}

/* True if the server socket accepts a connection now. */
bool hsm__server_accepts(const struct hsm *h) {
  const char *path = addr_path(h);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (path == NULL) return true; /* not a unix path: cannot judge here */
  if (strlen(path) >= sizeof sa.sun_path) return false;
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true; /* our own trouble, not the server's */
  int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

/* ---- workers ------------------------------------------------------------- */

static int remote_connect(struct hsm_worker *w, char *err, size_t errlen) {
  pthread_mutex_lock(&w->h->mu);
  link_record(w);
  int rc = conn_open(w->h, &w->own, err, errlen);
  pthread_mutex_unlock(&w->h->mu);
  if (rc != 0) return rc;
  w->connected = true;
  w->gen++;
  return 0;
}

/* Caller holds h->mu. */
static int shared_get(struct hsm *h, char *err, size_t errlen) {
  if (h->shared) return 0;
  struct hsm__shared *s = calloc(1, sizeof *s);
  if (s == NULL) return SG_ENOMEM;
  int rc = conn_open(h, &s->c, err, errlen);
  if (rc != 0) {
    free(s);
    return rc;
  }
  h->shared = s;
  return 0;
}

int hsm_worker_new(struct hsm *h, struct hsm_worker **out, char *err, size_t errlen) {
  struct hsm_worker *w = calloc(1, sizeof *w);
  if (w == NULL) return SG_ENOMEM;
  w->h = h;
  int rc;
  if (h->mode == HSM_REMOTE) {
    rc = remote_connect(w, err, errlen);
  } else {
    pthread_mutex_lock(&h->mu);
    rc = shared_get(h, err, errlen);
    pthread_mutex_unlock(&h->mu);
    if (rc == 0) w->gen = 1;
  }
  if (rc != 0) {
    free(w);
    return rc;
  }
  *out = w;
  return 0;
}

void hsm_worker_free(struct hsm_worker *w) {
  if (w == NULL) return;
  if (w->h->mode == HSM_REMOTE) conn_close(&w->own);
  keyset_free(&w->borrowed, false);
  free(w);
}

static int pkey_shared(struct hsm_worker *w, const struct hsm_keyref *ref, EVP_PKEY **out) {
  struct hsm *h = w->h;
  pthread_mutex_lock(&h->mu);
  int rc = shared_get(h, NULL, 0);
  EVP_PKEY *pk = NULL;
  if (rc == 0) rc = conn_key(&h->shared->c, ref, &pk);
  pthread_mutex_unlock(&h->mu);
  if (rc == 0) rc = keyset_add(&w->borrowed, ref, pk);
  if (rc == 0) *out = pk;
  return rc;
}

int hsm_worker_pkey(struct hsm_worker *w, const struct hsm_keyref *ref, EVP_PKEY **pkey_out) {
  if (ref->id_len == 0 || ref->id_len > HSM_ID_MAX) return SG_EINVAL;
  if (w->h->mode != HSM_REMOTE) {
    EVP_PKEY *pk = keyset_find(&w->borrowed, ref);
    if (pk == NULL) return pkey_shared(w, ref, pkey_out);
    *pkey_out = pk;
    return 0;
  }
  if (!w->connected) {
    char err[256];
    int rc = remote_connect(w, err, sizeof err);
    if (rc != 0) {
      if (!w->warned) log_warn("hsm: worker cannot reconnect: %s", err);
      w->warned = true;
      return SG_ETEMP;
    }
    w->warned = false;
  }
  pthread_mutex_lock(&w->h->mu);
  int rc = conn_key(&w->own, ref, pkey_out);
  pthread_mutex_unlock(&w->h->mu);
  /* A key not cached yet is looked up over the connection: if the server
   * died, that is a dead connection, not a missing key. */
  if (rc != 0 && hsm_worker_check(w) == SG_ETEMP) return SG_ETEMP;
  return rc;
}

/* Drop the connection whole (every handle of it with it); the next
 * hsm_worker_pkey reconnects. */
static void worker_disconnect(struct hsm_worker *w) {
  pthread_mutex_lock(&w->h->mu);
  conn_close(&w->own);
  pthread_mutex_unlock(&w->h->mu);
  w->connected = false;
}

int hsm_worker_check(struct hsm_worker *w) {
  if (w->h->mode != HSM_REMOTE) return 0;
  if (!w->connected) return SG_ETEMP;
  if (!link_moved(w) && hsm__server_accepts(w->h)) return 0;
  worker_disconnect(w);
  return SG_ETEMP;
}

void hsm_worker_reset(struct hsm_worker *w) {
  if (w->h->mode == HSM_REMOTE && w->connected) worker_disconnect(w);
}

unsigned hsm_worker_generation(const struct hsm_worker *w) { return w->gen; }

void hsm_worker__shared_free(struct hsm *h) {
  if (h->shared == NULL) return;
  conn_close(&h->shared->c);
  free(h->shared);
  h->shared = NULL;
}
