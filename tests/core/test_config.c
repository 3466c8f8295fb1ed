/*
 * test_config - unit tests for core/config.c.
 *
 * The config `sealctl init` writes and the optional-sections example from
 * INTERFACE.md must load with the documented values and defaults.  Every
 * class of mistake must be refused with SG_ECONFIG and a one-line message
 * "NAME:LINE: ..." that names the right line and key: each error case
 * below checks the exact line prefix and a phrase naming the key.  The
 * parse helpers get their edge cases, and allocation failures are injected
 * (malloc/calloc/strdup are wrapped at link time) to show that every error
 * path frees what it allocated; the sanitizer build checks that claim.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/sgerr.h"

#include "tests/core/alloc_fail.h"

/* ---- fixtures ----------------------------------------------------------- */

/* Exactly what `sealctl init` writes (INTERFACE.md), line numbers matter. */
static const char INIT_YAML[] =
    "hostname: gw.example.com        # banner, Received, Authentication-Results, DSNs\n" /* 1 */
    "listeners:\n"                                                                      /* 2 */
    "  - name: main\n"                                                                  /* 3 */
    "    address: 127.0.0.1:2525\n"                                                     /* 4 */
    "    direction: outgoing\n"                                                         /* 5 */
    "    flow_policy: default\n"                                                        /* 6 */
    "    relay_from: [\"127.0.0.1/32\", \"::1/128\"]\n"                                 /* 7 */
    "    next_hop: 127.0.0.1:2526\n"                                                    /* 8 */
    "spool_dir: spool\n"                                                                /* 9 */
    "key_store: keys\n"                                                                 /* 10 */
    "hsm:\n"                                                                            /* 11 */
    "  module: remote\n"                                                                /* 12 */
    "  token: sealgate\n"                                                               /* 13 */
    "  pin_file: hsm/pin\n"                                                             /* 14 */
    "flow_policies:\n"                                                                  /* 15 */
    "  - name: default\n";                                                              /* 16 */

/* The optional-sections example from INTERFACE.md, verbatim. */
static const char OPTIONAL_YAML[] =
    "sending_profiles:\n"                                                               /* 15 */
    "  - name: signenc\n"
    "    mode: sign-encrypt\n"
    "    signing_certificate: org\n"
    "    missing_key_action: split\n"
    "content_filters:\n"                                                                /* 20 */
    "  - name: confidential\n"
    "    direction: outgoing\n"
    "    condition: 'subject == \"(?i)confidential\" or body-contains(\"confidential\")'\n"
    "    actions: ['smime-gateway(\"signenc\")']   # or smime-gateway-on-delivery(\"signenc\")\n"
    "mail_policies:\n"                                                                  /* 25 */
    "  - name: default\n"
    "    direction: outgoing\n"
    "    senders: [\"*\"]\n"
    "    recipients: [\"*\"]\n"
    "    content_filters: [confidential]\n"
    "flow_policies:\n"                                                                  /* 31 */
    "  - name: default\n"
    "    smime_decrypt_verify: true\n"
    "    keep_signature: true\n"
    "    harvest: { enabled: true, on_failed_verification: false, updated_keys: true }\n"
    "message_filters: |\n"                                                              /* 36 */
    "  quarantine_smime_messages: if (smime-gateway-message and not smime-gateway-verified) "
    "{ quarantine(\"Policy\"); }\n";

/* INIT_YAML without its flow_policies (lines 15-16), so OPTIONAL_YAML's
 * own flow_policies can follow without a duplicate key; the optional
 * sections then start at line 15. */
static char *init_without_flow(void) {
  const char *cut = strstr(INIT_YAML, "flow_policies:");
  return strndup(INIT_YAML, (size_t)(cut - INIT_YAML));
}

/* Returns a malloc'd copy of s with the first occurrence of from replaced. */
static char *subst(const char *s, const char *from, const char *to) {
  const char *at = strstr(s, from);
  assert_non_null(at);
  size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
  char *r = malloc(n);
  assert_non_null(r);
  snprintf(r, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
  return r;
}

static char *concat(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 1;
  char *r = malloc(n);
  assert_non_null(r);
  snprintf(r, n, "%s%s", a, b);
  return r;
}

static struct config *load_ok(const char *yaml) {
  struct config *c = NULL;
  char err[512] = "";
  int rc = config_load_string(yaml, strlen(yaml), "/inst", "t.yaml", &c, err, sizeof err);
  if (rc) fail_msg("unexpected error %d: %s", rc, err);
  assert_non_null(c);
  return c;
}

/* The load fails with SG_ECONFIG, "t.yaml:LINE: " and both phrases. */
static void expect_error(const char *yaml, int line, const char *phrase1, const char *phrase2) {
  struct config *c = (struct config *)1;
  char err[512] = "", prefix[32];
  int rc = config_load_string(yaml, strlen(yaml), "/inst", "t.yaml", &c, err, sizeof err);
  if (rc != SG_ECONFIG) fail_msg("expected SG_ECONFIG, got %d (%s)", rc, err);
  assert_null(c);
  snprintf(prefix, sizeof prefix, "t.yaml:%d: ", line);
  if (strncmp(err, prefix, strlen(prefix)) != 0) fail_msg("expected prefix '%s' in '%s'", prefix, err);
  if (phrase1 && !strstr(err, phrase1)) fail_msg("expected '%s' in '%s'", phrase1, err);
  if (phrase2 && !strstr(err, phrase2)) fail_msg("expected '%s' in '%s'", phrase2, err);
  assert_null(strchr(err, '\n'));
}

static void expect_error_free(char *yaml, int line, const char *p1, const char *p2) {
  expect_error(yaml, line, p1, p2);
  free(yaml);
}

/* ---- the two documented configs ---------------------------------------- */

static void test_init_config(void **state) {
  (void)state;
  struct config *c = load_ok(INIT_YAML);
  assert_int_equal(atomic_load(&c->refs), 1);
  assert_string_equal(c->path, "/inst/t.yaml");
  assert_string_equal(c->dir, "/inst");
  assert_string_equal(c->hostname, "gw.example.com");
  assert_int_equal(c->shards, 0);
  assert_null(c->user);
  assert_null(c->log_syslog);
  assert_string_equal(c->spool_dir, "/inst/spool");
  assert_string_equal(c->key_store, "/inst/keys");
  assert_string_equal(c->hsm.module, "remote");
  assert_string_equal(c->hsm.token, "sealgate");
  assert_string_equal(c->hsm.pin_file, "/inst/hsm/pin");
  assert_false(c->trust_system_cas);

  assert_int_equal(c->n_listeners, 1);
  const struct config_listener *l = &c->listeners[0];
  assert_string_equal(l->name, "main");
  assert_string_equal(l->address.host, "127.0.0.1");
  assert_int_equal(l->address.port, 2525);
  assert_int_equal(l->direction, CONFIG_OUTGOING);
  assert_string_equal(l->flow_policy, "default");
  assert_string_equal(l->next_hop.addr.host, "127.0.0.1");
  assert_int_equal(l->next_hop.addr.port, 2526);
  assert_int_equal(l->next_hop.tls, CONFIG_TLS_NONE);
  assert_null(l->next_hop.ca_file);
  assert_int_equal(l->n_relay_from, 2);
  assert_int_equal(l->relay_from[0].family, AF_INET);
  assert_int_equal(l->relay_from[0].prefix, 32);
  assert_int_equal(l->relay_from[1].family, AF_INET6);
  assert_int_equal(l->relay_from[1].prefix, 128);
  assert_int_equal(l->n_local_domains, 0);
  assert_int_equal(l->tls, CONFIG_TLS_NONE);
  assert_null(l->tls_certificate);
  assert_null(l->sending_profile);
  assert_int_equal(l->line, 3);

  assert_int_equal(c->n_flow_policies, 1);
  const struct config_flow_policy *fp = &c->flow_policies[0];
  assert_string_equal(fp->name, "default");
  assert_false(fp->smime_decrypt_verify);
  assert_true(fp->keep_signature);
  assert_false(fp->harvest_enabled);
  assert_false(fp->harvest_on_failed_verification);
  assert_false(fp->harvest_updated_keys);
  assert_int_equal(fp->line, 16);
  assert_int_equal(c->n_sending_profiles + c->n_content_filters + c->n_mail_policies, 0);
  assert_null(c->message_filters);
  config_unref(c);
}

static void test_limit_defaults(void **state) {
  (void)state;
  struct config *c = load_ok(INIT_YAML);
  const struct config_limits *lim = &c->limits;
  assert_int_equal(lim->message_size, 50ull * 1024 * 1024);
  assert_int_equal(lim->recipients, 1000);
  assert_int_equal(lim->connections_per_client, 100);
  assert_int_equal(lim->connection_rate_per_client, 0);
  assert_int_equal(lim->max_hops, 50);
  assert_int_equal(lim->command_timeout_ms, 60000);
  assert_int_equal(lim->idle_timeout_ms, 300000);
  assert_int_equal(lim->data_line_length, 65536);
  assert_int_equal(lim->max_errors, 10);
  assert_int_equal(lim->disk_reserve, 100ull * 1024 * 1024);
  assert_int_equal(lim->queue_lifetime_ms, 5ull * 86400 * 1000);
  assert_int_equal(lim->retry_min_ms, 60000);
  assert_int_equal(lim->retry_max_ms, 3600000);
  assert_int_equal(lim->delivery_connections, 16);
  assert_int_equal(lim->connect_timeout_ms, 30000);
  assert_int_equal(lim->reply_timeout_ms, 300000);
  config_unref(c);
}

static void test_hostname_default(void **state) {
  (void)state;
  char host[256] = "";
  char *yaml = subst(INIT_YAML, "hostname: gw.example.com", "# no hostname");
  struct config *c = load_ok(yaml);
  assert_int_equal(gethostname(host, sizeof host - 1), 0);
  assert_string_equal(c->hostname, host[0] ? host : "localhost");
  config_unref(c);
  free(yaml);
}

static void test_optional_sections(void **state) {
  (void)state;
  char *base = init_without_flow();
  char *yaml = concat(base, OPTIONAL_YAML);
  struct config *c = load_ok(yaml);

  assert_int_equal(c->n_sending_profiles, 1);
  const struct config_sending_profile *p = config_sending_profile_find(c, "signenc");
  assert_non_null(p);
  assert_int_equal(p->mode, CONFIG_MODE_SIGN_ENCRYPT);
  assert_string_equal(p->signing_certificate, "org");
  assert_int_equal(p->missing_key_action, CONFIG_MISSING_SPLIT);
  assert_int_equal(p->sign_mode, CONFIG_SIGN_DETACHED);
  assert_int_equal(p->encryption, CONFIG_ENC_AUTO);
  assert_int_equal(p->signature, CONFIG_SIG_RSA_PKCS1);
  assert_int_equal(p->key_transport, CONFIG_KT_RSA_PKCS1);
  assert_int_equal(p->line, 16);

  assert_int_equal(c->n_content_filters, 1);
  const struct config_content_filter *f = &c->content_filters[0];
  assert_string_equal(f->name, "confidential");
  assert_int_equal(f->direction, CONFIG_OUTGOING);
  assert_string_equal(f->condition, "subject == \"(?i)confidential\" or body-contains(\"confidential\")");
  assert_int_equal(f->n_actions, 1);
  assert_string_equal(f->actions[0], "smime-gateway(\"signenc\")");

  assert_int_equal(c->n_mail_policies, 1);
  const struct config_mail_policy *mp = &c->mail_policies[0];
  assert_string_equal(mp->name, "default");
  assert_int_equal(mp->n_senders, 1);
  assert_string_equal(mp->senders[0], "*");
  assert_string_equal(mp->recipients[0], "*");
  assert_int_equal(mp->n_content_filters, 1);
  assert_string_equal(mp->content_filters[0], "confidential");

  const struct config_flow_policy *fp = config_flow_policy_find(c, "default");
  assert_non_null(fp);
  assert_true(fp->smime_decrypt_verify);
  assert_true(fp->keep_signature);
  assert_true(fp->harvest_enabled);
  assert_false(fp->harvest_on_failed_verification);
  assert_true(fp->harvest_updated_keys);

  assert_non_null(c->message_filters);
  assert_non_null(strstr(c->message_filters, "quarantine(\"Policy\"); }\n"));
  assert_int_equal(strncmp(c->message_filters, "quarantine_smime_messages:", 26), 0);
  assert_int_equal(c->message_filters_line, 37); /* first text line, below "|" */
  config_unref(c);
  free(yaml);
  free(base);
}

/* Every extension key, the mapping next_hop and the other value forms. */
static const char EXTENDED_TAIL[] =
    "shards: 4\n"
    "user: sealgate\n"
    "log: {syslog: sealgate-test}\n"
    "trust: {system_cas: true}\n"
    "limits:\n"
    "  message_size: \"10M\"\n"
    "  recipients: 50\n"
    "  connections_per_client: 7\n"
    "  connection_rate_per_client: 30\n"
    "  max_hops: 20\n"
    "  command_timeout: \"45s\"\n"
    "  idle_timeout: 120\n"
    "  data_line_length: \"2K\"\n"
    "  max_errors: 3\n"
    "  disk_reserve: \"1G\"\n"
    "  queue_lifetime: \"2d\"\n"
    "  retry_min: \"250ms\"\n"
    "  retry_max: \"2h\"\n"
    "  delivery_connections: 4\n"
    "  connect_timeout: \"10s\"\n"
    "  reply_timeout: \"3m\"\n"
    "sending_profiles:\n"
    "  - name: enc\n"
    "    mode: encrypt\n"
    "    missing_key_action: drop\n"
    "    encryption: aes256-gcm\n"
    "    key_transport: rsa-oaep\n"
    "  - name: tri\n"
    "    mode: triple\n"
    "    signing_certificate: org\n"
    "    sign_mode: opaque\n"
    "    signature: rsa-pss\n";

static void test_extensions(void **state) {
  (void)state;
  char *a = subst(INIT_YAML, "  module: remote\n", "  module: lib/softhsm2.so\n");
  char *b = subst(a, "    next_hop: 127.0.0.1:2526\n",
                  "    next_hop: {address: \"[::1]:2526\", tls: verify, ca_file: /etc/ca.pem}\n"
                  "  - name: in\n"
                  "    address: \"[::]:25\"\n"
                  "    direction: incoming\n"
                  "    local_domains: [Example.COM, mail.example.org]\n"
                  "    next_hop: mx.internal.example:25\n"
                  "    tls: required\n"
                  "    tls_certificate: org\n"
                  "    sending_profile: tri\n");
  char *yaml = concat(b, EXTENDED_TAIL);
  struct config *c = load_ok(yaml);
  assert_int_equal(c->shards, 4);
  assert_int_equal(config_effective_shards(c), 4);
  assert_string_equal(c->user, "sealgate");
  assert_string_equal(c->log_syslog, "sealgate-test");
  assert_true(c->trust_system_cas);
  assert_string_equal(c->hsm.module, "/inst/lib/softhsm2.so");
  assert_int_equal(c->limits.message_size, 10ull << 20);
  assert_int_equal(c->limits.recipients, 50);
  assert_int_equal(c->limits.connections_per_client, 7);
  assert_int_equal(c->limits.connection_rate_per_client, 30);
  assert_int_equal(c->limits.max_hops, 20);
  assert_int_equal(c->limits.command_timeout_ms, 45000);
  assert_int_equal(c->limits.idle_timeout_ms, 120000); /* bare integer = seconds */
  assert_int_equal(c->limits.data_line_length, 2048);
  assert_int_equal(c->limits.max_errors, 3);
  assert_int_equal(c->limits.disk_reserve, 1ull << 30);
  assert_int_equal(c->limits.queue_lifetime_ms, 2ull * 86400000);
  assert_int_equal(c->limits.retry_min_ms, 250);
  assert_int_equal(c->limits.retry_max_ms, 7200000);
  assert_int_equal(c->limits.delivery_connections, 4);
  assert_int_equal(c->limits.connect_timeout_ms, 10000);
  assert_int_equal(c->limits.reply_timeout_ms, 180000);

  const struct config_listener *m = config_listener_find(c, "main");
  assert_string_equal(m->next_hop.addr.host, "::1");
  assert_int_equal(m->next_hop.tls, CONFIG_TLS_VERIFY);
  assert_string_equal(m->next_hop.ca_file, "/etc/ca.pem");
  const struct config_listener *in = config_listener_find(c, "in");
  assert_non_null(in);
  assert_string_equal(in->address.host, "::");
  assert_int_equal(in->address.port, 25);
  assert_int_equal(in->direction, CONFIG_INCOMING);
  assert_int_equal(in->n_local_domains, 2);
  assert_string_equal(in->local_domains[0], "example.com"); /* lower-cased */
  assert_string_equal(in->next_hop.addr.host, "mx.internal.example");
  assert_int_equal(in->tls, CONFIG_TLS_REQUIRED);
  assert_string_equal(in->tls_certificate, "org");
  assert_string_equal(in->sending_profile, "tri");
  assert_string_equal(in->flow_policy, "default"); /* defaulted */
  assert_int_equal(in->n_relay_from, 2);           /* defaulted: loopback */

  const struct config_sending_profile *e = config_sending_profile_find(c, "enc");
  assert_int_equal(e->mode, CONFIG_MODE_ENCRYPT);
  assert_null(e->signing_certificate);
  assert_int_equal(e->missing_key_action, CONFIG_MISSING_DROP);
  assert_int_equal(e->encryption, CONFIG_ENC_AES256_GCM);
  assert_int_equal(e->key_transport, CONFIG_KT_RSA_OAEP);
  const struct config_sending_profile *t = config_sending_profile_find(c, "tri");
  assert_int_equal(t->mode, CONFIG_MODE_TRIPLE);
  assert_int_equal(t->sign_mode, CONFIG_SIGN_OPAQUE);
  assert_int_equal(t->signature, CONFIG_SIG_RSA_PSS);
  config_unref(c);
  free(yaml);
  free(b);
  free(a);
}

static void test_shards_auto(void **state) {
  (void)state;
  char *yaml = concat(INIT_YAML, "shards: \"auto\"\n");
  struct config *c = load_ok(yaml);
  assert_int_equal(c->shards, 0);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned want = n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
  assert_int_equal(config_effective_shards(c), want);
  assert_true(config_effective_shards(c) >= 1);
  config_unref(c);
  free(yaml);
}

static void test_ref_unref_find(void **state) {
  (void)state;
  struct config *c = load_ok(INIT_YAML);
  assert_ptr_equal(config_ref(c), c);
  assert_int_equal(atomic_load(&c->refs), 2);
  config_unref(c);
  assert_int_equal(atomic_load(&c->refs), 1);
  assert_non_null(config_listener_find(c, "main"));
  assert_null(config_listener_find(c, "nope"));
  assert_null(config_listener_find(c, NULL));
  assert_null(config_flow_policy_find(c, "other"));
  assert_null(config_sending_profile_find(c, "signenc"));
  config_unref(c); /* the last reference: freed (ASan checks) */
  config_unref(NULL);
  assert_null(config_ref(NULL));
}

/* ---- error classes ------------------------------------------------------ */

static void test_err_unknown_keys(void **state) {
  (void)state;
  expect_error_free(subst(INIT_YAML, "    direction: outgoing\n",
                          "    direction: outgoing\n    adress: 127.0.0.1:1\n"),
                    6, "unknown key 'adress' in listeners[0]", "did you mean 'address'?");
  expect_error_free(concat(INIT_YAML, "spool_dri: x\n"), 17, "unknown key 'spool_dri' at top level",
                    "'spool_dir'");
  expect_error_free(concat(INIT_YAML, "limits:\n  message_sise: \"1M\"\n"), 18,
                    "unknown key 'message_sise' in limits", NULL);
  expect_error_free(subst(INIT_YAML, "  token: sealgate\n", "  token: sealgate\n  pin: x\n"), 14,
                    "unknown key 'pin' in hsm", NULL);
  expect_error_free(concat(INIT_YAML, "    harvest: {enabled: true, every: true}\n"), 17,
                    "unknown key 'every' in flow_policies[0].harvest", NULL);
}

static void test_err_duplicates(void **state) {
  (void)state;
  expect_error_free(concat(INIT_YAML, "spool_dir: other\n"), 17,
                    "duplicate key 'spool_dir' (first at line 9)", NULL);
  expect_error_free(subst(INIT_YAML, "spool_dir: spool\n",
                          "  - name: main\n    address: 127.0.0.1:2527\n"
                          "    direction: outgoing\n    next_hop: 127.0.0.1:2526\nspool_dir: spool\n"),
                    9, "listeners[1]: duplicate name 'main' (first at line 3)", NULL);
  expect_error_free(subst(INIT_YAML, "spool_dir: spool\n",
                          "  - name: second\n    address: 127.0.0.1:2525\n"
                          "    direction: outgoing\n    next_hop: 127.0.0.1:2526\nspool_dir: spool\n"),
                    10, "listeners[1].address", "already used by listener 'main'");
  expect_error_free(concat(INIT_YAML, "  - name: default\n"), 17,
                    "flow_policies[1]: duplicate name 'default'", NULL);
}

static void test_err_bad_values(void **state) {
  (void)state;
  expect_error_free(concat(INIT_YAML, "trust:\n  system_cas: yes\n"), 18, "trust.system_cas",
                    "'yes' is not a boolean in YAML 1.2: use true or false");
  expect_error_free(concat(INIT_YAML, "trust:\n  system_cas: \"true\"\n"), 18, "trust.system_cas",
                    "quoted");
  expect_error_free(concat(INIT_YAML, "limits:\n  message_size: big\n"), 18,
                    "limits.message_size: invalid size 'big'", "(use e.g. \"50M\")");
  expect_error_free(concat(INIT_YAML, "limits:\n  message_size: \"512\"\n"), 18,
                    "limits.message_size: '512' is out of range 1K..2G", NULL);
  expect_error_free(concat(INIT_YAML, "limits:\n  idle_timeout: \"5x\"\n"), 18,
                    "limits.idle_timeout: invalid duration '5x'", "unknown unit");
  expect_error_free(concat(INIT_YAML, "limits:\n  recipients: 0\n"), 18,
                    "limits.recipients: 0 is out of range 1..100000", NULL);
  expect_error_free(concat(INIT_YAML, "limits:\n  max_hops: \"50\"\n"), 18, "limits.max_hops",
                    "quoted string");
  expect_error_free(concat(INIT_YAML, "limits:\n  max_hops: 1001\n"), 18, "limits.max_hops",
                    "out of range 1..1000");
  expect_error_free(concat(INIT_YAML, "limits:\n  data_line_length: 999\n"), 18,
                    "limits.data_line_length", "out of range");
  expect_error_free(concat(INIT_YAML, "limits:\n  retry_min: \"2h\"\n  retry_max: \"1h\"\n"), 18,
                    "limits: retry_min must not be larger than retry_max", NULL);
  expect_error_free(concat(INIT_YAML, "    harvest: {enabled: }\n"), 17, "flow_policies[0].harvest.enabled",
                    "needs a value");
  expect_error_free(concat(INIT_YAML, "shards: 0\n"), 17, "shards", "out of range 1..256");
  expect_error_free(concat(INIT_YAML, "shards: 257\n"), 17, "shards", "out of range 1..256");
  expect_error_free(concat(INIT_YAML, "shards: many\n"), 17, "shards", "\"auto\"");
  expect_error_free(subst(INIT_YAML, "gw.example.com", "\"gw example\""), 1,
                    "hostname: 'gw example' is not a valid host name", NULL);
}

static void test_err_addresses(void **state) {
  (void)state;
  expect_error_free(subst(INIT_YAML, "[\"127.0.0.1/32\", \"::1/128\"]", "[\"127.0.0.1/32\", \"10.0.0.0/33\"]"),
                    7, "listeners[0].relay_from[1]: invalid network '10.0.0.0/33'", "prefix");
  expect_error_free(subst(INIT_YAML, "127.0.0.1:2525", "127.0.0.1:70000"), 4,
                    "listeners[0].address: invalid address '127.0.0.1:70000'", "port");
  expect_error_free(subst(INIT_YAML, "127.0.0.1:2525", "\"::1:2525\""), 4, "listeners[0].address",
                    "without brackets");
  expect_error_free(subst(INIT_YAML, "next_hop: 127.0.0.1:2526", "next_hop: 127.0.0.1"), 8,
                    "listeners[0].next_hop", "needs a port");
  expect_error_free(subst(INIT_YAML, "next_hop: 127.0.0.1:2526",
                          "next_hop: {address: 127.0.0.1:2526, tls: may, ca_file: ca.pem}"),
                    8, "listeners[0].next_hop.ca_file", "only applies with tls: verify");
  expect_error_free(subst(INIT_YAML, "next_hop: 127.0.0.1:2526", "next_hop: {tls: may}"), 8,
                    "listeners[0].next_hop: missing required key 'address'", NULL);
  expect_error_free(subst(INIT_YAML, "    next_hop:", "    tls: verify\n    next_hop:"), 8,
                    "listeners[0].tls: invalid value 'verify'", "none, may, required");
}

static void test_err_missing_required(void **state) {
  (void)state;
  expect_error_free(subst(INIT_YAML, "key_store: keys\n", ""), 1, "missing required key 'key_store'", NULL);
  expect_error_free(subst(INIT_YAML, "  pin_file: hsm/pin\n", ""), 12,
                    "hsm: missing required key 'pin_file'", NULL);
  expect_error_free(init_without_flow(), 1, "missing required key 'flow_policies'", NULL);
  expect_error_free(subst(INIT_YAML, "  - name: default\n", "  - name: other\n"), 16, "flow_policies",
                    "needs a flow policy named 'default'");
  expect_error_free(subst(INIT_YAML, "    next_hop: 127.0.0.1:2526\n", ""), 3,
                    "listeners[0]: missing required key 'next_hop'", NULL);
  expect_error_free(subst(INIT_YAML, "hostname: gw.example.com", "hostname:"), 1, "hostname",
                    "needs a value");
  expect_error_free(concat(INIT_YAML, "listeners: []\n"), 17, "duplicate key 'listeners'", NULL);
  expect_error_free(concat("hostname: gw.example.com\nlisteners: []\n", strstr(INIT_YAML, "spool_dir:")),
                    2, "listeners: needs at least 1 entry", NULL);
}

static void test_err_listener_rules(void **state) {
  (void)state;
  expect_error_free(subst(INIT_YAML, "direction: outgoing", "direction: incoming"), 3,
                    "listeners[0]: an incoming listener needs local_domains", NULL);
  expect_error_free(subst(INIT_YAML, "direction: outgoing", "direction: incoming\n    local_domains: [\"bad domain\"]"),
                    6, "listeners[0].local_domains[0]", "not a valid domain name");
  expect_error_free(subst(INIT_YAML, "direction: outgoing", "direction: sideways"), 5,
                    "listeners[0].direction: invalid value 'sideways'", "outgoing, incoming");
  expect_error_free(subst(INIT_YAML, "flow_policy: default", "flow_policy: nosuch"), 6,
                    "listeners[0].flow_policy: no flow policy named 'nosuch'", NULL);
  expect_error_free(subst(INIT_YAML, "    next_hop:", "    sending_profile: nosuch\n    next_hop:"), 8,
                    "listeners[0].sending_profile: no sending profile named 'nosuch'", NULL);
  expect_error_free(subst(INIT_YAML, "    next_hop:", "    tls: may\n    next_hop:"), 8,
                    "listeners[0].tls: may needs tls_certificate", NULL);
  expect_error_free(subst(INIT_YAML, "    next_hop:", "    tls_certificate: org\n    next_hop:"), 8,
                    "listeners[0].tls_certificate: has no effect without tls", NULL);
  expect_error_free(subst(INIT_YAML, "127.0.0.1:2526", "\"[::1]:25\"\n  - name: b\n"
                          "    address: \"[0:0::1]:2525\"\n    direction: outgoing\n"
                          "    next_hop: x.example:25\n  - name: c\n    address: \"[::1]:2525\"\n"
                          "    direction: outgoing\n    next_hop: x.example:25"),
                    14, "listeners[2].address: ::1:2525 is already used by listener 'b'", NULL);
  expect_error_free(subst(INIT_YAML, "[\"127.0.0.1/32\", \"::1/128\"]", "\"10.0.0.0/8\""), 7,
                    "listeners[0].relay_from: expected a list, got a single value", NULL);
  expect_error_free(subst(INIT_YAML, "name: main", "name: [main]"), 3,
                    "listeners[0].name: expected a single value, got a list", NULL);
}

static void test_err_profiles_and_policies(void **state) {
  (void)state;
  expect_error_free(concat(INIT_YAML, "sending_profiles:\n  - name: s\n    mode: sign\n"), 18,
                    "sending_profiles[0]: mode sign signs, so it needs signing_certificate", NULL);
  expect_error_free(concat(INIT_YAML, "sending_profiles:\n  - name: e\n    mode: encrypt\n"
                                      "    sign_mode: opaque\n"),
                    20, "sending_profiles[0]: sign_mode does not apply to mode encrypt", NULL);
  expect_error_free(concat(INIT_YAML, "sending_profiles:\n  - name: s\n    mode: sign\n"
                                      "    signing_certificate: org\n    missing_key_action: drop\n"),
                    21, "missing_key_action does not apply to mode sign", NULL);
  expect_error_free(concat(INIT_YAML, "sending_profiles:\n  - name: s\n    mode: shout\n"), 19,
                    "sending_profiles[0].mode: invalid value 'shout'", "sign-encrypt");
  expect_error_free(concat(INIT_YAML, "mail_policies:\n  - name: p\n    direction: outgoing\n"
                                      "    senders: [\"*\"]\n    recipients: [\"*\"]\n"
                                      "    content_filters: [ghost]\n"),
                    22, "mail_policies[0].content_filters[0]: no content filter named 'ghost'", NULL);
  expect_error_free(concat(INIT_YAML, "content_filters:\n  - name: f\n    direction: outgoing\n"
                                      "    condition: 'true'\n    actions: []\n"),
                    21, "content_filters[0].actions: needs at least 1 entry", NULL);
  expect_error_free(concat(INIT_YAML, "message_filters: [a]\n"), 17, "message_filters", "got a list");
}

static void test_err_document_shape(void **state) {
  (void)state;
  expect_error("a: 1\nb: 2\n  c: 3\n", 3, "YAML syntax error", "mapping values");
  expect_error("", 1, "the file is empty", NULL);
  expect_error("# only a comment\n", 1, "the file is empty", NULL);
  expect_error("- a\n- b\n", 1, "the file must be a mapping", "got a list");
  expect_error("just text\n", 1, "the file must be a mapping", NULL);
  expect_error_free(concat(INIT_YAML, "---\nhostname: x\n"), 18, "one YAML document", NULL);
  expect_error_free(concat(INIT_YAML, "user: !!binary aGk=\n"), 17, "user: YAML tag", NULL);
  expect_error_free(concat(INIT_YAML, "user: \"a\\0b\"\n"), 17, "user", "NUL");
  expect_error_free(concat(INIT_YAML, "user: \"a\\nb\"\n"), 17, "user", "one line");
}

static void test_error_message_is_safe_and_bounded(void **state) {
  (void)state;
  struct config *c = NULL;
  char err[16];
  char *yaml = concat(INIT_YAML, "\"bad\\u0007key\\nX\": 1\n");
  /* A control character in a key is shown as '?', never raw. */
  expect_error(yaml, 17, "unknown key 'bad?key?X'", NULL);
  memset(err, 'Z', sizeof err);
  assert_int_equal(config_load_string(yaml, strlen(yaml), "/inst", "t.yaml", &c, err, sizeof err),
                   SG_ECONFIG);
  assert_int_equal(strlen(err), sizeof err - 1); /* truncated, terminated */
  assert_null(c);
  assert_int_equal(config_load_string(yaml, strlen(yaml), "/inst", "t.yaml", &c, NULL, 0), SG_ECONFIG);
  free(yaml);
}

/* ---- files on disk ------------------------------------------------------ */

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static void test_load_file(void **state) {
  (void)state;
  char tmpl[] = "/tmp/sg-config-test-XXXXXX", cwd[PATH_MAX], path[PATH_MAX], err[512] = "";
  char *dir = mkdtemp(tmpl), *real;
  struct config *c = NULL;
  assert_non_null(dir);
  real = realpath(dir, NULL);
  assert_non_null(real);
  snprintf(path, sizeof path, "%s/sealgate.yaml", dir);
  write_file(path, INIT_YAML);
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dir), 0);

  /* A relative path: the snapshot still holds absolute ones. */
  assert_int_equal(config_load("sealgate.yaml", &c, err, sizeof err), 0);
  char want[PATH_MAX + 32];
  snprintf(want, sizeof want, "%s/sealgate.yaml", real);
  assert_string_equal(c->path, want);
  assert_string_equal(c->dir, real);
  snprintf(want, sizeof want, "%s/spool", real);
  assert_string_equal(c->spool_dir, want);
  config_unref(c);

  /* Errors are labelled with the path as given. */
  char *bad = concat(INIT_YAML, "bogus: 1\n");
  write_file(path, bad);
  free(bad);
  assert_int_equal(config_load("sealgate.yaml", &c, err, sizeof err), SG_ECONFIG);
  assert_null(c);
  assert_string_equal(err, "sealgate.yaml:17: unknown key 'bogus' at top level");

  assert_int_equal(config_load("missing.yaml", &c, err, sizeof err), SG_ECONFIG);
  assert_string_equal(err, "missing.yaml: cannot open: No such file or directory");
  assert_int_equal(config_load(".", &c, err, sizeof err), SG_ECONFIG);
  assert_non_null(strstr(err, "not a regular file"));

  assert_int_equal(unlink(path), 0);
  assert_int_equal(chdir(cwd), 0);
  assert_int_equal(rmdir(dir), 0);
  free(real);
}

/* ---- parse helpers ------------------------------------------------------ */

static void test_parse_duration(void **state) {
  (void)state;
  static const struct { const char *s; uint64_t ms; } ok[] = {
      {"250ms", 250}, {"30s", 30000}, {"5m", 300000}, {"2h", 7200000}, {"5d", 432000000},
      {"10", 10000}, {"0", 0}, {"007s", 7000}};
  static const char *const bad[] = {"", "-5s", "5x", "s", " 5s", "5s ", "5 s", "1.5s", "+5s",
                                    "5S", "5ms5", "18446744073709551615", "99999999999999999999s",
                                    "213503982335d"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    uint64_t v = 1;
    assert_int_equal(config_parse_duration(ok[i].s, &v), 0);
    assert_int_equal(v, ok[i].ms);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 12345;
    if (config_parse_duration(bad[i], &v) != SG_EINVAL) fail_msg("accepted duration '%s'", bad[i]);
    assert_int_equal(v, 12345); /* untouched on failure */
  }
  uint64_t v;
  assert_int_equal(config_parse_duration(NULL, &v), SG_EINVAL);
  assert_int_equal(config_parse_duration("18446744073709551615ms", &v), 0);
  assert_int_equal(v, UINT64_MAX);
}

static void test_parse_size(void **state) {
  (void)state;
  static const struct { const char *s; uint64_t b; } ok[] = {
      {"50M", 50ull << 20}, {"512K", 512ull << 10}, {"1G", 1ull << 30}, {"100", 100},
      {"100B", 100}, {"50MB", 50ull << 20}, {"1k", 1024}, {"0", 0}, {"17179869183G", 17179869183ull << 30}};
  static const char *const bad[] = {"", "-1", "5T", "big", "M", "1.5M", " 1M", "1M ", "1MBB",
                                    "17179869184G", "18446744073709551616", "0x10"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    uint64_t v = 1;
    assert_int_equal(config_parse_size(ok[i].s, &v), 0);
    assert_int_equal(v, ok[i].b);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 12345;
    if (config_parse_size(bad[i], &v) != SG_EINVAL) fail_msg("accepted size '%s'", bad[i]);
    assert_int_equal(v, 12345);
  }
}

static void test_parse_cidr(void **state) {
  (void)state;
  struct config_cidr c;
  static const uint8_t ten[4] = {10, 0, 0, 0}, host[4] = {192, 0, 2, 1};
  assert_int_equal(config_parse_cidr("10.0.0.0/8", &c), 0);
  assert_int_equal(c.family, AF_INET);
  assert_int_equal(c.prefix, 8);
  assert_memory_equal(c.addr, ten, 4);
  assert_int_equal(config_parse_cidr("10.1.2.3/8", &c), 0); /* host bits cleared */
  assert_memory_equal(c.addr, ten, 4);
  assert_int_equal(config_parse_cidr("192.0.2.1", &c), 0);
  assert_int_equal(c.prefix, 32);
  assert_memory_equal(c.addr, host, 4);
  assert_int_equal(config_parse_cidr("::1/128", &c), 0);
  assert_int_equal(c.family, AF_INET6);
  assert_int_equal(c.prefix, 128);
  assert_int_equal(c.addr[15], 1);
  assert_int_equal(config_parse_cidr("2001:db8::", &c), 0);
  assert_int_equal(c.prefix, 128);
  assert_int_equal(config_parse_cidr("0.0.0.0/0", &c), 0);
  assert_int_equal(c.prefix, 0);
  assert_int_equal(config_parse_cidr("2001:db8:ffff::/33", &c), 0);
  assert_int_equal(c.addr[4], 0x80); /* bit 33 kept, the rest of byte 4 cleared */
  assert_int_equal(c.addr[5], 0);
  static const char *const bad[] = {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "abc",
                                    "/8", "10.0.0.0/8x", "10.0.0/8", "", "10.0.0.0/8/8",
                                    "fe80::1%eth0/64", "10.0.0.0/+8"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (config_parse_cidr(bad[i], &c) != SG_EINVAL) fail_msg("accepted cidr '%s'", bad[i]);
}

static void test_parse_hostport(void **state) {
  (void)state;
  struct config_hostport hp = {0};
  assert_int_equal(config_parse_hostport("127.0.0.1:2525", &hp), 0);
  assert_string_equal(hp.host, "127.0.0.1");
  assert_int_equal(hp.port, 2525);
  free(hp.host);
  assert_int_equal(config_parse_hostport("[::1]:2525", &hp), 0);
  assert_string_equal(hp.host, "::1");
  assert_int_equal(hp.port, 2525);
  free(hp.host);
  assert_int_equal(config_parse_hostport("mx.example.com:25", &hp), 0);
  assert_string_equal(hp.host, "mx.example.com");
  assert_int_equal(hp.port, 25);
  free(hp.host);
  assert_int_equal(config_parse_hostport("localhost:65535", &hp), 0);
  assert_int_equal(hp.port, 65535);
  free(hp.host);
  hp.host = NULL;
  static const char *const bad[] = {"127.0.0.1:0", ":25", "host:", "host:65536", "::1:25",
                                    "[::1]25", "[zz]:25", "256.1.1.1:25", "bad_host:25", "host:+25",
                                    "host:25x", "host", "", "[::1]", "-bad.example:25",
                                    "a..b:25", "[127.0.0.1]:25", "host:99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (config_parse_hostport(bad[i], &hp) != SG_EINVAL) fail_msg("accepted hostport '%s'", bad[i]);
    assert_null(hp.host); /* nothing allocated on failure */
  }
  assert_int_equal(config_parse_hostport(NULL, &hp), SG_EINVAL);
}

static struct sockaddr_storage sa_of(const char *ip) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else {
    assert_int_equal(inet_pton(AF_INET6, ip, &v6->sin6_addr), 1);
    v6->sin6_family = AF_INET6;
  }
  return ss;
}

static bool match(const char *cidr, const char *ip) {
  struct config_cidr c;
  assert_int_equal(config_parse_cidr(cidr, &c), 0);
  struct sockaddr_storage ss = sa_of(ip);
  return config_cidr_match(&c, (const struct sockaddr *)&ss);
}

static void test_cidr_match(void **state) {
  (void)state;
  assert_true(match("10.0.0.0/8", "10.255.1.2"));
  assert_false(match("10.0.0.0/8", "11.0.0.1"));
  assert_true(match("192.168.1.0/25", "192.168.1.127"));
  assert_false(match("192.168.1.0/25", "192.168.1.128"));
  assert_true(match("127.0.0.1/32", "127.0.0.1"));
  assert_false(match("127.0.0.1/32", "127.0.0.2"));
  assert_true(match("0.0.0.0/0", "203.0.113.9"));
  assert_false(match("0.0.0.0/0", "2001:db8::1")); /* a v4 network never holds a v6 client */
  assert_true(match("2001:db8::/32", "2001:db8:1::5"));
  assert_false(match("2001:db8::/32", "2001:db9::5"));
  assert_true(match("::1/128", "::1"));
  assert_false(match("::1/128", "127.0.0.1"));
  /* Dual-stack sockets: an IPv4 client shows up as ::ffff:a.b.c.d. */
  assert_true(match("10.0.0.0/8", "::ffff:10.1.2.3"));
  assert_false(match("10.0.0.0/8", "::ffff:11.1.2.3"));
  assert_true(match("127.0.0.1/32", "::ffff:127.0.0.1"));
  /* And a v4-mapped network written in v6 form matches plain v4 clients. */
  assert_true(match("::ffff:10.0.0.0/104", "10.9.9.9"));
  assert_false(match("::ffff:10.0.0.0/104", "11.9.9.9"));
  struct config_cidr c;
  assert_int_equal(config_parse_cidr("10.0.0.0/8", &c), 0);
  assert_false(config_cidr_match(&c, NULL));
  assert_false(config_cidr_match(NULL, NULL));
  struct sockaddr unix_sa = {.sa_family = AF_UNIX};
  assert_false(config_cidr_match(&c, &unix_sa));
}

/* ---- allocation failures ------------------------------------------------ */

/* Fail the 1st, 2nd, ... allocation until a load succeeds: each failure
 * must be SG_ENOMEM with no partial config and (under ASan) no leak. */
static void test_alloc_failures(void **state) {
  (void)state;
  char *base = init_without_flow();
  char *a = concat(base, OPTIONAL_YAML);
  char *yaml = subst(a, "  - name: main\n",
                     "  - name: in\n    address: \"[::1]:25\"\n    direction: incoming\n"
                     "    local_domains: [Example.com]\n    next_hop: {address: a.example:25}\n"
                     "  - name: main\n");
  long n;
  for (n = 0; n < 10000; n++) {
    struct config *c = NULL;
    char err[256] = "";
    alloc_countdown = n;
    int rc = config_load_string(yaml, strlen(yaml), "/inst", "t.yaml", &c, err, sizeof err);
    alloc_countdown = -1;
    if (rc == 0) {
      assert_int_equal(c->n_listeners, 2);
      config_unref(c);
      break;
    }
    if (rc != SG_ENOMEM) fail_msg("allocation %ld: got %d (%s)", n, rc, err);
    assert_null(c);
    assert_non_null(strstr(err, "out of memory"));
  }
  assert_true(n > 20); /* the loop really walked through many allocations */
  assert_true(n < 10000);
  free(yaml);
  free(a);
  free(base);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_config),
      cmocka_unit_test(test_limit_defaults),
      cmocka_unit_test(test_hostname_default),
      cmocka_unit_test(test_optional_sections),
      cmocka_unit_test(test_extensions),
      cmocka_unit_test(test_shards_auto),
      cmocka_unit_test(test_ref_unref_find),
      cmocka_unit_test(test_err_unknown_keys),
      cmocka_unit_test(test_err_duplicates),
      cmocka_unit_test(test_err_bad_values),
      cmocka_unit_test(test_err_addresses),
      cmocka_unit_test(test_err_missing_required),
      cmocka_unit_test(test_err_listener_rules),
      cmocka_unit_test(test_err_profiles_and_policies),
      cmocka_unit_test(test_err_document_shape),
      cmocka_unit_test(test_error_message_is_safe_and_bounded),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_parse_duration),
      cmocka_unit_test(test_parse_size),
      cmocka_unit_test(test_parse_cidr),
      cmocka_unit_test(test_parse_hostport),
      cmocka_unit_test(test_cidr_match),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
