/*
 * Unit tests for core/smtp_parser: golden command lines, MAIL/RCPT/HELO
 * arguments and every error reply (code and enhanced code), plus garbage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/sgerr.h"
#include "core/smtp_parser.h"

/* Length of a string literal that may contain NUL bytes. */
#define L(s) (sizeof(s) - 1)

/* ---- smtp_parse_command ---- */

struct cmd_case {
  const char *line;
  size_t len;
  int rc;
  enum smtp_verb verb;
  const char *arg; /* expected argument when rc == 0 */
  int code;        /* expected reply when rc != 0 */
  const char *enh;
};

#define OK(s, v, a) {s, L(s), 0, v, a, 0, NULL}
#define BAD(s, v, c, e) {s, L(s), SG_ESYNTAX, v, NULL, c, e}

static const struct cmd_case cmd_cases[] = {
    OK("HELO example.com", SMTP_VERB_HELO, "example.com"),
    OK("helo example.com", SMTP_VERB_HELO, "example.com"),
    OK("EhLo example.com", SMTP_VERB_EHLO, "example.com"),
    OK("EHLO   example.com  \t", SMTP_VERB_EHLO, "example.com"), /* HELO/EHLO args trimmed */
    OK("EHLO", SMTP_VERB_EHLO, ""),
    OK("MAIL FROM:<a@b.c>", SMTP_VERB_MAIL, "FROM:<a@b.c>"),
    OK("mail FROM:<a@b.c> SIZE=10", SMTP_VERB_MAIL, "FROM:<a@b.c> SIZE=10"),
    OK("RCPT TO:<a@b.c>", SMTP_VERB_RCPT, "TO:<a@b.c>"),
    OK("rcpt to:<a@b.c>", SMTP_VERB_RCPT, "to:<a@b.c>"),
    OK("DATA", SMTP_VERB_DATA, ""),
    OK("data", SMTP_VERB_DATA, ""),
    OK("DATA ", SMTP_VERB_DATA, ""), /* trailing blank tolerated */
    OK("RSET", SMTP_VERB_RSET, ""),
    OK("QUIT", SMTP_VERB_QUIT, ""),
    OK("qUiT", SMTP_VERB_QUIT, ""),
    OK("STARTTLS", SMTP_VERB_STARTTLS, ""),
    OK("NOOP", SMTP_VERB_NOOP, ""),
    OK("NOOP hello there", SMTP_VERB_NOOP, "hello there"),
    OK("HELP", SMTP_VERB_HELP, ""),
    OK("HELP MAIL", SMTP_VERB_HELP, "MAIL"),
    OK("VRFY", SMTP_VERB_VRFY, ""),
    OK("VRFY postmaster", SMTP_VERB_VRFY, "postmaster"),
    OK("EXPN list", SMTP_VERB_EXPN, "list"),
    OK("BDAT 100 LAST", SMTP_VERB_BDAT, "100 LAST"),
    OK("AUTH PLAIN", SMTP_VERB_AUTH, "PLAIN"),
    OK("NOOP a\tb", SMTP_VERB_NOOP, "a\tb"), /* TAB is allowed */
    OK("GET / HTTP/1.1", SMTP_VERB_HTTP, ""),
    OK("POST /x HTTP/1.0", SMTP_VERB_HTTP, ""),
    OK("HEAD / HTTP/1.1", SMTP_VERB_HTTP, ""),
    OK("PUT /f HTTP/1.1", SMTP_VERB_HTTP, ""),
    OK("CONNECT mx.example:25 HTTP/1.1", SMTP_VERB_HTTP, ""),
    OK("get / HTTP/1.1", SMTP_VERB_HTTP, ""),
    OK("GET /\x80 HTTP/1.1", SMTP_VERB_HTTP, ""), /* HTTP is recognised first */
    BAD("GET", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("GETX /", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD(" HELO x", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("FOO", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("FOO bar", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("MAILFROM:<a@b>", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("MAIL\tFROM:<a@b>", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("HEL", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("HELOO x", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("STARTTLSX", SMTP_VERB_UNKNOWN, 500, "5.5.1"),
    BAD("DATA\0", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("NOOP a\0b", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("NOOP a\rb", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("DATA\r", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("NOOP a\nb", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("NOOP \x01", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("NOOP \x7f", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("NOOP \x80", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("NOOP \xff", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("RCPT TO:<b\xc3\xa9@x.y>", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("\x1b[A", SMTP_VERB_UNKNOWN, 500, "5.5.2"),
    BAD("DATA x", SMTP_VERB_DATA, 501, "5.5.4"),
    BAD("RSET now", SMTP_VERB_RSET, 501, "5.5.4"),
    BAD("QUIT bye", SMTP_VERB_QUIT, 501, "5.5.4"),
    BAD("STARTTLS x", SMTP_VERB_STARTTLS, 501, "5.5.4"),
};

static void test_command_golden(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cmd_cases / sizeof cmd_cases[0]; i++) {
    const struct cmd_case *t = &cmd_cases[i];
    struct smtp_cmd cmd;
    struct smtp_error err = {0, NULL, NULL};
    int rc = smtp_parse_command(t->line, t->len, &cmd, &err);
    if (rc != t->rc || cmd.verb != t->verb) fail_msg("case %zu \"%s\": rc %d verb %d", i, t->line, rc, cmd.verb);
    if (rc == 0 && t->verb != SMTP_VERB_HTTP) {
      assert_int_equal(cmd.arg_len, strlen(t->arg));
      assert_memory_equal(cmd.arg, t->arg, cmd.arg_len);
    }
    if (rc != 0) {
      if (err.code != t->code || strcmp(err.enh, t->enh) != 0)
        fail_msg("case %zu \"%s\": reply %d %s", i, t->line, err.code, err.enh);
      assert_non_null(err.text);
      assert_true(strlen(err.text) > 0);
    }
  }
}

/* The argument must point into the caller's line (no copies). */
static void test_command_arg_points_into_line(void **state) {
  (void)state;
  const char line[] = "MAIL FROM:<a@b.c>";
  struct smtp_cmd cmd;
  struct smtp_error err;
  assert_int_equal(smtp_parse_command(line, L(line), &cmd, &err), 0);
  assert_ptr_equal(cmd.arg, line + 5);
  /* A line that is not NUL-terminated: only len bytes may be read. */
  char *heap = malloc(4);
  memcpy(heap, "QUIT", 4);
  assert_int_equal(smtp_parse_command(heap, 4, &cmd, &err), 0);
  assert_int_equal(cmd.verb, SMTP_VERB_QUIT);
  free(heap);
}

/* ---- smtp_parse_mail ---- */

struct mail_case {
  const char *arg;
  int code; /* 0: success */
  const char *enh;
  const char *addr;
  bool has_size;
  uint64_t size;
  enum smtp_body body;
};

#define MOK(a, addr) {a, 0, NULL, addr, false, 0, SMTP_BODY_7BIT}
#define MBAD(a, c, e) {a, c, e, NULL, false, 0, SMTP_BODY_7BIT}

static const struct mail_case mail_cases[] = {
    MOK("FROM:<a@b.c>", "a@b.c"),
    MOK("from:<a@b.c>", "a@b.c"),
    MOK("From:<A.B@Example.COM>", "A.B@Example.COM"),
    MOK("FROM:<>", ""),
    MOK("FROM: <a@b.c>", "a@b.c"), /* one space after the colon tolerated */
    MOK("FROM:   <a@b.c>", "a@b.c"),
    MOK("FROM:<a@b.c> ", "a@b.c"),
    MOK("FROM:<@relay.example:a@b.c>", "a@b.c"), /* source route dropped */
    MOK("FROM:<@r1.example,@r2.example:a@b.c>", "a@b.c"),
    MOK("FROM:<\"john doe\"@b.c>", "\"john doe\"@b.c"),
    MOK("FROM:<\"a\\\"b\"@b.c>", "\"a\\\"b\"@b.c"),
    MOK("FROM:<\"a@b\"@c.d>", "\"a@b\"@c.d"),
    MOK("FROM:<\"a>b\"@c.d>", "\"a>b\"@c.d"),
    MOK("FROM:<\"\"@c.d>", "\"\"@c.d"),
    MOK("FROM:<!#$%&'*+-/=?^_`{|}~@b.c>", "!#$%&'*+-/=?^_`{|}~@b.c"),
    MOK("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]"),
    MOK("FROM:<a@[255.255.255.255]>", "a@[255.255.255.255]"),
    MOK("FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
    MOK("FROM:<a@[ipv6:::1]>", "a@[ipv6:::1]"),
    MOK("FROM:<a@[IPv6:2001:db8:0:0:0:0:2:1]>", "a@[IPv6:2001:db8:0:0:0:0:2:1]"),
    MOK("FROM:<a@[IPv6:::ffff:192.0.2.1]>", "a@[IPv6:::ffff:192.0.2.1]"),
    MOK("FROM:<a@x-y.example>", "a@x-y.example"),
    MOK("FROM:<a@1.2.3.4>", "a@1.2.3.4"),
    MOK("FROM:<a@localhost>", "a@localhost"),
    {"FROM:<a@b.c> SIZE=12345", 0, NULL, "a@b.c", true, 12345, SMTP_BODY_7BIT},
    {"FROM:<a@b.c> size=0", 0, NULL, "a@b.c", true, 0, SMTP_BODY_7BIT},
    {"FROM:<a@b.c> SIZE=18446744073709551615", 0, NULL, "a@b.c", true, UINT64_MAX, SMTP_BODY_7BIT},
    {"FROM:<a@b.c> BODY=8BITMIME", 0, NULL, "a@b.c", false, 0, SMTP_BODY_8BITMIME},
    {"FROM:<a@b.c> body=8bitmime", 0, NULL, "a@b.c", false, 0, SMTP_BODY_8BITMIME},
    {"FROM:<a@b.c> BODY=7BIT", 0, NULL, "a@b.c", false, 0, SMTP_BODY_7BIT},
    {"FROM:<> SIZE=10  BODY=8BITMIME ", 0, NULL, "", true, 10, SMTP_BODY_8BITMIME},
    {"FROM:<a@b.c> BODY=8BITMIME SIZE=7", 0, NULL, "a@b.c", true, 7, SMTP_BODY_8BITMIME},
    /* syntax of the command itself */
    MBAD("", 501, "5.5.4"),
    MBAD("FROM:", 501, "5.5.4"),
    MBAD("FROM: ", 501, "5.5.4"),
    MBAD("FROM", 501, "5.5.4"),
    MBAD("TO:<a@b.c>", 501, "5.5.4"),
    MBAD(" FROM:<a@b.c>", 501, "5.5.4"),
    MBAD("FROM :<a@b.c>", 501, "5.5.4"),
    MBAD("FROM:a@b.c", 501, "5.5.4"), /* no angle brackets */
    MBAD("FROM:a@b.c SIZE=1", 501, "5.5.4"),
    MBAD("FROM:\t<a@b.c>", 501, "5.5.4"),
    /* bad paths */
    MBAD("FROM:<a@b.c", 501, "5.1.7"),
    MBAD("FROM:<a>", 501, "5.1.7"),
    MBAD("FROM:<a@>", 501, "5.1.7"),
    MBAD("FROM:<@b.c>", 501, "5.1.7"),
    MBAD("FROM:<a@b..c>", 501, "5.1.7"),
    MBAD("FROM:<a@b.c.>", 501, "5.1.7"),
    MBAD("FROM:<a@.b.c>", 501, "5.1.7"),
    MBAD("FROM:<a@-b.c>", 501, "5.1.7"),
    MBAD("FROM:<a@b-.c>", 501, "5.1.7"),
    MBAD("FROM:<a@b_c.d>", 501, "5.1.7"),
    MBAD("FROM:<a..b@c.d>", 501, "5.1.7"),
    MBAD("FROM:<.a@c.d>", 501, "5.1.7"),
    MBAD("FROM:<a.@c.d>", 501, "5.1.7"),
    MBAD("FROM:<a b@c.d>", 501, "5.1.7"),
    MBAD("FROM:<a@b@c.d>", 501, "5.1.7"),
    MBAD("FROM:<a(x)@c.d>", 501, "5.1.7"),
    MBAD("FROM:<\"abc@c.d>", 501, "5.1.7"),
    MBAD("FROM:<\"a\\\x01\"@c.d>", 501, "5.1.7"),
    MBAD("FROM:<\"a\tb\"@c.d>", 501, "5.1.7"),
    MBAD("FROM:<a@[1.2.3]>", 501, "5.1.7"),
    MBAD("FROM:<a@[1.2.3.256]>", 501, "5.1.7"),
    MBAD("FROM:<a@[1.2.3.4.5]>", 501, "5.1.7"),
    MBAD("FROM:<a@[1.2.3.0001]>", 501, "5.1.7"),
    MBAD("FROM:<a@[1.2.3.4>", 501, "5.1.7"),
    MBAD("FROM:<a@[]>", 501, "5.1.7"),
    MBAD("FROM:<a@[IPv6:]>", 501, "5.1.7"),
    MBAD("FROM:<a@[IPv6:1::2::3]>", 501, "5.1.7"),
    MBAD("FROM:<a@[IPv6:12345::1]>", 501, "5.1.7"),
    MBAD("FROM:<a@[IPv6:fe80::1%eth0]>", 501, "5.1.7"),
    MBAD("FROM:<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 501, "5.1.7"),
    MBAD("FROM:<a@[2001:db8::1]>", 501, "5.1.7"),
    MBAD("FROM:<a@[x-tag:whatever]>", 501, "5.1.7"),
    MBAD("FROM:<a@[IPv4:1.2.3.4]>", 501, "5.1.7"),
    MBAD("FROM:<a@[1.2.3.4]x>", 501, "5.1.7"),
    MBAD("FROM:<@r1.example a@b.c>", 501, "5.1.7"),
    MBAD("FROM:<@r1.example:>", 501, "5.1.7"),
    MBAD("FROM:<@r1.example,a@b.c>", 501, "5.1.7"),
    MBAD("FROM:<<a@b.c>>", 501, "5.1.7"),
    MBAD("FROM:< a@b.c>", 501, "5.1.7"),
    MBAD("FROM:<a@b.c >", 501, "5.1.7"),
    /* parameters */
    MBAD("FROM:<a@b.c>SIZE=1", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SIZE", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SIZE=", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SIZE=-1", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SIZE=1k", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SIZE=18446744073709551616", 552, "5.3.4"),
    MBAD("FROM:<a@b.c> SIZE=99999999999999999999999999999", 552, "5.3.4"),
    MBAD("FROM:<a@b.c> SIZE=1 SIZE=1", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> BODY=7BIT body=8BITMIME", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> BODY=BINARYMIME", 555, "5.5.4"),
    MBAD("FROM:<a@b.c> BODY=binarymime", 555, "5.5.4"),
    MBAD("FROM:<a@b.c> BODY=8BIT", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> BODY", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SMTPUTF8", 555, "5.5.4"),
    MBAD("FROM:<a@b.c> AUTH=<>", 555, "5.5.4"),
    MBAD("FROM:<a@b.c> RET=FULL ENVID=x", 555, "5.5.4"),
    MBAD("FROM:<a@b.c> X-FOO=bar", 555, "5.5.4"),
    MBAD("FROM:<a@b.c> =bar", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> -X=1", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> A=b=c", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SIZE=1\tBODY=7BIT", 501, "5.5.4"),
    MBAD("FROM:<a@b.c> SIZE=1 x", 555, "5.5.4"),
};

static void test_mail_golden(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof mail_cases / sizeof mail_cases[0]; i++) {
    const struct mail_case *t = &mail_cases[i];
    struct smtp_mail_args m;
    struct smtp_error err = {0, NULL, NULL};
    int rc = smtp_parse_mail(t->arg, strlen(t->arg), &m, &err);
    if (t->code == 0) {
      if (rc != 0) fail_msg("case %zu \"%s\": rc %d (%d %s %s)", i, t->arg, rc, err.code, err.enh, err.text);
      assert_string_equal(m.addr, t->addr);
      assert_int_equal(m.addr_len, strlen(t->addr));
      assert_int_equal(m.has_size, t->has_size);
      if (t->has_size) assert_true(m.size == t->size);
      assert_int_equal(m.body, t->body);
    } else {
      if (rc != SG_ESYNTAX) fail_msg("case %zu \"%s\": rc %d addr \"%s\"", i, t->arg, rc, m.addr);
      if (err.code != t->code || strcmp(err.enh, t->enh) != 0)
        fail_msg("case %zu \"%s\": reply %d %s %s", i, t->arg, err.code, err.enh, err.text);
    }
  }
}

/* Builds "FROM:<local@domain>" whose path (with brackets) is path_len long. */
static void make_long_path(char *buf, size_t path_len, const char *prefix) {
  /* domain: labels of 50 'd's plus dots; local part fills the rest */
  char domain[200];
  size_t dl = 0;
  for (int l = 0; l < 3; l++) {
    if (l) domain[dl++] = '.';
    memset(domain + dl, 'd', 50);
    dl += 50;
  }
  domain[dl] = '\0';
  size_t local = path_len - 2 - 1 - dl;
  strcpy(buf, prefix);
  strcat(buf, "<");
  size_t o = strlen(buf);
  memset(buf + o, 'l', local);
  buf[o + local] = '\0';
  strcat(buf, "@");
  strcat(buf, domain);
  strcat(buf, ">");
}

static void test_mail_path_length(void **state) {
  (void)state;
  char line[600];
  struct smtp_mail_args m;
  struct smtp_error err;
  make_long_path(line, SMTP_PATH_MAX, "FROM:");
  assert_int_equal(smtp_parse_mail(line, strlen(line), &m, &err), 0);
  assert_int_equal(m.addr_len, SMTP_PATH_MAX - 2);
  assert_int_equal(strlen(m.addr), SMTP_PATH_MAX - 2);
  make_long_path(line, SMTP_PATH_MAX + 1, "FROM:");
  assert_int_equal(smtp_parse_mail(line, strlen(line), &m, &err), SG_ESYNTAX);
  assert_int_equal(err.code, 501);
  assert_string_equal(err.enh, "5.1.7");
  /* A long source route does not count against the mailbox, but does
   * against the path. */
  make_long_path(line, SMTP_PATH_MAX - 10, "FROM:");
  char routed[700];
  snprintf(routed, sizeof routed, "FROM:<@r.example:%s", line + 6);
  assert_int_equal(smtp_parse_mail(routed, strlen(routed), &m, &err), SG_ESYNTAX);
  assert_int_equal(err.code, 501);
  /* A label over 63 octets and a domain over 255 are bad syntax. */
  char lbl[100];
  snprintf(lbl, sizeof lbl, "FROM:<a@%064d.example>", 0);
  assert_int_equal(smtp_parse_mail(lbl, strlen(lbl), &m, &err), SG_ESYNTAX);
  assert_string_equal(err.enh, "5.1.7");
  snprintf(lbl, sizeof lbl, "FROM:<a@%063d.example>", 0);
  assert_int_equal(smtp_parse_mail(lbl, strlen(lbl), &m, &err), 0);
}

/* ---- smtp_parse_rcpt ---- */

struct rcpt_case {
  const char *arg;
  int code;
  const char *enh;
  const char *addr;
};

static const struct rcpt_case rcpt_cases[] = {
    {"TO:<a@b.c>", 0, NULL, "a@b.c"},
    {"to:<a@b.c>", 0, NULL, "a@b.c"},
    {"To: <a@b.c>", 0, NULL, "a@b.c"},
    {"TO:<a@b.c>  ", 0, NULL, "a@b.c"},
    {"TO:<@hop1,@hop2:user@[IPv6:2001:db8::5]>", 0, NULL, "user@[IPv6:2001:db8::5]"},
    {"TO:<\"odd local\"@b.c>", 0, NULL, "\"odd local\"@b.c"},
    {"TO:<postmaster>", 0, NULL, "postmaster"},
    {"TO:<Postmaster>", 0, NULL, "postmaster"},
    {"TO:<POSTMASTER> ", 0, NULL, "postmaster"},
    {"TO:<postmaster@b.c>", 0, NULL, "postmaster@b.c"},
    {"TO:<>", 501, "5.1.3", NULL},
    {"TO:<abuse>", 501, "5.1.3", NULL},
    {"TO:<postmasterx>", 501, "5.1.3", NULL},
    {"TO:<postmaster>x", 501, "5.1.3", NULL},
    {"TO:<a@b.c>x", 501, "5.1.3", NULL},
    {"TO:<a@b..c>", 501, "5.1.3", NULL},
    {"TO:<a@b.c", 501, "5.1.3", NULL},
    {"TO:<a@[300.1.1.1]>", 501, "5.1.3", NULL},
    {"TO:a@b.c", 501, "5.5.4", NULL},
    {"TO:", 501, "5.5.4", NULL},
    {"", 501, "5.5.4", NULL},
    {"FROM:<a@b.c>", 501, "5.5.4", NULL},
    {"TO:<a@b.c> NOTIFY=NEVER", 555, "5.5.4", NULL},
    {"TO:<a@b.c> ORCPT=rfc822;a@b.c", 555, "5.5.4", NULL},
    {"TO:<postmaster> X", 555, "5.5.4", NULL},
};

static void test_rcpt_golden(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof rcpt_cases / sizeof rcpt_cases[0]; i++) {
    const struct rcpt_case *t = &rcpt_cases[i];
    struct smtp_rcpt_args r;
    struct smtp_error err = {0, NULL, NULL};
    int rc = smtp_parse_rcpt(t->arg, strlen(t->arg), &r, &err);
    if (t->code == 0) {
      if (rc != 0) fail_msg("case %zu \"%s\": rc %d (%d %s)", i, t->arg, rc, err.code, err.enh);
      assert_string_equal(r.addr, t->addr);
      assert_int_equal(r.addr_len, strlen(t->addr));
    } else {
      if (rc != SG_ESYNTAX) fail_msg("case %zu \"%s\": accepted", i, t->arg);
      if (err.code != t->code || strcmp(err.enh, t->enh) != 0)
        fail_msg("case %zu \"%s\": reply %d %s", i, t->arg, err.code, err.enh);
    }
  }
}

static void test_rcpt_path_length(void **state) {
  (void)state;
  char line[600];
  struct smtp_rcpt_args r;
  struct smtp_error err;
  make_long_path(line, SMTP_PATH_MAX, "TO:");
  assert_int_equal(smtp_parse_rcpt(line, strlen(line), &r, &err), 0);
  make_long_path(line, SMTP_PATH_MAX + 1, "TO:");
  assert_int_equal(smtp_parse_rcpt(line, strlen(line), &r, &err), SG_ESYNTAX);
  assert_int_equal(err.code, 501);
  assert_string_equal(err.enh, "5.1.3");
}

/* ---- smtp_parse_helo ---- */

static void test_helo(void **state) {
  (void)state;
  static const char *const good[] = {
      "example.com", "mx1.example.com", "localhost", "a", "x-y.z0", "[192.0.2.1]", "[IPv6:::1]",
      "[IPv6:2001:db8::25]", " example.com ", "\texample.com", "EXAMPLE.COM", "1.2.3.4",
      /* accepted on purpose, as Postfix does: real clients send these */
      "my_pc", "example.com.", "-a.b", "a-.b", "a..b", ".example.com", "a@b",
  };
  static const char *const bad[] = {
      "exa mple.com", "example.com foo", "[192.0.2.1", "[1.2.3.999]", "[IPv6:zz::1]", "[]",
      "<a@b>", "ex\"ample", "a(b)", "a;b", "x]",
  };
  struct smtp_error err;
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    if (smtp_parse_helo(good[i], strlen(good[i]), &err) != 0) fail_msg("good HELO \"%s\" refused", good[i]);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err.code = 0;
    if (smtp_parse_helo(bad[i], strlen(bad[i]), &err) != SG_ESYNTAX) fail_msg("bad HELO \"%s\" accepted", bad[i]);
    assert_int_equal(err.code, 501);
    assert_string_equal(err.enh, "5.5.4");
  }
  static const char *const empty[] = {"", " ", " \t "};
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(smtp_parse_helo(empty[i], strlen(empty[i]), &err), SG_ESYNTAX);
    assert_int_equal(err.code, 501);
    assert_string_equal(err.enh, "5.5.4");
    assert_string_equal(err.text, "HELO requires domain");
  }
  /* 255 octets of domain is the limit. */
  char dom[300];
  size_t n = 0;
  while (n + 64 <= 255) {
    memset(dom + n, 'a', 63);
    n += 63;
    dom[n++] = '.';
  }
  memset(dom + n, 'b', 255 - n);
  n = 255;
  assert_int_equal(smtp_parse_helo(dom, n, &err), 0);
  dom[n++] = 'c';
  assert_int_equal(smtp_parse_helo(dom, n, &err), SG_ESYNTAX);
}

/* ---- smtp_addr_domain ---- */

static void test_addr_domain(void **state) {
  (void)state;
  assert_string_equal(smtp_addr_domain("a@b.c"), "b.c");
  assert_string_equal(smtp_addr_domain("\"x@y\"@b.c"), "b.c");
  assert_string_equal(smtp_addr_domain("a@[IPv6:::1]"), "[IPv6:::1]");
  assert_string_equal(smtp_addr_domain("a@"), "");
  assert_null(smtp_addr_domain("postmaster"));
  assert_null(smtp_addr_domain(""));
  assert_null(smtp_addr_domain(NULL));
}

/* ---- the end-to-end path from a line to an address ---- */

static void test_command_then_mail(void **state) {
  (void)state;
  const char line[] = "MAIL FROM:<Alice@Example.org> BODY=8BITMIME SIZE=4096";
  struct smtp_cmd cmd;
  struct smtp_error err;
  struct smtp_mail_args m;
  assert_int_equal(smtp_parse_command(line, L(line), &cmd, &err), 0);
  assert_int_equal(cmd.verb, SMTP_VERB_MAIL);
  assert_int_equal(smtp_parse_mail(cmd.arg, cmd.arg_len, &m, &err), 0);
  assert_string_equal(m.addr, "Alice@Example.org");
  assert_string_equal(smtp_addr_domain(m.addr), "Example.org");
  assert_true(m.has_size && m.size == 4096);
  assert_int_equal(m.body, SMTP_BODY_8BITMIME);
}

/* ---- garbage: every function on random and mutated input ---- */

static uint32_t rng_state = 12345;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static void check_all(const char *s, size_t n) {
  struct smtp_cmd cmd;
  struct smtp_mail_args m;
  struct smtp_rcpt_args r;
  struct smtp_error err;
  int rc = smtp_parse_command(s, n, &cmd, &err);
  assert_true(rc == 0 || (rc == SG_ESYNTAX && err.code >= 500 && err.enh && err.text));
  if (rc == 0 && cmd.arg_len > 0) assert_true(cmd.arg > s && cmd.arg + cmd.arg_len <= s + n);
  rc = smtp_parse_mail(s, n, &m, &err);
  assert_true(rc == 0 || (rc == SG_ESYNTAX && err.code >= 500));
  if (rc == 0) assert_true(m.addr_len <= SMTP_PATH_MAX - 2 && strlen(m.addr) == m.addr_len);
  rc = smtp_parse_rcpt(s, n, &r, &err);
  assert_true(rc == 0 || (rc == SG_ESYNTAX && err.code >= 500));
  if (rc == 0) assert_true(r.addr_len > 0 && strlen(r.addr) == r.addr_len);
  rc = smtp_parse_helo(s, n, &err);
  assert_true(rc == 0 || (rc == SG_ESYNTAX && err.code == 501));
}

static void test_garbage(void **state) {
  (void)state;
  static const char *const seeds[] = {
      "MAIL FROM:<a@b.c> SIZE=1 BODY=8BITMIME", "FROM:<@a,@b:\"q\\\"x\"@[IPv6:::ffff:1.2.3.4]> SIZE=9",
      "TO:<postmaster>", "RCPT TO:<x@[1.2.3.4]>", "EHLO [IPv6:2001:db8::1]", "GET / HTTP/1.1",
  };
  char buf[600];
  for (int iter = 0; iter < 200000; iter++) {
    size_t n;
    if (iter % 2) { /* pure noise, biased towards interesting bytes */
      n = rng() % 80;
      for (size_t i = 0; i < n; i++) {
        static const char alphabet[] = "<>@:.,[]\"\\ =-FROMTOIPv6:0123456789abcxyz\0\r\n\t\x80\xff";
        buf[i] = (rng() % 4) ? alphabet[rng() % (sizeof alphabet - 1)] : (char)rng();
      }
    } else { /* a mutated valid seed */
      const char *s = seeds[rng() % (sizeof seeds / sizeof seeds[0])];
      n = strlen(s);
      memcpy(buf, s, n);
      for (int k = rng() % 4; k >= 0; k--) {
        size_t at = n ? rng() % n : 0;
        switch (rng() % 3) {
          case 0: buf[at] = (char)rng(); break;
          case 1: if (n) { memmove(buf + at, buf + at + 1, n - at - 1); n--; } break;
          default: if (n < sizeof buf - 1) { memmove(buf + at + 1, buf + at, n - at); buf[at] = "<>@:\"\\[]. "[rng() % 10]; n++; }
        }
      }
    }
    /* An exact-size heap copy, so ASan catches any read past len. */
    char *heap = malloc(n ? n : 1);
    memcpy(heap, buf, n);
    check_all(heap, n);
    free(heap);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_command_golden),
      cmocka_unit_test(test_command_arg_points_into_line),
      cmocka_unit_test(test_mail_golden),
      cmocka_unit_test(test_mail_path_length),
      cmocka_unit_test(test_rcpt_golden),
      cmocka_unit_test(test_rcpt_path_length),
      cmocka_unit_test(test_helo),
      cmocka_unit_test(test_addr_domain),
      cmocka_unit_test(test_command_then_mail),
      cmocka_unit_test(test_garbage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
