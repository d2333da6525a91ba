/* The token manager (token.h): a cache of minted access tokens, one fetch
 * at a time per credential on a thread of its own.
 *
 * Trust: the policy and the secret sources are trusted. The token
 * endpoint is reached like an upstream: verified TLS (system roots plus
 * the credential's or the policy's upstream_ca), --resolve pins, and no
 * loopback/private address unless the credential allows it. Its answer is
 * bounded (MINT_RESPONSE_MAX) and parsed by mint.c. Tokens live in struct
 * secret; the buffers that carried them are wiped. */
#include "proxy/token.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/addr.h"
#include "proxy/internal.h"
#include "proxy/mint.h"
#include "proxy/redact.h"

#define TOKEN_SLOTS_MAX  256
#define TOKEN_MARGIN_MAX 60 /* seconds */
#define TOKEN_BODY_MAX   MINT_RESPONSE_MAX

struct token {
	atomic_int refs;
	struct secret *value;
	struct timespec refresh_after; /* monotonic: a new one is fetched in the background after this */
	struct timespec usable_until;  /* monotonic: not handed out after this */
	struct timespec expires;       /* monotonic: never sent after this */
};

/* One credential (by name, so that a cached token and a rotated refresh
 * token survive a reload that leaves the credential as it was, and a
 * rotation of its secrets). */
struct token_slot {
	char *name;
	/* The definition that cur, refresh and the fetch in flight were made
	 * under (token.h); has_def false until the first tokens_get. */
	struct token_def def;
	bool has_def;
	struct tokens *tm;
	struct token *cur;
	struct token *prev;          /* the token cur replaced: it may be valid still */
	char *placeholder;           /* the credential's, for redaction */
	struct secret *refresh;      /* the newest refresh token, or NULL */
	struct secret *refresh_seed; /* the source's value it descends from */
	bool fetching;
	TAILQ_HEAD(, token_wait) waiters;
	unsigned n_waiters;
	/* the fetch in flight: borrowed from gen, which it holds */
	struct gen *gen;
	const struct policy_credential *cred;
};

struct tokens {
	struct proxy *px;
	pthread_mutex_t lock;
	pthread_cond_t idle; /* signalled when a fetch thread ends */
	unsigned running;
	struct token_slot *slots[TOKEN_SLOTS_MAX];
	size_t n_slots;
	/* the redaction forms of every slot's tokens (tokens_forms): rebuilt
	 * on the first request after one of them changed */
	struct token_forms *forms;
	bool forms_stale;
	atomic_bool holds; /* a fetch has started: there may be forms */
};

struct token_forms {
	atomic_int refs;
	struct redact_set *set;
};

struct token *token_ref(struct token *t)
{
	atomic_fetch_add(&t->refs, 1);
	return t;
}

void token_unref(struct token *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	secret_free(t->value);
	free(t);
}

const struct secret *token_value(const struct token *t)
{
	return t->value;
}

static bool before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static bool token_usable(const struct token *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return before(&now, &t->usable_until);
}

static bool token_due(const struct token *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return !before(&now, &t->refresh_after);
}

bool token_expired(const struct token *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return !before(&now, &t->expires);
}

int tokens_new(struct proxy *px, struct tokens **ret)
{
	struct tokens *tm = calloc(1, sizeof(*tm));
	if (!tm)
		return -ENOMEM;
	tm->px = px;
	pthread_mutex_init(&tm->lock, NULL);
	pthread_cond_init(&tm->idle, NULL);
	*ret = tm;
	return 0;
}

void tokens_free(struct tokens *tm)
{
	if (!tm)
		return;
	pthread_mutex_lock(&tm->lock);
	while (tm->running)
		pthread_cond_wait(&tm->idle, &tm->lock);
	pthread_mutex_unlock(&tm->lock);
	for (size_t i = 0; i < tm->n_slots; i++) {
		struct token_slot *s = tm->slots[i];
		token_unref(s->cur);
		token_unref(s->prev);
		secret_free(s->refresh);
		secret_free(s->refresh_seed);
		free(s->placeholder);
		free(s->name);
		free(s);
	}
	token_forms_unref(tm->forms);
	pthread_cond_destroy(&tm->idle);
	pthread_mutex_destroy(&tm->lock);
	free(tm);
}

/* Called with tm->lock held. */
static struct token_slot *slot_find(struct tokens *tm, const char *name, bool add)
{
	for (size_t i = 0; i < tm->n_slots; i++)
		if (streq(tm->slots[i]->name, name))
			return tm->slots[i];
	if (!add || tm->n_slots == TOKEN_SLOTS_MAX)
		return NULL;
	struct token_slot *s = calloc(1, sizeof(*s));
	if (!s || !(s->name = strdup(name))) {
		free(s);
		return NULL;
	}
	s->tm = tm;
	TAILQ_INIT(&s->waiters);
	tm->slots[tm->n_slots++] = s;
	return s;
}

/* Appends a field of the definition: its length first, so that no two
 * definitions hash alike by moving bytes between fields. */
static int def_put(EVP_MD_CTX *md, const char *s)
{
	uint64_t n = s ? strlen(s) + 1 : 0; /* 0: absent; 1: empty */
	return EVP_DigestUpdate(md, &n, sizeof(n)) == 1 && (!s || EVP_DigestUpdate(md, s, n - 1) == 1) ? 0 : -EIO;
}

static int def_put_strv(EVP_MD_CTX *md, char **v)
{
	int r = def_put(md, v ? "list" : NULL);
	for (size_t i = 0; r == 0 && v && v[i]; i++)
		r = def_put(md, v[i]);
	return r == 0 ? def_put(md, NULL) : r;
}

/* Feeds what says where cred's tokens come from: the kind, the endpoint
 * and how it is reached (the CA file trusted for it, ca_path: the
 * credential's upstream_ca, else the policy's; allow_private; how the
 * client authenticates) and where each part is read from. Names only, no
 * file contents. */
static int def_put_endpoint(EVP_MD_CTX *md, const struct policy_credential *cred, const char *ca_path)
{
	const struct policy_mint *m = cred->mint;
	char num[32];
	snprintf(num, sizeof(num), "%d %d %d", (int)cred->kind, m->client_auth_post, m->allow_private);
	int r = def_put(md, num);
	if (r == 0)
		r = def_put(md, m->url);
	if (r == 0)
		r = def_put(md, ca_path);
	for (int i = 0; r == 0 && i < CRED_MAX_PARTS; i++) {
		const struct policy_credential *pc = cred->parts[i];
		snprintf(num, sizeof(num), "%d %d", i, pc ? (int)pc->source : -1);
		r = def_put(md, num);
		if (r == 0)
			r = def_put(md, pc ? pc->source_arg : NULL);
	}
	return r;
}

/* Feeds what a token is asked for: scopes, audience, the GitHub App
 * installation, repositories and permissions. */
static int def_put_grant(EVP_MD_CTX *md, const struct policy_credential *cred)
{
	const struct policy_mint *m = cred->mint;
	int r = def_put_strv(md, m->scopes);
	if (r == 0)
		r = def_put(md, m->audience);
	if (r == 0)
		r = def_put(md, m->app_id);
	if (r == 0)
		r = def_put(md, m->installation_id);
	if (r == 0)
		r = def_put_strv(md, m->repositories);
	if (r == 0)
		r = def_put_strv(md, m->permissions);
	return r;
}

int token_def_digest(const struct policy *p, const struct policy_credential *cred, struct token_def *ret)
{
	const char *ca_path = cred->mint->upstream_ca ? cred->mint->upstream_ca : p->upstream_ca;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
	if (r == 0)
		r = def_put_endpoint(md, cred, ca_path);
	if (r == 0 && EVP_DigestFinal_ex(md, ret->endpoint, NULL) != 1)
		r = -EIO;
	if (r == 0 && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		r = -EIO;
	if (r == 0 && EVP_DigestUpdate(md, ret->endpoint, sizeof(ret->endpoint)) != 1)
		r = -EIO;
	if (r == 0)
		r = def_put_grant(md, cred);
	if (r == 0 && EVP_DigestFinal_ex(md, ret->def, NULL) != 1)
		r = -EIO;
	EVP_MD_CTX_free(md);
	return r;
}

/* Makes s hold the state of the definition (endpoint, def): a token made
 * under another def is no longer used (it is kept as prev, for redaction),
 * and a rotated refresh token made under another endpoint is dropped (the
 * next fetch starts from the source's). Returns false if a fetch under
 * another definition is in flight, whose result s cannot take for this
 * one. Called with tm->lock held. */
static bool slot_adopt(struct token_slot *s, const struct token_def *d)
{
	if (s->has_def && memcmp(s->def.def, d->def, sizeof(d->def)) == 0)
		return true;
	if (s->fetching)
		return false;
	if (s->cur) {
		/* no longer attached, but it may be valid still and stored by a
		 * service: it stays in the redaction forms until it expires */
		token_unref(s->prev);
		s->prev = s->cur;
		s->cur = NULL;
		s->tm->forms_stale = true;
	}
	if (!s->has_def || memcmp(s->def.endpoint, d->endpoint, sizeof(d->endpoint)) != 0) {
		secret_free(s->refresh);
		s->refresh = NULL;
		secret_free(s->refresh_seed);
		s->refresh_seed = NULL;
		s->tm->forms_stale = true;
	}
	s->def = *d;
	s->has_def = true;
	return true;
}

static const struct secret *part_secret(struct gen *g, const struct policy_credential *cred, int part)
{
	const struct policy_credential *pc = cred->parts[part];
	return pc ? g->secrets[pc - g->policy->creds] : NULL;
}

/* The first part the kind needs whose source failed, or NULL. */
static const struct policy_credential *missing_part(struct gen *g, const struct policy_credential *cred)
{
	for (int i = 0; i < CRED_MAX_PARTS; i++)
		if (cred->parts[i] && !part_secret(g, cred, i))
			return cred->parts[i];
	return NULL;
}

/* ---- one HTTPS exchange, blocking, with a deadline ---- */

struct exchange {
	struct timespec deadline;
	int fd;
	SSL *ssl;
	struct buf raw;  /* the answer as read (wiped) */
	struct buf body; /* its body, de-chunked (wiped) */
	struct http1 parser;
	struct http_header hdrs[100];
	struct http_head head;
	int status;
};

static int remaining_ms(const struct exchange *x)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (x->deadline.tv_sec - now.tv_sec) * 1000 + (x->deadline.tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* The addresses of the endpoint: a --resolve pin, an IP literal, or DNS. */
static int endpoint_addrs(struct tokens *tm, const struct policy_mint *m, struct sockaddr_storage *addrs,
                          socklen_t *lens, int max, char *why, size_t whylen)
{
	struct proxy *px = tm->px;
	for (size_t i = 0; i < px->n_pins; i++)
		if (streq(px->pins[i].host, m->host)) {
			addrs[0] = px->pins[i].addr;
			lens[0] = px->pins[i].len;
			return 1;
		}
	if (addr_parse_literal(m->host, 0, &addrs[0], &lens[0]) == 0)
		return 1;
	if (policy_host_is_localhost(m->host) && max >= 2) {
		/* loopback without DNS, as upstream_get: RFC 6761 6.3 */
		if (addr_parse_literal("127.0.0.1", 0, &addrs[0], &lens[0]) < 0 ||
		    addr_parse_literal("::1", 0, &addrs[1], &lens[1]) < 0)
			return -EINVAL;
		return 2;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
	int e = getaddrinfo(m->host, NULL, &hints, &res);
	if (e != 0) {
		snprintf(why, whylen, "cannot resolve %s: %s", m->host, gai_strerror(e));
		return -EHOSTUNREACH;
	}
	int n = 0;
	for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(addrs[0]))
			continue;
		memcpy(&addrs[n], ai->ai_addr, ai->ai_addrlen);
		lens[n++] = (socklen_t)ai->ai_addrlen;
	}
	freeaddrinfo(res);
	return n;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static int dial(struct tokens *tm, const struct policy_mint *m, struct exchange *x, char *why, size_t whylen)
{
	struct sockaddr_storage addrs[MAX_ADDRS];
	socklen_t lens[MAX_ADDRS];
	int n = endpoint_addrs(tm, m, addrs, lens, MAX_ADDRS, why, whylen);
	if (n <= 0) {
		if (n == 0)
			snprintf(why, whylen, "%s has no address", m->host);
		return -EHOSTUNREACH;
	}
	snprintf(why, whylen, "cannot connect to %s", m->host);
	for (int i = 0; i < n; i++) {
		const char *what;
		char a[64];
		set_port(&addrs[i], m->port);
		addr_format((struct sockaddr *)&addrs[i], a, sizeof(a));
		if (!m->allow_private && addr_is_restricted((struct sockaddr *)&addrs[i], &what)) {
			snprintf(
			    why, whylen,
			    "%s resolves to %s, a %s address; the credential may allow this with allow_private: true",
			    m->host, a, what);
			continue;
		}
		int fd = socket(addrs[i].ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		int r = connect(fd, (struct sockaddr *)&addrs[i], lens[i]);
		if (r < 0 && errno == EINPROGRESS) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			int err = 0;
			socklen_t el = sizeof(err);
			r = poll(&p, 1, remaining_ms(x)) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
			            !err
			        ? 0
			        : -1;
			if (r < 0)
				snprintf(why, whylen, "cannot connect to %s (%s): %s", m->host, a,
				         err ? strerror(err) : "timed out");
		} else if (r < 0) {
			snprintf(why, whylen, "cannot connect to %s (%s): %s", m->host, a, strerror(errno));
		}
		if (r == 0) {
			x->fd = fd;
			return 0;
		}
		close(fd);
		if (remaining_ms(x) == 0)
			break;
	}
	return -ECONNREFUSED;
}

/* Arms the socket's timeouts from the deadline before each blocking call. */
/* After an SSL call on the (non-blocking) socket that returned ret: 1
 * once the socket is ready for what the call waits for, 0 if the fetch's
 * time ran out first, -1 if the call failed for another reason. Every
 * wait counts against the one deadline of the fetch: an endpoint that
 * trickles a byte at a time cannot stretch it. */
static int ssl_wait(struct exchange *x, int ret)
{
	int e = SSL_get_error(x->ssl, ret);
	short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
	if (!ev)
		return -1;
	for (;;) {
		int ms = remaining_ms(x);
		if (ms == 0)
			return 0;
		struct pollfd p = { .fd = x->fd, .events = ev };
		int n = poll(&p, 1, ms);
		if (n != 0 || errno != EINTR)
			return n > 0 ? 1 : n == 0 ? 0 : -1;
	}
}

static int body_sink(void *arg, const char *p, size_t n)
{
	return buf_append(arg, p, n);
}

/* Feeds what was read; 1 once the whole answer is in. */
static int parse_more(struct exchange *x, size_t *scan, size_t *fed, char *why, size_t whylen)
{
	const char *w = NULL;
	if (!x->head.headers) {
		long hl = http1_head_length(x->raw.data, x->raw.len, scan, &w);
		if (hl < 0) {
			snprintf(why, whylen, "the token endpoint sent a malformed response (%s)", w);
			return -EBADMSG;
		}
		if (hl == 0)
			return 0;
		x->head.headers = x->hdrs;
		x->head.max_headers = ARRAY_SIZE(x->hdrs);
		if (http1_parse_head(&x->parser, x->raw.data, (size_t)hl, &x->head, &w) < 0) {
			snprintf(why, whylen, "the token endpoint sent a malformed response (%s)", w);
			return -EBADMSG;
		}
		x->status = x->head.status;
		*fed = (size_t)hl;
		x->parser.on_body = body_sink;
		x->parser.ctx = &x->body;
	}
	if (http1_message_done(&x->parser))
		return 1;
	size_t consumed = 0;
	int r = http1_feed_body(&x->parser, x->raw.data + *fed, x->raw.len - *fed, &consumed, &w);
	*fed += consumed;
	if (r < 0) {
		snprintf(why, whylen, "the token endpoint sent a malformed or too large response body");
		return -EBADMSG;
	}
	return r;
}

static int exchange_run(struct tokens *tm, const struct policy_mint *m, SSL_CTX *ctx, const struct buf *req,
                        struct exchange *x, char *why, size_t whylen)
{
	int r = dial(tm, m, x, why, whylen);
	if (r < 0)
		return r;
	/* the socket stays non-blocking: every wait is a poll() bounded by
	 * what is left of the fetch's time (ssl_wait) */
	x->ssl = tls_client_ssl_new(ctx, m->host);
	if (!x->ssl || SSL_set_fd(x->ssl, x->fd) != 1) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	int ok, w = 1;
	while ((ok = SSL_connect(x->ssl)) != 1 && (w = ssl_wait(x, ok)) == 1)
		;
	if (w == 0) {
		snprintf(why, whylen, "the token endpoint %s did not answer within %d s", m->host, TOKEN_FETCH_SECONDS);
		return -ETIMEDOUT;
	}
	if (ok != 1) {
		char e[200];
		tls_error_string(e, sizeof(e));
		long v = SSL_get_verify_result(x->ssl);
		snprintf(why, whylen, "TLS with %s failed: %s", m->host,
		         v != X509_V_OK ? X509_verify_cert_error_string(v) : e);
		return -EPROTO;
	}
	size_t off = 0;
	while (off < req->len) {
		size_t k = 0;
		ok = SSL_write_ex(x->ssl, req->data + off, req->len - off, &k);
		if (ok != 1 && (w = ssl_wait(x, ok)) == 1)
			continue;
		if (ok != 1) {
			snprintf(why, whylen,
			         w == 0 ? "%s: the token request could not be sent within the time"
			                : "%s: sending the token request failed",
			         m->host);
			return w == 0 ? -ETIMEDOUT : -EIO;
		}
		off += k;
	}
	size_t scan = 0, fed = 0;
	http1_init(&x->parser, HTTP1_RESPONSE);
	for (;;) {
		char tmp[16384];
		size_t k = 0;
		if (remaining_ms(x) == 0) {
			snprintf(why, whylen, "the token endpoint %s did not answer within %d s", m->host,
			         TOKEN_FETCH_SECONDS);
			OPENSSL_cleanse(tmp, sizeof(tmp));
			return -ETIMEDOUT;
		}
		ok = SSL_read_ex(x->ssl, tmp, sizeof(tmp), &k);
		if (ok != 1 && (w = ssl_wait(x, ok)) == 1)
			continue; /* the time left is checked at the top */
		if (ok != 1 && w == 0)
			continue; /* reported at the top: no time left */
		if (ok == 1) {
			r = buf_append(&x->raw, tmp, k);
			OPENSSL_cleanse(tmp, k);
			if (r < 0) {
				snprintf(why, whylen, "the token endpoint's answer is larger than %d bytes",
				         MINT_RESPONSE_MAX);
				return r;
			}
			r = parse_more(x, &scan, &fed, why, whylen);
			if (r != 0)
				return r < 0 ? r : 0;
			continue;
		}
		int e = SSL_get_error(x->ssl, ok);
		if ((e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) && x->head.headers &&
		    http1_finish_eof(&x->parser) == 1)
			return 0;
		if (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))
			snprintf(why, whylen, "the token endpoint %s did not answer within %d s", m->host,
			         TOKEN_FETCH_SECONDS);
		else
			snprintf(why, whylen, "the token endpoint %s closed the connection before a complete answer",
			         m->host);
		ERR_clear_error();
		return -EIO;
	}
}

static void exchange_clear(struct exchange *x)
{
	SSL_free(x->ssl); /* no close_notify: the request said Connection: close */
	if (x->fd >= 0)
		close(x->fd);
	mint_buf_wipe(&x->raw);
	mint_buf_wipe(&x->body);
}

/* ---- the fetch ---- */

/* The request for the slot's fetch (gen and cred set), into req. */
static int fetch_request(struct token_slot *s, struct buf *req, char *why, size_t whylen)
{
	struct mint_secrets ms = {
		.client_id = part_secret(s->gen, s->cred, OAUTH_CLIENT_ID),
		.client_secret = part_secret(s->gen, s->cred, OAUTH_CLIENT_SECRET),
		.refresh_token = s->refresh,
	};
	if (s->cred->kind == CRED_GITHUB_APP) {
		ms = (struct mint_secrets){ .private_key = part_secret(s->gen, s->cred, GITHUB_APP_PRIVATE_KEY) };
	}
	int r = mint_buf_init_secure(req, 256 * 1024 + 4096);
	if (r < 0) {
		snprintf(why, whylen, "out of memory");
		return r;
	}
	return mint_build_request(s->cred, &ms, time(NULL), req, why, whylen);
}

/* Gets a token from the endpoint. Returns 0 and *ret, or a negative
 * errno with the reason in why. */
static int fetch(struct token_slot *s, struct mint_result *ret, struct timespec *sent, char *why, size_t whylen)
{
	const struct policy_mint *m = s->cred->mint;
	struct exchange x = { .fd = -1 };
	struct buf req;
	SSL_CTX *ctx = NULL;
	int r;

	buf_init(&req, 0);
	clock_gettime(CLOCK_MONOTONIC, &x.deadline);
	x.deadline.tv_sec += TOKEN_FETCH_SECONDS;
	r = mint_buf_init_secure(&x.raw, MINT_RESPONSE_MAX);
	if (r == 0)
		r = mint_buf_init_secure(&x.body, TOKEN_BODY_MAX);
	if (r < 0) {
		snprintf(why, whylen, "out of memory");
		goto end;
	}
	r = fetch_request(s, &req, why, whylen);
	if (r < 0)
		goto end;
	const struct policy *p = s->gen->policy;
	ctx = m->upstream_ca ? tls_client_ctx_new(m->upstream_ca_pem, m->upstream_ca_len, why, whylen)
	                     : tls_client_ctx_new(p->upstream_ca_pem, p->upstream_ca_len, why, whylen);
	if (!ctx) {
		r = -EINVAL;
		goto end;
	}
	clock_gettime(CLOCK_MONOTONIC, sent); /* the lifetime counts from here */
	time_t wall = time(NULL);
	r = exchange_run(s->tm, m, ctx, &req, &x, why, whylen);
	if (r == 0)
		r = mint_parse_response(x.status, x.body.data ? x.body.data : "", x.body.len,
		                        s->cred->kind == CRED_GITHUB_APP, wall, ret, why, whylen);
end:
	exchange_clear(&x);
	SSL_CTX_free(ctx);
	mint_buf_wipe(&req);
	return r;
}

/* A waiter's letter, on its worker: its event runs in this pass. */
static void wake_waiter(void *ev)
{
	event_active(ev, EV_READ, 1);
}

/* Hands the outcome to every waiter and wakes it on its worker. Called
 * with tm->lock held. */
static void wake_waiters(struct token_slot *s, struct token *t, const char *why)
{
	struct token_wait *w;
	while ((w = TAILQ_FIRST(&s->waiters))) {
		TAILQ_REMOVE(&s->waiters, w, link);
		s->n_waiters--;
		w->slot = NULL;
		w->done = true;
		w->tok = t ? token_ref(t) : NULL;
		if (!t)
			snprintf(w->why, sizeof(w->why), "%s", why);
		mailbox_post(w->mb, &w->letter);
	}
}

static void audit_fetch(struct tokens *tm, const struct policy_credential *cred, bool ok, bool rotated,
                        int64_t lifetime, const char *why)
{
	struct proxy *px = tm->px;
	const struct policy_mint *m = cred->mint;
	char detail[600];
	if (ok) {
		time_t at = time(NULL) + lifetime;
		struct tm utc;
		char when[32] = "";
		if (gmtime_r(&at, &utc))
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc);
		snprintf(detail, sizeof(detail), "token obtained from %s; expires in %lld s (%s)%s", m->url,
		         (long long)lifetime, when, rotated ? "; the refresh token was rotated" : "");
	} else {
		snprintf(detail, sizeof(detail), "no token from %s: %s", m->url, why);
	}
	if (ok)
		log_info("credential %s: %s", cred->name, detail);
	else
		log_warn("credential %s: %s", cred->name, detail);
	if (!px->audit)
		return;
	struct audit_record rec = {
		.event = "token",
		.method = "POST",
		.scheme = "https",
		.host = m->host,
		.port = m->port,
		.route = -1,
		.credential = cred->name,
		.decision = ok ? "allow" : "error",
		.reason = ok ? NULL : "token",
		.detail = detail,
	};
	int r = audit_write(px->audit, &rec);
	if (r < 0)
		log_error("cannot write the audit record of a token for %s: %s", cred->name, strerror(-r));
}

static void *fetch_thread(void *arg)
{
	struct token_slot *s = arg;
	struct tokens *tm = s->tm;
	struct mint_result res = { 0 };
	struct timespec sent;
	char why[300] = "";

	int r = fetch(s, &res, &sent, why, sizeof(why));
	struct token *t = NULL;
	if (r == 0) {
		t = calloc(1, sizeof(*t));
		if (!t) {
			snprintf(why, sizeof(why), "out of memory");
			r = -ENOMEM;
		}
	}
	if (t) {
		/* A quarter of its life, at most TOKEN_MARGIN_MAX: the request that
		 * takes it still has to be audited, connect and be read. */
		int64_t margin = res.lifetime / 4 < TOKEN_MARGIN_MAX ? res.lifetime / 4 : TOKEN_MARGIN_MAX;
		atomic_init(&t->refs, 1);
		t->value = res.access;
		res.access = NULL;
		t->usable_until = sent;
		t->usable_until.tv_sec += res.lifetime - margin;
		t->refresh_after = sent;
		t->refresh_after.tv_sec += res.lifetime - 2 * margin;
		t->expires = sent;
		t->expires.tv_sec += res.lifetime;
	}
	/* Recorded before any request that waited for it goes on. */
	const struct policy_credential *cred = s->cred;
	struct gen *g = s->gen;
	audit_fetch(tm, cred, t != NULL, res.refresh != NULL, res.lifetime, why);

	pthread_mutex_lock(&tm->lock);
	if (t) {
		/* The token it replaces may still be valid, and a service that
		 * stored it may serve it back: it stays in the redaction forms. */
		token_unref(s->prev);
		s->prev = s->cur;
		s->cur = t;
		tm->forms_stale = true;
		if (res.refresh) {
			/* RFC 6749 6: the provider may issue a new refresh token and
			 * revoke the old one; only the newest is used from now on. */
			secret_free(s->refresh);
			s->refresh = res.refresh;
			res.refresh = NULL;
		}
	}
	wake_waiters(s, t, why);
	s->gen = NULL;
	s->cred = NULL;
	s->fetching = false;
	pthread_mutex_unlock(&tm->lock);

	mint_result_clear(&res);
	gen_unref(g);

	pthread_mutex_lock(&tm->lock);
	tm->running--;
	pthread_cond_broadcast(&tm->idle);
	pthread_mutex_unlock(&tm->lock);
	return NULL;
}

/* Starts a fetch for s with g's secrets. Called with tm->lock held. */
static int start_fetch(struct token_slot *s, struct gen *g, const struct policy_credential *cred, char *why,
                       size_t whylen)
{
	if (cred->kind == CRED_OAUTH2_REFRESH) {
		/* The source's refresh token, unless the provider rotated it since
		 * keyward last read that same value. */
		const struct secret *src = part_secret(g, cred, OAUTH_REFRESH_TOKEN);
		if (!s->refresh_seed || !secret_eq(s->refresh_seed, src)) {
			struct secret *seed = NULL, *cur = NULL;
			if (secret_new(src->data, src->len, &seed) < 0 || secret_new(src->data, src->len, &cur) < 0) {
				secret_free(seed);
				snprintf(why, whylen, "out of memory");
				return -ENOMEM;
			}
			secret_free(s->refresh_seed);
			secret_free(s->refresh);
			s->refresh_seed = seed;
			s->refresh = cur;
			s->tm->forms_stale = true;
		}
	}
	if (!s->placeholder || !streq(s->placeholder, cred->placeholder)) {
		char *ph = strdup(cred->placeholder);
		if (!ph) {
			snprintf(why, whylen, "out of memory");
			return -ENOMEM;
		}
		free(s->placeholder);
		s->placeholder = ph;
		s->tm->forms_stale = true;
		atomic_store(&s->tm->holds, true);
	}
	s->gen = gen_ref(g);
	s->cred = cred;
	pthread_t th;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int e = pthread_create(&th, &attr, fetch_thread, s);
	pthread_attr_destroy(&attr);
	if (e != 0) {
		gen_unref(s->gen);
		s->gen = NULL;
		snprintf(why, whylen, "cannot start a thread to fetch the token: %s", strerror(e));
		return -e;
	}
	s->fetching = true;
	s->tm->running++;
	return 0;
}

int tokens_get(struct tokens *tm, struct gen *g, const struct policy_credential *cred, struct token_wait *w,
               struct token **ret, char *why, size_t whylen)
{
	const struct policy_credential *miss = missing_part(g, cred);
	if (miss) {
		size_t i = (size_t)(miss - g->policy->creds);
		snprintf(why, whylen, "credential %s is not available: %s", miss->name,
		         g->secret_errors[i] ? g->secret_errors[i] : "unknown error");
		return -ENOKEY;
	}
	const struct token_def *d = &g->share->mint_defs[cred - g->policy->creds];
	int r = 0;
	pthread_mutex_lock(&tm->lock);
	struct token_slot *s = slot_find(tm, cred->name, true);
	if (!s) {
		snprintf(why, whylen, "too many minted credentials");
		r = -ENOMEM;
	} else if (!slot_adopt(s, d)) {
		snprintf(why, whylen,
		         "a token of %s is being fetched under the policy before the last reload, which defined it "
		         "differently; try again",
		         cred->name);
		r = -EAGAIN;
	} else if (s->cur && token_usable(s->cur)) {
		*ret = token_ref(s->cur);
		r = 1;
		/* In its last stretch: a new one is fetched while this one is
		 * still used, so that no request waits (a failure is audited; the
		 * requests after usable_until then wait for a fetch of their own). */
		char ignored[300];
		if (!s->fetching && token_due(s->cur))
			(void)start_fetch(s, g, cred, ignored, sizeof(ignored));
	} else if (s->n_waiters >= TOKEN_WAITERS_MAX) {
		snprintf(why, whylen, "%u requests are waiting for a token of %s already", s->n_waiters, cred->name);
		r = -EBUSY;
	} else if (!s->fetching && (r = start_fetch(s, g, cred, why, whylen)) < 0) {
		/* why is set */
	} else {
		*w = (struct token_wait){
			.slot = s,
			.ev = w->ev,
			.mb = w->mb,
			.letter = { .fn = wake_waiter, .arg = w->ev },
		};
		TAILQ_INSERT_TAIL(&s->waiters, w, link);
		s->n_waiters++;
		r = 0;
	}
	pthread_mutex_unlock(&tm->lock);
	return r;
}

void tokens_wait_cancel(struct tokens *tm, struct token_wait *w)
{
	pthread_mutex_lock(&tm->lock);
	if (w->slot) {
		TAILQ_REMOVE(&w->slot->waiters, w, link);
		w->slot->n_waiters--;
		w->slot = NULL;
	} else if (w->mb) {
		/* Woken already (under tm->lock, so not concurrently with this):
		 * the letter may still wait in the mailbox. */
		mailbox_cancel(w->mb, &w->letter);
	}
	pthread_mutex_unlock(&tm->lock);
	token_unref(w->tok);
	w->tok = NULL;
	w->done = false;
}

void tokens_rejected(struct tokens *tm, const struct policy_credential *cred, const struct token *t)
{
	pthread_mutex_lock(&tm->lock);
	struct token_slot *s = slot_find(tm, cred->name, false);
	if (s && s->cur == t)
		s->cur->usable_until = (struct timespec){ 0 }; /* kept for tokens_current */
	pthread_mutex_unlock(&tm->lock);
}

/* ---- the redaction forms of minted secrets ---- */

void token_forms_unref(struct token_forms *f)
{
	if (!f || atomic_fetch_sub(&f->refs, 1) != 1)
		return;
	redact_set_free(f->set);
	free(f);
}

const struct redact_set *token_forms_set(const struct token_forms *f)
{
	return f->set;
}

static int forms_add(struct redact_set *set, const struct secret *v, const char *placeholder)
{
	return v ? redact_set_add_secret(set, v->data, v->len, placeholder) : 0;
}

/* Every slot's current token, the one it replaced until that expires,
 * and the newest refresh token (a rotated one is in no generation's set).
 * Called with tm->lock held. */
static int forms_build(struct tokens *tm, struct token_forms **ret)
{
	struct token_forms *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	atomic_init(&f->refs, 1);
	int r = redact_set_new(&f->set);
	for (size_t i = 0; r == 0 && i < tm->n_slots; i++) {
		struct token_slot *s = tm->slots[i];
		if (!s->placeholder)
			continue; /* never fetched: holds nothing */
		if (s->cur)
			r = forms_add(f->set, s->cur->value, s->placeholder);
		if (r == 0 && s->prev && !token_expired(s->prev))
			r = forms_add(f->set, s->prev->value, s->placeholder);
		if (r == 0)
			r = forms_add(f->set, s->refresh, s->placeholder);
	}
	if (r == 0)
		r = redact_set_seal(f->set);
	if (r < 0) {
		token_forms_unref(f);
		return r;
	}
	*ret = f;
	return 0;
}

int tokens_forms(struct tokens *tm, struct token_forms **ret)
{
	*ret = NULL;
	if (!atomic_load(&tm->holds))
		return 0; /* the common case: no minted credential in use */
	int r = 0;
	pthread_mutex_lock(&tm->lock);
	if (tm->forms_stale || !tm->forms) {
		struct token_forms *f;
		if ((r = forms_build(tm, &f)) == 0) {
			token_forms_unref(tm->forms);
			tm->forms = f;
			tm->forms_stale = false;
		}
	}
	if (r == 0) {
		atomic_fetch_add(&tm->forms->refs, 1);
		*ret = tm->forms;
	}
	pthread_mutex_unlock(&tm->lock);
	return r;
}
