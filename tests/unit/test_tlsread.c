/* Reading an open TLS connection for its bufferevent (src/proxy/tlsread.h),
 * on a socketpair and a real event base. The tested side is a TLS server
 * bufferevent, as a tunnel's client side; its peer is an SSL object the
 * test drives by hand, whose records collect in a memory BIO and reach the
 * socket when and in the pieces the test says. What must not happen comes
 * first: an end reported otherwise than libevent's own reading reports it
 * (each end runs both ways and the two must agree), bytes lost or
 * reordered, records left in OpenSSL with nothing to wake the reader, a
 * reader that spins or hangs when OpenSSL must write; then the pieces:
 * several records in one read, a record split across reads, pipelined
 * requests, the per-wake-up budget, the owner's direct buffer. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/tlsread.h"

struct fixture {
	struct event_base *base;
	int fds[2]; /* [0] the tested side's, [1] the peer's */
	SSL_CTX *sctx, *cctx;
	struct bufferevent *bev; /* the tested side: a TLS server */
	SSL *peer;               /* the client; its records collect in out */
	BIO *out;
	struct sockread rd;
	bool ours;      /* read by a tlsread (else by libevent, to compare) */
	bool timed;     /* the tlsread keeps its timeout on a timer of its own */
	bool connected; /* the tested side's handshake is done */
	struct buf direct;
	int reads;
	short events;
	char got[200000];
	size_t got_len;
	bool free_in_readcb;
	bool off_in_readcb;
};

static EVP_PKEY *key;
static X509 *cert;
static BIO_METHOD *full_method; /* test_read_that_must_write_waits_for_the_socket's */

/* A self-signed P-256 certificate for the tested server. */
static int make_cert(void **state)
{
	key = EVP_EC_gen("P-256");
	cert = X509_new();
	if (!key || !cert)
		return -1;
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
	X509_NAME *name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"tlsread.test", -1, -1, 0);
	X509_set_issuer_name(cert, name);
	X509_set_pubkey(cert, key);
	return X509_sign(cert, key, EVP_sha256()) > 0 ? 0 : -1;
}

static int free_cert(void **state)
{
	X509_free(cert);
	EVP_PKEY_free(key);
	BIO_meth_free(full_method);
	return 0;
}

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
	if (f->off_in_readcb)
		sockread_disable(&f->rd);
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
	if (what & BEV_EVENT_CONNECTED) {
		f->connected = true;
		if (f->ours)
			assert_int_equal(tlsread_start(&f->rd, f->base, bev, f->timed), 0);
		return;
	}
	f->events = what;
	event_base_loopbreak(f->base);
}

/* Sends what the peer's SSL wrote so far to the socket, all of it or its
 * first n bytes (the rest stays for the next call). */
static void peer_flush_n(struct fixture *f, size_t n)
{
	char *p;
	long len = BIO_get_mem_data(f->out, &p);
	if (len <= 0)
		return;
	if (n > (size_t)len)
		n = (size_t)len;
	assert_int_equal(send(f->fds[1], p, n, 0), (ssize_t)n);
	char rest[200000];
	size_t left = (size_t)len - n;
	assert_true(left <= sizeof(rest));
	memcpy(rest, p + n, left);
	(void)BIO_reset(f->out);
	if (left)
		assert_int_equal(BIO_write(f->out, rest, (int)left), (int)left);
}

static void peer_flush(struct fixture *f)
{
	peer_flush_n(f, SIZE_MAX);
}

static void peer_write(struct fixture *f, const char *s, size_t n)
{
	assert_int_equal(SSL_write(f->peer, s, (int)n), (int)n);
}

/* Runs the loop until a callback breaks it (2 s at most, should a test
 * be wrong), or for ms milliseconds when nothing should happen. */
static void loop_for(struct fixture *f, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

static void loop_once(struct fixture *f)
{
	loop_for(f, 2000);
}

static void handshake(struct fixture *f)
{
	bool peer_done = false;
	for (int i = 0; i < 200 && !(peer_done && f->connected); i++) {
		if (!peer_done) {
			int r = SSL_do_handshake(f->peer);
			if (r == 1)
				peer_done = true;
			else
				assert_int_equal(SSL_get_error(f->peer, r), SSL_ERROR_WANT_READ);
		}
		peer_flush(f);
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_true(peer_done && f->connected);
}

/* The tested server; its context gets options (SSL_OP_IGNORE_UNEXPECTED_EOF
 * as keyward's upstream side has, or none as its client side). */
static void fixture_init(struct fixture *f, bool ours, uint64_t options, bool read_ahead_early)
{
	memset(f, 0, sizeof(*f));
	f->ours = ours;
	f->base = event_base_new();
	assert_non_null(f->base);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, f->fds), 0);
	f->sctx = SSL_CTX_new(TLS_server_method());
	f->cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(f->sctx);
	assert_non_null(f->cctx);
	SSL_CTX_set_options(f->sctx, SSL_OP_NO_RENEGOTIATION | options);
	SSL_CTX_set_num_tickets(f->sctx, 0);
	assert_int_equal(SSL_CTX_use_certificate(f->sctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(f->sctx, key), 1);
	SSL *ssl = SSL_new(f->sctx);
	assert_non_null(ssl);
	if (read_ahead_early)
		SSL_set_read_ahead(ssl, 1);
	f->bev =
	    bufferevent_openssl_socket_new(f->base, f->fds[0], ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(f->bev);
	bufferevent_openssl_set_allow_dirty_shutdown(f->bev, 1);
	bufferevent_setcb(f->bev, read_cb, NULL, event_cb, f);
	bufferevent_enable(f->bev, EV_READ | EV_WRITE);

	f->peer = SSL_new(f->cctx);
	assert_non_null(f->peer);
	f->out = BIO_new(BIO_s_mem());
	SSL_set_bio(f->peer, BIO_new_socket(f->fds[1], BIO_NOCLOSE), f->out);
	SSL_set_connect_state(f->peer);
	buf_init(&f->direct, 8);
}

static int setup(void **state)
{
	static struct fixture f;
	fixture_init(&f, true, 0, false);
	handshake(&f);
	*state = &f;
	return 0;
}

/* The same with a timed tlsread, as an upstream's. */
static int setup_timed(void **state)
{
	static struct fixture f;
	fixture_init(&f, true, 0, false);
	f.timed = true;
	handshake(&f);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	sockread_stop(&f->rd);
	if (f->bev)
		bufferevent_free(f->bev);
	SSL_free(f->peer);
	close(f->fds[1]);
	SSL_CTX_free(f->sctx);
	SSL_CTX_free(f->cctx);
	buf_free(&f->direct);
	event_base_free(f->base);
	ERR_clear_error();
	return 0;
}

/* ---- ends: each as libevent's own reading reports it ---- */

enum end_kind {
	END_CLOSE_NOTIFY, /* close_notify, then the TCP end */
	END_DIRTY,        /* the TCP end alone */
	END_GARBAGE,      /* a record that does not decrypt */
	END_RESET,        /* the peer goes with bytes unread: ECONNRESET */
};

/* What the tested side reports for an end, read by a tlsread (ours) or by
 * libevent; the bytes sent before it must arrive first either way. */
static short end_seen(enum end_kind kind, bool ours, uint64_t options)
{
	static struct fixture f;
	fixture_init(&f, ours, options, false);
	handshake(&f);
	peer_write(&f, "GET / HTTP/1.1\r\n\r\n", 18);
	switch (kind) {
	case END_CLOSE_NOTIFY:
		SSL_shutdown(f.peer);
		peer_flush(&f);
		shutdown(f.fds[1], SHUT_WR);
		break;
	case END_DIRTY:
		peer_flush(&f);
		shutdown(f.fds[1], SHUT_WR);
		break;
	case END_GARBAGE:
		peer_flush(&f);
		assert_int_equal(send(f.fds[1], "\x17\x03\x03\x00\x20garbage-garbage-garbage-garbage!", 37, 0), 37);
		break;
	case END_RESET:
		peer_flush(&f);
		assert_int_equal(send(f.fds[0], "x", 1, 0), 1); /* left unread */
		close(f.fds[1]);
		f.fds[1] = -1;
		break;
	}
	for (int i = 0; i < 5 && !f.events; i++)
		loop_once(&f);
	assert_int_equal(f.got_len, 18);
	assert_memory_equal(f.got, "GET / HTTP/1.1\r\n\r\n", 18);
	if (ours)
		assert_false(f.rd.on);
	short events = f.events;
	if (f.fds[1] < 0)
		f.fds[1] = dup(0); /* for teardown's close */
	void *state = &f;
	teardown(&state);
	return events;
}

static void test_ends_reported_as_libevent_did(void **state)
{
	static const struct {
		enum end_kind kind;
		uint64_t options;
		short want;
	} cases[] = {
		/* keyward's client side: a dirty end is an error to OpenSSL 3 */
		{ END_DIRTY, 0, BEV_EVENT_READING | BEV_EVENT_ERROR },
		/* its upstream side ignores a missing close_notify: EOF */
		{ END_DIRTY, SSL_OP_IGNORE_UNEXPECTED_EOF, BEV_EVENT_READING | BEV_EVENT_EOF },
		{ END_GARBAGE, 0, BEV_EVENT_READING | BEV_EVENT_ERROR },
		/* SSL_ERROR_SYSCALL: libevent 2.1.12 takes any for a dirty end */
		{ END_RESET, 0, BEV_EVENT_READING | BEV_EVENT_EOF },
		{ END_CLOSE_NOTIFY, 0, BEV_EVENT_READING | BEV_EVENT_EOF },
		{ END_CLOSE_NOTIFY, SSL_OP_IGNORE_UNEXPECTED_EOF, BEV_EVENT_READING | BEV_EVENT_EOF },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		short theirs = end_seen(cases[i].kind, false, cases[i].options);
		short ours = end_seen(cases[i].kind, true, cases[i].options);
		print_message("case %zu: libevent %#x, tlsread %#x\n", i, (unsigned)theirs, (unsigned)ours);
		assert_int_equal(theirs, cases[i].want);
		assert_int_equal(ours, theirs);
	}
}

static void test_close_notify_after_bytes_in_one_read(void **state)
{
	struct fixture *f = *state;
	/* The last request and the end in one read: the bytes go to the read
	 * callback first, the end follows on the next pass without another
	 * wake-up from the socket (the peer's TCP side stays open). */
	peer_write(f, "last", 4);
	SSL_shutdown(f->peer);
	peer_flush(f);
	loop_once(f);
	assert_int_equal(f->reads, 1);
	assert_int_equal(f->got_len, 4);
	assert_int_equal(f->events, 0);
	loop_once(f);
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_EOF);
	assert_false(f->rd.on);
	assert_int_equal(f->reads, 1);
}

static void test_end_waits_while_reading_is_off(void **state)
{
	struct fixture *f = *state;
	/* Reading turned off by the read callback: the end found after its
	 * bytes is told only once reading is on again, then at once. */
	f->off_in_readcb = true;
	peer_write(f, "last", 4);
	SSL_shutdown(f->peer);
	peer_flush(f);
	loop_once(f);
	assert_int_equal(f->got_len, 4);
	loop_for(f, 50);
	assert_int_equal(f->events, 0);
	f->off_in_readcb = false;
	sockread_enable(&f->rd);
	loop_once(f);
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_EOF);
}

static void test_timeout_is_reported_and_reading_stops(void **state)
{
	struct fixture *f = *state;
	struct timeval tv = { 0, 20000 };
	sockread_set_timeout(&f->rd, &tv);
	loop_once(f);
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	assert_false(f->rd.on);
	assert_int_equal(f->reads, 0);
}

static long ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A timed tlsread (an upstream's) keeps its timeout on a timer of its own,
 * left pending while records come: the read event carries none, which
 * libevent would re-add at every wake-up and every change. Each wake-up
 * restarts the wait, as the read event's own timeout did; only silence as
 * long as the timeout ends it, then, not before. */
static void test_timed_timeout_restarts_with_each_record(void **state)
{
	struct fixture *f = *state;
	struct timeval tv = { 0, 100000 };
	sockread_set_timeout(&f->rd, &tv);
	assert_non_null(f->rd.tev);
	assert_true(event_pending(f->rd.tev, EV_TIMEOUT, NULL));
	assert_false(event_pending(f->rd.ev, EV_TIMEOUT, NULL));
	for (int i = 0; i < 6; i++) {
		loop_for(f, 60);
		assert_int_equal(f->events, 0);
		peer_write(f, "x", 1);
		peer_flush(f);
		loop_once(f);
		assert_int_equal(f->reads, i + 1);
		assert_false(event_pending(f->rd.ev, EV_TIMEOUT, NULL));
	}
	long t0 = ms_now();
	loop_once(f);
	long dt = ms_now() - t0;
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	assert_true(dt >= 80 && dt < 1000);
	assert_false(f->rd.on);
	assert_int_equal(f->got_len, 6);
}

/* A wake-up that brings only part of a record restarts the wait too, as
 * the read event's own timeout did (libevent re-adds it at every wake-up,
 * whatever the read gave). */
static void test_timed_timeout_restarts_with_part_of_a_record(void **state)
{
	struct fixture *f = *state;
	struct timeval tv = { 0, 100000 };
	sockread_set_timeout(&f->rd, &tv);
	peer_write(f, "first", 5);
	loop_for(f, 60);
	peer_flush_n(f, 3);
	loop_for(f, 60);
	assert_int_equal(f->events, 0);
	assert_int_equal(f->reads, 0);
	long t0 = ms_now();
	loop_once(f);
	long dt = ms_now() - t0;
	assert_int_equal(f->events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	assert_true(dt >= 20 && dt < 1000);
}

static void test_nothing_read_while_off(void **state)
{
	struct fixture *f = *state;
	sockread_disable(&f->rd);
	peer_write(f, "abc", 3);
	peer_flush(f);
	loop_for(f, 50);
	assert_int_equal(f->reads, 0);
	assert_int_equal(f->events, 0);
	sockread_enable(&f->rd);
	loop_once(f);
	assert_int_equal(f->got_len, 3);
}

static void test_owner_may_free_all_in_its_callback(void **state)
{
	struct fixture *f = *state;
	f->free_in_readcb = true;
	/* an end waits behind the bytes: freed with the rest */
	peer_write(f, "x", 1);
	SSL_shutdown(f->peer);
	peer_flush(f);
	loop_once(f);
	assert_int_equal(f->reads, 1);
	assert_null(f->rd.ev);
	assert_null(f->bev);
	loop_for(f, 50);
	assert_int_equal(f->events, 0);
}

/* ---- the bytes ---- */

static void test_error_left_on_the_queue_is_not_the_reads(void **state)
{
	struct fixture *f = *state;
	/* An error that other work on this thread left on OpenSSL's queue:
	 * SSL_get_error reads the queue, so a read that only waits for the
	 * rest of a record would be taken for a fatal error and end the
	 * connection. The queue is emptied before reading (only when it holds
	 * something: tlsread_err_clear). */
	peer_write(f, "first", 5);
	peer_flush_n(f, 3);
	ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
	assert_int_not_equal(ERR_peek_error(), 0);
	loop_for(f, 50);
	assert_int_equal(f->events, 0);
	assert_int_equal(f->reads, 0);
	assert_int_equal(ERR_peek_error(), 0);
	assert_true(f->rd.on);
	peer_flush(f);
	loop_once(f);
	assert_int_equal(f->got_len, 5);
	assert_memory_equal(f->got, "first", 5);
	assert_int_equal(f->events, 0);
	assert_true(f->rd.on);
}

static void test_records_in_one_read_arrive_in_order_at_once(void **state)
{
	struct fixture *f = *state;
	/* Pipelined requests, each its own record, all in one read: one wake-up
	 * takes them all, in order (libevent took one record per wake-up). */
	char want[3000];
	size_t n = 0;
	for (int i = 0; i < 30; i++) {
		char req[100];
		int k = snprintf(req, sizeof(req), "GET /%02d HTTP/1.1\r\nHost: a\r\n\r\n", i);
		peer_write(f, req, (size_t)k);
		memcpy(want + n, req, (size_t)k);
		n += (size_t)k;
	}
	peer_flush(f);
	loop_once(f);
	assert_int_equal(f->reads, 1);
	assert_int_equal(f->got_len, n);
	assert_memory_equal(f->got, want, n);
	loop_for(f, 50);
	assert_int_equal(f->reads, 1);
	assert_int_equal(f->events, 0);
}

static void test_record_split_across_reads(void **state)
{
	struct fixture *f = *state;
	/* A record's header alone, then part of its body, then the rest with
	 * the next record: nothing before it is whole, then both (in two
	 * wake-ups: OpenSSL reads the rest of a record exactly, and the next
	 * one waits in the kernel, where epoll sees it). */
	peer_write(f, "first", 5);
	peer_write(f, "second", 6);
	peer_flush_n(f, 3);
	loop_for(f, 50);
	assert_int_equal(f->reads, 0);
	peer_flush_n(f, 10);
	loop_for(f, 50);
	assert_int_equal(f->reads, 0);
	peer_flush(f);
	for (int i = 0; i < 5 && f->got_len < 11; i++)
		loop_once(f);
	assert_int_equal(f->got_len, 11);
	assert_memory_equal(f->got, "firstsecond", 11);
	assert_true(f->rd.on);
}

static void test_large_body_in_full_records(void **state)
{
	struct fixture *f = *state;
	/* A body of several full records, arriving in pieces of odd sizes. */
	static char body[5 * 16384 + 77];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 23);
	for (size_t off = 0; off < sizeof(body);) {
		size_t k = sizeof(body) - off < 16384 ? sizeof(body) - off : 16384;
		peer_write(f, body + off, k);
		off += k;
	}
	while (BIO_ctrl_pending(f->out) > 0) {
		peer_flush_n(f, 7001);
		loop_for(f, 20);
	}
	for (int i = 0; i < 20 && f->got_len < sizeof(body); i++)
		loop_for(f, 20);
	assert_int_equal(f->got_len, sizeof(body));
	assert_memory_equal(f->got, body, sizeof(body));
	assert_int_equal(f->events, 0);
}

static void test_budget_leaves_no_record_behind(void **state)
{
	struct fixture *f = *state;
	/* A wake-up goes on reading while OpenSSL's buffer ends inside a
	 * record's header (it then reads a whole buffer again; the rest of a
	 * body it reads exactly). OpenSSL 3.0 reads 16,709 bytes at a time,
	 * and a record of 3,341 bytes (3,319 of data under TLS 1.3's AEAD)
	 * leaves 4 bytes of a header at the end of every such read: a peer
	 * sending those would keep the loop going. The budget stops it; the
	 * rest follows on the next pass, also when the read callback had
	 * turned reading off and on again. */
	enum { REC = 3319 };
	static char body[25 * REC];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('A' + i % 26);
	for (size_t off = 0; off < sizeof(body); off += REC)
		peer_write(f, body + off, REC);
	peer_flush(f);
	f->off_in_readcb = true;
	loop_once(f);
	assert_int_equal(f->reads, 1);
	assert_true(f->got_len >= TLSREAD_BUDGET && f->got_len < sizeof(body));
	assert_true(f->rd.again);
	loop_for(f, 50);
	assert_int_equal(f->reads, 1);
	f->off_in_readcb = false;
	sockread_enable(&f->rd);
	for (int i = 0; i < 5 && f->got_len < sizeof(body); i++)
		loop_once(f);
	assert_int_equal(f->got_len, sizeof(body));
	assert_memory_equal(f->got, body, sizeof(body));
}

static void test_bytes_buffered_at_take_over_are_read_at_once(void **state)
{
	/* OpenSSL read the first request along with the handshake's last
	 * flight (read-ahead on early): the socket is empty, and epoll would
	 * never report it. It must reach the read callback all the same. */
	static struct fixture f;
	fixture_init(&f, true, 0, true);
	bool peer_done = false;
	for (int i = 0; i < 200 && !peer_done; i++) {
		int r = SSL_do_handshake(f.peer);
		if (r == 1)
			peer_done = true;
		else
			assert_int_equal(SSL_get_error(f.peer, r), SSL_ERROR_WANT_READ);
		if (peer_done)
			peer_write(&f, "GET /early HTTP/1.1\r\n\r\n", 23); /* with the Finished */
		peer_flush(&f);
		if (!peer_done) {
			event_base_loop(f.base, EVLOOP_NONBLOCK);
			usleep(1000);
		}
	}
	assert_true(peer_done);
	loop_once(&f);
	if (f.got_len == 0)
		loop_once(&f); /* the handshake's pass, then the read */
	assert_true(f.connected);
	assert_int_equal(f.got_len, 23);
	assert_memory_equal(f.got, "GET /early HTTP/1.1\r\n\r\n", 23);
	void *st = &f;
	teardown(&st);
}

static void test_direct_respects_ceiling_and_order(void **state)
{
	struct fixture *f = *state;
	/* Two records in one read, the first fits the buffer (ceiling 8), the
	 * second would not: the first goes there, the second to the input,
	 * after it. */
	f->rd.direct = &f->direct;
	bufferevent_setcb(f->bev, NULL, NULL, event_cb, f);
	peer_write(f, "GET /", 5);
	peer_write(f, "abcdefgh", 8);
	peer_flush(f);
	loop_for(f, 50);
	assert_int_equal(f->direct.len, 5);
	assert_memory_equal(f->direct.data, "GET /", 5);
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(f->bev)), 8);
	/* Bytes wait in the input: the next ones go after them. */
	peer_write(f, "x", 1);
	peer_flush(f);
	loop_for(f, 50);
	assert_int_equal(f->direct.len, 5);
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(f->bev)), 9);
}

/* A read BIO over the tested socket for which reading needs a write
 * first while the socket is full, as OpenSSL's own record layer would if
 * SSL_read had to answer something (OpenSSL 3.0 defers a KeyUpdate's
 * answer to the next SSL_write and sends a refusal's alert without
 * waiting, so no real peer makes SSL_read wait to write). */
static int full_reads;

static bool socket_full(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	return poll(&p, 1, 0) == 0;
}

static int full_read(BIO *b, char *out, int len)
{
	int fd = (int)(intptr_t)BIO_get_data(b);
	full_reads++;
	BIO_clear_retry_flags(b);
	if (socket_full(fd)) {
		BIO_set_retry_write(b);
		return -1;
	}
	ssize_t n = recv(fd, out, (size_t)len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(b);
	return (int)n;
}

static long full_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void test_read_that_must_write_waits_for_the_socket(void **state)
{
	struct fixture *f = *state;
	/* SSL_read says SSL_ERROR_WANT_WRITE while the socket is full: the
	 * reader waits for the socket to take bytes (no spin, no error, no
	 * read callback), then reads on. */
	if (!full_method) {
		full_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "full");
		BIO_meth_set_read(full_method, full_read);
		BIO_meth_set_ctrl(full_method, full_ctrl);
	}
	BIO *rb = BIO_new(full_method);
	BIO_set_data(rb, (void *)(intptr_t)f->fds[0]);
	BIO_set_init(rb, 1);
	SSL_set0_rbio(bufferevent_openssl_get_ssl(f->bev), rb);

	char junk[65536];
	memset(junk, 'j', sizeof(junk));
	for (size_t size = sizeof(junk); size > 0; size /= 4)
		while (send(f->fds[0], junk, size, MSG_DONTWAIT) > 0)
			;
	assert_true(socket_full(f->fds[0]));
	peer_write(f, "hello", 5);
	peer_flush(f);
	full_reads = 0;
	loop_for(f, 100);
	assert_int_equal(f->events, 0);
	assert_int_equal(f->reads, 0);
	assert_true(f->rd.on);
	assert_true(event_get_events(f->rd.ev) & EV_WRITE);
	assert_true(full_reads >= 1 && full_reads <= 2);
	/* The peer drains the socket: reading goes on. */
	char sink[65536];
	while (recv(f->fds[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	for (int i = 0; i < 5 && f->got_len < 5; i++)
		loop_once(f);
	assert_int_equal(f->events, 0);
	assert_int_equal(f->got_len, 5);
	assert_memory_equal(f->got, "hello", 5);
	assert_true(f->rd.on);
	assert_false(event_get_events(f->rd.ev) & EV_WRITE);
	/* And it is read as before: the next bytes come through EV_READ. */
	peer_write(f, "again", 5);
	peer_flush(f);
	loop_once(f);
	assert_int_equal(f->got_len, 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ends_reported_as_libevent_did),
		cmocka_unit_test_setup_teardown(test_close_notify_after_bytes_in_one_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_end_waits_while_reading_is_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_is_reported_and_reading_stops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_is_reported_and_reading_stops, setup_timed, teardown),
		cmocka_unit_test_setup_teardown(test_timed_timeout_restarts_with_each_record, setup_timed, teardown),
		cmocka_unit_test_setup_teardown(test_timed_timeout_restarts_with_part_of_a_record, setup_timed,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_nothing_read_while_off, setup_timed, teardown),
		cmocka_unit_test_setup_teardown(test_nothing_read_while_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owner_may_free_all_in_its_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_that_must_write_waits_for_the_socket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_left_on_the_queue_is_not_the_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_records_in_one_read_arrive_in_order_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_split_across_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_body_in_full_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_leaves_no_record_behind, setup, teardown),
		cmocka_unit_test(test_bytes_buffered_at_take_over_are_read_at_once),
		cmocka_unit_test_setup_teardown(test_direct_respects_ceiling_and_order, setup, teardown),
	};
	return cmocka_run_group_tests(tests, make_cert, free_cert);
}
