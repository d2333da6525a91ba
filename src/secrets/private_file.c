#include "secrets/private_file.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>

int private_file_open(const char *path, struct stat *ret_st, char *errbuf, size_t errlen)
{
	return private_file_openat(AT_FDCWD, path, path, ret_st, errbuf, errlen);
}

int private_file_openat(int dirfd, const char *name, const char *path, struct stat *ret_st, char *errbuf, size_t errlen)
{
	/* O_NOFOLLOW refuses a link as the last name only: the folders on
	 * the way are trusted as dirfd fixed them (private_dir_open). */
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		snprintf(errbuf, errlen, "%s: %s%s", path, strerror(e),
		         e == ELOOP ? " (secret files may not be symbolic links)" : "");
		return -e;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(errbuf, errlen, "%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		snprintf(errbuf, errlen, "%s is readable by group or others (mode %03o); fix with: chmod 600 %s", path,
		         st.st_mode & 0777, path);
		close(fd);
		return -EPERM;
	}
	*ret_st = st;
	return fd;
}

const char *private_file_name(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

int private_dir_open(const char *path, char *errbuf, size_t errlen)
{
	const char *name = private_file_name(path);
	if (!*name) {
		snprintf(errbuf, errlen, "%s: names a folder, not a file", path);
		return -EISDIR;
	}
	_cleanup_free_ char *dir = NULL;
	if (name == path)
		dir = strdup(".");
	else if (name - 1 == path)
		dir = strdup("/");
	else
		dir = strndup(path, (size_t)(name - 1 - path));
	if (!dir)
		return -ENOMEM;
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(errbuf, errlen, "%s: its folder %s: %s", path, dir, strerror(e));
		return -e;
	}
	return fd;
}

int fd_read_all(int fd, void *buf, size_t cap, size_t *ret_n)
{
	size_t n = 0;
	while (n < cap) {
		ssize_t k = read(fd, (char *)buf + n, cap - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		n += (size_t)k;
	}
	*ret_n = n;
	return 0;
}

int secret_file_read(const char *path, size_t max, bool strip_newline, struct secret **ret, char *errbuf, size_t errlen)
{
	return secret_file_readat(AT_FDCWD, path, path, max, strip_newline, ret, errbuf, errlen);
}

int secret_file_readat(int dirfd, const char *name, const char *path, size_t max, bool strip_newline,
                       struct secret **ret, char *errbuf, size_t errlen)
{
	struct stat st;
	_cleanup_close_ int fd = private_file_openat(dirfd, name, path, &st, errbuf, errlen);
	if (fd < 0)
		return fd;
	if (max > SECRET_MAX)
		max = SECRET_MAX;
	if (st.st_size > (off_t)max) {
		snprintf(errbuf, errlen, "%s is larger than %zu bytes", path, max);
		return -EFBIG;
	}

	/* One byte more than allowed: a file that grew since fstat is caught. */
	unsigned char tmp[SECRET_MAX + 1];
	size_t n = 0;
	int r = fd_read_all(fd, tmp, max + 1, &n);
	if (r < 0) {
		snprintf(errbuf, errlen, "%s: %s", path, strerror(-r));
	} else if (n > max) {
		snprintf(errbuf, errlen, "%s is larger than %zu bytes", path, max);
		r = -EFBIG;
	} else {
		if (strip_newline && n > 0 && tmp[n - 1] == '\n') {
			n--;
			if (n > 0 && tmp[n - 1] == '\r')
				n--;
		}
		r = secret_new(tmp, n, ret);
	}
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return r;
}
