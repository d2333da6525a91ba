/* Rewriting a request on its way upstream: hop-by-hop headers removed, the
 * client's own credential removed and the real one set, placeholders
 * swapped for the secret. And the leak check: a placeholder on its way to
 * a destination that is not bound to its credential.
 *
 * Trust: the head comes from the sandbox and may contain anything; the
 * route and secret come from the policy and the secret source. The only
 * output that ever holds a secret is the head buffer handed to the upstream
 * connection. */
#pragma once

#include "common/buf.h"
#include "common/secret.h"
#include "policy/policy.h"
#include "proxy/http1.h"
#include "proxy/redact.h"

struct outbound {
	const struct http_head *req;
	const char *path; /* normalised path */
	size_t path_len;
	const char *query; /* raw query without '?', or NULL */
	size_t query_len;
	const char *host; /* for the Host header */
	uint16_t port;
	enum scheme scheme;
	const struct policy_route *route;
	const struct secret *secret; /* NULL when the route has no credential */
	bool upgrade;                /* relay Upgrade/Connection: upgrade */
};

/* Writes the complete request head for upstream into out. Returns 0,
 * -ENOBUFS if it does not fit, or -EINVAL (reason in *why) if the request
 * cannot be rewritten safely. */
int inject_request_head(const struct outbound *o, struct buf *out, const char **why) WUR;

/* Adds to set the exact Basic credentials inject_request_head sends for o
 * (the route's own, and the client's with its placeholder swapped), each
 * mapped back to what the sandbox may see. Nothing on a route without a
 * credential. Returns 0 or a negative errno. */
int inject_redact_forms(const struct outbound *o, struct redact_set *set) WUR;

/* Looks for any credential's placeholder in the request's header names and
 * values (Basic credentials decoded), the request target (raw and
 * percent-decoded, malformed escapes passed through), and in host and path
 * (the target host and the normalised path, either may be NULL). Returns
 * the first credential found other than `allowed`, or NULL; *where names
 * where it was seen. */
const struct policy_credential *inject_find_leak(const struct policy *p, const struct http_head *req, const char *host,
                                                 const char *path, const struct policy_credential *allowed,
                                                 const char **where);

/* Whether a header is hop-by-hop (RFC 9110 7.6.1) or otherwise rewritten by
 * the proxy, so never copied as is. */
bool inject_header_is_hop(const char *name, size_t len);
