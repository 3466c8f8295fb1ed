/*
 * mailbox - hand work to a libuv loop from any thread.
 *
 * Owns a mutex-protected FIFO of closures and the uv_async_t that wakes the
 * loop.  Any thread may mailbox_post(); the closures run on the loop thread,
 * in order.  uv_async_send() coalesces wake-ups, so the async callback
 * drains the whole queue each time (DESIGN.md).  The loop thread owns the
 * mailbox: init and close run there; after mailbox_close() no more posts
 * are allowed (posting threads must have been stopped first).
 */
#ifndef SEALGATE_MAILBOX_H
#define SEALGATE_MAILBOX_H

#include <pthread.h>
#include <uv.h>

typedef void (*mailbox_fn)(void *arg);

struct mailbox_item {
  struct mailbox_item *next;
  mailbox_fn fn;
  void *arg;
};

struct mailbox {
  uv_async_t async;
  pthread_mutex_t mu;
  struct mailbox_item *head, *tail;
};

int mailbox_init(uv_loop_t *loop, struct mailbox *mb);
/* Thread-safe.  Returns 0 or SG_ENOMEM (then fn is not called). */
int mailbox_post(struct mailbox *mb, mailbox_fn fn, void *arg);
/* Thread-safe and cannot fail: the caller provides the item (it->fn and
 * it->arg set) and keeps its memory valid until it->fn runs; fn may free
 * it.  For completions that must never be lost (spool results). */
void mailbox_post_item(struct mailbox *mb, struct mailbox_item *it);
/* Loop thread.  Runs what is still queued, then closes the async handle. */
void mailbox_close(struct mailbox *mb);

#endif
