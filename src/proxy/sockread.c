/* Reading plain sockets without evbuffer_read's ioctl (sockread.h).
 *
 * Trust: the bytes are the peer's and are not looked at here; they go to
 * the same input buffer, in the same order, as libevent's reading put
 * them, and the parsers behind it (conn.c) see exactly what they saw. */
#include "proxy/sockread.h"

#include <errno.h>
#include <event2/buffer.h>
#include <string.h>
#include <sys/socket.h>

static void sockread_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sockread *r = arg;
	struct bufferevent *bev = r->bev;
	bufferevent_data_cb readcb = NULL;
	bufferevent_event_cb eventcb = NULL;
	void *cbarg = NULL;
	bufferevent_getcb(bev, &readcb, NULL, &eventcb, &cbarg);

	short err;
	if (what == EV_TIMEOUT) { /* as libevent: bytes that came with it are read */
		err = BEV_EVENT_TIMEOUT;
	} else {
		/* On the stack and wiped after use: a response may carry a secret
		 * that redaction takes out further on. */
		char data[SOCKREAD_MAX];
		ssize_t n = recv(fd, data, sizeof(data), MSG_DONTWAIT);
		if (n > 0) {
			struct evbuffer *in = bufferevent_get_input(bev);
			if (r->direct && evbuffer_get_length(in) == 0 && buf_append(r->direct, data, (size_t)n) == 0) {
				explicit_bzero(data, (size_t)n);
				if (readcb)
					readcb(bev, cbarg);
				return;
			}
			/* A socket bufferevent freezes the end of its input buffer
			 * outside its own reads, as here. */
			evbuffer_unfreeze(in, 0);
			int added = evbuffer_add(in, data, (size_t)n);
			evbuffer_freeze(in, 0);
			explicit_bzero(data, (size_t)n);
			if (added == 0) {
				if (readcb)
					readcb(bev, cbarg);
				return;
			}
			errno = ENOMEM; /* the bytes are lost: the connection cannot go on */
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			return;
		}
		err = n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
	}
	/* As libevent's socket bufferevent does: reading stops, then the event
	 * callback hears why. */
	sockread_disable(r);
	if (eventcb)
		eventcb(bev, (short)(BEV_EVENT_READING | err), cbarg);
}

int sockread_start(struct sockread *r, struct event_base *base, struct bufferevent *bev)
{
	struct event *ev = event_new(base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, sockread_cb, r);
	if (!ev)
		return -ENOMEM;
	*r = (struct sockread){ .ev = ev, .bev = bev };
	return 0;
}

void sockread_stop(struct sockread *r)
{
	if (!r->ev)
		return;
	event_free(r->ev);
	*r = (struct sockread){ 0 };
}

void sockread_enable(struct sockread *r)
{
	r->on = true;
	(void)event_add(r->ev, evutil_timerisset(&r->timeout) ? &r->timeout : NULL);
	if (r->again)
		event_active(r->ev, EV_READ, 1);
}

void sockread_disable(struct sockread *r)
{
	if (!r->on)
		return;
	r->on = false;
	(void)event_del(r->ev);
}

void sockread_switch(struct sockread *r, struct bufferevent *bev, bool on)
{
	if (!r->ev) {
		if (on)
			bufferevent_enable(bev, EV_READ);
		else
			bufferevent_disable(bev, EV_READ);
	} else if (!on) {
		sockread_disable(r);
	} else if (!r->on) {
		sockread_enable(r);
	}
}

bool sockread_reading(const struct sockread *r, struct bufferevent *bev)
{
	return r->ev ? r->on : (bufferevent_get_enabled(bev) & EV_READ) != 0;
}

void sockread_set_timeout(struct sockread *r, const struct timeval *tv)
{
	if (tv)
		r->timeout = *tv;
	else
		evutil_timerclear(&r->timeout);
	if (!r->on)
		return;
	if (evutil_timerisset(&r->timeout))
		(void)event_add(r->ev, &r->timeout);
	else
		(void)event_remove_timer(r->ev); /* event_add(ev, NULL) would keep the old one */
}
