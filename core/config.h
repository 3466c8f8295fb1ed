/*
 * config - sealgate.yaml, parsed and validated into an immutable snapshot.
 *
 * Owns: struct config and everything hanging off it.  Called by the daemon
 * (load at start and on reload), by sealctl (config check, init) and by
 * tests.  Trusts nothing in the file: every key is checked, unknown keys
 * and wrong types are errors naming the file and line, and the whole file
 * is validated before a struct config exists (R35: all or nothing).
 *
 * A loaded config is never modified.  It is reference counted so that
 * sessions keep the snapshot they began with across a reload: the daemon
 * publishes the current pointer with RCU and each user takes a reference
 * (config_ref) under rcu_read_lock and drops it with config_unref; the last
 * unref frees.  Paths in the snapshot are absolute (relative ones in the
 * file are resolved against the config file's folder).
 */
#ifndef SEALGATE_CONFIG_H
#define SEALGATE_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum config_direction { CONFIG_OUTGOING = 0, CONFIG_INCOMING = 1 };

/* Listener tls and next-hop tls share one enum; VERIFY only for next hops. */
enum config_tls { CONFIG_TLS_NONE = 0, CONFIG_TLS_MAY, CONFIG_TLS_REQUIRED, CONFIG_TLS_VERIFY };

struct config_hostport {
  char *host;    /* "127.0.0.1", "::1" (brackets stripped) or a DNS name */
  uint16_t port; /* 1..65535 */
};

struct config_cidr {
  int family;        /* AF_INET or AF_INET6 */
  uint8_t addr[16];  /* network byte order; first 4 bytes for AF_INET */
  unsigned prefix;   /* 0..32 or 0..128 */
};

struct config_next_hop {
  struct config_hostport addr;
  enum config_tls tls; /* NONE when the string form was used */
  char *ca_file;       /* absolute path or NULL */
};

struct config_listener {
  char *name;
  struct config_hostport address;
  enum config_direction direction;
  char *flow_policy;                 /* default "default"; exists in flow_policies */
  struct config_next_hop next_hop;
  struct config_cidr *relay_from;    /* default 127.0.0.1/32 and ::1/128 */
  size_t n_relay_from;
  char **local_domains;              /* lower-cased; required for incoming */
  size_t n_local_domains;
  enum config_tls tls;               /* NONE, MAY or REQUIRED */
  char *tls_certificate;             /* NULL if unset */
  char *sending_profile;             /* NULL if unset; exists in sending_profiles */
  int line;                          /* where it starts in the file */
};

enum config_mode { CONFIG_MODE_SIGN = 0, CONFIG_MODE_ENCRYPT, CONFIG_MODE_SIGN_ENCRYPT, CONFIG_MODE_TRIPLE };
enum config_sign_mode { CONFIG_SIGN_DETACHED = 0, CONFIG_SIGN_OPAQUE };
enum config_missing_key { CONFIG_MISSING_BOUNCE = 0, CONFIG_MISSING_DROP, CONFIG_MISSING_SPLIT };
enum config_encryption { CONFIG_ENC_AUTO = 0, CONFIG_ENC_AES256_CBC, CONFIG_ENC_AES256_GCM };
enum config_signature { CONFIG_SIG_RSA_PKCS1 = 0, CONFIG_SIG_RSA_PSS };
enum config_key_transport { CONFIG_KT_RSA_PKCS1 = 0, CONFIG_KT_RSA_OAEP };

/* The words the file uses for each value of the profile enums (index =
 * value; NULL-terminated), for tools that write profiles back. */
extern const char *const config_mode_names[], *const config_sign_mode_names[], *const config_missing_key_names[],
    *const config_encryption_names[], *const config_signature_names[], *const config_key_transport_names[];

struct config_sending_profile {
  char *name;
  enum config_mode mode;
  char *signing_certificate;         /* required when mode signs */
  enum config_sign_mode sign_mode;
  enum config_missing_key missing_key_action;
  enum config_encryption encryption;
  enum config_signature signature;
  enum config_key_transport key_transport;
  int line;
};

enum config_revocation { CONFIG_REVOCATION_SOFT = 0, CONFIG_REVOCATION_HARD = 1 };

struct config_flow_policy {
  char *name;
  bool smime_decrypt_verify;  /* default false */
  bool keep_signature;        /* default true */
  bool harvest_enabled;       /* harvest.enabled, default false */
  bool harvest_on_failed_verification;
  bool harvest_updated_keys;
  bool harvest_expired;       /* extension: harvest.expired, default false (R18) */
  bool harvest_self_signed;   /* extension: harvest.self_signed, default false (R18) */
  enum config_revocation revocation; /* extension, default soft */
  int line;
};

struct filter_cond;
struct filter_action;
struct filter_program;

/* Filters are compiled while the config loads (core/filter.h), so a
 * syntax error rejects the file as a whole (R35) and names the filter,
 * line and column. */
struct config_content_filter {
  char *name;
  enum config_direction direction;
  char *condition;
  char **actions;
  size_t n_actions;
  struct filter_cond *cond;        /* compiled condition */
  struct filter_action *parsed;    /* n_actions compiled actions */
  bool needs_body;                 /* the condition looks at the body */
  int line;
};

struct config_mail_policy {
  char *name;
  enum config_direction direction;
  char **senders;
  size_t n_senders;
  char **recipients;
  size_t n_recipients;
  char **content_filters;  /* names; each exists in content_filters */
  size_t n_content_filters;
  const struct config_content_filter **filters; /* the same, resolved (same direction) */
  int line;
};

/* `quarantines:` (extension): limits per quarantine.  Quarantines not
 * listed (created on first use, and Policy) get the defaults below. */
#define CONFIG_QUARANTINE_RETENTION_MS (14ull * 24 * 3600 * 1000) /* "14d" */
#define CONFIG_QUARANTINE_MAX_SIZE (1024ull * 1024 * 1024)          /* "1G" */
struct config_quarantine {
  char *name;
  uint64_t retention_ms;           /* 0 = keep until released or deleted */
  uint64_t max_size;               /* bytes; 0 = no limit */
  int line;
};

struct config_limits {
  uint64_t message_size;             /* bytes, "50M" */
  unsigned recipients;               /* 1000 */
  unsigned connections_per_client;   /* 100 */
  unsigned connection_rate_per_client; /* per minute; 0 = off */
  unsigned max_hops;                 /* 50 */
  /* Extensions beyond INTERFACE.md (documented in docs/CONFIG.md). */
  uint64_t command_timeout_ms;       /* "1m": one command line, first byte to end */
  uint64_t idle_timeout_ms;          /* "5m": waiting for the next command or data */
  uint64_t data_line_length;         /* 65536: longest DATA line accepted */
  unsigned max_errors;               /* 10: protocol errors before 421 + close */
  uint64_t disk_reserve;             /* "100M": free space kept; below it 452 4.3.1 */
  uint64_t data_memory;              /* "512M": message bytes all sessions together may hold
                                        while receiving; beyond it 452 4.3.1 */
  uint64_t queue_lifetime_ms;        /* "5d": then a DSN */
  uint64_t retry_min_ms;             /* "1m": first retry delay, doubled each time */
  uint64_t retry_max_ms;             /* "1h": cap of the retry delay */
  unsigned delivery_connections;     /* 16: per next hop per shard */
  uint64_t connect_timeout_ms;       /* "30s" */
  uint64_t reply_timeout_ms;         /* "5m": waiting for a next-hop reply */
  uint64_t harvested_store;          /* "512M": bound of the harvested keys (R20) */
};

struct config {
  atomic_int refs;       /* see config_ref/config_unref */
  char *path;            /* absolute path of the file */
  char *dir;             /* its folder */
  char *hostname;        /* default: gethostname() */
  unsigned shards;       /* 0 = auto (one per online CPU) */
  char *user;            /* NULL if unset */
  char *spool_dir;       /* absolute */
  char *key_store;       /* absolute */
  char *log_syslog;      /* extension: syslog ident, NULL = stderr only */
  struct config_limits limits;
  struct {
    char *module;        /* "remote", "inprocess" or an absolute module path */
    char *token;
    char *pin_file;      /* absolute */
    /* Extensions beyond INTERFACE.md (docs/CONFIG.md). */
    char *softhsm_conf;  /* absolute; default DIR/hsm/softhsm2.conf (remote, inprocess) */
    char *server_user;   /* root with `user:`: the token server's own user;
                            NULL = "sealgate-hsm" */
    unsigned workers;    /* crypto worker threads; 0 = one per online CPU */
  } hsm;
  bool trust_system_cas;
  char **trust_crl_files; /* extension: absolute paths */
  size_t n_trust_crl_files;
  struct config_listener *listeners;
  size_t n_listeners;    /* at least 1 */
  struct config_sending_profile *sending_profiles;
  size_t n_sending_profiles;
  struct config_flow_policy *flow_policies;
  size_t n_flow_policies; /* at least 1; one is named "default" */
  struct config_content_filter *content_filters;
  size_t n_content_filters;
  struct config_mail_policy *mail_policies;
  size_t n_mail_policies;
  char *message_filters;  /* raw text or NULL */
  int message_filters_line;
  struct filter_program *message_program; /* compiled message_filters, or NULL */
  char *quarantine_dir;   /* extension: absolute; default DIR/quarantine */
  struct config_quarantine *quarantines;
  size_t n_quarantines;
};

/*
 * Load and validate a config file.  On success *out holds a snapshot with
 * refs == 1 and 0 is returned.  On failure returns SG_ECONFIG (or SG_EIO /
 * SG_ENOMEM), *out is NULL and err holds one line "PATH:LINE: what was
 * wrong" (NUL-terminated, truncated to errlen).
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* The same from memory; dir resolves relative paths, name labels errors. */
int config_load_string(const char *yaml, size_t len, const char *dir,
                       const char *name, struct config **out, char *err,
                       size_t errlen);

struct config *config_ref(struct config *c);  /* returns c */
void config_unref(struct config *c);          /* NULL is fine */

const struct config_listener *config_listener_find(const struct config *c, const char *name);
const struct config_flow_policy *config_flow_policy_find(const struct config *c, const char *name);
const struct config_sending_profile *config_sending_profile_find(const struct config *c, const char *name);
/* The limits of quarantine name: its `quarantines:` entry, or the defaults. */
struct config_quarantine config_quarantine_limits(const struct config *c, const char *name);

/* "30s", "5m", "2h", "5d", "250ms", or a bare integer of seconds. */
int config_parse_duration(const char *s, uint64_t *ms_out);
/* "50M", "512K", "1G", "100" (bytes); K/M/G are powers of 1024. */
int config_parse_size(const char *s, uint64_t *bytes_out);
/* "10.0.0.0/8", "::1/128", "192.0.2.1" (host route). */
int config_parse_cidr(const char *s, struct config_cidr *out);
/* "host:port", "[v6]:port". Allocates out->host. */
int config_parse_hostport(const char *s, struct config_hostport *out);

/* True if the address (AF_INET or AF_INET6, v4-mapped v6 handled) is in cidr. */
bool config_cidr_match(const struct config_cidr *cidr, const struct sockaddr *sa);

/* Default shard count when shards == 0. */
unsigned config_effective_shards(const struct config *c);

#endif
