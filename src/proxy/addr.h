/* Which addresses the proxy may dial. A request that names a public host
 * must not be steered (by DNS, or by a literal) to the proxy's own machine,
 * the local network or a cloud metadata service (SSRF, DNS rebinding). */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>

#include "common/util.h"

/* If sa is in a range the proxy refuses by default (loopback, RFC 1918 and
 * ULA private, CGNAT, link-local and metadata, multicast, unspecified,
 * reserved, documentation; IPv4 embedded in IPv6 is judged by its IPv4),
 * returns true and a short description in *what. */
bool addr_is_restricted(const struct sockaddr *sa, const char **what);

/* Parses an IPv4 or IPv6 literal (no brackets) with the given port. */
int addr_parse_literal(const char *host, unsigned port, struct sockaddr_storage *ret, socklen_t *ret_len) WUR;

/* Formats sa as "1.2.3.4:80" or "[::1]:80". */
void addr_format(const struct sockaddr *sa, char *out, size_t outlen);
