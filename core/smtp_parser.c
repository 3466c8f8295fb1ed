/*
 * smtp_parser - see smtp_parser.h.
 *
 * The path grammar follows RFC 5321 4.1.2 closely and is deliberately
 * strict: an address we accept is passed to policy, key lookup and the next
 * hop, so anything we cannot parse exactly is refused at the door rather
 * than interpreted differently by each later stage.  All parsing is done
 * with a cursor over (pointer, end), never relying on a NUL terminator,
 * because the line comes straight from the socket buffer.
 */
#include "core/smtp_parser.h"

#include <arpa/inet.h>
#include <string.h>

#include "core/sgerr.h"

/* The replies, in one place so the tests and the session see one text each. */
static const struct smtp_error E_BADCHAR = {500, "5.5.2", "Syntax error: invalid character in command"};
static const struct smtp_error E_UNKNOWN = {500, "5.5.1", "Command unrecognized"};
static const struct smtp_error E_NOARG = {501, "5.5.4", "Syntax error: this command takes no argument"};
static const struct smtp_error E_MAIL_SYNTAX = {501, "5.5.4", "Syntax: MAIL FROM:<address>"};
static const struct smtp_error E_RCPT_SYNTAX = {501, "5.5.4", "Syntax: RCPT TO:<address>"};
static const struct smtp_error E_NO_BRACKETS = {501, "5.5.4", "Syntax error: address must be enclosed in <>"};
static const struct smtp_error E_MAIL_BADPATH = {501, "5.1.7", "Bad sender address syntax"};
static const struct smtp_error E_MAIL_LONGPATH = {501, "5.1.7", "Sender address too long"};
static const struct smtp_error E_RCPT_BADPATH = {501, "5.1.3", "Bad recipient address syntax"};
static const struct smtp_error E_RCPT_LONGPATH = {501, "5.1.3", "Recipient address too long"};
static const struct smtp_error E_RCPT_NULL = {501, "5.1.3", "Null recipient address not allowed"};
static const struct smtp_error E_PARAM_SYNTAX = {501, "5.5.4", "Syntax error in parameters"};
static const struct smtp_error E_PARAM_DUP = {501, "5.5.4", "Duplicate parameter"};
static const struct smtp_error E_PARAM_UNSUP = {555, "5.5.4", "Unsupported parameter"};
static const struct smtp_error E_SIZE_SYNTAX = {501, "5.5.4", "Invalid SIZE value"};
static const struct smtp_error E_SIZE_BIG = {552, "5.3.4", "Message size exceeds fixed maximum message size"};
static const struct smtp_error E_BODY_SYNTAX = {501, "5.5.4", "Invalid BODY value"};
static const struct smtp_error E_BODY_BINARY = {555, "5.5.4", "BODY=BINARYMIME not supported"};
static const struct smtp_error E_RCPT_PARAM = {555, "5.5.4", "RCPT TO parameters not supported"};
static const struct smtp_error E_HELO_EMPTY = {501, "5.5.4", "HELO requires domain"};
static const struct smtp_error E_HELO_BAD = {501, "5.5.4", "Invalid domain name in HELO"};

static int fail(struct smtp_error *err, const struct smtp_error *e) {
  if (err) *err = *e;
  return SG_ESYNTAX;
}

/* A read cursor; p never passes end. */
struct cur {
  const char *p;
  const char *end;
};

static bool cur_eat(struct cur *c, char ch) {
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

static bool is_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_letdig(unsigned char c) { return is_alpha(c) || is_digit(c); }
static bool is_hex(unsigned char c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }

/* RFC 5322 atext. */
static bool is_atext(unsigned char c) {
  return is_letdig(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c; }

/* ASCII case-insensitive prefix test on a counted string. */
static bool has_prefix_ci(const char *s, size_t len, const char *prefix) {
  size_t n = strlen(prefix);
  if (len < n) return false;
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)s[i]) != lower((unsigned char)prefix[i])) return false;
  return true;
}

static bool eq_ci(const char *s, size_t len, const char *word) {
  return len == strlen(word) && has_prefix_ci(s, len, word);
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].
 * Labels are also held to the DNS limit of 63 octets, the whole to 255. */
static bool parse_domain(struct cur *c) {
  const char *start = c->p;
  for (;;) {
    const char *label = c->p;
    if (c->p >= c->end || !is_letdig((unsigned char)*c->p)) return false;
    while (c->p < c->end && (is_letdig((unsigned char)*c->p) || *c->p == '-')) c->p++;
    if (c->p[-1] == '-' || c->p - label > 63) return false;
    if (c->p - start > SMTP_DOMAIN_MAX) return false;
    if (!(c->p + 1 < c->end && c->p[0] == '.' && is_letdig((unsigned char)c->p[1]))) return true;
    c->p++; /* the dot, known to be followed by a label */
  }
}

/* IPv4-address-literal = Snum 3("." Snum), Snum 0..255 in 1-3 digits. */
static bool ipv4_literal_ok(const char *s, size_t len) {
  struct cur c = {s, s + len};
  for (int i = 0; i < 4; i++) {
    if (i > 0 && !cur_eat(&c, '.')) return false;
    unsigned v = 0, n = 0;
    while (c.p < c.end && is_digit((unsigned char)*c.p) && n < 3) v = v * 10 + (unsigned)(*c.p++ - '0'), n++;
    if (n == 0 || v > 255) return false;
  }
  return c.p == c.end;
}

/* IPv6-address-literal = "IPv6:" IPv6-addr.  The RFC 5321 forms are the
 * textual forms of RFC 4291, which inet_pton() checks exactly. */
static bool ipv6_literal_ok(const char *s, size_t len) {
  char tmp[INET6_ADDRSTRLEN];
  unsigned char bin[16];
  if (len == 0 || len >= sizeof tmp) return false;
  for (size_t i = 0; i < len; i++)
    if (!is_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.') return false;
  memcpy(tmp, s, len);
  tmp[len] = '\0';
  return inet_pton(AF_INET6, tmp, bin) == 1;
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 ) "]".  General-address-literal
 * (a registered tag other than IPv6) is refused: none is standardised. */
static bool parse_addr_literal(struct cur *c) {
  if (!cur_eat(c, '[')) return false;
  const char *in = c->p;
  const char *close = memchr(in, ']', (size_t)(c->end - in));
  if (!close) return false;
  size_t n = (size_t)(close - in);
  bool ok = has_prefix_ci(in, n, "IPv6:") ? ipv6_literal_ok(in + 5, n - 5) : ipv4_literal_ok(in, n);
  if (!ok) return false;
  c->p = close + 1;
  return true;
}

/* Local-part = Dot-string / Quoted-string (RFC 5321 4.1.2). */
static bool parse_local_part(struct cur *c) {
  if (cur_eat(c, '"')) {
    while (c->p < c->end) {
      unsigned char ch = (unsigned char)*c->p++;
      if (ch == '"') return true;
      if (ch == '\\') { /* quoted-pairSMTP = %d92 %d32-126 */
        if (c->p >= c->end || (unsigned char)*c->p < 32 || (unsigned char)*c->p > 126) return false;
        c->p++;
      } else if (ch < 32 || ch > 126) {
        return false;
      }
    }
    return false; /* unterminated */
  }
  for (;;) { /* Atom *("." Atom) */
    const char *atom = c->p;
    while (c->p < c->end && is_atext((unsigned char)*c->p)) c->p++;
    if (c->p == atom) return false;
    if (!cur_eat(c, '.')) return true;
  }
}

/* Mailbox = Local-part "@" ( Domain / address-literal ). */
static bool parse_mailbox(struct cur *c) {
  if (!parse_local_part(c) || !cur_eat(c, '@')) return false;
  if (c->p < c->end && *c->p == '[') return parse_addr_literal(c);
  return parse_domain(c);
}

/* A-d-l = At-domain *( "," At-domain ) ":" -- parsed only to be dropped:
 * RFC 5321 4.1.1.3 says source routes must be accepted and ignored. */
static bool skip_source_route(struct cur *c) {
  if (c->p >= c->end || *c->p != '@') return true;
  do {
    if (!cur_eat(c, '@') || !parse_domain(c)) return false;
  } while (cur_eat(c, ','));
  return cur_eat(c, ':');
}

/* Path = "<" [ A-d-l ":" ] Mailbox ">", or "<>" (then addr is "").  The
 * cursor starts on the "<".  Returns NULL or the reply to give. */
static const struct smtp_error *parse_path(struct cur *c, char *addr, size_t *addr_len, const struct smtp_error *bad,
                                           const struct smtp_error *too_long) {
  const char *lt = c->p;
  c->p++;
  *addr_len = 0;
  addr[0] = '\0';
  if (cur_eat(c, '>')) return NULL;
  if (!skip_source_route(c)) return bad;
  const char *mbox = c->p;
  if (!parse_mailbox(c)) return bad;
  size_t n = (size_t)(c->p - mbox);
  if (!cur_eat(c, '>')) return bad;
  if (c->p - lt > SMTP_PATH_MAX) return too_long;
  memcpy(addr, mbox, n); /* n < SMTP_PATH_MAX: the brackets were counted */
  addr[n] = '\0';
  *addr_len = n;
  return NULL;
}

/* "FROM:" / "TO:" then optional spaces, leaving the cursor on the "<". */
static const struct smtp_error *parse_path_intro(struct cur *c, const char *kw, const struct smtp_error *syntax) {
  size_t kwlen = strlen(kw);
  if (!has_prefix_ci(c->p, (size_t)(c->end - c->p), kw)) return syntax;
  c->p += kwlen;
  while (cur_eat(c, ' ')) {
  }
  if (c->p >= c->end) return syntax;
  if (*c->p != '<') return &E_NO_BRACKETS;
  return NULL;
}

/* SIZE=1*DIGIT (RFC 1870).  A value that does not fit 64 bits is certainly
 * above any limit we could have, so it gets the "too big" reply. */
static const struct smtp_error *param_size(const char *v, size_t n, struct smtp_mail_args *out) {
  if (!v || n == 0) return &E_SIZE_SYNTAX;
  uint64_t size = 0;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit((unsigned char)v[i])) return &E_SIZE_SYNTAX;
    unsigned d = (unsigned)(v[i] - '0');
    if (size > (UINT64_MAX - d) / 10) return &E_SIZE_BIG;
    size = size * 10 + d;
  }
  out->has_size = true;
  out->size = size;
  return NULL;
}

/* BODY=7BIT / 8BITMIME (RFC 6152).  BINARYMIME needs CHUNKING, which we do
 * not offer, so it is "not implemented" rather than a syntax error. */
static const struct smtp_error *param_body(const char *v, size_t n, struct smtp_mail_args *out) {
  if (v && eq_ci(v, n, "7BIT")) {
    out->body = SMTP_BODY_7BIT;
  } else if (v && eq_ci(v, n, "8BITMIME")) {
    out->body = SMTP_BODY_8BITMIME;
  } else if (v && eq_ci(v, n, "BINARYMIME")) {
    return &E_BODY_BINARY;
  } else {
    return &E_BODY_SYNTAX;
  }
  return NULL;
}

/* esmtp-param = esmtp-keyword ["=" esmtp-value]; splits one SP-delimited
 * token into keyword and value (value NULL when there is no "="). */
static bool split_param(const char *t, size_t n, size_t *kwlen, const char **v, size_t *vlen) {
  size_t k = 0;
  while (k < n && (is_letdig((unsigned char)t[k]) || (k > 0 && t[k] == '-'))) k++;
  if (k == 0 || (k < n && t[k] != '=')) return false;
  *kwlen = k;
  *v = NULL;
  *vlen = 0;
  if (k == n) return true;
  *v = t + k + 1;
  *vlen = n - k - 1;
  if (*vlen == 0) return false;
  for (size_t i = 0; i < *vlen; i++) { /* esmtp-value = 1*(%d33-60 / %d62-126) */
    unsigned char ch = (unsigned char)(*v)[i];
    if (ch < 33 || ch > 126 || ch == '=') return false;
  }
  return true;
}

/* Mail-parameters after the path: SP-separated; extra spaces tolerated. */
static const struct smtp_error *mail_params(struct cur *c, struct smtp_mail_args *out) {
  bool seen_size = false, seen_body = false;
  if (c->p < c->end && *c->p != ' ') return &E_PARAM_SYNTAX;
  for (;;) {
    while (cur_eat(c, ' ')) {
    }
    if (c->p >= c->end) return NULL;
    const char *tok = c->p;
    const char *sp = memchr(tok, ' ', (size_t)(c->end - tok));
    c->p = sp ? sp : c->end;
    size_t kwlen, vlen;
    const char *v;
    if (!split_param(tok, (size_t)(c->p - tok), &kwlen, &v, &vlen)) return &E_PARAM_SYNTAX;
    const struct smtp_error *e;
    if (eq_ci(tok, kwlen, "SIZE")) {
      if (seen_size) return &E_PARAM_DUP;
      seen_size = true;
      e = param_size(v, vlen, out);
    } else if (eq_ci(tok, kwlen, "BODY")) {
      if (seen_body) return &E_PARAM_DUP;
      seen_body = true;
      e = param_body(v, vlen, out);
    } else {
      e = &E_PARAM_UNSUP;
    }
    if (e) return e;
  }
}

int smtp_parse_mail(const char *arg, size_t len, struct smtp_mail_args *out, struct smtp_error *err) {
  memset(out, 0, sizeof *out);
  if (!arg) return fail(err, &E_MAIL_SYNTAX);
  struct cur c = {arg, arg + len};
  const struct smtp_error *e = parse_path_intro(&c, "FROM:", &E_MAIL_SYNTAX);
  if (!e) e = parse_path(&c, out->addr, &out->addr_len, &E_MAIL_BADPATH, &E_MAIL_LONGPATH);
  if (!e) e = mail_params(&c, out);
  return e ? fail(err, e) : 0;
}

int smtp_parse_rcpt(const char *arg, size_t len, struct smtp_rcpt_args *out, struct smtp_error *err) {
  memset(out, 0, sizeof *out);
  if (!arg) return fail(err, &E_RCPT_SYNTAX);
  struct cur c = {arg, arg + len};
  const struct smtp_error *e = parse_path_intro(&c, "TO:", &E_RCPT_SYNTAX);
  if (e) return fail(err, e);
  if (has_prefix_ci(c.p, (size_t)(c.end - c.p), "<postmaster>")) {
    /* RFC 5321 4.5.1: "<Postmaster>" without a domain must be accepted;
     * stored in one spelling so callers can compare with strcmp. */
    c.p += strlen("<postmaster>");
    memcpy(out->addr, "postmaster", sizeof "postmaster");
    out->addr_len = strlen("postmaster");
  } else {
    e = parse_path(&c, out->addr, &out->addr_len, &E_RCPT_BADPATH, &E_RCPT_LONGPATH);
    if (e) return fail(err, e);
    if (out->addr_len == 0) return fail(err, &E_RCPT_NULL);
  }
  if (c.p < c.end && *c.p != ' ') return fail(err, &E_RCPT_BADPATH);
  while (cur_eat(&c, ' ')) {
  }
  return c.p < c.end ? fail(err, &E_RCPT_PARAM) : 0;
}

static bool is_wsp(char ch) { return ch == ' ' || ch == '\t'; }

/* Drops leading and trailing SP/HTAB from a counted string. */
static void trim(const char **s, size_t *len) {
  while (*len > 0 && is_wsp(**s)) (*s)++, (*len)--;
  while (*len > 0 && is_wsp((*s)[*len - 1])) (*len)--;
}

/* Lenient like Postfix's default: real clients send "EHLO my_pc" or a
 * trailing dot, and refusing them loses mail for no security gain.  The
 * name is only logged and written into Received (after sanitising), so we
 * ask for one token of printable ASCII without the characters that would
 * confuse a Received header, and well-formed address literals. */
int smtp_parse_helo(const char *arg, size_t len, struct smtp_error *err) {
  if (!arg) return fail(err, &E_HELO_EMPTY);
  trim(&arg, &len);
  if (len == 0) return fail(err, &E_HELO_EMPTY);
  if (len > SMTP_DOMAIN_MAX) return fail(err, &E_HELO_BAD);
  if (*arg == '[') {
    struct cur c = {arg, arg + len};
    return (parse_addr_literal(&c) && c.p == c.end) ? 0 : fail(err, &E_HELO_BAD);
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)arg[i];
    if (ch <= ' ' || ch >= 0x7f || ch == '<' || ch == '>' || ch == '"' || ch == '(' || ch == ')' ||
        ch == '[' || ch == ']' || ch == ';' || ch == '\\')
      return fail(err, &E_HELO_BAD);
  }
  return 0;
}

const char *smtp_addr_domain(const char *addr) {
  const char *at = addr ? strrchr(addr, '@') : NULL;
  return at ? at + 1 : NULL;
}

enum arg_rule { ARG_NONE, ARG_OPTIONAL, ARG_PARSED /* checked by the verb's own parser */ };

static const struct {
  const char *name;
  enum smtp_verb verb;
  enum arg_rule rule;
} verbs[] = {
    {"HELO", SMTP_VERB_HELO, ARG_PARSED},     {"EHLO", SMTP_VERB_EHLO, ARG_PARSED},
    {"MAIL", SMTP_VERB_MAIL, ARG_PARSED},     {"RCPT", SMTP_VERB_RCPT, ARG_PARSED},
    {"DATA", SMTP_VERB_DATA, ARG_NONE},       {"RSET", SMTP_VERB_RSET, ARG_NONE},
    {"NOOP", SMTP_VERB_NOOP, ARG_OPTIONAL},   {"QUIT", SMTP_VERB_QUIT, ARG_NONE},
    {"VRFY", SMTP_VERB_VRFY, ARG_OPTIONAL},   {"EXPN", SMTP_VERB_EXPN, ARG_OPTIONAL},
    {"HELP", SMTP_VERB_HELP, ARG_OPTIONAL},   {"STARTTLS", SMTP_VERB_STARTTLS, ARG_NONE},
    {"BDAT", SMTP_VERB_BDAT, ARG_PARSED},     {"AUTH", SMTP_VERB_AUTH, ARG_PARSED},
};

/* A web browser or proxy probe talking to the SMTP port (cross-protocol
 * attacks): the session closes at once instead of answering each line. */
static bool is_http(const char *line, size_t len) {
  static const char *const methods[] = {"GET ", "POST ", "HEAD ", "CONNECT ", "PUT "};
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (has_prefix_ci(line, len, methods[i])) return true;
  return false;
}

/* NUL, bare CR, LF, other controls except HTAB, DEL and non-ASCII are never
 * valid in a command; refusing them here means no later stage sees them. */
static bool line_chars_ok(const char *line, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)line[i];
    if ((ch < 0x20 && ch != '\t') || ch >= 0x7f) return false;
  }
  return true;
}

int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd, struct smtp_error *err) {
  cmd->verb = SMTP_VERB_UNKNOWN;
  cmd->arg = "";
  cmd->arg_len = 0;
  if (!line) return fail(err, &E_UNKNOWN);
  if (is_http(line, len)) {
    cmd->verb = SMTP_VERB_HTTP;
    return 0;
  }
  if (!line_chars_ok(line, len)) return fail(err, &E_BADCHAR);
  const char *sp = memchr(line, ' ', len);
  size_t vlen = sp ? (size_t)(sp - line) : len;
  size_t i = 0;
  while (i < sizeof verbs / sizeof verbs[0] && !eq_ci(line, vlen, verbs[i].name)) i++;
  if (i == sizeof verbs / sizeof verbs[0]) return fail(err, &E_UNKNOWN);
  cmd->verb = verbs[i].verb;
  if (sp) {
    cmd->arg = sp + 1;
    cmd->arg_len = len - vlen - 1;
  }
  if (cmd->verb == SMTP_VERB_HELO || cmd->verb == SMTP_VERB_EHLO) trim(&cmd->arg, &cmd->arg_len);
  if (verbs[i].rule == ARG_NONE) {
    /* Trailing blanks ("QUIT ") are tolerated: some clients send them. */
    const char *a = cmd->arg;
    size_t n = cmd->arg_len;
    trim(&a, &n);
    if (n > 0) return fail(err, &E_NOARG);
  }
  return 0;
}
