/*
 * smtp_session - the SMTP server side of one client connection.
 *
 * Owns the connection, its config snapshot (taken at accept: a reload never
 * changes a session mid-way), the transaction being received and the
 * replies.  Runs on its shard's loop only.  Everything the client sends is
 * untrusted: commands go through smtp_parser, data through smtp_data, and
 * every limit answers with the RFC 5321 reply code the README lists.  The
 * 250 after DATA is sent only from the spool's commit callback, i.e. after
 * the message is durable.
 */
#ifndef SEALGATE_SMTP_SESSION_H
#define SEALGATE_SMTP_SESSION_H

#include <uv.h>

struct shard;
struct smtp_session;

/* Accept one pending connection on server (a shard listener). */
void smtp_session_accept(struct shard *sh, uv_stream_t *server, const char *listener_key);
/* Adopt an already accepted socket (used when draining the accept queue). */
void smtp_session_adopt_fd(struct shard *sh, int fd, const char *listener_key);
/* Shard is draining: idle sessions get 421 and close; busy ones after
 * their transaction. */
void smtp_session_drain_all(struct shard *sh);

#endif
