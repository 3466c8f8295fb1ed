/*
 * smtp_client - one SMTP connection to a next hop (RFC 5321 client side).
 *
 * Owns the socket and the protocol; knows nothing about queues or retries
 * (core/delivery.c decides those).  Runs on one loop.  Replies from the
 * next hop are untrusted: lines are bounded, and reply text handed to the
 * caller is printable ASCII only.
 *
 * Life: smtp_client_open() connects and greets (EHLO, falling back to
 * HELO); ready_cb reports success or failure.  Then smtp_client_send() runs
 * one transaction at a time (pipelined when the server offers PIPELINING)
 * and done_cb reports per-recipient replies.  smtp_client_close() sends
 * QUIT if possible and frees the client later; after it, no callback runs.
 * The message data passed to send must stay valid until done_cb.
 */
#ifndef SEALGATE_SMTP_CLIENT_H
#define SEALGATE_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SMTP_CLIENT_TEXT_MAX 256

struct smtp_client;

struct smtp_client_reply {
  int code;                            /* 0 when no reply came */
  char text[SMTP_CLIENT_TEXT_MAX];     /* "550 5.1.1 <x>: no such user" */
};

struct smtp_client_opts {
  const char *host;
  uint16_t port;
  const char *helo;                    /* our hostname */
  uint64_t connect_timeout_ms;
  uint64_t reply_timeout_ms;
};

/* status 0: ready for send; else a negative code and err describes it.
 * Also called with an error when an idle (ready) connection dies: the
 * client then frees itself and must not be used again. */
typedef void (*smtp_client_ready_cb)(struct smtp_client *c, int status, const char *err, void *arg);
/* status 0: rcpt[i] holds each recipient's reply and data the reply to the
 * message (code 0 if the data was not sent).  status < 0: the connection
 * failed mid-way (err says how); the client is then unusable. */
typedef void (*smtp_client_done_cb)(struct smtp_client *c, int status, const char *err,
                                    const struct smtp_client_reply *rcpt, size_t n_rcpt,
                                    const struct smtp_client_reply *data, void *arg);

int smtp_client_open(uv_loop_t *loop, const struct smtp_client_opts *o, smtp_client_ready_cb cb,
                     void *arg, struct smtp_client **out);
int smtp_client_send(struct smtp_client *c, const char *sender, char *const *rcpts, size_t n,
                     const char *data, size_t len, bool body8, smtp_client_done_cb cb, void *arg);
void smtp_client_close(struct smtp_client *c);
/* After a transaction (from done_cb on): false when the server has said it
 * is closing the channel (a 421 reply, RFC 5321 3.8), so the connection
 * must be closed rather than used for the next message. */
bool smtp_client_reusable(const struct smtp_client *c);

#endif
