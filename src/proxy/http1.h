/* HTTP/1.1 message framing on top of llhttp.
 *
 * Trust: everything here is hostile input (from the sandbox or an upstream).
 * A head is parsed only once it is complete and no larger than the limit,
 * after a strict byte-level check that llhttp's lenient build would let
 * through: bare CR or LF, obs-fold, NUL and other control bytes. Framing
 * ambiguities (CL+TE, duplicate Content-Length, unknown Transfer-Encoding)
 * are left to llhttp, which refuses them in its default, non-lenient mode. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "common/util.h"

struct http_header {
	const char *name; /* points into the head buffer given to http1_parse_head */
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct http_head {
	const char *method; /* request: method token */
	size_t method_len;
	const char *url; /* request: request-target as sent */
	size_t url_len;
	int status; /* response: status code */
	const char *reason;
	size_t reason_len;
	uint8_t major, minor;
	struct http_header *headers; /* caller's array of max_headers entries */
	unsigned n_headers;
	unsigned max_headers;
	bool chunked;
	bool has_content_length;
	uint64_t content_length;
	bool keep_alive;
	bool upgrade; /* Connection: upgrade + Upgrade: (llhttp's view) */
	bool expect_continue;
	bool too_many_headers;
};

enum http1_type { HTTP1_REQUEST, HTTP1_RESPONSE };

struct http1 {
	llhttp_t parser;
	llhttp_settings_t settings;
	struct http_head *head; /* while parsing a head */
	const char *last_end;   /* to join split spans */
	int last_cb;            /* 1 field, 2 value */
	bool headers_done;
	bool message_done;
	bool skip_body; /* the response answers HEAD (1xx, 204 and 304 never have a body) */
	/* body data sink while feeding a body */
	int (*on_body)(void *ctx, const char *p, size_t n);
	void *ctx;
	uint64_t body_bytes;
};

void http1_init(struct http1 *h, enum http1_type type);

/* Length of the complete head at the start of p (through the blank line),
 * 0 if it is not complete yet, or -EBADMSG if the bytes seen so far break
 * the strict rules (reason in *why). Callers enforce the size ceiling.
 * *resume (0 at first) remembers how far earlier calls scanned, so feeding
 * a head byte by byte costs linear time. */
long http1_head_length(const char *p, size_t n, size_t *resume, const char **why) WUR;

/* Parses a complete head (as measured by http1_head_length). Fields in
 * *out point into p, which must stay alive. Returns 0, or -EBADMSG with a
 * reason in *why. For a response to HEAD, set skip_body first. */
int http1_parse_head(struct http1 *h, const char *p, size_t n, struct http_head *out, const char **why) WUR;

/* Feeds body bytes of the current message. Calls on_body for payload.
 * Returns 1 when the message is complete (*consumed bytes belong to it and
 * the rest to the next message), 0 when more is needed (all consumed), or
 * -EBADMSG (reason in *why) / a negative value returned by on_body. */
int http1_feed_body(struct http1 *h, const char *p, size_t n, size_t *consumed, const char **why) WUR;

/* Whether the current message is complete (e.g. no body at all). */
static inline bool http1_message_done(const struct http1 *h)
{
	return h->message_done;
}

/* Ends a read-until-close body (response without length): 1 if that was a
 * valid end, -EBADMSG if the body was cut short. */
int http1_finish_eof(struct http1 *h) WUR;

/* Prepares for the next message on the same connection. */
void http1_next(struct http1 *h);

/* Finds a header by name (case-insensitive). Returns its index or -1. */
int http_head_find(const struct http_head *hd, const char *name);
/* Whether a Connection header of hd lists this field name: such fields are
 * hop-by-hop for this message (RFC 9110 7.6.1). */
bool http_connection_names(const struct http_head *hd, const char *name, size_t len);
/* Whether the comma-separated header value list contains token (case-insensitive). */
bool http_list_has(const char *v, size_t n, const char *token);
