/* The token manager: access tokens that keyward mints for credentials of
 * kind oauth2_client_credentials, oauth2_refresh and github_app, cached
 * until shortly before they expire. See docs/proxy.md ("Minted tokens").
 *
 * - One fetch at a time per credential, on a thread of its own (a
 *   blocking HTTPS request with a deadline), so that no worker's event
 *   loop ever waits for a token endpoint. Requests that need the token
 *   meanwhile wait (a bounded number, for a bounded time) and are woken on
 *   their own worker by event_active.
 * - A token is never handed out once less than its margin is left
 *   (a quarter of its lifetime, at most 60 s): a request is never sent
 *   with a token keyward knows has expired. Within twice the margin of its
 *   end, a request that uses it starts a fetch in the background.
 * - The newest refresh token the provider issued is kept in memory.
 *
 * Trust: tokens are secrets (struct secret, wiped on free) and appear in
 * no log, message or audit record; the token endpoint is reached over
 * verified TLS with the SSRF rules of routes. */
#pragma once

#include <event2/event.h>
#include <stdbool.h>
#include <sys/queue.h>

#include "common/secret.h"
#include "common/util.h"
#include "policy/policy.h"
#include "proxy/mailbox.h"

struct proxy;
struct gen;
struct tokens;
struct token_slot;
struct redact_set;

/* The whole deadline of one fetch: connect, TLS, request and answer. */
#define TOKEN_FETCH_SECONDS 10
/* How long a request waits for a token before it gets 503. */
#define TOKEN_WAIT_SECONDS 15
/* Requests that may wait for one credential's token at once. */
#define TOKEN_WAITERS_MAX 4096

/* A minted access token, shared by the requests that use it. */
struct token;

struct token *token_ref(struct token *t);
void token_unref(struct token *t); /* NULL is a no-op */
const struct secret *token_value(const struct token *t);
/* Whether t's lifetime, as the endpoint gave it, is over. */
bool token_expired(const struct token *t);

/* A request waiting for a token. The caller owns it, its event (made
 * with the worker's base and a callback of its own, added with a timeout
 * of TOKEN_WAIT_SECONDS) and sets mb to its worker's mailbox; when the
 * fetch ends, the fetching thread posts a letter there that makes the
 * event active on the worker, and tok (or why) says how it went. */
struct token_wait {
	TAILQ_ENTRY(token_wait) link;
	struct token_slot *slot; /* while queued */
	struct event *ev;
	struct mailbox *mb;
	struct letter letter; /* token.c's */
	bool done;
	struct token *tok; /* done: the token (the waiter's reference), or NULL */
	char why[300];     /* done and !tok: the reason, for a 503 */
};

/* The digests of a minted credential's definition, never of a secret's
 * value (a rotated secret leaves them as they are). endpoint: where its
 * tokens come from (the kind, the endpoint, the CA file trusted for it,
 * allow_private, how the client authenticates, where each part is read
 * from); a rotated refresh token is kept only while it is the same, so
 * that it is never sent to another endpoint or used by another client.
 * def: that and what a token is asked for (scopes, audience, the GitHub
 * App installation, repositories, permissions); an access token is used
 * only while it is the same: one minted under another definition (a
 * reload that narrowed the scopes) may carry more rights than the policy
 * now grants, or belong to another service. Made once per policy load
 * (proxy.c), compared by every tokens_get. */
struct token_def {
	unsigned char endpoint[32];
	unsigned char def[32];
};
int token_def_digest(const struct policy *p, const struct policy_credential *cred, struct token_def *ret) WUR;

/* The manager of one proxy. pins/audit are borrowed from px. */
int tokens_new(struct proxy *px, struct tokens **ret) WUR;
/* Waits for fetches in flight (at most TOKEN_FETCH_SECONDS) and frees. */
void tokens_free(struct tokens *tm);

/* The current token of cred (a minted kind) from generation g. Returns 1
 * and *ret (a reference) if one is cached; 0 if w was queued (a fetch runs
 * or was started: w->ev fires later); or a negative errno with the reason
 * in why (nothing queued). */
int tokens_get(struct tokens *tm, struct gen *g, const struct policy_credential *cred, struct token_wait *w,
               struct token **ret, char *why, size_t whylen) WUR;
/* Takes w off its queue if it is still there, and drops its result. */
void tokens_wait_cancel(struct tokens *tm, struct token_wait *w);
/* The upstream refused t (401): if t is still cred's current token, it is
 * dropped, so that the next tokens_get fetches a new one. */
void tokens_rejected(struct tokens *tm, const struct policy_credential *cred, const struct token *t);
/* The redaction forms of every minted secret the manager holds: each
 * credential's current token, the one it replaced until that one expires,
 * and the newest refresh token, each mapped to its credential's
 * placeholder. Built once per change, shared by the requests that take a
 * reference (token_forms_unref); NULL while no token was ever fetched.
 * A negative errno if it cannot be built: the caller must not go on
 * without it. */
struct token_forms;
int tokens_forms(struct tokens *tm, struct token_forms **ret) WUR;
void token_forms_unref(struct token_forms *f); /* NULL is a no-op */
const struct redact_set *token_forms_set(const struct token_forms *f);
