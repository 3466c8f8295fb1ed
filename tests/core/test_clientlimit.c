/* Unit tests for core/clientlimit.c: concurrent and rate limits per client
 * (README "Limits": 421 4.7.0 for either). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/clientlimit.h"
#include "core/sgerr.h"

static struct sockaddr_storage v4(const char *ip) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  in->sin_family = AF_INET;
  assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
  return ss;
}

static struct sockaddr_storage v6(const char *ip) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;
  in->sin6_family = AF_INET6;
  assert_int_equal(inet_pton(AF_INET6, ip, &in->sin6_addr), 1);
  return ss;
}

#define SA(x) ((const struct sockaddr *)&(x))

static void test_concurrent_limit(void **state) {
  (void)state;
  struct sockaddr_storage a = v4("192.0.2.10"), b = v4("192.0.2.11");
  for (int i = 0; i < 3; i++) assert_int_equal(clientlimit_acquire(SA(a), 3, 0), 0);
  assert_int_equal(clientlimit_acquire(SA(a), 3, 0), SG_ELIMIT);
  assert_int_equal(clientlimit_acquire(SA(b), 3, 0), 0); /* another client is unaffected */
  clientlimit_release(SA(a));
  assert_int_equal(clientlimit_acquire(SA(a), 3, 0), 0); /* a slot freed */
  for (int i = 0; i < 3; i++) clientlimit_release(SA(a));
  clientlimit_release(SA(b));
}

static void test_v4_mapped_is_the_same_client(void **state) {
  (void)state;
  struct sockaddr_storage a = v4("198.51.100.7"), m = v6("::ffff:198.51.100.7");
  assert_int_equal(clientlimit_acquire(SA(a), 1, 0), 0);
  assert_int_equal(clientlimit_acquire(SA(m), 1, 0), SG_ELIMIT);
  clientlimit_release(SA(a));
}

static void test_ipv6_counts_per_64(void **state) {
  (void)state;
  struct sockaddr_storage a = v6("2001:db8:1:2::1"), b = v6("2001:db8:1:2::ffff");
  assert_int_equal(clientlimit_acquire(SA(a), 1, 0), 0);
  assert_int_equal(clientlimit_acquire(SA(b), 1, 0), SG_ELIMIT); /* one host owns a /64 */
  clientlimit_release(SA(a));
}

/* Connections accepted at now_ms until the rate limit says no. */
static int drain(struct sockaddr_storage *a, uint64_t now_ms) {
  int ok = 0;
  while (clientlimit_acquire_at(SA(*a), 0, 10, now_ms) == 0) {
    clientlimit_release(SA(*a));
    ok++;
  }
  return ok;
}

/* The rate is a sliding 60 s window (weighted), not a calendar minute. */
static void test_rate_window_slides(void **state) {
  (void)state;
  struct sockaddr_storage a = v4("203.0.113.5");
  const uint64_t minute = 60000ull * 29000000ull; /* some minute boundary */
  assert_int_equal(drain(&a, minute - 100), 10);
  assert_int_equal(clientlimit_acquire_at(SA(a), 0, 10, minute - 50), SG_EBUSY);
  /* 0.1 s into the next minute, the previous minute still counts 59.9/60
   * of its ten: one more connection, where a calendar minute would allow
   * ten at once (2N across the boundary). */
  assert_int_equal(drain(&a, minute + 100), 1);
  /* Half-way through the minute, half of the previous ten count: with the
   * one above, four more. */
  assert_int_equal(drain(&a, minute + 30000), 4);
  /* Two minutes later the window is empty. */
  assert_int_equal(clientlimit_acquire_at(SA(a), 0, 10, minute + 120000), 0);
  clientlimit_release(SA(a));
}

int main(void) {
  if (clientlimit_init() != 0) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concurrent_limit),
      cmocka_unit_test(test_v4_mapped_is_the_same_client),
      cmocka_unit_test(test_ipv6_counts_per_64),
      cmocka_unit_test(test_rate_window_slides),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
