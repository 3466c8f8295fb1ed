/* control - see control.h. */
#include "core/control.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"

#define CONTROL_REQ_MAX 4096
#define CONTROL_TIMEOUT_MS 10000

struct control {
  uv_pipe_t pipe;
  control_handler handler;
  void *arg;
  char *path;
};

struct control_conn {
  uv_pipe_t pipe;
  uv_timer_t timer;
  struct control *ctl;
  struct buf in;
  int open_handles;
  bool done;
};

static void control__conn_closed(uv_handle_t *h) {
  struct control_conn *cc = h->data;
  if (--cc->open_handles > 0) return;
  buf_free(&cc->in);
  free(cc);
}

static void control__conn_close(struct control_conn *cc) {
  if (uv_is_closing((uv_handle_t *)&cc->pipe)) return;
  uv_close((uv_handle_t *)&cc->pipe, control__conn_closed);
  uv_close((uv_handle_t *)&cc->timer, control__conn_closed);
}

struct control_write {
  uv_write_t req;
  struct buf b;
};

static void control__on_write(uv_write_t *req, int status) {
  (void)status;
  struct control_write *w = (struct control_write *)req;
  struct control_conn *cc = req->handle->data;
  buf_free(&w->b);
  free(w);
  control__conn_close(cc);
}

static void control__answer(struct control_conn *cc, const char *cmd) {
  struct buf payload = BUF_INIT;
  char err[1024] = "";
  int rc = cc->ctl->handler(cc->ctl->arg, cmd, &payload, err, sizeof err);
  struct control_write *w = calloc(1, sizeof *w);
  if (!w) {
    buf_free(&payload);
    control__conn_close(cc);
    return;
  }
  if (rc == 0) buf_appendf(&w->b, "ok\n");
  else buf_appendf(&w->b, "error: %s\n", err[0] ? err : sgerr_str(rc));
  buf_append(&w->b, payload.data, payload.len);
  buf_free(&payload);
  uv_buf_t b = uv_buf_init(w->b.data, (unsigned)w->b.len);
  if (uv_write(&w->req, (uv_stream_t *)&cc->pipe, &b, 1, control__on_write) != 0) {
    buf_free(&w->b);
    free(w);
    control__conn_close(cc);
  }
}

static void control__on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  struct control_conn *cc = h->data;
  if (buf_reserve(&cc->in, 1024) != 0) *b = uv_buf_init(NULL, 0);
  else *b = uv_buf_init(cc->in.data + cc->in.len, (unsigned)(cc->in.cap - cc->in.len - 1));
}

static void control__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  struct control_conn *cc = st->data;
  if (nread < 0 || cc->done) {
    if (nread < 0) control__conn_close(cc);
    return;
  }
  cc->in.len += (size_t)nread;
  cc->in.data[cc->in.len] = '\0';
  char *nl = memchr(cc->in.data, '\n', cc->in.len);
  if (!nl && cc->in.len < CONTROL_REQ_MAX) return;
  cc->done = true;
  uv_read_stop(st);
  if (!nl) {
    control__conn_close(cc);
    return;
  }
  *nl = '\0';
  if (nl > cc->in.data && nl[-1] == '\r') nl[-1] = '\0';
  control__answer(cc, cc->in.data);
}

static void control__on_timeout(uv_timer_t *t) { control__conn_close(t->data); }

/* Only root and the daemon's own user may drive it. */
static bool control__peer_ok(uv_pipe_t *p) {
  uv_os_fd_t fd;
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (uv_fileno((uv_handle_t *)p, &fd) != 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
    return false;
  return cr.uid == 0 || cr.uid == geteuid();
}

static void control__on_connection(uv_stream_t *server, int status) {
  struct control *ctl = server->data;
  if (status < 0) return;
  struct control_conn *cc = calloc(1, sizeof *cc);
  if (!cc) return;
  cc->ctl = ctl;
  uv_pipe_init(server->loop, &cc->pipe, 0);
  uv_timer_init(server->loop, &cc->timer);
  cc->pipe.data = cc->timer.data = cc;
  cc->open_handles = 2;
  if (uv_accept(server, (uv_stream_t *)&cc->pipe) != 0 || !control__peer_ok(&cc->pipe)) {
    log_warn("control: refused a connection (credentials)");
    control__conn_close(cc);
    return;
  }
  uv_timer_start(&cc->timer, control__on_timeout, CONTROL_TIMEOUT_MS, 0);
  uv_read_start((uv_stream_t *)&cc->pipe, control__on_alloc, control__on_read);
}

static void control__closed(uv_handle_t *h) {
  struct control *c = h->data;
  free(c->path);
  free(c);
}

int control_listen(uv_loop_t *loop, const char *path, control_handler h, void *arg,
                   struct control **out) {
  struct control *c = calloc(1, sizeof *c);
  if (!c || !(c->path = strdup(path))) {
    free(c);
    return SG_ENOMEM;
  }
  c->handler = h;
  c->arg = arg;
  uv_pipe_init(loop, &c->pipe, 0);
  c->pipe.data = c;
  unlink(path); /* a stale socket from a crash; the instance lock is already ours */
  mode_t old = umask(077);
  int r = uv_pipe_bind(&c->pipe, path);
  umask(old);
  if (r == 0) r = chmod(path, 0600) == 0 ? 0 : UV_EPERM;
  if (r == 0) r = uv_listen((uv_stream_t *)&c->pipe, 16, control__on_connection);
  if (r != 0) {
    log_err("control: cannot listen on %s: %s", path, uv_strerror(r));
    uv_close((uv_handle_t *)&c->pipe, control__closed);
    *out = NULL;
    return SG_EIO;
  }
  *out = c;
  return 0;
}

void control_close(struct control *c) {
  if (!c) return;
  if (c->path) unlink(c->path);
  uv_close((uv_handle_t *)&c->pipe, control__closed);
}

static int control__wait(int fd, short ev, int timeout_ms) {
  struct pollfd p = {fd, ev, 0};
  int r;
  do r = poll(&p, 1, timeout_ms);
  while (r < 0 && errno == EINTR);
  return r > 0 ? 0 : r == 0 ? SG_ETIMEDOUT : SG_EIO;
}

int control_request(const char *path, const char *cmd, int timeout_ms, struct buf *out) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) return SG_EINVAL;
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return SG_EIO;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    return (e == ENOENT || e == ECONNREFUSED) ? SG_ENOTFOUND : sgerr_from_errno(e);
  }
  int rc = 0;
  size_t len = strlen(cmd);
  if (write(fd, cmd, len) != (ssize_t)len || write(fd, "\n", 1) != 1) rc = SG_EIO;
  struct buf in = BUF_INIT;
  while (rc == 0) {
    if ((rc = control__wait(fd, POLLIN, timeout_ms)) != 0) break;
    if ((rc = buf_reserve(&in, 65536)) != 0) break;
    ssize_t n = read(fd, in.data + in.len, in.cap - in.len - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    in.len += (size_t)n;
  }
  close(fd);
  if (rc == 0) {
    char *nl = in.len ? memchr(in.data, '\n', in.len) : NULL;
    if (!nl) {
      rc = SG_EPROTO;
    } else {
      size_t head = (size_t)(nl - in.data) + 1;
      bool ok = head == 3 && memcmp(in.data, "ok", 2) == 0;
      if (ok) buf_append(out, nl + 1, in.len - head);
      else buf_append(out, in.data + (head > 7 ? 7 : 0), head - (head > 7 ? 8 : 1));
      rc = ok ? 0 : SG_EINVAL;
    }
  }
  buf_free(&in);
  return rc;
}
