#include "proxy/respbody.h"

#include <errno.h>
#include <stdlib.h>

#include <openssl/crypto.h>
#include <zlib.h>

#define BLOCK 16384

struct resp_body {
	struct redactor *r;
	enum resp_coding coding;
	bool chunked;
	uint64_t max_decoded;
	uint64_t decoded;
	struct evbuffer *stage; /* redacted bytes of the current feed */
	/* compressed bodies */
	z_stream z;
	bool z_ready;         /* inflateInit2 done */
	bool z_ended;         /* the stream (or gzip member) ended */
	bool any_input;       /* a compressed byte arrived */
	unsigned char hdr[2]; /* deflate: first bytes, to tell zlib from raw */
	size_t hdr_n;
	unsigned char *block;
};

int resp_body_coding(const struct http_head *h, enum resp_coding *ret, const char **why)
{
	enum resp_coding coding = CODING_IDENTITY;
	unsigned seen = 0;
	for (unsigned i = 0; i < h->n_headers; i++) {
		const struct http_header *x = &h->headers[i];
		if (!memcaseeq(x->name, x->name_len, "content-encoding"))
			continue;
		/* each comma-separated coding, in the order applied */
		size_t k = 0;
		while (k < x->value_len) {
			while (k < x->value_len && (x->value[k] == ' ' || x->value[k] == '\t' || x->value[k] == ','))
				k++;
			size_t s = k;
			while (k < x->value_len && x->value[k] != ',')
				k++;
			size_t e = k;
			while (e > s && (x->value[e - 1] == ' ' || x->value[e - 1] == '\t'))
				e--;
			if (e == s)
				continue;
			const char *v = x->value + s;
			size_t n = e - s;
			if (memcaseeq(v, n, "identity"))
				continue;
			enum resp_coding c;
			if (memcaseeq(v, n, "gzip") || memcaseeq(v, n, "x-gzip"))
				c = CODING_GZIP;
			else if (memcaseeq(v, n, "deflate"))
				c = CODING_DEFLATE;
			else {
				/* Not named: the value is the upstream's, and one that
				 * reflects the request (where the secret was swapped
				 * in) would put the secret in a refusal or the audit. */
				*why = "an unsupported Content-Encoding";
				return -ENOTSUP;
			}
			if (++seen > 1) {
				*why = "several content codings";
				return -ENOTSUP;
			}
			coding = c;
		}
	}
	*ret = coding;
	return 0;
}

/* Sets b up for a body; b holds nothing of an earlier one. */
static int start(struct resp_body *b, struct redactor *r, enum resp_coding coding, bool chunked, uint64_t max_decoded)
{
	b->r = r;
	b->coding = coding;
	b->chunked = chunked;
	b->max_decoded = max_decoded;
	if (!b->stage)
		b->stage = evbuffer_new();
	if (coding != CODING_IDENTITY && !b->block)
		b->block = malloc(BLOCK);
	return !b->stage || (coding != CODING_IDENTITY && !b->block) ? -ENOMEM : 0;
}

int resp_body_new(struct redactor *r, enum resp_coding coding, bool chunked, uint64_t max_decoded,
                  struct resp_body **ret)
{
	struct resp_body *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	if (start(b, r, coding, chunked, max_decoded) < 0) {
		resp_body_free(b);
		return -ENOMEM;
	}
	*ret = b;
	return 0;
}

void resp_body_clear(struct resp_body *b)
{
	if (b->z_ready)
		inflateEnd(&b->z);
	if (b->block)
		OPENSSL_cleanse(b->block, BLOCK);
	if (b->stage)
		evbuffer_drain(b->stage, evbuffer_get_length(b->stage));
	*b = (struct resp_body){ .stage = b->stage, .block = b->block };
}

int resp_body_restart(struct resp_body *b, struct redactor *r, enum resp_coding coding, bool chunked,
                      uint64_t max_decoded)
{
	resp_body_clear(b);
	return start(b, r, coding, chunked, max_decoded);
}

void resp_body_free(struct resp_body *b)
{
	if (!b)
		return;
	resp_body_clear(b);
	free(b->block);
	if (b->stage)
		evbuffer_free(b->stage);
	free(b);
}

static int emit_stage(void *ctx, const char *p, size_t n)
{
	struct resp_body *b = ctx;
	return evbuffer_add(b->stage, p, n) == 0 ? 0 : -ENOMEM;
}

/* Moves the staged bytes to out as one chunk (or as they are). */
static int flush_stage(struct resp_body *b, struct evbuffer *out)
{
	size_t n = evbuffer_get_length(b->stage);
	if (n == 0)
		return 0;
	if (b->chunked) {
		char line[2 * sizeof(size_t) + 2];
		size_t i = sizeof(line) - 2;
		memcpy(line + i, "\r\n", 2);
		for (size_t v = n; v; v >>= 4)
			line[--i] = "0123456789abcdef"[v & 15];
		if (evbuffer_add(out, line + i, sizeof(line) - i) < 0)
			return -ENOMEM;
	}
	if (evbuffer_add_buffer(out, b->stage) < 0)
		return -ENOMEM;
	if (b->chunked && evbuffer_add(out, "\r\n", 2) < 0)
		return -ENOMEM;
	return 0;
}

/* RFC 9110 8.4.1.2: "deflate" is the zlib format (RFC 1950), but some
 * servers send raw deflate (RFC 1951); a zlib header is told apart by its
 * compression method (8) and its check bits. gzip (RFC 1952) is read with
 * zlib's gzip mode. */
static int z_start(struct resp_body *b)
{
	int bits;
	if (b->coding == CODING_GZIP)
		bits = 16 + 15;
	else
		bits = (b->hdr[0] & 0x0f) == 8 && ((b->hdr[0] << 8) | b->hdr[1]) % 31 == 0 ? 15 : -15;
	if (inflateInit2(&b->z, bits) != Z_OK)
		return -ENOMEM;
	b->z_ready = true;
	return 0;
}

static int inflate_some(struct resp_body *b, const unsigned char *p, size_t n, const char **why)
{
	b->z.next_in = (unsigned char *)p;
	b->z.avail_in = (uInt)n;
	for (;;) {
		if (b->z_ended) {
			if (b->z.avail_in == 0)
				return 0;
			if (b->coding != CODING_GZIP) {
				*why = "data after the end of the deflate stream";
				return -EBADMSG;
			}
			/* RFC 1952 2.2: a gzip file may hold several members */
			if (inflateReset(&b->z) != Z_OK)
				return -ENOMEM;
			b->z_ended = false;
		}
		b->z.next_out = b->block;
		b->z.avail_out = BLOCK;
		int rc = inflate(&b->z, Z_NO_FLUSH);
		size_t got = BLOCK - b->z.avail_out;
		if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
			*why = rc == Z_MEM_ERROR ? "out of memory decoding the body" : "corrupt compressed body";
			return rc == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
		}
		if (got > b->max_decoded - b->decoded) {
			*why = "decoded body larger than limits.max_decoded_body (a decompression bomb?)";
			return -EFBIG;
		}
		b->decoded += got;
		int e = redactor_feed(b->r, (const char *)b->block, got, emit_stage, b);
		if (e < 0)
			return e;
		if (rc == Z_STREAM_END)
			b->z_ended = true;
		else if (got == 0 && b->z.avail_in == 0)
			return 0; /* needs more input */
		else if (rc == Z_BUF_ERROR && got == 0)
			return 0;
	}
}

static int feed_compressed(struct resp_body *b, const char *p, size_t n, const char **why)
{
	if (n == 0)
		return 0;
	b->any_input = true;
	if (!b->z_ready) {
		if (b->coding == CODING_DEFLATE && b->hdr_n + n < 2) {
			b->hdr[b->hdr_n++] = (unsigned char)p[0];
			return 0;
		}
		size_t had = b->hdr_n;
		for (size_t i = 0; b->hdr_n < 2 && i < n; i++)
			b->hdr[b->hdr_n++] = (unsigned char)p[i];
		int r = z_start(b);
		if (r < 0)
			return r;
		if (had) { /* the byte kept from an earlier call goes first */
			r = inflate_some(b, b->hdr, had, why);
			if (r < 0)
				return r;
		}
	}
	return inflate_some(b, (const unsigned char *)p, n, why);
}

int resp_body_feed(struct resp_body *b, const char *p, size_t n, struct evbuffer *out, const char **why)
{
	int r;
	if (b->coding == CODING_IDENTITY)
		r = redactor_feed(b->r, p, n, emit_stage, b);
	else
		r = feed_compressed(b, p, n, why);
	if (r == -ENOMEM && !*why)
		*why = "out of memory";
	if (r < 0)
		return r;
	return flush_stage(b, out);
}

int resp_body_end(struct resp_body *b, struct evbuffer *out, const char **why)
{
	if (b->coding != CODING_IDENTITY && b->any_input && !b->z_ended) {
		*why = "compressed body cut short";
		return -EBADMSG;
	}
	int r = redactor_finish(b->r, emit_stage, b);
	if (r == 0)
		r = flush_stage(b, out);
	if (r == 0 && b->chunked && evbuffer_add(out, "0\r\n\r\n", 5) < 0)
		r = -ENOMEM;
	if (r < 0)
		*why = "out of memory";
	return r;
}
