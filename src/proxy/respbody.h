/* The body of a response on a credentialed route, on its way to the
 * client: decoded when it is compressed (gzip, deflate), scanned by a
 * redactor (redact.h), and framed again (chunked, or as it comes when the
 * connection's end delimits it).
 *
 * Trust: the bytes are the upstream's and may be anything: a truncated or
 * corrupt stream, a decompression bomb. Memory stays bounded: zlib's
 * window, one output block, and what the redactor keeps back; the decoded
 * total is capped (max_decoded) and going over it is an error. */
#pragma once

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/http1.h"
#include "proxy/redact.h"

enum resp_coding { CODING_IDENTITY, CODING_GZIP, CODING_DEFLATE };

/* The Content-Encoding of a response head: identity when there is none.
 * Returns 0 and *ret, or -ENOTSUP for any other coding or a list of
 * several, with a static phrase in *why that never quotes the header
 * (an upstream may reflect a secret into it). */
int resp_body_coding(const struct http_head *h, enum resp_coding *ret, const char **why) WUR;

struct resp_body;

/* r is borrowed and must outlive the resp_body. chunked: frame the output
 * as chunks (the client speaks HTTP/1.1), else write it as it is (the end
 * of the connection delimits it). Returns 0 and *ret, or -ENOMEM. */
int resp_body_new(struct redactor *r, enum resp_coding coding, bool chunked, uint64_t max_decoded,
                  struct resp_body **ret) WUR;
void resp_body_free(struct resp_body *b);
/* Wipes and drops what b holds of its body (decoded bytes, zlib's state),
 * keeping its memory for resp_body_restart. */
void resp_body_clear(struct resp_body *b);
/* Makes b as resp_body_new would, for the next body. Returns 0 or
 * -ENOMEM (b may then only be freed). */
int resp_body_restart(struct resp_body *b, struct redactor *r, enum resp_coding coding, bool chunked,
                      uint64_t max_decoded) WUR;
/* Takes n more bytes of the upstream's payload (after its own framing)
 * and appends what can be sent to out. Returns 0, or a negative errno with
 * the reason in *why (corrupt compressed data, too much decoded data). */
int resp_body_feed(struct resp_body *b, const char *p, size_t n, struct evbuffer *out, const char **why) WUR;
/* The payload ended: flushes what was kept back and ends the framing.
 * Returns 0, or a negative errno (a compressed stream cut short). */
int resp_body_end(struct resp_body *b, struct evbuffer *out, const char **why) WUR;
