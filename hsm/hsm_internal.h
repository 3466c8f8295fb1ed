/*
 * hsm_internal - what hsm.c (admin side, raw PKCS#11 through p11-kit) and
 * hsm_worker.c (private-key operations through libp11) share.  Private to
 * hsm/: nothing else includes it.
 *
 * struct hsm is defined here so the worker side can read the PIN, the
 * module path and the token label, and can keep the in-process shared
 * libp11 context under the same mutex that serialises admin calls.  The
 * PKCS#11 handles are kept as plain unsigned long / void * so this header
 * needs neither pkcs11.h (whose compatibility macros rename common words
 * such as "count" and "value") nor libp11.h.
 */
#ifndef SEALGATE_HSM_INTERNAL_H
#define SEALGATE_HSM_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>

#include "hsm/hsm.h"

#define HSM__PIN_MAX 256  /* PKCS#11 PINs are short; SoftHSM2 allows 255 */
#define HSM__ADDR_MAX 512 /* "unix:path=" plus a path */

struct hsm__shared; /* hsm_worker.c: the one libp11 context of in-process modes */

struct hsm {
  enum hsm_mode mode;
  pthread_mutex_t mu; /* admin calls; building libp11 contexts and keys */
  void *fn;           /* CK_FUNCTION_LIST *, from p11_kit_module_load */
  unsigned long session;
  unsigned long slot;
  bool logged_in;
  char token[33]; /* the label, as configured (at most 32 bytes) */
  char module_path[PATH_MAX];
  char server_address[HSM__ADDR_MAX];
  char pin[HSM__PIN_MAX];
  struct hsm__shared *shared; /* NULL until the first in-process worker */
};

/* hsm_worker.c: unload the shared libp11 context and free its keys.  Called
 * by hsm_close() before the admin side logs out and finalizes. */
void hsm_worker__shared_free(struct hsm *h);

/* hsm_worker.c: remote mode, true if the token server's socket (the
 * "unix:path=" address) accepts a connection now. */
bool hsm__server_accepts(const struct hsm *h);

#endif
