/* testutil: the temp folder of one crypto test program and the chores done
 * in it: paths, shell commands, files, PEM certificates, CRLs and keys,
 * base64, a SoftHSM2 token directory.
 *
 * Used by test_verify.c, test_smime.c, test_decrypt.c (both builds),
 * test_pkits.c, test_keycache.c and test_keystore.c; linked as the static
 * library sg_testutil (tests/crypto/CMakeLists.txt).
 *
 * The folder is module state: one at a time per program, made by
 * tu_dir_make (from a group or test setup) and removed by tu_dir_remove,
 * which keeps it when SG_KEEP_TMP is set in the environment, for
 * inspection.  Failures are cmocka assertions, so call these from tests
 * and fixtures that cmocka runs, on the thread that runs them.  Inputs are
 * the tests' own files and fixed vectors, nothing untrusted.  What a
 * function returns (buffers, certificates, keys) is the caller's to free. */
#ifndef SG_TESTS_CRYPTO_TESTUTIL_H
#define SG_TESTS_CRYPTO_TESTUTIL_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Makes the folder /tmp/sg-NAME-XXXXXX (mkdtemp, mode 0700): 0, or -1
 * with the reason on stderr. */
int tu_dir_make(const char *name);

/* The folder's path ("" before tu_dir_make). */
const char *tu_dir(void);

/* Removes the folder and all in it (unless SG_KEEP_TMP is set): 0, or -1.
 * Nothing to do, 0, when no folder is made. */
int tu_dir_remove(void);

/* out = the folder's path / name; asserts that it fits in cap. */
void tu_path(char *out, size_t cap, const char *name);

/* Runs a shell command in the folder (printf-style; `cd DIR && (...)`):
 * its exit status, 0 when it exited 0 (a failure is printed). */
int tu_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes the file name in the folder: n bytes from p, mode 0600 (a PIN
 * file must be private; nothing else in a test folder needs more). */
void tu_write_file(const char *name, const void *p, size_t n);

/* The whole file name in the folder, with a NUL byte after its *n_out
 * bytes.  Caller frees. */
void *tu_read_file(const char *name, size_t *n_out);

/* The same for a file anywhere (path). */
void *tu_read_path(const char *path, size_t *n_out);

/* The PEM certificate, CRL or private key in the file name in the
 * folder.  Caller frees (X509_free, X509_CRL_free, EVP_PKEY_free). */
X509 *tu_load_cert(const char *name);
X509_CRL *tu_load_crl(const char *name);
EVP_PKEY *tu_load_key(const char *name);

/* n bytes of base64 (line breaks allowed), decoded; asserts they are
 * well formed.  Caller frees. */
unsigned char *tu_b64_decode(const char *p, size_t n, size_t *len_out);

/* A throwaway SoftHSM2 setup in the folder: the token directory tokens/,
 * softhsm2.conf naming it, and the PIN file "pin" holding user_pin.  The
 * paths of the configuration and the PIN file go to conf_out and pin_out
 * (each cap bytes). */
void tu_softhsm_files(const char *user_pin, char *conf_out, char *pin_out, size_t cap);

#endif
