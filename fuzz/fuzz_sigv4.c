/* AWS SigV4 (src/proxy/sigv4.h): the Authorization parser, the canonical
 * URI and query, and the aws-chunked re-signer, on hostile input.
 *
 * Properties:
 *  - an Authorization header that parses has a valid date, lower-case
 *    region and service, and a key id and signed-header list inside the
 *    input;
 *  - a canonical query is made of unreserved bytes, %XX escapes, '=' and
 *    '&', and canonicalising it again changes nothing;
 *  - a canonical URI of another service than S3 is made of unreserved
 *    bytes, '/' and %XX; S3's is the path as sent;
 *  - the aws-chunked re-signer gives the same output however the body is
 *    split, never emits more than it read, and when it reads the final
 *    chunk it has emitted exactly as many bytes as it read. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proxy/sigv4.h"

#define BIG (4u << 20)

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static bool unreserved(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
	       c == '_' || c == '~';
}

/* only unreserved bytes, %XX escapes and the extra characters allowed */
static void check_encoded(const struct buf *b, const char *extra)
{
	for (size_t i = 0; i < b->len; i++) {
		char c = b->data[i];
		if (c == '%') {
			fuzz_assert(i + 2 < b->len && is_hex(b->data[i + 1]) && is_hex(b->data[i + 2]));
			i += 2;
		} else {
			fuzz_assert(unreserved(c) || strchr(extra, c));
		}
	}
}

static void authorization_props(const char *in, size_t n)
{
	struct sigv4_auth a;
	const char *why = NULL;
	int r = sigv4_parse_authorization(in, n, &a, &why);
	if (r < 0) {
		fuzz_assert(why != NULL);
		return;
	}
	fuzz_assert(strlen(a.date) == 8);
	fuzz_assert(a.key_id >= in && a.key_id + a.key_id_len <= in + n && a.key_id_len > 0);
	fuzz_assert(a.signed_headers >= in && a.signed_headers + a.signed_headers_len <= in + n);
	for (const char *p = a.region; *p; p++)
		fuzz_assert((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-');
	for (const char *p = a.service; *p; p++)
		fuzz_assert((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-');
}

static void query_props(const char *in, size_t n)
{
	struct buf q, q2;
	const char *why = NULL;
	buf_init(&q, BIG);
	buf_init(&q2, BIG);
	int r = sigv4_canonical_query(in, n, &q, &why);
	fuzz_assert(r == 0 || r == -EINVAL || r == -ENOBUFS);
	if (r == 0) {
		check_encoded(&q, "=&");
		r = sigv4_canonical_query(q.data, q.len, &q2, &why);
		fuzz_assert(r == 0 && q2.len == q.len && (q.len == 0 || memcmp(q.data, q2.data, q.len) == 0));
	}
	buf_free(&q);
	buf_free(&q2);
}

static void uri_props(const char *in, size_t n)
{
	struct buf u;
	buf_init(&u, BIG);
	int r = sigv4_canonical_uri(in, n, false, &u);
	fuzz_assert(r == 0);
	check_encoded(&u, "/");
	fuzz_assert(n == 0 || in[0] != '/' || (u.len > 0 && u.data[0] == '/'));
	buf_reset(&u);
	r = sigv4_canonical_uri(in, n, true, &u);
	fuzz_assert(r == 0 && (n == 0 ? u.len == 1 : (u.len == n && memcmp(u.data, in, n) == 0)));
	buf_free(&u);
}

static int emit(void *ctx, const char *p, size_t n)
{
	return buf_append(ctx, p, n);
}

/* Feeds in[0..n) in pieces of `step` bytes; returns the result, output in out. */
static int chunked_run(const char *in, size_t n, size_t step, struct buf *out, bool *done)
{
	static const uint8_t key[32] = { 7 };
	struct sigv4_chunked s;
	const char *why = NULL;
	int r = sigv4_chunked_init(&s, key, "20150830T123600Z", "20150830/us-east-1/s3/aws4_request",
	                           "0000000000000000000000000000000000000000000000000000000000000000");
	fuzz_assert(r == 0);
	for (size_t i = 0; r == 0 && i < n; i += step)
		r = sigv4_chunked_feed(&s, in + i, n - i < step ? n - i : step, emit, out, &why);
	fuzz_assert(r == 0 || (r == -EBADMSG && why));
	*done = sigv4_chunked_done(&s);
	sigv4_chunked_free(&s);
	return r;
}

static void chunked_props(const char *in, size_t n)
{
	struct buf a, b;
	bool da, db;
	buf_init(&a, BIG);
	buf_init(&b, BIG);
	int ra = chunked_run(in, n, n ? n : 1, &a, &da);
	int rb = chunked_run(in, n, 7, &b, &db);
	fuzz_assert(ra == rb && da == db);
	fuzz_assert(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
	fuzz_assert(a.len <= n);
	if (ra == 0 && da)
		fuzz_assert(a.len == n);
	buf_free(&a);
	buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	authorization_props(in, size);
	query_props(in, size);
	uri_props(in, size);
	chunked_props(in, size);
	return 0;
}
