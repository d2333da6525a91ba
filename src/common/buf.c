#include "common/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

void buf_init(struct buf *b, size_t max)
{
	*b = (struct buf){ .max = max };
}

void buf_free(struct buf *b)
{
	if (b->wipe && b->data)
		explicit_bzero(b->data, b->cap);
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

int buf_space(struct buf *b, size_t n, char **ret)
{
	if (n > b->max || b->len > b->max - n)
		return -ENOBUFS;
	size_t need = b->len + n + 1;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < need)
			cap *= 2;
		if (cap > b->max + 1)
			cap = b->max + 1;
		char *p;
		if (b->wipe) {
			if (!(p = malloc(cap)))
				return -ENOMEM;
			if (b->data) {
				memcpy(p, b->data, b->len + 1); /* and its NUL */
				explicit_bzero(b->data, b->cap);
				free(b->data);
			}
		} else if (!(p = realloc(b->data, cap))) {
			return -ENOMEM;
		}
		b->data = p;
		b->cap = cap;
	}
	*ret = b->data + b->len;
	return 0;
}

void buf_advance(struct buf *b, size_t n)
{
	b->len += n;
	b->data[b->len] = '\0';
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	char *at;
	int r = buf_space(b, n, &at);
	if (r < 0)
		return r;
	if (n)
		memcpy(at, p, n);
	buf_advance(b, n);
	return 0;
}

int buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(small))
		return buf_append(b, small, (size_t)n);

	char *at;
	int r = buf_space(b, (size_t)n, &at);
	if (r < 0)
		return r;
	va_start(ap, fmt);
	vsnprintf(at, (size_t)n + 1, fmt, ap);
	va_end(ap);
	buf_advance(b, (size_t)n);
	return 0;
}

char *dec_put(char *p, int64_t v)
{
	char tmp[20];
	size_t i = sizeof(tmp);
	/* Negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	do {
		tmp[--i] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*p++ = '-';
	memcpy(p, tmp + i, sizeof(tmp) - i);
	return p + (sizeof(tmp) - i);
}

int buf_put_int(struct buf *b, int64_t v)
{
	char tmp[DEC_MAX];
	return buf_append(b, tmp, (size_t)(dec_put(tmp, v) - tmp));
}
