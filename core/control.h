/*
 * control - the admin channel: DIR/control.sock between sealctl and the
 * running daemon.
 *
 * Protocol: the client sends one command line ("reload", "queue list",
 * "queue flush", "ping"); the daemon answers "ok" or "error: REASON" on the
 * first line, then any payload, then closes.  The socket is 0600 and every
 * peer's credentials (SO_PEERCRED) must be root or the daemon's own uid:
 * the file mode alone is not trusted.  Requests are bounded (4 KiB) and
 * time out.  The server side runs on the daemon's main loop; the handler
 * may block briefly (it is not a shard loop).
 */
#ifndef SEALGATE_CONTROL_H
#define SEALGATE_CONTROL_H

#include <uv.h>

#include "core/buf.h"

/* Fills reply's payload (after the status line, which control writes from
 * the return value: 0 = "ok", else "error: " + err). */
typedef int (*control_handler)(void *arg, const char *cmd, struct buf *payload, char *err,
                               size_t errlen);

struct control;

int control_listen(uv_loop_t *loop, const char *path, control_handler h, void *arg,
                   struct control **out);
void control_close(struct control *c);

/*
 * Client side (sealctl): send cmd, wait for the whole answer (timeout_ms).
 * Returns 0 with the payload in out when the daemon said ok; SG_ENOTFOUND
 * when no daemon listens; SG_EINVAL with the daemon's reason in out when it
 * said error; other codes for transport failures.
 */
int control_request(const char *path, const char *cmd, int timeout_ms, struct buf *out);

#endif
