#include "proxy/inject.h"

#include <errno.h>
#include <stdint.h>

#include <openssl/crypto.h>

#include "common/encode.h"

#define SCRATCH_MAX (64 * 1024)

bool inject_header_is_hop(const char *name, size_t len)
{
	static const char *const hop[] = {
		"connection",
		"keep-alive",
		"proxy-connection",
		"proxy-authorization",
		"proxy-authenticate",
		"te",
		"trailer",
		"transfer-encoding",
		"upgrade",
		"host",
		"content-length",
	};
	for (size_t i = 0; i < ARRAY_SIZE(hop); i++)
		if (memcaseeq(name, len, hop[i]))
			return true;
	return false;
}

/* Appends s with every occurrence of needle replaced by rep. Returns the
 * number of replacements or a negative errno. */
static int replace_all(struct buf *out, const char *s, size_t n, const char *needle, size_t nl, const char *rep,
                       size_t rl)
{
	int count = 0;
	size_t i = 0;
	while (i < n) {
		long k = mem_find(s + i, n - i, needle, nl);
		if (k < 0)
			break;
		int r = buf_append(out, s + i, (size_t)k);
		if (r == 0)
			r = buf_append(out, rep, rl);
		if (r < 0)
			return r;
		i += (size_t)k + nl;
		count++;
	}
	int r = buf_append(out, s + i, n - i);
	return r < 0 ? r : count;
}

/* Wipes a scratch buffer that held a secret, and frees it. */
static void wipe_free(struct buf *b)
{
	if (b->data)
		OPENSSL_cleanse(b->data, b->cap);
	buf_free(b);
}

int inject_put_method_path(struct buf *out, const struct outbound *o)
{
	buf_reset(out);
	int r = buf_append(out, o->req->method, o->req->method_len);
	if (r == 0)
		r = buf_append(out, " ", 1);
	if (r == 0)
		r = buf_append(out, o->path, o->path_len);
	return r;
}

int inject_put_host(struct buf *out, const struct outbound *o)
{
	size_t hl = strlen(o->host);
	bool v6 = memchr(o->host, ':', hl) != NULL;
	bool port = o->port != (o->scheme == SCHEME_HTTPS ? 443 : 80);
	char *at;
	int r = buf_space(out, sizeof("Host: []:\r\n") + hl + DEC_MAX, &at);
	if (r < 0)
		return r;
	char *p = mempcpy(at, "Host: [", v6 ? 7 : 6);
	p = mempcpy(p, o->host, hl);
	if (v6)
		*p++ = ']';
	if (port) {
		*p++ = ':';
		p = dec_put(p, o->port);
	}
	*p++ = '\r';
	*p++ = '\n';
	buf_advance(out, (size_t)(p - at));
	return 0;
}

static bool has_placeholder(const char *s, size_t n, const struct policy_credential *c)
{
	return mem_find(s, n, c->placeholder, strlen(c->placeholder)) >= 0;
}

/* Decodes "Basic xxx" credentials into out. Returns 0, or -EINVAL if the
 * value is not Basic or not valid base64. */
static int basic_decode(const char *v, size_t n, struct buf *out)
{
	if (n < 6 || strncasecmp(v, "basic ", 6) != 0)
		return -EINVAL;
	v += 6;
	n -= 6;
	while (n && (*v == ' ' || *v == '\t'))
		v++, n--;
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	return base64_decode(v, n, out);
}

/* Percent-decodes for searching only: a malformed escape is kept as it is,
 * so one bad escape cannot hide the rest of the target. */
static int decode_lenient(const char *in, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		char ch = in[i];
		if (ch == '%') {
			int hi = i + 1 < n ? hex_value(in[i + 1]) : -1;
			int lo = i + 2 < n ? hex_value(in[i + 2]) : -1;
			if (hi >= 0 && lo >= 0) {
				ch = (char)(hi << 4 | lo);
				i += 2;
			}
		}
		int r = buf_append(out, &ch, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

const struct policy_credential *inject_find_leak(const struct policy *p, const struct http_head *req, const char *host,
                                                 const char *path, const struct policy_credential *allowed,
                                                 const char **where)
{
	struct buf tmp;
	const struct policy_credential *found = NULL;

	buf_init(&tmp, SCRATCH_MAX);
	for (size_t ci = 0; ci < p->n_creds && !found; ci++) {
		const struct policy_credential *c = &p->creds[ci];
		if (policy_credential_covers(allowed, c))
			continue;
		if (has_placeholder(req->url, req->url_len, c)) {
			found = c, *where = "request target";
			break;
		}
		buf_reset(&tmp);
		if (decode_lenient(req->url, req->url_len, &tmp) == 0 && has_placeholder(tmp.data, tmp.len, c)) {
			found = c, *where = "request target (percent-encoded)";
			break;
		}
		if (host && has_placeholder(host, strlen(host), c)) {
			found = c, *where = "the host name";
			break;
		}
		if (path && has_placeholder(path, strlen(path), c)) {
			found = c, *where = "the normalised path";
			break;
		}
		for (unsigned i = 0; i < req->n_headers; i++) {
			const struct http_header *h = &req->headers[i];
			if (has_placeholder(h->name, h->name_len, c)) {
				found = c, *where = "a header name";
				break;
			}
			if (has_placeholder(h->value, h->value_len, c)) {
				found = c, *where = "a request header";
				break;
			}
			buf_reset(&tmp);
			if (basic_decode(h->value, h->value_len, &tmp) == 0 && has_placeholder(tmp.data, tmp.len, c)) {
				found = c, *where = "Basic credentials";
				break;
			}
		}
	}
	buf_free(&tmp);
	return found;
}

int inject_put_header(struct buf *out, const char *name, size_t nl, const char *value, size_t vl)
{
	char *at;
	if (nl > SIZE_MAX / 2 || vl > SIZE_MAX / 2)
		return -ENOBUFS;
	int r = buf_space(out, nl + vl + 4, &at);
	if (r < 0)
		return r;
	char *p = mempcpy(at, name, nl);
	*p++ = ':';
	*p++ = ' ';
	p = mempcpy(p, value, vl);
	*p++ = '\r';
	*p++ = '\n';
	buf_advance(out, (size_t)(p - at));
	return 0;
}

/* Copies one client header with the route credential's placeholder swapped
 * for the secret, also inside Basic credentials. */
static int copy_swapped(struct buf *out, const struct http_header *h, const struct policy_credential *c,
                        const struct secret *s)
{
	const char *ph = c->placeholder;
	size_t pl = strlen(ph);
	struct buf dec, val;
	int r;

	if (!has_placeholder(h->value, h->value_len, c)) {
		buf_init(&dec, SCRATCH_MAX);
		r = basic_decode(h->value, h->value_len, &dec);
		if (r < 0 || !has_placeholder(dec.data, dec.len, c)) {
			buf_free(&dec);
			return inject_put_header(out, h->name, h->name_len, h->value, h->value_len);
		}
		/* Basic credentials: decode, swap, encode again. */
		buf_init(&val, SCRATCH_MAX);
		r = buf_puts(&val, "Basic ");
		struct buf plain;
		buf_init(&plain, SCRATCH_MAX);
		if (r == 0)
			r = replace_all(&plain, dec.data, dec.len, ph, pl, (const char *)s->data, s->len);
		if (r >= 0)
			r = base64_encode(plain.data, plain.len, &val);
		if (r >= 0)
			r = inject_put_header(out, h->name, h->name_len, val.data, val.len);
		wipe_free(&plain);
		wipe_free(&val);
		buf_free(&dec);
		return r < 0 ? r : 0;
	}
	buf_init(&val, SCRATCH_MAX);
	r = replace_all(&val, h->value, h->value_len, ph, pl, (const char *)s->data, s->len);
	if (r >= 0)
		r = inject_put_header(out, h->name, h->name_len, val.data, val.len);
	if (val.data)
		OPENSSL_cleanse(val.data, val.cap);
	buf_free(&val);
	return r < 0 ? r : 0;
}

/* Whether a query parameter's name k[0..kl) is `name` as the upstream
 * reads it: with its percent escapes decoded (`k%65y` is `key`). A
 * malformed escape matches nothing. */
static bool param_is(const char *k, size_t kl, const char *name)
{
	size_t j = 0;
	for (size_t i = 0; i < kl; i++, j++) {
		char ch = k[i];
		if (ch == '%') {
			int hi = i + 2 < kl ? hex_value(k[i + 1]) : -1, lo = i + 2 < kl ? hex_value(k[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return false;
			ch = (char)(hi << 4 | lo);
			i += 2;
		}
		if (name[j] == '\0' || name[j] != ch)
			return false;
	}
	return name[j] == '\0';
}

/* The query with the route's credential applied: swapped placeholders,
 * and for INJECT_QUERY the client's own parameter replaced (in whatever
 * spelling: param_is). */
static int build_query(struct buf *out, const struct outbound *o, bool *any)
{
	const struct policy_route *rt = o->route;
	const struct policy_credential *c = rt->credential;
	const char *q = o->query;
	size_t n = o->query_len, i = 0;
	struct buf enc;
	int r = 0;

	*any = false;
	buf_init(&enc, SCRATCH_MAX);
	if (c && o->secret)
		r = percent_encode((const char *)o->secret->data, o->secret->len, &enc);
	while (r >= 0 && q && i <= n) {
		size_t s = i;
		while (i < n && q[i] != '&')
			i++;
		const char *comp = q + s;
		size_t cl = i - s;
		i++;
		if (cl == 0)
			continue;
		size_t kl = 0;
		while (kl < cl && comp[kl] != '=')
			kl++;
		if (rt->inject == INJECT_QUERY && param_is(comp, kl, rt->inject_query))
			continue; /* the client's own value is dropped */
		if (*any)
			r = buf_append(out, "&", 1);
		*any = true;
		if (r < 0)
			break;
		if (c && o->secret && has_placeholder(comp, cl, c)) {
			r = replace_all(out, comp, cl, c->placeholder, strlen(c->placeholder), enc.data, enc.len);
		} else {
			r = buf_append(out, comp, cl);
		}
	}
	if (r >= 0 && rt->inject == INJECT_QUERY && o->secret) {
		if (*any)
			r = buf_append(out, "&", 1);
		if (r >= 0)
			r = percent_encode(rt->inject_query, strlen(rt->inject_query), out);
		if (r >= 0)
			r = buf_append(out, "=", 1);
		if (r >= 0)
			r = buf_append(out, enc.data, enc.len);
		*any = true;
	}
	if (enc.data)
		OPENSSL_cleanse(enc.data, enc.cap);
	buf_free(&enc);
	return r < 0 ? r : 0;
}

/* The user name of the Basic credentials keyward sends on route rt: the
 * route's, else the one the client sent (decoded into dec), else NULL. */
static const char *basic_user(const struct policy_route *rt, const struct http_head *req, struct buf *dec,
                              size_t *ret_len)
{
	if (rt->inject_user) {
		*ret_len = strlen(rt->inject_user);
		return rt->inject_user;
	}
	int i = http_head_find(req, "authorization");
	if (i >= 0 && basic_decode(req->headers[i].value, req->headers[i].value_len, dec) == 0) {
		if (dec->len == 0) { /* "Basic " with nothing after it: an empty user */
			*ret_len = 0;
			return "";
		}
		const char *colon = memchr(dec->data, ':', dec->len);
		*ret_len = colon ? (size_t)(colon - dec->data) : dec->len;
		return dec->data;
	}
	*ret_len = 0;
	return NULL;
}

static int put_credential(struct buf *out, const struct outbound *o, const struct http_head *req)
{
	const struct policy_route *rt = o->route;
	const struct secret *s = o->secret;
	struct buf v, plain;
	int r = 0;

	buf_init(&v, SCRATCH_MAX);
	buf_init(&plain, SCRATCH_MAX);
	switch (rt->inject) {
	case INJECT_BEARER:
		r = buf_puts(&v, "Bearer ");
		if (r == 0)
			r = buf_append(&v, s->data, s->len);
		if (r == 0)
			r = inject_put_header(out, "Authorization", 13, v.data, v.len);
		break;
	case INJECT_BASIC: {
		size_t ul;
		struct buf dec;
		buf_init(&dec, SCRATCH_MAX);
		const char *user = basic_user(rt, req, &dec, &ul);
		if (user)
			r = buf_append(&plain, user, ul);
		buf_free(&dec);
		if (r == 0)
			r = buf_append(&plain, ":", 1);
		if (r == 0)
			r = buf_append(&plain, s->data, s->len);
		if (r == 0)
			r = buf_puts(&v, "Basic ");
		if (r == 0)
			r = base64_encode(plain.data, plain.len, &v);
		if (r == 0)
			r = inject_put_header(out, "Authorization", 13, v.data, v.len);
		break;
	}
	case INJECT_HEADER:
		r = replace_all(&v, rt->inject_value, strlen(rt->inject_value), "{secret}", 8, (const char *)s->data,
		                s->len);
		if (r >= 0)
			r = inject_put_header(out, rt->inject_header, strlen(rt->inject_header), v.data, v.len);
		break;
	case INJECT_QUERY: /* done in the query */
	case INJECT_SWAP:
	case INJECT_SIGV4: /* inject_sigv4.c */
	case INJECT_NONE:
		break;
	}
	if (v.data)
		OPENSSL_cleanse(v.data, v.cap);
	if (plain.data)
		OPENSSL_cleanse(plain.data, plain.cap);
	buf_free(&v);
	buf_free(&plain);
	return r < 0 ? r : 0;
}

/* Whether the client's copy of this header must go because the route sets
 * the real credential there. */
static bool replaced_by_route(const struct policy_route *rt, const char *name, size_t len)
{
	switch (rt->inject) {
	case INJECT_BEARER:
	case INJECT_BASIC:
		return memcaseeq(name, len, "authorization");
	case INJECT_HEADER:
		return memcaseeq(name, len, rt->inject_header);
	default:
		return false;
	}
}

/* The responses of a credentialed route are scanned for secrets, so they
 * must come in a coding keyward can decode (respbody.h): of the codings
 * the client accepts, only gzip and deflate are asked for, and none at
 * all when the route refuses compressed responses. Without any, the
 * upstream is asked for identity (RFC 9110 12.5.3: no Accept-Encoding
 * would mean any coding). */
int inject_put_accept_encoding(struct buf *out, const struct http_head *req, const struct policy_route *rt)
{
	static const char *const ok[] = { "gzip", "x-gzip", "deflate" };
	size_t mark = out->len;
	int r = buf_puts(out, "Accept-Encoding: ");
	bool any = false;
	for (unsigned i = 0; r == 0 && !rt->refuse_compressed && i < req->n_headers; i++) {
		const struct http_header *h = &req->headers[i];
		if (!memcaseeq(h->name, h->name_len, "accept-encoding"))
			continue;
		for (size_t k = 0; r == 0 && k < ARRAY_SIZE(ok); k++) {
			if (!http_list_has(h->value, h->value_len, ok[k]) || strstr(out->data + mark, ok[k]))
				continue;
			r = buf_printf(out, "%s%s", any ? ", " : "", ok[k]);
			any = true;
		}
	}
	if (r == 0 && !any)
		r = buf_puts(out, "identity");
	if (r == 0)
		r = buf_append(out, "\r\n", 2);
	return r;
}

/* "Content-Length: N\r\n", written in place: buf_printf went through
 * vfprintf, about 700 instructions of every request with a body. N is
 * unsigned and may use all 64 bits (llhttp takes any length that fits). */
static int put_content_length(struct buf *out, uint64_t n)
{
	char digits[20], *at; /* 2^64 - 1 has 20 */
	size_t i = sizeof(digits);
	do
		digits[--i] = (char)('0' + n % 10);
	while ((n /= 10) != 0);
	int r = buf_space(out, 16 + sizeof(digits) + 2, &at);
	if (r < 0)
		return r;
	char *p = mempcpy(at, "Content-Length: ", 16);
	p = mempcpy(p, digits + i, sizeof(digits) - i);
	*p++ = '\r';
	*p++ = '\n';
	buf_advance(out, (size_t)(p - at));
	return 0;
}

/* A part of a response can hold part of a secret, and the redactor, which
 * sees one response, cannot recognise a part (RFC 9110 section 14): the
 * parts of a multipart/byteranges answer, or single ranges over several
 * requests, put the secret back together in the sandbox. The responses of
 * a credentialed route are scanned, so they are asked for whole; conn.c
 * refuses a 206 should the upstream send one anyway. */
static bool asks_for_part(const char *name, size_t len)
{
	return memcaseeq(name, len, "range") || memcaseeq(name, len, "if-range");
}

int inject_request_head(const struct outbound *o, struct buf *out, const char **why)
{
	const struct http_head *req = o->req;
	const struct policy_route *rt = o->route;
	const struct policy_credential *cred = rt->credential;
	bool credentialed = cred && o->secret;
	int r;

	if (rt->inject == INJECT_SIGV4)
		return inject_sigv4_head(o, out, why);
	r = inject_put_method_path(out, o);
	if (r == 0 && (o->query || (credentialed && rt->inject == INJECT_QUERY))) {
		size_t mark = out->len;
		bool any;
		r = buf_append(out, "?", 1);
		if (r == 0)
			r = build_query(out, o, &any);
		if (r == 0 && !any && o->query_len == 0 && !o->query)
			out->len = mark; /* nothing to send */
	}
	if (r == 0)
		r = buf_puts(out, " HTTP/1.1\r\n");
	if (r == 0)
		r = inject_put_host(out, o);

	for (unsigned i = 0; r == 0 && i < req->n_headers; i++) {
		const struct http_header *h = &req->headers[i];
		if (inject_header_is_hop(h->name, h->name_len) || http_connection_names(req, h->name, h->name_len))
			continue;
		if (credentialed && replaced_by_route(rt, h->name, h->name_len))
			continue;
		if (o->scanned && memcaseeq(h->name, h->name_len, "accept-encoding"))
			continue; /* inject_put_accept_encoding */
		if (o->scanned && asks_for_part(h->name, h->name_len))
			continue;
		if (credentialed)
			r = copy_swapped(out, h, cred, o->secret);
		else
			r = inject_put_header(out, h->name, h->name_len, h->value, h->value_len);
	}
	if (r == 0 && credentialed)
		r = put_credential(out, o, req);
	if (r == 0 && o->scanned)
		r = inject_put_accept_encoding(out, req, rt);
	if (r == 0 && req->chunked)
		r = buf_puts(out, "Transfer-Encoding: chunked\r\n");
	else if (r == 0 && req->has_content_length)
		r = put_content_length(out, req->content_length);
	if (r == 0 && o->upgrade) {
		int u = http_head_find(req, "upgrade");
		if (u >= 0)
			r = inject_put_header(out, "Upgrade", 7, req->headers[u].value, req->headers[u].value_len);
		if (r == 0)
			r = buf_puts(out, "Connection: upgrade\r\n");
	}
	if (r == 0)
		r = buf_append(out, "\r\n", 2);
	if (r == -ENOBUFS)
		*why = "request head too large after rewriting";
	else if (r < 0)
		*why = "cannot rewrite request";
	return r;
}

int inject_redact_forms(const struct outbound *o, struct redact_set *set)
{
	const struct policy_route *rt = o->route;
	const struct policy_credential *c = rt->credential;
	const struct secret *s = o->secret;
	const char *ph = c ? c->placeholder : NULL;
	struct buf dec, sent, enc;
	int r = 0;

	if (!c || !s)
		return 0;
	buf_init(&dec, SCRATCH_MAX);
	if (rt->inject == INJECT_BASIC) {
		size_t ul;
		const char *user = basic_user(rt, o->req, &dec, &ul);
		r = redact_set_add_basic(set, user ? user : "", user ? ul : 0, s->data, s->len, ph);
	}
	/* Basic credentials the client sent with the placeholder inside, which
	 * copy_swapped sent with the secret: back to what the client sent. */
	for (unsigned i = 0; r >= 0 && i < o->req->n_headers; i++) {
		const struct http_header *h = &o->req->headers[i];
		buf_reset(&dec);
		if (basic_decode(h->value, h->value_len, &dec) < 0 || !has_placeholder(dec.data, dec.len, c))
			continue;
		buf_init(&sent, SCRATCH_MAX);
		buf_init(&enc, SCRATCH_MAX);
		r = replace_all(&sent, dec.data, dec.len, ph, strlen(ph), (const char *)s->data, s->len);
		if (r >= 0)
			r = base64_encode(sent.data, sent.len, &enc);
		size_t el = enc.len;
		if (r >= 0)
			r = base64_encode(dec.data, dec.len, &enc);
		if (r >= 0)
			r = redact_set_add(set, enc.data, el, enc.data + el, enc.len - el);
		wipe_free(&sent);
		wipe_free(&enc);
	}
	wipe_free(&dec);
	return r < 0 ? r : 0;
}
