/* Encodings on the request path (src/common/encode.h): base64 (Basic
 * credentials are decoded, swapped and encoded again), percent-encoding
 * (query values, the leak check), hex, and mem_find.
 *
 * Properties:
 *  - decode(encode(x)) == x, for base64 and percent-encoding;
 *  - whatever base64_decode accepts re-encodes to a canonical form that
 *    decodes to the same bytes (non-zero pad bits are accepted on
 *    purpose, see commit 3ed394e, so encode(decode(s)) == s only up to
 *    those bits);
 *  - a decoder never produces more bytes than it read; encoders produce
 *    exactly the expected length and alphabet;
 *  - the buffer ceiling holds: with a small max, a result is either
 *    complete and within it, or -ENOBUFS;
 *  - mem_find agrees with a naive search. */
#include <errno.h>
#include <string.h>

#include "common/encode.h"
#include "fuzz.h"

#define BIG (4u << 20)

static bool b64_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static void check_buf(const struct buf *b)
{
	fuzz_assert(b->len <= b->max);
	if (b->data) {
		fuzz_assert(b->len < b->cap);
		fuzz_assert(b->data[b->len] == '\0');
	}
}

static void base64_props(const char *in, size_t n)
{
	struct buf enc, dec, dec2, small;
	int r;

	/* Encode then decode: the identity. */
	buf_init(&enc, BIG);
	buf_init(&dec, BIG);
	r = base64_encode(in, n, &enc);
	fuzz_assert(r == 0);
	check_buf(&enc);
	fuzz_assert(enc.len == (n + 2) / 3 * 4);
	for (size_t i = 0; i < enc.len; i++)
		fuzz_assert(b64_alpha(enc.data[i]) || (enc.data[i] == '=' && i + 2 >= enc.len));
	r = base64_decode(enc.data ? enc.data : "", enc.len, &dec);
	fuzz_assert(r == 0 && dec.len == n && (n == 0 || memcmp(dec.data, in, n) == 0));
	buf_free(&enc);
	buf_free(&dec);

	/* Decode the input itself. */
	buf_init(&dec, BIG);
	r = base64_decode(in, n, &dec);
	fuzz_assert(r == 0 || r == -EINVAL);
	check_buf(&dec);
	if (r == 0) {
		fuzz_assert(n % 4 == 0 && dec.len <= n / 4 * 3);
		fuzz_assert(dec.len + 2 >= n / 4 * 3);
		buf_init(&enc, BIG);
		buf_init(&dec2, BIG);
		fuzz_assert(base64_encode(dec.data, dec.len, &enc) == 0);
		fuzz_assert(enc.len == n);
		fuzz_assert(base64_decode(enc.data ? enc.data : "", enc.len, &dec2) == 0);
		fuzz_assert(dec2.len == dec.len && (dec.len == 0 || memcmp(dec2.data, dec.data, dec.len) == 0));
		/* Same bytes up to the pad bits of the last quantum. */
		size_t body = n >= 4 ? n - 4 : 0;
		fuzz_assert(body == 0 || memcmp(enc.data, in, body) == 0);
		buf_free(&enc);
		buf_free(&dec2);

		/* A ceiling below the result: -ENOBUFS, nothing past max. */
		if (dec.len > 0) {
			buf_init(&small, dec.len - 1);
			r = base64_decode(in, n, &small);
			fuzz_assert(r == -ENOBUFS);
			check_buf(&small);
			buf_free(&small);
		}
	}
	buf_free(&dec);
}

static void percent_props(const char *in, size_t n)
{
	struct buf enc, dec, small;
	int r;

	buf_init(&enc, BIG);
	buf_init(&dec, BIG);
	fuzz_assert(percent_encode(in, n, &enc) == 0);
	check_buf(&enc);
	fuzz_assert(enc.len >= n && enc.len <= 3 * n);
	for (size_t i = 0; i < enc.len; i++) {
		char c = enc.data[i];
		if (c == '%') {
			fuzz_assert(i + 2 < enc.len);
			fuzz_assert(strchr("0123456789ABCDEF", enc.data[i + 1]) && enc.data[i + 1]);
			fuzz_assert(strchr("0123456789ABCDEF", enc.data[i + 2]) && enc.data[i + 2]);
			i += 2;
		} else {
			fuzz_assert((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			            strchr("-._~", c));
		}
	}
	r = percent_decode(enc.data ? enc.data : "", enc.len, &dec);
	fuzz_assert(r == 0 && dec.len == n && (n == 0 || memcmp(dec.data, in, n) == 0));
	buf_free(&enc);
	buf_free(&dec);

	buf_init(&dec, BIG);
	r = percent_decode(in, n, &dec);
	fuzz_assert(r == 0 || r == -EINVAL);
	check_buf(&dec);
	if (r == 0) {
		fuzz_assert(dec.len <= n);
		/* Each escape shrinks three bytes to one. */
		fuzz_assert((n - dec.len) % 2 == 0);
		if (dec.len > 0) {
			buf_init(&small, dec.len - 1);
			fuzz_assert(percent_decode(in, n, &small) == -ENOBUFS);
			check_buf(&small);
			buf_free(&small);
		}
	}
	buf_free(&dec);
}

static long naive_find(const char *h, size_t hl, const char *nd, size_t nl)
{
	if (nl == 0)
		return 0;
	for (size_t i = 0; i + nl <= hl; i++)
		if (memcmp(h + i, nd, nl) == 0)
			return (long)i;
	return -1;
}

static void misc_props(const char *in, size_t n)
{
	/* hex */
	size_t hn = n < 256 ? n : 256;
	char *hex = fuzz_alloc_exact(2 * hn + 1);
	hex_encode(in, hn, hex);
	fuzz_assert(strlen(hex) == 2 * hn);
	for (size_t i = 0; i < 2 * hn; i += 2) {
		int v = hex_value(hex[i]) << 4 | hex_value(hex[i + 1]);
		fuzz_assert(v == (unsigned char)in[i / 2]);
	}
	free(hex);
	for (size_t i = 0; i < n && i < 64; i++) {
		int v = hex_value(in[i]);
		fuzz_assert(v >= -1 && v <= 15);
	}

	/* mem_find: the needle is a slice of the second half, the
	 * haystack the first half. */
	if (n <= 4096) {
		size_t half = n / 2;
		const char *nd = in + half;
		size_t nl = n - half;
		if (nl > 0)
			nl = (unsigned char)in[n - 1] % (nl + 1);
		fuzz_assert(mem_find(in, half, nd, nl) == naive_find(in, half, nd, nl));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = fuzz_dup_exact(data, size);
	base64_props(in, size);
	percent_props(in, size);
	misc_props(in, size);
	free(in);
	return 0;
}
