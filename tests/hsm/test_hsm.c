/* Component tests for hsm/hsm.c and hsm/hsm_worker.c against a real,
 * throwaway SoftHSM2 token (README "Keys": keys are created sensitive and
 * non-extractable, the PIN file must be private, a remote token server may
 * die and the workers reconnect).
 *
 * Built twice: test_hsm loads SoftHSM2 in this process; with
 * HSM_TEST_REMOTE (test_hsm_remote) the test starts its own `p11-kit
 * server` and goes through p11-kit-client.so.  In-process, one SoftHSM2
 * instance serves the whole process and any C_Finalize ends it for every
 * user, so each test that needs a token opens and closes its own struct
 * hsm and no two are open at once. */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "core/sgerr.h"
#include "hsm/hsm.h"

#define LABEL "sealtest"
#define SO_PIN "87654321"
#define USER_PIN "12345678"

static char dir[64];
static char conf[128], pin_file[128], run_dir[128], address[192];
#ifdef HSM_TEST_REMOTE
static pid_t server_pid;
static unsigned server_gen;
#endif

/* ---- fixture ------------------------------------------------------------- */

static void write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  assert_int_equal(fchmod(fd, mode), 0);
  close(fd);
}

static struct hsm_params inproc_params(void) {
  struct hsm_params p = {.mode = HSM_INPROCESS, .token = LABEL, .pin_file = pin_file,
                         .softhsm_conf = conf};
  return p;
}

static struct hsm_params params(void) {
#ifdef HSM_TEST_REMOTE
  struct hsm_params p = {.mode = HSM_REMOTE, .token = LABEL, .pin_file = pin_file,
                         .server_address = address};
  return p;
#elif defined(HSM_TEST_MODULE)
  /* A module named by path (a real HSM's way): SoftHSM2 again, with the
   * SOFTHSM2_CONF the setup exported. */
  struct hsm_params p = {.mode = HSM_MODULE, .module = HSM_SOFTHSM2_MODULE, .token = LABEL,
                         .pin_file = pin_file};
  return p;
#else
  return inproc_params();
#endif
}

static int rm_rf(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd);
}

/* A token directory of our own: never the system's token store. */
static int make_token_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/sg-hsm-XXXXXX");
  if (mkdtemp(dir) == NULL) return -1;
  char tokens[128], text[512];
  snprintf(tokens, sizeof tokens, "%s/tokens", dir);
  snprintf(conf, sizeof conf, "%s/softhsm2.conf", dir);
  snprintf(pin_file, sizeof pin_file, "%s/pin", dir);
  snprintf(run_dir, sizeof run_dir, "%s/run", dir);
  snprintf(address, sizeof address, "unix:path=%s/current", run_dir);
  if (mkdir(tokens, 0700) != 0 || mkdir(run_dir, 0700) != 0) return -1;
  snprintf(text, sizeof text,
           "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens);
  write_file(conf, text, 0600);
  write_file(pin_file, USER_PIN "\n", 0600);
  setenv("SOFTHSM2_CONF", conf, 1);
  char err[256] = "";
  struct hsm_params p = inproc_params();
  int rc = hsm_token_init(&p, SO_PIN, USER_PIN, err, sizeof err);
  if (rc != 0) fprintf(stderr, "hsm_token_init: %s\n", err);
  return rc;
}

/* ---- the remote token server ------------------------------------------- */

#ifdef HSM_TEST_REMOTE
static bool can_connect(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) return false;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

/* Start `p11-kit server` on RUN/sN.sock in its own process group (so its
 * per-connection children die with it) and point RUN/current at it. */
static int server_start(void) {
  char sock[160], cur[160], tmp[160], name[16];
  snprintf(name, sizeof name, "s%u.sock", ++server_gen);
  snprintf(sock, sizeof sock, "%s/%s", run_dir, name);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setpgid(0, 0);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDOUT_FILENO); /* it prints shell variables */
    setenv("SOFTHSM2_CONF", conf, 1);
    execlp("p11-kit", "p11-kit", "server", "-f", "-n", sock, "-p", HSM_SOFTHSM2_MODULE,
           "pkcs11:token=" LABEL, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid);
  server_pid = pid;
  snprintf(cur, sizeof cur, "%s/current", run_dir);
  snprintf(tmp, sizeof tmp, "%s/current.tmp", run_dir);
  unlink(tmp);
  if (symlink(name, tmp) != 0 || rename(tmp, cur) != 0) return -1;
  for (int i = 0; i < 200; i++) {
    if (can_connect(cur)) return 0;
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static void server_kill(void) {
  if (server_pid <= 0) return;
  kill(-server_pid, SIGTERM);
  waitpid(server_pid, NULL, 0);
  /* The per-connection children are in the group too; give them a moment. */
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
  kill(-server_pid, SIGKILL);
  server_pid = 0;
}
#else
static void server_kill(void) {}
#endif

static int group_setup(void **state) {
  (void)state;
  if (make_token_dir() != 0) return -1;
#ifdef HSM_TEST_REMOTE
  if (server_start() != 0) return -1;
#endif
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  server_kill();
  return rm_rf() == 0 ? 0 : -1;
}

/* Each test that needs the token gets its own open struct hsm. */
static int open_fixture(void **state) {
  struct hsm_params p = params();
  struct hsm *h = NULL;
  char err[256] = "";
  int rc = hsm_open(&p, &h, err, sizeof err);
  if (rc != 0) fprintf(stderr, "hsm_open: %s\n", err);
  *state = h;
  return rc;
}

static int close_fixture(void **state) {
  hsm_close(*state);
  return 0;
}

/* ---- helpers --------------------------------------------------------------- */

static const struct hsm_object *find_obj(const struct hsm_object *o, size_t n,
                                         enum hsm_object_class cls,
                                         const struct hsm_keyref *ref) {
  for (size_t i = 0; i < n; i++)
    if (o[i].cls == cls && o[i].ref.id_len == ref->id_len &&
        memcmp(o[i].ref.id, ref->id, ref->id_len) == 0)
      return &o[i];
  return NULL;
}

static EVP_PKEY *soft_key(const char *alg, const char *arg) {
  EVP_PKEY *k = strcmp(alg, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                                         : EVP_PKEY_Q_keygen(NULL, NULL, "EC", arg);
  assert_non_null(k);
  return k;
}

/* Sign a SHA-256 digest with k (RSA: PKCS#1 v1.5).  Returns the length. */
static size_t sign_digest(EVP_PKEY *k, const unsigned char dg[32], unsigned char *sig,
                          size_t cap) {
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
  assert_non_null(c);
  assert_int_equal(EVP_PKEY_sign_init(c), 1);
  if (EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA) {
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 1);
    assert_int_equal(EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()), 1);
  }
  size_t len = cap;
  int ok = EVP_PKEY_sign(c, sig, &len, dg, 32);
  EVP_PKEY_CTX_free(c);
  return ok == 1 ? len : 0;
}

static int verify_digest(EVP_PKEY *pub, const unsigned char dg[32], const unsigned char *sig,
                         size_t len) {
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pub, NULL);
  assert_non_null(c);
  assert_int_equal(EVP_PKEY_verify_init(c), 1);
  if (EVP_PKEY_is_a(pub, "RSA")) {
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 1);
    assert_int_equal(EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()), 1);
  }
  int ok = EVP_PKEY_verify(c, sig, len, dg, 32);
  EVP_PKEY_CTX_free(c);
  return ok;
}

/* Sign through the worker and verify with pub in software. */
static void sign_and_verify(struct hsm_worker *w, const struct hsm_keyref *ref, EVP_PKEY *pub) {
  unsigned char dg[32], sig[1024];
  for (int i = 0; i < 32; i++) dg[i] = (unsigned char)(i * 7 + 1);
  EVP_PKEY *k = NULL;
  assert_int_equal(hsm_worker_pkey(w, ref, &k), 0);
  size_t len = sign_digest(k, dg, sig, sizeof sig);
  assert_true(len > 0);
  assert_int_equal(verify_digest(pub, dg, sig, len), 1);
}

static EVP_PKEY *token_pub(struct hsm *h, const struct hsm_keyref *ref) {
  EVP_PKEY *pub = NULL;
  assert_int_equal(hsm_public_key(h, ref, &pub), 0);
  assert_non_null(pub);
  return pub;
}

/* A self-signed certificate for key k, as DER (caller frees). */
static unsigned char *self_signed(EVP_PKEY *k, int *len) {
  X509 *x = X509_new();
  assert_non_null(x);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME *n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
  X509_set_issuer_name(x, n);
  X509_set_pubkey(x, k);
  assert_true(X509_sign(x, k, EVP_sha256()) > 0);
  unsigned char *der = NULL;
  *len = i2d_X509(x, &der);
  assert_true(*len > 0);
  X509_free(x);
  return der;
}

/* ---- tests that open nothing ------------------------------------------- */

#ifndef HSM_TEST_REMOTE
static void test_token_init_second_refused(void **state) {
  (void)state;
  struct hsm_params p = inproc_params();
  char err[256] = "";
  assert_int_equal(hsm_token_init(&p, SO_PIN, USER_PIN, err, sizeof err), SG_EEXIST);
  assert_non_null(strstr(err, LABEL));
}
#endif

static void test_open_wrong_pin(void **state) {
  (void)state;
  char bad[160], err[256] = "";
  snprintf(bad, sizeof bad, "%s/badpin", dir);
  write_file(bad, "99999999\n", 0600);
  struct hsm_params p = params();
  p.pin_file = bad;
  struct hsm *h = NULL;
  assert_int_equal(hsm_open(&p, &h, err, sizeof err), SG_EPERM);
  assert_null(h);
  assert_non_null(strstr(err, "wrong PIN for token " LABEL));
  assert_non_null(strstr(err, bad));
}

static void test_open_missing_token(void **state) {
  (void)state;
  struct hsm_params p = params();
  p.token = "nosuchtoken";
  struct hsm *h = NULL;
  char err[256] = "";
  assert_int_equal(hsm_open(&p, &h, err, sizeof err), SG_ENOTFOUND);
  assert_non_null(strstr(err, "token nosuchtoken not found in module "));
}

static void test_open_missing_module(void **state) {
  (void)state;
  struct hsm_params p = inproc_params();
  p.mode = HSM_MODULE;
  p.module = "/nonexistent/libnothing.so";
  struct hsm *h = NULL;
  char err[256] = "";
  assert_int_equal(hsm_open(&p, &h, err, sizeof err), SG_ENOTFOUND);
  assert_non_null(strstr(err, "/nonexistent/libnothing.so"));
}

static void test_pin_file_mode_refused(void **state) {
  (void)state;
  char loose[160], err[256] = "", buf[64];
  snprintf(loose, sizeof loose, "%s/loosepin", dir);
  write_file(loose, USER_PIN "\n", 0644);
  assert_int_equal(hsm_read_secret_file(loose, true, buf, sizeof buf, err, sizeof err),
                   SG_EPERM);
  assert_non_null(strstr(err, "readable by group or others (mode 0644): chmod 600 it"));
  struct hsm_params p = params();
  p.pin_file = loose;
  struct hsm *h = NULL;
  assert_int_equal(hsm_open(&p, &h, err, sizeof err), SG_EPERM);
  /* Not private, but allowed where the caller says so; CR/LF stripped. */
  write_file(loose, "secret\r\nsecond line\n", 0644);
  assert_int_equal(hsm_read_secret_file(loose, false, buf, sizeof buf, err, sizeof err), 0);
  assert_string_equal(buf, "secret");
}

/* ---- admin ---------------------------------------------------------------- */

static void test_keygen_list(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r, e;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "rsa-gen", HSM_KEY_RSA, 2048, &r, err, sizeof err), 0);
  assert_int_equal(hsm_keygen(h, "ec-gen", HSM_KEY_EC, 256, &e, err, sizeof err), 0);
  assert_int_equal(r.id_len, 16);
  struct hsm_object *o = NULL;
  size_t n = 0;
  assert_int_equal(hsm_list(h, &o, &n), 0);
  const struct hsm_object *rp = find_obj(o, n, HSM_OBJ_PRIVATE_KEY, &r);
  const struct hsm_object *ru = find_obj(o, n, HSM_OBJ_PUBLIC_KEY, &r);
  const struct hsm_object *ep = find_obj(o, n, HSM_OBJ_PRIVATE_KEY, &e);
  const struct hsm_object *eu = find_obj(o, n, HSM_OBJ_PUBLIC_KEY, &e);
  assert_true(rp && ru && ep && eu);
  assert_true(rp->sensitive && !rp->extractable && ep->sensitive && !ep->extractable);
  assert_int_equal(rp->key_type, HSM_KEY_RSA);
  assert_int_equal(rp->key_bits, 2048);
  assert_int_equal(ru->key_bits, 2048);
  assert_int_equal(ep->key_type, HSM_KEY_EC);
  assert_int_equal(ep->key_bits, 256);
  assert_int_equal(eu->key_bits, 256);
  assert_string_equal(rp->ref.label, "rsa-gen");
  hsm_objects_free(o, n);
}

static void test_keygen_bad_size(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "x", HSM_KEY_RSA, 1024, &r, err, sizeof err), SG_EINVAL);
  assert_non_null(strstr(err, "2048, 3072 or 4096"));
  assert_int_equal(hsm_keygen(h, "x", HSM_KEY_EC, 521, &r, err, sizeof err), SG_EINVAL);
  assert_non_null(strstr(err, "256 (P-256) or 384 (P-384)"));
}

#ifndef HSM_TEST_REMOTE
/* Raw PKCS#11 on the module the hsm already initialised: find the slot. */
static CK_SESSION_HANDLE raw_session(CK_FUNCTION_LIST *fn) {
  CK_SLOT_ID slots[16];
  CK_ULONG n = 16;
  assert_int_equal(fn->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    if (fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, LABEL " ", 9) == 0) {
      CK_SESSION_HANDLE s;
      assert_int_equal(fn->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                                         NULL, &s),
                       CKR_OK);
      return s;
    }
  }
  fail_msg("token not found");
  return 0;
}

static CK_OBJECT_HANDLE raw_private(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s,
                                    const struct hsm_keyref *ref) {
  CK_OBJECT_CLASS c = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE t[2] = {{CKA_CLASS, &c, sizeof c}, {CKA_ID, (void *)ref->id, ref->id_len}};
  CK_OBJECT_HANDLE o = 0;
  CK_ULONG got = 0;
  assert_int_equal(fn->C_FindObjectsInit(s, t, 2), CKR_OK);
  assert_int_equal(fn->C_FindObjects(s, &o, 1, &got), CKR_OK);
  fn->C_FindObjectsFinal(s);
  assert_int_equal(got, 1);
  return o;
}

/* The claim: nothing, not even the PKCS#11 API, gets the private key out. */
static void test_private_key_stays_inside(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r, e;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "rsa-x", HSM_KEY_RSA, 2048, &r, err, sizeof err), 0);
  assert_int_equal(hsm_keygen(h, "ec-x", HSM_KEY_EC, 256, &e, err, sizeof err), 0);
  CK_FUNCTION_LIST *fn = p11_kit_module_load(HSM_SOFTHSM2_MODULE, P11_KIT_MODULE_UNMANAGED);
  assert_non_null(fn);
  CK_SESSION_HANDLE s = raw_session(fn);
  unsigned char buf[1024];
  CK_ATTRIBUTE a = {CKA_PRIVATE_EXPONENT, buf, sizeof buf};
  assert_int_equal(fn->C_GetAttributeValue(s, raw_private(fn, s, &r), &a, 1),
                   CKR_ATTRIBUTE_SENSITIVE);
  CK_ATTRIBUTE v = {CKA_VALUE, buf, sizeof buf};
  assert_int_equal(fn->C_GetAttributeValue(s, raw_private(fn, s, &e), &v, 1),
                   CKR_ATTRIBUTE_SENSITIVE);
  /* Nor wrapped under a key we choose. */
  CK_ULONG vlen = 32;
  CK_BBOOL t = CK_TRUE;
  CK_ATTRIBUTE at[] = {{CKA_VALUE_LEN, &vlen, sizeof vlen}, {CKA_WRAP, &t, 1}};
  CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0}, wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
  CK_OBJECT_HANDLE aes;
  assert_int_equal(fn->C_GenerateKey(s, &gen, at, 2, &aes), CKR_OK);
  CK_ULONG wl = sizeof buf;
  CK_RV rv = fn->C_WrapKey(s, &wrap, aes, raw_private(fn, s, &r), buf, &wl);
  assert_int_not_equal(rv, CKR_OK);
  wl = sizeof buf;
  rv = fn->C_WrapKey(s, &wrap, aes, raw_private(fn, s, &e), buf, &wl);
  assert_int_not_equal(rv, CKR_OK);
  fn->C_CloseSession(s);
  p11_kit_module_release(fn); /* not finalized: the hsm still uses the module */
}
#endif

static void test_import_and_sign(void **state) {
  struct hsm *h = *state;
  EVP_PKEY *rsa = soft_key("RSA", NULL), *ec = soft_key("EC", "P-256");
  EVP_PKEY *ec384 = soft_key("EC", "P-384");
  struct hsm_keyref rr, er, e3;
  char err[256] = "";
  assert_int_equal(hsm_import_key(h, "rsa-imp", rsa, &rr, err, sizeof err), 0);
  assert_int_equal(hsm_import_key(h, "ec-imp", ec, &er, err, sizeof err), 0);
  assert_int_equal(hsm_import_key(h, "ec384-imp", ec384, &e3, err, sizeof err), 0);
  struct hsm_worker *w = NULL;
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  sign_and_verify(w, &rr, rsa);
  sign_and_verify(w, &er, ec);
  sign_and_verify(w, &e3, ec384);
  /* The token's public half is the imported key's. */
  EVP_PKEY *p = token_pub(h, &rr), *q = token_pub(h, &er);
  assert_int_equal(EVP_PKEY_eq(p, rsa), 1);
  assert_int_equal(EVP_PKEY_eq(q, ec), 1);
  struct hsm_object *o = NULL;
  size_t n = 0;
  assert_int_equal(hsm_list(h, &o, &n), 0);
  const struct hsm_object *ip = find_obj(o, n, HSM_OBJ_PRIVATE_KEY, &rr);
  assert_true(ip && ip->sensitive && !ip->extractable && ip->key_bits == 2048);
  ip = find_obj(o, n, HSM_OBJ_PRIVATE_KEY, &e3);
  assert_true(ip && ip->key_bits == 384);
  hsm_objects_free(o, n);
  EVP_PKEY_free(p);
  EVP_PKEY_free(q);
  hsm_worker_free(w);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(ec);
  EVP_PKEY_free(ec384);
}

static void test_store_cert_list(void **state) {
  struct hsm *h = *state;
  EVP_PKEY *k = soft_key("EC", "P-256");
  struct hsm_keyref r;
  char err[256] = "";
  assert_int_equal(hsm_import_key(h, "with-cert", k, &r, err, sizeof err), 0);
  int len = 0;
  unsigned char *der = self_signed(k, &len);
  assert_int_equal(hsm_store_cert(h, &r, HSM_CERT_ENTITY, der, (size_t)len, err, sizeof err), 0);
  assert_int_equal(hsm_store_cert(h, &r, HSM_CERT_ENTITY, der, 10, err, sizeof err), SG_EINVAL);
  struct hsm_object *o = NULL;
  size_t n = 0;
  assert_int_equal(hsm_list(h, &o, &n), 0);
  const struct hsm_object *c = find_obj(o, n, HSM_OBJ_CERT, &r);
  assert_non_null(c);
  assert_int_equal(c->cert_category, HSM_CERT_ENTITY);
  assert_int_equal(c->der_len, (size_t)len);
  assert_memory_equal(c->der, der, (size_t)len);
  assert_string_equal(c->ref.label, "with-cert");
  hsm_objects_free(o, n);
  OPENSSL_free(der);
  EVP_PKEY_free(k);
}

static void test_delete_all_of_id(void **state) {
  struct hsm *h = *state;
  EVP_PKEY *k = soft_key("RSA", NULL);
  struct hsm_keyref r;
  char err[256] = "";
  assert_int_equal(hsm_import_key(h, "doomed", k, &r, err, sizeof err), 0);
  int len = 0;
  unsigned char *der = self_signed(k, &len);
  assert_int_equal(hsm_store_cert(h, &r, HSM_CERT_ENTITY, der, (size_t)len, err, sizeof err), 0);
  size_t gone = 0;
  assert_int_equal(hsm_delete(h, &r, &gone), 0);
  assert_int_equal(gone, 3);
  struct hsm_object *o = NULL;
  size_t n = 0;
  assert_int_equal(hsm_list(h, &o, &n), 0);
  assert_null(find_obj(o, n, HSM_OBJ_PRIVATE_KEY, &r));
  assert_null(find_obj(o, n, HSM_OBJ_PUBLIC_KEY, &r));
  assert_null(find_obj(o, n, HSM_OBJ_CERT, &r));
  hsm_objects_free(o, n);
  assert_int_equal(hsm_delete(h, &r, &gone), 0); /* missing is not an error */
  assert_int_equal(gone, 0);
  OPENSSL_free(der);
  EVP_PKEY_free(k);
}

static void test_public_key_roundtrip(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r, e;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "pub-rsa", HSM_KEY_RSA, 2048, &r, err, sizeof err), 0);
  assert_int_equal(hsm_keygen(h, "pub-ec", HSM_KEY_EC, 384, &e, err, sizeof err), 0);
  EVP_PKEY *p = token_pub(h, &r), *q = token_pub(h, &e);
  assert_int_equal(EVP_PKEY_get_bits(p), 2048);
  assert_int_equal(EVP_PKEY_get_bits(q), 384);
  /* The public key is the one the private key signs for. */
  struct hsm_worker *w = NULL;
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  sign_and_verify(w, &r, p);
  sign_and_verify(w, &e, q);
  hsm_worker_free(w);
  EVP_PKEY_free(p);
  EVP_PKEY_free(q);
  struct hsm_keyref none = {.label = "none", .id = {1, 2, 3}, .id_len = 3};
  EVP_PKEY *x = NULL;
  assert_int_equal(hsm_public_key(h, &none, &x), SG_ENOTFOUND);
}

static void test_key_uri(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r = {.label = "org", .id = {0x0a, 0x1b}, .id_len = 2};
  char uri[512];
  hsm_key_uri(h, &r, uri, sizeof uri);
  assert_non_null(strstr(uri, "pkcs11:"));
  assert_non_null(strstr(uri, "token=" LABEL));
  assert_non_null(strstr(uri, "id=%0a%1b") ? "ok" : strstr(uri, "id=%0A%1B"));
  assert_non_null(strstr(uri, "object=org"));
  assert_non_null(strstr(uri, "type=private"));
  assert_null(strstr(uri, "pin"));
  char small[8];
  hsm_key_uri(h, &r, small, sizeof small);
  assert_int_equal(strlen(small), 7);
}

/* Encrypt in software with the public key, decrypt through the worker. */
static void rsa_decrypt_check(struct hsm_worker *w, const struct hsm_keyref *r, EVP_PKEY *pub) {
  const unsigned char msg[] = "a content-encryption key";
  unsigned char ct[512], pt[512];
  size_t ctl = sizeof ct, ptl = sizeof pt;
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pub, NULL);
  assert_int_equal(EVP_PKEY_encrypt_init(c), 1);
  assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 1);
  assert_int_equal(EVP_PKEY_encrypt(c, ct, &ctl, msg, sizeof msg), 1);
  EVP_PKEY_CTX_free(c);
  EVP_PKEY *k = NULL;
  assert_int_equal(hsm_worker_pkey(w, r, &k), 0);
  c = EVP_PKEY_CTX_new(k, NULL);
  assert_int_equal(EVP_PKEY_decrypt_init(c), 1);
  assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 1);
  assert_int_equal(EVP_PKEY_decrypt(c, pt, &ptl, ct, ctl), 1);
  EVP_PKEY_CTX_free(c);
  assert_int_equal(ptl, sizeof msg);
  assert_memory_equal(pt, msg, sizeof msg);
}

static void test_worker_rsa_sign_decrypt(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "rsa-w", HSM_KEY_RSA, 2048, &r, err, sizeof err), 0);
  EVP_PKEY *pub = token_pub(h, &r);
  struct hsm_worker *w = NULL;
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  sign_and_verify(w, &r, pub);
  rsa_decrypt_check(w, &r, pub);
  assert_int_equal(hsm_worker_check(w), 0);
  struct hsm_keyref none = {.label = "none", .id = {9}, .id_len = 1};
  EVP_PKEY *k = NULL;
  assert_int_equal(hsm_worker_pkey(w, &none, &k), SG_ENOTFOUND);
  hsm_worker_free(w);
  EVP_PKEY_free(pub);
}

static void test_worker_ec_sign(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref e;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "ec-w", HSM_KEY_EC, 256, &e, err, sizeof err), 0);
  EVP_PKEY *pub = token_pub(h, &e);
  struct hsm_worker *w = NULL;
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  sign_and_verify(w, &e, pub);
  hsm_worker_free(w);
  EVP_PKEY_free(pub);
}

#ifndef HSM_TEST_REMOTE
/* ECDH with the token key equals ECDH computed in software from the other
 * side (the p11-kit RPC does not forward derive, so in-process only). */
static void test_worker_ec_derive(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref e;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "ec-dh", HSM_KEY_EC, 256, &e, err, sizeof err), 0);
  EVP_PKEY *tpub = token_pub(h, &e), *peer = soft_key("EC", "P-256");
  struct hsm_worker *w = NULL;
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  EVP_PKEY *k = NULL;
  assert_int_equal(hsm_worker_pkey(w, &e, &k), 0);
  unsigned char s1[64], s2[64];
  size_t l1 = sizeof s1, l2 = sizeof s2;
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
  assert_int_equal(EVP_PKEY_derive_init(c), 1);
  assert_int_equal(EVP_PKEY_derive_set_peer(c, peer), 1);
  assert_int_equal(EVP_PKEY_derive(c, s1, &l1), 1);
  EVP_PKEY_CTX_free(c);
  c = EVP_PKEY_CTX_new(peer, NULL);
  assert_int_equal(EVP_PKEY_derive_init(c), 1);
  assert_int_equal(EVP_PKEY_derive_set_peer(c, tpub), 1);
  assert_int_equal(EVP_PKEY_derive(c, s2, &l2), 1);
  EVP_PKEY_CTX_free(c);
  assert_int_equal(l1, 32);
  assert_int_equal(l1, l2);
  assert_memory_equal(s1, s2, l1);
  hsm_worker_free(w);
  EVP_PKEY_free(tpub);
  EVP_PKEY_free(peer);
}

/* A key created after the shared context was built is still found, and
 * keys found before it keep working (libp11 re-enumerates on a miss). */
static void test_worker_finds_new_key(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref a, b;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "early", HSM_KEY_RSA, 2048, &a, err, sizeof err), 0);
  struct hsm_worker *w = NULL;
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  EVP_PKEY *pa = token_pub(h, &a);
  sign_and_verify(w, &a, pa);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(hsm_keygen(h, "late", HSM_KEY_EC, 256, &b, err, sizeof err), 0);
    EVP_PKEY *pb = token_pub(h, &b);
    sign_and_verify(w, &b, pb);
    EVP_PKEY_free(pb);
  }
  sign_and_verify(w, &a, pa);
  hsm_worker_free(w);
  EVP_PKEY_free(pa);
}
#endif

struct signer {
  struct hsm *h;
  const struct hsm_keyref *ref;
  EVP_PKEY *pub;
  int ok;
};

static void *sign_loop(void *arg) {
  struct signer *s = arg;
  struct hsm_worker *w = NULL;
  char err[256];
  if (hsm_worker_new(s->h, &w, err, sizeof err) != 0) return NULL;
  unsigned char dg[32], sig[512];
  for (int i = 0; i < 200; i++) {
    memset(dg, i, sizeof dg);
    EVP_PKEY *k = NULL;
    if (hsm_worker_pkey(w, s->ref, &k) != 0) break;
    size_t len = sign_digest(k, dg, sig, sizeof sig);
    if (len > 0 && verify_digest(s->pub, dg, sig, len) == 1) s->ok++;
  }
  hsm_worker_free(w);
  return NULL;
}

static void test_workers_concurrent(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "busy", HSM_KEY_RSA, 2048, &r, err, sizeof err), 0);
  EVP_PKEY *pub = token_pub(h, &r);
  struct signer s[2] = {{h, &r, pub, 0}, {h, &r, pub, 0}};
  pthread_t t[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, sign_loop, &s[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  assert_int_equal(s[0].ok, 200);
  assert_int_equal(s[1].ok, 200);
  EVP_PKEY_free(pub);
}

#ifdef HSM_TEST_REMOTE
/* The server dies: signing fails, the check says "retry later", opening
 * anew says unreachable; a new server behind the same address brings the
 * worker back with a new generation. */
static void test_remote_server_restart(void **state) {
  struct hsm *h = *state;
  struct hsm_keyref r;
  char err[256] = "";
  assert_int_equal(hsm_keygen(h, "phoenix", HSM_KEY_RSA, 2048, &r, err, sizeof err), 0);
  EVP_PKEY *pub = token_pub(h, &r);
  struct hsm_worker *w = NULL;
  assert_int_equal(hsm_worker_new(h, &w, err, sizeof err), 0);
  sign_and_verify(w, &r, pub);
  unsigned gen = hsm_worker_generation(w);
  assert_int_equal(hsm_worker_check(w), 0);

  server_kill();
  unsigned char dg[32] = {1}, sig[512];
  EVP_PKEY *k = NULL;
  assert_int_equal(hsm_worker_pkey(w, &r, &k), 0); /* cached handle, dead connection */
  assert_int_equal(sign_digest(k, dg, sig, sizeof sig), 0);
  assert_int_equal(hsm_worker_check(w), SG_ETEMP);
  assert_int_equal(hsm_worker_pkey(w, &r, &k), SG_ETEMP); /* still down */
  struct hsm_params p = params();
  struct hsm *h2 = NULL;
  assert_int_equal(hsm_open(&p, &h2, err, sizeof err), SG_ETEMP);
  assert_non_null(strstr(err, "unreachable"));

  assert_int_equal(server_start(), 0);
  sign_and_verify(w, &r, pub);
  assert_true(hsm_worker_generation(w) > gen);
  assert_int_equal(hsm_worker_check(w), 0);
  hsm_worker_free(w);
  EVP_PKEY_free(pub);
}
#endif

#define T(f) cmocka_unit_test(f)
#define TH(f) cmocka_unit_test_setup_teardown(f, open_fixture, close_fixture)

int main(void) {
  /* p11-kit-client writes to the server socket without MSG_NOSIGNAL: after
   * the server dies the next call would kill us with SIGPIPE.  The daemon
   * ignores SIGPIPE for the same reason. */
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
#ifndef HSM_TEST_REMOTE
      T(test_token_init_second_refused),
#endif
      T(test_open_missing_module),
      T(test_open_wrong_pin),
      T(test_open_missing_token),
      T(test_pin_file_mode_refused),
      TH(test_keygen_list),
      TH(test_keygen_bad_size),
#ifndef HSM_TEST_REMOTE
      TH(test_private_key_stays_inside),
      TH(test_worker_ec_derive),
      TH(test_worker_finds_new_key),
#endif
      TH(test_import_and_sign),
      TH(test_store_cert_list),
      TH(test_delete_all_of_id),
      TH(test_public_key_roundtrip),
      TH(test_key_uri),
      TH(test_worker_rsa_sign_decrypt),
      TH(test_worker_ec_sign),
      TH(test_workers_concurrent),
#ifdef HSM_TEST_REMOTE
      TH(test_remote_server_restart),
#endif
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
