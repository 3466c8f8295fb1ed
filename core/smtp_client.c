/* smtp_client - see smtp_client.h. */
#include "core/smtp_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/sgerr.h"

#define CL_LINE_MAX 4096

enum cl_phase { CL_CONNECT, CL_BANNER, CL_EHLO, CL_HELO, CL_READY, CL_TXN, CL_DEAD };

struct smtp_client {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t conn_req;
  uv_getaddrinfo_t gai;
  char *host, *helo;
  uint16_t port;
  uint64_t connect_timeout_ms, reply_timeout_ms;
  enum cl_phase phase;
  bool pipelining;
  bool said_421; /* the server is closing the channel (RFC 5321 3.8): not reusable */
  struct buf in;
  struct smtp_client_reply cur; /* reply being read (first line's text kept) */
  bool cur_started;
  smtp_client_ready_cb ready_cb;
  smtp_client_done_cb done_cb;
  void *arg;
  /* the transaction */
  const char *sender;
  char *const *rcpts;
  size_t n_rcpt;
  struct smtp_client_reply mail, *rcpt, data;
  const char *body;
  size_t body_len;
  bool body8;
  size_t expect;   /* reply awaited: 0 MAIL, 1..n RCPT, n+1 DATA, n+2 end of data or RSET */
  bool sent_body;
  unsigned body_writes; /* body writes libuv has not finished */
  int open_handles;
  bool closing;
  bool gai_pending;
};

static void cl__fail(struct smtp_client *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* c is freed when its last handle closed and its last request reported. */
static void cl__unref(struct smtp_client *c) {
  if (--c->open_handles > 0) return;
  buf_free(&c->in);
  free(c->rcpt);
  free(c->host);
  free(c->helo);
  free(c);
}

static void cl__handle_closed(uv_handle_t *h) { cl__unref(h->data); }

static void cl__close_handles(struct smtp_client *c) {
  if (c->phase == CL_DEAD && c->closing) return;
  c->phase = CL_DEAD;
  c->closing = true;
  if (c->gai_pending) uv_cancel((uv_req_t *)&c->gai);
  uv_close((uv_handle_t *)&c->tcp, cl__handle_closed);
  uv_close((uv_handle_t *)&c->timer, cl__handle_closed);
}

static void cl__fail(struct smtp_client *c, int status, const char *fmt, ...) {
  if (c->closing) return;
  char err[SMTP_CLIENT_TEXT_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, sizeof err, fmt, ap);
  va_end(ap);
  enum cl_phase was = c->phase;
  cl__close_handles(c); /* cancels pending writes: the body is not touched after this */
  if (was == CL_TXN) c->done_cb(c, status, err, NULL, 0, NULL, c->arg);
  else c->ready_cb(c, status, err, c->arg); /* also when an idle connection dies */
}

static void cl__on_timeout(uv_timer_t *t) {
  struct smtp_client *c = t->data;
  cl__fail(c, SG_ETIMEDOUT, "timeout talking to %s:%u", c->host, (unsigned)c->port);
}

static void cl__wait_reply(struct smtp_client *c) {
  uv_timer_start(&c->timer, cl__on_timeout, c->reply_timeout_ms, 0);
}

struct cl_write {
  uv_write_t req;
  struct buf b;
  bool body; /* writes the caller's message data */
};

static void cl__on_write(uv_write_t *req, int status) {
  struct cl_write *w = (struct cl_write *)req;
  struct smtp_client *c = req->handle->data;
  if (w->body) c->body_writes--;
  buf_free(&w->b);
  free(w);
  if (status < 0 && status != UV_ECANCELED)
    cl__fail(c, SG_EIO, "write to %s:%u failed: %s", c->host, (unsigned)c->port, uv_strerror(status));
}

/* Write bufs (pointing at memory that outlives the write) plus owned. */
static void cl__write(struct smtp_client *c, struct buf *owned, uv_buf_t *bufs, unsigned n) {
  struct cl_write *w = calloc(1, sizeof *w);
  if (!w) {
    cl__fail(c, SG_ENOMEM, "out of memory");
    return;
  }
  uv_buf_t one;
  if (owned) {
    w->b = *owned;
    *owned = (struct buf)BUF_INIT;
    one = uv_buf_init(w->b.data, (unsigned)w->b.len);
    bufs = &one;
    n = 1;
  }
  w->body = owned == NULL;
  if (w->body) c->body_writes++;
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, cl__on_write);
  if (r != 0) {
    if (w->body) c->body_writes--;
    buf_free(&w->b);
    free(w);
    cl__fail(c, SG_EIO, "write to %s:%u failed: %s", c->host, (unsigned)c->port, uv_strerror(r));
  }
}

static void cl__send_line(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void cl__send_line(struct smtp_client *c, const char *fmt, ...) {
  struct buf b = BUF_INIT;
  char line[1100];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 2, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof line - 2) n = (int)sizeof line - 3;
  memcpy(line + n, "\r\n", 2);
  if (buf_append(&b, line, (size_t)n + 2) != 0) {
    cl__fail(c, SG_ENOMEM, "out of memory");
    return;
  }
  cl__write(c, &b, NULL, 0);
}

/* Command text for reply index i of the transaction (0 MAIL, 1..n RCPT,
 * n+1 DATA). */
static int cl__append_cmd(struct smtp_client *c, size_t i, struct buf *b) {
  if (i == 0)
    return buf_appendf(b, "MAIL FROM:<%s>%s\r\n", c->sender, c->body8 ? " BODY=8BITMIME" : "");
  if (i <= c->n_rcpt) return buf_appendf(b, "RCPT TO:<%s>\r\n", c->rcpts[i - 1]);
  return buf_appendf(b, "DATA\r\n");
}

/* Dot-stuff without copying: the body is written from the caller's memory
 * in runs, with a "." inserted before every line that starts with one. */
static void cl__send_body(struct smtp_client *c) {
  static const char dot[] = ".", crlf_dot[] = "\r\n.\r\n";
  size_t cap = 16, n = 0;
  uv_buf_t *v = malloc(cap * sizeof *v);
  const char *p = c->body, *end = c->body + c->body_len;
  while (v && p < end) {
    if (n + 3 > cap) {
      uv_buf_t *nv = realloc(v, (cap *= 2) * sizeof *v);
      if (!nv) {
        free(v);
        v = NULL;
        break;
      }
      v = nv;
    }
    bool line_start = p == c->body || p[-1] == '\n';
    if (line_start && *p == '.') v[n++] = uv_buf_init((char *)dot, 1);
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *stop = nl ? nl + 1 : end;
    while (nl && stop < end && *stop != '.') { /* merge lines that need no stuffing */
      nl = memchr(stop, '\n', (size_t)(end - stop));
      stop = nl ? nl + 1 : end;
    }
    v[n++] = uv_buf_init((char *)p, (unsigned)(stop - p));
    p = stop;
  }
  if (!v) {
    cl__fail(c, SG_ENOMEM, "out of memory");
    return;
  }
  bool ends_crlf = c->body_len >= 2 && end[-2] == '\r' && end[-1] == '\n';
  if (c->body_len == 0 || ends_crlf) v[n++] = uv_buf_init((char *)crlf_dot + 2, 3);
  else v[n++] = uv_buf_init((char *)crlf_dot, 5);
  c->sent_body = true;
  cl__write(c, NULL, v, (unsigned)n);
  free(v); /* uv_write copies the uv_buf_t array, not the bytes */
}

static void cl__finish_txn(struct smtp_client *c) {
  uv_timer_stop(&c->timer);
  if (c->mail.code / 100 != 2) /* every recipient shares the MAIL failure */
    for (size_t i = 0; i < c->n_rcpt; i++) c->rcpt[i] = c->mail;
  c->said_421 = c->said_421 || c->mail.code == 421 || c->data.code == 421;
  for (size_t i = 0; i < c->n_rcpt; i++) c->said_421 = c->said_421 || c->rcpt[i].code == 421;
  c->phase = CL_READY;
  c->done_cb(c, 0, NULL, c->rcpt, c->n_rcpt, &c->data, c->arg);
}

static bool cl__any_rcpt_ok(const struct smtp_client *c) {
  for (size_t i = 0; i < c->n_rcpt; i++)
    if (c->rcpt[i].code / 100 == 2) return true;
  return false;
}

static void cl__txn_reply(struct smtp_client *c, const struct smtp_client_reply *r) {
  size_t i = c->expect++;
  if (i == 0) c->mail = *r;
  else if (i <= c->n_rcpt) c->rcpt[i - 1] = *r;
  if (i <= c->n_rcpt) {
    if (!c->pipelining) {
      struct buf b = BUF_INIT;
      if (cl__append_cmd(c, i + 1, &b) != 0) cl__fail(c, SG_ENOMEM, "out of memory");
      else cl__write(c, &b, NULL, 0);
    }
    cl__wait_reply(c);
    return;
  }
  if (i == c->n_rcpt + 1) { /* reply to DATA */
    bool txn = c->mail.code / 100 == 2 && cl__any_rcpt_ok(c);
    if (r->code == 354) {
      if (!txn) c->body_len = 0; /* a server that says 354 with no recipient gets nothing */
      cl__send_body(c);
      cl__wait_reply(c);
      return;
    }
    c->data = *r;
    if (txn) { /* clear the server's half-open transaction; ignore its reply */
      cl__send_line(c, "RSET");
      cl__wait_reply(c);
      return;
    }
    cl__finish_txn(c);
    return;
  }
  if (c->sent_body && c->body_writes > 0) {
    /* A reply before all of the body was written: the server stopped
     * reading.  Closing cancels the write, so the caller may free the
     * data, and the rest can never be taken for commands on a reused
     * connection. */
    cl__fail(c, SG_EPROTO, "%s:%u replied before the end of the data: %s", c->host,
             (unsigned)c->port, r->text);
    return;
  }
  if (c->sent_body) c->data = *r; /* the reply to the end of data */
  cl__finish_txn(c);
}

static void cl__ehlo_line(struct smtp_client *c, const char *text, size_t len) {
  if (len >= 10 && strncasecmp(text, "PIPELINING", 10) == 0 && (len == 10 || text[10] == ' '))
    c->pipelining = true;
}

static void cl__on_reply(struct smtp_client *c, const struct smtp_client_reply *r) {
  switch (c->phase) {
    case CL_BANNER:
      if (r->code / 100 != 2) {
        cl__fail(c, r->code / 100 == 5 ? SG_EPROTO : SG_ETEMP, "%s", r->text);
        return;
      }
      cl__send_line(c, "EHLO %s", c->helo);
      c->phase = CL_EHLO;
      cl__wait_reply(c);
      return;
    case CL_EHLO:
    case CL_HELO:
      if (r->code / 100 == 2) {
        uv_timer_stop(&c->timer);
        c->phase = CL_READY;
        c->ready_cb(c, 0, NULL, c->arg);
      } else if (c->phase == CL_EHLO && r->code / 100 == 5) {
        cl__send_line(c, "HELO %s", c->helo);
        c->phase = CL_HELO;
        cl__wait_reply(c);
      } else {
        cl__fail(c, SG_ETEMP, "%s", r->text);
      }
      return;
    case CL_TXN:
      cl__txn_reply(c, r);
      return;
    default:
      cl__fail(c, SG_EPROTO, "unexpected reply from %s:%u: %s", c->host, (unsigned)c->port, r->text);
  }
}

/* One reply line: "250-text" continues, "250 text" ends the reply. */
static int cl__line(struct smtp_client *c, const char *line, size_t len) {
  if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
      line[2] < '0' || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-'))
    return SG_EPROTO;
  int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  if (c->cur_started && code != c->cur.code) return SG_EPROTO;
  if (!c->cur_started) {
    c->cur.code = code;
    log_safe(c->cur.text, sizeof c->cur.text, line, len);
    c->cur_started = true;
  }
  if (c->phase == CL_EHLO && len > 4) cl__ehlo_line(c, line + 4, len - 4);
  if (len > 3 && line[3] == '-') return 0;
  c->cur_started = false;
  struct smtp_client_reply r = c->cur;
  cl__on_reply(c, &r);
  return 0;
}

static void cl__on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  struct smtp_client *c = h->data;
  if (buf_reserve(&c->in, 8192) != 0) {
    *b = uv_buf_init(NULL, 0);
    return;
  }
  *b = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void cl__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  struct smtp_client *c = st->data;
  if (nread < 0) {
    cl__fail(c, SG_EIO, "connection to %s:%u lost: %s", c->host, (unsigned)c->port,
             uv_strerror((int)nread));
    return;
  }
  c->in.len += (size_t)nread;
  size_t off = 0;
  while (!c->closing) {
    char *nl = memchr(c->in.data + off, '\n', c->in.len - off);
    if (!nl) break;
    size_t len = (size_t)(nl - (c->in.data + off));
    const char *line = c->in.data + off;
    off += len + 1;
    if (len > 0 && line[len - 1] == '\r') len--;
    if (cl__line(c, line, len) != 0) {
      cl__fail(c, SG_EPROTO, "malformed reply from %s:%u", c->host, (unsigned)c->port);
      return;
    }
  }
  if (c->closing) return;
  memmove(c->in.data, c->in.data + off, c->in.len - off);
  c->in.len -= off;
  if (c->in.len > CL_LINE_MAX)
    cl__fail(c, SG_EPROTO, "reply line too long from %s:%u", c->host, (unsigned)c->port);
}

static void cl__on_connect(uv_connect_t *req, int status) {
  struct smtp_client *c = req->data;
  if (c->closing) return;
  if (status < 0) {
    cl__fail(c, SG_ETEMP, "connect to %s:%u failed: %s", c->host, (unsigned)c->port,
             uv_strerror(status));
    return;
  }
  c->phase = CL_BANNER;
  uv_read_start((uv_stream_t *)&c->tcp, cl__on_alloc, cl__on_read);
  cl__wait_reply(c);
}

static void cl__connect_addr(struct smtp_client *c, const struct sockaddr *sa) {
  c->conn_req.data = c;
  int r = uv_tcp_connect(&c->conn_req, &c->tcp, sa, cl__on_connect);
  if (r != 0)
    cl__fail(c, SG_ETEMP, "connect to %s:%u failed: %s", c->host, (unsigned)c->port, uv_strerror(r));
}

static void cl__on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  struct smtp_client *c = req->data;
  c->gai_pending = false;
  if (c->closing) { /* uv_cancel may not stop a lookup already running */
    uv_freeaddrinfo(res);
    cl__unref(c);
    return;
  }
  if (status < 0 || !res) {
    cl__fail(c, SG_ETEMP, "cannot resolve %s: %s", c->host, uv_strerror(status));
  } else {
    cl__connect_addr(c, res->ai_addr);
  }
  uv_freeaddrinfo(res);
  cl__unref(c);
}

int smtp_client_open(uv_loop_t *loop, const struct smtp_client_opts *o, smtp_client_ready_cb cb,
                     void *arg, struct smtp_client **out) {
  struct smtp_client *c = calloc(1, sizeof *c);
  if (!c || !(c->host = strdup(o->host)) || !(c->helo = strdup(o->helo))) {
    if (c) free(c->host);
    free(c);
    return SG_ENOMEM;
  }
  c->port = o->port;
  c->connect_timeout_ms = o->connect_timeout_ms;
  c->reply_timeout_ms = o->reply_timeout_ms;
  c->ready_cb = cb;
  c->arg = arg;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->phase = CL_CONNECT;
  *out = c;
  uv_timer_start(&c->timer, cl__on_timeout, c->connect_timeout_ms, 0);
  union { struct sockaddr sa; struct sockaddr_in in; struct sockaddr_in6 in6; } a;
  if (uv_ip4_addr(c->host, c->port, &a.in) == 0 || uv_ip6_addr(c->host, c->port, &a.in6) == 0) {
    cl__connect_addr(c, &a.sa);
    return 0;
  }
  char port[8];
  snprintf(port, sizeof port, "%u", (unsigned)c->port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  c->gai.data = c;
  c->gai_pending = true;
  c->open_handles++; /* the lookup holds c until its callback */
  if (uv_getaddrinfo(loop, &c->gai, cl__on_resolved, c->host, port, &hints) != 0) {
    c->gai_pending = false;
    c->open_handles--;
    cl__fail(c, SG_ETEMP, "cannot resolve %s", c->host);
  }
  return 0;
}

int smtp_client_send(struct smtp_client *c, const char *sender, char *const *rcpts, size_t n,
                     const char *data, size_t len, bool body8, smtp_client_done_cb cb, void *arg) {
  if (c->phase != CL_READY || n == 0) return SG_EINVAL;
  struct smtp_client_reply *r = realloc(c->rcpt, n * sizeof *r);
  if (!r) return SG_ENOMEM;
  memset(r, 0, n * sizeof *r);
  c->rcpt = r;
  c->n_rcpt = n;
  c->sender = sender;
  c->rcpts = rcpts;
  c->body = data;
  c->body_len = len;
  c->body8 = body8;
  c->done_cb = cb;
  c->arg = arg;
  memset(&c->mail, 0, sizeof c->mail);
  memset(&c->data, 0, sizeof c->data);
  c->expect = 0;
  c->sent_body = false;
  c->phase = CL_TXN;
  struct buf b = BUF_INIT;
  size_t last = c->pipelining ? n + 1 : 0; /* RFC 2920: the whole envelope in one go */
  for (size_t i = 0; i <= last; i++)
    if (cl__append_cmd(c, i, &b) != 0) {
      buf_free(&b);
      c->phase = CL_READY;
      return SG_ENOMEM;
    }
  cl__write(c, &b, NULL, 0);
  cl__wait_reply(c);
  return 0;
}

bool smtp_client_reusable(const struct smtp_client *c) { return !c->said_421 && !c->closing; }

void smtp_client_close(struct smtp_client *c) {
  if (c->closing) return;
  if (c->phase == CL_READY) { /* polite QUIT; its reply is not awaited */
    struct buf b = BUF_INIT;
    if (buf_append(&b, "QUIT\r\n", 6) == 0) cl__write(c, &b, NULL, 0);
  }
  cl__close_handles(c);
}
