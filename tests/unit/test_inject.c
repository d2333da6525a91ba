/* inject: the request head sent upstream, and the leak check. What must
 * never happen comes first: the client's own credential or hop-by-hop
 * headers reaching upstream, a placeholder passing to the wrong route. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/encode.h"
#include "proxy/inject.h"

#define PH     "kw_test_placeholder_0123456789"
#define PH2    "kw_other_placeholder_9876543210"
#define SECRET "s3cr3t/+=&value"

static const char policy_yaml[] =
    "version: 1\n"
    "credentials:\n"
    "  test: {from: env:T, placeholder: " PH "}\n"
    "  other: {from: env:O, placeholder: " PH2 "}\n"
    "routes:\n"
    "  - {host: bearer.test, credential: test, inject: bearer}\n"
    "  - {host: basic.test, credential: test, inject: {basic: x-access-token}}\n"
    "  - {host: basickeep.test, credential: test, inject: basic}\n"
    "  - {host: header.test, credential: test, inject: {header: X-Api-Key, value: 'Token {secret}'}}\n"
    "  - {host: query.test, credential: test, inject: {query: key}}\n"
    "  - {host: swap.test, credential: test, inject: swap}\n"
    "  - {host: open.test}\n";

struct fixture {
	struct policy *p;
	struct secret *s;
};

static int setup(void **state)
{
	static struct fixture f;
	struct policy_error err;
	if (policy_load_string("t.yaml", policy_yaml, sizeof(policy_yaml) - 1, &f.p, &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		return -1;
	}
	if (secret_new(SECRET, strlen(SECRET), &f.s) < 0)
		return -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	policy_free(f->p);
	secret_free(f->s);
	return 0;
}

static const struct policy_route *route(struct fixture *f, const char *host)
{
	for (size_t i = 0; i < f->p->n_routes; i++)
		if (strcmp(f->p->routes[i].host, host) == 0)
			return &f->p->routes[i];
	fail_msg("no route %s", host);
	return NULL;
}

/* Parses raw, rewrites it for the route, and returns the upstream head. */
static char *rewrite(struct fixture *f, const char *host, const char *raw)
{
	static struct http_header hdrs[32];
	static struct http_head hd;
	struct http1 h;
	const char *why = NULL;
	hd = (struct http_head){ .headers = hdrs, .max_headers = 32 };
	http1_init(&h, HTTP1_REQUEST);
	assert_int_equal(http1_parse_head(&h, raw, strlen(raw), &hd, &why), 0);
	const char *q = memchr(hd.url, '?', hd.url_len);
	size_t pl = q ? (size_t)(q - hd.url) : hd.url_len;
	const struct policy_route *rt = route(f, host);
	struct outbound o = {
		.req = &hd,
		.path = hd.url,
		.path_len = pl,
		.query = q ? q + 1 : NULL,
		.query_len = q ? hd.url_len - pl - 1 : 0,
		.host = host,
		.port = 443,
		.scheme = SCHEME_HTTPS,
		.route = rt,
		.secret = rt->credential ? f->s : NULL,
	};
	struct buf out;
	buf_init(&out, 65536);
	assert_int_equal(inject_request_head(&o, &out, &why), 0);
	return out.data;
}

static void test_hop_by_hop_and_client_credentials_removed(void **state)
{
	char *h = rewrite(*state, "bearer.test",
	                  "GET /x HTTP/1.1\r\nHost: bearer.test\r\nAuthorization: Bearer mine\r\n"
	                  "Proxy-Authorization: Basic eDp5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
	                  "Keep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nAccept: */*\r\n\r\n");
	assert_null(strstr(h, "mine"));
	assert_null(strstr(h, "Proxy-"));
	assert_null(strstr(h, "X-Drop"));
	assert_null(strstr(h, "Keep-Alive"));
	assert_null(strstr(h, "TE:"));
	assert_null(strstr(h, "Connection"));
	assert_non_null(strstr(h, "Accept: */*\r\n"));
	assert_non_null(strstr(h, "Authorization: Bearer " SECRET "\r\n"));
	assert_int_equal(strncmp(h, "GET /x HTTP/1.1\r\nHost: bearer.test\r\n", 36), 0);
	free(h);
}

static void test_basic_with_user(void **state)
{
	char *h = rewrite(*state, "basic.test",
	                  "GET / HTTP/1.1\r\nHost: basic.test\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n");
	struct buf plain;
	buf_init(&plain, 1024);
	const char *v = strstr(h, "Authorization: Basic ") + 21;
	assert_int_equal(base64_decode(v, (size_t)(strstr(v, "\r\n") - v), &plain), 0);
	assert_string_equal(plain.data, "x-access-token:" SECRET);
	assert_null(strstr(h, "Zm9vOmJhcg=="));
	buf_free(&plain);
	free(h);
}

static void test_basic_keeps_client_user(void **state)
{
	/* alice:PH */
	struct buf enc, plain;
	buf_init(&enc, 1024);
	buf_init(&plain, 1024);
	assert_int_equal(base64_encode("alice:" PH, strlen("alice:" PH), &enc), 0);
	char raw[512];
	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: b\r\nAuthorization: Basic %s\r\n\r\n", enc.data);
	char *h = rewrite(*state, "basickeep.test", raw);
	const char *v = strstr(h, "Authorization: Basic ") + 21;
	assert_int_equal(base64_decode(v, (size_t)(strstr(v, "\r\n") - v), &plain), 0);
	assert_string_equal(plain.data, "alice:" SECRET);
	buf_free(&enc);
	buf_free(&plain);
	free(h);
}

static void test_header_template(void **state)
{
	char *h = rewrite(*state, "header.test", "GET / HTTP/1.1\r\nHost: h\r\nx-api-key: " PH "\r\n\r\n");
	assert_non_null(strstr(h, "X-Api-Key: Token " SECRET "\r\n"));
	assert_null(strstr(h, PH));
	assert_null(strstr(h, "x-api-key"));
	free(h);
}

static void test_query_injection(void **state)
{
	char *h = rewrite(*state, "query.test", "GET /p?key=" PH "&a=1&keyx=2 HTTP/1.1\r\nHost: q\r\n\r\n");
	/* The client's key= is dropped, the real one appended, percent-encoded. */
	assert_int_equal(strncmp(h, "GET /p?a=1&keyx=2&key=s3cr3t%2F%2B%3D%26value HTTP/1.1\r\n", 56), 0);
	free(h);
	h = rewrite(*state, "query.test", "GET /p HTTP/1.1\r\nHost: q\r\n\r\n");
	assert_int_equal(strncmp(h, "GET /p?key=s3cr3t%2F%2B%3D%26value HTTP/1.1\r\n", 45), 0);
	free(h);
	/* The client's own key in another spelling is the same parameter to the
	 * upstream, and goes too; other names stay. */
	h = rewrite(*state, "query.test",
	            "GET /p?k%65y=mine&%6B%65%79&KEY=x&key%3D=y&k%6=z&a=1 HTTP/1.1\r\nHost: q\r\n\r\n");
	const char *want = "GET /p?KEY=x&key%3D=y&k%6=z&a=1&key=s3cr3t%2F%2B%3D%26value HTTP/1.1\r\n";
	assert_int_equal(strncmp(h, want, strlen(want)), 0);
	free(h);
}

static void test_swap_everywhere(void **state)
{
	char *h =
	    rewrite(*state, "swap.test",
	            "GET /p?t=" PH " HTTP/1.1\r\nHost: s\r\nAuthorization: token " PH "\r\nX-A: a" PH "b\r\n\r\n");
	assert_null(strstr(h, PH));
	assert_non_null(strstr(h, "?t=s3cr3t%2F%2B%3D%26value "));
	assert_non_null(strstr(h, "Authorization: token " SECRET "\r\n"));
	assert_non_null(strstr(h, "X-A: a" SECRET "b\r\n"));
	free(h);
}

static void test_open_route_copies_headers(void **state)
{
	char *h = rewrite(*state, "open.test",
	                  "POST /u HTTP/1.1\r\nHost: o\r\nAuthorization: mine\r\nContent-Length: 3\r\n\r\n");
	assert_non_null(strstr(h, "Authorization: mine\r\n"));
	assert_non_null(strstr(h, "Content-Length: 3\r\n"));
	assert_null(strstr(h, SECRET));
	free(h);
}

/* The length is written in place, not by printf: every digit of the
 * largest length llhttp takes, and of none. */
static void test_content_length_digits(void **state)
{
	static const char *const lengths[] = { "18446744073709551615", "0", "10", "359" };
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		char raw[160], want[64];
		snprintf(raw, sizeof(raw), "POST /u HTTP/1.1\r\nHost: o\r\nContent-Length: %s\r\n\r\n", lengths[i]);
		snprintf(want, sizeof(want), "\r\nContent-Length: %s\r\n\r\n", lengths[i]);
		char *h = rewrite(*state, "open.test", raw);
		assert_non_null(strstr(h, want));
		free(h);
	}
}

/* ---- leaks ---- */

static const struct policy_credential *leak(struct fixture *f, const char *raw, const char *allowed)
{
	static struct http_header hdrs[32];
	struct http_head hd = { .headers = hdrs, .max_headers = 32 };
	struct http1 h;
	const char *why = NULL, *where = NULL;
	http1_init(&h, HTTP1_REQUEST);
	assert_int_equal(http1_parse_head(&h, raw, strlen(raw), &hd, &why), 0);
	return inject_find_leak(f->p, &hd, NULL, NULL, allowed ? policy_credential_find(f->p, allowed) : NULL, &where);
}

static void test_leaks_found(void **state)
{
	struct fixture *f = *state;
	static const char *const leaking[] = {
		"GET /?t=" PH " HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /" PH " HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /?t=%6bw_test_placeholder_0123456789 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-Anything: pre" PH "post\r\n\r\n",
		/* Basic x:PH */
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic "
		"eDprd190ZXN0X3BsYWNlaG9sZGVyXzAxMjM0NTY3ODk=\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nCookie: s=" PH "\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(leaking) / sizeof(leaking[0]); i++) {
		const struct policy_credential *c = leak(f, leaking[i], NULL);
		assert_non_null(c);
		assert_string_equal(c->name, "test");
		/* on the route of "other", test's placeholder is still a leak */
		assert_non_null(leak(f, leaking[i], "other"));
		/* on its own route it is not */
		assert_null(leak(f, leaking[i], "test"));
	}
	assert_null(leak(f, "GET /clean?x=1 HTTP/1.1\r\nHost: a\r\nX: kw_test_placeholder\r\n\r\n", NULL));
	const struct policy_credential *c = leak(f, "GET / HTTP/1.1\r\nHost: a\r\nX: " PH2 "\r\n\r\n", "test");
	assert_non_null(c);
	assert_string_equal(c->name, "other");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hop_by_hop_and_client_credentials_removed),
		cmocka_unit_test(test_basic_with_user),
		cmocka_unit_test(test_basic_keeps_client_user),
		cmocka_unit_test(test_header_template),
		cmocka_unit_test(test_query_injection),
		cmocka_unit_test(test_swap_everywhere),
		cmocka_unit_test(test_open_route_copies_headers),
		cmocka_unit_test(test_content_length_digits),
		cmocka_unit_test(test_leaks_found),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
