/* AWS Signature Version 4: the pieces keyward needs to re-sign a request
 * the sandbox signed with placeholder keys (docs/proxy.md, "AWS SigV4").
 *
 * Pure code, no I/O: parsing the Authorization header, the canonical
 * request, the string to sign, the signing key and the signatures of the
 * header and of each aws-chunked body chunk, and a streaming parser that
 * re-signs an aws-chunked body with bounded memory.
 *
 * Trust: every input except the secret and the derived key is hostile (the
 * sandbox wrote it). Errors come back as a negative errno and a reason
 * fit for people (*why: static text that never holds a secret or input). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/util.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_SIG_HEX   64 /* hex digits of a signature or a SHA-256 */
/* Field ceilings: longer values are refused, not truncated. */
#define SIGV4_KEY_ID_MAX 128
#define SIGV4_FIELD_MAX  63 /* region, service */
/* The largest aws-chunked chunk keyward re-signs: a chunk's signature comes
 * before its data, so the whole chunk is held until its hash is known. */
#define SIGV4_CHUNK_MAX (1024 * 1024)

/* The payload the request's signature covers (x-amz-content-sha256). */
enum sigv4_payload {
	SIGV4_PAYLOAD_HASH,             /* 64 hex digits: the body's SHA-256 */
	SIGV4_PAYLOAD_UNSIGNED,         /* UNSIGNED-PAYLOAD */
	SIGV4_PAYLOAD_STREAMING,        /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD: signed aws-chunked */
	SIGV4_PAYLOAD_UNSIGNED_TRAILER, /* STREAMING-UNSIGNED-PAYLOAD-TRAILER: unsigned
	                                   aws-chunked, checksum trailer */
};

/* A parsed Authorization header. The pointers point into the header value. */
struct sigv4_auth {
	const char *key_id;
	size_t key_id_len;
	char date[9];                      /* YYYYMMDD */
	char region[SIGV4_FIELD_MAX + 1];  /* [a-z0-9-]+ */
	char service[SIGV4_FIELD_MAX + 1]; /* [a-z0-9-]+ */
	const char *signed_headers;        /* "host;x-amz-date", checked sorted lower case */
	size_t signed_headers_len;
};

/* Parses "AWS4-HMAC-SHA256 Credential=KEYID/DATE/REGION/SERVICE/aws4_request,
 * SignedHeaders=a;b, Signature=HEX". Returns 0, -EPROTONOSUPPORT for SigV4a
 * (AWS4-ECDSA-P256-SHA256) or another scheme, -EINVAL if malformed. */
int sigv4_parse_authorization(const char *v, size_t n, struct sigv4_auth *ret, const char **why) WUR;

/* Whether s is an x-amz-date: YYYYMMDDTHHMMSSZ with a plausible date. */
bool sigv4_valid_amz_date(const char *s, size_t n);

/* Classifies an x-amz-content-sha256 value. Returns 0 and *ret, or
 * -EPROTONOSUPPORT (a variant keyward does not re-sign: signed trailers,
 * SigV4a streaming) or -EINVAL, with the reason in *why. */
int sigv4_payload_kind(const char *v, size_t n, enum sigv4_payload *ret, const char **why) WUR;

struct sigv4_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct sigv4_request {
	const char *method;
	size_t method_len;
	const char *path; /* the path as sent, without the query */
	size_t path_len;
	const char *query; /* without '?'; NULL or empty for none */
	size_t query_len;
	const struct sigv4_header *headers; /* as sent, in order */
	size_t n_headers;
	const char *signed_headers; /* "a;b;c" */
	size_t signed_headers_len;
	const char *payload_hash; /* the x-amz-content-sha256 value, or hex SHA-256 */
	size_t payload_hash_len;
	bool s3; /* S3: the path is used as sent (no normalising, no second encoding) */
};

/* Appends the canonical request of r to out. Returns 0, -EINVAL (a signed
 * header that is not in the request, a malformed escape in the query; *why
 * says which) or -ENOBUFS/-ENOMEM. */
int sigv4_canonical_request(const struct sigv4_request *r, struct buf *out, const char **why) WUR;

/* The canonical URI of a path as sent (see sigv4_request.s3). */
int sigv4_canonical_uri(const char *path, size_t n, bool s3, struct buf *out) WUR;
/* The canonical query string of a raw query (without '?'). */
int sigv4_canonical_query(const char *q, size_t n, struct buf *out, const char **why) WUR;

/* "DATE/REGION/SERVICE/aws4_request" into out (at least 8+1+63+1+63+13+1). */
#define SIGV4_SCOPE_MAX (8 + 1 + SIGV4_FIELD_MAX + 1 + SIGV4_FIELD_MAX + 13 + 1)
void sigv4_scope(const char *date, const char *region, const char *service, char out[SIGV4_SCOPE_MAX]);

/* Appends the string to sign of a canonical request to out. */
int sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq, size_t creq_len,
                         struct buf *out) WUR;

/* The signing key: HMAC chain from "AWS4" + secret over date, region,
 * service and "aws4_request". Returns 0 or -ENOMEM. The caller wipes key. */
int sigv4_signing_key(const uint8_t *secret, size_t secret_len, const char *date, const char *region,
                      const char *service, uint8_t key[32]) WUR;

/* hex(HMAC-SHA256(key, msg)) into out (65 bytes, NUL-terminated). */
void sigv4_sign(const uint8_t key[32], const char *msg, size_t n, char out[SIGV4_SIG_HEX + 1]);

/* The signature of one aws-chunked chunk whose data has SHA-256 data_hash,
 * chained from the previous signature (the seed: the header's). */
void sigv4_chunk_signature(const uint8_t key[32], const char *amz_date, const char *scope, const char *prev_sig,
                           const uint8_t data_hash[32], char out[SIGV4_SIG_HEX + 1]);

/* Re-signs a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body as it streams. Each
 * chunk "HEX;chunk-signature=SIG\r\nDATA\r\n" is held until complete, then
 * emitted with its signature replaced by one chained from the real seed
 * signature: same size digits, same length, so Content-Length holds. */
struct sigv4_chunked {
	uint8_t key[32]; /* the real signing key: wiped by sigv4_chunked_free */
	char amz_date[17];
	char scope[SIGV4_SCOPE_MAX];
	char prev_sig[SIGV4_SIG_HEX + 1];
	int state;
	char line[128]; /* the chunk header line being read */
	size_t line_len;
	char size_digits[9];
	size_t size; /* of the chunk being read */
	struct buf data;
	bool done;
	uint64_t chunks;
};

/* Starts a parser; seed_sig is the real signature of the request head. */
int sigv4_chunked_init(struct sigv4_chunked *s, const uint8_t key[32], const char *amz_date, const char *scope,
                       const char *seed_sig) WUR;
void sigv4_chunked_free(struct sigv4_chunked *s);

typedef int (*sigv4_emit_fn)(void *ctx, const char *p, size_t n);

/* Feeds body bytes; re-signed output goes to emit as chunks complete.
 * Returns 0, -EBADMSG (framing error, *why says which), or emit's error. */
int sigv4_chunked_feed(struct sigv4_chunked *s, const char *p, size_t n, sigv4_emit_fn emit, void *ctx,
                       const char **why) WUR;
/* Whether the final (zero-size) chunk has been read. */
static inline bool sigv4_chunked_done(const struct sigv4_chunked *s)
{
	return s->done;
}
