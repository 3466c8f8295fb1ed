/*
 * quarantine - messages held by a filter's quarantine("NAME") action
 * (issue #6), one file per message under the quarantine folder
 * (DIR/quarantine by default):
 *
 *   ROOT/NAME/ID        a held message
 *   ROOT/.released/ID   released by an admin, waiting for the daemon to
 *                       queue it again (then removed)
 *   ROOT/NAME/.tmp-*    being written (removed by quarantine_open)
 *
 * Owns those files and their format.  Callers: the daemon's crypto
 * workers (put, on the worker thread: it blocks on fsync), the daemon's
 * housekeeping (expire, take_released; on a thread that may block) and
 * sealctl (list, show, delete, release), possibly at the same time as the
 * daemon: every change is a rename or an unlink, so a reader sees a
 * message whole or not at all, and two processes racing on one ID simply
 * see SG_ENOTFOUND on the loser's side.
 *
 * What is held is the message as the spool held it (for incoming mail:
 * still encrypted, as it arrived; nothing decrypted is written here), with
 * its envelope, plus what the filter run said about it (struct
 * quarantine_meta).  Releasing queues that message again with
 * SPOOL_F_RELEASED: it then goes through the same processing, filters
 * included, except that quarantine actions are skipped, so it is
 * "delivered as it would have been delivered".
 *
 * Durability: put and release write a temporary file, fdatasync, rename,
 * fsync the folder; only then do they return 0 (a message the spool drops
 * after put returned is never lost).  Delete and expiry need no sync.
 *
 * Trust: files are read back as untrusted bytes (the spool_record reader
 * checks every byte and the CRC); a damaged file is reported as
 * SG_ECORRUPT, listed with its reason, never released.  Quarantine names
 * and IDs given by callers are checked (quarantine_name_ok): nothing from
 * a caller becomes a path outside ROOT.
 *
 * Errors: 0 or a negative enum sgerr; err (when given) gets one line.
 */
#ifndef SEALGATE_QUARANTINE_H
#define SEALGATE_QUARANTINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/spool_record.h"

#define QUARANTINE_NAME_MAX 64 /* [A-Za-z0-9_.-], not starting with '.' */
#define QUARANTINE_ID_MAX 40   /* hex, unique across all quarantines */
#define QUARANTINE_TEXT_MAX 512

/* What the filter run said.  Strings are NUL-terminated, may be empty. */
struct quarantine_meta {
  char id[QUARANTINE_ID_MAX];
  char name[QUARANTINE_NAME_MAX + 1];
  uint64_t held_ms;                       /* when put (ms since the epoch) */
  uint64_t size;                          /* bytes of the message data */
  char filter[QUARANTINE_TEXT_MAX];       /* the filter(s) whose action held it */
  char reason[QUARANTINE_TEXT_MAX];       /* e.g. the S/MIME result */
};

/* Per-quarantine limits (config `quarantines:`); 0 = no limit. */
struct quarantine_limits {
  uint64_t retention_ms;
  uint64_t max_bytes;
};

/* True if name is a valid quarantine name (also used by config). */
bool quarantine_name_ok(const char *name);

/* True if id has the syntax of a message ID: 1..QUARANTINE_ID_MAX-1
 * lowercase hex digits (put makes 24: 16 of the time in ms, 8 random).
 * Every function taking an ID checks it before a path is built. */
bool quarantine_id_ok(const char *id);

/* Create ROOT (0700; its parent must exist), ROOT/Policy and
 * ROOT/.released if missing, remove left-over .tmp-* files.  The daemon
 * calls it at start, before any put (put needs ROOT). */
int quarantine_open(const char *root, char *err, size_t errlen);

/* Hold a message in quarantine meta->name (its folder is created on first
 * use).  meta->id is filled in; the other meta fields are the caller's
 * (held_ms 0 = now; size is set from len).  Durable when it returns 0. */
int quarantine_put(const char *root, struct quarantine_meta *meta, const struct spool_envelope *env,
                   const char *data, size_t len, char *err, size_t errlen);

/* The file format (quarantine.c says it in full): a small versioned,
 * checksummed header holding meta, then a spool record (envelope + data).
 * encode appends to head and tail like spool_record_encode (the file is
 * head + data + tail); SG_EINVAL for a bad meta (id, name, size != len) or
 * envelope, SG_ENOMEM; on error head and tail are left as they were.
 * parse reads a whole file image, trusting nothing: 0, or SG_ECORRUPT /
 * SG_ENOMEM with meta and env zeroed.  On success *env is the caller's
 * (spool_envelope_free) and *data points into buf.  The reader accepts
 * exactly what the encoder writes (the fuzz target checks it). */
int quarantine_encode(const struct quarantine_meta *meta, const struct spool_envelope *env, const void *data,
                      size_t len, struct buf *head, struct buf *tail);
int quarantine_parse(const void *buf, size_t len, struct quarantine_meta *meta, struct spool_envelope *env,
                     const char **data, size_t *len_out);

/* Call fn for each held message, oldest first (held_ms, then id), of
 * quarantine name (NULL = all; a quarantine not created yet holds nothing).
 * env is the stored envelope (valid during the call only).  A file that
 * cannot be read is passed with corrupt set to its reason (env NULL, meta
 * holds id, name and held_ms from the file's name and time, size its
 * bytes on disk).  A missing ROOT holds nothing.  SG_EINVAL for a bad
 * name. */
typedef void (*quarantine_list_fn)(const struct quarantine_meta *meta, const struct spool_envelope *env,
                                   const char *corrupt, void *arg);
int quarantine_list(const char *root, const char *name, quarantine_list_fn fn, void *arg, char *err,
                    size_t errlen);

/* Read one message.  On success *env and *data are the caller's
 * (spool_envelope_free, free; data has a NUL after its *len bytes).
 * SG_EINVAL for a bad ID, SG_ENOTFOUND for an unknown one, SG_ECORRUPT
 * (reason in err) for a damaged file. */
int quarantine_show(const char *root, const char *id, struct quarantine_meta *meta, struct spool_envelope *env,
                    char **data, size_t *len, char *err, size_t errlen);

/* Remove a held message.  SG_EINVAL for a bad ID, SG_ENOTFOUND for an
 * unknown one. */
int quarantine_delete(const char *root, const char *id, char *err, size_t errlen);

/* Move a held message to ROOT/.released (durable); the daemon queues it
 * again.  SG_ENOTFOUND for an unknown ID, SG_ECORRUPT for a damaged one
 * (left where it is). */
int quarantine_release(const char *root, const char *id, char *err, size_t errlen);

/* Daemon: for each released message (in ID order, i.e. as held), fn gets
 * its envelope and data (the caller's from then on: spool_envelope_free,
 * free; data has a NUL after its len bytes) and the path of its file; fn
 * must remove that file (quarantine_done, or the same unlink done
 * asynchronously, as core/release.c does on a loop) once the message is
 * durably queued again.  env->flags already has SPOOL_F_RELEASED.  A damaged file
 * is renamed to ROOT/.released/ID.corrupt and logged, never queued.
 * Returns how many were handed to fn, or a negative code. */
typedef void (*quarantine_take_fn)(struct spool_envelope *env, char *data, size_t len, const char *path,
                                   const struct quarantine_meta *meta, void *arg);
int quarantine_take_released(const char *root, quarantine_take_fn fn, void *arg);
/* Unlink path (no folder sync: a crash that undoes it delivers the message
 * twice, never loses it).  0 or a negative code. */
int quarantine_done(const char *path);

/* Expire held messages: those whose age (now_ms - held_ms) reached their
 * quarantine's retention, then the oldest while a quarantine's files hold
 * more than max_bytes (bytes on disk, header and envelope included; damaged
 * files count and expire too, aged by their mtime).  limits_of returns the
 * limits of a quarantine name (the config's or defaults; NULL = no limits),
 * called once per quarantine.  Each expired message is logged (log_info:
 * id, quarantine, age, why).  Returns the number expired or a negative
 * code. */
typedef struct quarantine_limits (*quarantine_limits_fn)(const char *name, void *arg);
int quarantine_expire(const char *root, uint64_t now_ms, quarantine_limits_fn limits_of, void *arg);
/* What a quarantine holds after an expiry pass: the bytes of its files
 * and when its oldest was held (0 when it is empty). */
struct quarantine_usage {
  uint64_t bytes;
  uint64_t oldest_ms;
};
/* The same for the one quarantine name, with its limits lim (after a
 * message was held there: only that folder is scanned).  *after (may be
 * NULL) gets what is left, so the caller can tell when the next pass is
 * due without scanning (core/process.c). */
int quarantine_expire_name(const char *root, const char *name, uint64_t now_ms, struct quarantine_limits lim,
                           struct quarantine_usage *after);

#endif
