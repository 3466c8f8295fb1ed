/*
 * cryptopool - worker threads with one hsm_worker each (cryptopool.h).
 *
 * A mutex and condition variable guard one FIFO; that is cheap next to a
 * token operation (hundreds of microseconds), and keeps ordering simple.
 * A worker that cannot reach the token is rebuilt lazily before the next
 * job, so a token server restart costs the jobs in flight, not the pool.
 */
#include "crypto/cryptopool.h"
#include "crypto/keycache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"

struct cryptopool {
  struct hsm *hsm;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct cryptopool_job *head, *tail;
  bool stopping;
  unsigned n_threads;
  pthread_t *threads;
};

static struct cryptopool_job *cryptopool__next(struct cryptopool *p) {
  pthread_mutex_lock(&p->mu);
  while (!p->head && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
  struct cryptopool_job *j = p->head;
  if (j) {
    p->head = j->next;
    if (!p->head) p->tail = NULL;
  }
  pthread_mutex_unlock(&p->mu);
  return j;
}

static void *cryptopool__main(void *arg) {
  struct cryptopool *p = arg;
  struct hsm_worker *w = NULL;
  bool warned = false;
  struct cryptopool_job *j;
  keycache_thread_online(); /* jobs read the key cache (liburcu readers must be registered) */
  while ((j = cryptopool__next(p)) != NULL) {
    if (!w) {
      char err[256];
      if (hsm_worker_new(p->hsm, &w, err, sizeof err) != 0 && !warned) {
        log_warn("cryptopool: no token worker yet: %s", err);
        warned = true;
      }
      if (w) warned = false;
    }
    j->run(j, w);
  }
  hsm_worker_free(w);
  keycache_thread_offline();
  return NULL;
}

int cryptopool_start(struct hsm *h, unsigned threads, struct cryptopool **out, char *err, size_t errlen) {
  *out = NULL;
  if (threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (unsigned)n : 1;
  }
  struct cryptopool *p = calloc(1, sizeof *p);
  if (!p || !(p->threads = calloc(threads, sizeof *p->threads))) {
    free(p);
    return SG_ENOMEM;
  }
  p->hsm = h;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  for (; p->n_threads < threads; p->n_threads++) {
    if (pthread_create(&p->threads[p->n_threads], NULL, cryptopool__main, p) != 0) {
      snprintf(err, errlen, "cannot start crypto worker threads");
      cryptopool_stop(p);
      return SG_ENOMEM;
    }
    char name[16];
    snprintf(name, sizeof name, "sg-crypto%u", p->n_threads);
    pthread_setname_np(p->threads[p->n_threads], name);
  }
  *out = p;
  return 0;
}

void cryptopool_submit(struct cryptopool *p, struct cryptopool_job *job) {
  job->next = NULL;
  pthread_mutex_lock(&p->mu);
  if (p->tail) p->tail->next = job;
  else p->head = job;
  p->tail = job;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

unsigned cryptopool_size(const struct cryptopool *p) { return p->n_threads; }

void cryptopool_stop(struct cryptopool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stopping = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (unsigned i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->threads);
  free(p);
}
