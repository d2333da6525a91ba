/* redact: the streaming replacer that keeps secrets out of responses.
 * Rejects first; then the property that matters: the output is the same
 * however the input is split, and no secret form survives. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/encode.h"
#include "proxy/redact.h"

#define SECRET "s3cr3t/+=&value-42"
#define PH     "kw_test_placeholder_0123456789"

static int emit_buf(void *ctx, const char *p, size_t n)
{
	return buf_append(ctx, p, n);
}

static int emit_fail(void *ctx, const char *p, size_t n)
{
	return -EPIPE;
}

/* Feeds in at the given cut points (sorted), finishes, returns the output. */
static void run_split(const struct redact_set *s, const char *in, size_t n, const size_t *cuts, size_t n_cuts,
                      struct buf *out, uint64_t *count)
{
	struct redactor *r;
	assert_int_equal(redactor_new(&s, 1, &r), 0);
	size_t at = 0;
	for (size_t i = 0; i <= n_cuts; i++) {
		size_t end = i < n_cuts ? cuts[i] : n;
		assert_int_equal(redactor_feed(r, in + at, end - at, emit_buf, out), 0);
		assert_true(redactor_held(r) < 64 * 1024);
		at = end;
	}
	assert_int_equal(redactor_finish(r, emit_buf, out), 0);
	assert_int_equal(redactor_held(r), 0);
	if (count)
		*count = redactor_count(r);
	redactor_free(r);
}

/* Leftmost-longest replacement in one pass, the obvious way. */
static void reference(const char *const *pats, const char *const *reps, size_t np, const char *in, size_t n,
                      struct buf *out)
{
	size_t i = 0;
	while (i < n) {
		size_t best = SIZE_MAX, bl = 0;
		for (size_t k = 0; k < np; k++) {
			size_t pl = strlen(pats[k]);
			if (pl <= n - i && pl > bl && memcmp(in + i, pats[k], pl) == 0)
				best = k, bl = pl;
		}
		if (best == SIZE_MAX) {
			assert_int_equal(buf_append(out, in + i, 1), 0);
			i++;
		} else {
			assert_int_equal(buf_append(out, reps[best], strlen(reps[best])), 0);
			i += bl;
		}
	}
}

static struct redact_set *set_of(const char *const *pats, const char *const *reps, size_t np)
{
	struct redact_set *s;
	assert_int_equal(redact_set_new(&s), 0);
	for (size_t k = 0; k < np; k++)
		assert_int_equal(redact_set_add(s, pats[k], strlen(pats[k]), reps[k], strlen(reps[k])), 0);
	assert_int_equal(redact_set_seal(s), 0);
	return s;
}

static void test_rejects(void **state)
{
	struct redact_set *s;
	struct redactor *r;
	assert_int_equal(redact_set_new(&s), 0);
	assert_int_equal(redact_set_add(s, "", 0, "x", 1), -EINVAL);
	char *big = calloc(1, REDACT_PATTERN_MAX + 1);
	assert_non_null(big);
	memset(big, 'a', REDACT_PATTERN_MAX + 1);
	assert_int_equal(redact_set_add(s, big, REDACT_PATTERN_MAX + 1, "x", 1), -EINVAL);
	free(big);
	assert_int_equal(redact_set_add_secret(s, "", 0, PH), -EINVAL);
	const struct redact_set *sets[REDACT_MAX_SETS + 1] = { s };
	assert_int_equal(redactor_new(sets, 1, &r), -EINVAL); /* not sealed */
	assert_int_equal(redactor_new(sets, REDACT_MAX_SETS + 1, &r), -EINVAL);
	assert_int_equal(redact_set_add(s, "abc", 3, "x", 1), 0);
	assert_int_equal(redact_set_seal(s), 0);
	assert_int_equal(redact_set_add(s, "def", 3, "x", 1), -EBUSY);
	/* an emit error comes back as it is */
	assert_int_equal(redactor_new(sets, 1, &r), 0);
	assert_int_equal(redactor_feed(r, "zzzzzabczzzz", 12, emit_fail, NULL), -EPIPE);
	redactor_free(r);
	redact_set_free(s);
}

static void test_empty_set_passes_everything(void **state)
{
	struct redact_set *s = set_of(NULL, NULL, 0);
	struct buf out;
	buf_init(&out, 1 << 20);
	size_t cut = 3;
	run_split(s, "hello world", 11, &cut, 1, &out, NULL);
	assert_string_equal(out.data, "hello world");
	buf_free(&out);
	redact_set_free(s);
}

/* Every way to cut the input in two, and byte by byte, gives the output
 * of the one-pass reference: with overlapping patterns, a pattern that is
 * a prefix of another, and matches at the very start and end. */
static void test_every_split_offset(void **state)
{
	static const char *const pats[] = { "abc", "bcd", "abcdef", "cdx", "zz", "SECRETVALUE" };
	static const char *const reps[] = { "1", "2", "<6>", "", "Z", "<ph>" };
	static const char *const inputs[] = {
		"abcdef",
		"xabcdex",
		"bcdabcabcdefabc",
		"SECRETVALUESECRETVALU",
		"zzzzz",
		"ab",
		"cdxcdxSECRETVALUEabc",
		"",
		"SECRETVALUE",
		"aSECRETVALUEbcdzz",
	};
	struct redact_set *s = set_of(pats, reps, ARRAY_SIZE(pats));
	for (size_t t = 0; t < ARRAY_SIZE(inputs); t++) {
		const char *in = inputs[t];
		size_t n = strlen(in);
		struct buf want, got;
		buf_init(&want, 4096);
		reference(pats, reps, ARRAY_SIZE(pats), in, n, &want);
		for (size_t a = 0; a <= n; a++) {
			for (size_t b = a; b <= n; b++) {
				size_t cuts[2] = { a, b };
				buf_init(&got, 4096);
				run_split(s, in, n, cuts, 2, &got, NULL);
				if (got.len != want.len || (got.len && memcmp(got.data, want.data, got.len) != 0))
					fail_msg("input %zu cut at %zu,%zu: got \"%s\", want \"%s\"", t, a, b, got.data,
					         want.data);
				buf_free(&got);
			}
		}
		/* byte by byte */
		size_t cuts[64];
		for (size_t i = 0; i < n; i++)
			cuts[i] = i;
		buf_init(&got, 4096);
		run_split(s, in, n, cuts, n, &got, NULL);
		assert_int_equal(got.len, want.len);
		if (got.len)
			assert_memory_equal(got.data, want.data, got.len);
		buf_free(&got);
		buf_free(&want);
	}
	redact_set_free(s);
}

static void test_longest_wins_and_counts(void **state)
{
	static const char *const pats[] = { "ab", "abc", "abcd" };
	static const char *const reps[] = { "2", "3", "4" };
	struct redact_set *s = set_of(pats, reps, 3);
	struct buf out;
	uint64_t count;
	buf_init(&out, 4096);
	run_split(s, "abcdabcaba", 10, NULL, 0, &out, &count);
	assert_string_equal(out.data, "432a");
	assert_int_equal(count, 3);
	buf_free(&out);
	redact_set_free(s);
}

/* A secret in every form redact_set_add_secret knows, cut at every offset
 * of the input: none survives, the text around it does. */
static void test_secret_forms_every_offset(void **state)
{
	struct redact_set *s;
	assert_int_equal(redact_set_new(&s), 0);
	assert_int_equal(redact_set_add_secret(s, SECRET, strlen(SECRET), PH), 0);
	assert_int_equal(redact_set_add_basic(s, "alice", 5, SECRET, strlen(SECRET), PH), 0);
	assert_int_equal(redact_set_seal(s), 0);

	struct buf forms[16];
	size_t nf = 0;
	for (size_t i = 0; i < ARRAY_SIZE(forms); i++)
		buf_init(&forms[i], 4096);
	assert_int_equal(buf_puts(&forms[nf++], SECRET), 0);
	assert_int_equal(base64_encode(SECRET, strlen(SECRET), &forms[nf++]), 0);
	assert_int_equal(percent_encode(SECRET, strlen(SECRET), &forms[nf++]), 0);
	/* lower-case hex */
	assert_int_equal(buf_puts(&forms[nf++], "s3cr3t%2f%2b%3d%26value-42"), 0);
	/* Basic pairs with user names of every length mod 3 */
	static const char *const users[] = { "alice", "x-access-token", "bob", "" };
	for (size_t u = 0; u < ARRAY_SIZE(users); u++) {
		char pair[128];
		snprintf(pair, sizeof(pair), "%s:%s", users[u], SECRET);
		assert_int_equal(base64_encode(pair, strlen(pair), &forms[nf++]), 0);
	}
	struct buf b64s;
	buf_init(&b64s, 4096);
	assert_int_equal(base64_encode(SECRET, strlen(SECRET), &b64s), 0);
	/* the inner characters of the secret's base64, which any alignment keeps */
	char inner[64];
	snprintf(inner, sizeof(inner), "%.*s", (int)(b64s.len - 4), b64s.data);

	for (size_t f = 0; f < nf; f++) {
		char in[512];
		int n = snprintf(in, sizeof(in), "before \"%s\" after", forms[f].data);
		for (int cut = 0; cut <= n; cut++) {
			struct buf out;
			uint64_t count = 0;
			size_t c = (size_t)cut;
			buf_init(&out, 1 << 16);
			run_split(s, in, (size_t)n, &c, 1, &out, &count);
			assert_non_null(out.data);
			if (strstr(out.data, SECRET) || strstr(out.data, forms[f].data) || strstr(out.data, inner))
				fail_msg("form %zu (%s) survived a cut at %d: %s", f, forms[f].data, cut, out.data);
			assert_true(count >= 1);
			assert_int_equal(strncmp(out.data, "before \"", 8), 0);
			assert_non_null(strstr(out.data, "\" after"));
			buf_free(&out);
		}
	}
	/* the exact Basic pair keyward sent becomes the placeholder's pair */
	{
		struct buf in, want, out;
		buf_init(&in, 4096);
		buf_init(&want, 4096);
		buf_init(&out, 4096);
		assert_int_equal(base64_encode("alice:" SECRET, strlen("alice:" SECRET), &in), 0);
		assert_int_equal(base64_encode("alice:" PH, strlen("alice:" PH), &want), 0);
		run_split(s, in.data, in.len, NULL, 0, &out, NULL);
		assert_string_equal(out.data, want.data);
		buf_free(&in);
		buf_free(&want);
		buf_free(&out);
	}
	for (size_t i = 0; i < ARRAY_SIZE(forms); i++)
		buf_free(&forms[i]);
	buf_free(&b64s);
	redact_set_free(s);
}

/* Short encoded forms are left out (they would match ordinary text); the
 * raw secret is always there. */
static void test_short_secret(void **state)
{
	struct redact_set *s;
	assert_int_equal(redact_set_new(&s), 0);
	assert_int_equal(redact_set_add_secret(s, "ab", 2, "PH"), 0);
	assert_int_equal(redact_set_seal(s), 0);
	assert_int_equal(redact_set_count(s), 1);
	struct buf out;
	buf_init(&out, 4096);
	run_split(s, "xabyYWI=", 8, NULL, 0, &out, NULL);
	assert_string_equal(out.data, "xPHyYWI=");
	buf_free(&out);
	redact_set_free(s);
}

/* Two sets: a generation's and a request's own. */
static void test_two_sets(void **state)
{
	static const char *const p1[] = { "secret-one" }, *const r1[] = { "PH1" };
	static const char *const p2[] = { "secret-one-two" }, *const r2[] = { "PH2" };
	struct redact_set *a = set_of(p1, r1, 1), *b = set_of(p2, r2, 1);
	const struct redact_set *sets[] = { a, NULL, b };
	struct redactor *r;
	struct buf out;
	buf_init(&out, 4096);
	assert_int_equal(redactor_new(sets, 3, &r), 0);
	const char *in = "secret-one-two secret-one";
	for (size_t i = 0; in[i]; i++)
		assert_int_equal(redactor_feed(r, in + i, 1, emit_buf, &out), 0);
	assert_int_equal(redactor_finish(r, emit_buf, &out), 0);
	assert_string_equal(out.data, "PH2 PH1");
	assert_int_equal(redactor_count(r), 2);
	redactor_free(r);
	buf_free(&out);
	redact_set_free(a);
	redact_set_free(b);
}

/* More than a few first bytes: the per-byte table instead of memchr. */
static void test_many_first_bytes(void **state)
{
	static const char *const pats[] = { "a1", "b2", "c3", "d4", "e5", "f6", "g7", "h8", "i9", "j0", "a1b2c3" };
	static const char *const reps[] = { "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "<long>" };
	const char *in = "xa1b2c3d4e5f6g7h8i9j0xa1xb2c3yj0j0";
	size_t n = strlen(in);
	struct redact_set *s = set_of(pats, reps, ARRAY_SIZE(pats));
	struct buf want, got;
	buf_init(&want, 4096);
	reference(pats, reps, ARRAY_SIZE(pats), in, n, &want);
	assert_string_equal(want.data, "x<long>DEFGHIJxAxBCyJJ");
	for (size_t a = 0; a <= n; a++) {
		buf_init(&got, 4096);
		run_split(s, in, n, &a, 1, &got, NULL);
		assert_string_equal(got.data, want.data);
		buf_free(&got);
	}
	buf_free(&want);
	redact_set_free(s);
}

/* A large feed is taken in slices; what is kept back stays bounded. */
static void test_large_feed_bounded(void **state)
{
	static const char *const pats[] = { "needle-in-haystack" }, *const reps[] = { "N" };
	struct redact_set *s = set_of(pats, reps, 1);
	size_t n = 1 << 20;
	char *in = malloc(n);
	assert_non_null(in);
	memset(in, 'h', n);
	memcpy(in + 16384 - 5, "needle-in-haystack", 18); /* across a slice boundary */
	memcpy(in + n - 18, "needle-in-haystack", 18);
	struct buf out;
	uint64_t count;
	buf_init(&out, 2 * n);
	run_split(s, in, n, NULL, 0, &out, &count);
	assert_int_equal(count, 2);
	assert_int_equal(out.len, n - 2 * 17);
	buf_free(&out);
	free(in);
	redact_set_free(s);
}

/* A redactor kept from one response to the next (redactor_clear, then
 * redactor_restart) and a set emptied and filled again (redact_set_clear)
 * work as new ones: one left holding back the start of a pattern has
 * nothing of it once cleared; one restarted with a set of longer patterns
 * (a larger work buffer) or with other first bytes replaces what the new
 * sets say and nothing of the old ones; a failed restart leaves it with no
 * sets, passing everything through. */
static void test_restart_is_like_new(void **state)
{
	static const char *const p1[] = { "short-pattern" }, *const r1[] = { "S" };
	struct redact_set *a = set_of(p1, r1, 1), *b;
	struct redactor *r;
	struct buf out;
	buf_init(&out, 1 << 20);
	const struct redact_set *sets[] = { a };
	assert_int_equal(redactor_new(sets, 1, &r), 0);
	assert_int_equal(redactor_feed(r, "xx short-pat", 12, emit_buf, &out), 0);
	assert_int_equal(redactor_held(r), 9); /* "short-pat" may begin a match */
	redactor_clear(r);
	assert_int_equal(redactor_held(r), 0);
	assert_int_equal(redactor_count(r), 0);

	/* b: a pattern longer than a slice, other first bytes; a is emptied
	 * and refilled with it, as a connection's own forms are */
	size_t long_n = 20000;
	char *long_pat = malloc(long_n + 1);
	assert_non_null(long_pat);
	memset(long_pat, 'L', long_n);
	long_pat[long_n] = '\0';
	redact_set_clear(a);
	assert_int_equal(redact_set_count(a), 0);
	assert_int_equal(redact_set_add(a, long_pat, long_n, "LONG", 4), 0);
	assert_int_equal(redact_set_add(a, "zeta", 4, "Z", 1), 0);
	assert_int_equal(redact_set_seal(a), 0);
	b = a;
	const struct redact_set *bsets[] = { b };
	assert_int_equal(redactor_restart(r, bsets, 1), 0);
	size_t n = long_n + 40;
	char *in = malloc(n);
	assert_non_null(in);
	memcpy(in, "short-pattern zeta ", 19);
	memcpy(in + 19, long_pat, long_n);
	memcpy(in + 19 + long_n, " short-pattern zeta!", 21);
	buf_reset(&out);
	for (size_t at = 0; at < n;) { /* in pieces smaller than the pattern */
		size_t k = n - at < 7001 ? n - at : 7001;
		assert_int_equal(redactor_feed(r, in + at, k, emit_buf, &out), 0);
		at += k;
	}
	assert_int_equal(redactor_finish(r, emit_buf, &out), 0);
	assert_string_equal(out.data, "short-pattern Z LONG short-pattern Z!");
	assert_int_equal(redactor_count(r), 3);

	/* a failed restart (a set not sealed) leaves no sets at all */
	struct redact_set *unsealed;
	assert_int_equal(redact_set_new(&unsealed), 0);
	assert_int_equal(redact_set_add(unsealed, "zeta", 4, "Z", 1), 0);
	const struct redact_set *bad[] = { b, unsealed };
	assert_int_equal(redactor_restart(r, bad, 2), -EINVAL);
	buf_reset(&out);
	assert_int_equal(redactor_feed(r, "zeta LL", 7, emit_buf, &out), 0);
	assert_int_equal(redactor_finish(r, emit_buf, &out), 0);
	assert_string_equal(out.data, "zeta LL");
	assert_int_equal(redactor_count(r), 0);

	redactor_free(r);
	redact_set_free(unsealed);
	redact_set_free(a);
	free(in);
	free(long_pat);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_empty_set_passes_everything),
		cmocka_unit_test(test_every_split_offset),
		cmocka_unit_test(test_longest_wins_and_counts),
		cmocka_unit_test(test_secret_forms_every_offset),
		cmocka_unit_test(test_short_secret),
		cmocka_unit_test(test_two_sets),
		cmocka_unit_test(test_many_first_bytes),
		cmocka_unit_test(test_large_feed_bounded),
		cmocka_unit_test(test_restart_is_like_new),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
