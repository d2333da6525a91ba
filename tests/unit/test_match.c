/* Route matching: hosts, globs, and which route a refusal names. Policies
 * are built by hand so that these tests do not depend on the loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "policy/policy.h"

/* ---- hosts ---- */

struct host_case {
	const char *route; /* as stored: ".example.com" for a wildcard */
	bool wildcard;
	const char *host;
	bool match;
};

static const struct host_case host_cases[] = {
	/* refusals first */
	{ "api.github.com", false, "", false },
	{ "api.github.com", false, ".", false },
	{ "api.github.com", false, "github.com", false },
	{ "api.github.com", false, "xapi.github.com", false },
	{ "api.github.com", false, "api.github.com.evil.com", false },
	{ "api.github.com", false, "evil.com/api.github.com", false },
	{ "api.github.com", false, "api.github.co", false },
	{ "api.github.com", false, "api.github.com..", false },
	{ ".example.com", true, "example.com", false },
	{ ".example.com", true, ".example.com", false },
	{ ".example.com", true, "a..example.com", false },
	{ ".example.com", true, "badexample.com", false },
	{ ".example.com", true, "a.example.com.evil.net", false },
	{ ".example.com", true, "example.com.", false },
	{ "127.0.0.1", false, "127.0.0.2", false },
	{ "::1", false, "::2", false },
	{ "::1", false, "[::2]", false },
	{ "::1", false, "127.0.0.1", false },
	{ "::1", false, "[::1", false },
	/* matches */
	{ "api.github.com", false, "api.github.com", true },
	{ "api.github.com", false, "API.GitHub.COM", true },
	{ "api.github.com", false, "api.github.com.", true },
	{ ".example.com", true, "a.example.com", true },
	{ ".example.com", true, "a.b.c.example.com", true },
	{ ".example.com", true, "A.EXAMPLE.com", true },
	{ ".example.com", true, "a.example.com.", true },
	{ "127.0.0.1", false, "127.0.0.1", true },
	{ "::1", false, "::1", true },
	{ "::1", false, "[::1]", true },
	{ "::1", false, "[0:0::1]", true },
	{ "fe80::1", false, "[FE80::1]", true },
};

static void test_hosts(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(host_cases); i++) {
		const struct host_case *c = &host_cases[i];
		struct policy_route r = { .host = (char *)c->route, .wildcard = c->wildcard };
		if (route_host_matches(&r, c->host) != c->match)
			fail_msg("case %zu: route %s%s, host \"%s\": want %s", i, c->wildcard ? "*" : "", c->route,
			         c->host, c->match ? "match" : "no match");
	}
	struct policy_route r = { .host = (char *)"a.com" };
	assert_false(route_host_matches(&r, NULL));
}

/* ---- globs ---- */

struct glob_case {
	const char *glob;
	const char *path;
	bool match;
};

static const struct glob_case glob_cases[] = {
	/* refusals first */
	{ "/a", "/a/", false },
	{ "/a", "/A", false },
	{ "/a", "/ab", false },
	{ "/a", "", false },
	{ "/a/*", "/a/b/c", false },
	{ "/a/*", "/a", false },
	{ "/a/*/c", "/a/c", false },
	{ "/a/*/c", "/a/b/x/c", false },
	{ "/*.git", "/a/b.git", false },
	{ "/a/**", "/ab", false },
	{ "/a/**", "/abc/d", false },
	{ "/a/**", "/", false },
	{ "/a/**/b", "/a/xb", false },
	{ "/a/**/b", "/a/x/yb", false },
	{ "/a/**/b", "/a/b/c", false },
	{ "/a/b**", "/a/c", false },
	{ "/repos/acme/app/**", "/repos/acme/app2", false },
	{ "/repos/acme/app/**", "/repos/acme/ap", false },
	{ "/repos/*/app", "/repos/app", false },
	{ "/x", "/x%2F", false },
	{ "/x", "/x/", false },
	{ "/x/", "/x", false },
	{ "/a/b/**", "/a/b2/c", false },
	{ "/a/b/**", "/a", false },
	{ "/a/b/**", "/a/", false },
	{ "/a/b/**", "", false },
	{ "/a**", "/b", false },
	/* one star before a last character: not PREFIX/STARSTAR */
	{ "/a/*b", "/a/xyz", false },
	{ "/a/*b", "/a/x/b", false },
	{ "/a/*/", "/a/x/y", false },
	/* matches */
	{ "/a/*b", "/a/xb", true },
	{ "/", "/", true },
	{ "/a", "/a", true },
	{ "/a/*", "/a/", true },
	{ "/a/*", "/a/b", true },
	{ "/a/*/c", "/a/b/c", true },
	{ "/*.git", "/app.git", true },
	{ "/*", "/", true },
	{ "/**", "/", true },
	{ "/**", "/a/b/c", true },
	{ "**", "/a", true },
	{ "/a/**", "/a", true },
	{ "/a/**", "/a/", true },
	{ "/a/**", "/a/b", true },
	{ "/a/**", "/a/b/c/d", true },
	{ "/a/**/b", "/a/b", true },
	{ "/a/**/b", "/a/x/b", true },
	{ "/a/**/b", "/a/x/y/z/b", true },
	{ "/**/b", "/b", true },
	{ "/**/b", "/x/y/b", true },
	{ "/a/b**", "/a/b/c/d", true },
	{ "/a/b**", "/a/bcd", true },
	{ "/a/*b*c", "/a/xbyc", true },
	{ "/a/*b*c", "/a/bc", true },
	{ "/repos/acme/app/**", "/repos/acme/app/issues/1", true },
	{ "/acme/app.git/**", "/acme/app.git/info/refs", true },
	{ "/v1/*/items/*", "/v1/x/items/y", true },
	{ "/a%2Fb", "/a%2Fb", true },
	{ "/a/***", "/a/b/c", true },
	{ "/a/b/**", "/a/b", true },
	{ "/a/b/**", "/a/b/", true },
	{ "/a/b/**", "/a/b//", true },
	{ "/a/b/**", "/a/b/*", true },
	{ "/a/b/**", "/a/b/c/d/e", true },
	{ "/**", "", true },
	{ "/a**", "/a", true },
	{ "/a**", "/ab/c", true },
	{ "/a**", "/a/b", true },
	{ "", "", true },
};

static void test_globs(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(glob_cases); i++) {
		const struct glob_case *c = &glob_cases[i];
		if (path_glob_match(c->glob, c->path) != c->match)
			fail_msg("case %zu: glob \"%s\", path \"%s\": want %s", i, c->glob, c->path,
			         c->match ? "match" : "no match");
	}
	assert_false(path_glob_match(NULL, "/"));
	assert_false(path_glob_match("/", NULL));
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A backtracking matcher takes exponential time on these; this one is
 * linear in path length for a given glob. */
static void test_glob_pathological(void **state)
{
	(void)state;
	static char path[65536];
	path[0] = '/';
	memset(path + 1, 'a', sizeof(path) - 2);
	path[sizeof(path) - 1] = '\0';

	char glob[600];
	size_t n = 0;
	glob[n++] = '/';
	for (int i = 0; i < 100; i++) {
		glob[n++] = '*';
		glob[n++] = 'a';
	}
	glob[n++] = '*';
	glob[n++] = 'b';
	glob[n] = '\0';

	double t0 = now();
	assert_false(path_glob_match("/*a*a*a*a*a*a*a*a*a*a*a*a*b", path));
	assert_false(path_glob_match("/**a**a**a**a**a**a**a**a**a**b", path));
	assert_false(path_glob_match(glob, path)); /* 203 bytes: stack */
	/* a glob longer than the stack token array takes the heap path */
	char big[1200];
	memset(big, 0, sizeof(big));
	big[0] = '/';
	size_t k = 1;
	while (k + 4 < sizeof(big)) {
		big[k++] = '*';
		big[k++] = 'a';
	}
	big[k++] = '*';
	big[k++] = 'b';
	assert_false(path_glob_match(big, path));
	double t1 = now();
	/* Generous for ASan; exponential behaviour would take years. Under
	 * valgrind (`make test-valgrind`) the program runs some 50 times slower. */
	double limit = getenv("KEYWARD_VALGRIND") ? 2000.0 : 20.0;
	if (t1 - t0 > limit)
		fail_msg("pathological globs took %.1f s", t1 - t0);

	/* still correct on a match */
	path[sizeof(path) - 2] = 'b';
	assert_true(path_glob_match("/*a*a*a*a*a*a*a*a*a*a*a*a*b", path));
	assert_true(path_glob_match(glob, path));
	assert_true(path_glob_match(big, path));
}

/* ---- routes ---- */

static char *m_get_post[] = { "GET", "POST", NULL };
static char *m_get[] = { "GET", NULL };
static char *p_repo[] = { "/repos/acme/app/**", NULL };
static char *p_git[] = { "/acme/app.git/**", NULL };

/* A policy in the shape of DESIGN.md's example, plus odd corners. */
static struct policy_route routes[] = {
	{ .host = "api.github.com", .methods = m_get_post, .paths = p_repo },
	{ .host = "github.com", .paths = p_git },
	{ .host = "pypi.org" },
	{ .host = ".example.com", .wildcard = true, .port = 8443, .methods = m_get },
	{ .host = "plain.test", .scheme = SCHEME_HTTP },
	{ .host = "127.0.0.1", .scheme = SCHEME_HTTP, .port = 8080, .allow_private = true },
	{ .host = "api.github.com", .methods = m_get },
};
static const struct policy test_policy = {
	.routes = routes,
	.n_routes = ARRAY_SIZE(routes),
};

struct route_case {
	enum scheme scheme;
	const char *host;
	uint16_t port;
	const char *method;
	const char *path;
	enum match_fail fail;
	int route; /* index of the route in the result, -1 for NULL */
};

static const struct route_case route_cases[] = {
	/* unknown hosts */
	{ SCHEME_HTTPS, "evil.com", 443, "GET", "/", MATCH_HOST, -1 },
	{ SCHEME_HTTPS, "github.com.evil.com", 443, "GET", "/", MATCH_HOST, -1 },
	{ SCHEME_HTTPS, "example.com", 8443, "GET", "/", MATCH_HOST, -1 },
	{ SCHEME_HTTPS, "", 443, "GET", "/", MATCH_HOST, -1 },
	/* scheme: the host is listed for the other scheme */
	{ SCHEME_HTTP, "pypi.org", 80, "GET", "/", MATCH_SCHEME, 2 },
	{ SCHEME_HTTPS, "plain.test", 443, "GET", "/", MATCH_SCHEME, 4 },
	/* port: default by scheme, or the route's own */
	{ SCHEME_HTTPS, "pypi.org", 8443, "GET", "/", MATCH_PORT, 2 },
	{ SCHEME_HTTPS, "pypi.org", 80, "GET", "/", MATCH_PORT, 2 },
	{ SCHEME_HTTP, "plain.test", 443, "GET", "/", MATCH_PORT, 4 },
	{ SCHEME_HTTPS, "a.example.com", 443, "GET", "/", MATCH_PORT, 3 },
	{ SCHEME_HTTP, "127.0.0.1", 80, "GET", "/", MATCH_PORT, 5 },
	/* method: the closest route is the first that got that far */
	{ SCHEME_HTTPS, "api.github.com", 443, "DELETE", "/repos/acme/app", MATCH_METHOD, 0 },
	{ SCHEME_HTTPS, "a.example.com", 8443, "POST", "/", MATCH_METHOD, 3 },
	{ SCHEME_HTTPS, "api.github.com", 443, "get", "/x", MATCH_METHOD, 0 },
	/* path */
	{ SCHEME_HTTPS, "api.github.com", 443, "POST", "/repos/evil/app", MATCH_PATH, 0 },
	{ SCHEME_HTTPS, "github.com", 443, "GET", "/acme/other.git/info/refs", MATCH_PATH, 1 },
	{ SCHEME_HTTPS, "github.com", 443, "GET", "/acme/app.gitx", MATCH_PATH, 1 },
	/* allowed */
	{ SCHEME_HTTPS, "api.github.com", 443, "GET", "/repos/acme/app/pulls", MATCH_OK, 0 },
	{ SCHEME_HTTPS, "API.GITHUB.COM.", 443, "POST", "/repos/acme/app", MATCH_OK, 0 },
	/* not the first route's path, but the later GET-only route allows all paths */
	{ SCHEME_HTTPS, "api.github.com", 443, "GET", "/user", MATCH_OK, 6 },
	{ SCHEME_HTTPS, "github.com", 443, "PUT", "/acme/app.git", MATCH_OK, 1 },
	{ SCHEME_HTTPS, "pypi.org", 443, "PATCH", "/simple/x/", MATCH_OK, 2 },
	{ SCHEME_HTTPS, "x.y.example.com", 8443, "GET", "/", MATCH_OK, 3 },
	{ SCHEME_HTTP, "plain.test", 80, "GET", "/", MATCH_OK, 4 },
	{ SCHEME_HTTP, "127.0.0.1", 8080, "GET", "/", MATCH_OK, 5 },
};

static void test_routes(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(route_cases); i++) {
		const struct route_case *c = &route_cases[i];
		struct match_request req = {
			.scheme = c->scheme, .host = c->host, .port = c->port, .method = c->method, .path = c->path
		};
		struct match_result res;
		policy_match(&test_policy, &req, &res);
		int got = res.route ? (int)(res.route - routes) : -1;
		if (res.fail != c->fail || got != c->route)
			fail_msg("case %zu %s %s:%u %s: got %s/route %d, want %s/route %d", i, c->method, c->host,
			         c->port, c->path, match_fail_name(res.fail), got, match_fail_name(c->fail), c->route);
	}
}

static void test_match_host(void **state)
{
	(void)state;
	const struct policy_route *r = (void *)1;

	assert_int_equal(policy_match_host(&test_policy, SCHEME_HTTPS, "evil.com", 443, &r), MATCH_HOST);
	assert_null(r);
	assert_int_equal(policy_match_host(&test_policy, SCHEME_HTTP, "pypi.org", 80, &r), MATCH_SCHEME);
	assert_ptr_equal(r, &routes[2]);
	assert_int_equal(policy_match_host(&test_policy, SCHEME_HTTPS, "a.example.com", 443, &r), MATCH_PORT);
	assert_ptr_equal(r, &routes[3]);
	assert_int_equal(policy_match_host(&test_policy, SCHEME_HTTPS, "api.github.com", 443, &r), MATCH_OK);
	assert_ptr_equal(r, &routes[0]);
	assert_int_equal(policy_match_host(&test_policy, SCHEME_HTTPS, "b.example.com", 8443, NULL), MATCH_OK);

	/* an empty policy refuses everything */
	struct policy empty = { 0 };
	assert_int_equal(policy_match_host(&empty, SCHEME_HTTPS, "pypi.org", 443, &r), MATCH_HOST);
	assert_null(r);
}

static void test_fail_names(void **state)
{
	(void)state;
	assert_string_equal(match_fail_name(MATCH_OK), "ok");
	assert_string_equal(match_fail_name(MATCH_HOST), "host");
	assert_string_equal(match_fail_name(MATCH_PORT), "port");
	assert_string_equal(match_fail_name(MATCH_SCHEME), "scheme");
	assert_string_equal(match_fail_name(MATCH_METHOD), "method");
	assert_string_equal(match_fail_name(MATCH_PATH), "path");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hosts),
		cmocka_unit_test(test_globs),
		cmocka_unit_test(test_glob_pathological),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_match_host),
		cmocka_unit_test(test_fail_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
