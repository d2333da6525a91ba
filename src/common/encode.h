/* Encodings used on the request path: base64 (Basic credentials), hex
 * (hashes), percent-encoding (query values). Pure functions on counted
 * strings; output goes to a bounded struct buf. */
#pragma once

#include <stddef.h>

#include "common/buf.h"

/* Standard base64 with padding. */
int base64_encode(const void *in, size_t n, struct buf *out) WUR;
/* Strict standard base64: padding required, no whitespace. -EINVAL if
 * malformed. */
int base64_decode(const char *in, size_t n, struct buf *out) WUR;
/* Lower-case hex of n bytes into out (2n+1 bytes). */
void hex_encode(const void *in, size_t n, char *out);
/* Percent-encodes everything outside RFC 3986 unreserved. */
int percent_encode(const char *in, size_t n, struct buf *out) WUR;
/* Decodes %XX escapes (and nothing else). -EINVAL on a bad escape. */
int percent_decode(const char *in, size_t n, struct buf *out) WUR;
/* Value of a hex digit, or -1. */
int hex_value(char c);
/* Finds needle in haystack (counted); returns its offset or -1. */
long mem_find(const char *hay, size_t hlen, const char *needle, size_t nlen);
