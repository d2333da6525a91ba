/* Glob matching and route selection against a second, naive implementation
 * written from docs/policy.md (src/policy/match.c: path_glob_match,
 * policy_match, route_host_matches).
 *
 * fuzz_path only checks properties any matcher has ("/" + "**" matches
 * everything, a glob without '*' is literal); this harness checks the
 * answer itself. The reference is a memoised recursive matcher over the
 * glob text, so it shares no code or structure with the automaton:
 *  - '*' matches any run of characters except '/';
 *  - '**' matches any run of characters including '/';
 *  - a glob ending in "/" + "**" also matches the directory itself;
 *  - "/" + "**" + "/" in the middle also matches a lone '/';
 *  - everything else is literal and case-sensitive.
 *
 * Input: lines. Line 1 is the request path; line 2 is a byte that picks
 * the method, then the request host. Every further line is a glob,
 * given to route (line number mod 3). The three routes are written as a
 * YAML policy (exact host, wildcard host with methods [GET], exact host
 * on another port), and when the loader accepts it, policy_match on the
 * normalised path must agree with the reference: the first route whose
 * host, port, method and some glob match; otherwise the failure of the
 * first route that got furthest. */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "policy/path.h"
#include "policy/policy.h"

#define MAX_SIDE  200 /* glob and path lengths the reference is asked about */
#define N_ROUTES  3
#define MAX_GLOBS 8 /* per route */

struct ref {
	const char *g, *p;
	size_t gn, pn;
	signed char memo[MAX_SIDE + 1][MAX_SIDE + 1]; /* -1 unknown, 0, 1 */
};

static bool ref_at(struct ref *r, size_t gi, size_t pi)
{
	if (r->memo[gi][pi] >= 0)
		return r->memo[gi][pi];
	bool m = false;
	if (gi == r->gn) {
		m = pi == r->pn;
	} else if (r->g[gi] == '*' && gi + 1 < r->gn && r->g[gi + 1] == '*') {
		for (size_t k = pi; k <= r->pn && !m; k++)
			m = ref_at(r, gi + 2, k);
	} else if (r->g[gi] == '*') {
		for (size_t k = pi; k <= r->pn && !m; k++) {
			m = ref_at(r, gi + 1, k);
			if (k < r->pn && r->p[k] == '/')
				break;
		}
	} else {
		m = pi < r->pn && r->p[pi] == r->g[gi] && ref_at(r, gi + 1, pi + 1);
		/* "/" "**" "/": the two slashes and what is between may be one '/'. */
		if (!m && r->gn - gi >= 4 && memcmp(r->g + gi, "/**/", 4) == 0)
			m = pi < r->pn && r->p[pi] == '/' && ref_at(r, gi + 4, pi + 1);
	}
	r->memo[gi][pi] = m;
	return m;
}

static bool ref_match_n(struct ref *r, const char *g, size_t gn, const char *p)
{
	r->g = g;
	r->gn = gn;
	r->p = p;
	r->pn = strlen(p);
	memset(r->memo, -1, sizeof(r->memo));
	return ref_at(r, 0, 0);
}

static bool ref_glob(struct ref *r, const char *g, const char *p)
{
	size_t gn = strlen(g);
	if (ref_match_n(r, g, gn, p))
		return true;
	return gn >= 3 && memcmp(g + gn - 3, "/**", 3) == 0 && ref_match_n(r, g, gn - 3, p);
}

/* Host names as docs/policy.md describes them: exact, case-insensitive,
 * a trailing dot ignored; "*.api.test" is any name under api.test with a
 * non-empty label before it. */
static bool ref_host(const char *pattern, bool wildcard, const char *host)
{
	size_t hn = strlen(host);
	if (hn && host[hn - 1] == '.')
		hn--;
	if (!wildcard)
		return hn == strlen(pattern) && strncasecmp(host, pattern, hn) == 0;
	const char *suffix = ".api.test";
	size_t sn = strlen(suffix);
	if (hn <= sn || strncasecmp(host + hn - sn, suffix, sn) != 0)
		return false;
	/* the label right before the suffix must not be empty */
	return host[hn - sn - 1] != '.';
}

struct line {
	const char *s;
	size_t n;
};

/* A YAML double-quoted scalar; the loader refuses what no path can
 * contain, so control bytes only need to survive the quoting. */
static size_t put_quoted(char *out, const char *s, size_t n)
{
	size_t k = 0;
	out[k++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[k++] = '\\';
			out[k++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			k += (size_t)snprintf(out + k, 5, "\\x%02x", c);
		} else {
			out[k++] = (char)c;
		}
	}
	out[k++] = '"';
	return k;
}

static void check_globs(struct ref *r, const char *glob, const char *path)
{
	bool got = path_glob_match(glob, path);
	bool want = ref_glob(r, glob, path);
	if (got != want) {
		fprintf(stderr, "glob \"%s\" path \"%s\": matcher %d, reference %d\n", glob, path, got, want);
		fuzz_assert(!"path_glob_match disagrees with the reference");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ref ref; /* 40 KB of memo: not on the stack */
	struct line lines[2 + N_ROUTES * MAX_GLOBS];
	size_t n_lines = 0;
	const char *in = (const char *)data;
	size_t start = 0;
	for (size_t i = 0; i <= size && n_lines < ARRAY_SIZE(lines); i++) {
		if (i == size || in[i] == '\n') {
			lines[n_lines++] = (struct line){ in + start, i - start };
			start = i + 1;
		}
	}
	if (n_lines < 2 || lines[0].n > MAX_SIDE || lines[1].n < 1 || lines[1].n > 64)
		return 0;
	for (size_t i = 2; i < n_lines; i++)
		if (lines[i].n > MAX_SIDE || memchr(lines[i].s, '\0', lines[i].n))
			return 0;

	/* Raw path and glob, as path_glob_match takes any strings. */
	char *raw = fuzz_strndup(lines[0].s, strnlen(lines[0].s, lines[0].n));
	for (size_t i = 2; i < n_lines; i++) {
		char *g = fuzz_strndup(lines[i].s, lines[i].n);
		check_globs(&ref, g, raw);
		free(g);
	}

	/* The policy: three routes, the globs of each. */
	char *norm = fuzz_alloc_exact(strlen(raw) + 1);
	unsigned flags = 0;
	if (path_normalize(raw, strlen(raw), norm, strlen(raw) + 1, &flags) < 0)
		goto out;
	static const char *const route_head[N_ROUTES] = {
		"  - host: api.test\n    port: 443\n",
		"  - host: \"*.api.test\"\n    port: 443\n    methods: [GET]\n",
		"  - host: api.test\n    port: 8443\n",
	};
	size_t cap = 256 + N_ROUTES * 64 + (n_lines * (MAX_SIDE * 4 + 8));
	char *yaml = fuzz_alloc_exact(cap);
	size_t k = (size_t)snprintf(yaml, cap, "version: 1\nroutes:\n");
	for (size_t rt = 0; rt < N_ROUTES; rt++) {
		k += (size_t)snprintf(yaml + k, cap - k, "%s    paths: [", route_head[rt]);
		bool first = true;
		for (size_t i = 2; i < n_lines; i++) {
			if (i % N_ROUTES != rt)
				continue;
			if (!first)
				yaml[k++] = ',';
			k += put_quoted(yaml + k, lines[i].s, lines[i].n);
			first = false;
		}
		if (first) /* no glob for this route: every path */
			k += (size_t)snprintf(yaml + k, cap - k, "\"/**\"");
		k += (size_t)snprintf(yaml + k, cap - k, "]\n");
	}
	fuzz_assert(k < cap);
	struct policy *p = NULL;
	struct policy_error err;
	if (policy_load_string("match.yaml", yaml, k, &p, &err) < 0) {
		free(yaml);
		goto out;
	}
	free(yaml);
	fuzz_assert(p->n_routes == N_ROUTES);

	char *host = fuzz_strndup(lines[1].s + 1, strnlen(lines[1].s + 1, lines[1].n - 1));
	static const char *const methods[] = { "GET", "POST", "DELETE", "get" };
	const char *method = methods[(unsigned char)lines[1].s[0] % 4];
	static const uint16_t ports[] = { 443, 8443, 80 };
	for (size_t pi = 0; pi < ARRAY_SIZE(ports); pi++) {
		/* The reference decision, as far as a route gets: 0 not even the
		 * host, 2 host and scheme (always https here) but not the port,
		 * 3 the port but not the method, 4 the method but no glob, 5 all. */
		int best = 0;
		size_t best_route = 0;
		for (size_t rt = 0; rt < N_ROUTES; rt++) {
			const struct policy_route *r = &p->routes[rt];
			int d = 0;
			if (ref_host(rt == 1 ? "" : "api.test", rt == 1, host)) {
				d = 2;
				if (ports[pi] == (rt == 2 ? 8443 : 443)) {
					d = 3;
					if (rt != 1 || strcmp(method, "GET") == 0) {
						d = 4;
						for (char **g = r->paths; *g && d == 4; g++) {
							check_globs(&ref, *g, norm);
							if (ref_glob(&ref, *g, norm))
								d = 5;
						}
					}
				}
			}
			if (d > best) {
				best = d;
				best_route = rt;
				if (d == 5)
					break;
			}
		}
		static const enum match_fail want_fail[] = { MATCH_HOST,   MATCH_SCHEME, MATCH_PORT,
			                                     MATCH_METHOD, MATCH_PATH,   MATCH_OK };
		struct match_request mr = {
			.scheme = SCHEME_HTTPS, .host = host, .port = ports[pi], .method = method, .path = norm
		};
		struct match_result res;
		policy_match(p, &mr, &res);
		bool ok = res.fail == want_fail[best] &&
		          (best == 0 ? res.route == NULL : res.route == &p->routes[best_route]);
		if (!ok) {
			fprintf(stderr,
			        "host \"%s\" port %u %s %s: policy_match %s route %td, reference depth %d route %zu\n",
			        host, ports[pi], method, norm, match_fail_name(res.fail),
			        res.route ? res.route - p->routes : -1, best, best_route);
			fuzz_assert(!"policy_match disagrees with the reference");
		}
	}
	free(host);
	policy_free(p);
out:
	free(norm);
	free(raw);
	return 0;
}
