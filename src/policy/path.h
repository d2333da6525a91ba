/* Request path normalisation, done before matching so that the path that is
 * checked is the path that is sent (RFC 3986 sections 2.3, 5.2.4, 6.2.2). */
#pragma once

#include <stddef.h>

#include "common/util.h"

/* Flags describing forms that are ambiguous between proxy and upstream. A
 * credentialed route refuses a path with any of them. */
enum {
	PATH_ENCODED_SLASH = 1 << 0,   /* %2F */
	PATH_BACKSLASH = 1 << 1,       /* \ or %5C */
	PATH_ENCODED_NUL = 1 << 2,     /* %00 */
	PATH_ENCODED_CONTROL = 1 << 3, /* %01-%1F, %7F */
	PATH_ENCODED_PERCENT = 1 << 4, /* %25: double encoding */
	PATH_SEMICOLON = 1 << 6,       /* ';' (matrix params, Tomcat-style) */
};

/* Normalises the path part of a request target (everything before '?').
 *  - must start with '/';
 *  - percent escapes of unreserved characters are decoded, all others kept
 *    with upper-case hex; a malformed escape is an error;
 *  - dot segments are removed per RFC 3986 5.2.4;
 *  - runs of '/' collapse to one.
 * Writes the NUL-terminated result to out (at most outlen bytes, which need
 * never exceed len + 1) and sets *ret_flags. Returns the length, -EINVAL on a
 * malformed path (no leading '/', bad escape, raw control byte, raw space or
 * NUL), -ENOBUFS if out is too small. */
int path_normalize(const char *in, size_t len, char *out, size_t outlen, unsigned *ret_flags) WUR;

/* Human words for the first flag set, e.g. "encoded slash (%2F)". */
const char *path_flag_name(unsigned flags);
