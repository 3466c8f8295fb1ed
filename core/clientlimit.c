/* clientlimit - see clientlimit.h. */
#include "core/clientlimit.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/sgerr.h"
#include "core/timeutil.h"

#define CLIENTLIMIT_SLOTS 65536

struct clientlimit_slot {
  atomic_uint conns;
  atomic_uint_fast64_t rate; /* see clientlimit__rate_ok */
};

static struct clientlimit_slot *clientlimit_table;
static uint64_t clientlimit_key[2];

int clientlimit_init(void) {
  if (clientlimit_table) return 0;
  clientlimit_table = calloc(CLIENTLIMIT_SLOTS, sizeof *clientlimit_table);
  if (!clientlimit_table) return SG_ENOMEM;
  if (getrandom(clientlimit_key, sizeof clientlimit_key, 0) != sizeof clientlimit_key)
    clientlimit_key[0] = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
  return 0;
}

/* A keyed mix of the address bytes (splitmix64-style rounds). */
static struct clientlimit_slot *clientlimit__slot(const struct sockaddr *sa) {
  const uint8_t *p;
  size_t n;
  if (sa->sa_family == AF_INET) {
    p = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    n = 4;
  } else {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    p = IN6_IS_ADDR_V4MAPPED(a) ? a->s6_addr + 12 : a->s6_addr;
    n = IN6_IS_ADDR_V4MAPPED(a) ? 4 : 8;
  }
  uint64_t h = clientlimit_key[0] ^ n;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i] + clientlimit_key[1];
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  }
  return &clientlimit_table[h % CLIENTLIMIT_SLOTS];
}

/*
 * Sliding-window rate (the approximation nginx and Cloudflare use): the
 * count of the current minute plus the previous minute's count weighted by
 * how much of it still lies inside the last 60 s.  A fixed calendar minute
 * would let 2N connections through across a minute boundary.  The slot
 * packs minute:32 | previous:16 | current:16 into one atomic word.
 */
static int clientlimit__rate_ok(struct clientlimit_slot *s, unsigned rate_per_min, uint64_t ms) {
  uint64_t minute = (ms / 60000) & 0xffffffffu, into = ms % 60000;
  uint64_t old = atomic_load(&s->rate);
  for (;;) {
    uint64_t m = old >> 32, prev = (old >> 16) & 0xffff, cur = old & 0xffff;
    if (m != minute) { /* the window moved on by one minute, or more */
      prev = (m + 1 == minute) ? cur : 0;
      cur = 0;
    }
    /* cur + prev * (60000 - into) / 60000 >= rate, without rounding down */
    if (cur * 60000 + prev * (60000 - into) >= (uint64_t)rate_per_min * 60000) return 0;
    uint64_t nv = (minute << 32) | (prev << 16) | (cur < 0xffff ? cur + 1 : cur);
    if (atomic_compare_exchange_weak(&s->rate, &old, nv)) return 1;
  }
}

int clientlimit_acquire(const struct sockaddr *sa, unsigned max_conns, unsigned rate_per_min) {
  return clientlimit_acquire_at(sa, max_conns, rate_per_min, timeutil_wall_ms());
}

int clientlimit_acquire_at(const struct sockaddr *sa, unsigned max_conns, unsigned rate_per_min,
                           uint64_t now_ms) {
  struct clientlimit_slot *s = clientlimit__slot(sa);
  if (rate_per_min && !clientlimit__rate_ok(s, rate_per_min, now_ms)) return SG_EBUSY;
  unsigned prev = atomic_fetch_add(&s->conns, 1);
  if (max_conns && prev >= max_conns) {
    atomic_fetch_sub(&s->conns, 1);
    return SG_ELIMIT;
  }
  return 0;
}

void clientlimit_release(const struct sockaddr *sa) {
  atomic_fetch_sub(&clientlimit__slot(sa)->conns, 1);
}
