#include "proxy/sigv4.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "common/encode.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static bool is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool is_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static int num2(const char *s)
{
	return (s[0] - '0') * 10 + (s[1] - '0');
}

static bool valid_date8(const char *s)
{
	if (!is_digits(s, 8))
		return false;
	int month = num2(s + 4), day = num2(s + 6);
	return s[0] != '0' && month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

bool sigv4_valid_amz_date(const char *s, size_t n)
{
	return n == 16 && valid_date8(s) && s[8] == 'T' && is_digits(s + 9, 6) && s[15] == 'Z' && num2(s + 9) < 24 &&
	       num2(s + 11) < 60 && num2(s + 13) < 61;
}

/* region and service: what AWS uses, and nothing that could break a line */
static bool valid_scope_field(const char *s, size_t n)
{
	if (n == 0 || n > SIGV4_FIELD_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

static bool valid_key_id(const char *s, size_t n)
{
	if (n == 0 || n > SIGV4_KEY_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == ',' || s[i] == '/')
			return false;
	return true;
}

static bool header_name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
	       ch == '!' || ch == '#' || ch == '$' || ch == '%' || ch == '&' || ch == '\'' || ch == '*' || ch == '+' ||
	       ch == '^' || ch == '`' || ch == '|' || ch == '~';
}

/* "a;b;c": lower-case names, each sorted strictly after the one before. */
static bool valid_signed_headers(const char *s, size_t n)
{
	const char *prev = NULL;
	size_t prev_len = 0, i = 0;
	if (n == 0)
		return false;
	while (i <= n) {
		size_t start = i;
		while (i < n && s[i] != ';') {
			if (!header_name_char(s[i]))
				return false;
			i++;
		}
		size_t len = i - start;
		if (len == 0)
			return false;
		if (prev) {
			size_t m = len < prev_len ? len : prev_len;
			int c = memcmp(prev, s + start, m);
			if (c > 0 || (c == 0 && prev_len >= len))
				return false;
		}
		prev = s + start;
		prev_len = len;
		i++;
	}
	return true;
}

static int parse_credential(const char *v, size_t n, struct sigv4_auth *a, const char **why)
{
	const char *part[5];
	size_t len[5], k = 0, start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && v[i] != '/')
			continue;
		if (k == 5) {
			*why = "Credential= has more than five parts (KEYID/DATE/REGION/SERVICE/aws4_request)";
			return -EINVAL;
		}
		part[k] = v + start;
		len[k++] = i - start;
		start = i + 1;
	}
	if (k != 5) {
		*why = "Credential= is not KEYID/DATE/REGION/SERVICE/aws4_request";
		return -EINVAL;
	}
	if (!valid_key_id(part[0], len[0])) {
		*why = "Credential= has an invalid access key id";
		return -EINVAL;
	}
	if (len[1] != 8 || !valid_date8(part[1])) {
		*why = "Credential= has an invalid date (expected YYYYMMDD)";
		return -EINVAL;
	}
	if (!valid_scope_field(part[2], len[2]) || !valid_scope_field(part[3], len[3])) {
		*why = "Credential= has an invalid region or service";
		return -EINVAL;
	}
	if (len[4] != 12 || memcmp(part[4], "aws4_request", 12) != 0) {
		*why = "Credential= does not end in aws4_request";
		return -EINVAL;
	}
	a->key_id = part[0];
	a->key_id_len = len[0];
	memcpy(a->date, part[1], 8);
	a->date[8] = 0;
	memcpy(a->region, part[2], len[2]);
	a->region[len[2]] = 0;
	memcpy(a->service, part[3], len[3]);
	a->service[len[3]] = 0;
	return 0;
}

int sigv4_parse_authorization(const char *v, size_t n, struct sigv4_auth *ret, const char **why)
{
	static const char alg[] = SIGV4_ALGORITHM " ";
	struct sigv4_auth a = { 0 };
	bool have_cred = false, have_sh = false, have_sig = false;

	if (n >= 22 && memcmp(v, "AWS4-ECDSA-P256-SHA256", 22) == 0) {
		*why = "SigV4a (AWS4-ECDSA-P256-SHA256) is not supported: sign with SigV4 (AWS4-HMAC-SHA256)";
		return -EPROTONOSUPPORT;
	}
	if (n < sizeof(alg) - 1 || memcmp(v, alg, sizeof(alg) - 1) != 0) {
		*why = "Authorization is not AWS Signature Version 4 (AWS4-HMAC-SHA256)";
		return -EPROTONOSUPPORT;
	}
	size_t i = sizeof(alg) - 1;
	while (i < n) {
		while (i < n && v[i] == ' ')
			i++;
		size_t start = i;
		while (i < n && v[i] != ',')
			i++;
		size_t end = i;
		while (end > start && v[end - 1] == ' ')
			end--;
		i++; /* the comma */
		const char *f = v + start;
		size_t fl = end - start;
		if (fl > 11 && memcmp(f, "Credential=", 11) == 0 && !have_cred) {
			int r = parse_credential(f + 11, fl - 11, &a, why);
			if (r < 0)
				return r;
			have_cred = true;
		} else if (fl > 14 && memcmp(f, "SignedHeaders=", 14) == 0 && !have_sh) {
			a.signed_headers = f + 14;
			a.signed_headers_len = fl - 14;
			if (!valid_signed_headers(a.signed_headers, a.signed_headers_len)) {
				*why = "SignedHeaders= is not a sorted list of lower-case header names";
				return -EINVAL;
			}
			have_sh = true;
		} else if (fl > 10 && memcmp(f, "Signature=", 10) == 0 && !have_sig) {
			if (fl - 10 != SIGV4_SIG_HEX || !is_lower_hex(f + 10, SIGV4_SIG_HEX)) {
				*why = "Signature= is not 64 lower-case hex digits";
				return -EINVAL;
			}
			have_sig = true;
		} else {
			*why = "Authorization has an unknown or repeated field (expected Credential=, SignedHeaders=, "
			       "Signature=)";
			return -EINVAL;
		}
	}
	if (!have_cred || !have_sh || !have_sig) {
		*why = "Authorization lacks Credential=, SignedHeaders= or Signature=";
		return -EINVAL;
	}
	*ret = a;
	return 0;
}

int sigv4_payload_kind(const char *v, size_t n, enum sigv4_payload *ret, const char **why)
{
	static const struct {
		const char *value;
		int kind; /* < 0: refused */
		const char *why;
	} known[] = {
		{ "UNSIGNED-PAYLOAD", SIGV4_PAYLOAD_UNSIGNED, NULL },
		{ "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", SIGV4_PAYLOAD_STREAMING, NULL },
		{ "STREAMING-UNSIGNED-PAYLOAD-TRAILER", SIGV4_PAYLOAD_UNSIGNED_TRAILER, NULL },
		{ "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", -1,
		  "x-amz-content-sha256 STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER (signed trailers) is not supported: "
		  "use STREAMING-AWS4-HMAC-SHA256-PAYLOAD or STREAMING-UNSIGNED-PAYLOAD-TRAILER" },
		{ "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", -1,
		  "SigV4a streaming (STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD) is not supported" },
		{ "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER", -1,
		  "SigV4a streaming (STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER) is not supported" },
	};
	if (n == SIGV4_SIG_HEX && is_lower_hex(v, n)) {
		*ret = SIGV4_PAYLOAD_HASH;
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (strlen(known[i].value) == n && memcmp(v, known[i].value, n) == 0) {
			if (known[i].kind < 0) {
				*why = known[i].why;
				return -EPROTONOSUPPORT;
			}
			*ret = (enum sigv4_payload)known[i].kind;
			return 0;
		}
	*why = "x-amz-content-sha256 is neither a lower-case hex SHA-256 nor a known payload mode";
	return -EINVAL;
}

/* ---- canonical request ---- */

/* The segments of path with "." and ".." resolved and empty ones dropped,
 * as AWS does for every service but S3. */
static int normalise_path(const char *p, size_t n, struct buf *out)
{
	size_t mark = out->len, pos = 0, len;
	const char *seg;
	int r = 0;
	if (n == 0)
		return buf_append(out, "/", 1);
	bool leading = p[0] == '/', trailing = p[n - 1] == '/';
	size_t segs = 0;
	while (r == 0 && field_next(p, n, &pos, '/', &seg, &len)) {
		if (len == 0 || (len == 1 && seg[0] == '.'))
			continue;
		if (len == 2 && seg[0] == '.' && seg[1] == '.') {
			if (segs) {
				/* drop the last segment written, and its slash */
				while (out->len > mark && out->data[out->len - 1] != '/')
					out->len--;
				if (out->len > mark)
					out->len--;
				segs--;
			}
			continue;
		}
		if (segs || leading)
			r = buf_append(out, "/", 1);
		if (r == 0)
			r = buf_append(out, seg, len);
		segs++;
	}
	if (r == 0 && segs && trailing)
		r = buf_append(out, "/", 1);
	if (r == 0 && out->len == mark && leading)
		r = buf_append(out, "/", 1);
	return r;
}

/* Percent-encodes every byte but the unreserved ones and '/'. */
static int encode_keep_slash(const char *p, size_t n, struct buf *out)
{
	size_t pos = 0, len;
	const char *seg;
	while (field_next(p, n, &pos, '/', &seg, &len)) {
		int r = percent_encode(seg, len, out);
		if (r == 0 && pos <= n)
			r = buf_append(out, "/", 1);
		if (r < 0)
			return r;
	}
	return 0;
}

int sigv4_canonical_uri(const char *path, size_t n, bool s3, struct buf *out)
{
	if (n == 0)
		return buf_append(out, "/", 1);
	if (s3)
		return buf_append(out, path, n);
	struct buf norm;
	buf_init(&norm, n + 2);
	int r = normalise_path(path, n, &norm);
	if (r == 0)
		r = encode_keep_slash(norm.data, norm.len, out);
	buf_free(&norm);
	return r;
}

struct qparam {
	char *key, *value; /* encoded, NUL-terminated */
};

static int cmp_qparam(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	return c ? c : strcmp(x->value, y->value);
}

/* Decodes and encodes again one key or value into a new string. */
static int requote(const char *s, size_t n, size_t max, char **ret)
{
	struct buf dec, enc;
	buf_init(&dec, max);
	buf_init(&enc, 3 * max + 1);
	int r = percent_decode(s, n, &dec);
	if (r == 0)
		r = percent_encode(dec.data ? dec.data : "", dec.len, &enc);
	if (r == 0)
		r = buf_append(&enc, "", 0); /* NUL-terminated even when empty */
	buf_free(&dec);
	if (r < 0) {
		buf_free(&enc);
		return r;
	}
	*ret = enc.data;
	return 0;
}

#define QUERY_PARAMS_MAX 1000

int sigv4_canonical_query(const char *q, size_t n, struct buf *out, const char **why)
{
	struct qparam *params = NULL;
	size_t np = 0, cap = 0, pos = 0, cl;
	const char *comp;
	int r = 0;

	while (q && r == 0 && field_next(q, n, &pos, '&', &comp, &cl)) {
		if (cl == 0)
			continue;
		if (np == QUERY_PARAMS_MAX) {
			*why = "the query has too many parameters to sign";
			r = -EINVAL;
			break;
		}
		if (np == cap) {
			size_t nc = cap ? 2 * cap : 16;
			struct qparam *g = realloc(params, nc * sizeof(*g));
			if (!g) {
				r = -ENOMEM;
				break;
			}
			params = g, cap = nc;
		}
		const char *eq = memchr(comp, '=', cl);
		size_t kl = eq ? (size_t)(eq - comp) : cl;
		struct qparam *pp = &params[np];
		pp->key = pp->value = NULL;
		r = requote(comp, kl, n, &pp->key);
		if (r == 0)
			r = requote(eq ? eq + 1 : "", eq ? cl - kl - 1 : 0, n, &pp->value);
		if (r < 0) {
			free(pp->key);
			if (r == -EINVAL)
				*why = "the query has a malformed percent escape";
			break;
		}
		np++;
	}
	if (r == 0 && np)
		qsort(params, np, sizeof(*params), cmp_qparam);
	for (size_t k = 0; k < np; k++) {
		if (r == 0 && k)
			r = buf_append(out, "&", 1);
		if (r == 0)
			r = buf_puts(out, params[k].key);
		if (r == 0)
			r = buf_append(out, "=", 1);
		if (r == 0)
			r = buf_puts(out, params[k].value);
		free(params[k].key);
		free(params[k].value);
	}
	free(params);
	return r;
}

/* One header value, trimmed, with runs of spaces folded to one. */
static int put_trimmed(struct buf *out, const char *v, size_t n)
{
	size_t i = 0;
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	while (i < n) {
		int r;
		if (v[i] == ' ' || v[i] == '\t') {
			while (i < n && (v[i] == ' ' || v[i] == '\t'))
				i++;
			r = buf_append(out, " ", 1);
		} else {
			size_t s = i;
			while (i < n && v[i] != ' ' && v[i] != '\t')
				i++;
			r = buf_append(out, v + s, i - s);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int put_canonical_headers(const struct sigv4_request *rq, struct buf *out, const char **why)
{
	const char *name;
	size_t pos = 0, nl;
	while (field_next(rq->signed_headers, rq->signed_headers_len, &pos, ';', &name, &nl)) {
		int r = buf_append(out, name, nl);
		if (r == 0)
			r = buf_append(out, ":", 1);
		bool found = false;
		for (size_t h = 0; r == 0 && h < rq->n_headers; h++) {
			const struct sigv4_header *x = &rq->headers[h];
			if (x->name_len != nl || strncasecmp(x->name, name, nl) != 0)
				continue;
			if (found)
				r = buf_append(out, ",", 1);
			if (r == 0)
				r = put_trimmed(out, x->value, x->value_len);
			found = true;
		}
		if (r == 0)
			r = buf_append(out, "\n", 1);
		if (r < 0)
			return r;
		if (!found) {
			/* a name the client signed, checked to be a header name */
			static _Thread_local char msg[160];
			snprintf(msg, sizeof(msg), "SignedHeaders= names %.*s, which is not sent upstream",
			         (int)(nl > 64 ? 64 : nl), name);
			*why = msg;
			return -EINVAL;
		}
	}
	return 0;
}

int sigv4_canonical_request(const struct sigv4_request *rq, struct buf *out, const char **why)
{
	int r = buf_append(out, rq->method, rq->method_len);
	if (r == 0)
		r = buf_append(out, "\n", 1);
	if (r == 0)
		r = sigv4_canonical_uri(rq->path, rq->path_len, rq->s3, out);
	if (r == 0)
		r = buf_append(out, "\n", 1);
	if (r == 0)
		r = sigv4_canonical_query(rq->query, rq->query_len, out, why);
	if (r == 0)
		r = buf_append(out, "\n", 1);
	if (r == 0)
		r = put_canonical_headers(rq, out, why);
	if (r == 0)
		r = buf_append(out, "\n", 1);
	if (r == 0)
		r = buf_append(out, rq->signed_headers, rq->signed_headers_len);
	if (r == 0)
		r = buf_append(out, "\n", 1);
	if (r == 0)
		r = buf_append(out, rq->payload_hash, rq->payload_hash_len);
	return r;
}

void sigv4_scope(const char *date, const char *region, const char *service, char out[SIGV4_SCOPE_MAX])
{
	snprintf(out, SIGV4_SCOPE_MAX, "%.8s/%.63s/%.63s/aws4_request", date, region, service);
}

static void sha256_hex(const void *p, size_t n, char out[SIGV4_SIG_HEX + 1])
{
	uint8_t md[32];
	SHA256(p, n, md);
	hex_encode(md, 32, out);
}

int sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq, size_t creq_len, struct buf *out)
{
	char h[SIGV4_SIG_HEX + 1];
	sha256_hex(creq, creq_len, h);
	return buf_printf(out, SIGV4_ALGORITHM "\n%s\n%s\n%s", amz_date, scope, h);
}

static void hmac(const uint8_t *key, size_t kl, const void *msg, size_t n, uint8_t out[32])
{
	unsigned len = 32;
	HMAC(EVP_sha256(), key, (int)kl, msg, n, out, &len);
}

int sigv4_signing_key(const uint8_t *secret, size_t secret_len, const char *date, const char *region,
                      const char *service, uint8_t key[32])
{
	uint8_t *k0 = malloc(secret_len + 4);
	uint8_t a[32], b[32];
	if (!k0)
		return -ENOMEM;
	memcpy(k0, "AWS4", 4);
	memcpy(k0 + 4, secret, secret_len);
	hmac(k0, secret_len + 4, date, strlen(date), a);
	hmac(a, 32, region, strlen(region), b);
	hmac(b, 32, service, strlen(service), a);
	hmac(a, 32, "aws4_request", 12, key);
	OPENSSL_cleanse(k0, secret_len + 4);
	OPENSSL_cleanse(a, sizeof(a));
	OPENSSL_cleanse(b, sizeof(b));
	free(k0);
	return 0;
}

void sigv4_sign(const uint8_t key[32], const char *msg, size_t n, char out[SIGV4_SIG_HEX + 1])
{
	uint8_t md[32];
	hmac(key, 32, msg, n, md);
	hex_encode(md, 32, out);
}

void sigv4_chunk_signature(const uint8_t key[32], const char *amz_date, const char *scope, const char *prev_sig,
                           const uint8_t data_hash[32], char out[SIGV4_SIG_HEX + 1])
{
	char msg[256 + SIGV4_SCOPE_MAX], h[SIGV4_SIG_HEX + 1];
	hex_encode(data_hash, 32, h);
	int n = snprintf(msg, sizeof(msg), SIGV4_ALGORITHM "-PAYLOAD\n%s\n%s\n%s\n" EMPTY_SHA256 "\n%s", amz_date,
	                 scope, prev_sig, h);
	sigv4_sign(key, msg, (size_t)n, out);
}

/* ---- aws-chunked ---- */

enum { CK_LINE, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_END_CR, CK_END_LF, CK_DONE };

#define CHUNK_SIG_EXT ";chunk-signature="

int sigv4_chunked_init(struct sigv4_chunked *s, const uint8_t key[32], const char *amz_date, const char *scope,
                       const char *seed_sig)
{
	memset(s, 0, sizeof(*s));
	memcpy(s->key, key, 32);
	snprintf(s->amz_date, sizeof(s->amz_date), "%s", amz_date);
	snprintf(s->scope, sizeof(s->scope), "%s", scope);
	snprintf(s->prev_sig, sizeof(s->prev_sig), "%s", seed_sig);
	buf_init(&s->data, SIGV4_CHUNK_MAX);
	s->state = CK_LINE;
	return 0;
}

void sigv4_chunked_free(struct sigv4_chunked *s)
{
	OPENSSL_cleanse(s->key, sizeof(s->key));
	buf_free(&s->data);
}

/* "HEX;chunk-signature=SIG" (the CRLF stripped). */
static int parse_chunk_line(struct sigv4_chunked *s, const char **why)
{
	const char *l = s->line;
	size_t n = s->line_len, d = 0;
	while (d < n && hex_value(l[d]) >= 0)
		d++;
	if (d == 0 || d > 8) {
		*why = "aws-chunked: a chunk size is not 1 to 8 hex digits";
		return -EBADMSG;
	}
	size_t el = strlen(CHUNK_SIG_EXT);
	if (n - d != el + SIGV4_SIG_HEX || memcmp(l + d, CHUNK_SIG_EXT, el) != 0 ||
	    !is_lower_hex(l + d + el, SIGV4_SIG_HEX)) {
		*why = "aws-chunked: a chunk header is not SIZE;chunk-signature=SIGNATURE";
		return -EBADMSG;
	}
	size_t size = 0;
	for (size_t i = 0; i < d; i++)
		size = size << 4 | (size_t)hex_value(l[i]);
	if (size > SIGV4_CHUNK_MAX) {
		*why = "aws-chunked: a chunk is larger than keyward re-signs (1 MiB)";
		return -EBADMSG;
	}
	memcpy(s->size_digits, l, d);
	s->size_digits[d] = 0;
	s->size = size;
	return 0;
}

/* Emits the chunk held in s (header, data, CRLF) with its new signature. */
static int emit_chunk(struct sigv4_chunked *s, sigv4_emit_fn emit, void *ctx)
{
	uint8_t md[32];
	char sig[SIGV4_SIG_HEX + 1], head[128];
	SHA256((const uint8_t *)(s->data.data ? s->data.data : ""), s->data.len, md);
	sigv4_chunk_signature(s->key, s->amz_date, s->scope, s->prev_sig, md, sig);
	memcpy(s->prev_sig, sig, sizeof(sig));
	int hl = snprintf(head, sizeof(head), "%s" CHUNK_SIG_EXT "%s\r\n", s->size_digits, sig);
	int r = emit(ctx, head, (size_t)hl);
	if (r == 0 && s->data.len)
		r = emit(ctx, s->data.data, s->data.len);
	if (r == 0 && s->size)
		r = emit(ctx, "\r\n", 2);
	s->chunks++;
	buf_reset(&s->data);
	return r;
}

int sigv4_chunked_feed(struct sigv4_chunked *s, const char *p, size_t n, sigv4_emit_fn emit, void *ctx,
                       const char **why)
{
	size_t i = 0;
	int r;
	while (i < n) {
		char ch = p[i];
		switch (s->state) {
		case CK_LINE:
			if (ch == '\n') {
				if (s->line_len == 0 || s->line[s->line_len - 1] != '\r') {
					*why = "aws-chunked: a chunk header does not end in CRLF";
					return -EBADMSG;
				}
				s->line_len--;
				r = parse_chunk_line(s, why);
				if (r < 0)
					return r;
				s->line_len = 0;
				s->state = s->size ? CK_DATA : CK_END_CR;
			} else if (s->line_len == sizeof(s->line)) {
				*why = "aws-chunked: a chunk header is too long";
				return -EBADMSG;
			} else {
				s->line[s->line_len++] = ch;
			}
			i++;
			break;
		case CK_DATA: {
			size_t want = s->size - s->data.len, take = n - i < want ? n - i : want;
			r = buf_append(&s->data, p + i, take);
			if (r < 0)
				return r;
			i += take;
			if (s->data.len == s->size)
				s->state = CK_DATA_CR;
			break;
		}
		case CK_DATA_CR:
		case CK_END_CR:
			if (ch != '\r') {
				*why = "aws-chunked: chunk data is not followed by CRLF";
				return -EBADMSG;
			}
			s->state = s->state == CK_DATA_CR ? CK_DATA_LF : CK_END_LF;
			i++;
			break;
		case CK_DATA_LF:
		case CK_END_LF:
			if (ch != '\n') {
				*why = "aws-chunked: chunk data is not followed by CRLF";
				return -EBADMSG;
			}
			i++;
			if (s->state == CK_DATA_LF) {
				r = emit_chunk(s, emit, ctx);
				s->state = CK_LINE;
			} else {
				r = emit_chunk(s, emit, ctx);
				if (r == 0)
					r = emit(ctx, "\r\n", 2);
				s->state = CK_DONE;
				s->done = true;
			}
			if (r < 0)
				return r;
			break;
		default:
			*why = "aws-chunked: bytes after the final chunk";
			return -EBADMSG;
		}
	}
	return 0;
}
