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

int json_str(struct buf *b, const char *s, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	int r = buf_append(b, "\"", 1);
	size_t i = 0;

	while (r == 0 && i < n) {
		/* Copy the longest run that needs no escaping in one go. */
		size_t j = i;
		while (j < n && p[j] >= 0x20 && p[j] < 0x80 && p[j] != '"' && p[j] != '\\')
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

static int json_key(struct buf *b, bool *first, const char *key)
{
	int r = 0;
	if (!*first)
		r = buf_append(b, ",", 1);
	*first = false;
	if (r == 0)
		r = json_cstr(b, key);
	if (r == 0)
		r = buf_append(b, ":", 1);
	return r;
}

int json_kv_str(struct buf *b, bool *first, const char *key, const char *val)
{
	int r = json_key(b, first, key);
	return r < 0 ? r : json_cstr(b, val);
}

int json_kv_int(struct buf *b, bool *first, const char *key, int64_t val)
{
	int r = json_key(b, first, key);
	return r < 0 ? r : buf_put_int(b, val);
}
