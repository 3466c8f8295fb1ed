// bench_incoming - Google Benchmark: incoming S/MIME messages per second,
// one thread, at 4 KiB, 64 KiB and 1 MiB of content:
//
//   decrypt  crypto/decrypt.h's decrypt_cms of an EnvelopedData
//            (AES-256-CBC) and an AuthEnvelopedData (AES-256-GCM) to an
//            RSA-2048 key in a SoftHSM2 token loaded in process (PKCS#1
//            v1.5 key transport), into a fresh memory BIO per message as
//            crypto/incoming.c does (and into a null BIO: decrypt alone);
//   verify   crypto/verify.h's verify_detached of a detached SignedData
//            (made once at setup with CMS_sign and a software RSA-2048
//            key, CMS_DETACHED|CMS_BINARY, signed attributes): signature,
//            the signer trusted as a managed key of a real LMDB key store,
//            validity, key usage, From; every message must PASS.
//
// Beside each, its raw limit measured in the same run by this program
// with bare EVP calls (a fresh context per message, as a message has):
//
//   decrypt  1 / (1/R + 1/A(size)): R = RSA-2048 PKCS#1 v1.5 decryptions/s
//            of a 32-byte key with the token key, A = AES-256 decryptions/s
//            of that size (CBC with its padding, GCM with its tag check);
//   verify   1 / (1/V + 1/S(size)): V = RSA-2048 PKCS#1 v1.5 verifications/s
//            of a SHA-256 digest, S = SHA-256 digests/s of that size.
//
// Each limit is measured right before its API figure, all in CPU time
// (one thread, the token in process: nothing waits on another process).
// The summary prints API/s, limit/s, their ratio and the RSA rate used.
// No targets yet: the figures are the baseline of issue #5.
//
// Run: build/bin/bench_incoming [--benchmark_filter=...] [--benchmark_repetitions=3]
#include <benchmark/benchmark.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <openssl/buffer.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

extern "C" {
#include "core/sgerr.h"
#include "crypto/cert.h"
#include "crypto/decrypt.h"
#include "crypto/keystore.h"
#include "crypto/verify.h"
#include "hsm/hsm.h"
}

#include "bench_util.h"

namespace {

using bench_util::Collector;
using bench_util::size_name;

constexpr const char *kToken = "sgbench-incoming";
const size_t kSizes[] = {4096, 64 * 1024, 1024 * 1024};
enum Cipher { CBC = 0, GCM = 1 };
const char *const kCipherName[] = {"aes256cbc", "aes256gcm"};

using Bytes = std::vector<unsigned char>;

struct Setup {
  bench_util::TempDir tmp;
  hsm *h = nullptr;
  hsm_worker *w = nullptr;
  hsm_keyref ref = {};
  EVP_PKEY *token_key = nullptr; // borrowed from w
  EVP_PKEY *token_pub = nullptr;
  X509 *org_cert = nullptr;
  EVP_PKEY *sign_key = nullptr; // software: the sender's
  X509 *sign_cert = nullptr;
  keystore *ks = nullptr;       // the sender's certificate as a managed key
  verify_trust *trust = nullptr;
  std::map<size_t, Bytes> content;
  std::map<std::pair<int, size_t>, Bytes> message; // (cipher, size) -> DER
  std::map<size_t, Bytes> signature;               // size -> detached SignedData DER
  // Raw-limit inputs: the content key wrapped to the token key, and the
  // content encrypted under it (CBC: ciphertext; GCM: ciphertext + tag).
  unsigned char cek[32] = {}, iv[16] = {};
  Bytes wrapped;
  std::map<std::pair<int, size_t>, Bytes> raw_ct;
  std::map<size_t, std::array<unsigned char, 16>> tags; // GCM, per size
  Bytes sig_of_digest; // PKCS#1 v1.5 signature of a SHA-256 digest
} g;

int fail(const char *what, const char *why) {
  std::fprintf(stderr, "bench_incoming: %s: %s\n", what, why);
  return 1;
}

Bytes der_of(CMS_ContentInfo *cms) {
  unsigned char *p = nullptr;
  int n = i2d_CMS_ContentInfo(cms, &p);
  Bytes b;
  if (n > 0) b.assign(p, p + n);
  OPENSSL_free(p);
  return b;
}

// ---- the API ----------------------------------------------------------------


// sink: a fresh memory BIO per message, decrypt_sink_mem as crypto/incoming.c gives it, or a
// null BIO: decrypt_cms's own cost.
void BM_decrypt(benchmark::State &st, Cipher c, size_t size, bool mem_sink) {
  const Bytes &der = g.message[{c, size}];
  decrypt_key key = {&g.ref, g.org_cert};
  char detail[256];
  for (auto _ : st) {
    BIO *sink = mem_sink ? decrypt_sink_mem(der.size()) : BIO_new(BIO_s_null());
    int rc = decrypt_cms(g.w, der.data(), der.size(), &key, 1, nullptr, sink, nullptr, detail, sizeof detail);
    bool whole = !mem_sink || BIO_ctrl_pending(sink) == size;
    BIO_free(sink);
    if (rc != 0 || !whole) {
      st.SkipWithError(detail);
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
}

// The gateway's own verify path (crypto/verify.c), a fresh result per message.
void BM_verify(benchmark::State &st, size_t size) {
  const Bytes &sig = g.signature[size];
  const Bytes &data = g.content[size];
  verify_params p = {};
  p.trust = g.trust;
  p.from = "sender@example.net";
  p.now = time(nullptr);
  char err[256] = "";
  for (auto _ : st) {
    verify_result res;
    int rc = verify_detached(reinterpret_cast<const char *>(data.data()), data.size(), sig.data(), sig.size(), &p,
                             &res, err, sizeof err);
    bool ok = rc == 0 && res.status == VERIFY_PASS;
    if (!ok && rc == 0) std::snprintf(err, sizeof err, "%s: %s", res.reason, res.detail);
    verify_result_free(&res);
    if (!ok) {
      st.SkipWithError(err);
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
}

// ---- the raw primitives ---------------------------------------------------------

void BM_raw_rsa_decrypt(benchmark::State &st) {
  unsigned char out[512];
  for (auto _ : st) {
    size_t outlen = sizeof out;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(g.token_key, nullptr);
    bool ok = ctx && EVP_PKEY_decrypt_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0 &&
              EVP_PKEY_decrypt(ctx, out, &outlen, g.wrapped.data(), g.wrapped.size()) > 0 && outlen == 32;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
      st.SkipWithError("token RSA decryption failed");
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
}

// AES-256 decryption of one message's content, padding or tag checked.
bool aes_decrypt(Cipher c, size_t size, Bytes &out) {
  const Bytes &ct = g.raw_ct[{c, size}];
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int l1 = 0, l2 = 0;
  bool ok = ctx && EVP_DecryptInit_ex(ctx, c == CBC ? EVP_aes_256_cbc() : EVP_aes_256_gcm(), nullptr, nullptr,
                                      nullptr) == 1;
  if (ok && c == GCM)
    ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, g.tags[size].data()) == 1;
  ok = ok && EVP_DecryptInit_ex(ctx, nullptr, nullptr, g.cek, g.iv) == 1 &&
       EVP_DecryptUpdate(ctx, out.data(), &l1, ct.data(), static_cast<int>(ct.size())) == 1 &&
       EVP_DecryptFinal_ex(ctx, out.data() + l1, &l2) == 1 && static_cast<size_t>(l1 + l2) == size;
  EVP_CIPHER_CTX_free(ctx);
  return ok;
}

void BM_raw_aes(benchmark::State &st, Cipher c, size_t size) {
  Bytes out(size + 32);
  for (auto _ : st)
    if (!aes_decrypt(c, size, out)) {
      st.SkipWithError("AES decryption failed");
      break;
    }
  st.SetItemsProcessed(st.iterations());
}

void BM_raw_rsa_verify(benchmark::State &st) {
  unsigned char md[32];
  std::memset(md, 0x5a, sizeof md);
  EVP_PKEY *pub = X509_get0_pubkey(g.sign_cert);
  for (auto _ : st) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pub, nullptr);
    bool ok = ctx && EVP_PKEY_verify_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0 &&
              EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0 &&
              EVP_PKEY_verify(ctx, g.sig_of_digest.data(), g.sig_of_digest.size(), md, sizeof md) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
      st.SkipWithError("RSA verification failed");
      break;
    }
  }
  st.SetItemsProcessed(st.iterations());
}

void BM_raw_sha256(benchmark::State &st, size_t size) {
  const Bytes &data = g.content[size];
  unsigned char md[32];
  for (auto _ : st)
    if (EVP_Digest(data.data(), data.size(), md, nullptr, EVP_sha256(), nullptr) != 1) {
      st.SkipWithError("SHA-256 failed");
      break;
    }
  st.SetItemsProcessed(st.iterations());
}

// ---- names, results, summary ---------------------------------------------------

// 1 / (1/a + 1/b): two steps in sequence; -1 when either is missing.
double serial(double a, double b) { return a > 0 && b > 0 ? 1 / (1 / a + 1 / b) : -1; }

std::string figure(double v) { return v > 0 ? std::to_string(static_cast<long>(v + 0.5)) : "-"; }

// One summary row; "-" where a figure is missing (filtered out or failed).
void print_row(const char *op, size_t size, double api, double limit, double rsa) {
  std::printf("%-27s %-6s %10s %10s %6s %10s\n", op, size_name(size).c_str(), figure(api).c_str(),
              figure(limit).c_str(), bench_util::ratio(api, limit).c_str(), figure(rsa).c_str());
}

void print_summary(const Collector &c) {
  std::printf("\nmessages/s (per CPU second, one thread) beside the raw limit measured just before\n");
  std::printf("%-27s %-6s %10s %10s %6s %10s\n", "op", "size", "API/s", "limit/s", "ratio", "RSA/s");
  for (int ci = CBC; ci <= GCM; ci++)
    for (size_t size : kSizes) {
      std::string suffix = std::string(kCipherName[ci]) + "/" + size_name(size);
      double rsa = c.get("raw/rsa2048_decrypt/" + suffix), aes = c.get("raw/aes_decrypt/" + suffix);
      for (const char *sink : {"", "_nullsink"})
        print_row((std::string("decrypt") + sink + " " + kCipherName[ci]).c_str(), size,
                  c.get(std::string("api/decrypt") + sink + "/" + suffix), serial(rsa, aes), rsa);
    }
  for (size_t size : kSizes) {
    double ver = c.get("raw/rsa2048_verify/" + size_name(size));
    double api = c.get("api/verify/" + size_name(size)), sha = c.get("raw/sha256/" + size_name(size));
    print_row("verify detached", size, api, serial(ver, sha), ver);
  }
}

// ---- setup --------------------------------------------------------------------------

int setup_token() {
  char err[512] = "";
  if (const char *what = g.tmp.open_token("/tmp/sgbi-XXXXXX", kToken, &g.h, err, sizeof err)) return fail(what, err);
  if (hsm_keygen(g.h, "bench-org", HSM_KEY_RSA, 2048, &g.ref, err, sizeof err)) return fail("hsm_keygen", err);
  if (hsm_worker_new(g.h, &g.w, err, sizeof err)) return fail("hsm_worker_new", err);
  if (hsm_worker_pkey(g.w, &g.ref, &g.token_key) || hsm_public_key(g.h, &g.ref, &g.token_pub))
    return fail("token key", "not found");
  cert_request r = {};
  r.cn = "org.example.com";
  r.days = 30;
  if (cert_create_selfsigned(&r, g.token_pub, g.token_key, &g.org_cert, err, sizeof err)) return fail("cert", err);
  r.cn = "sender.example.net";
  const char *emails[] = {"sender@example.net"};
  r.san_emails = emails;
  r.n_san_emails = 1;
  g.sign_key = EVP_RSA_gen(2048);
  if (!g.sign_key || cert_create_selfsigned(&r, g.sign_key, g.sign_key, &g.sign_cert, err, sizeof err))
    return fail("sender cert", err);
  if (keystore_open((std::string(g.tmp.path) + "/keys").c_str(), true, &g.ks, err, sizeof err) ||
      keystore_pubkey_add(g.ks, "sender", g.sign_cert, err, sizeof err) ||
      verify_trust_new(g.ks, false, nullptr, 0, &g.trust, err, sizeof err))
    return fail("key store", err);
  return 0;
}

// The messages of one size: CMS_encrypt (as any peer's OpenSSL would) to
// the token certificate, and a detached CMS_sign.
int setup_messages(size_t n, STACK_OF(X509) *rcpts) {
  Bytes &b = g.content[n];
  b.resize(n);
  RAND_bytes(b.data(), static_cast<int>(n));
  for (int ci = CBC; ci <= GCM; ci++) {
    BIO *in = BIO_new_mem_buf(b.data(), static_cast<int>(n));
    CMS_ContentInfo *cms = CMS_encrypt(rcpts, in, ci == CBC ? EVP_aes_256_cbc() : EVP_aes_256_gcm(), CMS_BINARY);
    g.message[{ci, n}] = cms ? der_of(cms) : Bytes();
    CMS_ContentInfo_free(cms);
    BIO_free(in);
    if (g.message[{ci, n}].empty()) return fail("CMS_encrypt", kCipherName[ci]);
  }
  BIO *in = BIO_new_mem_buf(b.data(), static_cast<int>(n));
  CMS_ContentInfo *cms = CMS_sign(g.sign_cert, g.sign_key, nullptr, in, CMS_DETACHED | CMS_BINARY);
  g.signature[n] = cms ? der_of(cms) : Bytes();
  CMS_ContentInfo_free(cms);
  BIO_free(in);
  return g.signature[n].empty() ? fail("CMS_sign", "failed") : 0;
}

int setup_messages() {
  STACK_OF(X509) *rcpts = sk_X509_new_null();
  int rc = rcpts && sk_X509_push(rcpts, g.org_cert) > 0 ? 0 : fail("certificates", "no stack");
  for (size_t n : kSizes)
    if (rc == 0) rc = setup_messages(n, rcpts);
  sk_X509_free(rcpts);
  return rc;
}

// Inputs of the raw loops: a wrapped key, ciphertexts and tags, a signature.
int setup_raw() {
  RAND_bytes(g.cek, sizeof g.cek);
  RAND_bytes(g.iv, sizeof g.iv);
  unsigned char buf[512];
  size_t len = sizeof buf;
  EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(g.token_pub, nullptr);
  bool ok = pc && EVP_PKEY_encrypt_init(pc) > 0 && EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) > 0 &&
            EVP_PKEY_encrypt(pc, buf, &len, g.cek, sizeof g.cek) > 0;
  EVP_PKEY_CTX_free(pc);
  if (!ok) return fail("RSA encrypt", "failed");
  g.wrapped.assign(buf, buf + len);
  for (size_t n : kSizes)
    for (int ci = CBC; ci <= GCM; ci++) {
      Bytes &ct = g.raw_ct[{ci, n}];
      ct.resize(n + 32);
      EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
      int l1 = 0, l2 = 0;
      ok = c && EVP_EncryptInit_ex(c, ci == CBC ? EVP_aes_256_cbc() : EVP_aes_256_gcm(), nullptr, nullptr, nullptr) &&
           (ci == CBC || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) == 1) &&
           EVP_EncryptInit_ex(c, nullptr, nullptr, g.cek, g.iv) == 1 &&
           EVP_EncryptUpdate(c, ct.data(), &l1, g.content[n].data(), static_cast<int>(n)) == 1 &&
           EVP_EncryptFinal_ex(c, ct.data() + l1, &l2) == 1 &&
           (ci == CBC || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, g.tags[n].data()) == 1);
      EVP_CIPHER_CTX_free(c);
      if (!ok) return fail("AES encrypt", kCipherName[ci]);
      ct.resize(static_cast<size_t>(l1 + l2));
    }
  unsigned char md[32];
  std::memset(md, 0x5a, sizeof md);
  len = sizeof buf;
  pc = EVP_PKEY_CTX_new(g.sign_key, nullptr);
  ok = pc && EVP_PKEY_sign_init(pc) > 0 && EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) > 0 &&
       EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) > 0 && EVP_PKEY_sign(pc, buf, &len, md, sizeof md) > 0;
  EVP_PKEY_CTX_free(pc);
  if (!ok) return fail("RSA sign", "failed");
  g.sig_of_digest.assign(buf, buf + len);
  return 0;
}

void teardown() {
  verify_trust_free(g.trust);
  keystore_close(g.ks);
  X509_free(g.org_cert);
  X509_free(g.sign_cert);
  EVP_PKEY_free(g.sign_key);
  EVP_PKEY_free(g.token_pub);
  hsm_worker_free(g.w);
  hsm_close(g.h);
  g.tmp.remove("bench_incoming");
}

int setup() { return setup_token() || setup_messages() || setup_raw(); }

// Each API figure right after the raw loops that bound it (its own RSA
// figure too), so a pair shares the machine's conditions.  CPU time: one
// thread, SoftHSM2 in process, nothing waits on another process, so the
// figures hold up on a shared machine better than wall time would.
void register_all() {
  for (int ci = CBC; ci <= GCM; ci++)
    for (size_t n : kSizes) {
      std::string suffix = std::string(kCipherName[ci]) + "/" + size_name(n);
      benchmark::RegisterBenchmark(("raw/rsa2048_decrypt/" + suffix).c_str(), BM_raw_rsa_decrypt);
      benchmark::RegisterBenchmark(("raw/aes_decrypt/" + suffix).c_str(), BM_raw_aes, Cipher(ci), n);
      benchmark::RegisterBenchmark(("api/decrypt/" + suffix).c_str(), BM_decrypt, Cipher(ci), n, true);
      benchmark::RegisterBenchmark(("api/decrypt_nullsink/" + suffix).c_str(), BM_decrypt, Cipher(ci), n, false);
    }
  for (size_t n : kSizes) {
    benchmark::RegisterBenchmark(("raw/rsa2048_verify/" + size_name(n)).c_str(), BM_raw_rsa_verify);
    benchmark::RegisterBenchmark(("raw/sha256/" + size_name(n)).c_str(), BM_raw_sha256, n);
    benchmark::RegisterBenchmark(("api/verify/" + size_name(n)).c_str(), BM_verify, n);
  }
}

} // namespace

int main(int argc, char **argv) { return bench_util::run(argc, argv, setup, register_all, print_summary, teardown); }
