/* filter - see filter.h.
 *
 * A hand-written lexer and recursive-descent parser.  Recursion happens only
 * for '(' and 'not' and is counted against FILTER_MAX_DEPTH; 'and' / 'or'
 * chains are parsed in loops into n-ary nodes, so a long chain never makes
 * the tree (or the evaluation's recursion) deep.  The first error stops the
 * parse; everything built so far is freed by the caller of the parse. */
#include "core/filter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/quarantine.h"
#include "core/sgerr.h"

/* Per-match budgets: the pattern is the admin's, the subject an attacker's,
 * so backtracking is bounded.  A realistic header regex needs far less. */
#define FILTER__MATCH_LIMIT 1000000u
#define FILTER__DEPTH_LIMIT 10000u
#define FILTER__HEAP_LIMIT_KIB 4096u

/* ---- tokens --------------------------------------------------------------- */

enum filter__tk {
  TK_EOF, TK_IDENT, TK_STRING, TK_NUMBER, TK_LPAREN, TK_RPAREN, TK_LBRACE, TK_RBRACE,
  TK_SEMI, TK_COMMA, TK_COLON, TK_EQ, TK_NE, TK_GT, TK_LT, TK_GE, TK_LE,
};

struct filter__tok {
  enum filter__tk kind;
  const char *s; /* TK_STRING: the raw content between the quotes */
  size_t len;
  int line, col; /* of the token's first character */
  uint64_t num;  /* TK_NUMBER, suffix applied */
};

struct filter__parser {
  const char *pos; /* next byte to lex */
  int line, col;   /* position of pos, text-relative, 1-based */
  int base_line, base_column;
  struct filter__tok tok; /* the lookahead */
  const char *fname;      /* filter being parsed (points into the text), or NULL */
  size_t fname_len;
  int depth;
  int rc; /* first error; later ones are not reported */
  char *err;
  size_t errlen;
};

/* ---- compiled form ---------------------------------------------------------- */

enum filter__kind {
  FK_AND, FK_OR, FK_NOT, FK_SUBJECT, FK_MAIL_FROM, FK_RCPT_TO, FK_ATTACHMENT, FK_HEADER,
  FK_BODY_CONTAINS, FK_BODY_SIZE, FK_SMIME_MESSAGE, FK_SMIME_VERIFIED,
};

struct filter__node {
  enum filter__kind kind;
  bool negate;     /* '!=' on a regex test */
  bool needs_body; /* this node or a descendant tests the body */
  enum filter__tk rel;
  uint64_t num;
  char *str;       /* header name or body-contains text */
  pcre2_code *re;
  bool jit;        /* re was JIT-compiled: matched with pcre2_jit_match */
  struct filter__node **kids; /* FK_AND / FK_OR: n_kids; FK_NOT: one */
  size_t n_kids;
};

struct filter_cond {
  struct filter__node *root;
  pcre2_match_context *mctx; /* read-only after compile: shared by threads */
};

struct filter__branch {
  struct filter_cond *cond; /* NULL: the final else */
  struct filter_action *acts;
  size_t n_acts;
};

struct filter__filter {
  char *name;
  struct filter__branch *br;
  size_t n_br;
};

struct filter_program {
  struct filter__filter *f;
  size_t n;
  bool needs_body;
};

/* ---- errors ------------------------------------------------------------------- */

static int filter__fail_at(struct filter__parser *p, int line, int col, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Reports only the first error: after it the parse unwinds, and whatever
 * the unwinding trips over would only hide the real cause. */
static int filter__fail_at(struct filter__parser *p, int line, int col, int code, const char *fmt, ...) {
  if (p->rc) return p->rc;
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  long l = (long)p->base_line + line - 1;
  col += p->base_column;
  if (p->fname)
    sgerr_fail(p->err, p->errlen, code, "line %ld, column %d: filter '%.*s': %s", l, col, (int)p->fname_len,
               p->fname, msg);
  else
    sgerr_fail(p->err, p->errlen, code, "line %ld, column %d: %s", l, col, msg);
  p->rc = code;
  return code;
}

static int filter__oom(struct filter__parser *p) {
  return filter__fail_at(p, p->tok.line, p->tok.col, SG_ENOMEM, "out of memory");
}

/* How the current token reads in "found ..." (bounded: a token may be long). */
static void filter__describe(const struct filter__tok *t, char *buf, size_t n) {
  int len = t->len > 40 ? 40 : (int)t->len;
  const char *more = t->len > 40 ? "..." : "";
  switch (t->kind) {
    case TK_EOF: snprintf(buf, n, "end of text"); break;
    case TK_STRING: snprintf(buf, n, "string \"%.*s%s\"", len, t->s, more); break;
    case TK_NUMBER: snprintf(buf, n, "number %.*s", len, t->s); break;
    default: snprintf(buf, n, "'%.*s%s'", len, t->s, more); break;
  }
}

static int filter__expected(struct filter__parser *p, const char *what) {
  char found[64];
  filter__describe(&p->tok, found, sizeof found);
  return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX, "expected %s, found %s", what, found);
}

/* ---- lexer ------------------------------------------------------------------- */

/* Columns count characters: a UTF-8 continuation byte does not move it. */
static void filter__advance(struct filter__parser *p) {
  unsigned char c = (unsigned char)*p->pos++;
  if (c == '\n') {
    p->line++;
    p->col = 1;
  } else if ((c & 0xC0) != 0x80) {
    p->col++;
  }
}

static bool filter__ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool filter__ident_char(char c) {
  return filter__ident_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

static void filter__skip_space(struct filter__parser *p) {
  for (;;) {
    char c = *p->pos;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v') {
      filter__advance(p);
    } else if (c == '#') {
      while (*p->pos && *p->pos != '\n') filter__advance(p);
    } else {
      return;
    }
  }
}

/* A string stays on one line, so a missing quote is reported where it was
 * missed, not at the end of the program. */
static int filter__lex_string(struct filter__parser *p) {
  char q = *p->pos;
  filter__advance(p);
  p->tok.s = p->pos;
  while (*p->pos != q) {
    unsigned char c = (unsigned char)*p->pos;
    if (c == '\0' || c == '\n' || c == '\r')
      return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX, "unterminated string");
    if (c < 0x20 && c != '\t')
      return filter__fail_at(p, p->line, p->col, SG_ESYNTAX, "control character 0x%02x in string", c);
    if (c == '\\' && (p->pos[1] == q || p->pos[1] == '\\')) filter__advance(p);
    filter__advance(p);
  }
  p->tok.len = (size_t)(p->pos - p->tok.s);
  filter__advance(p);
  p->tok.kind = TK_STRING;
  return 0;
}

static int filter__lex_number(struct filter__parser *p) {
  uint64_t v = 0;
  bool overflow = false;
  while (*p->pos >= '0' && *p->pos <= '9') {
    unsigned d = (unsigned)(*p->pos - '0');
    if (v > (UINT64_MAX - d) / 10) overflow = true;
    v = v * 10 + d;
    filter__advance(p);
  }
  unsigned shift = 0;
  switch (*p->pos) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
  }
  if (shift) {
    if (v > (UINT64_MAX >> shift)) overflow = true;
    v <<= shift;
    filter__advance(p);
  }
  if (filter__ident_char(*p->pos))
    return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX, "bad number (digits with an optional K, M or G)");
  if (overflow) return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX, "number too large");
  p->tok.kind = TK_NUMBER;
  p->tok.num = v;
  p->tok.len = (size_t)(p->pos - p->tok.s);
  return 0;
}

/* Operators and punctuation; two-character ones first. */
static int filter__lex_punct(struct filter__parser *p) {
  static const struct { const char *s; enum filter__tk kind; } ops[] = {
      {"==", TK_EQ}, {"!=", TK_NE}, {">=", TK_GE}, {"<=", TK_LE}, {">", TK_GT}, {"<", TK_LT},
      {"(", TK_LPAREN}, {")", TK_RPAREN}, {"{", TK_LBRACE}, {"}", TK_RBRACE}, {";", TK_SEMI},
      {",", TK_COMMA}, {":", TK_COLON},
  };
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    size_t n = strlen(ops[i].s);
    if (strncmp(p->pos, ops[i].s, n) == 0) {
      for (size_t k = 0; k < n; k++) filter__advance(p);
      p->tok.kind = ops[i].kind;
      p->tok.len = n;
      return 0;
    }
  }
  unsigned char c = (unsigned char)*p->pos;
  if (c > 0x20 && c < 0x7f)
    return filter__fail_at(p, p->line, p->col, SG_ESYNTAX, "unexpected character '%c'", c);
  return filter__fail_at(p, p->line, p->col, SG_ESYNTAX, "unexpected byte 0x%02x", c);
}

/* Move the lookahead to the next token. */
static int filter__next(struct filter__parser *p) {
  if (p->rc) return p->rc;
  filter__skip_space(p);
  p->tok = (struct filter__tok){.s = p->pos, .line = p->line, .col = p->col};
  char c = *p->pos;
  if (c == '\0') {
    p->tok.kind = TK_EOF;
    return 0;
  }
  if (c == '"' || c == '\'') return filter__lex_string(p);
  if (c >= '0' && c <= '9') return filter__lex_number(p);
  if (filter__ident_start(c)) {
    while (filter__ident_char(*p->pos)) filter__advance(p);
    p->tok.kind = TK_IDENT;
    p->tok.len = (size_t)(p->pos - p->tok.s);
    return 0;
  }
  return filter__lex_punct(p);
}

static bool filter__is_word(const struct filter__tok *t, const char *w) {
  return t->kind == TK_IDENT && t->len == strlen(w) && memcmp(t->s, w, t->len) == 0;
}

/* Consume a token of the given kind or fail with "expected WHAT". */
static int filter__expect(struct filter__parser *p, enum filter__tk kind, const char *what) {
  if (p->tok.kind != kind) return filter__expected(p, what);
  return filter__next(p);
}

/* The string token's value: \" \' and \\ unescaped, other backslashes kept
 * (regexes are written with them).  Caller frees *out. */
static int filter__unquote(struct filter__parser *p, const struct filter__tok *t, char **out) {
  char *s = malloc(t->len + 1);
  if (!s) return filter__oom(p);
  size_t n = 0;
  for (size_t i = 0; i < t->len; i++) {
    char c = t->s[i];
    if (c == '\\' && i + 1 < t->len && (t->s[i + 1] == '"' || t->s[i + 1] == '\'' || t->s[i + 1] == '\\'))
      c = t->s[++i];
    s[n++] = c;
  }
  s[n] = '\0';
  *out = s;
  return 0;
}

/* The column in the text of byte `off` of t's unquoted value: lets a regex
 * error point at the character PCRE2 complained about. */
static int filter__value_col(const struct filter__tok *t, size_t off) {
  int col = t->col + 1; /* past the opening quote */
  size_t v = 0;
  for (size_t i = 0; i < t->len && v < off; i++, v++) {
    if (t->s[i] == '\\' && i + 1 < t->len && (t->s[i + 1] == '"' || t->s[i + 1] == '\'' || t->s[i + 1] == '\\')) {
      i++;
      col++;
    }
    if (((unsigned char)t->s[i] & 0xC0) != 0x80) col++;
  }
  return col;
}

/* Take the current string token's value (caller frees *out). */
static int filter__take_string(struct filter__parser *p, const char *what, char **out) {
  if (p->tok.kind != TK_STRING) return filter__expected(p, what);
  int rc = filter__unquote(p, &p->tok, out);
  if (rc) return rc;
  rc = filter__next(p);
  if (rc) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

/* ---- conditions: nodes ----------------------------------------------------------- */

static void filter__node_free(struct filter__node *n) {
  if (!n) return;
  for (size_t i = 0; i < n->n_kids; i++) filter__node_free(n->kids[i]);
  free(n->kids);
  free(n->str);
  pcre2_code_free(n->re);
  free(n);
}

static struct filter__node *filter__node_new(struct filter__parser *p, enum filter__kind kind) {
  struct filter__node *n = calloc(1, sizeof *n);
  if (!n) {
    filter__oom(p);
    return NULL;
  }
  n->kind = kind;
  return n;
}

/* Append kid to n's children (n owns it afterwards, also on failure). */
static int filter__add_kid(struct filter__parser *p, struct filter__node *n, struct filter__node *kid) {
  struct filter__node **k = realloc(n->kids, (n->n_kids + 1) * sizeof *k);
  if (!k) {
    filter__node_free(kid);
    return filter__oom(p);
  }
  n->kids = k;
  n->kids[n->n_kids++] = kid;
  n->needs_body |= kid->needs_body;
  return 0;
}

/* Compile the regex in string token t (the lookahead) into n->re. */
static int filter__regex(struct filter__parser *p, struct filter__node *n) {
  struct filter__tok t = p->tok;
  char *pat = NULL;
  int rc = filter__take_string(p, "a quoted regular expression", &pat);
  if (rc) return rc;
  int code;
  PCRE2_SIZE off;
  /* MATCH_INVALID_UTF: message data is not validated UTF-8, and must
   * neither fail every match nor be undefined behaviour.  \C could split a
   * UTF-8 sequence, so it is refused. */
  n->re = pcre2_compile((PCRE2_SPTR)pat, strlen(pat), PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C,
                        &code, &off, NULL);
  free(pat);
  if (!n->re) {
    PCRE2_UCHAR msg[160];
    if (pcre2_get_error_message(code, msg, sizeof msg) < 0) snprintf((char *)msg, sizeof msg, "error %d", code);
    return filter__fail_at(p, t.line, filter__value_col(&t, off), SG_ESYNTAX, "bad regular expression: %s", msg);
  }
  /* JIT is an optimisation only: without it the interpreter matches. */
  n->jit = pcre2_jit_compile(n->re, PCRE2_JIT_COMPLETE) == 0;
  return 0;
}

/* A header field name (RFC 5322 ftext): printable ASCII except ':'. */
static bool filter__field_name_ok(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (*s < 33 || *s > 126 || *s == ':') return false;
  return true;
}

/* ---- conditions: grammar ---------------------------------------------------------- */

enum filter__shape { SH_REGEX, SH_HEADER, SH_BODY, SH_SIZE, SH_FLAG };

static const struct {
  const char *name;
  enum filter__kind kind;
  enum filter__shape shape;
} filter__tests[] = {
    {"subject", FK_SUBJECT, SH_REGEX},
    {"mail-from", FK_MAIL_FROM, SH_REGEX},
    {"rcpt-to", FK_RCPT_TO, SH_REGEX},
    {"attachment-filename", FK_ATTACHMENT, SH_REGEX},
    {"header", FK_HEADER, SH_HEADER},
    {"body-contains", FK_BODY_CONTAINS, SH_BODY},
    {"body-size", FK_BODY_SIZE, SH_SIZE},
    {"smime-gateway-message", FK_SMIME_MESSAGE, SH_FLAG},
    {"smime-gateway-verified", FK_SMIME_VERIFIED, SH_FLAG},
};

static int filter__parse_or(struct filter__parser *p, struct filter__node **out);

/* '(' STRING ')' after header / body-contains: the argument into n->str. */
static int filter__paren_arg(struct filter__parser *p, struct filter__node *n, const char *name) {
  char what[64];
  snprintf(what, sizeof what, "'(' after '%s'", name);
  if (filter__expect(p, TK_LPAREN, what)) return p->rc;
  struct filter__tok t = p->tok;
  if (filter__take_string(p, "a quoted string", &n->str)) return p->rc;
  if (n->kind == FK_HEADER && !filter__field_name_ok(n->str))
    return filter__fail_at(p, t.line, t.col, SG_ESYNTAX, "bad header name \"%.*s\"", 40, n->str);
  if (n->kind == FK_BODY_CONTAINS && !*n->str)
    return filter__fail_at(p, t.line, t.col, SG_ESYNTAX, "empty text in body-contains()");
  return filter__expect(p, TK_RPAREN, "')' after the argument");
}

/* The operator and operand of a test, by its shape. */
static int filter__test_operands(struct filter__parser *p, struct filter__node *n, enum filter__shape shape,
                                 const char *name) {
  char what[80];
  if (shape == SH_FLAG) return 0;
  if (shape == SH_HEADER || shape == SH_BODY) {
    if (filter__paren_arg(p, n, name)) return p->rc;
    if (shape == SH_BODY) return 0;
  }
  enum filter__tk op = p->tok.kind;
  if (shape == SH_SIZE) {
    if (op != TK_GT && op != TK_LT && op != TK_GE && op != TK_LE && op != TK_EQ && op != TK_NE)
      return filter__expected(p, "a comparison ('>', '<', '>=', '<=', '==', '!=') after 'body-size'");
    n->rel = op;
    if (filter__next(p)) return p->rc;
    if (p->tok.kind != TK_NUMBER) return filter__expected(p, "a number (like 1000 or 50M)");
    n->num = p->tok.num;
    return filter__next(p);
  }
  if (op != TK_EQ && op != TK_NE) {
    snprintf(what, sizeof what, "'==' or '!=' after '%s'", name);
    return filter__expected(p, what);
  }
  n->negate = op == TK_NE;
  if (filter__next(p)) return p->rc;
  return filter__regex(p, n);
}

static int filter__parse_test(struct filter__parser *p, struct filter__node **out) {
  if (p->tok.kind != TK_IDENT) return filter__expected(p, "a condition");
  size_t i = 0, n_tests = sizeof filter__tests / sizeof filter__tests[0];
  while (i < n_tests && !filter__is_word(&p->tok, filter__tests[i].name)) i++;
  if (i == n_tests)
    return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX, "unknown condition '%.*s'",
                           p->tok.len > 40 ? 40 : (int)p->tok.len, p->tok.s);
  struct filter__node *n = filter__node_new(p, filter__tests[i].kind);
  if (!n) return p->rc;
  n->needs_body = n->kind == FK_BODY_CONTAINS || n->kind == FK_ATTACHMENT;
  if (filter__next(p) || filter__test_operands(p, n, filter__tests[i].shape, filter__tests[i].name)) {
    filter__node_free(n);
    return p->rc;
  }
  *out = n;
  return 0;
}

/* unary := 'not' unary | '(' cond ')' | test.  The only recursion of the
 * parser, hence the only place the depth is counted. */
static int filter__parse_unary(struct filter__parser *p, struct filter__node **out) {
  if (p->depth >= FILTER_MAX_DEPTH)
    return filter__fail_at(p, p->tok.line, p->tok.col, SG_ELIMIT, "nested deeper than %d levels", FILTER_MAX_DEPTH);
  p->depth++;
  int rc;
  if (filter__is_word(&p->tok, "not")) {
    struct filter__node *n = filter__node_new(p, FK_NOT), *kid = NULL;
    rc = n ? filter__next(p) : p->rc;
    if (!rc) rc = filter__parse_unary(p, &kid);
    if (!rc) rc = filter__add_kid(p, n, kid);
    if (rc) filter__node_free(n);
    else *out = n;
  } else if (p->tok.kind == TK_LPAREN) {
    rc = filter__next(p);
    if (!rc) rc = filter__parse_or(p, out);
    if (!rc && (rc = filter__expect(p, TK_RPAREN, "')' to close '('"))) {
      filter__node_free(*out);
      *out = NULL;
    }
  } else {
    rc = filter__parse_test(p, out);
  }
  p->depth--;
  return rc;
}

/* Stable partition: children that do not need the body first, so a
 * short-circuit often decides before the body is ever looked at.  Tests
 * have no side effects, so the order cannot change the result. */
static void filter__cheap_first(struct filter__node *n) {
  size_t w = 0;
  for (size_t i = 0; i < n->n_kids; i++) {
    if (n->kids[i]->needs_body) continue;
    struct filter__node *k = n->kids[i];
    memmove(&n->kids[w + 1], &n->kids[w], (i - w) * sizeof *n->kids);
    n->kids[w++] = k;
  }
}

typedef int (*filter__sub_fn)(struct filter__parser *p, struct filter__node **out);

/* sub (word sub)*: one n-ary node for the whole chain, or sub's node alone. */
static int filter__parse_chain(struct filter__parser *p, const char *word, enum filter__kind kind, filter__sub_fn sub,
                               struct filter__node **out) {
  struct filter__node *first = NULL, *n = NULL, *kid = NULL;
  if (sub(p, &first)) return p->rc;
  if (!filter__is_word(&p->tok, word)) {
    *out = first;
    return 0;
  }
  if (!(n = filter__node_new(p, kind))) {
    filter__node_free(first);
    return p->rc;
  }
  if (filter__add_kid(p, n, first)) goto fail;
  while (filter__is_word(&p->tok, word)) {
    if (filter__next(p) || sub(p, &kid) || filter__add_kid(p, n, kid)) goto fail;
  }
  filter__cheap_first(n);
  *out = n;
  return 0;
fail:
  filter__node_free(n);
  return p->rc;
}

static int filter__parse_and(struct filter__parser *p, struct filter__node **out) {
  return filter__parse_chain(p, "and", FK_AND, filter__parse_unary, out);
}

static int filter__parse_or(struct filter__parser *p, struct filter__node **out) {
  return filter__parse_chain(p, "or", FK_OR, filter__parse_and, out);
}

void filter_cond_free(struct filter_cond *c) {
  if (!c) return;
  filter__node_free(c->root);
  pcre2_match_context_free(c->mctx);
  free(c);
}

/* A whole condition at the lookahead, with its match context. */
static int filter__parse_cond(struct filter__parser *p, struct filter_cond **out) {
  struct filter_cond *c = calloc(1, sizeof *c);
  if (!c) return filter__oom(p);
  if (!(c->mctx = pcre2_match_context_create(NULL))) {
    free(c);
    return filter__oom(p);
  }
  pcre2_set_match_limit(c->mctx, FILTER__MATCH_LIMIT);
  pcre2_set_depth_limit(c->mctx, FILTER__DEPTH_LIMIT);
  pcre2_set_heap_limit(c->mctx, FILTER__HEAP_LIMIT_KIB);
  if (filter__parse_or(p, &c->root)) {
    filter_cond_free(c);
    return p->rc;
  }
  *out = c;
  return 0;
}

/* Common start of every entry point: arguments, size, first token. */
static int filter__begin(struct filter__parser *p, const char *text, int base_line, int base_column, char *err,
                         size_t errlen) {
  *p = (struct filter__parser){.pos = text, .line = 1, .col = 1, .base_line = base_line < 1 ? 1 : base_line,
                               .base_column = base_column < 0 ? 0 : base_column, .err = err, .errlen = errlen};
  if (err && errlen) err[0] = '\0';
  if (!text) return sgerr_fail(err, errlen, SG_EINVAL, "no text");
  if (strnlen(text, FILTER_MAX_TEXT + 1) > FILTER_MAX_TEXT)
    return sgerr_fail(err, errlen, SG_ETOOBIG, "text longer than %d bytes", FILTER_MAX_TEXT);
  return filter__next(p);
}

int filter_cond_compile(const char *text, int base_line, int base_column, struct filter_cond **out, char *err,
                        size_t errlen) {
  struct filter__parser p;
  struct filter_cond *c = NULL;
  if (!out) return sgerr_fail(err, errlen, SG_EINVAL, "no output");
  *out = NULL;
  int rc = filter__begin(&p, text, base_line, base_column, err, errlen);
  if (rc) return rc;
  if (filter__parse_cond(&p, &c)) return p.rc;
  if (p.tok.kind != TK_EOF) {
    filter__expected(&p, "'and', 'or' or end of text");
    filter_cond_free(c);
    return p.rc;
  }
  *out = c;
  return 0;
}

bool filter_cond_needs_body(const struct filter_cond *c) { return c && c->root && c->root->needs_body; }

/* ---- evaluation --------------------------------------------------------------------- */

struct filter__eval {
  const struct filter_msg *m;
  const pcre2_match_context *mctx;
  pcre2_match_data *md; /* the caller's scratch, or created on the first regex and freed by the caller */
};

/* The match data a scratch holds: one ovector pair is enough, only "did
 * it match" matters, and a match with a too-small ovector still returns
 * 0 (not an error). */
struct filter_scratch {
  pcre2_match_data *md;
};

struct filter_scratch *filter_scratch_new(void) {
  struct filter_scratch *s = malloc(sizeof *s);
  if (s && !(s->md = pcre2_match_data_create(1, NULL))) {
    free(s);
    s = NULL;
  }
  return s;
}

void filter_scratch_free(struct filter_scratch *s) {
  if (!s) return;
  pcre2_match_data_free(s->md);
  free(s);
}

/* pcre2_jit_match skips the interpreter's checks of options the JIT code
 * already fixed; the match context (match limit) still applies. */
static bool filter__match_n(struct filter__eval *e, const struct filter__node *n, const char *s, size_t len) {
  if (!s) return false;
  if (!e->md && !(e->md = pcre2_match_data_create(1, NULL))) return false;
  pcre2_match_context *mctx = (pcre2_match_context *)e->mctx;
  int rc = n->jit ? pcre2_jit_match(n->re, (PCRE2_SPTR)s, len, 0, 0, e->md, mctx)
                  : pcre2_match(n->re, (PCRE2_SPTR)s, len, 0, 0, e->md, mctx);
  return rc >= 0;
}

static bool filter__match(struct filter__eval *e, const struct filter__node *n, const char *s) {
  return s && filter__match_n(e, n, s, strlen(s));
}

static bool filter__match_list(struct filter__eval *e, const struct filter__node *n) {
  const struct filter_msg *m = e->m;
  const char *v;
  size_t len = 0;
  for (size_t i = 0;; i++) {
    if (n->kind == FK_RCPT_TO) v = i < m->n_rcpts ? m->rcpts[i] : NULL;
    else if (n->kind == FK_HEADER) v = m->header ? m->header(m->arg, n->str, i, &len) : NULL;
    else v = m->attachment ? m->attachment(m->arg, i) : NULL;
    if (!v) return false;
    if (n->kind != FK_HEADER) len = strlen(v);
    if (filter__match_n(e, n, v, len)) return true;
  }
}

static bool filter__size_holds(enum filter__tk rel, uint64_t a, uint64_t b) {
  switch (rel) {
    case TK_GT: return a > b;
    case TK_LT: return a < b;
    case TK_GE: return a >= b;
    case TK_LE: return a <= b;
    case TK_EQ: return a == b;
    default: return a != b;
  }
}

static bool filter__eval_node(struct filter__eval *e, const struct filter__node *n) {
  const struct filter_msg *m = e->m;
  bool r;
  switch (n->kind) {
    case FK_AND:
      for (size_t i = 0; i < n->n_kids; i++)
        if (!filter__eval_node(e, n->kids[i])) return false;
      return true;
    case FK_OR:
      for (size_t i = 0; i < n->n_kids; i++)
        if (filter__eval_node(e, n->kids[i])) return true;
      return false;
    case FK_NOT: return !filter__eval_node(e, n->kids[0]);
    case FK_SUBJECT: r = filter__match(e, n, m->subject); break;
    case FK_MAIL_FROM: r = filter__match(e, n, m->mail_from); break;
    case FK_RCPT_TO: case FK_HEADER: case FK_ATTACHMENT: r = filter__match_list(e, n); break;
    case FK_BODY_CONTAINS: return m->body_contains && m->body_contains(m->arg, n->str);
    case FK_BODY_SIZE: return filter__size_holds(n->rel, m->body_size, n->num);
    case FK_SMIME_MESSAGE: return m->smime_message;
    case FK_SMIME_VERIFIED: return m->smime_verified;
    default: return false;
  }
  return r != n->negate;
}

static bool filter__cond_holds(struct filter__eval *e, const struct filter_cond *c) {
  e->mctx = c->mctx;
  return filter__eval_node(e, c->root);
}

bool filter_cond_eval(const struct filter_cond *c, const struct filter_msg *m) {
  if (!c || !m) return false;
  struct filter__eval e = {.m = m, .md = m->scratch ? m->scratch->md : NULL};
  bool r = filter__cond_holds(&e, c);
  if (!m->scratch) pcre2_match_data_free(e.md);
  return r;
}

/* ---- actions -------------------------------------------------------------------------- */

static const struct {
  const char *name;
  enum filter_action_kind kind;
  int n_args;
} filter__actions[] = {
    {"smime-gateway", FILTER_SMIME_GATEWAY, 1}, {"smime-gateway-on-delivery", FILTER_SMIME_ON_DELIVERY, 1},
    {"quarantine", FILTER_QUARANTINE, 1},        {"drop", FILTER_DROP, 0},
    {"bounce", FILTER_BOUNCE, 0},                {"insert-header", FILTER_INSERT_HEADER, 2},
    {"deliver", FILTER_DELIVER, 0},
};

bool filter_action_is_final(const struct filter_action *a) {
  return a && (a->kind == FILTER_SMIME_GATEWAY || a->kind == FILTER_DROP || a->kind == FILTER_BOUNCE ||
               a->kind == FILTER_DELIVER);
}

void filter_action_clear(struct filter_action *a) {
  if (!a) return;
  free(a->arg1);
  free(a->arg2);
  *a = (struct filter_action){0};
}

/* The argument i (0-based) of action a, parsed from token t: is it valid?
 * A header value needs no check for line breaks: a string cannot hold one
 * (filter__lex_string), so insert-header cannot inject a second field. */
static int filter__check_arg(struct filter__parser *p, const struct filter_action *a, int i,
                             const struct filter__tok *t) {
  const char *v = i == 0 ? a->arg1 : a->arg2;
  const char *why = NULL;
  if (a->kind == FILTER_QUARANTINE && !quarantine_name_ok(v)) /* becomes a folder name */
    why = "quarantine name must be 1-64 letters, digits, '_', '-' or '.', not starting with '.'";
  else if (a->kind == FILTER_INSERT_HEADER && i == 0 && !filter__field_name_ok(v))
    why = "bad header name";
  else if ((a->kind == FILTER_SMIME_GATEWAY || a->kind == FILTER_SMIME_ON_DELIVERY) && !*v)
    why = "empty profile name";
  return why ? filter__fail_at(p, t->line, t->col, SG_ESYNTAX, "%s", why) : 0;
}

/* '(' [STRING (',' STRING)*] ')' for action number ai of filter__actions. */
static int filter__action_args(struct filter__parser *p, size_t ai, struct filter_action *a) {
  const char *name = filter__actions[ai].name;
  int want = filter__actions[ai].n_args, have = 0;
  char what[64];
  snprintf(what, sizeof what, "'(' after '%s'", name);
  if (filter__expect(p, TK_LPAREN, what)) return p->rc;
  while (p->tok.kind != TK_RPAREN) {
    if (have > 0 && filter__expect(p, TK_COMMA, "',' or ')'")) return p->rc;
    struct filter__tok t = p->tok;
    if (have == want)
      return filter__fail_at(p, t.line, t.col, SG_ESYNTAX, "%s() takes %d argument%s", name, want,
                             want == 1 ? "" : "s");
    if (filter__take_string(p, "a quoted string argument", have == 0 ? &a->arg1 : &a->arg2)) return p->rc;
    if (filter__check_arg(p, a, have, &t)) return p->rc;
    have++;
  }
  if (have < want)
    return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX, "%s() takes %d argument%s, found %d", name, want,
                           want == 1 ? "" : "s", have);
  return filter__next(p);
}

/* One action at the lookahead into *a (zeroed first; cleared on failure). */
static int filter__parse_action(struct filter__parser *p, struct filter_action *a) {
  *a = (struct filter_action){0};
  if (p->tok.kind != TK_IDENT) return filter__expected(p, "an action");
  size_t i = 0, n = sizeof filter__actions / sizeof filter__actions[0];
  while (i < n && !filter__is_word(&p->tok, filter__actions[i].name)) i++;
  if (i == n)
    return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX,
                           "unknown action '%.*s' (expected smime-gateway, smime-gateway-on-delivery, quarantine, "
                           "drop, bounce, insert-header or deliver)",
                           p->tok.len > 40 ? 40 : (int)p->tok.len, p->tok.s);
  a->kind = filter__actions[i].kind;
  a->line = p->base_line + p->tok.line - 1;
  a->column = p->base_column + p->tok.col;
  if (filter__next(p) || filter__action_args(p, i, a)) {
    filter_action_clear(a);
    return p->rc;
  }
  return 0;
}

int filter_action_parse(const char *text, int base_line, int base_column, struct filter_action *out, char *err,
                        size_t errlen) {
  struct filter__parser p;
  if (!out) return sgerr_fail(err, errlen, SG_EINVAL, "no output");
  *out = (struct filter_action){0};
  int rc = filter__begin(&p, text, base_line, base_column, err, errlen);
  if (rc) return rc;
  if (filter__parse_action(&p, out)) return p.rc;
  if (p.tok.kind != TK_EOF) {
    filter__expected(&p, "end of text after the action");
    filter_action_clear(out);
    return p.rc;
  }
  return 0;
}

/* ---- programs --------------------------------------------------------------------------- */

const char *filter_program_action_filter(const struct filter_program *p, const struct filter_action *a) {
  for (size_t i = 0; p && i < p->n; i++)
    for (size_t b = 0; b < p->f[i].n_br; b++)
      if (a >= p->f[i].br[b].acts && a < p->f[i].br[b].acts + p->f[i].br[b].n_acts) return p->f[i].name;
  return NULL;
}

int filter_program_each_action(const struct filter_program *p,
                               int (*fn)(const char *filter, const struct filter_action *a, void *arg), void *arg) {
  for (size_t i = 0; p && i < p->n; i++)
    for (size_t b = 0; b < p->f[i].n_br; b++)
      for (size_t k = 0; k < p->f[i].br[b].n_acts; k++) {
        int rc = fn(p->f[i].name, &p->f[i].br[b].acts[k], arg);
        if (rc) return rc;
      }
  return 0;
}

static void filter__branch_clear(struct filter__branch *b) {
  filter_cond_free(b->cond);
  for (size_t i = 0; i < b->n_acts; i++) filter_action_clear(&b->acts[i]);
  free(b->acts);
}

void filter_program_free(struct filter_program *p) {
  if (!p) return;
  for (size_t i = 0; i < p->n; i++) {
    for (size_t k = 0; k < p->f[i].n_br; k++) filter__branch_clear(&p->f[i].br[k]);
    free(p->f[i].br);
    free(p->f[i].name);
  }
  free(p->f);
  free(p);
}

/* arr (n elements of size sz) grown by one zeroed element; NULL (arr
 * untouched, the error recorded) when memory runs out. */
static void *filter__grow(struct filter__parser *p, void *arr, size_t n, size_t sz) {
  char *a = realloc(arr, (n + 1) * sz);
  if (!a) {
    filter__oom(p);
    return NULL;
  }
  memset(a + n * sz, 0, sz);
  return a;
}

/* block := '{' (action (';' action)* ';'?)? '}' into b->acts. */
static int filter__parse_block(struct filter__parser *p, struct filter__branch *b, const char *after) {
  char what[48];
  snprintf(what, sizeof what, "'{' after %s", after);
  if (filter__expect(p, TK_LBRACE, what)) return p->rc;
  while (p->tok.kind != TK_RBRACE) {
    if (b->n_acts && filter_action_is_final(&b->acts[b->n_acts - 1])) {
      const struct filter_action *f = &b->acts[b->n_acts - 1];
      size_t k = 0;
      while (filter__actions[k].kind != f->kind) k++;
      return filter__fail_at(p, p->tok.line, p->tok.col, SG_ESYNTAX,
                             "action after the final action %s() would never run", filter__actions[k].name);
    }
    struct filter_action *acts = filter__grow(p, b->acts, b->n_acts, sizeof *b->acts);
    if (!acts) return p->rc;
    b->acts = acts;
    if (filter__parse_action(p, &b->acts[b->n_acts])) return p->rc;
    b->n_acts++;
    if (p->tok.kind == TK_SEMI) {
      if (filter__next(p)) return p->rc;
    } else if (p->tok.kind != TK_RBRACE) {
      return filter__expected(p, "';' or '}' after action");
    }
  }
  return filter__next(p);
}

/* 'if' '(' cond ')' block, into a new branch of f. */
static int filter__parse_if(struct filter__parser *p, struct filter__filter *f) {
  struct filter__branch *br = filter__grow(p, f->br, f->n_br, sizeof *f->br);
  if (!br) return p->rc;
  f->br = br;
  struct filter__branch *b = &f->br[f->n_br++];
  if (!filter__is_word(&p->tok, "if")) return filter__expected(p, "'if'");
  if (filter__next(p) || filter__expect(p, TK_LPAREN, "'(' after 'if'")) return p->rc;
  if (filter__parse_cond(p, &b->cond)) return p->rc;
  if (filter__expect(p, TK_RPAREN, "')' after condition")) return p->rc;
  return filter__parse_block(p, b, "condition");
}

/* if ... (else if ...)* (else {...})? */
static int filter__parse_branches(struct filter__parser *p, struct filter__filter *f) {
  if (filter__parse_if(p, f)) return p->rc;
  while (filter__is_word(&p->tok, "else")) {
    if (filter__next(p)) return p->rc;
    if (filter__is_word(&p->tok, "if")) {
      if (filter__parse_if(p, f)) return p->rc;
      continue;
    }
    struct filter__branch *br = filter__grow(p, f->br, f->n_br, sizeof *f->br);
    if (!br) return p->rc;
    f->br = br;
    return filter__parse_block(p, &f->br[f->n_br++], "'else'");
  }
  return 0;
}

/* NAME ':' branches, appended to prog.  Names are compared pairwise: a
 * program holds tens of filters, not thousands. */
static int filter__parse_filter(struct filter__parser *p, struct filter_program *prog) {
  if (p->tok.kind != TK_IDENT) return filter__expected(p, "a filter name or end of text");
  struct filter__tok t = p->tok;
  p->fname = t.s;
  p->fname_len = t.len;
  for (size_t i = 0; i < prog->n; i++)
    if (strlen(prog->f[i].name) == t.len && memcmp(prog->f[i].name, t.s, t.len) == 0)
      return filter__fail_at(p, t.line, t.col, SG_ESYNTAX, "a filter of this name already exists");
  struct filter__filter *fs = filter__grow(p, prog->f, prog->n, sizeof *prog->f);
  if (!fs) return p->rc;
  prog->f = fs;
  struct filter__filter *f = &prog->f[prog->n++];
  if (!(f->name = malloc(t.len + 1))) return filter__oom(p);
  memcpy(f->name, t.s, t.len);
  f->name[t.len] = '\0';
  if (filter__next(p) || filter__expect(p, TK_COLON, "':' after the filter name")) return p->rc;
  if (filter__parse_branches(p, f)) return p->rc;
  for (size_t i = 0; i < f->n_br; i++) prog->needs_body |= filter_cond_needs_body(f->br[i].cond);
  return 0;
}

int filter_program_compile(const char *text, int base_line, int base_column, struct filter_program **out, char *err,
                           size_t errlen) {
  struct filter__parser p;
  if (!out) return sgerr_fail(err, errlen, SG_EINVAL, "no output");
  *out = NULL;
  int rc = filter__begin(&p, text, base_line, base_column, err, errlen);
  if (rc) return rc;
  struct filter_program *prog = calloc(1, sizeof *prog);
  if (!prog) return filter__oom(&p);
  while (p.tok.kind != TK_EOF) {
    if (filter__parse_filter(&p, prog)) {
      filter_program_free(prog);
      return p.rc;
    }
  }
  *out = prog;
  return 0;
}

/* Append one action pointer to the caller's array. */
static int filter__append(const struct filter_action ***out, size_t *n_out, const struct filter_action *a) {
  const struct filter_action **arr = realloc(*out, (*n_out + 1) * sizeof *arr);
  if (!arr) return SG_ENOMEM;
  arr[(*n_out)++] = a;
  *out = arr;
  return 0;
}

int filter_program_run(const struct filter_program *p, const struct filter_msg *m, const struct filter_action ***out,
                       size_t *n_out) {
  if (!p || !m || !out || !n_out) return SG_EINVAL;
  struct filter__eval e = {.m = m, .md = m->scratch ? m->scratch->md : NULL};
  int rc = 0;
  bool stop = false;
  for (size_t i = 0; i < p->n && !stop && !rc; i++) {
    const struct filter__filter *f = &p->f[i];
    const struct filter__branch *b = NULL;
    for (size_t k = 0; k < f->n_br && !b; k++)
      if (!f->br[k].cond || filter__cond_holds(&e, f->br[k].cond)) b = &f->br[k];
    for (size_t k = 0; b && k < b->n_acts && !rc; k++) {
      rc = filter__append(out, n_out, &b->acts[k]);
      stop |= filter_action_is_final(&b->acts[k]);
    }
  }
  if (!m->scratch) pcre2_match_data_free(e.md);
  return rc;
}

bool filter_program_needs_body(const struct filter_program *p) { return p && p->needs_body; }

size_t filter_program_count(const struct filter_program *p) { return p ? p->n : 0; }

const char *filter_program_name(const struct filter_program *p, size_t i) {
  return p && i < p->n ? p->f[i].name : NULL;
}
