/* Reading a plain socket (TCP or unix, no TLS) into its bufferevent's
 * input buffer, in place of libevent's own reading.
 *
 * libevent 2.1's socket bufferevent reads with evbuffer_read, which asks
 * the kernel how much is waiting (ioctl FIONREAD) before every readv(2),
 * and reads 4 KiB at most per call: on a kept-alive plain-HTTP request,
 * two of its six system calls were those ioctls. A sockread owns the read
 * side of the socket instead: one recv(2) of up to SOCKREAD_MAX bytes per
 * wake-up, the bytes appended to the bufferevent's input buffer, and the
 * bufferevent's own callbacks run as libevent would run them (the read
 * callback after data; the event callback with BEV_EVENT_READING and
 * EOF, ERROR or TIMEOUT, reading turned off first). Writing, the output
 * buffer and its callbacks stay the bufferevent's. The bufferevent's own
 * reading must stay disabled (EV_READ never enabled on it).
 *
 * A callback may free the bufferevent and the sockread (their owner's
 * free): nothing is touched after a callback returns. */
#pragma once

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdbool.h>
#include <sys/time.h>

#include "common/buf.h"
#include "common/util.h"

#define SOCKREAD_MAX 16384

struct sockread {
	struct event *ev;        /* EV_READ|EV_PERSIST on the socket; NULL: not started */
	struct bufferevent *bev; /* whose input it fills, whose callbacks it runs (not owned) */
	struct timeval timeout;  /* of a wait for bytes; zero: none */
	bool on;                 /* reading enabled */
	/* A timed sockread (sockread_start, tlsread_start) keeps its timeout on a timer of
	 * its own, left pending while bytes come and while the timeout
	 * changes: the wait began at since and ends timeout later; the timer
	 * fires at due, no later, and is armed again for what is left. On
	 * the read event, libevent re-added the timeout at every wake-up,
	 * and every change of it was another add: three timer operations
	 * per request on a pooled upstream connection. Times are
	 * CLOCK_MONOTONIC_COARSE microseconds. NULL tev: the read event's
	 * own timeout. */
	struct event *tev;
	bool tev_pending;
	uint64_t since, due;
	/* Set by the owner while it waits for the start of a message into a
	 * buffer of its own (conn.c: a request head): bytes read while the
	 * input buffer is empty are appended there instead, if they fit under
	 * its ceiling, saving their trip through the input buffer. The owner's
	 * read callback finds them there, and clears this. NULL: none. */
	struct buf *direct;
	/* TLS mode (tlsread.h): what the reader holds beyond the socket, which
	 * epoll cannot report. again: records read ahead past its budget, or
	 * the end below, wait; enabling reading runs it at once. end: the
	 * BEV_EVENT_* found after bytes handed over first; 0: none. */
	bool again;
	short end;
};

/* Starts a sockread for bev's socket, reading off; timed: one whose
 * timeout is set for each message (an upstream's), kept on its own timer.
 * Returns 0, or -ENOMEM (r untouched). */
int sockread_start(struct sockread *r, struct event_base *base, struct bufferevent *bev, bool timed) WUR;
/* Stops it and frees its event; a sockread not started is left as is. To
 * be called before the bufferevent closes the socket. */
void sockread_stop(struct sockread *r);
/* Turns reading on (re-arming the timeout; in TLS mode, running the
 * reader at once if it holds bytes: r->again) or off. */
void sockread_enable(struct sockread *r);
void sockread_disable(struct sockread *r);
/* Turns the reading of a socket on or off: r's when started, else bev's
 * own (a TLS bufferevent). Turning on a sockread that is on already does
 * nothing (enabling it again would re-add its event). */
void sockread_switch(struct sockread *r, struct bufferevent *bev, bool on);
/* Whether that reading is on. */
bool sockread_reading(const struct sockread *r, struct bufferevent *bev);
/* Sets the timeout (NULL or zero: none); re-arms it if reading is on. */
void sockread_set_timeout(struct sockread *r, const struct timeval *tv);

/* For the TLS mode (tlsread.c), which shares the timed wait. The timer of
 * a timed sockread r, on base; NULL without memory. The caller keeps it in
 * r->tev (sockread_stop frees it). */
struct event *sockread_timer_new(struct event_base *base, struct sockread *r);
/* A wake-up of r's read event: a timed wait restarts, as libevent's
 * persistent read event restarts its timeout at each wake-up. */
void sockread_woke(struct sockread *r);
