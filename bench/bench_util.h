// bench_util.h - what the Google Benchmark programs bench_hsm, bench_incoming,
// bench_keycache and bench_smime share, so their summaries are made alike:
//
//   Collector        the console reporter that also keeps each benchmark's
//                    items/s (the median when repetitions are asked for) or
//                    its error, per name and thread count, for the summary;
//   ratio, verdict   the "API/s beside limit/s" table's ratio column and
//                    its ">= 0.90: PASS" target column;
//   TempDir          a scratch folder under /tmp, removed at teardown, and
//                    in it a throwaway SoftHSM2 token (its files, or the
//                    token initialised and opened in process);
//   run              main()'s order: flags, setup, registration, the run,
//                    the summary, teardown.
//
// Header-only (each program is one translation unit, linked on its own).
// Nothing here reads untrusted input: the names and figures come from the
// program itself.  Strings are returned by value; a Collector owns its
// maps; TempDir's paths live as long as it does, so hsm_params made from it
// must not outlive it.  hsm/ is reached only from TempDir::open_token, an
// inline function: a program that never calls it (bench_keycache) does not
// need to link sg_hsm.
#ifndef SEALGATE_BENCH_UTIL_H
#define SEALGATE_BENCH_UTIL_H

#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

extern "C" {
#include "hsm/hsm.h"
}

namespace bench_util {

// The throwaway tokens' PINs: nothing secret is ever stored under them.
constexpr const char *kUserPin = "12345678";
constexpr const char *kSoPin = "87654321";

// items_per_second per benchmark name and thread count (the median when
// --benchmark_repetitions asks for aggregates, else the one run), or the
// error of a run that failed.
class Collector : public benchmark::ConsoleReporter {
 public:
  using Key = std::pair<std::string, int>;
  // A custom reporter does not see --benchmark_color: colour only a terminal.
  Collector() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run> &runs) override {
    for (const auto &r : runs) {
      Key k(r.run_name.function_name, static_cast<int>(r.threads));
      if (r.error_occurred) {
        error_[k] = r.error_message;
        continue;
      }
      bool med = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      auto it = r.counters.find("items_per_second");
      if ((r.run_type == Run::RT_Iteration || med) && it != r.counters.end())
        (med ? median_ : rate_)[k] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  // Rate of name at threads (1 for a benchmark without ->Threads());
  // negative if it did not run or failed.
  double get(const std::string &name, int threads = 1) const {
    auto m = median_.find({name, threads});
    if (m != median_.end()) return m->second;
    auto it = rate_.find({name, threads});
    return it == rate_.end() ? -1 : it->second;
  }
  // Why get() has no figure: the run's error, or "not run".
  std::string why(const std::string &name, int threads) const {
    auto it = error_.find({name, threads});
    return it == error_.end() ? "not run" : it->second;
  }
  const std::map<Key, std::string> &errors() const { return error_; }

 private:
  std::map<Key, double> rate_, median_;
  std::map<Key, std::string> error_;
};

// api / limit to two places, "-" when either figure is missing.
inline std::string ratio(double api, double limit) {
  char b[16] = "-";
  if (api >= 0 && limit > 0) std::snprintf(b, sizeof b, "%.2f", api / limit);
  return b;
}

// ">= 0.90: PASS" when api / limit meets target, FAIL when not, or
// "FAIL (no figure)" when either figure is missing.
inline std::string verdict(double api, double limit, double target) {
  char b[48];
  std::snprintf(b, sizeof b, ">= %.2f: %s", target,
                api >= 0 && limit > 0 ? (api / limit >= target ? "PASS" : "FAIL") : "FAIL (no figure)");
  return b;
}

// 4096 -> "4KiB", 1048576 -> "1MiB": the size part of benchmark names.
inline std::string size_name(size_t n) {
  return n >= 1024 * 1024 ? std::to_string(n >> 20) + "MiB" : std::to_string(n >> 10) + "KiB";
}

// text as the whole of a new file of mode (created so, never wider).
inline bool write_file(const std::string &path, const std::string &text, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fchmod(fd, mode) == 0;
  return close(fd) == 0 && ok;
}

// A folder of the program's own under /tmp, removed with its contents by
// remove(); optionally holding a throwaway SoftHSM2 token.
struct TempDir {
  char path[64] = "";
  std::string conf, pin_file; // set by softhsm()

  // mkdtemp of tmpl ("/tmp/sgbX-XXXXXX"); false with errno set.
  bool make(const char *tmpl) {
    std::snprintf(path, sizeof path, "%s", tmpl);
    return mkdtemp(path) != nullptr;
  }
  // tokens/, softhsm2.conf (file object store, errors only) and a PIN
  // file holding kUserPin, and SOFTHSM2_CONF pointing at the configuration
  // (process-global: call while single-threaded).  nullptr, or what failed
  // with errno saying why.
  const char *softhsm() {
    std::string d = path;
    conf = d + "/softhsm2.conf";
    pin_file = d + "/pin";
    if (mkdir((d + "/tokens").c_str(), 0700) != 0) return "mkdir tokens";
    if (!write_file(conf, "directories.tokendir = " + d + "/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
                    0600) ||
        !write_file(pin_file, std::string(kUserPin) + "\n", 0600))
      return "write";
    if (setenv("SOFTHSM2_CONF", conf.c_str(), 1) != 0) return "setenv SOFTHSM2_CONF";
    return nullptr;
  }
  // Parameters for the token label in this folder's SoftHSM2 (remote mode
  // also needs server_address).
  hsm_params params(hsm_mode mode, const char *token) const {
    hsm_params p = {};
    p.mode = mode;
    p.token = token;
    p.pin_file = pin_file.c_str();
    p.softhsm_conf = conf.c_str();
    return p;
  }
  // make(tmpl), softhsm(), then the token label initialised (kSoPin,
  // kUserPin) and opened in process into *h_out.  nullptr, or what failed
  // with err saying why.
  const char *open_token(const char *tmpl, const char *token, hsm **h_out, char *err, size_t errlen) {
    const char *what = !make(tmpl) ? "mkdtemp" : softhsm();
    if (what) {
      std::snprintf(err, errlen, "%s", std::strerror(errno));
      return what;
    }
    hsm_params p = params(HSM_INPROCESS, token);
    if (hsm_token_init(&p, kSoPin, kUserPin, err, errlen)) return "hsm_token_init";
    if (hsm_open(&p, h_out, err, errlen)) return "hsm_open";
    return nullptr;
  }
  // rm -rf, if make() was called; prog names the program in a complaint.
  void remove(const char *prog) const {
    if (path[0] && std::system((std::string("rm -rf '") + path + "'").c_str()) != 0)
      std::fprintf(stderr, "%s: could not remove %s\n", prog, path);
  }
};

// main() of each program, after its own flags: Google Benchmark's flags
// (parsed only: no threads yet), setup (on failure teardown and exit 1),
// registration (after setup: names may depend on it), the run through a
// Collector, the summary from it, teardown.
inline int run(int argc, char **argv, int (*setup)(), void (*register_all)(),
               void (*print_summary)(const Collector &), void (*teardown)()) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  if (setup() != 0) {
    teardown();
    return 1;
  }
  register_all();
  Collector c;
  benchmark::RunSpecifiedBenchmarks(&c);
  print_summary(c);
  teardown();
  return 0;
}

} // namespace bench_util

#endif
