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
#include "proxy/sigv4.h"
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
	bool scanned;                /* the response is scanned for secrets (conn.c, scans_response) */
	/* INJECT_SIGV4: the real parts of the aws credential, by part index
	 * (AWS_ACCESS_KEY_ID...; the session token may be NULL) and, for a
	 * streaming upload, the body's re-signer that the head starts
	 * (stream->started tells) */
	const struct secret *parts[CRED_MAX_PARTS];
	struct inject_sigv4_stream *stream;
	/* INJECT_SIGV4 without x-amz-content-sha256: hex SHA-256 of the body
	 * (read whole before the head is signed), or NULL */
	const char *body_hash;
};

/* The largest body keyward reads whole to hash it, for a SigV4 request that
 * sends no x-amz-content-sha256 (most AWS APIs but S3). */
#define INJECT_SIGV4_HASH_MAX (1024 * 1024)

/* Whether this SigV4 request needs its body hashed by keyward before the
 * head is signed (no x-amz-content-sha256, a body; inject_sigv4_check
 * has refused those that cannot be). */
bool inject_sigv4_needs_body_hash(const struct http_head *req);

struct inject_sigv4_stream {
	bool started; /* the body is aws-chunked: feed it through chunked */
	struct sigv4_chunked chunked;
};

/* Writes the complete request head for upstream into out. Returns 0,
 * -ENOBUFS if it does not fit, or -EINVAL (reason in *why) if the request
 * cannot be rewritten safely. */
int inject_request_head(const struct outbound *o, struct buf *out, const char **why) WUR;

/* INJECT_SIGV4: whether the request may be re-signed: SigV4 header-signed
 * (AWS4-HMAC-SHA256) with the placeholder access key id of the route's
 * credential, a valid x-amz-date in the credential's scope, a payload mode
 * keyward re-signs, not presigned. Returns 0, or a negative errno with the
 * reason (for the client and the audit record) in *why. Uses o's request,
 * route and query; no secret. */
int inject_sigv4_check(const struct outbound *o, const char **why) WUR;

/* INJECT_SIGV4's inject_request_head (inject_sigv4.c). */
int inject_sigv4_head(const struct outbound *o, struct buf *out, const char **why) WUR;

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

/* Pieces of an upstream head: out reset to "METHOD PATH" (the query and
 * version follow), "NAME: VALUE\r\n", "Host: HOST[:PORT]\r\n" for o's target. */
int inject_put_method_path(struct buf *out, const struct outbound *o) WUR;
int inject_put_header(struct buf *out, const char *name, size_t nl, const char *value, size_t vl) WUR;
int inject_put_host(struct buf *out, const struct outbound *o) WUR;
/* "Accept-Encoding: CODINGS\r\n" for a credentialed route: of the codings
 * req accepts, those keyward can decode to scan the response (gzip,
 * deflate), else identity; identity alone when rt refuses compressed
 * responses. */
int inject_put_accept_encoding(struct buf *out, const struct http_head *req, const struct policy_route *rt) WUR;

/* Whether a header is hop-by-hop (RFC 9110 7.6.1) or otherwise rewritten by
 * the proxy, so never copied as is. */
bool inject_header_is_hop(const char *name, size_t len);
