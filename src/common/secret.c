#include "common/secret.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int secret_alloc(size_t n, struct secret **ret)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t map_len = ((n + 1 + (size_t)page - 1) / (size_t)page) * (size_t)page;

	struct secret *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	void *m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		free(s);
		return -ENOMEM;
	}
	/* Both are best effort: RLIMIT_MEMLOCK may be small, old kernels may
	 * lack MADV_DONTDUMP; the process is non-dumpable anyway. */
	(void)mlock(m, map_len);
	(void)madvise(m, map_len, MADV_DONTDUMP);
	s->data = m;
	s->map_len = map_len;
	s->len = n; /* mmap gave zeros, the NUL after them included */
	*ret = s;
	return 0;
}

int secret_new(const void *p, size_t n, struct secret **ret)
{
	struct secret *s;
	int r = secret_alloc(n, &s);
	if (r < 0)
		return r;
	if (n)
		memcpy(s->data, p, n);
	*ret = s;
	return 0;
}

void secret_free(struct secret *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s->data, s->map_len);
	munlock(s->data, s->map_len);
	munmap(s->data, s->map_len);
	free(s);
}

bool secret_eq(const struct secret *a, const struct secret *b)
{
	if (a->len != b->len)
		return false;
	return CRYPTO_memcmp(a->data, b->data, a->len) == 0;
}

int secret_value_check(const void *v, size_t n, char *why, size_t whylen)
{
	const unsigned char *p = v;
	if (n == 0) {
		snprintf(why, whylen, "is empty");
		return -ENODATA;
	}
	if (n > SECRET_MAX) {
		snprintf(why, whylen, "is longer than %d bytes", SECRET_MAX);
		return -EFBIG;
	}
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f) {
			snprintf(why, whylen,
			         "contains a control byte at offset %zu (only one trailing newline is allowed)", i);
			return -EINVAL;
		}
	return 0;
}

void secret_harden_process(void)
{
	struct rlimit zero = { 0, 0 };
	(void)setrlimit(RLIMIT_CORE, &zero);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
