/* listener - see listener.h. */
#include "core/listener.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/sgerr.h"

const char *listener_key(const struct config_listener *l, char *out, size_t cap) {
  snprintf(out, cap, "%s:%u", l->address.host, (unsigned)l->address.port);
  return out;
}

/* SO_REUSEPORT lets any process of our uid that sets it too (another
 * sealgate instance configured with the same address, say) join the group
 * silently and take a share of the connections.  A bind without it fails
 * while anyone listens there, so try one first. */
static int listener__probe(const struct addrinfo *ai) {
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* TIME_WAIT is no owner */
  if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  int rc = bind(fd, ai->ai_addr, ai->ai_addrlen);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

static int listener__bind_one(const struct config_hostport *hp, bool probe, int *fd_out,
                              char *err, size_t errlen) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof port, "%u", (unsigned)hp->port);
  int gai = getaddrinfo(hp->host, port, &hints, &res);
  if (gai != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", hp->host, gai_strerror(gai));
    return SG_ECONFIG;
  }
  int fd = -1;
  int one = 1;
  int rc = SG_EIO;
  if (probe && listener__probe(res) != 0) goto fail;
  fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) goto fail;
  /* SO_REUSEPORT lets every shard bind the address; DIR/lock, taken before
   * any bind, keeps a second daemon of this instance off it, and the probe
   * any other owner of the address. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    goto fail;
  if (res->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) goto fail;
  freeaddrinfo(res);
  *fd_out = fd;
  return 0;
fail:
  snprintf(err, errlen, "cannot listen on %s:%u: %s", hp->host, (unsigned)hp->port,
           strerror(errno));
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
  return rc;
}

static int listener__plan_entry(const struct config_listener *l, char **old_keys, size_t n_old,
                                unsigned nshards, struct listener_plan_entry *e, char *err,
                                size_t errlen) {
  char key[300];
  listener_key(l, key, sizeof key);
  e->key = strdup(key);
  e->fds = NULL;
  if (!e->key) return SG_ENOMEM;
  for (size_t i = 0; i < n_old; i++)
    if (strcmp(old_keys[i], key) == 0) return 0; /* already bound: shards keep theirs */
  e->fds = malloc(nshards * sizeof *e->fds);
  if (!e->fds) return SG_ENOMEM;
  for (unsigned s = 0; s < nshards; s++) e->fds[s] = -1;
  for (unsigned s = 0; s < nshards; s++) {
    char why[512];
    int rc = listener__bind_one(&l->address, s == 0, &e->fds[s], why, sizeof why);
    if (rc) {
      snprintf(err, errlen, "listener '%s': %s", l->name, why);
      return rc;
    }
  }
  return 0;
}

int listener_plan_build(const struct config *cfg, char **old_keys, size_t n_old, unsigned nshards,
                        struct listener_plan *out, char *err, size_t errlen) {
  out->n = 0;
  out->entries = calloc(cfg->n_listeners, sizeof *out->entries);
  if (!out->entries) return SG_ENOMEM;
  for (size_t i = 0; i < cfg->n_listeners; i++) {
    int rc = listener__plan_entry(&cfg->listeners[i], old_keys, n_old, nshards,
                                  &out->entries[out->n++], err, errlen);
    if (rc) {
      listener_plan_free(out, nshards);
      return rc;
    }
  }
  return 0;
}

void listener_plan_free(struct listener_plan *p, unsigned nshards) {
  for (size_t i = 0; i < p->n; i++) {
    if (p->entries[i].fds)
      for (unsigned s = 0; s < nshards; s++)
        if (p->entries[i].fds[s] >= 0) close(p->entries[i].fds[s]);
    free(p->entries[i].fds);
    free(p->entries[i].key);
  }
  free(p->entries);
  p->entries = NULL;
  p->n = 0;
}
