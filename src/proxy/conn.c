/* One client connection: read a request head, decide, forward, relay the
 * response; CONNECT tunnels are intercepted and the requests inside them
 * go through the same path.
 *
 * Trust: every byte from the client is hostile. A request is forwarded
 * only after its head parsed strictly, its target host, port, method and
 * normalised path matched a route, and its audit record could be written.
 * The path upstream receives is the path that was checked. The only place
 * a secret is written is the upstream request head (inject.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include "common/encode.h"
#include "common/json.h"
#include "common/log.h"
#include "policy/path.h"
#include "proxy/addr.h"
#include "proxy/inject.h"
#include "proxy/internal.h"
#include "proxy/respbody.h"
#include "proxy/token.h"

enum conn_state {
	C_HEAD,         /* reading a request head */
	C_DECIDED,      /* allowed, waiting for its audit record to be written */
	C_SIGV4_BODY,   /* inject: sigv4 with no x-amz-content-sha256: reading the whole body to hash it */
	C_CONNECTING,   /* waiting for an upstream */
	C_BODY,         /* streaming the request body upstream */
	C_RESPONSE,     /* request sent, relaying the response */
	C_CONNECT_SENT, /* CONNECT allowed, 200 being written */
	C_HANDSHAKE,    /* TLS handshake of an intercepted tunnel */
	C_RELAY,        /* after a 101: bytes both ways */
	C_RELAY_END,    /* the client's end came: its last bytes go upstream, the upstream's still come back */
	C_CLOSING,      /* flushing the last bytes, then close */
};

enum up_state { U_HEAD, U_BODY };

#define TLS_RECORD_MAX 16384 /* RFC 8446 section 5.1 */
/* How long a relay lives on after the client's end (C_RELAY_END) without
 * a byte from the upstream: for the client's last bytes to reach it, and
 * its answer, however long, and its end to come back. close_after_flush
 * gives a client as long. */
#define RELAY_END_MS 5000
/* The largest first read of a response that goes into its head buffer
 * directly (send_request). */
#define RESPONSE_DIRECT_MAX 4096

struct conn {
	TAILQ_ENTRY(conn) link;
	struct worker *w;
	const struct listener_info *li;
	char client[64];
	struct bufferevent *bev;
	struct sockread rd; /* keyward's reading (sockread.h; tlsread.h in a tunnel, after the handshake) */
	enum conn_state state;
	struct event *timer;
	/* The timer is pending for the wait for a request head that began at
	 * c->start and ends idle_ms later (timer_idle), and is kept so while
	 * the requests after it are served (timer_park). */
	bool timer_idle;
	unsigned idle_ms;
	struct gen *gen; /* held for a request (or a tunnel) */

	struct http1 parser;
	struct buf head; /* raw request head; the parsed fields point into it */
	size_t head_scan;
	struct http_header *hdrs;
	unsigned max_headers;
	struct http_head req;

	bool in_tunnel;
	bool tunnel_logged;
	char tunnel_host[256];
	uint16_t tunnel_port;

	/* the current request */
	char method[24];
	char host[256];
	uint16_t port;
	enum scheme scheme;
	struct buf path;
	const char *query;
	size_t query_len;
	const struct policy_route *route;
	uint64_t max_body;
	uint64_t bytes_in, bytes_out;
	struct timespec start;
	int status;
	bool keep_alive; /* client connection persists after this response */
	bool body_done;  /* request body fully read */
	bool response_started;
	bool upgrade;
	bool is_head;
	bool scans; /* its response is scanned for secrets (scans_response) */
	bool retried;
	bool decided; /* the allow record is written: decision_seq is its seq */
	bool audited; /* the request's last record is written */
	uint64_t decision_seq;
	LIST_ENTRY(conn) wait_link;        /* on w->audit_wait in C_DECIDED */
	int audit_index;                   /* of its allow record in w->audit_batch, then */
	const char *leaked;                /* credential whose placeholder was caught leaking */
	struct buf out;                    /* upstream request head (holds the secret briefly) */
	struct inject_sigv4_stream sigv4;  /* inject: sigv4 streaming upload: its body's re-signer */
	const char *body_why;              /* why the body filter refused the body */
	char body_hash[SIGV4_SIG_HEX + 1]; /* C_SIGV4_BODY: hex SHA-256 of the body, once read */
	struct evbuffer *reply;            /* response bytes not yet handed to the client (client_send) */
	struct upstream *up;
	/* response redaction on credentialed routes (redact.h, respbody.h) */
	struct redact_set *req_forms;     /* this request's own forms (its Basic credentials), or NULL */
	struct token_forms *minted_forms; /* every minted secret's forms (token.h), or NULL */
	struct redactor *redactor;        /* scans the response heads and body */
	struct resp_body *resp_body;      /* the body, decoded and re-framed, or NULL */
	/* the three, emptied at the end of a request and kept for the next one
	 * on the connection (redaction_end), or NULL */
	struct {
		struct redact_set *forms;
		struct redactor *redactor;
		struct resp_body *body;
	} spare;
	const char *resp_why; /* why resp_body failed */
	bool resp_chunked;    /* resp_body frames the body as chunks */
	bool resp_decoded;    /* resp_body decodes a Content-Encoding */
	uint64_t retry_after; /* a refusal's Retry-After, in seconds; 0: none */
	/* a credential whose token keyward mints (token.h) */
	struct token *tok;       /* the token this request carries, or NULL */
	struct token_wait twait; /* waiting for one (twait.ev pending) */
	bool tok_forward;        /* once it comes: forward (a retry after 401), not decide */
	bool tok_retried;        /* the request was retried after a 401 once */
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_abandon(struct conn *c, const char *reason, const char *detail);
static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);
static void relay_audit(struct conn *c);
static void relay_end_flushed(struct conn *c);
static void read_head(struct conn *c);
static void pump_request_body(struct conn *c);
static void worker_done(struct worker *w);
static void decide(struct conn *c);

static const struct policy_limits *limits(struct conn *c)
{
	return &c->gen->policy->limits;
}

/* Turns reading from the client on or off: keyward's own (sockread.h,
 * tlsread.h), the TLS bufferevent's during a tunnel's handshake. */
static void client_read(struct conn *c, bool on)
{
	sockread_switch(&c->rd, c->bev, on);
}

/* Drops the body re-signer of an aws-chunked upload, if any. */
static void sigv4_stream_end(struct conn *c)
{
	if (c->sigv4.started)
		sigv4_chunked_free(&c->sigv4.chunked);
	c->sigv4.started = false;
	c->body_why = NULL;
	c->body_hash[0] = '\0';
}

/* ---- lifetime ---- */

/* Ends the response redaction of the current request. What its objects
 * hold of the request and the response is wiped, and they are kept for
 * the next request on the connection: making them again for each one
 * cost more than scanning a small response. */
static void redaction_end(struct conn *c)
{
	if (c->resp_body) {
		resp_body_clear(c->resp_body);
		resp_body_free(c->spare.body);
		c->spare.body = TAKE_PTR(c->resp_body);
	}
	if (c->redactor) {
		redactor_clear(c->redactor);
		redactor_free(c->spare.redactor);
		c->spare.redactor = TAKE_PTR(c->redactor);
	}
	if (c->req_forms) {
		redact_set_clear(c->req_forms);
		redact_set_free(c->spare.forms);
		c->spare.forms = TAKE_PTR(c->req_forms);
	}
	token_forms_unref(TAKE_PTR(c->minted_forms));
	c->resp_why = NULL;
}

static void redaction_free(struct conn *c)
{
	redaction_end(c);
	resp_body_free(TAKE_PTR(c->spare.body));
	redactor_free(TAKE_PTR(c->spare.redactor));
	redact_set_free(TAKE_PTR(c->spare.forms));
}

static void conn_token_clear(struct conn *c);

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	conn_token_clear(c);
	if (c->twait.ev)
		event_free(c->twait.ev);
	if (c->up) {
		upstream_release(c->up, false);
		c->up = NULL;
	}
	if (c->timer)
		event_free(c->timer);
	sockread_stop(&c->rd); /* before the bufferevent closes the socket */
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->reply)
		evbuffer_free(c->reply);
	if (c->gen)
		gen_unref(c->gen);
	buf_free(&c->head);
	buf_free(&c->path);
	buf_free(&c->out); /* wiped: c->out.wipe */
	sigv4_stream_end(c);
	free(c->hdrs);
	redaction_free(c);
	if (c->state == C_DECIDED)
		LIST_REMOVE(c, wait_link);
	TAILQ_REMOVE(&w->conns, c, link);
	w->n_conns--;
	atomic_fetch_sub(&w->px->active, 1);
	free(c);
	if (w->draining && w->n_conns == 0)
		worker_done(w);
}

static struct timeval ms_timeval(unsigned ms)
{
	return (struct timeval){ ms / 1000, (ms % 1000) * 1000 };
}

static void arm_timer(struct conn *c, unsigned ms)
{
	struct timeval tv = ms_timeval(ms);
	c->timer_idle = false;
	evtimer_add(c->timer, &tv);
}

static void stop_timer(struct conn *c)
{
	c->timer_idle = false;
	evtimer_del(c->timer);
}

/* Starts the wait of a kept-alive connection for its next request head:
 * idle_timeout (ms) from c->start (reset_request). The timer of an
 * earlier wait, still pending (park_timer), fires no later than this
 * wait ends; timer_cb then arms it for what is left. Deleting the timer
 * when a head came whole and adding it again when its response was done
 * cost two timer operations a request. */
static void idle_timer(struct conn *c, unsigned ms)
{
	if (c->timer_idle && c->idle_ms == ms)
		return;
	arm_timer(c, ms);
	c->timer_idle = true;
	c->idle_ms = ms;
}

/* A whole head came: the client owes nothing until its response is
 * sent. The idle wait's timer is left pending rather than deleted; when
 * it fires while the request is served, timer_cb does nothing. Any other
 * timer is stopped. */
static void park_timer(struct conn *c)
{
	if (!c->timer_idle)
		evtimer_del(c->timer);
}

/* What tls_send_now did. */
enum tls_now {
	TLS_NOT_TRIED, /* queue the bytes as usual */
	TLS_SENT,      /* all of them went */
	TLS_QUEUE,     /* tried: queue the same bytes now, in one piece (tls_queued) */
};

/* Sends p[0..n) (up to one TLS record) on bev's open TLS connection now, if
 * nothing is queued before it. libevent 2.1's TLS bufferevent over a
 * socket writes only once epoll reports the socket writable, which costs
 * two epoll_ctl(2) and a pass of the loop for a socket that almost always
 * is: every response in a tunnel and every request head to a TLS upstream
 * paid them. When the socket is full OpenSSL keeps the record it began,
 * and libevent's next SSL_write, given the same bytes from their start,
 * finishes it (libevent sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, so they
 * may have moved). A fatal error comes back to libevent's SSL_write the
 * same way, and the bufferevent reports it. */
static enum tls_now tls_send_now(struct bufferevent *bev, const void *p, size_t n)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	/* Not during a handshake (libevent drives it), nor while a write that
	 * OpenSSL began for a read waits for the socket. */
	if (!ssl || n == 0 || n > TLS_RECORD_MAX || evbuffer_get_length(bufferevent_get_output(bev)) > 0 ||
	    !SSL_is_init_finished(ssl) || SSL_want_write(ssl))
		return TLS_NOT_TRIED;
	/* No ERR_clear_error first (about 840 instructions with OpenSSL 3.0):
	 * nothing here asks SSL_get_error, which is what reads the queue, and
	 * whoever asks it (tlsread.c, libevent's own SSL_write) empties the
	 * queue before its call. */
	size_t done = 0;
	if (SSL_write_ex(ssl, p, n, &done) == 1)
		return TLS_SENT;
	ERR_clear_error(); /* libevent's SSL_write clears the queue before it looks anyway */
	return TLS_QUEUE;
}

/* Queuing after TLS_QUEUE: if the bytes cannot be queued (no memory),
 * OpenSSL still holds a record that the next, unrelated bytes would be
 * taken for; the connection is shut down instead, and the bufferevent
 * reports it. */
static void tls_queued(struct bufferevent *bev, int added)
{
	if (added < 0)
		(void)shutdown(bufferevent_getfd(bev), SHUT_RDWR);
}

/* Hands the response bytes collected in c->reply to the client. A plain
 * socket bufferevent writes only after epoll reports the socket writable,
 * which costs a pass of the loop and two epoll_ctl(2) calls per response
 * for a socket that almost always is: when nothing is queued before them,
 * the bytes are written now, and only what the socket does not take is
 * queued. In a tunnel a response of up to one TLS record is joined into
 * one piece and sent now as one record (tls_send_now). */
static void client_send(struct conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t n = evbuffer_get_length(c->reply);
	if (n == 0)
		return;
	if (!c->in_tunnel && evbuffer_get_length(out) == 0)
		(void)evbuffer_write(c->reply, bufferevent_getfd(c->bev)); /* an error shows on the next write */
	/* libevent's TLS bufferevent makes one SSL_write, so one TLS record and
	 * one write(2), per piece of its buffer: join a head and a small body
	 * (up to a full record) into one piece. */
	enum tls_now tried = TLS_NOT_TRIED;
	if (c->in_tunnel && n <= TLS_RECORD_MAX) {
		const unsigned char *p = evbuffer_pullup(c->reply, -1);
		if (p)
			tried = tls_send_now(c->bev, p, n);
		if (tried == TLS_SENT) {
			evbuffer_drain(c->reply, n);
			return;
		}
	}
	int added = evbuffer_add_buffer(out, c->reply);
	if (tried == TLS_QUEUE)
		tls_queued(c->bev, added);
}

/* Close once what is queued for the client has been written. */
static void close_after_flush(struct conn *c)
{
	client_send(c);
	if (c->up) {
		upstream_release(c->up, false);
		c->up = NULL;
	}
	c->state = C_CLOSING;
	client_read(c, false);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_free(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	arm_timer(c, 5000);
}

/* ---- audit ---- */

static uint64_t elapsed_us(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t us = (now.tv_sec - start->tv_sec) * 1000000 + (now.tv_nsec - start->tv_nsec) / 1000;
	return us < 0 ? 0 : (uint64_t)us;
}

/* What the audit log says about the current request. */
static struct audit_record conn_record(struct conn *c, const char *event, const char *decision)
{
	const struct policy_credential *cred = c->route ? c->route->credential : NULL;
	return (struct audit_record){
		.event = event,
		.listener = c->li->name,
		.client = c->client,
		.method = c->method[0] ? c->method : NULL,
		.scheme = c->host[0] ? (c->scheme == SCHEME_HTTPS ? "https" : "http") : NULL,
		.host = c->host[0] ? c->host : NULL,
		.port = c->host[0] ? c->port : 0,
		.path = c->path.len ? c->path.data : NULL,
		.route = c->route ? (int)c->route->index : -1,
		.credential = cred ? cred->name : c->leaked,
		.decision = decision,
	};
}

static void audit_failed(struct conn *c, int r)
{
	log_error("cannot write the audit record of %s %s%s: %s; refusing requests until it works again", c->method,
	          c->host, c->path.len ? c->path.data : "", strerror(-r));
}

/* ---- the worker's audit batch ----
 *
 * A worker queues the records of its requests and writes them together at
 * the end of the current pass of its event loop: one lock and one write(2)
 * for all the records of a pass, where there was one of each per record.
 * The bodies are formatted here, outside the log's lock (audit.h).
 *
 * - An allowed request waits in C_DECIDED for the write of its allow record
 *   before anything of it is sent upstream (audit_written): a request whose
 *   decision is not in the file is never forwarded.
 * - A refusal is written at once, before its answer can reach the client.
 * - A result is written at the end of the pass in which its request ended,
 *   so it may reach the file a moment after the response's last bytes
 *   reached the client. If it cannot be written, the log turns unhealthy
 *   and the requests after it are refused.
 * The batch is also written when it is full, and when the worker drains. */

static void audit_write_cb(evutil_socket_t fd, short what, void *arg);
static void audit_written(struct conn *c, int r, uint64_t first);

/* Writes the batch, then lets the requests waiting for it go on. Returns
 * 0 and, if ret_first is not NULL, *ret_first (the seq of the batch's
 * first record); or the negative errno of the write. */
static int worker_audit_write(struct worker *w, uint64_t *ret_first)
{
	LIST_HEAD(, conn) woken = LIST_HEAD_INITIALIZER(woken);
	uint64_t first = 0;
	if (!w->audit_batch)
		return 0;
	size_t n = audit_batch_count(w->audit_batch);
	int r = audit_batch_write(w->px->audit, w->audit_batch, &first);
	if (r < 0)
		log_error("cannot write the audit records: %s (%zu lost); refusing requests until it works again",
		          strerror(-r), n);
	/* Waking a request may free it, or queue new records; the list is
	 * taken whole first so that only the ones of this write are woken. */
	struct conn *c;
	while ((c = LIST_FIRST(&w->audit_wait))) {
		LIST_REMOVE(c, wait_link);
		LIST_INSERT_HEAD(&woken, c, wait_link);
	}
	while ((c = LIST_FIRST(&woken))) {
		LIST_REMOVE(c, wait_link);
		audit_written(c, r, first);
	}
	if (r == 0 && ret_first)
		*ret_first = first;
	return r;
}

static void audit_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	w->audit_scheduled = false;
	(void)worker_audit_write(w, NULL);
}

/* Queues rec in the worker's batch. Returns its index there, or negative
 * errno. */
static int worker_audit_queue(struct worker *w, const struct audit_record *rec)
{
	if (!w->audit_batch) {
		int r = audit_batch_new(&w->audit_batch);
		if (r < 0)
			return r;
	}
	int i = audit_batch_add(w->audit_batch, rec);
	if (i == -ENOBUFS) {
		(void)worker_audit_write(w, NULL);
		i = audit_batch_add(w->audit_batch, rec);
	}
	return i;
}

/* The batch is written at the end of this pass: making the worker's
 * audit event active puts its callback behind the ones already due. The
 * event is made once per worker (event_base_once would allocate one per
 * pass); if it cannot be made, the batch is written at once. */
static void worker_audit_schedule(struct worker *w)
{
	if (w->audit_scheduled)
		return;
	if (!w->audit_ev)
		w->audit_ev = event_new(w->base, -1, 0, audit_write_cb, w);
	if (!w->audit_ev) {
		(void)worker_audit_write(w, NULL);
		return;
	}
	event_active(w->audit_ev, EV_TIMEOUT, 0);
	w->audit_scheduled = true;
}

/* The worker drained its last connection: write what is left, then stop. */
static void worker_done(struct worker *w)
{
	(void)worker_audit_write(w, NULL);
	audit_batch_free(w->audit_batch);
	w->audit_batch = NULL;
	event_base_loopexit(w->base, NULL);
}

/* Writes the last record of the current request: the result that closes
 * its allow record, or, for a request refused before it was allowed, the
 * one record saying so. */
static void conn_audit(struct conn *c, const char *event, const char *decision, const char *reason, const char *detail)
{
	c->audited = true;
	if (!c->w->px->audit)
		return;
	struct audit_record rec = conn_record(c, event, decision);
	if (c->decided && streq(event, "request"))
		rec = (struct audit_record){
			.event = "result", .request_seq = c->decision_seq, .route = -1, .decision = decision
		};
	rec.reason = reason;
	rec.detail = detail;
	rec.status = c->status;
	rec.totals = !streq(event, "connect");
	rec.bytes_in = c->bytes_in;
	rec.bytes_out = c->bytes_out;
	rec.duration_us = elapsed_us(&c->start);
	rec.redacted = c->redactor ? redactor_count(c->redactor) : 0;
	int r = worker_audit_queue(c->w, &rec);
	if (r < 0)
		audit_failed(c, r);
	else
		worker_audit_schedule(c->w);
}

/* ---- responses made by the proxy ---- */

static void send_json(struct conn *c, int status, const char *status_text, const char *check, const char *message,
                      const char *hint, bool close)
{
	struct buf body;
	buf_init(&body, 16384);
	bool first = true;
	int r = buf_puts(&body, "{");
	if (r == 0)
		r = json_kv_str(&body, &first, "error", status == 403 ? "denied" : status_text);
	if (r == 0 && check)
		r = json_kv_str(&body, &first, "check", check);
	if (r == 0)
		r = json_kv_str(&body, &first, "message", message);
	if (r == 0 && hint)
		r = json_kv_str(&body, &first, "hint", hint);
	if (r == 0)
		r = buf_puts(&body, "}\n");
	const char *data = body.data;
	size_t len = body.len;
	if (r < 0) {
		data = "{\"error\":\"denied\"}\n";
		len = strlen(data);
	}
	client_send(c); /* whatever came before this answer goes first */
	struct evbuffer *out = bufferevent_get_output(c->bev);
	evbuffer_add_printf(out,
	                    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
	                    "Cache-Control: no-store\r\nX-Keyward-Decision: %s%s%s\r\n%s",
	                    status, status_text, len, status == 403 || status == 429 ? "deny" : "error",
	                    check ? "; check=" : "", check ? check : "", close ? "Connection: close\r\n" : "");
	if (c->retry_after)
		evbuffer_add_printf(out, "Retry-After: %" PRIu64 "\r\n", c->retry_after);
	evbuffer_add(out, "\r\n", 2);
	if (!c->is_head)
		evbuffer_add(out, data, len);
	c->status = status;
	buf_free(&body);
}

/* Refuses the current request: answer, audit, close. Closing is simplest
 * and safe: whatever body follows is never parsed. */
static void refuse(struct conn *c, int status, const char *status_text, const char *decision, const char *check,
                   const char *message, const char *hint)
{
	send_json(c, status, status_text, check, message, hint, true);
	conn_audit(c, "request", decision, check, message);
	/* Now, not at the end of the pass: a refusal is recorded before the
	 * client can read it (send_json queues it; nothing is written before
	 * the loop's next pass). */
	if (c->w->px->audit)
		(void)worker_audit_write(c->w, NULL);
	close_after_flush(c);
}

static void refuse_unaudited(struct conn *c)
{
	refuse(c, 503, "Service Unavailable", "error", "audit",
	       "the audit log cannot be written; keyward refuses to serve unaudited", NULL);
}

static void route_place(struct conn *c, const struct policy_route *rt, char *out, size_t n)
{
	snprintf(out, n, "routes[%zu] at %s:%d", rt->index, c->gen->policy->path, rt->line);
}

/* TRACE makes the upstream echo the request back, headers included (RFC
 * 9110 section 9.3.8): on a credentialed route the echo carries the
 * injected credential, and only redaction would keep it from the sandbox.
 * No route forwards it, whatever its methods: say (policy.c refuses TRACE
 * there). On a route without a credential the echo holds nothing keyward
 * added, but TRACE has no use worth an exception. Compared without case:
 * an upstream may be lenient. (CONNECT inside a tunnel is refused too, as
 * malformed: process_head.) */
#define TRACE_REFUSED "keyward never forwards TRACE: the upstream would echo the request, injected credentials included"

static bool method_is_trace(const char *method)
{
	return strcasecmp(method, "TRACE") == 0;
}

static void refuse_match(struct conn *c, const struct match_result *m)
{
	char msg[1024], hint[1024], where[600];
	const struct policy_route *rt = m->route;
	const char *check = match_fail_name(m->fail);

	if (rt)
		route_place(c, rt, where, sizeof(where));
	switch (m->fail) {
	case MATCH_HOST:
	default:
		snprintf(msg, sizeof(msg), "no route allows host %s", c->host);
		snprintf(hint, sizeof(hint), "to allow it, add a route with host: %s to %s", c->host,
		         c->gen->policy->path);
		break;
	case MATCH_PORT:
		snprintf(msg, sizeof(msg), "no route allows %s on port %u", c->host, c->port);
		snprintf(hint, sizeof(hint), "to allow it, set port: %u on %s", c->port, where);
		break;
	case MATCH_SCHEME:
		snprintf(msg, sizeof(msg), "no route allows %s over %s", c->host,
		         c->scheme == SCHEME_HTTPS ? "https" : "plain http");
		snprintf(hint, sizeof(hint), "%s",
		         c->scheme == SCHEME_HTTP
		             ? "plain-http upstreams need scheme: http on the route; clients should use https"
		             : "the route says scheme: http; add a route for https");
		break;
	case MATCH_METHOD: {
		char list[256] = "";
		size_t o = 0;
		for (char **m2 = rt->methods; m2 && *m2 && o < sizeof(list); m2++)
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", *m2);
		snprintf(msg, sizeof(msg), "route for %s allows %s; not %s", c->host, list, c->method);
		if (method_is_trace(c->method))
			snprintf(hint, sizeof(hint), "%s", TRACE_REFUSED);
		else
			snprintf(hint, sizeof(hint), "to allow it, add %s to methods: of %s", c->method, where);
		break;
	}
	case MATCH_PATH:
		snprintf(msg, sizeof(msg), "no path of the route for %s matches %s", c->host, c->path.data);
		snprintf(hint, sizeof(hint), "to allow it, add a glob matching %s to paths: of %s", c->path.data,
		         where);
		break;
	}
	refuse(c, 403, "Forbidden", "deny", check, msg, hint);
}

/* Refuses the request if it carries the placeholder of any credential
 * other than `allowed` (NULL: any at all). Returns true if it did. */
static bool refuse_leak(struct conn *c, const struct policy_credential *allowed)
{
	const char *where = NULL;
	const struct policy_credential *leaked =
	    inject_find_leak(c->gen->policy, &c->req, c->host, c->path.len ? c->path.data : NULL, allowed, &where);
	if (!leaked)
		return false;
	char text[768], hint[256];
	snprintf(text, sizeof(text),
	         "the placeholder of credential %s appears in %s of a request to %s, which is not bound to it",
	         leaked->name, where, c->host);
	snprintf(hint, sizeof(hint), "placeholders may only be sent to routes with credential: %s", leaked->name);
	c->route = NULL;
	c->leaked = leaked->name;
	refuse(c, 403, "Forbidden", "deny", "leak", text, hint);
	return true;
}

/* inject: sigv4 takes only requests SigV4-signed with the placeholder key
 * id, in a form keyward re-signs. Returns true if it refused this one. */
static bool refuse_sigv4(struct conn *c)
{
	const char *why = NULL;
	struct outbound o = { .req = &c->req, .query = c->query, .query_len = c->query_len, .route = c->route };
	if (inject_sigv4_check(&o, &why) == 0)
		return false;
	refuse(c, 403, "Forbidden", "deny", "sigv4", why,
	       "sign with the sandbox's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (SigV4, headers)");
	return true;
}

/* inject: sigv4 with no x-amz-content-sha256: the body (Content-Length, at
 * most INJECT_SIGV4_HASH_MAX, checked) is read whole into the client's
 * input buffer and hashed before the request is decided and its head
 * signed; it is then forwarded from there as any body. */
static void sigv4_hash_body(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t need = (size_t)c->req.content_length;
	if (evbuffer_get_length(in) < need) {
		if (c->state != C_SIGV4_BODY && c->req.expect_continue)
			(void)bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		c->state = C_SIGV4_BODY;
		client_read(c, true);
		arm_timer(c, limits(c)->idle_timeout_ms);
		return;
	}
	stop_timer(c);
	struct evbuffer_ptr at;
	struct evbuffer_iovec v[16];
	uint8_t md[32];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	int ok = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1;
	evbuffer_ptr_set(in, &at, 0, EVBUFFER_PTR_SET);
	while (ok && need > 0) {
		int k = evbuffer_peek(in, (ev_ssize_t)need, &at, v, 16);
		if (k <= 0)
			break;
		for (int i = 0; ok && i < k && i < 16 && need > 0; i++) {
			size_t take = v[i].iov_len < need ? v[i].iov_len : need;
			ok = EVP_DigestUpdate(h, v[i].iov_base, take) == 1;
			need -= take;
			evbuffer_ptr_set(in, &at, take, EVBUFFER_PTR_ADD);
		}
	}
	ok = ok && need == 0 && EVP_DigestFinal_ex(h, md, NULL) == 1;
	EVP_MD_CTX_free(h);
	if (!ok) {
		refuse(c, 500, "Internal Server Error", "error", "sigv4", "cannot hash the request body", NULL);
		return;
	}
	hex_encode(md, 32, c->body_hash);
	c->state = C_HEAD; /* out of C_SIGV4_BODY: decide() moves on */
	decide(c);
}

/* Refuses with 503 if the credential (or a part of it) could not be read.
 * Returns true if it did. */
static bool refuse_unavailable(struct conn *c, const struct policy_credential *cred)
{
	const struct policy *p = c->gen->policy;
	for (size_t k = 0; k <= CRED_MAX_PARTS; k++) {
		const struct policy_credential *e = k == 0 ? cred : cred->parts[k - 1];
		if (!e || (k == 0 && cred->source == SOURCE_PARTS))
			continue;
		size_t ci = (size_t)(e - p->creds);
		if (c->gen->secrets[ci])
			continue;
		char text[768];
		snprintf(text, sizeof(text), "credential %s is not available: %s", e->name,
		         c->gen->secret_errors[ci] ? c->gen->secret_errors[ci] : "unknown error");
		refuse(c, 503, "Service Unavailable", "error", "credential", text, NULL);
		return true;
	}
	return false;
}

static bool upgrade_is_websocket(struct conn *c)
{
	int u = http_head_find(&c->req, "upgrade");
	return u >= 0 && memcaseeq(c->req.headers[u].value, c->req.headers[u].value_len, "websocket");
}

static void bad_request(struct conn *c, const char *why)
{
	char msg[512];
	snprintf(msg, sizeof(msg), "malformed request: %s", why);
	refuse(c, 400, "Bad Request", "deny", "malformed", msg, NULL);
}

/* ---- reading the request ---- */

static void reset_request(struct conn *c)
{
	c->method[0] = '\0';
	if (!c->in_tunnel)
		c->host[0] = '\0';
	buf_reset(&c->path);
	c->query = NULL;
	c->query_len = 0;
	c->route = NULL;
	c->bytes_in = c->bytes_out = 0;
	c->status = 0;
	c->max_body = 0;
	c->body_done = c->response_started = c->upgrade = c->is_head = false;
	c->retried = c->decided = c->audited = false;
	c->leaked = NULL;
	c->retry_after = 0;
	redaction_end(c);
	sigv4_stream_end(c);
	conn_token_clear(c);
	c->tok_retried = false;
	buf_reset(&c->head);
	c->head_scan = 0;
	clock_gettime(CLOCK_MONOTONIC, &c->start);
}

/* Host names as the policy spells them: lower case, no trailing dot; IP
 * literals in canonical form. Anything a resolver could read differently
 * ("127.1", "0x7f.0.0.1", a numeric last label) is refused. */
static int normalize_host(const char *in, size_t n, bool bracketed, char *out, size_t outlen)
{
	char tmp[256];
	if (n == 0 || n >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, in, n);
	tmp[n] = '\0';
	if (bracketed) {
		struct in6_addr a6;
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return -EINVAL;
		return inet_ntop(AF_INET6, &a6, out, (socklen_t)outlen) ? 0 : -EINVAL;
	}
	if (n > 1 && tmp[n - 1] == '.')
		tmp[--n] = '\0';
	bool numeric_last = true;
	for (size_t i = 0; i < n; i++) {
		char ch = tmp[i];
		if (ch >= 'A' && ch <= 'Z')
			tmp[i] = (char)(ch - 'A' + 'a');
		else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_'))
			return -EINVAL;
		if (tmp[i] == '.' && (i == 0 || tmp[i - 1] == '.'))
			return -EINVAL;
		if (tmp[i] == '.')
			numeric_last = true;
		else if (!(tmp[i] >= '0' && tmp[i] <= '9') && !(tmp[i] == 'x' && i > 0 && tmp[i - 1] == '0'))
			numeric_last = false;
	}
	if (tmp[0] == '.' || tmp[0] == '-')
		return -EINVAL;
	if (numeric_last) {
		struct in_addr a4;
		if (inet_pton(AF_INET, tmp, &a4) != 1)
			return -EINVAL;
	}
	if (n >= outlen)
		return -EINVAL;
	memcpy(out, tmp, n + 1);
	return 0;
}

/* Splits "host[:port]" or "[v6][:port]". Port 0 means none was given. */
static int parse_authority(const char *s, size_t n, char *host, size_t hostlen, uint16_t *port)
{
	const char *h = s;
	size_t hl;
	const char *rest;
	bool bracketed = false;

	if (memchr(s, '@', n))
		return -EINVAL; /* userinfo: never in a request authority */
	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close)
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(close - h);
		rest = close + 1;
		bracketed = true;
	} else {
		const char *colon = memchr(s, ':', n);
		hl = colon ? (size_t)(colon - s) : n;
		rest = s + hl;
	}
	size_t rl = (size_t)(s + n - rest);
	*port = 0;
	if (rl) {
		if (rest[0] != ':' || rl < 2 || rl > 6)
			return -EINVAL;
		unsigned v = 0;
		for (size_t i = 1; i < rl; i++) {
			if (rest[i] < '0' || rest[i] > '9')
				return -EINVAL;
			v = v * 10 + (unsigned)(rest[i] - '0');
		}
		if (v == 0 || v > 65535)
			return -EINVAL;
		*port = (uint16_t)v;
	}
	return normalize_host(h, hl, bracketed, host, hostlen);
}

/* Whether the Host header names the request's host (and port, if any).
 * authority: the request target's, as the client wrote it, from which
 * c->host and c->port were parsed, or NULL (in a tunnel). */
static bool host_header_matches(struct conn *c, const char *authority, size_t authority_len)
{
	int i = http_head_find(&c->req, "host");
	if (i < 0)
		return c->req.major == 1 && c->req.minor == 0; /* HTTP/1.0 may omit it */
	/* A second Host header is a classic confusion: refuse. */
	for (unsigned k = (unsigned)i + 1; k < c->req.n_headers; k++)
		if (memcaseeq(c->req.headers[k].name, c->req.headers[k].name_len, "host"))
			return false;
	/* The same bytes parse to the same host and port: most clients write
	 * the target's authority in Host as it is. */
	if (authority && c->req.headers[i].value_len == authority_len &&
	    memcmp(c->req.headers[i].value, authority, authority_len) == 0)
		return true;
	char host[256];
	uint16_t port;
	if (parse_authority(c->req.headers[i].value, c->req.headers[i].value_len, host, sizeof(host), &port) < 0)
		return false;
	uint16_t def = c->scheme == SCHEME_HTTPS ? 443 : 80;
	return streq(host, c->host) && (port ? port : def) == c->port;
}

static void handle_connect(struct conn *c);
static void handle_request(struct conn *c);

static void process_head(struct conn *c)
{
	const char *why = NULL;

	if (c->gen)
		gen_unref(c->gen);
	c->gen = gen_ref(worker_current_gen(c->w));
	if (c->max_headers < limits(c)->max_headers) {
		struct http_header *h = reallocarray(c->hdrs, limits(c)->max_headers, sizeof(*h));
		if (!h) {
			close_after_flush(c);
			return;
		}
		c->hdrs = h;
		c->max_headers = limits(c)->max_headers;
	}
	c->req.headers = c->hdrs;
	c->req.max_headers = limits(c)->max_headers;
	if (http1_parse_head(&c->parser, c->head.data, c->head.len, &c->req, &why) < 0) {
		if (c->req.too_many_headers) {
			char msg[128];
			snprintf(msg, sizeof(msg), "more than %u header fields", limits(c)->max_headers);
			refuse(c, 431, "Request Header Fields Too Large", "deny", "limit", msg, NULL);
			return;
		}
		bad_request(c, why);
		return;
	}
	size_t ml = c->req.method_len < sizeof(c->method) ? c->req.method_len : sizeof(c->method) - 1;
	memcpy(c->method, c->req.method, ml);
	c->method[ml] = '\0';
	c->is_head = streq(c->method, "HEAD");

	if (streq(c->method, "CONNECT")) {
		if (c->in_tunnel) {
			bad_request(c, "CONNECT inside a tunnel");
			return;
		}
		handle_connect(c);
		return;
	}
	handle_request(c);
}

/* The length of a complete, well-formed head in the first contiguous
 * piece of in, looking at most at limit bytes; 0 otherwise (the head is
 * longer, split, or malformed: the caller's scan says which). */
static long head_at_start(struct evbuffer *in, size_t limit)
{
	struct evbuffer_iovec v;
	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
		return 0;
	size_t scan = 0;
	const char *why = NULL;
	long hl = http1_head_length(v.iov_base, v.iov_len < limit ? v.iov_len : limit, &scan, &why);
	return hl > 0 ? hl : 0;
}

/* Moves what the input buffer holds of the request head to c->head,
 * up to one byte past max. Sets *ret_hl to the head's length when a whole
 * head starts the input (then the head alone is taken), else to 0.
 * Returns 0, or -1 if there was nothing to take (the next head is awaited,
 * and its first read may go to c->head directly) or the connection was
 * closed. */
static int take_head_bytes(struct conn *c, struct evbuffer *in, size_t max, long *ret_hl)
{
	size_t avail = evbuffer_get_length(in);
	c->head.max = max + 1;
	if (avail == 0) {
		if (c->head.len == 0 && c->rd.ev)
			c->rd.direct = &c->head;
		return -1;
	}
	c->rd.direct = NULL; /* bytes wait in the input: the next ones go after them */
	size_t room = max + 1 - c->head.len;
	size_t take = avail < room ? avail : room;
	/* Mostly a whole head starts what was read, a body (a POST) after it:
	 * then the head alone is taken, and the body stays where it is instead
	 * of being copied out and put back. */
	long hl = c->head.len == 0 ? head_at_start(in, take) : 0;
	if (hl > 0)
		take = (size_t)hl;
	size_t old = c->head.len;
	if (buf_append(&c->head, "", 0) < 0 || c->head.cap < c->head.len + take + 1) {
		int r = buf_append(&c->head, evbuffer_pullup(in, (ssize_t)take), take);
		if (r < 0) {
			close_after_flush(c);
			return -1;
		}
	} else {
		evbuffer_copyout(in, c->head.data + old, take);
		c->head.len += take;
		c->head.data[c->head.len] = '\0';
	}
	evbuffer_drain(in, take);
	*ret_hl = hl;
	return 0;
}

static void read_head(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	const struct policy_limits *lim = &worker_current_gen(c->w)->policy->limits;
	size_t max = lim->max_header_bytes;

	while (c->state == C_HEAD) {
		size_t old = c->head.len;
		long hl = 0;
		if (c->rd.direct && old > 0) {
			/* The first read of this head went into it directly (below,
			 * and sockread.h): the bytes are all new. */
			c->rd.direct = NULL;
			old = 0;
		} else if (take_head_bytes(c, in, max, &hl) < 0) {
			return;
		}

		const char *why = NULL;
		if (hl <= 0)
			hl = http1_head_length(c->head.data, c->head.len, &c->head_scan, &why);
		if (hl < 0) {
			bad_request(c, why);
			return;
		}
		if (hl == 0) {
			if (c->head.len > max) {
				char msg[128];
				snprintf(msg, sizeof(msg), "request head larger than %zu bytes", max);
				refuse(c, 431, "Request Header Fields Too Large", "deny", "limit", msg, NULL);
				return;
			}
			/* The head has begun and is not whole: it has header_timeout
			 * from its first bytes. A head that comes whole, as most do,
			 * never arms it (the idle timer is removed below). */
			if (old == 0)
				arm_timer(c, lim->header_timeout_ms);
			continue;
		}
		/* Bytes after the head belong to the body or the next request:
		 * give them back to the input buffer. */
		if ((size_t)hl < c->head.len)
			evbuffer_prepend(in, c->head.data + hl, c->head.len - (size_t)hl);
		c->head.len = (size_t)hl;
		c->head.data[hl] = '\0';
		park_timer(c);
		process_head(c);
		return;
	}
}

/* ---- CONNECT ---- */

static void tunnel_event_cb(struct bufferevent *bev, short what, void *arg);
static void start_tls(struct conn *c);

static void handle_connect(struct conn *c)
{
	char host[256];
	uint16_t port;

	c->scheme = SCHEME_HTTPS;
	if (parse_authority(c->req.url, c->req.url_len, host, sizeof(host), &port) < 0 || port == 0) {
		bad_request(c, "CONNECT needs a target of the form host:port");
		return;
	}
	snprintf(c->host, sizeof(c->host), "%s", host);
	c->port = port;

	/* A tunnel to a host no route allows is intercepted all the same: no
	 * name is resolved and nothing is dialled, but the request inside can
	 * be refused with a clear answer, and a placeholder in it audited as
	 * the leak attempt it is. */
	if (c->w->px->audit && !audit_healthy(c->w->px->audit)) {
		refuse_unaudited(c);
		return;
	}
	/* RFC 9110 9.3.6: the tunnel starts after our 2xx. Bytes sent before
	 * it cannot be told apart from a second request: refuse them. */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		bad_request(c, "data sent before the CONNECT response");
		return;
	}
	snprintf(c->tunnel_host, sizeof(c->tunnel_host), "%s", host);
	c->tunnel_port = port;
	c->state = C_CONNECT_SENT;
	client_read(c, false);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	/* Written now, as client_send does, when nothing is queued before it:
	 * the new socket is all but always writable, and the handshake can
	 * begin without a pass of the loop. What the socket does not take
	 * (or all of it, after an error, which the next write reports) is
	 * queued, and start_tls waits for it to be written. */
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	struct evbuffer *out = bufferevent_get_output(c->bev);
	ssize_t sent = 0;
	if (evbuffer_get_length(out) == 0)
		sent = send(bufferevent_getfd(c->bev), ok, sizeof(ok) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (sent == (ssize_t)sizeof(ok) - 1) {
		start_tls(c);
		return;
	}
	if (sent < 0)
		sent = 0;
	evbuffer_add(out, ok + sent, sizeof(ok) - 1 - (size_t)sent);
}

/* The 200 has reached the socket: the client's ClientHello waits in the
 * kernel. Hand the descriptor to a TLS bufferevent. */
static void start_tls(struct conn *c)
{
	char msg[512];
	SSL_CTX *ctx = proxy_server_ctx(c->w->px);
	SSL *ssl = ctx ? tls_server_ssl_new(ctx, c->w->px->ca, c->tunnel_host) : NULL;
	if (!ssl) {
		if (ctx)
			snprintf(msg, sizeof(msg), "cannot mint a certificate for %s", c->tunnel_host);
		else
			snprintf(msg, sizeof(msg), "cannot make the TLS context of the tunnels");
		conn_audit(c, "connect", "error", "tls", msg);
		conn_free(c);
		return;
	}
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	sockread_stop(&c->rd); /* the TLS bufferevent reads the handshake itself */
	bufferevent_setfd(c->bev, -1);
	bufferevent_free(c->bev);
	c->bev = bufferevent_openssl_socket_new(c->w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		SSL_free(ssl);
		close(fd);
		conn_free(c);
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	c->in_tunnel = true;
	c->state = C_HANDSHAKE;
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, tunnel_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, WATER_LOW, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	tls_bev_idle_write_off(c->bev); /* the handshake waits for the ClientHello */
	arm_timer(c, limits(c)->header_timeout_ms);
}

static void tunnel_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	if (c->state != C_HANDSHAKE) {
		conn_event_cb(bev, what, arg);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		tls_bev_idle_write_off(bev); /* nothing to write before a request */
		bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
		/* keyward reads the tunnel from here on, with read-ahead
		 * (tlsread.h), what the handshake read ahead included: libevent's
		 * reading would leave that waiting for a wake-up that never
		 * comes, so without memory for keyward's the tunnel ends. */
		if (tlsread_start(&c->rd, c->w->base, c->bev, false) < 0) {
			conn_free(c);
			return;
		}
		http1_init(&c->parser, HTTP1_REQUEST);
		c->state = C_HEAD;
		reset_request(c);
		idle_timer(c, limits(c)->idle_timeout_ms);
		read_head(c);
		return;
	}
	/* The handshake failed: say why in the audit log, where an operator
	 * looks when a client says "certificate not trusted". */
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	char detail[300];
	if (ssl && tls_server_sni_mismatch(ssl)) {
		snprintf(detail, sizeof(detail), "TLS server name differs from the CONNECT target %s", c->tunnel_host);
		c->status = 0;
		conn_audit(c, "connect", "deny", "sni", detail);
	} else {
		unsigned long e = bufferevent_get_openssl_error(bev);
		char es[200] = "connection closed";
		if (e)
			ERR_error_string_n(e, es, sizeof(es));
		snprintf(detail, sizeof(detail),
		         "TLS handshake with the client failed (does it trust keyward's CA?): %s", es);
		conn_audit(c, "connect", "error", "tls", detail);
	}
	ERR_clear_error();
	conn_free(c);
}

/* ---- requests ---- */

static void upstream_ready(struct conn *c, struct upstream *u, int err, const char *why);
static void forward(struct conn *c, const struct secret *secret, bool fresh);
static const struct secret *route_secret(struct conn *c);
static void conn_token_then(struct conn *c, bool forward_next);
static bool conn_token_rejected(struct conn *c);
static bool conn_token_expired(struct conn *c);

/* Finds scheme, host, port and the path+query of the request target, and
 * checks the Host header against them. */
static int resolve_target(struct conn *c, const char **path, size_t *path_len, const char **msg)
{
	const char *url = c->req.url;
	size_t n = c->req.url_len;
	const char *authority = NULL;
	size_t authority_len = 0;

	if (c->in_tunnel) {
		c->scheme = SCHEME_HTTPS;
		snprintf(c->host, sizeof(c->host), "%s", c->tunnel_host);
		c->port = c->tunnel_port;
		if (n >= 8 && strncasecmp(url, "https://", 8) == 0) {
			const char *a = url + 8;
			const char *slash = memchr(a, '/', n - 8);
			size_t al = slash ? (size_t)(slash - a) : n - 8;
			char host[256];
			uint16_t port;
			if (parse_authority(a, al, host, sizeof(host), &port) < 0 || !streq(host, c->host) ||
			    (port ? port : 443) != c->port) {
				*msg = "request target names another host than the tunnel";
				return -EPERM;
			}
			url = slash ? slash : "/";
			n = slash ? n - 8 - al : 1;
		} else if (n == 0 || url[0] != '/') {
			*msg = "request target inside a tunnel must be a path";
			return -EINVAL;
		}
	} else {
		if (n >= 8 && strncasecmp(url, "https://", 8) == 0) {
			*msg = "https requests must use CONNECT (set HTTPS_PROXY to this proxy)";
			return -EINVAL;
		}
		if (n < 7 || strncasecmp(url, "http://", 7) != 0) {
			*msg = "keyward is a forward proxy: send absolute-form requests (http://host/path) or CONNECT";
			return -EINVAL;
		}
		const char *a = url + 7;
		const char *end = url + n;
		const char *slash = memchr(a, '/', (size_t)(end - a));
		const char *qm = memchr(a, '?', (size_t)(end - a));
		if (qm && (!slash || qm < slash))
			slash = qm;
		size_t al = (size_t)((slash ? slash : end) - a);
		uint16_t port;
		if (parse_authority(a, al, c->host, sizeof(c->host), &port) < 0) {
			*msg = "invalid host in request target";
			return -EINVAL;
		}
		c->scheme = SCHEME_HTTP;
		c->port = port ? port : 80;
		authority = a;
		authority_len = al;
		if (slash && *slash == '/') {
			url = slash;
			n = (size_t)(end - slash);
		} else {
			/* "http://host" or "http://host?q": the path is "/" */
			url = slash ? slash : "/";
			n = slash ? (size_t)(end - slash) : 1;
			if (slash) {
				*msg = "request target has a query but no path";
				return -EINVAL;
			}
		}
	}
	if (!host_header_matches(c, authority, authority_len)) {
		*msg = c->in_tunnel ? "Host header does not name the host of the tunnel"
		                    : "Host header does not name the host of the request target";
		return -EPERM;
	}
	*path = url;
	*path_len = n;
	return 0;
}

/* hours: and rate: of the route and of its credential. When they do not
 * allow the request now, refuses it (403 hours, 429 rate, both with a
 * Retry-After where a wait helps) and returns false. */
static bool quota_allows(struct conn *c)
{
	const struct policy_route *rt = c->route;
	const struct policy_credential *cred = rt->credential;
	const struct policy_quota *qs[2] = { &rt->quota, cred ? &cred->quota : NULL };
	char text[768], where[600], keys[2][320];
	struct timespec now;
	uint64_t wait;

	/* most routes have neither: no clock, no formatting */
	if (!rt->quota.has_hours && !rt->quota.rate_count &&
	    !(cred && (cred->quota.has_hours || cred->quota.rate_count)))
		return true;
	route_place(c, rt, where, sizeof(where));
	clock_gettime(CLOCK_REALTIME, &now);
	for (size_t i = 0; i < 2; i++) {
		if (!qs[i] || policy_hours_open(qs[i], now.tv_sec, &wait))
			continue;
		int tz = qs[i]->tz_offset_min < 0 ? -qs[i]->tz_offset_min : qs[i]->tz_offset_min;
		snprintf(text, sizeof(text), "%s %s is outside the hours: of %s%s (time zone UTC%c%02d:%02d)",
		         c->method, c->host, i ? "credential " : "", i ? cred->name : where,
		         qs[i]->tz_offset_min < 0 ? '-' : '+', tz / 60, tz % 60);
		c->retry_after = wait;
		refuse(c, 403, "Forbidden", "deny", "hours", text,
		       wait ? "try again after Retry-After seconds, or change hours:" : "no window of hours: opens");
		return false;
	}
	if (!rt->quota.rate_count && !(cred && cred->quota.rate_count))
		return true;
	snprintf(keys[0], sizeof(keys[0]), "route %zu %s %s:%u", rt->index,
	         rt->scheme == SCHEME_HTTP ? "http" : "https", rt->host, rt->port);
	snprintf(keys[1], sizeof(keys[1]), "credential %s", cred ? cred->name : "");
	struct rate_want want[2] = { { keys[0], &rt->quota }, { keys[1], qs[1] } };
	struct timespec mono;
	clock_gettime(CLOCK_MONOTONIC, &mono);
	uint64_t now_ns = (uint64_t)mono.tv_sec * 1000000000u + (uint64_t)mono.tv_nsec;
	size_t which = 0;
	if (rate_take(c->w->px->rates, want, cred ? 2 : 1, now_ns, &which, &wait))
		return true;
	const struct policy_quota *q = want[which].q;
	const char *unit = q->rate_period_s == 1 ? "second" : q->rate_period_s == 60 ? "minute" : "hour";
	snprintf(text, sizeof(text), "the rate limit of %s%s is used up (%" PRIu64 " per %s, burst %" PRIu64 ")",
	         which ? "credential " : "", which ? cred->name : where, q->rate_count, unit, q->burst);
	c->retry_after = wait;
	refuse(c, 429, "Too Many Requests", "deny", "rate", text,
	       "retry after Retry-After seconds, or raise rate: or burst: in the policy");
	return false;
}

static void handle_request(struct conn *c)
{
	const char *msg = NULL, *p;
	size_t pl;
	char text[768];

	int r = resolve_target(c, &p, &pl, &msg);
	if (r == -EPERM) {
		refuse(c, 403, "Forbidden", "deny", "host-mismatch", msg, NULL);
		return;
	}
	if (r < 0) {
		bad_request(c, msg);
		return;
	}
	if (memchr(p, '#', pl)) {
		bad_request(c, "fragment in request target");
		return;
	}
	const char *qm = memchr(p, '?', pl);
	size_t raw_path_len = qm ? (size_t)(qm - p) : pl;
	if (qm) {
		c->query = qm + 1;
		c->query_len = pl - raw_path_len - 1;
	}
	c->path.max = raw_path_len + 1;
	buf_reset(&c->path);
	if (buf_append(&c->path, "", 0) < 0 || c->path.cap < raw_path_len + 1) {
		if (buf_append(&c->path, p, raw_path_len) < 0) { /* grows the storage */
			close_after_flush(c);
			return;
		}
	}
	unsigned flags = 0;
	int nl = path_normalize(p, raw_path_len, c->path.data, c->path.cap, &flags);
	if (nl < 0) {
		buf_reset(&c->path);
		bad_request(c, "invalid path (it must start with '/' and use valid percent-encoding)");
		return;
	}
	c->path.len = (size_t)nl;

	struct match_request mr = {
		.scheme = c->scheme,
		.host = c->host,
		.port = c->port,
		.method = c->method,
		.path = c->path.data,
	};
	struct match_result m;
	policy_match(c->gen->policy, &mr, &m);
	if (m.fail != MATCH_OK) {
		/* A route for this very host, scheme and port refused only the
		 * method or path: its own credential's placeholder is going where
		 * it belongs, and the refusal says what was wrong. Any other
		 * credential's placeholder is a leak. */
		const struct policy_credential *own =
		    (m.fail == MATCH_METHOD || m.fail == MATCH_PATH) && m.route ? m.route->credential : NULL;
		if (refuse_leak(c, own))
			return;
		refuse_match(c, &m);
		return;
	}
	const struct policy_route *rt = m.route;
	c->route = rt;
	const struct policy_credential *cred = rt->credential;

	if (method_is_trace(c->method)) {
		refuse(c, 403, "Forbidden", "deny", "method", TRACE_REFUSED, NULL);
		return;
	}

	if (cred && flags) {
		snprintf(text, sizeof(text), "path contains %s, which is refused on credentialed routes",
		         path_flag_name(flags));
		refuse(c, 403, "Forbidden", "deny", "ambiguous-path", text,
		       "send the path without encoded slashes, backslashes or control characters");
		return;
	}
	if (refuse_leak(c, cred))
		return;
	if (rt->inject == INJECT_SIGV4 && refuse_sigv4(c))
		return;

	c->max_body = rt->max_body ? rt->max_body : limits(c)->max_body;
	if (c->max_body && c->req.has_content_length && c->req.content_length > c->max_body) {
		snprintf(text, sizeof(text), "request body of %" PRIu64 " bytes is larger than the limit of %" PRIu64,
		         c->req.content_length, c->max_body);
		refuse(c, 413, "Content Too Large", "deny", "limit", text, "raise max_body: on the route");
		return;
	}
	if (c->w->px->audit && !audit_healthy(c->w->px->audit)) {
		refuse_unaudited(c);
		return;
	}
	if (cred && refuse_unavailable(c, cred))
		return;

	if (!quota_allows(c))
		return;

	c->upgrade = c->req.upgrade && http_head_find(&c->req, "upgrade") >= 0;
	if (c->upgrade && !upgrade_is_websocket(c)) {
		/* After a 101 bytes flow unchecked: only WebSocket, whose frames
		 * carry no further requests, may take that door. h2c would open an
		 * HTTP/2 connection on which every path is reachable. */
		refuse(c, 403, "Forbidden", "deny", "upgrade", "only Upgrade: websocket is relayed", NULL);
		return;
	}
	c->keep_alive = c->req.keep_alive && !c->w->draining;
	if (rt->inject == INJECT_SIGV4 && inject_sigv4_needs_body_hash(&c->req)) {
		sigv4_hash_body(c);
		return;
	}
	if (cred && cred->mint)
		conn_token_then(c, false);
	else
		decide(c);
}

/* Queues the allow record of the current request. Nothing of the request
 * goes upstream before that record is in the file: it waits in C_DECIDED
 * until the worker writes its batch (audit_written). */
static void decide(struct conn *c)
{
	struct worker *w = c->w;
	if (!w->px->audit) {
		forward(c, route_secret(c), false);
		return;
	}
	struct audit_record rec = conn_record(c, "request", "allow");
	int i = worker_audit_queue(w, &rec);
	if (i < 0) {
		audit_failed(c, i);
		refuse_unaudited(c);
		return;
	}
	c->audit_index = i;
	c->state = C_DECIDED;
	LIST_INSERT_HEAD(&w->audit_wait, c, wait_link);
	worker_audit_schedule(w);
}

/* The batch holding the allow record of c was written (r == 0, its first
 * record got seq first) or could not be (r < 0). */
static void audit_written(struct conn *c, int r, uint64_t first)
{
	c->state = C_CONNECTING;
	if (r < 0) {
		refuse_unaudited(c);
		return;
	}
	c->decided = true;
	c->decision_seq = first + (uint64_t)c->audit_index;
	forward(c, route_secret(c), false);
}

/* The forms of secrets that the generation's set does not hold, for the
 * redaction of this request's response: its Basic credentials and the
 * token keyward minted for it, in every form redact_set_add_secret knows
 * (c->req_forms; none: NULL), and the token manager's shared forms of
 * every minted secret (c->minted_forms: a service may serve back a token
 * that another credential's route swapped in). */
static int build_req_forms(struct conn *c, const struct outbound *o)
{
	/* a request sent again (a retry after a 401 with a new token) starts
	 * its redaction afresh: the redactor of the answer it replaces uses
	 * the old forms */
	redaction_end(c);
	struct redact_set *s = TAKE_PTR(c->spare.forms);
	int r = s ? 0 : redact_set_new(&s);
	if (r < 0)
		return r;
	r = inject_redact_forms(o, s);
	const struct secret *minted = c->tok ? token_value(c->tok) : NULL;
	if (r == 0 && minted)
		r = redact_set_add_secret(s, minted->data, minted->len, c->route->credential->placeholder);
	if (r == 0 && c->w->px->tokens)
		r = tokens_forms(c->w->px->tokens, &c->minted_forms);
	if (r == 0 && redact_set_count(s) > 0 && (r = redact_set_seal(s)) == 0) {
		c->req_forms = s;
		return 0;
	}
	redact_set_clear(s); /* none, or a failure: kept empty */
	c->spare.forms = s;
	return r;
}

/* Whether this response is scanned: on a credentialed route, and on any
 * route to a host that a credentialed route reaches too. A placeholder
 * sent in a header or the query of a credentialed route is swapped for the
 * secret (inject.c), so the service may store the secret and serve it back
 * to a request of its uncredentialed routes (an issue title, a note). */
static bool scans_response(const struct conn *c)
{
	if (c->route->credential)
		return true;
	const struct policy *p = c->gen->policy;
	for (size_t i = 0; i < p->n_routes; i++)
		if (p->routes[i].credential && route_host_matches(&p->routes[i], c->host))
			return true;
	return false;
}

/* Builds the upstream head and gets a connection for the current request.
 * fresh: do not take one from the pool (a retry after a stale one). */
static void forward(struct conn *c, const struct secret *secret, bool fresh)
{
	const struct policy_route *rt = c->route;
	c->scans = scans_response(c);
	c->out.max = limits(c)->max_header_bytes + 16384;
	struct outbound o = {
		.req = &c->req,
		.path = c->path.data,
		.path_len = c->path.len,
		.query = c->query,
		.query_len = c->query_len,
		.host = c->host,
		.port = c->port,
		.scheme = c->scheme,
		.route = rt,
		.secret = secret,
		.upgrade = c->upgrade,
		.scanned = c->scans,
		.stream = &c->sigv4,
		.body_hash = c->body_hash[0] ? c->body_hash : NULL,
	};
	const struct policy_credential *cred = rt->credential;
	for (size_t k = 0; cred && k < CRED_MAX_PARTS; k++)
		if (cred->parts[k])
			o.parts[k] = c->gen->secrets[cred->parts[k] - c->gen->policy->creds];
	if (c->sigv4.started) /* a retry starts over */
		sigv4_chunked_free(&c->sigv4.chunked);
	c->sigv4.started = false;
	const char *why = NULL;
	if (inject_request_head(&o, &c->out, &why) < 0) {
		refuse(c, 400, "Bad Request", "deny", "malformed", why, NULL);
		return;
	}
	if (c->scans && build_req_forms(c, &o) < 0) {
		refuse(c, 503, "Service Unavailable", "error", "credential",
		       "cannot prepare the redaction of the response (out of memory)", NULL);
		return;
	}

	char errbuf[256];
	SSL_CTX *ctx = NULL;
	if (c->scheme == SCHEME_HTTPS && !(ctx = gen_upstream_ctx(c->gen, rt->index, errbuf, sizeof(errbuf)))) {
		refuse(c, 502, "Bad Gateway", "error", "upstream", errbuf, NULL);
		return;
	}
	struct upstream_target t = {
		.scheme = c->scheme,
		.host = c->host,
		.port = c->port,
		.allow_private = rt->allow_private,
		.ctx = ctx,
		.policy_serial = c->gen->share->serial,
		.listener = (size_t)(c->li - c->w->px->listeners),
		.fresh = fresh,
	};
	c->state = C_CONNECTING;
	int r = upstream_get(c->w, c, &t, upstream_ready, &c->up, errbuf, sizeof(errbuf));
	if (r < 0) {
		c->up = NULL;
		refuse(c, 502, "Bad Gateway", "error", "upstream", errbuf, NULL);
		return;
	}
	if (r == 1) /* a pooled connection, ready now */
		upstream_ready(c, c->up, 0, NULL);
}

/* The secret of the current request's credential (checked available). */
static const struct secret *route_secret(struct conn *c)
{
	const struct policy_credential *cred = c->route->credential;
	if (c->tok)
		return token_value(c->tok);
	return cred ? c->gen->secrets[cred - c->gen->policy->creds] : NULL;
}

/* ---- minted tokens (token.h) ----
 *
 * A route bound to an oauth2_* or github_app credential carries the
 * credential's current access token. The request gets it before its
 * decision is audited (conn_token_then); while a fetch runs it waits
 * (C_CONNECTING, reading nothing more) for the token manager to wake it
 * on this worker. A 401 from the upstream drops the token and, for a
 * request without a body, sends it again once with a new one. */

static void conn_token_clear(struct conn *c)
{
	if (c->twait.ev && c->w->px->tokens)
		tokens_wait_cancel(c->w->px->tokens, &c->twait);
	if (c->twait.ev)
		event_del(c->twait.ev);
	token_unref(c->tok);
	c->tok = NULL;
}

static void token_refuse(struct conn *c, const char *why)
{
	char text[512];
	snprintf(text, sizeof(text), "no token for credential %s: %s", c->route->credential->name, why);
	refuse(c, 503, "Service Unavailable", "error", "token", text, NULL);
}

/* The token is in c->tok: go on where the request waited. */
static void token_go(struct conn *c)
{
	if (c->tok_forward)
		forward(c, route_secret(c), true);
	else
		decide(c);
}

static void token_wait_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct token_wait *tw = &c->twait;
	/* EV_READ: the fetch's letter made the event active, after the fetch
	 * thread wrote done, tok and why (the mailbox's lock orders the two).
	 * A timeout alone reads none of them: a wake that raced it is taken
	 * back with the wait, and the request refused. */
	if (!(what & EV_READ)) {
		tokens_wait_cancel(c->w->px->tokens, tw);
		char text[100];
		snprintf(text, sizeof(text), "timed out after %d s waiting for the token endpoint", TOKEN_WAIT_SECONDS);
		token_refuse(c, text);
		return;
	}
	c->tok = tw->tok;
	tw->tok = NULL;
	tw->done = false;
	if (!c->tok) {
		token_refuse(c, tw->why);
		return;
	}
	token_go(c);
}

/* Gets the route's token into c->tok, then decides (or, forward_next,
 * forwards): now if one is cached, else once the fetch ends. */
static void conn_token_then(struct conn *c, bool forward_next)
{
	char why[400];
	struct tokens *tm = c->w->px->tokens;
	c->tok_forward = forward_next;
	if (!c->twait.ev && !(c->twait.ev = event_new(c->w->base, -1, 0, token_wait_cb, c))) {
		token_refuse(c, "out of memory");
		return;
	}
	c->twait.mb = &c->w->mail;
	int r = tokens_get(tm, c->gen, c->route->credential, &c->twait, &c->tok, why, sizeof(why));
	if (r < 0) {
		token_refuse(c, why);
		return;
	}
	if (r == 1) {
		token_go(c);
		return;
	}
	struct timeval tv = { TOKEN_WAIT_SECONDS, 0 };
	c->state = C_CONNECTING;
	client_read(c, false);
	stop_timer(c);
	event_add(c->twait.ev, &tv);
}

/* The upstream is ready, but the request's token expired on the way
 * (a slow connect, a short-lived token): nothing has been sent; the
 * connection goes back to the pool and the request gets a current token
 * (true), so that a token keyward knows has expired is never sent. */
static bool conn_token_expired(struct conn *c)
{
	if (!c->tok || !token_expired(c->tok))
		return false;
	upstream_release(c->up, true);
	c->up = NULL;
	token_unref(c->tok);
	c->tok = NULL;
	conn_token_then(c, true);
	return true;
}

/* The upstream answered 401 to a request carrying a minted token: the
 * token is dropped so that the next request gets a new one. A request
 * without a body is sent again, once, with the new token (true: the 401 is
 * not relayed); any other gets the 401 (false). */
static bool conn_token_rejected(struct conn *c)
{
	if (!c->tok)
		return false;
	tokens_rejected(c->w->px->tokens, c->route->credential, c->tok);
	if (c->tok_retried || !c->body_done || c->bytes_in || c->upgrade)
		return false;
	c->tok_retried = true;
	log_debug("%s %s: 401 with the token of %s; retrying once with a new one", c->method, c->host,
	          c->route->credential->name);
	upstream_release(c->up, false);
	c->up = NULL;
	token_unref(c->tok);
	c->tok = NULL;
	conn_token_then(c, true);
	return true;
}

/* llhttp body sink: forward the payload upstream, re-framed. Chunked
 * bodies are sent with our own chunk framing (extensions and trailers
 * dropped), so upstream sees exactly the bytes we parsed. */
static int body_out(void *arg, const char *p, size_t n)
{
	struct conn *c = arg;
	struct evbuffer *out = bufferevent_get_output(c->up->bev);
	if (c->req.chunked && n) {
		if (evbuffer_add_printf(out, "%zx\r\n", n) < 0)
			return -ENOMEM;
	}
	if (evbuffer_add(out, p, n) < 0)
		return -ENOMEM;
	if (c->req.chunked && n && evbuffer_add(out, "\r\n", 2) < 0)
		return -ENOMEM;
	return 0;
}

static int body_sink(void *arg, const char *p, size_t n)
{
	struct conn *c = arg;
	c->bytes_in += n;
	if (c->max_body && c->bytes_in > c->max_body)
		return -EFBIG;
	/* an aws-chunked upload: every chunk signed again (inject_sigv4.c) */
	if (c->sigv4.started)
		return sigv4_chunked_feed(&c->sigv4.chunked, p, n, body_out, c, &c->body_why);
	return body_out(c, p, n);
}

static int join_sink(void *arg, const char *p, size_t n)
{
	struct conn *c = arg;
	c->bytes_in += n;
	return buf_append(&c->out, p, n);
}

/* A small body that came with its head (a JSON POST, most often) joins
 * the head in c->out, through the parser, so that both go in one write
 * (one TLS record): pumped after the head, it would wait for EPOLLOUT and
 * a pass of the loop. Only a body of known length that is here whole and
 * fits in one record with the head; any other is pumped as before.
 * Returns false if the request was refused instead. */
static bool join_body(struct conn *c)
{
	const struct http_head *r = &c->req;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	if (http1_message_done(&c->parser) || r->chunked || !r->has_content_length || c->sigv4.started || c->upgrade ||
	    c->out.len >= TLS_RECORD_MAX || r->content_length > TLS_RECORD_MAX - c->out.len ||
	    c->out.len + r->content_length > c->out.max || (c->max_body && r->content_length > c->max_body) ||
	    evbuffer_get_length(in) < r->content_length)
		return true;
	size_t n = (size_t)r->content_length, consumed = 0;
	const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n), *why = NULL;
	char *room;
	if (!p || buf_space(&c->out, n, &room) < 0)
		return true; /* no memory to join: pumped as before */
	c->parser.on_body = join_sink;
	c->parser.ctx = c;
	int k = http1_feed_body(&c->parser, p, n, &consumed, &why);
	evbuffer_drain(in, consumed);
	if (k == 1 && consumed == n)
		return true;
	/* Not expected of a body of known length, with its room reserved;
	 * nothing was sent. */
	explicit_bzero(c->out.data, c->out.len);
	c->out.len = 0;
	char text[200];
	snprintf(text, sizeof(text), "malformed request body: %s", why ? why : "cannot be read");
	refuse(c, 400, "Bad Request", "deny", "malformed", text, NULL);
	return false;
}

static void send_request(struct conn *c)
{
	struct upstream *u = c->up;
	struct evbuffer *out = bufferevent_get_output(u->bev);
	size_t sent = 0;
	if (!join_body(c))
		return;
	/* Write the head now rather than queue it: a socket bufferevent, plain
	 * or TLS, writes only once epoll reports the socket writable, which
	 * costs a pass of the loop and two epoll_ctl(2) calls for a socket that
	 * is almost always writable. */
	enum tls_now tried = TLS_NOT_TRIED;
	if (!u->tls && evbuffer_get_length(out) == 0) {
		ssize_t k = send(bufferevent_getfd(u->bev), c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k > 0)
			sent = (size_t)k;
	} else if (u->tls && (tried = tls_send_now(u->bev, c->out.data, c->out.len)) == TLS_SENT) {
		sent = c->out.len;
	}
	/* On an error the rest is queued and the bufferevent reports it; a
	 * TLS head not sent is queued whole, in one piece (tls_send_now). */
	if (sent < c->out.len) {
		int added = evbuffer_add(out, c->out.data + sent, c->out.len - sent);
		if (tried == TLS_QUEUE)
			tls_queued(u->bev, added == 0 && evbuffer_pullup(out, -1) ? 0 : -1);
	}
	explicit_bzero(c->out.data, c->out.len); /* memset's speed: OPENSSL_cleanse goes byte by byte */
	c->out.len = 0;

	u->state = U_HEAD;
	upstream_head_clear(u);
	u->head_scan = 0;
	/* The first read of the response head may go into u->head directly,
	 * as a client's request head does (sockread.h, read_response_head):
	 * a read of a small response, whole. A larger one goes to the input
	 * buffer, where its body stays: taken here, it would be copied back
	 * and wiped. */
	u->head.max = limits(c)->max_header_bytes + 1;
	if (u->head.max > RESPONSE_DIRECT_MAX)
		u->head.max = RESPONSE_DIRECT_MAX;
	if (u->rd.ev)
		u->rd.direct = &u->head;
	http1_init(&u->parser, HTTP1_RESPONSE);
	u->parser.skip_body = c->is_head;
	bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, c);
	bufferevent_setwatermark(u->bev, EV_WRITE, WATER_LOW, 0);
	/* No read watermark: what the upstream sends is bounded by the
	 * callbacks, which take all of it each time (into the head, up to its
	 * limit, or on to the client) and stop reading once the client's
	 * output holds WATER_HIGH. A watermark would also re-add the read
	 * event at every change to the input buffer (libevent re-enables
	 * reading from its watermark callback), four times a request. */
	struct timeval tv = ms_timeval(limits(c)->upstream_timeout_ms);
	upstream_timeouts(u, &tv, &tv);
	/* Enabling what is enabled already would add the write event again
	 * (epoll_ctl) with nothing to write. A plain connection's reading is
	 * its sockread's, never the bufferevent's. */
	short want = u->rd.ev ? EV_WRITE : EV_READ | EV_WRITE;
	short off = (short)(want & ~bufferevent_get_enabled(u->bev));
	if (off)
		bufferevent_enable(u->bev, off);
	if (u->rd.ev)
		upstream_read(u, true);

	c->parser.on_body = body_sink;
	c->parser.ctx = c;
	if (http1_message_done(&c->parser)) {
		c->body_done = true;
		c->state = C_RESPONSE;
	} else {
		c->state = C_BODY;
		client_read(c, true);
		arm_timer(c, limits(c)->idle_timeout_ms);
		pump_request_body(c);
	}
}

static void upstream_ready(struct conn *c, struct upstream *u, int err, const char *why)
{
	if (err < 0) {
		char reason[256];
		snprintf(reason, sizeof(reason), "%s", why ? why : "upstream unreachable");
		why = reason; /* u->why dies with u */
		c->up = NULL;
		upstream_release(u, false);
		int status = err == -EACCES ? 403 : 502;
		refuse(c, status, status == 403 ? "Forbidden" : "Bad Gateway", status == 403 ? "deny" : "error",
		       status == 403 ? "private-address" : "upstream", why, NULL);
		return;
	}
	c->up = u;
	if (conn_token_expired(c))
		return;
	send_request(c);
}

static void pump_request_body(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *up_out = bufferevent_get_output(c->up->bev);

	while (c->state == C_BODY && evbuffer_get_length(in) > 0) {
		if (evbuffer_get_length(up_out) >= WATER_HIGH) {
			/* Backpressure: resume when upstream drains (up_write_cb). */
			client_read(c, false);
			return;
		}
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		size_t consumed = 0;
		const char *why = NULL;
		int r = http1_feed_body(&c->parser, v.iov_base, v.iov_len, &consumed, &why);
		evbuffer_drain(in, consumed);
		if (r == -EPIPE && c->max_body && c->bytes_in > c->max_body) {
			char text[200];
			snprintf(text, sizeof(text), "request body is larger than the limit of %" PRIu64 " bytes",
			         c->max_body);
			if (!c->response_started)
				refuse(c, 413, "Content Too Large", "deny", "limit", text,
				       "raise max_body: on the route");
			else {
				conn_audit(c, "request", "error", "limit", text);
				conn_free(c);
			}
			return;
		}
		if (r == 1 && c->sigv4.started && !sigv4_chunked_done(&c->sigv4.chunked)) {
			r = -EBADMSG;
			c->body_why = "aws-chunked: the body ended before its final chunk";
		}
		if (r < 0) {
			char text[200];
			if (c->body_why)
				why = c->body_why;
			snprintf(text, sizeof(text), "malformed request body: %s", why ? why : "error");
			if (!c->response_started)
				refuse(c, 400, "Bad Request", "deny", "malformed", text, NULL);
			else {
				conn_audit(c, "request", "error", "malformed", text);
				conn_free(c);
			}
			return;
		}
		if (r == 1) {
			sigv4_stream_end(c); /* the signing key goes as soon as it is not needed */
			if (c->req.chunked)
				evbuffer_add(up_out, "0\r\n\r\n", 5);
			c->body_done = true;
			c->state = C_RESPONSE;
			stop_timer(c);
			return;
		}
	}
	if (c->state == C_BODY)
		arm_timer(c, limits(c)->idle_timeout_ms);
}

/* ---- the response ---- */

/* Redaction: on a credentialed route, no secret of the generation (in the
 * forms redact.h lists) and no Basic credentials of this request reach the
 * client, in the status line, any header value or the body. The body is
 * decoded first when it is compressed, and sent as chunks (HTTP/1.1
 * clients) or delimited by the end of the connection (HTTP/1.0), since a
 * replacement changes its length. */

static int start_redaction(struct conn *c)
{
	const struct redact_set *sets[3] = { gen_redact_set(c->gen), c->req_forms,
		                             c->minted_forms ? token_forms_set(c->minted_forms) : NULL };
	if (!sets[0])
		return -ENOMEM;
	if (!c->spare.redactor)
		return redactor_new(sets, ARRAY_SIZE(sets), &c->redactor);
	c->redactor = TAKE_PTR(c->spare.redactor);
	return redactor_restart(c->redactor, sets, ARRAY_SIZE(sets));
}

static int emit_buf(void *ctx, const char *p, size_t n)
{
	return buf_append(ctx, p, n);
}

static int response_sink(void *arg, const char *p, size_t n)
{
	struct conn *c = arg;
	return resp_body_feed(c->resp_body, p, n, c->reply, &c->resp_why);
}

static void upstream_failed(struct conn *c, const char *what);

/* Sets up the body of a response on a credentialed route. Returns false
 * if the response was refused instead: a coding keyward cannot decode,
 * or any coding when the route says compressed: refuse. */
static bool start_body_filter(struct conn *c)
{
	struct upstream *u = c->up;
	enum resp_coding coding;
	const char *what = NULL;
	char text[300];
	if (resp_body_coding(&u->resp, &coding, &what) < 0) {
		snprintf(text, sizeof(text),
		         "sent a response with %s, which keyward cannot decode to scan it for secrets (responses "
		         "from a host a credentialed route reaches are scanned)",
		         what);
		upstream_failed(c, text);
		return false;
	}
	if (coding != CODING_IDENTITY && c->route->refuse_compressed) {
		upstream_failed(c, "sent a compressed response, which the route refuses (compressed: refuse)");
		return false;
	}
	if (coding != CODING_IDENTITY && c->status == 206) {
		/* A part of a compressed body (SigV4 routes pass ranges): keyward
		 * would send it decoded, and its Content-Range would still count
		 * compressed bytes; a middle part cannot even be decoded. */
		upstream_failed(c, "sent 206 Partial Content of a compressed body, which keyward cannot decode to scan "
		                   "it for secrets (ask for the whole object)");
		return false;
	}
	c->resp_chunked = c->req.minor >= 1;
	c->resp_decoded = coding != CODING_IDENTITY;
	if (!c->resp_chunked)
		c->keep_alive = false;
	int r;
	if (c->spare.body) {
		c->resp_body = TAKE_PTR(c->spare.body);
		r = resp_body_restart(c->resp_body, c->redactor, coding, c->resp_chunked, limits(c)->max_decoded_body);
	} else {
		r = resp_body_new(c->redactor, coding, c->resp_chunked, limits(c)->max_decoded_body, &c->resp_body);
	}
	if (r < 0) {
		upstream_failed(c, "could not be handled (out of memory)");
		return false;
	}
	u->parser.on_body = response_sink;
	u->parser.ctx = c;
	return true;
}

/* The body ended: what the redactor kept back, and the last chunk. False
 * if the response failed instead (a compressed stream cut short). */
static bool end_body_filter(struct conn *c)
{
	const char *why = NULL;
	if (!c->resp_body || resp_body_end(c->resp_body, c->reply, &why) == 0)
		return true;
	char text[300];
	snprintf(text, sizeof(text), "sent a response body that cannot be scanned: %s", why ? why : "error");
	upstream_failed(c, text);
	return false;
}

/* Fields keyward sets itself when it re-frames a body. */
static bool reframed_header(const struct conn *c, const struct http_header *x)
{
	if (!c->resp_body)
		return false;
	return memcaseeq(x->name, x->name_len, "content-length") ||
	       memcaseeq(x->name, x->name_len, "transfer-encoding") ||
	       (c->resp_decoded && memcaseeq(x->name, x->name_len, "content-encoding"));
}

/* A 1xx (but 101) or 204 response has no body, and RFC 9112 6.1 and RFC
 * 9110 8.6 forbid it Content-Length and Transfer-Encoding: a client that
 * read a body by them would take the next response for it. A 304 may
 * carry both, describing the representation it does not send. */
static bool bodiless_status(int status)
{
	return (status < 200 && status != 101) || status == 204;
}

/* Whether the upstream framed a body that the status rules out (http1.c
 * reads none): it may send one after all, and those bytes would be read
 * as the response to the next request on the connection, so the
 * connection is not pooled. A 304's Content-Length is no such sign. */
static bool framing_unsure(const struct http_head *h)
{
	if (bodiless_status(h->status))
		return h->chunked || h->content_length > 0;
	return h->status == 304 && h->chunked;
}

static bool response_hop_header(const struct http_head *h, const struct http_header *x, bool upgrade)
{
	static const char *const hop[] = { "connection", "keep-alive", "proxy-connection", "proxy-authenticate" };
	for (size_t i = 0; i < ARRAY_SIZE(hop); i++)
		if (memcaseeq(x->name, x->name_len, hop[i]))
			return true;
	if (!upgrade && memcaseeq(x->name, x->name_len, "upgrade"))
		return true;
	if (memcaseeq(x->name, x->name_len, "content-length") || memcaseeq(x->name, x->name_len, "transfer-encoding"))
		return bodiless_status(h->status); /* else the body is relayed with its own framing */
	if (upgrade && memcaseeq(x->name, x->name_len, "upgrade"))
		return false; /* a 101 names the protocol it switches to */
	return http_connection_names(h, x->name, x->name_len);
}

/* Appends the response head for the client to c->reply. It is written in
 * the worker's scratch buffer first, then, on credentialed routes, redacted
 * in one pass into the second: one evbuffer_add and one redactor pass per
 * head, not several per header. Header names are scanned too. No pattern
 * (an encoding of a secret) holds a CR or LF, so none spans two lines.
 * Returns 0, or -ENOBUFS/-ENOMEM with nothing appended. */
static int write_response_head(struct conn *c, const struct http_head *h, bool close)
{
	struct buf *out = &c->w->head_out;
	bool upgrade = h->status == 101;
	char *at;
	buf_reset(out);
	int r = buf_space(out, 9 + DEC_MAX + 1 + h->reason_len + 2, &at);
	if (r == 0) {
		char *p = dec_put(mempcpy(at, "HTTP/1.1 ", 9), h->status);
		*p++ = ' ';
		p = mempcpy(p, h->reason, h->reason_len);
		*p++ = '\r';
		*p++ = '\n';
		buf_advance(out, (size_t)(p - at));
	}
	for (unsigned i = 0; r == 0 && i < h->n_headers; i++) {
		const struct http_header *x = &h->headers[i];
		if (response_hop_header(h, x, upgrade) || reframed_header(c, x))
			continue;
		r = inject_put_header(out, x->name, x->name_len, x->value, x->value_len);
	}
	if (r == 0 && c->resp_body && c->resp_chunked)
		r = buf_puts(out, "Transfer-Encoding: chunked\r\n");
	if (r == 0 && upgrade)
		r = buf_puts(out, "Connection: upgrade\r\n");
	else if (r == 0 && close)
		r = buf_puts(out, "Connection: close\r\n");
	if (r == 0)
		r = buf_append(out, "\r\n", 2);
	if (c->redactor) {
		struct buf *red = &c->w->head_red;
		buf_reset(red);
		if (r == 0)
			r = redactor_feed(c->redactor, out->data, out->len, emit_buf, red);
		if (r == 0)
			r = redactor_finish(c->redactor, emit_buf, red);
		/* the head as the upstream sent it may hold a secret: wipe it, as
		 * the redactor wipes what it held back */
		if (out->data)
			explicit_bzero(out->data, out->len);
		out = red;
	}
	if (r == 0 && evbuffer_add(c->reply, out->data, out->len) < 0)
		r = -ENOMEM;
	/* A rare large head does not keep its buffers for the worker's life. */
	if (c->w->head_out.cap > HEAD_KEEP)
		buf_free(&c->w->head_out);
	if (c->w->head_red.cap > HEAD_KEEP)
		buf_free(&c->w->head_red);
	return r;
}

/* A response to HEAD whose head announces a body (RFC 9110 section 9.3.2
 * lets it: the length a GET would have had). An upstream that then sends
 * that body anyway, late, would have it read as the answer to the next
 * request on the connection: it is not pooled. */
static bool head_response_declares_body(const struct conn *c, const struct http_head *resp)
{
	return c->is_head && (resp->chunked || (resp->has_content_length && resp->content_length > 0));
}

static void request_done(struct conn *c, bool upstream_reusable)
{
	client_send(c);
	conn_audit(c, "request", "allow", NULL, NULL);
	if (c->up && head_response_declares_body(c, &c->up->resp))
		upstream_reusable = false;
	upstream_release(c->up, upstream_reusable);
	c->up = NULL;
	if (!c->keep_alive || !c->body_done || c->w->draining) {
		close_after_flush(c);
		return;
	}
	gen_unref(c->gen);
	c->gen = NULL;
	c->state = C_HEAD;
	http1_next(&c->parser);
	c->parser.on_body = NULL;
	reset_request(c);
	idle_timer(c, worker_current_gen(c->w)->policy->limits.idle_timeout_ms);
	/* Reading stays on while a request is served (conn_read_cb), and
	 * enabling it again would re-add its event. */
	if (!sockread_reading(&c->rd, c->bev))
		client_read(c, true);
	read_head(c);
}

static void start_relay(struct conn *c);

static void upstream_failed(struct conn *c, const char *what)
{
	char text[400];
	if (!c->response_started) {
		snprintf(text, sizeof(text), "%s %s", c->host, what);
		refuse(c, what[0] == 't' ? 504 : 502, what[0] == 't' ? "Gateway Timeout" : "Bad Gateway", "error",
		       "upstream", text, NULL);
		return;
	}
	snprintf(text, sizeof(text), "%s %s after the response started", c->host, what);
	conn_audit(c, "request", "error", "upstream", text);
	close_after_flush(c); /* what the client already has queued still goes out */
}

/* Moves the response body from the upstream to the client, as far as it
 * has arrived and the client's buffer allows. Returns true while the
 * response goes on; false once it ended or failed, when c may have been
 * freed (close_after_flush) and must not be touched. */
static bool relay_response_body(struct conn *c)
{
	struct upstream *u = c->up;
	struct evbuffer *in = bufferevent_get_input(u->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char text[200];
	int r = 0;
	bool reusable = false;

	while (evbuffer_get_length(in) > 0) {
		if (evbuffer_get_length(c->reply) >= WATER_LOW)
			client_send(c);
		if (evbuffer_get_length(out) >= WATER_HIGH) {
			/* conn_write_cb resumes reading once the client drained. */
			upstream_read(u, false);
			break;
		}
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		/* A compressed body is decoded as it is fed: a small step keeps
		 * the decoded output of one step small (gzip inflates ~1000:1). */
		if (c->resp_decoded && v.iov_len > 4096)
			v.iov_len = 4096;
		size_t consumed = 0;
		const char *why = NULL;
		uint64_t before = u->parser.body_bytes;
		r = http1_feed_body(&u->parser, v.iov_base, v.iov_len, &consumed, &why);
		c->bytes_out += u->parser.body_bytes - before;
		if (r < 0 && c->resp_why) {
			snprintf(text, sizeof(text), "sent a response body that cannot be scanned: %s", c->resp_why);
			break;
		}
		if (r < 0) {
			snprintf(text, sizeof(text), "sent a malformed response body (%s)", why ? why : "error");
			break;
		}
		if (c->resp_body)
			evbuffer_drain(in, consumed); /* response_sink wrote the payload */
		else
			evbuffer_remove_buffer(in, c->reply, consumed);
		if (r == 1) {
			reusable = u->resp.keep_alive && c->body_done && evbuffer_get_length(in) == 0;
			break;
		}
	}
	if (r == 1 && !end_body_filter(c))
		return false;
	client_send(c);
	if (r < 0)
		upstream_failed(c, text);
	else if (r == 1)
		request_done(c, reusable);
	return r == 0;
}

static void read_response_head(struct conn *c)
{
	struct upstream *u = c->up;
	struct evbuffer *in = bufferevent_get_input(u->bev);
	size_t max = limits(c)->max_header_bytes;

	for (;;) {
		long hl = 0;
		if (u->rd.direct && u->head.len > 0) {
			/* The first read of this head went into it directly
			 * (send_request): the bytes are all new. */
			u->rd.direct = NULL;
		} else {
			size_t avail = evbuffer_get_length(in);
			if (avail == 0)
				return;
			u->rd.direct = NULL; /* bytes wait in the input: the next ones go after them */
			u->head.max = max + 1;
			size_t room = max + 1 - u->head.len;
			size_t take = avail < room ? avail : room;
			/* Mostly a whole head starts what was read, with the body
			 * after it: then the head alone is taken, and the body stays
			 * where it is instead of being copied out and put back. */
			hl = u->head.len == 0 ? head_at_start(in, take) : 0;
			if (hl > 0)
				take = (size_t)hl;
			if (buf_append(&u->head, evbuffer_pullup(in, (ssize_t)take), take) < 0) {
				upstream_failed(c, "sent a response head that is too large");
				return;
			}
			evbuffer_drain(in, take);
		}
		const char *why = NULL;
		if (hl <= 0)
			hl = http1_head_length(u->head.data, u->head.len, &u->head_scan, &why);
		if (hl < 0) {
			char text[200];
			snprintf(text, sizeof(text), "sent a malformed response (%s)", why);
			upstream_failed(c, text);
			return;
		}
		if (hl == 0) {
			if (u->head.len > max) {
				upstream_failed(c, "sent a response head that is too large");
				return;
			}
			continue;
		}
		if ((size_t)hl < u->head.len) {
			/* The body's first bytes go back to the input; the copy left
			 * here is wiped, as the head is once done with (a body may
			 * hold a secret that redaction takes out further on). */
			if (evbuffer_prepend(in, u->head.data + hl, u->head.len - (size_t)hl) < 0) {
				upstream_failed(c, "could not be handled (out of memory)");
				return;
			}
			explicit_bzero(u->head.data + hl, u->head.len - (size_t)hl);
		}
		u->head.len = (size_t)hl;

		if (u->max_headers < limits(c)->max_headers) {
			struct http_header *h = reallocarray(u->hdrs, limits(c)->max_headers, sizeof(*h));
			if (!h) {
				upstream_failed(c, "could not be handled (out of memory)");
				return;
			}
			u->hdrs = h;
			u->max_headers = limits(c)->max_headers;
		}
		u->resp.headers = u->hdrs;
		u->resp.max_headers = u->max_headers;
		if (http1_parse_head(&u->parser, u->head.data, u->head.len, &u->resp, &why) < 0) {
			char text[200];
			snprintf(text, sizeof(text), "sent a malformed response (%s)", why);
			upstream_failed(c, text);
			return;
		}
		if (framing_unsure(&u->resp))
			u->unsure = true;
		if (!c->redactor && c->scans && start_redaction(c) < 0) {
			upstream_failed(c, "could not be handled (out of memory)");
			return;
		}
		int st = u->resp.status;
		if (st == 101) {
			if (!c->upgrade) {
				upstream_failed(c, "switched protocols without being asked to");
				return;
			}
			c->status = 101;
			if (write_response_head(c, &u->resp, false) < 0) {
				upstream_failed(c, HEAD_TOO_LARGE);
				return;
			}
			c->response_started = true;
			start_relay(c);
			return;
		}
		if (st >= 100 && st < 200) {
			/* Interim responses (100 Continue, 103 Early Hints) go to the
			 * client as they are, at once; the final response follows. */
			if (write_response_head(c, &u->resp, false) < 0) {
				upstream_failed(c, HEAD_TOO_LARGE);
				return;
			}
			client_send(c);
			http1_next(&u->parser);
			upstream_head_clear(u);
			u->head_scan = 0;
			continue;
		}
		if (st == 206 && c->scans && c->route->inject != INJECT_SIGV4) {
			/* Range was not forwarded (inject.c, asks_for_part): a
			 * part could carry a piece of a secret past redaction.
			 * SigV4 routes forward what the client signed, Range
			 * included: their secret key never travels, and S3
			 * clients fetch large objects in ranges. */
			upstream_failed(c, "sent 206 Partial Content, which is refused where responses are scanned for "
			                   "secrets: a part of a response can hold a piece of a secret that redaction "
			                   "cannot recognise");
			return;
		}
		if (st == 401 && conn_token_rejected(c))
			return;
		c->status = st;
		if (c->redactor && !http1_message_done(&u->parser) && !start_body_filter(c))
			return;
		bool needs_eof = llhttp_message_needs_eof(&u->parser.parser) && !http1_message_done(&u->parser);
		if (needs_eof || c->upgrade)
			c->keep_alive = false;
		if (write_response_head(c, &u->resp, !c->keep_alive || !c->body_done) < 0) {
			upstream_failed(c, HEAD_TOO_LARGE);
			return;
		}
		c->response_started = true;
		if (!c->body_done)
			c->keep_alive = false;
		u->state = U_BODY;
		if (http1_message_done(&u->parser)) {
			bool reusable = u->resp.keep_alive && c->body_done && evbuffer_get_length(in) == 0;
			request_done(c, reusable);
			return;
		}
		(void)relay_response_body(c);
		return;
	}
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->state == C_RELAY || c->state == C_RELAY_END) {
		struct evbuffer *in = bufferevent_get_input(bev);
		if (c->state == C_RELAY_END)
			arm_timer(c, RELAY_END_MS); /* it still answers */
		c->bytes_out += evbuffer_get_length(in);
		evbuffer_add_buffer(bufferevent_get_output(c->bev), in);
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) >= WATER_HIGH)
			upstream_read(c->up, false);
		return;
	}
	if (c->up->state == U_HEAD)
		read_response_head(c);
	else
		(void)relay_response_body(c);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	/* Upstream drained below the low mark: read more from the client. */
	if (c->state == C_BODY) {
		client_read(c, true);
		pump_request_body(c);
	} else if (c->state == C_RELAY) {
		client_read(c, true);
	} else if (c->state == C_RELAY_END) {
		relay_end_flushed(c);
	}
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct upstream *u = c->up;

	if (c->state == C_RELAY || c->state == C_RELAY_END) {
		/* What the upstream sent before its end goes out to the client
		 * first (close_after_flush). */
		relay_audit(c);
		close_after_flush(c);
		return;
	}
	if ((what & BEV_EVENT_EOF) && u->state == U_BODY) {
		/* A body delimited by the end of the connection is complete only
		 * if llhttp agrees. */
		if (!relay_response_body(c))
			return;
		if (http1_finish_eof(&u->parser) == 1) {
			if (!end_body_filter(c))
				return;
			c->keep_alive = false;
			request_done(c, false);
			return;
		}
		upstream_failed(c, "closed the connection in the middle of the response body");
		return;
	}
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && u->reused && !c->response_started && !c->retried &&
	    c->body_done && c->bytes_in == 0 && u->head.len == 0) {
		/* A pooled connection the upstream closed while it was idle (the
		 * close raced our request). The request had no body, so it can be
		 * sent again, once, on a new connection. */
		c->retried = true;
		log_debug("retrying %s %s on a new connection", c->method, c->host);
		c->up = NULL;
		upstream_release(u, false);
		forward(c, route_secret(c), true);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		upstream_failed(c, "timed out");
		return;
	}
	upstream_failed(c, (what & BEV_EVENT_EOF) ? "closed the connection" : "reset the connection");
}

/* ---- relay after 101 ---- */

static void start_relay(struct conn *c)
{
	struct upstream *u = c->up;
	client_send(c); /* the 101 */
	c->state = C_RELAY;
	c->keep_alive = false;
	stop_timer(c);
	struct timeval tv = ms_timeval(limits(c)->upstream_timeout_ms);
	upstream_timeouts(u, &tv, NULL);
	/* Anything already read past the 101 head belongs to the new protocol. */
	struct evbuffer *in = bufferevent_get_input(u->bev);
	c->bytes_out += evbuffer_get_length(in);
	evbuffer_add_buffer(bufferevent_get_output(c->bev), in);
	struct evbuffer *cin = bufferevent_get_input(c->bev);
	c->bytes_in += evbuffer_get_length(cin);
	evbuffer_add_buffer(bufferevent_get_output(u->bev), cin);
	bufferevent_enable(c->bev, EV_WRITE);
	client_read(c, true);
	bufferevent_enable(u->bev, EV_WRITE);
	upstream_read(u, true);
}

/* The relay's one record, written when it ends, whichever side ends it. */
static void relay_audit(struct conn *c)
{
	if (!c->audited)
		conn_audit(c, "request", "allow", NULL, NULL);
}

/* After the client's end: once the upstream has taken every byte the
 * client sent, the end is passed on. The connection stays for what the
 * upstream still sends, until its end (up_event_cb) or the timer. */
static void relay_end_flushed(struct conn *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->up->bev)) > 0)
		return; /* up_write_cb comes back when more is written */
	upstream_shutdown_write(c->up);
}

/* The client ended its sending in a relay (a FIN, or close_notify in a
 * tunnel). Its last bytes may still wait in the upstream's output buffer:
 * in a tunnel, tlsread reports an end that came with bytes on the next
 * pass of the loop, before the upstream's write event has run; freeing
 * the connection then lost them. They go out first, then the end, as a
 * TCP half-close (RFC 9293 section 3.6) passes through a relay; a
 * half-closed client may still read, so the upstream's bytes go on to it.
 * The relay's record is written when the connection ends. */
static void relay_client_ended(struct conn *c)
{
	c->state = C_RELAY_END;
	client_read(c, false);
	arm_timer(c, RELAY_END_MS);
	relay_end_flushed(c);
}

/* ---- client callbacks ---- */

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	switch (c->state) {
	case C_HEAD:
		read_head(c);
		break;
	case C_BODY:
		pump_request_body(c);
		break;
	case C_SIGV4_BODY:
		sigv4_hash_body(c);
		break;
	case C_RELAY: {
		struct evbuffer *in = bufferevent_get_input(bev);
		c->bytes_in += evbuffer_get_length(in);
		evbuffer_add_buffer(bufferevent_get_output(c->up->bev), in);
		if (evbuffer_get_length(bufferevent_get_output(c->up->bev)) >= WATER_HIGH)
			client_read(c, false);
		break;
	}
	default:
		/* Data early (a pipelined request, or a body sent before the
		 * upstream is ready): it waits in the buffer. Reading stays on
		 * while a request is served otherwise, so that serving one does
		 * not cost two epoll_ctl(2) calls (off, then on again). */
		client_read(c, false);
		break;
	}
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->state == C_CLOSING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c);
		return;
	}
	if (c->state == C_CONNECT_SENT) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			start_tls(c);
		return;
	}
	/* Client drained: read more from upstream. */
	if (c->up && c->up->bev && (c->state == C_RESPONSE || c->state == C_RELAY || c->state == C_RELAY_END)) {
		upstream_read(c->up, true);
		if (c->state == C_RESPONSE && c->up->state == U_BODY)
			(void)relay_response_body(c);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	if (c->state == C_CLOSING) {
		conn_free(c);
		return;
	}
	if (c->state == C_RELAY && what == (BEV_EVENT_READING | BEV_EVENT_EOF)) {
		relay_client_ended(c);
		return;
	}
	if (c->state == C_RELAY || c->state == C_RELAY_END) {
		/* An error, or a write that failed: nothing more can reach the
		 * client, and a reset client abandons what it sent. */
		relay_audit(c);
		conn_free(c);
		return;
	}
	if ((what & BEV_EVENT_EOF) && !c->in_tunnel &&
	    (c->state == C_DECIDED || c->state == C_CONNECTING || c->state == C_RESPONSE)) {
		/* The client closed its side after sending the whole request
		 * (RFC 9112 section 9.6 allows it): answer, then close. Reading
		 * stays on while a request is served (conn_read_cb), so this shows
		 * now. In a tunnel the end of TLS ends the connection. */
		client_read(c, false);
		c->keep_alive = false;
		return;
	}
	conn_abandon(c, "client", "client closed the connection mid-request");
}

/* Ends c where it is. A request in the middle gets its last record: the
 * result of its allow record (written first if it was still waiting), or
 * the one record of a request refused before it was allowed. */
static void conn_abandon(struct conn *c, const char *reason, const char *detail)
{
	if (c->state == C_DECIDED) {
		/* Gone before its allow record was written: write it now, so that
		 * the result below has a decision to name. */
		uint64_t first;
		LIST_REMOVE(c, wait_link);
		c->state = C_CONNECTING;
		if (worker_audit_write(c->w, &first) == 0) {
			c->decided = true;
			c->decision_seq = first + (uint64_t)c->audit_index;
		}
	}
	if (c->state != C_HEAD || c->head.len > 0) {
		if (c->method[0] && !c->audited)
			conn_audit(c, "request", "error", reason, detail);
	}
	conn_free(c);
}

void conn_close_worker(struct worker *w)
{
	struct conn *c;
	while ((c = TAILQ_FIRST(&w->conns)))
		conn_abandon(c, "stop", "keyward stopped before the request was done");
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->timer_idle) {
		/* The wait for a head (idle_timer): it may have begun after the
		 * timer was armed, or be over, the timer parked by a request
		 * that is being served now. */
		c->timer_idle = false;
		if (c->state != C_HEAD)
			return; /* no timer runs while a request is served */
		uint64_t waited = elapsed_us(&c->start), limit = (uint64_t)c->idle_ms * 1000;
		if (c->head.len == 0 && waited < limit) {
			struct timeval tv = { (time_t)((limit - waited) / 1000000),
				              (suseconds_t)((limit - waited) % 1000000) };
			evtimer_add(c->timer, &tv);
			c->timer_idle = true;
			return;
		}
	}
	switch (c->state) {
	case C_HEAD:
		if (c->head.len > 0) {
			refuse(c, 408, "Request Timeout", "deny", "timeout", "the request head did not arrive in time",
			       NULL);
			return;
		}
		conn_free(c); /* idle keep-alive connection */
		return;
	case C_SIGV4_BODY:
		refuse(c, 408, "Request Timeout", "deny", "timeout", "the request body stalled", NULL);
		return;
	case C_BODY:
		if (!c->response_started) {
			refuse(c, 408, "Request Timeout", "deny", "timeout", "the request body stalled", NULL);
			return;
		}
		conn_audit(c, "request", "error", "timeout", "the request body stalled");
		conn_free(c);
		return;
	case C_HANDSHAKE:
		conn_audit(c, "connect", "error", "timeout", "TLS handshake with the client timed out");
		conn_free(c);
		return;
	case C_RELAY_END:
		/* The upstream has not taken the client's last bytes, or not
		 * ended, in time. */
		relay_audit(c);
		conn_free(c);
		return;
	default:
		conn_free(c);
		return;
	}
}

void conn_accept(struct worker *w, const struct listener_info *li, int fd, const struct sockaddr *sa, int salen)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->w = w;
	c->li = li;
	if (li->is_unix || !sa || salen <= 0)
		snprintf(c->client, sizeof(c->client), "unix");
	else
		addr_format(sa, c->client, sizeof(c->client));
	buf_init(&c->head, 65536);
	buf_init(&c->path, 65536);
	buf_init(&c->out, 65536);
	c->out.wipe = true; /* the injected head: the credential */
	http1_init(&c->parser, HTTP1_REQUEST);
	c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(w->base, timer_cb, c);
	c->reply = evbuffer_new();
	TAILQ_INSERT_TAIL(&w->conns, c, link);
	w->n_conns++;
	atomic_fetch_add(&w->px->active, 1);
	if (!c->bev || !c->timer || !c->reply || sockread_start(&c->rd, w->base, c->bev, false) < 0) {
		if (!c->bev)
			close(fd);
		conn_free(c);
		return;
	}
	if (!li->is_unix) {
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	c->state = C_HEAD;
	reset_request(c);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, WATER_LOW, 0);
	bufferevent_enable(c->bev, EV_WRITE);
	client_read(c, true);
	idle_timer(c, worker_current_gen(w)->policy->limits.idle_timeout_ms);
	read_head(c); /* nothing to read yet: the first read may go to the head directly */
}

void conn_drain_worker(struct worker *w)
{
	w->draining = true;
	upstream_pool_clear(w);
	struct conn *c, *next;
	for (c = TAILQ_FIRST(&w->conns); c; c = next) {
		next = TAILQ_NEXT(c, link);
		if (c->state == C_HEAD && c->head.len == 0)
			conn_free(c);
		else
			c->keep_alive = false;
	}
	if (w->n_conns == 0)
		worker_done(w);
}
