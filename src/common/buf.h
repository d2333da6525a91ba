/* A growable byte buffer with a ceiling fixed when it is made: input can
 * grow it only up to `max`, then appends fail with -ENOBUFS. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct buf {
	char *data; /* owned; NUL-terminated when len < cap */
	size_t len;
	size_t cap;
	size_t max;
	/* Set after buf_init for a buffer that holds secrets: a block it
	 * leaves (growing, buf_free) is wiped before the allocator gets it. */
	bool wipe;
};

void buf_init(struct buf *b, size_t max);
/* Frees the storage; the buffer can be used again after buf_init. */
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
/* Append n bytes. Returns 0, -ENOBUFS past the ceiling, -ENOMEM. The data
 * stays NUL-terminated. */
int buf_append(struct buf *b, const void *p, size_t n) WUR;
/* Makes room for n more bytes and sets *ret to where they go, for a
 * writer that fills them itself: one check for many small writes. Returns
 * 0, -ENOBUFS past the ceiling, -ENOMEM. buf_advance(b, k) then keeps the
 * k <= n bytes written there; nothing is kept until it is called. */
int buf_space(struct buf *b, size_t n, char **ret) WUR;
void buf_advance(struct buf *b, size_t n);
int buf_puts(struct buf *b, const char *s) WUR;
int buf_printf(struct buf *b, const char *fmt, ...) WUR __attribute__((format(printf, 2, 3)));
/* Appends v in decimal; what buf_printf("%" PRId64) writes, without
 * going through printf on hot paths. */
int buf_put_int(struct buf *b, int64_t v) WUR;
/* Writes v in decimal at p, which has room for DEC_MAX bytes, and returns
 * the end of what it wrote (no NUL). */
#define DEC_MAX 20
char *dec_put(char *p, int64_t v);
