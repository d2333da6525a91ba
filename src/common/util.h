/* Small helpers shared by every module: cleanup attributes, string equality,
 * array length. No I/O, no policy. */
#pragma once

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define WUR           __attribute__((warn_unused_result))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

static inline bool strcaseeq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* Case-insensitive comparison of a counted string with a C string. */
static inline bool memcaseeq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* A name of min..max characters of A-Z a-z 0-9 _ . - (credential and
 * vault secret names): safe in file names, logs and messages as is. */
static inline bool name_valid(const char *s, size_t min, size_t max)
{
	size_t n = 0;
	for (; s[n]; n++) {
		char ch = s[n];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
		      ch == '.' || ch == '-'))
			return false;
		if (n >= max)
			return false;
	}
	return n >= min;
}

/* Walks the fields of s[0..n) separated by sep: from *pos, sets the next
 * field (maybe empty) in *field, *len and moves *pos past its separator.
 * Returns false once *pos is at or past n (a trailing separator gives no
 * empty last field). */
static inline bool field_next(const char *s, size_t n, size_t *pos, char sep, const char **field, size_t *len)
{
	size_t i = *pos, start = i;
	if (i >= n)
		return false;
	while (i < n && s[i] != sep)
		i++;
	*field = s + start;
	*len = i - start;
	*pos = i + 1;
	return true;
}

/* The kernel's own file system ("/proc", "/sys" or "/dev") that an
 * absolute path names or lies beneath, whatever its spelling ("//proc/.",
 * "/./sys/kernel"), or NULL. Binding one of them into a sandbox would hand
 * it the host's: a read-write /proc of a root caller writes
 * /proc/sys/kernel/core_pattern, which runs a program as root. */
static inline const char *kernel_fs_of(const char *path)
{
	static const char *const fs[] = { "/proc", "/sys", "/dev" };
	if (path[0] != '/')
		return NULL;
	const char *p = path;
	for (;;) { /* past every "/" and "." component */
		while (*p == '/')
			p++;
		if (p[0] == '.' && (p[1] == '/' || p[1] == '\0'))
			p++;
		else
			break;
	}
	for (size_t i = 0; i < ARRAY_SIZE(fs); i++) {
		size_t n = strlen(fs[i] + 1);
		if (strncmp(p, fs[i] + 1, n) == 0 && (p[n] == '/' || p[n] == '\0'))
			return fs[i];
	}
	return NULL;
}

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

/* A local that is freed (or closed) when it goes out of scope; hand it out
 * with TAKE_PTR / TAKE_FD. */
#define _cleanup_(f)    __attribute__((cleanup(f)))
#define _cleanup_free_  _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

#define TAKE_PTR(p)                       \
	({                                \
		__typeof__(p) _tp_ = (p); \
		(p) = NULL;               \
		_tp_;                     \
	})

#define TAKE_FD(fd)              \
	({                       \
		int _tf_ = (fd); \
		(fd) = -1;       \
		_tf_;            \
	})
