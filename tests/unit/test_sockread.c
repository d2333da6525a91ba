/* Reading a plain socket for a bufferevent (src/proxy/sockread.h), on a
 * socketpair and a real event base: the bufferevent's callbacks hear what
 * libevent's own reading would tell them. What must not happen comes
 * first: bytes lost or reordered, an end or a timeout unreported, reading
 * left on after it; then the direct path into a buffer of the owner's,
 * which must respect its ceiling and never jump ahead of buffered bytes. */
#include <errno.h>
#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/sockread.h"

struct fixture {
	struct event_base *base;
	int fds[2]; /* [0] read by the sockread, [1] the peer */
	struct bufferevent *bev;
	struct sockread rd;
	struct buf direct;
	int reads;
	short events;
	char got[256];
	size_t got_len;
	bool free_in_readcb;
};

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct fixture *f = arg;
	f->reads++;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	if (n > sizeof(f->got) - f->got_len)
		n = sizeof(f->got) - f->got_len;
	evbuffer_remove(in, f->got + f->got_len, n);
	f->got_len += n;
	if (f->free_in_readcb) {
		/* the owner frees everything from its callback, as conn_free does */
		sockread_stop(&f->rd);
		bufferevent_free(f->bev);
		f->bev = NULL;
	}
	event_base_loopbreak(f->base);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct fixture *f = arg;
	f->events = what;
	event_base_loopbreak(f->base);
}

static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof(f));
	f.base = event_base_new();
	assert_non_null(f.base);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, f.fds), 0);
	f.bev = bufferevent_socket_new(f.base, f.fds[0], BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(f.bev);
	bufferevent_setcb(f.bev, read_cb, NULL, event_cb, &f);
	assert_int_equal(sockread_start(&f.rd, f.base, f.bev, true), 0);
	buf_init(&f.direct, 8);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	sockread_stop(&f->rd);
	if (f->bev)
		bufferevent_free(f->bev);
	close(f->fds[1]);
	buf_free(&f->direct);
	event_base_free(f->base);
	return 0;
}

static void loop_once(struct fixture *f)
{
	struct timeval tv = { 2, 0 }; /* a bound, should a test be wrong */
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

static void test_end_is_reported_and_reading_stops(void **state)
{
	struct fixture *f = *state;
	sockread_enable(&f->rd);
	shutdown(f->fds[1], SHUT_WR);
	loop_once(f);
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_EOF);
	assert_false(f->rd.on);
	assert_int_equal(f->reads, 0);
}

static void test_timeout_is_reported_and_reading_stops(void **state)
{
	struct fixture *f = *state;
	struct timeval tv = { 0, 20000 };
	sockread_set_timeout(&f->rd, &tv);
	sockread_enable(&f->rd);
	loop_once(f);
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	assert_false(f->rd.on);
}

static void test_nothing_read_while_off(void **state)
{
	struct fixture *f = *state;
	sockread_enable(&f->rd);
	sockread_disable(&f->rd);
	assert_int_equal(write(f->fds[1], "abc", 3), 3);
	struct timeval tv = { 0, 50000 };
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
	assert_int_equal(f->reads, 0);
	assert_int_equal(f->events, 0);
}

static void test_bytes_arrive_in_order(void **state)
{
	struct fixture *f = *state;
	sockread_enable(&f->rd);
	assert_int_equal(write(f->fds[1], "hello ", 6), 6);
	loop_once(f);
	assert_int_equal(write(f->fds[1], "world", 5), 5);
	loop_once(f);
	assert_int_equal(f->got_len, 11);
	assert_memory_equal(f->got, "hello world", 11);
	assert_true(f->rd.on);
}

static void test_owner_may_free_all_in_its_callback(void **state)
{
	struct fixture *f = *state;
	f->free_in_readcb = true;
	sockread_enable(&f->rd);
	assert_int_equal(write(f->fds[1], "x", 1), 1);
	loop_once(f);
	assert_int_equal(f->reads, 1);
	assert_null(f->rd.ev);
	assert_null(f->bev);
}

static void test_direct_respects_ceiling_and_order(void **state)
{
	struct fixture *f = *state;
	/* Too large for the buffer's ceiling (8): to the input buffer. */
	f->rd.direct = &f->direct;
	bufferevent_setcb(f->bev, NULL, NULL, event_cb, f);
	sockread_enable(&f->rd);
	assert_int_equal(write(f->fds[1], "0123456789", 10), 10);
	struct timeval tv = { 0, 50000 };
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
	assert_int_equal(f->direct.len, 0);
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(f->bev)), 10);
	/* Bytes wait in the input buffer: the next ones go after them, not
	 * into the buffer. */
	assert_int_equal(write(f->fds[1], "ab", 2), 2);
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
	assert_int_equal(f->direct.len, 0);
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(f->bev)), 12);
	/* With the input empty, a read that fits goes to the buffer. */
	evbuffer_drain(bufferevent_get_input(f->bev), 12);
	assert_int_equal(write(f->fds[1], "GET /", 5), 5);
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
	assert_int_equal(f->direct.len, 5);
	assert_memory_equal(f->direct.data, "GET /", 5);
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(f->bev)), 0);
}

static void run_for(struct fixture *f, long ms)
{
	struct timeval tv = { 0, ms * 1000 };
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

static long ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The timeout of a timed sockread is kept on a timer left pending while
 * bytes come (sockread.h): each read restarts the wait, and only silence
 * as long as the timeout ends it, then, not before. */
static void test_timeout_restarts_with_each_read(void **state)
{
	struct fixture *f = *state;
	struct timeval tv = { 0, 100000 };
	sockread_set_timeout(&f->rd, &tv);
	sockread_enable(&f->rd);
	for (int i = 0; i < 6; i++) {
		run_for(f, 60);
		assert_int_equal(f->events, 0);
		assert_int_equal(write(f->fds[1], "x", 1), 1);
		loop_once(f);
		assert_int_equal(f->reads, i + 1);
	}
	long t0 = ms_now();
	loop_once(f);
	long dt = ms_now() - t0;
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	assert_true(dt >= 80 && dt < 1000);
	assert_false(f->rd.on);
}

/* A shorter timeout set while a longer one runs ends the wait at once
 * that shorter time; a timeout cleared while its timer is pending ends
 * nothing. */
static void test_timeout_changes_take_effect(void **state)
{
	struct fixture *f = *state;
	struct timeval long_tv = { 10, 0 }, short_tv = { 0, 50000 };
	sockread_set_timeout(&f->rd, &short_tv);
	sockread_enable(&f->rd);
	sockread_set_timeout(&f->rd, NULL);
	run_for(f, 150);
	assert_int_equal(f->events, 0);
	sockread_set_timeout(&f->rd, &long_tv);
	sockread_set_timeout(&f->rd, &short_tv);
	long t0 = ms_now();
	loop_once(f);
	long dt = ms_now() - t0;
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	assert_true(dt >= 30 && dt < 1000);
}

/* Reading off stops the wait; turned on again, a new wait of the whole
 * timeout begins. */
static void test_timeout_restarts_when_reading_is_on_again(void **state)
{
	struct fixture *f = *state;
	struct timeval tv = { 0, 100000 };
	sockread_set_timeout(&f->rd, &tv);
	sockread_enable(&f->rd);
	run_for(f, 60);
	sockread_disable(&f->rd);
	run_for(f, 100);
	assert_int_equal(f->events, 0);
	sockread_enable(&f->rd);
	long t0 = ms_now();
	loop_once(f);
	long dt = ms_now() - t0;
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	assert_true(dt >= 80 && dt < 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_end_is_reported_and_reading_stops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_is_reported_and_reading_stops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nothing_read_while_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bytes_arrive_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owner_may_free_all_in_its_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_direct_respects_ceiling_and_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_restarts_with_each_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_changes_take_effect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_restarts_when_reading_is_on_again, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
