/* Path normalisation and glob matching (src/policy/path.h, policy.h).
 *
 * The input is split at the first NUL or newline into a glob and a path;
 * without a separator it is both. The path is normalised as
 * src/proxy/conn.c does before matching, and the result must be:
 *  - no longer than the input (out needs never exceed len + 1);
 *  - canonical: it starts with '/', has no empty segment except a final
 *    one, no "." or ".." segment, no lower-case hex escape, no escape of an
 *    unreserved character;
 *  - idempotent: normalising it again gives the same bytes, succeeds, and
 *    raises no flag the input did not raise;
 *  - exact about its buffer: one byte too small is -ENOBUFS, never a write
 *    past it.
 * Glob matching must terminate (it is an automaton, not backtracking) and
 * agree with what follows from its rules: "/" + "**" and "**" match every
 * normalised path, a glob without '*' matches exactly itself. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "policy/path.h"
#include "policy/policy.h"

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
	       c == '_' || c == '~';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1; /* lower case is not canonical */
}

static void check_canonical(const char *s, size_t n)
{
	fuzz_assert(n >= 1 && s[0] == '/');
	fuzz_assert(strlen(s) == n);
	size_t start = 1;
	for (size_t i = 1; i <= n; i++) {
		if (i < n && s[i] != '/')
			continue;
		size_t len = i - start;
		/* Only the very last segment may be empty ("/a/" or "/"). */
		fuzz_assert(len > 0 || i == n);
		fuzz_assert(!(len == 1 && s[start] == '.'));
		fuzz_assert(!(len == 2 && s[start] == '.' && s[start + 1] == '.'));
		start = i + 1;
	}
	fuzz_assert(!strstr(s, "//") && !strstr(s, "/./") && !strstr(s, "/../"));
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%')
			continue;
		fuzz_assert(i + 2 < n);
		int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
		fuzz_assert(hi >= 0 && lo >= 0);
		fuzz_assert(!unreserved((unsigned char)(hi << 4 | lo)));
		i += 2;
	}
}

static void check_path(const char *in, size_t len)
{
	char *out = fuzz_alloc_exact(len + 1);
	unsigned flags = 0;
	int n = path_normalize(in, len, out, len + 1, &flags);
	if (n < 0) {
		fuzz_assert(n == -EINVAL);
		free(out);
		return;
	}
	fuzz_assert((size_t)n <= len);
	check_canonical(out, (size_t)n);

	/* Idempotent, and it raises no new flag. */
	char *again = fuzz_alloc_exact((size_t)n + 1);
	unsigned flags2 = 0;
	int n2 = path_normalize(out, (size_t)n, again, (size_t)n + 1, &flags2);
	fuzz_assert(n2 == n && memcmp(again, out, (size_t)n + 1) == 0);
	fuzz_assert((flags2 & ~flags) == 0);
	free(again);

	/* One byte short of the result and its NUL: -ENOBUFS, and no
	 * write past the end (ASan watches the exact-size buffer). */
	char *small = fuzz_alloc_exact((size_t)n);
	unsigned flags3 = 0;
	fuzz_assert(path_normalize(in, len, small, (size_t)n, &flags3) == -ENOBUFS);
	free(small);

	(void)path_flag_name(flags);
	fuzz_assert(path_glob_match("/**", out));
	fuzz_assert(path_glob_match("**", out));
	if (!strchr(out, '*'))
		fuzz_assert(path_glob_match(out, out));
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	size_t cut = size;
	for (size_t i = 0; i < size; i++) {
		if (in[i] == '\0' || in[i] == '\n') {
			cut = i;
			break;
		}
	}
	const char *path = cut < size ? in + cut + 1 : in;
	size_t plen = cut < size ? size - cut - 1 : size;

	/* The path exactly as sent (exact-size copy: no NUL to lean on). */
	char *p = fuzz_dup_exact(path, plen);
	check_path(p, plen);
	free(p);

	/* Glob against the raw and the normalised path. */
	char *glob = fuzz_strndup(in, cut);
	char *raw = fuzz_strndup(path, plen);
	(void)path_glob_match(glob, raw);
	char *norm = fuzz_alloc_exact(plen + 1);
	unsigned flags;
	if (path_normalize(raw, plen, norm, plen + 1, &flags) >= 0) {
		bool m = path_glob_match(glob, norm);
		/* No '*': a glob is a literal string. */
		if (!strchr(glob, '*'))
			fuzz_assert(m == (strcmp(glob, norm) == 0));
	}
	free(norm);
	free(raw);
	free(glob);
	return 0;
}
