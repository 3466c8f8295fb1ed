/* log - see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_min = LOG_LVL_INFO;
static atomic_int log_use_syslog;
static atomic_int log_pid; /* cached: the daemon never forks after its first line */

static int log__pid(void) {
  int p = atomic_load_explicit(&log_pid, memory_order_relaxed);
  if (p == 0) atomic_store_explicit(&log_pid, p = (int)getpid(), memory_order_relaxed);
  return p;
}

void log_set_level(enum log_level min) { log_min = min; }

void log_set_syslog(int enabled, const char *ident) {
  /* openlog() keeps the pointer: the ident must outlive the config it came from. */
  static char log_ident[64];
  atomic_store(&log_use_syslog, 0);
  closelog();
  if (!enabled) return;
  snprintf(log_ident, sizeof log_ident, "%s", ident);
  openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
  atomic_store(&log_use_syslog, 1);
}

void log_msg(enum log_level lvl, const char *fmt, ...) {
  static const char *names[] = {"debug", "info", "warning", "error"};
  if (lvl < log_min) return;
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ sealgate[%d] %s: ",
                ts.tv_nsec / 1000000, log__pid(), names[lvl]);
  int head = n;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  n += m;
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
  if (atomic_load(&log_use_syslog)) {
    static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
    syslog(prio[lvl], "%.*s", n - head - 1, line + head);
  }
}

char *log_safe(char *out, size_t cap, const char *in, size_t n) {
  size_t j = 0;
  if (cap == 0) return out;
  for (size_t i = 0; i < n && j + 1 < cap; i++) {
    unsigned char c = (unsigned char)in[i];
    out[j++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
  }
  out[j] = '\0';
  return out;
}
