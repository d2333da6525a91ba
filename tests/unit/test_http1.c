/* http1: the strict head checks in front of llhttp, and framing. Negative
 * cases first: every form an intermediary and an upstream could read
 * differently must be refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http1.h"

struct head_case {
	const char *raw;
	long expect;     /* >0 head length, 0 incomplete, -1 refused */
	const char *why; /* substring of the reason, when refused */
};

static const struct head_case head_cases[] = {
	/* refused by the byte-level checks */
	{ "GET / HTTP/1.1\nHost: a\n\n", -1, "bare LF" },
	{ "GET / HTTP/1.1\r\nHost: a\n\r\n", -1, "bare LF" },
	{ "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", -1, "bare CR" },
	{ "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", -1, "obs-fold" },
	{ "GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n", -1, "obs-fold" },
	{ "GET / HTTP/1.1\r\nX: \x01\r\n\r\n", -1, "control" },
	{ "GET / HTTP/1.1\r\nX: \x7f\r\n\r\n", -1, "control" },
	{ "\r\nGET / HTTP/1.1\r\n\r\n", -1, "empty line" },
	/* incomplete */
	{ "GET / HTTP/1.1\r\nHost: a\r\n", 0, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\n\r", 0, NULL },
	{ "GET / HTTP/1.1\r", 0, NULL },
	/* complete */
	{ "GET / HTTP/1.1\r\n\r\n", 18, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", 27, NULL },
	{ "GET / HTTP/1.1\r\nX: a\tb\r\n\r\n", 26, NULL },
};

static void test_head_length_table(void **state)
{
	for (size_t i = 0; i < sizeof(head_cases) / sizeof(head_cases[0]); i++) {
		const struct head_case *c = &head_cases[i];
		size_t n = strlen(c->raw);
		size_t resume = 0;
		const char *why = NULL;
		long r = http1_head_length(c->raw, n, &resume, &why);
		if (c->expect < 0) {
			assert_int_equal(r, -EBADMSG);
			assert_non_null(strstr(why, c->why));
		} else {
			assert_int_equal(r, c->expect);
		}
	}
}

static void test_head_length_nul(void **state)
{
	static const char raw[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";
	size_t resume = 0;
	const char *why = NULL;
	assert_int_equal(http1_head_length(raw, sizeof(raw) - 1, &resume, &why), -EBADMSG);
	assert_non_null(strstr(why, "NUL"));
}

static void test_head_length_byte_by_byte(void **state)
{
	/* Fed one byte at a time, the answer is the same as all at once, and
	 * a CR at the end of the data is looked at again. */
	static const char good[] = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
	static const char bad[] = "POST /x HTTP/1.1\r\nHost: a\r\n continued\r\n\r\n";
	size_t resume = 0;
	const char *why = NULL;
	long r = 0;
	size_t n;
	for (n = 1; n <= strlen(good); n++) {
		r = http1_head_length(good, n, &resume, &why);
		if (r != 0)
			break;
	}
	assert_int_equal(r, (long)(strstr(good, "abc") - good));
	resume = 0;
	for (n = 1; n <= strlen(bad); n++) {
		r = http1_head_length(bad, n, &resume, &why);
		if (r != 0)
			break;
	}
	assert_int_equal(r, -EBADMSG);
}

/* The rules of http1_head_length, one byte at a time and with no state
 * carried between calls: the reference its word-at-a-time scan is held
 * to. Returns the head length, 0 (incomplete) or -1 (refused). */
static long reference_head_length(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];
		if ((c >= 0x20 && c != 0x7f) || c == '\t')
			continue;
		if (c != '\r')
			return -1; /* bare LF, NUL, other controls */
		if (i + 1 >= n)
			return 0; /* a CR is judged once its next byte is in */
		if (p[i + 1] != '\n' || i == 0)
			return -1; /* bare CR; CRLF before the start line */
		if (i >= 2 && p[i - 2] == '\r' && p[i - 1] == '\n')
			return (long)(i + 2);
		if (i + 2 >= n)
			return 0;
		if (p[i + 2] == ' ' || p[i + 2] == '\t')
			return -1;
		i++;
	}
	return 0;
}

static void test_head_length_matches_reference(void **state)
{
	/* Random heads, mostly text with the bytes that matter mixed in, fed
	 * whole and in two pieces (the state carried in resume): the answer
	 * is the reference's for the bytes seen so far. */
	static const unsigned char special[] = { '\r', '\n', '\t', ' ', 0x7f, 0x00, 0x1f, 0x80, 0xff, '\r', '\n' };
	unsigned char buf[160];
	uint32_t x = 2026;
	for (int round = 0; round < 20000; round++) {
		size_t n = 1 + (size_t)(round % (int)sizeof(buf));
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245 + 12345;
			unsigned v = x >> 16;
			buf[i] =
			    v % 9 == 0 ? special[(v >> 4) % sizeof(special)] : (unsigned char)('a' + (v >> 4) % 26);
		}
		x = x * 1103515245 + 12345;
		size_t split = (x >> 16) % (n + 1);
		size_t resume = 0;
		const char *why = NULL;
		long got = http1_head_length((const char *)buf, split, &resume, &why);
		if (got == 0)
			got = http1_head_length((const char *)buf, n, &resume, &why);
		long want = reference_head_length(buf, split);
		if (want == 0)
			want = reference_head_length(buf, n);
		if ((want < 0 ? -EBADMSG : want) != got)
			fail_msg("round %d (n %zu, split %zu): got %ld, want %ld", round, n, split, got, want);
	}
}

struct parse_case {
	const char *raw;
	bool ok;
	bool chunked;
	int64_t content_length; /* -1: none */
};

static const struct parse_case parse_cases[] = {
	/* framing ambiguities llhttp refuses in strict mode */
	{ "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost : a\r\n\r\n", false, false, -1 },
	{ "GET / HTTP/1.1 extra\r\n\r\n", false, false, -1 },
	{ "GET /\r\n\r\n", false, false, -1 },
	{ "G@T / HTTP/1.1\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", false, false, -1 },
	/* codings before chunked: keyward re-frames and would drop them */
	{ "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip,chunked\r\n\r\n", false, false, -1 },
	{ "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", false, false, -1 },
	{ "GET / HTTP/2.0\r\n\r\n", false, false, -1 },
	{ "GET / HTTP/1.1\r\nX\x01Y: a\r\n\r\n", false, false, -1 },
	/* accepted */
	{ "GET /a?b HTTP/1.1\r\nHost: a\r\n\r\n", true, false, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", true, false, 12 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", true, true, -1 },
	{ "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  CHUNKED \r\n\r\n", true, true, -1 },
	{ "CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:443\r\n\r\n", true, false, -1 },
};

static void test_parse_table(void **state)
{
	struct http_header hdrs[16];
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct http1 h;
		struct http_head hd = { .headers = hdrs, .max_headers = 16 };
		const char *why = NULL;
		http1_init(&h, HTTP1_REQUEST);
		int r = http1_parse_head(&h, c->raw, strlen(c->raw), &hd, &why);
		if (!c->ok) {
			assert_int_equal(r, -EBADMSG);
			assert_non_null(why);
			continue;
		}
		assert_int_equal(r, 0);
		assert_int_equal(hd.chunked, c->chunked);
		assert_int_equal(hd.has_content_length, c->content_length >= 0);
		if (c->content_length >= 0)
			assert_int_equal(hd.content_length, c->content_length);
	}
}

static void test_too_many_headers(void **state)
{
	struct http_header hdrs[2];
	struct http_head hd = { .headers = hdrs, .max_headers = 2 };
	struct http1 h;
	const char *why = NULL;
	static const char raw[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
	http1_init(&h, HTTP1_REQUEST);
	assert_int_equal(http1_parse_head(&h, raw, strlen(raw), &hd, &why), -EBADMSG);
	assert_true(hd.too_many_headers);
}

static int collect(void *ctx, const char *p, size_t n)
{
	char *out = ctx;
	strncat(out, p, n);
	return 0;
}

static void test_chunked_body_and_pipelining(void **state)
{
	struct http_header hdrs[8];
	struct http_head hd = { .headers = hdrs, .max_headers = 8 };
	struct http1 h;
	const char *why = NULL;
	static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
	static const char body[] = "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\nGET /next HTTP/1.1\r\n";
	char out[64] = "";
	size_t consumed;

	http1_init(&h, HTTP1_REQUEST);
	assert_int_equal(http1_parse_head(&h, head, strlen(head), &hd, &why), 0);
	h.on_body = collect;
	h.ctx = out;
	assert_int_equal(http1_feed_body(&h, body, strlen(body), &consumed, &why), 1);
	assert_string_equal(out, "abcde");
	/* The next request's bytes are not consumed. */
	assert_string_equal(body + consumed, "GET /next HTTP/1.1\r\n");
}

static void test_bad_chunk_size(void **state)
{
	struct http_header hdrs[8];
	struct http_head hd = { .headers = hdrs, .max_headers = 8 };
	struct http1 h;
	const char *why = NULL;
	static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
	static const char *const bodies[] = { "zz\r\n", "ffffffffffffffffff\r\n", "-1\r\n" };
	for (size_t i = 0; i < 3; i++) {
		size_t consumed;
		http1_init(&h, HTTP1_REQUEST);
		assert_int_equal(http1_parse_head(&h, head, strlen(head), &hd, &why), 0);
		assert_int_equal(http1_feed_body(&h, bodies[i], strlen(bodies[i]), &consumed, &why), -EBADMSG);
	}
}

static void test_response_to_head_has_no_body(void **state)
{
	struct http_header hdrs[8];
	struct http_head hd = { .headers = hdrs, .max_headers = 8 };
	struct http1 h;
	const char *why = NULL;
	static const char raw[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
	http1_init(&h, HTTP1_RESPONSE);
	h.skip_body = true;
	assert_int_equal(http1_parse_head(&h, raw, strlen(raw), &hd, &why), 0);
	assert_int_equal(hd.status, 200);
	assert_true(http1_message_done(&h));
}

/* 1xx (but 101), 204 and 304 have no body whatever their framing says
 * (RFC 9112 6.3); llhttp 8.1 read one by Content-Length or chunked. */
static void test_bodiless_status_has_no_body(void **state)
{
	static const struct {
		const char *raw;
		bool done;
	} cases[] = {
		{ "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n", true },
		{ "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", true },
		{ "HTTP/1.1 204 No Content\r\nContent-Length: 38\r\n\r\n", true },
		{ "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", true },
		{ "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n", true },
		{ "HTTP/1.1 150 X\r\nTransfer-Encoding: chunked\r\n\r\n", true },
		{ "HTTP/1.1 205 Reset Content\r\nContent-Length: 3\r\n\r\n", false },
		{ "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct http_header hdrs[8];
		struct http_head hd = { .headers = hdrs, .max_headers = 8 };
		struct http1 h;
		const char *why = NULL;
		http1_init(&h, HTTP1_RESPONSE);
		assert_int_equal(http1_parse_head(&h, cases[i].raw, strlen(cases[i].raw), &hd, &why), 0);
		if (http1_message_done(&h) != cases[i].done)
			fail_msg("case %zu: message done %d", i, http1_message_done(&h));
	}
}

static void test_list_has(void **state)
{
	assert_true(http_list_has("keep-alive, Upgrade", 19, "upgrade"));
	assert_true(http_list_has(" close ", 7, "close"));
	assert_false(http_list_has("closed", 6, "close"));
	assert_false(http_list_has("", 0, "close"));
}

/* A field that Connection names is hop-by-hop whatever its length: names
 * of 128 bytes or more once went through a fixed copy and were never
 * matched, so such a field was forwarded. */
static void test_connection_names_any_length(void **state)
{
	(void)state;
	char name[300];
	memset(name, 'x', sizeof(name));
	char value[320];
	snprintf(value, sizeof(value), "keep-alive, %.*s", (int)sizeof(name), name);
	struct http_header hdrs[1] = {
		{ .name = "Connection", .name_len = 10, .value = value, .value_len = strlen(value) }
	};
	struct http_head hd = { .headers = hdrs, .n_headers = 1, .max_headers = 1 };
	assert_true(http_connection_names(&hd, name, sizeof(name)));
	assert_true(http_connection_names(&hd, "KEEP-ALIVE", 10));
	assert_false(http_connection_names(&hd, name, sizeof(name) - 1));
	assert_false(http_connection_names(&hd, "close", 5));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_head_length_table),
		cmocka_unit_test(test_head_length_nul),
		cmocka_unit_test(test_head_length_byte_by_byte),
		cmocka_unit_test(test_head_length_matches_reference),
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_too_many_headers),
		cmocka_unit_test(test_chunked_body_and_pipelining),
		cmocka_unit_test(test_bad_chunk_size),
		cmocka_unit_test(test_response_to_head_has_no_body),
		cmocka_unit_test(test_bodiless_status_has_no_body),
		cmocka_unit_test(test_list_has),
		cmocka_unit_test(test_connection_names_any_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
