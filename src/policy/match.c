/* Route matching: which route, if any, allows a request.
 *
 * Trust boundary: the request fields come from the sandbox (host from
 * CONNECT or Host, method, normalised path). The policy is trusted. Every
 * function here is pure and bounded: a glob is run as an NFA, never by
 * recursive backtracking, so a hostile path costs O(glob * path). */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "policy/policy.h"

/* ---- hosts ---- */

/* An IPv6 literal as the proxy may see it: "::1" or "[::1]". */
static bool parse_ipv6(const char *s, size_t n, struct in6_addr *ret)
{
	char tmp[INET6_ADDRSTRLEN + 2];

	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(tmp) || !memchr(s, ':', n))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return inet_pton(AF_INET6, tmp, ret) == 1;
}

bool route_host_matches(const struct policy_route *r, const char *host)
{
	if (!r->host || !host)
		return false;
	size_t hlen = strlen(host);
	/* "example.com." is the same name (absolute form). */
	if (hlen > 0 && host[hlen - 1] == '.')
		hlen--;
	if (hlen == 0)
		return false;

	if (strchr(r->host, ':')) {
		/* IPv6: compare addresses, so "[0::1]" is "::1". */
		struct in6_addr a, b;
		return parse_ipv6(r->host, strlen(r->host), &a) && parse_ipv6(host, hlen, &b) &&
		       memcmp(&a, &b, sizeof(a)) == 0;
	}
	if (!r->wildcard)
		return memcaseeq(host, hlen, r->host);

	/* ".example.com" matches "a.example.com" and "a.b.example.com", never
	 * "example.com" itself nor ".example.com" (an empty label). */
	size_t slen = strlen(r->host);
	if (hlen <= slen || host[hlen - slen - 1] == '.')
		return false;
	return strncasecmp(host + hlen - slen, r->host, slen) == 0;
}

/* ---- globs ---- */

enum glob_op { G_CHAR, G_STAR, G_DSTAR };

struct glob_tok {
	enum glob_op op;
	char c;
	/* A G_CHAR '/' followed by a "**" segment and another '/' may also
	 * match a lone '/': the glob /a/STARSTAR/b matches "/a/b". */
	bool skip_dstar;
};

/* Token lists up to this size live on the stack; longer globs (the loader
 * caps them well below) fall back to the heap. */
#define GLOB_STACK_TOKENS 256

static size_t glob_tokenize(const char *glob, size_t n, struct glob_tok *t)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (glob[i] == '*' && i + 1 < n && glob[i + 1] == '*') {
			t[k++] = (struct glob_tok){ .op = G_DSTAR };
			i++;
		} else if (glob[i] == '*') {
			t[k++] = (struct glob_tok){ .op = G_STAR };
		} else {
			bool skip = glob[i] == '/' && n - i >= 4 && memcmp(glob + i, "/**/", 4) == 0;
			t[k++] = (struct glob_tok){ .op = G_CHAR, .c = glob[i], .skip_dstar = skip };
		}
	}
	return k;
}

/* Adds state i and everything reachable from it without input: a star
 * may match nothing. */
static void glob_close(const struct glob_tok *t, size_t n, unsigned char *set, size_t i)
{
	while (i <= n && !set[i]) {
		set[i] = 1;
		if (i == n || t[i].op == G_CHAR)
			return;
		i++;
	}
}

/* Thompson simulation: one pass over the path, one bit per glob position. */
static bool glob_run(const struct glob_tok *t, size_t n, const char *path, unsigned char *cur, unsigned char *next)
{
	memset(cur, 0, n + 1);
	glob_close(t, n, cur, 0);
	for (const char *p = path; *p; p++) {
		bool any = false;
		memset(next, 0, n + 1);
		for (size_t i = 0; i < n; i++) {
			if (!cur[i])
				continue;
			switch (t[i].op) {
			case G_CHAR:
				if (t[i].c == *p) {
					glob_close(t, n, next, i + 1);
					if (t[i].skip_dstar)
						glob_close(t, n, next, i + 3);
					any = true;
				}
				break;
			case G_STAR:
				if (*p != '/') {
					glob_close(t, n, next, i);
					any = true;
				}
				break;
			case G_DSTAR:
				glob_close(t, n, next, i);
				any = true;
				break;
			}
		}
		if (!any)
			return false;
		unsigned char *swap = cur;
		cur = next;
		next = swap;
	}
	return cur[n];
}

static bool glob_match_n(const char *glob, size_t glen, const char *path)
{
	struct glob_tok stack_toks[GLOB_STACK_TOKENS];
	unsigned char stack_sets[2 * (GLOB_STACK_TOKENS + 1)];
	struct glob_tok *toks = stack_toks;
	unsigned char *sets = stack_sets;
	bool ok = false;

	if (glen > GLOB_STACK_TOKENS) {
		toks = calloc(glen, sizeof(*toks));
		sets = calloc(2, glen + 1);
		if (!toks || !sets)
			goto out; /* fail closed */
	}
	size_t n = glob_tokenize(glob, glen, toks);
	ok = glob_run(toks, n, path, sets, sets + n + 1);
out:
	if (toks != stack_toks)
		free(toks);
	if (sets != stack_sets)
		free(sets);
	return ok;
}

bool path_glob_match(const char *glob, const char *path)
{
	if (!glob || !path)
		return false;
	size_t glen = strlen(glob);
	/* The two shapes nearly every policy uses, answered as the NFA below
	 * would answer them, without building it for every request (about
	 * 900 instructions): a glob without a star is the path itself, and
	 * PREFIX/STARSTAR with no star in PREFIX is PREFIX itself (the rule
	 * below) or PREFIX/ followed by anything, slashes included. */
	const char *star = memchr(glob, '*', glen);
	if (!star)
		return streq(glob, path);
	if (glen >= 3 && star == glob + glen - 2 && glob[glen - 1] == '*' && glob[glen - 3] == '/')
		return strncmp(path, glob, glen - 2) == 0 ||
		       (strlen(path) == glen - 3 && memcmp(path, glob, glen - 3) == 0);
	if (glob_match_n(glob, glen, path))
		return true;
	/* A trailing slash-STARSTAR names the directory itself too: "/a" is
	 * inside /a/STARSTAR as much as "/a/b" is. */
	if (glen >= 3 && memcmp(glob + glen - 3, "/**", 3) == 0)
		return glob_match_n(glob, glen - 3, path);
	return false;
}

/* ---- routes ---- */

static uint16_t scheme_default_port(enum scheme s)
{
	return s == SCHEME_HTTP ? 80 : 443;
}

static bool route_allows_method(const struct policy_route *r, const char *method)
{
	if (!r->methods)
		return true;
	if (!method)
		return false;
	for (char **m = r->methods; *m; m++)
		if (streq(*m, method))
			return true;
	return false;
}

static bool route_allows_path(const struct policy_route *r, const char *path)
{
	if (!r->paths)
		return true;
	if (!path)
		return false;
	for (char **g = r->paths; *g; g++)
		if (path_glob_match(*g, path))
			return true;
	return false;
}

/* How far a request gets through one route. The host is the route's
 * identity, so it is checked first; then the scheme, so that plain http to
 * an https-only host says "scheme" rather than "port 80". The result only
 * orders failures: a route allows a request only if every check passes. */
enum match_depth { D_NONE, D_HOST, D_SCHEME, D_PORT, D_METHOD, D_ALL };

static enum match_depth route_depth(const struct policy_route *r, enum scheme scheme, const char *host, uint16_t port,
                                    const char *method, const char *path, bool host_only)
{
	if (!route_host_matches(r, host))
		return D_NONE;
	if (r->scheme != scheme)
		return D_HOST;
	if ((r->port ? r->port : scheme_default_port(r->scheme)) != port)
		return D_SCHEME;
	if (host_only)
		return D_ALL;
	if (!route_allows_method(r, method))
		return D_PORT;
	if (!route_allows_path(r, path))
		return D_METHOD;
	return D_ALL;
}

static enum match_fail depth_fail(enum match_depth d)
{
	static const enum match_fail fail[] = {
		[D_NONE] = MATCH_HOST,   [D_HOST] = MATCH_SCHEME, [D_SCHEME] = MATCH_PORT,
		[D_PORT] = MATCH_METHOD, [D_METHOD] = MATCH_PATH, [D_ALL] = MATCH_OK,
	};
	return fail[d];
}

/* The first route that passes; else the first of those that got furthest. */
static enum match_fail match_routes(const struct policy *p, enum scheme scheme, const char *host, uint16_t port,
                                    const char *method, const char *path, bool host_only,
                                    const struct policy_route **ret_route)
{
	const struct policy_route *best = NULL;
	enum match_depth best_depth = D_NONE;

	for (size_t i = 0; p && i < p->n_routes; i++) {
		const struct policy_route *r = &p->routes[i];
		enum match_depth d = route_depth(r, scheme, host, port, method, path, host_only);
		if (d > best_depth) {
			best = r;
			best_depth = d;
			if (d == D_ALL)
				break;
		}
	}
	*ret_route = best;
	return depth_fail(best_depth);
}

void policy_match(const struct policy *p, const struct match_request *req, struct match_result *ret)
{
	const struct policy_route *route;
	enum match_fail fail =
	    match_routes(p, req->scheme, req->host, req->port, req->method, req->path, false, &route);
	*ret = (struct match_result){ .fail = fail, .route = route };
}

enum match_fail policy_match_host(const struct policy *p, enum scheme scheme, const char *host, uint16_t port,
                                  const struct policy_route **closest)
{
	const struct policy_route *route;
	enum match_fail fail = match_routes(p, scheme, host, port, NULL, NULL, true, &route);
	if (closest)
		*closest = route;
	return fail;
}

const char *match_fail_name(enum match_fail f)
{
	switch (f) {
	case MATCH_OK:
		return "ok";
	case MATCH_HOST:
		return "host";
	case MATCH_PORT:
		return "port";
	case MATCH_SCHEME:
		return "scheme";
	case MATCH_METHOD:
		return "method";
	case MATCH_PATH:
		return "path";
	}
	return "unknown";
}
