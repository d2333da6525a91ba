/* exec: sources (src/secrets/exec.h): the parsing of a command's output and
 * of RFC 3339 times, and when a value is fetched again. Refusals first:
 * malformed JSON, wrong shapes, bad times; then what works. Running a
 * command is tested end to end (tests/e2e/test_rotation.py). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "secrets/exec.h"

struct bad_output {
	const char *out;
	const char *why;
};

static const struct bad_output bad_outputs[] = {
	{ "{", "output is not valid JSON (line 1, column 1)" },
	{ "{\"value\": \"s3cr3t\"", "output is not valid JSON (line 1, column 18)" },
	{ "{\"value\": \"a\", \"value\": \"b\"}", "output is not valid JSON (line 1, column 22)" },
	{ "{\"value\": 12}", "output is a JSON object without a string \"value\"" },
	{ "{\"token\": \"x\"}", "output is a JSON object without a string \"value\"" },
	{ "{\"value\": \"x\", \"expires_at\": 5}", "\"expires_at\" of the output is not an RFC 3339 time" },
	{ "{\"value\": \"x\", \"expires_at\": \"tomorrow\"}", "\"expires_at\" of the output is not an RFC 3339 time" },
	{ "{\"value\": \"x\", \"expires_at\": \"2026-02-30T00:00:00Z\"}",
	  "\"expires_at\" of the output is not an RFC 3339 time" },
};

static void test_bad_outputs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_outputs) / sizeof(bad_outputs[0]); i++) {
		const struct bad_output *b = &bad_outputs[i];
		struct secret *s = NULL;
		int64_t exp = -1;
		char why[200] = "";
		int r = exec_output_parse(b->out, strlen(b->out), &s, &exp, why, sizeof(why));
		if (r != -EINVAL || strcmp(why, b->why) != 0)
			fail_msg("case %zu: r=%d why=\"%s\", wanted \"%s\"", i, r, why, b->why);
		assert_null(s);
		assert_int_equal(exp, -1); /* written only on success */
		assert_null(strstr(why, "s3cr3t"));
	}
}

static const char *const bad_times[] = {
	"",
	"2026-11-23",
	"2026-11-23T12:34:56",        /* no offset */
	"2026-11-23T12:34:56+0100",   /* offset without colon */
	"2026-11-23T12:34:56.Z",      /* empty fraction */
	"2026-13-01T00:00:00Z",       /* month */
	"2026-11-23T24:00:00Z",       /* hour */
	"2026-11-23T12:34:56Zjunk",   /* trailing bytes */
	"+026-11-23T12:34:56Z",       /* sign in the year */
	"2026-11-23T12:34:56+01:00 ", /* trailing space */
};

static void test_bad_times(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_times) / sizeof(bad_times[0]); i++) {
		int64_t t = -1;
		if (exec_parse_time(bad_times[i], &t) != -EINVAL)
			fail_msg("accepted \"%s\"", bad_times[i]);
		assert_int_equal(t, -1);
	}
}

struct good_time {
	const char *s;
	int64_t ms;
};

static const struct good_time good_times[] = {
	{ "1970-01-01T00:00:00Z", 0 },
	{ "2026-11-23T12:34:56Z", 1795437296000 },
	{ "2026-11-23t12:34:56z", 1795437296000 },
	{ "2026-11-23 12:34:56Z", 1795437296000 },
	{ "2026-11-23T12:34:56.5Z", 1795437296500 },
	{ "2026-11-23T12:34:56.123456789Z", 1795437296123 },
	{ "2026-11-23T13:34:56+01:00", 1795437296000 },
	{ "2026-11-23T07:04:56-05:30", 1795437296000 },
};

static void test_good_times(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_times) / sizeof(good_times[0]); i++) {
		int64_t t = -1;
		if (exec_parse_time(good_times[i].s, &t) != 0 || t != good_times[i].ms)
			fail_msg("\"%s\": %lld, wanted %lld", good_times[i].s, (long long)t,
			         (long long)good_times[i].ms);
	}
}

static void want_value(const char *out, const char *value, int64_t expires)
{
	struct secret *s = NULL;
	int64_t exp = -1;
	char why[200] = "";
	assert_int_equal(exec_output_parse(out, strlen(out), &s, &exp, why, sizeof(why)), 0);
	assert_int_equal(s->len, strlen(value));
	assert_memory_equal(s->data, value, s->len);
	assert_int_equal(exp, expires);
	secret_free(s);
}

static void test_good_outputs(void **state)
{
	(void)state;
	want_value("s3cr3t", "s3cr3t", 0);
	want_value("s3cr3t\n", "s3cr3t", 0);
	want_value("s3cr3t\r\n", "s3cr3t", 0);
	want_value("s3cr3t\n\n", "s3cr3t\n", 0); /* one newline only: the check refuses the rest */
	want_value("{\"value\": \"s3cr3t\"}\n", "s3cr3t", 0);
	want_value("  \n{\"value\": \"s3cr3t\", \"expires_at\": null}", "s3cr3t", 0);
	want_value("{\"value\": \"s3cr3t\", \"expires_at\": \"2026-11-23T12:34:56Z\", \"other\": 1}", "s3cr3t",
	           1795437296000);
	/* A value that is not JSON starts with something else than "{". */
	want_value("[1]", "[1]", 0);
}

static void test_refresh_at(void **state)
{
	(void)state;
	assert_int_equal(exec_refresh_at(1000, 0), 0);          /* no expiry: never */
	assert_int_equal(exec_refresh_at(0, 2000), 1800);       /* 2 s left: 0.2 s early */
	assert_int_equal(exec_refresh_at(0, 3600000), 3540000); /* 1 h left: 60 s early */
	assert_int_equal(exec_refresh_at(0, 300000), 270000);   /* 5 min left: 30 s early */
	assert_int_equal(exec_refresh_at(5000, 4000), 4000);    /* past: now */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_outputs), cmocka_unit_test(test_bad_times),
		cmocka_unit_test(test_good_times),  cmocka_unit_test(test_good_outputs),
		cmocka_unit_test(test_refresh_at),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
