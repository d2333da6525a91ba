/* Token buckets (src/proxy/ratelimit.h), driven with a made-up clock:
 * burst, refill, all-or-none across two buckets, the Retry-After wait, a
 * lowered burst after a reload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "proxy/ratelimit.h"

#define S 1000000000ULL

static bool take1(struct rate_table *t, const char *key, const struct policy_quota *q, uint64_t now, uint64_t *retry)
{
	struct rate_want w = { key, q };
	size_t which = 99;
	return rate_take(t, &w, 1, now, &which, retry);
}

static void test_burst_then_refill(void **state)
{
	struct rate_table *t;
	struct policy_quota q = { .rate_count = 60, .rate_period_s = 60, .burst = 3 }; /* one a second */
	uint64_t retry = 0;
	assert_int_equal(rate_table_new(&t), 0);
	for (int i = 0; i < 3; i++)
		assert_true(take1(t, "r", &q, 10 * S, &retry));
	assert_false(take1(t, "r", &q, 10 * S, &retry));
	assert_int_equal(retry, 1);
	assert_false(take1(t, "r", &q, 10 * S + S / 2, &retry)); /* half a token */
	assert_int_equal(retry, 1);
	assert_true(take1(t, "r", &q, 11 * S, &retry));
	/* a long pause fills the bucket to burst, no further */
	for (int i = 0; i < 3; i++)
		assert_true(take1(t, "r", &q, 1000 * S, &retry));
	assert_false(take1(t, "r", &q, 1000 * S, &retry));
	/* another key has its own bucket */
	assert_true(take1(t, "other", &q, 1000 * S, &retry));
	rate_table_free(t);
}

static void test_retry_after_slow_rate(void **state)
{
	struct rate_table *t;
	struct policy_quota q = { .rate_count = 2, .rate_period_s = 3600, .burst = 1 };
	uint64_t retry = 0;
	assert_int_equal(rate_table_new(&t), 0);
	assert_true(take1(t, "r", &q, 0, &retry));
	assert_false(take1(t, "r", &q, 0, &retry));
	assert_int_equal(retry, 1800);
	assert_false(take1(t, "r", &q, 600 * S, &retry));
	assert_int_equal(retry, 1200);
	rate_table_free(t);
}

static void test_all_or_none(void **state)
{
	struct rate_table *t;
	struct policy_quota route = { .rate_count = 1, .rate_period_s = 3600, .burst = 1 };
	struct policy_quota cred = { .rate_count = 2, .rate_period_s = 3600, .burst = 2 };
	struct policy_quota none = { 0 };
	struct rate_want both[] = { { "route", &route }, { "cred", &cred } };
	size_t which = 99;
	uint64_t retry = 0;
	assert_int_equal(rate_table_new(&t), 0);
	assert_true(rate_take(t, both, 2, 0, &which, &retry));
	assert_false(rate_take(t, both, 2, 0, &which, &retry));
	assert_int_equal(which, 0);
	/* the refused call took nothing from the credential: one left */
	assert_true(take1(t, "cred", &cred, 0, &retry));
	assert_false(take1(t, "cred", &cred, 0, &retry));
	/* a quota without a rate is no bucket at all */
	struct rate_want open[] = { { "free", &none } };
	for (int i = 0; i < 100; i++)
		assert_true(rate_take(t, open, 1, 0, &which, &retry));
	rate_table_free(t);
}

static void test_lowered_burst(void **state)
{
	struct rate_table *t;
	struct policy_quota big = { .rate_count = 10, .rate_period_s = 3600, .burst = 10 };
	struct policy_quota small = { .rate_count = 10, .rate_period_s = 3600, .burst = 2 };
	uint64_t retry;
	assert_int_equal(rate_table_new(&t), 0);
	assert_true(take1(t, "r", &big, 0, &retry)); /* 9 left */
	/* a reload lowered burst to 2: the bucket holds 2 at most */
	assert_true(take1(t, "r", &small, 0, &retry));
	assert_true(take1(t, "r", &small, 0, &retry));
	assert_false(take1(t, "r", &small, 0, &retry));
	rate_table_free(t);
}

static void test_many_keys(void **state)
{
	struct rate_table *t;
	struct policy_quota q = { .rate_count = 1, .rate_period_s = 3600, .burst = 1 };
	uint64_t retry;
	char key[32];
	assert_int_equal(rate_table_new(&t), 0);
	/* more keys than the table keeps: it starts again, never fails */
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_true(take1(t, key, &q, 0, &retry));
	}
	rate_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_then_refill), cmocka_unit_test(test_retry_after_slow_rate),
		cmocka_unit_test(test_all_or_none),       cmocka_unit_test(test_lowered_burst),
		cmocka_unit_test(test_many_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
