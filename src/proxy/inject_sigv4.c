/* inject: sigv4. The sandbox signs its AWS requests with placeholder keys;
 * a route bound to a credential of kind aws checks that signature's form
 * and key id, then signs the request again with the real key, over exactly
 * the head that goes upstream (docs/proxy.md, "AWS SigV4").
 *
 * Trust: the request head is hostile. The real secret access key is used
 * only to derive the signing key here and never written anywhere; the real
 * key id and session token are written only into the upstream head. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "proxy/inject.h"

#define EMPTY_SHA256    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGNED_LIST_MAX 4096

/* The only header named name, or -1 with *dup set when there are several. */
static int find_once(const struct http_head *req, const char *name, bool *dup)
{
	int found = -1;
	*dup = false;
	for (unsigned i = 0; i < req->n_headers; i++)
		if (memcaseeq(req->headers[i].name, req->headers[i].name_len, name)) {
			if (found >= 0)
				*dup = true;
			found = (int)i;
		}
	return *dup ? -1 : found;
}

/* X-Amz-Signature= and friends in the query: a presigned URL (SigV4, or
 * the older AWSAccessKeyId=...&Signature=). */
static bool presigned(const char *q, size_t n)
{
	static const char *const keys[] = { "x-amz-signature=", "x-amz-credential=", "x-amz-algorithm=",
		                            "awsaccesskeyid=", "signature=" };
	size_t pos = 0, len;
	const char *f;
	while (q && field_next(q, n, &pos, '&', &f, &len))
		for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
			size_t kl = strlen(keys[k]);
			if (len >= kl && strncasecmp(f, keys[k], kl) == 0)
				return true;
		}
	return false;
}

static bool has_body(const struct http_head *req)
{
	return req->chunked || (req->has_content_length && req->content_length > 0);
}

bool inject_sigv4_needs_body_hash(const struct http_head *req)
{
	bool dup;
	return has_body(req) && find_once(req, "x-amz-content-sha256", &dup) < 0 && !dup;
}

/* The request's payload hash line: x-amz-content-sha256, else the hash of
 * the body keyward read (body_hash: NULL while it has not), or of an empty
 * body. */
static int payload_hash(const struct http_head *req, const char *body_hash, const char **v, size_t *n,
                        enum sigv4_payload *kind, const char **why)
{
	bool dup;
	int i = find_once(req, "x-amz-content-sha256", &dup);
	if (dup) {
		*why = "more than one x-amz-content-sha256 header";
		return -EINVAL;
	}
	if (i < 0) {
		if (has_body(req) && (req->chunked || req->content_length > INJECT_SIGV4_HASH_MAX)) {
			*why = "a SigV4 request with a chunked body or one over 1 MiB must send x-amz-content-sha256 "
			       "(keyward hashes a body only when it can hold it whole)";
			return -EINVAL;
		}
		*v = has_body(req) ? body_hash : EMPTY_SHA256;
		*n = *v ? SIGV4_SIG_HEX : 0; /* NULL: the caller checks that it knows the body's hash */
		*kind = SIGV4_PAYLOAD_HASH;
		return 0;
	}
	*v = req->headers[i].value;
	*n = req->headers[i].value_len;
	return sigv4_payload_kind(*v, *n, kind, why);
}

static int parse_auth(const struct http_head *req, struct sigv4_auth *a, const char **why)
{
	bool dup;
	int i = find_once(req, "authorization", &dup);
	if (i < 0) {
		*why = dup ? "more than one Authorization header"
		           : "request is not signed with AWS Signature Version 4 (no Authorization header); routes of "
		             "an aws credential take only SigV4-signed requests";
		return -EPERM;
	}
	return sigv4_parse_authorization(req->headers[i].value, req->headers[i].value_len, a, why);
}

static int amz_date(const struct http_head *req, const struct sigv4_auth *a, const char **v, const char **why)
{
	bool dup;
	int i = find_once(req, "x-amz-date", &dup);
	if (i < 0) {
		*why = dup ? "more than one x-amz-date header" : "SigV4 request without x-amz-date";
		return -EINVAL;
	}
	const struct http_header *h = &req->headers[i];
	if (!sigv4_valid_amz_date(h->value, h->value_len)) {
		*why = "x-amz-date is not YYYYMMDDTHHMMSSZ";
		return -EINVAL;
	}
	if (memcmp(h->value, a->date, 8) != 0) {
		*why = "x-amz-date is not on the date of the signature's Credential= scope";
		return -EINVAL;
	}
	*v = h->value;
	return 0;
}

int inject_sigv4_check(const struct outbound *o, const char **why)
{
	const struct http_head *req = o->req;
	const struct policy_credential *cred = o->route->credential;
	const struct policy_credential *kid = cred ? cred->parts[AWS_ACCESS_KEY_ID] : NULL;
	struct sigv4_auth a;
	const char *v;
	size_t n;
	enum sigv4_payload kind;

	if (!kid) {
		*why = "route is not bound to an aws credential";
		return -EINVAL;
	}
	if (presigned(o->query, o->query_len)) {
		*why = "presigned URLs (a signature in the query) are not supported: sign the request's headers";
		return -EPROTONOSUPPORT;
	}
	int r = parse_auth(req, &a, why);
	if (r < 0)
		return r;
	if (a.key_id_len != strlen(kid->placeholder) || memcmp(a.key_id, kid->placeholder, a.key_id_len) != 0) {
		*why = "request is signed with an access key id other than the sandbox's placeholder "
		       "(AWS_ACCESS_KEY_ID)";
		return -EPERM;
	}
	r = amz_date(req, &a, &v, why);
	if (r == 0)
		r = payload_hash(req, EMPTY_SHA256, &v, &n, &kind, why); /* any hash: the form is checked */
	return r;
}

/* One header of the upstream head, by offsets into it (the buffer may move
 * while it grows). */
struct emitted {
	size_t name, name_len, value, value_len;
};

static int put_header(struct buf *out, struct emitted *e, const char *name, size_t nl, const char *value, size_t vl)
{
	e->name = out->len;
	e->name_len = nl;
	e->value = out->len + nl + 2;
	e->value_len = vl;
	return inject_put_header(out, name, nl, value, vl);
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	return c ? c : (al > bl) - (al < bl);
}

/* The client's SignedHeaders with x-amz-security-token there exactly when
 * a real session token is sent. */
static int signed_list(const struct sigv4_auth *a, bool token, struct buf *out)
{
	static const char tk[] = "x-amz-security-token";
	const char *name;
	size_t pos = 0, nl;
	bool placed = !token;
	int r = 0;
	while (r == 0 && field_next(a->signed_headers, a->signed_headers_len, &pos, ';', &name, &nl)) {
		if (nl == sizeof(tk) - 1 && memcmp(name, tk, nl) == 0)
			continue;
		if (!placed && name_cmp(tk, sizeof(tk) - 1, name, nl) < 0) {
			r = buf_printf(out, "%s%s", out->len ? ";" : "", tk);
			placed = true;
		}
		if (r == 0)
			r = buf_printf(out, "%s%.*s", out->len ? ";" : "", (int)nl, name);
	}
	if (r == 0 && !placed)
		r = buf_printf(out, "%s%s", out->len ? ";" : "", tk);
	return r;
}

static bool key_id_fits(const struct secret *s)
{
	for (size_t i = 0; i < s->len; i++)
		if (s->data[i] <= ' ' || s->data[i] > '~' || s->data[i] == ',' || s->data[i] == '/')
			return false;
	return s->len > 0 && s->len <= SIGV4_KEY_ID_MAX;
}

/* Signs the head in out (all but Authorization and the blank line) and
 * appends both. */
static int sign_head(const struct outbound *o, struct buf *out, const struct emitted *em, size_t n_em,
                     const struct sigv4_auth *a, const char *amz_date, size_t query_at, size_t query_len,
                     const char **why)
{
	const struct secret *kid = o->parts[AWS_ACCESS_KEY_ID], *sk = o->parts[AWS_SECRET_ACCESS_KEY];
	const struct secret *tok = o->parts[AWS_SESSION_TOKEN];
	struct sigv4_header *hs = calloc(n_em ? n_em : 1, sizeof(*hs));
	struct buf sh, creq, sts;
	const char *ph = NULL;
	size_t phl = 0;
	enum sigv4_payload kind;
	char scope[SIGV4_SCOPE_MAX], date[17], sig[SIGV4_SIG_HEX + 1];
	uint8_t key[32];
	int r;

	if (!hs)
		return -ENOMEM;
	buf_init(&sh, SIGNED_LIST_MAX);
	buf_init(&creq, out->max + SIGNED_LIST_MAX);
	buf_init(&sts, 1024);
	for (size_t i = 0; i < n_em; i++)
		hs[i] = (struct sigv4_header){ out->data + em[i].name, em[i].name_len, out->data + em[i].value,
			                       em[i].value_len };
	r = payload_hash(o->req, o->body_hash, &ph, &phl, &kind, why);
	if (r == 0)
		r = signed_list(a, tok != NULL, &sh);
	if (r == 0) {
		struct sigv4_request rq = {
			.method = o->req->method,
			.method_len = o->req->method_len,
			.path = o->path,
			.path_len = o->path_len,
			.query = query_len ? out->data + query_at : NULL,
			.query_len = query_len,
			.headers = hs,
			.n_headers = n_em,
			.signed_headers = sh.data,
			.signed_headers_len = sh.len,
			.payload_hash = ph,
			.payload_hash_len = phl,
			.s3 = streq(a->service, "s3"),
		};
		r = sigv4_canonical_request(&rq, &creq, why);
	}
	memcpy(date, amz_date, 16);
	date[16] = 0;
	sigv4_scope(a->date, a->region, a->service, scope);
	if (r == 0)
		r = sigv4_string_to_sign(date, scope, creq.data, creq.len, &sts);
	if (r == 0)
		r = sigv4_signing_key(sk->data, sk->len, a->date, a->region, a->service, key);
	if (r == 0) {
		sigv4_sign(key, sts.data, sts.len, sig);
		r = buf_puts(out, "Authorization: " SIGV4_ALGORITHM " Credential=");
		if (r == 0)
			r = buf_append(out, kid->data, kid->len);
		if (r == 0)
			r = buf_printf(out, "/%s, SignedHeaders=%s, Signature=%s\r\n\r\n", scope, sh.data, sig);
		if (r == 0 && kind == SIGV4_PAYLOAD_STREAMING && o->stream) {
			r = sigv4_chunked_init(&o->stream->chunked, key, date, scope, sig);
			o->stream->started = r == 0;
		}
		OPENSSL_cleanse(key, sizeof(key));
	}
	free(hs);
	buf_free(&sh);
	buf_free(&creq);
	buf_free(&sts);
	return r;
}

int inject_sigv4_head(const struct outbound *o, struct buf *out, const char **why)
{
	const struct http_head *req = o->req;
	const struct secret *kid = o->parts[AWS_ACCESS_KEY_ID], *tok = o->parts[AWS_SESSION_TOKEN];
	struct sigv4_auth a;
	const char *date, *v;
	size_t n, query_at = 0, query_len = 0, n_em = 0;
	enum sigv4_payload kind;
	int r;

	/* checked before the request was allowed; checked again here, since
	 * the head is built from these very fields */
	if (inject_sigv4_check(o, why) < 0 || parse_auth(req, &a, why) < 0 || amz_date(req, &a, &date, why) < 0 ||
	    payload_hash(req, o->body_hash, &v, &n, &kind, why) < 0)
		return -EINVAL;
	if (!v) {
		*why = "the body's hash is not known";
		return -EINVAL;
	}
	if (!kid || !o->parts[AWS_SECRET_ACCESS_KEY]) {
		*why = "the aws credential is not available";
		return -EINVAL;
	}
	if (!key_id_fits(kid)) {
		*why = "the credential's access_key_id cannot be sent in a SigV4 Credential= field";
		return -EINVAL;
	}
	/* the client's headers, and Host, Accept-Encoding, the framing and the token */
	struct emitted *em = calloc(req->n_headers + 4, sizeof(*em));
	if (!em)
		return -ENOMEM;

	r = inject_put_method_path(out, o);
	if (r == 0 && o->query) {
		r = buf_append(out, "?", 1);
		query_at = out->len;
		query_len = o->query_len;
		if (r == 0)
			r = buf_append(out, o->query, o->query_len);
	}
	if (r == 0)
		r = buf_puts(out, " HTTP/1.1\r\n");
	if (r == 0) {
		size_t at = out->len;
		r = inject_put_host(out, o);
		em[n_em++] = (struct emitted){ at, 4, at + 6, out->len - at - 8 }; /* "Host: " ... "\r\n" */
	}
	for (unsigned i = 0; r == 0 && i < req->n_headers; i++) {
		const struct http_header *h = &req->headers[i];
		if (inject_header_is_hop(h->name, h->name_len) || http_connection_names(req, h->name, h->name_len) ||
		    memcaseeq(h->name, h->name_len, "authorization") ||
		    memcaseeq(h->name, h->name_len, "x-amz-security-token") ||
		    memcaseeq(h->name, h->name_len, "accept-encoding"))
			continue;
		r = put_header(out, &em[n_em++], h->name, h->name_len, h->value, h->value_len);
	}
	/* The response is scanned like any credentialed route's, so it must
	 * come in a coding keyward decodes; the line is in place before the
	 * head is signed, so a client that signed Accept-Encoding gets a
	 * signature over the value sent. */
	if (r == 0) {
		size_t at = out->len;
		r = inject_put_accept_encoding(out, req, o->route);
		em[n_em++] =
		    (struct emitted){ at, 15, at + 17, out->len - at - 19 }; /* "Accept-Encoding: " ... "\r\n" */
	}
	if (r == 0 && req->chunked)
		r = put_header(out, &em[n_em++], "Transfer-Encoding", 17, "chunked", 7);
	else if (r == 0 && req->has_content_length) {
		char cl[24];
		int k = snprintf(cl, sizeof(cl), "%llu", (unsigned long long)req->content_length);
		r = put_header(out, &em[n_em++], "Content-Length", 14, cl, (size_t)k);
	}
	if (r == 0 && tok)
		r = put_header(out, &em[n_em++], "X-Amz-Security-Token", 20, (const char *)tok->data, tok->len);
	if (r == 0)
		r = sign_head(o, out, em, n_em, &a, date, query_at, query_len, why);
	free(em);
	if (r == -ENOBUFS)
		*why = "request head too large after re-signing";
	else if (r == -ENOMEM)
		*why = "out of memory while re-signing";
	else if (r < 0 && !*why)
		*why = "cannot re-sign the request";
	return r;
}
