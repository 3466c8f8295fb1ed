/*
 * test_filter - unit tests for core/filter.c, the filter language of
 * content and message filters (issue #6).
 *
 * Conditions are compiled from text and evaluated against a fake message
 * whose headers, attachments and body are served by callbacks, the way the
 * delivery path will serve them; regexes run through the real PCRE2.  Each
 * condition is shown both true and false.  Syntax errors are compared as
 * whole strings, so the line, the column and the filter name are all
 * checked.  Allocation failures are injected (malloc/calloc/realloc are
 * wrapped at link time, tests/core/alloc_fail.h) to show that every error
 * path of the compiler frees what it allocated; under the sanitizer build
 * LeakSanitizer checks that claim.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "core/filter.h"
#include "core/sgerr.h"

#include "tests/core/alloc_fail.h"

/* ---- a fake message ------------------------------------------------------- */

struct fake {
  const char *const *hdrs; /* name, value, name, value, ..., NULL */
  const char *const *atts; /* filenames, NULL-terminated */
  const char *body;        /* decoded text */
  int body_calls;
};

static const char *fake_header(void *arg, const char *name, size_t index, size_t *len) {
  struct fake *f = arg;
  for (size_t i = 0; f->hdrs && f->hdrs[i]; i += 2)
    if (strcasecmp(f->hdrs[i], name) == 0 && index-- == 0) {
      *len = strlen(f->hdrs[i + 1]);
      return f->hdrs[i + 1];
    }
  return NULL;
}

static const char *fake_attachment(void *arg, size_t index) {
  struct fake *f = arg;
  for (size_t i = 0; f->atts && f->atts[i]; i++)
    if (i == index) return f->atts[i];
  return NULL;
}

static bool fake_body_contains(void *arg, const char *needle) {
  struct fake *f = arg;
  f->body_calls++;
  return f->body && strcasestr(f->body, needle) != NULL;
}

static char *const rcpts2[] = {"bob@example.net", "carol@corp.example"};
static const char *const hdrs_default[] = {"X-Tag", "one", "Received", "from a", "x-tag", "two", NULL};
static const char *const atts_default[] = {"report.pdf", "Payroll.XLSX", NULL};

static struct filter_msg fake_msg(struct fake *f) {
  f->hdrs = hdrs_default;
  f->atts = atts_default;
  f->body = "Hello,\nthe attached figures are Confidential.\n";
  f->body_calls = 0;
  return (struct filter_msg){
      .subject = "Quarterly report 2024",
      .mail_from = "alice@example.org",
      .rcpts = rcpts2,
      .n_rcpts = 2,
      .header = fake_header,
      .attachment = fake_attachment,
      .body_contains = fake_body_contains,
      .arg = f,
      .body_size = 4096,
  };
}

/* Compile text (it must compile), evaluate it on m, free it. */
static bool holds(const char *text, const struct filter_msg *m) {
  struct filter_cond *c = NULL;
  char err[256] = "";
  int rc = filter_cond_compile(text, 1, 0, &c, err, sizeof err);
  if (rc) fail_msg("'%s' did not compile: %s", text, err);
  bool r = filter_cond_eval(c, m);
  filter_cond_free(c);
  return r;
}

static void cond_error(const char *text, int base_line, int code, const char *want) {
  struct filter_cond *c = (struct filter_cond *)&c; /* must be reset to NULL */
  char err[256] = "";
  assert_int_equal(filter_cond_compile(text, base_line, 0, &c, err, sizeof err), code);
  assert_null(c);
  assert_string_equal(err, want);
}

static void program_error(const char *text, int base_line, const char *want) {
  struct filter_program *p = (struct filter_program *)&p;
  char err[256] = "";
  assert_int_equal(filter_program_compile(text, base_line, 0, &p, err, sizeof err), SG_ESYNTAX);
  assert_null(p);
  assert_string_equal(err, want);
}

static struct filter_program *compile_program(const char *text) {
  struct filter_program *p = NULL;
  char err[256] = "";
  int rc = filter_program_compile(text, 1, 0, &p, err, sizeof err);
  if (rc) fail_msg("program did not compile: %s", err);
  return p;
}

/* Run p on m; the actions as "kind:arg1:arg2" joined by spaces. */
static void run_program(const struct filter_program *p, const struct filter_msg *m, char *out, size_t n) {
  static const char *const kinds[] = {"smime-gateway", "on-delivery", "quarantine", "drop",
                                      "bounce",        "insert",      "deliver"};
  const struct filter_action **acts = NULL;
  size_t n_acts = 0;
  assert_int_equal(filter_program_run(p, m, &acts, &n_acts), 0);
  size_t len = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n_acts; i++)
    len += (size_t)snprintf(out + len, n - len, "%s%s%s%s%s%s", i ? " " : "", kinds[acts[i]->kind],
                            acts[i]->arg1 ? ":" : "", acts[i]->arg1 ? acts[i]->arg1 : "", acts[i]->arg2 ? ":" : "",
                            acts[i]->arg2 ? acts[i]->arg2 : "");
  free(acts);
}

/* ---- conditions ----------------------------------------------------------- */

static void test_subject(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_true(holds("subject == \"report\"", &m));
  assert_false(holds("subject == \"invoice\"", &m));
  m.subject = NULL; /* no Subject: field at all */
  assert_false(holds("subject == \"\"", &m));
}

static void test_not_equal_negates(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_true(holds("subject != \"invoice\"", &m));
  assert_false(holds("subject != \"report\"", &m));
  assert_true(holds("mail-from != \"@example\\\\.com$\"", &m));
  m.subject = NULL;
  assert_true(holds("subject != \"report\"", &m));
}

static void test_mail_from(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_true(holds("mail-from == \"@example\\\\.org$\"", &m));
  assert_false(holds("mail-from == \"@example\\\\.com$\"", &m));
  m.mail_from = ""; /* the null sender <> */
  assert_true(holds("mail-from == \"^$\"", &m));
}

static void test_rcpt_to_any(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_true(holds("rcpt-to == \"^bob@\"", &m));
  assert_true(holds("rcpt-to == \"corp\\\\.example$\"", &m)); /* the second one */
  assert_false(holds("rcpt-to == \"^dave@\"", &m));
  m.n_rcpts = 1;
  assert_false(holds("rcpt-to == \"corp\\\\.example$\"", &m));
}

static void test_header_several_values(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_true(holds("header(\"X-Tag\") == \"^one$\"", &m));
  assert_true(holds("header(\"X-Tag\") == \"^two$\"", &m)); /* second field of that name */
  assert_false(holds("header(\"X-Tag\") == \"^three$\"", &m));
  assert_false(holds("header(\"X-Missing\") == \"\"", &m));
  m.header = NULL;
  assert_false(holds("header(\"X-Tag\") == \"one\"", &m));
}

/* A header value is matched within its length only: it may point into
 * the message, with the next field right after it. */
static const char *cut_header(void *arg, const char *name, size_t index, size_t *len) {
  (void)arg;
  if (strcasecmp(name, "X-Cut") != 0 || index > 0) return NULL;
  *len = 3;
  return "abc\r\nX-Next: def";
}

static void test_header_value_length(void **state) {
  (void)state;
  struct filter_msg m = {.header = cut_header};
  assert_true(holds("header(\"X-Cut\") == \"^abc$\"", &m));
  assert_false(holds("header(\"X-Cut\") == \"def\"", &m));
  assert_false(holds("header(\"X-Cut\") == \"abc\\r\"", &m));
}

static void test_attachment_filename(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_true(holds("attachment-filename == \"(?i)\\\\.xlsx$\"", &m));
  assert_false(holds("attachment-filename == \"\\\\.exe$\"", &m));
  m.attachment = NULL;
  assert_false(holds("attachment-filename == \"pdf\"", &m));
}

static void test_body_contains(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_true(holds("body-contains(\"CONFIDENTIAL\")", &m));
  assert_int_equal(f.body_calls, 1);
  assert_false(holds("body-contains(\"secret\")", &m));
  m.body_contains = NULL;
  assert_false(holds("body-contains(\"confidential\")", &m));
}

static void test_body_size_comparisons(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f); /* 4096 bytes */
  assert_true(holds("body-size > 4095", &m));
  assert_false(holds("body-size > 4096", &m));
  assert_true(holds("body-size >= 4096", &m));
  assert_true(holds("body-size < 4097", &m));
  assert_false(holds("body-size < 4096", &m));
  assert_true(holds("body-size <= 4096", &m));
  assert_true(holds("body-size == 4K", &m));
  assert_false(holds("body-size != 4k", &m));
  m.body_size = 50ull * 1024 * 1024;
  assert_true(holds("body-size == 50M", &m));
  assert_true(holds("body-size < 1G", &m));
  cond_error("body-size > 20000000000G", 1, SG_ESYNTAX, "line 1, column 13: number too large");
  cond_error("body-size > 5X", 1, SG_ESYNTAX, "line 1, column 13: bad number (digits with an optional K, M or G)");
}

static void test_smime_flags(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  assert_false(holds("smime-gateway-message", &m));
  assert_false(holds("smime-gateway-verified", &m));
  m.smime_message = true;
  assert_true(holds("smime-gateway-message", &m));
  assert_false(holds("smime-gateway-verified", &m));
  m.smime_verified = true;
  assert_true(holds("smime-gateway-verified", &m));
}

static void test_precedence_and_parentheses(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  m.smime_message = true; /* M true, V false, S (subject "invoice") false */
  /* and binds tighter than or: M or (V and S) */
  assert_true(holds("smime-gateway-message or smime-gateway-verified and subject == \"invoice\"", &m));
  assert_false(holds("(smime-gateway-message or smime-gateway-verified) and subject == \"invoice\"", &m));
  /* not binds tighter than and: (not M) and ... */
  assert_false(holds("not smime-gateway-message and not smime-gateway-verified", &m));
  assert_true(holds("not (smime-gateway-message and smime-gateway-verified)", &m));
  assert_true(holds("not not smime-gateway-message", &m));
  assert_true(holds("smime-gateway-verified or smime-gateway-verified or smime-gateway-message", &m));
  assert_false(holds("smime-gateway-message and smime-gateway-message and smime-gateway-verified", &m));
}

static void test_regex_case_and_search(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  m.subject = "Re: CONFIDENTIAL plans for \xc3\x89t\xc3\xa9 \"Q3\" (order 42)";
  assert_true(holds("subject == \"(?i)confidential\"", &m));
  assert_false(holds("subject == \"confidential\"", &m)); /* case matters without (?i) */
  assert_true(holds("subject == \"plans\"", &m));         /* unanchored: found mid-string */
  assert_false(holds("subject == \"^plans\"", &m));
  assert_true(holds("subject == \"(?i)\xc3\xa9t\xc3\xa9\"", &m)); /* Unicode case folding */
  assert_true(holds("subject == \"order \\d+\\)$\"", &m));       /* \d kept as written */
  assert_true(holds("subject == \"\\\"Q3\\\"\"", &m));          /* \" is a quote */
  assert_true(holds("subject == 'for .* \"Q3\"'", &m));          /* vendor's single quotes */
  m.subject = "caf\xff\xfe invoice"; /* invalid UTF-8 from the wire */
  assert_true(holds("subject == \"invoice\"", &m));
  assert_false(holds("subject == \"receipt\"", &m));
}

static void test_regex_error_names_column(void **state) {
  (void)state;
  cond_error("subject == \"a(b\"", 1, SG_ESYNTAX,
             "line 1, column 16: bad regular expression: missing closing parenthesis");
  /* The column counts characters, and escapes take their written width. */
  cond_error("smime-gateway-message or\n  subject == \"\\\"\xc3\xa9[z\"", 10, SG_ESYNTAX,
             "line 11, column 20: bad regular expression: missing terminating ] for character class");
  cond_error("mail-from == \"x{2,1}\"", 1, SG_ESYNTAX,
             "line 1, column 20: bad regular expression: numbers out of order in {} quantifier");
}

static void test_needs_body(void **state) {
  (void)state;
  static const struct { const char *text; bool body; } cases[] = {
      {"subject == \"x\" and header(\"To\") == \"y\"", false},
      {"smime-gateway-message or body-size > 10", false},
      {"subject == \"x\" or not body-contains(\"y\")", true},
      {"(smime-gateway-message and attachment-filename == \"exe$\")", true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct filter_cond *c = NULL;
    assert_int_equal(filter_cond_compile(cases[i].text, 1, 0, &c, NULL, 0), 0);
    assert_int_equal(filter_cond_needs_body(c), cases[i].body);
    filter_cond_free(c);
  }
  struct filter_program *p = compile_program("a: if (subject == \"x\") { drop(); }");
  assert_false(filter_program_needs_body(p));
  filter_program_free(p);
  p = compile_program("a: if (subject == \"x\") { drop(); } else if (body-contains(\"z\")) { bounce(); }");
  assert_true(filter_program_needs_body(p));
  filter_program_free(p);
}

static void test_body_tested_last(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  /* Written first, but the cheap subject test decides the 'and'. */
  assert_false(holds("body-contains(\"confidential\") and subject == \"invoice\"", &m));
  assert_int_equal(f.body_calls, 0);
  assert_true(holds("body-contains(\"nothing\") or subject == \"report\"", &m));
  assert_int_equal(f.body_calls, 0);
  assert_true(holds("body-contains(\"confidential\") and subject == \"report\"", &m));
  assert_int_equal(f.body_calls, 1);
}

static void test_match_limit(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  char subject[64];
  /* The first alternative backtracks exponentially in the length before it
   * fails and the second matches.  With 20 a's that stays under the
   * module's match limit (1,000,000) and the regex matches; with 30 it
   * needs millions of steps -- PCRE2's default limit (10,000,000) would
   * still let it match -- so the module's limit stops it and the test
   * counts as not matching. */
  const char *cond = "subject == \"^(a|aa)+$|^a+!\"";
  memset(subject, 'a', 20);
  strcpy(subject + 20, "!");
  m.subject = subject;
  assert_true(holds(cond, &m));
  memset(subject, 'a', 30);
  strcpy(subject + 30, "!");
  assert_false(holds(cond, &m));
}

static void test_cond_syntax_errors(void **state) {
  (void)state;
  cond_error("", 1, SG_ESYNTAX, "line 1, column 1: expected a condition, found end of text");
  cond_error("subject = \"x\"", 1, SG_ESYNTAX, "line 1, column 9: unexpected character '='");
  cond_error("subject == x", 1, SG_ESYNTAX,
             "line 1, column 12: expected a quoted regular expression, found 'x'");
  cond_error("size > 3", 1, SG_ESYNTAX, "line 1, column 1: unknown condition 'size'");
  cond_error("(smime-gateway-message", 1, SG_ESYNTAX,
             "line 1, column 23: expected ')' to close '(', found end of text");
  cond_error("smime-gateway-message smime-gateway-verified", 1, SG_ESYNTAX,
             "line 1, column 23: expected 'and', 'or' or end of text, found 'smime-gateway-verified'");
  cond_error("header(\"Bad Name\") == \"x\"", 1, SG_ESYNTAX, "line 1, column 8: bad header name \"Bad Name\"");
  cond_error("body-contains(\"\")", 1, SG_ESYNTAX, "line 1, column 15: empty text in body-contains()");
  cond_error("subject == \"abc\n\"", 1, SG_ESYNTAX, "line 1, column 12: unterminated string");
}

static void test_deep_nesting_refused(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  m.smime_message = true;
  char text[512];
  /* 63 parentheses around a test: 64 levels, the limit. */
  size_t n = 0;
  for (int i = 0; i < 63; i++) text[n++] = '(';
  n += (size_t)sprintf(text + n, "smime-gateway-message");
  for (int i = 0; i < 63; i++) text[n++] = ')';
  text[n] = '\0';
  assert_true(holds(text, &m));
  /* One more is refused, and so is a long run of 'not'. */
  memmove(text + 1, text, n + 1);
  text[0] = '(';
  strcat(text, ")");
  cond_error(text, 1, SG_ELIMIT, "line 1, column 65: nested deeper than 64 levels");
  size_t big = 200000;
  char *nots = malloc(big * 4 + 32);
  assert_non_null(nots);
  for (size_t i = 0; i < big; i++) memcpy(nots + i * 4, "not ", 4);
  strcpy(nots + big * 4, "smime-gateway-message");
  struct filter_cond *c = NULL;
  assert_int_equal(filter_cond_compile(nots, 1, 0, &c, NULL, 0), SG_ELIMIT);
  assert_null(c);
  free(nots);
}

static void test_long_chain_is_flat(void **state) {
  (void)state;
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  m.smime_verified = true;
  /* 40,000 terms (just under FILTER_MAX_TEXT): far beyond the depth limit if chains nested. */
  size_t terms = 40000;
  const char *term = "smime-gateway-message or ";
  char *text = malloc(terms * strlen(term) + 32);
  assert_non_null(text);
  for (size_t i = 0; i < terms; i++) memcpy(text + i * strlen(term), term, strlen(term));
  strcpy(text + terms * strlen(term), "smime-gateway-verified");
  assert_true(holds(text, &m));
  m.smime_verified = false;
  assert_false(holds(text, &m));
  free(text);
}

static void test_text_too_long(void **state) {
  (void)state;
  char *text = malloc(FILTER_MAX_TEXT + 2);
  assert_non_null(text);
  memset(text, ' ', FILTER_MAX_TEXT + 1);
  text[FILTER_MAX_TEXT + 1] = '\0';
  struct filter_program *p = NULL;
  char err[128];
  assert_int_equal(filter_program_compile(text, 1, 0, &p, err, sizeof err), SG_ETOOBIG);
  assert_null(p);
  text[FILTER_MAX_TEXT] = '\0'; /* exactly the limit: an empty program */
  assert_int_equal(filter_program_compile(text, 1, 0, &p, err, sizeof err), 0);
  assert_int_equal(filter_program_count(p), 0);
  filter_program_free(p);
  free(text);
}

/* ---- actions --------------------------------------------------------------- */

static void test_every_action(void **state) {
  (void)state;
  static const struct {
    const char *text;
    enum filter_action_kind kind;
    const char *arg1, *arg2;
    bool final;
  } cases[] = {
      {"smime-gateway(\"signenc\")", FILTER_SMIME_GATEWAY, "signenc", NULL, true},
      {"smime-gateway-on-delivery( 'sign' )", FILTER_SMIME_ON_DELIVERY, "sign", NULL, false},
      {"quarantine(\"Policy\")", FILTER_QUARANTINE, "Policy", NULL, false},
      {"drop()", FILTER_DROP, NULL, NULL, true},
      {"bounce( )", FILTER_BOUNCE, NULL, NULL, true},
      {"insert-header(\"X-Class\", \"secret \\\"A\\\"\")", FILTER_INSERT_HEADER, "X-Class", "secret \"A\"", false},
      {" deliver() # now\n", FILTER_DELIVER, NULL, NULL, true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct filter_action a;
    char err[256] = "";
    assert_int_equal(filter_action_parse(cases[i].text, 1, 0, &a, err, sizeof err), 0);
    assert_int_equal(a.kind, cases[i].kind);
    if (cases[i].arg1) assert_string_equal(a.arg1, cases[i].arg1);
    else assert_null(a.arg1);
    if (cases[i].arg2) assert_string_equal(a.arg2, cases[i].arg2);
    else assert_null(a.arg2);
    assert_int_equal(filter_action_is_final(&a), cases[i].final);
    filter_action_clear(&a);
    assert_null(a.arg1);
  }
}

static void action_error(const char *text, const char *want) {
  struct filter_action a = {.kind = FILTER_DELIVER, .arg1 = (char *)"stale"};
  char err[256] = "";
  assert_int_equal(filter_action_parse(text, 1, 0, &a, err, sizeof err), SG_ESYNTAX);
  assert_null(a.arg1);
  assert_null(a.arg2);
  assert_string_equal(err, want);
}

static void test_bad_actions(void **state) {
  (void)state;
  action_error("encrypt(\"x\")",
               "line 1, column 1: unknown action 'encrypt' (expected smime-gateway, smime-gateway-on-delivery, "
               "quarantine, drop, bounce, insert-header or deliver)");
  action_error("smime-gateway(\"signenc)", "line 1, column 15: unterminated string");
  action_error("smime-gateway(signenc)", "line 1, column 15: expected a quoted string argument, found 'signenc'");
  action_error("drop(\"now\")", "line 1, column 6: drop() takes 0 arguments");
  action_error("quarantine(\"a\", \"b\")", "line 1, column 17: quarantine() takes 1 argument");
  action_error("insert-header(\"X-A\")", "line 1, column 20: insert-header() takes 2 arguments, found 1");
  action_error("quarantine(\"../etc\")",
               "line 1, column 12: quarantine name must be 1-64 letters, digits, '_', '-' or '.', not starting "
               "with '.'");
  action_error("insert-header(\"X A\", \"v\")", "line 1, column 15: bad header name");
  action_error("smime-gateway(\"\")", "line 1, column 15: empty profile name");
  action_error("drop", "line 1, column 5: expected '(' after 'drop', found end of text");
  action_error("drop(); bounce()", "line 1, column 7: expected end of text after the action, found ';'");
}

/* ---- message filter programs ----------------------------------------------- */

static void test_vendor_example(void **state) {
  (void)state;
  struct filter_program *p = compile_program(
      "quarantine_smime_messages: if (smime-gateway-message and not smime-gateway-verified) { "
      "quarantine(\"Policy\"); }\n");
  assert_int_equal(filter_program_count(p), 1);
  assert_string_equal(filter_program_name(p, 0), "quarantine_smime_messages");
  assert_null(filter_program_name(p, 1));
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  char out[256];
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, ""); /* not S/MIME */
  m.smime_message = true;
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "quarantine:Policy"); /* S/MIME, not verified */
  m.smime_verified = true;
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "");
  filter_program_free(p);
}

static void test_program_several_filters(void **state) {
  (void)state;
  struct filter_program *p = compile_program(
      "# tag, then sign on delivery\n"
      "tag: if (subject == \"(?i)report\") { insert-header(\"X-Report\", \"yes\"); }\n"
      "nosuch: if (rcpt-to == \"@nowhere$\") { drop(); }\n"
      "sign.later: if(mail-from==\"@example\\\\.org$\"){smime-gateway-on-delivery(\"sign\");"
      "insert-header('X-Signed','later')}\n");
  assert_int_equal(filter_program_count(p), 3);
  assert_string_equal(filter_program_name(p, 2), "sign.later");
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  char out[256];
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "insert:X-Report:yes on-delivery:sign insert:X-Signed:later");
  m.subject = "lunch";
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "on-delivery:sign insert:X-Signed:later");
  filter_program_free(p);
}

static void test_program_else_branches(void **state) {
  (void)state;
  struct filter_program *p = compile_program(
      "route: if (body-size > 10M) { bounce(); }\n"
      "       else if (subject == \"secret\") { smime-gateway(\"enc\"); }\n"
      "       else if (subject == \"sign\") { }\n"
      "       else { insert-header(\"X-Plain\", \"1\"); }\n");
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  char out[256];
  m.body_size = 11ull << 20;
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "bounce");
  m.body_size = 100;
  m.subject = "top secret";
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "smime-gateway:enc");
  m.subject = "please sign";
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "");
  m.subject = "hello";
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "insert:X-Plain:1");
  filter_program_free(p);
}

static void test_program_final_stops(void **state) {
  (void)state;
  struct filter_program *p = compile_program(
      "q: if (smime-gateway-message) { quarantine(\"Policy\"); }\n"
      "enc: if (subject == \"report\") { insert-header(\"X-A\", \"1\"); smime-gateway(\"enc\"); }\n"
      "later: if (subject == \"report\") { drop(); }\n");
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  m.smime_message = true;
  char out[256];
  /* quarantine is not final: the run goes on; smime-gateway is (R28). */
  run_program(p, &m, out, sizeof out);
  assert_string_equal(out, "quarantine:Policy insert:X-A:1 smime-gateway:enc");
  filter_program_free(p);
  /* deliver, drop and bounce are final too. */
  static const char *const finals[] = {"deliver()", "drop()", "bounce()"};
  for (size_t i = 0; i < 3; i++) {
    char text[256];
    snprintf(text, sizeof text, "a: if (smime-gateway-message) { %s }\nb: if (smime-gateway-message) { bounce(); }",
             finals[i]);
    p = compile_program(text);
    const struct filter_action **acts = NULL;
    size_t n = 0;
    assert_int_equal(filter_program_run(p, &m, &acts, &n), 0);
    assert_int_equal(n, 1);
    assert_true(filter_action_is_final(acts[0]));
    free(acts);
    filter_program_free(p);
  }
}

static void test_program_appends_to_caller_array(void **state) {
  (void)state;
  struct filter_program *p = compile_program("a: if (subject == \"report\") { deliver() }");
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  const struct filter_action **acts = NULL;
  size_t n = 0;
  assert_int_equal(filter_program_run(p, &m, &acts, &n), 0);
  assert_int_equal(filter_program_run(p, &m, &acts, &n), 0);
  assert_int_equal(n, 2);
  assert_ptr_equal(acts[0], acts[1]); /* both point into p */
  assert_int_equal(acts[1]->kind, FILTER_DELIVER);
  free(acts);
  filter_program_free(p);
}

static void test_empty_program(void **state) {
  (void)state;
  static const char *const texts[] = {"", "  \n\t\n", "# nothing yet\n   # still nothing"};
  struct fake f;
  struct filter_msg m = fake_msg(&f);
  for (size_t i = 0; i < 3; i++) {
    struct filter_program *p = compile_program(texts[i]);
    assert_int_equal(filter_program_count(p), 0);
    const struct filter_action **acts = NULL;
    size_t n = 0;
    assert_int_equal(filter_program_run(p, &m, &acts, &n), 0);
    assert_int_equal(n, 0);
    assert_null(acts);
    filter_program_free(p);
  }
}

static void test_err_missing_paren(void **state) {
  (void)state;
  program_error("ok: if (subject == \"a\") { drop(); }\n"
                "quarantine_smime_messages: if (smime-gateway-message and not smime-gateway-verified { "
                "quarantine(\"Policy\"); }\n",
                20,
                "line 21, column 85: filter 'quarantine_smime_messages': expected ')' after condition, found '{'");
}

static void test_err_missing_brace(void **state) {
  (void)state;
  program_error("f1: if (smime-gateway-message)\n  quarantine(\"Policy\"); }\n", 1,
                "line 2, column 3: filter 'f1': expected '{' after condition, found 'quarantine'");
  program_error("f1: if (smime-gateway-message) { drop(); } else bounce(); }", 1,
                "line 1, column 49: filter 'f1': expected '{' after 'else', found 'bounce'");
  program_error("f1: if (smime-gateway-message) { quarantine(\"Policy\") bounce(); }", 1,
                "line 1, column 55: filter 'f1': expected ';' or '}' after action, found 'bounce'");
}

static void test_err_unterminated_string(void **state) {
  (void)state;
  program_error("f1: if (smime-gateway-message) { drop(); }\n"
                "f2: if (subject == \"(?i)confidential) {\n"
                "  smime-gateway(\"enc\"); }\n",
                1, "line 2, column 20: filter 'f2': unterminated string");
}

static void test_err_unknown_condition(void **state) {
  (void)state;
  program_error("virus: if (virus-found or subject == \"x\") { drop(); }", 5,
                "line 5, column 12: filter 'virus': unknown condition 'virus-found'");
}

static void test_err_trailing_garbage(void **state) {
  (void)state;
  program_error("f1: if (smime-gateway-message) { drop(); }\n}\n", 1,
                "line 2, column 1: filter 'f1': expected a filter name or end of text, found '}'");
  program_error("f1 if (smime-gateway-message) { drop(); }", 1,
                "line 1, column 4: filter 'f1': expected ':' after the filter name, found 'if'");
  program_error("\"f1\": if (smime-gateway-message) { drop(); }", 1,
                "line 1, column 1: expected a filter name or end of text, found string \"f1\"");
}

static void test_err_action_after_final(void **state) {
  (void)state;
  program_error("f1: if (smime-gateway-message) {\n  drop();\n  insert-header(\"X-A\", \"b\");\n}", 1,
                "line 3, column 3: filter 'f1': action after the final action drop() would never run");
}

static void test_err_duplicate_name(void **state) {
  (void)state;
  program_error("f1: if (smime-gateway-message) { drop(); }\nf1: if (smime-gateway-verified) { drop(); }", 1,
                "line 2, column 1: filter 'f1': a filter of this name already exists");
}

static void test_err_regex_in_program(void **state) {
  (void)state;
  program_error("f1: if (smime-gateway-message) { drop(); }\n"
                "f2: if (header(\"To\") == \"[a-\") { drop(); }\n",
                1, "line 2, column 29: filter 'f2': bad regular expression: missing terminating ] for character class");
}

/* Every allocation of the compiler, failed one at a time: each attempt
 * must fail cleanly with SG_ENOMEM (LSan checks nothing leaks) until the
 * countdown passes the last allocation and the program compiles. */
static void test_alloc_failures(void **state) {
  (void)state;
  const char *text =
      "a: if (subject == \"x\" and not (header(\"X\") == \"y\" or body-contains(\"z\"))) {\n"
      "  insert-header(\"X-A\", \"1\"); quarantine(\"Policy\"); }\n"
      "else if (body-size > 1M) { smime-gateway(\"p\"); } else { deliver(); }\n"
      "b: if (rcpt-to == \"q\") { drop(); }\n";
  int rc = SG_ENOMEM;
  long n;
  for (n = 0; rc == SG_ENOMEM && n < 10000; n++) {
    struct filter_program *p = (struct filter_program *)&p;
    char err[256];
    alloc_countdown = n;
    rc = filter_program_compile(text, 1, 0, &p, err, sizeof err);
    alloc_countdown = -1;
    if (rc == SG_ENOMEM) {
      assert_null(p);
      assert_non_null(strstr(err, "out of memory"));
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal(filter_program_count(p), 2);
      filter_program_free(p);
    }
  }
  assert_int_equal(rc, 0);
  assert_true(n > 20); /* the loop really went through many failures */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_subject),
      cmocka_unit_test(test_not_equal_negates),
      cmocka_unit_test(test_mail_from),
      cmocka_unit_test(test_rcpt_to_any),
      cmocka_unit_test(test_header_several_values),
      cmocka_unit_test(test_header_value_length),
      cmocka_unit_test(test_attachment_filename),
      cmocka_unit_test(test_body_contains),
      cmocka_unit_test(test_body_size_comparisons),
      cmocka_unit_test(test_smime_flags),
      cmocka_unit_test(test_precedence_and_parentheses),
      cmocka_unit_test(test_regex_case_and_search),
      cmocka_unit_test(test_regex_error_names_column),
      cmocka_unit_test(test_needs_body),
      cmocka_unit_test(test_body_tested_last),
      cmocka_unit_test(test_match_limit),
      cmocka_unit_test(test_cond_syntax_errors),
      cmocka_unit_test(test_deep_nesting_refused),
      cmocka_unit_test(test_long_chain_is_flat),
      cmocka_unit_test(test_text_too_long),
      cmocka_unit_test(test_every_action),
      cmocka_unit_test(test_bad_actions),
      cmocka_unit_test(test_vendor_example),
      cmocka_unit_test(test_program_several_filters),
      cmocka_unit_test(test_program_else_branches),
      cmocka_unit_test(test_program_final_stops),
      cmocka_unit_test(test_program_appends_to_caller_array),
      cmocka_unit_test(test_empty_program),
      cmocka_unit_test(test_err_missing_paren),
      cmocka_unit_test(test_err_missing_brace),
      cmocka_unit_test(test_err_unterminated_string),
      cmocka_unit_test(test_err_unknown_condition),
      cmocka_unit_test(test_err_trailing_garbage),
      cmocka_unit_test(test_err_action_after_final),
      cmocka_unit_test(test_err_duplicate_name),
      cmocka_unit_test(test_err_regex_in_program),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
