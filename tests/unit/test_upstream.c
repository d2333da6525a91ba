/* The upstream pool's choice (src/proxy/upstream.c, upstream_release): a
 * connection goes back to the pool only if the next request can use it.
 * The connections here are plain sockets on a socketpair, read by a
 * sockread, with a worker made by hand. What a pooled connection must not
 * hold comes first: an end its reader already found and keeps (tlsread.h:
 * close_notify that came in the same read as the end of a response),
 * records its reader still has to take, bytes in its input buffer, a
 * sending side that is shut; then the one that is pooled. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/internal.h"

struct fixture {
	struct proxy px;
	struct policy_share share;
	struct gen gen;
	struct worker w;
	int peer; /* the upstream's end of the socketpair */
};

static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof(f));
	f.share.serial = 7;
	f.gen.share = &f.share;
	/* worker_current_gen: the worker's generation is current while the
	 * proxy's version is the one it saw (both 0); no gen_ref is taken. */
	f.w.px = &f.px;
	f.w.gen = &f.gen;
	f.w.base = event_base_new();
	assert_non_null(f.w.base);
	TAILQ_INIT(&f.w.idle);
	f.peer = -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	upstream_pool_clear(&f->w);
	if (f->peer >= 0)
		close(f->peer);
	event_base_free(f->w.base);
	return 0;
}

/* A connected upstream, dialled under the current policy, that served a
 * request for conn (never looked at here) and was read by a sockread:
 * what upstream.c's event_cb leaves once connected. */
static struct upstream *connected_upstream(struct fixture *f)
{
	int fds[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
	f->peer = fds[1];
	struct upstream *u = calloc(1, sizeof(*u));
	assert_non_null(u);
	u->w = &f->w;
	u->policy_serial = f->share.serial;
	u->connected = true;
	u->bev = bufferevent_socket_new(f->w.base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(u->bev);
	assert_int_equal(sockread_start(&u->rd, f->w.base, u->bev, true), 0);
	return u;
}

static void no_harm(struct upstream *u)
{
	(void)u;
}

static void known_end(struct upstream *u)
{
	/* tlsread found close_notify after the response's last bytes, handed
	 * the bytes over and keeps the end for the next pass of the loop. */
	u->rd.end = BEV_EVENT_EOF;
	u->rd.again = true;
}

static void end_alone(struct upstream *u)
{
	/* tlsread sets the two together; each must count on its own. */
	u->rd.end = BEV_EVENT_EOF;
}

static void records_left(struct upstream *u)
{
	/* tlsread stopped at its budget with records still in OpenSSL:
	 * bytes after the response, which belong to no request. */
	u->rd.again = true;
}

static void bytes_left(struct upstream *u)
{
	/* As sockread_cb appends: the socket bufferevent keeps the end of its
	 * input buffer frozen. */
	struct evbuffer *in = bufferevent_get_input(u->bev);
	evbuffer_unfreeze(in, 0);
	assert_int_equal(evbuffer_add(in, "HTTP/1.1", 8), 0);
	evbuffer_freeze(in, 0);
}

static void sending_shut(struct upstream *u)
{
	upstream_shutdown_write(u);
}

static const struct {
	const char *name;
	void (*prepare)(struct upstream *u);
	bool reusable; /* what the caller says */
	bool pooled;   /* what must happen */
} cases[] = {
	{ "a known end", known_end, true, false },
	{ "a known end, the field alone", end_alone, true, false },
	{ "records the reader still holds", records_left, true, false },
	{ "bytes in the input buffer", bytes_left, true, false },
	{ "its sending shut (after a 101)", sending_shut, true, false },
	{ "the caller says not reusable", no_harm, false, false },
	{ "clean", no_harm, true, true },
};

static void test_pool_takes_only_connections_the_next_request_can_use(void **state)
{
	struct fixture *f = *state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct upstream *u = connected_upstream(f);
		cases[i].prepare(u);
		upstream_release(u, cases[i].reusable);
		if (f->w.n_idle != (cases[i].pooled ? 1u : 0u))
			fail_msg("%s: %u pooled", cases[i].name, f->w.n_idle);
		if (cases[i].pooled)
			assert_ptr_equal(TAILQ_FIRST(&f->w.idle), u);
		upstream_pool_clear(&f->w);
		close(f->peer);
		f->peer = -1;
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pool_takes_only_connections_the_next_request_can_use, setup,
		                                teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
