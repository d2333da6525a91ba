/* Connections to upstreams: resolving, the address check, TCP and TLS
 * connect, and a per-worker pool of idle keep-alive connections.
 *
 * Trust: the host name has passed the policy before we get here, so a DNS
 * query is only ever made for a host some route allows. The addresses DNS
 * returns are not trusted: each is checked before it is dialled, and the
 * address that was checked is the one we connect to (no second lookup). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>

#include "common/log.h"
#include "proxy/addr.h"
#include "proxy/internal.h"

void upstream_head_clear(struct upstream *u)
{
	if (u->head.data)
		explicit_bzero(u->head.data, u->head.len);
	buf_reset(&u->head);
}

static void upstream_free(struct upstream *u)
{
	if (u->kick)
		event_free(u->kick);
	sockread_stop(&u->rd); /* before the bufferevent closes the socket */
	if (u->bev)
		bufferevent_free(u->bev);
	upstream_head_clear(u);
	buf_free(&u->head);
	free(u->hdrs);
	free(u);
}

/* Runs fn(u) from the event loop soon, replacing any pending kick. The
 * event dies with u, so a released upstream is never called back. It is
 * made active rather than added with a zero timeout: it runs at the end of
 * this pass of the loop, without another epoll_wait(2) first. */
static int kick(struct upstream *u, void (*fn)(evutil_socket_t, short, void *))
{
	/* A kick is only ever made active, never added: one with the same
	 * callback is either waiting to run, and runs once, or done. Made
	 * active again it is the same as made anew. */
	if (u->kick && event_get_callback(u->kick) == fn) {
		event_active(u->kick, EV_TIMEOUT, 1);
		return 0;
	}
	if (!u->kick) {
		u->kick = evtimer_new(u->w->base, fn, u);
		if (!u->kick)
			return -ENOMEM;
	} else {
		event_del(u->kick);
		if (evtimer_assign(u->kick, u->w->base, fn, u) < 0)
			return -ENOMEM;
	}
	event_active(u->kick, EV_TIMEOUT, 1);
	return 0;
}

static void fail(struct upstream *u, int err)
{
	struct conn *c = u->conn;
	upstream_ready_fn ready = u->ready;
	u->ready = NULL;
	if (c && ready)
		ready(c, u, err, u->why);
}

static void try_next_address(struct upstream *u);

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct upstream *u = arg;

	if (what & BEV_EVENT_CONNECTED) {
		int fd = bufferevent_getfd(bev);
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* keyward reads the connection (sockread.h, tlsread.h); a plain
		 * bufferevent's own reading is never enabled. A TLS one without
		 * memory for that goes on reading itself. */
		if (u->tls)
			(void)tlsread_start(&u->rd, u->w->base, bev, true);
		else if (sockread_start(&u->rd, u->w->base, bev, true) < 0) {
			snprintf(u->why, sizeof(u->why), "out of memory");
			fail(u, -ENOMEM);
			return;
		}
		u->wr_timeout = (struct timeval){ -1, 0 }; /* the connect timeout's is not known there */
		u->connected = true;
		upstream_ready_fn ready = u->ready;
		u->ready = NULL;
		ready(u->conn, u, 0, NULL);
		return;
	}

	/* A failure while connecting: say why, try the next address. */
	if (what & BEV_EVENT_TIMEOUT) {
		snprintf(u->why, sizeof(u->why), "connecting to %s timed out", u->peer);
	} else if (u->tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (vr != X509_V_OK) {
			snprintf(u->why, sizeof(u->why), "TLS certificate of %s could not be verified: %s", u->host,
			         X509_verify_cert_error_string(vr));
		} else if (e) {
			char es[160];
			ERR_error_string_n(e, es, sizeof(es));
			snprintf(u->why, sizeof(u->why), "TLS handshake with %s (%s) failed: %s", u->host, u->peer, es);
		} else {
			int err = EVUTIL_SOCKET_ERROR();
			snprintf(u->why, sizeof(u->why), "cannot connect to %s (%s): %s", u->host, u->peer,
			         err ? strerror(err) : "connection closed during TLS handshake");
		}
	} else {
		int err = EVUTIL_SOCKET_ERROR();
		snprintf(u->why, sizeof(u->why), "cannot connect to %s (%s): %s", u->host, u->peer,
		         err ? strerror(err) : "connection closed");
	}
	ERR_clear_error();
	sockread_stop(&u->rd);
	bufferevent_free(u->bev);
	u->bev = NULL;
	/* A certificate problem is the same on every address: stop there. */
	if (u->tls && strstr(u->why, "certificate")) {
		fail(u, -EPROTO);
		return;
	}
	try_next_address(u);
}

static void try_next_address(struct upstream *u)
{
	struct event_base *base = u->w->base;

	if (u->next_addr >= u->n_addrs) {
		fail(u, -ECONNREFUSED);
		return;
	}
	int i = u->next_addr++;
	addr_format((struct sockaddr *)&u->addrs[i], u->peer, sizeof(u->peer));
	if (u->tls) {
		SSL *ssl = tls_client_ssl_new(u->ctx, u->host);
		if (!ssl) {
			snprintf(u->why, sizeof(u->why), "cannot set up TLS for %s", u->host);
			fail(u, -ENOMEM);
			return;
		}
		u->bev =
		    bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
		if (u->bev)
			bufferevent_openssl_set_allow_dirty_shutdown(u->bev, 1);
		else
			SSL_free(ssl);
	} else {
		u->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!u->bev) {
		snprintf(u->why, sizeof(u->why), "out of memory");
		fail(u, -ENOMEM);
		return;
	}
	struct timeval tv = { UPSTREAM_CONNECT_SECONDS, 0 };
	bufferevent_set_timeouts(u->bev, &tv, &tv);
	bufferevent_setcb(u->bev, NULL, NULL, event_cb, u);
	if (bufferevent_socket_connect(u->bev, (struct sockaddr *)&u->addrs[i], (int)u->addr_lens[i]) < 0) {
		int err = EVUTIL_SOCKET_ERROR();
		snprintf(u->why, sizeof(u->why), "cannot connect to %s (%s): %s", u->host, u->peer, strerror(err));
		bufferevent_free(u->bev);
		u->bev = NULL;
		try_next_address(u);
		return;
	}
	/* libevent makes the socket without close-on-exec (commands keyward
	 * runs close what they inherit anyway: secrets/exec.c). */
	(void)evutil_make_socket_closeonexec(bufferevent_getfd(u->bev));
}

/* Keeps the addresses we may dial; remembers why others were refused. */
static void add_address(struct upstream *u, const struct sockaddr *sa, socklen_t len, bool allow_private)
{
	const char *what;
	if (u->n_addrs >= MAX_ADDRS || len > sizeof(u->addrs[0]))
		return;
	/* The port goes in first, so that a refusal names the address that
	 * would have been dialled (resolver answers and --resolve pins carry
	 * port 0). sin_port and sin6_port lie at the same offset. */
	struct sockaddr_storage *ss = &u->addrs[u->n_addrs];
	memcpy(ss, sa, len);
	((struct sockaddr_in *)ss)->sin_port = htons(u->port);
	if (!allow_private && addr_is_restricted((struct sockaddr *)ss, &what)) {
		char a[64];
		addr_format((struct sockaddr *)ss, a, sizeof(a));
		snprintf(u->why, sizeof(u->why),
		         "%s resolves to %s, a %s address; a route may allow this with allow_private: true", u->host, a,
		         what);
		return;
	}
	u->addr_lens[u->n_addrs] = len;
	u->n_addrs++;
}

static void start_connect(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *u = arg;
	if (u->n_addrs == 0) {
		fail(u, -EACCES);
		return;
	}
	try_next_address(u);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct upstream *u = arg;

	u->dns_req = NULL;
	if (!u->conn) { /* released while resolving */
		if (res)
			evutil_freeaddrinfo(res);
		upstream_free(u);
		return;
	}
	if (result != 0) {
		snprintf(u->why, sizeof(u->why), "cannot resolve %s: %s", u->host, evutil_gai_strerror(result));
		if (res)
			evutil_freeaddrinfo(res);
		fail(u, -EHOSTUNREACH);
		return;
	}
	for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next)
		add_address(u, ai->ai_addr, (socklen_t)ai->ai_addrlen, u->allow_private);
	evutil_freeaddrinfo(res);
	/* This may run inside evdns_getaddrinfo (hosts file): connect from
	 * the loop, so the ready callback never runs within upstream_get. */
	if (kick(u, start_connect) < 0) {
		snprintf(u->why, sizeof(u->why), "out of memory");
		fail(u, -ENOMEM);
	}
}

/* Appends s[0..k) to out[0..len), cut so that out keeps its NUL within n. */
static size_t key_put(char *out, size_t n, size_t len, const char *s, size_t k)
{
	if (k > n - 1 - len)
		k = n - 1 - len;
	memcpy(out + len, s, k);
	out[len + k] = '\0';
	return len + k;
}

/* Appends the decimal digits of v. */
static size_t key_put_uint(char *out, size_t n, size_t len, uint64_t v)
{
	char d[20]; /* 2^64 - 1 */
	size_t dl = sizeof(d);
	do
		d[--dl] = (char)('0' + v % 10);
	while ((v /= 10) && dl > 0);
	return key_put(out, n, len, d + dl, sizeof(d) - dl);
}

/* "policy|listener|private|scheme|host|port|ctx", built by hand: it is
 * made for every request. A connection is reused only where a fresh dial
 * would have reached the same peer the same way: the policy serial stands
 * for the upstream_ca contents the peer was verified with (ctx is one of
 * that policy's contexts), and allow_private decides which addresses may
 * be dialled. A connection never passes between listeners (the sandboxes
 * of one `keyward proxy`): bytes an upstream sends late on it reach no
 * other sandbox. The fixed-width fields come first: a host name (255
 * bytes at most) leaves them whole. */
static void pool_key(char *out, size_t n, const struct upstream_target *t)
{
	const char *scheme = t->scheme == SCHEME_HTTPS ? "|https|" : "|http|";
	const char *priv = t->allow_private ? "|private" : "|public";
	size_t len = key_put_uint(out, n, 0, t->policy_serial);
	len = key_put(out, n, len, "|", 1);
	len = key_put_uint(out, n, len, t->listener);
	len = key_put(out, n, len, priv, strlen(priv));
	len = key_put(out, n, len, scheme, strlen(scheme));
	len = key_put(out, n, len, t->host, strlen(t->host));
	len = key_put(out, n, len, "|", 1);
	len = key_put_uint(out, n, len, t->port);
	len = key_put(out, n, len, "|", 1);
	key_put_uint(out, n, len, (uintptr_t)t->ctx);
}

static const struct resolve_pin *find_pin(struct proxy *px, const char *host)
{
	for (size_t i = 0; i < px->n_pins; i++)
		if (streq(px->pins[i].host, host))
			return &px->pins[i];
	return NULL;
}

int upstream_get(struct worker *w, struct conn *c, const struct upstream_target *t, upstream_ready_fn ready,
                 struct upstream **ret, char *why, size_t whylen)
{
	char key[400];
	pool_key(key, sizeof(key), t);

	struct upstream *u;
	TAILQ_FOREACH(u, &w->idle, link)
	{
		if (t->fresh)
			break;
		if (!streq(u->key, key))
			continue;
		TAILQ_REMOVE(&w->idle, u, link);
		w->n_idle--;
		u->conn = c;
		/* The idle timeout stays until the request's own replaces it
		 * (send_request, or upstream_release): setting none in between
		 * would re-add both events twice. */
		bufferevent_setcb(u->bev, NULL, NULL, NULL, NULL);
		u->reused = true;
		/* Ready now: the caller goes on with it (a kick through the
		 * loop's active queue cost ~400 instructions a request). */
		*ret = u;
		return 1;
	}

	u = calloc(1, sizeof(*u));
	if (!u) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	u->w = w;
	u->conn = c;
	u->ready = ready;
	/* A response head, and the first body bytes that may come with it
	 * (several TLS records go into it on one wake-up, tlsread.c), can hold
	 * a secret that redaction takes out later: a block the buffer leaves
	 * as it grows is wiped too. */
	u->head.wipe = true;
	snprintf(u->key, sizeof(u->key), "%s", key);
	snprintf(u->host, sizeof(u->host), "%s", t->host);
	u->port = t->port;
	u->tls = t->scheme == SCHEME_HTTPS;
	u->ctx = t->ctx;
	u->allow_private = t->allow_private;
	u->policy_serial = t->policy_serial;

	struct sockaddr_storage ss;
	socklen_t len;
	const struct resolve_pin *pin = find_pin(w->px, t->host);
	if (pin) {
		add_address(u, (const struct sockaddr *)&pin->addr, pin->len, t->allow_private);
	} else if (addr_parse_literal(t->host, t->port, &ss, &len) == 0) {
		add_address(u, (struct sockaddr *)&ss, len, t->allow_private);
	} else if (policy_host_is_localhost(t->host)) {
		/* RFC 6761 6.3: loopback, without DNS, whose answer (a search
		 * domain appended, a resolver that forwards such names) could
		 * name any address, and the route's implied allow_private would
		 * let it be dialled. */
		for (int i = 0; i < 2; i++) {
			if (addr_parse_literal(i ? "::1" : "127.0.0.1", t->port, &ss, &len) == 0)
				add_address(u, (struct sockaddr *)&ss, len, t->allow_private);
		}
	} else {
		if (!w->dns) {
			snprintf(why, whylen, "no DNS resolver is available to resolve %s", t->host);
			free(u);
			return -EHOSTUNREACH;
		}
		struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC,
			                         .ai_socktype = SOCK_STREAM,
			                         .ai_protocol = IPPROTO_TCP };
		/* The callback may run before evdns_getaddrinfo returns (hosts
		 * file); dns_cb copes, since u is fully set up by now. */
		struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(w->dns, t->host, NULL, &hints, dns_cb, u);
		if (req)
			u->dns_req = req;
		*ret = u;
		return 0;
	}
	if (kick(u, start_connect) < 0) {
		upstream_free(u);
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	*ret = u;
	return 0;
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct upstream *u = arg;
	TAILQ_REMOVE(&u->w->idle, u, link);
	u->w->n_idle--;
	upstream_free(u);
}

static void idle_read_cb(struct bufferevent *bev, void *arg)
{
	/* An idle upstream must not talk: whatever it sends cannot belong to
	 * any request. Drop the connection. */
	idle_event_cb(bev, BEV_EVENT_ERROR, arg);
}

void upstream_release(struct upstream *u, bool reusable)
{
	if (!u)
		return;
	struct worker *w = u->w;
	u->conn = NULL;
	u->ready = NULL;
	if (u->dns_req) {
		/* dns_cb frees it once the cancel (or the answer) arrives. */
		struct evdns_getaddrinfo_request *req = u->dns_req;
		u->dns_req = NULL;
		evdns_getaddrinfo_cancel(req);
		return;
	}
	/* Its reader may hold more than the input buffer shows (tlsread.h): an
	 * end found with the response's last bytes, kept for the next pass of
	 * the loop (rd.end), or records still to take (rd.again). Pooled, the
	 * next request would take a connection known to be over, and fail or
	 * be sent again. */
	if (!reusable || u->unsure || u->shut || !u->bev || !u->connected || w->draining ||
	    evbuffer_get_length(bufferevent_get_input(u->bev)) > 0 || u->rd.end || u->rd.again ||
	    u->policy_serial != worker_current_gen(w)->share->serial) {
		upstream_free(u);
		return;
	}
	if (w->n_idle >= POOL_MAX_PER_WORKER) {
		struct upstream *old = TAILQ_FIRST(&w->idle);
		TAILQ_REMOVE(&w->idle, old, link);
		w->n_idle--;
		upstream_free(old);
	}
	u->state = 0;
	upstream_head_clear(u);
	u->head_scan = 0;
	u->rd.direct = NULL; /* an idle connection's bytes are no head (idle_read_cb) */
	struct timeval tv = { POOL_IDLE_SECONDS, 0 };
	bufferevent_setcb(u->bev, idle_read_cb, NULL, idle_event_cb, u);
	if (u->rd.ev) {
		/* Nothing is written while idle: the write timeout of the last
		 * request stays until the next one sets its own. */
		sockread_set_timeout(&u->rd, &tv);
		upstream_read(u, true);
	} else {
		bufferevent_set_timeouts(u->bev, &tv, NULL);
		bufferevent_enable(u->bev, EV_READ);
	}
	TAILQ_INSERT_TAIL(&w->idle, u, link);
	w->n_idle++;
}

void upstream_shutdown_write(struct upstream *u)
{
	if (u->shut || !u->bev)
		return;
	u->shut = true;
	/* TLS: close_notify first (RFC 8446 section 6.1: each side closes its
	 * own direction; the peer may go on sending, and OpenSSL still reads
	 * it). Written straight to the socket, as tls_send_now writes in
	 * conn.c: libevent has nothing queued. A socket too full to take it
	 * leaves a piece of the alert in OpenSSL: the FIN below cuts it, and
	 * the upstream sees an end without close_notify, as it would see it
	 * had keyward closed. */
	SSL *ssl = u->tls ? bufferevent_openssl_get_ssl(u->bev) : NULL;
	if (ssl && SSL_is_init_finished(ssl) && !SSL_want_write(ssl)) {
		ERR_clear_error();
		(void)SSL_shutdown(ssl);
		ERR_clear_error();
	}
	(void)shutdown(bufferevent_getfd(u->bev), SHUT_WR);
}

void upstream_read(struct upstream *u, bool on)
{
	sockread_switch(&u->rd, u->bev, on);
}

void upstream_timeouts(struct upstream *u, const struct timeval *rd, const struct timeval *wr)
{
	if (!u->rd.ev) {
		bufferevent_set_timeouts(u->bev, rd, wr);
		return;
	}
	sockread_set_timeout(&u->rd, rd);
	struct timeval w = { 0, 0 };
	if (wr)
		w = *wr;
	if (evutil_timercmp(&w, &u->wr_timeout, ==))
		return; /* the same for every request on the connection */
	u->wr_timeout = w;
	bufferevent_set_timeouts(u->bev, NULL, wr);
}

void upstream_pool_drop_stale(struct worker *w, uint64_t current)
{
	struct upstream *u, *next;
	for (u = TAILQ_FIRST(&w->idle); u; u = next) {
		next = TAILQ_NEXT(u, link);
		if (u->policy_serial == current)
			continue;
		TAILQ_REMOVE(&w->idle, u, link);
		w->n_idle--;
		upstream_free(u);
	}
}

void upstream_pool_clear(struct worker *w)
{
	struct upstream *u;
	while ((u = TAILQ_FIRST(&w->idle))) {
		TAILQ_REMOVE(&w->idle, u, link);
		w->n_idle--;
		upstream_free(u);
	}
}
