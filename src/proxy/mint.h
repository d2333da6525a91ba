/* Minting access tokens: the pure parts of the token manager (token.c).
 * Building the request to a token endpoint (OAuth2 client_credentials and
 * refresh_token grants, RFC 6749 4.4 and 6; a GitHub App installation
 * token), the RS256 JWT a GitHub App signs, and parsing the endpoint's
 * answer. No I/O here, so that every function can be unit-tested and the
 * parser fuzzed.
 *
 * Trust: the policy and the secrets are trusted; the endpoint's answer is
 * not (it is bounded, strictly parsed, and never quoted back whole, since
 * it holds the token). Every buffer that holds a secret is wiped by the
 * caller (mint_buf_wipe). */
#pragma once

#include <stdint.h>
#include <time.h>

#include "common/buf.h"
#include "common/secret.h"
#include "policy/policy.h"

/* The longest token endpoint answer read, head and body together. */
#define MINT_RESPONSE_MAX (64 * 1024)
/* The longest access or refresh token accepted. */
#define MINT_TOKEN_MAX 16384
/* A token answer without expires_in is taken to last this long. */
#define MINT_DEFAULT_LIFETIME 300
/* The JWT of a GitHub App: issued this long before now (clocks drift),
 * and expiring this long after now (GitHub refuses more than 10 min). */
#define MINT_JWT_BACKDATE 60
#define MINT_JWT_LIFETIME 540

/* The secrets a request to the token endpoint needs, borrowed. */
struct mint_secrets {
	const struct secret *client_id;     /* oauth2: or NULL */
	const struct secret *client_secret; /* oauth2: or NULL */
	const struct secret *refresh_token; /* oauth2_refresh: the newest one */
	const struct secret *private_key;   /* github_app: PEM */
};

/* Writes the complete HTTP/1.1 request (head and body) for cred's token
 * endpoint into out (caller's; holds secrets: wipe it). now is the wall
 * clock (for a GitHub App's JWT). Returns 0, or a negative errno with the
 * reason in why (never a secret). */
int mint_build_request(const struct policy_credential *cred, const struct mint_secrets *s, time_t now, struct buf *out,
                       char *why, size_t whylen) WUR;

/* The RS256 JWT of a GitHub App (RFC 7519, 7515): iss = app_id,
 * iat = now - MINT_JWT_BACKDATE, exp = now + MINT_JWT_LIFETIME, signed with
 * the PEM RSA private key. Appended to out. Returns 0 or a negative errno
 * (reason in why). */
int mint_jwt(const struct secret *pem, const char *app_id, time_t now, struct buf *out, char *why, size_t whylen) WUR;

/* base64url without padding (RFC 4648 5), appended to out. */
int mint_base64url(const void *in, size_t n, struct buf *out) WUR;

/* What the endpoint granted. The caller owns the secrets. */
struct mint_result {
	struct secret *access;  /* the access token */
	struct secret *refresh; /* a new refresh token (rotation), or NULL */
	int64_t lifetime;       /* seconds from when the request was sent, >= 1 */
};

/* Parses the endpoint's answer: HTTP status and JSON body. github: the
 * answer of /app/installations/ID/access_tokens ({"token", "expires_at"}),
 * else an OAuth2 token response (RFC 6749 5.1: access_token, token_type
 * Bearer, expires_in, refresh_token) or error (5.2). now is the wall clock
 * (for expires_at). Returns 0 and *ret, or a negative errno with the
 * reason in why: the status and the OAuth2 error code, never the body. */
int mint_parse_response(int status, const char *body, size_t n, bool github, time_t now, struct mint_result *ret,
                        char *why, size_t whylen) WUR;
void mint_result_clear(struct mint_result *r);

/* A buffer of max bytes allocated at once, so that it never moves (a
 * realloc would leave copies of the secrets it holds). Returns 0 or -ENOMEM. */
int mint_buf_init_secure(struct buf *b, size_t max) WUR;
/* Wipes and frees a buffer that held secrets. */
void mint_buf_wipe(struct buf *b);
