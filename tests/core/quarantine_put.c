/*
 * quarantine_put - test helper (not installed): hold the message read from
 * standard input in a quarantine, as the daemon's filter action does, and
 * print its ID.  Used by tests/integration/test_quarantine_cli.py to seed
 * a quarantine without running a daemon.
 *
 *   quarantine_put ROOT NAME HELD_MS SENDER RCPT[,RCPT...] [FILTER [REASON]]
 *
 * HELD_MS 0 means now.  Exit 0, or 1 with the reason on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/quarantine.h"

static int read_stdin(struct buf *b) {
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
    if (buf_append(b, chunk, n) != 0) return -1;
  return ferror(stdin) ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 6 || argc > 8) {
    fprintf(stderr, "usage: quarantine_put ROOT NAME HELD_MS SENDER RCPT[,RCPT...] [FILTER [REASON]]\n");
    return 1;
  }
  struct quarantine_meta m = {.held_ms = strtoull(argv[3], NULL, 10)};
  snprintf(m.name, sizeof m.name, "%s", argv[2]);
  snprintf(m.filter, sizeof m.filter, "%s", argc > 6 ? argv[6] : "");
  snprintf(m.reason, sizeof m.reason, "%s", argc > 7 ? argv[7] : "");
  char *rcpts[64], *save = NULL;
  size_t n = 0;
  for (char *r = strtok_r(argv[5], ",", &save); r && n < 64; r = strtok_r(NULL, ",", &save)) rcpts[n++] = r;
  struct spool_envelope env = {.queue_id = "test.1", .arrival_ms = 1704164645123ull, .sender = argv[4],
                               .rcpts = rcpts, .n_rcpts = n, .listener = "main", .client = "helper"};
  struct buf data = BUF_INIT;
  char err[512];
  int rc = read_stdin(&data);
  if (rc == 0) rc = quarantine_open(argv[1], err, sizeof err);
  if (rc == 0) rc = quarantine_put(argv[1], &m, &env, data.data ? data.data : "", data.len, err, sizeof err);
  else snprintf(err, sizeof err, "cannot read the message");
  buf_free(&data);
  if (rc) {
    fprintf(stderr, "quarantine_put: %s\n", err);
    return 1;
  }
  printf("%s\n", m.id);
  return 0;
}
