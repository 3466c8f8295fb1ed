/* testutil: the temp folder of a crypto test program and the chores done
 * in it (see testutil.h). */
#include "testutil.h"

#include <openssl/pem.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[64];

int tu_dir_make(const char *name) {
  snprintf(dir, sizeof dir, "/tmp/sg-%s-XXXXXX", name);
  if (mkdtemp(dir) != NULL) return 0;
  perror(dir);
  dir[0] = '\0';
  return -1;
}

const char *tu_dir(void) { return dir; }

int tu_dir_remove(void) {
  if (dir[0] == '\0') return 0;
  if (getenv("SG_KEEP_TMP") != NULL) {
    fprintf(stderr, "SG_KEEP_TMP: kept %s\n", dir);
    dir[0] = '\0';
    return 0;
  }
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  dir[0] = '\0';
  return system(cmd) == 0 ? 0 : -1;
}

void tu_path(char *out, size_t cap, const char *name) {
  int n = snprintf(out, cap, "%s/%s", dir, name);
  assert_true(n > 0 && (size_t)n < cap);
}

int tu_run(const char *fmt, ...) {
  char cmd[8192];
  int n = snprintf(cmd, sizeof cmd, "cd '%s' && (", dir);
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
  va_end(ap);
  /* A cut command could fail, or pass, for the wrong reason. */
  assert_true((size_t)n + 2 < sizeof cmd);
  strcat(cmd, ")");
  int st = system(cmd);
  if (st != 0) fprintf(stderr, "command failed (%d): %s\n", st, cmd);
  return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

void tu_write_file(const char *name, const void *p, size_t n) {
  char f[256];
  tu_path(f, sizeof f, name);
  int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(fchmod(fd, 0600), 0); /* the file may have been there */
  FILE *fp = fdopen(fd, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(p, 1, n, fp), n);
  assert_int_equal(fclose(fp), 0);
}

void *tu_read_path(const char *path, size_t *n_out) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  size_t len = 0, cap = 65536;
  char *b = malloc(cap + 1);
  assert_non_null(b);
  size_t n;
  while ((n = fread(b + len, 1, cap - len, fp)) > 0) {
    len += n;
    if (len == cap) {
      cap *= 2;
      b = realloc(b, cap + 1);
      assert_non_null(b);
    }
  }
  assert_int_equal(ferror(fp), 0);
  fclose(fp);
  b[len] = '\0';
  *n_out = len;
  return b;
}

void *tu_read_file(const char *name, size_t *n_out) {
  char f[256];
  tu_path(f, sizeof f, name);
  return tu_read_path(f, n_out);
}

/* The file name in the folder, open for reading. */
static FILE *open_in_dir(const char *name) {
  char f[256];
  tu_path(f, sizeof f, name);
  FILE *fp = fopen(f, "r");
  assert_non_null(fp);
  return fp;
}

/* Closes fp; what was read from it, which must be there. */
static void *read_from(FILE *fp, void *obj) {
  fclose(fp);
  assert_non_null(obj);
  return obj;
}

X509 *tu_load_cert(const char *name) {
  FILE *fp = open_in_dir(name);
  return read_from(fp, PEM_read_X509(fp, NULL, NULL, NULL));
}

X509_CRL *tu_load_crl(const char *name) {
  FILE *fp = open_in_dir(name);
  return read_from(fp, PEM_read_X509_CRL(fp, NULL, NULL, NULL));
}

EVP_PKEY *tu_load_key(const char *name) {
  FILE *fp = open_in_dir(name);
  return read_from(fp, PEM_read_PrivateKey(fp, NULL, NULL, NULL));
}

unsigned char *tu_b64_decode(const char *p, size_t n, size_t *len_out) {
  unsigned char *der = malloc(n + 1);
  assert_non_null(der);
  EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
  assert_non_null(ctx);
  int a = 0, b = 0;
  EVP_DecodeInit(ctx);
  assert_true(EVP_DecodeUpdate(ctx, der, &a, (const unsigned char *)p, (int)n) >= 0);
  assert_int_equal(EVP_DecodeFinal(ctx, der + a, &b), 1);
  EVP_ENCODE_CTX_free(ctx);
  *len_out = (size_t)(a + b);
  return der;
}

void tu_softhsm_files(const char *user_pin, char *conf_out, char *pin_out, size_t cap) {
  char tokens[128], text[512], pin_line[64];
  tu_path(tokens, sizeof tokens, "tokens");
  tu_path(conf_out, cap, "softhsm2.conf");
  tu_path(pin_out, cap, "pin");
  assert_int_equal(mkdir(tokens, 0700), 0);
  int n = snprintf(text, sizeof text, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
                   tokens);
  tu_write_file("softhsm2.conf", text, (size_t)n);
  n = snprintf(pin_line, sizeof pin_line, "%s\n", user_pin);
  assert_true(n > 0 && (size_t)n < sizeof pin_line);
  tu_write_file("pin", pin_line, (size_t)n);
}
