/*
 * log - one line per event on stderr (and syslog when enabled).
 *
 * Thread-safe: each line is formatted into a local buffer and written with a
 * single write(2), so lines from shards never interleave.  Message text is
 * the caller's; values that came from the network must be passed through
 * log_safe() first so a peer cannot forge log lines with CR/LF.
 */
#ifndef SEALGATE_LOG_H
#define SEALGATE_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERR };

void log_set_level(enum log_level min);
void log_set_syslog(int enabled, const char *ident);
void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)

/* Copy at most n bytes of untrusted text into out (cap bytes, NUL-terminated),
 * replacing control characters and non-ASCII with '?'.  Returns out. */
char *log_safe(char *out, size_t cap, const char *in, size_t n);

#endif
