/* The one type that holds a secret value. Its bytes live in their own
 * mapping: locked (mlock, so never swapped), excluded from core dumps
 * (MADV_DONTDUMP) and wiped before unmapping. Compare with secret_eq(),
 * which takes constant time. Never log a secret: log its credential's name. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

/* The longest secret any source may hold. */
#define SECRET_MAX 65536

struct secret {
	size_t len;
	size_t map_len;
	unsigned char *data; /* len bytes, then a NUL (for APIs that want strings) */
};

/* A new secret of n zero bytes, to be written in place (a decryption's
 * output goes straight there). Returns 0 and *ret, or -ENOMEM. */
int secret_alloc(size_t n, struct secret **ret) WUR;
/* Copies n bytes of p into a new secret. Returns 0 and *ret, or -ENOMEM.
 * The caller should wipe its own copy of p. */
int secret_new(const void *p, size_t n, struct secret **ret) WUR;
/* Wipes and frees; NULL is a no-op. */
void secret_free(struct secret *s);
bool secret_eq(const struct secret *a, const struct secret *b);

/* Whether n bytes at v may be a credential's secret: 1 to SECRET_MAX bytes
 * and no control byte (C0 or DEL), because the proxy puts secrets in
 * header lines, where a CR or LF would split the request. Returns 0, or
 * -ENODATA (empty), -EFBIG (too long) or -EINVAL (control byte) with the
 * reason in why ("contains a control byte at offset 7 ..."), which never
 * quotes the value. */
int secret_value_check(const void *v, size_t n, char *why, size_t whylen) WUR;

static inline void secret_freep(struct secret **s)
{
	secret_free(*s);
}
#define _cleanup_secret_ _cleanup_(secret_freep)

/* Marks the process not dumpable and turns core dumps off: for any process
 * that holds secrets. */
void secret_harden_process(void);
