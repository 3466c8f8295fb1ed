// bench_hsm - Google Benchmark: RSA-2048 and EC P-256 signatures per second
// through our hsm API (hsm_worker -> libp11 EVP_PKEY -> PKCS#11) in both
// token modes, at 1 and 2 threads, each beside its raw limit measured in
// the same run on the same token: C_SignInit + C_Sign straight into the
// module, with the same mechanism libp11 uses (CKM_RSA_PKCS over a SHA-256
// DigestInfo; CKM_ECDSA over a 32-byte digest).
//
//   in-process   SoftHSM2 loaded here.  Limit: raw C_Sign on SoftHSM2.
//                Target: API >= 90 % of raw (the API may cost little).
//   remote       p11-kit-client.so -> `p11-kit server` (hsm_server), one
//                connection per thread.  Limit: raw C_Sign through
//                p11-kit-client.so, one connection per thread.  Target:
//                API at 2 threads >= 1.6x API at 1 thread (one connection
//                per worker is what makes remote signing scale).
//
// Everything is set up in main() while the process is single-threaded:
// a throwaway SoftHSM2 token in a temp folder, the two keys (hsm_keygen),
// the token server (hsm_server_start forks its keeper and must run before
// any thread exists; SOFTHSM2_CONF and P11_KIT_SERVER_ADDRESS are
// process-global), the workers and the raw sessions, one per thread slot,
// so the timed loops only sign.  A missed target is printed, not turned
// into an exit status: this is a benchmark, not a test.
//
// Run: build/bin/bench_hsm [--benchmark_filter=...] [--benchmark_min_time=2]
#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <dlfcn.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

extern "C" {
#include "core/sgerr.h"
#include "hsm/hsm.h"
#include "hsm/hsm_server.h"
}

#include "bench_util.h"

// Last: p11-kit's pkcs11.h (compat mode) #defines common words such as
// "value" and "count" to the standard field names, which would rename
// members of Google Benchmark and the standard library.  We use the
// standard names (pValue, ulValueLen, ...), so the aliases can go.
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#undef value
#undef value_len
#undef count
#undef parameter
#undef parameter_len
#undef params
#undef reserved

namespace {

using bench_util::Collector;
using bench_util::kSoPin;
using bench_util::kUserPin;

constexpr int kMaxThreads = 2;
constexpr const char *kToken = "sgbench";
const char *const kLabel[2] = {"bench-rsa", "bench-ec"};
const char *const kKeyName[2] = {"RSA-2048", "P-256"};
enum Kind { K_RSA = 0, K_EC = 1 };

// DER prefix of a SHA-256 DigestInfo (RFC 8017 9.2 note 1): what
// RSA_sign builds before libp11's RSA method runs CKM_RSA_PKCS.
const unsigned char kSha256Prefix[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                         0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                         0x01, 0x05, 0x00, 0x04, 0x20};

// One thread's raw view of the token: a session (logged in) and the two
// private key handles, found once.
struct RawConn {
  CK_FUNCTION_LIST *fn = nullptr;
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE key[2] = {CK_INVALID_HANDLE, CK_INVALID_HANDLE};
};

struct Setup {
  bench_util::TempDir tmp;
  std::string run_dir;
  hsm_server *server = nullptr;
  hsm *h_in = nullptr, *h_remote = nullptr;
  hsm_keyref ref[2] = {};
  hsm_worker *w_in[kMaxThreads] = {}, *w_remote[kMaxThreads] = {};
  CK_FUNCTION_LIST *softhsm = nullptr; // p11_kit_module_load, shared with h_in
  void *client_dl = nullptr;           // p11-kit-client.so
  RawConn raw_in[kMaxThreads], raw_remote[kMaxThreads];
} g;

hsm_params params(hsm_mode mode) {
  hsm_params p = g.tmp.params(mode, kToken);
  p.server_address = g.server ? hsm_server_address(g.server) : nullptr;
  return p;
}

// ---- raw PKCS#11 -------------------------------------------------------

std::string ckr(const char *what, CK_RV rv) {
  char b[96];
  std::snprintf(b, sizeof b, "%s: CKR 0x%lx", what, static_cast<unsigned long>(rv));
  return b;
}

CK_RV find_key(RawConn &c, const char *label, CK_OBJECT_HANDLE *out) {
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof cls},
                          {CKA_LABEL, const_cast<char *>(label), std::strlen(label)}};
  CK_RV rv = c.fn->C_FindObjectsInit(c.session, tmpl, 2);
  if (rv != CKR_OK) return rv;
  CK_ULONG n = 0;
  rv = c.fn->C_FindObjects(c.session, out, 1, &n);
  c.fn->C_FindObjectsFinal(c.session);
  return rv != CKR_OK ? rv : n == 1 ? CKR_OK : CKR_KEY_HANDLE_INVALID;
}

// Initialise fn (already initialised is fine: the in-process SoftHSM2 is
// shared with h_in), open a session on the token, log in (already logged
// in is fine: login state belongs to the token) and find both keys.
bool raw_open(CK_FUNCTION_LIST *fn, RawConn &c, std::string &err) {
  c.fn = fn;
  CK_C_INITIALIZE_ARGS args = {};
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = fn->C_Initialize(&args);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) return err = ckr("C_Initialize", rv), false;
  CK_SLOT_ID slots[16];
  CK_ULONG n = 16;
  if ((rv = fn->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) return err = ckr("C_GetSlotList", rv), false;
  unsigned char want[32];
  std::memset(want, ' ', sizeof want);
  std::memcpy(want, kToken, std::strlen(kToken));
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    if (fn->C_GetTokenInfo(slots[i], &ti) != CKR_OK || std::memcmp(ti.label, want, 32) != 0) continue;
    rv = fn->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &c.session);
    if (rv != CKR_OK) return err = ckr("C_OpenSession", rv), false;
    rv = fn->C_Login(c.session, CKU_USER, reinterpret_cast<CK_UTF8CHAR *>(const_cast<char *>(kUserPin)),
                     std::strlen(kUserPin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) return err = ckr("C_Login", rv), false;
    for (int k = 0; k < 2; k++)
      if ((rv = find_key(c, kLabel[k], &c.key[k])) != CKR_OK) return err = ckr("find key", rv), false;
    return true;
  }
  err = std::string("token ") + kToken + " not found";
  return false;
}

// One signature, exactly as libp11 makes it: C_SignInit, then C_Sign into
// a buffer of the right size (no length query).
CK_RV raw_sign(const RawConn &c, Kind k, const unsigned char *in, CK_ULONG inlen, unsigned char *sig,
               CK_ULONG *siglen) {
  CK_MECHANISM m = {k == K_RSA ? CKM_RSA_PKCS : CKM_ECDSA, nullptr, 0};
  CK_RV rv = c.fn->C_SignInit(c.session, &m, c.key[k]);
  if (rv != CKR_OK) return rv;
  return c.fn->C_Sign(c.session, const_cast<unsigned char *>(in), inlen, sig, siglen);
}

// ---- the benchmarks ------------------------------------------------------

void digest_input(Kind k, std::vector<unsigned char> &in) {
  unsigned char digest[32];
  std::memset(digest, 0x5a, sizeof digest);
  in.clear();
  if (k == K_RSA) in.assign(kSha256Prefix, kSha256Prefix + sizeof kSha256Prefix);
  in.insert(in.end(), digest, digest + sizeof digest);
}

void BM_raw(benchmark::State &st, bool remote, Kind k) {
  const RawConn &c = (remote ? g.raw_remote : g.raw_in)[st.thread_index()];
  std::vector<unsigned char> in;
  digest_input(k, in);
  unsigned char sig[512];
  for (auto _ : st) {
    CK_ULONG siglen = k == K_RSA ? 256 : 64;
    CK_RV rv = raw_sign(c, k, in.data(), in.size(), sig, &siglen);
    if (rv != CKR_OK) {
      st.SkipWithError(ckr("C_Sign", rv).c_str());
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
}

void BM_api(benchmark::State &st, bool remote, Kind k) {
  hsm_worker *w = (remote ? g.w_remote : g.w_in)[st.thread_index()];
  EVP_PKEY *key = nullptr;
  int rc = hsm_worker_pkey(w, &g.ref[k], &key);
  if (rc) {
    st.SkipWithError((std::string("hsm_worker_pkey: ") + sgerr_str(rc)).c_str());
    for (auto _ : st) {
    }
    return;
  }
  unsigned char digest[32], sig[512];
  std::memset(digest, 0x5a, sizeof digest);
  for (auto _ : st) {
    // A context per signature, as the S/MIME path makes one per message.
    size_t siglen = sizeof sig;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, nullptr);
    bool ok = ctx && EVP_PKEY_sign_init(ctx) > 0 &&
              (k != K_RSA || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0) &&
              EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0 &&
              EVP_PKEY_sign(ctx, sig, &siglen, digest, sizeof digest) > 0;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
      // Name the reason: a dead connection, or the token (through the
      // RPC) refusing the operation itself.
      int chk = hsm_worker_check(w);
      std::string why = std::string("EVP_PKEY_sign failed through ") + (remote ? "p11-kit-client" : "SoftHSM2") +
                        (chk == SG_ETEMP ? ": token server unreachable"
                                         : ": the connection is healthy, the token or RPC refused the operation");
      if (remote && k == K_EC) why += " (raw CKM_ECDSA through the p11-kit RPC)";
      st.SkipWithError(why.c_str());
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
}

std::string bench_name(bool api, bool remote, Kind k) {
  return std::string(api ? "api" : "raw_C_Sign") + "/" + (remote ? "remote" : "inprocess") + "/" +
         kKeyName[k];
}

std::string fmt_rate(double r) {
  char b[32];
  if (r < 0) return "-";
  std::snprintf(b, sizeof b, "%.0f", r);
  return b;
}

void print_summary(const Collector &rep) {
  std::printf("\nsignatures/s, API beside raw C_Sign on the same token (same run, %ld cores)\n",
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%-9s %-10s %7s %10s %12s %7s  %s\n", "key", "mode", "threads", "API/s", "raw/s", "ratio",
              "target");
  for (int k = 0; k < 2; k++)
    for (bool remote : {false, true})
      for (int t = 1; t <= kMaxThreads; t++) {
        std::string an = bench_name(true, remote, Kind(k)), rn = bench_name(false, remote, Kind(k));
        double a = rep.get(an, t), r = rep.get(rn, t);
        std::string target = remote ? "" : bench_util::verdict(a, r, 0.90);
        std::printf("%-9s %-10s %7d %10s %12s %7s  %s\n", kKeyName[k], remote ? "remote" : "inprocess", t,
                    fmt_rate(a).c_str(), fmt_rate(r).c_str(), bench_util::ratio(a, r).c_str(), target.c_str());
        if (a < 0) std::printf("          API: %s\n", rep.why(an, t).c_str());
        if (r < 0) std::printf("          raw: %s\n", rep.why(rn, t).c_str());
      }
  std::printf("\nremote scaling, 2 threads / 1 thread (limit: raw C_Sign through p11-kit-client, same run)\n");
  for (int k = 0; k < 2; k++) {
    std::string an = bench_name(true, true, Kind(k)), rn = bench_name(false, true, Kind(k));
    double a1 = rep.get(an, 1), a2 = rep.get(an, 2), r1 = rep.get(rn, 1), r2 = rep.get(rn, 2);
    char api[16] = "-", raw[16] = "-";
    if (a1 > 0 && a2 >= 0) std::snprintf(api, sizeof api, "%.2fx", a2 / a1);
    if (r1 > 0 && r2 >= 0) std::snprintf(raw, sizeof raw, "%.2fx", r2 / r1);
    std::printf("%-9s API %7s   raw %7s   target API >= 1.6x: %s\n", kKeyName[k], api, raw,
                a1 > 0 && a2 >= 0 ? (a2 / a1 >= 1.6 ? "PASS" : "FAIL") : "FAIL (no figure)");
  }
}

// ---- setup and teardown ------------------------------------------------------

int fail(const char *what, const char *err) {
  std::fprintf(stderr, "bench_hsm: %s: %s\n", what, err);
  return 1;
}

int setup() {
  if (!g.tmp.make("/tmp/sgb-XXXXXX")) return fail("mkdtemp", std::strerror(errno)); // short: socket paths max 107 bytes
  g.run_dir = std::string(g.tmp.path) + "/run";
  // SOFTHSM2_CONF is process-global: set once here while single-threaded
  // (hsm_open sets it too).
  if (const char *what = g.tmp.softhsm()) return fail(what, std::strerror(errno));

  char err[512] = "";
  hsm_params p = params(HSM_INPROCESS);
  if (hsm_token_init(&p, kSoPin, kUserPin, err, sizeof err)) return fail("hsm_token_init", err);
  // Keys are made with the module loaded here, which is closed again
  // before the keeper forks: it should not inherit a live module.
  hsm *h = nullptr;
  if (hsm_open(&p, &h, err, sizeof err)) return fail("hsm_open (in-process, keygen)", err);
  int rc = hsm_keygen(h, kLabel[K_RSA], HSM_KEY_RSA, 2048, &g.ref[K_RSA], err, sizeof err);
  if (rc == 0) rc = hsm_keygen(h, kLabel[K_EC], HSM_KEY_EC, 256, &g.ref[K_EC], err, sizeof err);
  hsm_close(h);
  if (rc) return fail("hsm_keygen", err);

  hsm_server_params sp = {};
  sp.run_dir = g.run_dir.c_str();
  sp.softhsm_conf = g.tmp.conf.c_str();
  sp.token = kToken;
  if (hsm_server_start(&sp, 15000, &g.server, err, sizeof err)) return fail("hsm_server_start", err);

  p = params(HSM_INPROCESS);
  if (hsm_open(&p, &g.h_in, err, sizeof err)) return fail("hsm_open (in-process)", err);
  p = params(HSM_REMOTE); // sets P11_KIT_SERVER_ADDRESS for p11-kit-client.so below too
  if (hsm_open(&p, &g.h_remote, err, sizeof err)) return fail("hsm_open (remote)", err);
  for (int t = 0; t < kMaxThreads; t++) {
    if (hsm_worker_new(g.h_in, &g.w_in[t], err, sizeof err)) return fail("hsm_worker_new (in-process)", err);
    if (hsm_worker_new(g.h_remote, &g.w_remote[t], err, sizeof err)) return fail("hsm_worker_new (remote)", err);
  }

  // Raw, in-process: the same SoftHSM2 instance h_in uses (one per process).
  g.softhsm = p11_kit_module_load(HSM_SOFTHSM2_MODULE, P11_KIT_MODULE_UNMANAGED | P11_KIT_MODULE_CRITICAL);
  if (!g.softhsm) return fail("p11_kit_module_load " HSM_SOFTHSM2_MODULE, p11_kit_message());
  std::string e;
  for (int t = 0; t < kMaxThreads; t++)
    if (!raw_open(g.softhsm, g.raw_in[t], e)) return fail("raw SoftHSM2", e.c_str());
  // Raw, remote: each C_GetFunctionList of p11-kit-client.so is a new
  // connection (its own p11-kit-remote process), as each remote worker has.
  g.client_dl = dlopen(HSM_P11KIT_CLIENT_MODULE, RTLD_NOW | RTLD_LOCAL);
  if (!g.client_dl) return fail("dlopen", dlerror());
  auto get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(g.client_dl, "C_GetFunctionList"));
  if (!get) return fail("dlsym C_GetFunctionList", HSM_P11KIT_CLIENT_MODULE);
  for (int t = 0; t < kMaxThreads; t++) {
    CK_FUNCTION_LIST *fn = nullptr;
    CK_RV rv = get(&fn);
    if (rv != CKR_OK) return fail("p11-kit-client C_GetFunctionList", ckr("", rv).c_str());
    if (!raw_open(fn, g.raw_remote[t], e)) return fail("raw p11-kit-client", e.c_str());
  }
  return 0;
}

// Reverse order: raw sessions, workers, the modules, the server, the folder.
// Raw in-process sessions are closed but the module is not finalized here:
// h_in's libp11 context and admin side finalize the shared SoftHSM2.
void teardown() {
  for (int t = 0; t < kMaxThreads; t++) {
    RawConn &r = g.raw_remote[t];
    if (r.fn) {
      if (r.session != CK_INVALID_HANDLE) r.fn->C_CloseSession(r.session);
      r.fn->C_Finalize(nullptr);
    }
    RawConn &i = g.raw_in[t];
    if (i.fn && i.session != CK_INVALID_HANDLE) i.fn->C_CloseSession(i.session);
  }
  if (g.softhsm) p11_kit_module_release(g.softhsm);
  for (int t = 0; t < kMaxThreads; t++) {
    hsm_worker_free(g.w_in[t]);
    hsm_worker_free(g.w_remote[t]);
  }
  hsm_close(g.h_in);
  hsm_close(g.h_remote);
  if (g.server) hsm_server_stop(g.server);
  // p11-kit-client.so stays mapped: it registers exit-time cleanup.
  g.tmp.remove("bench_hsm");
}

// Raw before API within each mode, so each figure follows its limit.
void register_all() {
  for (bool remote : {false, true})
    for (int k = 0; k < 2; k++)
      for (bool api : {false, true}) {
        Kind kind = Kind(k);
        auto *b = api ? benchmark::RegisterBenchmark(bench_name(api, remote, kind).c_str(), BM_api, remote, kind)
                      : benchmark::RegisterBenchmark(bench_name(api, remote, kind).c_str(), BM_raw, remote, kind);
        b->Threads(1)->Threads(2)->UseRealTime();
      }
}

} // namespace

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("bench_hsm %s\n", SEALGATE_VERSION);
      return 0;
    }
  // Setup (the token server's fork included) runs before any thread exists.
  return bench_util::run(argc, argv, setup, register_all, print_summary, teardown);
}
