/* The policy loader (src/policy/policy.h: policy_load_string) and, on
 * every policy it accepts, the matcher.
 *
 * The loader must refuse or accept without crashing, leaking or running
 * away (the YAML ceilings: 1 MiB, depth 32, 100000 nodes, no aliases). An
 * error always has a message. What it accepts must keep the promises the
 * matcher relies on (docs/policy.md):
 *  - hosts are lower case without a trailing dot, and a route matches its
 *    own host (a wildcard: a name under it, never the suffix itself);
 *  - methods are upper case and never CONNECT or TRACE;
 *  - every glob starts with '/', and is a normalised path once its stars
 *    are replaced by a letter, which path then matches the glob: a glob
 *    no normalised path can reach would be a rule that silently never
 *    fires;
 *  - placeholders are unique, none inside another, and printable without
 *    space, quotes or backslash, so that a byte search finds exactly one;
 *  - a credentialed route has an inject mode and vice versa. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "policy/path.h"
#include "policy/policy.h"

static void check_glob(const char *g)
{
	size_t n = strlen(g);
	fuzz_assert(n > 0 && g[0] == '/');
	char *lit = fuzz_strndup(g, n);
	for (size_t i = 0; i < n; i++)
		if (lit[i] == '*')
			lit[i] = 'a';
	char *norm = fuzz_alloc_exact(n + 1);
	unsigned flags = 0;
	int r = path_normalize(lit, n, norm, n + 1, &flags);
	fuzz_assert(r >= 0);
	if ((size_t)r != n || memcmp(norm, lit, n) != 0) {
		fprintf(stderr, "glob %s: with a for *, normalises to %s\n", g, norm);
		fuzz_assert(!"an accepted glob is not a normalised path");
	}
	fuzz_assert(path_glob_match(g, lit));
	free(norm);
	free(lit);
}

static void check_placeholder(const char *ph)
{
	fuzz_assert(ph && strlen(ph) >= 16 && strlen(ph) <= 256 + 64);
	for (const char *p = ph; *p; p++)
		fuzz_assert(*p > 0x20 && *p < 0x7f && *p != '"' && *p != '\'' && *p != '\\');
}

static void check_route(const struct policy *p, const struct policy_route *r, size_t i)
{
	fuzz_assert(r->index == i);
	fuzz_assert(r->host && r->host[0]);
	size_t hl = strlen(r->host);
	fuzz_assert(r->host[hl - 1] != '.');
	for (const char *c = r->host; *c; c++)
		fuzz_assert(!(*c >= 'A' && *c <= 'Z'));
	if (r->wildcard) {
		fuzz_assert(r->host[0] == '.');
		char *under = malloc(hl + 2);
		if (!under)
			abort();
		under[0] = 'x';
		memcpy(under + 1, r->host, hl + 1);
		fuzz_assert(route_host_matches(r, under));
		fuzz_assert(!route_host_matches(r, r->host + 1)); /* the suffix itself */
		free(under);
	} else {
		fuzz_assert(route_host_matches(r, r->host));
	}
	for (char **m = r->methods; m && *m; m++) {
		fuzz_assert(**m);
		for (const char *c = *m; *c; c++)
			fuzz_assert(!(*c >= 'a' && *c <= 'z'));
		fuzz_assert(strcmp(*m, "CONNECT") != 0 && strcmp(*m, "TRACE") != 0);
	}
	for (char **g = r->paths; g && *g; g++)
		check_glob(*g);
	fuzz_assert((r->credential != NULL) == (r->inject != INJECT_NONE));
	if (r->credential) {
		fuzz_assert(r->credential >= p->creds && r->credential < p->creds + p->n_creds);
		if (r->inject == INJECT_HEADER) {
			fuzz_assert(r->inject_header && r->inject_value);
			fuzz_assert(strstr(r->inject_value, "{secret}"));
			fuzz_assert(!strpbrk(r->inject_value, "\r\n"));
		}
		if (r->inject == INJECT_QUERY)
			fuzz_assert(r->inject_query && r->inject_query[0]);
		if (r->inject == INJECT_BASIC && r->inject_user)
			fuzz_assert(!strchr(r->inject_user, ':'));
	}
}

/* Requests every accepted policy is asked about. */
static void exercise_matcher(const struct policy *p)
{
	static const char *const paths[] = { "/", "/repos/acme/app/issues", "/a/b/", "/acme/app.git/info/refs" };
	static const char *const methods[] = { "GET", "POST", "DELETE" };
	for (size_t i = 0; i < p->n_routes && i < 32; i++) {
		const struct policy_route *r = &p->routes[i];
		char host[300];
		snprintf(host, sizeof(host), "%s%s", r->wildcard ? "x" : "", r->host);
		uint16_t port = r->port ? r->port : (r->scheme == SCHEME_HTTP ? 80 : 443);
		const struct policy_route *closest = NULL;
		enum match_fail f = policy_match_host(p, r->scheme, host, port, &closest);
		/* Some route (this one or an earlier) allows that host:port. */
		fuzz_assert(f == MATCH_OK && closest && closest <= r);
		for (size_t k = 0; k < ARRAY_SIZE(paths); k++) {
			struct match_request mr = {
				.scheme = r->scheme,
				.host = host,
				.port = port,
				.method = methods[k % ARRAY_SIZE(methods)],
				.path = paths[k],
			};
			struct match_result res;
			policy_match(p, &mr, &res);
			(void)match_fail_name(res.fail);
			if (res.fail == MATCH_OK)
				fuzz_assert(res.route && route_host_matches(res.route, host));
		}
		const char *g = r->paths ? r->paths[0] : NULL;
		if (g)
			(void)path_glob_match(g, "/x/y/z");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy *p = NULL;
	struct policy_error err;
	memset(&err, 0, sizeof(err));
	char *yaml = fuzz_dup_exact(data, size);

	int r = policy_load_string("fuzz.yaml", yaml, size, &p, &err);
	if (r < 0) {
		fuzz_assert(p == NULL);
		fuzz_assert(err.message[0] != '\0');
		fuzz_assert(memchr(err.message, '\0', sizeof(err.message)));
		free(yaml);
		return 0;
	}
	fuzz_assert(r == 0 && p);
	free(yaml); /* the policy must own everything it keeps */

	for (size_t i = 0; i < p->n_creds; i++) {
		const struct policy_credential *c = &p->creds[i];
		fuzz_assert(c->name && c->name[0] && c->source_arg);
		fuzz_assert(policy_credential_find(p, c->name) == c);
		check_placeholder(c->placeholder);
		for (size_t j = 0; j < p->n_creds; j++)
			if (j != i)
				fuzz_assert(!strstr(p->creds[j].placeholder, c->placeholder));
		char derived[512];
		fuzz_assert(policy_derive_placeholder(c->name, derived, sizeof(derived)) > 0);
	}
	for (size_t i = 0; i < p->n_routes; i++)
		check_route(p, &p->routes[i], i);
	exercise_matcher(p);
	fuzz_assert(p->limits.max_headers >= 1 && p->limits.max_headers <= 1000);
	fuzz_assert(p->limits.max_header_bytes >= 1024 && p->limits.max_header_bytes <= 1024 * 1024);
	policy_free(p);
	return 0;
}
