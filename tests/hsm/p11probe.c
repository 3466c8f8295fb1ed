/*
 * p11probe - tries to get a private key's material out of a PKCS#11 token
 * the way a compromised gateway could (README "Keys": token keys are
 * sensitive and not extractable, so holding the PIN and a session must
 * still not be enough to copy a key).  Used by
 * tests/integration/test_hsm_isolation.py from the gateway's uid, against
 * the remote token (p11-kit-client.so) and against SoftHSM2 in process.
 *
 *   p11probe MODULE TOKEN_LABEL PIN_FILE KEY_LABEL
 *
 * The caller sets SOFTHSM2_CONF or P11_KIT_SERVER_ADDRESS for the module.
 * For every private key labelled KEY_LABEL it tries, printing one line each:
 *   1. C_GetAttributeValue of the secret parts (RSA: CKA_PRIVATE_EXPONENT,
 *      CKA_PRIME_1, CKA_PRIME_2; EC: CKA_VALUE);
 *   2. C_WrapKey under a session AES-256 key it generates
 *      (CKM_AES_KEY_WRAP_PAD, or CKM_AES_CBC_PAD with a zero IV where the
 *      module or the RPC lacks key wrap);
 *   3. C_SetAttributeValue CKA_EXTRACTABLE=true, then CKA_SENSITIVE=false
 *      (either would open the way to 1 or 2).
 * Exit 0 only if all were refused ("probe: all extraction attempts
 * refused"), 1 if any returned key material or changed the key, 2 on
 * usage or setup errors (no module, wrong PIN, no such key, no AES key to
 * wrap with: a probe that could not try is not a pass).
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#define MAX_KEYS 16

static CK_FUNCTION_LIST *fn;

static const char *rv_name(CK_RV rv) {
  switch (rv) {
  case CKR_OK: return "CKR_OK";
  case CKR_ATTRIBUTE_SENSITIVE: return "CKR_ATTRIBUTE_SENSITIVE";
  case CKR_ATTRIBUTE_READ_ONLY: return "CKR_ATTRIBUTE_READ_ONLY";
  case CKR_ATTRIBUTE_TYPE_INVALID: return "CKR_ATTRIBUTE_TYPE_INVALID";
  case CKR_ATTRIBUTE_VALUE_INVALID: return "CKR_ATTRIBUTE_VALUE_INVALID";
  case CKR_KEY_UNEXTRACTABLE: return "CKR_KEY_UNEXTRACTABLE";
  case CKR_KEY_NOT_WRAPPABLE: return "CKR_KEY_NOT_WRAPPABLE";
  case CKR_KEY_TYPE_INCONSISTENT: return "CKR_KEY_TYPE_INCONSISTENT";
  case CKR_MECHANISM_INVALID: return "CKR_MECHANISM_INVALID";
  case CKR_MECHANISM_PARAM_INVALID: return "CKR_MECHANISM_PARAM_INVALID";
  case CKR_ACTION_PROHIBITED: return "CKR_ACTION_PROHIBITED";
  case CKR_FUNCTION_NOT_SUPPORTED: return "CKR_FUNCTION_NOT_SUPPORTED";
  case CKR_FUNCTION_FAILED: return "CKR_FUNCTION_FAILED";
  case CKR_GENERAL_ERROR: return "CKR_GENERAL_ERROR";
  case CKR_DEVICE_ERROR: return "CKR_DEVICE_ERROR";
  case CKR_TEMPLATE_INCONSISTENT: return "CKR_TEMPLATE_INCONSISTENT";
  case CKR_PIN_INCORRECT: return "CKR_PIN_INCORRECT";
  case CKR_USER_ALREADY_LOGGED_IN: return "CKR_USER_ALREADY_LOGGED_IN";
  case CKR_BUFFER_TOO_SMALL: return "CKR_BUFFER_TOO_SMALL";
  case CKR_WRAPPING_KEY_TYPE_INCONSISTENT: return "CKR_WRAPPING_KEY_TYPE_INCONSISTENT";
  case CKR_DEVICE_REMOVED: return "CKR_DEVICE_REMOVED";
  case CKR_TOKEN_NOT_PRESENT: return "CKR_TOKEN_NOT_PRESENT";
  default: break;
  }
  static char buf[32];
  snprintf(buf, sizeof buf, "CKR 0x%lx", (unsigned long)rv);
  return buf;
}

/* Mechanism refusals: the token (or the RPC in front of it) cannot even
 * try, which keeps the key in as surely as a refusal of the key itself. */
static bool mech_unsupported(CK_RV rv) {
  return rv == CKR_MECHANISM_INVALID || rv == CKR_MECHANISM_PARAM_INVALID ||
         rv == CKR_FUNCTION_NOT_SUPPORTED;
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "p11probe: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  return 2;
}

static bool read_pin(const char *path, char *pin, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  bool ok = fgets(pin, (int)cap, f) != NULL;
  fclose(f);
  if (ok) pin[strcspn(pin, "\r\n")] = '\0';
  return ok && pin[0];
}

/* 1: read the secret attributes, one at a time into a real buffer (a
 * length query alone could hide a module that hands out the bytes). */
static int try_read(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_KEY_TYPE kt) {
  static const struct {
    CK_ATTRIBUTE_TYPE type;
    const char *name;
  } rsa[] = {{CKA_PRIVATE_EXPONENT, "CKA_PRIVATE_EXPONENT"},
             {CKA_PRIME_1, "CKA_PRIME_1"},
             {CKA_PRIME_2, "CKA_PRIME_2"}},
    ec[] = {{CKA_VALUE, "CKA_VALUE"}};
  int leaks = 0;
  size_t n = kt == CKK_RSA ? sizeof rsa / sizeof *rsa : sizeof ec / sizeof *ec;
  for (size_t i = 0; i < n; i++) {
    CK_ATTRIBUTE_TYPE type = kt == CKK_RSA ? rsa[i].type : ec[i].type;
    const char *name = kt == CKK_RSA ? rsa[i].name : ec[i].name;
    unsigned char buf[4096];
    CK_ATTRIBUTE a = {type, buf, sizeof buf};
    CK_RV rv = fn->C_GetAttributeValue(s, key, &a, 1);
    if (rv == CKR_OK && a.ulValueLen != CK_UNAVAILABLE_INFORMATION && a.ulValueLen > 0) {
      printf("probe: read %s: GOT %lu BYTES OF KEY MATERIAL\n", name, (unsigned long)a.ulValueLen);
      leaks++;
    } else {
      printf("probe: read %s: refused (%s%s)\n", name, rv_name(rv),
             a.ulValueLen == CK_UNAVAILABLE_INFORMATION ? ", length unavailable" : "");
    }
  }
  return leaks;
}

/* 2: wrap the key under a session AES key of our own.  Returns the number
 * of leaks, or -1 if no wrapping key could be made. */
static int try_wrap(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_ULONG len = 32;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &kt, sizeof kt},
                         {CKA_VALUE_LEN, &len, sizeof len}, {CKA_TOKEN, &no, sizeof no},
                         {CKA_WRAP, &yes, sizeof yes},      {CKA_ENCRYPT, &yes, sizeof yes}};
  CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
  CK_OBJECT_HANDLE wk = CK_INVALID_HANDLE;
  CK_RV rv = fn->C_GenerateKey(s, &gen, tmpl, sizeof tmpl / sizeof *tmpl, &wk);
  if (rv != CKR_OK) {
    printf("probe: wrap: cannot generate a session AES-256 key to wrap with (%s): not attempted\n",
           rv_name(rv));
    return -1;
  }
  unsigned char iv[16] = {0}, out[8192];
  struct {
    CK_MECHANISM m;
    const char *name;
  } tries[] = {{{CKM_AES_KEY_WRAP_PAD, NULL, 0}, "CKM_AES_KEY_WRAP_PAD"},
               {{CKM_AES_CBC_PAD, iv, sizeof iv}, "CKM_AES_CBC_PAD"}};
  int leaks = 0;
  for (size_t i = 0; i < sizeof tries / sizeof *tries; i++) {
    CK_ULONG outlen = sizeof out;
    rv = fn->C_WrapKey(s, &tries[i].m, wk, key, out, &outlen);
    if (rv == CKR_OK) {
      printf("probe: wrap with %s: GOT %lu BYTES OF WRAPPED KEY\n", tries[i].name, (unsigned long)outlen);
      leaks++;
      break;
    }
    if (mech_unsupported(rv)) {
      /* Not a statement about the key: try the next mechanism. */
      printf("probe: wrap with %s: refused, mechanism unsupported (%s)%s\n", tries[i].name, rv_name(rv),
             i + 1 < sizeof tries / sizeof *tries ? "; trying the next" : "");
      continue;
    }
    printf("probe: wrap with %s: refused (%s)\n", tries[i].name, rv_name(rv));
    break;
  }
  fn->C_DestroyObject(s, wk);
  return leaks;
}

/* 3: loosen the key's protection. */
static int try_loosen(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key) {
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  struct {
    CK_ATTRIBUTE a;
    const char *name;
  } tries[] = {{{CKA_EXTRACTABLE, &yes, sizeof yes}, "CKA_EXTRACTABLE=true"},
               {{CKA_SENSITIVE, &no, sizeof no}, "CKA_SENSITIVE=false"}};
  int leaks = 0;
  for (size_t i = 0; i < sizeof tries / sizeof *tries; i++) {
    CK_RV rv = fn->C_SetAttributeValue(s, key, &tries[i].a, 1);
    if (rv == CKR_OK) {
      printf("probe: set %s: ACCEPTED (the key can now be taken out)\n", tries[i].name);
      leaks++;
    } else {
      printf("probe: set %s: refused (%s)\n", tries[i].name, rv_name(rv));
    }
  }
  return leaks;
}

static bool get_bool(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_ATTRIBUTE_TYPE t, CK_BBOOL *out) {
  CK_ATTRIBUTE a = {t, out, sizeof *out};
  return fn->C_GetAttributeValue(s, key, &a, 1) == CKR_OK;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: p11probe MODULE TOKEN_LABEL PIN_FILE KEY_LABEL\n");
    return 2;
  }
  const char *module = argv[1], *token = argv[2], *pin_file = argv[3], *label = argv[4];
  char pin[256];
  if (strlen(token) > 32) return usage_error("token label longer than 32 bytes: %s", token);
  if (!read_pin(pin_file, pin, sizeof pin)) return usage_error("cannot read a PIN from %s", pin_file);

  void *dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
  if (!dl) return usage_error("cannot load module: %s", dlerror());
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
  if (!get || get(&fn) != CKR_OK) return usage_error("no C_GetFunctionList in %s", module);
  CK_C_INITIALIZE_ARGS init;
  memset(&init, 0, sizeof init);
  init.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = fn->C_Initialize(&init);
  if (rv != CKR_OK) return usage_error("C_Initialize failed: %s", rv_name(rv));

  CK_SLOT_ID slots[32], slot = 0;
  CK_ULONG nslots = 32;
  bool found = false;
  unsigned char want[32];
  memset(want, ' ', sizeof want);
  memcpy(want, token, strlen(token));
  if ((rv = fn->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK)
    return usage_error("C_GetSlotList failed: %s", rv_name(rv));
  for (CK_ULONG i = 0; i < nslots && !found; i++) {
    CK_TOKEN_INFO ti;
    if (fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, want, 32) == 0) {
      slot = slots[i];
      found = true;
    }
  }
  if (!found) return usage_error("token %s not found", token);
  CK_SESSION_HANDLE s;
  if ((rv = fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s)) != CKR_OK)
    return usage_error("C_OpenSession failed: %s", rv_name(rv));
  rv = fn->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
  memset(pin, 0, sizeof pin);
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) return usage_error("C_Login failed: %s", rv_name(rv));

  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE q[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}};
  CK_OBJECT_HANDLE keys[MAX_KEYS];
  CK_ULONG nkeys = 0;
  if ((rv = fn->C_FindObjectsInit(s, q, 2)) != CKR_OK || (rv = fn->C_FindObjects(s, keys, MAX_KEYS, &nkeys)) != CKR_OK)
    return usage_error("C_FindObjects failed: %s", rv_name(rv));
  fn->C_FindObjectsFinal(s);
  if (nkeys == 0) return usage_error("no private key labelled %s", label);

  int leaks = 0;
  bool untried = false;
  for (CK_ULONG i = 0; i < nkeys; i++) {
    CK_KEY_TYPE kt = 0;
    CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof kt};
    CK_BBOOL sens = CK_FALSE, extr = CK_TRUE;
    if (fn->C_GetAttributeValue(s, keys[i], &a, 1) != CKR_OK || (kt != CKK_RSA && kt != CKK_EC))
      return usage_error("private key %s is neither RSA nor EC", label);
    bool have = get_bool(s, keys[i], CKA_SENSITIVE, &sens) && get_bool(s, keys[i], CKA_EXTRACTABLE, &extr);
    printf("probe: private key '%s' #%lu (%s) via %s: CKA_SENSITIVE=%s CKA_EXTRACTABLE=%s\n", label,
           (unsigned long)i + 1, kt == CKK_RSA ? "RSA" : "EC", module, have ? (sens ? "true" : "false") : "?",
           have ? (extr ? "true" : "false") : "?");
    leaks += try_read(s, keys[i], kt);
    int w = try_wrap(s, keys[i]);
    if (w < 0) untried = true;
    else leaks += w;
    leaks += try_loosen(s, keys[i]);
    /* Loosening may have "worked" without effect: read again to be sure. */
    if (leaks) leaks += try_read(s, keys[i], kt);
  }
  fn->C_CloseSession(s);
  fn->C_Finalize(NULL);
  if (leaks) {
    printf("probe: KEY MATERIAL OBTAINABLE (%d attempt(s) succeeded)\n", leaks);
    return 1;
  }
  if (untried) {
    printf("probe: some attempts could not be made (see above)\n");
    return 2;
  }
  printf("probe: all extraction attempts refused\n");
  return 0;
}
