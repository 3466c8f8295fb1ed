/* smtp_session - see smtp_session.h.  Reply texts follow RFC 5321/3463. */
#include "core/smtp_session.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/clientlimit.h"
#include "core/config.h"
#include "core/daemon.h"
#include "core/delivery.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/sgerr.h"
#include "core/timeutil.h"
#include "core/shard.h"
#include "core/smtp_data.h"
#include "core/smtp_parser.h"
#include "core/spool.h"

enum sess_state {
  SS_INIT,   /* no HELO/EHLO yet */
  SS_READY,  /* greeted, no transaction */
  SS_MAIL,   /* MAIL accepted, collecting RCPT */
  SS_DATA,   /* reading message data */
  SS_COMMIT, /* waiting for the spool to make the message durable */
};

struct smtp_session {
  uv_tcp_t tcp;
  uv_timer_t timer;
  struct smtp_session *next, *prev;
  struct shard *sh;
  struct config *cfg;
  const struct config_listener *ls;
  struct sockaddr_storage peer;
  char peer_str[INET6_ADDRSTRLEN];
  bool limit_held;
  enum sess_state state;
  bool esmtp;
  char helo[SMTP_DOMAIN_MAX + 1];
  struct buf in;  /* received, not yet processed */
  size_t in_off;
  struct buf out; /* replies not yet written */
  bool discarding_line;
  uint64_t partial_since_ms;
  unsigned errors;
  /* the transaction */
  char *sender;
  bool body8;
  char **rcpts;
  size_t n_rcpts, cap_rcpts;
  bool rcpt_tried; /* a RCPT was given, accepted or not (tells 503 from 554 at DATA) */
  struct smtp_data data;
  struct buf body;
  struct spool_msg *msg;  /* created at DATA (queue id), committed at the end */
  uint64_t data_start_ms;
  size_t held;            /* bytes of body counted in sess_data_held */
  bool over_budget;       /* limits.data_memory was reached during this DATA */
  /* lifetime */
  int open_handles;
  bool closing;
  bool close_after_flush;
  bool draining;
  bool reading;
  bool handles_closing;
};

/* Replies waiting for a client that does not read them: above this we stop
 * reading its commands (each command can make a longer reply, so without
 * this one client could make us queue without bound). */
#define SESS_OUT_MAX (64 * 1024)

/* Message bytes held by all sessions of the process while they receive
 * (limits.data_memory): many clients sending large messages at once must
 * meet 452 4.3.1, not exhaust memory.  Shared by the shards; one atomic. */
static atomic_uint_fast64_t sess_data_held;

/* Count the body's growth; true while the total stays within budget. */
static bool sess__data_account(struct smtp_session *s) {
  if (s->body.len > s->held) {
    atomic_fetch_add(&sess_data_held, s->body.len - s->held);
    s->held = s->body.len;
  }
  return atomic_load(&sess_data_held) <= s->cfg->limits.data_memory;
}

static void sess__data_release(struct smtp_session *s) {
  atomic_fetch_sub(&sess_data_held, s->held);
  s->held = 0;
}

static void sess__process(struct smtp_session *s);
static void sess__close(struct smtp_session *s);

/* ---- output ---------------------------------------------------------- */

static void sess__reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sess__reply(struct smtp_session *s, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 2, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 3) n = (int)sizeof line - 3;
  line[n++] = '\r';
  line[n++] = '\n';
  buf_append(&s->out, line, (size_t)n);
}

static void sess__reply_err(struct smtp_session *s, const struct smtp_error *e) {
  sess__reply(s, "%d %s %s", e->code, e->enh, e->text);
}

struct sess_write {
  uv_write_t req;
  char *data;
};

static void sess__on_write(uv_write_t *req, int status) {
  struct sess_write *w = (struct sess_write *)req;
  struct smtp_session *s = req->handle->data;
  free(w->data);
  free(w);
  if (status < 0 && !s->closing) sess__close(s);
  else if (!s->closing && !s->reading && s->state != SS_COMMIT) sess__process(s); /* paused for output */
}

/* The client did not take our last replies within idle_timeout (it stopped
 * reading): the shutdown would wait for ever, so close hard. */
static void sess__on_linger(uv_timer_t *t) {
  struct smtp_session *s = t->data;
  log_info("session %s: client not reading, closing", s->peer_str);
  sess__close(s);
}

static void sess__on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  struct smtp_session *s = req->handle->data;
  free(req);
  sess__close(s);
}

static void sess__flush(struct smtp_session *s) {
  if (s->out.len > 0 && !s->closing) {
    struct sess_write *w = malloc(sizeof *w);
    size_t len;
    char *data = buf_steal(&s->out, &len);
    if (!w || !data) {
      free(w);
      free(data);
      sess__close(s);
      return;
    }
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, sess__on_write) != 0) {
      free(data);
      free(w);
      sess__close(s);
      return;
    }
  }
  if (s->close_after_flush && !s->closing) {
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&s->tcp, sess__on_shutdown) != 0) {
      free(req);
      sess__close(s);
    } else {
      uv_timer_start(&s->timer, sess__on_linger, s->cfg->limits.idle_timeout_ms, 0);
    }
    s->close_after_flush = false;
    s->closing = true; /* no more input is processed */
    uv_read_stop((uv_stream_t *)&s->tcp);
  }
}

/* Reply, then close once it has been written. */
static void sess__reply_close(struct smtp_session *s, const char *text) {
  sess__reply(s, "%s", text);
  s->close_after_flush = true;
}

/* ---- transaction ------------------------------------------------------ */

static void sess__reset_txn(struct smtp_session *s) {
  free(s->sender);
  s->sender = NULL;
  for (size_t i = 0; i < s->n_rcpts; i++) free(s->rcpts[i]);
  s->n_rcpts = 0;
  s->rcpt_tried = false;
  s->body8 = false;
  sess__data_release(s);
  s->over_budget = false;
  buf_free(&s->body);
  spool_msg_free(s->msg);
  s->msg = NULL;
  if (s->state != SS_INIT) s->state = SS_READY;
}

static bool sess__count_error(struct smtp_session *s) {
  if (++s->errors < s->cfg->limits.max_errors) return false;
  sess__reply_close(s, "421 4.7.0 Too many errors, closing connection");
  return true;
}

/* ---- commands --------------------------------------------------------- */

static void sess__cmd_helo(struct smtp_session *s, const struct smtp_cmd *c) {
  struct smtp_error e;
  if (smtp_parse_helo(c->arg, c->arg_len, &e) != 0) {
    sess__reply_err(s, &e);
    sess__count_error(s);
    return;
  }
  size_t n = c->arg_len < SMTP_DOMAIN_MAX ? c->arg_len : SMTP_DOMAIN_MAX;
  memcpy(s->helo, c->arg, n);
  s->helo[n] = '\0';
  s->esmtp = c->verb == SMTP_VERB_EHLO;
  s->state = SS_READY; /* HELO/EHLO also resets a transaction (RFC 5321 4.1.4) */
  sess__reset_txn(s);
  if (!s->esmtp) {
    sess__reply(s, "250 %s", s->cfg->hostname);
    return;
  }
  sess__reply(s, "250-%s", s->cfg->hostname);
  sess__reply(s, "250-PIPELINING");
  sess__reply(s, "250-SIZE %" PRIu64, s->cfg->limits.message_size);
  sess__reply(s, "250-8BITMIME");
  sess__reply(s, "250 ENHANCEDSTATUSCODES");
}

static void sess__cmd_mail(struct smtp_session *s, const struct smtp_cmd *c) {
  struct smtp_mail_args a;
  struct smtp_error e;
  if (s->state == SS_INIT) {
    sess__reply(s, "503 5.5.1 Error: send HELO/EHLO first");
  } else if (s->state != SS_READY) {
    sess__reply(s, "503 5.5.1 Error: nested MAIL command");
  } else if (s->ls->tls == CONFIG_TLS_REQUIRED) {
    /* XXX: STARTTLS arrives with issue #8; until then `tls: required` means
     * no mail in clear, as RFC 3207 says for a server that requires it. */
    sess__reply(s, "530 5.7.0 Must issue a STARTTLS command first");
    return;
  } else if (smtp_parse_mail(c->arg, c->arg_len, &a, &e) != 0) {
    sess__reply_err(s, &e);
  } else if (a.has_size && a.size > s->cfg->limits.message_size) {
    sess__reply(s, "552 5.3.4 Message size exceeds fixed limit");
    return;
  } else if (!spool_space_ok(s->sh->d->spool, s->cfg->limits.disk_reserve)) {
    sess__reply(s, "452 4.3.1 Insufficient system storage");
    return;
  } else {
    s->sender = strdup(a.addr);
    if (!s->sender) {
      sess__reply(s, "451 4.3.0 Out of memory");
      return;
    }
    s->body8 = a.body == SMTP_BODY_8BITMIME;
    s->state = SS_MAIL;
    sess__reply(s, "250 2.1.0 Ok");
    return;
  }
  sess__count_error(s);
}

/* Who may relay (README): outgoing listeners take clients from relay_from,
 * incoming listeners take recipients in local_domains. */
static bool sess__rcpt_allowed(const struct smtp_session *s, const char *addr) {
  const struct config_listener *ls = s->ls;
  if (ls->direction == CONFIG_OUTGOING) {
    for (size_t i = 0; i < ls->n_relay_from; i++)
      if (config_cidr_match(&ls->relay_from[i], (const struct sockaddr *)&s->peer)) return true;
    return false;
  }
  const char *dom = smtp_addr_domain(addr);
  if (!dom) return strcasecmp(addr, "postmaster") == 0;
  for (size_t i = 0; i < ls->n_local_domains; i++)
    if (strcasecmp(dom, ls->local_domains[i]) == 0) return true;
  return false;
}

static void sess__cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c) {
  struct smtp_rcpt_args a;
  struct smtp_error e;
  if (s->state == SS_MAIL) s->rcpt_tried = true;
  if (s->state != SS_MAIL) {
    sess__reply(s, "503 5.5.1 Error: need MAIL command");
  } else if (smtp_parse_rcpt(c->arg, c->arg_len, &a, &e) != 0) {
    sess__reply_err(s, &e);
  } else if (s->n_rcpts >= s->cfg->limits.recipients) {
    sess__reply(s, "452 4.5.3 Error: too many recipients");
    return;
  } else if (!sess__rcpt_allowed(s, a.addr)) {
    sess__reply(s, "550 5.7.1 <%s>: Relay access denied", a.addr);
    return;
  } else {
    if (s->n_rcpts == s->cap_rcpts) {
      size_t cap = s->cap_rcpts ? s->cap_rcpts * 2 : 8;
      char **r = realloc(s->rcpts, cap * sizeof *r);
      if (!r) {
        sess__reply(s, "452 4.3.0 Out of memory");
        return;
      }
      s->rcpts = r;
      s->cap_rcpts = cap;
    }
    if (!(s->rcpts[s->n_rcpts] = strdup(a.addr))) {
      sess__reply(s, "452 4.3.0 Out of memory");
      return;
    }
    s->n_rcpts++;
    sess__reply(s, "250 2.1.5 Ok");
    return;
  }
  sess__count_error(s);
}

static void sess__received_header(struct smtp_session *s) {
  char date[64];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  char helo[SMTP_DOMAIN_MAX + 1];
  log_safe(helo, sizeof helo, s->helo, strlen(s->helo));
  buf_appendf(&s->body, "Received: from %s ([%s])\r\n\tby %s (sealgate) with %s id %s",
              helo, s->peer_str, s->cfg->hostname, s->esmtp ? "ESMTP" : "SMTP",
              s->msg->env.queue_id);
  if (s->n_rcpts == 1) buf_appendf(&s->body, "\r\n\tfor <%s>", s->rcpts[0]);
  buf_appendf(&s->body, "; %s\r\n", date);
}

static void sess__cmd_data(struct smtp_session *s) {
  if (s->state != SS_MAIL) {
    sess__reply(s, "503 5.5.1 Error: need MAIL command");
    sess__count_error(s);
    return;
  }
  if (!s->rcpt_tried) { /* no RCPT at all: out of sequence, like RCPT before MAIL */
    sess__reply(s, "503 5.5.1 Error: need RCPT command");
    sess__count_error(s);
    return;
  }
  if (s->n_rcpts == 0) { /* RFC 2920: pipelined DATA after all RCPTs failed */
    sess__reply(s, "554 5.5.1 Error: no valid recipients");
    return;
  }
  if (atomic_load(&sess_data_held) > s->cfg->limits.data_memory) {
    sess__reply(s, "452 4.3.1 Insufficient system storage (busy), try again later");
    return;
  }
  if (!spool_space_ok(s->sh->d->spool, s->cfg->limits.disk_reserve)) {
    sess__reply(s, "452 4.3.1 Insufficient system storage");
    return;
  }
  s->msg = calloc(1, sizeof *s->msg);
  if (!s->msg) {
    sess__reply(s, "451 4.3.0 Out of memory");
    return;
  }
  spool_new_id(s->sh->d->spool, s->sh->id, s->msg);
  smtp_data_init(&s->data, s->cfg->limits.message_size, s->cfg->limits.data_line_length);
  buf_reset(&s->body);
  sess__received_header(s);
  s->data_start_ms = timeutil_mono_ms();
  s->state = SS_DATA;
  sess__reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* ---- end of data and commit -------------------------------------------- */

static void sess__log_accept(struct smtp_session *s, const struct spool_msg *m, const char *result) {
  char from[300];
  log_safe(from, sizeof from, m->env.sender, strlen(m->env.sender));
  log_info("queue_id=%s from=<%s> rcpts=%zu size=%zu action=relay result=%s client=%s ms=%" PRIu64,
           m->env.queue_id, from, m->env.n_rcpts, m->data_len, result, s->peer_str,
           timeutil_mono_ms() - s->data_start_ms);
}

static void sess__committed(struct spool_msg *m, int status, void *arg) {
  struct smtp_session *s = arg;
  if (status == 0) {
    sess__log_accept(s, m, "queued");
    sess__reply(s, "250 2.0.0 Ok: queued as %s", m->env.queue_id);
    delivery_enqueue(s->sh->dl, m); /* durable now: delivered even if the client is gone */
  } else {
    sess__log_accept(s, m, sgerr_str(status));
    if (status == SG_ENOSPC) sess__reply(s, "452 4.3.1 Insufficient system storage");
    else sess__reply(s, "451 4.3.0 Error: queue file write error");
    spool_msg_free(m);
  }
  s->state = SS_READY;
  if (s->closing) { /* the client went away while we synced */
    sess__close(s);
    return;
  }
  sess__process(s);
}

/* Build the envelope: the transaction's fields move into the message. */
static int sess__fill_envelope(struct smtp_session *s, struct spool_msg *m) {
  char hop[300];
  struct spool_envelope *e = &m->env;
  e->arrival_ms = timeutil_wall_ms();
  e->sender = s->sender;
  s->sender = NULL;
  e->rcpts = s->rcpts;
  e->n_rcpts = s->n_rcpts;
  s->rcpts = NULL;
  s->n_rcpts = s->cap_rcpts = 0;
  e->flags = (s->body8 ? SPOOL_F_8BITMIME : 0) | (s->ls && s->ls->sending_profile ? SPOOL_F_SMIME : 0);
  snprintf(hop, sizeof hop, "%s:%u", s->ls->next_hop.addr.host, (unsigned)s->ls->next_hop.addr.port);
  e->listener = strdup(s->ls->name);
  e->next_hop = strdup(hop);
  e->client = strdup(s->peer_str);
  sess__data_release(s); /* the bytes now belong to the spool/delivery path */
  m->data = buf_steal(&s->body, &m->data_len);
  return (e->listener && e->next_hop && e->client && m->data) ? 0 : SG_ENOMEM;
}

static void sess__end_data(struct smtp_session *s) {
  unsigned f = s->data.flags;
  const char *reject = NULL;
  if (s->over_budget) reject = "452 4.3.1 Insufficient system storage (busy), try again later";
  else if (f & SMTP_DATA_NOMEM) reject = "451 4.3.0 Error: out of memory";
  else if (f & SMTP_DATA_BARE_NEWLINE)
    reject = "554 5.6.0 Error: bare CR or LF in message data (SMTP smuggling defence)";
  else if (f & SMTP_DATA_TOO_BIG) reject = "552 5.3.4 Error: message size exceeds fixed limit";
  else if (f & SMTP_DATA_LINE_TOO_LONG) reject = "552 5.3.4 Error: message line too long";
  else if (s->data.received_count > s->cfg->limits.max_hops)
    reject = "554 5.4.6 Error: too many hops (mail loop?)";
  if (reject) {
    sess__reply(s, "%s", reject);
    sess__reset_txn(s);
    return;
  }
  struct spool_msg *m = s->msg;
  s->msg = NULL;
  if (sess__fill_envelope(s, m) != 0) {
    spool_msg_free(m);
    sess__reply(s, "451 4.3.0 Error: out of memory");
    sess__reset_txn(s);
    return;
  }
  sess__reset_txn(s);
  s->state = SS_COMMIT;
  uv_timer_stop(&s->timer);
  if (spool_commit(s->sh->d->spool, s->sh->id, m, false, &s->sh->mb, sess__committed, s) != 0) {
    spool_msg_free(m);
    s->state = SS_READY;
    sess__reply(s, "451 4.3.0 Error: queue file write error");
  }
}

/* ---- input ------------------------------------------------------------- */

static void sess__command(struct smtp_session *s, const char *line, size_t len) {
  struct smtp_cmd c;
  struct smtp_error e;
  if (smtp_parse_command(line, len, &c, &e) != 0) {
    sess__reply_err(s, &e);
    sess__count_error(s);
    return;
  }
  switch (c.verb) {
    case SMTP_VERB_HELO:
    case SMTP_VERB_EHLO: sess__cmd_helo(s, &c); break;
    case SMTP_VERB_MAIL: sess__cmd_mail(s, &c); break;
    case SMTP_VERB_RCPT: sess__cmd_rcpt(s, &c); break;
    case SMTP_VERB_DATA: sess__cmd_data(s); break;
    case SMTP_VERB_RSET: sess__reset_txn(s); sess__reply(s, "250 2.0.0 Ok"); break;
    case SMTP_VERB_NOOP: sess__reply(s, "250 2.0.0 Ok"); break;
    case SMTP_VERB_QUIT: sess__reply_close(s, "221 2.0.0 Bye"); break;
    case SMTP_VERB_VRFY: sess__reply(s, "252 2.5.2 Cannot VRFY user, but will accept message"); break;
    case SMTP_VERB_HELP:
      sess__reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
      break;
    case SMTP_VERB_HTTP: sess__reply_close(s, "421 4.7.0 HTTP request to an SMTP server, closing"); break;
    default:
      sess__reply(s, "502 5.5.1 Error: command not implemented");
      sess__count_error(s);
      break;
  }
}

/* A message past 1 MiB gets room for the largest allowed message at once.
 * Doubling a buffer that size costs a copy each time and, with tcmalloc
 * (Release builds), every old copy stays resident: 3x the message at the
 * end.  Pages of the reservation that are never written are never
 * resident, so this costs address space, not memory. */
#define SESS_BODY_RESERVE_AT (1u << 20)
static void sess__body_room(struct smtp_session *s) {
  uint64_t limit = s->cfg->limits.message_size + 65536; /* our Received: line and slack */
  if (s->body.len < SESS_BODY_RESERVE_AT || s->body.cap >= limit) return;
  buf_reserve(&s->body, (size_t)(limit - s->body.len)); /* on failure doubling goes on */
}

/* Handle bytes [p, p+n); returns how many were consumed.  Stops at the end
 * of DATA (the commit must finish before pipelined commands run) and when
 * only a partial line is left. */
static size_t sess__consume(struct smtp_session *s, const char *p, size_t n) {
  size_t off = 0;
  while (off < n && !s->closing && !s->close_after_flush && s->state != SS_COMMIT) {
    if (s->state == SS_DATA) {
      bool done = false;
      sess__body_room(s);
      off += smtp_data_feed(&s->data, p + off, n - off, &s->body, &done);
      if (!sess__data_account(s) && !s->over_budget) {
        s->over_budget = true; /* read to the end, keep nothing more, then 452 */
        s->data.flags |= SMTP_DATA_NOMEM;
      }
      if (done) sess__end_data(s);
      continue;
    }
    const char *nl = memchr(p + off, '\n', n - off);
    if (!nl) {
      if (s->discarding_line || n - off > SMTP_LINE_MAX) { /* no line that long is valid */
        s->discarding_line = true;
        off = n;
      }
      break;
    }
    size_t len = (size_t)(nl - (p + off));
    const char *line = p + off;
    off += len + 1;
    s->partial_since_ms = 0; /* a line ended: the command clock starts again */
    if (len > 0 && line[len - 1] == '\r') len--;
    if (s->discarding_line || len + 2 > SMTP_LINE_MAX) {
      s->discarding_line = false;
      sess__reply(s, "500 5.5.2 Error: line too long");
      sess__count_error(s);
      continue;
    }
    sess__command(s, line, len);
  }
  return off;
}

static void sess__arm_timer(struct smtp_session *s);
static void sess__on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void sess__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

/* command_timeout runs from the first byte of the command line still
 * pending, after what was just read has been consumed: a line being
 * discarded for its length counts too (else a drip of it would only ever
 * meet idle_timeout), and a line begun in the same read that ended the
 * previous one starts its own clock. */
static void sess__track_partial(struct smtp_session *s) {
  bool pending = s->discarding_line || s->in.len > s->in_off;
  if (s->state == SS_DATA || !pending) s->partial_since_ms = 0;
  else if (s->partial_since_ms == 0) s->partial_since_ms = timeutil_mono_ms();
}

static void sess__process(struct smtp_session *s) {
  if (s->in.len > s->in_off) {
    s->in_off += sess__consume(s, s->in.data + s->in_off, s->in.len - s->in_off);
    if (s->in_off == s->in.len) {
      buf_reset(&s->in);
      s->in_off = 0;
    }
  }
  sess__track_partial(s);
  if (s->draining && !s->closing && !s->close_after_flush &&
      (s->state == SS_INIT || s->state == SS_READY))
    sess__reply_close(s, "421 4.3.2 Service shutting down, closing connection");
  sess__flush(s);
  if (s->closing) return;
  bool want = s->state != SS_COMMIT && /* back-pressure while we sync */
              uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) < SESS_OUT_MAX;
  if (want && !s->reading) uv_read_start((uv_stream_t *)&s->tcp, sess__on_alloc, sess__on_read);
  if (!want && s->reading) uv_read_stop((uv_stream_t *)&s->tcp);
  s->reading = want;
  sess__arm_timer(s);
}

static void sess__on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  struct smtp_session *s = h->data;
  *b = uv_buf_init(s->sh->readbuf, sizeof s->sh->readbuf);
}

static void sess__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  struct smtp_session *s = st->data;
  if (nread < 0) { /* EOF or reset: whatever was not acknowledged is the client's */
    sess__close(s);
    return;
  }
  if (nread == 0) return;
  size_t n = (size_t)nread;
  if (s->in.len > s->in_off) {
    if (buf_append(&s->in, b->base, n) != 0) {
      sess__close(s);
      return;
    }
  } else {
    /* Common case: nothing buffered, so parse straight from the read buffer
     * (which is shared by the shard) and keep only the unconsumed tail. */
    size_t used = sess__consume(s, b->base, n);
    buf_reset(&s->in);
    s->in_off = 0;
    if (used < n && !s->closing && buf_append(&s->in, b->base + used, n - used) != 0) {
      sess__close(s);
      return;
    }
  }
  sess__process(s);
}

static void sess__on_timeout(uv_timer_t *t) {
  struct smtp_session *s = t->data;
  log_info("session %s: timeout in state %d", s->peer_str, (int)s->state);
  sess__reply_close(s, "421 4.4.2 Error: timeout exceeded");
  sess__flush(s);
}

static void sess__arm_timer(struct smtp_session *s) {
  if (s->closing || s->state == SS_COMMIT) {
    uv_timer_stop(&s->timer);
    return;
  }
  uint64_t t = s->cfg->limits.idle_timeout_ms;
  if (s->state != SS_DATA && s->partial_since_ms) {
    uint64_t elapsed = timeutil_mono_ms() - s->partial_since_ms;
    uint64_t left = s->cfg->limits.command_timeout_ms > elapsed
                        ? s->cfg->limits.command_timeout_ms - elapsed : 1;
    if (left < t) t = left;
  }
  uv_timer_start(&s->timer, sess__on_timeout, t, 0);
}

/* ---- lifetime ---------------------------------------------------------- */

static void sess__free(struct smtp_session *s) {
  struct shard *sh = s->sh;
  if (s->limit_held) clientlimit_release((const struct sockaddr *)&s->peer);
  sess__reset_txn(s);
  free(s->rcpts);
  buf_free(&s->in);
  buf_free(&s->out);
  buf_free(&s->body);
  if (s->prev) s->prev->next = s->next;
  else sh->sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  sh->n_sessions--;
  config_unref(s->cfg);
  free(s);
  shard_check_idle(sh);
}

static void sess__handle_closed(uv_handle_t *h) {
  struct smtp_session *s = h->data;
  if (--s->open_handles == 0) sess__free(s);
}

static void sess__close(struct smtp_session *s) {
  s->closing = true;
  if (s->handles_closing || s->state == SS_COMMIT) return; /* commit callback closes later */
  s->handles_closing = true;
  uv_close((uv_handle_t *)&s->tcp, sess__handle_closed);
  uv_close((uv_handle_t *)&s->timer, sess__handle_closed);
}

static struct smtp_session *sess__new(struct shard *sh) {
  struct smtp_session *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->sh = sh;
  uv_tcp_init(&sh->loop, &s->tcp);
  uv_timer_init(&sh->loop, &s->timer);
  s->tcp.data = s->timer.data = s;
  s->open_handles = 2;
  s->next = sh->sessions;
  if (s->next) s->next->prev = s;
  sh->sessions = s;
  sh->n_sessions++;
  s->cfg = daemon_config_get(sh->d);
  return s;
}

static const struct config_listener *sess__find_listener(const struct config *c, const char *key) {
  char k[300];
  for (size_t i = 0; i < c->n_listeners; i++)
    if (strcmp(listener_key(&c->listeners[i], k, sizeof k), key) == 0) return &c->listeners[i];
  return NULL;
}

static void sess__peer_string(struct smtp_session *s) {
  int len = sizeof s->peer;
  if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&s->peer, &len) != 0) {
    strcpy(s->peer_str, "unknown");
    return;
  }
  if (s->peer.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&s->peer, s->peer_str, sizeof s->peer_str);
  else
    uv_ip4_name((struct sockaddr_in *)&s->peer, s->peer_str, sizeof s->peer_str);
}

/* Greet, or refuse with 421 when a limit or a drain says so. */
static void sess__start(struct smtp_session *s, const char *key) {
  s->ls = sess__find_listener(s->cfg, key);
  sess__peer_string(s);
  if (!s->ls) { /* the listener was removed by a reload a moment ago */
    sess__close(s);
    return;
  }
  const struct config_limits *lim = &s->cfg->limits;
  int rc = clientlimit_acquire((const struct sockaddr *)&s->peer, lim->connections_per_client,
                               lim->connection_rate_per_client);
  s->limit_held = rc == 0;
  if (s->sh->draining)
    sess__reply_close(s, "421 4.3.2 Service shutting down, closing connection");
  else if (rc == SG_ELIMIT)
    sess__reply_close(s, "421 4.7.0 Error: too many connections from your address");
  else if (rc == SG_EBUSY)
    sess__reply_close(s, "421 4.7.0 Error: connection rate limit exceeded");
  else
    sess__reply(s, "220 %s ESMTP sealgate", s->cfg->hostname);
  if (rc != 0) log_info("session %s: refused: %s", s->peer_str, sgerr_str(rc));
  sess__process(s);
}

void smtp_session_accept(struct shard *sh, uv_stream_t *server, const char *listener_key) {
  struct smtp_session *s = sess__new(sh);
  if (!s) return;
  if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
    sess__close(s);
    return;
  }
  sess__start(s, listener_key);
}

void smtp_session_adopt_fd(struct shard *sh, int fd, const char *listener_key) {
  struct smtp_session *s = sess__new(sh);
  if (!s) {
    close(fd);
    return;
  }
  if (uv_tcp_open(&s->tcp, fd) != 0) {
    close(fd);
    sess__close(s);
    return;
  }
  sess__start(s, listener_key);
}

void smtp_session_drain_all(struct shard *sh) {
  for (struct smtp_session *s = sh->sessions; s; s = s->next) {
    s->draining = true;
    if (!s->closing) sess__process(s);
  }
}
