/* harvest_put - a test helper, not installed: files one PEM certificate as
 * a harvested key in a key store folder, as the daemon's harvesting would
 * (keystore_harvest_put), so that integration tests can drive
 * `sealctl harvested ...` and `sealctl alerts list` without mail.
 *
 *   harvest_put DIR KEY CERT.pem [--now UNIX_TIME] [--updated-keys]
 *               [--caps N] [--max-bytes N]
 *
 * Prints the outcome (added, same, replaced, held, alert) and the number
 * of keys evicted ("held evicted=0").  Exit 0, 1 on a refused put, 2 on
 * bad usage.  Trusts its arguments: test code only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/pem.h>

#include "core/sgerr.h"
#include "crypto/keystore.h"

static int usage(void) {
  fprintf(stderr, "usage: harvest_put DIR KEY CERT.pem [--now T] [--updated-keys] [--caps N] [--max-bytes N]\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 4) return usage();
  time_t now = time(NULL);
  unsigned caps = 0;
  struct keystore_harvest_opts o = {false, 0, false};
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "--updated-keys") == 0) o.updated_keys = true;
    else if (i + 1 >= argc) return usage();
    else if (strcmp(argv[i], "--now") == 0) now = (time_t)strtoll(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--caps") == 0) caps = (unsigned)strtoul(argv[++i], NULL, 0);
    else if (strcmp(argv[i], "--max-bytes") == 0) o.max_bytes = (size_t)strtoull(argv[++i], NULL, 10);
    else return usage();
  }
  FILE *f = fopen(argv[3], "r");
  X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  if (!x) {
    fprintf(stderr, "harvest_put: %s: no PEM certificate\n", argv[3]);
    return 1;
  }
  static const char *names[] = {"added", "same", "replaced", "held", "alert"};
  struct keystore *ks;
  char err[512] = "";
  enum keystore_harvest_outcome out = KEYSTORE_HARVEST_ADDED;
  size_t evicted = 0;
  int rc = keystore_open(argv[1], true, &ks, err, sizeof err);
  if (rc == 0) {
    rc = keystore_harvest_put(ks, argv[2], x, caps, now, &o, &out, &evicted, err, sizeof err);
    keystore_close(ks);
  }
  X509_free(x);
  if (rc) {
    fprintf(stderr, "harvest_put: %s\n", err);
    return 1;
  }
  printf("%s evicted=%zu\n", names[out], evicted);
  return 0;
}
