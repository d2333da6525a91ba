/* path_normalize: malformed input first, then ambiguous forms (flags), then
 * the normal forms of RFC 3986 5.2.4 and 6.2.2. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/path.h"

struct path_case {
	const char *in;
	size_t len;      /* 0: strlen(in); set for inputs with NUL bytes */
	int ret;         /* expected negative errno, or 0 for success */
	const char *out; /* expected output on success */
	unsigned flags;
};

static const struct path_case cases[] = {
	/* malformed: refused outright */
	{ "", 0, -EINVAL, NULL, 0 },
	{ "a/b", 0, -EINVAL, NULL, 0 },
	{ "*", 0, -EINVAL, NULL, 0 },
	{ "http://x/a", 0, -EINVAL, NULL, 0 },
	{ "%2Fa", 0, -EINVAL, NULL, 0 }, /* an escaped slash is not a leading '/' */
	{ "/a%zzb", 0, -EINVAL, NULL, 0 },
	{ "/a%4", 0, -EINVAL, NULL, 0 },
	{ "/a%", 0, -EINVAL, NULL, 0 },
	{ "/a%g0", 0, -EINVAL, NULL, 0 },
	{ "/a%0g", 0, -EINVAL, NULL, 0 },
	{ "/a b", 0, -EINVAL, NULL, 0 },
	{ "/a\tb", 0, -EINVAL, NULL, 0 },
	{ "/a\rb", 0, -EINVAL, NULL, 0 },
	{ "/a\nb", 0, -EINVAL, NULL, 0 },
	{ "/a\x7f", 0, -EINVAL, NULL, 0 },
	{ "/a\x01", 0, -EINVAL, NULL, 0 },
	{ "/a\0b", 4, -EINVAL, NULL, 0 },        /* raw NUL */
	{ "/caf\xc3\xa9", 0, -EINVAL, NULL, 0 }, /* raw UTF-8 */
	{ "/\xff", 0, -EINVAL, NULL, 0 },
	{ "/a#frag", 0, -EINVAL, NULL, 0 },
	{ "/a?q=1", 0, -EINVAL, NULL, 0 },

	/* ambiguous: kept, flagged */
	{ "/a%2Fb", 0, 0, "/a%2Fb", PATH_ENCODED_SLASH },
	{ "/a%2fb", 0, 0, "/a%2Fb", PATH_ENCODED_SLASH },
	{ "/a\\b", 0, 0, "/a\\b", PATH_BACKSLASH },
	{ "/a%5cb", 0, 0, "/a%5Cb", PATH_BACKSLASH },
	{ "/a%00b", 0, 0, "/a%00b", PATH_ENCODED_NUL },
	{ "/a%01b", 0, 0, "/a%01b", PATH_ENCODED_CONTROL },
	{ "/a%0Ab", 0, 0, "/a%0Ab", PATH_ENCODED_CONTROL },
	{ "/a%1f", 0, 0, "/a%1F", PATH_ENCODED_CONTROL },
	{ "/a%7F", 0, 0, "/a%7F", PATH_ENCODED_CONTROL },
	{ "/a%252e%252e/b", 0, 0, "/a%252e%252e/b", PATH_ENCODED_PERCENT },
	{ "/a;jsessionid=1/b", 0, 0, "/a;jsessionid=1/b", PATH_SEMICOLON },
	{ "/a%2F..%2Fb", 0, 0, "/a%2F..%2Fb", PATH_ENCODED_SLASH },
	/* a flag counts even where ".." removes the segment carrying it */
	{ "/x%2F/../b", 0, 0, "/b", PATH_ENCODED_SLASH },
	{ "/a%2F\\;%00%25", 0, 0, "/a%2F\\;%00%25",
	  PATH_ENCODED_SLASH | PATH_BACKSLASH | PATH_SEMICOLON | PATH_ENCODED_NUL | PATH_ENCODED_PERCENT },
	/* %3B is data, not a delimiter; %20 and %80+ are ordinary */
	{ "/a%3bb", 0, 0, "/a%3Bb", 0 },
	{ "/a%20b", 0, 0, "/a%20b", 0 },
	{ "/caf%c3%a9", 0, 0, "/caf%C3%A9", 0 },

	/* percent-escapes of unreserved characters are decoded */
	{ "/%41%62%7E%2D%5F%2e", 0, 0, "/Ab~-_.", 0 },
	{ "/%7euser", 0, 0, "/~user", 0 },
	{ "/a%3ab%40c", 0, 0, "/a%3Ab%40c", 0 },

	/* dot segments, after decoding */
	{ "/", 0, 0, "/", 0 },
	{ "/a", 0, 0, "/a", 0 },
	{ "/a/", 0, 0, "/a/", 0 },
	{ "/a/b/c", 0, 0, "/a/b/c", 0 },
	{ "/.", 0, 0, "/", 0 },
	{ "/..", 0, 0, "/", 0 },
	{ "/../..", 0, 0, "/", 0 },
	{ "/../a", 0, 0, "/a", 0 },
	{ "/a/..", 0, 0, "/", 0 },
	{ "/a/b/..", 0, 0, "/a/", 0 },
	{ "/a/b/../", 0, 0, "/a/", 0 },
	{ "/a/b/.", 0, 0, "/a/b/", 0 },
	{ "/a/./b", 0, 0, "/a/b", 0 },
	{ "/a/b/../c", 0, 0, "/a/c", 0 },
	{ "/a/b/../../../../c", 0, 0, "/c", 0 },
	{ "/a/%2e%2E/b", 0, 0, "/b", 0 },
	{ "/a/.%2e/b", 0, 0, "/b", 0 },
	{ "/a/%2E/b", 0, 0, "/a/b", 0 },
	{ "/a/.../b", 0, 0, "/a/.../b", 0 },
	{ "/a/..b/c", 0, 0, "/a/..b/c", 0 },
	{ "/a/b../c", 0, 0, "/a/b../c", 0 },
	{ "/a/.b", 0, 0, "/a/.b", 0 },
	{ "/a/%2e%2e%2e", 0, 0, "/a/...", 0 },

	/* slash runs collapse, before ".." applies */
	{ "//", 0, 0, "/", 0 },
	{ "///a", 0, 0, "/a", 0 },
	{ "/a//b", 0, 0, "/a/b", 0 },
	{ "/a//", 0, 0, "/a/", 0 },
	{ "/a//../b", 0, 0, "/b", 0 },
	{ "/a/b//..//c", 0, 0, "/a/c", 0 },
	{ "//..//a//", 0, 0, "/a/", 0 },
	{ "/repos/acme/app/../../evil/app/issues", 0, 0, "/repos/evil/app/issues", 0 },

	/* other raw characters are kept */
	{ "/a:b@c!$&'()*+,=", 0, 0, "/a:b@c!$&'()*+,=", 0 },
	{ "/a\"<>[]^`{|}", 0, 0, "/a\"<>[]^`{|}", 0 },
};

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct path_case *c = &cases[i];
		size_t len = c->len ? c->len : strlen(c->in);
		char out[256];
		unsigned flags = 0xdead;

		memset(out, 'X', sizeof(out));
		int r = path_normalize(c->in, len, out, len + 1, &flags);
		if (c->ret < 0) {
			if (r != c->ret)
				fail_msg("case %zu \"%s\": got %d, want %d", i, c->in, r, c->ret);
			assert_int_equal(flags, 0xdead); /* untouched on failure */
			continue;
		}
		if (r < 0)
			fail_msg("case %zu \"%s\": failed with %d", i, c->in, r);
		if (strcmp(out, c->out) != 0)
			fail_msg("case %zu \"%s\": got \"%s\", want \"%s\"", i, c->in, out, c->out);
		assert_int_equal(r, strlen(c->out));
		assert_true((size_t)r <= len);
		if (flags != c->flags)
			fail_msg("case %zu \"%s\": flags %#x, want %#x", i, c->in, flags, c->flags);
	}
}

/* Normalising twice changes nothing. */
static void test_idempotent(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct path_case *c = &cases[i];
		if (c->ret < 0)
			continue;
		char out[256];
		unsigned flags;
		int r = path_normalize(c->out, strlen(c->out), out, sizeof(out), &flags);
		assert_int_equal(r, strlen(c->out));
		assert_string_equal(out, c->out);
	}
}

static void test_small_buffer(void **state)
{
	(void)state;
	char out[8];
	unsigned flags;

	assert_int_equal(path_normalize("/abcdefgh", 9, out, 8, &flags), -ENOBUFS);
	assert_int_equal(path_normalize("/abcdef", 7, out, 8, &flags), 7);
	assert_string_equal(out, "/abcdef");
	assert_int_equal(path_normalize("/a", 2, out, 0, &flags), -ENOBUFS);
	assert_int_equal(path_normalize("/", 1, out, 1, &flags), -ENOBUFS);
	assert_int_equal(path_normalize("/", 1, out, 2, &flags), 1);
	/* a malformed path is -EINVAL even when the buffer is too small */
	assert_int_equal(path_normalize("/abcdefghij%zz", 14, out, 4, &flags), -EINVAL);
}

/* Only the counted bytes are read. */
static void test_counted(void **state)
{
	(void)state;
	char out[16];
	unsigned flags;

	assert_int_equal(path_normalize("/ab/../cd", 3, out, sizeof(out), &flags), 3);
	assert_string_equal(out, "/ab");
	assert_int_equal(path_normalize("/a%41", 4, out, sizeof(out), &flags), -EINVAL);
}

static void test_long(void **state)
{
	(void)state;
	enum { N = 60000 };
	static char in[N + 1], out[N + 1];

	/* "/a/../a/../..." thousands deep: linear, ends at "/". */
	size_t n = 0;
	while (n + 5 <= N) {
		memcpy(in + n, "/a/..", 5);
		n += 5;
	}
	unsigned flags;
	assert_int_equal(path_normalize(in, n, out, n + 1, &flags), 1);
	assert_string_equal(out, "/");
}

static void test_flag_names(void **state)
{
	(void)state;
	assert_string_equal(path_flag_name(0), "none");
	assert_string_equal(path_flag_name(PATH_ENCODED_SLASH), "encoded slash (%2F)");
	assert_string_equal(path_flag_name(PATH_BACKSLASH), "backslash (\\ or %5C)");
	assert_string_equal(path_flag_name(PATH_ENCODED_NUL), "encoded NUL (%00)");
	assert_string_equal(path_flag_name(PATH_ENCODED_CONTROL), "encoded control character (%01-%1F, %7F)");
	assert_string_equal(path_flag_name(PATH_ENCODED_PERCENT), "encoded percent sign (%25, double encoding)");
	assert_string_equal(path_flag_name(PATH_SEMICOLON), "semicolon (;)");
	/* the first flag set wins */
	assert_string_equal(path_flag_name(PATH_SEMICOLON | PATH_BACKSLASH), "backslash (\\ or %5C)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),   cmocka_unit_test(test_idempotent), cmocka_unit_test(test_small_buffer),
		cmocka_unit_test(test_counted), cmocka_unit_test(test_long),       cmocka_unit_test(test_flag_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
