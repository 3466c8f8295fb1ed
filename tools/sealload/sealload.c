/*
 * sealload - an SMTP load generator and sink for benchmarking relays
 * (issue #7; docs/SEALLOAD.md).
 *
 *   sealload [options] HOST:PORT          send mail, report rate and latency
 *   sealload sink [options] HOST:PORT     accept mail, count (and check) it
 *
 * This file is the command line: options, the worker threads (each runs
 * an sl_client or sl_sink on its own libuv loop), signals, the progress
 * line, the merged report and the exit status.  Exit status, client: 0
 * every message acked; 1 some message not acked (refused, failed, or
 * never sent); 2 bad usage; 3 no connection could be made at all.  Sink:
 * 0; 1 a check or --keep write failed (or it could not listen); 2 usage.
 *
 * Arguments are the user's: checked, never trusted to be well-formed
 * (addresses may not hold characters that would break an SMTP line).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/sgerr.h"
#include "tools/sealload/sl_check.h"
#include "tools/sealload/sl_client.h"
#include "tools/sealload/sl_msg.h"
#include "tools/sealload/sl_report.h"
#include "tools/sealload/sl_sink.h"

#ifndef SEALGATE_VERSION
#define SEALGATE_VERSION "unknown"
#endif

#define MAX_THREADS 64
#define MAX_RCPTS 1000

struct opts {
  bool sink, json, quiet, reuse;
  const char *target;
  unsigned sessions, threads, rcpts, retries;
  uint64_t count, duration_ms, timeout_ms;
  double rate;
  size_t size;
  bool size_set, mime_set;
  enum sl_msg_kind kind;
  const char *file, *from, *to, *helo, *acked;
  const char *verify, *decrypt, *key, *keep, *hostname;
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: sealload [options] HOST:PORT          send mail and measure\n"
          "       sealload sink [options] HOST:PORT     accept mail and count it\n"
          "Client options:\n"
          "  -c, --concurrency N   parallel SMTP sessions (default 10)\n"
          "  -n, --count N         messages to send (default 1000)\n"
          "  -t, --duration SECS   send for this long instead of a count\n"
          "  -r, --rate R          open loop: R messages/s in total on a fixed schedule;\n"
          "                        latency counts from each message's due time\n"
          "                        (default: closed loop, as fast as replies allow)\n"
          "  -s, --size BYTES      generated message size, suffix K or M (default 4K)\n"
          "  -f, --file FILE       send FILE (a fresh Message-ID per message)\n"
          "  -m, --mime KIND       text | attach (multipart, base64 attachment) |\n"
          "                        8bit (UTF-8 body, BODY=8BITMIME); sized by --size\n"
          "      --rcpts N         recipients per message (default 1)\n"
          "      --from ADDR       envelope sender (default sealload@example.com)\n"
          "      --to PATTERN      recipients, %%d = 1..N (default rcpt%%d@example.net)\n"
          "      --helo NAME       EHLO name (default sealload.test)\n"
          "      --no-reuse        one message per connection (default: reuse)\n"
          "      --retries N       retries of a refused connection, with backoff (default 3)\n"
          "      --timeout SECS    connect and reply timeout (default 30)\n"
          "      --acked FILE      write each Message-ID that got 250 after DATA\n"
          "  -q, --quiet           no progress line\n"
          "Sink options:\n"
          "  -n, --count N         stop after N messages\n"
          "  -t, --duration SECS   stop after SECS seconds (else on SIGINT/SIGTERM)\n"
          "      --verify CERT     check each message is S/MIME signed by CERT (PEM)\n"
          "      --decrypt CERT --key KEY   decrypt each message with CERT and KEY\n"
          "      --keep DIR        also write each message to a file in DIR\n"
          "      --hostname NAME   name in the banner (default sealload-sink.test)\n"
          "Both:\n"
          "      --threads N       worker threads, one event loop each (default 1)\n"
          "      --json            print the report as one JSON object\n"
          "  -h, --help, -V, --version\n"
          "Exit status, client: 0 all messages acked, 1 some not acked, 2 usage,\n"
          "3 no connection succeeded.  Sink: 0, 1 a check failed, 2 usage.\n");
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "sealload: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (try --help)\n");
  return 2;
}

/* ---- options ------------------------------------------------------------------- */

enum {
  O_RCPTS = 256, O_FROM, O_TO, O_HELO, O_REUSE, O_NO_REUSE, O_RETRIES, O_TIMEOUT, O_ACKED,
  O_VERIFY, O_DECRYPT, O_KEY, O_KEEP, O_HOSTNAME, O_THREADS, O_JSON
};

static const struct option long_opts[] = {
    {"concurrency", required_argument, NULL, 'c'}, {"count", required_argument, NULL, 'n'},
    {"duration", required_argument, NULL, 't'},    {"rate", required_argument, NULL, 'r'},
    {"size", required_argument, NULL, 's'},        {"file", required_argument, NULL, 'f'},
    {"mime", required_argument, NULL, 'm'},        {"quiet", no_argument, NULL, 'q'},
    {"rcpts", required_argument, NULL, O_RCPTS},   {"from", required_argument, NULL, O_FROM},
    {"to", required_argument, NULL, O_TO},         {"helo", required_argument, NULL, O_HELO},
    {"reuse", no_argument, NULL, O_REUSE},         {"no-reuse", no_argument, NULL, O_NO_REUSE},
    {"retries", required_argument, NULL, O_RETRIES}, {"timeout", required_argument, NULL, O_TIMEOUT},
    {"acked", required_argument, NULL, O_ACKED},   {"verify", required_argument, NULL, O_VERIFY},
    {"decrypt", required_argument, NULL, O_DECRYPT}, {"key", required_argument, NULL, O_KEY},
    {"keep", required_argument, NULL, O_KEEP},     {"hostname", required_argument, NULL, O_HOSTNAME},
    {"threads", required_argument, NULL, O_THREADS}, {"json", no_argument, NULL, O_JSON},
    {"help", no_argument, NULL, 'h'},              {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0}};

/* Options of the other mode are usage errors, named. */
static bool client_only(int ch) {
  return (ch > 0 && ch < 256 && strchr("crsfmq", ch)) || (ch >= O_RCPTS && ch <= O_ACKED);
}
static bool sink_only(int ch) { return ch >= O_VERIFY && ch <= O_HOSTNAME; }

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || *s == '-' || v < min || v > max) return false;
  *out = v;
  return true;
}

static bool parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *out) {
  uint64_t v;
  if (!parse_u64(s, min, max, &v)) return false;
  *out = (unsigned)v;
  return true;
}

static bool parse_double(const char *s, double min, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= min && v <= max)) return false;
  *out = v;
  return true;
}

static bool parse_ms(const char *s, uint64_t *ms) {
  double secs;
  if (!parse_double(s, 0.001, 1e7, &secs)) return false;
  *ms = (uint64_t)llround(secs * 1000.0);
  return true;
}

static bool parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  unsigned long long mul = 1;
  if (*end == 'k' || *end == 'K') mul = 1024, end++;
  else if (*end == 'm' || *end == 'M') mul = 1024 * 1024, end++;
  if (errno || end == s || *end || *s == '-' || v > (1ull << 30) / mul) return false;
  *out = (size_t)(v * mul);
  return true;
}

/* An address must fit an SMTP path: printable, no space or brackets. */
static bool valid_addr(const char *a) {
  if (!*a || strlen(a) > 250) return false;
  for (const char *p = a; *p; p++)
    if (*p <= ' ' || *p >= 0x7f || *p == '<' || *p == '>') return false;
  return true;
}

/* One option; returns 0, or the exit status for a usage error. */
static int take_opt(struct opts *o, int ch, const char *arg, const char *name) {
  bool ok = true;
  if (o->sink && client_only(ch))
    return usage_error("%s is a client option", name);
  if (!o->sink && sink_only(ch)) return usage_error("%s is a sink option", name);
  switch (ch) {
    case 'c': ok = parse_unsigned(arg, 1, 100000, &o->sessions); break;
    case 'n': ok = parse_u64(arg, 1, UINT64_C(1) << 40, &o->count); break;
    case 't': ok = parse_ms(arg, &o->duration_ms); break;
    case 'r': ok = parse_double(arg, 0.001, 1e7, &o->rate); break;
    case 's': ok = parse_size(arg, &o->size), o->size_set = true; break;
    case 'f': o->file = arg; break;
    case 'm':
      o->mime_set = true;
      if (!strcmp(arg, "text")) o->kind = SL_MSG_TEXT;
      else if (!strcmp(arg, "attach")) o->kind = SL_MSG_ATTACH;
      else if (!strcmp(arg, "8bit")) o->kind = SL_MSG_8BIT;
      else ok = false;
      break;
    case 'q': o->quiet = true; break;
    case O_RCPTS: ok = parse_unsigned(arg, 1, MAX_RCPTS, &o->rcpts); break;
    case O_FROM: o->from = arg, ok = valid_addr(arg); break;
    case O_TO: o->to = arg; break;
    case O_HELO: o->helo = arg, ok = valid_addr(arg); break;
    case O_REUSE: o->reuse = true; break;
    case O_NO_REUSE: o->reuse = false; break;
    case O_RETRIES: ok = parse_unsigned(arg, 0, 1000, &o->retries); break;
    case O_TIMEOUT: ok = parse_ms(arg, &o->timeout_ms); break;
    case O_ACKED: o->acked = arg; break;
    case O_VERIFY: o->verify = arg; break;
    case O_DECRYPT: o->decrypt = arg; break;
    case O_KEY: o->key = arg; break;
    case O_KEEP: o->keep = arg; break;
    case O_HOSTNAME: o->hostname = arg, ok = valid_addr(arg); break;
    case O_THREADS: ok = parse_unsigned(arg, 1, MAX_THREADS, &o->threads); break;
    case O_JSON: o->json = true; break;
    default: return usage_error("unknown option '%s'", name);
  }
  if (!ok) return usage_error("bad value for %s", name);
  return 0;
}

/* Combinations; fills defaults.  0 or 2. */
static int check_opts(struct opts *o) {
  if (o->count && o->duration_ms) return usage_error("-n and -t exclude each other%s", "");
  if (o->sink) {
    if (!!o->decrypt != !!o->key) return usage_error("--decrypt and --key go together%s", "");
    return 0;
  }
  if (!o->count && !o->duration_ms) o->count = 1000;
  if (o->file && (o->size_set || o->mime_set))
    return usage_error("--file excludes --size and --mime%s", "");
  if (o->file) o->kind = SL_MSG_FILE;
  int pct = 0;
  for (const char *p = o->to; *p; p++)
    if (*p == '%') {
      if (p[1] != 'd') return usage_error("--to: only %%d may follow a %% in '%s'", o->to);
      pct++, p++;
    }
  if (pct > 1 || (pct == 0 && o->rcpts > 1)) return usage_error("--to needs one %%d for several recipients: '%s'", o->to);
  if (o->threads > o->sessions) o->threads = o->sessions;
  if (o->count && o->threads > o->count) o->threads = (unsigned)o->count;
  return 0;
}

/* The option getopt_long returned, spelt for a message ("-c", "--rate",
 * or the unknown word itself without any "=value"). */
static void option_name(int ch, int li, const char *word, char *name, size_t cap) {
  int val = ch == '?' || ch == ':' ? optopt : ch;
  if (li < 0 && val >= 256)
    for (int i = 0; long_opts[i].name; i++)
      if (long_opts[i].val == val) li = i;
  if (li >= 0) snprintf(name, cap, "--%s", long_opts[li].name);
  else if (val > 0) snprintf(name, cap, "-%c", val);
  else snprintf(name, cap, "%.*s", (int)strcspn(word, "="), word);
}

/* argv[1] == "sink" selects the sink.  Returns -1 to exit 0 (help,
 * version), 0 to run, else the exit status. */
static int parse_args(int argc, char **argv, struct opts *o) {
  *o = (struct opts){.reuse = true, .sessions = 10, .threads = 1, .rcpts = 1, .retries = 3,
                     .timeout_ms = 30000, .size = 4096, .kind = SL_MSG_TEXT, .from = "sealload@example.com",
                     .to = "rcpt%d@example.net", .helo = "sealload.test", .hostname = "sealload-sink.test"};
  if (argc > 1 && !strcmp(argv[1], "sink")) {
    o->sink = true;
    argv++, argc--;
  }
  opterr = 0;
  int ch, rc, li = -1;
  while ((ch = getopt_long(argc, argv, ":c:n:t:r:s:f:m:qhV", long_opts, &li)) != -1) {
    char name[40];
    option_name(ch, li, argv[optind - 1], name, sizeof name);
    li = -1;
    if (ch == 'h') return usage(stdout), -1;
    if (ch == 'V') return printf("sealload %s\n", SEALGATE_VERSION), -1;
    if (ch == ':') return usage_error("%s needs a value", name);
    if (ch == '?') return usage_error("unknown option '%s'", name);
    if ((rc = take_opt(o, ch, optarg, name)) != 0) return rc;
  }
  if (optind >= argc) return usage_error("HOST:PORT missing%s", "");
  if (optind < argc - 1) return usage_error("unexpected argument '%s'", argv[optind + 1]);
  o->target = argv[optind];
  return check_opts(o);
}

/* ---- shared run machinery --------------------------------------------------------- */

/* HOST:PORT or [V6]:PORT to an address (the first getaddrinfo gives). */
static int resolve(const char *target, bool passive, struct sockaddr_storage *out) {
  char host[256];
  const char *colon = strrchr(target, ':');
  if (!colon || colon == target || !colon[1] || (size_t)(colon - target) >= sizeof host) return SG_EINVAL;
  const char *h = target;
  size_t hlen = (size_t)(colon - target);
  if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') h++, hlen -= 2;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  uint64_t port;
  if (!parse_u64(colon + 1, 1, 65535, &port)) return SG_EINVAL;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = passive ? AI_PASSIVE : 0}, *res = NULL;
  if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res) return SG_ENOTFOUND;
  memcpy(out, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}

/* The main thread's loop: signals, the progress line, -t and -n for the
 * sink, and the workers reporting that they ended. */
struct run {
  uv_loop_t *loop;
  uv_signal_t sigint, sigterm;
  uv_timer_t progress, timer;
  uv_async_t done, limit;
  unsigned threads, finished;   /* finished: touched by workers, atomically */
  void **workers;
  void (*stop)(void *worker);
  bool stopping;
  /* progress */
  struct sl_client_stats *cstats;
  struct sl_sink_stats *sstats;
  uint64_t start_ns, last_acked, last_ns;
};

static void run_stop(struct run *r) {
  if (r->stopping) return;
  r->stopping = true;
  for (unsigned i = 0; i < r->threads; i++) r->stop(r->workers[i]);
}

static void on_signal(uv_signal_t *h, int sig) {
  (void)sig;
  run_stop(h->data);
}

static void on_timer(uv_timer_t *t) { run_stop(t->data); }
static void on_limit(uv_async_t *a) { run_stop(a->data); }

static void on_done(uv_async_t *a) {
  struct run *r = a->data;
  if (__atomic_load_n(&r->finished, __ATOMIC_ACQUIRE) < r->threads) return;
  uv_close((uv_handle_t *)&r->sigint, NULL);
  uv_close((uv_handle_t *)&r->sigterm, NULL);
  uv_close((uv_handle_t *)&r->progress, NULL);
  uv_close((uv_handle_t *)&r->timer, NULL);
  uv_close((uv_handle_t *)&r->done, NULL);
  uv_close((uv_handle_t *)&r->limit, NULL);
}

static void on_progress(uv_timer_t *t) {
  struct run *r = t->data;
  uint64_t sent = 0, acked = 0, failed = 0, now = uv_hrtime();
  for (unsigned i = 0; i < r->threads; i++) {
    sent += SL_READ(r->cstats[i].sent);
    acked += SL_READ(r->cstats[i].acked);
    failed += SL_READ(r->cstats[i].failed);
  }
  double dt = (double)(now - r->last_ns) / 1e9;
  printf("\r\033[K%7.1fs  sent %" PRIu64 "  acked %" PRIu64 "  failed %" PRIu64 "  %.0f msgs/s",
         (double)(now - r->start_ns) / 1e9, sent, acked, failed, dt > 0 ? (double)(acked - r->last_acked) / dt : 0);
  fflush(stdout);
  r->last_acked = acked;
  r->last_ns = now;
}

static void run_init(struct run *r, uv_loop_t *loop, unsigned threads, void **workers, void (*stop)(void *)) {
  memset(r, 0, sizeof *r);
  r->loop = loop;
  r->threads = threads;
  r->workers = workers;
  r->stop = stop;
  uv_signal_init(loop, &r->sigint);
  uv_signal_init(loop, &r->sigterm);
  uv_timer_init(loop, &r->progress);
  uv_timer_init(loop, &r->timer);
  uv_async_init(loop, &r->done, on_done);
  uv_async_init(loop, &r->limit, on_limit);
  r->sigint.data = r->sigterm.data = r->progress.data = r->timer.data = r->done.data = r->limit.data = r;
  uv_signal_start(&r->sigint, on_signal, SIGINT);
  uv_signal_start(&r->sigterm, on_signal, SIGTERM);
  r->start_ns = r->last_ns = uv_hrtime();
}

/* A worker thread: run, then tell the main loop. */
struct worker {
  struct run *run;
  pthread_t tid;
  void *impl;
  bool sink;
  uint64_t start_ns, end_ns;
};

static void *worker_main(void *arg) {
  struct worker *w = arg;
  if (w->sink) sl_sink_run(w->impl);
  else sl_client_run(w->impl, &w->start_ns, &w->end_ns);
  __atomic_fetch_add(&w->run->finished, 1, __ATOMIC_RELEASE);
  uv_async_send(&w->run->done);
  return NULL;
}

/* Start the threads, run the main loop until all ended, join them. */
static int run_workers(struct run *r, struct worker *w) {
  unsigned started = 0;
  int rc = 0;
  for (; started < r->threads; started++) {
    w[started].run = r;
    if (pthread_create(&w[started].tid, NULL, worker_main, &w[started]) != 0) {
      fprintf(stderr, "sealload: cannot start a thread\n");
      rc = 1;
      break;
    }
  }
  if (rc) { /* stop those that run; the rest never started */
    r->threads = started;
    run_stop(r);
    __atomic_fetch_add(&r->finished, 0, __ATOMIC_RELEASE);
    uv_async_send(&r->done);
  }
  uv_run(r->loop, UV_RUN_DEFAULT);
  for (unsigned i = 0; i < started; i++) pthread_join(w[i].tid, NULL);
  return rc;
}

/* ---- client ------------------------------------------------------------------------ */

/* --to with %d replaced by 1..n; NULL (and a message) for a bad address. */
static char **expand_rcpts(const struct opts *o) {
  char **r = calloc(o->rcpts, sizeof *r);
  const char *pct = strstr(o->to, "%d");
  for (unsigned i = 0; r && i < o->rcpts; i++) {
    char num[16];
    snprintf(num, sizeof num, "%u", i + 1);
    size_t pre = pct ? (size_t)(pct - o->to) : strlen(o->to), len = strlen(o->to) + strlen(num) + 1;
    if (!(r[i] = malloc(len))) break;
    snprintf(r[i], len, "%.*s%s%s", (int)pre, o->to, pct ? num : "", pct ? pct + 2 : "");
    if (!valid_addr(r[i])) {
      fprintf(stderr, "sealload: --to gives a bad address '%s'\n", r[i]);
      break;
    }
    if (i + 1 == o->rcpts) return r;
  }
  for (unsigned i = 0; r && i < o->rcpts; i++) free(r[i]);
  free(r);
  return NULL;
}

static void free_rcpts(char **r, unsigned n) {
  for (unsigned i = 0; r && i < n; i++) free(r[i]);
  free(r);
}

static void stop_client(void *w) { sl_client_stop(w); }

/* Worker i's share: sessions and count split as evenly as they go; in
 * open loop each worker takes every threads-th slot of the schedule. */
static void client_share(const struct opts *o, unsigned i, struct sl_client_opts *co) {
  unsigned t = o->threads;
  co->sessions = o->sessions / t + (i < o->sessions % t);
  co->count = o->count ? o->count / t + (i < o->count % t) : 0;
  co->duration_ms = o->duration_ms;
  co->rate = o->rate / t;
  co->offset_ns = o->rate > 0 ? (uint64_t)(1e9 * i / o->rate) : 0;
  co->worker = i;
}

static int client_exit(const struct sl_client_stats *s) {
  if (s->connections == 0) return 3;
  return s->failed || s->unsent ? 1 : 0;
}

/* Run the workers and print the report; the exit status. */
static int client_go(const struct opts *o, struct sl_client_opts *base, struct sl_client_stats *stats) {
  struct worker w[MAX_THREADS];
  void *impl[MAX_THREADS];
  memset(w, 0, sizeof w);
  unsigned made = 0;
  int rc = 0;
  for (; made < o->threads && rc == 0; made++) {
    struct sl_client_opts co = *base;
    client_share(o, made, &co);
    sl_report_client_init(&stats[made]);
    rc = sl_client_new(&co, &stats[made], (struct sl_client **)&impl[made]);
    w[made].impl = impl[made];
  }
  if (rc) {
    fprintf(stderr, "sealload: %s\n", sgerr_str(rc));
    for (unsigned i = 0; i + 1 < made; i++) sl_client_free(impl[i]);
    return 1;
  }
  uv_loop_t loop;
  struct run r;
  uv_loop_init(&loop);
  run_init(&r, &loop, o->threads, impl, stop_client);
  r.cstats = stats;
  if (!o->json && !o->quiet && isatty(STDOUT_FILENO)) uv_timer_start(&r.progress, on_progress, 1000, 1000);
  rc = run_workers(&r, w);
  uv_loop_close(&loop);
  if (!o->json && !o->quiet && isatty(STDOUT_FILENO)) printf("\r\033[K");
  uint64_t t0 = UINT64_MAX, t1 = 0;
  for (unsigned i = 0; i < o->threads; i++) {
    if (w[i].start_ns && w[i].start_ns < t0) t0 = w[i].start_ns;
    if (w[i].end_ns > t1) t1 = w[i].end_ns;
    if (i > 0) sl_report_client_merge(&stats[0], &stats[i]);
    sl_client_free(impl[i]);
  }
  struct sl_run_info ri = {.target = o->target, .sessions = o->sessions, .threads = o->threads,
                           .rcpts = o->rcpts, .rate = o->rate, .msg_size = base->msg->size,
                           .reuse = o->reuse, .elapsed_s = t1 > t0 ? (double)(t1 - t0) / 1e9 : 0};
  sl_report_client_print(stdout, &ri, &stats[0], o->json);
  return rc ? 1 : client_exit(&stats[0]);
}

static int run_client(const struct opts *o) {
  struct sockaddr_storage addr;
  int rc = resolve(o->target, false, &addr);
  if (rc == SG_EINVAL) return usage_error("not HOST:PORT: '%s'", o->target);
  if (rc) {
    fprintf(stderr, "sealload: cannot resolve %s\n", o->target);
    return 3;
  }
  uint32_t run_id = 0;
  if (getrandom(&run_id, sizeof run_id, 0) != sizeof run_id) run_id = (uint32_t)uv_hrtime() ^ (uint32_t)getpid();
  char **rcpts = expand_rcpts(o);
  if (!rcpts) return 2;
  struct sl_msg msg;
  char err[512];
  struct sl_msg_opts mo = {.kind = o->kind, .size = o->size, .file = o->file, .from = o->from, .to = rcpts[0],
                           .run = run_id};
  if (sl_msg_build(&mo, &msg, err, sizeof err) != 0) {
    fprintf(stderr, "sealload: %s\n", err);
    free_rcpts(rcpts, o->rcpts);
    return 1;
  }
  int fd = o->acked ? open(o->acked, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644) : -1;
  struct sl_client_stats *stats = calloc(o->threads, sizeof *stats);
  if ((o->acked && fd < 0) || !stats) {
    fprintf(stderr, "sealload: %s: %s\n", o->acked ? o->acked : "memory", strerror(errno));
    rc = 1;
  } else {
    struct sl_client_opts base = {.addr = (struct sockaddr *)&addr, .msg = &msg, .helo = o->helo, .from = o->from,
                                  .rcpts = rcpts, .n_rcpts = o->rcpts, .reuse = o->reuse, .retries = o->retries,
                                  .timeout_ms = o->timeout_ms, .acked_fd = fd};
    rc = client_go(o, &base, stats);
  }
  if (fd >= 0) close(fd);
  free(stats);
  sl_msg_free(&msg);
  free_rcpts(rcpts, o->rcpts);
  return rc;
}

/* ---- sink -------------------------------------------------------------------------- */

static void stop_sink(void *w) { sl_sink_stop(w); }
static void sink_limit(void *arg) { uv_async_send(&((struct run *)arg)->limit); }

static int sink_go(const struct opts *o, const struct sl_sink_opts *base, struct sl_sink_stats *stats) {
  struct worker w[MAX_THREADS];
  void *impl[MAX_THREADS];
  memset(w, 0, sizeof w);
  uv_loop_t loop;
  struct run r;
  uv_loop_init(&loop);
  run_init(&r, &loop, o->threads, impl, stop_sink);
  uint64_t total = 0;
  char err[512];
  int rc = 0;
  unsigned made = 0;
  for (; made < o->threads; made++) {
    struct sl_sink_opts so = *base;
    so.worker = made;
    so.total = &total;
    so.arg = &r;
    if ((rc = sl_sink_new(&so, &stats[made], (struct sl_sink **)&impl[made], err, sizeof err)) != 0) break;
    w[made].impl = impl[made];
    w[made].sink = true;
  }
  if (rc) {
    fprintf(stderr, "sealload: %s: %s\n", o->target, err);
    r.threads = made;
    run_stop(&r);
    __atomic_store_n(&r.finished, made, __ATOMIC_RELEASE);
    uv_async_send(&r.done);
    uv_run(&loop, UV_RUN_DEFAULT);
  } else {
    fprintf(stderr, "sealload sink: listening on %s\n", o->target);
    if (o->duration_ms) uv_timer_start(&r.timer, on_timer, o->duration_ms, 0);
    rc = run_workers(&r, w) ? SG_EIO : 0;
  }
  uv_loop_close(&loop);
  double elapsed = (double)(uv_hrtime() - r.start_ns) / 1e9;
  for (unsigned i = 0; i < made; i++) {
    if (i > 0) sl_report_sink_merge(&stats[0], &stats[i]);
    sl_sink_free(impl[i]);
  }
  if (rc) return 1;
  struct sl_run_info ri = {.target = o->target, .threads = o->threads, .verify = o->verify != NULL,
                           .decrypt = o->decrypt != NULL, .keep = o->keep != NULL, .elapsed_s = elapsed};
  sl_report_sink_print(stdout, &ri, &stats[0], o->json);
  return stats[0].verify_failed || stats[0].decrypt_failed || stats[0].keep_failed ? 1 : 0;
}

static int run_sink(const struct opts *o) {
  struct sockaddr_storage addr;
  int rc = resolve(o->target, true, &addr);
  if (rc == SG_EINVAL) return usage_error("not HOST:PORT: '%s'", o->target);
  if (rc) {
    fprintf(stderr, "sealload: cannot resolve %s\n", o->target);
    return 1;
  }
  struct sl_check *check = NULL;
  char err[512];
  if ((o->verify || o->decrypt) && sl_check_new(o->verify, o->decrypt, o->key, &check, err, sizeof err) != 0) {
    fprintf(stderr, "sealload: %s\n", err);
    return 1;
  }
  if (o->keep && mkdir(o->keep, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "sealload: %s: %s\n", o->keep, strerror(errno));
    sl_check_free(check);
    return 1;
  }
  struct sl_sink_stats *stats = calloc(o->threads, sizeof *stats);
  if (!stats) {
    sl_check_free(check);
    return 1;
  }
  struct sl_sink_opts base = {.addr = (struct sockaddr *)&addr, .reuseport = o->threads > 1,
                              .hostname = o->hostname, .check = check, .keep_dir = o->keep,
                              .limit = o->count, .on_limit = sink_limit};
  rc = sink_go(o, &base, stats);
  free(stats);
  sl_check_free(check);
  return rc;
}

int main(int argc, char **argv) {
  struct opts o;
  int rc = parse_args(argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  signal(SIGPIPE, SIG_IGN);
  return o.sink ? run_sink(&o) : run_client(&o);
}
