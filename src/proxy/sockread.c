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
#include <time.h>

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t timeval_us(const struct timeval *tv)
{
	return (uint64_t)tv->tv_sec * 1000000 + (uint64_t)tv->tv_usec;
}

/* Reading stops, then the event callback hears why, as libevent's socket
 * bufferevent does it. */
static void sockread_fail(struct sockread *r, short err)
{
	struct bufferevent *bev = r->bev;
	bufferevent_event_cb eventcb = NULL;
	void *cbarg = NULL;
	bufferevent_getcb(bev, NULL, NULL, &eventcb, &cbarg);
	sockread_disable(r);
	if (eventcb)
		eventcb(bev, (short)(BEV_EVENT_READING | err), cbarg);
}

/* A wait for bytes begins now: its timer is made to fire no later than
 * its end (a pending one that fires earlier is kept). */
static void wait_begins(struct sockread *r)
{
	if (!evutil_timerisset(&r->timeout))
		return; /* a pending timer finds no timeout and stops */
	r->since = now_us();
	uint64_t end = r->since + timeval_us(&r->timeout);
	if (r->tev_pending && r->due <= end)
		return;
	(void)event_add(r->tev, &r->timeout);
	r->tev_pending = true;
	r->due = end;
}

/* Any wake-up restarts the wait, as libevent's persistent read event
 * restarts its timeout. */
static void woke(struct sockread *r)
{
	if (r->tev && evutil_timerisset(&r->timeout))
		r->since = now_us();
}

static void sockread_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sockread *r = arg;
	r->tev_pending = false;
	if (!r->on || !evutil_timerisset(&r->timeout))
		return; /* enabling reading or setting a timeout arms it again */
	uint64_t end = r->since + timeval_us(&r->timeout), now = now_us();
	if (now < end) {
		struct timeval tv = { (time_t)((end - now) / 1000000), (suseconds_t)((end - now) % 1000000) };
		(void)event_add(r->tev, &tv);
		r->tev_pending = true;
		r->due = end;
		return;
	}
	sockread_fail(r, BEV_EVENT_TIMEOUT);
}

static void sockread_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sockread *r = arg;
	struct bufferevent *bev = r->bev;
	bufferevent_data_cb readcb = NULL;
	void *cbarg = NULL;
	bufferevent_getcb(bev, &readcb, NULL, NULL, &cbarg);

	short err;
	if (what == EV_TIMEOUT) { /* as libevent: bytes that came with it are read */
		err = BEV_EVENT_TIMEOUT;
	} else {
		woke(r);
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
	sockread_fail(r, err);
}

void sockread_woke(struct sockread *r)
{
	woke(r);
}

struct event *sockread_timer_new(struct event_base *base, struct sockread *r)
{
	return evtimer_new(base, sockread_timer_cb, r);
}

int sockread_start(struct sockread *r, struct event_base *base, struct bufferevent *bev, bool timed)
{
	struct event *ev = event_new(base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, sockread_cb, r);
	struct event *tev = timed ? sockread_timer_new(base, r) : NULL;
	if (!ev || (timed && !tev)) {
		if (ev)
			event_free(ev);
		return -ENOMEM;
	}
	*r = (struct sockread){ .ev = ev, .bev = bev, .tev = tev };
	return 0;
}

void sockread_stop(struct sockread *r)
{
	if (!r->ev)
		return;
	event_free(r->ev);
	if (r->tev)
		event_free(r->tev);
	*r = (struct sockread){ 0 };
}

void sockread_enable(struct sockread *r)
{
	r->on = true;
	if (r->tev) {
		(void)event_add(r->ev, NULL);
		wait_begins(r);
	} else {
		(void)event_add(r->ev, evutil_timerisset(&r->timeout) ? &r->timeout : NULL);
	}
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
	if (r->tev)
		wait_begins(r);
	else if (evutil_timerisset(&r->timeout))
		(void)event_add(r->ev, &r->timeout);
	else
		(void)event_remove_timer(r->ev); /* event_add(ev, NULL) would keep the old one */
}
