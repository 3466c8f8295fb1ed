/*
 * fuzz_filter - libFuzzer target for core/filter.c.
 *
 * The bytes (cut at the first NUL, as a config string would be) are
 * compiled as a message-filter program, as a condition and as one action.
 * Each must either succeed or fail with one of the documented codes and a
 * message that names a line and a column; whatever compiles is evaluated
 * against a fixed message with every callback set, and freed.  ASan, UBSan
 * and LSan run with the fuzzer, so a crash, undefined behaviour or leak is
 * kept as a finding; a broken promise aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"
#include "core/sgerr.h"

static const char *hdr(void *arg, const char *name, size_t index, size_t *len) {
  (void)arg;
  static const char *const vals[] = {"one", "two \xff\xfe", "three, longer than its length says"};
  static const size_t lens[] = {3, 6, 5};
  if (strlen(name) > 200) abort(); /* names were validated and bounded by the text */
  if (index >= 3) return NULL;
  *len = lens[index];
  return vals[index];
}

static const char *att(void *arg, size_t index) {
  (void)arg;
  return index == 0 ? "report.PDF" : NULL;
}

static bool body(void *arg, const char *needle) {
  (void)arg;
  if (!*needle) abort(); /* empty text is refused at compile time */
  return strcasestr("Hello, this is Confidential.", needle) != NULL;
}

static char *const rcpts[] = {"bob@example.net", "carol@example.org"};

static const struct filter_msg msg = {
    .subject = "Re: Quarterly report \xc3\xa9t\xc3\xa9",
    .mail_from = "alice@example.org",
    .rcpts = rcpts,
    .n_rcpts = 2,
    .header = hdr,
    .attachment = att,
    .body_contains = body,
    .body_size = 123456,
    .smime_message = true,
};

/* A failed compile: a known code, and (except for a too-long text, which
 * has no position) a message that starts with the position. */
static void check_error(int rc, const char *err) {
  if (rc != SG_ESYNTAX && rc != SG_ELIMIT && rc != SG_ENOMEM && rc != SG_ETOOBIG) abort();
  if (rc != SG_ETOOBIG && strncmp(err, "line ", 5) != 0) abort();
}

static void one_program(const char *text) {
  struct filter_program *p = NULL;
  char err[256] = "";
  int rc = filter_program_compile(text, 1, 0, &p, err, sizeof err);
  if (rc) {
    if (p) abort();
    check_error(rc, err);
    return;
  }
  const struct filter_action **acts = NULL;
  size_t n = 0;
  if (filter_program_run(p, &msg, &acts, &n) != 0) abort();
  /* Only the last action may be final. */
  for (size_t i = 0; i + 1 < n; i++)
    if (filter_action_is_final(acts[i])) abort();
  for (size_t i = 0; i < filter_program_count(p); i++)
    if (!filter_program_name(p, i)) abort();
  free(acts);
  filter_program_free(p);
}

static void one_cond(const char *text) {
  struct filter_cond *c = NULL;
  char err[256] = "";
  int rc = filter_cond_compile(text, 7, 0, &c, err, sizeof err);
  if (rc) {
    if (c) abort();
    check_error(rc, err);
    return;
  }
  (void)filter_cond_eval(c, &msg);
  (void)filter_cond_needs_body(c);
  filter_cond_free(c);
}

static void one_action(const char *text) {
  struct filter_action a;
  char err[256] = "";
  int rc = filter_action_parse(text, 1, 0, &a, err, sizeof err);
  if (rc) {
    if (a.arg1 || a.arg2) abort();
    check_error(rc, err);
    return;
  }
  bool two = a.kind == FILTER_INSERT_HEADER;
  bool one = two || a.kind == FILTER_SMIME_GATEWAY || a.kind == FILTER_SMIME_ON_DELIVERY || a.kind == FILTER_QUARANTINE;
  if (!!a.arg1 != one || !!a.arg2 != two) abort();
  filter_action_clear(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len) {
  char *text = malloc(len + 1);
  if (!text) return 0;
  memcpy(text, in, len);
  text[len] = '\0';
  one_program(text);
  one_cond(text);
  one_action(text);
  free(text);
  return 0;
}
