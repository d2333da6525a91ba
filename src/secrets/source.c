#include "secrets/source.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <sys/stat.h>

#define SECRET_MAX 65536

static int check_value(const struct policy_credential *c, const unsigned char *v, size_t n, char *errbuf, size_t errlen)
{
	if (n == 0) {
		snprintf(errbuf, errlen, "credential %s: the secret from %s:%s is empty", c->name,
		         c->source == SOURCE_ENV ? "env" : "file", c->source_arg);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (v[i] < 0x20 || v[i] == 0x7f) {
			snprintf(errbuf, errlen,
			         "credential %s: the secret from %s:%s contains a control byte at offset %zu "
			         "(only one trailing newline is allowed)",
			         c->name, c->source == SOURCE_ENV ? "env" : "file", c->source_arg, i);
			return -EINVAL;
		}
	}
	return 0;
}

static int fetch_env(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	const char *v = getenv(c->source_arg);
	if (!v) {
		snprintf(errbuf, errlen, "credential %s: environment variable %s is not set", c->name, c->source_arg);
		return -ENOENT;
	}
	int r = check_value(c, (const unsigned char *)v, strlen(v), errbuf, errlen);
	if (r < 0)
		return r;
	return secret_new(v, strlen(v), ret);
}

static int fetch_file(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	const char *path = c->source_arg;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int e = errno;
		snprintf(errbuf, errlen, "credential %s: %s: %s%s", c->name, path, strerror(e),
		         e == ELOOP ? " (secret files may not be symbolic links)" : "");
		return -e;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(errbuf, errlen, "credential %s: %s: not a regular file", c->name, path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		snprintf(errbuf, errlen,
		         "credential %s: %s is readable by group or others (mode %03o); fix with: chmod 600 %s",
		         c->name, path, st.st_mode & 0777, path);
		close(fd);
		return -EPERM;
	}
	if (st.st_size > SECRET_MAX) {
		snprintf(errbuf, errlen, "credential %s: %s is larger than %d bytes", c->name, path, SECRET_MAX);
		close(fd);
		return -EFBIG;
	}

	unsigned char tmp[SECRET_MAX + 1];
	size_t n = 0;
	while (n < sizeof(tmp)) {
		ssize_t k = read(fd, tmp + n, sizeof(tmp) - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = errno;
			snprintf(errbuf, errlen, "credential %s: %s: %s", c->name, path, strerror(e));
			close(fd);
			OPENSSL_cleanse(tmp, n);
			return -e;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	if (n > SECRET_MAX) {
		snprintf(errbuf, errlen, "credential %s: %s is larger than %d bytes", c->name, path, SECRET_MAX);
		OPENSSL_cleanse(tmp, n);
		return -EFBIG;
	}
	/* Files written by editors and `echo` end in a newline: drop one. */
	if (n > 0 && tmp[n - 1] == '\n')
		n--;
	if (n > 0 && tmp[n - 1] == '\r')
		n--;
	int r = check_value(c, tmp, n, errbuf, errlen);
	if (r == 0)
		r = secret_new(tmp, n, ret);
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return r;
}

int source_fetch(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	switch (c->source) {
	case SOURCE_ENV:
		return fetch_env(c, ret, errbuf, errlen);
	case SOURCE_FILE:
		return fetch_file(c, ret, errbuf, errlen);
	}
	snprintf(errbuf, errlen, "credential %s: unknown source", c->name);
	return -EINVAL;
}
