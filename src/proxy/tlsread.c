/* Reading open TLS connections with read-ahead, in place of libevent's
 * TLS bufferevent (tlsread.h).
 *
 * Trust: the bytes are the peer's, decrypted and authenticated by
 * OpenSSL, and not looked at here; they go to the same input buffer, in
 * the same order, as libevent's reading put them, and the parsers behind
 * it (conn.c) see the same bytes. What must hold here: nothing OpenSSL has
 * buffered is left waiting for a wake-up that will not come, and the
 * peer's end is classified as libevent classified it (conn.c tells EOF
 * from ERROR: a body delimited by the end of the connection). */
#include "proxy/tlsread.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

/* What an SSL_read that failed with error e (having returned ret) means to
 * the bufferevent's owner: libevent 2.1.12's conn_closed, step by step.
 * close_notify is EOF; SSL_ERROR_ZERO_RETURN without it, and
 * SSL_ERROR_SYSCALL with nothing on the error queue (the socket's end or
 * error, ECONNRESET included) are EOF too where the bufferevent allows a
 * dirty shutdown (both of keyward's sides do); the rest is ERROR. A TCP
 * end without close_notify is SSL_ERROR_SSL to OpenSSL 3, an ERROR, unless
 * SSL_OP_IGNORE_UNEXPECTED_EOF (the upstream side, tls.c) makes it
 * close_notify. tests/unit/test_tlsread.c holds each end against
 * libevent's own reading. */
static short tls_end(struct bufferevent *bev, SSL *ssl, int e, int ret)
{
	short what = BEV_EVENT_ERROR;
	bool dirty = false;
	if (e == SSL_ERROR_ZERO_RETURN) {
		if (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)
			what = BEV_EVENT_EOF;
		else
			dirty = true;
	} else if (e == SSL_ERROR_SYSCALL) {
		dirty = (ret == 0 || ret == -1) && ERR_peek_error() == 0;
	}
	ERR_clear_error();
	if (dirty && bufferevent_openssl_get_allow_dirty_shutdown(bev) == 1)
		what = BEV_EVENT_EOF;
	return what;
}

/* Points r's event at the socket becoming readable (EV_READ|EV_PERSIST) or,
 * while an SSL_read waits to write, writable (EV_WRITE, once), keeping
 * whether reading is on and its timeout. */
static void tlsread_wait(struct sockread *r, short events, event_callback_fn cb)
{
	struct event_base *base = event_get_base(r->ev);
	evutil_socket_t fd = event_get_fd(r->ev);
	(void)event_del(r->ev);
	(void)event_assign(r->ev, base, fd, events, cb, r);
	if (r->on) /* a timed one's timeout is on its own timer, which goes on */
		(void)event_add(r->ev, !r->tev && evutil_timerisset(&r->timeout) ? &r->timeout : NULL);
}

/* Appends the n bytes at data where sockread_cb puts them: the owner's
 * direct buffer while the input is empty and they fit, else the input. */
static int tlsread_put(struct sockread *r, struct evbuffer *in, const char *data, size_t n)
{
	if (r->direct && evbuffer_get_length(in) == 0 && buf_append(r->direct, data, n) == 0)
		return 0;
	return evbuffer_add(in, data, n) == 0 ? 0 : -ENOMEM;
}

static void tlsread_cb(evutil_socket_t fd, short what, void *arg);

/* Empties the thread's error queue before an SSL_read whose failure
 * SSL_get_error classifies: it reads the queue (SSL_get_error(3)), and an
 * error left there by other work would make a want-read a fatal error.
 * SSL_get_error asks ERR_peek_error, so a queue that ERR_peek_error finds
 * empty is as good as cleared. ERR_clear_error wipes each of the queue's
 * 16 slots whatever they hold: about 840 instructions with OpenSSL 3.0
 * (callgrind), against some 6,500 for the SSL_read of a small request. The
 * peek costs a tenth of that, and the queue is almost always empty: each
 * failure here and in conn.c's tls_send_now is cleared after it. */
static void tlsread_err_clear(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/* Decrypts what OpenSSL holds and what the socket brings with it, up to
 * the budget. Sets *ret_got to the bytes handed over; returns 0 (OpenSSL
 * needs the socket, is waiting to write, or holds more than the budget:
 * r->again), or the BEV_EVENT_* that ends reading. */
static short tlsread_records(struct sockread *r, SSL *ssl, size_t *ret_got)
{
	struct bufferevent *bev = r->bev;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t got = 0;
	short end = 0;
	/* On the stack and wiped after use: a response may carry a secret
	 * that redaction takes out further on. */
	char data[SOCKREAD_MAX];
	tlsread_err_clear();
	for (;;) {
		int n = SSL_read(ssl, data, (int)sizeof(data));
		if (n > 0) {
			int put = tlsread_put(r, in, data, (size_t)n);
			explicit_bzero(data, (size_t)n);
			if (put < 0) {
				errno = ENOMEM; /* the bytes are lost: the connection cannot go on */
				end = BEV_EVENT_ERROR;
				break;
			}
			got += (size_t)n;
			if (!SSL_has_pending(ssl))
				break; /* all taken: more comes through the socket, and epoll says so */
			if (got >= TLSREAD_BUDGET) {
				r->again = true;
				break;
			}
			continue;
		}
		int e = SSL_get_error(ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_WANT_WRITE) {
			/* Not seen with OpenSSL 3.0: renegotiation is refused
			 * (SSL_OP_NO_RENEGOTIATION) with an alert SSL_read does not
			 * wait for, and a KeyUpdate's answer goes with the next
			 * SSL_write. Should a read have to write into a full
			 * socket, reading again before it takes bytes would spin:
			 * wait for it, then read on (libevent's next SSL_write
			 * finishes OpenSSL's pending record meanwhile). */
			tlsread_wait(r, EV_WRITE, tlsread_cb);
			break;
		}
		end = tls_end(bev, ssl, e, n);
		break;
	}
	*ret_got = got;
	return end;
}

static void tlsread_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sockread *r = arg;
	struct bufferevent *bev = r->bev;
	bufferevent_data_cb readcb = NULL;
	bufferevent_event_cb eventcb = NULL;
	void *cbarg = NULL;
	bufferevent_getcb(bev, &readcb, NULL, &eventcb, &cbarg);

	short end = r->end;
	r->end = 0;
	r->again = false;
	if (!end && what == EV_TIMEOUT) {
		end = BEV_EVENT_TIMEOUT; /* as libevent: nothing is read then */
	} else if (!end) {
		sockread_woke(r);
		if (event_get_events(r->ev) & EV_WRITE)
			tlsread_wait(r, EV_READ | EV_PERSIST, tlsread_cb); /* the socket took bytes */
		size_t got = 0;
		end = tlsread_records(r, bufferevent_openssl_get_ssl(bev), &got);
		if (got > 0) {
			/* The bytes first; an end found after them, or records
			 * past the budget, on the next pass of the loop. */
			if (end) {
				r->end = end;
				r->again = true;
			}
			if (r->again && r->on)
				event_active(r->ev, EV_READ, 1);
			if (readcb)
				readcb(bev, cbarg);
			return;
		}
		if (!end)
			return;
	}
	/* As libevent's TLS bufferevent does: reading stops, then the event
	 * callback hears why. */
	sockread_disable(r);
	if (eventcb)
		eventcb(bev, (short)(BEV_EVENT_READING | end), cbarg);
}

int tlsread_start(struct sockread *r, struct event_base *base, struct bufferevent *bev, bool timed)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	if (!ssl || !SSL_is_init_finished(ssl))
		return -EINVAL;
	struct event *ev = event_new(base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, tlsread_cb, r);
	struct event *tev = timed ? sockread_timer_new(base, r) : NULL;
	if (!ev || (timed && !tev)) {
		if (ev)
			event_free(ev);
		return -ENOMEM;
	}
	*r = (struct sockread){ .ev = ev, .bev = bev, .tev = tev };
	/* Set now, not on the context: the handshake stays libevent's, and
	 * its reading stops where OpenSSL's does. */
	SSL_set_read_ahead(ssl, 1);
	/* Without read-ahead during the handshake OpenSSL holds nothing past
	 * it; should it (a context with read-ahead on), it is read now. */
	r->again = SSL_has_pending(ssl) == 1;
	/* With its reading not enabled (an upstream before its request),
	 * libevent's read event may still wait from the handshake: when it
	 * fires, libevent reads nothing (its reading is off) and removes it. */
	if (bufferevent_get_enabled(bev) & EV_READ) {
		/* Ours first, then libevent's off: the socket stays in epoll's
		 * read set throughout, with no epoll_ctl(2) for the swap. */
		sockread_enable(r);
		bufferevent_disable(bev, EV_READ);
	}
	return 0;
}
