/*
 * spool - the durable queue: one file per message under spool_dir.
 *
 * Owns the files and the sync threads.  Shards call it from their loop
 * threads; every operation that touches the disk runs on the spool's own
 * thread pool (never on a loop thread, never on libuv's shared pool) and
 * reports back through the caller's mailbox, on the caller's loop.
 *
 * Durability protocol (the promise behind "250 after DATA"): a message is
 * written into a recycled file .pK of the folder, fdatasync'ed, renamed to
 * ID, and the folder is fsync'ed.
 * Folder syncs are group commits: one fsync covers every rename that
 * finished before it started, so concurrent commits share it.  The commit
 * callback reports success only after that sync.  Removal renames the
 * file back into the pool (no inode is freed or allocated per message),
 * without a sync: if a crash undoes it, the message is delivered again
 * (at-least-once).
 *
 * Layout: spool_dir/q<N>/ holds shard N's messages (a shard only writes its
 * own folder, so folder syncs of different shards do not contend);
 * spool_dir/corrupt/ receives files that fail their checks at recovery.
 * Trusts: nothing read back from disk (spool_record validates every byte).
 *
 * Ownership: spool_commit() takes the message's data buffer (msg->data is
 * the caller's until the callback, which gets the same msg back).  A
 * struct spool_msg is owned by exactly one shard at a time.
 */
#ifndef SEALGATE_SPOOL_H
#define SEALGATE_SPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/mailbox.h"
#include "core/spool_record.h"

struct spool;
struct spool_dir;

struct spool_msg {
  struct spool_envelope env;
  struct spool_dir *dir;  /* the folder the file lives in */
  char *data;             /* message bytes (malloc'd) or NULL when not loaded */
  size_t data_len;
  /* Fields for the shard's delivery queue (core/delivery.c); the spool
   * never reads them. */
  struct spool_msg *next, *all_next, *all_prev;
  struct spool_msg *prev; /* host queues only: O(1) removal from the middle */
  unsigned char queue;    /* which host queue holds it (0: none) */
  uint64_t next_try_ms;
  unsigned attempts;
  char *last_error;
  bool loading; /* a spool_load (or its S/MIME processing) is pending for it */
  /* S/MIME (crypto/outgoing.h, crypto/incoming.h): the bytes to send
   * instead of data, made for one attempt and freed after it. */
  bool smime;       /* processed before delivery: a sending profile, or an
                       incoming listener whose flow policy decrypts/verifies */
  bool smime_message, smime_verified; /* incoming: R33's flags, for policies (#6) */
  char *wire;
  size_t wire_len;
  const char *action; /* static: "sign", ..., for logs; NULL = "relay" */
  uint64_t smime_ms;  /* how long the processing took */
};

/* Result callback, run on the loop that owns the mailbox passed in.
 * status is 0 or a negative SG_E* code. */
typedef void (*spool_cb)(struct spool_msg *msg, int status, void *arg);

/* Open (creating folders) spool_dir with folders for nshards shards.
 * threads: how many disk jobs may run at once. */
int spool_open(const char *spool_dir, unsigned nshards, unsigned threads, struct spool **out);
/* Stops the threads after finishing queued work; then frees. */
void spool_close(struct spool *sp);

/* Assign a fresh queue id for shard (into msg->env.queue_id). Thread-safe. */
void spool_new_id(struct spool *sp, unsigned shard, struct spool_msg *msg);

/* Write msg durably as a new file in shard's folder (or replace its existing
 * file when replace is true).  cb gets 0 once durable, SG_ENOSPC when the
 * disk is full, SG_EIO otherwise (then nothing is left behind). */
int spool_commit(struct spool *sp, unsigned shard, struct spool_msg *msg, bool replace,
                 struct mailbox *mb, spool_cb cb, void *arg);
/* Delete msg's file.  cb may be NULL.  msg stays the caller's. */
int spool_remove(struct spool *sp, struct spool_msg *msg, struct mailbox *mb, spool_cb cb,
                 void *arg);
/* Read msg's data back from disk into msg->data (it was dropped to save
 * memory).  A file that fails its checks is moved to corrupt/: SG_ECORRUPT. */
int spool_load(struct spool *sp, struct spool_msg *msg, struct mailbox *mb, spool_cb cb,
               void *arg);

/* Free a message (envelope, data, struct). */
void spool_msg_free(struct spool_msg *msg);

/* False when free space is at or below reserve bytes (limits.disk_reserve;
 * the caller passes its config's value so a reload applies).  The free
 * space is read at most once a second. */
bool spool_space_ok(struct spool *sp, uint64_t reserve);

/* Scan every folder at start (single-threaded; before shards run).  Each
 * valid message (data not loaded) is passed to fn, which takes ownership.
 * Recycled .pK files go back to the pool (older
 * versions' .tmp files are removed); corrupt files are moved to corrupt/ with a log
 * line.  Returns the number of messages recovered or a negative code. */
int spool_recover(struct spool *sp, void (*fn)(struct spool_msg *msg, void *arg), void *arg);

/* Read every message's envelope without loading data, for `queue list`
 * when no daemon runs.  Same callback contract as spool_recover, but
 * touches nothing on disk. */
int spool_scan(const char *spool_dir, void (*fn)(struct spool_msg *msg, const char *path, void *arg),
               void *arg);

/* Path of msg's file, written into out (cap bytes); returns out. */
const char *spool_msg_path(const struct spool_msg *msg, char *out, size_t cap);

#endif
