// micro - Google Benchmark micro-benchmarks of the relay core's per-message
// hot paths, each printed beside the raw limit it is compared with,
// measured in the same run (memcpy for the DATA parser, zlib crc32 for the
// spool record encoder), and the ratio.
//
// Run: build/bin/sealgate-micro [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>
#include <zlib.h>

extern "C" {
#include "core/buf.h"
#include "core/smtp_data.h"
#include "core/smtp_parser.h"
#include "core/spool_record.h"
}

namespace {

// A message of 78-octet lines, some needing dot-unstuffing, CRLF, ending
// with the terminator, like a client sends it.
std::string wire_message(size_t size) {
  std::string m = "From: a@example.com\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n";
  while (m.size() < size) {
    m += (m.size() % 7 == 0) ? ".." : "ab";
    m += std::string(74, 'x') + "\r\n";
  }
  return m + ".\r\n";
}

void BM_smtp_data_feed(benchmark::State &st) {
  std::string in = wire_message(static_cast<size_t>(st.range(0)));
  struct buf out = BUF_INIT;
  for (auto _ : st) {
    struct smtp_data d;
    smtp_data_init(&d, UINT64_MAX, 65536);
    buf_reset(&out);
    bool done = false;
    benchmark::DoNotOptimize(smtp_data_feed(&d, in.data(), in.size(), &out, &done));
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(in.size()));
  buf_free(&out);
}
BENCHMARK(BM_smtp_data_feed)->Arg(4096)->Arg(65536);

// Limit: copying the same bytes once (the parser must at least do this).
void BM_limit_memcpy(benchmark::State &st) {
  std::string in = wire_message(static_cast<size_t>(st.range(0)));
  std::vector<char> out(in.size());
  for (auto _ : st) {
    memcpy(out.data(), in.data(), in.size());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(in.size()));
}
BENCHMARK(BM_limit_memcpy)->Arg(4096)->Arg(65536);

void BM_spool_record_encode(benchmark::State &st) {
  std::string data(static_cast<size_t>(st.range(0)), 'x');
  char id[] = "1A21F42B07401B1FE9", from[] = "alice@example.com", rcpt[] = "bob@example.net";
  char *rcpts[] = {rcpt};
  char ls[] = "main", hop[] = "127.0.0.1:2526", client[] = "127.0.0.1";
  struct spool_envelope env = {};
  memcpy(env.queue_id, id, sizeof id);
  env.arrival_ms = 1;
  env.sender = from;
  env.rcpts = rcpts;
  env.n_rcpts = 1;
  env.listener = ls;
  env.next_hop = hop;
  env.client = client;
  struct buf head = BUF_INIT, tail = BUF_INIT;
  for (auto _ : st) {
    buf_reset(&head);
    buf_reset(&tail);
    benchmark::DoNotOptimize(spool_record_encode(&env, data.data(), data.size(), &head, &tail));
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(data.size()));
  buf_free(&head);
  buf_free(&tail);
}
BENCHMARK(BM_spool_record_encode)->Arg(4096)->Arg(65536);

// Limit: the checksum over the same bytes, which the encoder cannot avoid.
void BM_limit_crc32(benchmark::State &st) {
  std::string data(static_cast<size_t>(st.range(0)), 'x');
  for (auto _ : st)
    benchmark::DoNotOptimize(crc32(0, reinterpret_cast<const Bytef *>(data.data()), static_cast<uInt>(data.size())));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(data.size()));
}
BENCHMARK(BM_limit_crc32)->Arg(4096)->Arg(65536);

void BM_smtp_parse_mail(benchmark::State &st) {
  const char arg[] = "FROM:<alice.sender@example.com> SIZE=4096 BODY=8BITMIME";
  struct smtp_mail_args a;
  struct smtp_error e;
  for (auto _ : st) benchmark::DoNotOptimize(smtp_parse_mail(arg, sizeof arg - 1, &a, &e));
}
BENCHMARK(BM_smtp_parse_mail);

// Collects bytes/s per benchmark so main can print each figure beside its limit.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> rate;
  void ReportRuns(const std::vector<Run> &runs) override {
    for (const auto &r : runs) {
      auto it = r.counters.find("bytes_per_second");
      if (it != r.counters.end()) rate[r.benchmark_name()] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

}  // namespace

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("sealgate-micro %s\n", SEALGATE_VERSION);
      return 0;
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  RatioReporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  const char *pairs[][2] = {{"BM_smtp_data_feed", "BM_limit_memcpy"},
                            {"BM_spool_record_encode", "BM_limit_crc32"}};
  std::printf("\n%-28s %12s %12s %7s\n", "figure / limit (same run)", "MB/s", "limit MB/s", "ratio");
  for (auto &p : pairs)
    for (const char *arg : {"/4096", "/65536"}) {
      std::string f = std::string(p[0]) + arg, l = std::string(p[1]) + arg;
      if (!rep.rate.count(f) || !rep.rate.count(l)) continue;
      std::printf("%-28s %12.0f %12.0f %7.2f\n", f.c_str(), rep.rate[f] / 1e6, rep.rate[l] / 1e6,
                  rep.rate[f] / rep.rate[l]);
    }
  return 0;
}
