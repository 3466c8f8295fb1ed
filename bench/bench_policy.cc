// bench_policy - Google Benchmark: policy evaluation per message through
// core/policy.h (issue #6), as delivery runs it once per message: the
// recipients' mail policies chosen, then the content filters of the policy
// evaluated against the message, with and without body conditions, beside
// the limit of the same work done directly, measured in the same run.
//
// Setup (in memory, nothing on disk): two configs loaded with
// config_load_string from YAML built here, each with the minimal required
// keys (as `sealctl init` writes them; the paths in it are never touched),
// 50 content filters and 20 mail policies (all outgoing):
//   - the filters (kFilters): subject regexes with (?i), header("X-...")
//     tests on fields present and absent, mail-from and rcpt-to regexes,
//     and/or/not combinations; actions insert-header, quarantine,
//     deliver.  For the bench message 48 conditions are false and 2 hold
//     (both insert-header, not final), so every condition is evaluated:
//     the honest worst case.  The "body" config is the same with 11 of
//     them extended by `or body-contains(...)` / `or attachment-filename
//     == ...`, none of which occurs, so the body is decoded and searched;
//   - the policies (kPolicies): 19 specific ones on senders or recipients
//     that the bench message does not match, so choosing its policy walks
//     them all, then "default" listing all 50 filters.
// Messages: a realistic RFC 5322 header (19 fields, ~1.2 KiB, CRLF) and a
// text/plain body (for the no-body cases) or a multipart/mixed body with
// a base64 text/plain part and a base64 PDF attachment (for the body
// cases), 4 KiB and 1 MiB in total; one recipient, and ten (no body).
// setup() checks once per case that evaluation gives what the figures
// claim (one group, deliver, the 2 headers, the body decoded or not) and
// that the limit below agrees on how many conditions hold.
//
// Per iteration: policy_evaluate + policy_result_free.  The limit
// (BM_Limit*, run just before its case): the work nothing can avoid, done
// directly: mime_header_index of the message into a preallocated array;
// each recipient's policy chosen by policy_address_match over the same 20
// policies' patterns; for each of the 50 conditions the pcre2_match calls
// that short-circuit and/or/not evaluation needs (the same patterns and
// flags, JIT-compiled, one match data for the run) on the raw field
// values in the message (leading blanks skipped; no copy, no decoding),
// the sender and the recipients.  With body conditions, plus what GMime
// decoding of the text parts costs alone: mimebody_new, one
// mimebody_contains of a needle that does not occur, mimebody_free.
// The further searches of the other needles and the attachment names are
// counted as ours, not as the limit's.  BM_Regex* (no-body cases): those
// pcre2_match calls alone, on values located in setup: the floor that
// any evaluator matching these 50 conditions one regex at a time pays.
//
// Target (issue #6): without body conditions, under 2 us per message.  The
// summary prints ns/msg and msgs/s beside the limit, the ratio limit/ours,
// the regex calls per message and their floor; a missed target is
// printed, not turned into an exit status.
//
// Run: build/bin/bench_policy [--benchmark_min_time=1] [--benchmark_repetitions=3]
#include <benchmark/benchmark.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <openssl/evp.h>

#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

// core/config.h declares `atomic_int refs` after <stdatomic.h>, which
// declares nothing in C++17: std::atomic_int stands in (the same size and
// alignment as C11's atomic_int on this ABI; the bench never touches it).
using std::atomic_int;

extern "C" {
#include "core/config.h"
#include "core/policy.h"
#include "crypto/mime.h"
#include "crypto/mimebody.h"
}

#include "bench_util.h"

namespace {

using bench_util::Collector;
using bench_util::size_name;

constexpr double kTargetNs = 2000;       // issue #6: without body conditions, under 2 us per message
constexpr size_t kHolding = 2;           // conditions that hold for the bench message
constexpr const char *kAbsentNeedle = "sealgate bench: this needle does not occur";

// ---- the filters -------------------------------------------------------------------

enum Field : char { kNone = 0, kSubject = 's', kHeader = 'h', kFrom = 'f', kRcpt = 'r', kBody = 'b', kAttach = 'a' };

// One test of the language.  arg: the header name (kHeader) or the needle
// (kBody); re: the regex, written so the filter language passes it through
// unchanged (no quote, no doubled backslash: checked in setup).
struct Test {
  Field field;
  const char *arg;
  const char *re;
  bool neg; // != rather than ==
};

Test subj(const char *re, bool neg = false) { return {kSubject, nullptr, re, neg}; }
Test hdr(const char *name, const char *re, bool neg = false) { return {kHeader, name, re, neg}; }
Test from(const char *re, bool neg = false) { return {kFrom, nullptr, re, neg}; }
Test rcpt(const char *re, bool neg = false) { return {kRcpt, nullptr, re, neg}; }
Test body(const char *needle) { return {kBody, needle, nullptr, false}; }
Test attach(const char *re) { return {kAttach, nullptr, re, false}; }
const Test kNoTest = {kNone, nullptr, nullptr, false};

// A content filter: its tests joined by `and` (all) or `or`, the whole
// negated if negate; with body conditions `(that) or extra` when extra is
// a test.
struct Filter {
  const char *name;
  bool all, negate;
  std::vector<Test> tests;
  const char *action;
  Test extra;
};

constexpr bool AND = true, OR = false, NOT = true;

// For the bench message (from alice.martin@corp.example.com to
// bob.jones@customer.example.net, "Re: Q3 planning meeting - notes and
// action items", no X-Classification & co.) only tag_internal and
// tag_planning hold.
const Filter kFilters[] = {
    {"classify_confidential", OR, false,
     {subj(R"((?i)\bconfidential\b)"), hdr("X-Classification", R"((?i)^confidential$)")},
     R"(insert-header("X-Sealgate-Class", "confidential"))", body("strictly confidential")},
    {"classify_secret", OR, false,
     {subj(R"((?i)\b(top\s+)?secret\b)"), hdr("X-Classification", R"((?i)secret)")}, R"(quarantine("Classified"))",
     body("top secret")},
    {"classify_restricted", OR, false,
     {subj(R"((?i)\brestricted\b)"), hdr("Sensitivity", R"((?i)^(private|company-confidential)$)")},
     R"(insert-header("X-Sealgate-Class", "restricted"))", kNoTest},
    {"encrypt_tag", OR, false, {subj(R"((?i)^\s*\[(encrypt|secure)\])")},
     R"(insert-header("X-Sealgate-Encrypt", "requested"))", kNoTest},
    {"sign_tag", OR, false, {subj(R"((?i)^\s*\[sign(ed)?\])")}, R"(insert-header("X-Sealgate-Sign", "requested"))",
     kNoTest},
    {"do_not_forward", OR, false, {subj(R"((?i)do\s+not\s+(forward|distribute))")},
     R"(insert-header("X-Sealgate-Class", "no-forward"))", kNoTest},
    {"invoice_external", AND, false,
     {subj(R"((?i)\binvoice\s*(no\.?|#)?\s*\d{4,})"), rcpt(R"((?i)@corp\.example\.com$)", true)},
     R"(insert-header("X-Sealgate-Invoice", "external"))", kNoTest},
    {"payroll_out", OR, false, {from(R"((?i)@(hr|payroll)\.corp\.example\.com$)")}, R"(quarantine("HR"))", kNoTest},
    {"legal_out", AND, false,
     {from(R"((?i)@legal\.corp\.example\.com$)"), hdr("X-Legal-Reviewed", R"((?i)^yes$)", true)},
     R"(quarantine("Legal"))", kNoTest},
    {"finance_wire", OR, false, {subj(R"((?i)\b(wire|swift|iban)\b)"), hdr("X-Finance", R"(.)")},
     R"(quarantine("Finance"))", body("wire transfer")},
    {"freemail", AND, false,
     {rcpt(R"((?i)@(gmail|googlemail|yahoo|outlook|hotmail|gmx|web)\.(com|de|net)$)"),
      subj(R"((?i)(confidential|internal))")},
     R"(quarantine("Policy"))", kNoTest},
    {"competitor", OR, false, {rcpt(R"((?i)@(rival|competitor|acme-rival)\.(com|example)$)")},
     R"(quarantine("Policy"))", kNoTest},
    {"tag_internal", OR, false, {from(R"((?i)@corp\.example\.com$)")},
     R"(insert-header("X-Sealgate-Origin", "internal"))", kNoTest},
    {"spam_flagged", OR, false, {hdr("X-Spam-Flag", R"((?i)^yes)")}, R"(quarantine("Spam"))", kNoTest},
    {"auto_reply", OR, false,
     {hdr("Auto-Submitted", R"((?i)^auto-)"), hdr("X-Autoreply", R"(.)"),
      subj(R"((?i)^(out of office|automatic reply|abwesenheit))")},
     R"(deliver())", kNoTest},
    {"mailing_list", OR, false, {hdr("List-Id", R"(.)"), hdr("Precedence", R"((?i)^(bulk|list|junk)$)")},
     R"(deliver())", kNoTest},
    {"high_priority", OR, false, {hdr("X-Priority", R"(^[12])"), hdr("Importance", R"((?i)^high$)")},
     R"(insert-header("X-Sealgate-Priority", "high"))", kNoTest},
    {"foreign_language", OR, NOT, {hdr("Content-Language", R"((?i)^(en|de|fr))")},
     R"(insert-header("X-Sealgate-Review", "language"))", kNoTest},
    {"pii_ssn", OR, false, {subj(R"(\b\d{3}-\d{2}-\d{4}\b)")}, R"(quarantine("PII"))",
     body("social security number")},
    {"pii_card", OR, false, {subj(R"(\b(?:\d[ -]?){13,16}\b)")}, R"(quarantine("PII"))", kNoTest},
    {"project_codenames", OR, false, {subj(R"((?i)\b(nightingale|bluebird|kestrel|osprey)\b)")},
     R"(insert-header("X-Sealgate-Project", "codename"))", body("project nightingale")},
    {"merger", OR, false,
     {subj(R"((?i)\b(m&a|merger|acquisition|due diligence)\b)"), hdr("X-Deal-Room", R"(.)")},
     R"(quarantine("Legal"))", kNoTest},
    {"board_minutes", AND, false,
     {subj(R"((?i)board\s+(meeting|minutes))"), from(R"((?i)@corp\.example\.com$)")},
     R"(insert-header("X-Sealgate-Class", "board"))", kNoTest},
    {"press_release", OR, false, {subj(R"((?i)press\s+release|embargo)")}, R"(quarantine("Comms"))",
     attach(R"((?i)press[-_ ]?release)")},
    {"exec_sender", OR, false, {from(R"((?i)^(ceo|cfo|cto|coo)@corp\.example\.com$)")},
     R"(insert-header("X-Sealgate-Exec", "yes"))", kNoTest},
    {"gov_recipients", OR, false, {rcpt(R"((?i)\.(gov|mil)$)"), rcpt(R"((?i)\.gouv\.fr$)")},
     R"(insert-header("X-Sealgate-Encrypt", "required"))", kNoTest},
    {"bank_partners", OR, false, {rcpt(R"((?i)@(bank|treasury)\d*\.example$)")},
     R"(insert-header("X-Sealgate-Encrypt", "required"))", kNoTest},
    {"eu_partners", OR, false, {rcpt(R"((?i)@[a-z0-9-]+\.partner\.(de|fr|nl)$)")},
     R"(insert-header("X-Sealgate-Sign", "required"))", kNoTest},
    {"health", OR, false, {subj(R"((?i)\b(diagnosis|medical|patient)\b)"), hdr("X-Health", R"(.)")},
     R"(quarantine("PII"))", body("diagnosis")},
    {"x_encrypt_header", OR, false, {hdr("X-Encrypt", R"((?i)^(yes|true|1)$)")},
     R"(insert-header("X-Sealgate-Encrypt", "requested"))", kNoTest},
    {"x_sign_header", OR, false, {hdr("X-Sign", R"((?i)^(yes|true|1)$)")},
     R"(insert-header("X-Sealgate-Sign", "requested"))", kNoTest},
    {"x_sensitivity", OR, false,
     {hdr("X-Sensitivity", R"((?i)^(high|confidential)$)"), hdr("Sensitivity", R"((?i)^private$)")},
     R"(insert-header("X-Sealgate-Class", "sensitive"))", kNoTest},
    {"reply_confidential", OR, false, {subj(R"((?i)^(re|aw|fw|fwd|wg):.*\b(confidential|internal only)\b)")},
     R"(quarantine("Policy"))", kNoTest},
    {"noreply_sender", OR, false, {from(R"((?i)^(no-?reply|mailer-daemon|postmaster)@)")}, R"(deliver())",
     kNoTest},
    {"null_sender", OR, false, {from(R"(^$)")}, R"(deliver())", kNoTest},
    {"test_traffic", AND, false, {subj(R"((?i)^\[test\])"), hdr("X-Test-Run", R"(.)")}, R"(deliver())", kNoTest},
    {"calendar", OR, false, {hdr("Content-Type", R"((?i)text/calendar)")}, R"(deliver())", kNoTest},
    {"tag_planning", OR, false, {subj(R"((?i)\bplanning\b)")}, R"(insert-header("X-Sealgate-Topic", "planning"))",
     kNoTest},
    {"sealgate_loop", OR, false, {hdr("X-Sealgate-Processed", R"(.)")}, R"(deliver())", kNoTest},
    {"hr_keywords", OR, false, {subj(R"((?i)\b(salary|payslip|termination|disciplinary)\b)")},
     R"(quarantine("HR"))", attach(R"((?i)(payslip|salary))")},
    {"credentials", OR, false, {subj(R"((?i)\b(password|passwort|credentials|login)\b)")},
     R"(quarantine("Policy"))", body("password:")},
    {"source_code", OR, false,
     {subj(R"((?i)\b(source code|git (bundle|patch))\b)"), hdr("X-Git-Repo", R"(.)")}, R"(quarantine("Policy"))",
     attach(R"((?i)\.(patch|diff|bundle|tar\.gz)$)")},
    {"contract", AND, false,
     {subj(R"((?i)\b(contract|nda|agreement)\b)"), from(R"((?i)@legal\.corp\.example\.com$)", true)},
     R"(insert-header("X-Sealgate-Review", "contract"))", kNoTest},
    {"external_cc_only", OR, NOT, {hdr("Cc", R"((?i)@corp\.example\.com)")},
     R"(insert-header("X-Sealgate-Review", "external-cc"))", kNoTest},
    {"bad_message_id", OR, NOT, {hdr("Message-ID", R"(^\s*<[^>@\s]+@[^>\s]+>\s*$)")},
     R"(insert-header("X-Sealgate-Review", "message-id"))", kNoTest},
    {"old_client", OR, false,
     {hdr("User-Agent", R"((?i)(Outlook Express|Eudora|Pegasus))"), hdr("X-Mailer", R"((?i)(Outlook Express|Eudora))")},
     R"(insert-header("X-Sealgate-Review", "client"))", kNoTest},
    {"scanner", OR, false, {hdr("X-Mailer", R"((?i)(scan|xerox|ricoh|konica))"), subj(R"((?i)^scan(ned)? (from|to))")},
     R"(deliver())", kNoTest},
    {"bulk_sender", OR, false, {from(R"((?i)@(news|marketing|mailer)\.corp\.example\.com$)")}, R"(deliver())",
     kNoTest},
    {"customer_data", AND, false,
     {rcpt(R"((?i)@customer\.example\.net$)"), subj(R"((?i)\b(export|customer list|crm)\b)")},
     R"(quarantine("Policy"))", body("customer export")},
    {"large_recipient_list", OR, false, {hdr("To", R"((?:,[^,]*){20,})")},
     R"(insert-header("X-Sealgate-Review", "many-recipients"))", kNoTest},
};
constexpr size_t kNFilters = sizeof kFilters / sizeof kFilters[0];
static_assert(kNFilters == 50, "the issue asks for 50 content filters");

// ---- the mail policies ---------------------------------------------------------------

struct Policy {
  const char *name;
  std::vector<const char *> senders, recipients, filters; // filters empty: all (the default)
};

const Policy kPolicies[] = {
    {"hr", {"@hr.corp.example.com", "@payroll.corp.example.com"}, {"*"},
     {"payroll_out", "hr_keywords", "pii_ssn", "pii_card", "credentials"}},
    {"legal", {"@legal.corp.example.com"}, {"*"}, {"legal_out", "contract", "merger", "classify_confidential"}},
    {"executives", {"ceo@corp.example.com", "cfo@corp.example.com", "cto@corp.example.com"}, {"*"},
     {"exec_sender", "merger", "board_minutes", "classify_secret"}},
    {"finance", {"@finance.corp.example.com"}, {"*"}, {"finance_wire", "invoice_external", "pii_card"}},
    {"marketing", {"@marketing.corp.example.com", "@news.corp.example.com"}, {"*"}, {"bulk_sender", "press_release"}},
    {"rnd", {"@rnd.corp.example.com", "*.lab.corp.example.com"}, {"*"},
     {"source_code", "project_codenames", "classify_restricted"}},
    {"support", {"support@corp.example.com", "helpdesk@corp.example.com"}, {"*"}, {"auto_reply", "credentials"}},
    {"noreply", {"noreply@corp.example.com", "no-reply@corp.example.com"}, {"*"}, {"noreply_sender"}},
    {"scanners", {"@scan.corp.example.com"}, {"*"}, {"scanner"}},
    {"subsidiary_de", {"@corp.example.de", "*.corp.example.de"}, {"*"}, {"classify_confidential", "foreign_language"}},
    {"partner_banks", {"*"}, {"@bank1.example", "@bank2.example", "*.treasury.example"},
     {"bank_partners", "finance_wire", "x_encrypt_header"}},
    {"government", {"*"}, {"*.gov", "*.mil", "*.gouv.fr"}, {"gov_recipients", "classify_restricted"}},
    {"healthcare", {"*"}, {"@clinic.example.org", "@hospital.example.org"}, {"health", "pii_ssn"}},
    {"eu_partners", {"*"}, {"*.partner.de", "*.partner.fr", "*.partner.nl"}, {"eu_partners", "x_sign_header"}},
    {"freemail", {"*"}, {"@gmail.com", "@googlemail.com", "@yahoo.com", "@outlook.com", "@hotmail.com", "@gmx.de",
                         "@web.de"},
     {"freemail", "classify_confidential"}},
    {"competitors", {"*"}, {"@rival.com", "@competitor.example", "@acme-rival.com"}, {"competitor"}},
    {"auditors", {"*"}, {"@audit-firm.example", "*.audit-firm.example"}, {"classify_secret", "x_encrypt_header"}},
    {"law_firms", {"*"}, {"@lawfirm.example", "*.counsel.example"}, {"contract", "legal_out"}},
    {"press", {"*"}, {"@press.example", "*.news.example"}, {"press_release", "merger"}},
    {"default", {"*"}, {"*"}, {}},
};
constexpr size_t kNPolicies = sizeof kPolicies / sizeof kPolicies[0];
static_assert(kNPolicies == 20, "the issue asks for 20 mail policies");

// ---- the config ------------------------------------------------------------------------

std::string render_test(const Test &t) {
  std::string op = t.neg ? " != \"" : " == \"";
  switch (t.field) {
    case kSubject: return "subject" + op + t.re + "\"";
    case kHeader: return std::string("header(\"") + t.arg + "\")" + op + t.re + "\"";
    case kFrom: return "mail-from" + op + t.re + "\"";
    case kRcpt: return "rcpt-to" + op + t.re + "\"";
    case kBody: return std::string("body-contains(\"") + t.arg + "\")";
    case kAttach: return "attachment-filename" + op + t.re + "\"";
    default: return "";
  }
}

std::string render_condition(const Filter &f, bool with_body) {
  std::string c;
  for (const Test &t : f.tests) c += (c.empty() ? "" : f.all ? " and " : " or ") + render_test(t);
  if (f.negate) c = "not (" + c + ")";
  if (with_body && f.extra.field != kNone) c = "(" + c + ") or " + render_test(f.extra);
  return c;
}

// A YAML flow sequence of double-quoted strings (none needs escaping).
std::string yaml_list(const std::vector<const char *> &v) {
  std::string s = "[";
  for (const char *e : v) s += std::string(s.size() > 1 ? ", " : "") + "\"" + e + "\"";
  return s + "]";
}

// The whole sealgate.yaml: `sealctl init`'s required keys, the filters
// (conditions and actions single-quoted: they hold double quotes and
// backslashes, never a single quote), the policies.
std::string config_yaml(bool with_body) {
  std::string y = "hostname: gw.example.com\n"
                  "listeners:\n"
                  "  - name: main\n"
                  "    address: 127.0.0.1:2525\n"
                  "    direction: outgoing\n"
                  "    next_hop: 127.0.0.1:2526\n"
                  "spool_dir: spool\n"
                  "key_store: keys\n"
                  "hsm:\n"
                  "  module: remote\n"
                  "  token: sealgate\n"
                  "  pin_file: hsm/pin\n"
                  "flow_policies:\n"
                  "  - name: default\n"
                  "content_filters:\n";
  for (const Filter &f : kFilters)
    y += std::string("  - name: ") + f.name + "\n    direction: outgoing\n    condition: '" +
         render_condition(f, with_body) + "'\n    actions: ['" + f.action + "']\n";
  y += "mail_policies:\n";
  for (const Policy &p : kPolicies) {
    std::vector<const char *> names = p.filters;
    if (names.empty())
      for (const Filter &f : kFilters) names.push_back(f.name);
    y += std::string("  - name: ") + p.name + "\n    direction: outgoing\n    senders: " + yaml_list(p.senders) +
         "\n    recipients: " + yaml_list(p.recipients) + "\n    content_filters: " + yaml_list(names) + "\n";
  }
  return y;
}

// ---- the messages ----------------------------------------------------------------------

constexpr const char *kSender = "alice.martin@corp.example.com";
constexpr const char *kBoundary = "------------sgb0x7e3a9d41c58f2b60";

// 17 fields and the content fields (19 in all, ~1.2 KiB), as a mail client
// and two Received hops write them.
std::string header_block(const std::string &content_type) {
  return "Received: from laptop-4411.corp.example.com (laptop-4411.corp.example.com [10.20.30.41])\r\n"
         "\tby smtp.corp.example.com (Postfix) with ESMTPSA id 4QX1bT2xYzz9sWd\r\n"
         "\tfor <bob.jones@customer.example.net>; Thu, 26 Nov 2026 09:14:26 +0100 (CET)\r\n"
         "Received: from [10.20.30.41] (unknown [10.20.30.41])\r\n"
         "\tby laptop-4411.corp.example.com with ESMTPSA id 8f3k2w; Thu, 26 Nov 2026 09:14:25 +0100\r\n"
         "Message-ID: <5f0c9e2a-7b1d-4c3e-9a61-2d8e4f7b9c10@corp.example.com>\r\n"
         "Date: Thu, 26 Nov 2026 09:14:25 +0100\r\n"
         "MIME-Version: 1.0\r\n"
         "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.12.0\r\n"
         "Content-Language: en-US\r\n"
         "From: Alice Martin <alice.martin@corp.example.com>\r\n"
         "To: Bob Jones <bob.jones@customer.example.net>\r\n"
         "Cc: Carol White <carol.white@corp.example.com>, Dan Brown <dan.brown@customer.example.net>\r\n"
         "Subject: Re: Q3 planning meeting - notes and action items\r\n"
         "In-Reply-To: <a81c2e77-0d4b-4f1e-b2c9-6e5d0f3a7b18@customer.example.net>\r\n"
         "References: <3b9d7c15-e2a4-4c8f-9d06-1f7e5b2c8a93@corp.example.com>\r\n"
         "\t<a81c2e77-0d4b-4f1e-b2c9-6e5d0f3a7b18@customer.example.net>\r\n"
         "X-Priority: 3 (Normal)\r\n"
         "Importance: normal\r\n"
         "Thread-Topic: Q3 planning meeting\r\n"
         "Thread-Index: AdrYk2M0c3F1ZWJ4S0pQd2h4eXJ6dGVzdA==\r\n" +
         content_type + "\r\n";
}

// n bytes of meeting notes, CRLF lines (none of the filters' needles).
std::string notes(size_t n) {
  std::string s;
  for (size_t item = 1; s.size() < n; item++)
    s += "Item " + std::to_string(item) +
         ": thanks to everyone who joined the Q3 planning call. We agreed to move the\r\n"
         "release review to the second week of the month and to share the updated roadmap\r\n"
         "with the regional teams before the end of the quarter; owners are listed below.\r\n\r\n";
  s.resize(n > 2 ? n - 2 : 0);
  return s + "\r\n";
}

// raw as base64 lines of 76 characters (57 bytes each), CRLF.
std::string base64_lines(const std::string &raw) {
  std::string out;
  unsigned char line[80];
  for (size_t i = 0; i < raw.size(); i += 57) {
    int n = EVP_EncodeBlock(line, reinterpret_cast<const unsigned char *>(raw.data() + i),
                            static_cast<int>(std::min<size_t>(57, raw.size() - i)));
    out.append(reinterpret_cast<char *>(line), static_cast<size_t>(n)).append("\r\n");
  }
  return out;
}

// text/plain, exactly size bytes.
std::string plain_message(size_t size) {
  std::string h = header_block("Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
                               "Content-Transfer-Encoding: 8bit");
  return h + notes(size - h.size());
}

// multipart/mixed: a base64 text/plain part and a base64 PDF attachment
// sharing what the header leaves of size (the total is within ~80 bytes).
std::string multipart_message(size_t size) {
  std::string m = header_block(std::string("Content-Type: multipart/mixed; boundary=\"") + kBoundary + "\"") +
                  "This is a multi-part message in MIME format.\r\n";
  std::string text_head = std::string("--") + kBoundary +
                          "\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n";
  std::string pdf_head = std::string("\r\n--") + kBoundary +
                         "\r\nContent-Type: application/pdf; name=\"Q3-planning-notes.pdf\"\r\n"
                         "Content-Disposition: attachment; filename=\"Q3-planning-notes.pdf\"\r\n"
                         "Content-Transfer-Encoding: base64\r\n\r\n";
  std::string tail = std::string("\r\n--") + kBoundary + "--\r\n";
  size_t fixed = m.size() + text_head.size() + pdf_head.size() + tail.size();
  size_t half = (size - fixed) / 2 / 78 * 57; // raw bytes per part: 57 become one 78-byte line
  std::string pdf = "%PDF-1.7\n";
  std::mt19937 rng(6);
  while (pdf.size() < half) pdf += static_cast<char>(rng());
  std::string text = base64_lines(notes(half)), bin = base64_lines(pdf);
  text.resize(text.size() - 2); // the boundary's CRLF ends the last line
  bin.resize(bin.size() - 2);
  return m + text_head + text + pdf_head + bin + tail;
}

// ---- the limit ----------------------------------------------------------------------------

struct LimitTest {
  Field field;
  std::string name; // kHeader
  pcre2_code *re;
  bool neg;
  size_t id; // its place among all tests (Case::located)
};
struct LimitFilter {
  bool all, negate;
  std::vector<LimitTest> tests; // without the body tests: they are not this part of the limit
};

// pcre2_match with the run's one match data, counting the calls.
struct Matcher {
  pcre2_match_data *md;
  size_t calls;
  bool operator()(const pcre2_code *re, const char *s, size_t n) {
    calls++;
    return pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(s), n, 0, 0, md, nullptr) >= 0;
  }
};

// The message as the limit sees it: the field index, the subject's raw
// value, the envelope.
struct LimitMsg {
  const char *data;
  const mime_field *f;
  size_t n;
  const char *subject;
  size_t subject_len;
  const policy_input *in;
};

// The index-th value of field name (leading blanks skipped, as the
// filters see it), by pointer and length into the message.
bool field_value(const LimitMsg &m, const char *name, size_t nlen, size_t index, const char **v, size_t *vlen) {
  for (size_t i = 0; i < m.n; i++) {
    const mime_field &f = m.f[i];
    if (f.name_len != nlen || strncasecmp(m.data + f.name_off, name, nlen) != 0 || index-- > 0) continue;
    size_t skip = 0;
    while (skip < f.value_len && (m.data[f.value_off + skip] == ' ' || m.data[f.value_off + skip] == '\t')) skip++;
    *v = m.data + f.value_off + skip;
    *vlen = f.value_len - skip;
    return true;
  }
  return false;
}

// The i-th value test t looks at (subject and mail-from: one; rcpt-to: a
// recipient each; header(): a field of that name each); false after the
// last.
bool direct_value(const LimitMsg &m, const LimitTest &t, size_t i, const char **v, size_t *n) {
  const char *s = nullptr;
  switch (t.field) {
    case kSubject: s = i == 0 ? m.subject : nullptr, *n = m.subject_len; break;
    case kHeader: return field_value(m, t.name.c_str(), t.name.size(), i, v, n);
    case kFrom: s = i == 0 ? m.in->sender : nullptr, *n = s ? std::strlen(s) : 0; break;
    case kRcpt: s = i < m.in->n_rcpts ? m.in->rcpts[i] : nullptr, *n = s ? std::strlen(s) : 0; break;
    default: break;
  }
  *v = s;
  return s != nullptr;
}

// Short-circuit evaluation as filter_cond_eval does it: a list test stops
// at its first matching value, `and` at the first false test, `or` at the
// first true one.  values(t, i, &v, &n) yields the values.
template <typename Values>
bool eval_filter(const LimitFilter &f, Values values, Matcher &match) {
  for (const LimitTest &t : f.tests) {
    bool r = false;
    const char *v;
    size_t n;
    for (size_t i = 0; !r && values(t, i, &v, &n); i++) r = match(t.re, v, n);
    if ((r != t.neg) != f.all) return !f.all != f.negate;
  }
  return f.all != f.negate;
}

bool any_match(const std::vector<const char *> &patterns, const char *address) {
  for (const char *p : patterns)
    if (policy_address_match(p, address)) return true;
  return false;
}

// The index in kPolicies of rcpt's policy ("default" is the last).
size_t limit_policy(const char *sender, const char *rcpt) {
  for (size_t i = 0; i + 1 < kNPolicies; i++)
    if (any_match(kPolicies[i].senders, sender) && any_match(kPolicies[i].recipients, rcpt)) return i;
  return kNPolicies - 1;
}

// ---- the cases ------------------------------------------------------------------------------

using Span = std::pair<const char *, size_t>;

struct Case {
  bool body;   // body conditions in the config, the multipart message
  size_t size; // nominal message size
  size_t n_rcpts;
  const std::string *msg;
  const config *cfg;
  std::string suffix;                 // "4KiB", "1MiB/10rcpt"
  std::vector<std::vector<Span>> located = {}; // per LimitTest::id, its values (setup)
  size_t matches = 0;                 // pcre2_match calls per message (setup)
};

struct {
  config *cfg[2] = {nullptr, nullptr}; // [with body]
  std::string plain[2], multi[2];      // [4 KiB, 1 MiB]
  std::vector<LimitFilter> limit;
  size_t n_tests = 0;
  std::vector<std::string> rcpt_store;
  std::vector<char *> rcpts; // 10 recipients, the first is bob
  std::vector<mime_field> fields = std::vector<mime_field>(POLICY_MAX_HEADERS);
  std::vector<Case> cases;
} g;

policy_input input_of(const Case &c) {
  policy_input in = {};
  in.data = c.msg->data();
  in.len = c.msg->size();
  in.sender = kSender;
  in.rcpts = g.rcpts.data();
  in.n_rcpts = c.n_rcpts;
  in.direction = CONFIG_OUTGOING;
  return in;
}

LimitMsg index_message(const policy_input &in) {
  LimitMsg m = {in.data, g.fields.data(), mime_header_index(in.data, in.len, g.fields.data(), POLICY_MAX_HEADERS),
                nullptr, 0, &in};
  if (!field_value(m, "Subject", 7, 0, &m.subject, &m.subject_len)) m.subject = nullptr;
  return m;
}

// The limit's work for one message; returns how many conditions hold and
// sets *policy to the last recipient's policy (for setup's check).
size_t limit_once(const Case &c, const policy_input &in, Matcher &match, size_t *policy) {
  LimitMsg m = index_message(in);
  for (size_t i = 0; i < in.n_rcpts; i++) *policy = limit_policy(in.sender, in.rcpts[i]);
  auto values = [&m](const LimitTest &t, size_t i, const char **v, size_t *n) { return direct_value(m, t, i, v, n); };
  size_t holding = 0;
  for (const LimitFilter &f : g.limit) holding += eval_filter(f, values, match);
  if (c.body) {
    mimebody *b = nullptr;
    if (mimebody_new(in.data, in.len, &b) == 0) benchmark::DoNotOptimize(mimebody_contains(b, kAbsentNeedle));
    mimebody_free(b);
  }
  return holding;
}

// The regex matches alone: the same evaluation on values located in
// setup (no indexing, no look-up, no policy choice, no body).
size_t regex_once(const Case &c, Matcher &match) {
  auto values = [&c](const LimitTest &t, size_t i, const char **v, size_t *n) {
    const std::vector<Span> &l = c.located[t.id];
    if (i >= l.size()) return false;
    *v = l[i].first, *n = l[i].second;
    return true;
  };
  size_t holding = 0;
  for (const LimitFilter &f : g.limit) holding += eval_filter(f, values, match);
  return holding;
}

void BM_limit(benchmark::State &st, const Case *c) {
  policy_input in = input_of(*c);
  Matcher match = {pcre2_match_data_create(1, nullptr), 0};
  size_t policy = 0;
  for (auto _ : st) benchmark::DoNotOptimize(limit_once(*c, in, match, &policy));
  pcre2_match_data_free(match.md);
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

void BM_regex(benchmark::State &st, const Case *c) {
  Matcher match = {pcre2_match_data_create(1, nullptr), 0};
  for (auto _ : st) benchmark::DoNotOptimize(regex_once(*c, match));
  pcre2_match_data_free(match.md);
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

void BM_policy(benchmark::State &st, const Case *c) {
  policy_input in = input_of(*c);
  for (auto _ : st) {
    policy_result r;
    if (policy_evaluate(c->cfg, &in, &r) != 0) {
      st.SkipWithError("policy_evaluate failed");
      break;
    }
    benchmark::DoNotOptimize(r.groups);
    policy_result_free(&r);
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

std::string name_of(const char *what, const Case &c) {
  return std::string(what) + (c.body ? "Body/" : "NoBody/") + c.suffix;
}

// ---- summary ----------------------------------------------------------------------------------

double ns_of(double rate) { return rate > 0 ? 1e9 / rate : -1; }

// v with prec decimals, or "-" when there is no figure.
std::string fig(double v, int prec) {
  char b[32] = "-";
  if (v >= 0) std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

void print_summary(const Collector &c) {
  std::printf("\npolicy evaluation per message: %zu content filters (%zu hold), %zu mail policies "
              "(the message gets the last, \"default\"), one thread, same run\n",
              kNFilters, kHolding, kNPolicies);
  std::printf("%-7s %-4s %5s %7s %11s %10s %12s %6s %8s %8s  %s\n", "case", "size", "rcpts", "regexes", "ours ns/msg",
              "ours msg/s", "limit ns/msg", "ratio", "regex ns", "ns/regex", "target < 2 us (no body)");
  for (const Case &k : g.cases) {
    double ours = c.get(name_of("BM_Policy", k)), limit = c.get(name_of("BM_Limit", k));
    double regex = k.body ? -1 : c.get(name_of("BM_Regex", k));
    std::string target = k.body ? "" : ours <= 0 ? "FAIL (no figure)" : ns_of(ours) < kTargetNs ? "PASS" : "FAIL";
    std::printf("%-7s %-4s %5zu %7zu %11s %10s %12s %6s %8s %8s  %s\n", k.body ? "body" : "no-body",
                size_name(k.size).c_str(), k.n_rcpts, k.matches, fig(ns_of(ours), 0).c_str(), fig(ours, 0).c_str(),
                fig(ns_of(limit), 0).c_str(), bench_util::ratio(ours, limit).c_str(), fig(ns_of(regex), 0).c_str(),
                fig(regex > 0 ? ns_of(regex) / static_cast<double>(k.matches) : -1, 1).c_str(), target.c_str());
  }
  std::printf("regexes: pcre2_match calls per message; ratio = limit ns / ours ns (1.00: nothing beyond the "
              "limit);\nregex ns: those matches alone, on values located beforehand (no-body cases)\n");
  for (const auto &e : c.errors()) std::printf("%s: %s\n", e.first.first.c_str(), e.second.c_str());
}

// ---- setup --------------------------------------------------------------------------------------

int fail(const char *what, const char *why) {
  std::fprintf(stderr, "bench_policy: %s: %s\n", what, why);
  return 1;
}

// kFilters' tests compiled as filter.c compiles them (flags and JIT).
int compile_limit() {
  for (const Filter &f : kFilters) {
    LimitFilter lf = {f.all, f.negate, {}};
    for (const Test &t : f.tests) {
      // The filter language would unescape these; the limit compiles the text as is.
      if (std::strchr(t.re, '"') || std::strchr(t.re, '\'') || std::strstr(t.re, "\\\\"))
        return fail(f.name, "a regex the filter language would not pass through unchanged");
      int code;
      PCRE2_SIZE off;
      pcre2_code *re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(t.re), PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C, &code, &off, nullptr);
      if (!re) return fail(f.name, "pcre2_compile");
      lf.tests.push_back({t.field, t.arg ? t.arg : "", re, t.neg, g.n_tests++});
      if (pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0) return fail(f.name, "pcre2_jit_compile");
    }
    g.limit.push_back(std::move(lf));
  }
  return 0;
}

// Every value each test would look at in c's message, for BM_Regex.
void locate(Case &c) {
  policy_input in = input_of(c);
  LimitMsg m = index_message(in);
  c.located.assign(g.n_tests, {});
  for (const LimitFilter &f : g.limit)
    for (const LimitTest &t : f.tests) {
      const char *v;
      size_t n;
      for (size_t i = 0; direct_value(m, t, i, &v, &n); i++) c.located[t.id].push_back({v, n});
    }
}

// Does each case measure what the summary says?  One group, delivered
// under "default", the kHolding insert-header actions, the body decoded
// exactly when the config has body conditions; the limit and the regex
// floor agreeing.  Counts the case's pcre2_match calls.
int check_case(Case &c) {
  policy_input in = input_of(c);
  policy_result r;
  if (policy_evaluate(c.cfg, &in, &r) != 0) return fail(c.suffix.c_str(), "policy_evaluate failed");
  bool ok = r.n_groups == 1 && r.groups[0].verdict == POLICY_DELIVER && r.groups[0].n_headers == kHolding &&
            std::strcmp(r.groups[0].policy, "default") == 0 && r.used_body == c.body;
  std::string filters = r.n_groups ? r.groups[0].filters : "";
  policy_result_free(&r);
  if (!ok) return fail(name_of("BM_Policy", c).c_str(), ("unexpected outcome, filters: " + filters).c_str());
  locate(c);
  Matcher match = {pcre2_match_data_create(1, nullptr), 0};
  size_t policy = 0, holding = limit_once(c, in, match, &policy);
  c.matches = match.calls;
  size_t floor_holding = regex_once(c, match);
  bool same = match.calls == 2 * c.matches;
  pcre2_match_data_free(match.md);
  if (holding != kHolding || floor_holding != kHolding || policy != kNPolicies - 1 || !same)
    return fail(name_of("BM_Limit", c).c_str(), "the limit disagrees with policy_evaluate");
  return 0;
}

int setup() {
  if (mimebody_global_init() != 0) return fail("mimebody_global_init", "out of memory");
  char err[512] = "";
  for (int body = 0; body < 2; body++) {
    std::string y = config_yaml(body);
    if (config_load_string(y.data(), y.size(), "/sealgate-bench", "bench.yaml", &g.cfg[body], err, sizeof err))
      return fail("config_load_string", err);
  }
  if (compile_limit()) return 1;
  const size_t sizes[2] = {4096, 1024 * 1024};
  for (int i = 0; i < 2; i++) g.plain[i] = plain_message(sizes[i]), g.multi[i] = multipart_message(sizes[i]);
  g.rcpt_store.push_back("bob.jones@customer.example.net");
  for (int i = 1; i < 10; i++)
    g.rcpt_store.push_back("user" + std::to_string(i) + "@customer" + std::to_string(i) + ".example.net");
  for (auto &s : g.rcpt_store) g.rcpts.push_back(&s[0]);
  for (int i = 0; i < 2; i++) {
    g.cases.push_back({false, sizes[i], 1, &g.plain[i], g.cfg[0], size_name(sizes[i])});
    g.cases.push_back({false, sizes[i], 10, &g.plain[i], g.cfg[0], size_name(sizes[i]) + "/10rcpt"});
  }
  for (int i = 0; i < 2; i++) g.cases.push_back({true, sizes[i], 1, &g.multi[i], g.cfg[1], size_name(sizes[i])});
  for (Case &c : g.cases)
    if (check_case(c)) return 1;
  return 0;
}

void teardown() {
  for (LimitFilter &f : g.limit)
    for (LimitTest &t : f.tests) pcre2_code_free(t.re);
  config_unref(g.cfg[0]);
  config_unref(g.cfg[1]);
}

// Each case's regex floor (no body) and limit just before the case.
void register_all() {
  for (const Case &c : g.cases) {
    if (!c.body) benchmark::RegisterBenchmark(name_of("BM_Regex", c).c_str(), BM_regex, &c);
    benchmark::RegisterBenchmark(name_of("BM_Limit", c).c_str(), BM_limit, &c);
    benchmark::RegisterBenchmark(name_of("BM_Policy", c).c_str(), BM_policy, &c);
  }
}

} // namespace

int main(int argc, char **argv) { return bench_util::run(argc, argv, setup, register_all, print_summary, teardown); }
