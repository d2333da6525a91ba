/* Unit tests for proxy/mint.c: token endpoint answers (rejects first), the
 * GitHub App JWT, and the requests sent to token endpoints. */
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/encode.h"
#include "proxy/mint.h"

#define NOW ((time_t)1700000000) /* 2023-11-14T22:13:20Z */

struct answer {
	int status;
	const char *body;
	bool github;
	const char *why; /* expected in the reason */
};

static void test_parse_rejects(void **state)
{
	static const struct answer bad[] = {
		{ 400, "{\"error\":\"invalid_grant\",\"error_description\":\"kwtest-SECRET-desc\"}", false,
		  "answered 400 (invalid_grant)" },
		{ 401, "{\"error\":\"bad code with spaces\"}", false, "answered 401" },
		/* a tame-looking code that is not a registered one: an echo of
		 * what the endpoint was sent, maybe the client secret */
		{ 401, "{\"error\":\"kwtest-SECRET-echoed_client_secret\"}", false, "answered 401" },
		{ 400, "{\"error\":\"invalid_grant_kwtest-SECRET\"}", false, "answered 400" },
		{ 500, "not json", false, "answered 500" },
		{ 302, "", false, "answered 302" },
		{ 200, "", false, "not a JSON object" },
		{ 200, "[1]", false, "not a JSON object" },
		{ 200, "{\"access_token\":1}", false, "no string \"access_token\"" },
		{ 200, "{\"token_type\":\"Bearer\"}", false, "no string \"access_token\"" },
		{ 200, "{\"access_token\":\"\"}", false, "not usable" },
		{ 200, "{\"access_token\":\"a\\nb\"}", false, "not usable" },
		{ 200, "{\"access_token\":\"a\\u0000b\"}", false, "not a JSON object" }, /* jansson: no NUL */
		{ 200, "{\"access_token\":\"abc\",\"access_token\":\"def\"}", false, "not a JSON object" },
		{ 200, "{\"access_token\":\"abc\",\"token_type\":\"mac\"}", false, "not Bearer" },
		{ 200, "{\"access_token\":\"abc\",\"token_type\":7}", false, "not Bearer" },
		{ 200, "{\"access_token\":\"abc\",\"expires_in\":0}", false, "expires_in" },
		{ 200, "{\"access_token\":\"abc\",\"expires_in\":-5}", false, "expires_in" },
		{ 200, "{\"access_token\":\"abc\",\"expires_in\":\"soon\"}", false, "expires_in" },
		{ 200, "{\"access_token\":\"abc\",\"expires_in\":99999999999}", false, "expires_in" },
		{ 200, "{\"access_token\":\"abc\",\"expires_in\":1.5}", false, "expires_in" },
		{ 200, "{\"access_token\":\"abc\",\"refresh_token\":\"x\\ry\"}", false, "not usable" },
		{ 201, "{\"token\":\"ghs_x\"}", true, "expires_at" },
		{ 201, "{\"token\":\"ghs_x\",\"expires_at\":\"2023-11-14 23:13:20\"}", true, "expires_at" },
		{ 201, "{\"token\":\"ghs_x\",\"expires_at\":\"2023-11-14T22:13:20Z\"}", true, "expired already" },
		{ 201, "{\"token\":\"ghs_x\",\"expires_at\":\"2023-11-14T22:13:20Zjunk\"}", true, "expires_at" },
		{ 201, "{\"access_token\":\"ghs_x\",\"expires_at\":\"2023-11-14T23:13:20Z\"}", true, "\"token\"" },
		{ 403, "{\"message\":\"kwtest-SECRET-msg\"}", true, "answered 403" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct mint_result res = { 0 };
		char why[300] = "";
		int r = mint_parse_response(bad[i].status, bad[i].body, strlen(bad[i].body), bad[i].github, NOW, &res,
		                            why, sizeof(why));
		if (r >= 0 || !strstr(why, bad[i].why) || strstr(why, "kwtest-SECRET"))
			fail_msg("case %zu: got %d, \"%s\"", i, r, why);
		assert_null(res.access);
	}
}

static void test_parse_accepts(void **state)
{
	static const struct {
		int status;
		const char *body;
		bool github;
		const char *access, *refresh;
		int64_t lifetime;
	} good[] = {
		{ 200, "{\"access_token\":\"at-1\",\"token_type\":\"Bearer\",\"expires_in\":3600}", false, "at-1", NULL,
		  3600 },
		{ 200, "{\"access_token\":\"at-2\",\"token_type\":\"bearer\",\"expires_in\":\"60\"}", false, "at-2",
		  NULL, 60 },
		{ 200, "{\"access_token\":\"at-3\"}", false, "at-3", NULL, MINT_DEFAULT_LIFETIME },
		{ 200, "{\"access_token\":\"at-4\",\"expires_in\":null,\"refresh_token\":\"rt-2\",\"scope\":\"a b\"}",
		  false, "at-4", "rt-2", MINT_DEFAULT_LIFETIME },
		{ 201, "{\"token\":\"ghs_abc\",\"expires_at\":\"2023-11-14T23:13:20Z\",\"permissions\":{}}", true,
		  "ghs_abc", NULL, 3600 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		struct mint_result res = { 0 };
		char why[300] = "";
		int r = mint_parse_response(good[i].status, good[i].body, strlen(good[i].body), good[i].github, NOW,
		                            &res, why, sizeof(why));
		if (r < 0)
			fail_msg("case %zu: %s", i, why);
		assert_string_equal((const char *)res.access->data, good[i].access);
		if (good[i].refresh)
			assert_string_equal((const char *)res.refresh->data, good[i].refresh);
		else
			assert_null(res.refresh);
		assert_int_equal(res.lifetime, good[i].lifetime);
		mint_result_clear(&res);
	}
}

/* ---- JWT ---- */

static struct secret *pem_of(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	struct secret *s;
	assert_int_equal(secret_new(p, (size_t)n, &s), 0);
	BIO_free(b);
	return s;
}

static void b64url_decode(const char *in, size_t n, struct buf *out)
{
	char tmp[2048];
	size_t k = 0;
	assert_true(n + 4 < sizeof(tmp));
	for (size_t i = 0; i < n; i++)
		tmp[k++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	while (k % 4)
		tmp[k++] = '=';
	assert_int_equal(base64_decode(tmp, k, out), 0);
}

static void test_jwt_rejects(void **state)
{
	char why[200];
	struct buf out;
	buf_init(&out, 8192);
	struct secret *junk;
	assert_int_equal(secret_new("not a key", 9, &junk), 0);
	assert_int_equal(mint_jwt(junk, "1", NOW, &out, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "PEM"));
	secret_free(junk);

	EVP_PKEY *ec = EVP_EC_gen("P-256");
	struct secret *ecs = pem_of(ec);
	assert_int_equal(mint_jwt(ecs, "1", NOW, &out, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "RSA"));
	secret_free(ecs);
	EVP_PKEY_free(ec);
	buf_free(&out);
}

static void test_jwt_signed_and_claims(void **state)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	struct secret *pem = pem_of(k);
	char why[200];
	struct buf jwt, part;
	buf_init(&jwt, 8192);
	buf_init(&part, 8192);
	assert_int_equal(mint_jwt(pem, "4711", NOW, &jwt, why, sizeof(why)), 0);

	const char *d1 = strchr(jwt.data, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	assert_non_null(d2);
	assert_null(strchr(jwt.data, '=')); /* base64url without padding */
	b64url_decode(jwt.data, (size_t)(d1 - jwt.data), &part);
	assert_string_equal(part.data, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
	buf_reset(&part);
	b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &part);
	json_t *claims = json_loads(part.data, 0, NULL);
	assert_non_null(claims);
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), "4711");
	assert_int_equal(json_integer_value(json_object_get(claims, "iat")), NOW - MINT_JWT_BACKDATE);
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")), NOW + MINT_JWT_LIFETIME);
	assert_true(MINT_JWT_LIFETIME <= 600);
	json_decref(claims);

	buf_reset(&part);
	b64url_decode(d2 + 1, strlen(d2 + 1), &part);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k), 1);
	assert_int_equal(EVP_DigestVerify(md, (unsigned char *)part.data, part.len, (unsigned char *)jwt.data,
	                                  (size_t)(d2 - jwt.data)),
	                 1);
	/* one flipped byte of the signed part: the signature no longer holds */
	jwt.data[3] ^= 1;
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k), 1);
	assert_int_not_equal(EVP_DigestVerify(md, (unsigned char *)part.data, part.len, (unsigned char *)jwt.data,
	                                      (size_t)(d2 - jwt.data)),
	                     1);
	EVP_MD_CTX_free(md);
	buf_free(&jwt);
	buf_free(&part);
	secret_free(pem);
	EVP_PKEY_free(k);
}

/* ---- requests ---- */

static struct policy *load(const char *yaml)
{
	struct policy *p;
	struct policy_error err;
	if (policy_load_string("t.yaml", yaml, strlen(yaml), &p, &err) < 0)
		fail_msg("%s", err.message);
	return p;
}

static struct secret *S(const char *v)
{
	struct secret *s;
	assert_int_equal(secret_new(v, strlen(v), &s), 0);
	return s;
}

static void build(const char *yaml, const struct mint_secrets *ms, struct buf *out)
{
	struct policy *p = load(yaml);
	char why[200];
	buf_init(out, 65536);
	int r = mint_build_request(&p->creds[0], ms, NOW, out, why, sizeof(why));
	if (r < 0)
		fail_msg("%s", why);
	policy_free(p);
}

static void test_request_client_credentials(void **state)
{
	struct secret *id = S("my id"), *sec = S("s3cr:et&");
	struct mint_secrets ms = { .client_id = id, .client_secret = sec };
	struct buf out;
	build("version: 1\ncredentials:\n  c:\n    kind: oauth2_client_credentials\n"
	      "    token_url: https://auth.example.com:8443/oauth/token?x=1\n"
	      "    client_id: {from: env:A}\n    client_secret: {from: env:B}\n"
	      "    scopes: [read, 'write:all']\n    audience: https://api.example.com\n",
	      &ms, &out);
	assert_non_null(strstr(out.data, "POST /oauth/token?x=1 HTTP/1.1\r\nHost: auth.example.com:8443\r\n"));
	/* base64("my%20id:s3cr%3Aet%26") */
	assert_non_null(strstr(out.data, "Authorization: Basic bXklMjBpZDpzM2NyJTNBZXQlMjY=\r\n"));
	const char *body = strstr(out.data, "\r\n\r\n") + 4;
	assert_string_equal(
	    body, "grant_type=client_credentials&scope=read%20write%3Aall&audience=https%3A%2F%2Fapi.example.com");
	char cl[64];
	snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", strlen(body));
	assert_non_null(strstr(out.data, cl));
	mint_buf_wipe(&out);

	build("version: 1\ncredentials:\n  c:\n    kind: oauth2_client_credentials\n"
	      "    token_url: https://auth.example.com/t\n    client_auth: post\n"
	      "    client_id: {from: env:A}\n    client_secret: {from: env:B}\n",
	      &ms, &out);
	assert_null(strstr(out.data, "Authorization"));
	assert_non_null(strstr(out.data, "Host: auth.example.com\r\n"));
	assert_non_null(
	    strstr(out.data, "\r\n\r\ngrant_type=client_credentials&client_id=my%20id&client_secret=s3cr%3Aet%26"));
	mint_buf_wipe(&out);
	secret_free(id);
	secret_free(sec);
}

static void test_request_refresh(void **state)
{
	struct secret *rt = S("rt-0"), *id = S("pub");
	struct mint_secrets ms = { .refresh_token = rt };
	struct buf out;
	const char *yaml = "version: 1\ncredentials:\n  c:\n    kind: oauth2_refresh\n"
	                   "    token_url: https://[::1]:9/t\n    refresh_token: {from: env:R}\n";
	build(yaml, &ms, &out);
	assert_non_null(strstr(out.data, "Host: [::1]:9\r\n"));
	assert_non_null(strstr(out.data, "\r\n\r\ngrant_type=refresh_token&refresh_token=rt-0"));
	mint_buf_wipe(&out);
	/* a public client: its id in the body, no Basic */
	ms.client_id = id;
	build("version: 1\ncredentials:\n  c:\n    kind: oauth2_refresh\n    token_url: https://a.example/t\n"
	      "    refresh_token: {from: env:R}\n    client_id: {from: env:I}\n",
	      &ms, &out);
	assert_null(strstr(out.data, "Authorization"));
	assert_non_null(strstr(out.data, "refresh_token=rt-0&client_id=pub"));
	mint_buf_wipe(&out);
	secret_free(rt);
	secret_free(id);
}

static void test_request_github(void **state)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	struct secret *pem = pem_of(k);
	struct mint_secrets ms = { .private_key = pem };
	struct buf out;
	build("version: 1\ncredentials:\n  gh:\n    kind: github_app\n    app_id: 12\n    installation_id: 34\n"
	      "    repositories: [app, docs]\n    permissions: {contents: read, issues: write}\n"
	      "    private_key: {from: file:/k}\n",
	      &ms, &out);
	assert_non_null(
	    strstr(out.data, "POST /app/installations/34/access_tokens HTTP/1.1\r\nHost: api.github.com\r\n"));
	assert_non_null(strstr(out.data, "Authorization: Bearer eyJ"));
	assert_non_null(strstr(out.data, "\r\n\r\n{\"repositories\":[\"app\",\"docs\"],"
	                                 "\"permissions\":{\"contents\":\"read\",\"issues\":\"write\"}}"));
	mint_buf_wipe(&out);
	/* api_url of GitHub Enterprise Server, no narrowing: an empty object */
	build("version: 1\ncredentials:\n  gh:\n    kind: github_app\n    app_id: 12\n    installation_id: 34\n"
	      "    api_url: https://ghe.example.com/api/v3/\n    private_key: {from: file:/k}\n",
	      &ms, &out);
	assert_non_null(strstr(out.data, "POST /api/v3/app/installations/34/access_tokens HTTP/1.1\r\n"));
	assert_non_null(strstr(out.data, "\r\n\r\n{}"));
	mint_buf_wipe(&out);
	secret_free(pem);
	EVP_PKEY_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_parse_accepts),
		cmocka_unit_test(test_jwt_rejects),
		cmocka_unit_test(test_jwt_signed_and_claims),
		cmocka_unit_test(test_request_client_credentials),
		cmocka_unit_test(test_request_refresh),
		cmocka_unit_test(test_request_github),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
