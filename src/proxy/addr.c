#include "proxy/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>

struct v4_range {
	uint32_t net;
	unsigned bits;
	const char *what;
};

static const struct v4_range v4_ranges[] = {
	{ 0x00000000, 8, "unspecified (0.0.0.0/8)" },
	{ 0x0a000000, 8, "private (10.0.0.0/8)" },
	{ 0x64400000, 10, "shared address space (100.64.0.0/10)" },
	{ 0x7f000000, 8, "loopback (127.0.0.0/8)" },
	{ 0xa9fea9fe, 32, "cloud metadata (169.254.169.254)" },
	{ 0xa9fe0000, 16, "link-local (169.254.0.0/16)" },
	{ 0xac100000, 12, "private (172.16.0.0/12)" },
	{ 0xc0000000, 24, "IETF protocol assignments (192.0.0.0/24)" },
	{ 0xc0000200, 24, "documentation (192.0.2.0/24)" },
	{ 0xc0a80000, 16, "private (192.168.0.0/16)" },
	{ 0xc6120000, 15, "benchmarking (198.18.0.0/15)" },
	{ 0xc6336400, 24, "documentation (198.51.100.0/24)" },
	{ 0xcb007100, 24, "documentation (203.0.113.0/24)" },
	{ 0xe0000000, 4, "multicast (224.0.0.0/4)" },
	{ 0xf0000000, 4, "reserved (240.0.0.0/4)" },
};

static bool v4_restricted(uint32_t a, const char **what)
{
	for (size_t i = 0; i < ARRAY_SIZE(v4_ranges); i++) {
		uint32_t mask = v4_ranges[i].bits == 0 ? 0 : ~UINT32_C(0) << (32 - v4_ranges[i].bits);
		if ((a & mask) == v4_ranges[i].net) {
			*what = v4_ranges[i].what;
			return true;
		}
	}
	return false;
}

static uint32_t v4_at(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static bool v6_restricted(const uint8_t *b, const char **what)
{
	static const uint8_t zero[16];
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	static const uint8_t nat64_local[6] = { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 };

	if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1)) {
		*what = b[15] ? "loopback (::1)" : "unspecified (::)";
		return true;
	}
	/* IPv4-mapped, NAT64 and the deprecated IPv4-compatible form carry an
	 * IPv4 address that the kernel or a gateway may really dial. */
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 || memcmp(b, zero, 12) == 0)
		return v4_restricted(v4_at(b + 12), what);
	if (b[0] == 0x20 && b[1] == 0x02) /* 6to4 2002:V4ADDR::/48 */
		return v4_restricted(v4_at(b + 2), what);
	/* RFC 8215 local-use NAT64: a DNS64 resolver of the site synthesises
	 * these from A records (an attacker's name that resolves to
	 * 169.254.169.254 among them) and the site's translator dials the IPv4
	 * inside, whose place depends on the prefix length the site chose.
	 * Not globally reachable (IANA): refused whole. */
	if (memcmp(b, nat64_local, 6) == 0) {
		*what = "local-use NAT64 (64:ff9b:1::/48)";
		return true;
	}
	if ((b[0] & 0xfe) == 0xfc) {
		*what = "unique local (fc00::/7)";
		return true;
	}
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) {
		*what = "link-local (fe80::/10)";
		return true;
	}
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) {
		*what = "site-local (fec0::/10)";
		return true;
	}
	if (b[0] == 0xff) {
		*what = "multicast (ff00::/8)";
		return true;
	}
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) {
		*what = "documentation (2001:db8::/32)";
		return true;
	}
	if (b[0] == 0x01 && memcmp(b + 1, zero, 7) == 0) {
		*what = "discard (100::/64)";
		return true;
	}
	return false;
}

bool addr_is_restricted(const struct sockaddr *sa, const char **what)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		return v4_restricted(ntohl(s4->sin_addr.s_addr), what);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		return v6_restricted(s6->sin6_addr.s6_addr, what);
	}
	*what = "not an internet address";
	return true;
}

int addr_parse_literal(const char *host, unsigned port, struct sockaddr_storage *ret, socklen_t *ret_len)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

	if (port > 65535)
		return -EINVAL;
	/* inet_pton accepts only the dotted-quad form: no "127.1", no octal,
	 * no hex, which some resolvers would read differently. */
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*ret = ss;
		*ret_len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*ret = ss;
		*ret_len = sizeof(*s6);
		return 0;
	}
	return -EINVAL;
}

void addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, outlen, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, outlen, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else if (sa->sa_family == AF_UNIX) {
		snprintf(out, outlen, "unix");
	} else {
		snprintf(out, outlen, "?");
	}
}
