/*
 * spool_record - see spool_record.h for the layout and the API contract.
 *
 * The writer and the reader share one set of validity rules (valid_*), so
 * the reader accepts exactly what the writer can produce: anything else on
 * disk is damage, and damage is never delivered.  The reader is fed
 * untrusted bytes (torn files, fuzzers); it checks every length against the
 * bytes that remain before looking at a payload, and frees everything it
 * allocated on every error path.
 */
#include "core/spool_record.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/sgerr.h"

#define SPOOL_MAGIC "SGSPOOL\n"
#define SPOOL_MAGIC_LEN 8
#define SPOOL_PREAMBLE_LEN 12 /* magic, version, reserved */
#define SPOOL_REC_HDR 5       /* type:u8 length:u32 */
#define SPOOL_END_PAYLOAD 8   /* crc32:u32 "END\n" */
#define SPOOL_END_MARK "END\n"

/* One row per record type, in the only order a file may hold them. */
struct rec_rule {
  unsigned char type;
  uint32_t min, max;
  const char *missing;   /* reason when a later record shows up first */
  const char *duplicate; /* reason when the record repeats */
  const char *bad_len;   /* reason when the length breaks min..max */
};

enum { RULE_Q, RULE_A, RULE_S, RULE_R, RULE_O, RULE_L, RULE_N, RULE_F, RULE_C, RULE_D, RULE_E, RULE_COUNT };

static const struct rec_rule rules[RULE_COUNT] = {
    {'Q', 1, SPOOL_ID_MAX - 1, "missing queue id record", "duplicate queue id record",
     "bad queue id length"},
    {'A', 8, 8, "missing arrival record", "duplicate arrival record", "bad arrival record length"},
    {'S', 0, SPOOL_ADDR_MAX, "missing sender record", "duplicate sender record",
     "sender too long"},
    {'R', 1, SPOOL_ADDR_MAX, "missing recipient record", "duplicate recipient record",
     "bad recipient length"},
    {'O', 1, SPOOL_ADDR_MAX, "missing original recipient record", "duplicate original recipient record",
     "bad original recipient length"},
    {'L', 0, SPOOL_NAME_MAX, "missing listener record", "duplicate listener record",
     "listener too long"},
    {'N', 0, SPOOL_NAME_MAX, "missing next hop record", "duplicate next hop record",
     "next hop too long"},
    {'F', 4, 4, "missing flags record", "duplicate flags record", "bad flags record length"},
    {'C', 0, SPOOL_CLIENT_MAX, "missing client record", "duplicate client record",
     "client too long"},
    {'D', 0, SPOOL_DATA_MAX, "missing data record", "duplicate data record",
     "bad data record length"},
    {'E', SPOOL_END_PAYLOAD, SPOOL_END_PAYLOAD, "missing end record", "duplicate end record",
     "bad end record length"},
};

/* ---- little-endian helpers ---------------------------------------------- */

static void put_u16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) {
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* zlib's crc32() takes a 32-bit length; crc32_z() a size_t, which the data
 * part (up to 4 GiB - 1) needs. */
static uint32_t crc_update(uint32_t crc, const void *p, size_t n) {
  if (n == 0) return crc;
  return (uint32_t)crc32_z(crc, (const Bytef *)p, n);
}

/* ---- validity rules shared by writer and reader ------------------------- */

static int valid_queue_id(const char *s, size_t n) {
  if (n < 1 || n > SPOOL_ID_MAX - 1) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-';
    if (!ok) return 0;
  }
  return 1;
}

/* Addresses end up in SMTP commands and in headers: no line breaks. */
static int valid_addr(const char *s, size_t n, size_t min) {
  if (n < min || n > SPOOL_ADDR_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n') return 0;
  return 1;
}

/* Other strings are only required to survive as C strings. */
static int valid_text(const char *s, size_t n, size_t max) {
  return n <= max && memchr(s, '\0', n) == NULL;
}

/* strnlen bounded one past the limit, so "too long" is detectable without
 * reading an unterminated string to its end. */
static size_t slen(const char *s, size_t max) { return s ? strnlen(s, max + 1) : 0; }

static int envelope_valid(const struct spool_envelope *env) {
  size_t qn = strnlen(env->queue_id, SPOOL_ID_MAX);
  if (!valid_queue_id(env->queue_id, qn)) return 0;
  if (!env->sender || !valid_addr(env->sender, slen(env->sender, SPOOL_ADDR_MAX), 0)) return 0;
  if (env->n_rcpts < 1 || env->n_rcpts > SPOOL_RCPT_MAX || !env->rcpts) return 0;
  for (size_t i = 0; i < env->n_rcpts; i++) {
    const char *r = env->rcpts[i];
    if (!r || !valid_addr(r, slen(r, SPOOL_ADDR_MAX), 1)) return 0;
  }
  if (env->n_orig_rcpts > SPOOL_RCPT_MAX || (env->n_orig_rcpts && !env->orig_rcpts)) return 0;
  for (size_t i = 0; i < env->n_orig_rcpts; i++) {
    const char *r = env->orig_rcpts[i];
    if (!r || !valid_addr(r, slen(r, SPOOL_ADDR_MAX), 1)) return 0;
  }
  if (slen(env->listener, SPOOL_NAME_MAX) > SPOOL_NAME_MAX) return 0;
  if (slen(env->next_hop, SPOOL_NAME_MAX) > SPOOL_NAME_MAX) return 0;
  if (slen(env->client, SPOOL_CLIENT_MAX) > SPOOL_CLIENT_MAX) return 0;
  return (env->flags & ~(uint32_t)SPOOL_F_KNOWN) == 0;
}

/* ---- writer ------------------------------------------------------------- */

/* Space is reserved up front, so the appends below cannot fail. */
static void put_record_header(struct buf *b, unsigned char type, size_t n) {
  unsigned char hdr[SPOOL_REC_HDR];
  hdr[0] = type;
  put_u32(hdr + 1, (uint32_t)n);
  buf_append(b, hdr, sizeof hdr);
}

static void put_record(struct buf *b, unsigned char type, const void *p, size_t n) {
  put_record_header(b, type, n);
  buf_append(b, p, n);
}

static void put_string(struct buf *b, unsigned char type, const char *s) {
  put_record(b, type, s ? s : "", s ? strlen(s) : 0);
}

static size_t head_size(const struct spool_envelope *env) {
  size_t n = SPOOL_PREAMBLE_LEN + 9 * SPOOL_REC_HDR + (env->n_rcpts + env->n_orig_rcpts) * SPOOL_REC_HDR;
  n += strlen(env->queue_id) + 8 + strlen(env->sender) + 4;
  for (size_t i = 0; i < env->n_rcpts; i++) n += strlen(env->rcpts[i]);
  for (size_t i = 0; i < env->n_orig_rcpts; i++) n += strlen(env->orig_rcpts[i]);
  n += slen(env->listener, SPOOL_NAME_MAX) + slen(env->next_hop, SPOOL_NAME_MAX);
  return n + slen(env->client, SPOOL_CLIENT_MAX);
}

static int encode_head(const struct spool_envelope *env, size_t data_len, struct buf *head) {
  if (buf_reserve(head, head_size(env))) return SG_ENOMEM;
  unsigned char pre[SPOOL_PREAMBLE_LEN], u64[8], u32[4];
  memcpy(pre, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
  put_u16(pre + 8, SPOOL_RECORD_VERSION);
  put_u16(pre + 10, 0);
  buf_append(head, pre, sizeof pre);
  put_string(head, 'Q', env->queue_id);
  put_u64(u64, env->arrival_ms);
  put_record(head, 'A', u64, sizeof u64);
  put_string(head, 'S', env->sender);
  for (size_t i = 0; i < env->n_rcpts; i++) put_string(head, 'R', env->rcpts[i]);
  for (size_t i = 0; i < env->n_orig_rcpts; i++) put_string(head, 'O', env->orig_rcpts[i]);
  put_string(head, 'L', env->listener);
  put_string(head, 'N', env->next_hop);
  put_u32(u32, env->flags);
  put_record(head, 'F', u32, sizeof u32);
  put_string(head, 'C', env->client);
  /* The 'D' header only: the caller writes the data itself, uncopied. */
  put_record_header(head, 'D', data_len);
  return 0;
}

static int encode_tail(uint32_t crc, struct buf *tail) {
  unsigned char end[SPOOL_REC_HDR + SPOOL_END_PAYLOAD];
  end[0] = 'E';
  put_u32(end + 1, SPOOL_END_PAYLOAD);
  put_u32(end + 5, crc);
  memcpy(end + 9, SPOOL_END_MARK, 4);
  return buf_append(tail, end, sizeof end) ? SG_ENOMEM : 0;
}

static void buf_truncate(struct buf *b, size_t len) {
  b->len = len;
  if (b->data) b->data[len] = '\0';
}

int spool_record_encode(const struct spool_envelope *env, const void *data, size_t data_len,
                        struct buf *head, struct buf *tail) {
  if (!env || !head || !tail || (!data && data_len)) return SG_EINVAL;
  if (data_len > SPOOL_DATA_MAX || !envelope_valid(env)) return SG_EINVAL;
  size_t head0 = head->len, tail0 = tail->len;
  int rc = encode_head(env, data_len, head);
  if (rc == 0) {
    /* CRC over the bytes as they will lie in the file: head, data, then the
     * tail that carries it.  One pass over the data, no copy. */
    uint32_t crc = crc_update(0, head->data + head0, head->len - head0);
    crc = crc_update(crc, data, data_len);
    rc = encode_tail(crc, tail);
  }
  if (rc) {
    buf_truncate(head, head0);
    buf_truncate(tail, tail0);
  }
  return rc;
}

/* ---- reader ------------------------------------------------------------- */

struct reader {
  const unsigned char *p;
  size_t len, off;
  size_t rcap, ocap; /* allocated slots in env->rcpts, env->orig_rcpts */
  struct spool_envelope *env;
  const char *data;
  size_t data_len;
  const char *why;
};

static int corrupt(struct reader *r, const char *why) {
  r->why = why;
  return SG_ECORRUPT;
}

static int nomem(struct reader *r) {
  r->why = "out of memory";
  return SG_ENOMEM;
}

static char *dup_bytes(const unsigned char *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) return NULL;
  memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

static int read_preamble(struct reader *r) {
  if (r->len < SPOOL_MAGIC_LEN) {
    /* A prefix of the magic is a torn file, anything else is not ours. */
    if (r->len == 0 || memcmp(r->p, SPOOL_MAGIC, r->len) == 0)
      return corrupt(r, "truncated header");
    return corrupt(r, "bad magic");
  }
  if (memcmp(r->p, SPOOL_MAGIC, SPOOL_MAGIC_LEN) != 0) return corrupt(r, "bad magic");
  if (r->len < SPOOL_PREAMBLE_LEN) return corrupt(r, "truncated header");
  if (get_u16(r->p + 8) != SPOOL_RECORD_VERSION) return corrupt(r, "unsupported version");
  if (get_u16(r->p + 10) != 0) return corrupt(r, "reserved field not zero");
  r->off = SPOOL_PREAMBLE_LEN;
  return 0;
}

/* Append p[0..n) to the list *v (*count entries, *cap slots). */
static int add_rcpt(struct reader *r, char ***v, size_t *count, size_t *cap, const unsigned char *p, size_t n) {
  if (*count >= SPOOL_RCPT_MAX) return corrupt(r, "too many recipients");
  if (*count == *cap) {
    size_t c = *cap ? *cap * 2 : 4;
    char **nv = realloc(*v, c * sizeof *nv);
    if (!nv) return nomem(r);
    *v = nv;
    *cap = c;
  }
  char *s = dup_bytes(p, n);
  if (!s) return nomem(r);
  (*v)[(*count)++] = s;
  return 0;
}

static int store_text(struct reader *r, char **dst, const unsigned char *p, size_t n) {
  if (!valid_text((const char *)p, n, n)) return corrupt(r, "NUL byte in string");
  *dst = dup_bytes(p, n);
  return *dst ? 0 : nomem(r);
}

static int store_record(struct reader *r, unsigned char type, const unsigned char *p, size_t n) {
  struct spool_envelope *env = r->env;
  const char *s = (const char *)p;
  switch (type) {
    case 'Q':
      if (!valid_queue_id(s, n)) return corrupt(r, "bad queue id");
      memcpy(env->queue_id, p, n);
      env->queue_id[n] = '\0';
      return 0;
    case 'A': env->arrival_ms = get_u64(p); return 0;
    case 'S':
      if (!valid_addr(s, n, 0)) return corrupt(r, "bad sender");
      return store_text(r, &env->sender, p, n);
    case 'R':
      if (!valid_addr(s, n, 1)) return corrupt(r, "bad recipient");
      return add_rcpt(r, &env->rcpts, &env->n_rcpts, &r->rcap, p, n);
    case 'O':
      if (!valid_addr(s, n, 1)) return corrupt(r, "bad original recipient");
      return add_rcpt(r, &env->orig_rcpts, &env->n_orig_rcpts, &r->ocap, p, n);
    case 'L': return store_text(r, &env->listener, p, n);
    case 'N': return store_text(r, &env->next_hop, p, n);
    case 'F':
      env->flags = get_u32(p);
      if (env->flags & ~(uint32_t)SPOOL_F_KNOWN) return corrupt(r, "unknown flags");
      return 0;
    case 'C': return store_text(r, &env->client, p, n);
    case 'D':
      r->data = s;
      r->data_len = n;
      return 0;
  }
  return corrupt(r, "unknown record type"); /* not reached: checked by caller */
}

static int rule_index(unsigned char type) {
  for (int i = 0; i < RULE_COUNT; i++)
    if (rules[i].type == type) return i;
  return -1;
}

/* The record at index k arrived while index want was due. */
static int order_error(struct reader *r, int k, int want) {
  if (want == RULE_O) want = RULE_L; /* optional: what is missing is the listener */
  if (want == RULE_E) return corrupt(r, "data record is not last");
  if (k > want) return corrupt(r, rules[want].missing);
  if (k + 1 == want) return corrupt(r, rules[k].duplicate);
  return corrupt(r, "record out of order");
}

/* The end record: everything before it must match its CRC, and it must be
 * the last thing in the file. */
static int read_end(struct reader *r, const unsigned char *payload) {
  if (memcmp(payload + 4, SPOOL_END_MARK, 4) != 0) return corrupt(r, "bad end marker");
  size_t end = r->off + SPOOL_REC_HDR + SPOOL_END_PAYLOAD;
  if (end != r->len) return corrupt(r, "trailing bytes after end record");
  if (crc_update(0, r->p, r->off) != get_u32(payload)) return corrupt(r, "checksum mismatch");
  return 0;
}

static int read_records(struct reader *r) {
  int want = RULE_Q;
  for (;;) {
    size_t left = r->len - r->off;
    if (left == 0) return corrupt(r, "truncated file (no end record)");
    if (left < SPOOL_REC_HDR) return corrupt(r, "truncated record header");
    const unsigned char *h = r->p + r->off;
    uint32_t n = get_u32(h + 1);
    int k = rule_index(h[0]);
    if (k < 0) return corrupt(r, "unknown record type");
    /* 'R' may repeat; 'O' is optional and may repeat: after an 'R', an
     * 'R', an 'O' or the 'L' may come; after an 'O', an 'O' or the 'L'. */
    bool ok = k == want || (k == RULE_R && want == RULE_O) || (k == RULE_L && want == RULE_O) ||
              (k == RULE_O && want == RULE_L);
    if (!ok) return order_error(r, k, want);
    if (n < rules[k].min || n > rules[k].max) return corrupt(r, rules[k].bad_len);
    if (n > left - SPOOL_REC_HDR) return corrupt(r, "truncated record");
    if (k == RULE_E) return read_end(r, h + SPOOL_REC_HDR);
    int rc = store_record(r, h[0], h + SPOOL_REC_HDR, n);
    if (rc) return rc;
    r->off += SPOOL_REC_HDR + (size_t)n;
    want = k + 1;
  }
}

int spool_record_parse(const void *buf, size_t len, struct spool_envelope *env,
                       const char **data_out, size_t *data_len_out, const char **why_out) {
  const char *why = NULL;
  if (!env || (!buf && len)) {
    if (why_out) *why_out = "invalid arguments";
    return SG_EINVAL;
  }
  memset(env, 0, sizeof *env);
  struct reader r = {.p = buf, .len = len, .env = env};
  int rc = read_preamble(&r);
  if (rc == 0) rc = read_records(&r);
  if (rc) {
    spool_envelope_free(env);
    why = r.why;
  } else {
    if (data_out) *data_out = r.data;
    if (data_len_out) *data_len_out = r.data_len;
  }
  if (why_out) *why_out = why;
  return rc;
}

/* ---- envelope ownership ------------------------------------------------- */

void spool_envelope_free(struct spool_envelope *env) {
  if (!env) return;
  free(env->sender);
  for (size_t i = 0; i < env->n_rcpts; i++) free(env->rcpts[i]);
  free(env->rcpts);
  for (size_t i = 0; i < env->n_orig_rcpts; i++) free(env->orig_rcpts[i]);
  free(env->orig_rcpts);
  free(env->listener);
  free(env->next_hop);
  free(env->client);
  memset(env, 0, sizeof *env);
}

/* NULL stays NULL: the copy is as faithful as the original. */
static int copy_str(char **dst, const char *src) {
  *dst = NULL;
  if (!src) return 0;
  size_t n = strlen(src);
  *dst = dup_bytes((const unsigned char *)src, n);
  return *dst ? 0 : SG_ENOMEM;
}

int spool_envelope_copy(struct spool_envelope *dst, const struct spool_envelope *src) {
  if (!dst || !src) return SG_EINVAL;
  memset(dst, 0, sizeof *dst);
  memcpy(dst->queue_id, src->queue_id, sizeof dst->queue_id);
  dst->arrival_ms = src->arrival_ms;
  dst->flags = src->flags;
  int rc = copy_str(&dst->sender, src->sender);
  if (!rc) rc = copy_str(&dst->listener, src->listener);
  if (!rc) rc = copy_str(&dst->next_hop, src->next_hop);
  if (!rc) rc = copy_str(&dst->client, src->client);
  if (!rc) rc = spool_rcpts_copy(&dst->rcpts, &dst->n_rcpts, src->rcpts, src->n_rcpts);
  if (!rc) rc = spool_rcpts_copy(&dst->orig_rcpts, &dst->n_orig_rcpts, src->orig_rcpts, src->n_orig_rcpts);
  if (rc) spool_envelope_free(dst);
  return rc;
}

int spool_rcpts_copy(char ***dst, size_t *n_dst, char *const *src, size_t n) {
  *dst = NULL;
  *n_dst = 0;
  if (n == 0) return 0;
  if (!(*dst = calloc(n, sizeof **dst))) return SG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (copy_str(&(*dst)[i], src[i])) return SG_ENOMEM; /* *n_dst covers what was copied: the caller frees */
    *n_dst = i + 1;
  }
  return 0;
}
