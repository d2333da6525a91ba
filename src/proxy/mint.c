/* Token endpoint requests and answers, and the GitHub App JWT (mint.h). */
#include "proxy/mint.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/encode.h"

#define MINT_REQUEST_MAX (256 * 1024)

void mint_buf_wipe(struct buf *b)
{
	if (b->data)
		OPENSSL_cleanse(b->data, b->cap);
	buf_free(b);
}

/* Sizes b to hold max bytes at once: a buffer that grew by realloc would
 * leave copies of the secrets it held in freed memory. */
int mint_buf_init_secure(struct buf *b, size_t max)
{
	buf_init(b, max);
	char zero[4096] = { 0 };
	int r = 0;
	for (size_t n = 0; r == 0 && n < max; n += sizeof(zero))
		r = buf_append(b, zero, max - n < sizeof(zero) ? max - n : sizeof(zero));
	buf_reset(b);
	return r;
}

int mint_base64url(const void *in, size_t n, struct buf *out)
{
	size_t start = out->len;
	int r = base64_encode(in, n, out);
	if (r < 0)
		return r;
	size_t j = start;
	for (size_t i = start; i < out->len; i++) {
		char ch = out->data[i];
		if (ch == '=')
			continue;
		out->data[j++] = ch == '+' ? '-' : ch == '/' ? '_' : ch;
	}
	out->len = j;
	out->data[j] = '\0';
	return 0;
}

int mint_jwt(const struct secret *pem, const char *app_id, time_t now, struct buf *out, char *why, size_t whylen)
{
	char payload[160];
	unsigned char sig[1024];
	size_t sig_len = sizeof(sig);
	int r = -EINVAL;

	BIO *bio = BIO_new_mem_buf(pem->data, (int)pem->len);
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
	BIO_free(bio);
	if (!key) {
		ERR_clear_error();
		snprintf(why, whylen, "the private key is not a PEM private key without a passphrase");
		return -EINVAL;
	}
	if (!EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_get_bits(key) < 2048 || EVP_PKEY_get_size(key) > (int)sizeof(sig)) {
		snprintf(why, whylen,
		         "the private key is not an RSA key of 2048 to 8192 bits (GitHub Apps sign with RS256)");
		EVP_PKEY_free(key);
		return -EINVAL;
	}
	snprintf(payload, sizeof(payload), "{\"iat\":%lld,\"exp\":%lld,\"iss\":\"%s\"}",
	         (long long)(now - MINT_JWT_BACKDATE), (long long)(now + MINT_JWT_LIFETIME), app_id);
	size_t start = out->len;
	static const char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	if (mint_base64url(header, strlen(header), out) < 0 || buf_puts(out, ".") < 0 ||
	    mint_base64url(payload, strlen(payload), out) < 0) {
		snprintf(why, whylen, "out of memory");
		r = -ENOMEM;
		goto end;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	          EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)out->data + start, out->len - start) == 1;
	EVP_MD_CTX_free(md);
	if (!ok) {
		snprintf(why, whylen, "signing the JWT failed");
		goto end;
	}
	if (buf_puts(out, ".") < 0 || mint_base64url(sig, sig_len, out) < 0) {
		snprintf(why, whylen, "out of memory");
		r = -ENOMEM;
		goto end;
	}
	r = 0;
end:
	EVP_PKEY_free(key);
	return r;
}

static int put_form(struct buf *b, const char *key, const void *val, size_t n)
{
	int r = buf_puts(b, b->len ? "&" : "");
	if (r == 0)
		r = buf_puts(b, key);
	if (r == 0)
		r = buf_puts(b, "=");
	return r ? r : percent_encode(val, n, b);
}

static int put_scopes(struct buf *b, char **scopes)
{
	if (!scopes)
		return 0;
	int r = buf_puts(b, "&scope=");
	for (size_t i = 0; r == 0 && scopes[i]; i++) {
		if (i)
			r = buf_puts(b, "%20");
		if (r == 0)
			r = percent_encode(scopes[i], strlen(scopes[i]), b);
	}
	return r;
}

/* RFC 6749 2.3.1: Basic with the form-encoded id and secret. */
static int put_basic(struct buf *head, const struct mint_secrets *s)
{
	struct buf pair;
	int r = mint_buf_init_secure(&pair, MINT_REQUEST_MAX / 2);
	if (r == 0)
		r = percent_encode((const char *)s->client_id->data, s->client_id->len, &pair);
	if (r == 0)
		r = buf_puts(&pair, ":");
	if (r == 0)
		r = percent_encode((const char *)s->client_secret->data, s->client_secret->len, &pair);
	if (r == 0)
		r = buf_puts(head, "Authorization: Basic ");
	if (r == 0)
		r = base64_encode(pair.data, pair.len, head);
	if (r == 0)
		r = buf_puts(head, "\r\n");
	mint_buf_wipe(&pair);
	return r;
}

/* The form of an OAuth2 grant, and its client authentication: Basic in
 * the head unless client_auth: post or the client has no secret. */
static int oauth2_body(const struct policy_credential *cred, const struct mint_secrets *s, struct buf *head,
                       struct buf *body)
{
	const struct policy_mint *m = cred->mint;
	int r;
	if (cred->kind == CRED_OAUTH2_REFRESH) {
		r = put_form(body, "grant_type", "refresh_token", 13);
		if (r == 0)
			r = put_form(body, "refresh_token", s->refresh_token->data, s->refresh_token->len);
	} else {
		r = put_form(body, "grant_type", "client_credentials", 18);
	}
	if (r == 0)
		r = put_scopes(body, m->scopes);
	if (r == 0 && m->audience)
		r = put_form(body, "audience", m->audience, strlen(m->audience));
	if (r < 0 || !s->client_id)
		return r;
	if (s->client_secret && !m->client_auth_post)
		return put_basic(head, s);
	r = put_form(body, "client_id", s->client_id->data, s->client_id->len);
	if (r == 0 && s->client_secret)
		r = put_form(body, "client_secret", s->client_secret->data, s->client_secret->len);
	return r;
}

/* {"repositories":[...],"permissions":{...}}: names checked by the policy. */
static int github_body(const struct policy_mint *m, struct buf *body)
{
	int r = buf_puts(body, "{");
	bool comma = false;
	if (r == 0 && m->repositories) {
		r = buf_puts(body, "\"repositories\":[");
		for (size_t i = 0; r == 0 && m->repositories[i]; i++)
			r = buf_printf(body, "%s\"%s\"", i ? "," : "", m->repositories[i]);
		if (r == 0)
			r = buf_puts(body, "]");
		comma = true;
	}
	if (r == 0 && m->permissions) {
		r = buf_printf(body, "%s\"permissions\":{", comma ? "," : "");
		for (size_t i = 0; r == 0 && m->permissions[i]; i += 2)
			r = buf_printf(body, "%s\"%s\":\"%s\"", i ? "," : "", m->permissions[i], m->permissions[i + 1]);
		if (r == 0)
			r = buf_puts(body, "}");
	}
	return r ? r : buf_puts(body, "}");
}

int mint_build_request(const struct policy_credential *cred, const struct mint_secrets *s, time_t now, struct buf *out,
                       char *why, size_t whylen)
{
	const struct policy_mint *m = cred->mint;
	struct buf head, body;
	bool github = cred->kind == CRED_GITHUB_APP;
	int r = mint_buf_init_secure(&head, MINT_REQUEST_MAX / 2);
	if (r == 0)
		r = mint_buf_init_secure(&body, MINT_REQUEST_MAX / 2);
	if (r < 0) {
		buf_free(&head);
		snprintf(why, whylen, "out of memory");
		return r;
	}
	bool v6 = strchr(m->host, ':') != NULL;
	r = buf_printf(&head, "POST %s HTTP/1.1\r\nHost: %s%s%s", m->path, v6 ? "[" : "", m->host, v6 ? "]" : "");
	if (r == 0 && m->port != 443)
		r = buf_printf(&head, ":%u", m->port);
	if (r == 0)
		r = buf_puts(&head, "\r\nUser-Agent: keyward\r\nConnection: close\r\n");
	if (r == 0 && github) {
		r = buf_puts(&head, "Accept: application/vnd.github+json\r\nX-GitHub-Api-Version: 2022-11-28\r\n"
		                    "Content-Type: application/json\r\nAuthorization: Bearer ");
		if (r == 0) {
			r = mint_jwt(s->private_key, m->app_id, now, &head, why, whylen);
			if (r < 0)
				goto end;
		}
		if (r == 0)
			r = buf_puts(&head, "\r\n");
		if (r == 0)
			r = github_body(m, &body);
	} else if (r == 0) {
		r = buf_puts(&head, "Accept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n");
		if (r == 0)
			r = oauth2_body(cred, s, &head, &body);
	}
	if (r == 0)
		r = buf_printf(&head, "Content-Length: %zu\r\n\r\n", body.len);
	if (r == 0)
		r = buf_append(out, head.data, head.len);
	if (r == 0)
		r = buf_append(out, body.data, body.len);
	if (r < 0)
		snprintf(why, whylen, "the token request is too large");
end:
	mint_buf_wipe(&head);
	mint_buf_wipe(&body);
	return r;
}

/* ---- the answer ---- */

void mint_result_clear(struct mint_result *r)
{
	secret_free(r->access);
	secret_free(r->refresh);
	*r = (struct mint_result){ 0 };
}

/* A token string of the answer as a secret, checked like any secret: no
 * control byte, since it goes into a header line. */
static int take_token(json_t *obj, const char *key, bool required, struct secret **ret, char *why, size_t whylen)
{
	json_t *v = json_object_get(obj, key);
	if (!v && !required)
		return 0;
	if (!json_is_string(v)) {
		snprintf(why, whylen, "the token endpoint's answer has no string \"%s\"", key);
		return -EBADMSG;
	}
	size_t n = json_string_length(v);
	char vwhy[160];
	if (n > MINT_TOKEN_MAX || secret_value_check(json_string_value(v), n, vwhy, sizeof(vwhy)) < 0) {
		snprintf(
		    why, whylen,
		    "the token endpoint's \"%s\" is not usable (empty, longer than %d bytes or with a control byte)",
		    key, MINT_TOKEN_MAX);
		return -EBADMSG;
	}
	return secret_new(json_string_value(v), n, ret);
}

/* "2026-11-23T20:14:10Z" (GitHub's expires_at) as a time_t. */
static int parse_utc(const char *s, time_t *ret)
{
	struct tm tm = { 0 };
	const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!end || *end)
		return -EINVAL;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*ret = t;
	return 0;
}

/* The error code of a refusal, when it is one of the codes RFC 6749 5.2
 * (and 4.1.2.1, RFC 8628 3.5, RFC 8693 2.2.2) defines. Any other string
 * is the endpoint's own and is not shown, however tame it looks: an
 * endpoint may echo what it was sent (the client secret, a refresh
 * token) into it. The description is free text and is never shown. */
static void error_code(json_t *obj, char *out, size_t len)
{
	static const char *const known[] = {
		"invalid_request",        "invalid_client",
		"invalid_grant",          "unauthorized_client",
		"unsupported_grant_type", "invalid_scope",
		"access_denied",          "unsupported_response_type",
		"server_error",           "temporarily_unavailable",
		"authorization_pending",  "slow_down",
		"expired_token",          "invalid_target",
	};
	json_t *e = json_is_object(obj) ? json_object_get(obj, "error") : NULL;
	const char *s = json_is_string(e) ? json_string_value(e) : "";
	out[0] = 0;
	for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
		if (streq(s, known[i])) {
			snprintf(out, len, " (%s)", known[i]);
			return;
		}
	}
}

#define LIFETIME_MAX (366LL * 24 * 3600)

static int oauth2_lifetime(json_t *obj, int64_t *ret, char *why, size_t whylen)
{
	json_t *v = json_object_get(obj, "expires_in");
	json_int_t n;
	if (!v || json_is_null(v)) {
		*ret = MINT_DEFAULT_LIFETIME;
		return 0;
	}
	if (json_is_integer(v)) {
		n = json_integer_value(v);
	} else if (json_is_string(v)) { /* some providers send "3600" */
		const char *s = json_string_value(v);
		char *end;
		errno = 0;
		n = strtoll(s, &end, 10);
		if (!*s || *end || errno)
			n = -1;
	} else {
		n = -1;
	}
	if (n < 1 || n > LIFETIME_MAX) {
		snprintf(why, whylen, "the token endpoint's expires_in is not a number of seconds from 1 to %lld",
		         LIFETIME_MAX);
		return -EBADMSG;
	}
	*ret = n;
	return 0;
}

int mint_parse_response(int status, const char *body, size_t n, bool github, time_t now, struct mint_result *ret,
                        char *why, size_t whylen)
{
	struct mint_result res = { 0 };
	char code[80];
	int r = -EBADMSG;

	json_t *obj = n <= MINT_RESPONSE_MAX ? json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL) : NULL;
	if (status < 200 || status > 299) {
		error_code(obj, code, sizeof(code));
		snprintf(why, whylen, "the token endpoint answered %d%s", status, code);
		r = -EACCES;
		goto end;
	}
	if (!json_is_object(obj)) {
		snprintf(why, whylen, "the token endpoint's answer (status %d) is not a JSON object", status);
		goto end;
	}
	if (github) {
		json_t *exp = json_object_get(obj, "expires_at");
		time_t at;
		r = take_token(obj, "token", true, &res.access, why, whylen);
		if (r < 0)
			goto end;
		if (!json_is_string(exp) || parse_utc(json_string_value(exp), &at) < 0) {
			snprintf(why, whylen,
			         "the token endpoint's answer has no expires_at of the form 2006-01-02T15:04:05Z");
			r = -EBADMSG;
			goto end;
		}
		if (at <= now || at - now > LIFETIME_MAX) {
			snprintf(why, whylen,
			         "the token endpoint's token has expired already (expires_at is not in the future)");
			r = -EBADMSG;
			goto end;
		}
		res.lifetime = at - now;
	} else {
		json_t *type = json_object_get(obj, "token_type");
		r = take_token(obj, "access_token", true, &res.access, why, whylen);
		if (r == 0 && type && (!json_is_string(type) || strcasecmp(json_string_value(type), "bearer") != 0)) {
			/* RFC 6749 7.1: other types (mac, DPoP) need more than a header */
			snprintf(why, whylen, "the token endpoint issued a token whose token_type is not Bearer");
			r = -EBADMSG;
		}
		if (r == 0)
			r = oauth2_lifetime(obj, &res.lifetime, why, whylen);
		if (r == 0)
			r = take_token(obj, "refresh_token", false, &res.refresh, why, whylen);
		if (r < 0)
			goto end;
	}
	*ret = res;
	res = (struct mint_result){ 0 };
	r = 0;
end:
	mint_result_clear(&res);
	json_decref(obj); /* jansson does not wipe: the token string is freed unwiped; see docs/proxy.md */
	return r;
}
