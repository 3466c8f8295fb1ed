/* mailbox - see mailbox.h. */
#include "core/mailbox.h"

#include <stdlib.h>

#include "core/sgerr.h"

static void mailbox_drain(struct mailbox *mb) {
  for (;;) {
    pthread_mutex_lock(&mb->mu);
    struct mailbox_item *it = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    if (!it) return;
    while (it) {
      struct mailbox_item *next = it->next; /* fn may free it */
      it->fn(it->arg);
      it = next;
    }
  }
}

static void mailbox_on_async(uv_async_t *a) { mailbox_drain(a->data); }

int mailbox_init(uv_loop_t *loop, struct mailbox *mb) {
  mb->head = mb->tail = NULL;
  pthread_mutex_init(&mb->mu, NULL);
  mb->async.data = mb;
  if (uv_async_init(loop, &mb->async, mailbox_on_async) != 0) return SG_EIO;
  return 0;
}

/* mailbox_post's own allocation: runs the closure, then frees itself. */
struct mailbox_boxed {
  struct mailbox_item it;
  mailbox_fn fn;
  void *arg;
};

static void mailbox__run_boxed(void *arg) {
  struct mailbox_boxed *b = arg;
  b->fn(b->arg);
  free(b);
}

int mailbox_post(struct mailbox *mb, mailbox_fn fn, void *arg) {
  struct mailbox_boxed *b = malloc(sizeof *b);
  if (!b) return SG_ENOMEM;
  b->fn = fn;
  b->arg = arg;
  b->it.fn = mailbox__run_boxed;
  b->it.arg = b;
  mailbox_post_item(mb, &b->it);
  return 0;
}

void mailbox_post_item(struct mailbox *mb, struct mailbox_item *it) {
  it->next = NULL;
  pthread_mutex_lock(&mb->mu);
  if (mb->tail) mb->tail->next = it; else mb->head = it;
  mb->tail = it;
  pthread_mutex_unlock(&mb->mu);
  uv_async_send(&mb->async);
}

void mailbox_close(struct mailbox *mb) {
  mailbox_drain(mb);
  uv_close((uv_handle_t *)&mb->async, NULL);
}
