// bench_smime - Google Benchmark: S/MIME messages per second through
// crypto/smime.h (sign detached, encrypt AES-256-CBC, sign-then-encrypt,
// triple wrap) at 4 KiB, 64 KiB and 1 MiB entities, 1 and 2 threads, with
// the RSA-2048 signing key (a) in software (an OpenSSL EVP_PKEY) and (b) in
// a SoftHSM2 token loaded in process (hsm_worker_pkey, one worker per
// thread).  Beside each, in the same run and on the same key object, its
// crypto-only limit: per message exactly the primitives the message needs
// and nothing else, with the same OpenSSL:
//
//   sign     SHA-256 of the entity + one EVP_PKEY_sign of a SHA-256 digest
//   encrypt  one RSA-2048 public encrypt of 32 bytes (the content key)
//            + AES-256-CBC of the entity + base64 (EVP_EncodeBlock) of the
//            ciphertext
//   sign-encrypt, triple: the steps above in sequence, each over the size
//            the real layer has (measured once at start: the signed entity
//            is bigger than the entity, the encrypted one bigger again)
//
// Targets (ratio = API / limit), at 4 KiB: sign >= 0.90, sign-encrypt >=
// 0.90, encrypt >= 0.50.  The recipient key is in software in both
// backends (it is someone else's public key); encrypt-only does not touch
// the signing key, so it is measured once.  A missed target is printed,
// not turned into an exit status.
//
// Run: build/bin/bench_smime [--benchmark_filter=...] [--benchmark_min_time=2]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

extern "C" {
#include "core/buf.h"
#include "core/sgerr.h"
#include "crypto/smime.h"
#include "hsm/hsm.h"
}

#include "bench_util.h"

namespace {

using bench_util::Collector;
using bench_util::size_name;

constexpr int kMaxThreads = 2;
constexpr const char *kToken = "sgbench-smime";
const size_t kSizes[] = {4096, 64 * 1024, 1024 * 1024};
enum Op { SIGN, ENCRYPT, SIGN_ENCRYPT, TRIPLE };
const char *const kOpName[] = {"sign", "encrypt", "sign_encrypt", "triple"};
enum Backend { SOFT = 0, TOKEN = 1 };
const char *const kBackendName[] = {"software", "softhsm2"};

struct Setup {
  bench_util::TempDir tmp;
  EVP_PKEY *sign_key = nullptr, *rcpt_key = nullptr;
  X509 *sign_cert = nullptr, *rcpt_cert = nullptr;
  STACK_OF(X509) *rcpts = nullptr;
  hsm *h = nullptr;
  hsm_keyref ref = {};
  hsm_worker *w[kMaxThreads] = {};
  EVP_PKEY *token_key[kMaxThreads] = {}; // borrowed from w[i]
  std::map<size_t, std::string> entity;
  // Sizes of the inner layers per entity size: detached-signed entity,
  // and that encrypted (the input of the triple's outer signature).
  std::map<size_t, std::pair<size_t, size_t>> layer;
} g;

int fail(const char *what, const char *why) {
  std::fprintf(stderr, "bench_smime: %s: %s\n", what, why);
  return 1;
}

// A 7-bit entity of n bytes, as crypto/mime.c makes them: header, blank
// line, 76-character CRLF lines.
std::string make_entity(size_t n) {
  std::string e = "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n";
  for (size_t i = 0; e.size() + 78 <= n; i++) e += std::string(76, static_cast<char>('a' + i % 26)) + "\r\n";
  e.append(n - e.size() >= 2 ? n - e.size() - 2 : 0, 'z');
  if (e.size() + 2 <= n) e += "\r\n";
  return e;
}

X509 *make_cert(EVP_PKEY *key, const char *cn) {
  X509 *x = X509_new();
  X509_NAME *name = X509_NAME_new();
  bool ok = x && name && X509_set_version(x, 2) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char *>(cn), -1,
                                       -1, 0) == 1 &&
            X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
            X509_gmtime_adj(X509_getm_notBefore(x), 0) && X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
            X509_set_pubkey(x, key) == 1 && X509_sign(x, key, EVP_sha256()) > 0;
  X509_NAME_free(name);
  if (!ok) {
    X509_free(x);
    return nullptr;
  }
  return x;
}

EVP_PKEY *key_for(Backend b, int thread) { return b == SOFT ? g.sign_key : g.token_key[thread]; }

// ---- the API ----------------------------------------------------------------

// One message of op through smime.h; out and tmp are the thread's buffers.
int api_message(Op op, const smime_signer &s, const std::string &e, buf *out, buf *t1, buf *t2, char *err,
                size_t errlen) {
  buf_reset(out);
  buf_reset(t1);
  buf_reset(t2);
  switch (op) {
  case SIGN:
    return smime_sign(e.data(), e.size(), &s, SMIME_SIGN_DETACHED, out, err, errlen);
  case ENCRYPT:
    return smime_encrypt(e.data(), e.size(), g.rcpts, SMIME_AES256_CBC, SMIME_KT_PKCS1, out, err, errlen);
  case SIGN_ENCRYPT: {
    int rc = smime_sign(e.data(), e.size(), &s, SMIME_SIGN_DETACHED, t1, err, errlen);
    return rc ? rc : smime_encrypt(t1->data, t1->len, g.rcpts, SMIME_AES256_CBC, SMIME_KT_PKCS1, out, err, errlen);
  }
  case TRIPLE: {
    int rc = smime_sign(e.data(), e.size(), &s, SMIME_SIGN_DETACHED, t1, err, errlen);
    if (!rc) rc = smime_encrypt(t1->data, t1->len, g.rcpts, SMIME_AES256_CBC, SMIME_KT_PKCS1, t2, err, errlen);
    return rc ? rc : smime_sign(t2->data, t2->len, &s, SMIME_SIGN_DETACHED, out, err, errlen);
  }
  }
  return SG_EINVAL;
}

void BM_api(benchmark::State &st, Op op, Backend b, size_t size) {
  smime_signer s = {};
  s.key = key_for(b, st.thread_index());
  s.cert = g.sign_cert;
  const std::string &e = g.entity[size];
  buf out = BUF_INIT, t1 = BUF_INIT, t2 = BUF_INIT;
  char err[256] = "";
  for (auto _ : st) {
    int rc = api_message(op, s, e, &out, &t1, &t2, err, sizeof err);
    if (rc) {
      st.SkipWithError(err);
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
  buf_free(&out);
  buf_free(&t1);
  buf_free(&t2);
}

// ---- the limit ------------------------------------------------------------------

// The primitives, each with a fresh context as a message would have.
struct Scratch {
  std::vector<unsigned char> ct, b64;
};

bool limit_sign(EVP_PKEY *key, const void *data, size_t n) {
  unsigned char md[32], sig[512];
  size_t siglen = sizeof sig;
  if (EVP_Digest(data, n, md, nullptr, EVP_sha256(), nullptr) != 1) return false;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, nullptr);
  bool ok = ctx && EVP_PKEY_sign_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0 &&
            EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0 &&
            EVP_PKEY_sign(ctx, sig, &siglen, md, sizeof md) > 0;
  EVP_PKEY_CTX_free(ctx);
  return ok;
}

bool limit_encrypt(const void *data, size_t n, Scratch &sc) {
  unsigned char cek[32], iv[16], wrapped[512];
  std::memset(cek, 0x11, sizeof cek);
  std::memset(iv, 0x22, sizeof iv);
  size_t wlen = sizeof wrapped;
  EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(g.rcpt_key, nullptr);
  bool ok = pctx && EVP_PKEY_encrypt_init(pctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0 &&
            EVP_PKEY_encrypt(pctx, wrapped, &wlen, cek, sizeof cek) > 0;
  EVP_PKEY_CTX_free(pctx);
  sc.ct.resize(n + 32);
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int l1 = 0, l2 = 0;
  ok = ok && c && EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), nullptr, cek, iv) == 1 &&
       EVP_EncryptUpdate(c, sc.ct.data(), &l1, static_cast<const unsigned char *>(data), static_cast<int>(n)) == 1 &&
       EVP_EncryptFinal_ex(c, sc.ct.data() + l1, &l2) == 1;
  EVP_CIPHER_CTX_free(c);
  size_t ctlen = static_cast<size_t>(l1 + l2);
  sc.b64.resize(ctlen / 3 * 4 + 8);
  return ok && EVP_EncodeBlock(sc.b64.data(), sc.ct.data(), static_cast<int>(ctlen)) > 0;
}

bool limit_message(Op op, EVP_PKEY *key, size_t size, const std::string &e, Scratch &sc,
                   const std::vector<char> &l1, const std::vector<char> &l2) {
  (void)size;
  switch (op) {
  case SIGN:
    return limit_sign(key, e.data(), e.size());
  case ENCRYPT:
    return limit_encrypt(e.data(), e.size(), sc);
  case SIGN_ENCRYPT:
    return limit_sign(key, e.data(), e.size()) && limit_encrypt(l1.data(), l1.size(), sc);
  case TRIPLE:
    return limit_sign(key, e.data(), e.size()) && limit_encrypt(l1.data(), l1.size(), sc) &&
           limit_sign(key, l2.data(), l2.size());
  }
  return false;
}

void BM_limit(benchmark::State &st, Op op, Backend b, size_t size) {
  EVP_PKEY *key = key_for(b, st.thread_index());
  const std::string &e = g.entity[size];
  // Stand-ins of the real inner layers' sizes (their content does not
  // change the cost of the primitives).
  std::vector<char> l1(g.layer[size].first, 'x'), l2(g.layer[size].second, 'y');
  Scratch sc;
  for (auto _ : st) {
    if (!limit_message(op, key, size, e, sc, l1, l2)) {
      st.SkipWithError("a primitive failed");
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
}

// ---- names, results, summary -------------------------------------------------------

std::string bench_name(bool api, Op op, Backend b, size_t size) {
  return std::string(api ? "api" : "limit") + "/" + kOpName[op] + "/" + (op == ENCRYPT ? "-" : kBackendName[b]) +
         "/" + size_name(size);
}

double target_for(Op op) { return op == ENCRYPT ? 0.50 : op == TRIPLE ? 0.0 : 0.90; }

void print_summary(const Collector &c) {
  std::printf("\nmessages/s, API beside its crypto-only limit on the same key backend (same run, %ld cores)\n",
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%-13s %-9s %-6s %3s %10s %10s %6s  %s\n", "op", "key", "size", "thr", "API/s", "limit/s", "ratio",
              "target (4 KiB)");
  for (int o = SIGN; o <= TRIPLE; o++)
    for (int b = SOFT; b <= TOKEN; b++) {
      if (o == ENCRYPT && b == TOKEN) continue;
      for (size_t size : kSizes)
        for (int t = 1; t <= kMaxThreads; t++) {
          Op op = Op(o);
          double a = c.get(bench_name(true, op, Backend(b), size), t);
          double l = c.get(bench_name(false, op, Backend(b), size), t);
          std::string target = size == 4096 && target_for(op) > 0 ? bench_util::verdict(a, l, target_for(op)) : "";
          std::printf("%-13s %-9s %-6s %3d %10.0f %10.0f %6s  %s\n", kOpName[op],
                      op == ENCRYPT ? "-" : kBackendName[b], size_name(size).c_str(), t, a, l,
                      bench_util::ratio(a, l).c_str(), target.c_str());
        }
    }
}

// ---- setup --------------------------------------------------------------------------

int setup_token() {
  char err[512] = "";
  if (const char *what = g.tmp.open_token("/tmp/sgbs-XXXXXX", kToken, &g.h, err, sizeof err)) return fail(what, err);
  // The same key as the software backend, so one certificate serves both.
  if (hsm_import_key(g.h, "bench-smime", g.sign_key, &g.ref, err, sizeof err)) return fail("hsm_import_key", err);
  for (int t = 0; t < kMaxThreads; t++) {
    if (hsm_worker_new(g.h, &g.w[t], err, sizeof err)) return fail("hsm_worker_new", err);
    if (hsm_worker_pkey(g.w[t], &g.ref, &g.token_key[t])) return fail("hsm_worker_pkey", "no key");
  }
  return 0;
}

int setup() {
  g.sign_key = EVP_RSA_gen(2048);
  g.rcpt_key = EVP_RSA_gen(2048);
  if (!g.sign_key || !g.rcpt_key) return fail("EVP_RSA_gen", "failed");
  g.sign_cert = make_cert(g.sign_key, "bench signer");
  g.rcpt_cert = make_cert(g.rcpt_key, "bench recipient");
  g.rcpts = sk_X509_new_null();
  if (!g.sign_cert || !g.rcpt_cert || !g.rcpts || sk_X509_push(g.rcpts, g.rcpt_cert) <= 0)
    return fail("certificates", "could not make them");
  if (setup_token()) return 1;
  // Entities, and the sizes of the layers a message of each size has.
  smime_signer s = {};
  s.key = g.sign_key;
  s.cert = g.sign_cert;
  for (size_t n : kSizes) {
    g.entity[n] = make_entity(n);
    buf out = BUF_INIT, t1 = BUF_INIT, t2 = BUF_INIT;
    char err[256] = "";
    if (api_message(TRIPLE, s, g.entity[n], &out, &t1, &t2, err, sizeof err)) return fail("smime", err);
    g.layer[n] = {t1.len, t2.len};
    buf_free(&out);
    buf_free(&t1);
    buf_free(&t2);
  }
  return 0;
}

void teardown() {
  for (int t = 0; t < kMaxThreads; t++) hsm_worker_free(g.w[t]);
  hsm_close(g.h);
  sk_X509_free(g.rcpts);
  X509_free(g.sign_cert);
  X509_free(g.rcpt_cert);
  EVP_PKEY_free(g.sign_key);
  EVP_PKEY_free(g.rcpt_key);
  g.tmp.remove("bench_smime");
}

// The limit right before its API figure, so each pair shares conditions.
void register_all() {
  for (int o = SIGN; o <= TRIPLE; o++)
    for (int b = SOFT; b <= TOKEN; b++) {
      if (o == ENCRYPT && b == TOKEN) continue;
      for (size_t size : kSizes)
        for (bool api : {false, true}) {
          Op op = Op(o);
          Backend be = Backend(b);
          auto *bm = api ? benchmark::RegisterBenchmark(bench_name(true, op, be, size).c_str(), BM_api, op, be, size)
                         : benchmark::RegisterBenchmark(bench_name(false, op, be, size).c_str(), BM_limit, op, be,
                                                        size);
          bm->Threads(1)->Threads(2)->UseRealTime();
        }
    }
}

} // namespace

int main(int argc, char **argv) { return bench_util::run(argc, argv, setup, register_all, print_summary, teardown); }
