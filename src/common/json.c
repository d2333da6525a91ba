#include "common/json.h"

/* Length of the valid UTF-8 sequence at p (max n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	size_t len;
	unsigned min;
	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0) {
		len = 2;
		min = 0x80;
		c &= 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3;
		min = 0x800;
		c &= 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4;
		min = 0x10000;
		c &= 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	return len;
}

/* A byte that a JSON string holds as it is. */
static bool plain(unsigned char c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

size_t json_plain_len(const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i <= max; i++) {
		if (p[i] == '\0')
			return i;
		if (!plain(p[i]))
			break;
	}
	return SIZE_MAX;
}

int json_str(struct buf *b, const char *s, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n && plain(p[i]))
		i++;
	/* Most strings need no escaping at all: one copy, quotes included. */
	char *at;
	int r = buf_space(b, i + 2, &at);
	if (r < 0)
		return r;
	at[0] = '"';
	if (i)
		memcpy(at + 1, s, i); /* s may be NULL when n is 0 */
	at[i + 1] = '"';
	if (i == n) {
		buf_advance(b, i + 2);
		return 0;
	}
	buf_advance(b, i + 1);

	while (r == 0 && i < n) {
		/* Copy the longest run that needs no escaping in one go. */
		size_t j = i;
		while (j < n && plain(p[j]))
			j++;
		if (j > i) {
			r = buf_append(b, s + i, j - i);
			i = j;
			continue;
		}
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			r = buf_append(b, e, 2);
			i++;
		} else if (c == '\n') {
			r = buf_append(b, "\\n", 2);
			i++;
		} else if (c == '\r') {
			r = buf_append(b, "\\r", 2);
			i++;
		} else if (c == '\t') {
			r = buf_append(b, "\\t", 2);
			i++;
		} else if (c < 0x20) {
			char e[6] = { '\\', 'u', '0', '0', digits[c >> 4], digits[c & 15] };
			r = buf_append(b, e, 6);
			i++;
		} else {
			size_t l = utf8_len(p + i, n - i);
			if (l) {
				r = buf_append(b, s + i, l);
				i += l;
			} else {
				char e[6] = { '\\', 'u', '0', '0', digits[c >> 4], digits[c & 15] };
				r = buf_append(b, e, 6);
				i++;
			}
		}
	}
	if (r == 0)
		r = buf_append(b, "\"", 1);
	return r;
}

int json_cstr(struct buf *b, const char *s)
{
	if (!s)
		return buf_append(b, "null", 4);
	return json_str(b, s, strlen(s));
}

/* key is one of keyward's own member names (a literal), which never
 * needs escaping: it is copied as it is. */
static int json_key(struct buf *b, bool *first, const char *key)
{
	size_t n = strlen(key);
	char *at;
	int r = buf_space(b, n + 3 + !*first, &at);
	if (r < 0)
		return r;
	char *p = at;
	if (!*first)
		*p++ = ',';
	*first = false;
	*p++ = '"';
	memcpy(p, key, n);
	p += n;
	*p++ = '"';
	*p++ = ':';
	buf_advance(b, (size_t)(p - at));
	return 0;
}

int json_kv_str(struct buf *b, bool *first, const char *key, const char *val)
{
	int r = json_key(b, first, key);
	return r < 0 ? r : json_cstr(b, val);
}

int json_kv_strn(struct buf *b, bool *first, const char *key, const char *val, size_t n)
{
	int r = json_key(b, first, key);
	return r < 0 ? r : json_str(b, val, n);
}

int json_kv_int(struct buf *b, bool *first, const char *key, int64_t val)
{
	int r = json_key(b, first, key);
	return r < 0 ? r : buf_put_int(b, val);
}
