/*
 * hsm - the admin side of hsm.h: loads the PKCS#11 module through p11-kit,
 * finds the token, logs in once, and keeps one read-write session for
 * listing, key generation, import, certificates and deletion.
 *
 * Owns: the module handle (p11_kit_module_load, unmanaged), the admin
 * session and the login, and the PIN read from its file (wiped at close).
 * Every admin call takes h->mu: SoftHSM2 has races in key generation and
 * import, and one session must never run two operations at once.
 *
 * Trusts: the module path and token label from the validated config.  Does
 * not trust: the PIN file's permissions (checked), nor anything the token
 * returns (every length is checked before use).  Buffers that held private
 * key parts or the PIN are wiped with OPENSSL_cleanse on every path.
 *
 * The module is initialised with CKF_OS_LOCKING_OK rather than through
 * p11_kit_module_initialize(): that passes NULL arguments, and SoftHSM2
 * then disables its internal mutexes, which the in-process workers (several
 * threads on one module) need.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "core/log.h"
#include "core/sgerr.h"
#include "hsm/hsm_internal.h"

#define FN(h) ((CK_FUNCTION_LIST *)(h)->fn)

/* DER OIDs of the two curves we create (CKA_EC_PARAMS). */
static const unsigned char oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                         0xce, 0x3d, 0x03, 0x01, 0x07};
static const unsigned char oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

/* ---- errors ----------------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Short names for the codes an operator will actually meet. */
static const char *ckr_name(CK_RV rv) {
  static const struct { CK_RV rv; const char *name; } tab[] = {
      {CKR_OK, "CKR_OK"},
      {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
      {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
      {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
      {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
      {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
      {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
      {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
      {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
      {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
      {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
      {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
      {CKR_KEY_UNEXTRACTABLE, "CKR_KEY_UNEXTRACTABLE"},
      {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
      {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
      {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
      {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
      {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
      {CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE"},
      {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
      {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
      {CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED"},
      {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
      {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
      {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
      {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
      {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
      {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
  };
  static __thread char other[24];
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if (tab[i].rv == rv) return tab[i].name;
  snprintf(other, sizeof other, "0x%lx", (unsigned long)rv);
  return other;
}

/* In remote mode these codes mean the server connection is gone: the
 * caller should retry later rather than treat the request as bad. */
static bool ckr_is_conn_loss(CK_RV rv) {
  return rv == CKR_DEVICE_ERROR || rv == CKR_DEVICE_REMOVED || rv == CKR_GENERAL_ERROR ||
         rv == CKR_CRYPTOKI_NOT_INITIALIZED || rv == CKR_SESSION_HANDLE_INVALID ||
         rv == CKR_TOKEN_NOT_PRESENT;
}

static int ckr_to_sg(const struct hsm *h, CK_RV rv) {
  if (rv == CKR_OK) return 0;
  if (h != NULL && h->mode == HSM_REMOTE && ckr_is_conn_loss(rv)) return SG_ETEMP;
  if (rv == CKR_HOST_MEMORY) return SG_ENOMEM;
  if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED) return SG_EPERM;
  if (rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_TEMPLATE_INCONSISTENT ||
      rv == CKR_TEMPLATE_INCOMPLETE)
    return SG_EINVAL;
  return SG_EIO;
}

/* ---- secret files ------------------------------------------------------ */

/* Read up to cap bytes of fd into buf; returns the count or -1. */
static ssize_t read_all(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n < cap) {
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    n += (size_t)r;
  }
  return (ssize_t)n;
}

/* PIN files must be private; password files (backups, PKCS#12) are the admin's. */
#define SECRET_KIND(priv) ((priv) ? "PIN file" : "password file")

static int secret_check_fd(int fd, const char *path, bool must_be_private, char *err,
                           size_t errlen) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    seterr(err, errlen, "cannot stat %s %s: %s", SECRET_KIND(must_be_private), path, strerror(errno));
    return SG_EIO;
  }
  if (!S_ISREG(st.st_mode)) {
    seterr(err, errlen, "%s %s is not a regular file", SECRET_KIND(must_be_private), path);
    return SG_EPERM;
  }
  if (must_be_private && (st.st_mode & 077) != 0) {
    seterr(err, errlen, "%s %s is readable by group or others (mode %04o): chmod 600 it", SECRET_KIND(must_be_private),
           path, (unsigned)(st.st_mode & 07777));
    return SG_EPERM;
  }
  return 0;
}

int hsm_read_secret_file(const char *path, bool must_be_private, char *buf, size_t cap,
                         char *err, size_t errlen) {
  char tmp[4096];
  if (buf == NULL || cap == 0) return SG_EINVAL;
  buf[0] = '\0';
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    seterr(err, errlen, "cannot open %s %s: %s", SECRET_KIND(must_be_private), path, strerror(errno));
    return errno == ENOENT ? SG_ENOTFOUND : errno == ELOOP ? SG_EPERM : SG_EIO;
  }
  int rc = secret_check_fd(fd, path, must_be_private, err, errlen);
  ssize_t n = rc == 0 ? read_all(fd, tmp, sizeof tmp) : 0;
  close(fd);
  if (rc == 0 && n < 0) {
    seterr(err, errlen, "cannot read %s %s: %s", SECRET_KIND(must_be_private), path, strerror(errno));
    rc = SG_EIO;
  }
  if (rc == 0) {
    size_t len = 0;
    while (len < (size_t)n && tmp[len] != '\n') len++;
    while (len > 0 && tmp[len - 1] == '\r') len--;
    if (len == 0) {
      seterr(err, errlen, "%s %s is empty", SECRET_KIND(must_be_private), path);
      rc = SG_EINVAL;
    } else if (len >= cap) {
      seterr(err, errlen, "%s %s: first line longer than %zu bytes", SECRET_KIND(must_be_private), path, cap - 1);
      rc = SG_ETOOBIG;
    } else {
      memcpy(buf, tmp, len);
      buf[len] = '\0';
    }
  }
  OPENSSL_cleanse(tmp, sizeof tmp);
  if (rc != 0) OPENSSL_cleanse(buf, cap);
  return rc;
}

/* ---- module and token ------------------------------------------------- */

static const char *module_path_for(const struct hsm_params *p) {
  switch (p->mode) {
  case HSM_MODULE: return p->module;
  case HSM_REMOTE: return p->module ? p->module : HSM_P11KIT_CLIENT_MODULE;
  case HSM_INPROCESS: break;
  }
  return p->module ? p->module : HSM_SOFTHSM2_MODULE;
}

/* Export what the module reads at load time; the caller is still the
 * only thread (hsm_open runs at start, before workers exist). */
static int module_env(const struct hsm_params *p, char *err, size_t errlen) {
  if (p->mode == HSM_INPROCESS && p->softhsm_conf != NULL &&
      setenv("SOFTHSM2_CONF", p->softhsm_conf, 1) != 0) {
    seterr(err, errlen, "setenv SOFTHSM2_CONF: %s", strerror(errno));
    return SG_EIO;
  }
  if (p->mode == HSM_REMOTE) {
    if (p->server_address == NULL) {
      seterr(err, errlen, "remote token mode needs a server address");
      return SG_EINVAL;
    }
    if (setenv("P11_KIT_SERVER_ADDRESS", p->server_address, 1) != 0) {
      seterr(err, errlen, "setenv P11_KIT_SERVER_ADDRESS: %s", strerror(errno));
      return SG_EIO;
    }
  }
  return 0;
}

/* Load and C_Initialize the module.  On success *fn_out is loaded and
 * initialised; release with module_unload(). */
static int module_load(const struct hsm_params *p, CK_FUNCTION_LIST **fn_out, char *err,
                       size_t errlen) {
  const char *path = module_path_for(p);
  if (path == NULL) {
    seterr(err, errlen, "no PKCS#11 module path configured");
    return SG_EINVAL;
  }
  if (access(path, R_OK) != 0) {
    seterr(err, errlen, "PKCS#11 module %s: %s", path, strerror(errno));
    return errno == ENOENT ? SG_ENOTFOUND : SG_EPERM;
  }
  int rc = module_env(p, err, errlen);
  if (rc != 0) return rc;
  CK_FUNCTION_LIST *fn =
      p11_kit_module_load(path, P11_KIT_MODULE_UNMANAGED | P11_KIT_MODULE_CRITICAL);
  if (fn == NULL) {
    const char *m = p11_kit_message();
    seterr(err, errlen, "cannot load PKCS#11 module %s: %s", path, m ? m : "unknown error");
    return SG_EIO;
  }
  CK_C_INITIALIZE_ARGS args;
  memset(&args, 0, sizeof args);
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = fn->C_Initialize(&args);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    if (p->mode == HSM_REMOTE)
      seterr(err, errlen, "token server at %s unreachable (%s)", p->server_address, ckr_name(rv));
    else
      seterr(err, errlen, "PKCS#11 module %s failed to initialize: %s", path, ckr_name(rv));
    p11_kit_module_release(fn);
    return p->mode == HSM_REMOTE ? SG_ETEMP : ckr_to_sg(NULL, rv);
  }
  *fn_out = fn;
  return 0;
}

static void module_unload(CK_FUNCTION_LIST *fn) {
  if (fn == NULL) return;
  (void)fn->C_Finalize(NULL); /* may already be finalized by libp11: ignored */
  p11_kit_module_release(fn);
}

static void label_pad(unsigned char out[32], const char *label) {
  size_t n = strlen(label);
  memset(out, ' ', 32);
  memcpy(out, label, n > 32 ? 32 : n);
}

/* Slots with a token present.  *slots_out is the caller's (free). */
static CK_RV slot_list(CK_FUNCTION_LIST *fn, CK_SLOT_ID **slots_out, CK_ULONG *n_out) {
  CK_ULONG n = 0;
  CK_RV rv = fn->C_GetSlotList(CK_TRUE, NULL, &n);
  if (rv != CKR_OK) return rv;
  CK_SLOT_ID *slots = calloc(n + 1, sizeof *slots);
  if (slots == NULL) return CKR_HOST_MEMORY;
  rv = fn->C_GetSlotList(CK_TRUE, slots, &n);
  if (rv != CKR_OK) {
    free(slots);
    return rv;
  }
  *slots_out = slots;
  *n_out = n;
  return CKR_OK;
}

/* Find the slot whose token carries label.  Returns CKR_OK and sets
 * *found; CKR_* on a module failure. */
static CK_RV token_find(CK_FUNCTION_LIST *fn, const char *label, CK_SLOT_ID *slot_out,
                        bool *found) {
  unsigned char want[32];
  label_pad(want, label);
  CK_SLOT_ID *slots = NULL;
  CK_ULONG n = 0;
  *found = false;
  CK_RV rv = slot_list(fn, &slots, &n);
  if (rv != CKR_OK) return rv;
  for (CK_ULONG i = 0; i < n && !*found; i++) {
    CK_TOKEN_INFO ti;
    if (fn->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
    if ((ti.flags & CKF_TOKEN_INITIALIZED) && memcmp(ti.label, want, 32) == 0) {
      *slot_out = slots[i];
      *found = true;
    }
  }
  free(slots);
  return CKR_OK;
}

static int token_locate(struct hsm *h, const struct hsm_params *p, char *err, size_t errlen) {
  bool found = false;
  CK_SLOT_ID slot = 0;
  CK_RV rv = token_find(FN(h), p->token, &slot, &found);
  if (rv != CKR_OK) {
    if (h->mode == HSM_REMOTE) {
      seterr(err, errlen, "token server at %s unreachable (%s)", h->server_address, ckr_name(rv));
      return SG_ETEMP;
    }
    seterr(err, errlen, "cannot list slots of module %s: %s", h->module_path, ckr_name(rv));
    return ckr_to_sg(h, rv);
  }
  /* p11-kit-client shows no slots at all when it cannot reach the server. */
  if (!found && h->mode == HSM_REMOTE && !hsm__server_accepts(h)) {
    seterr(err, errlen, "token server at %s unreachable", h->server_address);
    return SG_ETEMP;
  }
  if (!found) {
    seterr(err, errlen, "token %s not found in module %s", p->token, h->module_path);
    return SG_ENOTFOUND;
  }
  h->slot = slot;
  return 0;
}

static int session_login(struct hsm *h, const struct hsm_params *p, char *err, size_t errlen) {
  CK_SESSION_HANDLE s;
  CK_RV rv = FN(h)->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
  if (rv != CKR_OK) {
    seterr(err, errlen, "cannot open a session on token %s: %s", h->token, ckr_name(rv));
    return ckr_to_sg(h, rv);
  }
  h->session = s;
  rv = FN(h)->C_Login(s, CKU_USER, (CK_UTF8CHAR *)h->pin, strlen(h->pin));
  if (rv == CKR_PIN_INCORRECT) {
    seterr(err, errlen, "wrong PIN for token %s (PIN file %s)", h->token, p->pin_file);
    return SG_EPERM;
  }
  if (rv == CKR_PIN_LOCKED) {
    seterr(err, errlen, "PIN of token %s is locked", h->token);
    return SG_EPERM;
  }
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    seterr(err, errlen, "cannot log in to token %s: %s", h->token, ckr_name(rv));
    return ckr_to_sg(h, rv);
  }
  h->logged_in = true;
  return 0;
}

static int params_check(const struct hsm_params *p, char *err, size_t errlen) {
  if (p == NULL || p->token == NULL || p->token[0] == '\0') {
    seterr(err, errlen, "no token label configured");
    return SG_EINVAL;
  }
  if (strlen(p->token) > 32) {
    seterr(err, errlen, "token label %s is longer than 32 bytes", p->token);
    return SG_EINVAL;
  }
  return 0;
}

static struct hsm *hsm_alloc(const struct hsm_params *p) {
  struct hsm *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->mode = p->mode;
  snprintf(h->token, sizeof h->token, "%s", p->token);
  const char *path = module_path_for(p);
  snprintf(h->module_path, sizeof h->module_path, "%s", path ? path : "");
  if (p->server_address)
    snprintf(h->server_address, sizeof h->server_address, "%s", p->server_address);
  pthread_mutex_init(&h->mu, NULL);
  return h;
}

int hsm_open(const struct hsm_params *p, struct hsm **out, char *err, size_t errlen) {
  int rc = params_check(p, err, errlen);
  if (rc != 0) return rc;
  if (p->pin_file == NULL) {
    seterr(err, errlen, "no PIN file configured for token %s", p->token);
    return SG_EINVAL;
  }
  struct hsm *h = hsm_alloc(p);
  if (h == NULL) return SG_ENOMEM;
  CK_FUNCTION_LIST *fn = NULL;
  rc = hsm_read_secret_file(p->pin_file, true, h->pin, sizeof h->pin, err, errlen);
  if (rc == 0) rc = module_load(p, &fn, err, errlen);
  h->fn = fn;
  if (rc == 0) rc = token_locate(h, p, err, errlen);
  if (rc == 0) rc = session_login(h, p, err, errlen);
  if (rc != 0) {
    hsm_close(h);
    return rc;
  }
  *out = h;
  return 0;
}

/* Order matters in-process: libp11's shared context and the admin side
 * share one SoftHSM2 instance, and whoever calls C_Finalize first ends it
 * for both.  So the workers' context goes first (its C_Finalize ends the
 * module), then the admin side's calls fail harmlessly and are ignored. */
void hsm_close(struct hsm *h) {
  if (h == NULL) return;
  if (h->fn != NULL && h->logged_in) (void)FN(h)->C_Logout(h->session);
  if (h->fn != NULL && h->session != 0) (void)FN(h)->C_CloseSession(h->session);
  hsm_worker__shared_free(h);
  module_unload(FN(h));
  pthread_mutex_destroy(&h->mu);
  OPENSSL_cleanse(h->pin, sizeof h->pin);
  free(h);
}

enum hsm_mode hsm_get_mode(const struct hsm *h) { return h->mode; }

/* ---- token initialisation ---------------------------------------------- */

/* The first slot whose token is not initialised yet. */
static int free_slot(CK_FUNCTION_LIST *fn, const char *path, CK_SLOT_ID *slot_out, char *err,
                     size_t errlen) {
  CK_SLOT_ID *slots = NULL;
  CK_ULONG n = 0;
  CK_RV rv = slot_list(fn, &slots, &n);
  if (rv != CKR_OK) {
    seterr(err, errlen, "cannot list slots of module %s: %s", path, ckr_name(rv));
    return ckr_to_sg(NULL, rv);
  }
  int rc = SG_ENOTFOUND;
  for (CK_ULONG i = 0; i < n && rc != 0; i++) {
    CK_TOKEN_INFO ti;
    if (fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && !(ti.flags & CKF_TOKEN_INITIALIZED)) {
      *slot_out = slots[i];
      rc = 0;
    }
  }
  free(slots);
  if (rc != 0) seterr(err, errlen, "module %s has no free slot for a new token", path);
  return rc;
}

static int token_set_user_pin(CK_FUNCTION_LIST *fn, CK_SLOT_ID slot, const char *label,
                              const char *so_pin, const char *user_pin, char *err,
                              size_t errlen) {
  CK_SESSION_HANDLE s;
  CK_RV rv = fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
  if (rv != CKR_OK) {
    seterr(err, errlen, "cannot open a session on new token %s: %s", label, ckr_name(rv));
    return ckr_to_sg(NULL, rv);
  }
  rv = fn->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so_pin, strlen(so_pin));
  if (rv == CKR_OK) {
    rv = fn->C_InitPIN(s, (CK_UTF8CHAR *)user_pin, strlen(user_pin));
    (void)fn->C_Logout(s);
    if (rv != CKR_OK)
      seterr(err, errlen, "cannot set the user PIN of token %s: %s", label, ckr_name(rv));
  } else {
    seterr(err, errlen, "cannot log in as SO to new token %s: %s", label, ckr_name(rv));
  }
  (void)fn->C_CloseSession(s);
  return ckr_to_sg(NULL, rv);
}

static int token_create(CK_FUNCTION_LIST *fn, const struct hsm_params *p, const char *path,
                        const char *so_pin, const char *user_pin, char *err, size_t errlen) {
  CK_SLOT_ID slot = 0;
  bool found = false;
  CK_RV rv = token_find(fn, p->token, &slot, &found);
  if (rv == CKR_OK && found) {
    seterr(err, errlen, "token %s already exists in module %s", p->token, path);
    return SG_EEXIST;
  }
  int rc = free_slot(fn, path, &slot, err, errlen);
  if (rc != 0) return rc;
  unsigned char label[32];
  label_pad(label, p->token);
  rv = fn->C_InitToken(slot, (CK_UTF8CHAR *)so_pin, strlen(so_pin), label);
  if (rv != CKR_OK) {
    seterr(err, errlen, "cannot initialise token %s: %s", p->token, ckr_name(rv));
    return ckr_to_sg(NULL, rv);
  }
  /* SoftHSM2 moves an initialised token to a new slot id: look again. */
  rv = token_find(fn, p->token, &slot, &found);
  if (rv != CKR_OK || !found) {
    seterr(err, errlen, "token %s vanished after initialisation", p->token);
    return SG_EIO;
  }
  return token_set_user_pin(fn, slot, p->token, so_pin, user_pin, err, errlen);
}

int hsm_token_init(const struct hsm_params *p, const char *so_pin, const char *user_pin,
                   char *err, size_t errlen) {
  int rc = params_check(p, err, errlen);
  if (rc != 0) return rc;
  if (so_pin == NULL || user_pin == NULL || !*so_pin || !*user_pin) {
    seterr(err, errlen, "token %s needs an SO PIN and a user PIN", p->token);
    return SG_EINVAL;
  }
  CK_FUNCTION_LIST *fn = NULL;
  rc = module_load(p, &fn, err, errlen);
  if (rc != 0) return rc;
  rc = token_create(fn, p, module_path_for(p), so_pin, user_pin, err, errlen);
  module_unload(fn);
  return rc;
}

/* ---- attributes and object search ------------------------------------- */

/* Read a variable-length attribute (two-call pattern).  *val_out is the
 * caller's (free); a zero-length value gives a 1-byte buffer. */
static CK_RV attr_get(struct hsm *h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE t,
                      unsigned char **val_out, size_t *len_out) {
  CK_ATTRIBUTE a = {t, NULL, 0};
  CK_RV rv = FN(h)->C_GetAttributeValue(h->session, o, &a, 1);
  if (rv != CKR_OK) return rv;
  if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > (1u << 20))
    return CKR_ATTRIBUTE_TYPE_INVALID;
  CK_ULONG want = a.ulValueLen;
  a.pValue = malloc(want + 1);
  if (a.pValue == NULL) return CKR_HOST_MEMORY;
  rv = FN(h)->C_GetAttributeValue(h->session, o, &a, 1);
  if (rv != CKR_OK || a.ulValueLen > want) {
    free(a.pValue);
    return rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
  }
  *val_out = a.pValue;
  *len_out = a.ulValueLen;
  return CKR_OK;
}

/* Read a fixed-size attribute; a size mismatch is an error. */
static CK_RV attr_fixed(struct hsm *h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE t, void *out,
                        size_t len) {
  CK_ATTRIBUTE a = {t, out, len};
  CK_RV rv = FN(h)->C_GetAttributeValue(h->session, o, &a, 1);
  if (rv == CKR_OK && a.ulValueLen != len) return CKR_ATTRIBUTE_VALUE_INVALID;
  return rv;
}

/* Every object matching tmpl.  *objs_out is the caller's (free). */
static CK_RV find_all(struct hsm *h, CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE **objs_out,
                      size_t *n_out) {
  CK_RV rv = FN(h)->C_FindObjectsInit(h->session, tmpl, n);
  if (rv != CKR_OK) return rv;
  CK_OBJECT_HANDLE *objs = NULL;
  size_t total = 0, cap = 0;
  for (;;) {
    if (total + 64 > cap) {
      CK_OBJECT_HANDLE *g = realloc(objs, (cap + 64) * sizeof *g);
      if (g == NULL) {
        rv = CKR_HOST_MEMORY;
        break;
      }
      objs = g;
      cap += 64;
    }
    CK_ULONG got = 0;
    rv = FN(h)->C_FindObjects(h->session, objs + total, 64, &got);
    if (rv != CKR_OK || got == 0) break;
    total += got > 64 ? 64 : got;
  }
  (void)FN(h)->C_FindObjectsFinal(h->session);
  if (rv != CKR_OK) {
    free(objs);
    return rv;
  }
  *objs_out = objs;
  *n_out = total;
  return CKR_OK;
}

/* Curve bits from a DER OID (CKA_EC_PARAMS); 0 if not one of ours. */
static unsigned ec_bits(const unsigned char *p, size_t n) {
  if (n == sizeof oid_p256 && memcmp(p, oid_p256, n) == 0) return 256;
  if (n == sizeof oid_p384 && memcmp(p, oid_p384, n) == 0) return 384;
  return 0;
}

static const char *ec_group(const unsigned char *p, size_t n) {
  unsigned bits = ec_bits(p, n);
  return bits == 256 ? "prime256v1" : bits == 384 ? "secp384r1" : NULL;
}

/* ---- listing ------------------------------------------------------------ */

static CK_RV list_key_bits(struct hsm *h, CK_OBJECT_HANDLE o, struct hsm_object *ob) {
  CK_KEY_TYPE kt;
  CK_RV rv = attr_fixed(h, o, CKA_KEY_TYPE, &kt, sizeof kt);
  if (rv != CKR_OK) return rv;
  unsigned char *v = NULL;
  size_t n = 0;
  if (kt == CKK_RSA) {
    ob->key_type = HSM_KEY_RSA;
    CK_ULONG bits = 0;
    if (attr_fixed(h, o, CKA_MODULUS_BITS, &bits, sizeof bits) == CKR_OK && bits != 0) {
      ob->key_bits = (unsigned)bits;
    } else if (attr_get(h, o, CKA_MODULUS, &v, &n) == CKR_OK) {
      BIGNUM *bn = BN_bin2bn(v, (int)n, NULL);
      ob->key_bits = bn ? (unsigned)BN_num_bits(bn) : 0;
      BN_free(bn);
    }
  } else if (kt == CKK_EC) {
    ob->key_type = HSM_KEY_EC;
    if (attr_get(h, o, CKA_EC_PARAMS, &v, &n) == CKR_OK) ob->key_bits = ec_bits(v, n);
  }
  free(v);
  return CKR_OK;
}

static CK_RV list_flags(struct hsm *h, CK_OBJECT_HANDLE o, struct hsm_object *ob) {
  if (ob->cls == HSM_OBJ_PRIVATE_KEY) {
    CK_BBOOL s = CK_FALSE, x = CK_TRUE;
    (void)attr_fixed(h, o, CKA_SENSITIVE, &s, sizeof s);
    (void)attr_fixed(h, o, CKA_EXTRACTABLE, &x, sizeof x);
    ob->sensitive = s == CK_TRUE;
    ob->extractable = x == CK_TRUE;
  }
  if (ob->cls == HSM_OBJ_CERT) {
    CK_ULONG cat = 0;
    if (attr_fixed(h, o, CKA_CERTIFICATE_CATEGORY, &cat, sizeof cat) == CKR_OK)
      ob->cert_category = (int)cat;
    CK_RV rv = attr_get(h, o, CKA_VALUE, &ob->der, &ob->der_len);
    if (rv != CKR_OK) return rv;
  }
  return CKR_OK;
}

/* Fill ob from object o.  Returns 1 to keep, 0 to skip, <0 on error. */
static int list_one(struct hsm *h, CK_OBJECT_HANDLE o, enum hsm_object_class cls,
                    struct hsm_object *ob) {
  memset(ob, 0, sizeof *ob);
  ob->cls = cls;
  unsigned char *label = NULL, *id = NULL;
  size_t llen = 0, ilen = 0;
  int keep = 1;
  if (attr_get(h, o, CKA_LABEL, &label, &llen) != CKR_OK) llen = 0;
  if (attr_get(h, o, CKA_ID, &id, &ilen) != CKR_OK) ilen = 0;
  if (llen > HSM_LABEL_MAX - 1 || ilen > HSM_ID_MAX) {
    log_warn("hsm: token %s: skipping an object with a label of %zu bytes or an id of %zu bytes",
             h->token, llen, ilen);
    keep = 0;
  } else {
    if (llen) memcpy(ob->ref.label, label, llen);
    if (ilen) memcpy(ob->ref.id, id, ilen);
    ob->ref.id_len = ilen;
  }
  free(label);
  free(id);
  if (!keep) return 0;
  CK_RV rv = cls == HSM_OBJ_CERT ? CKR_OK : list_key_bits(h, o, ob);
  if (rv == CKR_OK) rv = list_flags(h, o, ob);
  return rv == CKR_OK ? 1 : ckr_to_sg(h, rv);
}

static int list_class(struct hsm *h, CK_OBJECT_CLASS c, enum hsm_object_class cls,
                      struct hsm_object **objs, size_t *n, size_t *cap) {
  CK_ATTRIBUTE t = {CKA_CLASS, &c, sizeof c};
  CK_OBJECT_HANDLE *found = NULL;
  size_t nf = 0;
  CK_RV rv = find_all(h, &t, 1, &found, &nf);
  if (rv != CKR_OK) return ckr_to_sg(h, rv);
  int rc = 0;
  for (size_t i = 0; i < nf && rc == 0; i++) {
    if (*n == *cap) {
      size_t nc = *cap ? *cap * 2 : 16;
      struct hsm_object *g = realloc(*objs, nc * sizeof *g);
      if (g == NULL) {
        rc = SG_ENOMEM;
        break;
      }
      *objs = g;
      *cap = nc;
    }
    int k = list_one(h, found[i], cls, &(*objs)[*n]);
    if (k < 0) rc = k;
    else if (k > 0) (*n)++;
  }
  free(found);
  return rc;
}

int hsm_list(struct hsm *h, struct hsm_object **objs_out, size_t *n_out) {
  struct hsm_object *objs = NULL;
  size_t n = 0, cap = 0;
  pthread_mutex_lock(&h->mu);
  int rc = list_class(h, CKO_PRIVATE_KEY, HSM_OBJ_PRIVATE_KEY, &objs, &n, &cap);
  if (rc == 0) rc = list_class(h, CKO_PUBLIC_KEY, HSM_OBJ_PUBLIC_KEY, &objs, &n, &cap);
  if (rc == 0) rc = list_class(h, CKO_CERTIFICATE, HSM_OBJ_CERT, &objs, &n, &cap);
  pthread_mutex_unlock(&h->mu);
  if (rc != 0) {
    hsm_objects_free(objs, n);
    return rc;
  }
  *objs_out = objs;
  *n_out = n;
  return 0;
}

void hsm_objects_free(struct hsm_object *objs, size_t n) {
  if (objs == NULL) return;
  for (size_t i = 0; i < n; i++) free(objs[i].der);
  free(objs);
}

/* ---- key generation ---------------------------------------------------- */

static int new_ref(const char *label, struct hsm_keyref *ref, char *err, size_t errlen) {
  if (label == NULL || strlen(label) > HSM_LABEL_MAX - 1) {
    seterr(err, errlen, "key label missing or longer than %d bytes", HSM_LABEL_MAX - 1);
    return SG_EINVAL;
  }
  memset(ref, 0, sizeof *ref);
  snprintf(ref->label, sizeof ref->label, "%s", label);
  /* 8 bytes of creation time (microseconds, big-endian), then 8 random:
   * ids of one name sort by age, which tells a renewal from the key it
   * replaces even when both certificates start in the same second. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
  for (int i = 0; i < 8; i++) ref->id[i] = (unsigned char)(us >> (56 - 8 * i));
  if (RAND_bytes(ref->id + 8, 8) != 1) {
    seterr(err, errlen, "no randomness for a key id");
    return SG_EIO;
  }
  ref->id_len = 16;
  return 0;
}

static int keygen_check(enum hsm_key_type type, unsigned bits, char *err, size_t errlen) {
  if (type == HSM_KEY_RSA && (bits == 2048 || bits == 3072 || bits == 4096)) return 0;
  if (type == HSM_KEY_EC && (bits == 256 || bits == 384)) return 0;
  if (type == HSM_KEY_RSA)
    seterr(err, errlen, "RSA key size %u not supported: use 2048, 3072 or 4096", bits);
  else if (type == HSM_KEY_EC)
    seterr(err, errlen, "EC key size %u not supported: use 256 (P-256) or 384 (P-384)", bits);
  else
    seterr(err, errlen, "unknown key type %d: use RSA or EC", (int)type);
  return SG_EINVAL;
}

#define ATTR(t, p, n) ((CK_ATTRIBUTE){(t), (void *)(p), (n)})

int hsm_keygen(struct hsm *h, const char *label, enum hsm_key_type type, unsigned bits,
               struct hsm_keyref *ref_out, char *err, size_t errlen) {
  int rc = keygen_check(type, bits, err, errlen);
  struct hsm_keyref ref;
  if (rc == 0) rc = new_ref(label, &ref, err, errlen);
  if (rc != 0) return rc;
  CK_BBOOL t = CK_TRUE, f = CK_FALSE;
  CK_ULONG mbits = bits;
  static const unsigned char e65537[] = {0x01, 0x00, 0x01};
  bool rsa = type == HSM_KEY_RSA;
  const unsigned char *oid = bits == 256 ? oid_p256 : oid_p384;
  size_t oidlen = bits == 256 ? sizeof oid_p256 : sizeof oid_p384;
  size_t ll = strlen(label);
  CK_ATTRIBUTE pub[] = {
      ATTR(CKA_TOKEN, &t, 1),         ATTR(CKA_LABEL, label, ll),
      ATTR(CKA_ID, ref.id, ref.id_len), ATTR(CKA_VERIFY, &t, 1),
      ATTR(CKA_WRAP, &f, 1),
      rsa ? ATTR(CKA_ENCRYPT, &t, 1) : ATTR(CKA_EC_PARAMS, oid, oidlen),
      ATTR(CKA_MODULUS_BITS, &mbits, sizeof mbits),
      ATTR(CKA_PUBLIC_EXPONENT, e65537, sizeof e65537),
  };
  CK_ATTRIBUTE priv[] = {
      ATTR(CKA_TOKEN, &t, 1),       ATTR(CKA_PRIVATE, &t, 1),
      ATTR(CKA_SENSITIVE, &t, 1),   ATTR(CKA_EXTRACTABLE, &f, 1),
      ATTR(CKA_LABEL, label, ll),   ATTR(CKA_ID, ref.id, ref.id_len),
      ATTR(CKA_SIGN, &t, 1),
      rsa ? ATTR(CKA_DECRYPT, &t, 1) : ATTR(CKA_DERIVE, &t, 1),
      ATTR(CKA_UNWRAP, &t, 1),
  };
  CK_MECHANISM mech = {rsa ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN, NULL, 0};
  CK_OBJECT_HANDLE hpub, hpriv;
  pthread_mutex_lock(&h->mu);
  CK_RV rv = FN(h)->C_GenerateKeyPair(h->session, &mech, pub, rsa ? 8 : 6, priv, rsa ? 9 : 8,
                                      &hpub, &hpriv);
  pthread_mutex_unlock(&h->mu);
  if (rv != CKR_OK) {
    seterr(err, errlen, "key generation in token %s failed: %s", h->token, ckr_name(rv));
    return ckr_to_sg(h, rv);
  }
  *ref_out = ref;
  return 0;
}

/* ---- import -------------------------------------------------------------- */

/* One BIGNUM parameter as big-endian bytes (wiped and freed by bufs_wipe). */
struct kbuf { unsigned char *p; size_t n; };

static int bn_param(const EVP_PKEY *key, const char *name, struct kbuf *out, size_t pad) {
  BIGNUM *bn = NULL;
  if (!EVP_PKEY_get_bn_param(key, name, &bn)) return SG_EINVAL;
  size_t n = (size_t)BN_num_bytes(bn);
  if (pad < n) pad = n;
  out->p = malloc(pad ? pad : 1);
  int rc = out->p ? 0 : SG_ENOMEM;
  if (rc == 0 && BN_bn2binpad(bn, out->p, (int)pad) < 0) rc = SG_EINVAL;
  out->n = pad;
  BN_clear_free(bn);
  return rc;
}

static void bufs_wipe(struct kbuf *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (b[i].p) OPENSSL_cleanse(b[i].p, b[i].n);
    free(b[i].p);
    b[i].p = NULL;
  }
}

/* Create the private object, then the public one; undo the first if the
 * second fails so nothing is left half-imported.  Caller holds h->mu. */
static CK_RV create_pair(struct hsm *h, CK_ATTRIBUTE *priv, CK_ULONG npriv, CK_ATTRIBUTE *pub,
                         CK_ULONG npub) {
  CK_OBJECT_HANDLE hpriv, hpub;
  CK_RV rv = FN(h)->C_CreateObject(h->session, priv, npriv, &hpriv);
  if (rv != CKR_OK) return rv;
  rv = FN(h)->C_CreateObject(h->session, pub, npub, &hpub);
  if (rv != CKR_OK) (void)FN(h)->C_DestroyObject(h->session, hpriv);
  return rv;
}

static CK_RV import_rsa(struct hsm *h, const EVP_PKEY *key, const struct hsm_keyref *ref) {
  static const char *names[8] = {
      OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,         OSSL_PKEY_PARAM_RSA_D,
      OSSL_PKEY_PARAM_RSA_FACTOR1,   OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
      OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
  static const CK_ATTRIBUTE_TYPE types[8] = {
      CKA_MODULUS,   CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
      CKA_PRIME_2,   CKA_EXPONENT_1,      CKA_EXPONENT_2,       CKA_COEFFICIENT};
  struct kbuf b[8] = {{0}};
  CK_RV rv = CKR_OK;
  for (int i = 0; i < 8 && rv == CKR_OK; i++)
    if (bn_param(key, names[i], &b[i], 0) != 0) rv = CKR_ATTRIBUTE_VALUE_INVALID;
  if (rv == CKR_OK) {
    CK_OBJECT_CLASS cpriv = CKO_PRIVATE_KEY, cpub = CKO_PUBLIC_KEY;
    CK_KEY_TYPE kt = CKK_RSA;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    size_t ll = strlen(ref->label);
    CK_ATTRIBUTE priv[20] = {
        ATTR(CKA_CLASS, &cpriv, sizeof cpriv), ATTR(CKA_KEY_TYPE, &kt, sizeof kt),
        ATTR(CKA_TOKEN, &t, 1),      ATTR(CKA_PRIVATE, &t, 1),
        ATTR(CKA_SENSITIVE, &t, 1),  ATTR(CKA_EXTRACTABLE, &f, 1),
        ATTR(CKA_LABEL, ref->label, ll), ATTR(CKA_ID, ref->id, ref->id_len),
        ATTR(CKA_SIGN, &t, 1),       ATTR(CKA_DECRYPT, &t, 1),
        ATTR(CKA_UNWRAP, &t, 1),
    };
    for (int i = 0; i < 8; i++) priv[11 + i] = ATTR(types[i], b[i].p, b[i].n);
    CK_ATTRIBUTE pub[] = {
        ATTR(CKA_CLASS, &cpub, sizeof cpub), ATTR(CKA_KEY_TYPE, &kt, sizeof kt),
        ATTR(CKA_TOKEN, &t, 1),    ATTR(CKA_LABEL, ref->label, ll),
        ATTR(CKA_ID, ref->id, ref->id_len), ATTR(CKA_VERIFY, &t, 1),
        ATTR(CKA_ENCRYPT, &t, 1),  ATTR(CKA_WRAP, &f, 1),
        ATTR(CKA_MODULUS, b[0].p, b[0].n), ATTR(CKA_PUBLIC_EXPONENT, b[1].p, b[1].n),
    };
    rv = create_pair(h, priv, 19, pub, sizeof pub / sizeof pub[0]);
    OPENSSL_cleanse(priv, sizeof priv);
  }
  bufs_wipe(b, 8);
  return rv;
}

/* The uncompressed public point wrapped in a DER OCTET STRING. */
static int ec_point_der(const EVP_PKEY *key, size_t field, struct kbuf *out) {
  unsigned char pt[1 + 2 * 66];
  size_t n = 0;
  if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n) ||
      n != 1 + 2 * field || pt[0] != 0x04)
    return SG_EINVAL;
  out->p = malloc(n + 2);
  if (out->p == NULL) return SG_ENOMEM;
  out->p[0] = 0x04; /* OCTET STRING; n < 128 for our curves: short length */
  out->p[1] = (unsigned char)n;
  memcpy(out->p + 2, pt, n);
  out->n = n + 2;
  return 0;
}

static CK_RV import_ec(struct hsm *h, const EVP_PKEY *key, const struct hsm_keyref *ref) {
  char group[64];
  if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL))
    return CKR_ATTRIBUTE_VALUE_INVALID;
  bool p256 = strcmp(group, "prime256v1") == 0, p384 = strcmp(group, "secp384r1") == 0;
  if (!p256 && !p384) return CKR_ATTRIBUTE_VALUE_INVALID;
  const unsigned char *oid = p256 ? oid_p256 : oid_p384;
  size_t oidlen = p256 ? sizeof oid_p256 : sizeof oid_p384, field = p256 ? 32 : 48;
  struct kbuf b[2] = {{0}};
  CK_RV rv = CKR_ATTRIBUTE_VALUE_INVALID;
  if (bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &b[0], field) == 0 && b[0].n == field &&
      ec_point_der(key, field, &b[1]) == 0) {
    CK_OBJECT_CLASS cpriv = CKO_PRIVATE_KEY, cpub = CKO_PUBLIC_KEY;
    CK_KEY_TYPE kt = CKK_EC;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    size_t ll = strlen(ref->label);
    CK_ATTRIBUTE priv[] = {
        ATTR(CKA_CLASS, &cpriv, sizeof cpriv), ATTR(CKA_KEY_TYPE, &kt, sizeof kt),
        ATTR(CKA_TOKEN, &t, 1),     ATTR(CKA_PRIVATE, &t, 1),
        ATTR(CKA_SENSITIVE, &t, 1), ATTR(CKA_EXTRACTABLE, &f, 1),
        ATTR(CKA_LABEL, ref->label, ll), ATTR(CKA_ID, ref->id, ref->id_len),
        ATTR(CKA_SIGN, &t, 1),      ATTR(CKA_DERIVE, &t, 1),
        ATTR(CKA_EC_PARAMS, oid, oidlen), ATTR(CKA_VALUE, b[0].p, b[0].n),
    };
    CK_ATTRIBUTE pub[] = {
        ATTR(CKA_CLASS, &cpub, sizeof cpub), ATTR(CKA_KEY_TYPE, &kt, sizeof kt),
        ATTR(CKA_TOKEN, &t, 1),   ATTR(CKA_LABEL, ref->label, ll),
        ATTR(CKA_ID, ref->id, ref->id_len), ATTR(CKA_VERIFY, &t, 1),
        ATTR(CKA_WRAP, &f, 1),    ATTR(CKA_EC_PARAMS, oid, oidlen),
        ATTR(CKA_EC_POINT, b[1].p, b[1].n),
    };
    rv = create_pair(h, priv, sizeof priv / sizeof priv[0], pub, sizeof pub / sizeof pub[0]);
    OPENSSL_cleanse(priv, sizeof priv);
  }
  bufs_wipe(b, 2);
  return rv;
}

int hsm_import_key(struct hsm *h, const char *label, const EVP_PKEY *key,
                   struct hsm_keyref *ref_out, char *err, size_t errlen) {
  struct hsm_keyref ref;
  int rc = new_ref(label, &ref, err, errlen);
  if (rc != 0) return rc;
  bool rsa = EVP_PKEY_is_a(key, "RSA"), ec = EVP_PKEY_is_a(key, "EC");
  if (!rsa && !ec) {
    seterr(err, errlen, "cannot import a %s key: only RSA and EC (P-256, P-384)",
           EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "unknown");
    return SG_EINVAL;
  }
  pthread_mutex_lock(&h->mu);
  CK_RV rv = rsa ? import_rsa(h, key, &ref) : import_ec(h, key, &ref);
  pthread_mutex_unlock(&h->mu);
  if (rv != CKR_OK) {
    if (rv == CKR_ATTRIBUTE_VALUE_INVALID && ec)
      seterr(err, errlen, "cannot import EC key %s: only P-256 and P-384 private keys", label);
    else
      seterr(err, errlen, "cannot import key %s into token %s: %s", label, h->token,
             ckr_name(rv));
    return ckr_to_sg(h, rv);
  }
  *ref_out = ref;
  return 0;
}

/* ---- certificates ------------------------------------------------------ */

/* i2d of one certificate name or serial into a malloc'd buffer. */
static int der_of(X509 *x, int which, struct kbuf *out) {
  int n = -1;
  unsigned char *p = NULL;
  if (which == 0) n = i2d_X509_NAME(X509_get_subject_name(x), &p);
  if (which == 1) n = i2d_X509_NAME(X509_get_issuer_name(x), &p);
  if (which == 2) n = i2d_ASN1_INTEGER(X509_get_serialNumber(x), &p);
  if (n <= 0) return SG_EINVAL;
  out->p = malloc((size_t)n);
  if (out->p) memcpy(out->p, p, (size_t)n);
  out->n = (size_t)n;
  OPENSSL_free(p);
  return out->p ? 0 : SG_ENOMEM;
}

int hsm_store_cert(struct hsm *h, const struct hsm_keyref *ref, int category,
                   const unsigned char *der, size_t der_len, char *err, size_t errlen) {
  const unsigned char *q = der;
  X509 *x = der_len < (1u << 20) ? d2i_X509(NULL, &q, (long)der_len) : NULL;
  if (x == NULL || q != der + der_len) {
    X509_free(x);
    seterr(err, errlen, "certificate %s is not one DER X.509 certificate", ref->label);
    return SG_EINVAL;
  }
  struct kbuf b[3] = {{0}};
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++) rc = der_of(x, i, &b[i]);
  X509_free(x);
  if (rc == 0) {
    CK_OBJECT_CLASS c = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_ULONG cat = (CK_ULONG)category;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    CK_ATTRIBUTE a[] = {
        ATTR(CKA_CLASS, &c, sizeof c), ATTR(CKA_CERTIFICATE_TYPE, &ct, sizeof ct),
        ATTR(CKA_TOKEN, &t, 1), ATTR(CKA_PRIVATE, &f, 1),
        ATTR(CKA_LABEL, ref->label, strlen(ref->label)), ATTR(CKA_ID, ref->id, ref->id_len),
        ATTR(CKA_VALUE, der, der_len), ATTR(CKA_SUBJECT, b[0].p, b[0].n),
        ATTR(CKA_ISSUER, b[1].p, b[1].n), ATTR(CKA_SERIAL_NUMBER, b[2].p, b[2].n),
        ATTR(CKA_CERTIFICATE_CATEGORY, &cat, sizeof cat),
    };
    CK_OBJECT_HANDLE o;
    pthread_mutex_lock(&h->mu);
    CK_RV rv = FN(h)->C_CreateObject(h->session, a, sizeof a / sizeof a[0], &o);
    pthread_mutex_unlock(&h->mu);
    if (rv != CKR_OK) {
      seterr(err, errlen, "cannot store certificate %s in token %s: %s", ref->label, h->token,
             ckr_name(rv));
      rc = ckr_to_sg(h, rv);
    }
  } else {
    seterr(err, errlen, "certificate %s: cannot encode its names", ref->label);
  }
  for (int i = 0; i < 3; i++) free(b[i].p);
  return rc;
}

/* ---- deletion ------------------------------------------------------------ */

int hsm_delete(struct hsm *h, const struct hsm_keyref *ref, size_t *n_out) {
  CK_ATTRIBUTE t[2] = {ATTR(CKA_ID, ref->id, ref->id_len),
                       ATTR(CKA_LABEL, ref->label, strlen(ref->label))};
  CK_OBJECT_HANDLE *objs = NULL;
  size_t n = 0, gone = 0;
  pthread_mutex_lock(&h->mu);
  CK_RV rv = find_all(h, t, ref->label[0] ? 2 : 1, &objs, &n);
  for (size_t i = 0; rv == CKR_OK && i < n; i++) {
    CK_RV r = FN(h)->C_DestroyObject(h->session, objs[i]);
    if (r == CKR_OK) gone++;
    else if (r != CKR_OBJECT_HANDLE_INVALID) rv = r;
  }
  pthread_mutex_unlock(&h->mu);
  free(objs);
  if (n_out) *n_out = gone;
  if (rv != CKR_OK)
    log_warn("hsm: deleting objects of %s from token %s: %s", ref->label, h->token, ckr_name(rv));
  return ckr_to_sg(h, rv);
}

/* ---- public keys ------------------------------------------------------- */

static EVP_PKEY *pkey_from(OSSL_PARAM_BLD *bld, const char *alg) {
  EVP_PKEY *pk = NULL;
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *c = params ? EVP_PKEY_CTX_new_from_name(NULL, alg, NULL) : NULL;
  if (c == NULL || EVP_PKEY_fromdata_init(c) <= 0 ||
      EVP_PKEY_fromdata(c, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    pk = NULL;
  EVP_PKEY_CTX_free(c);
  OSSL_PARAM_free(params);
  return pk;
}

static int pub_rsa(struct hsm *h, CK_OBJECT_HANDLE o, EVP_PKEY **out) {
  unsigned char *n = NULL, *e = NULL;
  size_t nl = 0, el = 0;
  CK_RV rv = attr_get(h, o, CKA_MODULUS, &n, &nl);
  if (rv == CKR_OK) rv = attr_get(h, o, CKA_PUBLIC_EXPONENT, &e, &el);
  BIGNUM *bn = rv == CKR_OK ? BN_bin2bn(n, (int)nl, NULL) : NULL;
  BIGNUM *be = rv == CKR_OK ? BN_bin2bn(e, (int)el, NULL) : NULL;
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  EVP_PKEY *pk = NULL;
  if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
    pk = pkey_from(bld, "RSA");
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn);
  BN_free(be);
  free(n);
  free(e);
  if (rv != CKR_OK) return ckr_to_sg(h, rv);
  *out = pk;
  return pk ? 0 : SG_ECORRUPT;
}

/* CKA_EC_POINT is a DER OCTET STRING around the point; some modules give
 * the raw point.  Returns a pointer into v and its length, or NULL. */
static const unsigned char *ec_point_unwrap(const unsigned char *v, size_t n, size_t *len) {
  if (n >= 2 && v[0] == 0x04 && v[1] < 0x80 && (size_t)v[1] + 2 == n) {
    *len = v[1];
    return v + 2;
  }
  if (n >= 3 && v[0] == 0x04 && v[1] == 0x81 && (size_t)v[2] + 3 == n) {
    *len = v[2];
    return v + 3;
  }
  if (n >= 1 && (v[0] == 0x04 || v[0] == 0x02 || v[0] == 0x03)) {
    *len = n;
    return v;
  }
  return NULL;
}

static int pub_ec(struct hsm *h, CK_OBJECT_HANDLE o, EVP_PKEY **out) {
  unsigned char *par = NULL, *pt = NULL;
  size_t pl = 0, ptl = 0, rawl = 0;
  CK_RV rv = attr_get(h, o, CKA_EC_PARAMS, &par, &pl);
  if (rv == CKR_OK) rv = attr_get(h, o, CKA_EC_POINT, &pt, &ptl);
  const char *group = rv == CKR_OK ? ec_group(par, pl) : NULL;
  const unsigned char *raw = rv == CKR_OK ? ec_point_unwrap(pt, ptl, &rawl) : NULL;
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  EVP_PKEY *pk = NULL;
  if (group && raw && bld &&
      OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, raw, rawl))
    pk = pkey_from(bld, "EC");
  OSSL_PARAM_BLD_free(bld);
  free(par);
  free(pt);
  if (rv != CKR_OK) return ckr_to_sg(h, rv);
  *out = pk;
  return pk ? 0 : SG_ECORRUPT;
}

static int pub_from_cert(struct hsm *h, const struct hsm_keyref *ref, EVP_PKEY **out) {
  CK_OBJECT_CLASS c = CKO_CERTIFICATE;
  CK_ATTRIBUTE t[2] = {ATTR(CKA_CLASS, &c, sizeof c), ATTR(CKA_ID, ref->id, ref->id_len)};
  CK_OBJECT_HANDLE *objs = NULL;
  size_t n = 0;
  CK_RV rv = find_all(h, t, 2, &objs, &n);
  if (rv != CKR_OK) return ckr_to_sg(h, rv);
  int rc = SG_ENOTFOUND;
  for (size_t i = 0; i < n && rc != 0; i++) {
    unsigned char *der = NULL;
    size_t dl = 0;
    if (attr_get(h, objs[i], CKA_VALUE, &der, &dl) != CKR_OK) continue;
    const unsigned char *q = der;
    X509 *x = d2i_X509(NULL, &q, (long)dl);
    EVP_PKEY *pk = x ? X509_get_pubkey(x) : NULL;
    if (pk) {
      *out = pk;
      rc = 0;
    }
    X509_free(x);
    free(der);
  }
  free(objs);
  return rc;
}

int hsm_public_key(struct hsm *h, const struct hsm_keyref *ref, EVP_PKEY **pub_out) {
  CK_OBJECT_CLASS c = CKO_PUBLIC_KEY;
  CK_ATTRIBUTE t[2] = {ATTR(CKA_CLASS, &c, sizeof c), ATTR(CKA_ID, ref->id, ref->id_len)};
  CK_OBJECT_HANDLE *objs = NULL;
  size_t n = 0;
  pthread_mutex_lock(&h->mu);
  CK_RV rv = find_all(h, t, 2, &objs, &n);
  int rc = ckr_to_sg(h, rv);
  if (rc == 0 && n > 0) {
    CK_KEY_TYPE kt;
    rv = attr_fixed(h, objs[0], CKA_KEY_TYPE, &kt, sizeof kt);
    if (rv != CKR_OK) rc = ckr_to_sg(h, rv);
    else if (kt == CKK_RSA) rc = pub_rsa(h, objs[0], pub_out);
    else if (kt == CKK_EC) rc = pub_ec(h, objs[0], pub_out);
    else rc = SG_EINVAL;
  } else if (rc == 0) {
    rc = pub_from_cert(h, ref, pub_out);
  }
  pthread_mutex_unlock(&h->mu);
  free(objs);
  return rc;
}

/* ---- URIs ----------------------------------------------------------------- */

void hsm_key_uri(const struct hsm *h, const struct hsm_keyref *ref, char *buf, size_t cap) {
  if (cap == 0) return;
  buf[0] = '\0';
  P11KitUri *uri = p11_kit_uri_new();
  if (uri == NULL) return;
  CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(uri);
  label_pad(ti->label, h->token);
  CK_OBJECT_CLASS c = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE a[3] = {ATTR(CKA_ID, ref->id, ref->id_len),
                       ATTR(CKA_LABEL, ref->label, strlen(ref->label)),
                       ATTR(CKA_CLASS, &c, sizeof c)};
  for (int i = 0; i < 3; i++) (void)p11_kit_uri_set_attribute(uri, &a[i]);
  char *s = NULL;
  if (p11_kit_uri_format(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s) == P11_KIT_URI_OK && s) {
    snprintf(buf, cap, "%s", s);
    free(s);
  }
  p11_kit_uri_free(uri);
}
