/*
 * sl_session - see sl_session.h.
 *
 * The transaction is a fixed sequence of expected replies, indexed by
 * s->step: [RSET] MAIL RCPT*n DATA DOT (RSET only when the previous
 * transaction was left half-open).  With PIPELINING the whole envelope
 * and DATA go out in one write and the replies are consumed in order;
 * without, each reply releases the next command.  The final reply of a
 * message is its outcome: the MAIL reply if MAIL failed, else the first
 * refused RCPT's if none was accepted, else the reply to DATA or to the
 * end of data.
 *
 * Every connection ends in ss__close(); its close callback decides what
 * comes next (after_close): the next message, a retry after backoff, or
 * the end of the session.
 */
#include "tools/sealload/sl_session.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/sgerr.h"

enum { AC_NEXT = 0, AC_RETRY, AC_DEAD };

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

struct sl_wreq {
  uv_write_t req;
  struct sl_session *s;
  struct buf b;          /* command text; unused for the body */
  bool body;
  struct sl_wreq *next;
};

static void ss__open(struct sl_session *s);
static void ss__io_error(struct sl_session *s, enum sl_fail kind);

/* ---- connection life ---------------------------------------------------- */

static void ss__free(struct sl_session *s) {
  s->is_free = true;
  s->env->on_free(s, s->env->owner);
}

static void ss__dead(struct sl_session *s) {
  if (s->has_msg) { /* it never went out */
    s->env->stats->unsent++;
    s->has_msg = false;
  }
  s->state = SL_S_DEAD;
  s->env->on_dead(s, s->env->owner);
}

static void ss__on_backoff(uv_timer_t *t) {
  struct sl_session *s = t->data;
  if (*s->env->stopping) ss__dead(s);
  else ss__open(s);
}

static void ss__on_closed(uv_handle_t *h) {
  struct sl_session *s = h->data;
  s->in_len = 0;
  s->reply_code = 0;
  s->pipelining = s->want_rset = s->body_pending = false;
  s->state = SL_S_DOWN;
  if (s->after_close == AC_DEAD) {
    ss__dead(s);
  } else if (s->after_close == AC_RETRY) {
    if (++s->failures > s->env->retries || *s->env->stopping) {
      ss__dead(s);
      return;
    }
    unsigned shift = s->failures - 1 < 6 ? s->failures - 1 : 6;
    uint64_t ms = (uint64_t)BACKOFF_FIRST_MS << shift;
    s->state = SL_S_BACKOFF;
    uv_timer_start(&s->timer, ss__on_backoff, ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS, 0);
  } else if (s->has_msg) { /* given a message while the old connection closed */
    ss__open(s);
  } else if (!s->is_free) {
    ss__free(s);
  }
}

/* End the connection; after_close says what follows. */
static void ss__close(struct sl_session *s, int after_close) {
  if (s->state == SL_S_CLOSING) {
    if (after_close == AC_DEAD) s->after_close = AC_DEAD;
    return;
  }
  uv_timer_stop(&s->timer);
  s->after_close = after_close;
  s->state = SL_S_CLOSING;
  uv_close((uv_handle_t *)&s->tcp, ss__on_closed);
}

static void ss__conn_fail(struct sl_session *s) {
  s->env->stats->fail[SL_FAIL_CONNECT]++;
  ss__close(s, AC_RETRY);
}

static void ss__txn_fail(struct sl_session *s, enum sl_fail kind) {
  s->env->stats->fail[kind]++;
  SL_COUNT(s->env->stats->failed, 1);
  s->has_msg = false;
  ss__close(s, AC_NEXT);
}

static void ss__on_timeout(uv_timer_t *t) { ss__io_error(t->data, SL_FAIL_TIMEOUT); }

static void ss__arm(struct sl_session *s) {
  if (s->state == SL_S_CLOSING) return; /* a failed write closed it */
  uv_timer_start(&s->timer, ss__on_timeout, s->env->timeout_ms, 0);
}

/* A failure of the connection itself (error, EOF, timeout): what it
 * means depends on where the session was. */
static void ss__io_error(struct sl_session *s, enum sl_fail kind) {
  switch (s->state) {
    case SL_S_CONNECT:
    case SL_S_BANNER:
    case SL_S_EHLO:
    case SL_S_HELO: ss__conn_fail(s); break;
    case SL_S_TXN: ss__txn_fail(s, kind); break;
    case SL_S_READY: ss__close(s, AC_NEXT); break; /* the server dropped an idle connection */
    case SL_S_QUIT: ss__close(s, s->quit_then); break;
    default: break;
  }
}

/* ---- writing ------------------------------------------------------------- */

static struct sl_wreq *ss__wreq(struct sl_session *s) {
  struct sl_wreq *w = s->free_wreqs;
  if (w) {
    s->free_wreqs = w->next;
  } else if ((w = calloc(1, sizeof *w)) == NULL) {
    return NULL;
  }
  w->s = s;
  w->body = false;
  buf_reset(&w->b);
  return w;
}

static void ss__on_write(uv_write_t *req, int status) {
  struct sl_wreq *w = (struct sl_wreq *)req;
  struct sl_session *s = w->s;
  if (w->body) s->body_pending = false;
  w->next = s->free_wreqs;
  s->free_wreqs = w;
  if (status < 0 && status != UV_ECANCELED) ss__io_error(s, SL_FAIL_LOST);
}

/* Write w (its own text, or bufs for the body); w is recycled in the
 * write callback, or at once if the write cannot start. */
static void ss__write(struct sl_session *s, struct sl_wreq *w, uv_buf_t *bufs, unsigned n) {
  uv_buf_t one = uv_buf_init(w->b.data, (unsigned)w->b.len);
  if (!bufs) bufs = &one, n = 1;
  if (w->body) s->body_pending = true;
  int r = uv_write(&w->req, (uv_stream_t *)&s->tcp, bufs, n, ss__on_write);
  if (r != 0) {
    if (w->body) s->body_pending = false;
    w->next = s->free_wreqs;
    s->free_wreqs = w;
    ss__io_error(s, SL_FAIL_LOST);
  }
}

static void ss__send_line(struct sl_session *s, const char *verb, const char *arg) {
  struct sl_wreq *w = ss__wreq(s);
  if (!w || buf_appendf(&w->b, "%s%s%s\r\n", verb, arg ? " " : "", arg ? arg : "") != 0) {
    if (w) w->next = s->free_wreqs, s->free_wreqs = w;
    ss__io_error(s, SL_FAIL_LOST);
    return;
  }
  ss__write(s, w, NULL, 0);
}

/* The command of transaction step i. */
static int ss__cmd(const struct sl_session *s, unsigned i, struct buf *b) {
  const struct sl_session_env *e = s->env;
  if (i < s->base) return buf_append(b, "RSET\r\n", 6);
  if (i == s->base) return buf_appendf(b, "MAIL FROM:<%s>%s\r\n", e->from, e->msg->body8 ? " BODY=8BITMIME" : "");
  if (i <= s->base + e->n_rcpts) return buf_appendf(b, "RCPT TO:<%s>\r\n", e->rcpts[i - s->base - 1]);
  return buf_append(b, "DATA\r\n", 6);
}

/* Write steps first..last (inclusive) in one write. */
static void ss__send_cmds(struct sl_session *s, unsigned first, unsigned last) {
  struct sl_wreq *w = ss__wreq(s);
  int rc = w ? 0 : SG_ENOMEM;
  for (unsigned i = first; rc == 0 && i <= last; i++) rc = ss__cmd(s, i, &w->b);
  if (rc != 0) {
    if (w) w->next = s->free_wreqs, s->free_wreqs = w;
    ss__io_error(s, SL_FAIL_LOST);
    return;
  }
  ss__write(s, w, NULL, 0);
  ss__arm(s);
}

/* After 354: the ID line and the shared, already stuffed template; or
 * only the end marker when no recipient was accepted (a server that says
 * 354 then must not get the message). */
static void ss__send_body(struct sl_session *s, bool real) {
  static char end[] = ".\r\n";
  struct sl_wreq *w = ss__wreq(s);
  if (!w) {
    ss__io_error(s, SL_FAIL_LOST);
    return;
  }
  w->body = true;
  uv_buf_t bufs[2] = {uv_buf_init(s->idline, SL_MSG_ID_LINE_LEN),
                      uv_buf_init(s->env->msg->tail.data, (unsigned)s->env->msg->tail.len)};
  if (!real) bufs[0] = uv_buf_init(end, 3);
  s->sent_body = real;
  ss__write(s, w, bufs, real ? 2 : 1);
  ss__arm(s);
}

/* ---- the transaction ----------------------------------------------------- */

static void ss__txn_start(struct sl_session *s) {
  struct sl_session_env *e = s->env;
  sl_msg_id_line(e->msg, e->worker, e->seq++, s->idline);
  s->state = SL_S_TXN;
  s->base = s->want_rset ? 1 : 0;
  s->want_rset = false;
  s->step = 0;
  s->mail_code = s->rcpt_fail_code = 0;
  s->rcpt_ok = 0;
  s->sent_body = false;
  SL_COUNT(e->stats->sent, 1);
  /* RFC 2920: the envelope and DATA in one group; DATA is its last. */
  ss__send_cmds(s, 0, s->pipelining ? s->base + (unsigned)e->n_rcpts + 1 : 0);
}

/* The reply that decides the message (see the file comment). */
static int ss__outcome(const struct sl_session *s, int last) {
  if (s->mail_code / 100 != 2) return s->mail_code;
  if (s->rcpt_ok == 0) return s->rcpt_fail_code;
  return last;
}

static void ss__finish(struct sl_session *s, int code) {
  struct sl_session_env *e = s->env;
  struct sl_client_stats *st = e->stats;
  uv_timer_stop(&s->timer);
  s->has_msg = false;
  s->state = SL_S_READY;
  st->replies[code]++;
  if (s->sent_body && code / 100 == 2) {
    uint64_t us = (uv_hrtime() - s->t_sched) / 1000;
    sl_hist_record(&st->lat, us);
    st->bytes_acked += e->msg->size;
    SL_COUNT(st->acked, 1);
    /* Whole lines only: if memory runs out the line is lost, never cut. */
    if (e->acked && buf_reserve(e->acked, SL_MSG_ID_LEN + 1) == 0) {
      buf_append(e->acked, s->idline + 13, SL_MSG_ID_LEN);
      buf_append(e->acked, "\n", 1);
    }
  } else {
    SL_COUNT(st->failed, 1);
  }
  if (e->reuse) {
    ss__free(s);
    return;
  }
  s->quit_then = AC_NEXT;
  s->state = SL_S_QUIT;
  ss__send_line(s, "QUIT", NULL);
  ss__arm(s);
}

/* Replies to RSET, MAIL and RCPT: without pipelining, send what follows. */
static void ss__envelope_reply(struct sl_session *s, unsigned i, int code) {
  size_t n = s->env->n_rcpts;
  if (i == s->base) {
    s->mail_code = code;
  } else if (i > s->base) {
    if (code / 100 == 2) s->rcpt_ok++;
    else if (!s->rcpt_fail_code) s->rcpt_fail_code = code;
  }
  if (s->pipelining) {
    ss__arm(s);
    return;
  }
  if (i == s->base && code / 100 != 2) { /* no transaction was opened */
    ss__finish(s, code);
  } else if (i == s->base + n && s->rcpt_ok == 0) {
    s->want_rset = true;
    ss__finish(s, s->rcpt_fail_code);
  } else {
    ss__send_cmds(s, i + 1, i + 1);
  }
}

static void ss__txn_reply(struct sl_session *s, int code) {
  unsigned i = s->step++, data_step = s->base + (unsigned)s->env->n_rcpts + 1;
  if (i < data_step) {
    ss__envelope_reply(s, i, code);
  } else if (i == data_step) {
    bool open = s->mail_code / 100 == 2 && s->rcpt_ok > 0;
    if (code == 354) {
      ss__send_body(s, open);
      return;
    }
    if (s->mail_code / 100 == 2) s->want_rset = true;
    ss__finish(s, ss__outcome(s, code));
  } else if (s->body_pending) {
    /* A reply before all of the data was written: the server stopped
     * reading, and what is left could be taken for commands. */
    ss__txn_fail(s, SL_FAIL_PROTO);
  } else {
    ss__finish(s, ss__outcome(s, code));
  }
}

/* ---- reading replies ----------------------------------------------------- */

static void ss__ready(struct sl_session *s) {
  uv_timer_stop(&s->timer);
  s->failures = 0;
  s->env->stats->connections++;
  s->state = SL_S_READY;
  if (s->has_msg) ss__txn_start(s);
  else ss__free(s);
}

static void ss__reply(struct sl_session *s, int code) {
  switch (s->state) {
    case SL_S_BANNER:
      if (code / 100 != 2) {
        ss__conn_fail(s);
        return;
      }
      s->state = SL_S_EHLO;
      ss__send_line(s, "EHLO", s->env->helo);
      ss__arm(s);
      return;
    case SL_S_EHLO:
    case SL_S_HELO:
      if (code / 100 == 2) {
        ss__ready(s);
      } else if (s->state == SL_S_EHLO && code / 100 == 5) {
        s->state = SL_S_HELO;
        ss__send_line(s, "HELO", s->env->helo);
        ss__arm(s);
      } else {
        ss__conn_fail(s);
      }
      return;
    case SL_S_TXN: ss__txn_reply(s, code); return;
    case SL_S_QUIT: ss__close(s, s->quit_then); return;
    case SL_S_READY: ss__close(s, AC_NEXT); return; /* e.g. 421 on an idle connection */
    default: return;
  }
}

/* One reply line: "250-text" continues a reply, "250 text" or "250" ends
 * it.  Returns false for a malformed line. */
static bool ss__line(struct sl_session *s, const char *p, size_t len) {
  if (len < 3 || p[0] < '1' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
      (len > 3 && p[3] != ' ' && p[3] != '-'))
    return false;
  int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
  if (s->reply_code && code != s->reply_code) return false;
  if (s->state == SL_S_EHLO && len >= 14 && strncasecmp(p + 4, "PIPELINING", 10) == 0 &&
      (len == 14 || p[14] == ' '))
    s->pipelining = true;
  if (len > 3 && p[3] == '-') {
    s->reply_code = code;
    return true;
  }
  s->reply_code = 0;
  ss__reply(s, code);
  return true;
}

static void ss__on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  struct sl_session *s = h->data;
  *b = uv_buf_init(s->in + s->in_len, (unsigned)(SL_SESSION_IN_MAX - s->in_len));
}

static void ss__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  struct sl_session *s = st->data;
  if (nread < 0) {
    ss__io_error(s, nread == UV_ENOBUFS ? SL_FAIL_PROTO : SL_FAIL_LOST);
    return;
  }
  s->in_len += (size_t)nread;
  size_t off = 0;
  while (s->state != SL_S_CLOSING) {
    char *nl = memchr(s->in + off, '\n', s->in_len - off);
    if (!nl) break;
    const char *line = s->in + off;
    size_t len = (size_t)(nl - line);
    off += len + 1;
    if (len > 0 && line[len - 1] == '\r') len--;
    if (!ss__line(s, line, len)) {
      if (s->state == SL_S_TXN) ss__txn_fail(s, SL_FAIL_PROTO);
      else ss__io_error(s, SL_FAIL_PROTO);
    }
  }
  if (s->state == SL_S_CLOSING) return;
  memmove(s->in, s->in + off, s->in_len - off);
  s->in_len -= off;
}

/* ---- connecting ---------------------------------------------------------- */

static void ss__on_connect(uv_connect_t *req, int status) {
  struct sl_session *s = req->data;
  if (s->state != SL_S_CONNECT) return; /* closed meanwhile (timeout) */
  if (status < 0) {
    ss__conn_fail(s);
    return;
  }
  s->state = SL_S_BANNER;
  uv_tcp_nodelay(&s->tcp, 1); /* pipelined groups must not wait for an ACK */
  if (uv_read_start((uv_stream_t *)&s->tcp, ss__on_alloc, ss__on_read) != 0) {
    ss__conn_fail(s);
    return;
  }
  ss__arm(s);
}

static void ss__open(struct sl_session *s) {
  uv_tcp_init(s->env->loop, &s->tcp);
  s->tcp.data = s;
  s->conn.data = s;
  s->state = SL_S_CONNECT;
  ss__arm(s);
  if (uv_tcp_connect(&s->conn, &s->tcp, s->env->addr, ss__on_connect) != 0) ss__conn_fail(s);
}

/* ---- public -------------------------------------------------------------- */

void sl_session_init(struct sl_session *s, struct sl_session_env *env) {
  memset(s, 0, sizeof *s);
  s->env = env;
  s->state = SL_S_DOWN;
  s->is_free = true;
  uv_timer_init(env->loop, &s->timer);
  s->timer.data = s;
}

void sl_session_connect(struct sl_session *s) {
  s->is_free = false;
  if (s->state == SL_S_DOWN) ss__open(s);
}

void sl_session_take(struct sl_session *s, uint64_t t_sched) {
  s->is_free = false;
  s->has_msg = true;
  s->t_sched = t_sched;
  if (s->state == SL_S_READY) ss__txn_start(s);
  else if (s->state == SL_S_DOWN) ss__open(s);
  /* SL_S_CLOSING: the close callback connects again for it */
}

void sl_session_shutdown(struct sl_session *s) {
  switch (s->state) {
    case SL_S_READY:
      s->quit_then = AC_DEAD;
      s->state = SL_S_QUIT;
      ss__send_line(s, "QUIT", NULL);
      ss__arm(s);
      break;
    case SL_S_DOWN: ss__dead(s); break;
    case SL_S_BACKOFF:
      uv_timer_stop(&s->timer);
      ss__dead(s);
      break;
    case SL_S_DEAD: break;
    default: ss__close(s, AC_DEAD); break; /* connecting, or closing already */
  }
}

void sl_session_release(struct sl_session *s) {
  uv_close((uv_handle_t *)&s->timer, NULL);
  while (s->free_wreqs) {
    struct sl_wreq *w = s->free_wreqs;
    s->free_wreqs = w->next;
    buf_free(&w->b);
    free(w);
  }
}
