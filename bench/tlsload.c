/* tlsload: a small HTTPS load client that can go through an HTTP proxy's
 * CONNECT, for bench/run.sh (wrk cannot send CONNECT).
 *
 *   tlsload [-x PROXYHOST:PORT] -a ADDR:PORT -s SNI -f CAFILE [-c CONNS]
 *           [-d SECONDS] [-n] [-r] [-b BYTES] PATH
 *
 * Each of CONNS threads owns one connection: TCP to the proxy (-x) and
 * "CONNECT SNI:PORT", or TCP straight to ADDR:PORT; then TLS with SNI and
 * a verified certificate (CAFILE, host name SNI); then keep-alive GET PATH
 * requests (with -b: POST with a body of BYTES bytes, Content-Length, in
 * the same write as the head), one at a time, until the time is up. With
 * -n every request gets
 * a new connection (new connections per second); with -r as well, each
 * thread offers the TLS session of its previous connection (resumption).
 * Latency is from the request's first byte written to the last byte of the
 * response read (with -n: from connect() to the response). A response must
 * be 200 with a Content-Length or chunked body. Prints one JSON object.
 *
 * Blocking sockets and one thread per connection: the same client code
 * and the same per-request work for every target, so the client's own
 * cost is the same in every run of a comparison. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Latency histogram: 1 µs buckets up to 10 ms, 100 µs buckets up to 10 s,
 * then one overflow bucket (reported as HIST_MAX_US). */
#define HIST_FINE_US 10000
#define HIST_MAX_US 10000000
#define HIST_N (HIST_FINE_US + (HIST_MAX_US - HIST_FINE_US) / 100 + 1)

static struct {
	const char *proxy_host;
	int proxy_port;
	const char *addr;
	int port;
	const char *sni;
	const char *path;
	int conns;
	double seconds;
	bool new_conn, resume;
	int body; /* -b: POST with this many bytes of body */
	SSL_CTX *ctx;
	double deadline;
} opt;

struct worker {
	pthread_t th;
	uint32_t *hist;
	uint64_t ok, errors, handshakes, resumed;
	uint64_t sum_us;
	SSL_SESSION *session;
	const char *protocol; /* of its last handshake: "TLSv1.3"... */
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int tcp_connect(const char *host, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* CONNECT through the proxy; the answer is a head without a body. */
static int proxy_connect(void)
{
	int fd = tcp_connect(opt.proxy_host, opt.proxy_port);
	if (fd < 0)
		return -1;
	char req[512];
	int n = snprintf(req, sizeof(req), "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", opt.sni, opt.port, opt.sni,
	                 opt.port);
	if (write(fd, req, (size_t)n) != n)
		goto fail;
	char buf[2048];
	size_t len = 0;
	while (len < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + len, 1); /* byte by byte: nothing past the head */
		if (r <= 0)
			goto fail;
		len++;
		if (len >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	buf[len] = '\0';
	if (strncmp(buf, "HTTP/1.1 200", 12) != 0 && strncmp(buf, "HTTP/1.0 200", 12) != 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

static SSL *tls_open(struct worker *w)
{
	int fd = opt.proxy_host ? proxy_connect() : tcp_connect(opt.addr, opt.port);
	if (fd < 0)
		return NULL;
	SSL *ssl = SSL_new(opt.ctx);
	if (!ssl) {
		close(fd);
		return NULL;
	}
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, opt.sni);
	SSL_set1_host(ssl, opt.sni);
	if (opt.resume && w->session)
		SSL_set_session(ssl, w->session);
	if (SSL_connect(ssl) != 1) {
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	w->handshakes++;
	w->protocol = SSL_get_version(ssl); /* a static string */
	if (SSL_session_reused(ssl))
		w->resumed++;
	return ssl;
}

static void tls_close(SSL *ssl, struct worker *w)
{
	if (!ssl)
		return;
	if (opt.resume) {
		SSL_SESSION *s = SSL_get1_session(ssl);
		if (s) {
			if (w->session)
				SSL_SESSION_free(w->session);
			w->session = s;
		}
	}
	int fd = SSL_get_fd(ssl);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
}

/* One request and its whole response; 0 on a 200 with a complete body. */
static int exchange(SSL *ssl, const char *req, int reqlen)
{
	if (SSL_write(ssl, req, reqlen) != reqlen)
		return -1;
	char buf[16384];
	size_t len = 0;
	char *end = NULL;
	while (!end) {
		if (len == sizeof(buf) - 1)
			return -1;
		int r = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len));
		if (r <= 0)
			return -1;
		len += (size_t)r;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0)
		return -1;
	long clen = -1;
	int chunked = 0;
	for (char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
		if (strncasecmp(l + 2, "content-length:", 15) == 0)
			clen = strtol(l + 17, NULL, 10);
		if (strncasecmp(l + 2, "transfer-encoding: chunked\r\n", 28) == 0)
			chunked = 1;
	}
	size_t have = len - (size_t)(end + 4 - buf);
	if (chunked) {
		/* keyward re-frames credentialed responses as chunks (redaction):
		 * read until the last chunk, which ends "0\r\n\r\n" (no trailers) */
		char tail[8] = "";
		size_t keep = have < 5 ? have : 5;
		memcpy(tail, end + 4 + have - keep, keep);
		while (keep < 5 || memcmp(tail + keep - 5, "0\r\n\r\n", 5) != 0) {
			int r = SSL_read(ssl, buf, sizeof(buf));
			if (r <= 0)
				return -1;
			size_t n = (size_t)r, k = n < 5 ? n : 5;
			if (keep + k > 5) {
				memmove(tail, tail + keep + k - 5, 5 - k);
				keep = 5 - k;
			}
			memcpy(tail + keep, buf + n - k, k);
			keep += k;
		}
		return 0;
	}
	if (clen < 0)
		return -1;
	while (have < (size_t)clen) {
		int r = SSL_read(ssl, buf, sizeof(buf));
		if (r <= 0)
			return -1;
		have += (size_t)r;
	}
	return have == (size_t)clen ? 0 : -1;
}

static void record(struct worker *w, double t0)
{
	uint64_t us = (uint64_t)((now() - t0) * 1e6);
	uint64_t b = us < HIST_FINE_US ? us : HIST_FINE_US + (us - HIST_FINE_US) / 100;
	w->hist[b < HIST_N - 1 ? b : HIST_N - 1]++;
	w->sum_us += us;
	w->ok++;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	char *req = malloc(1024 + 65536);
	int reqlen;
	if (!req) {
		w->errors++;
		return NULL;
	}
	if (opt.body > 0) {
		reqlen = snprintf(req, 1024,
		                  "POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: tlsload\r\nContent-Type: application/json\r\n"
		                  "Content-Length: %d\r\n\r\n",
		                  opt.path, opt.sni, opt.port, opt.body);
		memset(req + reqlen, 'x', (size_t)opt.body);
		reqlen += opt.body;
	} else {
		reqlen = snprintf(req, 1024, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: tlsload\r\n\r\n", opt.path,
		                  opt.sni, opt.port);
	}
	SSL *ssl = NULL;
	while (now() < opt.deadline) {
		double t0 = now();
		if (!ssl && !(ssl = tls_open(w))) {
			w->errors++;
			usleep(1000);
			continue;
		}
		if (!opt.new_conn)
			t0 = now();
		if (exchange(ssl, req, reqlen) < 0) {
			w->errors++;
			tls_close(ssl, w);
			ssl = NULL;
			continue;
		}
		record(w, t0);
		if (opt.new_conn) {
			tls_close(ssl, w);
			ssl = NULL;
		}
	}
	tls_close(ssl, w);
	free(req);
	return NULL;
}

static int split_hostport(const char *s, const char **host, int *port)
{
	const char *c = strrchr(s, ':');
	if (!c)
		return -1;
	*host = strndup(s, (size_t)(c - s));
	*port = atoi(c + 1);
	return *port > 0 ? 0 : -1;
}

static uint64_t percentile(const uint32_t *h, uint64_t total, double p)
{
	uint64_t want = (uint64_t)(p / 100 * (double)total + 0.5), seen = 0;
	if (want == 0)
		want = 1;
	for (uint64_t i = 0; i < HIST_N; i++) {
		seen += h[i];
		if (seen >= want)
			return i < HIST_FINE_US ? i : HIST_FINE_US + (i - HIST_FINE_US) * 100;
	}
	return HIST_MAX_US;
}

int main(int argc, char **argv)
{
	const char *cafile = NULL;
	opt.conns = 1;
	opt.seconds = 5;
	int c;
	while ((c = getopt(argc, argv, "x:a:s:f:c:d:nrb:")) != -1) {
		switch (c) {
		case 'x':
			if (split_hostport(optarg, &opt.proxy_host, &opt.proxy_port) < 0)
				return 2;
			break;
		case 'a':
			if (split_hostport(optarg, &opt.addr, &opt.port) < 0)
				return 2;
			break;
		case 's':
			opt.sni = optarg;
			break;
		case 'f':
			cafile = optarg;
			break;
		case 'c':
			opt.conns = atoi(optarg);
			break;
		case 'd':
			opt.seconds = atof(optarg);
			break;
		case 'n':
			opt.new_conn = true;
			break;
		case 'r':
			opt.resume = true;
			break;
		case 'b':
			opt.body = atoi(optarg);
			break;
		default:
			return 2;
		}
	}
	if (optind != argc - 1 || !opt.addr || !opt.sni || !cafile || opt.conns < 1 || opt.conns > 1024 ||
	    opt.body < 0 || opt.body > 65536) {
		fprintf(stderr,
		        "usage: tlsload [-x PROXY:PORT] -a ADDR:PORT -s SNI -f CAFILE [-c N] [-d S] [-n] [-r] [-b BYTES] PATH\n");
		return 2;
	}
	opt.path = argv[optind];
	opt.ctx = SSL_CTX_new(TLS_client_method());
	if (!opt.ctx || SSL_CTX_load_verify_locations(opt.ctx, cafile, NULL) != 1) {
		fprintf(stderr, "tlsload: cannot load %s\n", cafile);
		return 1;
	}
	SSL_CTX_set_verify(opt.ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(opt.ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);

	struct worker *w = calloc((size_t)opt.conns, sizeof(*w));
	if (!w)
		return 1;
	double start = now();
	opt.deadline = start + opt.seconds;
	for (int i = 0; i < opt.conns; i++) {
		w[i].hist = calloc(HIST_N, sizeof(uint32_t));
		if (!w[i].hist || pthread_create(&w[i].th, NULL, work, &w[i]) != 0)
			return 1;
	}
	uint32_t *h = calloc(HIST_N, sizeof(uint32_t));
	if (!h)
		return 1;
	uint64_t ok = 0, errors = 0, hs = 0, resumed = 0, sum = 0;
	const char *protocol = NULL;
	for (int i = 0; i < opt.conns; i++) {
		pthread_join(w[i].th, NULL);
		for (int k = 0; k < HIST_N; k++)
			h[k] += w[i].hist[k];
		ok += w[i].ok;
		errors += w[i].errors;
		hs += w[i].handshakes;
		resumed += w[i].resumed;
		sum += w[i].sum_us;
		if (w[i].protocol)
			protocol = !protocol || !strcmp(protocol, w[i].protocol) ? w[i].protocol : "mixed";
		if (w[i].session)
			SSL_SESSION_free(w[i].session);
		free(w[i].hist);
	}
	double elapsed = now() - start;
	printf("{\"requests\": %llu, \"errors\": %llu, \"seconds\": %.3f, \"rps\": %.1f, \"handshakes\": %llu, "
	       "\"resumed\": %llu, \"protocol\": \"%s\", \"mean_us\": %.1f, \"p50_us\": %llu, \"p90_us\": %llu, "
	       "\"p99_us\": %llu}\n",
	       (unsigned long long)ok, (unsigned long long)errors, elapsed, ok / elapsed, (unsigned long long)hs,
	       (unsigned long long)resumed, protocol ? protocol : "none", ok ? (double)sum / ok : 0.0,
	       (unsigned long long)(ok ? percentile(h, ok, 50) : 0), (unsigned long long)(ok ? percentile(h, ok, 90) : 0),
	       (unsigned long long)(ok ? percentile(h, ok, 99) : 0));
	free(h);
	free(w);
	SSL_CTX_free(opt.ctx);
	return ok ? 0 : 1;
}
