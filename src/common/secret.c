#include "common/secret.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int secret_new(const void *p, size_t n, struct secret **ret)
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
	s->len = n;
	if (n)
		memcpy(s->data, p, n);
	s->data[n] = '\0';
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

void secret_harden_process(void)
{
	struct rlimit zero = { 0, 0 };
	(void)setrlimit(RLIMIT_CORE, &zero);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
