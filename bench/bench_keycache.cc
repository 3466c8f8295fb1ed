// bench_keycache - Google Benchmark: recipient-key lookups per second through
// crypto/keycache.h (the lock-free cds_lfht cache, RCU readers) beside a
// mutex-protected hash table doing the same work, at 1 and 2 threads.
//
// Setup: a real LMDB key store in /tmp/sgbk-XXXXXX (removed at the end) with
// KEYS certificates (one EC key signs them all; "userN@dM.example", one
// import transaction), the cache filled with every address, so every
// measured lookup is a hit of the e-mail tier.  Each thread walks a
// precomputed array of random addresses (no RNG in the loop), starting at
// its own offset; `now` is read once per run.  A lookup includes what a
// caller pays: the address validated and normalised (domain lower-cased),
// hashed, found, checked for freshness, the certificate up-referenced, and
// the caller's X509_free.
//
// Baseline (`mutex`): a plain chained hash table (16,384 buckets, std::hash
// of the normalised address) guarded by one pthread_mutex, holding the same
// certificates; per lookup the same normalisation, the table walk under
// the lock, the same freshness check and up-reference, the caller's free.
//
// Target (issue #5): at least 10 million lookups/s per core, scaling
// linearly.  The summary prints per-thread rates, lock-free/mutex ratios
// and the 2-thread/1-thread scaling; a missed target is printed, not
// turned into an exit status.
//
// Run: build/bin/bench_keycache [--benchmark_min_time=2] [--benchmark_repetitions=3]
#include <benchmark/benchmark.h>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

extern "C" {
#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/keycache.h"
#include "crypto/keystore.h"
}

#include "bench_util.h"

namespace {

using bench_util::Collector;

constexpr size_t kKeys = 10000;
constexpr size_t kStream = 1 << 16; // precomputed random addresses per run
constexpr size_t kBuckets = 1 << 14;
constexpr double kTargetPerCore = 10e6;

struct {
  bench_util::TempDir tmp;
  keystore *ks = nullptr;
  keycache *cache = nullptr;
  std::vector<std::string> addr;
  std::vector<const char *> stream; // kStream random picks of addr
} g;

int fail(const char *what, const char *why) {
  std::fprintf(stderr, "bench_keycache: %s: %s\n", what, why);
  return 1;
}

// ---- the baseline: one mutex around a chained hash table ----------------------------

class MutexTable {
 public:
  struct Node {
    std::string key;
    X509 *cert;
    time_t asked, expires;
    Node *next;
  };
  ~MutexTable() {
    for (Node *head : bucket_)
      while (head) {
        Node *n = head->next;
        X509_free(head->cert);
        delete head;
        head = n;
      }
  }
  // Takes the caller's reference to cert.
  void put(const char *address, X509 *cert, time_t now) {
    char key[512];
    size_t len = normalise(address, key);
    Node *&head = bucket_[hash(key, len)];
    head = new Node{std::string(key, len), cert, now, now + 60, head};
  }
  // Same contract as keycache_lookup for a cached address.
  int lookup(const char *address, time_t now, X509 **cert_out) {
    *cert_out = nullptr;
    char key[512];
    size_t len = normalise(address, key);
    if (!len) return SG_EINVAL;
    size_t h = hash(key, len);
    int rc = SG_ENOTFOUND;
    pthread_mutex_lock(&lock_);
    for (Node *n = bucket_[h]; n; n = n->next)
      if (n->key.size() == len && std::memcmp(n->key.data(), key, len) == 0 && n->asked <= now && now < n->expires) {
        X509_up_ref(n->cert);
        *cert_out = n->cert;
        rc = 0;
        break;
      }
    pthread_mutex_unlock(&lock_);
    return rc;
  }

 private:
  // keycache's normalisation: local part as given, domain lower-cased; 0 if
  // the address has no usable '@' or is too long for the buffer.
  static size_t normalise(const char *a, char *out) {
    size_t len = std::strlen(a);
    const char *at = static_cast<const char *>(memrchr(a, '@', len));
    if (!at || at == a || at == a + len - 1 || len >= 512) return 0;
    size_t local = static_cast<size_t>(at - a);
    std::memcpy(out, a, local + 1);
    for (size_t i = local + 1; i <= len; i++)
      out[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(a[i])));
    return len;
  }
  static size_t hash(const char *k, size_t len) { return std::hash<std::string_view>{}({k, len}) & (kBuckets - 1); }
  std::vector<Node *> bucket_ = std::vector<Node *>(kBuckets, nullptr);
  pthread_mutex_t lock_ = PTHREAD_MUTEX_INITIALIZER;
};

MutexTable *g_mutex_table;

// ---- the benchmarks ------------------------------------------------------------------

template <typename Lookup>
void run_lookups(benchmark::State &st, Lookup lookup) {
  time_t now = std::time(nullptr);
  size_t i = static_cast<size_t>(st.thread_index()) * (kStream / 2);
  for (auto _ : st) {
    X509 *x = nullptr;
    if (lookup(g.stream[i++ & (kStream - 1)], now, &x) != 0) {
      st.SkipWithError("a cached key was not found");
      break;
    }
    benchmark::DoNotOptimize(x);
    X509_free(x);
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

// Each benchmark thread is an RCU reader: registered for the run.
void BM_lockfree(benchmark::State &st) {
  keycache_thread_online();
  run_lookups(st, [](const char *a, time_t now, X509 **x) { return keycache_lookup(g.cache, a, now, x, nullptr); });
  keycache_thread_offline();
}

void BM_mutex(benchmark::State &st) {
  run_lookups(st, [](const char *a, time_t now, X509 **x) { return g_mutex_table->lookup(a, now, x); });
}

// ---- summary ---------------------------------------------------------------------------

void print_summary(const Collector &c) {
  std::printf("\nlookups/s, %zu cached keys, random order (same run, %ld cores)\n", kKeys,
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%-9s %3s %12s %12s %9s\n", "table", "thr", "total/s", "per thread", "vs mutex");
  for (int t = 1; t <= 2; t++) {
    double lf = c.get("lockfree", t), mx = c.get("mutex", t);
    std::printf("%-9s %3d %12.0f %12.0f %8.2fx\n", "lockfree", t, lf, lf / t, mx > 0 ? lf / mx : 0.0);
    std::printf("%-9s %3d %12.0f %12.0f %9s\n", "mutex", t, mx, mx / t, "");
  }
  double lf1 = c.get("lockfree", 1), lf2 = c.get("lockfree", 2);
  double mx1 = c.get("mutex", 1), mx2 = c.get("mutex", 2);
  std::printf("scaling 2 threads / 1 thread: lockfree %.2fx, mutex %.2fx\n", lf1 > 0 ? lf2 / lf1 : 0.0,
              mx1 > 0 ? mx2 / mx1 : 0.0);
  bool per_core = lf1 >= kTargetPerCore && lf2 / 2 >= kTargetPerCore;
  std::printf("target >= %.0f M lookups/s per core: %s (1 thread %.1f M, 2 threads %.1f M per thread)\n",
              kTargetPerCore / 1e6, per_core ? "PASS" : "FAIL", lf1 / 1e6, lf2 / 2e6);
  std::printf("target linear scaling (2 threads >= 1.8x 1 thread): %s\n",
              lf1 > 0 && lf2 / lf1 >= 1.8 ? "PASS" : "FAIL");
  for (const auto &e : c.errors())
    std::printf("%s/%d threads: %s\n", e.first.first.c_str(), e.first.second, e.second.c_str());
}

// ---- setup -------------------------------------------------------------------------------

// KEYS certificates as concatenated PEM, one EC P-256 key signing all
// (the cache never looks at keys; RSA would take minutes to set up).
bool write_certs(FILE *f) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  bool ok = k != nullptr;
  for (size_t i = 0; ok && i < kKeys; i++) {
    char cn[32], email[64];
    std::snprintf(cn, sizeof cn, "user%zu", i);
    std::snprintf(email, sizeof email, "user%zu@d%zu.example", i, i % 100);
    const char *emails[] = {email};
    cert_request r = {};
    r.cn = cn;
    r.days = 30;
    r.san_emails = emails;
    r.n_san_emails = 1;
    X509 *x = nullptr;
    char err[256];
    ok = cert_create_selfsigned(&r, k, k, &x, err, sizeof err) == 0 && PEM_write_X509(f, x) == 1;
    X509_free(x);
    g.addr.push_back(email);
  }
  EVP_PKEY_free(k);
  return ok;
}

int setup() {
  if (!g.tmp.make("/tmp/sgbk-XXXXXX")) return fail("mkdtemp", std::strerror(errno));
  char err[256] = "";
  std::string keys = std::string(g.tmp.path) + "/keys";
  if (keystore_open(keys.c_str(), true, &g.ks, err, sizeof err)) return fail("keystore", err);
  FILE *f = std::tmpfile();
  size_t n = 0;
  if (!f || !write_certs(f)) return fail("certificates", "could not make them");
  std::rewind(f);
  int rc = keystore_pubkey_import(g.ks, f, "bench", nullptr, nullptr, &n, err, sizeof err);
  std::fclose(f);
  if (rc || n != kKeys) return fail("keystore_pubkey_import", err);
  if (keycache_new(g.ks, 0, &g.cache)) return fail("keycache_new", "out of memory");
  keycache_thread_online();
  g_mutex_table = new MutexTable;
  time_t now = std::time(nullptr);
  for (const auto &a : g.addr) {
    X509 *x = nullptr;
    if (keycache_lookup(g.cache, a.c_str(), now, &x, nullptr)) return fail("keycache_lookup", a.c_str());
    g_mutex_table->put(a.c_str(), x, now); // the table takes this reference
  }
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<size_t> pick(0, kKeys - 1);
  for (size_t i = 0; i < kStream; i++) g.stream.push_back(g.addr[pick(rng)].c_str());
  return 0;
}

void teardown() {
  delete g_mutex_table;
  keycache_free(g.cache);
  keycache_thread_offline();
  keystore_close(g.ks);
  g.tmp.remove("bench_keycache");
}

void register_all() {
  benchmark::RegisterBenchmark("lockfree", BM_lockfree)->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("mutex", BM_mutex)->Threads(1)->Threads(2)->UseRealTime();
}

} // namespace

int main(int argc, char **argv) { return bench_util::run(argc, argv, setup, register_all, print_summary, teardown); }
