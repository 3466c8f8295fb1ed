/*
 * sl_session - one SMTP client session of sealload: connect, banner,
 * EHLO (HELO if refused), then one transaction per message handed to it,
 * pipelined when the server offers PIPELINING (RFC 2920), until told to
 * shut down (QUIT).
 *
 * A session keeps its struct across connections: with --no-reuse, or
 * after a lost connection, it connects again for its next message.  A
 * refused or failed connection is retried after a backoff (100 ms,
 * doubling, at most 5 s) up to env->retries times in a row; then the
 * session gives up.  Every outcome is counted in env->stats, never fatal.
 *
 * Callers: sl_client.c (the scheduler, one per worker loop).  The server's
 * replies are untrusted: lines are bounded (SL_SESSION_IN_MAX), codes
 * range-checked, multi-line replies must keep their code.  Ownership:
 * the client owns the session memory and env; a session must stay
 * allocated until its loop has run every close callback (the client frees
 * sessions after uv_run returned).
 */
#ifndef SEALGATE_SL_SESSION_H
#define SEALGATE_SL_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "tools/sealload/sl_msg.h"
#include "tools/sealload/sl_report.h"

#define SL_SESSION_IN_MAX 4096

struct sl_session;

/* What every session of one worker shares (read-only but for stats,
 * acked and seq, which only this worker's loop touches). */
struct sl_session_env {
  uv_loop_t *loop;
  const struct sockaddr *addr;
  const struct sl_msg *msg;
  const char *helo, *from;
  char *const *rcpts;
  size_t n_rcpts;
  bool reuse;
  unsigned retries;
  uint64_t timeout_ms;
  unsigned worker;                  /* in the Message-IDs */
  uint64_t seq;                     /* number of the next message */
  const bool *stopping;             /* set when the run is ending early */
  struct sl_client_stats *stats;
  struct buf *acked;                /* "ID\n" lines for --acked, or NULL */
  /* The session is free for a message (connected or not). */
  void (*on_free)(struct sl_session *s, void *owner);
  /* The session gave up or shut down; it will not call back again. */
  void (*on_dead)(struct sl_session *s, void *owner);
  void *owner;
};

enum sl_session_state {
  SL_S_DOWN = 0, SL_S_BACKOFF, SL_S_CONNECT, SL_S_BANNER, SL_S_EHLO, SL_S_HELO,
  SL_S_READY, SL_S_TXN, SL_S_QUIT, SL_S_CLOSING, SL_S_DEAD
};

struct sl_wreq;

struct sl_session {
  struct sl_session_env *env;
  enum sl_session_state state;
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_timer_t timer;           /* reply timeouts and backoff */
  unsigned failures;          /* connection failures in a row */
  int after_close;            /* what the close callback does next */
  int quit_then;              /* after_close once QUIT was answered */
  bool is_free;               /* on_free was called; no message given since */
  bool pipelining, want_rset, body_pending;
  /* the message in hand */
  bool has_msg;
  uint64_t t_sched;           /* uv_hrtime() it was due: latency counts from here */
  char idline[SL_MSG_ID_LINE_LEN + 1];
  /* the transaction: replies expected in order [RSET] MAIL RCPT.. DATA DOT */
  unsigned step, base;
  int mail_code, rcpt_fail_code;
  size_t rcpt_ok;
  bool sent_body;
  /* reading replies */
  char in[SL_SESSION_IN_MAX];
  size_t in_len;
  int reply_code;             /* of a multi-line reply being read, else 0 */
  struct sl_wreq *free_wreqs;
  struct sl_session *next_idle; /* the client's list of free sessions (client-owned) */
};

/* Set up (the timer is initialised on env->loop); state SL_S_DOWN. */
void sl_session_init(struct sl_session *s, struct sl_session_env *env);
/* Connect without a message (open loop warms its sessions up). */
void sl_session_connect(struct sl_session *s);
/* Send one message, due at t_sched (uv_hrtime): connect first if needed.
 * Only on a free session (one that called on_free, or a new one): it may
 * be connected, down, or closing a connection the server dropped. */
void sl_session_take(struct sl_session *s, uint64_t t_sched);
/* End a free or backing-off session: QUIT if connected; on_dead follows. */
void sl_session_shutdown(struct sl_session *s);
/* After on_dead: close the timer and free the write requests (the loop
 * must still run so the close completes). */
void sl_session_release(struct sl_session *s);

#endif
