/* sl_report - see sl_report.h. */
#include "tools/sealload/sl_report.h"
#include "tools/json.h"

#include <inttypes.h>
#include <string.h>

const char *const sl_fail_names[SL_FAIL_N] = {"connect-failed", "timeout", "conn-lost", "protocol"};
static const char *const sl_fail_json[SL_FAIL_N] = {"connect_failed", "timeout", "conn_lost", "protocol"};

static const double sl_pcts[] = {50, 90, 99, 99.9};
static const char *const sl_pct_names[] = {"p50", "p90", "p99", "p99.9"};
#define N_PCTS (sizeof sl_pcts / sizeof sl_pcts[0])

void sl_report_client_init(struct sl_client_stats *s) {
  memset(s, 0, sizeof *s);
  sl_hist_init(&s->lat);
}

void sl_report_client_merge(struct sl_client_stats *dst, const struct sl_client_stats *src) {
  dst->sent += src->sent;
  dst->acked += src->acked;
  dst->failed += src->failed;
  dst->unsent += src->unsent;
  dst->bytes_acked += src->bytes_acked;
  dst->connections += src->connections;
  for (int i = 0; i < SL_FAIL_N; i++) dst->fail[i] += src->fail[i];
  for (int i = 0; i < 600; i++) dst->replies[i] += src->replies[i];
  sl_hist_merge(&dst->lat, &src->lat);
}


static double sl_report__per_s(uint64_t n, double secs) { return secs > 0 ? (double)n / secs : 0.0; }

static void sl_report__client_text(FILE *f, const struct sl_run_info *ri, const struct sl_client_stats *s) {
  fprintf(f, "sealload: %s, %u session%s%s, ", ri->target, ri->sessions, ri->sessions == 1 ? "" : "s",
          ri->reuse ? "" : " (no reuse)");
  if (ri->rate > 0) fprintf(f, "open loop at %.1f msgs/s", ri->rate);
  else fprintf(f, "closed loop");
  fprintf(f, ", %zu-octet messages, %u recipient%s\n", ri->msg_size, ri->rcpts, ri->rcpts == 1 ? "" : "s");
  fprintf(f, "messages: sent %" PRIu64 ", acked %" PRIu64 ", failed %" PRIu64 ", unsent %" PRIu64 " in %.3f s\n",
          s->sent, s->acked, s->failed, s->unsent, ri->elapsed_s);
  fprintf(f, "rate: %.1f msgs/s, %.0f bytes/s (acked)\n", sl_report__per_s(s->acked, ri->elapsed_s),
          sl_report__per_s(s->bytes_acked, ri->elapsed_s));
  fprintf(f, "replies:");
  const char *sep = " ";
  for (int c = 0; c < 600; c++)
    if (s->replies[c]) {
      fprintf(f, "%s%d: %" PRIu64, sep, c, s->replies[c]);
      sep = ", ";
    }
  for (int i = 0; i < SL_FAIL_N; i++) {
    fprintf(f, "%s%s: %" PRIu64, sep, sl_fail_names[i], s->fail[i]);
    sep = ", ";
  }
  fprintf(f, "\nlatency ms (%" PRIu64 " acked):", s->lat.count);
  for (size_t i = 0; i < N_PCTS; i++)
    fprintf(f, " %s %.3f", sl_pct_names[i], (double)sl_hist_percentile(&s->lat, sl_pcts[i]) / 1000.0);
  fprintf(f, " max %.3f\n", (double)s->lat.max / 1000.0);
}

static void sl_report__client_json(FILE *f, const struct sl_run_info *ri, const struct sl_client_stats *s) {
  fprintf(f, "{\"mode\":\"client\",\"target\":");
  tool_json_str(f, ri->target);
  fprintf(f, ",\"sessions\":%u,\"threads\":%u,\"rate\":%.3f,\"size\":%zu,\"rcpts\":%u,\"reuse\":%s", ri->sessions,
          ri->threads, ri->rate, ri->msg_size, ri->rcpts, ri->reuse ? "true" : "false");
  fprintf(f, ",\"elapsed_s\":%.6f,\"sent\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"failed\":%" PRIu64
             ",\"unsent\":%" PRIu64 ",\"connections\":%" PRIu64 ",\"bytes_acked\":%" PRIu64,
          ri->elapsed_s, s->sent, s->acked, s->failed, s->unsent, s->connections, s->bytes_acked);
  fprintf(f, ",\"msgs_per_s\":%.3f,\"bytes_per_s\":%.1f,\"replies\":{", sl_report__per_s(s->acked, ri->elapsed_s),
          sl_report__per_s(s->bytes_acked, ri->elapsed_s));
  const char *sep = "";
  for (int c = 0; c < 600; c++)
    if (s->replies[c]) {
      fprintf(f, "%s\"%d\":%" PRIu64, sep, c, s->replies[c]);
      sep = ",";
    }
  fprintf(f, "}");
  for (int i = 0; i < SL_FAIL_N; i++) fprintf(f, ",\"%s\":%" PRIu64, sl_fail_json[i], s->fail[i]);
  fprintf(f, ",\"latency_ms\":{\"count\":%" PRIu64 ",\"min\":%.3f,\"mean\":%.3f", s->lat.count,
          s->lat.count ? (double)s->lat.min / 1000.0 : 0.0, sl_hist_mean(&s->lat) / 1000.0);
  for (size_t i = 0; i < N_PCTS; i++)
    fprintf(f, ",\"%s\":%.3f", sl_pct_names[i], (double)sl_hist_percentile(&s->lat, sl_pcts[i]) / 1000.0);
  fprintf(f, ",\"max\":%.3f}}\n", (double)s->lat.max / 1000.0);
}

void sl_report_client_print(FILE *f, const struct sl_run_info *ri, const struct sl_client_stats *s, bool json) {
  if (json) sl_report__client_json(f, ri, s);
  else sl_report__client_text(f, ri, s);
  fflush(f);
}

void sl_report_sink_merge(struct sl_sink_stats *dst, const struct sl_sink_stats *src) {
  dst->connections += src->connections;
  dst->messages += src->messages;
  dst->bytes += src->bytes;
  dst->rcpts += src->rcpts;
  dst->verified += src->verified;
  dst->verify_failed += src->verify_failed;
  dst->decrypted += src->decrypted;
  dst->decrypt_failed += src->decrypt_failed;
  dst->kept += src->kept;
  dst->keep_failed += src->keep_failed;
  if (src->first_ns && (!dst->first_ns || src->first_ns < dst->first_ns)) dst->first_ns = src->first_ns;
  if (src->last_ns > dst->last_ns) dst->last_ns = src->last_ns;
}

/* Seconds from the first MAIL to the last end of data, the span the
 * rates are over (a sink waits idle before and after the load). */
static double sl_report__span(const struct sl_sink_stats *s) {
  return s->last_ns > s->first_ns ? (double)(s->last_ns - s->first_ns) / 1e9 : 0.0;
}

void sl_report_sink_print(FILE *f, const struct sl_run_info *ri, const struct sl_sink_stats *s, bool json) {
  double span = sl_report__span(s);
  if (json) {
    fprintf(f, "{\"mode\":\"sink\",\"listen\":");
    tool_json_str(f, ri->target);
    fprintf(f, ",\"threads\":%u,\"elapsed_s\":%.6f,\"active_s\":%.6f,\"connections\":%" PRIu64
               ",\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"rcpts\":%" PRIu64
               ",\"msgs_per_s\":%.3f,\"bytes_per_s\":%.1f",
            ri->threads, ri->elapsed_s, span, s->connections, s->messages, s->bytes, s->rcpts,
            sl_report__per_s(s->messages, span), sl_report__per_s(s->bytes, span));
    if (ri->verify) fprintf(f, ",\"verified\":%" PRIu64 ",\"verify_failed\":%" PRIu64, s->verified, s->verify_failed);
    if (ri->decrypt)
      fprintf(f, ",\"decrypted\":%" PRIu64 ",\"decrypt_failed\":%" PRIu64, s->decrypted, s->decrypt_failed);
    if (ri->keep) fprintf(f, ",\"kept\":%" PRIu64 ",\"keep_failed\":%" PRIu64, s->kept, s->keep_failed);
    fprintf(f, "}\n");
  } else {
    fprintf(f, "sealload sink: %s, %" PRIu64 " messages, %" PRIu64 " bytes, %" PRIu64 " recipients, %" PRIu64
               " connections in %.3f s\n",
            ri->target, s->messages, s->bytes, s->rcpts, s->connections, ri->elapsed_s);
    fprintf(f, "rate: %.1f msgs/s, %.0f bytes/s over %.3f s from the first MAIL to the last message\n",
            sl_report__per_s(s->messages, span), sl_report__per_s(s->bytes, span), span);
    if (ri->verify) fprintf(f, "verify: %" PRIu64 " verified, %" PRIu64 " failed\n", s->verified, s->verify_failed);
    if (ri->decrypt)
      fprintf(f, "decrypt: %" PRIu64 " decrypted, %" PRIu64 " failed\n", s->decrypted, s->decrypt_failed);
    if (ri->keep) fprintf(f, "keep: %" PRIu64 " written, %" PRIu64 " failed\n", s->kept, s->keep_failed);
  }
  fflush(f);
}
