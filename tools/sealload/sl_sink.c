/*
 * sl_sink - see sl_sink.h.
 *
 * Each connection reads into one growing buffer and handles everything
 * complete in it per read: command lines (pipelined ones in a row) or
 * message data fed to smtp_data until its end marker.  Replies collect in
 * an output buffer written once per read (uv_try_write; a write request
 * only when the socket is full), so a pipelined group costs one write.
 */
#include "tools/sealload/sl_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/buf.h"
#include "core/sgerr.h"
#include "core/smtp_data.h"
#include "core/smtp_parser.h"

#define SK_LINE_MAX 4096     /* longer command lines are refused */
#define SK_READ_CHUNK 65536

struct sk_conn {
  uv_tcp_t tcp;
  struct sl_sink *k;
  struct sk_conn *prev, *next;
  struct buf in, out, msg;   /* msg: the message, when it is checked or kept */
  struct smtp_data data;
  bool in_data, has_mail, quit, closing;
  size_t rcpts;
  unsigned writes;           /* write requests in flight */
};

struct sl_sink {
  uv_loop_t loop;
  struct sl_sink_opts o;
  struct sl_sink_stats *stats;
  uv_tcp_t listener;
  uv_async_t stop_async;
  pthread_mutex_t lock;      /* stop_async may be sent until it is closed */
  bool async_closed, stopped;
  struct sk_conn *conns;
  uint64_t seq;              /* messages of this worker, for ids and file names */
  bool collect;              /* messages are kept in memory (checks or --keep) */
};

struct sk_wreq {
  uv_write_t req;
  struct buf b;
};

static void sk__on_closed(uv_handle_t *h) {
  struct sk_conn *c = h->data;
  struct sl_sink *k = c->k;
  if (c->prev) c->prev->next = c->next;
  else k->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  buf_free(&c->in);
  buf_free(&c->out);
  buf_free(&c->msg);
  free(c);
}

static void sk__close(struct sk_conn *c) {
  if (c->closing) return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->tcp, sk__on_closed);
}

static void sk__on_write(uv_write_t *req, int status) {
  struct sk_wreq *w = (struct sk_wreq *)req;
  struct sk_conn *c = req->handle->data;
  buf_free(&w->b);
  free(w);
  c->writes--;
  if (status < 0 || (c->quit && c->writes == 0)) sk__close(c);
}

/* Send what the replies of this read collected. */
static void sk__flush(struct sk_conn *c) {
  if (c->closing || c->out.len == 0) return;
  size_t off = 0;
  if (c->writes == 0) { /* nothing queued: may go out directly, in order */
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
      sk__close(c);
      return;
    }
    off = n > 0 ? (size_t)n : 0;
  }
  if (off < c->out.len) {
    struct sk_wreq *w = calloc(1, sizeof *w);
    if (!w || buf_append(&w->b, c->out.data + off, c->out.len - off) != 0) {
      free(w);
      sk__close(c);
      return;
    }
    uv_buf_t b = uv_buf_init(w->b.data, (unsigned)w->b.len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, sk__on_write) != 0) {
      buf_free(&w->b);
      free(w);
      sk__close(c);
      return;
    }
    c->writes++;
  }
  buf_reset(&c->out);
  if (c->quit && c->writes == 0) sk__close(c);
}

static void sk__reply(struct sk_conn *c, const char *text) {
  if (buf_appendf(&c->out, "%s\r\n", text) != 0) sk__close(c);
}

static void sk__error(struct sk_conn *c, const struct smtp_error *e) {
  if (buf_appendf(&c->out, "%d %s %s\r\n", e->code, e->enh, e->text) != 0) sk__close(c);
}

/* ---- the end of a message ----------------------------------------------------- */

static void sk__keep(struct sk_conn *c, uint64_t seq) {
  struct sl_sink *k = c->k;
  char path[4096];
  snprintf(path, sizeof path, "%s/msg.%03u.%08" PRIu64 ".eml", k->o.keep_dir, k->o.worker, seq);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  size_t off = 0;
  while (fd >= 0 && off < c->msg.len) {
    ssize_t n = write(fd, c->msg.data + off, c->msg.len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  bool ok = fd >= 0 && off == c->msg.len;
  if (fd >= 0 && close(fd) != 0) ok = false;
  if (ok) k->stats->kept++;
  else k->stats->keep_failed++;
}

static void sk__message(struct sk_conn *c) {
  struct sl_sink *k = c->k;
  struct sl_sink_stats *st = k->stats;
  uint64_t seq = ++k->seq;
  st->bytes += c->data.size;
  st->last_ns = uv_hrtime();
  if (k->o.check) {
    struct sl_check_result r;
    sl_check_message(k->o.check, c->msg.data ? c->msg.data : "", c->msg.len, &r);
    if (r.verify != SL_CHECK_SKIPPED) (*(r.verify == SL_CHECK_OK ? &st->verified : &st->verify_failed))++;
    if (r.decrypt != SL_CHECK_SKIPPED) (*(r.decrypt == SL_CHECK_OK ? &st->decrypted : &st->decrypt_failed))++;
  }
  if (k->o.keep_dir) sk__keep(c, seq);
  SL_COUNT(st->messages, 1);
  char line[96];
  snprintf(line, sizeof line, "250 2.0.0 Ok: queued as %03u.%" PRIu64, k->o.worker, seq);
  sk__reply(c, line);
  c->in_data = c->has_mail = false;
  c->rcpts = 0;
  buf_reset(&c->msg);
  if (k->o.limit && SL_COUNT(*k->o.total, 1) + 1 == k->o.limit) k->o.on_limit(k->o.arg);
}

/* ---- commands ------------------------------------------------------------------ */

static void sk__ehlo(struct sk_conn *c, bool ehlo) {
  if (buf_appendf(&c->out, ehlo ? "250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 0\r\n250 ENHANCEDSTATUSCODES\r\n"
                                : "250 %s\r\n", c->k->o.hostname) != 0)
    sk__close(c);
  c->has_mail = false;
  c->rcpts = 0;
}

static void sk__mail(struct sk_conn *c, const struct smtp_cmd *cmd) {
  struct smtp_mail_args a;
  struct smtp_error e;
  if (c->has_mail) {
    sk__reply(c, "503 5.5.1 Error: nested MAIL command");
  } else if (smtp_parse_mail(cmd->arg, cmd->arg_len, &a, &e) != 0) {
    sk__error(c, &e);
  } else {
    c->has_mail = true;
    c->rcpts = 0;
    if (!c->k->stats->first_ns) c->k->stats->first_ns = uv_hrtime();
    sk__reply(c, "250 2.1.0 Ok");
  }
}

static void sk__rcpt(struct sk_conn *c, const struct smtp_cmd *cmd) {
  struct smtp_rcpt_args a;
  struct smtp_error e;
  if (!c->has_mail) {
    sk__reply(c, "503 5.5.1 Error: need MAIL command");
  } else if (smtp_parse_rcpt(cmd->arg, cmd->arg_len, &a, &e) != 0) {
    sk__error(c, &e);
  } else {
    c->rcpts++;
    c->k->stats->rcpts++;
    sk__reply(c, "250 2.1.5 Ok");
  }
}

static void sk__data(struct sk_conn *c) {
  if (!c->has_mail || c->rcpts == 0) {
    sk__reply(c, "503 5.5.1 Error: need RCPT command");
    return;
  }
  /* Without checks nothing is kept: a zero size limit makes smtp_data
   * count and find the end without appending a byte. */
  smtp_data_init(&c->data, c->k->collect ? UINT64_MAX : 0, UINT64_MAX);
  buf_reset(&c->msg);
  c->in_data = true;
  sk__reply(c, "354 End data with <CR><LF>.<CR><LF>");
}

static void sk__command(struct sk_conn *c, const char *line, size_t len) {
  struct smtp_cmd cmd;
  struct smtp_error e;
  if (smtp_parse_command(line, len, &cmd, &e) != 0) {
    sk__error(c, &e);
    return;
  }
  switch (cmd.verb) {
    case SMTP_VERB_EHLO: sk__ehlo(c, true); break;
    case SMTP_VERB_HELO: sk__ehlo(c, false); break;
    case SMTP_VERB_MAIL: sk__mail(c, &cmd); break;
    case SMTP_VERB_RCPT: sk__rcpt(c, &cmd); break;
    case SMTP_VERB_DATA: sk__data(c); break;
    case SMTP_VERB_RSET:
      c->has_mail = false;
      c->rcpts = 0;
      sk__reply(c, "250 2.0.0 Ok");
      break;
    case SMTP_VERB_NOOP: sk__reply(c, "250 2.0.0 Ok"); break;
    case SMTP_VERB_VRFY: sk__reply(c, "252 2.0.0 Cannot VRFY user"); break;
    case SMTP_VERB_QUIT:
      sk__reply(c, "221 2.0.0 Bye");
      c->quit = true;
      break;
    case SMTP_VERB_HTTP:
      sk__reply(c, "421 4.7.0 Not an SMTP client");
      c->quit = true;
      break;
    default: sk__reply(c, "502 5.5.1 Error: command not implemented"); break;
  }
}

/* ---- reading ----------------------------------------------------------------- */

/* Handle everything complete in c->in; returns octets consumed. */
static size_t sk__process(struct sk_conn *c) {
  size_t off = 0;
  while (off < c->in.len && !c->quit && !c->closing) {
    if (c->in_data) {
      bool done = false;
      off += smtp_data_feed(&c->data, c->in.data + off, c->in.len - off, &c->msg, &done);
      if (!done) break;
      sk__message(c);
      continue;
    }
    const char *p = c->in.data + off, *nl = memchr(p, '\n', c->in.len - off);
    if (!nl) {
      if (c->in.len - off > SK_LINE_MAX) {
        sk__reply(c, "500 5.5.0 Error: line too long");
        c->quit = true;
      }
      break;
    }
    size_t len = (size_t)(nl - p);
    off += len + 1;
    if (len > 0 && p[len - 1] == '\r') len--;
    sk__command(c, p, len);
  }
  return off;
}

static void sk__on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  struct sk_conn *c = h->data;
  if (buf_reserve(&c->in, SK_READ_CHUNK) != 0) {
    *b = uv_buf_init(NULL, 0);
    return;
  }
  *b = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void sk__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  struct sk_conn *c = st->data;
  if (nread < 0) {
    sk__close(c);
    return;
  }
  if (c->closing || c->quit) return;
  c->in.len += (size_t)nread;
  size_t off = sk__process(c);
  memmove(c->in.data, c->in.data + off, c->in.len - off);
  c->in.len -= off;
  sk__flush(c);
}

static void sk__on_connection(uv_stream_t *server, int status) {
  struct sl_sink *k = server->data;
  if (status < 0 || k->stopped) return;
  struct sk_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->k = k;
  uv_tcp_init(&k->loop, &c->tcp);
  c->tcp.data = c;
  c->next = k->conns;
  if (k->conns) k->conns->prev = c;
  k->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    sk__close(c);
    return;
  }
  k->stats->connections++;
  uv_tcp_nodelay(&c->tcp, 1);
  char banner[320];
  snprintf(banner, sizeof banner, "220 %s ESMTP sealload sink", k->o.hostname);
  sk__reply(c, banner);
  sk__flush(c);
  if (!c->closing) uv_read_start((uv_stream_t *)&c->tcp, sk__on_alloc, sk__on_read);
}

/* ---- life ---------------------------------------------------------------------- */

/* A listening socket of our own, so SO_REUSEPORT can be set before bind
 * (libuv 1.44 has no flag for it). */
static int sk__listen(struct sl_sink *k, char *err, size_t errlen) {
  const struct sockaddr *sa = k->o.addr;
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0) return sgerr_fail(err, errlen, SG_EIO, "socket: %s", strerror(errno));
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (k->o.reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    close(fd);
    return sgerr_fail(err, errlen, SG_EIO, "SO_REUSEPORT: %s", strerror(errno));
  }
  if (bind(fd, sa, len) != 0 || listen(fd, 1024) != 0) {
    int e = errno;
    close(fd);
    return sgerr_fail(err, errlen, SG_EIO, "cannot listen: %s", strerror(e));
  }
  uv_tcp_init(&k->loop, &k->listener);
  k->listener.data = k;
  int r = uv_tcp_open(&k->listener, fd);
  if (r != 0) close(fd); /* not the handle's yet */
  if (r == 0) r = uv_listen((uv_stream_t *)&k->listener, 1024, sk__on_connection);
  if (r != 0) {
    uv_close((uv_handle_t *)&k->listener, NULL);
    return sgerr_fail(err, errlen, SG_EIO, "cannot listen: %s", uv_strerror(r));
  }
  return 0;
}

static void sk__stop_now(struct sl_sink *k) {
  if (k->stopped) return;
  k->stopped = true;
  uv_close((uv_handle_t *)&k->listener, NULL);
  pthread_mutex_lock(&k->lock);
  k->async_closed = true;
  uv_close((uv_handle_t *)&k->stop_async, NULL);
  pthread_mutex_unlock(&k->lock);
  for (struct sk_conn *c = k->conns; c; c = c->next) {
    sk__flush(c); /* a last reply (e.g. to the -n'th message) still goes out */
    sk__close(c);
  }
}

static void sk__on_stop_async(uv_async_t *a) { sk__stop_now(a->data); }

int sl_sink_new(const struct sl_sink_opts *o, struct sl_sink_stats *stats, struct sl_sink **out, char *err,
                size_t errlen) {
  struct sl_sink *k = calloc(1, sizeof *k);
  if (!k) return sgerr_fail(err, errlen, SG_ENOMEM, "out of memory");
  if (uv_loop_init(&k->loop) != 0) {
    free(k);
    return sgerr_fail(err, errlen, SG_EIO, "cannot create an event loop");
  }
  k->o = *o;
  k->stats = stats;
  k->collect = o->check || o->keep_dir;
  pthread_mutex_init(&k->lock, NULL);
  uv_async_init(&k->loop, &k->stop_async, sk__on_stop_async);
  k->stop_async.data = k;
  int rc = sk__listen(k, err, errlen);
  if (rc) { /* sk__listen closed what it opened */
    uv_close((uv_handle_t *)&k->stop_async, NULL);
    uv_run(&k->loop, UV_RUN_DEFAULT);
    uv_loop_close(&k->loop);
    pthread_mutex_destroy(&k->lock);
    free(k);
    return rc;
  }
  *out = k;
  return 0;
}

void sl_sink_run(struct sl_sink *k) { uv_run(&k->loop, UV_RUN_DEFAULT); }

void sl_sink_stop(struct sl_sink *k) {
  pthread_mutex_lock(&k->lock);
  if (!k->async_closed) uv_async_send(&k->stop_async);
  pthread_mutex_unlock(&k->lock);
}

void sl_sink_free(struct sl_sink *k) {
  if (!k) return;
  if (!k->stopped) sk__stop_now(k);
  uv_run(&k->loop, UV_RUN_DEFAULT);
  uv_loop_close(&k->loop);
  pthread_mutex_destroy(&k->lock);
  free(k);
}
