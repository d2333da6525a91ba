#include "common/encode.h"

#include <errno.h>
#include <stdbool.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_encode(const void *in, size_t n, struct buf *out)
{
	const unsigned char *p = in;
	char q[4];
	int r;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		q[0] = b64[(v >> 18) & 63];
		q[1] = b64[(v >> 12) & 63];
		q[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		q[3] = i + 2 < n ? b64[v & 63] : '=';
		r = buf_append(out, q, 4);
		if (r < 0)
			return r;
	}
	return 0;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *in, size_t n, struct buf *out)
{
	if (n % 4 != 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		bool last = i + 4 == n;
		for (int k = 0; k < 4; k++) {
			v[k] = b64_value(in[i + k]);
			if (v[k] < 0 && !(last && k >= 2 && in[i + k] == '='))
				return -EINVAL;
		}
		/* "x=y=" is malformed: padding only at the very end. */
		if (v[2] < 0 && v[3] >= 0)
			return -EINVAL;
		unsigned char o[3];
		size_t m = 1;
		o[0] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (v[2] >= 0) {
			o[1] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
			m = 2;
			if (v[3] >= 0) {
				o[2] = (unsigned char)((v[2] & 3) << 6 | v[3]);
				m = 3;
			}
		}
		int r = buf_append(out, o, m);
		if (r < 0)
			return r;
	}
	return 0;
}

void hex_encode(const void *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = in;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
	       c == '_' || c == '~';
}

int percent_encode(const char *in, size_t n, struct buf *out)
{
	static const char digits[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		int r;
		if (unreserved(c)) {
			r = buf_append(out, &in[i], 1);
		} else {
			char e[3] = { '%', digits[c >> 4], digits[c & 15] };
			r = buf_append(out, e, 3);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int percent_decode(const char *in, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -EINVAL;
			int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		int r = buf_append(out, &c, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

long mem_find(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	if (nlen == 0 || nlen > hlen)
		return nlen == 0 ? 0 : -1;
	const char *p = memmem(hay, hlen, needle, nlen);
	return p ? (long)(p - hay) : -1;
}
