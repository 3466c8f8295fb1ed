/*
 * fuzz_incoming - libFuzzer target for the incoming S/MIME path:
 * crypto/incoming.c's layer detection (multipart/signed, pkcs7-mime),
 * base64, the CMS parsers behind verify_detached / verify_opaque and
 * decrypt_cms, the result header and the composition of what is
 * delivered, on any bytes an SMTP client could send.
 *
 * No token and no anchors: decryption finds no matching key (no key work
 * is ever attempted) and every signer is untrusted, which still runs the
 * whole parsing and signature path.  The result must be DONE (only a
 * token outage may say TEMP, and there is no token), its message must
 * start with our Authentication-Results field, and nothing may leak
 * (LSan) or overrun (ASan).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/incoming.h"
#include "crypto/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len) {
  static int ready;
  if (!ready) {
    mime_init();
    ready = 1;
  }
  static const struct config_flow_policy flow = {.name = "fuzz", .smime_decrypt_verify = true, .keep_signature = false};
  struct incoming_request rq = {.flow = &flow, .hostname = "gw.fuzz.example", .data = (const char *)in, .len = len,
                                .now = 1767225600};
  struct incoming_result res;
  incoming_process(NULL, &rq, &res);
  static const char head[] = "Authentication-Results: gw.fuzz.example;";
  if (res.status != INCOMING_DONE || res.out.len < sizeof head - 1 || memcmp(res.out.data, head, sizeof head - 1) != 0)
    abort();
  incoming_result_free(&res);
  return 0;
}
