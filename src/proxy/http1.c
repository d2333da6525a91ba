#include "proxy/http1.h"

#include <endian.h>
#include <errno.h>

#include "common/util.h"

static struct http1 *self(llhttp_t *p)
{
	return (struct http1 *)p; /* parser is the first member */
}

/* llhttp may split a span across callbacks when its input is split; we
 * always hand it a whole head, but join adjacent pieces to be safe. */
static int span(struct http1 *h, int kind, const char *at, size_t len, const char **ptr, size_t *plen)
{
	if (*ptr && h->last_cb == kind && h->last_end == at) {
		*plen += len;
	} else {
		*ptr = at;
		*plen = len;
	}
	h->last_cb = kind;
	h->last_end = at + len;
	return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
	struct http1 *h = self(p);
	return span(h, 3, at, len, &h->head->method, &h->head->method_len);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct http1 *h = self(p);
	return span(h, 4, at, len, &h->head->url, &h->head->url_len);
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
	struct http1 *h = self(p);
	return span(h, 5, at, len, &h->head->reason, &h->head->reason_len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct http1 *h = self(p);
	struct http_head *hd = h->head;
	/* Trailer fields (after a chunked body) arrive in pieces cut by TCP;
	 * keyward drops trailers, so they are not collected at all. */
	if (h->headers_done)
		return 0;
	if (h->last_cb == 1 && h->last_end == at) {
		hd->headers[hd->n_headers - 1].name_len += len;
		h->last_end = at + len;
		return 0;
	}
	if (hd->n_headers >= hd->max_headers) {
		hd->too_many_headers = true;
		llhttp_set_error_reason(p, "too many header fields");
		return HPE_USER;
	}
	hd->headers[hd->n_headers++] = (struct http_header){ .name = at, .name_len = len, .value = at + len };
	h->last_cb = 1;
	h->last_end = at + len;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct http1 *h = self(p);
	if (h->headers_done)
		return 0;
	struct http_header *hh = &h->head->headers[h->head->n_headers - 1];
	if (h->last_cb == 2 && h->last_end == at) {
		hh->value_len += len;
	} else {
		hh->value = at;
		hh->value_len = len;
	}
	h->last_cb = 2;
	h->last_end = at + len;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct http1 *h = self(p);
	struct http_head *hd = h->head;
	hd->major = p->http_major;
	hd->minor = p->http_minor;
	if (p->type == HTTP_RESPONSE)
		hd->status = p->status_code;
	hd->chunked = (p->flags & F_CHUNKED) != 0;
	hd->has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
	hd->content_length = hd->has_content_length ? p->content_length : 0;
	hd->keep_alive = llhttp_should_keep_alive(p) != 0;
	hd->upgrade = p->upgrade != 0;
	h->headers_done = true;
	/* A response to HEAD has headers that describe a body it does not send,
	 * and 1xx, 204 and 304 responses have no body whatever their headers
	 * say (RFC 9112 6.3 rule 1; RFC 9110 8.6 lets a 304 carry the
	 * Content-Length of the representation it does not send). llhttp 8.1
	 * knows this only for a response without Content-Length or chunked
	 * framing, and would wait for the body; 101 is llhttp's own case. */
	if (p->type == HTTP_RESPONSE &&
	    (h->skip_body || (hd->status < 200 && hd->status != 101) || hd->status == 204 || hd->status == 304))
		return 1;
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct http1 *h = self(p);
	h->body_bytes += len;
	if (h->on_body) {
		int r = h->on_body(h->ctx, at, len);
		if (r < 0) {
			llhttp_set_error_reason(p, "body sink failed");
			return HPE_USER;
		}
	}
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct http1 *h = self(p);
	h->message_done = true;
	/* Stop at the message boundary: what follows belongs to the next
	 * message and is parsed only after this one has been handled. */
	return HPE_PAUSED;
}

void http1_init(struct http1 *h, enum http1_type type)
{
	*h = (struct http1){ 0 };
	llhttp_settings_init(&h->settings);
	h->settings.on_method = on_method;
	h->settings.on_url = on_url;
	h->settings.on_status = on_status;
	h->settings.on_header_field = on_header_field;
	h->settings.on_header_value = on_header_value;
	h->settings.on_headers_complete = on_headers_complete;
	h->settings.on_body = on_body;
	h->settings.on_message_complete = on_message_complete;
	llhttp_init(&h->parser, type == HTTP1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &h->settings);
}

/* Where the first of the 8 bytes of w (read little-endian: the first in
 * memory is the lowest) that is below 0x20 or is 0x7f (DEL) lies: its
 * index, or 8 if there is none. The "has a byte less than n" and "has a
 * zero byte" tests of bit-twiddling lore flag such bytes; a borrow can
 * flag a byte above a flagged one, never below the first, so the lowest
 * flag is exact. */
static unsigned first_control(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
	uint64_t del = w ^ (ones * 0x7f);
	uint64_t flags = (((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & highs;
	return flags ? (unsigned)__builtin_ctzll(flags) / 8 : 8;
}

long http1_head_length(const char *p, size_t n, size_t *resume, const char **why)
{
	/* RFC 9112 2.2: a recipient may accept bare LF, but an intermediary that
	 * reads differently from its upstream invites smuggling; we accept only
	 * CRLF. 5.2: obs-fold is rejected. Control bytes other than HTAB are
	 * never valid in a head. */
	for (size_t i = *resume; i < n; i++) {
		/* Most of a head is text: step over it 8 bytes at a time, and
		 * straight to the first control byte (CR, mostly) in a word. */
		while (n - i >= 8) {
			uint64_t w;
			memcpy(&w, p + i, 8);
			unsigned k = first_control(le64toh(w));
			i += k;
			if (k < 8)
				break;
		}
		if (i == n)
			break;
		unsigned char c = (unsigned char)p[i];
		if ((c >= 0x20 && c != 0x7f) || c == '\t')
			continue;
		if (c == '\n') {
			*why = "bare LF in message head"; /* every CRLF's LF is skipped below */
			return -EBADMSG;
		}
		if (c != '\r') {
			*why = c == 0 ? "NUL byte in message head" : "control byte in message head";
			return -EBADMSG;
		}
		if (i + 1 >= n) {
			*resume = i; /* look at this CR again when more arrives */
			return 0;
		}
		if (p[i + 1] != '\n') {
			*why = "bare CR in message head";
			return -EBADMSG;
		}
		if (i == 0) {
			*why = "empty line before the start line";
			return -EBADMSG;
		}
		if (i >= 2 && p[i - 2] == '\r' && p[i - 1] == '\n')
			return (long)(i + 2); /* blank line: the head ends here */
		if (i + 2 >= n) {
			*resume = i;
			return 0;
		}
		if (p[i + 2] == ' ' || p[i + 2] == '\t') {
			*why = "obsolete line folding (obs-fold) in message head";
			return -EBADMSG;
		}
		i++; /* skip the LF */
	}
	*resume = n;
	return 0;
}

/* RFC 9112 4: status-line = HTTP-version SP 3DIGIT SP reason. */
static bool status_digits(const char *p, size_t n)
{
	return n >= 13 && p[8] == ' ' && p[9] >= '1' && p[9] <= '9' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' &&
	       p[11] <= '9' && (p[12] == ' ' || p[12] == '\r');
}

/* RFC 9110 5.6.2 token characters. */
static bool is_token(const char *p, size_t n)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c && strchr(extra, c))))
			return false;
	}
	return true;
}

/* Whether every Transfer-Encoding field holds exactly "chunked" (case
 * aside, OWS trimmed); *fields says how many there are. */
static bool transfer_encoding_is_chunked(const struct http_head *hd, unsigned *fields)
{
	*fields = 0;
	for (unsigned k = 0; k < hd->n_headers; k++) {
		const struct http_header *x = &hd->headers[k];
		if (!memcaseeq(x->name, x->name_len, "transfer-encoding"))
			continue;
		++*fields;
		size_t s = 0, e = x->value_len;
		while (s < e && (x->value[s] == ' ' || x->value[s] == '\t'))
			s++;
		while (e > s && (x->value[e - 1] == ' ' || x->value[e - 1] == '\t'))
			e--;
		if (!memcaseeq(x->value + s, e - s, "chunked"))
			return false;
	}
	return true;
}

int http1_parse_head(struct http1 *h, const char *p, size_t n, struct http_head *out, const char **why)
{
	struct http_header *headers = out->headers;
	unsigned max = out->max_headers;
	*out = (struct http_head){ .headers = headers, .max_headers = max };
	h->head = out;
	h->last_cb = 0;
	h->last_end = NULL;
	h->headers_done = false;
	h->message_done = false;
	h->body_bytes = 0;

	llhttp_errno_t e = llhttp_execute(&h->parser, p, n);
	if (e != HPE_OK && e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
		*why = out->too_many_headers ? "too many header fields" : llhttp_get_error_reason(&h->parser);
		if (!*why)
			*why = llhttp_errno_name(e);
		return -EBADMSG;
	}
	if (!h->headers_done) {
		*why = "incomplete message head";
		return -EBADMSG;
	}
	if (e == HPE_OK || e == HPE_PAUSED) {
		/* The whole head was consumed (HPE_PAUSED only comes from
		 * message completion at its very end). */
		const char *pos = e == HPE_PAUSED ? llhttp_get_error_pos(&h->parser) : p + n;
		if (pos != p + n) {
			*why = "trailing bytes in message head";
			return -EBADMSG;
		}
	}
	/* What llhttp's default build lets through and RFC 9112 does not:
	 * whitespace between a field name and its colon (5.1: must be
	 * rejected), other non-token bytes in names, an HTTP/0.9 request
	 * line, and Transfer-Encoding in HTTP/1.0 (6.1: faulty framing). */
	for (unsigned k = 0; k < out->n_headers; k++) {
		if (!is_token(out->headers[k].name, out->headers[k].name_len)) {
			*why = "invalid header field name";
			return -EBADMSG;
		}
	}
	if (out->major != 1 || out->minor > 1) {
		*why = "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)";
		return -EBADMSG;
	}
	if (h->parser.type == HTTP_RESPONSE && (out->status < 100 || out->status > 999 || !status_digits(p, n))) {
		*why = "status code is not three digits";
		return -EBADMSG;
	}
	if (out->minor == 0 && out->chunked) {
		*why = "Transfer-Encoding in an HTTP/1.0 message";
		return -EBADMSG;
	}
	/* llhttp takes "gzip, chunked" (chunked last) as chunked framing, and
	 * so would we; but keyward re-frames a request body with its own
	 * "Transfer-Encoding: chunked", which would silently drop the other
	 * codings: the upstream would read the bytes as unencoded. Accept the
	 * one coding we implement (RFC 9112 6.1 lets a server refuse others). */
	unsigned te_fields;
	bool te_chunked = transfer_encoding_is_chunked(out, &te_fields);
	if (h->parser.type == HTTP_REQUEST && out->chunked && !te_chunked) {
		*why = "Transfer-Encoding other than chunked alone";
		return -EBADMSG;
	}
	/* A response is re-framed too (on credentialed routes, where its body
	 * is decoded and scanned), and a coding other than chunked, framed by
	 * llhttp as chunked ("gzip, chunked") or as read-until-close ("gzip"),
	 * would reach the client undecoded, its Transfer-Encoding dropped:
	 * compressed bytes the redactor never read. keyward decodes no
	 * transfer coding but chunked, so it takes none other, on any route
	 * (RFC 9112 6.1 lets a recipient refuse them), and only one field. */
	if (h->parser.type == HTTP_RESPONSE && te_fields > 0 && (!te_chunked || te_fields > 1 || !out->chunked)) {
		*why = "Transfer-Encoding other than chunked alone";
		return -EBADMSG;
	}
	int i = http_head_find(out, "expect");
	if (i >= 0 && memcaseeq(out->headers[i].value, out->headers[i].value_len, "100-continue"))
		out->expect_continue = true;
	return 0;
}

int http1_feed_body(struct http1 *h, const char *p, size_t n, size_t *consumed, const char **why)
{
	if (h->message_done) {
		*consumed = 0;
		return 1;
	}
	llhttp_errno_t e = llhttp_execute(&h->parser, p, n);
	if (e == HPE_OK) {
		*consumed = n;
		return 0;
	}
	if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
		*consumed = (size_t)(llhttp_get_error_pos(&h->parser) - p);
		return 1;
	}
	if (e == HPE_USER && h->on_body) {
		*why = llhttp_get_error_reason(&h->parser);
		return -EPIPE;
	}
	*why = llhttp_get_error_reason(&h->parser);
	if (!*why)
		*why = llhttp_errno_name(e);
	return -EBADMSG;
}

int http1_finish_eof(struct http1 *h)
{
	if (h->message_done)
		return 1;
	llhttp_errno_t e = llhttp_finish(&h->parser);
	if (e == HPE_OK || e == HPE_PAUSED)
		return h->message_done ? 1 : -EBADMSG;
	return -EBADMSG;
}

void http1_next(struct http1 *h)
{
	llhttp_errno_t e = llhttp_get_errno(&h->parser);
	if (e == HPE_PAUSED)
		llhttp_resume(&h->parser);
	else if (e == HPE_PAUSED_UPGRADE)
		llhttp_resume_after_upgrade(&h->parser);
	h->message_done = false;
	h->headers_done = false;
	h->body_bytes = 0;
}

int http_head_find(const struct http_head *hd, const char *name)
{
	for (unsigned i = 0; i < hd->n_headers; i++)
		if (memcaseeq(hd->headers[i].name, hd->headers[i].name_len, name))
			return (int)i;
	return -1;
}

/* http_list_has with the token's length given (not NUL-terminated). */
static bool list_has_n(const char *v, size_t n, const char *token, size_t tl)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
			return true;
	}
	return false;
}

bool http_list_has(const char *v, size_t n, const char *token)
{
	return list_has_n(v, n, token, strlen(token));
}

bool http_connection_names(const struct http_head *hd, const char *name, size_t len)
{
	for (unsigned i = 0; i < hd->n_headers; i++) {
		const struct http_header *c = &hd->headers[i];
		if (memcaseeq(c->name, c->name_len, "connection") && list_has_n(c->value, c->value_len, name, len))
			return true;
	}
	return false;
}
