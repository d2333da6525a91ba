/* `keyward proxy`: start-up, worker threads, listeners, reload and drain.
 *
 * One event loop per worker thread. TCP listeners get one socket per
 * worker (SO_REUSEPORT), so the kernel spreads connections; a unix socket
 * is shared. A configuration generation (policy + secrets + TLS contexts)
 * is swapped atomically on SIGHUP, and with new secrets when their source
 * changes (rotate_check); requests keep the one they started with. */
#include <errno.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "common/log.h"
#include "common/state.h"
#include "policy/trust.h"
#include "proxy/addr.h"
#include "proxy/internal.h"
#include "proxy/token.h"
#include "secrets/exec.h"
#include "secrets/source.h"
#include "secrets/vault.h"

struct accept_ctx {
	struct worker *w;
	const struct listener_info *li;
};

static volatile sig_atomic_t stopping;

/* How often the sources of the secrets are looked at for a rotation. */
#define ROTATE_CHECK_MS 500

/* ---- generations ---- */

struct gen *gen_ref(struct gen *g)
{
	atomic_fetch_add(&g->refs, 1);
	return g;
}

static void share_unref(struct policy_share *share)
{
	if (atomic_fetch_sub(&share->refs, 1) != 1)
		return;
	for (size_t i = 0; share->route_ctx && i < share->policy->n_routes; i++)
		SSL_CTX_free(share->route_ctx[i]);
	SSL_CTX_free(share->client_ctx);
	free(share->route_ctx);
	free(share->mint_defs);
	pthread_mutex_destroy(&share->ctx_lock);
	source_pins_free(share->pins, share->policy->n_creds);
	policy_free(share->policy);
	free(share);
}

/* A policy to be shared by the generations built from it, with the pins
 * of its credentials (taking ownership of both), or NULL (both freed) when
 * out of memory. */
static struct policy_share *share_new(struct policy *p, struct source_pin *pins)
{
	struct policy_share *share = calloc(1, sizeof(*share));
	if (share) {
		share->route_ctx = calloc(p->n_routes + 1, sizeof(*share->route_ctx));
		share->mint_defs = calloc(p->n_creds + 1, sizeof(*share->mint_defs));
	}
	bool ok = share && share->route_ctx && share->mint_defs;
	for (size_t i = 0; ok && i < p->n_creds; i++)
		ok = !p->creds[i].mint || token_def_digest(p, &p->creds[i], &share->mint_defs[i]) == 0;
	if (!ok) {
		if (share) {
			free(share->route_ctx);
			free(share->mint_defs);
		}
		free(share);
		source_pins_free(pins, p->n_creds);
		policy_free(p);
		return NULL;
	}
	static atomic_uint_fast64_t serials;
	share->policy = p;
	share->pins = pins;
	share->serial = atomic_fetch_add(&serials, 1) + 1;
	atomic_init(&share->refs, 1);
	pthread_mutex_init(&share->ctx_lock, NULL);
	return share;
}

void gen_unref(struct gen *g)
{
	if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
		return;
	for (size_t i = 0; g->secrets && g->secret_errors && i < g->policy->n_creds; i++) {
		secret_free(g->secrets[i]);
		free(g->secret_errors[i]);
	}
	redact_set_free(g->redact);
	pthread_mutex_destroy(&g->redact_lock);
	free(g->secrets);
	free(g->secret_errors);
	free(g->stamps);
	share_unref(g->share);
	free(g);
}

static bool build_upstream_ctxs(struct policy_share *s, char *errbuf, size_t errlen)
{
	const struct policy *p = s->policy;
	s->client_ctx = tls_client_ctx_new(p->upstream_ca_pem, p->upstream_ca_len, errbuf, errlen);
	if (!s->client_ctx)
		return false;
	for (size_t i = 0; i < p->n_routes; i++) {
		if (!p->routes[i].upstream_ca)
			continue;
		s->route_ctx[i] =
		    tls_client_ctx_new(p->routes[i].upstream_ca_pem, p->routes[i].upstream_ca_len, errbuf, errlen);
		if (!s->route_ctx[i])
			return false;
	}
	return true;
}

SSL_CTX *gen_upstream_ctx(struct gen *g, size_t ri, char *errbuf, size_t errlen)
{
	struct policy_share *s = g->share;
	/* Once built, the contexts never change: no lock on the request path. */
	if (atomic_load_explicit(&s->ctx_built, memory_order_acquire))
		return s->route_ctx[ri] ? s->route_ctx[ri] : s->client_ctx;
	pthread_mutex_lock(&s->ctx_lock);
	if (!atomic_load_explicit(&s->ctx_built, memory_order_relaxed)) {
		if (!build_upstream_ctxs(s, errbuf, errlen)) {
			/* Leave nothing half-built: the next request tries again. */
			for (size_t i = 0; i < s->policy->n_routes; i++) {
				SSL_CTX_free(s->route_ctx[i]);
				s->route_ctx[i] = NULL;
			}
			SSL_CTX_free(s->client_ctx);
			s->client_ctx = NULL;
			pthread_mutex_unlock(&s->ctx_lock);
			return NULL;
		}
		atomic_store_explicit(&s->ctx_built, true, memory_order_release);
	}
	SSL_CTX *ctx = s->route_ctx[ri] ? s->route_ctx[ri] : s->client_ctx;
	pthread_mutex_unlock(&s->ctx_lock);
	return ctx;
}

/* Made when the first tunnel needs it, not at start-up: making it builds
 * OpenSSL's cipher tables (~1.4 ms of CPU with the leaf key), which a
 * `keyward run` would otherwise pay while its sandbox starts, whether its
 * command opens a tunnel or not. Once built, it never changes: no lock
 * after that. */
SSL_CTX *proxy_server_ctx(struct proxy *px)
{
	if (atomic_load_explicit(&px->server_ctx_built, memory_order_acquire))
		return px->server_ctx;
	pthread_mutex_lock(&px->server_ctx_lock);
	if (!px->server_ctx && tls_ca_new_leaf_key(px->ca) == 0)
		px->server_ctx = tls_server_ctx_new();
	SSL_CTX *ctx = px->server_ctx;
	if (ctx)
		atomic_store_explicit(&px->server_ctx_built, true, memory_order_release);
	pthread_mutex_unlock(&px->server_ctx_lock);
	return ctx;
}

struct gen *proxy_current_gen(struct proxy *px)
{
	pthread_mutex_lock(&px->gen_lock);
	struct gen *g = gen_ref(px->gen);
	pthread_mutex_unlock(&px->gen_lock);
	return g;
}

struct gen *worker_current_gen(struct worker *w)
{
	unsigned v = atomic_load_explicit(&w->px->gen_version, memory_order_acquire);
	if (!w->gen || v != w->gen_version) {
		struct gen *g = proxy_current_gen(w->px);
		/* A reload may have taken allow_private away or changed an
		 * upstream_ca file: connections dialled under the old policy
		 * serve none of the new one's requests (a rotation keeps it). */
		if (w->gen && w->gen->share != g->share)
			upstream_pool_drop_stale(w, g->share->serial);
		gen_unref(w->gen);
		w->gen = g;
		w->gen_version = v;
	}
	return w->gen;
}

/* An empty generation of the shared policy (taking a reference on it):
 * no secrets yet. Returns NULL when out of memory. */
static struct gen *gen_new(struct policy_share *share)
{
	const struct policy *p = share->policy;
	struct gen *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	atomic_init(&g->refs, 1);
	atomic_fetch_add(&share->refs, 1);
	g->share = share;
	g->policy = share->policy;
	pthread_mutex_init(&g->redact_lock, NULL);
	g->secrets = calloc(p->n_creds + 1, sizeof(*g->secrets));
	g->secret_errors = calloc(p->n_creds + 1, sizeof(*g->secret_errors));
	g->stamps = calloc(p->n_creds + 1, sizeof(*g->stamps));
	if (!g->secrets || !g->secret_errors || !g->stamps) {
		gen_unref(g);
		return NULL;
	}
	return g;
}

/* Reads the secret of credential i into g. The stamp is taken first, so a
 * change during the read is seen by the next rotate_check. A failure is
 * kept in secret_errors[i]: requests that need it get 503. */
static void gen_fetch(struct gen *g, size_t i)
{
	const struct policy_credential *c = &g->policy->creds[i];
	char err[512];

	if (c->source == SOURCE_PARTS)
		return; /* its parts are fetched as entries of their own */
	source_stamp(c, &g->share->pins[i], &g->stamps[i]);
	int r = source_fetch_timed(c, &g->share->pins[i], &g->secrets[i], &g->stamps[i].refresh_ms, err, sizeof(err));
	const struct policy_credential *holder = r == 0 ? source_placeholder_holding(g->policy, g->secrets[i]) : NULL;
	if (holder) {
		/* A real secret pasted as a placeholder: is in every sandbox's
		 * environment and in what `keyward policy check` prints; it is
		 * not attached anywhere, so that the mistake shows. */
		secret_free(g->secrets[i]);
		g->secrets[i] = NULL;
		snprintf(
		    err, sizeof(err),
		    "credential %s: its secret is in the placeholder: of credential %s, which sandboxes are given; "
		    "write another placeholder: (and replace the secret)",
		    c->name, holder->name);
		r = -EPERM;
	}
	if (r < 0) {
		log_warn("%s; requests that need it will get 503", err);
		g->secret_errors[i] = strdup(err);
	}
}

/* Swaps g in as the current generation, on a reload or a rotation:
 * requests in flight keep the one they started with, the next ones take g. */
static void gen_swap(struct proxy *px, struct gen *g)
{
	pthread_mutex_lock(&px->gen_lock);
	struct gen *old = px->gen;
	px->gen = g;
	pthread_mutex_unlock(&px->gen_lock);
	atomic_fetch_add_explicit(&px->gen_version, 1, memory_order_release);
	gen_unref(old);
}

static int read_ca(const char *path, char **pem, size_t *len, char *errbuf, size_t errlen)
{
	return path && !*pem ? tls_ca_file_read(path, pem, len, errbuf, errlen) : 0;
}

int proxy_read_cas(struct policy *p, char *errbuf, size_t errlen)
{
	int r = read_ca(p->upstream_ca, &p->upstream_ca_pem, &p->upstream_ca_len, errbuf, errlen);
	for (size_t i = 0; r == 0 && i < p->n_routes; i++) {
		struct policy_route *rt = &p->routes[i];
		r = read_ca(rt->upstream_ca, &rt->upstream_ca_pem, &rt->upstream_ca_len, errbuf, errlen);
	}
	for (size_t i = 0; r == 0 && i < p->n_creds; i++) {
		struct policy_mint *m = p->creds[i].mint;
		if (m)
			r = read_ca(m->upstream_ca, &m->upstream_ca_pem, &m->upstream_ca_len, errbuf, errlen);
	}
	return r;
}

/* Builds a generation from a loaded policy and the pins of its
 * credentials (taking ownership of both; pins NULL: opened now). A
 * credential whose source fails does not stop the proxy: requests that
 * need it get 503, everything else is served. A TLS context that cannot
 * be built (bad upstream_ca file) is an error. */
static int gen_build(struct policy *p, struct source_pin *pins, struct gen **ret, char *errbuf, size_t errlen)
{
	if (!pins && source_pins_open(p, &pins) < 0) {
		policy_free(p);
		return -ENOMEM;
	}
	struct policy_share *share = share_new(p, pins);
	if (!share)
		return -ENOMEM;
	struct gen *g = gen_new(share);
	/* g holds its own reference now; drop the one of this function. */
	share_unref(share);
	if (!g)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_creds; i++)
		gen_fetch(g, i);
	/* The extra CA files are read now (if keyward run has not read them
	 * already, before its CMD existed), so that a broken one is reported at
	 * start or reload; the contexts are built from what was read, on first
	 * use. */
	int r = proxy_read_cas(p, errbuf, errlen);
	if (r < 0) {
		gen_unref(g);
		return r;
	}
	*ret = g;
	return 0;
}

/* Loads the policy file at path, unless a sandbox may have written it
 * (trust.h); state is the state directory, NULL for state_dir(). */
static int load_gen(const char *path, const char *state, struct gen **ret, char *errbuf, size_t errlen)
{
	struct policy *p;
	struct policy_error perr;
	char dir[PATH_MAX];
	int r = 0;
	if (state)
		snprintf(dir, sizeof(dir), "%s", state);
	else
		r = state_dir(dir, sizeof(dir), true, errbuf, errlen);
	if (r < 0 || (r = trust_check(dir, path, errbuf, errlen)) < 0)
		return r == -EPERM ? -EINVAL : r;
	r = policy_load(path, &p, &perr);
	if (r < 0) {
		snprintf(errbuf, errlen, "%s", perr.message);
		return r;
	}
	return gen_build(p, NULL, ret, errbuf, errlen);
}

/* ---- listeners ---- */

static int parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len, char *errbuf, size_t errlen)
{
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		const char *path = spec + 5;
		if (!*path || strlen(path) >= sizeof(un->sun_path)) {
			snprintf(errbuf, errlen, "--listen %s: unix socket path is empty or too long", spec);
			return -EINVAL;
		}
		memset(un, 0, sizeof(*un));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, path, strlen(path));
		*len = (socklen_t)sizeof(*un);
		return 0;
	}
	char host[256];
	const char *colon = strrchr(spec, ':');
	if (!colon || colon == spec || !colon[1]) {
		snprintf(errbuf, errlen, "--listen %s: expected HOST:PORT or unix:PATH", spec);
		return -EINVAL;
	}
	size_t hl = (size_t)(colon - spec);
	if (spec[0] == '[' && colon[-1] == ']') {
		spec++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		snprintf(errbuf, errlen, "--listen: host too long");
		return -EINVAL;
	}
	memcpy(host, spec, hl);
	host[hl] = '\0';
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
	int e = getaddrinfo(host, colon + 1, &hints, &res);
	if (e != 0) {
		snprintf(errbuf, errlen, "--listen %s: %s", spec, gai_strerror(e));
		return -EINVAL;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int open_listener(const struct sockaddr_storage *ss, socklen_t len, char *errbuf, size_t errlen,
                         const char *spec)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(errbuf, errlen, "--listen %s: %s", spec, strerror(errno));
		return -errno;
	}
	int one = 1;
	if (ss->ss_family == AF_UNIX) {
		const char *path = ((const struct sockaddr_un *)ss)->sun_path;
		struct stat st;
		/* Replace a stale socket from an earlier run, never another file,
		 * nor the socket of a keyward (or anything) still listening on
		 * it: its clients would silently reach this proxy and its policy
		 * instead, and its exit would remove this one's socket. */
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
			/* non-blocking: a listener whose backlog is full answers
			 * EAGAIN instead of making keyward wait */
			int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			bool live = probe >= 0 && (connect(probe, (const struct sockaddr *)ss, len) == 0 ||
			                           errno == EAGAIN || errno == EINPROGRESS);
			if (probe >= 0)
				close(probe);
			if (live) {
				snprintf(errbuf, errlen, "--listen %s: a process listens on this socket already", spec);
				close(fd);
				return -EADDRINUSE;
			}
			unlink(path);
		}
	} else {
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	}
	mode_t old = umask(0177); /* a unix socket is for its owner only */
	int r = bind(fd, (const struct sockaddr *)ss, len);
	umask(old);
	if (r < 0 || listen(fd, 1024) < 0) {
		int e = errno;
		snprintf(errbuf, errlen, "--listen %s: %s", spec, strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct accept_ctx *a = arg;
	if (a->w->draining) {
		close(fd);
		return;
	}
	conn_accept(a->w, a->li, fd, sa, salen);
}

/* How long the listeners rest when accept runs out of descriptors. */
#define ACCEPT_PAUSE_MS 100

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	/* After a drain started the listeners are gone (n_listeners 0). */
	for (size_t i = 0; i < w->n_listeners; i++)
		evconnlistener_enable(w->listeners[i]);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct accept_ctx *a = arg;
	struct worker *w = a->w;
	int e = EVUTIL_SOCKET_ERROR();

	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
		log_warn("accept failed: %s", strerror(e));
		return;
	}
	/* The pending connection stays in the backlog and the listening
	 * socket stays readable: accepting again at once would spin the loop
	 * (and the log) until a descriptor is freed. Rest the listeners; the
	 * connections wait in the kernel's backlog meanwhile. */
	if (evtimer_pending(w->accept_pause, NULL))
		return;
	log_warn("worker %d: accept failed: %s; not accepting for %d ms (%u connections open; raise the open files "
	         "limit, ulimit -n)",
	         w->id, strerror(e), ACCEPT_PAUSE_MS, w->n_conns);
	for (size_t i = 0; i < w->n_listeners; i++)
		evconnlistener_disable(w->listeners[i]);
	struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
	evtimer_add(w->accept_pause, &tv);
}

/* ---- workers ---- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	event_base_dispatch(w->base);
	return NULL;
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	/* Close the worker's own listening sockets: new connections are
	 * refused by the kernel at once instead of waiting in the backlog. A
	 * shared one (unix, the door) is only no longer watched here; it is
	 * closed when every worker is done. */
	for (size_t i = 0; i < w->n_listeners; i++)
		evconnlistener_free(w->listeners[i]);
	w->n_listeners = 0;
	conn_drain_worker(w);
}

static void force_exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	if (w->n_conns)
		log_warn("worker %d: %u connections still open after the drain period; closing them", w->id,
		         w->n_conns);
	conn_close_worker(w); /* the last one writes the worker's audit records */
	event_base_loopbreak(w->base);
}

/* On the worker: begin_stop's letter. */
static void stop_letter_cb(void *arg)
{
	struct worker *w = arg;
	unsigned ms = w->stop_grace_ms;
	struct timeval grace = { ms / 1000, (ms % 1000) * 1000 };
	if (event_base_once(w->base, -1, EV_TIMEOUT, drain_cb, w, NULL) < 0 ||
	    event_base_once(w->base, -1, EV_TIMEOUT, force_exit_cb, w, &grace) < 0) {
		log_error("worker %d: out of memory while stopping; closing its connections now", w->id);
		force_exit_cb(-1, 0, w);
	}
}

static int setup_worker(struct proxy *px, struct worker *w, int id, struct accept_ctx *ctxs, int *tcp_fds, char *errbuf,
                        size_t errlen)
{
	w->px = px;
	w->id = id;
	TAILQ_INIT(&w->conns);
	TAILQ_INIT(&w->idle);
	buf_init(&w->head_out, HEAD_OUT_MAX);
	buf_init(&w->head_red, HEAD_OUT_MAX);
	/* No locks in the worker's base (mailbox.h): only this worker's
	 * thread touches it; other threads post to its mailbox.
	 *
	 * The change list: libevent keeps the epoll changes of one loop pass
	 * and makes them before it waits, so that a change undone in the same
	 * pass costs nothing. A tunnel's TLS handshake turns reading and
	 * writing on and off many times: 14 epoll_ctl(2) per new tunnel
	 * without it, 6 with it (strace). Its catch: a descriptor closed
	 * while its removal waits in the list leaves its registration in the
	 * epoll set if another descriptor keeps the same socket open. So no
	 * worker closes a descriptor that another one shares: shared
	 * listening sockets are registered as they are and closed by their
	 * owner after the workers are gone (below), and a command keyward
	 * runs inherits none of its sockets (secrets/exec.c). */
	struct event_config *cfg = event_config_new();
	if (!cfg)
		return -ENOMEM;
	(void)event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	(void)event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	w->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (!w->base)
		return -ENOMEM;
	int r = mailbox_init(&w->mail, w->base);
	if (r < 0)
		return r;
	w->stop_letter = (struct letter){ .fn = stop_letter_cb, .arg = w };
	w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (!w->dns) {
		/* No resolv.conf: still serve IP literals, pinned and hosts-file names. */
		w->dns = evdns_base_new(w->base, 0);
		if (w->dns)
			(void)evdns_base_load_hosts(w->dns, NULL);
	}
	w->accept_pause = evtimer_new(w->base, accept_resume_cb, w);
	w->listeners = calloc(px->n_listeners, sizeof(*w->listeners));
	if (!w->accept_pause || !w->listeners)
		return -ENOMEM;
	for (size_t i = 0; i < px->n_listeners; i++) {
		const struct listener_info *li = &px->listeners[i];
		/* A shared socket (unix, the sandbox's door) is the same
		 * descriptor in every worker and stays open until they are
		 * freed; each worker's own TCP socket is closed with its
		 * listener, when the drain begins. */
		int fd = li->shared ? li->fd : tcp_fds[i];
		ctxs[i] = (struct accept_ctx){ .w = w, .li = li };
		unsigned flags = LEV_OPT_CLOSE_ON_EXEC | (li->shared ? 0 : LEV_OPT_CLOSE_ON_FREE);
		w->listeners[i] = evconnlistener_new(w->base, accept_cb, &ctxs[i], flags, 0, fd);
		if (!w->listeners[i]) {
			if (!li->shared)
				close(fd);
			snprintf(errbuf, errlen, "cannot listen on %s", li->name);
			return -ENOMEM;
		}
		evconnlistener_set_error_cb(w->listeners[i], accept_error_cb);
		w->n_listeners++;
	}
	return 0;
}

static void free_worker(struct worker *w)
{
	if (!w->base)
		return;
	for (size_t i = 0; i < w->n_listeners; i++)
		evconnlistener_free(w->listeners[i]);
	free(w->listeners);
	if (w->accept_pause)
		event_free(w->accept_pause);
	if (w->audit_ev)
		event_free(w->audit_ev);
	mailbox_clear(&w->mail);
	buf_free(&w->head_out);
	buf_free(&w->head_red);
	upstream_pool_clear(w);
	gen_unref(w->gen);
	if (w->dns)
		evdns_base_free(w->dns, 0);
	event_base_free(w->base);
}

/* ---- signals ---- */

static void audit_event(struct proxy *px, const char *event, const char *decision, const char *detail)
{
	if (!px->audit)
		return;
	struct audit_record rec = { .event = event, .decision = decision, .detail = detail, .route = -1 };
	int r = audit_write(px->audit, &rec);
	if (r < 0)
		log_error("cannot write the audit record of %s: %s", event, strerror(-r));
}

static void reload(struct proxy *px)
{
	char err[2 * PATH_MAX + 512], detail[sizeof(err) + 100];
	struct gen *g;
	int r = load_gen(px->opt.policy_path, px->opt.state_dir, &g, err, sizeof(err));
	if (r < 0) {
		log_error("reload failed, keeping the running policy: %s", err);
		snprintf(detail, sizeof(detail), "reload failed, running policy kept: %s", err);
		audit_event(px, "reload", "error", detail);
		return;
	}
	gen_swap(px, g);
	log_info("policy reloaded from %s: %zu routes, %zu credentials", px->opt.policy_path, g->policy->n_routes,
	         g->policy->n_creds);
	snprintf(detail, sizeof(detail), "policy %s reloaded: %zu routes, %zu credentials", px->opt.policy_path,
	         g->policy->n_routes, g->policy->n_creds);
	audit_event(px, "reload", "allow", detail);
}

/* ---- rotation ---- */

/* Whether credential i reads differently in a than in b: a new value, or
 * it failed in one and not the other, or it fails for another reason. */
static bool cred_changed(const struct gen *a, const struct gen *b, size_t i)
{
	const struct secret *x = a->secrets[i], *y = b->secrets[i];
	if (!x != !y)
		return true;
	if (x)
		return !secret_eq(x, y);
	const char *ex = a->secret_errors[i], *ey = b->secret_errors[i];
	return !ex || !ey || strcmp(ex, ey) != 0;
}

/* One audit record and log line per credential whose secret changed:
 * names, sources and errors, never a value. */
static void report_rotation(struct proxy *px, const struct gen *old, const struct gen *g, const bool *stale)
{
	for (size_t i = 0; i < g->policy->n_creds; i++) {
		if (!stale[i] || !cred_changed(old, g, i))
			continue;
		const struct policy_credential *c = &g->policy->creds[i];
		char detail[700], label[300];
		if (g->secrets[i]) {
			source_label(c, label, sizeof(label));
			log_info("credential %s: new secret from %s in use", c->name, label);
			snprintf(detail, sizeof(detail), "new secret from %s in use from the next request", label);
		} else {
			snprintf(detail, sizeof(detail), "%s; requests that need it get 503",
			         g->secret_errors[i] ? g->secret_errors[i] : "out of memory");
		}
		struct audit_record rec = { .event = "rotate",
			                    .credential = c->name,
			                    .decision = g->secrets[i] ? "allow" : "error",
			                    .detail = detail,
			                    .route = -1 };
		if (px->audit) {
			int r = audit_write(px->audit, &rec);
			if (r < 0)
				log_error("cannot write the audit record of a rotation: %s", strerror(-r));
		}
	}
}

/* A rotation in progress. Reading a secret may take long (an exec:
 * command runs for up to EXEC_TIMEOUT_MS, a vault is unlocked with a slow
 * KDF), so the reads run on a thread of their own while the main thread
 * goes on handling signals and the sandbox's end; the workers go on serving
 * the current generation. One job at a time. */
struct rotate_job {
	struct proxy *px;
	struct gen *cur; /* the generation it started from (referenced) */
	struct gen *g;   /* the new one, filled by the thread */
	bool *stale;     /* per credential: re-read, else copied from cur */
	size_t n;
	pthread_t thread;
	bool started;       /* thread to be joined */
	struct event *done; /* main base: activated by the thread when g is full */
};

/* Reads the stale secrets into job->g and copies the others from cur.
 * cur is not changed meanwhile: only rotate_done writes its stamps. */
static void *rotate_thread(void *arg)
{
	struct rotate_job *job = arg;
	struct gen *cur = job->cur, *g = job->g;
	for (size_t i = 0; i < job->n; i++) {
		if (job->stale[i]) {
			gen_fetch(g, i);
			continue;
		}
		g->stamps[i] = cur->stamps[i];
		if (cur->secrets[i] && secret_new(cur->secrets[i]->data, cur->secrets[i]->len, &g->secrets[i]) < 0)
			g->secret_errors[i] = strdup("out of memory");
		else if (cur->secret_errors[i])
			g->secret_errors[i] = strdup(cur->secret_errors[i]);
	}
	event_active(job->done, EV_TIMEOUT, 0);
	return NULL;
}

static void rotate_job_free(struct rotate_job *job)
{
	if (!job)
		return;
	if (job->started)
		pthread_join(job->thread, NULL);
	if (job->px->rotating == job)
		job->px->rotating = NULL;
	if (job->done)
		event_free(job->done);
	gen_unref(job->g);
	gen_unref(job->cur);
	free(job->stale);
	free(job);
}

/* Main thread, once the reads are done: swaps the new generation in if a
 * secret changed, else keeps serving the same one with the new stamps. A
 * reload while the job ran has read every secret afresh: the job's result
 * is dropped. */
static void rotate_done(evutil_socket_t fd, short what, void *arg)
{
	struct rotate_job *job = arg;
	struct proxy *px = job->px;
	pthread_join(job->thread, NULL);
	job->started = false;
	bool changed = false;
	for (size_t i = 0; i < job->n; i++)
		changed |= job->stale[i] && cred_changed(job->cur, job->g, i);
	if (px->gen != job->cur || stopping) {
		/* nothing to do */
	} else if (!changed) {
		/* Another secret of the vault changed, or a file was touched:
		 * remember the new stamps, keep serving the same generation. */
		memcpy(job->cur->stamps, job->g->stamps, job->n * sizeof(*job->g->stamps));
	} else {
		report_rotation(px, job->cur, job->g, job->stale);
		gen_swap(px, TAKE_PTR(job->g));
	}
	rotate_job_free(job);
}

/* Looks for credentials whose source changed since their secret was read
 * (`keyward secret set`, a new file) or whose exec: command is due again
 * (expiry near, or a failure 10 s ago), and re-reads only those, keeping
 * the policy, on a thread (struct rotate_job). Runs on the main thread, the
 * only one that swaps generations, so it never races a reload. A source
 * that now fails is not papered over with the old value: the rotated-away
 * secret is dropped and requests that need it get 503 until the source is
 * fixed. */
static void rotate_check(struct proxy *px)
{
	if (px->rotating)
		return;
	struct gen *cur = px->gen; /* only this thread replaces it */
	size_t n = cur->policy->n_creds;
	bool *stale = calloc(n + 1, sizeof(*stale));
	bool any = false;

	if (!stale)
		return;
	int64_t now_ms = exec_now_ms();
	for (size_t i = 0; i < n; i++) {
		struct source_stamp now;
		source_stamp(&cur->policy->creds[i], &cur->share->pins[i], &now);
		int64_t due = cur->stamps[i].refresh_ms;
		stale[i] = !source_stamp_eq(&now, &cur->stamps[i]) || (due && now_ms >= due);
		any |= stale[i];
	}
	struct rotate_job *job = any ? calloc(1, sizeof(*job)) : NULL;
	if (!job) {
		free(stale);
		return;
	}
	*job = (struct rotate_job){ .px = px, .cur = gen_ref(cur), .stale = stale, .n = n };
	job->g = gen_new(cur->share);
	job->done = event_new(px->main_base, -1, 0, rotate_done, job);
	job->started = job->g && job->done && pthread_create(&job->thread, NULL, rotate_thread, job) == 0;
	if (!job->started) {
		rotate_job_free(job); /* tried again at the next check */
		return;
	}
	px->rotating = job;
}

static void rotate_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy *px = arg;
	if (!stopping)
		rotate_check(px);
}

static void begin_stop(struct proxy *px, unsigned grace_ms, const char *why)
{
	if (stopping)
		return;
	stopping = 1;
	if (why)
		log_info("%s: finishing requests in flight, then exiting", why);
	for (int i = 0; i < px->n_workers; i++) {
		struct worker *w = &px->workers[i];
		w->stop_grace_ms = grace_ms; /* read after the post's lock */
		mailbox_post(&w->mail, &w->stop_letter);
	}
	event_base_loopexit(px->main_base, NULL);
}

/* keyward run: the proxy lives as long as the sandbox. */
static void child_check(struct proxy *px)
{
	int st;
	pid_t r;
	do
		r = waitpid(px->opt.child, &st, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r != px->opt.child)
		return;
	if (px->opt.child_status)
		*px->opt.child_status = st;
	px->opt.child = 0;
	begin_stop(px, 5000, NULL);
}

/* keyward run: PID 1 says CMD has ended and it is about to exit (or its
 * end of the socket closed). Its exit takes a millisecond or two (the
 * kernel tears down the sandbox's namespaces and memory), which the drain
 * and the audit log's sync now overlap; proxy_main waits for it last. */
static void child_notice_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy *px = arg;
	child_check(px);
	px->child_ending = true;
	begin_stop(px, 5000, NULL);
}

/* A signal that the terminal sent to its foreground process group has
 * reached the sandbox's processes already when they share our group;
 * passing it on would deliver it twice. */
static bool terminal_sent(const struct proxy *px, int sig)
{
	if (px->opt.child_own_group || (sig != SIGINT && sig != SIGQUIT))
		return false;
	pid_t fg = tcgetpgrp(STDIN_FILENO);
	return fg > 0 && fg == getpgrp();
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct proxy *px = arg;
	if (px->opt.child > 0) {
		if (sig == SIGCHLD)
			child_check(px);
		else if (!terminal_sent(px, (int)sig))
			kill(px->opt.child, (int)sig);
		return;
	}
	if (sig == SIGCHLD)
		return;
	if (sig == SIGHUP) {
		reload(px);
		return;
	}
	begin_stop(px, px->gen->policy->limits.drain_timeout_ms, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---- main ---- */

static int resolve_pins(struct proxy *px, char *errbuf, size_t errlen)
{
	px->pins = calloc(px->opt.n_resolve + 1, sizeof(*px->pins));
	if (!px->pins)
		return -ENOMEM;
	for (size_t i = 0; i < px->opt.n_resolve; i++) {
		const char *spec = px->opt.resolve[i];
		const char *colon = strchr(spec, ':');
		struct resolve_pin *pin = &px->pins[i];
		if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(pin->host)) {
			snprintf(errbuf, errlen, "--resolve %s: expected HOST:ADDRESS", spec);
			return -EINVAL;
		}
		memcpy(pin->host, spec, (size_t)(colon - spec));
		for (char *p = pin->host; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		const char *a = colon + 1;
		char tmp[64];
		size_t al = strlen(a);
		if (al >= 2 && a[0] == '[' && a[al - 1] == ']' && al - 2 < sizeof(tmp)) {
			memcpy(tmp, a + 1, al - 2);
			tmp[al - 2] = '\0';
			a = tmp;
		}
		if (addr_parse_literal(a, 0, &pin->addr, &pin->len) < 0) {
			snprintf(errbuf, errlen, "--resolve %s: %s is not an IP address", spec, colon + 1);
			return -EINVAL;
		}
		px->n_pins++;
	}
	return 0;
}

static int open_listeners(struct proxy *px, int **ret_tcp, char *errbuf, size_t errlen)
{
	size_t n = px->opt.n_listen;
	px->listeners = calloc(n + 1, sizeof(*px->listeners));
	int *tcp = calloc(n * (size_t)px->n_workers + 1, sizeof(int));
	if (!px->listeners || !tcp) {
		free(tcp);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n * (size_t)px->n_workers; i++)
		tcp[i] = -1;
	for (size_t i = 0; i < n; i++) {
		struct listener_info *li = &px->listeners[i];
		struct sockaddr_storage ss;
		socklen_t len;
		li->fd = -1;
		int r = parse_listen(px->opt.listen[i], &ss, &len, errbuf, errlen);
		if (r < 0)
			goto fail;
		li->is_unix = li->shared = ss.ss_family == AF_UNIX;
		for (int k = 0; k < (li->is_unix ? 1 : px->n_workers); k++) {
			int fd = open_listener(&ss, len, errbuf, errlen, px->opt.listen[i]);
			if (fd < 0) {
				r = fd;
				goto fail;
			}
			if (k == 0 && !li->is_unix) {
				/* With port 0 the kernel picks one: the other workers
				 * bind the same one. */
				socklen_t l = sizeof(ss);
				getsockname(fd, (struct sockaddr *)&ss, &l);
			}
			if (li->is_unix)
				li->fd = fd;
			else
				tcp[(size_t)k * n + i] = fd;
		}
		if (li->is_unix) {
			snprintf(li->name, sizeof(li->name), "%s", px->opt.listen[i]);
			struct stat st;
			if (lstat(((struct sockaddr_un *)&ss)->sun_path, &st) == 0) {
				li->sock_dev = st.st_dev;
				li->sock_ino = st.st_ino;
			}
		} else
			addr_format((struct sockaddr *)&ss, li->name, sizeof(li->name));
		px->n_listeners++;
		log_info("listening on %s", li->name);
		continue;
	fail:
		for (size_t k = 0; k < n * (size_t)px->n_workers; k++)
			if (tcp[k] >= 0)
				close(tcp[k]);
		free(tcp);
		return r;
	}
	if (px->opt.door) {
		struct listener_info *li = &px->listeners[px->n_listeners++];
		li->fd = px->opt.door_fd;
		li->shared = true;
		snprintf(li->name, sizeof(li->name), "%s", px->opt.door_name ? px->opt.door_name : "door");
	}
	*ret_tcp = tcp;
	return 0;
}

static int default_audit_path(char *out, size_t outlen, char *errbuf, size_t errlen)
{
	char dir[PATH_MAX];
	int r = state_dir(dir, sizeof(dir), true, errbuf, errlen);
	if (r < 0)
		return r;
	snprintf(out, outlen, "%s/audit.jsonl", dir);
	return 0;
}

/* Each client connection costs a descriptor, and each forwarded request
 * one more upstream: the usual soft limit of 1024 would cap keyward at a
 * few hundred sandboxed clients. Raise the soft limit to the hard one
 * (which only root can raise). */
static void raise_open_files_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rlim_t was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		log_debug("open files limit raised from %llu to %llu", (unsigned long long)was,
		          (unsigned long long)rl.rlim_max);
}

int proxy_main(const struct proxy_options *opt)
{
	struct proxy px = { .opt = *opt };
	char err[2 * PATH_MAX + 512] = "", audit_path[PATH_MAX], dir[PATH_MAX];
	int *tcp = NULL;
	int r;

	secret_harden_process();
	signal(SIGPIPE, SIG_IGN);
	raise_open_files_limit();
	if (evthread_use_pthreads() < 0) {
		log_error("cannot enable libevent threading");
		/* what opt hands over is ours to free, as on every other exit */
		if (opt->policy) {
			source_pins_free(opt->pins, opt->policy->n_creds);
			policy_free(opt->policy);
		}
		if (opt->audit)
			audit_close(opt->audit);
		return -ENOMEM;
	}
	pthread_mutex_init(&px.gen_lock, NULL);
	pthread_mutex_init(&px.server_ctx_lock, NULL);

	/* Before anything reads a secret: the vault's folders are opened once,
	 * as the folders of the policy's file: credentials (gen_build). */
	vault_pin();
	if (opt->policy)
		r = gen_build(opt->policy, opt->pins, &px.gen, err, sizeof(err));
	else
		r = load_gen(opt->policy_path, opt->state_dir, &px.gen, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		if (opt->audit)
			audit_close(opt->audit);
		pthread_mutex_destroy(&px.server_ctx_lock);
		return r;
	}
	const struct policy *pol = px.gen->policy;

	const char *ap = opt->audit_path ? opt->audit_path : pol->audit;
	if (opt->audit) {
		px.audit = opt->audit;
	} else if (!ap) {
		r = default_audit_path(audit_path, sizeof(audit_path), err, sizeof(err));
		if (r < 0) {
			log_error("%s", err);
			goto out;
		}
		ap = audit_path;
	}
	if (!px.audit && (r = audit_open(ap, &px.audit, err, sizeof(err))) < 0) {
		log_error("%s", err);
		goto out;
	}

	if (opt->ca) {
		px.ca = opt->ca; /* its leaf key: proxy_server_ctx */
	} else {
		if (opt->state_dir)
			snprintf(dir, sizeof(dir), "%s", opt->state_dir);
		else if ((r = state_dir(dir, sizeof(dir), true, err, sizeof(err))) < 0) {
			log_error("%s", err);
			goto out;
		}
		r = tls_ca_load_or_create(dir, &px.ca, err, sizeof(err));
		if (r < 0) {
			log_error("%s", err);
			goto out;
		}
	}
	if (rate_table_new(&px.rates) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = resolve_pins(&px, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		goto out;
	}
	r = tokens_new(&px, &px.tokens);
	if (r < 0)
		goto out;

	px.n_workers = opt->workers > 0 ? opt->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (px.n_workers < 1)
		px.n_workers = 1;
	if (px.n_workers > 64)
		px.n_workers = 64;
	r = open_listeners(&px, &tcp, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		goto out;
	}

	px.workers = calloc((size_t)px.n_workers, sizeof(*px.workers));
	struct accept_ctx *ctxs = calloc((size_t)px.n_workers * px.n_listeners + 1, sizeof(*ctxs));
	if (!px.workers || !ctxs) {
		free(ctxs);
		r = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < px.n_workers; i++) {
		r = setup_worker(&px, &px.workers[i], i, ctxs + (size_t)i * px.n_listeners,
		                 tcp + (size_t)i * px.n_listeners, err, sizeof(err));
		if (r < 0) {
			log_error("worker %d: %s", i, err[0] ? err : strerror(-r));
			goto out_workers;
		}
	}

	px.main_base = event_base_new();
	static const int signums[] = { SIGHUP, SIGTERM, SIGINT, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2 };
	struct event *sigs[ARRAY_SIZE(signums)] = { 0 };
	size_t n_sigs = opt->child > 0 ? ARRAY_SIZE(signums) : 3;
	for (size_t i = 0; i < n_sigs; i++) {
		sigs[i] = evsignal_new(px.main_base, signums[i], signal_cb, &px);
		event_add(sigs[i], NULL);
	}

	/* Rotation without a restart or a signal (`keyward run` passes SIGHUP
	 * to the sandbox): one stat per vault/file credential each period. */
	px.rotate_timer = event_new(px.main_base, -1, EV_PERSIST, rotate_cb, &px);
	struct timeval period = { ROTATE_CHECK_MS / 1000, (ROTATE_CHECK_MS % 1000) * 1000 };
	if (px.rotate_timer)
		event_add(px.rotate_timer, &period);

	char detail[PATH_MAX + 128];
	snprintf(detail, sizeof(detail), "keyward %s (pid %d) serving policy %s: %zu routes, %zu credentials",
	         KEYWARD_VERSION, (int)getpid(), opt->policy_path, pol->n_routes, pol->n_creds);
	audit_event(&px, "start", NULL, detail);
	log_info("policy %s: %zu routes, %zu credentials; audit log %s", opt->policy_path, pol->n_routes, pol->n_creds,
	         ap);

	int started = 0;
	for (int i = 0; i < px.n_workers; i++) {
		if (pthread_create(&px.workers[i].thread, NULL, worker_main, &px.workers[i]) != 0) {
			log_error("cannot start worker thread %d", i);
			break;
		}
		started++;
	}
	if (opt->restore_mask)
		pthread_sigmask(SIG_SETMASK, opt->restore_mask, NULL); /* now they have handlers */
	if (px.opt.child > 0 && px.opt.child_notice >= 0) {
		px.notice_ev = event_new(px.main_base, px.opt.child_notice, EV_READ, child_notice_cb, &px);
		if (px.notice_ev)
			event_add(px.notice_ev, NULL);
	}
	if (px.opt.child > 0)
		child_check(&px); /* it may have ended before SIGCHLD was watched */
	if (started == px.n_workers)
		event_base_dispatch(px.main_base);
	else
		begin_stop(&px, pol->limits.drain_timeout_ms, "worker start failed");
	for (int i = 0; i < started; i++)
		pthread_join(px.workers[i].thread, NULL);
	/* a rotation still reading: its command is killed, not waited for */
	exec_abort();
	rotate_job_free(px.rotating);
	tokens_free(px.tokens); /* waits for a fetch in flight */
	px.tokens = NULL;
	audit_event(&px, "stop", NULL, "keyward stopped");
	log_info("stopped");
	for (size_t i = 0; i < n_sigs; i++)
		event_free(sigs[i]);
	if (px.rotate_timer)
		event_free(px.rotate_timer);
	if (px.notice_ev)
		event_free(px.notice_ev);
	event_base_free(px.main_base);
	r = 0;

out_workers:
	for (int i = 0; i < px.n_workers; i++)
		free_worker(&px.workers[i]);
	free(ctxs);
out:
	free(px.workers);
	for (size_t i = 0; i < px.n_listeners; i++) {
		const struct listener_info *li = &px.listeners[i];
		struct stat st;
		if (!li->is_unix)
			continue;
		close(li->fd);
		/* Only the socket file made at start: another process's, bound
		 * there since, stays. */
		if (lstat(li->name + 5, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == li->sock_dev &&
		    st.st_ino == li->sock_ino)
			unlink(li->name + 5);
	}
	free(px.listeners);
	free(tcp);
	free(px.pins);
	tokens_free(px.tokens);
	SSL_CTX_free(px.server_ctx);
	rate_table_free(px.rates);
	if (px.ca != opt->ca)
		tls_ca_free(px.ca);
	audit_close(px.audit);
	gen_unref(px.gen);
	pthread_mutex_destroy(&px.gen_lock);
	pthread_mutex_destroy(&px.server_ctx_lock);
	/* The child said it was ending (child_notice_cb): it is gone or about
	 * to be, and the log is synced; its status is what the caller wants. */
	if (r == 0 && px.opt.child > 0 && px.child_ending) {
		int st;
		pid_t w;
		while ((w = waitpid(px.opt.child, &st, 0)) < 0 && errno == EINTR)
			;
		if (w == px.opt.child && px.opt.child_status)
			*px.opt.child_status = st;
	}
	return r;
}
