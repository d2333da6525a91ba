/* Request path normalisation.
 *
 * Trust boundary: `in` comes from the sandbox, byte for byte as the client
 * sent it. The policy is checked against the output, and the output is what
 * the proxy sends upstream, so the two can never disagree about which
 * resource is meant. Anything this code cannot make unambiguous is either
 * refused (-EINVAL) or reported in a flag, so that a route holding a
 * credential can refuse it too. */
#include "policy/path.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>

#include "common/encode.h"

static const char hex_upper[] = "0123456789ABCDEF";

/* RFC 3986 2.3: only these may be decoded without changing the meaning. */
static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
	       c == '_' || c == '~';
}

/* Value of the escape at in[i] ('%' known), or -EINVAL if malformed. */
static int escape_value(const char *in, size_t len, size_t i)
{
	if (len - i < 3)
		return -EINVAL;
	int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
	if (hi < 0 || lo < 0)
		return -EINVAL;
	return hi << 4 | lo;
}

static unsigned escape_flags(int v)
{
	if (v == '/')
		return PATH_ENCODED_SLASH;
	if (v == '\\')
		return PATH_BACKSLASH;
	if (v == 0)
		return PATH_ENCODED_NUL;
	if (v < 0x20 || v == 0x7f)
		return PATH_ENCODED_CONTROL;
	if (v == '%')
		return PATH_ENCODED_PERCENT;
	return 0;
}

/* First pass: refuse what cannot be normalised and collect the flags of the
 * whole input, including parts a later ".." removes (an upstream that
 * decodes differently might not remove them). */
static int path_scan(const char *in, size_t len, unsigned *ret_flags)
{
	unsigned flags = 0;

	if (len == 0 || in[0] != '/' || len >= INT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '%') {
			int v = escape_value(in, len, i);
			if (v < 0)
				return v;
			flags |= escape_flags(v);
			i += 2;
		} else if (c < 0x21 || c >= 0x7f) {
			/* Controls, space, DEL: never valid in a request line.
			 * Non-ASCII: clients percent-encode it; a raw byte
			 * would be read differently by different servers. */
			return -EINVAL;
		} else if (c == '#' || c == '?') {
			/* A fragment is never sent; a '?' means the caller
			 * did not split off the query. Either way the path
			 * would not be what the upstream sees. */
			return -EINVAL;
		} else if (c == '\\') {
			flags |= PATH_BACKSLASH;
		} else if (c == ';') {
			flags |= PATH_SEMICOLON;
		}
	}
	*ret_flags = flags;
	return 0;
}

enum seg_kind { SEG_EMPTY, SEG_DOT, SEG_DOTDOT, SEG_NAME };

/* Whether in[start, end) decodes to "", "." or "..": "%2e%2E" is a dot
 * segment too (RFC 3986 6.2.2.2 decodes before 5.2.4 removes). */
static enum seg_kind segment_kind(const char *in, size_t start, size_t end)
{
	char d[3];
	size_t n = 0;

	if (start == end)
		return SEG_EMPTY;
	if (end - start > 6)
		return SEG_NAME;
	for (size_t i = start; i < end && n < sizeof(d); i++) {
		if (in[i] == '%') {
			d[n++] = (char)(hex_value(in[i + 1]) << 4 | hex_value(in[i + 2]));
			i += 2;
		} else {
			d[n++] = in[i];
		}
	}
	if (n == 1 && d[0] == '.')
		return SEG_DOT;
	if (n == 2 && d[0] == '.' && d[1] == '.')
		return SEG_DOTDOT;
	return SEG_NAME;
}

struct path_out {
	char *data;
	size_t len;
	size_t cap; /* including the NUL */
};

static int out_put(struct path_out *o, char c)
{
	if (o->len + 1 >= o->cap)
		return -ENOBUFS;
	o->data[o->len++] = c;
	return 0;
}

/* Appends one segment with its escapes normalised (unreserved decoded,
 * the rest upper-case hex). Input was validated by path_scan. */
static int out_segment(struct path_out *o, const char *in, size_t start, size_t end)
{
	int r;

	for (size_t i = start; i < end; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c != '%') {
			r = out_put(o, (char)c);
		} else {
			unsigned v = (unsigned)(hex_value(in[i + 1]) << 4 | hex_value(in[i + 2]));
			i += 2;
			if (is_unreserved((unsigned char)v)) {
				r = out_put(o, (char)v);
			} else {
				r = out_put(o, '%');
				if (r >= 0)
					r = out_put(o, hex_upper[v >> 4]);
				if (r >= 0)
					r = out_put(o, hex_upper[v & 15]);
			}
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* Drops the last segment: "/a/b" -> "/a", "/a" -> "/". */
static void out_pop(struct path_out *o)
{
	while (o->len > 1 && o->data[o->len - 1] != '/')
		o->len--;
	if (o->len > 1)
		o->len--;
}

int path_normalize(const char *in, size_t len, char *out, size_t outlen, unsigned *ret_flags)
{
	struct path_out o = { .data = out, .cap = outlen };
	enum seg_kind last = SEG_EMPTY;
	unsigned flags;
	int r;

	r = path_scan(in, len, &flags);
	if (r < 0)
		return r;
	r = out_put(&o, '/');
	if (r < 0)
		return r;

	/* RFC 3986 5.2.4 on a stack of segments, with empty segments skipped
	 * so that "//" runs collapse before ".." is applied ("/a//../b" is
	 * "/b", as nginx's merge_slashes sees it). */
	for (size_t i = 1;;) {
		size_t j = i;
		while (j < len && in[j] != '/')
			j++;
		last = segment_kind(in, i, j);
		if (last == SEG_DOTDOT) {
			out_pop(&o);
		} else if (last == SEG_NAME) {
			if (o.len > 1)
				r = out_put(&o, '/');
			if (r >= 0)
				r = out_segment(&o, in, i, j);
			if (r < 0)
				return r;
		}
		if (j >= len)
			break;
		i = j + 1;
	}
	/* "/a/b/", "/a/b/." and "/a/b/c/.." all name the directory "/a/b/". */
	if (last != SEG_NAME && o.len > 1) {
		r = out_put(&o, '/');
		if (r < 0)
			return r;
	}
	o.data[o.len] = '\0';
	*ret_flags = flags;
	return (int)o.len;
}

const char *path_flag_name(unsigned flags)
{
	if (flags & PATH_ENCODED_SLASH)
		return "encoded slash (%2F)";
	if (flags & PATH_BACKSLASH)
		return "backslash (\\ or %5C)";
	if (flags & PATH_ENCODED_NUL)
		return "encoded NUL (%00)";
	if (flags & PATH_ENCODED_CONTROL)
		return "encoded control character (%01-%1F, %7F)";
	if (flags & PATH_ENCODED_PERCENT)
		return "encoded percent sign (%25, double encoding)";
	if (flags & PATH_SEMICOLON)
		return "semicolon (;)";
	return "none";
}
