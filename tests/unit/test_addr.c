/* addr: which addresses the proxy refuses to dial by default (SSRF). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/addr.h"

struct addr_case {
	const char *ip;
	bool restricted;
};

static const struct addr_case cases[] = {
	/* refused: loopback, private, link-local, metadata, and the IPv6
	 * forms that carry such an IPv4 address */
	{ "127.0.0.1", true },
	{ "127.255.255.254", true },
	{ "0.0.0.0", true },
	{ "10.1.2.3", true },
	{ "100.64.0.1", true },
	{ "169.254.169.254", true },
	{ "169.254.1.1", true },
	{ "172.16.0.1", true },
	{ "172.31.255.255", true },
	{ "192.168.1.1", true },
	{ "192.0.2.1", true },
	{ "198.18.0.1", true },
	{ "224.0.0.1", true },
	{ "255.255.255.255", true },
	{ "::1", true },
	{ "::", true },
	{ "::ffff:127.0.0.1", true },
	{ "::ffff:169.254.169.254", true },
	{ "::127.0.0.1", true },
	{ "64:ff9b::a9fe:a9fe", true },
	{ "2002:7f00:1::", true },
	{ "64:ff9b:1::a9fe:a9fe", true },
	{ "64:ff9b:1:a9fe:a9:fe00::", true },
	{ "fc00::1", true },
	{ "fd00:ec2::254", true },
	{ "fe80::1", true },
	{ "ff02::1", true },
	{ "2001:db8::1", true },
	/* allowed: public addresses, including neighbours of the ranges */
	{ "1.1.1.1", false },
	{ "8.8.8.8", false },
	{ "172.15.255.255", false },
	{ "172.32.0.1", false },
	{ "100.128.0.1", false },
	{ "169.253.255.255", false },
	{ "192.169.0.1", false },
	{ "::ffff:8.8.8.8", false },
	{ "2606:4700::1111", false },
	{ "2002:0808:0808::", false },
	{ "64:ff9b::808:808", false },
	{ "64:ff9b:2::a9fe:a9fe", false },
};

static void test_restricted_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		const char *what = NULL;
		assert_int_equal(addr_parse_literal(cases[i].ip, 443, &ss, &len), 0);
		bool r = addr_is_restricted((struct sockaddr *)&ss, &what);
		if (r != cases[i].restricted)
			fail_msg("%s: expected %s", cases[i].ip, cases[i].restricted ? "restricted" : "allowed");
		if (r)
			assert_non_null(what);
	}
}

static void test_literal_forms(void **state)
{
	struct sockaddr_storage ss;
	socklen_t len;
	/* Forms that some resolvers read as 127.0.0.1 are not literals here. */
	static const char *const not_literals[] = { "127.1", "0x7f.0.0.1", "0177.0.0.1", "2130706433",
		                                    "[::1]", "1.2.3.4.5",  "",           "localhost" };
	for (size_t i = 0; i < sizeof(not_literals) / sizeof(not_literals[0]); i++)
		assert_int_not_equal(addr_parse_literal(not_literals[i], 80, &ss, &len), 0);
	assert_int_not_equal(addr_parse_literal("1.2.3.4", 70000, &ss, &len), 0);
	assert_int_equal(addr_parse_literal("::1", 8443, &ss, &len), 0);
	char out[64];
	addr_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_equal(out, "[::1]:8443");
	assert_int_equal(addr_parse_literal("10.0.0.1", 80, &ss, &len), 0);
	addr_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_equal(out, "10.0.0.1:80");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restricted_table),
		cmocka_unit_test(test_literal_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
