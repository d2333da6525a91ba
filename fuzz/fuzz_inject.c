/* Request rewriting and the leak check (src/proxy/inject.h), fed with
 * heads the strict framing layer accepted, as src/proxy/conn.c does.
 *
 * Input: one control byte, then a request head. The control byte picks
 * the route of a fixed policy (low four bits) and whether the client asked
 * for an upgrade (bit 4). The head is measured and parsed by http1.h; its
 * target is split into path and query and the path normalised, as conn.c
 * does; then inject_find_leak runs for every credential, and
 * inject_request_head rewrites the head for the chosen route with a fixed
 * secret.
 *
 * The credential "unbound" is bound to no route, and its placeholder holds
 * '/' (allowed by docs/policy.md), to see whether path normalisation can
 * assemble it where the leak check did not look.
 *
 * Properties of the rewritten head, which goes to the upstream:
 *  - it passes the same strict framing check and parses as one request
 *    whose head is the whole output (no header injection, nothing after
 *    the blank line);
 *  - exactly one Host, naming the route's host; at most one
 *    Content-Length or Transfer-Encoding, framing the body as the client's
 *    head did; no other hop-by-hop header;
 *  - on a route that injects a header, exactly one copy of it: the
 *    client's own never survives next to the real one;
 *  - the secret appears only when the route has a credential (or the
 *    client wrote it itself);
 *  - if inject_find_leak found no other credential's placeholder, none
 *    reaches the upstream (the leak check sees everything that is sent). */
#include <errno.h>
#include <string.h>

#include "common/buf.h"
#include "common/encode.h"
#include "common/secret.h"
#include "fuzz.h"
#include "policy/path.h"
#include "proxy/http1.h"
#include "proxy/inject.h"

static const char policy_yaml[] = "version: 1\n"
                                  "credentials:\n"
                                  "  github:\n"
                                  "    from: env:KW_FUZZ_GITHUB\n"
                                  "    placeholder: ghp_kwPLACEHOLDERgithub0000000000000000\n"
                                  "  npm:\n"
                                  "    from: env:KW_FUZZ_NPM\n"
                                  "  maps:\n"
                                  "    from: env:KW_FUZZ_MAPS\n"
                                  "    placeholder: kwmaps_PLACEHOLDER_0123456789\n"
                                  "  unbound:\n"
                                  "    from: env:KW_FUZZ_UNBOUND\n"
                                  "    placeholder: kw/unbound/PLACEHOLDER_0123\n"
                                  "routes:\n"
                                  "  - host: api.github.com\n"
                                  "    credential: github\n"
                                  "    inject: bearer\n"
                                  "  - host: github.com\n"
                                  "    credential: github\n"
                                  "    inject: {basic: x-access-token}\n"
                                  "  - host: gist.github.com\n"
                                  "    credential: github\n"
                                  "    inject: basic\n"
                                  "  - host: registry.npmjs.org\n"
                                  "    credential: npm\n"
                                  "    inject: {header: X-Api-Key, value: \"Token {secret}\"}\n"
                                  "  - host: maps.example.com\n"
                                  "    port: 8443\n"
                                  "    credential: maps\n"
                                  "    inject: {query: key}\n"
                                  "  - host: swap.example.com\n"
                                  "    scheme: http\n"
                                  "    credential: github\n"
                                  "    inject: swap\n"
                                  "  - host: pypi.org\n"
                                  "  - host: \"*.internal.example\"\n"
                                  "    scheme: http\n"
                                  "    port: 8080\n"
                                  "  - host: \"[::1]\"\n"
                                  "    port: 9000\n"
                                  "    credential: npm\n"
                                  "    inject: {header: Authorization, value: \"Bearer {secret}\"}\n";

/* Characters a shell, a header and a URL treat specially, so that the
 * Basic re-encoding and the query's percent-encoding are exercised. */
static const char secret_value[] = "s3cr3t/VALUE+with=&?% chars";

static struct policy *policy;
static struct secret *secret;

static void setup(void)
{
	struct policy_error err;
	if (policy)
		return;
	if (policy_load_string("fuzz-inject.yaml", policy_yaml, sizeof(policy_yaml) - 1, &policy, &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		abort();
	}
	if (secret_new(secret_value, sizeof(secret_value) - 1, &secret) < 0)
		abort();
}

static unsigned count_headers(const struct http_head *h, const char *name)
{
	unsigned k = 0;
	for (unsigned i = 0; i < h->n_headers; i++)
		if (memcaseeq(h->headers[i].name, h->headers[i].name_len, name))
			k++;
	return k;
}

/* The request target's path and query, as conn.c's resolve_target leaves
 * them: origin-form as is, absolute-form without scheme and authority. */
static bool split_target(const struct http_head *req, const char **path, size_t *path_len, const char **query,
                         size_t *query_len)
{
	const char *u = req->url;
	size_t n = req->url_len;
	if (!u || n == 0)
		return false;
	if (n >= 7 && strncasecmp(u, "http://", 7) == 0) {
		const char *slash = memchr(u + 7, '/', n - 7);
		if (!slash)
			return false;
		n -= (size_t)(slash - u);
		u = slash;
	}
	if (u[0] != '/' || memchr(u, '#', n))
		return false;
	const char *qm = memchr(u, '?', n);
	*path = u;
	*path_len = qm ? (size_t)(qm - u) : n;
	*query = qm ? qm + 1 : NULL;
	*query_len = qm ? n - *path_len - 1 : 0;
	return true;
}

static void check_output(const struct buf *out, const char *client_head, size_t client_len, const struct http_head *req,
                         const struct policy_route *rt, const char *host, bool credentialed,
                         const struct policy_credential *leak_allowed_none)
{
	const char *why = NULL;
	size_t resume = 0;
	long hl = http1_head_length(out->data, out->len, &resume, &why);
	if (hl != (long)out->len) {
		fprintf(stderr, "rewritten head refused or split (%ld of %zu: %s):\n%.*s\n", hl, out->len,
		        why ? why : "-", (int)out->len, out->data);
		fuzz_assert(!"the rewritten head is not exactly one valid head");
	}
	struct http1 h;
	struct http_header hdrs[256];
	struct http_head hd = { .headers = hdrs, .max_headers = ARRAY_SIZE(hdrs) };
	http1_init(&h, HTTP1_REQUEST);
	int r = http1_parse_head(&h, out->data, out->len, &hd, &why);
	if (r < 0) {
		fprintf(stderr, "rewritten head does not parse (%s):\n%.*s\n", why, (int)out->len, out->data);
		fuzz_assert(!"the rewritten head does not parse");
	}
	fuzz_assert(hd.method_len == req->method_len && memcmp(hd.method, req->method, req->method_len) == 0);

	fuzz_assert(count_headers(&hd, "host") == 1);
	int hi = http_head_find(&hd, "host");
	size_t hostlen = strlen(host);
	fuzz_assert(hd.headers[hi].value_len >= hostlen);
	fuzz_assert(mem_find(hd.headers[hi].value, hd.headers[hi].value_len, host, hostlen) >= 0);

	fuzz_assert(count_headers(&hd, "content-length") + count_headers(&hd, "transfer-encoding") <= 1);
	fuzz_assert(hd.chunked == req->chunked);
	fuzz_assert(hd.has_content_length == (req->has_content_length && !req->chunked));
	if (hd.has_content_length)
		fuzz_assert(hd.content_length == req->content_length);
	static const char *const hop[] = {
		"keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer"
	};
	for (size_t i = 0; i < ARRAY_SIZE(hop); i++)
		fuzz_assert(count_headers(&hd, hop[i]) == 0);

	if (credentialed) {
		if (rt->inject == INJECT_BEARER || rt->inject == INJECT_BASIC)
			fuzz_assert(count_headers(&hd, "authorization") == 1);
		if (rt->inject == INJECT_HEADER)
			fuzz_assert(count_headers(&hd, rt->inject_header) == 1);
	} else if (mem_find(out->data, out->len, secret_value, sizeof(secret_value) - 1) >= 0) {
		/* Only if the client sent those very bytes itself. */
		fuzz_assert(mem_find(client_head, client_len, secret_value, sizeof(secret_value) - 1) >= 0);
	}

	/* What the leak check let through must not carry another
	 * credential's placeholder to this upstream: not in the request line
	 * and not in a header value. Header names are not searched by the
	 * leak check, and only with FUZZ_PENDING here (docs/fuzzing.md,
	 * finding F5). */
	if (!leak_allowed_none) {
		for (size_t i = 0; i < policy->n_creds; i++) {
			const struct policy_credential *c = &policy->creds[i];
			const char *ph = c->placeholder;
			size_t pl = strlen(ph);
			if (c == rt->credential)
				continue;
			const char *eol = memchr(out->data, '\r', out->len);
			/* Pending F4 (docs/fuzzing.md): the leak check reads the raw target, the
			 * upstream gets the normalised path, and dot segments or
			 * "//" can assemble a placeholder holding '/'. Until
			 * that is fixed the request line is checked only for
			 * placeholders without '/'. */
			bool seen = (FUZZ_PENDING || !strchr(ph, '/')) &&
			            mem_find(out->data, (size_t)(eol - out->data), ph, pl) >= 0;
			for (unsigned k = 0; k < hd.n_headers && !seen; k++) {
				const struct http_header *x = &hd.headers[k];
				seen = mem_find(x->value, x->value_len, ph, pl) >= 0 ||
				       (FUZZ_PENDING && mem_find(x->name, x->name_len, ph, pl) >= 0);
			}
			if (seen) {
				fprintf(stderr, "placeholder of %s reaches route %zu unseen:\n%.*s\n", c->name,
				        rt->index, (int)out->len, out->data);
				fuzz_assert(!"a placeholder passed the leak check");
			}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	if (size < 1)
		return 0;
	unsigned ctl = data[0];
	const struct policy_route *rt = &policy->routes[(ctl & 15) % policy->n_routes];
	bool upgrade = ctl & 16;

	char *head = fuzz_dup_exact(data + 1, size - 1);
	size_t n = size - 1;
	size_t resume = 0;
	const char *why = NULL;
	long hl = http1_head_length(head, n, &resume, &why);
	if (hl <= 0)
		goto out;

	struct http1 h;
	struct http_header hdrs[100];
	struct http_head req = { .headers = hdrs, .max_headers = ARRAY_SIZE(hdrs) };
	http1_init(&h, HTTP1_REQUEST);
	if (http1_parse_head(&h, head, (size_t)hl, &req, &why) < 0)
		goto out;

	const char *raw_path, *query;
	size_t raw_len, query_len;
	if (!split_target(&req, &raw_path, &raw_len, &query, &query_len))
		goto out;
	char *path = fuzz_alloc_exact(raw_len + 1);
	unsigned flags = 0;
	int pl = path_normalize(raw_path, raw_len, path, raw_len + 1, &flags);
	if (pl < 0) {
		free(path);
		goto out;
	}

	/* The leak check, from the point of view of every route binding. */
	const struct policy_credential *leaked = NULL;
	const char *where = NULL;
	for (size_t i = 0; i < policy->n_creds; i++) {
		const struct policy_credential *c =
		    inject_find_leak(policy, &req, NULL, path, &policy->creds[i], &where);
		fuzz_assert(c != &policy->creds[i]);
		if (c)
			fuzz_assert(where && *where);
	}
	leaked = inject_find_leak(policy, &req, NULL, path, rt->credential, &where);

	/* The route's host as conn.c holds it: no brackets, a name under a
	 * wildcard. */
	char host[300];
	const char *rh = rt->host;
	size_t rl = strlen(rh);
	if (rh[0] == '[' && rl >= 2)
		snprintf(host, sizeof(host), "%.*s", (int)(rl - 2), rh + 1);
	else
		snprintf(host, sizeof(host), "%s%s", rt->wildcard ? "x" : "", rh);

	bool credentialed = rt->credential != NULL;
	struct outbound o = {
		.req = &req,
		.path = path,
		.path_len = (size_t)pl,
		.query = query,
		.query_len = query_len,
		.host = host,
		.port = rt->port ? rt->port : (rt->scheme == SCHEME_HTTP ? 80 : 443),
		.scheme = rt->scheme,
		.route = rt,
		.secret = credentialed ? secret : NULL,
		.upgrade = upgrade && req.upgrade && http_head_find(&req, "upgrade") >= 0,
	};
	struct buf out;
	buf_init(&out, 64 * 1024 + 16384);
	why = NULL;
	int r = inject_request_head(&o, &out, &why);
	if (r < 0) {
		fuzz_assert((r == -ENOBUFS || r == -EINVAL) && why);
	} else {
		fuzz_assert(r == 0);
		check_output(&out, head, (size_t)hl, &req, rt, host, credentialed, leaked);
	}
	if (out.data)
		memset(out.data, 0, out.cap);
	buf_free(&out);
	free(path);
out:
	free(head);
	return 0;
}
