/* The answer of a token endpoint (src/proxy/mint.h): an OAuth2 token
 * response or error, or a GitHub App installation token. The first byte
 * picks GitHub's shape or OAuth2's and the HTTP status; the rest is the
 * body.
 *
 * Properties:
 *  - success gives an access token of 1 to MINT_TOKEN_MAX bytes with no
 *    control byte (it goes into a header line), an optional refresh token
 *    of the same shape, and a lifetime of at least one second; only for a
 *    2xx status;
 *  - failure gives no token and a reason, which never quotes more than a
 *    64-byte OAuth2 error code of the body. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proxy/mint.h"

static void check_token(const struct secret *s)
{
	fuzz_assert(s->len >= 1 && s->len <= MINT_TOKEN_MAX && s->data[s->len] == '\0');
	for (size_t i = 0; i < s->len; i++)
		fuzz_assert(s->data[i] >= 0x20 && s->data[i] != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int statuses[] = { 200, 201, 204, 400, 401, 403, 500, 302 };
	if (size < 1)
		return 0;
	bool github = data[0] & 1;
	int status = statuses[(data[0] >> 1) % 8];
	const char *body = (const char *)data + 1;
	size_t n = size - 1;

	struct mint_result res = { 0 };
	char why[300] = "";
	int r = mint_parse_response(status, body, n, github, 1700000000, &res, why, sizeof(why));
	if (r < 0) {
		fuzz_assert(!res.access && !res.refresh && why[0] && strlen(why) < sizeof(why));
		if (n >= 65)
			fuzz_assert(!memmem(why, strlen(why), body, 65));
		return 0;
	}
	fuzz_assert(status >= 200 && status <= 299);
	fuzz_assert(res.access && res.lifetime >= 1);
	check_token(res.access);
	if (res.refresh) {
		fuzz_assert(!github);
		check_token(res.refresh);
	}
	mint_result_clear(&res);
	return 0;
}
