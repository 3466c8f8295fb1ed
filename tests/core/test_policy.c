/*
 * test_policy - unit tests for core/policy.c (R27-R30, R33).
 *
 * Each test loads a real config from YAML (config_load_string compiles
 * the filters, as the daemon does) and evaluates real messages: address
 * patterns, which mail policy each recipient gets ("default" last, an
 * implicit default), how actions fold into outcomes (drop and bounce win,
 * the first quarantine is kept and skipped for released messages, the
 * last profile wins, headers in order), final versus on-delivery, message
 * filters before content filters, splits only when outcomes differ, RFC
 * 2047 subjects, and that no body is decoded when no evaluated condition
 * needs it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/policy.h"
#include "core/sgerr.h"
#include "crypto/mimebody.h"

static const char BASE[] =
    "listeners:\n"
    "  - name: out\n"
    "    address: 127.0.0.1:2525\n"
    "    direction: outgoing\n"
    "    next_hop: 127.0.0.1:2526\n"
    "spool_dir: spool\n"
    "key_store: keys\n"
    "hsm: {module: inprocess, token: t, pin_file: pin}\n"
    "flow_policies:\n"
    "  - name: default\n"
    "sending_profiles:\n"
    "  - {name: p1, mode: sign, signing_certificate: org}\n"
    "  - {name: p2, mode: encrypt}\n";

static struct config *load(const char *extra) {
  size_t n = strlen(BASE) + strlen(extra) + 1;
  char *text = malloc(n), err[512];
  assert_non_null(text);
  snprintf(text, n, "%s%s", BASE, extra);
  struct config *c = NULL;
  int rc = config_load_string(text, strlen(text), "/tmp", "t.yaml", &c, err, sizeof err);
  if (rc) fprintf(stderr, "config: %s\n", err);
  assert_int_equal(rc, 0);
  free(text);
  return c;
}

#define MSG(subject, body) "From: a@example.com\r\nTo: b@example.net\r\nSubject: " subject "\r\n\r\n" body

static int eval(const struct config *c, const char *msg, const char *sender, char *const *rcpts, size_t n,
                bool released, struct policy_result *r) {
  struct policy_input in = {msg, strlen(msg), sender, rcpts, n, NULL, 0, CONFIG_OUTGOING, false, false, released};
  return policy_evaluate(c, &in, r);
}

static void eval1(const struct config *c, const char *msg, struct policy_result *r) {
  char *rcpt[] = {"b@example.net"};
  assert_int_equal(eval(c, msg, "a@example.com", rcpt, 1, false, r), 0);
  assert_int_equal(r->n_groups, 1);
}

/* ---- patterns ------------------------------------------------------------ */

static void test_address_patterns(void **state) {
  (void)state;
  assert_true(policy_address_match("*", "x@y.example"));
  assert_true(policy_address_match("*", ""));
  assert_true(policy_address_match("@Example.COM", "bob@example.com"));
  assert_false(policy_address_match("@example.com", "bob@sub.example.com"));
  assert_true(policy_address_match("*.example.com", "bob@sub.EXAMPLE.com"));
  assert_false(policy_address_match("*.example.com", "bob@example.com"));
  assert_false(policy_address_match("*.example.com", "bob@badexample.com"));
  assert_true(policy_address_match("Bob@Example.com", "bob@example.COM"));
  assert_false(policy_address_match("bob@example.com", "bob@example.com.evil"));
  assert_false(policy_address_match("@example.com", ""));
}

static void test_bad_patterns_rejected(void **state) {
  (void)state;
  const char *bad[] = {"example.com", "*example.com", "a@b@c", "*@x.com", "@", "@-bad-.com"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char extra[400], text[1200], err[512];
    snprintf(extra, sizeof extra,
             "mail_policies:\n  - {name: x, direction: outgoing, senders: [\"*\"], recipients: [\"%s\"]}\n", bad[i]);
    snprintf(text, sizeof text, "%s%s", BASE, extra);
    struct config *c = NULL;
    assert_int_equal(config_load_string(text, strlen(text), "/tmp", "t.yaml", &c, err, sizeof err), SG_ECONFIG);
    assert_non_null(strstr(err, "is not '*', an address"));
  }
}

/* ---- mail policies --------------------------------------------------------- */

static const char POLICIES[] =
    "content_filters:\n"
    "  - {name: tag_vip, direction: outgoing, condition: 'subject == \".\"', actions: ['insert-header(\"X-P\", \"vip\")']}\n"
    "  - {name: tag_dflt, direction: outgoing, condition: 'subject == \".\"', actions: ['insert-header(\"X-P\", \"d\")']}\n"
    "  - {name: tag_in, direction: incoming, condition: 'subject == \".\"', actions: ['drop()']}\n"
    "mail_policies:\n"
    "  - {name: default, direction: outgoing, senders: [\"*\"], recipients: [\"*\"], content_filters: [tag_dflt]}\n"
    "  - {name: vip, direction: outgoing, senders: [\"@example.com\"], recipients: [\"@vip.example\", \"*.board.example\"],"
    " content_filters: [tag_vip]}\n"
    "  - {name: inbound, direction: incoming, senders: [\"*\"], recipients: [\"*\"], content_filters: [tag_in]}\n";

static void test_default_is_tried_last_and_groups_split(void **state) {
  (void)state;
  struct config *c = load(POLICIES);
  char *rcpts[] = {"a@vip.example", "b@other.example", "c@x.board.example", "d@board.example"};
  struct policy_result r;
  assert_int_equal(eval(c, MSG("hi", "x\r\n"), "s@example.com", rcpts, 4, false, &r), 0);
  assert_int_equal(r.n_groups, 2);
  assert_int_equal(r.group_of[0], r.group_of[2]);
  assert_int_equal(r.group_of[1], r.group_of[3]);
  assert_int_not_equal(r.group_of[0], r.group_of[1]);
  const struct policy_outcome *vip = &r.groups[r.group_of[0]], *d = &r.groups[r.group_of[1]];
  assert_string_equal(vip->policy, "vip");
  assert_string_equal(vip->headers[0]->arg2, "vip");
  assert_string_equal(d->policy, "default");
  assert_string_equal(d->headers[0]->arg2, "d");
  policy_result_free(&r);
  /* the sender must match too: from elsewhere, the vip recipients get the default */
  assert_int_equal(eval(c, MSG("hi", "x\r\n"), "s@elsewhere.example", rcpts, 4, false, &r), 0);
  assert_int_equal(r.n_groups, 1);
  assert_string_equal(r.groups[0].policy, "default");
  policy_result_free(&r);
  config_unref(c);
}

static void test_implicit_default_and_direction(void **state) {
  (void)state;
  struct config *c = load(
      "content_filters:\n"
      "  - {name: f, direction: outgoing, condition: 'subject == \".\"', actions: ['drop()']}\n"
      "mail_policies:\n"
      "  - {name: only, direction: outgoing, senders: [\"*\"], recipients: [\"@x.example\"], content_filters: [f]}\n");
  struct policy_result r;
  eval1(c, MSG("hi", "x\r\n"), &r); /* b@example.net: no policy matches */
  assert_string_equal(r.groups[0].policy, "default");
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER);
  policy_result_free(&r);
  char *rc[] = {"z@x.example"};
  struct policy_input in = {MSG("hi", "x\r\n"), strlen(MSG("hi", "x\r\n")), "a@b.c", rc, 1, NULL, 0, CONFIG_INCOMING, false, false, false};
  assert_int_equal(policy_evaluate(c, &in, &r), 0);
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER); /* outgoing policies do not apply to incoming mail */
  policy_result_free(&r);
  assert_true(policy_active(c, CONFIG_OUTGOING));
  assert_false(policy_active(c, CONFIG_INCOMING));
  config_unref(c);
}

static void test_filter_of_other_direction_rejected(void **state) {
  (void)state;
  char text[2000], err[512];
  snprintf(text, sizeof text, "%s%s", BASE,
           "content_filters:\n"
           "  - {name: f, direction: incoming, condition: 'subject == \".\"', actions: ['drop()']}\n"
           "mail_policies:\n"
           "  - {name: p, direction: outgoing, senders: [\"*\"], recipients: [\"*\"], content_filters: [f]}\n");
  struct config *c = NULL;
  assert_int_equal(config_load_string(text, strlen(text), "/tmp", "t.yaml", &c, err, sizeof err), SG_ECONFIG);
  assert_non_null(strstr(err, "'f' is an incoming filter"));
}

/* ---- folding actions ------------------------------------------------------------ */

static struct config *chain(const char *actions1, const char *actions2) {
  char extra[2000];
  snprintf(extra, sizeof extra,
           "content_filters:\n"
           "  - {name: one, direction: outgoing, condition: 'subject == \"go\"', actions: [%s]}\n"
           "  - {name: two, direction: outgoing, condition: 'subject == \"go\"', actions: [%s]}\n"
           "mail_policies:\n"
           "  - {name: default, direction: outgoing, senders: [\"*\"], recipients: [\"*\"], content_filters: [one, two]}\n",
           actions1, actions2);
  return load(extra);
}

static void test_final_skips_later_filters(void **state) {
  (void)state;
  struct config *c = chain("'smime-gateway(\"p1\")'", "'insert-header(\"X-Later\", \"1\")', 'drop()'");
  struct policy_result r;
  eval1(c, MSG("go", "x\r\n"), &r);
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER);
  assert_string_equal(r.groups[0].profile, "p1");
  assert_int_equal(r.groups[0].n_headers, 0);
  assert_string_equal(r.groups[0].filters, "one");
  policy_result_free(&r);
  config_unref(c);
}

static void test_on_delivery_continues(void **state) {
  (void)state;
  struct config *c = chain("'smime-gateway-on-delivery(\"p1\")'", "'insert-header(\"X-Later\", \"1\")'");
  struct policy_result r;
  eval1(c, MSG("go", "x\r\n"), &r);
  assert_string_equal(r.groups[0].profile, "p1");
  assert_int_equal(r.groups[0].n_headers, 1);
  assert_string_equal(r.groups[0].filters, "one,two");
  policy_result_free(&r);
  config_unref(c);
}

static void test_on_delivery_then_drop_drops(void **state) {
  (void)state;
  struct config *c = chain("'smime-gateway-on-delivery(\"p1\")', 'quarantine(\"Q\")'", "'drop()'");
  struct policy_result r;
  eval1(c, MSG("go", "x\r\n"), &r);
  assert_int_equal(r.groups[0].verdict, POLICY_DROP);
  assert_null(r.groups[0].quarantine);
  assert_string_equal(r.groups[0].decided_by, "two");
  policy_result_free(&r);
  config_unref(c);
}

static void test_quarantine_keeps_later_actions_and_released_skips_it(void **state) {
  (void)state;
  struct config *c = chain("'quarantine(\"Q1\")'", "'quarantine(\"Q2\")', 'smime-gateway-on-delivery(\"p2\")'");
  struct policy_result r;
  eval1(c, MSG("go", "x\r\n"), &r);
  assert_int_equal(r.groups[0].verdict, POLICY_QUARANTINE);
  assert_string_equal(r.groups[0].quarantine, "Q1");
  assert_string_equal(r.groups[0].decided_by, "one");
  assert_string_equal(r.groups[0].profile, "p2");
  policy_result_free(&r);
  char *rcpt[] = {"b@example.net"};
  assert_int_equal(eval(c, MSG("go", "x\r\n"), "a@example.com", rcpt, 1, true, &r), 0);
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER); /* released: delivered as it would have been */
  assert_string_equal(r.groups[0].profile, "p2");
  policy_result_free(&r);
  config_unref(c);
}

static void test_bounce_and_last_profile_wins(void **state) {
  (void)state;
  struct config *c = chain("'smime-gateway-on-delivery(\"p1\")'", "'smime-gateway-on-delivery(\"p2\")'");
  struct policy_result r;
  eval1(c, MSG("go", "x\r\n"), &r);
  assert_string_equal(r.groups[0].profile, "p2");
  policy_result_free(&r);
  config_unref(c);
  c = chain("'bounce()'", "'drop()'");
  eval1(c, MSG("go", "x\r\n"), &r);
  assert_int_equal(r.groups[0].verdict, POLICY_BOUNCE);
  policy_result_free(&r);
  eval1(c, MSG("stay", "x\r\n"), &r); /* no condition holds */
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER);
  assert_null(r.groups[0].profile);
  assert_string_equal(r.groups[0].filters, "");
  policy_result_free(&r);
  config_unref(c);
}

/* ---- message filters (R33) ---------------------------------------------------------- */

static void test_message_filters_first_and_deliver_does_not_stop_content_filters(void **state) {
  (void)state;
  struct config *c = load(
      "content_filters:\n"
      "  - {name: cf, direction: outgoing, condition: 'subject == \"go\"', actions: ['insert-header(\"X-C\", \"1\")']}\n"
      "mail_policies:\n"
      "  - {name: default, direction: outgoing, senders: [\"*\"], recipients: [\"*\"], content_filters: [cf]}\n"
      "message_filters: |\n"
      "  m1: if (subject == \"go\") { insert-header(\"X-M\", \"1\"); deliver(); }\n"
      "  m2: if (subject == \"go\") { drop(); }\n"
      "  m3: if (subject == \"sign\") { smime-gateway(\"p1\"); }\n");
  struct policy_result r;
  eval1(c, MSG("go", "x\r\n"), &r);
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER); /* m2 skipped by deliver() */
  assert_int_equal(r.groups[0].n_headers, 2);
  assert_string_equal(r.groups[0].headers[0]->arg1, "X-M"); /* message filters first */
  assert_string_equal(r.groups[0].headers[1]->arg1, "X-C");
  policy_result_free(&r);
  eval1(c, MSG("sign", "x\r\n"), &r);
  assert_string_equal(r.groups[0].profile, "p1");
  policy_result_free(&r);
  config_unref(c);
}

static void test_smime_flags(void **state) {
  (void)state;
  struct config *c = load(
      "message_filters: |\n"
      "  q: if (smime-gateway-message and not smime-gateway-verified) { quarantine(\"Policy\"); }\n"
      "     else { insert-header(\"X-Ok\", \"1\"); }\n");
  char *rcpt[] = {"b@example.net"};
  const char *msg = MSG("x", "y\r\n");
  bool flags[3][2] = {{true, false}, {true, true}, {false, false}};
  enum policy_verdict want[3] = {POLICY_QUARANTINE, POLICY_DELIVER, POLICY_DELIVER};
  for (int i = 0; i < 3; i++) {
    struct policy_input in = {msg, strlen(msg), "a@b.c", rcpt, 1, NULL, 0, CONFIG_INCOMING, flags[i][0], flags[i][1], false};
    struct policy_result r;
    assert_int_equal(policy_evaluate(c, &in, &r), 0);
    assert_int_equal(r.groups[0].verdict, want[i]);
    assert_int_equal(r.groups[0].n_headers, want[i] == POLICY_DELIVER ? 1 : 0);
    policy_result_free(&r);
  }
  config_unref(c);
}

/* A split or a partial delivery leaves a message with fewer recipients:
 * the filters still judge it with its original ones (spool 'O' records),
 * so no part escapes what the whole message got.  And groups held,
 * dropped or bounced alike are not split for their headers or profile. */
static void test_original_recipients_keep_the_outcome(void **state) {
  (void)state;
  struct config *c = load(
      "content_filters:\n"
      "  - {name: s, direction: outgoing, condition: 'subject == \".\"', actions: ['smime-gateway(\"p1\")']}\n"
      "mail_policies:\n"
      "  - {name: bosses, direction: outgoing, senders: [\"*\"], recipients: [\"boss@example.com\"],"
      " content_filters: [s]}\n"
      "message_filters: |\n"
      "  boss: if (rcpt-to == \"^boss@\") { quarantine(\"Boss\"); }\n");
  char *both[] = {"boss@example.com", "alice@example.com"};
  struct policy_result r;
  assert_int_equal(eval(c, MSG("x", "y\r\n"), "a@b.c", both, 2, false, &r), 0);
  assert_int_equal(r.n_groups, 1); /* both held: not split for the profile */
  assert_int_equal(r.groups[0].verdict, POLICY_QUARANTINE);
  policy_result_free(&r);
  char *alice[] = {"alice@example.com"};
  struct policy_input in = {MSG("x", "y\r\n"), strlen(MSG("x", "y\r\n")), "a@b.c", alice, 1, both, 2,
                            CONFIG_OUTGOING, false, false, false};
  assert_int_equal(policy_evaluate(c, &in, &r), 0);
  assert_int_equal(r.groups[0].verdict, POLICY_QUARANTINE); /* alice alone, judged with boss */
  policy_result_free(&r);
  in.all_rcpts = NULL, in.n_all_rcpts = 0;
  assert_int_equal(policy_evaluate(c, &in, &r), 0);
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER);
  policy_result_free(&r);
  config_unref(c);
}

/* ---- what the filters see ------------------------------------------------------------- */

static void test_encoded_subject_and_lazy_body(void **state) {
  (void)state;
  struct config *c = chain("'insert-header(\"X-1\", \"1\")'", "'insert-header(\"X-2\", \"2\")'");
  struct policy_result r;
  /* "go" as an RFC 2047 encoded-word */
  eval1(c, "Subject: =?UTF-8?B?Z28=?=\r\n\r\nbody\r\n", &r);
  assert_int_equal(r.groups[0].n_headers, 2);
  assert_false(r.used_body);
  policy_result_free(&r);
  config_unref(c);
  c = load(
      "content_filters:\n"
      "  - {name: b, direction: outgoing, condition: 'subject == \"never\" and body-contains(\"x\")',"
      " actions: ['drop()']}\n"
      "  - {name: b2, direction: outgoing, condition: 'body-contains(\"SECRET\")', actions: ['drop()']}\n"
      "mail_policies:\n"
      "  - {name: default, direction: outgoing, senders: [\"*\"], recipients: [\"*\"], content_filters: [b]}\n"
      "  - {name: two, direction: outgoing, senders: [\"*\"], recipients: [\"@two.example\"], content_filters: [b2]}\n");
  eval1(c, MSG("hello", "a secret\r\n"), &r);
  assert_false(r.used_body); /* 'and' stopped at the subject */
  assert_int_equal(r.groups[0].verdict, POLICY_DELIVER);
  policy_result_free(&r);
  char *rcpt[] = {"z@two.example"};
  assert_int_equal(eval(c, MSG("hello", "a secret\r\n"), "a@b.c", rcpt, 1, false, &r), 0);
  assert_true(r.used_body);
  assert_int_equal(r.groups[0].verdict, POLICY_DROP);
  policy_result_free(&r);
  config_unref(c);
}

/* header() values: as they stand when plain (no copy), decoded and
 * unfolded otherwise; leading blanks never part of the value. */
static void test_header_values(void **state) {
  (void)state;
  struct config *c = load(
      "message_filters: |\n"
      "  plain: if (header(\"X-Plain\") == \"^v1 v2$\") { insert-header(\"X-1\", \"1\"); }\n"
      "  enc: if (header(\"X-Enc\") == \"^Gr\u00fc\u00dfe$\") { insert-header(\"X-2\", \"1\"); }\n"
      "  fold: if (header(\"X-Fold\") == \"^a b$\") { insert-header(\"X-3\", \"1\"); }\n"
      "  second: if (header(\"x-plain\") == \"^other$\") { insert-header(\"X-4\", \"1\"); }\n");
  struct policy_result r;
  eval1(c,
        "X-Plain:   v1 v2\r\nX-Enc: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nX-Fold: a\r\n b\r\nX-PLAIN: other\r\n"
        "Subject: s\r\n\r\nbody\r\n",
        &r);
  assert_int_equal(r.groups[0].n_headers, 4);
  policy_result_free(&r);
  config_unref(c);
}

static void test_insert_headers(void **state) {
  (void)state;
  struct config *c = chain("'insert-header(\"X-1\", \"one\")'", "'insert-header(\"X-2\", \"two\")'");
  struct policy_result r;
  const char *msg = MSG("go", "x\r\n");
  eval1(c, msg, &r);
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(policy_insert_headers(&r.groups[0], msg, strlen(msg), &out, &len), 0);
  const char *want = "X-1: one\r\nX-2: two\r\n";
  assert_int_equal(len, strlen(want) + strlen(msg));
  assert_memory_equal(out, want, strlen(want));
  assert_string_equal(out + strlen(want), msg);
  free(out);
  policy_result_free(&r);
  config_unref(c);
}

static void test_hostile_messages(void **state) {
  (void)state;
  struct config *c = chain("'insert-header(\"X-1\", \"1\")'", "'drop()'");
  const char *msgs[] = {"", "\r\n", "Subject", "Subject:", ":::\r\n\r\n", "Subject: go\r\n continued\r\n",
                        "\x80\xff: \xfe\r\n\r\n"};
  for (size_t i = 0; i < sizeof msgs / sizeof *msgs; i++) {
    struct policy_result r;
    char *rcpt[] = {"b@example.net"};
    struct policy_input in = {msgs[i], strlen(msgs[i]), "", rcpt, 1, NULL, 0, CONFIG_OUTGOING, false, false, false};
    assert_int_equal(policy_evaluate(c, &in, &r), 0);
    assert_int_equal(r.n_groups, 1);
    policy_result_free(&r);
  }
  /* POLICY_MAX_HEADERS fields before the Subject: still seen, dropped;
   * one more and the filters cannot see it all: held in Policy (fail
   * closed), never delivered on half a look. */
  for (size_t extra = 0; extra < 2; extra++) {
    size_t n = POLICY_MAX_HEADERS - 1 + extra, cap = n * 16 + 64;
    char *big = malloc(cap), *p = big;
    assert_non_null(big);
    for (size_t i = 0; i < n; i++) p += sprintf(p, "X-F%zu: v\r\n", i);
    strcpy(p, "Subject: go\r\n\r\nbody\r\n");
    struct policy_result r;
    char *rcpt[] = {"b@example.net"};
    struct policy_input in = {big, strlen(big), "", rcpt, 1, NULL, 0, CONFIG_OUTGOING, false, false, false};
    assert_int_equal(policy_evaluate(c, &in, &r), 0);
    if (!extra) {
      assert_int_equal(r.groups[0].verdict, POLICY_DROP);
    } else {
      assert_int_equal(r.groups[0].verdict, POLICY_QUARANTINE);
      assert_string_equal(r.groups[0].quarantine, "Policy");
      assert_non_null(strstr(r.groups[0].decided_by, "limits"));
    }
    policy_result_free(&r);
    free(big);
  }
  config_unref(c);
}

/* A body condition that met a MIME limit fails closed too. */
static void test_body_limits_fail_closed(void **state) {
  (void)state;
  struct config *c = load(
      "content_filters:\n"
      "  - {name: b, direction: outgoing, condition: 'body-contains(\"secret\")', actions: ['drop()']}\n"
      "mail_policies:\n"
      "  - {name: default, direction: outgoing, senders: [\"*\"], recipients: [\"*\"], content_filters: [b]}\n");
  struct buf m = BUF_INIT;
  buf_appendf(&m, "Subject: deep\r\nMIME-Version: 1.0\r\n");
  for (int i = 0; i < MIMEBODY_MAX_DEPTH + 2; i++)
    buf_appendf(&m, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
  buf_appendf(&m, "Content-Type: text/plain\r\n\r\nthe secret\r\n");
  for (int i = MIMEBODY_MAX_DEPTH + 1; i >= 0; i--) buf_appendf(&m, "--b%d--\r\n", i);
  char *rcpt[] = {"b@example.net"};
  struct policy_input in = {m.data, m.len, "", rcpt, 1, NULL, 0, CONFIG_OUTGOING, false, false, false};
  struct policy_result r;
  assert_int_equal(policy_evaluate(c, &in, &r), 0);
  assert_int_equal(r.groups[0].verdict, POLICY_QUARANTINE); /* the secret is hidden below the limit */
  assert_string_equal(r.groups[0].quarantine, "Policy");
  policy_result_free(&r);
  buf_free(&m);
  config_unref(c);
}

int main(void) {
  mimebody_global_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_address_patterns),
      cmocka_unit_test(test_bad_patterns_rejected),
      cmocka_unit_test(test_default_is_tried_last_and_groups_split),
      cmocka_unit_test(test_implicit_default_and_direction),
      cmocka_unit_test(test_filter_of_other_direction_rejected),
      cmocka_unit_test(test_final_skips_later_filters),
      cmocka_unit_test(test_on_delivery_continues),
      cmocka_unit_test(test_on_delivery_then_drop_drops),
      cmocka_unit_test(test_quarantine_keeps_later_actions_and_released_skips_it),
      cmocka_unit_test(test_bounce_and_last_profile_wins),
      cmocka_unit_test(test_message_filters_first_and_deliver_does_not_stop_content_filters),
      cmocka_unit_test(test_smime_flags),
      cmocka_unit_test(test_original_recipients_keep_the_outcome),
      cmocka_unit_test(test_encoded_subject_and_lazy_body),
      cmocka_unit_test(test_header_values),
      cmocka_unit_test(test_insert_headers),
      cmocka_unit_test(test_hostile_messages),
      cmocka_unit_test(test_body_limits_fail_closed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
