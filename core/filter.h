/*
 * filter - the filter language of content filters and message filters
 * (R27-R29, R33, issue #6): parsing condition expressions, single actions
 * and message-filter programs, compiling their regexes with PCRE2, and
 * evaluating them against a message described by struct filter_msg.
 *
 * Owns the compiled forms (struct filter_cond, struct filter_program) and
 * every string and regex inside them.  Callers: config loading (compile,
 * once per load or reload, on the loading thread) and policy evaluation on
 * any thread (eval / run); tests; the fuzz target.  A compiled object is
 * immutable and may be shared read-only between threads until it is freed
 * (after an RCU grace period, like the rest of the config).
 *
 * Trust: the text comes from the admin's config but is parsed as if it
 * were hostile: at most FILTER_MAX_TEXT bytes, nesting of parentheses and
 * `not` at most FILTER_MAX_DEPTH, no recursion deeper than that anywhere.
 * Message data given to eval is untrusted: any bytes (invalid UTF-8 is
 * simply not matched by a regex), and every regex match runs under a match
 * limit so a pathological pattern cannot pin a CPU on a crafted message.
 *
 * Errors: functions return 0 or a negative enum sgerr (SG_ESYNTAX for any
 * mistake in the text, including a bad regex; SG_ELIMIT for nesting too
 * deep; SG_ETOOBIG for text too long; SG_ENOMEM; SG_EINVAL for NULL
 * arguments) and fill err with one line such as
 *   line 3, column 17: filter 'quarantine_smime_messages': expected ')'
 *   after condition, found '{'
 * Lines are base_line + (line within the text - 1): pass the config file
 * line where the text starts, or 1 for numbers relative to the text.
 * Columns are base_column + the 1-based column within the text, counting
 * characters (UTF-8 sequences), not bytes: pass how many characters stand
 * before the text on its lines in the file (a block scalar's indentation,
 * the key and quote before a one-line string), or 0.
 * On failure nothing is returned (*out stays NULL) and nothing leaks.
 *
 * The language (the vendor's syntax):
 *   cond   := or ; or := and ('or' and)* ; and := unary ('and' unary)*
 *   unary  := 'not' unary | '(' cond ')' | test        (not > and > or)
 *   test   := subject OP STR | mail-from OP STR | rcpt-to OP STR
 *           | attachment-filename OP STR | header(STR) OP STR
 *           | body-contains(STR) | body-size REL NUM
 *           | smime-gateway-message | smime-gateway-verified
 *   OP     := '==' (the regex matches) | '!=' (it does not: exactly
 *             `not (X == R)`, so a missing subject makes != true)
 *   REL    := '>' | '<' | '>=' | '<=' | '==' | '!='
 *   NUM    := decimal digits with an optional suffix K, M or G (either
 *             case; binary multiples: 50M = 50 * 1024 * 1024 bytes)
 *   STR    := "..." or '...' on one line; \" \' and \\ stand for the
 *             character itself, every other backslash is kept as written
 *             so a regex "\d+" stays \d+.
 *   action := smime-gateway(STR) | smime-gateway-on-delivery(STR)
 *           | quarantine(STR) | drop() | bounce() | deliver()
 *           | insert-header(STR, STR)
 *   program:= (NAME ':' 'if' '(' cond ')' block
 *              ('else' 'if' '(' cond ')' block)* ('else' block)?)*
 *   block  := '{' (action (';' action)* ';'?)? '}'
 *   NAME   := [A-Za-z_][A-Za-z0-9_.-]* (unique within the program)
 * `#` starts a comment to the end of the line; whitespace and newlines may
 * stand between any two tokens.  Regexes are PCRE2, UTF-8, an unanchored
 * search; (?i) works (Unicode case folding).  \d and \w stay ASCII.
 *
 * Final actions (filter_action_is_final): smime-gateway (R28), drop,
 * bounce and deliver end the run; later filters are skipped.  As with the
 * vendor, quarantine is not final: it marks the message to be held, the
 * remaining filters still run and their actions accumulate, and a release
 * applies them ("delivered as it would have been").  An action written
 * after a final action in the same block could never run, so it is a
 * syntax error rather than silently ignored.
 */
#ifndef SEALGATE_FILTER_H
#define SEALGATE_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FILTER_MAX_TEXT (1024 * 1024) /* bytes of one condition or program */
#define FILTER_MAX_DEPTH 64           /* levels of '(' and 'not', the test inside counting as one */

struct filter_cond;    /* compiled condition: immutable, shareable between threads */
struct filter_program; /* compiled message filters: likewise */

enum filter_action_kind {
  FILTER_SMIME_GATEWAY,     /* arg1 = profile; final (R28) */
  FILTER_SMIME_ON_DELIVERY, /* arg1 = profile; sign/encrypt just before delivery (R29) */
  FILTER_QUARANTINE,        /* arg1 = quarantine name; not final */
  FILTER_DROP,              /* final */
  FILTER_BOUNCE,            /* final */
  FILTER_INSERT_HEADER,     /* arg1 = field name, arg2 = value */
  FILTER_DELIVER,           /* final: deliver now, skip later filters */
};

/* arg1/arg2 are NULL when the action takes fewer arguments.  They are owned
 * by whatever holds the action: the compiled program, or for
 * filter_action_parse the caller's struct (filter_action_clear). */
struct filter_action {
  enum filter_action_kind kind;
  char *arg1, *arg2;
  int line, column; /* where the action's name stands (base_line/base_column applied) */
};

/* What evaluation sees of a message.  Strings are NUL-terminated, except
 * header values, which come with their length (already decoded and
 * unfolded by the caller); any of them may be
 * NULL (absent: a regex test on it is false, its != form true).  Callbacks
 * may be NULL, meaning "none" / false.  header() is called with the name as
 * written in the filter and must compare names case-insensitively
 * (RFC 5322).  The pointers must stay valid for the duration of one eval
 * or run; nothing is kept. */
struct filter_scratch; /* per-thread matching memory: filter_scratch_new */

struct filter_msg {
  struct filter_scratch *scratch; /* NULL: each eval makes and frees its own */
  const char *subject, *mail_from;
  char *const *rcpts;
  size_t n_rcpts;
  /* the index-th field called name: its value (not necessarily
   * NUL-terminated: it may point into the message) and *len; NULL after
   * the last */
  const char *(*header)(void *arg, const char *name, size_t index, size_t *len);
  const char *(*attachment)(void *arg, size_t index);              /* filename; NULL after the last */
  bool (*body_contains)(void *arg, const char *needle);             /* decoded text, case-insensitive */
  void *arg;
  uint64_t body_size; /* bytes of the message as received */
  bool smime_message, smime_verified;
};

/* Matching memory to reuse across the evaluations of one message (one
 * thread at a time): saves an allocation per condition.  NULL when out of
 * memory (then pass none). */
struct filter_scratch *filter_scratch_new(void);
void filter_scratch_free(struct filter_scratch *s); /* NULL is fine */

/* Compile one condition (a content filter's `condition:`).  *out owned by
 * the caller: filter_cond_free. */
int filter_cond_compile(const char *text, int base_line, int base_column, struct filter_cond **out, char *err,
                        size_t errlen);
void filter_cond_free(struct filter_cond *c); /* NULL is fine */

/* Whether c holds for m.  Tests inside and/or stop as soon as the result
 * is known, and tests that need the body are tried after the others, so a
 * lazily decoding body_contains is often never called.  Without a
 * m->scratch, each call creates one pcre2_match_data (on its first regex)
 * and frees it before returning.  A regex whose match fails for any reason
 * other than "no match" (the match limit) counts as not matching.
 * Allocation failure also counts as not matching (XXX: the caller cannot
 * tell; a message this close to OOM is likely to fail elsewhere too). */
bool filter_cond_eval(const struct filter_cond *c, const struct filter_msg *m);

/* Does c test the body (body-contains or attachment-filename)?  Lets the
 * caller skip MIME decoding for messages that no body condition needs. */
bool filter_cond_needs_body(const struct filter_cond *c);

/* One content-filter action string, e.g. `smime-gateway("signenc")`.  On
 * success out's strings belong to the caller (filter_action_clear); on
 * failure out is zeroed.  Positions in err as for filter_cond_compile. */
int filter_action_parse(const char *text, int base_line, int base_column, struct filter_action *out, char *err,
                        size_t errlen);
void filter_action_clear(struct filter_action *a); /* frees the args, zeroes *a */
bool filter_action_is_final(const struct filter_action *a);

/* Compile a `message_filters:` program.  An empty program (or only
 * comments) is valid and runs no filter.  *out owned by the caller:
 * filter_program_free. */
int filter_program_compile(const char *text, int base_line, int base_column, struct filter_program **out, char *err,
                           size_t errlen);
void filter_program_free(struct filter_program *p); /* NULL is fine */

/* Run p on m: for each filter in order, the actions of its first branch
 * whose condition holds (or of its else) are appended to *out, a
 * caller-owned array (start with NULL / 0; free() it) that this function
 * grows with realloc; the action pointers point into p and live as long as
 * p.  Stops after a final action.  Returns 0, or SG_ENOMEM with *out and
 * *n_out still valid and holding what was appended before the failure
 * (treat as a temporary failure of the message). */
int filter_program_run(const struct filter_program *p, const struct filter_msg *m, const struct filter_action ***out,
                       size_t *n_out);

/* Call fn for every action of every branch of p, in order, with the name
 * of the filter it belongs to; stops at the first non-zero return and
 * returns it (0 when fn never objected).  For checks that need more than
 * the text, such as "does this sending profile exist" (config.c). */
int filter_program_each_action(const struct filter_program *p,
                               int (*fn)(const char *filter, const struct filter_action *a, void *arg), void *arg);

/* The name of the filter of p that action a (a pointer filter_program_run
 * returned) belongs to, or NULL if it is not one of p's. */
const char *filter_program_action_filter(const struct filter_program *p, const struct filter_action *a);

/* Does any condition of p test the body? */
bool filter_program_needs_body(const struct filter_program *p);
/* Number of filters and the name of the i-th (owned by p; NULL if i is out
 * of range): for logs and `config check`. */
size_t filter_program_count(const struct filter_program *p);
const char *filter_program_name(const struct filter_program *p, size_t i);

#endif
